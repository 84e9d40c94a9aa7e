//! Real helm 4 and helm 3 install, upgrade, roll back and uninstall a chart holding every
//! workload kind helm waits on, against kubesim, and report what happened.

mod common;

use common::{Helm, Sim, chart, condition, owner_uid};
use serde_json::Value;

fn deployment_ready(d: &Value, replicas: i64) -> bool {
    d["status"]["observedGeneration"] == d["metadata"]["generation"]
        && d["status"]["availableReplicas"] == replicas
        && d["status"]["updatedReplicas"] == replicas
        && condition(d, "Available").is_some_and(|c| c["status"] == "True")
        && condition(d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable")
}

/// Asserts that everything the chart made was ready when helm returned from a `--wait`.
fn assert_all_ready(sim: &Sim, replicas: i64, when: &str) {
    let d = sim
        .get("apps", "deployments", "app", "rel-web")
        .expect("deployment");
    assert!(
        deployment_ready(&d, replicas),
        "{when}: deployment not ready: {d:#}"
    );
    let s = sim
        .get("apps", "statefulsets", "app", "rel-db")
        .expect("statefulset");
    assert_eq!(s["status"]["readyReplicas"], 2, "{when}: {s:#}");
    assert_eq!(
        s["status"]["currentRevision"], s["status"]["updateRevision"],
        "{when}"
    );
    let ds = sim
        .get("apps", "daemonsets", "app", "rel-agent")
        .expect("daemonset");
    assert_eq!(ds["status"]["numberReady"], 1, "{when}: {ds:#}");
    let job = sim.get("batch", "jobs", "app", "rel-setup").expect("job");
    assert!(
        condition(&job, "Complete").is_some_and(|c| c["status"] == "True"),
        "{when}: job not complete: {job:#}"
    );
    let pvc = sim
        .get("", "persistentvolumeclaims", "app", "rel-data")
        .expect("pvc");
    assert_eq!(pvc["status"]["phase"], "Bound", "{when}");
    let svc = sim.get("", "services", "app", "rel-web").expect("service");
    assert!(svc["spec"]["clusterIP"].is_string(), "{when}: {svc:#}");
    assert!(
        sim.get("", "serviceaccounts", "app", "rel-sa").is_some(),
        "{when}"
    );
}

fn web_replica_sets(sim: &Sim, deploy: &Value) -> Vec<Value> {
    let uid = deploy["metadata"]["uid"].as_str().unwrap();
    sim.list("apps", "replicasets", "app")
        .into_iter()
        .filter(|rs| owner_uid(rs) == Some(uid))
        .collect()
}

/// Extra flags for install and for upgrade (helm 4's apply mode).
#[derive(Clone, Copy)]
struct Mode {
    install: &'static [&'static str],
    upgrade: &'static [&'static str],
}

const DEFAULT: Mode = Mode {
    install: &[],
    upgrade: &[],
};

async fn lifecycle(v: Helm, mode: Mode) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    let with_wait = |args: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(v.wait_flags().iter().map(|s| s.to_string()));
        a.extend(["--timeout".into(), "60s".into()]);
        a
    };
    let helm = |args: Vec<String>| {
        let sim = &sim;
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            sim.helm(v, &refs).await
        }
    };

    // Install, waiting for readiness.
    let mut install = vec!["install", "rel", &chart, "-n", "app", "--create-namespace"];
    install.extend(mode.install);
    helm(with_wait(&install)).await.ok();
    let writes = |sim: &Sim| {
        let w: Vec<(String, String)> = sim
            .cluster
            .controls()
            .requests_where(|r| {
                r.resource == "deployments" && matches!(r.verb.as_str(), "create" | "patch")
            })
            .into_iter()
            .map(|r| (r.verb, r.content_type))
            .collect();
        sim.cluster.controls().reset_requests();
        w
    };
    let client_side = v == Helm::V3 || mode.install.contains(&"--server-side=false");
    let expected = if client_side {
        ("create".to_owned(), "application/json".to_owned())
    } else {
        (
            "patch".to_owned(),
            "application/apply-patch+yaml".to_owned(),
        )
    };
    let w = writes(&sim);
    assert!(
        w.iter()
            .any(|(verb, ct)| verb == &expected.0 && ct.starts_with(&expected.1)),
        "install wrote the Deployment with {w:?}, expected {expected:?}"
    );
    assert_all_ready(&sim, 1, "after install");
    let d1 = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    let gen1 = d1["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(web_replica_sets(&sim, &d1).len(), 1);
    let st = helm(vec![
        "status".into(),
        "rel".into(),
        "-n".into(),
        "app".into(),
        "-o".into(),
        "json".into(),
    ])
    .await
    .ok()
    .json();
    assert_eq!(st["info"]["status"], "deployed");
    assert_eq!(st["version"], 1);

    // Upgrade with changed values: a new ReplicaSet, generation bumped, waited for again.
    let mut upgrade = vec![
        "upgrade",
        "rel",
        &chart,
        "-n",
        "app",
        "--set",
        "image.tag=2.0",
        "--set",
        "replicas=2",
        "--set",
        "message=bye",
        "--set-string",
        "dbTag=16",
        "--set-string",
        "agentTag=2",
    ];
    upgrade.extend(mode.upgrade);
    helm(with_wait(&upgrade)).await.ok();
    let w = writes(&sim);
    let upgrade_ct =
        if mode.upgrade.contains(&"--server-side=true") || (v == Helm::V4 && !client_side) {
            "application/apply-patch+yaml"
        } else {
            "application/strategic-merge-patch+json"
        };
    assert!(
        w.iter()
            .any(|(verb, ct)| verb == "patch" && ct.starts_with(upgrade_ct)),
        "upgrade wrote the Deployment with {w:?}, expected a {upgrade_ct} patch"
    );
    assert_all_ready(&sim, 2, "after upgrade");
    let d2 = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    assert!(
        d2["metadata"]["generation"].as_i64().unwrap() > gen1,
        "generation not bumped: {gen1} -> {}",
        d2["metadata"]["generation"]
    );
    assert_eq!(
        d2["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/web:2.0"
    );
    assert_eq!(
        d2["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let rses = web_replica_sets(&sim, &d2);
    assert_eq!(rses.len(), 2, "one ReplicaSet per template: {rses:#?}");
    let old = rses
        .iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
        .expect("revision 1 ReplicaSet kept");
    assert_eq!(old["spec"]["replicas"], 0, "old ReplicaSet scaled down");
    let cm = sim.get("", "configmaps", "app", "rel-config").unwrap();
    assert_eq!(cm["data"]["message"], "bye");
    // The StatefulSet and DaemonSet rolled their pods to the new template before helm returned.
    let sts = sim.get("apps", "statefulsets", "app", "rel-db").unwrap();
    let update_revision = sts["status"]["updateRevision"].as_str().unwrap().to_owned();
    let pods = sim.list("", "pods", "app");
    let images = |app: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .map(|p| {
                (
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    p["metadata"]["labels"]["controller-revision-hash"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let db = images("rel-db");
    assert_eq!(db.len(), 2, "{db:?}");
    for (image, rev) in &db {
        assert_eq!(image, "registry.example/db:16");
        assert_eq!(rev, &update_revision);
    }
    let agent = images("rel-agent");
    assert_eq!(agent.len(), 1, "{agent:?}");
    assert_eq!(agent[0].0, "registry.example/agent:2");

    // Roll back to revision 1: the first ReplicaSet comes back as revision 3.
    helm(with_wait(&["rollback", "rel", "1", "-n", "app"]))
        .await
        .ok();
    assert_all_ready(&sim, 1, "after rollback");
    let d3 = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    assert_eq!(
        d3["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/web:1.0"
    );
    assert_eq!(
        d3["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        web_replica_sets(&sim, &d3).len(),
        2,
        "rollback reuses the old ReplicaSet"
    );
    assert_eq!(
        sim.get("", "configmaps", "app", "rel-config").unwrap()["data"]["message"],
        "hello"
    );

    // What helm reports.
    let history = helm(vec![
        "history".into(),
        "rel".into(),
        "-n".into(),
        "app".into(),
        "-o".into(),
        "json".into(),
    ])
    .await
    .ok()
    .json();
    let statuses: Vec<(i64, String)> = history
        .as_array()
        .expect("history is a list")
        .iter()
        .map(|h| {
            (
                h["revision"].as_i64().unwrap(),
                h["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (1, "superseded".into()),
            (2, "superseded".into()),
            (3, "deployed".into())
        ]
    );
    assert_eq!(history[2]["description"], "Rollback to 1");
    let list = helm(vec!["list".into(), "-A".into(), "-o".into(), "json".into()])
        .await
        .ok()
        .json();
    let list = list.as_array().expect("list is a list");
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["name"], "rel");
    assert_eq!(list[0]["namespace"], "app");
    assert_eq!(list[0]["status"], "deployed");
    assert_eq!(list[0]["revision"], "3");

    // Uninstall (keeping history), waiting until everything is gone.
    let wait = if v == Helm::V4 {
        "--wait=watcher"
    } else {
        "--wait"
    };
    helm(vec![
        "uninstall".into(),
        "rel".into(),
        "-n".into(),
        "app".into(),
        "--keep-history".into(),
        wait.into(),
        "--timeout".into(),
        "60s".into(),
    ])
    .await
    .ok();
    for (g, r, n) in [
        ("apps", "deployments", "rel-web"),
        ("apps", "statefulsets", "rel-db"),
        ("apps", "daemonsets", "rel-agent"),
        ("batch", "jobs", "rel-setup"),
        ("", "configmaps", "rel-config"),
        ("", "services", "rel-web"),
        ("", "persistentvolumeclaims", "rel-data"),
    ] {
        assert!(
            sim.get(g, r, "app", n).is_none(),
            "{r}/{n} left after uninstall --wait"
        );
    }
    let st = helm(vec![
        "status".into(),
        "rel".into(),
        "-n".into(),
        "app".into(),
        "-o".into(),
        "json".into(),
    ])
    .await
    .ok()
    .json();
    assert_eq!(st["info"]["status"], "uninstalled");
    let list = helm(vec!["list".into(), "-A".into(), "-o".into(), "json".into()])
        .await
        .ok()
        .json();
    match v {
        // helm 3 lists only deployed and failed releases by default.
        Helm::V3 => assert_eq!(list, serde_json::json!([])),
        // helm 4 lists releases in every state by default.
        Helm::V4 => {
            let statuses: Vec<&str> = list
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|r| r["status"].as_str())
                .collect();
            assert_eq!(statuses, ["uninstalled"]);
        }
    }
    let list = helm(vec![
        "list".into(),
        "-A".into(),
        "--uninstalled".into(),
        "-o".into(),
        "json".into(),
    ])
    .await
    .ok()
    .json();
    assert_eq!(list[0]["status"], "uninstalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_rollback_uninstall_helm4() {
    lifecycle(Helm::V4, DEFAULT).await;
}

/// helm 4 with client-side apply (POST, then strategic-merge patches), switching the release
/// to server-side apply on upgrade (a JSON patch on managedFields, then apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_client_side_then_upgrade_server_side_helm4() {
    lifecycle(
        Helm::V4,
        Mode {
            install: &["--server-side=false"],
            upgrade: &["--server-side=true"],
        },
    )
    .await;
}

/// helm 4 with client-side apply throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_rollback_uninstall_client_side_helm4() {
    lifecycle(
        Helm::V4,
        Mode {
            install: &["--server-side=false"],
            upgrade: &["--server-side=false"],
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_rollback_uninstall_helm3() {
    lifecycle(Helm::V3, DEFAULT).await;
}
