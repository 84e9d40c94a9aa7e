//! Version resolution agrees with real helm (4 and 3): for every constraint in the table, the
//! version `helm pull --version` picks from a repository index is the one
//! `repoindex::resolve_version` picks (or both find none).
//!
//! A tiny HTTP server on 127.0.0.1 serves the index and answers every chart download with 404,
//! logging the path: the requested `.tgz` tells which version helm chose.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use strata_core::repoindex;
use strata_core::version::VersionConstraint;

const VERSIONS: &[&str] = &[
    "0.0.0",
    "0.1.0",
    "4.3.2",
    "4.3.4-rc.0",
    "0.0.3",
    "0.0.4",
    "0.2.3",
    "0.2.9",
    "0.3.0",
    "1.0.0",
    "1.2.0",
    "1.2.3",
    "1.2.9",
    "1.3.0-rc.1",
    "1.3.0",
    "1.4.5",
    "1.4.6",
    "2.0.0-rc.1",
    "2.0.0",
    "3.1.0",
    "v3.2.0",
];

const CONSTRAINTS: &[&str] = &[
    "1.2.3",
    "=1.2.3",
    "v1.2.3",
    "1.2.x",
    "1.2",
    "1.x",
    "*",
    "~1.2.3",
    "~1.2",
    "~1",
    "~>1.2",
    "^1.2.3",
    "^0.2.3",
    "^0.0.3",
    "^0",
    "^0.0",
    ">=1.2, <2",
    ">=1.2 <2",
    ">= 1.2, < 2",
    ">1.2",
    "<=1.2",
    "<1.2",
    "!=3.2.0",
    "1.2 - 1.4.5",
    "1.2 - 1.4",
    "~1.2 || ^3",
    "<1 || >=3",
    ">=1.3.0-0",
    "~1.3.0-rc.0",
    ">=2.0.0-rc.1",
    "1.3.0-rc.1",
    "~3.2",
    "v3.2.0",
    "3.2.0",
    ">5",
    "2",
    "=>1.0 =<1.2",
    "1.2.3 || 1.4.5",
    ">=1.3.0-0, <1.3.0",
    "<2.0.0-0",
    "<=2.0.0-rc.1",
    "1.3.0-rc.1 - 1.3.0-rc.9",
    ">1.2.9 <1.3.0-rc.5",
    "^1.3.0-rc.0 <1.3.0",
    ">=1.3.0-rc.0 <=1.3.0-rc.9",
    "~2.0.0-0",
    "2.0.0-rc.1 || 1.3.0-rc.1",
    "<0.0.4",
    ">0.0.3 <0.2",
    "x",
    "1.X",
    "~0",
    "^0.3",
    ">= 0.2.9, <= 0.3.0",
    // Helm's answers for operators on a bare wildcard and for ~0.0.0 (found by the fuzzer).
    ">x",
    "<=x",
    "^x",
    "!=x",
    "~x",
    "<x || ~0.0.0",
    "!=0.x >0.0",
    // Syntax: what helm rejects, strata rejects.
    "1.2.3.4",
    "banana",
    ">=1.2,<2",
    "~ 1.2",
    ">= 1.2 < 2",
    "1.2.3+build.1",
    "v1.x",
    "1.2.3 - 2",
    "1.x.3",
    "=> 1.2",
    "=<1.2",
    "v1.2.3-rc.1",
    "~1.2.3+meta",
    "1.3.0-rc.1+meta",
    ">1.2.3-rc.1 <1.3",
    "1.2 - 1.4 || 3",
    "*.*.*",
    "x.x",
    "1.2.*",
    "  1.2.3  ",
    "~>v1.2",
    "^v0.2",
    ">=01.2",
    "1.x-rc.1",
    ">=1.2-rc.1",
    "1.2-rc.1 - 1.3",
    "<1.3.0 || >=9.0.0-0",
    ">=1.2.9, <1.3.0 || >=9.0.0-0",
];

fn tools_dir() -> PathBuf {
    std::env::var_os("STRATA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools"))
}

fn index_yaml() -> String {
    let mut s = String::from("apiVersion: v1\nentries:\n  demo:\n");
    for v in VERSIONS {
        s.push_str(&format!(
            "    - apiVersion: v2\n      name: demo\n      version: {v}\n      urls: [demo-{v}.tgz]\n      digest: \"0\"\n      created: \"2024-01-01T00:00:00Z\"\n"
        ));
    }
    s
}

/// Serve `index` at /index.yaml; 404 and log every other path. Returns the base URL.
fn serve(index: String, log: Arc<Mutex<Vec<String>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_owned();
            let (status, body) = if path.ends_with("/index.yaml") {
                ("200 OK", index.clone())
            } else {
                log.lock().unwrap().push(path);
                ("404 Not Found", "not found".to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

/// What helm does with `constraint`: the version it picks, `none` when no version matches,
/// `invalid` when it rejects the constraint.
fn helm_pick(helm: &PathBuf, url: &str, constraint: &str, log: &Mutex<Vec<String>>) -> String {
    let home = tempfile::tempdir().unwrap();
    log.lock().unwrap().clear();
    let out = Command::new(helm)
        .args([
            "pull",
            "demo",
            "--repo",
            url,
            "--version",
            constraint,
            "--destination",
        ])
        .arg(home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("helm runs");
    assert!(!out.status.success(), "every download answers 404");
    let requested = log.lock().unwrap().clone();
    match requested.as_slice() {
        [] => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("improper constraint") {
                return "invalid".into();
            }
            assert!(
                stderr.contains("not found") || stderr.contains("no chart version"),
                "helm failed for another reason with `{constraint}`: {stderr}"
            );
            "none".into()
        }
        [path, ..] => path
            .rsplit('/')
            .next()
            .unwrap()
            .trim_start_matches("demo-")
            .trim_end_matches(".tgz")
            .to_owned(),
    }
}

/// The same for strata.
fn strata_pick(index: &repoindex::RepoIndex, constraint: &str) -> String {
    match VersionConstraint::parse(constraint) {
        Err(_) => "invalid".into(),
        Ok(c) => repoindex::resolve_version(index, "demo", Some(&c))
            .map_or_else(|_| "none".into(), |e| e.version.clone()),
    }
}

fn check(helm_dir: &str) {
    let helm = tools_dir().join(helm_dir).join("helm");
    assert!(
        helm.exists(),
        "{} is missing: run scripts/install-tools.sh (or set STRATA_TOOLS_DIR)",
        helm.display()
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let url = serve(index_yaml(), log.clone());
    let index = repoindex::parse(&url, &index_yaml()).unwrap();
    let mut disagreements = Vec::new();
    let mut all: Vec<String> = CONSTRAINTS.iter().map(|c| c.to_string()).collect();
    all.extend(random_constraints());
    for c in &all {
        let ours = strata_pick(&index, c);
        let theirs = helm_pick(&helm, &url, c, &log);
        // Helm answers an unparsable constraint with "not found"; strata rejects it while
        // validating the list. Both install nothing, so the two count as the same answer.
        let same = ours == theirs
            || (matches!(ours.as_str(), "none" | "invalid")
                && matches!(theirs.as_str(), "none" | "invalid"));
        if !same {
            disagreements.push(format!("`{c}`: helm {theirs}, strata {ours}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{helm_dir} disagrees:\n{}",
        disagreements.join("\n")
    );
}

/// `STRATA_HELM_VERSION_FUZZ=N` adds N seeded random constraints to the table
/// (`STRATA_HELM_VERSION_FUZZ_SEED` picks another seed).
fn random_constraints() -> Vec<String> {
    let n: usize = std::env::var("STRATA_HELM_VERSION_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut state: u64 = std::env::var("STRATA_HELM_VERSION_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut next = move |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % (m as u64)).unwrap_or(0)
    };
    let ops = ["", "=", "!=", ">", "<", ">=", "<=", "~", "^", "~>"];
    let parts = ["0", "1", "2", "3", "4", "x"];
    let pres = ["", "", "", "-0", "-rc.0", "-rc.1", "-rc.5"];
    let comparator = |next: &mut dyn FnMut(usize) -> usize| {
        let len = 1 + next(3);
        let mut v: Vec<&str> = (0..len).map(|_| parts[next(parts.len())]).collect();
        if let Some(i) = v.iter().position(|p| *p == "x") {
            v.truncate(i + 1);
        }
        let pre = if v.len() == 3 && !v.contains(&"x") {
            pres[next(pres.len())]
        } else {
            ""
        };
        format!("{}{}{}", ops[next(ops.len())], v.join("."), pre)
    };
    (0..n)
        .map(|_| {
            let groups = 1 + next(2);
            (0..groups)
                .map(|_| {
                    let count = 1 + next(2);
                    (0..count)
                        .map(|_| comparator(&mut next))
                        .collect::<Vec<_>>()
                        .join(if next(2) == 0 { " " } else { ", " })
                })
                .collect::<Vec<_>>()
                .join(" || ")
        })
        .collect()
}

#[test]
fn resolution_matches_helm4() {
    check("helm4");
}

#[test]
fn resolution_matches_helm3() {
    check("helm3");
}
