//! One release of a revision: observe, decide, run helm, watch progress.
//!
//! An *attempt* is a loop around strata-core's pure `reconcile::decide_with` (decisions in
//! core, execution here): read the release from helm's storage (kube-rs, no helm process),
//! decide, run the action, add it to the attempt's `performed` list, read again, until the
//! decision runs no helm. Actions:
//!
//! - NoOp -> Ready at once (no helm process, no write); Install/Upgrade -> write the merged
//!   values to a 0600 file and run `helm upgrade --install --wait` with the profile's timeout.
//! - Recovery of a release left pending by an interrupted helm (only while this agent may
//!   write: it holds the Lease, or runs without leader election and is the only writer):
//!   `pending-install`/`uninstalling` -> `helm uninstall`, then install; `pending-upgrade` /
//!   `pending-rollback` -> mark the interrupted record failed, `helm rollback` to the last
//!   deployed revision, then upgrade.
//! - Remediation after a failed attempt, per profile: `retry` (nothing, next attempt after the
//!   backoff), `rollback` (to the last deployed revision), `uninstall` (only when chosen).
//! - Stalled after `remediation.retries` failed attempts (the retry accounting's
//!   `max_attempts`), until the release changes or an operator asks for a retry.
//!
//! Every recovery and remediation is logged, counted (`strata_recoveries_total`,
//! `strata_remediations_total`), recorded in the release's status (`lastRecovery`,
//! `lastRemediation`) and announced as an Event (`Recovered`, `Remediated`, `...Failed`).
//!
//! While helm runs, a poll every second reads the release record helm is writing and its
//! manifest objects from the cluster: the phase goes from Installing (helm started, objects
//! being written) to Waiting (every manifest object exists, helm waits for readiness), with
//! the not-ready objects and their reasons in the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::layers::{ReleaseResult, ReleaseRunner};
use crate::executor::helm::{Helm, UpgradeRequest};
use crate::observe::metrics::Metrics;
use crate::observe::objects::{ClusterReader, ObjectRef};
use crate::observe::status::{NotReady, ReleasePhase, StatusStore, now_rfc3339};
use crate::reconcile::retry::{
    Due, Failure, Next, ResetReason, RetryBook, RetryPolicy, RetryState, SeededRng,
};
use crate::source::revision::ReleaseJob;

/// Poll period of the progress watcher.
const POLL: Duration = Duration::from_secs(1);

/// The real release runner.
pub struct Runner {
    retries: Arc<RetryBook>,
    policy: RetryPolicy,
    rng: std::sync::Mutex<SeededRng>,
    helm: Helm,
    client: kube::Client,
    cluster: Arc<ClusterReader>,
    status: StatusStore,
    metrics: Arc<Metrics>,
    default_timeout: Duration,
}

impl Runner {
    pub fn new(
        helm: Helm,
        client: kube::Client,
        status: StatusStore,
        metrics: Arc<Metrics>,
        default_timeout: Duration,
        retries: Arc<RetryBook>,
    ) -> Self {
        Self {
            retries,
            policy: RetryPolicy::default(),
            rng: std::sync::Mutex::new(SeededRng::from_entropy()),
            helm,
            cluster: Arc::new(ClusterReader::new(client.clone())),
            client,
            status,
            metrics,
            default_timeout,
        }
    }

    fn set(&self, job: &ReleaseJob, f: impl FnOnce(&mut crate::observe::status::ReleaseStatus)) {
        self.status.update(|s| {
            if let Some(r) = s.release_mut(&job.namespace, &job.release) {
                f(r);
            }
        });
    }

    async fn run_inner(&self, job: &ReleaseJob) -> ReleaseResult {
        use strata_core::reconcile::{Action, Inputs, LockState};
        let desired = strata_core::reconcile::DesiredRelease {
            name: job.release.clone(),
            namespace: job.namespace.clone(),
            chart_name: job.chart_name.clone(),
            chart_version: job.chart_version.clone(),
            values_digest: job.values_digest.clone(),
        };
        // This runner only runs while this agent may write releases: it holds the Lease
        // (`--leader-elect`; work stops at once when the Lease is lost), or there is no leader
        // election and it is by definition the only writer.
        let mut inputs = Inputs::new(LockState::HeldByUs, job.remediation);
        (inputs.failed_attempts, inputs.last_failure) = self.retry_snapshot(job);
        // The failure of this attempt, recorded in the retry accounting when the attempt ends.
        let mut failure: Option<Failure> = None;
        let mut gated = false;
        // decide_with never repeats an action within an attempt: a handful of steps at most.
        for _ in 0..8 {
            let record =
                match crate::executor::releases::latest(&self.client, &job.namespace, &job.release)
                    .await
                {
                    Ok(record) => record,
                    Err(e) => {
                        let msg = format!("cannot read the release state: {e}");
                        return self.fail(job, msg);
                    }
                };
            let observed = record.as_ref().map(|r| r.observed());
            if observed.as_ref().is_some_and(|o| {
                !matches!(
                    o.status,
                    strata_core::reconcile::ReleaseStatus::Deployed
                        | strata_core::reconcile::ReleaseStatus::Uninstalled
                )
            }) {
                // A rollback target may be needed: the last deployed revision from history.
                inputs.last_deployed_revision = match crate::executor::releases::history(
                    &self.client,
                    &job.namespace,
                    &job.release,
                )
                .await
                {
                    Ok(h) => {
                        let statuses: Vec<(u32, strata_core::reconcile::ReleaseStatus)> = h
                            .iter()
                            .map(|r| {
                                (
                                    u32::try_from(r.revision).unwrap_or(u32::MAX),
                                    strata_core::reconcile::ReleaseStatus::parse(&r.status),
                                )
                            })
                            .collect();
                        strata_core::reconcile::last_deployed_revision(
                            statuses.iter().map(|(r, s)| (*r, s)),
                        )
                    }
                    Err(e) => {
                        tracing::warn!(release = %job.release, namespace = %job.namespace, error = %e, "release history not readable");
                        None
                    }
                };
            }
            let action = strata_core::reconcile::decide_with(&desired, observed.as_ref(), &inputs);
            tracing::debug!(release = %job.release, namespace = %job.namespace, action = %action, "decided");
            let kind = action.kind();
            match &action {
                Action::NoOp => {
                    let revision = observed.as_ref().map(|o| u64::from(o.revision));
                    let fresh = inputs.performed.is_empty();
                    self.set(job, |r| {
                        if fresh {
                            r.action = Some("none".into());
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
                    self.retry_done(job, None);
                    return ReleaseResult::Ready;
                }
                Action::Blocked { reason } => {
                    // e.g. a release left pending with no revision to roll back to: no helm
                    // runs; the reason says what a user can do.
                    self.set(job, |r| r.action = Some("blocked".into()));
                    return self.fail(job, reason.clone());
                }
                Action::Stalled { reason } => {
                    self.set(job, |r| r.action = Some("stalled".into()));
                    return self.fail_with(job, format!("stalled: {reason}"), false);
                }
                Action::AwaitRetry { reason } => {
                    let f = failure
                        .take()
                        .unwrap_or_else(|| Failure::transient(reason.clone()));
                    let first = f.message.clone();
                    let message = match self.retry_done(job, Some(f)) {
                        Some(Next::RetryAt { at, .. }) => {
                            format!("{first}; {reason} (next attempt not before {at})")
                        }
                        Some(Next::Stalled { reason }) => format!("stalled: {reason}"),
                        None => format!("{first}; {reason}"),
                    };
                    return self.fail(job, message);
                }
                _ => {}
            }
            let Some(kind) = kind else {
                return self.fail(job, format!("no way to run `{action}`"));
            };
            if !gated {
                gated = true;
                if let Some(wait) = self.retry_gate(job) {
                    // Backing off after failures, or stalled: no helm process now.
                    self.set(job, |r| r.action = Some(kind.as_str().to_string()));
                    return self.fail_with(job, wait, false);
                }
            }
            inputs.performed.push(kind);
            let previous = observed.as_ref().map(|o| u64::from(o.revision));
            let timeout = job.timeout.unwrap_or(self.default_timeout);
            let step = match &action {
                Action::Install { reason } => {
                    self.helm_upgrade(job, "install", reason, previous).await
                }
                Action::Upgrade { reason } => {
                    self.helm_upgrade(job, "upgrade", &reason.to_string(), previous)
                        .await
                }
                Action::RecoverPendingInstall { reason } => {
                    match self.uninstall(job, kind, reason, timeout).await {
                        Ok(()) => {
                            // The uninstall removed every revision: the install starts afresh.
                            let r = self.helm_upgrade(job, kind.as_str(), reason, None).await;
                            self.record_action(job, kind, reason, r.as_ref().err());
                            r
                        }
                        Err(f) => Err(f),
                    }
                }
                Action::RollbackThenUpgrade {
                    to_revision,
                    reason,
                } => match match self.unlock(job, kind, reason, previous).await {
                    Ok(()) => {
                        self.rollback(job, kind, *to_revision, reason, timeout)
                            .await
                    }
                    Err(f) => Err(f),
                } {
                    Ok(()) => {
                        let after = previous.map(|p| p + 1);
                        let r = self.helm_upgrade(job, kind.as_str(), reason, after).await;
                        self.record_action(job, kind, reason, r.as_ref().err());
                        r
                    }
                    Err(f) => Err(f),
                },
                Action::RemediateRollback {
                    to_revision,
                    reason,
                } => self
                    .rollback(job, kind, *to_revision, reason, timeout)
                    .await
                    .map(|()| {
                        self.record_action(job, kind, reason, None);
                    }),
                Action::RemediateUninstall { reason } => {
                    self.uninstall(job, kind, reason, timeout).await.map(|()| {
                        self.record_action(job, kind, reason, None);
                    })
                }
                other => Err(Failure::permanent(format!("no way to run `{other}`"))),
            };
            match step {
                Ok(()) if kind.applies_desired() => {
                    self.retry_done(job, None);
                    return ReleaseResult::Ready;
                }
                Ok(()) => {}
                Err(f) => {
                    inputs.last_failure = Some(f.message.clone());
                    // The first failure of the attempt is the one to report.
                    if failure.is_none() {
                        failure = Some(f);
                    }
                }
            }
        }
        let f = failure.unwrap_or_else(|| Failure::transient("too many steps in one attempt"));
        let message = f.message.clone();
        self.retry_done(job, Some(f));
        self.fail(job, message)
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
            .helm
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
        match crate::executor::releases::mark_failed(
            &self.client,
            &job.namespace,
            &job.release,
            revision,
            &description,
        )
        .await
        {
            Ok(changed) => {
                tracing::info!(release = %job.release, namespace = %job.namespace, revision, changed, "interrupted record marked failed");
                Ok(())
            }
            Err(e) => {
                let failure = Failure::transient(e.to_string());
                self.record_action(job, kind, reason, Some(&failure));
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
            .helm
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
        let failure = Failure::transient(format!(
            "{kind} of release {}/{} failed: {message}",
            job.namespace, job.release
        ));
        self.record_action(job, kind, reason, Some(&failure));
        failure
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
            .helm
            .write_values(&job.namespace, &job.release, &job.values)
        {
            Ok(p) => p,
            Err(e) => return Err(Failure::transient(e.to_string())),
        };
        let timeout = job.timeout.unwrap_or(self.default_timeout);
        self.status
            .update(|s| s.phase = crate::observe::status::OverallPhase::Progressing);
        self.set(job, |r| {
            r.phase = ReleasePhase::Installing;
            r.action = Some(verb.to_string());
            r.attempts += 1;
            r.started_at = Some(now_rfc3339());
            r.ready_at = None;
            r.message = Some(format!("helm upgrade --install ({reason})"));
            r.not_ready.clear();
        });
        tracing::info!(release = %job.release, namespace = %job.namespace, action = verb, reason, "running helm");
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(
            watch_progress(
                self.cluster.clone(),
                self.client.clone(),
                self.status.clone(),
                job.namespace.clone(),
                job.release.clone(),
                previous_revision,
                stop.clone(),
            )
            .in_current_span(),
        );
        let request = UpgradeRequest {
            release: job.release.clone(),
            namespace: job.namespace.clone(),
            chart: job.chart_path.clone(),
            values_file,
            timeout,
            create_namespace: true,
            wait: true,
        };
        let started = Instant::now();
        let result = self.helm.upgrade_install(&request).await;
        stop.cancel();
        let _ = watcher.await;
        self.metrics
            .helm_command("upgrade", started.elapsed(), result.is_err());
        match result {
            Ok(info) => {
                self.set(job, |r| {
                    r.phase = ReleasePhase::Ready;
                    r.helm_revision = Some(info.revision);
                    r.ready_at = Some(now_rfc3339());
                    r.message = Some(if info.description.is_empty() {
                        format!("{verb} complete")
                    } else {
                        info.description.clone()
                    });
                    r.not_ready.clear();
                });
                tracing::info!(release = %job.release, namespace = %job.namespace, revision = info.revision, "release ready");
                Ok(())
            }
            Err(e) => {
                let message = e
                    .helm_message()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string());
                // The phase becomes Failed when the attempt ends (after any remediation).
                tracing::error!(release = %job.release, namespace = %job.namespace, action = verb, error = %message, "helm failed");
                Err(match e.helm_message() {
                    Some(m) => Failure {
                        class: crate::reconcile::retry::classify_helm_message(m),
                        message,
                        retry_after: None,
                    },
                    None => Failure::transient(message),
                })
            }
        }
    }

    fn fingerprint(job: &ReleaseJob) -> String {
        format!(
            "{}@{} {}",
            job.chart_name, job.chart_version, job.values_digest
        )
    }

    /// `Some(why)` when the release may not run helm now: backing off after failures, or
    /// stalled. A changed release (chart, version, values) starts afresh.
    fn retry_gate(&self, job: &ReleaseJob) -> Option<String> {
        let mut retries = self.retries.lock();
        let key = (job.namespace.clone(), job.release.clone());
        let fingerprint = Self::fingerprint(job);
        let (seen, state) = retries
            .entry(key)
            .or_insert_with(|| (fingerprint.clone(), RetryState::new()));
        if *seen != fingerprint {
            if state.reset(ResetReason::NewRevision) {
                tracing::info!(release = %job.release, namespace = %job.namespace, "retry accounting reset: {}", ResetReason::NewRevision);
            }
            *seen = fingerprint;
        }
        let last = state.last_error.clone().unwrap_or_default();
        match state.due(jiff::Timestamp::now()) {
            Due::Now => None,
            Due::At(at) => Some(format!(
                "backing off after {} failed attempt(s): next attempt not before {at}; last error: {last}",
                state.attempts
            )),
            Due::Stalled => Some(format!(
                "stalled: {}",
                state.stalled_reason.clone().unwrap_or(last)
            )),
        }
    }

    /// Failed attempts so far and the last failure (for the reconcile decision); a changed
    /// release starts afresh.
    fn retry_snapshot(&self, job: &ReleaseJob) -> (u32, Option<String>) {
        let mut retries = self.retries.lock();
        let key = (job.namespace.clone(), job.release.clone());
        let fingerprint = Self::fingerprint(job);
        let (seen, state) = retries
            .entry(key)
            .or_insert_with(|| (fingerprint.clone(), RetryState::new()));
        if *seen != fingerprint {
            if state.reset(ResetReason::NewRevision) {
                tracing::info!(release = %job.release, namespace = %job.namespace, "retry accounting reset: {}", ResetReason::NewRevision);
            }
            *seen = fingerprint;
        }
        (state.attempts, state.last_error.clone())
    }

    /// Record the end of an attempt: success (`None`) clears the accounting; a failure
    /// returns what follows.
    fn retry_done(&self, job: &ReleaseJob, failure: Option<Failure>) -> Option<Next> {
        let mut retries = self.retries.lock();
        let key = (job.namespace.clone(), job.release.clone());
        let fingerprint = Self::fingerprint(job);
        let (_, state) = retries
            .entry(key)
            .or_insert_with(|| (fingerprint, RetryState::new()));
        match failure {
            None => {
                state.on_success();
                None
            }
            Some(f) => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                let policy = RetryPolicy {
                    max_attempts: job.remediation.retries.max(1),
                    ..self.policy.clone()
                };
                Some(state.on_failure(jiff::Timestamp::now(), f, &policy, &mut *rng))
            }
        }
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

impl ReleaseRunner<ReleaseJob> for Runner {
    async fn run(&self, job: &ReleaseJob) -> ReleaseResult {
        let span = tracing::info_span!(
            "release",
            release = %job.release,
            namespace = %job.namespace,
            chart = %job.chart_name,
            version = %job.chart_version,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        self.run_inner(job).instrument(span).await
    }
}

/// Poll the release record helm writes and its objects until `stop`.
async fn watch_progress(
    cluster: Arc<ClusterReader>,
    client: kube::Client,
    status: StatusStore,
    namespace: String,
    release: String,
    previous_revision: Option<u64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let Ok(Some(record)) =
            crate::executor::releases::latest(&client, &namespace, &release).await
        else {
            continue;
        };
        if previous_revision.is_some_and(|p| record.revision <= p) {
            // helm has not written this operation's record yet.
            continue;
        }
        let objects: Vec<ObjectRef> = crate::executor::releases::manifest_objects(&record.manifest)
            .iter()
            .filter_map(ObjectRef::from_manifest)
            .collect();
        let mut missing = 0usize;
        let mut not_ready = Vec::new();
        for obj in &objects {
            match cluster.get(obj, &namespace).await {
                Ok(Some(live)) => match strata_core::readiness::assess(&live) {
                    strata_core::readiness::Readiness::Ready => {}
                    strata_core::readiness::Readiness::InProgress { reason }
                    | strata_core::readiness::Readiness::Failed { reason } => {
                        not_ready.push(NotReady {
                            kind: obj.kind.clone(),
                            name: obj.name.clone(),
                            namespace: obj.namespace.clone().or_else(|| {
                                live["metadata"]["namespace"].as_str().map(str::to_string)
                            }),
                            reason,
                        });
                    }
                },
                Ok(None) => {
                    missing += 1;
                    not_ready.push(NotReady {
                        kind: obj.kind.clone(),
                        name: obj.name.clone(),
                        namespace: obj.namespace.clone(),
                        reason: "not created yet".into(),
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "progress: object not readable");
                    missing += 1;
                }
            }
        }
        if stop.is_cancelled() {
            return;
        }
        let phase = if missing == 0 {
            ReleasePhase::Waiting
        } else {
            ReleasePhase::Installing
        };
        status.update(|s| {
            if let Some(r) = s.release_mut(&namespace, &release)
                && matches!(r.phase, ReleasePhase::Installing | ReleasePhase::Waiting)
            {
                r.phase = phase;
                r.helm_revision = Some(record.revision);
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
