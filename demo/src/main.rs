//! strata's quick start in one command: a simulated cluster, the example profile repository
//! served from a local Git server, and the strata agent (the library's `agent::run`, configured
//! like `strata run`) applying it layer by layer with real helm, its progress printed from
//! `GET /status`.

mod helm_locate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use strata::agent::{AgentConfig, Outcome, SourceConfig};
use strata::observe::view;

/// The agent's namespace on the simulated cluster (status ConfigMap and Events).
const AGENT_NAMESPACE: &str = "strata-system";
/// The name the example repository is served under.
const REPO_NAME: &str = "platform";

/// Runs strata on a simulated cluster with the example profile repository (`examples/`).
#[derive(Debug, Parser)]
#[command(name = "strata-demo", version, about)]
struct Args {
    /// helm binary (default: `<workspace>/.tools/helm4/helm` or `$STRATA_TOOLS_DIR/helm4/helm`,
    /// else `helm` on PATH, else the pinned one installed by `scripts/install-tools.sh`).
    #[arg(long)]
    helm: Option<PathBuf>,
    /// Exit once every layer is Ready (exit code 0), or with 1 when a release fails, the
    /// revision is rejected or `--timeout` passes.
    #[arg(long)]
    once: bool,
    /// Address of the agent's status API (default: a free port on 127.0.0.1).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Profile list inside the example repository: `profiles.yaml` (layers from chart
    /// annotations), `profiles-category.yaml` or `profiles-allocated.yaml`.
    #[arg(long, default_value = "profiles.yaml")]
    profiles_path: String,
    /// How often the agent fetches the example repository (commit to it to see an upgrade).
    #[arg(long, default_value = "10s", value_parser = strata::config::parse_duration)]
    interval: Duration,
    /// With `--once`: give up after this long.
    #[arg(long, default_value = "5m", value_parser = strata::config::parse_duration)]
    timeout: Duration,
    /// The agent's log filter (its logs go to stderr; progress goes to stdout).
    #[arg(long, default_value = "warn")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = match strata::observe::telemetry::init(
        strata::observe::telemetry::LogFormat::Text,
        &args.log_level,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("strata-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata-demo: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async move {
        match demo(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("strata-demo: {e:#}");
                ExitCode::from(2)
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    telemetry.shutdown();
    code
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn free_local_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("cannot find a free port on 127.0.0.1 for the status API; pass --listen")?;
    Ok(l.local_addr()?)
}

struct Clock(Instant);

impl Clock {
    fn say(&self, line: impl std::fmt::Display) {
        println!("[{:>6.1}s] {line}", self.0.elapsed().as_secs_f64());
    }
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        helm,
        once,
        listen,
        profiles_path,
        interval,
        timeout,
        log_level: _,
    } = args;
    let workspace = workspace_root();
    let tools = helm_locate::tools_dir(&workspace, std::env::var_os("STRATA_TOOLS_DIR").as_deref());

    println!("strata demo: the example platform (examples/) applied layer by layer");
    let helm = match helm_locate::find(
        helm.as_deref(),
        &tools,
        std::env::var_os("PATH").as_deref(),
    )? {
        Some(h) => h,
        None => {
            println!(
                "  helm:     none found; installing the pinned helm with scripts/install-tools.sh"
            );
            let (ws, td) = (workspace.clone(), tools.clone());
            tokio::task::spawn_blocking(move || helm_locate::install(&ws, &td)).await??
        }
    };
    println!("  helm:     {} ({})", helm.path.display(), helm.origin);

    let dir = tempfile::Builder::new().prefix("strata-demo-").tempdir()?;

    // The simulated cluster, with controllers slow enough that the layers visibly follow one
    // another: pods become ready 1.5 s after creation, Job pods run for 1 s.
    let cluster = kubesim::start(kubesim::Config {
        controllers: Some(kubesim::controllers::ControllerConfig {
            pod_start_delay: Duration::from_millis(1500),
            job_duration: Duration::from_secs(1),
            ..kubesim::controllers::ControllerConfig::default()
        }),
        ..kubesim::Config::default()
    })
    .await
    .context("cannot start the simulated cluster")?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    cluster
        .store()
        .create(
            &kubesim::ResourceKey::new("", "namespaces"),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": AGENT_NAMESPACE}}),
        )
        .context("cannot create the agent's namespace on the simulated cluster")?;
    println!(
        "  cluster:  kubesim at {} (kubeconfig {})",
        cluster.url(),
        kubeconfig.display()
    );

    // The example profile repository, committed and served by git http-backend.
    let git = testkit::GitServer::start()
        .await
        .context("cannot start the local Git server (needs git with http-backend)")?;
    let repo = git.create_repo(REPO_NAME)?;
    repo.copy_dir(&workspace.join("examples"), ".")?;
    repo.commit("strata demo: the example platform")?;
    let git_url = git.http_url(REPO_NAME);
    println!(
        "  profiles: {git_url} ({profiles_path}; working copy {})",
        repo.path().display()
    );

    let listen = match listen {
        Some(a) => a,
        None => free_local_port()?,
    };
    let api = format!("http://{listen}");
    println!("  status:   {api}/status");
    println!();

    // The same settings and checks as `strata run` (every flag at its default but these).
    let source = SourceConfig::new(git_url.as_str())
        .profiles_path(profiles_path.as_str())
        .work_dir(dir.path().join("work"));
    let config = AgentConfig::builder(source)
        .interval(interval)
        .helm(helm.path.clone())
        .listen(listen)
        .kubeconfig(kubeconfig.clone())
        .namespace(AGENT_NAMESPACE)
        .compile()?;
    let shutdown = CancellationToken::new();
    // `agent::run`'s future is not `Send`, so it is polled here rather than spawned.
    let agent = strata::agent::run(config, shutdown.clone());
    tokio::pin!(agent);

    let clock = Clock(Instant::now());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut tracker = view::Tracker::new();
    let mut announced = false;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let code = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => {
                println!();
                clock.say("Ctrl-C: stopping the agent (it lets a running helm finish)");
                // With --once, exit 0 means Ready, which an interrupted run is not.
                break if once { ExitCode::from(130) } else { ExitCode::SUCCESS };
            }
            ended = &mut agent => {
                let why = match ended {
                    Ok(outcome) => format!("the agent stopped unexpectedly ({outcome:?})"),
                    Err(e) => format!("the agent failed: {e}"),
                };
                eprintln!("strata-demo: {why}");
                cluster.shutdown().await;
                return Ok(ExitCode::from(2));
            }
        }
        if once && tokio::time::Instant::now() >= deadline {
            clock.say(format!(
                "not Ready after {timeout:?}; see {api}/status (rerun with --log-level info)"
            ));
            break ExitCode::from(1);
        }
        let Some(status) = fetch_status(&client, &api).await else {
            continue;
        };
        for event in tracker.update(&status) {
            clock.say(event);
        }
        if view::all_ready(&status) {
            if once {
                clock.say("every layer is Ready");
                break ExitCode::SUCCESS;
            }
            if !announced {
                announced = true;
                announce(&api, &kubeconfig, &tools, repo.path(), interval);
            }
        } else if once && view::stuck(&status) {
            clock.say(format!("stopped short of Ready; see {api}/status"));
            break ExitCode::from(1);
        }
    };

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(60), agent).await {
        Ok(Ok(Outcome::Stopped | Outcome::AllReady | Outcome::NotReady | Outcome::TimedOut)) => {}
        Ok(Err(e)) => eprintln!("strata-demo: the agent failed while stopping: {e}"),
        Err(_) => eprintln!("strata-demo: the agent did not stop within 60s"),
    }
    cluster.shutdown().await;
    drop(git);
    Ok(code)
}

async fn fetch_status(client: &reqwest::Client, api: &str) -> Option<serde_json::Value> {
    let resp = client.get(format!("{api}/status")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

fn announce(api: &str, kubeconfig: &Path, tools: &Path, repo: &Path, interval: Duration) {
    let kubectl = tools.join("kubectl").join("kubectl");
    let kubectl = if helm_locate::is_executable(&kubectl) {
        kubectl.display().to_string()
    } else {
        "kubectl".to_string()
    };
    println!();
    println!("Every layer is Ready. The agent keeps running; try:");
    println!("  curl {api}/status");
    println!("  curl {api}/metrics");
    println!("  curl {api}/healthz {api}/readyz");
    println!(
        "  {kubectl} --kubeconfig {} get configmap strata-status -n {AGENT_NAMESPACE} -o jsonpath='{{.data.status\\.json}}'",
        kubeconfig.display()
    );
    println!(
        "  {kubectl} --kubeconfig {} get deployments,pods -A",
        kubeconfig.display()
    );
    println!(
        "Edit and commit in {} and the agent applies the new revision within {interval:?}.",
        repo.display()
    );
    println!("Press Ctrl-C to stop.");
    println!();
}
