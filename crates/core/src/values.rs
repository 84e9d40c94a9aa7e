//! Values: merging values files and inline values the way helm merges `-f` files, and a
//! canonical digest to tell whether a release's values changed.
//!
//! Merge rules (helm's, for several `-f` files): maps merge recursively, later sources win,
//! lists and scalars are replaced whole. A `null` replaces the earlier value and is kept as
//! `null` in the result: helm then deletes that key from the chart's default values too, which
//! is what `key: null` in a values file means to helm users. (Dropping the key here instead
//! would bring the chart default back.)

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::problem::{Problem, Problems};
use crate::yaml::{self, Ctx};

/// Parse a values file: YAML whose top is a mapping (an empty file is `{}`). Duplicate keys
/// at any depth and syntax errors are problems with line and column; the same depth and alias
/// limits as every other parser here apply, so a hostile file cannot exhaust the stack.
pub fn parse_file(file: &str, text: &str) -> Result<Value, Problems> {
    let node = yaml::parse(file, text).map_err(Problems::from)?;
    let mut ctx = Ctx::new(file);
    match &node.value {
        yaml::Value::Null => return Ok(Value::Object(Map::new())),
        yaml::Value::Map(_) => yaml::check_duplicate_keys(&mut ctx, &node, ""),
        _ => ctx.report(
            Some(&node),
            "",
            format!(
                "a values file must be a mapping at the top, found {}",
                node.type_name()
            ),
        ),
    }
    let json = node.to_json();
    ctx.problems.into_result(json)
}

/// Merge `files` in order, then `inline` last. Each item is (file name for problems, parsed
/// content). A file that is empty (`null`) contributes nothing; one whose top is not a mapping
/// is a problem.
pub fn merge(files: &[(String, Value)], inline: &Value) -> Result<Value, Problems> {
    let mut problems = Problems::new();
    let mut out = Map::new();
    let sources = files
        .iter()
        .map(|(f, v)| (f.as_str(), "", v))
        .chain(std::iter::once(("profile list", "values", inline)));
    for (file, field, v) in sources {
        match v {
            Value::Null => {}
            Value::Object(m) => merge_into(&mut out, m),
            other => problems.push(Problem::new(
                file,
                field,
                format!(
                    "values must be a mapping at the top level, found {}",
                    kind(other)
                ),
            )),
        }
    }
    problems.into_result(Value::Object(out))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn merge_into(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => merge_into(d, s),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `sha256:<hex>` of the canonical JSON of `v` (see [`canonical_json`]). Values that helm
/// treats as equal give equal digests, so the desired values (merged here) and the values helm
/// stored for a release (read back from helm) compare equal when nothing changed.
pub fn canonical_digest(v: &Value) -> String {
    let text = canonical_json(v);
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The paths (JSON pointers, RFC 6901) at which two values documents differ, compared the way
/// [`canonical_digest`] compares them (so `1` and `1.0` are equal, a top-level `null` is `{}`).
/// Objects are compared key by key; anything else (a scalar, an array, a change of type) is
/// one path. Only the paths are returned, never a value: values can be secret.
///
/// ```
/// use serde_json::json;
/// let before = json!({"a": {"b": 1, "c": "x"}, "gone": true});
/// let after = json!({"a": {"b": 1.0, "c": "y"}, "new": [1]});
/// assert_eq!(strata_core::values::changed_paths(&before, &after), ["/a/c", "/gone", "/new"]);
/// ```
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    fn norm(v: &Value) -> &Value {
        static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        match v {
            Value::Null => EMPTY.get_or_init(|| Value::Object(Default::default())),
            other => other,
        }
    }
    fn escape(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }
    fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    walk(&format!("{path}/{}", escape(k)), x.get(k), y.get(k), out);
                }
            }
            (Some(x), Some(y)) if canonical_json(x) == canonical_json(y) => {}
            (None, None) => {}
            _ => out.push(if path.is_empty() {
                "/".into()
            } else {
                path.into()
            }),
        }
    }
    let mut out = Vec::new();
    walk("", Some(norm(before)), Some(norm(after)), &mut out);
    out
}

/// The canonical JSON text used by [`canonical_digest`]:
/// - object keys sorted at every level, no whitespace;
/// - a top-level `null` is `{}` (helm reports "no user values" as `null`);
/// - every number as the 64-bit float helm holds it as (helm reads values through JSON, so
///   `1`, `1.0` and `1e0` are the same value, and integers beyond 2^53 are rounded): integral
///   values below 10^15 print as integers, others in Rust's shortest round-trip form.
pub fn canonical_json(v: &Value) -> String {
    let mut text = String::new();
    match v {
        Value::Null => text.push_str("{}"),
        other => canonical(other, &mut text),
    }
    text
}

fn canonical_number(n: &serde_json::Number, out: &mut String) {
    match n.as_f64() {
        Some(f) if f.is_finite() => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                // Exact: |f| < 10^15 < 2^53.
                let i = f as i64;
                out.push_str(&i.to_string());
            } else {
                out.push_str(&format!("{f:e}"));
            }
        }
        _ => out.push_str(&n.to_string()),
    }
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Number(n) => canonical_number(n, out),
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn changed_paths_name_keys_only() {
        use serde_json::json;
        let before =
            json!({"db": {"password": "s3cret", "port": 5432}, "list": [1, 2], "same": {"k": 1}});
        let after = json!({"db": {"password": "other", "port": 5432.0}, "list": [1], "same": {"k": 1}, "a/b": {"c~d": 1}});
        let paths = changed_paths(&before, &after);
        assert_eq!(paths, ["/a~1b", "/db/password", "/list"]);
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("s3cret") || p.contains("other"))
        );
        assert!(changed_paths(&serde_json::Value::Null, &json!({})).is_empty());
        assert_eq!(
            changed_paths(&json!({"a": 1}), &json!({"a": {"b": 1}})),
            ["/a"]
        );
        assert_eq!(changed_paths(&json!(1), &json!({})), ["/"]);
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn values_files_parse() {
        assert_eq!(parse_file("v.yaml", "").unwrap(), json!({}));
        assert_eq!(parse_file("v.yaml", "# nothing\n").unwrap(), json!({}));
        assert_eq!(
            parse_file("v.yaml", "a: {b: [1, x]}\nc: null\n").unwrap(),
            json!({"a": {"b": [1, "x"]}, "c": null})
        );
        let s = parse_file("v.yaml", "a:\n  b: 1\n  b: 2\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            s,
            "v.yaml: a.b: duplicate key `b`: each key may appear once (line 3, column 3)"
        );
        let s = parse_file("v.yaml", "- 1\n").unwrap_err().to_string();
        assert!(
            s.contains("a values file must be a mapping at the top, found a list"),
            "{s}"
        );
        let s = parse_file("v.yaml", "a: [\n").unwrap_err().to_string();
        assert!(s.starts_with("v.yaml: invalid YAML"), "{s}");
    }

    #[test]
    fn deep_merge_later_wins_lists_replaced_null_kept() {
        let files = vec![
            (
                "values/a.yaml".to_string(),
                json!({"image": {"repo": "a", "tag": "1"}, "list": [1, 2, 3], "drop": {"x": 1}, "keep": true}),
            ),
            ("values/empty.yaml".to_string(), Value::Null),
            (
                "values/b.yaml".to_string(),
                json!({"image": {"tag": "2"}, "list": [9], "drop": null}),
            ),
        ];
        let inline = json!({"image": {"pullPolicy": "Always"}, "keep": false});
        let merged = merge(&files, &inline).unwrap();
        assert_eq!(
            merged,
            json!({
                "image": {"repo": "a", "tag": "2", "pullPolicy": "Always"},
                "list": [9],
                "drop": null,
                "keep": false
            })
        );
    }

    #[test]
    fn scalar_replaced_by_map_and_back() {
        let files = vec![("a".to_string(), json!({"x": 1, "y": {"z": 1}}))];
        let merged = merge(&files, &json!({"x": {"n": 1}, "y": "flat"})).unwrap();
        assert_eq!(merged, json!({"x": {"n": 1}, "y": "flat"}));
    }

    #[test]
    fn non_map_sources_are_problems() {
        let files = vec![
            ("values/list.yaml".to_string(), json!([1, 2])),
            ("values/str.yaml".to_string(), json!("x")),
        ];
        let ps = merge(&files, &json!(3)).unwrap_err();
        let s = ps.to_string();
        assert_eq!(ps.len(), 3, "{s}");
        assert!(
            s.contains("values/list.yaml: values must be a mapping at the top level, found a list"),
            "{s}"
        );
        assert!(
            s.contains("profile list: values: values must be a mapping"),
            "{s}"
        );
    }

    #[test]
    fn digest_treats_numbers_and_empty_values_like_helm() {
        // What we merge (YAML floats stay floats) vs. what helm stores (Go float64 -> JSON).
        assert_eq!(
            canonical_digest(&json!({"a": 1.0, "b": [2.50], "c": 1e3})),
            canonical_digest(&serde_json::from_str(r#"{"a": 1, "b": [2.5], "c": 1000}"#).unwrap())
        );
        // Integers beyond 2^53 as helm rounds them.
        let big: Value = serde_json::from_str(r#"{"n": 12345678901234567891}"#).unwrap();
        let go: Value = serde_json::from_str(r#"{"n": 12345678901234567000}"#).unwrap();
        assert_eq!(canonical_digest(&big), canonical_digest(&go));
        assert_eq!(
            canonical_json(&json!({"x": 1e21, "y": -0.5, "z": 3})),
            r#"{"x":1e21,"y":-5e-1,"z":3}"#
        );
        assert_ne!(
            canonical_digest(&json!({"a": 1})),
            canonical_digest(&json!({"a": 2}))
        );
        assert_ne!(
            canonical_digest(&json!({"a": 1})),
            canonical_digest(&json!({"a": "1"}))
        );
        // No user values: helm says null, the merge says {}.
        assert_eq!(canonical_digest(&Value::Null), canonical_digest(&json!({})));
    }

    /// `helm get values -o json` of a release installed by helm 4.1.4 (on kubesim) with
    /// `-f` of `RECORDED_INPUT`, and of one installed without values.
    const RECORDED_INPUT: &str = "a: 1.0\nb: [2.50, 3]\nc: 1e3\nbig: 12345678901234567891\ndrop: null\ns: \"<&>\"\nnested: {x: {}}\n";
    const RECORDED_HELM: &str = r#"{"a":1,"b":[2.5,3],"big":12345678901234567000,"c":1000,"drop":null,"nested":{"x":{}},"s":"\u003c\u0026\u003e"}"#;

    #[test]
    fn digest_of_merged_values_equals_digest_of_what_helm_stored() {
        let file = parse_file("vals.yaml", RECORDED_INPUT).unwrap();
        let merged = merge(&[("vals.yaml".into(), file)], &json!({})).unwrap();
        let stored: Value = serde_json::from_str(RECORDED_HELM).unwrap();
        assert_eq!(canonical_digest(&merged), canonical_digest(&stored));
        let none = merge(&[], &json!({})).unwrap();
        assert_eq!(canonical_digest(&none), canonical_digest(&Value::Null));
    }

    #[test]
    fn digest_ignores_key_order_but_sees_changes() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"x": null, "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(canonical_digest(&a), canonical_digest(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
        let c = json!({"a": {"x": null, "y": [2, 1]}, "b": 1});
        assert_ne!(canonical_digest(&a), canonical_digest(&c));
        let d = canonical_digest(&json!({}));
        // sha256 of "{}".
        assert_eq!(
            d,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
