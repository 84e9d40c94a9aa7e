//! Dependencies of charts kept in Git (issue 12, item 3), end to end with real helm 4 and 3,
//! a real Git server, a real HTTP chart repository and kubesim: a chart with a
//! `file://../partials` dependency and a chart-repository dependency (no vendored `charts/`)
//! is built by the agent and installs with both subcharts' objects; a newer dependency
//! version in the repository upgrades the release ("chart content changed"). A `file://`
//! dependency outside the repository, a stale `Chart.lock` and a version the repository does
//! not have are problems `strata plan` reports together (exit 1), and `strata run --once`
//! installs nothing. Dependencies from an OCI registry (by URL and as `@name`) are pulled
//! through the profile list's repository.

use std::time::Duration;

use testkit::chart::profile_annotations;
use testkit::gitcharts::GitCharts;
use testkit::oci::OciRegistry;
use testkit::{ChartRepo, HelmBin, strata_bin};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A chart with one ConfigMap `<release>-<suffix>`.
fn sub_chart(dir: &std::path::Path, name: &str, version: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )?;
    std::fs::write(
        dir.join("templates/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{name}\ndata:\n  version: \"{version}\"\n"
        ),
    )?;
    Ok(())
}

/// `Chart.yaml` of profile chart `name` (layer 1) with `deps` (YAML list items).
fn parent_chart_yaml(name: &str, deps: &str) -> String {
    let mut chart = format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\nannotations:\n");
    for (k, v) in profile_annotations(Some("1"), None) {
        chart.push_str(&format!("  {k}: {v:?}\n"));
    }
    chart.push_str("dependencies:\n");
    chart.push_str(deps);
    chart
}

fn list(names: &[&str]) -> String {
    let mut list = String::from(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  timeout: 30s\nprofiles:\n",
    );
    for n in names {
        list.push_str(&format!(
            "  - name: {n}\n    chart: {{path: charts/{n}}}\n    namespace: {n}\n"
        ));
    }
    list
}

fn configmap(s: &GitCharts, ns: &str, name: &str) -> Option<serde_json::Value> {
    testkit::cluster::get(&s.cluster, "configmaps", ns, name)
}

async fn dependencies_are_built(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    let repo = ChartRepo::start(&helm.path()).await?;
    let remote = tempfile::tempdir()?;
    sub_chart(&remote.path().join("remote"), "remote", "0.3.0")?;
    repo.add_chart(&remote.path().join("remote"))?;

    sub_chart(&s.repo.path().join("charts/partials"), "partials", "0.1.0")?;
    s.repo.write(
        "charts/app/Chart.yaml",
        parent_chart_yaml(
            "app",
            &format!(
                "  - name: partials\n    version: 0.1.x\n    repository: file://../partials\n  - name: remote\n    version: \">=0.1.0\"\n    repository: {}\n",
                repo.url()
            ),
        ),
    )?;
    s.repo.write(
        "charts/app/templates/cm.yaml",
        testkit::gitcharts::configmap_template("one"),
    )?;
    s.repo.write("profiles.yaml", list(&["app"]))?;
    s.repo
        .commit("app with a file:// and a repository dependency")?;

    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(s.data("app").is_some(), "the parent's ConfigMap");
    assert!(
        configmap(&s, "app", "app-partials").is_some(),
        "the file:// subchart's ConfigMap"
    );
    let r = configmap(&s, "app", "app-remote").expect("the repository subchart's ConfigMap");
    assert_eq!(r["data"]["version"], "0.3.0");
    assert!(
        !s.repo.path().join("charts/app/charts").exists(),
        "the checkout is not written to"
    );

    // A newer dependency in the repository: same commit, new built content, an upgrade.
    sub_chart(&remote.path().join("remote"), "remote", "0.4.0")?;
    repo.add_chart(&remote.path().join("remote"))?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let rel = s.release("app");
    assert_eq!(rel["action"], "upgrade", "{rel:#}");
    assert_eq!(rel["reason"], "chart content changed", "{rel:#}");
    let r = configmap(&s, "app", "app-remote").unwrap();
    assert_eq!(r["data"]["version"], "0.4.0");

    // A Chart.lock (fresh: its digest is helm's for these dependencies) pins remote 0.3.0.
    let chart_yaml = std::fs::read_to_string(s.repo.path().join("charts/app/Chart.yaml"))?;
    let req: serde_json::Value = serde_saphyr::from_str(&chart_yaml)?;
    let req = req["dependencies"].as_array().unwrap().clone();
    let locked = vec![
        serde_json::json!({"name": "partials", "version": "0.1.0", "repository": "file://../partials"}),
        serde_json::json!({"name": "remote", "version": "0.3.0", "repository": repo.url()}),
    ];
    let digest = strata_core::chartlock::lock_digest(&req, &locked);
    s.repo.write(
        "charts/app/Chart.lock",
        format!(
            "dependencies:\n- name: partials\n  repository: file://../partials\n  version: 0.1.0\n- name: remote\n  repository: {}\n  version: 0.3.0\ndigest: {digest}\n",
            repo.url()
        ),
    )?;
    s.repo.commit("app: Chart.lock pins remote 0.3.0")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let r = configmap(&s, "app", "app-remote").unwrap();
    assert_eq!(r["data"]["version"], "0.3.0", "the locked version");
    Ok(())
}

#[tokio::test]
async fn dependencies_are_built_helm4() -> anyhow::Result<()> {
    dependencies_are_built(HelmBin::V4).await
}

#[tokio::test]
async fn dependencies_are_built_helm3() -> anyhow::Result<()> {
    dependencies_are_built(HelmBin::V3).await
}

/// Dependencies from an OCI registry: one by its URL (the profile list's repository with that
/// URL gives `plainHttp`), one as `@<repository name>`.
async fn oci_dependencies(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    let registry = OciRegistry::start().await?;
    let charts = tempfile::tempdir()?;
    for name in ["ocione", "ocitwo"] {
        sub_chart(&charts.path().join(name), name, "1.2.0")?;
        registry.push(&helm.path(), &charts.path().join(name), "charts")?;
    }
    let url = registry.url("charts");
    s.repo.write(
        "charts/app/Chart.yaml",
        parent_chart_yaml(
            "app",
            &format!(
                "  - name: ocione\n    version: ~1.2\n    repository: {url}\n  - name: ocitwo\n    version: 1.2.0\n    repository: \"@registry\"\n"
            ),
        ),
    )?;
    s.repo.write(
        "charts/app/templates/cm.yaml",
        testkit::gitcharts::configmap_template("one"),
    )?;
    s.repo.write(
        "profiles.yaml",
        list(&["app"]).replace(
            "defaults:",
            &format!(
                "repositories:\n  - name: registry\n    url: {url}\n    plainHttp: true\ndefaults:"
            ),
        ),
    )?;
    s.repo.commit("app with OCI dependencies")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    for name in ["ocione", "ocitwo"] {
        let cm = configmap(&s, "app", &format!("app-{name}"))
            .unwrap_or_else(|| panic!("the {name} subchart's ConfigMap"));
        assert_eq!(cm["data"]["version"], "1.2.0");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_dependencies_helm4() -> anyhow::Result<()> {
    oci_dependencies(HelmBin::V4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_dependencies_helm3() -> anyhow::Result<()> {
    oci_dependencies(HelmBin::V3).await
}

async fn bad_dependencies_are_problems(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    sub_chart(&s.repo.path().join("charts/partials"), "partials", "0.1.0")?;
    // `escape` climbs out of the repository.
    s.repo.write(
        "charts/escape/Chart.yaml",
        parent_chart_yaml(
            "escape",
            "  - name: partials\n    version: 0.1.0\n    repository: file://../../../partials\n",
        ),
    )?;
    s.repo.write(
        "charts/escape/templates/cm.yaml",
        testkit::gitcharts::configmap_template("x"),
    )?;
    // `locked` has a Chart.lock written for another version constraint.
    s.repo.write(
        "charts/locked/Chart.yaml",
        parent_chart_yaml(
            "locked",
            "  - name: partials\n    version: \">=0.1.0\"\n    repository: file://../partials\n",
        ),
    )?;
    s.repo.write(
        "charts/locked/Chart.lock",
        "dependencies:\n- name: partials\n  repository: file://../partials\n  version: 0.1.0\ndigest: sha256:0000000000000000000000000000000000000000000000000000000000000000\ngenerated: \"2026-01-01T00:00:00Z\"\n",
    )?;
    s.repo.write(
        "charts/locked/templates/cm.yaml",
        testkit::gitcharts::configmap_template("y"),
    )?;
    // `nover` wants a version the chart repository does not have.
    let repo = ChartRepo::start(&helm.path()).await?;
    let remote = tempfile::tempdir()?;
    sub_chart(&remote.path().join("remote"), "remote", "0.3.0")?;
    repo.add_chart(&remote.path().join("remote"))?;
    s.repo.write(
        "charts/nover/Chart.yaml",
        parent_chart_yaml(
            "nover",
            &format!(
                "  - name: remote\n    version: 9.x\n    repository: {}\n",
                repo.url()
            ),
        ),
    )?;
    s.repo.write(
        "charts/nover/templates/cm.yaml",
        testkit::gitcharts::configmap_template("z"),
    )?;
    s.repo
        .write("profiles.yaml", list(&["escape", "locked", "nover"]))?;
    s.repo.commit("three bad dependencies")?;

    let work = tempfile::tempdir()?;
    let out = testkit::agent::run_strata(
        strata_bin!(),
        &[
            "plan",
            "--git-url",
            s.repo.path().to_str().unwrap(),
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
    assert_eq!(out.code, Some(1), "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let problems = plan["problems"].to_string();
    assert!(
        problems.contains("profiles[escape].chart.path")
            && problems.contains("dependency partials")
            && problems.contains("outside the repository"),
        "{problems}"
    );
    assert!(
        problems.contains("profiles[locked].chart.path")
            && problems.contains("Chart.lock is out of date; run helm dependency update"),
        "{problems}"
    );

    assert!(
        problems.contains("profiles[nover].chart.path")
            && problems.contains("chart nover: dependency remote")
            && problems.contains("no version of chart `remote` matches `9.x`"),
        "{problems}"
    );

    let (code, logs) = s.run_once_with(&["--once-timeout", "20s"]).await?;
    assert_eq!(code, Some(1), "{logs}");
    for p in ["escape", "locked", "nover"] {
        assert!(!s.installed(p, p), "{p} installed");
    }
    Ok(())
}

#[tokio::test]
async fn bad_dependencies_are_problems_helm4() -> anyhow::Result<()> {
    bad_dependencies_are_problems(HelmBin::V4).await
}

#[tokio::test]
async fn bad_dependencies_are_problems_helm3() -> anyhow::Result<()> {
    bad_dependencies_are_problems(HelmBin::V3).await
}
