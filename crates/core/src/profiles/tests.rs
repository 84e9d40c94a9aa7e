use super::*;
use std::time::Duration;

const FULL: &str = r#"
apiVersion: strata.dev/v1alpha1
kind: ProfileList
layering:
  model: category
  categories:
    certificates: 10
    service-mesh: "layer-20"
repositories:
  - name: platform
    url: https://charts.example.com
defaults:
  timeout: 2m
  namespace: platform
profiles:
  - name: cert-manager
    chart:
      repository: platform
      name: cert-manager
    version: "1.14.x"
    namespace: cert-manager
    values: {installCRDs: true, nested: {a: [1, 2]}}
    valuesFiles: [values/cert-manager.yaml, ./values/common.yaml]
    valuesFrom: [{secretRef: {name: cm-values}, optional: true}]
    layer: 10
    timeout: 10m
    dependsOn: [linkerd]
  - name: linkerd
    chart:
      path: charts/linkerd
    releaseName: mesh
"#;

fn messages(text: &str) -> Vec<String> {
    match parse("p.yaml", text) {
        Ok(l) => panic!("expected problems, got {l:?}"),
        Err(ps) => ps.iter().map(ToString::to_string).collect(),
    }
}

fn has(msgs: &[String], needle: &str) -> bool {
    msgs.iter().any(|m| m.contains(needle))
}

fn minimal(profiles: &str) -> String {
    format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: platform\n    url: https://charts.example.com\nprofiles:\n{profiles}"
    )
}

#[test]
fn full_example_parses_with_defaults_applied() {
    let l = parse("p.yaml", FULL).unwrap();
    assert_eq!(l.layering.model, LayeringModel::Category);
    assert_eq!(l.layering.categories["service-mesh"], LayerNumber(20));
    assert_eq!(l.repositories[0].kind(), Some(RepositoryKind::Http));
    let cm = l.profile("cert-manager").unwrap();
    assert_eq!(
        cm.chart,
        ChartRef::Repository {
            repository: "platform".into(),
            name: "cert-manager".into()
        }
    );
    assert_eq!(cm.version.as_ref().unwrap().as_str(), "1.14.x");
    assert_eq!(cm.release_name, "cert-manager");
    assert_eq!(cm.namespace, "cert-manager");
    assert_eq!(cm.values["installCRDs"], serde_json::json!(true));
    assert_eq!(
        cm.values_files,
        vec!["values/cert-manager.yaml", "values/common.yaml"]
    );
    assert_eq!(cm.layer, Some(LayerNumber(10)));
    assert_eq!(cm.timeout.0, Duration::from_secs(600));
    let ld = l.profile("linkerd").unwrap();
    assert_eq!(
        ld.chart,
        ChartRef::Path {
            path: "charts/linkerd".into()
        }
    );
    assert_eq!(ld.version, None);
    assert_eq!(ld.release_name, "mesh");
    assert_eq!(ld.namespace, "platform");
    assert_eq!(ld.timeout.0, Duration::from_secs(120));
    assert!(ld.values.is_empty());
}

#[test]
fn defaults_when_sections_are_absent() {
    let l = parse(
        "p.yaml",
        &minimal("  - name: a\n    chart: {repository: platform, name: a}\n    version: 1.0.0\n"),
    )
    .unwrap();
    assert_eq!(l.layering.model, LayeringModel::Annotation);
    assert_eq!(l.defaults.namespace, "default");
    assert_eq!(l.defaults.timeout.0, Duration::from_secs(300));
    assert!(!l.defaults.timeout_given.0);
    assert!(!l.profiles[0].timeout_given.0);
    assert_eq!(l.profiles[0].namespace, "default");
}

#[test]
fn an_explicit_timeout_is_recorded() {
    let two = "  - name: a\n    chart: {path: charts/a}\n    timeout: 1m\n  - name: b\n    chart: {path: charts/b}\n";
    let l = parse("p.yaml", &minimal(two)).unwrap();
    assert!(!l.defaults.timeout_given.0);
    assert!(l.profile("a").unwrap().timeout_given.0);
    assert_eq!(l.profile("a").unwrap().timeout.0, Duration::from_secs(60));
    assert!(!l.profile("b").unwrap().timeout_given.0);
    let with_defaults = minimal(two).replace("profiles:\n", "defaults: {timeout: 2m}\nprofiles:\n");
    let l = parse("p.yaml", &with_defaults).unwrap();
    assert!(l.defaults.timeout_given.0);
    assert!(l.profile("b").unwrap().timeout_given.0);
    assert_eq!(l.profile("b").unwrap().timeout.0, Duration::from_secs(120));
    assert_eq!(l.profile("a").unwrap().timeout.0, Duration::from_secs(60));
}

#[test]
fn yaml_syntax_error_has_line() {
    let ps = parse("p.yaml", "apiVersion: [x\nkind: y\n").unwrap_err();
    assert_eq!(ps.len(), 1);
    assert!(ps.0[0].line.is_some());
    assert!(ps.to_string().starts_with("p.yaml: invalid YAML"), "{ps}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
apiVersion: strata.dev/v1beta9
kind: ProfileList
colour: blue
repositories:
  - name: platform
    url: https://charts.example.com
  - name: platform
    url: oci://registry.example.com/charts
  - name: registry
    url: oci:///no-host
    plainHttp: "true"
  - name: weird
    url: ftp://x
defaults:
  timeout: 5
profiles:
  - name: cert-manager
    chart: {repository: nowhere, name: cert-manager}
    version: "banana"
    extra: 1
  - name: cert-manager
    chart: {repository: platform, name: x}
    version: 1.0.0
  - name: Bad_Name
    chart: {path: ../outside}
  - name: both
    chart: {repository: platform, name: both, path: charts/both}
    version: 1.0.0
  - name: noversion
    chart: {repository: platform, name: nv}
  - name: a
    chart: {path: charts/a}
    releaseName: shared
    timeout: 10x
    layer: top
  - name: b
    chart: {path: charts/b}
    releaseName: shared
    values: [1, 2]
    valuesFiles: [/etc/passwd]
  - name: floaty
    chart: {repository: platform, name: f}
    version: 1.10
"#;
    let m = messages(text);
    let expect = [
        "p.yaml: apiVersion: unsupported apiVersion `strata.dev/v1beta9`",
        "colour: unknown field `colour`",
        "repositories[platform].name: duplicate repository name `platform`",
        "repositories[registry].url: `oci:///no-host` is not a valid OCI repository URL",
        "repositories[registry].plainHttp: must be true or false, found a string",
        "repositories[weird].url: `ftp://x` is not supported",
        "defaults.timeout: `5` has no unit",
        "profiles[cert-manager].chart.repository: unknown repository `nowhere`; declared repositories: platform, registry, weird",
        "profiles[cert-manager].version: `banana` is not a version constraint",
        "profiles[cert-manager].extra: unknown field `extra`",
        "profiles[1].name: duplicate profile name `cert-manager`: profiles[0] and profiles[1] both use it",
        "profiles[2].name: `Bad_Name` is not a valid name",
        "profiles[2].chart.path: `../outside` is not a usable path",
        "profiles[both].chart: give either `repository` and `name`, or `path`, not both",
        "profiles[noversion].version: missing required field `version`",
        "profiles[a].timeout: `10x` is not a duration",
        "profiles[a].layer: `top` is not a layer",
        "profiles[b].values: must be a mapping of values, found a list",
        "profiles[b].valuesFiles[0]: `/etc/passwd` is not a usable path",
    ];
    for e in expect {
        assert!(has(&m, e), "missing {e:?} in:\n{}", m.join("\n"));
    }
    assert_eq!(
        m.len(),
        expect.len(),
        "unexpected extra problems:\n{}",
        m.join("\n")
    );
}

#[test]
fn duplicate_release_in_namespace() {
    let m = messages(&minimal(
        "  - name: a\n    chart: {path: charts/a}\n    releaseName: shared\n  - name: b\n    chart: {path: charts/b}\n    releaseName: shared\n  - name: c\n    chart: {path: charts/c}\n    releaseName: shared\n    namespace: other\n",
    ));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("profiles[b].releaseName: release `shared` in namespace `default` is already used by profile `a`"),
        "{m:?}"
    );
    assert!(m[0].contains("(line 12"), "{m:?}");
}

#[test]
fn release_name_length_and_default() {
    let long = "a".repeat(60);
    let m = messages(&minimal(&format!(
        "  - name: {long}\n    chart: {{path: charts/a}}\n"
    )));
    assert!(has(&m, "longer than 53 characters"), "{m:?}");
    let m = messages(&minimal(&format!(
        "  - name: ok\n    chart: {{path: charts/a}}\n    releaseName: {long}\n"
    )));
    assert!(has(&m, "profiles[ok].releaseName: `aaaa"), "{m:?}");
}

#[test]
fn missing_top_fields_and_wrong_types() {
    let m = messages("foo: 1\n");
    assert!(
        has(&m, "apiVersion: missing required field `apiVersion`"),
        "{m:?}"
    );
    assert!(has(&m, "kind: missing required field `kind`"), "{m:?}");
    assert!(
        has(&m, "profiles: missing required field `profiles`"),
        "{m:?}"
    );
    assert!(has(&m, "foo: unknown field `foo`"), "{m:?}");
    let m = messages("- a\n- b\n");
    assert_eq!(
        m,
        vec!["p.yaml: must be a mapping, found a list (line 1, column 1)"]
    );
    let m = messages("");
    assert!(has(&m, "the file is empty"), "{m:?}");
    let m = messages("apiVersion: strata.dev/v1alpha1\nkind: Other\nprofiles: {}\n");
    assert!(has(&m, "kind: unexpected kind `Other`"), "{m:?}");
    assert!(
        has(&m, "profiles: must be a list, found a mapping"),
        "{m:?}"
    );
}

#[test]
fn layering_rules() {
    let base = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles: []\n";
    let m = messages(&format!("{base}layering: {{model: category}}\n"));
    assert!(
        has(&m, "layering.categories: model `category` needs a map"),
        "{m:?}"
    );
    let m = messages(&format!("{base}layering: {{model: allocated}}\n"));
    assert!(
        has(
            &m,
            "layering.allocationFile: model `allocated` needs the path"
        ),
        "{m:?}"
    );
    let m = messages(&format!(
        "{base}layering: {{model: annotation, categories: {{a: 1}}, allocationFile: x.yaml}}\n"
    ));
    assert!(
        has(&m, "layering.categories: only used with `model: category`"),
        "{m:?}"
    );
    assert!(
        has(
            &m,
            "layering.allocationFile: only used with `model: allocated`"
        ),
        "{m:?}"
    );
    let m = messages(&format!("{base}layering: {{model: random}}\n"));
    assert!(has(&m, "unknown layering model `random`"), "{m:?}");
    let m = messages(&format!(
        "{base}layering: {{model: category, categories: {{a: -1, b: layer-x}}}}\n"
    ));
    assert!(
        has(&m, "layering.categories.a: `-1` is not a layer"),
        "{m:?}"
    );
    assert!(
        has(&m, "layering.categories.b: `layer-x` is not a layer"),
        "{m:?}"
    );
    let l = parse(
        "p.yaml",
        &format!("{base}layering: {{model: allocated, allocationFile: ./layers.yaml}}\n"),
    )
    .unwrap();
    assert_eq!(l.layering.allocation_file.as_deref(), Some("layers.yaml"));
}

#[test]
fn chart_source_rules() {
    let m = messages(&minimal("  - name: a\n    chart: {}\n"));
    assert!(has(&m, "profiles[a].chart: missing chart source"), "{m:?}");
    let m = messages(&minimal(
        "  - name: a\n    chart: {repository: platform}\n    version: 1.0.0\n",
    ));
    assert!(
        has(&m, "profiles[a].chart.name: missing required field `name`"),
        "{m:?}"
    );
    let m = messages(&minimal(
        "  - name: a\n    chart: {name: a}\n    version: 1.0.0\n",
    ));
    assert!(
        has(&m, "profiles[a].chart.repository: missing required field"),
        "{m:?}"
    );
    let m = messages(&minimal(
        "  - name: a\n    chart: {path: charts/a, colour: red}\n",
    ));
    assert!(has(&m, "profiles[a].chart.colour: unknown field"), "{m:?}");
}

#[test]
fn values_duplicate_keys_reported() {
    let m = messages(&minimal(
        "  - name: a\n    chart: {path: charts/a}\n    values:\n      x: 1\n      nested: {q: 1, q: 2}\n      x: 3\n",
    ));
    assert!(has(&m, "profiles[a].values.x: duplicate key `x`"), "{m:?}");
    assert!(
        has(&m, "profiles[a].values.nested.q: duplicate key `q`"),
        "{m:?}"
    );
}

#[test]
fn unquoted_numeric_version_keeps_its_spelling() {
    let l = parse(
        "p.yaml",
        &minimal("  - name: a\n    chart: {repository: platform, name: a}\n    version: 1.10\n"),
    )
    .unwrap();
    assert_eq!(l.profiles[0].version.as_ref().unwrap().as_str(), "1.10");
    assert!(
        l.profiles[0]
            .version
            .as_ref()
            .unwrap()
            .matches_str("1.10.3")
    );
}

#[test]
fn version_ranges_accepted() {
    for v in [
        "1.2.3",
        "\">=1.2, <2\"",
        "~1.2",
        "^1.2",
        "1.2.x",
        "\">=1.2 <2 || ^3\"",
        "v1.0.0",
        "2",
    ] {
        let text = minimal(&format!(
            "  - name: a\n    chart: {{repository: platform, name: a}}\n    version: {v}\n"
        ));
        assert!(
            parse("p.yaml", &text).is_ok(),
            "{v}: {:?}",
            parse("p.yaml", &text)
        );
    }
}

#[test]
fn serializes_with_the_documented_field_names() {
    let l = parse("p.yaml", FULL).unwrap();
    let json = serde_json::to_value(&l).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    let mut top = keys(&json);
    top.sort();
    // `include` and `enabled` only say how a list is composed; they are gone once merged.
    let composing = [crate::compose::INCLUDE_FIELD, crate::compose::ENABLED_FIELD];
    let mut expected: Vec<String> = TOP_FIELDS
        .iter()
        .filter(|f| !composing.contains(f))
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(top, expected);
    let mut p = keys(&json["profiles"][0]);
    p.sort();
    let mut expected: Vec<String> = PROFILE_FIELDS
        .iter()
        .filter(|f| !composing.contains(f))
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(p, expected);
    // The serialized form parses back to the same list (JSON is YAML).
    let again = parse("p.yaml", &json.to_string()).unwrap();
    assert_eq!(again, l);
}

#[test]
fn remediation_defaults_and_field_by_field_inheritance() {
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  remediation: {strategy: rollback, retries: 3}\nprofiles:\n  - name: a\n    chart: {path: charts/a}\n  - name: b\n    chart: {path: charts/b}\n    remediation: {strategy: uninstall}\n  - name: c\n    chart: {path: charts/c}\n    remediation: {retries: 9}\n";
    let l = parse("p.yaml", text).unwrap();
    let r = |name: &str| l.profile(name).unwrap().remediation;
    assert_eq!(
        l.defaults.remediation,
        Remediation {
            strategy: RemediationStrategy::Rollback,
            retries: 3
        }
    );
    assert_eq!(r("a"), l.defaults.remediation);
    assert_eq!(
        r("b"),
        Remediation {
            strategy: RemediationStrategy::Uninstall,
            retries: 3
        }
    );
    assert_eq!(
        r("c"),
        Remediation {
            strategy: RemediationStrategy::Rollback,
            retries: 9
        }
    );
    // Without any remediation: retry, 5 attempts.
    let l = parse(
        "p.yaml",
        &minimal("  - name: a\n    chart: {repository: platform, name: a}\n    version: 1.0.0\n"),
    )
    .unwrap();
    assert_eq!(
        l.profiles[0].remediation,
        Remediation {
            strategy: RemediationStrategy::Retry,
            retries: DEFAULT_RETRIES
        }
    );
    assert!(!l.profiles[0].remediation.strategy.is_destructive());
    assert!(RemediationStrategy::Uninstall.is_destructive());
}

#[test]
fn remediation_problems_are_all_reported() {
    let cases: &[(&str, &str)] = &[
        (
            "remediation: {strategy: delete}",
            "profiles[a].remediation.strategy: unknown remediation strategy `delete`; expected retry, rollback or uninstall",
        ),
        (
            "remediation: {strategy: 3}",
            "profiles[a].remediation.strategy: must be a string, found an integer",
        ),
        (
            "remediation: {retries: 0}",
            "profiles[a].remediation.retries: `0` is not a number of attempts: write a whole number from 1 to 1000",
        ),
        (
            "remediation: {retries: -2}",
            "profiles[a].remediation.retries: `-2` is not a number of attempts",
        ),
        (
            "remediation: {retries: 1001}",
            "profiles[a].remediation.retries: `1001` is not a number",
        ),
        (
            "remediation: {retries: \"5\"}",
            "profiles[a].remediation.retries: `5` is not a number of attempts",
        ),
        (
            "remediation: {retries: 2.5}",
            "profiles[a].remediation.retries: `2.5` is not a number of attempts",
        ),
        (
            "remediation: {retry: 2}",
            "profiles[a].remediation.retry: unknown field `retry`; expected one of: strategy, retries",
        ),
        (
            "remediation: rollback",
            "profiles[a].remediation: must be a mapping, found a string",
        ),
    ];
    for (line, expected) in cases {
        let msgs = messages(&minimal(&format!(
            "  - name: a\n    chart: {{path: charts/a}}\n    {line}\n"
        )));
        assert!(has(&msgs, expected), "{line}: {msgs:?}");
        assert!(msgs.iter().all(|m| m.starts_with("p.yaml: ")), "{msgs:?}");
    }
    // Both sections at once, each problem named.
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  remediation: {strategy: nuke, retries: many}\nprofiles:\n  - name: a\n    chart: {path: charts/a}\n    remediation: {strategy: []}\n";
    let msgs = messages(text);
    assert!(
        has(
            &msgs,
            "defaults.remediation.strategy: unknown remediation strategy `nuke`"
        ),
        "{msgs:?}"
    );
    assert!(
        has(
            &msgs,
            "defaults.remediation.retries: `many` is not a number"
        ),
        "{msgs:?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].remediation.strategy: must be a string, found a list"
        ),
        "{msgs:?}"
    );
    assert!(has(&msgs, "(line 4, column"), "{msgs:?}");
}

#[test]
fn inline_values_over_the_size_limit() {
    let big = "x".repeat(crate::limits::MAX_VALUES_BYTES);
    let msgs = messages(&minimal(&format!(
        "  - name: a\n    chart: {{path: charts/a}}\n    values: {{blob: {big}}}\n"
    )));
    assert!(
        has(
            &msgs,
            "profiles[a].values: the inline values are 1.00 MiB (1048587 bytes) as JSON, over the limit of 1.00 MiB (1048576 bytes)"
        ),
        "{msgs:?}"
    );
    let ok = "x".repeat(1000);
    assert!(
        parse(
            "p.yaml",
            &minimal(&format!(
                "  - name: a\n    chart: {{path: charts/a}}\n    values: {{blob: {ok}}}\n"
            ))
        )
        .is_ok()
    );
}

#[test]
fn values_from_secrets_with_defaults() {
    let l = parse(
        "p.yaml",
        &minimal(
            "  - name: a\n    chart: {path: c}\n    valuesFrom:\n      - secretRef: {name: a-values}\n      - secretRef: {name: db.creds, key: extra_values-1.yaml, namespace: other}\n        optional: true\n",
        ),
    )
    .unwrap();
    let p = &l.profiles[0];
    assert_eq!(
        p.values_from,
        vec![
            ValuesFrom {
                secret_ref: SecretRef {
                    name: "a-values".into(),
                    key: DEFAULT_VALUES_KEY.into(),
                    namespace: None,
                },
                optional: false,
            },
            ValuesFrom {
                secret_ref: SecretRef {
                    name: "db.creds".into(),
                    key: "extra_values-1.yaml".into(),
                    namespace: Some("other".into()),
                },
                optional: true,
            },
        ]
    );
    // Round trip through serde keeps the entries.
    let json = serde_json::to_value(p).unwrap();
    assert_eq!(json["valuesFrom"][1]["secretRef"]["namespace"], "other");
    let back: Profile = serde_json::from_value(json).unwrap();
    assert_eq!(&back, p);
    // Absent means none, and is not serialized.
    let l = parse("p.yaml", &minimal("  - name: b\n    chart: {path: c}\n")).unwrap();
    assert!(l.profiles[0].values_from.is_empty());
    assert!(serde_json::to_value(&l.profiles[0]).unwrap()["valuesFrom"].is_null());
}

#[test]
fn values_from_problems_name_the_field() {
    let msgs = messages(&minimal(
        "  - name: a\n    chart: {path: c}\n    valuesFrom:\n      - secretRef: {name: Bad_Name, key: 'a/b', namespace: NS}\n        optional: maybe\n      - {optional: true}\n      - secretRef: {name: ok, nme: x}\n      - 7\n",
    ));
    assert!(
        has(
            &msgs,
            "profiles[a].valuesFrom[0].secretRef.name: `Bad_Name` is not a valid Secret name"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].valuesFrom[0].secretRef.key: `a/b` is not a valid Secret key"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(&msgs, "profiles[a].valuesFrom[0].secretRef.namespace:"),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].valuesFrom[0].optional: must be true or false"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].valuesFrom[1].secretRef: missing required field `secretRef`"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].valuesFrom[2].secretRef.nme: unknown field `nme`"
        ),
        "{msgs:#?}"
    );
    assert!(has(&msgs, "profiles[a].valuesFrom[3]"), "{msgs:#?}");
    let msgs = messages(&minimal(
        "  - name: a\n    chart: {path: c}\n    valuesFrom: {secretRef: {name: x}}\n",
    ));
    assert!(has(&msgs, "profiles[a].valuesFrom"), "{msgs:#?}");
}

#[test]
fn repository_secret_ref() {
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: private\n    url: https://charts.example.com\n    secretRef: {name: private-charts}\n  - name: open\n    url: https://open.example.com\nprofiles: []\n";
    let l = parse("p.yaml", text).unwrap();
    assert_eq!(
        l.repository("private").unwrap().secret_ref,
        Some(RepositorySecretRef {
            name: "private-charts".into()
        })
    );
    assert_eq!(l.repository("open").unwrap().secret_ref, None);
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(
        json["repositories"][0]["secretRef"]["name"],
        "private-charts"
    );
    assert!(json["repositories"][1]["secretRef"].is_null());
    assert_eq!(parse("p.yaml", &json.to_string()).unwrap(), l);

    let msgs = messages(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: a\n    url: https://a.example.com\n    secretRef: {name: Not_Valid}\n  - name: b\n    url: https://b.example.com\n    secretRef: {nam: x}\nprofiles: []\n",
    );
    assert!(
        has(
            &msgs,
            "repositories[a].secretRef.name: `Not_Valid` is not a valid Secret name"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(&msgs, "repositories[b].secretRef.nam: unknown field"),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "repositories[b].secretRef.name: missing required field `name`"
        ),
        "{msgs:#?}"
    );
}

#[test]
fn depends_on_is_a_list_of_profile_names_with_positions() {
    let l = parse(
        "p.yaml",
        &minimal(
            "  - name: a\n    chart: {path: c/a}\n    dependsOn:\n      - b\n      - c\n  - name: b\n    chart: {path: c/b}\n  - name: c\n    chart: {path: c/c}\n    dependsOn: []\n",
        ),
    )
    .unwrap();
    let a = l.profile("a").unwrap();
    assert_eq!(a.depends_on, vec!["b", "c"]);
    assert_eq!(a.depends_on_at.get(0), (10, 9));
    assert_eq!(a.depends_on_at.get(1), (11, 9));
    assert!(l.profile("c").unwrap().depends_on.is_empty());
    assert!(l.profile("b").unwrap().depends_on.is_empty());
}

#[test]
fn depends_on_problems_are_all_reported() {
    let msgs = messages(&minimal(
        "  - name: a\n    chart: {path: c/a}\n    dependsOn: [b, Bad_Name, b, 3]\n  - name: b\n    chart: {path: c/b}\n    dependsOn: b\n",
    ));
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert!(
        has(
            &msgs,
            "profiles[a].dependsOn[1]: `Bad_Name` is not a valid name"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].dependsOn[2]: `b` is listed twice (profiles[a].dependsOn[0] and [2]); list it once (line 9, column 30)"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(&msgs, "profiles[a].dependsOn[3]: must be a string, found"),
        "{msgs:#?}"
    );
    assert!(
        has(&msgs, "profiles[b].dependsOn: must be a list, found"),
        "{msgs:#?}"
    );
}

#[test]
fn prune_and_allow_empty_default_and_parse() {
    let base = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles: []\n";
    let l = parse("p.yaml", base).unwrap();
    assert!(l.prune);
    assert!(!l.allow_empty);
    assert_eq!(l.prune_settings(), crate::prune::Settings::default());
    let l = parse("p.yaml", &format!("{base}prune: false\nallowEmpty: true\n")).unwrap();
    assert!(!l.prune);
    assert!(l.allow_empty);
    let problems = parse("p.yaml", &format!("{base}prune: maybe\nallowEmpty: 1\n")).unwrap_err();
    let text = problems.to_string();
    assert!(text.contains("prune: must be true or false"), "{text}");
    assert!(text.contains("allowEmpty: must be true or false"), "{text}");
}

const HEALTH: &str = r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
defaults:
  healthChecks:
    - apiVersion: cert-manager.io/v1
      kind: Certificate
      current: self.status.conditions.exists(e, e.type == 'Ready' && e.status == 'True')
      failed: "self.status.conditions.exists(e, e.type == 'Ready' && e.reason == 'Failed')"
    - apiVersion: cert-manager.io/v1
      kind: Issuer
      current: has(self.status)
profiles:
  - name: certs
    chart: {path: charts/certs}
    healthChecks:
      - apiVersion: cert-manager.io/v1
        kind: Issuer
        current: self.status.conditions.exists(e, e.type == 'Ready')
        inProgress: "!has(self.status)"
      - apiVersion: example.com/v1
        kind: Widget
        current: self.status.phase == 'Ready'
  - name: plain
    chart: {path: charts/plain}
"#;

#[test]
fn health_checks_from_defaults_are_replaced_kind_by_kind() {
    let l = parse("p.yaml", HEALTH).unwrap();
    let kinds = |p: &str| -> Vec<(String, String)> {
        l.profile(p)
            .unwrap()
            .health_checks
            .iter()
            .map(|c| (c.kind.clone(), c.current.to_string()))
            .collect()
    };
    assert_eq!(
        kinds("certs"),
        [
            (
                "Certificate",
                "self.status.conditions.exists(e, e.type == 'Ready' && e.status == 'True')"
            ),
            (
                "Issuer",
                "self.status.conditions.exists(e, e.type == 'Ready')"
            ),
            ("Widget", "self.status.phase == 'Ready'"),
        ]
        .map(|(k, e)| (k.to_string(), e.to_string()))
    );
    assert_eq!(kinds("plain").len(), 2);
    assert!(
        l.profile("plain").unwrap().health_checks[0]
            .failed
            .is_some()
    );
    assert_eq!(l.defaults.health_checks.len(), 2);
    // The serialized form parses back to the same list.
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(json["defaults"]["healthChecks"][1]["kind"], "Issuer");
    assert_eq!(parse("p.yaml", &json.to_string()).unwrap(), l);
}

#[test]
fn a_bad_health_check_expression_is_a_problem_at_its_position_with_every_other_problem() {
    let text = r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
defaults:
  healthChecks:
    - apiVersion: cert-manager.io/v1
      kind: Certificate
      current: "self.status.phase =="
profiles:
  - name: certs
    chart: {path: charts/certs}
    timeout: 5
    healthChecks:
      - apiVersion: example.com/v1
        kind: Widget
        current: self.status.conditions.exists(e, e.type == 'Ready' &&)
        failed: |
          self.status.phase ==
            == 'Failed'
        extra: 1
      - kind: Gadget
      - apiVersion: example.com/v1
        kind: Widget
        current: "true"
"#;
    let msgs = messages(text);
    let expected = [
        "p.yaml: defaults.healthChecks[0].current: invalid CEL expression `self.status.phase ==`: line 1, column 21: Syntax error: mismatched input '<EOF>' (line 7, column 37)",
        "p.yaml: profiles[certs].healthChecks[0].current: invalid CEL expression `self.status.conditions.exists(e, e.type == 'Ready' &&)`: line 1, column 54: Syntax error: mismatched input ')' (line 15, column 71)",
        "p.yaml: profiles[certs].healthChecks[0].failed: invalid CEL expression: line 2, column 3: Syntax error: extraneous input '==' (line 17, column 11)",
        "p.yaml: profiles[certs].healthChecks[0].extra: unknown field `extra`",
        "p.yaml: profiles[certs].healthChecks[1].apiVersion: missing required field `apiVersion`",
        "p.yaml: profiles[certs].healthChecks[1].current: missing required field `current`",
        "p.yaml: profiles[certs].timeout: `5` has no unit",
    ];
    for e in expected {
        assert!(
            msgs.iter().any(|m| m.starts_with(e)),
            "{e}\n--- in ---\n{}",
            msgs.join("\n")
        );
    }
    // The position in the file: the expression's own character when written on one line.
    let l = |needle: &str| -> String {
        msgs.iter()
            .find(|m| m.contains(needle))
            .map(|m| m[m.rfind(" (line").unwrap()..].to_string())
            .unwrap()
    };
    // `current: "self.status.phase =="`: the quote is column 16, the end of the expression 37.
    assert_eq!(
        l("defaults.healthChecks[0].current"),
        " (line 7, column 37)"
    );
    // Plain scalar at column 18: `)` is its 54th character.
    assert_eq!(
        l("profiles[certs].healthChecks[0].current"),
        " (line 15, column 71)"
    );
    // A block scalar: the node's own position.
    assert_eq!(l("healthChecks[0].failed"), " (line 17, column 11)");
    // A duplicate kind is only reported once the entry is otherwise valid.
    assert!(!has(&msgs, "duplicate health check"));
}

#[test]
fn a_duplicate_health_check_kind_is_a_problem() {
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: a\n    chart: {path: charts/a}\n    healthChecks:\n      - {apiVersion: example.com/v1, kind: W, current: 'true'}\n      - {apiVersion: example.com/v1, kind: W, current: 'false'}\n      - {apiVersion: v1, kind: '', current: 'false'}\n      - {apiVersion: v1, kind: X, current: '  '}\n";
    let msgs = messages(text);
    assert!(
        has(
            &msgs,
            "profiles[a].healthChecks[1]: duplicate health check for W (example.com/v1): profiles[a].healthChecks[0] and profiles[a].healthChecks[1] are both for it; keep one"
        ),
        "{msgs:?}"
    );
    assert!(
        has(&msgs, "profiles[a].healthChecks[2].kind: must not be empty"),
        "{msgs:?}"
    );
    assert!(
        has(
            &msgs,
            "profiles[a].healthChecks[3].current: invalid CEL expression `  `: the expression is empty"
        ),
        "{msgs:?}"
    );
}

#[test]
fn drift_defaults_to_warn_the_mode_is_replaced_and_ignore_rules_concatenate() {
    use crate::drift::{DriftMode, IgnoreRule};
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  drift:\n    ignore:\n      - {kind: Deployment, paths: [/spec/replicas]}\nprofiles:\n  - name: a\n    chart: {path: charts/a}\n  - name: b\n    chart: {path: charts/b}\n    drift:\n      mode: correct\n      ignore:\n        - {kind: ConfigMap, name: tuning, paths: [/data, /metadata/labels/a~1b]}\n  - name: c\n    chart: {path: charts/c}\n    drift: {mode: ignore}\n";
    let l = parse("p.yaml", text).unwrap();
    let d = |name: &str| l.profile(name).unwrap().drift.clone();
    let replicas = IgnoreRule {
        kind: "Deployment".into(),
        name: None,
        paths: vec!["/spec/replicas".into()],
    };
    assert_eq!(l.defaults.drift.mode, DriftMode::Warn);
    assert_eq!(d("a"), l.defaults.drift);
    assert_eq!(d("b").mode, DriftMode::Correct);
    assert_eq!(
        d("b").ignore,
        [
            replicas.clone(),
            IgnoreRule {
                kind: "ConfigMap".into(),
                name: Some("tuning".into()),
                paths: vec!["/data".into(), "/metadata/labels/a~1b".into()],
            }
        ]
    );
    assert_eq!(d("c").mode, DriftMode::Ignore);
    assert_eq!(d("c").ignore, [replicas]);
    // Without any drift section: warn, nothing ignored.
    let l = parse(
        "p.yaml",
        &minimal("  - name: a\n    chart: {repository: platform, name: a}\n    version: 1.0.0\n"),
    )
    .unwrap();
    assert_eq!(l.profiles[0].drift, crate::drift::DriftPolicy::default());
    assert_eq!(l.profiles[0].drift.mode, DriftMode::Warn);
}

#[test]
fn drift_problems_are_all_reported_with_positions() {
    let cases: &[(&str, &str)] = &[
        (
            "drift: {mode: fix}",
            "profiles[a].drift.mode: unknown drift mode `fix`; expected correct, warn or ignore",
        ),
        (
            "drift: {modes: warn}",
            "profiles[a].drift.modes: unknown field `modes`; expected one of: mode, ignore",
        ),
        (
            "drift: {ignore: [{kind: Deployment, paths: [spec/replicas]}]}",
            "profiles[a].drift.ignore[0].paths[0]: `spec/replicas` is not a JSON pointer: it must start with `/`",
        ),
        (
            "drift: {ignore: [{kind: Deployment, paths: [/a~2b]}]}",
            "profiles[a].drift.ignore[0].paths[0]: `/a~2b` is not a JSON pointer: `~` must be written `~0`",
        ),
        (
            "drift: {ignore: [{kind: Deployment, paths: []}]}",
            "profiles[a].drift.ignore[0].paths: must name at least one field",
        ),
        (
            "drift: {ignore: [{kind: Deployment}]}",
            "profiles[a].drift.ignore[0].paths: missing required field `paths`",
        ),
        (
            "drift: {ignore: [{paths: [/x], namespace: a}]}",
            "profiles[a].drift.ignore[0].namespace: unknown field `namespace`; expected one of: kind, name, paths",
        ),
        (
            "drift: warn",
            "profiles[a].drift: must be a mapping, found a string",
        ),
    ];
    for (line, expected) in cases {
        let msgs = messages(&minimal(&format!(
            "  - name: a\n    chart: {{path: charts/a}}\n    {line}\n"
        )));
        assert!(has(&msgs, expected), "{line}: {msgs:?}");
        assert!(has(&msgs, "(line 9, column"), "{line}: {msgs:?}");
    }
    // Every problem of both sections at once.
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  drift: {mode: always, ignore: [{kind: '', paths: [x, /ok, z]}]}\nprofiles:\n  - name: a\n    chart: {path: charts/a}\n    drift: {mode: 1}\n";
    let msgs = messages(text);
    for needle in [
        "defaults.drift.mode: unknown drift mode `always`",
        "defaults.drift.ignore[0].kind: must not be empty",
        "defaults.drift.ignore[0].paths[0]: `x` is not a JSON pointer",
        "defaults.drift.ignore[0].paths[2]: `z` is not a JSON pointer",
        "profiles[a].drift.mode: must be a string, found an integer",
    ] {
        assert!(has(&msgs, needle), "{needle}: {msgs:?}");
    }
}

#[test]
fn repository_cert_secret_ref() {
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: mtls\n    url: https://charts.example.com\n    certSecretRef: {name: charts-client}\n    secretRef: {name: charts-login}\n  - name: open\n    url: oci://registry.example.com/charts\nprofiles: []\n";
    let l = parse("p.yaml", text).unwrap();
    let r = l.repository("mtls").unwrap();
    assert_eq!(
        r.cert_secret_ref,
        Some(RepositorySecretRef {
            name: "charts-client".into()
        })
    );
    assert_eq!(r.secret_ref.as_ref().unwrap().name, "charts-login");
    assert_eq!(l.repository("open").unwrap().cert_secret_ref, None);
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(
        json["repositories"][0]["certSecretRef"]["name"],
        "charts-client"
    );
    let msgs = messages(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: a\n    url: https://a.example.com\n    certSecretRef: {name: Bad_Name}\n  - name: b\n    url: https://b.example.com\n    certSecretRef: {key: x}\nprofiles: []\n",
    );
    assert!(
        has(
            &msgs,
            "repositories[a].certSecretRef.name: `Bad_Name` is not a valid Secret name"
        ),
        "{msgs:#?}"
    );
    assert!(
        has(&msgs, "repositories[b].certSecretRef.key: unknown field"),
        "{msgs:#?}"
    );
}
