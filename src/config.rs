//! Command line and environment configuration (clap derive; every flag has an environment
//! variable, shown in `strata --help`).
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--git-url` | `STRATA_GIT_URL` | required |
//! | `--git-ref` | `STRATA_GIT_REF` | `main` (branch, tag or commit) |
//! | `--profiles-path` | `STRATA_PROFILES_PATH` | `profiles.yaml` |
//! | `--cluster-name` | `STRATA_CLUSTER_NAME` | none (`{cluster}` in the profiles path; `run` then reads kube-system/kubeadm-config) |
//! | `--git-username` | `STRATA_GIT_USERNAME` | none |
//! | `--git-password-file` | `STRATA_GIT_PASSWORD_FILE` | none (HTTPS password or token, read from the file) |
//! | `--git-ssh-key-file` | `STRATA_GIT_SSH_KEY_FILE` | none |
//! | `--git-known-hosts-file` | `STRATA_GIT_KNOWN_HOSTS_FILE` | none |
//! | `--work-dir` | `STRATA_WORK_DIR` | a new temporary directory |
//! | `--interval` | `STRATA_INTERVAL` | `1m` |
//! | `--concurrency` | `STRATA_CONCURRENCY` | `4` |
//! | `--helm` | `STRATA_HELM` | `helm` (on `PATH`) |
//! | `--default-timeout` | `STRATA_DEFAULT_TIMEOUT` | `5m` (helm timeout of profiles when the list sets neither `timeout` on the profile nor `defaults.timeout`) |
//! | `--listen` | `STRATA_LISTEN` | `0.0.0.0:8080` |
//! | `--kubeconfig` | `KUBECONFIG` | in-cluster configuration, else `~/.kube/config` |
//! | `--namespace` | `STRATA_NAMESPACE` | the service account's namespace file, else `strata-system` |
//! | `--once` | `STRATA_ONCE` | off |
//! | `--leader-elect` | `STRATA_LEADER_ELECT` | off (one active agent through a Lease) |
//! | `--lease-name` | `STRATA_LEASE_NAME` | `strata` |
//! | `--admin-token-file` | `STRATA_ADMIN_TOKEN_FILE` | none (status API writes disabled) |
//! | `--output` (plan) | `STRATA_OUTPUT` | `text` |
//! | `--log-format` | `STRATA_LOG_FORMAT` | `text` |
//! | `--log-level` | `STRATA_LOG_LEVEL` | `info` |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    #[arg(long, env = "STRATA_GIT_REF", default_value = "main")]
    pub git_ref: String,
    /// Path of the profile list inside the repository; `{cluster}` is replaced by the
    /// cluster name (e.g. `clusters/{cluster}/profiles.yaml`).
    #[arg(long, env = "STRATA_PROFILES_PATH", default_value = "profiles.yaml")]
    pub profiles_path: String,
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
    /// Directory for the Git cache, chart cache and helm homes (default: a new temp dir).
    #[arg(long, env = "STRATA_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Apply once and exit: 0 when every layer is Ready, 1 otherwise.
    #[arg(long, env = "STRATA_ONCE")]
    pub once: bool,
    /// How often to fetch the repository (Go-style duration: 30s, 1m, 1h30m).
    #[arg(long, env = "STRATA_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub interval: Duration,
    /// Releases installed in parallel inside one layer.
    #[arg(long, env = "STRATA_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// The helm binary (helm 3 or helm 4; the version is detected).
    #[arg(long, env = "STRATA_HELM", default_value = "helm")]
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
    #[arg(long, env = "STRATA_LEASE_NAME", default_value = "strata")]
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
        .unwrap_or_else(|| "strata-system".to_string())
}

/// Parse a Go-style duration: a sequence of `<number><unit>` with units `ms`, `s`, `m`, `h`
/// (`90s`, `5m`, `1h30m`, `1.5h`, `500ms`). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("empty duration; use e.g. 30s, 5m, 1h30m".into());
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit (ms, s, m, h)"))?;
        if num_len == 0 {
            return Err(format!(
                "invalid duration {text:?}; use e.g. 30s, 5m, 1h30m"
            ));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "unknown unit {u:?} in duration {text:?}; use ms, s, m or h"
                ));
            }
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("duration {text:?}: {e}"))
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
        assert_eq!(run.concurrency, 2);
        assert_eq!(run.interval, Duration::from_secs(30));
        assert_eq!(run.default_timeout, Duration::from_secs(300));
        assert_eq!(run.source.profiles_path, "profiles.yaml");
        assert_eq!(run.source.git_ref, "main");
        assert_eq!(run.listen.to_string(), "0.0.0.0:8080");
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
    fn namespace_flag_wins() {
        assert_eq!(agent_namespace(Some("ops".into())), "ops");
    }
}
