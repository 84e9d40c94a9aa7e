//! The monitoring kit in `deploy/monitoring/` against the agent it monitors:
//!
//! - every metric the alert rules, the Grafana dashboard and the rule unit tests name exists
//!   in the `/metrics` of a real `strata run` that installed the layered stack on kubesim;
//! - `promtool check rules` and `promtool test rules` pass (each alert has a unit test with
//!   input series under those real names), and `prometheusrule.yaml` carries exactly the
//!   groups of `rules.yaml`.
//!
//! promtool comes from Debian's `prometheus` package (`.ci/run` installs it) or `$PROMTOOL`.
//! Without it the promtool test fails when `CI` is set, and is skipped with a loud message
//! otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::Scenario;
use testkit::strata_bin;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `strata_*` identifiers in a PromQL expression (label values and names are not
/// metric names: those inside `{...}` are skipped).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut word = String::new();
    let mut flush = |word: &mut String, depth: usize| {
        if depth == 0 && word.starts_with("strata_") {
            names.insert(word.clone());
        }
        word.clear();
    };
    for c in expr.chars() {
        if quoted {
            if c == '"' {
                quoted = false;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        flush(&mut word, depth);
        match c {
            '"' => quoted = true,
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    flush(&mut word, depth);
    names
}

/// Every expression of the alert rules.
fn rule_exprs() -> Vec<String> {
    let rules = yaml(&monitoring_dir().join("rules.yaml"));
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect()
}

/// Every expression of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let path = monitoring_dir().join("grafana-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_string()),
        );
    }
    exprs
}

/// The rule unit test files and the metric names of their input series.
fn rule_tests() -> (Vec<PathBuf>, BTreeSet<String>) {
    let dir = monitoring_dir().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/monitoring/tests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut names = BTreeSet::new();
    for f in &files {
        for t in yaml(f)["tests"].as_array().expect("tests") {
            for s in t["input_series"].as_array().expect("input_series") {
                names.extend(metric_names(s["series"].as_str().expect("series")));
            }
        }
    }
    (files, names)
}

/// The metric names that have a sample in a text exposition.
fn exposed(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le) (rate(strata_a_bucket{instance=~"strata_x{"}[5m]))) / strata_b"#
        ),
        BTreeSet::from(["strata_a_bucket".to_string(), "strata_b".to_string()])
    );
}

#[test]
fn the_prometheusrule_carries_the_rules_file() {
    let dir = monitoring_dir();
    let rule = yaml(&dir.join("prometheusrule.yaml"));
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"],
        yaml(&dir.join("rules.yaml")),
        "prometheusrule.yaml's spec differs from rules.yaml: edit both"
    );
    let alerts: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        alerts,
        [
            "StrataRevisionRejected",
            "StrataReleaseStalled",
            "StrataLayerNotReady",
            "StrataFetchStale"
        ]
    );
    // Each alert has a unit test.
    let (files, _) = rule_tests();
    let tested: BTreeSet<String> = files
        .iter()
        .flat_map(|f| {
            yaml(f)["tests"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t["alert_rule_test"].as_array().unwrap().clone())
                .map(|a| a["alertname"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for a in &alerts {
        assert!(tested.contains(a), "no promtool unit test for {a}");
    }
}

#[tokio::test]
async fn every_metric_of_the_rules_and_dashboard_is_exposed_by_the_agent() -> anyhow::Result<()> {
    let s = Scenario::builder(strata_bin!()).start().await?;
    let mut agent = s.agent(&[], &[])?;
    agent
        .wait_status("every layer Ready", Duration::from_secs(120), |st| {
            st["phase"] == "Ready"
        })
        .await?;
    let metrics = agent.metrics().await.expect("/metrics");
    agent.stop().await?;
    let have = exposed(&metrics);

    let (_, series) = rule_tests();
    let mut wanted: Vec<(&str, String)> = Vec::new();
    for e in rule_exprs() {
        wanted.extend(metric_names(&e).into_iter().map(|n| ("rules.yaml", n)));
    }
    for e in dashboard_exprs() {
        wanted.extend(
            metric_names(&e)
                .into_iter()
                .map(|n| ("grafana-dashboard.json", n)),
        );
    }
    wanted.extend(series.into_iter().map(|n| ("tests/*.yaml input series", n)));
    assert!(wanted.len() > 20, "{wanted:?}");
    let missing: Vec<_> = wanted.iter().filter(|(_, n)| !have.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "metrics named in deploy/monitoring/ that the agent does not expose: {missing:?}\n/metrics:\n{metrics}"
    );

    // What the alerts read, as a converged agent shows it.
    for line in [
        "strata_revision_rejected 0",
        "strata_releases_stalled 0",
        "strata_fetch_interval_seconds 1",
        "strata_fetch_failures_total 0",
        "strata_layer_not_ready_since_timestamp_seconds{layer=\"1\"} 0",
        "strata_layer_not_ready_since_timestamp_seconds{layer=\"3\"} 0",
        "strata_layer_timeout_seconds{layer=\"2\"} 20",
        "strata_layer_timeout_seconds{layer=\"1\"} 60",
    ] {
        assert!(metrics.contains(line), "{line:?} in:\n{metrics}");
    }
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_last_fetch_success_timestamp_seconds "))
        .and_then(|v| v.parse::<i64>().ok())
        .expect("last fetch");
    let now = jiff::Timestamp::now().as_second();
    assert!((now - last).abs() < 30, "last fetch {last}, now {now}");
    Ok(())
}

fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

fn run(promtool: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let Some(promtool) = promtool() else {
        let msg = "promtool not found (PATH or $PROMTOOL): install Debian's `prometheus` package \
                   (`apt-get install -y prometheus`, as .ci/run does)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("\n!!!!! SKIPPED promtool_checks_and_tests_the_rules: {msg} !!!!!\n");
        return;
    };
    let out = run(&promtool, &["check", "rules", "rules.yaml"]);
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
    let (files, _) = rule_tests();
    assert!(files.len() >= 4, "{files:?}");
    let mut args = vec!["test".to_string(), "rules".to_string()];
    args.extend(
        files
            .iter()
            .map(|f| format!("tests/{}", f.file_name().unwrap().to_string_lossy())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&promtool, &args);
    assert_eq!(out.matches("SUCCESS").count(), files.len(), "{out}");
}
