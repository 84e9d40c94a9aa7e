//! Air-gapped sites: one profile list naming unreachable upstream URLs
//! (`https://charts.example.invalid/platform`, a Git URL on `git.example.invalid`) installed
//! by `strata run --once` on kubesim with real helm through a mirrors file (`--mirrors`) that
//! rewrites them to the site's servers on 127.0.0.1: the Git server, and the chart repository
//! over HTTPS with a private CA (`--ca-file`). /status shows the declared and the fetched URLs.
//! Without the mirrors file the same run cannot fetch (exit 2 at its deadline); an invalid
//! mirrors file is reported before anything starts, naming the file and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::scenario::{layered_charts, layered_profiles, stack_converged};
use testkit::{HelmBin, strata_bin};

const LONG: Duration = Duration::from_secs(180);
const DECLARED_CHARTS: &str = "https://charts.example.invalid/platform";
const DECLARED_GIT: &str = "http://git.example.invalid/platform";

struct Site {
    dir: tempfile::TempDir,
    cluster: kubesim::Cluster,
    kubeconfig: PathBuf,
    git: testkit::GitServer,
    charts: testkit::ChartRepo,
    ca: PathBuf,
}

async fn site(helm: HelmBin) -> anyhow::Result<Site> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    let charts = testkit::ChartRepo::start_tls(&helm.path()).await?;
    for chart in layered_charts(&dir.path().join("charts"))? {
        charts.add_chart(&chart)?;
    }
    let ca = dir.path().join("site-ca.pem");
    std::fs::write(&ca, charts.ca_pem().expect("a TLS repository"))?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("platform")?;
    // The upstream URL, unchanged for every site.
    repo.write("profiles.yaml", layered_profiles(DECLARED_CHARTS, "{}"))?;
    repo.commit("layered platform from the upstream repository")?;
    Ok(Site {
        dir,
        cluster,
        kubeconfig,
        git,
        charts,
        ca,
    })
}

impl Site {
    fn mirrors(&self) -> anyhow::Result<PathBuf> {
        let git_base = self.git.http_url("platform");
        let git_base = git_base.trim_end_matches("/platform");
        let path = self.dir.path().join("mirrors.yaml");
        std::fs::write(
            &path,
            format!(
                "mirrors:\n  - prefix: http://git.example.invalid\n    mirror: {git_base}\n  \
                 - prefix: {DECLARED_CHARTS}\n    mirror: {}\n",
                self.charts.url()
            ),
        )?;
        Ok(path)
    }

    async fn run_once(
        &self,
        helm: HelmBin,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<(Option<i32>, String)> {
        let mut args = testkit::agent::agent_args(
            DECLARED_GIT,
            &self.kubeconfig,
            &helm.path(),
            &self.dir.path().join(name),
        );
        args.insert(0, "--once".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.dir.path().join(format!("{name}.log"));
        let mut agent = testkit::Agent::start(strata_bin!(), &args, &[], log)?;
        let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
        Ok((exit.code(), agent.logs()))
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

async fn the_same_profile_list_converges_through_the_mirrors(helm: HelmBin) -> anyhow::Result<()> {
    let site = site(helm).await?;
    let mirrors = site.mirrors()?;

    // Without the mirrors the upstream URLs are unreachable: nothing is fetched.
    let (code, logs) = site
        .run_once(helm, "plain", &["--once-timeout", "8s"])
        .await?;
    assert_ne!(code, Some(0), "{logs}");
    assert!(logs.contains("git.example.invalid"), "{logs}");
    assert!(testkit::release::latest(&site.cluster).is_empty());

    let (code, logs) = site
        .run_once(
            helm,
            "mirrored",
            &["--mirrors", s(&mirrors), "--ca-file", s(&site.ca)],
        )
        .await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(stack_converged(&site.cluster));
    let st = testkit::cluster::configmap_status(&site.cluster).expect("status");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    eprintln!("revision: {:#}", st["revision"]);
    eprintln!("mirrors file:\n{}", std::fs::read_to_string(&mirrors)?);
    let mirrored = st["revision"]["mirrored"].as_array().expect("mirrored");
    let pair = |url: &str| {
        mirrored
            .iter()
            .find(|m| m["url"] == url)
            .and_then(|m| m["fetchedFrom"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        pair(DECLARED_GIT),
        Some(site.git.http_url("platform")),
        "{st:#}"
    );
    assert_eq!(pair(DECLARED_CHARTS), Some(site.charts.url()), "{st:#}");
    assert!(site.charts.requests("/index.yaml") > 0);

    // The mirror without the CA is not trusted: the chart repository is never reached.
    let (code, logs) = site
        .run_once(
            helm,
            "untrusted",
            &["--mirrors", s(&mirrors), "--once-timeout", "8s"],
        )
        .await?;
    assert_ne!(code, Some(0), "{logs}");
    assert!(logs.to_lowercase().contains("certificate"), "{logs}");
    Ok(())
}

#[tokio::test]
async fn the_same_profile_list_converges_through_the_mirrors_helm4() -> anyhow::Result<()> {
    the_same_profile_list_converges_through_the_mirrors(HelmBin::V4).await
}

#[tokio::test]
async fn the_same_profile_list_converges_through_the_mirrors_helm3() -> anyhow::Result<()> {
    the_same_profile_list_converges_through_the_mirrors(HelmBin::V3).await
}

/// A bad mirrors file (and a missing CA file) are reported at once, before anything starts,
/// naming the flags, the file and the fields.
#[tokio::test]
async fn an_invalid_mirrors_file_is_reported_naming_the_file_and_field() -> anyhow::Result<()> {
    let site = site(HelmBin::V4).await?;
    let bad = site.dir.path().join("bad-mirrors.yaml");
    std::fs::write(
        &bad,
        "mirrors:\n  - prefix: https://charts.example.invalid\n    mirorr: https://x\n",
    )?;
    let missing_ca = site.dir.path().join("no-such-ca.pem");
    let (code, logs) = site
        .run_once(
            HelmBin::V4,
            "invalid",
            &["--mirrors", s(&bad), "--ca-file", s(&missing_ca)],
        )
        .await?;
    assert_ne!(code, Some(0), "{logs}");
    for needle in [
        "--mirrors",
        "STRATA_MIRRORS",
        s(&bad),
        "mirrors[0].mirorr",
        "mirrors[0].mirror",
        "--ca-file",
        "STRATA_CA_FILE",
        "no-such-ca.pem",
    ] {
        assert!(logs.contains(needle), "{needle} in {logs}");
    }
    assert!(testkit::release::latest(&site.cluster).is_empty());
    Ok(())
}
