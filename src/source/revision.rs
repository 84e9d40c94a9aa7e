//! Loading a revision: Git commit -> profile list, values files, allocation, charts, plan.
//!
//! Every problem of a revision is collected (with its file and field) before the revision is
//! accepted or rejected as a whole; nothing here writes to the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use strata_core::Problem;
use strata_core::plan::ReleaseKey;
use strata_core::profiles::{ChartRef, LayeringModel, ProfileList, ValuesFrom};

use crate::config::SourceConfig;
use crate::executor::process::Redactor;
use crate::observe::status::{LayerId, ProblemView};
use crate::source::auth::{BasicAuth, UsernameSource};
use crate::source::charts::{ChartStore, RepoSpec};
use crate::source::git::{GitAuth, GitSource};

/// Errors setting up the source (bad credentials files).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("Git credentials: {0}")]
    Credentials(#[from] crate::source::auth::CredentialsError),
    #[error("cannot prepare the chart cache: {0}")]
    Charts(#[from] crate::source::charts::Error),
    /// The mirrors file (`--mirrors`) cannot be read or is invalid.
    #[error("{0}")]
    Mirrors(String),
}

/// The key of the `--profiles-configmap` ConfigMap holding the overlay list.
pub const OVERLAY_KEY: &str = "profiles.yaml";

/// The key of the `--mirrors-configmap` ConfigMap holding the mirrors list (the format of
/// the `--mirrors` file).
pub const MIRRORS_KEY: &str = "mirrors.yaml";

/// How problems name the overlay list of ConfigMap `name`.
pub fn overlay_file(name: &str) -> String {
    format!("configmap/{name}/{OVERLAY_KEY}")
}

/// The overlay list read from `--profiles-configmap`.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The ConfigMap's name.
    pub name: String,
    /// Its name in problems ([`overlay_file`]).
    pub file: String,
    pub text: String,
    /// The first 12 hex digits of the SHA-256 of `text`: part of the revision's identity.
    pub digest: String,
}

impl Overlay {
    /// The revision's identity with this overlay: the commit, then the overlay's digest, so
    /// a change of the ConfigMap is a new revision (`<commit>+configmap.<digest>`).
    pub fn revision(&self, commit: &str) -> String {
        format!("{commit}+configmap.{}", self.digest)
    }
}

/// The placeholder for the cluster name in `--profiles-path`.
pub const CLUSTER_PLACEHOLDER: &str = "{cluster}";

/// A fetched commit.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The Git commit (what files are read from).
    pub commit: String,
    /// What identifies the revision: the commit, with the overlay list's digest when
    /// `--profiles-configmap` is set ([`Overlay::revision`]).
    pub revision: String,
}

/// Everything needed to bring one release to its desired state.
#[derive(Debug, Clone)]
pub struct ReleaseJob {
    pub profile: String,
    pub release: String,
    pub namespace: String,
    pub chart_name: String,
    pub chart_version: String,
    /// The chart to install: a `.tgz` from the chart cache or a directory of the Git checkout.
    pub chart_path: PathBuf,
    /// Merged values (values files in order, then inline values).
    pub values: serde_json::Value,
    /// `strata_core::values::canonical_digest` of `values`.
    pub values_digest: String,
    /// The digest of the chart's full content ([`chart_digest`]).
    pub chart_digest: String,
    /// The release's layer in the plan (`None`: unlayered).
    pub layer: Option<u32>,
    /// The profile's timeout, if the profile list gave one.
    pub timeout: Option<Duration>,
    /// What to do after a failed attempt, and after how many failed attempts it is Stalled.
    pub remediation: strata_core::profiles::Remediation,
    /// Custom health checks (compiled CEL) of the kinds this release installs: objects of
    /// these kinds must pass them before the release is Ready.
    pub health_checks: Vec<strata_core::health::HealthCheck>,
    /// Whether the chart (its templates, subcharts and helpers included, or its values files)
    /// or the merged values may give it post-install or post-upgrade hooks
    /// ([`strata_core::hooks`]); `true` also when the chart could not be read to tell. helm
    /// runs those hooks after readiness only when it waits itself, so such a release keeps
    /// helm's wait; any other can be waited for by strata.
    pub post_hooks: bool,
    /// What to do about drift of the release's live objects (not part of any digest:
    /// changing it runs no helm).
    pub drift: strata_core::drift::DriftPolicy,
}

/// A validated revision ready to apply.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub commit: String,
    /// The profile list's path (with the cluster name filled in).
    pub profiles_path: String,
    pub list: ProfileList,
    pub plan: strata_core::plan::Plan,
    /// The job of every planned release, by its key (the plan says the layers and order).
    pub jobs: BTreeMap<ReleaseKey, ReleaseJob>,
}

impl ReleaseJob {
    /// The helm options strata sets on the release's `helm upgrade --install`;
    /// `default_timeout` is the agent's `--default-timeout` (used when the list gives none).
    pub fn helm_options(&self, default_timeout: Duration) -> strata_core::digest::HelmOptions {
        strata_core::digest::HelmOptions {
            timeout_secs: self.timeout.unwrap_or(default_timeout).as_secs(),
            wait: true,
            wait_for_jobs: true,
            create_namespace: true,
        }
    }

    /// The release's content digest: chart content, merged values and helm options.
    pub fn content_digest(&self, default_timeout: Duration) -> String {
        strata_core::digest::content_digest(
            &self.chart_digest,
            &self.values_digest,
            &self.helm_options(default_timeout),
        )
    }

    /// What core's reconcile decision compares with helm's storage (the agent and
    /// `strata diff` build it here, so both decide the same).
    pub fn desired(&self, default_timeout: Duration) -> strata_core::reconcile::DesiredRelease {
        strata_core::reconcile::DesiredRelease {
            name: self.release.clone(),
            namespace: self.namespace.clone(),
            chart_name: self.chart_name.clone(),
            chart_version: self.chart_version.clone(),
            values_digest: self.values_digest.clone(),
            chart_digest: Some(self.chart_digest.clone()),
            content_digest: Some(self.content_digest(default_timeout)),
        }
    }
}

impl Loaded {
    /// (release name, namespace) of every profile of the revision: what pruning keeps.
    pub fn desired_pairs(&self) -> Vec<(String, String)> {
        self.list
            .profiles
            .iter()
            .map(|p| (p.release_name.clone(), p.namespace.clone()))
            .collect()
    }

    /// The plan's layers in the order they run, each with the jobs of its releases.
    pub fn layers(&self) -> impl Iterator<Item = (LayerId, Vec<&ReleaseJob>)> {
        self.plan.layers.iter().map(|layer| {
            let jobs = layer
                .releases
                .iter()
                .filter_map(|r| self.jobs.get(&r.release))
                .collect();
            (LayerId::of(layer.layer.map(|n| n.0)), jobs)
        })
    }
}

/// Fetches and loads revisions.
pub struct Loader {
    /// The Git source; replaced when `--mirrors-configmap` points the Git URL elsewhere.
    git: std::sync::RwLock<GitSource>,
    /// The Git URL as configured (`--git-url`), before any mirror.
    declared_git_url: String,
    /// `--mirrors-configmap`, if given: the site's mirrors, read every cycle.
    mirrors_configmap: Option<String>,
    /// The mirrors text last applied from `--mirrors-configmap`.
    mirrors_text: std::sync::Mutex<Option<String>>,
    charts: ChartStore,
    /// The configured path; may contain `{cluster}`.
    profiles_path: String,
    /// `--cluster-name`, if given.
    cluster_name: Option<String>,
    /// `--profiles-configmap`, if given: the overlay list's ConfigMap.
    profiles_configmap: Option<String>,
    /// Where `valuesFrom` Secrets are read; `None` (offline planning) skips them.
    secrets: Option<SecretSource>,
    /// Secret-sourced values are registered here so helm's output never shows them.
    redactor: Redactor,
    /// Where charts from Git with dependencies are built (`<digest>/<chart>`).
    built: PathBuf,
    /// The Git URL as declared and the mirror it is fetched from, when `--mirrors` rewrote it.
    git_mirror: std::sync::RwLock<Option<(String, String)>>,
    /// Whether a chart may have post hooks, by chart digest (the charts of the last load).
    post_hooks: std::sync::Mutex<BTreeMap<String, bool>>,
}

/// A chart repository's credentials from its Secrets: basic auth and a client certificate.
#[derive(Clone, Default)]
struct RepoCreds {
    basic: Option<BasicAuth>,
    tls: Option<crate::source::charts::ClientTls>,
}

impl RepoCreds {
    fn apply(&self, mut spec: RepoSpec) -> RepoSpec {
        if let Some(a) = &self.basic {
            spec = spec.with_auth(a.clone());
        }
        if let Some(t) = &self.tls {
            spec = spec.with_client_tls(t.clone());
        }
        spec
    }
}

/// The cluster and default namespace `valuesFrom` Secrets are read from.
#[derive(Clone)]
struct SecretSource {
    client: kube::Client,
    /// The agent's own namespace: the default of `secretRef.namespace`.
    namespace: String,
}

fn view(p: &Problem) -> ProblemView {
    ProblemView {
        file: p.file.clone(),
        field: p.field.clone(),
        message: match (p.line, p.column) {
            (Some(l), Some(c)) => format!("{} (line {l}, column {c})", p.message),
            (Some(l), None) => format!("{} (line {l})", p.message),
            _ => p.message.clone(),
        },
    }
}

impl Loader {
    pub async fn new(
        source: SourceConfig,
        work_dir: &Path,
        redactor: Redactor,
    ) -> Result<Self, SetupError> {
        let creds = source.credentials;
        let basic = match &creds.password_file {
            Some(file) => Some(BasicAuth::from_files(
                UsernameSource::Value(creds.username.as_deref().unwrap_or("git")),
                file,
            )?),
            None => None,
        };
        let auth = GitAuth {
            basic,
            ssh_key: creds.ssh_key_file,
            known_hosts: creds.known_hosts_file,
        };
        let mirrors = match &source.mirrors_file {
            Some(path) => crate::config::read_mirrors(path).map_err(SetupError::Mirrors)?,
            None => strata_core::mirrors::Mirrors::default(),
        };
        let git_mirror = mirrors
            .rewrite(&source.git_url)
            .map(|to| (source.git_url.clone(), to));
        let declared_git_url = source.git_url.clone();
        let git_url = git_mirror
            .as_ref()
            .map_or(source.git_url, |(_, to)| to.clone());
        if let Some((from, to)) = &git_mirror {
            tracing::info!(declared = %redactor.redact(from), mirror = %redactor.redact(to), "Git repository fetched through a mirror");
        }
        let mut git = GitSource::new(
            git_url,
            source.git_ref,
            work_dir.join("git"),
            auth,
            redactor.clone(),
        );
        if let Some(ca) = &source.ca_file {
            git = git.with_ca_file(ca);
        }
        if let Some((cert, key)) = &creds.client_cert {
            git = git.with_client_cert(cert, key);
        }
        let options = crate::source::charts::HttpOptions {
            ca_file: source.ca_file.clone(),
            ..Default::default()
        };
        let charts = ChartStore::with_options(work_dir.join("charts"), options, redactor.clone())?
            .with_mirrors(mirrors);
        Ok(Self {
            git: std::sync::RwLock::new(git),
            declared_git_url,
            mirrors_configmap: source.mirrors_configmap,
            mirrors_text: Default::default(),
            charts,
            profiles_path: source.profiles_path,
            cluster_name: source.cluster_name,
            profiles_configmap: source.profiles_configmap,
            secrets: None,
            redactor,
            built: work_dir.join("built"),
            git_mirror: std::sync::RwLock::new(git_mirror),
            post_hooks: Default::default(),
        })
    }

    /// Read `valuesFrom` Secrets through `client`, by default from `namespace` (the agent's
    /// own). Without this (`strata plan`), `valuesFrom` entries are skipped.
    pub fn with_secrets(mut self, client: kube::Client, namespace: impl Into<String>) -> Self {
        self.secrets = Some(SecretSource {
            client,
            namespace: namespace.into(),
        });
        self
    }

    /// Basic auth of a chart repository from its `secretRef` (keys `username` and
    /// `password` of a Secret in the agent's namespace); `None` without `secretRef` or
    /// without a cluster (`strata plan`). The password is registered with the redactor.
    async fn repository_auth(
        &self,
        repo: &strata_core::profiles::Repository,
        list_path: &str,
    ) -> Result<Option<BasicAuth>, Failure> {
        let (Some(r), Some(src)) = (&repo.secret_ref, &self.secrets) else {
            return Ok(None);
        };
        let ns = &src.namespace;
        let problem = |message: String| {
            Failure::Problem(ProblemView {
                file: list_path.to_string(),
                field: format!("repositories[{}].secretRef", repo.name),
                message,
            })
        };
        let secret = repository_secret(
            src,
            &repo.name,
            &r.name,
            "create it with keys username and password",
            problem,
        )
        .await?;
        let data = secret.data.unwrap_or_default();
        let mut fields = Vec::new();
        for key in strata_core::profiles::REPOSITORY_SECRET_KEYS {
            let value = data
                .get(key)
                .map(|b| std::str::from_utf8(&b.0).map(|t| t.trim_end_matches(['\n', '\r'])));
            match value {
                Some(Ok(v)) if !v.is_empty() => fields.push(v.to_string()),
                Some(Ok(_)) | None => {
                    return Err(problem(format!(
                        "repository {}: Secret {ns}/{} has no (or an empty) key `{key}`; it needs keys username and password",
                        repo.name, r.name
                    )));
                }
                Some(Err(_)) => {
                    return Err(problem(format!(
                        "repository {}: key `{key}` of Secret {ns}/{} is not UTF-8 text",
                        repo.name, r.name
                    )));
                }
            }
        }
        let password = fields.pop().unwrap_or_default();
        let username = fields.pop().unwrap_or_default();
        self.redactor.add(password.clone());
        Ok(Some(BasicAuth::new(username, password)))
    }

    /// The client certificate of a chart repository from its `certSecretRef` (keys
    /// `tls.crt`, `tls.key`, optionally `ca.crt` of a Secret in the agent's namespace);
    /// `None` without `certSecretRef` or without a cluster (`strata plan`). Problems name the
    /// repository, Secret and key, never the content.
    async fn repository_tls(
        &self,
        repo: &strata_core::profiles::Repository,
        list_path: &str,
    ) -> Result<Option<crate::source::charts::ClientTls>, Failure> {
        let (Some(r), Some(src)) = (&repo.cert_secret_ref, &self.secrets) else {
            return Ok(None);
        };
        let ns = &src.namespace;
        let problem = |message: String| {
            Failure::Problem(ProblemView {
                file: list_path.to_string(),
                field: format!("repositories[{}].certSecretRef", repo.name),
                message,
            })
        };
        let secret = repository_secret(
            src,
            &repo.name,
            &r.name,
            "create it with keys tls.crt and tls.key (kubectl create secret tls)",
            problem,
        )
        .await?;
        let data = secret.data.unwrap_or_default();
        let mut pems = Vec::new();
        for key in strata_core::profiles::REPOSITORY_CERT_SECRET_KEYS {
            match data.get(key) {
                Some(v) if !v.0.is_empty() => pems.push(v.0.as_slice()),
                _ => {
                    return Err(problem(format!(
                        "repository {}: Secret {ns}/{} has no (or an empty) key `{key}`; it needs keys tls.crt and tls.key (PEM)",
                        repo.name, r.name
                    )));
                }
            }
        }
        let ca = data
            .get(strata_core::profiles::REPOSITORY_CERT_SECRET_CA_KEY)
            .map(|v| v.0.as_slice())
            .filter(|v| !v.is_empty());
        crate::source::charts::ClientTls::from_pem(
            format!("Secret {ns}/{}", r.name),
            pems[0],
            pems[1],
            ca,
        )
        .map(Some)
        .map_err(|e| problem(format!("repository {}: {e}", repo.name)))
    }

    /// The values of one `valuesFrom` entry (`None`: optional and missing, or no cluster).
    /// Problems and errors name the profile, Secret and key, never the content.
    async fn secret_values(
        &self,
        entry: &ValuesFrom,
        list_path: &str,
        field: &str,
        profile: &str,
    ) -> Result<Option<(String, serde_json::Value)>, Failure> {
        let Some(src) = &self.secrets else {
            return Ok(None);
        };
        let r = &entry.secret_ref;
        let ns = r.namespace.as_deref().unwrap_or(&src.namespace);
        let shown = format!("Secret {ns}/{} key `{}`", r.name, r.key);
        let problem = |message: String| {
            Failure::Problem(ProblemView {
                file: list_path.to_string(),
                field: field.to_string(),
                message,
            })
        };
        let api: kube::Api<Secret> = kube::Api::namespaced(src.client.clone(), ns);
        let secret = match api.get_opt(&r.name).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 401 => {
                return Err(problem(format!(
                    "profile {profile}: the agent may not read Secret {ns}/{}: {}; grant it get on secrets in {ns}",
                    r.name, e.message
                )));
            }
            Err(e) => {
                return Err(Failure::Unavailable(format!(
                    "profile {profile}: cannot read Secret {ns}/{} from the API server: {e}",
                    r.name
                )));
            }
        };
        let Some(secret) = secret else {
            return if entry.optional {
                Ok(None)
            } else {
                Err(problem(format!(
                    "profile {profile}: Secret {ns}/{} does not exist; create it (key `{}` holding YAML values) or mark this entry optional: true",
                    r.name, r.key
                )))
            };
        };
        let data = secret.data.unwrap_or_default();
        let Some(bytes) = data.get(&r.key) else {
            return if entry.optional {
                Ok(None)
            } else {
                let keys: Vec<&str> = data.keys().map(String::as_str).collect();
                Err(problem(format!(
                    "profile {profile}: Secret {ns}/{} has no key `{}` (its keys: {}); add it or set secretRef.key",
                    r.name,
                    r.key,
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                )))
            };
        };
        let Ok(text) = std::str::from_utf8(&bytes.0) else {
            return Err(problem(format!(
                "profile {profile}: {shown} is not UTF-8 text; it must hold YAML values"
            )));
        };
        match strata_core::values::parse_file(&shown, text) {
            Ok(v) => {
                register_strings(&self.redactor, &v);
                Ok(Some((shown, v)))
            }
            Err(ps) => {
                // The parser's messages may quote the content: show only where it failed.
                let at = ps
                    .iter()
                    .next()
                    .and_then(|p| p.line)
                    .map(|l| format!(" (first problem at line {l})"))
                    .unwrap_or_default();
                Err(problem(format!(
                    "profile {profile}: {shown} is not a valid YAML mapping of values{at}; the content is not shown because it is secret"
                )))
            }
        }
    }

    /// Whether the profiles path needs a cluster name (has `{cluster}`).
    pub fn needs_cluster_name(&self) -> bool {
        self.profiles_path.contains(CLUSTER_PLACEHOLDER)
    }

    /// The configured cluster name (`--cluster-name`).
    /// The URLs `--mirrors` rewrote (the Git URL, repositories pulled from so far), as
    /// declared and as fetched, credentials redacted.
    pub fn mirrored(&self) -> Vec<crate::observe::status::MirroredUrl> {
        let mut out: Vec<_> = self
            .git_mirror
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .into_iter()
            .chain(self.charts.rewritten())
            .map(|(url, to)| crate::observe::status::MirroredUrl {
                url: self.redactor.redact(&url),
                fetched_from: self.redactor.redact(&to),
            })
            .collect();
        out.dedup();
        out
    }

    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster_name.as_deref()
    }

    /// The charts pulled from repositories so far (declared repository URL, chart): after a
    /// load, every repository chart of the revision and every dependency pulled for its
    /// charts from Git.
    pub fn pulled_charts(&self) -> Vec<(String, crate::source::charts::PulledChart)> {
        self.charts.pulled()
    }

    /// The profiles path with `{cluster}` replaced by `cluster`; a problem when a name is
    /// needed and unknown or makes an invalid path.
    pub fn profiles_path(&self, cluster: Option<&str>) -> Result<String, ProblemView> {
        resolve_profiles_path(&self.profiles_path, cluster)
    }

    /// The Git source now (the mirror `--mirrors-configmap` names last; its bare cache holds
    /// the fetched commits).
    pub fn git(&self) -> GitSource {
        self.git.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the site's mirrors from `--mirrors-configmap` (every cycle, before fetching):
    /// when their text changed, chart repositories and the Git URL are fetched through the
    /// new ones from now on. Without the flag, or without a cluster (`strata plan`), nothing.
    /// A missing ConfigMap or key, an invalid mirrors list or an API error is an error
    /// naming the ConfigMap (the mirrors in use stay as they were).
    pub async fn refresh_mirrors(&self) -> Result<(), String> {
        let (Some(name), Some(src)) = (&self.mirrors_configmap, &self.secrets) else {
            return Ok(());
        };
        let ns = &src.namespace;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(src.client.clone(), ns);
        let cm = match api.get_opt(name).await {
            Ok(Some(cm)) => cm,
            Ok(None) => {
                return Err(format!(
                    "ConfigMap {ns}/{name} (--mirrors-configmap) does not exist; create it with the mirrors list under key {MIRRORS_KEY}, or unset --mirrors-configmap; nothing new is applied until then"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot read ConfigMap {ns}/{name} (--mirrors-configmap): {}; nothing new is applied until then",
                    crate::kube_api::error_text(&e)
                ));
            }
        };
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(MIRRORS_KEY)) else {
            return Err(format!(
                "ConfigMap {ns}/{name} (--mirrors-configmap) has no key {MIRRORS_KEY}; put the mirrors list there; nothing new is applied until then"
            ));
        };
        if self
            .mirrors_text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(text.as_str())
        {
            return Ok(());
        }
        let file = format!("configmap/{name}/{MIRRORS_KEY}");
        let mirrors = strata_core::mirrors::parse(&file, text).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            format!(
                "the mirrors of ConfigMap {ns}/{name} (--mirrors-configmap) are invalid: {}; nothing new is applied until they are fixed",
                list.join("; ")
            )
        })?;
        let git_mirror = mirrors
            .rewrite(&self.declared_git_url)
            .map(|to| (self.declared_git_url.clone(), to));
        let git_url = git_mirror
            .as_ref()
            .map_or(self.declared_git_url.as_str(), |(_, to)| to.as_str());
        {
            let mut git = self.git.write().unwrap_or_else(|e| e.into_inner());
            if git.url() != git_url {
                *git = git.with_url(git_url);
            }
        }
        tracing::info!(
            configmap = %format!("{ns}/{name}"),
            git = %self.redactor.redact(git_url),
            "the site's mirrors were read from the ConfigMap"
        );
        *self.git_mirror.write().unwrap_or_else(|e| e.into_inner()) = git_mirror;
        self.charts.set_mirrors(mirrors);
        *self.mirrors_text.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.clone());
        Ok(())
    }

    /// Fetch the configured ref; the commit it points to.
    pub async fn fetch(&self) -> Result<Fetched, crate::source::git::Error> {
        let rev = self.git().fetch().await?;
        Ok(Fetched {
            revision: rev.commit.clone(),
            commit: rev.commit,
        })
    }

    async fn read_text(
        &self,
        commit: &str,
        path: &str,
        referenced_from: (&str, &str),
    ) -> Result<String, Failure> {
        match self.git().read_file(commit, path).await {
            Ok(Some(bytes)) => strata_core::input::decode(path, &bytes).map_err(|ps| {
                Failure::Problem(ps.iter().next().map(view).unwrap_or_else(|| ProblemView {
                    file: path.to_string(),
                    field: String::new(),
                    message: "the file is not UTF-8 text".into(),
                }))
            }),
            Ok(None) => Err(Failure::Problem(ProblemView {
                file: referenced_from.0.to_string(),
                field: referenced_from.1.to_string(),
                message: format!("file {path} does not exist in commit {commit}"),
            })),
            // An out-of-bounds symlink, a directory: the revision's fault.
            Err(e) if e.is_revision_problem() => Err(Failure::Problem(ProblemView {
                file: referenced_from.0.to_string(),
                field: referenced_from.1.to_string(),
                message: e.to_string(),
            })),
            Err(e) => Err(Failure::Unavailable(format!(
                "cannot read {path} of commit {commit} from the Git cache: {e}"
            ))),
        }
    }

    /// The overlay list of `--profiles-configmap`, read now; `None` when not configured or
    /// without a cluster (`strata plan`, which shows the list from Git alone). A missing
    /// ConfigMap or key, or one the agent may not read, is a problem of the revision.
    pub async fn overlay(&self) -> Result<Option<Overlay>, LoadError> {
        let (Some(name), Some(src)) = (&self.profiles_configmap, &self.secrets) else {
            return Ok(None);
        };
        let ns = &src.namespace;
        let file = overlay_file(name);
        let problem = |message: String| {
            LoadError::Invalid(vec![ProblemView {
                file: file.clone(),
                field: String::new(),
                message,
            }])
        };
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(src.client.clone(), ns);
        let cm = match api.get_opt(name).await {
            Ok(Some(cm)) => cm,
            Ok(None) => {
                return Err(problem(format!(
                    "ConfigMap {ns}/{name} (--profiles-configmap) does not exist; create it with the overlay list under key {OVERLAY_KEY}, or unset --profiles-configmap"
                )));
            }
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 401 => {
                return Err(problem(format!(
                    "the agent may not read ConfigMap {ns}/{name} (--profiles-configmap): {}; grant it get on configmaps in {ns}",
                    e.message
                )));
            }
            Err(e) => {
                return Err(LoadError::Unavailable(vec![format!(
                    "cannot read ConfigMap {ns}/{name} (--profiles-configmap): {}",
                    crate::kube_api::error_text(&e)
                )]));
            }
        };
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(OVERLAY_KEY)) else {
            return Err(problem(format!(
                "ConfigMap {ns}/{name} (--profiles-configmap) has no key {OVERLAY_KEY}; put the overlay list there"
            )));
        };
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(text.as_bytes());
        let digest: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Ok(Some(Overlay {
            name: name.clone(),
            file,
            text: text.clone(),
            digest,
        }))
    }

    /// Load and validate the revision at `fetched` (the profile list at
    /// [`Loader::profiles_path`] for `cluster`): a plan with its jobs, every problem of the
    /// revision, or (a chart repository or the Git cache failing) that it cannot be judged now.
    pub async fn load(
        &self,
        fetched: &Fetched,
        cluster: Option<&str>,
    ) -> Result<Loaded, LoadError> {
        let overlay = self.overlay().await?;
        self.load_with(fetched, cluster, overlay.as_ref()).await
    }

    /// [`Loader::load`] with the overlay list already read ([`Loader::overlay`]).
    pub async fn load_with(
        &self,
        fetched: &Fetched,
        cluster: Option<&str>,
        overlay: Option<&Overlay>,
    ) -> Result<Loaded, LoadError> {
        let commit = fetched.commit.as_str();
        let path = self
            .profiles_path(cluster)
            .map_err(|p| LoadError::Invalid(vec![p]))?;
        let path = path.as_str();
        let text = self
            .read_text(commit, path, (path, ""))
            .await
            .map_err(|f| match f {
                Failure::Problem(p) => LoadError::Invalid(vec![p]),
                Failure::Unavailable(m) => LoadError::Unavailable(vec![m]),
            })?;
        let list = self.compose(commit, path, &text, overlay).await?;
        let at = At { commit, list: path };
        let mut found = Findings::default();
        let allocation = self.allocation(at, &list, &mut found).await;
        // Credentials of the repositories that have a secretRef (read once per load).
        let mut repo_auth: BTreeMap<String, RepoCreds> = BTreeMap::new();
        for repo in &list.repositories {
            let basic = self.repository_auth(repo, path).await;
            let tls = self.repository_tls(repo, path).await;
            match (basic, tls) {
                (Ok(basic), Ok(tls)) => {
                    repo_auth.insert(repo.name.clone(), RepoCreds { basic, tls });
                }
                (basic, tls) => {
                    for f in [basic.err(), tls.err()].into_iter().flatten() {
                        found.add(f);
                    }
                }
            }
        }
        // Charts (each pulled once, cached by digest) and values.
        let mut checkout: Option<PathBuf> = None;
        let mut charts = BTreeMap::new();
        let mut chart_paths = BTreeMap::new();
        let mut digests = BTreeMap::new();
        let mut values = BTreeMap::new();
        // Post hooks by chart digest: read once per chart, kept from the previous load.
        let known = {
            let mut cache = self.post_hooks.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *cache)
        };
        let mut post_hooks: BTreeMap<String, bool> = BTreeMap::new();
        for profile in &list.profiles {
            if let Some(v) = self.profile_values(at, profile, &mut found).await {
                values.insert(profile.name.clone(), v);
            }
            let chart = self
                .profile_chart(at, &list, profile, &repo_auth, &mut checkout, &mut found)
                .await;
            if let Some((meta, chart_path)) = chart {
                match chart_digest(&chart_path) {
                    Ok(d) => {
                        if !post_hooks.contains_key(&d) {
                            let hooks = known.get(&d).copied().unwrap_or_else(|| {
                                crate::source::hooks::chart_post_hooks(&chart_path)
                            });
                            post_hooks.insert(d.clone(), hooks);
                        }
                        digests.insert(profile.name.clone(), d);
                    }
                    Err(e) => found.add(Failure::Unavailable(format!(
                        "cannot read chart {} of profile {} to digest it: {e}",
                        chart_path.display(),
                        profile.name
                    ))),
                }
                charts.insert(profile.name.clone(), meta);
                chart_paths.insert(profile.name.clone(), chart_path);
            }
        }
        *self.post_hooks.lock().unwrap_or_else(|e| e.into_inner()) = post_hooks.clone();
        found.into_result()?;
        let plan = strata_core::plan::plan(&list, &charts, allocation.as_ref())
            .map_err(|ps| LoadError::Invalid(ps.iter().map(view).collect()))?;
        let charts_in = ChartsIn {
            metas: &charts,
            paths: &chart_paths,
            digests: &digests,
            post_hooks: &post_hooks,
        };
        let jobs = jobs_from_plan(&list, &plan, &charts_in, &values);
        Ok(Loaded {
            commit: commit.to_string(),
            profiles_path: path.to_string(),
            list,
            plan,
            jobs,
        })
    }

    /// The profile list at `path` (its text `text`) with the lists it includes, read from
    /// `commit` as [`strata_core::compose`] asks for them, merged and validated.
    async fn compose(
        &self,
        commit: &str,
        path: &str,
        text: &str,
        overlay: Option<&Overlay>,
    ) -> Result<ProfileList, LoadError> {
        use strata_core::compose::{self, Fetched as Got, Outcome, Root};
        let mut files: BTreeMap<String, Got> = BTreeMap::new();
        let first = [path.to_string()];
        // With an overlay, it is the root and includes the list from Git first.
        let root = match overlay {
            Some(o) => {
                files.insert(path.to_string(), Got::Text(text.to_string()));
                Root {
                    file: &o.file,
                    text: &o.text,
                    first: &first,
                }
            }
            None => Root {
                file: path,
                text,
                first: &[],
            },
        };
        // Each round reads one more level of includes; the depth is bounded by core.
        for _ in 0..=compose::MAX_INCLUDE_DEPTH + 1 {
            let need = match compose::compose(root, &files) {
                Outcome::Done(r) => {
                    return (*r).map_err(|ps| LoadError::Invalid(ps.iter().map(view).collect()));
                }
                Outcome::Need(need) => need,
            };
            for p in need {
                let got = match self.git().read_file(commit, &p).await {
                    Ok(Some(bytes)) => match strata_core::input::decode(&p, &bytes) {
                        Ok(t) => Got::Text(t),
                        Err(ps) => Got::Refused(ps.iter().next().map_or_else(
                            || "the file is not UTF-8 text".into(),
                            |p| p.message.clone(),
                        )),
                    },
                    Ok(None) => Got::Absent,
                    Err(e) if e.is_revision_problem() => Got::Refused(e.to_string()),
                    Err(e) => {
                        return Err(LoadError::Unavailable(vec![format!(
                            "cannot read {p} of commit {commit} from the Git cache: {e}"
                        )]));
                    }
                };
                files.insert(p, got);
            }
        }
        Err(LoadError::Invalid(vec![ProblemView {
            file: path.to_string(),
            field: "include".into(),
            message: "the included lists could not be resolved".into(),
        }]))
    }

    /// The allocation file of model `allocated`, parsed.
    async fn allocation(
        &self,
        at: At<'_>,
        list: &ProfileList,
        found: &mut Findings,
    ) -> Option<strata_core::allocation::Allocation> {
        let (LayeringModel::Allocated, Some(file)) =
            (&list.layering.model, &list.layering.allocation_file)
        else {
            return None;
        };
        let text = self
            .read_text(at.commit, file, (at.list, "layering.allocationFile"))
            .await
            .map_err(|f| found.add(f))
            .ok()?;
        strata_core::allocation::parse(file, &text)
            .map_err(|ps| found.problems.extend(ps.iter().map(view)))
            .ok()
    }

    /// A profile's merged values: its values files, then its `valuesFrom` Secrets, in order,
    /// then its inline values; within the size limits.
    async fn profile_values(
        &self,
        at: At<'_>,
        profile: &strata_core::profiles::Profile,
        found: &mut Findings,
    ) -> Option<serde_json::Value> {
        let field = |f: &str| format!("profiles[{}].{f}", profile.name);
        let mut files = Vec::new();
        for (i, vf) in profile.values_files.iter().enumerate() {
            match self
                .read_text(
                    at.commit,
                    vf,
                    (at.list, &field(&format!("valuesFiles[{i}]"))),
                )
                .await
            {
                Ok(t) => match strata_core::values::parse_file(vf, &t) {
                    Ok(v) => files.push((vf.clone(), v)),
                    Err(ps) => found.problems.extend(ps.iter().map(view)),
                },
                Err(f) => found.add(f),
            }
        }
        for (i, entry) in profile.values_from.iter().enumerate() {
            let field = field(&format!("valuesFrom[{i}]"));
            match self
                .secret_values(entry, at.list, &field, &profile.name)
                .await
            {
                Ok(Some(v)) => files.push(v),
                Ok(None) => {}
                Err(f) => found.add(f),
            }
        }
        let inline = serde_json::Value::Object(profile.values.clone());
        let merged = strata_core::values::merge(&files, &inline)
            .map_err(|ps| found.problems.extend(ps.iter().map(view)))
            .ok()?;
        if let Err(e) = strata_core::limits::check_values(&profile.name, &merged) {
            found.problems.push(ProblemView {
                file: at.list.to_string(),
                field: field("values"),
                message: e.to_string(),
            });
        }
        Some(merged)
    }

    /// A profile's chart: pulled from its repository (cached by digest) or a directory of
    /// the checkout whose symlinks stay inside it; its Chart.yaml parsed and, for a chart
    /// from Git, its version checked against the profile's constraint.
    async fn profile_chart(
        &self,
        at: At<'_>,
        list: &ProfileList,
        profile: &strata_core::profiles::Profile,
        repo_auth: &BTreeMap<String, RepoCreds>,
        checkout: &mut Option<PathBuf>,
        found: &mut Findings,
    ) -> Option<(strata_core::chart::ChartMeta, PathBuf)> {
        let (commit, path) = (at.commit, at.list);
        let field = |f: &str| format!("profiles[{}].{f}", profile.name);
        let pulled = match &profile.chart {
            ChartRef::Repository { repository, name } => {
                // A missing repository or version is reported by the parser.
                let repo = list.repository(repository)?;
                let constraint = profile.version.as_ref()?;
                // Without an entry, its Secret is a problem already.
                let spec = repo_auth
                    .get(&repo.name)?
                    .apply(RepoSpec::new(&repo.name, &repo.url).with_plain_http(repo.plain_http));
                self.charts
                    .pull(spec, name, constraint)
                    .await
                    .map(|c| {
                        let file = format!("{name}-{}.tgz:Chart.yaml", c.version);
                        (c.path, c.chart_yaml, file)
                    })
                    .map_err(|e| {
                        if is_transient(&e) {
                            Failure::Unavailable(e.to_string())
                        } else {
                            Failure::Problem(ProblemView {
                                file: path.to_string(),
                                field: field("chart"),
                                message: e.to_string(),
                            })
                        }
                    })
            }
            ChartRef::Path { path: chart_dir } => {
                if checkout.is_none() {
                    match self.git().checkout(commit).await {
                        Ok(dir) => *checkout = Some(dir),
                        Err(e) => {
                            found.add(Failure::Unavailable(format!(
                                "cannot check out commit {commit}: {e}"
                            )));
                            return None;
                        }
                    }
                }
                // Every symlink of the chart stays inside it (helm follows them).
                let dir = match checkout
                    .as_ref()
                    .map(|c| crate::source::tree::check_chart_dir(c, chart_dir))
                {
                    Some(Ok(dir)) => Some(dir),
                    Some(Err(messages)) => {
                        found
                            .problems
                            .extend(messages.into_iter().map(|message| ProblemView {
                                file: path.to_string(),
                                field: field("chart.path"),
                                message,
                            }));
                        None
                    }
                    None => None,
                };
                let chart_file = format!("{chart_dir}/Chart.yaml");
                match (
                    dir,
                    self.read_text(commit, &chart_file, (path, &field("chart.path")))
                        .await,
                ) {
                    (Some(dir), Ok(text)) => Ok((dir, text, chart_file)),
                    (_, Err(f)) => Err(f),
                    (None, Ok(_)) => return None,
                }
            }
        };
        let (chart_path, chart_yaml, chart_file) = pulled.map_err(|f| found.add(f)).ok()?;
        let meta = strata_core::chart::parse_chart_yaml(&chart_file, &chart_yaml)
            .map_err(|ps| found.problems.extend(ps.iter().map(view)))
            .ok()?;
        if let (ChartRef::Path { .. }, Some(c)) = (&profile.chart, &profile.version)
            && !c.matches_str(&meta.version)
        {
            found.problems.push(ProblemView {
                file: path.to_string(),
                field: field("version"),
                message: format!(
                    "the chart at this path has version {}, which does not match {}",
                    meta.version,
                    c.as_str()
                ),
            });
        }
        if let ChartRef::Path { path: chart_dir } = &profile.chart
            && !meta.dependencies.is_empty()
            && let Some(checkout) = checkout.as_deref()
        {
            let repos = list
                .repositories
                .iter()
                .map(|r| {
                    let spec = RepoSpec::new(&r.name, &r.url).with_plain_http(r.plain_http);
                    match repo_auth.get(&r.name) {
                        Some(c) => c.apply(spec),
                        None => spec,
                    }
                })
                .collect();
            let builder = crate::source::deps::Builder {
                checkout,
                charts: &self.charts,
                repos,
            };
            let rel = chart_path
                .strip_prefix(checkout)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| chart_dir.clone());
            return match self.build_chart(&builder, &rel, &meta.name).await {
                Ok(built) => Some((meta, built)),
                Err(failures) => {
                    for f in failures {
                        found.add(match f {
                            crate::source::deps::DepFailure::Problem(message) => {
                                Failure::Problem(ProblemView {
                                    file: path.to_string(),
                                    field: field("chart.path"),
                                    message,
                                })
                            }
                            crate::source::deps::DepFailure::Unavailable(m) => {
                                Failure::Unavailable(format!("profile {}: {m}", profile.name))
                            }
                        });
                    }
                    None
                }
            };
        }
        Some((meta, chart_path))
    }

    /// Builds the chart at `rel` of the checkout with its dependencies into
    /// `<built>/<digest>/<name>` (content-addressed: a build never changes under a helm that
    /// reads it); the built directory.
    async fn build_chart(
        &self,
        builder: &crate::source::deps::Builder<'_>,
        rel: &str,
        name: &str,
    ) -> Result<PathBuf, Vec<crate::source::deps::DepFailure>> {
        use crate::source::deps::DepFailure;
        let io = |e: std::io::Error| {
            vec![DepFailure::Unavailable(format!(
                "cannot build chart {rel} in {}: {e}",
                self.built.display()
            ))]
        };
        std::fs::create_dir_all(&self.built).map_err(io)?;
        let tmp = tempfile::Builder::new()
            .prefix(".build-")
            .tempdir_in(&self.built)
            .map_err(io)?;
        let staged = tmp.path().join(name);
        builder.build(rel, &staged).await?;
        let digest = chart_digest(&staged).map_err(io)?;
        let short = digest.trim_start_matches("sha256:");
        let dir = self.built.join(&short[..short.len().min(32)]);
        let target = dir.join(name);
        if !target.join("Chart.yaml").is_file() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::rename(&staged, &target).map_err(io)?;
        }
        // Reused builds are touched; builds untouched for a day (no load used them since, and
        // no helm run lasts that long) are removed.
        if let Ok(f) = std::fs::File::open(&dir) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        remove_stale_builds(&self.built, &dir, BUILD_KEPT);
        Ok(target)
    }
}

/// How long a built chart directory unused by any load is kept.
const BUILD_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// Removes the entries of `built` (but `keep`) not modified for `age`.
fn remove_stale_builds(built: &Path, keep: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(built) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|el| el > age);
        if old
            && p != keep
            && let Err(err) = std::fs::remove_dir_all(&p)
        {
            tracing::warn!(dir = %p.display(), error = %err, "cannot remove an old built chart");
        }
    }
}

/// Where a revision is read from: the commit, and the profile list's path in it (the file
/// problems of the list's fields are reported against).
#[derive(Clone, Copy)]
struct At<'a> {
    commit: &'a str,
    list: &'a str,
}

/// Everything wrong with a revision being loaded, gathered so that all of it is reported at
/// once: problems of the revision, and inputs that could not be read now.
#[derive(Default)]
struct Findings {
    problems: Vec<ProblemView>,
    unavailable: Vec<String>,
}

impl Findings {
    fn add(&mut self, f: Failure) {
        match f {
            Failure::Problem(p) => self.problems.push(p),
            Failure::Unavailable(m) => self.unavailable.push(m),
        }
    }

    fn into_result(self) -> Result<(), LoadError> {
        if !self.unavailable.is_empty() {
            // Judging the revision needs every input: try again at the next interval.
            return Err(LoadError::Unavailable(self.unavailable));
        }
        if !self.problems.is_empty() {
            // Planning with missing charts would only add noise about them.
            return Err(LoadError::Invalid(self.problems));
        }
        Ok(())
    }
}

/// Register every string leaf of `v` as a secret.
fn register_strings(redactor: &Redactor, v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => redactor.add(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| register_strings(redactor, i)),
        serde_json::Value::Object(m) => m.values().for_each(|i| register_strings(redactor, i)),
        _ => {}
    }
}

/// `template` with `{cluster}` replaced by `cluster`; a problem when a name is needed and
/// unknown, or makes a path outside the repository.
pub fn resolve_profiles_path(template: &str, cluster: Option<&str>) -> Result<String, ProblemView> {
    if !template.contains(CLUSTER_PLACEHOLDER) {
        return Ok(template.to_string());
    }
    let problem = |message: String| ProblemView {
        file: template.to_string(),
        field: String::new(),
        message,
    };
    let Some(name) = cluster else {
        return Err(problem(
            "the profiles path contains {cluster} but this cluster's name is unknown: set \
             --cluster-name / STRATA_CLUSTER_NAME (strata run also reads clusterName from \
             ConfigMap kube-system/kubeadm-config)"
                .into(),
        ));
    };
    if name.contains('/') || name.contains("..") || name.trim().is_empty() {
        return Err(problem(format!(
            "cluster name {name:?} cannot be used in a path; use a DNS name"
        )));
    }
    let path = template.replace(CLUSTER_PLACEHOLDER, name);
    strata_core::types::check_repo_path(&path).map_err(|e| problem(e.to_string()))
}

/// Why a revision could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The revision is invalid: every problem found, each with file and field.
    Invalid(Vec<ProblemView>),
    /// An input could not be read now (chart repository down, Git cache failing): the
    /// revision is neither accepted nor rejected; the next interval tries again.
    Unavailable(Vec<String>),
}

/// One failed input.
enum Failure {
    Problem(ProblemView),
    Unavailable(String),
}

/// Chart errors that say nothing about the revision (retry later) rather than a problem in it.
fn is_transient(e: &crate::source::charts::Error) -> bool {
    match e {
        crate::source::charts::Error::Http { status, .. } => {
            status.is_none_or(|s| s >= 500 || s == 429 || s == 408)
        }
        crate::source::charts::Error::Io { .. } => true,
        _ => false,
    }
}

/// The digest of a chart's full content: a repository chart's archive (`.tgz`) bytes, or
/// every file of a chart directory of the Git checkout (relative paths and contents,
/// vendored dependencies under `charts/` included; symlinks, already checked to stay inside
/// the chart, are followed as helm follows them).
pub fn chart_digest(path: &std::path::Path) -> std::io::Result<String> {
    if path.is_file() {
        return Ok(strata_core::digest::chart_archive_digest(&std::fs::read(
            path,
        )?));
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let p = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            let meta = std::fs::metadata(&p)?;
            if meta.is_dir() {
                dirs.push(p);
            } else {
                let rel = p
                    .strip_prefix(path)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((rel, std::fs::read(&p)?));
            }
        }
    }
    Ok(strata_core::digest::chart_files_digest(files))
}

/// The charts of a load: Chart.yaml, path and digest by profile name; post hooks by digest.
struct ChartsIn<'a> {
    metas: &'a BTreeMap<String, strata_core::chart::ChartMeta>,
    paths: &'a BTreeMap<String, PathBuf>,
    digests: &'a BTreeMap<String, String>,
    post_hooks: &'a BTreeMap<String, bool>,
}

/// The job of every planned release, by release key.
fn jobs_from_plan(
    list: &ProfileList,
    plan: &strata_core::plan::Plan,
    charts: &ChartsIn<'_>,
    values: &BTreeMap<String, serde_json::Value>,
) -> BTreeMap<ReleaseKey, ReleaseJob> {
    plan.layers
        .iter()
        .flat_map(|layer| layer.releases.iter().map(move |r| (layer.layer, r)))
        .filter_map(|(layer, planned)| {
            let profile = list.profile(&planned.profile)?;
            let meta = charts.metas.get(&profile.name)?;
            let chart_digest = charts.digests.get(&profile.name)?.clone();
            // Unknown (not read): helm waits.
            let chart_hooks = charts
                .post_hooks
                .get(&chart_digest)
                .copied()
                .unwrap_or(true);
            let v = values
                .get(&profile.name)
                .cloned()
                .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
            let job = ReleaseJob {
                profile: profile.name.clone(),
                release: profile.release_name.clone(),
                namespace: profile.namespace.clone(),
                chart_name: meta.name.clone(),
                chart_version: meta.version.clone(),
                chart_path: charts.paths.get(&profile.name)?.clone(),
                values_digest: strata_core::values::canonical_digest(&v),
                chart_digest,
                layer: layer.map(|n| n.0),
                post_hooks: chart_hooks || strata_core::hooks::values_may_add_post_hooks(&v),
                values: v,
                remediation: profile.remediation,
                health_checks: profile.health_checks.clone(),
                drift: profile.drift.clone(),
                // The list's timeout when it gives one (on the profile or in `defaults`);
                // otherwise the agent's --default-timeout.
                timeout: profile
                    .timeout_given
                    .0
                    .then(|| profile.timeout.as_duration()),
            };
            Some((planned.release.clone(), job))
        })
        .collect()
}

/// A Secret a repository's profile-list entry names (in the agent's namespace): missing or
/// forbidden is a `problem` of the entry (`create` says what it needs), an API that cannot
/// answer is [`Failure::Unavailable`].
async fn repository_secret(
    src: &SecretSource,
    repository: &str,
    name: &str,
    create: &str,
    problem: impl Fn(String) -> Failure,
) -> Result<Secret, Failure> {
    let ns = &src.namespace;
    let api: kube::Api<Secret> = kube::Api::namespaced(src.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(problem(format!(
            "repository {repository}: Secret {ns}/{name} does not exist; {create}"
        ))),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 401 => Err(problem(format!(
            "repository {repository}: the agent may not read Secret {ns}/{name}: {}; grant it get on secrets in {ns}",
            e.message
        ))),
        Err(e) => Err(Failure::Unavailable(format!(
            "repository {repository}: cannot read Secret {ns}/{name} from the API server: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_placeholder_is_resolved_or_reported() {
        assert_eq!(
            resolve_profiles_path("profiles.yaml", None).unwrap(),
            "profiles.yaml"
        );
        assert_eq!(
            resolve_profiles_path("clusters/{cluster}/profiles.yaml", Some("prod-eu")).unwrap(),
            "clusters/prod-eu/profiles.yaml"
        );
        let p = resolve_profiles_path("clusters/{cluster}/profiles.yaml", None).unwrap_err();
        assert!(p.message.contains("STRATA_CLUSTER_NAME"), "{p:?}");
        assert!(resolve_profiles_path("clusters/{cluster}/p.yaml", Some("../x")).is_err());
        assert!(resolve_profiles_path("clusters/{cluster}/p.yaml", Some("a/b")).is_err());
    }

    #[test]
    fn chart_digest_sees_every_file_of_a_directory_and_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let chart = dir.path().join("demo");
        std::fs::create_dir_all(chart.join("templates")).unwrap();
        std::fs::write(chart.join("Chart.yaml"), "name: demo\nversion: 1.0.0\n").unwrap();
        std::fs::write(chart.join("templates/cm.yaml"), "a: 1\n").unwrap();
        let before = chart_digest(&chart).unwrap();
        assert_eq!(before, chart_digest(&chart).unwrap());
        std::fs::write(chart.join("templates/cm.yaml"), "a: 2\n").unwrap();
        let edited = chart_digest(&chart).unwrap();
        assert_ne!(before, edited);
        std::fs::create_dir_all(chart.join("charts/sub")).unwrap();
        std::fs::write(chart.join("charts/sub/Chart.yaml"), "name: sub\n").unwrap();
        assert_ne!(edited, chart_digest(&chart).unwrap());
        let tgz = dir.path().join("demo-1.0.0.tgz");
        std::fs::write(&tgz, b"archive").unwrap();
        assert_eq!(
            chart_digest(&tgz).unwrap(),
            strata_core::digest::chart_archive_digest(b"archive")
        );
        assert!(chart_digest(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn old_builds_are_removed_but_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(dir.path().join(d).join("chart")).unwrap();
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for d in ["a", "b"] {
            std::fs::File::open(dir.path().join(d))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        remove_stale_builds(dir.path(), &dir.path().join("b"), Duration::from_secs(60));
        assert!(!dir.path().join("a").exists());
        assert!(dir.path().join("b").exists(), "the current build is kept");
        assert!(dir.path().join("c").exists(), "a recent build is kept");
    }

    #[test]
    fn every_string_leaf_is_registered() {
        let r = Redactor::new();
        register_strings(
            &r,
            &serde_json::json!({"a": {"pw": "s3cr3t-one"}, "l": ["tok-two", 12345], "n": 7}),
        );
        assert_eq!(
            r.redact("x s3cr3t-one y tok-two z 12345"),
            "x *** y *** z 12345"
        );
    }
}
