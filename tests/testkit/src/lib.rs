//! testkit: real servers for strata's tests, each on 127.0.0.1 with a kernel-chosen port and
//! cleaned up on drop.
//!
//! - [`tools`]: the pinned helm 4, helm 3 and kubectl (`STRATA_TOOLS_DIR` or
//!   `<workspace>/.tools`); [`HelmBin`] picks one helm.
//! - [`GitServer`]: smart HTTP through the real `git http-backend` (optional basic auth) and
//!   git:// through `git daemon --inetd`; stop and restart on the same port for outage tests.
//!   [`TestRepo`] builds repositories (fixed identity and dates).
//! - [`ChartRepo`]: a Helm repository over HTTP built with the real `helm package` and
//!   `helm repo index`, with a request counter and injected failures.
//! - [`examples_dir`]: the workspace's `examples/` (profile list and charts).

pub mod charts;
pub mod git;
pub mod http;
pub mod tls;

use std::path::{Path, PathBuf};

pub use charts::ChartRepo;
pub use git::{GitServer, TestRepo};

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

/// Paths of the pinned tools.
#[derive(Clone, Debug)]
pub struct Tools {
    pub helm4: PathBuf,
    pub helm3: PathBuf,
    pub kubectl: PathBuf,
}

/// The pinned tools from `STRATA_TOOLS_DIR` or `<workspace>/.tools`. Panics with the fix when
/// one is missing (tests need them; `scripts/install-tools.sh` installs them).
pub fn tools() -> Tools {
    let dir = std::env::var_os("STRATA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools"));
    let t = Tools {
        helm4: dir.join("helm4/helm"),
        helm3: dir.join("helm3/helm"),
        kubectl: dir.join("kubectl/kubectl"),
    };
    for p in [&t.helm4, &t.helm3, &t.kubectl] {
        assert!(
            p.exists(),
            "{} is missing: run scripts/install-tools.sh (or set STRATA_TOOLS_DIR)",
            p.display()
        );
    }
    t
}

/// One of the two helm majors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelmBin {
    V4,
    V3,
}

impl HelmBin {
    pub const ALL: [HelmBin; 2] = [HelmBin::V4, HelmBin::V3];

    pub fn path(self) -> PathBuf {
        let t = tools();
        match self {
            HelmBin::V4 => t.helm4,
            HelmBin::V3 => t.helm3,
        }
    }

    pub fn major(self) -> u64 {
        match self {
            HelmBin::V4 => 4,
            HelmBin::V3 => 3,
        }
    }
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

    #[test]
    fn tools_exist() {
        let t = tools();
        assert!(t.helm4.ends_with("helm4/helm"));
        assert_eq!(HelmBin::V3.major(), 3);
    }
}
