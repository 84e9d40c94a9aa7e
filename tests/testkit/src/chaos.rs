//! Helpers of the chaos and fault tests: seeds, random pauses, recovery figures from
//! `/metrics`, and a helm wrapper that journals who ran which helm command when.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use kubesim::util::Rng;

/// A pause drawn uniformly from `lo..hi` ms.
pub fn millis(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.next_u64() % (hi - lo).max(1))
}

/// A count from the environment variable `var`, else `default` (benchmark parameters).
pub fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The seed from `var` if set (decimal), else one from the clock; printed by the caller.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var}={s:?} is not a u64: {e}")),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The samples of every metric whose name mentions `recover` (`name{labels}` -> value), but
/// those at 0 (the agent exposes every kind and outcome at 0 from the start).
pub fn recovery_samples(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("recover"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// A helm wrapper script: runs `real` with the same arguments and appends
/// `start <who> <ns-since-epoch> <pid> <args...>` before and `end <who> <ns> <pid> <exit>`
/// after to `journal` (`who` is written into the script: strata gives helm a filtered
/// environment).
pub fn helm_wrapper(dir: &Path, who: &str, real: &Path, journal: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(format!("helm-wrapper-{who}.sh"));
    let script = format!(
        "#!/bin/sh\n\
         echo \"start {who} $(date +%s%N) $$ $*\" >> '{journal}'\n\
         '{real}' \"$@\"\n\
         rc=$?\n\
         echo \"end {who} $(date +%s%N) $$ $rc\" >> '{journal}'\n\
         exit $rc\n",
        journal = journal.display(),
        real = real.display()
    );
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// One helm process from the wrapper's journal.
#[derive(Debug, Clone)]
pub struct HelmRun {
    pub who: String,
    pub pid: u64,
    pub start_ns: u128,
    /// None: the process never finished (killed with its agent).
    pub end_ns: Option<u128>,
    pub args: Vec<String>,
}

impl HelmRun {
    /// A write command (install/upgrade/uninstall/rollback) and the namespace it targets.
    pub fn write_target(&self) -> Option<String> {
        let cmd = self.args.first()?;
        if !matches!(
            cmd.as_str(),
            "upgrade" | "install" | "uninstall" | "rollback"
        ) {
            return None;
        }
        let i = self.args.iter().position(|a| a == "--namespace")?;
        self.args.get(i + 1).cloned()
    }
}

/// Parse the wrapper's journal.
pub fn read_journal(journal: &Path) -> Vec<HelmRun> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut runs: Vec<HelmRun> = Vec::new();
    for line in text.lines() {
        let mut w = line.split(' ');
        let (Some(kind), Some(who), Some(t), Some(pid)) = (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let (Ok(t), Ok(pid)) = (t.parse::<u128>(), pid.parse::<u64>()) else {
            continue;
        };
        match kind {
            "start" => runs.push(HelmRun {
                who: who.to_string(),
                pid,
                start_ns: t,
                end_ns: None,
                args: w.map(String::from).collect(),
            }),
            "end" => {
                if let Some(r) = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.pid == pid && r.who == who && r.end_ns.is_none())
                {
                    r.end_ns = Some(t);
                }
            }
            _ => {}
        }
    }
    runs
}

/// Nanoseconds since the epoch now.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// min / median / max of durations (zeros when empty).
pub fn min_median_max(v: &[Duration]) -> (Duration, Duration, Duration) {
    if v.is_empty() {
        return Default::default();
    }
    let mut s = v.to_vec();
    s.sort();
    (s[0], s[s.len() / 2], s[s.len() - 1])
}
