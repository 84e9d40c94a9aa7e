//! `strata status`, the real binary, against a real `strata run` installing the layered stack
//! on kubesim: read from the status API (`--url`) and from the status ConfigMap
//! (`--kubeconfig`), as text and as JSON (`-o json`), once, `--wait` and `--watch`; the exit
//! codes (0 Ready, 1 Stalled or rejected, 2 Progressing or timed out, 3 unreadable) and the
//! messages when the agent cannot be reached or the ConfigMap is missing.

use std::time::Duration;

use testkit::Scenario;
use testkit::agent::{Finished, free_port, release, run_strata};
use testkit::cluster::AGENT_NS;
use testkit::scenario::layered_profiles;
use testkit::strata_bin;

const LONG: Duration = Duration::from_secs(120);

async fn status(args: &[&str]) -> anyhow::Result<Finished> {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    run_strata(strata_bin!(), &all, &[], LONG + Duration::from_secs(30)).await
}

fn check(out: &Finished, code: i32, what: &str) {
    assert_eq!(
        out.code,
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

#[tokio::test]
async fn status_reads_the_api_and_the_configmap_and_waits_for_ready() -> anyhow::Result<()> {
    let s = Scenario::builder(strata_bin!())
        .mesh_values("{readyAfter: 15s}")
        .start()
        .await?;
    let kubeconfig = s.kubeconfig.display().to_string();

    // Nothing there yet: both sources fail with a message saying what to do (exit 3).
    let out = status(&["--url", &format!("http://127.0.0.1:{}", free_port())]).await?;
    check(&out, 3, "no agent");
    assert!(
        out.stderr.contains("cannot reach the strata status API")
            && out.stderr.contains("--listen address"),
        "{}",
        out.stderr
    );
    let out = status(&["--kubeconfig", &kubeconfig, "--namespace", "nowhere"]).await?;
    check(&out, 3, "no ConfigMap");
    assert!(
        out.stderr
            .contains("ConfigMap nowhere/strata-status does not exist")
            && out.stderr.contains("--namespace"),
        "{}",
        out.stderr
    );
    let out = status(&[]).await?;
    check(&out, 3, "no source");
    assert!(out.stderr.contains("--url") && out.stderr.contains("--kubeconfig"));

    let mut agent = s.agent(&[], &[])?;
    let url = format!("http://127.0.0.1:{}", agent.port);
    agent
        .wait_status("mesh waiting for its Deployment", LONG, |st| {
            release(st, "mesh").is_some_and(|r| r["phase"] == "Waiting")
        })
        .await?;

    // Mid-install: Progressing (2), as the layered view and as JSON.
    let out = status(&["--url", &url]).await?;
    check(&out, 2, "mid-install text");
    assert!(
        out.stdout.starts_with("strata  Progressing\nrevision "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "layer 1  Ready  1/1 ready\n  certs/certs Ready (install, helm revision 1)\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("layer 2  Progressing  0/1 ready\n  mesh/mesh Waiting"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("layer 3  Pending  0/1 ready\n"),
        "{}",
        out.stdout
    );
    let out = status(&["--url", &url, "-o", "json"]).await?;
    check(&out, 2, "mid-install json");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(doc["phase"], "Progressing", "{doc:#}");
    assert_eq!(doc["layers"].as_array().map(Vec::len), Some(3), "{doc:#}");

    // --wait with a short timeout: still Progressing (2), said on stderr.
    let out = status(&["--url", &url, "--wait", "--timeout", "1s"]).await?;
    check(&out, 2, "--wait timing out");
    assert!(
        out.stderr.contains("Progressing after waiting 1s"),
        "{}",
        out.stderr
    );

    // --watch --wait, not a terminal: a line per change, until Ready (0).
    let out = status(&["--url", &url, "--watch", "--wait", "--timeout", "90s"]).await?;
    check(&out, 0, "--watch --wait until Ready");
    for line in [
        "layer 2  release mesh/mesh  Waiting -> Ready (install, helm revision 1)",
        "layer 2  Ready",
        "layer 3  Ready",
        "strata  Progressing -> Ready",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in:\n{}", out.stdout);
    }
    assert!(
        out.stdout.lines().all(|l| l.starts_with('[')),
        "timestamped lines only: {}",
        out.stdout
    );
    // Printed only on change: no line twice in a row.
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, r)| r))
        .collect();
    assert!(lines.windows(2).all(|w| w[0] != w[1]), "{}", out.stdout);

    // Ready: 0 from the API and from the ConfigMap, text and JSON, once and --wait.
    let out = status(&["--url", &url]).await?;
    check(&out, 0, "Ready text");
    assert!(out.stdout.starts_with("strata  Ready\n"), "{}", out.stdout);
    let cm_args = ["--kubeconfig", kubeconfig.as_str(), "--namespace", AGENT_NS];
    let mut wait = cm_args.to_vec();
    wait.extend(["--wait", "--timeout", "60s"]);
    let out = status(&wait).await?;
    check(&out, 0, "ConfigMap --wait");
    assert!(out.stdout.starts_with("strata  Ready\n"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("layer 3  Ready  1/1 ready\n  canary/canary Ready"),
        "{}",
        out.stdout
    );
    let mut json = cm_args.to_vec();
    json.extend(["-o", "json"]);
    let out = status(&json).await?;
    check(&out, 0, "ConfigMap json");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(doc["phase"], "Ready", "{doc:#}");
    assert_eq!(
        doc,
        s.configmap_status().expect("the ConfigMap"),
        "the ConfigMap's JSON as is"
    );
    // --context names the kubeconfig's context; an unknown one is an error.
    let mut ctx = cm_args.to_vec();
    ctx.extend(["--context", "no-such-context"]);
    let out = status(&ctx).await?;
    check(&out, 3, "unknown context");
    assert!(out.stderr.contains("no-such-context"), "{}", out.stderr);

    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn status_exits_1_for_a_rejected_revision_and_a_stalled_release() -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), testkit::HelmBin::V4, "{}").await?;
    let mut agent = s.agent(&[], &[])?;
    let url = format!("http://127.0.0.1:{}", agent.port);
    let out = status(&["--url", &url, "--wait", "--timeout", "90s"]).await?;
    check(&out, 0, "Ready");

    // A profile list with an unknown field: rejected, 1 at once with --wait (no waiting).
    let list = layered_profiles(&s.charts.url(), "{}").replace(
        "    namespace: certs\n",
        "    namespace: certs\n    colour: blue\n",
    );
    s.repo.write("profiles.yaml", list)?;
    let bad = s.repo.commit("an unknown field")?;
    agent
        .wait_status("the revision rejected", LONG, |st| {
            st["rejectedRevision"]["commit"] == bad.as_str()
        })
        .await?;
    let out = status(&["--url", &url, "--wait", "--timeout", "60s"]).await?;
    check(&out, 1, "rejected");
    assert!(
        out.stdout.contains("strata  Degraded (Rejected)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("revision {} rejected:", &bad[..12]))
            && out.stdout.contains("colour"),
        "{}",
        out.stdout
    );
    let out = status(&[
        "--kubeconfig",
        &s.kubeconfig.display().to_string(),
        "--wait",
        "--timeout",
        "60s",
    ])
    .await?;
    check(&out, 1, "rejected, from the ConfigMap (default namespace)");

    // A chart whose template does not parse: Stalled, 1.
    let broken = s.commit_broken_chart()?;
    agent
        .wait_status("the broken chart's revision", LONG, |st| {
            st["revision"]["commit"] == broken.as_str()
        })
        .await?;
    let out = status(&["--url", &url, "--watch", "--wait", "--timeout", "90s"]).await?;
    check(&out, 1, "stalled");
    assert!(out.stdout.contains("broken/broken"), "{}", out.stdout);
    let out = status(&["--url", &url, "-o", "json"]).await?;
    check(&out, 1, "stalled json");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(
        release(&doc, "broken").unwrap()["action"],
        "stalled",
        "{doc:#}"
    );
    agent.stop().await?;
    Ok(())
}
