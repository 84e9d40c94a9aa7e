//! The example profile repository (`examples/`): every profile list parses and plans the
//! seed's order with each layering model, the charts pass `helm lint` with helm 4 and helm 3,
//! and the umbrella chart renders all three charts.

use std::collections::BTreeMap;
use std::path::Path;

use strata_core::profiles::ChartRef;
use testkit::{HelmBin, examples_dir};

fn read(rel: &str) -> String {
    std::fs::read_to_string(examples_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Plans a profile list from examples/, reading chart metadata from the chart paths.
fn plan(list_file: &str) -> strata_core::plan::Plan {
    // Lists may include others of the repository (examples/clusters/*).
    let mut files = BTreeMap::new();
    let base = "clusters/base/profiles.yaml";
    files.insert(
        base.to_string(),
        strata_core::compose::Fetched::Text(read(base)),
    );
    let list = strata_core::compose::compose_all(
        strata_core::compose::Root {
            file: list_file,
            text: &read(list_file),
            first: &[],
        },
        &files,
    )
    .unwrap_or_else(|p| panic!("{list_file}: {p}"));
    let mut charts = BTreeMap::new();
    for p in &list.profiles {
        let ChartRef::Path { path } = &p.chart else {
            panic!("examples use chart paths")
        };
        let file = format!("{path}/Chart.yaml");
        let text = strata::source::charts::chart_yaml_from_dir(&examples_dir().join(path)).unwrap();
        let meta = strata_core::chart::parse_chart_yaml(&file, &text)
            .unwrap_or_else(|p| panic!("{file}: {p}"));
        charts.insert(p.name.clone(), meta);
    }
    let allocation = list.layering.allocation_file.as_ref().map(|f| {
        strata_core::allocation::parse(f, &read(f)).unwrap_or_else(|p| panic!("{f}: {p}"))
    });
    strata_core::plan::plan(&list, &charts, allocation.as_ref())
        .unwrap_or_else(|p| panic!("{list_file}: {p}"))
}

fn order(plan: &strata_core::plan::Plan) -> Vec<(Option<u32>, Vec<String>)> {
    plan.layers
        .iter()
        .map(|l| {
            (
                l.layer.map(|n| n.0),
                l.releases.iter().map(|r| r.profile.clone()).collect(),
            )
        })
        .collect()
}

#[test]
fn every_layering_model_puts_the_seed_charts_in_order() {
    let one = |n: u32, p: &str| (Some(n), vec![p.to_string()]);
    assert_eq!(
        order(&plan("profiles.yaml")),
        vec![one(1, "cert-manager"), one(2, "linkerd"), one(3, "flagger")]
    );
    assert_eq!(
        order(&plan("profiles-category.yaml")),
        vec![
            one(10, "cert-manager"),
            one(20, "linkerd"),
            one(30, "flagger")
        ]
    );
    assert_eq!(
        order(&plan("profiles-allocated.yaml")),
        vec![
            one(100, "cert-manager"),
            one(200, "linkerd"),
            one(300, "flagger")
        ]
    );
}

#[test]
fn cluster_lists_override_and_disable_profiles_of_the_shared_base() {
    let one = |n: u32, p: &str| (Some(n), vec![p.to_string()]);
    let prod = plan("clusters/prod/profiles.yaml");
    assert_eq!(
        order(&prod),
        vec![one(1, "cert-manager"), one(2, "linkerd"), one(3, "flagger")]
    );
    assert_eq!(
        order(&plan("clusters/dev/profiles.yaml")),
        vec![(
            Some(1),
            vec!["cert-manager".to_string(), "linkerd".to_string()]
        )],
        "flagger disabled, both others in layer 1, linkerd after cert-manager"
    );
}

#[test]
fn flagger_uses_weave_keys_and_the_others_strata_keys() {
    let meta = |chart: &str| {
        let text = read(&format!("charts/{chart}/Chart.yaml"));
        strata_core::chart::parse_chart_yaml("Chart.yaml", &text)
            .unwrap()
            .profile
            .expect("a profile")
    };
    let f = meta("flagger");
    assert_eq!(f.layer_key.as_deref(), Some("weave.works/layer"));
    assert_eq!(f.category.as_deref(), Some("progressive-delivery"));
    let c = meta("cert-manager");
    assert_eq!(c.layer_key.as_deref(), Some("strata.dev/layer"));
    assert_eq!(c.category.as_deref(), Some("certificates"));
    assert_eq!(meta("linkerd").category.as_deref(), Some("service-mesh"));
}

fn helm(bin: HelmBin, home: &Path, args: &[&str]) -> std::process::Output {
    testkit::charts::helm_command(&bin.path(), home)
        .args(args)
        .current_dir(examples_dir())
        .output()
        .unwrap()
}

#[test]
fn charts_pass_helm_lint_with_both_helm_versions() {
    let home = tempfile::tempdir().unwrap();
    for bin in HelmBin::ALL {
        for chart in [
            "charts/cert-manager",
            "charts/linkerd",
            "charts/flagger",
            "umbrella",
        ] {
            let out = helm(bin, home.path(), &["lint", "--strict", chart]);
            assert!(
                out.status.success(),
                "helm {bin:?} lint {chart}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_umbrella_renders_all_three_charts_and_the_cross_chart_kinds() {
    let home = tempfile::tempdir().unwrap();
    let out = helm(
        HelmBin::V4,
        home.path(),
        &["template", "platform", "umbrella"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects =
        strata::executor::releases::manifest_objects(&String::from_utf8_lossy(&out.stdout));
    let kinds: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["apiVersion"].as_str().unwrap().to_string(),
                o["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("cert-manager.io/v1", "Certificate"),
        ("cert-manager.io/v1", "Issuer"),
        ("linkerd.io/v1alpha2", "ServiceProfile"),
        ("apps/v1", "Deployment"),
    ] {
        assert!(
            kinds.iter().any(|(a, k)| a == want.0 && k == want.1),
            "{want:?} missing from {kinds:?}"
        );
    }
    // The hook Jobs are hooks (rendered, but not part of the release's resources).
    let hooks = objects
        .iter()
        .filter(|o| o["metadata"]["annotations"]["helm.sh/hook"].is_string())
        .count();
    assert_eq!(hooks, 2);
}
