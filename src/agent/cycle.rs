//! One agent's cycles: fetch the source, load the revision, reject it or apply it layer by
//! layer; or (a retry cycle, when a failed release's backoff ends before the next poll) apply
//! the loaded revision again. When the next cycle starts and when `--once` stops are
//! strata-core's decisions ([`strata_core::cycle`]).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use strata_core::cycle::{CycleEnd, CycleKind, NextCycle, OnceExit, OnceStep};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::parts::Shared;
use super::{AgentConfig, Outcome, Result};
use crate::executor::helm::{Helm, HelmConfig};
use crate::executor::process::Redactor;
use crate::observe::status::{
    LayerId, OverallPhase, ProblemView, RejectedRevision, ReleaseStatus, Removal, RemovalPhase,
    RevisionInfo,
};
use crate::reconcile::layers::{self, LayersOutcome};
use crate::reconcile::release;
use crate::source::revision;

/// How the loop runs: continuously every `interval`, or (`once`) until the revision is done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// How often the source is fetched.
    pub interval: Duration,
    /// `--once`, with its `--once-timeout` (`None`: the longest helm timeout of the revision).
    pub once: Option<Option<Duration>>,
}

/// The revision the loop applies: the last one loaded (retry cycles apply it again).
struct Current {
    info: RevisionInfo,
    loaded: revision::Loaded,
}

pub(super) struct Agent {
    loader: revision::Loader,
    runner: release::Runner,
    shared: Shared,
    /// `--concurrency`; `None`: fitted to the pod before each revision.
    concurrency: Option<usize>,
    /// The concurrency the last revision ran with (logged when it changes).
    last_concurrency: std::sync::Mutex<Option<usize>>,
    default_timeout: Duration,
    client: kube::Client,
    /// The agent's namespace: recorded on every release it installs (`strata.io/agent`); it
    /// prunes only releases recorded with it.
    agent_namespace: String,
    current: std::sync::Mutex<Option<Arc<Current>>>,
    /// The cluster name discovered from kubeadm-config (when needed and not configured).
    discovered_cluster: tokio::sync::Mutex<Option<String>>,
    /// How often the source is fetched (also while a revision is applied, to find a newer one).
    interval: std::sync::Mutex<Duration>,
    /// The last apply ended because a newer commit was fetched: the next cycle starts at once.
    superseded: std::sync::atomic::AtomicBool,
}

impl Agent {
    /// Set up the source and detect helm.
    pub(super) async fn start(
        config: &AgentConfig,
        client: &kube::Client,
        shared: &Shared,
    ) -> Result<Self> {
        let redactor = Redactor::new();
        let loader = revision::Loader::new(
            config.source.clone(),
            config.work_dir.path(),
            redactor.clone(),
        )
        .await?
        .with_secrets(client.clone(), config.namespace.clone());
        let detect_started = std::time::Instant::now();
        let helm = Helm::new(
            HelmConfig {
                binary: config.helm.clone(),
                work_dir: config.work_dir.path().to_path_buf(),
                kubeconfig: config.kubeconfig.clone(),
                kube_context: None,
            },
            redactor,
        )
        .await;
        shared
            .metrics
            .helm_command("version", detect_started.elapsed(), helm.is_err());
        let helm = helm?;
        tracing::info!(version = %helm.version(), binary = %helm.binary().display(), "helm detected");
        let runner = release::Runner::new(
            helm,
            client.clone(),
            shared.status.clone(),
            shared.metrics.clone(),
            config.default_timeout,
            shared.retries.clone(),
        )
        .with_agent(&config.namespace);
        Ok(Self {
            agent_namespace: config.namespace.clone(),
            loader,
            runner,
            shared: shared.clone(),
            concurrency: config.concurrency,
            last_concurrency: std::sync::Mutex::new(None),
            default_timeout: config.default_timeout,
            client: client.clone(),
            current: std::sync::Mutex::new(None),
            discovered_cluster: tokio::sync::Mutex::new(None),
            interval: std::sync::Mutex::new(Duration::from_secs(60)),
            superseded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// End the release runner's waits for readiness when `token` is cancelled.
    pub(super) fn stop_waits_with(&mut self, token: &CancellationToken) {
        self.runner.set_shutdown(token.clone());
    }

    /// The shared watches live health reads (`None` without a cluster).
    pub(super) fn watches(&self) -> Option<crate::observe::watches::Watches> {
        self.runner.watches()
    }

    /// Cycle on start and every `interval`, earlier when a failed release's backoff ends
    /// before (a retry cycle) or when a retry is requested, until `shutdown`. With `once`,
    /// until every layer is Ready, a real failure gives up, or the deadline passes (see
    /// [`strata_core::cycle::once_step`]); a helm still running at the deadline is stopped
    /// (a release it leaves pending is recovered by the next run). Readiness goes draining as
    /// soon as `shutdown` is cancelled (running helm commands still finish).
    pub(super) async fn run_cycles(
        &self,
        schedule: Schedule,
        shutdown: &CancellationToken,
    ) -> Outcome {
        {
            let (readiness, shutdown) = (self.shared.readiness.clone(), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                readiness.set_draining();
            });
        }
        self.shared.metrics.set_fetch_interval(schedule.interval);
        *self.interval.lock().unwrap_or_else(|e| e.into_inner()) = schedule.interval;
        let started = Timestamp::now();
        let mut kind = CycleKind::Poll;
        let mut poll_at = started;
        loop {
            let end = match schedule.once {
                None => self.cycle(kind, shutdown).await,
                Some(limit) => tokio::select! {
                    end = self.cycle(kind, shutdown) => end,
                    () = self.deadline_passes(started, limit) => {
                        let why = format!(
                            "the deadline ({}) passed before every layer was Ready",
                            self.deadline(started, limit)
                        );
                        return self.timed_out(&why);
                    }
                },
            };
            let now = Timestamp::now();
            if kind == CycleKind::Poll {
                poll_at = now.checked_add(schedule.interval).unwrap_or(Timestamp::MAX);
            }
            if self
                .superseded
                .swap(false, std::sync::atomic::Ordering::SeqCst)
                && !shutdown.is_cancelled()
            {
                // A newer commit ended the apply: fetch and apply it now.
                kind = CycleKind::Poll;
                continue;
            }
            let states = self.retry_states();
            let mut next = strata_core::cycle::next_cycle(now, poll_at, &states);
            if let Some(limit) = schedule.once {
                if shutdown.is_cancelled() && end != CycleEnd::AllReady {
                    return Outcome::NotReady;
                }
                let deadline = self.deadline(started, limit);
                match strata_core::cycle::once_step(&end, now, next, deadline) {
                    OnceStep::Exit(OnceExit::AllReady) => return Outcome::AllReady,
                    OnceStep::Exit(OnceExit::GaveUp(why)) => {
                        tracing::error!("--once gives up: {why}");
                        return Outcome::NotReady;
                    }
                    OnceStep::Exit(OnceExit::DeadlinePassed(why)) => return self.timed_out(&why),
                    OnceStep::Continue(n) => next = n,
                }
            }
            if next.kind == CycleKind::Retry {
                tracing::info!(at = %next.at, "a failed release's backoff ends before the next poll: retrying then");
            }
            tokio::select! {
                _ = tokio::time::sleep(wait_until(next)) => kind = next.kind,
                _ = self.shared.wake.notified() => {
                    tracing::info!("cycle started early: retry requested");
                    kind = CycleKind::Poll;
                }
                _ = shutdown.cancelled() => {
                    return if schedule.once.is_some() { Outcome::NotReady } else { Outcome::Stopped };
                }
            }
            if shutdown.is_cancelled() {
                return if schedule.once.is_some() {
                    Outcome::NotReady
                } else {
                    Outcome::Stopped
                };
            }
        }
    }

    /// The retry states of the releases of the loaded revision.
    fn retry_states(&self) -> Vec<crate::reconcile::retry::RetryState> {
        let Some(current) = self.current() else {
            return Vec::new();
        };
        current
            .loaded
            .jobs
            .values()
            .filter_map(|j| self.shared.retries.state_of(&j.namespace, &j.release))
            .collect()
    }

    fn current(&self) -> Option<Arc<Current>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_current(&self, current: Option<Arc<Current>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = current;
    }

    /// The deadline of `--once` started at `started`: `limit`, else the longest helm timeout
    /// of the loaded revision's releases (`--default-timeout` before one is loaded).
    fn deadline(&self, started: Timestamp, limit: Option<Duration>) -> Timestamp {
        let current = self.current();
        let timeouts = current.iter().flat_map(|c| {
            c.loaded
                .jobs
                .values()
                .map(|j| j.timeout.unwrap_or(self.default_timeout))
        });
        let budget = strata_core::cycle::once_budget(limit, timeouts, self.default_timeout);
        started.checked_add(budget).unwrap_or(Timestamp::MAX)
    }

    /// Returns once the deadline of `--once` has passed (it is read again while waiting: it
    /// follows the revision loaded meanwhile).
    async fn deadline_passes(&self, started: Timestamp, limit: Option<Duration>) {
        loop {
            let left = until(self.deadline(started, limit));
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        }
    }

    /// `--once` ends at its deadline: say so in the logs and the status.
    fn timed_out(&self, why: &str) -> Outcome {
        tracing::error!("--once stops (exit 2): {why}");
        let msg = format!("--once stopped: {why}");
        self.shared.status.update(|s| s.last_error = Some(msg));
        Outcome::TimedOut
    }

    /// The cluster name for `{cluster}`: `--cluster-name`, else (only when the profiles path
    /// needs one) discovered from kubeadm-config once.
    async fn cluster_name(&self) -> Option<String> {
        if let Some(name) = self.loader.cluster_name() {
            return Some(name.to_string());
        }
        if !self.loader.needs_cluster_name() {
            return None;
        }
        let mut cached = self.discovered_cluster.lock().await;
        if cached.is_none() {
            *cached = crate::source::cluster_name::discover(&self.client).await;
            if let Some(name) = cached.as_deref() {
                tracing::info!(
                    cluster = name,
                    "cluster name read from kube-system/kubeadm-config"
                );
            }
        }
        cached.clone()
    }

    /// One cycle: `Poll` fetches, validates and applies; `Retry` applies the loaded revision
    /// again (a poll when none is loaded).
    async fn cycle(&self, kind: CycleKind, shutdown: &CancellationToken) -> CycleEnd {
        if kind == CycleKind::Retry
            && let Some(current) = self.current()
        {
            tracing::info!(commit = %current.info.commit, "retrying: a failed release's backoff ended; applying the revision again");
            return self.apply(&current, shutdown).await;
        }
        // The site's mirrors of --mirrors-configmap, read every cycle before fetching: a
        // missing or invalid ConfigMap applies nothing new (the revision applied stays).
        if let Err(msg) = self.loader.refresh_mirrors().await {
            tracing::error!(error = %msg, "the site's mirrors cannot be read");
            self.shared.status.update(|s| {
                s.last_error = Some(msg);
                s.phase = OverallPhase::Degraded;
            });
            self.shared.readiness.set_ready();
            return CycleEnd::Retryable;
        }
        let fetched = match self.loader.fetch().await {
            Ok(f) => {
                self.shared.metrics.fetch_succeeded();
                f
            }
            Err(e) => {
                self.shared.metrics.fetch_failed();
                // The loaded revision stays current: its failed releases are still retried.
                tracing::error!(error = %e, "fetching the profile repository failed");
                let msg = e.to_string();
                self.shared.status.update(|s| {
                    s.last_error = Some(msg);
                    s.phase = OverallPhase::Degraded;
                });
                self.shared.readiness.set_ready();
                return CycleEnd::Retryable;
            }
        };
        let cluster = self.cluster_name().await;
        // The overlay list of --profiles-configmap, read every cycle: its content is part of
        // the revision's identity.
        let overlay = self.loader.overlay().await;
        let fetched = match &overlay {
            Ok(Some(o)) => revision::Fetched {
                revision: o.revision(&fetched.commit),
                ..fetched
            },
            _ => fetched,
        };
        // When this commit was first fetched: a commit fetched again every interval keeps its
        // time, so the status (and the page) change only when something happens. The last
        // successful fetch is the metric strata_last_fetch_success_timestamp_seconds.
        let first_fetched = {
            let s = self.shared.status.snapshot();
            s.revision
                .iter()
                .map(|r| (&r.commit, &r.fetched_at))
                .chain(
                    s.rejected_revision
                        .iter()
                        .map(|r| (&r.commit, &r.fetched_at)),
                )
                .find(|(c, _)| **c == fetched.revision)
                .map(|(_, at)| at.clone())
        };
        let info = RevisionInfo {
            commit: fetched.revision.clone(),
            fetched_at: first_fetched.unwrap_or_else(crate::observe::status::now_rfc3339),
            profiles_path: self.loader.profiles_path(cluster.as_deref()).ok(),
            cluster_name: cluster.clone(),
            mirrored: Vec::new(),
        };
        let loaded = match overlay {
            Ok(o) => {
                self.loader
                    .load_with(&fetched, cluster.as_deref(), o.as_ref())
                    .await
            }
            Err(e) => Err(e),
        };
        let info = RevisionInfo {
            mirrored: self.loader.mirrored(),
            ..info
        };
        // A newer commit that cannot be applied: the older revision is not applied again.
        let forget_other = || {
            if self.current().is_some_and(|c| c.info.commit != info.commit) {
                self.set_current(None);
            }
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(revision::LoadError::Invalid(problems)) => {
                forget_other();
                self.reject(&info, problems);
                self.shared.readiness.set_ready();
                return CycleEnd::Invalid;
            }
            Err(revision::LoadError::Unavailable(errors)) => {
                forget_other();
                for e in &errors {
                    tracing::error!(commit = %info.commit, error = %e, "revision cannot be loaded now; retrying at the next interval");
                }
                let msg = format!(
                    "revision {} cannot be loaded now (retrying at the next interval): {}",
                    info.commit,
                    errors.join("; ")
                );
                self.shared.status.update(|s| {
                    s.last_error = Some(msg);
                    s.phase = OverallPhase::Degraded;
                });
                self.shared.readiness.set_ready();
                return CycleEnd::Retryable;
            }
        };
        // A revision that would uninstall every release strata manages is rejected unless
        // the list allows it (checked before anything runs; when the managed releases cannot
        // be listed nothing is removed anyway).
        if let Ok(managed) = self.managed(&loaded).await
            && let Err(empty) = strata_core::prune::plan_removals(
                &loaded.desired_pairs(),
                &managed,
                loaded.list.prune_settings(),
            )
        {
            forget_other();
            self.reject(
                &info,
                vec![ProblemView {
                    file: loaded.profiles_path.clone(),
                    field: "profiles".into(),
                    message: empty.to_string(),
                }],
            );
            self.shared.readiness.set_ready();
            return CycleEnd::Invalid;
        }
        self.shared.readiness.set_ready();
        let current = Arc::new(Current { info, loaded });
        self.set_current(Some(current.clone()));
        self.apply(&current, shutdown).await
    }

    fn reject(&self, info: &RevisionInfo, problems: Vec<ProblemView>) {
        let already = self
            .shared
            .status
            .snapshot()
            .rejected_revision
            .is_some_and(|r| r.commit == info.commit);
        // Re-checked every interval (a missing chart version may be published later); its
        // problems are logged as errors once per commit.
        for p in &problems {
            if already {
                tracing::debug!(commit = %info.commit, problem = %p, "revision still rejected");
            } else {
                tracing::error!(commit = %info.commit, problem = %p, "revision rejected");
            }
        }
        if !already {
            self.shared.metrics.revision_rejected();
        }
        let problems_text = problems.len();
        self.shared.status.update(|s| {
            s.rejected_revision = Some(RejectedRevision {
                commit: info.commit.clone(),
                fetched_at: info.fetched_at.clone(),
                problems,
            });
            s.last_error = Some(format!(
                "revision {} rejected with {} problem(s); nothing was applied",
                info.commit, problems_text
            ));
            s.phase = if s.revision.is_some() {
                OverallPhase::Degraded
            } else {
                OverallPhase::Invalid
            };
        });
    }

    /// Apply `current` layer by layer, in a `revision` span.
    async fn apply(&self, current: &Current, shutdown: &CancellationToken) -> CycleEnd {
        let span = tracing::info_span!(
            "revision",
            commit = %current.info.commit,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        // The apply's own token: cancelled at shutdown, or when a newer commit is fetched
        // meanwhile (readiness waits end at once; a running helm is never killed).
        let token = self.runner.begin_apply();
        // When the layers are done, a fetch of the watcher still running is let finish: a git
        // killed in the middle of a fetch leaves lock files in the cache (and a `--once`
        // that exits would kill it). At shutdown it is abandoned (the next start removes
        // the locks).
        let done = CancellationToken::new();
        let layers = async {
            let end = self
                .apply_layers(current, &token)
                .instrument(span.clone())
                .await;
            done.cancel();
            end
        };
        let (end, ()) = tokio::join!(
            layers,
            self.watch_for_newer(&current.info.commit, &token, &done, shutdown)
        );
        if end != CycleEnd::AllReady {
            crate::observe::telemetry::record_error(&span, "not every layer became Ready");
        }
        end
    }

    /// While a revision is applied (until `done`): fetch every interval; a commit other than
    /// `applying` cancels `token` (the apply ends its waits and starts nothing new) and the
    /// next cycle starts at once. A fetch under way when `done` is cancelled is finished
    /// (abandoned at `shutdown`).
    async fn watch_for_newer(
        &self,
        applying: &str,
        token: &CancellationToken,
        done: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        loop {
            let interval = *self.interval.lock().unwrap_or_else(|e| e.into_inner());
            tokio::select! {
                () = done.cancelled() => return,
                () = token.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            let fetched = tokio::select! {
                f = self.loader.fetch() => f,
                () = shutdown.cancelled() => return,
            };
            match fetched {
                Ok(f) if f.commit != applying => {
                    self.shared.metrics.fetch_succeeded();
                    tracing::info!(applying, newer = %f.commit, "a newer commit supersedes the revision being applied: its waits end and the newer one is applied now");
                    self.superseded
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    token.cancel();
                    break;
                }
                Ok(_) => self.shared.metrics.fetch_succeeded(),
                Err(e) => {
                    self.shared.metrics.fetch_failed();
                    tracing::warn!(error = %e, "fetching the profile repository during an apply failed");
                }
            }
        }
        done.cancelled().await;
    }

    async fn apply_layers(&self, current: &Current, shutdown: &CancellationToken) -> CycleEnd {
        let Current { info, loaded } = current;
        self.shared.metrics.set_revision(&info.commit);
        self.shared
            .metrics
            .set_layer_timeouts(loaded.layers().map(|(layer, jobs)| {
                let longest = jobs
                    .iter()
                    .map(|j| j.timeout.unwrap_or(self.default_timeout))
                    .max()
                    .unwrap_or(self.default_timeout);
                (layer, longest)
            }));
        // Releases no longer in the list leave the live health watches.
        if let Some(watches) = self.runner.watches() {
            for owner in watches.owners() {
                if !loaded
                    .jobs
                    .values()
                    .any(|j| j.namespace == owner.0 && j.release == owner.1)
                {
                    watches.untrack(&owner);
                }
            }
        }
        // Removals first, highest layer first; a failed one never blocks the installs.
        let pruned = self.prune(info, loaded, shutdown).await;
        let pending = loaded
            .layers()
            .map(|(layer, jobs)| {
                let releases = jobs
                    .iter()
                    .map(|j| {
                        ReleaseStatus::pending(
                            &j.profile,
                            &j.release,
                            &j.namespace,
                            &j.chart_name,
                            &j.chart_version,
                        )
                    })
                    .collect();
                (layer, releases)
            })
            .collect();
        let recheck = self
            .shared
            .status
            .update(|s| s.begin_revision(info, pending));
        if recheck {
            tracing::debug!(commit = %info.commit, "re-checking the applied revision");
        } else {
            tracing::info!(commit = %info.commit, layers = loaded.plan.layers.len(), "applying revision");
        }
        let concurrency = super::capacity::concurrency(self.concurrency);
        let previous = self
            .last_concurrency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(concurrency.value);
        if previous != Some(concurrency.value) {
            tracing::info!(concurrency = concurrency.value, reason = %concurrency.reason, "helm processes at once inside a layer");
        }
        let value = concurrency.value;
        self.shared
            .status
            .update(|s| s.concurrency = Some(concurrency));
        let outcome = layers::run_layers(
            &self.runner,
            &loaded.plan,
            &loaded.jobs,
            value,
            &self.shared.status,
            &self.shared.metrics,
            shutdown,
        )
        .await;
        self.shared.status.update(|s| {
            s.phase = match outcome {
                LayersOutcome::AllReady => {
                    s.last_applied_revision = Some(info.clone());
                    OverallPhase::Ready
                }
                LayersOutcome::Failed => OverallPhase::Failed,
                LayersOutcome::Interrupted => OverallPhase::Progressing,
            };
        });
        if let Err(message) = &pruned {
            self.shared.status.update(|s| {
                s.last_error = Some(message.clone());
                if s.phase == OverallPhase::Ready {
                    s.phase = OverallPhase::Degraded;
                }
            });
        }
        match outcome {
            LayersOutcome::AllReady if pruned.is_err() => CycleEnd::Retryable,
            LayersOutcome::AllReady => {
                if !recheck {
                    tracing::info!(commit = %info.commit, "revision applied: every layer is Ready");
                }
                CycleEnd::AllReady
            }
            LayersOutcome::Failed => {
                tracing::error!(commit = %info.commit, "revision failed: see /status");
                let stalled: Vec<String> = loaded
                    .jobs
                    .values()
                    .filter(|j| {
                        self.shared
                            .retries
                            .state_of(&j.namespace, &j.release)
                            .is_some_and(|r| r.stalled)
                    })
                    .map(|j| format!("{}/{}", j.namespace, j.release))
                    .collect();
                if stalled.is_empty() {
                    CycleEnd::Retryable
                } else {
                    CycleEnd::Stalled { releases: stalled }
                }
            }
            LayersOutcome::Interrupted => CycleEnd::Retryable,
        }
    }
}

impl Agent {
    /// The releases strata manages (helm storage Secrets with strata's labels). When Secrets
    /// cannot be listed cluster-wide, the namespaces of the profile list and of the status
    /// are listed instead.
    async fn managed(
        &self,
        loaded: &revision::Loaded,
    ) -> std::result::Result<Vec<strata_core::prune::Managed>, String> {
        let status = self.shared.status.snapshot();
        let mut namespaces: Vec<String> = loaded
            .list
            .profiles
            .iter()
            .map(|p| p.namespace.clone())
            .chain(
                status
                    .layers
                    .iter()
                    .flat_map(|l| l.releases.iter().map(|r| r.namespace.clone())),
            )
            .chain(status.removals.iter().map(|r| r.namespace.clone()))
            .collect();
        namespaces.sort();
        namespaces.dedup();
        // From the metadata watch of helm's storage once it has listed (no request).
        if let Some(secrets) = self.runner.watches().and_then(|w| {
            w.record_secrets(&crate::executor::releases::managed_selector(
                &self.agent_namespace,
            ))
        }) {
            return Ok(crate::executor::releases::managed_from_secrets(&secrets));
        }
        crate::executor::releases::list_managed(&self.client, &self.agent_namespace, &namespaces)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot find the releases strata manages; nothing is removed this cycle");
                e.to_string()
            })
    }

    /// Uninstall the managed releases the revision no longer has (highest layer first, each
    /// layer finished before the next), or report them orphaned (`prune: false`). `Err` when
    /// a removal failed or the managed releases could not be listed (tried again next cycle).
    async fn prune(
        &self,
        info: &RevisionInfo,
        loaded: &revision::Loaded,
        shutdown: &CancellationToken,
    ) -> std::result::Result<(), String> {
        let managed = self.managed(loaded).await.map_err(|e| {
            format!("cannot find the releases strata manages, so none was removed: {e}")
        })?;
        let plan = match strata_core::prune::plan_removals(
            &loaded.desired_pairs(),
            &managed,
            loaded.list.prune_settings(),
        ) {
            Ok(plan) => plan,
            // Checked when the revision was loaded; a retry cycle finding it now removes
            // nothing.
            Err(e) => return Err(e.to_string()),
        };
        let layer_id = |l: Option<u32>| LayerId::of(l);
        let entry =
            |m: &strata_core::prune::Managed, phase: RemovalPhase, message: String| Removal {
                release: m.name.clone(),
                namespace: m.namespace.clone(),
                profile: m.profile.clone(),
                layer: layer_id(m.layer),
                phase,
                message: Some(message),
                removed_at: None,
            };
        let before = self.shared.status.snapshot();
        let same_commit = before
            .revision
            .as_ref()
            .is_some_and(|r| r.commit == info.commit);
        let was_orphaned = |m: &strata_core::prune::Managed| {
            before.removals.iter().any(|r| {
                r.namespace == m.namespace
                    && r.release == m.name
                    && r.phase == RemovalPhase::Orphaned
            })
        };
        for m in &plan.orphans {
            if !was_orphaned(m) {
                tracing::warn!(release = %m.name, namespace = %m.namespace, "profile gone from the list; kept installed (prune: false)");
                self.shared.status.announce(
                    &m.namespace,
                    &m.name,
                    "Orphaned",
                    format!(
                        "profile {} is gone from the list; the release stays installed because the list says prune: false",
                        m.profile
                    ),
                );
            }
        }
        let previous_failures: Vec<Removal> = before
            .removals
            .iter()
            .filter(|r| r.phase == RemovalPhase::Failed)
            .cloned()
            .collect();
        self.shared.status.update(|s| {
            // Removed releases stay listed while the revision is the same.
            let kept: Vec<Removal> = if same_commit {
                s.removals
                    .drain(..)
                    .filter(|r| r.phase == RemovalPhase::Removed)
                    .collect()
            } else {
                Vec::new()
            };
            s.removals = kept;
            for m in plan.releases() {
                if let Some(failed) = previous_failures
                    .iter()
                    .find(|r| r.namespace == m.namespace && r.release == m.name)
                {
                    // Still Failed until its retry starts.
                    s.removals.push(failed.clone());
                    continue;
                }
                s.removals.retain(|r| !(r.namespace == m.namespace && r.release == m.name));
                s.removals.push(entry(
                    m,
                    RemovalPhase::Removing,
                    format!(
                        "profile {} is gone from the list: waiting to uninstall (highest layer first)",
                        m.profile
                    ),
                ));
            }
            for m in &plan.orphans {
                s.removals.push(entry(
                    m,
                    RemovalPhase::Orphaned,
                    format!(
                        "profile {} is gone from the list; kept installed (prune: false)",
                        m.profile
                    ),
                ));
            }
        });
        for layer in &plan.removals {
            if shutdown.is_cancelled() {
                return Err("shutting down before every removal ran".into());
            }
            let id = layer_id(layer.layer);
            tracing::info!(layer = %id, releases = layer.releases.len(), "removing the releases of a layer");
            let results =
                futures::future::join_all(layer.releases.iter().map(|m| self.remove_one(m, id)))
                    .await;
            let failed: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
            if !failed.is_empty() {
                // The layers below may be what the failing release needs to uninstall
                // cleanly: they wait for the next cycle; the installs go on.
                let rest: Vec<String> = plan
                    .removals
                    .iter()
                    .skip_while(|l| l.layer != layer.layer)
                    .skip(1)
                    .flat_map(|l| l.releases.iter().map(|m| m.key()))
                    .collect();
                if !rest.is_empty() {
                    let waiting = format!(
                        "waiting: an uninstall in layer {id} failed; tried again at the next cycle"
                    );
                    self.shared.status.update(|s| {
                        for r in &mut s.removals {
                            if rest.contains(&format!("{}/{}", r.namespace, r.release)) {
                                r.message = Some(waiting.clone());
                            }
                        }
                    });
                }
                return Err(format!(
                    "removing releases whose profile is gone failed: {}",
                    failed.join("; ")
                ));
            }
        }
        Ok(())
    }

    /// `helm uninstall --wait` of one removed release, recorded in status and as Events.
    async fn remove_one(
        &self,
        m: &strata_core::prune::Managed,
        layer: LayerId,
    ) -> std::result::Result<(), String> {
        let set = |phase: RemovalPhase, message: String| {
            self.shared.status.update(|s| {
                if let Some(r) = s
                    .removals
                    .iter_mut()
                    .find(|r| r.namespace == m.namespace && r.release == m.name)
                {
                    r.phase = phase;
                    r.message = Some(message.clone());
                    if phase == RemovalPhase::Removed {
                        r.removed_at = Some(crate::observe::status::now_rfc3339());
                    }
                }
            });
        };
        let mut why = format!(
            "profile {} (layer {layer}) is gone from the list: helm uninstall --wait",
            m.profile
        );
        // A retry says why the last attempt failed until this one ends.
        let last_failure = self.shared.status.snapshot().removals.iter().find_map(|r| {
            (r.namespace == m.namespace && r.release == m.name && r.phase == RemovalPhase::Failed)
                .then(|| r.message.clone())
                .flatten()
        });
        if let Some(last) = last_failure {
            why.push_str(&format!(" (again; the last attempt failed: {last})"));
        }
        tracing::warn!(release = %m.name, namespace = %m.namespace, %layer, "uninstalling: its profile is gone from the list");
        set(RemovalPhase::Removing, why.clone());
        self.shared
            .status
            .announce(&m.namespace, &m.name, "Uninstalling", why);
        match self.runner.prune_release(&m.name, &m.namespace).await {
            Ok(()) => {
                let message = format!("uninstalled (profile {} is gone from the list)", m.profile);
                tracing::info!(release = %m.name, namespace = %m.namespace, "uninstalled");
                set(RemovalPhase::Removed, message.clone());
                self.shared
                    .status
                    .announce(&m.namespace, &m.name, "Uninstalled", message);
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "helm uninstall failed (tried again at the next cycle): {}",
                    e.helm_message()
                        .map_or_else(|| e.to_string(), str::to_string)
                );
                tracing::error!(release = %m.name, namespace = %m.namespace, error = %message, "uninstall failed");
                set(RemovalPhase::Failed, message.clone());
                self.shared.status.announce(
                    &m.namespace,
                    &m.name,
                    "UninstallFailed",
                    message.clone(),
                );
                Err(format!("{}: {message}", m.key()))
            }
        }
    }
}

/// How long until `at` (zero when it has passed).
fn until(at: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_until(at)).unwrap_or(Duration::ZERO)
}

/// How long to sleep before `next`: a retry cycle starts just after the backoff ended (the
/// release is then due, not still backing off by a clock tick).
fn wait_until(next: NextCycle) -> Duration {
    match next.kind {
        CycleKind::Poll => until(next.at),
        CycleKind::Retry => until(next.at) + Duration::from_millis(20),
    }
}
