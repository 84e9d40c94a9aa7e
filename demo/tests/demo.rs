//! The quick-start command itself: `strata-demo --once` starts the simulated cluster, the Git
//! server and the agent, and must end with every layer Ready, the layers strictly one after
//! another (each starts only after the one below is Ready).

use std::process::Stdio;
use std::time::Duration;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn demo(args: &[&str]) -> anyhow::Result<Run> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-demo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output()).await??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Index of the first line containing every one of `parts`.
fn line_of(lines: &[&str], parts: &[&str]) -> Option<usize> {
    lines
        .iter()
        .position(|l| parts.iter().all(|p| l.contains(p)))
}

/// Asserts the demo's progress shows each layer starting only after the previous is Ready.
fn assert_layers_in_order(run: &Run, layers: &[(&str, &str)]) {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let ctx = || format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let mut previous_ready = None;
    for (layer, release) in layers {
        let layer_tag = format!("layer {layer} ");
        let installing = line_of(&lines, &[&layer_tag, release, "Installing"])
            .unwrap_or_else(|| panic!("no Installing line for {release}\n{}", ctx()));
        let ready = line_of(&lines, &[&layer_tag, release, "-> Ready"])
            .unwrap_or_else(|| panic!("no Ready line for {release}\n{}", ctx()));
        let layer_ready = lines
            .iter()
            .position(|l| l.ends_with(&format!("layer {layer}  Ready")))
            .unwrap_or_else(|| panic!("no 'layer {layer}  Ready' line\n{}", ctx()));
        assert!(installing < ready && ready <= layer_ready, "{}", ctx());
        if let Some(prev) = previous_ready {
            assert!(
                prev < installing,
                "{release} started before the layer below was Ready\n{}",
                ctx()
            );
        }
        previous_ready = Some(layer_ready);
    }
    let all = line_of(&lines, &["strata  Progressing -> Ready"])
        .unwrap_or_else(|| panic!("no overall Ready line\n{}", ctx()));
    assert!(previous_ready < Some(all), "{}", ctx());
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("every layer is Ready")),
        "{}",
        ctx()
    );
}

#[tokio::test]
async fn once_ends_ready_with_the_layers_in_order() -> anyhow::Result<()> {
    let run = demo(&["--once"]).await?;
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout
            .contains("planned: layer 1 [cert-manager] layer 2 [linkerd] layer 3 [flagger]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  status:   http://127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert_layers_in_order(
        &run,
        &[
            ("1", "cert-manager/cert-manager"),
            ("2", "linkerd/linkerd"),
            ("3", "flagger-system/flagger"),
        ],
    );
    Ok(())
}

#[tokio::test]
async fn once_with_the_category_model() -> anyhow::Result<()> {
    let run = demo(&["--once", "--profiles-path", "profiles-category.yaml"]).await?;
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_layers_in_order(
        &run,
        &[
            ("10", "cert-manager/cert-manager"),
            ("20", "linkerd/linkerd"),
            ("30", "flagger-system/flagger"),
        ],
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_profile_list_fails_once() -> anyhow::Result<()> {
    let run = demo(&["--once", "--profiles-path", "no-such-list.yaml"]).await?;
    assert_eq!(
        run.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("rejected:"), "{}", run.stdout);
    assert!(run.stdout.contains("no-such-list.yaml"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("every layer is Ready"),
        "{}",
        run.stdout
    );
    Ok(())
}

#[tokio::test]
async fn a_helm_flag_that_is_not_a_program_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let not_helm = dir.path().join("helm");
    std::fs::write(&not_helm, "not a program")?;
    let run = demo(&["--once", "--helm", not_helm.to_str().unwrap()]).await?;
    assert_eq!(
        run.code,
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("is not an executable file"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn ctrl_c_stops_the_demo_and_once_does_not_claim_ready() -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-demo"))
        .args(["--once"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("running").to_string();
    // Interrupt while layer 1 is being installed.
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(240), async {
        use tokio::io::AsyncBufReadExt as _;
        let mut line = String::new();
        while stdout.read_line(&mut line).await? > 0 {
            seen.push_str(&line);
            if line.contains("release cert-manager/cert-manager  Installing") {
                break;
            }
            line.clear();
        }
        anyhow::Ok(())
    })
    .await??;
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?;
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait()).await??;
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest).await?;
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("Ctrl-C: stopping the agent"), "{seen}");
    assert!(!seen.contains("every layer is Ready"), "{seen}");
    Ok(())
}

/// Reads lines from the demo's stdout until one contains `needle`; returns everything read.
async fn read_until(
    stdout: &mut tokio::io::BufReader<tokio::process::ChildStdout>,
    seen: &mut String,
    needle: &str,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).await? == 0 {
                anyhow::bail!("the demo ended before printing {needle:?}:\n{seen}");
            }
            seen.push_str(&line);
            if line.contains(needle) {
                return Ok(());
            }
        }
    })
    .await?
}

#[tokio::test]
async fn a_commit_to_the_working_copy_upgrades_only_that_release() -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-demo"))
        .args(["--interval", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("running").to_string();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut seen = String::new();
    read_until(&mut stdout, &mut seen, "Press Ctrl-C to stop.").await?;
    // The printed hint names the working copy the Git server serves.
    let repo = seen
        .lines()
        .find_map(|l| l.strip_prefix("Edit and commit in "))
        .and_then(|l| l.split(" and the agent").next())
        .unwrap_or_else(|| panic!("no working copy hint:\n{seen}"))
        .to_string();
    let values = std::path::Path::new(&repo).join("values/linkerd.yaml");
    let text = std::fs::read_to_string(&values)?;
    assert!(text.contains("replicas: 1"), "{text}");
    std::fs::write(&values, text.replace("replicas: 1", "replicas: 2"))?;
    let commit = std::process::Command::new("git")
        .args([
            "-C",
            &repo,
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-qam",
            "linkerd: two destination replicas",
        ])
        .status()?;
    assert!(commit.success());
    let before = seen.len();
    read_until(
        &mut stdout,
        &mut seen,
        "release linkerd/linkerd  Waiting -> Ready (upgrade, helm revision 2)",
    )
    .await?;
    read_until(&mut stdout, &mut seen, "strata  Progressing -> Ready").await?;
    let after = &seen[before..];
    assert!(
        after.contains("release cert-manager/cert-manager  Ready (none, helm revision 1)"),
        "{after}"
    );
    assert!(
        after.contains("release flagger-system/flagger  Pending -> Ready (none, helm revision 1)"),
        "{after}"
    );
    assert!(!after.contains("cert-manager  Installing"), "{after}");
    assert!(!after.contains("flagger  Installing"), "{after}");

    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?;
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait()).await??;
    assert_eq!(status.code(), Some(0), "{seen}");
    Ok(())
}
