//! The cluster's name, for `{cluster}` in the profiles path, when `--cluster-name` is not given:
//! the Node annotation `cluster.x-k8s.io/cluster-name`, which Cluster API sets on every Node it
//! manages whatever the bootstrap provider (kubeadm, k3s, RKE2, Talos, EKS), then `clusterName`
//! of ConfigMap kube-system/kubeadm-config (kubeadm's bootstrap only).

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::ListParams;

/// The annotation Cluster API puts on the Nodes of a workload cluster.
pub const NODE_ANNOTATION: &str = "cluster.x-k8s.io/cluster-name";

/// The name from the Nodes, then from kubeadm's ConfigMap; `None` when neither says.
pub async fn discover(client: &kube::Client) -> Option<String> {
    match from_nodes(client).await {
        Some(name) => Some(name),
        None => from_kubeadm(client).await,
    }
}

async fn from_nodes(client: &kube::Client) -> Option<String> {
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    // Every Node of a Cluster API cluster carries the annotation: a few are enough.
    let nodes = match api.list_metadata(&ListParams::default().limit(20)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %crate::kube_api::error_text(&e), "cannot list Nodes for the {NODE_ANNOTATION} annotation");
            return None;
        }
    };
    name_from_annotations(nodes.iter().map(|n| {
        (
            n.metadata.name.as_deref().unwrap_or(""),
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NODE_ANNOTATION))
                .map(String::as_str),
        )
    }))
}

/// The cluster name the Nodes' annotations give: the value of the first Node by name that has
/// a non-empty one (Cluster API writes the same value on every Node of a cluster).
pub fn name_from_annotations<'a>(
    nodes: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<String> {
    let mut named: Vec<(&str, &str)> = nodes
        .filter_map(|(node, value)| Some((node, value?.trim())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    named.sort();
    named.first().map(|(_, v)| v.to_string())
}

/// `clusterName` of ConfigMap kube-system/kubeadm-config (key `ClusterConfiguration`), which
/// Cluster API's kubeadm bootstrap sets to the Cluster's name.
async fn from_kubeadm(client: &kube::Client) -> Option<String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "kube-system");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_node_by_name_with_the_annotation_names_the_cluster() {
        let nodes = [
            ("worker-b", Some("prod-eu")),
            ("cp-1", None),
            ("worker-a", Some(" prod-eu ")),
            ("worker-c", Some("")),
        ];
        assert_eq!(
            name_from_annotations(nodes.iter().copied()),
            Some("prod-eu".into())
        );
        assert_eq!(
            name_from_annotations([("n", None), ("m", Some("  "))].into_iter()),
            None
        );
        assert_eq!(name_from_annotations(std::iter::empty()), None);
    }
}
