use super::*;
use serde_json::json;

fn reason(r: &Readiness) -> &str {
    match r {
        Readiness::Ready => "",
        Readiness::InProgress { reason } | Readiness::Failed { reason } => reason,
    }
}

fn in_progress(obj: Value, needle: &str) {
    let r = assess(&obj);
    assert!(matches!(r, Readiness::InProgress { .. }), "{r:?}");
    assert!(reason(&r).contains(needle), "{r:?} lacks {needle}");
}

fn failed(obj: Value, needle: &str) {
    let r = assess(&obj);
    assert!(matches!(r, Readiness::Failed { .. }), "{r:?}");
    assert!(reason(&r).contains(needle), "{r:?} lacks {needle}");
}

fn deployment(status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "webhook", "namespace": "cert-manager", "generation": 2},
        "spec": {"replicas": 1}, "status": status})
}

fn ready_deploy_status() -> Value {
    json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1, "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})
}

#[test]
fn deployment_rules() {
    assert_eq!(assess(&deployment(ready_deploy_status())), Readiness::Ready);
    let r = assess(&deployment(
        json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1}),
    ));
    assert_eq!(
        r,
        Readiness::InProgress {
            reason: "Deployment cert-manager/webhook: 0/1 replicas available".into()
        }
    );
    in_progress(
        deployment(json!({"observedGeneration": 1})),
        "generation 2 not observed yet",
    );
    in_progress(
        deployment(json!({"observedGeneration": 2})),
        "0/1 replicas updated",
    );
    in_progress(
        deployment(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1}),
        ),
        "1 old replicas pending termination",
    );
    let mut st = ready_deploy_status();
    st["conditions"][1]["reason"] = json!("ReplicaSetUpdated");
    in_progress(deployment(st), "rollout not finished");
    let mut st = ready_deploy_status();
    st["conditions"][0]["status"] = json!("False");
    in_progress(deployment(st), "Available condition is not True");
    failed(
        deployment(json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "took too long"}]})),
        "progress deadline exceeded: took too long",
    );
    let mut d = deployment(ready_deploy_status());
    d["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    in_progress(d, "being deleted");
}

#[test]
fn statefulset_rules() {
    let sts = |status: Value| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "d"},
            "spec": {"replicas": 2}, "status": status})
    };
    assert_eq!(
        assess(&sts(
            json!({"readyReplicas": 2, "currentReplicas": 2, "updatedReplicas": 2, "currentRevision": "r1", "updateRevision": "r1"})
        )),
        Readiness::Ready
    );
    in_progress(
        sts(json!({"readyReplicas": 1})),
        "StatefulSet d/db: 1/2 replicas ready",
    );
    in_progress(
        sts(
            json!({"readyReplicas": 2, "currentReplicas": 2, "updatedReplicas": 2, "currentRevision": "r1", "updateRevision": "r2"}),
        ),
        "rolling update in progress (revision r1 -> r2)",
    );
}

#[test]
fn daemonset_and_replicaset_rules() {
    let ds = |status: Value| json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "n"}, "status": status});
    assert_eq!(
        assess(&ds(
            json!({"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2, "numberReady": 2})
        )),
        Readiness::Ready
    );
    in_progress(
        ds(
            json!({"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}),
        ),
        "1/2 pods available",
    );
    in_progress(ds(json!({})), "no status yet");
    let rs = |status: Value| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r", "namespace": "n"}, "spec": {"replicas": 3}, "status": status});
    assert_eq!(
        assess(&rs(json!({"readyReplicas": 3, "availableReplicas": 3}))),
        Readiness::Ready
    );
    in_progress(
        rs(json!({"readyReplicas": 3, "availableReplicas": 2})),
        "2/3 replicas available",
    );
}

#[test]
fn pod_rules() {
    let pod = |status: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"}, "status": status});
    assert_eq!(
        assess(&pod(json!({"phase": "Succeeded"}))),
        Readiness::Ready
    );
    assert_eq!(
        assess(&pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
        )),
        Readiness::Ready
    );
    in_progress(
        pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        ),
        "Pod n/p: Pending, not ready (container app ImagePullBackOff)",
    );
    in_progress(
        pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})),
        "Running, not ready",
    );
    failed(
        pod(json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"})),
        "failed: Evicted: low memory",
    );
}

#[test]
fn job_rules() {
    let job = |status: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "check", "namespace": "cm"}, "spec": {"completions": 1}, "status": status});
    assert_eq!(
        assess(&job(
            json!({"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1})
        )),
        Readiness::Ready
    );
    failed(
        job(
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        ),
        "Job cm/check: failed: BackoffLimitExceeded: Job has reached the specified backoff limit",
    );
    in_progress(job(json!({"active": 1})), "0/1 completions, 1 active");
}

#[test]
fn pvc_service_crd_namespace_rules() {
    let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "n"}, "status": {"phase": phase}});
    assert_eq!(assess(&pvc("Bound")), Readiness::Ready);
    in_progress(pvc("Pending"), "phase Pending, not Bound");
    failed(pvc("Lost"), "lost");

    let svc = |spec: Value, status: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "n"}, "spec": spec, "status": status});
    assert_eq!(
        assess(&svc(
            json!({"type": "ClusterIP", "clusterIP": "10.0.0.1"}),
            json!({})
        )),
        Readiness::Ready
    );
    in_progress(
        svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1"}),
            json!({"loadBalancer": {}}),
        ),
        "waiting for a load balancer address",
    );
    assert_eq!(
        assess(&svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1"}),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})
        )),
        Readiness::Ready
    );
    assert_eq!(
        assess(&svc(
            json!({"type": "ExternalName", "externalName": "x.example"}),
            json!({})
        )),
        Readiness::Ready
    );
    in_progress(
        svc(json!({"type": "ClusterIP"}), json!({})),
        "no cluster IP",
    );

    let crd = |conds: Value| json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "certificates.cert-manager.io"}, "status": {"conditions": conds}});
    assert_eq!(
        assess(&crd(json!([{"type": "Established", "status": "True"}]))),
        Readiness::Ready
    );
    in_progress(
        crd(json!([])),
        "CustomResourceDefinition certificates.cert-manager.io: not Established yet",
    );
    failed(
        crd(json!([{"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict"}])),
        "names not accepted: ListKindConflict",
    );

    let ns = |phase: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "status": {"phase": phase}});
    assert_eq!(assess(&ns("Active")), Readiness::Ready);
    in_progress(ns("Terminating"), "Namespace x: terminating");
}

#[test]
fn generic_and_statusless_kinds() {
    assert_eq!(
        assess(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {}})
        ),
        Readiness::Ready
    );
    let cr = |conds: Value| json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c", "namespace": "n", "generation": 1}, "status": {"observedGeneration": 1, "conditions": conds}});
    assert_eq!(
        assess(&cr(json!([{"type": "Ready", "status": "True"}]))),
        Readiness::Ready
    );
    in_progress(
        cr(json!([{"type": "Ready", "status": "False", "reason": "Issuing"}])),
        "Ready=False: Issuing",
    );
    in_progress(
        cr(json!([{"type": "Reconciling", "status": "True"}])),
        "reconciling",
    );
    failed(
        cr(json!([{"type": "Stalled", "status": "True", "message": "bad issuer"}])),
        "stalled: bad issuer",
    );
    // A custom kind called Deployment in another group gets the generic rules.
    assert_eq!(
        assess(
            &json!({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "x"}})
        ),
        Readiness::Ready
    );
    // Garbage never panics.
    for v in [
        json!(null),
        json!([]),
        json!({"kind": 5}),
        json!({"status": {"conditions": "x"}}),
    ] {
        let _ = assess(&v);
    }
}
