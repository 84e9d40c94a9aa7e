//! The Git source: fetches a repository (https, http, ssh, git://, file:// or a local path) at
//! a branch, tag or commit into a bare cache repository reused across fetches, resolves it to a
//! commit SHA, and reads files at that commit. Everything goes through the git CLI via
//! [`crate::executor::process`]: no global or system config, no terminal prompts, credentials passed in
//! the environment (never in URLs or arguments) and redacted from every message.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use crate::executor::process::{self, Command, Redactor};
use crate::source::auth::BasicAuth;
use crate::source::tree::{self, Node, Resolved, Resolver, Step};

/// Default timeout of one git command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest file [`GitSource::read_file`] returns.
pub const MAX_FILE: usize = 16 * 1024 * 1024;

/// Why a fetch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FetchFailure {
    /// The server could not be reached (down, refused, DNS).
    Unreachable,
    /// The server refused the credentials (or asked for some).
    Authentication,
    /// The branch, tag or commit does not exist.
    RefNotFound,
    /// The server's certificate is not trusted (set a CA file), or the server refused the
    /// handshake (it requires a client certificate).
    Tls,
    /// The server did not answer in time.
    Timeout,
    /// Anything else.
    Other,
}

/// Errors of the Git source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not fetch {url} at {reference} ({kind:?}): {message}")]
    Fetch {
        /// The URL with credentials redacted.
        url: String,
        reference: String,
        kind: FetchFailure,
        message: String,
    },
    #[error("git {op} in the cache {} failed: {source}", path.display())]
    Git {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<process::Error>,
    },
    #[error("{path} at commit {commit} is larger than {limit} bytes")]
    FileTooLarge {
        commit: String,
        path: String,
        limit: usize,
    },
    #[error("{path} is not a valid path in the repository: {reason}")]
    BadPath { path: String, reason: &'static str },
    /// A symlink on the way to a file may not be followed (see [`crate::source::tree`]).
    #[error("{0}")]
    Link(String),
    #[error("{path} at commit {commit} is {what}, not a file")]
    NotAFile {
        commit: String,
        path: String,
        what: &'static str,
    },
    #[error(
        "the Git cache {} is corrupt ({message}); the next fetch clones it again",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("could not prepare {}", crate::source::disk::describe(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the error is about the revision's content (an out-of-bounds symlink, a
    /// directory where a file is expected): a problem of the revision, not of the cache.
    pub fn is_revision_problem(&self) -> bool {
        matches!(self, Error::Link(_) | Error::NotAFile { .. })
    }

    pub fn fetch_failure(&self) -> Option<FetchFailure> {
        match self {
            Error::Fetch { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Credentials for the Git server.
#[derive(Clone, Default)]
pub struct GitAuth {
    /// HTTP(S) basic auth (a token goes in `password`).
    pub basic: Option<BasicAuth>,
    /// SSH private key file for ssh:// and scp-like URLs.
    pub ssh_key: Option<PathBuf>,
    /// known_hosts for SSH; without it, host keys are accepted on first use and remembered
    /// in the work dir.
    pub known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("basic", &self.basic.as_ref().map(|b| &b.username))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// A fetched revision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Revision {
    /// Full commit SHA.
    pub commit: String,
    /// The ref asked for (branch, tag or commit).
    pub reference: String,
    /// The URL, credentials redacted.
    pub url: String,
}

/// A Git repository at a ref, cached under a directory.
#[derive(Clone, Debug)]
pub struct GitSource {
    url: String,
    reference: String,
    cache: PathBuf,
    home: PathBuf,
    auth: GitAuth,
    ca_file: Option<PathBuf>,
    /// Client certificate and key files (PEM) for HTTPS (mTLS).
    client_cert: Option<(PathBuf, PathBuf)>,
    timeout: Duration,
    redactor: Redactor,
    /// Serialises this process's git calls on the cache: fetches (which write the cache and
    /// take git's lock files) hold it exclusively, reads share it. Clones share it.
    lock: std::sync::Arc<tokio::sync::RwLock<()>>,
    /// Set when a read saw the cache corrupt: the next fetch clones it again.
    needs_repair: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Why one fetch attempt failed: the cache is broken (clone it again) or anything else.
enum Attempt {
    Corrupt(String),
    Failed(Error),
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        Attempt::Failed(e)
    }
}

/// What a ref string names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefKind {
    /// 40 (or 64) hex digits.
    FullCommit,
    /// 4 to 39 hex digits: maybe an abbreviated commit, maybe a branch or tag name.
    MaybeShortCommit,
    /// A branch or tag name.
    Name,
}

/// Classifies a ref.
pub fn ref_kind(reference: &str) -> RefKind {
    let hex = !reference.is_empty() && reference.chars().all(|c| c.is_ascii_hexdigit());
    match reference.len() {
        40 | 64 if hex => RefKind::FullCommit,
        4..=39 if hex => RefKind::MaybeShortCommit,
        _ => RefKind::Name,
    }
}

/// Why a ref cannot name a branch, tag or commit (git's ref-name rules, simplified), if so.
pub fn invalid_ref(reference: &str) -> Option<&'static str> {
    if reference.is_empty() {
        Some("it is empty")
    } else if reference.starts_with('-') {
        Some("it starts with '-'")
    } else if reference.contains("..") || reference.contains("@{") {
        Some("it contains '..' or '@{'")
    } else if reference
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        Some("it contains a space, control character or one of ~ ^ : ? * [ \\")
    } else if reference.ends_with('/') || reference.ends_with('.') || reference.ends_with(".lock") {
        Some("it ends with '/', '.' or '.lock'")
    } else {
        None
    }
}

/// Whether git's (lowercased) stderr says the server ended the TLS handshake with an alert,
/// which is what a server requiring a client certificate does to a client without one (or
/// with one it does not accept): GnuTLS and OpenSSL builds of git.
fn is_tls_alert(m: &str) -> bool {
    m.contains("tls fatal alert")
        || m.contains("alert certificate required")
        || m.contains("alert bad certificate")
        || m.contains("alert unknown ca")
        || m.contains("tlsv13 alert certificate required")
}

/// Classifies git's stderr of a failed fetch.
pub fn classify_fetch(stderr: &str) -> FetchFailure {
    let m = stderr.to_ascii_lowercase();
    if m.contains("ssl certificate problem")
        || m.contains("server certificate verification failed")
        || is_tls_alert(&m)
    {
        FetchFailure::Tls
    } else if m.contains("authentication failed")
        || m.contains("could not read username")
        || m.contains("could not read password")
        || m.contains("http basic: access denied")
        || m.contains("permission denied (publickey")
        || m.contains("returned error: 401")
        || m.contains("returned error: 403")
        || m.contains("host key verification failed")
    {
        FetchFailure::Authentication
    } else if m.contains("couldn't find remote ref")
        || m.contains("not our ref")
        || m.contains("no such ref")
        || m.contains("unadvertised object")
        || m.contains("invalid refspec")
        || m.contains("remote error: upload-pack: not our ref")
    {
        FetchFailure::RefNotFound
    } else if m.contains("connection refused")
        || m.contains("could not resolve host")
        || m.contains("failed to connect")
        || m.contains("couldn't connect")
        || m.contains("unable to connect")
        || m.contains("connection reset")
        || m.contains("unable to look up")
        || m.contains("returned error: 5")
        || m.contains("does not appear to be a git repository")
        || m.contains("repository not found")
        || m.contains("returned error: 404")
        || m.contains("not found")
    {
        FetchFailure::Unreachable
    } else if m.contains("timed out") || m.contains("timeout") {
        FetchFailure::Timeout
    } else {
        FetchFailure::Other
    }
}

impl GitSource {
    /// A source for `url` at `reference` (branch, tag, full or abbreviated commit), caching
    /// under `cache_dir`.
    pub fn new(
        url: impl Into<String>,
        reference: impl Into<String>,
        cache_dir: impl Into<PathBuf>,
        auth: GitAuth,
        redactor: Redactor,
    ) -> Self {
        let url = url.into();
        let cache_dir = cache_dir.into();
        if let Some(b) = &auth.basic {
            redactor.add(b.password.clone());
            redactor.add(b.encoded());
        }
        let key = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
        Self {
            cache: cache_dir.join("repos").join(format!("{}.git", &key[..16])),
            home: cache_dir.join("home"),
            url,
            reference: reference.into(),
            auth,
            ca_file: None,
            client_cert: None,
            timeout: DEFAULT_TIMEOUT,
            redactor,
            lock: Default::default(),
            needs_repair: Default::default(),
        }
    }

    /// The same source (ref, credentials, CA, timeout) fetching from `url` instead, cached
    /// beside this one (a mirror the site's mirrors now point to).
    pub fn with_url(&self, url: impl Into<String>) -> Self {
        let url = url.into();
        let key = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
        let repos = self
            .cache
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self {
            cache: repos.join(format!("{}.git", &key[..16])),
            url,
            lock: Default::default(),
            needs_repair: Default::default(),
            ..self.clone()
        }
    }

    /// Trusts the CA certificates (PEM) in `ca_file` for HTTPS (git's `http.sslCAInfo`).
    pub fn with_ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca_file.into());
        self
    }

    /// Presents the client certificate in `cert_file` with its key `key_file` (PEM) to HTTPS
    /// servers that require one (git's `http.sslCert` and `http.sslKey`).
    pub fn with_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some((cert_file.into(), key_file.into()));
        self
    }

    /// Sets the timeout of each git command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL fetched from (credentials included; show [`GitSource::display_url`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with credentials redacted.
    pub fn display_url(&self) -> String {
        self.redactor.redact(&self.url)
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The bare cache repository.
    pub fn cache_path(&self) -> &Path {
        &self.cache
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("HOME".into(), self.home.clone().into()),
            ("XDG_CONFIG_HOME".into(), self.home.join(".config").into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_ASKPASS".into(), "".into()),
            ("SSH_ASKPASS".into(), "".into()),
            ("LC_ALL".into(), "C".into()),
        ];
        let mut config: Vec<(String, String)> = vec![
            ("protocol.version".into(), "2".into()),
            ("core.askPass".into(), "".into()),
            ("credential.helper".into(), "".into()),
            ("gc.auto".into(), "0".into()),
        ];
        if let Some(ca) = &self.ca_file {
            config.push(("http.sslCAInfo".into(), ca.display().to_string()));
        }
        if let Some((cert, key)) = &self.client_cert {
            config.push(("http.sslCert".into(), cert.display().to_string()));
            config.push(("http.sslKey".into(), key.display().to_string()));
        }
        if let Some(b) = &self.auth.basic {
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: {}", b.header_value()),
            ));
        }
        env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string().into()));
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}").into(), k.into()));
            env.push((format!("GIT_CONFIG_VALUE_{i}").into(), v.into()));
        }
        if self.auth.ssh_key.is_some() || self.auth.known_hosts.is_some() {
            let mut ssh = String::from("ssh -o BatchMode=yes -o IdentitiesOnly=yes");
            if let Some(k) = &self.auth.ssh_key {
                ssh.push_str(&format!(" -i '{}'", k.display()));
            }
            match &self.auth.known_hosts {
                Some(kh) => ssh.push_str(&format!(
                    " -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes",
                    kh.display()
                )),
                None => ssh.push_str(&format!(
                    " -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=accept-new",
                    self.home.join("known_hosts").display()
                )),
            }
            env.push(("GIT_SSH_COMMAND".into(), ssh.into()));
        }
        env
    }

    fn git(&self, args: &[&str]) -> Command {
        Command::new("git")
            .arg("--git-dir")
            .arg(&self.cache)
            .args(args)
            .envs(self.env())
            .inherit_env("SSH_AUTH_SOCK")
            .timeout(self.timeout)
    }

    async fn run(&self, op: &'static str, cmd: Command) -> Result<process::Output> {
        process::run(&cmd, &self.redactor)
            .await
            .map_err(|source| Error::Git {
                op,
                path: self.cache.clone(),
                source: Box::new(source),
            })
    }

    async fn ensure_cache(&self) -> Result<()> {
        if self.cache.join("HEAD").exists() {
            return Ok(());
        }
        if self.cache.exists() {
            // Half made (killed during `git init`) or broken beyond recognition.
            self.discard_cache("the cache has no HEAD")?;
        }
        for dir in [&self.home, self.cache.parent().expect("has parent")] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let cmd = Command::new("git")
            .args(["init", "--bare", "--quiet"])
            .arg(&self.cache)
            .envs(self.env())
            .timeout(self.timeout);
        self.run("init", cmd).await?;
        Ok(())
    }

    /// Runs one `git fetch`; its stderr on success (warnings), on failure the message. Stale
    /// lock files are removed after a failure, and a fetch that failed on one is tried again.
    async fn fetch_refspecs(&self, refspecs: &[&str], shallow: bool) -> Result<String, String> {
        let mut args = vec!["fetch", "--quiet", "--no-tags", "--force"];
        if refspecs.iter().any(|r| r.contains('*')) {
            args.push("--prune");
        }
        if shallow {
            args.push("--depth=1");
        } else if self.cache.join("shallow").exists() {
            args.push("--unshallow");
        }
        args.push("--");
        args.push(&self.url);
        args.extend_from_slice(refspecs);
        let cmd = self.git(&args);
        let mut retried = false;
        loop {
            let message = match process::run(&cmd, &self.redactor).await {
                Ok(out) => return Ok(out.stderr),
                Err(process::Error::Failed { stderr, .. }) => stderr,
                Err(process::Error::Timeout { timeout, .. }) => {
                    format!("timed out after {timeout:?}")
                }
                Err(e) => e.to_string(),
            };
            // Our git has exited and we hold the cache: any lock file left is stale.
            let removed = self.clear_stale_locks();
            if !retried && !removed.is_empty() && mentions_lock_file(&message) {
                retried = true;
                continue;
            }
            return Err(message);
        }
    }

    /// Removes the lock files a killed git leaves in the cache (`shallow.lock`, `HEAD.lock`,
    /// `config.lock`, `packed-refs.lock`, `index.lock`, any `*.lock` under `refs/`). Only
    /// called with the cache held exclusively (in this process by [`GitSource::lock`], across
    /// processes by [`CacheFileLock`]), so no live git of ours holds them. Returns what it
    /// removed.
    fn clear_stale_locks(&self) -> Vec<PathBuf> {
        let removed = remove_stale_locks(&self.cache);
        for path in &removed {
            tracing::warn!(
                path = %path.display(),
                "removed a stale git lock file left by an interrupted git"
            );
        }
        removed
    }

    /// Removes the cache (it is corrupt) so that the next fetch clones it again.
    fn discard_cache(&self, why: &str) -> Result<()> {
        tracing::warn!(
            cache = %self.cache.display(),
            reason = %why.trim(),
            "the Git cache is corrupt; removing it and fetching again"
        );
        match std::fs::remove_dir_all(&self.cache) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                path: self.cache.clone(),
                source,
            }),
        }
    }

    fn fetch_error(&self, message: String) -> Error {
        let kind = classify_fetch(&message);
        let message = if is_tls_alert(&message.to_ascii_lowercase()) {
            let hint = if self.client_cert.is_some() {
                "the server refused the TLS handshake: check that the client certificate (--git-client-cert-file) is valid and signed by a CA the server trusts"
            } else {
                "the server refused the TLS handshake: if it requires a client certificate (mutual TLS), give --git-client-cert-file and --git-client-key-file"
            };
            format!("{}; {hint}", message.trim())
        } else {
            message
        };
        let message = if crate::source::disk::mentions_no_space(&message) {
            let dir = self.cache.parent().expect("has parent");
            format!(
                "{}: {}",
                crate::source::disk::no_space(dir, "git fetch into the cache"),
                message.trim()
            )
        } else {
            message
        };
        Error::Fetch {
            url: self.display_url(),
            reference: self.reference.clone(),
            kind,
            message: self.redactor.redact(message.trim()),
        }
    }

    /// Resolves `rev`; `None` when it names nothing (a corrupt cache is [`Attempt::Corrupt`]).
    async fn rev_parse(&self, rev: &str) -> Result<Option<String>, Attempt> {
        let cmd = self.git(&["rev-parse", "--verify", "--quiet", "--end-of-options", rev]);
        match process::run(&cmd, &self.redactor).await {
            Ok(out) => Ok(Some(out.stdout_text().trim().to_string())),
            Err(process::Error::Failed { stderr, .. }) if is_corrupt(&stderr) => {
                Err(Attempt::Corrupt(stderr))
            }
            Err(process::Error::Failed { .. }) => Ok(None),
            Err(source) => Err(Attempt::Failed(Error::Git {
                op: "rev-parse",
                path: self.cache.clone(),
                source: Box::new(source),
            })),
        }
    }

    /// Fetches the ref from the server and resolves it to a commit.
    #[tracing::instrument(name = "git_fetch", skip(self), fields(url = %self.display_url(), reference = %self.reference))]
    pub async fn fetch(&self) -> Result<Revision> {
        let reference = self.reference.as_str();
        if let Some(reason) = invalid_ref(reference) {
            return Err(Error::Fetch {
                url: self.display_url(),
                reference: reference.to_string(),
                kind: FetchFailure::RefNotFound,
                message: format!("{reference:?} is not a valid branch, tag or commit: {reason}"),
            });
        }
        let _exclusive = self.lock.write().await;
        let _file_lock = CacheFileLock::acquire(&self.cache).await?;
        // No git of ours runs on the cache now: a lock file is one a killed git left (an
        // agent killed in the middle of a fetch, a fetch killed at its timeout).
        self.clear_stale_locks();
        if self
            .needs_repair
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.discard_cache("a read from the cache failed: the cache is corrupt")?;
        }
        let commit = match self.fetch_once().await {
            Ok(c) => c,
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Corrupt(why)) => {
                self.discard_cache(&why)?;
                match self.fetch_once().await {
                    Ok(c) => c,
                    Err(Attempt::Failed(e)) => return Err(e),
                    Err(Attempt::Corrupt(why)) => {
                        return Err(self.fetch_error(format!(
                            "the Git cache is still corrupt after cloning it again: {why}"
                        )));
                    }
                }
            }
        };
        tracing::debug!(%commit, "fetched");
        Ok(Revision {
            commit,
            reference: self.reference.clone(),
            url: self.display_url(),
        })
    }

    /// One fetch into the cache (held exclusively) and the commit it resolves to.
    async fn fetch_once(&self) -> Result<String, Attempt> {
        let reference = self.reference.as_str();
        self.ensure_cache().await?;
        // A fetch failing (or warning) because of the cache says the cache is corrupt.
        let checked = |r: Result<String, String>| match r {
            Ok(warnings) if is_corrupt(&warnings) => Err(Attempt::Corrupt(warnings)),
            Ok(_) => Ok(()),
            Err(m) if is_corrupt(&m) => Err(Attempt::Corrupt(m)),
            Err(m) => Err(Attempt::Failed(self.fetch_error(m))),
        };
        let all = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];
        let target = format!("+{reference}:refs/strata/target");
        let commit = match ref_kind(reference) {
            RefKind::FullCommit => {
                // Servers speaking protocol v2 let us want any reachable commit directly.
                match self.fetch_refspecs(&[&target], true).await {
                    Ok(w) => checked(Ok(w))?,
                    Err(m) if is_corrupt(&m) => return Err(Attempt::Corrupt(m)),
                    Err(_) => checked(self.fetch_refspecs(&all, false).await)?,
                }
                self.rev_parse(&format!("{reference}^{{commit}}")).await?
            }
            kind => match self.fetch_refspecs(&[&target], true).await {
                Ok(w) => {
                    checked(Ok(w))?;
                    self.rev_parse("refs/strata/target^{commit}").await?
                }
                Err(m)
                    if kind == RefKind::MaybeShortCommit
                        && classify_fetch(&m) == FetchFailure::RefNotFound =>
                {
                    // Not a name: an abbreviated commit. Fetch all history to find it.
                    checked(self.fetch_refspecs(&all, false).await)?;
                    self.rev_parse(&format!("{reference}^{{commit}}")).await?
                }
                Err(m) => return Err(checked(Err(m)).unwrap_err()),
            },
        };
        commit.ok_or_else(|| {
            Attempt::Failed(Error::Fetch {
                url: self.display_url(),
                reference: self.reference.clone(),
                kind: FetchFailure::RefNotFound,
                message: format!("no commit named {reference}; check the branch, tag or commit"),
            })
        })
    }

    /// Notes that a read failed because the cache is corrupt (the next fetch repairs it).
    fn note_read_error(&self, e: &Error) {
        let corrupt = match e {
            Error::Git { source, .. } => source.stderr().is_some_and(is_corrupt),
            Error::Corrupt { .. } => true,
            _ => false,
        };
        if corrupt {
            tracing::warn!(error = %e, "the Git cache is corrupt; the next fetch clones it again");
            self.needs_repair
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Writes a `git bundle` of `commit` (fetched before) with its whole history to `out`, its
    /// one ref `refs/strata/bundle`; a shallow cache is deepened from the server first (a
    /// bundle of a shallow commit cannot be pushed anywhere).
    pub async fn bundle(&self, commit: &str, out: &Path) -> Result<()> {
        let _exclusive = self.lock.write().await;
        if self.cache.join("shallow").exists() {
            let target = format!("+{}:refs/strata/target", self.reference);
            if self.fetch_refspecs(&[&target], false).await.is_err() {
                let all = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];
                self.fetch_refspecs(&all, false)
                    .await
                    .map_err(|m| self.fetch_error(m))?;
            }
        }
        let cmd = self.git(&["update-ref", "refs/strata/bundle", commit]);
        self.run("update-ref", cmd).await?;
        let out = out.display().to_string();
        let cmd = self.git(&["bundle", "create", "--quiet", &out, "refs/strata/bundle"]);
        self.run("bundle", cmd).await?;
        Ok(())
    }

    /// Reads a file at a commit; `None` when the path does not exist there.
    pub async fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let _shared = self.lock.read().await;
        let r = self.read_file_inner(commit, path).await;
        if let Err(e) = &r {
            self.note_read_error(e);
        }
        r
    }

    async fn read_file_inner(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let path = clean_path(path)?;
        let (node, blob) = match self.tree_entry(commit, &path).await? {
            (Node::File, blob) => (Node::File, blob),
            // A symlink, or a path through one: follow them inside the repository only.
            (Node::Missing | Node::Symlink(_), _) => {
                let mut resolver = Resolver::new(&path, "");
                let mut blob = None;
                let resolved = loop {
                    match resolver.step() {
                        Step::Done(r) => break r,
                        Step::Lookup(p) => {
                            let (node, b) = self.tree_entry(commit, &p).await?;
                            blob = b;
                            if let Some(Step::Done(r)) = resolver.answer(node) {
                                break r;
                            }
                        }
                    }
                };
                match resolved {
                    Ok(Resolved::Missing) => return Ok(None),
                    Ok(Resolved::Found { node, .. }) => (node, blob),
                    Err(e) => {
                        return Err(Error::Link(format!(
                            "{} (commit {commit})",
                            e.describe("the repository")
                        )));
                    }
                }
            }
            other => other,
        };
        let (oid, size) = match (node, blob) {
            (Node::File, Some(blob)) => blob,
            (node, _) => {
                return Err(Error::NotAFile {
                    commit: commit.to_string(),
                    path,
                    what: match node {
                        Node::Dir => "a directory",
                        _ => "a submodule or other special entry",
                    },
                });
            }
        };
        if size > MAX_FILE as u64 {
            return Err(Error::FileTooLarge {
                commit: commit.to_string(),
                path,
                limit: MAX_FILE,
            });
        }
        let out = self
            .run("cat-file", self.git(&["cat-file", "blob", &oid]))
            .await?;
        Ok(Some(out.stdout))
    }

    /// What `path` is in the tree of `commit` (never following a symlink: a symlink comes
    /// back with its link text), and for a file its blob id and size.
    async fn tree_entry(&self, commit: &str, path: &str) -> Result<(Node, Option<(String, u64)>)> {
        let cmd = Command::new("git")
            .arg("--git-dir")
            .arg(&self.cache)
            .args([
                "--literal-pathspecs",
                "ls-tree",
                "-l",
                "-z",
                "--end-of-options",
            ])
            .arg(commit)
            .arg("--")
            .arg(path)
            .envs(self.env())
            .timeout(self.timeout);
        let out = match process::run(&cmd, &self.redactor).await {
            Ok(out) => out,
            Err(process::Error::Failed { stderr, .. }) if is_corrupt(&stderr) => {
                return Err(Error::Corrupt {
                    path: self.cache.clone(),
                    message: stderr.trim().to_string(),
                });
            }
            // Not a commit of this cache: nothing is there.
            Err(process::Error::Failed { stderr, .. })
                if stderr.contains("not a tree object")
                    || stderr.contains("Not a valid object name") =>
            {
                return Ok((Node::Missing, None));
            }
            Err(source) => {
                return Err(Error::Git {
                    op: "ls-tree",
                    path: self.cache.clone(),
                    source: Box::new(source),
                });
            }
        };
        // `<mode> SP <type> SP <object> SP+ <size> TAB <path> NUL`
        for record in out.stdout.split(|b| *b == 0) {
            let record = String::from_utf8_lossy(record);
            let Some((meta, name)) = record.split_once('\t') else {
                continue;
            };
            if name != path {
                continue;
            }
            let mut fields = meta.split_whitespace();
            let (Some(mode), Some(_kind), Some(oid), Some(size)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let size: u64 = size.parse().unwrap_or(u64::MAX);
            return Ok(match mode {
                "040000" => (Node::Dir, None),
                "120000" if size <= tree::MAX_LINK as u64 => {
                    let text = self
                        .run("cat-file", self.git(&["cat-file", "blob", oid]))
                        .await?;
                    (Node::Symlink(text.stdout_text()), None)
                }
                "100644" | "100755" | "100664" => (Node::File, Some((oid.to_string(), size))),
                _ => (Node::Other, None),
            });
        }
        Ok((Node::Missing, None))
    }

    /// Extracts the tree of a commit into `<cache>/checkouts/<commit>` (once) and returns it.
    pub async fn checkout(&self, commit: &str) -> Result<PathBuf> {
        let _shared = self.lock.read().await;
        let r = self.checkout_inner(commit).await;
        if let Err(e) = &r {
            self.note_read_error(e);
        }
        r
    }

    async fn checkout_inner(&self, commit: &str) -> Result<PathBuf> {
        let root = self
            .cache
            .parent()
            .expect("has parent")
            .parent()
            .expect("has parent")
            .join("checkouts");
        if ref_kind(commit) != RefKind::FullCommit {
            return Err(Error::BadPath {
                path: commit.to_string(),
                reason: "a checkout needs a full commit SHA (from fetch)",
            });
        }
        let dir = root.join(commit);
        if dir.is_dir() {
            touch(&dir);
            return Ok(dir);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let out = self
            .run("archive", self.git(&["archive", "--format=tar", commit]))
            .await?;
        let tmp = tempfile::Builder::new()
            .prefix(".checkout-")
            .tempdir_in(&root)
            .map_err(io(&root))?;
        let mut archive = tar::Archive::new(std::io::Cursor::new(out.stdout));
        archive.set_preserve_permissions(false);
        archive.unpack(tmp.path()).map_err(io(tmp.path()))?;
        let staged = tmp.keep();
        match std::fs::rename(&staged, &dir) {
            Ok(()) => {}
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&staged);
            }
            Err(source) => return Err(Error::Io { path: dir, source }),
        }
        touch(&dir);
        prune_checkouts(&root, &dir, KEEP_CHECKOUTS);
        Ok(dir)
    }
}

/// An exclusive advisory lock (`flock`) on `<cache>.flock`, held while a fetch writes the
/// cache: another strata process on the same work dir (`strata plan --work-dir`, a restarted
/// agent) waits instead of racing its git, and never takes a live lock file for a stale one.
/// The kernel releases it when the holder dies, so a killed agent never leaves it behind.
struct CacheFileLock {
    _file: Option<std::fs::File>,
}

impl CacheFileLock {
    async fn acquire(cache: &Path) -> Result<Self> {
        let dir = cache.parent().expect("has parent");
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut name = cache.file_name().expect("has name").to_os_string();
        name.push(".flock");
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
        match locked {
            Ok(Ok(file)) => Ok(Self { _file: Some(file) }),
            // A file system without locks: this process's own lock still serialises its git.
            Ok(Err(e)) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot lock the Git cache");
                Ok(Self { _file: None })
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot lock the Git cache");
                Ok(Self { _file: None })
            }
        }
    }
}

/// The lock files git leaves behind when it is killed: `*.lock` at the top of the repository
/// (`shallow.lock`, `HEAD.lock`, `config.lock`, `packed-refs.lock`, `index.lock`,
/// `FETCH_HEAD.lock`), under `refs/` and `logs/` (any depth) and in `objects/info/`.
/// Removes them (never following symlinks) and returns the paths removed.
pub fn remove_stale_locks(repo: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, recurse: bool, removed: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                if recurse {
                    walk(&path, true, removed);
                }
            } else if entry.file_name().to_string_lossy().ends_with(".lock")
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    let mut removed = Vec::new();
    walk(repo, false, &mut removed);
    walk(&repo.join("refs"), true, &mut removed);
    walk(&repo.join("logs"), true, &mut removed);
    walk(&repo.join("objects").join("info"), false, &mut removed);
    removed
}

/// Whether git's message says it failed on a lock file (`Unable to create '….lock': File
/// exists`).
fn mentions_lock_file(stderr: &str) -> bool {
    let m = stderr.to_ascii_lowercase();
    m.contains(".lock") && (m.contains("file exists") || m.contains("unable to create"))
}

/// Whether git's message says the local repository is corrupt (as opposed to the server, the
/// network or the ref). Lines from the server (`remote: …`) do not count.
pub fn is_corrupt(stderr: &str) -> bool {
    const SIGNS: &[&str] = &[
        "bad object",
        "bad packed object",
        "not a git repository",
        "index file corrupt",
        "is corrupt",
        "does not match index",
        "far too short to be a packfile",
        "is too small",
        "non-monotonic index",
        "inflate: data stream error",
        "unable to unpack",
        "did not send all necessary objects",
        "unable to read tree",
        "unable to parse object",
        "reference broken",
        "invalid sha1 pointer",
        "bad config",
    ];
    // Signs made of two parts, e.g. "object file …/ab/cd… is empty".
    const PAIRS: &[(&str, &str)] = &[
        ("object file", "is empty"),
        ("packfile", "cannot be accessed"),
        ("packfile", "size changed"),
    ];
    stderr
        .lines()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.starts_with("remote:"))
        .any(|l| {
            SIGNS.iter().any(|s| l.contains(s))
                || PAIRS.iter().any(|(a, b)| l.contains(a) && l.contains(b))
        })
}

/// How many checkouts (the most recently used) stay on disk.
pub const KEEP_CHECKOUTS: usize = 5;

/// Marks a checkout as just used (its modification time orders pruning).
fn touch(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes all but the `keep` most recently used checkouts under `root` (never `current`).
fn prune_checkouts(root: &Path, current: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, path) in dirs.into_iter().skip(keep) {
        if path != current {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Normalises a repository path: no leading `/` or `./`, no `..`, no empty path.
pub fn clean_path(path: &str) -> Result<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Err(Error::BadPath {
            path: path.to_string(),
            reason: "empty",
        });
    }
    if parts.contains(&"..") {
        return Err(Error::BadPath {
            path: path.to_string(),
            reason: "`..` is not allowed",
        });
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_classified() {
        assert_eq!(
            ref_kind("0123456789abcdef0123456789abcdef01234567"),
            RefKind::FullCommit
        );
        assert_eq!(ref_kind("abc1234"), RefKind::MaybeShortCommit);
        assert_eq!(ref_kind("main"), RefKind::Name);
        assert_eq!(ref_kind("v1.2.3"), RefKind::Name);
        assert_eq!(ref_kind("abc"), RefKind::Name);
        assert_eq!(ref_kind(""), RefKind::Name);
    }

    #[test]
    fn fetch_failures_are_classified() {
        assert_eq!(
            classify_fetch(
                "fatal: unable to access 'http://127.0.0.1:1/r/': Failed to connect to 127.0.0.1 port 1: Connection refused"
            ),
            FetchFailure::Unreachable
        );
        assert_eq!(
            classify_fetch("fatal: couldn't find remote ref refs/heads/nope"),
            FetchFailure::RefNotFound
        );
        assert_eq!(
            classify_fetch("fatal: Authentication failed for 'http://h/r/'"),
            FetchFailure::Authentication
        );
        assert_eq!(
            classify_fetch(
                "fatal: could not read Username for 'http://h': terminal prompts disabled"
            ),
            FetchFailure::Authentication
        );
        assert_eq!(classify_fetch("weird"), FetchFailure::Other);
    }

    #[test]
    fn invalid_refs_are_refused() {
        for ok in [
            "main",
            "release/1.x",
            "v1.2.3",
            "abc1234",
            "refs/heads/main",
        ] {
            assert_eq!(invalid_ref(ok), None, "{ok}");
        }
        for bad in [
            "",
            "--upload-pack=x",
            "a:b",
            "a..b",
            "a b",
            "x^{}",
            "dir/",
            "x.lock",
            "a\\b",
        ] {
            assert!(invalid_ref(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn corrupt_caches_are_recognised() {
        for corrupt in [
            "fatal: bad object refs/strata/target",
            "error: pack has bad object at offset 1234: inflate returned -5",
            "fatal: not a git repository: '/w/git/repos/x.git'",
            "fatal: index file corrupt",
            "error: loose object 0123abcd (stored in objects/01/23abcd) is corrupt",
            "error: packfile objects/pack/pack-1.pack does not match index",
            "error: packfile objects/pack/pack-1.pack cannot be accessed",
            "error: object file objects/ab/cdef is empty",
            "fatal: bad config line 1 in file config",
            "error: https://h/r did not send all necessary objects",
        ] {
            assert!(is_corrupt(corrupt), "{corrupt}");
        }
        for other in [
            "fatal: couldn't find remote ref refs/heads/nope",
            "fatal: '/tmp/r' does not appear to be a git repository",
            "fatal: unable to access 'http://h/r/': Failed to connect",
            "remote: fatal: bad object 0123",
            "fatal: Unable to create '/w/x.git/shallow.lock': File exists.",
            "",
        ] {
            assert!(!is_corrupt(other), "{other}");
        }
        assert!(mentions_lock_file(
            "fatal: Unable to create '/w/x.git/shallow.lock': File exists."
        ));
        assert!(!mentions_lock_file("fatal: couldn't find remote ref main"));
    }

    #[test]
    fn stale_locks_are_found_where_git_leaves_them() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        let locks = [
            "shallow.lock",
            "index.lock",
            "HEAD.lock",
            "config.lock",
            "packed-refs.lock",
            "refs/heads/main.lock",
            "refs/strata/target.lock",
            "refs/tags/a/b/v1.lock",
            "objects/info/commit-graph.lock",
        ];
        let keep = [
            "HEAD",
            "shallow",
            "refs/heads/main",
            "objects/pack/pack-1.lock.keep",
            "objects/ab/cd.lock",
        ];
        for f in locks.iter().chain(&keep) {
            let p = r.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let mut removed: Vec<String> = remove_stale_locks(r)
            .iter()
            .map(|p| p.strip_prefix(r).unwrap().display().to_string())
            .collect();
        removed.sort();
        let mut want: Vec<String> = locks.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(removed, want);
        for f in keep {
            assert!(r.join(f).exists(), "{f} kept");
        }
    }

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("/values//a.yaml").unwrap(), "values/a.yaml");
        assert_eq!(clean_path("./profiles.yaml").unwrap(), "profiles.yaml");
        assert!(clean_path("../etc/passwd").is_err());
        assert!(clean_path("/").is_err());
    }

    #[test]
    fn credentials_never_show() {
        let r = Redactor::new();
        let auth = GitAuth {
            basic: Some(BasicAuth {
                username: "alice".into(),
                password: "pa55word".into(),
            }),
            ..Default::default()
        };
        let src = GitSource::new(
            "https://bob:hunter22@example.invalid/r.git",
            "main",
            "/tmp/x",
            auth.clone(),
            r.clone(),
        );
        assert_eq!(src.display_url(), "https://***@example.invalid/r.git");
        assert!(!format!("{auth:?}").contains("pa55word"));
        assert_eq!(r.redact("x pa55word y"), "x *** y");
        // The header goes through the environment, never the arguments.
        let env = src.env();
        assert!(env.iter().any(|(_, v)| {
            v.to_string_lossy()
                .contains(&auth.basic.as_ref().unwrap().encoded())
        }));
        let cmd = src.git(&["fetch"]);
        assert!(
            !cmd.get_args()
                .iter()
                .any(|a| a.to_string_lossy().contains("pa55word"))
        );
    }

    #[test]
    fn ssh_uses_the_key_and_known_hosts_without_prompts() {
        let env_of = |auth: GitAuth| {
            let src = GitSource::new("ssh://git@h/r.git", "main", "/w", auth, Redactor::new());
            src.env()
                .into_iter()
                .find(|(k, _)| k == "GIT_SSH_COMMAND")
                .map(|(_, v)| v.into_string().unwrap())
        };
        assert_eq!(env_of(GitAuth::default()), None);
        let strict = env_of(GitAuth {
            ssh_key: Some("/keys/id".into()),
            known_hosts: Some("/keys/known_hosts".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(strict.contains("-i '/keys/id'"), "{strict}");
        assert!(strict.contains("UserKnownHostsFile='/keys/known_hosts'"));
        assert!(strict.contains("StrictHostKeyChecking=yes"));
        assert!(strict.contains("BatchMode=yes"));
        let tofu = env_of(GitAuth {
            ssh_key: Some("/keys/id".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(tofu.contains("StrictHostKeyChecking=accept-new"), "{tofu}");
        assert!(tofu.contains("/w/home/known_hosts"), "{tofu}");
    }
}
