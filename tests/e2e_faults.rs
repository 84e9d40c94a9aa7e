//! The agent against a faulty world (real helm 4, real Git server and chart repository,
//! kubesim): 10% API errors on reads and writes with latency spikes and cut watches, a chart
//! repository failing on the first install, the Git server going away mid-run, and 500s on
//! the writes of an upgrade whose remediation is `uninstall`. Each time the stack converges
//! (nothing uninstalled); outages show as Degraded with their cause, then recover.

use std::time::{Duration, Instant};

use kubesim::ErrorRule;
use testkit::agent::{phase, release};
use testkit::chaos::seed_from_env;
use testkit::cluster::touches_namespace;
use testkit::release::{latest, pending};
use testkit::scenario::stack_converged;
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(120);

/// 10% of API reads and writes fail (most with 429/503 and Retry-After as a busy API server
/// answers, a few plain 500s and dropped connections), latency spikes come and go and every
/// watch is cut every 700 ms: the stack still converges, all deployed, none pending.
async fn converges_under_api_faults(helm: HelmBin) -> anyhow::Result<()> {
    let seed = seed_from_env("STRATA_FAULT_SEED");
    eprintln!("faults: seed {seed} (replay with STRATA_FAULT_SEED={seed})");
    let s = Scenario::builder(strata_bin!())
        .helm(helm)
        .mesh_values("{readyAfter: 1s}")
        .kubesim(kubesim::Config {
            fault_seed: seed,
            ..kubesim::Config::default()
        })
        .start()
        .await?;
    let c = s.cluster.controls();
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        let v = Some(verb.to_string());
        // 10% in all: 5% 429, 4% 503 (both with Retry-After), 1% 500 or a dropped
        // connection, the last two a bounded number of times (helm does not retry them).
        c.add_error(ErrorRule {
            verb: v.clone(),
            rate: 0.05,
            code: 429,
            retry_after_seconds: Some(1),
            ..ErrorRule::default()
        });
        c.add_error(ErrorRule {
            verb: v.clone(),
            rate: 0.04,
            code: 503,
            retry_after_seconds: Some(1),
            ..ErrorRule::default()
        });
        c.add_error(ErrorRule {
            verb: v.clone(),
            rate: 0.005,
            code: 500,
            times: Some(2),
            ..ErrorRule::default()
        });
        c.add_error(ErrorRule {
            verb: v,
            rate: 0.005,
            code: 0,
            times: Some(1),
            ..ErrorRule::default()
        });
    }
    // Latency spikes and cut watches, until the test ends.
    let stop = tokio_util::sync::CancellationToken::new();
    let chaos = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = 0u64;
            while !stop.is_cancelled() {
                if tick % 4 == 3 {
                    c.set_latency(Duration::from_millis(300), Duration::from_millis(300));
                } else {
                    c.set_latency(Duration::from_millis(2), Duration::from_millis(20));
                }
                c.cut_watches();
                tick += 1;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };
    let t0 = Instant::now();
    let mut agent = s.agent(&[], &[])?;
    let result = agent
        .wait_status("stack Ready under faults", LONG, |st| {
            st["phase"] == "Ready" && stack_converged(&s.cluster)
        })
        .await;
    stop.cancel();
    chaos.await?;
    let took = t0.elapsed();
    let counts = c.counts();
    let injected: u64 = counts
        .by_code
        .iter()
        .filter(|(code, _)| matches!(**code, 0 | 429 | 500 | 503))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "faults ({helm:?}): converged={} in {took:?}; {} requests, {injected} failed by \
         injection ({:?})",
        result.is_ok(),
        counts.total,
        counts.by_code
    );
    let st = result?;
    assert!(pending(&s.cluster).is_empty(), "{:?}", latest(&s.cluster));
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }
    // About 10% of the matching requests fail (each rule rolls on its own); with ~150
    // requests the count varies, so only require that faults really were injected.
    assert!(
        injected >= 3,
        "faults were injected: {injected} of {} requests",
        counts.total
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn converges_under_api_faults_helm4() -> anyhow::Result<()> {
    converges_under_api_faults(HelmBin::V4).await
}

#[tokio::test]
async fn converges_under_api_faults_helm3() -> anyhow::Result<()> {
    converges_under_api_faults(HelmBin::V3).await
}

/// The chart repository fails from the start: Degraded with the cause, nothing installed;
/// once it answers the stack installs. The Git server is stopped while layer 2 installs: the
/// fetched revision still completes, then Degraded with the fetch error; when Git is back a
/// new commit is applied and the error clears.
#[tokio::test]
async fn chart_repository_errors_then_git_outage_mid_run() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{readyAfter: 3s}").await?;
    let first = s.repo.head()?;
    s.charts.set_failing(true);
    let mut agent = s.agent(&[], &[])?;
    let st = agent
        .wait_status("chart repository errors reported", LONG, |st| {
            st["phase"] == "Degraded" && st["lastError"].is_string()
        })
        .await?;
    let cause = st["lastError"].as_str().unwrap().to_string();
    eprintln!("chart repository failing -> Degraded: {cause}");
    assert!(cause.contains(first.as_str()), "names the revision: {st:#}");
    assert!(
        !s.writes().iter().any(|r| ["certs", "mesh", "canary"]
            .iter()
            .any(|n| touches_namespace(r, n))),
        "nothing installed while the charts cannot be fetched"
    );
    let outage = Instant::now();
    s.charts.set_failing(false);
    agent
        .wait_status("mesh installing", LONG, |st| phase(st, "mesh") == "Waiting")
        .await?;
    eprintln!(
        "chart repository back: installing after {:?}",
        outage.elapsed()
    );

    s.git.stop();
    let st = agent
        .wait_status("the fetched revision completes", LONG, |st| {
            phase(st, "canary") == "Ready"
        })
        .await?;
    assert_eq!(st["revision"]["commit"], first.as_str(), "{st:#}");
    let st = agent
        .wait_status("git outage reported", LONG, |st| {
            st["phase"] == "Degraded" && st["lastError"].is_string()
        })
        .await?;
    eprintln!("git stopped -> Degraded: {}", st["lastError"]);
    assert_eq!(st["revision"]["commit"], first.as_str(), "{st:#}");
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }
    assert!(stack_converged(&s.cluster));

    s.git.restart().await?;
    let next = s.commit_mesh_values("{readyAfter: 200ms, greeting: back}", "after the outage")?;
    let back = Instant::now();
    let st = agent
        .wait_status("new revision applied", LONG, |st| {
            st["phase"] == "Ready" && st["revision"]["commit"] == next.as_str()
        })
        .await?;
    eprintln!("git back: new revision Ready after {:?}", back.elapsed());
    assert!(st.get("lastError").is_none(), "{st:#}");
    assert_eq!(release(&st, "mesh").unwrap()["helmRevision"], 2, "{st:#}");
    assert!(stack_converged(&s.cluster));
    agent.stop().await?;
    Ok(())
}

/// The API server goes away (connections refused) for 5 s while layer 2 installs: helm fails
/// mid-operation, and once the API is back the agent converges, all deployed, none pending.
#[tokio::test]
async fn api_outage_mid_install_converges() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{readyAfter: 2s}").await?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("mesh installing", LONG, |st| phase(st, "mesh") == "Waiting")
        .await?;
    let outage = Duration::from_secs(5);
    s.cluster
        .controls()
        .unavailable_for(outage, kubesim::UnavailableMode::Refuse);
    let t0 = Instant::now();
    tokio::time::sleep(outage).await;
    let st = agent
        .wait_status("stack Ready after the outage", LONG, |st| {
            st["phase"] == "Ready" && stack_converged(&s.cluster)
        })
        .await?;
    eprintln!(
        "API outage of {outage:?} mid-install: converged {:?} after it began; mesh: {}",
        t0.elapsed(),
        release(&st, "mesh").unwrap()
    );
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }
    agent.stop().await?;
    Ok(())
}

/// The API server is gone for longer than mesh's helm timeout (4 s) while mesh installs:
/// helm gives up and cannot even record the failure, leaving mesh pending-install. When the
/// API is back the agent recovers the release and converges.
#[tokio::test]
async fn api_outage_longer_than_the_helm_timeout_is_recovered() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{readyAfter: 2s}").await?;
    let profiles = testkit::scenario::layered_profiles(&s.charts.url(), "{readyAfter: 2s}")
        .replace("timeout: 20s", "timeout: 4s");
    assert!(profiles.contains("timeout: 4s"));
    s.repo.write("profiles.yaml", profiles)?;
    s.repo.commit("mesh times out after 4s")?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("mesh installing", LONG, |st| phase(st, "mesh") == "Waiting")
        .await?;
    let outage = Duration::from_secs(8);
    s.cluster
        .controls()
        .unavailable_for(outage, kubesim::UnavailableMode::Refuse);
    let t0 = Instant::now();
    tokio::time::sleep(outage).await;
    let left = pending(&s.cluster);
    let st = agent
        .wait_status("stack Ready after the outage", LONG, |st| {
            st["phase"] == "Ready" && stack_converged(&s.cluster)
        })
        .await?;
    let mesh = release(&st, "mesh").unwrap();
    eprintln!(
        "API outage of {outage:?} mid-install: left {left:?}; converged {:?} after it began; \
         mesh: {mesh}",
        t0.elapsed()
    );
    assert!(
        left.iter()
            .any(|r| r.starts_with("mesh/") && r.ends_with("pending-install")),
        "the outage left mesh pending-install: {left:?}"
    );
    assert_eq!(
        mesh["lastRecovery"]["kind"], "recover-pending-install",
        "{mesh:#}"
    );
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }
    agent.stop().await?;
    Ok(())
}

/// mesh has `remediation: {strategy: uninstall}`. An upgrade of mesh meets HTTP 500s on the
/// writes helm does for it (its new release record, the Deployment it changes): the API
/// failing is not the release failing, so the steps are repeated in place and nothing is
/// uninstalled: mesh's history keeps its first revision, no release record or Deployment of
/// mesh is deleted, and mesh ends Ready at the new values.
async fn uninstall_remediation_is_not_triggered_by_api_500s(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{greeting: before}").await?;
    let uninstall = |values: &str| {
        let p = testkit::scenario::layered_profiles(&s.charts.url(), values).replace(
            "    timeout: 20s\n",
            "    timeout: 20s\n    remediation: {strategy: uninstall}\n",
        );
        assert!(p.contains("strategy: uninstall"));
        p
    };
    s.repo
        .write("profiles.yaml", uninstall("{greeting: before}"))?;
    s.repo.commit("mesh: remediation uninstall")?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("stack Ready", LONG, |st| {
            st["phase"] == "Ready" && stack_converged(&s.cluster)
        })
        .await?;
    let installed = testkit::release::history(&s.cluster, "mesh", "mesh");
    assert_eq!(installed, [(1, "deployed".to_string())]);

    // The upgrade's writes fail: the new release record once, the Deployment patch twice.
    let c = s.cluster.controls();
    c.reset_requests();
    c.apply_spec(&kubesim::FaultSpec {
        errors: vec![
            ErrorRule {
                verb: Some("create".into()),
                resource: Some("secrets".into()),
                code: 500,
                times: Some(1),
                ..ErrorRule::default()
            },
            ErrorRule {
                verb: Some("patch".into()),
                resource: Some("deployments".into()),
                code: 500,
                times: Some(2),
                ..ErrorRule::default()
            },
        ],
        ..kubesim::FaultSpec::default()
    });
    s.repo
        .write("profiles.yaml", uninstall("{greeting: after}"))?;
    let next = s.repo.commit("mesh: new greeting")?;
    let st = agent
        .wait_status("mesh upgraded", LONG, |st| {
            st["phase"] == "Ready"
                && st["revision"]["commit"] == next.as_str()
                && stack_converged(&s.cluster)
        })
        .await?;
    let mesh = release(&st, "mesh").unwrap().clone();
    let history = testkit::release::history(&s.cluster, "mesh", "mesh");
    let injected = c.counts().by_code.get(&500).copied().unwrap_or(0);
    eprintln!(
        "500s during mesh's upgrade ({helm:?}): {injected} injected; history {history:?}; mesh: {mesh}"
    );
    assert!(injected >= 2, "the faults fired: {injected}");
    assert!(
        mesh["transientRetries"].as_u64().unwrap_or(0) >= 1,
        "repeated in place: {mesh:#}"
    );
    assert!(
        mesh.get("lastRemediation").is_none(),
        "no remediation: {mesh:#}"
    );
    // Not uninstalled: the first revision is still there, the newest is deployed.
    assert_eq!(
        history.first(),
        Some(&(1, "superseded".to_string())),
        "{history:?}"
    );
    assert_eq!(
        history.last().map(|(_, s)| s.as_str()),
        Some("deployed"),
        "{history:?}"
    );
    let deletes: Vec<String> = c
        .requests_where(|r| {
            r.verb == "delete"
                && ((r.resource == "secrets" && r.name.starts_with("sh.helm.release.v1.mesh."))
                    || (r.namespace == "mesh" && r.resource == "deployments")
                    || (r.resource == "namespaces" && r.name == "mesh"))
        })
        .iter()
        .map(|r| format!("{} {}/{}", r.resource, r.namespace, r.name))
        .collect();
    assert!(deletes.is_empty(), "nothing of mesh deleted: {deletes:?}");
    assert!(
        !agent.logs().contains("\"uninstall\""),
        "no helm uninstall ran:\n{}",
        agent.logs()
    );
    let deployment = s
        .cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("apps", "deployments"),
            Some("mesh"),
            "mesh-control",
        )
        .expect("mesh's Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"], "after",
        "the new values are deployed"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn uninstall_remediation_is_not_triggered_by_api_500s_helm4() -> anyhow::Result<()> {
    uninstall_remediation_is_not_triggered_by_api_500s(HelmBin::V4).await
}

#[tokio::test]
async fn uninstall_remediation_is_not_triggered_by_api_500s_helm3() -> anyhow::Result<()> {
    uninstall_remediation_is_not_triggered_by_api_500s(HelmBin::V3).await
}
