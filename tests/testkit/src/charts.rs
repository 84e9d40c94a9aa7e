//! A Helm chart repository over HTTP: charts packaged with the real `helm package`, the index
//! generated with the real `helm repo index --url`, a request counter per path, failure
//! injection (HTTP 500) and optional basic auth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use sha2::Digest;

use crate::http::{self, HttpServer, Request};

#[derive(Default)]
struct State {
    /// Requests per path.
    counts: Mutex<BTreeMap<String, usize>>,
    /// Fail this many next requests with 500.
    fail_next: AtomicUsize,
    /// Fail every request with 500 while set.
    failing: AtomicBool,
    /// 304 Not Modified answers given.
    not_modified: AtomicUsize,
    /// Chart archive (`*.tgz`) downloads pass this gate.
    downloads: http::Gate,
}

/// An HTTP Helm repository serving a directory.
pub struct ChartRepo {
    dir: tempfile::TempDir,
    helm_home: tempfile::TempDir,
    helm: PathBuf,
    server: HttpServer,
    state: Arc<State>,
    ca_pem: Option<String>,
    client_cert: Option<crate::tls::ClientCert>,
}

impl ChartRepo {
    /// Starts an empty repository (serving an index with no entries once charts are added).
    pub async fn start(helm: &Path) -> anyhow::Result<Self> {
        Self::start_with(helm, None).await
    }

    /// Starts a repository requiring basic auth.
    pub async fn start_with_auth(helm: &Path, user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(helm, Some((user.to_string(), password.to_string()))).await
    }

    /// Starts a repository with the given chart directories packaged and indexed.
    pub async fn with_charts(helm: &Path, charts: &[&Path]) -> anyhow::Result<Self> {
        let repo = Self::start(helm).await?;
        for c in charts {
            repo.package(c)?;
        }
        repo.reindex()?;
        Ok(repo)
    }

    /// Starts a repository served over HTTPS with a certificate from a fresh test CA
    /// ([`ChartRepo::ca_pem`]).
    pub async fn start_tls(helm: &Path) -> anyhow::Result<Self> {
        let tls = crate::tls::TestTls::generate()?;
        Self::start_full(helm, None, Some(tls)).await
    }

    /// Starts a repository served over HTTPS that requires a client certificate signed by
    /// its test CA (mutual TLS); the certificate is [`ChartRepo::client_cert`].
    pub async fn start_mtls(helm: &Path) -> anyhow::Result<Self> {
        let tls = crate::tls::TestTls::generate_mtls()?;
        Self::start_full(helm, None, Some(tls)).await
    }

    /// The client certificate a repository started with [`ChartRepo::start_mtls`] requires.
    pub fn client_cert(&self) -> Option<&crate::tls::ClientCert> {
        self.client_cert.as_ref()
    }

    /// The CA certificate (PEM) of an HTTPS repository.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    async fn start_with(helm: &Path, auth: Option<(String, String)>) -> anyhow::Result<Self> {
        Self::start_full(helm, auth, None).await
    }

    async fn start_full(
        helm: &Path,
        auth: Option<(String, String)>,
        tls: Option<crate::tls::TestTls>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let state = Arc::new(State::default());
        let st = state.clone();
        let handler: http::Handler = Arc::new(move |req: Request| {
            let root = root.clone();
            let st = st.clone();
            let auth = auth.clone();
            Box::pin(async move {
                let path = req.uri.path().to_string();
                *st.counts
                    .lock()
                    .expect("lock")
                    .entry(path.clone())
                    .or_default() += 1;
                if let Some((u, p)) = &auth
                    && !http::basic_auth_ok(&req.headers, u, p)
                {
                    return http::unauthorized();
                }
                if path.ends_with(".tgz") {
                    st.downloads.pass().await;
                }
                if st.failing.load(Ordering::SeqCst)
                    || st
                        .fail_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    return http::response(500, "injected failure\n");
                }
                let resp = serve_file(&root, &path, &req);
                if resp.status() == 304 {
                    st.not_modified.fetch_add(1, Ordering::SeqCst);
                }
                resp
            })
        });
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let client_cert = tls.as_ref().and_then(|t| t.client.clone());
        let server = match tls {
            Some(t) => HttpServer::start_tls(handler, t.server).await?,
            None => HttpServer::start(handler).await?,
        };
        Ok(Self {
            dir,
            helm_home: tempfile::tempdir()?,
            helm: helm.to_path_buf(),
            server,
            state,
            ca_pem,
            client_cert,
        })
    }

    /// The repository URL (`http://127.0.0.1:PORT`, or `https://` with TLS).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The served directory (tests may tamper with files in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Packages a chart directory into the repository with `helm package`; returns the .tgz.
    /// Call [`ChartRepo::reindex`] afterwards.
    pub fn package(&self, chart_dir: &Path) -> anyhow::Result<PathBuf> {
        package_chart(
            &self.helm,
            self.helm_home.path(),
            chart_dir,
            self.dir.path(),
        )
    }

    /// Regenerates `index.yaml` with `helm repo index --url`.
    pub fn reindex(&self) -> anyhow::Result<()> {
        let out = helm_command(&self.helm, self.helm_home.path())
            .args(["repo", "index"])
            .arg(self.dir.path())
            .args(["--url", &self.url()])
            .output()?;
        if !out.status.success() {
            bail!(
                "helm repo index failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Packages and indexes a chart (both steps).
    pub fn add_chart(&self, chart_dir: &Path) -> anyhow::Result<PathBuf> {
        let tgz = self.package(chart_dir)?;
        self.reindex()?;
        Ok(tgz)
    }

    /// Requests received for a path (e.g. `/index.yaml`, `/cert-manager-1.0.0.tgz`).
    pub fn requests(&self, path: &str) -> usize {
        self.state
            .counts
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// How many requests were answered 304 Not Modified (ETag revalidation).
    pub fn not_modified(&self) -> usize {
        self.state.not_modified.load(Ordering::SeqCst)
    }

    /// Every request received, by path.
    pub fn request_counts(&self) -> BTreeMap<String, usize> {
        self.state.counts.lock().expect("lock").clone()
    }

    /// The gate chart archive (`*.tgz`) downloads pass: close it to hold downloads (see
    /// [`http::Gate`]); the index is not held.
    pub fn downloads_gate(&self) -> &http::Gate {
        &self.state.downloads
    }

    /// Answer the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answer every request with 500 until called with `false`.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.server.stop();
    }

    pub async fn restart(&self) -> anyhow::Result<()> {
        self.server.restart().await
    }
}

fn serve_file(root: &Path, path: &str, req: &Request) -> http::Response {
    if req.method != ::http::Method::GET && req.method != ::http::Method::HEAD {
        return http::response(405, "method not allowed\n");
    }
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|s| s == ".." || s.is_empty()) {
        return http::response(404, "not found\n");
    }
    let Ok(data) = std::fs::read(root.join(rel)) else {
        return http::response(404, "not found\n");
    };
    let etag = format!("\"{:x}\"", sha2::Sha256::digest(&data));
    let inm = req
        .headers
        .get(::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if inm == Some(etag.as_str()) {
        return ::http::Response::builder()
            .status(304)
            .header(::http::header::ETAG, etag)
            .body(Full::new(Bytes::new()))
            .expect("valid");
    }
    let content_type = if rel.ends_with(".yaml") {
        "application/x-yaml"
    } else {
        "application/gzip"
    };
    ::http::Response::builder()
        .status(200)
        .header(::http::header::CONTENT_TYPE, content_type)
        .header(::http::header::ETAG, etag)
        .body(Full::new(if req.method == ::http::Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(data)
        }))
        .expect("valid")
}

/// A helm command with its homes under `home` (never the user's).
pub fn helm_command(helm: &Path, home: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(helm);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// `helm package CHART_DIR -d OUT_DIR`; returns the archive path.
pub fn package_chart(
    helm: &Path,
    home: &Path,
    chart_dir: &Path,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let out = helm_command(helm, home)
        .arg("package")
        .arg(chart_dir)
        .arg("--destination")
        .arg(out_dir)
        .output()
        .with_context(|| format!("running helm package {}", chart_dir.display()))?;
    if !out.status.success() {
        bail!(
            "helm package {} failed: {}",
            chart_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "Successfully packaged chart and saved it to: /path/x-1.0.0.tgz"
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text
        .lines()
        .find_map(|l| {
            l.split_once("saved it to:")
                .map(|(_, p)| p.trim().to_string())
        })
        .with_context(|| format!("helm package printed no archive path: {text}"))?;
    Ok(PathBuf::from(path))
}
