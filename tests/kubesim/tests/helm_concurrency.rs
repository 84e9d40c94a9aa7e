//! Twenty helm installs into twenty namespaces at once all succeed.

mod common;

use common::{Helm, Sim, chart, condition};

async fn twenty_at_once(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    let runs = (0..20).map(|i| {
        let ns = format!("tenant-{i}");
        let sim = &sim;
        let chart = chart.clone();
        async move {
            let mut args = vec![
                "install".to_owned(),
                "rel".to_owned(),
                chart,
                "-n".to_owned(),
                ns,
                "--create-namespace".to_owned(),
                "--timeout".to_owned(),
                "120s".to_owned(),
            ];
            args.extend(v.wait_flags().iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            sim.helm(v, &refs).await
        }
    });
    let outs = futures::future::join_all(runs).await;
    let failed: Vec<String> = outs
        .iter()
        .filter(|o| !o.success())
        .map(|o| format!("`{}`:\n{o}", o.what))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 20 installs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    for i in 0..20 {
        let ns = format!("tenant-{i}");
        let d = sim
            .get("apps", "deployments", &ns, "rel-web")
            .expect("deployment");
        assert!(
            condition(&d, "Available").is_some_and(|c| c["status"] == "True"),
            "{ns}: {d:#}"
        );
    }
    let list = sim.helm(v, &["list", "-A", "-o", "json"]).await.ok().json();
    let deployed = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["status"] == "deployed")
        .count();
    assert_eq!(deployed, 20, "{list:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_installs_helm4() {
    twenty_at_once(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_installs_helm3() {
    twenty_at_once(Helm::V3).await;
}
