//! A profile repository whose charts live in the repository itself (`chart: {path: ...}`):
//! kubesim, a Git server, small charts (one ConfigMap each) written per profile, and
//! `strata run --once` against them. For the content and prune end-to-end tests.

use std::path::PathBuf;
use std::time::Duration;

use crate::agent::{Agent, agent_args};
use crate::chart::profile_annotations;
use crate::{GitServer, HelmBin, TestRepo};

/// One ConfigMap named after the release, with the values' greeting and a flavour.
pub fn configmap_template(flavour: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{{{ .Release.Name }}}}-data
data:
  greeting: {{{{ .Values.greeting | default "hello" | quote }}}}
  flavour: "{flavour}"
"#
    )
}

/// A profile of the list: its name (also release name and namespace), layer and values.
pub struct PathProfile<'a> {
    pub name: &'a str,
    pub layer: u32,
    pub values: &'a str,
}

/// kubesim, a Git server and the repository `platform` with charts under `charts/`.
pub struct GitCharts {
    /// The strata binary the agents run.
    pub strata: PathBuf,
    pub cluster: kubesim::Cluster,
    pub kubeconfig: PathBuf,
    pub git: GitServer,
    pub repo: TestRepo,
    pub helm: HelmBin,
    pub dir: tempfile::TempDir,
    runs: std::cell::Cell<usize>,
}

impl GitCharts {
    /// Start everything; the agents run `strata` (see [`strata_bin!`](crate::strata_bin)).
    pub async fn start(strata: &std::path::Path, helm: HelmBin) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cluster = crate::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
        let git = GitServer::start().await?;
        let repo = git.create_repo("platform")?;
        Ok(Self {
            strata: strata.to_path_buf(),
            cluster,
            kubeconfig,
            git,
            repo,
            helm,
            dir,
            runs: std::cell::Cell::new(0),
        })
    }

    /// Write chart `charts/<name>` (version 1.0.0, layer annotation `layer`) with a ConfigMap
    /// template of `flavour`.
    pub fn write_chart(&self, name: &str, layer: u32, flavour: &str) -> anyhow::Result<()> {
        let layer = layer.to_string();
        let mut chart = format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\nannotations:\n");
        for (k, v) in profile_annotations(Some(&layer), None) {
            chart.push_str(&format!("  {k}: {v:?}\n"));
        }
        self.repo
            .write(&format!("charts/{name}/Chart.yaml"), chart)?;
        self.repo.write(
            &format!("charts/{name}/templates/cm.yaml"),
            configmap_template(flavour),
        )?;
        Ok(())
    }

    /// Write `profiles.yaml` with `profiles` and extra top-level lines `extra`.
    pub fn write_list(&self, profiles: &[PathProfile<'_>], extra: &str) -> anyhow::Result<()> {
        let mut list = format!(
            "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\ndefaults:\n  timeout: 30s\n{extra}"
        );
        if profiles.is_empty() {
            list.push_str("profiles: []\n");
        } else {
            list.push_str("profiles:\n");
        }
        for p in profiles {
            list.push_str(&format!(
                "  - name: {n}\n    chart: {{path: charts/{n}}}\n    namespace: {n}\n    values: {v}\n",
                n = p.name,
                v = p.values
            ));
        }
        self.repo.write("profiles.yaml", list)?;
        Ok(())
    }

    /// `strata run --once`; returns the exit code and the agent's log.
    pub async fn run_once(&self) -> anyhow::Result<(Option<i32>, String)> {
        self.run_once_with(&[]).await
    }

    /// `strata run --once` with `extra` arguments (e.g. `--once-timeout 10s`).
    pub async fn run_once_with(&self, extra: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut args = agent_args(
            &self.git.http_url("platform"),
            &self.kubeconfig,
            &self.helm.path(),
            &self.dir.path().join("work"),
        );
        args.push("--once".into());
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut agent = Agent::start(
            &self.strata,
            &args,
            &[],
            self.dir.path().join(format!("once-{n}.log")),
        )?;
        let exit = tokio::time::timeout(Duration::from_secs(180), agent.child.wait()).await??;
        Ok((exit.code(), agent.logs()))
    }

    /// A long-running `strata run` polling every `interval`, logging to `agent.log`.
    pub fn agent(&self, interval: &str) -> anyhow::Result<Agent> {
        let mut args = agent_args(
            &self.git.http_url("platform"),
            &self.kubeconfig,
            &self.helm.path(),
            &self.dir.path().join("work"),
        );
        crate::agent::set_arg(&mut args, "--interval", interval);
        Agent::start(&self.strata, &args, &[], self.dir.path().join("agent.log"))
    }

    /// The status the agent wrote into its ConfigMap.
    pub fn status(&self) -> serde_json::Value {
        crate::cluster::configmap_status(&self.cluster).unwrap_or_default()
    }

    /// A release's entry in the status.
    pub fn release(&self, name: &str) -> serde_json::Value {
        crate::agent::release(&self.status(), name)
            .cloned()
            .unwrap_or_default()
    }

    /// `data` of ConfigMap `<name>-data` in namespace `name` (the chart's object).
    pub fn data(&self, name: &str) -> Option<serde_json::Value> {
        crate::cluster::get(&self.cluster, "configmaps", name, &format!("{name}-data"))
            .map(|c| c["data"].clone())
    }

    /// Whether helm has a release record of `release` in `namespace`.
    pub fn installed(&self, namespace: &str, release: &str) -> bool {
        crate::release::latest(&self.cluster)
            .iter()
            .any(|r| r.namespace == namespace && r.name == release)
    }

    /// Install `release` from `charts/<chart>` of the working copy with plain helm (no strata
    /// labels), as a person would.
    pub async fn helm_install_by_hand(
        &self,
        release: &str,
        namespace: &str,
        chart: &str,
    ) -> anyhow::Result<()> {
        let home = self.dir.path().join("by-hand");
        let out = tokio::process::Command::new(self.helm.path())
            .args(["upgrade", "--install", release])
            .arg(self.repo.path().join("charts").join(chart))
            .args([
                "--namespace",
                namespace,
                "--create-namespace",
                "--kubeconfig",
            ])
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "helm install by hand failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}
