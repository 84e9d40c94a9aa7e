//! `strata status`: where a running agent stands, read from its status API (`--url`, `GET
//! /status`) or from its status ConfigMap (`--kubeconfig`, `--context`, `--namespace`), shown
//! as the layered view of [`crate::observe::view`] or as the status JSON (`-o json`).
//!
//! `--watch` follows the status (a progress line per layer redrawn in place on a terminal;
//! a line per change otherwise), `--wait` waits until the verdict cannot change any more
//! (Ready, a Stalled release, a rejected revision) or `--timeout` passes.
//!
//! Exit code ([`run`]'s `Ok`): 0 Ready, 1 Failed, Stalled or rejected, 2 Progressing (also
//! when `--timeout` passed while progressing); `Err` (exit 3) when no status could be read.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use crate::config::{OutputFormat, StatusArgs};
use crate::observe::report::{CONFIGMAP_NAME, STATUS_KEY};
use crate::observe::view::{self, LiveBoard, Tracker};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "say where the status is: --url http://HOST:PORT (the agent's status API, its --listen address) or --kubeconfig FILE (the status ConfigMap in that cluster)"
    )]
    NoSource,
    #[error(
        "--url {url:?} is not an http:// or https:// URL; pass e.g. --url http://127.0.0.1:8080"
    )]
    BadUrl { url: String },
    #[error(
        "cannot reach the strata status API at {url}: {message}; check that the agent runs and that --url is its --listen address (in a cluster: kubectl -n strata-system port-forward deploy/strata 8080, then --url http://127.0.0.1:8080), or read the ConfigMap with --kubeconfig"
    )]
    Unreachable { url: String, message: String },
    #[error("the status API at {url} answered HTTP {code}: {body}")]
    Http {
        url: String,
        code: u16,
        body: String,
    },
    #[error("{url} did not answer a status document ({message}); is --url a strata agent?")]
    NotStatus { url: String, message: String },
    #[error("cannot create the HTTP client: {0}")]
    HttpClient(String),
    #[error(transparent)]
    Kube(#[from] crate::kube_api::Error),
    #[error(
        "ConfigMap {namespace}/{CONFIGMAP_NAME} does not exist{context}: is strata running in namespace {namespace} (else pass --namespace), and has it processed a revision yet?"
    )]
    NoConfigMap { namespace: String, context: String },
    #[error(
        "ConfigMap {namespace}/{CONFIGMAP_NAME} has no key {STATUS_KEY}; it was not written by strata"
    )]
    NoStatusKey { namespace: String },
    #[error(
        "cannot read ConfigMap {namespace}/{CONFIGMAP_NAME}{context}: {message}; check the kubeconfig and that you may get configmaps in {namespace}"
    )]
    ReadConfigMap {
        namespace: String,
        context: String,
        message: String,
    },
    #[error("the {STATUS_KEY} of ConfigMap {namespace}/{CONFIGMAP_NAME} is not valid JSON: {0}", .source)]
    BadJson {
        namespace: String,
        source: serde_json::Error,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the status: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The reader of the output went away (`strata status | head`): nothing to say.
    pub fn is_broken_pipe(&self) -> bool {
        let kind = match self {
            Error::Output(e) => Some(e.kind()),
            Error::Encode(e) => e.io_error_kind(),
            _ => None,
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    }
}

/// Where the status document is read from.
pub enum Source {
    /// `GET <url>/status`.
    Api {
        url: String,
        client: reqwest::Client,
    },
    /// `data["status.json"]` of the ConfigMap `strata-status`.
    ConfigMap {
        api: Box<kube::Api<ConfigMap>>,
        namespace: String,
        /// ` (context X)` for messages, or empty.
        context: String,
    },
}

/// The `/status` URL of `--url` (a base address, or already ending in `/status`).
fn status_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|_| Error::BadUrl {
        url: url.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::BadUrl {
            url: url.to_string(),
        });
    }
    Ok(if trimmed.ends_with("/status") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/status")
    })
}

impl Source {
    /// The source `--url` or `--kubeconfig` names.
    pub async fn new(
        url: Option<&str>,
        kubeconfig: Option<PathBuf>,
        context: Option<&str>,
        namespace: &str,
    ) -> Result<Self> {
        if let Some(url) = url {
            let url = status_url(url)?;
            let local = reqwest::Url::parse(&url).ok().is_some_and(|u| {
                matches!(
                    u.host_str(),
                    Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
                )
            });
            let mut builder = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(crate::kube_api::USER_AGENT);
            if local {
                builder = builder.no_proxy();
            }
            let client = builder
                .build()
                .map_err(|e| Error::HttpClient(e.to_string()))?;
            return Ok(Source::Api { url, client });
        }
        let Some(kubeconfig) = kubeconfig else {
            return Err(Error::NoSource);
        };
        let client = crate::kube_api::client_in_context(Some(&kubeconfig), context).await?;
        Ok(Source::ConfigMap {
            api: Box::new(kube::Api::namespaced(client, namespace)),
            namespace: namespace.to_string(),
            context: context
                .map(|c| format!(" (context {c})"))
                .unwrap_or_default(),
        })
    }

    /// Read the status document once.
    pub async fn read(&self) -> Result<Value> {
        match self {
            Source::Api { url, client } => {
                let resp = client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| Error::Unreachable {
                        url: url.clone(),
                        message: error_chain(&e),
                    })?;
                let code = resp.status().as_u16();
                let body = resp.text().await.map_err(|e| Error::Unreachable {
                    url: url.clone(),
                    message: error_chain(&e),
                })?;
                if code != 200 {
                    return Err(Error::Http {
                        url: url.clone(),
                        code,
                        body: body.chars().take(300).collect(),
                    });
                }
                let doc: Value = serde_json::from_str(&body).map_err(|e| Error::NotStatus {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                if !doc["phase"].is_string() {
                    return Err(Error::NotStatus {
                        url: url.clone(),
                        message: "no \"phase\"".to_string(),
                    });
                }
                Ok(doc)
            }
            Source::ConfigMap {
                api,
                namespace,
                context,
            } => {
                let cm = api
                    .get_opt(CONFIGMAP_NAME)
                    .await
                    .map_err(|e| Error::ReadConfigMap {
                        namespace: namespace.clone(),
                        context: context.clone(),
                        message: crate::kube_api::error_text(&e),
                    })?
                    .ok_or_else(|| Error::NoConfigMap {
                        namespace: namespace.clone(),
                        context: context.clone(),
                    })?;
                let json = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(STATUS_KEY))
                    .ok_or_else(|| Error::NoStatusKey {
                        namespace: namespace.clone(),
                    })?;
                serde_json::from_str(json).map_err(|source| Error::BadJson {
                    namespace: namespace.clone(),
                    source,
                })
            }
        }
    }
}

/// An error with its sources (reqwest's own text says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// How the output is shown: on a terminal of `width` columns, or plain.
#[derive(Debug, Clone, Copy)]
pub enum Screen {
    Terminal { width: usize },
    Plain,
}

/// Run `strata status`, writing to `out`; returns the exit code (see the module docs).
pub async fn run(args: StatusArgs, out: &mut impl Write, screen: Screen) -> Result<u8> {
    let StatusArgs {
        url,
        kubeconfig,
        context,
        namespace,
        output,
        watch,
        wait,
        timeout,
        poll,
    } = args;
    let source = Source::new(url.as_deref(), kubeconfig, context.as_deref(), &namespace).await?;
    if !watch && !wait {
        let status = source.read().await?;
        show(out, output, &status)?;
        return Ok(view::verdict(&status).exit_code());
    }
    let poll = poll.max(Duration::from_millis(100));
    let deadline = wait.then(|| tokio::time::Instant::now() + timeout);
    let mut follow = watch.then(|| Follow::new(output, screen));
    let mut last: Option<Value> = None;
    let mut last_error: Option<Error> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timed_out = loop {
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break false,
            () = sleep_until_deadline => break true,
        }
        match source.read().await {
            Ok(status) => {
                last_error = None;
                if let Some(f) = follow.as_mut() {
                    f.status(out, &status)?;
                }
                let v = view::verdict(&status);
                last = Some(status);
                if wait && v.is_final() {
                    break false;
                }
            }
            Err(e) => {
                // Followed and waited for: an agent restarting or a ConfigMap not written
                // yet may come back; say so and keep reading.
                if let Some(f) = follow.as_mut() {
                    f.error(out, &e)?;
                }
                last_error = Some(e);
            }
        }
    };
    let Some(status) = last else {
        return Err(last_error.unwrap_or(Error::NoSource));
    };
    let verdict = view::verdict(&status);
    match follow {
        Some(f) => f.finish(out)?,
        // --wait alone shows only where it ended.
        None => show(out, output, &status)?,
    }
    if timed_out {
        eprintln!(
            "strata status: {verdict} after waiting {timeout:?} (--timeout){}",
            last_error
                .map(|e| format!("; the last read failed: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(verdict.exit_code())
}

/// Print one status: the layered view, or the JSON.
fn show(out: &mut impl Write, output: OutputFormat, status: &Value) -> Result<()> {
    match output {
        OutputFormat::Text => write!(out, "{}", view::details(status))?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, status)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `--watch`: what was shown so far.
struct Follow {
    output: OutputFormat,
    screen: Screen,
    started: Instant,
    tracker: Tracker,
    board: LiveBoard,
    last: Option<Value>,
    last_error: Option<String>,
}

impl Follow {
    fn new(output: OutputFormat, screen: Screen) -> Self {
        Self {
            output,
            screen,
            started: Instant::now(),
            tracker: Tracker::new(),
            board: LiveBoard::new(),
            last: None,
            last_error: None,
        }
    }

    fn stamp(&self) -> String {
        format!("[{:>6.1}s]", self.started.elapsed().as_secs_f64())
    }

    fn status(&mut self, out: &mut impl Write, status: &Value) -> Result<()> {
        let changed = self.last.as_ref() != Some(status) || self.last_error.is_some();
        self.last_error = None;
        match (self.output, self.screen) {
            (OutputFormat::Json, _) => {
                if changed {
                    serde_json::to_writer(&mut *out, status)?;
                    writeln!(out)?;
                }
            }
            (OutputFormat::Text, Screen::Terminal { width }) => {
                self.board.draw(out, &view::board(status, width))?;
            }
            (OutputFormat::Text, Screen::Plain) => {
                for event in self.tracker.update(status) {
                    writeln!(out, "{} {event}", self.stamp())?;
                }
            }
        }
        out.flush()?;
        self.last = Some(status.clone());
        Ok(())
    }

    fn error(&mut self, out: &mut impl Write, e: &Error) -> Result<()> {
        let text = format!("cannot read the status (retrying): {e}");
        if self.last_error.as_ref() == Some(&text) {
            return Ok(());
        }
        match (self.output, self.screen) {
            (OutputFormat::Text, Screen::Terminal { width }) => {
                let mut lines = self
                    .last
                    .as_ref()
                    .map(|s| view::board(s, width))
                    .unwrap_or_default();
                lines.push(text.chars().take(width.saturating_sub(1)).collect());
                self.board.draw(out, &lines)?;
            }
            // Errors go to stderr with JSON output: stdout stays one document per line.
            (OutputFormat::Json, _) => eprintln!("strata status: {text}"),
            (OutputFormat::Text, Screen::Plain) => writeln!(out, "{} {text}", self.stamp())?,
        }
        out.flush()?;
        self.last_error = Some(text);
        Ok(())
    }

    fn finish(self, out: &mut impl Write) -> Result<()> {
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_urls() {
        assert_eq!(
            status_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/status"
        );
        assert_eq!(status_url("http://h:1/").unwrap(), "http://h:1/status");
        assert_eq!(
            status_url("https://h/strata/status").unwrap(),
            "https://h/strata/status"
        );
        for bad in ["127.0.0.1:8080", "ftp://h", "", "http://"] {
            assert!(
                matches!(status_url(bad), Err(Error::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_closed_pipe_is_recognised() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(Error::Output(pipe()).is_broken_pipe());
        assert!(Error::Encode(serde_json::Error::io(pipe())).is_broken_pipe());
        assert!(!Error::NoSource.is_broken_pipe());
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_an_actionable_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let source = Source::new(Some(&format!("http://127.0.0.1:{port}")), None, None, "ns")
            .await
            .unwrap();
        let e = source.read().await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("http://127.0.0.1:{port}/status")),
            "{e}"
        );
        assert!(e.contains("--listen address"), "{e}");
        assert!(
            matches!(
                Source::new(None, None, None, "ns").await,
                Err(Error::NoSource)
            ),
            "neither --url nor --kubeconfig"
        );
    }
}
