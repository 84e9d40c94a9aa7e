//! The resource registry: every kind the simulated API server serves (built-in kinds and the
//! kinds of established CustomResourceDefinitions), with the names and flags discovery needs.

use serde_json::Value;
use std::cmp::Ordering;

/// Identifies a stored resource: API group (empty for core) and plural resource name.
/// Versions of one group share storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group, `""` for the core group.
    pub group: String,
    /// Plural resource name, e.g. `deployments`.
    pub resource: String,
}

impl ResourceKey {
    /// `ResourceKey::new("apps", "deployments")`.
    pub fn new(group: &str, resource: &str) -> Self {
        ResourceKey {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::error::qualified(&self.group, &self.resource))
    }
}

/// Everything the server knows about one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    /// API group (`""` = core).
    pub group: String,
    /// Served versions, preferred version first.
    pub versions: Vec<String>,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// List kind, e.g. `DeploymentList`.
    pub list_kind: String,
    /// Plural, e.g. `deployments`.
    pub plural: String,
    /// Singular, e.g. `deployment`.
    pub singular: String,
    /// Short names, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Namespaced (true) or cluster-scoped (false).
    pub namespaced: bool,
    /// Has a `status` subresource (main writes ignore status; status writes ignore the rest).
    pub status: bool,
    /// Has a `scale` subresource.
    pub scale: bool,
    /// Defined by a CustomResourceDefinition.
    pub custom: bool,
    /// Tracks `metadata.generation` (bumped on spec changes).
    pub generation: bool,
    /// A CRD's `additionalPrinterColumns` (name, type, JSONPath) for `kubectl get` tables.
    pub printer_columns: Vec<(String, String, String)>,
}

impl ResourceInfo {
    /// The storage key of this resource.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.plural)
    }

    /// The preferred version.
    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// `group/version` (or `version` for the core group) for the given version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// The verbs served on the resource.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// The set of served resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    versions: &[&str],
    kind: &str,
    plural: &str,
    short: &[&str],
    namespaced: bool,
    status: bool,
    scale: bool,
    generation: bool,
) -> ResourceInfo {
    let all = matches!(
        plural,
        "pods"
            | "services"
            | "deployments"
            | "replicasets"
            | "statefulsets"
            | "daemonsets"
            | "jobs"
            | "cronjobs"
            | "horizontalpodautoscalers"
    );
    ResourceInfo {
        group: group.into(),
        versions: versions.iter().map(|v| v.to_string()).collect(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if all { vec!["all".into()] } else { vec![] },
        namespaced,
        status,
        scale,
        custom: false,
        generation,
        printer_columns: Vec::new(),
    }
}

impl Registry {
    /// The built-in kinds of a v1.35 API server that kubesim serves.
    pub fn builtin() -> Self {
        let v1 = &["v1"][..];
        let r = vec![
            builtin(
                "",
                v1,
                "Namespace",
                "namespaces",
                &["ns"],
                false,
                true,
                false,
                false,
            ),
            builtin("", v1, "Secret", "secrets", &[], true, false, false, false),
            builtin(
                "",
                v1,
                "ConfigMap",
                "configmaps",
                &["cm"],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "",
                v1,
                "Service",
                "services",
                &["svc"],
                true,
                true,
                false,
                false,
            ),
            builtin(
                "",
                v1,
                "ServiceAccount",
                "serviceaccounts",
                &["sa"],
                true,
                false,
                false,
                false,
            ),
            builtin("", v1, "Pod", "pods", &["po"], true, true, false, true),
            builtin(
                "",
                v1,
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                &["pvc"],
                true,
                true,
                false,
                false,
            ),
            builtin(
                "",
                v1,
                "PersistentVolume",
                "persistentvolumes",
                &["pv"],
                false,
                true,
                false,
                false,
            ),
            builtin(
                "",
                v1,
                "Endpoints",
                "endpoints",
                &["ep"],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "",
                v1,
                "Event",
                "events",
                &["ev"],
                true,
                false,
                false,
                false,
            ),
            builtin("", v1, "Node", "nodes", &["no"], false, true, false, false),
            builtin(
                "",
                v1,
                "ResourceQuota",
                "resourcequotas",
                &["quota"],
                true,
                true,
                false,
                false,
            ),
            builtin(
                "",
                v1,
                "LimitRange",
                "limitranges",
                &["limits"],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "apps",
                v1,
                "Deployment",
                "deployments",
                &["deploy"],
                true,
                true,
                true,
                true,
            ),
            builtin(
                "apps",
                v1,
                "ReplicaSet",
                "replicasets",
                &["rs"],
                true,
                true,
                true,
                true,
            ),
            builtin(
                "apps",
                v1,
                "StatefulSet",
                "statefulsets",
                &["sts"],
                true,
                true,
                true,
                true,
            ),
            builtin(
                "apps",
                v1,
                "DaemonSet",
                "daemonsets",
                &["ds"],
                true,
                true,
                false,
                true,
            ),
            builtin(
                "apps",
                v1,
                "ControllerRevision",
                "controllerrevisions",
                &[],
                true,
                false,
                false,
                false,
            ),
            builtin("batch", v1, "Job", "jobs", &[], true, true, false, true),
            builtin(
                "batch",
                v1,
                "CronJob",
                "cronjobs",
                &["cj"],
                true,
                true,
                false,
                true,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                v1,
                "Role",
                "roles",
                &[],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                v1,
                "RoleBinding",
                "rolebindings",
                &[],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                v1,
                "ClusterRole",
                "clusterroles",
                &[],
                false,
                false,
                false,
                false,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                v1,
                "ClusterRoleBinding",
                "clusterrolebindings",
                &[],
                false,
                false,
                false,
                false,
            ),
            builtin(
                "networking.k8s.io",
                v1,
                "Ingress",
                "ingresses",
                &["ing"],
                true,
                true,
                false,
                true,
            ),
            builtin(
                "networking.k8s.io",
                v1,
                "NetworkPolicy",
                "networkpolicies",
                &["netpol"],
                true,
                false,
                false,
                true,
            ),
            builtin(
                "networking.k8s.io",
                v1,
                "IngressClass",
                "ingressclasses",
                &[],
                false,
                false,
                false,
                false,
            ),
            builtin(
                "policy",
                v1,
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                &["pdb"],
                true,
                true,
                false,
                true,
            ),
            builtin(
                "apiextensions.k8s.io",
                v1,
                "CustomResourceDefinition",
                "customresourcedefinitions",
                &["crd", "crds"],
                false,
                true,
                false,
                true,
            ),
            builtin(
                "admissionregistration.k8s.io",
                v1,
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                &[],
                false,
                false,
                false,
                true,
            ),
            builtin(
                "admissionregistration.k8s.io",
                v1,
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                &[],
                false,
                false,
                false,
                true,
            ),
            builtin(
                "coordination.k8s.io",
                v1,
                "Lease",
                "leases",
                &[],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "storage.k8s.io",
                v1,
                "StorageClass",
                "storageclasses",
                &["sc"],
                false,
                false,
                false,
                false,
            ),
            builtin(
                "autoscaling",
                &["v2", "v1"],
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                &["hpa"],
                true,
                true,
                false,
                true,
            ),
            builtin(
                "scheduling.k8s.io",
                v1,
                "PriorityClass",
                "priorityclasses",
                &["pc"],
                false,
                false,
                false,
                false,
            ),
            builtin(
                "discovery.k8s.io",
                v1,
                "EndpointSlice",
                "endpointslices",
                &[],
                true,
                false,
                false,
                false,
            ),
            builtin(
                "events.k8s.io",
                v1,
                "Event",
                "events",
                &["ev"],
                true,
                false,
                false,
                false,
            ),
        ];
        Registry { resources: r }
    }

    /// Every served resource, core first, then groups in registration order.
    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resource stored under `key`.
    pub fn get(&self, key: &ResourceKey) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == key.group && r.plural == key.resource)
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| {
            r.group == group && r.plural == plural && r.versions.iter().any(|v| v == version)
        })
    }

    /// The resource for an `apiVersion` and `kind` (e.g. `apps/v1`, `Deployment`).
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        let (group, version) = split_api_version(api_version);
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind && r.versions.iter().any(|v| v == version))
    }

    /// Groups in order with their served versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    for v in &r.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                    vs.sort_by(|a, b| compare_versions(a, b));
                }
                None => out.push((r.group.clone(), r.versions.clone())),
            }
        }
        out
    }

    /// Adds or replaces the resource a CRD defines. Returns an error text when the CRD is not
    /// usable (missing names).
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let info = crd_resource(crd)?;
        self.resources
            .retain(|r| !(r.group == info.group && r.plural == info.plural));
        self.resources.push(info);
        Ok(())
    }

    /// Stops serving a CRD's resource.
    pub fn unregister(&mut self, key: &ResourceKey) {
        self.resources
            .retain(|r| !(r.custom && r.group == key.group && r.plural == key.resource));
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (`""`, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u32, u8, u32)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: u32 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 3, 0));
        }
        let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        Some((major, stage, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource a CRD object defines.
pub fn crd_resource(crd: &Value) -> Result<ResourceInfo, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group is required")?;
    let names = &spec["names"];
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind is required")?;
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural is required")?;
    let mut versions: Vec<String> = Vec::new();
    let mut status = false;
    let mut scale = false;
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        if let Some(name) = v["name"].as_str() {
            versions.push(name.to_string());
        }
        if v["subresources"]["status"].is_object() {
            status = true;
        }
        if v["subresources"]["scale"].is_object() {
            scale = true;
        }
    }
    if versions.is_empty() {
        return Err("spec.versions must contain at least one served version".into());
    }
    versions.sort_by(|a, b| compare_versions(a, b));
    let preferred = versions[0].clone();
    let printer_columns = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str() == Some(preferred.as_str()))
        .and_then(|v| v["additionalPrinterColumns"].as_array())
        .into_iter()
        .flatten()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_string(),
                c["type"].as_str().unwrap_or("string").to_string(),
                c["jsonPath"].as_str()?.to_string(),
            ))
        })
        .collect();
    Ok(ResourceInfo {
        group: group.to_string(),
        versions,
        kind: kind.to_string(),
        list_kind: names["listKind"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("{kind}List")),
        plural: plural.to_string(),
        singular: names["singular"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        short_names: str_list(&names["shortNames"]),
        categories: str_list(&names["categories"]),
        namespaced: spec["scope"].as_str() != Some("Cluster"),
        status,
        scale,
        custom: true,
        generation: true,
        printer_columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_priority_orders_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v2beta1", "v1", "foo", "v1beta2", "v2"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_defines_a_resource() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Cluster",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
            "versions": [{"name": "v1beta1", "served": true}, {"name": "v1", "served": true,
                "subresources": {"status": {}}}, {"name": "v0", "served": false}]}});
        let mut reg = Registry::builtin();
        reg.register_crd(&crd).unwrap();
        let info = reg.for_kind("example.com/v1", "Widget").unwrap();
        assert_eq!(info.versions, vec!["v1", "v1beta1"]);
        assert!(!info.namespaced);
        assert!(info.status);
        assert!(reg.lookup("example.com", "v0", "widgets").is_none());
        reg.unregister(&ResourceKey::new("example.com", "widgets"));
        assert!(reg.for_kind("example.com/v1", "Widget").is_none());
        assert!(reg.for_kind("apps/v1", "Deployment").is_some());
    }
}
