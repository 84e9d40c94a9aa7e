//! Prune, in reverse layer order, only what strata owns (issue 10, part 2), end to end with
//! real helm 4 and helm 3, a real Git server and kubesim:
//!
//! - one commit removes a profile from layer 1 and one from layer 2: both are uninstalled,
//!   layer 2's finished (per the API server's request log) before layer 1's starts, their
//!   objects are gone and /status lists them as Removed;
//! - a release installed by hand with plain helm, in the namespace of a removed profile, is
//!   never touched;
//! - `prune: false`: a removed profile's release stays installed and is reported Orphaned;
//! - an emptied list is rejected with a problem naming `allowEmpty`, and nothing is removed;
//! - `allowEmpty: true`: every managed release is uninstalled (the hand-made one stays).

use testkit::cluster::{is_write, touches_namespace};
use testkit::gitcharts::{GitCharts, PathProfile};
use testkit::{HelmBin, strata_bin};

fn p(name: &str, layer: u32) -> PathProfile<'_> {
    PathProfile {
        name,
        layer,
        values: "{}",
    }
}

/// The removal entry of `release` in the status.
fn removal(status: &serde_json::Value, release: &str) -> serde_json::Value {
    status["removals"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["release"] == release).cloned())
        .unwrap_or_else(|| panic!("no removal of {release}: {status:#}"))
}

async fn prune(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    for (name, layer) in [("a1", 1), ("b1", 1), ("a2", 2), ("b2", 2)] {
        s.write_chart(name, layer, "one")?;
    }
    s.write_list(&[p("a1", 1), p("b1", 1), p("a2", 2), p("b2", 2)], "")?;
    s.repo.commit("two layers")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    for n in ["a1", "b1", "a2", "b2"] {
        assert!(s.installed(n, n), "{n} installed");
    }
    // A release installed by hand in b1's namespace: no strata labels.
    s.helm_install_by_hand("byhand", "b1", "a1").await?;
    assert!(s.installed("b1", "byhand"));

    // Remove b1 (layer 1) and b2 (layer 2) in one commit.
    let before = s.cluster.controls().requests().len();
    s.write_list(&[p("a1", 1), p("a2", 2)], "")?;
    s.repo.commit("remove b1 and b2")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(!s.installed("b1", "b1"), "b1 uninstalled");
    assert!(!s.installed("b2", "b2"), "b2 uninstalled");
    assert!(
        s.data("b1").is_none() && s.data("b2").is_none(),
        "objects gone"
    );
    assert!(
        s.installed("b1", "byhand"),
        "the hand-made release is untouched"
    );
    assert!(s.installed("a1", "a1") && s.installed("a2", "a2"));
    let writes: Vec<kubesim::RequestRecord> = s.cluster.controls().requests()[before..]
        .iter()
        .filter(|r| is_write(r))
        .cloned()
        .collect();
    let last_b2 = writes
        .iter()
        .rposition(|r| touches_namespace(r, "b2"))
        .expect("b2 written (uninstalled)");
    let first_b1 = writes
        .iter()
        .position(|r| touches_namespace(r, "b1"))
        .expect("b1 written (uninstalled)");
    assert!(
        last_b2 < first_b1,
        "layer 2's uninstall finished (#{last_b2} {:?}) before layer 1's started (#{first_b1} {:?})",
        writes[last_b2].path,
        writes[first_b1].path
    );
    // The removals came before anything of the revision's installs; here nothing else ran.
    assert!(
        !writes
            .iter()
            .any(|r| touches_namespace(r, "a1") || touches_namespace(r, "a2")),
        "the remaining releases are unchanged"
    );
    let status = s.status();
    for (n, layer) in [("b1", 1), ("b2", 2)] {
        let r = removal(&status, n);
        assert_eq!(r["phase"], "Removed", "{r:#}");
        assert_eq!(r["namespace"], n, "{r:#}");
        assert_eq!(r["layer"], layer, "{r:#}");
    }
    let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
    for n in ["b1", "b2"] {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("Uninstalled:") && e.contains(&format!("{n}/{n}"))),
            "an Uninstalled Event for {n}: {events:?}"
        );
    }

    // prune: false keeps a removed profile's release and reports it orphaned.
    s.write_list(&[p("a1", 1)], "prune: false\n")?;
    s.repo.commit("drop a2, keep it installed")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(s.installed("a2", "a2"), "a2 kept");
    assert!(s.data("a2").is_some());
    let r = removal(&s.status(), "a2");
    assert_eq!(r["phase"], "Orphaned", "{r:#}");

    // An emptied list is rejected: nothing is uninstalled.
    let before = s.cluster.controls().requests().len();
    s.write_list(&[], "")?;
    let emptied = s.repo.commit("oops: emptied")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(1), "a rejected revision: {logs}");
    let status = s.status();
    assert_eq!(
        status["rejectedRevision"]["commit"],
        emptied.as_str(),
        "{status:#}"
    );
    let problems = status["rejectedRevision"]["problems"].to_string();
    assert!(problems.contains("allowEmpty"), "{problems}");
    assert!(s.installed("a1", "a1") && s.installed("a2", "a2"));
    let deletes: Vec<String> = s.cluster.controls().requests()[before..]
        .iter()
        .filter(|r| r.verb == "delete")
        .map(|r| r.path.clone())
        .collect();
    assert!(deletes.is_empty(), "nothing deleted: {deletes:?}");

    // allowEmpty: true removes every managed release, highest layer first; never the
    // hand-made one.
    let before = s.cluster.controls().requests().len();
    s.write_list(&[], "allowEmpty: true\n")?;
    s.repo.commit("empty on purpose")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(!s.installed("a1", "a1") && !s.installed("a2", "a2"));
    assert!(
        s.installed("b1", "byhand"),
        "the hand-made release is untouched"
    );
    let writes: Vec<kubesim::RequestRecord> = s.cluster.controls().requests()[before..]
        .iter()
        .filter(|r| is_write(r))
        .cloned()
        .collect();
    let last_a2 = writes.iter().rposition(|r| touches_namespace(r, "a2"));
    let first_a1 = writes.iter().position(|r| touches_namespace(r, "a1"));
    assert!(
        last_a2.unwrap() < first_a1.unwrap(),
        "a2 (layer 2) before a1"
    );
    assert!(!writes.iter().any(|r| r.namespace == "b1"), "b1 untouched");
    Ok(())
}

#[tokio::test]
async fn prune_in_reverse_layer_order_helm4() -> anyhow::Result<()> {
    prune(HelmBin::V4).await
}

#[tokio::test]
async fn prune_in_reverse_layer_order_helm3() -> anyhow::Result<()> {
    prune(HelmBin::V3).await
}

/// A pre-delete hook that always fails.
const FAILING_PRE_DELETE: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-cleanup
  annotations:
    helm.sh/hook: pre-delete
    helm.sh/hook-delete-policy: before-hook-creation
    kubesim.strata.dev/fail: "true"
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: cleanup
          image: example.com/cleanup:1
"#;

/// An uninstall that fails (layer 2's pre-delete hook fails) is reported Failed, keeps the
/// layer below from being removed (b1 stays, waiting), never blocks the revision's installs
/// (n1 is installed), and is tried again at every cycle until --once's deadline (exit 2).
async fn failed_uninstall(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    for (name, layer) in [("a1", 1), ("b1", 1), ("b2", 2), ("n1", 1)] {
        s.write_chart(name, layer, "one")?;
    }
    s.repo
        .write("charts/b2/templates/cleanup.yaml", FAILING_PRE_DELETE)?;
    s.write_list(&[p("a1", 1), p("b1", 1), p("b2", 2)], "")?;
    s.repo.commit("b2 cannot be uninstalled")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");

    s.write_list(&[p("a1", 1), p("n1", 1)], "")?;
    s.repo.commit("remove b1 and b2, add n1")?;
    let (code, logs) = s.run_once_with(&["--once-timeout", "8s"]).await?;
    assert_eq!(
        code,
        Some(2),
        "removals keep failing until the deadline: {logs}"
    );
    assert!(s.installed("n1", "n1"), "the installs were not blocked");
    assert!(s.data("n1").is_some());
    assert!(s.installed("b2", "b2"), "b2's uninstall failed");
    assert!(
        s.installed("b1", "b1"),
        "layer 1 waits for layer 2's removal"
    );
    let status = s.status();
    // Failed, or Removing again when --once stopped in the middle of a retry: the message
    // says the last attempt failed either way.
    let b2 = removal(&status, "b2");
    assert!(
        b2["phase"] == "Failed" || b2["phase"] == "Removing",
        "{b2:#}"
    );
    let message = b2["message"].as_str().unwrap_or_default();
    assert!(message.contains("failed"), "{b2:#}");
    let b1 = removal(&status, "b1");
    assert_eq!(b1["phase"], "Removing", "{b1:#}");
    assert_eq!(release_phase(&status, "n1"), "Ready", "{status:#}");
    let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("UninstallFailed:") && e.contains("b2/b2")),
        "{events:?}"
    );
    // Tried again at the next cycles, not only once.
    assert!(
        events
            .iter()
            .filter(|e| e.starts_with("Uninstalling:") && e.contains("b2/b2"))
            .count()
            >= 2,
        "{events:?}"
    );
    Ok(())
}

fn release_phase(status: &serde_json::Value, name: &str) -> String {
    testkit::agent::release(status, name)
        .and_then(|r| r["phase"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn failed_uninstall_blocks_lower_removals_not_installs_helm4() -> anyhow::Result<()> {
    failed_uninstall(HelmBin::V4).await
}

#[tokio::test]
async fn failed_uninstall_blocks_lower_removals_not_installs_helm3() -> anyhow::Result<()> {
    failed_uninstall(HelmBin::V3).await
}
