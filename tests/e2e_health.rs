//! Custom health checks (CEL) end to end, with real helm 4 and helm 3, a real Git server and
//! chart repository, and the simulated cluster: layer 1 is a chart with a CRD (in `crds/`)
//! and a custom resource of it (an `Issuer`) whose readiness only the profile list's CEL
//! check knows; layer 2 is the scenario's `certs` chart.
//!
//! - The gate: helm has finished layer 1, but layer 2 writes nothing until the test marks the
//!   Issuer Ready (kubesim's request log); meanwhile layer 1 is `Waiting` naming the Issuer.
//! - A `failed` expression that becomes true fails the release with the expression.
//! - A malformed expression rejects the revision at load, with its position; nothing is
//!   installed.
//! - The release's timeout fails it naming the object and the reason; a shutdown ends the
//!   wait at once. helm had finished in both: nothing is left pending.

use std::time::Duration;

use serde_json::json;
use testkit::agent::{phase, release};
use testkit::chart::{ChartSpec, profile_annotations, write_chart};
use testkit::cluster::touches_namespace;
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(90);

const ISSUER_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: issuers.health.example.com
spec:
  group: health.example.com
  names:
    kind: Issuer
    listKind: IssuerList
    plural: issuers
    singular: issuer
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

const ISSUER: &str = r#"apiVersion: health.example.com/v1
kind: Issuer
metadata:
  name: {{ .Release.Name }}-ca
spec:
  ca: {secretName: {{ .Release.Name }}-ca}
"#;

const CURRENT: &str = "self.status.conditions.exists(e, e.type == 'Ready' && e.status == 'True')";
const FAILED: &str = "self.status.conditions.exists(e, e.type == 'Ready' && e.status == 'False' && e.reason == 'Failed')";

/// The profile list: `issuer` (layer 1, checked) then the scenario's `certs` (layer 2).
fn profiles(repo_url: &str, current: &str) -> String {
    format!(
        r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
repositories:
  - name: platform
    url: {repo_url}
defaults:
  timeout: 60s
  healthChecks:
    - apiVersion: health.example.com/v1
      kind: Issuer
      current: "{current}"
      failed: "{FAILED}"
profiles:
  - name: issuer
    chart: {{repository: platform, name: issuer}}
    version: "1.0.0"
    namespace: issuer
    layer: 1
  - name: certs
    chart: {{repository: platform, name: certs}}
    version: "1.0.x"
    namespace: certs
    layer: 2
"#
    )
}

/// The scenario plus the issuer chart in its repository, with `current` as the Issuer's
/// `current` expression.
async fn start(helm: HelmBin, current: &str) -> anyhow::Result<Scenario> {
    let s = Scenario::start(strata_bin!(), helm, "{}").await?;
    let annotations = profile_annotations(None, None);
    let chart = write_chart(
        &s.dir.path().join("charts"),
        &ChartSpec {
            name: "issuer",
            version: "1.0.0",
            annotations: &annotations,
            files: &[
                ("crds/issuer.yaml", ISSUER_CRD),
                ("templates/issuer.yaml", ISSUER),
            ],
        },
    )?;
    s.charts.add_chart(&chart)?;
    s.repo
        .write("profiles.yaml", profiles(&s.charts.url(), current))?;
    s.repo.commit("issuer gated by a CEL health check")?;
    Ok(s)
}

/// Set the Issuer's Ready condition (as its controller would), through the store.
fn mark_issuer(s: &Scenario, status: &str, reason: &str) -> anyhow::Result<()> {
    s.cluster.store().update_status_with(
        &kubesim::ResourceKey::new("health.example.com", "issuers"),
        Some("issuer"),
        "issuer-ca",
        |obj| {
            obj["status"] = json!({"conditions": [
                {"type": "Ready", "status": status, "reason": reason, "message": "set by the test"}
            ]});
        },
    )?;
    Ok(())
}

/// Layer 1 is Waiting on the Issuer (helm has finished: its release record is deployed).
async fn waiting_on_issuer(agent: &mut testkit::Agent) -> anyhow::Result<serde_json::Value> {
    agent
        .wait_status("issuer waiting on its health check", LONG, |st| {
            release(st, "issuer").is_some_and(|r| {
                r["phase"] == "Waiting"
                    && r["helmRevision"] == 1
                    && r["notReady"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|x| x["kind"] == "Issuer"))
            })
        })
        .await
}

async fn gate(helm: HelmBin) -> anyhow::Result<()> {
    let s = start(helm, CURRENT).await?;
    let mut agent = s.agent(&[], &[])?;
    let st = waiting_on_issuer(&mut agent).await?;
    let r = release(&st, "issuer").unwrap();
    let not_ready = &r["notReady"][0];
    assert_eq!(not_ready["name"], "issuer-ca", "{r:#}");
    assert_eq!(not_ready["namespace"], "issuer", "{r:#}");
    // No status yet: the expression cannot be evaluated, which is "in progress".
    let reason = not_ready["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Issuer issuer/issuer-ca: health check `current: ")
            && reason.contains("could not be evaluated"),
        "{reason}"
    );
    assert_eq!(phase(&st, "certs"), "Pending", "{st:#}");

    // helm is done with layer 1 (deployed record); strata holds layer 2 on the check.
    let deployed = testkit::release::latest(&s.cluster)
        .iter()
        .any(|x| x.name == "issuer" && x.status == "deployed");
    assert!(deployed, "helm finished layer 1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = agent.status().await.expect("status");
    assert_eq!(phase(&st, "issuer"), "Waiting", "{st:#}");
    assert_eq!(phase(&st, "certs"), "Pending", "{st:#}");

    // Ready=False with another reason is still in progress, not failed.
    mark_issuer(&s, "False", "Pending")?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = agent.status().await.expect("status");
    let r = release(&st, "issuer").unwrap();
    assert_eq!(r["phase"], "Waiting", "{r:#}");
    assert!(
        r["notReady"][0]["reason"]
            .as_str()
            .is_some_and(|x| x.contains("is not true yet")),
        "{r:#}"
    );

    let before = s.writes();
    assert!(
        !before.iter().any(|w| touches_namespace(w, "certs")),
        "layer 2 written before the Issuer was Ready: {:#?}",
        before
            .iter()
            .filter(|w| touches_namespace(w, "certs"))
            .collect::<Vec<_>>()
    );
    mark_issuer(&s, "True", "Ready")?;
    let st = agent
        .wait_status("every layer Ready", LONG, |st| {
            st["phase"] == "Ready" && phase(st, "certs") == "Ready"
        })
        .await?;
    let r = release(&st, "issuer").unwrap();
    assert_eq!(r["phase"], "Ready", "{r:#}");
    assert!(r["notReady"].as_array().is_none_or(Vec::is_empty), "{r:#}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("ready (live health from watches)")),
        "{r:#}"
    );
    // Every write of layer 2 came after the Issuer was marked Ready.
    let after = s.writes();
    let first_certs = after
        .iter()
        .position(|w| touches_namespace(w, "certs"))
        .expect("layer 2 written");
    assert!(
        first_certs >= before.len(),
        "layer 2 written before the mark"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_cel_check_holds_the_next_layer_until_current_helm4() -> anyhow::Result<()> {
    gate(HelmBin::V4).await
}

#[tokio::test]
async fn a_cel_check_holds_the_next_layer_until_current_helm3() -> anyhow::Result<()> {
    gate(HelmBin::V3).await
}

async fn failed(helm: HelmBin) -> anyhow::Result<()> {
    let s = start(helm, CURRENT).await?;
    let mut agent = s.agent(&[], &[])?;
    waiting_on_issuer(&mut agent).await?;
    mark_issuer(&s, "False", "Failed")?;
    let st = agent
        .wait_status("issuer failed by its health check", LONG, |st| {
            phase(st, "issuer") == "Failed"
        })
        .await?;
    let message = release(&st, "issuer").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "health check failed: Issuer issuer/issuer-ca: health check `failed: {FAILED}` is true"
        )),
        "{message}"
    );
    assert_ne!(phase(&st, "certs"), "Ready", "{st:#}");
    assert!(
        !s.writes().iter().any(|w| touches_namespace(w, "certs")),
        "layer 2 written after layer 1 failed"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_expression_fails_the_release_with_its_message_helm4() -> anyhow::Result<()> {
    failed(HelmBin::V4).await
}

#[tokio::test]
async fn a_failed_expression_fails_the_release_with_its_message_helm3() -> anyhow::Result<()> {
    failed(HelmBin::V3).await
}

/// A malformed expression: the revision is rejected at load with the expression's position,
/// and nothing reaches the cluster's release namespaces.
#[tokio::test]
async fn a_malformed_expression_is_rejected_at_load_and_nothing_is_installed() -> anyhow::Result<()>
{
    let s = start(
        HelmBin::V4,
        "self.status.conditions.exists(e, e.type == 'Ready' &&)",
    )
    .await?;
    let mut agent = s.agent(&["--once"], &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    let logs = agent.logs();
    assert_eq!(exit.code(), Some(1), "{logs}");
    let st = s.configmap_status().expect("status written");
    assert_eq!(st["phase"], "Invalid", "{st:#}");
    let problems = st["rejectedRevision"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| {
            p["field"] == "defaults.healthChecks[0].current"
                && p["message"].as_str().is_some_and(|m| {
                    m.contains("invalid CEL expression")
                        && m.contains("line 1, column 54: Syntax error: mismatched input ')'")
                })
        }),
        "{problems:#?}"
    );
    // The log names the position in the file too (line 11 of profiles.yaml: the expression
    // starts after `current: "`, at column 17; its 54th character is column 70).
    assert!(
        logs.contains("(line 11, column 70)"),
        "position in the file: {logs}"
    );
    let writes = s.writes();
    assert!(
        !writes.iter().any(|w| touches_namespace(w, "issuer")
            || touches_namespace(w, "certs")
            || w.path.contains("customresourcedefinitions")),
        "nothing installed: {writes:#?}"
    );
    Ok(())
}

/// The release's timeout ends the wait: the release fails naming the object and the reason.
#[tokio::test]
async fn the_timeout_fails_the_release_naming_the_object_and_the_reason() -> anyhow::Result<()> {
    let s = start(HelmBin::V4, CURRENT).await?;
    let list = profiles(&s.charts.url(), CURRENT)
        .replace("    layer: 1\n", "    layer: 1\n    timeout: 4s\n");
    s.repo.write("profiles.yaml", list)?;
    s.repo.commit("a short timeout")?;
    let mut agent = s.agent(&[], &[])?;
    let st = agent
        .wait_status("issuer failed at its timeout", LONG, |st| {
            phase(st, "issuer") == "Failed"
        })
        .await?;
    let message = release(&st, "issuer").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(
            "not ready within the release's timeout (4s): Issuer issuer/issuer-ca: health check `current: "
        ) && message.contains("could not be evaluated"),
        "{message}"
    );
    // helm itself succeeded: the record is deployed, nothing is left pending.
    assert!(testkit::release::pending(&s.cluster).is_empty());
    assert!(
        !s.writes().iter().any(|w| touches_namespace(w, "certs")),
        "layer 2 written after layer 1 failed"
    );
    agent.stop().await?;
    Ok(())
}

/// A shutdown ends the wait at once (helm had finished: nothing is left pending).
#[tokio::test]
async fn a_shutdown_ends_the_wait_and_leaves_nothing_pending() -> anyhow::Result<()> {
    let s = start(HelmBin::V4, CURRENT).await?;
    let mut agent = s.agent(&[], &[])?;
    waiting_on_issuer(&mut agent).await?;
    let log = agent.log.clone();
    let stopped = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), agent.stop()).await??;
    assert!(stopped.elapsed() < Duration::from_secs(10));
    let logs = std::fs::read_to_string(log)?;
    assert!(
        logs.contains("shutdown: the wait for readiness ended"),
        "{logs}"
    );
    assert!(testkit::release::pending(&s.cluster).is_empty());
    assert!(
        testkit::release::latest(&s.cluster)
            .iter()
            .any(|x| x.name == "issuer" && x.status == "deployed")
    );
    assert!(!s.writes().iter().any(|w| touches_namespace(w, "certs")));
    Ok(())
}
