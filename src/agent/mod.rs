//! The agent loop (`strata run`).
//!
//! On start and every `--interval`: fetch the Git source and load the revision
//! ([`revision::Loader`]: profile list, values files, allocation, charts, plan). A revision with
//! any problem is rejected as a whole: its problems go to the status and the logs, no helm
//! runs, and the last good revision keeps being served. A good revision is applied layer by
//! layer ([`layers::run_layers`] with the [`release::Runner`]): each release's observed state
//! is read from helm's release storage and `strata_core::reconcile::decide_with` says whether
//! helm runs at all, and how releases left pending by an interrupted helm are recovered. A revision is applied to its end before the next fetch.
//!
//! Readiness (`GET /readyz`): ready once the first revision was processed (applied, being
//! applied, rejected, or its fetch failed — `/status` then says which); not ready while
//! draining after a shutdown signal.

pub mod annotation;
pub mod leader;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::executor::helm::{Helm, HelmConfig};
use crate::executor::process::Redactor;
use crate::observe::metrics::Metrics;
use crate::observe::report::Reporter;
use crate::observe::server::{self, AppState, Readiness};
use crate::observe::status::{
    LayerId, LayerPhase, LayerStatus, OverallPhase, ProblemView, RejectedRevision, ReleasePhase,
    ReleaseStatus, RevisionInfo, StatusStore,
};

pub use crate::config::{AgentConfig, SourceConfig};
use crate::reconcile::layers::{self, LayersOutcome};
use crate::reconcile::release;
use crate::source::revision;

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--once`: every layer is Ready.
    AllReady,
    /// `--once`: the revision was rejected, could not be fetched, or a release failed.
    NotReady,
    /// Continuous mode stopped by a shutdown signal.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for the status API: {source}; choose another --listen")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kube(#[from] crate::kube_api::Error),
    #[error("helm is not usable: {0}")]
    Helm(#[from] crate::executor::helm::Error),
    #[error(transparent)]
    Source(#[from] revision::SetupError),
    #[error("leader election: {0}")]
    Leader(#[from] crate::agent::leader::Error),
    #[error("lost the leadership of Lease {0}; exiting so that a restarted agent competes again")]
    LeadershipLost(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Run the agent until `shutdown` (or, with `--once`, until the first revision is done).
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<Outcome> {
    let AgentConfig {
        source,
        once,
        interval,
        concurrency,
        helm,
        default_timeout,
        listen,
        kubeconfig,
        namespace,
        lease,
        admin_token,
        work_dir,
    } = config;
    let status = StatusStore::new();
    let metrics = Arc::new(Metrics::new());
    {
        let m = metrics.clone();
        status.observe(move |s| m.observe_status(s));
    }
    let readiness = Readiness::new();
    let retries = Arc::new(crate::reconcile::retry::RetryBook::default());
    let wake = Arc::new(tokio::sync::Notify::new());

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(listen);
    tracing::info!(addr = %bound, "status API listening");
    let server_stop = CancellationToken::new();
    let server = {
        let app = server::app(AppState {
            status: status.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            retry: Some(server::RetryHandle {
                book: retries.clone(),
                wake: wake.clone(),
            }),
            admin_token,
        });
        let stop = server_stop.clone();
        tokio::spawn(async move {
            if let Err(e) = server::serve(listener, app, stop.cancelled_owned()).await {
                tracing::error!(error = %e, "status API failed");
            }
        })
    };

    let client = crate::kube_api::client(kubeconfig.as_deref()).await?;
    let redactor = Redactor::new();
    let loader = revision::Loader::new(source, work_dir.path(), redactor.clone())
        .await?
        .with_secrets(client.clone(), namespace.clone());
    let detect_started = std::time::Instant::now();
    let helm = Helm::new(
        HelmConfig {
            binary: helm,
            work_dir: work_dir.path().to_path_buf(),
            kubeconfig: kubeconfig.clone(),
            kube_context: None,
        },
        redactor,
    )
    .await;
    metrics.helm_command("version", detect_started.elapsed(), helm.is_err());
    let helm = helm?;
    tracing::info!(version = %helm.version(), binary = %helm.binary().display(), "helm detected");

    // Leader election: only the leader runs helm and writes the ConfigMap; a standby serves
    // /status and waits.
    let leadership = match &lease {
        Some(name) => {
            let elector = crate::agent::leader::LeaderElector::new(
                client.clone(),
                namespace.clone(),
                name.clone(),
                crate::agent::leader::default_identity(),
                crate::agent::leader::Timings::default(),
            )?;
            let lease_ref = format!("{namespace}/{name}");
            tracing::info!(lease = %lease_ref, identity = elector.identity(), "waiting for leadership");
            status.update(|s| {
                s.leader = Some(crate::observe::status::LeaderView {
                    lease: lease_ref.clone(),
                    identity: elector.identity().to_string(),
                    holder: elector.current_holder(),
                    leading: false,
                });
            });
            {
                let mut holders = elector.holder_changes();
                let status = status.clone();
                tokio::spawn(async move {
                    while holders.changed().await.is_ok() {
                        let holder = holders.borrow_and_update().clone();
                        status.update(|s| {
                            if let Some(l) = s.leader.as_mut() {
                                l.holder = holder;
                            }
                        });
                    }
                });
            }
            match elector.acquire(&shutdown).await {
                Ok(l) => {
                    status.update(|s| {
                        if let Some(v) = s.leader.as_mut() {
                            v.leading = true;
                        }
                    });
                    Some((l, lease_ref))
                }
                Err(_) if shutdown.is_cancelled() => {
                    readiness.set_draining();
                    server_stop.cancel();
                    let _ = server.await;
                    return Ok(Outcome::Stopped);
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => None,
    };
    status.update(|s| {
        s.writer = Some(match &leadership {
            Some((_, lease_ref)) => format!(
                "this agent holds Lease {lease_ref}: it alone runs helm and may recover releases left pending"
            ),
            None => "no leader election: this agent is by definition the only writer and may recover releases left pending".to_string(),
        });
    });
    // Work stops on shutdown, or at once when leadership is lost.
    let work = CancellationToken::new();
    {
        let (work, shutdown) = (work.clone(), shutdown.clone());
        let lost = leadership.as_ref().map(|(l, _)| l.lost());
        tokio::spawn(async move {
            match lost {
                Some(lost) => tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = lost.cancelled() => {}
                },
                None => shutdown.cancelled().await,
            }
            work.cancel();
        });
    }
    let shutdown = work;
    // Retry by annotation on the status ConfigMap (only the writer acts on it).
    let annotation_stop = shutdown.child_token();
    let annotation_watch = tokio::spawn(annotation::watch(
        client.clone(),
        namespace.clone(),
        retries.clone(),
        wake.clone(),
        annotation_stop.clone(),
    ));

    let report_stop = CancellationToken::new();
    let reporter = Reporter::new(client.clone(), namespace.clone(), status.clone())
        .spawn(Duration::from_secs(1), report_stop.clone());

    let runner = release::Runner::new(
        helm,
        client.clone(),
        status.clone(),
        metrics.clone(),
        default_timeout,
        retries.clone(),
    );
    let agent = Agent {
        loader,
        runner,
        status: status.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        concurrency,
        client: client.clone(),
        discovered_cluster: tokio::sync::Mutex::new(None),
    };

    {
        // Not ready as soon as draining starts (running helm commands still finish).
        let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.set_draining();
        });
    }
    let outcome = loop {
        let result = agent.cycle(&shutdown).await;
        if once {
            break if result == CycleResult::AllReady {
                Outcome::AllReady
            } else {
                Outcome::NotReady
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => tracing::info!("cycle started early: retry requested"),
            _ = shutdown.cancelled() => break Outcome::Stopped,
        }
        if shutdown.is_cancelled() {
            break Outcome::Stopped;
        }
    };
    readiness.set_draining();
    annotation_stop.cancel();
    let _ = annotation_watch.await;
    report_stop.cancel();
    let _ = reporter.await;
    if let Some((leadership, lease_ref)) = leadership {
        if leadership.is_lost() && outcome == Outcome::Stopped {
            server_stop.cancel();
            let _ = server.await;
            return Err(Error::LeadershipLost(lease_ref));
        }
        if let Err(e) = leadership.release().await {
            tracing::warn!(error = %e, "releasing the leadership failed; the Lease expires on its own");
        }
    }
    server_stop.cancel();
    let _ = server.await;
    Ok(outcome)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CycleResult {
    AllReady,
    NotReady,
}

struct Agent {
    loader: revision::Loader,
    runner: release::Runner,
    status: StatusStore,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    concurrency: usize,
    client: kube::Client,
    /// The cluster name discovered from kubeadm-config (when needed and not configured).
    discovered_cluster: tokio::sync::Mutex<Option<String>>,
}

impl Agent {
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
                self.status.update(|s| {
                    s.last_error = Some(msg);
                    s.phase = OverallPhase::Degraded;
                });
                self.readiness.set_ready();
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
                self.readiness.set_ready();
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
                self.status.update(|s| {
                    s.last_error = Some(msg);
                    s.phase = OverallPhase::Degraded;
                });
                self.readiness.set_ready();
                return CycleResult::NotReady;
            }
        };
        self.readiness.set_ready();
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
            self.metrics.revision_rejected();
        }
        let problems_text = problems.len();
        self.status.update(|s| {
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
        self.metrics.set_revision(&info.commit);
        let jobs = loaded.jobs;
        let recheck = self.status.update(|s| {
            let same_commit = s.revision.as_ref().is_some_and(|r| r.commit == info.commit);
            let recheck = same_commit && s.phase == OverallPhase::Ready;
            let previous_layers: Vec<(LayerId, Option<String>)> = s
                .layers
                .iter()
                .filter(|l| l.phase == LayerPhase::Ready)
                .map(|l| (l.layer, l.ready_at.clone()))
                .collect();
            let previous: Vec<ReleaseStatus> = s
                .layers
                .drain(..)
                .flat_map(|l| l.releases.into_iter())
                .collect();
            s.layers = jobs
                .iter()
                .map(|(layer, jobs)| LayerStatus {
                    layer: *layer,
                    phase: LayerPhase::Pending,
                    ready_at: if same_commit {
                        previous_layers
                            .iter()
                            .find(|(l, _)| l == layer)
                            .and_then(|(_, at)| at.clone())
                    } else {
                        None
                    },
                    releases: jobs
                        .iter()
                        .map(|j| {
                            let mut r = ReleaseStatus::pending(
                                &j.profile,
                                &j.release,
                                &j.namespace,
                                &j.chart_name,
                                &j.chart_version,
                            );
                            let prev = previous
                                .iter()
                                .find(|p| p.namespace == j.namespace && p.name == j.release);
                            if let Some(p) = prev {
                                r.helm_revision = p.helm_revision;
                                r.ready_at = p.ready_at.clone();
                                r.last_recovery = p.last_recovery.clone();
                                r.last_remediation = p.last_remediation.clone();
                                if same_commit {
                                    r.attempts = p.attempts;
                                    // Re-checking an unchanged revision: keep Ready releases
                                    // Ready (no churn in status and events) unless they drift.
                                    if p.phase == ReleasePhase::Ready
                                        && p.chart == r.chart
                                        && p.version == r.version
                                    {
                                        r.phase = ReleasePhase::Ready;
                                        r.action = p.action.clone();
                                        r.started_at = p.started_at.clone();
                                        r.message = p.message.clone();
                                    }
                                }
                            }
                            r
                        })
                        .collect(),
                })
                .collect();
            s.revision = Some(info.clone());
            s.rejected_revision = None;
            s.last_error = None;
            if !recheck {
                s.phase = OverallPhase::Progressing;
            }
            recheck
        });
        if recheck {
            tracing::debug!(commit = %info.commit, "re-checking the applied revision");
        } else {
            tracing::info!(commit = %info.commit, layers = jobs.len(), "applying revision");
        }
        let by_key: std::collections::BTreeMap<
            strata_core::plan::ReleaseKey,
            crate::source::revision::ReleaseJob,
        > = jobs
            .iter()
            .flat_map(|(_, js)| js.iter())
            .map(|j| {
                (
                    strata_core::plan::ReleaseKey::new(&j.namespace, &j.release),
                    j.clone(),
                )
            })
            .collect();
        let outcome = layers::run_layers(
            &self.runner,
            &loaded.plan,
            &by_key,
            self.concurrency,
            &self.status,
            &self.metrics,
            shutdown,
        )
        .await;
        self.status.update(|s| {
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
