//! CRDs: a chart with `crds/` and a custom resource of that CRD installs; a chart whose
//! custom resource's CRD is missing fails with helm's "no matches for kind" error.

mod common;

use common::{Helm, Sim, chart};

async fn crd_chart_installs(v: Helm, wait: bool) {
    let sim = Sim::start().await;
    let chart = chart("crd-widget");
    let mut args = vec![
        "install",
        "w",
        chart.as_str(),
        "-n",
        "app",
        "--create-namespace",
        "--timeout",
        "60s",
    ];
    if wait {
        args.extend(v.wait_flags());
    }
    sim.helm(v, &args).await.ok();
    let crd = sim
        .store()
        .get(
            &kubesim::ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
            None,
            "widgets.example.strata.dev",
        )
        .expect("CRD installed from crds/");
    assert!(
        common::condition(&crd, "Established").is_some_and(|c| c["status"] == "True"),
        "{crd:#}"
    );
    let widget = sim
        .get("example.strata.dev", "widgets", "app", "w-widget")
        .expect("custom resource installed");
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(
        widget["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    let status = sim
        .helm(v, &["status", "w", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(status["info"]["status"], "deployed");
}

async fn missing_crd_fails(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("cr-missing-crd");
    let out = sim
        .helm(
            v,
            &[
                "install",
                "g",
                &chart,
                "-n",
                "app",
                "--create-namespace",
                "--timeout",
                "60s",
            ],
        )
        .await
        .failed();
    assert!(
        out.stderr
            .contains(r#"no matches for kind "Gadget" in version "example.strata.dev/v1""#),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_chart_installs_helm4_without_wait() {
    crd_chart_installs(Helm::V4, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_chart_installs_helm4_with_wait() {
    crd_chart_installs(Helm::V4, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_chart_installs_helm3() {
    crd_chart_installs(Helm::V3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crd_fails_with_no_matches_for_kind_helm4() {
    missing_crd_fails(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crd_fails_with_no_matches_for_kind_helm3() {
    missing_crd_fails(Helm::V3).await;
}
