//! Shared pure helpers for the simulated controllers: per-object behaviour read from
//! annotations, timestamps, template hashes, conditions and owner references.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Annotation: the object (its pods) becomes ready only after this long, e.g. `"3s"`, `"250ms"`.
pub const ANN_READY_AFTER: &str = "kubesim.strata.dev/ready-after";
/// Annotation: `"true"` makes the object (its pods) run but never become ready.
pub const ANN_NEVER_READY: &str = "kubesim.strata.dev/never-ready";
/// Annotation: `"true"` makes the object fail (Jobs fail, Pods crash-loop, Deployments never
/// progress).
pub const ANN_FAIL: &str = "kubesim.strata.dev/fail";

/// How one object behaves, read from its annotations (and its owners' and template's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Ready (or, for run-to-completion pods, finished) only after this long.
    pub ready_after: Option<Duration>,
    /// Runs but never becomes ready (run-to-completion pods never finish).
    pub never_ready: bool,
    /// Fails: pods crash-loop, run-to-completion pods end `Failed`.
    pub fail: bool,
}

impl Behaviour {
    /// Reads the behaviour annotations of one annotation map. Unknown or malformed values are
    /// ignored (returned in the second element so the driver can log them).
    pub fn from_annotations(ann: Option<&Value>) -> (Behaviour, Vec<String>) {
        let mut b = Behaviour::default();
        let mut problems = Vec::new();
        let Some(Value::Object(map)) = ann else {
            return (b, problems);
        };
        if let Some(v) = map.get(ANN_READY_AFTER).and_then(Value::as_str) {
            match parse_duration(v) {
                Some(d) => b.ready_after = Some(d),
                None => problems.push(format!(
                    "annotation {ANN_READY_AFTER}={v:?} is not a duration like \"3s\" or \"250ms\"; ignored"
                )),
            }
        }
        b.never_ready = flag(map, ANN_NEVER_READY, &mut problems);
        b.fail = flag(map, ANN_FAIL, &mut problems);
        (b, problems)
    }

    /// Fills every setting `self` leaves unset from `other` (a more distant source: the
    /// template or an owner).
    pub fn or(self, other: &Behaviour) -> Behaviour {
        Behaviour {
            ready_after: self.ready_after.or(other.ready_after),
            never_ready: self.never_ready || other.never_ready,
            fail: self.fail || other.fail,
        }
    }

    /// Whether any setting is present.
    pub fn is_default(&self) -> bool {
        *self == Behaviour::default()
    }
}

fn flag(map: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> bool {
    match map.get(key) {
        None => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            problems.push(format!(
                "annotation {key}={other} is neither \"true\" nor \"false\"; ignored"
            ));
            false
        }
    }
}

/// Parses `"3s"`, `"1.5s"`, `"250ms"`, `"2m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// Formats a wall-clock time as RFC 3339 in UTC with second precision, as Kubernetes does
/// (`2026-11-24T02:55:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses an RFC 3339 UTC timestamp as Kubernetes writes it (`2026-11-24T02:55:00Z`, optional
/// fractional seconds).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let secs = days_from_civil(y, m as u32, day as u32) * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month index from March
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 32-bit FNV-1a over a canonical serialization of `v` (object keys sorted), so the hash does
/// not depend on key order.
pub fn fnv32a(v: &Value) -> u32 {
    let mut canon = String::new();
    canonical(v, &mut canon);
    let mut h: u32 = 0x811c_9dc5;
    for b in canon.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                canonical(&map[k], out);
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
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Encodes a hash the way Kubernetes names pod-template hashes: the decimal digits mapped onto
/// an alphabet without vowels, so names never spell words.
pub fn safe_hash(h: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|c| ALPHABET[usize::from(c) % ALPHABET.len()] as char)
        .collect()
}

/// A pod template's hash as used in `pod-template-hash` and `controller-revision-hash`.
pub fn template_hash(template: &Value) -> String {
    safe_hash(fnv32a(template))
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.generation` (1 when absent).
pub fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// Whether the object is being deleted.
pub fn terminating(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// An integer at `ptr`, or `default`.
pub fn int_at(obj: &Value, ptr: &str, default: i64) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(default)
}

/// The uid of the object's controlling owner (ownerReference with `controller: true`).
pub fn controller_uid(obj: &Value) -> Option<&str> {
    controller_ref(obj)
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

/// The controlling ownerReference, if any.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
}

/// Whether `child` is controlled by `owner`.
pub fn controlled_by(child: &Value, owner: &Value) -> bool {
    controller_uid(child).is_some_and(|u| !u.is_empty() && u == uid(owner))
}

/// An ownerReference pointing at `owner` as its controller.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Builds a condition list, keeping `lastTransitionTime` (and `lastUpdateTime`, `lastProbeTime`)
/// of an existing condition whose status did not change so that repeated reconciles write
/// nothing new. Each entry of `wanted` is (type, status, reason, message).
pub fn conditions(
    existing: Option<&Value>,
    wanted: &[(&str, &str, &str, &str)],
    now: &str,
    with_update_time: bool,
) -> Value {
    let old: &[Value] = existing
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut out = Vec::with_capacity(wanted.len());
    for (ty, status, reason, message) in wanted {
        let prev = old
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(ty));
        let same_status =
            prev.is_some_and(|c| c.get("status").and_then(Value::as_str) == Some(status));
        let same_all = same_status
            && prev.is_some_and(|c| {
                c.get("reason").and_then(Value::as_str) == Some(reason)
                    && c.get("message").and_then(Value::as_str) == Some(message)
            });
        let keep = |field: &str, cond: bool| -> Value {
            match prev.and_then(|c| c.get(field)) {
                Some(v) if cond && !v.is_null() => v.clone(),
                _ => Value::String(now.to_owned()),
            }
        };
        let mut c = Map::new();
        c.insert("type".into(), json!(ty));
        c.insert("status".into(), json!(status));
        if !reason.is_empty() {
            c.insert("reason".into(), json!(reason));
        }
        if !message.is_empty() {
            c.insert("message".into(), json!(message));
        }
        c.insert(
            "lastTransitionTime".into(),
            keep("lastTransitionTime", same_status),
        );
        if with_update_time {
            c.insert("lastUpdateTime".into(), keep("lastUpdateTime", same_all));
        }
        out.push(Value::Object(c));
    }
    Value::Array(out)
}

/// Finds the condition `ty` and returns its status.
pub fn condition_status<'a>(obj: &'a Value, ty: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
}

/// Returns a copy of `obj` whose `status` is `status`.
pub fn with_status(obj: &Value, status: Value) -> Value {
    let mut out = obj.clone();
    if let Value::Object(map) = &mut out {
        map.insert("status".into(), status);
    }
    out
}

/// Resolves an int-or-percent (`maxUnavailable: 25%` or `1`) against `total`, rounding up
/// (`round_up`) or down like Kubernetes does for surge / unavailable.
pub fn int_or_percent(v: Option<&Value>, total: i64, default: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

/// A deterministic address inside `prefix` (e.g. `[10, 244]`) derived from a uid.
pub fn ip_for(prefix: [u8; 2], uid: &str) -> String {
    let h = fnv32a(&Value::String(uid.to_owned()));
    let third = (h >> 8) as u8;
    let fourth = (h as u8).clamp(2, 254);
    format!("{}.{}.{third}.{fourth}", prefix[0], prefix[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_common_units() {
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("4"), Some(Duration::from_secs(4)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("3 fortnights"), None);
    }

    #[test]
    fn behaviour_reads_annotations_and_reports_bad_values() {
        let ann = json!({ANN_READY_AFTER: "2s", ANN_FAIL: "true", ANN_NEVER_READY: "yes"});
        let (b, problems) = Behaviour::from_annotations(Some(&ann));
        assert_eq!(b.ready_after, Some(Duration::from_secs(2)));
        assert!(b.fail);
        assert!(!b.never_ready);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(ANN_NEVER_READY));
    }

    #[test]
    fn behaviour_or_prefers_the_nearer_source() {
        let near = Behaviour {
            ready_after: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let far = Behaviour {
            ready_after: Some(Duration::from_secs(9)),
            fail: true,
            never_ready: false,
        };
        let merged = near.or(&far);
        assert_eq!(merged.ready_after, Some(Duration::from_secs(1)));
        assert!(merged.fail);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29T12:34:56Z
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31T23:59:59Z
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0u64, 951_782_400, 1_709_210_096, 4_102_444_799] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{secs}");
        }
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.123456Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_210_096))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn template_hash_ignores_key_order_but_not_content() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":[1,2]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"c":[1,2]},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b":{"c":[2,1]},"a":1}"#).unwrap();
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(
            template_hash(&a)
                .chars()
                .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch))
        );
    }

    #[test]
    fn conditions_keep_transition_time_while_status_holds() {
        let old = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]);
        let same = conditions(Some(&old), &[("Ready", "True", "", "")], "T1", false);
        assert_eq!(same[0]["lastTransitionTime"], "T0");
        let flipped = conditions(Some(&old), &[("Ready", "False", "X", "m")], "T1", false);
        assert_eq!(flipped[0]["lastTransitionTime"], "T1");
        assert_eq!(flipped[0]["reason"], "X");
    }

    #[test]
    fn int_or_percent_rounds_like_kubernetes() {
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, 0, true), 1);
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, 0, false), 0);
        assert_eq!(int_or_percent(Some(&json!(2)), 3, 0, false), 2);
        assert_eq!(int_or_percent(None, 3, 7, false), 7);
    }

    #[test]
    fn owner_refs_mark_the_controller() {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "r", "uid": "u1"}});
        let child = json!({"metadata": {"ownerReferences": [owner_ref(&owner)]}});
        assert!(controlled_by(&child, &owner));
        let other = json!({"metadata": {"name": "r", "uid": "u2"}});
        assert!(!controlled_by(&child, &other));
    }
}
