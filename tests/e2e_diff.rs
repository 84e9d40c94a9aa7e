//! `strata diff` shows what a revision will do (issue 10, part 4), end to end with real helm 4
//! and helm 3 (installing through the agent), a real Git server and kubesim:
//!
//! - a stack installed by `strata run --once`, then a commit that bumps a chart version, edits
//!   a chart without a version bump, changes a profile's values, removes a profile and adds
//!   one: `strata diff` lists the removal first, then each layer in order, with core's
//!   reasons, and exits 2; `--values-diff` names the changed value path (never the value);
//! - the API server's request log shows strata diff read the cluster and wrote nothing;
//! - after `strata run --once` applies it, `strata diff` says unchanged and exits 0;
//! - `prune: false`: the removed profile is reported orphaned (exit 0: nothing changes);
//! - a revision with problems (a missing chart, an emptied list) exits 1, listing them;
//! - `--manifests`: a values and template change shows the changed line of the ConfigMap
//!   under `~`, a new object `+`, a removed one `-`; a Secret's changed value shows its key
//!   only (the value is nowhere in stdout or stderr); a chart that fails to render is
//!   reported on its release (exit 1);
//! - drift: a ConfigMap edited by hand in kubesim is listed under its unchanged release
//!   (drift mode `warn`: exit 0); with `drift: {mode: correct}` the release is an upgrade with
//!   reason `drift` (exit 2), as the agent would do.

use std::time::Duration;

use kubesim::ResourceKey;
use testkit::cluster::is_write;
use testkit::gitcharts::{GitCharts, PathProfile};
use testkit::{HelmBin, strata_bin};

fn p<'a>(name: &'a str, layer: u32, values: &'a str) -> PathProfile<'a> {
    PathProfile {
        name,
        layer,
        values,
    }
}

/// `strata diff` against the scenario's repository and cluster.
async fn diff(s: &GitCharts, extra: &[&str]) -> anyhow::Result<testkit::agent::Finished> {
    let url = s.git.http_url("platform");
    let kubeconfig = s.kubeconfig.display().to_string();
    let work = s.dir.path().join("diff-work");
    let work = work.display().to_string();
    let mut args = vec![
        "diff",
        "--git-url",
        url.as_str(),
        "--git-ref",
        "main",
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        testkit::cluster::AGENT_NS,
        "--work-dir",
        work.as_str(),
    ];
    args.extend_from_slice(extra);
    testkit::agent::run_strata(&s.strata, &args, &[], Duration::from_secs(120)).await
}

/// `strata diff -o json`: exit code and the report.
async fn diff_json(s: &GitCharts) -> anyhow::Result<(Option<i32>, serde_json::Value)> {
    let out = diff(s, &["-o", "json", "--values-diff"]).await?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| anyhow::anyhow!("diff output is not JSON ({e}): {out:?}"))?;
    Ok((out.code, v))
}

/// (action, layer, release, reason) of every entry, in order.
fn actions(report: &serde_json::Value) -> Vec<(String, String, String, String)> {
    report["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions: {report:#}"))
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["layer"].to_string(),
                e["release"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn a(action: &str, layer: u32, release: &str, reason: &str) -> (String, String, String, String) {
    (
        action.into(),
        layer.to_string(),
        release.into(),
        reason.into(),
    )
}

async fn diff_shows_the_revision(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    for (name, layer) in [("a1", 1), ("b1", 1), ("c1", 1), ("a2", 2), ("b2", 2)] {
        s.write_chart(name, layer, "one")?;
    }
    let first = [
        p("a1", 1, "{}"),
        p("b1", 1, "{}"),
        p("c1", 1, "{}"),
        p("a2", 2, "{}"),
        p("b2", 2, "{}"),
    ];
    s.write_list(&first, "")?;
    s.repo.commit("two layers")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");

    // Installed as the list says: nothing to do.
    let (code, report) = diff_json(&s).await?;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["changes"], false, "{report:#}");
    assert!(
        actions(&report).iter().all(|e| e.0 == "unchanged"),
        "{report:#}"
    );

    // One commit: a1 1.0.0 -> 1.1.0, b1's template edited (same version), a2's values
    // changed, b2 removed, n2 added.
    let chart_yaml = s.repo.path().join("charts/a1/Chart.yaml");
    let bumped = std::fs::read_to_string(&chart_yaml)?.replace("version: 1.0.0", "version: 1.1.0");
    s.repo.write("charts/a1/Chart.yaml", bumped)?;
    s.write_chart("b1", 1, "two")?;
    s.write_chart("n2", 2, "one")?;
    let second = [
        p("a1", 1, "{}"),
        p("b1", 1, "{}"),
        p("c1", 1, "{}"),
        p("a2", 2, "{greeting: secret-hello}"),
        p("n2", 2, "{}"),
    ];
    s.write_list(&second, "")?;
    s.repo.commit("bump, edit, values, remove, add")?;

    let before = s.cluster.controls().requests().len();
    let (code, report) = diff_json(&s).await?;
    let requests = s.cluster.controls().requests()[before..].to_vec();
    assert_eq!(code, Some(2), "{report:#}");
    assert_eq!(report["valid"], true, "{report:#}");
    assert_eq!(report["changes"], true, "{report:#}");
    let mut got = actions(&report);
    // Inside a layer the plan's order; compare layer by layer as sets, the layers in order.
    let removal = got.remove(0);
    assert_eq!(
        removal,
        a("remove", 2, "b2", "profile b2 is gone from the list"),
        "removals first: {report:#}"
    );
    let layer_of = |e: &(String, String, String, String)| e.1.clone();
    assert!(
        got.windows(2).all(|w| layer_of(&w[0]) <= layer_of(&w[1])),
        "layers in order: {got:?}"
    );
    got.sort();
    let mut want = vec![
        a("upgrade", 1, "a1", "chart version 1.0.0 -> 1.1.0"),
        a("upgrade", 1, "b1", "chart content changed"),
        a("unchanged", 1, "c1", ""),
        a("upgrade", 2, "a2", "values changed"),
        a("install", 2, "n2", "no release in helm's storage"),
    ];
    want.sort();
    assert_eq!(got, want, "{report:#}");
    let a2 = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["release"] == "a2")
        .unwrap();
    assert_eq!(a2["changedValues"], serde_json::json!(["/greeting"]));
    assert!(
        !report.to_string().contains("secret-hello"),
        "values are never shown: {report:#}"
    );

    // It read the cluster, and wrote nothing.
    let strata_ua = format!("strata/{}", env!("CARGO_PKG_VERSION"));
    assert!(
        requests
            .iter()
            .any(|r| r.user_agent == strata_ua && r.resource == "secrets" && r.verb == "list"),
        "strata diff read helm's storage: {:?}",
        requests
            .iter()
            .map(|r| (&r.verb, &r.path))
            .collect::<Vec<_>>()
    );
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| is_write(r))
        .map(|r| (&r.user_agent, &r.verb, &r.path))
        .collect();
    assert!(writes.is_empty(), "strata diff wrote: {writes:?}");

    // The text for people: the removal heading, the reasons and the value path.
    let out = diff(&s, &["--values-diff"]).await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    let text = out.stdout;
    assert!(text.contains("removals, layer 2\n  remove "), "{text}");
    assert!(text.contains("chart version 1.0.0 -> 1.1.0"), "{text}");
    assert!(text.contains("values changed at: /greeting"), "{text}");
    assert!(
        text.contains("1 to install, 3 to upgrade, 1 to remove, 1 unchanged"),
        "{text}"
    );
    assert!(!text.contains("secret-hello"), "{text}");

    // Applied: nothing left to do.
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let (code, report) = diff_json(&s).await?;
    assert_eq!(code, Some(0), "{report:#}");
    assert!(
        actions(&report).iter().all(|e| e.0 == "unchanged"),
        "{report:#}"
    );
    let out = diff(&s, &[]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("no changes"), "{}", out.stdout);

    // prune: false: c1 removed from the list stays installed, reported orphaned; nothing
    // changes.
    s.write_list(
        &[
            p("a1", 1, "{}"),
            p("b1", 1, "{}"),
            p("a2", 2, "{greeting: secret-hello}"),
            p("n2", 2, "{}"),
        ],
        "prune: false\n",
    )?;
    s.repo.commit("drop c1, keep it")?;
    let (code, report) = diff_json(&s).await?;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        actions(&report)[0],
        a(
            "orphaned",
            1,
            "c1",
            "profile c1 is gone from the list; kept installed (prune: false)"
        ),
        "{report:#}"
    );

    // A revision with problems: every one listed, exit 1.
    s.write_list(
        &[p("a1", 1, "{}"), p("gone", 1, "{}"), p("lost", 2, "{}")],
        "",
    )?;
    s.repo.commit("charts that do not exist")?;
    let out = diff(&s, &[]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("invalid: "), "{}", out.stdout);
    for missing in ["charts/gone", "charts/lost"] {
        assert!(out.stdout.contains(missing), "{}", out.stdout);
    }
    // An emptied list would uninstall everything: rejected as the agent rejects it.
    s.write_list(&[], "")?;
    s.repo.commit("oops: emptied")?;
    let (code, report) = diff_json(&s).await?;
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        report["problems"].to_string().contains("allowEmpty"),
        "{report:#}"
    );
    Ok(())
}

#[tokio::test]
async fn diff_shows_what_a_revision_will_do_helm4() -> anyhow::Result<()> {
    diff_shows_the_revision(HelmBin::V4).await
}

#[tokio::test]
async fn diff_shows_what_a_revision_will_do_helm3() -> anyhow::Result<()> {
    diff_shows_the_revision(HelmBin::V3).await
}

/// A Secret whose password comes from the values.
const SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-db
data:
  password: {{ .Values.password | default "none" | b64enc | quote }}
"#;

fn extra_cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  n: \"1\"\n")
}

/// Set the string at `pointer` of an object in kubesim, as `kubectl edit` would.
fn edit(
    s: &GitCharts,
    namespace: &str,
    name: &str,
    pointer: &str,
    value: &str,
) -> anyhow::Result<()> {
    let res = ResourceKey::new("", "configmaps");
    let mut obj = s
        .cluster
        .store()
        .get(&res, Some(namespace), name)
        .ok_or_else(|| anyhow::anyhow!("configmap {namespace}/{name} not found"))?;
    *obj.pointer_mut(pointer)
        .ok_or_else(|| anyhow::anyhow!("{pointer} not in configmap {namespace}/{name}"))? =
        serde_json::Value::String(value.to_owned());
    s.cluster
        .store()
        .update(&res, obj)
        .map_err(|e| anyhow::anyhow!("editing configmap {namespace}/{name}: {e:?}"))?;
    Ok(())
}

fn entry<'a>(report: &'a serde_json::Value, release: &str) -> &'a serde_json::Value {
    report["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["release"] == release))
        .unwrap_or_else(|| panic!("no {release}: {report:#}"))
}

async fn diff_shows_manifests_and_drift(helm: HelmBin) -> anyhow::Result<()> {
    let s = GitCharts::start(strata_bin!(), helm).await?;
    let helm_path = helm.path().display().to_string();
    s.write_chart("app", 1, "one")?;
    s.repo.write("charts/app/templates/secret.yaml", SECRET)?;
    s.repo
        .write("charts/app/templates/old.yaml", extra_cm("app-old"))?;
    s.write_chart("calm", 1, "one")?;
    s.write_list(
        &[p("app", 1, "{password: s3cret-one}"), p("calm", 1, "{}")],
        "",
    )?;
    s.repo.commit("app and calm")?;
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");

    // One commit: app's values (a greeting and the Secret's password) change, one object of
    // its chart is removed and one added. calm's ConfigMap is edited by hand.
    s.repo.remove("charts/app/templates/old.yaml")?;
    s.repo
        .write("charts/app/templates/new.yaml", extra_cm("app-new"))?;
    s.write_list(
        &[
            p("app", 1, "{greeting: bonjour, password: s3cret-two}"),
            p("calm", 1, "{}"),
        ],
        "",
    )?;
    s.repo.commit("values, one object out, one in")?;
    edit(&s, "calm", "calm-data", "/data/greeting", "edited by hand")?;

    let before = s.cluster.controls().requests().len();
    let out = diff(&s, &["--manifests", "--helm", helm_path.as_str()]).await?;
    let requests = s.cluster.controls().requests()[before..].to_vec();
    assert_eq!(out.code, Some(2), "{out:?}");
    let text = &out.stdout;
    for want in [
        "~ ConfigMap app/app-data",
        "+ ConfigMap app/app-new",
        "- ConfigMap app/app-old",
        "~ Secret app/app-db: data.password changed",
        "drift: ConfigMap calm/calm-data /data/greeting",
        "1 with drift",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('-') && l.contains("greeting: hello")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('+') && l.contains("greeting: bonjour")),
        "{text}"
    );
    assert!(text.contains("  unchanged  calm/calm"), "{text}");
    // The Secret's values are nowhere: neither as written nor base64.
    for secret in [
        "s3cret-one",
        "s3cret-two",
        "czNjcmV0LW9uZQ",
        "czNjcmV0LXR3bw",
        "edited by hand",
    ] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{secret} shown: {out:?}"
        );
    }
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| is_write(r))
        .map(|r| (&r.user_agent, &r.verb, &r.path))
        .collect();
    assert!(writes.is_empty(), "strata diff wrote: {writes:?}");

    // The same as JSON.
    let out = diff(
        &s,
        &["--manifests", "--helm", helm_path.as_str(), "-o", "json"],
    )
    .await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let app = entry(&report, "app");
    let objects: Vec<(String, String)> = app["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests: {report:#}"))
        .iter()
        .map(|o| {
            (
                o["change"].as_str().unwrap_or_default().to_string(),
                o["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("changed", "app-data"),
        ("added", "app-new"),
        ("removed", "app-old"),
        ("changed", "app-db"),
    ] {
        assert!(
            objects.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {objects:?}"
        );
    }
    let db = app["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "app-db")
        .unwrap();
    assert_eq!(db["secretKeys"], serde_json::json!(["data.password"]));
    let calm = entry(&report, "calm");
    assert_eq!(calm["action"], "unchanged", "{report:#}");
    assert_eq!(calm["drift"][0]["name"], "calm-data", "{report:#}");
    assert_eq!(
        calm["drift"][0]["paths"],
        serde_json::json!(["/data/greeting"])
    );
    assert!(calm.get("manifests").is_none(), "{report:#}");
    for secret in ["s3cret", "czNjcmV0"] {
        assert!(!out.stdout.contains(secret), "{secret} shown: {out:?}");
    }

    // Without --manifests: no helm, no manifests; the drift is still shown.
    let out = diff(&s, &["-o", "json"]).await?;
    let report: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert!(
        entry(&report, "app").get("manifests").is_none(),
        "{report:#}"
    );
    assert_eq!(entry(&report, "calm")["drift"][0]["name"], "calm-data");

    // Applied: app unchanged; calm still drifted (warn): listed, nothing to do, exit 0.
    let (code, logs) = s.run_once().await?;
    assert_eq!(code, Some(0), "{logs}");
    let out = diff(&s, &["--manifests", "--helm", helm_path.as_str()]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("drift: ConfigMap calm/calm-data /data/greeting"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("drift mode warn"), "{}", out.stdout);

    // drift: {mode: correct}: the agent would upgrade calm, with reason drift.
    s.write_list(
        &[
            p("app", 1, "{greeting: bonjour, password: s3cret-two}"),
            p("calm", 1, "{}"),
        ],
        "  drift: {mode: correct}\n",
    )?;
    s.repo.commit("correct drift")?;
    let out = diff(
        &s,
        &["--manifests", "--helm", helm_path.as_str(), "-o", "json"],
    )
    .await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let calm = entry(&report, "calm");
    assert_eq!(calm["action"], "upgrade", "{report:#}");
    assert_eq!(
        calm["reason"], "drift: ConfigMap calm/calm-data (/data/greeting) changed",
        "{report:#}"
    );
    assert_eq!(entry(&report, "app")["action"], "unchanged", "{report:#}");

    // A chart that cannot be rendered: reported on its release, the others still listed.
    s.write_chart("bad", 1, "one")?;
    s.repo.write(
        "charts/bad/templates/fail.yaml",
        "{{ fail \"broken on purpose\" }}\n",
    )?;
    s.write_list(
        &[
            p("app", 1, "{greeting: bonjour, password: s3cret-two}"),
            p("calm", 1, "{}"),
            p("bad", 1, "{}"),
        ],
        "",
    )?;
    s.repo.commit("a broken chart")?;
    let out = diff(&s, &["--manifests", "--helm", helm_path.as_str()]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("install    bad/bad"), "{}", out.stdout);
    assert!(out.stdout.contains("broken on purpose"), "{}", out.stdout);
    assert!(out.stdout.contains("1 failed"), "{}", out.stdout);
    Ok(())
}

#[tokio::test]
async fn diff_shows_manifests_and_drift_helm4() -> anyhow::Result<()> {
    diff_shows_manifests_and_drift(HelmBin::V4).await
}

#[tokio::test]
async fn diff_shows_manifests_and_drift_helm3() -> anyhow::Result<()> {
    diff_shows_manifests_and_drift(HelmBin::V3).await
}
