//! Crash-safe recovery end to end, with real helm 4 and helm 3 on the simulated cluster: a
//! release left `pending-install`, `pending-upgrade` or `pending-rollback` by a helm process
//! that was SIGKILLed mid-operation is recovered by the next agent run (uninstall + install,
//! or rollback to the last deployed revision + upgrade), ends deployed with nothing pending,
//! and the status, the metrics and an Event show the recovery. With `--leader-elect` and the
//! Lease held by another live identity, the pending release is not touched until the Lease
//! expires. An agent restarted on a Git cache with stale lock files or a truncated pack
//! repairs the cache and applies the new commit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use testkit::agent::{Agent, agent_args, http_get, release};
use testkit::chart::{
    CONFIGMAP_TEMPLATE, ChartSpec, FAIL_HOOK_TEMPLATE, profile_annotations, write_chart,
};
use testkit::cluster::AGENT_NS;
use testkit::{HelmBin as Helm, strata_bin};

const LONG: Duration = Duration::from_secs(120);
const NS: &str = "slow";

/// When `slowHook` is set, a pre-install/pre-upgrade/pre-rollback hook Job that runs for ten
/// minutes: helm waits for it, so a helm killed meanwhile leaves the release pending.
const SLOW_HOOK: &str = r#"{{- if .Values.slowHook }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-slow
  annotations:
    helm.sh/hook: pre-install,pre-upgrade,pre-rollback
    helm.sh/hook-delete-policy: before-hook-creation
    kubesim.strata.dev/ready-after: "600s"
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: wait
          image: example.com/wait:1
{{- end }}
"#;

/// The profile list: the `slow` profile with inline `values` and an optional `remediation`
/// (a YAML flow map).
fn profiles(values: &str, remediation: Option<&str>) -> String {
    let remediation = remediation
        .map(|r| format!("    remediation: {r}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  timeout: 30s\nprofiles:\n  - name: slow\n    chart: {{path: charts/slow}}\n    namespace: {NS}\n    values: {values}\n{remediation}"
    )
}

struct Setup {
    cluster: kubesim::Cluster,
    kubeconfig: PathBuf,
    git: testkit::GitServer,
    repo: testkit::TestRepo,
    chart: PathBuf,
    helm: Helm,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(helm: Helm) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
        let annotations = profile_annotations(Some("1"), None);
        let chart = write_chart(
            &dir.path().join("charts"),
            &ChartSpec {
                name: "slow",
                version: "1.0.0",
                annotations: &annotations,
                files: &[
                    ("templates/configmap.yaml", CONFIGMAP_TEMPLATE),
                    ("templates/hook.yaml", SLOW_HOOK),
                    ("templates/fail.yaml", FAIL_HOOK_TEMPLATE),
                ],
            },
        )?;
        let git = testkit::GitServer::start().await?;
        let repo = git.create_repo("platform")?;
        repo.copy_dir(&chart, "charts/slow")?;
        repo.write("profiles.yaml", profiles("{greeting: desired}", None))?;
        repo.commit("slow profile")?;
        Ok(Self {
            cluster,
            kubeconfig,
            git,
            repo,
            chart,
            helm,
            dir,
        })
    }

    fn agent(&self, work: &str, extra: &[&str]) -> anyhow::Result<Agent> {
        let mut args = agent_args(
            &self.git.http_url("platform"),
            &self.kubeconfig,
            &self.helm.path(),
            &self.dir.path().join(work),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        Agent::start(
            strata_bin!(),
            &args,
            &[],
            self.dir.path().join(format!("agent-{work}.log")),
        )
    }

    /// Run helm directly (as a person or an earlier agent would), to completion.
    async fn helm(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self.helm_command(args).output().await?;
        if !out.status.success() {
            bail!(
                "helm {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn helm_command(&self, args: &[&str]) -> tokio::process::Command {
        let home = self.dir.path().join("helm-home");
        let mut cmd = tokio::process::Command::new(self.helm.path());
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--namespace")
            .arg(NS)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Start helm with `args` and SIGKILL it once the release's latest record says `status`:
    /// the release is left in that state, as after a crash.
    async fn helm_killed_at(&self, args: &[&str], status: &str) -> anyhow::Result<()> {
        let mut child = self.helm_command(args).spawn()?;
        let start = Instant::now();
        loop {
            if self.statuses().last().map(|(_, s)| s.as_str()) == Some(status) {
                break;
            }
            if let Some(exit) = child.try_wait()? {
                bail!(
                    "helm {args:?} ended ({exit}) before the release was {status}: {:?}",
                    self.statuses()
                );
            }
            if start.elapsed() > LONG {
                bail!("the release never became {status}: {:?}", self.statuses());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill()?; // SIGKILL
        child.wait().await?;
        // What the dead helm had already sent is still served (the API server reads what is
        // in the socket): only when its connections are gone is its last write on record.
        let start = Instant::now();
        while self.cluster.controls().open_connections() > 0 {
            if start.elapsed() > LONG {
                bail!("the killed helm's connections to the API server stayed open");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// (revision, status) of every release record of `slow`, by revision.
    fn statuses(&self) -> Vec<(u64, String)> {
        testkit::release::history(&self.cluster, NS, "slow")
    }

    fn events(&self) -> Vec<String> {
        testkit::cluster::events(&self.cluster, AGENT_NS)
    }

    /// Writes into the release's namespace seen by the API server.
    fn release_writes(&self) -> Vec<String> {
        testkit::cluster::writes(&self.cluster)
            .iter()
            .filter(|r| r.namespace == NS)
            .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
            .collect()
    }
}

/// Leave the release in `state` for real (helm SIGKILLed mid-operation).
async fn produce(s: &Setup, state: &str) -> anyhow::Result<()> {
    let chart = s.chart.display().to_string();
    match state {
        "pending-install" => {
            s.helm_killed_at(
                &[
                    "upgrade",
                    "--install",
                    "slow",
                    &chart,
                    "--create-namespace",
                    "--set",
                    "slowHook=true",
                ],
                "pending-install",
            )
            .await?;
        }
        "pending-upgrade" => {
            s.helm(&["upgrade", "--install", "slow", &chart, "--create-namespace"])
                .await?;
            s.helm_killed_at(
                &["upgrade", "slow", &chart, "--set", "slowHook=true"],
                "pending-upgrade",
            )
            .await?;
        }
        "pending-rollback" => {
            // Revision 1 carries the slow pre-rollback hook (installed without hooks),
            // revision 2 does not; rolling back to 1 runs 1's hook and hangs.
            s.helm(&[
                "upgrade",
                "--install",
                "slow",
                &chart,
                "--create-namespace",
                "--no-hooks",
                "--set",
                "slowHook=true",
            ])
            .await?;
            s.helm(&["upgrade", "slow", &chart, "--set", "greeting=second"])
                .await?;
            s.helm_killed_at(&["rollback", "slow", "1"], "pending-rollback")
                .await?;
        }
        other => bail!("unknown state {other}"),
    }
    Ok(())
}

async fn recovers(helm: Helm, state: &str, expected_kind: &str) -> anyhow::Result<()> {
    let s = Setup::start(helm).await?;
    produce(&s, state).await?;
    let before = s.statuses();
    assert_eq!(
        before.last().map(|(_, st)| st.as_str()),
        Some(state),
        "{before:?}"
    );

    let mut agent = s.agent("work", &[])?;
    let st = agent
        .wait_status("the release recovered and Ready", LONG, |st| {
            st["phase"] == "Ready"
                && release(st, "slow").is_some_and(|r| r["lastRecovery"].is_object())
        })
        .await?;
    let r = release(&st, "slow").unwrap();
    assert_eq!(r["phase"], "Ready", "{r:#}");
    assert_eq!(r["lastRecovery"]["kind"], expected_kind, "{r:#}");
    let msg = r["lastRecovery"]["message"].as_str().unwrap();
    assert!(msg.contains(state) && msg.contains("succeeded"), "{msg}");
    assert_eq!(r["action"], expected_kind, "{r:#}");
    assert!(
        st["writer"]
            .as_str()
            .is_some_and(|w| w.contains("only writer")),
        "{st:#}"
    );

    // helm's storage: the latest revision deployed, nothing pending.
    let after = s.statuses();
    assert_eq!(
        after.last().map(|(_, s)| s.as_str()),
        Some("deployed"),
        "{after:?}"
    );
    assert!(
        after.iter().all(|(_, s)| !s.starts_with("pending")),
        "{after:?}"
    );
    if expected_kind == "rollback-then-upgrade" {
        // The rolled-back record is kept in the history; the upgrade follows it.
        assert!(after.len() >= before.len() + 2, "{before:?} -> {after:?}");
    }
    let cm = s
        .cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("", "configmaps"),
            Some(NS),
            "slow-config",
        )
        .context("the release's ConfigMap")?;
    assert_eq!(cm["data"]["greeting"], "desired");

    let (code, metrics) = http_get(agent.port, "/metrics").await?;
    assert_eq!(code, 200);
    let line =
        format!("strata_recoveries_total{{kind=\"{expected_kind}\",outcome=\"succeeded\"}} 1");
    assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");

    let logs = agent.logs();
    assert!(logs.contains(expected_kind), "recovery logged:\n{logs}");
    let start = Instant::now();
    loop {
        let events = s.events();
        if events
            .iter()
            .any(|e| e.starts_with("Recovered:") && e.contains(expected_kind))
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("no Recovered event: {events:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exit = agent.stop().await?;
    assert!(exit.success(), "{exit}");
    Ok(())
}

#[tokio::test]
async fn pending_install_recovered_helm4() -> anyhow::Result<()> {
    recovers(Helm::V4, "pending-install", "recover-pending-install").await
}

#[tokio::test]
async fn pending_install_recovered_helm3() -> anyhow::Result<()> {
    recovers(Helm::V3, "pending-install", "recover-pending-install").await
}

#[tokio::test]
async fn pending_upgrade_recovered_helm4() -> anyhow::Result<()> {
    recovers(Helm::V4, "pending-upgrade", "rollback-then-upgrade").await
}

#[tokio::test]
async fn pending_upgrade_recovered_helm3() -> anyhow::Result<()> {
    recovers(Helm::V3, "pending-upgrade", "rollback-then-upgrade").await
}

#[tokio::test]
async fn pending_rollback_recovered_helm4() -> anyhow::Result<()> {
    recovers(Helm::V4, "pending-rollback", "rollback-then-upgrade").await
}

#[tokio::test]
async fn pending_rollback_recovered_helm3() -> anyhow::Result<()> {
    recovers(Helm::V3, "pending-rollback", "rollback-then-upgrade").await
}

/// With `--leader-elect` and the Lease held by another live identity, the pending release is
/// not touched (no write into its namespace) while the holder renews; once the holder stops
/// renewing and the Lease expires, this agent takes it and recovers the release.
async fn lease_gates_recovery(helm: Helm) -> anyhow::Result<()> {
    let s = Setup::start(helm).await?;
    produce(&s, "pending-upgrade").await?;
    let lease_key = kubesim::ResourceKey::new("coordination.k8s.io", "leases");
    let now = || {
        jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    };
    s.cluster.store().create(
        &lease_key,
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "strata", "namespace": AGENT_NS},
            "spec": {
                "holderIdentity": "other-agent", "leaseDurationSeconds": 4,
                "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0
            }
        }),
    )?;
    s.cluster.controls().reset_requests();
    let mut agent = s.agent("work", &["--leader-elect", "--lease-name", "strata"])?;
    // The other holder stays alive for 10 s (renewing every 500 ms).
    let alive = Instant::now();
    while alive.elapsed() < Duration::from_secs(10) {
        s.cluster
            .store()
            .update_with(&lease_key, Some(AGENT_NS), "strata", |l| {
                l["spec"]["renewTime"] = now().into();
            })?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let st = agent.status().await.context("status while standing by")?;
    assert_eq!(st["leader"]["holder"], "other-agent", "{st:#}");
    assert_eq!(st["leader"]["leading"], false, "{st:#}");
    let writes = s.release_writes();
    assert!(
        writes.is_empty(),
        "the pending release was touched: {writes:?}"
    );
    assert_eq!(
        s.statuses().last().map(|(_, st)| st.as_str()),
        Some("pending-upgrade")
    );

    // The holder dies: after the lease duration this agent takes over and recovers.
    let st = agent
        .wait_status("takeover and recovery", LONG, |st| {
            st["phase"] == "Ready"
                && release(st, "slow").is_some_and(|r| r["lastRecovery"].is_object())
        })
        .await?;
    assert_eq!(st["leader"]["leading"], true, "{st:#}");
    assert!(
        st["writer"].as_str().is_some_and(|w| w.contains("Lease")),
        "{st:#}"
    );
    let r = release(&st, "slow").unwrap();
    assert_eq!(r["lastRecovery"]["kind"], "rollback-then-upgrade", "{r:#}");
    let after = s.statuses();
    assert!(
        after.iter().all(|(_, s)| !s.starts_with("pending")),
        "{after:?}"
    );
    assert_eq!(after.last().map(|(_, s)| s.as_str()), Some("deployed"));
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn lease_held_by_another_gates_recovery_helm4() -> anyhow::Result<()> {
    lease_gates_recovery(Helm::V4).await
}

#[tokio::test]
async fn lease_held_by_another_gates_recovery_helm3() -> anyhow::Result<()> {
    lease_gates_recovery(Helm::V3).await
}

/// The log without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Remediation after a failed upgrade: `rollback` rolls back to the last deployed revision
/// (status, metrics and an Event say so) and the release is Stalled after `retries` failed
/// attempts, with the backoff between them; `uninstall` (chosen explicitly) uninstalls.
async fn remediation(helm: Helm, strategy: &str, retries: u32) -> anyhow::Result<()> {
    let s = Setup::start(helm).await?;
    let remediation = format!("{{strategy: {strategy}, retries: {retries}}}");
    s.repo.write(
        "profiles.yaml",
        profiles("{greeting: desired}", Some(&remediation)),
    )?;
    s.repo.commit("remediation")?;
    let mut agent = s.agent("work", &[])?;
    agent
        .wait_status("first install Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    let good = s.statuses();
    assert_eq!(good, vec![(1, "deployed".to_string())]);

    s.repo.write(
        "profiles.yaml",
        profiles("{greeting: broken, failHook: true}", Some(&remediation)),
    )?;
    let commit = s.repo.commit("a failing upgrade")?;
    let st = agent
        .wait_status("stalled", LONG * 2, |st| {
            st["revision"]["commit"] == commit.as_str()
                && release(st, "slow").is_some_and(|r| {
                    r["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("stalled"))
                })
        })
        .await?;
    let r = release(&st, "slow").unwrap();
    assert_eq!(r["phase"], "Failed", "{r:#}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("failed {retries} times")),
        "stalled after {retries}: {msg}"
    );
    assert_eq!(
        r["lastRemediation"]["kind"],
        format!("remediate-{strategy}"),
        "{r:#}"
    );
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    let line = format!(
        "strata_remediations_total{{kind=\"remediate-{strategy}\",outcome=\"succeeded\"}} {retries}"
    );
    assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    let logs = strip_ansi(&agent.logs());
    let failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("strata::reconcile::release: helm failed"))
        .collect();
    assert_eq!(
        failures.len() as u32,
        retries,
        "one upgrade per attempt: {failures:#?}"
    );
    // The backoff between attempts shows in the log timestamps (at least the base delay).
    if retries > 1 {
        let times: Vec<jiff::Timestamp> = failures
            .iter()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(times.len(), failures.len(), "{failures:#?}");
        let gap = times[1].duration_since(times[0]);
        assert!(gap.as_secs() >= 9, "backoff between attempts: {gap:?}");
    }

    let after = s.statuses();
    let cm = s.cluster.store().get(
        &kubesim::ResourceKey::new("", "configmaps"),
        Some(NS),
        "slow-config",
    );
    match strategy {
        "rollback" => {
            assert_eq!(
                after.last().map(|(_, s)| s.as_str()),
                Some("deployed"),
                "rolled back: {after:?}"
            );
            assert_eq!(cm.context("slow-config")?["data"]["greeting"], "desired");
        }
        "uninstall" => {
            assert!(after.is_empty(), "uninstalled: {after:?}");
            assert!(cm.is_none(), "uninstalled: {cm:?}");
        }
        other => bail!("unknown strategy {other}"),
    }
    let start = Instant::now();
    while !s.events().iter().any(|e| e.starts_with("Remediated:")) {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("no Remediated event: {:?}", s.events());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn remediation_rollback_then_stalled_helm4() -> anyhow::Result<()> {
    remediation(Helm::V4, "rollback", 2).await
}

#[tokio::test]
async fn remediation_rollback_then_stalled_helm3() -> anyhow::Result<()> {
    remediation(Helm::V3, "rollback", 2).await
}

#[tokio::test]
async fn remediation_uninstall_helm4() -> anyhow::Result<()> {
    remediation(Helm::V4, "uninstall", 1).await
}

#[tokio::test]
async fn remediation_uninstall_helm3() -> anyhow::Result<()> {
    remediation(Helm::V3, "uninstall", 1).await
}

/// The lock files a git killed in the middle of a fetch leaves in the agent's Git cache
/// (tests/adapters_git.rs covers the Git source alone; here the whole agent restarts on them).
const STALE_GIT_LOCKS: &[&str] = &[
    "shallow.lock",
    "index.lock",
    "HEAD.lock",
    "config.lock",
    "packed-refs.lock",
    "refs/heads/main.lock",
    "refs/strata/target.lock",
];

/// The agent's Git cache of the scenario's repository: `<work>/git/repos/<hash>.git`.
fn git_cache(work: &std::path::Path) -> anyhow::Result<PathBuf> {
    let repos = work.join("git").join("repos");
    let mut caches: Vec<PathBuf> = std::fs::read_dir(&repos)
        .with_context(|| format!("reading {}", repos.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "git"))
        .collect();
    if caches.len() != 1 {
        bail!("one Git cache expected in {}: {caches:?}", repos.display());
    }
    Ok(caches.remove(0))
}

/// Packs the cache's objects and truncates the pack, as a disk or a kill mangles it.
fn truncate_pack(cache: &std::path::Path) -> anyhow::Result<()> {
    testkit::git::git(cache, &["repack", "-a", "-d", "-q"])?;
    let pack = std::fs::read_dir(cache.join("objects/pack"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .context("a pack")?;
    let len = std::fs::metadata(&pack)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)?
        .set_len(len / 2)?;
    Ok(())
}

/// An agent stopped with stale lock files in its Git cache (each of them, then all at once),
/// or with a truncated pack (then both): started again on a new commit, so that it must
/// fetch, it removes the locks or clones the cache again and applies the new commit, Ready.
#[tokio::test]
async fn stale_git_locks_and_a_corrupt_pack_in_the_agent_cache_are_recovered() -> anyhow::Result<()>
{
    let s = testkit::Scenario::start(strata_bin!(), Helm::V4, "{greeting: first}").await?;
    let work = s.dir.path().join("work");
    let run_once = |what: String| {
        let s = &s;
        async move {
            let mut agent = s.agent(&["--once"], &[])?;
            let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
            if exit.code() != Some(0) {
                bail!("--once after {what} exited {exit}:\n{}", agent.logs());
            }
            anyhow::Ok(agent.logs())
        }
    };
    run_once("nothing".into()).await?;
    let cache = git_cache(&work)?;
    let mut rounds: Vec<(String, Vec<&str>, bool)> = STALE_GIT_LOCKS
        .iter()
        .map(|l| (l.to_string(), vec![*l], false))
        .collect();
    rounds.push(("every lock".into(), STALE_GIT_LOCKS.to_vec(), false));
    rounds.push(("a truncated pack".into(), vec![], true));
    rounds.push((
        "every lock and a truncated pack".into(),
        STALE_GIT_LOCKS.to_vec(),
        true,
    ));
    for (n, (what, locks, corrupt)) in rounds.into_iter().enumerate() {
        if corrupt {
            truncate_pack(&cache)?;
        }
        for lock in &locks {
            let path = cache.join(lock);
            std::fs::create_dir_all(path.parent().context("parent")?)?;
            std::fs::write(&path, "")?;
        }
        let next = s.commit_mesh_values(&format!("{{greeting: round-{n}}}"), &what)?;
        let t0 = Instant::now();
        let logs = run_once(what.clone()).await?;
        let st = s.configmap_status().context("status written")?;
        eprintln!("{what}: converged at the new commit in {:?}", t0.elapsed());
        assert_eq!(st["phase"], "Ready", "{what}: {st:#}");
        assert_eq!(st["revision"]["commit"], next.as_str(), "{what}: {st:#}");
        assert_eq!(
            release(&st, "mesh").context("mesh")?["helmRevision"],
            n as u64 + 2,
            "{what}: mesh upgraded: {st:#}"
        );
        let cache = git_cache(&work)?;
        for lock in &locks {
            assert!(!cache.join(lock).exists(), "{what}: {lock} removed");
        }
        if corrupt {
            assert!(
                strip_ansi(&logs).contains("the Git cache is corrupt"),
                "{what}: the corrupt cache was noticed:\n{logs}"
            );
        }
        testkit::git::git(&cache, &["fsck", "--no-dangling"])
            .with_context(|| format!("{what}: the cache is sound again"))?;
    }
    Ok(())
}

/// Every `*.lock` file anywhere under `dir`.
fn lock_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "lock") {
                found.push(path);
            }
        }
    }
    found
}

/// While a revision is applied the agent fetches every interval to notice a newer commit.
/// When the last layer gets Ready during such a fetch (the Git server holds it here), `--once`
/// lets the fetch finish before it exits, instead of killing git in the middle of it (which
/// leaves lock files in the Git cache): it is still running while the fetch is held, then
/// exits 0 with no lock file left.
#[tokio::test]
async fn once_lets_a_fetch_under_way_finish_before_exiting() -> anyhow::Result<()> {
    let s = testkit::Scenario::start(strata_bin!(), Helm::V4, "{readyAfter: 3s}").await?;
    let mut agent = s.agent(&["--once"], &[])?;
    agent
        .wait_status("the revision fetched, mesh not Ready yet", LONG, |st| {
            st["revision"]["commit"].is_string() && testkit::agent::phase(st, "mesh") != "Ready"
        })
        .await?;
    s.git.gate().close();
    let t0 = Instant::now();
    while s.git.gate().held() == 0 {
        if t0.elapsed() > LONG {
            bail!("no fetch during the apply:\n{}", agent.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    loop {
        if s.configmap_status()
            .is_some_and(|st| st["phase"] == "Ready")
        {
            break;
        }
        if let Some(exit) = agent.child.try_wait()? {
            bail!("exited {exit} before Ready:\n{}", agent.logs());
        }
        if t0.elapsed() > LONG {
            bail!("never Ready:\n{}", agent.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every layer is Ready; the fetch is still held: the agent must wait for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        agent.child.try_wait()?.is_none(),
        "--once exited with a fetch under way:\n{}",
        agent.logs()
    );
    assert_eq!(s.git.gate().held(), 1, "the fetch is still held");
    s.git.gate().open();
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    assert_eq!(exit.code(), Some(0), "{}", agent.logs());
    let cache = git_cache(&s.dir.path().join("work"))?;
    assert_eq!(
        lock_files(&cache),
        Vec::<PathBuf>::new(),
        "no lock file left"
    );
    testkit::git::git(&cache, &["fsck", "--no-dangling"]).context("the cache is sound")?;
    Ok(())
}
