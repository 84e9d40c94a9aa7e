//! Children started at a lower CPU priority (a higher nice value).
//!
//! On Linux the nice value belongs to a thread and a child inherits it from the thread that
//! forks it; an unprivileged process may raise it but never lower it again. So a child at nice
//! `n` is spawned from a thread of its own that set itself to `n` once and does nothing else
//! (one thread per level, started when first needed, idle in between). No `pre_exec` hook is
//! needed, and the agent's own threads keep their priority.
//!
//! When the thread cannot change its priority (a seccomp profile forbids `setpriority`), the
//! child is spawned anyway, at the agent's priority, and that is logged once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, mpsc};

/// The highest nice value Linux knows.
pub const MAX_NICE: u8 = 19;

type Reply = tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>;

struct Job {
    cmd: tokio::process::Command,
    runtime: tokio::runtime::Handle,
    reply: Reply,
}

/// The spawner thread of each nice level.
fn spawners() -> &'static Mutex<HashMap<u8, mpsc::Sender<Job>>> {
    static SPAWNERS: OnceLock<Mutex<HashMap<u8, mpsc::Sender<Job>>>> = OnceLock::new();
    SPAWNERS.get_or_init(Default::default)
}

fn spawner(nice: u8) -> std::io::Result<mpsc::Sender<Job>> {
    let mut map = spawners().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = map.get(&nice) {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("spawn-nice-{nice}"))
        .stack_size(256 * 1024)
        .spawn(move || {
            set_own_nice(nice);
            for mut job in rx {
                let _entered = job.runtime.enter();
                let _ = job.reply.send(job.cmd.spawn());
            }
        })?;
    map.insert(nice, tx.clone());
    Ok(tx)
}

/// Raises the calling thread's nice value by `nice` (Linux: `setpriority(PRIO_PROCESS, 0)`
/// acts on the calling thread); a failure is logged once per process.
fn set_own_nice(nice: u8) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::getpriority_process(None).and_then(|own| {
        let lowered = (own + i32::from(nice)).min(i32::from(MAX_NICE));
        rustix::process::setpriority_process(None, lowered)
    }) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                error = %e,
                nice,
                "cannot lower the CPU priority of helm processes; they run at the agent's priority"
            );
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Spawns `cmd` with its nice value raised by `nice` over the agent's (0: right here, at the
/// caller's priority; the result is at most [`MAX_NICE`]).
pub async fn spawn(
    mut cmd: tokio::process::Command,
    nice: u8,
) -> std::io::Result<tokio::process::Child> {
    let nice = nice.min(MAX_NICE);
    if nice == 0 {
        return cmd.spawn();
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner(nice)?
        .send(job)
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The nice value of a process (its main thread).
    fn nice_of(pid: u32) -> i32 {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::getpriority_process(Some(pid)).unwrap()
    }

    fn sleeper() -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("5").kill_on_drop(true);
        cmd
    }

    #[tokio::test]
    async fn children_get_the_asked_nice_and_the_agent_keeps_its_own() {
        let own = nice_of(std::process::id());
        let plain = spawn(sleeper(), 0).await.unwrap();
        let low = spawn(sleeper(), 7).await.unwrap();
        let again = spawn(sleeper(), 7).await.unwrap();
        let lowest = spawn(sleeper(), 40).await.unwrap();
        assert_eq!(nice_of(plain.id().unwrap()), own);
        assert_eq!(nice_of(low.id().unwrap()), (own + 7).min(19));
        assert_eq!(nice_of(again.id().unwrap()), (own + 7).min(19));
        assert_eq!(nice_of(lowest.id().unwrap()), 19);
        // Spawning at a lower priority left this thread (and process) where it was.
        assert_eq!(nice_of(std::process::id()), own);
        let mut child = spawn(
            {
                let mut c = tokio::process::Command::new("true");
                c.kill_on_drop(true);
                c
            },
            3,
        )
        .await
        .unwrap();
        // The child is reaped by this runtime like any other.
        assert!(child.wait().await.unwrap().success());
    }
}
