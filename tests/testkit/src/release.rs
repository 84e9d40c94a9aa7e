//! helm's release records as helm's Secret storage driver keeps them in kubesim's store: the
//! one place tests read (and, to stage a crash, write) them.
//!
//! A record is a Secret of type `helm.sh/release.v1` labelled `owner=helm`, `name`,
//! `version` and `status`; its `data.release` is base64 (the Secret encoding) of base64 of the
//! gzipped release JSON.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};

use base64::Engine as _;
use kubesim::ResourceKey;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One release record (one revision of one release).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub namespace: String,
    pub name: String,
    pub revision: u64,
    pub status: String,
    /// The Secret's name (`sh.helm.release.v1.<name>.v<revision>`).
    pub secret: String,
}

impl Record {
    /// `pending-install`, `pending-upgrade`, `pending-rollback` or `uninstalling`: an
    /// operation that did not finish.
    pub fn is_pending(&self) -> bool {
        self.status.starts_with("pending") || self.status == "uninstalling"
    }
}

fn is_record(secret: &serde_json::Value) -> bool {
    secret["type"] == "helm.sh/release.v1" || secret["metadata"]["labels"]["owner"] == "helm"
}

/// Every release record in `namespace` (all namespaces for `None`), ordered by namespace,
/// release and revision.
pub fn records(cluster: &kubesim::Cluster, namespace: Option<&str>) -> Vec<Record> {
    let (secrets, _) = cluster
        .store()
        .list(&ResourceKey::new("", "secrets"), namespace);
    let mut v: Vec<Record> = secrets
        .iter()
        .filter(|s| is_record(s))
        .map(|s| {
            let labels = &s["metadata"]["labels"];
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            Record {
                namespace: text(&s["metadata"]["namespace"]),
                name: text(&labels["name"]),
                revision: labels["version"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                status: text(&labels["status"]),
                secret: text(&s["metadata"]["name"]),
            }
        })
        .collect();
    v.sort();
    v
}

/// (revision, status) of every record of release `name` in `namespace`, by revision.
pub fn history(cluster: &kubesim::Cluster, namespace: &str, name: &str) -> Vec<(u64, String)> {
    records(cluster, Some(namespace))
        .into_iter()
        .filter(|r| r.name == name)
        .map(|r| (r.revision, r.status))
        .collect()
}

/// The newest record of each release in the cluster.
pub fn latest(cluster: &kubesim::Cluster) -> Vec<Record> {
    let mut newest: BTreeMap<(String, String), Record> = BTreeMap::new();
    for r in records(cluster, None) {
        // Ordered by revision: the last one wins.
        newest.insert((r.namespace.clone(), r.name.clone()), r);
    }
    newest.into_values().collect()
}

/// Every record (any revision) of an operation that did not finish, as
/// `<namespace>/<secret> <status>`.
pub fn pending(cluster: &kubesim::Cluster) -> Vec<String> {
    records(cluster, None)
        .into_iter()
        .filter(Record::is_pending)
        .map(|r| format!("{}/{} {}", r.namespace, r.secret, r.status))
        .collect()
}

/// Decode a record Secret's `data.release` into the release JSON.
pub fn decode(secret: &serde_json::Value) -> Option<serde_json::Value> {
    let outer = B64.decode(secret["data"]["release"].as_str()?).ok()?;
    let gz = B64.decode(outer).ok()?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .ok()?;
    serde_json::from_str(&json).ok()
}

/// The record Secret helm would store for `release` (a release JSON with `name`,
/// `namespace`, `version` and `info.status`).
pub fn encode(release: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let name = release["name"].as_str().unwrap_or("");
    let version = release["version"].as_u64().unwrap_or(0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes())?;
    let helm_value = B64.encode(gz.finish()?);
    Ok(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {
            "name": format!("sh.helm.release.v1.{name}.v{version}"),
            "namespace": release["namespace"],
            "labels": {
                "owner": "helm", "name": name, "status": release["info"]["status"],
                "version": version.to_string()
            }
        },
        "data": {"release": B64.encode(helm_value)}
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_then_decode_gives_the_release_back() {
        let release = serde_json::json!({
            "name": "mesh", "namespace": "mesh", "version": 1,
            "info": {"status": "pending-install"}
        });
        let secret = super::encode(&release).unwrap();
        assert_eq!(secret["metadata"]["name"], "sh.helm.release.v1.mesh.v1");
        assert_eq!(secret["metadata"]["labels"]["version"], "1");
        assert_eq!(secret["metadata"]["labels"]["status"], "pending-install");
        assert_eq!(super::decode(&secret), Some(release));
    }
}
