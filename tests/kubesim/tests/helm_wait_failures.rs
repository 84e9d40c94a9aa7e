//! kubesim's behaviour annotations seen through helm's waits: a never-ready Deployment times
//! out, a failing one reports ProgressDeadlineExceeded, a slow one is waited for; helm 4's
//! legacy wait works too.

mod common;

use std::time::Duration;

use common::{Helm, Sim, chart, condition};

fn install_args<'a>(chart: &'a str, extra: &[&'a str], v: Helm) -> Vec<&'a str> {
    let mut args = vec!["install", "rel", chart, "-n", "app", "--create-namespace"];
    args.extend_from_slice(extra);
    args.extend(v.wait_flags());
    args
}

async fn never_ready_times_out(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    let args = install_args(
        &chart,
        &[
            "--timeout",
            "3s",
            // Annotation values are strings: `--set` would make `true` a YAML boolean.
            "--set-string",
            r"podAnnotations.kubesim\.strata\.dev/never-ready=true",
        ],
        v,
    );
    let out = sim.helm(v, &args).await.failed();
    match v {
        Helm::V4 => assert!(
            out.stderr
                .contains("resource Deployment/app/rel-web not ready. status: InProgress")
                && out.stderr.contains("context deadline exceeded"),
            "{out}"
        ),
        Helm::V3 => assert!(out.stderr.contains("context deadline exceeded"), "{out}"),
    }
    assert!(
        out.took >= Duration::from_secs(3),
        "gave up early: {:?}",
        out.took
    );
    let st = sim
        .helm(v, &["status", "rel", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(st["info"]["status"], "failed");
    let d = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    assert_eq!(d["status"]["readyReplicas"], 0, "{d:#}");
    let pods = sim.list("", "pods", "app");
    let web = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "rel-web")
        .expect("web pod");
    assert_eq!(web["status"]["phase"], "Running");
    assert_eq!(condition(web, "Ready").unwrap()["status"], "False");
}

/// With `fail`, pods crash-loop and the Deployment hits its progress deadline, as kubectl
/// shows it.
async fn failing_deployment_exceeds_its_deadline(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    // Without --wait helm returns at once; the controllers keep going.
    sim.helm(
        v,
        &[
            "install",
            "rel",
            &chart,
            "-n",
            "app",
            "--create-namespace",
            "--set-string",
            r"podAnnotations.kubesim\.strata\.dev/fail=true",
        ],
    )
    .await
    .ok();
    // Shorten the deadline the way a user would.
    sim.kubectl(&[
        "patch",
        "deployment",
        "rel-web",
        "-n",
        "app",
        "--type=merge",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":1}}"#,
    ])
    .await
    .ok();
    let out = sim
        .kubectl(&[
            "wait",
            "--for=jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}=ProgressDeadlineExceeded",
            "deployment/rel-web",
            "-n",
            "app",
            "--timeout=20s",
        ])
        .await
        .ok();
    assert!(out.stdout.contains("condition met"), "{out}");
    let pods = sim
        .kubectl(&[
            "get",
            "pods",
            "-n",
            "app",
            "-l",
            "app=rel-web",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        pods["items"][0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
}

/// `ready-after` holds helm's wait until the pods are ready, and no longer.
async fn slow_deployment_is_waited_for(v: Helm, legacy: bool) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    let mut args = vec![
        "install",
        "rel",
        chart.as_str(),
        "-n",
        "app",
        "--create-namespace",
        "--timeout",
        "60s",
        "--set",
        r"podAnnotations.kubesim\.strata\.dev/ready-after=2s",
    ];
    if legacy {
        args.push("--wait=legacy");
    } else {
        args.extend(v.wait_flags());
    }
    let out = sim.helm(v, &args).await.ok();
    assert!(
        out.took >= Duration::from_secs(2),
        "did not wait: {:?}",
        out.took
    );
    // Returned once ready, long before its 60 s timeout (a generous bound: loaded CI machines).
    assert!(
        out.took < Duration::from_secs(20),
        "waited too long: {:?}",
        out.took
    );
    let d = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    assert!(
        condition(&d, "Available").is_some_and(|c| c["status"] == "True"),
        "{d:#}"
    );
}

/// An upgrade whose pods never become ready is rolled back by `--rollback-on-failure` (helm 4)
/// / `--atomic` (helm 3): the release ends deployed at a new revision with the old template.
async fn failed_upgrade_is_rolled_back(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    let mut install = vec![
        "install",
        "rel",
        chart.as_str(),
        "-n",
        "app",
        "--create-namespace",
        "--timeout",
        "60s",
    ];
    install.extend(v.wait_flags());
    sim.helm(v, &install).await.ok();
    let atomic = match v {
        Helm::V4 => "--rollback-on-failure",
        Helm::V3 => "--atomic",
    };
    let mut upgrade = vec![
        "upgrade",
        "rel",
        chart.as_str(),
        "-n",
        "app",
        "--timeout",
        "3s",
        atomic,
        "--set",
        "image.tag=broken",
        "--set-string",
        r"podAnnotations.kubesim\.strata\.dev/never-ready=true",
    ];
    upgrade.extend(v.wait_flags());
    let out = sim.helm(v, &upgrade).await.failed();
    let why = match v {
        Helm::V4 => "has been rolled back due to rollback-on-failure being set",
        Helm::V3 => "has been rolled back due to atomic being set",
    };
    assert!(out.stderr.contains(why), "{out}");
    let history = sim
        .helm(v, &["history", "rel", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    let statuses: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["superseded", "failed", "deployed"],
        "{history:#}"
    );
    let d = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/web:1.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_is_rolled_back_helm4() {
    failed_upgrade_is_rolled_back(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_is_rolled_back_helm3() {
    failed_upgrade_is_rolled_back(Helm::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_times_out_helm4() {
    never_ready_times_out(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_times_out_helm3() {
    never_ready_times_out(Helm::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deployment_exceeds_its_deadline_helm4() {
    failing_deployment_exceeds_its_deadline(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deployment_exceeds_its_deadline_helm3() {
    failing_deployment_exceeds_its_deadline(Helm::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_deployment_is_waited_for_helm4() {
    slow_deployment_is_waited_for(Helm::V4, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_deployment_is_waited_for_helm4_legacy() {
    slow_deployment_is_waited_for(Helm::V4, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_deployment_is_waited_for_helm3() {
    slow_deployment_is_waited_for(Helm::V3, false).await;
}
