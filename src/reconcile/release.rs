//! One release of a revision: observe, decide, run helm, watch progress.
//!
//! An *attempt* is a loop around strata-core's pure `reconcile::next_action` (decisions in
//! core, execution here): observe the release through the [`HelmDriver`] (helm's storage, no
//! helm process), decide (with the retry accounting and the time), execute the action through
//! the driver, add it to the attempt's `performed` list, observe again, until the decision runs
//! no helm; then record the outcome (status, metrics, Events, the retry book). Actions:
//!
//! - NoOp -> Ready at once (no helm process, no write); Install/Upgrade -> write the merged
//!   values to a 0600 file and run `helm upgrade --install --wait` with the profile's timeout,
//!   then observe again: Ready only when helm's release record is deployed too (helm exits 0
//!   when the API fails its last write, leaving the record pending; that is recovered).
//! - Recovery of a release left pending by an interrupted helm (only while this agent may
//!   write: it holds the Lease, or runs without leader election and is the only writer):
//!   `pending-install`/`uninstalling` -> `helm uninstall`, then install; `pending-upgrade` /
//!   `pending-rollback` -> mark the interrupted record failed, `helm rollback` to the last
//!   deployed revision, then upgrade.
//! - Remediation after a failed attempt, per profile: `retry` (nothing, next attempt after the
//!   backoff), `rollback` (to the last deployed revision), `uninstall` (only when chosen).
//! - Backoff after a failed attempt (no helm until the next attempt is due), and Stalled after
//!   `remediation.retries` failed attempts or a permanent error, until the release changes or
//!   an operator asks for a retry. Both are core's decisions.
//!
//! Every recovery and remediation is logged, counted (`strata_recoveries_total`,
//! `strata_remediations_total`), recorded in the release's status (`lastRecovery`,
//! `lastRemediation`) and announced as an Event (`Recovered`, `Remediated`, `...Failed`).
//!
//! While helm runs, a poll every second reads the release record helm is writing and its
//! manifest objects from the cluster: the phase goes from Installing (helm started, objects
//! being written) to Waiting (every manifest object exists, helm waits for readiness), with
//! the not-ready objects and their reasons in the status (for a kind with a custom health
//! check, the check's reason).
//!
//! The health gate: before a NoOp concludes Ready (right after helm succeeded, or for an
//! unchanged release), the objects of the release's manifest whose kind has a custom CEL
//! health check (the profile's `healthChecks`) must pass it. They are read every second with
//! the same reader, within the attempt's deadline (the release's timeout from the start of the
//! attempt); the release stays Waiting with them in `notReady`. A `failed` expression or the
//! deadline fails the attempt (counted like a failed helm); a shutdown ends the wait without
//! counting. A release without such objects is never read again: the manifest comes from the
//! record the decision already read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::layers::{HelmSlot, ReleaseResult, ReleaseRunner};
use crate::executor::helm::{Helm, UpgradeRequest};
use crate::executor::{HelmDriver, HelmExecutor};
use crate::observe::metrics::Metrics;
use crate::observe::objects::{ClusterReader, ObjectRef};
use crate::observe::status::{NotReady, ReleasePhase, StatusStore, now_rfc3339};
use crate::observe::watches::{TrackSpec, Tracked, Watches};
use crate::reconcile::retry::{ErrorClass, Failure, Next, RetryBook, RetryPolicy, SeededRng};
use crate::source::revision::ReleaseJob;

/// The release runner: observe, decide (core), execute (the driver), record.
pub struct Runner<D = HelmExecutor> {
    retries: Arc<RetryBook>,
    policy: RetryPolicy,
    rng: std::sync::Mutex<SeededRng>,
    driver: Arc<D>,
    /// Reads a release's live objects while helm runs (`None`: no progress watching).
    progress: Option<Arc<ClusterReader>>,
    status: StatusStore,
    metrics: Arc<Metrics>,
    default_timeout: Duration,
    /// First and longest wait before repeating a step the unavailable API failed.
    blip_backoff: (Duration, Duration),
    /// The agent's namespace, recorded on every release (`strata.io/agent`).
    agent: String,
    /// Cancelled on shutdown: ends a wait for readiness (helm is never killed by it).
    shutdown: CancellationToken,
    /// The shared watches live health is read from (`None` without a cluster: unit tests).
    watches: Option<Watches>,
    /// The last release record read from helm's storage per release: reused while the
    /// metadata watch of the storage says the newest record is still that one (steady state
    /// costs no request).
    records: std::sync::Mutex<
        std::collections::HashMap<(String, String), crate::executor::releases::ReleaseRecord>,
    >,
    /// The current apply's token: a child of `shutdown`, cancelled too when a newer revision
    /// supersedes the one being applied ([`Runner::begin_apply`]).
    apply: std::sync::Mutex<CancellationToken>,
}

/// Waits before repeating a step that failed because the Kubernetes API was unavailable:
/// doubling from the first wait up to the longest, until the deadline (the release's timeout).
/// While the API server says it is ready (`/readyz`), the error was a sporadic one of a
/// working server (under load a helm run of many requests often meets one) and the step is
/// repeated after a short wait instead, growing by a quarter up to [`QUICK_MAX`], a limited number
/// of times ([`QUICK_REPEATS`]) before the waits double anyway (an error that keeps coming
/// from a ready server is not hammered for the whole timeout).
struct Blips {
    next: Duration,
    max: Duration,
    deadline: Instant,
    count: u32,
    quick_left: u32,
    quick_next: Duration,
    started: Instant,
}

/// First and longest wait before resolving again an object of a release that has no watch
/// while its readiness is awaited.
const RETRACK_FIRST: Duration = Duration::from_millis(250);
const RETRACK_MAX: Duration = Duration::from_secs(5);

/// Steps repeated after a short wait while the API server is ready, per attempt.
const QUICK_REPEATS: u32 = 24;
/// The first wait before repeating a step whose error came from a ready API server.
const QUICK_WAIT: Duration = Duration::from_millis(150);
/// The longest such wait.
const QUICK_MAX: Duration = Duration::from_millis(500);

impl Blips {
    fn new((first, max): (Duration, Duration), deadline: Instant) -> Self {
        Blips {
            next: first,
            max,
            deadline,
            count: 0,
            quick_left: QUICK_REPEATS,
            quick_next: QUICK_WAIT.min(first),
            started: Instant::now(),
        }
    }

    /// The next wait, or `None` when it would pass the deadline. `server_ready`: the API
    /// server answered its readiness check just now.
    fn wait(&mut self, server_ready: bool) -> Option<Duration> {
        let quick = server_ready && self.quick_left > 0;
        let wait = if quick { self.quick_next } else { self.next };
        if Instant::now() + wait > self.deadline {
            return None;
        }
        if quick {
            self.quick_left -= 1;
            self.quick_next = self
                .quick_next
                .mul_f64(1.25)
                .min(QUICK_MAX.min(self.max).max(self.quick_next));
        } else {
            self.next = (self.next * 2).min(self.max);
        }
        self.count += 1;
        Some(wait)
    }

    /// The failure once the deadline passed.
    fn gave_up(&self, last: &str) -> String {
        format!(
            "the Kubernetes API stayed unavailable for {:.0?} ({} retries in place, until the release's timeout); last error: {last}",
            self.started.elapsed(),
            self.count
        )
    }
}

impl Runner<HelmExecutor> {
    /// The real runner: helm and the cluster's release storage, with progress watching.
    pub fn new(
        helm: Helm,
        client: kube::Client,
        status: StatusStore,
        metrics: Arc<Metrics>,
        default_timeout: Duration,
        retries: Arc<RetryBook>,
    ) -> Self {
        let progress = Some(Arc::new(ClusterReader::new(client.clone())));
        Self::with_driver(
            HelmExecutor::new(helm, client),
            progress,
            status,
            metrics,
            default_timeout,
            retries,
        )
    }
}

impl<D: HelmDriver> Runner<D> {
    /// A runner on any [`HelmDriver`] (unit tests use a fake one, without progress).
    pub fn with_driver(
        driver: D,
        progress: Option<Arc<ClusterReader>>,
        status: StatusStore,
        metrics: Arc<Metrics>,
        default_timeout: Duration,
        retries: Arc<RetryBook>,
    ) -> Self {
        let watches = progress
            .as_ref()
            .map(|reader| Watches::new(reader.client(), reader.clone()));
        let shutdown = CancellationToken::new();
        Self {
            retries,
            policy: RetryPolicy::default(),
            rng: std::sync::Mutex::new(crate::reconcile::retry::entropy_rng()),
            driver: Arc::new(driver),
            watches,
            records: Default::default(),
            apply: std::sync::Mutex::new(shutdown.child_token()),
            shutdown,
            progress,
            status,
            metrics,
            default_timeout,
            blip_backoff: (Duration::from_millis(500), Duration::from_secs(8)),
            agent: "strata-system".into(),
        }
    }

    /// The agent's namespace, recorded on every release it installs.
    pub fn with_agent(mut self, namespace: &str) -> Self {
        self.agent = namespace.to_string();
        self
    }

    /// The token whose cancellation (the agent's shutdown) ends a wait for custom health
    /// checks; the release then fails without counting and is checked again on the next run.
    pub fn set_shutdown(&mut self, token: CancellationToken) {
        *self.apply.lock().unwrap_or_else(|e| e.into_inner()) = token.child_token();
        self.shutdown = token;
    }

    /// A new apply starts: its token ends the readiness waits of this apply when it is
    /// cancelled (a newer revision supersedes it) or at shutdown. helm is never killed by it.
    pub fn begin_apply(&self) -> CancellationToken {
        let token = self.shutdown.child_token();
        *self.apply.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }

    /// The token that ends the current apply's waits.
    fn stop(&self) -> CancellationToken {
        self.apply.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why a wait ended early: shutdown or a newer revision.
    fn stop_reason(&self) -> &'static str {
        if self.shutdown.is_cancelled() {
            "shutdown"
        } else {
            "a newer revision supersedes this one"
        }
    }

    /// The shared watches (live health between revisions reads them too).
    pub fn watches(&self) -> Option<Watches> {
        self.watches.clone()
    }

    /// The waits before repeating a step the unavailable API failed (tests shorten them).
    pub fn with_blip_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.blip_backoff = (first, max);
        self
    }

    /// Record a moment of unavailable API and wait before the step is repeated; `None` when
    /// the release's timeout has passed.
    async fn blip(&self, job: &ReleaseJob, blips: &mut Blips, error: &str) -> Option<()> {
        let wait = blips.wait(self.server_ready().await)?;
        tracing::warn!(release = %job.release, namespace = %job.namespace, error, retry_in_ms = wait.as_millis() as u64, "the Kubernetes API is unavailable; repeating the step");
        self.metrics.transient_retry();
        self.set(job, |r| {
            r.transient_retries += 1;
            r.last_transient_error = Some(error.to_string());
            r.message = Some(format!(
                "the Kubernetes API is unavailable; repeating the step in {wait:.1?}: {error}"
            ));
        });
        tokio::time::sleep(wait).await;
        Some(())
    }

    /// Whether the API server answers its readiness check (`GET /readyz`, 1 s at most): it
    /// does not when it is down, restarting or has lost its storage, and then a failed step
    /// backs off; a sporadic error of a ready server is repeated promptly.
    async fn server_ready(&self) -> bool {
        let Some(reader) = &self.progress else {
            return false;
        };
        let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
            return false;
        };
        let client = reader.client();
        let check = client.request_text(request);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), check).await,
            Ok(Ok(_))
        )
    }

    fn set(&self, job: &ReleaseJob, f: impl FnOnce(&mut crate::observe::status::ReleaseStatus)) {
        self.status.update_release(&job.namespace, &job.release, f);
    }

    /// One attempt at a release: observe (helm's storage) -> decide (core's `next_action`) ->
    /// execute (the helm door) -> record (status and retry book), until the release is Ready
    /// or the decision says to stop.
    async fn run_inner(&self, job: &ReleaseJob, slot: &mut HelmSlot) -> ReleaseResult {
        use strata_core::reconcile::State::InSync;
        use strata_core::reconcile::{Action, Inputs, LockState, UpgradeReason};
        let desired = job.desired(self.default_timeout);
        let content_digest = desired.content_digest.clone().unwrap_or_default();
        self.set(job, |r| r.content_digest = Some(content_digest.clone()));
        // This runner only runs while this agent may write releases: it holds the Lease
        // (`--leader-elect`; work stops at once when the Lease is lost), or there is no leader
        // election and it is by definition the only writer.
        let mut inputs = Inputs::new(LockState::HeldByUs, job.remediation);
        inputs.retry = self
            .retries
            .begin(&job.namespace, &job.release, &Self::fingerprint(job));
        // The failure of this attempt, recorded in the retry accounting when the attempt ends.
        let mut failure: Option<Failure> = None;
        // Moments of an unavailable API, repeated in place until the release's timeout.
        let deadline = Instant::now() + job.timeout.unwrap_or(self.default_timeout);
        let mut blips = Blips::new(self.blip_backoff, deadline);
        if let Err(end) = self.lower_layers_ready(job, deadline).await {
            return end;
        }
        // next_action never repeats an action within an attempt: a handful of steps at most
        // (a step repeated because the API was unavailable is not counted).
        let mut steps = 0;
        // helm exited 0 in the step before: its release record must now be settled.
        let mut helm_succeeded = false;
        // helm wrote the release without waiting (no post hooks): strata's own wait, in the
        // health gate, is the readiness wait of that helm run.
        let mut strata_waits = false;
        // Drift (objects of the deployed manifest missing or changed) is read once, before
        // the first action, and only for a release that is otherwise in sync.
        let mut drift_checked = false;
        while steps < 8 {
            let (observed, manifest) = match self.observe(job, &mut inputs).await {
                Ok(observed) => observed,
                Err(f) if f.class == ErrorClass::Unavailable => {
                    match self.blip(job, &mut blips, &f.message).await {
                        Some(()) => continue,
                        None => return self.fail(job, blips.gave_up(&f.message)),
                    }
                }
                Err(f) => return self.fail(job, f.message),
            };
            let after_success = std::mem::take(&mut helm_succeeded);
            if let Some(status) = observed
                .as_ref()
                .map(|o| &o.status)
                .filter(|s| after_success && s.is_pending())
            {
                // helm exits 0 when the API fails only its last write, leaving the record
                // pending: the API's fault, not the release's. The record is recovered like
                // an interrupted helm's, and that step is not counted against the attempt.
                let message = format!(
                    "helm finished, but the API failed its last write and left the release record {status}"
                );
                inputs.performed.pop();
                steps -= 1;
                if self.blip(job, &mut blips, &message).await.is_none() {
                    return self.fail(job, blips.gave_up(&message));
                }
                continue;
            }
            if !drift_checked && inputs.performed.is_empty() {
                drift_checked = true;
                if strata_core::reconcile::observe(&desired, observed.as_ref()) == InSync {
                    self.check_drift(job, &manifest, &mut inputs).await;
                }
            }
            let action = strata_core::reconcile::next_action(
                &desired,
                observed.as_ref(),
                &inputs,
                jiff::Timestamp::now(),
            );
            tracing::debug!(release = %job.release, namespace = %job.namespace, action = %action, "decided");
            if matches!(action, strata_core::reconcile::Action::NoOp) {
                // Waiting for readiness runs no helm: the next release may start meanwhile.
                slot.release();
                match self
                    .health_gate(job, &manifest, deadline, !inputs.performed.is_empty())
                    .await
                {
                    Ok(()) => {}
                    Err(GateEnd::Ended(end)) => return end,
                    Err(GateEnd::NotReady(message)) if std::mem::take(&mut strata_waits) => {
                        // What helm's own --wait does when it fails: the release's record is
                        // marked failed, so the profile's remediation and the retry rules
                        // apply exactly as after a failed helm.
                        if let Some(revision) = observed.as_ref().map(|o| u64::from(o.revision))
                            && let Err(e) = self
                                .driver
                                .mark_failed(
                                    &job.namespace,
                                    &job.release,
                                    revision,
                                    &format!("not ready (strata's readiness wait): {message}"),
                                )
                                .await
                        {
                            tracing::warn!(release = %job.release, namespace = %job.namespace, error = %e, "cannot mark the release record failed after its readiness wait failed");
                        }
                        tracing::error!(release = %job.release, namespace = %job.namespace, error = %message, "release not ready");
                        inputs.retry.last_error = Some(message.clone());
                        if failure.is_none() {
                            failure = Some(Failure::transient(message));
                        }
                        continue;
                    }
                    Err(GateEnd::NotReady(message)) => return self.health_failed(job, message),
                }
            }
            if let Some(end) = self.conclude(job, &action, observed.as_ref(), &inputs, &mut failure)
            {
                return end;
            }
            let Some(kind) = action.kind() else {
                return self.fail(job, format!("no way to run `{action}`"));
            };
            inputs.performed.push(kind);
            steps += 1;
            let previous = observed.as_ref().map(|o| u64::from(o.revision));
            slot.hold().await;
            match self.execute(job, &action, kind, previous).await {
                Err(f) if f.class == ErrorClass::Unavailable => {
                    // Not the release's fault: the same step again after a short wait, not
                    // counted, no remediation.
                    inputs.performed.pop();
                    steps -= 1;
                    if self.blip(job, &mut blips, &f.message).await.is_none() {
                        return self.fail(job, blips.gave_up(&f.message));
                    }
                }
                // helm says the release is applied. Its release record must say so too: helm
                // exits 0 when the API fails only its last write (the record stays
                // `pending-install`/`pending-upgrade`), so the loop observes again: in sync is
                // NoOp (Ready), a record left pending is recovered like an interrupted helm.
                Ok(()) => {
                    helm_succeeded = true;
                    strata_waits = action_runs_helm_upgrade(&action) && !self.helm_waits(job);
                    if let Action::Upgrade {
                        reason: reason @ UpgradeReason::Drift { .. },
                    } = &action
                    {
                        self.metrics.drift_corrected();
                        tracing::info!(release = %job.release, namespace = %job.namespace, %reason, "drift corrected");
                        self.set(job, |r| {
                            let message = format!(
                                "{reason}; written again by helm upgrade --install{}",
                                r.message
                                    .as_deref()
                                    .map(|m| format!(" ({m})"))
                                    .unwrap_or_default()
                            );
                            r.last_drift = Some(crate::observe::status::ActionRecord {
                                kind: "drift".into(),
                                at: now_rfc3339(),
                                message: message.clone(),
                            });
                            r.message = Some(message);
                        });
                    }
                }
                Err(f) => {
                    inputs.retry.last_error = Some(f.message.clone());
                    // The first failure of the attempt is the one to report.
                    if failure.is_none() {
                        failure = Some(f);
                    }
                }
            }
        }
        let f = failure.unwrap_or_else(|| Failure::transient("too many steps in one attempt"));
        let message = f.message.clone();
        self.record_failure(job, f);
        self.fail(job, message)
    }

    /// Observe: the release's latest record in helm's storage and, when it is not settled, the
    /// last deployed revision a rollback could return to (into `inputs`).
    async fn observe(
        &self,
        job: &ReleaseJob,
        inputs: &mut strata_core::reconcile::Inputs,
    ) -> Result<(Option<strata_core::reconcile::ObservedRelease>, String), Failure> {
        use strata_core::reconcile::ReleaseStatus;
        let key = (job.namespace.clone(), job.release.clone());
        // The first look of an attempt may use the record read before, when the watch of
        // helm's storage says the newest record is still that one, and reads nothing when
        // the watch says helm has no record of the release (a first install); after an
        // action, always read (the watch may not have seen helm's write yet).
        let head = self
            .watches
            .as_ref()
            .filter(|_| inputs.performed.is_empty())
            .and_then(|w| w.record_head(&job.namespace, &job.release));
        let cached = head.as_ref().and_then(|head| {
            let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
            match (head, records.get(&key)) {
                (None, _) => {
                    records.remove(&key);
                    Some(None)
                }
                (Some((version, status)), Some(r))
                    if r.revision == *version && r.status == *status =>
                {
                    Some(Some(r.clone()))
                }
                _ => None,
            }
        });
        let record = match cached {
            Some(record) => record,
            None => {
                let read = self
                    .driver
                    .latest(&job.namespace, &job.release)
                    .await
                    .map_err(|e| Failure {
                        class: e.class(),
                        message: format!("cannot read the release state: {e}"),
                        retry_after: None,
                    })?;
                // Kept for the next look while the watch says it is still the newest.
                let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
                match &read {
                    Some(r) => {
                        records.insert(key, r.clone());
                    }
                    None => {
                        records.remove(&key);
                    }
                }
                read
            }
        };
        let observed = record.as_ref().map(|r| r.observed());
        let settled = |o: &strata_core::reconcile::ObservedRelease| {
            matches!(
                o.status,
                ReleaseStatus::Deployed | ReleaseStatus::Uninstalled
            )
        };
        if observed.as_ref().is_some_and(|o| !settled(o)) {
            inputs.last_deployed_revision = match self
                .driver
                .history(&job.namespace, &job.release)
                .await
            {
                Ok(h) => {
                    strata_core::reconcile::last_deployed_revision(h.iter().map(|(r, s)| (*r, s)))
                }
                Err(e) => {
                    tracing::warn!(release = %job.release, namespace = %job.namespace, error = %e, "release history not readable");
                    None
                }
            };
        }
        // The manifest is kept for the health gate (objects of kinds with a custom check).
        Ok((observed, record.map(|r| r.manifest).unwrap_or_default()))
    }

    /// Record the decisions that end an attempt without running helm (up to date, blocked,
    /// stalled, backing off, or a failure to account for); `None` for an action to execute.
    fn conclude(
        &self,
        job: &ReleaseJob,
        action: &strata_core::reconcile::Action,
        observed: Option<&strata_core::reconcile::ObservedRelease>,
        inputs: &strata_core::reconcile::Inputs,
        failure: &mut Option<Failure>,
    ) -> Option<ReleaseResult> {
        use strata_core::reconcile::Action;
        Some(match action {
            Action::NoOp => {
                let revision = observed.map(|o| u64::from(o.revision));
                let fresh = inputs.performed.is_empty();
                self.set(job, |r| {
                    if fresh {
                        r.action = Some("none".into());
                        r.reason = Some(
                            "content digest unchanged (chart, values and helm options)".into(),
                        );
                    }
                    r.helm_revision = revision;
                    r.not_ready.clear();
                    if r.phase != ReleasePhase::Ready {
                        r.phase = ReleasePhase::Ready;
                        r.ready_at = Some(now_rfc3339());
                        r.message =
                            Some("already deployed at this chart version and values".into());
                    }
                });
                tracing::debug!(release = %job.release, namespace = %job.namespace, "up to date: helm not run");
                self.retries.succeeded(&job.namespace, &job.release);
                ReleaseResult::Ready
            }
            Action::Blocked { reason } => {
                // e.g. a release left pending with no revision to roll back to: no helm
                // runs; the reason says what a user can do.
                self.set(job, |r| r.action = Some("blocked".into()));
                self.fail(job, reason.clone())
            }
            Action::Stalled { reason } => {
                self.set(job, |r| r.action = Some("stalled".into()));
                self.fail_with(job, format!("stalled: {reason}"), false)
            }
            Action::Backoff { would, reason, .. } => {
                // Backing off after failures: no helm process now, no new failure counted.
                self.set(job, |r| r.action = Some(would.as_str().to_string()));
                self.fail_with(job, reason.clone(), false)
            }
            Action::AwaitRetry { reason } => {
                let f = failure
                    .take()
                    .unwrap_or_else(|| Failure::transient(reason.clone()));
                // Without a helm failure the reason is the whole story: said once.
                let first = if f.message == *reason {
                    String::new()
                } else {
                    format!("{}; ", f.message)
                };
                let message = match self.record_failure(job, f) {
                    Next::RetryAt { at, .. } => {
                        format!("{first}{reason} (next attempt not before {at})")
                    }
                    Next::Stalled { reason } => format!("stalled: {reason}"),
                };
                self.fail(job, message)
            }
            _ => return None,
        })
    }

    /// Execute: one decided action through the helm door (an upgrade, or a recovery or
    /// remediation step, each recorded in status as it runs).
    async fn execute(
        &self,
        job: &ReleaseJob,
        action: &strata_core::reconcile::Action,
        kind: strata_core::reconcile::ActionKind,
        previous: Option<u64>,
    ) -> Result<(), Failure> {
        use strata_core::reconcile::Action;
        let timeout = job.timeout.unwrap_or(self.default_timeout);
        match action {
            Action::Install { reason } => self.helm_upgrade(job, "install", reason, previous).await,
            Action::Upgrade { reason } => {
                self.helm_upgrade(job, "upgrade", &reason.to_string(), previous)
                    .await
            }
            Action::RecoverPendingInstall { reason } => {
                self.uninstall(job, kind, reason, timeout).await?;
                // The uninstall removed every revision: the install starts afresh.
                let r = self.helm_upgrade(job, kind.as_str(), reason, None).await;
                self.record_step(job, kind, reason, &r);
                r
            }
            Action::RollbackThenUpgrade {
                to_revision,
                reason,
            } => {
                self.unlock(job, kind, reason, previous).await?;
                self.rollback(job, kind, *to_revision, reason, timeout)
                    .await?;
                let after = previous.map(|p| p + 1);
                let r = self.helm_upgrade(job, kind.as_str(), reason, after).await;
                self.record_step(job, kind, reason, &r);
                r
            }
            Action::RemediateRollback {
                to_revision,
                reason,
            } => {
                self.rollback(job, kind, *to_revision, reason, timeout)
                    .await?;
                self.record_action(job, kind, reason, None);
                Ok(())
            }
            Action::RemediateUninstall { reason } => {
                self.uninstall(job, kind, reason, timeout).await?;
                self.record_action(job, kind, reason, None);
                Ok(())
            }
            other => Err(Failure::permanent(format!("no way to run `{other}`"))),
        }
    }

    /// `helm uninstall` as a recovery or remediation step.
    async fn uninstall(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        reason: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        self.step_started(job, kind, reason);
        let started = Instant::now();
        let result = self
            .driver
            .uninstall(&job.release, &job.namespace, timeout)
            .await;
        self.metrics
            .helm_command("uninstall", started.elapsed(), result.is_err());
        result.map_err(|e| self.step_failed(job, kind, reason, &e))
    }

    /// Mark the record an interrupted helm left pending as failed (helm's own commands never
    /// change it), so that no record stays pending once the release is recovered.
    async fn unlock(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        reason: &str,
        revision: Option<u64>,
    ) -> Result<(), Failure> {
        let Some(revision) = revision else {
            return Ok(());
        };
        let description = format!(
            "interrupted while pending; marked failed by strata before recovering ({kind})"
        );
        match self
            .driver
            .mark_failed(&job.namespace, &job.release, revision, &description)
            .await
        {
            Ok(changed) => {
                tracing::info!(release = %job.release, namespace = %job.namespace, revision, changed, "interrupted record marked failed");
                Ok(())
            }
            Err(e) => {
                let failure = Failure {
                    class: e.class(),
                    message: e.to_string(),
                    retry_after: None,
                };
                if failure.class != ErrorClass::Unavailable {
                    self.record_action(job, kind, reason, Some(&failure));
                }
                Err(failure)
            }
        }
    }

    /// `helm rollback` to `to_revision` as a recovery or remediation step.
    async fn rollback(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        to_revision: u32,
        reason: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        self.step_started(job, kind, reason);
        let started = Instant::now();
        let result = self
            .driver
            .rollback(
                &job.release,
                &job.namespace,
                Some(u64::from(to_revision)),
                timeout,
            )
            .await;
        self.metrics
            .helm_command("rollback", started.elapsed(), result.is_err());
        result.map_err(|e| self.step_failed(job, kind, reason, &e))
    }

    fn step_started(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        reason: &str,
    ) {
        tracing::warn!(release = %job.release, namespace = %job.namespace, action = kind.as_str(), reason, "running {}", kind.as_str());
        self.set(job, |r| {
            r.phase = ReleasePhase::Installing;
            r.action = Some(kind.as_str().to_string());
            r.started_at = Some(now_rfc3339());
            r.ready_at = None;
            r.message = Some(format!("{kind}: {reason}"));
            r.not_ready.clear();
        });
    }

    fn step_failed(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        reason: &str,
        e: &crate::executor::helm::Error,
    ) -> Failure {
        let message = e
            .helm_message()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        let failure = Failure {
            class: e.kind().map_or(ErrorClass::Transient, |k| k.class()),
            message: format!(
                "{kind} of release {}/{} failed: {message}",
                job.namespace, job.release
            ),
            retry_after: None,
        };
        if failure.class != ErrorClass::Unavailable {
            // An unavailable API is retried in place, not a failed recovery or remediation.
            self.record_action(job, kind, reason, Some(&failure));
        }
        failure
    }

    /// Record the outcome of a recovery's last step, unless the API was only unavailable (the
    /// step is then repeated in place).
    fn record_step(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        reason: &str,
        result: &Result<(), Failure>,
    ) {
        match result {
            Err(f) if f.class == ErrorClass::Unavailable => {}
            other => self.record_action(job, kind, reason, other.as_ref().err()),
        }
    }

    /// Log, count, show in the status and announce (Event) a recovery or remediation.
    fn record_action(
        &self,
        job: &ReleaseJob,
        kind: strata_core::reconcile::ActionKind,
        reason: &str,
        failed: Option<&Failure>,
    ) {
        let (outcome, event) = match (failed, kind.is_recovery()) {
            (None, true) => ("succeeded".to_string(), "Recovered"),
            (None, false) => ("done".to_string(), "Remediated"),
            (Some(f), true) => (format!("failed: {}", f.message), "RecoveryFailed"),
            (Some(f), false) => (format!("failed: {}", f.message), "RemediationFailed"),
        };
        let message = format!("{kind}: {reason}; {outcome}");
        if failed.is_some() {
            tracing::error!(release = %job.release, namespace = %job.namespace, action = kind.as_str(), "{message}");
        } else {
            tracing::warn!(release = %job.release, namespace = %job.namespace, action = kind.as_str(), "{message}");
        }
        self.metrics.recovery(kind, failed.is_none());
        let record = crate::observe::status::ActionRecord {
            kind: kind.as_str().to_string(),
            at: now_rfc3339(),
            message: message.clone(),
        };
        self.set(job, |r| {
            if kind.is_recovery() {
                r.last_recovery = Some(record);
            } else {
                r.last_remediation = Some(record);
            }
        });
        self.status
            .announce(&job.namespace, &job.release, event, message);
    }

    async fn helm_upgrade(
        &self,
        job: &ReleaseJob,
        verb: &str,
        reason: &str,
        previous_revision: Option<u64>,
    ) -> Result<(), Failure> {
        let values_file = match self
            .driver
            .write_values(&job.namespace, &job.release, &job.values)
        {
            Ok(p) => p,
            Err(e) => return Err(Failure::transient(e.to_string())),
        };
        let timeout = job.timeout.unwrap_or(self.default_timeout);
        self.status
            .update(|s| s.phase = crate::observe::status::OverallPhase::Progressing);
        let content = self.content_digest(job);
        self.set(job, |r| {
            r.phase = ReleasePhase::Installing;
            r.action = Some(verb.to_string());
            r.reason = Some(reason.to_string());
            r.attempts += 1;
            r.started_at = Some(now_rfc3339());
            r.ready_at = None;
            r.message = Some(format!(
                "helm upgrade --install ({reason}; content digest {content})"
            ));
            r.not_ready.clear();
        });
        tracing::info!(release = %job.release, namespace = %job.namespace, action = verb, reason, "running helm");
        let stop = CancellationToken::new();
        let watcher = self.watches.clone().map(|watches| {
            tokio::spawn(
                watch_progress(
                    watches,
                    self.status.clone(),
                    Watched {
                        namespace: job.namespace.clone(),
                        release: job.release.clone(),
                        previous_revision,
                        checks: job.health_checks.clone(),
                        drift: job.drift.clone(),
                    },
                    stop.clone(),
                )
                .in_current_span(),
            )
        });
        let options = self.helm_options(job);
        let request = UpgradeRequest {
            release: job.release.clone(),
            namespace: job.namespace.clone(),
            chart: job.chart_path.clone(),
            values_file,
            timeout,
            create_namespace: options.create_namespace,
            wait: options.wait && self.helm_waits(job),
            labels: strata_core::digest::release_labels(
                &self.agent,
                &job.profile,
                job.layer,
                &job.chart_digest,
                &self.content_digest(job),
            ),
        };
        let started = Instant::now();
        let result = self.driver.upgrade_install(&request).await;
        stop.cancel();
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        self.metrics
            .helm_command("upgrade", started.elapsed(), result.is_err());
        match result {
            Ok(info) => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                // With watches, the health gate right after decides Ready: every object of
                // the manifest live-ready (helm's wait may not cover custom resources).
                let gated = self.watches.is_some();
                self.set(job, |r| {
                    if !gated {
                        r.phase = ReleasePhase::Ready;
                        r.ready_at = Some(now_rfc3339());
                    }
                    r.helm_revision = Some(info.revision);
                    r.last_ready_ms = Some(ms);
                    r.message = Some(if info.description.is_empty() {
                        format!("{verb} complete")
                    } else {
                        info.description.clone()
                    });
                    r.not_ready.clear();
                });
                tracing::info!(release = %job.release, namespace = %job.namespace, revision = info.revision, "helm finished");
                Ok(())
            }
            Err(e) => {
                let message = e
                    .helm_message()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string());
                // The phase becomes Failed when the attempt ends (after any remediation).
                tracing::error!(release = %job.release, namespace = %job.namespace, action = verb, error = %message, "helm failed");
                Err(match e.kind() {
                    Some(kind) => Failure {
                        class: kind.class(),
                        message,
                        retry_after: None,
                    },
                    None => Failure::transient(message),
                })
            }
        }
    }

    /// Drift of an otherwise unchanged release: its live objects against the manifest helm
    /// stored (see [`crate::observe::live::find_drift`]), read from the shared watches (the
    /// release tracks its objects; a watch that has not listed yet is waited for briefly,
    /// then the objects are read directly: a GET each, or a LIST per kind and namespace).
    /// Recorded in the release's status, the gauge and (mode `warn`) an Event; in mode
    /// `correct` the missing and changed objects go into `inputs`, so the decision upgrades
    /// with reason drift. Nothing is read in mode `ignore`, nor without a cluster.
    async fn check_drift(
        &self,
        job: &ReleaseJob,
        manifest: &str,
        inputs: &mut strata_core::reconcile::Inputs,
    ) {
        use crate::observe::live::{
            DriftInput, drift_objects, find_drift, record_drift, watched_drift,
        };
        use strata_core::drift::DriftMode;
        let mode = job.drift.mode;
        if mode == DriftMode::Ignore {
            self.set(job, |r| r.drift = None);
            self.metrics
                .drifted_objects(&job.namespace, &job.release, None);
            return;
        }
        let Some(cluster) = self.progress.clone() else {
            return;
        };
        let mut found = None;
        if let Some(watches) = self.watches.clone() {
            let owner = (job.namespace.clone(), job.release.clone());
            watches.track(&owner, track_spec(job, manifest)).await;
            let mut changes = watches.subscribe();
            let until = Instant::now() + DRIFT_SYNC;
            loop {
                changes.borrow_and_update();
                if let Some((f, _)) = watched_drift(&watches, &owner) {
                    found = Some(f);
                    break;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep_until(until.into()) => break,
                }
            }
        }
        let found = match found {
            Some(found) => found,
            None => {
                let objects = drift_objects(manifest);
                let refs: Vec<ObjectRef> = objects.iter().map(|(r, _)| r.clone()).collect();
                let read = if refs.is_empty() {
                    Vec::new()
                } else {
                    match cluster.read_all(&refs, &job.namespace).await {
                        Ok(read) => read,
                        Err(e) => {
                            tracing::warn!(release = %job.release, namespace = %job.namespace, error = %e, "cannot read the release's objects to look for drift");
                            return;
                        }
                    }
                };
                find_drift(
                    objects
                        .iter()
                        .zip(&read)
                        .map(|((object, manifest), (namespace, live))| DriftInput {
                            object,
                            manifest,
                            namespace: namespace.clone(),
                            live: live.as_ref(),
                        }),
                    &job.drift,
                )
            }
        };
        record_drift(
            &self.status,
            &self.metrics,
            (&job.namespace, &job.release),
            mode,
            &found,
        );
        if found.total() > 0 && mode == DriftMode::Correct {
            inputs.missing = found.missing;
            inputs.changed = found.changed;
        }
    }

    /// The health gate: every object of the release's manifest must be live-Ready (kstatus
    /// rules, or the profile's custom CEL health check for its kind) before the release is
    /// Ready, whether helm just ran or the release was unchanged. Objects are read from the
    /// shared watches ([`Watches`]): the release tracks its objects (a watch per kind and
    /// namespace starts if none is open), and the gate is evaluated again whenever a watch
    /// sees a change, never by polling. Within the attempt's `deadline`; a `failed` verdict
    /// (a custom `failed` expression, a failed Pod or Job) or the deadline fails the release
    /// (counted like a failed helm attempt); a shutdown or a newer revision ends the wait (not
    /// counted; checked again on the next run). `after_helm`: helm ran in this attempt (its
    /// time to Ready then includes this wait).
    async fn health_gate(
        &self,
        job: &ReleaseJob,
        manifest: &str,
        deadline: Instant,
        after_helm: bool,
    ) -> Result<(), GateEnd> {
        use strata_core::health::{Gate, gate};
        let Some(watches) = self.watches.clone() else {
            return Ok(());
        };
        let owner = (job.namespace.clone(), job.release.clone());
        let tracked = watches.track(&owner, track_spec(job, manifest)).await;
        if tracked.is_empty() {
            return Ok(());
        }
        let mut changes = watches.subscribe();
        let stop = self.stop();
        let started = Instant::now();
        let mut waited = false;
        let mut retrack = RETRACK_FIRST;
        loop {
            let seen = watches.stamp(&owner);
            let verdicts: Vec<_> = watches.assess(&owner).unwrap_or_default();
            let readiness: Vec<_> = verdicts.iter().map(|(_, v)| v.clone()).collect();
            match gate(&readiness) {
                Gate::Ready => {
                    let took = started.elapsed();
                    self.set(job, |r| {
                        r.not_ready.clear();
                        if matches!(r.phase, ReleasePhase::Waiting | ReleasePhase::Installing) {
                            r.phase = ReleasePhase::Ready;
                            r.ready_at = Some(now_rfc3339());
                            if waited {
                                r.message = Some(format!(
                                    "{} object(s) ready (live health from watches)",
                                    tracked.len()
                                ));
                            }
                            if after_helm {
                                let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                                r.last_ready_ms = r.last_ready_ms.map(|m| m.saturating_add(ms));
                            }
                        }
                    });
                    if waited {
                        tracing::info!(release = %job.release, namespace = %job.namespace, objects = tracked.len(), waited_ms = took.as_millis() as u64, "release objects ready");
                    }
                    return Ok(());
                }
                Gate::Failed(reason) => {
                    return Err(GateEnd::NotReady(format!("health check failed: {reason}")));
                }
                Gate::Waiting(waiting) => {
                    waited = true;
                    let count = waiting.len();
                    let first = waiting[0].1.clone();
                    let not_ready = waiting
                        .into_iter()
                        .map(|(i, reason)| not_ready_of(&verdicts[i].0, reason))
                        .collect();
                    self.set(job, |r| {
                        r.phase = ReleasePhase::Waiting;
                        r.ready_at = None;
                        r.not_ready = not_ready;
                        r.message = Some(format!(
                            "waiting for {count} object(s) to become ready: {first}"
                        ));
                    });
                    let now = Instant::now();
                    if now >= deadline {
                        let timeout = job.timeout.unwrap_or(self.default_timeout);
                        let more = if count > 1 {
                            format!(" (and {} more object(s) not ready)", count - 1)
                        } else {
                            String::new()
                        };
                        return Err(GateEnd::NotReady(format!(
                            "not ready within the release's timeout ({}s): {first}{more}",
                            timeout.as_secs()
                        )));
                    }
                    tokio::select! {
                        () = stop.cancelled() => {
                            let why = self.stop_reason();
                            return Err(GateEnd::Ended(self.fail_with(
                                job,
                                format!("{why}: the wait for readiness ended (checked again on the next run): {first}"),
                                false,
                            )));
                        }
                        changed = watches.changed_for(&mut changes, &owner, seen) => {
                            if changed.is_err() {
                                return Ok(());
                            }
                        }
                        // An object without a watch (its kind not served yet, discovery
                        // failed for a moment) changes nothing the watches see: resolve it
                        // again, at growing intervals.
                        () = tokio::time::sleep(retrack.min(deadline - now)), if watches.unwatched(&owner) => {
                            watches.track(&owner, track_spec(job, manifest)).await;
                            retrack = (retrack * 2).min(RETRACK_MAX);
                        }
                        () = tokio::time::sleep(deadline - now) => {}
                    }
                }
            }
        }
    }

    /// Whether helm waits for readiness itself (`--wait`): only for a chart with
    /// post-install/post-upgrade hooks (helm runs them after readiness), or without watches.
    /// Otherwise helm writes the release and strata waits, in the health gate, where a newer
    /// revision or a shutdown can end the wait without leaving the release pending.
    fn helm_waits(&self, job: &ReleaseJob) -> bool {
        job.post_hooks || self.watches.is_none()
    }

    /// A layer opens only while every release of the layers below is live-Ready: a release
    /// that was Ready and degraded since (see [`crate::observe::live`]) holds this one until
    /// it recovers, or until this release's `deadline`, when it fails naming the degraded
    /// release and its reason (not counted against this release). Evaluated again on every
    /// change of the watches or the status, never polled.
    async fn lower_layers_ready(
        &self,
        job: &ReleaseJob,
        deadline: Instant,
    ) -> Result<(), ReleaseResult> {
        use crate::observe::status::LayerId;
        let Some(watches) = self.watches.clone() else {
            return Ok(());
        };
        let mine = LayerId::of(job.layer);
        let mut changes = watches.subscribe();
        let mut updates = self.status.subscribe();
        let stop = self.stop();
        let mut shown: Option<String> = None;
        loop {
            let degraded = self.status.read(|s| {
                s.layers.iter().find_map(|l| {
                    (l.layer < mine)
                        .then(|| {
                            l.releases
                                .iter()
                                .find(|r| r.phase == ReleasePhase::Degraded)
                                .map(|r| {
                                    format!(
                                        "release {}/{} of layer {} is degraded ({})",
                                        r.namespace,
                                        r.name,
                                        l.layer,
                                        r.message.as_deref().unwrap_or("not ready")
                                    )
                                })
                        })
                        .flatten()
                })
            });
            let Some(why) = degraded else {
                if let Some(shown) = shown {
                    self.set(job, |r| {
                        if r.message.as_deref() == Some(shown.as_str()) {
                            r.message = None;
                        }
                    });
                }
                return Ok(());
            };
            let message = format!("waiting for the layers below: {why}");
            if shown.as_deref() != Some(message.as_str()) {
                tracing::info!(release = %job.release, namespace = %job.namespace, %why, "held: a release of a lower layer is degraded");
                self.set(job, |r| r.message = Some(message.clone()));
                shown = Some(message);
            }
            let now = Instant::now();
            if now >= deadline {
                let timeout = job.timeout.unwrap_or(self.default_timeout);
                return Err(self.fail_with(
                    job,
                    format!(
                        "not started: the layers below did not recover within the release's timeout ({}s): {why}",
                        timeout.as_secs()
                    ),
                    false,
                ));
            }
            tokio::select! {
                () = stop.cancelled() => {
                    let reason = self.stop_reason();
                    return Err(self.fail_with(job, format!("{reason}: not started ({why})"), false));
                }
                changed = changes.changed() => if changed.is_err() { return Ok(()) },
                changed = updates.changed() => if changed.is_err() { return Ok(()) },
                () = tokio::time::sleep(deadline - now) => {}
            }
        }
    }

    /// A failed health gate: counted like a failed attempt (the next attempt, after the
    /// backoff, checks again without running helm when nothing else changed).
    fn health_failed(&self, job: &ReleaseJob, message: String) -> ReleaseResult {
        let message = match self.record_failure(job, Failure::transient(message.clone())) {
            Next::RetryAt { at, .. } => format!("{message} (next attempt not before {at})"),
            Next::Stalled { reason } => format!("stalled: {reason}"),
        };
        self.fail(job, message)
    }

    fn fingerprint(job: &ReleaseJob) -> String {
        format!(
            "{}@{} {} {}",
            job.chart_name, job.chart_version, job.values_digest, job.chart_digest
        )
    }

    /// `helm uninstall --wait` of a release strata prunes (its profile is gone), through the
    /// driver like every helm action. A release helm no longer knows counts as removed.
    pub async fn prune_release(
        &self,
        release: &str,
        namespace: &str,
    ) -> Result<(), crate::executor::helm::Error> {
        let started = Instant::now();
        let result = self
            .driver
            .uninstall(release, namespace, self.default_timeout)
            .await;
        self.metrics
            .helm_command("uninstall", started.elapsed(), result.is_err());
        match result {
            Err(e) if e.kind() == Some(crate::executor::helm::FailureKind::ReleaseNotFound) => {
                Ok(())
            }
            other => other,
        }
    }

    /// The helm options strata sets on the release's `helm upgrade --install`.
    fn helm_options(&self, job: &ReleaseJob) -> strata_core::digest::HelmOptions {
        job.helm_options(self.default_timeout)
    }

    /// The release's content digest: chart content, merged values and helm options.
    fn content_digest(&self, job: &ReleaseJob) -> String {
        job.content_digest(self.default_timeout)
    }

    /// Record a failed attempt in the retry book: what follows (backoff or Stalled) is core's
    /// decision, with the profile's `remediation.retries` as the limit.
    fn record_failure(&self, job: &ReleaseJob, failure: Failure) -> Next {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let policy = RetryPolicy {
            max_attempts: job.remediation.retries.max(1),
            ..self.policy.clone()
        };
        self.retries.failed(
            &job.namespace,
            &job.release,
            jiff::Timestamp::now(),
            failure,
            &policy,
            &mut *rng,
        )
    }

    fn fail(&self, job: &ReleaseJob, message: String) -> ReleaseResult {
        self.fail_with(job, message, true)
    }

    fn fail_with(&self, job: &ReleaseJob, message: String, count: bool) -> ReleaseResult {
        if count {
            self.metrics.release_failed();
        }
        tracing::error!(release = %job.release, namespace = %job.namespace, error = %message, "release failed");
        crate::observe::telemetry::record_error(&tracing::Span::current(), &message);
        self.set(job, |r| {
            r.phase = ReleasePhase::Failed;
            r.message = Some(message.clone());
        });
        ReleaseResult::Failed(message)
    }
}

impl<D: HelmDriver> ReleaseRunner<ReleaseJob> for Runner<D> {
    async fn run(&self, job: &ReleaseJob, mut slot: HelmSlot) -> ReleaseResult {
        let span = tracing::info_span!(
            "release",
            release = %job.release,
            namespace = %job.namespace,
            chart = %job.chart_name,
            version = %job.chart_version,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        self.run_inner(job, &mut slot).instrument(span).await
    }
}

/// How long the drift check waits for a new watch to list its objects before it reads them
/// directly.
const DRIFT_SYNC: Duration = Duration::from_secs(5);

/// How the health gate ends when the release is not ready.
enum GateEnd {
    /// The attempt ends with this result (a shutdown or a newer revision ended the wait).
    Ended(ReleaseResult),
    /// Not ready: a failed object, or the deadline passed.
    NotReady(String),
}

/// Whether `action` runs `helm upgrade --install` (whose wait strata may do itself).
fn action_runs_helm_upgrade(action: &strata_core::reconcile::Action) -> bool {
    use strata_core::reconcile::Action;
    matches!(
        action,
        Action::Install { .. }
            | Action::Upgrade { .. }
            | Action::RecoverPendingInstall { .. }
            | Action::RollbackThenUpgrade { .. }
    )
}

/// Every object of a release manifest (helm keeps hooks apart from it): what live health
/// covers.
fn release_objects(manifest: &str) -> Vec<(ObjectRef, serde_json::Value)> {
    crate::executor::releases::manifest_objects(manifest)
        .into_iter()
        .filter_map(|o| Some((ObjectRef::from_manifest(&o)?, o)))
        .collect()
}

/// What a release tracks in the watches: every object of `manifest`.
fn track_spec<'a>(job: &'a ReleaseJob, manifest: &str) -> TrackSpec<'a> {
    TrackSpec {
        objects: release_objects(manifest),
        default_namespace: &job.namespace,
        checks: &job.health_checks,
        drift: &job.drift,
    }
}

/// A not-ready object as the status shows it.
fn not_ready_of(t: &Tracked, reason: String) -> NotReady {
    NotReady {
        kind: t.object.kind.clone(),
        name: t.object.name.clone(),
        namespace: t.namespace.clone(),
        reason,
    }
}

/// The release whose progress [`watch_progress`] follows.
struct Watched {
    namespace: String,
    release: String,
    /// The revision before this operation (its own record is newer).
    previous_revision: Option<u64>,
    /// The release's custom health checks (the not-ready reasons of checked kinds).
    checks: Vec<strata_core::health::HealthCheck>,
    /// The release's drift policy.
    drift: strata_core::drift::DriftPolicy,
}

/// Follow a running helm until `stop`: one watch on the release's storage Secrets (labelled
/// `owner=helm,name=RELEASE`) tells when helm wrote this operation's record and which
/// objects its manifest has; the release then tracks those objects in the shared watches,
/// and every change they see updates the phase (Installing while objects are missing,
/// Waiting once all exist) and the not-ready objects with their reasons. No polling: the
/// requests are those of the watches.
async fn watch_progress(
    watches: Watches,
    status: StatusStore,
    watched: Watched,
    stop: CancellationToken,
) {
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    use kube::runtime::watcher;
    let Watched {
        namespace,
        release,
        previous_revision,
        checks,
        drift,
    } = watched;
    let owner = (namespace.clone(), release.clone());
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(watches.client(), &namespace);
    let records = watcher(
        api,
        watcher::Config::default().labels(&format!("owner=helm,name={release}")),
    )
    .backoff(crate::observe::watches::watch_backoff());
    futures::pin_mut!(records);
    let mut changes = watches.subscribe();
    let mut revision: Option<u64> = None;
    // The stamp of the owner's tracked objects when last looked at.
    let mut seen = watches.stamp(&owner);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            event = records.next() => match event {
                Some(Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret))) => {
                    let Ok(record) = crate::executor::releases::decode_secret(&secret) else {
                        continue;
                    };
                    if previous_revision.is_some_and(|p| record.revision <= p)
                        || revision.is_some_and(|r| record.revision < r)
                    {
                        // An older record (helm has not written this operation's yet).
                        continue;
                    }
                    revision = Some(record.revision);
                    watches
                        .track(
                            &owner,
                            TrackSpec {
                                objects: release_objects(&record.manifest),
                                default_namespace: &namespace,
                                checks: &checks,
                                drift: &drift,
                            },
                        )
                        .await;
                }
                Some(_) => continue,
                None => return,
            },
            changed = watches.changed_for(&mut changes, &owner, seen) => if changed.is_err() { return },
        }
        // Taken before looking (a change after it wakes the next wait), and also while
        // there is no record yet: the wait then sleeps until the owner changes again.
        seen = watches.stamp(&owner);
        let Some(revision) = revision else { continue };
        let Some(verdicts) = watches.assess(&owner) else {
            continue;
        };
        if stop.is_cancelled() {
            return;
        }
        let mut missing = 0usize;
        let not_ready: Vec<NotReady> = verdicts
            .iter()
            .filter_map(|(t, v)| match v {
                strata_core::readiness::Readiness::Ready => None,
                strata_core::readiness::Readiness::InProgress { reason }
                | strata_core::readiness::Readiness::Failed { reason } => {
                    if !matches!(
                        watches.lookup(t),
                        crate::observe::watches::Lookup::Present(_)
                    ) {
                        missing += 1;
                    }
                    Some(not_ready_of(t, reason.clone()))
                }
            })
            .collect();
        let phase = if missing == 0 {
            ReleasePhase::Waiting
        } else {
            ReleasePhase::Installing
        };
        status.update_release(&namespace, &release, |r| {
            if matches!(r.phase, ReleasePhase::Installing | ReleasePhase::Waiting)
                && (r.phase != phase
                    || r.not_ready != not_ready
                    || r.helm_revision != Some(revision))
            {
                r.phase = phase;
                r.helm_revision = Some(revision);
                r.not_ready = not_ready;
                r.message = Some(if phase == ReleasePhase::Waiting {
                    if r.not_ready.is_empty() {
                        "objects ready; helm finishing (hooks, final checks)".to_string()
                    } else {
                        format!(
                            "waiting for {} resource(s) to become ready",
                            r.not_ready.len()
                        )
                    }
                } else {
                    "helm is writing objects".to_string()
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! The action loop against a fake [`HelmDriver`]: which helm actions run, in which order,
    //! and what is recorded, without helm or a cluster.
    use super::*;
    use crate::executor::helm;
    use crate::executor::releases::{self, ReleaseRecord};
    use crate::observe::status::{LayerId, LayerPhase, LayerStatus};
    use std::collections::VecDeque;
    use std::path::PathBuf;
    use strata_core::profiles::{Remediation, RemediationStrategy};
    use strata_core::reconcile::ReleaseStatus as HelmStatus;

    const NS: &str = "web";
    const NAME: &str = "site";

    #[test]
    fn blips_repeat_promptly_while_the_server_is_ready_then_back_off() {
        let ms = Duration::from_millis;
        let far = Instant::now() + Duration::from_secs(3600);
        let mut b = Blips::new((ms(500), ms(4000)), far);
        // A server that is down: doubling waits up to the longest.
        assert_eq!(b.wait(false), Some(ms(500)));
        assert_eq!(b.wait(false), Some(ms(1000)));
        // Ready: short waits growing by a quarter up to half a second, a limited number of
        // times, and the doubling does not advance.
        assert_eq!(b.wait(true), Some(ms(150)));
        assert_eq!(b.wait(true), Some(Duration::from_micros(187_500)));
        assert_eq!(b.wait(true), Some(Duration::from_micros(234_375)));
        let mut last = Duration::ZERO;
        for _ in 3..QUICK_REPEATS {
            last = b.wait(true).unwrap();
            assert!(last <= QUICK_MAX, "{last:?}");
        }
        assert_eq!(last, QUICK_MAX);
        // An error that keeps coming from a ready server backs off again.
        assert_eq!(b.wait(true), Some(ms(2000)));
        assert_eq!(b.wait(true), Some(ms(4000)));
        assert_eq!(b.wait(false), Some(ms(4000)));
        assert_eq!(b.count, 2 + QUICK_REPEATS + 3);
        // A first wait shorter than the quick one is kept (and grows from there).
        let mut b = Blips::new((ms(2), ms(3)), far);
        assert_eq!(b.wait(true), Some(ms(2)));
        assert_eq!(b.wait(true), Some(Duration::from_micros(2500)));
        // ... and never passes the longest wait.
        assert_eq!(b.wait(true), Some(ms(3)));
        assert_eq!(b.wait(true), Some(ms(3)));
        // Never past the deadline.
        let mut b = Blips::new((ms(500), ms(4000)), Instant::now() + ms(100));
        assert_eq!(b.wait(true), None);
        assert_eq!(b.wait(false), None);
    }

    /// What a scripted `helm upgrade --install` does.
    enum Upgrade {
        /// Succeeds: a new deployed revision.
        Ok,
        /// Fails with this message, leaving a failed revision (as a failed hook or wait does).
        FailWithRecord(&'static str),
        /// Fails with this message before writing anything (as a template error does).
        FailBeforeWriting(&'static str),
        /// Succeeds, but the record stays pending (helm 4 exits 0 when the API fails its
        /// last write, the record's final status).
        OkRecordPending,
    }

    /// What kubesim's injected 500 looks like in helm's message.
    const API_500: &str =
        "UPGRADE FAILED: failed to create resource: Internal error occurred: injected by kubesim";

    #[derive(Default)]
    struct State {
        records: Vec<ReleaseRecord>,
        calls: Vec<String>,
        upgrades: VecDeque<Upgrade>,
        values: serde_json::Value,
        storage_down: bool,
        /// Reads of the storage that fail with a 503 before they work again.
        storage_blips: u32,
    }

    /// helm and its storage, in memory.
    #[derive(Default)]
    struct Fake(std::sync::Mutex<State>);

    impl Fake {
        fn with(records: Vec<ReleaseRecord>, upgrades: Vec<Upgrade>) -> Self {
            Fake(std::sync::Mutex::new(State {
                records,
                upgrades: upgrades.into(),
                ..State::default()
            }))
        }

        fn st(&self) -> std::sync::MutexGuard<'_, State> {
            self.0.lock().unwrap()
        }

        fn next_revision(st: &State) -> u64 {
            st.records.iter().map(|r| r.revision).max().unwrap_or(0) + 1
        }

        fn supersede(st: &mut State) {
            for r in &mut st.records {
                if r.status == "deployed" {
                    r.status = "superseded".into();
                }
            }
        }

        fn command_error(command: &'static str, message: &str) -> helm::Error {
            helm::Error::Command {
                command,
                release: NAME.into(),
                namespace: NS.into(),
                kind: helm::classify(message),
                message: message.into(),
                exit_code: Some(1),
            }
        }
    }

    fn record(
        revision: u64,
        status: &str,
        version: &str,
        config: serde_json::Value,
    ) -> ReleaseRecord {
        ReleaseRecord {
            name: NAME.into(),
            namespace: NS.into(),
            revision,
            status: status.into(),
            description: String::new(),
            chart_name: "site".into(),
            chart_version: version.into(),
            app_version: None,
            config,
            manifest: String::new(),
            notes: None,
            labels: Default::default(),
        }
    }

    impl HelmDriver for Fake {
        async fn latest(&self, _: &str, _: &str) -> releases::Result<Option<ReleaseRecord>> {
            let mut st = self.st();
            if st.storage_blips > 0 {
                st.storage_blips -= 1;
                return Err(releases::Error::List {
                    namespace: NS.into(),
                    release: NAME.into(),
                    source: kube::Error::Api(Box::new(kube::core::Status {
                        code: 503,
                        message: "the server is currently unable to handle the request".into(),
                        ..Default::default()
                    })),
                });
            }
            if st.storage_down {
                return Err(releases::Error::Decode {
                    namespace: NS.into(),
                    secret: "sh.helm.release.v1.site.v1".into(),
                    message: "storage is down".into(),
                });
            }
            Ok(st.records.iter().max_by_key(|r| r.revision).cloned())
        }

        async fn history(&self, _: &str, _: &str) -> releases::Result<Vec<(u32, HelmStatus)>> {
            Ok(self
                .st()
                .records
                .iter()
                .map(|r| (r.revision as u32, HelmStatus::parse(&r.status)))
                .collect())
        }

        async fn mark_failed(
            &self,
            _: &str,
            _: &str,
            revision: u64,
            _: &str,
        ) -> releases::Result<bool> {
            let mut st = self.st();
            st.calls.push(format!("mark-failed {revision}"));
            let Some(r) = st.records.iter_mut().find(|r| r.revision == revision) else {
                return Ok(false);
            };
            let status = HelmStatus::parse(&r.status);
            let marked = status.is_pending() || status == HelmStatus::Deployed;
            if marked {
                r.status = "failed".into();
            }
            Ok(marked)
        }

        fn write_values(
            &self,
            _: &str,
            _: &str,
            values: &serde_json::Value,
        ) -> helm::Result<PathBuf> {
            self.st().values = values.clone();
            Ok(PathBuf::from("/dev/null"))
        }

        async fn upgrade_install(&self, req: &UpgradeRequest) -> helm::Result<ReleaseRecord> {
            let mut st = self.st();
            st.calls.push("upgrade".into());
            let revision = Self::next_revision(&st);
            let values = st.values.clone();
            match st.upgrades.pop_front().unwrap_or(Upgrade::Ok) {
                Upgrade::Ok => {
                    Self::supersede(&mut st);
                    st.records.push(ReleaseRecord {
                        labels: req.labels.clone(),
                        ..record(revision, "deployed", "2.0.0", values)
                    });
                    Ok(ReleaseRecord {
                        description: "Upgrade complete".into(),
                        ..record(revision, "deployed", "2.0.0", serde_json::json!({}))
                    })
                }
                Upgrade::FailWithRecord(m) => {
                    Self::supersede(&mut st);
                    st.records.push(ReleaseRecord {
                        labels: req.labels.clone(),
                        ..record(revision, "failed", "2.0.0", values)
                    });
                    Err(Self::command_error("upgrade", m))
                }
                Upgrade::FailBeforeWriting(m) => Err(Self::command_error("upgrade", m)),
                Upgrade::OkRecordPending => {
                    let status = if st.records.is_empty() {
                        "pending-install"
                    } else {
                        "pending-upgrade"
                    };
                    st.records.push(ReleaseRecord {
                        labels: req.labels.clone(),
                        ..record(revision, status, "2.0.0", values)
                    });
                    Ok(ReleaseRecord {
                        description: "Install complete".into(),
                        ..record(revision, "deployed", "2.0.0", serde_json::json!({}))
                    })
                }
            }
        }

        async fn uninstall(&self, _: &str, _: &str, _: Duration) -> helm::Result<()> {
            let mut st = self.st();
            st.calls.push("uninstall".into());
            st.records.clear();
            Ok(())
        }

        async fn rollback(
            &self,
            _: &str,
            _: &str,
            to: Option<u64>,
            _: Duration,
        ) -> helm::Result<()> {
            let mut st = self.st();
            let to = to.unwrap_or(0);
            st.calls.push(format!("rollback {to}"));
            let target = st.records.iter().find(|r| r.revision == to).cloned();
            let Some(target) = target else {
                return Err(Self::command_error("rollback", "release: not found"));
            };
            let revision = Self::next_revision(&st);
            Self::supersede(&mut st);
            st.records.push(ReleaseRecord {
                revision,
                status: "deployed".into(),
                ..target
            });
            Ok(())
        }
    }

    fn job(strategy: RemediationStrategy) -> ReleaseJob {
        let values = serde_json::json!({"replicas": 2});
        ReleaseJob {
            profile: "site".into(),
            release: NAME.into(),
            namespace: NS.into(),
            chart_name: "site".into(),
            chart_version: "2.0.0".into(),
            chart_path: PathBuf::from("/charts/site-2.0.0.tgz"),
            values_digest: strata_core::values::canonical_digest(&values),
            chart_digest: "c0ffee".into(),
            layer: Some(1),
            values,
            timeout: Some(Duration::from_secs(30)),
            remediation: Remediation {
                strategy,
                retries: 3,
            },
            health_checks: Vec::new(),
            post_hooks: true,
            drift: Default::default(),
        }
    }

    fn runner(fake: Fake) -> (Runner<Fake>, StatusStore, Arc<RetryBook>) {
        let status = StatusStore::new();
        status.update(|s| {
            s.layers = vec![LayerStatus {
                layer: LayerId::Number(1),
                phase: LayerPhase::Pending,
                ready_at: None,
                releases: vec![crate::observe::status::ReleaseStatus::pending(
                    "site", NAME, NS, "site", "2.0.0",
                )],
            }];
        });
        let book = Arc::new(RetryBook::default());
        let r = Runner::with_driver(
            fake,
            None,
            status.clone(),
            Arc::new(Metrics::new()),
            Duration::from_secs(60),
            book.clone(),
        )
        .with_blip_backoff(Duration::from_millis(1), Duration::from_millis(4));
        (r, status, book)
    }

    fn calls(r: &Runner<Fake>) -> Vec<String> {
        r.driver.st().calls.clone()
    }

    fn release(status: &StatusStore) -> crate::observe::status::ReleaseStatus {
        status.snapshot().release(NS, NAME).unwrap().clone()
    }

    #[test]
    fn live_health_covers_every_object_of_the_manifest() {
        let manifest = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\napiVersion: health.example.com/v1\nkind: Issuer\nmetadata:\n  name: ca\n  namespace: certs\n---\nkind: NoApiVersion\nmetadata:\n  name: x\n";
        let objects: Vec<(String, Option<String>)> = release_objects(manifest)
            .into_iter()
            .map(|(o, _)| (format!("{} {}", o.kind, o.name), o.namespace))
            .collect();
        assert_eq!(
            objects,
            vec![
                ("Deployment web".to_string(), None),
                ("Issuer ca".to_string(), Some("certs".to_string())),
            ]
        );
        assert!(release_objects("").is_empty());
    }

    #[test]
    fn drift_looks_for_every_object_but_hooks_and_kept_ones() {
        let manifest = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  annotations:\n    helm.sh/resource-policy: keep\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: hook\n  annotations:\n    helm.sh/hook: post-install\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: other\n";
        let objects: Vec<(String, String)> = crate::observe::live::drift_objects(manifest)
            .into_iter()
            .map(|(o, _)| (o.kind, o.name))
            .collect();
        assert_eq!(
            objects,
            [
                ("ConfigMap".to_string(), "a".to_string()),
                ("Service".to_string(), "s".to_string())
            ]
        );
    }
    #[tokio::test]
    async fn absent_is_installed_then_in_sync_runs_no_helm() {
        let (r, status, book) = runner(Fake::default());
        let j = job(RemediationStrategy::Retry);
        assert_eq!(r.run(&j, HelmSlot::alone()).await, ReleaseResult::Ready);
        assert_eq!(calls(&r), ["upgrade"]);
        assert_eq!(release(&status).phase, ReleasePhase::Ready);
        assert_eq!(release(&status).helm_revision, Some(1));
        // The same desired release again: no helm process.
        assert_eq!(r.run(&j, HelmSlot::alone()).await, ReleaseResult::Ready);
        assert_eq!(calls(&r), ["upgrade"]);
        assert_eq!(book.state_of(NS, NAME).unwrap().attempts, 0);
    }

    #[tokio::test]
    async fn new_chart_content_at_the_same_version_upgrades_with_its_reason() {
        let (r, status, _) = runner(Fake::default());
        let mut j = job(RemediationStrategy::Retry);
        assert_eq!(r.run(&j, HelmSlot::alone()).await, ReleaseResult::Ready);
        let first = release(&status).content_digest.unwrap();
        j.chart_digest = "edited".into();
        assert_eq!(r.run(&j, HelmSlot::alone()).await, ReleaseResult::Ready);
        assert_eq!(calls(&r), ["upgrade", "upgrade"]);
        let rel = release(&status);
        assert_eq!(rel.reason.as_deref(), Some("chart content changed"));
        assert_ne!(rel.content_digest.unwrap(), first);
        // The upgrade stamped the new digest: nothing more to do.
        assert_eq!(r.run(&j, HelmSlot::alone()).await, ReleaseResult::Ready);
        assert_eq!(calls(&r), ["upgrade", "upgrade"]);
    }

    #[tokio::test]
    async fn pending_install_is_uninstalled_then_installed() {
        let fake = Fake::with(
            vec![record(1, "pending-install", "2.0.0", serde_json::json!({}))],
            vec![],
        );
        let (r, status, _) = runner(fake);
        assert_eq!(
            r.run(&job(RemediationStrategy::Retry), HelmSlot::alone())
                .await,
            ReleaseResult::Ready
        );
        assert_eq!(calls(&r), ["uninstall", "upgrade"]);
        let rel = release(&status);
        assert_eq!(rel.last_recovery.unwrap().kind, "recover-pending-install");
        assert_eq!(rel.phase, ReleasePhase::Ready);
    }

    #[tokio::test]
    async fn pending_upgrade_is_marked_failed_rolled_back_then_upgraded() {
        let fake = Fake::with(
            vec![
                record(1, "superseded", "1.0.0", serde_json::json!({})),
                record(2, "pending-upgrade", "2.0.0", serde_json::json!({})),
            ],
            vec![],
        );
        let (r, status, _) = runner(fake);
        assert_eq!(
            r.run(&job(RemediationStrategy::Retry), HelmSlot::alone())
                .await,
            ReleaseResult::Ready
        );
        assert_eq!(calls(&r), ["mark-failed 2", "rollback 1", "upgrade"]);
        let st = r.driver.st();
        assert!(
            st.records
                .iter()
                .all(|x| !HelmStatus::parse(&x.status).is_pending()),
            "no record stays pending: {:?}",
            st.records
        );
        assert_eq!(
            release(&status).last_recovery.unwrap().kind,
            "rollback-then-upgrade"
        );
    }

    #[tokio::test]
    async fn failed_upgrade_is_remediated_once_then_backs_off_without_helm() {
        let fake = Fake::with(
            vec![record(1, "deployed", "1.0.0", serde_json::json!({}))],
            vec![Upgrade::FailWithRecord(
                "failed post-upgrade: job check failed: BackoffLimitExceeded",
            )],
        );
        let (r, status, book) = runner(fake);
        let j = job(RemediationStrategy::Rollback);
        let ReleaseResult::Failed(message) = r.run(&j, HelmSlot::alone()).await else {
            panic!("the attempt fails");
        };
        assert!(message.contains("failed post-upgrade"), "{message}");
        assert_eq!(
            calls(&r),
            ["upgrade", "rollback 1"],
            "upgrade once, then the remediation"
        );
        assert_eq!(
            release(&status).last_remediation.unwrap().kind,
            "remediate-rollback"
        );
        let st = book.state_of(NS, NAME).unwrap();
        assert_eq!((st.attempts, st.stalled), (1, false));
        assert!(st.next_attempt_at.is_some());
        // Asked again before the backoff ends: no helm process, and not a new failure.
        let ReleaseResult::Failed(message) = r.run(&j, HelmSlot::alone()).await else {
            panic!("still backing off");
        };
        assert!(
            message.contains("backing off after 1 failed attempt(s)"),
            "{message}"
        );
        assert_eq!(calls(&r), ["upgrade", "rollback 1"]);
        assert_eq!(book.state_of(NS, NAME).unwrap().attempts, 1);
        assert_eq!(release(&status).action.as_deref(), Some("upgrade"));
        // An operator's retry clears the backoff: the next run upgrades again (and succeeds).
        assert!(book.request_retry(NS, NAME));
        assert_eq!(r.run(&j, HelmSlot::alone()).await, ReleaseResult::Ready);
        assert_eq!(calls(&r), ["upgrade", "rollback 1", "upgrade"]);
    }

    #[tokio::test]
    async fn an_action_never_runs_twice_in_one_attempt_and_a_permanent_error_stalls() {
        let fake = Fake::with(
            vec![record(1, "deployed", "1.0.0", serde_json::json!({}))],
            vec![Upgrade::FailBeforeWriting(
                "parse error at (site/templates/cm.yaml:3): unexpected \"}\" in operand",
            )],
        );
        let (r, status, book) = runner(fake);
        let j = job(RemediationStrategy::Retry);
        assert!(matches!(
            r.run(&j, HelmSlot::alone()).await,
            ReleaseResult::Failed(_)
        ));
        assert_eq!(
            calls(&r),
            ["upgrade"],
            "the failed upgrade is not repeated in the attempt"
        );
        let st = book.state_of(NS, NAME).unwrap();
        assert!(st.stalled, "a template error is permanent: {st:?}");
        // Stalled: no helm until the release changes or a retry is requested.
        let ReleaseResult::Failed(message) = r.run(&j, HelmSlot::alone()).await else {
            panic!("stalled");
        };
        assert!(message.starts_with("stalled: permanent error"), "{message}");
        assert_eq!(release(&status).action.as_deref(), Some("stalled"));
        assert_eq!(calls(&r), ["upgrade"]);
        // A changed release (new values) starts afresh.
        let mut changed = j.clone();
        changed.values = serde_json::json!({"replicas": 3});
        changed.values_digest = strata_core::values::canonical_digest(&changed.values);
        assert_eq!(
            r.run(&changed, HelmSlot::alone()).await,
            ReleaseResult::Ready
        );
        assert_eq!(calls(&r), ["upgrade", "upgrade"]);
    }

    #[tokio::test]
    async fn a_success_whose_record_stayed_pending_is_recovered_not_reported_ready() {
        // helm exited 0 but the API failed its last write: the record says pending-install.
        let fake = Fake::with(vec![], vec![Upgrade::OkRecordPending, Upgrade::Ok]);
        let (r, status, book) = runner(fake);
        assert_eq!(
            r.run(&job(RemediationStrategy::Retry), HelmSlot::alone())
                .await,
            ReleaseResult::Ready
        );
        assert_eq!(calls(&r), ["upgrade", "uninstall", "upgrade"]);
        let rel = release(&status);
        assert_eq!(rel.phase, ReleasePhase::Ready);
        assert_eq!(rel.helm_revision, Some(1), "installed afresh");
        assert_eq!(rel.last_recovery.unwrap().kind, "recover-pending-install");
        assert!(
            r.driver
                .st()
                .records
                .iter()
                .all(|x| !HelmStatus::parse(&x.status).is_pending())
        );
        assert_eq!(book.state_of(NS, NAME).unwrap().attempts, 0);
    }

    #[tokio::test]
    async fn a_recovery_whose_record_stayed_pending_again_is_repeated_not_counted() {
        // The recovery's install exits 0 and the API fails its last write again: the second
        // recovery is the API's fault, repeated in place, and the attempt is not counted.
        let fake = Fake::with(
            vec![],
            vec![
                Upgrade::OkRecordPending,
                Upgrade::OkRecordPending,
                Upgrade::Ok,
            ],
        );
        let (r, status, book) = runner(fake);
        assert_eq!(
            r.run(&job(RemediationStrategy::Retry), HelmSlot::alone())
                .await,
            ReleaseResult::Ready
        );
        assert_eq!(
            calls(&r),
            ["upgrade", "uninstall", "upgrade", "uninstall", "upgrade"]
        );
        let rel = release(&status);
        assert_eq!(rel.phase, ReleasePhase::Ready);
        assert!(rel.transient_retries >= 1, "{rel:?}");
        assert!(
            rel.last_transient_error
                .as_deref()
                .is_some_and(|e| e.contains("left the release record pending-install")),
            "{rel:?}"
        );
        assert_eq!(book.state_of(NS, NAME).unwrap().attempts, 0);
    }

    #[tokio::test]
    async fn unreadable_storage_fails_the_release_without_running_helm() {
        let fake = Fake::default();
        fake.st().storage_down = true;
        let (r, status, _) = runner(fake);
        let ReleaseResult::Failed(message) = r
            .run(&job(RemediationStrategy::Retry), HelmSlot::alone())
            .await
        else {
            panic!("fails");
        };
        assert!(
            message.starts_with("cannot read the release state"),
            "{message}"
        );
        assert!(calls(&r).is_empty());
        assert_eq!(release(&status).phase, ReleasePhase::Failed);
    }

    #[tokio::test]
    async fn an_unavailable_api_repeats_the_step_in_place_without_counting_or_remediating() {
        // remediation `uninstall`: a real failure would uninstall; an API blip must not.
        let fake = Fake::with(
            vec![record(1, "deployed", "1.0.0", serde_json::json!({}))],
            vec![
                Upgrade::FailWithRecord(API_500),
                Upgrade::FailBeforeWriting(API_500),
                Upgrade::Ok,
            ],
        );
        fake.st().storage_blips = 1;
        let (r, status, book) = runner(fake);
        assert_eq!(
            r.run(&job(RemediationStrategy::Uninstall), HelmSlot::alone())
                .await,
            ReleaseResult::Ready
        );
        assert_eq!(
            calls(&r),
            ["upgrade", "upgrade", "upgrade"],
            "nothing uninstalled"
        );
        let st = book.state_of(NS, NAME).unwrap();
        assert_eq!((st.attempts, st.stalled), (0, false), "not counted: {st:?}");
        let rel = release(&status);
        assert_eq!(rel.phase, ReleasePhase::Ready);
        assert_eq!(
            rel.transient_retries, 3,
            "one storage read and two upgrades repeated"
        );
        assert!(
            rel.last_transient_error
                .unwrap()
                .contains("Internal error occurred")
        );
        assert!(rel.last_remediation.is_none());
    }

    #[tokio::test]
    async fn an_api_unavailable_past_the_timeout_fails_without_counting() {
        let fake = Fake::with(
            vec![],
            (0..100)
                .map(|_| Upgrade::FailBeforeWriting(API_500))
                .collect(),
        );
        let (r, _, book) = runner(fake);
        let mut j = job(RemediationStrategy::Uninstall);
        j.timeout = Some(Duration::from_millis(40));
        let ReleaseResult::Failed(message) = r.run(&j, HelmSlot::alone()).await else {
            panic!("gives up at the timeout");
        };
        assert!(
            message.starts_with("the Kubernetes API stayed unavailable"),
            "{message}"
        );
        assert!(calls(&r).iter().all(|c| c == "upgrade"), "{:?}", calls(&r));
        let st = book.state_of(NS, NAME).unwrap();
        assert_eq!(st.attempts, 0, "an outage is not the release's failure");
    }
}
