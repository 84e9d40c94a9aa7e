//! The layered scenario on the simulated cluster (kubesim); shared by the e2e tests that
//! need a cluster.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::e2e_support::{Agent, ChartSpec, profile_annotations, write_chart};

// ---------------------------------------------------------------------------------------
// The layered scenario: three profile charts modelled on cert-manager (layer 1), linkerd
// (layer 2, uses layer 1's Certificate kind) and flagger (layer 3, uses layer 2's kind). Like
// cert-manager with `installCRDs`, each ships its CRD in templates/, so installing them all
// in one helm release fails with "no matches for kind".
// ---------------------------------------------------------------------------------------

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

/// Which helm a scenario uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelmMajor {
    V4,
    V3,
}

impl HelmMajor {
    pub fn path(self) -> PathBuf {
        let t = testkit::tools();
        match self {
            HelmMajor::V4 => t.helm4,
            HelmMajor::V3 => t.helm3,
        }
    }
}

/// A simulated cluster, a Git server with the profile repository, a chart repository with
/// the layered charts, and a temp dir; everything is stopped on drop.
pub struct Scenario {
    pub cluster: kubesim::Cluster,
    pub kubeconfig: PathBuf,
    pub git: testkit::GitServer,
    pub repo: testkit::TestRepo,
    pub charts: testkit::ChartRepo,
    pub chart_dirs: [PathBuf; 3],
    pub helm: HelmMajor,
    pub dir: tempfile::TempDir,
}

/// The agent's own namespace in the scenarios.
pub const AGENT_NS: &str = "strata-system";

impl Scenario {
    /// Start everything and commit the profile list with `mesh_values`.
    pub async fn start(helm: HelmMajor, mesh_values: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let cluster = kubesim::start(kubesim::Config::default()).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig)?;
        cluster.store().create(
            &kubesim::ResourceKey::new("", "namespaces"),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NS}}),
        )?;
        let chart_dirs = layered_charts(&dir.path().join("charts"))?;
        let refs: Vec<&Path> = chart_dirs.iter().map(|d| d.as_path()).collect();
        let charts = testkit::ChartRepo::with_charts(&testkit::tools().helm4, &refs).await?;
        let git = testkit::GitServer::start().await?;
        let repo = git.create_repo("platform")?;
        repo.write(
            "profiles.yaml",
            layered_profiles(&charts.url(), mesh_values),
        )?;
        repo.commit("layered platform")?;
        Ok(Self {
            cluster,
            kubeconfig,
            git,
            repo,
            charts,
            chart_dirs,
            helm,
            dir,
        })
    }

    /// Arguments of `strata run` against this scenario.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--git-url".into(),
            self.git.http_url("platform"),
            "--git-ref".into(),
            "main".into(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--helm".into(),
            self.helm.path().display().to_string(),
            "--namespace".into(),
            AGENT_NS.into(),
            "--work-dir".into(),
            self.dir.path().join("work").display().to_string(),
            "--interval".into(),
            "1s".into(),
            "--log-level".into(),
            "info,strata=debug".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Start `strata run` (continuous unless `extra` has `--once`).
    pub fn agent(&self, extra: &[&str], env: &[(String, String)]) -> anyhow::Result<Agent> {
        let n = std::fs::read_dir(self.dir.path())?.count();
        Agent::start(
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
        let i = args
            .iter()
            .position(|a| a == "--work-dir")
            .expect("--work-dir");
        args[i + 1] = self.dir.path().join(work).display().to_string();
        Agent::start(
            &args,
            env,
            self.dir.path().join(format!("agent-{work}.log")),
        )
    }

    /// The status the agent wrote into its ConfigMap.
    pub fn configmap_status(&self) -> Option<serde_json::Value> {
        let cm = self.cluster.store().get(
            &kubesim::ResourceKey::new("", "configmaps"),
            Some(AGENT_NS),
            "strata-status",
        )?;
        serde_json::from_str(cm["data"]["status.json"].as_str()?).ok()
    }

    /// Writes (create/update/patch/delete) the API server saw, in order.
    pub fn writes(&self) -> Vec<kubesim::controls::RequestRecord> {
        self.cluster.controls().requests_where(|r| {
            matches!(
                r.verb.as_str(),
                "create" | "update" | "patch" | "delete" | "deletecollection"
            )
        })
    }
}

/// Whether a request writes into the given release namespace (objects in it, or the
/// Namespace object itself).
pub fn touches_namespace(r: &kubesim::controls::RequestRecord, ns: &str) -> bool {
    r.namespace == ns || (r.resource == "namespaces" && r.name == ns)
}

/// Parse an RFC 3339 time.
pub fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
}
