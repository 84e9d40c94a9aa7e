//! Observed release state without a helm process: reads helm's release storage (Secrets of
//! type `helm.sh/release.v1` labelled `owner=helm,name=RELEASE`) through kube-rs, decodes
//! `data.release` (base64 of gzip of JSON; the API adds one more base64 layer that kube-rs
//! removes) and picks the highest revision. Reads only, with one exception: when strata
//! recovers a release left pending by an interrupted helm (and holds the Lease), it marks the
//! interrupted record `failed` ([`mark_failed`], as Flux's helm-controller unlocks a stale
//! release), so that no record stays pending after the recovery.

use std::io::Read;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use strata_core::reconcile::{ObservedRelease, ReleaseStatus};

/// Largest decompressed release record accepted.
pub const MAX_RECORD: u64 = 64 * 1024 * 1024;

/// Errors of reading release storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "could not list helm release Secrets of {namespace}/{release}: {source}; check the agent's RBAC (list secrets in {namespace})"
    )]
    List {
        namespace: String,
        release: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "marking the interrupted helm release record {namespace}/{secret} failed did not work: {message}; check the agent's RBAC (update secrets in {namespace})"
    )]
    Write {
        namespace: String,
        secret: String,
        message: String,
        /// The API could not answer (after the in-place retries), rather than refused.
        unavailable: bool,
    },
    #[error("helm release Secret {namespace}/{secret} cannot be decoded: {message}")]
    Decode {
        namespace: String,
        secret: String,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// [`ErrorClass::Unavailable`] when the API could not answer (after the in-place
    /// retries); a record that cannot be decoded or written is transient.
    pub fn class(&self) -> strata_core::retry::ErrorClass {
        use strata_core::retry::ErrorClass;
        match self {
            Error::List { source, .. } if crate::kube_api::classify_kube(source).is_retryable() => {
                ErrorClass::Unavailable
            }
            Error::Write {
                unavailable: true, ..
            } => ErrorClass::Unavailable,
            _ => ErrorClass::Transient,
        }
    }
}

/// One revision of a release as helm stored it (the fields strata uses).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReleaseRecord {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    /// deployed, failed, pending-install, pending-upgrade, pending-rollback, superseded,
    /// uninstalling, uninstalled, unknown.
    pub status: String,
    pub description: String,
    pub chart_name: String,
    pub chart_version: String,
    pub app_version: Option<String>,
    /// The user-supplied values of this revision (`{}` when none).
    pub config: serde_json::Value,
    /// The rendered manifest (YAML documents).
    pub manifest: String,
    /// The chart's NOTES.txt as rendered, when it has one.
    pub notes: Option<String>,
    /// The release's own labels (`helm upgrade --labels`): helm stores them on the storage
    /// Secret's labels (next to its own `owner`, `name`, `status`, `version`), not in the
    /// record. Only strata's (`strata.io/...`) are kept.
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct RawRelease {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    info: Option<RawInfo>,
    #[serde(default)]
    chart: Option<RawChart>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    manifest: String,
}

#[derive(serde::Deserialize)]
struct RawInfo {
    #[serde(default)]
    status: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawChart {
    metadata: Option<RawMeta>,
}

#[derive(serde::Deserialize)]
struct RawMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default, rename = "appVersion")]
    app_version: Option<String>,
}

/// The JSON of a release Secret's `data.release` (as kube-rs returns it): base64, then gzip
/// when the gzip magic is present, at most [`MAX_RECORD`] bytes.
fn release_json(data: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let text: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| format!("data.release is not base64: {e}"))?;
    let json = if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_RECORD + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("data.release is not valid gzip: {e}"))?;
        if out.len() as u64 > MAX_RECORD {
            return Err(format!(
                "the release record is larger than {MAX_RECORD} bytes"
            ));
        }
        out
    } else {
        raw
    };
    Ok(json)
}

/// Decodes the value of a release Secret's `data.release` (after the API's base64, i.e. as
/// kube-rs returns it): base64, then gzip (when the gzip magic is present), then JSON.
pub fn decode_release(data: &[u8]) -> Result<ReleaseRecord, String> {
    let json = release_json(data)?;
    parse_record(&json).map_err(|e| format!("the release JSON is invalid: {e}"))
}

/// Parses helm's release JSON: a stored record (after base64 and gzip) and what helm prints
/// with `-o json` (install, upgrade, status) are the same document. The one decoder of it.
pub fn parse_record(json: &[u8]) -> Result<ReleaseRecord, serde_json::Error> {
    let r: RawRelease = serde_json::from_slice(json)?;
    let (status, description, notes) = r
        .info
        .map(|i| (i.status, i.description, i.notes))
        .unwrap_or_default();
    let meta = r.chart.and_then(|c| c.metadata);
    let (chart_name, chart_version, app_version) = match meta {
        Some(m) => (m.name, m.version, m.app_version.filter(|a| !a.is_empty())),
        None => (String::new(), String::new(), None),
    };
    Ok(ReleaseRecord {
        name: r.name,
        namespace: r.namespace,
        revision: r.version,
        status,
        description,
        chart_name,
        chart_version,
        app_version,
        config: r
            .config
            .filter(|c| !c.is_null())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        manifest: r.manifest,
        notes: notes.filter(|n| !n.is_empty()),
        labels: Default::default(),
    })
}

/// Decodes one release Secret.
pub fn decode_secret(secret: &Secret) -> Result<ReleaseRecord> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let err = |message: String| Error::Decode {
        namespace: namespace.clone(),
        secret: name.clone(),
        message,
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .ok_or_else(|| err("it has no data.release".into()))?;
    let mut record = decode_release(&data.0).map_err(err)?;
    if record.namespace.is_empty() {
        record.namespace = namespace.clone();
    }
    record.labels = strata_labels(secret);
    Ok(record)
}

async fn list_secrets(
    client: &kube::Client,
    namespace: &str,
    release: &str,
) -> Result<Vec<Secret>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("owner=helm,name={release}"));
    // An API blip (5xx, a cut connection) is retried in place, within bounds.
    let retry = crate::kube_api::InPlaceRetry::default();
    let list = crate::kube_api::retry_kube(&retry, || api.list(&params))
        .await
        .map_err(|source| Error::List {
            namespace: namespace.to_string(),
            release: release.to_string(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|s| s.type_.as_deref().is_none_or(|t| t == "helm.sh/release.v1"))
        .collect())
}

/// The `strata.io/...` labels of a release Secret.
fn strata_labels(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("strata.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The revision a release Secret's `version` label names (helm sets it on every record).
fn label_version(secret: &Secret) -> Option<u64> {
    secret
        .metadata
        .labels
        .as_ref()?
        .get("version")?
        .parse()
        .ok()
}

/// Every stored revision of a release, oldest first.
pub async fn history(
    client: &kube::Client,
    namespace: &str,
    release: &str,
) -> Result<Vec<ReleaseRecord>> {
    let mut records = list_secrets(client, namespace, release)
        .await?
        .iter()
        .map(decode_secret)
        .collect::<Result<Vec<_>>>()?;
    records.sort_by_key(|r| r.revision);
    Ok(records)
}

/// The highest stored revision of a release; `None` when helm has no record of it. Only that
/// record is decoded (picked by its `version` label) unless a label is missing.
pub async fn latest(
    client: &kube::Client,
    namespace: &str,
    release: &str,
) -> Result<Option<ReleaseRecord>> {
    let secrets = list_secrets(client, namespace, release).await?;
    pick_latest(&secrets)
}

/// The highest revision among release Secrets.
pub fn pick_latest(secrets: &[Secret]) -> Result<Option<ReleaseRecord>> {
    if secrets.iter().all(|s| label_version(s).is_some()) {
        return secrets
            .iter()
            .max_by_key(|s| label_version(s))
            .map(decode_secret)
            .transpose();
    }
    let mut records = secrets
        .iter()
        .map(decode_secret)
        .collect::<Result<Vec<_>>>()?;
    records.sort_by_key(|r| r.revision);
    Ok(records.pop())
}

impl ReleaseRecord {
    /// What strata-core's reconcile decision needs: status, chart, revision and the canonical
    /// digest of the stored values.
    pub fn observed(&self) -> ObservedRelease {
        ObservedRelease {
            status: ReleaseStatus::parse(&self.status),
            chart_name: self.chart_name.clone(),
            chart_version: self.chart_version.clone(),
            values_digest: Some(strata_core::values::canonical_digest(&self.config)),
            revision: u32::try_from(self.revision).unwrap_or(u32::MAX),
            stamp: strata_core::digest::Stamp::from_labels(&self.labels),
        }
    }
}

/// The observed state of a release (its highest stored revision); `None` when helm has no
/// record of it. No helm process runs.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    release: &str,
) -> Result<Option<ObservedRelease>> {
    Ok(latest(client, namespace, release)
        .await?
        .map(|r| r.observed()))
}

/// Errors of finding the releases strata manages.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not list helm release Secrets labelled {selector} {scope}: {message}; check the agent's RBAC (list secrets cluster-wide, or in every namespace of the profile list)"
)]
pub struct ListManagedError {
    pub selector: String,
    pub scope: String,
    pub message: String,
}

/// The label selector of the storage Secrets of releases the strata agent of namespace
/// `agent` manages.
pub fn managed_selector(agent: &str) -> String {
    format!(
        "owner=helm,{}={},{}={}",
        strata_core::digest::LABEL_MANAGED_BY,
        strata_core::digest::MANAGED_BY,
        strata_core::digest::LABEL_AGENT,
        strata_core::digest::label_value(agent)
    )
}

/// The releases the strata agent of namespace `agent` manages, from their storage Secrets' labels (the newest revision of
/// each release says its layer and profile): listed cluster-wide; when the agent may not list
/// Secrets cluster-wide (403), in each of `fallback_namespaces` instead (narrow RBAC).
pub async fn list_managed(
    client: &kube::Client,
    agent: &str,
    fallback_namespaces: &[String],
) -> Result<Vec<strata_core::prune::Managed>, ListManagedError> {
    let selector = managed_selector(agent);
    let params = ListParams::default().labels(&selector);
    let retry = crate::kube_api::InPlaceRetry::default();
    let all: Api<Secret> = Api::all(client.clone());
    let secrets = match crate::kube_api::retry_kube(&retry, || all.list(&params)).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::debug!(
                "listing Secrets cluster-wide is forbidden; listing the profile list's namespaces"
            );
            let mut items = Vec::new();
            for ns in fallback_namespaces {
                let api: Api<Secret> = Api::namespaced(client.clone(), ns);
                match crate::kube_api::retry_kube(&retry, || api.list(&params)).await {
                    Ok(list) => items.extend(list.items),
                    Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                        tracing::debug!(namespace = %ns, "no access to this namespace's Secrets");
                    }
                    Err(e) => {
                        return Err(ListManagedError {
                            selector,
                            scope: format!("in namespace {ns}"),
                            message: crate::kube_api::error_text(&e),
                        });
                    }
                }
            }
            items
        }
        Err(e) => {
            return Err(ListManagedError {
                selector,
                scope: "cluster-wide".into(),
                message: crate::kube_api::error_text(&e),
            });
        }
    };
    Ok(managed_from_secrets(&secrets))
}

/// One [`strata_core::prune::Managed`] per release among storage Secrets (its newest
/// revision's labels).
pub fn managed_from_secrets(secrets: &[Secret]) -> Vec<strata_core::prune::Managed> {
    let mut newest: std::collections::BTreeMap<(String, String), (u64, &Secret)> =
        Default::default();
    for s in secrets {
        if s.type_
            .as_deref()
            .is_some_and(|t| t != "helm.sh/release.v1")
        {
            continue;
        }
        let Some(labels) = s.metadata.labels.as_ref() else {
            continue;
        };
        let (Some(name), Some(ns)) = (labels.get("name"), s.metadata.namespace.as_ref()) else {
            continue;
        };
        let version = label_version(s).unwrap_or(0);
        let key = (ns.clone(), name.clone());
        if newest.get(&key).is_none_or(|(v, _)| version >= *v) {
            newest.insert(key, (version, s));
        }
    }
    newest
        .into_iter()
        .filter_map(|((namespace, name), (_, s))| {
            let stamp = strata_core::digest::Stamp::from_labels(&strata_labels(s))?;
            Some(strata_core::prune::Managed {
                name,
                namespace,
                layer: stamp.layer,
                profile: stamp.profile,
            })
        })
        .collect()
}

/// Re-encodes a release record's JSON as helm stores it in `data.release` (before the API's
/// base64): base64 of gzip of the JSON.
pub fn encode_release(json: &serde_json::Value) -> Result<Vec<u8>, String> {
    use base64::Engine;
    use std::io::Write;
    let bytes = serde_json::to_vec(json).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).map_err(|e| e.to_string())?;
    let raw = gz.finish().map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD
        .encode(raw)
        .into_bytes())
}

/// Sets `info.status` of a decoded release JSON to `failed` with `description`; returns the
/// status it had.
pub fn set_failed(json: &mut serde_json::Value, description: &str) -> Option<String> {
    let info = json.get_mut("info")?.as_object_mut()?;
    let before = info.get("status")?.as_str()?.to_string();
    info.insert("status".into(), "failed".into());
    info.insert("description".into(), description.into());
    Some(before)
}

/// Mark revision `revision` of `release` as `failed` with `description` (record and `status`
/// label): one left pending by an interrupted helm, or a deployed one whose readiness wait
/// failed (what helm's own `--wait` does). The update carries the Secret's resourceVersion:
/// if helm is still writing it, the API server refuses (409) and nothing is changed. Returns
/// whether a record was changed (false: no such record, or neither pending nor deployed).
pub async fn mark_failed(
    client: &kube::Client,
    namespace: &str,
    release: &str,
    revision: u64,
    description: &str,
) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secrets = list_secrets(client, namespace, release).await?;
    let Some(mut secret) = secrets
        .into_iter()
        .find(|s| label_version(s) == Some(revision))
    else {
        return Ok(false);
    };
    let name = secret.metadata.name.clone().unwrap_or_default();
    let err = |message: String| Error::Write {
        namespace: namespace.to_string(),
        secret: name.clone(),
        message,
        unavailable: false,
    };
    let Some(data) = secret.data.as_mut().and_then(|d| d.get_mut("release")) else {
        return Ok(false);
    };
    let json = release_json(&data.0).map_err(err)?;
    let mut record: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| err(format!("invalid JSON: {e}")))?;
    match set_failed(&mut record, description) {
        Some(before)
            if ReleaseStatus::parse(&before).is_pending()
                || ReleaseStatus::parse(&before) == ReleaseStatus::Deployed => {}
        _ => return Ok(false),
    }
    data.0 = encode_release(&record).map_err(err)?;
    if let Some(labels) = secret.metadata.labels.as_mut() {
        labels.insert("status".into(), "failed".into());
    }
    // An API blip is retried in place; a conflict (the record changed since it was read)
    // is not, and the next step reads it again.
    let retry = crate::kube_api::InPlaceRetry::default();
    let params = kube::api::PostParams::default();
    crate::kube_api::retry_unavailable(&retry, || api.replace(&name, &params, &secret))
        .await
        .map_err(|e| Error::Write {
            namespace: namespace.to_string(),
            secret: name.clone(),
            message: crate::kube_api::error_text(&e),
            unavailable: crate::kube_api::api_unavailable(&e),
        })?;
    Ok(true)
}

/// Parses a release manifest into its objects (YAML documents that are maps with a `kind`).
/// Documents that fail to parse are skipped (helm rendered them; the API server judged them).
pub fn manifest_objects(manifest: &str) -> Vec<serde_json::Value> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in manifest.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        } else {
            let cur = docs.last_mut().expect("non-empty");
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .filter_map(|d| serde_saphyr::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v.get("kind").and_then(|k| k.as_str()).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::io::Write;

    #[test]
    fn helm_release_json_parses() {
        let json = br#"{"name":"flagger","info":{"first_deployed":"2026-01-01T00:00:00Z","last_deployed":"2026-01-01T00:00:01Z","deleted":"","description":"Install complete","status":"deployed","notes":"hi"},"chart":{"metadata":{"name":"flagger","version":"1.2.3","appVersion":"1.2.3","apiVersion":"v2"},"lock":null,"templates":[],"values":{}},"config":{"replicas":2},"manifest":"---\nkind: A\n","version":3,"namespace":"flagger-system"}"#;
        let r = parse_record(json).unwrap();
        assert_eq!(r.name, "flagger");
        assert_eq!(r.namespace, "flagger-system");
        assert_eq!(r.revision, 3);
        assert_eq!(r.status, "deployed");
        assert_eq!(r.chart_name, "flagger");
        assert_eq!(r.chart_version, "1.2.3");
        assert_eq!(r.config["replicas"], 2);
        assert_eq!(r.notes.as_deref(), Some("hi"));
        // No config at all: an empty map.
        let r = parse_record(br#"{"name":"x","version":1,"info":{"status":"failed"}}"#).unwrap();
        assert!(r.config.as_object().unwrap().is_empty());
        assert!(parse_record(b"not json").is_err());
    }

    pub(crate) fn encode(json: &serde_json::Value) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.to_string().as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(gz.finish().unwrap())
            .into_bytes()
    }

    fn sample(version: u64, status: &str) -> serde_json::Value {
        serde_json::json!({
            "name": "linkerd", "namespace": "linkerd", "version": version,
            "info": {"status": status, "description": "Install complete"},
            "chart": {"metadata": {"name": "linkerd", "version": "0.1.0", "appVersion": "2.14"}},
            "config": {"identity": {"replicas": 1}},
            "manifest": "---\n# Source: linkerd/templates/a.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: a\n"
        })
    }

    #[test]
    fn decodes_a_gzip_record() {
        let r = decode_release(&encode(&sample(3, "deployed"))).unwrap();
        assert_eq!(r.revision, 3);
        assert_eq!(r.status, "deployed");
        assert_eq!(r.chart_name, "linkerd");
        assert_eq!(r.chart_version, "0.1.0");
        assert_eq!(r.app_version.as_deref(), Some("2.14"));
        assert_eq!(r.config["identity"]["replicas"], 1);
        let o = r.observed();
        assert_eq!(o.status, ReleaseStatus::Deployed);
        assert_eq!(o.revision, 3);
        assert_eq!(
            o.values_digest.as_deref(),
            Some(
                strata_core::values::canonical_digest(
                    &serde_json::json!({"identity": {"replicas": 1}})
                )
                .as_str()
            )
        );
        let pending = decode_release(&encode(&sample(4, "pending-upgrade"))).unwrap();
        assert!(pending.observed().status.is_pending());
    }

    #[test]
    fn a_pending_record_marked_failed_round_trips() {
        let mut json = sample(2, "pending-upgrade");
        assert_eq!(
            set_failed(&mut json, "interrupted; marked failed by strata").as_deref(),
            Some("pending-upgrade")
        );
        let r = decode_release(&encode_release(&json).unwrap()).unwrap();
        assert_eq!(r.status, "failed");
        assert_eq!(r.description, "interrupted; marked failed by strata");
        assert_eq!(r.revision, 2);
        assert_eq!(
            r.chart_name,
            decode_release(&encode(&sample(2, "x"))).unwrap().chart_name
        );
        assert_eq!(set_failed(&mut serde_json::json!({"name": "x"}), "d"), None);
    }

    #[test]
    fn decodes_plain_json_and_rejects_garbage() {
        let plain = base64::engine::general_purpose::STANDARD
            .encode(serde_json::json!({"name": "x", "version": 1, "config": null}).to_string());
        let r = decode_release(plain.as_bytes()).unwrap();
        assert_eq!(r.revision, 1);
        assert_eq!(r.config, serde_json::json!({}));
        assert!(decode_release(b"!!!").unwrap_err().contains("base64"));
        let bad_gz = base64::engine::general_purpose::STANDARD.encode([0x1f, 0x8b, 0x08, 1, 2]);
        assert!(
            decode_release(bad_gz.as_bytes())
                .unwrap_err()
                .contains("gzip")
        );
    }

    #[test]
    fn secret_without_release_data_is_an_error_naming_it() {
        let mut s = Secret::default();
        s.metadata.name = Some("sh.helm.release.v1.x.v1".into());
        s.metadata.namespace = Some("ns".into());
        let e = decode_secret(&s).unwrap_err().to_string();
        assert!(e.contains("ns/sh.helm.release.v1.x.v1"), "{e}");
        let mut data = std::collections::BTreeMap::new();
        data.insert(
            "release".to_string(),
            k8s_openapi::ByteString(encode(&sample(1, "failed"))),
        );
        s.data = Some(data);
        assert_eq!(decode_secret(&s).unwrap().status, "failed");
    }

    fn secret(version: u64, label: Option<&str>, data: Vec<u8>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("sh.helm.release.v1.linkerd.v{version}"));
        s.metadata.namespace = Some("linkerd".into());
        if let Some(l) = label {
            s.metadata.labels = Some([("version".to_string(), l.to_string())].into());
        }
        s.data = Some([("release".to_string(), k8s_openapi::ByteString(data))].into());
        s
    }

    #[test]
    fn strata_labels_are_read_from_the_secret_and_managed_releases_found() {
        let mut a1 = secret(1, Some("1"), encode(&sample(1, "superseded")));
        let mut a2 = secret(2, Some("2"), encode(&sample(2, "deployed")));
        let labels = |layer: &str, content: &str| -> std::collections::BTreeMap<String, String> {
            [
                ("owner", "helm"),
                ("name", "linkerd"),
                ("strata.io/managed-by", "strata"),
                ("strata.io/profile", "mesh"),
                ("strata.io/layer", layer),
                ("strata.io/chart-digest", "c"),
                ("strata.io/content-digest", content),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        a1.metadata.labels = Some(labels("1", "k1"));
        a1.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("version".into(), "1".into());
        a2.metadata.labels = Some(labels("2", "k2"));
        a2.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("version".into(), "2".into());
        let r = decode_secret(&a2).unwrap();
        assert!(!r.labels.contains_key("owner"), "{:?}", r.labels);
        let stamp = r.observed().stamp.unwrap();
        assert_eq!(
            (stamp.layer, stamp.content_digest.as_str()),
            (Some(2), "k2")
        );
        // A plain helm install: no labels, no stamp, not managed.
        let mut plain = secret(1, Some("1"), encode(&sample(1, "deployed")));
        plain.metadata.name = Some("sh.helm.release.v1.byhand.v1".into());
        plain.metadata.labels = Some(
            [("owner", "helm"), ("name", "byhand"), ("version", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(decode_secret(&plain).unwrap().observed().stamp, None);
        let managed = managed_from_secrets(&[a1, plain, a2]);
        assert_eq!(managed.len(), 1);
        assert_eq!(
            (
                managed[0].key(),
                managed[0].layer,
                managed[0].profile.as_str()
            ),
            ("linkerd/linkerd".to_string(), Some(2), "mesh")
        );
    }

    #[test]
    fn latest_decodes_only_the_highest_labelled_revision() {
        // Revision 2 is corrupt but superseded: picking by label never decodes it.
        let secrets = vec![
            secret(10, Some("10"), encode(&sample(10, "deployed"))),
            secret(2, Some("2"), b"corrupt".to_vec()),
            secret(9, Some("9"), encode(&sample(9, "superseded"))),
        ];
        let r = pick_latest(&secrets).unwrap().unwrap();
        assert_eq!((r.revision, r.status.as_str()), (10, "deployed"));
        // Without labels every record is decoded and the highest revision wins.
        let unlabelled = vec![
            secret(10, None, encode(&sample(10, "deployed"))),
            secret(9, Some("9"), encode(&sample(9, "superseded"))),
        ];
        assert_eq!(pick_latest(&unlabelled).unwrap().unwrap().revision, 10);
        assert_eq!(pick_latest(&[]).unwrap(), None);
    }

    #[test]
    fn manifest_objects_skip_empty_and_comment_documents() {
        let m = "---\n# Source: c/templates/empty.yaml\n---\n# Source: c/templates/a.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: n\nspec:\n  replicas: 2\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n---\nnot: [valid\n---\njust: a map\n";
        let objs = manifest_objects(m);
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["kind"], "Deployment");
        assert_eq!(objs[0]["spec"]["replicas"], 2);
        assert_eq!(objs[1]["metadata"]["name"], "web");
        assert!(manifest_objects("").is_empty());
    }
}
