//! Fault benchmark (not a timed test): how much longer strata takes to get a stack Ready
//! when the Kubernetes API fails some of its requests.
//!
//! Scenario: 3 layers x 5 releases (a ConfigMap and a Deployment each) from a real Git server
//! and a real chart repository, installed by the real `strata run --interval 10m` with real
//! helm on a fresh kubesim per run, until `/status` says Ready. Fault modes, injected by
//! kubesim on every verb (get, list, watch, create, update, patch, delete): 1%, 3% and 10%
//! HTTP 500, 10% HTTP 429 with `Retry-After: 1`, each without and with latency jitter
//! (uniform 0-100 ms added to every request, i.e. 50 ms +- 50 ms). Each mode runs with
//! several seeds (kubesim's fault seed, printed); the fault-free runs of the same bench run
//! are the baseline: without jitter for the modes without, with jitter for the modes with
//! (jitter alone slows every helm run; the ratio is what the faults add). The table also
//! gives each median against the fault-free runs without jitter (`median/plain`).
//!
//! Per run: converged or not (deadline 5 min), any release Stalled, any remediation
//! (`strata_remediations_total`), release failures, transient retries, time to Ready. The
//! table gives per mode the median and max time to Ready as a ratio to its fault-free median,
//! and the targets (<= 2x at 1%, <= 3x at 3%, <= 6x at 10%; a row passes when its median
//! ratio is within the target). Exit status 1 when a run did not converge, stalled or
//! remediated.
//!
//! ```console
//! cargo bench -p strata --bench faults                      # 10 seeds, helm 4 and helm 3
//! FAULTS_QUICK=1 cargo bench -p strata --bench faults       # 1 seed, helm 4
//! FAULTS_SEEDS=3 FAULTS_HELM=4 cargo bench -p strata --bench faults
//! ```
//!
//! Environment: `FAULTS_SEEDS` (runs per mode, default 10; 1 with `FAULTS_QUICK=1`),
//! `FAULTS_HELM` (`4,3` by default; `4` with `FAULTS_QUICK=1`), `FAULTS_SEED` (first seed;
//! from the clock by default, printed), `FAULTS_BASELINE` (fault-free runs, default
//! `min(seeds, 3)`), `FAULTS_MODES` (comma-separated mode names to run, default all),
//! `FAULTS_DEADLINE_SECS` (per run, default 300), `FAULTS_LOG_DIR` (keep every agent's log
//! there, named by mode, seed and run).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kubesim::ErrorRule;
use testkit::agent::{Agent, agent_args, metric_sum, set_arg};
use testkit::chaos::{env_usize, min_median_max, seed_from_env};
use testkit::chart::{ChartSpec, profile_annotations, write_chart};
use testkit::release::{latest, pending};
use testkit::{HelmBin, strata_bin};

/// Layers and releases per layer.
pub const LAYERS: usize = 3;
pub const PER_LAYER: usize = 5;

/// The verbs every fault rule is added for.
pub const VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// One fault mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    pub name: String,
    /// (HTTP code, rate); None: fault-free.
    pub error: Option<(u16, f64)>,
    /// Uniform 0-100 ms latency added to every request.
    pub jitter: bool,
    /// Largest median ratio to the fault-free median that passes.
    pub target: Option<f64>,
}

/// The two baselines (fault-free, without and with jitter) and the eight fault modes, in
/// table order.
pub fn modes() -> Vec<Mode> {
    let mut v: Vec<Mode> = [false, true]
        .into_iter()
        .map(|jitter| Mode {
            name: if jitter {
                "fault-free +jitter".into()
            } else {
                "fault-free".into()
            },
            error: None,
            jitter,
            target: None,
        })
        .collect();
    for (code, rate, target) in [
        (500, 0.01, 2.0),
        (500, 0.03, 3.0),
        (500, 0.10, 6.0),
        (429, 0.10, 6.0),
    ] {
        for jitter in [false, true] {
            v.push(Mode {
                name: format!(
                    "{}% {code}{}",
                    (rate * 100.0_f64).round(),
                    if jitter { " +jitter" } else { "" }
                ),
                error: Some((code, rate)),
                jitter,
                target: Some(target),
            });
        }
    }
    v
}

/// The name of the fault-free mode a mode's time is compared with: the one with the same
/// latency (jitter slows every request, faults or not; the ratio is what the faults cost).
pub fn baseline_of(mode: &Mode) -> &'static str {
    if mode.jitter {
        "fault-free +jitter"
    } else {
        "fault-free"
    }
}

/// Applies a mode's faults to a cluster.
pub fn apply(mode: &Mode, controls: &kubesim::Controls) {
    if let Some((code, rate)) = mode.error {
        for verb in VERBS {
            controls.add_error(ErrorRule {
                verb: Some(verb.into()),
                rate,
                code,
                retry_after_seconds: (code == 429).then_some(1),
                ..ErrorRule::default()
            });
        }
    }
    if mode.jitter {
        controls.set_latency(Duration::ZERO, Duration::from_millis(100));
    }
}

/// What one run gave.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub seed: u64,
    pub converged: bool,
    pub stalled: bool,
    pub remediated: bool,
    pub release_failures: f64,
    pub transient_retries: f64,
    pub time: Duration,
    pub note: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.converged && !self.stalled && !self.remediated
    }
}

/// One table row: a mode's runs against the baseline median.
#[derive(Debug, Clone)]
pub struct Row {
    pub median_ratio: f64,
    pub max_ratio: f64,
    /// None: no target (the baseline).
    pub pass: Option<bool>,
}

/// Ratios of a mode's converged runs to the baseline median; the row fails when a run did
/// not converge, stalled or remediated, or the median ratio is above the target.
pub fn row(mode: &Mode, runs: &[Run], baseline_median: Duration) -> Row {
    let times: Vec<Duration> = runs
        .iter()
        .filter(|r| r.converged)
        .map(|r| r.time)
        .collect();
    let (_, median, max) = min_median_max(&times);
    let base = baseline_median.as_secs_f64().max(1e-9);
    let median_ratio = median.as_secs_f64() / base;
    let max_ratio = max.as_secs_f64() / base;
    let pass = mode
        .target
        .map(|t| runs.iter().all(Run::ok) && !times.is_empty() && median_ratio <= t);
    Row {
        median_ratio,
        max_ratio,
        pass,
    }
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
  annotations:
    kubesim.strata.dev/ready-after: "200ms"
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: main
          image: example.com/{{ .Release.Name }}:1
"#;

/// The 15 charts (`l<layer>-r<i>`), written under `root`.
fn charts(root: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut dirs = Vec::new();
    for l in 1..=LAYERS {
        let layer = l.to_string();
        let annotations = profile_annotations(Some(&layer), None);
        for i in 1..=PER_LAYER {
            let name = format!("l{l}-r{i}");
            dirs.push(write_chart(
                root,
                &ChartSpec {
                    name: &name,
                    version: "1.0.0",
                    annotations: &annotations,
                    files: &[
                        (
                            "templates/configmap.yaml",
                            testkit::chart::CONFIGMAP_TEMPLATE,
                        ),
                        ("templates/deployment.yaml", DEPLOYMENT),
                    ],
                },
            )?);
        }
    }
    Ok(dirs)
}

fn profiles(repo_url: &str) -> String {
    let mut s = format!(
        "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nrepositories:\n  - name: bench\n    \
         url: {repo_url}\ndefaults:\n  timeout: 120s\nprofiles:\n"
    );
    for l in 1..=LAYERS {
        for i in 1..=PER_LAYER {
            let name = format!("l{l}-r{i}");
            s.push_str(&format!(
                "  - name: {name}\n    chart: {{repository: bench, name: {name}}}\n    \
                 version: \"1.0.0\"\n    namespace: {name}\n"
            ));
        }
    }
    s
}

struct World {
    dir: tempfile::TempDir,
    git: testkit::GitServer,
    _charts: testkit::ChartRepo,
    commit: String,
}

async fn world() -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let dirs = charts(&dir.path().join("charts"))?;
    let refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
    let charts = testkit::ChartRepo::with_charts(&testkit::tools().helm4, &refs).await?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("bench")?;
    repo.write("profiles.yaml", profiles(&charts.url()))?;
    let commit = repo.commit("3 layers x 5 releases")?;
    Ok(World {
        dir,
        git,
        _charts: charts,
        commit,
    })
}

/// One run: a fresh kubesim with `mode`'s faults, `strata run --interval 10m` until Ready.
async fn run(
    w: &World,
    helm: HelmBin,
    mode: &Mode,
    seed: u64,
    n: usize,
    deadline: Duration,
) -> anyhow::Result<Run> {
    let kubeconfig = w.dir.path().join(format!("kubeconfig-{n}"));
    let cluster = testkit::cluster::start(
        kubesim::Config {
            fault_seed: seed,
            ..kubesim::Config::default()
        },
        &kubeconfig,
    )
    .await?;
    apply(mode, cluster.controls());
    let mut args = agent_args(
        &w.git.http_url("bench"),
        &kubeconfig,
        &helm.path(),
        &w.dir.path().join(format!("work-{n}")),
    );
    set_arg(&mut args, "--interval", "10m");
    set_arg(&mut args, "--log-level", "info");
    let log = w.dir.path().join(format!("agent-{n}.log"));
    let start = Instant::now();
    let mut agent = Agent::start_in_group(strata_bin!(), &args, &[], log.clone())?;
    let mut out = Run {
        seed,
        ..Run::default()
    };
    loop {
        if let Some(st) = agent.status().await {
            let releases = st["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|l| l["releases"].as_array().into_iter().flatten());
            for r in releases {
                if r["action"] == "stalled" {
                    out.stalled = true;
                }
                if !r["lastRemediation"].is_null() {
                    out.remediated = true;
                }
            }
            if st["phase"] == "Ready" && st["revision"]["commit"] == w.commit.as_str() {
                out.time = start.elapsed();
                let deployed = latest(&cluster)
                    .iter()
                    .filter(|r| r.status == "deployed")
                    .count();
                let left = pending(&cluster);
                if deployed == LAYERS * PER_LAYER && left.is_empty() {
                    out.converged = true;
                } else {
                    out.note = format!("Ready with {deployed} deployed, pending {left:?}");
                }
                break;
            }
        }
        if let Ok(Some(exit)) = agent.child.try_wait() {
            out.note = format!("strata exited ({exit})");
            break;
        }
        if start.elapsed() > deadline {
            out.note = format!("not Ready within {deadline:?}");
            out.time = start.elapsed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(m) = agent.metrics().await {
        out.remediated |= metric_sum(&m, "strata_remediations_total", "") > 0.0;
        out.release_failures = metric_sum(&m, "strata_release_failures_total", "");
        out.transient_retries = metric_sum(&m, "strata_transient_retries_total", "");
    }
    if !out.ok() && out.note.is_empty() {
        out.note = "stalled or remediated".into();
    }
    if out.note.is_empty() {
        agent.stop().await?;
    } else {
        let _ = agent.kill_tree().await;
        let tail: Vec<String> = agent
            .logs()
            .lines()
            .rev()
            .take(30)
            .map(String::from)
            .collect();
        let tail: Vec<String> = tail.into_iter().rev().collect();
        out.note = format!("{}; log tail:\n{}", out.note, tail.join("\n"));
    }
    if let Ok(keep) = std::env::var("FAULTS_LOG_DIR") {
        let name = format!("{}-{seed}-{n}.log", mode.name.replace(['%', ' ', '+'], ""));
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&log, Path::new(&keep).join(name));
    }
    cluster.shutdown().await;
    Ok(out)
}

async fn bench() -> anyhow::Result<bool> {
    let quick = std::env::var("FAULTS_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let seeds = env_usize("FAULTS_SEEDS", if quick { 1 } else { 10 }).max(1);
    let baseline_runs = env_usize("FAULTS_BASELINE", seeds.min(3)).max(1);
    let deadline = Duration::from_secs(env_usize("FAULTS_DEADLINE_SECS", 300) as u64);
    let helms: Vec<HelmBin> = std::env::var("FAULTS_HELM")
        .unwrap_or_else(|_| if quick { "4".into() } else { "4,3".into() })
        .split(',')
        .map(|h| match h.trim() {
            "3" => Ok(HelmBin::V3),
            "4" => Ok(HelmBin::V4),
            other => Err(anyhow::anyhow!("FAULTS_HELM: {other:?} is not 3 or 4")),
        })
        .collect::<anyhow::Result<_>>()?;
    let only: Option<Vec<String>> = std::env::var("FAULTS_MODES")
        .ok()
        .map(|s| s.split(',').map(|m| m.trim().to_string()).collect());
    let first_seed = seed_from_env("FAULTS_SEED");
    eprintln!(
        "fault benchmark: {LAYERS} layers x {PER_LAYER} releases, helm {helms:?}, {seeds} seed(s) \
         per mode, {baseline_runs} fault-free run(s), deadline {deadline:?}, first seed \
         {first_seed} (replay with FAULTS_SEED={first_seed})"
    );
    let w = world().await?;
    let mut all_ok = true;
    let mut tables = Vec::new();
    let mut n = 0;
    for helm in helms {
        let mut results: Vec<(Mode, Vec<Run>)> = Vec::new();
        for mode in modes() {
            let baseline = mode.error.is_none();
            if !baseline && only.as_ref().is_some_and(|o| !o.contains(&mode.name)) {
                continue;
            }
            let count = if baseline { baseline_runs } else { seeds };
            let mut runs = Vec::new();
            for i in 0..count {
                let seed = first_seed.wrapping_add(i as u64);
                n += 1;
                let r = run(&w, helm, &mode, seed, n, deadline).await?;
                eprintln!(
                    "  {helm:?} {:<16} seed {seed}: {} in {:.1?} (release failures {}, transient \
                     retries {}){}",
                    mode.name,
                    if r.ok() { "Ready" } else { "FAILED" },
                    r.time,
                    r.release_failures,
                    r.transient_retries,
                    if r.ok() {
                        String::new()
                    } else {
                        format!(": {}", r.note)
                    }
                );
                all_ok &= r.ok();
                runs.push(r);
            }
            results.push((mode, runs));
        }
        let median_of = |name: &str| {
            let times: Vec<Duration> = results
                .iter()
                .filter(|(m, _)| m.name == name)
                .flat_map(|(_, runs)| runs.iter().filter(|r| r.converged).map(|r| r.time))
                .collect();
            min_median_max(&times).1
        };
        let plain = median_of("fault-free");
        let jittered = median_of("fault-free +jitter");
        let mut table = format!(
            "\nhelm {}: fault-free median {:.1?}, with jitter {:.1?} ({baseline_runs} runs each); \
             a mode is compared with the fault-free runs of the same latency (/ff), and with \
             the fault-free runs without jitter (/plain)\n\
             | mode | runs | ok | stalled | remediated | median | max | median/ff | max/ff | median/plain | target | pass |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            helm.major(),
            plain,
            jittered,
        );
        for (mode, runs) in &results {
            let times: Vec<Duration> = runs
                .iter()
                .filter(|r| r.converged)
                .map(|r| r.time)
                .collect();
            let (_, median, max) = min_median_max(&times);
            let row = row(mode, runs, median_of(baseline_of(mode)));
            table.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1?} | {:.1?} | {:.2}x | {:.2}x | {:.2}x | {} | {} |\n",
                mode.name,
                runs.len(),
                runs.iter().filter(|r| r.ok()).count(),
                runs.iter().filter(|r| r.stalled).count(),
                runs.iter().filter(|r| r.remediated).count(),
                median,
                max,
                row.median_ratio,
                row.max_ratio,
                median.as_secs_f64() / plain.as_secs_f64().max(1e-9),
                mode.target.map_or("-".into(), |t| format!("<= {t}x")),
                match row.pass {
                    None => "-",
                    Some(true) => "pass",
                    Some(false) => "FAIL",
                },
            ));
        }
        eprint!("{table}");
        tables.push(table);
    }
    println!("fault benchmark (first seed {first_seed}):");
    for t in tables {
        print!("{t}");
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(bench()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("fault benchmark: a run did not converge, stalled or remediated");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fault benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
