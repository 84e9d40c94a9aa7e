//! A helm killed (SIGKILL) in the middle of a slow hook leaves its release pending; the next
//! `helm upgrade --install` is refused; `helm uninstall` (pending-install) or `helm rollback`
//! (pending-upgrade) clears it.

mod common;

use std::time::Duration;

use common::{Helm, Sim, chart};

const IN_PROGRESS: &str = "another operation (install/upgrade/rollback) is in progress";

/// Starts helm, waits until the slow hook Job `job` exists (helm is then waiting on it) and
/// kills helm with SIGKILL.
async fn kill_during_hook(sim: &Sim, v: Helm, args: &[&str], job: &str) {
    let mut child = sim.helm_cmd(v, args).spawn().expect("helm starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sim.get("batch", "jobs", "app", job).is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().await.expect("helm output");
            panic!(
                "helm exited ({status}) before the hook started:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hook Job {job} never created"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let helm start waiting on the hook, then kill it without warning.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().expect("SIGKILL sent");
    let status = child.wait().await.expect("helm reaped");
    assert!(!status.success(), "helm finished although killed: {status}");
}

async fn release_status(sim: &Sim, v: Helm) -> String {
    let st = sim
        .helm(v, &["status", "rel", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    st["info"]["status"].as_str().unwrap_or_default().to_owned()
}

async fn pending_install_is_cleared_by_uninstall(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("hooks");
    kill_during_hook(
        &sim,
        v,
        &[
            "install",
            "rel",
            &chart,
            "-n",
            "app",
            "--create-namespace",
            "--set",
            "slowPreInstall=60s",
            "--timeout",
            "120s",
        ],
        "rel-pre-install",
    )
    .await;
    assert_eq!(release_status(&sim, v).await, "pending-install");
    let out = sim
        .helm(
            v,
            &[
                "upgrade",
                "--install",
                "rel",
                &chart,
                "-n",
                "app",
                "--timeout",
                "60s",
            ],
        )
        .await
        .failed();
    assert!(out.stderr.contains(IN_PROGRESS), "{out}");
    sim.helm(v, &["uninstall", "rel", "-n", "app"]).await.ok();
    sim.helm(
        v,
        &[
            "upgrade",
            "--install",
            "rel",
            &chart,
            "-n",
            "app",
            "--timeout",
            "60s",
        ],
    )
    .await
    .ok();
    assert_eq!(release_status(&sim, v).await, "deployed");
}

async fn pending_upgrade_is_cleared_by_rollback(v: Helm) {
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
    kill_during_hook(
        &sim,
        v,
        &[
            "upgrade",
            "rel",
            &chart,
            "-n",
            "app",
            "--set",
            "slowPreUpgrade=60s",
            "--timeout",
            "120s",
        ],
        "rel-pre-upgrade",
    )
    .await;
    assert_eq!(release_status(&sim, v).await, "pending-upgrade");
    let out = sim
        .helm(
            v,
            &[
                "upgrade",
                "--install",
                "rel",
                &chart,
                "-n",
                "app",
                "--timeout",
                "60s",
            ],
        )
        .await
        .failed();
    assert!(out.stderr.contains(IN_PROGRESS), "{out}");
    sim.helm(
        v,
        &["rollback", "rel", "1", "-n", "app", "--timeout", "60s"],
    )
    .await
    .ok();
    assert_eq!(release_status(&sim, v).await, "deployed");
    sim.helm(
        v,
        &[
            "upgrade",
            "--install",
            "rel",
            &chart,
            "-n",
            "app",
            "--set",
            "message=after",
            "--timeout",
            "60s",
        ],
    )
    .await
    .ok();
    let cm = sim
        .get("", "configmaps", "app", "rel-main")
        .expect("configmap");
    assert_eq!(cm["data"]["message"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_install_is_cleared_by_uninstall_helm4() {
    pending_install_is_cleared_by_uninstall(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_install_is_cleared_by_uninstall_helm3() {
    pending_install_is_cleared_by_uninstall(Helm::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_upgrade_is_cleared_by_rollback_helm4() {
    pending_upgrade_is_cleared_by_rollback(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_upgrade_is_cleared_by_rollback_helm3() {
    pending_upgrade_is_cleared_by_rollback(Helm::V3).await;
}
