//! Runs the releases of a revision layer by layer.
//!
//! Rules: layers run in order; inside a layer up to `concurrency` releases run at once; the
//! next layer starts only when every release of the layer is Ready; when a release fails its
//! siblings still finish and every layer above is marked Skipped. A shutdown lets running
//! releases finish (helm is never killed mid-operation by a drain) and starts nothing new.

use std::future::Future;
use std::time::Instant;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::status::{LayerId, ReleasePhase, StatusStore, now_rfc3339};

/// What a release run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseResult {
    Ready,
    Failed(String),
}

/// Runs one release to Ready or Failed, updating its status on the way.
pub trait ReleaseRunner<J>: Sync {
    fn run(&self, job: &J) -> impl Future<Output = ReleaseResult> + Send;
}

/// A job's identity in the status (namespace, release name).
pub trait JobId {
    fn namespace(&self) -> &str;
    fn release(&self) -> &str;
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

/// Run `layers` (in order) with `runner`.
pub async fn run_layers<J, R>(
    runner: &R,
    layers: &[(LayerId, Vec<J>)],
    concurrency: usize,
    status: &StatusStore,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> LayersOutcome
where
    J: JobId + Sync,
    R: ReleaseRunner<J>,
{
    for (index, (layer, jobs)) in layers.iter().enumerate() {
        if shutdown.is_cancelled() {
            return LayersOutcome::Interrupted;
        }
        let span = tracing::info_span!(
            "layer",
            layer = %layer,
            releases = jobs.len(),
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        // A layer already Ready (an unchanged revision re-checked) is not a new "layer ready".
        let was_ready = status
            .snapshot()
            .layers
            .iter()
            .any(|l| l.layer == *layer && l.phase == crate::status::LayerPhase::Ready);
        let started = Instant::now();
        let results: Vec<(String, ReleaseResult)> = async {
            futures::stream::iter(jobs.iter())
                .map(|job| async move {
                    if shutdown.is_cancelled() {
                        return None;
                    }
                    let result = runner.run(job).await;
                    Some((format!("{}/{}", job.namespace(), job.release()), result))
                })
                .buffer_unordered(concurrency.max(1))
                .filter_map(|r| async move { r })
                .collect()
                .await
        }
        .instrument(span.clone())
        .await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(name, r)| match r {
                ReleaseResult::Failed(m) => Some(format!("{name}: {m}")),
                ReleaseResult::Ready => None,
            })
            .collect();
        if !failed.is_empty() {
            crate::telemetry::record_error(&span, &failed.join("; "));
            let reason = format!(
                "not started: layer {layer} failed ({})",
                results
                    .iter()
                    .filter(|(_, r)| *r != ReleaseResult::Ready)
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            skip_above(layers, index, &reason, status);
            return LayersOutcome::Failed;
        }
        if results.len() < jobs.len() {
            return LayersOutcome::Interrupted;
        }
        if was_ready {
            tracing::debug!(layer = %layer, "layer still ready");
            continue;
        }
        metrics.layer_ready(started.elapsed());
        let at = now_rfc3339();
        status.update(|s| {
            if let Some(l) = s.layers.iter_mut().find(|l| l.layer == *layer) {
                l.ready_at = Some(at);
            }
        });
        tracing::info!(layer = %layer, seconds = started.elapsed().as_secs_f64(), "layer ready");
    }
    LayersOutcome::AllReady
}

fn skip_above<J: JobId>(
    layers: &[(LayerId, Vec<J>)],
    failed_index: usize,
    reason: &str,
    status: &StatusStore,
) {
    status.update(|s| {
        for (_, jobs) in layers.iter().skip(failed_index + 1) {
            for job in jobs {
                if let Some(r) = s.release_mut(job.namespace(), job.release()) {
                    r.phase = ReleasePhase::Skipped;
                    r.message = Some(reason.to_string());
                    r.not_ready.clear();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{LayerPhase, LayerStatus, ReleaseStatus};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Job {
        name: String,
        fail: bool,
    }
    impl JobId for Job {
        fn namespace(&self) -> &str {
            "ns"
        }
        fn release(&self) -> &str {
            &self.name
        }
    }

    struct Fake {
        status: StatusStore,
        started: Mutex<Vec<String>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl ReleaseRunner<Job> for Fake {
        async fn run(&self, job: &Job) -> ReleaseResult {
            self.started.lock().unwrap().push(job.name.clone());
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
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

    fn setup(spec: &[(u64, &[(&str, bool)])]) -> (Vec<(LayerId, Vec<Job>)>, StatusStore) {
        let status = StatusStore::new();
        let mut layers = Vec::new();
        status.update(|s| {
            for (n, rels) in spec {
                s.layers.push(LayerStatus {
                    layer: LayerId::Number(*n),
                    phase: LayerPhase::Pending,
                    ready_at: None,
                    releases: rels
                        .iter()
                        .map(|(name, _)| ReleaseStatus::pending(name, name, "ns", "c", "1"))
                        .collect(),
                });
                layers.push((
                    LayerId::Number(*n),
                    rels.iter()
                        .map(|(name, fail)| Job {
                            name: name.to_string(),
                            fail: *fail,
                        })
                        .collect(),
                ));
            }
        });
        (layers, status)
    }

    fn fake(status: &StatusStore) -> Fake {
        Fake {
            status: status.clone(),
            started: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        }
    }

    #[tokio::test]
    async fn layers_run_in_order_with_bounded_concurrency() {
        let (layers, status) = setup(&[
            (1, &[("a", false), ("b", false), ("c", false)]),
            (2, &[("d", false)]),
        ]);
        let f = fake(&status);
        let m = Metrics::new();
        let out = run_layers(&f, &layers, 2, &status, &m, &CancellationToken::new()).await;
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
    async fn a_failure_skips_the_layers_above_but_siblings_finish() {
        let (layers, status) = setup(&[
            (1, &[("a", false)]),
            (2, &[("b", true), ("c", false)]),
            (3, &[("d", false)]),
        ]);
        let f = fake(&status);
        let out = run_layers(
            &f,
            &layers,
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
    async fn shutdown_starts_nothing_new() {
        let (layers, status) = setup(&[(1, &[("a", false)]), (2, &[("b", false)])]);
        let f = fake(&status);
        let token = CancellationToken::new();
        token.cancel();
        let out = run_layers(&f, &layers, 1, &status, &Metrics::new(), &token).await;
        assert_eq!(out, LayersOutcome::Interrupted);
        assert!(f.started.lock().unwrap().is_empty());
    }
}
