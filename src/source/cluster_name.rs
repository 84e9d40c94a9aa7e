//! The cluster's name, for `{cluster}` in the profiles path, when `--cluster-name` is not given.

/// `clusterName` of ConfigMap kube-system/kubeadm-config (key `ClusterConfiguration`), which
/// Cluster API's kubeadm bootstrap sets to the Cluster's name.
pub async fn discover(client: &kube::Client) -> Option<String> {
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "kube-system");
    let cm = match api.get_opt("kubeadm-config").await {
        Ok(cm) => cm?,
        Err(e) => {
            tracing::warn!(error = %crate::kube_api::error_text(&e), "cannot read kube-system/kubeadm-config for the cluster name");
            return None;
        }
    };
    let text = cm.data?.get("ClusterConfiguration")?.clone();
    let v: serde_json::Value = serde_saphyr::from_str(&text).ok()?;
    v["clusterName"]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
