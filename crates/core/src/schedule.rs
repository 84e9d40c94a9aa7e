//! Layer scheduling: given the plan and what each release has reached, what may start now.
//!
//! - Layers run in plan order. Everything of the lowest layer that is not Ready may start.
//! - The next layer starts only when every release of the layer below is Ready.
//! - A Failed release blocks every layer above it (those releases are *skipped*), while its
//!   siblings in the same layer still run to the end.
//! - Within a layer, a release starts only once the releases it depends on (`dependsOn`, of
//!   the same layer) are Ready; while one of them is not, it waits
//!   ([`BlockReason::WaitingForDependency`]). When one of them failed, or was itself skipped
//!   for that reason, it does not start in this attempt ([`BlockReason::DependencyFailed`]);
//!   siblings that do not depend on it still run. Dependencies in lower layers are Ready by
//!   the first rule; ones in higher layers are rejected at plan time ([`crate::depends`]).
//!
//! The runtime calls [`next_actions`] after every change; it bounds parallelism itself, and
//! starts the releases that may start slowest first ([`slowest_first`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, PlannedLayer, PlannedRelease, ReleaseKey};

/// What a release has reached in the current attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ReleaseState {
    /// Not started (the default for releases missing from the state map).
    #[default]
    Pending,
    /// Started: helm is running or the release is waiting to become ready.
    Running,
    Ready,
    Failed {
        message: String,
    },
}

/// Why a release may not start yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BlockReason {
    /// The layer below is not Ready yet; `not_ready` lists its unfinished releases.
    WaitingFor {
        layer: String,
        not_ready: Vec<ReleaseKey>,
    },
    /// A release in a layer below failed; this release will not run in this attempt.
    Skipped {
        layer: String,
        failed: Vec<ReleaseKey>,
    },
    /// Releases of the same layer this one depends on (`dependsOn`) are not Ready yet.
    WaitingForDependency { not_ready: Vec<ReleaseKey> },
    /// Releases of the same layer this one depends on failed (`failed`), or were skipped
    /// because theirs did (`skipped`); this release will not run in this attempt.
    DependencyFailed {
        failed: Vec<ReleaseKey>,
        skipped: Vec<ReleaseKey>,
    },
}

impl BlockReason {
    /// Will not run in this attempt (as opposed to waiting its turn).
    pub fn is_skipped(&self) -> bool {
        matches!(self, Self::Skipped { .. } | Self::DependencyFailed { .. })
    }
}

fn join_keys(keys: &[ReleaseKey]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WaitingFor { layer, not_ready } => {
                write!(
                    f,
                    "waiting for {layer}: {} not ready yet",
                    join_keys(not_ready)
                )
            }
            Self::Skipped { layer, failed } => {
                write!(f, "skipped: {layer} failed ({})", join_keys(failed))
            }
            Self::WaitingForDependency { not_ready } => {
                write!(f, "waiting for {} (dependsOn)", join_keys(not_ready))
            }
            Self::DependencyFailed { failed, skipped } => {
                let mut parts = Vec::new();
                if !failed.is_empty() {
                    parts.push(format!("{} failed", join_keys(failed)));
                }
                if !skipped.is_empty() {
                    parts.push(format!("{} was skipped", join_keys(skipped)));
                }
                write!(f, "skipped: dependency {} (dependsOn)", parts.join(", "))
            }
        }
    }
}

/// Overall result once nothing can progress any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// Every release is Ready.
    Succeeded,
    /// Some releases failed; the layers above them were skipped. (Also listed: releases left
    /// waiting on each other by a dependency cycle, which the plan rejects.)
    Failed { failed: Vec<ReleaseKey> },
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Releases that may start now (Pending, in an eligible layer), in plan order.
    pub start: Vec<ReleaseKey>,
    /// Releases already running.
    pub running: Vec<ReleaseKey>,
    /// Releases that may not start, and why (the releases of a layer held by a layer below
    /// share one reason: a step costs no copy of it per release).
    pub blocked: Vec<(ReleaseKey, Arc<BlockReason>)>,
    /// Nothing to start and nothing running: the attempt is over.
    pub done: bool,
    /// Set when `done`.
    pub outcome: Option<Outcome>,
}

/// Decide what may start now. Releases absent from `states` are Pending.
pub fn next_actions(plan: &Plan, states: &BTreeMap<ReleaseKey, ReleaseState>) -> Step {
    let mut step = Step::default();
    let mut all_failed = Vec::new();
    let mut gate: Option<Arc<BlockReason>> = None;
    // Releases waiting for a dependency of their layer (only ever left when nothing else
    // runs if their dependencies form a cycle, which the plan rejects).
    let mut stuck = Vec::new();
    for layer in &plan.layers {
        if let Some(reason) = &gate {
            for r in &layer.releases {
                step.blocked.push((r.release.clone(), reason.clone()));
            }
            continue;
        }
        let mut failed = Vec::new();
        let mut not_ready = Vec::new();
        let state = |k: &ReleaseKey| states.get(k).unwrap_or(&ReleaseState::Pending).clone();
        let doomed = doomed_by_dependencies(layer, &state);
        for r in &layer.releases {
            let key = &r.release;
            match state(key) {
                ReleaseState::Ready => {}
                ReleaseState::Running => {
                    step.running.push(key.clone());
                    not_ready.push(key.clone());
                }
                ReleaseState::Pending => {
                    not_ready.push(key.clone());
                    if let Some(reason) = doomed.get(key) {
                        step.blocked.push((key.clone(), Arc::new(reason.clone())));
                        continue;
                    }
                    let waiting: Vec<ReleaseKey> = same_layer_dependencies(layer, r)
                        .filter(|d| state(d) != ReleaseState::Ready)
                        .collect();
                    if waiting.is_empty() {
                        step.start.push(key.clone());
                    } else {
                        stuck.push(key.clone());
                        step.blocked.push((
                            key.clone(),
                            Arc::new(BlockReason::WaitingForDependency { not_ready: waiting }),
                        ));
                    }
                }
                ReleaseState::Failed { .. } => failed.push(key.clone()),
            }
        }
        if !failed.is_empty() {
            all_failed.extend(failed.iter().cloned());
            gate = Some(Arc::new(BlockReason::Skipped {
                layer: layer.name.clone(),
                failed,
            }));
        } else if !not_ready.is_empty() {
            gate = Some(Arc::new(BlockReason::WaitingFor {
                layer: layer.name.clone(),
                not_ready,
            }));
        }
    }
    step.done = step.start.is_empty() && step.running.is_empty();
    if step.done {
        // Never a success while releases wait on each other (a dependency cycle).
        all_failed.extend(stuck);
        step.outcome = Some(if all_failed.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed { failed: all_failed }
        });
    }
    step
}

/// The releases of `layer` that `r` depends on (`dependsOn` naming a profile of the same
/// layer; other names are in lower layers, Ready before this layer started).
fn same_layer_dependencies<'a>(
    layer: &'a PlannedLayer,
    r: &'a PlannedRelease,
) -> impl Iterator<Item = ReleaseKey> + 'a {
    r.depends_on.iter().filter_map(move |d| {
        layer
            .releases
            .iter()
            .find(|x| &x.profile == d && x.profile != r.profile)
            .map(|x| x.release.clone())
    })
}

/// The Pending releases of `layer` that will not run in this attempt because a release they
/// depend on failed, or will not run for the same reason (to a fixed point, so a chain of
/// dependencies is skipped as a whole), each with its reason.
fn doomed_by_dependencies(
    layer: &PlannedLayer,
    state: &impl Fn(&ReleaseKey) -> ReleaseState,
) -> BTreeMap<ReleaseKey, BlockReason> {
    let mut doomed: BTreeMap<ReleaseKey, BlockReason> = BTreeMap::new();
    loop {
        let mut changed = false;
        for r in &layer.releases {
            if state(&r.release) != ReleaseState::Pending || doomed.contains_key(&r.release) {
                continue;
            }
            let mut failed = Vec::new();
            let mut skipped = Vec::new();
            for d in same_layer_dependencies(layer, r) {
                if matches!(state(&d), ReleaseState::Failed { .. }) {
                    failed.push(d);
                } else if doomed.contains_key(&d) {
                    skipped.push(d);
                }
            }
            if !failed.is_empty() || !skipped.is_empty() {
                doomed.insert(
                    r.release.clone(),
                    BlockReason::DependencyFailed { failed, skipped },
                );
                changed = true;
            }
        }
        if !changed {
            return doomed;
        }
    }
}

/// Orders the releases that may start so the ones expected to take longest start first
/// (longest-processing-time-first): with any concurrency a layer then ends as early as it can,
/// instead of a slow release that happens to be last in the list extending it. `expected` is
/// the last observed time to Ready (in any unit, e.g. milliseconds); releases never seen (`None`) go first, since
/// they may be the slowest. The order is otherwise the plan's (a stable sort).
pub fn slowest_first(start: &mut [ReleaseKey], expected: impl Fn(&ReleaseKey) -> Option<u64>) {
    start.sort_by(|a, b| match (expected(a), expected(b)) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::LayerSource;
    use crate::profiles::{ChartRef, LayeringModel};
    use crate::types::{GoDuration, LayerNumber};

    fn release(name: &str, layer: Option<u32>) -> PlannedRelease {
        PlannedRelease {
            profile: name.into(),
            release: ReleaseKey::new("ns", name),
            chart: ChartRef::Path {
                path: format!("charts/{name}"),
            },
            chart_name: name.into(),
            chart_version: "1.0.0".into(),
            version_constraint: None,
            layer: layer.map(LayerNumber),
            layer_source: LayerSource::Override,
            timeout: GoDuration::from_secs(60),
            depends_on: vec![],
        }
    }

    #[test]
    fn slowest_first_starts_unknown_then_longest_keeping_plan_order_on_ties() {
        let keys = |names: &[&str]| -> Vec<ReleaseKey> {
            names.iter().map(|n| ReleaseKey::new("ns", *n)).collect()
        };
        let mut start = keys(&["fast", "slow", "new", "mid", "also-new", "slow-too"]);
        let expected = |k: &ReleaseKey| match k.name.as_str() {
            "fast" => Some(200),
            "slow" | "slow-too" => Some(2000),
            "mid" => Some(1100),
            _ => None,
        };
        slowest_first(&mut start, expected);
        assert_eq!(
            start,
            keys(&["new", "also-new", "slow", "slow-too", "mid", "fast"])
        );
        // Nothing known: the plan's order.
        let mut plain = keys(&["c", "a", "b"]);
        slowest_first(&mut plain, |_| None);
        assert_eq!(plain, keys(&["c", "a", "b"]));
    }

    /// Layers 1: [a, b], 2: [c], then unlayered [d].
    fn fixture() -> Plan {
        let layer = |n: Option<u32>, names: &[&str]| PlannedLayer {
            layer: n.map(LayerNumber),
            name: n.map_or("unlayered".into(), |n| format!("layer-{n}")),
            releases: names.iter().map(|x| release(x, n)).collect(),
        };
        Plan {
            model: LayeringModel::Annotation,
            layers: vec![
                layer(Some(1), &["a", "b"]),
                layer(Some(2), &["c"]),
                layer(None, &["d"]),
            ],
            notes: vec![],
        }
    }

    fn k(n: &str) -> ReleaseKey {
        ReleaseKey::new("ns", n)
    }

    fn states(list: &[(&str, ReleaseState)]) -> BTreeMap<ReleaseKey, ReleaseState> {
        list.iter().map(|(n, s)| (k(n), s.clone())).collect()
    }

    fn failed(msg: &str) -> ReleaseState {
        ReleaseState::Failed {
            message: msg.into(),
        }
    }

    #[test]
    fn first_layer_starts_alone() {
        let s = next_actions(&fixture(), &BTreeMap::new());
        assert_eq!(s.start, vec![k("a"), k("b")]);
        assert!(!s.done);
        assert_eq!(s.blocked.len(), 2);
        assert_eq!(
            s.blocked[0].1.to_string(),
            "waiting for layer-1: ns/a, ns/b not ready yet"
        );
        assert_eq!(s.blocked[1].0, k("d"));
    }

    #[test]
    fn next_layer_waits_for_every_release_below() {
        let p = fixture();
        let s = next_actions(
            &p,
            &states(&[("a", ReleaseState::Ready), ("b", ReleaseState::Running)]),
        );
        assert!(s.start.is_empty());
        assert_eq!(s.running, vec![k("b")]);
        assert_eq!(
            *s.blocked[0].1,
            BlockReason::WaitingFor {
                layer: "layer-1".into(),
                not_ready: vec![k("b")]
            }
        );
        let s = next_actions(
            &p,
            &states(&[("a", ReleaseState::Ready), ("b", ReleaseState::Ready)]),
        );
        assert_eq!(s.start, vec![k("c")]);
        let s = next_actions(
            &p,
            &states(&[
                ("a", ReleaseState::Ready),
                ("b", ReleaseState::Ready),
                ("c", ReleaseState::Ready),
            ]),
        );
        assert_eq!(s.start, vec![k("d")], "unlayered runs last");
    }

    #[test]
    fn failure_skips_layers_above_but_siblings_continue() {
        let p = fixture();
        let s = next_actions(&p, &states(&[("a", failed("boom"))]));
        assert_eq!(s.start, vec![k("b")], "sibling still starts");
        assert!(!s.done);
        assert!(s.blocked.iter().all(|(_, r)| r.is_skipped()));
        assert_eq!(s.blocked[0].1.to_string(), "skipped: layer-1 failed (ns/a)");
        let s = next_actions(
            &p,
            &states(&[("a", failed("boom")), ("b", ReleaseState::Ready)]),
        );
        assert!(s.done);
        assert_eq!(
            s.outcome,
            Some(Outcome::Failed {
                failed: vec![k("a")]
            })
        );
        assert_eq!(s.blocked.len(), 2);
    }

    #[test]
    fn failure_in_middle_layer() {
        let s = next_actions(
            &fixture(),
            &states(&[
                ("a", ReleaseState::Ready),
                ("b", ReleaseState::Ready),
                ("c", failed("x")),
            ]),
        );
        assert!(s.done);
        assert_eq!(
            s.blocked,
            vec![(
                k("d"),
                Arc::new(BlockReason::Skipped {
                    layer: "layer-2".into(),
                    failed: vec![k("c")]
                })
            )]
        );
    }

    #[test]
    fn all_ready_is_success_and_empty_plan_is_done() {
        let all = states(&[
            ("a", ReleaseState::Ready),
            ("b", ReleaseState::Ready),
            ("c", ReleaseState::Ready),
            ("d", ReleaseState::Ready),
        ]);
        let s = next_actions(&fixture(), &all);
        assert!(s.done && s.start.is_empty() && s.blocked.is_empty());
        assert_eq!(s.outcome, Some(Outcome::Succeeded));
        let empty = Plan {
            model: LayeringModel::Annotation,
            layers: vec![],
            notes: vec![],
        };
        assert_eq!(
            next_actions(&empty, &BTreeMap::new()).outcome,
            Some(Outcome::Succeeded)
        );
    }

    /// Layer 1: certs, issuer (dependsOn certs), mesh (dependsOn issuer), tools; layer 2: app.
    fn with_dependencies() -> Plan {
        let dep = |name: &str, deps: &[&str]| PlannedRelease {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..release(name, Some(1))
        };
        Plan {
            model: LayeringModel::Annotation,
            layers: vec![
                PlannedLayer {
                    layer: Some(LayerNumber(1)),
                    name: "layer-1".into(),
                    releases: vec![
                        dep("certs", &[]),
                        dep("issuer", &["certs"]),
                        dep("mesh", &["issuer"]),
                        dep("tools", &[]),
                    ],
                },
                PlannedLayer {
                    layer: Some(LayerNumber(2)),
                    name: "layer-2".into(),
                    // A dependency on a lower layer: already satisfied by layer order.
                    releases: vec![PlannedRelease {
                        depends_on: vec!["certs".into()],
                        ..release("app", Some(2))
                    }],
                },
            ],
            notes: vec![],
        }
    }

    fn reason_of(s: &Step, name: &str) -> BlockReason {
        s.blocked
            .iter()
            .find(|(key, _)| key == &k(name))
            .map(|(_, r)| (**r).clone())
            .unwrap_or_else(|| panic!("{name} is not blocked: {s:?}"))
    }

    #[test]
    fn a_release_waits_for_its_dependencies_in_the_layer() {
        let p = with_dependencies();
        let s = next_actions(&p, &BTreeMap::new());
        assert_eq!(
            s.start,
            vec![k("certs"), k("tools")],
            "siblings without one start"
        );
        assert_eq!(
            reason_of(&s, "issuer"),
            BlockReason::WaitingForDependency {
                not_ready: vec![k("certs")]
            }
        );
        assert_eq!(
            reason_of(&s, "issuer").to_string(),
            "waiting for ns/certs (dependsOn)"
        );
        assert!(!reason_of(&s, "issuer").is_skipped());
        // Running is not Ready.
        let s = next_actions(&p, &states(&[("certs", ReleaseState::Running)]));
        assert_eq!(s.start, vec![k("tools")]);
        assert_eq!(s.running, vec![k("certs")]);
        // Ready: the next in the chain starts, the one after it still waits.
        let s = next_actions(&p, &states(&[("certs", ReleaseState::Ready)]));
        assert_eq!(s.start, vec![k("issuer"), k("tools")]);
        assert_eq!(
            reason_of(&s, "mesh").to_string(),
            "waiting for ns/issuer (dependsOn)"
        );
        // The layer above still waits for the whole layer, waiting releases included.
        assert_eq!(
            reason_of(&s, "app"),
            BlockReason::WaitingFor {
                layer: "layer-1".into(),
                not_ready: vec![k("issuer"), k("mesh"), k("tools")]
            }
        );
        let all = states(&[
            ("certs", ReleaseState::Ready),
            ("issuer", ReleaseState::Ready),
            ("mesh", ReleaseState::Ready),
            ("tools", ReleaseState::Ready),
        ]);
        let s = next_actions(&p, &all);
        assert_eq!(s.start, vec![k("app")], "a lower-layer dependency is met");
    }

    #[test]
    fn a_failed_dependency_skips_its_dependents_but_not_their_siblings() {
        let p = with_dependencies();
        let s = next_actions(&p, &states(&[("certs", failed("boom"))]));
        assert_eq!(
            s.start,
            vec![k("tools")],
            "a sibling without the dependency runs"
        );
        assert!(!s.done);
        let issuer = reason_of(&s, "issuer");
        assert!(issuer.is_skipped());
        assert_eq!(
            issuer.to_string(),
            "skipped: dependency ns/certs failed (dependsOn)"
        );
        // Down the chain: skipped too, naming its own dependency.
        assert_eq!(
            reason_of(&s, "mesh"),
            BlockReason::DependencyFailed {
                failed: vec![],
                skipped: vec![k("issuer")]
            }
        );
        assert_eq!(
            reason_of(&s, "mesh").to_string(),
            "skipped: dependency ns/issuer was skipped (dependsOn)"
        );
        assert!(
            reason_of(&s, "app").is_skipped(),
            "the layer above is skipped"
        );
        let s = next_actions(
            &p,
            &states(&[("certs", failed("boom")), ("tools", ReleaseState::Ready)]),
        );
        assert!(s.done);
        assert_eq!(
            s.outcome,
            Some(Outcome::Failed {
                failed: vec![k("certs")]
            })
        );
        // A failure in the middle: the release it depends on stays Ready.
        let s = next_actions(
            &p,
            &states(&[
                ("certs", ReleaseState::Ready),
                ("issuer", failed("x")),
                ("tools", ReleaseState::Running),
            ]),
        );
        assert!(s.start.is_empty());
        assert_eq!(
            reason_of(&s, "mesh").to_string(),
            "skipped: dependency ns/issuer failed (dependsOn)"
        );
    }

    #[test]
    fn releases_waiting_on_each_other_never_end_as_success() {
        // A cycle is rejected at plan time; should one reach the scheduler, the attempt ends
        // Failed naming its members instead of Succeeded.
        let dep = |name: &str, d: &str| PlannedRelease {
            depends_on: vec![d.into()],
            ..release(name, Some(1))
        };
        let p = Plan {
            model: LayeringModel::Annotation,
            layers: vec![PlannedLayer {
                layer: Some(LayerNumber(1)),
                name: "layer-1".into(),
                releases: vec![dep("a", "b"), dep("b", "a")],
            }],
            notes: vec![],
        };
        let s = next_actions(&p, &BTreeMap::new());
        assert!(s.done);
        assert_eq!(
            s.outcome,
            Some(Outcome::Failed {
                failed: vec![k("a"), k("b")]
            })
        );
    }

    #[test]
    fn a_release_depending_on_itself_is_not_held() {
        // Rejected at plan time; the scheduler ignores it rather than waiting forever.
        let p = Plan {
            model: LayeringModel::Annotation,
            layers: vec![PlannedLayer {
                layer: Some(LayerNumber(1)),
                name: "layer-1".into(),
                releases: vec![PlannedRelease {
                    depends_on: vec!["a".into()],
                    ..release("a", Some(1))
                }],
            }],
            notes: vec![],
        };
        assert_eq!(next_actions(&p, &BTreeMap::new()).start, vec![k("a")]);
    }

    #[test]
    fn dependencies_filter_what_starts_and_slowest_first_orders_it() {
        let p = with_dependencies();
        let mut s = next_actions(&p, &states(&[("certs", ReleaseState::Ready)]));
        slowest_first(&mut s.start, |key| match key.name.as_str() {
            "tools" => Some(5000),
            "issuer" => Some(100),
            _ => None,
        });
        assert_eq!(s.start, vec![k("tools"), k("issuer")]);
    }
}
