//! Digests of everything that determines a release, and the helm release labels strata
//! stamps them into.
//!
//! A release is up to date when its *content digest* is the one strata recorded on it: the
//! chart's full content ([`chart_files_digest`] for a chart directory of the Git checkout,
//! [`chart_archive_digest`] for a repository chart's `.tgz`), the merged values
//! ([`crate::values::canonical_digest`]) and the helm options strata sets ([`HelmOptions`]),
//! combined by [`content_digest`]. Both the chart digest and the content digest are written
//! on the release as helm release labels ([`release_labels`]; helm 4 and helm 3.13+ store
//! them on the release's storage Secret) and read back with [`Stamp::from_labels`].
//!
//! ```
//! use strata_core::digest::*;
//!
//! let chart = chart_files_digest([("Chart.yaml", b"name: a\n".as_slice()), ("templates/a.yaml", b"x")]);
//! let options = HelmOptions { timeout_secs: 60, wait: true, wait_for_jobs: true, create_namespace: true };
//! let content = content_digest(&chart, "sha256:00", &options);
//! assert_eq!(content.len(), SHORT_HEX);
//! let labels = release_labels("strata-system", "mesh", Some(2), &chart, &content);
//! let stamp = Stamp::from_labels(&labels).unwrap();
//! assert_eq!(stamp.content_digest, content);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Hex digits kept of a sha256 in a label value (128 bits; label values hold at most 63).
pub const SHORT_HEX: usize = 32;

/// `strata.io/managed-by`: `strata` on every release strata installed or upgraded.
pub const LABEL_MANAGED_BY: &str = "strata.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "strata";
/// `strata.io/agent`: the agent installation that owns the release (its namespace), so two
/// strata agents in one cluster never prune each other's releases.
pub const LABEL_AGENT: &str = "strata.io/agent";
/// `strata.io/profile`: the profile the release was installed for.
pub const LABEL_PROFILE: &str = "strata.io/profile";
/// `strata.io/layer`: the release's layer (a number, or `unlayered`).
pub const LABEL_LAYER: &str = "strata.io/layer";
/// `strata.io/chart-digest`: [`chart_files_digest`] / [`chart_archive_digest`], shortened.
pub const LABEL_CHART_DIGEST: &str = "strata.io/chart-digest";
/// `strata.io/content-digest`: [`content_digest`].
pub const LABEL_CONTENT_DIGEST: &str = "strata.io/content-digest";
/// The value of [`LABEL_LAYER`] for a release without a layer.
pub const UNLAYERED: &str = "unlayered";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(digest: &[u8]) -> String {
    let mut h = hex(digest);
    h.truncate(SHORT_HEX);
    h
}

/// Digest of a chart directory: every file by its path relative to the chart (`/`-separated),
/// sorted by path, each path and content length-prefixed so no two trees collide. The order
/// of `files` does not matter.
pub fn chart_files_digest<P, C>(files: impl IntoIterator<Item = (P, C)>) -> String
where
    P: AsRef<str>,
    C: AsRef<[u8]>,
{
    let mut sorted: Vec<(P, C)> = files.into_iter().collect();
    sorted.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    let mut h = Sha256::new();
    h.update(b"strata-chart-dir-v1\0");
    for (path, content) in &sorted {
        let (path, content) = (path.as_ref().as_bytes(), content.as_ref());
        h.update((path.len() as u64).to_be_bytes());
        h.update(path);
        h.update((content.len() as u64).to_be_bytes());
        h.update(content);
    }
    short(&h.finalize())
}

/// Digest of a chart archive (`.tgz`): its bytes.
pub fn chart_archive_digest(archive: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"strata-chart-tgz-v1\0");
    h.update(archive);
    short(&h.finalize())
}

/// The helm options strata sets on `helm upgrade --install` that change what a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmOptions {
    pub timeout_secs: u64,
    pub wait: bool,
    pub wait_for_jobs: bool,
    pub create_namespace: bool,
}

impl HelmOptions {
    /// A stable text of the options (the part of the content digest they make).
    pub fn canonical(&self) -> String {
        format!(
            "timeout={}s;wait={};waitForJobs={};createNamespace={}",
            self.timeout_secs, self.wait, self.wait_for_jobs, self.create_namespace
        )
    }
}

/// The content digest of a release: chart digest, values digest and helm options.
pub fn content_digest(chart_digest: &str, values_digest: &str, options: &HelmOptions) -> String {
    let mut h = Sha256::new();
    h.update(b"strata-content-v1\0");
    for part in [chart_digest, values_digest, &options.canonical()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    short(&h.finalize())
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending with an
/// alphanumeric (other characters become `-`; empty stays empty).
pub fn label_value(text: &str) -> String {
    let mut v: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

/// The labels strata stamps on a release (`helm upgrade --install --labels`); `agent` is the
/// agent's namespace.
pub fn release_labels(
    agent: &str,
    profile: &str,
    layer: Option<u32>,
    chart_digest: &str,
    content_digest: &str,
) -> BTreeMap<String, String> {
    [
        (LABEL_MANAGED_BY, MANAGED_BY.to_string()),
        (LABEL_AGENT, label_value(agent)),
        (LABEL_PROFILE, label_value(profile)),
        (
            LABEL_LAYER,
            layer.map_or_else(|| UNLAYERED.to_string(), |n| n.to_string()),
        ),
        (LABEL_CHART_DIGEST, label_value(chart_digest)),
        (LABEL_CONTENT_DIGEST, label_value(content_digest)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `k=v,k=v` for helm's `--labels` (sorted by key).
pub fn labels_arg(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What strata recorded on a release it manages (read from the release's labels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    pub profile: String,
    /// The layer the release was installed in (`None`: unlayered or not readable).
    pub layer: Option<u32>,
    pub chart_digest: String,
    pub content_digest: String,
}

impl Stamp {
    /// The stamp of a release's labels; `None` unless `strata.io/managed-by=strata`.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
            return None;
        }
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        Some(Self {
            profile: get(LABEL_PROFILE),
            layer: labels.get(LABEL_LAYER).and_then(|l| l.parse().ok()),
            chart_digest: get(LABEL_CHART_DIGEST),
            content_digest: get(LABEL_CONTENT_DIGEST),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: HelmOptions = HelmOptions {
        timeout_secs: 60,
        wait: true,
        wait_for_jobs: true,
        create_namespace: true,
    };

    #[test]
    fn chart_digest_is_order_independent_and_sees_every_byte_and_path() {
        let a = chart_files_digest([("Chart.yaml", "v: 1"), ("templates/a.yaml", "x")]);
        let b = chart_files_digest([("templates/a.yaml", "x"), ("Chart.yaml", "v: 1")]);
        assert_eq!(a, b);
        assert_eq!(a.len(), SHORT_HEX);
        assert_ne!(
            a,
            chart_files_digest([("Chart.yaml", "v: 1"), ("templates/a.yaml", "y")])
        );
        assert_ne!(
            a,
            chart_files_digest([("Chart.yaml", "v: 1"), ("templates/b.yaml", "x")])
        );
        // Moving bytes between path and content is a different tree.
        assert_ne!(
            chart_files_digest([("ab", "c")]),
            chart_files_digest([("a", "bc")])
        );
        assert_ne!(chart_archive_digest(b"x"), chart_archive_digest(b"y"));
    }

    #[test]
    fn content_digest_changes_with_each_part() {
        let d = content_digest("c1", "sha256:v1", &OPTS);
        assert_eq!(d, content_digest("c1", "sha256:v1", &OPTS));
        assert_ne!(d, content_digest("c2", "sha256:v1", &OPTS));
        assert_ne!(d, content_digest("c1", "sha256:v2", &OPTS));
        let longer = HelmOptions {
            timeout_secs: 61,
            ..OPTS
        };
        assert_ne!(d, content_digest("c1", "sha256:v1", &longer));
    }

    #[test]
    fn labels_are_valid_and_read_back() {
        let labels = release_labels("strata-system", "cert-manager", Some(3), "abc", "def");
        for (k, v) in &labels {
            assert!(k.starts_with("strata.io/"));
            assert!(v.len() <= 63);
            assert!(
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            );
        }
        assert_eq!(
            labels_arg(&labels),
            "strata.io/agent=strata-system,strata.io/chart-digest=abc,strata.io/content-digest=def,strata.io/layer=3,strata.io/managed-by=strata,strata.io/profile=cert-manager"
        );
        let s = Stamp::from_labels(&labels).unwrap();
        assert_eq!(
            (s.profile.as_str(), s.layer, s.content_digest.as_str()),
            ("cert-manager", Some(3), "def")
        );
        let unlayered = release_labels("strata-system", "x", None, "a", "b");
        assert_eq!(unlayered[LABEL_LAYER], UNLAYERED);
        assert_eq!(Stamp::from_labels(&unlayered).unwrap().layer, None);
        // Someone else's release, or a plain helm install: no stamp.
        let mut other = labels.clone();
        other.insert(LABEL_MANAGED_BY.into(), "flux".into());
        assert_eq!(Stamp::from_labels(&other), None);
        assert_eq!(Stamp::from_labels(&BTreeMap::new()), None);
    }

    #[test]
    fn label_values_are_sanitized() {
        assert_eq!(label_value("a b/c"), "a-b-c");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value(""), "");
    }
}
