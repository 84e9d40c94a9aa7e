//! Observes what the pod can afford for the default concurrency (strata-core's
//! [`capacity::fit`] decides): the cgroup memory limit, the agent's own RSS, the largest
//! helm child's peak RSS so far and the CPUs this process may use.

use std::path::Path;

use strata_core::capacity::{self, Capacity, Concurrency};

/// Limits at or above this are "no limit" (cgroup v1 writes a page-rounded `i64::MAX`).
const UNLIMITED: u64 = 1 << 60;

/// The concurrency for the next revision: the operator's `--concurrency`, or fitted to the pod.
pub fn concurrency(fixed: Option<usize>) -> Concurrency {
    match fixed {
        Some(n) => Concurrency::fixed(n),
        None => capacity::fit(&observe(Path::new("/"))),
    }
}

/// The pod's capacity as seen from `root` (`/`, or a fake tree in tests).
pub fn observe(root: &Path) -> Capacity {
    Capacity {
        memory_limit: memory_limit(root),
        agent_rss: agent_rss(root).unwrap_or(0),
        helm_peak_rss: children_peak_rss(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// The cgroup memory limit: cgroup v2's `memory.max` (`max`: none), else cgroup v1's
/// `memory.limit_in_bytes`.
fn memory_limit(root: &Path) -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let text = read("sys/fs/cgroup/memory.max")
        .or_else(|| read("sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    text.trim().parse::<u64>().ok().filter(|&b| b < UNLIMITED)
}

/// The agent's resident memory (`VmRSS` of /proc/self/status).
fn agent_rss(root: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(root.join("proc/self/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// The largest peak RSS of the child processes waited for so far (helm; git too, which is
/// smaller): `getrusage(RUSAGE_CHILDREN)`; `None` before any child ended.
fn children_peak_rss() -> Option<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let kib = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?.max_rss();
    u64::try_from(kib).ok().filter(|&k| k > 0).map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_cgroup_v2_v1_and_no_limit() {
        let v2 = tree(&[
            ("sys/fs/cgroup/memory.max", "536870912\n"),
            ("proc/self/status", "Name:\tstrata\nVmRSS:\t   12288 kB\n"),
        ]);
        let c = observe(v2.path());
        assert_eq!(c.memory_limit, Some(512 << 20));
        assert_eq!(c.agent_rss, 12 << 20);
        assert!(c.cpus >= 1);
        let v1 = tree(&[("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n")]);
        assert_eq!(observe(v1.path()).memory_limit, Some(256 << 20));
        let none = tree(&[("sys/fs/cgroup/memory.max", "max\n")]);
        assert_eq!(observe(none.path()).memory_limit, None);
        let v1_none = tree(&[(
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        assert_eq!(observe(v1_none.path()).memory_limit, None);
        assert_eq!(observe(tree(&[]).path()).memory_limit, None);
    }

    #[test]
    fn the_helm_peak_is_measured_from_finished_children() {
        std::process::Command::new("true").status().unwrap();
        assert!(children_peak_rss().is_some_and(|b| b > 0));
    }
}
