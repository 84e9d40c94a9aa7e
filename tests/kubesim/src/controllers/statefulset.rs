//! StatefulSets: pods `<name>-<ordinal>` created in order (OrderedReady: each waits for the
//! previous to be ready; Parallel: all at once), PVCs from `volumeClaimTemplates`, a
//! ControllerRevision per template, rolling updates from the highest ordinal down, and status
//! with `currentRevision`/`updateRevision`.

use serde_json::{Map, Value, json};

use super::model::{generation, int_at, name, namespace, owner_ref, template_hash, terminating};
use super::pod;

/// Label on pods naming their revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the StatefulSet controller wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// ControllerRevision to create.
    pub revision: Option<Value>,
    /// PersistentVolumeClaims to create (before the pods that mount them).
    pub claims: Vec<Value>,
    /// Pods to create.
    pub create: Vec<Value>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The StatefulSet's status.
    pub status: Value,
    /// Look again after this long (a pod becoming available after `minReadySeconds`).
    pub requeue: Option<std::time::Duration>,
}

fn ordinal(sts: &str, pod: &Value) -> Option<i64> {
    name(pod).strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

fn revision_label(pod: &Value) -> &str {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(REVISION_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Reconciles a StatefulSet given its pods, the names of existing PVCs in its namespace and
/// the names of its existing ControllerRevisions.
pub fn reconcile(
    sts: &Value,
    pods: &[Value],
    existing_claims: &[String],
    existing_revisions: &[Value],
    node: &str,
    now: std::time::SystemTime,
) -> Plan {
    let mut plan = Plan::default();
    let sname = name(sts);
    let want = int_at(sts, "/spec/replicas", 1).max(0);
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let update_revision = format!("{sname}-{}", template_hash(&template));
    let current_revision = sts
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(&update_revision)
        .to_owned();
    let parallel = sts
        .pointer("/spec/podManagementPolicy")
        .and_then(Value::as_str)
        == Some("Parallel");
    let on_delete = sts
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");

    if !existing_revisions
        .iter()
        .any(|r| name(r) == update_revision)
    {
        let next = existing_revisions
            .iter()
            .map(|r| int_at(r, "/revision", 0))
            .max()
            .unwrap_or(0)
            + 1;
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        labels["controller.kubernetes.io/hash"] =
            json!(update_revision.trim_start_matches(&format!("{sname}-")));
        plan.revision = Some(json!({
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {"name": update_revision, "namespace": namespace(sts),
                "labels": labels, "ownerReferences": [owner_ref(sts)]},
            "data": {"spec": {"template": template}},
            "revision": next,
        }));
    }

    let live: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
    let by_ordinal = |i: i64| live.iter().find(|p| ordinal(sname, p) == Some(i)).copied();
    let any_terminating = pods.iter().any(terminating);

    if !terminating(sts) {
        // Scale up, in order.
        for i in 0..want {
            match by_ordinal(i) {
                Some(p) => {
                    if !parallel && !pod::is_ready(p) {
                        break;
                    }
                }
                None => {
                    if !parallel && any_terminating {
                        break;
                    }
                    for claim in claims_for(sts, i) {
                        if !existing_claims.iter().any(|c| c == name(&claim)) {
                            plan.claims.push(claim);
                        }
                    }
                    plan.create
                        .push(pod_for(sts, i, &template, &update_revision, node));
                    if !parallel {
                        break;
                    }
                }
            }
        }
        // Scale down, from the highest ordinal.
        let mut extra: Vec<&Value> = live
            .iter()
            .filter(|p| ordinal(sname, p).is_none_or(|o| o >= want))
            .copied()
            .collect();
        extra.sort_by_key(|p| std::cmp::Reverse(ordinal(sname, p)));
        if !parallel {
            extra.truncate(1);
        }
        plan.delete.extend(extra.iter().map(|p| name(p).to_owned()));
        // Rolling update: one outdated pod at a time, highest ordinal first, once all are ready.
        let all_ready = (0..want).all(|i| by_ordinal(i).is_some_and(pod::is_ready));
        if !on_delete
            && plan.delete.is_empty()
            && all_ready
            && !any_terminating
            && let Some(outdated) = (0..want)
                .rev()
                .filter_map(by_ordinal)
                .find(|p| revision_label(p) != update_revision)
        {
            plan.delete.push(name(outdated).to_owned());
        }
    }

    let counted: Vec<&Value> = live
        .iter()
        .filter(|p| ordinal(sname, p).is_some())
        .copied()
        .collect();
    let replicas = counted.len() as i64;
    let ready = counted.iter().filter(|p| pod::is_ready(p)).count() as i64;
    let (available, requeue) = pod::count_available(
        counted.iter().copied(),
        int_at(sts, "/spec/minReadySeconds", 0),
        now,
    );
    plan.requeue = requeue;
    let updated = counted
        .iter()
        .filter(|p| revision_label(p) == update_revision)
        .count() as i64;
    let mut current_revision = current_revision;
    if updated == want && ready == want && replicas == want {
        current_revision = update_revision.clone();
    }
    let current = counted
        .iter()
        .filter(|p| revision_label(p) == current_revision)
        .count() as i64;
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(generation(sts)));
    status.insert("replicas".into(), json!(replicas));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("currentReplicas".into(), json!(current));
    status.insert("updatedReplicas".into(), json!(updated));
    status.insert("availableReplicas".into(), json!(available));
    status.insert("currentRevision".into(), json!(current_revision));
    status.insert("updateRevision".into(), json!(update_revision));
    status.insert("collisionCount".into(), json!(0));
    plan.status = Value::Object(status);
    plan
}

fn claims_for(sts: &Value, ordinal: i64) -> Vec<Value> {
    let sname = name(sts);
    let selector_labels = sts
        .pointer("/spec/selector/matchLabels")
        .cloned()
        .unwrap_or(json!({}));
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let tname = name(t);
                    let mut labels = t.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
                    if let (Some(l), Some(s)) =
                        (labels.as_object_mut(), selector_labels.as_object())
                    {
                        for (k, v) in s {
                            l.insert(k.clone(), v.clone());
                        }
                    }
                    json!({
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": format!("{tname}-{sname}-{ordinal}"),
                            "namespace": namespace(sts), "labels": labels},
                        "spec": t.get("spec").cloned().unwrap_or(json!({})),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pod_for(sts: &Value, i: i64, template: &Value, revision: &str, node: &str) -> Value {
    let sname = name(sts);
    let pname = format!("{sname}-{i}");
    let mut meta = template
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.remove("creationTimestamp");
    meta.insert("name".into(), json!(pname));
    meta.insert("namespace".into(), json!(namespace(sts)));
    meta.insert("ownerReferences".into(), json!([owner_ref(sts)]));
    if let Some(l) = meta
        .entry("labels")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        l.insert(REVISION_LABEL.into(), json!(revision));
        l.insert("statefulset.kubernetes.io/pod-name".into(), json!(pname));
        l.insert("apps.kubernetes.io/pod-index".into(), json!(i.to_string()));
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pname);
    if let Some(svc) = sts.pointer("/spec/serviceName").and_then(Value::as_str) {
        spec["subdomain"] = json!(svc);
    }
    if spec.get("nodeName").is_none() {
        spec["nodeName"] = json!(node);
    }
    if let Some(ts) = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    {
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        let volumes = spec["volumes"].as_array_mut().expect("volumes is an array");
        for t in ts {
            let tname = name(t);
            if !volumes.iter().any(|v| name_field(v) == tname) {
                volumes.push(json!({"name": tname,
                    "persistentVolumeClaim": {"claimName": format!("{tname}-{sname}-{i}")}}));
            }
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn name_field(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn sts(image: &str, replicas: i64, policy: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "ns", "uid": "s-uid", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "db", "podManagementPolicy": policy,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}})
    }

    fn ready(mut p: Value) -> Value {
        p["status"] = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]});
        p
    }

    #[test]
    fn ordered_ready_creates_one_pod_at_a_time_with_its_claim() {
        let s = sts("pg:1", 2, "OrderedReady");
        let plan = reconcile(&s, &[], &[], &[], "n0", UNIX_EPOCH);
        assert!(plan.revision.is_some());
        assert_eq!(plan.create.len(), 1);
        let p0 = &plan.create[0];
        assert_eq!(p0["metadata"]["name"], "db-0");
        assert_eq!(
            p0["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-db-0"
        );
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0]["metadata"]["name"], "data-db-0");
        assert_eq!(plan.claims[0]["metadata"]["labels"]["app"], "db");
        // db-0 not ready yet: nothing more.
        let rev = plan.revision.clone().unwrap();
        let plan2 = reconcile(
            &s,
            std::slice::from_ref(p0),
            &["data-db-0".into()],
            std::slice::from_ref(&rev),
            "n0",
            UNIX_EPOCH,
        );
        assert!(plan2.create.is_empty() && plan2.revision.is_none());
        // db-0 ready: db-1 follows.
        let plan3 = reconcile(
            &s,
            &[ready(p0.clone())],
            &["data-db-0".into()],
            &[rev],
            "n0",
            UNIX_EPOCH,
        );
        assert_eq!(plan3.create[0]["metadata"]["name"], "db-1");
    }

    #[test]
    fn status_reports_revisions_and_counts() {
        let s = sts("pg:1", 2, "Parallel");
        let plan = reconcile(&s, &[], &[], &[], "n0", UNIX_EPOCH);
        assert_eq!(plan.create.len(), 2);
        let pods: Vec<Value> = plan.create.iter().cloned().map(ready).collect();
        let plan = reconcile(&s, &pods, &[], &[], "n0", UNIX_EPOCH);
        let st = &plan.status;
        assert_eq!(st["replicas"], 2);
        assert_eq!(st["readyReplicas"], 2);
        assert_eq!(st["currentReplicas"], 2);
        assert_eq!(st["updatedReplicas"], 2);
        assert_eq!(st["currentRevision"], st["updateRevision"]);
        // A template change: new update revision, outdated pods replaced from the top.
        let mut s2 = sts("pg:2", 2, "Parallel");
        s2["status"] = st.clone();
        let plan = reconcile(&s2, &pods, &[], &[], "n0", UNIX_EPOCH);
        assert_ne!(
            plan.status["updateRevision"],
            plan.status["currentRevision"]
        );
        assert_eq!(plan.delete, vec!["db-1".to_owned()]);
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal() {
        let s = sts("pg:1", 3, "Parallel");
        let pods: Vec<Value> = reconcile(&s, &[], &[], &[], "n", UNIX_EPOCH)
            .create
            .into_iter()
            .map(ready)
            .collect();
        let s1 = sts("pg:1", 1, "OrderedReady");
        let plan = reconcile(&s1, &pods, &[], &[], "n", UNIX_EPOCH);
        assert_eq!(plan.delete, vec!["db-2".to_owned()]);
    }
}
