//! Per-release reconcile decision: compare what the profile list wants with what helm's
//! release storage says, and choose one action.
//!
//! Two explicit steps, each a pure function (modelled on Flux helm-controller's
//! `internal/reconcile`): [`observe`] classifies the release into a [`State`]
//! (Absent, Locked, Failed, OutOfSync, InSync, Unknown), then [`decide`] maps the state to
//! an [`Action`]. A release deployed at the desired chart version with the same values digest
//! is [`Action::NoOp`]: no helm process runs at all.
//!
//! Pending states (`pending-install`, `pending-upgrade`, `pending-rollback`) are
//! [`Action::Blocked`] for now; recovery actions will be added as new variants (the enum is
//! `#[non_exhaustive]`).

use std::fmt;

use serde::{Deserialize, Serialize};

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
    Chart { from: String, to: String },
    Values,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chart { from, to } => write!(f, "chart {from} -> {to}"),
            Self::Values => f.write_str("values changed"),
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
        }
    }
}

/// What to do with the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
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
}

impl Action {
    /// Does the action run helm?
    pub fn runs_helm(&self) -> bool {
        matches!(self, Self::Install { .. } | Self::Upgrade { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Install { reason } => write!(f, "install ({reason})"),
            Self::Upgrade { reason } => write!(f, "upgrade ({reason})"),
            Self::NoOp => f.write_str("no change"),
            Self::Blocked { reason } => write!(f, "blocked: {reason}"),
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
            if o.values_digest.as_deref() != Some(desired.values_digest.as_str()) {
                changes.push(Change::Values);
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
        }
    }

    fn observed(status: &str, version: &str, digest: Option<&str>) -> ObservedRelease {
        ObservedRelease {
            status: ReleaseStatus::parse(status),
            chart_name: "cert-manager".into(),
            chart_version: version.into(),
            values_digest: digest.map(str::to_owned),
            revision: 3,
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
}
