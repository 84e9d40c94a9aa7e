//! Finding helm for the demo: `--helm`, else the project's pinned `.tools/helm4/helm`, else
//! `helm` on `PATH`, else the pinned one installed by `scripts/install-tools.sh`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where the helm the demo uses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--helm`.
    Flag,
    /// The project's pinned tools directory.
    Tools,
    /// `helm` on `PATH`.
    Path,
    /// Just installed by `scripts/install-tools.sh`.
    Installed,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Flag => "from --helm",
            Origin::Tools => "pinned, in the tools directory",
            Origin::Path => "found on PATH",
            Origin::Installed => "pinned, just installed by scripts/install-tools.sh",
        })
    }
}

/// The helm binary the demo runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--helm {0} is not an executable file; pass the path of a helm 3 or helm 4 binary")]
    NotExecutable(PathBuf),
    #[error(
        "cannot run {script}: {source}; install helm yourself and pass --helm, or run the script by hand"
    )]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{script} failed ({status}); see its output above, or install helm yourself and pass --helm"
    )]
    Install {
        script: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("{script} succeeded but {helm} is still missing; pass --helm")]
    StillMissing { script: PathBuf, helm: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The pinned tools directory: `STRATA_TOOLS_DIR`, else `<workspace>/.tools` (the same rule
/// as the tests).
pub fn tools_dir(workspace: &Path, env_value: Option<&OsStr>) -> PathBuf {
    match env_value {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => workspace.join(".tools"),
    }
}

/// Whether `path` is a regular file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// The first executable `helm` in a `PATH`-style list.
pub fn on_path(path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join("helm"))
        .find(|p| is_executable(p))
}

/// helm without installing anything: the flag, the tools directory, then `PATH`.
pub fn find(
    flag: Option<&Path>,
    tools_dir: &Path,
    path_var: Option<&OsStr>,
) -> Result<Option<Located>> {
    if let Some(p) = flag {
        if !is_executable(p) {
            return Err(Error::NotExecutable(p.to_path_buf()));
        }
        return Ok(Some(Located {
            path: p.to_path_buf(),
            origin: Origin::Flag,
        }));
    }
    let pinned = pinned_helm(tools_dir);
    if is_executable(&pinned) {
        return Ok(Some(Located {
            path: pinned,
            origin: Origin::Tools,
        }));
    }
    Ok(on_path(path_var).map(|path| Located {
        path,
        origin: Origin::Path,
    }))
}

/// `<tools>/helm4/helm`.
pub fn pinned_helm(tools_dir: &Path) -> PathBuf {
    tools_dir.join("helm4").join("helm")
}

/// Runs `<workspace>/scripts/install-tools.sh <tools_dir>` (it downloads the pinned helm 4,
/// helm 3 and kubectl and checks their sha256), its output shown to the user.
pub fn install(workspace: &Path, tools_dir: &Path) -> Result<Located> {
    let script = workspace.join("scripts").join("install-tools.sh");
    let status = std::process::Command::new(&script)
        .arg(tools_dir)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|source| Error::Spawn {
            script: script.clone(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Install { script, status });
    }
    let helm = pinned_helm(tools_dir);
    if !is_executable(&helm) {
        return Err(Error::StillMissing { script, helm });
    }
    Ok(Located {
        path: helm,
        origin: Origin::Installed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_exe(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn tools_dir_prefers_the_env_value() {
        let ws = Path::new("/ws");
        assert_eq!(tools_dir(ws, None), PathBuf::from("/ws/.tools"));
        assert_eq!(
            tools_dir(ws, Some(OsStr::new(""))),
            PathBuf::from("/ws/.tools")
        );
        assert_eq!(
            tools_dir(ws, Some(OsStr::new("/opt/t"))),
            PathBuf::from("/opt/t")
        );
    }

    #[test]
    fn flag_then_tools_then_path() {
        let d = tempfile::tempdir().unwrap();
        let tools = d.path().join("tools");
        let bin = d.path().join("bin");
        let on_path_helm = bin.join("helm");
        write_exe(&on_path_helm);
        let path_var = std::env::join_paths([d.path().join("empty"), bin.clone()]).unwrap();

        // Only PATH has one.
        let got = find(None, &tools, Some(&path_var)).unwrap().unwrap();
        assert_eq!(got.path, on_path_helm);
        assert_eq!(got.origin, Origin::Path);

        // The pinned one wins over PATH.
        write_exe(&pinned_helm(&tools));
        let got = find(None, &tools, Some(&path_var)).unwrap().unwrap();
        assert_eq!(got.path, tools.join("helm4/helm"));
        assert_eq!(got.origin, Origin::Tools);

        // The flag wins over both.
        let mine = d.path().join("mine/helm");
        write_exe(&mine);
        let got = find(Some(&mine), &tools, Some(&path_var)).unwrap().unwrap();
        assert_eq!(got.origin, Origin::Flag);
        assert_eq!(got.path, mine);
    }

    #[test]
    fn nothing_found_and_bad_flag() {
        let d = tempfile::tempdir().unwrap();
        let path_var = std::env::join_paths([d.path()]).unwrap();
        assert_eq!(
            find(None, &d.path().join("t"), Some(&path_var)).unwrap(),
            None
        );
        assert_eq!(find(None, &d.path().join("t"), None).unwrap(), None);

        let not_exe = d.path().join("helm");
        std::fs::write(&not_exe, "x").unwrap();
        assert!(!is_executable(&not_exe));
        let err = find(Some(&not_exe), d.path(), None).unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
        assert!(!is_executable(d.path()));
    }

    #[test]
    fn failing_install_script_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("scripts/install-tools.sh");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "#!/bin/sh\necho \"tools dir $1\" >&2\nexit 3\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err = install(d.path(), &d.path().join("t")).unwrap_err();
        assert!(matches!(err, Error::Install { .. }), "{err}");

        // A script that succeeds without producing helm.
        std::fs::write(&script, "#!/bin/sh\nmkdir -p \"$1\"\n").unwrap();
        let err = install(d.path(), &d.path().join("t")).unwrap_err();
        assert!(matches!(err, Error::StillMissing { .. }), "{err}");

        // A script that installs it.
        std::fs::write(
            &script,
            "#!/bin/sh\nmkdir -p \"$1/helm4\" && printf '#!/bin/sh\\n' > \"$1/helm4/helm\" && chmod +x \"$1/helm4/helm\"\n",
        )
        .unwrap();
        let got = install(d.path(), &d.path().join("t")).unwrap();
        assert_eq!(got.origin, Origin::Installed);
        assert_eq!(got.path, d.path().join("t/helm4/helm"));
    }
}
