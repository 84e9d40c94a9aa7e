//! The layered scenario on the simulated cluster: three profile charts modelled on
//! cert-manager (layer 1), linkerd (layer 2, uses layer 1's Certificate kind) and flagger
//! (layer 3, uses layer 2's kind). Like cert-manager with `installCRDs`, each ships its CRD in
//! templates/, so installing them all in one helm release fails with "no matches for kind".
//!
//! A [`Scenario`] runs kubesim, a Git server with the profile list and a chart repository with
//! the three charts; [`Scenario::builder`] chooses the helm, the mesh profile's values and the
//! kubesim configuration.

use std::path::{Path, PathBuf};

use crate::agent::{Agent, agent_args, set_arg};
use crate::chart::{ChartSpec, profile_annotations, write_chart};
use crate::{HelmBin, release};

fn crd(group: &str, kind: &str, plural: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  names:
    kind: {kind}
    listKind: {kind}List
    plural: {plural}
    singular: {singular}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#,
        singular = kind.to_ascii_lowercase()
    )
}

/// A Deployment whose readiness delay comes from `.Values.readyAfter`.
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Chart.Name }}-control
  annotations:
    kubesim.strata.dev/ready-after: {{ .Values.readyAfter | default "200ms" | quote }}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{ .Chart.Name }}
  template:
    metadata:
      labels:
        app: {{ .Chart.Name }}
    spec:
      containers:
        - name: main
          image: example.com/{{ .Chart.Name }}:1
          env:
            - name: GREETING
              value: {{ .Values.greeting | default "hello" | quote }}
"#;

/// A post-install/post-upgrade check Job; fails when `.Values.failHook` is set.
const HOOK: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Chart.Name }}-check
  annotations:
    helm.sh/hook: post-install,post-upgrade
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- if .Values.failHook }}
    kubesim.strata.dev/fail: "true"
    {{- end }}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: check
          image: example.com/check:1
"#;

const CERTIFICATE_CR: &str = r#"apiVersion: certs.example.com/v1
kind: Certificate
metadata:
  name: {{ .Chart.Name }}-identity
spec:
  secretName: {{ .Chart.Name }}-identity-tls
"#;

const SERVICEPROFILE_CR: &str = r#"apiVersion: mesh.example.com/v1
kind: ServiceProfile
metadata:
  name: {{ .Chart.Name }}-profile
spec:
  routes: []
"#;

/// Write the three layered charts under `root`; returns their directories
/// (certs, mesh, canary).
pub fn layered_charts(root: &Path) -> anyhow::Result<[PathBuf; 3]> {
    let certs_crd = crd("certs.example.com", "Certificate", "certificates");
    let mesh_crd = crd("mesh.example.com", "ServiceProfile", "serviceprofiles");
    let a1 = profile_annotations(Some("1"), Some("certificates"));
    let a2 = [
        ("weave.works/profile", "true"),
        ("weave.works/layer", "layer-2"),
        ("weave.works/category", "service-mesh"),
    ];
    let a3 = profile_annotations(Some("layer-3"), Some("progressive-delivery"));
    let certs = write_chart(
        root,
        &ChartSpec {
            name: "certs",
            version: "1.0.0",
            annotations: &a1,
            files: &[
                ("templates/crd.yaml", &certs_crd),
                ("templates/deployment.yaml", DEPLOYMENT),
                ("templates/check.yaml", HOOK),
            ],
        },
    )?;
    let mesh = write_chart(
        root,
        &ChartSpec {
            name: "mesh",
            version: "2.0.0",
            annotations: &a2,
            files: &[
                ("templates/crd.yaml", &mesh_crd),
                ("templates/certificate.yaml", CERTIFICATE_CR),
                ("templates/deployment.yaml", DEPLOYMENT),
                ("templates/check.yaml", HOOK),
            ],
        },
    )?;
    let canary = write_chart(
        root,
        &ChartSpec {
            name: "canary",
            version: "3.0.0",
            annotations: &a3,
            files: &[
                ("templates/serviceprofile.yaml", SERVICEPROFILE_CR),
                ("templates/deployment.yaml", DEPLOYMENT),
            ],
        },
    )?;
    Ok([certs, mesh, canary])
}

/// The profile list of the layered scenario; `mesh_values` is the inline YAML map of the
/// mesh profile (e.g. `{greeting: hi}`).
pub fn layered_profiles(repo_url: &str, mesh_values: &str) -> String {
    format!(
        r#"apiVersion: strata.dev/v1alpha1
kind: ProfileList
repositories:
  - name: platform
    url: {repo_url}
defaults:
  timeout: 60s
profiles:
  - name: certs
    chart: {{repository: platform, name: certs}}
    version: "1.0.x"
    namespace: certs
  - name: mesh
    chart: {{repository: platform, name: mesh}}
    version: "^2.0.0"
    namespace: mesh
    values: {mesh_values}
    timeout: 20s
  - name: canary
    chart: {{repository: platform, name: canary}}
    version: "3.0.0"
    namespace: canary
"#
    )
}

/// Whether the three layered releases are deployed (newest record) and nothing is pending.
pub fn stack_converged(cluster: &kubesim::Cluster) -> bool {
    let latest = release::latest(cluster);
    ["certs", "mesh", "canary"].iter().all(|n| {
        latest
            .iter()
            .any(|r| r.namespace == *n && r.name == *n && r.status == "deployed")
    }) && release::pending(cluster).is_empty()
}

/// A simulated cluster, a Git server with the profile repository, a chart repository with
/// the layered charts, and a temp dir; everything is stopped on drop.
pub struct Scenario {
    /// The strata binary the agents run.
    pub strata: PathBuf,
    pub cluster: kubesim::Cluster,
    pub kubeconfig: PathBuf,
    pub git: crate::GitServer,
    pub repo: crate::TestRepo,
    pub charts: crate::ChartRepo,
    pub chart_dirs: [PathBuf; 3],
    pub helm: HelmBin,
    pub dir: tempfile::TempDir,
}

/// The options of a [`Scenario`]: helm 4, mesh values `{}` and kubesim's default
/// configuration unless set.
pub struct Builder {
    strata: PathBuf,
    helm: HelmBin,
    mesh_values: String,
    kubesim: kubesim::Config,
}

impl Builder {
    /// The helm the agents run.
    pub fn helm(mut self, helm: HelmBin) -> Self {
        self.helm = helm;
        self
    }

    /// The mesh profile's inline values (a YAML flow map, e.g. `{greeting: hi}`).
    pub fn mesh_values(mut self, values: &str) -> Self {
        self.mesh_values = values.to_string();
        self
    }

    /// kubesim's configuration (e.g. a fault seed).
    pub fn kubesim(mut self, config: kubesim::Config) -> Self {
        self.kubesim = config;
        self
    }

    /// Start everything and commit the profile list.
    pub async fn start(self) -> anyhow::Result<Scenario> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cluster = crate::cluster::start(self.kubesim, &kubeconfig).await?;
        let chart_dirs = layered_charts(&dir.path().join("charts"))?;
        let refs: Vec<&Path> = chart_dirs.iter().map(|d| d.as_path()).collect();
        let charts = crate::ChartRepo::with_charts(&crate::tools().helm4, &refs).await?;
        let git = crate::GitServer::start().await?;
        let repo = git.create_repo("platform")?;
        repo.write(
            "profiles.yaml",
            layered_profiles(&charts.url(), &self.mesh_values),
        )?;
        repo.commit("layered platform")?;
        Ok(Scenario {
            strata: self.strata,
            cluster,
            kubeconfig,
            git,
            repo,
            charts,
            chart_dirs,
            helm: self.helm,
            dir,
        })
    }
}

impl Scenario {
    /// A scenario whose agents run `strata` (see [`strata_bin!`](crate::strata_bin)).
    pub fn builder(strata: &Path) -> Builder {
        Builder {
            strata: strata.to_path_buf(),
            helm: HelmBin::V4,
            mesh_values: "{}".to_string(),
            kubesim: kubesim::Config::default(),
        }
    }

    /// Start everything with `helm` and the mesh profile's values `mesh_values`.
    pub async fn start(strata: &Path, helm: HelmBin, mesh_values: &str) -> anyhow::Result<Self> {
        Self::builder(strata)
            .helm(helm)
            .mesh_values(mesh_values)
            .start()
            .await
    }

    /// Commit the profile list with other mesh values; returns the commit.
    pub fn commit_mesh_values(&self, mesh_values: &str, message: &str) -> anyhow::Result<String> {
        self.repo.write(
            "profiles.yaml",
            layered_profiles(&self.charts.url(), mesh_values),
        )?;
        self.repo.commit(message)
    }

    /// Put a chart `name` `version` made of `files` (path, text) into the chart repository.
    pub fn add_chart(
        &self,
        name: &str,
        version: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let annotations = profile_annotations(None, None);
        let chart = write_chart(
            &self.dir.path().join("charts"),
            &ChartSpec {
                name,
                version,
                annotations: &annotations,
                files,
            },
        )?;
        self.charts.add_chart(&chart)?;
        Ok(())
    }

    /// Commit the layered profile list plus a profile `broken` (namespace `broken`) whose Git
    /// chart's template does not parse: helm fails with a permanent error. Returns the commit.
    pub fn commit_broken_chart(&self) -> anyhow::Result<String> {
        let annotations = profile_annotations(Some("1"), None);
        write_chart(
            &self.repo.path().join("charts"),
            &ChartSpec {
                name: "broken",
                version: "0.1.0",
                annotations: &annotations,
                files: &[(
                    "templates/configmap.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  x: {{ .Values.x }\n",
                )],
            },
        )?;
        let profiles = format!(
            "{}  - name: broken\n    chart: {{path: charts/broken-0.1.0}}\n    namespace: broken\n",
            layered_profiles(&self.charts.url(), "{}")
        );
        self.repo.write("profiles.yaml", profiles)?;
        self.repo.commit("a chart with a broken template")
    }

    /// Arguments of `strata run` against this scenario.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = agent_args(
            &self.git.http_url("platform"),
            &self.kubeconfig,
            &self.helm.path(),
            &self.dir.path().join("work"),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Start `strata run` (continuous unless `extra` has `--once`).
    pub fn agent(&self, extra: &[&str], env: &[(String, String)]) -> anyhow::Result<Agent> {
        let n = std::fs::read_dir(self.dir.path())?.count();
        Agent::start(
            &self.strata,
            &self.args(extra),
            env,
            self.dir.path().join(format!("agent-{n}.log")),
        )
    }

    /// Start `strata run` with its own work dir `work` (for several agents at once).
    pub fn agent_in(
        &self,
        work: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Agent> {
        let mut args = self.args(extra);
        set_arg(
            &mut args,
            "--work-dir",
            self.dir.path().join(work).display().to_string(),
        );
        Agent::start(
            &self.strata,
            &args,
            env,
            self.dir.path().join(format!("agent-{work}.log")),
        )
    }

    /// The status the agent wrote into its ConfigMap.
    pub fn configmap_status(&self) -> Option<serde_json::Value> {
        crate::cluster::configmap_status(&self.cluster)
    }

    /// Writes (create/update/patch/delete) the API server saw, in order.
    pub fn writes(&self) -> Vec<kubesim::RequestRecord> {
        crate::cluster::writes(&self.cluster)
    }
}
