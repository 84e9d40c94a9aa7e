//! The real `strata` binary as a child process: `strata run` as an [`Agent`] with its status
//! API, one-shot commands ([`run_strata`]), a small HTTP client for the status API, and the
//! arguments of `strata run` against a test cluster.
//!
//! `CARGO_BIN_EXE_strata` only exists in the strata crate's integration tests, so the binary's
//! path is passed in by the test: [`strata_bin!`](crate::strata_bin) expands to it there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The `strata` binary under test, as a `&'static Path`; expands `env!("CARGO_BIN_EXE_strata")`
/// in the calling test crate (strata's integration tests).
#[macro_export]
macro_rules! strata_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_strata"))
    };
}

/// A strata command with the test defaults: no OTLP endpoint from the environment, `env`
/// added, no stdin, killed on drop.
fn command<'a>(
    strata: &Path,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(strata);
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Output of a finished strata command.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `strata ARGS` to completion (bounded by `timeout`).
pub async fn run_strata(
    strata: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Finished> {
    let mut cmd = command(strata, env.iter().copied());
    cmd.args(args);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("strata {args:?} did not finish within {timeout:?}"))??;
    Ok(Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The arguments of `strata run` against a test cluster: the profile repository `git_url`
/// (branch `main`), `kubeconfig`, `helm`, the agent namespace
/// ([`AGENT_NS`](crate::cluster::AGENT_NS)), `work_dir`, a 1 s interval and debug logs of
/// strata.
pub fn agent_args(git_url: &str, kubeconfig: &Path, helm: &Path, work_dir: &Path) -> Vec<String> {
    [
        "--git-url",
        git_url,
        "--git-ref",
        "main",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--helm",
        &helm.display().to_string(),
        "--namespace",
        crate::cluster::AGENT_NS,
        "--work-dir",
        &work_dir.display().to_string(),
        "--interval",
        "1s",
        "--log-level",
        "info,strata=debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Replace the value following `flag` in `args` (panics when `flag` is absent).
pub fn set_arg(args: &mut [String], flag: &str, value: impl Into<String>) {
    let i = args.iter().position(|a| a == flag).expect(flag);
    args[i + 1] = value.into();
}

/// Sum of the samples of a metric family in a Prometheus text exposition (the agent's
/// `/metrics`) whose labels contain `label` (empty: every sample).
pub fn metric_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with('{') || rest.starts_with(' ')) && rest.contains(label)
            })
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A free port on 127.0.0.1 (bound and released; the agent binds it right after).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("addr").port()
}

/// A plain HTTP/1.0 GET on 127.0.0.1; returns (status code, body).
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(port, "GET", path, None).await
}

/// A plain HTTP/1.0 POST without a body on 127.0.0.1; returns (status code, body).
pub async fn http_post(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(port, "POST", path, None).await
}

/// A POST with `Authorization: Bearer <token>`.
pub async fn http_post_bearer(port: u16, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    http_request(port, "POST", path, Some(token)).await
}

async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()?;
    Ok((code, body.to_string()))
}

/// A running `strata run` child process.
pub struct Agent {
    pub child: tokio::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Agent {
    /// Start `strata run` with `args` (plus `--listen`), logging to `log` (truncated).
    pub fn start(
        strata: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        Self::spawn(strata, args, env, log, false)
    }

    /// [`Agent::start`] in a new process group, appending to `log` (restarted agents share
    /// one log). Kill it with [`Agent::kill_tree`].
    pub fn start_in_group(
        strata: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        Self::spawn(strata, args, env, log, true)
    }

    fn spawn(
        strata: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
        group: bool,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let file = if group {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?
        } else {
            std::fs::File::create(&log)?
        };
        let mut cmd = command(strata, env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.arg("run")
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(file);
        if group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().context("spawning strata")?;
        Ok(Self { child, port, log })
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` as JSON (`None` while the server is not up).
    pub async fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.port, "/status").await.ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// `GET /metrics`, `None` while the agent does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let (code, body) = http_get(self.port, "/metrics").await.ok()?;
        (code == 200).then_some(body)
    }

    /// Poll `/status` every 100 ms until `pred` holds; fails with the last status and the
    /// agent's log after `timeout`.
    pub async fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            if let Some(s) = self.status().await {
                if pred(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                bail!(
                    "strata exited ({exit}) while waiting for {what}; last status {}\nlog:\n{}",
                    last.map(|s| s.to_string()).unwrap_or_default(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "timed out after {timeout:?} waiting for {what}; last status {}\nlog:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            self.logs()
        )
    }

    /// SIGTERM, then wait for the exit (the agent drains and flushes telemetry).
    pub async fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }

    /// SIGKILL the agent and everything it runs (see [`kill_tree`]) and reap it.
    pub async fn kill_tree(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            kill_tree(pid);
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("killed strata did not exit within 10s")??;
        Ok(())
    }
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

/// Find a release in a status JSON.
pub fn release<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["layers"]
        .as_array()?
        .iter()
        .flat_map(|l| l["releases"].as_array().into_iter().flatten())
        .find(|r| r["name"] == name)
}

/// Phase of a release in a status JSON ("" when absent).
pub fn phase(status: &serde_json::Value, name: &str) -> String {
    release(status, name)
        .and_then(|r| r["phase"].as_str())
        .unwrap_or("")
        .to_string()
}
