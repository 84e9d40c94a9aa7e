//! Starting a simulated cluster: store + controllers + HTTPS API server, and the files clients
//! need (kubeconfig, in-cluster service-account directory).

use crate::controls::Controls;
use crate::server::Shared;
use crate::store::{Store, StoreConfig};
use base64::Engine;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starting the cluster or writing its files failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("kubesim could not listen on {addr}: {source}; pick a free address (port 0 picks one)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates or TLS configuration.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// Writing a file failed.
    #[error("kubesim could not write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to start a simulated cluster. `Config::default()` listens on 127.0.0.1:0 with the
/// simulated controllers running.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Simulated controllers (None: no controllers, objects never become ready).
    pub controllers: Option<crate::controllers::ControllerConfig>,
    /// Store tuning.
    pub store: StoreConfig,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Seed for fault injection randomness.
    pub fault_seed: u64,
    /// Bearer token to accept (None: a random one).
    pub token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            controllers: Some(crate::controllers::ControllerConfig::default()),
            store: StoreConfig::default(),
            bookmark_interval: Duration::from_secs(5),
            fault_seed: 1,
            token: None,
        }
    }
}

/// What `write_in_cluster_env` wrote, and the environment a pod would have.
#[derive(Debug, Clone)]
pub struct InClusterEnv {
    /// The service-account directory (holds `token`, `ca.crt`, `namespace`).
    pub dir: PathBuf,
    /// `dir/token`.
    pub token_path: PathBuf,
    /// `dir/ca.crt`.
    pub ca_path: PathBuf,
    /// `dir/namespace`.
    pub namespace_path: PathBuf,
    /// `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, `KUBERNETES_SERVICE_PORT_HTTPS`.
    pub env: Vec<(String, String)>,
}

/// A running simulated cluster. Dropping it stops the server (prefer `shutdown().await`).
pub struct Cluster {
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    store: Store,
    controls: Controls,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a simulated cluster.
pub async fn start(cfg: Config) -> Result<Cluster> {
    let Config {
        listen,
        controllers,
        store: store_cfg,
        bookmark_interval,
        fault_seed,
        token,
    } = cfg;
    let tls = crate::tls::generate()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let store = Store::new(store_cfg);
    let controls = Controls::new(store.clone(), fault_seed);
    let shutdown = CancellationToken::new();
    let token = token.unwrap_or_else(|| crate::util::Rng::from_entropy().hex(24));
    let shared = Arc::new(Shared {
        store: store.clone(),
        controls: controls.clone(),
        tokens: Mutex::new(HashSet::from([token.clone()])),
        shutdown: shutdown.clone(),
        bookmark_interval,
        address: addr.to_string(),
        snapshots: Mutex::new(std::collections::HashMap::new()),
        openapi: Mutex::new(None),
    });
    let mut tasks = vec![tokio::spawn(crate::server::serve(
        listener,
        tls.server_config,
        shared.clone(),
    ))];
    if let Some(cc) = controllers {
        tasks.push(crate::controllers::spawn(
            store.clone(),
            cc,
            shutdown.child_token(),
        ));
    }
    Ok(Cluster {
        addr,
        ca_pem: tls.ca_pem,
        token,
        store,
        controls,
        shared,
        shutdown,
        tasks,
    })
}

impl Cluster {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token of the admin user.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Issues another accepted bearer token (e.g. a service-account token).
    pub fn issue_token(&self) -> String {
        let t = crate::util::Rng::from_entropy().hex(24);
        if let Ok(mut set) = self.shared.tokens.lock() {
            set.insert(t.clone());
        }
        t
    }

    /// The object store (reads and writes bypass the request log and faults).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Request log and fault injection.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// A kubeconfig for this cluster (context `kubesim`, namespace `default`).
    pub fn kubeconfig_yaml(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: default\ncurrent-context: kubesim\nusers:\n- name: kubesim\n  user:\n    token: {}\n",
            self.url(),
            self.token
        )
    }

    /// Writes the kubeconfig (mode 0600, so helm does not warn about it).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        write_private(path.as_ref(), self.kubeconfig_yaml().as_bytes())
    }

    /// Writes a service-account directory (`token` with a freshly issued token, `ca.crt`,
    /// `namespace`) into `dir` and returns the paths and the environment variables a pod
    /// would get. kube-rs reads these files from the fixed path
    /// `/var/run/secrets/kubernetes.io/serviceaccount`, so a program under test needs a way
    /// to be pointed at `dir` (strata: `STRATA_SA_DIR`).
    pub fn write_in_cluster_env(
        &self,
        dir: impl AsRef<Path>,
        namespace: &str,
    ) -> Result<InClusterEnv> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        let token_path = dir.join("token");
        let ca_path = dir.join("ca.crt");
        let namespace_path = dir.join("namespace");
        write_private(&token_path, self.issue_token().as_bytes())?;
        write_private(&ca_path, self.ca_pem.as_bytes())?;
        write_private(&namespace_path, namespace.as_bytes())?;
        let port = self.addr.port().to_string();
        Ok(InClusterEnv {
            dir,
            token_path,
            ca_path,
            namespace_path,
            env: vec![
                ("KUBERNETES_SERVICE_HOST".into(), self.addr.ip().to_string()),
                ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
                ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port),
            ],
        })
    }

    /// Stops the server, the watches and the controllers.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(data).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
