//! Retry accounting of one release: pure, no I/O, no clock of its own (time is passed in).
//!
//! A release that fails is tried again after an exponentially growing, jittered delay
//! ([`RetryPolicy`]); after [`RetryPolicy::max_attempts`] consecutive failures (or at once, for
//! an [`ErrorClass::Permanent`] error) it is *Stalled*: terminal until something changes — a
//! new revision that changes the release ([`RetryState::track`]), an operator request, or an
//! annotation ([`RetryState::reset`]). The agent keeps one [`RetryState`] per release and hands
//! it to [`crate::reconcile::next_action`], which says whether an attempt may start now, must
//! wait until a time, or is Stalled; after the attempt the agent records
//! [`RetryState::on_failure`] or [`RetryState::on_success`].
//!
//! helm's error text is classified once, here ([`classify_helm_message`]): the kind of failure
//! ([`HelmFailureKind`]) and whether retrying can help ([`ErrorClass`]).
//!
//! Messages stored in a [`RetryState`] end up in the status: callers pass texts that are
//! already free of secrets (the agent's process runner redacts helm's output).

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

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorClass {
    /// The same attempt may succeed later: API errors, timeouts, throttling, 5xx, Git or chart
    /// fetch failures, a helm wait or hook that failed. Retried with backoff, counted towards
    /// Stalled.
    Transient,
    /// Nothing changes until the input changes: an invalid chart or values. Stalled at once.
    Permanent,
    /// The cluster's API (or a source) was unavailable for a moment: a 5xx, a 429, a refused
    /// or cut connection. Not the release's fault: the agent repeats the same step in place
    /// with a capped backoff; it never counts towards Stalled and never triggers a
    /// remediation. Treated like [`ErrorClass::Transient`] where it is recorded anyway.
    Unavailable,
}

impl ErrorClass {
    /// `"Transient"` / `"Permanent"` / `"Unavailable"` (for status and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "Transient",
            ErrorClass::Permanent => "Permanent",
            ErrorClass::Unavailable => "Unavailable",
        }
    }

    /// Whether trying the same thing again can help.
    pub fn is_retryable(self) -> bool {
        self != ErrorClass::Permanent
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

/// What kind of failure helm reported, read from its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HelmFailureKind {
    /// `another operation (install/upgrade/rollback) is in progress`: the release is pending.
    OperationInProgress,
    /// `no matches for kind ...`: a kind (usually a CRD of another chart) is not served.
    NoMatchesForKind,
    /// A hook (pre/post install/upgrade/...) failed.
    HookFailed,
    /// Waiting for readiness or an operation timed out.
    Timeout,
    /// The chart, its templates or the values are wrong: the same input fails the same way.
    Chart,
    /// The release does not exist.
    ReleaseNotFound,
    /// The Kubernetes API server could not be reached, or answered with a transient error (a
    /// 5xx, 429 "too many requests", a refused, reset or cut connection).
    ClusterUnreachable,
    /// Anything else.
    Other,
}

impl HelmFailureKind {
    /// Whether retrying can help: [`HelmFailureKind::Chart`] is permanent; an unreachable or
    /// overloaded API is [`ErrorClass::Unavailable`] (retried in place, not counted); the
    /// rest is transient.
    pub fn class(self) -> ErrorClass {
        match self {
            HelmFailureKind::Chart => ErrorClass::Permanent,
            HelmFailureKind::ClusterUnreachable => ErrorClass::Unavailable,
            _ => ErrorClass::Transient,
        }
    }
}

impl std::fmt::Display for HelmFailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HelmFailureKind::OperationInProgress => "operation in progress",
            HelmFailureKind::NoMatchesForKind => "kind not served",
            HelmFailureKind::HookFailed => "hook failed",
            HelmFailureKind::Timeout => "timeout",
            HelmFailureKind::ReleaseNotFound => "release not found",
            HelmFailureKind::ClusterUnreachable => "cluster unreachable",
            HelmFailureKind::Chart => "chart invalid",
            HelmFailureKind::Other => "error",
        })
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

/// Phrases of client-go (which helm uses) for an API server that is unreachable or answered
/// with a transient error: 500 ("Internal error occurred", "an error on the server"), 503,
/// 504, 429, and transport failures.
const API_UNAVAILABLE_PHRASES: &[&str] = &[
    "kubernetes cluster unreachable",
    "connection refused",
    "connection reset by peer",
    "broken pipe",
    "unexpected eof",
    "i/o timeout",
    "tls handshake timeout",
    "http2: client connection lost",
    "http2: server sent goaway",
    "use of closed network connection",
    "no route to host",
    "internal error occurred",
    "an error on the server",
    "the server is currently unable to handle the request",
    "the server has received too many requests",
    "the server was unable to return a response in the time allotted",
    "etcdserver: request timed out",
    "etcdserver: leader changed",
];

/// Classifies helm's error message: the kind of failure, in this order: operation in
/// progress, kind not served, hook failed (unless the API failed while helm ran the hook),
/// timeout, API unavailable, chart/values/template
/// errors (the only permanent kind), release not found, other.
pub fn classify_helm_kind(message: &str) -> HelmFailureKind {
    let m = message.to_ascii_lowercase();
    if m.contains("another operation (install/upgrade/rollback) is in progress") {
        HelmFailureKind::OperationInProgress
    } else if m.contains("no matches for kind") || m.contains("ensure crds are installed first") {
        HelmFailureKind::NoMatchesForKind
    } else if [
        "failed pre-install",
        "failed post-install",
        "failed pre-upgrade",
        "failed post-upgrade",
        "failed pre-rollback",
        "failed post-rollback",
        "failed pre-delete",
        "failed post-delete",
    ]
    .iter()
    .any(|h| m.contains(h))
    {
        // helm reports an API error while it creates or watches a hook as the hook failing
        // (`failed post-install: warning: Hook post-install ... failed: Internal error
        // occurred`): the API was unavailable, the hook did not fail.
        if API_UNAVAILABLE_PHRASES.iter().any(|p| m.contains(p)) {
            HelmFailureKind::ClusterUnreachable
        } else {
            HelmFailureKind::HookFailed
        }
    } else if m.contains("context deadline exceeded")
        || m.contains("timed out")
        || m.contains("timeout waiting")
    {
        // helm 4's wait (kstatus) reports a resource it never saw a status for as `Unknown`:
        // its watch of the resource failed (the API answered 500 or 429), the resource was
        // one seen not ready. Only when no resource was seen in progress or failed.
        if m.contains("status: unknown")
            && !m.contains("status: inprogress")
            && !m.contains("status: failed")
        {
            HelmFailureKind::ClusterUnreachable
        } else {
            HelmFailureKind::Timeout
        }
    } else if API_UNAVAILABLE_PHRASES.iter().any(|p| m.contains(p)) {
        HelmFailureKind::ClusterUnreachable
    } else if m.contains("chart.yaml file is missing")
        || PERMANENT_HELM_PHRASES.iter().any(|p| m.contains(p))
    {
        HelmFailureKind::Chart
    } else if m.contains("release: not found")
        || m.contains("has no deployed releases")
        || (m.contains("release") && m.contains("not found") && !m.contains("namespaces"))
    {
        HelmFailureKind::ReleaseNotFound
    } else {
        HelmFailureKind::Other
    }
}

/// Class of a helm failure from its message: template, YAML, schema and chart metadata errors
/// are permanent; everything else (wait timeouts, failed hooks, "another operation is in
/// progress", "no matches for kind", API errors) is transient.
pub fn classify_helm_message(message: &str) -> ErrorClass {
    classify_helm_kind(message).class()
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
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
    /// The fingerprint of the desired release this accounting is about (chart, version,
    /// values); see [`RetryState::track`]. Kept across resets and successes.
    pub desired: Option<String>,
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
                ErrorClass::Transient | ErrorClass::Unavailable
                    if self.attempts >= policy.max_attempts =>
                {
                    Some(format!(
                        "failed {} times in a row (limit {}), not retried until the release changes or a retry is requested; last error: {message}",
                        self.attempts, policy.max_attempts
                    ))
                }
                ErrorClass::Transient | ErrorClass::Unavailable => None,
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

    /// Records a successful attempt: everything is cleared (but the tracked fingerprint).
    pub fn on_success(&mut self) {
        *self = RetryState {
            desired: self.desired.take(),
            ..RetryState::default()
        };
    }

    /// Follows the desired release: the first fingerprint seen is kept; a different one (the
    /// chart, its version or the values changed) starts the accounting afresh
    /// ([`ResetReason::NewRevision`]). Returns whether that reset cleared anything.
    pub fn track(&mut self, fingerprint: &str) -> bool {
        match self.desired.as_deref() {
            None => {
                self.desired = Some(fingerprint.to_string());
                false
            }
            Some(seen) if seen == fingerprint => false,
            Some(_) => {
                let cleared = self.reset(ResetReason::NewRevision);
                self.desired = Some(fingerprint.to_string());
                cleared
            }
        }
    }

    /// Starts the accounting afresh (a new revision changed the release, an operator asked,
    /// the annotation was set): attempts, backoff and Stalled are cleared, the reason kept.
    /// Returns whether anything was cleared (false: the state was already fresh).
    pub fn reset(&mut self, reason: ResetReason) -> bool {
        let changed = self.attempts > 0 || self.stalled || self.next_attempt_at.is_some();
        *self = RetryState {
            last_reset: Some(reason),
            desired: self.desired.take(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            ("Kubernetes cluster unreachable", ErrorClass::Unavailable),
            (
                "resource Deployment/mesh/mesh-control not ready. status: Unknown, message: \ncontext deadline exceeded",
                ErrorClass::Unavailable,
            ),
            (
                "resource Deployment/ns/a not ready. status: Unknown, message: \nresource Deployment/ns/b not ready. status: InProgress, message: 0 of 1 ready\ncontext deadline exceeded",
                ErrorClass::Transient,
            ),
            (
                "INSTALLATION FAILED: failed to create resource: Internal error occurred: injected by kubesim",
                ErrorClass::Unavailable,
            ),
            (
                "UPGRADE FAILED: the server has received too many requests and has asked us to try again later (get secrets)",
                ErrorClass::Unavailable,
            ),
            (
                "failed post-install: warning: Hook post-install certs/templates/check.yaml failed: Internal error occurred: injected by kubesim",
                ErrorClass::Unavailable,
            ),
            (
                "failed post-upgrade: 1 error occurred:\n\t* job check failed: BackoffLimitExceeded",
                ErrorClass::Transient,
            ),
            (
                "Get \"https://127.0.0.1:6443/api/v1/namespaces/x/secrets\": read tcp 127.0.0.1:5->127.0.0.1:6443: read: connection reset by peer",
                ErrorClass::Unavailable,
            ),
        ] {
            assert_eq!(classify_helm_message(msg), class, "{msg}");
        }
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
            Failure::permanent("values.yaml: replicas: not a number"),
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

    #[test]
    fn track_resets_only_when_the_desired_release_changes() {
        let p = policy(Jitter::None);
        let mut st = RetryState::new();
        assert!(
            !st.track("app@1 sha256:a"),
            "the first fingerprint is only recorded"
        );
        st.on_failure(
            ts("2026-01-01T00:00:00Z"),
            Failure::transient("x"),
            &p,
            &mut Fixed(0.5),
        );
        assert!(!st.track("app@1 sha256:a"), "same release: nothing reset");
        assert_eq!(st.attempts, 1);
        assert!(
            st.track("app@2 sha256:a"),
            "a new version resets the accounting"
        );
        assert_eq!(st.attempts, 0);
        assert_eq!(st.last_reset, Some(ResetReason::NewRevision));
        assert_eq!(st.desired.as_deref(), Some("app@2 sha256:a"));
        st.reset(ResetReason::Operator);
        st.on_success();
        assert_eq!(
            st.desired.as_deref(),
            Some("app@2 sha256:a"),
            "kept across resets"
        );
        assert!(!st.track("app@2 sha256:a"));
    }
}
