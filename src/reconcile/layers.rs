//! Runs the releases of a revision layer by layer, driven by strata-core's pure scheduler
//! (`strata_core::schedule::next_actions`): after every finished release it says what may
//! start. Rules (decided there): layers run in order; the next layer starts only when every
//! release of the layer below is Ready; when a release fails its siblings still finish and
//! every layer above is Skipped; inside a layer a release waits for the releases it depends on
//! (`dependsOn`) and is Skipped when one of them failed. This module adds the effects: up to
//! `concurrency` helm processes at once (a [`HelmSlot`] each; a release waiting for its
//! objects to become ready after helm exited holds none, so the next release starts), the
//! slowest (by their last observed time to Ready) started first, a `layer` span per layer,
//! layer timings, and the Skipped status. A shutdown lets running releases finish (helm is
//! never killed by a drain) and starts nothing new.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Instant;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use strata_core::plan::{Plan, ReleaseKey};
use strata_core::schedule::{BlockReason, Outcome, ReleaseState, next_actions, slowest_first};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::observe::metrics::Metrics;
use crate::observe::status::{LayerId, LayerPhase, ReleasePhase, StatusStore, now_rfc3339};

/// What a release run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseResult {
    Ready,
    Failed(String),
}

/// Runs one release to Ready or Failed, updating its status on the way.
pub trait ReleaseRunner<J>: Sync {
    /// Run one release. It starts holding `slot`, and holds it while it runs helm; it
    /// releases it while it waits for anything else (its objects to become ready).
    fn run(&self, job: &J, slot: HelmSlot) -> impl Future<Output = ReleaseResult> + Send;
}

/// The right to run helm: one of `concurrency` permits. The scheduler gives each release one
/// when it starts it (slowest first); the release gives it back while it waits without helm
/// ([`HelmSlot::release`]) and takes one again before its next helm step ([`HelmSlot::hold`]).
pub struct HelmSlot {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    freed: std::sync::Arc<tokio::sync::Notify>,
}

impl HelmSlot {
    /// Hold a permit (waiting for one when every permit is held).
    pub async fn hold(&mut self) {
        if self.permit.is_none() {
            self.permit = self.slots.clone().acquire_owned().await.ok();
        }
    }

    /// Give the permit back: the scheduler may start the next release.
    pub fn release(&mut self) {
        if self.permit.take().is_some() {
            self.freed.notify_one();
        }
    }

    /// A slot of its own (one permit), for a release run outside the scheduler.
    pub fn alone() -> Self {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        Self {
            permit: slots.clone().try_acquire_owned().ok(),
            slots,
            freed: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl Drop for HelmSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// How a revision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayersOutcome {
    /// Every release of every layer is Ready.
    AllReady,
    /// A release failed; the layers above were skipped.
    Failed,
    /// Shutdown was requested before every layer ran.
    Interrupted,
}

/// The status id of a planned layer.
pub fn layer_id(plan: &Plan, index: usize) -> LayerId {
    LayerId::of(plan.layers[index].layer.map(|n| n.0))
}

struct OpenLayer {
    span: tracing::Span,
    started: Instant,
    /// Already Ready when it started (an unchanged revision re-checked).
    was_ready: bool,
}

/// Run the releases of `plan` (jobs by release key) with `runner`.
pub async fn run_layers<J, R>(
    runner: &R,
    plan: &Plan,
    jobs: &BTreeMap<ReleaseKey, J>,
    concurrency: usize,
    status: &StatusStore,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> LayersOutcome
where
    J: Sync,
    R: ReleaseRunner<J>,
{
    let layer_of: HashMap<&ReleaseKey, usize> = plan
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.releases.iter().map(move |r| (&r.release, i)))
        .collect();
    let mut states: BTreeMap<ReleaseKey, ReleaseState> = BTreeMap::new();
    let mut open: HashMap<usize, OpenLayer> = HashMap::new();
    let mut running = FuturesUnordered::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let freed = std::sync::Arc::new(tokio::sync::Notify::new());
    // The last observed time to Ready of each release: the slowest start first.
    let expected: HashMap<ReleaseKey, u64> = status.read(|s| {
        s.releases()
            .filter_map(|r| {
                r.last_ready_ms
                    .map(|ms| (ReleaseKey::new(&r.namespace, &r.name), ms))
            })
            .collect()
    });
    // Releases whose status says they wait for a dependency, with that message.
    let mut waiting_shown: HashMap<ReleaseKey, String> = HashMap::new();
    let step = loop {
        let mut step = next_actions(plan, &states);
        show_waiting_for_dependencies(&step, status, &mut waiting_shown);
        if step.done {
            break step;
        }
        slowest_first(&mut step.start, |k| expected.get(k).copied());
        if !shutdown.is_cancelled() {
            for key in &step.start {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let slot = HelmSlot {
                    slots: slots.clone(),
                    permit: Some(permit),
                    freed: freed.clone(),
                };
                let index = layer_of.get(key).copied().unwrap_or_default();
                let Some(job) = jobs.get(key) else {
                    states.insert(
                        key.clone(),
                        ReleaseState::Failed {
                            message: format!("no job for release {key}"),
                        },
                    );
                    continue;
                };
                let layer = open.entry(index).or_insert_with(|| {
                    let id = layer_id(plan, index);
                    OpenLayer {
                        span: tracing::info_span!(
                            "layer",
                            layer = %id,
                            releases = plan.layers[index].releases.len(),
                            otel.status_code = tracing::field::Empty,
                            otel.status_description = tracing::field::Empty,
                        ),
                        started: Instant::now(),
                        was_ready: status.read(|s| {
                            s.layers
                                .iter()
                                .any(|l| l.layer == id && l.phase == LayerPhase::Ready)
                        }),
                    }
                });
                states.insert(key.clone(), ReleaseState::Running);
                if let Some(shown) = waiting_shown.remove(key) {
                    status.update(|s| {
                        if let Some(r) = s.release_mut(&key.namespace, &key.name)
                            && r.message.as_deref() == Some(shown.as_str())
                        {
                            r.message = None;
                        }
                    });
                }
                let key = key.clone();
                running.push(
                    async move { (key, runner.run(job, slot).await) }
                        .instrument(layer.span.clone()),
                );
            }
        }
        // A release finished, or one gave its helm slot back (the next may start).
        let finished = tokio::select! {
            finished = running.next() => finished,
            () = freed.notified(), if !running.is_empty() => continue,
        };
        let Some((key, result)) = finished else {
            // Nothing running and nothing may start: only a shutdown gets here.
            return LayersOutcome::Interrupted;
        };
        let index = layer_of.get(&key).copied().unwrap_or_default();
        states.insert(
            key,
            match result {
                ReleaseResult::Ready => ReleaseState::Ready,
                ReleaseResult::Failed(message) => ReleaseState::Failed { message },
            },
        );
        finish_layer_if_done(plan, index, &states, &mut open, status, metrics);
    };
    // Releases that will not run in this attempt.
    let skipped: Vec<(ReleaseKey, String)> = step
        .blocked
        .iter()
        .filter(|(_, reason)| reason.is_skipped())
        .map(|(key, reason)| (key.clone(), reason.to_string()))
        .collect();
    if !skipped.is_empty() {
        status.update(|s| {
            for (key, reason) in &skipped {
                if let Some(r) = s.release_mut(&key.namespace, &key.name) {
                    r.phase = ReleasePhase::Skipped;
                    r.message = Some(reason.clone());
                    r.not_ready.clear();
                }
            }
        });
    }
    match step.outcome {
        Some(Outcome::Succeeded) => LayersOutcome::AllReady,
        _ => LayersOutcome::Failed,
    }
}

/// A Pending release waiting for a release of its layer it depends on says so in its status
/// (`waiting for certs/issuer (dependsOn)`); the status is only written when a message
/// changes. `shown` keeps what was written, so it can be cleared when the release starts.
fn show_waiting_for_dependencies(
    step: &strata_core::schedule::Step,
    status: &StatusStore,
    shown: &mut HashMap<ReleaseKey, String>,
) {
    let changed: Vec<(ReleaseKey, String)> = step
        .blocked
        .iter()
        .filter(|(_, reason)| matches!(**reason, BlockReason::WaitingForDependency { .. }))
        .map(|(key, reason)| (key.clone(), reason.to_string()))
        .filter(|(key, message)| shown.get(key) != Some(message))
        .collect();
    if changed.is_empty() {
        return;
    }
    status.update(|s| {
        for (key, message) in &changed {
            if let Some(r) = s.release_mut(&key.namespace, &key.name)
                && r.phase == ReleasePhase::Pending
            {
                r.message = Some(message.clone());
            }
        }
    });
    for (key, message) in changed {
        tracing::debug!(release = %key, %message, "waiting for a dependency");
        shown.insert(key, message);
    }
}

/// Close a layer's span once every release of it finished: Ready -> timing and `readyAt`;
/// a failure -> the span records the error.
fn finish_layer_if_done(
    plan: &Plan,
    index: usize,
    states: &BTreeMap<ReleaseKey, ReleaseState>,
    open: &mut HashMap<usize, OpenLayer>,
    status: &StatusStore,
    metrics: &Metrics,
) {
    let releases = &plan.layers[index].releases;
    let state = |r: &strata_core::plan::PlannedRelease| states.get(&r.release).cloned();
    if !releases.iter().all(|r| {
        matches!(
            state(r),
            Some(ReleaseState::Ready | ReleaseState::Failed { .. })
        )
    }) {
        return;
    }
    let Some(layer) = open.remove(&index) else {
        return;
    };
    let id = layer_id(plan, index);
    let failed: Vec<String> = releases
        .iter()
        .filter_map(|r| match state(r) {
            Some(ReleaseState::Failed { message }) => Some(format!("{}: {message}", r.release)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        crate::observe::telemetry::record_error(&layer.span, &failed.join("; "));
        tracing::error!(layer = %id, failed = failed.len(), "layer failed");
        return;
    }
    if layer.was_ready {
        tracing::debug!(layer = %id, "layer still ready");
        return;
    }
    let elapsed = layer.started.elapsed();
    metrics.layer_ready(elapsed);
    let at = now_rfc3339();
    status.update(|s| {
        if let Some(l) = s.layers.iter_mut().find(|l| l.layer == id) {
            l.ready_at = Some(at);
        }
    });
    tracing::info!(layer = %id, seconds = elapsed.as_secs_f64(), "layer ready");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{LayerStatus, ReleaseStatus};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use strata_core::plan::{LayerSource, PlannedLayer, PlannedRelease};
    use strata_core::profiles::{ChartRef, LayeringModel};
    use strata_core::types::{GoDuration, LayerNumber};

    struct Job {
        name: String,
        fail: bool,
    }

    struct Fake {
        status: StatusStore,
        started: Mutex<Vec<String>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
        /// At each start: `release: message` of every Pending release with a message.
        pending_messages: Mutex<Vec<String>>,
        /// After its "helm" part, give the slot back and "wait for readiness" 60 ms.
        waits_without_slot: bool,
        alive: AtomicUsize,
        max_alive: AtomicUsize,
    }

    impl ReleaseRunner<Job> for Fake {
        async fn run(&self, job: &Job, mut slot: HelmSlot) -> ReleaseResult {
            let alive = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_alive.fetch_max(alive, Ordering::SeqCst);
            self.started.lock().unwrap().push(job.name.clone());
            let snapshot = self.status.snapshot();
            self.pending_messages.lock().unwrap().extend(
                snapshot
                    .layers
                    .iter()
                    .flat_map(|l| l.releases.iter())
                    .filter(|r| r.phase == ReleasePhase::Pending)
                    .filter_map(|r| Some(format!("{}: {}", r.name, r.message.as_ref()?))),
            );
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.waits_without_slot {
                slot.release();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            self.alive.fetch_sub(1, Ordering::SeqCst);
            let result = if job.fail {
                ReleaseResult::Failed("boom".into())
            } else {
                ReleaseResult::Ready
            };
            self.status.update(|s| {
                let r = s.release_mut("ns", &job.name).unwrap();
                r.phase = match result {
                    ReleaseResult::Ready => ReleasePhase::Ready,
                    ReleaseResult::Failed(_) => ReleasePhase::Failed,
                };
            });
            result
        }
    }

    type Spec<'a> = &'a [(u32, &'a [(&'a str, bool)])];

    fn setup(spec: Spec<'_>) -> (Plan, BTreeMap<ReleaseKey, Job>, StatusStore) {
        let status = StatusStore::new();
        let mut jobs = BTreeMap::new();
        let mut layers = Vec::new();
        for (n, rels) in spec {
            let releases = rels
                .iter()
                .map(|(name, fail)| {
                    jobs.insert(
                        ReleaseKey::new("ns", *name),
                        Job {
                            name: name.to_string(),
                            fail: *fail,
                        },
                    );
                    PlannedRelease {
                        profile: name.to_string(),
                        release: ReleaseKey::new("ns", *name),
                        chart: ChartRef::Path {
                            path: format!("charts/{name}"),
                        },
                        chart_name: name.to_string(),
                        chart_version: "1.0.0".into(),
                        version_constraint: None,
                        layer: Some(LayerNumber(*n)),
                        layer_source: LayerSource::Override,
                        timeout: GoDuration::from_secs(60),
                        depends_on: vec![],
                    }
                })
                .collect();
            layers.push(PlannedLayer {
                layer: Some(LayerNumber(*n)),
                name: format!("layer-{n}"),
                releases,
            });
        }
        let plan = Plan {
            model: LayeringModel::Annotation,
            layers,
            notes: vec![],
        };
        status.update(|s| {
            for (n, rels) in spec {
                s.layers.push(LayerStatus {
                    layer: LayerId::Number(u64::from(*n)),
                    phase: LayerPhase::Pending,
                    ready_at: None,
                    releases: rels
                        .iter()
                        .map(|(name, _)| ReleaseStatus::pending(name, name, "ns", "c", "1"))
                        .collect(),
                });
            }
        });
        (plan, jobs, status)
    }

    fn fake(status: &StatusStore) -> Fake {
        Fake {
            status: status.clone(),
            started: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            pending_messages: Mutex::new(Vec::new()),
            waits_without_slot: false,
            alive: AtomicUsize::new(0),
            max_alive: AtomicUsize::new(0),
        }
    }

    /// The concurrency bounds helm processes, not releases: a release waiting for its
    /// objects (its slot given back) lets the next one run helm.
    #[tokio::test]
    async fn a_release_waiting_without_helm_lets_the_next_one_start() {
        let (plan, jobs, status) = setup(&[(1, &[("a", false), ("b", false), ("c", false)])]);
        let mut f = fake(&status);
        f.waits_without_slot = true;
        let m = Metrics::new();
        let out = run_layers(&f, &plan, &jobs, 1, &status, &m, &CancellationToken::new()).await;
        assert_eq!(out, LayersOutcome::AllReady);
        // One "helm" at a time...
        assert_eq!(f.max_running.load(Ordering::SeqCst), 1);
        // ...while the others wait for readiness side by side.
        assert!(
            f.max_alive.load(Ordering::SeqCst) >= 2,
            "releases never overlapped: {}",
            f.max_alive.load(Ordering::SeqCst)
        );
        assert_eq!(f.started.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn layers_run_in_order_with_bounded_concurrency() {
        let (plan, jobs, status) = setup(&[
            (1, &[("a", false), ("b", false), ("c", false)]),
            (2, &[("d", false)]),
        ]);
        let f = fake(&status);
        let m = Metrics::new();
        let out = run_layers(&f, &plan, &jobs, 2, &status, &m, &CancellationToken::new()).await;
        assert_eq!(out, LayersOutcome::AllReady);
        let started = f.started.lock().unwrap().clone();
        assert_eq!(
            started.last().unwrap(),
            "d",
            "layer 2 starts last: {started:?}"
        );
        assert_eq!(f.max_running.load(Ordering::SeqCst), 2);
        let s = status.snapshot();
        assert!(s.layers.iter().all(|l| l.phase == LayerPhase::Ready));
        assert!(s.layers.iter().all(|l| l.ready_at.is_some()));
        assert!(m.encode().contains("strata_layer_ready_seconds_count 2"));
    }

    #[tokio::test]
    async fn releases_start_slowest_first_by_their_last_time_to_ready() {
        let (plan, jobs, status) = setup(&[
            (
                1,
                &[
                    ("quick", false),
                    ("slow", false),
                    ("unseen", false),
                    ("mid", false),
                ],
            ),
            (2, &[("x", false), ("y", false)]),
        ]);
        status.update(|s| {
            for (name, ms) in [
                ("quick", 200),
                ("slow", 2000),
                ("mid", 900),
                ("x", 10),
                ("y", 50),
            ] {
                s.release_mut("ns", name).unwrap().last_ready_ms = Some(ms);
            }
        });
        let f = fake(&status);
        let m = Metrics::new();
        let out = run_layers(&f, &plan, &jobs, 1, &status, &m, &CancellationToken::new()).await;
        assert_eq!(out, LayersOutcome::AllReady);
        assert_eq!(
            *f.started.lock().unwrap(),
            ["unseen", "slow", "mid", "quick", "y", "x"]
        );
    }

    #[tokio::test]
    async fn a_failure_skips_the_layers_above_but_siblings_finish() {
        let (plan, jobs, status) = setup(&[
            (1, &[("a", false)]),
            (2, &[("b", true), ("c", false)]),
            (3, &[("d", false)]),
        ]);
        let f = fake(&status);
        let out = run_layers(
            &f,
            &plan,
            &jobs,
            1,
            &status,
            &Metrics::new(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(out, LayersOutcome::Failed);
        let started = f.started.lock().unwrap().clone();
        assert!(started.contains(&"c".to_string()), "sibling c still ran");
        assert!(!started.contains(&"d".to_string()), "layer 3 never starts");
        let s = status.snapshot();
        assert_eq!(s.release("ns", "c").unwrap().phase, ReleasePhase::Ready);
        let d = s.release("ns", "d").unwrap();
        assert_eq!(d.phase, ReleasePhase::Skipped);
        assert!(d.message.as_deref().unwrap().contains("ns/b"), "{d:?}");
        assert_eq!(s.layers[1].phase, LayerPhase::Failed);
        assert_eq!(s.layers[2].phase, LayerPhase::Skipped);
    }

    #[tokio::test]
    async fn a_release_waits_for_its_dependency_and_says_so() {
        let (mut plan, jobs, status) = setup(&[
            (1, &[("b", false), ("a", false), ("c", false)]),
            (2, &[("d", false)]),
        ]);
        plan.layers[0].releases[0].depends_on = vec!["a".into()];
        let f = fake(&status);
        let out = run_layers(
            &f,
            &plan,
            &jobs,
            4,
            &status,
            &Metrics::new(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(out, LayersOutcome::AllReady);
        let started = f.started.lock().unwrap().clone();
        assert_eq!(started, ["a", "c", "b", "d"], "b only after a is Ready");
        let seen = f.pending_messages.lock().unwrap().clone();
        assert!(
            seen.contains(&"b: waiting for ns/a (dependsOn)".to_string()),
            "{seen:?}"
        );
        let s = status.snapshot();
        assert_eq!(s.release("ns", "b").unwrap().phase, ReleasePhase::Ready);
        assert_eq!(
            s.release("ns", "b").unwrap().message,
            None,
            "cleared on start"
        );
    }

    #[tokio::test]
    async fn a_failed_dependency_skips_its_dependents_only() {
        let (mut plan, jobs, status) = setup(&[
            (1, &[("a", true), ("b", false), ("c", false)]),
            (2, &[("d", false)]),
        ]);
        plan.layers[0].releases[1].depends_on = vec!["a".into()];
        let f = fake(&status);
        let out = run_layers(
            &f,
            &plan,
            &jobs,
            4,
            &status,
            &Metrics::new(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(out, LayersOutcome::Failed);
        let started = f.started.lock().unwrap().clone();
        assert_eq!(started, ["a", "c"], "b never starts, its sibling c does");
        let s = status.snapshot();
        let b = s.release("ns", "b").unwrap();
        assert_eq!(b.phase, ReleasePhase::Skipped);
        assert_eq!(
            b.message.as_deref(),
            Some("skipped: dependency ns/a failed (dependsOn)")
        );
        assert_eq!(s.release("ns", "c").unwrap().phase, ReleasePhase::Ready);
        assert_eq!(s.release("ns", "d").unwrap().phase, ReleasePhase::Skipped);
    }

    #[tokio::test]
    async fn shutdown_starts_nothing_new() {
        let (plan, jobs, status) = setup(&[(1, &[("a", false)]), (2, &[("b", false)])]);
        let f = fake(&status);
        let token = CancellationToken::new();
        token.cancel();
        let out = run_layers(&f, &plan, &jobs, 1, &status, &Metrics::new(), &token).await;
        assert_eq!(out, LayersOutcome::Interrupted);
        assert!(f.started.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn shutdown_lets_running_releases_finish() {
        let (plan, jobs, status) =
            setup(&[(1, &[("a", false), ("b", false)]), (2, &[("c", false)])]);
        let f = fake(&status);
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            cancel.cancel();
        });
        let out = run_layers(&f, &plan, &jobs, 2, &status, &Metrics::new(), &token).await;
        assert_eq!(out, LayersOutcome::Interrupted);
        let s = status.snapshot();
        assert_eq!(s.release("ns", "a").unwrap().phase, ReleasePhase::Ready);
        assert_eq!(s.release("ns", "b").unwrap().phase, ReleasePhase::Ready);
        assert_eq!(s.release("ns", "c").unwrap().phase, ReleasePhase::Pending);
    }
}
