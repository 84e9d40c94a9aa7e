//! Merging values files into one file changes nothing for helm: `helm template` with the
//! original `-f` files (values files in order, inline values last) renders exactly what it
//! renders with the single file `values::merge` produces, chart defaults and `null` deletions
//! included. Runs with real helm 4 and helm 3.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use strata_core::values;

fn helm(dir: &str) -> PathBuf {
    let tools = std::env::var_os("STRATA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools"));
    let h = tools.join(dir).join("helm");
    assert!(
        h.exists(),
        "{} is missing: run scripts/install-tools.sh (or set STRATA_TOOLS_DIR)",
        h.display()
    );
    h
}

const DEFAULTS: &str = "image:\n  repository: example/app\n  tag: \"1.0\"\n  pullPolicy: IfNotPresent\nreplicas: 1\nlist: [a, b]\nfeature:\n  enabled: false\n  settings: {x: 1, y: 2}\ndrop: {me: true}\n";

fn write_chart(dir: &Path) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: probe\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(dir.join("values.yaml"), DEFAULTS).unwrap();
    std::fs::write(
        dir.join("templates/values.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n  values: {{ toJson .Values | quote }}\n",
    )
    .unwrap();
}

fn render(helm: &Path, home: &Path, chart: &Path, files: &[PathBuf]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "probe"]).arg(chart);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cases() -> Vec<(Vec<Value>, Value)> {
    vec![
        (
            vec![json!({"image": {"tag": "2.0"}, "list": ["c"]})],
            json!({"replicas": 3}),
        ),
        (
            vec![
                json!({"feature": {"enabled": true, "settings": {"x": 10}}, "drop": null}),
                json!({"feature": {"settings": {"y": null, "z": 3}}}),
            ],
            json!({"image": {"pullPolicy": null}}),
        ),
        (
            vec![
                json!({"feature": "flat"}),
                json!({"feature": {"enabled": true}}),
                Value::Null,
            ],
            json!({}),
        ),
        (
            vec![json!({"extra": {"a": [1, {"b": null}]}, "list": null})],
            json!({"extra": {"c": true}, "replicas": null}),
        ),
    ]
}

fn check(helm_dir: &str) {
    let helm = helm(helm_dir);
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("probe");
    write_chart(&chart);
    for (n, (files, inline)) in cases().into_iter().enumerate() {
        let mut paths = Vec::new();
        let mut named = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let p = tmp.path().join(format!("case{n}-file{i}.yaml"));
            // JSON is YAML; `null` files are written as empty files.
            let text = if f.is_null() {
                String::new()
            } else {
                f.to_string()
            };
            std::fs::write(&p, &text).unwrap();
            named.push((
                p.display().to_string(),
                values::parse_file("f", &text).unwrap(),
            ));
            paths.push(p);
        }
        let inline_path = tmp.path().join(format!("case{n}-inline.yaml"));
        std::fs::write(&inline_path, inline.to_string()).unwrap();
        paths.push(inline_path);

        let merged = values::merge(&named, &inline).unwrap();
        let merged_path = tmp.path().join(format!("case{n}-merged.json"));
        std::fs::write(&merged_path, merged.to_string()).unwrap();

        let separate = render(&helm, tmp.path(), &chart, &paths);
        let single = render(&helm, tmp.path(), &chart, &[merged_path]);
        assert_eq!(separate, single, "{helm_dir}, case {n}: merged {merged}");
    }
}

/// Raw YAML values files: strata reads scalars as helm does (YAML 1.1 booleans such as
/// `yes`/`on`/`y`, numbers, nulls, anchors and merge keys), so the merged file renders the same.
const RAW_FILES: &[&str] = &[
    "a: yes\nb: on\nc: n\nd: 1.10\ne: 0x1F\nf: 012\ng: ~\nh: \"quoted\"\ni: 1e3\nj: .5\nk: -0\nl: 2024-01-01\n",
    "base: &base {x: 1, y2: [1, 2]}\nderived:\n  <<: *base\n  x: 2\nfeature:\n  settings: {x: off}\nlist: []\n",
    "m: 0o12\nn2: +1\no: 1_000\np: 0b101\nq: Yes\nr: TRUE\ns: Off\nt: Null\nu: NULL\nv: !!str 123\nw: 2001-12-14t21:59:43.10-05:00\nx2: '0012'\nz: 1:20\naa: 0xFF\nab: -.5e3\n",
];

fn check_raw(helm_dir: &str) {
    let helm = helm(helm_dir);
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("probe");
    write_chart(&chart);
    let mut paths = Vec::new();
    let mut named = Vec::new();
    for (i, text) in RAW_FILES.iter().enumerate() {
        let p = tmp.path().join(format!("raw{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        named.push((
            p.display().to_string(),
            values::parse_file("raw", text).unwrap(),
        ));
        paths.push(p);
    }
    let merged = values::merge(&named, &json!({})).unwrap();
    let merged_path = tmp.path().join("raw-merged.json");
    std::fs::write(&merged_path, merged.to_string()).unwrap();
    let separate = render(&helm, tmp.path(), &chart, &paths);
    let single = render(&helm, tmp.path(), &chart, &[merged_path]);
    assert_eq!(separate, single, "{helm_dir}: merged {merged}");
}

#[test]
fn raw_yaml_is_read_like_helm_helm4() {
    check_raw("helm4");
}

#[test]
fn raw_yaml_is_read_like_helm_helm3() {
    check_raw("helm3");
}

#[test]
fn merged_values_render_like_separate_files_helm4() {
    check("helm4");
}

#[test]
fn merged_values_render_like_separate_files_helm3() {
    check("helm3");
}
