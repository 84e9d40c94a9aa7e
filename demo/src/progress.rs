//! Turning successive `GET /status` documents into printable progress lines: the revision, the
//! plan, release and layer phase transitions, the resources a release waits for, and the
//! overall phase.

use std::collections::BTreeMap;

use serde_json::Value;

/// One thing that changed between two `/status` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new revision is shown: its commit and, per layer, the releases in it.
    Revision {
        commit: String,
        layers: Vec<(String, Vec<String>)>,
    },
    /// A revision was rejected (every problem found in it).
    Rejected {
        commit: String,
        problems: Vec<String>,
    },
    /// A release changed phase.
    Release {
        layer: String,
        release: String,
        from: Option<String>,
        to: String,
        detail: Option<String>,
    },
    /// A waiting release waits for other resources now.
    Waiting {
        layer: String,
        release: String,
        resources: Vec<String>,
    },
    /// A layer changed phase.
    Layer { layer: String, to: String },
    /// The agent's overall phase changed.
    Overall {
        from: Option<String>,
        to: String,
        detail: Option<String>,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Revision { commit, layers } => {
                write!(f, "revision {} planned:", short(commit))?;
                for (layer, releases) in layers {
                    write!(f, " layer {layer} [{}]", releases.join(", "))?;
                }
                Ok(())
            }
            Event::Rejected { commit, problems } => {
                write!(f, "revision {} rejected:", short(commit))?;
                for p in problems {
                    write!(f, "\n           - {p}")?;
                }
                Ok(())
            }
            Event::Release {
                layer,
                release,
                from,
                to,
                detail,
            } => {
                write!(f, "layer {layer}  release {release}  ")?;
                if let Some(from) = from {
                    write!(f, "{from} -> ")?;
                }
                f.write_str(to)?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            Event::Waiting {
                layer,
                release,
                resources,
            } => write!(
                f,
                "layer {layer}  release {release}  waiting for {}",
                resources.join("; ")
            ),
            Event::Layer { layer, to } => write!(f, "layer {layer}  {to}"),
            Event::Overall { from, to, detail } => {
                f.write_str("strata  ")?;
                if let Some(from) = from {
                    write!(f, "{from} -> ")?;
                }
                f.write_str(to)?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
        }
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// What one `/status` document says, reduced to what the demo prints.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Snapshot {
    phase: String,
    commit: Option<String>,
    rejected: Option<String>,
    layers: BTreeMap<String, String>,
    /// `namespace/name` -> (phase, not-ready resources).
    releases: BTreeMap<String, (String, Vec<String>)>,
}

/// Remembers the previous `/status` and reports what changed.
#[derive(Debug, Default)]
pub struct Tracker {
    prev: Option<Snapshot>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn not_ready(r: &Value) -> Vec<String> {
    r["notReady"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|n| {
                    let name = match n["namespace"].as_str() {
                        Some(ns) => format!("{ns}/{}", text(&n["name"])),
                        None => text(&n["name"]),
                    };
                    let reason = text(&n["reason"]);
                    // The agent's reasons usually name the object already.
                    if reason.contains(&name) {
                        reason
                    } else {
                        format!("{} {name}: {reason}", text(&n["kind"]))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The events between the previous document and `status` (in display order: revision,
    /// then each layer's releases and the layer, then the overall phase).
    pub fn update(&mut self, status: &Value) -> Vec<Event> {
        let prev = self.prev.take().unwrap_or_default();
        let mut next = Snapshot {
            phase: text(&status["phase"]),
            commit: status["revision"]["commit"].as_str().map(str::to_string),
            rejected: status["rejectedRevision"]["commit"]
                .as_str()
                .map(str::to_string),
            ..Snapshot::default()
        };
        let mut events = Vec::new();

        if let Some(commit) = &next.rejected
            && prev.rejected.as_ref() != Some(commit)
        {
            let problems = status["rejectedRevision"]["problems"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let field = text(&p["field"]);
                            if field.is_empty() {
                                format!("{}: {}", text(&p["file"]), text(&p["message"]))
                            } else {
                                format!("{}: {field}: {}", text(&p["file"]), text(&p["message"]))
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            events.push(Event::Rejected {
                commit: commit.clone(),
                problems,
            });
        }

        let layers = status["layers"].as_array().cloned().unwrap_or_default();
        let new_revision = next.commit.is_some() && next.commit != prev.commit;
        if new_revision && let Some(commit) = &next.commit {
            events.push(Event::Revision {
                commit: commit.clone(),
                layers: layers
                    .iter()
                    .map(|l| {
                        let names = l["releases"]
                            .as_array()
                            .map(|rs| rs.iter().map(|r| text(&r["name"])).collect())
                            .unwrap_or_default();
                        (text(&l["layer"]), names)
                    })
                    .collect(),
            });
        }

        for l in &layers {
            let layer = text(&l["layer"]);
            for r in l["releases"].as_array().into_iter().flatten() {
                let key = format!("{}/{}", text(&r["namespace"]), text(&r["name"]));
                let phase = text(&r["phase"]);
                let waiting_for = not_ready(r);
                let before = if new_revision {
                    None
                } else {
                    prev.releases.get(&key)
                };
                let changed = before.map(|(p, _)| p) != Some(&phase);
                // A fresh revision lists every release as Pending: the plan line says that.
                if changed && !(before.is_none() && phase == "Pending") {
                    let detail = match phase.as_str() {
                        "Ready" => {
                            let mut d = Vec::new();
                            if let Some(a) = r["action"].as_str() {
                                d.push(a.to_string());
                            }
                            if let Some(h) = r["helmRevision"].as_u64() {
                                d.push(format!("helm revision {h}"));
                            }
                            (!d.is_empty()).then(|| d.join(", "))
                        }
                        "Installing" => r["action"].as_str().map(str::to_string),
                        "Failed" | "Skipped" => r["message"].as_str().map(str::to_string),
                        _ => None,
                    };
                    events.push(Event::Release {
                        layer: layer.clone(),
                        release: key.clone(),
                        from: before.map(|(p, _)| p.clone()),
                        to: phase.clone(),
                        detail,
                    });
                }
                if phase == "Waiting"
                    && !waiting_for.is_empty()
                    && before.map(|(_, w)| w) != Some(&waiting_for)
                {
                    events.push(Event::Waiting {
                        layer: layer.clone(),
                        release: key.clone(),
                        resources: waiting_for.clone(),
                    });
                }
                next.releases.insert(key, (phase, waiting_for));
            }
            let lphase = text(&l["phase"]);
            let lbefore = if new_revision {
                None
            } else {
                prev.layers.get(&layer)
            };
            if lbefore != Some(&lphase) && !(lbefore.is_none() && lphase == "Pending") {
                events.push(Event::Layer {
                    layer: layer.clone(),
                    to: lphase.clone(),
                });
            }
            next.layers.insert(layer, lphase);
        }

        if next.phase != prev.phase {
            events.push(Event::Overall {
                from: (!prev.phase.is_empty()).then(|| prev.phase.clone()),
                to: next.phase.clone(),
                detail: status["lastError"].as_str().map(str::to_string),
            });
        }
        self.prev = Some(next);
        events
    }
}

/// Whether every layer of the shown revision is Ready (and there is at least one).
pub fn all_ready(status: &Value) -> bool {
    status["phase"] == "Ready"
        && status["layers"]
            .as_array()
            .is_some_and(|ls| !ls.is_empty() && ls.iter().all(|l| l["phase"] == "Ready"))
}

/// Whether the agent is stuck until a new revision arrives (a release failed, or the only
/// revision was rejected).
pub fn stuck(status: &Value) -> bool {
    matches!(status["phase"].as_str(), Some("Failed" | "Invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(name: &str, phase: &str) -> Value {
        json!({"name": name, "namespace": name, "phase": phase, "notReady": []})
    }

    fn status(phase: &str, layers: Vec<(u64, &str, Vec<Value>)>) -> Value {
        json!({
            "phase": phase,
            "revision": {"commit": "0123456789abcdef0123", "fetchedAt": "2026-01-01T00:00:00Z"},
            "layers": layers.into_iter().map(|(n, p, rs)| json!({"layer": n, "phase": p, "releases": rs})).collect::<Vec<_>>(),
        })
    }

    fn lines(events: &[Event]) -> Vec<String> {
        events.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn first_document_shows_the_plan_and_the_phase() {
        let mut t = Tracker::new();
        let got = t.update(&status(
            "Progressing",
            vec![
                (
                    1,
                    "Progressing",
                    vec![release("cert-manager", "Installing")],
                ),
                (2, "Pending", vec![release("linkerd", "Pending")]),
            ],
        ));
        assert_eq!(
            lines(&got),
            [
                "revision 0123456789ab planned: layer 1 [cert-manager] layer 2 [linkerd]",
                "layer 1  release cert-manager/cert-manager  Installing",
                "layer 1  Progressing",
                "strata  Progressing",
            ]
        );
        // Nothing changed: nothing printed.
        assert!(
            t.update(&status(
                "Progressing",
                vec![
                    (
                        1,
                        "Progressing",
                        vec![release("cert-manager", "Installing")]
                    ),
                    (2, "Pending", vec![release("linkerd", "Pending")]),
                ],
            ))
            .is_empty()
        );
    }

    #[test]
    fn transitions_waiting_and_ready() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![(
                1,
                "Progressing",
                vec![release("cert-manager", "Installing")],
            )],
        ));
        let mut waiting = release("cert-manager", "Waiting");
        waiting["notReady"] = json!([{"kind": "Deployment", "name": "webhook", "namespace": "cert-manager", "reason": "0 of 1 ready"}]);
        let got = t.update(&status(
            "Progressing",
            vec![(1, "Progressing", vec![waiting])],
        ));
        assert_eq!(
            lines(&got),
            [
                "layer 1  release cert-manager/cert-manager  Installing -> Waiting",
                "layer 1  release cert-manager/cert-manager  waiting for Deployment cert-manager/webhook: 0 of 1 ready",
            ]
        );
        let mut ready = release("cert-manager", "Ready");
        ready["action"] = json!("install");
        ready["helmRevision"] = json!(1);
        let got = t.update(&status("Ready", vec![(1, "Ready", vec![ready])]));
        assert_eq!(
            lines(&got),
            [
                "layer 1  release cert-manager/cert-manager  Waiting -> Ready (install, helm revision 1)",
                "layer 1  Ready",
                "strata  Progressing -> Ready",
            ]
        );
    }

    #[test]
    fn reasons_that_name_the_object_are_not_repeated() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![(1, "Progressing", vec![release("a", "Installing")])],
        ));
        let mut waiting = release("a", "Waiting");
        waiting["notReady"] = json!([
            {"kind": "Deployment", "name": "web", "namespace": "a", "reason": "Deployment a/web: 0/1 replicas available"},
            {"kind": "Job", "name": "check", "reason": "not complete"}
        ]);
        let got = lines(&t.update(&status(
            "Progressing",
            vec![(1, "Progressing", vec![waiting.clone()])],
        )));
        assert_eq!(
            got[1],
            "layer 1  release a/a  waiting for Deployment a/web: 0/1 replicas available; Job check: not complete"
        );
        // The same resources again: nothing new to say.
        assert!(
            t.update(&status(
                "Progressing",
                vec![(1, "Progressing", vec![waiting])]
            ))
            .is_empty()
        );
    }

    #[test]
    fn failures_and_rejections_carry_their_messages() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![(2, "Progressing", vec![release("linkerd", "Installing")])],
        ));
        let mut failed = release("linkerd", "Failed");
        failed["message"] = json!("failed post-install: job check failed");
        let mut doc = status("Failed", vec![(2, "Failed", vec![failed])]);
        doc["rejectedRevision"] = json!({"commit": "fedcba9876543210", "problems": [
            {"file": "profiles.yaml", "field": "profiles[0].chart", "message": "unknown chart"},
            {"file": "values/x.yaml", "field": "", "message": "missing"}
        ]});
        let got = lines(&t.update(&doc));
        assert_eq!(
            got,
            [
                "revision fedcba987654 rejected:\n           - profiles.yaml: profiles[0].chart: unknown chart\n           - values/x.yaml: missing",
                "layer 2  release linkerd/linkerd  Installing -> Failed (failed post-install: job check failed)",
                "layer 2  Failed",
                "strata  Progressing -> Failed",
            ]
        );
        assert!(stuck(&doc));
        assert!(!all_ready(&doc));
    }

    #[test]
    fn a_new_revision_starts_over() {
        let mut t = Tracker::new();
        t.update(&status(
            "Ready",
            vec![(1, "Ready", vec![release("a", "Ready")])],
        ));
        let mut doc = status(
            "Progressing",
            vec![(1, "Progressing", vec![release("a", "Installing")])],
        );
        doc["revision"]["commit"] = json!("aaaaaaaaaaaaaaaa");
        let got = lines(&t.update(&doc));
        assert_eq!(
            got,
            [
                "revision aaaaaaaaaaaa planned: layer 1 [a]",
                "layer 1  release a/a  Installing",
                "layer 1  Progressing",
                "strata  Ready -> Progressing",
            ]
        );
    }

    #[test]
    fn readiness_needs_every_layer() {
        assert!(all_ready(&status("Ready", vec![(1, "Ready", vec![])])));
        assert!(!all_ready(&status("Ready", vec![])));
        assert!(!all_ready(&status(
            "Ready",
            vec![(1, "Ready", vec![]), (2, "Progressing", vec![])]
        )));
        assert!(!all_ready(&json!({"phase": "Starting", "layers": []})));
        assert!(stuck(&json!({"phase": "Invalid", "layers": []})));
        assert!(!stuck(&json!({"phase": "Degraded", "layers": []})));
    }
}
