//! strata's Git source against a real Git server (git http-backend over HTTP, git daemon),
//! a local path and file:// URLs.

use strata::executor::process::Redactor;
use strata::source::auth::BasicAuth;
use strata::source::git::{FetchFailure, GitAuth, GitSource};
use testkit::{GitServer, TestRepo};

fn source(url: &str, reference: &str, cache: &std::path::Path) -> GitSource {
    GitSource::new(url, reference, cache, GitAuth::default(), Redactor::new())
}

#[tokio::test]
async fn http_branch_fetch_sees_new_commits_and_reads_files() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("profiles")?;
    repo.write("profiles.yaml", "v: 1\n")?;
    repo.write("charts/demo/Chart.yaml", "name: demo\n")?;
    let first = repo.commit("first")?;
    let cache = tempfile::tempdir()?;
    let src = source(&server.http_url("profiles"), "main", cache.path());

    let rev = src.fetch().await?;
    assert_eq!(rev.commit, first);
    assert_eq!(
        src.read_file(&rev.commit, "profiles.yaml")
            .await?
            .as_deref(),
        Some(&b"v: 1\n"[..])
    );
    assert_eq!(src.read_file(&rev.commit, "missing.yaml").await?, None);
    assert_eq!(
        src.read_file(&rev.commit, "/charts/demo/Chart.yaml")
            .await?
            .as_deref(),
        Some(&b"name: demo\n"[..])
    );
    assert!(src.read_file(&rev.commit, "../x").await.is_err());

    let dir = src.checkout(&rev.commit).await?;
    assert_eq!(
        std::fs::read_to_string(dir.join("charts/demo/Chart.yaml"))?,
        "name: demo\n"
    );
    // Checking out again reuses the directory.
    assert_eq!(src.checkout(&rev.commit).await?, dir);

    repo.write("profiles.yaml", "v: 2\n")?;
    let second = repo.commit("second")?;
    let rev2 = src.fetch().await?;
    assert_eq!(rev2.commit, second);
    assert_eq!(
        src.read_file(&second, "profiles.yaml").await?.as_deref(),
        Some(&b"v: 2\n"[..])
    );
    // The old commit stays readable from the cache.
    assert_eq!(
        src.read_file(&first, "profiles.yaml").await?.as_deref(),
        Some(&b"v: 1\n"[..])
    );
    Ok(())
}

#[tokio::test]
async fn tags_full_and_short_commits_resolve() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("r")?;
    repo.write("f", "one")?;
    let c1 = repo.commit("one")?;
    repo.tag("v1.0.0")?;
    repo.write("f", "two")?;
    let c2 = repo.commit("two")?;
    repo.lightweight_tag("light")?;
    repo.write("f", "three")?;
    let c3 = repo.commit("three")?;
    repo.branch("release")?;
    repo.write("f", "four")?;
    let c4 = repo.commit("four")?;
    repo.checkout("main")?;

    let url = server.http_url("r");
    let cache = tempfile::tempdir()?;
    // Every source shares one cache directory, as the agent's would across ref changes.
    for (reference, want) in [
        ("v1.0.0", &c1),
        ("light", &c2),
        ("main", &c3),
        ("release", &c4),
        (c1.as_str(), &c1),
        (&c2[..10], &c2),
    ] {
        let rev = source(&url, reference, cache.path()).fetch().await?;
        assert_eq!(&rev.commit, want, "ref {reference}");
    }
    let err = source(&url, "no-such-branch", cache.path())
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(
        err.fetch_failure(),
        Some(FetchFailure::RefNotFound),
        "{err}"
    );
    let err = source(
        &url,
        "0123456789abcdef0123456789abcdef01234567",
        cache.path(),
    )
    .fetch()
    .await
    .unwrap_err();
    assert_eq!(
        err.fetch_failure(),
        Some(FetchFailure::RefNotFound),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn git_protocol_local_path_and_file_url() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("d")?;
    repo.write("a", "daemon")?;
    let c = repo.commit("c")?;
    let cache = tempfile::tempdir()?;
    let rev = source(&server.git_url("d")?, "main", cache.path())
        .fetch()
        .await?;
    assert_eq!(rev.commit, c);

    let local = TestRepo::new()?;
    local.write("profiles.yaml", "local\n")?;
    let lc = local.commit("local")?;
    let path = local.path().to_str().unwrap().to_string();
    for url in [path.clone(), format!("file://{path}")] {
        let cache = tempfile::tempdir()?;
        let src = source(&url, "main", cache.path());
        let rev = src.fetch().await?;
        assert_eq!(rev.commit, lc, "{url}");
        assert_eq!(
            src.read_file(&lc, "profiles.yaml").await?.as_deref(),
            Some(&b"local\n"[..])
        );
    }
    Ok(())
}

#[tokio::test]
async fn server_down_is_a_typed_error_and_recovery_works() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("r")?;
    repo.write("a", "1")?;
    let c = repo.commit("c")?;
    let cache = tempfile::tempdir()?;
    let src = source(&server.http_url("r"), "main", cache.path());
    assert_eq!(src.fetch().await?.commit, c);

    server.stop();
    let err = src.fetch().await.unwrap_err();
    assert_eq!(
        err.fetch_failure(),
        Some(FetchFailure::Unreachable),
        "{err}"
    );
    // What was fetched before is still readable while the server is down.
    assert!(src.read_file(&c, "a").await?.is_some());

    server.restart().await?;
    repo.write("a", "2")?;
    let c2 = repo.commit("c2")?;
    assert_eq!(src.fetch().await?.commit, c2);
    Ok(())
}

#[tokio::test]
async fn basic_auth_works_and_never_leaks() -> anyhow::Result<()> {
    let server = GitServer::start_with_auth("alice", "Sup3rSecretPw").await?;
    let repo = server.create_repo("private")?;
    repo.write("a", "1")?;
    let c = repo.commit("c")?;
    let url = server.http_url("private");

    let cache = tempfile::tempdir()?;
    let err = source(&url, "main", cache.path())
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(
        err.fetch_failure(),
        Some(FetchFailure::Authentication),
        "{err}"
    );

    let wrong = GitAuth {
        basic: Some(BasicAuth {
            username: "alice".into(),
            password: "WrongPassword1".into(),
        }),
        ..Default::default()
    };
    let err = GitSource::new(&url, "main", cache.path(), wrong, Redactor::new())
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(err.fetch_failure(), Some(FetchFailure::Authentication));
    assert!(!err.to_string().contains("WrongPassword1"), "{err}");

    let good = GitAuth {
        basic: Some(BasicAuth {
            username: "alice".into(),
            password: "Sup3rSecretPw".into(),
        }),
        ..Default::default()
    };
    let src = GitSource::new(&url, "main", cache.path(), good, Redactor::new());
    assert_eq!(src.fetch().await?.commit, c);

    // Credentials written into the URL are redacted from what strata shows.
    let with_user = url.replace("http://", "http://alice:Sup3rSecretPw@");
    let src = GitSource::new(
        &with_user,
        "nope",
        cache.path(),
        GitAuth::default(),
        Redactor::new(),
    );
    let err = src.fetch().await.unwrap_err();
    assert!(!err.to_string().contains("Sup3rSecretPw"), "{err}");
    assert!(!src.display_url().contains("Sup3rSecretPw"));
    Ok(())
}

#[tokio::test]
async fn a_force_pushed_branch_is_followed() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("r")?;
    repo.write("a", "1")?;
    let c1 = repo.commit("one")?;
    repo.write("a", "2")?;
    let c2 = repo.commit("two")?;
    let cache = tempfile::tempdir()?;
    let src = source(&server.http_url("r"), "main", cache.path());
    assert_eq!(src.fetch().await?.commit, c2);
    // Rewrite history: main goes back to the first commit.
    testkit::git::git(repo.path(), &["reset", "--quiet", "--hard", &c1])?;
    assert_eq!(src.fetch().await?.commit, c1);
    Ok(())
}

#[tokio::test]
async fn https_with_a_private_ca() -> anyhow::Result<()> {
    let server = GitServer::start_tls().await?;
    let repo = server.create_repo("secure")?;
    repo.write("a", "1")?;
    let c = repo.commit("c")?;
    let url = server.http_url("secure");
    assert!(url.starts_with("https://"));
    let cache = tempfile::tempdir()?;

    let err = source(&url, "main", cache.path())
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(err.fetch_failure(), Some(FetchFailure::Tls), "{err}");

    let ca = cache.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem().unwrap())?;
    let src = source(&url, "main", cache.path()).with_ca_file(&ca);
    assert_eq!(src.fetch().await?.commit, c);
    Ok(())
}

#[tokio::test]
async fn old_checkouts_are_pruned() -> anyhow::Result<()> {
    let repo = TestRepo::new()?;
    let cache = tempfile::tempdir()?;
    let src = source(repo.path().to_str().unwrap(), "main", cache.path());
    let mut dirs = Vec::new();
    for i in 0..(strata::source::git::KEEP_CHECKOUTS + 2) {
        repo.write("n", i.to_string())?;
        repo.commit(&format!("c{i}"))?;
        let rev = src.fetch().await?;
        dirs.push(src.checkout(&rev.commit).await?);
        // Modification times order the checkouts; keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let kept: Vec<bool> = dirs.iter().map(|d| d.is_dir()).collect();
    assert_eq!(
        kept.iter().filter(|k| **k).count(),
        strata::source::git::KEEP_CHECKOUTS
    );
    assert!(!kept[0] && !kept[1], "the oldest went: {kept:?}");
    assert!(kept.last().copied().unwrap());
    assert!(src.checkout("main").await.is_err(), "only full SHAs");
    Ok(())
}

/// The lock files a git killed in the middle of a fetch leaves in the cache.
const STALE_LOCKS: &[&str] = &[
    "shallow.lock",
    "index.lock",
    "HEAD.lock",
    "config.lock",
    "packed-refs.lock",
    "refs/strata/target.lock",
    "refs/heads/main.lock",
];

fn plant(cache: &std::path::Path, lock: &str) -> anyhow::Result<()> {
    let path = cache.join(lock);
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, "")?;
    Ok(())
}

#[tokio::test]
async fn stale_lock_files_of_a_killed_git_are_removed() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("r")?;
    repo.write("a", "1")?;
    let c1 = repo.commit("c1")?;
    let url = server.http_url("r");
    for lock in STALE_LOCKS {
        // Before the first fetch: a cache left by an agent killed during its first fetch.
        let cache = tempfile::tempdir()?;
        let src = source(&url, "main", cache.path());
        std::fs::create_dir_all(src.cache_path())?;
        testkit::git::git(src.cache_path(), &["init", "--bare", "--quiet", "."])?;
        plant(src.cache_path(), lock)?;
        assert_eq!(
            src.fetch().await?.commit,
            c1,
            "{lock} before the first fetch"
        );
        assert!(!src.cache_path().join(lock).exists(), "{lock} removed");

        // After a successful fetch, by the same source (a fetch killed at a timeout) and by a
        // new one (the restarted agent) — shallow and full (abbreviated commit) fetches.
        for (reference, fresh) in [("main", false), ("main", true), (&c1[..10], true)] {
            plant(src.cache_path(), lock)?;
            let src = if fresh {
                source(&url, reference, cache.path())
            } else {
                src.clone()
            };
            assert_eq!(src.fetch().await?.commit, c1, "{lock} then {reference}");
            assert!(!src.cache_path().join(lock).exists(), "{lock} removed");
            assert_eq!(
                src.read_file(&c1, "a").await?.as_deref(),
                Some(&b"1"[..]),
                "{lock}"
            );
        }
    }
    // The agent's own git calls never race the removal: concurrent fetches on one cache.
    let cache = tempfile::tempdir()?;
    let src = source(&url, "main", cache.path());
    let other = source(&url, "main", cache.path());
    let fetches: Vec<_> = (0..4)
        .map(|i| {
            let s = if i % 2 == 0 {
                src.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { s.fetch().await })
        })
        .collect();
    for f in fetches {
        assert_eq!(f.await??.commit, c1);
    }
    Ok(())
}

/// Packs the cache's objects and truncates the pack (a disk or a kill mangled it).
fn truncate_pack(cache: &std::path::Path) -> anyhow::Result<()> {
    testkit::git::git(cache, &["repack", "-a", "-d", "-q"])?;
    let pack = std::fs::read_dir(cache.join("objects/pack"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .expect("a pack");
    let len = std::fs::metadata(&pack)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)?
        .set_len(len / 2)?;
    Ok(())
}

#[tokio::test]
async fn a_corrupt_cache_is_cloned_again() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("r")?;
    repo.write("a", "1")?;
    repo.write("b/c.yaml", "x: 1\n")?;
    let c1 = repo.commit("c1")?;
    let url = server.http_url("r");

    // A truncated pack before the first fetch of this process (left by the previous one).
    let cache = tempfile::tempdir()?;
    source(&url, "main", cache.path()).fetch().await?;
    let src = source(&url, "main", cache.path());
    truncate_pack(src.cache_path())?;
    assert_eq!(src.fetch().await?.commit, c1);
    assert_eq!(src.read_file(&c1, "a").await?.as_deref(), Some(&b"1"[..]));
    testkit::git::git(src.cache_path(), &["fsck", "--no-dangling"])?;

    // A truncated pack after a successful fetch, then a new commit.
    truncate_pack(src.cache_path())?;
    repo.write("a", "2")?;
    let c2 = repo.commit("c2")?;
    assert_eq!(src.fetch().await?.commit, c2);
    assert_eq!(src.read_file(&c2, "a").await?.as_deref(), Some(&b"2"[..]));
    assert_eq!(
        src.read_file(&c2, "b/c.yaml").await?.as_deref(),
        Some(&b"x: 1\n"[..])
    );

    // A truncated pack seen by a read: the read fails, the next fetch repairs the cache.
    truncate_pack(src.cache_path())?;
    let _ = src.read_file(&c2, "a").await;
    assert_eq!(src.fetch().await?.commit, c2);
    assert_eq!(src.read_file(&c2, "a").await?.as_deref(), Some(&b"2"[..]));
    let dir = src.checkout(&c2).await?;
    assert_eq!(std::fs::read_to_string(dir.join("a"))?, "2");

    // Not a repository any more (HEAD and config gone), and an emptied loose object.
    std::fs::remove_file(src.cache_path().join("HEAD"))?;
    std::fs::write(src.cache_path().join("config"), "garbage [\n")?;
    let src = source(&url, "main", cache.path());
    assert_eq!(src.fetch().await?.commit, c2);
    let loose = src
        .cache_path()
        .join("objects")
        .join(&c2[..2])
        .join(&c2[2..]);
    if loose.is_file() {
        std::fs::write(&loose, "")?;
    }
    let src = source(&url, "main", cache.path());
    assert_eq!(src.fetch().await?.commit, c2);
    assert_eq!(src.read_file(&c2, "a").await?.as_deref(), Some(&b"2"[..]));
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_are_followed_inside_the_repository_only() -> anyhow::Result<()> {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir()?;
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "SENTINEL-7f3a")?;
    let server = GitServer::start().await?;
    let repo = server.create_repo("r")?;
    repo.write("values/common.yaml", "a: 1\n")?;
    let p = repo.path();
    std::fs::create_dir_all(p.join("clusters/prod"))?;
    symlink(
        "../../values/common.yaml",
        p.join("clusters/prod/values.yaml"),
    )?;
    symlink("prod/values.yaml", p.join("clusters/chain.yaml"))?;
    symlink("../values", p.join("clusters/values-dir"))?;
    symlink(&secret, p.join("clusters/leak.yaml"))?;
    symlink("../../../../etc/hostname", p.join("clusters/up.yaml"))?;
    symlink("nope.yaml", p.join("clusters/dangling.yaml"))?;
    symlink("loop2.yaml", p.join("clusters/loop1.yaml"))?;
    symlink("loop1.yaml", p.join("clusters/loop2.yaml"))?;
    let c = repo.commit("links")?;
    let cache = tempfile::tempdir()?;
    let src = source(&server.http_url("r"), "main", cache.path());
    assert_eq!(src.fetch().await?.commit, c);

    for ok in [
        "clusters/prod/values.yaml",
        "clusters/chain.yaml",
        "clusters/values-dir/common.yaml",
    ] {
        assert_eq!(
            src.read_file(&c, ok).await?.as_deref(),
            Some(&b"a: 1\n"[..]),
            "{ok}"
        );
    }
    let fault = |path: &'static str| {
        let src = src.clone();
        let c = c.clone();
        async move {
            let e = src.read_file(&c, path).await.unwrap_err();
            assert!(e.is_revision_problem(), "{path}: {e}");
            e.to_string()
        }
    };
    let e = fault("clusters/leak.yaml").await;
    assert!(
        e.contains(&format!(
            "clusters/leak.yaml is a symlink to {}",
            secret.display()
        )),
        "{e}"
    );
    assert!(e.contains("outside the repository"), "{e}");
    assert!(!e.contains("SENTINEL"), "{e}");
    let e = fault("clusters/up.yaml").await;
    assert!(
        e.contains("clusters/up.yaml is a symlink to ../../../../etc/hostname")
            && e.contains("outside the repository"),
        "{e}"
    );
    let e = fault("clusters/dangling.yaml").await;
    assert!(e.contains("clusters/nope.yaml does not exist"), "{e}");
    let e = fault("clusters/loop1.yaml").await;
    assert!(e.contains("symlink loop"), "{e}");
    let e = fault("clusters/values-dir").await;
    assert!(e.contains("is a directory"), "{e}");
    assert_eq!(src.read_file(&c, "clusters/missing.yaml").await?, None);

    // The checkout has the links as links (checked where a chart uses them).
    let dir = src.checkout(&c).await?;
    assert_eq!(std::fs::read_link(dir.join("clusters/leak.yaml"))?, secret);
    Ok(())
}

/// An HTTPS Git server requiring a client certificate (mTLS): without one git cannot fetch
/// (an error that says so); with `with_client_cert` (git's http.sslCert/http.sslKey) it can.
#[tokio::test]
async fn https_with_a_client_certificate() -> anyhow::Result<()> {
    let server = GitServer::start_mtls().await?;
    let repo = server.create_repo("secure")?;
    repo.write("a", "1")?;
    let c = repo.commit("c")?;
    let url = server.http_url("secure");
    let cache = tempfile::tempdir()?;
    let ca = cache.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem().unwrap())?;

    let err = source(&url, "main", cache.path())
        .with_ca_file(&ca)
        .fetch()
        .await
        .unwrap_err();
    eprintln!("without a client certificate: {err}");
    assert_eq!(err.fetch_failure(), Some(FetchFailure::Tls), "{err}");

    let client = server.client_cert().unwrap();
    let (cert, key) = (cache.path().join("tls.crt"), cache.path().join("tls.key"));
    std::fs::write(&cert, &client.cert_pem)?;
    std::fs::write(&key, &client.key_pem)?;
    let src = source(&url, "main", cache.path())
        .with_ca_file(&ca)
        .with_client_cert(&cert, &key);
    assert_eq!(src.fetch().await?.commit, c);
    Ok(())
}
