//! Layered-install benchmark (not a timed test): how close strata gets to the fastest a
//! layered stack can be installed, side by side with the alternatives, in one run.
//!
//! Scenario (from parameters): `LAYERS_LAYERS` layers x `LAYERS_PER_LAYER` charts (default
//! 6 x 10), each a ConfigMap and a Deployment whose pods become ready after a delay spread
//! over 0.2-2.0 s (fixed per chart by `LAYERS_SEED`), every `LAYERS_HEAVY_EVERY`-th chart
//! (default none) with `LAYERS_HEAVY_OBJECTS` objects instead of two. Charts come from a real
//! chart repository, the profile list from a real Git server; each contestant gets a fresh
//! kubesim:
//!
//! - **bound**: per layer, one helm alone installing that layer's slowest chart, summed (the
//!   critical path: no tool that keeps the layer order can be faster);
//! - **sequential**: `helm upgrade --install --wait` of every chart, one after the other, in
//!   layer order (what a shell script does);
//! - **helmfile** (helm 3 only: helmfile 0.166 predates helm 4): `helmfile sync
//!   --concurrency 10`, each release `needs:` every release of the layer below;
//! - **strata** at its default concurrency (fitted to the machine) and at `--concurrency 10`.
//!
//! Every tool runs helm with strata's flags (`--wait` (helm 4: `--wait=watcher`),
//! `--wait-for-jobs`, `--create-namespace`). Printed per helm major: time to Ready and its
//! ratio to the bound, and for strata the layer handoff (from a layer's readyAt to the first
//! start in the next), helm processes, API requests by user agent (kubesim's request log), the
//! agent's peak RSS (VmHWM), a restart with nothing changed (time to Ready, helm processes) and
//! idle API requests per minute. `LAYERS_SCALE` (default `60,150,300`; empty: skip) adds a
//! series with helm 4 at those release counts (6 layers, every 10th chart with 50 objects):
//! strata against the bound, restart time, RSS, API requests per release, idle requests.
//!
//! ```console
//! cargo bench -p strata --bench layers                          # the whole benchmark
//! LAYERS_QUICK=1 cargo bench -p strata --bench layers           # 3 x 4, helm 4, no scale series
//! LAYERS_HELM=3 LAYERS_SCALE= cargo bench -p strata --bench layers
//! ```
//!
//! Environment: `LAYERS_LAYERS`, `LAYERS_PER_LAYER`, `LAYERS_HEAVY_EVERY`,
//! `LAYERS_HEAVY_OBJECTS` (50), `LAYERS_SEED` (1), `LAYERS_HELM` (`4,3`), `LAYERS_SCALE`,
//! `LAYERS_IDLE_SECS` (idle window, 30), `LAYERS_CONTESTANTS` (comma-separated names to run:
//! bound, sequential, helmfile, strata, strata-c10; default all), `LAYERS_QUICK`,
//! `LAYERS_LOG_DIR` (keep every agent's log there: the install and the restart, appended),
//! `LAYERS_LOG_LEVEL` (the agent's `--log-level`, default `info`), `LAYERS_DUMP_REQUESTS`
//! (print the install's API requests by client, verb and resource).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use testkit::agent::{Agent, agent_args, metric_sum, set_arg};
use testkit::chaos::env_usize;
use testkit::chart::{ChartSpec, profile_annotations, write_chart};
use testkit::{HelmBin, strata_bin};

/// The scenario's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub layers: usize,
    pub per_layer: usize,
    /// Every `heavy_every`-th chart (1-based over the whole list) has `heavy_objects`
    /// objects; 0: none.
    pub heavy_every: usize,
    pub heavy_objects: usize,
    pub seed: u64,
}

impl Shape {
    pub fn releases(&self) -> usize {
        self.layers * self.per_layer
    }

    /// The charts as (layer 1-based, name), in list order.
    pub fn charts(&self) -> Vec<(usize, String)> {
        (1..=self.layers)
            .flat_map(|l| (1..=self.per_layer).map(move |i| (l, chart_name(l, i))))
            .collect()
    }

    /// Objects of the `n`-th chart (0-based in list order).
    pub fn objects(&self, n: usize) -> usize {
        if self.heavy_every > 0 && (n + 1).is_multiple_of(self.heavy_every) {
            self.heavy_objects.max(2)
        } else {
            2
        }
    }

    /// The slowest chart of each layer (by its pods' readiness delay; the first on a tie).
    pub fn slowest_per_layer(&self) -> Vec<String> {
        (1..=self.layers)
            .map(|l| {
                let mut best = (0, chart_name(l, 1));
                for i in 1..=self.per_layer {
                    let d = delay_ms(self.seed, l, i);
                    if d > best.0 {
                        best = (d, chart_name(l, i));
                    }
                }
                best.1
            })
            .collect()
    }
}

pub fn chart_name(layer: usize, index: usize) -> String {
    format!("l{layer}-r{index}")
}

/// The readiness delay of chart `index` of `layer`: 200-2000 ms, fixed by `seed`.
pub fn delay_ms(seed: u64, layer: usize, index: usize) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((layer as u64) << 32 | index as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    200 + z % 1801
}

/// The profile list: one profile per chart from repository `bench`.
pub fn profiles_yaml(shape: &Shape, repo_url: &str) -> String {
    let mut s = format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: bench\n    \
         url: {repo_url}\ndefaults:\n  timeout: 120s\nprofiles:\n"
    );
    for (_, name) in shape.charts() {
        s.push_str(&format!(
            "  - name: {name}\n    chart: {{repository: bench, name: {name}}}\n    \
             version: \"1.0.0\"\n    namespace: {name}\n"
        ));
    }
    s
}

/// A helmfile with the same releases, each `needs:` every release of the layer below.
pub fn helmfile_yaml(shape: &Shape, repo_url: &str) -> String {
    let mut s = format!(
        "repositories:\n  - name: bench\n    url: {repo_url}\nhelmDefaults:\n  wait: true\n  \
         waitForJobs: true\n  timeout: 120\n  createNamespace: true\nreleases:\n"
    );
    for (layer, name) in shape.charts() {
        s.push_str(&format!(
            "  - name: {name}\n    namespace: {name}\n    chart: bench/{name}\n    version: 1.0.0\n"
        ));
        if layer > 1 {
            s.push_str("    needs:\n");
            for i in 1..=shape.per_layer {
                let below = chart_name(layer - 1, i);
                s.push_str(&format!("      - {below}/{below}\n"));
            }
        }
    }
    s
}

/// An RFC 3339 timestamp of the status (`readyAt`, `startedAt`).
fn timestamp(v: &serde_json::Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// Per layer boundary, the handoff: from layer N's `readyAt` to the first `startedAt` of a
/// release in layer N+1 (from strata's `/status`).
pub fn handoffs(status: &serde_json::Value) -> Vec<Duration> {
    let layers: Vec<&serde_json::Value> =
        status["layers"].as_array().into_iter().flatten().collect();
    layers
        .windows(2)
        .filter_map(|w| {
            let ready = timestamp(&w[0]["readyAt"])?;
            let first = w[1]["releases"]
                .as_array()?
                .iter()
                .filter_map(|r| timestamp(&r["startedAt"]))
                .min()?;
            let d = first.duration_since(ready);
            Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
        })
        .collect()
}

/// A time as a ratio to the bound, e.g. `1.23x`.
pub fn ratio(time: Duration, bound: Duration) -> String {
    format!("{:.2}x", time.as_secs_f64() / bound.as_secs_f64().max(1e-9))
}

fn chart_files(delay: u64, objects: usize) -> Vec<(&'static str, String)> {
    let deployment = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Release.Name }}}}-app
  annotations:
    kubesim.strata.dev/ready-after: "{delay}ms"
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{{{ .Release.Name }}}}
  template:
    metadata:
      labels:
        app: {{{{ .Release.Name }}}}
    spec:
      containers:
        - name: main
          image: example.com/{{{{ .Release.Name }}}}:1
"#
    );
    let mut files = vec![
        (
            "templates/configmap.yaml",
            testkit::chart::CONFIGMAP_TEMPLATE.to_string(),
        ),
        ("templates/deployment.yaml", deployment),
    ];
    if objects > 2 {
        files.push((
            "templates/extra.yaml",
            format!(
                "{{{{- range $i := until {} }}}}\n---\napiVersion: v1\nkind: ConfigMap\n\
                 metadata:\n  name: {{{{ $.Release.Name }}}}-extra-{{{{ $i }}}}\ndata:\n  \
                 n: \"{{{{ $i }}}}\"\n{{{{- end }}}}\n",
                objects - 2
            ),
        ));
    }
    files
}

struct World {
    dir: tempfile::TempDir,
    git: testkit::GitServer,
    charts: testkit::ChartRepo,
    commit: String,
    repo: String,
}

async fn world(shape: &Shape, repo: &str) -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("charts");
    let mut dirs = Vec::new();
    for (n, (layer, name)) in shape.charts().into_iter().enumerate() {
        let index: usize = name.rsplit('r').next().unwrap_or("1").parse()?;
        let layer_text = layer.to_string();
        let annotations = profile_annotations(Some(&layer_text), None);
        let files = chart_files(delay_ms(shape.seed, layer, index), shape.objects(n));
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        dirs.push(write_chart(
            &root,
            &ChartSpec {
                name: &name,
                version: "1.0.0",
                annotations: &annotations,
                files: &refs,
            },
        )?);
    }
    let refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
    let charts = testkit::ChartRepo::with_charts(&testkit::tools().helm4, &refs).await?;
    let git = testkit::GitServer::start().await?;
    let r = git.create_repo(repo)?;
    r.write("profiles.yaml", profiles_yaml(shape, &charts.url()))?;
    let commit = r.commit("the benchmark's stack")?;
    Ok(World {
        dir,
        git,
        charts,
        commit,
        repo: repo.into(),
    })
}

/// A fresh kubesim and its kubeconfig.
async fn cluster(w: &World, n: &mut usize) -> anyhow::Result<(kubesim::Cluster, PathBuf)> {
    *n += 1;
    let kubeconfig = w.dir.path().join(format!("kubeconfig-{n}"));
    let c = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    Ok((c, kubeconfig))
}

/// helm's environment: its own home, cache and config under `home`.
fn helm_env(cmd: &mut tokio::process::Command, home: &Path, kubeconfig: &Path) {
    cmd.env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
}

/// `helm upgrade --install` of one chart with strata's flags, timed.
async fn helm_install(
    helm: HelmBin,
    w: &World,
    kubeconfig: &Path,
    name: &str,
) -> anyhow::Result<Duration> {
    let home = w.dir.path().join(format!("helm-home-{}", helm.major()));
    let mut cmd = tokio::process::Command::new(helm.path());
    helm_env(&mut cmd, &home, kubeconfig);
    cmd.args(["upgrade", "--install", name, name, "--repo"])
        .arg(w.charts.url())
        .args([
            "--version",
            "1.0.0",
            "--namespace",
            name,
            "--timeout",
            "120s",
        ])
        .arg(if helm.major() >= 4 {
            "--wait=watcher"
        } else {
            "--wait"
        })
        .args(["--wait-for-jobs", "--create-namespace"]);
    let start = Instant::now();
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "helm install {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed())
}

async fn bound(helm: HelmBin, w: &World, shape: &Shape, n: &mut usize) -> anyhow::Result<Duration> {
    let (c, kubeconfig) = cluster(w, n).await?;
    let mut total = Duration::ZERO;
    for name in shape.slowest_per_layer() {
        total += helm_install(helm, w, &kubeconfig, &name).await?;
    }
    c.shutdown().await;
    Ok(total)
}

async fn sequential(
    helm: HelmBin,
    w: &World,
    shape: &Shape,
    n: &mut usize,
) -> anyhow::Result<Duration> {
    let (c, kubeconfig) = cluster(w, n).await?;
    let start = Instant::now();
    for (_, name) in shape.charts() {
        helm_install(helm, w, &kubeconfig, &name).await?;
    }
    let t = start.elapsed();
    c.shutdown().await;
    Ok(t)
}

fn helmfile_bin() -> PathBuf {
    testkit::tools::dir().join("helmfile/helmfile")
}

async fn helmfile(
    helm: HelmBin,
    w: &World,
    shape: &Shape,
    n: &mut usize,
) -> anyhow::Result<Duration> {
    let (c, kubeconfig) = cluster(w, n).await?;
    let file = w.dir.path().join(format!("helmfile-{n}.yaml"));
    std::fs::write(&file, helmfile_yaml(shape, &w.charts.url()))?;
    let home = w.dir.path().join(format!("helmfile-home-{n}"));
    let mut cmd = tokio::process::Command::new(helmfile_bin());
    helm_env(&mut cmd, &home, &kubeconfig);
    cmd.arg("--helm-binary")
        .arg(helm.path())
        .arg("--file")
        .arg(&file)
        .args(["sync", "--concurrency", "10"]);
    let start = Instant::now();
    let out = cmd.output().await?;
    let t = start.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "helmfile sync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.shutdown().await;
    Ok(t)
}

/// What a strata run gave.
#[derive(Debug, Default, Clone)]
pub struct StrataRun {
    pub time: Duration,
    pub handoffs: Vec<Duration>,
    pub helm_processes: u64,
    pub requests: std::collections::BTreeMap<String, u64>,
    pub peak_rss_kib: u64,
    pub restart: Duration,
    pub restart_helm_upgrades: u64,
    pub idle_per_minute: f64,
    /// The idle requests by verb and resource.
    pub idle_requests: std::collections::BTreeMap<String, u64>,
    pub concurrency: String,
    /// CPU seconds of the agent itself and of its (finished) helm processes, up to Ready.
    pub cpu_agent: f64,
    pub cpu_helm: f64,
    /// CPU seconds of this process (kubesim, the Git and chart servers) over the same time.
    pub cpu_cluster: f64,
}

/// (own, children's) CPU seconds of a process from /proc/PID/stat (utime + stime, cutime +
/// cstime: children count once they have been waited for).
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime is field 14 of the line, the 12th after the name.
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    (at(11) + at(12), at(13) + at(14))
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Time from `start` (the agent's launch, at wall clock `started`) to Ready at `commit`: the
/// latest `readyAt` of the layers in `/status`, so that neither the poll interval (250 ms) nor
/// what a poll costs the agent (it serializes the whole status) shows in the time.
async fn until_ready(
    agent: &mut Agent,
    commit: &str,
    start: Instant,
    started: jiff::Timestamp,
) -> anyhow::Result<Duration> {
    loop {
        if let Some(st) = agent.status().await
            && st["phase"] == "Ready"
            && st["revision"]["commit"] == commit
        {
            let ready_at = st["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| timestamp(&l["readyAt"]))
                .max();
            return Ok(ready_at
                .and_then(|t| Duration::try_from(t.duration_since(started)).ok())
                .unwrap_or_else(|| start.elapsed()));
        }
        if let Ok(Some(exit)) = agent.child.try_wait() {
            anyhow::bail!("strata exited ({exit}):\n{}", agent.logs());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(900),
            "not Ready within 15 minutes:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn strata(
    helm: HelmBin,
    w: &World,
    concurrency: Option<u16>,
    idle: Duration,
    n: &mut usize,
) -> anyhow::Result<StrataRun> {
    let (c, kubeconfig) = cluster(w, n).await?;
    let work = w.dir.path().join(format!("work-{n}"));
    let mut args = agent_args(&w.git.http_url(&w.repo), &kubeconfig, &helm.path(), &work);
    set_arg(&mut args, "--interval", "10m");
    let level = std::env::var("LAYERS_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    set_arg(&mut args, "--log-level", &level);
    if let Some(c) = concurrency {
        args.extend(["--concurrency".to_string(), c.to_string()]);
    }
    let log = w.dir.path().join(format!("agent-{n}.log"));
    let (start, started) = (Instant::now(), jiff::Timestamp::now());
    let cluster_cpu = cpu_seconds(std::process::id()).0;
    let mut agent = Agent::start_in_group(strata_bin!(), &args, &[], log.clone())?;
    let mut out = StrataRun {
        time: until_ready(&mut agent, &w.commit, start, started).await?,
        ..StrataRun::default()
    };
    (out.cpu_agent, out.cpu_helm) = agent.child.id().map_or((0.0, 0.0), cpu_seconds);
    out.cpu_cluster = cpu_seconds(std::process::id()).0 - cluster_cpu;
    let status = agent.status().await.unwrap_or_default();
    out.handoffs = handoffs(&status);
    out.concurrency = format!(
        "{} ({})",
        status["concurrency"]["value"],
        status["concurrency"]["reason"].as_str().unwrap_or("")
    );
    let metrics = agent.metrics().await.unwrap_or_default();
    out.helm_processes =
        metric_sum(&metrics, "strata_helm_command_duration_seconds_count", "") as u64;
    out.requests = c.controls().counts().by_user_agent;
    if std::env::var("LAYERS_DUMP_REQUESTS").is_ok_and(|v| !v.is_empty()) {
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        for r in c.controls().requests() {
            let agent = r.user_agent.split('/').next().unwrap_or("").to_string();
            *by.entry(format!(
                "{agent} {} {} {}",
                r.verb, r.resource, r.subresource
            ))
            .or_default() += 1;
        }
        eprintln!("requests by agent, verb, resource: {by:#?}");
    }
    // Idle: nothing changes; what the agent asks the API per minute. The install's tail (its
    // Events and the last, throttled, status ConfigMap write) is let through first.
    let settling = Instant::now();
    while !testkit::cluster::configmap_status(&c).is_some_and(|s| s["phase"] == "Ready")
        && settling.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.controls().reset_requests();
    tokio::time::sleep(idle).await;
    let idle_log = c
        .controls()
        .requests_where(|r| r.user_agent.starts_with("strata/"));
    for r in &idle_log {
        *out.idle_requests
            .entry(format!("{} {}", r.verb, r.resource))
            .or_default() += 1;
    }
    out.idle_per_minute = idle_log.len() as f64 * 60.0 / idle.as_secs_f64();
    out.peak_rss_kib = agent.child.id().map_or(0, vm_hwm_kib);
    agent.stop().await?;
    // A restart with nothing changed.
    let (start, started) = (Instant::now(), jiff::Timestamp::now());
    let mut agent = Agent::start_in_group(strata_bin!(), &args, &[], log.clone())?;
    out.restart = until_ready(&mut agent, &w.commit, start, started).await?;
    let metrics = agent.metrics().await.unwrap_or_default();
    out.restart_helm_upgrades = metric_sum(
        &metrics,
        "strata_helm_command_duration_seconds_count",
        "command=\"upgrade\"",
    ) as u64;
    agent.stop().await?;
    if let Ok(keep) = std::env::var("LAYERS_LOG_DIR") {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&log, Path::new(&keep).join(format!("agent-{n}.log")));
    }
    c.shutdown().await;
    Ok(out)
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn strata_line(name: &str, r: &StrataRun, bound: Duration) -> String {
    let requests: Vec<String> = r.requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "| {name} | {:.1?} | {} | {:.0?} / {:.0?} | {} | {} | {} MiB | {:.2?} ({} upgrades) | {:.1} |\n",
        r.time,
        ratio(r.time, bound),
        median(&r.handoffs),
        r.handoffs.iter().max().copied().unwrap_or_default(),
        r.helm_processes,
        requests.join(", "),
        r.peak_rss_kib / 1024,
        r.restart,
        r.restart_helm_upgrades,
        r.idle_per_minute,
    )
}

async fn bench() -> anyhow::Result<()> {
    let quick = std::env::var("LAYERS_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let shape = Shape {
        layers: env_usize("LAYERS_LAYERS", if quick { 3 } else { 6 }),
        per_layer: env_usize("LAYERS_PER_LAYER", if quick { 4 } else { 10 }),
        heavy_every: env_usize("LAYERS_HEAVY_EVERY", 0),
        heavy_objects: env_usize("LAYERS_HEAVY_OBJECTS", 50),
        seed: env_usize("LAYERS_SEED", 1) as u64,
    };
    let idle =
        Duration::from_secs(env_usize("LAYERS_IDLE_SECS", if quick { 5 } else { 30 }) as u64);
    let helms: Vec<HelmBin> = std::env::var("LAYERS_HELM")
        .unwrap_or_else(|_| if quick { "4".into() } else { "4,3".into() })
        .split(',')
        .map(|h| match h.trim() {
            "3" => Ok(HelmBin::V3),
            "4" => Ok(HelmBin::V4),
            other => Err(anyhow::anyhow!("LAYERS_HELM: {other:?} is not 3 or 4")),
        })
        .collect::<anyhow::Result<_>>()?;
    let scale: Vec<usize> = std::env::var("LAYERS_SCALE")
        .unwrap_or_else(|_| {
            if quick {
                String::new()
            } else {
                "60,150,300".into()
            }
        })
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let only: Option<Vec<String>> = std::env::var("LAYERS_CONTESTANTS")
        .ok()
        .map(|s| s.split(',').map(|m| m.trim().to_string()).collect());
    let runs = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    eprintln!(
        "layers benchmark: {} layers x {} charts (delays 0.2-2.0 s, seed {}), helm {helms:?}, \
         idle window {idle:?}, scale series {scale:?}",
        shape.layers, shape.per_layer, shape.seed
    );
    let w = world(&shape, "bench").await?;
    let mut n = 0;
    let mut out = String::new();
    for helm in helms {
        let b = bound(helm, &w, &shape, &mut n).await?;
        eprintln!("  helm {}: bound {b:.1?}", helm.major());
        let mut table = format!(
            "\nhelm {}, {} layers x {} charts: bound (critical path) {b:.1?}\n\n\
             | contestant | time to Ready | / bound |\n|---|---|---|\n",
            helm.major(),
            shape.layers,
            shape.per_layer
        );
        let mut strata_rows = String::new();
        if runs("sequential") {
            let t = sequential(helm, &w, &shape, &mut n).await?;
            eprintln!("  helm {}: sequential {t:.1?}", helm.major());
            table.push_str(&format!(
                "| sequential helm script | {t:.1?} | {} |\n",
                ratio(t, b)
            ));
        }
        if runs("helmfile") {
            if helm.major() >= 4 {
                table.push_str(
                    "| helmfile 0.166 sync --concurrency 10 | - (predates helm 4) | - |\n",
                );
            } else if helmfile_bin().exists() {
                let t = helmfile(helm, &w, &shape, &mut n).await?;
                eprintln!("  helm {}: helmfile {t:.1?}", helm.major());
                table.push_str(&format!(
                    "| helmfile 0.166 sync --concurrency 10 | {t:.1?} | {} |\n",
                    ratio(t, b)
                ));
            } else {
                table.push_str("| helmfile | - (not installed: scripts/install-tools.sh) | - |\n");
            }
        }
        for (name, concurrency) in [("strata", None), ("strata-c10", Some(10))] {
            if !runs(name) {
                continue;
            }
            let r = strata(helm, &w, concurrency, idle, &mut n).await?;
            let label = match concurrency {
                None => format!("strata, default concurrency {}", r.concurrency),
                Some(c) => format!("strata --concurrency {c}"),
            };
            eprintln!(
                "  helm {}: {label}: {:.1?}; idle requests by verb and resource: {:?}",
                helm.major(),
                r.time,
                r.idle_requests
            );
            table.push_str(&format!(
                "| {label} | {:.1?} | {} |\n",
                r.time,
                ratio(r.time, b)
            ));
            strata_rows.push_str(&strata_line(&label, &r, b));
        }
        if !strata_rows.is_empty() {
            table.push_str(
                "\n| strata | time | / bound | handoff median / max | helm processes | API \
                 requests by user agent | peak RSS | restart, nothing changed | idle requests/min |\n\
                 |---|---|---|---|---|---|---|---|---|\n",
            );
            table.push_str(&strata_rows);
        }
        eprint!("{table}");
        out.push_str(&table);
    }
    if !scale.is_empty() {
        let mut table = String::from(
            "\nscale series, helm 4, 6 layers, every 10th chart with 50 objects\n\n\
             | releases | bound | strata | / bound | helm processes | CPU s: agent / helm / kubesim | strata \
             API requests per release | peak RSS | restart, nothing changed | idle requests/min |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for releases in scale {
            let s = Shape {
                layers: 6,
                per_layer: releases.div_ceil(6),
                heavy_every: 10,
                heavy_objects: 50,
                seed: shape.seed,
            };
            let w = world(&s, &format!("scale-{releases}")).await?;
            let b = bound(HelmBin::V4, &w, &s, &mut n).await?;
            let r = strata(HelmBin::V4, &w, None, idle, &mut n).await?;
            let per_release =
                r.requests.get("strata").copied().unwrap_or(0) as f64 / s.releases() as f64;
            let line = format!(
                "| {} | {b:.1?} | {:.1?} | {} | {} | {:.1} / {:.1} / {:.1} | {per_release:.1} | {} MiB | {:.2?} ({} upgrades) | {:.1} |\n",
                s.releases(),
                r.time,
                ratio(r.time, b),
                r.helm_processes,
                r.cpu_agent,
                r.cpu_helm,
                r.cpu_cluster,
                r.peak_rss_kib / 1024,
                r.restart,
                r.restart_helm_upgrades,
                r.idle_per_minute,
            );
            eprint!("  {line}");
            table.push_str(&line);
        }
        eprint!("{table}");
        out.push_str(&table);
    }
    println!("layers benchmark:{out}");
    Ok(())
}

fn main() -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layers benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
