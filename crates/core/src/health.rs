//! Custom health checks: CEL expressions per kind (apiVersion + kind), as Flux's
//! `healthCheckExprs`, evaluated on a live object bound as `self` (and its top-level fields by
//! name, as Flux binds them: `status.conditions...` works as well). See
//! `docs/health-checks.md`.
//!
//! - [`CelExpr::compile`] compiles an expression once, when the revision is loaded; a syntax
//!   error is a [`CompileError`] with its line and column in the expression.
//! - [`evaluate`] applies the checks to one object: `failed` true -> Failed, `current` true ->
//!   Ready, otherwise (`inProgress` true, or neither) InProgress. An evaluation error (a field
//!   the object does not have yet, a wrong type) is InProgress with the error as the reason,
//!   never a crash. `None` when no check matches the object's apiVersion and kind.
//!
//! Pure: no I/O.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::readiness::Readiness;

/// The variable the live object is bound to, as in Flux and Kubernetes CEL.
pub const SELF: &str = "self";
/// Longest expression accepted (characters).
pub const MAX_EXPRESSION_CHARS: usize = 2048;
/// Deepest nesting of brackets (`(`, `[`, `{`) accepted.
pub const MAX_NESTING: usize = 32;
/// The stack cel runs on. cel-rust's parser and interpreter recurse once per nesting level and
/// per operator of a chain (`1 + 1 + ...`), up to tens of KiB a level in a debug build: 64
/// chained additions overflow a 2 MiB thread stack (tokio's default). Compiling and
/// evaluating run on their own thread with this stack, reserved but only touched as used.
const CEL_STACK_BYTES: usize = 128 << 20;

/// Run `f` on a thread with [`CEL_STACK_BYTES`] of stack; `None` when the thread could not be
/// started or `f` panicked.
fn on_cel_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel".into())
            .stack_size(CEL_STACK_BYTES)
            .spawn_scoped(scope, f)
            .ok()?
            .join()
            .ok()
    })
}

/// The first bracket nested deeper than [`MAX_NESTING`] (1-based line and column), outside
/// string literals.
fn too_deep(source: &str) -> Option<(u32, u32)> {
    let (mut depth, mut line, mut column) = (0usize, 1u32, 0u32);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((line, column));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// One compiled CEL expression and its source text.
///
/// Equal, shown and serialized as its source; deserializing compiles it again.
#[derive(Clone)]
pub struct CelExpr {
    source: String,
    program: Arc<cel::Program>,
}

/// A CEL expression that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// 1-based line in the expression (0 when the parser gave none).
    pub line: u32,
    /// 1-based column in the expression (0 when the parser gave none).
    pub column: u32,
    /// What the parser says, with the position (`line 1, column 7: Syntax error: ...`).
    pub message: String,
}

impl CelExpr {
    /// Compile `source` (standard CEL with its macros: `has`, `all`, `exists`, `filter`, ...).
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        if source.trim().is_empty() {
            return Err(CompileError {
                line: 0,
                column: 0,
                message: "the expression is empty".into(),
            });
        }
        let chars = source.chars().count();
        if chars > MAX_EXPRESSION_CHARS {
            return Err(CompileError {
                line: 0,
                column: 0,
                message: format!(
                    "the expression is {chars} characters long, over the limit of {MAX_EXPRESSION_CHARS}"
                ),
            });
        }
        if let Some((line, column)) = too_deep(source) {
            return Err(CompileError {
                line,
                column,
                message: format!(
                    "line {line}, column {column}: nested more than {MAX_NESTING} levels deep"
                ),
            });
        }
        let compiled = on_cel_stack(|| {
            cel::Program::compile(source).map_err(|errors| {
                errors
                    .errors
                    .iter()
                    .map(|e| (e.pos, e.msg.clone()))
                    .collect::<Vec<_>>()
            })
        })
        .unwrap_or_else(|| Err(vec![((0, 0), "the CEL parser failed".to_string())]));
        match compiled {
            Ok(program) => Ok(Self {
                source: source.to_owned(),
                program: Arc::new(program),
            }),
            Err(errors) => {
                let first = errors.first();
                let (line, column) = first.map_or((0, 0), |(pos, _)| {
                    let clamp = |v: isize| u32::try_from(v.max(0)).unwrap_or(0);
                    // cel reports 1-based lines and columns.
                    (clamp(pos.0), clamp(pos.1))
                });
                let what = errors
                    .iter()
                    // antlr's list of every token it expected says little to a user.
                    .map(|(_, msg)| match msg.split_once(" expecting {") {
                        Some((head, _)) => head.trim().to_owned(),
                        None => msg.trim().to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let message = if line > 0 {
                    format!("line {line}, column {column}: {what}")
                } else {
                    what
                };
                Err(CompileError {
                    line,
                    column,
                    message,
                })
            }
        }
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate on `obj`: `Ok(bool)`, or why it could not be decided. The object is bound as
    /// `self`, and each of its top-level fields by its own name too (`status`, `metadata`,
    /// `spec`), so expressions written for Flux (`status.conditions...`) work unchanged.
    pub fn eval_bool(&self, obj: &Value) -> Result<bool, String> {
        on_cel_stack(|| self.eval_here(obj))
            .unwrap_or_else(|| Err("the CEL interpreter failed on this object".into()))
    }

    fn eval_here(&self, obj: &Value) -> Result<bool, String> {
        let value = cel::to_value(obj).map_err(|e| format!("the object is not readable: {e}"))?;
        let mut context = cel::Context::default();
        if let Value::Object(fields) = obj {
            for (name, field) in fields.iter().filter(|(name, _)| name.as_str() != SELF) {
                if let Ok(v) = cel::to_value(field) {
                    context.add_variable_from_value(name.as_str(), v);
                }
            }
        }
        context.add_variable_from_value(SELF, value);
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the expression gave {}, not true or false",
                type_name(&other)
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn type_name(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::Null => "null",
        cel::Value::Int(_) => "an int",
        cel::Value::UInt(_) => "a uint",
        cel::Value::Float(_) => "a double",
        cel::Value::String(_) => "a string",
        cel::Value::List(_) => "a list",
        cel::Value::Map(_) => "a map",
        _ => "a value of another type",
    }
}

impl fmt::Debug for CelExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CelExpr").field(&self.source).finish()
    }
}

impl fmt::Display for CelExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for CelExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CelExpr {}

impl Serialize for CelExpr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for CelExpr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        CelExpr::compile(&source).map_err(serde::de::Error::custom)
    }
}

/// The health check of one kind: CEL expressions on the live object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `group/version` (or `v1` for the core group), matched exactly.
    pub api_version: String,
    pub kind: String,
    /// True when the object is ready (required).
    pub current: CelExpr,
    /// True while the object is on its way (optional: not current is in progress anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<CelExpr>,
    /// True when the object has failed (optional; checked first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<CelExpr>,
}

impl HealthCheck {
    /// Does this check apply to objects of `api_version` and `kind`?
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        self.api_version == api_version && self.kind == kind
    }
}

/// The checks of one profile: those of `defaults`, replaced kind by kind by the profile's own
/// (same apiVersion and kind), in the order defaults first, then the profile's new kinds.
pub fn merge(defaults: &[HealthCheck], own: &[HealthCheck]) -> Vec<HealthCheck> {
    let mut out: Vec<HealthCheck> = defaults
        .iter()
        .map(|d| {
            own.iter()
                .find(|o| o.matches(&d.api_version, &d.kind))
                .unwrap_or(d)
                .clone()
        })
        .collect();
    for o in own {
        if !out.iter().any(|x| x.matches(&o.api_version, &o.kind)) {
            out.push(o.clone());
        }
    }
    out
}

/// The check for objects of `api_version` and `kind`, if any.
pub fn check_for<'c>(
    checks: &'c [HealthCheck],
    api_version: &str,
    kind: &str,
) -> Option<&'c HealthCheck> {
    checks.iter().find(|c| c.matches(api_version, kind))
}

/// `Kind ns/name` or `Kind name`, as the readiness reasons say it.
fn object_id(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("Object");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// Apply the matching check of `checks` to `obj`; `None` when none matches its apiVersion and
/// kind.
pub fn evaluate(obj: &Value, checks: &[HealthCheck]) -> Option<Readiness> {
    let api_version = obj["apiVersion"].as_str()?;
    let kind = obj["kind"].as_str()?;
    let check = check_for(checks, api_version, kind)?;
    let id = object_id(obj);
    // One thread with cel's stack for the whole verdict.
    Some(
        on_cel_stack(|| judge(obj, check, &id)).unwrap_or_else(|| Readiness::InProgress {
            reason: format!("{id}: the CEL interpreter failed on this object"),
        }),
    )
}

/// The verdict of `check` on `obj` (on cel's stack).
fn judge(obj: &Value, check: &HealthCheck, id: &str) -> Readiness {
    let progress = |what: String| Readiness::InProgress {
        reason: format!("{id}: {what}"),
    };
    // `failed` first. When it cannot be evaluated (e.g. no status yet) the object is not known
    // to have failed: `current` decides, and the error is added to an in-progress reason.
    let mut failed_error = String::new();
    if let Some(failed) = &check.failed {
        match failed.eval_here(obj) {
            Ok(true) => {
                return Readiness::Failed {
                    reason: format!("{id}: health check `failed: {failed}` is true"),
                };
            }
            Ok(false) => {}
            Err(e) => {
                failed_error =
                    format!("; health check `failed: {failed}` could not be evaluated: {e}")
            }
        }
    }
    let why = match check.current.eval_here(obj) {
        Ok(true) => return Readiness::Ready,
        Ok(false) => match &check.in_progress {
            Some(p) => match p.eval_here(obj) {
                Ok(true) => format!("health check `inProgress: {p}` is true"),
                Ok(false) => format!("health check `current: {}` is not true yet", check.current),
                Err(e) => format!("health check `inProgress: {p}` could not be evaluated: {e}"),
            },
            None => format!("health check `current: {}` is not true yet", check.current),
        },
        Err(e) => format!(
            "health check `current: {}` could not be evaluated: {e}",
            check.current
        ),
    };
    progress(format!("{why}{failed_error}"))
}

/// What the health gate of a release says, from the verdicts of its checked objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every checked object is ready: the release is Ready.
    Ready,
    /// Some are not ready yet: (index into the verdicts, reason), in order.
    Waiting(Vec<(usize, String)>),
    /// An object failed: the release fails with this reason (the first failed object's).
    Failed(String),
}

/// The gate: any Failed fails it, else any InProgress waits, else it is Ready.
pub fn gate(verdicts: &[Readiness]) -> Gate {
    if let Some(reason) = verdicts.iter().find_map(|v| match v {
        Readiness::Failed { reason } => Some(reason.clone()),
        _ => None,
    }) {
        return Gate::Failed(reason);
    }
    let waiting: Vec<(usize, String)> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            Readiness::InProgress { reason } => Some((i, reason.clone())),
            _ => None,
        })
        .collect();
    if waiting.is_empty() {
        Gate::Ready
    } else {
        Gate::Waiting(waiting)
    }
}

#[cfg(test)]
mod tests;
