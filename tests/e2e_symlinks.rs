//! Out-of-bounds symlinks end to end (real Git server, real helm 4, kubesim): a chart in the
//! profile repository with `leak.txt -> <a file outside the repository>` and a template
//! `{{ .Files.Get "leak.txt" }}` is rejected by `strata plan` and by `strata run` before helm
//! ever reads it; the file's content (a sentinel) shows up nowhere: not in the output, the
//! logs, `/status`, nor any object of the cluster. A symlink inside the chart works. Values
//! files that are symlinks are followed inside the repository only.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::agent::{Agent, run_strata};
use testkit::chart::profile_annotations;

const TIMEOUT: Duration = Duration::from_secs(90);
const SENTINEL: &str = "SENTINEL-agent-file-5b1e9c";
const NS: &str = "demo";
const AGENT_NS: &str = "strata-system";

const TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-files
data:
  leak: {{ .Files.Get "leak.txt" | quote }}
  inside: {{ .Files.Get "inside.txt" | quote }}
"#;

fn profiles(values_file: Option<&str>) -> String {
    let values = values_file
        .map(|v| format!("    valuesFiles: [{v}]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  timeout: 30s\nprofiles:\n  - name: demo\n    chart: {{path: charts/demo}}\n    namespace: {NS}\n{values}"
    )
}

struct Setup {
    cluster: kubesim::Cluster,
    kubeconfig: PathBuf,
    git: testkit::GitServer,
    repo: testkit::TestRepo,
    /// The agent's file outside the repository, holding the sentinel.
    secret: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("agent-secret.txt");
        std::fs::write(&secret, SENTINEL)?;
        let cluster = kubesim::start(kubesim::Config::default()).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig)?;
        cluster.store().create(
            &kubesim::ResourceKey::new("", "namespaces"),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NS}}),
        )?;
        let git = testkit::GitServer::start().await?;
        let repo = git.create_repo("platform")?;
        let annotations = profile_annotations(Some("1"), None);
        let mut chart = "apiVersion: v2\nname: demo\nversion: 1.0.0\nannotations:\n".to_string();
        for (k, v) in annotations {
            chart.push_str(&format!("  {k}: {v:?}\n"));
        }
        repo.write("charts/demo/Chart.yaml", chart)?;
        repo.write("charts/demo/templates/files.yaml", TEMPLATE)?;
        repo.write("charts/demo/files/real.txt", "in-chart-content")?;
        let p = repo.path();
        symlink("files/real.txt", p.join("charts/demo/inside.txt"))?;
        // The attack: a chart file that is the agent's file.
        symlink(&secret, p.join("charts/demo/leak.txt"))?;
        repo.write("profiles.yaml", profiles(None))?;
        repo.commit("a chart with an out-of-bounds symlink")?;
        Ok(Self {
            cluster,
            kubeconfig,
            git,
            repo,
            secret,
            dir,
        })
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "--git-url",
            &self.git.http_url("platform"),
            "--kubeconfig",
            &self.kubeconfig.display().to_string(),
            "--helm",
            &testkit::tools().helm4.display().to_string(),
            "--namespace",
            AGENT_NS,
            "--work-dir",
            &self.dir.path().join("work").display().to_string(),
            "--interval",
            "1s",
            "--log-level",
            "debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn agent(&self, extra: &[&str], log: &str) -> anyhow::Result<Agent> {
        Agent::start(
            testkit::strata_bin!(),
            &self.args(extra),
            &[],
            self.dir.path().join(log),
        )
    }

    /// Every object in the cluster, as JSON text.
    fn dump(&self) -> String {
        self.cluster.store().dump().to_string()
    }

    fn helm_releases(&self) -> usize {
        self.cluster
            .store()
            .dump()
            .to_string()
            .matches("\"owner\":\"helm\"")
            .count()
    }

    fn plan_args<'a>(&'a self, work: &'a Path) -> Vec<String> {
        vec![
            "plan".into(),
            "--git-url".into(),
            self.git.http_url("platform"),
            "--work-dir".into(),
            work.display().to_string(),
            "--output".into(),
            "json".into(),
        ]
    }
}

#[tokio::test]
async fn plan_rejects_a_chart_symlink_out_of_the_repository() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let work = tempfile::tempdir()?;
    let args = s.plan_args(work.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_strata(testkit::strata_bin!(), &args, &[], TIMEOUT).await?;
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_ne!(out.code, Some(0), "{all}");
    assert!(!all.contains(SENTINEL), "the agent's file leaked:\n{all}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(plan["valid"], false, "{all}");
    let problems = plan["problems"].to_string();
    assert!(
        problems.contains("charts/demo/leak.txt")
            && problems.contains(&*s.secret.to_string_lossy()),
        "names the file and its target: {problems}"
    );
    assert!(problems.contains("out-of-bounds symlink"), "{problems}");
    assert!(
        !problems.contains("inside.txt"),
        "an in-chart link is fine: {problems}"
    );
    Ok(())
}

#[tokio::test]
async fn run_installs_nothing_and_leaks_nothing_then_in_chart_links_work() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let bad = s.repo.head()?;

    // --once: the revision is invalid, nothing installed, non-zero exit.
    let mut once = s.agent(&["--once"], "once.log")?;
    let exit = tokio::time::timeout(TIMEOUT, once.child.wait()).await??;
    let logs = once.logs();
    assert!(
        !exit.success(),
        "strata run --once accepted the revision:\n{logs}"
    );
    assert!(logs.contains("charts/demo/leak.txt"), "{logs}");
    assert!(
        !logs.contains(SENTINEL),
        "the agent's file leaked into the log:\n{logs}"
    );
    assert_eq!(s.helm_releases(), 0, "nothing installed");
    assert!(
        !s.dump().contains(SENTINEL),
        "the agent's file is in the cluster"
    );

    // Continuously: /status shows the problem, never the content.
    let mut agent = s.agent(&[], "agent.log")?;
    let status = agent
        .wait_status("the invalid revision", TIMEOUT, |st| {
            st["rejectedRevision"]["commit"] == bad.as_str() || st.to_string().contains("leak.txt")
        })
        .await?;
    let text = status.to_string();
    assert!(text.contains("charts/demo/leak.txt"), "{status:#}");
    assert!(!text.contains(SENTINEL), "/status leaked: {status:#}");
    let (_, metrics) = testkit::agent::http_get(agent.port, "/metrics").await?;
    assert!(!metrics.contains(SENTINEL));

    // The repository fixes the chart: the in-chart link is installed, the agent converges.
    s.repo.remove("charts/demo/leak.txt")?;
    s.repo.write("charts/demo/leak.txt", "no longer a link")?;
    let good = s.repo.commit("drop the out-of-bounds symlink")?;
    agent
        .wait_status("the fixed revision applied", TIMEOUT, |st| {
            st["phase"] == "Ready" && st["revision"]["commit"] == good.as_str()
        })
        .await?;
    let cm = s
        .cluster
        .store()
        .get(
            &kubesim::ResourceKey::new("", "configmaps"),
            Some(NS),
            "demo-files",
        )
        .expect("the chart's ConfigMap");
    assert_eq!(cm["data"]["inside"], "in-chart-content", "{cm:#}");
    assert_eq!(cm["data"]["leak"], "no longer a link", "{cm:#}");
    let logs = agent.logs();
    agent.stop().await?;
    for (what, text) in [("log", logs), ("cluster", s.dump())] {
        assert!(
            !text.contains(SENTINEL),
            "the agent's file leaked into the {what}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn values_files_that_are_symlinks() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let p = s.repo.path();
    // The chart is fine; the values file is a link.
    s.repo.remove("charts/demo/leak.txt")?;
    s.repo
        .write("values/common.yaml", "greeting: from-common\n")?;
    std::fs::create_dir_all(p.join("clusters/prod"))?;
    symlink(
        "../../values/common.yaml",
        p.join("clusters/prod/values.yaml"),
    )?;
    symlink(&s.secret, p.join("clusters/prod/leak.yaml"))?;
    let plan = |values: &'static str| {
        let s = &s;
        async move {
            s.repo.write("profiles.yaml", profiles(Some(values)))?;
            s.repo.commit(values)?;
            let work = tempfile::tempdir()?;
            let args = s.plan_args(work.path());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_strata(testkit::strata_bin!(), &args, &[], TIMEOUT).await?;
            let all = format!("{}\n{}", out.stdout, out.stderr);
            assert!(!all.contains(SENTINEL), "leaked:\n{all}");
            anyhow::Ok((
                out.code,
                serde_json::from_str::<serde_json::Value>(&out.stdout)?,
            ))
        }
    };
    // Inside the repository: followed.
    let (code, out) = plan("clusters/prod/values.yaml").await?;
    assert_eq!(code, Some(0), "{out:#}");
    assert_eq!(out["valid"], true, "{out:#}");
    // To the agent's file: refused, saying it is a symlink and where it points.
    let (code, out) = plan("clusters/prod/leak.yaml").await?;
    assert_ne!(code, Some(0));
    let problems = out["problems"].to_string();
    assert!(
        problems.contains("clusters/prod/leak.yaml is a symlink to")
            && problems.contains(&*s.secret.to_string_lossy())
            && problems.contains("outside the repository"),
        "{problems}"
    );
    assert!(!problems.contains("must be a mapping"), "{problems}");
    Ok(())
}
