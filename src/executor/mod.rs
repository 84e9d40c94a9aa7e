//! The one door to helm: the helm process ([`helm`], run through [`process`]) and helm's
//! release storage ([`releases`]), behind one trait, [`HelmDriver`].
//!
//! The release runner ([`crate::reconcile::release::Runner`]) reaches helm only through a
//! [`HelmDriver`]: reading a release's records, marking an interrupted record failed, and
//! running `helm upgrade --install`, `helm uninstall` and `helm rollback`. [`HelmExecutor`] is
//! the real one (the helm binary and the cluster's release Secrets); the runner's unit tests
//! use a fake.
pub mod helm;
pub mod nice;
pub mod process;
pub mod releases;

use std::path::PathBuf;
use std::time::Duration;

use strata_core::reconcile::ReleaseStatus;

use helm::{Helm, UpgradeRequest};
use releases::ReleaseRecord;

/// Everything the agent does to a release, in one place.
pub trait HelmDriver: Send + Sync + 'static {
    /// The highest stored revision of the release (no helm process); `None`: helm has no
    /// record of it.
    fn latest(
        &self,
        namespace: &str,
        release: &str,
    ) -> impl Future<Output = releases::Result<Option<ReleaseRecord>>> + Send;

    /// Revision and status of every stored revision, oldest first (no helm process).
    fn history(
        &self,
        namespace: &str,
        release: &str,
    ) -> impl Future<Output = releases::Result<Vec<(u32, ReleaseStatus)>>> + Send;

    /// Marks `revision` failed: a record left pending by an interrupted helm, or a deployed
    /// one whose readiness wait (strata's, standing in for helm's `--wait`) failed, as helm
    /// marks a release whose wait fails; false when there is no such pending or deployed
    /// record.
    fn mark_failed(
        &self,
        namespace: &str,
        release: &str,
        revision: u64,
        description: &str,
    ) -> impl Future<Output = releases::Result<bool>> + Send;

    /// Writes the release's values to a private file for `--values`.
    fn write_values(
        &self,
        namespace: &str,
        release: &str,
        values: &serde_json::Value,
    ) -> helm::Result<PathBuf>;

    /// `helm upgrade --install` with waiting.
    fn upgrade_install(
        &self,
        request: &UpgradeRequest,
    ) -> impl Future<Output = helm::Result<ReleaseRecord>> + Send;

    /// `helm uninstall --wait`.
    fn uninstall(
        &self,
        release: &str,
        namespace: &str,
        timeout: Duration,
    ) -> impl Future<Output = helm::Result<()>> + Send;

    /// `helm rollback` to `revision` (`None`: the previous one), with waiting.
    fn rollback(
        &self,
        release: &str,
        namespace: &str,
        revision: Option<u64>,
        timeout: Duration,
    ) -> impl Future<Output = helm::Result<()>> + Send;
}

/// The real driver: the helm binary, and helm's release Secrets read and written with kube-rs.
#[derive(Clone)]
pub struct HelmExecutor {
    helm: Helm,
    client: kube::Client,
}

impl HelmExecutor {
    pub fn new(helm: Helm, client: kube::Client) -> Self {
        Self { helm, client }
    }
}

impl HelmDriver for HelmExecutor {
    async fn latest(
        &self,
        namespace: &str,
        release: &str,
    ) -> releases::Result<Option<ReleaseRecord>> {
        releases::latest(&self.client, namespace, release).await
    }

    async fn history(
        &self,
        namespace: &str,
        release: &str,
    ) -> releases::Result<Vec<(u32, ReleaseStatus)>> {
        Ok(releases::history(&self.client, namespace, release)
            .await?
            .iter()
            .map(|r| {
                (
                    u32::try_from(r.revision).unwrap_or(u32::MAX),
                    ReleaseStatus::parse(&r.status),
                )
            })
            .collect())
    }

    async fn mark_failed(
        &self,
        namespace: &str,
        release: &str,
        revision: u64,
        description: &str,
    ) -> releases::Result<bool> {
        releases::mark_failed(&self.client, namespace, release, revision, description).await
    }

    fn write_values(
        &self,
        namespace: &str,
        release: &str,
        values: &serde_json::Value,
    ) -> helm::Result<PathBuf> {
        self.helm.write_values(namespace, release, values)
    }

    async fn upgrade_install(&self, request: &UpgradeRequest) -> helm::Result<ReleaseRecord> {
        self.helm.upgrade_install(request).await
    }

    async fn uninstall(
        &self,
        release: &str,
        namespace: &str,
        timeout: Duration,
    ) -> helm::Result<()> {
        self.helm.uninstall(release, namespace, timeout).await
    }

    async fn rollback(
        &self,
        release: &str,
        namespace: &str,
        revision: Option<u64>,
        timeout: Duration,
    ) -> helm::Result<()> {
        self.helm
            .rollback(release, namespace, revision, timeout)
            .await
    }
}
