//! Retry by annotation, end to end with real helm and kubectl on the simulated cluster: a
//! release whose post-install hook always fails reaches Stalled after its one allowed attempt
//! and stays there; `kubectl annotate configmap strata-status strata.dev/retry=mesh/mesh`
//! makes the agent run helm for it again at once (and it stalls again), and the agent removes
//! the annotation so that it acts once.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use testkit::agent::release;
use testkit::cluster::{AGENT_NS, STATUS_CONFIGMAP};
use testkit::scenario::layered_profiles;
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(90);

/// Lines of the agent log that record a failed helm attempt of a release (one per attempt).
fn helm_failures(logs: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("reconcile::release") && l.contains("helm failed"))
        .count()
}

fn stalled(st: &serde_json::Value) -> bool {
    release(st, "mesh").is_some_and(|r| {
        r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stalled"))
    })
}

fn retry_annotation(s: &Scenario) -> Option<String> {
    let cm = testkit::cluster::get(&s.cluster, "configmaps", AGENT_NS, STATUS_CONFIGMAP)?;
    cm["metadata"]["annotations"]["strata.dev/retry"]
        .as_str()
        .map(str::to_string)
}

async fn stalled_release_retried_by_annotation(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{failHook: true}").await?;
    let profiles = layered_profiles(&s.charts.url(), "{failHook: true}").replace(
        "    timeout: 20s\n",
        "    timeout: 20s\n    remediation: {retries: 1}\n",
    );
    assert!(profiles.contains("remediation"), "{profiles}");
    s.repo.write("profiles.yaml", profiles)?;
    s.repo.commit("mesh stalls after one attempt")?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("mesh Stalled", LONG, |st| {
            stalled(st) && release(st, "mesh").is_some_and(|r| r["attempts"] == 1)
        })
        .await?;
    // Stalled is terminal: cycles every second run no helm for it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(helm_failures(&agent.logs()), 1, "{}", agent.logs());

    let out = tokio::process::Command::new(testkit::tools().kubectl)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args([
            "annotate",
            "configmap",
            "strata-status",
            "-n",
            AGENT_NS,
            "strata.dev/retry=mesh/mesh, nowhere/none",
            "--overwrite",
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "kubectl annotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // helm runs again for mesh (and fails again: Stalled again after its one attempt).
    let start = Instant::now();
    while helm_failures(&agent.logs()) < 2 {
        if start.elapsed() > LONG {
            bail!("no second helm run after the annotation:\n{}", agent.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent
        .wait_status("mesh Stalled again after a second helm run", LONG, |st| {
            stalled(st) && release(st, "mesh").is_some_and(|r| r["attempts"] == 2)
        })
        .await?;
    let logs = agent.logs();
    assert!(
        logs.contains("the retry annotation was set"),
        "the reset's reason is logged:\n{logs}"
    );
    assert!(
        logs.contains("nowhere"),
        "an unknown release is reported:\n{logs}"
    );
    // The annotation acted once and is gone.
    assert_eq!(retry_annotation(&s), None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        helm_failures(&agent.logs()),
        2,
        "acted once:\n{}",
        agent.logs()
    );
    agent.stop().await.context("stopping the agent")?;
    Ok(())
}

#[tokio::test]
async fn stalled_release_retried_by_annotation_helm4() -> anyhow::Result<()> {
    stalled_release_retried_by_annotation(HelmBin::V4).await
}

#[tokio::test]
async fn stalled_release_retried_by_annotation_helm3() -> anyhow::Result<()> {
    stalled_release_retried_by_annotation(HelmBin::V3).await
}
