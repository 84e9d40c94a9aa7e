//! An OCI registry: the real CNCF distribution registry (Debian's `docker-registry`) on
//! 127.0.0.1 over plain HTTP, with its storage in a temporary directory and optional htpasswd
//! basic auth; charts are pushed into it with the real `helm push`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::charts::{helm_command, package_chart};

/// The registry binary: `$STRATA_REGISTRY`, else `docker-registry` on PATH.
pub fn registry_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_REGISTRY") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("docker-registry"))
        .find(|p| p.is_file())
}

/// A running registry; stopped on drop.
pub struct OciRegistry {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
    helm_home: tempfile::TempDir,
    credentials: Option<(String, String)>,
}

impl OciRegistry {
    /// Starts a registry without authentication.
    pub async fn start() -> anyhow::Result<Self> {
        Self::spawn(None).await
    }

    /// Starts a registry that requires HTTP basic auth as `user`/`password` (htpasswd with a
    /// bcrypt hash of the lowest cost, so each request is cheap, made by the system's crypt(3)
    /// through python3).
    pub async fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::spawn(Some((user.to_string(), password.to_string()))).await
    }

    async fn spawn(credentials: Option<(String, String)>) -> anyhow::Result<Self> {
        let bin = registry_bin().context(
            "docker-registry not found: apt-get install docker-registry (the CNCF distribution registry), or set STRATA_REGISTRY",
        )?;
        let dir = tempfile::tempdir()?;
        let port = crate::agent::free_port();
        let mut auth = String::new();
        if let Some((user, password)) = &credentials {
            let out = std::process::Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
                    password,
                ])
                .output()
                .context("python3 for the htpasswd hash")?;
            anyhow::ensure!(out.status.success(), "crypt failed: {out:?}");
            let hash = String::from_utf8(out.stdout)?.trim().to_string();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )?;
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log"))?)
            .spawn()
            .context("starting docker-registry")?;
        let registry = Self {
            dir,
            child,
            port,
            helm_home: tempfile::tempdir()?,
            credentials,
        };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/v2/"))
                .send()
                .await
                && (r.status().is_success() || r.status().as_u16() == 401)
            {
                return Ok(registry);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the registry did not start: {}", registry.log())
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.host())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Packages `chart_dir` with `helm` and pushes it to `oci://<host>/<path>` with
    /// `helm push --plain-http` (with the registry's credentials when it has some).
    pub fn push(&self, helm: &Path, chart_dir: &Path, path: &str) -> anyhow::Result<()> {
        let out_dir = self.dir.path().join("packages");
        std::fs::create_dir_all(&out_dir)?;
        let archive = package_chart(helm, self.helm_home.path(), chart_dir, &out_dir)?;
        let mut cmd = helm_command(helm, self.helm_home.path());
        cmd.arg("push")
            .arg(&archive)
            .arg(self.url(path))
            .arg("--plain-http");
        if let Some((user, password)) = &self.credentials {
            cmd.args(["--username", user, "--password", password]);
        }
        let out = cmd.output().context("running helm push")?;
        anyhow::ensure!(
            out.status.success(),
            "helm push {} failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
