//! DaemonSets: one pod per simulated node, rolling updates one pod at a time, status counts.

use serde_json::{Map, Value, json};

use super::model::{generation, name, template_hash, terminating};
use super::{pod, replicaset};

/// Label on pods naming their template revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the DaemonSet controller wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create.
    pub create: Vec<Value>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The DaemonSet's status.
    pub status: Value,
    /// Look again after this long (a pod becoming available after `minReadySeconds`).
    pub requeue: Option<std::time::Duration>,
}

fn node_of(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn hash_of(p: &Value) -> &str {
    p.pointer("/metadata/labels")
        .and_then(|l| l.get(REVISION_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Reconciles a DaemonSet against the simulated `nodes`.
pub fn reconcile(ds: &Value, pods: &[Value], nodes: &[String], now: std::time::SystemTime) -> Plan {
    let mut plan = Plan::default();
    let hash = template_hash(&ds.pointer("/spec/template").cloned().unwrap_or(json!({})));
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| !terminating(p) && !matches!(pod::phase(p), "Succeeded" | "Failed"))
        .collect();
    let on_delete = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    if !terminating(ds) {
        for node in nodes {
            let mut mine: Vec<&&Value> = live.iter().filter(|p| node_of(p) == node).collect();
            if mine.is_empty() {
                let mut p = replicaset::pod_from_template(ds, node);
                p["metadata"]["labels"][REVISION_LABEL] = json!(hash);
                p["metadata"]["labels"]["pod-template-generation"] =
                    json!(generation(ds).to_string());
                plan.create.push(p);
            }
            mine.sort_by_key(|p| name(p));
            for extra in mine.iter().skip(1) {
                plan.delete.push(name(extra).to_owned());
            }
        }
        for p in &live {
            if !nodes.iter().any(|n| n == node_of(p)) {
                plan.delete.push(name(p).to_owned());
            }
        }
        let all_ready = nodes
            .iter()
            .all(|n| live.iter().any(|p| node_of(p) == n && pod::is_ready(p)));
        if !on_delete
            && plan.delete.is_empty()
            && all_ready
            && !pods.iter().any(terminating)
            && let Some(old) = live.iter().find(|p| hash_of(p) != hash)
        {
            plan.delete.push(name(old).to_owned());
        }
    }
    let scheduled: Vec<&&Value> = live
        .iter()
        .filter(|p| nodes.iter().any(|n| n == node_of(p)))
        .collect();
    let current = nodes
        .iter()
        .filter(|n| scheduled.iter().any(|p| node_of(p) == n.as_str()))
        .count() as i64;
    let updated = scheduled.iter().filter(|p| hash_of(p) == hash).count() as i64;
    let ready = scheduled.iter().filter(|p| pod::is_ready(p)).count() as i64;
    let (available, requeue) = pod::count_available(
        scheduled.iter().map(|p| **p),
        super::model::int_at(ds, "/spec/minReadySeconds", 0),
        now,
    );
    plan.requeue = requeue;
    let desired = nodes.len() as i64;
    let mut status = Map::new();
    status.insert("currentNumberScheduled".into(), json!(current));
    status.insert("desiredNumberScheduled".into(), json!(desired));
    status.insert("numberMisscheduled".into(), json!(0));
    status.insert("numberReady".into(), json!(ready));
    status.insert("observedGeneration".into(), json!(generation(ds)));
    if updated > 0 {
        status.insert("updatedNumberScheduled".into(), json!(updated));
    }
    if available > 0 {
        status.insert("numberAvailable".into(), json!(available));
    }
    if desired - available > 0 {
        status.insert("numberUnavailable".into(), json!(desired - available));
    }
    plan.status = Value::Object(status);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ds(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 4},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn ready(mut p: Value, name: &str) -> Value {
        p["metadata"]["name"] = json!(name);
        p["status"] = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]});
        p
    }

    #[test]
    fn one_pod_per_node_and_full_counts_once_ready() {
        let d = ds("a:1");
        let plan = reconcile(&d, &[], &nodes(2), UNIX_EPOCH);
        assert_eq!(plan.create.len(), 2);
        assert_eq!(plan.create[1]["spec"]["nodeName"], "node-1");
        assert_eq!(plan.status["desiredNumberScheduled"], 2);
        assert_eq!(plan.status["currentNumberScheduled"], 0);
        let pods: Vec<Value> = plan
            .create
            .iter()
            .enumerate()
            .map(|(i, p)| ready(p.clone(), &format!("agent-{i}")))
            .collect();
        let plan = reconcile(&d, &pods, &nodes(2), UNIX_EPOCH);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        for f in [
            "currentNumberScheduled",
            "updatedNumberScheduled",
            "numberReady",
            "numberAvailable",
        ] {
            assert_eq!(plan.status[f], 2, "{f}");
        }
        assert_eq!(plan.status["observedGeneration"], 4);
        assert!(plan.status.get("numberUnavailable").is_none());
        // New template: one outdated pod replaced at a time.
        let plan = reconcile(&ds("a:2"), &pods, &nodes(2), UNIX_EPOCH);
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.status["updatedNumberScheduled"], json!(null));
    }
}
