//! Helm chart repository index (`index.yaml`) and version resolution.
//!
//! [`resolve_version`] picks the highest version that satisfies the constraint, like
//! `helm install --version`: pre-release versions are only candidates when the constraint
//! names a pre-release (see [`crate::version`]); without a constraint, the highest stable
//! version wins.

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};
use crate::version::{VersionConstraint, parse_version};
use crate::yaml::{self, Ctx, Node, Value};

/// One chart version in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub name: String,
    /// As written in the index.
    pub version: String,
    /// Download URLs, absolute or relative to the repository URL (see [`resolve_url`]).
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default)]
    pub deprecated: bool,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    /// The parsed version (entries whose version does not parse are not kept in the index).
    pub fn semver(&self) -> Option<Version> {
        parse_version(&self.version).ok()
    }
}

/// A parsed repository index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoIndex {
    /// The URL or file the index came from (named in problems).
    pub source: String,
    /// Chart name -> versions, as listed.
    pub entries: BTreeMap<String, Vec<IndexEntry>>,
    /// Entries left out because they were unusable (bad version, no URL), one line each.
    pub skipped: Vec<String>,
}

/// Parse an `index.yaml`. The document must be a mapping with an `entries` mapping; single
/// unusable entries are skipped and listed in [`RepoIndex::skipped`] (as helm does) instead of
/// failing the whole repository.
pub fn parse(source: &str, text: &str) -> Result<RepoIndex, Problems> {
    let root = yaml::parse_large(source, text).map_err(Problems::from)?;
    let mut ctx = Ctx::new(source);
    if root.value == Value::Null {
        ctx.report(None, "", "the repository index is empty");
        return Err(ctx.problems);
    }
    let Some(top) = ctx.map(&root, "", None) else {
        return Err(ctx.problems);
    };
    let Some(entries_node) = ctx.required(&top, "entries", "") else {
        return Err(ctx.problems);
    };
    let Some(chart_map) = ctx.map(entries_node, "entries", None) else {
        return Err(ctx.problems);
    };
    let mut entries = BTreeMap::new();
    let mut skipped = Vec::new();
    for (chart, _, versions) in &chart_map.entries {
        let Value::Seq(items) = &versions.value else {
            skipped.push(format!("{chart}: the versions are not a list"));
            continue;
        };
        let mut list = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match entry(chart, item) {
                Ok(e) => list.push(e),
                Err(why) => skipped.push(format!("{chart}[{i}]: {why}")),
            }
        }
        entries.insert(chart.clone(), list);
    }
    Ok(RepoIndex {
        source: source.to_owned(),
        entries,
        skipped,
    })
}

fn entry(chart: &str, node: &Node) -> Result<IndexEntry, String> {
    let Value::Map(fields) = &node.value else {
        return Err(format!("expected a mapping, found {}", node.type_name()));
    };
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    };
    // Numbers as helm reads them (an unquoted `1.10` is 1.1).
    let text = |key: &str| get(key).and_then(Node::scalar_text);
    let version = text("version").ok_or("no version")?;
    parse_version(&version).map_err(|e| e.to_string())?;
    let urls: Vec<String> = match get("urls").map(|n| &n.value) {
        Some(Value::Seq(items)) => items.iter().filter_map(Node::scalar_text).collect(),
        _ => Vec::new(),
    };
    if urls.is_empty() {
        return Err(format!("version {version} has no download URL"));
    }
    let mut annotations = BTreeMap::new();
    if let Some(Value::Map(a)) = get("annotations").map(|n| &n.value) {
        for (k, v) in a {
            if let (Some(k), Some(v)) = (k.scalar_text(), v.scalar_text()) {
                annotations.insert(k, v);
            }
        }
    }
    Ok(IndexEntry {
        name: text("name").unwrap_or_else(|| chart.to_owned()),
        version,
        urls,
        digest: text("digest"),
        created: text("created"),
        api_version: text("apiVersion"),
        app_version: text("appVersion"),
        deprecated: matches!(get("deprecated").map(|n| &n.value), Some(Value::Bool(true))),
        annotations,
    })
}

/// The highest version of `chart` satisfying `constraint` (`None`: highest stable version).
pub fn resolve_version<'a>(
    index: &'a RepoIndex,
    chart: &str,
    constraint: Option<&VersionConstraint>,
) -> Result<&'a IndexEntry, Problem> {
    let field = format!("entries[{chart}]");
    let Some(list) = index.entries.get(chart) else {
        return Err(Problem::new(
            &index.source,
            field,
            format!(
                "chart `{chart}` is not in the repository; check the chart name (the repository has {} charts)",
                index.entries.len()
            ),
        ));
    };
    // Like helm: a version written exactly as in the index wins outright
    // (`1.0.0+build.2` picks that entry, not another build of 1.0.0).
    if let Some(c) = constraint
        && let Some(e) = list.iter().find(|e| e.version == c.as_str())
    {
        return Ok(e);
    }
    let mut best: Option<(Version, &IndexEntry)> = None;
    for e in list {
        let Some(v) = e.semver() else { continue };
        let ok = match constraint {
            Some(c) => c.matches(&v),
            None => v.pre.is_empty(),
        };
        if ok
            && best
                .as_ref()
                .is_none_or(|(b, _)| v.cmp_precedence(b).is_gt())
        {
            best = Some((v, e));
        }
    }
    best.map(|(_, e)| e).ok_or_else(|| {
        let mut versions: Vec<(Version, &str)> = list
            .iter()
            .filter_map(|e| e.semver().map(|v| (v, e.version.as_str())))
            .collect();
        versions.sort_by(|a, b| b.0.cmp_precedence(&a.0));
        let shown: Vec<&str> = versions.iter().take(5).map(|(_, s)| *s).collect();
        let wanted = constraint.map_or("a stable version".to_owned(), |c| format!("`{c}`"));
        Problem::new(
            &index.source,
            field,
            if shown.is_empty() {
                format!("chart `{chart}` has no usable versions")
            } else {
                format!(
                    "no version of chart `{chart}` matches {wanted}; newest available: {}",
                    shown.join(", ")
                )
            },
        )
    })
}

/// Resolve a download URL from the index against the repository URL: absolute URLs are kept,
/// relative ones are taken relative to the repository's base (`<repo>/`).
pub fn resolve_url(repository_url: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_owned();
    }
    let base = repository_url.trim_end_matches('/');
    if let Some(abs) = url.strip_prefix('/') {
        // Absolute path: keep the scheme and host of the repository.
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[after_scheme..]
            .find('/')
            .map_or(base.len(), |i| after_scheme + i);
        return format!("{}/{abs}", &base[..host_end]);
    }
    format!("{base}/{}", url.trim_start_matches("./"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"
apiVersion: v1
entries:
  cert-manager:
    - apiVersion: v2
      name: cert-manager
      version: v1.14.4
      urls: [charts/cert-manager-v1.14.4.tgz]
      digest: abc
      created: "2024-03-01T00:00:00Z"
      annotations: {strata.dev/layer: "1"}
    - name: cert-manager
      version: 1.15.0-rc.1
      urls: [https://cdn.example.com/cert-manager-1.15.0-rc.1.tgz]
    - name: cert-manager
      version: 1.13.2
      urls: [charts/cert-manager-1.13.2.tgz]
    - name: cert-manager
      version: not-a-version
      urls: [x.tgz]
    - name: cert-manager
      version: 1.16.0
      urls: []
  linkerd:
    - name: linkerd
      version: 2.0.0
      urls: [linkerd-2.0.0.tgz]
generated: "2024-03-01T00:00:00Z"
"#;

    fn c(s: &str) -> VersionConstraint {
        VersionConstraint::parse(s).unwrap()
    }

    #[test]
    fn parses_entries_and_skips_unusable_ones() {
        let idx = parse("https://charts.example.com/index.yaml", INDEX).unwrap();
        assert_eq!(idx.entries["cert-manager"].len(), 3);
        assert_eq!(idx.skipped.len(), 2, "{:?}", idx.skipped);
        let e = &idx.entries["cert-manager"][0];
        assert_eq!(e.digest.as_deref(), Some("abc"));
        assert_eq!(e.annotations["strata.dev/layer"], "1");
        assert_eq!(e.api_version.as_deref(), Some("v2"));
    }

    #[test]
    fn resolves_highest_matching() {
        let idx = parse("i", INDEX).unwrap();
        assert_eq!(
            resolve_version(&idx, "cert-manager", Some(&c("1.x")))
                .unwrap()
                .version,
            "v1.14.4"
        );
        assert_eq!(
            resolve_version(&idx, "cert-manager", Some(&c("~1.13")))
                .unwrap()
                .version,
            "1.13.2"
        );
        assert_eq!(
            resolve_version(&idx, "cert-manager", Some(&c("1.14.4")))
                .unwrap()
                .version,
            "v1.14.4"
        );
        assert_eq!(
            resolve_version(&idx, "cert-manager", None).unwrap().version,
            "v1.14.4"
        );
        // Pre-releases only when asked for.
        assert_eq!(
            resolve_version(&idx, "cert-manager", Some(&c(">=1.14.0-0")))
                .unwrap()
                .version,
            "1.15.0-rc.1"
        );
    }

    #[test]
    fn exact_spelling_wins() {
        let text = "entries:\n  a:\n    - {name: a, version: 1.0.0+build.1, urls: [u1]}\n    - {name: a, version: 1.0.0+build.2, urls: [u2]}\n";
        let idx = parse("i", text).unwrap();
        assert_eq!(
            resolve_version(&idx, "a", Some(&c("1.0.0+build.2")))
                .unwrap()
                .urls,
            vec!["u2"]
        );
        assert_eq!(
            resolve_version(&idx, "a", Some(&c("1.0.0+build.1")))
                .unwrap()
                .urls,
            vec!["u1"]
        );
    }

    #[test]
    fn resolution_problems() {
        let idx = parse("https://charts.example.com/index.yaml", INDEX).unwrap();
        let p = resolve_version(&idx, "cert-manager", Some(&c(">=2"))).unwrap_err();
        assert_eq!(
            p.to_string(),
            "https://charts.example.com/index.yaml: entries[cert-manager]: no version of chart `cert-manager` matches `>=2`; newest available: 1.15.0-rc.1, v1.14.4, 1.13.2"
        );
        let p = resolve_version(&idx, "flagger", None).unwrap_err();
        assert!(
            p.message
                .contains("chart `flagger` is not in the repository"),
            "{p}"
        );
    }

    #[test]
    fn bad_indexes() {
        assert!(parse("i", "").is_err());
        assert!(
            parse("i", "apiVersion: v1\n")
                .unwrap_err()
                .to_string()
                .contains("missing required field `entries`")
        );
        assert!(parse("i", "entries: [1]\n").is_err());
        assert!(parse("i", "entries: {a: [\n").is_err());
    }

    #[test]
    fn large_indexes_fit_the_budget() {
        let mut text = String::from("apiVersion: v1\nentries:\n");
        // 20 000 entries: more than the 250 000 nodes of the default budget.
        for c in 0..200 {
            text.push_str(&format!("  chart-{c}:\n"));
            for v in 0..100 {
                text.push_str(&format!(
                    "    - name: chart-{c}\n      version: 1.{v}.0\n      urls: [chart-{c}-1.{v}.0.tgz]\n      digest: d{v}\n      annotations: {{a: b, c: d}}\n"
                ));
            }
        }
        let idx = parse("big", &text).unwrap();
        assert_eq!(idx.entries.len(), 200);
        assert!(
            crate::yaml::parse("big", &text).is_err(),
            "the default budget is too small"
        );
        let e = resolve_version(&idx, "chart-7", Some(&c("~1.42"))).unwrap();
        assert_eq!(e.version, "1.42.0");
    }

    #[test]
    fn urls_resolve_against_repository() {
        assert_eq!(
            resolve_url("https://x.io/charts", "a-1.tgz"),
            "https://x.io/charts/a-1.tgz"
        );
        assert_eq!(
            resolve_url("https://x.io/charts/", "./a-1.tgz"),
            "https://x.io/charts/a-1.tgz"
        );
        assert_eq!(
            resolve_url("https://x.io/charts", "/dl/a-1.tgz"),
            "https://x.io/dl/a-1.tgz"
        );
        assert_eq!(
            resolve_url("https://x.io/charts", "https://cdn/a.tgz"),
            "https://cdn/a.tgz"
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:8080", "a.tgz"),
            "http://127.0.0.1:8080/a.tgz"
        );
    }
}
