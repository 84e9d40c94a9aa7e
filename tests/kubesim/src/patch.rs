//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (with
//! the merge keys of built-in kinds and the `$patch`, `$setElementOrder`, `$retainKeys`,
//! `$deleteFromPrimitiveList` directives) and server-side apply (merge plus removal of fields
//! the same manager applied before but no longer applies, tracked as FieldsV1 sets).

use serde_json::{Map, Value, json};

/// A patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The patch document is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A JSON patch `test` operation failed.
    #[error("{0}")]
    TestFailed(String),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Some(p) = patch.as_object() else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn pointer_parts(path: &str) -> Result<Vec<String>> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| Error::Invalid(format!("invalid JSON pointer \"{path}\"")))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, parts: &[String], path: &str) -> Result<&'a mut Value> {
    let mut cur = doc;
    for p in &parts[..parts.len() - 1] {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| Error::Invalid(format!("doc is missing path: \"{path}\": missing value")))?;
    }
    Ok(cur)
}

fn get_at<'a>(doc: &'a Value, path: &str) -> Result<&'a Value> {
    doc.pointer(path)
        .ok_or_else(|| Error::Invalid(format!("doc is missing path: \"{path}\": missing value")))
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value> {
    let parts = pointer_parts(path)?;
    if parts.is_empty() {
        return Ok(std::mem::take(doc));
    }
    let last = parts.last().expect("non-empty").clone();
    let parent = parent_mut(doc, &parts, path)?;
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(|| {
            Error::Invalid(format!(
                "unable to remove nonexistent key: {last}: missing value"
            ))
        }),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| Error::Invalid(format!("invalid array index \"{last}\"")))?;
            if i >= a.len() {
                return Err(Error::Invalid(format!(
                    "unable to remove item at index {i}: out of bounds"
                )));
            }
            Ok(a.remove(i))
        }
        _ => Err(Error::Invalid(format!("doc is missing path: \"{path}\""))),
    }
}

fn add_at(doc: &mut Value, path: &str, val: Value, replace: bool) -> Result<()> {
    let parts = pointer_parts(path)?;
    if parts.is_empty() {
        *doc = val;
        return Ok(());
    }
    let last = parts.last().expect("non-empty").clone();
    let parent = parent_mut(doc, &parts, path)?;
    match parent {
        Value::Object(m) => {
            if replace && !m.contains_key(&last) {
                return Err(Error::Invalid(format!(
                    "replace operation does not apply: doc is missing key: {path}: missing value"
                )));
            }
            m.insert(last, val);
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(val);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| Error::Invalid(format!("invalid array index \"{last}\"")))?;
                if replace {
                    let slot = a.get_mut(i).ok_or_else(|| Error::Invalid(format!("replace operation does not apply: doc is missing key: {path}: missing value")))?;
                    *slot = val;
                } else {
                    if i > a.len() {
                        return Err(Error::Invalid(format!(
                            "unable to access invalid index: {i}: invalid index referenced"
                        )));
                    }
                    a.insert(i, val);
                }
            }
        }
        _ => return Err(Error::Invalid(format!("doc is missing path: \"{path}\""))),
    }
    Ok(())
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value> {
    let ops = ops.as_array().ok_or_else(|| {
        Error::Invalid("json: cannot unmarshal object into Go value of type jsonpatch.Patch".into())
    })?;
    let mut doc = target.clone();
    for op in ops {
        let kind = op["op"]
            .as_str()
            .ok_or_else(|| Error::Invalid("Unexpected kind: <nil>".into()))?;
        let path = op["path"].as_str().unwrap_or("");
        match kind {
            "add" => add_at(&mut doc, path, op["value"].clone(), false)?,
            "replace" => add_at(&mut doc, path, op["value"].clone(), true)?,
            "remove" => {
                remove_at(&mut doc, path)?;
            }
            "move" => {
                let from = op["from"].as_str().unwrap_or("");
                let v = remove_at(&mut doc, from)?;
                add_at(&mut doc, path, v, false)?;
            }
            "copy" => {
                let from = op["from"].as_str().unwrap_or("");
                let v = get_at(&doc, from)?.clone();
                add_at(&mut doc, path, v, false)?;
            }
            "test" => {
                let got = doc.pointer(path);
                if got != Some(&op["value"]) {
                    return Err(Error::TestFailed(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => return Err(Error::Invalid(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

/// The merge key of a list field in built-in kinds (strategic merge patch / apply), given the
/// field name and the name of the field that holds the enclosing object.
pub fn merge_key(field: &str, parent: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports"
            if matches!(
                parent,
                "containers" | "initContainers" | "ephemeralContainers"
            ) =>
        {
            "containerPort"
        }
        "ports" => "port",
        _ => return None,
    })
}

/// Primitive lists merged as sets by strategic merge patch.
fn is_primitive_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Strategic merge patch for built-in kinds. `None` means the object was deleted by a
/// `$patch: delete` at the top level.
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value> {
    Ok(smp_map(target, patch, "")?.unwrap_or(Value::Object(Map::new())))
}

fn smp_map(orig: &Value, patch: &Value, parent: &str) -> Result<Option<Value>> {
    let Some(p) = patch.as_object() else {
        return Ok(Some(patch.clone()));
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(Some(strip_directives(patch))),
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => {
            return Err(Error::Invalid(format!(
                "Unknown patch type: {other} in map: {patch}"
            )));
        }
    }
    let mut out = match orig {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let del = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(a)) = out.get_mut(field) {
                a.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        match v {
            Value::Object(_) => match smp_map(out.get(k).unwrap_or(&Value::Null), v, k)? {
                Some(m) => {
                    out.insert(k.clone(), m);
                }
                None => {
                    out.remove(k);
                }
            },
            Value::Array(items) => {
                let merged = smp_list(out.get(k), items, k, parent)?;
                out.insert(k.clone(), merged);
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = out.get_mut(&field) {
            reorder(list, &order, merge_key(&field, parent));
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(Value::Object(out)))
}

fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order
        .iter()
        .map(|o| match key {
            Some(k) => o.get(k).cloned().unwrap_or(Value::Null),
            None => o.clone(),
        })
        .collect();
    let mut ordered = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(pos) = list.iter().position(|x| ident(x) == *w) {
            ordered.push(list.remove(pos));
        }
    }
    ordered.append(list);
    *list = ordered;
}

fn smp_list(orig: Option<&Value>, items: &[Value], field: &str, parent: &str) -> Result<Value> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ));
    }
    let orig_list: Vec<Value> = orig.and_then(Value::as_array).cloned().unwrap_or_default();
    if is_primitive_set(field) {
        let mut out = orig_list;
        for i in items {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(field, parent) else {
        return Ok(Value::Array(items.iter().map(strip_directives).collect()));
    };
    if !items.iter().all(Value::is_object) {
        return Ok(Value::Array(items.to_vec()));
    }
    let mut out = orig_list;
    for item in items {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(id) = id {
                out.retain(|o| o.get(key) != Some(&id));
            }
            continue;
        }
        match pos {
            Some(i) => match smp_map(&out[i], item, field)? {
                Some(m) => out[i] = m,
                None => {
                    out.remove(i);
                }
            },
            None => out.push(strip_directives(item)),
        }
    }
    Ok(Value::Array(out))
}

/// The FieldsV1 set of an object (the format of `metadata.managedFields[].fieldsV1`).
/// Identity metadata (name, namespace, uid, resourceVersion, ...) and `status` are left out.
pub fn field_set(obj: &Value, builtin: bool) -> Value {
    let mut out = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                continue;
            }
            if k == "metadata" {
                let mut mm = Map::new();
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if matches!(
                        mk.as_str(),
                        "name"
                            | "namespace"
                            | "uid"
                            | "resourceVersion"
                            | "creationTimestamp"
                            | "generation"
                            | "managedFields"
                            | "selfLink"
                            | "deletionTimestamp"
                            | "deletionGracePeriodSeconds"
                            | "generateName"
                    ) {
                        continue;
                    }
                    mm.insert(format!("f:{mk}"), fields_of(mv, mk, "metadata", builtin));
                }
                if !mm.is_empty() {
                    out.insert("f:metadata".into(), Value::Object(mm));
                }
                continue;
            }
            out.insert(format!("f:{k}"), fields_of(v, k, "", builtin));
        }
    }
    Value::Object(out)
}

fn fields_of(v: &Value, field: &str, parent: &str, builtin: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if k.starts_with('$') {
                    continue;
                }
                out.insert(format!("f:{k}"), fields_of(v, k, field, builtin));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            if is_primitive_set(field) {
                let mut out = Map::new();
                for i in items {
                    out.insert(format!("v:{i}"), json!({}));
                }
                return Value::Object(out);
            }
            match merge_key(field, parent).filter(|_| builtin) {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    let mut out = Map::new();
                    for i in items {
                        let id = json!({key: i[key]});
                        let mut inner = match fields_of(i, field, parent, builtin) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        inner.insert(".".into(), json!({}));
                        out.insert(format!("k:{id}"), Value::Object(inner));
                    }
                    Value::Object(out)
                }
                _ => json!({}),
            }
        }
        _ => json!({}),
    }
}

/// Removes from `obj` the fields in `old_set` that are not in `new_set`.
pub fn remove_unowned(obj: &mut Value, old_set: &Value, new_set: &Value) {
    let (Some(old), Some(m)) = (old_set.as_object(), obj.as_object_mut()) else {
        return;
    };
    let empty = Map::new();
    let new = new_set.as_object().unwrap_or(&empty);
    for (k, sub_old) in old {
        let Some(name) = k.strip_prefix("f:") else {
            continue;
        };
        match new.get(k) {
            None => {
                m.remove(name);
            }
            Some(sub_new) => {
                if let Some(child) = m.get_mut(name) {
                    match child {
                        Value::Object(_) => remove_unowned(child, sub_old, sub_new),
                        Value::Array(items) => remove_from_list(items, sub_old, sub_new),
                        _ => {}
                    }
                }
            }
        }
    }
}

fn remove_from_list(items: &mut Vec<Value>, old: &Value, new: &Value) {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return;
    };
    for (k, sub_old) in old {
        if let Some(id) = k.strip_prefix("k:") {
            let Ok(Value::Object(id)) = serde_json::from_str::<Value>(id) else {
                continue;
            };
            let matches = |v: &Value| id.iter().all(|(ik, iv)| v.get(ik) == Some(iv));
            match new.get(k) {
                None => items.retain(|v| !matches(v)),
                Some(sub_new) => {
                    for v in items.iter_mut().filter(|v| matches(v)) {
                        remove_unowned(v, sub_old, sub_new);
                    }
                }
            }
        } else if let Some(val) = k.strip_prefix("v:")
            && !new.contains_key(k)
            && let Ok(val) = serde_json::from_str::<Value>(val)
        {
            items.retain(|v| *v != val);
        }
    }
}

/// Server-side apply merge of `applied` into `live`: maps merge, keyed lists of built-in kinds
/// merge by key, other lists and scalars are replaced. `prev_set` is the field set the same
/// manager applied last time; fields in it that `applied` no longer has are removed.
pub fn apply_merge(
    live: &Value,
    applied: &Value,
    prev_set: Option<&Value>,
    builtin: bool,
) -> Value {
    let mut out = live.clone();
    if let Some(prev) = prev_set {
        let new_set = field_set(applied, builtin);
        remove_unowned(&mut out, prev, &new_set);
    }
    merge_apply(&out, applied, "", "", builtin)
}

fn merge_apply(live: &Value, applied: &Value, field: &str, parent: &str, builtin: bool) -> Value {
    match applied {
        Value::Object(a) => {
            let mut out = match live {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            for (k, v) in a {
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = merge_apply(out.get(k).unwrap_or(&Value::Null), v, k, field, builtin);
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            if is_primitive_set(field) {
                let mut out: Vec<Value> = live.as_array().cloned().unwrap_or_default();
                for i in items {
                    if !out.contains(i) {
                        out.push(i.clone());
                    }
                }
                return Value::Array(out);
            }
            let key = merge_key(field, parent).filter(|_| builtin);
            match (key, live.as_array()) {
                (Some(key), Some(live_items)) if items.iter().all(|i| i.get(key).is_some()) => {
                    let mut out = live_items.clone();
                    for i in items {
                        match out.iter().position(|o| o.get(key) == i.get(key)) {
                            Some(p) => out[p] = merge_apply(&out[p], i, field, parent, builtin),
                            None => out.push(i.clone()),
                        }
                    }
                    Value::Array(out)
                }
                _ => applied.clone(),
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        let p = json!({"a": "z", "c": {"f": null}});
        assert_eq!(merge_patch(&t, &p), json!({"a": "z", "c": {"d": "e"}}));
        assert_eq!(
            merge_patch(&json!({"a": [1]}), &json!({"a": [2, 3]})),
            json!({"a": [2, 3]})
        );
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        let ops = json!([
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
            {"op": "copy", "from": "/list/0", "path": "/first"},
            {"op": "move", "from": "/first", "path": "/moved"},
            {"op": "remove", "path": "/list/1"},
            {"op": "test", "path": "/moved", "value": 1},
        ]);
        let out = json_patch(&t, &ops).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a/b": "2"}}, "list": [1, 3], "moved": 1})
        );
        let bad = json!([{"op": "test", "path": "/list/0", "value": 9}]);
        assert!(matches!(json_patch(&t, &bad), Err(Error::TestFailed(_))));
        let bad = json!([{"op": "remove", "path": "/nope"}]);
        assert!(matches!(json_patch(&t, &bad), Err(Error::Invalid(_))));
    }

    #[test]
    fn strategic_merge_by_keys_and_directives() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}], "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "c:1"}]}}}});
        let out = strategic_merge(&live, &patch).unwrap();
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["name"], "a");
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "c");
        // $patch: replace on a map, $retainKeys, $deleteFromPrimitiveList, null deletes
        let live = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "sel": {"k": 1}}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}, "sel": {"$patch": "replace", "j": 2}}});
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["spec"]["sel"], json!({"j": 2}));
        // lists without a merge key are replaced; finalizers merge as a set
        let out = strategic_merge(
            &json!({"args": ["a"], "metadata": {"finalizers": ["x"]}}),
            &json!({"args": ["b"], "metadata": {"finalizers": ["y"]}}),
        )
        .unwrap();
        assert_eq!(out["args"], json!(["b"]));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        // service ports merge by port
        let out = strategic_merge(
            &json!({"spec": {"ports": [{"port": 80, "name": "a"}]}}),
            &json!({"spec": {"ports": [{"port": 80, "name": "b"}, {"port": 81}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "b"}, {"port": 81}])
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let first =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
        let set1 = field_set(&first, true);
        let live = apply_merge(&json!({}), &first, None, true);
        let mut live = live;
        live["data"]["other"] = json!("kept");
        let second = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "3"}});
        let out = apply_merge(&live, &second, Some(&set1), true);
        assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(out["data"], json!({"x": "3", "other": "kept"}));
        // keyed lists: a container dropped from the applied config goes away
        let c1 = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        let s1 = field_set(&c1, true);
        assert!(
            s1["f:spec"]["f:containers"]
                .get("k:{\"name\":\"a\"}")
                .is_some()
        );
        let live = apply_merge(&json!({}), &c1, None, true);
        let c2 = json!({"spec": {"containers": [{"name": "a", "image": "2"}]}});
        let out = apply_merge(&live, &c2, Some(&s1), true);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "2"}])
        );
    }
}
