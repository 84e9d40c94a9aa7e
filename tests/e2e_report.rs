//! The status ConfigMap and Events against the simulated cluster, driven in-process: phase
//! changes are written at once (those close together in one write), other changes are
//! throttled, Events follow transitions.

use std::time::Duration;

use strata::observe::report::{CONFIGMAP_NAME, PHASE_CHANGE_INTERVAL, Reporter, STATUS_KEY};
use strata::observe::status::{
    LayerId, LayerPhase, LayerStatus, OverallPhase, ReleasePhase, ReleaseStatus, StatusStore,
};
use tokio_util::sync::CancellationToken;

const NS: &str = testkit::cluster::AGENT_NS;

async fn setup() -> anyhow::Result<(kubesim::Cluster, kube::Client, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kc).await?;
    let client = strata::kube_api::client(Some(&kc)).await?;
    Ok((cluster, client, dir))
}

fn configmap_writes(cluster: &kubesim::Cluster) -> usize {
    cluster
        .controls()
        .requests_where(|r| r.verb == "patch" && r.name == CONFIGMAP_NAME)
        .len()
}

fn stored_status(cluster: &kubesim::Cluster) -> serde_json::Value {
    let cm = cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("", "configmaps"),
            Some(NS),
            CONFIGMAP_NAME,
        )
        .expect("ConfigMap exists");
    serde_json::from_str(cm["data"][STATUS_KEY].as_str().unwrap()).unwrap()
}

/// A status store for a revision in progress: one pending layer of releases in `apps`.
fn progressing(names: &[&str]) -> StatusStore {
    let status = StatusStore::new();
    status.update(|s| {
        s.phase = OverallPhase::Progressing;
        s.layers.push(LayerStatus {
            layer: LayerId::Number(1),
            phase: LayerPhase::Pending,
            ready_at: None,
            releases: names
                .iter()
                .map(|n| ReleaseStatus::pending(n, n, "apps", n, "1.0.0"))
                .collect(),
        });
    });
    status
}

/// A reporter running against the cluster.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(client: kube::Client, status: &StatusStore, min_interval: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = Reporter::new(client, NS, status.clone()).spawn(min_interval, stop.clone());
        Self { stop, task }
    }

    /// Shut it down and wait for its last write.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?;
        Ok(())
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Many releases changing phase together (a layer finishing) are written together: at most
/// one write per `PHASE_CHANGE_INTERVAL`, and the last state is written.
#[tokio::test]
async fn phase_changes_close_together_share_a_write() -> anyhow::Result<()> {
    let (cluster, client, _dir) = setup().await?;
    let names: Vec<String> = (0..30).map(|i| format!("r{i:02}")).collect();
    let status = progressing(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let reporter = Running::start(client, &status, Duration::from_secs(5));
    eventually("first write", || configmap_writes(&cluster) >= 1).await;
    let before = configmap_writes(&cluster);
    let start = std::time::Instant::now();
    for n in &names {
        status.update(|s| s.release_mut("apps", n).unwrap().phase = ReleasePhase::Ready);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst = start.elapsed();
    eventually("the last phase change written", || {
        stored_status(&cluster)["layers"][0]["releases"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["phase"] == "Ready"))
    })
    .await;
    let writes = configmap_writes(&cluster) - before;
    // One write per interval over the burst, one at its start and one for its tail.
    let most = (burst.as_millis() / PHASE_CHANGE_INTERVAL.as_millis()) as usize + 2;
    assert!(
        writes <= most,
        "{writes} writes for 30 phase changes in {burst:?} (at most {most})"
    );
    reporter.stop().await?;
    Ok(())
}

#[tokio::test]
async fn configmap_is_throttled_but_phase_changes_are_immediate() -> anyhow::Result<()> {
    let (cluster, client, _dir) = setup().await?;
    let status = progressing(&["web"]);
    let reporter = Running::start(client, &status, Duration::from_secs(5));
    eventually("first write", || configmap_writes(&cluster) >= 1).await;
    assert_eq!(stored_status(&cluster)["phase"], "Progressing");

    // Forty message-only changes within the throttle window: at most one more write.
    let before = configmap_writes(&cluster);
    for i in 0..40 {
        status
            .update(|s| s.release_mut("apps", "web").unwrap().message = Some(format!("step {i}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        configmap_writes(&cluster) <= before + 1,
        "message-only changes are throttled: {} writes",
        configmap_writes(&cluster) - before
    );

    // A phase change is written at once (well before the 5 s window ends).
    let start = std::time::Instant::now();
    status.update(|s| s.release_mut("apps", "web").unwrap().phase = ReleasePhase::Installing);
    eventually("Installing written", || {
        stored_status(&cluster)["layers"][0]["releases"][0]["phase"] == "Installing"
    })
    .await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );

    // An Event for the transition, attached to the ConfigMap.
    eventually("Installing event", || {
        let (events, _) = cluster
            .store()
            .list(&kubesim::ResourceKey::new("", "events"), Some(NS));
        events.iter().any(|e| {
            e["reason"] == "Installing"
                && e["involvedObject"]["name"] == CONFIGMAP_NAME
                && e["involvedObject"]["kind"] == "ConfigMap"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("apps/web"))
        })
    })
    .await;

    // The latest message-only change reaches the ConfigMap eventually, and a last write
    // happens on shutdown.
    status.update(|s| s.release_mut("apps", "web").unwrap().message = Some("final".into()));
    reporter.stop().await?;
    assert_eq!(
        stored_status(&cluster)["layers"][0]["releases"][0]["message"],
        "final"
    );
    Ok(())
}

#[tokio::test]
async fn failed_transition_is_a_warning_event() -> anyhow::Result<()> {
    let (cluster, client, _dir) = setup().await?;
    let status = StatusStore::new();
    status.update(|s| {
        s.layers.push(LayerStatus {
            layer: LayerId::Number(1),
            phase: LayerPhase::Pending,
            ready_at: None,
            releases: vec![ReleaseStatus::pending("db", "db", "data", "db", "1.0.0")],
        });
    });
    let reporter = Running::start(client, &status, Duration::from_millis(200));
    eventually("first write", || configmap_writes(&cluster) >= 1).await;
    status.update(|s| {
        let r = s.release_mut("data", "db").unwrap();
        r.phase = ReleasePhase::Failed;
        r.message = Some("failed post-install: job db-check failed".into());
    });
    eventually("Failed event", || {
        let (events, _) = cluster
            .store()
            .list(&kubesim::ResourceKey::new("", "events"), Some(NS));
        events.iter().any(|e| {
            e["reason"] == "Failed"
                && e["type"] == "Warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("failed post-install"))
        })
    })
    .await;
    reporter.stop().await?;
    Ok(())
}

/// Events are written as their transitions happen, not when the status writer next gets to
/// them: here the status has a change waiting out its 60 s throttle when a recovery is
/// announced, and its Event is there at once (before, it waited for the status write, so a
/// layer's Ready Events could trail the status by seconds while it kept changing).
#[tokio::test]
async fn an_event_is_not_held_back_while_the_status_waits_out_its_throttle() -> anyhow::Result<()> {
    let (cluster, client, _dir) = setup().await?;
    let status = progressing(&["web"]);
    let reporter = Running::start(client, &status, Duration::from_secs(60));
    eventually("first write", || configmap_writes(&cluster) >= 1).await;
    let writes = configmap_writes(&cluster);
    status.update(|s| s.release_mut("apps", "web").unwrap().message = Some("waiting".into()));
    status.announce(
        "apps",
        "web",
        "Recovered",
        "recover-pending-install: done".into(),
    );
    eventually("the Recovered Event", || {
        testkit::cluster::events(&cluster, NS)
            .iter()
            .any(|e| e.starts_with("Recovered:release apps/web: Recovered"))
    })
    .await;
    assert_eq!(
        configmap_writes(&cluster),
        writes,
        "the message change is still throttled"
    );
    // At shutdown the waiting change is written.
    reporter.stop().await?;
    assert_eq!(
        stored_status(&cluster)["layers"][0]["releases"][0]["message"],
        "waiting"
    );
    Ok(())
}

/// Transitions that happen just before shutdown still get their Events, after the last
/// status write.
#[tokio::test]
async fn transitions_before_shutdown_get_their_events() -> anyhow::Result<()> {
    let (cluster, client, _dir) = setup().await?;
    let names = ["a", "b", "c", "d", "e"];
    let status = progressing(&names);
    let reporter = Running::start(client, &status, Duration::from_secs(60));
    for n in names {
        status.update(|s| s.release_mut("apps", n).unwrap().phase = ReleasePhase::Ready);
    }
    reporter.stop().await?;
    let events = testkit::cluster::events(&cluster, NS);
    for n in names {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with(&format!("Ready:release apps/{n}: Ready"))),
            "no Ready Event for {n}: {events:#?}"
        );
    }
    Ok(())
}

/// The status ConfigMap's writes fail with 500 more often than one write's in-place retries
/// cover: the reporter tries again on its own once the throttle window has passed, without
/// waiting for another status change (the last status before a quiet period, a revision
/// Ready or `--once` ending, must reach the ConfigMap), and the write at shutdown is retried
/// in place.
#[tokio::test]
async fn a_failed_configmap_write_is_retried_without_a_new_change() -> anyhow::Result<()> {
    let (cluster, client, _dir) = setup().await?;
    let status = StatusStore::new();
    status.update(|s| s.phase = OverallPhase::Progressing);
    let reporter = Running::start(client, &status, Duration::from_millis(300));
    eventually("first write", || configmap_writes(&cluster) >= 1).await;
    let c = cluster.controls();
    let patches_failing = |times| kubesim::ErrorRule {
        verb: Some("patch".into()),
        resource: Some("configmaps".into()),
        code: 500,
        times: Some(times),
        ..kubesim::ErrorRule::default()
    };
    // One write is tried 5 times (4 in-place retries): 7 failures outlast it.
    c.add_error(patches_failing(7));
    status.update(|s| s.phase = OverallPhase::Ready);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored_status(&cluster)["phase"] != "Ready" {
        assert!(
            std::time::Instant::now() < deadline,
            "Ready never reached the ConfigMap ({} patches failed)",
            c.counts().by_code.get(&500).copied().unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.counts().by_code.get(&500).copied(), Some(7));

    // The last write, at shutdown, meets two 500s and is repeated in place.
    c.add_error(patches_failing(2));
    status.update(|s| s.phase = OverallPhase::Failed);
    reporter.stop().await?;
    assert_eq!(stored_status(&cluster)["phase"], "Failed");
    assert_eq!(c.counts().by_code.get(&500).copied(), Some(9));
    Ok(())
}
