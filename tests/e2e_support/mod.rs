//! Shared helpers of strata's end-to-end tests: small profile charts, a chart repository, a
//! profile Git repository, and the real `strata` binary run as a child process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A chart template: a ConfigMap whose `greeting` comes from the values (default "hello").
pub const CONFIGMAP_TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | default "hello" | quote }}
"#;

/// A chart template: a post-install/post-upgrade hook Job that fails (kubesim's `fail`
/// annotation) when `failHook` is set.
pub const FAIL_HOOK_TEMPLATE: &str = r#"{{- if .Values.failHook }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-check
  annotations:
    helm.sh/hook: post-install,post-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
    kubesim.strata.dev/fail: "true"
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: check
          image: example.com/check:1
{{- end }}
"#;

/// The strata binary under test.
pub fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// A chart directory written by a test.
pub struct ChartSpec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// Chart.yaml annotations.
    pub annotations: &'a [(&'a str, &'a str)],
    /// Files under the chart directory (e.g. `templates/cm.yaml`, `crds/x.yaml`).
    pub files: &'a [(&'a str, &'a str)],
}

/// Write a chart directory under `root/<name>-<version>` and return its path.
pub fn write_chart(root: &Path, spec: &ChartSpec<'_>) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("{}-{}", spec.name, spec.version));
    std::fs::create_dir_all(dir.join("templates"))?;
    let mut chart = format!(
        "apiVersion: v2\nname: {}\nversion: {}\ntype: application\n",
        spec.name, spec.version
    );
    if !spec.annotations.is_empty() {
        chart.push_str("annotations:\n");
        for (k, v) in spec.annotations {
            chart.push_str(&format!("  {k}: {v:?}\n"));
        }
    }
    std::fs::write(dir.join("Chart.yaml"), chart)?;
    if spec.files.is_empty() {
        std::fs::write(
            dir.join("templates/configmap.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  greeting: {{ .Values.greeting | default \"hello\" | quote }}\n",
        )?;
    }
    for (rel, text) in spec.files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(dir)
}

/// A profile chart with strata's annotations.
pub fn profile_annotations<'a>(
    layer: Option<&'a str>,
    category: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut a = vec![("strata.dev/profile", "true")];
    if let Some(l) = layer {
        a.push(("strata.dev/layer", l));
    }
    if let Some(c) = category {
        a.push(("strata.dev/category", c));
    }
    a
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
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Finished> {
    let mut cmd = tokio::process::Command::new(strata_bin());
    cmd.args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("strata {args:?} did not finish within {timeout:?}"))??;
    Ok(Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
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
    /// Start `strata run` with `args` (plus `--listen`), logging to `log`.
    pub fn start(args: &[String], env: &[(String, String)], log: PathBuf) -> anyhow::Result<Self> {
        let port = free_port();
        let file = std::fs::File::create(&log)?;
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
            .kill_on_drop(true);
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
