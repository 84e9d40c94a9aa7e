//! A real Git server for tests: `git http-backend` run as CGI per HTTP request (smart HTTP,
//! optional basic auth) and `git daemon --inetd` per accepted connection (git://), both on
//! 127.0.0.1 ports chosen by the kernel, plus [`TestRepo`] to build repositories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

use crate::http::{self, HttpServer, Request, Response};

/// Fixed identity and dates so commits are reproducible.
const GIT_ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "strata tests"),
    ("GIT_AUTHOR_EMAIL", "tests@strata.invalid"),
    ("GIT_COMMITTER_NAME", "strata tests"),
    ("GIT_COMMITTER_EMAIL", "tests@strata.invalid"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_TERMINAL_PROMPT", "0"),
];

fn git_command(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(GIT_ENV.iter().copied())
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
            "-c",
            "core.autocrlf=false",
        ]);
    cmd
}

/// Runs git in `dir` and returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = git_command(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A Git working repository (non-bare) that tests write files into and commit.
pub struct TestRepo {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
    commits: Mutex<u64>,
}

impl TestRepo {
    /// A new repository in its own temporary directory (removed on drop).
    pub fn new() -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let mut repo = Self::init(temp.path())?;
        repo._temp = Some(temp);
        Ok(repo)
    }

    /// Initialises a repository at `path` (created if missing), branch `main`.
    pub fn init(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        git(path, &["init", "--quiet", "--initial-branch=main"])?;
        Ok(Self {
            path: path.to_path_buf(),
            _temp: None,
            commits: Mutex::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file (parents created).
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> anyhow::Result<&Self> {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content)?;
        Ok(self)
    }

    /// Removes a file.
    pub fn remove(&self, rel: &str) -> anyhow::Result<&Self> {
        std::fs::remove_file(self.path.join(rel))?;
        Ok(self)
    }

    /// Copies a directory tree into the repository at `rel`.
    pub fn copy_dir(&self, src: &Path, rel: &str) -> anyhow::Result<&Self> {
        crate::copy_dir(src, &self.path.join(rel))?;
        Ok(self)
    }

    /// Stages everything and commits; returns the commit SHA. Dates advance by one second per
    /// commit from a fixed start, so SHAs are reproducible.
    pub fn commit(&self, message: &str) -> anyhow::Result<String> {
        let n = {
            let mut c = self.commits.lock().expect("lock");
            *c += 1;
            *c
        };
        let date = format!("{} +0000", 1_700_000_000 + n);
        git(&self.path, &["add", "--all"])?;
        let out = git_command(&self.path)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(["commit", "--quiet", "--allow-empty", "-m", message])
            .output()?;
        if !out.status.success() {
            bail!(
                "git commit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.head()
    }

    /// The SHA of HEAD.
    pub fn head(&self) -> anyhow::Result<String> {
        git(&self.path, &["rev-parse", "HEAD"])
    }

    /// Creates an annotated tag at HEAD.
    pub fn tag(&self, name: &str) -> anyhow::Result<()> {
        git(&self.path, &["tag", "-a", name, "-m", name])?;
        Ok(())
    }

    /// Creates a lightweight tag at HEAD.
    pub fn lightweight_tag(&self, name: &str) -> anyhow::Result<()> {
        git(&self.path, &["tag", name])?;
        Ok(())
    }

    /// Creates (or resets) a branch at HEAD and switches to it.
    pub fn branch(&self, name: &str) -> anyhow::Result<()> {
        git(&self.path, &["checkout", "--quiet", "-B", name])?;
        Ok(())
    }

    /// Switches to an existing branch.
    pub fn checkout(&self, name: &str) -> anyhow::Result<()> {
        git(&self.path, &["checkout", "--quiet", name])?;
        Ok(())
    }
}

/// Serves every repository under a root directory over smart HTTP (`git http-backend`) and
/// optionally git:// (`git daemon --inetd`).
pub struct GitServer {
    root: tempfile::TempDir,
    http: HttpServer,
    ca_pem: Option<String>,
    client_cert: Option<crate::tls::ClientCert>,
    daemon: Mutex<Option<Arc<DaemonServer>>>,
    gate: Arc<http::Gate>,
}

/// Basic auth credentials.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl GitServer {
    /// Starts a server without authentication.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Starts a server requiring basic auth on every HTTP request.
    pub async fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some(BasicAuth {
            user: user.into(),
            password: password.into(),
        }))
        .await
    }

    /// Starts a server over HTTPS with a certificate from a fresh test CA
    /// ([`GitServer::ca_pem`]).
    pub async fn start_tls() -> anyhow::Result<Self> {
        Self::start_full(None, Some(crate::tls::TestTls::generate()?)).await
    }

    /// Starts a server over HTTPS that requires a client certificate signed by its test CA
    /// (mutual TLS): [`GitServer::client_cert`].
    pub async fn start_mtls() -> anyhow::Result<Self> {
        Self::start_full(None, Some(crate::tls::TestTls::generate_mtls()?)).await
    }

    /// The client certificate a server started with [`GitServer::start_mtls`] requires.
    pub fn client_cert(&self) -> Option<&crate::tls::ClientCert> {
        self.client_cert.as_ref()
    }

    /// The CA certificate (PEM) of an HTTPS server.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    async fn start_with(auth: Option<BasicAuth>) -> anyhow::Result<Self> {
        Self::start_full(auth, None).await
    }

    async fn start_full(
        auth: Option<BasicAuth>,
        tls: Option<crate::tls::TestTls>,
    ) -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let project_root = root.path().to_path_buf();
        let gate = Arc::new(http::Gate::default());
        let g = gate.clone();
        let handler: http::Handler = Arc::new(move |req: Request| {
            let project_root = project_root.clone();
            let auth = auth.clone();
            let gate = g.clone();
            Box::pin(async move {
                gate.pass().await;
                let user = match &auth {
                    Some(a) => {
                        if !http::basic_auth_ok(&req.headers, &a.user, &a.password) {
                            return http::unauthorized();
                        }
                        Some(a.user.clone())
                    }
                    None => None,
                };
                match cgi(&project_root, user.as_deref(), req).await {
                    Ok(resp) => resp,
                    Err(e) => http::response(500, format!("http-backend failed: {e:#}\n")),
                }
            })
        });
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let client_cert = tls.as_ref().and_then(|t| t.client.clone());
        let http = match tls {
            Some(t) => HttpServer::start_tls(handler, t.server).await?,
            None => HttpServer::start(handler).await?,
        };
        Ok(Self {
            root,
            http,
            ca_pem,
            client_cert,
            daemon: Mutex::new(None),
            gate,
        })
    }

    /// The directory holding the repositories.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Creates a repository served as `name`.
    pub fn create_repo(&self, name: &str) -> anyhow::Result<TestRepo> {
        TestRepo::init(&self.root.path().join(name))
    }

    /// `http://127.0.0.1:PORT/NAME` (`https://` with TLS).
    pub fn http_url(&self, name: &str) -> String {
        format!("{}/{name}", self.http.url())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// The gate every HTTP request passes before it is served: close it to hold fetches
    /// (see [`http::Gate`]).
    pub fn gate(&self) -> &http::Gate {
        &self.gate
    }

    /// HTTP requests served so far.
    pub fn http_requests(&self) -> usize {
        self.http.requests()
    }

    /// Stops the HTTP server (and the daemon); connections fail until [`GitServer::restart`].
    pub fn stop(&self) {
        self.http.stop();
        if let Some(d) = self.daemon.lock().expect("lock").as_ref() {
            d.stop();
        }
    }

    /// Starts again on the same port(s).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.http.restart().await?;
        let daemon = self.daemon.lock().expect("lock").clone();
        if let Some(d) = daemon {
            d.restart().await?;
        }
        Ok(())
    }

    /// Starts `git daemon` for git:// on 127.0.0.1 (once) and returns `git://127.0.0.1:PORT/NAME`.
    pub fn git_url(&self, name: &str) -> anyhow::Result<String> {
        let mut guard = self.daemon.lock().expect("lock");
        if guard.is_none() {
            *guard = Some(Arc::new(DaemonServer::start(self.root.path())?));
        }
        let addr = guard.as_ref().expect("started").addr;
        Ok(format!("git://{addr}/{name}"))
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `git http-backend` for one request.
async fn cgi(root: &Path, user: Option<&str>, req: Request) -> anyhow::Result<Response> {
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", req.method.as_str())
        .env("PATH_INFO", req.uri.path())
        .env("QUERY_STRING", req.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let encoding = header("content-encoding");
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let protocol = header("git-protocol");
    if !protocol.is_empty() {
        cmd.env("HTTP_GIT_PROTOCOL", protocol);
    }
    if let Some(u) = user {
        cmd.env("REMOTE_USER", u);
    }
    let mut child = cmd.spawn().context("spawning git http-backend")?;
    let mut stdin = child.stdin.take().expect("piped");
    let body = req.body.clone();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut stdout)
        .await?;
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_end(&mut stderr)
        .await?;
    let _ = writer.await;
    child.wait().await?;
    parse_cgi(&stdout)
}

/// Parses a CGI response (headers, blank line, body; `Status:` gives the code).
pub fn parse_cgi(out: &[u8]) -> anyhow::Result<Response> {
    let (head_end, body_start) = if let Some(i) = find(out, b"\r\n\r\n") {
        (i, i + 4)
    } else if let Some(i) = find(out, b"\n\n") {
        (i, i + 2)
    } else {
        bail!("CGI response without header end");
    };
    let head = String::from_utf8_lossy(&out[..head_end]);
    let mut builder = ::http::Response::builder().status(200);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    Ok(builder.body(Full::new(Bytes::copy_from_slice(&out[body_start..])))?)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `git daemon --inetd` spawned per accepted connection.
struct DaemonServer {
    addr: SocketAddr,
    root: PathBuf,
    token: Mutex<Option<CancellationToken>>,
}

impl DaemonServer {
    fn start(root: &Path) -> anyhow::Result<Self> {
        let mut server = Self {
            addr: "127.0.0.1:0".parse().expect("valid"),
            root: root.to_path_buf(),
            token: Mutex::new(None),
        };
        server.addr = server.serve(server.addr)?;
        Ok(server)
    }

    fn stop(&self) {
        if let Some(t) = self.token.lock().expect("lock").take() {
            t.cancel();
        }
    }

    async fn restart(&self) -> anyhow::Result<()> {
        self.stop();
        let mut last = None;
        for _ in 0..100 {
            match self.serve(self.addr) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(last.expect("tried"))
    }

    fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(64)?;
        let bound = listener.local_addr()?;
        let token = CancellationToken::new();
        *self.token.lock().expect("lock") = Some(token.clone());
        let root = self.root.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let root = root.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let child = tokio::process::Command::new("git")
                        .arg("daemon")
                        .arg("--inetd")
                        .arg("--export-all")
                        .arg("--informative-errors")
                        .arg(format!("--base-path={}", root.display()))
                        .arg(&root)
                        .env_clear()
                        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                        .env("HOME", &root)
                        .env("GIT_CONFIG_NOSYSTEM", "1")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .kill_on_drop(true)
                        .spawn();
                    let Ok(mut child) = child else { return };
                    let mut child_in = child.stdin.take().expect("piped");
                    let mut child_out = child.stdout.take().expect("piped");
                    let (mut sock_read, mut sock_write) = stream.into_split();
                    let pump_in = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sock_read, &mut child_in).await;
                        let _ = child_in.shutdown().await;
                    });
                    let from_child = async {
                        let _ = tokio::io::copy(&mut child_out, &mut sock_write).await;
                        let _ = sock_write.shutdown().await;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = from_child => {}
                    }
                    pump_in.abort();
                    let _ = child.kill().await;
                });
            }
        });
        Ok(bound)
    }
}
