//! Drift is found and corrected (issue 10, part 3), end to end with real helm 4 and helm 3, a
//! real Git server and kubesim: a continuous agent (`--interval 1s`) installs a release of
//! five ConfigMaps (more than a few of one kind: read with one LIST); two of them are deleted
//! by hand; within a generous deadline they exist again, the status says `drift: ... missing`,
//! helm's revision went up by one and `strata_drift_corrections_total` counted it. Before the
//! deletion, several intervals of an unchanged stack run no helm upgrade.

use std::time::{Duration, Instant};

use kubesim::{Propagation, ResourceKey};
use testkit::agent::{Agent, agent_args};
use testkit::gitcharts::{GitCharts, PathProfile};
use testkit::{HelmBin, strata_bin};

const DEADLINE: Duration = Duration::from_secs(120);

/// The value of the first sample of `series` (exact name with labels) in `/metrics`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metric(agent: &Agent, series: &str) -> f64 {
    let text = agent.metrics().await.unwrap_or_default();
    sample(&text, series).unwrap_or(0.0)
}

const UPGRADES: &str = "strata_helm_command_duration_seconds_count{command=\"upgrade\"}";
const FETCHED: &str = "strata_last_fetch_success_timestamp_seconds";
const DRIFT: &str = "strata_drift_corrections_total";

/// Poll `/metrics` until `pred` holds for the value of `series`.
async fn wait_metric(
    agent: &Agent,
    series: &str,
    what: &str,
    pred: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        let v = metric(agent, series).await;
        if pred(v) {
            return Ok(v);
        }
        if start.elapsed() > DEADLINE {
            anyhow::bail!(
                "timed out waiting for {what} ({series} is {v}); log:\n{}",
                agent.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn drift_corrected(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    s.write_chart("app", 1, "one")?;
    let mut extra = String::new();
    for n in 0..4 {
        extra.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{n}\ndata:\n  n: \"{n}\"\n"
        ));
    }
    s.repo.write("charts/app/templates/extra.yaml", extra)?;
    s.write_list(
        &[PathProfile {
            name: "app",
            layer: 1,
            values: "{greeting: hi}",
        }],
        "",
    )?;
    s.repo.commit("app")?;

    let mut args = agent_args(
        &s.git.http_url("platform"),
        &s.kubeconfig,
        &s.helm.path(),
        &s.dir.path().join("work"),
    );
    testkit::agent::set_arg(&mut args, "--interval", "1s");
    let mut agent = Agent::start(&s.strata, &args, &[], s.dir.path().join("agent.log"))?;

    let ready = |st: &serde_json::Value| {
        testkit::agent::release(st, "app")
            .is_some_and(|r| r["phase"] == "Ready" && r["helmRevision"] == 1)
    };
    agent
        .wait_status("app Ready at revision 1", DEADLINE, ready)
        .await?;
    let upgrades = metric(&agent, UPGRADES).await;
    assert!(upgrades >= 1.0, "the install ran helm upgrade --install");

    // An unchanged stack: several intervals later (fetches after now + 3 s, each followed by
    // a reconcile of the release), no further helm upgrade and nothing counted as drift.
    let later = now_unix() + 3.0;
    wait_metric(&agent, FETCHED, "three more fetches", |t| t >= later).await?;
    assert_eq!(metric(&agent, UPGRADES).await, upgrades, "{}", agent.logs());
    assert_eq!(metric(&agent, DRIFT).await, 0.0);
    let st = agent.status().await.unwrap_or_default();
    let r = testkit::agent::release(&st, "app")
        .cloned()
        .unwrap_or_default();
    assert_eq!(r["action"], "none", "{r:#}");
    assert_eq!(r["helmRevision"], 1, "{r:#}");

    // Two objects deleted by hand.
    let configmaps = ResourceKey::new("", "configmaps");
    for name in ["app-data", "extra-2"] {
        s.cluster
            .store()
            .delete(&configmaps, Some("app"), name, Propagation::Background)
            .map_err(|e| anyhow::anyhow!("deleting {name}: {e:?}"))?;
    }
    assert!(s.data("app").is_none());

    // Written again by an upgrade whose reason says what was missing. (`action`/`reason`
    // go back to `none` at the next interval; `lastDrift` stays.)
    let st = agent
        .wait_status("app Ready at revision 2 after drift", DEADLINE, |st| {
            testkit::agent::release(st, "app").is_some_and(|r| {
                r["phase"] == "Ready" && r["helmRevision"] == 2 && r["lastDrift"].is_object()
            })
        })
        .await?;
    let r = testkit::agent::release(&st, "app").unwrap();
    let want = "drift: ConfigMap app/app-data, ConfigMap app/extra-2 missing";
    assert_eq!(r["lastDrift"]["kind"], "drift", "{r:#}");
    assert!(
        r["lastDrift"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(want)),
        "{r:#}"
    );
    // The upgrade's Event carries the reason (written by the reporter, maybe a moment later).
    let start = Instant::now();
    loop {
        let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
        if events.iter().any(|e| e.contains(want)) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no Event with {want}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = s.data("app").expect("app-data written again");
    assert_eq!(data["greeting"], "hi");
    assert!(
        testkit::cluster::get(&s.cluster, "configmaps", "app", "extra-2").is_some(),
        "extra-2 written again"
    );
    wait_metric(&agent, DRIFT, "the drift correction counted", |v| v == 1.0).await?;

    // And quiet again: no further upgrade over several intervals.
    let upgrades = metric(&agent, UPGRADES).await;
    let later = now_unix() + 3.0;
    wait_metric(&agent, FETCHED, "three more fetches", |t| t >= later).await?;
    assert_eq!(metric(&agent, UPGRADES).await, upgrades, "{}", agent.logs());
    assert_eq!(metric(&agent, DRIFT).await, 1.0);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn drift_is_corrected_helm4() -> anyhow::Result<()> {
    drift_corrected(HelmBin::V4).await
}

#[tokio::test]
async fn drift_is_corrected_helm3() -> anyhow::Result<()> {
    drift_corrected(HelmBin::V3).await
}
