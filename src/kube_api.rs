//! The Kubernetes client every part of the agent uses, and a short text for its errors.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot configure the Kubernetes client: {0}; pass --kubeconfig or run in a pod with a service account"
    )]
    Config(String),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Build the Kubernetes client from `--kubeconfig`, else the in-cluster/default config.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// A short text for a Kubernetes API error: the server's message and code for API errors.
pub fn error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            if status.reason.is_empty() {
                format!("{} (HTTP {})", status.message, status.code)
            } else {
                format!(
                    "{} ({}, HTTP {})",
                    status.message, status.reason, status.code
                )
            }
        }
        other => other.to_string(),
    }
}
