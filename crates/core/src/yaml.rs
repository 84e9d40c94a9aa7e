//! A small YAML document tree with positions, and helpers that validate it field by field.
//!
//! Parsing goes through serde-saphyr into [`Node`] (every node keeps its line and column and
//! every mapping keeps all its entries, duplicates included), so validators can report every
//! problem at once (unknown fields, wrong types, duplicate keys) instead of stopping at the
//! first one as a derived `Deserialize` would.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::problem::{Problem, Problems};

/// A YAML node and where it starts (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: u32,
    pub column: u32,
    /// Byte range of the node in the parsed text, when known.
    pub span: Option<(usize, usize)>,
    /// Which file the node was read from, as an index into the files a [`Ctx`] knows
    /// (0: the file being validated). Only lists composed from several files
    /// ([`crate::compose`]) use other indexes.
    pub origin: u32,
    pub value: Value,
}

/// The value of a YAML node. Mappings keep every entry in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn bare(value: Value) -> Self {
        Self {
            line: 0,
            column: 0,
            span: None,
            origin: 0,
            value,
        }
    }

    /// A node made by merging others: `value` at `at`'s position and file.
    pub(crate) fn made(at: &Node, value: Value) -> Self {
        Self {
            line: at.line,
            column: at.column,
            span: None,
            origin: at.origin,
            value,
        }
    }

    /// Mark this node and every node below it as read from file `origin`.
    pub(crate) fn set_origin(&mut self, origin: u32) {
        self.origin = origin;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_origin(origin)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.set_origin(origin);
                v.set_origin(origin);
            }),
            _ => {}
        }
    }

    /// The node's text as written in `source` (the text it was parsed from), when known.
    /// Used where the spelling matters, e.g. a version `1.10` that YAML reads as a number.
    pub fn raw<'t>(&self, source: &'t str) -> Option<&'t str> {
        let (start, len) = self.span?;
        source.get(start..start.checked_add(len)?)
    }

    /// Scalar text, preferring the spelling in `source` for numbers (`1.10` stays `1.10`).
    pub fn scalar_text_in(&self, source: &str) -> Option<String> {
        match &self.value {
            Value::Float(_) | Value::Int(_) | Value::UInt(_) => self
                .raw(source)
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .or_else(|| self.scalar_text()),
            _ => self.scalar_text(),
        }
    }

    /// A short name of the node's type for messages ("a string", "a mapping", ...).
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar as text, the way a YAML key or a string-typed field would read it.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some("null".into()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::UInt(u) => Some(u.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Convert to JSON. Non-string mapping keys become their text; for duplicate keys the
    /// last entry wins; floats that JSON cannot hold become null.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.scalar_text().unwrap_or_else(|| k.to_json().to_string());
                    m.insert(key, v.to_json());
                }
                J::Object(m)
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Int(i))
        } else if let Ok(u) = u64::try_from(v) {
            Ok(Value::UInt(u))
        } else {
            Ok(Value::Str(v.to_string()))
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.visit_i128(i128::try_from(v).unwrap_or(i128::MAX))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<Value>::deserialize(d)?;
        let span = s.referenced.span();
        let span = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => usize::try_from(o).ok().zip(usize::try_from(l).ok()),
            _ => None,
        };
        Ok(Node {
            line: u32::try_from(s.referenced.line()).unwrap_or(u32::MAX),
            column: u32::try_from(s.referenced.column()).unwrap_or(u32::MAX),
            span,
            origin: 0,
            value: s.value,
        })
    }
}

/// Deepest nesting of collections accepted. Each level costs tens of kilobytes of stack in
/// unoptimized builds (about 50 levels overflow a 2 MiB thread stack), so the limit stays well
/// below serde-saphyr's default of 64; real values files rarely nest beyond 15.
pub const MAX_DEPTH: usize = 32;

/// Most YAML events that aliases (`*name`) may replay in one document.
pub const MAX_ALIAS_EVENTS: usize = 20_000;

/// Parse one YAML document. An empty document (or one holding only comments) is `null`.
/// Syntax errors become one problem with the position serde-saphyr reports. A budget bounds
/// the work a hostile document can cause: nesting depth [`MAX_DEPTH`], serde-saphyr's default
/// node, event and alias limits.
pub fn parse(file: &str, text: &str) -> Result<Node, Problem> {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_depth = MAX_DEPTH;
    parse_with_budget(file, text, Some(budget))
}

/// Like [`parse`] with room for big generated documents such as the `index.yaml` of a large
/// chart repository (millions of nodes); the nesting depth stays limited.
pub fn parse_large(file: &str, text: &str) -> Result<Node, Problem> {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_events = 50_000_000;
    budget.max_nodes = 20_000_000;
    budget.max_depth = MAX_DEPTH;
    parse_with_budget(file, text, Some(budget))
}

fn parse_with_budget(
    file: &str,
    text: &str,
    budget: Option<serde_saphyr::budget::Budget>,
) -> Result<Node, Problem> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Ok(Node::bare(Value::Null));
    }
    let mut options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    options.budget = budget;
    // Numbers like helm (YAML 1.1): `012` is octal 10.
    options.legacy_octal_numbers = true;
    // Aliases are for small reuse in hand-written files; an alias bomb stops early.
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(n) => Ok(n),
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unreadable YAML")
                .to_owned();
            let mut p = Problem::new(file, "", format!("invalid YAML: {first}"));
            if let Some(loc) = e.location() {
                p = p.at(
                    u32::try_from(loc.line()).unwrap_or(0),
                    u32::try_from(loc.column()).unwrap_or(0),
                );
            }
            Err(p)
        }
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Collects problems for one file.
pub(crate) struct Ctx<'f> {
    pub file: &'f str,
    /// The text being validated (for [`Node::raw`]); empty when not needed.
    pub source: &'f str,
    /// Every file nodes may come from, as (name, text), by [`Node::origin`]; index 0 is
    /// `file` and `source`.
    pub files: Vec<(&'f str, &'f str)>,
    pub problems: Problems,
}

impl<'f> Ctx<'f> {
    pub fn new(file: &'f str) -> Self {
        Self::with_source(file, "")
    }

    pub fn with_source(file: &'f str, source: &'f str) -> Self {
        Self {
            file,
            source,
            files: vec![(file, source)],
            problems: Problems::new(),
        }
    }

    /// A context for nodes read from several files (`files[0]` is the main one).
    pub fn with_files(files: Vec<(&'f str, &'f str)>) -> Self {
        let (file, source) = files.first().copied().unwrap_or(("", ""));
        Self {
            file,
            source,
            files,
            problems: Problems::new(),
        }
    }

    /// The name of the file `node` was read from.
    pub fn file_of(&self, node: &Node) -> &'f str {
        self.files
            .get(node.origin as usize)
            .map_or(self.file, |f| f.0)
    }

    /// The text of the file `node` was read from (for [`Node::raw`]).
    pub fn source_of(&self, node: &Node) -> &'f str {
        self.files
            .get(node.origin as usize)
            .map_or(self.source, |f| f.1)
    }

    pub fn report(&mut self, node: Option<&Node>, field: &str, message: impl Into<String>) {
        let file = node.map_or(self.file, |n| self.file_of(n));
        let mut p = Problem::new(file, field, message);
        if let Some(n) = node {
            p = p.at(n.line, n.column);
        }
        self.problems.push(p);
    }

    /// The node as a mapping with string keys. Reports a wrong type, duplicate keys and, when
    /// `allowed` is given, every key not in it.
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: Option<&[&str]>,
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(e) => e,
            Value::Null => return Some(Fields::empty(node)),
            _ => {
                self.report(
                    Some(node),
                    path,
                    format!("must be a mapping, found {}", node.type_name()),
                );
                return None;
            }
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.scalar_text() else {
                self.report(Some(k), path, "mapping keys must be strings");
                continue;
            };
            if !seen.insert(key.clone()) {
                self.report(
                    Some(k),
                    &join(path, &key),
                    format!("duplicate key `{key}`: each key may appear once"),
                );
                continue;
            }
            if let Some(allowed) = allowed
                && !allowed.contains(&key.as_str())
            {
                self.report(
                    Some(k),
                    &join(path, &key),
                    format!(
                        "unknown field `{key}`; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.push((key, k, v));
        }
        Some(Fields { node, entries: out })
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.report(
                    Some(node),
                    path,
                    format!("must be a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => Some(&[]),
            _ => {
                self.report(
                    Some(node),
                    path,
                    format!("must be a list, found {}", node.type_name()),
                );
                None
            }
        }
    }

    /// A required field: reports its absence at the mapping's position.
    pub fn required<'n>(&mut self, fields: &Fields<'n>, key: &str, path: &str) -> Option<&'n Node> {
        let n = fields.get(key);
        if n.is_none() {
            self.report(
                Some(fields.node),
                &join(path, key),
                format!("missing required field `{key}`"),
            );
        }
        n
    }
}

/// Report duplicate keys at any depth below `node` (for free-form content such as values).
pub(crate) fn check_duplicate_keys(ctx: &mut Ctx<'_>, node: &Node, path: &str) {
    match &node.value {
        Value::Map(entries) => {
            let mut seen = BTreeSet::new();
            for (k, v) in entries {
                let key = k.scalar_text().unwrap_or_default();
                let p = join(path, &key);
                if !seen.insert(key.clone()) {
                    ctx.report(
                        Some(k),
                        &p,
                        format!("duplicate key `{key}`: each key may appear once"),
                    );
                }
                check_duplicate_keys(ctx, v, &p);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                check_duplicate_keys(ctx, item, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

/// The validated entries of one mapping.
pub(crate) struct Fields<'n> {
    pub node: &'n Node,
    pub entries: Vec<(String, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn empty(node: &'n Node) -> Self {
        Self {
            node,
            entries: Vec::new(),
        }
    }

    /// The value of `key`; an explicit `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, v)| k == key && v.value != Value::Null)
            .map(|(_, _, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_duplicates() {
        let n = parse("f.yaml", "a: 1\nb:\n  - x\n  - {c: true}\na: 2\n").unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("not a map: {n:?}")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].0.as_str(), Some("a"));
        assert_eq!(entries[2].0.line, 5);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].line, 4);
        assert_eq!(items[0].as_str(), Some("x"));
    }

    #[test]
    fn syntax_error_has_position() {
        let p = parse("f.yaml", "a: [1, 2\nb: c\n").unwrap_err();
        assert_eq!(p.file, "f.yaml");
        assert!(p.message.starts_with("invalid YAML"), "{p}");
        assert!(p.line.is_some(), "{p:?}");
    }

    #[test]
    fn numbers_keep_their_spelling() {
        let text = "version: 1.10\nother: 0x1F\nname: x\n";
        let n = parse("f", text).unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.value, Value::Float(1.1));
        assert_eq!(entries[0].1.scalar_text_in(text).as_deref(), Some("1.10"));
        assert_eq!(entries[1].1.scalar_text_in(text).as_deref(), Some("0x1F"));
        assert_eq!(entries[2].1.scalar_text_in(text).as_deref(), Some("x"));
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("f", "").unwrap().value, Value::Null);
        assert_eq!(parse("f", "# only\n\n").unwrap().value, Value::Null);
    }

    #[test]
    fn json_conversion() {
        let n = parse("f", "a: {b: [1, 2.5, 'x', null, true]}\n1: one\n").unwrap();
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": {"b": [1, 2.5, "x", null, true]}, "1": "one"})
        );
    }

    #[test]
    fn fields_report_unknown_and_duplicates() {
        let n = parse("f", "x: 1\nz: 2\nx: 3\n").unwrap();
        let mut ctx = Ctx::new("f");
        let f = ctx.map(&n, "top", Some(&["x"])).unwrap();
        assert_eq!(f.entries.len(), 1);
        let msgs: Vec<String> = ctx.problems.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("top.z: unknown field `z`"), "{msgs:?}");
        assert!(msgs[1].contains("top.x: duplicate key `x`"), "{msgs:?}");
        assert!(msgs[1].contains("line 3"), "{msgs:?}");
    }
}
