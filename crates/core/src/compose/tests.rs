use super::*;

const BASE: &str = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
repositories:
  - name: platform
    url: https://charts.example.com
defaults:
  namespace: platform
profiles:
  - name: cert-manager
    chart: {repository: platform, name: cert-manager}
    version: 1.14.x
    values:
      installCRDs: true
      replicas: 1
  - name: linkerd
    chart: {repository: platform, name: linkerd-control-plane}
    version: ^2.14
  - name: podinfo
    chart: {path: charts/podinfo}
    layer: 3
";

fn files(list: &[(&str, &str)]) -> BTreeMap<String, Fetched> {
    list.iter()
        .map(|(p, t)| ((*p).to_owned(), Fetched::Text((*t).to_owned())))
        .collect()
}

fn run(file: &str, text: &str, others: &[(&str, &str)]) -> Result<ProfileList, Problems> {
    compose_all(
        Root {
            file,
            text,
            first: &[],
        },
        &files(others),
    )
}

fn messages(ps: &Problems) -> Vec<String> {
    ps.iter().map(ToString::to_string).collect()
}

#[test]
fn override_add_and_disable() {
    let cluster = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
include: [base/profiles.yaml]
profiles:
  - name: cert-manager
    version: 1.15.0
    values: {replicas: 3}
  - name: linkerd
    enabled: false
  - name: extra
    chart: {path: charts/extra}
";
    let l = run(
        "clusters/prod/profiles.yaml",
        cluster,
        &[("base/profiles.yaml", BASE)],
    )
    .unwrap();
    assert_eq!(l.file, "clusters/prod/profiles.yaml");
    let names: Vec<&str> = l.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cert-manager", "podinfo", "extra"]);
    let cm = l.profile("cert-manager").unwrap();
    assert_eq!(cm.version.as_ref().unwrap().to_string(), "1.15.0");
    // values merged key by key; the base's repository and defaults apply.
    assert_eq!(
        serde_json::Value::Object(cm.values.clone()),
        serde_json::json!({"installCRDs": true, "replicas": 3})
    );
    assert_eq!(cm.namespace, "platform");
    assert_eq!(l.repositories.len(), 1);
    assert_eq!(
        l.profile("podinfo").unwrap().layer.map(|x| x.0),
        Some(3),
        "untouched fields stay"
    );
}

#[test]
fn asks_for_files_it_has_not_been_given() {
    let cluster =
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [./base//profiles.yaml]\n";
    let root = Root {
        file: "c.yaml",
        text: cluster,
        first: &[],
    };
    assert_eq!(
        compose(root, &BTreeMap::new()),
        Outcome::Need(vec!["base/profiles.yaml".into()])
    );
    let Outcome::Done(r) = compose(root, &files(&[("base/profiles.yaml", BASE)])) else {
        panic!("still needs files")
    };
    assert_eq!(r.unwrap().profiles.len(), 3);
}

#[test]
fn overlay_first_includes_the_git_list() {
    let overlay = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
profiles:
  - name: podinfo
    enabled: false
  - name: linkerd
    version: 2.15.0
";
    let first = vec!["base/profiles.yaml".to_owned()];
    let l = compose_all(
        Root {
            file: "configmap/strata-profiles",
            text: overlay,
            first: &first,
        },
        &files(&[("base/profiles.yaml", BASE)]),
    )
    .unwrap();
    let names: Vec<&str> = l.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cert-manager", "linkerd"]);
    assert_eq!(
        l.profile("linkerd")
            .unwrap()
            .version
            .as_ref()
            .unwrap()
            .to_string(),
        "2.15.0"
    );
}

#[test]
fn cycle_is_named_with_its_chain() {
    let a = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [b.yaml]\nprofiles: []\n";
    let b = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [c.yaml]\n";
    let c = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude:\n  - a.yaml\n";
    let ps = run("a.yaml", a, &[("b.yaml", b), ("c.yaml", c)]).unwrap_err();
    let m = messages(&ps);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        m[0],
        "c.yaml: include[0]: include cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml; a list cannot include itself, directly or through others (line 4, column 5)"
    );
}

#[test]
fn self_include_is_a_cycle() {
    let a = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [a.yaml]\nprofiles: []\n";
    let m = messages(&run("a.yaml", a, &[]).unwrap_err());
    assert!(m[0].contains("include cycle: a.yaml -> a.yaml"), "{m:?}");
}

#[test]
fn missing_refused_and_escaping_paths_are_reported_together() {
    let a = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
include:
  - nope.yaml
  - ../outside.yaml
  - /etc/passwd
  - link.yaml
  - 7
profiles: []
";
    let mut f = BTreeMap::new();
    f.insert(
        "link.yaml".to_owned(),
        Fetched::Refused("out-of-bounds symlink: link.yaml is a symlink to /etc".into()),
    );
    let ps = compose_all(
        Root {
            file: "a.yaml",
            text: a,
            first: &[],
        },
        &f,
    )
    .unwrap_err();
    let m = messages(&ps);
    assert_eq!(m.len(), 5, "{m:?}");
    assert!(
        m[0].starts_with("a.yaml: include[4]: must be a path"),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x
            == "a.yaml: include[0]: included list nope.yaml does not exist in the revision (line 4, column 5)"),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x.contains("include[1]")
            && x.contains("`..` is not allowed")
            && x.contains("line 5")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|x| x.contains("include[2]") && x.contains("relative to the repository root")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|x| x.contains("include[3]: included list link.yaml: out-of-bounds symlink")),
        "{m:?}"
    );
}

#[test]
fn two_bases_defining_a_profile_differently_conflict() {
    let a = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: x\n    chart: {path: charts/a}\n";
    let b = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: other\n    chart: {path: charts/other}\n  - name: x\n    chart: {path: charts/b}\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [a.yaml, b.yaml]\n";
    let m = messages(&run("top.yaml", top, &[("a.yaml", a), ("b.yaml", b)]).unwrap_err());
    assert_eq!(
        m,
        [
            "top.yaml: include[1]: profile `x` is defined differently by a.yaml (line 4) and b.yaml (line 6); add an entry `- name: x` to this list to say which applies (it is applied on top of the one included last) (line 3, column 19)"
        ]
    );
    // Resolved by the including list: the last included one, with its fields on top.
    let resolved = format!("{top}profiles:\n  - name: x\n    layer: 2\n");
    let l = run("top.yaml", &resolved, &[("a.yaml", a), ("b.yaml", b)]).unwrap();
    let x = l.profile("x").unwrap();
    assert_eq!(x.chart.to_string(), "git:charts/b");
    assert_eq!(x.layer.map(|l| l.0), Some(2));
}

#[test]
fn the_same_base_reached_twice_is_no_conflict() {
    let mid1 = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [base.yaml]\n";
    let mid2 = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [base.yaml]\nprofiles:\n  - name: extra\n    chart: {path: charts/extra}\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [m1.yaml, m2.yaml]\n";
    let l = run(
        "top.yaml",
        top,
        &[("m1.yaml", mid1), ("m2.yaml", mid2), ("base.yaml", BASE)],
    )
    .unwrap();
    assert_eq!(l.profiles.len(), 4);
}

#[test]
fn depth_is_limited() {
    let mut f = Vec::new();
    let texts: Vec<String> = (0..=MAX_INCLUDE_DEPTH + 1)
        .map(|i| {
            format!(
                "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [l{}.yaml]\nprofiles: []\n",
                i + 1
            )
        })
        .collect();
    for (i, t) in texts.iter().enumerate() {
        f.push((format!("l{i}.yaml"), t.clone()));
    }
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let m = messages(&run("l0.yaml", &texts[0], &refs[1..]).unwrap_err());
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with(&format!(
            "l{}.yaml: include[0]: includes are nested too deep: l0.yaml -> l1.yaml",
            MAX_INCLUDE_DEPTH
        )),
        "{m:?}"
    );
}

#[test]
fn problems_name_the_file_and_position_they_come_from() {
    let base = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
profiles:
  - name: a
    chart: {path: charts/a}
    timout: 5m
";
    let top = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
include: [base.yaml]
profiles:
  - name: a
    version: not a version!
  - name: b
    version: 1.0.0
  - name: ghost
    enabled: false
";
    let m = messages(&run("top.yaml", top, &[("base.yaml", base)]).unwrap_err());
    assert!(
        m.iter().any(
            |x| x.starts_with("base.yaml: profiles[a].timout: unknown field")
                && x.ends_with("(line 6, column 5)")
        ),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|x| x.starts_with("top.yaml: profiles[a].version:")
                && x.ends_with("(line 6, column 14)")),
        "{m:?}"
    );
    assert!(
        m.iter().any(
            |x| x.starts_with("top.yaml: profiles[b].chart: missing required field")
                && x.ends_with("(line 7, column 5)")
        ),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x == "top.yaml: profiles[ghost].enabled: no included list defines a profile `ghost`, so there is nothing to disable; check the name (line 10, column 14)"),
        "{m:?}"
    );
}

#[test]
fn included_files_must_be_profile_lists() {
    let base = "kind: Other\nprofiles: []\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [base.yaml]\n";
    let m = messages(&run("top.yaml", top, &[("base.yaml", base)]).unwrap_err());
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with("base.yaml: apiVersion: missing required field"),
        "{m:?}"
    );
    assert!(
        m[1].starts_with("base.yaml: kind: must be `ProfileList`"),
        "{m:?}"
    );
}

#[test]
fn disabled_in_a_plain_list_and_reenabled_above() {
    let base = "\
apiVersion: strata.dev/v1alpha1
kind: ProfileList
profiles:
  - name: a
    chart: {path: charts/a}
    enabled: false
  - name: b
    chart: {path: charts/b}
";
    let l = crate::profiles::parse("base.yaml", base).unwrap();
    assert_eq!(l.profiles.len(), 1);
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [base.yaml]\nprofiles:\n  - {name: a, enabled: true}\n";
    let l = run("top.yaml", top, &[("base.yaml", base)]).unwrap();
    assert_eq!(l.profiles.len(), 2);
    let bad = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - {name: a, chart: {path: c}, enabled: 'no'}\n";
    let m = messages(&crate::profiles::parse("p.yaml", bad).unwrap_err());
    assert_eq!(
        m,
        ["p.yaml: profiles[a].enabled: must be true or false, found a string (line 4, column 42)"]
    );
}

#[test]
fn later_includes_win_for_list_settings() {
    let a = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprune: false\ndefaults: {namespace: a, timeout: 1m}\nrepositories:\n  - {name: r, url: 'https://a.example'}\n";
    let b = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults: {namespace: b}\nrepositories:\n  - {name: r, url: 'https://b.example'}\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [a.yaml, b.yaml]\nprofiles: []\n";
    let l = run("top.yaml", top, &[("a.yaml", a), ("b.yaml", b)]).unwrap();
    assert!(!l.prune);
    assert_eq!(l.defaults.namespace, "b");
    assert_eq!(l.defaults.timeout.0.as_secs(), 60);
    assert_eq!(l.repositories.len(), 1);
    assert_eq!(l.repositories[0].url, "https://b.example");
}

#[test]
fn depends_on_problems_found_at_plan_time_name_the_included_file() {
    let base = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: a\n    chart: {path: charts/a}\n    dependsOn: [ghost]\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [base.yaml]\n";
    let l = run("top.yaml", top, &[("base.yaml", base)]).unwrap();
    let layers = BTreeMap::from([("a", None)]);
    let m = messages(&crate::depends::check(&l, &layers));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("base.yaml: profiles[a].dependsOn[0]: no profile named `ghost`"),
        "{m:?}"
    );
    assert!(m[0].ends_with("(line 6, column 17)"), "{m:?}");
}

#[test]
fn an_empty_defaults_keeps_what_earlier_lists_set_and_problems_are_reported_once() {
    let a = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults: {namespace: a}\n";
    let b = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults: {}\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [a.yaml, b.yaml]\nprofiles: []\n";
    let l = run("top.yaml", top, &[("a.yaml", a), ("b.yaml", b)]).unwrap();
    assert_eq!(l.defaults.namespace, "a");
    // The same broken base reached through two lists: its problem once.
    let base = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: p\n    chart: {path: c}\n    enabled: maybe\n";
    let m1 = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [base.yaml]\n";
    let top = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ninclude: [m1.yaml, m2.yaml]\n";
    let m = messages(
        &run(
            "top.yaml",
            top,
            &[("m1.yaml", m1), ("m2.yaml", m1), ("base.yaml", base)],
        )
        .unwrap_err(),
    );
    assert_eq!(
        m,
        [
            "base.yaml: profiles[p].enabled: must be true or false, found a string (line 6, column 14)"
        ]
    );
}
