//! The strata binary: parse arguments, start telemetry, call the library, flush telemetry.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use strata::agent::{self, Outcome};
use strata::bundle_cmd;
use strata::config::{
    self, BundleArgs, BundleCommand, Cli, Command, DiffArgs, LogArgs, PlanArgs, RunArgs, StatusArgs,
};
use strata::diff_cmd;
use strata::observe::telemetry;
use strata::observe::view::{self, Console};
use strata::plan_cmd;
use strata::status_cmd;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let Cli {
        command,
        log: LogArgs {
            log_format,
            log_level,
        },
    } = Cli::parse();
    // `strata run` on a terminal with text logs: a progress board under the logs.
    let console = (matches!(command, Command::Run(_))
        && log_format == telemetry::LogFormat::Text
        && std::io::stderr().is_terminal())
    .then(|| Console::new(Box::new(std::io::stderr())));
    let telemetry = match telemetry::init_with(log_format, &log_level, console.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("strata: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async move {
        match command {
            Command::Run(args) => run(args, console).await,
            Command::Plan(args) => plan(args).await,
            Command::Status(args) => status(args).await,
            Command::Diff(args) => diff(args).await,
            Command::Bundle(args) => bundle(args).await,
        }
    });
    // Stop the runtime (and any helm child, killed on drop) before the blocking flush.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    telemetry.shutdown();
    code
}

async fn run(args: RunArgs, console: Option<Console>) -> ExitCode {
    // Every problem of the settings at once, before a port is bound or a cluster contacted.
    let config = match config::compile(args) {
        Ok(c) => c,
        Err(errors) => {
            for p in &errors.0 {
                tracing::error!(problem = %p, "invalid configuration");
            }
            eprintln!("strata: {errors}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let observer = move |status: &strata::observe::status::Status| {
        if let Some(console) = &console
            && let Ok(doc) = serde_json::to_value(status)
        {
            console.show(&view::board(&doc, view::terminal_width(std::io::stderr())));
        }
    };
    match agent::run_observed(config, shutdown, observer).await {
        Ok(Outcome::AllReady) => ExitCode::SUCCESS,
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::NotReady) => ExitCode::from(1),
        Ok(Outcome::TimedOut) => ExitCode::from(2),
        Err(e) => {
            tracing::error!(error = %e, "strata stopped");
            eprintln!("strata: {e}");
            ExitCode::from(2)
        }
    }
}

async fn plan(args: PlanArgs) -> ExitCode {
    let PlanArgs { source, output } = args;
    match plan_cmd::run(source.into(), output, &mut std::io::stdout()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("strata: {e}");
            ExitCode::from(2)
        }
    }
}

async fn diff(args: DiffArgs) -> ExitCode {
    match diff_cmd::run(args, &mut std::io::stdout()).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("strata diff: {e}");
            ExitCode::from(diff_cmd::EXIT_ERROR)
        }
    }
}

async fn bundle(args: BundleArgs) -> ExitCode {
    match args {
        BundleArgs {
            push: Some(BundleCommand::Push(p)),
            ..
        } => {
            let config::BundlePushArgs {
                bundle,
                git_url,
                git_ref,
                oci,
                chart_dir,
                plain_http,
                oci_username,
                oci_password_file,
                helm,
                work_dir,
            } = p;
            let target = bundle_cmd::PushTarget {
                git_url,
                git_ref,
                oci,
                chart_dir,
                plain_http,
                oci_username,
                oci_password_file,
                helm,
                work_dir,
            };
            match bundle_cmd::push(&bundle, target, &mut std::io::stdout()).await {
                Ok(lock) => {
                    println!(
                        "pushed {} chart(s) and commit {}",
                        lock.charts.len(),
                        lock.commit
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata bundle push: {e}");
                    ExitCode::from(2)
                }
            }
        }
        BundleArgs {
            source: Some(source),
            output: Some(output),
            ..
        } => match bundle_cmd::create(source.into(), &output).await {
            Ok(made) => {
                println!(
                    "bundle {}: commit {} ({}), {} chart(s)",
                    made.output.display(),
                    made.lock.commit,
                    made.lock.profiles_path,
                    made.lock.charts.len()
                );
                for c in &made.lock.charts {
                    println!("  {} {} {} {}", c.repository, c.name, c.version, c.digest);
                }
                ExitCode::SUCCESS
            }
            Err(e @ bundle_cmd::Error::Invalid(_)) => {
                eprintln!("strata bundle: {e}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("strata bundle: {e}");
                ExitCode::from(2)
            }
        },
        BundleArgs { .. } => {
            eprintln!(
                "strata bundle: give --git-url and --output (the revision and the archive to write), or `strata bundle push`"
            );
            ExitCode::from(2)
        }
    }
}

async fn status(args: StatusArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let screen = if stdout.is_terminal() {
        status_cmd::Screen::Terminal {
            width: strata::observe::view::terminal_width(&stdout),
        }
    } else {
        status_cmd::Screen::Plain
    };
    match status_cmd::run(args, &mut stdout.lock(), screen).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !e.is_broken_pipe() {
                eprintln!("strata status: {e}");
            }
            ExitCode::from(3)
        }
    }
}

/// Two-stage shutdown: the first SIGTERM/SIGINT drains (a running helm finishes and is
/// recorded), the second exits at once.
async fn signals(shutdown: CancellationToken) {
    let mut first = true;
    loop {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if first {
            tracing::info!("shutdown requested: draining (signal again to exit at once)");
            shutdown.cancel();
            first = false;
        } else {
            eprintln!("strata: second signal, exiting now");
            std::process::exit(130);
        }
    }
}
