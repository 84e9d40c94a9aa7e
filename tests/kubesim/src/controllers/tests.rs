//! Driver tests: the controllers running against a real in-memory store.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{ControllerConfig, spawn};
use crate::registry::ResourceKey;
use crate::store::Store;

struct Env {
    store: Store,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn env(cfg: ControllerConfig) -> Env {
    let store = Store::default();
    let stop = CancellationToken::new();
    spawn(store.clone(), cfg, stop.clone());
    Env { store, stop }
}

fn res(group: &str, plural: &str) -> ResourceKey {
    ResourceKey::new(group, plural)
}

/// Polls until `pred` holds for the object (tests only), or fails with the last state.
async fn wait_for(
    store: &Store,
    r: &ResourceKey,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let obj = store.get(r, Some(ns), name);
        if let Some(o) = &obj
            && pred(o)
        {
            return o.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{r} {ns}/{name} never became {what}; last state: {obj:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn cond<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn deployment(image: &str, replicas: i64, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})
}

fn deployment_done(d: &Value) -> bool {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    d["status"]["observedGeneration"] == d["metadata"]["generation"]
        && d["status"]["availableReplicas"].as_i64() == Some(want)
        && d["status"]["updatedReplicas"].as_i64() == Some(want)
        && cond(d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable")
        && cond(d, "Available").is_some_and(|c| c["status"] == "True")
}

#[tokio::test]
async fn deployment_rolls_out_and_rolls_over_to_a_new_replica_set() {
    let e = env(ControllerConfig::default());
    let deploys = res("apps", "deployments");
    let rs_res = res("apps", "replicasets");
    e.store
        .create(&deploys, deployment("nginx:1", 2, json!({})))
        .unwrap();
    let d = wait_for(
        &e.store,
        &deploys,
        "default",
        "web",
        "available",
        deployment_done,
    )
    .await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    let (rses, _) = e.store.list(&rs_res, Some("default"));
    assert_eq!(rses.len(), 1);
    let rs1 = &rses[0];
    assert_eq!(
        rs1["metadata"]["ownerReferences"][0]["uid"],
        d["metadata"]["uid"]
    );
    assert_eq!(rs1["status"]["readyReplicas"], 2);
    let (pods, _) = e.store.list(&res("", "pods"), Some("default"));
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["uid"],
            rs1["metadata"]["uid"]
        );
        assert!(
            p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10.244."))
        );
    }

    // A new image: a second ReplicaSet, the first scaled to zero, generation bumped.
    let gen1 = d["metadata"]["generation"].as_i64().unwrap();
    e.store
        .update_with(&deploys, Some("default"), "web", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        })
        .unwrap();
    let d = wait_for(&e.store, &deploys, "default", "web", "rolled over", |d| {
        d["metadata"]["generation"].as_i64() == Some(gen1 + 1) && deployment_done(d)
    })
    .await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let old = wait_for(
        &e.store,
        &rs_res,
        "default",
        rs1["metadata"]["name"].as_str().unwrap(),
        "scaled down",
        |rs| rs["spec"]["replicas"] == 0 && rs["status"]["replicas"] == 0,
    )
    .await;
    assert_eq!(
        old["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let (rses, _) = e.store.list(&rs_res, Some("default"));
    assert_eq!(rses.len(), 2);
}

#[tokio::test]
async fn ready_after_and_never_ready_annotations_hold_a_deployment_back() {
    let e = env(ControllerConfig::default());
    let deploys = res("apps", "deployments");
    let mut slow = deployment("nginx:1", 1, json!({}));
    slow["metadata"]["name"] = json!("slow");
    slow["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubesim.strata.dev/ready-after": "400ms"});
    e.store.create(&deploys, slow).unwrap();
    let mut never = deployment(
        "nginx:1",
        1,
        json!({"kubesim.strata.dev/never-ready": "true"}),
    );
    never["metadata"]["name"] = json!("never");
    never["spec"]["progressDeadlineSeconds"] = json!(1);
    e.store.create(&deploys, never).unwrap();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = e.store.get(&deploys, Some("default"), "slow").unwrap();
    assert!(!deployment_done(&d), "ready before its ready-after: {d:#?}");
    wait_for(
        &e.store,
        &deploys,
        "default",
        "slow",
        "available",
        deployment_done,
    )
    .await;

    let d = wait_for(
        &e.store,
        &deploys,
        "default",
        "never",
        "past its deadline",
        |d| cond(d, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded"),
    )
    .await;
    assert_eq!(cond(&d, "Progressing").unwrap()["status"], "False");
    assert_eq!(d["status"]["unavailableReplicas"], 1);
}

#[tokio::test]
async fn jobs_complete_or_fail_with_backoff_limit_exceeded() {
    let e = env(ControllerConfig::default());
    let jobs = res("batch", "jobs");
    let job = |name: &str, ann: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default", "annotations": ann},
            "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}})
    };
    e.store.create(&jobs, job("ok", json!({}))).unwrap();
    e.store
        .create(
            &jobs,
            job("bad", json!({"kubesim.strata.dev/fail": "true"})),
        )
        .unwrap();
    let ok = wait_for(&e.store, &jobs, "default", "ok", "complete", |j| {
        cond(j, "Complete").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(ok["status"]["succeeded"], 1);
    assert!(ok["status"]["startTime"].is_string());
    assert!(ok["status"]["completionTime"].is_string());
    let bad = wait_for(&e.store, &jobs, "default", "bad", "failed", |j| {
        cond(j, "Failed").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        bad["status"]["failed"], 2,
        "backoffLimit 1 means two failed pods"
    );
    assert_eq!(
        cond(&bad, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert!(cond(&bad, "FailureTarget").is_some());
    let (pods, _) = e.store.list(&res("", "pods"), Some("default"));
    let failed = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Failed")
        .count();
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!((failed, succeeded), (2, 1));
}

#[tokio::test]
async fn statefulset_daemonset_pvc_and_load_balancer_become_ready() {
    let e = env(ControllerConfig {
        nodes: 3,
        ..ControllerConfig::default()
    });
    let sts = res("apps", "statefulsets");
    e.store
        .create(
            &sts,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "default"},
                "spec": {"replicas": 2, "serviceName": "db",
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{"name": "db", "image": "pg"}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        )
        .unwrap();
    let ds = res("apps", "daemonsets");
    e.store
        .create(
            &ds,
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}},
                        "spec": {"containers": [{"name": "a", "image": "agent"}]}}}}),
        )
        .unwrap();
    let svc = res("", "services");
    e.store
        .create(
            &svc,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "lb", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
        )
        .unwrap();

    let s = wait_for(&e.store, &sts, "default", "db", "ready", |s| {
        s["status"]["readyReplicas"] == 2
            && s["status"]["updatedReplicas"] == 2
            && s["status"]["currentRevision"] == s["status"]["updateRevision"]
            && s["status"]["observedGeneration"] == s["metadata"]["generation"]
    })
    .await;
    assert!(
        s["status"]["updateRevision"]
            .as_str()
            .is_some_and(|r| r.starts_with("db-"))
    );
    for claim in ["data-db-0", "data-db-1"] {
        let pvc = wait_for(
            &e.store,
            &res("", "persistentvolumeclaims"),
            "default",
            claim,
            "bound",
            |p| p["status"]["phase"] == "Bound",
        )
        .await;
        assert_eq!(pvc["status"]["capacity"]["storage"], "1Gi");
    }
    let (revs, _) = e
        .store
        .list(&res("apps", "controllerrevisions"), Some("default"));
    assert_eq!(revs.len(), 1);

    let d = wait_for(&e.store, &ds, "default", "agent", "ready", |d| {
        d["status"]["numberReady"] == 3 && d["status"]["updatedNumberScheduled"] == 3
    })
    .await;
    assert_eq!(d["status"]["desiredNumberScheduled"], 3);
    let (pods, _) = e.store.list(&res("", "pods"), Some("default"));
    let mut nodes: Vec<&str> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "agent")
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["kubesim-node-0", "kubesim-node-1", "kubesim-node-2"]
    );

    let lb = wait_for(&e.store, &svc, "default", "lb", "given an address", |s| {
        s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string()
    })
    .await;
    assert!(lb["spec"]["clusterIP"].is_string());
}

#[tokio::test]
async fn services_get_endpoints_of_their_ready_pods_and_lose_them_with_the_service() {
    let e = env(ControllerConfig::default());
    let svc = res("", "services");
    e.store
        .create(
            &svc,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .unwrap();
    e.store
        .create(
            &res("apps", "deployments"),
            deployment("nginx:1", 2, json!({})),
        )
        .unwrap();
    let ep = wait_for(
        &e.store,
        &res("", "endpoints"),
        "default",
        "web",
        "filled",
        |ep| {
            ep["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        },
    )
    .await;
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    let slices = e
        .store
        .list(&res("discovery.k8s.io", "endpointslices"), Some("default"))
        .0;
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0]["endpoints"].as_array().unwrap().len(), 2);
    e.store
        .delete(
            &svc,
            Some("default"),
            "web",
            crate::store::Propagation::Background,
        )
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while e
        .store
        .get(&res("", "endpoints"), Some("default"), "web")
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints outlived their service"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn min_ready_seconds_holds_availability_back() {
    let e = env(ControllerConfig::default());
    let deploys = res("apps", "deployments");
    let mut d = deployment("nginx:1", 1, json!({}));
    d["spec"]["minReadySeconds"] = json!(2);
    e.store.create(&deploys, d).unwrap();
    let started = tokio::time::Instant::now();
    wait_for(&e.store, &deploys, "default", "web", "ready", |d| {
        d["status"]["readyReplicas"] == 1
    })
    .await;
    let d = e.store.get(&deploys, Some("default"), "web").unwrap();
    assert!(
        !deployment_done(&d),
        "available before minReadySeconds: {d:#}"
    );
    wait_for(
        &e.store,
        &deploys,
        "default",
        "web",
        "available",
        deployment_done,
    )
    .await;
    // Ready after ~50 ms, available a second later (second-resolution timestamps: allow slack).
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}
