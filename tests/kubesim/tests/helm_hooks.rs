//! Hooks: pre-install, post-install and pre-upgrade Jobs run in order and are waited for; a
//! failing hook fails the release with helm's own message.

mod common;

use common::{Helm, Recorder, Sim, chart, condition};
use serde_json::Value;

fn complete(job: &Value) -> bool {
    condition(job, "Complete").is_some_and(|c| c["status"] == "True")
}

async fn hooks_run_in_order(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("hooks");
    let rec = Recorder::start(&sim);
    sim.helm(
        v,
        &[
            "install",
            "rel",
            &chart,
            "-n",
            "app",
            "--create-namespace",
            "--timeout",
            "60s",
        ],
    )
    .await
    .ok();
    let any = |_: &Value| true;
    let pre_added = rec.position("ADDED", "jobs", "rel-pre-install", any);
    let pre_done = rec.position("MODIFIED", "jobs", "rel-pre-install", complete);
    let cm_added = rec.position("ADDED", "configmaps", "rel-main", any);
    let post_added = rec.position("ADDED", "jobs", "rel-post-install", any);
    assert!(
        pre_added < pre_done && pre_done < cm_added && cm_added < post_added,
        "order pre-install created {pre_added}, completed {pre_done}, configmap {cm_added}, \
         post-install {post_added}"
    );
    let post = sim
        .get("batch", "jobs", "app", "rel-post-install")
        .expect("post-install job");
    assert!(
        complete(&post),
        "helm returned before the post-install hook completed: {post:#}"
    );
    let status = sim
        .helm(v, &["status", "rel", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(status["info"]["status"], "deployed");
    let hooks: Vec<&str> = status["hooks"]
        .as_array()
        .expect("status lists hooks")
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert!(hooks.contains(&"rel-pre-install"), "{hooks:?}");

    // Upgrade: the pre-upgrade hook runs (and is deleted once it succeeded) before the
    // release's objects change.
    sim.helm(
        v,
        &[
            "upgrade",
            "rel",
            &chart,
            "-n",
            "app",
            "--set",
            "message=two",
            "--timeout",
            "60s",
        ],
    )
    .await
    .ok();
    let up_added = rec.position("ADDED", "jobs", "rel-pre-upgrade", any);
    let up_done = rec.position("MODIFIED", "jobs", "rel-pre-upgrade", complete);
    let up_deleted = rec.position("DELETED", "jobs", "rel-pre-upgrade", any);
    let cm_changed = rec.position("MODIFIED", "configmaps", "rel-main", |o| {
        o["data"]["message"] == "two"
    });
    assert!(
        up_added < up_done && up_done < cm_changed,
        "pre-upgrade created {up_added}, completed {up_done}, configmap changed {cm_changed}"
    );
    assert!(
        up_deleted > up_done,
        "hook-succeeded deletes the hook after it succeeded"
    );
    assert!(sim.get("batch", "jobs", "app", "rel-pre-upgrade").is_none());
    assert!(
        sim.get("batch", "jobs", "app", "rel-pre-install").is_some(),
        "before-hook-creation keeps the last pre-install Job"
    );
}

async fn failing_hook_fails_the_release(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("hooks");
    let out = sim
        .helm(
            v,
            &[
                "install",
                "bad",
                &chart,
                "-n",
                "app",
                "--create-namespace",
                "--set",
                "failPreInstall=true",
                "--timeout",
                "60s",
            ],
        )
        .await
        .failed();
    assert!(out.stderr.contains("failed pre-install"), "{out}");
    match v {
        Helm::V4 => assert!(
            out.stderr
                .contains("resource Job/app/bad-pre-install not ready. status: Failed"),
            "{out}"
        ),
        Helm::V3 => assert!(out.stderr.contains("BackoffLimitExceeded"), "{out}"),
    }
    let job = sim
        .get("batch", "jobs", "app", "bad-pre-install")
        .expect("hook job");
    assert!(condition(&job, "Failed").is_some_and(|c| c["reason"] == "BackoffLimitExceeded"));
    assert!(
        sim.get("", "configmaps", "app", "bad-main").is_none(),
        "a failed pre-install hook must stop the install"
    );
    let status = sim
        .helm(v, &["status", "bad", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(status["info"]["status"], "failed");
}

/// `helm test` runs the test Pod to completion; a failing test Pod fails `helm test`.
async fn helm_test_runs_test_pods(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("hooks");
    sim.helm(
        v,
        &[
            "install",
            "rel",
            &chart,
            "-n",
            "app",
            "--create-namespace",
            "--timeout",
            "60s",
        ],
    )
    .await
    .ok();
    let out = sim
        .helm(v, &["test", "rel", "-n", "app", "--timeout", "60s"])
        .await
        .ok();
    assert!(out.stdout.contains("Phase:          Succeeded"), "{out}");
    let pod = sim.get("", "pods", "app", "rel-test").expect("test pod");
    assert_eq!(pod["status"]["phase"], "Succeeded");

    sim.helm(
        v,
        &[
            "upgrade",
            "rel",
            &chart,
            "-n",
            "app",
            "--set",
            "failTest=true",
            "--timeout",
            "60s",
        ],
    )
    .await
    .ok();
    let out = sim
        .helm(v, &["test", "rel", "-n", "app", "--timeout", "60s"])
        .await
        .failed();
    assert!(out.stderr.contains("rel-test"), "{out}");
    let pod = sim.get("", "pods", "app", "rel-test").expect("test pod");
    assert_eq!(pod["status"]["phase"], "Failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_test_runs_test_pods_helm4() {
    helm_test_runs_test_pods(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_test_runs_test_pods_helm3() {
    helm_test_runs_test_pods(Helm::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_helm4() {
    hooks_run_in_order(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_helm3() {
    hooks_run_in_order(Helm::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_fails_the_release_helm4() {
    failing_hook_fails_the_release(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_fails_the_release_helm3() {
    failing_hook_fails_the_release(Helm::V3).await;
}
