//! The progress board on a real terminal: `strata run` and `strata status --watch` run under
//! `script` (util-linux, part of every Debian: it gives the command a pseudo-terminal), and
//! the board (a progress line per layer, redrawn in place) is in what the terminal received,
//! with the logs of `strata run` above it; with `--log-format json` there is no board.

use std::time::Duration;

use testkit::Scenario;
use testkit::agent::free_port;
use testkit::strata_bin;

const LONG: Duration = Duration::from_secs(150);

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Run `strata ARGS` on a pseudo-terminal of 200 columns; returns (exit code, what the
/// terminal received).
async fn on_terminal(args: &[String]) -> anyhow::Result<(Option<i32>, String)> {
    let command = std::iter::once(strata_bin!().display().to_string())
        .chain(args.iter().cloned())
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &command, "/dev/null"])
        // The pseudo-terminal has no size here: the board falls back to $COLUMNS.
        .env("COLUMNS", "200")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(LONG, cmd.output()).await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn run_and_status_watch_draw_the_board_on_a_terminal() -> anyhow::Result<()> {
    let s = Scenario::builder(strata_bin!())
        .mesh_values("{readyAfter: 3s}")
        .start()
        .await?;
    let port = free_port();
    let mut args = vec!["run".to_string()];
    args.extend(s.args(&["--once", "--listen", &format!("127.0.0.1:{port}")]));
    let (code, screen) = on_terminal(&args).await?;
    assert_eq!(code, Some(0), "{screen}");
    // The board, redrawn in place (cursor up and clear), ends with every layer Ready.
    assert!(screen.contains("\x1b[J"), "{screen:?}");
    let last = &screen[screen.rfind("\x1b[J").unwrap()..];
    for line in [
        "strata  Ready  revision ",
        "layer 1  [####################] 1/1  Ready",
        "layer 2  [####################] 1/1  Ready",
        "layer 3  [####################] 1/1  Ready",
    ] {
        assert!(screen.contains(line), "{line:?} in {screen:?}");
    }
    assert!(
        last.contains("layer 3  [####"),
        "the board is last: {last:?}"
    );
    // A layer seen in progress on the way.
    assert!(
        screen.contains("Progressing  mesh/mesh"),
        "mesh in progress: {screen:?}"
    );
    // The logs are there too, above the board.
    assert!(screen.contains("revision applied"), "{screen:?}");

    // JSON logs: no board.
    s.commit_mesh_values("{readyAfter: 1s, greeting: json}", "json logs")?;
    let mut args = vec![
        "--log-format".to_string(),
        "json".to_string(),
        "run".to_string(),
    ];
    args.extend(s.args(&["--once", "--listen", &format!("127.0.0.1:{}", free_port())]));
    let (code, screen) = on_terminal(&args).await?;
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains("[####"), "{screen:?}");
    assert!(screen.contains("\"revision applied"), "{screen:?}");

    // strata status --watch on a terminal, against a running agent.
    s.commit_mesh_values("{readyAfter: 3s, greeting: watch}", "watched")?;
    let agent = s.agent(&[], &[])?;
    let url = format!("http://127.0.0.1:{}", agent.port);
    let (code, screen) = on_terminal(&[
        "status".into(),
        "--url".into(),
        url,
        "--watch".into(),
        "--wait".into(),
        "--timeout".into(),
        "120s".into(),
    ])
    .await?;
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("layer 3  [####################] 1/1  Ready"),
        "{screen:?}"
    );
    agent.stop().await?;
    Ok(())
}
