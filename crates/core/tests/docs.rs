//! The documentation stays true: every example in docs/profile-list.md parses (or, when
//! marked `<!-- invalid -->`, fails with exactly the output shown after it), every profile
//! list under the workspace's `examples/` parses, and the JSON Schema names the same fields
//! as the parser.

use std::path::Path;

use std::collections::BTreeMap;

use serde_json::Value;
use strata_core::compose::{self, Fetched, Root};
use strata_core::profiles::{self, LayeringModel};
use strata_core::{allocation, chart};

const DOC: &str = include_str!("../../../docs/profile-list.md");
const SCHEMA: &str = include_str!("../../../docs/profile-list.schema.json");

struct Block {
    lang: String,
    text: String,
    invalid: bool,
    line: usize,
}

/// Fenced code blocks, with the fence's indentation removed from every line.
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate().peekable();
    let mut invalid_next = false;
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "<!-- invalid -->" {
            invalid_next = true;
            continue;
        }
        let Some(lang) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            text.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            text.push('\n');
        }
        out.push(Block {
            lang: lang.trim().to_owned(),
            text,
            invalid: invalid_next,
            line: i + 1,
        });
        invalid_next = false;
    }
    out
}

/// Parse a profile list with the files it may include (`files`, by repository path).
fn parse_with(
    file: &str,
    text: &str,
    files: &BTreeMap<String, Fetched>,
) -> Result<profiles::ProfileList, strata_core::Problems> {
    compose::compose_all(
        Root {
            file,
            text,
            first: &[],
        },
        files,
    )
}

/// The repository path of a documentation example whose first line is `# <path>`.
fn block_path(text: &str) -> Option<&str> {
    let first = text.lines().next()?.strip_prefix("# ")?.trim();
    (first.ends_with(".yaml") && !first.contains(' ')).then_some(first)
}

#[test]
fn doc_examples_parse() {
    let blocks = blocks(DOC);
    // Examples that name their path (`# base/profiles.yaml`) are the files others include.
    let files: BTreeMap<String, Fetched> = blocks
        .iter()
        .filter(|b| b.lang == "yaml")
        .filter_map(|b| {
            Some((
                block_path(&b.text)?.to_owned(),
                Fetched::Text(b.text.clone()),
            ))
        })
        .collect();
    let (mut lists, mut allocations, mut charts, mut invalid) = (0, 0, 0, 0);
    for (n, b) in blocks.iter().enumerate() {
        if b.lang != "yaml" {
            continue;
        }
        if b.text.contains("kind: ProfileList") {
            let file = block_path(&b.text).unwrap_or("profiles.yaml");
            // The ConfigMap overlay example applies on top of the cluster list shown before.
            let first = if file.starts_with("configmap/") {
                vec!["clusters/prod/profiles.yaml".to_owned()]
            } else {
                Vec::new()
            };
            let parsed = compose::compose_all(
                Root {
                    file,
                    text: &b.text,
                    first: &first,
                },
                &files,
            );
            if b.invalid {
                let expected = blocks
                    .get(n + 1)
                    .filter(|x| x.lang == "text")
                    .unwrap_or_else(|| {
                        panic!(
                            "line {}: no ```text block after the invalid example",
                            b.line
                        )
                    });
                let got = parsed.expect_err("the invalid example parsed").to_string();
                assert_eq!(got.trim(), expected.text.trim(), "line {}", b.line);
                invalid += 1;
            } else {
                let l = parsed.unwrap_or_else(|e| panic!("example at line {}:\n{e}", b.line));
                assert!(!l.profiles.is_empty());
                lists += 1;
            }
        } else if b.text.contains("kind: LayerAllocation") {
            allocation::parse("layers.yaml", &b.text)
                .unwrap_or_else(|e| panic!("example at line {}:\n{e}", b.line));
            allocations += 1;
        } else if b.text.contains("apiVersion: v2") {
            let c = chart::parse_chart_yaml("Chart.yaml", &b.text)
                .unwrap_or_else(|e| panic!("example at line {}:\n{e}", b.line));
            assert!(
                c.profile.is_some(),
                "line {}: the Chart.yaml example is a profile",
                b.line
            );
            charts += 1;
        } else {
            panic!("line {}: yaml block of unknown kind", b.line);
        }
    }
    assert!(lists >= 3, "{lists} profile lists");
    assert_eq!((allocations, charts, invalid), (1, 1, 1));
}

#[test]
fn workspace_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let Ok(dir) = std::fs::read_dir(&root) else {
        return; // no examples directory in this checkout
    };
    let mut stack: Vec<_> = dir.flatten().map(|e| e.path()).collect();
    // examples/ is a profile repository: lists include others by path from it.
    let mut files = BTreeMap::new();
    let mut todo = stack.clone();
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let (Ok(rel), Ok(text)) = (p.strip_prefix(&root), std::fs::read_to_string(&p)) {
            files.insert(rel.display().to_string(), Fetched::Text(text));
        }
    }
    let mut checked = 0;
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        if !matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let name = p.display().to_string();
        if text.contains("kind: ProfileList") {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            let l = parse_with(&rel, &text, &files).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!l.profiles.is_empty(), "{name}");
            checked += 1;
        } else if text.contains("kind: LayerAllocation") {
            allocation::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        } else if p.file_name().is_some_and(|f| f == "Chart.yaml") {
            chart::parse_chart_yaml(&name, &text).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "examples/ holds no profile list, allocation or chart"
    );
}

fn props(schema: &Value, pointer: &str) -> Vec<String> {
    let node = schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} missing"));
    assert_eq!(
        node["additionalProperties"],
        Value::Bool(false),
        "{pointer} must forbid unknown fields like the parser"
    );
    let mut keys: Vec<String> = node["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sorted(fields: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn schema_matches_the_parser() {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(props(&schema, ""), sorted(profiles::TOP_FIELDS));
    assert_eq!(
        props(&schema, "/$defs/layering"),
        sorted(profiles::LAYERING_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/repository"),
        sorted(profiles::REPOSITORY_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/defaults"),
        sorted(profiles::DEFAULTS_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/profile"),
        sorted(profiles::PROFILE_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/chart"),
        sorted(profiles::CHART_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/repositorySecretRef"),
        sorted(profiles::REPOSITORY_SECRET_REF_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/valuesFrom"),
        sorted(profiles::VALUES_FROM_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/secretRef"),
        sorted(profiles::SECRET_REF_FIELDS)
    );
    assert_eq!(
        schema["$defs"]["secretRef"]["properties"]["key"]["default"],
        profiles::DEFAULT_VALUES_KEY
    );
    assert_eq!(
        props(&schema, "/$defs/healthCheck"),
        sorted(profiles::HEALTH_CHECK_FIELDS)
    );
    assert_eq!(
        schema["$defs"]["healthCheck"]["required"],
        serde_json::json!(["apiVersion", "kind", "current"])
    );
    for field in ["current", "inProgress", "failed"] {
        assert_eq!(
            schema["$defs"]["healthCheck"]["properties"][field]["maxLength"],
            strata_core::health::MAX_EXPRESSION_CHARS
        );
    }
    assert_eq!(
        props(&schema, "/$defs/remediation"),
        sorted(profiles::REMEDIATION_FIELDS)
    );
    let strategies: Vec<Value> = profiles::RemediationStrategy::ALL
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    let rem = &schema["$defs"]["remediation"]["properties"];
    assert_eq!(rem["strategy"]["enum"], Value::Array(strategies));
    assert_eq!(
        rem["strategy"]["default"],
        serde_json::to_value(profiles::RemediationStrategy::default()).unwrap()
    );
    assert_eq!(rem["retries"]["default"], profiles::DEFAULT_RETRIES);
    assert_eq!(
        props(&schema, "/$defs/drift"),
        sorted(profiles::DRIFT_FIELDS)
    );
    assert_eq!(
        props(&schema, "/$defs/driftIgnore"),
        sorted(profiles::DRIFT_IGNORE_FIELDS)
    );
    let modes: Vec<Value> = strata_core::drift::DriftMode::ALL
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();
    let drift = &schema["$defs"]["drift"]["properties"];
    assert_eq!(drift["mode"]["enum"], Value::Array(modes));
    assert_eq!(
        drift["mode"]["default"],
        serde_json::to_value(strata_core::drift::DriftMode::default()).unwrap()
    );
    assert_eq!(rem["retries"]["minimum"], 1);
    assert_eq!(rem["retries"]["maximum"], profiles::MAX_RETRIES);
    assert_eq!(
        schema["properties"]["apiVersion"]["const"],
        profiles::API_VERSION
    );
    assert_eq!(schema["properties"]["kind"]["const"], profiles::KIND);
    let models: Vec<Value> = [
        LayeringModel::Annotation,
        LayeringModel::Category,
        LayeringModel::Allocated,
    ]
    .iter()
    .map(|m| serde_json::to_value(m).unwrap())
    .collect();
    assert_eq!(
        schema["$defs"]["layering"]["properties"]["model"]["enum"],
        Value::Array(models)
    );
    // `profiles` is required unless the list includes others; a profile's `chart` is
    // required once merged (an entry of an including list may only override fields), which
    // the schema cannot say per file.
    assert_eq!(
        schema["required"],
        serde_json::json!(["apiVersion", "kind"])
    );
    assert_eq!(schema["then"]["required"], serde_json::json!(["profiles"]));
    assert_eq!(
        schema["$defs"]["profile"]["required"],
        serde_json::json!(["name"])
    );
}

const HEALTH_DOC: &str = include_str!("../../../docs/health-checks.md");

/// docs/health-checks.md: its profile list parses (every expression compiles) and each check
/// judges sample objects as the page says.
#[test]
fn health_check_examples_compile_and_judge_sample_objects() {
    use strata_core::readiness::{Readiness, assess_with};
    let blocks: Vec<Block> = blocks(HEALTH_DOC)
        .into_iter()
        .filter(|b| b.lang == "yaml")
        .collect();
    assert_eq!(blocks.len(), 1, "one profile list on the page");
    let list = profiles::parse("health-checks.md", &blocks[0].text)
        .unwrap_or_else(|e| panic!("line {}:\n{e}", blocks[0].line));
    let checks = &list.defaults.health_checks;
    assert_eq!(checks.len(), 4);
    let object = |api_version: &str, kind: &str, conditions: Option<Value>| {
        let mut o = serde_json::json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": "x", "namespace": "ns", "generation": 2},
        });
        if let Some(c) = conditions {
            o["status"] = serde_json::json!({ "conditions": c });
        }
        o
    };
    let verdict = |o: &Value| match assess_with(o, checks) {
        Readiness::Ready => "ready",
        Readiness::InProgress { .. } => "in progress",
        Readiness::Failed { .. } => "failed",
    };
    let cm = "cert-manager.io/v1";
    let cases = [
        (object(cm, "Certificate", None), "in progress"),
        (
            object(cm, "Certificate", Some(serde_json::json!([]))),
            "in progress",
        ),
        (
            object(
                cm,
                "Certificate",
                Some(
                    serde_json::json!([{"type": "Ready", "status": "True", "observedGeneration": 2}]),
                ),
            ),
            "ready",
        ),
        (
            object(
                cm,
                "Certificate",
                Some(serde_json::json!([{"type": "Ready", "status": "True"}])),
            ),
            "ready",
        ),
        (
            object(
                cm,
                "Certificate",
                Some(
                    serde_json::json!([{"type": "Ready", "status": "True", "observedGeneration": 1}]),
                ),
            ),
            "in progress",
        ),
        (
            object(
                cm,
                "Certificate",
                Some(serde_json::json!([
                    {"type": "Ready", "status": "False", "reason": "DoesNotExist"},
                    {"type": "Issuing", "status": "False", "reason": "Failed"},
                ])),
            ),
            "failed",
        ),
        (object(cm, "Issuer", None), "in progress"),
        (
            object(
                cm,
                "Issuer",
                Some(
                    serde_json::json!([{"type": "Ready", "status": "False", "reason": "ErrInitIssuer"}]),
                ),
            ),
            "in progress",
        ),
        (
            object(
                cm,
                "ClusterIssuer",
                Some(serde_json::json!([{"type": "Ready", "status": "True"}])),
            ),
            "ready",
        ),
        (
            object(
                "example.com/v1",
                "Widget",
                Some(serde_json::json!([{"type": "Stalled", "status": "True"}])),
            ),
            "failed",
        ),
        (
            object(
                "example.com/v1",
                "Widget",
                Some(serde_json::json!([{"type": "Ready", "status": "True"}])),
            ),
            "ready",
        ),
    ];
    for (o, expected) in cases {
        assert_eq!(
            verdict(&o),
            expected,
            "{o:#}: {:?}",
            assess_with(&o, checks)
        );
    }
}
