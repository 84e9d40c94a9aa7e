//! The offline bundle: `strata bundle` on the "connected" side (a Git server, an HTTP chart
//! repository with the three layered charts and an OCI registry with a fourth chart, all on
//! 127.0.0.1) writes one archive; the upstream servers are then stopped; `strata bundle push`
//! puts the charts into the "site" (an HTTP chart repository directory and another registry)
//! and the same commit into the site's Git server; `strata run --once` at the site, with the
//! site's Git URL and a mirrors file rewriting the upstream repository URLs, converges with
//! the same profile list (helm 4 and helm 3). A chart changed inside the archive is refused at
//! push, naming the chart, and nothing is pushed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::agent::run_strata;
use testkit::chart::{ChartSpec, profile_annotations, write_chart};
use testkit::oci::OciRegistry;
use testkit::scenario::{layered_charts, layered_profiles, stack_converged};
use testkit::{HelmBin, strata_bin};

const LONG: Duration = Duration::from_secs(180);

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The upstream ("connected") side.
struct Upstream {
    git: testkit::GitServer,
    charts: testkit::ChartRepo,
    registry: OciRegistry,
    commit: String,
}

impl Upstream {
    fn oci_url(&self) -> String {
        self.registry.url("charts")
    }
}

async fn upstream(helm: HelmBin, dir: &Path) -> anyhow::Result<Upstream> {
    let charts = testkit::ChartRepo::start(&helm.path()).await?;
    for chart in layered_charts(&dir.join("charts"))? {
        charts.add_chart(&chart)?;
    }
    let registry = OciRegistry::start().await?;
    let annotations = profile_annotations(Some("4"), None);
    let edge = write_chart(
        &dir.join("oci-charts"),
        &ChartSpec {
            name: "edge",
            version: "1.2.0",
            annotations: &annotations,
            files: &[],
        },
    )?;
    registry.push(&helm.path(), &edge, "charts")?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("platform")?;
    // History before the bundled commit: the bundle carries it (the agent's cache is shallow).
    repo.write("README.md", "platform\n")?;
    repo.commit("start")?;
    let oci = registry.url("charts");
    let list = layered_profiles(&charts.url(), "{}")
        .replace(
            "repositories:\n",
            &format!("repositories:\n  - name: registry\n    url: {oci}\n    plainHttp: true\n"),
        )
        .replace(
            "    values: {}\n",
            "    values: {}\n    valuesFiles: [values/mesh.yaml]\n",
        )
        + "  - name: edge\n    chart: {repository: registry, name: edge}\n    version: \"~1.2\"\n    namespace: edge\n";
    repo.write("profiles.yaml", list)?;
    repo.write("values/mesh.yaml", "greeting: from-the-bundle\n")?;
    repo.commit("platform from the upstream repositories")?;
    let commit = repo.head()?;
    Ok(Upstream {
        git,
        charts,
        registry,
        commit,
    })
}

/// The site: a Git server with an empty bare repository accepting pushes over smart HTTP, an
/// HTTP chart repository (the directory `strata bundle push --chart-dir` writes), a registry.
struct Site {
    git: testkit::GitServer,
    charts: testkit::ChartRepo,
    registry: OciRegistry,
}

async fn site(helm: HelmBin) -> anyhow::Result<Site> {
    let git = testkit::GitServer::start().await?;
    let bare = git.root().join("platform");
    testkit::git::git(git.root(), &["init", "--quiet", "--bare", s(&bare)])?;
    testkit::git::git(&bare, &["config", "http.receivepack", "true"])?;
    Ok(Site {
        git,
        charts: testkit::ChartRepo::start(&helm.path()).await?,
        registry: OciRegistry::start().await?,
    })
}

async fn bundle(dir: &Path, up: &Upstream, name: &str) -> anyhow::Result<PathBuf> {
    let out = dir.join(name);
    let work = dir.join(format!("{name}-work"));
    let git_url = up.git.http_url("platform");
    let r = run_strata(
        strata_bin!(),
        &[
            "bundle",
            "--git-url",
            &git_url,
            "--git-ref",
            "main",
            "--output",
            s(&out),
            "--work-dir",
            s(&work),
        ],
        &[],
        LONG,
    )
    .await?;
    assert_eq!(r.code, Some(0), "{r:?}");
    eprintln!("strata bundle:\n{}", r.stdout);
    Ok(out)
}

fn push_args<'a>(
    bundle: &'a str,
    site_git: &'a str,
    chart_dir: &'a str,
    oci: &'a str,
    helm: &'a str,
) -> Vec<&'a str> {
    vec![
        "bundle",
        "push",
        bundle,
        "--git-url",
        site_git,
        "--chart-dir",
        chart_dir,
        "--oci",
        oci,
        "--plain-http",
        "--helm",
        helm,
    ]
}

async fn bundle_push_and_converge_at_the_site(helm: HelmBin) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let up = upstream(helm, dir.path()).await?;
    let archive = bundle(dir.path(), &up, "platform.tar").await?;

    // The lock: the commit, the profile list, every chart as declared with its digest.
    let opened = strata::bundle_cmd::open(&archive, &dir.path().join("check"))?;
    let lock = &opened.lock;
    assert_eq!(lock.commit, up.commit);
    assert_eq!(lock.profiles_path, "profiles.yaml");
    let declared: Vec<(String, String, String)> = lock
        .charts
        .iter()
        .map(|c| (c.repository.clone(), c.name.clone(), c.version.clone()))
        .collect();
    let http = up.charts.url();
    let oci = up.oci_url();
    assert_eq!(
        declared,
        [
            (http.clone(), "canary".into(), "3.0.0".into()),
            (http.clone(), "certs".into(), "1.0.0".into()),
            (http.clone(), "mesh".into(), "2.0.0".into()),
            (oci.clone(), "edge".into(), "1.2.0".into()),
        ]
    );
    for c in &lock.charts {
        let served = if c.is_oci() {
            None
        } else {
            Some(std::fs::read(
                up.charts
                    .dir()
                    .join(format!("{}-{}.tgz", c.name, c.version)),
            )?)
        };
        if let Some(bytes) = served {
            assert_eq!(c.digest, strata::bundle_cmd::sha256(&bytes), "{c:?}");
        }
    }
    eprintln!(
        "bundle.lock.json:\n{}",
        String::from_utf8_lossy(&opened.entries[strata::bundle_cmd::LOCK_FILE])
    );

    // The site is up; the upstream servers go away for good.
    let site = site(helm).await?;
    let Upstream {
        git,
        charts,
        registry,
        commit,
    } = up;
    drop(git);
    drop(charts);
    drop(registry);

    let site_git = site.git.http_url("platform");
    let site_oci = site.registry.url("mirror");
    let helm_path = helm.path();
    let r = run_strata(
        strata_bin!(),
        &push_args(
            s(&archive),
            &site_git,
            s(site.charts.dir()),
            &site_oci,
            s(&helm_path),
        ),
        &[],
        LONG,
    )
    .await?;
    assert_eq!(r.code, Some(0), "{r:?}");
    eprintln!("strata bundle push:\n{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("commit {commit} -> {site_git} refs/heads/main")),
        "{r:?}"
    );
    // The same commit id at the site.
    let bare = site.git.root().join("platform");
    assert_eq!(
        testkit::git::git(&bare, &["rev-parse", "refs/heads/main"])?.trim(),
        commit
    );
    assert_eq!(
        testkit::git::git(&bare, &["rev-list", "--count", "refs/heads/main"])?.trim(),
        "2"
    );

    // The agent at the site: the site's Git URL, the upstream chart URLs rewritten.
    let mirrors = dir.path().join("mirrors.yaml");
    std::fs::write(
        &mirrors,
        format!(
            "mirrors:\n  - prefix: {http}\n    mirror: {}\n  - prefix: {oci}\n    mirror: {site_oci}\n",
            site.charts.url()
        ),
    )?;
    eprintln!("mirrors.yaml:\n{}", std::fs::read_to_string(&mirrors)?);
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    let mut args = testkit::agent::agent_args(
        &site_git,
        &kubeconfig,
        &helm_path,
        &dir.path().join("agent"),
    );
    args.insert(0, "--once".into());
    args.extend(["--mirrors".to_string(), s(&mirrors).to_string()]);
    let log = dir.path().join("agent.log");
    let mut agent = testkit::Agent::start(strata_bin!(), &args, &[], log)?;
    let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
    let logs = agent.logs();
    assert_eq!(exit.code(), Some(0), "{logs}");
    assert!(stack_converged(&cluster), "{logs}");
    let latest = testkit::release::latest(&cluster);
    assert!(
        latest
            .iter()
            .any(|r| r.name == "edge" && r.namespace == "edge" && r.status == "deployed"),
        "{latest:?}"
    );
    let st = testkit::cluster::configmap_status(&cluster).expect("status");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    assert_eq!(st["revision"]["commit"], commit.as_str(), "{st:#}");
    let mirrored = st["revision"]["mirrored"].to_string();
    assert!(
        mirrored.contains(&site.charts.url()) && mirrored.contains(&site_oci),
        "{st:#}"
    );
    assert!(site.charts.requests("/index.yaml") > 0);
    Ok(())
}

#[tokio::test]
async fn a_bundle_pushed_into_a_site_converges_there_helm4() -> anyhow::Result<()> {
    bundle_push_and_converge_at_the_site(HelmBin::V4).await
}

#[tokio::test]
async fn a_bundle_pushed_into_a_site_converges_there_helm3() -> anyhow::Result<()> {
    bundle_push_and_converge_at_the_site(HelmBin::V3).await
}

/// Rewrites the tar at `from` into `to` with `change` applied to the entry whose name starts
/// with `prefix`.
fn tamper(
    from: &Path,
    to: &Path,
    prefix: &str,
    change: impl Fn(&mut Vec<u8>),
) -> anyhow::Result<()> {
    let mut input = tar::Archive::new(std::fs::File::open(from)?);
    let mut out = tar::Builder::new(std::fs::File::create(to)?);
    let mut found = false;
    for entry in input.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        if name.starts_with(prefix) {
            change(&mut bytes);
            found = true;
        }
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        out.append_data(&mut header, &name, bytes.as_slice())?;
    }
    out.finish()?;
    anyhow::ensure!(found, "no entry {prefix}");
    Ok(())
}

#[tokio::test]
async fn a_tampered_chart_is_refused_at_push_naming_the_chart() -> anyhow::Result<()> {
    let helm = HelmBin::V4;
    let dir = tempfile::tempdir()?;
    let up = upstream(helm, dir.path()).await?;
    let archive = bundle(dir.path(), &up, "platform.tar").await?;
    let site = site(helm).await?;
    let site_git = site.git.http_url("platform");
    let site_oci = site.registry.url("mirror");
    let helm_path = helm.path();

    // A chart replaced by another valid archive (the canary chart's bytes as mesh's).
    let tampered = dir.path().join("tampered.tar");
    let canary = std::fs::read(up.charts.dir().join("canary-3.0.0.tgz"))?;
    tamper(&archive, &tampered, "charts/mesh-2.0.0-", |b| {
        *b = canary.clone()
    })?;
    // And one byte of another flipped.
    let tampered2 = dir.path().join("tampered2.tar");
    tamper(&tampered, &tampered2, "charts/edge-1.2.0-", |b| {
        let i = b.len() / 2;
        b[i] ^= 0xff;
    })?;
    let r = run_strata(
        strata_bin!(),
        &push_args(
            s(&tampered2),
            &site_git,
            s(site.charts.dir()),
            &site_oci,
            s(&helm_path),
        ),
        &[],
        LONG,
    )
    .await?;
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, Some(2), "{r:?}");
    for needle in [
        "is refused: 2 problem(s)",
        &format!("chart mesh 2.0.0 ({}): digest mismatch", up.charts.url()),
        &format!("chart edge 1.2.0 ({}): digest mismatch", up.oci_url()),
    ] {
        assert!(r.stderr.contains(needle), "{needle} in {}", r.stderr);
    }
    // Nothing was pushed anywhere.
    assert!(!site.charts.dir().join("index.yaml").exists());
    assert!(
        testkit::git::git(
            &site.git.root().join("platform"),
            &["rev-parse", "--verify", "--quiet", "refs/heads/main"]
        )
        .is_err()
    );
    // The untouched bundle pushes, into a registry with basic auth: refused without
    // credentials (naming the chart), pushed with them.
    let locked = OciRegistry::start_with_auth("site", "s3cret-pw").await?;
    let locked_oci = locked.url("mirror");
    let r = run_strata(
        strata_bin!(),
        &push_args(
            s(&archive),
            &site_git,
            s(site.charts.dir()),
            &locked_oci,
            s(&helm_path),
        ),
        &[],
        LONG,
    )
    .await?;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("chart edge 1.2.0"), "{}", r.stderr);
    let password = dir.path().join("registry-password");
    std::fs::write(&password, "s3cret-pw\n")?;
    let mut args = push_args(
        s(&archive),
        &site_git,
        s(site.charts.dir()),
        &locked_oci,
        s(&helm_path),
    );
    args.extend([
        "--oci-username",
        "site",
        "--oci-password-file",
        s(&password),
    ]);
    let r = run_strata(strata_bin!(), &args, &[], LONG).await?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(!r.stdout.contains("s3cret-pw") && !r.stderr.contains("s3cret-pw"));
    let tags = reqwest::Client::new()
        .get(format!("http://{}/v2/mirror/edge/tags/list", locked.host()))
        .basic_auth("site", Some("s3cret-pw"))
        .send()
        .await?
        .text()
        .await?;
    assert!(tags.contains("1.2.0"), "{tags}");

    // Without a target for the OCI chart: refused, naming it.
    let r = run_strata(
        strata_bin!(),
        &[
            "bundle",
            "push",
            s(&archive),
            "--git-url",
            &site_git,
            "--chart-dir",
            s(site.charts.dir()),
        ],
        &[],
        LONG,
    )
    .await?;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("chart edge 1.2.0") && r.stderr.contains("--oci"),
        "{}",
        r.stderr
    );
    Ok(())
}

/// An invalid revision is refused with all its problems, and no archive is written.
#[tokio::test]
async fn an_invalid_revision_is_not_bundled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("platform")?;
    repo.write(
        "profiles.yaml",
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: a\n    \
         chart: {path: charts/missing}\n    namespace: a\n    valuesFiles: [no-such.yaml]\n",
    )?;
    repo.commit("broken")?;
    let out = dir.path().join("b.tar");
    let r = run_strata(
        strata_bin!(),
        &[
            "bundle",
            "--git-url",
            &git.http_url("platform"),
            "-o",
            s(&out),
            "--work-dir",
            s(&dir.path().join("work")),
        ],
        &[],
        LONG,
    )
    .await?;
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("the revision is invalid, nothing bundled: 2 problem(s)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("no-such.yaml") && r.stderr.contains("charts/missing"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
    Ok(())
}
