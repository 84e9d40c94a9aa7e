//! One agent's cycles: fetch the source, load the revision, reject it or apply it layer by
//! layer.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::parts::Shared;
use super::{AgentConfig, Outcome, Result};
use crate::executor::helm::{Helm, HelmConfig};
use crate::executor::process::Redactor;
use crate::observe::status::{
    OverallPhase, ProblemView, RejectedRevision, ReleaseStatus, RevisionInfo,
};
use crate::reconcile::layers::{self, LayersOutcome};
use crate::reconcile::release;
use crate::source::revision;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CycleResult {
    AllReady,
    NotReady,
}

pub(super) struct Agent {
    loader: revision::Loader,
    runner: release::Runner,
    shared: Shared,
    concurrency: usize,
    client: kube::Client,
    /// The cluster name discovered from kubeadm-config (when needed and not configured).
    discovered_cluster: tokio::sync::Mutex<Option<String>>,
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
        );
        Ok(Self {
            loader,
            runner,
            shared: shared.clone(),
            concurrency: config.concurrency,
            client: client.clone(),
            discovered_cluster: tokio::sync::Mutex::new(None),
        })
    }

    /// Cycle on start and every `interval` (or at once when a retry is requested) until
    /// `shutdown`; with `once`, one cycle. Readiness goes draining as soon as `shutdown` is
    /// cancelled (running helm commands still finish).
    pub(super) async fn run_cycles(
        &self,
        once: bool,
        interval: Duration,
        shutdown: &CancellationToken,
    ) -> Outcome {
        {
            let (readiness, shutdown) = (self.shared.readiness.clone(), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                readiness.set_draining();
            });
        }
        loop {
            let result = self.cycle(shutdown).await;
            if once {
                return if result == CycleResult::AllReady {
                    Outcome::AllReady
                } else {
                    Outcome::NotReady
                };
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.shared.wake.notified() => tracing::info!("cycle started early: retry requested"),
                _ = shutdown.cancelled() => return Outcome::Stopped,
            }
            if shutdown.is_cancelled() {
                return Outcome::Stopped;
            }
        }
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

    /// One fetch-validate-apply cycle.
    async fn cycle(&self, shutdown: &CancellationToken) -> CycleResult {
        let fetched = match self.loader.fetch().await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "fetching the profile repository failed");
                let msg = e.to_string();
                self.shared.status.update(|s| {
                    s.last_error = Some(msg);
                    s.phase = OverallPhase::Degraded;
                });
                self.shared.readiness.set_ready();
                return CycleResult::NotReady;
            }
        };
        let cluster = self.cluster_name().await;
        let info = RevisionInfo {
            commit: fetched.commit.clone(),
            fetched_at: crate::observe::status::now_rfc3339(),
            profiles_path: self.loader.profiles_path(cluster.as_deref()).ok(),
            cluster_name: cluster.clone(),
        };
        let loaded = match self.loader.load(&fetched, cluster.as_deref()).await {
            Ok(l) => l,
            Err(revision::LoadError::Invalid(problems)) => {
                self.reject(&info, problems);
                self.shared.readiness.set_ready();
                return CycleResult::NotReady;
            }
            Err(revision::LoadError::Unavailable(errors)) => {
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
                return CycleResult::NotReady;
            }
        };
        self.shared.readiness.set_ready();
        let span = tracing::info_span!(
            "revision",
            commit = %info.commit,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        let result = self
            .apply(info, loaded, shutdown)
            .instrument(span.clone())
            .await;
        if result != CycleResult::AllReady {
            crate::observe::telemetry::record_error(&span, "not every layer became Ready");
        }
        result
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

    async fn apply(
        &self,
        info: RevisionInfo,
        loaded: revision::Loaded,
        shutdown: &CancellationToken,
    ) -> CycleResult {
        self.shared.metrics.set_revision(&info.commit);
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
            .update(|s| s.begin_revision(&info, pending));
        if recheck {
            tracing::debug!(commit = %info.commit, "re-checking the applied revision");
        } else {
            tracing::info!(commit = %info.commit, layers = loaded.plan.layers.len(), "applying revision");
        }
        let outcome = layers::run_layers(
            &self.runner,
            &loaded.plan,
            &loaded.jobs,
            self.concurrency,
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
        match outcome {
            LayersOutcome::AllReady => {
                if !recheck {
                    tracing::info!(commit = %info.commit, "revision applied: every layer is Ready");
                }
                CycleResult::AllReady
            }
            LayersOutcome::Failed => {
                tracing::error!(commit = %info.commit, "revision failed: see /status");
                CycleResult::NotReady
            }
            LayersOutcome::Interrupted => CycleResult::NotReady,
        }
    }
}
