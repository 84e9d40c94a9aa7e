//! The repository's own example profile repository (`examples/`: cert-manager -> linkerd ->
//! flagger, charts by path inside Git) planned with each layering model and applied with
//! `strata run --once` on the simulated cluster, with helm 4 and helm 3.

use std::time::Duration;

use testkit::agent::{Agent, release, run_strata};
use testkit::cluster::AGENT_NS;
use testkit::{HelmBin, strata_bin};

fn examples_repo() -> anyhow::Result<testkit::TestRepo> {
    let repo = testkit::TestRepo::new()?;
    repo.copy_dir(&testkit::examples_dir(), ".")?;
    repo.commit("examples")?;
    Ok(repo)
}

#[tokio::test]
async fn examples_plan_with_every_model() -> anyhow::Result<()> {
    let repo = examples_repo()?;
    for list in [
        "profiles.yaml",
        "profiles-category.yaml",
        "profiles-allocated.yaml",
    ] {
        let work = tempfile::tempdir()?;
        let out = run_strata(
            strata_bin!(),
            &[
                "plan",
                "--git-url",
                repo.path().to_str().unwrap(),
                "--profiles-path",
                list,
                "--work-dir",
                work.path().to_str().unwrap(),
                "--output",
                "json",
            ],
            &[],
            Duration::from_secs(60),
        )
        .await?;
        assert_eq!(out.code, Some(0), "{list}: {out:?}");
        let plan: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let order: Vec<String> = plan["plan"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["releases"].as_array().unwrap())
            .map(|r| r["release"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            order,
            ["cert-manager", "linkerd", "flagger"],
            "{list}: {plan:#}"
        );
    }
    Ok(())
}

async fn examples_apply(helm: HelmBin) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    let repo = examples_repo()?;
    let args: Vec<String> = [
        "--git-url",
        repo.path().to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--helm",
        helm.path().to_str().unwrap(),
        "--namespace",
        AGENT_NS,
        "--work-dir",
        dir.path().join("work").to_str().unwrap(),
        "--once",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent::start(strata_bin!(), &args, &[], dir.path().join("agent.log"))?;
    let exit = tokio::time::timeout(Duration::from_secs(120), agent.child.wait()).await??;
    assert!(exit.success(), "{exit}\n{}", agent.logs());
    let status = testkit::cluster::configmap_status(&cluster).expect("status ConfigMap");
    assert_eq!(status["phase"], "Ready", "{status:#}");
    for (i, name) in ["cert-manager", "linkerd", "flagger"].iter().enumerate() {
        let r = release(&status, name).unwrap();
        assert_eq!(r["phase"], "Ready", "{r:#}");
        assert_eq!(
            status["layers"][i]["releases"][0]["name"], *name,
            "{status:#}"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn examples_apply_helm4() -> anyhow::Result<()> {
    examples_apply(HelmBin::V4).await
}

#[tokio::test]
async fn examples_apply_helm3() -> anyhow::Result<()> {
    examples_apply(HelmBin::V3).await
}
