//! strata's helm door and release-storage reader against the simulated cluster, with the
//! real helm 4 and helm 3: install, status, history, list, get values, upgrade, uninstall,
//! and helm's failures mapped to typed errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata::executor::helm::{FailureKind, Helm, HelmConfig, UpgradeRequest};
use strata::executor::process::Redactor;
use strata::executor::releases;
use testkit::{HelmBin, examples_dir};

struct Env {
    cluster: kubesim::Cluster,
    dir: tempfile::TempDir,
    helm: Helm,
    client: kube::Client,
}

async fn env(bin: HelmBin) -> anyhow::Result<Env> {
    let cluster = kubesim::start(kubesim::Config::default()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let helm = Helm::new(
        HelmConfig {
            binary: bin.path(),
            work_dir: dir.path().join("work"),
            kubeconfig: Some(kubeconfig.clone()),
            kube_context: None,
        },
        Redactor::new(),
    )
    .await?;
    assert_eq!(helm.version().major, bin.major());
    let client = testkit::cluster::kube_client(&cluster).await;
    Ok(Env {
        cluster,
        dir,
        helm,
        client,
    })
}

fn chart(name: &str) -> PathBuf {
    examples_dir().join("charts").join(name)
}

fn request(
    env: &Env,
    release: &str,
    ns: &str,
    chart: &Path,
    values: serde_json::Value,
) -> UpgradeRequest {
    let values_file = env.helm.write_values(ns, release, &values).unwrap();
    UpgradeRequest {
        release: release.into(),
        namespace: ns.into(),
        chart: chart.to_path_buf(),
        values_file,
        timeout: Duration::from_secs(60),
        create_namespace: true,
        wait: true,
        labels: Default::default(),
    }
}

async fn lifecycle(bin: HelmBin) -> anyhow::Result<()> {
    let env = env(bin).await?;
    let values = serde_json::json!({"webhook": {"replicas": 2}});
    let req = request(
        &env,
        "cert-manager",
        "cert-manager",
        &chart("cert-manager"),
        values.clone(),
    );

    let installed = env.helm.upgrade_install(&req).await?;
    assert_eq!(installed.name, "cert-manager");
    assert_eq!(installed.namespace, "cert-manager");
    assert_eq!(installed.revision, 1);
    assert_eq!(installed.status, "deployed");
    assert_eq!(installed.chart_name, "cert-manager");
    assert_eq!(installed.chart_version, "1.14.4");
    assert_eq!(installed.config, values);
    let objects = releases::manifest_objects(&installed.manifest);
    assert!(
        objects
            .iter()
            .any(|o| o["kind"] == "Deployment" && o["spec"]["replicas"] == 2)
    );

    // The release storage, read without helm, says the same.
    let record = releases::latest(&env.client, "cert-manager", "cert-manager")
        .await?
        .expect("a release record");
    assert_eq!(record.revision, 1);
    assert_eq!(record.status, "deployed");
    assert_eq!(record.chart_version, "1.14.4");
    assert_eq!(record.config, values);
    let observed = releases::observe(&env.client, "cert-manager", "cert-manager")
        .await?
        .unwrap();
    assert_eq!(
        observed.values_digest.as_deref(),
        Some(strata_core::values::canonical_digest(&values).as_str())
    );
    assert_eq!(
        releases::observe(&env.client, "cert-manager", "nothing").await?,
        None
    );

    // The post-install check Job ran and was deleted (hook-succeeded).
    let jobs = env
        .cluster
        .store()
        .list(
            &kubesim::ResourceKey::new("batch", "jobs"),
            Some("cert-manager"),
        )
        .0;
    assert!(jobs.is_empty(), "hook Job deleted after success: {jobs:?}");

    let status = env.helm.status("cert-manager", "cert-manager").await?;
    assert_eq!(status.revision, 1);
    assert_eq!(status.status, "deployed");
    assert_eq!(
        status.config, values,
        "helm's view of the values is the stored one"
    );

    // Upgrade with new values.
    let values2 = serde_json::json!({"webhook": {"replicas": 1}});
    let req2 = request(
        &env,
        "cert-manager",
        "cert-manager",
        &chart("cert-manager"),
        values2.clone(),
    );
    let upgraded = env.helm.upgrade_install(&req2).await?;
    assert_eq!(upgraded.revision, 2);
    let stored = releases::history(&env.client, "cert-manager", "cert-manager").await?;
    let states: Vec<(u64, &str)> = stored
        .iter()
        .map(|h| (h.revision, h.status.as_str()))
        .collect();
    assert_eq!(states, vec![(1, "superseded"), (2, "deployed")]);
    assert_eq!(
        (
            stored[1].chart_name.as_str(),
            stored[1].chart_version.as_str()
        ),
        ("cert-manager", "1.14.4")
    );
    assert_eq!(stored[1].config, values2);
    let status = env.helm.status("cert-manager", "cert-manager").await?;
    assert_eq!((status.revision, status.status.as_str()), (2, "deployed"));

    // Roll back to revision 1: a new revision 3 with revision 1's values.
    env.helm
        .rollback(
            "cert-manager",
            "cert-manager",
            Some(1),
            Duration::from_secs(30),
        )
        .await?;
    let back = releases::latest(&env.client, "cert-manager", "cert-manager")
        .await?
        .unwrap();
    assert_eq!((back.revision, back.status.as_str()), (3, "deployed"));
    assert_eq!(back.config, values);

    env.helm
        .uninstall("cert-manager", "cert-manager", Duration::from_secs(30))
        .await?;
    assert_eq!(
        releases::latest(&env.client, "cert-manager", "cert-manager").await?,
        None
    );
    let err = env
        .helm
        .status("cert-manager", "cert-manager")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(FailureKind::ReleaseNotFound), "{err}");
    env.cluster.shutdown().await;
    drop(env.dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_helm4() -> anyhow::Result<()> {
    lifecycle(HelmBin::V4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_helm3() -> anyhow::Result<()> {
    lifecycle(HelmBin::V3).await
}

async fn naive_installs(bin: HelmBin) -> anyhow::Result<()> {
    let env = env(bin).await?;

    // linkerd needs cert-manager's Certificate kind.
    let req = request(
        &env,
        "linkerd",
        "linkerd",
        &chart("linkerd"),
        serde_json::json!({}),
    );
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    assert_eq!(err.kind(), Some(FailureKind::NoMatchesForKind), "{err}");
    let msg = err.helm_message().unwrap();
    assert!(msg.contains("no matches for kind \"Certificate\""), "{msg}");

    // The umbrella chart: everything in one release fails the same way.
    let req = request(
        &env,
        "platform",
        "platform",
        &examples_dir().join("umbrella"),
        serde_json::json!({}),
    );
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    assert_eq!(err.kind(), Some(FailureKind::NoMatchesForKind), "{err}");

    env.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_installs_fail_with_no_matches_for_kind_helm4() -> anyhow::Result<()> {
    naive_installs(HelmBin::V4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_installs_fail_with_no_matches_for_kind_helm3() -> anyhow::Result<()> {
    naive_installs(HelmBin::V3).await
}

async fn failures(bin: HelmBin) -> anyhow::Result<()> {
    let env = env(bin).await?;

    // A failing post-install hook.
    let req = request(
        &env,
        "cm-hook",
        "cm-hook",
        &chart("cert-manager"),
        serde_json::json!({
            "installCRDs": false,
            "startupapicheck": {"annotations": {"kubesim.strata.dev/fail": "true"}}
        }),
    );
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    assert_eq!(err.kind(), Some(FailureKind::HookFailed), "{err}");
    assert!(err.to_string().contains("cm-hook/cm-hook"), "{err}");
    let record = releases::latest(&env.client, "cm-hook", "cm-hook")
        .await?
        .unwrap();
    assert_eq!(record.status, "failed");
    // Fixed values recover the failed release with a new revision.
    let req = request(
        &env,
        "cm-hook",
        "cm-hook",
        &chart("cert-manager"),
        serde_json::json!({"installCRDs": false}),
    );
    let fixed = env.helm.upgrade_install(&req).await?;
    assert_eq!((fixed.revision, fixed.status.as_str()), (2, "deployed"));

    // A Deployment that never becomes ready: helm's own timeout.
    let mut req = request(
        &env,
        "slow",
        "slow",
        &chart("cert-manager"),
        serde_json::json!({
            "installCRDs": false,
            "startupapicheck": {"enabled": false},
            "webhook": {"annotations": {"kubesim.strata.dev/never-ready": "true"}}
        }),
    );
    req.timeout = Duration::from_secs(3);
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    assert_eq!(err.kind(), Some(FailureKind::Timeout), "{err}");
    env.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_helm4() -> anyhow::Result<()> {
    failures(HelmBin::V4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_helm3() -> anyhow::Result<()> {
    failures(HelmBin::V3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_operation_is_reported_as_in_progress() -> anyhow::Result<()> {
    let env = env(HelmBin::V4).await?;
    let slow = serde_json::json!({
        "installCRDs": false,
        "startupapicheck": {"enabled": false},
        "webhook": {"annotations": {"kubesim.strata.dev/ready-after": "3s"}}
    });
    let req = request(&env, "busy", "busy", &chart("cert-manager"), slow);
    let first = {
        let helm = env.helm.clone();
        let req = req.clone();
        tokio::spawn(async move { helm.upgrade_install(&req).await })
    };
    // Wait until the first install has written its pending record.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = releases::latest(&env.client, "busy", "busy").await? {
            assert_eq!(r.status, "pending-install");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no pending record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = env.helm.upgrade_install(&req).await.unwrap_err();
    assert_eq!(
        second.kind(),
        Some(FailureKind::OperationInProgress),
        "{second}"
    );
    let done = first.await??;
    assert_eq!(done.status, "deployed");
    env.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_helm_leaves_pending_install_and_uninstall_clears_it() -> anyhow::Result<()> {
    let env = env(HelmBin::V4).await?;
    let slow = serde_json::json!({
        "installCRDs": false,
        "startupapicheck": {"enabled": false},
        "webhook": {"annotations": {"kubesim.strata.dev/never-ready": "true"}}
    });
    let req = request(&env, "stuck", "stuck", &chart("cert-manager"), slow);
    let task = {
        let helm = env.helm.clone();
        let req = req.clone();
        tokio::spawn(async move { helm.upgrade_install(&req).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while releases::latest(&env.client, "stuck", "stuck")
        .await?
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no pending record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dropping the operation kills helm (kill_on_drop), as a crash of the agent would.
    task.abort();
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stuck = releases::observe(&env.client, "stuck", "stuck")
        .await?
        .unwrap();
    assert!(stuck.status.is_pending(), "{:?}", stuck.status);
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    assert_eq!(err.kind(), Some(FailureKind::OperationInProgress), "{err}");

    env.helm
        .uninstall("stuck", "stuck", Duration::from_secs(30))
        .await?;
    assert_eq!(releases::latest(&env.client, "stuck", "stuck").await?, None);
    let ok = request(
        &env,
        "stuck",
        "stuck",
        &chart("cert-manager"),
        serde_json::json!({"installCRDs": false, "startupapicheck": {"enabled": false}}),
    );
    assert_eq!(env.helm.upgrade_install(&ok).await?.status, "deployed");
    env.cluster.shutdown().await;
    Ok(())
}

/// What helm really does with `--labels`: helm 4 and helm 3.19 store them on the release's
/// storage Secret (every revision), strata reads them back as the release's stamp, finds the
/// releases it manages by them, and a release installed without them is not one of those.
async fn release_labels_round_trip(bin: HelmBin) -> anyhow::Result<()> {
    let env = env(bin).await?;
    let values = serde_json::json!({"webhook": {"replicas": 1}});
    let mut req = request(
        &env,
        "cert-manager",
        "cert-manager",
        &chart("cert-manager"),
        values.clone(),
    );
    req.labels = strata_core::digest::release_labels(
        "strata-system",
        "certs",
        Some(1),
        "chart1",
        "content1",
    );
    env.helm.upgrade_install(&req).await?;
    let record = releases::latest(&env.client, "cert-manager", "cert-manager")
        .await?
        .unwrap();
    assert_eq!(record.labels, req.labels, "helm {}", bin.major());
    let stamp = record.observed().stamp.expect("a strata stamp");
    assert_eq!(
        (
            stamp.profile.as_str(),
            stamp.layer,
            stamp.content_digest.as_str()
        ),
        ("certs", Some(1), "content1")
    );

    // An upgrade with new digests replaces them on the new revision.
    req.labels = strata_core::digest::release_labels(
        "strata-system",
        "certs",
        Some(1),
        "chart2",
        "content2",
    );
    env.helm.upgrade_install(&req).await?;
    let record = releases::latest(&env.client, "cert-manager", "cert-manager")
        .await?
        .unwrap();
    assert_eq!(record.revision, 2);
    let stamp = record.observed().stamp.unwrap();
    assert_eq!(
        (stamp.chart_digest.as_str(), stamp.content_digest.as_str()),
        ("chart2", "content2")
    );

    // A release installed without labels (by hand) carries no stamp and is not managed.
    let small = env.dir.path().join("small");
    std::fs::create_dir_all(small.join("templates"))?;
    std::fs::write(
        small.join("Chart.yaml"),
        "apiVersion: v2\nname: small\nversion: 0.1.0\n",
    )?;
    std::fs::write(
        small.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  a: b\n",
    )?;
    let plain = request(&env, "byhand", "cert-manager", &small, values.clone());
    env.helm.upgrade_install(&plain).await?;
    // A release of another strata agent (another namespace) is not this agent's.
    let mut theirs = request(&env, "theirs", "cert-manager", &small, values);
    theirs.labels = strata_core::digest::release_labels("team-b", "x", Some(1), "c", "k");
    env.helm.upgrade_install(&theirs).await?;
    let record = releases::latest(&env.client, "cert-manager", "byhand")
        .await?
        .unwrap();
    assert_eq!(record.observed().stamp, None);
    let managed = releases::list_managed(&env.client, "strata-system", &[]).await?;
    let keys: Vec<(String, Option<u32>)> = managed.iter().map(|m| (m.key(), m.layer)).collect();
    assert_eq!(keys, [("cert-manager/cert-manager".to_string(), Some(1))]);

    env.cluster.shutdown().await;
    drop(env.dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_labels_round_trip_helm4() -> anyhow::Result<()> {
    release_labels_round_trip(HelmBin::V4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_labels_round_trip_helm3() -> anyhow::Result<()> {
    release_labels_round_trip(HelmBin::V3).await
}

/// Narrow RBAC: when Secrets cannot be listed cluster-wide (403), the managed releases are
/// found by listing the given namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_releases_are_found_per_namespace_without_cluster_wide_list() -> anyhow::Result<()>
{
    let env = env(HelmBin::V4).await?;
    let mut req = request(
        &env,
        "cert-manager",
        "cert-manager",
        &chart("cert-manager"),
        serde_json::json!({}),
    );
    req.labels = strata_core::digest::release_labels("strata-system", "certs", Some(1), "c", "k");
    env.helm.upgrade_install(&req).await?;
    env.cluster.controls().add_error(kubesim::ErrorRule {
        verb: Some("list".into()),
        resource: Some("secrets".into()),
        namespace: Some(String::new()),
        code: 403,
        ..kubesim::ErrorRule::default()
    });
    // Not among the namespaces given: not found (and no error).
    assert!(
        releases::list_managed(&env.client, "strata-system", &["other".to_string()])
            .await?
            .is_empty()
    );
    let found = releases::list_managed(
        &env.client,
        "strata-system",
        &["other".to_string(), "cert-manager".to_string()],
    )
    .await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key(), "cert-manager/cert-manager");
    env.cluster.shutdown().await;
    Ok(())
}
