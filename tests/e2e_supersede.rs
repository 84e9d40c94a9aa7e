//! A new commit supersedes a hung wait, end to end with real helm 4 and helm 3: a release
//! whose Deployment never becomes ready, with a 10-minute timeout, then a fixing commit. The
//! chart has no post-install/post-upgrade hooks, so helm writes the release without waiting
//! and strata waits for readiness itself, from its watches, where a newer commit can end the
//! wait. The fix is applied at the next fetch (not after the timeout), and no release is
//! ever left pending.

use std::time::{Duration, Instant};

use testkit::agent::{phase, release};
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(90);

/// A Deployment whose pods never become ready while `.Values.broken` is set.
const STUCK: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
      {{- if .Values.broken }}
      annotations:
        kubesim.strata.dev/never-ready: "true"
      {{- end }}
    spec:
      containers:
        - name: main
          image: example.com/stuck:1
"#;

fn profiles(repo_url: &str, broken: bool) -> String {
    format!(
        r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
repositories:
  - name: platform
    url: {repo_url}
profiles:
  - name: stuck
    chart: {{repository: platform, name: stuck}}
    version: "1.0.0"
    namespace: stuck
    layer: 1
    timeout: 10m
    values: {{broken: {broken}}}
  - name: certs
    chart: {{repository: platform, name: certs}}
    version: "1.0.x"
    namespace: certs
    layer: 2
"#
    )
}

#[tokio::test]
async fn a_new_commit_ends_a_hung_wait_helm4() -> anyhow::Result<()> {
    a_new_commit_ends_a_hung_wait(HelmBin::V4).await
}

#[tokio::test]
async fn a_new_commit_ends_a_hung_wait_helm3() -> anyhow::Result<()> {
    a_new_commit_ends_a_hung_wait(HelmBin::V3).await
}

async fn a_new_commit_ends_a_hung_wait(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{}").await?;
    s.add_chart("stuck", "1.0.0", &[("templates/deployment.yaml", STUCK)])?;
    s.repo
        .write("profiles.yaml", profiles(&s.charts.url(), true))?;
    s.repo.commit("a release that never becomes ready")?;
    let mut agent = s.agent(&[], &[])?;
    let st = agent
        .wait_status("stuck waiting for its Deployment", LONG, |st| {
            phase(st, "stuck") == "Waiting"
                && release(st, "stuck").is_some_and(|r| {
                    r["notReady"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|o| o["name"] == "stuck-app"))
                })
        })
        .await?;
    assert_eq!(phase(&st, "certs"), "Pending", "{st:#}");
    // helm has finished writing: nothing is pending while strata waits.
    assert!(testkit::release::pending(&s.cluster).is_empty());

    let committed = Instant::now();
    s.repo
        .write("profiles.yaml", profiles(&s.charts.url(), false))?;
    let fix = s.repo.commit("fix the Deployment")?;
    agent
        .wait_status("the fix applying", LONG, |st| {
            st["revision"]["commit"] == fix.as_str()
        })
        .await?;
    eprintln!(
        "the fix started applying {} ms after it was committed (fetch interval 1 s)",
        committed.elapsed().as_millis()
    );
    let st = agent
        .wait_status("every layer Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    assert_eq!(phase(&st, "stuck"), "Ready");
    assert_eq!(phase(&st, "certs"), "Ready");
    let logs = std::fs::read_to_string(&agent.log)?;
    assert!(
        logs.contains("a newer commit supersedes the revision being applied"),
        "{logs}"
    );
    assert!(testkit::release::pending(&s.cluster).is_empty());
    let stuck = testkit::release::latest(&s.cluster)
        .into_iter()
        .find(|r| r.name == "stuck")
        .expect("stuck installed");
    assert_eq!(
        (stuck.revision, stuck.status.as_str()),
        (2, "deployed"),
        "one install, one upgrade with the fix"
    );
    agent.stop().await?;
    Ok(())
}

/// strata's own wait fails like helm's: at the release's timeout the release is Failed naming
/// the Deployment, and its record is marked failed (as `helm --wait` leaves it), not left
/// deployed-but-not-ready nor pending.
#[tokio::test]
async fn a_failed_own_wait_marks_the_record_failed_like_helm() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    s.add_chart("stuck", "1.0.0", &[("templates/deployment.yaml", STUCK)])?;
    let list = profiles(&s.charts.url(), true).replace("timeout: 10m", "timeout: 3s");
    s.repo.write("profiles.yaml", list)?;
    s.repo
        .commit("a release that never becomes ready, 3 s timeout")?;
    let mut agent = s.agent(&[], &[])?;
    let st = agent
        .wait_status("stuck failed at its timeout", LONG, |st| {
            phase(st, "stuck") == "Failed"
        })
        .await?;
    let message = release(&st, "stuck").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("not ready within the release's timeout (3s)")
            && message.contains("stuck-app"),
        "{message}"
    );
    assert_eq!(phase(&st, "certs"), "Skipped", "{st:#}");
    let record = testkit::release::latest(&s.cluster)
        .into_iter()
        .find(|r| r.name == "stuck")
        .expect("stuck installed");
    assert_eq!(record.status, "failed", "{record:?}");
    assert!(testkit::release::pending(&s.cluster).is_empty());
    agent.stop().await?;
    Ok(())
}
