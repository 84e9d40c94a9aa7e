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

use super::status::{NotReady, OverallPhase, ReleasePhase, StatusStore, now_rfc3339};
use super::watches::{Owner, Tracked, Watches};

/// Changes closer together than this are looked at once.
const SETTLE: Duration = Duration::from_millis(100);

/// Follow the live health of every tracked release until `stop`.
pub async fn monitor(watches: Watches, status: StatusStore, stop: CancellationToken) {
    let mut changes = watches.subscribe();
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
        for owner in watches.owners() {
            if let Some(verdicts) = watches.assess(&owner) {
                apply(&status, &owner, &verdicts);
            }
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

fn apply(status: &StatusStore, (namespace, name): &Owner, verdicts: &[(Tracked, Readiness)]) {
    let current = status.snapshot();
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
        let degraded = s
            .layers
            .iter()
            .flat_map(|l| &l.releases)
            .any(|r| r.phase == ReleasePhase::Degraded);
        if degraded && s.phase == OverallPhase::Ready {
            s.phase = OverallPhase::Degraded;
        } else if !degraded
            && s.phase == OverallPhase::Degraded
            && s.last_error.is_none()
            && s.rejected_revision.is_none()
            && s.layers
                .iter()
                .flat_map(|l| &l.releases)
                .all(|r| r.phase == ReleasePhase::Ready)
        {
            s.phase = OverallPhase::Ready;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::objects::ObjectRef;

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
