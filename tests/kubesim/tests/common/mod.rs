//! The shared fixture of kubesim's tests.
//!
//! - The end-to-end tests with the real helm and kubectl binaries ([`Sim`]): each test starts
//!   its own kubesim on 127.0.0.1 port 0, writes a kubeconfig into a temporary directory and
//!   runs helm / kubectl as child processes with isolated homes and caches.
//! - The API tests with kube-rs and raw HTTP ([`api`], [`client`], [`client_from`]), each a
//!   [`bounded_test!`].
#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The two helm majors every test runs with (`path`, `label`, `wait_flags`); the pinned
/// tools are located by [`testkit::tools`].
pub use testkit::HelmBin as Helm;

/// A test chart under `tests/kubesim/testdata/charts/`.
pub fn chart(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/charts")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// What a finished child process printed.
#[derive(Debug, Clone)]
pub struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the full output unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "`{}` failed:\n{self}", self.what);
        self
    }

    /// Panics with the full output unless the command failed.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(
            !self.success(),
            "`{}` unexpectedly succeeded:\n{self}",
            self.what
        );
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}):\n{self}", self.what))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// One simulated cluster plus a scratch directory for kubeconfig, helm homes and caches.
pub struct Sim {
    pub cluster: kubesim::Cluster,
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
}

impl Sim {
    pub async fn start() -> Sim {
        Self::start_with(kubesim::Config::default()).await
    }

    pub async fn start_with(cfg: kubesim::Config) -> Sim {
        let cluster = kubesim::start(cfg).await.expect("kubesim starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        cluster
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Sim {
            cluster,
            dir,
            kubeconfig,
        }
    }

    pub fn store(&self) -> kubesim::Store {
        self.cluster.store().clone()
    }

    /// The environment every child process gets: nothing from the user's home.
    fn base_command(&self, program: &Path, label: &str) -> tokio::process::Command {
        let home = self.dir.path().join(format!("home-{label}"));
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", home.join("kubecache"))
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_DATA_HOME", home.join("helm-data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// A helm command (not started), with `--kubeconfig` and isolated homes.
    pub fn helm_cmd(&self, v: Helm, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.base_command(&v.path(), v.label());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    pub async fn helm(&self, v: Helm, args: &[&str]) -> Out {
        let what = format!("{} {}", v.label(), args.join(" "));
        run(self.helm_cmd(v, args), what).await
    }

    pub async fn kubectl(&self, args: &[&str]) -> Out {
        let mut cmd = self.base_command(&testkit::tools().kubectl, "kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, format!("kubectl {}", args.join(" "))).await
    }

    /// kubectl with a manifest on stdin (`-f -`).
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Out {
        use tokio::io::AsyncWriteExt;
        let mut cmd = self.base_command(&testkit::tools().kubectl, "kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("kubectl starts");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("stdin written");
        drop(input);
        let out = child.wait_with_output().await.expect("kubectl runs");
        to_out(format!("kubectl {}", args.join(" ")), out, started)
    }

    pub fn get(&self, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.store()
            .get(&kubesim::ResourceKey::new(group, resource), Some(ns), name)
    }

    pub fn list(&self, group: &str, resource: &str, ns: &str) -> Vec<Value> {
        self.store()
            .list(&kubesim::ResourceKey::new(group, resource), Some(ns))
            .0
    }
}

impl Drop for Sim {
    /// When a test fails, print what the cluster held (one line per object with its status
    /// summary) and the last API requests, so the failure can be understood from the log.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut lines = vec!["--- kubesim objects at failure".to_owned()];
        if let Value::Object(by_resource) = self.store().dump() {
            for (resource, items) in by_resource {
                for o in items.as_array().into_iter().flatten() {
                    let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
                    let name = o["metadata"]["name"].as_str().unwrap_or("");
                    if ns.starts_with("kube-")
                        || resource == "secrets" && name.starts_with("sh.helm")
                    {
                        continue;
                    }
                    lines.push(format!("{resource} {ns}/{name} {}", status_summary(o)));
                }
            }
        }
        lines.push("--- last API requests".to_owned());
        let requests = self.cluster.controls().requests();
        for r in requests.iter().rev().take(40).rev() {
            lines.push(format!(
                "{} {} {}?{} -> {} ({})",
                r.time, r.method, r.path, r.query, r.code, r.user_agent
            ));
        }
        eprintln!("{}", lines.join("\n"));
    }
}

/// `phase`, readiness counts and True/False conditions of an object, in one short string.
pub fn status_summary(o: &Value) -> String {
    let s = &o["status"];
    let mut parts = Vec::new();
    if let Some(p) = s["phase"].as_str() {
        parts.push(p.to_owned());
    }
    for f in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "numberReady",
        "succeeded",
        "failed",
    ] {
        if let Some(n) = s[f].as_i64() {
            parts.push(format!("{f}={n}"));
        }
    }
    for c in s["conditions"].as_array().into_iter().flatten() {
        parts.push(format!(
            "{}={}{}",
            c["type"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            c["reason"]
                .as_str()
                .map(|r| format!("({r})"))
                .unwrap_or_default()
        ));
    }
    parts.join(" ")
}

async fn run(mut cmd: tokio::process::Command, what: String) -> Out {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`{what}` did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("`{what}` could not start: {e}"));
    to_out(what, out, started)
}

fn to_out(what: String, out: std::process::Output, started: Instant) -> Out {
    Out {
        what,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The condition `ty` of an object.
pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// Controlling owner's uid.
pub fn owner_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

/// One recorded change: (ADDED/MODIFIED/DELETED, resource plural, name, object).
pub type Seen = (String, String, String, Value);

/// Records every change the store makes, in order, from now on.
pub struct Recorder {
    events: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub fn start(sim: &Sim) -> Recorder {
        let mut rx = sim.store().subscribe();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Ok(ev) = rx.recv().await {
                let name = ev.name().to_owned();
                sink.lock().expect("recorder lock").push((
                    ev.kind.as_str().to_owned(),
                    ev.resource.resource.clone(),
                    name,
                    (*ev.object).clone(),
                ));
            }
        });
        Recorder { events, task }
    }

    pub fn events(&self) -> Vec<Seen> {
        self.events.lock().expect("recorder lock").clone()
    }

    /// Index of the first event matching, or a panic listing what was seen.
    #[track_caller]
    pub fn position(
        &self,
        kind: &str,
        resource: &str,
        name: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> usize {
        let events = self.events();
        events
            .iter()
            .position(|(k, r, n, o)| k == kind && r == resource && n == name && pred(o))
            .unwrap_or_else(|| {
                let seen: Vec<String> = events
                    .iter()
                    .map(|(k, r, n, _)| format!("{k} {r}/{n}"))
                    .collect();
                panic!(
                    "no matching {kind} {resource}/{name}; saw:\n{}",
                    seen.join("\n")
                )
            })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long an API test may take before it fails as hung.
pub const BOUND: Duration = Duration::from_secs(180);

/// Run `test` bounded by [`BOUND`]: a hang becomes a failure naming the test, not a stuck
/// suite.
pub async fn bounded(name: &str, test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(BOUND, test).await.is_err() {
        panic!("{name} did not finish within 180 s (kubesim or a client hung)");
    }
}

/// `bounded_test!(name, { body })`: the `#[tokio::test]` `name` running `body` under
/// [`bounded`] with its own name.
#[allow(unused_macros)] // Only the API tests use it.
macro_rules! bounded_test {
    ($name:ident, $body:block) => {
        #[tokio::test]
        async fn $name() {
            $crate::common::bounded(stringify!($name), async $body).await
        }
    };
}
#[allow(unused_imports)]
pub(crate) use bounded_test;

/// kubesim's configuration without the simulated controllers (API behaviour only).
pub fn no_controllers() -> kubesim::Config {
    kubesim::Config {
        controllers: None,
        ..kubesim::Config::default()
    }
}

/// A kubesim with `cfg`.
pub async fn cluster(cfg: kubesim::Config) -> kubesim::Cluster {
    kubesim::start(cfg).await.expect("kubesim starts")
}

/// A kubesim with `cfg` and a kube-rs client for it.
pub async fn api(cfg: kubesim::Config) -> (kubesim::Cluster, kube::Client) {
    let c = cluster(cfg).await;
    let client = client(&c).await;
    (c, client)
}

/// A kube-rs client for `c` (one per call, as separate processes would have).
pub async fn client(c: &kubesim::Cluster) -> kube::Client {
    testkit::cluster::kube_client(c).await
}

/// A kube-rs client from a kubeconfig's YAML.
pub async fn client_from(yaml: &str) -> kube::Client {
    kube::Client::try_from(testkit::cluster::kube_config_from_yaml(yaml).await).expect("client")
}
