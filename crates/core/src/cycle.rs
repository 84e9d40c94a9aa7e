//! When the agent's cycle loop starts its next cycle, and when `strata run --once` stops.
//!
//! A *cycle* fetches the Git source and applies the revision, or (a *retry* cycle) applies the
//! revision already loaded again. The loop polls Git every `--interval`; a release that failed
//! is retried on its own backoff schedule ([`RetryState::next_attempt_at`]), so a retry cycle
//! starts as soon as the earliest backoff ends, when that comes before the next poll
//! ([`next_cycle`]). Stalled releases wait for a change or an operator: they never start a
//! cycle early.
//!
//! With `--once` the loop keeps cycling until the revision is done, one way or the other
//! ([`once_step`]): every layer Ready (exit 0); a real failure, i.e. a release Stalled or the
//! revision invalid (exit 1); or the deadline passes (exit 2). A failure that may pass (a fetch,
//! an unavailable chart repository, an API outage, a release in backoff) is retried.

use std::time::Duration;

use jiff::Timestamp;

use crate::retry::RetryState;

/// The next cycle of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextCycle {
    /// When it starts.
    pub at: Timestamp,
    /// `Retry`: apply the loaded revision again (a release's backoff ended before the next
    /// poll); `Poll`: fetch the source first.
    pub kind: CycleKind,
}

/// What a cycle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleKind {
    /// Fetch the Git source, load the revision and apply it.
    Poll,
    /// Apply the revision already loaded again (no fetch).
    Retry,
}

/// When the next cycle starts, after a cycle that ended at `now` with the next poll due at
/// `poll_at`: at the earliest end of a backoff among `releases` (the retry states of the
/// releases of the loaded revision) when it comes before `poll_at`, else at `poll_at`.
///
/// Only backoffs that end after `now` count: a release whose attempt was due but did not run
/// in this cycle (a layer below it failed) waits for the release below, whose own backoff is
/// among `releases`. Stalled releases never count (they wait for a change or an operator).
pub fn next_cycle<'a>(
    now: Timestamp,
    poll_at: Timestamp,
    releases: impl IntoIterator<Item = &'a RetryState>,
) -> NextCycle {
    let retry_at = releases
        .into_iter()
        .filter(|r| !r.stalled)
        .filter_map(|r| r.next_attempt_at)
        .filter(|at| *at > now)
        .min();
    match retry_at {
        Some(at) if at < poll_at => NextCycle {
            at,
            kind: CycleKind::Retry,
        },
        _ => NextCycle {
            at: poll_at,
            kind: CycleKind::Poll,
        },
    }
}

/// How a cycle ended, as the loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CycleEnd {
    /// Every release of every layer is Ready.
    AllReady,
    /// The revision is invalid (rejected): it fails the same way until a new commit.
    Invalid,
    /// A release is Stalled (a permanent error, or `remediation.retries` failed attempts).
    Stalled {
        /// `namespace/name` of the Stalled releases.
        releases: Vec<String>,
    },
    /// Something failed that may pass: the fetch, the chart repository, the Kubernetes API, a
    /// release that is backing off; or the cycle was interrupted.
    Retryable,
}

/// Why `--once` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceExit {
    /// Every layer is Ready (exit 0).
    AllReady,
    /// A real failure: the revision is invalid or a release is Stalled (exit 1).
    GaveUp(String),
    /// The deadline passed, or would pass before the next attempt starts (exit 2).
    DeadlinePassed(String),
}

/// What `--once` does after a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceStep {
    Exit(OnceExit),
    /// Wait for the next cycle.
    Continue(NextCycle),
}

/// What `--once` does after a cycle that ended with `end` at `now`, when the next cycle would
/// be `next` ([`next_cycle`]) and the run must end by `deadline`: stop with its exit, or wait
/// for the next cycle. A next cycle that would start after the deadline is not waited for.
pub fn once_step(end: &CycleEnd, now: Timestamp, next: NextCycle, deadline: Timestamp) -> OnceStep {
    match end {
        CycleEnd::AllReady => OnceStep::Exit(OnceExit::AllReady),
        CycleEnd::Invalid => OnceStep::Exit(OnceExit::GaveUp(
            "the revision is invalid (see rejectedRevision in the status)".into(),
        )),
        CycleEnd::Stalled { releases } => OnceStep::Exit(OnceExit::GaveUp(format!(
            "release(s) {} Stalled: not retried until the release changes or a retry is requested",
            releases.join(", ")
        ))),
        CycleEnd::Retryable if now >= deadline => OnceStep::Exit(OnceExit::DeadlinePassed(
            format!("the deadline ({deadline}) passed before every layer was Ready"),
        )),
        CycleEnd::Retryable if next.at > deadline => {
            OnceStep::Exit(OnceExit::DeadlinePassed(format!(
                "the next attempt (at {}) would start after the deadline ({deadline})",
                next.at
            )))
        }
        CycleEnd::Retryable => OnceStep::Continue(next),
    }
}

/// How long `--once` may run: `once_timeout` when given, else the longest helm timeout among
/// the releases of the revision (`release_timeouts`), else (no revision loaded yet, or one
/// without releases) `default_timeout`.
pub fn once_budget(
    once_timeout: Option<Duration>,
    release_timeouts: impl IntoIterator<Item = Duration>,
    default_timeout: Duration,
) -> Duration {
    once_timeout.unwrap_or_else(|| {
        release_timeouts
            .into_iter()
            .max()
            .unwrap_or(default_timeout)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn backing_off(until: i64) -> RetryState {
        RetryState {
            attempts: 1,
            next_attempt_at: Some(t(until)),
            ..RetryState::default()
        }
    }

    fn stalled() -> RetryState {
        RetryState {
            attempts: 5,
            stalled: true,
            // A Stalled state has no next attempt; even a stale one must not count.
            next_attempt_at: Some(t(5)),
            ..RetryState::default()
        }
    }

    #[test]
    fn without_failures_the_next_cycle_is_the_poll() {
        let ready = RetryState::default();
        assert_eq!(
            next_cycle(t(0), t(600), [&ready]),
            NextCycle {
                at: t(600),
                kind: CycleKind::Poll
            }
        );
        assert_eq!(next_cycle(t(0), t(600), []).kind, CycleKind::Poll);
    }

    #[test]
    fn a_backoff_ending_before_the_poll_starts_a_retry_cycle_at_the_earliest() {
        let (a, b) = (backing_off(30), backing_off(12));
        assert_eq!(
            next_cycle(t(0), t(600), [&a, &b, &RetryState::default()]),
            NextCycle {
                at: t(12),
                kind: CycleKind::Retry
            }
        );
    }

    #[test]
    fn a_backoff_ending_after_the_poll_leaves_the_poll() {
        let a = backing_off(900);
        assert_eq!(
            next_cycle(t(0), t(600), [&a]),
            NextCycle {
                at: t(600),
                kind: CycleKind::Poll
            }
        );
        // At the same time: the poll (it fetches, and applies the release too).
        let a = backing_off(600);
        assert_eq!(next_cycle(t(0), t(600), [&a]).kind, CycleKind::Poll);
    }

    #[test]
    fn stalled_releases_and_past_backoffs_never_start_a_cycle_early() {
        let s = stalled();
        assert_eq!(next_cycle(t(0), t(600), [&s]).kind, CycleKind::Poll);
        // Due already but not run (skipped behind a failed layer): no busy loop.
        let due = backing_off(-1);
        let now = backing_off(0);
        assert_eq!(next_cycle(t(0), t(600), [&due, &now]).kind, CycleKind::Poll);
        let later = backing_off(20);
        assert_eq!(
            next_cycle(t(0), t(600), [&s, &due, &later]),
            NextCycle {
                at: t(20),
                kind: CycleKind::Retry
            }
        );
    }

    fn poll(at: i64) -> NextCycle {
        NextCycle {
            at: t(at),
            kind: CycleKind::Poll,
        }
    }

    #[test]
    fn once_stops_when_ready_or_on_a_real_failure() {
        assert_eq!(
            once_step(&CycleEnd::AllReady, t(0), poll(60), t(300)),
            OnceStep::Exit(OnceExit::AllReady)
        );
        assert!(matches!(
            once_step(&CycleEnd::Invalid, t(0), poll(60), t(300)),
            OnceStep::Exit(OnceExit::GaveUp(m)) if m.contains("invalid")
        ));
        let stalled = CycleEnd::Stalled {
            releases: vec!["mesh/mesh".into()],
        };
        assert!(matches!(
            once_step(&stalled, t(0), poll(60), t(300)),
            OnceStep::Exit(OnceExit::GaveUp(m)) if m.contains("mesh/mesh") && m.contains("Stalled")
        ));
        // Ready or given up at the deadline: still that, not a timeout.
        assert_eq!(
            once_step(&CycleEnd::AllReady, t(400), poll(460), t(300)),
            OnceStep::Exit(OnceExit::AllReady)
        );
    }

    #[test]
    fn once_retries_what_may_pass_until_the_deadline() {
        let retry = NextCycle {
            at: t(15),
            kind: CycleKind::Retry,
        };
        assert_eq!(
            once_step(&CycleEnd::Retryable, t(0), retry, t(300)),
            OnceStep::Continue(retry)
        );
        assert_eq!(
            once_step(&CycleEnd::Retryable, t(0), poll(300), t(300)),
            OnceStep::Continue(poll(300))
        );
        assert!(matches!(
            once_step(&CycleEnd::Retryable, t(0), poll(301), t(300)),
            OnceStep::Exit(OnceExit::DeadlinePassed(m)) if m.contains("would start after")
        ));
        assert!(matches!(
            once_step(&CycleEnd::Retryable, t(300), poll(301), t(300)),
            OnceStep::Exit(OnceExit::DeadlinePassed(m)) if m.contains("passed")
        ));
    }

    #[test]
    fn the_once_budget_is_the_flag_else_the_longest_release_timeout() {
        let s = Duration::from_secs;
        assert_eq!(once_budget(Some(s(3)), [s(60), s(20)], s(300)), s(3));
        assert_eq!(once_budget(None, [s(60), s(20)], s(300)), s(60));
        assert_eq!(once_budget(None, [], s(300)), s(300));
    }
}
