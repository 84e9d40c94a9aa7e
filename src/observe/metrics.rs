//! Prometheus metrics (prometheus-client, text exposition format on `GET /metrics`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `strata_releases` | gauge | `phase` (Pending, Installing, Waiting, Ready, Failed, Skipped) |
//! | `strata_helm_command_duration_seconds` | histogram | `command` (upgrade, version, ...) |
//! | `strata_helm_failures_total` | counter | `command` |
//! | `strata_release_failures_total` | counter | - |
//! | `strata_transient_retries_total` | counter | - (steps repeated in place: the API was unavailable) |
//! | `strata_drift_corrections_total` | counter | - (upgrades of unchanged releases whose objects were missing or changed, drift mode `correct`, that succeeded) |
//! | `strata_drifted_objects` | gauge | `namespace`, `release` (objects of the release found missing or changed at its last drift check; 0 when none; no series with drift mode `ignore`) |
//! | `strata_revision_info` | gauge (always 1) | `commit` (only the current revision) |
//! | `strata_revisions_rejected_total` | counter | - |
//! | `strata_layer_ready_seconds` | histogram | - (time from a layer's start to all Ready) |
//! | `strata_recoveries_total` | counter | `kind` (recover-pending-install, rollback-then-upgrade), `outcome` (succeeded, failed) |
//! | `strata_remediations_total` | counter | `kind` (remediate-rollback, remediate-uninstall), `outcome` |
//! | `strata_revision_rejected` | gauge (1/0) | - (1 while the newest revision is rejected) |
//! | `strata_releases_stalled` | gauge | - (releases Failed and not retried: permanent error or retries used up) |
//! | `strata_fetch_failures_total` | counter | - (fetches of the Git source that failed) |
//! | `strata_last_fetch_success_timestamp_seconds` | gauge | - (unix time of the last successful fetch; 0 before the first) |
//! | `strata_fetch_interval_seconds` | gauge | - (`--interval`; 0 until this agent fetches, e.g. a standby) |
//! | `strata_layer_timeout_seconds` | gauge | `layer` (the longest helm timeout of the layer's releases) |
//! | `strata_layer_not_ready_since_timestamp_seconds` | gauge | `layer` (unix time the layer started and is not Ready since; 0 when Ready or not started) |
//!
//! Counters with a bounded label set are present at 0 from the start (so `increase()` and
//! `rate()` see their first increment). The `layer` label takes the layer numbers of the
//! current revision (and `unlayered`): series of layers a new revision no longer has go away.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observe::status::{LayerId, LayerPhase, ReleasePhase, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabels {
    layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    namespace: String,
    release: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommitLabels {
    commit: String,
}

/// The agent's metrics. Shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    releases: Family<PhaseLabels, Gauge>,
    helm_duration: Family<CommandLabels, Histogram>,
    helm_failures: Family<CommandLabels, Counter>,
    release_failures: Counter,
    transient_retries: Counter,
    drift_corrections: Counter,
    drifted_objects: Family<ReleaseLabels, Gauge>,
    revision_info: Family<CommitLabels, Gauge>,
    current_commit: Mutex<Option<String>>,
    revisions_rejected: Counter,
    layer_ready: Histogram,
    recoveries: Family<KindLabels, Counter>,
    remediations: Family<KindLabels, Counter>,
    revision_rejected_now: Gauge,
    releases_stalled: Gauge,
    fetch_failures: Counter,
    last_fetch_success: Gauge,
    fetch_interval: Gauge,
    layer_timeout: Family<LayerLabels, Gauge>,
    layer_not_ready_since: Family<LayerLabels, Gauge>,
    /// Unix seconds since which each started layer is not Ready (kept while a failed layer
    /// goes back to Pending for its retry).
    not_ready_since: Mutex<BTreeMap<LayerId, i64>>,
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Bounded set of helm command labels: anything else is reported as `other`.
const COMMANDS: [&str; 8] = [
    "upgrade",
    "version",
    "status",
    "history",
    "list",
    "uninstall",
    "rollback",
    "get",
];

fn command_label(command: &str) -> String {
    if COMMANDS.contains(&command) {
        command.to_string()
    } else {
        "other".to_string()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let releases = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "releases",
            "Releases of the current revision by phase",
            releases.clone(),
        );
        let helm_duration =
            Family::<CommandLabels, Histogram>::new_with_constructor(|| -> Histogram {
                Histogram::new(exponential_buckets(0.05, 2.0, 14))
            });
        registry.register(
            "helm_command_duration_seconds",
            "Duration of helm commands",
            helm_duration.clone(),
        );
        let helm_failures = Family::<CommandLabels, Counter>::default();
        registry.register(
            "helm_failures",
            "helm commands that failed",
            helm_failures.clone(),
        );
        let release_failures = Counter::default();
        registry.register(
            "release_failures",
            "Releases that ended Failed",
            release_failures.clone(),
        );
        let transient_retries = Counter::default();
        registry.register(
            "transient_retries",
            "Steps repeated in place because the Kubernetes API was unavailable for a moment",
            transient_retries.clone(),
        );
        let drift_corrections = Counter::default();
        registry.register(
            "drift_corrections",
            "Unchanged releases upgraded because objects of their manifest were missing from the cluster or changed",
            drift_corrections.clone(),
        );
        let drifted_objects = Family::<ReleaseLabels, Gauge>::default();
        registry.register(
            "drifted_objects",
            "Objects of a release found missing or changed at its last drift check",
            drifted_objects.clone(),
        );
        let revision_info = Family::<CommitLabels, Gauge>::default();
        registry.register(
            "revision_info",
            "The revision (Git commit) currently applied or being applied",
            revision_info.clone(),
        );
        let revisions_rejected = Counter::default();
        registry.register(
            "revisions_rejected",
            "Revisions rejected by validation before any helm ran",
            revisions_rejected.clone(),
        );
        let layer_ready = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        registry.register(
            "layer_ready_seconds",
            "Time from a layer's start until every release of it was Ready",
            layer_ready.clone(),
        );
        let recoveries = Family::<KindLabels, Counter>::default();
        registry.register(
            "recoveries",
            "Recoveries of releases left pending by an interrupted helm, by kind and outcome",
            recoveries.clone(),
        );
        let remediations = Family::<KindLabels, Counter>::default();
        registry.register(
            "remediations",
            "Remediations (rollback, uninstall) after a failed attempt, by kind and outcome",
            remediations.clone(),
        );
        let revision_rejected_now = Gauge::default();
        registry.register(
            "revision_rejected",
            "1 while the newest revision is rejected (nothing of it applied), else 0",
            revision_rejected_now.clone(),
        );
        let releases_stalled = Gauge::default();
        registry.register(
            "releases_stalled",
            "Releases Failed and not retried until the revision changes or a retry is requested",
            releases_stalled.clone(),
        );
        let fetch_failures = Counter::default();
        registry.register(
            "fetch_failures",
            "Fetches of the Git source that failed",
            fetch_failures.clone(),
        );
        let last_fetch_success = Gauge::default();
        registry.register(
            "last_fetch_success_timestamp_seconds",
            "Unix time of the last successful fetch of the Git source (0 before the first)",
            last_fetch_success.clone(),
        );
        let fetch_interval = Gauge::default();
        registry.register(
            "fetch_interval_seconds",
            "How often the Git source is fetched (--interval); 0 until this agent fetches",
            fetch_interval.clone(),
        );
        let layer_timeout = Family::<LayerLabels, Gauge>::default();
        registry.register(
            "layer_timeout_seconds",
            "The longest helm timeout of the releases of each layer of the current revision",
            layer_timeout.clone(),
        );
        let layer_not_ready_since = Family::<LayerLabels, Gauge>::default();
        registry.register(
            "layer_not_ready_since_timestamp_seconds",
            "Unix time since which each started layer is not Ready (0 when Ready or not started)",
            layer_not_ready_since.clone(),
        );
        // Present at 0 from the start: every bounded label value of the counters.
        for command in COMMANDS.iter().copied().chain(["other"]) {
            let _ = helm_failures.get_or_create(&CommandLabels {
                command: command.to_string(),
            });
        }
        for kind in strata_core::reconcile::ActionKind::ALL {
            for outcome in ["succeeded", "failed"] {
                let labels = KindLabels {
                    kind: kind.as_str(),
                    outcome,
                };
                if kind.is_recovery() {
                    let _ = recoveries.get_or_create(&labels);
                } else if kind.is_remediation() {
                    let _ = remediations.get_or_create(&labels);
                }
            }
        }
        let m = Self {
            revision_rejected_now,
            releases_stalled,
            fetch_failures,
            last_fetch_success,
            fetch_interval,
            layer_timeout,
            layer_not_ready_since,
            not_ready_since: Mutex::new(BTreeMap::new()),
            recoveries,
            remediations,
            registry,
            releases,
            helm_duration,
            helm_failures,
            release_failures,
            transient_retries,
            drift_corrections,
            drifted_objects,
            revision_info,
            current_commit: Mutex::new(None),
            revisions_rejected,
            layer_ready,
        };
        m.observe_status(&Status::default());
        m
    }

    /// Set the gauges that follow the status: `strata_releases{phase}`,
    /// `strata_releases_stalled`, `strata_revision_rejected` and
    /// `strata_layer_not_ready_since_timestamp_seconds{layer}`.
    pub fn observe_status(&self, status: &Status) {
        for (phase, n) in status.count_by_phase() {
            self.releases
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(n);
        }
        let stalled = status
            .releases()
            .filter(|r| r.phase == ReleasePhase::Failed && r.action.as_deref() == Some("stalled"))
            .count();
        self.releases_stalled
            .set(i64::try_from(stalled).unwrap_or(i64::MAX));
        self.revision_rejected_now
            .set(i64::from(status.rejected_revision.is_some()));

        let now = unix_now();
        let mut since = self
            .not_ready_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        since.retain(|layer, _| status.layers.iter().any(|l| l.layer == *layer));
        self.layer_not_ready_since.clear();
        for l in &status.layers {
            let value = match l.phase {
                LayerPhase::Ready => {
                    since.remove(&l.layer);
                    0
                }
                LayerPhase::Progressing | LayerPhase::Degraded | LayerPhase::Failed => {
                    *since.entry(l.layer).or_insert(now)
                }
                // Not started (or skipped): not ready since it last started, if it did.
                LayerPhase::Pending | LayerPhase::Skipped => {
                    since.get(&l.layer).copied().unwrap_or(0)
                }
            };
            self.layer_not_ready_since
                .get_or_create(&LayerLabels {
                    layer: l.layer.to_string(),
                })
                .set(value);
        }
    }

    /// The layers of the revision being applied, each with its longest helm timeout.
    pub fn set_layer_timeouts(&self, layers: impl IntoIterator<Item = (LayerId, Duration)>) {
        self.layer_timeout.clear();
        for (layer, timeout) in layers {
            self.layer_timeout
                .get_or_create(&LayerLabels {
                    layer: layer.to_string(),
                })
                .set(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
        }
    }

    /// The Git source was fetched.
    pub fn fetch_succeeded(&self) {
        self.last_fetch_success.set(unix_now());
    }

    /// Fetching the Git source failed.
    pub fn fetch_failed(&self) {
        self.fetch_failures.inc();
    }

    /// How often this agent fetches the source (`--interval`).
    pub fn set_fetch_interval(&self, interval: Duration) {
        self.fetch_interval
            .set(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX));
    }

    /// Record one helm command: its duration and whether it failed.
    pub fn helm_command(&self, command: &str, duration: Duration, failed: bool) {
        let labels = CommandLabels {
            command: command_label(command),
        };
        self.helm_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        if failed {
            self.helm_failures.get_or_create(&labels).inc();
        }
    }

    pub fn release_failed(&self) {
        self.release_failures.inc();
    }

    /// A step repeated in place because the Kubernetes API was unavailable.
    pub fn transient_retry(&self) {
        self.transient_retries.inc();
    }

    /// A release whose missing objects were written again by an upgrade.
    pub fn drift_corrected(&self) {
        self.drift_corrections.inc();
    }

    /// The number of drifted objects a release's drift check found; `None` removes the
    /// release's series (drift mode `ignore`: not checked).
    pub fn drifted_objects(&self, namespace: &str, release: &str, count: Option<usize>) {
        let labels = ReleaseLabels {
            namespace: namespace.to_owned(),
            release: release.to_owned(),
        };
        match count {
            Some(n) => {
                self.drifted_objects
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            None => {
                self.drifted_objects.remove(&labels);
            }
        }
    }

    pub fn revision_rejected(&self) {
        self.revisions_rejected.inc();
    }

    /// Set the current revision; the previous commit's series disappears.
    pub fn set_revision(&self, commit: &str) {
        let mut current = self
            .current_commit
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if current.as_deref() == Some(commit) {
            return;
        }
        self.revision_info.clear();
        self.revision_info
            .get_or_create(&CommitLabels {
                commit: commit.to_string(),
            })
            .set(1);
        *current = Some(commit.to_string());
    }

    /// Count a recovery (`kind` from `ActionKind::as_str`, a bounded set).
    pub fn recovery(&self, kind: strata_core::reconcile::ActionKind, succeeded: bool) {
        let labels = KindLabels {
            kind: kind.as_str(),
            outcome: if succeeded { "succeeded" } else { "failed" },
        };
        if kind.is_recovery() {
            self.recoveries.get_or_create(&labels).inc();
        } else if kind.is_remediation() {
            self.remediations.get_or_create(&labels).inc();
        }
    }

    pub fn layer_ready(&self, duration: Duration) {
        self.layer_ready.observe(duration.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{LayerStatus, ReleaseStatus};

    #[test]
    fn recoveries_and_remediations_are_counted_by_kind_and_outcome() {
        use strata_core::reconcile::ActionKind;
        let m = Metrics::new();
        m.recovery(ActionKind::RecoverPendingInstall, true);
        m.recovery(ActionKind::RecoverPendingInstall, true);
        m.recovery(ActionKind::RollbackThenUpgrade, false);
        m.recovery(ActionKind::RemediateUninstall, true);
        // Not a recovery or remediation: not counted anywhere.
        m.recovery(ActionKind::Upgrade, true);
        let text = m.encode();
        assert!(
            text.contains(
                "strata_recoveries_total{kind=\"recover-pending-install\",outcome=\"succeeded\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strata_recoveries_total{kind=\"rollback-then-upgrade\",outcome=\"failed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strata_remediations_total{kind=\"remediate-uninstall\",outcome=\"succeeded\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("kind=\"upgrade\""), "{text}");
    }

    #[test]
    fn exposes_every_metric_with_bounded_labels() {
        let m = Metrics::new();
        let mut s = Status::default();
        let mut r = ReleaseStatus::pending("a", "a", "ns", "c", "1.0.0");
        r.phase = ReleasePhase::Failed;
        s.layers.push(LayerStatus {
            layer: LayerId::Number(1),
            phase: LayerPhase::Failed,
            ready_at: None,
            releases: vec![r],
        });
        m.observe_status(&s);
        m.helm_command("upgrade", Duration::from_millis(300), true);
        m.helm_command("weird-command", Duration::from_millis(10), false);
        m.release_failed();
        m.revision_rejected();
        m.set_revision("aaaa");
        m.set_revision("bbbb");
        m.layer_ready(Duration::from_secs(2));
        let text = m.encode();
        assert!(
            text.contains("strata_releases{phase=\"Failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strata_releases{phase=\"Ready\"} 0"),
            "{text}"
        );
        assert!(text.contains("strata_helm_command_duration_seconds_count{command=\"upgrade\"} 1"));
        assert!(text.contains("strata_helm_command_duration_seconds_count{command=\"other\"} 1"));
        assert!(text.contains("strata_helm_failures_total{command=\"upgrade\"} 1"));
        // Present at 0 from the start, never counted up by a command that did not fail.
        assert!(text.contains("strata_helm_failures_total{command=\"other\"} 0"));
        assert!(text.contains("strata_release_failures_total 1"));
        assert!(text.contains("strata_revisions_rejected_total 1"));
        assert!(text.contains("strata_revision_info{commit=\"bbbb\"} 1"));
        assert!(
            !text.contains("aaaa"),
            "old revision must disappear: {text}"
        );
        assert!(text.contains("strata_layer_ready_seconds_count 1"));
    }

    fn layer(n: u64, phase: LayerPhase, releases: Vec<ReleaseStatus>) -> LayerStatus {
        LayerStatus {
            layer: LayerId::Number(n),
            phase,
            ready_at: None,
            releases,
        }
    }

    fn sample(text: &str, series: &str) -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_are_present_at_zero_from_the_start() {
        let text = Metrics::new().encode();
        for series in [
            "strata_fetch_failures_total",
            "strata_revisions_rejected_total",
            "strata_release_failures_total",
            "strata_transient_retries_total",
            "strata_drift_corrections_total",
            "strata_helm_failures_total{command=\"upgrade\"}",
            "strata_recoveries_total{kind=\"recover-pending-install\",outcome=\"failed\"}",
            "strata_recoveries_total{kind=\"rollback-then-upgrade\",outcome=\"succeeded\"}",
            "strata_remediations_total{kind=\"remediate-rollback\",outcome=\"succeeded\"}",
            "strata_remediations_total{kind=\"remediate-uninstall\",outcome=\"failed\"}",
            "strata_revision_rejected",
            "strata_releases_stalled",
            "strata_last_fetch_success_timestamp_seconds",
            "strata_fetch_interval_seconds",
        ] {
            assert_eq!(sample(&text, series), Some(0), "{series} in:\n{text}");
        }
    }

    #[test]
    fn fetches_stalled_releases_and_rejections() {
        let m = Metrics::new();
        m.set_fetch_interval(Duration::from_secs(60));
        m.fetch_failed();
        m.fetch_succeeded();
        let mut s = Status::default();
        let mut stalled = ReleaseStatus::pending("a", "a", "ns", "c", "1.0.0");
        stalled.phase = ReleasePhase::Failed;
        stalled.action = Some("stalled".into());
        let mut backing_off = ReleaseStatus::pending("b", "b", "ns", "c", "1.0.0");
        backing_off.phase = ReleasePhase::Failed;
        s.layers
            .push(layer(1, LayerPhase::Failed, vec![stalled, backing_off]));
        s.rejected_revision = Some(crate::observe::status::RejectedRevision {
            commit: "c".into(),
            fetched_at: "t".into(),
            problems: Vec::new(),
        });
        m.observe_status(&s);
        let text = m.encode();
        assert_eq!(sample(&text, "strata_fetch_interval_seconds"), Some(60));
        assert_eq!(sample(&text, "strata_fetch_failures_total"), Some(1));
        let last = sample(&text, "strata_last_fetch_success_timestamp_seconds").unwrap();
        assert!((last - unix_now()).abs() < 5, "{text}");
        assert_eq!(sample(&text, "strata_releases_stalled"), Some(1), "{text}");
        assert_eq!(sample(&text, "strata_revision_rejected"), Some(1), "{text}");
        s.rejected_revision = None;
        m.observe_status(&s);
        assert_eq!(sample(&m.encode(), "strata_revision_rejected"), Some(0));
    }

    #[test]
    fn layers_not_ready_since_they_started_and_their_timeouts() {
        let m = Metrics::new();
        m.set_layer_timeouts([
            (LayerId::Number(1), Duration::from_secs(300)),
            (LayerId::Unlayered, Duration::from_secs(60)),
        ]);
        let mut s = Status {
            layers: vec![
                layer(1, LayerPhase::Progressing, vec![]),
                layer(2, LayerPhase::Pending, vec![]),
            ],
            ..Status::default()
        };
        m.observe_status(&s);
        let text = m.encode();
        assert_eq!(
            sample(&text, "strata_layer_timeout_seconds{layer=\"1\"}"),
            Some(300)
        );
        assert_eq!(
            sample(&text, "strata_layer_timeout_seconds{layer=\"unlayered\"}"),
            Some(60)
        );
        let series = "strata_layer_not_ready_since_timestamp_seconds{layer=\"1\"}";
        let since = sample(&text, series).unwrap();
        assert!((since - unix_now()).abs() < 5, "{text}");
        assert_eq!(
            sample(
                &text,
                "strata_layer_not_ready_since_timestamp_seconds{layer=\"2\"}"
            ),
            Some(0),
            "not started"
        );
        // Failed, then Pending again for its retry: still not ready since it started.
        std::thread::sleep(Duration::from_millis(1100));
        s.layers[0].phase = LayerPhase::Failed;
        m.observe_status(&s);
        s.layers[0].phase = LayerPhase::Pending;
        m.observe_status(&s);
        assert_eq!(sample(&m.encode(), series), Some(since));
        // Ready: 0; a layer the revision no longer has: gone.
        s.layers[0].phase = LayerPhase::Ready;
        s.layers.truncate(1);
        m.observe_status(&s);
        let text = m.encode();
        assert_eq!(sample(&text, series), Some(0));
        assert!(!text.contains("layer=\"2\""), "{text}");
        m.set_layer_timeouts([(LayerId::Number(1), Duration::from_secs(30))]);
        assert!(!m.encode().contains("unlayered"));
    }
}
