//! Profile lists that include others (issue 12, part 2), end to end with real helm 4, a real
//! Git server and kubesim:
//!
//! - a cluster's list (`clusters/{cluster}/profiles.yaml`, the cluster name given) includes a
//!   shared base, overrides one profile (another chart version, a value) and disables
//!   another: exactly the expected releases are installed, at the expected versions;
//! - an include cycle is reported as a problem naming the chain, and nothing is installed.

use testkit::gitcharts::GitCharts;
use testkit::{HelmBin, strata_bin};

const HEAD: &str = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\n";

/// A chart `charts/<dir>` named `name` at `version`, layer 1, one ConfigMap.
fn write_chart(s: &GitCharts, dir: &str, name: &str, version: &str) -> anyhow::Result<()> {
    s.repo.write(
        &format!("charts/{dir}/Chart.yaml"),
        format!(
            "apiVersion: v2\nname: {name}\nversion: {version}\nannotations:\n  strata.dev/profile: \"true\"\n  strata.dev/layer: \"1\"\n"
        ),
    )?;
    s.repo.write(
        &format!("charts/{dir}/templates/cm.yaml"),
        testkit::gitcharts::configmap_template(version),
    )?;
    Ok(())
}

fn write_base(s: &GitCharts) -> anyhow::Result<()> {
    for n in ["web", "cache", "metrics"] {
        write_chart(s, n, n, "1.0.0")?;
    }
    write_chart(s, "web-2", "web", "2.0.0")?;
    s.repo.write(
        "base/profiles.yaml",
        format!(
            "{HEAD}defaults:\n  timeout: 30s\nprofiles:\n  - name: web\n    chart: {{path: charts/web}}\n    version: 1.0.0\n    namespace: web\n    values: {{greeting: base, replicas: 1}}\n  - name: cache\n    chart: {{path: charts/cache}}\n    namespace: cache\n  - name: metrics\n    chart: {{path: charts/metrics}}\n    namespace: metrics\n"
        ),
    )?;
    Ok(())
}

/// `name@version` of each release the status lists, sorted.
fn names(status: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = ["web", "cache", "metrics"]
        .iter()
        .filter_map(|n| testkit::agent::release(status, n))
        .map(|r| {
            format!(
                "{}@{}",
                r["name"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or("")
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn cluster_list_overrides_and_disables_profiles_of_the_base_helm4() -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), HelmBin::V4).await?;
    write_base(&s)?;
    s.repo.write(
        "clusters/prod/profiles.yaml",
        format!(
            "{HEAD}include: [base/profiles.yaml]\nprofiles:\n  - name: web\n    chart: {{path: charts/web-2}}\n    version: 2.0.0\n    values: {{greeting: prod}}\n  - name: metrics\n    enabled: false\n"
        ),
    )?;
    // Another cluster's list including the same base, unchanged: not this cluster's.
    s.repo.write(
        "clusters/dev/profiles.yaml",
        format!("{HEAD}include: [base/profiles.yaml]\n"),
    )?;
    s.repo.commit("base and two cluster lists")?;
    let (code, logs) = s
        .run_once_with(&[
            "--profiles-path",
            "clusters/{cluster}/profiles.yaml",
            "--cluster-name",
            "prod",
        ])
        .await?;
    assert_eq!(code, Some(0), "{logs}");
    let status = s.status();
    assert_eq!(
        names(&status),
        ["cache@1.0.0", "web@2.0.0"],
        "exactly the base's cache and the overridden web: {status:#}"
    );
    assert!(s.installed("web", "web") && s.installed("cache", "cache"));
    assert!(!s.installed("metrics", "metrics"), "metrics is disabled");
    let web = s.data("web").expect("web's ConfigMap");
    assert_eq!(web["flavour"], "2.0.0", "the 2.0.0 chart: {web:#}");
    assert_eq!(web["greeting"], "prod", "the overridden value: {web:#}");
    assert_eq!(
        status["revision"]["profilesPath"], "clusters/prod/profiles.yaml",
        "{status:#}"
    );
    Ok(())
}

#[tokio::test]
async fn include_cycle_is_a_problem_and_nothing_is_installed_helm4() -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), HelmBin::V4).await?;
    write_base(&s)?;
    s.repo.write(
        "profiles.yaml",
        format!("{HEAD}include: [base/profiles.yaml, shared/extra.yaml]\n"),
    )?;
    s.repo.write(
        "shared/extra.yaml",
        format!("{HEAD}include:\n  - profiles.yaml\nprofiles: []\n"),
    )?;
    let commit = s.repo.commit("a cycle")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(1), "a rejected revision: {logs}");
    let status = s.status();
    assert_eq!(
        status["rejectedRevision"]["commit"],
        commit.as_str(),
        "{status:#}"
    );
    let problems = status["rejectedRevision"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(problems.len(), 1, "{status:#}");
    let p = &problems[0];
    assert_eq!(p["file"], "shared/extra.yaml", "{p:#}");
    assert_eq!(p["field"], "include[0]", "{p:#}");
    assert!(
        p["message"]
            .as_str()
            .unwrap_or("")
            .contains("include cycle: profiles.yaml -> shared/extra.yaml -> profiles.yaml"),
        "{p:#}"
    );
    let records = testkit::release::records(&s.cluster, None);
    assert!(records.is_empty(), "nothing installed: {records:?}");
    Ok(())
}
