//! The one door to helm: every helm command the agent runs goes through [`Helm`].
//!
//! One [`Helm`] per agent: it detects the helm major version once (flags differ between helm 3
//! and helm 4), keeps helm's cache, config and data homes and the Kubernetes discovery cache
//! under the agent's work dir (nothing leaks between agents or tests), stores releases in
//! Secrets (`HELM_DRIVER=secret`) and passes values only through 0600 files.
//! Each command runs in a `helm` tracing span with its command, release, namespace and helm
//! version, and records its exit code and duration.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::executor::process::{self, Command, Redactor};
use crate::executor::releases::ReleaseRecord;

/// Extra time given to the helm process beyond the `--timeout` passed to helm, so helm can
/// report its own timeout (and record the failed release) before we kill it.
pub const PROCESS_GRACE: Duration = Duration::from_secs(30);
/// Timeout of commands that only read (status, history, list, get values, version).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of helm commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not run helm {command}: {source}")]
    Process {
        command: &'static str,
        #[source]
        source: process::Error,
    },
    #[error("helm {command} of release {namespace}/{release} failed ({kind}): {message}")]
    Command {
        command: &'static str,
        release: String,
        namespace: String,
        kind: FailureKind,
        /// Helm's own message: from its first `Error:` line to the end (redacted).
        message: String,
        exit_code: Option<i32>,
    },
    #[error(
        "helm {command} of release {namespace}/{release} did not finish within {timeout:?} and was killed; the release may be left pending; helm's last output: {message}"
    )]
    Killed {
        command: &'static str,
        release: String,
        namespace: String,
        timeout: Duration,
        /// The end of helm's stderr (redacted).
        message: String,
    },
    #[error("could not parse the output of helm {command} for {object}: {source}")]
    Parse {
        command: &'static str,
        object: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {name:?} is not a DNS-1123 label (lowercase letters, digits and '-')")]
    InvalidName { what: &'static str, name: String },
    #[error("`helm version` printed {0:?}, which is not a version; check the --helm binary")]
    Version(String),
    #[error("helm {0} is not supported; strata needs helm 3 or helm 4")]
    Unsupported(HelmVersion),
    #[error(
        "helm {0} cannot store release labels, which strata records on every release it installs (to know what it owns and what content is deployed); use helm 3.13 or newer, or helm 4"
    )]
    NoLabels(HelmVersion),
    #[error("could not prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The failure class, for helm command failures.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            Error::Command { kind, .. } => Some(*kind),
            Error::Killed { .. } => Some(FailureKind::Timeout),
            _ => None,
        }
    }

    /// Helm's own message, for helm command failures.
    pub fn helm_message(&self) -> Option<&str> {
        match self {
            Error::Command { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// What kind of failure helm reported: strata-core's one classifier of helm's error text.
pub use strata_core::retry::HelmFailureKind as FailureKind;

/// Classifies helm's error message (see [`strata_core::retry::classify_helm_kind`]).
pub fn classify(message: &str) -> FailureKind {
    strata_core::retry::classify_helm_kind(message)
}

/// Extracts helm's message from its stderr: from the first `Error:` line to the end, without
/// the `Error: ` prefix. Without such a line: the last few non-empty lines.
pub fn error_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.starts_with("Error:")) {
        let mut out = lines[i].trim_start_matches("Error:").trim().to_string();
        for l in &lines[i + 1..] {
            if !l.trim().is_empty() {
                out.push('\n');
                out.push_str(l.trim_end());
            }
        }
        return out;
    }
    let tail: Vec<&str> = lines
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .copied()
        .collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The phrase of helm's debug log (helm 3 and 4) that carries the errors behind an uninstall's
/// `failed to delete release: NAME`.
const UNINSTALL_CAUSE: &str = "uninstall: Failed to delete release";

/// helm's uninstall hides why deleting a release's objects failed behind `failed to delete
/// release: NAME` and logs the errors only at debug level (strata runs it with `--debug`):
/// they are added to the message, so that it can be classified (an API error while deleting
/// is the API's, not the release's) and read.
pub fn with_uninstall_cause(message: String, stderr: &str) -> String {
    if !message.contains("failed to delete release") {
        return message;
    }
    let cause = stderr.lines().find_map(|l| {
        let at = l.find(UNINSTALL_CAUSE)?;
        let rest = l[at + UNINSTALL_CAUSE.len()..]
            .trim_start_matches(|c: char| c == '"' || c == ':' || c.is_whitespace())
            .trim_end();
        (!rest.is_empty()).then(|| rest.to_string())
    });
    match cause {
        Some(cause) => format!("{message} ({cause})"),
        None => message,
    }
}

/// A helm version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct HelmVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl HelmVersion {
    /// Parses `v4.1.4`, `v3.19.0+g3d8990f`, `4.1.4`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().trim_start_matches('v');
        let core = t.split(['+', '-']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        let num = |i: usize| -> Result<u64> {
            parts
                .get(i)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Version(text.trim().to_string()))
        };
        if parts.len() != 3 {
            return Err(Error::Version(text.trim().to_string()));
        }
        Ok(Self {
            major: num(0)?,
            minor: num(1)?,
            patch: num(2)?,
        })
    }
}

impl fmt::Display for HelmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// How to reach helm and the cluster.
#[derive(Clone, Debug)]
pub struct HelmConfig {
    /// The helm binary (a path, or a name looked up on PATH).
    pub binary: PathBuf,
    /// Helm's homes, caches and values files go under `<work_dir>/helm`.
    pub work_dir: PathBuf,
    /// A kubeconfig; `None` means in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context.
    pub kube_context: Option<String>,
}

/// One helm install or upgrade.
#[derive(Clone, Debug)]
pub struct UpgradeRequest {
    pub release: String,
    pub namespace: String,
    /// A chart archive (.tgz) or directory.
    pub chart: PathBuf,
    /// A values file (see [`Helm::write_values`]).
    pub values_file: PathBuf,
    pub timeout: Duration,
    pub create_namespace: bool,
    /// Wait for readiness (and jobs). The agent always waits.
    pub wait: bool,
    /// Release labels (`--labels`, stored on the release by helm 4 and helm 3.13+).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A Go duration for `--timeout` (strata-core's one duration codec).
pub fn go_duration(d: Duration) -> String {
    strata_core::GoDuration(d).to_string()
}

/// The arguments of `helm upgrade --install` for a helm major version.
pub fn upgrade_args(major: u64, req: &UpgradeRequest) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "upgrade".into(),
        "--install".into(),
        req.release.clone().into(),
        req.chart.clone().into(),
        "--namespace".into(),
        req.namespace.clone().into(),
        "--values".into(),
        req.values_file.clone().into(),
        "--timeout".into(),
        go_duration(req.timeout).into(),
    ];
    if req.wait {
        if major >= 4 {
            // helm 4: kstatus watcher (event driven); its default is hookOnly.
            args.push("--wait=watcher".into());
        } else {
            args.push("--wait".into());
        }
        args.push("--wait-for-jobs".into());
    }
    if req.create_namespace {
        args.push("--create-namespace".into());
    }
    if !req.labels.is_empty() {
        args.push("--labels".into());
        args.push(strata_core::digest::labels_arg(&req.labels).into());
    }
    args.push("--output".into());
    args.push("json".into());
    args
}

/// One `helm template` (what `helm upgrade --install` of the same chart and values would
/// apply, rendered without the cluster).
#[derive(Clone, Debug)]
pub struct TemplateRequest {
    pub release: String,
    pub namespace: String,
    /// A chart archive (.tgz) or directory.
    pub chart: PathBuf,
    /// A values file (see [`Helm::write_values`]).
    pub values_file: PathBuf,
    /// Render as an upgrade (`.Release.IsUpgrade`).
    pub is_upgrade: bool,
}

/// The arguments of `helm template` (the same for helm 3 and helm 4).
pub fn template_args(req: &TemplateRequest) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "template".into(),
        req.release.clone().into(),
        req.chart.clone().into(),
        "--namespace".into(),
        req.namespace.clone().into(),
        "--values".into(),
        req.values_file.clone().into(),
    ];
    if req.is_upgrade {
        args.push("--is-upgrade".into());
    }
    args
}

/// helm 3.13 or newer, or helm 4: the versions that store release labels.
/// helm's Go garbage collector target (`GOGC`): strata's own `GOGC` when set, else 400. A
/// helm process lives a fraction of a second and allocates most of what it ever holds while
/// starting (its package init alone allocates about 12 MB); at Go's default (100) it spends
/// about a quarter of its CPU collecting memory the exit frees anyway. 400 cuts that
/// (measured: CPU per install 0.116 s -> 0.087 s, peak RSS 57 -> 68 MiB); the default
/// concurrency is fitted to the peak RSS measured, so a memory-limited pod runs fewer at once.
fn go_gc() -> OsString {
    std::env::var_os("GOGC").unwrap_or_else(|| "400".into())
}

pub fn check_version(version: HelmVersion) -> Result<()> {
    match (version.major, version.minor) {
        (3, m) if m < 13 => Err(Error::NoLabels(version)),
        (3 | 4, _) => Ok(()),
        _ => Err(Error::Unsupported(version)),
    }
}

async fn detect_with(binary: &Path, env: Vec<(OsString, OsString)>) -> Result<HelmVersion> {
    let cmd = Command::new(binary)
        .args(["version", "--template", "{{.Version}}"])
        .envs(env)
        .timeout(READ_TIMEOUT);
    let out = process::run(&cmd, &Redactor::new())
        .await
        .map_err(|source| Error::Process {
            command: "version",
            source,
        })?;
    HelmVersion::parse(&out.stdout_text())
}

/// The one helm the agent uses.
#[derive(Clone, Debug)]
pub struct Helm {
    binary: PathBuf,
    version: HelmVersion,
    home: PathBuf,
    kubeconfig: Option<PathBuf>,
    kube_context: Option<String>,
    redactor: Redactor,
    /// helm processes running now (all clones of this `Helm`).
    running: Arc<AtomicUsize>,
}

/// How much lower each further helm process running at once is prioritized ([`nice_for`]).
const NICE_STEP: usize = 3;

/// The nice value (over the agent's) of a helm process started while `running` others run.
///
/// helm processes that run at once share the CPU; with an equal share each of them is slowed
/// by all the others, so the release whose objects take longest to become ready (the layer's
/// critical path, and the scheduler starts it first) gets its objects written only when the
/// whole wave is. Prioritized by start order, the first started get through first and the
/// others use what is left (still all of it when the first wait on the API server). Each
/// further process is 3 nice steps lower, about half the CPU weight of the one before.
pub fn nice_for(running: usize) -> u8 {
    u8::try_from(running.saturating_mul(NICE_STEP))
        .unwrap_or(u8::MAX)
        .min(crate::executor::nice::MAX_NICE)
}

/// Counts a helm process as running until dropped.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Helm {
    /// Detects the helm version and prepares helm's isolated homes under the work dir.
    pub async fn new(config: HelmConfig, redactor: Redactor) -> Result<Self> {
        let home = config.work_dir.join("helm");
        for dir in ["cache", "config", "data", "kube-cache", "values", "home"] {
            let path = home.join(dir);
            std::fs::create_dir_all(&path).map_err(|source| Error::Io { path, source })?;
        }
        let mut helm = Self {
            binary: config.binary,
            version: HelmVersion {
                major: 0,
                minor: 0,
                patch: 0,
            },
            home,
            kubeconfig: config.kubeconfig,
            kube_context: config.kube_context,
            redactor,
            running: Arc::default(),
        };
        helm.version = detect_with(&helm.binary, helm.environment()).await?;
        check_version(helm.version)?;
        Ok(helm)
    }

    /// `helm version --template '{{.Version}}'`.
    pub async fn detect(binary: &Path) -> Result<HelmVersion> {
        detect_with(binary, Vec::new()).await
    }

    pub fn version(&self) -> HelmVersion {
        self.version
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The environment helm runs with: isolated homes, secret storage driver.
    pub fn environment(&self) -> Vec<(OsString, OsString)> {
        let p = |d: &str| self.home.join(d).into_os_string();
        let mut env: Vec<(OsString, OsString)> = vec![
            ("HOME".into(), p("home")),
            ("HELM_CACHE_HOME".into(), p("cache")),
            ("HELM_CONFIG_HOME".into(), p("config")),
            ("HELM_DATA_HOME".into(), p("data")),
            ("KUBECACHEDIR".into(), p("kube-cache")),
            ("HELM_DRIVER".into(), "secret".into()),
            ("HELM_NO_PLUGINS".into(), "1".into()),
            ("GOGC".into(), go_gc()),
        ];
        if let Some(k) = &self.kubeconfig {
            env.push(("KUBECONFIG".into(), k.clone().into_os_string()));
        }
        env
    }

    /// Writes values to a 0600 file under the work dir and returns its path. The same
    /// release reuses its file.
    pub fn write_values(
        &self,
        namespace: &str,
        release: &str,
        values: &serde_json::Value,
    ) -> Result<PathBuf> {
        for (what, name) in [("namespace", namespace), ("release", release)] {
            let label = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !label {
                return Err(Error::InvalidName {
                    what,
                    name: name.to_string(),
                });
            }
        }
        let dir = self.home.join("values");
        let path = dir.join(format!("{namespace}.{release}.yaml"));
        let tmp = dir.join(format!(".{namespace}.{release}.yaml.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        // JSON is YAML: helm reads it as a values file.
        let text = serde_json::to_vec_pretty(values).expect("a JSON value serializes");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&tmp).map_err(io(&tmp))?;
        file.write_all(&text).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(path)
    }

    fn base_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(ctx) = &self.kube_context {
            args.push("--kube-context".into());
            args.push(ctx.into());
        }
        args
    }

    #[tracing::instrument(
        name = "helm",
        skip(self, args, timeout),
        fields(
            helm.version = %self.version,
            exit_code = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        )
    )]
    async fn exec(
        &self,
        cmd: &'static str,
        release: &str,
        namespace: &str,
        args: Vec<OsString>,
        timeout: Duration,
    ) -> Result<process::Output> {
        let span = tracing::Span::current();
        let mut all = args;
        all.extend(self.base_args());
        let others = self.running.fetch_add(1, Ordering::SeqCst);
        let _running = Running(&self.running);
        let command = Command::new(&self.binary)
            .args(all)
            .envs(self.environment())
            .timeout(timeout)
            .nice(nice_for(others));
        let started = std::time::Instant::now();
        let result = process::run(&command, &self.redactor).await;
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        let err = match result {
            Ok(out) => {
                span.record("exit_code", 0);
                tracing::debug!(cmd, release, namespace, "helm finished");
                return Ok(out);
            }
            Err(process::Error::Failed {
                code,
                stderr,
                stdout,
                ..
            }) => {
                if let Some(c) = code {
                    span.record("exit_code", c);
                }
                let text = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                let message = with_uninstall_cause(error_message(&text), &text);
                Error::Command {
                    command: cmd,
                    release: release.to_string(),
                    namespace: namespace.to_string(),
                    kind: classify(&message),
                    message,
                    exit_code: code,
                }
            }
            Err(process::Error::Timeout {
                timeout, stderr, ..
            }) => Error::Killed {
                command: cmd,
                release: release.to_string(),
                namespace: namespace.to_string(),
                timeout,
                message: error_message(&stderr),
            },
            Err(source) => Error::Process {
                command: cmd,
                source,
            },
        };
        span.record("otel.status_code", "ERROR");
        span.record("error", tracing::field::display(&err));
        tracing::warn!(cmd, release, namespace, error = %err, "helm failed");
        Err(err)
    }

    /// `helm upgrade --install` with waiting; returns the release helm printed.
    pub async fn upgrade_install(&self, req: &UpgradeRequest) -> Result<ReleaseRecord> {
        let args = upgrade_args(self.version.major, req);
        let out = self
            .exec(
                "upgrade",
                &req.release,
                &req.namespace,
                args,
                req.timeout + PROCESS_GRACE,
            )
            .await?;
        crate::executor::releases::parse_record(&out.stdout).map_err(|source| Error::Parse {
            command: "upgrade",
            object: format!("{}/{}", req.namespace, req.release),
            source,
        })
    }

    /// `helm uninstall --wait`.
    pub async fn uninstall(&self, release: &str, namespace: &str, timeout: Duration) -> Result<()> {
        let args: Vec<OsString> = vec![
            "uninstall".into(),
            release.into(),
            "--namespace".into(),
            namespace.into(),
            "--timeout".into(),
            go_duration(timeout).into(),
            "--wait".into(),
            // helm says why deleting the release's objects failed only in its debug log (see
            // `with_uninstall_cause`).
            "--debug".into(),
        ];
        self.exec(
            "uninstall",
            release,
            namespace,
            args,
            timeout + PROCESS_GRACE,
        )
        .await?;
        Ok(())
    }

    /// `helm rollback RELEASE [REVISION] --wait`; `None` rolls back to the previous revision.
    pub async fn rollback(
        &self,
        release: &str,
        namespace: &str,
        revision: Option<u64>,
        timeout: Duration,
    ) -> Result<()> {
        let mut args: Vec<OsString> = vec!["rollback".into(), release.into()];
        if let Some(r) = revision {
            args.push(r.to_string().into());
        }
        args.extend::<[OsString; 5]>([
            "--namespace".into(),
            namespace.into(),
            "--timeout".into(),
            go_duration(timeout).into(),
            if self.version.major >= 4 {
                "--wait=watcher".into()
            } else {
                "--wait".into()
            },
        ]);
        self.exec(
            "rollback",
            release,
            namespace,
            args,
            timeout + PROCESS_GRACE,
        )
        .await?;
        Ok(())
    }

    /// `helm template`: the rendered manifest (hooks included, CRDs of `crds/` not).
    pub async fn template(&self, req: &TemplateRequest) -> Result<String> {
        let out = self
            .exec(
                "template",
                &req.release,
                &req.namespace,
                template_args(req),
                READ_TIMEOUT,
            )
            .await?;
        Ok(out.stdout_text())
    }

    /// `helm status -o json`.
    pub async fn status(&self, release: &str, namespace: &str) -> Result<ReleaseRecord> {
        let args: Vec<OsString> = vec![
            "status".into(),
            release.into(),
            "--namespace".into(),
            namespace.into(),
            "--output".into(),
            "json".into(),
        ];
        let out = self
            .exec("status", release, namespace, args, READ_TIMEOUT)
            .await?;
        crate::executor::releases::parse_record(&out.stdout).map_err(|source| Error::Parse {
            command: "status",
            object: format!("{namespace}/{release}"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> UpgradeRequest {
        UpgradeRequest {
            release: "cert-manager".into(),
            namespace: "cert-manager".into(),
            chart: "/cache/sha256/abc.tgz".into(),
            values_file: "/work/helm/values/cert-manager.cert-manager.yaml".into(),
            timeout: Duration::from_secs(300),
            create_namespace: true,
            wait: true,
            labels: Default::default(),
        }
    }

    fn strs(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn upgrade_args_helm4_use_watcher() {
        let args = strs(upgrade_args(4, &req()));
        assert_eq!(
            args,
            [
                "upgrade",
                "--install",
                "cert-manager",
                "/cache/sha256/abc.tgz",
                "--namespace",
                "cert-manager",
                "--values",
                "/work/helm/values/cert-manager.cert-manager.yaml",
                "--timeout",
                "5m0s",
                "--wait=watcher",
                "--wait-for-jobs",
                "--create-namespace",
                "--output",
                "json"
            ]
        );
        assert!(!args.iter().any(|a| a == "--set" || a.contains("atomic")));
    }

    #[test]
    fn upgrade_args_carry_the_release_labels() {
        let mut r = req();
        r.labels =
            strata_core::digest::release_labels("strata-system", "certs", Some(1), "c1", "k1");
        let args = strs(upgrade_args(3, &r));
        let i = args.iter().position(|a| a == "--labels").unwrap();
        assert_eq!(
            args[i + 1],
            "strata.io/agent=strata-system,strata.io/chart-digest=c1,strata.io/content-digest=k1,strata.io/layer=1,strata.io/managed-by=strata,strata.io/profile=certs"
        );
    }

    #[test]
    fn template_args_render_as_install_or_upgrade() {
        let mut r = TemplateRequest {
            release: "web".into(),
            namespace: "apps".into(),
            chart: "/charts/web".into(),
            values_file: "/work/helm/values/apps.web.yaml".into(),
            is_upgrade: false,
        };
        assert_eq!(
            strs(template_args(&r)),
            [
                "template",
                "web",
                "/charts/web",
                "--namespace",
                "apps",
                "--values",
                "/work/helm/values/apps.web.yaml"
            ]
        );
        r.is_upgrade = true;
        assert_eq!(strs(template_args(&r)).last().unwrap(), "--is-upgrade");
    }

    #[test]
    fn helm_older_than_3_13_is_refused_for_want_of_labels() {
        let v = |s: &str| HelmVersion::parse(s).unwrap();
        assert!(check_version(v("v4.1.4")).is_ok());
        assert!(check_version(v("v3.19.0")).is_ok());
        assert!(check_version(v("v3.13.0")).is_ok());
        let e = check_version(v("v3.12.3")).unwrap_err().to_string();
        assert!(e.contains("3.13 or newer"), "{e}");
        assert!(matches!(
            check_version(v("v2.17.0")),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn upgrade_args_helm3_use_plain_wait_and_respect_flags() {
        let mut r = req();
        r.create_namespace = false;
        r.timeout = Duration::from_millis(1500);
        let args = strs(upgrade_args(3, &r));
        assert!(args.contains(&"--wait".to_string()));
        assert!(args.contains(&"--wait-for-jobs".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--wait=")));
        assert!(!args.contains(&"--create-namespace".to_string()));
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--timeout" && w[1] == "1.5s")
        );
        r.wait = false;
        let args = strs(upgrade_args(3, &r));
        assert!(!args.iter().any(|a| a.starts_with("--wait")));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(
            HelmVersion::parse("v4.1.4").unwrap(),
            HelmVersion {
                major: 4,
                minor: 1,
                patch: 4
            }
        );
        assert_eq!(HelmVersion::parse("v3.19.0+g3d8990f\n").unwrap().minor, 19);
        assert!(HelmVersion::parse("garbage").is_err());
        assert!(HelmVersion::parse("v4.1").is_err());
        assert_eq!(HelmVersion::parse("3.2.1").unwrap().to_string(), "v3.2.1");
    }

    #[test]
    fn error_message_takes_from_the_error_line() {
        let stderr = "level=DEBUG msg=\"preparing\"\nError: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress\n\n";
        let m = error_message(stderr);
        assert_eq!(
            m,
            "UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"
        );
        assert_eq!(classify(&m), FailureKind::OperationInProgress);
        let m = error_message("warn one\nwarn two\n");
        assert_eq!(m, "warn one\nwarn two");
    }

    #[test]
    fn an_uninstall_failure_carries_its_cause_from_the_debug_log() {
        let helm4 = "time=2026-12-06T19:56:25Z level=DEBUG msg=\"uninstall: Failed to delete release\" error=\"[unable to delete ConfigMap l2-r1-config: Internal error occurred: injected by kubesim]\"\nError: failed to delete release: l2-r1\n";
        let m = with_uninstall_cause(error_message(helm4), helm4);
        assert_eq!(
            m,
            "failed to delete release: l2-r1 (error=\"[unable to delete ConfigMap l2-r1-config: Internal error occurred: injected by kubesim]\")"
        );
        assert_eq!(classify(&m), FailureKind::ClusterUnreachable);
        let helm3 = "uninstall.go:105: [debug] uninstall: Failed to delete release: [configmaps \"x\" is forbidden: User cannot delete]\nError: failed to delete release: x\n";
        let m = with_uninstall_cause(error_message(helm3), helm3);
        assert_eq!(
            m,
            "failed to delete release: x ([configmaps \"x\" is forbidden: User cannot delete])"
        );
        assert_ne!(classify(&m), FailureKind::ClusterUnreachable);
        // Without the debug line, or another failure: unchanged.
        let plain = "Error: failed to delete release: x\n";
        assert_eq!(
            with_uninstall_cause(error_message(plain), plain),
            "failed to delete release: x"
        );
        let other = "uninstall: Failed to delete release: [boom]\nError: release: not found\n";
        assert_eq!(
            with_uninstall_cause(error_message(other), other),
            "release: not found"
        );
    }

    #[test]
    fn classify_known_helm_messages() {
        let cases = [
            (
                "INSTALLATION FAILED: unable to build kubernetes objects from release manifest: resource mapping not found for name: \"linkerd-identity\" namespace: \"linkerd\" from \"\": no matches for kind \"Certificate\" in version \"cert-manager.io/v1\"\nensure CRDs are installed first",
                FailureKind::NoMatchesForKind,
            ),
            (
                "failed post-install: resource Job/linkerd/check not ready. status: Failed",
                FailureKind::HookFailed,
            ),
            (
                "failed pre-install: 1 error occurred:\n\t* job check failed: BackoffLimitExceeded",
                FailureKind::HookFailed,
            ),
            (
                "resource Deployment/ns/x not ready. status: InProgress, message: ...\ncontext deadline exceeded",
                FailureKind::Timeout,
            ),
            ("release: not found", FailureKind::ReleaseNotFound),
            (
                "Kubernetes cluster unreachable: Get \"https://127.0.0.1:1/version\": dial tcp 127.0.0.1:1: connect: connection refused",
                FailureKind::ClusterUnreachable,
            ),
            (
                "create: failed to create: namespaces \"x\" not found",
                FailureKind::Other,
            ),
        ];
        for (msg, kind) in cases {
            assert_eq!(classify(msg), kind, "{msg}");
        }
    }

    #[tokio::test]
    async fn values_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let helm = Helm {
            binary: "helm".into(),
            version: HelmVersion::parse("v4.1.4").unwrap(),
            home: dir.path().join("helm"),
            kubeconfig: Some("/k".into()),
            kube_context: None,
            redactor: Redactor::new(),
            running: Arc::default(),
        };
        std::fs::create_dir_all(dir.path().join("helm/values")).unwrap();
        let p = helm
            .write_values("ns", "rel", &serde_json::json!({"a": {"b": 1}}))
            .unwrap();
        let p2 = helm
            .write_values("ns", "rel", &serde_json::json!({"a": 2}))
            .unwrap();
        assert_eq!(p, p2);
        for (ns, rel) in [
            ("../etc", "x"),
            ("ns", "a/b"),
            ("ns", "-x"),
            ("NS", "x"),
            ("", "x"),
        ] {
            assert!(matches!(
                helm.write_values(ns, rel, &serde_json::json!({})),
                Err(Error::InvalidName { .. })
            ));
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({"a": 2})
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let env = helm.environment();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone().into_string().unwrap())
        };
        assert_eq!(get("HELM_DRIVER").as_deref(), Some("secret"));
        assert_eq!(get("KUBECONFIG").as_deref(), Some("/k"));
        let gogc = std::env::var("GOGC").unwrap_or_else(|_| "400".into());
        assert_eq!(get("GOGC"), Some(gogc), "strata's GOGC, else 400");
        assert!(
            get("HELM_CACHE_HOME")
                .unwrap()
                .starts_with(dir.path().to_str().unwrap())
        );
    }

    fn tools_helm(major: u64) -> Option<PathBuf> {
        let root = std::env::var_os("STRATA_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools"));
        let p = root.join(format!("helm{major}")).join("helm");
        p.exists().then_some(p)
    }

    #[tokio::test]
    async fn detects_the_real_helm_versions() {
        for major in [3, 4] {
            let Some(bin) = tools_helm(major) else {
                panic!("helm{major} not installed: run scripts/install-tools.sh");
            };
            let v = Helm::detect(&bin).await.unwrap();
            assert_eq!(v.major, major);
        }
    }

    /// Captures span names and fields.
    #[derive(Clone, Default)]
    struct Spans(std::sync::Arc<std::sync::Mutex<Vec<SpanRecord>>>);

    /// A span's name and its fields.
    type SpanRecord = (String, Vec<(String, String)>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);
    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0
                .push((field.name().to_string(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Spans
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = vec![("id".to_string(), id.into_u64().to_string())];
            attrs.record(&mut Fields(&mut fields));
            self.0
                .lock()
                .unwrap()
                .push((attrs.metadata().name().to_string(), fields));
        }
        fn on_record(
            &self,
            id: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut spans = self.0.lock().unwrap();
            let key = id.into_u64().to_string();
            if let Some((_, fields)) = spans
                .iter_mut()
                .find(|(_, f)| f.iter().any(|(k, v)| k == "id" && *v == key))
            {
                values.record(&mut Fields(fields));
            }
        }
    }

    const FAKE_HELM: &str = r#"#!/bin/sh
echo "$*" >> "$HELM_DATA_HOME/args.log"
env | sort > "$HELM_DATA_HOME/env.log"
case "$1" in
  version) printf 'v3.19.0+gdeadbee' ;;
  status) printf '{"name":"%s","namespace":"ns","version":4,"info":{"status":"deployed","description":"Upgrade complete"},"chart":{"metadata":{"name":"demo","version":"0.2.0"}},"config":{"k":"v"},"manifest":""}' "$2" ;;
  upgrade) echo 'level=WARN msg="noise"' >&2; echo 'Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress' >&2; exit 1 ;;
  *) echo "Error: unexpected $1" >&2; exit 2 ;;
esac
"#;

    #[test]
    fn nice_steps_down_with_each_helm_running_at_once() {
        assert_eq!(nice_for(0), 0);
        assert_eq!(nice_for(1), 3);
        assert_eq!(nice_for(6), 18);
        assert_eq!(nice_for(7), 19);
        assert_eq!(nice_for(usize::MAX), 19);
    }

    /// helm processes running at once are niced by start order; the first one runs at the
    /// agent's priority, and so does the next one once the others are done.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn helm_processes_running_at_once_are_prioritized_by_start_order() {
        const SLOW_HELM: &str = r#"#!/bin/sh
case "$1" in
  version) printf 'v3.19.0+gdeadbee' ;;
  status)
    echo "$2 $(nice)" >> "$HELM_DATA_HOME/nice.log"
    sleep 0.5
    printf '{"name":"%s","namespace":"ns","version":1,"info":{"status":"deployed"},"chart":{"metadata":{"name":"demo","version":"0.1.0"}},"manifest":""}' "$2" ;;
esac
"#;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("helm");
        std::fs::write(&bin, SLOW_HELM).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let work = dir.path().join("work");
        let helm = Helm::new(
            HelmConfig {
                binary: bin,
                work_dir: work.clone(),
                kubeconfig: None,
                kube_context: None,
            },
            Redactor::new(),
        )
        .await
        .unwrap();
        let (a, b, c) = tokio::join!(
            helm.status("first", "ns"),
            helm.status("second", "ns"),
            helm.status("third", "ns")
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        helm.status("alone", "ns").await.unwrap();
        let own = rustix::process::getpriority_process(None).unwrap();
        let log = std::fs::read_to_string(work.join("helm/data/nice.log")).unwrap();
        let mut seen: Vec<(String, i32)> = log
            .lines()
            .map(|l| {
                let (name, nice) = l.split_once(' ').unwrap();
                (name.to_string(), nice.parse::<i32>().unwrap() - own)
            })
            .collect();
        seen.sort();
        let want = |n: i32| n.min(19 - own);
        assert_eq!(
            seen,
            vec![
                ("alone".to_string(), 0),
                ("first".to_string(), 0),
                ("second".to_string(), want(3)),
                ("third".to_string(), want(6)),
            ],
            "{log}"
        );
    }

    #[test]
    fn a_fake_helm_sees_isolated_env_and_failures_are_typed_and_traced() {
        use tracing_subscriber::layer::SubscriberExt;
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("helm");
        std::fs::write(&bin, FAKE_HELM).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let work = dir.path().join("work");
        rt.block_on(async {
            let helm = Helm::new(
                HelmConfig {
                    binary: bin.clone(),
                    work_dir: work.clone(),
                    kubeconfig: Some("/kube/config".into()),
                    kube_context: Some("sim".into()),
                },
                Redactor::new(),
            )
            .await
            .unwrap();
            assert_eq!(helm.version().major, 3);
            let st = helm.status("demo", "ns").await.unwrap();
            assert_eq!((st.revision, st.chart_version.as_str()), (4, "0.2.0"));
            let values = helm
                .write_values("ns", "demo", &serde_json::json!({}))
                .unwrap();
            let err = helm
                .upgrade_install(&UpgradeRequest {
                    release: "demo".into(),
                    namespace: "ns".into(),
                    chart: "/c.tgz".into(),
                    values_file: values,
                    timeout: Duration::from_secs(10),
                    create_namespace: false,
                    wait: true,
                    labels: Default::default(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.kind(), Some(FailureKind::OperationInProgress));
            assert_eq!(
                err.helm_message(),
                Some("UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress")
            );
        });
        let data = work.join("helm/data");
        let args = std::fs::read_to_string(data.join("args.log")).unwrap();
        let lines: Vec<&str> = args.lines().collect();
        assert_eq!(
            lines[1],
            "status demo --namespace ns --output json --kube-context sim"
        );
        assert!(lines[2].contains("--wait --wait-for-jobs"), "{}", lines[2]);
        let env = std::fs::read_to_string(data.join("env.log")).unwrap();
        assert!(env.contains("HELM_DRIVER=secret"));
        assert!(env.contains("KUBECONFIG=/kube/config"));
        assert!(env.lines().any(|l| l.starts_with("GOGC=")), "{env}");
        assert!(env.contains(&format!(
            "HELM_CACHE_HOME={}",
            work.join("helm/cache").display()
        )));
        assert!(env.contains(&format!(
            "KUBECACHEDIR={}",
            work.join("helm/kube-cache").display()
        )));
        assert!(
            !env.lines().any(|l| l.starts_with("USER=")),
            "environment is explicit"
        );

        let spans = spans.0.lock().unwrap();
        let helm_spans: Vec<&Vec<(String, String)>> = spans
            .iter()
            .filter(|(n, _)| n == "helm")
            .map(|(_, f)| f)
            .collect();
        assert_eq!(helm_spans.len(), 2, "one span per helm command");
        let get = |f: &Vec<(String, String)>, k: &str| {
            f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let upgrade = helm_spans[1];
        assert_eq!(get(upgrade, "cmd").as_deref(), Some("upgrade"));
        assert_eq!(get(upgrade, "release").as_deref(), Some("demo"));
        assert_eq!(get(upgrade, "namespace").as_deref(), Some("ns"));
        assert_eq!(get(upgrade, "helm.version").as_deref(), Some("v3.19.0"));
        assert_eq!(get(upgrade, "exit_code").as_deref(), Some("1"));
        assert_eq!(get(upgrade, "otel.status_code").as_deref(), Some("ERROR"));
        assert!(get(upgrade, "duration_ms").is_some());
        assert_eq!(get(helm_spans[0], "exit_code").as_deref(), Some("0"));
    }
}
