//! The Kubernetes client every part of the agent uses, a short text for its errors, and
//! in-place retries of one transient API call ([`retry_kube`]).
//!
//! [`retry_transient`] is built on `backon`'s exponential backoff with jitter: an API call that
//! hits a 429, a 5xx or a dropped connection is repeated a few times within the same attempt,
//! honouring a `Retry-After` the server sends.
//!
//! Note: a kube-rs 5 `Client` built from a `kube::Config` with `default_retry = true` (the
//! default) already repeats 429, 503 and 504 answers itself, up to 15 times with exponential
//! backoff from 5 ms honouring `Retry-After`. [`retry_kube`] adds bounded retries for what
//! that layer leaves out (500, dropped connections, read errors); put a time limit around
//! calls that must not hang (the leader elector does).

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_core::retry::{ErrorClass, classify_http_status};

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
    client_in_context(kubeconfig, None).await
}

/// [`client`] with the kubeconfig's `context` (default: its current context).
pub async fn client_in_context(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..kube::config::KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    Ok(kube::Client::try_from(with_user_agent(config))?)
}

/// The User-Agent strata's requests carry, so API server audit logs and rate limits can tell
/// the agent apart: `strata/<version>`.
pub const USER_AGENT: &str = concat!("strata/", env!("CARGO_PKG_VERSION"));

/// `config` sending [`USER_AGENT`].
pub fn with_user_agent(mut config: kube::Config) -> kube::Config {
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    config
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

/// Class of a kube-rs error: API answers by [`classify_http_status`]; transport, TLS and
/// decoding problems are transient (the API server restarting looks like this).
pub fn classify_kube(err: &kube::Error) -> ErrorClass {
    match err {
        kube::Error::Api(status) => classify_http_status(status.code),
        kube::Error::BuildRequest(_) | kube::Error::InferConfig(_) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// Whether the API server could not answer: a 429, a 5xx, or no answer at all (a refused,
/// reset or cut connection, a timeout), as opposed to an answer refusing the request.
pub fn api_unavailable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::HttpError(_) => true,
        _ => false,
    }
}

/// [`retry_transient`] for kube-rs calls that repeats only what [`api_unavailable`] says (a
/// refusal, a conflict or an unknown kind is returned at once), honouring
/// [`kube_retry_after`]; what remains is classified the same way.
pub async fn retry_unavailable<T, F, Fut>(policy: &InPlaceRetry, op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let classify = |e: &kube::Error| {
        if api_unavailable(e) {
            ErrorClass::Unavailable
        } else {
            ErrorClass::Permanent
        }
    };
    retry_transient(policy, op, classify, kube_retry_after).await
}

/// The `Retry-After` a Kubernetes API error carried (429, 503), if any.
pub fn kube_retry_after(err: &kube::Error) -> Option<Duration> {
    match err {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s))),
        _ => None,
    }
}

/// Bounds for repeating one transient operation in place (an API request, a fetch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InPlaceRetry {
    /// First delay (backon adds a random part up to the same amount again).
    pub min_delay: Duration,
    /// Longest delay before jitter.
    pub max_delay: Duration,
    /// Retries after the first try.
    pub max_retries: usize,
    /// Jitter seed (None: random).
    pub seed: Option<u64>,
}

impl Default for InPlaceRetry {
    /// 200 ms doubling up to 5 s, 4 retries.
    fn default() -> Self {
        InPlaceRetry {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retries: 4,
            seed: None,
        }
    }
}

impl InPlaceRetry {
    /// The backon builder: exponential, factor 2, with jitter.
    pub fn builder(&self) -> backon::ExponentialBuilder {
        let b = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_max_times(self.max_retries)
            .with_jitter();
        match self.seed {
            Some(seed) => b.with_jitter_seed(seed),
            None => b,
        }
    }
}

/// Runs `op` and repeats it while it fails with an error `classify` calls transient, within
/// `policy`; waits at least the `retry_after` of an error. A permanent error, or the last
/// transient one once the retries are used up, is returned as is. Each retry is logged at
/// debug level with the error's display text (it must not contain secrets).
pub async fn retry_transient<T, E, F, Fut>(
    policy: &InPlaceRetry,
    op: F,
    classify: impl Fn(&E) -> ErrorClass,
    retry_after: impl Fn(&E) -> Option<Duration>,
) -> std::result::Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: std::fmt::Display,
{
    use backon::Retryable;
    op.retry(policy.builder())
        .when(|e: &E| classify(e).is_retryable())
        .adjust(|e: &E, delay: Option<Duration>| {
            // None means the retries are used up: keep it so.
            delay.map(|d| retry_after(e).map_or(d, |min| d.max(min)))
        })
        .notify(|e: &E, delay: Duration| {
            tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "transient error, retrying");
        })
        .await
}

/// [`retry_transient`] for kube-rs calls: classified by [`classify_kube`], honouring
/// [`kube_retry_after`].
pub async fn retry_kube<T, F, Fut>(policy: &InPlaceRetry, op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry_transient(policy, op, classify_kube, kube_retry_after).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn classifies_kube_errors_and_reads_retry_after() {
        let status = |code: u16, retry: u32| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                details: Some(kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: vec![],
                    retry_after_seconds: retry,
                }),
                ..Default::default()
            }))
        };
        assert_eq!(classify_kube(&status(429, 3)), ErrorClass::Transient);
        assert_eq!(kube_retry_after(&status(429, 3)), Some(secs(3.0)));
        assert_eq!(kube_retry_after(&status(500, 0)), None);
        assert_eq!(classify_kube(&status(422, 0)), ErrorClass::Permanent);
        let io = kube::Error::ReadEvents(std::io::Error::other("cut"));
        assert_eq!(classify_kube(&io), ErrorClass::Transient);
        assert_eq!(kube_retry_after(&io), None);
        // Unavailable: no answer, 429 or 5xx; an answer refusing the request is not, nor a
        // kind discovery does not find.
        assert!(api_unavailable(&io));
        let unknown = kube::Error::Discovery(kube::error::DiscoveryError::MissingResource(
            "Widget".into(),
        ));
        assert!(!api_unavailable(&unknown));
        for code in [429, 500, 503, 504] {
            assert!(api_unavailable(&status(code, 0)), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!api_unavailable(&status(code, 0)), "{code}");
        }
    }

    #[derive(Debug)]
    struct E(ErrorClass, Option<Duration>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    fn fast() -> InPlaceRetry {
        InPlaceRetry {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_retries: 3,
            seed: Some(9),
        }
    }

    async fn run(errors: Vec<E>) -> (std::result::Result<&'static str, E>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(errors.into_iter()));
        let c = calls.clone();
        let res = retry_transient(
            &fast(),
            || {
                c.fetch_add(1, Ordering::SeqCst);
                let next = errors.lock().unwrap().next();
                async move {
                    match next {
                        Some(e) => Err(e),
                        None => Ok("done"),
                    }
                }
            },
            |e: &E| e.0,
            |e: &E| e.1,
        )
        .await;
        (res, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn in_place_retry_repeats_transient_errors_only() {
        let t = || E(ErrorClass::Transient, None);
        let (res, calls) = run(vec![t(), t()]).await;
        assert_eq!(res.unwrap(), "done");
        assert_eq!(calls, 3);

        let (res, calls) = run(vec![t(), E(ErrorClass::Permanent, None)]).await;
        assert_eq!(res.unwrap_err().0, ErrorClass::Permanent);
        assert_eq!(calls, 2, "a permanent error is not retried");

        let (res, calls) = run(vec![t(), t(), t(), t(), t()]).await;
        assert_eq!(res.unwrap_err().0, ErrorClass::Transient);
        assert_eq!(calls, 4, "first try + 3 retries");
    }

    #[tokio::test]
    async fn in_place_retry_waits_for_retry_after() {
        let started = std::time::Instant::now();
        let (res, calls) = run(vec![E(ErrorClass::Transient, Some(secs(0.3)))]).await;
        assert_eq!(res.unwrap(), "done");
        assert_eq!(calls, 2);
        assert!(started.elapsed() >= secs(0.3), "{:?}", started.elapsed());
    }
}
