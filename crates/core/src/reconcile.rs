//! Per-release reconcile decision: compare what the profile list wants with what helm's
//! release storage says, and choose one action.
//!
//! Two explicit steps, each a pure function (modelled on Flux helm-controller's
//! `internal/reconcile`): [`observe`] classifies the release into a [`State`]
//! (Absent, Locked, Failed, OutOfSync, InSync, Unknown), then [`decide`] maps the state to
//! an [`Action`]. A release deployed at the desired chart version with the same values digest
//! is [`Action::NoOp`]: no helm process runs at all.
//!
//! [`decide`] knows nothing beyond helm's storage: pending states (`pending-install`,
//! `pending-upgrade`, `pending-rollback`) are [`Action::Blocked`] and a failed release is
//! upgraded again. [`decide_with`] takes what the agent knows besides ([`Inputs`]: who holds
//! the Lease, the profile's [`Remediation`], the failed attempts so far, the last deployed
//! revision, the actions already run in this attempt) and adds:
//!
//! - **Recovery of releases left pending** by a killed helm, only while this instance holds
//!   the Lease ([`LockState::HeldByUs`]): `pending-install` -> [`Action::RecoverPendingInstall`]
//!   (uninstall, then install); `pending-upgrade` / `pending-rollback` ->
//!   [`Action::RollbackThenUpgrade`] (roll back to the last deployed revision, then upgrade).
//!   A release left `uninstalling` (an uninstall was interrupted) is finished and installed
//!   again the same way ([`Action::RecoverPendingInstall`]).
//!   Otherwise [`Action::Blocked`], naming the holder when another instance holds the Lease.
//! - **Remediation after a failed attempt**, per [`RemediationStrategy`]:
//!   [`Action::RemediateRollback`], [`Action::RemediateUninstall`] (only when the profile chose
//!   it), or [`Action::AwaitRetry`] (retry: the next attempt runs the same upgrade again).
//! - **Stalled** ([`Action::Stalled`]) once `retry.attempts` reaches `remediation.retries`.
//!
//! [`next_action`] is what the agent calls: [`decide_with`] gated by the release's retry
//! accounting at a given time ([`Action::Backoff`] until the next attempt is due, or
//! [`Action::Stalled`]).
//!
//! An *attempt* is one pass of the agent over a release. The agent calls [`decide_with`], runs
//! the action, adds its [`ActionKind`] to [`Inputs::performed`], reads helm's storage again and
//! calls [`decide_with`] again, until the action runs no helm. Rules within one attempt (as in
//! Flux's helm-controller): the same action never runs twice, and a remediation ends the
//! attempt ([`Action::AwaitRetry`]); after it the agent records the failure in its retry state
//! (backoff, then a new attempt with an empty `performed`).
//!
//! ```
//! use strata_core::profiles::{Remediation, RemediationStrategy};
//! use strata_core::reconcile::*;
//!
//! let desired = DesiredRelease {
//!     name: "linkerd".into(),
//!     namespace: "linkerd".into(),
//!     chart_name: "linkerd-control-plane".into(),
//!     chart_version: "2.14.1".into(),
//!     values_digest: "sha256:1".into(),
//!     chart_digest: None,
//!     content_digest: None,
//! };
//! // Found after a crash: revision 4 pending-upgrade; revision 3 was the last deployed one.
//! let history = [(3, ReleaseStatus::Superseded), (4, ReleaseStatus::PendingUpgrade)];
//! let observed = ObservedRelease {
//!     status: ReleaseStatus::PendingUpgrade,
//!     chart_name: "linkerd-control-plane".into(),
//!     chart_version: "2.14.1".into(),
//!     values_digest: None,
//!     revision: 4,
//!     stamp: None,
//! };
//! let remediation = Remediation { strategy: RemediationStrategy::Rollback, retries: 3 };
//! let mut inputs = Inputs::new(LockState::HeldByUs, remediation);
//! inputs.last_deployed_revision = last_deployed_revision(history.iter().map(|(r, s)| (*r, s)));
//!
//! let action = decide_with(&desired, Some(&observed), &inputs);
//! assert!(matches!(action, Action::RollbackThenUpgrade { to_revision: 3, .. }));
//!
//! // The agent ran it (helm rollback 3, then helm upgrade); the upgrade failed as revision 6.
//! inputs.performed.push(action.kind().unwrap());
//! let failed = ObservedRelease { status: ReleaseStatus::Failed, revision: 6, ..observed.clone() };
//! inputs.last_deployed_revision = Some(5); // the rollback's revision
//! let action = decide_with(&desired, Some(&failed), &inputs);
//! assert!(matches!(action, Action::RemediateRollback { to_revision: 5, .. }));
//!
//! // After the remediation the attempt ends: the agent records the failure and backs off.
//! inputs.performed.push(action.kind().unwrap());
//! let action = decide_with(&desired, Some(&observed), &inputs);
//! assert!(matches!(action, Action::AwaitRetry { .. }));
//!
//! // Another instance holds the Lease: nothing runs, and the reason names it.
//! let other = Inputs::new(LockState::HeldByOther { holder: "strata-0".into() }, remediation);
//! let action = decide_with(&desired, Some(&observed), &other);
//! assert!(action.to_string().contains("`strata-0` holds the Lease"));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::profiles::{Remediation, RemediationStrategy};
use crate::retry::{Due, RetryState};

/// A release's status in helm's storage (`helm list -o json` / `helm status -o json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStatus {
    Deployed,
    Failed,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    Superseded,
    Uninstalling,
    Uninstalled,
    /// Any other text helm may report.
    #[serde(untagged)]
    Other(String),
}

impl ReleaseStatus {
    /// Parse helm's status text (`deployed`, `pending-install`, ...; case-insensitive).
    pub fn parse(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "deployed" => Self::Deployed,
            "failed" => Self::Failed,
            "pending-install" => Self::PendingInstall,
            "pending-upgrade" => Self::PendingUpgrade,
            "pending-rollback" => Self::PendingRollback,
            "superseded" => Self::Superseded,
            "uninstalling" => Self::Uninstalling,
            "uninstalled" => Self::Uninstalled,
            _ => Self::Other(text.trim().to_owned()),
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Self::PendingInstall | Self::PendingUpgrade | Self::PendingRollback
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Deployed => "deployed",
            Self::Failed => "failed",
            Self::PendingInstall => "pending-install",
            Self::PendingUpgrade => "pending-upgrade",
            Self::PendingRollback => "pending-rollback",
            Self::Superseded => "superseded",
            Self::Uninstalling => "uninstalling",
            Self::Uninstalled => "uninstalled",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the profile list wants for one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredRelease {
    pub name: String,
    pub namespace: String,
    pub chart_name: String,
    pub chart_version: String,
    /// [`crate::values::canonical_digest`] of the merged values.
    pub values_digest: String,
    /// [`crate::digest`]'s digest of the chart's full content; `None`: not compared.
    #[serde(default)]
    pub chart_digest: Option<String>,
    /// [`crate::digest::content_digest`] (chart, values, helm options); `None`: not compared
    /// (only chart version and values decide, and no release is stamped).
    #[serde(default)]
    pub content_digest: Option<String>,
}

/// The latest revision of the release in helm's storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRelease {
    pub status: ReleaseStatus,
    pub chart_name: String,
    pub chart_version: String,
    /// Digest of the release's user-supplied values (`helm get values -o json`), computed with
    /// [`crate::values::canonical_digest`]; `None` when unknown (treated as changed).
    pub values_digest: Option<String>,
    pub revision: u32,
    /// What strata recorded on the release (its `strata.io/*` labels); `None`: the release
    /// carries no strata labels (installed by hand, or by a strata without them).
    #[serde(default)]
    pub stamp: Option<crate::digest::Stamp>,
}

/// The classified state of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum State {
    /// Not in storage, or only uninstalled revisions.
    Absent { reason: String },
    /// A pending status: another operation holds the release.
    Locked { status: ReleaseStatus },
    /// The last operation failed.
    Failed,
    /// Deployed, but the chart or the values differ.
    OutOfSync { changes: Vec<Change> },
    /// Deployed at the desired chart and values.
    InSync,
    /// A status strata does not act on.
    Unknown { status: ReleaseStatus },
}

/// One difference between desired and observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Change {
    /// Chart name or version (`name@version`).
    Chart {
        from: String,
        to: String,
    },
    /// Same chart version, other content (a Git-path chart edited without a version bump, a
    /// repository chart republished).
    ChartContent,
    Values,
    /// Chart and values unchanged, but the helm options strata sets (timeout, waiting).
    Options,
    /// The release carries no strata labels (installed by an older strata): upgraded once to
    /// record them.
    Unstamped,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chart { from, to } => match (from.split_once('@'), to.split_once('@')) {
                (Some((a, v1)), Some((b, v2))) if a == b => {
                    write!(f, "chart version {v1} -> {v2}")
                }
                _ => write!(f, "chart {from} -> {to}"),
            },
            Self::ChartContent => f.write_str("chart content changed"),
            Self::Values => f.write_str("values changed"),
            Self::Options => f.write_str("helm options changed"),
            Self::Unstamped => f.write_str(
                "the release has no strata labels (installed by an older strata); upgrading once to record them",
            ),
        }
    }
}

/// Why an upgrade runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum UpgradeReason {
    /// The chart version (or name) or the values differ from the deployed revision.
    OutOfSync { changes: Vec<Change> },
    /// The last revision failed; upgrading again with the desired chart and values.
    LastRevisionFailed { revision: u32 },
    /// Deployed at the desired chart and values, but objects of its manifest are missing from
    /// the cluster (deleted by hand) or fields the manifest sets were changed, and the
    /// profile's drift mode is `correct`: `helm upgrade --install` writes them again.
    Drift {
        missing: Vec<MissingObject>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<ChangedObject>,
    },
}

/// An object of a release's manifest whose live fields differ from the manifest's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedObject {
    pub object: MissingObject,
    /// JSON pointers of the fields (the first few; never values).
    pub paths: Vec<String>,
}

impl fmt::Display for ChangedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.object, self.paths.join(", "))
    }
}

/// An object of a release's manifest that the cluster does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingObject {
    pub kind: String,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for MissingObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// How many missing objects a drift reason names before "and N more".
pub const DRIFT_LISTED: usize = 3;

/// Is a manifest object exempt from drift detection? Hooks (`helm.sh/hook`, which helm
/// deletes and recreates by its own policy) and objects helm keeps on uninstall
/// (`helm.sh/resource-policy: keep`) are not drift when missing. `annotation` reads one of
/// the object's annotations.
pub fn drift_exempt<'a>(annotation: impl Fn(&str) -> Option<&'a str>) -> bool {
    annotation("helm.sh/hook").is_some()
        || annotation("helm.sh/resource-policy").is_some_and(|p| p.trim() == "keep")
}

impl fmt::Display for UpgradeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfSync { changes } => {
                let c: Vec<String> = changes.iter().map(ToString::to_string).collect();
                f.write_str(&c.join(", "))
            }
            Self::LastRevisionFailed { revision } => {
                write!(f, "revision {revision} failed; upgrading again")
            }
            Self::Drift { missing, changed } => {
                fn listed<T: fmt::Display>(items: &[T], what: &str) -> Option<String> {
                    if items.is_empty() {
                        return None;
                    }
                    let named: Vec<String> = items
                        .iter()
                        .take(DRIFT_LISTED)
                        .map(ToString::to_string)
                        .collect();
                    let mut s = format!("{} {what}", named.join(", "));
                    if items.len() > DRIFT_LISTED {
                        s.push_str(&format!(" and {} more", items.len() - DRIFT_LISTED));
                    }
                    Some(s)
                }
                let parts: Vec<String> = [listed(missing, "missing"), listed(changed, "changed")]
                    .into_iter()
                    .flatten()
                    .collect();
                write!(f, "drift: {}", parts.join("; "))
            }
        }
    }
}

/// What to do with the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Action {
    /// `helm upgrade --install` of a release that does not exist (yet).
    Install { reason: String },
    /// `helm upgrade --install` of an existing release.
    Upgrade { reason: UpgradeReason },
    /// Deployed at the desired chart version and values: run no helm process.
    NoOp,
    /// Nothing can be done safely now; `reason` says what a user can do.
    Blocked { reason: String },
    /// The release was left `pending-install` (helm was interrupted): `helm uninstall`, then
    /// `helm upgrade --install`. Only while this instance holds the Lease.
    RecoverPendingInstall { reason: String },
    /// The release was left `pending-upgrade` or `pending-rollback`: `helm rollback` to
    /// `to_revision` (the last deployed one), then `helm upgrade --install`. Only while this
    /// instance holds the Lease.
    RollbackThenUpgrade { to_revision: u32, reason: String },
    /// Remediation (strategy `rollback`) after a failed attempt: `helm rollback` to
    /// `to_revision`, then end the attempt.
    RemediateRollback { to_revision: u32, reason: String },
    /// Remediation (strategy `uninstall`, destructive, only when the profile chose it) after a
    /// failed attempt: `helm uninstall`, then end the attempt.
    RemediateUninstall { reason: String },
    /// Nothing more in this attempt: record the failure and try again after the backoff.
    AwaitRetry { reason: String },
    /// Backing off after failed attempts: `would` runs, but not before `until`. No helm runs
    /// now, and nothing is counted as a new failure.
    Backoff {
        until: jiff::Timestamp,
        would: ActionKind,
        reason: String,
    },
    /// Failed `remediation.retries` times: no more attempts until the release changes or an
    /// operator asks for a retry.
    Stalled { reason: String },
}

impl Action {
    /// Does the action run helm?
    pub fn runs_helm(&self) -> bool {
        self.kind().is_some()
    }

    /// The kind of helm action, `None` when no helm process runs.
    pub fn kind(&self) -> Option<ActionKind> {
        Some(match self {
            Self::Install { .. } => ActionKind::Install,
            Self::Upgrade { .. } => ActionKind::Upgrade,
            Self::RecoverPendingInstall { .. } => ActionKind::RecoverPendingInstall,
            Self::RollbackThenUpgrade { .. } => ActionKind::RollbackThenUpgrade,
            Self::RemediateRollback { .. } => ActionKind::RemediateRollback,
            Self::RemediateUninstall { .. } => ActionKind::RemediateUninstall,
            Self::NoOp
            | Self::Blocked { .. }
            | Self::AwaitRetry { .. }
            | Self::Backoff { .. }
            | Self::Stalled { .. } => {
                return None;
            }
        })
    }

    /// Does the action delete the release's resources (`helm uninstall`)?
    pub fn is_destructive(&self) -> bool {
        self.kind().is_some_and(ActionKind::is_destructive)
    }

    /// Why (for status and logs); empty for [`Action::NoOp`].
    pub fn reason(&self) -> String {
        match self {
            Self::NoOp => String::new(),
            Self::Upgrade { reason } => reason.to_string(),
            Self::Install { reason }
            | Self::Blocked { reason }
            | Self::RecoverPendingInstall { reason }
            | Self::RollbackThenUpgrade { reason, .. }
            | Self::RemediateRollback { reason, .. }
            | Self::RemediateUninstall { reason }
            | Self::AwaitRetry { reason }
            | Self::Backoff { reason, .. }
            | Self::Stalled { reason } => reason.clone(),
        }
    }
}

/// The helm actions strata runs on a release (for [`Inputs::performed`], metrics labels and
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionKind {
    Install,
    Upgrade,
    RecoverPendingInstall,
    RollbackThenUpgrade,
    RemediateRollback,
    RemediateUninstall,
}

impl ActionKind {
    /// Every kind (a bounded label set for metrics).
    pub const ALL: [ActionKind; 6] = [
        Self::Install,
        Self::Upgrade,
        Self::RecoverPendingInstall,
        Self::RollbackThenUpgrade,
        Self::RemediateRollback,
        Self::RemediateUninstall,
    ];

    /// Short stable name: `install`, `upgrade`, `recover-pending-install`,
    /// `rollback-then-upgrade`, `remediate-rollback`, `remediate-uninstall`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Upgrade => "upgrade",
            Self::RecoverPendingInstall => "recover-pending-install",
            Self::RollbackThenUpgrade => "rollback-then-upgrade",
            Self::RemediateRollback => "remediate-rollback",
            Self::RemediateUninstall => "remediate-uninstall",
        }
    }

    /// Recovery of a release left pending.
    pub fn is_recovery(self) -> bool {
        matches!(
            self,
            Self::RecoverPendingInstall | Self::RollbackThenUpgrade
        )
    }

    /// Remediation after a failed attempt.
    pub fn is_remediation(self) -> bool {
        matches!(self, Self::RemediateRollback | Self::RemediateUninstall)
    }

    /// Applies the desired chart and values (installs or upgrades), possibly after a recovery
    /// step.
    pub fn applies_desired(self) -> bool {
        !self.is_remediation()
    }

    /// Runs `helm uninstall` on a release that may hold resources. Recovering a
    /// `pending-install` uninstalls too, but that release never became deployed.
    pub fn is_destructive(self) -> bool {
        self == Self::RemediateUninstall
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Install { reason } => write!(f, "install ({reason})"),
            Self::Upgrade { reason } => write!(f, "upgrade ({reason})"),
            Self::NoOp => f.write_str("no change"),
            Self::Blocked { reason } => write!(f, "blocked: {reason}"),
            Self::RecoverPendingInstall { reason } => {
                write!(f, "recover: uninstall, then install ({reason})")
            }
            Self::RollbackThenUpgrade {
                to_revision,
                reason,
            } => write!(
                f,
                "recover: roll back to revision {to_revision}, then upgrade ({reason})"
            ),
            Self::RemediateRollback {
                to_revision,
                reason,
            } => write!(
                f,
                "remediate: roll back to revision {to_revision} ({reason})"
            ),
            Self::RemediateUninstall { reason } => write!(f, "remediate: uninstall ({reason})"),
            Self::AwaitRetry { reason } => write!(f, "retry later: {reason}"),
            Self::Backoff { would, reason, .. } => write!(f, "{would} later: {reason}"),
            Self::Stalled { reason } => write!(f, "stalled: {reason}"),
        }
    }
}

/// Classify the release.
pub fn observe(desired: &DesiredRelease, observed: Option<&ObservedRelease>) -> State {
    let Some(o) = observed else {
        return State::Absent {
            reason: "no release in helm's storage".into(),
        };
    };
    match &o.status {
        s if s.is_pending() => State::Locked { status: s.clone() },
        ReleaseStatus::Uninstalled => State::Absent {
            reason: "the release was uninstalled".into(),
        },
        ReleaseStatus::Failed => State::Failed,
        ReleaseStatus::Deployed => {
            let mut changes = Vec::new();
            if o.chart_name != desired.chart_name || o.chart_version != desired.chart_version {
                changes.push(Change::Chart {
                    from: format!("{}@{}", o.chart_name, o.chart_version),
                    to: format!("{}@{}", desired.chart_name, desired.chart_version),
                });
            }
            let chart_changed = !changes.is_empty();
            let recorded_chart = o.stamp.as_ref().map(|s| s.chart_digest.as_str());
            if !chart_changed
                && let (Some(want), Some(have)) = (desired.chart_digest.as_deref(), recorded_chart)
                && want != have
            {
                changes.push(Change::ChartContent);
            }
            if o.values_digest.as_deref() != Some(desired.values_digest.as_str()) {
                changes.push(Change::Values);
            }
            if let Some(want) = desired.content_digest.as_deref()
                && changes.is_empty()
            {
                match &o.stamp {
                    None => changes.push(Change::Unstamped),
                    Some(s) if s.content_digest != want => {
                        // Chart and values are what they were: the helm options differ.
                        changes.push(Change::Options);
                    }
                    Some(_) => {}
                }
            }
            if changes.is_empty() {
                State::InSync
            } else {
                State::OutOfSync { changes }
            }
        }
        other => State::Unknown {
            status: other.clone(),
        },
    }
}

/// Choose the action for the release.
pub fn decide(desired: &DesiredRelease, observed: Option<&ObservedRelease>) -> Action {
    let release = format!("{}/{}", desired.namespace, desired.name);
    match observe(desired, observed) {
        State::Absent { reason } => Action::Install { reason },
        State::InSync => Action::NoOp,
        State::OutOfSync { changes } => Action::Upgrade {
            reason: UpgradeReason::OutOfSync { changes },
        },
        State::Failed => Action::Upgrade {
            reason: UpgradeReason::LastRevisionFailed {
                revision: observed.map_or(0, |o| o.revision),
            },
        },
        State::Locked { status } => Action::Blocked {
            reason: match status {
                ReleaseStatus::PendingInstall => format!(
                    "release {release} is stuck in pending-install (another operation is in progress or helm was interrupted); if nothing is running, `helm uninstall` it"
                ),
                ReleaseStatus::PendingUpgrade | ReleaseStatus::PendingRollback => format!(
                    "release {release} is stuck in {status} (another operation is in progress or helm was interrupted); if nothing is running, `helm rollback` it"
                ),
                other => format!("release {release} is locked in {other}"),
            },
        },
        State::Unknown { status } => Action::Blocked {
            reason: format!(
                "release {release} has status `{status}`, which strata does not act on; check it with `helm status`"
            ),
        },
    }
}

/// Who holds the Lease that makes one strata instance the only one running helm.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "lock", rename_all = "camelCase")]
pub enum LockState {
    /// This instance holds the Lease (or runs without leader election, as the only writer by
    /// configuration) and runs no helm command on this release right now.
    HeldByUs,
    /// Another instance holds the Lease: it may be working on the release.
    HeldByOther { holder: String },
    /// Not known (the Lease could not be read): nothing that recovers a pending release runs.
    #[default]
    Unknown,
}

/// What the agent knows about a release besides helm's storage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inputs {
    /// Who holds the Lease.
    pub lock: LockState,
    /// The profile's remediation (strategy and retries).
    pub remediation: Remediation,
    /// The release's retry accounting before this attempt: consecutive failed attempts, the
    /// last failure's message (already free of secrets, shown with Stalled), backoff and
    /// Stalled. Reset by a success, a change of the release or an operator's request.
    #[serde(default)]
    pub retry: RetryState,
    /// The newest revision in helm's history whose status is `deployed` or `superseded`
    /// (`None`: never deployed). The target of rollbacks; ignored unless it is at least 1 and
    /// older than the observed revision (helm reads revision 0 as "the previous one").
    pub last_deployed_revision: Option<u32>,
    /// Helm actions already run in this attempt, in order.
    pub performed: Vec<ActionKind>,
    /// Objects of the deployed release's manifest the cluster does not have (drift), as read
    /// before the attempt's first action; empty when not checked.
    #[serde(default)]
    pub missing: Vec<MissingObject>,
    /// Objects whose fields differ from the deployed manifest's, to correct (drift mode
    /// `correct`); empty when not checked or only reported.
    #[serde(default)]
    pub changed: Vec<ChangedObject>,
}

impl Inputs {
    /// Inputs of the first decision of an attempt.
    pub fn new(lock: LockState, remediation: Remediation) -> Self {
        Self {
            lock,
            remediation,
            ..Self::default()
        }
    }

    fn did(&self, kind: ActionKind) -> bool {
        self.performed.contains(&kind)
    }

    /// An install or upgrade (maybe after a recovery step) ran in this attempt.
    fn applied(&self) -> bool {
        self.performed.iter().any(|k| k.applies_desired())
    }
}

/// The newest revision of `history` (revision, status) that was deployed: status `deployed`
/// or `superseded` (a later revision replaced it after it had been deployed). The target for
/// [`Inputs::last_deployed_revision`].
pub fn last_deployed_revision<'a>(
    history: impl IntoIterator<Item = (u32, &'a ReleaseStatus)>,
) -> Option<u32> {
    history
        .into_iter()
        .filter(|(r, s)| {
            *r >= 1 && matches!(s, ReleaseStatus::Deployed | ReleaseStatus::Superseded)
        })
        .map(|(r, _)| r)
        .max()
}

/// Choose the action for the release with everything the agent knows (see the module docs).
pub fn decide_with(
    desired: &DesiredRelease,
    observed: Option<&ObservedRelease>,
    inputs: &Inputs,
) -> Action {
    let release = format!("{}/{}", desired.namespace, desired.name);
    let state = observe(desired, observed);
    // In sync and nothing missing, or the objects were written again in this attempt.
    if state == State::InSync
        && ((inputs.missing.is_empty() && inputs.changed.is_empty()) || inputs.applied())
    {
        return Action::NoOp;
    }
    // A remediation ends the attempt.
    if let Some(k) = inputs.performed.iter().rev().find(|k| k.is_remediation()) {
        return Action::AwaitRetry {
            reason: match k {
                ActionKind::RemediateRollback => format!(
                    "release {release} was rolled back after the failure; the next attempt upgrades again"
                ),
                _ => format!(
                    "release {release} was uninstalled after the failure; the next attempt installs again"
                ),
            },
        };
    }
    let retries = inputs.remediation.retries.max(1);
    if inputs.retry.attempts >= retries && inputs.performed.is_empty() {
        let last = inputs
            .retry
            .last_error
            .as_deref()
            .map_or_else(String::new, |m| format!("; last failure: {m}"));
        return Action::Stalled {
            reason: format!(
                "release {release} failed {} times (remediation.retries is {retries}); not retried until the release changes or a retry is requested{last}",
                inputs.retry.attempts
            ),
        };
    }
    let action = match state {
        State::Locked { status }
        | State::Unknown {
            status: status @ ReleaseStatus::Uninstalling,
        } => recover(&release, &status, observed, inputs),
        State::Failed if inputs.applied() => remediate(&release, observed, inputs),
        State::Absent { .. } | State::OutOfSync { .. } if inputs.applied() => {
            // helm failed without leaving a failed revision (e.g. a template error).
            Action::AwaitRetry {
                reason: format!(
                    "the {} of release {release} in this attempt failed; trying again after the backoff",
                    inputs.performed.last().map_or("install", |k| k.as_str())
                ),
            }
        }
        State::InSync => Action::Upgrade {
            reason: UpgradeReason::Drift {
                missing: inputs.missing.clone(),
                changed: inputs.changed.clone(),
            },
        },
        _ => decide(desired, observed),
    };
    guard(&release, action, inputs)
}

/// The next action for one release at `now`: [`decide_with`], and before the first helm
/// action of an attempt the retry accounting's gate ([`RetryState::due`]): while backing off,
/// [`Action::Backoff`] until the next attempt is due; when Stalled (a permanent error, or
/// `remediation.retries` failed attempts), [`Action::Stalled`]. The one function the agent asks
/// what to do; time is passed in, never read.
pub fn next_action(
    desired: &DesiredRelease,
    observed: Option<&ObservedRelease>,
    inputs: &Inputs,
    now: jiff::Timestamp,
) -> Action {
    let action = decide_with(desired, observed, inputs);
    let Some(would) = action.kind() else {
        return action;
    };
    if !inputs.performed.is_empty() {
        return action;
    }
    let retry = &inputs.retry;
    let last = retry.last_error.clone().unwrap_or_default();
    match retry.due(now) {
        Due::Now => action,
        Due::At(until) => Action::Backoff {
            until,
            would,
            reason: format!(
                "backing off after {} failed attempt(s): next attempt not before {until}; last error: {last}",
                retry.attempts
            ),
        },
        Due::Stalled => Action::Stalled {
            reason: retry.stalled_reason.clone().unwrap_or(last),
        },
    }
}

/// Never the same action twice in one attempt; nothing runs helm while another instance holds
/// the Lease.
fn guard(release: &str, action: Action, inputs: &Inputs) -> Action {
    let Some(kind) = action.kind() else {
        return action;
    };
    if let LockState::HeldByOther { holder } = &inputs.lock {
        return Action::Blocked {
            reason: format!(
                "strata instance `{holder}` holds the Lease and may be working on release {release}; this instance waits (would {kind}: {})",
                action.reason()
            ),
        };
    }
    if inputs.did(kind) {
        return Action::AwaitRetry {
            reason: format!(
                "{kind} of release {release} already ran in this attempt; trying again after the backoff"
            ),
        };
    }
    action
}

fn recover(
    release: &str,
    status: &ReleaseStatus,
    observed: Option<&ObservedRelease>,
    inputs: &Inputs,
) -> Action {
    let revision = observed.map_or(0, |o| o.revision);
    match &inputs.lock {
        LockState::HeldByUs => {}
        LockState::HeldByOther { holder } => {
            return Action::Blocked {
                reason: format!(
                    "release {release} is {status} and strata instance `{holder}` holds the Lease, so it may still be working on it; recovery waits until this instance holds the Lease"
                ),
            };
        }
        LockState::Unknown => {
            return Action::Blocked {
                reason: format!(
                    "release {release} is {status}, and whether another strata instance holds the Lease is unknown; recovery waits until this instance holds the Lease"
                ),
            };
        }
    }
    match status {
        ReleaseStatus::PendingInstall => Action::RecoverPendingInstall {
            reason: format!(
                "release {release} was left pending-install at revision {revision} (helm was interrupted); uninstalling it, then installing again"
            ),
        },
        ReleaseStatus::Uninstalling => Action::RecoverPendingInstall {
            reason: format!(
                "release {release} was left uninstalling at revision {revision} (an uninstall was interrupted); finishing the uninstall, then installing again"
            ),
        },
        _ => {
            let target = inputs
                .last_deployed_revision
                .filter(|r| (1..revision).contains(r))
                .or_else(|| revision.checked_sub(1).filter(|r| *r > 0));
            match target {
                Some(to_revision) => Action::RollbackThenUpgrade {
                    to_revision,
                    reason: format!(
                        "release {release} was left {status} at revision {revision} (helm was interrupted); rolling back to revision {to_revision}{}, then upgrading",
                        if inputs.last_deployed_revision == Some(to_revision) {
                            ", the last deployed one"
                        } else {
                            " (no deployed revision is known)"
                        }
                    ),
                },
                None => Action::Blocked {
                    reason: format!(
                        "release {release} is {status} at revision {revision} with no earlier revision to roll back to; check it with `helm history` and `helm uninstall` it if it holds nothing"
                    ),
                },
            }
        }
    }
}

fn remediate(release: &str, observed: Option<&ObservedRelease>, inputs: &Inputs) -> Action {
    let revision = observed.map_or(0, |o| o.revision);
    match inputs.remediation.strategy {
        RemediationStrategy::Retry => Action::AwaitRetry {
            reason: format!(
                "revision {revision} of release {release} failed; remediation `retry`: upgrading again after the backoff"
            ),
        },
        RemediationStrategy::Rollback => {
            match inputs
                .last_deployed_revision
                .filter(|r| (1..revision).contains(r))
            {
                Some(to_revision) => Action::RemediateRollback {
                    to_revision,
                    reason: format!(
                        "revision {revision} of release {release} failed; remediation `rollback`: back to revision {to_revision}, the last deployed one"
                    ),
                },
                None => Action::AwaitRetry {
                    reason: format!(
                        "revision {revision} of release {release} failed and no earlier revision was deployed, so remediation `rollback` has nothing to roll back to; trying again after the backoff"
                    ),
                },
            }
        }
        RemediationStrategy::Uninstall => Action::RemediateUninstall {
            reason: format!(
                "revision {revision} of release {release} failed; remediation `uninstall` (chosen by the profile): uninstalling, then installing again after the backoff"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> DesiredRelease {
        DesiredRelease {
            name: "cert-manager".into(),
            namespace: "cert-manager".into(),
            chart_name: "cert-manager".into(),
            chart_version: "1.14.4".into(),
            values_digest: "sha256:aaa".into(),
            chart_digest: None,
            content_digest: None,
        }
    }

    fn observed(status: &str, version: &str, digest: Option<&str>) -> ObservedRelease {
        ObservedRelease {
            status: ReleaseStatus::parse(status),
            chart_name: "cert-manager".into(),
            chart_version: version.into(),
            values_digest: digest.map(str::to_owned),
            revision: 3,
            stamp: None,
        }
    }

    #[test]
    fn decision_table() {
        let d = desired();
        type Check = fn(&Action) -> bool;
        let cases: Vec<(Option<ObservedRelease>, Check)> = vec![
            (None, |a| matches!(a, Action::Install { .. })),
            (
                Some(observed("deployed", "1.14.4", Some("sha256:aaa"))),
                |a| *a == Action::NoOp,
            ),
            (
                Some(observed("deployed", "1.14.3", Some("sha256:aaa"))),
                |a| matches!(a, Action::Upgrade { reason: UpgradeReason::OutOfSync { changes } } if changes == &vec![Change::Chart { from: "cert-manager@1.14.3".into(), to: "cert-manager@1.14.4".into() }]),
            ),
            (
                Some(observed("deployed", "1.14.4", Some("sha256:bbb"))),
                |a| matches!(a, Action::Upgrade { reason: UpgradeReason::OutOfSync { changes } } if changes == &vec![Change::Values]),
            ),
            (
                Some(observed("deployed", "1.14.4", None)),
                |a| matches!(a, Action::Upgrade { reason: UpgradeReason::OutOfSync { changes } } if changes == &vec![Change::Values]),
            ),
            (
                Some(observed("deployed", "1.0.0", Some("x"))),
                |a| matches!(a, Action::Upgrade { reason: UpgradeReason::OutOfSync { changes } } if changes.len() == 2),
            ),
            (
                Some(observed("failed", "1.14.4", Some("sha256:aaa"))),
                |a| {
                    *a == Action::Upgrade {
                        reason: UpgradeReason::LastRevisionFailed { revision: 3 },
                    }
                },
            ),
            (
                Some(observed("uninstalled", "1.14.4", Some("sha256:aaa"))),
                |a| matches!(a, Action::Install { .. }),
            ),
            (
                Some(observed("pending-install", "1.14.4", None)),
                |a| matches!(a, Action::Blocked { reason } if reason.contains("pending-install") && reason.contains("helm uninstall")),
            ),
            (
                Some(observed("pending-upgrade", "1.14.4", None)),
                |a| matches!(a, Action::Blocked { reason } if reason.contains("pending-upgrade") && reason.contains("helm rollback")),
            ),
            (Some(observed("pending-rollback", "1.14.4", None)), |a| {
                matches!(a, Action::Blocked { .. })
            }),
            (
                Some(observed("uninstalling", "1.14.4", None)),
                |a| matches!(a, Action::Blocked { reason } if reason.contains("`uninstalling`")),
            ),
            (Some(observed("superseded", "1.14.4", None)), |a| {
                matches!(a, Action::Blocked { .. })
            }),
            (Some(observed("weird", "1.14.4", None)), |a| {
                matches!(a, Action::Blocked { .. })
            }),
        ];
        for (o, check) in cases {
            let a = decide(&d, o.as_ref());
            assert!(check(&a), "observed {o:?} gave {a:?}");
            assert_eq!(
                a.runs_helm(),
                matches!(a, Action::Install { .. } | Action::Upgrade { .. })
            );
        }
    }

    #[test]
    fn observe_states() {
        let d = desired();
        assert_eq!(
            observe(
                &d,
                Some(&observed("deployed", "1.14.4", Some("sha256:aaa")))
            ),
            State::InSync
        );
        assert_eq!(
            observe(&d, Some(&observed("pending-upgrade", "1.14.4", None))),
            State::Locked {
                status: ReleaseStatus::PendingUpgrade
            }
        );
    }

    #[test]
    fn status_parsing_and_serde() {
        assert_eq!(
            ReleaseStatus::parse("Pending-Install"),
            ReleaseStatus::PendingInstall
        );
        assert_eq!(
            ReleaseStatus::parse("odd"),
            ReleaseStatus::Other("odd".into())
        );
        assert_eq!(
            serde_json::to_string(&ReleaseStatus::PendingRollback).unwrap(),
            "\"pending-rollback\""
        );
        let s: ReleaseStatus = serde_json::from_str("\"deployed\"").unwrap();
        assert_eq!(s, ReleaseStatus::Deployed);
        let s: ReleaseStatus = serde_json::from_str("\"odd\"").unwrap();
        assert_eq!(s, ReleaseStatus::Other("odd".into()));
    }

    fn inputs(lock: LockState, strategy: RemediationStrategy) -> Inputs {
        Inputs {
            lock,
            remediation: Remediation {
                strategy,
                retries: 3,
            },
            retry: RetryState::default(),
            last_deployed_revision: Some(2),
            performed: Vec::new(),
            missing: Vec::new(),
            changed: Vec::new(),
        }
    }

    fn missing(kind: &str, namespace: Option<&str>, name: &str) -> MissingObject {
        MissingObject {
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: name.into(),
        }
    }

    #[test]
    fn missing_objects_of_an_in_sync_release_upgrade_it_once() {
        let d = desired();
        let ok = observed("deployed", "1.14.4", Some("sha256:aaa"));
        let now = at("2026-01-01T12:00:05Z");
        let mut i = inputs(LockState::HeldByUs, RemediationStrategy::Retry);
        // Nothing missing: no helm.
        assert_eq!(next_action(&d, Some(&ok), &i, now), Action::NoOp);

        i.missing = vec![missing("ConfigMap", Some("cert-manager"), "settings")];
        let a = next_action(&d, Some(&ok), &i, now);
        assert_eq!(a.kind(), Some(ActionKind::Upgrade));
        assert_eq!(a.reason(), "drift: ConfigMap cert-manager/settings missing");
        // Written again in this attempt: done, whatever was read before.
        i.performed = vec![ActionKind::Upgrade];
        assert_eq!(next_action(&d, Some(&ok), &i, now), Action::NoOp);
        i.performed.clear();
        // Changed fields alone upgrade too.
        let mut c = inputs(LockState::HeldByUs, RemediationStrategy::Retry);
        c.changed = vec![ChangedObject {
            object: missing("ConfigMap", Some("cert-manager"), "settings"),
            paths: vec!["/data/a".into()],
        }];
        let a = next_action(&d, Some(&ok), &c, now);
        assert_eq!(
            a.reason(),
            "drift: ConfigMap cert-manager/settings (/data/a) changed"
        );

        // Counted like any other upgrade: backing off, then stalled.
        i.retry = backing_off(1);
        assert!(matches!(
            next_action(&d, Some(&ok), &i, now),
            Action::Backoff {
                would: ActionKind::Upgrade,
                ..
            }
        ));
        i.retry.attempts = 3;
        assert!(matches!(
            next_action(&d, Some(&ok), &i, now),
            Action::Stalled { .. }
        ));

        // Another instance holds the Lease: no helm.
        let mut other_lock = inputs(other(), RemediationStrategy::Retry);
        other_lock.missing = i.missing.clone();
        assert!(matches!(
            decide_with(&d, Some(&ok), &other_lock),
            Action::Blocked { .. }
        ));

        // Out of sync wins: the upgrade's own reason (it writes the objects too).
        let old = observed("deployed", "1.14.3", Some("sha256:aaa"));
        i.retry = RetryState::default();
        assert!(matches!(
            next_action(&d, Some(&old), &i, now),
            Action::Upgrade {
                reason: UpgradeReason::OutOfSync { .. }
            }
        ));
    }

    #[test]
    fn drift_reason_lists_a_few_then_counts() {
        let many: Vec<MissingObject> = (0..5)
            .map(|n| missing("Service", Some("web"), &format!("s{n}")))
            .chain([missing("ClusterRole", None, "reader")])
            .collect();
        assert_eq!(
            UpgradeReason::Drift {
                missing: many,
                changed: Vec::new()
            }
            .to_string(),
            "drift: Service web/s0, Service web/s1, Service web/s2 missing and 3 more"
        );
        assert_eq!(
            UpgradeReason::Drift {
                missing: vec![missing("ClusterRole", None, "reader")],
                changed: Vec::new()
            }
            .to_string(),
            "drift: ClusterRole reader missing"
        );
        let changed = |name: &str, paths: &[&str]| ChangedObject {
            object: missing("ConfigMap", Some("app"), name),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(
            UpgradeReason::Drift {
                missing: vec![missing("ClusterRole", None, "reader")],
                changed: vec![
                    changed("a", &["/data/x", "/data/y"]),
                    changed("b", &["/data"])
                ]
            }
            .to_string(),
            "drift: ClusterRole reader missing; ConfigMap app/a (/data/x, /data/y), ConfigMap app/b (/data) changed"
        );
    }

    #[test]
    fn hooks_and_kept_objects_are_not_drift() {
        let with = |pairs: &'static [(&'static str, &'static str)]| {
            drift_exempt(move |k| pairs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v))
        };
        assert!(with(&[("helm.sh/hook", "post-install")]));
        assert!(with(&[("helm.sh/resource-policy", "keep")]));
        assert!(!with(&[("helm.sh/resource-policy", "delete")]));
        assert!(!with(&[("app", "web")]));
        assert!(!with(&[]));
    }

    fn other() -> LockState {
        LockState::HeldByOther {
            holder: "strata-7d9f".into(),
        }
    }

    #[test]
    fn pending_recovery_table() {
        use ActionKind as K;
        use LockState::{HeldByUs, Unknown};
        use RemediationStrategy::{Retry, Rollback, Uninstall};
        let d = desired();
        type Check = fn(&Action) -> bool;
        // (status, lock, strategy, last deployed, performed, expected)
        type Case = (
            &'static str,
            LockState,
            RemediationStrategy,
            Option<u32>,
            Vec<K>,
            Check,
        );
        let cases: Vec<Case> = vec![
            (
                "pending-install",
                HeldByUs,
                Retry,
                None,
                vec![],
                |a| matches!(a, Action::RecoverPendingInstall { reason } if reason.contains("pending-install at revision 3") && reason.contains("uninstalling")),
            ),
            // Recovery does not depend on the strategy.
            ("pending-install", HeldByUs, Rollback, None, vec![], |a| {
                matches!(a, Action::RecoverPendingInstall { .. })
            }),
            (
                "pending-upgrade",
                HeldByUs,
                Retry,
                Some(2),
                vec![],
                |a| matches!(a, Action::RollbackThenUpgrade { to_revision: 2, reason } if reason.contains("the last deployed one")),
            ),
            (
                "pending-rollback",
                HeldByUs,
                Uninstall,
                Some(1),
                vec![],
                |a| matches!(a, Action::RollbackThenUpgrade { to_revision: 1, reason } if reason.contains("pending-rollback")),
            ),
            // No deployed revision known: the previous one.
            (
                "pending-upgrade",
                HeldByUs,
                Retry,
                None,
                vec![],
                |a| matches!(a, Action::RollbackThenUpgrade { to_revision: 2, reason } if reason.contains("no deployed revision is known")),
            ),
            // A "last deployed" that is not older than the pending revision is not a target.
            ("pending-upgrade", HeldByUs, Retry, Some(3), vec![], |a| {
                matches!(a, Action::RollbackThenUpgrade { to_revision: 2, .. })
            }),
            // Another instance holds the Lease: blocked, naming it.
            (
                "pending-install",
                other(),
                Retry,
                None,
                vec![],
                |a| matches!(a, Action::Blocked { reason } if reason.contains("`strata-7d9f` holds the Lease") && reason.contains("pending-install")),
            ),
            (
                "pending-upgrade",
                other(),
                Retry,
                Some(2),
                vec![],
                |a| matches!(a, Action::Blocked { reason } if reason.contains("strata-7d9f")),
            ),
            (
                "pending-rollback",
                Unknown,
                Retry,
                Some(2),
                vec![],
                |a| matches!(a, Action::Blocked { reason } if reason.contains("unknown")),
            ),
            // An interrupted uninstall is finished, then the release installed again.
            (
                "uninstalling",
                HeldByUs,
                Retry,
                Some(2),
                vec![],
                |a| matches!(a, Action::RecoverPendingInstall { reason } if reason.contains("left uninstalling") && reason.contains("finishing the uninstall")),
            ),
            (
                "uninstalling",
                other(),
                Retry,
                Some(2),
                vec![],
                |a| matches!(a, Action::Blocked { reason } if reason.contains("uninstalling") && reason.contains("strata-7d9f")),
            ),
            ("uninstalling", Unknown, Retry, Some(2), vec![], |a| {
                matches!(a, Action::Blocked { .. })
            }),
            // Never the same recovery twice in one attempt.
            (
                "pending-install",
                HeldByUs,
                Retry,
                None,
                vec![K::RecoverPendingInstall],
                |a| matches!(a, Action::AwaitRetry { reason } if reason.contains("recover-pending-install") && reason.contains("already ran")),
            ),
            (
                "pending-upgrade",
                HeldByUs,
                Retry,
                Some(2),
                vec![K::RollbackThenUpgrade],
                |a| matches!(a, Action::AwaitRetry { .. }),
            ),
        ];
        for (status, lock, strategy, last, performed, check) in cases {
            let mut i = inputs(lock.clone(), strategy);
            i.last_deployed_revision = last;
            i.performed = performed.clone();
            let o = observed(status, "1.14.4", None);
            let a = decide_with(&d, Some(&o), &i);
            assert!(
                check(&a),
                "{status} {lock:?} {strategy} {last:?} {performed:?} gave {a:?}"
            );
            assert!(
                !a.is_destructive(),
                "recovery is not a destructive remediation"
            );
        }
        // Revision 1 pending-upgrade with nothing before it cannot be rolled back.
        let mut o = observed("pending-upgrade", "1.14.4", None);
        o.revision = 1;
        let a = decide_with(&d, Some(&o), &inputs(HeldByUs, Retry));
        assert!(
            matches!(&a, Action::Blocked { reason } if reason.contains("no earlier revision")),
            "{a:?}"
        );
    }

    #[test]
    fn remediation_table() {
        use ActionKind as K;
        use LockState::HeldByUs;
        use RemediationStrategy::{Retry, Rollback, Uninstall};
        let d = desired();
        type Check = fn(&Action) -> bool;
        // (observed status or absent, strategy, last deployed, performed, expected)
        type Case = (
            Option<&'static str>,
            RemediationStrategy,
            Option<u32>,
            Vec<K>,
            Check,
        );
        let cases: Vec<Case> = vec![
            // Start of an attempt on a failed release: upgrade again, whatever the strategy.
            (Some("failed"), Retry, Some(2), vec![], |a| {
                matches!(
                    a,
                    Action::Upgrade {
                        reason: UpgradeReason::LastRevisionFailed { revision: 3 }
                    }
                )
            }),
            (Some("failed"), Uninstall, Some(2), vec![], |a| {
                matches!(a, Action::Upgrade { .. })
            }),
            // The upgrade of this attempt failed.
            (
                Some("failed"),
                Retry,
                Some(2),
                vec![K::Upgrade],
                |a| matches!(a, Action::AwaitRetry { reason } if reason.contains("remediation `retry`")),
            ),
            (
                Some("failed"),
                Rollback,
                Some(2),
                vec![K::Upgrade],
                |a| matches!(a, Action::RemediateRollback { to_revision: 2, reason } if reason.contains("revision 3") && reason.contains("back to revision 2")),
            ),
            (
                Some("failed"),
                Rollback,
                None,
                vec![K::Install],
                |a| matches!(a, Action::AwaitRetry { reason } if reason.contains("nothing to roll back to")),
            ),
            (
                Some("failed"),
                Uninstall,
                None,
                vec![K::Install],
                |a| matches!(a, Action::RemediateUninstall { reason } if reason.contains("chosen by the profile")),
            ),
            // A failed recovery is remediated like a failed upgrade.
            (
                Some("failed"),
                Rollback,
                Some(2),
                vec![K::RollbackThenUpgrade],
                |a| matches!(a, Action::RemediateRollback { to_revision: 2, .. }),
            ),
            // A remediation ends the attempt, whatever the state it left.
            (
                Some("deployed"),
                Rollback,
                Some(2),
                vec![K::Upgrade, K::RemediateRollback],
                |a| matches!(a, Action::AwaitRetry { reason } if reason.contains("rolled back")),
            ),
            (
                None,
                Uninstall,
                None,
                vec![K::Install, K::RemediateUninstall],
                |a| matches!(a, Action::AwaitRetry { reason } if reason.contains("uninstalled")),
            ),
            // helm failed without a new revision (template error): out of sync, upgrade ran.
            (
                Some("deployed"),
                Rollback,
                Some(3),
                vec![K::Upgrade],
                |a| matches!(a, Action::AwaitRetry { reason } if reason.contains("upgrade of release")),
            ),
            (None, Retry, None, vec![K::Install], |a| {
                matches!(a, Action::AwaitRetry { .. })
            }),
        ];
        for (status, strategy, last, performed, check) in cases {
            let mut i = inputs(HeldByUs, strategy);
            i.last_deployed_revision = last;
            i.performed = performed.clone();
            let o = status.map(|s| observed(s, "1.14.3", Some("sha256:aaa")));
            let a = decide_with(&d, o.as_ref(), &i);
            assert!(
                check(&a),
                "{status:?} {strategy} {last:?} {performed:?} gave {a:?}"
            );
            // The destructive action only when the profile chose it.
            if a.is_destructive() {
                assert_eq!(strategy, Uninstall);
            }
            // Never the same helm action twice in one attempt.
            if let Some(k) = a.kind() {
                assert!(!performed.contains(&k), "{k} repeated: {performed:?}");
            }
        }
    }

    #[test]
    fn stalled_after_retries_and_not_before() {
        let d = desired();
        let o = observed("failed", "1.14.4", Some("sha256:aaa"));
        let mut i = inputs(LockState::HeldByUs, RemediationStrategy::Retry);
        i.retry.last_error = Some("timed out waiting for the condition".into());
        i.retry.attempts = 2;
        assert!(matches!(
            decide_with(&d, Some(&o), &i),
            Action::Upgrade { .. }
        ));
        i.retry.attempts = 3;
        let a = decide_with(&d, Some(&o), &i);
        assert!(
            matches!(&a, Action::Stalled { reason } if reason.contains("failed 3 times (remediation.retries is 3)") && reason.contains("last failure: timed out")),
            "{a:?}"
        );
        assert!(!a.runs_helm());
        // Stalled also covers a release that is absent or pending.
        assert!(matches!(decide_with(&d, None, &i), Action::Stalled { .. }));
        let p = observed("pending-install", "1.14.4", None);
        assert!(matches!(
            decide_with(&d, Some(&p), &i),
            Action::Stalled { .. }
        ));
        // In sync wins: nothing to do is not Stalled.
        let ok = observed("deployed", "1.14.4", Some("sha256:aaa"));
        assert_eq!(decide_with(&d, Some(&ok), &i), Action::NoOp);
        // Within the attempt that reached the limit, the remediation still runs.
        i.remediation.strategy = RemediationStrategy::Rollback;
        i.performed = vec![ActionKind::Upgrade];
        assert!(matches!(
            decide_with(&d, Some(&o), &i),
            Action::RemediateRollback { .. }
        ));
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    /// The retry state after `failures` transient failures at 12:00, with a 10 s delay each.
    fn backing_off(failures: u32) -> RetryState {
        use crate::retry::{Failure, Jitter, RetryPolicy, SeededRng};
        let policy = RetryPolicy {
            base_delay: std::time::Duration::from_secs(10),
            max_delay: std::time::Duration::from_secs(10),
            max_attempts: 3,
            multiplier: 1.0,
            jitter: Jitter::None,
        };
        let mut st = RetryState::new();
        for _ in 0..failures {
            st.on_failure(
                at("2026-01-01T12:00:00Z"),
                Failure::transient("hook failed"),
                &policy,
                &mut SeededRng::new(1),
            );
        }
        st
    }

    #[test]
    fn next_action_gates_the_first_helm_action_on_the_retry_accounting() {
        let d = desired();
        let failed = observed("failed", "1.14.4", Some("sha256:aaa"));
        let mut i = inputs(LockState::HeldByUs, RemediationStrategy::Retry);
        let before = at("2026-01-01T12:00:05Z");
        let after = at("2026-01-01T12:00:11Z");

        // Fresh accounting: the decision as is.
        assert!(matches!(
            next_action(&d, Some(&failed), &i, before),
            Action::Upgrade { .. }
        ));

        // One failure, 10 s delay: backing off until 12:00:10, then due.
        i.retry = backing_off(1);
        let a = next_action(&d, Some(&failed), &i, before);
        assert!(
            matches!(&a, Action::Backoff { until, would: ActionKind::Upgrade, reason }
                if *until == at("2026-01-01T12:00:10Z")
                    && reason.contains("backing off after 1 failed attempt(s)")
                    && reason.contains("last error: hook failed")),
            "{a:?}"
        );
        assert!(!a.runs_helm());
        assert!(matches!(
            next_action(&d, Some(&failed), &i, after),
            Action::Upgrade { .. }
        ));

        // Within an attempt (a helm action already ran) the gate does not apply.
        i.performed = vec![ActionKind::Upgrade];
        assert!(!matches!(
            next_action(&d, Some(&failed), &i, before),
            Action::Backoff { .. }
        ));
        i.performed.clear();

        // In sync wins over backoff: nothing to do is not waiting.
        let ok = observed("deployed", "1.14.4", Some("sha256:aaa"));
        assert_eq!(next_action(&d, Some(&ok), &i, before), Action::NoOp);

        // A permanent failure stalls at once, with its own reason.
        let mut st = RetryState::new();
        st.on_failure(
            before,
            crate::retry::Failure::permanent("template: x:1: bad"),
            &crate::retry::RetryPolicy::default(),
            &mut crate::retry::SeededRng::new(1),
        );
        i.retry = st;
        let a = next_action(&d, Some(&failed), &i, after);
        assert!(
            matches!(&a, Action::Stalled { reason } if reason.contains("permanent error") && reason.contains("template: x:1: bad")),
            "{a:?}"
        );

        // remediation.retries failed attempts: Stalled by the decision itself.
        i.retry = backing_off(3);
        let a = next_action(&d, Some(&failed), &i, after);
        assert!(
            matches!(&a, Action::Stalled { reason } if reason.contains("failed 3 times (remediation.retries is 3)")),
            "{a:?}"
        );

        // Actions that run no helm are never gated (another instance holds the Lease).
        i.retry = backing_off(1);
        i.lock = other();
        assert!(matches!(
            next_action(&d, Some(&failed), &i, before),
            Action::Blocked { .. }
        ));
    }

    #[test]
    fn another_holder_blocks_every_helm_action() {
        let d = desired();
        let i = inputs(other(), RemediationStrategy::Retry);
        for o in [
            None,
            Some(observed("deployed", "1.14.3", Some("sha256:aaa"))),
            Some(observed("failed", "1.14.4", Some("sha256:aaa"))),
        ] {
            let a = decide_with(&d, o.as_ref(), &i);
            assert!(
                matches!(&a, Action::Blocked { reason } if reason.contains("`strata-7d9f` holds the Lease")),
                "{o:?} gave {a:?}"
            );
        }
        // Without the Lease question (unknown), installs and upgrades proceed as with decide.
        let i = inputs(LockState::Unknown, RemediationStrategy::Retry);
        for o in [
            None,
            Some(observed("deployed", "1.14.3", Some("sha256:aaa"))),
        ] {
            assert_eq!(
                decide_with(&d, o.as_ref(), &i),
                decide(&d, o.as_ref()),
                "{o:?}"
            );
        }
    }

    /// A whole attempt driven the way the agent drives it: decide, "run", observe, decide.
    #[test]
    fn attempt_loop_terminates_without_repeating() {
        use RemediationStrategy::{Retry, Rollback, Uninstall};
        let d = desired();
        for strategy in [Retry, Rollback, Uninstall] {
            for start in [
                "pending-install",
                "pending-upgrade",
                "pending-rollback",
                "uninstalling",
                "failed",
                "deployed",
            ] {
                let mut i = inputs(LockState::HeldByUs, strategy);
                // Every helm action "fails" and leaves a failed revision.
                let mut o = Some(observed(start, "1.14.3", None));
                let mut steps = 0;
                loop {
                    let a = decide_with(&d, o.as_ref(), &i);
                    let Some(k) = a.kind() else {
                        assert!(
                            matches!(a, Action::AwaitRetry { .. } | Action::Blocked { .. }),
                            "{strategy} {start}: ended with {a:?}"
                        );
                        break;
                    };
                    assert!(!i.performed.contains(&k), "{strategy} {start}: {k} twice");
                    i.performed.push(k);
                    let rev = o.as_ref().map_or(1, |x| x.revision + 1);
                    o = match k {
                        ActionKind::RemediateUninstall => None,
                        ActionKind::RemediateRollback => {
                            let mut x = observed("deployed", "1.14.3", None);
                            x.revision = rev;
                            Some(x)
                        }
                        _ => {
                            let mut x = observed("failed", "1.14.4", None);
                            x.revision = rev;
                            Some(x)
                        }
                    };
                    steps += 1;
                    assert!(steps < 5, "{strategy} {start}: {:?}", i.performed);
                }
                assert!(
                    i.performed.iter().filter(|k| k.is_remediation()).count()
                        <= usize::from(strategy != Retry)
                );
            }
        }
    }

    #[test]
    fn last_deployed_from_history() {
        use ReleaseStatus as S;
        type Case = (Vec<(u32, S)>, Option<u32>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (vec![(1, S::Failed)], None),
            (
                vec![(1, S::Superseded), (2, S::Deployed), (3, S::PendingUpgrade)],
                Some(2),
            ),
            (
                vec![(3, S::Failed), (1, S::Superseded), (2, S::Failed)],
                Some(1),
            ),
            (vec![(0, S::Deployed)], None),
            (
                vec![
                    (4, S::PendingRollback),
                    (2, S::Superseded),
                    (3, S::Deployed),
                ],
                Some(3),
            ),
        ];
        for (history, expected) in cases {
            assert_eq!(
                last_deployed_revision(history.iter().map(|(r, s)| (*r, s))),
                expected,
                "{history:?}"
            );
        }
    }

    #[test]
    fn action_kinds_and_serde() {
        let a = Action::RollbackThenUpgrade {
            to_revision: 4,
            reason: "r".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"action": "rollbackThenUpgrade", "toRevision": 4, "reason": "r"})
        );
        assert_eq!(
            a.to_string(),
            "recover: roll back to revision 4, then upgrade (r)"
        );
        assert_eq!(a.kind(), Some(ActionKind::RollbackThenUpgrade));
        assert!(a.kind().unwrap().is_recovery());
        let names: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "install",
                "upgrade",
                "recover-pending-install",
                "rollback-then-upgrade",
                "remediate-rollback",
                "remediate-uninstall"
            ]
        );
        let i: Inputs = serde_json::from_value(serde_json::json!({
            "lock": {"lock": "heldByOther", "holder": "x"},
            "remediation": {"strategy": "uninstall"},
            "retry": {"attempts": 1},
            "performed": ["upgrade"]
        }))
        .unwrap();
        assert_eq!(i.retry.attempts, 1);
        assert_eq!(i.lock, LockState::HeldByOther { holder: "x".into() });
        assert_eq!(i.remediation.retries, crate::profiles::DEFAULT_RETRIES);
        assert_eq!(i.performed, vec![ActionKind::Upgrade]);
        assert_eq!(Action::Stalled { reason: "x".into() }.reason(), "x");
        assert!(
            Action::RemediateUninstall {
                reason: String::new()
            }
            .is_destructive()
        );
    }

    fn stamped(chart: &str, content: &str) -> Option<crate::digest::Stamp> {
        Some(crate::digest::Stamp {
            profile: "cert-manager".into(),
            layer: Some(1),
            chart_digest: chart.into(),
            content_digest: content.into(),
        })
    }

    fn reason(d: &DesiredRelease, o: &ObservedRelease) -> Option<String> {
        match decide(d, Some(o)) {
            Action::NoOp => None,
            Action::Upgrade { reason } => Some(reason.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn content_digest_decides_and_names_the_change() {
        let d = DesiredRelease {
            chart_digest: Some("c2".into()),
            content_digest: Some("k2".into()),
            ..desired()
        };
        let at = |version: &str, values: &str, chart: &str, content: &str| ObservedRelease {
            stamp: stamped(chart, content),
            ..observed("deployed", version, Some(values))
        };
        // Same digest: no helm at all.
        assert_eq!(reason(&d, &at("1.14.4", "sha256:aaa", "c2", "k2")), None);
        // A Git-path chart edited without a version bump.
        assert_eq!(
            reason(&d, &at("1.14.4", "sha256:aaa", "c1", "k1")).as_deref(),
            Some("chart content changed")
        );
        assert_eq!(
            reason(&d, &at("1.14.4", "sha256:bbb", "c2", "k1")).as_deref(),
            Some("values changed")
        );
        assert_eq!(
            reason(&d, &at("1.14.4", "sha256:bbb", "c1", "k1")).as_deref(),
            Some("chart content changed, values changed")
        );
        assert_eq!(
            reason(&d, &at("1.14.3", "sha256:aaa", "c1", "k1")).as_deref(),
            Some("chart version 1.14.3 -> 1.14.4")
        );
        assert_eq!(
            reason(&d, &at("1.14.4", "sha256:aaa", "c2", "k1")).as_deref(),
            Some("helm options changed")
        );
        // Installed by an older strata (no labels): one stamping upgrade.
        let bare = observed("deployed", "1.14.4", Some("sha256:aaa"));
        let r = reason(&d, &bare).unwrap();
        assert!(r.contains("no strata labels"), "{r}");
        // Without a desired content digest only version and values decide (as before).
        assert_eq!(reason(&desired(), &bare), None);
        // Another chart name.
        let other = ObservedRelease {
            chart_name: "cm".into(),
            ..at("1.14.4", "sha256:aaa", "c2", "k2")
        };
        assert_eq!(
            reason(&d, &other).as_deref(),
            Some("chart cm@1.14.4 -> cert-manager@1.14.4")
        );
    }
}
