//! kubectl against kubesim: server-side apply, get -o yaml/json, wait for conditions, delete.

mod common;

use common::Sim;

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  colour: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: REPLICAS
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/web:1
---
apiVersion: batch/v1
kind: Job
metadata:
  name: once
  namespace: demo
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: once
          image: registry.example/once:1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_get_wait_delete() {
    let sim = Sim::start().await;
    let manifest = MANIFEST.replace("REPLICAS", "1");
    let out = sim
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], &manifest)
        .await
        .ok();
    for line in [
        "namespace/demo serverside-applied",
        "configmap/settings serverside-applied",
        "deployment.apps/web serverside-applied",
        "job.batch/once serverside-applied",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    let cm = sim
        .get("", "configmaps", "demo", "settings")
        .expect("configmap applied");
    assert_eq!(cm["data"]["colour"], "blue");

    let out = sim
        .kubectl(&[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "-n",
            "demo",
            "--timeout=30s",
        ])
        .await
        .ok();
    assert!(
        out.stdout.contains("deployment.apps/web condition met"),
        "{out}"
    );
    let out = sim
        .kubectl(&[
            "wait",
            "--for=condition=Complete",
            "job/once",
            "-n",
            "demo",
            "--timeout=30s",
        ])
        .await
        .ok();
    assert!(out.stdout.contains("job.batch/once condition met"), "{out}");

    let out = sim
        .kubectl(&["get", "deployment", "web", "-n", "demo", "-o", "yaml"])
        .await
        .ok();
    for needle in [
        "kind: Deployment",
        "name: web",
        "readyReplicas: 1",
        "type: Available",
    ] {
        assert!(out.stdout.contains(needle), "missing {needle:?}:\n{out}");
    }
    let pods = sim
        .kubectl(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"])
        .await
        .ok()
        .json();
    let items = pods["items"].as_array().expect("pod list");
    assert_eq!(items.len(), 1, "{pods:#}");
    assert_eq!(items[0]["status"]["phase"], "Running");

    // Re-apply with more replicas: the same objects change in place.
    let manifest = MANIFEST.replace("REPLICAS", "3");
    sim.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &manifest)
        .await
        .ok();
    sim.kubectl(&[
        "wait",
        "--for=jsonpath={.status.readyReplicas}=3",
        "deployment/web",
        "-n",
        "demo",
        "--timeout=30s",
    ])
    .await
    .ok();
    let d = sim.get("apps", "deployments", "demo", "web").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);

    // A new image through kubectl: rollout status follows it, history lists both revisions,
    // undo goes back to the first ReplicaSet.
    sim.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:2",
        "-n",
        "demo",
    ])
    .await
    .ok();
    let out = sim
        .kubectl(&[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "demo",
            "--timeout=30s",
        ])
        .await
        .ok();
    assert!(
        out.stdout
            .contains(r#"deployment "web" successfully rolled out"#),
        "{out}"
    );
    let out = sim
        .kubectl(&["rollout", "history", "deployment/web", "-n", "demo"])
        .await
        .ok();
    let revisions: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2"], "{out}");
    sim.kubectl(&["rollout", "undo", "deployment/web", "-n", "demo"])
        .await
        .ok();
    sim.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "demo",
        "--timeout=30s",
    ])
    .await
    .ok();
    let d = sim.get("apps", "deployments", "demo", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/web:1"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    let out = sim
        .kubectl(&[
            "delete",
            "deployment",
            "web",
            "-n",
            "demo",
            "--wait=true",
            "--timeout=30s",
        ])
        .await
        .ok();
    assert!(
        out.stdout.contains(r#"deployment.apps "web" deleted"#),
        "{out}"
    );
    assert!(sim.get("apps", "deployments", "demo", "web").is_none());
    let out = sim
        .kubectl(&["get", "deployment", "web", "-n", "demo"])
        .await
        .failed();
    assert!(
        out.stderr.contains(r#"deployments.apps "web" not found"#),
        "{out}"
    );
    // The ReplicaSet and pods go with their owner.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sim
        .list("", "pods", "demo")
        .iter()
        .all(|p| p["metadata"]["labels"]["app"] != "web")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods of the deleted deployment remain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = sim
        .kubectl(&["delete", "namespace", "demo", "--timeout=30s"])
        .await
        .ok();
    assert!(out.stdout.contains(r#"namespace "demo" deleted"#), "{out}");
}
