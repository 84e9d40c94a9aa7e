//! Site mirrors: URL-prefix rewrites applied to the Git URL, HTTP chart repositories and
//! `oci://` registries, so one profile list serves connected and air-gapped sites unchanged.
//!
//! ```yaml
//! mirrors:
//!   - prefix: https://charts.example.com/platform
//!     mirror: https://harbor.site.local/chartrepo/platform
//!   - prefix: oci://ghcr.io/acme
//!     mirror: oci://harbor.site.local/acme
//! ```
//!
//! The longest matching prefix wins; a prefix matches on whole path segments
//! (`https://h/a` matches `https://h/a` and `https://h/a/b`, never `https://h/ab`). Scheme and
//! host are compared without regard to case.

use crate::problem::Problems;
use crate::yaml::{self, Ctx, Value};

/// One rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub prefix: String,
    pub mirror: String,
}

/// The site's rewrites; empty: every URL is fetched as declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors {
    entries: Vec<Mirror>,
}

const SCHEMES: &[&str] = &["https://", "http://", "oci://", "ssh://", "git://"];

impl Mirrors {
    pub fn new(entries: Vec<Mirror>) -> Self {
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Mirror] {
        &self.entries
    }

    /// `url` rewritten by the longest matching prefix; `None` when no prefix matches.
    pub fn rewrite(&self, url: &str) -> Option<String> {
        self.entries
            .iter()
            .filter_map(|m| matches(&m.prefix, url).map(|rest| (m, rest)))
            .max_by_key(|(m, _)| m.prefix.trim_end_matches('/').len())
            .map(|(m, rest)| {
                let base = m.mirror.trim_end_matches('/');
                if rest.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}{rest}")
                }
            })
    }

    /// `url` rewritten, or `url` itself.
    pub fn apply(&self, url: &str) -> String {
        self.rewrite(url).unwrap_or_else(|| url.to_string())
    }
}

/// The rest of `url` after `prefix` (empty, or starting with `/`, `?` or `#`) when `prefix`
/// matches on whole path segments.
fn matches<'u>(prefix: &str, url: &'u str) -> Option<&'u str> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() || url.len() < prefix.len() || !url.is_char_boundary(prefix.len()) {
        return None;
    }
    let (head, rest) = url.split_at(prefix.len());
    // Scheme and host ignore case; the path does not.
    let authority_end = prefix
        .find("://")
        .map(|i| i + 3)
        .and_then(|s| prefix[s..].find('/').map(|j| s + j))
        .unwrap_or(prefix.len());
    let same = head[..authority_end].eq_ignore_ascii_case(&prefix[..authority_end])
        && head[authority_end..] == prefix[authority_end..];
    let boundary = rest.is_empty() || rest.starts_with(['/', '?', '#']);
    (same && boundary).then_some(rest)
}

/// Parse a mirrors file; every problem is reported at once (unknown fields, a missing or
/// non-URL `prefix`/`mirror`, a scheme change, a duplicate prefix).
pub fn parse(file: &str, text: &str) -> Result<Mirrors, Problems> {
    let root = yaml::parse(file, text).map_err(Problems::from)?;
    let mut ctx = Ctx::with_source(file, text);
    if root.value == Value::Null {
        return Ok(Mirrors::default());
    }
    let Some(top) = ctx.map(&root, "", Some(&["mirrors"])) else {
        return Err(ctx.problems);
    };
    let mut entries: Vec<Mirror> = Vec::new();
    if let Some(list) = top.get("mirrors")
        && let Some(items) = ctx.seq(list, "mirrors")
    {
        for (i, item) in items.iter().enumerate() {
            let path = format!("mirrors[{i}]");
            let Some(fields) = ctx.map(item, &path, Some(&["prefix", "mirror"])) else {
                continue;
            };
            let url = |ctx: &mut Ctx<'_>, key: &str| {
                let node = ctx.required(&fields, key, &path)?;
                let field = format!("{path}.{key}");
                let s = ctx.string(node, &field)?;
                let Some(scheme) = SCHEMES
                    .iter()
                    .find(|s2| s.len() > s2.len() && s[..s2.len()].eq_ignore_ascii_case(s2))
                else {
                    ctx.report(
                        Some(node),
                        &field,
                        format!(
                            "`{}` is not a URL; expected one starting with {}",
                            crate::problem::shown(&s, 200),
                            SCHEMES.join(", ")
                        ),
                    );
                    return None;
                };
                Some((s, *scheme, node))
            };
            let prefix = url(&mut ctx, "prefix");
            let mirror = url(&mut ctx, "mirror");
            let (Some((prefix, ps, _)), Some((mirror, ms, mnode))) = (prefix, mirror) else {
                continue;
            };
            let oci = |s: &str| s == "oci://";
            if oci(ps) != oci(ms) {
                ctx.report(
                    Some(mnode),
                    &format!("{path}.mirror"),
                    format!(
                        "an {ps} prefix needs an {} mirror",
                        if oci(ps) {
                            "oci://"
                        } else {
                            "http(s):// or Git"
                        }
                    ),
                );
                continue;
            }
            let key = prefix.trim_end_matches('/');
            if entries
                .iter()
                .any(|e| e.prefix.trim_end_matches('/').eq_ignore_ascii_case(key))
            {
                ctx.report(
                    Some(item),
                    &format!("{path}.prefix"),
                    "this prefix is listed twice; keep one entry",
                );
                continue;
            }
            entries.push(Mirror { prefix, mirror });
        }
    }
    ctx.problems.into_result(Mirrors::new(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> Mirrors {
        Mirrors::new(
            pairs
                .iter()
                .map(|(p, m)| Mirror {
                    prefix: p.to_string(),
                    mirror: m.to_string(),
                })
                .collect(),
        )
    }

    #[test]
    fn longest_prefix_on_whole_segments() {
        let mirrors = m(&[
            ("https://charts.example.com", "https://m.local/all"),
            ("https://charts.example.com/a/", "https://m.local/a-mirror"),
            ("oci://ghcr.io/acme", "oci://reg.local:5000/acme"),
        ]);
        assert_eq!(
            mirrors.rewrite("https://charts.example.com/a").as_deref(),
            Some("https://m.local/a-mirror")
        );
        assert_eq!(
            mirrors
                .rewrite("https://charts.example.com/a/x/index.yaml")
                .as_deref(),
            Some("https://m.local/a-mirror/x/index.yaml")
        );
        // `/ab` is not under `/a`: the shorter prefix applies.
        assert_eq!(
            mirrors.rewrite("https://charts.example.com/ab").as_deref(),
            Some("https://m.local/all/ab")
        );
        assert_eq!(
            mirrors.rewrite("HTTPS://Charts.Example.com/a").as_deref(),
            Some("https://m.local/a-mirror")
        );
        assert_eq!(
            mirrors.rewrite("oci://ghcr.io/acme/charts").as_deref(),
            Some("oci://reg.local:5000/acme/charts")
        );
        assert_eq!(mirrors.rewrite("oci://ghcr.io/acmex"), None);
        assert_eq!(mirrors.rewrite("https://charts.example.community/x"), None);
        assert_eq!(mirrors.rewrite("https://other.example.com/a"), None);
        assert_eq!(mirrors.apply("https://other/x"), "https://other/x");
        assert!(Mirrors::default().rewrite("https://x/y").is_none());
    }

    #[test]
    fn paths_are_case_sensitive() {
        let mirrors = m(&[("https://h/Team", "https://m/team")]);
        assert_eq!(mirrors.rewrite("https://h/team"), None);
        assert_eq!(
            mirrors.rewrite("https://h/Team/r.git").as_deref(),
            Some("https://m/team/r.git")
        );
    }

    #[test]
    fn parses_a_mirrors_file() {
        let text = "mirrors:\n  - prefix: https://charts.example.com/p\n    mirror: https://m.local/p/\n  - prefix: oci://ghcr.io/a\n    mirror: oci://127.0.0.1:5000/a\n";
        let mirrors = parse("mirrors.yaml", text).unwrap();
        assert_eq!(mirrors.entries().len(), 2);
        assert_eq!(
            mirrors.apply("https://charts.example.com/p"),
            "https://m.local/p"
        );
        assert!(parse("m.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "mirrors:\n  - prefix: https://a\n    mirorr: https://b\n  - prefix: ftp://x\n    mirror: https://y\n  - prefix: oci://r/a\n    mirror: https://y\n  - prefix: https://c\n    mirror: https://d\n  - prefix: https://C/\n    mirror: https://e\nsite: x\n";
        let problems = parse("mirrors.yaml", text).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"site"), "{fields:?}");
        assert!(fields.contains(&"mirrors[0].mirorr"), "{fields:?}");
        assert!(fields.contains(&"mirrors[0].mirror"), "{fields:?}");
        assert!(fields.contains(&"mirrors[1].prefix"), "{fields:?}");
        assert!(fields.contains(&"mirrors[2].mirror"), "{fields:?}");
        assert!(fields.contains(&"mirrors[4].prefix"), "{fields:?}");
        assert!(problems.iter().all(|p| p.file == "mirrors.yaml"));
        let bad = parse("m.yaml", "mirrors: [").unwrap_err();
        assert_eq!(bad.len(), 1);
    }
}
