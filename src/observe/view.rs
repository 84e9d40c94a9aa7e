//! How a status document (`GET /status`, or the `strata-status` ConfigMap's `status.json`) is
//! shown in a terminal, shared by `strata status`, `strata run` on a terminal and the demo:
//!
//! - [`Tracker`]: successive documents turned into printable progress lines (the revision,
//!   the plan, release and layer phase transitions, the resources a release waits for, the
//!   overall phase): what is printed when the output is not a terminal;
//! - [`board`]: one progress line per layer (a bar, ready/total, the release being worked
//!   on), redrawn in place on a terminal by [`LiveBoard`];
//! - [`details`]: the whole status as text (`strata status`);
//! - [`verdict`]: Ready, Progressing, Failed or Rejected, and the exit code scripts read.
//!
//! Everything here works on the JSON document (`serde_json::Value`), so the same code reads
//! the status of an agent of another version.

use std::collections::BTreeMap;

use serde_json::Value;

/// One thing that changed between two `/status` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new revision is shown: its commit and, per layer, the releases in it.
    Revision {
        commit: String,
        layers: Vec<(String, Vec<String>)>,
    },
    /// A revision was rejected (every problem found in it).
    Rejected {
        commit: String,
        problems: Vec<String>,
    },
    /// A release changed phase.
    Release {
        layer: String,
        release: String,
        from: Option<String>,
        to: String,
        detail: Option<String>,
    },
    /// A waiting release waits for other resources now.
    Waiting {
        layer: String,
        release: String,
        resources: Vec<String>,
    },
    /// A layer changed phase.
    Layer { layer: String, to: String },
    /// The agent's overall phase changed.
    Overall {
        from: Option<String>,
        to: String,
        detail: Option<String>,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Revision { commit, layers } => {
                write!(f, "revision {} planned:", short(commit))?;
                for (layer, releases) in layers {
                    write!(f, " layer {layer} [{}]", releases.join(", "))?;
                }
                Ok(())
            }
            Event::Rejected { commit, problems } => {
                write!(f, "revision {} rejected:", short(commit))?;
                for p in problems {
                    write!(f, "\n           - {p}")?;
                }
                Ok(())
            }
            Event::Release {
                layer,
                release,
                from,
                to,
                detail,
            } => {
                write!(f, "layer {layer}  release {release}  ")?;
                if let Some(from) = from {
                    write!(f, "{from} -> ")?;
                }
                f.write_str(to)?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            Event::Waiting {
                layer,
                release,
                resources,
            } => write!(
                f,
                "layer {layer}  release {release}  waiting for {}",
                resources.join("; ")
            ),
            Event::Layer { layer, to } => write!(f, "layer {layer}  {to}"),
            Event::Overall { from, to, detail } => {
                f.write_str("strata  ")?;
                if let Some(from) = from {
                    write!(f, "{from} -> ")?;
                }
                f.write_str(to)?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
        }
    }
}

/// The first 12 characters of a commit.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// What one `/status` document says, reduced to what the demo prints.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Snapshot {
    phase: String,
    commit: Option<String>,
    rejected: Option<String>,
    layers: BTreeMap<String, String>,
    /// `namespace/name` -> (phase, not-ready resources).
    releases: BTreeMap<String, (String, Vec<String>)>,
}

/// Remembers the previous `/status` and reports what changed.
#[derive(Debug, Default)]
pub struct Tracker {
    prev: Option<Snapshot>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn not_ready(r: &Value) -> Vec<String> {
    r["notReady"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|n| {
                    let name = match n["namespace"].as_str() {
                        Some(ns) => format!("{ns}/{}", text(&n["name"])),
                        None => text(&n["name"]),
                    };
                    let reason = text(&n["reason"]);
                    // The agent's reasons usually name the object already.
                    if reason.contains(&name) {
                        reason
                    } else {
                        format!("{} {name}: {reason}", text(&n["kind"]))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What is worth saying about a release in its phase: for Ready the action and helm
/// revision, for Installing the action, for Failed and Skipped the message.
fn release_detail(r: &Value) -> Option<String> {
    match r["phase"].as_str().unwrap_or_default() {
        "Ready" => {
            let mut d = Vec::new();
            if let Some(a) = r["action"].as_str() {
                d.push(a.to_string());
            }
            if let Some(h) = r["helmRevision"].as_u64() {
                d.push(format!("helm revision {h}"));
            }
            (!d.is_empty()).then(|| d.join(", "))
        }
        "Installing" => r["action"].as_str().map(str::to_string),
        "Failed" | "Skipped" | "Degraded" => r["message"].as_str().map(str::to_string),
        _ => None,
    }
}

fn problems(status: &Value) -> Vec<String> {
    status["rejectedRevision"]["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let field = text(&p["field"]);
                    if field.is_empty() {
                        format!("{}: {}", text(&p["file"]), text(&p["message"]))
                    } else {
                        format!("{}: {field}: {}", text(&p["file"]), text(&p["message"]))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The events between the previous document and `status` (in display order: revision,
    /// then each layer's releases and the layer, then the overall phase).
    pub fn update(&mut self, status: &Value) -> Vec<Event> {
        let prev = self.prev.take().unwrap_or_default();
        let mut next = Snapshot {
            phase: text(&status["phase"]),
            commit: status["revision"]["commit"].as_str().map(str::to_string),
            rejected: status["rejectedRevision"]["commit"]
                .as_str()
                .map(str::to_string),
            ..Snapshot::default()
        };
        let mut events = Vec::new();

        if let Some(commit) = &next.rejected
            && prev.rejected.as_ref() != Some(commit)
        {
            events.push(Event::Rejected {
                commit: commit.clone(),
                problems: problems(status),
            });
        }

        let layers = status["layers"].as_array().cloned().unwrap_or_default();
        let new_revision = next.commit.is_some() && next.commit != prev.commit;
        if new_revision && let Some(commit) = &next.commit {
            events.push(Event::Revision {
                commit: commit.clone(),
                layers: layers
                    .iter()
                    .map(|l| {
                        let names = l["releases"]
                            .as_array()
                            .map(|rs| rs.iter().map(|r| text(&r["name"])).collect())
                            .unwrap_or_default();
                        (text(&l["layer"]), names)
                    })
                    .collect(),
            });
        }

        for l in &layers {
            let layer = text(&l["layer"]);
            for r in l["releases"].as_array().into_iter().flatten() {
                let key = format!("{}/{}", text(&r["namespace"]), text(&r["name"]));
                let phase = text(&r["phase"]);
                let waiting_for = not_ready(r);
                let before = if new_revision {
                    None
                } else {
                    prev.releases.get(&key)
                };
                let changed = before.map(|(p, _)| p) != Some(&phase);
                let mut from = before.map(|(p, _)| p.clone());
                // helm ran (an attempt was counted) between two documents that never showed
                // Installing (a quick helm, a slow poll): say it ran before where it ended.
                if changed
                    && matches!(from.as_deref(), None | Some("Pending"))
                    && matches!(phase.as_str(), "Waiting" | "Ready" | "Failed" | "Degraded")
                    && r["attempts"].as_u64().is_some_and(|a| a > 0)
                {
                    events.push(Event::Release {
                        layer: layer.clone(),
                        release: key.clone(),
                        from: from.take(),
                        to: "Installing".into(),
                        detail: r["action"].as_str().map(str::to_string),
                    });
                    from = Some("Installing".into());
                }
                // A fresh revision lists every release as Pending: the plan line says that.
                if changed && !(before.is_none() && phase == "Pending") {
                    let detail = release_detail(r);
                    events.push(Event::Release {
                        layer: layer.clone(),
                        release: key.clone(),
                        from,
                        to: phase.clone(),
                        detail,
                    });
                }
                if phase == "Waiting"
                    && !waiting_for.is_empty()
                    && before.map(|(_, w)| w) != Some(&waiting_for)
                {
                    events.push(Event::Waiting {
                        layer: layer.clone(),
                        release: key.clone(),
                        resources: waiting_for.clone(),
                    });
                }
                next.releases.insert(key, (phase, waiting_for));
            }
            let lphase = text(&l["phase"]);
            let lbefore = if new_revision {
                None
            } else {
                prev.layers.get(&layer)
            };
            if lbefore != Some(&lphase) && !(lbefore.is_none() && lphase == "Pending") {
                events.push(Event::Layer {
                    layer: layer.clone(),
                    to: lphase.clone(),
                });
            }
            next.layers.insert(layer, lphase);
        }

        if next.phase != prev.phase {
            events.push(Event::Overall {
                from: (!prev.phase.is_empty()).then(|| prev.phase.clone()),
                to: next.phase.clone(),
                detail: status["lastError"].as_str().map(str::to_string),
            });
        }
        self.prev = Some(next);
        events
    }
}

/// Whether every layer of the shown revision is Ready (and there is at least one).
pub fn all_ready(status: &Value) -> bool {
    status["phase"] == "Ready"
        && status["layers"]
            .as_array()
            .is_some_and(|ls| !ls.is_empty() && ls.iter().all(|l| l["phase"] == "Ready"))
}

/// Whether the agent is stuck until a new revision arrives (a release failed, or the only
/// revision was rejected).
pub fn stuck(status: &Value) -> bool {
    matches!(status["phase"].as_str(), Some("Failed" | "Invalid"))
}

/// Where a status stands, for people and for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every layer of the revision shown is Ready.
    Ready,
    /// Work goes on: a revision is being applied, a failed release waits for its retry, the
    /// source could not be fetched, or the agent is starting.
    Progressing,
    /// A release failed; `stalled` when it will not be retried without a new commit or a
    /// retry request (a permanent error, or `remediation.retries` used up).
    Failed { stalled: bool },
    /// The newest revision was rejected (nothing of it was applied).
    Rejected,
}

impl Verdict {
    /// The exit code of `strata status`: 0 Ready, 1 Failed or Rejected, 2 Progressing.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ready => 0,
            Verdict::Failed { .. } | Verdict::Rejected => 1,
            Verdict::Progressing => 2,
        }
    }

    /// Whether waiting cannot change it (Ready, Stalled, Rejected): what `--wait` stops on.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Verdict::Ready | Verdict::Rejected | Verdict::Failed { stalled: true }
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "Ready",
            Verdict::Progressing => "Progressing",
            Verdict::Failed { stalled: false } => "Failed",
            Verdict::Failed { stalled: true } => "Stalled",
            Verdict::Rejected => "Rejected",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn releases(status: &Value) -> impl Iterator<Item = &Value> {
    status["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["releases"].as_array().into_iter().flatten())
}

/// The [`Verdict`] of a status document.
pub fn verdict(status: &Value) -> Verdict {
    let stalled = releases(status).any(|r| r["phase"] == "Failed" && r["action"] == "stalled");
    if status["rejectedRevision"]["commit"].is_string() || status["phase"] == "Invalid" {
        return Verdict::Rejected;
    }
    match status["phase"].as_str() {
        Some("Ready")
            if status["layers"]
                .as_array()
                .is_some_and(|ls| ls.iter().all(|l| l["phase"] == "Ready")) =>
        {
            Verdict::Ready
        }
        Some("Failed") => Verdict::Failed { stalled },
        _ if stalled => Verdict::Failed { stalled },
        _ => Verdict::Progressing,
    }
}

/// A layer's id as shown (`1`, `unlayered`).
fn layer_name(l: &Value) -> String {
    text(&l["layer"])
}

fn counts(l: &Value) -> (usize, usize) {
    let rs = l["releases"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    (
        rs.iter().filter(|r| r["phase"] == "Ready").count(),
        rs.len(),
    )
}

/// What a release is doing, in one line: `ns/name Phase (detail)` or, waiting, the first
/// resource it waits for.
fn release_line(r: &Value) -> String {
    let key = format!("{}/{}", text(&r["namespace"]), text(&r["name"]));
    let phase = text(&r["phase"]);
    let waiting = not_ready(r);
    if phase == "Waiting" && !waiting.is_empty() {
        return format!("{key} Waiting for {}", waiting.join("; "));
    }
    match release_detail(r) {
        Some(d) => format!("{key} {phase} ({d})"),
        None => format!("{key} {phase}"),
    }
}

/// The whole status as text: the overall phase, the revision, each layer with its releases
/// (and what they wait for), the problems of a rejected revision and the last error.
pub fn details(status: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = write!(out, "strata  {}", text(&status["phase"]));
    let v = verdict(status);
    if v.as_str() != status["phase"].as_str().unwrap_or_default() {
        let _ = write!(out, " ({v})");
    }
    out.push('\n');
    if let Some(commit) = status["revision"]["commit"].as_str() {
        let _ = write!(
            out,
            "revision {}  fetched {}",
            short(commit),
            text(&status["revision"]["fetchedAt"])
        );
        match status["lastAppliedRevision"]["commit"].as_str() {
            Some(c) if c == commit => out.push_str("  applied"),
            Some(c) => {
                let _ = write!(out, "  (last applied: {})", short(c));
            }
            None => {}
        }
        out.push('\n');
    }
    for l in status["layers"].as_array().into_iter().flatten() {
        let (ready, total) = counts(l);
        let _ = writeln!(
            out,
            "layer {}  {}  {ready}/{total} ready",
            layer_name(l),
            text(&l["phase"])
        );
        for r in l["releases"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}", release_line(r));
        }
    }
    if let Some(commit) = status["rejectedRevision"]["commit"].as_str() {
        let _ = writeln!(out, "revision {} rejected:", short(commit));
        for p in problems(status) {
            let _ = writeln!(out, "  - {p}");
        }
    }
    if let Some(e) = status["lastError"].as_str() {
        let _ = writeln!(out, "last error: {e}");
    }
    out
}

/// `s` cut to `width` characters (a `~` marks the cut).
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('~');
    t
}

/// One progress line per layer under a header line, each at most `width` characters:
///
/// ```text
/// strata  Progressing  revision 0123456789ab
/// layer 1  [####################] 1/1  Ready
/// layer 2  [..........          ] 0/1  Progressing  linkerd/linkerd Waiting for ...
/// ```
pub fn board(status: &Value, width: usize) -> Vec<String> {
    const BAR: usize = 20;
    let mut head = format!("strata  {}", text(&status["phase"]));
    if let Some(commit) = status["revision"]["commit"].as_str() {
        head.push_str(&format!("  revision {}", short(commit)));
    }
    if let Some(commit) = status["rejectedRevision"]["commit"].as_str() {
        head.push_str(&format!("  (revision {} rejected)", short(commit)));
    }
    let mut lines = vec![fit(&head, width)];
    for l in status["layers"].as_array().into_iter().flatten() {
        let (ready, total) = counts(l);
        let phase = text(&l["phase"]);
        let filled = (ready * BAR).checked_div(total).unwrap_or(BAR);
        // Started releases that are not Ready yet show as `.`.
        let started = l["releases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| matches!(r["phase"].as_str(), Some("Installing" | "Waiting")))
            .count();
        let busy = if total == 0 {
            0
        } else {
            (started * BAR).div_ceil(total).min(BAR - filled)
        };
        let bar = format!(
            "{}{}{}",
            "#".repeat(filled),
            ".".repeat(busy),
            " ".repeat(BAR - filled - busy)
        );
        let mut line = format!("layer {}  [{bar}] {ready}/{total}  {phase}", layer_name(l));
        // The release worth naming: a failed one, else one being worked on.
        let rs = l["releases"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let named = rs.iter().find(|r| r["phase"] == "Failed").or_else(|| {
            rs.iter()
                .find(|r| matches!(r["phase"].as_str(), Some("Installing" | "Waiting")))
        });
        if let Some(r) = named {
            line.push_str("  ");
            line.push_str(&release_line(r));
        }
        lines.push(fit(&line, width));
    }
    if let Some(e) = status["lastError"].as_str() {
        lines.push(fit(&format!("last error: {e}"), width));
    }
    lines
}

/// A block of lines redrawn in place on a terminal: each draw moves the cursor back up over
/// the previous block and clears to the end of the screen before writing the new one. Lines
/// must fit the terminal's width (see [`board`]), or the count of lines to go back is wrong.
#[derive(Debug, Default)]
pub struct LiveBoard {
    shown: usize,
    last: Vec<String>,
}

impl LiveBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the block shown by `lines` (nothing is written when they did not change).
    pub fn draw(&mut self, out: &mut impl std::io::Write, lines: &[String]) -> std::io::Result<()> {
        if self.shown > 0 && self.last == lines {
            return Ok(());
        }
        self.erase_into(out)?;
        for l in lines {
            writeln!(out, "{l}")?;
        }
        self.shown = lines.len();
        self.last = lines.to_vec();
        out.flush()
    }

    /// Remove the block from the screen (to write something else where it was).
    pub fn erase(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        self.erase_into(out)?;
        out.flush()
    }

    /// Draw the last block again (after [`LiveBoard::erase`]).
    pub fn redraw(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let lines = std::mem::take(&mut self.last);
        self.draw(out, &lines)
    }

    fn erase_into(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.shown > 0 {
            // Cursor to the start of the line `shown` lines up, clear to the end of screen.
            write!(out, "\x1b[{}F\x1b[J", self.shown)?;
            self.shown = 0;
        }
        Ok(())
    }
}

/// A terminal shared by log lines and a [`LiveBoard`] (`strata run` on a terminal): each log
/// write erases the board, writes the log line where it was and draws the board again below
/// it, so the board stays at the bottom and the logs scroll above. Cheap to clone; use it as
/// the log writer ([`tracing_subscriber::fmt::MakeWriter`]) and call [`Console::show`] with
/// each new status.
#[derive(Clone)]
pub struct Console {
    inner: std::sync::Arc<std::sync::Mutex<ConsoleState>>,
}

struct ConsoleState {
    out: Box<dyn std::io::Write + Send>,
    board: LiveBoard,
}

impl Console {
    /// A console writing to `out` (the terminal).
    pub fn new(out: Box<dyn std::io::Write + Send>) -> Self {
        Self {
            inner: std::sync::Arc::new(std::sync::Mutex::new(ConsoleState {
                out,
                board: LiveBoard::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Draw `lines` as the board (see [`board`]).
    pub fn show(&self, lines: &[String]) {
        let mut st = self.lock();
        let ConsoleState { out, board } = &mut *st;
        // A terminal that went away: nothing to show it on.
        let _ = board.draw(out, lines);
    }
}

/// One log write through a [`Console`].
pub struct ConsoleWriter {
    console: Console,
}

impl std::io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut st = self.console.lock();
        let ConsoleState { out, board } = &mut *st;
        board.erase(out)?;
        out.write_all(buf)?;
        board.redraw(out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.console.lock().out.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Console {
    type Writer = ConsoleWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ConsoleWriter {
            console: self.clone(),
        }
    }
}

/// The width of the terminal on `fd` (its window size), else `$COLUMNS`, else 80.
pub fn terminal_width(fd: impl std::os::fd::AsFd) -> usize {
    if let Ok(ws) = rustix::termios::tcgetwinsize(fd)
        && ws.ws_col > 0
    {
        return usize::from(ws.ws_col);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c > 0)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(name: &str, phase: &str) -> Value {
        json!({"name": name, "namespace": name, "phase": phase, "notReady": []})
    }

    fn status(phase: &str, layers: Vec<(u64, &str, Vec<Value>)>) -> Value {
        json!({
            "phase": phase,
            "revision": {"commit": "0123456789abcdef0123", "fetchedAt": "2026-01-01T00:00:00Z"},
            "layers": layers.into_iter().map(|(n, p, rs)| json!({"layer": n, "phase": p, "releases": rs})).collect::<Vec<_>>(),
        })
    }

    fn lines(events: &[Event]) -> Vec<String> {
        events.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn first_document_shows_the_plan_and_the_phase() {
        let mut t = Tracker::new();
        let got = t.update(&status(
            "Progressing",
            vec![
                (
                    1,
                    "Progressing",
                    vec![release("cert-manager", "Installing")],
                ),
                (2, "Pending", vec![release("linkerd", "Pending")]),
            ],
        ));
        assert_eq!(
            lines(&got),
            [
                "revision 0123456789ab planned: layer 1 [cert-manager] layer 2 [linkerd]",
                "layer 1  release cert-manager/cert-manager  Installing",
                "layer 1  Progressing",
                "strata  Progressing",
            ]
        );
        // Nothing changed: nothing printed.
        assert!(
            t.update(&status(
                "Progressing",
                vec![
                    (
                        1,
                        "Progressing",
                        vec![release("cert-manager", "Installing")]
                    ),
                    (2, "Pending", vec![release("linkerd", "Pending")]),
                ],
            ))
            .is_empty()
        );
    }

    #[test]
    fn transitions_waiting_and_ready() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![(
                1,
                "Progressing",
                vec![release("cert-manager", "Installing")],
            )],
        ));
        let mut waiting = release("cert-manager", "Waiting");
        waiting["notReady"] = json!([{"kind": "Deployment", "name": "webhook", "namespace": "cert-manager", "reason": "0 of 1 ready"}]);
        let got = t.update(&status(
            "Progressing",
            vec![(1, "Progressing", vec![waiting])],
        ));
        assert_eq!(
            lines(&got),
            [
                "layer 1  release cert-manager/cert-manager  Installing -> Waiting",
                "layer 1  release cert-manager/cert-manager  waiting for Deployment cert-manager/webhook: 0 of 1 ready",
            ]
        );
        let mut ready = release("cert-manager", "Ready");
        ready["action"] = json!("install");
        ready["helmRevision"] = json!(1);
        let got = t.update(&status("Ready", vec![(1, "Ready", vec![ready])]));
        assert_eq!(
            lines(&got),
            [
                "layer 1  release cert-manager/cert-manager  Waiting -> Ready (install, helm revision 1)",
                "layer 1  Ready",
                "strata  Progressing -> Ready",
            ]
        );
    }

    #[test]
    fn a_helm_run_between_two_documents_still_shows_installing() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![
                (1, "Progressing", vec![release("a", "Installing")]),
                (
                    2,
                    "Pending",
                    vec![release("b", "Pending"), release("c", "Pending")],
                ),
            ],
        ));
        let mut a = release("a", "Ready");
        a["attempts"] = json!(1);
        let mut b = release("b", "Waiting");
        b["attempts"] = json!(1);
        b["action"] = json!("install");
        // Up to date: no helm ran, so no Installing.
        let mut c = release("c", "Ready");
        c["attempts"] = json!(0);
        c["action"] = json!("none");
        let got = t.update(&status(
            "Progressing",
            vec![(1, "Ready", vec![a]), (2, "Progressing", vec![b, c])],
        ));
        assert_eq!(
            lines(&got),
            [
                "layer 1  release a/a  Installing -> Ready",
                "layer 1  Ready",
                "layer 2  release b/b  Pending -> Installing (install)",
                "layer 2  release b/b  Installing -> Waiting",
                "layer 2  release c/c  Pending -> Ready (none)",
                "layer 2  Progressing",
            ]
        );
    }

    #[test]
    fn reasons_that_name_the_object_are_not_repeated() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![(1, "Progressing", vec![release("a", "Installing")])],
        ));
        let mut waiting = release("a", "Waiting");
        waiting["notReady"] = json!([
            {"kind": "Deployment", "name": "web", "namespace": "a", "reason": "Deployment a/web: 0/1 replicas available"},
            {"kind": "Job", "name": "check", "reason": "not complete"}
        ]);
        let got = lines(&t.update(&status(
            "Progressing",
            vec![(1, "Progressing", vec![waiting.clone()])],
        )));
        assert_eq!(
            got[1],
            "layer 1  release a/a  waiting for Deployment a/web: 0/1 replicas available; Job check: not complete"
        );
        // The same resources again: nothing new to say.
        assert!(
            t.update(&status(
                "Progressing",
                vec![(1, "Progressing", vec![waiting])]
            ))
            .is_empty()
        );
    }

    #[test]
    fn failures_and_rejections_carry_their_messages() {
        let mut t = Tracker::new();
        t.update(&status(
            "Progressing",
            vec![(2, "Progressing", vec![release("linkerd", "Installing")])],
        ));
        let mut failed = release("linkerd", "Failed");
        failed["message"] = json!("failed post-install: job check failed");
        let mut doc = status("Failed", vec![(2, "Failed", vec![failed])]);
        doc["rejectedRevision"] = json!({"commit": "fedcba9876543210", "problems": [
            {"file": "profiles.yaml", "field": "profiles[0].chart", "message": "unknown chart"},
            {"file": "values/x.yaml", "field": "", "message": "missing"}
        ]});
        let got = lines(&t.update(&doc));
        assert_eq!(
            got,
            [
                "revision fedcba987654 rejected:\n           - profiles.yaml: profiles[0].chart: unknown chart\n           - values/x.yaml: missing",
                "layer 2  release linkerd/linkerd  Installing -> Failed (failed post-install: job check failed)",
                "layer 2  Failed",
                "strata  Progressing -> Failed",
            ]
        );
        assert!(stuck(&doc));
        assert!(!all_ready(&doc));
    }

    #[test]
    fn a_new_revision_starts_over() {
        let mut t = Tracker::new();
        t.update(&status(
            "Ready",
            vec![(1, "Ready", vec![release("a", "Ready")])],
        ));
        let mut doc = status(
            "Progressing",
            vec![(1, "Progressing", vec![release("a", "Installing")])],
        );
        doc["revision"]["commit"] = json!("aaaaaaaaaaaaaaaa");
        let got = lines(&t.update(&doc));
        assert_eq!(
            got,
            [
                "revision aaaaaaaaaaaa planned: layer 1 [a]",
                "layer 1  release a/a  Installing",
                "layer 1  Progressing",
                "strata  Ready -> Progressing",
            ]
        );
    }

    #[test]
    fn readiness_needs_every_layer() {
        assert!(all_ready(&status("Ready", vec![(1, "Ready", vec![])])));
        assert!(!all_ready(&status("Ready", vec![])));
        assert!(!all_ready(&status(
            "Ready",
            vec![(1, "Ready", vec![]), (2, "Progressing", vec![])]
        )));
        assert!(!all_ready(&json!({"phase": "Starting", "layers": []})));
        assert!(stuck(&json!({"phase": "Invalid", "layers": []})));
        assert!(!stuck(&json!({"phase": "Degraded", "layers": []})));
    }

    #[test]
    fn verdicts_and_exit_codes() {
        let ready = status("Ready", vec![(1, "Ready", vec![release("a", "Ready")])]);
        assert_eq!(verdict(&ready), Verdict::Ready);
        assert_eq!(verdict(&ready).exit_code(), 0);
        let going = status(
            "Progressing",
            vec![(1, "Progressing", vec![release("a", "Installing")])],
        );
        assert_eq!(verdict(&going), Verdict::Progressing);
        assert_eq!(verdict(&going).exit_code(), 2);
        assert!(!verdict(&going).is_final());
        let mut failed = release("a", "Failed");
        let doc = status("Failed", vec![(1, "Failed", vec![failed.clone()])]);
        assert_eq!(verdict(&doc), Verdict::Failed { stalled: false });
        assert!(!verdict(&doc).is_final(), "a retry is still due");
        assert_eq!(verdict(&doc).exit_code(), 1);
        failed["action"] = json!("stalled");
        let doc = status("Failed", vec![(1, "Failed", vec![failed])]);
        assert_eq!(verdict(&doc), Verdict::Failed { stalled: true });
        assert!(verdict(&doc).is_final());
        assert_eq!(verdict(&doc).to_string(), "Stalled");
        let mut rejected = ready.clone();
        rejected["phase"] = json!("Degraded");
        rejected["rejectedRevision"] = json!({"commit": "ffff", "problems": []});
        assert_eq!(verdict(&rejected), Verdict::Rejected);
        assert_eq!(verdict(&rejected).exit_code(), 1);
        assert_eq!(
            verdict(&json!({"phase": "Invalid", "layers": []})),
            Verdict::Rejected
        );
        assert_eq!(
            verdict(&json!({"phase": "Degraded", "layers": [], "lastError": "git"})),
            Verdict::Progressing
        );
        assert_eq!(
            verdict(&json!({"phase": "Starting", "layers": []})),
            Verdict::Progressing
        );
    }

    fn mid_install() -> Value {
        let mut waiting = release("linkerd", "Waiting");
        waiting["notReady"] = json!([{"kind": "Deployment", "name": "dest", "namespace": "linkerd", "reason": "0/1 replicas available"}]);
        let mut ready = release("cert-manager", "Ready");
        ready["action"] = json!("install");
        ready["helmRevision"] = json!(1);
        status(
            "Progressing",
            vec![
                (1, "Ready", vec![ready]),
                (2, "Progressing", vec![waiting, release("other", "Pending")]),
                (3, "Pending", vec![release("flagger", "Pending")]),
            ],
        )
    }

    #[test]
    fn the_board_has_a_progress_line_per_layer() {
        let lines = board(&mid_install(), 200);
        assert_eq!(
            lines,
            [
                "strata  Progressing  revision 0123456789ab",
                "layer 1  [####################] 1/1  Ready",
                "layer 2  [..........          ] 0/2  Progressing  linkerd/linkerd Waiting for Deployment linkerd/dest: 0/1 replicas available",
                "layer 3  [                    ] 0/1  Pending",
            ]
        );
        // Every line fits the width.
        for l in board(&mid_install(), 30) {
            assert!(l.chars().count() <= 30, "{l}");
        }
    }

    #[test]
    fn details_list_every_release() {
        let text = details(&mid_install());
        assert!(
            text.starts_with(
                "strata  Progressing\nrevision 0123456789ab  fetched 2026-01-01T00:00:00Z\n"
            ),
            "{text}"
        );
        assert!(text.contains("layer 1  Ready  1/1 ready\n  cert-manager/cert-manager Ready (install, helm revision 1)\n"), "{text}");
        assert!(text.contains("layer 2  Progressing  0/2 ready\n  linkerd/linkerd Waiting for Deployment linkerd/dest: 0/1 replicas available\n  other/other Pending\n"), "{text}");
        let mut doc = mid_install();
        doc["phase"] = json!("Degraded");
        doc["rejectedRevision"] = json!({"commit": "fedcba9876543210", "problems": [
            {"file": "profiles.yaml", "field": "profiles[0]", "message": "unknown field"}]});
        doc["lastError"] = json!("revision fedcba rejected");
        let text = details(&doc);
        assert!(text.starts_with("strata  Degraded (Rejected)\n"), "{text}");
        assert!(text.contains("revision fedcba987654 rejected:\n  - profiles.yaml: profiles[0]: unknown field\nlast error: revision fedcba rejected\n"), "{text}");
    }

    #[test]
    fn the_live_board_redraws_in_place() {
        let mut out = Vec::new();
        let mut b = LiveBoard::new();
        b.draw(&mut out, &["a".into(), "b".into()]).unwrap();
        b.draw(&mut out, &["a".into(), "b".into()]).unwrap();
        b.draw(&mut out, &["c".into()]).unwrap();
        b.erase(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\nb\n\x1b[2F\x1b[Jc\n\x1b[1F\x1b[J"
        );
    }

    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_scroll_above_the_board() {
        use std::io::Write as _;
        use tracing_subscriber::fmt::MakeWriter as _;
        let sink = Sink::default();
        let console = Console::new(Box::new(sink.clone()));
        console
            .make_writer()
            .write_all(b"log before any board\n")
            .unwrap();
        console.show(&["layer 1".into(), "layer 2".into()]);
        console.make_writer().write_all(b"a log line\n").unwrap();
        console.show(&["layer 1".into(), "layer 2 Ready".into()]);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "log before any board\n\
             layer 1\nlayer 2\n\
             \x1b[2F\x1b[Ja log line\nlayer 1\nlayer 2\n\
             \x1b[2F\x1b[Jlayer 1\nlayer 2 Ready\n"
        );
    }
}
