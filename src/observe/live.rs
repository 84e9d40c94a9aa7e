//! Live health between revisions: a release that concluded Ready stays tracked in the shared
//! watches ([`super::watches`]), and every change a watch sees is checked against it. A Ready
//! release whose objects are no longer all ready becomes Degraded (its layer too, and the
//! agent's phase), naming the objects and reasons in `notReady`; it is Ready again once they
//! recover. Each change is a phase transition, so it is logged, counted in
//! `strata_releases{phase}` and announced as an Event like every other. No helm process runs
//! for it and nothing is polled.

use std::time::Duration;

use strata_core::readiness::Readiness;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::objects::ObjectRef;
use super::status::{
    DRIFT_OBJECTS_SHOWN, DRIFT_PATHS_SHOWN, DriftStatus, DriftedObject, NotReady, OverallPhase,
    ReleasePhase, Status, StatusStore, now_rfc3339,
};
use super::watches::{Lookup, Owner, Tracked, Watches};

/// Changes closer together than this are looked at once.
const SETTLE: Duration = Duration::from_millis(100);

/// Follow the live health and drift of every tracked release until `stop`. Drift is
/// recorded as the release's runner records it (status, gauge, a `DriftDetected` Event in
/// mode `warn`); in mode `correct` new drift wakes the agent (`wake`) so that the release is
/// written again at once instead of at the next interval.
pub async fn monitor(
    watches: Watches,
    status: StatusStore,
    metrics: std::sync::Arc<Metrics>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut changes = watches.subscribe();
    // The phase each release had when last looked at: one that concluded since is looked at
    // again even when none of its objects changed.
    let mut seen: std::collections::HashMap<Owner, Option<ReleasePhase>> =
        std::collections::HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SETTLE) => {}
        }
        changes.borrow_and_update();
        let changed = watches.take_changed();
        let current = status.snapshot();
        let owners = watches.owners();
        let tracking: std::collections::HashSet<&Owner> = owners.iter().collect();
        seen.retain(|owner, _| tracking.contains(owner));
        for owner in owners {
            let phase = current.release(&owner.0, &owner.1).map(|r| r.phase);
            if seen.insert(owner.clone(), phase) == Some(phase) && !changed.contains(&owner) {
                continue;
            }
            if let Some(verdicts) = watches.assess(&owner) {
                apply(&status, &current, &owner, &verdicts);
            }
            check_drift(&watches, &status, &current, &metrics, &wake, &owner);
        }
    }
}

/// What the live verdicts of a release's objects say about a release in `phase`: `Some` new
/// phase with its not-ready objects and message, `None` when nothing changes. Only releases
/// that concluded (Ready or Degraded) are judged: one being installed or waited for is its
/// runner's business.
pub fn judge(
    phase: ReleasePhase,
    verdicts: &[(Tracked, Readiness)],
) -> Option<(ReleasePhase, Vec<NotReady>, String)> {
    let not_ready: Vec<NotReady> = verdicts
        .iter()
        .filter_map(|(t, v)| match v {
            Readiness::Ready => None,
            Readiness::InProgress { reason } | Readiness::Failed { reason } => Some(NotReady {
                kind: t.object.kind.clone(),
                name: t.object.name.clone(),
                namespace: t.namespace.clone(),
                reason: reason.clone(),
            }),
        })
        .collect();
    match phase {
        ReleasePhase::Ready if !not_ready.is_empty() => {
            let message = format!(
                "degraded: {}{}",
                not_ready[0].reason,
                match not_ready.len() {
                    1 => String::new(),
                    n => format!(" (and {} more object(s) not ready)", n - 1),
                }
            );
            Some((ReleasePhase::Degraded, not_ready, message))
        }
        ReleasePhase::Degraded if not_ready.is_empty() => Some((
            ReleasePhase::Ready,
            Vec::new(),
            "recovered: every object is ready again".into(),
        )),
        ReleasePhase::Degraded => {
            let message = format!("degraded: {}", not_ready[0].reason);
            Some((ReleasePhase::Degraded, not_ready, message))
        }
        _ => None,
    }
}

/// Drift of a concluded release (Ready or Degraded: one being installed is between two
/// manifests) from its watches.
fn check_drift(
    watches: &Watches,
    status: &StatusStore,
    current: &Status,
    metrics: &Metrics,
    wake: &tokio::sync::Notify,
    owner: &Owner,
) {
    use strata_core::drift::DriftMode;
    let concluded = current
        .release(&owner.0, &owner.1)
        .is_some_and(|r| matches!(r.phase, ReleasePhase::Ready | ReleasePhase::Degraded));
    if !concluded {
        return;
    }
    let Some((found, policy)) = watched_drift(watches, owner) else {
        return;
    };
    if policy.mode == DriftMode::Ignore {
        return;
    }
    let (listed, more_objects) = found.shown();
    let unchanged = current
        .release(&owner.0, &owner.1)
        .and_then(|r| r.drift.clone())
        .is_some_and(|d| d.objects == listed && d.more_objects == more_objects);
    if unchanged {
        return;
    }
    let is_new = record_drift(status, metrics, (&owner.0, &owner.1), policy.mode, &found);
    if is_new && policy.mode == DriftMode::Correct {
        tracing::info!(release = %owner.1, namespace = %owner.0, objects = found.total(), "drift found; correcting it now (drift mode correct)");
        wake.notify_one();
    }
}

fn apply(
    status: &StatusStore,
    current: &Status,
    (namespace, name): &Owner,
    verdicts: &[(Tracked, Readiness)],
) {
    let Some(release) = current.release(namespace, name) else {
        return;
    };
    let Some((phase, not_ready, message)) = judge(release.phase, verdicts) else {
        return;
    };
    if phase == release.phase && not_ready == release.not_ready {
        return;
    }
    match phase {
        ReleasePhase::Degraded if release.phase != ReleasePhase::Degraded => {
            tracing::warn!(release = %name, %namespace, %message, "release degraded");
        }
        ReleasePhase::Ready => {
            tracing::info!(release = %name, %namespace, "release recovered");
        }
        _ => {}
    }
    status.update(|s| {
        let Some(r) = s.release_mut(namespace, name) else {
            return;
        };
        // Changed since the snapshot (a runner took it over): leave it.
        if !matches!(r.phase, ReleasePhase::Ready | ReleasePhase::Degraded) {
            return;
        }
        if phase == ReleasePhase::Ready && r.phase != ReleasePhase::Ready {
            r.ready_at = Some(now_rfc3339());
        }
        r.phase = phase;
        r.not_ready = not_ready;
        r.message = Some(message);
        let degraded = s.releases().any(|r| r.phase == ReleasePhase::Degraded);
        if degraded && s.phase == OverallPhase::Ready {
            s.phase = OverallPhase::Degraded;
        } else if !degraded
            && s.phase == OverallPhase::Degraded
            && s.last_error.is_none()
            && s.rejected_revision.is_none()
            && s.releases().all(|r| r.phase == ReleasePhase::Ready)
        {
            s.phase = OverallPhase::Ready;
        }
    });
}

/// What the drift check of one release found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DriftFindings {
    pub missing: Vec<strata_core::reconcile::MissingObject>,
    pub changed: Vec<strata_core::reconcile::ChangedObject>,
    /// Every drifted object, in manifest order (paths cut at [`DRIFT_PATHS_SHOWN`]).
    pub objects: Vec<DriftedObject>,
}

impl DriftFindings {
    /// Drifted objects in all.
    pub fn total(&self) -> usize {
        self.objects.len()
    }

    /// What the status lists (at most [`DRIFT_OBJECTS_SHOWN`] objects) and how many more
    /// there are.
    pub fn shown(&self) -> (&[DriftedObject], usize) {
        let n = self.objects.len().min(DRIFT_OBJECTS_SHOWN);
        (&self.objects[..n], self.objects.len() - n)
    }
}

/// The objects of a stored manifest the drift check looks at, with the manifest object each:
/// every object but hooks and objects helm keeps (`helm.sh/resource-policy: keep`).
pub fn drift_objects(manifest: &str) -> Vec<(ObjectRef, serde_json::Value)> {
    crate::executor::releases::manifest_objects(manifest)
        .into_iter()
        .filter(|o| {
            !strata_core::reconcile::drift_exempt(|k| o["metadata"]["annotations"][k].as_str())
        })
        .filter_map(|o| Some((ObjectRef::from_manifest(&o)?, o)))
        .collect()
}

/// One object of a release for the drift check: its manifest object, the namespace it lives
/// in, and the live object (`None`: the cluster does not have it).
pub struct DriftInput<'a> {
    pub object: &'a ObjectRef,
    pub manifest: &'a serde_json::Value,
    pub namespace: Option<String>,
    pub live: Option<&'a serde_json::Value>,
}

/// Compare the objects of a release with what helm applied: missing objects, and fields the
/// manifest sets that the live object no longer has (core's [`strata_core::drift::compare`],
/// minus the policy's ignored paths). Hooks and objects helm keeps are not looked at. Paths
/// only, never values.
pub fn find_drift<'a>(
    inputs: impl IntoIterator<Item = DriftInput<'a>>,
    policy: &strata_core::drift::DriftPolicy,
) -> DriftFindings {
    use strata_core::reconcile::{ChangedObject, MissingObject};
    let mut found = DriftFindings::default();
    for input in inputs {
        let annotations = &input.manifest["metadata"]["annotations"];
        if strata_core::reconcile::drift_exempt(|k| annotations[k].as_str()) {
            continue;
        }
        let object = MissingObject {
            kind: input.object.kind.clone(),
            namespace: input.namespace.clone(),
            name: input.object.name.clone(),
        };
        let shown = |missing: bool, paths: &[String]| DriftedObject {
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            missing,
            paths: paths.iter().take(DRIFT_PATHS_SHOWN).cloned().collect(),
            more_paths: paths.len().saturating_sub(DRIFT_PATHS_SHOWN),
        };
        match input.live {
            None => {
                found.objects.push(shown(true, &[]));
                found.missing.push(object);
            }
            Some(live) => {
                let ignore = policy.ignored(&input.object.kind, &input.object.name);
                let paths: Vec<String> = strata_core::drift::compare(input.manifest, live, &ignore)
                    .into_iter()
                    .map(|d| d.path)
                    .collect();
                if !paths.is_empty() {
                    found.objects.push(shown(false, &paths));
                    found.changed.push(ChangedObject {
                        object,
                        paths: paths.into_iter().take(DRIFT_PATHS_SHOWN).collect(),
                    });
                }
            }
        }
    }
    found
}

/// Record a release's drift findings: its `drift` status, the `strata_drifted_objects`
/// gauge, and (mode `warn`) one `DriftDetected` Event when the drifted objects changed.
/// Returns whether they changed since the last record.
pub fn record_drift(
    status: &StatusStore,
    metrics: &Metrics,
    (namespace, name): (&str, &str),
    mode: strata_core::drift::DriftMode,
    found: &DriftFindings,
) -> bool {
    use strata_core::drift::DriftMode;
    use strata_core::reconcile::UpgradeReason;
    let mode_text = mode.to_string();
    let (listed, more_objects) = found.shown();
    let same = status.read(|s| {
        s.release(namespace, name)
            .and_then(|r| r.drift.as_ref())
            .is_some_and(|d| {
                d.mode == mode_text && d.objects == listed && d.more_objects == more_objects
            })
    });
    metrics.drifted_objects(namespace, name, Some(found.total()));
    if same {
        // Nothing new: the status (and its ConfigMap) is not written again.
        return false;
    }
    let mut is_new = false;
    status.update(|s| {
        if let Some(r) = s.release_mut(namespace, name) {
            is_new = found.total() > 0
                && r.drift
                    .as_ref()
                    .is_none_or(|d| d.objects != listed || d.more_objects != more_objects);
            r.drift = Some(DriftStatus {
                mode: mode_text.clone(),
                since: now_rfc3339(),
                objects: listed.to_vec(),
                more_objects,
            });
        }
    });
    if is_new && mode == DriftMode::Warn {
        let reason = UpgradeReason::Drift {
            missing: found.missing.clone(),
            changed: found.changed.clone(),
        };
        tracing::warn!(release = %name, %namespace, %reason, "drift found; not corrected (drift mode warn)");
        status.announce(
            namespace,
            name,
            "DriftDetected",
            format!("{reason}; not corrected (drift mode warn)"),
        );
    }
    is_new
}

/// The drift a release's watches show now (`None` while a watch has not listed yet, or the
/// release tracks nothing).
pub fn watched_drift(
    watches: &Watches,
    owner: &Owner,
) -> Option<(DriftFindings, strata_core::drift::DriftPolicy)> {
    let (observed, policy) = watches.observe(owner)?;
    let mut inputs = Vec::with_capacity(observed.len());
    for o in &observed {
        let live = match &o.live {
            Lookup::Present(v) => Some(v),
            Lookup::Absent => None,
            Lookup::Unknown { .. } => return None,
        };
        inputs.push(DriftInput {
            object: &o.tracked.object,
            manifest: &o.manifest,
            namespace: o.tracked.namespace.clone(),
            live,
        });
    }
    let found = find_drift(inputs, &policy);
    Some((found, policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(kind: &str, name: &str) -> Tracked {
        Tracked {
            object: ObjectRef {
                api_version: "v1".into(),
                kind: kind.into(),
                name: name.into(),
                namespace: None,
            },
            namespace: Some("web".into()),
            stream: None,
            unresolved: None,
        }
    }

    #[test]
    fn a_ready_release_degrades_and_recovers_with_its_objects() {
        let ready = vec![(tracked("ConfigMap", "a"), Readiness::Ready)];
        let broken = vec![
            (tracked("ConfigMap", "a"), Readiness::Ready),
            (
                tracked("Deployment", "web"),
                Readiness::InProgress {
                    reason: "Deployment web: 0/1 ready".into(),
                },
            ),
        ];
        assert_eq!(judge(ReleasePhase::Ready, &ready), None);
        let (phase, not_ready, message) = judge(ReleasePhase::Ready, &broken).unwrap();
        assert_eq!(phase, ReleasePhase::Degraded);
        assert_eq!(not_ready.len(), 1);
        assert_eq!(not_ready[0].name, "web");
        assert_eq!(message, "degraded: Deployment web: 0/1 ready");
        let (phase, not_ready, _) = judge(ReleasePhase::Degraded, &ready).unwrap();
        assert_eq!((phase, not_ready.len()), (ReleasePhase::Ready, 0));
    }

    #[test]
    fn releases_in_flight_are_left_to_their_runner() {
        let broken = vec![(
            tracked("ConfigMap", "a"),
            Readiness::Failed {
                reason: "gone".into(),
            },
        )];
        for phase in [
            ReleasePhase::Pending,
            ReleasePhase::Installing,
            ReleasePhase::Waiting,
            ReleasePhase::Failed,
            ReleasePhase::Skipped,
        ] {
            assert_eq!(judge(phase, &broken), None, "{phase}");
        }
    }
}
