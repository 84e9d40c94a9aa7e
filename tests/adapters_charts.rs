//! strata's chart store against a real Helm repository over HTTP (charts packaged and indexed
//! by the real helm).

use std::path::Path;

use strata::executor::process::Redactor;
use strata::source::charts::{ChartStore, Error, HttpOptions, RepoAuth, RepoSpec};
use strata_core::version::VersionConstraint;
use testkit::chart::{ChartSpec, profile_annotations, write_chart};
use testkit::{ChartRepo, HelmBin};

fn chart_dir(root: &Path, name: &str, version: &str) -> std::path::PathBuf {
    write_chart(
        root,
        &ChartSpec {
            name,
            version,
            annotations: &profile_annotations(Some("1"), None),
            files: &[(
                "templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
            )],
        },
    )
    .unwrap()
}

fn constraint(text: &str) -> VersionConstraint {
    VersionConstraint::parse(text).unwrap()
}

async fn repo_with_demo_versions() -> anyhow::Result<(ChartRepo, tempfile::TempDir)> {
    let src = tempfile::tempdir()?;
    let dirs: Vec<_> = ["1.0.0", "1.1.0", "2.0.0"]
        .iter()
        .map(|v| chart_dir(src.path(), "demo", v))
        .collect();
    let refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
    let repo = ChartRepo::with_charts(&HelmBin::V4.path(), &refs).await?;
    Ok((repo, src))
}

#[tokio::test]
async fn resolves_a_range_verifies_the_digest_and_pulls_once() -> anyhow::Result<()> {
    let (repo, _src) = repo_with_demo_versions().await?;
    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?;

    let pulled = store
        .pull(&repo.url(), "demo", &constraint(">=1.0, <2"))
        .await?;
    assert_eq!(pulled.version, "1.1.0");
    assert!(
        pulled.chart_yaml.contains("version: 1.1.0"),
        "{}",
        pulled.chart_yaml
    );
    assert_eq!(
        pulled.path,
        cache.path().join(format!("sha256/{}.tgz", pulled.digest))
    );
    // The digest is the archive's sha256, as the index says.
    let index = std::fs::read_to_string(repo.dir().join("index.yaml"))?;
    assert!(index.contains(&pulled.digest), "{index}");
    assert_eq!(repo.requests("/demo-1.1.0.tgz"), 1);

    // Pulling the same version again (same store or a new one on the same cache) downloads
    // nothing: only the index is revalidated.
    let again = store.pull(&repo.url(), "demo", &constraint("~1.1")).await?;
    assert_eq!(again, pulled);
    let store2 = ChartStore::new(cache.path(), Redactor::new())?;
    store2
        .pull(&repo.url(), "demo", &constraint("1.1.0"))
        .await?;
    assert_eq!(repo.requests("/demo-1.1.0.tgz"), 1);
    assert_eq!(repo.requests("/index.yaml"), 3);
    // The first store revalidated its cached index (304); the new store had no cache.
    assert_eq!(repo.not_modified(), 1);

    let latest = store.pull(&repo.url(), "demo", &constraint(">=1")).await?;
    assert_eq!(latest.version, "2.0.0");
    Ok(())
}

#[tokio::test]
async fn a_bad_digest_is_rejected_and_not_cached() -> anyhow::Result<()> {
    let (repo, src) = repo_with_demo_versions().await?;
    // Replace the archive the index points at with another chart's archive.
    let other = chart_dir(src.path(), "other", "9.9.9");
    let tgz = repo.package(&other)?;
    std::fs::copy(&tgz, repo.dir().join("demo-1.0.0.tgz"))?;

    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?;
    let err = store
        .pull(&repo.url(), "demo", &constraint("1.0.0"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    let cached = std::fs::read_dir(cache.path().join("sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "tgz"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(cached, 0, "nothing enters the cache");
    Ok(())
}

#[tokio::test]
async fn unknown_chart_or_version_and_server_errors_are_reported() -> anyhow::Result<()> {
    let (repo, _src) = repo_with_demo_versions().await?;
    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?;

    let err = store
        .pull(&repo.url(), "demo", &constraint(">=3"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }), "{err}");
    assert!(
        err.to_string().contains("2.0.0"),
        "names what exists: {err}"
    );

    let err = store
        .pull(&repo.url(), "nope", &constraint("1.0.0"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // One transient 500 is retried transparently.
    repo.fail_next(1);
    let before = repo.requests("/index.yaml");
    store
        .pull(&repo.url(), "demo", &constraint("1.0.0"))
        .await?;
    assert_eq!(repo.requests("/index.yaml"), before + 2);

    repo.set_failing(true);
    let err = store
        .pull(&repo.url(), "demo", &constraint("1.0.0"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Http {
                status: Some(500),
                ..
            }
        ),
        "{err}"
    );
    repo.set_failing(false);
    store
        .pull(&repo.url(), "demo", &constraint("1.0.0"))
        .await?;

    repo.stop();
    let err = store
        .pull(&repo.url(), "demo", &constraint("1.0.0"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: None, .. }), "{err}");

    let err = store
        .pull(
            "oci://registry.invalid/charts",
            "demo",
            &constraint("1.0.0"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OciUnsupported { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn basic_auth_repositories() -> anyhow::Result<()> {
    let src = tempfile::tempdir()?;
    let dir = chart_dir(src.path(), "private", "0.1.0");
    let repo = ChartRepo::start_with_auth(&HelmBin::V4.path(), "bob", "RepoPassw0rd").await?;
    repo.add_chart(&dir)?;
    let cache = tempfile::tempdir()?;
    let redactor = Redactor::new();
    let store = ChartStore::new(cache.path(), redactor.clone())?;

    let err = store
        .pull(&repo.url(), "private", &constraint("0.1.0"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Http {
                status: Some(401),
                ..
            }
        ),
        "{err}"
    );

    let spec = RepoSpec::new("private", repo.url()).with_auth(RepoAuth {
        username: "bob".into(),
        password: "RepoPassw0rd".into(),
    });
    let pulled = store.pull(&spec, "private", &constraint("0.1.0")).await?;
    assert_eq!(pulled.version, "0.1.0");
    assert_eq!(redactor.redact("x RepoPassw0rd"), "x ***");
    Ok(())
}

#[tokio::test]
async fn an_index_without_digests_still_pulls_each_archive_once() -> anyhow::Result<()> {
    let (repo, _src) = repo_with_demo_versions().await?;
    let index = std::fs::read_to_string(repo.dir().join("index.yaml"))?;
    let stripped: String = index
        .lines()
        .filter(|l| !l.trim_start().starts_with("digest:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(stripped, index);
    std::fs::write(repo.dir().join("index.yaml"), stripped)?;

    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?;
    let first = store
        .pull(&repo.url(), "demo", &constraint("2.0.0"))
        .await?;
    let again = store
        .pull(&repo.url(), "demo", &constraint("2.0.0"))
        .await?;
    assert_eq!(first.digest, again.digest);
    assert_eq!(repo.requests("/demo-2.0.0.tgz"), 1);
    Ok(())
}

#[tokio::test]
async fn https_repositories_with_a_private_ca() -> anyhow::Result<()> {
    let src = tempfile::tempdir()?;
    let dir = chart_dir(src.path(), "secure", "3.0.0");
    let repo = ChartRepo::start_tls(&HelmBin::V4.path()).await?;
    repo.add_chart(&dir)?;
    assert!(repo.url().starts_with("https://"));
    let cache = tempfile::tempdir()?;

    // Without the CA the server is not trusted.
    let store = ChartStore::new(cache.path(), Redactor::new())?;
    let err = store
        .pull(&repo.url(), "secure", &constraint("3.0.0"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_eq!(
        repo.requests("/index.yaml"),
        0,
        "no TLS handshake succeeded"
    );

    let ca = cache.path().join("ca.pem");
    std::fs::write(&ca, repo.ca_pem().unwrap())?;
    let store = ChartStore::with_options(
        cache.path(),
        HttpOptions {
            ca_file: Some(ca),
            ..Default::default()
        },
        Redactor::new(),
    )?;
    let pulled = store
        .pull(&repo.url(), "secure", &constraint("3.0.0"))
        .await?;
    assert_eq!(pulled.version, "3.0.0");
    Ok(())
}
