//! Chaos: the `strata` binary installing the three-layer stack (real helm 4, real Git server,
//! real chart repository, kubesim) is SIGKILLed at random moments, together with any helm it
//! runs (its process group, as a container dies), and restarted. Every run must converge to
//! all releases deployed and none pending, with no human action.
//!
//! Seeded: the seed is printed; `STRATA_CHAOS_SEED=<u64>` replays a run set,
//! `STRATA_CHAOS_RUNS=<n>` changes the number of runs (default 20). Figures (runs, kills,
//! recoveries by kind from the agents' /metrics, time to converge min/median/max) are printed
//! with `eprintln!` (`--nocapture` shows them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testkit::agent::{Agent, agent_args};
use testkit::chaos::{Rng, millis, min_median_max, recovery_samples, seed_from_env};
use testkit::release::{latest, pending};
use testkit::scenario::{layered_charts, layered_profiles, stack_converged};
use testkit::{HelmBin, strata_bin};

/// Per run: how long the last (unkilled) agent may take to converge.
const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sigkilled_agent_always_converges_helm4() -> anyhow::Result<()> {
    chaos(HelmBin::V4, 20).await
}

/// The same with helm 3 (fewer runs by default: the helm 4 test is the long one).
#[tokio::test]
async fn sigkilled_agent_always_converges_helm3() -> anyhow::Result<()> {
    chaos(HelmBin::V3, 4).await
}

async fn chaos(helm: HelmBin, default_runs: usize) -> anyhow::Result<()> {
    let seed = seed_from_env("STRATA_CHAOS_SEED");
    let runs: usize = std::env::var("STRATA_CHAOS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_runs);
    eprintln!("chaos ({helm:?}): seed {seed} (replay with STRATA_CHAOS_SEED={seed}), {runs} runs");
    let mut rng = Rng::seeded(seed);

    // Shared across runs: the chart repository and the Git server (the profiles do not
    // change); each run gets a fresh cluster and work dir.
    let dir = tempfile::tempdir()?;
    let chart_dirs = layered_charts(&dir.path().join("charts"))?;
    let refs: Vec<&std::path::Path> = chart_dirs.iter().map(|d| d.as_path()).collect();
    let charts = testkit::ChartRepo::with_charts(&testkit::tools().helm4, &refs).await?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("platform")?;
    // mesh waits 1 s for its Deployment: kills land during pulls, installs, hooks and waits.
    repo.write(
        "profiles.yaml",
        layered_profiles(&charts.url(), "{readyAfter: 1s}"),
    )?;
    repo.commit("layered platform")?;

    let mut kills = 0usize;
    let mut converge_times = Vec::new();
    let mut recoveries: BTreeMap<String, f64> = BTreeMap::new();
    let mut pending_seen = 0usize;
    let mut pending_kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut restart_times = Vec::new();
    let total = Instant::now();
    for run in 0..runs {
        let kubeconfig = dir.path().join(format!("kubeconfig-{run}"));
        let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
        let args = agent_args(
            &git.http_url("platform"),
            &kubeconfig,
            &helm.path(),
            &dir.path().join(format!("work-{run}")),
        );
        let log = dir.path().join(format!("agent-{run}.log"));
        // Every run installs the stack under kills; every other run then upgrades mesh under
        // kills too (pending-upgrade).
        let mut phases = vec![("install", None)];
        if run % 2 == 1 {
            phases.push((
                "upgrade",
                Some(format!("{{readyAfter: 1s, greeting: run-{run}}}")),
            ));
        }
        for (what, values) in phases {
            let commit = match values {
                Some(v) => {
                    repo.write("profiles.yaml", layered_profiles(&charts.url(), &v))?;
                    Some(repo.commit(&format!("run {run}: upgrade mesh"))?)
                }
                None => None,
            };
            let kills_this_run = 1 + (rng.next_u64() % 3) as usize;
            let started = Instant::now();
            let mut kill_at = Vec::new();
            let mut restarted = Instant::now();
            for _ in 0..kills_this_run {
                let mut agent = Agent::start_in_group(strata_bin!(), &args, &[], log.clone())?;
                let wait = millis(&mut rng, 100, 2500);
                tokio::time::sleep(wait).await;
                // Count what this process recovered before it dies.
                if let Some(m) = agent.metrics().await {
                    for (k, v) in recovery_samples(&m) {
                        *recoveries.entry(k).or_default() += v;
                    }
                }
                agent.kill_tree().await?;
                kills += 1;
                kill_at.push(wait);
                let p = pending(&cluster);
                pending_seen += p.len();
                for rec in p {
                    let st = rec.rsplit(' ').next().unwrap_or("").to_string();
                    *pending_kinds.entry(st).or_default() += 1;
                }
                restarted = Instant::now();
            }
            let mut agent = Agent::start_in_group(strata_bin!(), &args, &[], log.clone())?;
            let deadline = Instant::now() + CONVERGE;
            let mut converged = false;
            while Instant::now() < deadline {
                if stack_converged(&cluster)
                    && agent.status().await.is_some_and(|st| {
                        st["phase"] == "Ready"
                            && commit
                                .as_ref()
                                .is_none_or(|c| st["revision"]["commit"] == c.as_str())
                    })
                {
                    converged = true;
                    break;
                }
                if let Ok(Some(exit)) = agent.child.try_wait() {
                    anyhow::bail!(
                        "run {run} {what} (seed {seed}): strata exited ({exit})\nlog:\n{}",
                        agent.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !converged {
                anyhow::bail!(
                    "run {run} {what} (seed {seed}, kills after {kill_at:?}): not converged \
                     within {CONVERGE:?}: releases {:?}, pending {:?}\nstatus: {}\nlog:\n{}",
                    latest(&cluster),
                    pending(&cluster),
                    agent.status().await.unwrap_or_default(),
                    agent.logs()
                );
            }
            let took = started.elapsed();
            let after_restart = restarted.elapsed();
            converge_times.push(took);
            restart_times.push(after_restart);
            if let Some(m) = agent.metrics().await {
                for (k, v) in recovery_samples(&m) {
                    *recoveries.entry(k).or_default() += v;
                }
            }
            eprintln!(
                "chaos run {run} {what}: {kills_this_run} kill(s) after {kill_at:?}, converged \
                 in {took:?} ({after_restart:?} after the last restart)"
            );
            agent.stop().await?;
        }
        cluster.shutdown().await;
    }
    let (min, median, max) = min_median_max(&converge_times);
    eprintln!("chaos figures ({helm:?}, seed {seed}):");
    eprintln!(
        "  runs: {runs} ({runs} install and {} upgrade phases), kills: {kills}, total time {:?}",
        runs / 2,
        total.elapsed()
    );
    eprintln!(
        "  pending release records seen right after a kill: {pending_seen} {pending_kinds:?}"
    );
    if recoveries.is_empty() {
        eprintln!("  recoveries: none reported in /metrics");
    }
    for (k, v) in &recoveries {
        eprintln!("  recoveries {k}: {v}");
    }
    eprintln!(
        "  time to converge (first start to all deployed): min {min:?}, median {median:?}, max {max:?}"
    );
    let (min, median, max) = min_median_max(&restart_times);
    eprintln!(
        "  time to converge after the last restart: min {min:?}, median {median:?}, max {max:?}"
    );
    assert_eq!(
        converge_times.len(),
        runs + runs / 2,
        "every phase converged"
    );
    assert!(kills >= runs, "at least one kill per run");
    Ok(())
}
