//! Two `strata run --leader-elect` agents against one simulated cluster (real helm 4, real Git
//! server): only the Lease holder runs helm writes, never two helm writes on the same release
//! at once, and when the leader is SIGKILLed (with its helm, as a container dies) the other
//! takes over and finishes the stack.
//!
//! Each agent runs helm through a wrapper script that journals `start/end <agent> <time> <pid>
//! <args>`, so every helm process is attributed to its agent; the cluster side is checked from
//! kubesim's request log (writes on helm's release Secrets, no conflicting concurrent create).

use std::time::{Duration, Instant};

use testkit::agent::{Agent, http_get, phase, release, set_arg};
use testkit::chaos::{HelmRun, helm_wrapper, now_ns, read_journal};
use testkit::scenario::stack_converged;
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(120);

struct Pair {
    s: Scenario,
    journal: std::path::PathBuf,
    agents: Vec<(String, Agent)>,
}

/// Start agents `a` and `b` with `--leader-elect`, each with its own work dir, helm going
/// through the journaling wrapper.
async fn start_pair(mesh_values: &str) -> anyhow::Result<Pair> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, mesh_values).await?;
    let journal = s.dir.path().join("helm-journal.log");
    let mut agents = Vec::new();
    for who in ["a", "b"] {
        let wrapper = helm_wrapper(s.dir.path(), who, &HelmBin::V4.path(), &journal)?;
        let mut args = s.args(&["--leader-elect"]);
        set_arg(&mut args, "--helm", wrapper.display().to_string());
        set_arg(
            &mut args,
            "--work-dir",
            s.dir
                .path()
                .join(format!("work-{who}"))
                .display()
                .to_string(),
        );
        let env = [("POD_NAME".to_string(), format!("agent-{who}"))];
        let agent = Agent::start_in_group(
            &s.strata,
            &args,
            &env,
            s.dir.path().join(format!("agent-{who}.log")),
        )?;
        agents.push((who.to_string(), agent));
    }
    Ok(Pair { s, journal, agents })
}

/// Index of the agent whose status says it leads (waits up to `LONG`).
async fn leader_of(p: &Pair) -> anyhow::Result<usize> {
    let start = Instant::now();
    while start.elapsed() < LONG {
        for (i, (_, a)) in p.agents.iter().enumerate() {
            if let Some(st) = a.status().await
                && st["leader"]["leading"] == true
            {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no agent became leader within {LONG:?}")
}

/// Helm write processes on the same release by different agents never overlap in time; a
/// process that never finished (killed) lasts until its agent's kill time.
fn assert_no_overlapping_writes(runs: &[HelmRun], killed: &[(String, u128)]) {
    let end_of = |r: &HelmRun| {
        r.end_ns.unwrap_or_else(|| {
            killed
                .iter()
                .find(|(w, _)| *w == r.who)
                .map(|(_, t)| *t)
                .unwrap_or(u128::MAX)
        })
    };
    let writes: Vec<(&HelmRun, String)> = runs
        .iter()
        .filter_map(|r| r.write_target().map(|t| (r, t)))
        .collect();
    for (i, (x, tx)) in writes.iter().enumerate() {
        for (y, ty) in &writes[i + 1..] {
            if tx != ty || x.who == y.who {
                continue;
            }
            let overlap = x.start_ns < end_of(y) && y.start_ns < end_of(x);
            assert!(
                !overlap,
                "two helm writes on release {tx} at once: {x:?} and {y:?}"
            );
        }
    }
}

/// No create of a helm release Secret was refused as a conflict (two helms racing on one
/// revision), from kubesim's request log.
fn assert_no_release_secret_conflicts(s: &Scenario) {
    let conflicts = s.cluster.controls().requests_where(|r| {
        r.resource == "secrets" && r.name.starts_with("sh.helm.release.") && r.code == 409
    });
    assert!(
        conflicts.is_empty(),
        "conflicting writes on release records: {conflicts:#?}"
    );
}

/// The leader is SIGKILLed while layer 2 is mid-install (its helm dies too, leaving the
/// release pending-install); the standby takes over after the Lease expires, recovers the
/// release and finishes the stack.
#[tokio::test]
async fn leader_killed_mid_install_standby_finishes_the_stack() -> anyhow::Result<()> {
    let mut p = start_pair("{readyAfter: 4s}").await?;
    let li = leader_of(&p).await?;
    let fi = 1 - li;
    let leader_name = p.agents[li].0.clone();
    p.agents[li]
        .1
        .wait_status("mesh Waiting", LONG, |st| phase(st, "mesh") == "Waiting")
        .await?;
    // The follower ran no helm write so far.
    let follower_name = p.agents[fi].0.clone();
    let runs = read_journal(&p.journal);
    assert!(
        runs.iter()
            .all(|r| r.who != follower_name || r.write_target().is_none()),
        "the standby ran helm writes: {runs:#?}"
    );
    p.agents[li].1.kill_tree().await?;
    let killed_at = now_ns();
    let t0 = Instant::now();
    // The kill left helm's record of the interrupted install behind.
    let pending = testkit::release::pending(&p.s.cluster);
    eprintln!("killed leader {leader_name} while mesh was installing; left: {pending:?}");
    assert!(
        pending.iter().any(|r| r.starts_with("mesh/")),
        "mesh left pending by the kill: {:?}",
        testkit::release::latest(&p.s.cluster)
    );

    let st = p.agents[fi]
        .1
        .wait_status("the standby leads and the stack is Ready", LONG, |st| {
            st["leader"]["leading"] == true && st["phase"] == "Ready"
        })
        .await?;
    eprintln!(
        "failover: {follower_name} finished the stack {:?} after the kill",
        t0.elapsed()
    );
    // The new leader recovered mesh (uninstall, then install) and says so.
    let mesh = release(&st, "mesh").unwrap();
    assert_eq!(
        mesh["lastRecovery"]["kind"], "recover-pending-install",
        "{mesh:#}"
    );
    let (_, metrics) = http_get(p.agents[fi].1.port, "/metrics").await?;
    assert!(
        metrics.contains(
            "strata_recoveries_total{kind=\"recover-pending-install\",outcome=\"succeeded\"} 1"
        ),
        "{metrics}"
    );
    let mesh_writes: Vec<String> = read_journal(&p.journal)
        .into_iter()
        .filter(|r| r.who == follower_name && r.write_target().as_deref() == Some("mesh"))
        .map(|r| r.args[0].clone())
        .collect();
    assert_eq!(
        mesh_writes,
        ["uninstall", "upgrade"],
        "{follower_name}'s helm writes on mesh"
    );
    assert!(
        stack_converged(&p.s.cluster),
        "pending: {:?}",
        testkit::release::pending(&p.s.cluster)
    );
    let runs = read_journal(&p.journal);
    assert_no_overlapping_writes(&runs, &[(leader_name.clone(), killed_at)]);
    assert!(
        runs.iter()
            .filter(|r| r.who == follower_name && r.write_target().is_some())
            .all(|r| r.start_ns > killed_at),
        "{follower_name} wrote before the leader died: {runs:#?}"
    );
    assert_no_release_secret_conflicts(&p.s);
    Ok(())
}

/// The leader installs the stack while the other waits; the leader is SIGKILLed; a new
/// revision is committed: the former standby takes the Lease and applies it. Helm write
/// processes of the two agents never overlap on a release, and only the Lease holder writes.
#[tokio::test]
async fn leader_killed_standby_applies_the_next_revision() -> anyhow::Result<()> {
    let mut p = start_pair("{greeting: one}").await?;
    let li = leader_of(&p).await?;
    let fi = 1 - li;
    let (leader_name, follower_name) = (p.agents[li].0.clone(), p.agents[fi].0.clone());
    p.agents[li]
        .1
        .wait_status("stack Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    let st = p.agents[fi]
        .1
        .wait_status("the other is a standby", LONG, |st| {
            st["leader"]["holder"].is_string()
        })
        .await?;
    assert_eq!(st["leader"]["leading"], false, "{st:#}");
    let runs = read_journal(&p.journal);
    let writes_by = |runs: &[HelmRun], who: &str| {
        runs.iter()
            .filter(|r| r.who == who && r.write_target().is_some())
            .count()
    };
    assert!(writes_by(&runs, &leader_name) >= 3, "{runs:#?}");
    assert_eq!(writes_by(&runs, &follower_name), 0, "{runs:#?}");

    p.agents[li].1.kill_tree().await?;
    let killed_at = now_ns();
    let t0 = Instant::now();
    let next =
        p.s.commit_mesh_values("{greeting: two}", "after the leader died")?;
    let st = p.agents[fi]
        .1
        .wait_status(
            "the standby leads and applies the new revision",
            LONG,
            |st| {
                st["leader"]["leading"] == true
                    && st["phase"] == "Ready"
                    && st["revision"]["commit"] == next.as_str()
            },
        )
        .await?;
    eprintln!(
        "failover: {follower_name} took over from {leader_name} and applied {next} in {:?}",
        t0.elapsed()
    );
    let mesh = release(&st, "mesh").unwrap();
    assert_eq!(mesh["helmRevision"], 2, "{mesh:#}");
    assert!(stack_converged(&p.s.cluster));
    let runs = read_journal(&p.journal);
    assert!(writes_by(&runs, &follower_name) >= 1, "{runs:#?}");
    assert!(
        runs.iter()
            .filter(|r| r.who == follower_name && r.write_target().is_some())
            .all(|r| r.start_ns > killed_at),
        "{follower_name} wrote before the leader died: {runs:#?}"
    );
    assert_no_overlapping_writes(&runs, &[(leader_name, killed_at)]);
    assert_no_release_secret_conflicts(&p.s);
    p.agents.remove(fi).1.stop().await?;
    Ok(())
}
