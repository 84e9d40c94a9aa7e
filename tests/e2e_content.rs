//! Content, not just versions, decides an upgrade (issue 10, part 1), end to end with real
//! helm 4 and helm 3, a real Git server and kubesim: a chart kept in the Git repository
//! whose template is edited and committed without a version bump is upgraded ("chart content
//! changed") and the object in the cluster has the new content; new values upgrade ("values
//! changed"); a commit that changes nothing the release depends on runs no helm (no write in
//! the release's namespace). The release carries strata's labels with the content digest the
//! status shows.

use testkit::cluster::touches_namespace;
use testkit::gitcharts::{GitCharts, PathProfile};
use testkit::{HelmBin, strata_bin};

fn app(values: &str) -> [PathProfile<'_>; 1] {
    [PathProfile {
        name: "app",
        layer: 1,
        values,
    }]
}

/// The labels of the newest release Secret of `app/app`.
fn release_labels(s: &GitCharts) -> serde_json::Map<String, serde_json::Value> {
    let newest = testkit::release::latest(&s.cluster)
        .into_iter()
        .find(|r| r.namespace == "app" && r.name == "app")
        .expect("a release record of app/app");
    let secret = testkit::cluster::get(&s.cluster, "secrets", "app", &newest.secret).unwrap();
    secret["metadata"]["labels"].as_object().unwrap().clone()
}

async fn content_decides(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    s.write_chart("app", 1, "one")?;
    s.write_list(&app("{greeting: hi}"), "")?;
    s.repo.commit("app")?;

    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let r = s.release("app");
    assert_eq!(r["action"], "install", "{r:#}");
    assert_eq!(r["helmRevision"], 1, "{r:#}");
    let data = s.data("app").expect("the chart's ConfigMap");
    assert_eq!(
        (data["greeting"].as_str(), data["flavour"].as_str()),
        (Some("hi"), Some("one"))
    );
    let digest = r["contentDigest"]
        .as_str()
        .expect("contentDigest")
        .to_string();
    let labels = release_labels(&s);
    assert_eq!(labels["strata.io/managed-by"], "strata", "{labels:?}");
    assert_eq!(
        labels["strata.io/agent"],
        testkit::cluster::AGENT_NS,
        "{labels:?}"
    );
    assert_eq!(labels["strata.io/profile"], "app", "{labels:?}");
    assert_eq!(labels["strata.io/layer"], "1", "{labels:?}");
    assert_eq!(
        labels["strata.io/content-digest"],
        digest.as_str(),
        "{labels:?}"
    );

    // The template edited, the chart's version not bumped.
    s.write_chart("app", 1, "two")?;
    s.repo.commit("app: flavour two, same chart version")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let r = s.release("app");
    assert_eq!(r["action"], "upgrade", "{r:#}");
    assert_eq!(r["reason"], "chart content changed", "{r:#}");
    assert_eq!(r["helmRevision"], 2, "{r:#}");
    assert_eq!(s.data("app").unwrap()["flavour"], "two");
    let digest2 = r["contentDigest"].as_str().unwrap().to_string();
    assert_ne!(digest, digest2);
    assert_eq!(
        release_labels(&s)["strata.io/content-digest"],
        digest2.as_str()
    );
    let events = testkit::cluster::events(&s.cluster, testkit::cluster::AGENT_NS);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Installing:") && e.contains("chart content changed")),
        "the Event names the reason: {events:?}"
    );

    // New values.
    s.write_list(&app("{greeting: bye}"), "")?;
    s.repo.commit("app: greeting bye")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let r = s.release("app");
    assert_eq!(r["reason"], "values changed", "{r:#}");
    assert_eq!(r["helmRevision"], 3, "{r:#}");
    assert_eq!(s.data("app").unwrap()["greeting"], "bye");

    // A commit that changes nothing the release depends on: no helm process, so no write
    // in the release's namespace.
    let before = s.cluster.controls().requests().len();
    s.repo.write("README.md", "unrelated\n")?;
    s.repo.commit("docs only")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let after: Vec<_> = s.cluster.controls().requests()[before..]
        .iter()
        .filter(|r| testkit::cluster::is_write(r) && touches_namespace(r, "app"))
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(after.is_empty(), "no helm ran, nothing written: {after:?}");
    let r = s.release("app");
    assert_eq!(r["action"], "none", "{r:#}");
    assert_eq!(r["helmRevision"], 3, "{r:#}");
    assert!(
        !s.cluster.controls().requests()[before..]
            .iter()
            .any(|r| r.user_agent.to_ascii_lowercase().starts_with("helm")),
        "no helm process talked to the cluster"
    );
    Ok(())
}

#[tokio::test]
async fn content_decides_helm4() -> anyhow::Result<()> {
    content_decides(HelmBin::V4).await
}

#[tokio::test]
async fn content_decides_helm3() -> anyhow::Result<()> {
    content_decides(HelmBin::V3).await
}

/// A release installed before strata stamped its labels (here: by plain helm, at the same
/// chart and values) gets exactly one upgrade that records them; then no helm runs.
async fn unstamped_release_is_stamped_once(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    s.write_chart("app", 1, "one")?;
    s.write_list(&app("{}"), "")?;
    s.repo.commit("app")?;
    s.helm_install_by_hand("app", "app", "app").await?;

    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let r = s.release("app");
    assert_eq!(r["action"], "upgrade", "{r:#}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no strata labels"), "{r:#}");
    assert_eq!(r["helmRevision"], 2, "{r:#}");
    assert_eq!(release_labels(&s)["strata.io/managed-by"], "strata");

    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let r = s.release("app");
    assert_eq!(r["action"], "none", "{r:#}");
    assert_eq!(r["helmRevision"], 2, "{r:#}");
    Ok(())
}

#[tokio::test]
async fn unstamped_release_is_stamped_once_helm4() -> anyhow::Result<()> {
    unstamped_release_is_stamped_once(HelmBin::V4).await
}

#[tokio::test]
async fn unstamped_release_is_stamped_once_helm3() -> anyhow::Result<()> {
    unstamped_release_is_stamped_once(HelmBin::V3).await
}
