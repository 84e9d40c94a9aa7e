//! The testkit servers work with the real git and helm clients.

use testkit::{ChartRepo, GitServer, HelmBin, TestRepo, git::git};

fn clone(url: &str, into: &std::path::Path) -> anyhow::Result<String> {
    git(
        into.parent().unwrap(),
        &["clone", "--quiet", url, into.to_str().unwrap()],
    )?;
    git(into, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_http_and_git_protocol_and_survives_restart() -> anyhow::Result<()> {
    let server = GitServer::start().await?;
    let repo = server.create_repo("profiles")?;
    repo.write("profiles.yaml", "kind: ProfileList\n")?;
    let sha = repo.commit("first")?;
    let work = tempfile::tempdir()?;

    let url = server.http_url("profiles");
    let got = tokio::task::spawn_blocking({
        let dest = work.path().join("http");
        move || clone(&url, &dest)
    })
    .await??;
    assert_eq!(got, sha);
    assert!(server.http_requests() >= 2);

    let url = server.git_url("profiles")?;
    let got = tokio::task::spawn_blocking({
        let dest = work.path().join("daemon");
        move || clone(&url, &dest)
    })
    .await??;
    assert_eq!(got, sha);

    server.stop();
    let url = server.http_url("profiles");
    let down = tokio::task::spawn_blocking({
        let dest = work.path().join("down");
        let url = url.clone();
        move || clone(&url, &dest)
    })
    .await?;
    assert!(down.is_err(), "clone must fail while the server is stopped");
    server.restart().await?;
    let got = tokio::task::spawn_blocking({
        let dest = work.path().join("again");
        move || clone(&url, &dest)
    })
    .await??;
    assert_eq!(got, sha);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_basic_auth_is_enforced() -> anyhow::Result<()> {
    let server = GitServer::start_with_auth("alice", "s3cret").await?;
    let repo = server.create_repo("r")?;
    repo.write("a", "1")?;
    let sha = repo.commit("c")?;
    let work = tempfile::tempdir()?;
    let anon = server.http_url("r");
    let with = anon.replace("http://", "http://alice:s3cret@");
    let res = tokio::task::spawn_blocking({
        let dest = work.path().join("anon");
        move || clone(&anon, &dest)
    })
    .await?;
    assert!(res.is_err());
    let got = tokio::task::spawn_blocking({
        let dest = work.path().join("auth");
        move || clone(&with, &dest)
    })
    .await??;
    assert_eq!(got, sha);
    Ok(())
}

#[test]
fn test_repo_commits_are_reproducible_and_tags_work() -> anyhow::Result<()> {
    let a = TestRepo::new()?;
    let b = TestRepo::new()?;
    for r in [&a, &b] {
        r.write("x/y.txt", "hello")?;
    }
    let sa = a.commit("m")?;
    assert_eq!(sa, b.commit("m")?);
    a.tag("v1")?;
    a.write("x/y.txt", "changed")?;
    let s2 = a.commit("m2")?;
    assert_ne!(s2, sa);
    assert_eq!(git(a.path(), &["rev-list", "-n1", "v1"])?, sa);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_repo_serves_helm_packaged_charts_and_injects_failures() -> anyhow::Result<()> {
    let chart = tempfile::tempdir()?;
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 1.2.3\n",
    )?;
    let repo = ChartRepo::with_charts(&HelmBin::V4.path(), &[chart.path()]).await?;
    let index = reqwest_get(&format!("{}/index.yaml", repo.url())).await?;
    assert_eq!(index.0, 200);
    let text = String::from_utf8(index.1)?;
    assert!(text.contains("demo"), "{text}");
    assert!(
        text.contains(&format!("{}/demo-1.2.3.tgz", repo.url())),
        "{text}"
    );
    assert!(text.contains("digest:"));
    repo.fail_next(1);
    assert_eq!(
        reqwest_get(&format!("{}/demo-1.2.3.tgz", repo.url()))
            .await?
            .0,
        500
    );
    let tgz = reqwest_get(&format!("{}/demo-1.2.3.tgz", repo.url())).await?;
    assert_eq!(tgz.0, 200);
    assert_eq!(&tgz.1[..2], &[0x1f, 0x8b]);
    assert_eq!(repo.requests("/demo-1.2.3.tgz"), 2);
    assert_eq!(
        reqwest_get(&format!("{}/../etc/passwd", repo.url()))
            .await?
            .0,
        404
    );
    Ok(())
}

/// A minimal HTTP/1.1 GET over a TCP stream (no client library needed here).
async fn reqwest_get(url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse()?;
    let mut body = buf[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}
