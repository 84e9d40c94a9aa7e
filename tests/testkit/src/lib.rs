//! testkit: real servers for strata's tests, each on 127.0.0.1 with a kernel-chosen port and
//! cleaned up on drop.
//!
//! - [`tools()`]: the pinned helm 4, helm 3 and kubectl (`STRATA_TOOLS_DIR` or
//!   `<workspace>/.tools`, located only in [`tools::dir`]); [`HelmBin`] picks one helm.
//! - [`GitServer`]: smart HTTP through the real `git http-backend` (optional basic auth) and
//!   git:// through `git daemon --inetd`; stop and restart on the same port for outage tests.
//!   [`TestRepo`] builds repositories (fixed identity and dates).
//! - [`ChartRepo`]: a Helm repository over HTTP built with the real `helm package` and
//!   `helm repo index`, with a request counter and injected failures.
//! - [`oci::OciRegistry`]: the real CNCF distribution registry (`docker-registry`) over plain
//!   HTTP, optional htpasswd auth; charts pushed with the real `helm push`.
//! - [`examples_dir`]: the workspace's `examples/` (profile list and charts).
//!
//! strata's end-to-end tests build on these:
//!
//! - [`chart`]: profile chart directories written by a test ([`chart::write_chart`]).
//! - [`agent`]: the `strata` binary as a child process ([`Agent`]); the binary's path comes
//!   from the calling test crate through [`strata_bin!`].
//! - [`cluster`]: kubesim prepared for the agent (kubeconfig, agent namespace, kube client) and
//!   what the API server saw.
//! - [`release`]: helm's release records (Secrets) in kubesim's store, decoded in one place.
//! - [`scenario`]: the layered three-chart [`Scenario`] (kubesim, Git server, chart repository).
//! - [`gitcharts`]: a profile repository with its charts in it (`chart: {path}`), `--once` runs.
//! - [`chaos`]: seeds, a journaling helm wrapper and small figures for the chaos tests.
//! - [`otlp`]: an OTLP/HTTP trace receiver.

pub mod agent;
pub mod chaos;
pub mod chart;
pub mod charts;
pub mod cluster;
pub mod git;
pub mod gitcharts;
pub mod http;
pub mod oci;
pub mod otlp;
pub mod release;
pub mod scenario;
pub mod tls;
pub mod tools;

use std::path::{Path, PathBuf};

pub use agent::Agent;
pub use charts::ChartRepo;
pub use git::{GitServer, TestRepo};
pub use scenario::Scenario;
pub use tools::{HelmBin, Tools, tools};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("testkit lives at <workspace>/tests/testkit")
        .to_path_buf()
}

/// The workspace's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("examples")
}

/// Copies a directory tree (files and directories; symlinks are followed).
pub fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let target = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_response_parses_status_and_headers() {
        let r = git::parse_cgi(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "text/plain");
        let r = git::parse_cgi(b"Content-Type: application/x-git\n\nPACK").unwrap();
        assert_eq!(r.status(), 200);
        assert!(git::parse_cgi(b"no header end").is_err());
    }

    #[tokio::test]
    async fn gate_holds_requests_until_opened() {
        let gate = std::sync::Arc::new(http::Gate::default());
        gate.pass().await; // open: passes at once
        gate.close();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.pass().await });
        let start = std::time::Instant::now();
        while gate.held() == 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "never held"
            );
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        gate.open();
        waiter.await.unwrap();
        assert_eq!(gate.held(), 0);
        // A held request whose client goes away is no longer counted.
        gate.close();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.pass().await });
        while gate.held() == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn tools_exist() {
        let t = tools();
        assert!(t.helm4.ends_with("helm4/helm"));
        assert_eq!(HelmBin::V3.major(), 3);
    }
}
