//! The parsers and the planner are total: no input makes them panic. A small seeded generator
//! (no proptest) mutates valid documents and builds random trees from the known field names.
//! Set `STRATA_FUZZ_ITERATIONS` to run longer.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use strata_core::chart::{self, ChartMeta};
use strata_core::plan::{self, ReleaseKey};
use strata_core::profiles::{self, ProfileList};
use strata_core::schedule::{self, ReleaseState};
use strata_core::version::VersionConstraint;
use strata_core::{GoDuration, LayerNumber, allocation, readiness, reconcile, repoindex, values};

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
    let mut rng = Rng(0x5EED_0001);
    let mut accepted = 0;
    for i in 0..iterations() {
        let text = if i % 2 == 0 {
            mutate(&mut rng, SEED_LIST)
        } else {
            random_list(&mut rng)
        };
        if let Ok(list) = profiles::parse("p.yaml", &text) {
            accepted += 1;
            exercise_plan(&mut rng, &list);
        }
    }
    // The generator must reach the planner, or the test proves little.
    assert!(accepted > 10, "only {accepted} generated lists were valid");
}

#[test]
fn other_parsers_never_panic() {
    let mut rng = Rng(0x5EED_0002);
    for _ in 0..iterations() {
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
    };
    let observed = reconcile::ObservedRelease {
        status: reconcile::ReleaseStatus::parse(""),
        chart_name: String::new(),
        chart_version: String::new(),
        values_digest: None,
        revision: 0,
    };
    assert!(!reconcile::decide(&desired, Some(&observed)).runs_helm());
}
