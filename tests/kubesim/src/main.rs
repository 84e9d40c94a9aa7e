//! `kubesim --listen 127.0.0.1:0 --kubeconfig PATH [--in-cluster-dir DIR]`: runs a simulated
//! Kubernetes API server until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A simulated Kubernetes API server with simulated controllers.
#[derive(Debug, Parser)]
#[command(name = "kubesim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "KUBESIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig (CA data + token) for this server.
    #[arg(long, env = "KUBESIM_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Also write a service-account directory (token, ca.crt, namespace) here.
    #[arg(long, env = "KUBESIM_IN_CLUSTER_DIR")]
    in_cluster_dir: Option<PathBuf>,
    /// Namespace written to the service-account directory.
    #[arg(long, default_value = "default")]
    in_cluster_namespace: String,
    /// Run without simulated controllers (nothing ever becomes ready).
    #[arg(long)]
    no_controllers: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        listen,
        kubeconfig,
        in_cluster_dir,
        in_cluster_namespace,
        no_controllers,
    } = Args::parse();
    let mut cfg = kubesim::Config {
        listen,
        ..kubesim::Config::default()
    };
    if no_controllers {
        cfg.controllers = None;
    }
    let cluster = kubesim::start(cfg).await.context("starting kubesim")?;
    cluster
        .write_kubeconfig(&kubeconfig)
        .with_context(|| format!("writing the kubeconfig to {}", kubeconfig.display()))?;
    if let Some(dir) = in_cluster_dir {
        let env = cluster.write_in_cluster_env(&dir, &in_cluster_namespace)?;
        for (k, v) in &env.env {
            println!("{k}={v}");
        }
    }
    println!("{}", cluster.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    cluster.shutdown().await;
    Ok(())
}
