//! `strata run` end to end with real helm 4 and helm 3, a real Git server, a real chart
//! repository over HTTP and the simulated cluster (kubesim), asserting from kubesim's request
//! log what reached the cluster and when.

use std::time::Duration;

use testkit::agent::{http_get, http_post, http_post_bearer, phase, release};
use testkit::cluster::{AGENT_NS, touches_namespace};
use testkit::scenario::layered_profiles;
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(90);
/// The status API's write token in these tests.
const ADMIN_TOKEN: &str = "e2e-admin-token-7f3a";

/// Parse an RFC 3339 time.
fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}

/// The seed's scenario: layers 1 -> 2 -> 3 installed in order; nothing of a layer is written
/// before the layer below is Ready; `--once` exits 0; status in the ConfigMap and Events.
async fn seed_scenario(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{greeting: hi}").await?;
    let mut agent = s.agent(&["--once"], &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    let logs = agent.logs();
    assert!(exit.success(), "strata run --once failed ({exit}):\n{logs}");

    let status = s.configmap_status().expect("status ConfigMap written");
    assert_eq!(status["phase"], "Ready", "{status:#}");
    let commit = s.repo.head()?;
    assert_eq!(status["revision"]["commit"], commit.as_str());
    assert_eq!(status["lastAppliedRevision"]["commit"], commit.as_str());
    let layer_numbers: Vec<_> = status["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].clone())
        .collect();
    assert_eq!(layer_numbers, [1, 2, 3].map(serde_json::Value::from));
    for name in ["certs", "mesh", "canary"] {
        let r = release(&status, name).unwrap();
        assert_eq!(r["phase"], "Ready", "{r:#}");
        assert_eq!(r["helmRevision"], 1, "{r:#}");
        assert_eq!(r["attempts"], 1, "{r:#}");
        assert_eq!(r["action"], "install", "{r:#}");
        // How long it took, for the slowest-first order of the next revisions.
        assert!(r["lastReadyMs"].as_u64().is_some_and(|ms| ms > 0), "{r:#}");
    }
    // No --concurrency: fitted to what this machine affords, and said why.
    let concurrency = &status["concurrency"];
    assert!(
        concurrency["value"]
            .as_u64()
            .is_some_and(|n| (1..=10).contains(&n)),
        "{status:#}"
    );
    assert!(
        concurrency["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("derived:") && r.contains("CPU")),
        "{status:#}"
    );
    assert!(
        logs.contains("helm processes at once inside a layer"),
        "{logs}"
    );

    // Order, from the API server's request log (in arrival order): the first write of layer
    // N+1 comes after the last write of layer N, which is helm marking the release deployed
    // after its wait and hooks. And strata had recorded layer N Ready (readyAt) no later than
    // that first write.
    let writes = s.writes();
    let ready = |name: &str| ts(release(&status, name).unwrap()["readyAt"].as_str().unwrap());
    for (below, above) in [("certs", "mesh"), ("mesh", "canary")] {
        let last_below = writes
            .iter()
            .rposition(|r| touches_namespace(r, below))
            .unwrap_or_else(|| panic!("no write for {below}"));
        let first_above = writes
            .iter()
            .position(|r| touches_namespace(r, above))
            .unwrap_or_else(|| panic!("no write for {above}"));
        assert!(
            last_below < first_above,
            "{above} written (#{first_above} {:?}) before {below} finished (#{last_below} {:?})",
            writes[first_above],
            writes[last_below]
        );
        // The request log has second precision: compare at that precision.
        let first_time = ts(&writes[first_above].time);
        assert!(
            ready(below).as_second() <= first_time.as_second() + 1,
            "{below} ready at {} but {above} written at {first_time}",
            ready(below)
        );
        // The release Secret of `below` says deployed before anything of `above` exists.
        assert!(
            writes[..first_above]
                .iter()
                .any(|r| r.namespace == below && r.resource == "secrets"),
            "{below}'s release record was written before {above} started"
        );
    }
    // The Certificate CRD (layer 1) existed before any mesh write.
    let crd_write = writes
        .iter()
        .position(|r| r.path.contains("/customresourcedefinitions"))
        .unwrap_or_else(|| {
            panic!(
                "certificate CRD written: {:#?}",
                writes
                    .iter()
                    .map(|r| format!(
                        "{} {} {} {}/{}",
                        r.verb, r.method, r.path, r.namespace, r.name
                    ))
                    .collect::<Vec<_>>()
            )
        });
    let first_mesh = writes
        .iter()
        .position(|r| touches_namespace(r, "mesh"))
        .unwrap();
    assert!(crd_write < first_mesh);

    // A first install reads the release's storage once, after helm: before it, the watch of
    // helm's storage (listed while layer 1 installed) already says there is no record.
    // (The initial lists of watches are paged: they carry a limit.)
    for name in ["mesh", "canary"] {
        let reads: Vec<_> = s
            .cluster
            .controls()
            .requests_where(|r| {
                r.user_agent.starts_with("strata/")
                    && r.verb == "list"
                    && r.resource == "secrets"
                    && r.namespace == name
                    && !r.query.contains("limit=")
            })
            .iter()
            .map(|r| format!("{} {}", r.path, r.query))
            .collect();
        assert_eq!(
            reads.len(),
            1,
            "reads of {name}'s release storage: {reads:#?}"
        );
    }

    // Events for the transitions, attached to the status ConfigMap.
    let (events, _) = s
        .cluster
        .store()
        .list(&kubesim::ResourceKey::new("", "events"), Some(AGENT_NS));
    let reasons: Vec<String> = events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "strata-status")
        .map(|e| {
            format!(
                "{}:{}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    for name in ["certs", "mesh", "canary"] {
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("Installing:") && r.contains(&format!("/{name}"))),
            "no Installing event for {name}: {reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("Ready:") && r.contains(&format!("/{name}"))),
            "no Ready event for {name}: {reasons:?}"
        );
    }

    // Every request names its client: the agent's own say `strata/<version>`, helm's say helm.
    let requests = s.cluster.controls().requests();
    let agents: Vec<&str> = requests
        .iter()
        .map(|r| r.user_agent.as_str())
        .filter(|ua| ua.starts_with("strata/"))
        .collect();
    assert!(!agents.is_empty(), "no request with the strata User-Agent");
    assert!(agents.iter().all(|ua| *ua == strata::kube_api::USER_AGENT));
    assert!(
        requests.iter().all(|r| !r.user_agent.is_empty()),
        "requests without a User-Agent: {:?}",
        requests
            .iter()
            .filter(|r| r.user_agent.is_empty())
            .map(|r| format!("{} {}", r.verb, r.path))
            .take(5)
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn seed_scenario_helm4() -> anyhow::Result<()> {
    seed_scenario(HelmBin::V4).await
}

#[tokio::test]
async fn seed_scenario_helm3() -> anyhow::Result<()> {
    seed_scenario(HelmBin::V3).await
}

/// The same charts installed the naive way, as one umbrella release, fail on a fresh cluster
/// with helm's "no matches for kind".
async fn naive_umbrella_fails(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{}").await?;
    let umbrella = s.dir.path().join("umbrella");
    std::fs::create_dir_all(umbrella.join("charts"))?;
    std::fs::write(
        umbrella.join("Chart.yaml"),
        "apiVersion: v2\nname: platform\nversion: 0.1.0\n",
    )?;
    for dir in &s.chart_dirs {
        let name = dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .to_string();
        testkit::copy_dir(dir, &umbrella.join("charts").join(name))?;
    }
    let home = s.dir.path().join("helm-home");
    let out = tokio::process::Command::new(helm.path())
        .args(["install", "platform"])
        .arg(&umbrella)
        .args(["--namespace", "default", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECACHEDIR", home.join("kube"))
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the umbrella install should fail:\n{stderr}"
    );
    assert!(
        stderr.contains("no matches for kind"),
        "expected helm's \"no matches for kind\":\n{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn naive_umbrella_install_fails_helm4() -> anyhow::Result<()> {
    naive_umbrella_fails(HelmBin::V4).await
}

#[tokio::test]
async fn naive_umbrella_install_fails_helm3() -> anyhow::Result<()> {
    naive_umbrella_fails(HelmBin::V3).await
}

/// A new commit changing one layer-2 profile's values upgrades that release only: no write
/// for the others (objects or release Secrets), their status says no helm ran.
async fn change_upgrades_only_that_release(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{greeting: hi}").await?;
    let mut agent = s.agent(&[], &[])?;
    let first = s.repo.head()?;
    agent
        .wait_status("first revision Ready", LONG, |st| {
            st["phase"] == "Ready" && st["revision"]["commit"] == first.as_str()
        })
        .await?;
    s.cluster.controls().reset_requests();

    let second = s.commit_mesh_values("{greeting: bonjour}", "mesh: new greeting")?;
    let st = agent
        .wait_status("second revision Ready", LONG, |st| {
            st["phase"] == "Ready" && st["revision"]["commit"] == second.as_str()
        })
        .await?;
    let mesh = release(&st, "mesh").unwrap();
    assert_eq!(mesh["helmRevision"], 2, "{mesh:#}");
    assert_eq!(mesh["action"], "upgrade", "{mesh:#}");
    for other in ["certs", "canary"] {
        let r = release(&st, other).unwrap();
        assert_eq!(r["helmRevision"], 1, "{r:#}");
        assert_eq!(r["action"], "none", "{r:#}");
        assert_eq!(r["attempts"], 0, "no helm process for {other}: {r:#}");
    }
    let writes = s.writes();
    assert!(
        writes.iter().any(|r| touches_namespace(r, "mesh")),
        "mesh was upgraded"
    );
    // Nothing of certs or canary: neither their namespaced objects and release Secrets nor
    // their cluster-scoped objects (certs' CRD). (helm 4 re-applies mesh's own CRD.)
    let foreign: Vec<_> = writes
        .iter()
        .filter(|r| {
            touches_namespace(r, "certs")
                || touches_namespace(r, "canary")
                || r.name.contains("certs.example.com")
                || (r.namespace.is_empty() && !r.name.contains("mesh"))
        })
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect();
    assert!(foreign.is_empty(), "writes outside mesh: {foreign:?}");
    // The new greeting reached the mesh Deployment.
    let dep = s
        .cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("apps", "deployments"),
            Some("mesh"),
            "mesh-control",
        )
        .unwrap();
    assert!(dep.to_string().contains("bonjour"));
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn change_upgrades_only_that_release_helm4() -> anyhow::Result<()> {
    change_upgrades_only_that_release(HelmBin::V4).await
}

#[tokio::test]
async fn change_upgrades_only_that_release_helm3() -> anyhow::Result<()> {
    change_upgrades_only_that_release(HelmBin::V3).await
}

/// The time to Ready of each release (the slowest-first order of a layer) survives a restart:
/// a new agent reads it from the status ConfigMap its predecessor wrote, before it writes its
/// own. A ConfigMap that is not strata's status costs only that order, with a warning.
#[tokio::test]
async fn a_restarted_agent_keeps_each_releases_time_to_ready() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{greeting: hi}").await?;
    let run_once = || async {
        let mut agent = s.agent(&["--once"], &[])?;
        let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
        anyhow::ensure!(exit.success(), "--once failed ({exit}):\n{}", agent.logs());
        Ok::<_, anyhow::Error>(agent.logs())
    };
    let ready_ms = |status: &serde_json::Value| -> Vec<(String, Option<u64>)> {
        ["certs", "mesh", "canary"]
            .iter()
            .map(|n| {
                let r = release(status, n).unwrap();
                (n.to_string(), r["lastReadyMs"].as_u64())
            })
            .collect()
    };
    run_once().await?;
    let first = ready_ms(&s.configmap_status().expect("status written"));
    assert!(first.iter().all(|(_, ms)| ms.is_some()), "{first:?}");

    // Nothing changed: no helm runs, so nothing is timed again; the times are the ones read.
    run_once().await?;
    let status = s.configmap_status().expect("status written");
    for n in ["certs", "mesh", "canary"] {
        assert_eq!(release(&status, n).unwrap()["attempts"], 0, "{status:#}");
    }
    assert_eq!(ready_ms(&status), first);

    // An agent whose first revision is rejected has no layers in its status: it keeps the
    // times it inherited beside it, so the agent after it still starts with them.
    let key = kubesim::ResourceKey::new("", "configmaps");
    let status_configmap = || {
        s.cluster
            .store()
            .get(&key, Some(testkit::cluster::AGENT_NS), "strata-status")
            .expect("status ConfigMap written")
    };
    let list = std::fs::read_to_string(s.repo.path().join("profiles.yaml"))?;
    s.repo.write("profiles.yaml", "apiVersion: [\n")?;
    s.repo.commit("invalid yaml")?;
    let mut agent = s.agent(&["--once"], &[])?;
    tokio::time::timeout(LONG, agent.child.wait()).await??;
    let status = s.configmap_status().expect("status written");
    assert!(status["rejectedRevision"].is_object(), "{status:#}");
    assert!(
        status["layers"].as_array().is_none_or(|l| l.is_empty()),
        "{status:#}"
    );
    let cm = status_configmap();
    let kept = cm["data"]["lastReadyMs.json"].as_str().unwrap_or_default();
    for n in ["certs", "mesh", "canary"] {
        assert!(
            kept.contains(&format!("\"{n}/{n}\"")),
            "{kept}\n{}",
            agent.logs()
        );
    }
    s.repo.write("profiles.yaml", list)?;
    s.repo.commit("the list again")?;
    run_once().await?;
    let status = s.configmap_status().expect("status written");
    for n in ["certs", "mesh", "canary"] {
        assert_eq!(release(&status, n).unwrap()["attempts"], 0, "{status:#}");
    }
    assert_eq!(ready_ms(&status), first);
    let cm = status_configmap();
    assert!(cm["data"].get("lastReadyMs.json").is_none(), "{cm:#}");

    // A status ConfigMap that is not strata's JSON: the agent still applies the revision.
    let mut cm = status_configmap();
    cm["data"]["status.json"] = "{not json".into();
    s.cluster.store().update(&key, cm)?;
    let logs = run_once().await?;
    assert!(
        logs.contains("previous status is not strata's status JSON"),
        "{logs}"
    );
    let status = s.configmap_status().expect("status rewritten");
    assert_eq!(status["phase"], "Ready", "{status:#}");
    assert!(
        ready_ms(&status).iter().all(|(_, ms)| ms.is_none()),
        "{status:#}"
    );
    Ok(())
}

/// Bad revisions: every problem reported, nothing written to the cluster, the previous
/// revision still served, the status names the rejected commit.
#[tokio::test]
async fn bad_revisions_are_rejected_whole() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{greeting: hi}").await?;
    let mut agent = s.agent(&[], &[])?;
    let good = s.repo.head()?;
    agent
        .wait_status("first revision Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    s.cluster.controls().reset_requests();

    // Unknown field, unknown chart version, a missing values file, a duplicate release name.
    let list = layered_profiles(&s.charts.url(), "{greeting: hi}")
        .replace(
            "    namespace: certs\n",
            "    namespace: certs\n    colour: blue\n",
        )
        .replace("version: \"3.0.0\"", "version: \"9.9.9\"")
        + "  - name: extra\n    chart: {repository: platform, name: certs}\n    version: \"1.0.0\"\n    releaseName: mesh\n    namespace: mesh\n    valuesFiles: [values/missing.yaml]\n";
    s.repo.write("profiles.yaml", list)?;
    let bad = s.repo.commit("broken list")?;
    let st = agent
        .wait_status("bad revision rejected", LONG, |st| {
            st["rejectedRevision"]["commit"] == bad.as_str()
        })
        .await?;
    assert_eq!(st["phase"], "Degraded", "{st:#}");
    assert_eq!(
        st["revision"]["commit"],
        good.as_str(),
        "previous revision still served"
    );
    assert_eq!(phase(&st, "canary"), "Ready");
    let problems = st["rejectedRevision"]["problems"].to_string();
    assert!(problems.contains("colour"), "unknown field: {problems}");
    assert!(problems.contains("mesh"), "duplicate release: {problems}");
    assert!(
        st["rejectedRevision"]["problems"].as_array().unwrap().len() >= 2,
        "{problems}"
    );

    // The YAML itself broken: rejected too.
    s.repo.write("profiles.yaml", "apiVersion: [\n")?;
    let broken = s.repo.commit("invalid yaml")?;
    let st = agent
        .wait_status("invalid YAML rejected", LONG, |st| {
            st["rejectedRevision"]["commit"] == broken.as_str()
        })
        .await?;
    assert!(
        st["rejectedRevision"]["problems"][0]["file"] == "profiles.yaml",
        "{st:#}"
    );
    assert_eq!(st["revision"]["commit"], good.as_str());

    let writes: Vec<_> = s
        .writes()
        .into_iter()
        .filter(|r| r.namespace != AGENT_NS)
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect();
    assert!(
        writes.is_empty(),
        "a rejected revision wrote to the cluster: {writes:?}"
    );
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    assert!(
        metrics.contains("strata_revisions_rejected_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("strata_revision_info{{commit=\"{good}\"}} 1")),
        "{metrics}"
    );
    agent.stop().await?;
    Ok(())
}

/// The layered profile list with `remediation: {retries: N}` on the mesh profile.
fn with_mesh_retries(profiles: &str, retries: u32) -> String {
    let out = profiles.replace(
        "    timeout: 20s\n",
        &format!("    timeout: 20s\n    remediation: {{retries: {retries}}}\n"),
    );
    assert_ne!(out, profiles, "the mesh profile has `timeout: 20s`");
    out
}

/// A failing hook in layer 2: layer 3 never starts; status and metrics show helm's message.
async fn failing_hook_stops_layer_3(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{failHook: true}").await?;
    let token_file = s.dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n"))?;
    let mut agent = s.agent(
        &[],
        &[(
            "STRATA_ADMIN_TOKEN_FILE".into(),
            token_file.display().to_string(),
        )],
    )?;
    // The release fails first; the layer, then the agent, say so a moment later.
    let st = agent
        .wait_status("mesh and the agent Failed", LONG, |st| {
            phase(st, "mesh") == "Failed" && st["phase"] == "Failed"
        })
        .await?;
    assert_eq!(phase(&st, "certs"), "Ready");
    assert_eq!(phase(&st, "canary"), "Skipped");
    let message = release(&st, "mesh").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("post-install"),
        "helm's hook message: {message}"
    );
    let canary = release(&st, "canary").unwrap();
    assert!(
        canary["message"].as_str().unwrap().contains("mesh"),
        "{canary:#}"
    );
    assert!(
        !s.writes().iter().any(|r| touches_namespace(r, "canary")),
        "layer 3 must never start"
    );
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    assert!(
        metrics.contains("strata_releases{phase=\"Failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_releases{phase=\"Skipped\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_helm_failures_total{command=\"upgrade\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("strata_release_failures_total 0"),
        "{metrics}"
    );
    // Bounded retries: the next cycles (every second) back off instead of running helm again.
    let st = agent
        .wait_status("mesh backing off", LONG, |st| {
            release(st, "mesh").is_some_and(|r| {
                r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("backing off") || m.starts_with("stalled"))
            })
        })
        .await?;
    let mesh = release(&st, "mesh").unwrap();
    assert_eq!(mesh["attempts"], 1, "no second helm process yet: {mesh:#}");
    assert!(
        mesh["message"].as_str().unwrap().contains("post-install"),
        "the last error is kept: {mesh:#}"
    );
    // Without the token (or with a wrong one) the POST is refused and nothing is retried.
    let (code, body) = http_post(agent.port, "/releases/mesh/mesh/retry").await?;
    assert_eq!(code, 401, "{body}");
    let (code, body) = http_post_bearer(agent.port, "/releases/mesh/mesh/retry", "wrong").await?;
    assert_eq!(code, 401, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, st) = http_get(agent.port, "/status").await?;
    let st: serde_json::Value = serde_json::from_str(&st)?;
    assert_eq!(
        release(&st, "mesh").unwrap()["attempts"],
        1,
        "a refused POST retries nothing: {st:#}"
    );
    // An operator asks for a retry with the token: helm runs again at once (and fails again).
    let (code, body) =
        http_post_bearer(agent.port, "/releases/mesh/mesh/retry", ADMIN_TOKEN).await?;
    assert_eq!(code, 202, "{body}");
    agent
        .wait_status("second attempt", LONG, |st| {
            release(st, "mesh").is_some_and(|r| r["attempts"] == 2 && r["phase"] == "Failed")
        })
        .await?;
    let (code, _) =
        http_post_bearer(agent.port, "/releases/nowhere/none/retry", ADMIN_TOKEN).await?;
    assert_eq!(code, 404);
    let log = agent.log.clone();
    agent.stop().await?;
    assert!(
        !std::fs::read_to_string(log)?.contains(ADMIN_TOKEN),
        "the admin token never appears in the logs"
    );

    // --once exits 1 for the same chart and values once mesh is Stalled: with
    // `remediation.retries: 1` its first failed attempt stalls it (with the default 5 it
    // would be retried on its backoff schedule until the deadline).
    s.repo.write(
        "profiles.yaml",
        with_mesh_retries(&layered_profiles(&s.charts.url(), "{failHook: true}"), 1),
    )?;
    s.repo.commit("mesh: one attempt")?;
    let mut once = s.agent(&["--once"], &[])?;
    let exit = tokio::time::timeout(LONG, once.child.wait()).await??;
    assert_eq!(exit.code(), Some(1), "{}", once.logs());
    Ok(())
}

#[tokio::test]
async fn failing_hook_stops_layer_3_helm4() -> anyhow::Result<()> {
    failing_hook_stops_layer_3(HelmBin::V4).await
}

#[tokio::test]
async fn failing_hook_stops_layer_3_helm3() -> anyhow::Result<()> {
    failing_hook_stops_layer_3(HelmBin::V3).await
}

/// While a slow layer waits, /status shows it Waiting with the not-ready resource named.
#[tokio::test]
async fn slow_layer_shows_waiting_with_the_resource_helm4() -> anyhow::Result<()> {
    slow_layer_shows_waiting_with_the_resource(HelmBin::V4).await
}

#[tokio::test]
async fn slow_layer_shows_waiting_with_the_resource_helm3() -> anyhow::Result<()> {
    slow_layer_shows_waiting_with_the_resource(HelmBin::V3).await
}

async fn slow_layer_shows_waiting_with_the_resource(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{readyAfter: 5s}").await?;
    let mut agent = s.agent(&[], &[])?;
    let st = agent
        .wait_status("mesh Waiting on its Deployment", LONG, |st| {
            phase(st, "mesh") == "Waiting"
                && release(st, "mesh").is_some_and(|r| {
                    r["notReady"].as_array().is_some_and(|n| {
                        n.iter()
                            .any(|o| o["kind"] == "Deployment" && o["name"] == "mesh-control")
                    })
                })
        })
        .await?;
    let mesh = release(&st, "mesh").unwrap();
    let nr = mesh["notReady"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "mesh-control")
        .unwrap();
    assert!(!nr["reason"].as_str().unwrap().is_empty(), "{nr:#}");
    assert_eq!(phase(&st, "certs"), "Ready");
    assert_eq!(phase(&st, "canary"), "Pending");
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    assert!(
        metrics.contains("strata_releases{phase=\"Waiting\"} 1"),
        "{metrics}"
    );
    agent
        .wait_status("all Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    agent.stop().await?;
    Ok(())
}

/// /readyz: not ready before the first revision, ready after; /healthz always.
#[tokio::test]
async fn health_endpoints() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("first revision Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    assert_eq!(http_get(agent.port, "/healthz").await?.0, 200);
    assert_eq!(http_get(agent.port, "/readyz").await?.0, 200);
    let exit = agent.stop().await?;
    assert!(exit.success(), "SIGTERM drains and exits 0: {exit}");
    Ok(())
}

/// A Git outage: the fetch error shows in the status (Degraded) while the applied revision
/// keeps being served; when the server is back, a new commit is applied.
#[tokio::test]
async fn git_outage_keeps_the_applied_revision() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{greeting: hi}").await?;
    let mut agent = s.agent(&[], &[])?;
    let good = s.repo.head()?;
    agent
        .wait_status("first revision Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    s.git.stop();
    let st = agent
        .wait_status("fetch error reported", LONG, |st| {
            st["phase"] == "Degraded" && st["lastError"].is_string()
        })
        .await?;
    assert_eq!(st["revision"]["commit"], good.as_str(), "{st:#}");
    assert_eq!(phase(&st, "mesh"), "Ready");
    assert!(
        !st["lastError"].as_str().unwrap().contains("password"),
        "{st:#}"
    );
    assert_eq!(http_get(agent.port, "/readyz").await?.0, 200);

    s.git.restart().await?;
    let next = s.commit_mesh_values("{greeting: again}", "after the outage")?;
    let st = agent
        .wait_status("new revision applied", LONG, |st| {
            st["phase"] == "Ready" && st["revision"]["commit"] == next.as_str()
        })
        .await?;
    assert!(st.get("lastError").is_none(), "{st:#}");
    agent.stop().await?;
    Ok(())
}

/// SIGTERM drains: /readyz turns 503 at once, the running helm finishes (its release is
/// deployed, not left pending), nothing new starts, and the agent exits 0.
#[tokio::test]
async fn sigterm_drains_without_leaving_pending_releases() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{readyAfter: 5s}").await?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("mesh Waiting", LONG, |st| phase(st, "mesh") == "Waiting")
        .await?;
    let pid = agent.child.id().expect("running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    // Still serving while draining, but not ready.
    let mut saw_draining = false;
    for _ in 0..20 {
        match http_get(agent.port, "/readyz").await {
            Ok((503, body)) if body.contains("draining") => {
                saw_draining = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(saw_draining, "/readyz reports draining");
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert!(exit.success(), "{exit}\n{}", agent.logs());
    let status = s.configmap_status().expect("final status written");
    assert_eq!(phase(&status, "mesh"), "Ready", "{status:#}");
    assert_eq!(phase(&status, "canary"), "Pending", "{status:#}");
    let records = testkit::release::records(&s.cluster, Some("mesh"));
    let release = records.first().expect("mesh release record");
    assert_eq!(release.status, "deployed");
    assert!(
        !s.writes().iter().any(|r| touches_namespace(r, "canary")),
        "nothing new starts while draining"
    );
    Ok(())
}

/// A chart repository outage is not a bad revision: the new commit is neither applied nor
/// rejected, the status says why (Degraded), and it is applied once the repository is back.
#[tokio::test]
async fn chart_repository_outage_is_retried_not_rejected() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{greeting: hi}").await?;
    let mut agent = s.agent(&[], &[])?;
    let good = s.repo.head()?;
    agent
        .wait_status("first revision Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    s.charts.set_failing(true);
    let next = s.commit_mesh_values("{greeting: later}", "while the chart repository is down")?;
    let st = agent
        .wait_status("repository outage reported", LONG, |st| {
            st["phase"] == "Degraded"
                && st["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains(next.as_str()))
        })
        .await?;
    assert!(st.get("rejectedRevision").is_none(), "not rejected: {st:#}");
    assert_eq!(st["revision"]["commit"], good.as_str());
    s.charts.set_failing(false);
    agent
        .wait_status("new revision applied", LONG, |st| {
            st["phase"] == "Ready" && st["revision"]["commit"] == next.as_str()
        })
        .await?;
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    assert!(
        metrics.contains("strata_revisions_rejected_total 0"),
        "{metrics}"
    );
    agent.stop().await?;
    Ok(())
}

/// A release left `pending-install` (helm killed mid-operation) is recovered by the only
/// writer (no leader election): uninstalled, then installed; the layer above follows.
/// (tests/e2e_recovery.rs produces every pending state with a real, killed helm.)
#[tokio::test]
async fn pending_release_is_recovered_and_reported() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    let store = s.cluster.store();
    store.create(
        &kubesim::ResourceKey::new("", "namespaces"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh"}}),
    )?;
    let record = serde_json::json!({
        "name": "mesh", "namespace": "mesh", "version": 1,
        "info": {"status": "pending-install", "description": "Initial install underway"},
        "chart": {"metadata": {"name": "mesh", "version": "2.0.0"}},
        "config": {}, "manifest": ""
    });
    store.create(
        &kubesim::ResourceKey::new("", "secrets"),
        testkit::release::encode(&record)?,
    )?;
    let mut agent = s.agent(&["--once"], &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert_eq!(exit.code(), Some(0), "{}", agent.logs());
    let st = s.configmap_status().expect("status written");
    assert_eq!(phase(&st, "certs"), "Ready", "{st:#}");
    let mesh = release(&st, "mesh").unwrap();
    assert_eq!(mesh["phase"], "Ready", "{mesh:#}");
    assert_eq!(mesh["action"], "recover-pending-install", "{mesh:#}");
    assert_eq!(
        mesh["attempts"], 1,
        "one install after the uninstall: {mesh:#}"
    );
    assert_eq!(
        mesh["lastRecovery"]["kind"], "recover-pending-install",
        "{mesh:#}"
    );
    assert!(
        mesh["lastRecovery"]["message"]
            .as_str()
            .unwrap()
            .contains("pending-install"),
        "{mesh:#}"
    );
    assert_eq!(phase(&st, "canary"), "Ready");
    Ok(())
}

/// `{cluster}` in the profiles path: the name comes from kube-system/kubeadm-config (as
/// Cluster API's kubeadm sets it) and shows in the status; without any name the revision is
/// rejected with a problem saying how to set it.
#[tokio::test]
async fn per_cluster_profile_list_from_the_cluster_api_node_annotation() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    let list = layered_profiles(&s.charts.url(), "{}");
    s.repo.remove("profiles.yaml")?;
    s.repo.write("clusters/edge-7/profiles.yaml", list)?;
    s.repo.commit("per-cluster lists")?;
    // Cluster API annotates every Node (any bootstrap provider); kubeadm's ConfigMap, when
    // there is one too, comes second.
    for (node, annotated) in [("cp-1", true), ("worker-1", true), ("worker-2", false)] {
        let mut meta = serde_json::json!({"name": node});
        if annotated {
            meta["annotations"] = serde_json::json!({"cluster.x-k8s.io/cluster-name": "edge-7"});
        }
        s.cluster.store().create(
            &kubesim::ResourceKey::new("", "nodes"),
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": meta}),
        )?;
    }
    s.cluster.store().create(
        &kubesim::ResourceKey::new("", "configmaps"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": "clusterName: other\n"}
        }),
    )?;
    let mut agent = s.agent(
        &[
            "--once",
            "--profiles-path",
            "clusters/{cluster}/profiles.yaml",
        ],
        &[],
    )?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert!(exit.success(), "{}", agent.logs());
    let st = s.configmap_status().expect("status written");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    assert_eq!(st["revision"]["clusterName"], "edge-7");
    assert_eq!(
        st["revision"]["profilesPath"],
        "clusters/edge-7/profiles.yaml"
    );
    Ok(())
}

#[tokio::test]
async fn per_cluster_profile_list_from_kubeadm_config() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    let list = layered_profiles(&s.charts.url(), "{}");
    s.repo.remove("profiles.yaml")?;
    s.repo.write("clusters/prod-eu/profiles.yaml", list)?;
    s.repo.commit("per-cluster lists")?;
    let path_args = [
        "--once",
        "--profiles-path",
        "clusters/{cluster}/profiles.yaml",
    ];

    // No name anywhere: rejected, nothing installed.
    let mut agent = s.agent(&path_args, &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert_eq!(exit.code(), Some(1), "{}", agent.logs());
    let st = s.configmap_status().expect("status written");
    assert_eq!(st["phase"], "Invalid", "{st:#}");
    let problems = st["rejectedRevision"]["problems"].to_string();
    assert!(problems.contains("STRATA_CLUSTER_NAME"), "{problems}");

    // kubeadm's ConfigMap names the cluster.
    s.cluster.store().create(
        &kubesim::ResourceKey::new("", "configmaps"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nclusterName: prod-eu\n"}
        }),
    )?;
    let mut agent = s.agent(&path_args, &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert!(exit.success(), "{}", agent.logs());
    let st = s.configmap_status().expect("status written");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    assert_eq!(st["revision"]["clusterName"], "prod-eu");
    assert_eq!(
        st["revision"]["profilesPath"],
        "clusters/prod-eu/profiles.yaml"
    );

    // --cluster-name wins (and a cluster without a list is a clear problem).
    let mut agent = s.agent(
        &[&path_args[..], &["--cluster-name", "staging"]].concat(),
        &[],
    )?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert_eq!(exit.code(), Some(1));
    let st = s.configmap_status().expect("status written");
    assert!(
        st["rejectedRevision"]["problems"]
            .to_string()
            .contains("clusters/staging/profiles.yaml"),
        "{st:#}"
    );
    Ok(())
}

/// --leader-elect: of two agents only the Lease holder applies; the standby serves /status
/// (not ready) and takes over when the leader stops, without reinstalling anything.
#[tokio::test]
async fn leader_election_one_active_agent() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    let mut a = s.agent_in("a", &["--leader-elect"], &[])?;
    let st = a
        .wait_status("a leads and applies", LONG, |st| {
            st["phase"] == "Ready" && st["leader"]["leading"] == true
        })
        .await?;
    let a_identity = st["leader"]["identity"].as_str().unwrap().to_string();
    let mut b = s.agent_in("b", &["--leader-elect"], &[])?;
    let st = b
        .wait_status("b is a standby", LONG, |st| {
            st["leader"]["holder"] == a_identity.as_str()
        })
        .await?;
    assert_eq!(st["leader"]["leading"], false, "{st:#}");
    assert_eq!(st["phase"], "Starting", "a standby applies nothing: {st:#}");
    assert_eq!(http_get(b.port, "/readyz").await?.0, 503);

    s.cluster.controls().reset_requests();
    let exit = a.stop().await?;
    assert!(exit.success(), "{exit}");
    let st = b
        .wait_status("b takes over", LONG, |st| {
            st["leader"]["leading"] == true && st["phase"] == "Ready"
        })
        .await?;
    for name in ["certs", "mesh", "canary"] {
        let r = release(&st, name).unwrap();
        assert_eq!(r["action"], "none", "no reinstall by the new leader: {r:#}");
        assert_eq!(r["helmRevision"], 1, "{r:#}");
    }
    let foreign: Vec<_> = s
        .writes()
        .into_iter()
        .filter(|r| r.namespace != AGENT_NS)
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect();
    assert!(foreign.is_empty(), "{foreign:?}");
    b.stop().await?;
    Ok(())
}

/// Bad settings are all reported at once, before the status API binds its port (held here,
/// so binding first would fail differently) or a cluster is contacted; exit 2.
#[tokio::test]
async fn bad_settings_are_reported_together_before_binding() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let listen = taken.local_addr()?.to_string();
    let token = dir.path().join("no-such-token");
    let helm = dir.path().join("no-such-helm");
    let run = testkit::agent::run_strata(
        testkit::strata_bin!(),
        &[
            "run",
            "--git-url",
            "https://git.invalid/platform.git",
            "--listen",
            &listen,
            "--kubeconfig",
            &dir.path().join("no-kubeconfig").display().to_string(),
            "--work-dir",
            &dir.path().join("work").display().to_string(),
            "--admin-token-file",
            &token.display().to_string(),
            "--helm",
            &helm.display().to_string(),
        ],
        &[],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("the configuration has 2 problem(s)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "cannot read the admin token file {}",
            token.display()
        )) && run
            .stderr
            .contains("fix --admin-token-file (STRATA_ADMIN_TOKEN_FILE)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "helm binary {} does not exist; fix --helm (STRATA_HELM)",
            helm.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cannot listen"), "{}", run.stderr);
    drop(taken);
    Ok(())
}
