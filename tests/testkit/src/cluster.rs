//! kubesim prepared for strata: started with its kubeconfig written and the agent's
//! namespace created; kube-rs clients for it; and what the agent left in it (the status
//! ConfigMap, Events, the writes the API server saw).

use std::path::Path;

use kubesim::ResourceKey;

/// The agent's own namespace in the tests.
pub const AGENT_NS: &str = "strata-system";

/// The ConfigMap the agent writes its status into (in [`AGENT_NS`]).
pub const STATUS_CONFIGMAP: &str = "strata-status";

/// Start kubesim with `config`, write its kubeconfig to `kubeconfig` and create
/// [`AGENT_NS`].
pub async fn start(config: kubesim::Config, kubeconfig: &Path) -> anyhow::Result<kubesim::Cluster> {
    let cluster = kubesim::start(config).await?;
    cluster.write_kubeconfig(kubeconfig)?;
    cluster.store().create(
        &ResourceKey::new("", "namespaces"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NS}}),
    )?;
    Ok(cluster)
}

/// kube-rs's configuration from a kubeconfig's YAML.
pub async fn kube_config_from_yaml(yaml: &str) -> kube::Config {
    let kc = kube::config::Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config")
}

/// kube-rs's configuration for the cluster (from its kubeconfig).
pub async fn kube_config(cluster: &kubesim::Cluster) -> kube::Config {
    kube_config_from_yaml(&cluster.kubeconfig_yaml()).await
}

/// A kube-rs client for the cluster.
pub async fn kube_client(cluster: &kubesim::Cluster) -> kube::Client {
    kube::Client::try_from(kube_config(cluster).await).expect("client")
}

/// An object from the store, if it exists.
pub fn get(
    cluster: &kubesim::Cluster,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Option<serde_json::Value> {
    cluster
        .store()
        .get(&ResourceKey::new("", resource), Some(namespace), name)
}

/// The status the agent wrote into its ConfigMap.
pub fn configmap_status(cluster: &kubesim::Cluster) -> Option<serde_json::Value> {
    let cm = get(cluster, "configmaps", AGENT_NS, STATUS_CONFIGMAP)?;
    serde_json::from_str(cm["data"]["status.json"].as_str()?).ok()
}

/// The Events in `namespace` as `reason:message`.
pub fn events(cluster: &kubesim::Cluster, namespace: &str) -> Vec<String> {
    let (events, _) = cluster
        .store()
        .list(&ResourceKey::new("", "events"), Some(namespace));
    events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Writes (create/update/patch/delete) the API server saw, in order.
pub fn writes(cluster: &kubesim::Cluster) -> Vec<kubesim::RequestRecord> {
    cluster.controls().requests_where(is_write)
}

/// Whether a request is a write (create/update/patch/delete/deletecollection).
pub fn is_write(r: &kubesim::RequestRecord) -> bool {
    matches!(
        r.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Whether a request writes into the given release namespace (objects in it, or the
/// Namespace object itself).
pub fn touches_namespace(r: &kubesim::RequestRecord, ns: &str) -> bool {
    r.namespace == ns || (r.resource == "namespaces" && r.name == ns)
}
