//! Test controls: the request log, fault injection, watch cutting, API unavailability and
//! token rejection. Reachable from Rust (`cluster.controls()`) and over HTTP under
//! `/kubesim/...` on the API server itself (see README.md).

use crate::store::Store;
use crate::util::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most request records kept (the oldest tenth is dropped when full).
pub const MAX_LOG: usize = 200_000;

/// One API request as the server saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// Request path (without query).
    pub path: String,
    /// Query string.
    pub query: String,
    /// get, list, watch, create, update, patch, delete, deletecollection; or the
    /// non-resource kind (`discovery`, `openapi`, `version`, `health`).
    pub verb: String,
    /// API group of the resource (empty for core and non-resource requests).
    pub group: String,
    /// Resource plural (empty for non-resource requests).
    pub resource: String,
    /// Subresource (`status`, ...), empty if none.
    pub subresource: String,
    /// Namespace, empty if none.
    pub namespace: String,
    /// Object name, empty if none.
    pub name: String,
    /// User-Agent header.
    pub user_agent: String,
    /// Response status code (0: connection dropped by a fault).
    pub code: u16,
    /// Request Content-Type.
    pub content_type: String,
    /// Time to the response head, in milliseconds.
    pub duration_ms: f64,
}

/// Request counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Total requests.
    pub total: u64,
    /// By verb.
    pub by_verb: BTreeMap<String, u64>,
    /// By resource (`deployments.apps`, `secrets`).
    pub by_resource: BTreeMap<String, u64>,
    /// By user agent product (the part before the first `/`).
    pub by_user_agent: BTreeMap<String, u64>,
    /// By status code.
    pub by_code: BTreeMap<u16, u64>,
}

/// An injected error: matching requests fail with `code` (0 = connection closed without a
/// response) with probability `rate`, at most `times` times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRule {
    /// Only this verb (None: all).
    #[serde(default)]
    pub verb: Option<String>,
    /// Only this resource plural (None: all, including non-resource requests when verb is
    /// None too).
    #[serde(default)]
    pub resource: Option<String>,
    /// Only requests in this namespace; `""`: only requests without one (cluster-wide lists
    /// and cluster-scoped objects), as RBAC without a ClusterRole for them answers (None:
    /// all).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Probability in [0, 1] (1 = always).
    #[serde(default = "one")]
    pub rate: f64,
    /// HTTP code: 429, 500, 503, 409, ...; 0 drops the connection.
    pub code: u16,
    /// `Retry-After` seconds (429 / 503).
    #[serde(default)]
    pub retry_after_seconds: Option<u32>,
    /// Fire at most this many times (None: unlimited).
    #[serde(default)]
    pub times: Option<u64>,
}

fn one() -> f64 {
    1.0
}

impl Default for ErrorRule {
    /// Every request, always (rate 1), code 500, unlimited.
    fn default() -> Self {
        ErrorRule {
            verb: None,
            resource: None,
            namespace: None,
            rate: 1.0,
            code: 500,
            retry_after_seconds: None,
            times: None,
        }
    }
}

/// An injected delay: matching requests are held `delay_ms` before they are served (after
/// authentication, before error rules), at most `times` times. While held, a request counts in
/// [`Controls::delayed_in_flight`]: a test waits for it to be > 0 to act *while* a particular
/// request is in flight (e.g. SIGKILL a client mid-write), not by timing luck.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DelayRule {
    /// Only this verb (None: all).
    #[serde(default)]
    pub verb: Option<String>,
    /// Only this resource plural (None: all).
    #[serde(default)]
    pub resource: Option<String>,
    /// Only this namespace (None: all).
    #[serde(default)]
    pub namespace: Option<String>,
    /// How long to hold a matching request.
    pub delay_ms: u64,
    /// Fire at most this many times (None: unlimited).
    #[serde(default)]
    pub times: Option<u64>,
}

/// How an unavailable API presents itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum UnavailableMode {
    /// Every request gets 503 ServiceUnavailable.
    #[default]
    ServiceUnavailable,
    /// Connections are closed right after accept (like a refused connection to clients).
    Refuse,
}

#[derive(Debug, Default)]
struct Faults {
    latency: Duration,
    jitter: Duration,
    rules: Vec<(ErrorRule, u64)>,
    delays: Vec<(DelayRule, u64)>,
    unavailable_until: Option<(Instant, UnavailableMode)>,
    watch_event_limit: Option<u64>,
}

struct Inner {
    store: Store,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    reject_tokens: AtomicBool,
    cut: tokio::sync::watch::Sender<u64>,
    open_watches: AtomicUsize,
    open_connections: AtomicUsize,
    delayed: AtomicUsize,
}

/// Handle to the controls of one simulated cluster (cheap `Clone`).
#[derive(Clone)]
pub struct Controls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls").finish_non_exhaustive()
    }
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Serve normally.
    Pass,
    /// Answer with this error.
    Fail(crate::error::ApiError),
    /// Close the connection without a response.
    Drop,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Controls {
    pub(crate) fn new(store: Store, seed: u64) -> Self {
        let (cut, _) = tokio::sync::watch::channel(0);
        Controls {
            inner: Arc::new(Inner {
                store,
                log: Mutex::new(Vec::new()),
                faults: Mutex::new(Faults::default()),
                rng: Mutex::new(Rng::seeded(seed)),
                reject_tokens: AtomicBool::new(false),
                cut,
                open_watches: AtomicUsize::new(0),
                open_connections: AtomicUsize::new(0),
                delayed: AtomicUsize::new(0),
            }),
        }
    }

    /// Every logged API request, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.log).clone()
    }

    /// Logged requests matching a predicate.
    pub fn requests_where(&self, f: impl Fn(&RequestRecord) -> bool) -> Vec<RequestRecord> {
        lock(&self.inner.log)
            .iter()
            .filter(|r| f(r))
            .cloned()
            .collect()
    }

    /// Counters over the request log.
    pub fn counts(&self) -> Counts {
        let log = lock(&self.inner.log);
        let mut c = Counts::default();
        for r in log.iter() {
            c.total += 1;
            *c.by_verb.entry(r.verb.clone()).or_default() += 1;
            if !r.resource.is_empty() {
                *c.by_resource
                    .entry(crate::error::qualified(&r.group, &r.resource))
                    .or_default() += 1;
            }
            let ua = r.user_agent.split('/').next().unwrap_or("").to_string();
            *c.by_user_agent.entry(ua).or_default() += 1;
            *c.by_code.entry(r.code).or_default() += 1;
        }
        c
    }

    /// Empties the request log.
    pub fn reset_requests(&self) {
        lock(&self.inner.log).clear();
    }

    pub(crate) fn record(&self, r: RequestRecord) {
        let mut log = lock(&self.inner.log);
        if log.len() >= MAX_LOG {
            // Keep the newest records; a long-running kubesim must not grow without bound.
            log.drain(..MAX_LOG / 10);
        }
        log.push(r);
    }

    /// Adds latency to every API request: `fixed` plus a uniform random part up to `jitter`.
    pub fn set_latency(&self, fixed: Duration, jitter: Duration) {
        let mut f = lock(&self.inner.faults);
        f.latency = fixed;
        f.jitter = jitter;
    }

    /// Adds an error rule (see [`ErrorRule`]).
    pub fn add_error(&self, rule: ErrorRule) {
        lock(&self.inner.faults).rules.push((rule, 0));
    }

    /// Matching requests get `429 TooManyRequests` with `Retry-After: retry_after_seconds`
    /// with probability `rate`, at most `times` times.
    pub fn throttle(
        &self,
        verb: Option<&str>,
        resource: Option<&str>,
        rate: f64,
        retry_after_seconds: u32,
        times: Option<u64>,
    ) {
        self.add_error(ErrorRule {
            verb: verb.map(String::from),
            resource: resource.map(String::from),
            namespace: None,
            rate,
            code: 429,
            retry_after_seconds: Some(retry_after_seconds),
            times,
        });
    }

    /// Matching requests have their connection closed without a response.
    pub fn drop_connections(
        &self,
        verb: Option<&str>,
        resource: Option<&str>,
        rate: f64,
        times: Option<u64>,
    ) {
        self.add_error(ErrorRule {
            verb: verb.map(String::from),
            resource: resource.map(String::from),
            namespace: None,
            rate,
            code: 0,
            retry_after_seconds: None,
            times,
        });
    }

    /// Adds a delay rule (see [`DelayRule`]).
    pub fn add_delay(&self, rule: DelayRule) {
        lock(&self.inner.faults).delays.push((rule, 0));
    }

    /// Removes every delay rule (requests already held finish their delay).
    pub fn clear_delays(&self) {
        lock(&self.inner.faults).delays.clear();
    }

    /// Requests being held by a delay rule right now.
    pub fn delayed_in_flight(&self) -> usize {
        self.inner.delayed.load(Ordering::SeqCst)
    }

    /// The delay for a request (the first matching rule that has not used its `times`; zero
    /// when none matches). The rule's use is counted.
    pub(crate) fn delay_for(&self, verb: &str, resource: &str, namespace: &str) -> Duration {
        let mut f = lock(&self.inner.faults);
        for (rule, fired) in f.delays.iter_mut() {
            let no = |want: &Option<String>, got: &str| want.as_deref().is_some_and(|w| w != got);
            if no(&rule.verb, verb)
                || no(&rule.resource, resource)
                || no(&rule.namespace, namespace)
                || rule.times.is_some_and(|t| *fired >= t)
            {
                continue;
            }
            *fired += 1;
            return Duration::from_millis(rule.delay_ms);
        }
        Duration::ZERO
    }

    /// Holds the caller for `delay`, counted in [`Controls::delayed_in_flight`] (also when the
    /// future is dropped: the client went away).
    pub(crate) async fn hold(&self, delay: Duration) {
        struct Held<'a>(&'a AtomicUsize);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.inner.delayed.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.inner.delayed);
        tokio::time::sleep(delay).await;
    }

    /// The whole API is unavailable for `duration` (503 or refused connections).
    pub fn unavailable_for(&self, duration: Duration, mode: UnavailableMode) {
        lock(&self.inner.faults).unavailable_until = Some((Instant::now() + duration, mode));
    }

    /// Ends an unavailability window now.
    pub fn available(&self) {
        lock(&self.inner.faults).unavailable_until = None;
    }

    /// Removes every fault: latency, error rules, unavailability, watch limits, token rejection.
    pub fn clear_faults(&self) {
        *lock(&self.inner.faults) = Faults::default();
        self.inner.reject_tokens.store(false, Ordering::SeqCst);
    }

    /// When true, every bearer token is rejected with 401 Unauthorized.
    pub fn reject_tokens(&self, reject: bool) {
        self.inner.reject_tokens.store(reject, Ordering::SeqCst);
    }

    pub(crate) fn tokens_rejected(&self) -> bool {
        self.inner.reject_tokens.load(Ordering::SeqCst)
    }

    /// Closes every open watch stream now (clients see the stream end and re-watch).
    pub fn cut_watches(&self) {
        self.inner.cut.send_modify(|g| *g += 1);
    }

    /// Watches opened from now on are closed after sending `n` events (None: no limit).
    pub fn cut_watches_after(&self, n: Option<u64>) {
        lock(&self.inner.faults).watch_event_limit = n;
    }

    pub(crate) fn watch_event_limit(&self) -> Option<u64> {
        lock(&self.inner.faults).watch_event_limit
    }

    pub(crate) fn cut_receiver(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.cut.subscribe()
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }

    pub(crate) fn watch_opened(&self) -> OpenGuard {
        OpenGuard::new(self, Opened::Watch)
    }

    /// Number of client connections currently open (TCP accepted and not yet closed). After a
    /// client process dies, its requests already sent may still be served until this drops: a
    /// test waits for 0 before it takes "what happened so far" as complete.
    pub fn open_connections(&self) -> usize {
        self.inner.open_connections.load(Ordering::SeqCst)
    }

    pub(crate) fn connection_opened(&self) -> OpenGuard {
        OpenGuard::new(self, Opened::Connection)
    }

    /// Every stored object, grouped by resource.
    pub fn dump(&self) -> Value {
        self.inner.store.dump()
    }

    /// The unavailability mode, if the API is unavailable now.
    pub(crate) fn unavailable(&self) -> Option<UnavailableMode> {
        let mut f = lock(&self.inner.faults);
        match f.unavailable_until {
            Some((until, mode)) if Instant::now() < until => Some(mode),
            Some(_) => {
                f.unavailable_until = None;
                None
            }
            None => None,
        }
    }

    /// The latency to add to one request.
    pub(crate) fn latency(&self) -> Duration {
        let (fixed, jitter) = {
            let f = lock(&self.inner.faults);
            (f.latency, f.jitter)
        };
        if jitter.is_zero() {
            return fixed;
        }
        let r = lock(&self.inner.rng).next_f64();
        fixed + jitter.mul_f64(r)
    }

    /// Decides whether a request with this verb and resource fails.
    pub(crate) fn verdict(&self, verb: &str, resource: &str, namespace: &str) -> Verdict {
        let mut f = lock(&self.inner.faults);
        let mut rng = lock(&self.inner.rng);
        for (rule, fired) in f.rules.iter_mut() {
            if rule.verb.as_deref().is_some_and(|v| v != verb) {
                continue;
            }
            if rule.resource.as_deref().is_some_and(|r| r != resource) {
                continue;
            }
            if rule.namespace.as_deref().is_some_and(|n| n != namespace) {
                continue;
            }
            if rule.times.is_some_and(|t| *fired >= t) {
                continue;
            }
            if rng.next_f64() >= rule.rate {
                continue;
            }
            *fired += 1;
            return match rule.code {
                0 => Verdict::Drop,
                429 => Verdict::Fail(crate::error::ApiError::too_many_requests(
                    rule.retry_after_seconds.unwrap_or(1),
                )),
                503 => {
                    let mut e = crate::error::ApiError::unavailable(
                        "the server is currently unable to handle the request",
                    );
                    e.retry_after_seconds = rule.retry_after_seconds;
                    Verdict::Fail(e)
                }
                500 => Verdict::Fail(crate::error::ApiError::internal("injected by kubesim")),
                409 => Verdict::Fail(crate::error::ApiError::new(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
                )),
                404 => Verdict::Fail(crate::error::ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
                403 => Verdict::Fail(crate::error::ApiError::forbidden(
                    "forbidden by kubesim fault injection",
                )),
                504 => Verdict::Fail(crate::error::ApiError::new(
                    504,
                    "Timeout",
                    "the server was unable to return a response in the time allotted, but may still be processing the request",
                )),
                code => Verdict::Fail(crate::error::ApiError::new(
                    code,
                    "InternalError",
                    format!("injected error {code}"),
                )),
            };
        }
        Verdict::Pass
    }

    /// Applies a fault specification received over the admin endpoint.
    pub fn apply_spec(&self, spec: &FaultSpec) {
        if spec.latency_ms.is_some() || spec.jitter_ms.is_some() {
            self.set_latency(
                Duration::from_millis(spec.latency_ms.unwrap_or(0)),
                Duration::from_millis(spec.jitter_ms.unwrap_or(0)),
            );
        }
        for e in &spec.errors {
            self.add_error(e.clone());
        }
        for d in &spec.delays {
            self.add_delay(d.clone());
        }
        if let Some(s) = spec.unavailable_seconds {
            self.unavailable_for(
                Duration::from_secs_f64(s),
                spec.unavailable_mode.unwrap_or_default(),
            );
        }
        if let Some(r) = spec.reject_tokens {
            self.reject_tokens(r);
        }
        if spec.cut_watches_after.is_some() {
            self.cut_watches_after(spec.cut_watches_after);
        }
        if spec.cut_watches == Some(true) {
            self.cut_watches();
        }
    }

    /// A JSON summary of the current faults.
    pub fn describe(&self) -> Value {
        let f = lock(&self.inner.faults);
        json!({
            "latencyMs": f.latency.as_millis() as u64,
            "jitterMs": f.jitter.as_millis() as u64,
            "errors": f.rules.iter().map(|(r, fired)| json!({"rule": r, "fired": fired})).collect::<Vec<_>>(),
            "delays": f.delays.iter().map(|(r, fired)| json!({"rule": r, "fired": fired})).collect::<Vec<_>>(),
            "delayedInFlight": self.delayed_in_flight(),
            "unavailable": f.unavailable_until.map(|(u, _)| u > Instant::now()).unwrap_or(false),
            "rejectTokens": self.tokens_rejected(),
            "cutWatchesAfter": f.watch_event_limit,
            "openWatches": self.open_watches(),
            "openConnections": self.open_connections(),
        })
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Opened {
    Watch,
    Connection,
}

/// Counts an open watch or connection until dropped.
pub(crate) struct OpenGuard(Controls, Opened);

impl OpenGuard {
    fn new(controls: &Controls, what: Opened) -> Self {
        controls.counter(what).fetch_add(1, Ordering::SeqCst);
        OpenGuard(controls.clone(), what)
    }
}

impl Controls {
    fn counter(&self, what: Opened) -> &AtomicUsize {
        match what {
            Opened::Watch => &self.inner.open_watches,
            Opened::Connection => &self.inner.open_connections,
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counter(self.1).fetch_sub(1, Ordering::SeqCst);
    }
}

/// Faults to apply, as JSON for `POST /kubesim/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    /// Fixed latency per request.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Random extra latency up to this.
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    /// Error rules to add.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// Delay rules to add.
    #[serde(default)]
    pub delays: Vec<DelayRule>,
    /// Make the API unavailable for this many seconds.
    #[serde(default)]
    pub unavailable_seconds: Option<f64>,
    /// How (default: 503).
    #[serde(default)]
    pub unavailable_mode: Option<UnavailableMode>,
    /// Reject (true) or accept (false) bearer tokens.
    #[serde(default)]
    pub reject_tokens: Option<bool>,
    /// Close every open watch now.
    #[serde(default)]
    pub cut_watches: Option<bool>,
    /// Close watches after this many events.
    #[serde(default)]
    pub cut_watches_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_with_namespace_empty_fails_only_cluster_wide_requests() {
        let c = Controls::new(Store::default(), 1);
        c.add_error(ErrorRule {
            verb: Some("list".into()),
            resource: Some("secrets".into()),
            namespace: Some(String::new()),
            code: 403,
            ..ErrorRule::default()
        });
        assert_eq!(c.verdict("list", "secrets", "team-a"), Verdict::Pass);
        match c.verdict("list", "secrets", "") {
            Verdict::Fail(e) => assert_eq!(e.code, 403),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rules_filter_and_count() {
        let c = Controls::new(Store::default(), 1);
        c.throttle(Some("create"), Some("secrets"), 1.0, 2, Some(1));
        assert_eq!(c.verdict("get", "secrets", ""), Verdict::Pass);
        match c.verdict("create", "secrets", "") {
            Verdict::Fail(e) => {
                assert_eq!(e.code, 429);
                assert_eq!(e.retry_after_seconds, Some(2));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.verdict("create", "secrets", ""),
            Verdict::Pass,
            "times=1 exhausted"
        );
        c.drop_connections(None, None, 1.0, None);
        assert_eq!(c.verdict("list", "pods", ""), Verdict::Drop);
        c.clear_faults();
        assert_eq!(c.verdict("list", "pods", ""), Verdict::Pass);
    }

    #[test]
    fn latency_jitter_is_seeded_and_bounded() {
        let samples = |seed| {
            let c = Controls::new(Store::default(), seed);
            c.apply_spec(&FaultSpec {
                latency_ms: Some(10),
                jitter_ms: Some(100),
                ..FaultSpec::default()
            });
            (0..500).map(|_| c.latency()).collect::<Vec<_>>()
        };
        let a = samples(7);
        assert_eq!(a, samples(7), "same seed, same latencies");
        assert!(
            a.iter()
                .all(|d| (Duration::from_millis(10)..Duration::from_millis(110)).contains(d)),
            "fixed 10 ms plus up to 100 ms: {a:?}"
        );
        let lo = a.iter().filter(|d| **d < Duration::from_millis(35)).count();
        let hi = a
            .iter()
            .filter(|d| **d >= Duration::from_millis(85))
            .count();
        assert!(
            lo > 50 && hi > 50,
            "spread over the range: {lo} low, {hi} high"
        );
        let c = Controls::new(Store::default(), 1);
        c.set_latency(Duration::from_millis(5), Duration::ZERO);
        assert_eq!(
            c.latency(),
            Duration::from_millis(5),
            "no jitter: fixed only"
        );
    }

    #[tokio::test]
    async fn delay_rules_match_count_and_report_held_requests() {
        let c = Controls::new(Store::default(), 1);
        c.apply_spec(&FaultSpec {
            delays: vec![DelayRule {
                verb: Some("update".into()),
                resource: Some("configmaps".into()),
                namespace: Some("agent".into()),
                delay_ms: 300,
                times: Some(1),
            }],
            ..FaultSpec::default()
        });
        assert_eq!(c.delay_for("get", "configmaps", "agent"), Duration::ZERO);
        assert_eq!(c.delay_for("update", "configmaps", "other"), Duration::ZERO);
        assert_eq!(c.delay_for("update", "secrets", "agent"), Duration::ZERO);
        let d = c.delay_for("update", "configmaps", "agent");
        assert_eq!(d, Duration::from_millis(300));
        assert_eq!(
            c.delay_for("update", "configmaps", "agent"),
            Duration::ZERO,
            "times=1 used up"
        );
        assert_eq!(c.delayed_in_flight(), 0);
        let held = tokio::spawn({
            let c = c.clone();
            async move { c.hold(d).await }
        });
        let start = std::time::Instant::now();
        while c.delayed_in_flight() == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "never held");
            tokio::task::yield_now().await;
        }
        held.abort();
        let _ = held.await;
        assert_eq!(
            c.delayed_in_flight(),
            0,
            "a dropped request is no longer held"
        );
        c.add_delay(DelayRule {
            delay_ms: 1,
            ..DelayRule::default()
        });
        assert_eq!(c.delay_for("list", "pods", ""), Duration::from_millis(1));
        c.clear_delays();
        assert_eq!(c.delay_for("list", "pods", ""), Duration::ZERO);
    }

    #[test]
    fn error_rate_is_seeded_and_roughly_right() {
        let count = |seed| {
            let c = Controls::new(Store::default(), seed);
            c.add_error(ErrorRule {
                rate: 0.3,
                code: 500,
                ..ErrorRule::default()
            });
            (0..1000)
                .filter(|_| c.verdict("get", "pods", "") != Verdict::Pass)
                .count()
        };
        let a = count(42);
        assert_eq!(a, count(42));
        assert!((200..400).contains(&a), "{a}");
    }

    #[test]
    fn counts_group_requests() {
        let c = Controls::new(Store::default(), 1);
        let rec = |verb: &str, res: &str, ua: &str| RequestRecord {
            time: String::new(),
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            verb: verb.into(),
            group: "apps".into(),
            resource: res.into(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            user_agent: ua.into(),
            code: 200,
            content_type: String::new(),
            duration_ms: 1.0,
        };
        c.record(rec("get", "deployments", "helm/v4.1.4 (linux)"));
        c.record(rec("list", "deployments", "kubectl/v1.35.2"));
        let n = c.counts();
        assert_eq!(n.total, 2);
        assert_eq!(n.by_resource["deployments.apps"], 2);
        assert_eq!(n.by_user_agent["helm"], 1);
        c.reset_requests();
        assert!(c.requests().is_empty());
    }
}
