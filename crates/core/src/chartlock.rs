//! Dependencies of charts (`dependencies:` of Chart.yaml) as helm judges them: the digest a
//! `Chart.lock` carries (helm's `HashReq`) and the path a `file://` dependency names inside
//! the repository. Pure: no file system, no network.

use sha2::Digest;

/// `chart_rel/path` with `.` and `..` applied lexically; an error when it is absolute or
/// climbs out of the repository.
pub fn normalize(chart_rel: &str, path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.is_empty() {
        return Err(format!(
            "file://{path} must be a path relative to the chart inside the repository"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in chart_rel.split('/').chain(path.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "file://{path} points outside the repository (from the chart at {chart_rel}); a file:// dependency must stay inside the Git repository"
                    ));
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "file://{path} names the repository's root, not a chart"
        ));
    }
    Ok(parts.join("/"))
}

/// Go's `encoding/json` string: `<`, `>`, `&`, U+2028 and U+2029 escaped as helm's digest has
/// them.
fn go_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => {
            let mut out = String::from("\"");
            for ch in serde_json::to_string(s)
                .unwrap_or_default()
                .trim_matches('"')
                .chars()
            {
                match ch {
                    '<' => out.push_str("\\u003c"),
                    '>' => out.push_str("\\u003e"),
                    '&' => out.push_str("\\u0026"),
                    '\u{2028}' => out.push_str("\\u2028"),
                    '\u{2029}' => out.push_str("\\u2029"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(go_json).collect::<Vec<_>>().join(",")
            )
        }
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        go_json(&serde_json::Value::String(k.clone())),
                        go_json(&m[k])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        other => other.to_string(),
    }
}

/// One dependency as helm's `chart.Dependency` marshals it (fields in its order, empty ones
/// left out but `repository`).
fn go_dependency(d: &serde_json::Value) -> String {
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let str_v = |t: String| go_json(&serde_json::Value::String(t));
    let mut fields = vec![format!("\"name\":{}", str_v(s("name")))];
    let version = s("version");
    if !version.is_empty() {
        fields.push(format!("\"version\":{}", str_v(version)));
    }
    fields.push(format!("\"repository\":{}", str_v(s("repository"))));
    let condition = s("condition");
    if !condition.is_empty() {
        fields.push(format!("\"condition\":{}", str_v(condition)));
    }
    if let Some(tags) = d
        .get("tags")
        .and_then(|t| t.as_array())
        .filter(|t| !t.is_empty())
    {
        fields.push(format!(
            "\"tags\":{}",
            go_json(&serde_json::Value::Array(tags.clone()))
        ));
    }
    if d.get("enabled").and_then(|e| e.as_bool()) == Some(true) {
        fields.push("\"enabled\":true".into());
    }
    if let Some(iv) = d
        .get("import-values")
        .and_then(|t| t.as_array())
        .filter(|t| !t.is_empty())
    {
        fields.push(format!(
            "\"import-values\":{}",
            go_json(&serde_json::Value::Array(iv.clone()))
        ));
    }
    let alias = s("alias");
    if !alias.is_empty() {
        fields.push(format!("\"alias\":{}", str_v(alias)));
    }
    format!("{{{}}}", fields.join(","))
}

/// helm's `HashReq(req, lock)`: `sha256:` and the hex digest of the JSON of both lists.
pub fn lock_digest(req: &[serde_json::Value], lock: &[serde_json::Value]) -> String {
    let list = |ds: &[serde_json::Value]| {
        format!(
            "[{}]",
            ds.iter().map(go_dependency).collect::<Vec<_>>().join(",")
        )
    };
    let json = format!("[{},{}]", list(req), list(lock));
    format!("sha256:{:x}", sha2::Sha256::digest(json.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(yaml: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(yaml).unwrap();
        v.as_array().unwrap().clone()
    }

    // Digests written by `helm dependency update` (helm 4 and 3 agree).
    #[test]
    fn lock_digest_is_helms() {
        let req = deps(r#"[{"name": "sub", "version": ">=0.1.0", "repository": "file://../sub"}]"#);
        let lock = deps(r#"[{"name": "sub", "repository": "file://../sub", "version": "0.2.0"}]"#);
        assert_eq!(
            lock_digest(&req, &lock),
            "sha256:5e96d23c183a09a017ef112bd482e3e200d4107852dd855fb41955de74aa023d"
        );
        let req = deps(
            r#"[{"name": "sub", "version": "0.2.0", "repository": "file://../sub", "condition": "sub.enabled", "alias": "s2", "tags": ["a"]}]"#,
        );
        assert_eq!(
            lock_digest(&req, &lock),
            "sha256:3a2647a826a4edafe466969540b204aeac6762ba5a9ffff961bda60b77d2e264"
        );
    }

    #[test]
    fn file_paths_stay_in_the_repository() {
        assert_eq!(
            normalize("charts/app", "../partials").unwrap(),
            "charts/partials"
        );
        assert_eq!(normalize("app", "./sub/x").unwrap(), "app/sub/x");
        let e = normalize("charts/app", "../../../etc").unwrap_err();
        assert!(e.contains("outside the repository"), "{e}");
        assert!(normalize("app", "/etc").is_err());
        assert!(normalize("app", "..").is_err());
    }

    #[test]
    fn go_json_escapes_like_go() {
        assert_eq!(
            go_json(&serde_json::json!({"b": "<&>", "a": ["x\"y"]})),
            r#"{"a":["x\"y"],"b":"\u003c\u0026\u003e"}"#
        );
    }
}
