//! Drift is found, and corrected or reported (issue 10), end to end with real helm 4 and helm
//! 3, a real Git server and kubesim: a continuous agent (`--interval 1s`) installs a release of
//! five ConfigMaps (more than a few of one kind: read with one LIST).
//!
//! - `drift: {mode: correct}`: two ConfigMaps are deleted by hand; within a generous deadline
//!   they exist again, the status says `drift: ... missing`, helm's revision went up by one and
//!   `strata_drift_corrections_total` counted it. Then a field is edited by hand: it is written
//!   back by another upgrade whose reason names the object and the field's path. Before the
//!   deletion, several intervals of an unchanged stack run no helm upgrade.
//! - the default (`warn`): a ConfigMap field and a Secret's data are edited, and a field an
//!   ignore rule names: `/status` lists the two objects with their paths (never the Secret's
//!   value), a `DriftDetected` Event says so, `strata_drifted_objects` counts them, and no helm
//!   upgrade runs; the ignored field is not reported. Then `drift: {mode: ignore}` in a new
//!   commit: the report and the gauge's series are gone, and still no helm upgrade ran.

use std::time::{Duration, Instant};

use kubesim::{Propagation, ResourceKey};
use testkit::agent::Agent;
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
        "  drift: {mode: correct}\n",
    )?;
    s.repo.commit("app")?;

    let mut agent = s.agent("1s")?;

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

    // A field edited by hand is written back by an upgrade naming the object and the field.
    edit(
        &s,
        "configmaps",
        "app",
        "app-data",
        "/data/greeting",
        "edited by hand",
    )?;
    let st = agent
        .wait_status("app Ready at revision 3 after drift", DEADLINE, |st| {
            testkit::agent::release(st, "app")
                .is_some_and(|r| r["phase"] == "Ready" && r["helmRevision"] == 3)
        })
        .await?;
    let r = testkit::agent::release(&st, "app").unwrap();
    let want = "drift: ConfigMap app/app-data (/data/greeting) changed";
    assert!(
        r["lastDrift"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(want)),
        "{r:#}"
    );
    assert_eq!(s.data("app").expect("app-data")["greeting"], "hi");
    wait_metric(&agent, DRIFT, "the second drift correction counted", |v| {
        v == 2.0
    })
    .await?;
    agent.stop().await?;
    Ok(())
}

/// Set the string at `pointer` of an object in kubesim, as `kubectl edit` would.
fn edit(
    s: &GitCharts,
    resource: &str,
    namespace: &str,
    name: &str,
    pointer: &str,
    value: &str,
) -> anyhow::Result<()> {
    let res = ResourceKey::new("", resource);
    let mut obj = s
        .cluster
        .store()
        .get(&res, Some(namespace), name)
        .ok_or_else(|| anyhow::anyhow!("{resource} {namespace}/{name} not found"))?;
    *obj.pointer_mut(pointer)
        .ok_or_else(|| anyhow::anyhow!("{pointer} not in {resource} {namespace}/{name}"))? =
        serde_json::Value::String(value.to_owned());
    s.cluster
        .store()
        .update(&res, obj)
        .map_err(|e| anyhow::anyhow!("editing {resource} {namespace}/{name}: {e:?}"))?;
    Ok(())
}

/// Wait for an Event in the agent's namespace containing `want`; returns every Event.
async fn wait_event(s: &GitCharts, want: &str) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    loop {
        let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
        if events.iter().any(|e| e.contains(want)) {
            return Ok(events);
        }
        if start.elapsed() > DEADLINE {
            anyhow::bail!("no Event with {want}: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The base64 of the Secret's password as the chart writes it, and as edited by hand.
const PASSWORD_B64: &str = "czNjcmV0LXZhbHVl"; // s3cret-value
const EDITED_B64: &str = "aGFja2VkLXZhbHVl"; // hacked-value

async fn drift_warned(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    s.write_chart("app", 1, "one")?;
    let mut extra = String::new();
    for n in 0..4 {
        extra.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{n}\ndata:\n  count: \"{n}\"\n"
        ));
    }
    s.repo.write("charts/app/templates/extra.yaml", extra)?;
    s.repo.write(
        "charts/app/templates/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-creds\ntype: Opaque\ndata:\n  password: {{ \"s3cret-value\" | b64enc }}\n",
    )?;
    // Kinds the API server normalises, none of them drift as installed.
    s.repo.write(
        "charts/app/templates/web.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app.kubernetes.io/name: web}
  annotations:
    kubesim.strata.dev/ready-after: "100ms"
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: main
          image: example.com/web:1
          args: ["--port", "8080"]
          ports:
            - {name: http, containerPort: 8080}
          env:
            - {name: MODE, value: "1"}
          resources:
            requests: {cpu: "0.5", memory: 64Mi}
            limits: {cpu: 1, memory: 1Gi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http}
"#,
    )?;
    // No mode: warn. One field of extra-0 is ignored.
    s.write_list(
        &[PathProfile {
            name: "app",
            layer: 1,
            values: "{greeting: hi}",
        }],
        "  drift:\n    ignore:\n      - {kind: ConfigMap, name: extra-0, paths: [/data/count]}\n",
    )?;
    s.repo.commit("app")?;

    let mut agent = s.agent("1s")?;
    agent
        .wait_status("app Ready at revision 1, drift checked", DEADLINE, |st| {
            testkit::agent::release(st, "app").is_some_and(|r| {
                r["phase"] == "Ready" && r["helmRevision"] == 1 && r["drift"]["since"].is_string()
            })
        })
        .await?;
    let upgrades = metric(&agent, UPGRADES).await;
    const DRIFTED: &str = "strata_drifted_objects{namespace=\"app\",release=\"app\"}";
    assert_eq!(metric(&agent, DRIFTED).await, 0.0, "{}", agent.logs());

    // Edited by hand: a ConfigMap field, the Secret's password, and the ignored field.
    edit(
        &s,
        "configmaps",
        "app",
        "app-data",
        "/data/greeting",
        "edited by hand",
    )?;
    edit(
        &s,
        "secrets",
        "app",
        "app-creds",
        "/data/password",
        EDITED_B64,
    )?;
    edit(&s, "configmaps", "app", "extra-0", "/data/count", "99")?;

    let st = agent
        .wait_status("the drift of app in /status", DEADLINE, |st| {
            testkit::agent::release(st, "app").is_some_and(|r| {
                r["drift"]["objects"]
                    .as_array()
                    .is_some_and(|o| o.len() == 2)
            })
        })
        .await?;
    let r = testkit::agent::release(&st, "app").unwrap().clone();
    assert_eq!(r["drift"]["mode"], "warn", "{r:#}");
    // In manifest order (helm writes Secrets before ConfigMaps).
    assert_eq!(
        r["drift"]["objects"],
        serde_json::json!([
            {"kind": "Secret", "namespace": "app", "name": "app-creds", "paths": ["/data/password"]},
            {"kind": "ConfigMap", "namespace": "app", "name": "app-data", "paths": ["/data/greeting"]},
        ]),
        "{r:#}"
    );
    let want = "drift: Secret app/app-creds (/data/password), ConfigMap app/app-data (/data/greeting) changed; not corrected (drift mode warn)";
    let events = wait_event(&s, want).await?;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("DriftDetected:") && e.contains(want)),
        "{events:#?}"
    );
    wait_metric(&agent, DRIFTED, "two drifted objects", |v| v == 2.0).await?;

    // Several intervals later: still reported, nothing repaired, no helm upgrade, one Event.
    let later = now_unix() + 3.0;
    wait_metric(&agent, FETCHED, "three more fetches", |t| t >= later).await?;
    assert_eq!(metric(&agent, UPGRADES).await, upgrades, "{}", agent.logs());
    assert_eq!(metric(&agent, DRIFT).await, 0.0);
    let st = agent.status().await.unwrap_or_default();
    let r = testkit::agent::release(&st, "app")
        .cloned()
        .unwrap_or_default();
    assert_eq!(r["helmRevision"], 1, "{r:#}");
    assert_eq!(r["phase"], "Ready", "{r:#}");
    assert_eq!(
        r["drift"]["objects"].as_array().map(Vec::len),
        Some(2),
        "{r:#}"
    );
    assert!(r["lastDrift"].is_null(), "{r:#}");
    assert_eq!(s.data("app").unwrap()["greeting"], "edited by hand");
    let drift_events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS)
        .into_iter()
        .filter(|e| e.starts_with("DriftDetected:"))
        .count();
    assert_eq!(drift_events, 1, "{events:#?}");

    // The Secret's values appear nowhere: not in /status, the status ConfigMap, Events or logs.
    let everything = format!(
        "{st}\n{:?}\n{:?}\n{}",
        testkit::cluster::configmap_status(&s.cluster),
        testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS),
        agent.logs()
    );
    for secret in [PASSWORD_B64, EDITED_B64, "s3cret-value", "hacked-value"] {
        assert!(
            !everything.contains(secret),
            "{secret} shown:\n{everything}"
        );
    }

    // `drift: {mode: ignore}` in a new commit: nothing is checked or reported any more, and
    // the changed policy runs no helm (it is in no digest).
    s.write_list(
        &[PathProfile {
            name: "app",
            layer: 1,
            values: "{greeting: hi}",
        }],
        "  drift: {mode: ignore}\n",
    )?;
    let commit = s.repo.commit("drift: ignore")?;
    agent
        .wait_status("drift no longer reported", DEADLINE, |st| {
            st["revision"]["commit"] == commit.as_str()
                && testkit::agent::release(st, "app")
                    .is_some_and(|r| r["phase"] == "Ready" && r["drift"].is_null())
        })
        .await?;
    assert_eq!(metric(&agent, UPGRADES).await, upgrades, "{}", agent.logs());
    let text = agent.metrics().await.unwrap_or_default();
    assert!(sample(&text, DRIFTED).is_none(), "{text}");
    let st = agent.status().await.unwrap_or_default();
    assert_eq!(
        testkit::agent::release(&st, "app").unwrap()["helmRevision"],
        1
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn drift_is_reported_not_corrected_by_default_helm4() -> anyhow::Result<()> {
    drift_warned(HelmBin::V4).await
}

#[tokio::test]
async fn drift_is_reported_not_corrected_by_default_helm3() -> anyhow::Result<()> {
    drift_warned(HelmBin::V3).await
}

#[tokio::test]
async fn drift_is_corrected_helm4() -> anyhow::Result<()> {
    drift_corrected(HelmBin::V4).await
}

#[tokio::test]
async fn drift_is_corrected_helm3() -> anyhow::Result<()> {
    drift_corrected(HelmBin::V3).await
}

/// Drift is seen from the watches, not at the next poll: with `--interval 10m`, a field
/// edited by hand is reported within moments (mode `warn`, a `DriftDetected` Event), and
/// with mode `correct` an object deleted by hand is written again at once.
#[tokio::test]
async fn drift_is_seen_from_watches_between_polls() -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), HelmBin::V4).await?;
    s.write_chart("app", 1, "one")?;
    s.write_chart("fixed", 1, "one")?;
    s.write_list(
        &[
            PathProfile {
                name: "app",
                layer: 1,
                values: "{greeting: hi}",
            },
            PathProfile {
                name: "fixed",
                layer: 1,
                values: "{greeting: hi}",
            },
        ],
        "",
    )?;
    // `fixed` corrects its drift; `app` (the default) reports it.
    let list = std::fs::read_to_string(s.repo.path().join("profiles.yaml"))?.replace(
        "  - name: fixed\n",
        "  - name: fixed\n    drift: {mode: correct}\n",
    );
    s.repo.write("profiles.yaml", list)?;
    s.repo.commit("two releases")?;
    let mut agent = s.agent("10m")?;
    agent
        .wait_status("both Ready", DEADLINE, |st| st["phase"] == "Ready")
        .await?;

    let edited = Instant::now();
    edit(
        &s,
        "configmaps",
        "app",
        "app-data",
        "/data/greeting",
        "edited",
    )?;
    let st = agent
        .wait_status("app's drift reported", DEADLINE, |st| {
            testkit::agent::release(st, "app").is_some_and(|r| {
                r["drift"]["objects"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["name"] == "app-data"))
            })
        })
        .await?;
    eprintln!(
        "drift reported {} ms after the edit (interval 10m)",
        edited.elapsed().as_millis()
    );
    assert!(edited.elapsed() < Duration::from_secs(60), "{st:#}");
    wait_event(&s, "app-data").await?;

    let configmaps = ResourceKey::new("", "configmaps");
    s.cluster
        .store()
        .delete(
            &configmaps,
            Some("fixed"),
            "fixed-data",
            Propagation::Background,
        )
        .map_err(|e| anyhow::anyhow!("deleting fixed-data: {e:?}"))?;
    let deleted = Instant::now();
    agent
        .wait_status("fixed written again", DEADLINE, |st| {
            testkit::agent::release(st, "fixed").is_some_and(|r| {
                r["phase"] == "Ready" && r["helmRevision"] == 2 && r["lastDrift"].is_object()
            })
        })
        .await?;
    eprintln!(
        "deleted object written again {} ms after the deletion (interval 10m)",
        deleted.elapsed().as_millis()
    );
    assert!(
        s.cluster
            .store()
            .get(&configmaps, Some("fixed"), "fixed-data")
            .is_some()
    );
    // app was only reported: still at its first revision.
    let st = agent.status().await.unwrap_or_default();
    assert_eq!(
        testkit::agent::release(&st, "app").unwrap()["helmRevision"],
        1
    );
    agent.stop().await?;
    Ok(())
}
