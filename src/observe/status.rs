//! The agent's status model, shared by the HTTP API (`GET /status`), the status ConfigMap,
//! Kubernetes Events and the Prometheus gauges.
//!
//! [`StatusStore`] owns the one current [`Status`]. Every change goes through
//! [`StatusStore::update`], which notifies subscribers (the reporter writing the ConfigMap) and
//! broadcasts release phase [`Transition`]s (Events, logs).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Phase of one release in the current revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum ReleasePhase {
    /// Not started yet (its layer has not started, or it waits for a concurrency slot).
    Pending,
    /// `helm upgrade --install` is running and writing objects.
    Installing,
    /// Objects are written; helm waits for them to become ready.
    Waiting,
    /// Deployed at the desired chart version and values, and ready.
    Ready,
    /// Was Ready; its live objects are no longer all ready (`notReady` says which and why).
    /// It holds the layers above it until it recovers or its timeout passes.
    Degraded,
    /// helm failed (its message is in `message`).
    Failed,
    /// Never started because a release of a lower layer failed.
    Skipped,
}

impl ReleasePhase {
    /// Every phase, in display order (bounded label set of `strata_releases{phase}`).
    pub const ALL: [ReleasePhase; 7] = [
        ReleasePhase::Pending,
        ReleasePhase::Installing,
        ReleasePhase::Waiting,
        ReleasePhase::Ready,
        ReleasePhase::Degraded,
        ReleasePhase::Failed,
        ReleasePhase::Skipped,
    ];

    /// The phase as written in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleasePhase::Pending => "Pending",
            ReleasePhase::Installing => "Installing",
            ReleasePhase::Waiting => "Waiting",
            ReleasePhase::Ready => "Ready",
            ReleasePhase::Degraded => "Degraded",
            ReleasePhase::Failed => "Failed",
            ReleasePhase::Skipped => "Skipped",
        }
    }

    /// Whether the release will not change any more in this revision.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ReleasePhase::Ready
                | ReleasePhase::Degraded
                | ReleasePhase::Failed
                | ReleasePhase::Skipped
        )
    }
}

impl std::fmt::Display for ReleasePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Overall phase of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OverallPhase {
    /// No revision processed yet.
    Starting,
    /// A revision is being applied.
    Progressing,
    /// Every layer of the current revision is Ready.
    Ready,
    /// A release of the current revision failed.
    Failed,
    /// The newest revision was rejected and no revision was ever accepted.
    Invalid,
    /// The newest revision was rejected while an older good revision keeps being served, or
    /// the source could not be fetched (`lastError` says why).
    Degraded,
}

/// A Git revision (one commit of the profile repository).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionInfo {
    pub commit: String,
    /// RFC 3339 time the commit was fetched.
    pub fetched_at: String,
    /// The profile list's path in the repository (`{cluster}` filled in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles_path: Option<String>,
    /// The cluster name used for `{cluster}` in the profiles path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The URLs the site's mirrors (`--mirrors`) rewrote: the Git URL and chart repositories
    /// as declared, and where they were fetched from (credentials redacted). Empty without
    /// mirrors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrored: Vec<MirroredUrl>,
}

/// A URL as declared and the mirror it was fetched from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirroredUrl {
    pub url: String,
    pub fetched_from: String,
}

/// One problem found in a revision: the file, the field inside it and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemView {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ProblemView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

/// A revision that was rejected before any helm ran, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRevision {
    pub commit: String,
    pub fetched_at: String,
    pub problems: Vec<ProblemView>,
}

/// A resource of a release that is not ready yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub reason: String,
}

/// Status of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// Helm release name.
    pub name: String,
    pub namespace: String,
    /// Profile name in the profile list.
    pub profile: String,
    pub chart: String,
    pub version: String,
    pub phase: ReleasePhase,
    /// What the agent decided: `install`, `upgrade`, `none` (already up to date), `blocked`,
    /// `stalled`, or a recovery/remediation (`recover-pending-install`,
    /// `rollback-then-upgrade`, `remediate-rollback`, `remediate-uninstall`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Why the last install or upgrade ran (`chart content changed`, `values changed`,
    /// `chart version 1.2.0 -> 1.3.0`, `helm options changed`, ...), or why none ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The desired content digest (chart content, values, helm options), also recorded on
    /// the release as the label `strata.io/content-digest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_revision: Option<u64>,
    /// helm processes started for this release in this revision.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub not_ready: Vec<NotReady>,
    /// The last recovery of a release left pending by an interrupted helm
    /// (`recover-pending-install`, `rollback-then-upgrade`), kept across revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<ActionRecord>,
    /// The last remediation after a failed attempt (`remediate-rollback`,
    /// `remediate-uninstall`), kept across revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_remediation: Option<ActionRecord>,
    /// The last drift corrected (kind `drift`: objects of the manifest were missing and an
    /// upgrade wrote them again), kept across revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<ActionRecord>,
    /// The last drift check of the release's live objects against its deployed manifest
    /// (drift mode `warn` or `correct`; absent with `ignore` or before the first check), kept
    /// across revisions. Only paths, never values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    /// Steps repeated in place in this revision because the Kubernetes API was unavailable
    /// for a moment (a 5xx, a 429, a cut connection): not failures of the release.
    #[serde(skip_serializing_if = "is_zero")]
    pub transient_retries: u32,
    /// The last of those transient errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transient_error: Option<String>,
    /// Milliseconds from the start of the release's last successful `helm upgrade --install`
    /// to Ready, kept across revisions and restarts (see [`Status::inherited_ready_ms`]):
    /// releases expected to take longest start first in their layer (never seen ones before
    /// all others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ready_ms: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// What the last drift check of a release found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// The profile's drift mode: `warn` (reported only) or `correct` (written again).
    pub mode: String,
    /// When the drift shown here was found (RFC 3339); unchanged while it stays the same.
    pub since: String,
    /// The drifted objects (empty: none); at most [`DRIFT_OBJECTS_SHOWN`].
    pub objects: Vec<DriftedObject>,
    /// Drifted objects not listed in `objects`.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub more_objects: usize,
}

/// Drifted objects listed per release in the status.
pub const DRIFT_OBJECTS_SHOWN: usize = 20;
/// Field paths listed per drifted object.
pub const DRIFT_PATHS_SHOWN: usize = 5;

/// One object of a release that drifted: missing, or fields changed (JSON pointers into the
/// manifest object; never values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    pub kind: String,
    /// `None` for a cluster-scoped object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The object does not exist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// The changed fields, at most [`DRIFT_PATHS_SHOWN`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Changed fields not listed in `paths`.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub more_paths: usize,
}

/// A recovery or remediation the agent ran on a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// `recover-pending-install`, `rollback-then-upgrade`, `remediate-rollback`,
    /// `remediate-uninstall`.
    pub kind: String,
    /// When it ran (RFC 3339).
    pub at: String,
    /// What was done and why; with the outcome.
    pub message: String,
}

impl ReleaseStatus {
    /// A release that has not started.
    pub fn pending(profile: &str, name: &str, namespace: &str, chart: &str, version: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            profile: profile.to_string(),
            chart: chart.to_string(),
            version: version.to_string(),
            phase: ReleasePhase::Pending,
            action: None,
            reason: None,
            content_digest: None,
            helm_revision: None,
            attempts: 0,
            started_at: None,
            ready_at: None,
            message: None,
            not_ready: Vec::new(),
            last_recovery: None,
            last_remediation: None,
            last_drift: None,
            drift: None,
            transient_retries: 0,
            last_transient_error: None,
            last_ready_ms: None,
        }
    }
}

/// A layer: a number, or the group of releases without a layer (installed last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerId {
    Number(u64),
    Unlayered,
}

impl LayerId {
    /// The id of a planned layer: its number, or [`LayerId::Unlayered`].
    pub fn of(layer: Option<u32>) -> Self {
        layer.map_or(LayerId::Unlayered, |n| LayerId::Number(u64::from(n)))
    }
}

impl Serialize for LayerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LayerId::Number(n) => s.serialize_u64(*n),
            LayerId::Unlayered => s.serialize_str("unlayered"),
        }
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerId::Number(n) => write!(f, "{n}"),
            LayerId::Unlayered => f.write_str("unlayered"),
        }
    }
}

/// Phase of a layer, derived from its releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerPhase {
    Pending,
    Progressing,
    Ready,
    /// Every release was Ready and one of them degraded since.
    Degraded,
    Failed,
    Skipped,
}

/// Status of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerStatus {
    pub layer: LayerId,
    pub phase: LayerPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    pub releases: Vec<ReleaseStatus>,
}

impl LayerStatus {
    /// The layer's phase as its releases make it: Failed if one failed, Skipped if all were
    /// skipped, Ready if all are ready, Degraded if all were and one no longer is, Pending if
    /// none started, else Progressing.
    pub fn derive_phase(releases: &[ReleaseStatus]) -> LayerPhase {
        let all = |p: ReleasePhase| releases.iter().all(|r| r.phase == p);
        if releases.iter().any(|r| r.phase == ReleasePhase::Failed) {
            LayerPhase::Failed
        } else if !releases.is_empty() && all(ReleasePhase::Skipped) {
            LayerPhase::Skipped
        } else if all(ReleasePhase::Ready) {
            LayerPhase::Ready
        } else if releases
            .iter()
            .all(|r| matches!(r.phase, ReleasePhase::Ready | ReleasePhase::Degraded))
        {
            LayerPhase::Degraded
        } else if all(ReleasePhase::Pending) {
            LayerPhase::Pending
        } else {
            LayerPhase::Progressing
        }
    }
}

/// Everything the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub phase: OverallPhase,
    /// The revision whose layers are shown below (being applied or applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionInfo>,
    /// The last revision whose every layer became Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<RevisionInfo>,
    /// The newest revision, when it was rejected (cleared when a newer one is accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_revision: Option<RejectedRevision>,
    /// The last error that is not about one release (e.g. the Git fetch failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Leader election (with `--leader-elect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderView>,
    /// Who may write releases, which gates the recovery of releases left pending: with
    /// `--leader-elect` the Lease holder; without it this agent, by definition the only writer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// How many helm processes of a layer run at once, and why (`--concurrency`, or fitted to the
    /// pod's memory limit and CPUs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<strata_core::capacity::Concurrency>,
    pub layers: Vec<LayerStatus>,
    /// Releases strata installed whose profile is gone from the list: being removed,
    /// removed, failed to remove, or kept as orphans (`prune: false`). Newest revision's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<Removal>,
    /// The `lastReadyMs` of each release (by namespace and name) in the status a previous
    /// agent left in the status ConfigMap (read when this agent became the writer): a release
    /// this agent has no status of its own for yet starts with it, so a restart or a change
    /// of leader keeps the slowest-first order. Not reported.
    #[serde(skip)]
    pub inherited_ready_ms: BTreeMap<(String, String), u64>,
}

/// Phase of a release strata removes (or keeps) because its profile is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RemovalPhase {
    /// Waiting for the layers above, or `helm uninstall --wait` is running.
    Removing,
    Removed,
    /// `helm uninstall` failed; tried again at the next cycle.
    Failed,
    /// Kept installed because the profile list says `prune: false`.
    Orphaned,
}

/// A release strata manages that the profile list no longer has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    pub release: String,
    pub namespace: String,
    /// The profile recorded on the release.
    pub profile: String,
    /// The layer recorded on the release.
    pub layer: LayerId,
    pub phase: RemovalPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was removed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<String>,
}

/// This agent's view of the leader election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    /// The Lease (`namespace/name`).
    pub lease: String,
    /// This agent's identity.
    pub identity: String,
    /// The holder last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Whether this agent is the leader (only the leader runs helm and writes the ConfigMap).
    pub leading: bool,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            phase: OverallPhase::Starting,
            revision: None,
            last_applied_revision: None,
            rejected_revision: None,
            last_error: None,
            leader: None,
            writer: None,
            concurrency: None,
            layers: Vec::new(),
            removals: Vec::new(),
            inherited_ready_ms: BTreeMap::new(),
        }
    }
}

impl Status {
    /// Number of releases in each phase (for `strata_releases{phase}`).
    pub fn count_by_phase(&self) -> Vec<(ReleasePhase, i64)> {
        ReleasePhase::ALL
            .iter()
            .map(|p| {
                let n = self.releases().filter(|r| r.phase == *p).count();
                (*p, i64::try_from(n).unwrap_or(i64::MAX))
            })
            .collect()
    }

    /// Find a release by namespace and name.
    pub fn release_mut(&mut self, namespace: &str, name: &str) -> Option<&mut ReleaseStatus> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.releases.iter_mut())
            .find(|r| r.namespace == namespace && r.name == name)
    }

    /// Find a release by namespace and name.
    pub fn release(&self, namespace: &str, name: &str) -> Option<&ReleaseStatus> {
        self.releases()
            .find(|r| r.namespace == namespace && r.name == name)
    }

    /// Start showing revision `info`, whose layers (in the order they run) have the
    /// releases `layers` (each [`ReleaseStatus::pending`]). Returns whether this re-checks
    /// the applied revision (the same commit, Ready): then releases still Ready at the same
    /// chart and version stay Ready (no churn in status and events), and the overall phase
    /// stays Ready; else it becomes Progressing. Carried from the previous status of a
    /// release (same namespace and name): its helm revision, readiness time, last recovery
    /// and remediation, and for the same commit its attempts; a layer of the same commit
    /// keeps its `readyAt` if it was Ready. A release with no previous status takes its
    /// `lastReadyMs` from [`Status::inherited_ready_ms`].
    pub fn begin_revision(
        &mut self,
        info: &RevisionInfo,
        layers: Vec<(LayerId, Vec<ReleaseStatus>)>,
    ) -> bool {
        let same_commit = self
            .revision
            .as_ref()
            .is_some_and(|r| r.commit == info.commit);
        let recheck = same_commit && self.phase == OverallPhase::Ready;
        let previous_layers: Vec<(LayerId, Option<String>)> = self
            .layers
            .iter()
            .filter(|l| l.phase == LayerPhase::Ready)
            .map(|l| (l.layer, l.ready_at.clone()))
            .collect();
        let previous: Vec<ReleaseStatus> = self
            .layers
            .drain(..)
            .flat_map(|l| l.releases.into_iter())
            .collect();
        self.layers = layers
            .into_iter()
            .map(|(layer, releases)| LayerStatus {
                layer,
                phase: LayerPhase::Pending,
                ready_at: if same_commit {
                    previous_layers
                        .iter()
                        .find(|(l, _)| *l == layer)
                        .and_then(|(_, at)| at.clone())
                } else {
                    None
                },
                releases: releases
                    .into_iter()
                    .map(|mut r| {
                        let prev = previous
                            .iter()
                            .find(|p| p.namespace == r.namespace && p.name == r.name);
                        if let Some(p) = prev {
                            r.helm_revision = p.helm_revision;
                            r.ready_at = p.ready_at.clone();
                            r.last_recovery = p.last_recovery.clone();
                            r.last_remediation = p.last_remediation.clone();
                            r.last_drift = p.last_drift.clone();
                            r.drift = p.drift.clone();
                            r.last_ready_ms = p.last_ready_ms;
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
                                    r.reason = p.reason.clone();
                                    r.content_digest = p.content_digest.clone();
                                    r.started_at = p.started_at.clone();
                                    r.message = p.message.clone();
                                }
                            }
                        } else {
                            r.last_ready_ms = self
                                .inherited_ready_ms
                                .get(&(r.namespace.clone(), r.name.clone()))
                                .copied();
                        }
                        r
                    })
                    .collect(),
            })
            .collect();
        self.revision = Some(info.clone());
        self.rejected_revision = None;
        self.last_error = None;
        if !recheck {
            self.phase = OverallPhase::Progressing;
        }
        recheck
    }

    /// Recompute each layer's phase from its releases.
    pub fn refresh_layer_phases(&mut self) {
        for layer in &mut self.layers {
            layer.phase = LayerStatus::derive_phase(&layer.releases);
        }
    }

    /// Each layer with its phase and number of releases: with the release sequence and
    /// phases [`StatusStore::update`] compares anyway, what tells a phase change.
    fn layer_phases(&self) -> Vec<(LayerId, LayerPhase, usize)> {
        self.layers
            .iter()
            .map(|l| (l.layer, l.phase, l.releases.len()))
            .collect()
    }

    /// Every release, layer by layer.
    pub fn releases(&self) -> impl Iterator<Item = &ReleaseStatus> {
        self.layers.iter().flat_map(|l| &l.releases)
    }
}

/// A release changed phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub release: String,
    pub namespace: String,
    pub from: ReleasePhase,
    pub to: ReleasePhase,
    pub message: Option<String>,
    /// An Event reason that is not a phase change (`Recovered`, `Remediated`, ...); `None`
    /// for a phase change.
    pub reason: Option<&'static str>,
}

impl Transition {
    /// `r` changed phase, from `from`.
    fn of(r: &ReleaseStatus, from: ReleasePhase) -> Self {
        Self {
            release: r.name.clone(),
            namespace: r.namespace.clone(),
            from,
            to: r.phase,
            message: r.message.clone(),
            reason: None,
        }
    }
}

/// A release's identity (namespace and name) as a hash.
fn identity(namespace: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (namespace, name).hash(&mut h);
    h.finish()
}

/// A change notification: the generation counter, and whether a phase changed (writers of
/// the status ConfigMap write at once on phase changes and throttle the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    pub generation: u64,
    pub phase_changed: bool,
}

type Observer = Box<dyn Fn(&Status) + Send + Sync>;

struct Inner {
    status: std::sync::RwLock<Status>,
    changes: watch::Sender<Change>,
    transitions: broadcast::Sender<Transition>,
    observers: std::sync::RwLock<Vec<Observer>>,
}

/// The shared, current status. Cheap to clone.
#[derive(Clone)]
pub struct StatusStore {
    inner: Arc<Inner>,
}

impl Default for StatusStore {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusStore {
    pub fn new() -> Self {
        let (changes, _) = watch::channel(Change::default());
        let (transitions, _) = broadcast::channel(256);
        Self {
            inner: Arc::new(Inner {
                status: std::sync::RwLock::new(Status::default()),
                changes,
                transitions,
                observers: std::sync::RwLock::new(Vec::new()),
            }),
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Status {
        self.inner
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `f` of the current status, read in place (no copy). `f` must not touch the store.
    pub fn read<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.inner.status.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Run `f` on the status; layer phases are recomputed afterwards, release phase changes
    /// are broadcast as [`Transition`]s and subscribers are notified.
    pub fn update<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        let (result, transitions, phase_changed) = {
            let mut guard = self.inner.status.write().unwrap_or_else(|e| e.into_inner());
            let before = (guard.phase, guard.layer_phases());
            // Each release's identity as a hash of its namespace and name, not a copy of
            // them: an update (many per release) costs no allocation per release shown.
            let before_releases: Vec<(u64, ReleasePhase)> = guard
                .releases()
                .map(|r| (identity(&r.namespace, &r.name), r.phase))
                .collect();
            let result = f(&mut guard);
            guard.refresh_layer_phases();
            let mut transitions = Vec::new();
            // Releases are rarely added or moved by `f`: look each one up at its own index
            // first, and by identity only when that is another release.
            let mut by_identity: Option<std::collections::HashMap<u64, ReleasePhase>> = None;
            for (i, r) in guard.releases().enumerate() {
                let id = identity(&r.namespace, &r.name);
                let from = match before_releases.get(i) {
                    Some((was, p)) if *was == id => Some(*p),
                    _ => by_identity
                        .get_or_insert_with(|| before_releases.iter().copied().collect())
                        .get(&id)
                        .copied(),
                };
                if let Some(from) = from
                    && from != r.phase
                {
                    transitions.push(Transition::of(r, from));
                }
            }
            // A phase changed: the agent's or a layer's, a release's (a transition), or the
            // releases themselves (one added, removed or moved).
            let releases_changed =
                by_identity.is_some() || guard.releases().count() != before_releases.len();
            let phase_changed = before != (guard.phase, guard.layer_phases())
                || !transitions.is_empty()
                || releases_changed;
            (result, transitions, phase_changed)
        };
        self.notify(transitions, phase_changed);
        result
    }

    /// Run `f` on the status of one release (by namespace and name). Nothing is notified
    /// when `f` leaves it as it was (a release waiting for its objects re-checks them on
    /// every change of the watches, mostly to find nothing new), or when the release is not
    /// shown. Else as [`StatusStore::update`].
    pub fn update_release(&self, namespace: &str, name: &str, f: impl FnOnce(&mut ReleaseStatus)) {
        let (transition, phase_changed) = {
            let mut guard = self.inner.status.write().unwrap_or_else(|e| e.into_inner());
            let layers_before = (guard.phase, guard.layer_phases());
            let Some(r) = guard.release_mut(namespace, name) else {
                return;
            };
            let before = r.clone();
            f(r);
            if *r == before {
                return;
            }
            let transition = (r.phase != before.phase).then(|| Transition::of(r, before.phase));
            guard.refresh_layer_phases();
            let phase_changed =
                transition.is_some() || layers_before != (guard.phase, guard.layer_phases());
            (transition, phase_changed)
        };
        self.notify(transition.into_iter().collect(), phase_changed);
    }

    /// After an update: observers see the new status, transitions are broadcast, subscribers
    /// are notified.
    fn notify(&self, transitions: Vec<Transition>, phase_changed: bool) {
        // Observers see the status under the read lock (no copy per update); they never
        // touch the store.
        {
            let current = self.inner.status.read().unwrap_or_else(|e| e.into_inner());
            for observer in self
                .inner
                .observers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                observer(&current);
            }
        }
        for t in transitions {
            // No receiver is fine: nobody listens in `strata plan` or in unit tests.
            let _ = self.inner.transitions.send(t);
        }
        self.inner.changes.send_modify(|c| {
            c.generation += 1;
            c.phase_changed |= phase_changed;
        });
    }

    /// Announce something that happened to a release without a phase change (a recovery, a
    /// remediation): it is emitted as an Event with `reason`.
    pub fn announce(&self, namespace: &str, release: &str, reason: &'static str, message: String) {
        let phase = self.read(|s| {
            s.release(namespace, release)
                .map_or(ReleasePhase::Pending, |r| r.phase)
        });
        let _ = self.inner.transitions.send(Transition {
            release: release.to_string(),
            namespace: namespace.to_string(),
            from: phase,
            to: phase,
            message: Some(message),
            reason: Some(reason),
        });
    }

    /// Register a function called with the new status after every update (metrics gauges).
    pub fn observe(&self, f: impl Fn(&Status) + Send + Sync + 'static) {
        f(&self.snapshot());
        self.inner
            .observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// Change notifications. A receiver resets `phase_changed` itself by noting the generation
    /// it last wrote; see [`crate::observe::report`].
    pub fn subscribe(&self) -> watch::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Release phase transitions.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.inner.transitions.subscribe()
    }

    /// Clear the `phase_changed` flag (called by the writer after it wrote).
    pub fn clear_phase_changed(&self) {
        self.inner.changes.send_if_modified(|c| {
            let was = c.phase_changed;
            c.phase_changed = false;
            was
        });
    }
}

/// Current time, RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn announce_sends_a_transition_with_a_reason_and_no_phase_change() {
        let store = StatusStore::new();
        store.update(|s| {
            s.layers.push(LayerStatus {
                layer: LayerId::Number(1),
                phase: LayerPhase::Pending,
                ready_at: None,
                releases: vec![ReleaseStatus::pending("p", "r", "ns", "c", "1")],
            });
        });
        let mut rx = store.transitions();
        store.announce(
            "ns",
            "r",
            "Recovered",
            "recover-pending-install: done".into(),
        );
        let t = rx.recv().await.unwrap();
        assert_eq!(t.reason, Some("Recovered"));
        assert_eq!(t.from, t.to);
        assert_eq!(t.to, ReleasePhase::Pending);
        assert_eq!(t.message.as_deref(), Some("recover-pending-install: done"));
    }

    #[tokio::test]
    async fn a_release_update_that_changes_nothing_notifies_nobody() {
        let store = StatusStore::new();
        store.update(|s| {
            s.layers
                .push(layer(1, &[ReleasePhase::Pending, ReleasePhase::Pending]));
        });
        // As the ConfigMap writer does after a write.
        store.clear_phase_changed();
        let mut changes = store.subscribe();
        changes.borrow_and_update();
        let mut transitions = store.transitions();
        let observed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = observed.clone();
        store.observe(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let observed_at_start = observed.load(std::sync::atomic::Ordering::SeqCst);

        // The same message again, and a release that is not shown: nothing.
        store.update_release("ns", "r1-0", |r| r.message = None);
        store.update_release("ns", "absent", |r| r.phase = ReleasePhase::Ready);
        assert!(!changes.has_changed().unwrap());
        assert!(transitions.try_recv().is_err());
        assert_eq!(
            observed.load(std::sync::atomic::Ordering::SeqCst),
            observed_at_start
        );

        // A message: observers and subscribers, no transition, no phase change.
        store.update_release("ns", "r1-0", |r| r.message = Some("helm is writing".into()));
        assert!(changes.has_changed().unwrap());
        assert!(!changes.borrow_and_update().phase_changed);
        assert!(transitions.try_recv().is_err());
        assert_eq!(
            observed.load(std::sync::atomic::Ordering::SeqCst),
            observed_at_start + 1
        );

        // A phase: a transition, the layer's phase follows, a phase change.
        store.update_release("ns", "r1-0", |r| r.phase = ReleasePhase::Installing);
        let t = transitions.try_recv().unwrap();
        assert_eq!(
            (t.release.as_str(), t.from, t.to),
            ("r1-0", ReleasePhase::Pending, ReleasePhase::Installing)
        );
        assert_eq!(t.message.as_deref(), Some("helm is writing"));
        assert!(changes.borrow_and_update().phase_changed);
        assert_eq!(store.snapshot().layers[0].phase, LayerPhase::Progressing);
    }

    #[test]
    fn transitions_are_found_when_releases_move() {
        let store = StatusStore::new();
        store.update(|s| {
            s.layers
                .push(layer(1, &[ReleasePhase::Pending, ReleasePhase::Ready]));
        });
        let mut transitions = store.transitions();
        // The releases swap places and one changes phase: one transition, for that one.
        store.update(|s| {
            s.layers[0].releases.swap(0, 1);
            s.layers[0].releases[1].phase = ReleasePhase::Installing;
        });
        let t = transitions.try_recv().unwrap();
        assert_eq!(
            (t.release.as_str(), t.from, t.to),
            ("r1-0", ReleasePhase::Pending, ReleasePhase::Installing)
        );
        assert!(transitions.try_recv().is_err());
    }

    fn layer(n: u64, phases: &[ReleasePhase]) -> LayerStatus {
        let releases: Vec<_> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut r = ReleaseStatus::pending("p", &format!("r{n}-{i}"), "ns", "c", "1.0.0");
                r.phase = *p;
                r
            })
            .collect();
        LayerStatus {
            layer: LayerId::Number(n),
            phase: LayerStatus::derive_phase(&releases),
            ready_at: None,
            releases,
        }
    }

    fn info(commit: &str) -> RevisionInfo {
        RevisionInfo {
            mirrored: Vec::new(),
            commit: commit.into(),
            fetched_at: "t0".into(),
            profiles_path: None,
            cluster_name: None,
        }
    }

    fn pending(version: &str) -> Vec<(LayerId, Vec<ReleaseStatus>)> {
        vec![
            (
                LayerId::Number(1),
                vec![ReleaseStatus::pending("a", "a", "ns", "c", "1.0.0")],
            ),
            (
                LayerId::Unlayered,
                vec![ReleaseStatus::pending("b", "b", "ns", "c", version)],
            ),
        ]
    }

    /// A status that applied commit `c1` to Ready, releases with carried fields.
    fn applied() -> Status {
        let mut s = Status::default();
        assert!(!s.begin_revision(&info("c1"), pending("1.0.0")));
        for l in &mut s.layers {
            for r in &mut l.releases {
                r.phase = ReleasePhase::Ready;
                r.action = Some("install".into());
                r.helm_revision = Some(3);
                r.attempts = 2;
                r.ready_at = Some("t1".into());
                r.last_recovery = Some(ActionRecord {
                    kind: "recover-pending-install".into(),
                    at: "t0".into(),
                    message: "done".into(),
                });
            }
            l.ready_at = Some("t1".into());
        }
        s.refresh_layer_phases();
        s.phase = OverallPhase::Ready;
        s
    }

    #[test]
    fn a_new_commit_resets_phases_and_carries_release_history() {
        let mut s = applied();
        assert!(!s.begin_revision(&info("c2"), pending("1.0.0")));
        assert_eq!(s.phase, OverallPhase::Progressing);
        assert_eq!(s.revision.as_ref().unwrap().commit, "c2");
        for l in &s.layers {
            assert_eq!(l.phase, LayerPhase::Pending);
            assert_eq!(l.ready_at, None);
            for r in &l.releases {
                assert_eq!(r.phase, ReleasePhase::Pending);
                assert_eq!(r.action, None);
                assert_eq!(r.attempts, 0);
                assert_eq!(r.helm_revision, Some(3));
                assert_eq!(r.ready_at.as_deref(), Some("t1"));
                assert!(r.last_recovery.is_some());
            }
        }
    }

    #[test]
    fn an_inherited_time_to_ready_fills_only_releases_without_their_own() {
        let mut s = Status::default();
        s.inherited_ready_ms.insert(("ns".into(), "a".into()), 1800);
        s.inherited_ready_ms.insert(("ns".into(), "b".into()), 700);
        assert!(!s.begin_revision(&info("c1"), pending("1.0.0")));
        assert_eq!(s.release("ns", "a").unwrap().last_ready_ms, Some(1800));
        assert_eq!(s.release("ns", "b").unwrap().last_ready_ms, Some(700));
        // This agent's own observation wins over the inherited one from then on.
        s.release_mut("ns", "a").unwrap().last_ready_ms = Some(300);
        assert!(!s.begin_revision(&info("c2"), pending("1.0.0")));
        assert_eq!(s.release("ns", "a").unwrap().last_ready_ms, Some(300));
        assert_eq!(s.release("ns", "b").unwrap().last_ready_ms, Some(700));
        // Releases nobody has seen stay unknown (they start first).
        let mut fresh = Status::default();
        assert!(!fresh.begin_revision(&info("c1"), pending("1.0.0")));
        assert!(fresh.releases().all(|r| r.last_ready_ms.is_none()));
    }

    #[test]
    fn a_recheck_of_the_same_commit_keeps_ready_releases_ready() {
        let mut s = applied();
        s.rejected_revision = Some(RejectedRevision {
            commit: "c9".into(),
            fetched_at: "t".into(),
            problems: vec![],
        });
        s.last_error = Some("x".into());
        assert!(s.begin_revision(&info("c1"), pending("1.0.0")));
        assert_eq!(s.phase, OverallPhase::Ready);
        assert!(s.rejected_revision.is_none() && s.last_error.is_none());
        for l in &s.layers {
            assert_eq!(l.ready_at.as_deref(), Some("t1"));
            for r in &l.releases {
                assert_eq!(r.phase, ReleasePhase::Ready);
                assert_eq!(r.action.as_deref(), Some("install"));
                assert_eq!(r.attempts, 2);
            }
        }
    }

    #[test]
    fn a_changed_chart_version_on_a_recheck_is_not_kept_ready() {
        let mut s = applied();
        assert!(s.begin_revision(&info("c1"), pending("2.0.0")));
        let a = s.release("ns", "a").unwrap();
        assert_eq!(a.phase, ReleasePhase::Ready);
        let b = s.release("ns", "b").unwrap();
        assert_eq!(b.phase, ReleasePhase::Pending);
        assert_eq!(b.version, "2.0.0");
        assert_eq!(b.attempts, 2);
        assert_eq!(b.helm_revision, Some(3));
    }

    #[test]
    fn the_same_commit_not_ready_is_no_recheck() {
        let mut s = applied();
        s.phase = OverallPhase::Failed;
        assert!(!s.begin_revision(&info("c1"), pending("1.0.0")));
        assert_eq!(s.phase, OverallPhase::Progressing);
        // The same commit: Ready releases and layers' readyAt are still kept.
        assert_eq!(s.release("ns", "a").unwrap().phase, ReleasePhase::Ready);
        assert_eq!(s.layers[0].ready_at.as_deref(), Some("t1"));
    }

    #[test]
    fn layer_phase_is_derived_from_releases() {
        use ReleasePhase::*;
        assert_eq!(layer(1, &[Ready, Ready]).phase, LayerPhase::Ready);
        assert_eq!(layer(1, &[Ready, Failed]).phase, LayerPhase::Failed);
        assert_eq!(layer(1, &[Skipped, Skipped]).phase, LayerPhase::Skipped);
        assert_eq!(layer(1, &[Pending, Pending]).phase, LayerPhase::Pending);
        assert_eq!(layer(1, &[Ready, Waiting]).phase, LayerPhase::Progressing);
        assert_eq!(layer(1, &[Ready, Pending]).phase, LayerPhase::Progressing);
    }

    #[test]
    fn status_serializes_with_camel_case_and_unlayered_name() {
        let mut s = Status {
            phase: OverallPhase::Progressing,
            ..Status::default()
        };
        let mut l = layer(2, &[ReleasePhase::Waiting]);
        l.releases[0].not_ready.push(NotReady {
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: Some("ns".into()),
            reason: "0/1 replicas available".into(),
        });
        l.releases[0].helm_revision = Some(3);
        s.layers.push(l);
        s.layers.push(LayerStatus {
            layer: LayerId::Unlayered,
            phase: LayerPhase::Pending,
            ready_at: None,
            releases: vec![],
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Progressing");
        assert_eq!(v["layers"][0]["layer"], 2);
        assert_eq!(v["layers"][1]["layer"], "unlayered");
        let r = &v["layers"][0]["releases"][0];
        assert_eq!(r["phase"], "Waiting");
        assert_eq!(r["helmRevision"], 3);
        assert_eq!(r["notReady"][0]["kind"], "Deployment");
        assert_eq!(r["notReady"][0]["reason"], "0/1 replicas available");
    }

    #[test]
    fn update_broadcasts_transitions_and_phase_changes() {
        let store = StatusStore::new();
        store.update(|s| s.layers.push(layer(1, &[ReleasePhase::Pending])));
        let mut tr = store.transitions();
        let changes = store.subscribe();
        store.clear_phase_changed();
        store.update(|s| {
            let r = s.release_mut("ns", "r1-0").unwrap();
            r.message = Some("started".into());
        });
        assert!(
            !changes.borrow().phase_changed,
            "message only: no phase change"
        );
        assert!(tr.try_recv().is_err());
        store.update(|s| s.release_mut("ns", "r1-0").unwrap().phase = ReleasePhase::Installing);
        assert!(changes.borrow().phase_changed);
        let t = tr.try_recv().unwrap();
        assert_eq!(
            (t.from, t.to),
            (ReleasePhase::Pending, ReleasePhase::Installing)
        );
        assert_eq!(t.release, "r1-0");
        assert_eq!(store.snapshot().layers[0].phase, LayerPhase::Progressing);
    }

    #[test]
    fn counts_by_phase_cover_every_phase() {
        let mut s = Status::default();
        s.layers
            .push(layer(1, &[ReleasePhase::Ready, ReleasePhase::Ready]));
        s.layers.push(layer(2, &[ReleasePhase::Failed]));
        let counts = s.count_by_phase();
        assert_eq!(counts.len(), ReleasePhase::ALL.len());
        assert!(counts.contains(&(ReleasePhase::Ready, 2)));
        assert!(counts.contains(&(ReleasePhase::Failed, 1)));
        assert!(counts.contains(&(ReleasePhase::Pending, 0)));
    }
}
