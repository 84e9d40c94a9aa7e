//! `dependsOn` end to end with real helm 4 and helm 3, a real Git server, a real chart
//! repository and the simulated cluster: inside one layer, a release starts only once the
//! release it depends on is Ready (kubesim's request log says when each was written); a
//! dependency cycle is rejected at load, naming its members, and installs nothing; and
//! `strata plan` prints the order.

use std::time::Duration;

use testkit::agent::{phase, release, run_strata};
use testkit::cluster::{AGENT_NS, touches_namespace};
use testkit::{HelmBin, Scenario, strata_bin};

const LONG: Duration = Duration::from_secs(90);

/// Parse an RFC 3339 time.
fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}

/// The scenario's charts with certs and mesh both in layer 1, mesh listed first but
/// depending on certs (whose Deployment is ready only after `certs_ready_after`), and canary
/// (layer 3) depending on mesh, a lower layer (allowed, changes nothing). `certs_deps` is the
/// certs profile's own `dependsOn` (empty, or `[mesh]` for a cycle).
fn profiles(repo_url: &str, certs_ready_after: &str, certs_deps: &str) -> String {
    format!(
        r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
repositories:
  - name: platform
    url: {repo_url}
defaults:
  timeout: 60s
profiles:
  - name: mesh
    chart: {{repository: platform, name: mesh}}
    version: "^2.0.0"
    namespace: mesh
    layer: 1
    dependsOn: [certs]
  - name: certs
    chart: {{repository: platform, name: certs}}
    version: "1.0.x"
    namespace: certs
    layer: 1
    values: {{readyAfter: {certs_ready_after}}}
    dependsOn: [{certs_deps}]
  - name: canary
    chart: {{repository: platform, name: canary}}
    version: "3.0.0"
    namespace: canary
    dependsOn: [mesh]
"#
    )
}

/// `strata plan` on the scenario's repository: (exit code, stdout).
async fn plan_text(s: &Scenario) -> anyhow::Result<(Option<i32>, String)> {
    let work = s
        .dir
        .path()
        .join(format!("plan-{}", std::fs::read_dir(s.dir.path())?.count()));
    let out = run_strata(
        &s.strata,
        &[
            "plan",
            "--git-url",
            s.repo.path().to_str().unwrap(),
            "--git-ref",
            "main",
            "--work-dir",
            work.to_str().unwrap(),
            "--log-level",
            "warn",
        ],
        &[],
        LONG,
    )
    .await?;
    Ok((out.code, format!("{}{}", out.stdout, out.stderr)))
}

async fn depends_on_orders_a_layer(helm: HelmBin) -> anyhow::Result<()> {
    let s = Scenario::start(strata_bin!(), helm, "{}").await?;
    s.repo
        .write("profiles.yaml", profiles(&s.charts.url(), "3s", ""))?;
    let good = s.repo.commit("mesh after certs in one layer")?;

    // `strata plan` shows the order: certs before mesh (listed first), and why.
    let (code, out) = plan_text(&s).await?;
    assert_eq!(code, Some(0), "{out}");
    let certs_line = out.find("\n  certs  certs@1.0.0").expect(&out);
    let mesh_line = out
        .find("\n  mesh  mesh@2.0.0  namespace mesh  (layer set in the profile list)  (after: certs)\n")
        .unwrap_or_else(|| panic!("mesh with its dependency: {out}"));
    assert!(certs_line < mesh_line, "{out}");
    assert!(out.contains("(after: mesh)"), "canary: {out}");

    let mut agent = s.agent(&[], &[])?;
    // While certs waits for its Deployment, mesh says what it waits for.
    let st = agent
        .wait_status("mesh waiting for certs", LONG, |st| {
            release(st, "mesh").is_some_and(|r| {
                r["phase"] == "Pending" && r["message"] == "waiting for certs/certs (dependsOn)"
            })
        })
        .await?;
    assert_ne!(phase(&st, "certs"), "Ready", "{st:#}");
    let st = agent
        .wait_status("every layer Ready", LONG, |st| {
            st["phase"] == "Ready" && st["lastAppliedRevision"]["commit"] == good.as_str()
        })
        .await?;
    for name in ["certs", "mesh", "canary"] {
        assert_eq!(phase(&st, name), "Ready", "{st:#}");
    }

    // From the API server's request log: every write of certs (its objects, the hook after
    // readiness, helm marking the release deployed) comes before the first write of mesh.
    let writes = s.writes();
    let last_certs = writes
        .iter()
        .rposition(|r| touches_namespace(r, "certs"))
        .expect("certs written");
    let first_mesh = writes
        .iter()
        .position(|r| touches_namespace(r, "mesh"))
        .expect("mesh written");
    assert!(
        last_certs < first_mesh,
        "mesh written (#{first_mesh} {:?}) before certs finished (#{last_certs} {:?})",
        writes[first_mesh],
        writes[last_certs]
    );
    assert!(
        writes[..first_mesh]
            .iter()
            .any(|r| r.namespace == "certs" && r.resource == "secrets"),
        "certs' release record was written before mesh started"
    );
    let certs_ready = ts(release(&st, "certs").unwrap()["readyAt"].as_str().unwrap());
    let mesh_first = ts(&writes[first_mesh].time);
    // The request log has second precision.
    assert!(
        certs_ready.as_second() <= mesh_first.as_second() + 1,
        "certs ready at {certs_ready} but mesh written at {mesh_first}"
    );
    let first_certs = writes
        .iter()
        .position(|r| touches_namespace(r, "certs"))
        .unwrap();
    assert!(
        mesh_first.as_second() - ts(&writes[first_certs].time).as_second() >= 2,
        "mesh started before certs' Deployment could be ready (3 s): certs first written at {}, mesh at {mesh_first}",
        writes[first_certs].time
    );

    // A cycle: rejected whole at load, naming its members, nothing installed or upgraded
    // (the certs values change too, so applying it would write).
    s.cluster.controls().reset_requests();
    s.repo
        .write("profiles.yaml", profiles(&s.charts.url(), "1s", "mesh"))?;
    let bad = s.repo.commit("a dependency cycle")?;
    let st = agent
        .wait_status("cycle rejected", LONG, |st| {
            st["rejectedRevision"]["commit"] == bad.as_str()
        })
        .await?;
    let problems = st["rejectedRevision"]["problems"].to_string();
    assert!(
        problems.contains("dependsOn cycle: mesh -> certs -> mesh"),
        "{problems}"
    );
    assert_eq!(st["revision"]["commit"], good.as_str(), "{st:#}");
    // A few more cycles: still nothing written outside the agent's namespace.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written: Vec<String> = s
        .writes()
        .into_iter()
        .filter(|r| r.namespace != AGENT_NS)
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect();
    assert!(written.is_empty(), "a rejected revision wrote: {written:?}");
    let (code, out) = plan_text(&s).await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("profiles[mesh].dependsOn[0]: dependsOn cycle: mesh -> certs -> mesh"),
        "{out}"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn depends_on_orders_a_layer_helm4() -> anyhow::Result<()> {
    depends_on_orders_a_layer(HelmBin::V4).await
}

#[tokio::test]
async fn depends_on_orders_a_layer_helm3() -> anyhow::Result<()> {
    depends_on_orders_a_layer(HelmBin::V3).await
}
