//! The status web page (`GET /`) in a real browser: headless Chromium loads it from an agent
//! installing the layered stack on kubesim, once while the mesh layer waits for its slow
//! Deployment and once after every layer is Ready. The DOM after the page's script ran names
//! the layer rows and the not-ready resource; the page as served (what a browser shows with
//! JavaScript off) has the same rows. A sentinel planted in values read from a Kubernetes Secret (`valuesFrom`)
//! appears in no DOM and no page body. Last a revision with an unknown field (named with
//! markup) is rejected: the page lists the problem, escaped. Screenshots are written under
//! `$CARGO_TARGET_TMPDIR/e2e-page/`.
//!
//! Needs Chromium (`chromium` or `chromium-browser` on PATH, or `$CHROMIUM`): the test fails
//! with a message saying to install it. CI installs it (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use testkit::Scenario;
use testkit::agent::{http_get, release};
use testkit::cluster::AGENT_NS;
use testkit::scenario::layered_profiles;
use testkit::strata_bin;

const SENTINEL: &str = "S3NT1NEL-page";
const VALUES_SECRET: &str = "mesh-values";
const LONG: Duration = Duration::from_secs(120);

/// The Chromium binary, or a failure that says how to install it.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
        {
            return p;
        }
    }
    panic!(
        "e2e_page needs Chromium and found neither `chromium` nor `chromium-browser` on PATH \
         (nor $CHROMIUM): install it, e.g. `apt-get install -y chromium` on Debian (.ci/run does)"
    );
}

/// Chromium in headless mode on `url` with `args` (after its own); returns stdout.
async fn browse(url: &str, args: &[String]) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=2000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("chromium did not finish within 90 s on {url}"))??;
    anyhow::ensure!(
        out.status.success(),
        "chromium {args:?} {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The DOM after the page's script ran (the virtual time budget lets it poll `/status`).
async fn dom(url: &str) -> anyhow::Result<String> {
    browse(url, &["--dump-dom".to_string()]).await
}

/// A 1200x900 screenshot of the page into `file`.
async fn screenshot(url: &str, file: &Path) -> anyhow::Result<()> {
    browse(
        url,
        &[
            format!("--screenshot={}", file.display()),
            "--window-size=1200,900".into(),
            "--hide-scrollbars".into(),
        ],
    )
    .await?;
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    anyhow::ensure!(
        len > 1000,
        "screenshot {} is empty ({len} bytes)",
        file.display()
    );
    println!("screenshot: {}", file.display());
    Ok(())
}

/// The layer ids of a status document, as the page names its rows (`layer-<id>`).
fn layer_ids(status: &serde_json::Value) -> Vec<String> {
    status["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| match &l["layer"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The `<main>` element of a page (the status; without the embedded script's text).
fn main_of(dom: &str) -> &str {
    let start = dom
        .find("<main id=\"status\">")
        .unwrap_or_else(|| panic!("no <main id=\"status\">:\n{dom}"));
    let end = dom[start..].find("</main>").expect("</main>") + start;
    &dom[start..end]
}

/// The DOM after the script ran, checked equal (its `<main>`) to the page as served: the
/// script builds the same markup as the server. Retried while the status changes around the
/// browser's visit.
async fn dom_as_served(port: u16, url: &str) -> anyhow::Result<String> {
    for _ in 0..3 {
        let (_, before) = http_get(port, "/").await?;
        let page = dom(url).await?;
        let (_, after) = http_get(port, "/").await?;
        if before == after {
            assert!(page.contains("data-rendered=\"script\""), "{page}");
            assert_eq!(
                normalized(main_of(&page)),
                normalized(main_of(&before)),
                "the script renders what the server renders"
            );
            return Ok(page);
        }
    }
    anyhow::bail!("the status kept changing during 3 browser visits")
}

/// Markup as a browser serializes it: quotes in text are not escaped.
fn normalized(html: &str) -> String {
    html.replace("&#39;", "'").replace("&quot;", "\"")
}

fn assert_no_sentinel(what: &str, text: &str) {
    assert!(
        !text.contains(SENTINEL),
        "the sentinel appears in {what}: ...{}...",
        text.find(SENTINEL)
            .map(|i| &text[i.saturating_sub(200)..(i + 100).min(text.len())])
            .unwrap_or_default()
    );
}

fn assert_layer_rows(what: &str, dom: &str, layers: &[String]) {
    assert!(layers.len() == 3, "three layers: {layers:?}");
    for id in layers {
        assert!(
            dom.contains(&format!("id=\"layer-{id}\"")) && dom.contains(&format!(">layer {id}<")),
            "{what} has the row of layer {id}:\n{dom}"
        );
    }
    for name in ["certs", "mesh", "canary"] {
        assert!(
            dom.contains(&format!("data-release=\"{name}/{name}\"")),
            "{what} has the release {name}:\n{dom}"
        );
    }
}

#[tokio::test]
async fn the_status_page_renders_progress_and_readiness_in_a_browser() -> anyhow::Result<()> {
    let started = Instant::now();
    chromium();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-page");
    std::fs::create_dir_all(&out_dir)?;

    let scenario = Scenario::builder(strata_bin!()).start().await?;
    // Values from a Secret carry the sentinel (the greeting lands in the mesh Deployment).
    let values = format!("greeting: {SENTINEL}-greeting\ndb:\n  password: {SENTINEL}-password\n");
    scenario.cluster.store().create(
        &kubesim::ResourceKey::new("", "secrets"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": VALUES_SECRET, "namespace": AGENT_NS},
            "type": "Opaque",
            "data": {"values.yaml": base64::engine::general_purpose::STANDARD.encode(values)},
        }),
    )?;
    // The mesh Deployment becomes ready only after 25 s (its helm timeout is raised to fit).
    let profiles = layered_profiles(&scenario.charts.url(), "{readyAfter: 25s}").replace(
        "    timeout: 20s\n",
        &format!(
            "    valuesFrom:\n      - secretRef: {{name: {VALUES_SECRET}}}\n    timeout: 90s\n"
        ),
    );
    assert!(profiles.contains(VALUES_SECRET), "{profiles}");
    scenario.repo.write("profiles.yaml", profiles)?;
    scenario
        .repo
        .commit("slow mesh with values from a Secret")?;

    let mut agent = scenario.agent(&[], &[])?;
    let url = format!("http://127.0.0.1:{}/", agent.port);
    println!("status page: {url}");

    // 1. Mid-install: the mesh release waits for its Deployment.
    let st = agent
        .wait_status("mesh waiting for its Deployment", LONG, |st| {
            release(st, "mesh").is_some_and(|r| {
                r["phase"] == "Waiting"
                    && r["notReady"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n["kind"] == "Deployment"))
            })
        })
        .await?;
    let layers = layer_ids(&st);
    let (code, body) = http_get(agent.port, "/").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("data-rendered=\"server\""), "{body}");
    assert_layer_rows("the page body mid-install", main_of(&body), &layers);
    assert_no_sentinel("the page body mid-install", &body);

    let t = Instant::now();
    let live_page = dom(&url).await?;
    let live = main_of(&live_page);
    println!("chromium --dump-dom took {:?}", t.elapsed());
    assert!(
        live_page.contains("data-rendered=\"script\""),
        "the page's script re-rendered it from /status:\n{live_page}"
    );
    assert_layer_rows("the DOM mid-install", live, &layers);
    assert!(
        live.contains("<li class=\"not-ready\">not ready: Deployment mesh/mesh-control: "),
        "the DOM names the not-ready Deployment:\n{live}"
    );
    assert!(
        live.contains("release-phase p-Waiting\">Waiting</span>"),
        "the mesh release is shown waiting:\n{live}"
    );
    assert_no_sentinel("the DOM mid-install", &live_page);
    screenshot(&url, &out_dir.join("installing.png")).await?;
    let st = agent.status().await.expect("/status answers");
    assert_eq!(
        release(&st, "mesh").map(|r| r["phase"].clone()),
        Some(serde_json::json!("Waiting")),
        "the browser ran while mesh was still waiting (else the readiness delay is too short)"
    );

    // 2. Ready: every layer row says Ready, with JavaScript and without.
    let st = agent
        .wait_status("Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    // The script builds the same markup as the server.
    let ready_page = dom_as_served(agent.port, &url).await?;
    assert!(
        ready_page.contains("data-rendered=\"script\""),
        "{ready_page}"
    );
    let ready = main_of(&ready_page);
    assert_layer_rows("the DOM when Ready", ready, &layers);
    assert_eq!(
        ready.matches("layer-phase p-Ready\">Ready</span>").count(),
        layers.len(),
        "every layer row is Ready:\n{ready}"
    );
    assert!(
        !ready.contains("class=\"not-ready\""),
        "nothing is not-ready:\n{ready}"
    );
    let commit = st["revision"]["commit"].as_str().unwrap();
    assert!(
        ready.contains(&format!("<dd class=\"last-applied\"><code>{commit}</code>")),
        "the last applied revision is shown:\n{ready}"
    );
    screenshot(&url, &out_dir.join("ready.png")).await?;

    // Without JavaScript a browser shows the HTML as served. (Chromium's --dump-dom and
    // --screenshot give nothing with --blink-settings=scriptEnabled=false: both need script.)
    let (code, static_page) = http_get(agent.port, "/").await?;
    assert_eq!(code, 200, "{static_page}");
    assert!(
        static_page.contains("data-rendered=\"server\""),
        "{static_page}"
    );
    let static_dom = main_of(&static_page);
    assert_layer_rows("the page as served when Ready", static_dom, &layers);
    assert_eq!(
        static_dom
            .matches("layer-phase p-Ready\">Ready</span>")
            .count(),
        layers.len(),
        "{static_dom}"
    );

    for (what, text) in [
        ("the DOM when Ready", &ready_page),
        ("the page as served when Ready", &static_page),
        ("/status", &http_get(agent.port, "/status").await?.1),
    ] {
        assert_no_sentinel(what, text);
    }
    // The sentinel did reach the cluster (so its absence above means something).
    let deployment = scenario
        .cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("apps", "deployments"),
            Some("mesh"),
            "mesh-control",
        )
        .expect("the mesh Deployment exists");
    assert!(
        deployment.to_string().contains(SENTINEL),
        "the values from the Secret were applied: {deployment}"
    );

    // 3. A rejected revision: its problems are listed, markup in them escaped.
    let list = layered_profiles(&scenario.charts.url(), "{}").replace(
        "    namespace: certs\n",
        "    namespace: certs\n    \"<b>colour</b>\": blue\n",
    );
    scenario.repo.write("profiles.yaml", list)?;
    let bad = scenario.repo.commit("unknown field")?;
    agent
        .wait_status("rejected", LONG, |st| {
            st["rejectedRevision"]["commit"] == bad.as_str()
        })
        .await?;
    let rejected_page = dom_as_served(agent.port, &url).await?;
    let rejected = main_of(&rejected_page);
    assert!(
        rejected.contains(&format!("Rejected revision <code>{bad}</code>")),
        "{rejected}"
    );
    assert!(
        rejected.contains("<li class=\"problem\">profiles.yaml: ")
            && rejected.contains("&lt;b&gt;colour&lt;/b&gt;")
            && !rejected.contains("<b>"),
        "the problem is listed, its markup escaped:\n{rejected}"
    );
    assert_eq!(
        rejected
            .matches("layer-phase p-Ready\">Ready</span>")
            .count(),
        layers.len(),
        "the applied revision's layers stay shown:\n{rejected}"
    );
    assert_no_sentinel("the DOM of a rejected revision", &rejected_page);
    screenshot(&url, &out_dir.join("rejected.png")).await?;

    agent.stop().await?;
    println!("e2e_page took {:?}", started.elapsed());
    Ok(())
}
