//! Chart sources: HTTP(S) Helm repositories (index.yaml with ETag revalidation, version
//! resolution by strata-core, download verified against the index digest, a cache by digest so
//! each chart version is pulled once), OCI registries (`oci://`, see [`super::oci`]: versions
//! from the registry's tags, the chart layer verified against the manifest's digest, into the
//! same cache) and chart directories inside the Git checkout.
//!
//! Archives are read with bounds: entries larger than [`MAX_ENTRY`] or paths with `..` are
//! rejected, and downloads stop at [`MAX_ARCHIVE`].

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;
use strata_core::version::VersionConstraint;

use crate::executor::process::Redactor;
use crate::source::auth::BasicAuth;
use crate::source::tree;

/// Largest chart archive downloaded.
pub const MAX_ARCHIVE: usize = 64 * 1024 * 1024;
/// Largest index.yaml downloaded.
pub const MAX_INDEX: usize = 64 * 1024 * 1024;
/// Largest single file read from an archive (Chart.yaml).
pub const MAX_ENTRY: u64 = 4 * 1024 * 1024;
/// Most bytes decompressed while looking for Chart.yaml (guards against gzip bombs).
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;

/// Errors of chart sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry {repository} ({url}): {message}")]
    Registry {
        repository: String,
        url: String,
        message: String,
    },
    #[error(
        "repository {repository} has an unsupported URL {url}; use http://, https:// or oci://"
    )]
    UnsupportedScheme { repository: String, url: String },
    #[error("could not fetch {url} from repository {repository}: {message}")]
    Http {
        repository: String,
        url: String,
        /// HTTP status, when the server answered.
        status: Option<u16>,
        message: String,
    },
    #[error(
        "could not fetch {url} from repository {repository}: the server's certificate is not trusted ({message}); give the repository's CA file"
    )]
    Tls {
        repository: String,
        url: String,
        message: String,
    },
    /// The server asked for a client certificate (mutual TLS) and got none, or refused the
    /// one presented.
    #[error(
        "could not fetch {url} from repository {repository}: the server {what} ({message}); {hint}"
    )]
    ClientCertificate {
        repository: String,
        url: String,
        what: &'static str,
        message: String,
        hint: &'static str,
    },
    #[error("repository {repository}: index {url} is invalid: {problems}")]
    Index {
        repository: String,
        url: String,
        problems: String,
    },
    #[error("repository {repository}: {message}")]
    Resolve { repository: String, message: String },
    #[error(
        "chart {chart} {version} from {url}: digest mismatch (index says {expected}, downloaded {actual}); the repository is inconsistent or the download was tampered with"
    )]
    DigestMismatch {
        chart: String,
        version: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("chart archive {}: {message}", archive.display())]
    Archive { archive: PathBuf, message: String },
    #[error("{}", crate::source::disk::describe(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not set up the HTTP client: {0}")]
    Client(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Pauses before retrying a transient HTTP failure (so at most three attempts).
pub const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(800)];

impl Error {
    /// Whether trying again may help: no answer at all, or a server error other than 501.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { status: None, .. } => true,
            Error::Http {
                status: Some(s), ..
            } => *s >= 500 && *s != 501,
            _ => false,
        }
    }
}

/// The kind of a repository, from its URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Http,
    Oci,
}

/// A chart repository as the profile list names it, plus credentials.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    pub name: String,
    pub url: String,
    pub auth: Option<BasicAuth>,
    /// The client certificate (mTLS) presented to this repository.
    pub tls: Option<ClientTls>,
    /// An `oci://` registry over plain HTTP.
    pub plain_http: bool,
}

/// A repository's client certificate (mTLS) from its `certSecretRef`: a certificate (chain)
/// and private key, PEM, and optionally CAs trusted for that repository. `Debug` shows only
/// where it came from, never the key.
#[derive(Clone)]
pub struct ClientTls {
    /// Where it came from, for errors (`Secret <ns>/<name>`).
    pub source: String,
    /// Certificate chain then private key, PEM (what `reqwest::Identity::from_pem` reads).
    identity_pem: Arc<Vec<u8>>,
    /// Extra trusted CAs (PEM), from `ca.crt`.
    ca_pem: Option<Arc<Vec<u8>>>,
    /// SHA-256 of everything above: the key of the client built for it.
    key: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// A client certificate from `cert_pem` (key `tls.crt`), `key_pem` (`tls.key`) and
    /// optionally `ca_pem` (`ca.crt`), as found in `source`. Checked now: an error names the
    /// source and the key at fault, never the content.
    pub fn from_pem(
        source: impl Into<String>,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> std::result::Result<Self, String> {
        let source = source.into();
        let has = |pem: &[u8], label: &str| {
            String::from_utf8_lossy(pem)
                .lines()
                .any(|l| l.trim().starts_with("-----BEGIN ") && l.contains(label))
        };
        if !has(cert_pem, "CERTIFICATE-----") {
            return Err(format!(
                "key `tls.crt` of {source} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
        if !has(key_pem, "PRIVATE KEY-----") {
            return Err(format!(
                "key `tls.key` of {source} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"
            ));
        }
        let mut identity_pem = cert_pem.to_vec();
        if !identity_pem.ends_with(b"\n") {
            identity_pem.push(b'\n');
        }
        identity_pem.extend_from_slice(key_pem);
        // Parsing checks the PEM; building a client (without loading the system's roots)
        // checks that rustls can use the key.
        let usable = reqwest::Identity::from_pem(&identity_pem).is_ok_and(|id| {
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .identity(id)
                .build()
                .is_ok()
        });
        if !usable {
            return Err(format!(
                "keys `tls.crt` and `tls.key` of {source} are not a usable certificate and private key (PEM that does not parse, or a key type that is not supported)"
            ));
        }
        if let Some(ca) = ca_pem
            && reqwest::Certificate::from_pem_bundle(ca)
                .map(|c| c.is_empty())
                .unwrap_or(true)
        {
            return Err(format!("key `ca.crt` of {source} holds no PEM certificate"));
        }
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(&identity_pem);
        h.update([0]);
        h.update(ca_pem.unwrap_or_default());
        let key = format!("{:x}", h.finalize());
        Ok(Self {
            source,
            identity_pem: Arc::new(identity_pem),
            ca_pem: ca_pem.map(|c| Arc::new(c.to_vec())),
            key,
        })
    }
}

impl RepoSpec {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            auth: None,
            tls: None,
            plain_http: false,
        }
    }

    /// Present `tls` (a client certificate) to this repository.
    pub fn with_client_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// An `oci://` registry spoken to over plain HTTP (the profile list's `plainHttp`).
    pub fn with_plain_http(mut self, plain_http: bool) -> Self {
        self.plain_http = plain_http;
        self
    }

    pub fn with_auth(mut self, auth: BasicAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    pub fn kind(&self) -> Result<RepoKind> {
        let lower = self.url.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Ok(RepoKind::Http)
        } else if lower.starts_with("oci://") {
            Ok(RepoKind::Oci)
        } else {
            Err(Error::UnsupportedScheme {
                repository: self.name.clone(),
                url: self.url.clone(),
            })
        }
    }

    /// `<url>/index.yaml`.
    pub fn index_url(&self) -> String {
        format!("{}/index.yaml", self.url.trim_end_matches('/'))
    }
}

impl From<&str> for RepoSpec {
    /// A repository known only by its URL (no credentials).
    fn from(url: &str) -> Self {
        RepoSpec::new(url, url)
    }
}

impl From<&String> for RepoSpec {
    fn from(url: &String) -> Self {
        RepoSpec::new(url.as_str(), url.as_str())
    }
}

impl From<&RepoSpec> for RepoSpec {
    fn from(spec: &RepoSpec) -> Self {
        spec.clone()
    }
}

/// HTTP client options.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Timeout of one request.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) trusted for HTTPS repositories.
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            ca_file: None,
        }
    }
}

/// A chart archive in the cache with its Chart.yaml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledChart {
    pub name: String,
    pub version: String,
    /// sha256 hex of the archive.
    pub digest: String,
    /// The archive, `<cache>/sha256/<digest>.tgz`.
    pub path: PathBuf,
    /// The chart's `Chart.yaml` text.
    pub chart_yaml: String,
}

#[derive(Clone)]
struct CachedIndex {
    etag: Option<String>,
    /// Parsed once per new text: a revision with many charts from one big repository
    /// revalidates the index for each of them but parses it once.
    index: Arc<strata_core::repoindex::RepoIndex>,
}

/// A chart pulled: (declared repository URL, name, version).
type PulledKey = (String, String, String);

/// A cached archive checked against its digest: its length, modification time and Chart.yaml.
type Verified = (u64, std::time::SystemTime, String);

/// Chart repositories and the chart cache of one agent.
#[derive(Clone)]
pub struct ChartStore {
    cache: PathBuf,
    client: reqwest::Client,
    redactor: Redactor,
    indexes: Arc<Mutex<HashMap<String, CachedIndex>>>,
    /// Digests of archives whose index entry had no digest, by URL.
    url_digests: Arc<Mutex<HashMap<String, String>>>,
    /// Serialises downloads of the same URL.
    downloads: Arc<tokio::sync::Mutex<()>>,
    /// Cached archives verified against their digest, by path: (length, modification time,
    /// Chart.yaml). A file changed since is verified again.
    verified: Arc<Mutex<HashMap<PathBuf, Verified>>>,
    /// Registry bearer tokens by (realm, service, scope).
    tokens: Arc<Mutex<HashMap<String, String>>>,
    /// The site's URL-prefix rewrites (`--mirrors`), applied to every repository pulled from.
    mirrors: Arc<std::sync::RwLock<Arc<strata_core::mirrors::Mirrors>>>,
    /// Repository URLs the mirrors rewrote: declared URL to mirror URL.
    rewritten: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
    /// The options every client is built with.
    options: HttpOptions,
    /// Clients presenting a client certificate, by [`ClientTls`] key.
    tls_clients: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    /// Every chart pulled through [`ChartStore::pull`]: (declared repository URL, name,
    /// version) to the archive (what `strata bundle` carries).
    pulled: Arc<Mutex<std::collections::BTreeMap<PulledKey, PulledChart>>>,
}

impl ChartStore {
    /// Charts cached under `cache_dir` (`sha256/<digest>.tgz`), default HTTP options.
    pub fn new(cache_dir: impl Into<PathBuf>, redactor: Redactor) -> Result<Self> {
        Self::with_options(cache_dir, HttpOptions::default(), redactor)
    }

    /// Charts cached under `cache_dir` with HTTP options (timeout, CA file).
    pub fn with_options(
        cache_dir: impl Into<PathBuf>,
        options: HttpOptions,
        redactor: Redactor,
    ) -> Result<Self> {
        let client = Self::build_client(&options, None)?;
        Ok(Self {
            cache: cache_dir.into(),
            client,
            redactor,
            indexes: Default::default(),
            url_digests: Default::default(),
            downloads: Default::default(),
            verified: Default::default(),
            tokens: Default::default(),
            mirrors: Arc::default(),
            rewritten: Arc::default(),
            options,
            tls_clients: Default::default(),
            pulled: Arc::default(),
        })
    }

    /// An HTTP client with `options`, presenting `tls` when given.
    fn build_client(options: &HttpOptions, tls: Option<&ClientTls>) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca).map_err(|source| Error::Io {
                path: ca.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Client(format!("CA file {}: {e}", ca.display())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some(t) = tls {
            // Checked by ClientTls::from_pem; errors name the Secret, never the content.
            let identity = reqwest::Identity::from_pem(&t.identity_pem).map_err(|_| {
                Error::Client(format!(
                    "the client certificate of {} is not usable",
                    t.source
                ))
            })?;
            builder = builder.identity(identity);
            if let Some(ca) = &t.ca_pem {
                let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(|_| {
                    Error::Client(format!("key `ca.crt` of {} is not PEM", t.source))
                })?;
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
        }
        builder.build().map_err(|e| Error::Client(e.to_string()))
    }

    /// The client for `repo`: the shared one, or one presenting its client certificate
    /// (built once per certificate).
    fn client_for(&self, repo: &RepoSpec) -> Result<reqwest::Client> {
        let Some(t) = &repo.tls else {
            return Ok(self.client.clone());
        };
        if let Some(c) = self.tls_clients.lock().expect("lock").get(&t.key) {
            return Ok(c.clone());
        }
        let client = Self::build_client(&self.options, Some(t))?;
        let mut map = self.tls_clients.lock().expect("lock");
        // Certificates of Secrets changed since are dropped with their clients.
        if map.len() > 64 {
            map.clear();
        }
        map.insert(t.key.clone(), client.clone());
        Ok(client)
    }

    /// The archive path for a digest.
    /// Fetch every repository through the site's mirrors: a repository's URL (HTTP index and
    /// archives, `oci://` registry) is rewritten by the longest matching prefix before it is
    /// fetched; its credentials go to the mirror.
    pub fn with_mirrors(self, mirrors: strata_core::mirrors::Mirrors) -> Self {
        self.set_mirrors(mirrors);
        self
    }

    /// Replace the site's mirrors (`--mirrors-configmap` changed): later pulls go through
    /// the new ones, and what the old ones rewrote is forgotten.
    pub fn set_mirrors(&self, mirrors: strata_core::mirrors::Mirrors) {
        *self.mirrors.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(mirrors);
        self.rewritten.lock().expect("lock").clear();
    }

    fn mirrors(&self) -> Arc<strata_core::mirrors::Mirrors> {
        self.mirrors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The repositories the mirrors rewrote so far: (declared URL, mirror URL).
    pub fn rewritten(&self) -> Vec<(String, String)> {
        let map = self.rewritten.lock().expect("lock");
        map.iter().map(|(a, b)| (a.clone(), b.clone())).collect()
    }

    /// Every chart pulled so far, by (declared repository URL, name, version): the charts of
    /// the revisions loaded, their dependencies from repositories included.
    pub fn pulled(&self) -> Vec<(String, PulledChart)> {
        let map = self.pulled.lock().expect("lock");
        map.iter()
            .map(|((url, _, _), c)| (url.clone(), c.clone()))
            .collect()
    }

    /// `url` through the mirrors (recorded when rewritten).
    fn mirror_url(&self, url: &str) -> String {
        match self.mirrors().rewrite(url) {
            Some(to) => {
                self.rewritten
                    .lock()
                    .expect("lock")
                    .insert(url.to_string(), to.clone());
                to
            }
            None => url.to_string(),
        }
    }

    pub fn archive_path(&self, digest: &str) -> PathBuf {
        self.cache.join("sha256").join(format!("{digest}.tgz"))
    }

    fn register_auth(&self, repo: &RepoSpec) {
        if let Some(a) = &repo.auth {
            self.redactor.add(a.password.clone());
        }
    }

    /// GET with retries: transient failures (no answer, 5xx but 501) are tried again after
    /// [`RETRY_DELAYS`]; anything else fails at once.
    async fn get(
        &self,
        repo: &RepoSpec,
        url: &str,
        etag: Option<&str>,
        limit: usize,
    ) -> Result<(u16, Option<String>, Vec<u8>)> {
        self.get_accept(repo, url, etag, limit, None).await
    }

    /// [`Self::get`] with an `Accept` header.
    async fn get_accept(
        &self,
        repo: &RepoSpec,
        url: &str,
        etag: Option<&str>,
        limit: usize,
        accept: Option<&str>,
    ) -> Result<(u16, Option<String>, Vec<u8>)> {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match self.get_once(repo, url, etag, limit, accept).await {
                Err(e) if e.is_transient() => match delays.next() {
                    Some(d) => {
                        tracing::debug!(url = %self.redactor.redact(url), error = %e, "retrying");
                        tokio::time::sleep(*d).await;
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }

    async fn get_once(
        &self,
        repo: &RepoSpec,
        url: &str,
        etag: Option<&str>,
        limit: usize,
        accept: Option<&str>,
    ) -> Result<(u16, Option<String>, Vec<u8>)> {
        let http_err = |status: Option<u16>, message: String| Error::Http {
            repository: repo.name.clone(),
            url: self.redactor.redact(url),
            status,
            message: self.redactor.redact(&message),
        };
        // Credentials go to the repository's own origin only (for a registry: its host).
        let ours = if repo.kind().ok() == Some(RepoKind::Oci) {
            host_of(&repo.url).eq_ignore_ascii_case(host_of(url))
        } else {
            same_origin(&repo.url, url)
        };
        let mut bearer: Option<String> = None;
        let client = self.client_for(repo)?;
        let mut resp = loop {
            let mut req = client.get(url);
            if let Some(token) = &bearer {
                req = req.bearer_auth(token);
            } else if let Some(a) = &repo.auth
                && ours
            {
                req = req.basic_auth(&a.username, Some(&a.password));
            }
            if let Some(e) = etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, e);
            }
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            let resp = self.send(repo, url, req).await?;
            // A registry that wants a token says where to get one: once per request.
            if resp.status().as_u16() == 401
                && bearer.is_none()
                && ours
                && let Some(challenge) = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::source::oci::parse_bearer_challenge)
            {
                bearer = Some(self.registry_token(repo, &challenge).await?);
                continue;
            }
            break resp;
        };
        let status = resp.status().as_u16();
        let new_etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status == 304 {
            return Ok((304, new_etag, Vec::new()));
        }
        if !resp.status().is_success() {
            let hint = match status {
                401 | 403 => "; check the repository credentials",
                404 => "; check the repository URL and chart name",
                _ => "",
            };
            return Err(http_err(Some(status), format!("HTTP {status}{hint}")));
        }
        if let Some(len) = resp.content_length()
            && len > limit as u64
        {
            return Err(Error::TooLarge {
                what: self.redactor.redact(url),
                limit: limit as u64,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| http_err(Some(status), error_chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(Error::TooLarge {
                    what: self.redactor.redact(url),
                    limit: limit as u64,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, new_etag, body))
    }

    /// Sends a request; a failure to get any answer is an [`Error::Http`] without a status
    /// (or [`Error::Tls`] for an untrusted certificate).
    async fn send(
        &self,
        repo: &RepoSpec,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        req.send().await.map_err(|e| {
            let message = self.redactor.redact(&error_chain(&e));
            let lower = message.to_ascii_lowercase();
            // TLS alerts of a server that wants a client certificate (rustls names them
            // CertificateRequired, BadCertificate, UnknownCA, ...).
            let alert = lower.contains("received fatal alert");
            if alert && (lower.contains("certificaterequired") || lower.contains("handshakefailure") && repo.tls.is_none()) {
                Error::ClientCertificate {
                    repository: repo.name.clone(),
                    url: self.redactor.redact(url),
                    what: "requires a client certificate (mutual TLS)",
                    message,
                    hint: "give the repository certSecretRef: a kubernetes.io/tls Secret with keys tls.crt and tls.key",
                }
            } else if alert
                && repo.tls.is_some()
                && ["badcertificate", "unknownca", "certificateexpired", "certificaterevoked", "certificateunknown", "accessdenied", "unsupportedcertificate"]
                    .iter()
                    .any(|a| lower.contains(a))
            {
                Error::ClientCertificate {
                    repository: repo.name.clone(),
                    url: self.redactor.redact(url),
                    what: "refused the client certificate",
                    message,
                    hint: "check that the certificate of certSecretRef is valid and signed by a CA the server trusts",
                }
            } else if lower.contains("certificate") {
                Error::Tls {
                    repository: repo.name.clone(),
                    url: self.redactor.redact(url),
                    message,
                }
            } else {
                Error::Http {
                    repository: repo.name.clone(),
                    url: self.redactor.redact(url),
                    status: None,
                    message,
                }
            }
        })
    }

    /// A registry's answer strata cannot use (a problem of the revision, not an outage).
    fn registry_error(&self, repo: &RepoSpec, message: String) -> Error {
        Error::Registry {
            repository: repo.name.clone(),
            url: self.redactor.redact(&repo.url),
            message,
        }
    }

    /// A bearer token from a registry's token service, asked with the repository's
    /// credentials when it has some; cached per realm, service and scope.
    async fn registry_token(
        &self,
        repo: &RepoSpec,
        challenge: &crate::source::oci::BearerChallenge,
    ) -> Result<String> {
        let key = format!(
            "{} {} {}",
            challenge.realm,
            challenge.service.as_deref().unwrap_or(""),
            challenge.scope.as_deref().unwrap_or("")
        );
        if let Some(t) = self.tokens.lock().expect("lock").get(&key) {
            return Ok(t.clone());
        }
        let mut req = self.client_for(repo)?.get(&challenge.realm);
        let mut query = Vec::new();
        if let Some(s) = &challenge.service {
            query.push(("service", s.as_str()));
        }
        if let Some(s) = &challenge.scope {
            query.push(("scope", s.as_str()));
        }
        req = req.query(&query);
        if let Some(a) = &repo.auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        let resp = self.send(repo, &challenge.realm, req).await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        let registry_err = |message: String| self.registry_error(repo, message);
        if !(200..300).contains(&status) {
            return Err(match status {
                401 | 403 => registry_err(format!(
                    "the registry's token service {} refused the credentials (HTTP {status}); check the repository's Secret",
                    self.redactor.redact(&challenge.realm)
                )),
                s if s >= 500 => Error::Http {
                    repository: repo.name.clone(),
                    url: self.redactor.redact(&challenge.realm),
                    status: Some(s),
                    message: format!("HTTP {s}"),
                },
                s => registry_err(format!(
                    "the registry's token service {} answered HTTP {s}",
                    self.redactor.redact(&challenge.realm)
                )),
            });
        }
        let token = crate::source::oci::token_from_response(&body).ok_or_else(|| {
            registry_err("the registry's token service answered without a token".into())
        })?;
        // A token is a credential: never in logs, status or errors.
        self.redactor.add(token.clone());
        self.tokens.lock().expect("lock").insert(key, token.clone());
        Ok(token)
    }

    /// Resolves `chart` at `constraint` in an OCI registry from its tags, reads the tag's
    /// manifest and pulls the chart layer it names (verified against its digest, cached).
    async fn pull_oci(
        &self,
        repo: &RepoSpec,
        chart: &str,
        constraint: &VersionConstraint,
    ) -> Result<PulledChart> {
        use crate::source::oci;
        self.register_auth(repo);
        let registry_err = |message: String| self.registry_error(repo, message);
        let registry = oci::Registry::parse(&repo.url, repo.plain_http)
            .ok_or_else(|| registry_err("not an oci://<host>[:port]/<path> URL".into()))?;
        let tags_url = registry.tags_url(chart);
        let (_, _, body) = self
            .get_accept(
                repo,
                &tags_url,
                None,
                oci::MAX_DOCUMENT,
                Some("application/json"),
            )
            .await?;
        let source = format!("{}/{}", repo.url.trim_end_matches('/'), chart);
        let index = oci::index_from_tags(&source, chart, &body).map_err(registry_err)?;
        let entry = strata_core::repoindex::resolve_version(&index, chart, Some(constraint))
            .map_err(|p| Error::Resolve {
                repository: repo.name.clone(),
                message: p.to_string(),
            })?;
        let manifest_url = registry.manifest_url(chart, &oci::version_to_tag(&entry.version));
        let (_, _, manifest) = self
            .get_accept(
                repo,
                &manifest_url,
                None,
                oci::MAX_DOCUMENT,
                Some(oci::MANIFEST_ACCEPT),
            )
            .await?;
        let digest = oci::chart_layer_digest(&manifest)
            .map_err(|m| registry_err(format!("chart {chart} {}: {m}", entry.version)))?;
        let blob_url = registry.blob_url(chart, &digest);
        self.pull_url(repo, chart, &entry.version, &blob_url, Some(&digest))
            .await
    }

    /// The repository's index.yaml, parsed, revalidated with `If-None-Match` when cached.
    pub async fn index(&self, repo: &RepoSpec) -> Result<Arc<strata_core::repoindex::RepoIndex>> {
        if repo.kind()? == RepoKind::Oci {
            return Err(Error::Registry {
                repository: repo.name.clone(),
                url: self.redactor.redact(&repo.url),
                message: "an OCI registry has no index.yaml; its charts are listed by tags".into(),
            });
        }
        self.register_auth(repo);
        let url = repo.index_url();
        let cached = self.indexes.lock().expect("lock").get(&url).cloned();
        let (status, etag, body) = self
            .get(
                repo,
                &url,
                cached.as_ref().and_then(|c| c.etag.as_deref()),
                MAX_INDEX,
            )
            .await?;
        if status == 304
            && let Some(c) = cached
        {
            return Ok(c.index);
        }
        let text = String::from_utf8(body).map_err(|_| Error::Index {
            repository: repo.name.clone(),
            url: url.clone(),
            problems: "not UTF-8 text".into(),
        })?;
        let index =
            Arc::new(
                strata_core::repoindex::parse(&url, &text).map_err(|p| Error::Index {
                    repository: repo.name.clone(),
                    url: url.clone(),
                    problems: p.to_string(),
                })?,
            );
        self.indexes.lock().expect("lock").insert(
            url,
            CachedIndex {
                etag,
                index: index.clone(),
            },
        );
        Ok(index)
    }

    /// Resolves `chart` at `constraint` in the repository, pulls it (once per digest) and reads
    /// its Chart.yaml.
    pub async fn pull(
        &self,
        repo: impl Into<RepoSpec>,
        chart: &str,
        constraint: &VersionConstraint,
    ) -> Result<PulledChart> {
        let mut repo = repo.into();
        let declared = repo.url.clone();
        repo.url = self.mirror_url(&repo.url);
        let pulled = self.pull_mirrored(&repo, chart, constraint).await?;
        self.pulled.lock().expect("lock").insert(
            (declared, pulled.name.clone(), pulled.version.clone()),
            pulled.clone(),
        );
        Ok(pulled)
    }

    /// [`Self::pull`] from `repo` (its URL already through the mirrors).
    async fn pull_mirrored(
        &self,
        repo: &RepoSpec,
        chart: &str,
        constraint: &VersionConstraint,
    ) -> Result<PulledChart> {
        if repo.kind()? == RepoKind::Oci {
            return self.pull_oci(repo, chart, constraint).await;
        }
        let index = self.index(repo).await?;
        let entry = strata_core::repoindex::resolve_version(&index, chart, Some(constraint))
            .map_err(|p| Error::Resolve {
                repository: repo.name.clone(),
                message: p.to_string(),
            })?;
        let Some(first) = entry.urls.first() else {
            return Err(Error::Resolve {
                repository: repo.name.clone(),
                message: format!("chart {chart} {} has no download URL", entry.version),
            });
        };
        // An index may name archives by absolute URL on the declared host.
        let url = strata_core::repoindex::resolve_url(&repo.url, first);
        let url = match self.mirrors().rewrite(&url) {
            Some(to) => to,
            None => url,
        };
        self.pull_url(
            repo,
            chart,
            &entry.version,
            &url,
            entry.digest.as_deref().filter(|d| !d.is_empty()),
        )
        .await
    }

    /// The Chart.yaml of the cached archive at `path` when it is there and its content has
    /// the digest `digest`; a cached archive that does not (a torn write, a bad disk) is
    /// removed with a warning, so that it is downloaded again.
    fn cached(&self, path: &Path, digest: &str) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?;
        if let Some((len, at, chart_yaml)) = self.verified.lock().expect("lock").get(path)
            && *len == meta.len()
            && *at == modified
        {
            return Some(chart_yaml.clone());
        }
        let checked = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let actual = format!("{:x}", sha2::Sha256::digest(&bytes));
                if actual == digest {
                    Ok(())
                } else {
                    Err(format!("its content has digest {actual}"))
                }
            })
            .and_then(|()| chart_yaml_from_tgz(path).map_err(|e| e.to_string()));
        match checked {
            Ok(chart_yaml) => {
                self.verified.lock().expect("lock").insert(
                    path.to_path_buf(),
                    (meta.len(), modified, chart_yaml.clone()),
                );
                Some(chart_yaml)
            }
            Err(why) => {
                tracing::warn!(
                    archive = %path.display(),
                    reason = %why,
                    "a cached chart archive is corrupt; removing it and downloading it again"
                );
                self.verified.lock().expect("lock").remove(path);
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Notes that the archive at `path` was just verified.
    fn remember(&self, path: &Path, chart_yaml: &str) {
        if let Ok(meta) = std::fs::metadata(path)
            && let Ok(modified) = meta.modified()
        {
            self.verified.lock().expect("lock").insert(
                path.to_path_buf(),
                (meta.len(), modified, chart_yaml.to_string()),
            );
        }
    }

    /// Downloads an archive (unless its digest is already cached), verifies it against
    /// `digest` (sha256 hex, optionally `sha256:`-prefixed) and reads its Chart.yaml.
    pub async fn pull_url(
        &self,
        repo: &RepoSpec,
        chart: &str,
        version: &str,
        url: &str,
        digest: Option<&str>,
    ) -> Result<PulledChart> {
        self.register_auth(repo);
        let expected = digest.map(|d| d.trim_start_matches("sha256:").to_ascii_lowercase());
        let _guard = self.downloads.lock().await;
        let known = expected
            .clone()
            .or_else(|| self.url_digests.lock().expect("lock").get(url).cloned());
        if let Some(d) = &known {
            let path = self.archive_path(d);
            if let Some(chart_yaml) = self.cached(&path, d) {
                return Ok(PulledChart {
                    name: chart.to_string(),
                    version: version.to_string(),
                    digest: d.clone(),
                    path,
                    chart_yaml,
                });
            }
        }
        let (_, _, body) = self.get(repo, url, None, MAX_ARCHIVE).await?;
        let actual = format!("{:x}", sha2::Sha256::digest(&body));
        if let Some(e) = &expected
            && *e != actual
        {
            return Err(Error::DigestMismatch {
                chart: chart.to_string(),
                version: version.to_string(),
                url: self.redactor.redact(url),
                expected: e.clone(),
                actual,
            });
        }
        let path = self.archive_path(&actual);
        let dir = path.parent().expect("has parent").to_path_buf();
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io { path: p, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Written under a temporary name in the same directory, checked, flushed to disk and
        // renamed: a partial download (a kill, a full disk) never becomes a cache entry.
        let mut tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .suffix(".tgz")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        std::io::Write::write_all(&mut tmp, &body).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        // Check the archive before it enters the cache.
        let chart_yaml = chart_yaml_from_tgz(tmp.path()).map_err(|e| match e {
            Error::Archive { message, .. } => Error::Archive {
                archive: PathBuf::from(self.redactor.redact(url)),
                message,
            },
            other => other,
        })?;
        tmp.persist(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e.error,
        })?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        self.remember(&path, &chart_yaml);
        if expected.is_none() {
            self.url_digests
                .lock()
                .expect("lock")
                .insert(url.to_string(), actual.clone());
        }
        tracing::info!(chart, version, digest = %actual, "chart pulled");
        Ok(PulledChart {
            name: chart.to_string(),
            version: version.to_string(),
            digest: actual,
            path,
            chart_yaml,
        })
    }
}

fn origin(url: &str) -> &str {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(url.len());
    &url[..end]
}

/// The `host[:port]` of a URL.
fn host_of(url: &str) -> &str {
    let o = origin(url);
    o.find("://").map_or(o, |i| &o[i + 3..])
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a).eq_ignore_ascii_case(origin(b))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads `<chart>/Chart.yaml` (the top-level chart's, not a subchart's) from a .tgz, with
/// bounds: paths with `..` or absolute paths and entries over [`MAX_ENTRY`] are rejected, and
/// so are symlink and hard-link entries whose target leaves the chart directory (the entry's
/// first path component): absolute, climbing out with `..`, or through other links (see
/// [`crate::source::tree`]). The whole archive is read, at most [`MAX_UNPACKED`] bytes.
pub fn chart_yaml_from_tgz(archive: &Path) -> Result<String> {
    let bad = |message: String| Error::Archive {
        archive: archive.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(|source| Error::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    // One byte more than the bound tells an archive that exceeds it.
    let gz = flate2::read::GzDecoder::new(file).take(MAX_UNPACKED + 1);
    let mut tar = tar::Archive::new(gz);
    let mut chart_yaml = None;
    // Every entry (and its implied parent directories), then the links to check.
    let mut nodes: HashMap<String, tree::Node> = HashMap::new();
    let mut links: Vec<(String, String, bool)> = Vec::new();
    {
        let entries = tar
            .entries()
            .map_err(|e| bad(format!("not a gzip tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| bad(format!("bad entry path: {e}")))?
                .into_owned();
            let parts: Vec<String> = path
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.is_absolute() || parts.iter().any(|p| p == "..") {
                return Err(bad(format!("entry {} escapes the chart", path.display())));
            }
            let name = parts.join("/");
            for i in 1..parts.len() {
                nodes.entry(parts[..i].join("/")).or_insert(tree::Node::Dir);
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("bad link target of {name}: {e}")))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                nodes.insert(
                    name.clone(),
                    if kind.is_symlink() {
                        tree::Node::Symlink(target.clone())
                    } else {
                        tree::Node::File
                    },
                );
                links.push((name, target, kind.is_hard_link()));
                continue;
            }
            nodes.insert(
                name.clone(),
                if kind.is_dir() {
                    tree::Node::Dir
                } else {
                    tree::Node::File
                },
            );
            if chart_yaml.is_none() && parts.len() == 2 && parts[1] == "Chart.yaml" {
                let size = entry.header().size().unwrap_or(u64::MAX);
                if size > MAX_ENTRY {
                    return Err(Error::TooLarge {
                        what: format!("{} in {}", path.display(), archive.display()),
                        limit: MAX_ENTRY,
                    });
                }
                let mut text = String::new();
                (&mut entry)
                    .take(MAX_ENTRY)
                    .read_to_string(&mut text)
                    .map_err(|e| bad(format!("Chart.yaml is not readable text: {e}")))?;
                chart_yaml = Some(text);
            }
        }
    }
    if tar.into_inner().limit() == 0 {
        return Err(Error::TooLarge {
            what: format!("the unpacked archive {}", archive.display()),
            limit: MAX_UNPACKED,
        });
    }
    for (name, target, hard) in links {
        let chart = name.split('/').next().unwrap_or_default().to_string();
        let bound = format!("the chart directory {chart}");
        let lookup = |p: &str| nodes.get(p).cloned().unwrap_or(tree::Node::Missing);
        let out = |e: &tree::LinkError| {
            matches!(
                e.fault,
                tree::LinkFault::Absolute | tree::LinkFault::OutOfBounds
            )
        };
        let fault = if hard {
            // A hard link names another entry by its path from the archive's root.
            if target.starts_with('/') || !target_in(&target, &chart) {
                Some(format!(
                    "out-of-bounds hard link: entry {name} links to {target}, which is outside {bound}"
                ))
            } else {
                match tree::resolve(&target, &chart, lookup) {
                    Err(e) if out(&e) => Some(format!(
                        "out-of-bounds hard link: entry {name} links to {target}, which is outside {bound}: {}",
                        e.describe(&bound)
                    )),
                    _ => None,
                }
            }
        } else {
            match tree::resolve(&name, &chart, lookup) {
                Err(e) if out(&e) => Some(e.describe(&bound)),
                // helm reads an archive's links as nothing: a dangling link or a loop leaks
                // nothing.
                _ => None,
            }
        };
        if let Some(message) = fault {
            return Err(bad(message));
        }
    }
    chart_yaml.ok_or_else(|| {
        bad(format!(
            "no <chart>/Chart.yaml in the archive (within its first {MAX_UNPACKED} bytes)"
        ))
    })
}

/// Whether `path` (from the archive's root, no `..`) is inside the directory `chart`.
fn target_in(path: &str, chart: &str) -> bool {
    let path = path.trim_start_matches("./");
    path.split('/').next() == Some(chart) && !path.split('/').any(|c| c == "..")
}

/// Reads `Chart.yaml` of a chart directory (e.g. in the Git checkout).
pub fn chart_yaml_from_dir(dir: &Path) -> Result<String> {
    let path = dir.join("Chart.yaml");
    let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    if meta.len() > MAX_ENTRY {
        return Err(Error::TooLarge {
            what: path.display().to_string(),
            limit: MAX_ENTRY,
        });
    }
    std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_is_checked_and_errors_name_the_secret_and_key_only() {
        let tls = testkit::tls::TestTls::generate_mtls().unwrap();
        let c = tls.client.unwrap();
        let src = "Secret strata-system/client";
        let ok = ClientTls::from_pem(src, c.cert_pem.as_bytes(), c.key_pem.as_bytes(), None);
        let ok = ok.unwrap();
        let shown = format!("{ok:?}");
        assert!(
            shown.contains(src) && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
        assert!(
            ClientTls::from_pem(
                src,
                c.cert_pem.as_bytes(),
                c.key_pem.as_bytes(),
                Some(tls.ca_pem.as_bytes())
            )
            .is_ok()
        );
        let err = |cert: &str, key: &str, ca: Option<&str>| {
            ClientTls::from_pem(src, cert.as_bytes(), key.as_bytes(), ca.map(str::as_bytes))
                .unwrap_err()
        };
        let e = err("sentinel-cert", &c.key_pem, None);
        assert!(
            e.contains("key `tls.crt` of Secret strata-system/client"),
            "{e}"
        );
        assert!(!e.contains("sentinel"), "{e}");
        let e = err(&c.cert_pem, "sentinel-key", None);
        assert!(
            e.contains("key `tls.key` of Secret strata-system/client"),
            "{e}"
        );
        assert!(!e.contains("sentinel"), "{e}");
        // PEM headers around something that is not a key.
        let e = err(
            &c.cert_pem,
            "-----BEGIN PRIVATE KEY-----\nc2VudGluZWw=\n-----END PRIVATE KEY-----\n",
            None,
        );
        assert!(e.contains("`tls.crt` and `tls.key`"), "{e}");
        assert!(!e.contains("c2VudGluZWw"), "{e}");
        let e = err(&c.cert_pem, &c.key_pem, Some("no pem"));
        assert!(e.contains("key `ca.crt`"), "{e}");
        // The same certificate is one client.
        let store = ChartStore::new(
            tempfile::tempdir().unwrap().path().join("c"),
            Redactor::default(),
        )
        .unwrap();
        let spec = RepoSpec::new("r", "https://r.example").with_client_tls(ok.clone());
        store.client_for(&spec).unwrap();
        store.client_for(&spec).unwrap();
        assert_eq!(store.tls_clients.lock().unwrap().len(), 1);
    }

    #[test]
    fn credentials_go_only_to_the_repository_origin() {
        assert!(same_origin("http://H:1/x", "http://h:1/y/z"));
        assert!(!same_origin("http://h:1/x", "http://h:2/x"));
    }

    #[test]
    fn repo_kinds() {
        assert_eq!(
            RepoSpec::new("a", "https://x").kind().unwrap(),
            RepoKind::Http
        );
        assert_eq!(
            RepoSpec::new("a", "oci://reg/charts").kind().unwrap(),
            RepoKind::Oci
        );
        assert!(matches!(
            RepoSpec::new("a", "ftp://x").kind(),
            Err(Error::UnsupportedScheme { .. })
        ));
        assert_eq!(
            RepoSpec::new("a", "http://x/r/").index_url(),
            "http://x/r/index.yaml"
        );
    }

    fn tgz(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Write the name bytes directly so tests can build hostile paths.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        file
    }

    #[test]
    fn chart_yaml_is_read_from_the_top_level_chart() {
        let f = tgz(&[
            ("demo/charts/sub/Chart.yaml", b"name: sub\n"),
            ("demo/values.yaml", b"a: 1\n"),
            (
                "demo/Chart.yaml",
                b"apiVersion: v2\nname: demo\nversion: 1.0.0\n",
            ),
        ]);
        let text = chart_yaml_from_tgz(f.path()).unwrap();
        assert!(text.contains("name: demo"));
    }

    #[test]
    fn hostile_or_broken_archives_are_rejected() {
        let f = tgz(&[("../evil/Chart.yaml", b"x")]);
        let e = chart_yaml_from_tgz(f.path()).unwrap_err();
        assert!(e.to_string().contains("escapes"), "{e}");
        let f = tgz(&[("demo/values.yaml", b"a: 1\n")]);
        assert!(
            chart_yaml_from_tgz(f.path())
                .unwrap_err()
                .to_string()
                .contains("no <chart>/Chart.yaml")
        );
        let big = vec![b'a'; (MAX_ENTRY + 1) as usize];
        let f = tgz(&[("demo/Chart.yaml", &big)]);
        assert!(matches!(
            chart_yaml_from_tgz(f.path()),
            Err(Error::TooLarge { .. })
        ));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"not gzip").unwrap();
        assert!(chart_yaml_from_tgz(f.path()).is_err());
    }

    /// A .tgz of `(path, kind, data or link target)`; kinds: 'f' file, 's' symlink, 'h' hard
    /// link. Names and targets are written as bytes so tests can build hostile ones.
    fn tgz_links(entries: &[(&str, char, &str)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            let old = h.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            let body: &[u8] = match kind {
                'f' => data.as_bytes(),
                _ => {
                    old.linkname[..data.len()].copy_from_slice(data.as_bytes());
                    b""
                }
            };
            h.set_entry_type(match kind {
                'f' => tar::EntryType::Regular,
                's' => tar::EntryType::Symlink,
                _ => tar::EntryType::Link,
            });
            h.set_size(body.len() as u64);
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        file
    }

    #[test]
    fn archive_links_must_stay_in_the_chart() {
        let chart = (
            "demo/Chart.yaml",
            'f',
            "apiVersion: v2\nname: demo\nversion: 1.0.0\n",
        );
        let ok = tgz_links(&[
            chart,
            ("demo/files/a.txt", 'f', "a"),
            ("demo/in.txt", 's', "files/a.txt"),
            ("demo/files/up.txt", 's', "../in.txt"),
            ("demo/dir", 's', "files"),
            ("demo/hard.txt", 'h', "demo/files/a.txt"),
            // Dangling, but inside: helm reads it as nothing.
            ("demo/dangling", 's', "nope"),
        ]);
        assert!(
            chart_yaml_from_tgz(ok.path())
                .unwrap()
                .contains("name: demo")
        );
        for (entry, kind, target, says) in [
            (
                "demo/leak.txt",
                's',
                "/etc/passwd",
                "demo/leak.txt is a symlink to /etc/passwd",
            ),
            (
                "demo/up.txt",
                's',
                "../../etc/passwd",
                "demo/up.txt is a symlink to ../../etc/passwd",
            ),
            (
                "demo/templates/x",
                's',
                "../../other/x",
                "demo/templates/x is a symlink to ../../other/x",
            ),
            (
                "demo/hard.txt",
                'h',
                "/etc/passwd",
                "entry demo/hard.txt links to /etc/passwd",
            ),
            (
                "demo/hard2.txt",
                'h',
                "other/file",
                "entry demo/hard2.txt links to other/file",
            ),
            (
                "demo/hard3.txt",
                'h',
                "demo/../../x",
                "entry demo/hard3.txt links to demo/../../x",
            ),
        ] {
            let f = tgz_links(&[chart, ("other/file", 'f', "x"), (entry, kind, target)]);
            let e = chart_yaml_from_tgz(f.path()).unwrap_err().to_string();
            assert!(e.contains(says), "{entry}: {e}");
            assert!(e.contains("out-of-bounds"), "{entry}: {e}");
            assert!(
                e.contains("outside the chart directory demo"),
                "{entry}: {e}"
            );
        }
        // Through a chain: `self` is the chart directory, `self/..` leaves it.
        let f = tgz_links(&[
            chart,
            ("demo/self", 's', "."),
            ("demo/trick", 's', "self/../../x"),
        ]);
        let e = chart_yaml_from_tgz(f.path()).unwrap_err().to_string();
        assert!(e.contains("demo/trick is a symlink to self/../../x"), "{e}");
        // A hard link through a symlink that leaves the chart.
        let f = tgz_links(&[
            chart,
            ("demo/out", 's', ".."),
            ("demo/h", 'h', "demo/out/other/file"),
        ]);
        assert!(chart_yaml_from_tgz(f.path()).is_err());
    }

    #[test]
    fn chart_yaml_from_a_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Chart.yaml"), "name: x\n").unwrap();
        assert_eq!(chart_yaml_from_dir(d.path()).unwrap(), "name: x\n");
        assert!(chart_yaml_from_dir(&d.path().join("missing")).is_err());
    }
}
