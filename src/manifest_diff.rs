//! Object-by-object diff of two release manifests, for `strata diff --manifests`: the
//! manifest helm stored in a release's newest record against the one `helm template` renders
//! for the revision. Pure: no cluster, no helm.
//!
//! Objects are matched by API group, kind, namespace and name (an object without a namespace
//! is in the release's namespace, unless its kind is a well-known cluster-scoped one). Hooks
//! (`helm.sh/hook`) are skipped: helm stores them apart from the manifest and runs them by
//! its own policy. A changed object is shown as a unified diff of its YAML (3 lines of
//! context, at most [`MAX_LINES`] lines). The values of a Secret's `data` and `stringData`
//! are never shown: only the keys whose value was added, removed or changed.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

/// Lines of context around a change.
pub const CONTEXT: usize = 3;
/// Lines of diff shown per object; the rest are counted.
pub const MAX_LINES: usize = 40;
/// Above this many line pairs an object's diff is not aligned: all old lines out, all new in.
const MAX_CELLS: usize = 4_000_000;

/// Kinds without a namespace (an object of another kind without one is in the release's).
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CSIDriver",
    "ClusterIssuer",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "PersistentVolume",
    "PriorityClass",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
];

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectChange {
    /// Rendered, not in the stored manifest: created.
    Added,
    /// In the stored manifest, no longer rendered: deleted by helm.
    Removed,
    /// In both, different.
    Changed,
}

impl ObjectChange {
    /// `+`, `-` or `~`.
    pub fn sign(self) -> char {
        match self {
            ObjectChange::Added => '+',
            ObjectChange::Removed => '-',
            ObjectChange::Changed => '~',
        }
    }
}

/// The difference of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    pub change: ObjectChange,
    pub kind: String,
    /// `None` for a cluster-scoped object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// A changed object: its unified diff (`@@` hunk headers, then lines starting with ` `,
    /// `-` or `+`), at most [`MAX_LINES`]. Without a Secret's `data` and `stringData`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    /// Diff lines not shown.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_lines: usize,
    /// A Secret: the keys whose value was added, removed or changed (`data.password`,
    /// `stringData.token`); never the values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    /// A removed object helm keeps (`helm.sh/resource-policy: keep`): no longer managed, not
    /// deleted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ObjectDiff {
    /// `Kind ns/name` (or `Kind name` when cluster-scoped).
    pub fn object(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// An object's identity in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group: String,
    kind: String,
    namespace: Option<String>,
    name: String,
}

fn key_of(obj: &Value, release_namespace: &str) -> Option<Key> {
    let kind = obj["kind"].as_str()?.to_string();
    let name = obj["metadata"]["name"].as_str()?.to_string();
    let group = obj["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/').map(|(g, _)| g.to_string()))
        .unwrap_or_default();
    let namespace = match obj["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => Some(ns.to_string()),
        _ if CLUSTER_SCOPED.contains(&kind.as_str()) => None,
        _ => Some(release_namespace.to_string()),
    };
    Some(Key {
        group,
        kind,
        namespace,
        name,
    })
}

fn is_hook(obj: &Value) -> bool {
    obj["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

/// The objects of a manifest (hooks skipped) with their keys, in manifest order.
fn keyed(objects: Vec<Value>, release_namespace: &str) -> Vec<(Key, Value)> {
    objects
        .into_iter()
        .filter(|o| !is_hook(o))
        .filter_map(|o| Some((key_of(&o, release_namespace)?, o)))
        .collect()
}

/// The difference between the `stored` manifest objects and the `rendered` ones: changed and
/// added objects in the rendered order, then the removed ones in the stored order. Equal
/// objects are left out.
pub fn compare(
    stored: Vec<Value>,
    rendered: Vec<Value>,
    release_namespace: &str,
) -> Vec<ObjectDiff> {
    let mut stored = keyed(stored, release_namespace);
    let rendered = keyed(rendered, release_namespace);
    let mut out = Vec::new();
    for (key, new) in rendered {
        let old = stored
            .iter()
            .position(|(k, _)| *k == key)
            .map(|i| stored.remove(i).1);
        let base = |change| ObjectDiff {
            change,
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            lines: Vec::new(),
            more_lines: 0,
            secret_keys: Vec::new(),
            kept: false,
        };
        match old {
            None => out.push(base(ObjectChange::Added)),
            Some(old) if old == new => {}
            Some(old) => {
                let mut d = base(ObjectChange::Changed);
                let (old, new) = if key.kind == "Secret" && key.group.is_empty() {
                    d.secret_keys = secret_keys(&old, &new);
                    (without_secret_values(old), without_secret_values(new))
                } else {
                    (old, new)
                };
                if old != new {
                    let all = unified(&to_yaml(&old), &to_yaml(&new), CONTEXT);
                    d.more_lines = all.len().saturating_sub(MAX_LINES);
                    d.lines = all.into_iter().take(MAX_LINES).collect();
                }
                out.push(d);
            }
        }
    }
    out.extend(stored.into_iter().map(|(key, obj)| {
        ObjectDiff {
            change: ObjectChange::Removed,
            kind: key.kind,
            namespace: key.namespace,
            name: key.name,
            lines: Vec::new(),
            more_lines: 0,
            secret_keys: Vec::new(),
            kept: obj["metadata"]["annotations"]["helm.sh/resource-policy"]
                .as_str()
                .is_some_and(|p| p.trim() == "keep"),
        }
    }));
    out
}

/// The keys of `data` and `stringData` whose value differs between two Secrets
/// (`data.password`), sorted.
pub fn secret_keys(old: &Value, new: &Value) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for field in ["data", "stringData"] {
        let names = |v: &Value| -> Vec<String> {
            v[field]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut all = names(old);
        all.extend(names(new));
        for k in all {
            if old[field].get(&k) != new[field].get(&k) {
                keys.insert(format!("{field}.{k}"));
            }
        }
    }
    keys.into_iter().collect()
}

/// A Secret without `data` and `stringData`.
fn without_secret_values(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.remove("data");
        m.remove("stringData");
    }
    obj
}

fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v)
        .unwrap_or_else(|_| serde_json::to_string_pretty(v).expect("a JSON value serializes"))
}

/// One line of an edit script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Same,
    Old,
    New,
}

/// The edit script from `a` to `b` (longest common subsequence), as (edit, index into `a`
/// for `Same`/`Old`, into `b` for `New`).
fn edits(a: &[&str], b: &[&str]) -> Vec<(Edit, usize)> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > MAX_CELLS {
        return (0..n)
            .map(|i| (Edit::Old, i))
            .chain((0..m).map(|j| (Edit::New, j)))
            .collect();
    }
    // lcs[i][j]: the LCS length of a[i..] and b[j..].
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((Edit::Same, i));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            out.push((Edit::Old, i));
            i += 1;
        } else {
            out.push((Edit::New, j));
            j += 1;
        }
    }
    out
}

/// A unified diff of two texts, line by line, with `context` lines around each change:
/// `@@ -l,n +l,n @@` headers, then ` `, `-` and `+` lines. Empty when equal.
pub fn unified(old: &str, new: &str, context: usize) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let script = edits(&a, &b);
    // The line numbers (0-based) in a and b before each step.
    let mut pos = Vec::with_capacity(script.len());
    let (mut ia, mut ib) = (0usize, 0usize);
    for (e, _) in &script {
        pos.push((ia, ib));
        match e {
            Edit::Same => {
                ia += 1;
                ib += 1;
            }
            Edit::Old => ia += 1,
            Edit::New => ib += 1,
        }
    }
    let changes: Vec<usize> = script
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| *e != Edit::Same)
        .map(|(k, _)| k)
        .collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < changes.len() {
        // A hunk: changes no more than 2 * context steps apart.
        let mut last = changes[k];
        let mut next = k + 1;
        while next < changes.len() && changes[next] - last <= 2 * context {
            last = changes[next];
            next += 1;
        }
        let start = changes[k].saturating_sub(context);
        let end = (last + context + 1).min(script.len());
        let steps = &script[start..end];
        let old_len = steps.iter().filter(|(e, _)| *e != Edit::New).count();
        let new_len = steps.iter().filter(|(e, _)| *e != Edit::Old).count();
        let (sa, sb) = pos[start];
        let from = |s: usize, len: usize| if len == 0 { s } else { s + 1 };
        out.push(format!(
            "@@ -{},{old_len} +{},{new_len} @@",
            from(sa, old_len),
            from(sb, new_len)
        ));
        for (e, i) in steps {
            out.push(match e {
                Edit::Same => format!(" {}", a[*i]),
                Edit::Old => format!("-{}", a[*i]),
                Edit::New => format!("+{}", b[*i]),
            });
        }
        k = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str, greeting: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
               "data": {"greeting": greeting, "flavour": "one"}})
    }

    #[test]
    fn unified_diff_has_context_and_hunks() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\n";
        assert_eq!(
            unified(old, new, 3),
            [
                "@@ -1,7 +1,7 @@",
                " a",
                " b",
                " c",
                "-d",
                "+D",
                " e",
                " f",
                " g",
                "@@ -8,3 +8,4 @@",
                " h",
                " i",
                " j",
                "+k"
            ]
        );
        assert!(unified(old, old, 3).is_empty());
        assert_eq!(unified("", "x\n", 3), ["@@ -0,0 +1,1 @@", "+x"]);
    }

    #[test]
    fn objects_are_added_removed_and_changed() {
        let stored = vec![cm("keep", "hi"), cm("change", "hi"), cm("gone", "hi")];
        let rendered = vec![cm("keep", "hi"), cm("change", "hello"), cm("new", "hi")];
        let d = compare(stored, rendered, "apps");
        let summary: Vec<(char, String)> =
            d.iter().map(|o| (o.change.sign(), o.object())).collect();
        assert_eq!(
            summary,
            [
                ('~', "ConfigMap apps/change".to_string()),
                ('+', "ConfigMap apps/new".to_string()),
                ('-', "ConfigMap apps/gone".to_string()),
            ]
        );
        assert!(
            d[0].lines.contains(&"-  greeting: hi".to_string()),
            "{:?}",
            d[0].lines
        );
        assert!(
            d[0].lines.contains(&"+  greeting: hello".to_string()),
            "{:?}",
            d[0].lines
        );
    }

    #[test]
    fn namespaces_default_to_the_release_and_cluster_kinds_have_none() {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                          "metadata": {"name": "reader"}});
        let mut elsewhere = cm("x", "hi");
        elsewhere["metadata"]["namespace"] = json!("other");
        let d = compare(vec![], vec![role, elsewhere, cm("y", "hi")], "apps");
        let names: Vec<String> = d.iter().map(ObjectDiff::object).collect();
        assert_eq!(
            names,
            [
                "ClusterRole reader",
                "ConfigMap other/x",
                "ConfigMap apps/y"
            ]
        );
        // The same object with the namespace written out is the same object, changed.
        let mut explicit = cm("y", "hi");
        explicit["metadata"]["namespace"] = json!("apps");
        let d = compare(vec![cm("y", "hi")], vec![explicit], "apps");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].change, ObjectChange::Changed);
        assert!(
            d[0].lines.contains(&"+  namespace: apps".to_string()),
            "{:?}",
            d[0].lines
        );
    }

    #[test]
    fn removed_objects_helm_keeps_say_so() {
        let mut kept = cm("pvc-like", "hi");
        kept["metadata"]["annotations"] = json!({"helm.sh/resource-policy": "keep"});
        let d = compare(vec![kept, cm("gone", "hi")], vec![], "apps");
        assert_eq!(
            d.iter()
                .map(|o| (o.name.as_str(), o.kept))
                .collect::<Vec<_>>(),
            [("pvc-like", true), ("gone", false)]
        );
        assert!(
            serde_json::to_string(&d[0])
                .unwrap()
                .contains("\"kept\":true")
        );
        assert!(!serde_json::to_string(&d[1]).unwrap().contains("kept"));
    }

    #[test]
    fn hooks_are_skipped() {
        let mut hook = cm("job", "hi");
        hook["metadata"]["annotations"] = json!({"helm.sh/hook": "post-install"});
        assert!(compare(vec![], vec![hook], "apps").is_empty());
    }

    #[test]
    fn secret_values_are_never_shown() {
        let secret = |pw: &str, extra: Option<&str>| {
            let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                               "data": {"password": pw, "user": "YWRtaW4="},
                               "stringData": {"token": "t0ken-value"}});
            if let Some(label) = extra {
                s["metadata"]["labels"] = json!({"tier": label});
            }
            s
        };
        let d = compare(
            vec![secret("czNjcmV0LXZhbHVl", None)],
            vec![secret("bmV3LXZhbHVl", None)],
            "apps",
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].secret_keys, ["data.password"]);
        assert!(d[0].lines.is_empty());
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("bmV3") && !text.contains("czNj"), "{text}");
        // Other fields still diff, without the data.
        let mut new = secret("czNjcmV0LXZhbHVl", Some("db"));
        new["stringData"] = json!({"token": "changed-token", "more": "x"});
        let d = compare(vec![secret("czNjcmV0LXZhbHVl", None)], vec![new], "apps");
        assert_eq!(d[0].secret_keys, ["stringData.more", "stringData.token"]);
        assert!(
            d[0].lines.iter().any(|l| l.contains("tier: db")),
            "{:?}",
            d[0].lines
        );
        let text = format!("{:?}", d);
        assert!(
            !text.contains("t0ken") && !text.contains("changed-token") && !text.contains("YWRt"),
            "{text}"
        );
    }

    #[test]
    fn long_diffs_are_cut() {
        let big = |v: &str| {
            let data: serde_json::Map<String, Value> = (0..100)
                .map(|i| (format!("k{i:03}"), json!(format!("{v}{i}"))))
                .collect();
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": data})
        };
        let d = compare(vec![big("a")], vec![big("b")], "apps");
        assert_eq!(d[0].lines.len(), MAX_LINES);
        assert!(d[0].more_lines > 100, "{}", d[0].more_lines);
    }
}
