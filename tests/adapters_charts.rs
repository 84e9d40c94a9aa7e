//! strata's chart store against a real Helm repository over HTTP (charts packaged and indexed
//! by the real helm).

use std::path::Path;

use strata::executor::process::Redactor;
use strata::source::auth::BasicAuth;
use strata::source::charts::{ChartStore, Error, HttpOptions, RepoSpec};
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
    // An OCI registry that cannot be reached is an outage (tried again), like any other.
    assert!(matches!(err, Error::Http { status: None, .. }), "{err}");
    assert!(err.is_transient(), "{err}");
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

    let spec = RepoSpec::new("private", repo.url()).with_auth(BasicAuth {
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

/// A chart archive built by hand: `(path, Some(link target) or None, data)` entries; link
/// targets are written as raw bytes (the `tar` crate refuses hostile ones).
/// One entry: path, `Some((link target, hard))` for a link, data.
type Entry<'a> = (&'a str, Option<(&'a str, bool)>, &'a str);

fn archive(entries: &[Entry<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_mode(0o644);
        match link {
            Some((target, hard)) => {
                h.set_entry_type(if *hard {
                    tar::EntryType::Link
                } else {
                    tar::EntryType::Symlink
                });
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            None => {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Serves `<name>-1.0.0.tgz` from `repo` with a hand-written index entry.
fn publish(repo: &ChartRepo, name: &str, tgz: &[u8]) -> anyhow::Result<()> {
    use sha2::Digest;
    std::fs::write(repo.dir().join(format!("{name}-1.0.0.tgz")), tgz)?;
    let digest = format!("{:x}", sha2::Sha256::digest(tgz));
    std::fs::write(
        repo.dir().join("index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  {name}:\n    - apiVersion: v2\n      name: {name}\n      version: 1.0.0\n      digest: {digest}\n      urls: [{name}-1.0.0.tgz]\n"
        ),
    )?;
    Ok(())
}

#[tokio::test]
async fn archives_with_links_out_of_the_chart_are_rejected() -> anyhow::Result<()> {
    let chart = "apiVersion: v2\nname: evil\nversion: 1.0.0\n";
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  leak: {{ .Files.Get \"leak.txt\" | quote }}\n";
    let repo = ChartRepo::start(&HelmBin::V4.path()).await?;
    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?;
    for (entry, target, hard, says) in [
        (
            "evil/leak.txt",
            "/etc/passwd",
            false,
            "evil/leak.txt is a symlink to /etc/passwd",
        ),
        (
            "evil/leak.txt",
            "../../../../etc/passwd",
            false,
            "evil/leak.txt is a symlink to ../../../../etc/passwd",
        ),
        (
            "evil/leak.txt",
            "/etc/passwd",
            true,
            "entry evil/leak.txt links to /etc/passwd",
        ),
        (
            "evil/leak.txt",
            "other/secret",
            true,
            "entry evil/leak.txt links to other/secret",
        ),
    ] {
        let tgz = archive(&[
            ("evil/Chart.yaml", None, chart),
            ("evil/templates/cm.yaml", None, template),
            ("other/secret", None, "x"),
            (entry, Some((target, hard)), ""),
        ]);
        publish(&repo, "evil", &tgz)?;
        let err = store
            .pull(&repo.url(), "evil", &constraint("1.0.0"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Archive { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(says), "{text}");
        assert!(text.contains("outside the chart directory evil"), "{text}");
        let cached = std::fs::read_dir(cache.path().join("sha256"))
            .map(|d| d.filter_map(|e| e.ok()).count())
            .unwrap_or(0);
        assert_eq!(cached, 0, "nothing enters the cache");
    }

    // A link inside the chart is fine.
    let tgz = archive(&[
        (
            "fine/Chart.yaml",
            None,
            "apiVersion: v2\nname: fine\nversion: 1.0.0\n",
        ),
        ("fine/files/a.txt", None, "a"),
        ("fine/a.txt", Some(("files/a.txt", false)), ""),
        ("fine/b.txt", Some(("fine/files/a.txt", true)), ""),
    ]);
    publish(&repo, "fine", &tgz)?;
    let pulled = store
        .pull(&repo.url(), "fine", &constraint("1.0.0"))
        .await?;
    assert!(pulled.chart_yaml.contains("name: fine"));
    Ok(())
}

#[tokio::test]
async fn partial_downloads_and_corrupt_cached_archives_are_downloaded_again() -> anyhow::Result<()>
{
    use sha2::Digest;
    let (repo, _src) = repo_with_demo_versions().await?;
    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?;
    let pulled = store
        .pull(&repo.url(), "demo", &constraint("1.0.0"))
        .await?;
    assert_eq!(repo.requests("/demo-1.0.0.tgz"), 1);
    let good = std::fs::read(&pulled.path)?;
    let digest_of = |p: &Path| -> anyhow::Result<String> {
        Ok(format!("{:x}", sha2::Sha256::digest(std::fs::read(p)?)))
    };
    // Only the archive itself is in the cache: no temporary file is left.
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let sha_dir = cache.path().join("sha256");
    assert_eq!(names(&sha_dir), [format!("{}.tgz", pulled.digest)]);

    // A partial download left by a killed agent is not an entry: a new store uses the
    // verified archive and ignores the partial file.
    std::fs::write(sha_dir.join(".partial-abc123.tgz"), &good[..good.len() / 2])?;
    let store2 = ChartStore::new(cache.path(), Redactor::new())?;
    assert_eq!(
        store2
            .pull(&repo.url(), "demo", &constraint("1.0.0"))
            .await?,
        pulled
    );
    assert_eq!(repo.requests("/demo-1.0.0.tgz"), 1);

    // A corrupt cached archive (torn write, bad disk): downloaded again and verified, by a new
    // store and by one that had verified it before.
    for (i, s) in [
        ChartStore::new(cache.path(), Redactor::new())?,
        store.clone(),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&pulled.path, &good[..good.len() / 3])?;
        let again = s.pull(&repo.url(), "demo", &constraint("1.0.0")).await?;
        assert_eq!(again, pulled);
        assert_eq!(repo.requests("/demo-1.0.0.tgz"), 2 + i, "downloaded again");
        assert_eq!(digest_of(&pulled.path)?, pulled.digest);
    }
    // Same length, other bytes, and a garbage file: caught too.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    std::fs::write(&pulled.path, &flipped)?;
    let s = ChartStore::new(cache.path(), Redactor::new())?;
    assert_eq!(
        s.pull(&repo.url(), "demo", &constraint("1.0.0")).await?,
        pulled
    );
    assert_eq!(repo.requests("/demo-1.0.0.tgz"), 4);
    assert_eq!(digest_of(&pulled.path)?, pulled.digest);
    Ok(())
}

/// With mirrors, a repository declared at an unreachable URL (HTTP, and `oci://`) is fetched
/// from its mirror, its credentials go to the mirror, and the rewrite is recorded.
#[tokio::test]
async fn repositories_are_fetched_through_the_mirrors() -> anyhow::Result<()> {
    let (repo, src) = repo_with_demo_versions().await?;
    let registry = testkit::oci::OciRegistry::start().await?;
    registry.push(
        &HelmBin::V4.path(),
        &chart_dir(&src.path().join("oci"), "demo", "3.0.0"),
        "charts",
    )?;
    let mirrors = strata_core::mirrors::Mirrors::new(vec![
        strata_core::mirrors::Mirror {
            prefix: "https://charts.example.invalid/platform".into(),
            mirror: repo.url(),
        },
        strata_core::mirrors::Mirror {
            prefix: "oci://registry.example.invalid/acme".into(),
            mirror: registry.url("charts").trim_end_matches("/charts").into(),
        },
    ]);
    let cache = tempfile::tempdir()?;
    let store = ChartStore::new(cache.path(), Redactor::new())?.with_mirrors(mirrors);
    let pulled = store
        .pull(
            "https://charts.example.invalid/platform",
            "demo",
            &constraint("~1.1"),
        )
        .await?;
    assert_eq!(pulled.version, "1.1.0");
    assert!(repo.requests("/index.yaml") > 0);
    // `/platformx` is not under the prefix: fetched as declared, and it fails.
    assert!(
        store
            .pull(
                "https://charts.example.invalid/platformx",
                "demo",
                &constraint("1.0.0")
            )
            .await
            .is_err()
    );
    let oci =
        RepoSpec::new("acme", "oci://registry.example.invalid/acme/charts").with_plain_http(true);
    let pulled = store.pull(&oci, "demo", &constraint("3.0.0")).await?;
    assert_eq!(pulled.version, "3.0.0");
    let rewritten = store.rewritten();
    assert_eq!(rewritten.len(), 2, "{rewritten:?}");
    assert!(rewritten.contains(&(
        "https://charts.example.invalid/platform".to_string(),
        repo.url()
    )));
    assert!(rewritten.contains(&(
        "oci://registry.example.invalid/acme/charts".to_string(),
        registry.url("charts")
    )));
    Ok(())
}
