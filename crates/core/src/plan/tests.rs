use super::*;
use crate::allocation;
use crate::chart::parse_chart_yaml;
use crate::profiles;

/// A Chart.yaml with the given annotations (`key: value` pairs).
fn chart(name: &str, version: &str, annotations: &[(&str, &str)]) -> ChartMeta {
    let mut text = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
    if !annotations.is_empty() {
        text.push_str("annotations:\n");
        for (k, v) in annotations {
            text.push_str(&format!("  {k}: \"{v}\"\n"));
        }
    }
    parse_chart_yaml(&format!("{name}/Chart.yaml"), &text).unwrap()
}

fn profile_chart(name: &str, layer: Option<&str>, category: Option<&str>) -> ChartMeta {
    let mut a = vec![("strata.dev/profile", "true")];
    if let Some(l) = layer {
        a.push(("strata.dev/layer", l));
    }
    if let Some(c) = category {
        a.push(("weave.works/category", c));
    }
    chart(name, "1.0.0", &a)
}

/// A list with path charts for each (name, extra YAML lines) and a layering block.
fn list(layering: &str, profiles: &[(&str, &str)]) -> ProfileList {
    let mut text =
        format!("apiVersion: strata.dev/v1alpha1\nkind: ProfileList\n{layering}profiles:\n");
    for (name, extra) in profiles {
        text.push_str(&format!(
            "  - name: {name}\n    chart: {{path: charts/{name}}}\n"
        ));
        for line in extra.lines() {
            text.push_str(&format!("    {line}\n"));
        }
    }
    profiles::parse("profiles.yaml", &text).unwrap()
}

fn charts(list: &[ChartMeta]) -> BTreeMap<String, ChartMeta> {
    list.iter().map(|c| (c.name.clone(), c.clone())).collect()
}

fn layer_names(p: &Plan) -> Vec<(String, Vec<String>)> {
    p.layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.releases.iter().map(|r| r.release.name.clone()).collect(),
            )
        })
        .collect()
}

fn problems(r: Result<Plan, Problems>) -> String {
    r.expect_err("expected problems").to_string()
}

#[test]
fn annotation_model_orders_numerically_and_unlayered_last() {
    let l = list(
        "",
        &[
            ("flagger", ""),
            ("linkerd", ""),
            ("cert-manager", ""),
            ("misc", ""),
            ("tools", "layer: 2"),
        ],
    );
    let c = charts(&[
        profile_chart("flagger", Some("layer-10"), None),
        profile_chart("linkerd", Some("layer-2"), None),
        profile_chart("cert-manager", Some("1"), None),
        profile_chart("misc", None, None),
        chart("tools", "0.1.0", &[]),
    ]);
    let p = plan(&l, &c, None).unwrap();
    assert_eq!(
        layer_names(&p),
        vec![
            ("layer-1".to_string(), vec!["cert-manager".to_string()]),
            ("layer-2".into(), vec!["linkerd".into(), "tools".into()]),
            ("layer-10".into(), vec!["flagger".into()]),
            ("unlayered".into(), vec!["misc".into()]),
        ]
    );
    let r = p
        .release(&ReleaseKey::new("default", "cert-manager"))
        .unwrap();
    assert_eq!(
        r.layer_source,
        LayerSource::Annotation {
            key: "strata.dev/layer".into()
        }
    );
    assert_eq!(
        p.release(&ReleaseKey::new("default", "tools"))
            .unwrap()
            .layer_source,
        LayerSource::Override
    );
    assert!(p.notes[0].contains("without a layer run after every numbered layer: default/misc"));
    let text = p.to_string();
    assert!(text.contains("layer-1:\n  cert-manager  cert-manager@1.0.0  namespace default  (annotation strata.dev/layer)"), "{text}");
    assert!(
        text.contains("unlayered (runs after every numbered layer):\n  misc"),
        "{text}"
    );
    assert_eq!(
        p.layer_index(&ReleaseKey::new("default", "flagger")),
        Some(2)
    );
}

#[test]
fn weave_annotations_work() {
    let l = list("", &[("a", "")]);
    let c = charts(&[chart(
        "a",
        "1.0.0",
        &[
            ("weave.works/profile", "a"),
            ("weave.works/layer", "layer-3"),
        ],
    )]);
    let p = plan(&l, &c, None).unwrap();
    assert_eq!(p.layers[0].layer, Some(LayerNumber(3)));
    assert_eq!(
        p.layers[0].releases[0].layer_source,
        LayerSource::Annotation {
            key: "weave.works/layer".into()
        }
    );
}

#[test]
fn category_model() {
    let layering =
        "layering:\n  model: category\n  categories: {certificates: 10, service-mesh: 20}\n";
    let l = list(
        layering,
        &[("cm", ""), ("mesh", ""), ("pinned", "layer: 5")],
    );
    let c = charts(&[
        profile_chart("cm", Some("99"), Some("certificates")),
        profile_chart("mesh", None, Some("service-mesh")),
        profile_chart("pinned", None, None),
    ]);
    let p = plan(&l, &c, None).unwrap();
    assert_eq!(
        layer_names(&p),
        vec![
            ("layer-5".to_string(), vec!["pinned".to_string()]),
            ("layer-10".into(), vec!["cm".into()]),
            ("layer-20".into(), vec!["mesh".into()]),
        ]
    );
    assert_eq!(
        p.layers[1].releases[0].layer_source,
        LayerSource::Category {
            category: "certificates".into(),
            key: "weave.works/category".into()
        }
    );
    assert!(
        p.to_string().contains(
            "  cm  cm@1.0.0  namespace default  (category certificates from weave.works/category, mapped by layering.categories)"
        ),
        "{p}"
    );
    // Missing category, unknown category.
    let l = list(layering, &[("a", ""), ("b", "")]);
    let c = charts(&[
        profile_chart("a", Some("1"), None),
        profile_chart("b", None, Some("storage")),
    ]);
    let s = problems(plan(&l, &c, None));
    assert!(
        s.contains("profiles.yaml: profiles[a].chart: chart `a` has no category annotation"),
        "{s}"
    );
    assert!(s.contains("profiles[b].chart: chart `b` has category `storage`, which layering.categories does not map (known: certificates, service-mesh)"), "{s}");
}

#[test]
fn allocated_model() {
    let layering = "layering: {model: allocated, allocationFile: layers.yaml}\n";
    let a = allocation::parse(
        "layers.yaml",
        "apiVersion: strata.dev/v1alpha1\nkind: LayerAllocation\ncomponents: {cert-manager: 10, linkerd: 20}\n",
    )
    .unwrap();
    let l = list(layering, &[("linkerd", ""), ("cert-manager", "")]);
    let c = charts(&[
        profile_chart("linkerd", Some("1"), None),
        profile_chart("cert-manager", None, None),
    ]);
    let p = plan(&l, &c, Some(&a)).unwrap();
    assert_eq!(p.layers[0].releases[0].release.name, "cert-manager");
    assert_eq!(p.layers[1].layer, Some(LayerNumber(20)));
    assert_eq!(
        p.layers[1].releases[0].layer_source,
        LayerSource::Allocation {
            file: "layers.yaml".into()
        }
    );
    let l = list(layering, &[("flagger", "")]);
    let c = charts(&[profile_chart("flagger", Some("3"), None)]);
    let s = problems(plan(&l, &c, Some(&a)));
    assert!(
        s.contains("component `flagger` is not in the allocation file layers.yaml"),
        "{s}"
    );
    let s = problems(plan(&l, &c, None));
    assert!(
        s.contains("layering.allocationFile: the allocation file layers.yaml was not loaded"),
        "{s}"
    );
}

#[test]
fn non_profile_charts_need_an_override() {
    let l = list("", &[("plain", ""), ("forced", "layer: layer-4")]);
    let c = charts(&[chart("plain", "1.0.0", &[]), chart("forced", "1.0.0", &[])]);
    let s = problems(plan(&l, &c, None));
    assert!(
        s.contains("profiles[plain].chart: chart `plain` is not a profile"),
        "{s}"
    );
    assert!(!s.contains("forced"), "{s}");
}

#[test]
fn chart_checks() {
    let text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories: [{name: r, url: 'https://x'}]\nprofiles:\n  - name: a\n    chart: {repository: r, name: a}\n    version: ~1.2\n  - name: b\n    chart: {repository: r, name: b}\n    version: 1.0.0\n  - name: lib\n    chart: {path: charts/lib}\n    layer: 1\n  - name: missing\n    chart: {path: charts/missing}\n";
    let l = profiles::parse("profiles.yaml", text).unwrap();
    let mut c = BTreeMap::new();
    c.insert("a".to_string(), profile_chart("a", Some("1"), None)); // version 1.0.0
    c.insert("b".to_string(), profile_chart("other", Some("1"), None));
    c.insert(
        "lib".to_string(),
        parse_chart_yaml(
            "C",
            "apiVersion: v2\nname: lib\nversion: 1.0.0\ntype: library\n",
        )
        .unwrap(),
    );
    let s = problems(plan(&l, &c, None));
    assert!(
        s.contains(
            "profiles[a].version: chart `a` has version 1.0.0, which does not satisfy `~1.2`"
        ),
        "{s}"
    );
    assert!(
        s.contains("profiles[b].chart.name: the chart fetched for `b` calls itself `other`"),
        "{s}"
    );
    assert!(
        s.contains("profiles[lib].chart: chart `lib` is a library chart"),
        "{s}"
    );
    assert!(
        s.contains("profiles[missing].chart: no Chart.yaml was found for profile `missing`"),
        "{s}"
    );
}

#[test]
fn plan_serializes_for_json_output() {
    let l = list("", &[("a", "namespace: infra"), ("b", "")]);
    let c = charts(&[
        profile_chart("a", Some("1"), None),
        profile_chart("b", None, None),
    ]);
    let p = plan(&l, &c, None).unwrap();
    let j = serde_json::to_value(&p).unwrap();
    assert_eq!(j["model"], "annotation");
    assert_eq!(j["layers"][0]["name"], "layer-1");
    assert_eq!(j["layers"][0]["layer"], 1);
    assert_eq!(
        j["layers"][0]["releases"][0]["release"]["namespace"],
        "infra"
    );
    assert_eq!(
        j["layers"][0]["releases"][0]["layerSource"]["kind"],
        "annotation"
    );
    assert_eq!(j["layers"][0]["releases"][0]["timeout"], "5m0s");
    assert_eq!(j["layers"][1]["layer"], serde_json::Value::Null);
    assert_eq!(
        j["layers"][1]["releases"][0]["layerSource"]["kind"],
        "unlayered"
    );
    let back: Plan = serde_json::from_value(j).unwrap();
    assert_eq!(back, p);
}

#[test]
fn depends_on_orders_a_layer_and_is_printed() {
    let l = list(
        "",
        &[
            ("mesh", "dependsOn: [issuer]"),
            ("tools", ""),
            ("issuer", "dependsOn: [certs]"),
            ("certs", ""),
            ("app", "dependsOn: [certs, mesh]"),
        ],
    );
    let c = charts(&[
        profile_chart("mesh", Some("1"), None),
        profile_chart("tools", Some("1"), None),
        profile_chart("issuer", Some("1"), None),
        profile_chart("certs", Some("1"), None),
        profile_chart("app", Some("2"), None),
    ]);
    let p = plan(&l, &c, None).unwrap();
    assert_eq!(
        layer_names(&p),
        vec![
            (
                "layer-1".to_string(),
                vec![
                    "tools".to_string(),
                    "certs".into(),
                    "issuer".into(),
                    "mesh".into()
                ]
            ),
            ("layer-2".into(), vec!["app".into()]),
        ]
    );
    let mesh = p.release(&ReleaseKey::new("default", "mesh")).unwrap();
    assert_eq!(mesh.depends_on, vec!["issuer"]);
    let text = p.to_string();
    assert!(
        text.contains(
            "  mesh  mesh@1.0.0  namespace default  (annotation strata.dev/layer)  (after: issuer)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  tools  tools@1.0.0  namespace default  (annotation strata.dev/layer)\n"),
        "{text}"
    );
    assert!(text.contains("(after: certs, mesh)"), "{text}");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json["layers"][0]["releases"][3]["dependsOn"],
        serde_json::json!(["issuer"])
    );
    assert!(json["layers"][0]["releases"][0].get("dependsOn").is_none());
}

#[test]
fn depends_on_problems_join_the_other_problems() {
    let l = list(
        "",
        &[
            ("a", "dependsOn: [b]"),
            ("b", "dependsOn: [c]"),
            ("c", "dependsOn: [a, up]"),
            ("up", ""),
            ("ghost", "dependsOn: [nobody]"),
            ("plain", ""),
        ],
    );
    let c = charts(&[
        profile_chart("a", Some("1"), None),
        profile_chart("b", Some("1"), None),
        profile_chart("c", Some("1"), None),
        profile_chart("up", Some("2"), None),
        profile_chart("ghost", Some("1"), None),
        chart("plain", "1.0.0", &[]),
    ]);
    let text = problems(plan(&l, &c, None));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        text.contains("profiles[plain].chart: chart `plain` is not a profile"),
        "{text}"
    );
    assert!(
        text.contains("profiles[c].dependsOn[1]: `up` is in layer-2, above layer-1 of `c`"),
        "{text}"
    );
    assert!(
        text.contains("profiles[ghost].dependsOn[0]: no profile named `nobody`"),
        "{text}"
    );
    assert!(
        text.contains("profiles[a].dependsOn[0]: dependsOn cycle: a -> b -> c -> a;"),
        "{text}"
    );
}

#[test]
fn render_prints_details_under_their_release() {
    let l = list("", &[("a", ""), ("b", "")]);
    let c = charts(&[
        profile_chart("a", Some("1"), None),
        profile_chart("b", Some("1"), None),
    ]);
    let p = plan(&l, &c, None).unwrap();
    let mut text = String::new();
    p.render(&mut text, |r| {
        (r.release.name == "b").then(|| "wait: helm\nsecond line".to_string())
    })
    .unwrap();
    assert_eq!(
        text,
        "layering model: annotation\nlayer-1:\n  a  a@1.0.0  namespace default  (annotation strata.dev/layer)\n  b  b@1.0.0  namespace default  (annotation strata.dev/layer)\n    wait: helm\n    second line\n"
    );
    // Without details, the same as Display.
    let mut plain = String::new();
    p.render(&mut plain, |_| None).unwrap();
    assert_eq!(plain, p.to_string());
}
