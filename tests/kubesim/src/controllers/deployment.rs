//! Deployments: one ReplicaSet per pod-template revision, old ones scaled to zero once the new
//! one is available (RollingUpdate) or at once (Recreate), and the Deployment's full status.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::model::{
    conditions, generation, int_at, int_or_percent, name, namespace, owner_ref, template_hash,
};

/// The label carrying the pod-template hash.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";

/// What the Deployment controller wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// ReplicaSets to create.
    pub create: Vec<Value>,
    /// ReplicaSets to update (whole objects: replicas, revision annotations).
    pub update: Vec<Value>,
    /// The Deployment's new `deployment.kubernetes.io/revision`, when it changes.
    pub revision: Option<String>,
    /// The Deployment's status.
    pub status: Value,
    /// Look again after this long (the progress deadline).
    pub requeue: Option<Duration>,
}

fn revision_of(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn rs_status(rs: &Value, field: &str) -> i64 {
    int_at(rs, &format!("/status/{field}"), 0)
}

/// The name of the ReplicaSet for the Deployment's current template.
pub fn new_rs_name(d: &Value) -> String {
    format!("{}-{}", name(d), template_hash(&pod_template(d)))
}

fn pod_template(d: &Value) -> Value {
    d.pointer("/spec/template").cloned().unwrap_or(json!({}))
}

/// Reconciles a Deployment given the ReplicaSets it controls. `rollout_age` is how long the
/// current generation has been rolling out (for `progressDeadlineSeconds`).
pub fn reconcile(d: &Value, rses: &[Value], rollout_age: Duration, now: &str) -> Plan {
    let mut plan = Plan::default();
    let want = int_at(d, "/spec/replicas", 1).max(0);
    let template = pod_template(d);
    let hash = template_hash(&template);
    let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
    let max_surge = if recreate {
        0
    } else {
        int_or_percent(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            want,
            1,
            true,
        )
    };
    let max_unavailable = if recreate {
        0
    } else {
        int_or_percent(
            d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            want,
            0,
            false,
        )
    };

    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return paused(d, rses, &hash, want, max_unavailable, now);
    }

    let is_new = |rs: &Value| {
        rs.pointer("/metadata/labels")
            .and_then(|l| l.get(HASH_LABEL))
            .and_then(Value::as_str)
            == Some(hash.as_str())
    };
    let max_old_revision = rses
        .iter()
        .filter(|rs| !is_new(rs))
        .map(revision_of)
        .max()
        .unwrap_or(0);
    let old: Vec<&Value> = rses.iter().filter(|rs| !is_new(rs)).collect();
    let old_pods: i64 = old.iter().map(|rs| rs_status(rs, "replicas")).sum();
    let new_replicas = if recreate && old_pods > 0 { 0 } else { want };
    let annotations_for = |replicas: i64| {
        (
            json!(want.to_string()),
            json!((want + max_surge).max(replicas).to_string()),
        )
    };

    let new_rs: Option<Value> = match rses.iter().find(|rs| is_new(rs)) {
        None => {
            let rs = new_replica_set(d, &hash, new_replicas, max_old_revision + 1, max_surge);
            plan.create.push(rs.clone());
            Some(rs)
        }
        Some(rs) => {
            let mut updated = rs.clone();
            updated["spec"]["replicas"] = json!(new_replicas);
            let rev = revision_of(rs);
            let rev = if rev <= max_old_revision {
                max_old_revision + 1
            } else {
                rev
            };
            let (desired, max) = annotations_for(new_replicas);
            let ann = annotations_mut(&mut updated);
            ann.insert(REVISION.into(), json!(rev.to_string()));
            ann.insert(DESIRED.into(), desired);
            ann.insert(MAX.into(), max);
            if &updated != rs {
                plan.update.push(updated.clone());
            }
            Some(updated)
        }
    };
    let new_rs = new_rs.expect("the new ReplicaSet is always known");
    let new_available = rs_status(&new_rs, "availableReplicas");
    let new_observed = int_at(&new_rs, "/status/observedGeneration", 0) >= generation(&new_rs)
        && rs_status(&new_rs, "replicas") == new_replicas;

    // Old ReplicaSets go to zero once the new one is fully available (or at once: Recreate).
    for rs in &old {
        let current = int_at(rs, "/spec/replicas", 1);
        let target = if recreate || (new_observed && new_available >= want) {
            0
        } else {
            current
        };
        if target != current {
            let mut updated = (*rs).clone();
            updated["spec"]["replicas"] = json!(target);
            let (desired, max) = annotations_for(target);
            let ann = annotations_mut(&mut updated);
            ann.insert(DESIRED.into(), desired);
            ann.insert(MAX.into(), max);
            plan.update.push(updated);
        }
    }

    let new_rev = revision_of(&new_rs).to_string();
    let d_rev = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str);
    if d_rev != Some(new_rev.as_str()) {
        plan.revision = Some(new_rev);
    }

    // Status, computed from what the ReplicaSets report.
    let sum = |f: &str| -> i64 { rses.iter().map(|rs| rs_status(rs, f)).sum() };
    let replicas = sum("replicas");
    let ready = sum("readyReplicas");
    let available = sum("availableReplicas");
    let updated = if plan.create.is_empty() {
        rs_status(&new_rs, "replicas")
    } else {
        0
    };
    let unavailable = (want - available).max(0);
    let rs_name = name(&new_rs).to_owned();
    let complete =
        new_observed && updated == want && available >= want && replicas == want && old_pods == 0;
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600)
        .max(0) as u64;
    let deadline = Duration::from_secs(deadline);
    let (available_c, progressing_c);
    available_c = if available >= want - max_unavailable {
        (
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
        )
    } else {
        (
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
        )
    };
    progressing_c = if complete {
        (
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else if rollout_age >= deadline {
        (
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
        )
    } else {
        plan.requeue = Some(deadline - rollout_age);
        (
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(generation(d)));
    status.insert("replicas".into(), json!(replicas));
    status.insert("updatedReplicas".into(), json!(updated));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("availableReplicas".into(), json!(available));
    if unavailable > 0 {
        status.insert("unavailableReplicas".into(), json!(unavailable));
    }
    let wanted = [
        (
            available_c.0,
            available_c.1,
            available_c.2,
            available_c.3.as_str(),
        ),
        (
            progressing_c.0,
            progressing_c.1,
            progressing_c.2,
            progressing_c.3.as_str(),
        ),
    ];
    status.insert(
        "conditions".into(),
        conditions(d.pointer("/status/conditions"), &wanted, now, true),
    );
    plan.status = Value::Object(status);
    plan
}

/// A paused Deployment: no new ReplicaSet is rolled out; the current one is only scaled.
fn paused(
    d: &Value,
    rses: &[Value],
    hash: &str,
    want: i64,
    max_unavailable: i64,
    now: &str,
) -> Plan {
    let mut plan = Plan::default();
    let new_rs = rses.iter().find(|rs| {
        rs.pointer("/metadata/labels")
            .and_then(|l| l.get(HASH_LABEL))
            .and_then(Value::as_str)
            == Some(hash)
    });
    if let Some(rs) = new_rs
        && int_at(rs, "/spec/replicas", 1) != want
    {
        let mut scaled = rs.clone();
        scaled["spec"]["replicas"] = json!(want);
        plan.update.push(scaled);
    }
    let sum = |f: &str| -> i64 { rses.iter().map(|rs| rs_status(rs, f)).sum() };
    let available = sum("availableReplicas");
    let (a_status, a_reason, a_msg) = if available >= want - max_unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(generation(d)));
    status.insert("replicas".into(), json!(sum("replicas")));
    status.insert(
        "updatedReplicas".into(),
        json!(new_rs.map_or(0, |rs| rs_status(rs, "replicas"))),
    );
    status.insert("readyReplicas".into(), json!(sum("readyReplicas")));
    status.insert("availableReplicas".into(), json!(available));
    if want - available > 0 {
        status.insert("unavailableReplicas".into(), json!(want - available));
    }
    status.insert(
        "conditions".into(),
        conditions(
            d.pointer("/status/conditions"),
            &[
                ("Available", a_status, a_reason, a_msg),
                (
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                ),
            ],
            now,
            true,
        ),
    );
    plan.status = Value::Object(status);
    plan
}

fn annotations_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations were just made an object")
}

fn new_replica_set(d: &Value, hash: &str, replicas: i64, revision: i64, max_surge: i64) -> Value {
    let mut template = pod_template(d);
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let labels = template["metadata"]["labels"].clone();
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    // Like the real controller, the Deployment's own annotations are copied, minus the ones
    // that describe the Deployment itself.
    let mut annotations: Map<String, Value> = d
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| {
        k != "kubectl.kubernetes.io/last-applied-configuration"
            && !k.starts_with("deployment.kubernetes.io/")
    });
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    annotations.insert(DESIRED.into(), json!(replicas.max(0).to_string()));
    annotations.insert(MAX.into(), json!((replicas + max_surge).to_string()));
    let mut spec = json!({"replicas": replicas, "selector": selector, "template": template});
    if let Some(m) = d.pointer("/spec/minReadySeconds") {
        spec["minReadySeconds"] = m.clone();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", name(d)),
            "namespace": namespace(d),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(d)],
        },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::model::condition_status;

    fn deploy(image: &str, replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 3,
                "annotations": {"meta.helm.sh/release-name": "r"}},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    /// Makes a ReplicaSet as the store would hold it after the RS controller reported on it.
    fn settle(mut rs: Value, ready: bool) -> Value {
        let n = rs["spec"]["replicas"].as_i64().unwrap();
        rs["metadata"]["generation"] = json!(1);
        let r = if ready { n } else { 0 };
        rs["status"] = json!({"replicas": n, "readyReplicas": r, "availableReplicas": r,
            "observedGeneration": 1});
        rs
    }

    fn with_status(mut d: Value, plan: &Plan) -> Value {
        d["status"] = plan.status.clone();
        d
    }

    #[test]
    fn first_reconcile_creates_an_owned_replica_set() {
        let d = deploy("nginx:1", 2);
        let plan = reconcile(&d, &[], Duration::ZERO, "t0");
        assert_eq!(plan.create.len(), 1);
        let rs = &plan.create[0];
        let hash = template_hash(&d["spec"]["template"]);
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["metadata"]["labels"][HASH_LABEL], hash.as_str());
        assert_eq!(
            rs["spec"]["selector"]["matchLabels"][HASH_LABEL],
            hash.as_str()
        );
        assert_eq!(rs["spec"]["template"]["metadata"]["labels"]["app"], "web");
        assert_eq!(rs["metadata"]["annotations"][REVISION], "1");
        assert_eq!(
            rs["metadata"]["annotations"]["meta.helm.sh/release-name"],
            "r"
        );
        let owner = &rs["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Deployment");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(plan.revision.as_deref(), Some("1"));
        assert_eq!(plan.status["observedGeneration"], 3);
        assert_eq!(plan.status["updatedReplicas"], 0);
        let d = with_status(d, &plan);
        assert_eq!(condition_status(&d, "Available"), Some("False"));
        assert_eq!(condition_status(&d, "Progressing"), Some("True"));
        assert_eq!(plan.requeue, Some(Duration::from_secs(10)));
    }

    #[test]
    fn ready_replica_set_completes_the_rollout() {
        let d = deploy("nginx:1", 2);
        let rs = settle(
            reconcile(&d, &[], Duration::ZERO, "t0").create.remove(0),
            true,
        );
        let plan = reconcile(&d, &[rs], Duration::from_secs(1), "t1");
        assert!(plan.create.is_empty() && plan.update.is_empty(), "{plan:?}");
        for f in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            assert_eq!(plan.status[f], 2, "{f}");
        }
        assert!(plan.status.get("unavailableReplicas").is_none());
        let c = &plan.status["conditions"];
        assert_eq!(c[1]["reason"], "NewReplicaSetAvailable");
        assert_eq!(c[0]["reason"], "MinimumReplicasAvailable");
        assert_eq!(plan.requeue, None);
    }

    #[test]
    fn template_change_rolls_to_a_new_replica_set_then_scales_the_old_down() {
        let v1 = deploy("nginx:1", 2);
        let rs1 = settle(
            reconcile(&v1, &[], Duration::ZERO, "t").create.remove(0),
            true,
        );
        let v2 = deploy("nginx:2", 2);
        let plan = reconcile(&v2, std::slice::from_ref(&rs1), Duration::ZERO, "t");
        assert_eq!(plan.create.len(), 1);
        let rs2 = plan.create[0].clone();
        assert_ne!(rs2["metadata"]["name"], rs1["metadata"]["name"]);
        assert_eq!(rs2["metadata"]["annotations"][REVISION], "2");
        assert!(
            plan.update.is_empty(),
            "old RS kept while the new one is not ready"
        );
        assert_eq!(plan.status["conditions"][1]["reason"], "ReplicaSetUpdated");
        // New RS ready: the old one is scaled to zero.
        let rs2 = settle(rs2, true);
        let plan = reconcile(&v2, &[rs1.clone(), rs2.clone()], Duration::ZERO, "t");
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0]["metadata"]["name"], rs1["metadata"]["name"]);
        assert_eq!(plan.update[0]["spec"]["replicas"], 0);
        assert_ne!(
            plan.status["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );
        // Rollback to v1: the old RS is reused and becomes revision 3.
        let rs1_zero = settle(plan.update[0].clone(), true);
        let plan = reconcile(&v1, &[rs1_zero, rs2], Duration::ZERO, "t");
        assert!(plan.create.is_empty());
        let reused = plan
            .update
            .iter()
            .find(|r| r["metadata"]["name"] == rs1["metadata"]["name"])
            .expect("old RS reused");
        assert_eq!(reused["spec"]["replicas"], 2);
        assert_eq!(reused["metadata"]["annotations"][REVISION], "3");
        assert_eq!(plan.revision.as_deref(), Some("3"));
    }

    #[test]
    fn never_ready_pods_exceed_the_progress_deadline() {
        let d = deploy("nginx:1", 1);
        let rs = settle(
            reconcile(&d, &[], Duration::ZERO, "t").create.remove(0),
            false,
        );
        let plan = reconcile(&d, std::slice::from_ref(&rs), Duration::from_secs(5), "t");
        assert_eq!(plan.status["conditions"][1]["status"], "True");
        assert_eq!(plan.requeue, Some(Duration::from_secs(5)));
        let plan = reconcile(&d, &[rs], Duration::from_secs(11), "t");
        let p = &plan.status["conditions"][1];
        assert_eq!(p["status"], "False");
        assert_eq!(p["reason"], "ProgressDeadlineExceeded");
        assert_eq!(plan.status["unavailableReplicas"], 1);
    }

    #[test]
    fn recreate_scales_old_down_before_the_new_one_gets_pods() {
        let mut v1 = deploy("nginx:1", 1);
        v1["spec"]["strategy"] = json!({"type": "Recreate"});
        let rs1 = settle(
            reconcile(&v1, &[], Duration::ZERO, "t").create.remove(0),
            true,
        );
        let mut v2 = v1.clone();
        v2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        let plan = reconcile(&v2, &[rs1], Duration::ZERO, "t");
        assert_eq!(plan.create[0]["spec"]["replicas"], 0);
        assert_eq!(plan.update[0]["spec"]["replicas"], 0);
    }

    #[test]
    fn repeated_reconcile_writes_nothing_new() {
        let d = deploy("nginx:1", 1);
        let rs = settle(
            reconcile(&d, &[], Duration::ZERO, "t").create.remove(0),
            true,
        );
        let p1 = reconcile(&d, std::slice::from_ref(&rs), Duration::ZERO, "t1");
        let d2 = with_status(d, &p1);
        let p2 = reconcile(&d2, &[rs], Duration::ZERO, "t2");
        assert_eq!(p1.status, p2.status);
    }

    #[test]
    fn paused_deployments_do_not_roll_out_new_templates() {
        let v1 = deploy("nginx:1", 2);
        let rs1 = settle(
            reconcile(&v1, &[], Duration::ZERO, "t").create.remove(0),
            true,
        );
        let mut v2 = deploy("nginx:2", 2);
        v2["spec"]["paused"] = json!(true);
        let plan = reconcile(
            &v2,
            std::slice::from_ref(&rs1),
            Duration::from_secs(99),
            "t",
        );
        assert!(plan.create.is_empty() && plan.update.is_empty(), "{plan:?}");
        let p = &plan.status["conditions"][1];
        assert_eq!(p["status"], "Unknown");
        assert_eq!(p["reason"], "DeploymentPaused");
        assert_eq!(plan.status["updatedReplicas"], 0);
        assert_eq!(plan.status["availableReplicas"], 2);
        assert_eq!(plan.requeue, None);
    }
}
