//! OCI registries as chart repositories (charts pushed with `helm push`), through the OCI
//! distribution API: a repository `oci://<host>[:port]/<path>` holds chart `<name>` as the
//! registry repository `<path>/<name>`; its tags are the chart's versions (helm writes `+` as
//! `_` in tags), a tag's manifest names the chart layer
//! (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`) by digest, and that blob is the
//! chart archive, downloaded and verified like any other (see [`super::charts`]).
//!
//! Authentication: HTTP basic with the repository's credentials, or, when the registry
//! answers 401 with a `Bearer` challenge, a token from the registry's token service (asked
//! with those credentials, if any), as `docker` and `helm registry login` do.

use std::collections::BTreeMap;

use strata_core::repoindex::{IndexEntry, RepoIndex};

/// The media type of a Helm chart's content layer.
pub const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// What a manifest request accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest or tag list read.
pub const MAX_DOCUMENT: usize = 4 * 1024 * 1024;

/// An `oci://` repository URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    /// `https://host[:port]`, or `http://` for a plain-HTTP registry.
    pub base: String,
    /// The path under the host, without slashes at either end (may be empty).
    pub path: String,
}

impl Registry {
    /// `oci://host[:port]/path` (as the profile list checked it), HTTPS unless `plain_http`.
    pub fn parse(url: &str, plain_http: bool) -> Option<Self> {
        let rest = url
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case("oci://"))
            .map(|_| &url[6..])?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return None;
        }
        let scheme = if plain_http { "http" } else { "https" };
        Some(Self {
            base: format!("{scheme}://{host}"),
            path: path.trim_matches('/').to_string(),
        })
    }

    /// The registry repository of `chart`: `<path>/<chart>`.
    pub fn repository(&self, chart: &str) -> String {
        if self.path.is_empty() {
            chart.to_string()
        } else {
            format!("{}/{chart}", self.path)
        }
    }

    pub fn tags_url(&self, chart: &str) -> String {
        format!("{}/v2/{}/tags/list", self.base, self.repository(chart))
    }

    pub fn manifest_url(&self, chart: &str, tag: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{tag}",
            self.base,
            self.repository(chart)
        )
    }

    pub fn blob_url(&self, chart: &str, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository(chart))
    }
}

/// The chart version a tag stands for (`1.0.0_build.1` -> `1.0.0+build.1`).
pub fn tag_to_version(tag: &str) -> String {
    tag.replace('_', "+")
}

/// The tag of a chart version (`+` is not allowed in tags).
pub fn version_to_tag(version: &str) -> String {
    version.replace('+', "_")
}

/// The registry's tags of `chart` as a repository index, so versions are resolved by the same
/// rules as an `index.yaml` (strata-core's `repoindex::resolve_version`).
pub fn index_from_tags(source: &str, chart: &str, tags_json: &[u8]) -> Result<RepoIndex, String> {
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let tags: Tags = serde_json::from_slice(tags_json)
        .map_err(|e| format!("the registry's tag list is not valid JSON: {e}"))?;
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for tag in tags.tags.unwrap_or_default() {
        let version = tag_to_version(&tag);
        if strata_core::version::parse_version(&version).is_err() {
            skipped.push(format!("tag `{tag}` is not a chart version"));
            continue;
        }
        entries.push(IndexEntry {
            name: chart.to_string(),
            version,
            urls: Vec::new(),
            digest: None,
            created: None,
            api_version: None,
            app_version: None,
            deprecated: false,
            annotations: BTreeMap::new(),
        });
    }
    let mut map = BTreeMap::new();
    if !entries.is_empty() {
        map.insert(chart.to_string(), entries);
    }
    Ok(RepoIndex {
        source: source.to_string(),
        entries: map,
        skipped,
    })
}

/// The digest (`sha256:<hex>`) of the chart layer in a manifest.
pub fn chart_layer_digest(manifest_json: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Layer {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    let m: Manifest = serde_json::from_slice(manifest_json)
        .map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
    let layer = m
        .layers
        .iter()
        .find(|l| l.media_type == CHART_LAYER)
        .ok_or_else(|| {
            let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
            format!(
                "the manifest has no Helm chart layer ({CHART_LAYER}); its layers are: {}; is this a chart pushed with helm push?",
                if types.is_empty() {
                    "none".to_string()
                } else {
                    types.join(", ")
                }
            )
        })?;
    let hex = layer.digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the chart layer's digest `{}` is not a sha256 digest",
            layer.digest
        ));
    }
    Ok(layer.digest.to_ascii_lowercase())
}

/// A `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses a Bearer challenge (`None` for Basic or anything else).
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let rest = header.trim();
    let params = rest
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("bearer "))
        .map(|_| &rest[7..])?;
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        fields.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(BearerChallenge {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

/// The token in a token service's answer (`token`, or OAuth2's `access_token`).
pub fn token_from_response(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_a_registry_repository() {
        let r = Registry::parse("oci://127.0.0.1:5000/charts/team", true).unwrap();
        assert_eq!(r.base, "http://127.0.0.1:5000");
        assert_eq!(
            r.tags_url("demo"),
            "http://127.0.0.1:5000/v2/charts/team/demo/tags/list"
        );
        assert_eq!(
            r.manifest_url("demo", "1.0.0_b1"),
            "http://127.0.0.1:5000/v2/charts/team/demo/manifests/1.0.0_b1"
        );
        let bare = Registry::parse("OCI://reg.example.com", false).unwrap();
        assert_eq!(bare.base, "https://reg.example.com");
        assert_eq!(
            bare.blob_url("demo", "sha256:ab"),
            "https://reg.example.com/v2/demo/blobs/sha256:ab"
        );
        assert_eq!(Registry::parse("https://x/y", false), None);
        assert_eq!(Registry::parse("oci:///y", false), None);
    }

    #[test]
    fn tags_become_versions_and_odd_tags_are_skipped() {
        let idx = index_from_tags(
            "oci://r/c",
            "demo",
            br#"{"name":"c/demo","tags":["1.0.0","1.1.0_build.2","latest","2.0.0-rc.1"]}"#,
        )
        .unwrap();
        let versions: Vec<&str> = idx.entries["demo"]
            .iter()
            .map(|e| e.version.as_str())
            .collect();
        assert_eq!(versions, ["1.0.0", "1.1.0+build.2", "2.0.0-rc.1"]);
        assert_eq!(idx.skipped, ["tag `latest` is not a chart version"]);
        let c = strata_core::version::VersionConstraint::parse("~1.1").unwrap();
        let e = strata_core::repoindex::resolve_version(&idx, "demo", Some(&c)).unwrap();
        assert_eq!(version_to_tag(&e.version), "1.1.0_build.2");
        // No tags at all (a repository that does not exist answers 404 before this).
        let empty = index_from_tags("oci://r/c", "demo", br#"{"tags":null}"#).unwrap();
        assert!(strata_core::repoindex::resolve_version(&empty, "demo", None).is_err());
        assert!(index_from_tags("oci://r/c", "demo", b"<html>").is_err());
    }

    #[test]
    fn the_chart_layer_is_found_by_media_type() {
        let d = "a".repeat(64);
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:{}"}},
            "layers":[{{"mediaType":"{CHART_LAYER}","digest":"sha256:{d}","size":3}}]}}"#,
            "b".repeat(64)
        );
        assert_eq!(
            chart_layer_digest(m.as_bytes()).unwrap(),
            format!("sha256:{d}")
        );
        let image = br#"{"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:00"}]}"#;
        let e = chart_layer_digest(image).unwrap_err();
        assert!(
            e.contains("no Helm chart layer") && e.contains("image.layer"),
            "{e}"
        );
        let bad = format!(r#"{{"layers":[{{"mediaType":"{CHART_LAYER}","digest":"md5:x"}}]}}"#);
        assert!(chart_layer_digest(bad.as_bytes()).is_err());
    }

    #[test]
    fn bearer_challenges_and_tokens() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:charts/demo:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example.com/token");
        assert_eq!(c.service.as_deref(), Some("registry.example.com"));
        assert_eq!(c.scope.as_deref(), Some("repository:charts/demo:pull"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="Registry""#), None);
        assert_eq!(parse_bearer_challenge("Bearer service=x"), None);
        assert_eq!(
            token_from_response(br#"{"token":"t1","expires_in":300}"#).as_deref(),
            Some("t1")
        );
        assert_eq!(
            token_from_response(br#"{"access_token":"t2"}"#).as_deref(),
            Some("t2")
        );
        assert_eq!(token_from_response(br#"{"token":""}"#), None);
    }
}
