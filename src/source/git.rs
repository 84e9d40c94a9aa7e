//! The Git source: fetches a repository (https, http, ssh, git://, file:// or a local path) at
//! a branch, tag or commit into a bare cache repository reused across fetches, resolves it to a
//! commit SHA, and reads files at that commit. Everything goes through the git CLI via
//! [`crate::executor::process`]: no global or system config, no terminal prompts, credentials passed in
//! the environment (never in URLs or arguments) and redacted from every message.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use sha2::Digest;

use crate::executor::process::{self, Command, Redactor};

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
    /// The server's certificate is not trusted (set a CA file).
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
    #[error("could not read credentials from {}: {source}", path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
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

/// HTTP basic auth. `Debug` never shows the password.
#[derive(Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({}, ***)", self.username)
    }
}

impl BasicAuth {
    /// Reads the password (or token) from a file (trailing newline removed); the username
    /// from a file too, or `username` (e.g. `git` for token-only servers).
    pub fn from_files(username: UsernameSource<'_>, password_file: &Path) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| Error::Credentials {
                    path: p.to_path_buf(),
                    source,
                })
        };
        let username = match username {
            UsernameSource::Value(v) => v.to_string(),
            UsernameSource::File(p) => read(p)?,
        };
        Ok(Self {
            username,
            password: read(password_file)?,
        })
    }
}

/// Where the basic-auth username comes from.
pub enum UsernameSource<'a> {
    Value(&'a str),
    File(&'a Path),
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
    timeout: Duration,
    redactor: Redactor,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
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

/// Classifies git's stderr of a failed fetch.
pub fn classify_fetch(stderr: &str) -> FetchFailure {
    let m = stderr.to_ascii_lowercase();
    if m.contains("ssl certificate problem") || m.contains("server certificate verification failed")
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
            redactor.add(basic_header_value(b));
        }
        let key = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
        Self {
            cache: cache_dir.join("repos").join(format!("{}.git", &key[..16])),
            home: cache_dir.join("home"),
            url,
            reference: reference.into(),
            auth,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
            redactor,
            lock: Default::default(),
        }
    }

    /// Trusts the CA certificates (PEM) in `ca_file` for HTTPS (git's `http.sslCAInfo`).
    pub fn with_ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca_file.into());
        self
    }

    /// Sets the timeout of each git command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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
        if let Some(b) = &self.auth.basic {
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Basic {}", basic_header_value(b)),
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

    async fn fetch_refspecs(&self, refspecs: &[&str], shallow: bool) -> Result<(), String> {
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
        match process::run(&cmd, &self.redactor).await {
            Ok(_) => Ok(()),
            Err(process::Error::Failed { stderr, .. }) => Err(stderr),
            Err(process::Error::Timeout { timeout, .. }) => {
                Err(format!("timed out after {timeout:?}"))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn fetch_error(&self, message: String) -> Error {
        let kind = classify_fetch(&message);
        Error::Fetch {
            url: self.display_url(),
            reference: self.reference.clone(),
            kind,
            message: self.redactor.redact(message.trim()),
        }
    }

    async fn rev_parse(&self, rev: &str) -> Result<Option<String>> {
        let cmd = self.git(&["rev-parse", "--verify", "--quiet", "--end-of-options", rev]);
        match process::run(&cmd, &self.redactor).await {
            Ok(out) => Ok(Some(out.stdout_text().trim().to_string())),
            Err(process::Error::Failed { .. }) => Ok(None),
            Err(source) => Err(Error::Git {
                op: "rev-parse",
                path: self.cache.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// Fetches the ref from the server and resolves it to a commit.
    #[tracing::instrument(name = "git_fetch", skip(self), fields(url = %self.display_url(), reference = %self.reference))]
    pub async fn fetch(&self) -> Result<Revision> {
        let _guard = self.lock.lock().await;
        let reference = self.reference.as_str();
        if let Some(reason) = invalid_ref(reference) {
            return Err(Error::Fetch {
                url: self.display_url(),
                reference: reference.to_string(),
                kind: FetchFailure::RefNotFound,
                message: format!("{reference:?} is not a valid branch, tag or commit: {reason}"),
            });
        }
        self.ensure_cache().await?;
        let commit = match ref_kind(reference) {
            RefKind::FullCommit => {
                // Servers speaking protocol v2 let us want any reachable commit directly.
                let target = format!("+{reference}:refs/strata/target");
                if self.fetch_refspecs(&[&target], true).await.is_err() {
                    self.fetch_refspecs(
                        &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                        false,
                    )
                    .await
                    .map_err(|m| self.fetch_error(m))?;
                }
                self.rev_parse(&format!("{reference}^{{commit}}")).await?
            }
            kind => {
                let target = format!("+{reference}:refs/strata/target");
                match self.fetch_refspecs(&[&target], true).await {
                    Ok(()) => self.rev_parse("refs/strata/target^{commit}").await?,
                    Err(m)
                        if kind == RefKind::MaybeShortCommit
                            && classify_fetch(&m) == FetchFailure::RefNotFound =>
                    {
                        // Not a name: an abbreviated commit. Fetch all history to find it.
                        self.fetch_refspecs(
                            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                            false,
                        )
                        .await
                        .map_err(|m| self.fetch_error(m))?;
                        self.rev_parse(&format!("{reference}^{{commit}}")).await?
                    }
                    Err(m) => return Err(self.fetch_error(m)),
                }
            }
        };
        let commit = commit.ok_or_else(|| Error::Fetch {
            url: self.display_url(),
            reference: self.reference.clone(),
            kind: FetchFailure::RefNotFound,
            message: format!("no commit named {reference}; check the branch, tag or commit"),
        })?;
        tracing::debug!(%commit, "fetched");
        Ok(Revision {
            commit,
            reference: self.reference.clone(),
            url: self.display_url(),
        })
    }

    /// Reads a file at a commit; `None` when the path does not exist there.
    pub async fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let path = clean_path(path)?;
        let Some(oid) = self.rev_parse(&format!("{commit}:{path}")).await? else {
            return Ok(None);
        };
        let size = self
            .run("cat-file", self.git(&["cat-file", "-s", &oid]))
            .await?;
        let size: usize = size.stdout_text().trim().parse().unwrap_or(usize::MAX);
        if size > MAX_FILE {
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

    /// Extracts the tree of a commit into `<cache>/checkouts/<commit>` (once) and returns it.
    pub async fn checkout(&self, commit: &str) -> Result<PathBuf> {
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

fn basic_header_value(b: &BasicAuth) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.username, b.password))
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
                .contains(&basic_header_value(auth.basic.as_ref().unwrap()))
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

    #[test]
    fn basic_auth_reads_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u"), "carol\n").unwrap();
        std::fs::write(dir.path().join("p"), "tok3n\n").unwrap();
        let b = BasicAuth::from_files(
            UsernameSource::File(&dir.path().join("u")),
            &dir.path().join("p"),
        )
        .unwrap();
        assert_eq!(
            (b.username.as_str(), b.password.as_str()),
            ("carol", "tok3n")
        );
        let b = BasicAuth::from_files(UsernameSource::Value("git"), &dir.path().join("p")).unwrap();
        assert_eq!(b.username, "git");
        assert!(
            BasicAuth::from_files(UsernameSource::Value("git"), &dir.path().join("nope")).is_err()
        );
    }
}
