//! The HTTP status API (axum).
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the status web page ([`page`](crate::observe::page)): HTML rendered from the same status as `/status`, refreshing itself with JavaScript on |
//! | `GET /status` | the [`Status`](crate::observe::status::Status) as JSON |
//! | `GET /healthz` | 200 `ok` while the process serves requests |
//! | `GET /readyz` | 200 `ready` once the agent has processed its first revision (fetched and validated it: accepted and being applied, or rejected, or the fetch failed and the error is in `/status`), 503 before that and while draining after a shutdown signal |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /releases/{namespace}/{name}/retry` | clear a failed release's backoff or Stalled state and start a cycle now: `202`; `404` when the agent has no retry record of that release |
//!
//! Every `POST` needs `Authorization: Bearer <token>` with the token of `--admin-token-file`
//! (compared in constant time): a missing or wrong token gets `401` with `WWW-Authenticate:
//! Bearer`; an agent started without a token refuses every write with `403`. `GET` routes are open.
//!
//! `/`, `/status` and `/metrics` requests get a `http` tracing span; the health routes do not.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::Instrument;

use crate::observe::metrics::Metrics;
use crate::observe::page;
use crate::observe::status::{Status, StatusStore};

/// Readiness of the agent: starting -> ready -> draining.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }
    /// The first revision was processed. Ignored once draining.
    pub fn set_ready(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Shutdown began: never ready again.
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }
    fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting: the first revision has not been processed yet",
            READY => "ready",
            _ => "draining: shutting down",
        }
    }
}

/// Where the retry route sends an operator's request (the agent's retry accounting).
pub trait RetryRequests: Send + Sync {
    /// Clears backoff and Stalled of `namespace/release`; false when the agent does not know
    /// the release.
    fn request_retry(&self, namespace: &str, release: &str) -> bool;
}

/// What the retry route needs: the agent's retry accounting and its wake-up.
#[derive(Clone)]
pub struct RetryHandle {
    pub book: Arc<dyn RetryRequests>,
    pub wake: Arc<tokio::sync::Notify>,
}

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    pub status: StatusStore,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// `None`: the retry route answers 503 (no agent loop, e.g. in tests).
    pub retry: Option<RetryHandle>,
    /// The bearer token `POST` routes require; `None`: writes are disabled (403).
    pub admin_token: Option<AdminToken>,
}

/// The status API's write token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl AdminToken {
    /// A token from its text (surrounding whitespace trimmed); `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty()).then(|| Self(Arc::from(t.as_bytes())))
    }

    /// Whether `offered` equals the token, in time independent of where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let want = &self.0;
        let mut diff = u8::from(want.len() != offered.len());
        for (i, w) in want.iter().enumerate() {
            diff |= w ^ offered.get(i).copied().unwrap_or(!w);
        }
        diff == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The router, without a listener (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let traced = Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route(
            "/releases/{namespace}/{name}/retry",
            axum::routing::post(retry),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authorize_writes,
        ))
        .layer(middleware::from_fn(trace_request));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(traced)
        .with_state(state)
}

/// `POST` (any non-read method) needs the admin bearer token; reads pass.
async fn authorize_writes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method();
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let Some(token) = &state.admin_token else {
        return (
            StatusCode::FORBIDDEN,
            "writes to the status API are disabled: start strata with --admin-token-file \
             (or STRATA_ADMIN_TOKEN_FILE) naming a file that holds a bearer token\n",
        )
            .into_response();
    };
    let offered = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match offered {
        Some(offered) if token.matches(offered.trim_ascii()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"strata\"")],
            "this request needs the header Authorization: Bearer <token> with the token of \
             --admin-token-file\n",
        )
            .into_response(),
    }
}

async fn trace_request(req: Request, next: Next) -> Response {
    let span = tracing::debug_span!("http", method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, state.readiness.describe()).into_response()
    }
}

/// The status every read route shows (`/status` as JSON, `/` as HTML). Secrets never reach
/// it: messages are redacted where they are written into the store.
fn shown_status(state: &AppState) -> Status {
    state.status.snapshot()
}

async fn status(State(state): State<AppState>) -> Response {
    axum::Json(shown_status(&state)).into_response()
}

async fn page(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                page::content_security_policy(),
            ),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page::render(&shown_status(&state)),
    )
        .into_response()
}

async fn retry(
    State(state): State<AppState>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
) -> Response {
    let Some(handle) = &state.retry else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent loop is not running\n",
        )
            .into_response();
    };
    if handle.book.request_retry(&namespace, &name) {
        handle.wake.notify_one();
        (
            StatusCode::ACCEPTED,
            format!("retry of release {namespace}/{name} requested\n"),
        )
            .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("release {namespace}/{name} has not run in this agent; nothing to retry\n"),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serve `app` on `listener` until `shutdown` completes, then finish open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{LayerId, LayerPhase, LayerStatus, OverallPhase, ReleaseStatus};
    use crate::reconcile::retry::RetryBook;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state() -> AppState {
        state_with(Arc::new(RetryBook::default()))
    }

    fn state_with(book: Arc<RetryBook>) -> AppState {
        AppState {
            status: StatusStore::new(),
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(),
            retry: Some(RetryHandle {
                book,
                wake: Arc::new(tokio::sync::Notify::new()),
            }),
            admin_token: AdminToken::new(TOKEN),
        }
    }

    const TOKEN: &str = "s3cr3t-admin-token";

    fn post(path: &str, auth: Option<&str>) -> Request<Body> {
        let mut b = Request::post(path);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Body::empty()).unwrap()
    }

    async fn send(app: Router, req: Request<Body>) -> (StatusCode, Option<String>, String) {
        let res = app.oneshot(req).await.unwrap();
        let code = res.status();
        let www = res
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (code, www, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn status_returns_the_current_status_as_json() {
        let st = state();
        st.status.update(|s| {
            s.phase = OverallPhase::Progressing;
            s.layers.push(LayerStatus {
                layer: LayerId::Number(10),
                phase: LayerPhase::Pending,
                ready_at: None,
                releases: vec![ReleaseStatus::pending(
                    "cert-manager",
                    "cert-manager",
                    "cm",
                    "cert-manager",
                    "1.2.3",
                )],
            });
        });
        let (code, body) = get(app(st), "/status").await;
        assert_eq!(code, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["phase"], "Progressing");
        assert_eq!(v["layers"][0]["layer"], 10);
        assert_eq!(v["layers"][0]["releases"][0]["name"], "cert-manager");
        assert_eq!(v["layers"][0]["releases"][0]["phase"], "Pending");
    }

    #[tokio::test]
    async fn the_page_is_html_from_the_same_status_with_a_strict_policy() {
        let st = state();
        st.status.update(|s| {
            s.phase = OverallPhase::Progressing;
            s.layers.push(LayerStatus {
                layer: LayerId::Number(10),
                phase: LayerPhase::Pending,
                ready_at: None,
                releases: vec![ReleaseStatus::pending(
                    "cert-manager",
                    "cert-manager",
                    "cm",
                    "cert-manager",
                    "1.2.3",
                )],
            });
        });
        let res = app(st)
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            page::content_security_policy()
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert!(body.contains("id=\"layer-10\""), "{body}");
        assert!(body.contains("data-release=\"cm/cert-manager\""), "{body}");
        assert_eq!(
            get(app(state()), "/").await.0,
            StatusCode::OK,
            "an empty status renders too"
        );
    }

    #[tokio::test]
    async fn readyz_follows_starting_ready_draining() {
        let st = state();
        let (code, body) = get(app(st.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("starting"));
        st.readiness.set_ready();
        assert_eq!(get(app(st.clone()), "/readyz").await.0, StatusCode::OK);
        st.readiness.set_draining();
        let (code, body) = get(app(st.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("draining"));
        st.readiness.set_ready();
        assert_eq!(
            get(app(st.clone()), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining is final"
        );
        assert_eq!(
            get(app(st), "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
    }

    #[tokio::test]
    async fn metrics_are_served_in_text_format() {
        let st = state();
        st.metrics.set_revision("abc123");
        let (code, body) = get(app(st), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("strata_revision_info{commit=\"abc123\"} 1"),
            "{body}"
        );
        assert!(body.contains("# TYPE strata_releases gauge"), "{body}");
        assert!(body.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn retry_of_an_unknown_release_is_404_and_needs_post() {
        let bearer = format!("Bearer {TOKEN}");
        let (code, _, _) = send(app(state()), post("/releases/ns/web/retry", Some(&bearer))).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            get(app(state()), "/releases/ns/web/retry").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn retry_needs_the_bearer_token_and_is_refused_without_it() {
        let book = Arc::new(RetryBook::default());
        let st = state_with(book.clone());
        book.insert(
            "ns",
            "web",
            crate::reconcile::retry::RetryState {
                attempts: 3,
                stalled: true,
                ..Default::default()
            },
        );
        let stalled = || book.state_of("ns", "web").unwrap().stalled;
        assert!(stalled());
        let bad = format!("Bearer {TOKEN}x");
        let short = format!("Bearer {}", &TOKEN[..4]);
        for auth in [
            None,
            Some("Bearer"),
            Some("Bearer "),
            Some(bad.as_str()),
            Some(short.as_str()),
            Some("Basic czNjcjN0LWFkbWluLXRva2Vu"),
        ] {
            let (code, www, body) =
                send(app(st.clone()), post("/releases/ns/web/retry", auth)).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
            assert!(www.is_some_and(|w| w.starts_with("Bearer")), "{auth:?}");
            assert!(!body.contains(TOKEN), "the token never appears: {body}");
            assert!(stalled(), "{auth:?}: nothing is retried");
        }
        let bearer = format!("Bearer {TOKEN}");
        let (code, _, body) = send(
            app(st.clone()),
            post("/releases/ns/web/retry", Some(&bearer)),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let after = book.state_of("ns", "web").unwrap();
        assert!(!after.stalled && after.attempts == 0, "{after:?}");
        assert_eq!(
            after.last_reset,
            Some(crate::reconcile::retry::ResetReason::Operator)
        );
        // Reads stay open without a token.
        assert_eq!(get(app(st), "/status").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn writes_are_forbidden_without_a_configured_token() {
        let mut st = state();
        st.admin_token = None;
        let bearer = format!("Bearer {TOKEN}");
        let (code, www, body) = send(
            app(st.clone()),
            post("/releases/ns/web/retry", Some(&bearer)),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(www.is_none());
        assert!(body.contains("--admin-token-file"), "{body}");
        assert_eq!(get(app(st), "/metrics").await.0, StatusCode::OK);
    }

    #[test]
    fn admin_token_compares_whole_values_and_hides_itself() {
        let t = AdminToken::new("  abc\n").unwrap();
        assert!(t.matches(b"abc"));
        assert!(!t.matches(b"ab"));
        assert!(!t.matches(b"abcd"));
        assert!(!t.matches(b"abd"));
        assert!(!t.matches(b""));
        assert!(AdminToken::new(" \n").is_none());
        assert!(!format!("{t:?}").contains("abc"));
    }

    #[tokio::test]
    async fn unknown_route_is_404() {
        assert_eq!(get(app(state()), "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
