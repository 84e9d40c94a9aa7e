//! Profile lists made of several files: `include:` other lists of the repository (a shared
//! base), then override, add or disable profiles (see `docs/profile-list.md`, *Including
//! other lists*).
//!
//! Pure: the caller reads the files. [`compose`] returns [`Outcome::Need`] with the paths it
//! has not been given yet; the caller reads them (recording each as [`Fetched`]) and calls
//! again, until [`Outcome::Done`]. Every file is read at most once and the include depth is
//! bounded, so the loop ends after at most [`MAX_INCLUDE_DEPTH`] + 1 rounds.
//!
//! Merging works on the YAML trees, before validation: included lists are merged first, in
//! order, then the including list on top. The merged tree is then validated as one list, each
//! problem naming the file (and position) its node came from.

use std::collections::{BTreeMap, BTreeSet};

use crate::problem::{Problem, Problems};
use crate::profiles::{self, ProfileList};
use crate::types::check_repo_path;
use crate::yaml::{self, Ctx, Node, Value};

/// The top-level field holding the paths of included lists.
pub const INCLUDE_FIELD: &str = "include";
/// The profile field that disables a profile (`enabled: false`).
pub const ENABLED_FIELD: &str = "enabled";
/// Longest chain of includes (a list including a list including ... ) accepted.
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Most files one composed list may read (the list itself included).
pub const MAX_FILES: usize = 64;

/// What the caller found at a path of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file's text.
    Text(String),
    /// No such file in the revision.
    Absent,
    /// The path cannot be read for a reason that is the revision's fault (an out-of-bounds
    /// symlink, a directory, not UTF-8): the message says why.
    Refused(String),
}

/// The result of one [`compose`] call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Read these paths (relative to the repository root) and call again.
    Need(Vec<String>),
    /// The composed, validated list, or every problem found.
    Done(Box<Result<ProfileList, Problems>>),
}

/// The list composition starts from.
#[derive(Debug, Clone, Copy)]
pub struct Root<'a> {
    /// Its name in problems (a repository path, or e.g. `configmap/strata-profiles`).
    pub file: &'a str,
    pub text: &'a str,
    /// Paths merged before the root's own `include` (an overlay read from a ConfigMap
    /// implicitly includes the list from Git).
    pub first: &'a [String],
}

/// Compose the list at `root` with the files read so far (`files`, by normalized path).
pub fn compose(root: Root<'_>, files: &BTreeMap<String, Fetched>) -> Outcome {
    let root_node = match yaml::parse(root.file, root.text) {
        Ok(n) => n,
        Err(p) => return Outcome::Done(Box::new(Err(p.into()))),
    };
    if root.first.is_empty() && !uses_composition(&root_node) {
        return Outcome::Done(Box::new(profiles::parse_single(root.file, root.text)));
    }
    let mut c = Composer {
        files,
        table: vec![(root.file.to_owned(), root.text.to_owned())],
        nodes: vec![Some(root_node)],
        need: BTreeSet::new(),
        problems: Problems::new(),
        broken: false,
    };
    let first: Vec<(String, Option<Node>)> = root.first.iter().map(|p| (p.clone(), None)).collect();
    let merged = c.resolve(0, &first, &mut vec![0]);
    if !c.need.is_empty() {
        return Outcome::Need(c.need.into_iter().collect());
    }
    // A problem with the includes themselves (a cycle, a missing file) is reported alone:
    // validating what could be merged would add problems that are only its consequences.
    let (Some(merged), false) = (merged, c.broken) else {
        let mut seen = BTreeSet::new();
        c.problems.0.retain(|p| seen.insert(p.to_string()));
        return Outcome::Done(Box::new(Err(c.problems)));
    };
    let root_node = c.nodes[0]
        .clone()
        .unwrap_or_else(|| Node::made(&dummy(), Value::Null));
    let tree = merged.into_tree(&root_node);
    let names: Vec<(&str, &str)> = c
        .table
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let mut ctx = Ctx::with_files(names);
    let list = profiles::validate_tree(&mut ctx, &tree);
    let mut problems = c.problems;
    problems.extend(ctx.problems);
    // A file reached twice (two lists including the same base) is checked twice.
    let mut seen = BTreeSet::new();
    problems.0.retain(|p| seen.insert(p.to_string()));
    Outcome::Done(Box::new(match list {
        Some(l) if problems.is_empty() => Ok(l),
        _ => {
            if problems.is_empty() {
                problems.push(Problem::new(
                    root.file,
                    "",
                    "the profile list could not be read",
                ));
            }
            Err(problems)
        }
    }))
}

/// Compose with the files given and nothing else: a path not in `files` is reported as not
/// given (for tools and tests that have every file at hand).
pub fn compose_all(
    root: Root<'_>,
    files: &BTreeMap<String, Fetched>,
) -> Result<ProfileList, Problems> {
    let mut files = files.clone();
    for _ in 0..=MAX_INCLUDE_DEPTH + 1 {
        match compose(root, &files) {
            Outcome::Done(r) => return *r,
            Outcome::Need(paths) => {
                for p in paths {
                    files.insert(p, Fetched::Absent);
                }
            }
        }
    }
    Err(Problem::new(
        root.file,
        INCLUDE_FIELD,
        "the includes could not be resolved",
    )
    .into())
}

fn dummy() -> Node {
    Node {
        line: 0,
        column: 0,
        span: None,
        origin: 0,
        value: Value::Null,
    }
}

/// Whether a document uses `include` or `enabled` (else it is parsed as one plain list,
/// exactly as before composition existed).
fn uses_composition(root: &Node) -> bool {
    let Value::Map(entries) = &root.value else {
        return false;
    };
    entries.iter().any(|(k, v)| match k.as_str() {
        Some(INCLUDE_FIELD) => true,
        Some("profiles") => match &v.value {
            Value::Seq(items) => items.iter().any(|i| match &i.value {
                Value::Map(e) => e.iter().any(|(k, _)| k.as_str() == Some(ENABLED_FIELD)),
                _ => false,
            }),
            _ => false,
        },
        _ => false,
    })
}

struct Composer<'a> {
    files: &'a BTreeMap<String, Fetched>,
    /// Every file reached, by origin index: (name, text).
    table: Vec<(String, String)>,
    /// The parsed tree of each file (None: it did not parse).
    nodes: Vec<Option<Node>>,
    need: BTreeSet<String>,
    problems: Problems,
    /// An include could not be followed (so validating the rest would mislead).
    broken: bool,
}

/// One profile entry while merging.
#[derive(Debug, Clone)]
struct Entry {
    /// None: an entry without a readable name, passed on for validation to report.
    name: Option<String>,
    node: Node,
    enabled: bool,
    /// The file that defined or last changed it.
    from: u32,
}

/// A list (and what it includes) merged, not validated yet.
#[derive(Debug, Clone, Default)]
struct Merged {
    /// Top-level fields other than include, profiles, repositories, defaults, apiVersion, kind.
    top: Vec<(String, Node, Node)>,
    repositories: Vec<(Option<String>, Node)>,
    /// Whether some file gave `repositories` (so an empty list is written out).
    has_repositories: bool,
    defaults: Option<(Node, Vec<(Node, Node)>)>,
    /// A `profiles` value that is not a list: passed on for validation to report.
    bad_profiles: Option<(Node, Node)>,
    profiles: Vec<Entry>,
    has_profiles: bool,
}

impl Merged {
    fn set_top(&mut self, key: &str, k: &Node, v: &Node) {
        match self.top.iter_mut().find(|(n, _, _)| n == key) {
            Some(slot) => *slot = (key.to_owned(), k.clone(), v.clone()),
            None => self.top.push((key.to_owned(), k.clone(), v.clone())),
        }
    }

    fn set_repository(&mut self, name: Option<String>, node: &Node) {
        self.has_repositories = true;
        match name.as_ref().and_then(|n| {
            self.repositories
                .iter_mut()
                .find(|(x, _)| x.as_ref() == Some(n))
        }) {
            Some(slot) => slot.1 = node.clone(),
            None => self.repositories.push((name, node.clone())),
        }
    }

    fn merge_defaults(&mut self, node: &Node) {
        let Value::Map(entries) = &node.value else {
            // Not a mapping: validation reports it.
            self.defaults = Some((node.clone(), Vec::new()));
            return;
        };
        let (_, acc) = self
            .defaults
            .get_or_insert_with(|| (node.clone(), Vec::new()));
        for (k, v) in entries {
            match acc
                .iter_mut()
                .find(|(x, _)| x.as_str() == k.as_str() && k.as_str().is_some())
            {
                Some(slot) => *slot = (k.clone(), v.clone()),
                None => acc.push((k.clone(), v.clone())),
            }
        }
        if let Some((at, _)) = &mut self.defaults {
            *at = Node::made(node, Value::Null);
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.profiles
            .iter()
            .position(|e| e.name.as_deref() == Some(name))
    }

    /// The merged document, `enabled` removed and disabled profiles left out.
    fn into_tree(self, root: &Node) -> Node {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let key = |name: &str, at: &Node| Node::made(at, Value::Str(name.to_owned()));
        if let Value::Map(own) = &root.value {
            for (k, v) in own {
                if matches!(k.as_str(), Some("apiVersion" | "kind")) {
                    entries.push((k.clone(), v.clone()));
                }
            }
        }
        for (_, k, v) in self.top {
            entries.push((k, v));
        }
        if self.has_repositories {
            let items = self.repositories.into_iter().map(|(_, n)| n).collect();
            entries.push((
                key("repositories", root),
                Node::made(root, Value::Seq(items)),
            ));
        }
        if let Some((at, d)) = self.defaults {
            let value = if d.is_empty() && at.value != Value::Null {
                at.value.clone()
            } else {
                Value::Map(d)
            };
            entries.push((key("defaults", &at), Node::made(&at, value)));
        }
        if let Some((k, v)) = self.bad_profiles {
            entries.push((k, v));
        } else if self.has_profiles {
            let items = self
                .profiles
                .into_iter()
                .filter(|e| e.enabled)
                .map(|e| without_enabled(e.node))
                .collect();
            entries.push((key("profiles", root), Node::made(root, Value::Seq(items))));
        }
        Node::made(root, Value::Map(entries))
    }
}

fn without_enabled(mut node: Node) -> Node {
    if let Value::Map(entries) = &mut node.value {
        entries.retain(|(k, _)| k.as_str() != Some(ENABLED_FIELD));
    }
    node
}

/// `over`'s fields replace `base`'s one by one; `values` mappings are merged key by key
/// (like helm's values files: later wins, a `null` is kept and removes the key in helm).
fn merge_profile(base: &Node, over: &Node) -> Node {
    let (Value::Map(b), Value::Map(o)) = (&base.value, &over.value) else {
        return over.clone();
    };
    let mut out = b.clone();
    for (k, v) in o {
        match out
            .iter_mut()
            .find(|(x, _)| x.as_str().is_some() && x.as_str() == k.as_str())
        {
            Some(slot) => {
                let value = if k.as_str() == Some("values") {
                    merge_values(&slot.1, v)
                } else {
                    v.clone()
                };
                *slot = (k.clone(), value);
            }
            None => out.push((k.clone(), v.clone())),
        }
    }
    Node::made(over, Value::Map(out))
}

fn merge_values(base: &Node, over: &Node) -> Node {
    let (Value::Map(b), Value::Map(o)) = (&base.value, &over.value) else {
        return over.clone();
    };
    let mut out = b.clone();
    for (k, v) in o {
        match out
            .iter_mut()
            .find(|(x, _)| x.scalar_text().is_some() && x.scalar_text() == k.scalar_text())
        {
            Some(slot) => {
                let value = merge_values(&slot.1, v);
                *slot = (k.clone(), value);
            }
            None => out.push((k.clone(), v.clone())),
        }
    }
    Node::made(over, Value::Map(out))
}

/// One file's own content.
struct Doc {
    includes: Vec<(String, Option<Node>)>,
    top: Vec<(String, Node, Node)>,
    repositories: Option<Vec<(Option<String>, Node)>>,
    defaults: Option<Node>,
    bad_profiles: Option<(Node, Node)>,
    profiles: Option<Vec<(Entry, Option<Node>)>>,
}

impl Composer<'_> {
    fn name(&self, idx: usize) -> &str {
        &self.table[idx].0
    }

    fn problem(&mut self, idx: usize, node: Option<&Node>, field: &str, message: String) {
        let mut p = Problem::new(self.table[idx].0.clone(), field, message);
        if let Some(n) = node {
            p = p.at(n.line, n.column);
        }
        self.problems.push(p);
    }

    /// The origin index of `path`, parsing it the first time; None when it cannot be read
    /// (reported at `at` in file `idx`) or is not given yet (added to `need`).
    fn open(&mut self, idx: usize, at: Option<&Node>, field: &str, path: &str) -> Option<usize> {
        if let Some(i) = self.table.iter().position(|(f, _)| f == path) {
            return self.nodes[i].is_some().then_some(i);
        }
        match self.files.get(path) {
            None => {
                self.need.insert(path.to_owned());
                None
            }
            Some(Fetched::Absent) => {
                self.problem(
                    idx,
                    at,
                    field,
                    format!("included list {path} does not exist in the revision"),
                );
                None
            }
            Some(Fetched::Refused(m)) => {
                self.problem(idx, at, field, format!("included list {path}: {m}"));
                None
            }
            Some(Fetched::Text(text)) => {
                if self.table.len() >= MAX_FILES {
                    self.problem(
                        idx,
                        at,
                        field,
                        format!(
                            "{path} would be file number {} of this profile list; at most {MAX_FILES} files may be included in all",
                            MAX_FILES + 1
                        ),
                    );
                    return None;
                }
                let i = self.table.len();
                self.table.push((path.to_owned(), text.clone()));
                match yaml::parse(path, text) {
                    Ok(mut n) => {
                        n.set_origin(u32::try_from(i).unwrap_or(u32::MAX));
                        self.nodes.push(Some(n));
                        Some(i)
                    }
                    Err(p) => {
                        self.problems.push(p);
                        self.nodes.push(None);
                        None
                    }
                }
            }
        }
    }

    /// The list in file `idx` with everything it includes, merged. `chain` holds the files
    /// from the root to `idx` (for cycles and the depth limit).
    fn resolve(
        &mut self,
        idx: usize,
        first: &[(String, Option<Node>)],
        chain: &mut Vec<usize>,
    ) -> Option<Merged> {
        let node = self.nodes[idx].clone()?;
        let doc = self.doc(idx, &node)?;
        let mut includes: Vec<(String, Option<Node>)> = first.to_vec();
        includes.extend(doc.includes.iter().cloned());
        let own_names: BTreeSet<String> = doc
            .profiles
            .iter()
            .flatten()
            .filter_map(|(e, _)| e.name.clone())
            .collect();
        let mut acc = Merged::default();
        // Which file each merged profile came from, and which include brought it.
        let mut brought_by: BTreeMap<String, (String, u32)> = BTreeMap::new();
        for (i, (path, at)) in includes.iter().enumerate() {
            let field = if i < first.len() {
                String::new()
            } else {
                format!("{INCLUDE_FIELD}[{}]", i - first.len())
            };
            let path = match check_repo_path(path) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(idx, at.as_ref(), &field, e.to_string());
                    self.broken = true;
                    continue;
                }
            };
            if let Some(pos) = chain.iter().position(|c| self.name(*c) == path) {
                let mut names: Vec<&str> = chain[pos..].iter().map(|c| self.name(*c)).collect();
                names.push(&path);
                let msg = format!(
                    "include cycle: {}; a list cannot include itself, directly or through others",
                    names.join(" -> ")
                );
                self.problem(idx, at.as_ref(), &field, msg);
                self.broken = true;
                continue;
            }
            if chain.len() > MAX_INCLUDE_DEPTH {
                let names: Vec<&str> = chain.iter().map(|c| self.name(*c)).collect();
                let msg = format!(
                    "includes are nested too deep: {} -> {path} is more than {MAX_INCLUDE_DEPTH} levels; flatten the chain",
                    names.join(" -> ")
                );
                self.problem(idx, at.as_ref(), &field, msg);
                self.broken = true;
                continue;
            }
            let Some(child) = self.open(idx, at.as_ref(), &field, &path) else {
                self.broken = true;
                continue;
            };
            chain.push(child);
            let merged = self.resolve(child, &[], chain);
            chain.pop();
            let Some(merged) = merged else {
                self.broken = true;
                continue;
            };
            // Siblings: later ones win for everything but profiles, which must not be
            // defined differently by two of them unless this list says which applies.
            for (key, k, v) in &merged.top {
                acc.set_top(key, k, v);
            }
            for (name, n) in &merged.repositories {
                acc.set_repository(name.clone(), n);
            }
            acc.has_repositories |= merged.has_repositories;
            if let Some((at_node, d)) = &merged.defaults {
                if !d.is_empty() {
                    acc.merge_defaults(&Node::made(at_node, Value::Map(d.clone())));
                } else if at_node.value != Value::Null {
                    // Not a mapping: passed on for validation to report.
                    acc.merge_defaults(at_node);
                }
            }
            if merged.bad_profiles.is_some() {
                acc.bad_profiles = merged.bad_profiles.clone();
            }
            acc.has_profiles |= merged.has_profiles;
            for e in merged.profiles {
                let Some(name) = e.name.clone() else {
                    acc.profiles.push(e);
                    continue;
                };
                match acc.position(&name) {
                    None => {
                        brought_by.insert(name, (path.clone(), e.from));
                        acc.profiles.push(e);
                    }
                    Some(j) => {
                        let same = acc.profiles[j].from == e.from
                            && acc.profiles[j].node == e.node
                            && acc.profiles[j].enabled == e.enabled;
                        if !same && !own_names.contains(&name) {
                            let (earlier, earlier_from) =
                                brought_by.get(&name).cloned().unwrap_or_default();
                            let a = self.name(earlier_from as usize).to_owned();
                            let b = self.name(e.from as usize).to_owned();
                            let where_a = if a == earlier {
                                a.clone()
                            } else {
                                format!("{a} (through {earlier})")
                            };
                            let where_b = if b == path {
                                b.clone()
                            } else {
                                format!("{b} (through {path})")
                            };
                            let msg = format!(
                                "profile `{name}` is defined differently by {where_a} (line {}) and {where_b} (line {}); add an entry `- name: {name}` to this list to say which applies (it is applied on top of the one included last)",
                                acc.profiles[j].node.line, e.node.line
                            );
                            self.problem(idx, at.as_ref(), &field, msg);
                        }
                        brought_by.insert(name, (path.clone(), e.from));
                        acc.profiles[j] = e;
                    }
                }
            }
        }
        // This list on top of what it includes.
        for (key, k, v) in &doc.top {
            acc.set_top(key, k, v);
        }
        if let Some(repos) = &doc.repositories {
            acc.has_repositories = true;
            for (name, n) in repos {
                acc.set_repository(name.clone(), n);
            }
        }
        if let Some(d) = &doc.defaults {
            acc.merge_defaults(d);
        }
        if doc.bad_profiles.is_some() {
            acc.bad_profiles = doc.bad_profiles.clone();
        }
        if let Some(entries) = doc.profiles {
            acc.has_profiles = true;
            for (e, enabled_at) in entries {
                let j = e.name.as_deref().and_then(|n| acc.position(n));
                match j {
                    Some(j) => {
                        let base = &acc.profiles[j];
                        let enabled = if enabled_at.is_some() {
                            e.enabled
                        } else {
                            base.enabled
                        };
                        acc.profiles[j] = Entry {
                            name: e.name.clone(),
                            node: merge_profile(&base.node, &e.node),
                            enabled,
                            from: e.from,
                        };
                    }
                    None => {
                        let has_chart = matches!(&e.node.value, Value::Map(m)
                            if m.iter().any(|(k, _)| k.as_str() == Some("chart")));
                        if !e.enabled && !has_chart {
                            let name = e.name.clone().unwrap_or_default();
                            let msg = if includes.is_empty() {
                                format!(
                                    "profile `{name}` is disabled but not defined; `enabled: false` without a chart only disables a profile of an included list"
                                )
                            } else {
                                format!(
                                    "no included list defines a profile `{name}`, so there is nothing to disable; check the name"
                                )
                            };
                            self.problem(
                                idx,
                                enabled_at.as_ref(),
                                &format!("profiles[{name}].{ENABLED_FIELD}"),
                                msg,
                            );
                            continue;
                        }
                        acc.profiles.push(e);
                    }
                }
            }
        }
        Some(acc)
    }

    /// The structure of one file: what it includes, its top-level fields, its profiles.
    fn doc(&mut self, idx: usize, node: &Node) -> Option<Doc> {
        let Value::Map(entries) = &node.value else {
            let msg = if node.value == Value::Null {
                "the file is empty; expected a ProfileList document".to_owned()
            } else {
                format!("must be a mapping, found {}", node.type_name())
            };
            self.problem(idx, Some(node), "", msg);
            return None;
        };
        let mut doc = Doc {
            includes: Vec::new(),
            top: Vec::new(),
            repositories: None,
            defaults: None,
            bad_profiles: None,
            profiles: None,
        };
        let mut seen = BTreeSet::new();
        let has = |k: &str| entries.iter().any(|(x, _)| x.as_str() == Some(k));
        // apiVersion and kind of an included list (the root's are checked with the rest).
        if idx != 0 {
            for key in ["apiVersion", "kind"] {
                if !has(key) {
                    self.problem(
                        idx,
                        Some(node),
                        key,
                        format!(
                            "missing required field `{key}` (an included file is a ProfileList too)"
                        ),
                    );
                }
            }
        }
        for (k, v) in entries {
            let Some(key) = k.as_str().map(str::to_owned) else {
                self.problem(idx, Some(k), "", "mapping keys must be strings".into());
                continue;
            };
            if !seen.insert(key.clone()) {
                self.problem(
                    idx,
                    Some(k),
                    &key,
                    format!("duplicate key `{key}`: each key may appear once"),
                );
                continue;
            }
            match key.as_str() {
                INCLUDE_FIELD => match &v.value {
                    Value::Seq(items) => {
                        for (i, item) in items.iter().enumerate() {
                            match item.as_str() {
                                Some(s) => doc.includes.push((s.to_owned(), Some(item.clone()))),
                                None => {
                                    self.problem(
                                        idx,
                                        Some(item),
                                        &format!("{INCLUDE_FIELD}[{i}]"),
                                        format!(
                                            "must be a path in the repository, found {}",
                                            item.type_name()
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    Value::Null => {}
                    _ => {
                        self.problem(
                            idx,
                            Some(v),
                            INCLUDE_FIELD,
                            format!("must be a list of paths, found {}", v.type_name()),
                        );
                    }
                },
                "apiVersion" | "kind" => {
                    if idx != 0 {
                        let want = if key == "kind" {
                            profiles::KIND
                        } else {
                            profiles::API_VERSION
                        };
                        if v.as_str() != Some(want) {
                            self.problem(
                                idx,
                                Some(v),
                                &key,
                                format!("must be `{want}` (an included file is a ProfileList too)"),
                            );
                        }
                    }
                }
                "repositories" => match &v.value {
                    Value::Seq(items) => {
                        doc.repositories = Some(
                            items
                                .iter()
                                .map(|i| (field_str(i, "name"), i.clone()))
                                .collect(),
                        );
                    }
                    _ => doc.top.push((key, k.clone(), v.clone())),
                },
                "defaults" => doc.defaults = Some(v.clone()),
                "profiles" => match &v.value {
                    Value::Seq(items) => {
                        let mut out = Vec::new();
                        for item in items {
                            let mut enabled = true;
                            let mut enabled_at = None;
                            if let Value::Map(fields) = &item.value
                                && let Some((_, e)) = fields
                                    .iter()
                                    .find(|(k, _)| k.as_str() == Some(ENABLED_FIELD))
                            {
                                match e.value {
                                    Value::Bool(b) => {
                                        enabled = b;
                                        enabled_at = Some(e.clone());
                                    }
                                    _ => {
                                        let name = field_str(item, "name").unwrap_or_default();
                                        self.problem(
                                            idx,
                                            Some(e),
                                            &format!("profiles[{name}].{ENABLED_FIELD}"),
                                            format!(
                                                "must be true or false, found {}",
                                                e.type_name()
                                            ),
                                        );
                                    }
                                }
                            }
                            out.push((
                                Entry {
                                    name: field_str(item, "name"),
                                    node: item.clone(),
                                    enabled,
                                    from: u32::try_from(idx).unwrap_or(u32::MAX),
                                },
                                enabled_at,
                            ));
                        }
                        doc.profiles = Some(out);
                    }
                    Value::Null => doc.profiles = Some(Vec::new()),
                    _ => doc.bad_profiles = Some((k.clone(), v.clone())),
                },
                _ => doc.top.push((key, k.clone(), v.clone())),
            }
        }
        Some(doc)
    }
}

/// The string value of `key` in a mapping node.
fn field_str(node: &Node, key: &str) -> Option<String> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
