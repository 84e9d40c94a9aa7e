//! `chart::parse_chart_yaml` reads Chart.yaml as helm does: for each variant, helm 4 and helm 3
//! (`helm show chart`) accept exactly the files strata accepts, and the metadata helm prints
//! (name, version, appVersion, apiVersion, type, annotations) is what strata read.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_core::chart::{ChartMeta, parse_chart_yaml};

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

const VARIANTS: &[&str] = &[
    "apiVersion: v2\nname: cert-manager\nversion: v1.14.4\nappVersion: v1.14.4\nannotations:\n  strata.dev/profile: \"true\"\n  strata.dev/layer: layer-1\n  strata.dev/category: certificates\n",
    "apiVersion: v2\nname: linkerd\nversion: 1.0.0\nannotations:\n  weave.works/profile: linkerd\n  weave.works/layer: layer-2\n",
    "apiVersion: v2\nname: nums\nversion: 1.10\nappVersion: 2.0\nannotations:\n  a: 5\n  b: yes\n  strata.dev/profile: on\n  strata.dev/layer: 012\n",
    "name: no-api-version\nversion: 1.0.0\n",
    "apiVersion: v2\nname: My Chart\nversion: 01.2.3\ntype: library\n",
    "apiVersion: v1\nname: old\nversion: 1.2\nkeywords: [a]\nmaintainers: [{name: x}]\n",
    "apiVersion: v2\nname: a/b\nversion: 1.0.0\n",
    "apiVersion: v2\nname: t\nversion: 1.0.0\ntype: plugin\n",
    "apiVersion: v2\nname: t\nversion: banana\n",
    "apiVersion: v2\nname: t\nversion: 1.0.0\nannotations:\n  a: [1]\n",
    "apiVersion: v2\nversion: 1.0.0\n",
    "apiVersion: v2\nname: t\n",
];

fn show(helm: &Path, home: &Path, chart_yaml: &str) -> Result<String, String> {
    let dir = home.join("chart");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Chart.yaml"), chart_yaml).unwrap();
    let out = Command::new(helm)
        .args(["show", "chart"])
        .arg(&dir)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn fields(c: &ChartMeta) -> impl PartialEq + std::fmt::Debug {
    (
        c.name.clone(),
        c.version.clone(),
        c.app_version.clone(),
        c.api_version.clone(),
        c.chart_type,
        c.annotations.clone(),
        c.profile.clone(),
    )
}

fn check(helm_dir: &str) {
    let helm = helm(helm_dir);
    let home = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for text in VARIANTS {
        let ours = parse_chart_yaml("Chart.yaml", text);
        match (show(&helm, home.path(), text), &ours) {
            (Ok(shown), Ok(meta)) => {
                let theirs = parse_chart_yaml("helm show chart", &shown)
                    .unwrap_or_else(|e| panic!("helm's output does not parse: {e}\n{shown}"));
                if fields(&theirs) != fields(meta) {
                    wrong.push(format!(
                        "{text:?}: helm read {:?}, strata {:?}",
                        fields(&theirs),
                        fields(meta)
                    ));
                }
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => wrong.push(format!("{text:?}: helm accepts, strata: {e}")),
            (Err(e), Ok(_)) => wrong.push(format!("{text:?}: strata accepts, helm: {e}")),
        }
    }
    assert!(wrong.is_empty(), "{helm_dir}:\n{}", wrong.join("\n"));
}

#[test]
fn chart_yaml_is_read_like_helm4() {
    check("helm4");
}

#[test]
fn chart_yaml_is_read_like_helm3() {
    check("helm3");
}
