//! The parts [`super::run`] composes, each started in one place and stopped in one place:
//! the shared state ([`Shared`]), the status API ([`Server`]), leadership ([`Elector`]) and
//! the writer's background tasks ([`Background`]: the retry annotation watch and the
//! [`Reporter`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::leader::{self, LeaderElector, Leadership};
use super::{Error, Outcome, Result, annotation};
use crate::observe::metrics::Metrics;
use crate::observe::report::Reporter;
use crate::observe::server::{self, AdminToken, AppState, Readiness};
use crate::observe::status::{LeaderView, StatusStore};
use crate::reconcile::retry::RetryBook;

/// What the parts share: the status, its metrics, readiness, retry requests and the wake-up
/// of the cycle loop (a retry was requested).
#[derive(Clone)]
pub(super) struct Shared {
    pub status: StatusStore,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub retries: Arc<RetryBook>,
    pub wake: Arc<Notify>,
}

impl Shared {
    pub fn new() -> Self {
        let status = StatusStore::new();
        let metrics = Arc::new(Metrics::new());
        {
            let m = metrics.clone();
            status.observe(move |s| m.observe_status(s));
        }
        Self {
            status,
            metrics,
            readiness: Readiness::new(),
            retries: Arc::new(RetryBook::default()),
            wake: Arc::new(Notify::new()),
        }
    }
}

/// The status API (`/status`, `/metrics`, health, retry requests): bound first, stopped last.
pub(super) struct Server {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Bind `listen` and serve in the background.
    pub async fn start(
        listen: SocketAddr,
        shared: &Shared,
        admin_token: Option<AdminToken>,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                addr: listen,
                source,
            })?;
        let bound = listener.local_addr().unwrap_or(listen);
        tracing::info!(addr = %bound, "status API listening");
        let app = server::app(AppState {
            status: shared.status.clone(),
            metrics: shared.metrics.clone(),
            readiness: shared.readiness.clone(),
            retry: Some(server::RetryHandle {
                book: shared.retries.clone(),
                wake: shared.wake.clone(),
            }),
            admin_token,
        });
        let stop = CancellationToken::new();
        let done = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = server::serve(listener, app, done.cancelled_owned()).await {
                tracing::error!(error = %e, "status API failed");
            }
        });
        Ok(Self { stop, task })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Whether this agent may write (run helm, write the status ConfigMap): without a lease at
/// once; with one, while it holds the Lease.
pub(super) struct Elector {
    /// The leadership and `namespace/name` of its Lease; `None` without leader election.
    held: Option<(Leadership, String)>,
}

impl Elector {
    /// Wait until this agent may write, showing the Lease's holder in the status meanwhile.
    /// `Ok(None)`: shutdown came first.
    pub async fn wait(
        lease: Option<&str>,
        client: &kube::Client,
        namespace: &str,
        status: &StatusStore,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>> {
        let held = match lease {
            Some(name) => match acquire(name, client, namespace, status, shutdown).await? {
                Some(held) => Some(held),
                None => return Ok(None),
            },
            None => None,
        };
        status.update(|s| {
            s.writer = Some(match &held {
                Some((_, lease_ref)) => format!(
                    "this agent holds Lease {lease_ref}: it alone runs helm and may recover releases left pending"
                ),
                None => "no leader election: this agent is by definition the only writer and may recover releases left pending".to_string(),
            });
        });
        Ok(Some(Self { held }))
    }

    /// A token cancelled on `shutdown`, or at once when the leadership is lost.
    pub fn work_token(&self, shutdown: &CancellationToken) -> CancellationToken {
        let work = CancellationToken::new();
        let (stop, shutdown) = (work.clone(), shutdown.clone());
        let lost = self.held.as_ref().map(|(l, _)| l.lost());
        tokio::spawn(async move {
            match lost {
                Some(lost) => tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = lost.cancelled() => {}
                },
                None => shutdown.cancelled().await,
            }
            stop.cancel();
        });
        work
    }

    /// Give the Lease back; [`Error::LeadershipLost`] when the agent stopped because the
    /// leadership was lost.
    pub async fn finish(self, outcome: Outcome) -> Result<()> {
        let Some((leadership, lease_ref)) = self.held else {
            return Ok(());
        };
        if leadership.is_lost() && outcome == Outcome::Stopped {
            return Err(Error::LeadershipLost(lease_ref));
        }
        if let Err(e) = leadership.release().await {
            tracing::warn!(error = %e, "releasing the leadership failed; the Lease expires on its own");
        }
        Ok(())
    }
}

/// Wait for the Lease `namespace/name`; `Ok(None)`: shutdown came first.
async fn acquire(
    name: &str,
    client: &kube::Client,
    namespace: &str,
    status: &StatusStore,
    shutdown: &CancellationToken,
) -> Result<Option<(Leadership, String)>> {
    let elector = LeaderElector::new(
        client.clone(),
        namespace.to_string(),
        name.to_string(),
        leader::default_identity(),
        leader::Timings::default(),
    )?;
    let lease_ref = format!("{namespace}/{name}");
    tracing::info!(lease = %lease_ref, identity = elector.identity(), "waiting for leadership");
    status.update(|s| {
        s.leader = Some(LeaderView {
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
    match elector.acquire(shutdown).await {
        Ok(l) => {
            status.update(|s| {
                if let Some(v) = s.leader.as_mut() {
                    v.leading = true;
                }
            });
            Ok(Some((l, lease_ref)))
        }
        Err(_) if shutdown.is_cancelled() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The writer's background tasks: the retry annotation watch on the status ConfigMap
/// (stops with `work`) and the [`Reporter`] (status ConfigMap and Events, stopped after the
/// last cycle so that it reports the end).
pub(super) struct Background {
    annotation_stop: CancellationToken,
    annotation: JoinHandle<()>,
    report_stop: CancellationToken,
    reporter: JoinHandle<()>,
}

impl Background {
    pub fn start(
        client: &kube::Client,
        namespace: &str,
        shared: &Shared,
        work: &CancellationToken,
    ) -> Self {
        let annotation_stop = work.child_token();
        let annotation = tokio::spawn(annotation::watch(
            client.clone(),
            namespace.to_string(),
            shared.retries.clone(),
            shared.wake.clone(),
            annotation_stop.clone(),
        ));
        let report_stop = CancellationToken::new();
        let reporter = Reporter::new(client.clone(), namespace, shared.status.clone())
            .spawn(Duration::from_secs(1), report_stop.clone());
        Self {
            annotation_stop,
            annotation,
            report_stop,
            reporter,
        }
    }

    pub async fn stop(self) {
        self.annotation_stop.cancel();
        let _ = self.annotation.await;
        self.report_stop.cancel();
        let _ = self.reporter.await;
    }
}
