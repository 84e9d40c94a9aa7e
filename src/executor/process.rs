//! The one process runner every external tool (helm, git) goes through.
//!
//! Arguments are a vector (never a shell), the environment is explicit (only `PATH` is inherited
//! unless the caller says otherwise), the child is killed when the future is dropped or the
//! timeout expires, stdout is captured up to a bound, stderr keeps only its last
//! [`STDERR_TAIL`] bytes, and every text that leaves the runner (arguments, stderr) passes
//! through a [`Redactor`] so registered secrets never reach logs or errors.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How many bytes of stderr are kept (the tail).
pub const STDERR_TAIL: usize = 64 * 1024;
/// Variables every child inherits from the agent when set: the search path, the in-cluster
/// API server address (helm's in-cluster configuration reads it), proxies and CA locations.
/// Nothing else leaks from the agent's environment.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Default bound on captured stdout.
pub const STDOUT_LIMIT: usize = 256 * 1024 * 1024;

/// Errors of running a process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "could not start {program} {args}: {source}; check that the program exists and is executable"
    )]
    Spawn {
        program: String,
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} did not finish within {timeout:?} and was killed; stderr: {stderr}")]
    Timeout {
        program: String,
        args: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("{program} {args} exited with {}: {stderr}", exit_text(*.code))]
    Failed {
        program: String,
        args: String,
        /// Exit code, `None` when killed by a signal.
        code: Option<i32>,
        /// Redacted tail of stderr.
        stderr: String,
        /// Captured stdout (redacted), some tools print their errors there.
        stdout: String,
    },
    #[error("{program} {args}: stdout exceeded {limit} bytes and the process was killed")]
    OutputTooLarge {
        program: String,
        args: String,
        limit: usize,
    },
    #[error("i/o with {program} failed: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => "a signal".to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The redacted stderr tail, when the process ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Error::Timeout { stderr, .. } | Error::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// The exit code, when the process exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::Failed { code, .. } => *code,
            _ => None,
        }
    }
}

/// Replaces registered secrets (and `user:password@` in URLs) with `***`.
///
/// Cheap to clone; clones share the registered secrets.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret string. Empty strings and strings shorter than 3 characters are
    /// ignored (they would redact ordinary text).
    pub fn add(&self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.len() < 3 {
            return;
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !secrets.contains(&secret) {
            secrets.push(secret);
            // Longest first, so a secret containing another one is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Returns `text` with every registered secret and URL credentials replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_url_userinfo(text);
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// Replaces the user-info part of URLs (`scheme://user:pass@host` or `scheme://token@host`)
/// with `***`.
pub fn redact_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, quote or end.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '>')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            out.push_str("***");
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A command to run.
#[derive(Clone, Debug)]
pub struct Command {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    inherit: Vec<OsString>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
    stdout_limit: usize,
    nice: u8,
}

impl Command {
    /// A command with a 5 minute timeout, no environment but [`INHERITED_ENV`], no stdin.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            inherit: INHERITED_ENV.iter().map(OsString::from).collect(),
            cwd: None,
            timeout: Duration::from_secs(300),
            stdin: None,
            stdout_limit: STDOUT_LIMIT,
            nice: 0,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Also inherit this variable from the agent's environment (if set).
    pub fn inherit_env(mut self, key: impl Into<OsString>) -> Self {
        self.inherit.push(key.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    pub fn stdout_limit(mut self, limit: usize) -> Self {
        self.stdout_limit = limit;
        self
    }

    /// Run at a lower CPU priority: the nice value raised by `nice` (see [`super::nice`]).
    pub fn nice(mut self, nice: u8) -> Self {
        self.nice = nice;
        self
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The environment the child gets (explicit variables after inherited ones).
    pub fn get_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = self
            .inherit
            .iter()
            .filter(|k| !self.env.iter().any(|(e, _)| e == *k))
            .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v)))
            .collect();
        env.extend(self.env.iter().cloned());
        env
    }

    /// The arguments as one redacted line, for logs and errors.
    pub fn display_args(&self, redactor: &Redactor) -> String {
        let joined = self
            .args
            .iter()
            .map(|a| {
                let a = a.to_string_lossy();
                if a.is_empty() || a.contains(char::is_whitespace) {
                    format!("'{a}'")
                } else {
                    a.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        redactor.redact(&joined)
    }

    fn display_program(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }
}

/// What a successful run produced.
#[derive(Clone, Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    /// Redacted stderr tail.
    pub stderr: String,
    pub duration: Duration,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` to completion. A non-zero exit is [`Error::Failed`].
pub async fn run(cmd: &Command, redactor: &Redactor) -> Result<Output> {
    let program = cmd.display_program();
    let args = || cmd.display_args(redactor);
    let started = Instant::now();

    let mut child_cmd = tokio::process::Command::new(&cmd.program);
    child_cmd
        .args(&cmd.args)
        .env_clear()
        .envs(cmd.get_env())
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group: a Ctrl-C in the agent's terminal does not reach helm mid-operation
    // (the agent drains instead), and a timeout can kill the child's own children too.
    #[cfg(unix)]
    child_cmd.process_group(0);
    if let Some(dir) = &cmd.cwd {
        child_cmd.current_dir(dir);
    }
    let spawned = super::nice::spawn(child_cmd, cmd.nice).await;
    let mut child = spawned.map_err(|source| Error::Spawn {
        program: program.clone(),
        args: args(),
        source,
    })?;

    let pid = child.id();
    let stdin_task = match (cmd.stdin.clone(), child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(tokio::spawn(async move {
            // A child that exits without reading its stdin is not an error of ours.
            let _ = pipe.write_all(&data).await;
            let _ = pipe.shutdown().await;
        })),
        _ => None,
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let limit = cmd.stdout_limit;

    let stderr_buf = std::sync::Mutex::new(Vec::new());
    let work = async {
        let (out, err) = tokio::join!(
            read_bounded(stdout, limit),
            read_tail(stderr, STDERR_TAIL, &stderr_buf)
        );
        let status = child.wait().await;
        (out, err, status)
    };
    let timed = tokio::time::timeout(cmd.timeout, work).await;
    let tail = |buf: &std::sync::Mutex<Vec<u8>>| {
        let data = buf.lock().unwrap_or_else(|e| e.into_inner());
        let start = data.len().saturating_sub(STDERR_TAIL);
        redactor.redact(&String::from_utf8_lossy(&data[start..]))
    };
    let (out, err, status) = match timed {
        Ok(done) => done,
        Err(_) => {
            // `child` was moved into the dropped future: kill_on_drop killed it. Its own
            // children (git's remote helpers, ssh) go with its process group.
            if let Some(pid) = pid {
                kill_group(pid);
            }
            return Err(Error::Timeout {
                program,
                args: args(),
                timeout: cmd.timeout,
                stderr: tail(&stderr_buf),
            });
        }
    };
    if let Some(task) = stdin_task {
        let _ = task.await;
    }
    let io_err = |source| Error::Io {
        program: program.clone(),
        source,
    };
    err.map_err(io_err)?;
    let stderr_text = tail(&stderr_buf);
    let (stdout, overflow) = out.map_err(io_err)?;
    let status = status.map_err(io_err)?;
    if overflow {
        return Err(Error::OutputTooLarge {
            program,
            args: args(),
            limit,
        });
    }
    if !status.success() {
        let stdout_text = String::from_utf8_lossy(&stdout);
        let tail = tail_str(&stdout_text, STDERR_TAIL);
        return Err(Error::Failed {
            program,
            args: args(),
            code: status.code(),
            stderr: stderr_text,
            stdout: redactor.redact(tail),
        });
    }
    Ok(Output {
        stdout,
        stderr: stderr_text,
        duration: started.elapsed(),
    })
}

/// Kills a process group (SIGKILL); best effort: the group may already be gone. Uses the
/// `kill(2)` system call through `nix`, so the agent needs no `kill` program in its image.
fn kill_group(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    #[cfg(not(unix))]
    let _ = pid;
}

fn tail_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Reads everything up to `limit` bytes; returns (data, overflowed). On overflow it keeps
/// draining so the child does not block, but drops the extra bytes.
async fn read_bounded(
    mut reader: impl AsyncRead + Unpin,
    limit: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut overflow = false;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((data, overflow));
        }
        if data.len() + n > limit {
            overflow = true;
        } else {
            data.extend_from_slice(&buf[..n]);
        }
    }
}

/// Reads everything into `buf`, keeping only about the last `max` bytes (the caller takes the
/// final tail), so a timed-out process still shows what it printed.
async fn read_tail(
    mut reader: impl AsyncRead + Unpin,
    max: usize,
    buf: &std::sync::Mutex<Vec<u8>>,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let mut data = buf.lock().unwrap_or_else(|e| e.into_inner());
        data.extend_from_slice(&chunk[..n]);
        if data.len() > 2 * max {
            let cut = data.len() - max;
            data.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_replaces_registered_secrets_longest_first() {
        let r = Redactor::new();
        r.add("hunter2");
        r.add("hunter2-extended");
        r.add("ab"); // too short: ignored
        assert_eq!(
            r.redact("token hunter2-extended and hunter2 and ab"),
            "token *** and *** and ab"
        );
        let clone = r.clone();
        clone.add("s3cr3t");
        assert_eq!(r.redact("x s3cr3t y"), "x *** y");
    }

    #[test]
    fn url_userinfo_is_redacted() {
        assert_eq!(
            redact_url_userinfo("fatal: https://alice:pw@git.example.com/repo.git failed"),
            "fatal: https://***@git.example.com/repo.git failed"
        );
        assert_eq!(
            redact_url_userinfo("ssh://git@host:22/x and http://plain/y"),
            "ssh://***@host:22/x and http://plain/y"
        );
        assert_eq!(redact_url_userinfo("no urls here"), "no urls here");
    }

    #[tokio::test]
    async fn captures_stdout_and_stderr_with_explicit_env() {
        let cmd = Command::new("sh")
            .args(["-c", "echo out-$FOO; echo err-$HOME >&2"])
            .env("FOO", "bar");
        let out = run(&cmd, &Redactor::new()).await.unwrap();
        assert_eq!(out.stdout_text(), "out-bar\n");
        // HOME is not inherited: the environment is explicit.
        assert_eq!(out.stderr, "err-\n");
    }

    #[tokio::test]
    async fn only_the_allow_listed_environment_is_inherited() {
        // PATH is always set in test processes; HOME and USER-like variables are not passed.
        let cmd = Command::new("sh").args(["-c", "env"]);
        let out = run(&cmd, &Redactor::new()).await.unwrap().stdout_text();
        for line in out.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                INHERITED_ENV.contains(&name) || name == "PWD" || name == "SHLVL" || name == "_",
                "unexpected variable {name}"
            );
        }
        assert!(out.lines().any(|l| l.starts_with("PATH=")));
    }

    #[tokio::test]
    async fn failure_carries_code_redacted_args_and_stderr() {
        let r = Redactor::new();
        r.add("topsecret");
        let cmd = Command::new("sh").args(["-c", "echo bad topsecret >&2; exit 3", "topsecret"]);
        let err = run(&cmd, &r).await.unwrap_err();
        match &err {
            Error::Failed {
                program,
                args,
                code,
                stderr,
                ..
            } => {
                assert_eq!(program, "sh");
                assert_eq!(*code, Some(3));
                assert_eq!(stderr, "bad ***\n");
                assert!(args.ends_with(" ***"), "{args}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!err.to_string().contains("topsecret"));
    }

    #[tokio::test]
    async fn timeout_kills_the_child_and_keeps_its_stderr() {
        let cmd = Command::new("sh")
            .args(["-c", "echo waiting for the server >&2; exec sleep 30"])
            .timeout(Duration::from_millis(300));
        let started = Instant::now();
        let err = run(&cmd, &Redactor::new()).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert_eq!(err.stderr(), Some("waiting for the server\n"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn timeout_kills_the_childs_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cmd = Command::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(300));
        let err = run(&cmd, &Redactor::new()).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
        let deadline = Instant::now() + Duration::from_secs(5);
        // Gone, or a zombie waiting for its (killed) parent's reaper.
        while proc_dir.exists()
            && !std::fs::read_to_string(proc_dir.join("stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "grandchild {pid} survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn stderr_keeps_only_the_tail() {
        // 200 KiB of 'a' then a marker: only the last 64 KiB survive.
        let cmd = Command::new("sh").args([
            "-c",
            "head -c 204800 /dev/zero | tr '\\0' a >&2; echo END >&2; exit 1",
        ]);
        let err = run(&cmd, &Redactor::new()).await.unwrap_err();
        let stderr = err.stderr().unwrap();
        assert!(stderr.len() <= STDERR_TAIL);
        assert!(stderr.ends_with("END\n"));
    }

    #[tokio::test]
    async fn stdout_over_limit_is_an_error_and_stdin_is_fed() {
        let cmd = Command::new("cat")
            .stdin(vec![b'x'; 4096])
            .stdout_limit(1024);
        let err = run(&cmd, &Redactor::new()).await.unwrap_err();
        assert!(matches!(err, Error::OutputTooLarge { limit: 1024, .. }));
        let cmd = Command::new("cat").stdin(b"hello".to_vec());
        assert_eq!(run(&cmd, &Redactor::new()).await.unwrap().stdout, b"hello");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run(&Command::new("/nonexistent/prog"), &Redactor::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/prog") || err.to_string().contains("prog"));
    }
}
