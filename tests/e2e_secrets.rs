//! Secrets never leak: a sentinel string is planted in inline values, in a values file, in
//! values read from a Kubernetes Secret (`valuesFrom`), as the Git basic-auth password and as
//! a chart repository's password; a succeeding install (text logs at debug level) and a failing
//! one (JSON logs at debug level) run with real helm 4; every output is searched for the
//! sentinel: agent logs, `GET /status`, `GET /metrics`, the status ConfigMap, Events and every
//! other object in kubesim's store, and the OTLP trace exports a test receiver got (raw
//! protobuf bodies: strings are stored verbatim in them). Excluded: Secrets of type `helm.sh/release.v1` (helm keeps
//! the values there: the cluster's storage, not an output) and the source Secrets (`valuesFrom`, repository credentials).
//! A third run points `valuesFrom` at a missing Secret: the revision is rejected with a
//! problem naming the profile, Secret and key.
//!
//! A second profile's chart comes from a chart repository requiring basic auth, with the
//! sentinel in the password (a `repositories[].secretRef` Secret).

use std::time::Duration;

use testkit::agent::{Agent, agent_args, http_get, release, set_arg};
use testkit::chart::{
    CONFIGMAP_TEMPLATE, ChartSpec, FAIL_HOOK_TEMPLATE, profile_annotations, write_chart,
};
use testkit::cluster::AGENT_NS;
use testkit::strata_bin;

const SENTINEL: &str = "S3NT1NEL";
const NS: &str = "vault";
const LONG: Duration = Duration::from_secs(120);
/// The `valuesFrom` source Secret, in the agent's namespace.
const VALUES_SECRET: &str = "vault-values";
/// The chart repository's credentials Secret, in the agent's namespace.
const REPO_SECRET: &str = "private-charts";

fn profiles(repo_url: &str, extra_inline: &str) -> String {
    format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: private\n    url: {repo_url}\n    secretRef: {{name: {REPO_SECRET}}}\ndefaults:\n  timeout: 30s\nprofiles:\n  - name: tools\n    chart: {{repository: private, name: tools}}\n    version: 0.1.0\n    namespace: tools\n  - name: vault\n    chart: {{path: charts/vault}}\n    namespace: {NS}\n    valuesFiles: [values/vault.yaml]\n    valuesFrom:\n      - secretRef: {{name: {VALUES_SECRET}}}\n      - secretRef: {{name: not-there, key: x.yaml}}\n        optional: true\n    values: {{dbPassword: {SENTINEL}-inline{extra_inline}}}\n    remediation: {{retries: 1}}\n"
    )
}

fn leaks(what: &str, text: &str) -> Option<String> {
    text.find(SENTINEL).map(|i| {
        let start = text[..i]
            .char_indices()
            .rev()
            .nth(120)
            .map_or(0, |(p, _)| p);
        let end = (i + 160).min(text.len());
        let end = (end..=text.len())
            .find(|e| text.is_char_boundary(*e))
            .unwrap_or(text.len());
        format!("{what}: ...{}...", &text[start..end])
    })
}

/// Every output but the agent's own log: /status, /metrics, and the store (minus helm's
/// release Secrets).
async fn outputs(agent: &Agent, cluster: &kubesim::Cluster) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let (_, status) = http_get(agent.port, "/status").await?;
    let (_, metrics) = http_get(agent.port, "/metrics").await?;
    found.extend(leaks("/status", &status));
    found.extend(leaks("/metrics", &metrics));
    let dump = cluster.store().dump();
    let mut objects = Vec::new();
    collect_objects(&dump, &mut objects);
    assert!(
        objects
            .iter()
            .any(|o| o["type"] == "helm.sh/release.v1" && o["metadata"]["namespace"] == NS),
        "the dump holds the release Secrets (so the exclusion below is real)"
    );
    assert!(
        objects
            .iter()
            .any(|o| o["kind"] == "Event" || o["involvedObject"].is_object()),
        "the dump holds Events"
    );
    for o in objects {
        if o["type"] == "helm.sh/release.v1"
            || (o["metadata"]["namespace"] == AGENT_NS
                && (o["metadata"]["name"] == VALUES_SECRET || o["metadata"]["name"] == REPO_SECRET))
        {
            continue;
        }
        let what = format!(
            "object {}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        );
        found.extend(leaks(&what, &o.to_string()));
    }
    Ok(found)
}

/// Kubernetes objects (maps with `metadata`) anywhere in the dump.
fn collect_objects(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) if m.contains_key("metadata") => out.push(v.clone()),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_objects(x, out)),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_objects(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn sentinel_appears_in_no_output() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    // Values from a Secret: the greeting overrides the values file's (valuesFrom comes after
    // valuesFiles), and a sentinel nested in a list.
    {
        use base64::Engine as _;
        let values = format!(
            "greeting: from-secret\ndb:\n  users:\n    - name: admin\n      password: {SENTINEL}-valuesfrom\n"
        );
        cluster.store().create(
            &kubesim::ResourceKey::new("", "secrets"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": VALUES_SECRET, "namespace": AGENT_NS},
                "type": "Opaque",
                "data": {"values.yaml": base64::engine::general_purpose::STANDARD.encode(values)},
            }),
        )?;
    }
    // A chart repository requiring basic auth; its credentials in a Secret.
    let repo_password = format!("{SENTINEL}-repo");
    let helm4 = testkit::tools().helm4;
    let charts = testkit::ChartRepo::start_with_auth(&helm4, "reader", &repo_password).await?;
    {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        cluster.store().create(
            &kubesim::ResourceKey::new("", "secrets"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": REPO_SECRET, "namespace": AGENT_NS},
                "type": "Opaque",
                "data": {"username": b64("reader"), "password": b64(&repo_password)},
            }),
        )?;
    }
    let tools_annotations = profile_annotations(Some("1"), None);
    let tools_chart = write_chart(
        &dir.path().join("repo-charts"),
        &ChartSpec {
            name: "tools",
            version: "0.1.0",
            annotations: &tools_annotations,
            files: &[("templates/configmap.yaml", CONFIGMAP_TEMPLATE)],
        },
    )?;
    charts.add_chart(&tools_chart)?;
    let repo_url = charts.url();
    let profiles = |extra: &str| profiles(&repo_url, extra);
    let git_password = format!("{SENTINEL}-git");
    let git = testkit::GitServer::start_with_auth("deployer", &git_password).await?;
    let password_file = dir.path().join("git-password");
    std::fs::write(&password_file, &git_password)?;
    let repo = git.create_repo("platform")?;
    let annotations = profile_annotations(Some("1"), None);
    let chart = write_chart(
        &dir.path().join("charts"),
        &ChartSpec {
            name: "vault",
            version: "1.0.0",
            annotations: &annotations,
            files: &[
                ("templates/configmap.yaml", CONFIGMAP_TEMPLATE),
                ("templates/fail.yaml", FAIL_HOOK_TEMPLATE),
            ],
        },
    )?;
    repo.copy_dir(&chart, "charts/vault")?;
    repo.write(
        "values/vault.yaml",
        format!("apiToken: {SENTINEL}-file\ngreeting: hi\n"),
    )?;
    repo.write("profiles.yaml", profiles(""))?;
    repo.commit("vault with secrets")?;

    let args = |format: &str| -> Vec<String> {
        let mut args = agent_args(
            &git.http_url("platform"),
            &kubeconfig,
            &testkit::tools().helm4,
            &dir.path().join("work"),
        );
        set_arg(&mut args, "--log-level", "debug");
        args.extend(
            [
                "--git-username",
                "deployer",
                "--git-password-file",
                &password_file.display().to_string(),
                "--log-format",
                format,
            ]
            .map(String::from),
        );
        args
    };

    let receiver = testkit::otlp::Receiver::start().await?;
    let otel = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), receiver.url())];

    // 1. A succeeding install, text logs.
    let mut agent = Agent::start(
        strata_bin!(),
        &args("text"),
        &otel,
        dir.path().join("text.log"),
    )?;
    agent
        .wait_status("Ready", LONG, |st| st["phase"] == "Ready")
        .await?;
    // Events are written asynchronously; give the reporter a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cm = cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("", "configmaps"),
            Some(NS),
            "vault-config",
        )
        .expect("the chart's ConfigMap exists");
    assert_eq!(
        cm["data"]["greeting"], "from-secret",
        "values from the Secret are merged after the values file"
    );
    let st = agent.status().await.expect("the agent serves /status");
    assert_eq!(
        release(&st, "tools").map(|r| r["phase"].clone()),
        Some(serde_json::json!("Ready")),
        "the chart from the authenticated repository is installed: {st}"
    );
    assert!(
        charts.requests("/index.yaml") > 0,
        "the repository was asked (with credentials)"
    );
    let mut found = outputs(&agent, &cluster).await?;
    agent.stop().await?;
    let text_log = std::fs::read_to_string(dir.path().join("text.log"))?;
    assert!(text_log.contains("DEBUG"), "debug logs were on");
    found.extend(leaks("text log", &text_log));

    // 2. A failing upgrade, JSON logs.
    repo.write("profiles.yaml", profiles(", failHook: true"))?;
    repo.commit("failing")?;
    let mut agent = Agent::start(
        strata_bin!(),
        &args("json"),
        &otel,
        dir.path().join("json.log"),
    )?;
    let st = agent
        .wait_status("Failed", LONG, |st| {
            release(st, "vault").is_some_and(|r| r["phase"] == "Failed")
        })
        .await?;
    let message = release(&st, "vault").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("hook"), "helm's error is shown: {message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    found.extend(outputs(&agent, &cluster).await?);
    agent.stop().await?;
    let json_log = std::fs::read_to_string(dir.path().join("json.log"))?;
    assert!(
        json_log.lines().any(|l| l.starts_with('{')),
        "JSON logs: {json_log}"
    );
    found.extend(leaks("JSON log", &json_log));

    // 3. valuesFrom names a Secret that does not exist: the revision is rejected, the problem
    // names the profile, Secret and key.
    repo.write(
        "profiles.yaml",
        profiles("").replace(
            "name: not-there, key: x.yaml}\n        optional: true",
            "name: not-there, key: x.yaml}",
        ),
    )?;
    let bad = repo.commit("required secret missing")?;
    let mut agent = Agent::start(
        strata_bin!(),
        &args("json"),
        &otel,
        dir.path().join("json3.log"),
    )?;
    let st = agent
        .wait_status("rejected", LONG, |st| {
            st["rejectedRevision"]["commit"] == bad.as_str()
        })
        .await?;
    let problems = st["rejectedRevision"]["problems"].to_string();
    for needle in [
        "profiles[vault].valuesFrom[1]",
        "profile vault",
        &format!("Secret {AGENT_NS}/not-there does not exist"),
        "x.yaml",
    ] {
        assert!(problems.contains(needle), "{needle} in {problems}");
    }
    found.extend(outputs(&agent, &cluster).await?);
    agent.stop().await?;
    found.extend(leaks(
        "JSON log (3)",
        &std::fs::read_to_string(dir.path().join("json3.log"))?,
    ));

    let (spans, otlp) = (receiver.spans().len(), receiver.text());
    assert!(spans > 0, "the receiver got spans");
    assert!(
        otlp.contains("vault"),
        "span strings are searchable as text"
    );
    found.extend(leaks("OTLP export", &otlp));

    // The sentinel did reach helm's storage (so the search above could have found it).
    let (secrets, _) = cluster
        .store()
        .list(&kubesim::ResourceKey::new("", "secrets"), Some(NS));
    assert!(
        secrets.iter().any(|s| s["type"] == "helm.sh/release.v1"),
        "release Secrets exist"
    );
    assert!(
        found.is_empty(),
        "the sentinel leaked:\n{}",
        found.join("\n")
    );
    Ok(())
}
