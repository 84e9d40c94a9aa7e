//! The malformed-input corpus (`tests/corpus/<parser>/*`): hand-made hostile and broken files
//! (truncated YAML, wrong types, deep nesting, alias bombs, huge strings, invalid UTF-8, BOMs,
//! tabs, duplicate keys, unknown fields, anchor cycles...) run through the parser of their
//! directory, the way the agent reads files from Git: bytes -> [`input::decode`] -> parser.
//!
//! For every file: no panic, an answer within a time bound, and a rejection whose problems all
//! name the file, are short (a huge input is not echoed back) and, as listed in
//! `tests/corpus/EXPECTED`, name the field. `EXPECTED` lists every file with its outcome, so a
//! parser that starts accepting a broken file (or rejecting a good one) fails here.
//!
//! Add a file: drop it in the directory of its parser, run this test, and add its line to
//! `EXPECTED` (`path | accept|reject | field=<exact field> | msg=<part of a message>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_core::problem::Problem;
use strata_core::{allocation, chart, input, plan, profiles, repoindex, values};

/// Longest time one file may take (unoptimised build, shared CI machine).
const BOUND: Duration = Duration::from_secs(30);
/// Longest displayed problem: inputs are never echoed at length.
const MAX_PROBLEM_CHARS: usize = 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[derive(Debug)]
struct Outcome {
    accepted: bool,
    problems: Vec<Problem>,
    /// Index entries skipped as unusable (the index itself is accepted).
    skipped: Vec<String>,
}

fn rejected(ps: strata_core::Problems) -> Outcome {
    Outcome {
        accepted: false,
        problems: ps.0,
        skipped: Vec::new(),
    }
}

fn accepted() -> Outcome {
    Outcome {
        accepted: true,
        problems: Vec::new(),
        skipped: Vec::new(),
    }
}

/// Read `bytes` the way the agent does and run the parser of `kind`.
fn run(kind: &str, name: &str, bytes: &[u8]) -> Outcome {
    let text = match input::decode(name, bytes) {
        Ok(t) => t,
        Err(ps) => return rejected(ps),
    };
    match kind {
        "profiles" => match profiles::parse(name, &text) {
            Ok(list) => {
                // The planner must take whatever the parser accepts.
                let _ = plan::plan(&list, &BTreeMap::new(), None);
                accepted()
            }
            Err(ps) => rejected(ps),
        },
        "charts" => match chart::parse_chart_yaml(name, &text) {
            Ok(_) => accepted(),
            Err(ps) => rejected(ps),
        },
        "allocation" => match allocation::parse(name, &text) {
            Ok(_) => accepted(),
            Err(ps) => rejected(ps),
        },
        "values" => match values::parse_file(name, &text) {
            Ok(v) => {
                let _ = values::canonical_digest(&v);
                let _ = strata_core::limits::check_values(name, &v);
                accepted()
            }
            Err(ps) => rejected(ps),
        },
        "index" => match repoindex::parse(name, &text) {
            Ok(idx) => {
                let _ = repoindex::resolve_version(&idx, "a", None);
                Outcome {
                    skipped: idx.skipped.clone(),
                    ..accepted()
                }
            }
            Err(ps) => rejected(ps),
        },
        other => panic!("tests/corpus/{other}: no parser for this directory"),
    }
}

/// [`run`] on its own thread: a panic or a hang is reported with the file's name.
fn run_bounded(kind: &str, name: &str, bytes: Vec<u8>) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let (k, n) = (kind.to_owned(), name.to_owned());
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = tx.send(run(&k, &n, &bytes));
        })
        .unwrap();
    match rx.recv_timeout(BOUND) {
        Ok(o) => {
            handle.join().unwrap();
            o
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: no answer within {BOUND:?} (the parser hangs)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: the parser panicked"),
    }
}

struct Expectation {
    accept: bool,
    fields: Vec<String>,
    messages: Vec<String>,
    skipped: Vec<String>,
}

fn expectations() -> BTreeMap<String, Expectation> {
    let text = std::fs::read_to_string(corpus_dir().join("EXPECTED")).unwrap();
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let mut e = Expectation {
            accept: match parts.get(1) {
                Some(&"accept") => true,
                Some(&"reject") => false,
                other => panic!("EXPECTED line {}: outcome {other:?}", i + 1),
            },
            fields: Vec::new(),
            messages: Vec::new(),
            skipped: Vec::new(),
        };
        for p in &parts[2..] {
            match p.split_once('=') {
                Some(("field", f)) => e.fields.push(f.to_owned()),
                Some(("msg", m)) => e.messages.push(m.to_owned()),
                Some(("skipped", m)) => e.skipped.push(m.to_owned()),
                _ => panic!("EXPECTED line {}: `{p}`", i + 1),
            }
        }
        assert!(
            out.insert(parts[0].to_owned(), e).is_none(),
            "EXPECTED line {}: {} listed twice",
            i + 1,
            parts[0]
        );
    }
    out
}

fn corpus_files() -> Vec<(String, String, PathBuf)> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(corpus_dir()).unwrap().flatten() {
        if !dir.path().is_dir() {
            continue;
        }
        let kind = dir.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = format!("{kind}/{}", f.file_name().to_string_lossy());
            files.push((kind.clone(), name, f.path()));
        }
    }
    files.sort();
    files
}

#[test]
fn every_corpus_file_is_answered_as_expected() {
    let expected = expectations();
    let files = corpus_files();
    let names: Vec<&String> = files.iter().map(|(_, n, _)| n).collect();
    for name in expected.keys() {
        assert!(
            names.contains(&name),
            "EXPECTED lists {name}, which does not exist"
        );
    }
    for kind in ["profiles", "charts", "allocation", "values", "index"] {
        assert!(
            files.iter().filter(|(k, _, _)| k == kind).count() >= 5,
            "tests/corpus/{kind} holds fewer than 5 files"
        );
    }
    let mut failures = Vec::new();
    for (kind, name, path) in &files {
        let started = Instant::now();
        let outcome = run_bounded(kind, name, std::fs::read(path).unwrap());
        let took = started.elapsed();
        let shown: Vec<String> = outcome.problems.iter().map(ToString::to_string).collect();
        println!(
            "{name}: {} in {took:?}{}",
            if outcome.accepted {
                "accepted"
            } else {
                "rejected"
            },
            shown
                .iter()
                .take(4)
                .map(|s| format!("\n    {}", s.chars().take(200).collect::<String>()))
                .collect::<String>()
        );
        let Some(e) = expected.get(name) else {
            failures.push(format!("{name}: not listed in EXPECTED"));
            continue;
        };
        if outcome.accepted != e.accept {
            failures.push(format!(
                "{name}: expected {}, got {}: {shown:?}",
                if e.accept { "accept" } else { "reject" },
                if outcome.accepted { "accept" } else { "reject" },
            ));
            continue;
        }
        if !outcome.accepted {
            if outcome.problems.is_empty() {
                failures.push(format!("{name}: rejected without a problem"));
            }
            for (p, s) in outcome.problems.iter().zip(&shown) {
                if p.file != *name {
                    failures.push(format!("{name}: a problem names another file: {s}"));
                }
                if p.message.trim().is_empty() {
                    failures.push(format!("{name}: a problem without a message: {p:?}"));
                }
                if s.chars().count() > MAX_PROBLEM_CHARS {
                    failures.push(format!(
                        "{name}: a problem of {} characters echoes the input: {}...",
                        s.chars().count(),
                        s.chars().take(120).collect::<String>()
                    ));
                }
            }
        }
        for f in &e.fields {
            if !outcome.problems.iter().any(|p| p.field == *f) {
                failures.push(format!("{name}: no problem at field `{f}`: {shown:?}"));
            }
        }
        for m in &e.messages {
            if !shown.iter().any(|s| s.contains(m.as_str())) {
                failures.push(format!("{name}: no problem says `{m}`: {shown:?}"));
            }
        }
        for m in &e.skipped {
            if !outcome.skipped.iter().any(|s| s.contains(m.as_str())) {
                failures.push(format!(
                    "{name}: no skipped entry says `{m}`: {:?}",
                    outcome.skipped
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
