//! One writer (issue 5): leader election on a `coordination.k8s.io/v1` Lease in the agent's
//! namespace, with the semantics of client-go's `leaderelection`:
//!
//! - A candidate takes the Lease when it does not exist, when it has no holder (released), or
//!   when its record has not changed for a whole lease duration. "Not changed" is judged on
//!   the candidate's own monotonic clock (since it first saw this record) as well as by the
//!   record's renewTime: the later of the two expiries counts, so a holder whose clock lags
//!   cannot be robbed early, a wall-clock jump cannot shorten a lease, and a candidate that
//!   has just started waits one full lease duration before taking over a lease someone else
//!   held.
//! - Every write carries the `resourceVersion` it was based on: of two candidates racing for
//!   the same record, the API server accepts one and answers the other 409 Conflict (or
//!   AlreadyExists on create); the loser re-reads and waits.
//! - The leader renews every `retry_period`. When no renewal has succeeded for
//!   `renew_deadline` (measured from the *start* of the last successful request), or a read
//!   shows another holder, [`Leadership::lost`] is cancelled at once and the renew loop ends.
//!   Since `renew_deadline < lease_duration`, the old leader has stopped before any other
//!   candidate can take over.
//! - [`Leadership::release`] clears the holder (leaseDurationSeconds 1), so a waiting
//!   candidate takes over at its next retry instead of after the lease duration. Dropping a
//!   [`Leadership`] stops renewing without releasing (as a crash would).
//!
//! The decisions are pure functions ([`decide`], [`expires_at`], [`holder_alive`],
//! [`renewal_lost`], [`next_spec`]) tested without a cluster; [`LeaderElector`] is the thin
//! async driver around them. Leadership transitions are logged with `tracing` (identities
//! only, nothing secret).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kube_api::error_text as kube_error_text;
use crate::reconcile::retry::{RandomSource, SeededRng};

/// Default name of the Lease.
pub const DEFAULT_LEASE_NAME: &str = "strata-leader";

/// Leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timings cannot give one writer.
    #[error(
        "invalid leader election timings: {0}; use e.g. lease 15s, renew deadline 10s, retry period 2s"
    )]
    InvalidTimings(String),
    /// The identity is empty.
    #[error(
        "leader election needs a non-empty identity for Lease {namespace}/{name}; set POD_NAME or pass one"
    )]
    EmptyIdentity {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
    /// Shutdown was requested before the Lease was acquired.
    #[error(
        "stopped waiting for Lease {namespace}/{name}: shutdown requested before it was acquired"
    )]
    Cancelled {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
    /// An API request on the Lease failed.
    #[error(
        "{verb} Lease {namespace}/{name} failed: {message}; check that the API server is reachable and the agent may get, create and update leases.coordination.k8s.io in {namespace}"
    )]
    Api {
        /// get, create, update.
        verb: &'static str,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API server's answer.
        message: String,
    },
    /// An API request on the Lease got no answer in time.
    #[error(
        "{verb} Lease {namespace}/{name} got no answer within {after:?}; the API server may be overloaded or unreachable"
    )]
    Timeout {
        /// get, create, update.
        verb: &'static str,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The time limit.
        after: Duration,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Timings and identity
// ---------------------------------------------------------------------------------------------

/// How long a lease lasts and how often it is renewed (client-go's three durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long others wait, after they last saw the record change, before taking over
    /// (`leaseDurationSeconds`, rounded up to whole seconds when written).
    pub lease_duration: Duration,
    /// The leader gives up (its `lost()` fires) when no renewal succeeded for this long.
    pub renew_deadline: Duration,
    /// Time between renewals, and between a candidate's attempts.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// 15 s lease, 10 s renew deadline, 2 s retry period (client-go's defaults).
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// Checks `lease_duration >= 1s`, `lease_duration > renew_deadline`,
    /// `renew_deadline > 1.2 * retry_period` and `retry_period > 0`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidTimings(m));
        if self.retry_period.is_zero() {
            return bad("the retry period must be greater than zero".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return bad(format!(
                "the lease duration ({:?}) must be at least 1s",
                self.lease_duration
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return bad(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return bad(format!(
                "the renew deadline ({:?}) must be longer than 1.2 x the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }

    /// `leaseDurationSeconds` as written: the lease duration rounded up to whole seconds.
    pub fn lease_duration_seconds(&self) -> i32 {
        let s = self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(s).unwrap_or(i32::MAX)
    }
}

/// An identity for this instance: the pod name (`POD_NAME`, else `HOSTNAME`, else the kernel
/// host name, else `strata`) plus `-` and 8 random hex digits, so a restarted pod with the same
/// name is a new candidate and never mistakes its predecessor's lease for its own.
pub fn default_identity() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let base = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "strata".to_string());
    identity_with_suffix(&base, &mut crate::reconcile::retry::entropy_rng())
}

/// `base` plus `-` and 8 hex digits drawn from `rng`.
pub fn identity_with_suffix(base: &str, rng: &mut SeededRng) -> String {
    format!("{}-{:08x}", base.trim(), rng.next_u64() as u32)
}

// ---------------------------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------------------------

/// The election record of a Lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseSnapshot {
    /// Holder (None: free, e.g. released).
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub lease_duration: Option<Duration>,
    /// When the holder acquired it.
    pub acquire_time: Option<Timestamp>,
    /// When the holder last renewed it.
    pub renew_time: Option<Timestamp>,
    /// Changes of holder so far.
    pub transitions: i32,
    /// The object's resourceVersion (the precondition of the next write).
    pub resource_version: Option<String>,
}

impl LeaseSnapshot {
    /// The record of a Lease object.
    pub fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        LeaseSnapshot {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration: spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }

    /// Whether two snapshots hold the same election record (resourceVersion and unrelated
    /// metadata aside): a candidate restarts its expiry clock whenever the record changes.
    pub fn same_record(&self, other: &LeaseSnapshot) -> bool {
        self.holder == other.holder
            && self.lease_duration == other.lease_duration
            && self.acquire_time == other.acquire_time
            && self.renew_time == other.renew_time
            && self.transitions == other.transitions
    }
}

/// What a candidate does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by me.
    Create,
    /// The Lease is free or expired: take it over (precondition: its resourceVersion).
    Acquire,
    /// I hold it: renew it.
    Renew,
    /// Someone else holds it until `expires_at` (by my clock): wait.
    Wait {
        /// The holder.
        holder: String,
        /// When I may take over if the record does not change.
        expires_at: Timestamp,
    },
}

/// When the lease held in `lease` expires, for a candidate that at `now` has seen this
/// record unchanged for `unchanged_for` (measured on its monotonic clock): the later of
/// `renewTime (else acquireTime) + leaseDurationSeconds` and `now - unchanged_for +
/// leaseDurationSeconds` (the record's own duration; `timings.lease_duration` if it has
/// none). None when it has no holder. A record with no times, never observed, is expired.
pub fn expires_at(
    lease: &LeaseSnapshot,
    now: Timestamp,
    unchanged_for: Option<Duration>,
    timings: &Timings,
) -> Option<Timestamp> {
    lease.holder.as_ref()?;
    let duration = lease.lease_duration.unwrap_or(timings.lease_duration);
    let plus = |t: Timestamp| t.checked_add(duration).unwrap_or(Timestamp::MAX);
    let by_record = lease.renew_time.or(lease.acquire_time).map(plus);
    let by_observation = unchanged_for.map(|u| plus(now.checked_sub(u).unwrap_or(Timestamp::MIN)));
    Some(match (by_record, by_observation) {
        (Some(a), Some(b)) => a.max(b),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => Timestamp::MIN,
    })
}

/// The candidate `me` decides, at `now`, what to do with the Lease it just read (None: there
/// is none), having seen this record unchanged for `unchanged_for` (None: never observed
/// before).
pub fn decide(
    lease: Option<&LeaseSnapshot>,
    me: &str,
    now: Timestamp,
    unchanged_for: Option<Duration>,
    timings: &Timings,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    match &lease.holder {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(h) => match expires_at(lease, now, unchanged_for, timings) {
            Some(exp) if exp > now => Decision::Wait {
                holder: h.clone(),
                expires_at: exp,
            },
            _ => Decision::Acquire,
        },
    }
}

/// Whether the Lease has a holder that renewed it less than `leaseDurationSeconds` ago by
/// `now` (judged by the record's renewTime alone: for a single read, e.g. crash recovery
/// asking "is another strata instance working?"). A lease without a duration counts with
/// the default 15 s.
pub fn holder_alive(lease: &LeaseSnapshot, now: Timestamp) -> bool {
    if lease.holder.is_none() {
        return false;
    }
    let Some(written) = lease.renew_time.or(lease.acquire_time) else {
        return false;
    };
    let duration = lease
        .lease_duration
        .unwrap_or(Timings::default().lease_duration);
    written.checked_add(duration).unwrap_or(Timestamp::MAX) > now
}

/// Whether the leader has lost: its last successful renewal started at `last_renewed`, and
/// by `now` the renew deadline has passed.
pub fn renewal_lost(last_renewed: Instant, now: Instant, timings: &Timings) -> bool {
    now.saturating_duration_since(last_renewed) >= timings.renew_deadline
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Create or take over (after [`Decision::Create`] / [`Decision::Acquire`]).
    Acquire,
    /// Renew (after [`Decision::Renew`]).
    Renew,
    /// Give up the lease (graceful stop).
    Release,
}

/// The Lease spec `me` writes at `now`, from the previous record (None for a new Lease):
/// taking over counts a transition and sets acquireTime; renewing keeps both; releasing
/// clears the holder and shortens the duration to 1 s.
pub fn next_spec(
    prev: Option<&LeaseSnapshot>,
    write: Write,
    me: &str,
    now: Timestamp,
    timings: &Timings,
) -> LeaseSpec {
    let transitions = prev.map_or(0, |p| p.transitions);
    let now_mt = Some(MicroTime(now));
    match write {
        Write::Acquire => LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(timings.lease_duration_seconds()),
            acquire_time: now_mt.clone(),
            renew_time: now_mt,
            lease_transitions: Some(match prev {
                Some(p) if p.holder.as_deref() != Some(me) => transitions.saturating_add(1),
                _ => transitions,
            }),
            ..LeaseSpec::default()
        },
        Write::Renew => LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(timings.lease_duration_seconds()),
            acquire_time: prev
                .and_then(|p| p.acquire_time)
                .map(MicroTime)
                .or(now_mt.clone()),
            renew_time: now_mt,
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        },
        Write::Release => LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: now_mt.clone(),
            renew_time: now_mt,
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// The outcome of one [`LeaderElector::try_acquire_or_renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// I hold the Lease now (created, taken over or renewed).
    Leader,
    /// Someone else holds it.
    Follower {
        /// The holder.
        holder: String,
        /// When I may take it over if the record does not change.
        expires_at: Timestamp,
    },
    /// My write lost a race (409): another candidate wrote first. Re-read and decide again.
    Conflict,
}

struct Shared {
    namespace: String,
    name: String,
    identity: String,
    timings: Timings,
    api: Api<Lease>,
    /// The last record read and when it was first seen (monotonic clock).
    observed: Mutex<Option<(LeaseSnapshot, Instant)>>,
    holder: watch::Sender<Option<String>>,
    rng: Mutex<SeededRng>,
}

/// Leader election for one identity on one Lease (cheap `Clone`).
#[derive(Clone)]
pub struct LeaderElector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("namespace", &self.shared.namespace)
            .field("name", &self.shared.name)
            .field("identity", &self.shared.identity)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// An elector for `identity` on Lease `namespace/name` (the namespace must exist).
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timings: Timings,
    ) -> Result<Self> {
        let (namespace, name, identity) = (namespace.into(), name.into(), identity.into());
        timings.validate()?;
        if identity.trim().is_empty() {
            return Err(Error::EmptyIdentity { namespace, name });
        }
        let (holder, _) = watch::channel(None);
        Ok(LeaderElector {
            shared: Arc::new(Shared {
                api: Api::namespaced(client, &namespace),
                namespace,
                name,
                identity,
                timings,
                observed: Mutex::new(None),
                holder,
                rng: Mutex::new(crate::reconcile::retry::entropy_rng()),
            }),
        })
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.shared.identity
    }

    /// The timings.
    pub fn timings(&self) -> Timings {
        self.shared.timings
    }

    /// The holder last seen by this elector (None: free, or not read yet); for status.
    pub fn current_holder(&self) -> Option<String> {
        self.shared.holder.borrow().clone()
    }

    /// Changes of the holder as this elector sees them.
    pub fn holder_changes(&self) -> watch::Receiver<Option<String>> {
        self.shared.holder.subscribe()
    }

    fn err(&self, verb: &'static str, e: &kube::Error) -> Error {
        Error::Api {
            verb,
            namespace: self.shared.namespace.clone(),
            name: self.shared.name.clone(),
            message: kube_error_text(e),
        }
    }

    /// Runs one API request with a time limit (the renew deadline).
    async fn call<T>(
        &self,
        verb: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>> {
        let after = self.shared.timings.renew_deadline;
        tokio::time::timeout(after, fut)
            .await
            .map_err(|_| Error::Timeout {
                verb,
                namespace: self.shared.namespace.clone(),
                name: self.shared.name.clone(),
                after,
            })
    }

    /// Reads the Lease and records the observation (restarting the expiry clock when the
    /// record changed). Returns the snapshot and for how long this record has been seen
    /// unchanged.
    async fn observe(&self) -> Result<Option<(LeaseSnapshot, Duration)>> {
        let got = self
            .call("get", self.shared.api.get_opt(&self.shared.name))
            .await?
            .map_err(|e| self.err("get", &e))?;
        let now = Instant::now();
        let snap = got.as_ref().map(LeaseSnapshot::from_lease);
        let mut observed = lock(&self.shared.observed);
        let result = match snap {
            None => {
                *observed = None;
                None
            }
            Some(s) => {
                let since = match observed.as_ref() {
                    Some((prev, at)) if prev.same_record(&s) => *at,
                    _ => now,
                };
                *observed = Some((s.clone(), since));
                Some((s, now.saturating_duration_since(since)))
            }
        };
        drop(observed);
        self.set_holder(result.as_ref().and_then(|(s, _)| s.holder.clone()));
        Ok(result)
    }

    fn set_holder(&self, holder: Option<String>) {
        let me = &self.shared.identity;
        self.shared.holder.send_if_modified(|cur| {
            if *cur == holder {
                return false;
            }
            match &holder {
                Some(h) if h != me => tracing::info!(
                    lease = %self.shared.name, namespace = %self.shared.namespace,
                    holder = %h, me = %me, "lease holder changed"
                ),
                None => tracing::info!(
                    lease = %self.shared.name, namespace = %self.shared.namespace,
                    "lease is free"
                ),
                Some(_) => {}
            }
            *cur = holder;
            true
        });
    }

    /// Remembers a record this elector just wrote.
    fn wrote(&self, lease: &Lease) {
        let snap = LeaseSnapshot::from_lease(lease);
        let holder = snap.holder.clone();
        *lock(&self.shared.observed) = Some((snap, Instant::now()));
        self.set_holder(holder);
    }

    /// Reads the Lease once and creates, takes over or renews it when [`decide`] says so.
    /// 409 answers (another candidate wrote first) come back as [`Attempt::Conflict`].
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt> {
        let s = &self.shared;
        let observed = self.observe().await?;
        let now = Timestamp::now();
        let decision = decide(
            observed.as_ref().map(|(l, _)| l),
            &s.identity,
            now,
            observed.as_ref().map(|(_, unchanged)| *unchanged),
            &s.timings,
        );
        let prev = observed.map(|(l, _)| l);
        let write = match decision {
            Decision::Wait { holder, expires_at } => {
                return Ok(Attempt::Follower { holder, expires_at });
            }
            Decision::Renew => Write::Renew,
            Decision::Create | Decision::Acquire => Write::Acquire,
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                resource_version: prev.as_ref().and_then(|p| p.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(next_spec(
                prev.as_ref(),
                write,
                &s.identity,
                now,
                &s.timings,
            )),
        };
        let (verb, res) = if prev.is_none() {
            let r = self
                .call("create", s.api.create(&PostParams::default(), &lease))
                .await?;
            ("create", r)
        } else {
            let r = self
                .call(
                    "update",
                    s.api.replace(&s.name, &PostParams::default(), &lease),
                )
                .await?;
            ("update", r)
        };
        match res {
            Ok(written) => {
                self.wrote(&written);
                Ok(Attempt::Leader)
            }
            Err(e) if is_conflict(&e) => {
                tracing::debug!(lease = %s.name, me = %s.identity, verb, "lease write lost a race (409), re-reading");
                Ok(Attempt::Conflict)
            }
            Err(e) => Err(self.err(verb, &e)),
        }
    }

    /// Reads the Lease once: the holder, if one other than this elector renewed it within its
    /// lease duration (by [`holder_alive`]). For crash recovery: "is another strata instance
    /// working?" (a leader does not need to ask: holding the Lease answers it).
    pub async fn other_holder_alive(&self) -> Result<Option<String>> {
        let observed = self.observe().await?;
        Ok(observed.and_then(|(l, _)| {
            let alive = holder_alive(&l, Timestamp::now());
            l.holder.filter(|h| alive && *h != self.shared.identity)
        }))
    }

    /// A jittered retry period: `retry_period * [1, 1.2)`.
    fn jittered_period(&self) -> Duration {
        let r = lock(&self.shared.rng).next_f64();
        self.shared.timings.retry_period.mul_f64(1.0 + 0.2 * r)
    }

    /// Waits until this elector holds the Lease (trying every retry period, at once after a
    /// lost race) and starts renewing it. Fails only when `shutdown` is cancelled first;
    /// API errors are logged and retried.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<Leadership> {
        let s = &self.shared;
        let mut last_wait_logged: Option<String> = None;
        loop {
            if shutdown.is_cancelled() {
                return Err(self.cancelled());
            }
            let started = Instant::now();
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return Err(self.cancelled()),
                a = self.try_acquire_or_renew() => a,
            };
            let pause = match attempt {
                Ok(Attempt::Leader) => {
                    tracing::info!(lease = %s.name, namespace = %s.namespace, me = %s.identity, "became leader");
                    return Ok(Leadership::start(self.clone(), started));
                }
                Ok(Attempt::Conflict) => Duration::from_millis(10),
                Ok(Attempt::Follower { holder, expires_at }) => {
                    if last_wait_logged.as_deref() != Some(holder.as_str()) {
                        tracing::info!(
                            lease = %s.name, namespace = %s.namespace, me = %s.identity,
                            holder = %holder, expires_at = %expires_at,
                            "waiting for the lease held by another instance"
                        );
                        last_wait_logged = Some(holder);
                    }
                    self.jittered_period()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election attempt failed; retrying");
                    self.jittered_period()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Err(self.cancelled()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn cancelled(&self) -> Error {
        Error::Cancelled {
            namespace: self.shared.namespace.clone(),
            name: self.shared.name.clone(),
        }
    }

    /// One renewal: Ok(true) renewed, Ok(false) someone else holds the Lease (or it is gone).
    async fn renew_once(&self) -> Result<bool> {
        match self.try_acquire_or_renew().await? {
            Attempt::Leader => Ok(true),
            Attempt::Follower { .. } => Ok(false),
            // Someone wrote the Lease since I read it: look again at once.
            Attempt::Conflict => match self.try_acquire_or_renew().await? {
                Attempt::Leader => Ok(true),
                Attempt::Follower { .. } => Ok(false),
                Attempt::Conflict => Err(Error::Api {
                    verb: "update",
                    namespace: self.shared.namespace.clone(),
                    name: self.shared.name.clone(),
                    message: "conflict twice in a row while renewing".into(),
                }),
            },
        }
    }

    /// Whether the last read shows me as the holder (used so a renewal never re-creates a
    /// Lease that someone deleted, nor takes over one that changed hands).
    fn last_seen_mine(&self) -> bool {
        lock(&self.shared.observed)
            .as_ref()
            .is_some_and(|(l, _)| l.holder.as_deref() == Some(self.shared.identity.as_str()))
    }
}

/// Being the leader. [`Leadership::lost`] fires when leadership ends for any reason; the
/// holder must then start no new work.
pub struct Leadership {
    elector: LeaderElector,
    lost: CancellationToken,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("identity", &self.elector.identity())
            .field("lost", &self.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    fn start(elector: LeaderElector, renewed_at: Instant) -> Self {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(renew_loop(
            elector.clone(),
            renewed_at,
            lost.clone(),
            stop.clone(),
        ));
        Leadership {
            elector,
            lost,
            stop,
            task: Some(task),
        }
    }

    /// Cancelled at once when leadership is lost: a renewal failed past the renew deadline,
    /// another holder was seen, or this `Leadership` was released or dropped.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether leadership is lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// The elector (identity, holder).
    pub fn elector(&self) -> &LeaderElector {
        &self.elector
    }

    /// Graceful stop: stops renewing, fires `lost()`, and clears the holder (when it is still
    /// this elector) so a successor takes over at its next attempt instead of after the lease
    /// duration. Call it after the running work has finished.
    pub async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let was_lost = self.lost.is_cancelled();
        self.lost.cancel();
        let e = &self.elector;
        let s = &e.shared;
        if was_lost {
            tracing::info!(lease = %s.name, me = %s.identity, "leadership already lost; nothing to release");
            return Ok(());
        }
        let observed = e.observe().await?;
        let Some((prev, _)) = observed else {
            return Ok(());
        };
        if prev.holder.as_deref() != Some(s.identity.as_str()) {
            return Ok(());
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                resource_version: prev.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(next_spec(
                Some(&prev),
                Write::Release,
                &s.identity,
                Timestamp::now(),
                &s.timings,
            )),
        };
        match e
            .call(
                "update",
                s.api.replace(&s.name, &PostParams::default(), &lease),
            )
            .await?
        {
            Ok(written) => {
                e.wrote(&written);
                tracing::info!(lease = %s.name, namespace = %s.namespace, me = %s.identity, "released leadership");
                Ok(())
            }
            Err(err) if is_conflict(&err) => Ok(()),
            Err(err) => Err(e.err("update", &err)),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Stop renewing; the lease expires on its own (as after a crash).
        self.stop.cancel();
        self.lost.cancel();
    }
}

async fn renew_loop(
    elector: LeaderElector,
    mut renewed_at: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let s = &elector.shared;
    let timings = s.timings;
    let give_up = |why: &str| {
        tracing::warn!(lease = %s.name, namespace = %s.namespace, me = %s.identity, reason = why, "lost leadership");
        lost.cancel();
    };
    loop {
        let deadline = renewed_at + timings.renew_deadline;
        let wake = (Instant::now() + timings.retry_period).min(deadline);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if renewal_lost(renewed_at, Instant::now(), &timings) {
            give_up("no successful renewal within the renew deadline");
            return;
        }
        if !elector.last_seen_mine() {
            give_up("another instance holds the lease");
            return;
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout_at(deadline, elector.renew_once()) => r,
        };
        match outcome {
            Ok(Ok(true)) => renewed_at = started,
            Ok(Ok(false)) => {
                give_up("another instance holds the lease");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, me = %s.identity, "renewing the lease failed; retrying until the renew deadline");
            }
            Err(_) => {
                give_up("no successful renewal within the renew deadline");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn t() -> Timings {
        Timings::default()
    }

    fn held(holder: &str, renew: &str) -> LeaseSnapshot {
        LeaseSnapshot {
            holder: Some(holder.into()),
            lease_duration: Some(Duration::from_secs(15)),
            acquire_time: Some(ts("2026-01-01T00:00:00Z")),
            renew_time: Some(ts(renew)),
            transitions: 2,
            resource_version: Some("7".into()),
        }
    }

    #[test]
    fn timings_are_validated() {
        assert!(t().validate().is_ok());
        let ok_short = Timings {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1200),
            retry_period: Duration::from_millis(200),
        };
        assert!(ok_short.validate().is_ok());
        for bad in [
            Timings {
                retry_period: Duration::ZERO,
                ..t()
            },
            Timings {
                lease_duration: Duration::from_millis(500),
                renew_deadline: Duration::from_millis(300),
                retry_period: Duration::from_millis(100),
            },
            Timings {
                renew_deadline: Duration::from_secs(15),
                ..t()
            },
            Timings {
                retry_period: Duration::from_secs(9),
                ..t()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidTimings(_))),
                "{bad:?}"
            );
        }
        assert_eq!(t().lease_duration_seconds(), 15);
        assert_eq!(
            Timings {
                lease_duration: Duration::from_millis(2500),
                ..t()
            }
            .lease_duration_seconds(),
            3,
            "rounded up, never shorter than configured"
        );
    }

    #[test]
    fn decide_table() {
        let me = "me";
        let now = ts("2026-01-01T00:01:00Z");
        let free = LeaseSnapshot {
            holder: None,
            ..held("x", "2026-01-01T00:00:59Z")
        };
        let cases: Vec<(&str, Option<LeaseSnapshot>, Option<Duration>, Decision)> = vec![
            ("no lease", None, None, Decision::Create),
            ("free lease", Some(free), None, Decision::Acquire),
            (
                "mine, even if expired",
                Some(held("me", "2026-01-01T00:00:00Z")),
                None,
                Decision::Renew,
            ),
            (
                "other, renewed 5s ago",
                Some(held("other", "2026-01-01T00:00:55Z")),
                Some(Duration::from_secs(4)),
                Decision::Wait {
                    holder: "other".into(),
                    expires_at: ts("2026-01-01T00:01:11Z"),
                },
            ),
            (
                "other, renewTime old but record first seen 10s ago (clock skew)",
                Some(held("other", "2026-01-01T00:00:00Z")),
                Some(Duration::from_secs(10)),
                Decision::Wait {
                    holder: "other".into(),
                    expires_at: ts("2026-01-01T00:01:05Z"),
                },
            ),
            (
                "other, unchanged for 15s",
                Some(held("other", "2026-01-01T00:00:40Z")),
                Some(Duration::from_secs(15)),
                Decision::Acquire,
            ),
            (
                "other, renewTime in the future (its clock runs ahead)",
                Some(held("other", "2026-01-01T00:02:00Z")),
                Some(Duration::from_secs(60)),
                Decision::Wait {
                    holder: "other".into(),
                    expires_at: ts("2026-01-01T00:02:15Z"),
                },
            ),
            (
                "other, never observed: renewTime decides",
                Some(held("other", "2026-01-01T00:00:30Z")),
                None,
                Decision::Acquire,
            ),
        ];
        for (name, lease, observed, want) in cases {
            assert_eq!(
                decide(lease.as_ref(), me, now, observed, &t()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn expiry_uses_the_records_duration() {
        let mut l = held("other", "2026-01-01T00:00:00Z");
        l.lease_duration = Some(Duration::from_secs(60));
        assert_eq!(
            expires_at(&l, ts("2026-01-01T00:00:05Z"), None, &t()),
            Some(ts("2026-01-01T00:01:00Z"))
        );
        l.lease_duration = None;
        assert_eq!(
            expires_at(&l, ts("2026-01-01T00:00:05Z"), None, &t()),
            Some(ts("2026-01-01T00:00:15Z")),
            "falls back to the configured duration"
        );
        l.renew_time = None;
        l.acquire_time = None;
        assert_eq!(
            expires_at(
                &l,
                ts("2026-01-01T00:00:05Z"),
                Some(Duration::from_secs(3)),
                &t()
            ),
            Some(ts("2026-01-01T00:00:17Z")),
            "no times: the observation alone decides"
        );
        assert_eq!(
            expires_at(&l, ts("2026-01-01T00:00:05Z"), None, &t()),
            Some(Timestamp::MIN)
        );
        l.holder = None;
        assert_eq!(expires_at(&l, ts("2026-01-01T00:00:05Z"), None, &t()), None);
    }

    #[test]
    fn holder_alive_table() {
        let now = ts("2026-01-01T00:01:00Z");
        assert!(holder_alive(&held("a", "2026-01-01T00:00:50Z"), now));
        assert!(
            !holder_alive(&held("a", "2026-01-01T00:00:45Z"), now),
            "exactly expired"
        );
        assert!(!holder_alive(&held("a", "2026-01-01T00:00:00Z"), now));
        let mut released = held("a", "2026-01-01T00:00:59Z");
        released.holder = None;
        assert!(!holder_alive(&released, now));
        let mut no_times = held("a", "2026-01-01T00:00:59Z");
        no_times.renew_time = None;
        no_times.acquire_time = None;
        assert!(!holder_alive(&no_times, now));
        let mut acquire_only = no_times.clone();
        acquire_only.acquire_time = Some(ts("2026-01-01T00:00:58Z"));
        assert!(holder_alive(&acquire_only, now));
    }

    #[test]
    fn renewal_deadline() {
        let start = Instant::now();
        let tm = t();
        assert!(!renewal_lost(start, start + Duration::from_secs(9), &tm));
        assert!(renewal_lost(start, start + Duration::from_secs(10), &tm));
        assert!(!renewal_lost(start + Duration::from_secs(1), start, &tm));
    }

    #[test]
    fn next_spec_counts_transitions_and_releases() {
        let now = ts("2026-01-01T00:02:00Z");
        let tm = t();
        let other = held("other", "2026-01-01T00:00:00Z");

        let created = next_spec(None, Write::Acquire, "me", now, &tm);
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(MicroTime(now)));

        let taken = next_spec(Some(&other), Write::Acquire, "me", now, &tm);
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.renew_time, Some(MicroTime(now)));

        let mine = held("me", "2026-01-01T00:01:58Z");
        let renewed = next_spec(Some(&mine), Write::Renew, "me", now, &tm);
        assert_eq!(renewed.lease_transitions, Some(2));
        assert_eq!(
            renewed.acquire_time,
            Some(MicroTime(ts("2026-01-01T00:00:00Z")))
        );
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));

        let released = next_spec(Some(&mine), Write::Release, "me", now, &tm);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(2));

        // Taking a released lease counts a transition (the holder changes from none to me).
        let free = LeaseSnapshot::from_lease(&Lease {
            metadata: ObjectMeta::default(),
            spec: Some(released),
        });
        assert_eq!(free.holder, None);
        let retaken = next_spec(Some(&free), Write::Acquire, "next", now, &tm);
        assert_eq!(retaken.lease_transitions, Some(3));
    }

    #[test]
    fn snapshot_reads_a_lease_and_compares_records() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "strata-leader", "resourceVersion": "42"},
            "spec": {
                "holderIdentity": "pod-a-1234",
                "leaseDurationSeconds": 15,
                "renewTime": "2026-01-01T00:00:10.000000Z",
                "acquireTime": "2026-01-01T00:00:00.000000Z",
                "leaseTransitions": 4
            }
        }))
        .unwrap();
        let s = LeaseSnapshot::from_lease(&lease);
        assert_eq!(s.holder.as_deref(), Some("pod-a-1234"));
        assert_eq!(s.lease_duration, Some(Duration::from_secs(15)));
        assert_eq!(s.renew_time, Some(ts("2026-01-01T00:00:10Z")));
        assert_eq!(s.transitions, 4);
        assert_eq!(s.resource_version.as_deref(), Some("42"));

        let mut same = s.clone();
        same.resource_version = Some("43".into());
        assert!(
            s.same_record(&same),
            "resourceVersion alone is not a new record"
        );
        let mut renewed = s.clone();
        renewed.renew_time = Some(ts("2026-01-01T00:00:12Z"));
        assert!(!s.same_record(&renewed));

        let empty: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "spec": {"holderIdentity": ""}
        }))
        .unwrap();
        assert_eq!(LeaseSnapshot::from_lease(&empty).holder, None);
    }

    #[test]
    fn identities_get_a_random_suffix() {
        let mut rng = SeededRng::new(3);
        let a = identity_with_suffix("strata-7d9f", &mut rng);
        let b = identity_with_suffix("strata-7d9f", &mut rng);
        assert!(a.starts_with("strata-7d9f-"), "{a}");
        assert_eq!(a.len(), "strata-7d9f-".len() + 8);
        assert_ne!(a, b);
        assert!(!default_identity().is_empty());
        assert_ne!(default_identity(), default_identity());
    }
}
