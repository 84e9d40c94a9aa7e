//! Prometheus metrics (prometheus-client, text exposition format on `GET /metrics`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `strata_releases` | gauge | `phase` (Pending, Installing, Waiting, Ready, Failed, Skipped) |
//! | `strata_helm_command_duration_seconds` | histogram | `command` (upgrade, version, ...) |
//! | `strata_helm_failures_total` | counter | `command` |
//! | `strata_release_failures_total` | counter | - |
//! | `strata_transient_retries_total` | counter | - (steps repeated in place: the API was unavailable) |
//! | `strata_revision_info` | gauge (always 1) | `commit` (only the current revision) |
//! | `strata_revisions_rejected_total` | counter | - |
//! | `strata_layer_ready_seconds` | histogram | - (time from a layer's start to all Ready) |
//! | `strata_recoveries_total` | counter | `kind` (recover-pending-install, rollback-then-upgrade), `outcome` (succeeded, failed) |
//! | `strata_remediations_total` | counter | `kind` (remediate-rollback, remediate-uninstall), `outcome` |

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observe::status::Status;

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
    revision_info: Family<CommitLabels, Gauge>,
    current_commit: Mutex<Option<String>>,
    revisions_rejected: Counter,
    layer_ready: Histogram,
    recoveries: Family<KindLabels, Counter>,
    remediations: Family<KindLabels, Counter>,
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
        let m = Self {
            recoveries,
            remediations,
            registry,
            releases,
            helm_duration,
            helm_failures,
            release_failures,
            transient_retries,
            revision_info,
            current_commit: Mutex::new(None),
            revisions_rejected,
            layer_ready,
        };
        m.observe_status(&Status::default());
        m
    }

    /// Set the `strata_releases{phase}` gauges from a status.
    pub fn observe_status(&self, status: &Status) {
        for (phase, n) in status.count_by_phase() {
            self.releases
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(n);
        }
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
    use crate::observe::status::{LayerId, LayerPhase, LayerStatus, ReleasePhase, ReleaseStatus};

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
        assert!(!text.contains("strata_helm_failures_total{command=\"other\"}"));
        assert!(text.contains("strata_release_failures_total 1"));
        assert!(text.contains("strata_revisions_rejected_total 1"));
        assert!(text.contains("strata_revision_info{commit=\"bbbb\"} 1"));
        assert!(
            !text.contains("aaaa"),
            "old revision must disappear: {text}"
        );
        assert!(text.contains("strata_layer_ready_seconds_count 1"));
    }
}
