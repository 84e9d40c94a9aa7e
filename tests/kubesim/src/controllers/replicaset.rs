//! ReplicaSets: keep `spec.replicas` pods (owner-referenced, created from the template) and
//! report their counts.

use serde_json::{Map, Value, json};

use super::model::{generation, int_at, name, namespace, owner_ref, terminating};
use super::pod;

/// What the ReplicaSet controller wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create.
    pub create: Vec<Value>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The ReplicaSet's status.
    pub status: Value,
    /// Look again after this long (a pod becoming available after `minReadySeconds`).
    pub requeue: Option<std::time::Duration>,
}

/// Pods that count as replicas: not being deleted, not finished.
pub fn active(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| !terminating(p) && !matches!(pod::phase(p), "Succeeded" | "Failed"))
        .collect()
}

/// Reconciles one ReplicaSet given the pods it controls.
pub fn reconcile(rs: &Value, pods: &[Value], node: &str, now: std::time::SystemTime) -> Plan {
    let want = int_at(rs, "/spec/replicas", 1).max(0);
    let active = active(pods);
    let mut plan = Plan::default();
    let have = active.len() as i64;
    if !terminating(rs) {
        for _ in have..want {
            plan.create.push(pod_from_template(rs, node));
        }
        if have > want {
            // Remove unready pods first, then the newest.
            let mut victims: Vec<&&Value> = active.iter().collect();
            victims.sort_by(|a, b| {
                pod::is_ready(a).cmp(&pod::is_ready(b)).then_with(|| {
                    let ta = a
                        .pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str);
                    let tb = b
                        .pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str);
                    tb.cmp(&ta).then_with(|| name(b).cmp(name(a)))
                })
            });
            plan.delete = victims
                .into_iter()
                .take((have - want) as usize)
                .map(|p| name(p).to_owned())
                .collect();
        }
    }
    let ready = active.iter().filter(|p| pod::is_ready(p)).count() as i64;
    let (available, requeue) = pod::count_available(
        active.iter().copied(),
        int_at(rs, "/spec/minReadySeconds", 0),
        now,
    );
    plan.requeue = requeue;
    let mut status = Map::new();
    status.insert("replicas".into(), json!(have));
    if have > 0 {
        status.insert("fullyLabeledReplicas".into(), json!(have));
    }
    if ready > 0 {
        status.insert("readyReplicas".into(), json!(ready));
    }
    if available > 0 {
        status.insert("availableReplicas".into(), json!(available));
    }
    status.insert("observedGeneration".into(), json!(generation(rs)));
    plan.status = Value::Object(status);
    plan
}

/// A pod built from the ReplicaSet's template, scheduled on `node`.
pub fn pod_from_template(owner: &Value, node: &str) -> Value {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let mut meta = template
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.remove("name");
    meta.remove("creationTimestamp");
    meta.insert("generateName".into(), json!(format!("{}-", name(owner))));
    meta.insert("namespace".into(), json!(namespace(owner)));
    meta.insert("ownerReferences".into(), json!([owner_ref(owner)]));
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if spec.get("nodeName").is_none() {
        spec["nodeName"] = json!(node);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
    }

    fn rs(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "rs-uid", "generation": 2},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"},
                    "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    }

    fn pod(name: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"uid": "rs-uid", "controller": true}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn creates_missing_pods_from_the_template() {
        let plan = reconcile(&rs(3), &[pod("web-abc-1", true)], "node-0", now());
        assert_eq!(plan.create.len(), 2);
        let p = &plan.create[0];
        assert_eq!(p["metadata"]["generateName"], "web-abc-");
        assert_eq!(p["metadata"]["namespace"], "ns");
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], "abc");
        assert_eq!(p["metadata"]["annotations"]["a"], "b");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["nodeName"], "node-0");
        assert_eq!(plan.status["replicas"], 1);
        assert_eq!(plan.status["readyReplicas"], 1);
        assert_eq!(plan.status["observedGeneration"], 2);
    }

    #[test]
    fn scales_down_unready_pods_first() {
        let pods = [pod("a", true), pod("b", false), pod("c", true)];
        let plan = reconcile(&rs(1), &pods, "n", now());
        assert!(plan.create.is_empty());
        assert_eq!(plan.delete.len(), 2);
        assert_eq!(plan.delete[0], "b");
    }

    #[test]
    fn status_counts_ready_pods_and_ignores_finished_ones() {
        let mut done = pod("d", false);
        done["status"]["phase"] = json!("Succeeded");
        let pods = [pod("a", true), pod("b", false), done];
        let plan = reconcile(&rs(2), &pods, "n", now());
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.status["replicas"], 2);
        assert_eq!(plan.status["readyReplicas"], 1);
        assert_eq!(plan.status["availableReplicas"], 1);
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut r = rs(1);
        r["spec"]["minReadySeconds"] = json!(10);
        let mut p = pod("a", true);
        p["status"]["conditions"][0]["lastTransitionTime"] = json!("2025-12-31T23:59:56Z");
        let plan = reconcile(&r, std::slice::from_ref(&p), "n", now());
        assert_eq!(plan.status["readyReplicas"], 1);
        assert!(plan.status.get("availableReplicas").is_none());
        assert_eq!(plan.requeue, Some(Duration::from_secs(6)));
        let later = now() + Duration::from_secs(6);
        let plan = reconcile(&r, &[p], "n", later);
        assert_eq!(plan.status["availableReplicas"], 1);
        assert_eq!(plan.requeue, None);
    }
}
