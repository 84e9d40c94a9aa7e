//! Reads arbitrary objects (a release's manifest objects) from the cluster with kube-rs'
//! dynamic API, resolving each kind through discovery once and caching the answer.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

/// One object of a release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl ObjectRef {
    /// From a manifest object (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`);
    /// `None` when one of the first three is missing.
    pub fn from_manifest(obj: &serde_json::Value) -> Option<Self> {
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
        Some(Self {
            api_version: s(&obj["apiVersion"])?,
            kind: s(&obj["kind"])?,
            name: s(&obj["metadata"]["name"])?,
            namespace: s(&obj["metadata"]["namespace"]).filter(|n| !n.is_empty()),
        })
    }

    fn gvk(&self) -> GroupVersionKind {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        GroupVersionKind::gvk(group, version, &self.kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find kind {kind} ({api_version}) in the cluster's API discovery: {source}")]
    Discovery {
        api_version: String,
        kind: String,
        source: kube::Error,
    },
    #[error("reading {kind} {name} failed: {source}")]
    Get {
        kind: String,
        name: String,
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Cached dynamic reader.
pub struct ClusterReader {
    client: kube::Client,
    kinds: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
}

impl ClusterReader {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// The client it reads with.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kind's API resource and scope, through discovery (cached once found).
    pub(crate) async fn resolve(&self, r: &ObjectRef) -> Result<(ApiResource, ApiCapabilities)> {
        let gvk = r.gvk();
        if let Some(hit) = self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&gvk)
        {
            return Ok(hit.clone());
        }
        // A moment of unavailable API is retried in place; a kind not served is an answer.
        let retry = crate::kube_api::InPlaceRetry::default();
        let found = crate::kube_api::retry_unavailable(&retry, || {
            kube::discovery::pinned_kind(&self.client, &gvk)
        })
        .await
        .map_err(|source| Error::Discovery {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            source,
        })?;
        self.kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(gvk, found.clone());
        Ok(found)
    }

    /// The object as the cluster has it, `None` when it does not exist (yet). Namespaced
    /// objects without a namespace are looked up in `default_namespace` (helm installs them
    /// into the release namespace).
    pub async fn get(
        &self,
        r: &ObjectRef,
        default_namespace: &str,
    ) -> Result<Option<serde_json::Value>> {
        let (ar, caps) = self.resolve(r).await?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
            Scope::Namespaced => Api::namespaced_with(
                self.client.clone(),
                r.namespace.as_deref().unwrap_or(default_namespace),
                &ar,
            ),
        };
        let obj = api.get_opt(&r.name).await.map_err(|source| Error::Get {
            kind: r.kind.clone(),
            name: r.name.clone(),
            source,
        })?;
        Ok(obj.map(|o| {
            serde_json::to_value(with_type(o, &r.api_version, &r.kind))
                .unwrap_or(serde_json::Value::Null)
        }))
    }
}

/// The object with its `apiVersion` and `kind` set: DynamicObject drops them when the server
/// omits them (list items), and readiness rules dispatch on kind.
pub(crate) fn with_type(mut o: DynamicObject, api_version: &str, kind: &str) -> DynamicObject {
    o.types = Some(kube::api::TypeMeta {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    });
    o
}

/// A kind with more objects than this in one namespace is read with one LIST instead of a GET
/// per object ([`ClusterReader::read_all`]).
pub const LIST_ABOVE: usize = 3;

/// An object as [`ClusterReader::read_all`] found it: its namespace (`None` for a
/// cluster-scoped kind) and the live object (`None`: the cluster does not have it).
pub type Found = (Option<String>, Option<serde_json::Value>);

impl ClusterReader {
    /// Every object of `objects` as the cluster has it, in the same order. Objects are
    /// grouped by kind and namespace: a group of up to [`LIST_ABOVE`] objects costs one GET
    /// per object, a larger one a single LIST of that kind in that namespace (cluster-wide for
    /// cluster-scoped kinds). Namespaced objects without a namespace are in
    /// `default_namespace`.
    pub async fn read_all(
        &self,
        objects: &[ObjectRef],
        default_namespace: &str,
    ) -> Result<Vec<Found>> {
        // (kind, namespace as written) -> indexes into `objects`, in manifest order.
        type Group = ((GroupVersionKind, Option<String>), Vec<usize>);
        let mut groups: Vec<Group> = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            let key = (o.gvk(), o.namespace.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        let mut found: Vec<Found> = vec![(None, None); objects.len()];
        for (_, members) in groups {
            let first = &objects[members[0]];
            let (ar, caps) = self.resolve(first).await?;
            let namespace = match caps.scope {
                Scope::Cluster => None,
                Scope::Namespaced => Some(
                    first
                        .namespace
                        .clone()
                        .unwrap_or_else(|| default_namespace.to_string()),
                ),
            };
            if members.len() <= LIST_ABOVE {
                for i in members {
                    found[i] = (
                        namespace.clone(),
                        self.get(&objects[i], default_namespace).await?,
                    );
                }
                continue;
            }
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Cluster => Api::all_with(self.client.clone(), &ar),
                Scope::Namespaced => Api::namespaced_with(
                    self.client.clone(),
                    first.namespace.as_deref().unwrap_or(default_namespace),
                    &ar,
                ),
            };
            let list = api
                .list(&Default::default())
                .await
                .map_err(|source| Error::Get {
                    kind: first.kind.clone(),
                    name: "(list)".into(),
                    source,
                })?;
            let mut by_name: HashMap<String, DynamicObject> = list
                .items
                .into_iter()
                .filter_map(|o| Some((o.metadata.name.clone()?, o)))
                .collect();
            for i in members {
                let live = by_name.remove(&objects[i].name).map(|o| {
                    serde_json::to_value(with_type(o, &objects[i].api_version, &objects[i].kind))
                        .unwrap_or(serde_json::Value::Null)
                });
                found[i] = (namespace.clone(), live);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_refs_come_from_manifest_objects() {
        let obj = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"}
        });
        let r = ObjectRef::from_manifest(&obj).unwrap();
        assert_eq!(r.name, "web");
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        let gvk = r.gvk();
        assert_eq!((gvk.group.as_str(), gvk.version.as_str()), ("apps", "v1"));
        let core = ObjectRef::from_manifest(&serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}
        }))
        .unwrap();
        assert_eq!(core.gvk().group, "");
        assert_eq!(core.namespace, None);
        assert!(ObjectRef::from_manifest(&serde_json::json!({"kind": "X"})).is_none());
    }
}
