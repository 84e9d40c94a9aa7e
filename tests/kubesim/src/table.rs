//! `meta.k8s.io/v1 Table` rendering for `kubectl get` (`Accept: ...;as=Table`), with the
//! columns the real server prints for common kinds.

use crate::registry::ResourceKey;
use serde_json::{Value, json};

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

/// `kubectl`'s human duration (`5s`, `3m2s`, `40m`, `5h`, `3d`).
pub fn human_age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => {
            if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{}m{}s", s / 60, s % 60)
            }
        }
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => {
            let m = (s / 60) % 60;
            if m == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h{m}m", s / 3600)
            }
        }
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

type Col = (&'static str, &'static str);

fn columns(res: &ResourceKey) -> Vec<Col> {
    let c: &[Col] = match (res.group.as_str(), res.resource.as_str()) {
        ("", "pods") => &[
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
        ],
        ("apps", "deployments") => &[
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
        ],
        ("apps", "replicasets") => &[
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
        ],
        ("apps", "statefulsets") => &[("Ready", "string")],
        ("apps", "daemonsets") => &[
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Node Selector", "string"),
        ],
        ("batch", "jobs") => &[
            ("Status", "string"),
            ("Completions", "string"),
            ("Duration", "string"),
        ],
        ("", "services") => &[
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
        ],
        ("", "configmaps") => &[("Data", "integer")],
        ("", "secrets") => &[("Type", "string"), ("Data", "integer")],
        ("", "namespaces") => &[("Status", "string")],
        ("", "persistentvolumeclaims") => &[
            ("Status", "string"),
            ("Volume", "string"),
            ("Capacity", "string"),
            ("Access Modes", "string"),
            ("StorageClass", "string"),
        ],
        _ => &[],
    };
    c.to_vec()
}

fn cells(res: &ResourceKey, o: &Value, now: i64) -> Vec<Value> {
    let spec = &o["spec"];
    let st = &o["status"];
    match (res.group.as_str(), res.resource.as_str()) {
        ("", "pods") => {
            let cs = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map(Vec::len).unwrap_or(0);
            let ready = cs.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = cs.iter().map(|c| n(&c["restartCount"])).sum();
            let waiting = cs
                .iter()
                .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(String::from));
            let status = waiting.unwrap_or_else(|| s(&st["phase"]));
            vec![
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
            ]
        }
        ("apps", "deployments") => vec![
            json!(format!(
                "{}/{}",
                n(&st["readyReplicas"]),
                n(&spec["replicas"])
            )),
            json!(n(&st["updatedReplicas"])),
            json!(n(&st["availableReplicas"])),
        ],
        ("apps", "replicasets") => vec![
            json!(n(&spec["replicas"])),
            json!(n(&st["replicas"])),
            json!(n(&st["readyReplicas"])),
        ],
        ("apps", "statefulsets") => vec![json!(format!(
            "{}/{}",
            n(&st["readyReplicas"]),
            n(&spec["replicas"])
        ))],
        ("apps", "daemonsets") => {
            let sel = spec["template"]["spec"]["nodeSelector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                json!(n(&st["desiredNumberScheduled"])),
                json!(n(&st["currentNumberScheduled"])),
                json!(n(&st["numberReady"])),
                json!(n(&st["updatedNumberScheduled"])),
                json!(n(&st["numberAvailable"])),
                json!(or_none(sel)),
            ]
        }
        ("batch", "jobs") => {
            let conds = st["conditions"].as_array().cloned().unwrap_or_default();
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let start = crate::util::parse_rfc3339(st["startTime"].as_str().unwrap_or(""));
            let end = crate::util::parse_rfc3339(st["completionTime"].as_str().unwrap_or(""))
                .unwrap_or(now);
            let duration = start.map(|s0| human_age(end - s0)).unwrap_or_default();
            let completions = if spec["completions"].is_null() {
                "1".to_string()
            } else {
                n(&spec["completions"]).to_string()
            };
            vec![
                json!(status),
                json!(format!("{}/{completions}", n(&st["succeeded"]))),
                json!(duration),
            ]
        }
        ("", "services") => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p["nodePort"].as_i64() {
                    Some(np) => format!("{}:{np}/{}", n(&p["port"]), s(&p["protocol"])),
                    None => format!("{}/{}", n(&p["port"]), s(&p["protocol"])),
                })
                .collect();
            let lb: Vec<String> = st["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(String::from)
                })
                .collect();
            let external = if !lb.is_empty() {
                lb.join(",")
            } else if spec["type"] == "LoadBalancer" {
                "<pending>".into()
            } else {
                "<none>".into()
            };
            vec![
                json!(s(&spec["type"])),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(external),
                json!(or_none(ports.join(","))),
            ]
        }
        ("", "configmaps") => {
            let d = o["data"].as_object().map(|m| m.len()).unwrap_or(0)
                + o["binaryData"].as_object().map(|m| m.len()).unwrap_or(0);
            vec![json!(d)]
        }
        ("", "secrets") => vec![
            json!(s(&o["type"])),
            json!(o["data"].as_object().map(|m| m.len()).unwrap_or(0)),
        ],
        ("", "namespaces") => vec![json!(s(&st["phase"]))],
        ("", "persistentvolumeclaims") => {
            let modes: Vec<String> = st["accessModes"]
                .as_array()
                .or(spec["accessModes"].as_array())
                .into_iter()
                .flatten()
                .map(|m| match m.as_str().unwrap_or("") {
                    "ReadWriteOnce" => "RWO".to_string(),
                    "ReadOnlyMany" => "ROX".to_string(),
                    "ReadWriteMany" => "RWX".to_string(),
                    "ReadWriteOncePod" => "RWOP".to_string(),
                    other => other.to_string(),
                })
                .collect();
            vec![
                json!(s(&st["phase"])),
                json!(s(&spec["volumeName"])),
                json!(s(&st["capacity"]["storage"])),
                json!(modes.join(",")),
                json!(or_none(s(&spec["storageClassName"]))),
            ]
        }
        _ => vec![],
    }
}

/// Evaluates the JSONPath subset CRD printer columns use: `.a.b`, `.a[0].b`, and
/// `.a[?(@.k=="v")].b`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('.');
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (field, tail) = rest.split_at(end);
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        rest = tail;
        if let Some(t) = rest.strip_prefix('[') {
            let close = t.find(']')?;
            let inner = &t[..close];
            rest = &t[close + 1..];
            cur = if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let (k, v) = filter.split_once("==")?;
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                cur.as_array()?
                    .iter()
                    .find(|e| e[k.trim()].as_str() == Some(v))?
            } else {
                cur.get(inner.parse::<usize>().ok()?)?
            };
        }
        rest = rest.trim_start_matches('.');
    }
    Some(cur)
}

/// Renders objects as a Table. `include_object`: `Metadata` (default), `Object` or `None`;
/// `printer_columns` are a CRD's additional printer columns (name, type, JSONPath).
pub fn render(
    res: &ResourceKey,
    printer_columns: &[(String, String, String)],
    items: Vec<Value>,
    list_meta: Value,
    include_object: &str,
) -> Value {
    let now = crate::util::now_secs();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for (name, ty) in columns(res) {
        defs.push(
            json!({"name": name, "type": ty, "format": "", "description": name, "priority": 0}),
        );
    }
    for (name, ty, _) in printer_columns {
        defs.push(
            json!({"name": name, "type": ty, "format": "", "description": name, "priority": 0}),
        );
    }
    // CRDs with printer columns define all columns themselves (no automatic Age).
    if printer_columns.is_empty() {
        defs.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = items
        .into_iter()
        .map(|o| {
            let created = crate::util::parse_rfc3339(o["metadata"]["creationTimestamp"].as_str().unwrap_or("")).unwrap_or(now);
            let mut row = vec![o["metadata"]["name"].clone()];
            row.extend(cells(res, &o, now));
            for (_, ty, path) in printer_columns {
                let v = json_path(&o, path).cloned().unwrap_or(Value::Null);
                row.push(match (ty.as_str(), v) {
                    ("date", Value::String(t)) => json!(human_age(now - crate::util::parse_rfc3339(&t).unwrap_or(now))),
                    (_, v) => v,
                });
            }
            if printer_columns.is_empty() {
                row.push(json!(human_age(now - created)));
            }
            let object = match include_object {
                "Object" => o,
                "None" => Value::Null,
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": row, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_and_pod_rows() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": crate::util::now_rfc3339()},
            "spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = render(
            &ResourceKey::new("apps", "deployments"),
            &[],
            vec![d],
            json!({}),
            "Metadata",
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["Name", "Ready", "Up-to-date", "Available", "Age"]
        );
        let row = &t["rows"][0]["cells"];
        assert_eq!(row[0], "web");
        assert_eq!(row[1], "2/3");
        assert_eq!(row[2], 3);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = render(
            &ResourceKey::new("", "pods"),
            &[],
            vec![p],
            json!({}),
            "Object",
        );
        assert_eq!(t["rows"][0]["cells"][1], "1/2");
        assert_eq!(t["rows"][0]["cells"][2], "CrashLoopBackOff");
        assert_eq!(t["rows"][0]["cells"][3], "3");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "p");
    }

    #[test]
    fn crd_printer_columns_and_json_paths() {
        let o = json!({"metadata": {"name": "w"}, "spec": {"size": 3, "items": [{"n": "a"}]},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&o, ".spec.size"), Some(&json!(3)));
        assert_eq!(json_path(&o, ".spec.items[0].n"), Some(&json!("a")));
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(json_path(&o, ".spec.missing"), None);
        let cols = vec![
            (
                "Size".to_string(),
                "integer".to_string(),
                ".spec.size".to_string(),
            ),
            (
                "Ready".to_string(),
                "string".to_string(),
                ".status.conditions[?(@.type==\"Ready\")].status".to_string(),
            ),
        ];
        let t = render(
            &ResourceKey::new("example.com", "widgets"),
            &cols,
            vec![o],
            json!({}),
            "None",
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["w", 3, "True"]),
            "no automatic Age column"
        );
        assert_eq!(t["columnDefinitions"][1]["name"], "Size");
    }

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(185), "3m5s");
        assert_eq!(human_age(2400), "40m");
        assert_eq!(human_age(5 * 3600), "5h");
        assert_eq!(human_age(3 * 86_400), "3d");
    }
}
