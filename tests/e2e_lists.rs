//! Profile lists that include others (issue 12, part 2), end to end with real helm 4 (and
//! helm 3 for the first case), a real Git server and kubesim:
//!
//! - a cluster's list (`clusters/{cluster}/profiles.yaml`, the cluster name given) includes a
//!   shared base, overrides one profile (another chart version, a value) and disables
//!   another: exactly the expected releases are installed, at the expected versions;
//! - an include cycle is reported as a problem naming the chain, and nothing is installed;
//!   so is an included list that is a symlink out of the repository (one inside is followed);
//! - `--profiles-configmap`: a missing ConfigMap is a problem (nothing installed); an overlay
//!   in it applies on top of the list from Git, and changing it (same commit) is a new
//!   revision: the overridden version is upgraded to.

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
    cluster_list(HelmBin::V4).await
}

#[tokio::test]
async fn cluster_list_overrides_and_disables_profiles_of_the_base_helm3() -> anyhow::Result<()> {
    cluster_list(HelmBin::V3).await
}

async fn cluster_list(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
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
async fn include_cycle_and_symlink_out_of_the_repository_install_nothing_helm4()
-> anyhow::Result<()> {
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

    // An included list that is a symlink out of the repository: a problem naming it, with the
    // cycle fixed; a symlink inside the repository is followed.
    let secret = s.dir.path().join("outside.yaml");
    std::fs::write(&secret, format!("{HEAD}profiles: []\n"))?;
    std::os::unix::fs::symlink(&secret, s.repo.path().join("shared/leak.yaml"))?;
    std::os::unix::fs::symlink(
        "../base/profiles.yaml",
        s.repo.path().join("shared/base.yaml"),
    )?;
    s.repo.write(
        "profiles.yaml",
        format!("{HEAD}include: [shared/base.yaml, shared/leak.yaml]\n"),
    )?;
    s.repo.commit("an out-of-bounds symlink")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(1), "a rejected revision: {logs}");
    let status = s.status();
    let problems = status["rejectedRevision"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(problems.len(), 1, "{status:#}");
    assert_eq!(problems[0]["file"], "profiles.yaml", "{status:#}");
    assert_eq!(problems[0]["field"], "include[1]", "{status:#}");
    let message = problems[0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("shared/leak.yaml") && message.contains("out-of-bounds symlink"),
        "{message}"
    );
    assert!(testkit::release::records(&s.cluster, None).is_empty());

    // Without the leak, the base through the inner symlink installs.
    std::fs::remove_file(s.repo.path().join("shared/leak.yaml"))?;
    s.repo.write(
        "profiles.yaml",
        format!("{HEAD}include: [shared/base.yaml]\n"),
    )?;
    s.repo.commit("only the inner symlink")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    assert_eq!(
        names(&s.status()),
        ["cache@1.0.0", "metrics@1.0.0", "web@1.0.0"]
    );
    Ok(())
}

/// Create or replace ConfigMap `strata-profiles` in the agent's namespace with `overlay`.
fn put_overlay(s: &GitCharts, overlay: &str) -> anyhow::Result<()> {
    let key = kubesim::ResourceKey::new("", "configmaps");
    let obj = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "strata-profiles", "namespace": testkit::cluster::AGENT_NS},
        "data": {"profiles.yaml": overlay},
    });
    if testkit::cluster::get(
        &s.cluster,
        "configmaps",
        testkit::cluster::AGENT_NS,
        "strata-profiles",
    )
    .is_some()
    {
        s.cluster.store().update(&key, obj)?;
    } else {
        s.cluster.store().create(&key, obj)?;
    }
    Ok(())
}

#[tokio::test]
async fn configmap_overlay_changes_a_version_and_the_agent_upgrades_helm4() -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), HelmBin::V4).await?;
    write_base(&s)?;
    s.repo.write(
        "profiles.yaml",
        format!("{HEAD}include: [base/profiles.yaml]\nprofiles:\n  - name: metrics\n    enabled: false\n"),
    )?;
    let commit = s.repo.commit("the Git list")?;
    let args = ["--profiles-configmap", "strata-profiles"];

    // Configured but missing: a problem, nothing installed.
    let (code, logs) = s.run_once_with(&args).await?;
    assert_eq!(code, Some(1), "a rejected revision: {logs}");
    let status = s.status();
    let problems = status["rejectedRevision"]["problems"].to_string();
    assert!(
        problems.contains("configmap/strata-profiles/profiles.yaml")
            && problems.contains("does not exist"),
        "{status:#}"
    );
    assert!(testkit::release::records(&s.cluster, None).is_empty());

    // An overlay that changes nothing: the Git list as it is.
    put_overlay(&s, HEAD)?;
    let (code, logs) = s.run_once_with(&args).await?;
    assert_eq!(code, Some(0), "{logs}");
    let status = s.status();
    assert_eq!(names(&status), ["cache@1.0.0", "web@1.0.0"], "{status:#}");
    let first = status["revision"]["commit"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        first.starts_with(&format!("{commit}+configmap.")),
        "{first}"
    );

    // The overlay overrides web's version (same commit): a new revision, web upgraded.
    put_overlay(
        &s,
        &format!(
            "{HEAD}profiles:\n  - name: web\n    chart: {{path: charts/web-2}}\n    version: 2.0.0\n"
        ),
    )?;
    let (code, logs) = s.run_once_with(&args).await?;
    assert_eq!(code, Some(0), "{logs}");
    let status = s.status();
    assert_eq!(names(&status), ["cache@1.0.0", "web@2.0.0"], "{status:#}");
    let second = status["revision"]["commit"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        second.starts_with(&format!("{commit}+configmap.")),
        "{second}"
    );
    assert_ne!(first, second, "a changed ConfigMap is a new revision");
    assert_eq!(s.data("web").expect("web's ConfigMap")["flavour"], "2.0.0");
    assert_eq!(s.data("web").expect("web's ConfigMap")["greeting"], "base");
    let web: Vec<_> = testkit::release::records(&s.cluster, Some("web"));
    assert_eq!(web.len(), 2, "installed, then upgraded: {web:?}");
    Ok(())
}
