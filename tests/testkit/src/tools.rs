//! The pinned helm 4, helm 3 and kubectl: the one place that locates the tools directory
//! (`STRATA_TOOLS_DIR`, else `<workspace>/.tools`; `scripts/install-tools.sh` installs them).

use std::path::PathBuf;

use crate::workspace_root;

/// The tools directory: `STRATA_TOOLS_DIR`, else `<workspace>/.tools` (not checked).
pub fn dir() -> PathBuf {
    std::env::var_os("STRATA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools"))
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
    let dir = dir();
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

    /// `helm4` / `helm3`: names homes and labels output.
    pub fn label(self) -> &'static str {
        match self {
            HelmBin::V4 => "helm4",
            HelmBin::V3 => "helm3",
        }
    }

    /// The flags that make install/upgrade/rollback wait for readiness (Jobs included).
    pub fn wait_flags(self) -> &'static [&'static str] {
        match self {
            HelmBin::V4 => &["--wait=watcher"],
            HelmBin::V3 => &["--wait", "--wait-for-jobs"],
        }
    }
}
