//! Retries on the release backoff schedule and `strata run --once` until done, end to end
//! (real helm 4, real Git server and chart repository, kubesim):
//!
//! - a release that fails once is retried when its backoff ends, not at the next `--interval`
//!   poll (10 minutes here), re-applying the same revision without fetching Git;
//! - `--once` keeps cycling through API errors and exits 0 when every layer is Ready;
//! - `--once --once-timeout` exits 2 soon after its deadline when a release never becomes
//!   Ready;
//! - `--once` exits 1 when a release is Stalled by a permanent error (an invalid template).

use std::time::{Duration, Instant};

use kubesim::{ErrorRule, FaultSpec};
use testkit::agent::{phase, release};
use testkit::scenario::{layered_profiles, stack_converged};
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(120);

/// The first write of a Deployment is refused (403, as an admission webhook or a quota would),
/// so certs' install fails once, for a reason that is not an API outage: a counted failure with
/// a backoff of 10 to 30 s. With `--interval 10m` the next poll is far away; the retry cycle
/// starts when the backoff ends, applies the same revision again without fetching Git, and the
/// whole stack is Ready well before the poll.
#[tokio::test]
async fn a_failed_release_is_retried_when_its_backoff_ends_not_at_the_next_poll()
-> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    let c = s.cluster.controls();
    // helm writes a new object with create (or with a server-side apply patch): the first of
    // either is refused, once.
    for verb in ["create", "patch"] {
        c.add_error(ErrorRule {
            verb: Some(verb.into()),
            resource: Some("deployments".into()),
            code: 403,
            times: Some(1),
            ..ErrorRule::default()
        });
    }
    let mut args = s.args(&[]);
    testkit::agent::set_arg(&mut args, "--interval", "10m");
    let mut agent = testkit::Agent::start(
        &s.strata,
        &args,
        &[],
        s.dir.path().join("agent-backoff.log"),
    )?;
    let st = agent
        .wait_status("certs failed once", LONG, |st| {
            phase(st, "certs") == "Failed"
        })
        .await?;
    let failed_at = Instant::now();
    let git_requests = s.git.http_requests();
    let certs = release(&st, "certs").unwrap();
    assert!(
        certs["message"]
            .as_str()
            .is_some_and(|m| m.contains("forbidden") && m.contains("next attempt not before")),
        "a counted failure with a backoff: {certs:#}"
    );
    assert_eq!(phase(&st, "mesh"), "Skipped", "{st:#}");
    let commit = st["revision"]["commit"].clone();

    let st = agent
        .wait_status("stack Ready after the backoff", LONG, |st| {
            st["phase"] == "Ready" && stack_converged(&s.cluster)
        })
        .await?;
    let took = failed_at.elapsed();
    eprintln!("certs failed once; the whole stack was Ready {took:?} later (--interval 10m)");
    assert!(
        took < Duration::from_secs(60),
        "retried on the backoff (10 to 30 s), not at the poll: {took:?}"
    );
    assert_eq!(st["revision"]["commit"], commit, "the same revision");
    let certs = release(&st, "certs").unwrap();
    assert_eq!(
        certs["attempts"], 2,
        "one failed attempt, one retry: {certs:#}"
    );
    assert_eq!(certs["action"], "upgrade", "{certs:#}");
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }
    assert_eq!(
        s.git.http_requests(),
        git_requests,
        "the retry applied the loaded revision: no fetch before the poll"
    );
    assert_eq!(
        c.counts().by_code.get(&403).copied(),
        Some(1),
        "exactly one write refused"
    );
    assert!(
        agent
            .logs()
            .contains("retrying: a failed release's backoff ended"),
        "{}",
        agent.logs()
    );
    agent.stop().await?;
    Ok(())
}

/// About a tenth of the API requests of every kind fail with 500 (a bounded number of times,
/// as helm does not retry them itself): `--once` retries in place (and on the backoff
/// schedule, should a failure be counted) and exits 0 with every layer Ready, never 1. The
/// deadline is generous: this test is about not giving up, not about speed.
///
/// A 500 that hits helm 4's readiness watch is not reported by helm as an API error: helm
/// sees the object's status `Unknown` until its timeout and fails with a timeout, a counted
/// failure strata cannot tell from a real one; it is retried on the backoff schedule. The helm
/// timeouts are 15 s here so that such a run still ends well within the deadline.
#[tokio::test]
async fn once_converges_through_api_500s() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{readyAfter: 500ms}").await?;
    let profiles = layered_profiles(&s.charts.url(), "{readyAfter: 500ms}")
        .replace("  timeout: 60s\n", "  timeout: 15s\n")
        .replace("    timeout: 20s\n", "    timeout: 15s\n");
    assert!(!profiles.contains("0s\n"), "{profiles}");
    s.repo.write("profiles.yaml", profiles)?;
    s.repo.commit("helm timeouts of 15 s")?;
    let c = s.cluster.controls();
    let errors = ["get", "list", "create", "update", "patch", "delete"]
        .iter()
        .map(|verb| ErrorRule {
            verb: Some(verb.to_string()),
            rate: 0.1,
            code: 500,
            times: Some(3),
            ..ErrorRule::default()
        })
        .collect();
    c.apply_spec(&FaultSpec {
        errors,
        ..FaultSpec::default()
    });
    let t0 = Instant::now();
    let mut agent = s.agent(&["--once", "--once-timeout", "240s"], &[])?;
    let exit = tokio::time::timeout(Duration::from_secs(300), agent.child.wait()).await??;
    let counts = c.counts();
    let injected = counts.by_code.get(&500).copied().unwrap_or(0);
    eprintln!(
        "--once through 500s: exit {exit} after {:?}; {injected} of {} requests failed by \
         injection; {} helm step(s) repeated in place, {} attempt(s) counted as failed",
        t0.elapsed(),
        counts.total,
        agent.logs().matches("repeating the step").count(),
        agent.logs().matches("next attempt not before").count(),
    );
    assert_eq!(exit.code(), Some(0), "{}", agent.logs());
    assert!(injected >= 1, "500s were injected: {counts:?}");
    assert!(
        stack_converged(&s.cluster),
        "latest {:?}, pending {:?}\n{}",
        testkit::release::latest(&s.cluster),
        testkit::release::pending(&s.cluster),
        agent.logs()
    );
    let st = s.configmap_status().expect("status written");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }
    Ok(())
}

/// mesh never becomes Ready (its Deployment would take an hour): `--once --once-timeout 3s`
/// stops the waiting helm at the deadline and exits 2 within a few seconds of it.
#[tokio::test]
async fn once_timeout_exits_2_soon_after_the_deadline() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{readyAfter: 1h}").await?;
    let t0 = Instant::now();
    let mut agent = s.agent(&["--once", "--once-timeout", "3s"], &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    let took = t0.elapsed();
    let logs = agent.logs();
    eprintln!("--once-timeout 3s with mesh never Ready: exit {exit} after {took:?}");
    assert_eq!(exit.code(), Some(2), "{logs}");
    assert!(
        took >= Duration::from_secs(3),
        "not before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "within a few seconds of the deadline: {took:?}\n{logs}"
    );
    assert!(logs.contains("--once stops (exit 2)"), "{logs}");
    Ok(())
}

/// A Git chart whose template does not parse: helm fails with a permanent error, the release
/// is Stalled at once and `--once` exits 1 (without waiting for its deadline).
#[tokio::test]
async fn once_exits_1_when_a_release_is_stalled_by_a_permanent_error() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{}").await?;
    s.commit_broken_chart()?;
    let t0 = Instant::now();
    let mut agent = s.agent(&["--once"], &[])?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    let took = t0.elapsed();
    let logs = agent.logs();
    eprintln!("--once with a broken template: exit {exit} after {took:?}");
    assert_eq!(exit.code(), Some(1), "{logs}");
    assert!(
        took < Duration::from_secs(60),
        "gave up without waiting for the deadline (60 s): {took:?}"
    );
    let st = s.configmap_status().expect("status written");
    let broken = release(&st, "broken").unwrap();
    assert_eq!(broken["phase"], "Failed", "{broken:#}");
    assert!(
        broken["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stalled: permanent error") && m.contains("parse error")),
        "{broken:#}"
    );
    assert!(logs.contains("--once gives up"), "{logs}");
    Ok(())
}
