//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`):
//! the magic `k8s\0`, then a `runtime.Unknown` {typeMeta{apiVersion, kind}, raw,
//! contentEncoding, contentType} whose `raw` is the object's protobuf. A small hand-written
//! wire-format reader turns Secret, ConfigMap, Namespace, Event, DeleteOptions, ServiceAccount
//! and the RBAC kinds (Role, ClusterRole, RoleBinding, ClusterRoleBinding) into the
//! same JSON a JSON client would send. Field numbers follow k8s.io/api and apimachinery
//! `generated.proto`.

use base64::Engine;
use serde_json::{Map, Value, json};

/// A body that is not valid Kubernetes protobuf or holds an unsupported kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Missing `k8s\0` prefix.
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    NoMagic,
    /// Malformed wire data.
    #[error("unable to decode protobuf: {0}")]
    Malformed(&'static str),
    /// A kind this server cannot decode from protobuf.
    #[error("protobuf bodies of kind {0:?} are not supported by kubesim; send JSON")]
    Unsupported(String),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The magic prefix of Kubernetes protobuf envelopes.
pub const MAGIC: &[u8] = b"k8s\0";

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(Error::Malformed("truncated varint"))?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(Error::Malformed("varint too long"))
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let num = (key >> 3) as u32;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Wire::Fixed64
            }
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(Error::Malformed("truncated length-delimited field"))?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            5 => {
                pos += 4;
                Wire::Fixed32
            }
            _ => return Err(Error::Malformed("unsupported wire type")),
        };
        if pos > buf.len() {
            return Err(Error::Malformed("truncated fixed field"));
        }
        out.push((num, wire));
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    RepStr,
    MapStr,
    MapBytes,
    Time,
    MicroTime,
    FieldsV1,
    Msg(&'static [F]),
    RepMsg(&'static [F]),
}

type F = (u32, &'static str, Kind);

const TIME_FIELDS: &[F] = &[(1, "seconds", Kind::Int), (2, "nanos", Kind::Int)];
const OWNER_REF: &[F] = &[
    (5, "apiVersion", Kind::Str),
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];
const MANAGED_FIELDS: &[F] = &[
    (1, "manager", Kind::Str),
    (2, "operation", Kind::Str),
    (3, "apiVersion", Kind::Str),
    (4, "time", Kind::Time),
    (6, "fieldsType", Kind::Str),
    (7, "fieldsV1", Kind::FieldsV1),
    (8, "subresource", Kind::Str),
];
const OBJECT_META: &[F] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (4, "selfLink", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "generation", Kind::Int),
    (8, "creationTimestamp", Kind::Time),
    (9, "deletionTimestamp", Kind::Time),
    (10, "deletionGracePeriodSeconds", Kind::Int),
    (11, "labels", Kind::MapStr),
    (12, "annotations", Kind::MapStr),
    (13, "ownerReferences", Kind::RepMsg(OWNER_REF)),
    (14, "finalizers", Kind::RepStr),
    (17, "managedFields", Kind::RepMsg(MANAGED_FIELDS)),
];
const SECRET: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::MapBytes),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::MapStr),
    (5, "immutable", Kind::Bool),
];
const CONFIG_MAP: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::MapStr),
    (3, "binaryData", Kind::MapBytes),
    (4, "immutable", Kind::Bool),
];
const NAMESPACE_SPEC: &[F] = &[(1, "finalizers", Kind::RepStr)];
const NAMESPACE_STATUS: &[F] = &[(1, "phase", Kind::Str)];
const NAMESPACE: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "spec", Kind::Msg(NAMESPACE_SPEC)),
    (3, "status", Kind::Msg(NAMESPACE_STATUS)),
];
const OBJECT_REF: &[F] = &[
    (1, "kind", Kind::Str),
    (2, "namespace", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "fieldPath", Kind::Str),
];
const EVENT_SOURCE: &[F] = &[(1, "component", Kind::Str), (2, "host", Kind::Str)];
const EVENT_SERIES: &[F] = &[
    (1, "count", Kind::Int),
    (2, "lastObservedTime", Kind::MicroTime),
];
const EVENT: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "involvedObject", Kind::Msg(OBJECT_REF)),
    (3, "reason", Kind::Str),
    (4, "message", Kind::Str),
    (5, "source", Kind::Msg(EVENT_SOURCE)),
    (6, "firstTimestamp", Kind::Time),
    (7, "lastTimestamp", Kind::Time),
    (8, "count", Kind::Int),
    (9, "type", Kind::Str),
    (10, "eventTime", Kind::MicroTime),
    (11, "series", Kind::Msg(EVENT_SERIES)),
    (12, "action", Kind::Str),
    (13, "related", Kind::Msg(OBJECT_REF)),
    (14, "reportingComponent", Kind::Str),
    (15, "reportingInstance", Kind::Str),
];
const LOCAL_OBJECT_REF: &[F] = &[(1, "name", Kind::Str)];
const SERVICE_ACCOUNT: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "secrets", Kind::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", Kind::RepMsg(LOCAL_OBJECT_REF)),
    (4, "automountServiceAccountToken", Kind::Bool),
];
const POLICY_RULE: &[F] = &[
    (1, "verbs", Kind::RepStr),
    (2, "apiGroups", Kind::RepStr),
    (3, "resources", Kind::RepStr),
    (4, "resourceNames", Kind::RepStr),
    (5, "nonResourceURLs", Kind::RepStr),
];
const LABEL_SELECTOR_REQ: &[F] = &[
    (1, "key", Kind::Str),
    (2, "operator", Kind::Str),
    (3, "values", Kind::RepStr),
];
const LABEL_SELECTOR: &[F] = &[
    (1, "matchLabels", Kind::MapStr),
    (2, "matchExpressions", Kind::RepMsg(LABEL_SELECTOR_REQ)),
];
const AGGREGATION_RULE: &[F] = &[(1, "clusterRoleSelectors", Kind::RepMsg(LABEL_SELECTOR))];
const ROLE: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "rules", Kind::RepMsg(POLICY_RULE)),
    (3, "aggregationRule", Kind::Msg(AGGREGATION_RULE)),
];
const SUBJECT: &[F] = &[
    (1, "kind", Kind::Str),
    (2, "apiGroup", Kind::Str),
    (3, "name", Kind::Str),
    (4, "namespace", Kind::Str),
];
const ROLE_REF: &[F] = &[
    (1, "apiGroup", Kind::Str),
    (2, "kind", Kind::Str),
    (3, "name", Kind::Str),
];
const ROLE_BINDING: &[F] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "subjects", Kind::RepMsg(SUBJECT)),
    (3, "roleRef", Kind::Msg(ROLE_REF)),
];
const PRECONDITIONS: &[F] = &[(1, "uid", Kind::Str), (2, "resourceVersion", Kind::Str)];
const DELETE_OPTIONS: &[F] = &[
    (1, "gracePeriodSeconds", Kind::Int),
    (2, "preconditions", Kind::Msg(PRECONDITIONS)),
    (3, "orphanDependents", Kind::Bool),
    (4, "propagationPolicy", Kind::Str),
    (5, "dryRun", Kind::RepStr),
    (
        6,
        "ignoreStoreReadErrorWithClusterBreakingPotential",
        Kind::Bool,
    ),
];

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("string field is not UTF-8"))
}

fn bytes_of<'a>(w: &Wire<'a>) -> Result<&'a [u8]> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(Error::Malformed("expected a length-delimited field")),
    }
}

fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>)> {
    let mut k = String::new();
    let mut v = Vec::new();
    for (n, w) in fields(b)? {
        match n {
            1 => k = utf8(bytes_of(&w)?)?,
            2 => v = bytes_of(&w)?.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

fn time_value(b: &[u8], micro: bool) -> Result<Value> {
    let t = message(TIME_FIELDS, b)?;
    let secs = t["seconds"].as_i64().unwrap_or(0);
    let nanos = t["nanos"].as_i64().unwrap_or(0);
    Ok(if micro {
        json!(crate::util::rfc3339_micros(secs, (nanos / 1000) as u32))
    } else {
        json!(crate::util::rfc3339(secs))
    })
}

fn message(schema: &[F], buf: &[u8]) -> Result<Value> {
    let mut out = Map::new();
    for (num, wire) in fields(buf)? {
        let Some((_, name, kind)) = schema.iter().find(|(n, _, _)| *n == num) else {
            continue;
        };
        let name = name.to_string();
        match kind {
            Kind::Str => {
                // Go marshals every string field; JSON omits empty ones.
                let s = utf8(bytes_of(&wire)?)?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            Kind::Int => {
                let Wire::Varint(v) = wire else {
                    return Err(Error::Malformed("expected varint"));
                };
                // Zero non-pointer ints are omitted in JSON; grace periods are pointers
                // (0 means "now").
                if v != 0 || name.ends_with("racePeriodSeconds") {
                    out.insert(name, json!(v as i64));
                }
            }
            Kind::Bool => {
                let Wire::Varint(v) = wire else {
                    return Err(Error::Malformed("expected varint"));
                };
                out.insert(name, json!(v != 0));
            }
            Kind::RepStr => {
                let s = utf8(bytes_of(&wire)?)?;
                let e = out.entry(name).or_insert_with(|| json!([]));
                e.as_array_mut().expect("array").push(json!(s));
            }
            Kind::MapStr => {
                let (k, v) = map_entry(bytes_of(&wire)?)?;
                let e = out.entry(name).or_insert_with(|| json!({}));
                e[k] = json!(utf8(&v)?);
            }
            Kind::MapBytes => {
                let (k, v) = map_entry(bytes_of(&wire)?)?;
                let e = out.entry(name).or_insert_with(|| json!({}));
                e[k] = json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            Kind::Time | Kind::MicroTime => {
                // The zero time (year 1) is omitted like JSON's null timestamps.
                let t = message(TIME_FIELDS, bytes_of(&wire)?)?;
                if t["seconds"].as_i64().unwrap_or(0) > 0 || t["nanos"].as_i64().unwrap_or(0) > 0 {
                    out.insert(
                        name,
                        time_value(bytes_of(&wire)?, matches!(kind, Kind::MicroTime))?,
                    );
                }
            }
            Kind::FieldsV1 => {
                let mut raw = Vec::new();
                for (n, w) in fields(bytes_of(&wire)?)? {
                    if n == 1 {
                        raw = bytes_of(&w)?.to_vec();
                    }
                }
                let v: Value = serde_json::from_slice(&raw).unwrap_or(json!({}));
                out.insert(name, v);
            }
            Kind::Msg(s) => {
                out.insert(name, message(s, bytes_of(&wire)?)?);
            }
            Kind::RepMsg(s) => {
                let v = message(s, bytes_of(&wire)?)?;
                let e = out.entry(name).or_insert_with(|| json!([]));
                e.as_array_mut().expect("array").push(v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body into the JSON object a JSON client would send.
pub fn decode(body: &[u8]) -> Result<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or(Error::NoMagic)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, w) in fields(rest)? {
        match n {
            1 => {
                for (tn, tw) in fields(bytes_of(&w)?)? {
                    match tn {
                        1 => api_version = utf8(bytes_of(&tw)?)?,
                        2 => kind = utf8(bytes_of(&tw)?)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes_of(&w)?,
            _ => {}
        }
    }
    let schema = match kind.as_str() {
        "Secret" => SECRET,
        "ConfigMap" => CONFIG_MAP,
        "Namespace" => NAMESPACE,
        "Event" => EVENT,
        "DeleteOptions" => DELETE_OPTIONS,
        "ServiceAccount" => SERVICE_ACCOUNT,
        // Role has no aggregationRule field 3; ClusterRole does (same layout otherwise).
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        _ => return Err(Error::Unsupported(kind)),
    };
    let mut v = message(schema, raw)?;
    v["apiVersion"] = json!(if api_version.is_empty() {
        "v1".to_string()
    } else {
        api_version
    });
    v["kind"] = json!(kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hand-built wire format: tag = (field << 3) | wire type.
    fn vint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(field: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vint(u64::from(field << 3 | 2));
        out.extend(vint(payload.len() as u64));
        out.extend_from_slice(payload);
        out
    }
    fn vf(field: u32, v: u64) -> Vec<u8> {
        let mut out = vint(u64::from(field << 3));
        out.extend(vint(v));
        out
    }
    fn entry(field: u32, k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = ld(1, k.as_bytes());
        e.extend(ld(2, v));
        ld(field, &e)
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = ld(1, api_version.as_bytes());
        tm.extend(ld(2, kind.as_bytes()));
        let mut body = MAGIC.to_vec();
        body.extend(ld(1, &tm));
        body.extend(ld(2, raw));
        body.extend(ld(4, b"application/vnd.kubernetes.protobuf"));
        body
    }

    #[test]
    fn decodes_a_helm_release_secret() {
        let mut meta = ld(1, b"sh.helm.release.v1.web.v1");
        meta.extend(ld(3, b"apps"));
        meta.extend(entry(11, "owner", b"helm"));
        meta.extend(entry(11, "status", b"deployed"));
        meta.extend(ld(14, b"example.com/f"));
        let mut owner = ld(5, b"v1");
        owner.extend(ld(1, b"ConfigMap"));
        owner.extend(ld(3, b"o"));
        owner.extend(ld(4, b"u-1"));
        owner.extend(vf(6, 1));
        meta.extend(ld(13, &owner));
        let mut ts = vf(1, 1_767_323_045);
        ts.extend(vf(2, 0));
        meta.extend(ld(8, &ts));
        let mut secret = ld(1, &meta);
        secret.extend(entry(2, "release", &[0x1f, 0x8b, 0x00, 0xff]));
        secret.extend(ld(3, b"helm.sh/release.v1"));
        secret.extend(entry(4, "plain", b"text"));
        secret.extend(vf(5, 1));
        let v = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "sh.helm.release.v1.web.v1", "namespace": "apps",
                    "labels": {"owner": "helm", "status": "deployed"},
                    "finalizers": ["example.com/f"],
                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-1", "controller": true}],
                    "creationTimestamp": "2026-01-02T03:04:05Z"},
                "data": {"release": "H4sA/w=="},
                "type": "helm.sh/release.v1",
                "stringData": {"plain": "text"},
                "immutable": true,
            })
        );
    }

    #[test]
    fn decodes_configmap_namespace_and_delete_options() {
        let mut cm = ld(1, &ld(1, b"c"));
        cm.extend(entry(2, "k", b"v"));
        cm.extend(entry(3, "bin", &[1, 2, 3]));
        let v = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(v["data"], json!({"k": "v"}));
        assert_eq!(v["binaryData"], json!({"bin": "AQID"}));

        let mut ns = ld(1, &ld(1, b"team"));
        ns.extend(ld(2, &ld(1, b"kubernetes")));
        let v = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(v["spec"]["finalizers"], json!(["kubernetes"]));

        let mut del = ld(4, b"Background");
        del.extend(vf(1, 0));
        del.extend(ld(2, &ld(1, b"uid-1")));
        del.extend(ld(5, b"All"));
        let v = decode(&envelope("meta.k8s.io/v1", "DeleteOptions", &del)).unwrap();
        assert_eq!(v["propagationPolicy"], "Background");
        assert_eq!(v["gracePeriodSeconds"], 0);
        assert_eq!(v["preconditions"]["uid"], "uid-1");
        assert_eq!(v["dryRun"], json!(["All"]));
    }

    #[test]
    fn decodes_an_event_with_micro_time() {
        let mut ev = ld(1, &ld(2, b"ev-"));
        let mut obj = ld(1, b"Pod");
        obj.extend(ld(3, b"p"));
        ev.extend(ld(2, &obj));
        ev.extend(ld(3, b"Started"));
        ev.extend(vf(8, 2));
        let mut mt = vf(1, 0);
        mt.extend(vf(2, 5_000));
        ev.extend(ld(10, &mt));
        let v = decode(&envelope("v1", "Event", &ev)).unwrap();
        assert_eq!(v["metadata"]["generateName"], "ev-");
        assert_eq!(v["involvedObject"], json!({"kind": "Pod", "name": "p"}));
        assert_eq!(v["count"], 2);
        assert_eq!(v["eventTime"], "1970-01-01T00:00:00.000005Z");
    }

    #[test]
    fn empty_strings_and_zero_times_are_omitted() {
        let mut meta = ld(1, b"c");
        meta.extend(ld(2, b""));
        meta.extend(ld(3, b""));
        meta.extend(vf(7, 0));
        let neg = (-62_135_596_800i64) as u64;
        let mut t = vf(1, neg);
        t.extend(vf(2, 0));
        meta.extend(ld(8, &t));
        let cm = ld(1, &meta);
        let v = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(v["metadata"], json!({"name": "c"}));
    }

    #[test]
    fn decodes_rbac_kinds() {
        let mut rule = ld(1, b"get");
        rule.extend(ld(1, b"list"));
        rule.extend(ld(2, b""));
        rule.extend(ld(3, b"pods"));
        let mut role = ld(1, &ld(1, b"reader"));
        role.extend(ld(2, &rule));
        let v = decode(&envelope("rbac.authorization.k8s.io/v1", "Role", &role)).unwrap();
        assert_eq!(
            v["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        let mut subj = ld(1, b"ServiceAccount");
        subj.extend(ld(3, b"strata"));
        subj.extend(ld(4, b"ops"));
        let mut rr = ld(1, b"rbac.authorization.k8s.io");
        rr.extend(ld(2, b"Role"));
        rr.extend(ld(3, b"reader"));
        let mut rb = ld(1, &ld(1, b"rb"));
        rb.extend(ld(2, &subj));
        rb.extend(ld(3, &rr));
        let v = decode(&envelope(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            &rb,
        ))
        .unwrap();
        assert_eq!(
            v["subjects"],
            json!([{"kind": "ServiceAccount", "name": "strata", "namespace": "ops"}])
        );
        assert_eq!(
            v["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"})
        );
        let mut sa = ld(1, &ld(1, b"strata"));
        sa.extend(vf(4, 0));
        let v = decode(&envelope("v1", "ServiceAccount", &sa)).unwrap();
        assert_eq!(v["automountServiceAccountToken"], false);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode(b"{}"), Err(Error::NoMagic));
        assert!(matches!(
            decode(&envelope("apps/v1", "Deployment", &[])),
            Err(Error::Unsupported(_))
        ));
        let mut bad = MAGIC.to_vec();
        bad.extend([0x0a, 0x05, 0x01]);
        assert!(matches!(decode(&bad), Err(Error::Malformed(_))));
    }
}
