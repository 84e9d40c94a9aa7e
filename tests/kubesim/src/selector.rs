//! Label and field selectors, as accepted by `labelSelector=` and `fieldSelector=`.

use crate::registry::ResourceKey;
use serde_json::Value;

/// A selector that failed to parse (the message is the 400 BadRequest text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector (all requirements must match).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    reqs: Vec<(String, Op)>,
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()))
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return false;
    }
    !name.is_empty() && valid_value(name)
}

/// Splits at top-level commas (commas inside parentheses belong to a set).
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_set(rest: &str, raw: &str) -> Result<Vec<String>> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            Error(format!(
                "unable to parse requirement: found '{rest}', expected: '(' in \"{raw}\""
            ))
        })?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &vals {
        if !valid_value(v) {
            return Err(Error(format!(
                "unable to parse requirement: values[0]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            )));
        }
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses a selector such as `app=web,tier!=db,env in (a,b),!legacy,owner`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(Error(format!("found '', expected: identifier in \"{s}\"")));
            }
            let (key, op) = if let Some(k) = p.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = p.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(parse_set(v, s)?))
            } else if let Some((k, v)) = p.split_once(" in ") {
                (k.trim().to_string(), Op::In(parse_set(v, s)?))
            } else if let Some((k, v)) = p.split_once('>') {
                let n = v.trim().parse().map_err(|_| Error(format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer in \"{s}\"")))?;
                (k.trim().to_string(), Op::Gt(n))
            } else if let Some((k, v)) = p.split_once('<') {
                let n = v.trim().parse().map_err(|_| Error(format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer in \"{s}\"")))?;
                (k.trim().to_string(), Op::Lt(n))
            } else {
                (p.to_string(), Op::Exists)
            };
            if !valid_key(&key) {
                return Err(Error(format!(
                    "unable to parse requirement: key: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                )));
            }
            if let Op::Eq(v) | Op::NotEq(v) = &op
                && !valid_value(v)
            {
                return Err(Error(format!(
                    "unable to parse requirement: values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                )));
            }
            reqs.push((key, op));
        }
        Ok(LabelSelector { reqs })
    }

    /// True when the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    /// True when there are no requirements.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

fn supported_fields(res: &ResourceKey) -> &'static [&'static str] {
    match (res.group.as_str(), res.resource.as_str()) {
        ("", "secrets") => &["type"],
        ("", "pods") => &[
            "status.phase",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "persistentvolumeclaims") => &["status.phase"],
        ("batch", "jobs") => &["status.successful"],
        ("apps", "replicasets") => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace!=y` for the given resource; fields the
    /// real server does not index for that resource are rejected.
    pub fn parse(s: &str, res: &ResourceKey) -> Result<Self> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in s.split(',') {
            let p = part.trim();
            let (f, neg, v) = if let Some((f, v)) = p.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, false, v)
            } else {
                return Err(Error(format!(
                    "invalid selector: '{s}'; can't understand '{p}'"
                )));
            };
            let f = f.trim();
            if !(f == "metadata.name"
                || f == "metadata.namespace"
                || supported_fields(res).contains(&f))
            {
                return Err(Error(format!("field label not supported: {f}")));
            }
            reqs.push((f.to_string(), neg, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    /// True when the object satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(f, neg, want)| {
            let mut cur = obj;
            for seg in f.split('.') {
                cur = &cur[seg];
            }
            let got = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) != *neg
        })
    }

    /// The value required for `metadata.name`, if the selector pins it.
    pub fn name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(f, neg, _)| f == "metadata.name" && !neg)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "n1", "namespace": "ns", "labels": labels}, "type": "helm.sh/release.v1"})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"owner": "helm", "name": "rel", "status": "deployed", "v": "3"}));
        for (sel, want) in [
            ("owner=helm", true),
            ("owner==helm,name=rel", true),
            ("name=rel,owner=helm,status=deployed", true),
            ("owner!=helm", false),
            ("owner!=other", true),
            ("status in (deployed, failed)", true),
            ("status notin (deployed)", false),
            ("status notin (failed),owner", true),
            ("missing", false),
            ("!missing", true),
            ("!owner", false),
            ("v>2", true),
            ("v<2", false),
            ("missing notin (x)", true),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn invalid_label_selectors() {
        for bad in ["a in b", "a=b c", "bad key=x", "a,,b", "x in (a b)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let secrets = ResourceKey::new("", "secrets");
        let cms = ResourceKey::new("", "configmaps");
        assert!(
            FieldSelector::parse("metadata.name=n1", &cms)
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=n1", &cms)
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.namespace==ns,metadata.name=n1", &cms)
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("type=helm.sh/release.v1", &secrets)
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("type=x", &cms).is_err());
        assert!(FieldSelector::parse("nonsense", &cms).is_err());
        assert_eq!(
            FieldSelector::parse("metadata.name=abc", &cms)
                .unwrap()
                .name(),
            Some("abc")
        );
    }
}
