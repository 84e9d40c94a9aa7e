//! Drift of the fields of live objects: what a release's manifest sets that the live object no
//! longer has ([`compare`]), and the profile list's drift policy ([`DriftPolicy`]).
//!
//! The comparison is conservative (a false drift is worse than a missed one): only fields the
//! manifest sets are compared (defaulted fields, and fields other managers add, are never
//! drift); the server's metadata and `status` are skipped; numbers compare numerically, an
//! integer equals its string form (`intOrString`) and quantities compare by value (`1000m` is
//! `1`); lists of maps that all have a `name` are matched by name (extra live elements, such
//! as injected sidecars, are fine), other lists element by element (a list of maps may have
//! extra live elements; a list of scalars must have the same length). Manifest values that
//! are `null` or empty (`""`, `{}`, `[]`) are skipped, and `false`/`0` are not drift when the
//! live object omits them (the API server drops them). Paths are JSON pointers (RFC 6901)
//! into the manifest object; values are never reported.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What strata does about drift of a release's live objects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Missing objects and changed fields are written again by `helm upgrade --install`.
    Correct,
    /// Reported (status, an Event, a metric), not repaired.
    #[default]
    Warn,
    /// Not checked.
    Ignore,
}

impl DriftMode {
    /// Every mode, in documentation order.
    pub const ALL: [DriftMode; 3] = [Self::Correct, Self::Warn, Self::Ignore];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Correct => "correct",
            Self::Warn => "warn",
            Self::Ignore => "ignore",
        }
    }
}

impl std::fmt::Display for DriftMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields of objects of one kind (and name) that are never drift.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IgnoreRule {
    pub kind: String,
    /// `None`: every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON pointers (RFC 6901); each covers everything under it.
    pub paths: Vec<String>,
}

/// The drift policy of a release: `defaults.drift` with the profile's own mode (if given) and
/// its ignore rules appended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftPolicy {
    #[serde(default)]
    pub mode: DriftMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
}

impl DriftPolicy {
    /// The ignored paths of the object `kind`/`name`.
    pub fn ignored(&self, kind: &str, name: &str) -> Vec<String> {
        self.ignore
            .iter()
            .filter(|r| r.kind == kind && r.name.as_deref().is_none_or(|n| n == name))
            .flat_map(|r| r.paths.iter().cloned())
            .collect()
    }
}

/// One field of a manifest object the live object no longer has as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDrift {
    /// JSON pointer into the manifest object, e.g. `/data/greeting`.
    pub path: String,
}

/// Is `p` a JSON pointer as the drift ignore rules take it: starts with `/`, and every `~` is
/// `~0` or `~1`? The error says what is wrong.
pub fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "`{p}` is not a JSON pointer: it must start with `/`, e.g. /spec/replicas"
        ));
    }
    let b = p.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!(
                "`{p}` is not a JSON pointer: `~` must be written `~0` and `/` inside a key `~1` (RFC 6901)"
            ));
        }
    }
    Ok(())
}

/// `key` as one reference token of a JSON pointer (`~` -> `~0`, `/` -> `~1`).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Metadata fields the server owns (or other controllers change): never compared.
const SERVER_METADATA: &[&str] = &[
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "namespace",
    "finalizers",
    "ownerReferences",
    "generateName",
];

/// The fields `manifest_obj` sets that `live` does not have as written, as JSON pointers
/// (none under an `ignore` pointer). See the module documentation for what is not drift.
pub fn compare(manifest_obj: &Value, live: &Value, ignore: &[String]) -> Vec<FieldDrift> {
    let mut out = Vec::new();
    let Some(m) = manifest_obj.as_object() else {
        return out;
    };
    let secret = manifest_obj["kind"] == "Secret";
    for (k, mv) in m {
        let path = format!("/{}", escape(k));
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                let (Some(mm), lm) = (mv.as_object(), &live["metadata"]) else {
                    continue;
                };
                for (mk, v) in mm {
                    if SERVER_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    walk(
                        v,
                        lm.get(mk),
                        &format!("{path}/{}", escape(mk)),
                        ignore,
                        &mut out,
                    );
                }
            }
            // A Secret's stringData is stored base64-encoded in data (and not kept).
            "stringData" if secret => {
                let Some(sd) = mv.as_object() else { continue };
                for (sk, v) in sd {
                    let Some(s) = v.as_str() else { continue };
                    let want = Value::String(base64(s.as_bytes()));
                    walk(
                        &want,
                        live["data"].get(sk),
                        &format!("/stringData/{}", escape(sk)),
                        ignore,
                        &mut out,
                    );
                }
            }
            _ => walk(mv, live.get(k), &path, ignore, &mut out),
        }
    }
    out
}

fn ignored(path: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|p| {
        path == p
            || path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn drift(path: &str, ignore: &[String], out: &mut Vec<FieldDrift>) {
    if !ignored(path, ignore) {
        out.push(FieldDrift {
            path: path.to_owned(),
        });
    }
}

/// Is `v` a value the API server may drop (Go's zero values with `omitempty`)?
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn walk(m: &Value, live: Option<&Value>, path: &str, ignore: &[String], out: &mut Vec<FieldDrift>) {
    if ignored(path, ignore) {
        return;
    }
    // null: "not set"; "": often a placeholder the server fills (clusterIP); {} and []: dropped.
    if matches!(m, Value::Null)
        || m.as_str().is_some_and(str::is_empty)
        || m.as_object().is_some_and(|o| o.is_empty())
        || m.as_array().is_some_and(|a| a.is_empty())
    {
        return;
    }
    let live = match live {
        None | Some(Value::Null) => {
            if !is_zero(m) {
                drift(path, ignore, out);
            }
            return;
        }
        Some(l) => l,
    };
    match (m, live) {
        (Value::Object(mo), Value::Object(lo)) => {
            for (k, v) in mo {
                let l = lo.get(k).or_else(|| yaml11_bool(k).and_then(|b| lo.get(b)));
                walk(v, l, &format!("{path}/{}", escape(k)), ignore, out);
            }
        }
        (Value::Array(ma), Value::Array(la)) => list(ma, la, path, ignore, out),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            drift(path, ignore, out)
        }
        (a, b) => {
            if !scalar_eq(a, b) {
                drift(path, ignore, out)
            }
        }
    }
}

/// helm reads YAML 1.1, where a key `n`, `yes` or `off` is a boolean: the cluster has the
/// object with the key `false` or `true` while helm's stored manifest still says `n`.
fn yaml11_bool(key: &str) -> Option<&'static str> {
    match key {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "True" | "TRUE" => Some("true"),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "False" | "FALSE" => Some("false"),
        _ => None,
    }
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name")?.as_str()
}

fn list(ma: &[Value], la: &[Value], path: &str, ignore: &[String], out: &mut Vec<FieldDrift>) {
    // Lists of named maps (containers, ports, env, volumes): matched by name.
    if ma.iter().all(|v| name_of(v).is_some()) {
        for (i, mv) in ma.iter().enumerate() {
            let p = format!("{path}/{i}");
            match la.iter().find(|l| name_of(l) == name_of(mv)) {
                Some(lv) => walk(mv, Some(lv), &p, ignore, out),
                None => drift(&p, ignore, out),
            }
        }
        return;
    }
    if ma.len() == la.len() {
        for (i, (mv, lv)) in ma.iter().zip(la).enumerate() {
            walk(mv, Some(lv), &format!("{path}/{i}"), ignore, out);
        }
        return;
    }
    // Maps others may add to (tolerations added by admission): every manifest element must
    // have an equal live element.
    if la.len() > ma.len() && ma.iter().all(Value::is_object) {
        let matched = ma.iter().all(|mv| {
            la.iter().any(|lv| {
                let mut o = Vec::new();
                walk(mv, Some(lv), "", &[], &mut o);
                o.is_empty()
            })
        });
        if matched {
            return;
        }
    }
    drift(path, ignore, out);
}

/// Scalars equal as Kubernetes normalises them: numbers by value, an integer and its string
/// form (`intOrString`), quantities by value (`1000m` and `1`, `1Gi` and `1024Mi`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => quantity(s),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => false,
    }
}

/// A Kubernetes quantity (`128Mi`, `0.5`, `500m`, `1e3`) or plain number, as a number.
fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (digits, factor) = SUFFIXES
        .iter()
        .find_map(|(suf, f)| s.strip_suffix(suf).map(|d| (d, *f)))
        .unwrap_or((s, 1.0));
    // Only digits, one dot, a sign and an exponent: nothing else reads as a number here.
    if !digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'))
        || !digits
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    digits.parse::<f64>().ok().map(|n| n * factor)
}

/// Standard base64 with padding (a Secret's `data`).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(m: Value, l: Value, ignore: &[&str]) -> Vec<String> {
        let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
        compare(&m, &l, &ignore)
            .into_iter()
            .map(|d| d.path)
            .collect()
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "a"}},
               "data": data})
    }

    #[test]
    fn an_edited_and_a_removed_field_drift_defaulted_and_server_fields_do_not() {
        let m = cm(json!({"greeting": "hi", "other": "x"}));
        let mut l = cm(json!({"greeting": "hello", "added": "by hand"}));
        l["metadata"]["resourceVersion"] = json!("42");
        l["metadata"]["uid"] = json!("u");
        l["metadata"]["labels"]["extra"] = json!("y");
        l["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "a"});
        l["status"] = json!({"x": 1});
        assert_eq!(paths(m.clone(), l, &[]), ["/data/greeting", "/data/other"]);
        assert!(paths(m.clone(), m, &[]).is_empty());
    }

    #[test]
    fn yaml_1_1_boolean_keys_find_the_key_helm_wrote() {
        // helm writes `n: "1"` as `false: "1"`.
        let m = cm(json!({"n": "1", "on": "x"}));
        let l = cm(json!({"false": "1", "true": "y"}));
        assert_eq!(paths(m, l, &[]), ["/data/on"]);
    }

    #[test]
    fn labels_with_slashes_are_escaped() {
        let m = cm(json!({}));
        let mut l = m.clone();
        l["metadata"]["labels"]["app.kubernetes.io/name"] = json!("b");
        assert_eq!(
            paths(m, l, &[]),
            ["/metadata/labels/app.kubernetes.io~1name"]
        );
    }

    #[test]
    fn numbers_ints_as_strings_and_quantities_compare_by_value() {
        let m = json!({"kind": "Deployment", "spec": {
            "replicas": 2, "port": "8080", "cpu": "1", "mem": "1Gi", "half": "0.5", "f": 1.0}});
        let l = json!({"kind": "Deployment", "spec": {
            "replicas": 2, "port": 8080, "cpu": "1000m", "mem": "1024Mi", "half": "500m", "f": 1}});
        assert!(paths(m.clone(), l, &[]).is_empty());
        let l = json!({"kind": "Deployment", "spec": {
            "replicas": 3, "port": 8081, "cpu": "2", "mem": "1Gi", "half": "500m", "f": 1}});
        assert_eq!(
            paths(m, l, &[]),
            ["/spec/cpu", "/spec/port", "/spec/replicas"]
        );
        // Words are not numbers.
        assert!(!scalar_eq(&json!("http"), &json!("https")));
        assert!(!scalar_eq(&json!("Mi"), &json!("m")));
    }

    #[test]
    fn zero_and_empty_values_the_server_drops_are_not_drift() {
        let m = json!({"kind": "Pod", "spec": {"hostNetwork": false, "n": 0, "clusterIP": "",
            "resources": {}, "args": [], "x": null}});
        let l = json!({"kind": "Pod", "spec": {"clusterIP": "10.0.0.1"}});
        assert!(paths(m, l, &[]).is_empty());
        // But a set false that is now true is drift.
        let m = json!({"spec": {"paused": false}});
        let l = json!({"spec": {"paused": true}});
        assert_eq!(paths(m, l, &[]), ["/spec/paused"]);
    }

    #[test]
    fn named_lists_match_by_name_and_allow_extra_live_elements() {
        let m = json!({"spec": {"containers": [
            {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 80}]},
            {"name": "side", "image": "side:1"}]}});
        let l = json!({"spec": {"containers": [
            {"name": "injected", "image": "proxy"},
            {"name": "side", "image": "side:1", "imagePullPolicy": "IfNotPresent"},
            {"name": "app", "image": "app:2", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]}});
        assert_eq!(paths(m.clone(), l, &[]), ["/spec/containers/0/image"]);
        let l = json!({"spec": {"containers": [{"name": "app", "image": "app:1",
            "ports": [{"name": "http", "containerPort": 80}]}]}});
        assert_eq!(paths(m, l, &[]), ["/spec/containers/1"]);
    }

    #[test]
    fn unnamed_lists_compare_by_index_and_length() {
        let m = json!({"spec": {"args": ["a", "b"]}});
        assert_eq!(
            paths(m.clone(), json!({"spec": {"args": ["a", "c"]}}), &[]),
            ["/spec/args/1"]
        );
        assert_eq!(
            paths(m, json!({"spec": {"args": ["a", "b", "c"]}}), &[]),
            ["/spec/args"]
        );
        // Maps added by others (tolerations) are fine; a changed one is not.
        let m = json!({"spec": {"tolerations": [{"key": "a", "effect": "NoSchedule"}]}});
        let l =
            json!({"spec": {"tolerations": [{"key": "b"}, {"key": "a", "effect": "NoSchedule"}]}});
        assert!(paths(m.clone(), l, &[]).is_empty());
        let l = json!({"spec": {"tolerations": [{"key": "b"}, {"key": "a"}]}});
        assert_eq!(paths(m, l, &[]), ["/spec/tolerations"]);
    }

    #[test]
    fn ignored_paths_and_everything_under_them_are_not_compared() {
        let m =
            json!({"spec": {"replicas": 2, "template": {"metadata": {"annotations": {"a": "1"}}}}});
        let l =
            json!({"spec": {"replicas": 5, "template": {"metadata": {"annotations": {"a": "2"}}}}});
        assert!(paths(m.clone(), l.clone(), &["/spec/replicas", "/spec/template"]).is_empty());
        // A prefix of a key is not its parent.
        assert_eq!(
            paths(m, l, &["/spec/replica", "/spec/template/metadata"]),
            ["/spec/replicas"]
        );
    }

    #[test]
    fn secret_string_data_compares_with_data_and_no_value_is_reported() {
        let m = json!({"kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"user": "admin"}, "data": {"password": "c2VjcmV0"}});
        let l = json!({"kind": "Secret", "metadata": {"name": "s"},
            "data": {"user": "YWRtaW4=", "password": "c2VjcmV0"}});
        assert!(paths(m.clone(), l, &[]).is_empty());
        let l = json!({"kind": "Secret", "metadata": {"name": "s"},
            "data": {"user": "cm9vdA==", "password": "b3RoZXI="}});
        let d = compare(&m, &l, &[]);
        assert_eq!(
            d.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
            ["/data/password", "/stringData/user"]
        );
        let shown = serde_json::to_string(&d).unwrap();
        assert!(!shown.contains("b3RoZXI") && !shown.contains("c2VjcmV0"));
    }

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"admin"), "YWRtaW4=");
    }

    #[test]
    fn pointers_must_start_with_a_slash_and_escape_tilde() {
        assert!(check_pointer("/spec/replicas").is_ok());
        assert!(check_pointer("/metadata/labels/a~1b~0c").is_ok());
        assert!(check_pointer("spec/replicas").is_err());
        assert!(check_pointer("").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn ignore_rules_match_by_kind_and_name() {
        let p = DriftPolicy {
            mode: DriftMode::Warn,
            ignore: vec![
                IgnoreRule {
                    kind: "Deployment".into(),
                    name: None,
                    paths: vec!["/spec/replicas".into()],
                },
                IgnoreRule {
                    kind: "ConfigMap".into(),
                    name: Some("a".into()),
                    paths: vec!["/data".into()],
                },
            ],
        };
        assert_eq!(p.ignored("Deployment", "x"), ["/spec/replicas"]);
        assert_eq!(p.ignored("ConfigMap", "a"), ["/data"]);
        assert!(p.ignored("ConfigMap", "b").is_empty());
    }
}
