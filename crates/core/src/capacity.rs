//! How many releases of a layer may run at once when `--concurrency` is not set: as many helm
//! processes as the pod can afford.
//!
//! Memory decides first: each helm process peaks at tens of MiB (more with big rendered
//! manifests), and a pod that goes over its memory limit is OOM-killed in the middle of a
//! helm run, which leaves releases pending. So the default is the memory the pod has left
//! under its limit (the cgroup's) divided by the helm peak RSS with headroom. helm spends
//! most of a run waiting on the API server, so CPUs allow several processes per core. The
//! result is capped (more parallel helm processes than that mostly queue at the API server)
//! and never below one.

use serde::Serialize;

/// The largest default: more parallel helm processes mostly queue at the API server.
pub const MAX: usize = 10;
/// helm processes per CPU: helm mostly waits on the API server.
pub const PER_CPU: usize = 4;
/// Headroom over the measured helm peak, in percent: helm's memory grows with the rendered
/// manifest, so a bigger chart than the ones measured so far must still fit.
pub const HEADROOM_PERCENT: u64 = 150;
/// helm's peak RSS before any helm process was measured (helm 4.1 and 3.19 installing a
/// small chart: 58-65 MiB; see deploy/measure-resources.py).
pub const HELM_PEAK_ESTIMATE: u64 = 64 << 20;

/// What the pod has, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The cgroup memory limit in bytes; `None` when there is none.
    pub memory_limit: Option<u64>,
    /// The agent's own resident memory now, in bytes.
    pub agent_rss: u64,
    /// The largest helm child's peak RSS measured so far, in bytes (`None`: none ran yet).
    pub helm_peak_rss: Option<u64>,
    /// CPUs this process may use (the cgroup's CPU quota counts).
    pub cpus: usize,
}

/// The chosen concurrency and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Concurrency {
    pub value: usize,
    /// How it was chosen, for the log and `/status`.
    pub reason: String,
}

impl Concurrency {
    /// Set by the operator (`--concurrency`).
    pub fn fixed(value: usize) -> Self {
        Concurrency {
            value: value.max(1),
            reason: "set by --concurrency".into(),
        }
    }
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// The default concurrency for `capacity` (see the module documentation).
pub fn fit(capacity: &Capacity) -> Concurrency {
    let (peak, measured) = match capacity.helm_peak_rss {
        Some(p) if p > 0 => (p.max(HELM_PEAK_ESTIMATE / 2), "measured"),
        _ => (HELM_PEAK_ESTIMATE, "estimated"),
    };
    let per_helm = peak.saturating_mul(HEADROOM_PERCENT) / 100;
    let by_cpu = capacity.cpus.max(1).saturating_mul(PER_CPU);
    let (by_memory, memory_note) = match capacity.memory_limit {
        Some(limit) => {
            let left = limit.saturating_sub(capacity.agent_rss);
            let n = usize::try_from(left / per_helm.max(1)).unwrap_or(usize::MAX);
            (
                Some(n),
                format!(
                    "memory limit {} MiB - agent {} MiB = {} MiB for helm at {} MiB each ({} peak {} MiB + {}% headroom): {n}",
                    mib(limit),
                    mib(capacity.agent_rss),
                    mib(left),
                    mib(per_helm),
                    measured,
                    mib(peak),
                    HEADROOM_PERCENT - 100,
                ),
            )
        }
        None => (None, "no memory limit".to_string()),
    };
    let cpu_note = format!("{} CPU x {PER_CPU}: {by_cpu}", capacity.cpus.max(1));
    let raw = by_memory.map_or(by_cpu, |m| m.min(by_cpu));
    let value = raw.clamp(1, MAX);
    let mut reason = format!("derived: {memory_note}; {cpu_note}");
    if raw > MAX {
        reason.push_str(&format!("; capped at {MAX}"));
    } else if raw == 0 {
        reason.push_str("; at least 1 (the memory limit is too low for one helm process with headroom; raise it)");
    }
    Concurrency { value, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn cap(limit_mib: Option<u64>, helm_mib: Option<u64>, cpus: usize) -> Capacity {
        Capacity {
            memory_limit: limit_mib.map(|m| m * MIB),
            agent_rss: 12 * MIB,
            helm_peak_rss: helm_mib.map(|m| m * MIB),
            cpus,
        }
    }

    #[test]
    fn the_memory_limit_decides_with_headroom_over_the_helm_peak() {
        // The shipped Deployment: 512 MiB, helm measured at 60 MiB -> 90 MiB each -> 5.
        let c = fit(&cap(Some(512), Some(60), 2));
        assert_eq!(c.value, 5, "{}", c.reason);
        assert!(c.reason.contains("memory limit 512 MiB"), "{}", c.reason);
        assert!(c.reason.contains("measured peak 60 MiB"), "{}", c.reason);
        // Before any helm ran: the estimate (64 MiB -> 96 MiB each).
        let c = fit(&cap(Some(512), None, 2));
        assert_eq!(c.value, 5, "{}", c.reason);
        assert!(c.reason.contains("estimated peak 64 MiB"), "{}", c.reason);
        // A big chart measured at 200 MiB: 300 MiB each -> 1.
        assert_eq!(fit(&cap(Some(512), Some(200), 2)).value, 1);
    }

    #[test]
    fn cpus_bound_it_without_a_memory_limit_and_it_is_capped() {
        let c = fit(&cap(None, Some(60), 2));
        assert_eq!(c.value, 8, "{}", c.reason);
        assert!(c.reason.contains("no memory limit"), "{}", c.reason);
        let c = fit(&cap(None, Some(60), 16));
        assert_eq!(c.value, MAX);
        assert!(c.reason.contains("capped at 10"), "{}", c.reason);
        // A generous limit on one CPU: the CPU bound.
        assert_eq!(fit(&cap(Some(8192), Some(60), 1)).value, 4);
    }

    #[test]
    fn never_below_one_and_says_why() {
        let c = fit(&cap(Some(64), Some(60), 2));
        assert_eq!(c.value, 1);
        assert!(c.reason.contains("raise it"), "{}", c.reason);
        // An implausibly small measurement does not inflate the result.
        // (a floor of half the estimate: 32 MiB -> 48 MiB each -> 10, then the CPU bound 8).
        assert_eq!(fit(&cap(Some(512), Some(1), 2)).value, 8);
    }

    #[test]
    fn fixed_is_the_operators_choice() {
        assert_eq!(
            Concurrency::fixed(3),
            Concurrency {
                value: 3,
                reason: "set by --concurrency".into()
            }
        );
    }
}
