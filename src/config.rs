//! Command line and environment configuration (clap derive; every flag has an environment
//! variable, shown in `strata --help`).
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--git-url` | `STRATA_GIT_URL` | required |
//! | `--git-ref` | `STRATA_GIT_REF` | `main` (branch, tag or commit) |
//! | `--profiles-path` | `STRATA_PROFILES_PATH` | `profiles.yaml` |
//! | `--profiles-configmap` | `STRATA_PROFILES_CONFIGMAP` | none (a ConfigMap of the agent's namespace whose key `profiles.yaml` is an overlay list applied on top of the list from Git) |
//! | `--cluster-name` | `STRATA_CLUSTER_NAME` | none (`{cluster}` in the profiles path; `run` then reads kube-system/kubeadm-config) |
//! | `--git-username` | `STRATA_GIT_USERNAME` | none |
//! | `--git-password-file` | `STRATA_GIT_PASSWORD_FILE` | none (HTTPS password or token, read from the file) |
//! | `--git-ssh-key-file` | `STRATA_GIT_SSH_KEY_FILE` | none |
//! | `--git-known-hosts-file` | `STRATA_GIT_KNOWN_HOSTS_FILE` | none |
//! | `--git-client-cert-file` | `STRATA_GIT_CLIENT_CERT_FILE` | none (client certificate, PEM, for HTTPS Git requiring mTLS; with `--git-client-key-file`) |
//! | `--git-client-key-file` | `STRATA_GIT_CLIENT_KEY_FILE` | none (its private key, PEM) |
//! | `--work-dir` | `STRATA_WORK_DIR` | a new temporary directory |
//! | `--mirrors` | `STRATA_MIRRORS` | none (URLs fetched as declared) |
//! | `--mirrors-configmap` | `STRATA_MIRRORS_CONFIGMAP` | none (a ConfigMap of the agent's namespace whose key `mirrors.yaml` has the `--mirrors` format; read every cycle; not with `--mirrors`) |
//! | `--ca-file` | `STRATA_CA_FILE` | none (the system's trusted CAs only) |
//! | `--interval` | `STRATA_INTERVAL` | `1m` |
//! | `--concurrency` | `STRATA_CONCURRENCY` | fitted to the pod |
//! | `--helm` | `STRATA_HELM` | `helm` (on `PATH`) |
//! | `--default-timeout` | `STRATA_DEFAULT_TIMEOUT` | `5m` (helm timeout of profiles when the list sets neither `timeout` on the profile nor `defaults.timeout`) |
//! | `--listen` | `STRATA_LISTEN` | `0.0.0.0:8080` |
//! | `--kubeconfig` | `KUBECONFIG` | in-cluster configuration, else `~/.kube/config` |
//! | `--namespace` | `STRATA_NAMESPACE` | the service account's namespace file, else `strata-system` |
//! | `--once` | `STRATA_ONCE` | off (exit 0 when every layer is Ready, 1 on a Stalled release or an invalid revision, 2 at the deadline) |
//! | `--once-timeout` | `STRATA_ONCE_TIMEOUT` | the longest helm timeout of the revision's releases (the deadline of `--once`) |
//! | `--leader-elect` | `STRATA_LEADER_ELECT` | off (one active agent through a Lease) |
//! | `--lease-name` | `STRATA_LEASE_NAME` | `strata` |
//! | `--admin-token-file` | `STRATA_ADMIN_TOKEN_FILE` | none (status API writes disabled) |
//! | `--output` (plan, diff) | `STRATA_OUTPUT` | `text` |
//! | `--values-diff` (diff) | none | off (changed value paths of upgrades, keys only) |
//! | `--output` (bundle) | none | required (the archive written) |
//! | `--git-url`, `--git-ref`, `--chart-dir`, `--oci`, `--plain-http`, `--oci-username`, `--oci-password-file` (bundle push) | none | where the bundle goes (`--git-ref`: the bundle's ref) |
//! | `--manifests` (diff) | none | off (`helm template` of installs and upgrades, object diff against the stored manifest; Secret values never shown) |
//! | `--helm` (diff) | `STRATA_HELM` | `helm` (only with `--manifests`) |
//! | `--url` (status) | `STRATA_STATUS_URL` | none (else `--kubeconfig`: the status ConfigMap; `--namespace` defaults to `strata-system`) |
//! | `--log-format` | `STRATA_LOG_FORMAT` | `text` |
//! | `--log-level` | `STRATA_LOG_LEVEL` | `info` |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::observe::server::AdminToken;
use crate::observe::telemetry::LogFormat;

/// strata: installs layered Helm profiles from Git, one layer at a time.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the profile list to the cluster, on start and every interval.
    Run(RunArgs),
    /// Print the layers a profile list resolves to, and every problem in it (no cluster).
    Plan(PlanArgs),
    /// Show where a running agent stands (its status API, or its status ConfigMap)
    ///
    /// Reads the status from a running agent's status API (--url) or from the status
    /// ConfigMap in a cluster (--kubeconfig). Exit 0 Ready, 1 Failed, Stalled or rejected, 2
    /// Progressing (or --timeout passed), 3 the status could not be read.
    Status(StatusArgs),
    /// Show what a revision would do to a cluster: per layer, install, upgrade (and why),
    /// unchanged, remove. Writes nothing.
    ///
    /// Loads the revision as `strata plan` does and compares it with the releases helm stored
    /// in the cluster, deciding as the agent decides. Exit 0 nothing would change, 2 something
    /// would change, 1 the revision has problems (all printed) or the diff could not be made.
    Diff(DiffArgs),
    /// Write one revision (Git commit, every chart at its exact version, a lock of digests)
    /// into one archive for an air-gapped site; `strata bundle push` puts it into the site.
    ///
    /// Loads the revision as `strata plan` does (an invalid one is refused with all its
    /// problems) and writes a tar: bundle.lock.json, git/repository.bundle (the commit with
    /// its history) and charts/*.tgz. Exit 0 written, 1 invalid revision, 2 other errors.
    Bundle(BundleArgs),
}

/// `strata bundle [--git-url ...] --output FILE`, or `strata bundle push FILE ...`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BundleArgs {
    #[command(subcommand)]
    pub push: Option<BundleCommand>,
    /// The revision to bundle (as `strata plan`).
    #[command(flatten)]
    pub source: Option<SourceArgs>,
    /// The archive to write (required without `push`).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Push a bundle into a site: its charts into an OCI registry (--oci) and/or an HTTP
    /// chart repository directory (--chart-dir), then its commit into the site's Git
    /// repository (same commit id). Every chart's digest is checked against the lock first.
    Push(BundlePushArgs),
}

#[derive(Debug, Args)]
pub struct BundlePushArgs {
    /// The archive `strata bundle` wrote.
    pub bundle: PathBuf,
    /// The site's Git repository (https://, http://, ssh://, a path); credentials in the URL
    /// or from git's ssh agent.
    #[arg(long)]
    pub git_url: String,
    /// The branch (or full `refs/...` name) written; default: the bundle's --git-ref, or
    /// `main` when that was a commit id. Never forced.
    #[arg(long)]
    pub git_ref: Option<String>,
    /// Where charts from OCI registries go: `oci://<site registry>[:port]/<prefix>`
    /// (`helm push`; each chart becomes `<prefix>/<name>:<version>`).
    #[arg(long)]
    pub oci: Option<String>,
    /// Where charts from HTTP repositories go: a directory served as the site's chart
    /// repository (archives and index.yaml written; other entries of its index kept).
    #[arg(long)]
    pub chart_dir: Option<PathBuf>,
    /// Speak plain HTTP to the --oci registry.
    #[arg(long)]
    pub plain_http: bool,
    /// User name for the --oci registry (basic auth, with --oci-password-file).
    #[arg(long, requires = "oci_password_file")]
    pub oci_username: Option<String>,
    /// File holding the --oci registry's password or token (given to `helm registry login`
    /// on stdin, in a scratch helm home).
    #[arg(long, requires = "oci_username")]
    pub oci_password_file: Option<PathBuf>,
    /// The helm binary for `helm push`.
    #[arg(long, env = "STRATA_HELM", default_value = defaults::HELM)]
    pub helm: PathBuf,
    /// Scratch directory (default: a new temporary directory).
    #[arg(long, env = "STRATA_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `info,strata=debug`.
    #[arg(long, env = "STRATA_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

/// Where the profile list comes from.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Git repository: https://, http://, ssh://, git://, user@host:path or a local path.
    #[arg(long, env = "STRATA_GIT_URL")]
    pub git_url: String,
    /// Branch, tag or commit.
    #[arg(long, env = "STRATA_GIT_REF", default_value = defaults::GIT_REF)]
    pub git_ref: String,
    /// Path of the profile list inside the repository; `{cluster}` is replaced by the
    /// cluster name (e.g. `clusters/{cluster}/profiles.yaml`).
    #[arg(long, env = "STRATA_PROFILES_PATH", default_value = defaults::PROFILES_PATH)]
    pub profiles_path: String,
    /// A ConfigMap in the agent's namespace whose key `profiles.yaml` is a profile list
    /// applied on top of the list from Git (it may include lists of the repository, override,
    /// disable or add profiles); read every cycle, a change of it is a new revision.
    #[arg(long, env = "STRATA_PROFILES_CONFIGMAP")]
    pub profiles_configmap: Option<String>,
    /// This cluster's name, for `{cluster}` in --profiles-path. Without it `strata run` reads
    /// `clusterName` from ConfigMap kube-system/kubeadm-config (set by Cluster API's kubeadm).
    #[arg(long, env = "STRATA_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// User name for HTTPS Git (with --git-password-file).
    #[arg(long, env = "STRATA_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// File holding the HTTPS password or token.
    #[arg(long, env = "STRATA_GIT_PASSWORD_FILE")]
    pub git_password_file: Option<PathBuf>,
    /// SSH private key file for ssh:// URLs.
    #[arg(long, env = "STRATA_GIT_SSH_KEY_FILE")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// known_hosts file for ssh:// URLs.
    #[arg(long, env = "STRATA_GIT_KNOWN_HOSTS_FILE")]
    pub git_known_hosts_file: Option<PathBuf>,
    /// Client certificate (PEM, its chain after it) presented to an https:// Git server that
    /// requires one (mutual TLS), e.g. `tls.crt` of a mounted kubernetes.io/tls Secret. With
    /// --git-client-key-file.
    #[arg(
        long,
        env = "STRATA_GIT_CLIENT_CERT_FILE",
        requires = "git_client_key_file"
    )]
    pub git_client_cert_file: Option<PathBuf>,
    /// The private key (PEM, unencrypted) of --git-client-cert-file, e.g. `tls.key`.
    #[arg(
        long,
        env = "STRATA_GIT_CLIENT_KEY_FILE",
        requires = "git_client_cert_file"
    )]
    pub git_client_key_file: Option<PathBuf>,
    /// Directory for the Git cache, chart cache and helm homes (default: a new temp dir).
    #[arg(long, env = "STRATA_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// The site's mirrors: a YAML file of `{prefix, mirror}` URL-prefix rewrites applied to
    /// the Git URL, HTTP chart repositories and `oci://` registries (longest prefix wins).
    #[arg(long, env = "STRATA_MIRRORS")]
    pub mirrors: Option<PathBuf>,
    /// The site's mirrors from a ConfigMap in the agent's namespace instead of a file: its
    /// key `mirrors.yaml` in the --mirrors format, read every cycle (a change applies at the
    /// next cycle). Not with --mirrors.
    #[arg(long, env = "STRATA_MIRRORS_CONFIGMAP", conflicts_with = "mirrors")]
    pub mirrors_configmap: Option<String>,
    /// CA certificates (PEM bundle) trusted, besides the system's, for Git over HTTPS, HTTP
    /// chart repositories and OCI registries.
    #[arg(long, env = "STRATA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Apply the revision and exit: 0 when every layer is Ready; 1 when it cannot be: a
    /// release is Stalled (a permanent error, or `remediation.retries` failed attempts) or the
    /// revision is invalid; 2 when --once-timeout passes first. Until then failures that may
    /// pass (the Git server, a chart repository, the Kubernetes API, a release backing off)
    /// are retried.
    #[arg(long, env = "STRATA_ONCE")]
    pub once: bool,
    /// Deadline of --once, from the first cycle (Go-style duration). Default: the longest helm
    /// timeout of the revision's releases (--default-timeout until a revision is loaded).
    #[arg(long, env = "STRATA_ONCE_TIMEOUT", value_parser = parse_duration)]
    pub once_timeout: Option<Duration>,
    /// How often to fetch the repository (Go-style duration: 30s, 1m, 1h30m).
    #[arg(long, env = "STRATA_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub interval: Duration,
    /// helm processes at once inside one layer (a release waiting for its objects to become
    /// ready after helm exited holds none). Default: what the pod can afford
    /// (its memory limit over helm's measured peak memory, 4 per CPU, at most 10).
    #[arg(long, env = "STRATA_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// The helm binary (helm 3 or helm 4; the version is detected).
    #[arg(long, env = "STRATA_HELM", default_value = defaults::HELM)]
    pub helm: PathBuf,
    /// helm timeout of profiles when the list sets neither the profile's `timeout` nor
    /// `defaults.timeout`.
    #[arg(long, env = "STRATA_DEFAULT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub default_timeout: Duration,
    /// Address of the status API.
    #[arg(long, env = "STRATA_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// kubeconfig file; without it the in-cluster configuration is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The agent's own namespace (status ConfigMap and Events).
    #[arg(long, env = "STRATA_NAMESPACE")]
    pub namespace: Option<String>,
    /// Elect one active agent through a Lease in the agent's namespace, so several replicas
    /// never run helm at the same time; standbys serve /status and wait.
    #[arg(long, env = "STRATA_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease used with --leader-elect.
    #[arg(long, env = "STRATA_LEASE_NAME", default_value = defaults::LEASE_NAME)]
    pub lease_name: String,
    /// File holding the bearer token that status API writes (`POST /releases/.../retry`)
    /// require; read once at start, surrounding whitespace trimmed. Without it writes are
    /// refused with 403.
    #[arg(long, env = "STRATA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output format.
    #[arg(long, short, env = "STRATA_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `strata diff`: the revision (as `strata plan`), the cluster and the agent it belongs to.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// kubeconfig file; without it `~/.kube/config`, else the in-cluster configuration.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The agent's namespace: its releases carry `strata.io/agent=<namespace>`, and
    /// `valuesFrom` Secrets and repository credentials are read from it.
    #[arg(long, short = 'n', env = "STRATA_NAMESPACE", default_value = defaults::NAMESPACE)]
    pub namespace: String,
    /// The agent's --default-timeout (part of what decides an upgrade when the list sets no
    /// timeout).
    #[arg(long, env = "STRATA_DEFAULT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub default_timeout: Duration,
    /// For upgrades whose values changed, list the changed value paths (keys only, never
    /// the values).
    #[arg(long)]
    pub values_diff: bool,
    /// For every release to install or upgrade, render the chart with `helm template` and
    /// show, object by object, what changes against the manifest helm stored (a Secret's
    /// values never: only the keys that change).
    #[arg(long)]
    pub manifests: bool,
    /// The helm binary for --manifests (the agent's helm: helm 3 or helm 4).
    #[arg(long, env = "STRATA_HELM", default_value = defaults::HELM)]
    pub helm: PathBuf,
    /// Output format: text for people, JSON for scripts.
    #[arg(long, short, env = "STRATA_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `strata status`: where to read the status from and how to show it.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's status API (its --listen address), e.g. `http://127.0.0.1:8080`; GET
    /// /status is read.
    #[arg(long, env = "STRATA_STATUS_URL", conflicts_with_all = ["kubeconfig", "context"])]
    pub url: Option<String>,
    /// Read the status ConfigMap `strata-status` from the cluster of this kubeconfig instead.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
    /// The agent's namespace, where its status ConfigMap is.
    #[arg(long, short = 'n', env = "STRATA_NAMESPACE", default_value = defaults::NAMESPACE)]
    pub namespace: String,
    /// Output format: the layered view, or the status JSON (for scripts).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Follow the status: on a terminal a progress line per layer redrawn in place, else a
    /// line per change (with -o json, one JSON document per line per change). Until Ctrl-C,
    /// or with --wait until the wait ends.
    #[arg(long, short)]
    pub watch: bool,
    /// Wait until every layer is Ready (exit 0), a release is Stalled or the revision is
    /// rejected (exit 1), or --timeout passes (exit 2, or 1 when a release is Failed then).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (Go-style duration).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often the status is read with --watch and --wait.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,
}

/// Defaults shared by the flags and by [`AgentBuilder`] (a unit test keeps them equal).
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    pub const GIT_REF: &str = "main";
    pub const PROFILES_PATH: &str = "profiles.yaml";
    pub const INTERVAL: Duration = Duration::from_secs(60);
    pub const HELM: &str = "helm";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
    pub const LEASE_NAME: &str = "strata";
    /// The agent's namespace when neither `--namespace` nor the service account says one.
    pub const NAMESPACE: &str = "strata-system";
}

/// The service account namespace file of an in-cluster pod.
pub const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `--namespace`, else the in-cluster namespace file, else `strata-system`.
pub fn agent_namespace(flag: Option<String>) -> String {
    flag.filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string(SA_NAMESPACE_FILE)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| defaults::NAMESPACE.to_string())
}

/// Where the profile list comes from (the library form of [`SourceArgs`]).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub git_url: String,
    /// Branch, tag or commit.
    pub git_ref: String,
    /// May contain `{cluster}`.
    pub profiles_path: String,
    /// `--cluster-name`; `None` when not given or blank.
    pub cluster_name: Option<String>,
    /// `--profiles-configmap`: the overlay list's ConfigMap in the agent's namespace.
    pub profiles_configmap: Option<String>,
    pub credentials: GitCredentials,
    /// `None`: a new temporary directory.
    pub work_dir: Option<PathBuf>,
    /// `--mirrors`: the site's URL-prefix rewrites (read when the source is set up).
    pub mirrors_file: Option<PathBuf>,
    /// `--mirrors-configmap`: the site's mirrors from a ConfigMap of the agent's namespace,
    /// read every cycle (not with `mirrors_file`).
    pub mirrors_configmap: Option<String>,
    /// `--ca-file`: extra trusted CA certificates (PEM) for Git, HTTP and OCI.
    pub ca_file: Option<PathBuf>,
}

/// Git credentials, as files (read when the source is set up).
#[derive(Debug, Clone, Default)]
pub struct GitCredentials {
    /// HTTPS user name (with `password_file`); `git` when not given.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// Client certificate and its key (PEM) for HTTPS Git that requires one (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl SourceConfig {
    /// A source with the flags' defaults: ref `main`, `profiles.yaml`, no credentials, a
    /// temporary work dir.
    pub fn new(git_url: impl Into<String>) -> Self {
        Self {
            git_url: git_url.into(),
            git_ref: defaults::GIT_REF.into(),
            profiles_path: defaults::PROFILES_PATH.into(),
            cluster_name: None,
            profiles_configmap: None,
            credentials: GitCredentials::default(),
            work_dir: None,
            mirrors_file: None,
            mirrors_configmap: None,
            ca_file: None,
        }
    }

    /// The site's mirrors file (`--mirrors`).
    pub fn mirrors_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.mirrors_file = Some(path.into());
        self
    }

    /// The site's mirrors from a ConfigMap (`--mirrors-configmap`).
    pub fn mirrors_configmap(mut self, name: impl Into<String>) -> Self {
        self.mirrors_configmap = Some(name.into());
        self
    }

    /// Extra trusted CA certificates (`--ca-file`).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    pub fn git_ref(mut self, git_ref: impl Into<String>) -> Self {
        self.git_ref = git_ref.into();
        self
    }

    pub fn profiles_path(mut self, path: impl Into<String>) -> Self {
        self.profiles_path = path.into();
        self
    }

    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }
}

impl From<SourceArgs> for SourceConfig {
    fn from(a: SourceArgs) -> Self {
        Self {
            git_url: a.git_url,
            git_ref: a.git_ref,
            profiles_path: a.profiles_path,
            cluster_name: a.cluster_name.filter(|c| !c.trim().is_empty()),
            profiles_configmap: a.profiles_configmap.filter(|c| !c.trim().is_empty()),
            credentials: GitCredentials {
                username: a.git_username,
                password_file: a.git_password_file,
                ssh_key_file: a.git_ssh_key_file,
                known_hosts_file: a.git_known_hosts_file,
                client_cert: a.git_client_cert_file.zip(a.git_client_key_file),
            },
            work_dir: a.work_dir,
            mirrors_file: a.mirrors,
            mirrors_configmap: a.mirrors_configmap.filter(|c| !c.trim().is_empty()),
            ca_file: a.ca_file,
        }
    }
}

/// The directory for helm homes, the Git cache and the chart cache; a temporary one is
/// deleted when this is dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// `dir` (created if missing), else a new temporary directory named `<prefix>…`.
    pub fn prepare(dir: Option<&Path>, prefix: &str) -> std::io::Result<Self> {
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Ok(Self {
                    path: dir.to_path_buf(),
                    _temp: None,
                })
            }
            None => {
                let t = tempfile::Builder::new().prefix(prefix).tempdir()?;
                Ok(Self {
                    path: t.path().to_path_buf(),
                    _temp: Some(t),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Everything `strata run` needs, checked: built only by [`AgentBuilder::compile`] (from
/// the flags through [`compile`]).
#[derive(Debug)]
pub struct AgentConfig {
    pub source: SourceConfig,
    pub once: bool,
    /// The deadline of `once`; `None`: the longest helm timeout of the revision's releases.
    pub once_timeout: Option<Duration>,
    pub interval: Duration,
    /// `None`: fitted to the pod before each revision (strata-core's `capacity::fit`).
    pub concurrency: Option<usize>,
    /// The helm binary (it exists; its version is detected when the agent starts).
    pub helm: PathBuf,
    pub default_timeout: Duration,
    pub listen: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    /// The agent's own namespace (status ConfigMap, Events, Lease).
    pub namespace: String,
    /// `Some(lease name)`: leader election through that Lease in `namespace`.
    pub lease: Option<String>,
    /// The status API's bearer token for writes; `None`: writes are refused.
    pub admin_token: Option<AdminToken>,
    pub work_dir: WorkDir,
}

impl AgentConfig {
    /// Settings with the flags' defaults, to be [`AgentBuilder::compile`]d.
    pub fn builder(source: SourceConfig) -> AgentBuilder {
        AgentBuilder {
            source,
            once: false,
            once_timeout: None,
            interval: defaults::INTERVAL,
            concurrency: None,
            helm: PathBuf::from(defaults::HELM),
            default_timeout: defaults::DEFAULT_TIMEOUT,
            listen: defaults::LISTEN,
            kubeconfig: None,
            namespace: None,
            lease: None,
            admin_token_file: None,
        }
    }
}

/// The agent's settings before they are checked: the flags of `strata run`, or set one by
/// one (the demo).
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    pub source: SourceConfig,
    pub once: bool,
    pub once_timeout: Option<Duration>,
    pub interval: Duration,
    pub concurrency: Option<usize>,
    pub helm: PathBuf,
    pub default_timeout: Duration,
    pub listen: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    /// `None`: the service account's namespace, else `strata-system`.
    pub namespace: Option<String>,
    pub lease: Option<String>,
    pub admin_token_file: Option<PathBuf>,
}

impl From<RunArgs> for AgentBuilder {
    fn from(a: RunArgs) -> Self {
        Self {
            source: a.source.into(),
            once: a.once,
            once_timeout: a.once_timeout,
            interval: a.interval,
            concurrency: a.concurrency.map(usize::from),
            helm: a.helm,
            default_timeout: a.default_timeout,
            listen: a.listen,
            kubeconfig: a.kubeconfig,
            namespace: a.namespace,
            lease: a.leader_elect.then_some(a.lease_name),
            admin_token_file: a.admin_token_file,
        }
    }
}

/// Check the flags of `strata run` and compile them into the agent's configuration.
pub fn compile(args: RunArgs) -> Result<AgentConfig, ConfigErrors> {
    AgentBuilder::from(args).compile()
}

impl AgentBuilder {
    pub fn once(mut self, once: bool) -> Self {
        self.once = once;
        self
    }

    /// The deadline of `once` (see [`AgentConfig::once_timeout`]).
    pub fn once_timeout(mut self, timeout: Duration) -> Self {
        self.once_timeout = Some(timeout);
        self
    }

    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    pub fn helm(mut self, helm: impl Into<PathBuf>) -> Self {
        self.helm = helm.into();
        self
    }

    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn kubeconfig(mut self, kubeconfig: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(kubeconfig.into());
        self
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Read and check every file the settings name, resolve the namespace and prepare the
    /// work dir. Every problem is reported at once, each with the flag (and environment
    /// variable) that fixes it; nothing binds a port or talks to a cluster.
    pub fn compile(self) -> Result<AgentConfig, ConfigErrors> {
        let Self {
            source,
            once,
            once_timeout,
            interval,
            concurrency,
            helm,
            default_timeout,
            listen,
            kubeconfig,
            namespace,
            lease,
            admin_token_file,
        } = self;
        let mut problems = Vec::new();
        let admin_token = match &admin_token_file {
            Some(path) => read_admin_token(path).map_err(|p| problems.push(p)).ok(),
            None => {
                tracing::info!(
                    "no --admin-token-file: status API writes (POST .../retry) are disabled"
                );
                None
            }
        };
        match once_timeout {
            Some(t) if !once => problems.push(ConfigProblem::new(
                Setting::OnceTimeout,
                format!(
                    "a deadline ({t:?}) is only used with --once (STRATA_ONCE); add --once or remove it"
                ),
            )),
            Some(t) if t.is_zero() => problems.push(ConfigProblem::new(
                Setting::OnceTimeout,
                "the deadline of --once must be longer than 0; e.g. 10m".into(),
            )),
            _ => {}
        }
        if let Err(reason) = check_program(&helm) {
            problems.push(ConfigProblem::new(Setting::Helm, reason));
        }
        problems.extend(check_credentials(&source.credentials));
        if let Some(path) = &source.mirrors_file
            && let Err(reason) = read_mirrors(path)
        {
            problems.push(ConfigProblem::new(Setting::Mirrors, reason));
        }
        if let Some(path) = &source.ca_file
            && let Err(reason) = read_ca_file(path)
        {
            problems.push(ConfigProblem::new(Setting::CaFile, reason));
        }
        let work_dir = WorkDir::prepare(source.work_dir.as_deref(), "strata-")
            .map_err(|e| {
                problems.push(ConfigProblem::new(
                    Setting::WorkDir,
                    format!("cannot prepare the work dir: {e}"),
                ))
            })
            .ok();
        match (work_dir, problems.is_empty()) {
            (Some(work_dir), true) => Ok(AgentConfig {
                source,
                once,
                once_timeout,
                interval,
                concurrency,
                helm,
                default_timeout,
                listen,
                kubeconfig,
                namespace: agent_namespace(namespace),
                lease,
                admin_token,
                work_dir,
            }),
            _ => Err(ConfigErrors(problems)),
        }
    }
}

fn read_admin_token(path: &Path) -> Result<AdminToken, ConfigProblem> {
    let problem = |reason: String| {
        ConfigProblem::new(
            Setting::AdminTokenFile,
            format!(
                "cannot read the admin token file {}: {reason}",
                path.display()
            ),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
    AdminToken::new(&text).ok_or_else(|| problem("the file is empty".into()))
}

/// The mirrors file (`--mirrors`), parsed; the error names the file and every problem in it.
pub fn read_mirrors(path: &Path) -> Result<strata_core::mirrors::Mirrors, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the mirrors file {}: {e}", path.display()))?;
    strata_core::mirrors::parse(&path.display().to_string(), &text).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        format!(
            "the mirrors file {} is invalid: {}",
            path.display(),
            list.join("; ")
        )
    })
}

/// The CA file (`--ca-file`) holds at least one PEM certificate.
fn read_ca_file(path: &Path) -> Result<(), String> {
    let problem = |reason: String| format!("cannot use the CA file {}: {reason}", path.display());
    let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err(problem("it holds no PEM certificate".into())),
        Err(e) => Err(problem(format!("not a PEM certificate bundle: {e}"))),
    }
}

/// Readable Git credential files (the password is read again when the source is set up).
fn check_credentials(c: &GitCredentials) -> Vec<ConfigProblem> {
    let files = [
        (
            Setting::GitPasswordFile,
            "Git password file",
            &c.password_file,
        ),
        (Setting::GitSshKeyFile, "SSH key file", &c.ssh_key_file),
    ];
    let client_cert = c.client_cert.as_ref().and_then(|(cert, key)| {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| (p.clone(), e));
        let message = match (read(cert), read(key)) {
            (Ok(cert_pem), Ok(key_pem)) => {
                let source = format!("files {} and {}", cert.display(), key.display());
                crate::source::charts::ClientTls::from_pem(source, &cert_pem, &key_pem, None)
                    .err()
                    .map(|e| {
                        e.replace("key `tls.crt` of ", "")
                            .replace("key `tls.key` of ", "")
                            .replace("keys `tls.crt` and `tls.key` of ", "")
                    })
            }
            (Err((p, e)), _) | (_, Err((p, e))) => Some(format!(
                "cannot read the Git client certificate or key file {}: {e}",
                p.display()
            )),
        }?;
        Some(ConfigProblem::new(Setting::GitClientCert, message))
    });
    files
        .into_iter()
        .filter_map(|(setting, what, file)| {
            let path = file.as_ref()?;
            let problem = |reason: String| {
                Some(ConfigProblem::new(
                    setting,
                    format!("cannot read the {what} {}: {reason}", path.display()),
                ))
            };
            match std::fs::File::open(path).and_then(|f| f.metadata()) {
                Ok(m) if m.is_dir() => problem("it is a directory".into()),
                Ok(_) => None,
                Err(e) => problem(e.to_string()),
            }
        })
        .chain(client_cert)
        .collect()
}

/// `program` is an executable file: a path, or a name found on `PATH`.
fn check_program(program: &Path) -> Result<(), String> {
    let is_name = program.components().count() == 1 && !program.is_absolute();
    if !is_name {
        return if is_executable(program) {
            Ok(())
        } else if program.exists() {
            Err(format!(
                "helm binary {} is not an executable file",
                program.display()
            ))
        } else {
            Err(format!("helm binary {} does not exist", program.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!(
            "helm binary `{}` is not on PATH; install helm 3 or helm 4 or give its path",
            program.display()
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        m.is_file()
    }
}

/// A setting of `strata run`, named by its flag and environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    AdminTokenFile,
    OnceTimeout,
    Helm,
    GitPasswordFile,
    GitSshKeyFile,
    GitClientCert,
    WorkDir,
    Mirrors,
    CaFile,
}

impl Setting {
    /// The flag and environment variable.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::AdminTokenFile => ("--admin-token-file", "STRATA_ADMIN_TOKEN_FILE"),
            Self::OnceTimeout => ("--once-timeout", "STRATA_ONCE_TIMEOUT"),
            Self::Helm => ("--helm", "STRATA_HELM"),
            Self::GitPasswordFile => ("--git-password-file", "STRATA_GIT_PASSWORD_FILE"),
            Self::GitSshKeyFile => ("--git-ssh-key-file", "STRATA_GIT_SSH_KEY_FILE"),
            Self::GitClientCert => (
                "--git-client-cert-file/--git-client-key-file",
                "STRATA_GIT_CLIENT_CERT_FILE/STRATA_GIT_CLIENT_KEY_FILE",
            ),
            Self::WorkDir => ("--work-dir", "STRATA_WORK_DIR"),
            Self::Mirrors => ("--mirrors", "STRATA_MIRRORS"),
            Self::CaFile => ("--ca-file", "STRATA_CA_FILE"),
        }
    }
}

/// One problem in the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub setting: Setting,
    pub message: String,
}

impl ConfigProblem {
    fn new(setting: Setting, message: String) -> Self {
        Self { setting, message }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (flag, env) = self.setting.names();
        write!(f, "{}; fix {flag} ({env})", self.message)
    }
}

/// Every problem in the settings (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the configuration has {} problem(s):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parse a duration flag with the same grammar as helm's `--timeout` and the profile list's
/// durations (core's [`strata_core::GoDuration`]: `90s`, `5m`, `1h30m`, `1.5h`, `500ms`; a bare `0` is zero).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    strata_core::GoDuration::parse(text)
        .map(|d| d.as_duration())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("").is_err());
        // One grammar with helm's --timeout: the units Go knows, and the reason in the error.
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        let err = parse_duration("-5s").unwrap_err();
        assert!(err.contains("negative") && err.contains("1h30m"), "{err}");
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from([
            "strata",
            "run",
            "--git-url",
            "/tmp/repo",
            "--once",
            "--concurrency",
            "2",
            "--interval",
            "30s",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert!(run.once);
        assert_eq!(run.concurrency, Some(2));
        assert_eq!(run.interval, Duration::from_secs(30));
        assert_eq!(run.default_timeout, Duration::from_secs(300));
        assert_eq!(run.source.profiles_path, "profiles.yaml");
        assert_eq!(run.source.profiles_configmap, None);
        assert_eq!(run.source.git_ref, "main");
        assert_eq!(run.listen.to_string(), "0.0.0.0:8080");
        let cli = Cli::try_parse_from([
            "strata",
            "run",
            "--git-url",
            "x",
            "--profiles-configmap",
            "strata-profiles",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        let source: SourceConfig = run.source.into();
        assert_eq!(
            source.profiles_configmap.as_deref(),
            Some("strata-profiles")
        );
        assert!(
            Cli::try_parse_from(["strata", "run", "--git-url", "x", "--concurrency", "0"]).is_err()
        );
    }

    #[test]
    fn plan_output_json() {
        let cli =
            Cli::try_parse_from(["strata", "plan", "--git-url", "x", "--output", "json"]).unwrap();
        let Command::Plan(p) = cli.command else {
            panic!("expected plan");
        };
        assert_eq!(p.output, OutputFormat::Json);
    }

    #[test]
    fn diff_flags() {
        let cli = Cli::try_parse_from([
            "strata",
            "diff",
            "--git-url",
            "x",
            "--context",
            "c",
            "-o",
            "json",
            "--values-diff",
        ])
        .unwrap();
        let Command::Diff(d) = cli.command else {
            panic!("expected diff");
        };
        assert_eq!(d.output, OutputFormat::Json);
        assert!(d.values_diff);
        assert_eq!(d.context.as_deref(), Some("c"));
        assert_eq!(d.source.git_ref, defaults::GIT_REF);
        // The agent's defaults, so the diff decides as the agent does.
        if std::env::var_os("STRATA_NAMESPACE").is_none() {
            assert_eq!(d.namespace, defaults::NAMESPACE);
        }
        if std::env::var_os("STRATA_DEFAULT_TIMEOUT").is_none() {
            assert_eq!(d.default_timeout, defaults::DEFAULT_TIMEOUT);
        }
    }

    #[test]
    fn builder_defaults_are_the_flags_defaults() {
        let cli = Cli::try_parse_from(["strata", "run", "--git-url", "x"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        let flags = AgentBuilder::from(run);
        let built = AgentConfig::builder(SourceConfig::new("x"));
        assert_eq!(format!("{flags:?}"), format!("{built:?}"));
    }

    fn settings(dir: &Path) -> AgentBuilder {
        AgentConfig::builder(SourceConfig::new("x").work_dir(dir.join("work")))
            .helm(std::env::current_exe().unwrap())
            .namespace("ops")
    }

    #[test]
    fn good_settings_compile() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "  s3cret\n").unwrap();
        let mut b = settings(dir.path());
        b.admin_token_file = Some(token);
        let c = b.compile().unwrap();
        assert_eq!(c.namespace, "ops");
        assert!(c.admin_token.unwrap().matches(b"s3cret"));
        assert_eq!(c.work_dir.path(), dir.path().join("work"));
        assert!(c.work_dir.path().is_dir());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty-token");
        std::fs::write(&empty, " \n").unwrap();
        let mut b = settings(dir.path()).helm(dir.path().join("no-helm"));
        b.admin_token_file = Some(empty);
        b.source.credentials.password_file = Some(dir.path().join("no-password"));
        let errors = b.compile().unwrap_err();
        let settings: Vec<Setting> = errors.0.iter().map(|p| p.setting).collect();
        assert_eq!(
            settings,
            [
                Setting::AdminTokenFile,
                Setting::Helm,
                Setting::GitPasswordFile
            ]
        );
        let text = errors.to_string();
        assert!(
            text.starts_with("the configuration has 3 problem(s):"),
            "{text}"
        );
        for fix in [
            "the file is empty; fix --admin-token-file (STRATA_ADMIN_TOKEN_FILE)",
            "no-helm does not exist; fix --helm (STRATA_HELM)",
            "fix --git-password-file (STRATA_GIT_PASSWORD_FILE)",
        ] {
            assert!(text.contains(fix), "{fix:?} in {text}");
        }
    }

    #[test]
    fn mirrors_and_ca_files_are_checked_with_the_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mirrors = dir.path().join("mirrors.yaml");
        std::fs::write(
            &mirrors,
            "mirrors:\n  - prefix: https://a\n    mirorr: https://b\n",
        )
        .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut b = settings(dir.path());
        b.source = b.source.mirrors_file(&mirrors).ca_file(&ca);
        let errors = b.compile().unwrap_err();
        let settings: Vec<Setting> = errors.0.iter().map(|p| p.setting).collect();
        assert_eq!(settings, [Setting::Mirrors, Setting::CaFile]);
        let text = errors.to_string();
        for fix in [
            "mirrors.yaml: mirrors[0].mirorr: unknown field",
            "mirrors[0].mirror: missing required field",
            "fix --mirrors (STRATA_MIRRORS)",
            "holds no PEM certificate; fix --ca-file (STRATA_CA_FILE)",
        ] {
            assert!(text.contains(fix), "{fix:?} in {text}");
        }
        let cli = Cli::try_parse_from([
            "strata",
            "plan",
            "--git-url",
            "x",
            "--mirrors",
            "m.yaml",
            "--ca-file",
            "ca.pem",
        ])
        .unwrap();
        let Command::Plan(p) = cli.command else {
            panic!("plan")
        };
        let source = SourceConfig::from(p.source);
        assert_eq!(source.mirrors_file.as_deref(), Some(Path::new("m.yaml")));
        assert_eq!(source.ca_file.as_deref(), Some(Path::new("ca.pem")));
    }

    #[test]
    fn helm_must_be_an_executable_file_or_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let not_program = dir.path().join("helm");
        std::fs::write(&not_program, "not a program").unwrap();
        assert!(
            check_program(&not_program)
                .unwrap_err()
                .contains("not an executable file")
        );
        assert!(check_program(&std::env::current_exe().unwrap()).is_ok());
        assert!(check_program(Path::new("sh")).is_ok());
        assert!(
            check_program(Path::new("no-such-helm-4f1c"))
                .unwrap_err()
                .contains("not on PATH")
        );
    }

    #[test]
    fn a_work_dir_that_is_a_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let mut b = settings(dir.path());
        b.source.work_dir = Some(file);
        b.source.credentials.ssh_key_file = Some(dir.path().join("no-key"));
        let errors = b.compile().unwrap_err();
        let settings: Vec<Setting> = errors.0.iter().map(|p| p.setting).collect();
        assert_eq!(settings, [Setting::GitSshKeyFile, Setting::WorkDir]);
    }

    #[test]
    fn once_timeout_flag_and_its_problems() {
        let parse = |args: &[&str]| {
            let mut all = vec!["strata", "run", "--git-url", "x"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).unwrap().command {
                Command::Run(run) => run,
                Command::Plan(_) | Command::Status(_) | Command::Diff(_) | Command::Bundle(_) => {
                    panic!("expected run")
                }
            }
        };
        let run = parse(&["--once", "--once-timeout", "1m30s"]);
        assert!(run.once);
        assert_eq!(run.once_timeout, Some(Duration::from_secs(90)));
        assert_eq!(
            parse(&["--once"]).once_timeout,
            None,
            "default: from the revision"
        );
        assert!(
            Cli::try_parse_from(["strata", "run", "--git-url", "x", "--once-timeout", "5"])
                .is_err(),
            "a duration needs a unit"
        );
        let dir = tempfile::tempdir().unwrap();
        let c = settings(dir.path())
            .once(true)
            .once_timeout(Duration::from_secs(3))
            .compile()
            .unwrap();
        assert_eq!(c.once_timeout, Some(Duration::from_secs(3)));
        // Without --once, and zero: problems naming the flag, reported with the others.
        let mut b = settings(dir.path()).once_timeout(Duration::from_secs(3));
        b.admin_token_file = Some(dir.path().join("no-token"));
        let errors = b.compile().unwrap_err();
        let settings_of: Vec<Setting> = errors.0.iter().map(|p| p.setting).collect();
        assert_eq!(settings_of, [Setting::AdminTokenFile, Setting::OnceTimeout]);
        assert!(
            errors.to_string().contains(
                "only used with --once (STRATA_ONCE); add --once or remove it; fix --once-timeout (STRATA_ONCE_TIMEOUT)"
            ),
            "{errors}"
        );
        let errors = settings(dir.path())
            .once(true)
            .once_timeout(Duration::ZERO)
            .compile()
            .unwrap_err();
        assert_eq!(errors.0[0].setting, Setting::OnceTimeout);
        assert!(errors.to_string().contains("longer than 0"), "{errors}");
    }

    #[test]
    fn bundle_and_bundle_push_parse() {
        let cli = Cli::try_parse_from([
            "strata",
            "bundle",
            "--git-url",
            "g",
            "--git-ref",
            "v1",
            "-o",
            "b.tar",
        ])
        .unwrap();
        let Command::Bundle(BundleArgs {
            push: None,
            source: Some(source),
            output: Some(output),
        }) = cli.command
        else {
            panic!("expected bundle: {:?}", cli.command)
        };
        assert_eq!(
            (source.git_url.as_str(), source.git_ref.as_str()),
            ("g", "v1")
        );
        assert_eq!(output, Path::new("b.tar"));
        let cli = Cli::try_parse_from([
            "strata",
            "bundle",
            "push",
            "b.tar",
            "--git-url",
            "site",
            "--oci",
            "oci://r/p",
            "--plain-http",
        ])
        .unwrap();
        let Command::Bundle(BundleArgs {
            push: Some(BundleCommand::Push(p)),
            source: None,
            output: None,
        }) = cli.command
        else {
            panic!("expected bundle push")
        };
        assert_eq!(p.bundle, Path::new("b.tar"));
        assert_eq!(p.oci.as_deref(), Some("oci://r/p"));
        assert!(p.plain_http && p.chart_dir.is_none());
        assert!(Cli::try_parse_from(["strata", "bundle", "-o", "b.tar"]).is_err());
        assert!(Cli::try_parse_from(["strata", "bundle", "push", "b.tar"]).is_err());
    }

    #[test]
    fn namespace_flag_wins() {
        assert_eq!(agent_namespace(Some("ops".into())), "ops");
    }
}
