//! Live health from shared watches, end to end with real helm 4 and helm 3, a real Git server
//! and chart repository, and the simulated cluster:
//!
//! - A Ready release whose Deployment breaks (a new pod template whose pods never become
//!   ready, written straight into the store as another controller would) becomes Degraded,
//!   with its layer and the agent, naming the Deployment; a new commit that changes only the
//!   layer above writes nothing there until the Deployment recovers, then upgrades it.
//! - API load: a layer of 10 releases of 51 objects each costs the agent a bounded number of
//!   requests (watches, not a GET per object per second), and nothing at all once every
//!   release is Ready and nothing changes (the figures are printed). Its watches are one per
//!   kind, cluster-wide; a kind whose cluster-wide list RBAC forbids is watched per namespace.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::agent::{http_get, phase, release};
use testkit::cluster::touches_namespace;
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(90);

fn deployments() -> kubesim::ResourceKey {
    kubesim::ResourceKey::new("apps", "deployments")
}

/// Give certs' Deployment a pod template whose pods never become ready (`true`), or take
/// that back (`false`).
fn break_certs(s: &Scenario, broken: bool) -> anyhow::Result<()> {
    s.cluster
        .store()
        .update_with(&deployments(), Some("certs"), "certs-control", |d| {
            d["spec"]["template"]["metadata"]["annotations"] = if broken {
                json!({"kubesim.strata.dev/never-ready": "true"})
            } else {
                json!({})
            };
        })?;
    Ok(())
}

#[tokio::test]
async fn a_degraded_release_holds_the_layers_above_until_it_recovers_helm4() -> anyhow::Result<()> {
    a_degraded_release_holds_the_layers_above_until_it_recovers(HelmBin::V4).await
}

#[tokio::test]
async fn a_degraded_release_holds_the_layers_above_until_it_recovers_helm3() -> anyhow::Result<()> {
    a_degraded_release_holds_the_layers_above_until_it_recovers(HelmBin::V3).await
}

async fn a_degraded_release_holds_the_layers_above_until_it_recovers(
    helm: HelmBin,
) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{greeting: hi}").await?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("every layer Ready", LONG, |st| st["phase"] == "Ready")
        .await?;

    let broke = Instant::now();
    break_certs(&s, true)?;
    let st = agent
        .wait_status("certs Degraded", LONG, |st| {
            phase(st, "certs") == "Degraded"
        })
        .await?;
    eprintln!(
        "certs seen Degraded {} ms after its Deployment broke",
        broke.elapsed().as_millis()
    );
    let certs = release(&st, "certs").unwrap();
    assert!(
        certs["notReady"].as_array().is_some_and(|n| n
            .iter()
            .any(|o| o["kind"] == "Deployment" && o["name"] == "certs-control")),
        "{certs:#}"
    );
    assert!(
        certs["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("degraded: ")),
        "{certs:#}"
    );
    assert_eq!(st["layers"][0]["phase"], "Degraded", "{st:#}");
    assert_eq!(st["phase"], "Degraded", "{st:#}");
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    assert!(
        metrics.contains("strata_releases{phase=\"Degraded\"} 1"),
        "{metrics}"
    );

    // The transition is announced as a Warning Event (written by the reporter, shortly).
    let asked = Instant::now();
    loop {
        let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
        if events
            .iter()
            .any(|e| e.starts_with("Degraded:") && e.contains("certs-control"))
        {
            break;
        }
        anyhow::ensure!(asked.elapsed() < LONG, "no Degraded Event: {events:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A commit that changes only layer 2 waits behind the degraded layer 1.
    let fix = s.commit_mesh_values("{greeting: hello}", "only layer 2 changes")?;
    agent
        .wait_status("the new commit applied", LONG, |st| {
            st["revision"]["commit"] == fix.as_str()
        })
        .await?;
    let writes_before = s.writes().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = agent
        .status()
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    let mesh_writes: Vec<_> = s.writes()[writes_before..]
        .iter()
        .filter(|w| touches_namespace(w, "mesh"))
        .cloned()
        .collect();
    assert!(
        mesh_writes.is_empty(),
        "layer 2 written while layer 1 was degraded: {mesh_writes:#?}"
    );
    assert_eq!(phase(&st, "certs"), "Waiting", "{st:#}");
    assert_eq!(phase(&st, "mesh"), "Pending", "{st:#}");
    let mesh_revision = testkit::release::latest(&s.cluster)
        .into_iter()
        .find(|r| r.name == "mesh")
        .map(|r| r.revision);

    // The Deployment recovers: layer 1 is Ready again and layer 2 is upgraded.
    break_certs(&s, false)?;
    let st = agent
        .wait_status("every layer Ready with the change", LONG, |st| {
            st["phase"] == "Ready" && phase(st, "mesh") == "Ready"
        })
        .await?;
    assert_eq!(phase(&st, "certs"), "Ready");
    let after = testkit::release::latest(&s.cluster)
        .into_iter()
        .find(|r| r.name == "mesh")
        .map(|r| r.revision);
    assert_eq!(after, mesh_revision.map(|r| r + 1), "mesh upgraded once");
    assert!(testkit::release::pending(&s.cluster).is_empty());
    agent.stop().await?;
    Ok(())
}

/// 50 ConfigMaps and a Deployment that becomes ready after a while.
const MANY: &str = r#"{{- range $i, $e := until 50 }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $.Release.Name }}-{{ $i }}
data:
  index: "{{ $i }}"
{{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
  annotations:
    kubesim.strata.dev/ready-after: 3s
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: main
          image: example.com/many:1
"#;

const RELEASES: usize = 10;

fn many_profiles(repo_url: &str) -> String {
    let mut list = format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: platform\n    url: {repo_url}\ndefaults:\n  timeout: 60s\nprofiles:\n"
    );
    for i in 0..RELEASES {
        list.push_str(&format!(
            "  - name: many-{i}\n    chart: {{repository: platform, name: many}}\n    version: \"1.0.0\"\n    namespace: many-{i}\n    layer: 1\n"
        ));
    }
    list
}

fn strata_requests(s: &Scenario) -> Vec<kubesim::RequestRecord> {
    s.cluster
        .controls()
        .requests_where(|r| r.user_agent.starts_with("strata/"))
}

/// The scenario of [`api_requests_are_bounded_by_watches_not_objects`]: 10 releases of 51
/// objects in one layer, and an agent polling Git every `interval`.
async fn many_releases(interval: &str) -> anyhow::Result<(Scenario, testkit::agent::Agent)> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    s.add_chart("many", "1.0.0", &[("templates/objects.yaml", MANY)])?;
    s.repo
        .write("profiles.yaml", many_profiles(&s.charts.url()))?;
    s.repo.commit("10 releases of 51 objects")?;
    s.cluster.controls().reset_requests();
    let mut args = s.args(&[]);
    testkit::agent::set_arg(&mut args, "--interval", interval);
    let agent =
        testkit::agent::Agent::start(&s.strata, &args, &[], s.dir.path().join("agent-many.log"))?;
    Ok((s, agent))
}

/// Wait until the agent has nothing left to write: the status ConfigMap shows every release
/// Ready with its first drift check (which follows Ready; the ConfigMap's writes are throttled
/// to one a second, so its last write comes shortly after the last change), each release's
/// Ready Event exists, and, when the agent polls, the ConfigMap shows a poll of the unchanged
/// revision (`action: none`).
async fn settled(s: &Scenario, polls: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let done = || {
        let status = s.configmap_status().is_some_and(|c| {
            c["phase"] == "Ready"
                && (0..RELEASES).all(|i| {
                    let name = format!("many-{i}");
                    let release = testkit::agent::release(&c, &name);
                    phase(&c, &name) == "Ready"
                        && release.is_some_and(|r| {
                            r["drift"]["since"].is_string() && (!polls || r["action"] == "none")
                        })
                })
        });
        let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
        status
            && (0..RELEASES).all(|i| {
                let ready = format!("Ready:release many-{i}/many-{i}: Ready");
                events.iter().any(|e| e.starts_with(&ready))
            })
    };
    while !done() {
        anyhow::ensure!(
            started.elapsed() < LONG,
            "the agent never settled: status {:#?}, events {:#?}",
            s.configmap_status(),
            testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn describe(requests: &[kubesim::RequestRecord]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect()
}

#[tokio::test]
async fn api_requests_are_bounded_by_watches_not_objects() -> anyhow::Result<()> {
    let started = Instant::now();
    let (s, mut agent) = many_releases("10m").await?;
    agent
        .wait_status("every release Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    let took = started.elapsed();
    let install = strata_requests(&s);
    let objects = RELEASES * 51;
    eprintln!(
        "install: {} strata requests for {RELEASES} releases of 51 objects in {:.1} s ({} watch requests)",
        install.len(),
        took.as_secs_f64(),
        install.iter().filter(|r| r.verb == "watch").count()
    );
    // Polling every object while helm waits would cost `objects` requests a second.
    assert!(
        install.len() < objects,
        "{} requests for {objects} objects: {:#?}",
        install.len(),
        describe(&install)
    );
    assert!(install.iter().any(|r| r.verb == "watch"));
    // The objects' watches: one per kind, cluster-wide, none per release namespace.
    let per_namespace: Vec<_> = install
        .iter()
        .filter(|r| {
            r.verb == "watch"
                && ["configmaps", "deployments"].contains(&r.resource.as_str())
                && r.namespace.starts_with("many-")
        })
        .collect();
    assert!(
        per_namespace.is_empty(),
        "watches per namespace: {:#?}",
        describe(&install)
    );

    // Steady state: nothing changes, so nothing is requested (the watches stay open).
    settled(&s, false).await?;
    s.cluster.controls().reset_requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady = strata_requests(&s);
    eprintln!("steady state: {} strata requests in 5 s", steady.len());
    assert!(
        steady.is_empty(),
        "requests while nothing changed: {:#?}",
        describe(&steady)
    );
    assert!(s.cluster.controls().open_watches() > 0);
    agent.stop().await?;
    Ok(())
}

/// RBAC scoped to namespaces (deploy/examples/narrow-rbac) forbids listing a kind
/// cluster-wide: that kind is watched per namespace instead, the others stay cluster-wide,
/// and every release still becomes Ready.
#[tokio::test]
async fn a_kind_that_cannot_be_listed_cluster_wide_is_watched_per_namespace() -> anyhow::Result<()>
{
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    for verb in ["list", "watch"] {
        s.cluster.controls().add_error(kubesim::ErrorRule {
            verb: Some(verb.into()),
            resource: Some("deployments".into()),
            namespace: Some(String::new()),
            code: 403,
            ..Default::default()
        });
    }
    s.add_chart("many", "1.0.0", &[("templates/objects.yaml", MANY)])?;
    s.repo
        .write("profiles.yaml", many_profiles(&s.charts.url()))?;
    s.repo.commit("10 releases of 51 objects")?;
    let mut agent = testkit::agent::Agent::start(
        &s.strata,
        &s.args(&[]),
        &[],
        s.dir.path().join("agent-rbac.log"),
    )?;
    agent
        .wait_status("every release Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    let watches = s
        .cluster
        .controls()
        .requests_where(|r| r.user_agent.starts_with("strata/") && r.verb == "watch");
    let namespaces = |resource: &str| {
        watches
            .iter()
            .filter(|r| r.resource == resource && r.namespace != "strata-system")
            .map(|r| r.namespace.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let expected: std::collections::BTreeSet<String> =
        (0..RELEASES).map(|i| format!("many-{i}")).collect();
    assert_eq!(namespaces("deployments"), expected);
    assert_eq!(
        namespaces("configmaps"),
        std::collections::BTreeSet::from([String::new()])
    );
    assert!(
        agent
            .logs()
            .contains("listing this kind cluster-wide is forbidden"),
        "{}",
        agent.logs()
    );
    agent.stop().await?;
    Ok(())
}

/// Every poll of an unchanged revision re-checks each release from the watches (helm's
/// storage included, by a metadata-only watch; the releases strata manages too) and writes
/// the status ConfigMap only when the status changed: a poll of an unchanged revision costs
/// no request, whatever the number of releases (reading each release's record would cost 10
/// a poll here).
#[tokio::test]
async fn an_idle_poll_costs_the_same_for_any_number_of_releases() -> anyhow::Result<()> {
    let (s, mut agent) = many_releases("1s").await?;
    agent
        .wait_status("every release Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    settled(&s, true).await?;
    let fetched = |agent_log: &str| agent_log.matches("git_fetch").count();
    let before = fetched(&agent.logs());
    s.cluster.controls().reset_requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = strata_requests(&s);
    let polls = fetched(&agent.logs()) - before;
    eprintln!(
        "idle: {} strata requests in 5 s ({polls} polls): {:?}",
        idle.len(),
        describe(&idle)
    );
    assert!(polls >= 3, "the agent polled: {polls}");
    // Less than one request a poll (a watch may be re-opened meanwhile): nothing per release.
    assert!(
        idle.len() < polls,
        "{} requests in {polls} polls of {RELEASES} releases: {:#?}",
        idle.len(),
        describe(&idle)
    );
    agent.stop().await?;
    Ok(())
}
