//! The agent loop (`strata run`).
//!
//! On start and every `--interval`: fetch the Git source and load the revision
//! ([`revision::Loader`](crate::source::revision::Loader): profile list, values files, allocation, charts, plan). A revision with
//! any problem is rejected as a whole: its problems go to the status and the logs, no helm
//! runs, and the last good revision keeps being served. A good revision is applied layer by
//! layer ([`run_layers`](crate::reconcile::layers::run_layers) with the
//! [`Runner`](crate::reconcile::release::Runner)): each release's observed state
//! is read from helm's release storage and `strata_core::reconcile::decide_with` says whether
//! helm runs at all, and how releases left pending by an interrupted helm are recovered. A revision is applied to its end before the next fetch; a release that failed is retried when its backoff ends, by a retry cycle that applies the loaded revision again (without a fetch) when that comes before the next poll.
//!
//! Readiness (`GET /readyz`): ready once the first revision was processed (applied, being
//! applied, rejected, or its fetch failed — `/status` then says which); not ready while
//! draining after a shutdown signal.
//!
//! [`run`] composes the parts of `parts` (the status API, leadership, the writer's
//! background tasks) around the cycle loop of `cycle`; its [`AgentConfig`] is checked
//! before (by [`crate::config::compile`]).

pub mod annotation;
mod capacity;
mod cycle;
pub mod leader;
mod parts;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

pub use crate::config::{AgentConfig, SourceConfig};
use crate::source::revision;
use cycle::{Agent, Schedule};
use parts::{Background, Elector, Server, Shared};

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--once`: every layer is Ready (exit 0).
    AllReady,
    /// `--once` gave up: the revision is invalid or a release is Stalled; or it was stopped
    /// by a shutdown signal before every layer was Ready (exit 1).
    NotReady,
    /// `--once`: the deadline (`--once-timeout`) passed before every layer was Ready (exit 2).
    TimedOut,
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

/// Run the agent until `shutdown` (or, with `--once`, until the revision is done: see
/// [`Outcome`]).
/// The status API starts first and stops last; a shutdown signal drains (readiness goes
/// draining, running helm commands finish); a lost leadership stops the work at once and
/// ends in [`Error::LeadershipLost`].
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<Outcome> {
    run_observed(config, shutdown, |_| {}).await
}

/// [`run`], calling `observer` with the status after every change (`strata run` draws its
/// progress board on a terminal with it). The status is the redacted one `/status` serves.
pub async fn run_observed(
    config: AgentConfig,
    shutdown: CancellationToken,
    observer: impl Fn(&crate::observe::status::Status) + Send + Sync + 'static,
) -> Result<Outcome> {
    let shared = Shared::new();
    shared.status.observe(observer);
    let server = Server::start(config.listen, &shared, config.admin_token.clone()).await?;
    let client = crate::kube_api::client(config.kubeconfig.as_deref()).await?;
    let mut agent = Agent::start(&config, &client, &shared).await?;
    // Only the writer runs helm and writes the ConfigMap; a standby serves /status and waits.
    let waited = Elector::wait(
        config.lease.as_deref(),
        &client,
        &config.namespace,
        &shared.status,
        &shutdown,
    )
    .await?;
    let Some(elector) = waited else {
        shared.readiness.set_draining();
        server.stop().await;
        return Ok(Outcome::Stopped);
    };
    // Work stops on shutdown, or at once when the leadership is lost.
    let work = elector.work_token(&shutdown);
    // A wait for custom health checks ends with the work (helm itself is never killed by it).
    agent.stop_waits_with(&work);
    // Live health of every release between revisions, from the shared watches.
    if let Some(watches) = agent.watches() {
        tokio::spawn(crate::observe::live::monitor(
            watches,
            shared.status.clone(),
            shared.metrics.clone(),
            shared.wake.clone(),
            work.clone(),
        ));
    }
    // The previous writer's times to Ready (read before this agent writes the ConfigMap): a
    // restart or a change of leader keeps the slowest-first order of the layers.
    let inherited = crate::observe::report::Reporter::new(
        client.clone(),
        &config.namespace,
        shared.status.clone(),
    )
    .inherited_ready_ms()
    .await;
    shared.status.update(|s| s.inherited_ready_ms = inherited);
    let background = Background::start(&client, &config.namespace, &shared, &work);
    let schedule = Schedule {
        interval: config.interval,
        once: config.once.then_some(config.once_timeout),
    };
    let outcome = agent.run_cycles(schedule, &work).await;
    shared.readiness.set_draining();
    background.stop().await;
    let ended = elector.finish(outcome).await;
    server.stop().await;
    ended.map(|()| outcome)
}
