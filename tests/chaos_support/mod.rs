//! Helpers of the chaos and fault tests: a scenario on a kubesim with a chosen config, the
//! agent started in its own process group (so a SIGKILL takes helm down with it, as a
//! container's death does), a helm wrapper that records who ran which helm command when, and
//! helm's release records read from the simulated cluster's store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;

use crate::e2e_cluster::{AGENT_NS, HelmMajor, Scenario, layered_charts, layered_profiles};
use crate::e2e_support::{Agent, free_port, strata_bin};

/// A small seeded generator (splitmix64), enough to pick kill moments and fault seeds.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (ms).
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo).max(1))
    }
}

/// The seed from `var` if set (decimal), else one from the clock; printed by the caller.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var}={s:?} is not a u64: {e}")),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// [`Scenario::start`] with a kubesim config of the caller's choice (e.g. a fault seed).
pub async fn scenario_with(
    config: kubesim::Config,
    helm: HelmMajor,
    mesh_values: &str,
) -> anyhow::Result<Scenario> {
    let dir = tempfile::tempdir()?;
    let cluster = kubesim::start(config).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    cluster.store().create(
        &kubesim::ResourceKey::new("", "namespaces"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NS}}),
    )?;
    let chart_dirs = layered_charts(&dir.path().join("charts"))?;
    let refs: Vec<&Path> = chart_dirs.iter().map(|d| d.as_path()).collect();
    let charts = testkit::ChartRepo::with_charts(&testkit::tools().helm4, &refs).await?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("platform")?;
    repo.write(
        "profiles.yaml",
        layered_profiles(&charts.url(), mesh_values),
    )?;
    repo.commit("layered platform")?;
    Ok(Scenario {
        cluster,
        kubeconfig,
        git,
        repo,
        charts,
        chart_dirs,
        helm,
        dir,
    })
}

/// Start `strata run ARGS --listen 127.0.0.1:<free>` in a new process group, logging to
/// `log`. Kill it with [`kill_group`].
pub fn start_group_agent(
    args: &[String],
    env: &[(String, String)],
    log: PathBuf,
) -> anyhow::Result<Agent> {
    let port = free_port();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut cmd = tokio::process::Command::new(strata_bin());
    cmd.arg("run")
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().context("spawning strata")?;
    Ok(Agent { child, port, log })
}

/// The pids of every descendant of `pid` (from /proc), children first-level included.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u32>().ok())
            else {
                continue;
            };
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// SIGKILL a process and every descendant, as a container's death does: strata is stopped
/// first (SIGSTOP) so it spawns nothing new, then every descendant (strata puts each helm in
/// its own process group, so a group kill would miss them) and strata itself are killed.
pub fn kill_tree(pid: u32) {
    let signal = |sig: &str, p: u32| {
        let _ = std::process::Command::new("kill")
            .args([sig, &p.to_string()])
            .stderr(Stdio::null())
            .status();
    };
    signal("-STOP", pid);
    for _ in 0..3 {
        let d = descendants(pid);
        if d.is_empty() {
            break;
        }
        for c in d {
            signal("-KILL", c);
        }
    }
    signal("-KILL", pid);
}

/// SIGKILL the agent and everything it runs (see [`kill_tree`]) and reap it.
pub async fn kill_group(agent: &mut Agent) -> anyhow::Result<()> {
    if let Some(pid) = agent.child.id() {
        kill_tree(pid);
    }
    tokio::time::timeout(Duration::from_secs(10), agent.child.wait())
        .await
        .context("killed strata did not exit within 10s")??;
    Ok(())
}

/// `/metrics` of an agent, `None` while it does not answer.
pub async fn metrics(agent: &Agent) -> Option<String> {
    let (code, body) = crate::e2e_support::http_get(agent.port, "/metrics")
        .await
        .ok()?;
    (code == 200).then_some(body)
}

/// The samples of every metric whose name mentions `recover` (`name{labels}` -> value).
pub fn recovery_samples(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("recover"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The newest helm release record of each release in the cluster:
/// (namespace, release name, revision, status).
pub fn helm_releases(cluster: &kubesim::Cluster) -> Vec<(String, String, u64, String)> {
    let (secrets, _) = cluster
        .store()
        .list(&kubesim::ResourceKey::new("", "secrets"), None);
    let mut newest: std::collections::BTreeMap<(String, String), (u64, String)> =
        Default::default();
    for s in &secrets {
        let labels = &s["metadata"]["labels"];
        if labels["owner"] != "helm" {
            continue;
        }
        let ns = s["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = labels["name"].as_str().unwrap_or("").to_string();
        let version: u64 = labels["version"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let status = labels["status"].as_str().unwrap_or("").to_string();
        let e = newest.entry((ns, name)).or_insert((0, String::new()));
        if version >= e.0 {
            *e = (version, status);
        }
    }
    newest
        .into_iter()
        .map(|((ns, name), (v, st))| (ns, name, v, st))
        .collect()
}

/// Every release record's status (any revision) that is `pending-*` or `uninstalling`.
pub fn pending_records(cluster: &kubesim::Cluster) -> Vec<String> {
    let (secrets, _) = cluster
        .store()
        .list(&kubesim::ResourceKey::new("", "secrets"), None);
    secrets
        .iter()
        .filter(|s| s["metadata"]["labels"]["owner"] == "helm")
        .filter_map(|s| {
            let st = s["metadata"]["labels"]["status"].as_str()?;
            (st.starts_with("pending") || st == "uninstalling").then(|| {
                format!(
                    "{}/{} {st}",
                    s["metadata"]["namespace"].as_str().unwrap_or(""),
                    s["metadata"]["name"].as_str().unwrap_or("")
                )
            })
        })
        .collect()
}

/// Whether the three layered releases are deployed (newest record) and nothing is pending.
pub fn stack_converged(cluster: &kubesim::Cluster) -> bool {
    let rel = helm_releases(cluster);
    ["certs", "mesh", "canary"].iter().all(|n| {
        rel.iter()
            .any(|(ns, name, _, st)| ns == n && name == n && st == "deployed")
    }) && pending_records(cluster).is_empty()
}

/// Decode a helm release Secret's `data.release` into the release JSON (base64 of
/// base64(gzip(json)) as kubesim stores it).
pub fn decode_release(secret: &serde_json::Value) -> Option<serde_json::Value> {
    use std::io::Read as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let outer = b64.decode(secret["data"]["release"].as_str()?).ok()?;
    let gz = b64.decode(outer).ok()?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .ok()?;
    serde_json::from_str(&json).ok()
}

/// A helm wrapper script: runs `real` with the same arguments and appends
/// `start <who> <ns-since-epoch> <pid> <args...>` before and `end <who> <ns> <pid> <exit>`
/// after to `journal` (`who` is written into the script: strata gives helm a filtered
/// environment).
pub fn helm_wrapper(dir: &Path, who: &str, real: &Path, journal: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(format!("helm-wrapper-{who}.sh"));
    let script = format!(
        "#!/bin/sh\n\
         echo \"start {who} $(date +%s%N) $$ $*\" >> '{journal}'\n\
         '{real}' \"$@\"\n\
         rc=$?\n\
         echo \"end {who} $(date +%s%N) $$ $rc\" >> '{journal}'\n\
         exit $rc\n",
        journal = journal.display(),
        real = real.display()
    );
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// One helm process from the wrapper's journal.
#[derive(Debug, Clone)]
pub struct HelmRun {
    pub who: String,
    pub pid: u64,
    pub start_ns: u128,
    /// None: the process never finished (killed with its agent).
    pub end_ns: Option<u128>,
    pub args: Vec<String>,
}

impl HelmRun {
    /// A write command (install/upgrade/uninstall/rollback) and the namespace it targets.
    pub fn write_target(&self) -> Option<String> {
        let cmd = self.args.first()?;
        if !matches!(
            cmd.as_str(),
            "upgrade" | "install" | "uninstall" | "rollback"
        ) {
            return None;
        }
        let i = self.args.iter().position(|a| a == "--namespace")?;
        self.args.get(i + 1).cloned()
    }
}

/// Parse the wrapper's journal.
pub fn read_journal(journal: &Path) -> Vec<HelmRun> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut runs: Vec<HelmRun> = Vec::new();
    for line in text.lines() {
        let mut w = line.split(' ');
        let (Some(kind), Some(who), Some(t), Some(pid)) = (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let (Ok(t), Ok(pid)) = (t.parse::<u128>(), pid.parse::<u64>()) else {
            continue;
        };
        match kind {
            "start" => runs.push(HelmRun {
                who: who.to_string(),
                pid,
                start_ns: t,
                end_ns: None,
                args: w.map(String::from).collect(),
            }),
            "end" => {
                if let Some(r) = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.pid == pid && r.who == who && r.end_ns.is_none())
                {
                    r.end_ns = Some(t);
                }
            }
            _ => {}
        }
    }
    runs
}

/// Nanoseconds since the epoch now.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// min / median / max of durations (zeros when empty).
pub fn min_median_max(v: &[Duration]) -> (Duration, Duration, Duration) {
    if v.is_empty() {
        return Default::default();
    }
    let mut s = v.to_vec();
    s.sort();
    (s[0], s[s.len() / 2], s[s.len() - 1])
}
