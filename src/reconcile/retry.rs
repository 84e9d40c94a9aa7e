//! Bounded, honest retries (issue 5).
//!
//! Two tools, for two kinds of retry:
//!
//! - **Per-release accounting** ([`RetryPolicy`], [`RetryState`]): pure, no I/O, no clock of
//!   its own. A release that fails is tried again after an exponentially growing, jittered
//!   delay; after [`RetryPolicy::max_attempts`] consecutive failures (or at once, for a
//!   [`ErrorClass::Permanent`] error) it is *Stalled*: terminal until something changes —
//!   a new revision that changes the release, an operator request, or an annotation
//!   ([`RetryState::reset`]). The agent keeps one `RetryState` per release, calls
//!   [`RetryState::on_failure`] / [`RetryState::on_success`] after each attempt, and asks
//!   [`RetryState::due`] before starting one.
//! - **In-place retries of one transient operation** ([`retry_transient`], [`retry_kube`]),
//!   built on `backon`'s exponential backoff with jitter: an API call that hits a 429, a 5xx
//!   or a dropped connection is repeated a few times within the same attempt, honouring a
//!   `Retry-After` the server sends.
//!
//!   Note: a kube-rs 5 `Client` built from a `kube::Config` with `default_retry = true` (the
//!   default) already repeats 429, 503 and 504 answers itself, up to 15 times with exponential
//!   backoff from 5 ms (uncapped in practice) honouring `Retry-After`: a call against an API
//!   that keeps answering 503 can take minutes before it returns. [`retry_kube`] adds bounded
//!   retries for what that layer leaves out (500, dropped connections, read errors); put a
//!   time limit around calls that must not hang (the leader elector does), or build the
//!   client with `default_retry = false` so only [`retry_kube`] retries.
//!
//! Errors are sorted into [`ErrorClass`]es: [`classify_http_status`], [`classify_kube`],
//! [`classify_helm_message`] and [`FailureKind::class`] (for errors the agent maps from its own
//! typed errors).
//!
//! Messages stored in a [`RetryState`] end up in the status: callers pass texts that are
//! already free of secrets (the process runner redacts helm's output).

use std::time::Duration;

use jiff::Timestamp;

/// A retry policy that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A field of the policy is out of range.
    #[error("invalid retry policy: {field} {problem}; fix the retry settings")]
    InvalidPolicy {
        /// The field (`baseDelay`, `maxDelay`, `maxAttempts`, `multiplier`).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Error classes
// ---------------------------------------------------------------------------------------------

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The same attempt may succeed later: API errors, timeouts, throttling, 5xx, Git or chart
    /// fetch failures, a helm wait or hook that failed. Retried with backoff, counted towards
    /// Stalled.
    Transient,
    /// Nothing changes until the input changes: an invalid chart or values. Stalled at once.
    Permanent,
}

impl ErrorClass {
    /// `"Transient"` / `"Permanent"` (for status and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "Transient",
            ErrorClass::Permanent => "Permanent",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What failed, in the agent's terms; the agent maps its typed errors to one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// A Kubernetes API request answered with this HTTP code.
    ApiStatus(u16),
    /// A Kubernetes API request failed without an answer (connection refused or cut, TLS).
    ApiUnreachable,
    /// An operation ran past its timeout.
    Timeout,
    /// Fetching the Git repository failed.
    GitFetch,
    /// Downloading a chart or a repository index failed.
    ChartFetch,
    /// The chart is invalid (bad Chart.yaml, templates that do not render).
    ChartInvalid,
    /// The values are invalid (schema, YAML).
    ValuesInvalid,
    /// helm failed with this (redacted) message.
    Helm(String),
}

impl FailureKind {
    /// The class of this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            FailureKind::ApiStatus(code) => classify_http_status(*code),
            FailureKind::ApiUnreachable
            | FailureKind::Timeout
            | FailureKind::GitFetch
            | FailureKind::ChartFetch => ErrorClass::Transient,
            FailureKind::ChartInvalid | FailureKind::ValuesInvalid => ErrorClass::Permanent,
            FailureKind::Helm(message) => classify_helm_message(message),
        }
    }
}

/// Class of a Kubernetes API answer: 400 (bad request), 404 on a kind that is not served is
/// not permanent (a CRD may come), so only 400, 413 (too large), 415 and 422 (invalid) are
/// permanent; everything else (401/403 until RBAC is fixed, 404, 408, 409, 429, 5xx) is
/// transient.
pub fn classify_http_status(code: u16) -> ErrorClass {
    match code {
        400 | 413 | 415 | 422 => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// Class of a kube-rs error: API answers by [`classify_http_status`]; transport, TLS and
/// decoding problems are transient (the API server restarting looks like this).
pub fn classify_kube(err: &kube::Error) -> ErrorClass {
    match err {
        kube::Error::Api(status) => classify_http_status(status.code),
        kube::Error::BuildRequest(_) | kube::Error::InferConfig(_) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// The `Retry-After` a Kubernetes API error carried (429, 503), if any.
pub fn kube_retry_after(err: &kube::Error) -> Option<Duration> {
    match err {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s))),
        _ => None,
    }
}

/// Phrases in helm's messages that mean the chart or values themselves are wrong: trying the
/// same input again gives the same error.
const PERMANENT_HELM_PHRASES: &[&str] = &[
    "values don't meet the specifications of the schema",
    "yaml: line",
    "yaml: unmarshal errors",
    "error converting yaml to json",
    "parse error",
    "template: ",
    "chart requires kubeversion",
    "validation: chart.metadata",
    "chart.metadata.name is required",
    "apiversion is required",
    "is not a valid chart",
    "chart type is not installable",
    "found in chart.yaml, but missing in charts/ directory",
    "unknown field",
    "invalid value",
    "is invalid:",
];

/// Class of a helm failure from its message: template, YAML, schema and chart metadata errors
/// are permanent; everything else (wait timeouts, failed hooks, "another operation is in
/// progress", "no matches for kind", API errors) is transient.
pub fn classify_helm_message(message: &str) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    if lower.contains("another operation (install/upgrade/rollback) is in progress")
        || lower.contains("context deadline exceeded")
        || lower.contains("timed out")
        || lower.contains("no matches for kind")
    {
        return ErrorClass::Transient;
    }
    if PERMANENT_HELM_PHRASES.iter().any(|p| lower.contains(p)) {
        ErrorClass::Permanent
    } else {
        ErrorClass::Transient
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// A source of uniform random numbers in `[0, 1)`; tests inject a seeded or fixed one.
pub trait RandomSource {
    /// The next number, in `[0, 1)`.
    fn next_f64(&mut self) -> f64;
}

/// A small seeded generator (SplitMix64): reproducible with a seed, not for cryptography.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator that yields the same numbers for the same seed.
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// A generator seeded from the clock, the process id and a per-process counter (two
    /// generators made in the same nanosecond still differ).
    pub fn from_entropy() -> Self {
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

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl RandomSource for SeededRng {
    fn next_f64(&mut self) -> f64 {
        // 53 random bits -> [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential delay (`base * multiplier^(n-1)`, capped).
    None,
    /// Uniform in `[0, exponential delay]` ("full jitter"): spreads a crowd best, but a delay
    /// may be near zero.
    Full,
    /// Uniform in `[base, previous delay * 3]`, capped ("decorrelated jitter"): never below
    /// `base`, grows like the exponential on average.
    Decorrelated,
}

/// Backoff and the bound on attempts for one release.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure (before jitter).
    pub base_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// Consecutive failed attempts after which the release is Stalled (at least 1).
    pub max_attempts: u32,
    /// Growth per failure (at least 1.0).
    pub multiplier: f64,
    /// Randomisation.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 10 s, doubling, capped at 5 min, decorrelated jitter, Stalled after 5 failed attempts.
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(300),
            max_attempts: 5,
            multiplier: 2.0,
            jitter: Jitter::Decorrelated,
        }
    }
}

impl RetryPolicy {
    /// Checks that the policy can work: `base_delay > 0`, `max_delay >= base_delay`,
    /// `max_attempts >= 1`, `multiplier >= 1` (and finite).
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, problem: String| Err(Error::InvalidPolicy { field, problem });
        if self.base_delay.is_zero() {
            return invalid("baseDelay", "must be greater than zero".into());
        }
        if self.max_delay < self.base_delay {
            return invalid(
                "maxDelay",
                format!(
                    "({:?}) must not be shorter than baseDelay ({:?})",
                    self.max_delay, self.base_delay
                ),
            );
        }
        if self.max_attempts == 0 {
            return invalid("maxAttempts", "must be at least 1".into());
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return invalid(
                "multiplier",
                format!("({}) must be a number of at least 1", self.multiplier),
            );
        }
        Ok(())
    }

    /// The exponential delay after the `failures`-th consecutive failure (1-based), before
    /// jitter: `min(max_delay, base_delay * multiplier^(failures-1))`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(1024) as i32;
        let secs = self.base_delay.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay after the `failures`-th consecutive failure, given the previous delay (for
    /// decorrelated jitter) and a random source. Always within `[0, max_delay]`; within
    /// `[base_delay, max_delay]` unless the jitter is [`Jitter::Full`].
    pub fn delay(
        &self,
        failures: u32,
        previous: Option<Duration>,
        rng: &mut dyn RandomSource,
    ) -> Duration {
        match self.jitter {
            Jitter::None => self.ceiling(failures),
            Jitter::Full => self.ceiling(failures).mul_f64(unit(rng)),
            Jitter::Decorrelated => {
                let base = self.base_delay.as_secs_f64();
                let prev = previous.unwrap_or(self.base_delay).as_secs_f64();
                let high = (prev * 3.0).max(base);
                let secs = base + (high - base) * unit(rng);
                Duration::from_secs_f64(secs.min(self.max_delay.as_secs_f64()))
            }
        }
    }
}

/// A random number clamped into `[0, 1]` (a faulty source cannot produce a negative delay).
fn unit(rng: &mut dyn RandomSource) -> f64 {
    let x = rng.next_f64();
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Per-release state
// ---------------------------------------------------------------------------------------------

/// One failed attempt, as the agent saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Transient or permanent.
    pub class: ErrorClass,
    /// What failed (shown in the status; must not contain secrets).
    pub message: String,
    /// The server asked to wait at least this long (429/503 `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Failure {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure classified from its kind.
    pub fn from_kind(kind: &FailureKind, message: impl Into<String>) -> Self {
        Failure {
            class: kind.class(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same failure with a server-requested minimum wait.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

/// What happens after a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Try again after `delay`, at `at`.
    RetryAt {
        /// The delay.
        delay: Duration,
        /// `now + delay`.
        at: Timestamp,
    },
    /// Do not try again until a reset; `reason` says why (for the status).
    Stalled {
        /// Why, with the last error.
        reason: String,
    },
}

/// Whether an attempt may start now.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Yes.
    Now,
    /// Not before this time (backoff).
    At(Timestamp),
    /// No: Stalled until a reset.
    Stalled,
}

/// Why the retry accounting of a release was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// A new revision changed the release (chart, version or values).
    NewRevision,
    /// An operator asked for a retry over the status API.
    Operator,
    /// An operator set the retry annotation.
    Annotation,
}

impl ResetReason {
    /// Short text for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::NewRevision => "a new revision changed the release",
            ResetReason::Operator => "an operator requested a retry",
            ResetReason::Annotation => "the retry annotation was set",
        }
    }
}

impl std::fmt::Display for ResetReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retry accounting of one release.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryState {
    /// Consecutive failed attempts since the last success or reset.
    pub attempts: u32,
    /// Message of the last failure.
    pub last_error: Option<String>,
    /// Class of the last failure.
    pub last_class: Option<ErrorClass>,
    /// When the last failure was recorded.
    pub last_failure_at: Option<Timestamp>,
    /// The delay chosen after the last failure.
    pub last_delay: Option<Duration>,
    /// Earliest start of the next attempt (None: at once).
    pub next_attempt_at: Option<Timestamp>,
    /// Terminal until [`RetryState::reset`].
    pub stalled: bool,
    /// Why it is Stalled.
    pub stalled_reason: Option<String>,
    /// The last reset, if any (cleared by a success).
    pub last_reset: Option<ResetReason>,
}

impl RetryState {
    /// A fresh state: no failures, due at once.
    pub fn new() -> Self {
        RetryState::default()
    }

    /// Records a failed attempt at `now` and decides what follows: a delay (exponential with
    /// jitter, at least the server's `Retry-After`, at most the policy's `max_delay` unless the
    /// server asked for longer), or Stalled when the failure is permanent or this was attempt
    /// `policy.max_attempts`. A Stalled state stays Stalled (the failure is still recorded).
    pub fn on_failure(
        &mut self,
        now: Timestamp,
        failure: Failure,
        policy: &RetryPolicy,
        rng: &mut dyn RandomSource,
    ) -> Next {
        self.attempts = self.attempts.saturating_add(1);
        self.last_class = Some(failure.class);
        self.last_failure_at = Some(now);
        let message = failure.message;
        self.last_error = Some(message.clone());

        let stall_reason = if self.stalled {
            self.stalled_reason.clone()
        } else {
            match failure.class {
                ErrorClass::Permanent => Some(format!(
                    "permanent error, not retried until the release changes or a retry is requested: {message}"
                )),
                ErrorClass::Transient if self.attempts >= policy.max_attempts => Some(format!(
                    "failed {} times in a row (limit {}), not retried until the release changes or a retry is requested; last error: {message}",
                    self.attempts, policy.max_attempts
                )),
                ErrorClass::Transient => None,
            }
        };
        if let Some(reason) = stall_reason {
            self.stalled = true;
            self.stalled_reason = Some(reason.clone());
            self.next_attempt_at = None;
            return Next::Stalled { reason };
        }

        let mut delay = policy.delay(self.attempts, self.last_delay, rng);
        if let Some(min) = failure.retry_after {
            delay = delay.max(min);
        }
        self.last_delay = Some(delay);
        let at = now.checked_add(delay).unwrap_or(Timestamp::MAX);
        self.next_attempt_at = Some(at);
        Next::RetryAt { delay, at }
    }

    /// Records a successful attempt: everything is cleared.
    pub fn on_success(&mut self) {
        *self = RetryState::default();
    }

    /// Starts the accounting afresh (a new revision changed the release, an operator asked,
    /// the annotation was set): attempts, backoff and Stalled are cleared, the reason kept.
    /// Returns whether anything was cleared (false: the state was already fresh).
    pub fn reset(&mut self, reason: ResetReason) -> bool {
        let changed = self.attempts > 0 || self.stalled || self.next_attempt_at.is_some();
        *self = RetryState {
            last_reset: Some(reason),
            ..RetryState::default()
        };
        changed
    }

    /// Whether an attempt may start at `now`.
    pub fn due(&self, now: Timestamp) -> Due {
        if self.stalled {
            return Due::Stalled;
        }
        match self.next_attempt_at {
            Some(at) if at > now => Due::At(at),
            _ => Due::Now,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// In-place retries (backon)
// ---------------------------------------------------------------------------------------------

/// Bounds for repeating one transient operation in place (an API request, a fetch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InPlaceRetry {
    /// First delay (backon adds a random part up to the same amount again).
    pub min_delay: Duration,
    /// Longest delay before jitter.
    pub max_delay: Duration,
    /// Retries after the first try.
    pub max_retries: usize,
    /// Jitter seed (None: random).
    pub seed: Option<u64>,
}

impl Default for InPlaceRetry {
    /// 200 ms doubling up to 5 s, 4 retries.
    fn default() -> Self {
        InPlaceRetry {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retries: 4,
            seed: None,
        }
    }
}

impl InPlaceRetry {
    /// The backon builder: exponential, factor 2, with jitter.
    pub fn builder(&self) -> backon::ExponentialBuilder {
        let b = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_max_times(self.max_retries)
            .with_jitter();
        match self.seed {
            Some(seed) => b.with_jitter_seed(seed),
            None => b,
        }
    }
}

/// Runs `op` and repeats it while it fails with an error `classify` calls transient, within
/// `policy`; waits at least the `retry_after` of an error. A permanent error, or the last
/// transient one once the retries are used up, is returned as is. Each retry is logged at
/// debug level with the error's display text (it must not contain secrets).
pub async fn retry_transient<T, E, F, Fut>(
    policy: &InPlaceRetry,
    op: F,
    classify: impl Fn(&E) -> ErrorClass,
    retry_after: impl Fn(&E) -> Option<Duration>,
) -> std::result::Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: std::fmt::Display,
{
    use backon::Retryable;
    op.retry(policy.builder())
        .when(|e: &E| classify(e) == ErrorClass::Transient)
        .adjust(|e: &E, delay: Option<Duration>| {
            // None means the retries are used up: keep it so.
            delay.map(|d| retry_after(e).map_or(d, |min| d.max(min)))
        })
        .notify(|e: &E, delay: Duration| {
            tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "transient error, retrying");
        })
        .await
}

/// [`retry_transient`] for kube-rs calls: classified by [`classify_kube`], honouring
/// [`kube_retry_after`].
pub async fn retry_kube<T, F, Fut>(policy: &InPlaceRetry, op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry_transient(policy, op, classify_kube, kube_retry_after).await
}

pub(crate) type RetryMap = std::collections::HashMap<(String, String), (String, RetryState)>;

/// Per-release retry accounting: (namespace, release) -> (desired fingerprint, state).
/// Shared with the status API so an operator can ask for a retry.
#[derive(Default)]
pub struct RetryBook {
    inner: std::sync::Mutex<RetryMap>,
}

impl RetryBook {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, RetryMap> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An operator asks for a retry of `namespace/release`: backoff and Stalled are cleared.
    /// Returns whether the release has retry accounting (it ran and failed at least once or
    /// is known to the agent).
    pub fn request_retry(&self, namespace: &str, release: &str) -> bool {
        self.reset(namespace, release, ResetReason::Operator)
    }

    /// Clears backoff and Stalled of `namespace/release` for `reason`; false when the agent has
    /// no retry record of it.
    pub fn reset(&self, namespace: &str, release: &str, reason: ResetReason) -> bool {
        let mut map = self.lock();
        match map.get_mut(&(namespace.to_string(), release.to_string())) {
            Some((_, state)) => {
                state.reset(reason);
                tracing::info!(release, namespace, %reason, "retry state reset");
                true
            }
            None => false,
        }
    }

    /// The retry state of `namespace/release`, if the agent has one.
    pub fn state_of(&self, namespace: &str, release: &str) -> Option<RetryState> {
        self.lock()
            .get(&(namespace.to_string(), release.to_string()))
            .map(|(_, s)| s.clone())
    }

    /// Puts a state in the book (tests).
    pub fn insert(&self, namespace: &str, release: &str, state: RetryState) {
        self.lock().insert(
            (namespace.to_string(), release.to_string()),
            (String::new(), state),
        );
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Always returns the same number.
    struct Fixed(f64);
    impl RandomSource for Fixed {
        fn next_f64(&mut self) -> f64 {
            self.0
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            base_delay: secs(1.0),
            max_delay: secs(10.0),
            max_attempts: 5,
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn classifies_http_codes() {
        for (code, class) in [
            (400, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
            (413, ErrorClass::Permanent),
            (401, ErrorClass::Transient),
            (403, ErrorClass::Transient),
            (404, ErrorClass::Transient),
            (409, ErrorClass::Transient),
            (429, ErrorClass::Transient),
            (500, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (504, ErrorClass::Transient),
        ] {
            assert_eq!(classify_http_status(code), class, "code {code}");
        }
    }

    #[test]
    fn classifies_helm_messages() {
        for (msg, class) in [
            (
                "UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress",
                ErrorClass::Transient,
            ),
            (
                "failed pre-install: resource Job/ns/check not ready. status: Failed",
                ErrorClass::Transient,
            ),
            (
                "resource Deployment/ns/x not ready. status: InProgress ... context deadline exceeded",
                ErrorClass::Transient,
            ),
            (
                "unable to build kubernetes objects from release manifest: no matches for kind \"Certificate\" in version \"cert-manager.io/v1\"",
                ErrorClass::Transient,
            ),
            (
                "INSTALLATION FAILED: values don't meet the specifications of the schema(s) in the following chart(s):",
                ErrorClass::Permanent,
            ),
            (
                "parse error at (app/templates/deploy.yaml:3): unexpected \"}\" in operand",
                ErrorClass::Permanent,
            ),
            (
                "YAML parse error on app/templates/cm.yaml: error converting YAML to JSON: yaml: line 4: did not find expected key",
                ErrorClass::Permanent,
            ),
            (
                "Deployment.apps \"x\" is invalid: spec.replicas: Invalid value: -1",
                ErrorClass::Permanent,
            ),
            ("Kubernetes cluster unreachable", ErrorClass::Transient),
        ] {
            assert_eq!(classify_helm_message(msg), class, "{msg}");
        }
    }

    #[test]
    fn classifies_failure_kinds() {
        assert_eq!(FailureKind::GitFetch.class(), ErrorClass::Transient);
        assert_eq!(FailureKind::ChartFetch.class(), ErrorClass::Transient);
        assert_eq!(FailureKind::Timeout.class(), ErrorClass::Transient);
        assert_eq!(FailureKind::ApiUnreachable.class(), ErrorClass::Transient);
        assert_eq!(FailureKind::ApiStatus(503).class(), ErrorClass::Transient);
        assert_eq!(FailureKind::ApiStatus(422).class(), ErrorClass::Permanent);
        assert_eq!(FailureKind::ChartInvalid.class(), ErrorClass::Permanent);
        assert_eq!(FailureKind::ValuesInvalid.class(), ErrorClass::Permanent);
        assert_eq!(
            FailureKind::Helm("template: x:1: function \"nope\" not defined".into()).class(),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn classifies_kube_errors_and_reads_retry_after() {
        let status = |code: u16, retry: u32| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                details: Some(kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: vec![],
                    retry_after_seconds: retry,
                }),
                ..Default::default()
            }))
        };
        assert_eq!(classify_kube(&status(429, 3)), ErrorClass::Transient);
        assert_eq!(kube_retry_after(&status(429, 3)), Some(secs(3.0)));
        assert_eq!(kube_retry_after(&status(500, 0)), None);
        assert_eq!(classify_kube(&status(422, 0)), ErrorClass::Permanent);
        let io = kube::Error::ReadEvents(std::io::Error::other("cut"));
        assert_eq!(classify_kube(&io), ErrorClass::Transient);
        assert_eq!(kube_retry_after(&io), None);
    }

    #[test]
    fn validate_rejects_unusable_policies() {
        let ok = policy(Jitter::Full);
        assert_eq!(ok.validate(), Ok(()));
        let field = |p: RetryPolicy| match p.validate() {
            Err(Error::InvalidPolicy { field, .. }) => field,
            Ok(()) => "ok",
        };
        assert_eq!(
            field(RetryPolicy {
                base_delay: Duration::ZERO,
                ..ok.clone()
            }),
            "baseDelay"
        );
        assert_eq!(
            field(RetryPolicy {
                max_delay: secs(0.5),
                ..ok.clone()
            }),
            "maxDelay"
        );
        assert_eq!(
            field(RetryPolicy {
                max_attempts: 0,
                ..ok.clone()
            }),
            "maxAttempts"
        );
        assert_eq!(
            field(RetryPolicy {
                multiplier: 0.5,
                ..ok.clone()
            }),
            "multiplier"
        );
        assert_eq!(
            field(RetryPolicy {
                multiplier: f64::NAN,
                ..ok.clone()
            }),
            "multiplier"
        );
        assert_eq!(RetryPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn ceiling_grows_exponentially_and_is_capped() {
        let p = policy(Jitter::None);
        let got: Vec<f64> = (1..=6).map(|n| p.ceiling(n).as_secs_f64()).collect();
        assert_eq!(got, vec![1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        assert_eq!(p.ceiling(u32::MAX), secs(10.0));
        assert_eq!(p.ceiling(0), secs(1.0));
    }

    #[test]
    fn full_jitter_scales_the_ceiling() {
        let p = policy(Jitter::Full);
        for (n, r, want) in [(1, 0.5, 0.5), (3, 0.25, 1.0), (3, 0.0, 0.0), (8, 0.5, 5.0)] {
            assert_eq!(p.delay(n, None, &mut Fixed(r)), secs(want), "n={n} r={r}");
        }
        // A broken source cannot produce a delay outside [0, ceiling].
        assert_eq!(p.delay(2, None, &mut Fixed(7.0)), secs(2.0));
        assert_eq!(p.delay(2, None, &mut Fixed(-1.0)), Duration::ZERO);
        assert_eq!(p.delay(2, None, &mut Fixed(f64::NAN)), Duration::ZERO);
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_three_times_previous() {
        let p = policy(Jitter::Decorrelated);
        // r = 0 -> base; r -> 1 -> 3 * previous, capped.
        assert_eq!(p.delay(2, Some(secs(2.0)), &mut Fixed(0.0)), secs(1.0));
        assert_eq!(p.delay(2, Some(secs(2.0)), &mut Fixed(0.5)), secs(3.5));
        assert_eq!(p.delay(2, Some(secs(8.0)), &mut Fixed(0.99)), secs(10.0));
        assert_eq!(p.delay(1, None, &mut Fixed(0.5)), secs(2.0));
        let mut rng = SeededRng::new(7);
        let mut prev = None;
        for n in 1..50 {
            let d = p.delay(n, prev, &mut rng);
            assert!(d >= secs(1.0) && d <= secs(10.0), "{d:?}");
            prev = Some(d);
        }
    }

    #[test]
    fn seeded_rng_is_reproducible_and_uniform_enough() {
        let draw = |seed| {
            let mut r = SeededRng::new(seed);
            (0..1000).map(|_| r.next_f64()).collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((0.45..0.55).contains(&mean), "{mean}");
        assert_ne!(
            SeededRng::from_entropy().next_u64(),
            SeededRng::from_entropy().next_u64()
        );
    }

    #[test]
    fn transient_failures_back_off_then_stall_at_the_limit() {
        let p = policy(Jitter::None);
        let mut st = RetryState::new();
        let mut now = ts("2026-01-01T00:00:00Z");
        assert_eq!(st.due(now), Due::Now);
        let mut delays = vec![];
        for i in 1..=4 {
            match st.on_failure(
                now,
                Failure::transient(format!("boom {i}")),
                &p,
                &mut Fixed(0.5),
            ) {
                Next::RetryAt { delay, at } => {
                    assert_eq!(at, now.checked_add(delay).unwrap());
                    assert_eq!(st.due(now), Due::At(at));
                    delays.push(delay.as_secs_f64());
                    now = at;
                    assert_eq!(st.due(now), Due::Now);
                }
                other => panic!("attempt {i}: {other:?}"),
            }
        }
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 8.0]);
        assert_eq!(st.attempts, 4);
        match st.on_failure(now, Failure::transient("boom 5"), &p, &mut Fixed(0.5)) {
            Next::Stalled { reason } => {
                assert!(reason.contains("5 times"), "{reason}");
                assert!(reason.contains("boom 5"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(st.stalled);
        assert_eq!(st.due(now), Due::Stalled);
        assert_eq!(st.last_error.as_deref(), Some("boom 5"));
        assert_eq!(st.next_attempt_at, None);
        // Further failures (an attempt that was already running) keep it Stalled.
        assert!(matches!(
            st.on_failure(now, Failure::transient("late"), &p, &mut Fixed(0.5)),
            Next::Stalled { .. }
        ));
        assert_eq!(st.due(now), Due::Stalled);
    }

    #[test]
    fn permanent_failure_stalls_at_once() {
        let p = policy(Jitter::Full);
        let mut st = RetryState::new();
        let now = ts("2026-01-01T00:00:00Z");
        let next = st.on_failure(
            now,
            Failure::from_kind(
                &FailureKind::ValuesInvalid,
                "values.yaml: replicas: not a number",
            ),
            &p,
            &mut Fixed(0.3),
        );
        match next {
            Next::Stalled { reason } => {
                assert!(reason.starts_with("permanent error"), "{reason}");
                assert!(reason.contains("values.yaml: replicas"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(st.attempts, 1);
        assert_eq!(st.last_class, Some(ErrorClass::Permanent));
    }

    #[test]
    fn retry_after_lengthens_the_delay_even_past_max() {
        let p = policy(Jitter::None);
        let now = ts("2026-01-01T00:00:00Z");
        let mut st = RetryState::new();
        let f = Failure::transient("429").with_retry_after(Some(secs(30.0)));
        assert_eq!(
            st.on_failure(now, f, &p, &mut Fixed(0.0)),
            Next::RetryAt {
                delay: secs(30.0),
                at: ts("2026-01-01T00:00:30Z")
            }
        );
        // A shorter Retry-After does not shorten the backoff.
        let f = Failure::transient("429").with_retry_after(Some(secs(0.5)));
        assert!(matches!(
            st.on_failure(now, f, &p, &mut Fixed(0.0)),
            Next::RetryAt { delay, .. } if delay == secs(2.0)
        ));
    }

    #[test]
    fn success_and_reset_clear_the_accounting() {
        let p = RetryPolicy {
            max_attempts: 2,
            ..policy(Jitter::Decorrelated)
        };
        let now = ts("2026-01-01T00:00:00Z");
        let mut rng = SeededRng::new(1);

        let mut st = RetryState::new();
        st.on_failure(now, Failure::transient("a"), &p, &mut rng);
        st.on_success();
        assert_eq!(st, RetryState::default());

        for reason in [
            ResetReason::NewRevision,
            ResetReason::Operator,
            ResetReason::Annotation,
        ] {
            let mut st = RetryState::new();
            st.on_failure(now, Failure::transient("a"), &p, &mut rng);
            assert!(matches!(
                st.on_failure(now, Failure::transient("b"), &p, &mut rng),
                Next::Stalled { .. }
            ));
            assert!(st.reset(reason));
            assert_eq!(st.due(now), Due::Now);
            assert_eq!(st.attempts, 0);
            assert!(!st.stalled);
            assert_eq!(st.last_reset, Some(reason));
            // The limit counts again from zero.
            assert!(matches!(
                st.on_failure(now, Failure::transient("c"), &p, &mut rng),
                Next::RetryAt { .. }
            ));
        }
        let mut fresh = RetryState::new();
        assert!(!fresh.reset(ResetReason::Operator));
    }

    #[test]
    fn seeded_runs_give_identical_schedules() {
        let p = RetryPolicy::default();
        let schedule = |seed| {
            let mut rng = SeededRng::new(seed);
            let mut st = RetryState::new();
            let now = ts("2026-01-01T00:00:00Z");
            (0..4)
                .map(
                    |_| match st.on_failure(now, Failure::transient("x"), &p, &mut rng) {
                        Next::RetryAt { delay, .. } => delay,
                        Next::Stalled { .. } => Duration::MAX,
                    },
                )
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(5), schedule(5));
        assert_ne!(schedule(5), schedule(6));
    }

    #[derive(Debug)]
    struct E(ErrorClass, Option<Duration>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    fn fast() -> InPlaceRetry {
        InPlaceRetry {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_retries: 3,
            seed: Some(9),
        }
    }

    async fn run(errors: Vec<E>) -> (std::result::Result<&'static str, E>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(errors.into_iter()));
        let c = calls.clone();
        let res = retry_transient(
            &fast(),
            || {
                c.fetch_add(1, Ordering::SeqCst);
                let next = errors.lock().unwrap().next();
                async move {
                    match next {
                        Some(e) => Err(e),
                        None => Ok("done"),
                    }
                }
            },
            |e: &E| e.0,
            |e: &E| e.1,
        )
        .await;
        (res, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn in_place_retry_repeats_transient_errors_only() {
        let t = || E(ErrorClass::Transient, None);
        let (res, calls) = run(vec![t(), t()]).await;
        assert_eq!(res.unwrap(), "done");
        assert_eq!(calls, 3);

        let (res, calls) = run(vec![t(), E(ErrorClass::Permanent, None)]).await;
        assert_eq!(res.unwrap_err().0, ErrorClass::Permanent);
        assert_eq!(calls, 2, "a permanent error is not retried");

        let (res, calls) = run(vec![t(), t(), t(), t(), t()]).await;
        assert_eq!(res.unwrap_err().0, ErrorClass::Transient);
        assert_eq!(calls, 4, "first try + 3 retries");
    }

    #[tokio::test]
    async fn in_place_retry_waits_for_retry_after() {
        let started = std::time::Instant::now();
        let (res, calls) = run(vec![E(ErrorClass::Transient, Some(secs(0.3)))]).await;
        assert_eq!(res.unwrap(), "done");
        assert_eq!(calls, 2);
        assert!(started.elapsed() >= secs(0.3), "{:?}", started.elapsed());
    }
}
