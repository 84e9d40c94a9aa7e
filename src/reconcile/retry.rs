//! Retries in the agent: the per-release retry book, and in-place retries of one transient
//! operation.
//!
//! - **Per-release accounting**: the policy, backoff, Stalled and resets are decided in
//!   strata-core ([`strata_core::retry`], re-exported here); the agent keeps one
//!   [`RetryState`] per release in the [`RetryBook`], which the status API and the retry
//!   annotation reset.
//! - In-place retries of one transient API call live with the Kubernetes client
//!   ([`crate::kube_api::retry_kube`]).
//!
pub use strata_core::retry::{
    Due, ErrorClass, Failure, HelmFailureKind, Jitter, Next, RandomSource, ResetReason,
    RetryPolicy, RetryState, SeededRng, classify_helm_kind, classify_helm_message,
    classify_http_status,
};

/// A [`SeededRng`] seeded from the clock, the process id and a per-process counter (two
/// generators made in the same nanosecond still differ).
pub fn entropy_rng() -> SeededRng {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rng = SeededRng::new(
        nanos ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0x9E37_79B9),
    );
    // Mix once so close seeds give unrelated streams.
    let first = rng.next_u64();
    SeededRng::new(first)
}

type RetryMap = std::collections::HashMap<(String, String), RetryState>;

/// Per-release retry accounting, (namespace, release) -> [`RetryState`] (which tracks the
/// desired release it is about). Shared with the status API and the retry annotation so an
/// operator can ask for a retry. Every decision on it is strata-core's.
#[derive(Default)]
pub struct RetryBook {
    inner: std::sync::Mutex<RetryMap>,
}

impl RetryBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, RetryMap> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(namespace: &str, release: &str) -> (String, String) {
        (namespace.to_string(), release.to_string())
    }

    /// The start of an attempt: the release's accounting for the desired release with
    /// `fingerprint` (a changed release starts afresh, [`RetryState::track`]), as a snapshot.
    pub fn begin(&self, namespace: &str, release: &str, fingerprint: &str) -> RetryState {
        let mut map = self.lock();
        let state = map.entry(Self::key(namespace, release)).or_default();
        if state.track(fingerprint) {
            tracing::info!(
                release,
                namespace,
                "retry accounting reset: {}",
                ResetReason::NewRevision
            );
        }
        state.clone()
    }

    /// An attempt succeeded: the accounting is cleared.
    pub fn succeeded(&self, namespace: &str, release: &str) {
        self.lock()
            .entry(Self::key(namespace, release))
            .or_default()
            .on_success();
    }

    /// An attempt failed at `now`: what follows (backoff or Stalled), by `policy`.
    pub fn failed(
        &self,
        namespace: &str,
        release: &str,
        now: jiff::Timestamp,
        failure: Failure,
        policy: &RetryPolicy,
        rng: &mut dyn RandomSource,
    ) -> Next {
        self.lock()
            .entry(Self::key(namespace, release))
            .or_default()
            .on_failure(now, failure, policy, rng)
    }

    /// An operator asks for a retry of `namespace/release`: backoff and Stalled are cleared.
    /// Returns whether the release has retry accounting (it ran at least once in this agent).
    pub fn request_retry(&self, namespace: &str, release: &str) -> bool {
        self.reset(namespace, release, ResetReason::Operator)
    }

    /// Clears backoff and Stalled of `namespace/release` for `reason`; false when the agent has
    /// no retry record of it.
    pub fn reset(&self, namespace: &str, release: &str, reason: ResetReason) -> bool {
        let mut map = self.lock();
        match map.get_mut(&Self::key(namespace, release)) {
            Some(state) => {
                state.reset(reason);
                tracing::info!(release, namespace, %reason, "retry state reset");
                true
            }
            None => false,
        }
    }

    /// The retry state of `namespace/release`, if the agent has one.
    pub fn state_of(&self, namespace: &str, release: &str) -> Option<RetryState> {
        self.lock().get(&Self::key(namespace, release)).cloned()
    }

    /// Puts a state in the book (tests).
    pub fn insert(&self, namespace: &str, release: &str, state: RetryState) {
        self.lock().insert(Self::key(namespace, release), state);
    }
}

impl crate::observe::server::RetryRequests for RetryBook {
    fn request_retry(&self, namespace: &str, release: &str) -> bool {
        RetryBook::request_retry(self, namespace, release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_rngs_differ() {
        assert_ne!(entropy_rng().next_u64(), entropy_rng().next_u64());
    }
}
