//! The parsers and the planner are total: no input makes them panic. A small seeded generator
//! (no proptest) mutates valid documents and the malformed-input corpus (`tests/corpus`),
//! builds random trees from the known field names, and drives the reconcile decision with
//! random inputs, checking its invariants.
//!
//! Budget and reproduction (CI runs this on every change):
//! - `STRATA_FUZZ_ITERATIONS` (default 1500 per test) and `STRATA_FUZZ_SECONDS` (default 15
//!   per test, whichever ends first) bound the run.
//! - `STRATA_FUZZ_SEED` (decimal or 0x-hex) fixes the seed; by default each run takes a new
//!   one from the clock, so CI explores new inputs over time. Every test prints its seed and
//!   every failure names it: rerun with `STRATA_FUZZ_SEED=<seed>` to reproduce.
//!
//! cargo-fuzz (libFuzzer) needs a nightly toolchain, which the build machines cannot install;
//! this generator is the stable-toolchain substitute.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_core::chart::{self, ChartMeta};
use strata_core::plan::{self, ReleaseKey};
use strata_core::profiles::{self, ProfileList};
use strata_core::schedule::{self, ReleaseState};
use strata_core::version::VersionConstraint;
use strata_core::{
    GoDuration, LayerNumber, allocation, input, limits, readiness, reconcile, repoindex, values,
};

/// xorshift64*: deterministic, seedable, good enough to explore inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn iterations() -> usize {
    std::env::var("STRATA_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn time_budget() -> Duration {
    Duration::from_secs(
        std::env::var("STRATA_FUZZ_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15),
    )
}

/// The run's seed: `STRATA_FUZZ_SEED`, or one from the clock. Printed so a failure can be
/// replayed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("STRATA_FUZZ_SEED") {
        Ok(v) => {
            let v = v.trim();
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("STRATA_FUZZ_SEED=`{v}` is not a number"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5EED, |d| {
                d.as_secs().wrapping_mul(1_000_003) ^ u64::from(d.subsec_nanos())
            }),
    };
    println!("{test}: STRATA_FUZZ_SEED={seed:#x} (rerun with this to reproduce)");
    seed
}

/// A generator for `test`, mixing in the test's own constant so tests explore differently.
fn rng_for(test: &str, salt: u64) -> (Rng, u64) {
    let s = seed(test);
    // xorshift must not start at 0.
    (Rng((s ^ salt).max(1)), s)
}

/// Runs `body` for every iteration of the budget, naming the seed and iteration on a panic.
fn fuzz(test: &str, seed: u64, mut body: impl FnMut(usize)) -> usize {
    let started = Instant::now();
    let budget = time_budget();
    let mut done = 0;
    for i in 0..iterations() {
        if started.elapsed() > budget {
            break;
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(i)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "{test}: iteration {i} failed: {msg}\nreproduce with STRATA_FUZZ_SEED={seed:#x} cargo test -p strata-core --test no_panic {test}"
            );
        }
        done += 1;
    }
    println!("{test}: {done} iterations in {:?}", started.elapsed());
    done
}

/// Files of the malformed-input corpus of one parser, as mutation seeds.
fn corpus(kind: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        // Alias bombs cost ~0.1 s each to reject: the corpus test covers them.
        .filter(|e| !e.file_name().to_string_lossy().contains("alias-bomb"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter(|b| b.len() < 4 * 1024)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    out.sort();
    out
}

const SEED_LIST: &str = r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
layering:
  model: category
  categories: {certificates: 10, mesh: layer-20}
repositories:
  - name: platform
    url: https://charts.example.com
defaults: {timeout: 5m, namespace: infra}
profiles:
  - name: cert-manager
    chart: {repository: platform, name: cert-manager}
    version: ">=1.2, <2 || ~3.1"
    values: {a: {b: [1, 2]}, c: null}
    valuesFiles: [values/a.yaml]
    layer: 3
    timeout: 1h30m
  - name: linkerd
    chart: {path: charts/linkerd}
    releaseName: mesh
    namespace: linkerd
    dependsOn: [cert-manager]
"#;

const SEED_CHART: &str = r#"apiVersion: v2
name: cert-manager
version: 1.2.3
type: application
annotations:
  strata.dev/profile: "true"
  weave.works/layer: layer-2
  strata.dev/category: certificates
dependencies:
  - {name: common, version: 1.x, repository: "https://x"}
"#;

const SEED_ALLOCATION: &str = "apiVersion: strata.dev/v1alpha1\nkind: LayerAllocation\ncomponents: {cert-manager: 1, linkerd: 2}\n";

const SEED_INDEX: &str = "apiVersion: v1\nentries:\n  a:\n    - {name: a, version: 1.0.0, urls: [a.tgz]}\n    - {name: a, version: 2.0.0-rc.1, urls: [b.tgz]}\n";

const ALPHABET: &[&str] = &[
    ":",
    " ",
    "\n",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    "\"",
    "&a",
    "*a",
    "!!str ",
    "!x ",
    "#",
    "|",
    ">",
    "? ",
    "<<: ",
    "0",
    "9",
    "1.2",
    "x",
    "é",
    "\t",
    "---\n",
    "...\n",
    "null",
    "~",
    "true",
    "  ",
    "\\",
    "%YAML 1.2\n",
    "\u{feff}",
    "layer-",
    "strata.dev/",
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(6) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                let end = (at + rng.below(8)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 | 2 => {
                let ins: Vec<char> = rng.pick(ALPHABET).chars().collect();
                chars.splice(at..at, ins);
            }
            3 => {
                // Duplicate a line.
                let text: String = chars.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    let mut out: Vec<&str> = lines.clone();
                    out.insert(i, lines[i]);
                    chars = out.join("\n").chars().collect();
                }
            }
            _ => {
                // Swap two lines.
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(i, j);
                    chars = lines.join("\n").chars().collect();
                }
            }
        }
    }
    chars.into_iter().collect()
}

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "layering",
    "model",
    "categories",
    "allocationFile",
    "repositories",
    "name",
    "url",
    "defaults",
    "timeout",
    "namespace",
    "profiles",
    "chart",
    "repository",
    "path",
    "version",
    "releaseName",
    "values",
    "valuesFiles",
    "layer",
    "components",
    "entries",
    "urls",
    "annotations",
    "type",
    "dependencies",
    "strata.dev/layer",
    "weave.works/profile",
    "remediation",
    "strategy",
    "retries",
];

const SCALARS: &[&str] = &[
    "strata.dev/v1alpha1",
    "ProfileList",
    "LayerAllocation",
    "category",
    "allocated",
    "annotation",
    "platform",
    "https://x",
    "oci://y",
    "ftp://z",
    "5m",
    "0",
    "-1s",
    "1.2.3",
    "~1.2",
    ">=1 <2 || ^3",
    "layer-3",
    "7",
    "charts/a",
    "../up",
    "/abs",
    "a",
    "UPPER",
    "",
    "v2",
    "library",
    "true",
    "false",
    "retry",
    "rollback",
    "uninstall",
];

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let kind = if depth > 4 {
        rng.below(4)
    } else {
        rng.below(7)
    };
    match kind {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(i64::try_from(rng.next() % 200).unwrap_or(0) - 50),
        3 => json!(rng.pick(SCALARS)),
        4 => json!(1.5),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(6) {
                m.insert(rng.pick(KEYS).to_string(), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// A random document that often looks like a profile list.
fn random_list(rng: &mut Rng) -> String {
    let mut top = serde_json::Map::new();
    top.insert("apiVersion".into(), json!("strata.dev/v1alpha1"));
    top.insert("kind".into(), json!("ProfileList"));
    if rng.chance(50) {
        top.insert("layering".into(), random_value(rng, 2));
    }
    if rng.chance(70) {
        top.insert(
            "repositories".into(),
            json!([{"name": "platform", "url": "https://charts.example.com"}]),
        );
    }
    let profiles: Vec<Value> = (0..rng.below(5))
        .map(|_| {
            let mut p = serde_json::Map::new();
            for _ in 0..rng.below(7) {
                let k = *rng.pick(KEYS);
                let v = match k {
                    "chart" if rng.chance(60) => {
                        if rng.chance(50) {
                            json!({"path": "charts/a"})
                        } else {
                            json!({"repository": "platform", "name": rng.pick(SCALARS)})
                        }
                    }
                    _ => random_value(rng, 2),
                };
                p.insert(k.to_string(), v);
            }
            if rng.chance(70) {
                p.insert("name".into(), json!(rng.pick(&["a", "b", "c", "Bad"])));
            }
            Value::Object(p)
        })
        .collect();
    top.insert("profiles".into(), Value::Array(profiles));
    if rng.chance(30) {
        top.insert(rng.pick(KEYS).to_string(), random_value(rng, 1));
    }
    Value::Object(top).to_string()
}

fn random_chart(rng: &mut Rng, name: &str) -> Option<ChartMeta> {
    let mut annotations = serde_json::Map::new();
    for key in [
        "strata.dev/profile",
        "weave.works/profile",
        "strata.dev/layer",
        "weave.works/layer",
        "strata.dev/category",
    ] {
        if rng.chance(40) {
            annotations.insert(
                key.into(),
                json!(rng.pick(&[
                    "true",
                    "false",
                    "layer-1",
                    "2",
                    "x",
                    "certificates",
                    "mesh",
                    ""
                ])),
            );
        }
    }
    let doc = json!({"apiVersion": "v2", "name": name, "version": rng.pick(&["1.2.3", "1.0.0", "2.0.0-rc.1", "bad"]),
        "type": rng.pick(&["application", "library"]), "annotations": annotations});
    chart::parse_chart_yaml("Chart.yaml", &doc.to_string()).ok()
}

fn exercise_plan(rng: &mut Rng, list: &ProfileList) {
    let mut charts = BTreeMap::new();
    for p in &list.profiles {
        if rng.chance(90) {
            let name = match &p.chart {
                profiles::ChartRef::Repository { name, .. } if rng.chance(80) => name.clone(),
                _ => p.name.clone(),
            };
            if let Some(c) = random_chart(rng, &name) {
                charts.insert(p.name.clone(), c);
            }
        }
    }
    let alloc = allocation::parse("l.yaml", SEED_ALLOCATION).ok();
    let result = plan::plan(
        list,
        &charts,
        if rng.chance(50) { alloc.as_ref() } else { None },
    );
    if let Ok(p) = result {
        let _ = p.to_string();
        let _ = serde_json::to_string(&p).unwrap();
        let mut states = BTreeMap::new();
        for r in p.releases() {
            let s = match rng.below(4) {
                0 => ReleaseState::Pending,
                1 => ReleaseState::Running,
                2 => ReleaseState::Ready,
                _ => ReleaseState::Failed {
                    message: "x".into(),
                },
            };
            states.insert(r.release.clone(), s);
        }
        let step = schedule::next_actions(&p, &states);
        // Every release is accounted for exactly once unless Ready or Failed.
        let listed = step.start.len() + step.running.len() + step.blocked.len();
        let settled = states
            .iter()
            .filter(|(k, s)| {
                matches!(s, ReleaseState::Ready | ReleaseState::Failed { .. })
                    && !step.blocked.iter().any(|(b, _)| b == *k)
            })
            .count();
        assert_eq!(listed + settled, p.releases().count());
        let _ = p.layer_index(&ReleaseKey::new("x", "y"));
    }
}

#[test]
fn profile_list_parser_and_planner_never_panic() {
    let (mut rng, seed) = rng_for("profile_list_parser_and_planner_never_panic", 0x5EED_0001);
    let hostile = corpus("profiles");
    let mut accepted = 0;
    let done = fuzz("profile_list_parser_and_planner_never_panic", seed, |i| {
        let text = match i % 4 {
            0 | 1 => mutate(&mut rng, SEED_LIST),
            2 if !hostile.is_empty() => {
                let base = rng.pick(&hostile).clone();
                mutate(&mut rng, &base)
            }
            _ => random_list(&mut rng),
        };
        match profiles::parse("p.yaml", &text) {
            Ok(list) => {
                accepted += 1;
                exercise_plan(&mut rng, &list);
            }
            Err(ps) => {
                assert!(!ps.is_empty());
                for p in ps.iter() {
                    assert_eq!(p.file, "p.yaml", "{p}");
                    assert!(!p.message.is_empty(), "{p:?}");
                }
            }
        }
    });
    // The generator must reach the planner, or the test proves little.
    assert!(
        accepted * 100 >= done,
        "only {accepted} of {done} generated lists were valid (seed {seed:#x})"
    );
}

#[test]
fn other_parsers_never_panic() {
    let (mut rng, seed) = rng_for("other_parsers_never_panic", 0x5EED_0002);
    let seeds: Vec<(&str, Vec<String>)> = ["charts", "allocation", "values", "index"]
        .into_iter()
        .map(|k| (k, corpus(k)))
        .collect();
    fuzz("other_parsers_never_panic", seed, |_| {
        // A corpus file of each parser, mutated.
        for (kind, files) in &seeds {
            if files.is_empty() {
                continue;
            }
            let base = rng.pick(files).clone();
            let text = mutate(&mut rng, &base);
            let _ = match *kind {
                "charts" => chart::parse_chart_yaml("Chart.yaml", &text).map(|_| ()),
                "allocation" => allocation::parse("l.yaml", &text).map(|_| ()),
                "values" => values::parse_file("v.yaml", &text).map(|_| ()),
                _ => repoindex::parse("i", &text).map(|_| ()),
            };
        }
        // Random bytes through the decoder.
        let bytes: Vec<u8> = (0..rng.below(64))
            .map(|_| u8::try_from(rng.next() >> 56).unwrap_or(0))
            .collect();
        if let Ok(t) = input::decode("b.yaml", &bytes) {
            let _ = values::parse_file("b.yaml", &t);
        }
        let _ = chart::parse_chart_yaml("Chart.yaml", &mutate(&mut rng, SEED_CHART));
        let _ = allocation::parse("l.yaml", &mutate(&mut rng, SEED_ALLOCATION));
        if let Ok(idx) = repoindex::parse("i", &mutate(&mut rng, SEED_INDEX)) {
            let c = VersionConstraint::parse(">=1.0.0-0").unwrap();
            let _ = repoindex::resolve_version(&idx, "a", Some(&c));
            let _ = repoindex::resolve_version(&idx, "a", None);
        }
        let v = random_value(&mut rng, 0);
        let _ = chart::parse_chart_yaml("Chart.yaml", &v.to_string());
        let _ = allocation::parse("l.yaml", &v.to_string());
        let _ = readiness::assess(&v);
        let _ = values::merge(&[("f".into(), random_value(&mut rng, 0))], &v);
        let _ = values::canonical_digest(&v);
        let s: String = (0..rng.below(12)).map(|_| *rng.pick(ALPHABET)).collect();
        let _ = VersionConstraint::parse(&s).map(|c| c.matches_str("1.2.3"));
        let _ = GoDuration::parse(&s);
        let _ = LayerNumber::parse(&s);
        let _ = limits::check_values("p", &v);
    });
}

/// The reconcile decision keeps its promises whatever it is fed.
#[test]
fn reconcile_decisions_keep_their_invariants() {
    use reconcile::{Action, ActionKind, Inputs, LockState};
    use strata_core::profiles::{Remediation, RemediationStrategy};
    let (mut rng, seed) = rng_for("reconcile_decisions_keep_their_invariants", 0x5EED_0003);
    let statuses = [
        "deployed",
        "failed",
        "pending-install",
        "pending-upgrade",
        "pending-rollback",
        "superseded",
        "uninstalling",
        "uninstalled",
        "",
        "odd",
    ];
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Decisions are cheap: 20 per iteration.
    let done = fuzz("reconcile_decisions_keep_their_invariants", seed, |_| {
        for _ in 0..20 {
            let desired = reconcile::DesiredRelease {
                name: "a".into(),
                namespace: "n".into(),
                chart_name: "c".into(),
                chart_version: (*rng.pick(&["1.0.0", "2.0.0"])).into(),
                values_digest: (*rng.pick(&["d1", "d2"])).into(),
                chart_digest: rng.chance(50).then(|| (*rng.pick(&["c1", "c2"])).into()),
                content_digest: rng.chance(50).then(|| (*rng.pick(&["k1", "k2"])).into()),
            };
            let observed = rng.chance(85).then(|| reconcile::ObservedRelease {
                status: reconcile::ReleaseStatus::parse(statuses[rng.below(statuses.len())]),
                chart_name: "c".into(),
                chart_version: (*rng.pick(&["1.0.0", "2.0.0"])).into(),
                values_digest: rng.chance(80).then(|| (*rng.pick(&["d1", "d2"])).into()),
                revision: u32::try_from(rng.below(5)).unwrap_or(0),
                stamp: rng.chance(50).then(|| strata_core::digest::Stamp {
                    profile: "a".into(),
                    layer: Some(1),
                    chart_digest: (*rng.pick(&["c1", "c2"])).into(),
                    content_digest: (*rng.pick(&["k1", "k2"])).into(),
                }),
            });
            let strategy = *rng.pick(&RemediationStrategy::ALL);
            let retries = u32::try_from(rng.below(4)).unwrap_or(0) + 1;
            let lock = match rng.below(3) {
                0 => LockState::HeldByUs,
                1 => LockState::HeldByOther { holder: "b".into() },
                _ => LockState::Unknown,
            };
            let inputs = Inputs {
                lock: lock.clone(),
                remediation: Remediation { strategy, retries },
                retry: strata_core::retry::RetryState {
                    attempts: u32::try_from(rng.below(6)).unwrap_or(0),
                    last_error: rng.chance(50).then(|| "boom".to_owned()),
                    ..Default::default()
                },
                last_deployed_revision: rng
                    .chance(60)
                    .then(|| u32::try_from(rng.below(5)).unwrap_or(0)),
                performed: (0..rng.below(3))
                    .map(|_| *rng.pick(&ActionKind::ALL))
                    .collect(),
                missing: if rng.chance(30) {
                    vec![reconcile::MissingObject {
                        kind: "ConfigMap".into(),
                        namespace: Some("a".into()),
                        name: "cm".into(),
                    }]
                } else {
                    Vec::new()
                },
                changed: if rng.chance(30) {
                    vec![reconcile::ChangedObject {
                        object: reconcile::MissingObject {
                            kind: "ConfigMap".into(),
                            namespace: Some("a".into()),
                            name: "cm".into(),
                        },
                        paths: vec!["/data/a".into()],
                    }]
                } else {
                    Vec::new()
                },
            };
            let a = reconcile::decide_with(&desired, observed.as_ref(), &inputs);
            let ctx = format!("{observed:?} {inputs:?} -> {a:?}");
            let _ = a.to_string();
            let _ = serde_json::to_string(&a).unwrap();
            seen.entry(match &a {
                Action::Install { .. } => "install",
                Action::Upgrade { .. } => "upgrade",
                Action::NoOp => "noop",
                Action::Blocked { .. } => "blocked",
                Action::RecoverPendingInstall { .. } => "recover-install",
                Action::RollbackThenUpgrade { .. } => "rollback-then-upgrade",
                Action::RemediateRollback { .. } => "remediate-rollback",
                Action::RemediateUninstall { .. } => "remediate-uninstall",
                Action::AwaitRetry { .. } => "await-retry",
                Action::Stalled { .. } => "stalled",
                _ => "other",
            })
            .and_modify(|n| *n += 1)
            .or_insert(1);
            if let Some(k) = a.kind() {
                assert!(!inputs.performed.contains(&k), "repeated: {ctx}");
                assert!(
                    !matches!(lock, LockState::HeldByOther { .. }),
                    "helm while another holds the Lease: {ctx}"
                );
                if k.is_recovery() {
                    assert_eq!(lock, LockState::HeldByUs, "{ctx}");
                }
                if k.is_destructive() {
                    assert_eq!(strategy, RemediationStrategy::Uninstall, "{ctx}");
                }
                assert!(
                    !inputs.performed.iter().any(|p| p.is_remediation()),
                    "helm after a remediation in the same attempt: {ctx}"
                );
            }
            if let Action::RollbackThenUpgrade { to_revision, .. }
            | Action::RemediateRollback { to_revision, .. } = &a
            {
                let rev = observed.as_ref().map_or(0, |o| o.revision);
                assert!(*to_revision >= 1 && *to_revision < rev, "{ctx}");
            }
            if matches!(a, Action::Stalled { .. }) {
                assert!(inputs.retry.attempts >= retries, "{ctx}");
            }
            if inputs.retry.attempts >= retries && inputs.performed.is_empty() {
                assert!(
                    matches!(a, Action::Stalled { .. } | Action::NoOp),
                    "not stalled: {ctx}"
                );
            }
        }
    });
    println!("decisions seen: {seen:?}");
    // The generator reaches every decision, or the invariants above prove little.
    if done >= 1000 {
        assert_eq!(seen.len(), 10, "decisions seen: {seen:?} (seed {seed:#x})");
    }
}

#[test]
fn hostile_documents_are_rejected_not_fatal() {
    let deep_flow = "[".repeat(100_000);
    let deep_block: String = (0..500).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    for doc in [
        deep_flow.as_str(),
        deep_block.as_str(),
        laughs,
        "\u{0}",
        "a: !!binary x\n",
    ] {
        assert!(profiles::parse("p.yaml", doc).is_err());
        assert!(chart::parse_chart_yaml("Chart.yaml", doc).is_err());
        let _ = repoindex::parse("i", doc);
    }
    // Reconcile on odd observations.
    let desired = reconcile::DesiredRelease {
        name: "a".into(),
        namespace: "b".into(),
        chart_name: String::new(),
        chart_version: String::new(),
        values_digest: String::new(),
        chart_digest: None,
        content_digest: None,
    };
    let observed = reconcile::ObservedRelease {
        status: reconcile::ReleaseStatus::parse(""),
        chart_name: String::new(),
        chart_version: String::new(),
        values_digest: None,
        revision: 0,
        stamp: None,
    };
    assert!(!reconcile::decide(&desired, Some(&observed)).runs_helm());
}
