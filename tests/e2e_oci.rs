//! Charts from an OCI registry: the real CNCF distribution registry (Debian's
//! `docker-registry`) on 127.0.0.1, charts pushed with the real `helm push`, installed by
//! `strata run --once` on kubesim with helm 4 and helm 3: a version range resolved from the
//! registry's tags (`+` written `_`), the chart layer verified against the manifest digest, a
//! registry with basic auth from a `repositories[].secretRef` Secret (the password never in
//! status or logs), and a chart the registry does not have rejected with a problem.

use std::time::Duration;

use testkit::chart::{ChartSpec, profile_annotations, write_chart};
use testkit::cluster::AGENT_NS;
use testkit::oci::OciRegistry;
use testkit::{HelmBin, strata_bin};

const LONG: Duration = Duration::from_secs(180);

fn profiles(url: &str, secret: bool, version: &str) -> String {
    let secret_ref = if secret {
        "\n    secretRef: {name: registry-credentials}"
    } else {
        ""
    };
    format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: registry\n    \
         url: {url}\n    plainHttp: true{secret_ref}\ndefaults:\n  timeout: 60s\nprofiles:\n  \
         - name: demo\n    chart: {{repository: registry, name: demo}}\n    version: \"{version}\"\n    \
         namespace: demo\n"
    )
}

struct World {
    _dir: tempfile::TempDir,
    cluster: kubesim::Cluster,
    kubeconfig: std::path::PathBuf,
    git: testkit::GitServer,
    repo: testkit::TestRepo,
    work: std::path::PathBuf,
}

async fn world(registry: &OciRegistry, helm: HelmBin) -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let annotations = profile_annotations(Some("1"), None);
    for version in ["1.0.0", "1.1.0+build.2", "2.0.0"] {
        let chart = write_chart(
            &dir.path().join(format!("charts-{version}")),
            &ChartSpec {
                name: "demo",
                version,
                annotations: &annotations,
                files: &[],
            },
        )?;
        registry.push(&helm.path(), &chart, "charts")?;
    }
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("profiles")?;
    let work = dir.path().join("work");
    Ok(World {
        _dir: dir,
        cluster,
        kubeconfig,
        git,
        repo,
        work,
    })
}

async fn run_once(w: &World, helm: HelmBin) -> anyhow::Result<(Option<i32>, String)> {
    let args = testkit::agent::agent_args(
        &w.git.http_url("profiles"),
        &w.kubeconfig,
        &helm.path(),
        &w.work,
    );
    let mut args = args;
    args.insert(0, "--once".into());
    let log = w.work.with_extension("log");
    let mut agent = testkit::Agent::start(strata_bin!(), &args, &[], log)?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    Ok((exit.code(), agent.logs()))
}

async fn a_version_range_is_resolved_from_the_registry_tags(helm: HelmBin) -> anyhow::Result<()> {
    let registry = OciRegistry::start().await?;
    let w = world(&registry, helm).await?;
    w.repo.write(
        "profiles.yaml",
        profiles(&registry.url("charts"), false, "~1.1"),
    )?;
    w.repo.commit("demo from the registry")?;
    let (code, logs) = run_once(&w, helm).await?;
    assert_eq!(code, Some(0), "{logs}");
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    let r = testkit::agent::release(&st, "demo").expect("demo in status");
    assert_eq!(r["version"], "1.1.0+build.2", "{r:#}");
    let latest = testkit::release::latest(&w.cluster);
    let rec = latest.iter().find(|r| r.name == "demo").expect("release");
    assert_eq!(rec.status, "deployed");

    // A chart the registry does not have: a problem naming the registry, nothing installed.
    w.repo.write(
        "profiles.yaml",
        profiles(&registry.url("charts"), false, "1.0.0").replace("name: demo}", "name: absent}"),
    )?;
    w.repo.commit("a chart that is not there")?;
    let (code, logs) = run_once(&w, helm).await?;
    assert_eq!(code, Some(1), "{logs}");
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    let problems = st["rejectedRevision"]["problems"].to_string();
    assert!(
        problems.contains("registry") && problems.contains("404"),
        "{problems}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_range_is_resolved_from_the_registry_tags_helm4() -> anyhow::Result<()> {
    a_version_range_is_resolved_from_the_registry_tags(HelmBin::V4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_range_is_resolved_from_the_registry_tags_helm3() -> anyhow::Result<()> {
    a_version_range_is_resolved_from_the_registry_tags(HelmBin::V3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_basic_auth_takes_the_credentials_from_a_secret() -> anyhow::Result<()> {
    const PASSWORD: &str = "oci-sentinel-8f3a";
    let helm = HelmBin::V4;
    let registry = OciRegistry::start_with_auth("reader", PASSWORD).await?;
    let w = world(&registry, helm).await?;
    // Without the Secret: the registry refuses, the revision is rejected.
    w.repo.write(
        "profiles.yaml",
        profiles(&registry.url("charts"), true, "2.0.0"),
    )?;
    w.repo.commit("demo from a private registry")?;
    let (code, logs) = run_once(&w, helm).await?;
    assert_eq!(code, Some(1), "{logs}");
    {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        w.cluster.store().create(
            &kubesim::ResourceKey::new("", "secrets"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "registry-credentials", "namespace": AGENT_NS},
                "type": "Opaque",
                "data": {"username": b64("reader"), "password": b64(PASSWORD)},
            }),
        )?;
    }
    let (code, logs) = run_once(&w, helm).await?;
    assert_eq!(code, Some(0), "{logs}");
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    assert_eq!(
        testkit::agent::release(&st, "demo").unwrap()["version"],
        "2.0.0"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the password leaked into the logs"
    );
    assert!(
        !st.to_string().contains(PASSWORD),
        "the password leaked into the status"
    );
    Ok(())
}
