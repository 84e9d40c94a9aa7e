//! `strata plan` end to end: a real Git repository, a real Helm chart repository over HTTP
//! (charts packaged and indexed by real helm), no cluster. Layer resolution with each model,
//! numeric order, unlayered charts last, the profile override, Weave GitOps keys; and invalid
//! revisions reporting every problem with a non-zero exit code.

use std::time::Duration;

use testkit::chart::{
    CONFIGMAP_TEMPLATE, ChartSpec, FAIL_HOOK_TEMPLATE, profile_annotations, write_chart,
};
use testkit::{ChartRepo, TestRepo, strata_bin, tools};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Charts used by the layer tests.
async fn chart_repo(dir: &std::path::Path) -> anyhow::Result<ChartRepo> {
    let a10 = profile_annotations(Some("layer-10"), Some("certificates"));
    let a2 = profile_annotations(Some("2"), Some("service-mesh"));
    let none = profile_annotations(None, Some("dashboards"));
    let weave = [
        ("weave.works/profile", "true"),
        ("weave.works/layer", "layer-5"),
        ("weave.works/category", "progressive-delivery"),
    ];
    let specs = [
        ChartSpec {
            name: "ten",
            version: "1.0.0",
            annotations: &a10,
            files: &[],
        },
        ChartSpec {
            name: "two",
            version: "1.2.0",
            annotations: &a2,
            files: &[],
        },
        ChartSpec {
            name: "two",
            version: "1.3.0",
            annotations: &a2,
            files: &[],
        },
        ChartSpec {
            name: "plain",
            version: "0.1.0",
            annotations: &none,
            files: &[],
        },
        ChartSpec {
            name: "weave",
            version: "2.0.0",
            annotations: &weave,
            files: &[],
        },
    ];
    let mut dirs = Vec::new();
    for s in &specs {
        dirs.push(write_chart(dir, s)?);
    }
    let refs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
    ChartRepo::with_charts(&tools().helm4, &refs).await
}

fn profiles(layering: &str, repo_url: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
layering:
{layering}
repositories:
  - name: platform
    url: {repo_url}
profiles:
  - name: ten
    chart: {{repository: platform, name: ten}}
    version: "1.0.0"
  - name: two
    chart: {{repository: platform, name: two}}
    version: ">=1.2, <1.3"
    namespace: mesh
  - name: plain
    chart: {{repository: platform, name: plain}}
    version: "0.1.x"
  - name: weave
    chart: {{repository: platform, name: weave}}
    version: "^2"
{extra}"#
    )
}

async fn plan_json(repo: &TestRepo) -> anyhow::Result<(Option<i32>, serde_json::Value, String)> {
    let work = tempfile::tempdir()?;
    let out = testkit::agent::run_strata(
        strata_bin!(),
        &[
            "plan",
            "--git-url",
            repo.path().to_str().unwrap(),
            "--git-ref",
            "main",
            "--work-dir",
            work.path().to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
        TIMEOUT,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| anyhow::anyhow!("plan output is not JSON ({e}): {out:?}"))?;
    Ok((out.code, v, out.stderr))
}

/// (layer name, [release names]) in plan order.
fn layers(plan: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    plan["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["releases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["release"]["name"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn source_of<'a>(plan: &'a serde_json::Value, release: &str) -> &'a serde_json::Value {
    plan["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["releases"].as_array().unwrap())
        .find(|r| r["release"]["name"] == release)
        .map(|r| &r["layerSource"])
        .unwrap()
}

#[tokio::test]
async fn annotation_model_orders_numerically_with_weave_keys_and_unlayered_last()
-> anyhow::Result<()> {
    let charts_dir = tempfile::tempdir()?;
    let charts = chart_repo(charts_dir.path()).await?;
    let repo = TestRepo::new()?;
    repo.write(
        "profiles.yaml",
        profiles("  model: annotation", &charts.url(), ""),
    )?;
    let commit = repo.commit("annotation model")?;

    let (code, plan, stderr) = plan_json(&repo).await?;
    assert_eq!(code, Some(0), "plan failed: {plan}\n{stderr}");
    assert_eq!(plan["commit"], commit.as_str());
    assert_eq!(plan["valid"], true);
    assert_eq!(
        layers(&plan),
        vec![
            ("layer-2".to_string(), vec!["two".to_string()]),
            ("layer-5".to_string(), vec!["weave".to_string()]),
            ("layer-10".to_string(), vec!["ten".to_string()]),
            ("unlayered".to_string(), vec!["plain".to_string()]),
        ],
        "layer-2 before layer-10 (numeric), unlayered last: {plan}"
    );
    assert_eq!(source_of(&plan, "weave")["kind"], "annotation");
    assert_eq!(source_of(&plan, "weave")["key"], "weave.works/layer");
    assert_eq!(source_of(&plan, "ten")["key"], "strata.dev/layer");
    assert_eq!(source_of(&plan, "plain")["kind"], "unlayered");
    // The range resolved to the highest matching version below 1.3.
    let two = plan["plan"]["layers"][0]["releases"][0].clone();
    assert_eq!(two["chartVersion"], "1.2.0");
    assert_eq!(two["release"]["namespace"], "mesh");

    // Text output says the same, with where each layer came from.
    let work = tempfile::tempdir()?;
    let text = testkit::agent::run_strata(
        strata_bin!(),
        &[
            "plan",
            "--git-url",
            repo.path().to_str().unwrap(),
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        &[],
        TIMEOUT,
    )
    .await?;
    assert_eq!(text.code, Some(0), "{text:?}");
    let l2 = text.stdout.find("layer-2:").expect("layer-2 listed");
    let l10 = text.stdout.find("layer-10:").expect("layer-10 listed");
    let un = text.stdout.find("unlayered").expect("unlayered listed");
    assert!(l2 < l10 && l10 < un, "{}", text.stdout);
    assert!(
        text.stdout.contains("annotation weave.works/layer"),
        "{}",
        text.stdout
    );
    Ok(())
}

#[tokio::test]
async fn override_wins_over_every_model() -> anyhow::Result<()> {
    let charts_dir = tempfile::tempdir()?;
    let charts = chart_repo(charts_dir.path()).await?;
    let repo = TestRepo::new()?;
    // `ten` annotated layer-10, overridden to 1 in the list: it now runs first.
    let list = profiles("  model: annotation", &charts.url(), "").replace(
        "    version: \"1.0.0\"\n",
        "    version: \"1.0.0\"\n    layer: layer-1\n",
    );
    repo.write("profiles.yaml", list)?;
    repo.commit("override")?;
    let (code, plan, stderr) = plan_json(&repo).await?;
    assert_eq!(code, Some(0), "{plan}\n{stderr}");
    assert_eq!(
        layers(&plan)[0],
        ("layer-1".to_string(), vec!["ten".to_string()])
    );
    assert_eq!(source_of(&plan, "ten")["kind"], "override");
    Ok(())
}

#[tokio::test]
async fn category_model_maps_categories_with_gaps() -> anyhow::Result<()> {
    let charts_dir = tempfile::tempdir()?;
    let charts = chart_repo(charts_dir.path()).await?;
    let repo = TestRepo::new()?;
    let layering = "  model: category\n  categories:\n    certificates: 10\n    service-mesh: 20\n    progressive-delivery: 30\n    dashboards: 40";
    repo.write("profiles.yaml", profiles(layering, &charts.url(), ""))?;
    repo.commit("category model")?;
    let (code, plan, stderr) = plan_json(&repo).await?;
    assert_eq!(code, Some(0), "{plan}\n{stderr}");
    let names: Vec<String> = layers(&plan).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["layer-10", "layer-20", "layer-30", "layer-40"]);
    assert_eq!(source_of(&plan, "two")["kind"], "category");
    assert_eq!(source_of(&plan, "two")["category"], "service-mesh");
    assert_eq!(
        source_of(&plan, "weave")["category"],
        "progressive-delivery"
    );
    Ok(())
}

#[tokio::test]
async fn allocated_model_reads_the_allocation_file_and_rejects_duplicates() -> anyhow::Result<()> {
    let charts_dir = tempfile::tempdir()?;
    let charts = chart_repo(charts_dir.path()).await?;
    let repo = TestRepo::new()?;
    let layering = "  model: allocated\n  allocationFile: layers.yaml";
    repo.write("profiles.yaml", profiles(layering, &charts.url(), ""))?;
    repo.write(
        "layers.yaml",
        "apiVersion: strata.dev/v1alpha1\nkind: LayerAllocation\ncomponents:\n  ten: 3\n  two: 1\n  weave: 2\n  plain: 4\n",
    )?;
    repo.commit("allocated")?;
    let (code, plan, stderr) = plan_json(&repo).await?;
    assert_eq!(code, Some(0), "{plan}\n{stderr}");
    assert_eq!(
        layers(&plan)
            .into_iter()
            .map(|(_, r)| r[0].clone())
            .collect::<Vec<_>>(),
        ["two", "weave", "ten", "plain"]
    );
    assert_eq!(source_of(&plan, "ten")["kind"], "allocation");
    assert_eq!(source_of(&plan, "ten")["file"], "layers.yaml");

    // Two components on one number: invalid, both named.
    repo.write(
        "layers.yaml",
        "apiVersion: strata.dev/v1alpha1\nkind: LayerAllocation\ncomponents:\n  ten: 3\n  two: 3\n  weave: 2\n  plain: 4\n",
    )?;
    repo.commit("duplicate allocation")?;
    let (code, plan, _) = plan_json(&repo).await?;
    assert_eq!(code, Some(1), "{plan}");
    assert_eq!(plan["valid"], false);
    let problems = plan["problems"].to_string();
    assert!(problems.contains("layers.yaml"), "{problems}");
    assert!(
        problems.contains("ten") && problems.contains("two"),
        "{problems}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_revision_reports_every_problem() -> anyhow::Result<()> {
    let charts_dir = tempfile::tempdir()?;
    let charts = chart_repo(charts_dir.path()).await?;
    let repo = TestRepo::new()?;
    let extra = r#"  - name: ghost
    chart: {repository: platform, name: ghost}
    version: "1.0.0"
  - name: old
    chart: {repository: platform, name: ten}
    version: "9.9.9"
  - name: vals
    chart: {repository: platform, name: ten}
    version: "1.0.0"
    releaseName: vals
    valuesFiles: [values/missing.yaml]
  - name: dup
    chart: {repository: platform, name: ten}
    version: "1.0.0"
    valuesFiles: [values/dup.yaml]
  - name: big
    chart: {repository: platform, name: ten}
    version: "1.0.0"
    valuesFiles: [values/big.yaml]
"#;
    repo.write("values/dup.yaml", "replicas: 1\nreplicas: 2\n")?;
    repo.write(
        "values/big.yaml",
        format!("blob: {}\n", "x".repeat(1_200_000)),
    )?;
    repo.write(
        "profiles.yaml",
        profiles("  model: annotation", &charts.url(), extra),
    )?;
    repo.commit("three problems")?;
    let (code, plan, stderr) = plan_json(&repo).await?;
    assert_eq!(code, Some(1), "{plan}\n{stderr}");
    let problems = plan["problems"].as_array().unwrap();
    let text = plan["problems"].to_string();
    assert!(problems.len() >= 3, "{text}");
    assert!(
        text.contains("profiles[ghost]"),
        "unknown chart named: {text}"
    );
    assert!(
        text.contains("profiles[old]"),
        "unknown version named: {text}"
    );
    assert!(
        text.contains("values/missing.yaml"),
        "missing values file named: {text}"
    );
    assert!(
        text.contains("values/dup.yaml") && text.contains("duplicate"),
        "duplicate key in a values file: {text}"
    );
    assert!(
        text.contains("profiles[big].values") && text.contains("1 MiB"),
        "values over helm's Secret limit: {text}"
    );

    // Syntax-level problems: an unknown field and a duplicate release name.
    let list = profiles("  model: annotation", &charts.url(), "").replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    colour: blue\n",
    ) + "  - name: ten-again\n    chart: {repository: platform, name: ten}\n    version: \"1.0.0\"\n    releaseName: ten\n";
    repo.write("profiles.yaml", list)?;
    repo.commit("unknown field and duplicate")?;
    let (code, plan, _) = plan_json(&repo).await?;
    assert_eq!(code, Some(1), "{plan}");
    let text = plan["problems"].to_string();
    assert!(text.contains("colour"), "unknown field reported: {text}");
    assert!(text.contains("ten"), "duplicate release reported: {text}");
    assert!(plan["problems"].as_array().unwrap().len() >= 2, "{text}");
    Ok(())
}

/// A chart with a post-install hook keeps helm's wait; one without (or with only a pre-install
/// hook) is waited for by strata. Text and JSON say so per release.
#[tokio::test]
async fn plan_says_who_waits_for_each_release() -> anyhow::Result<()> {
    const PRE_HOOK: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-pre\n  annotations:\n    \"helm.sh/hook\": pre-install,pre-upgrade\nspec: {}\n";
    let charts_dir = tempfile::tempdir()?;
    let a1 = profile_annotations(Some("1"), None);
    let specs = [
        ChartSpec {
            name: "hooked",
            version: "1.0.0",
            annotations: &a1,
            files: &[
                ("templates/configmap.yaml", CONFIGMAP_TEMPLATE),
                ("templates/check.yaml", FAIL_HOOK_TEMPLATE),
            ],
        },
        ChartSpec {
            name: "prehook",
            version: "1.0.0",
            annotations: &a1,
            files: &[("templates/pre.yaml", PRE_HOOK)],
        },
        ChartSpec {
            name: "plain",
            version: "1.0.0",
            annotations: &a1,
            files: &[],
        },
    ];
    let mut dirs = Vec::new();
    for s in &specs {
        dirs.push(write_chart(charts_dir.path(), s)?);
    }
    let refs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
    let charts = ChartRepo::with_charts(&tools().helm4, &refs).await?;
    let repo = TestRepo::new()?;
    let mut list = format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: platform\n    url: {}\nprofiles:\n",
        charts.url()
    );
    for name in ["hooked", "prehook", "plain"] {
        list.push_str(&format!(
            "  - name: {name}\n    chart: {{repository: platform, name: {name}}}\n    version: \"1.0.0\"\n"
        ));
    }
    // The chart without hooks, given hook annotations in its values (templates may copy them).
    list.push_str("  - name: plain-hooked\n    chart: {repository: platform, name: plain}\n    version: \"1.0.0\"\n    values: {job: {annotations: {helm.sh/hook: post-upgrade}}}\n");
    repo.write("profiles.yaml", list)?;
    repo.commit("charts with and without post hooks")?;

    let (code, plan, stderr) = plan_json(&repo).await?;
    assert_eq!(code, Some(0), "{plan}\n{stderr}");
    assert_eq!(plan["waits"]["default/hooked"], "helm", "{plan}");
    assert_eq!(plan["waits"]["default/prehook"], "strata", "{plan}");
    assert_eq!(plan["waits"]["default/plain"], "strata", "{plan}");
    assert_eq!(plan["waits"]["default/plain-hooked"], "helm", "{plan}");

    let work = tempfile::tempdir()?;
    let text = testkit::agent::run_strata(
        strata_bin!(),
        &[
            "plan",
            "--git-url",
            repo.path().to_str().unwrap(),
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        &[],
        TIMEOUT,
    )
    .await?;
    assert_eq!(text.code, Some(0), "{text:?}");
    let out = &text.stdout;
    assert!(
        out.contains(
            "  hooked  hooked@1.0.0  namespace default  (annotation strata.dev/layer)\n    wait: helm (post-install/post-upgrade hooks)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  plain  plain@1.0.0  namespace default  (annotation strata.dev/layer)\n    wait: strata (watches)\n"),
        "{out}"
    );
    assert!(
        out.contains("  prehook  prehook@1.0.0  namespace default  (annotation strata.dev/layer)\n    wait: strata (watches)\n"),
        "{out}"
    );
    Ok(())
}
