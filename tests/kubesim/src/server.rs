//! The HTTPS API server: connection handling (TLS, HTTP/1.1 and HTTP/2, TCP_NODELAY, one task
//! per connection), authentication, fault injection, the request log, routing and the verbs.

use crate::controls::{Controls, RequestRecord, UnavailableMode, Verdict};
use crate::discovery;
use crate::error::ApiError;
use crate::patch;
use crate::registry::{ResourceInfo, ResourceKey};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{
    DeleteOptions, Deleted, EventKind, Propagation, Store, WatchEvent, WriteOptions,
};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Response body type.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long a watch may wait for room in a full send buffer before it is closed.
const WATCH_SEND_BUDGET: Duration = Duration::from_secs(2);

/// Largest request body accepted (the real server's limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) controls: Controls,
    pub(crate) tokens: Mutex<HashSet<String>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) bookmark_interval: Duration,
    pub(crate) address: String,
    /// Paginated list snapshots by id (see `remember_snapshot`).
    pub(crate) snapshots: Mutex<HashMap<u64, (Instant, Vec<Value>)>>,
    /// The OpenAPI documents of the current registry, built again after it changed.
    pub(crate) openapi: Mutex<Option<Arc<discovery::OpenApiDocs>>>,
}

impl Shared {
    /// The OpenAPI documents of `reg` (cached while the registry stays the same).
    fn openapi_docs(&self, reg: &crate::registry::Registry) -> Arc<discovery::OpenApiDocs> {
        let mut cached = self.openapi.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some(d) if d.describes(reg) => d.clone(),
            _ => {
                let d = Arc::new(discovery::OpenApiDocs::build(reg));
                *cached = Some(d.clone());
                d
            }
        }
    }
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by kubesim fault injection")
    }
}

impl std::error::Error for DropConnection {}

/// Streams chunks from a channel as a response body (watch streams).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Accepts connections until shutdown; one task per connection.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        if shared.controls.unavailable() == Some(UnavailableMode::Refuse) {
            drop(tcp);
            continue;
        }
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        // Held by the connection's task and by each request it serves (HTTP/2 serves a
        // request on a task of its own, which can outlive the connection).
        let open = Arc::new(shared.controls.connection_opened());
        tokio::spawn(async move {
            let shutdown = shared.shutdown.clone();
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            // Cancelled by a "drop connection" fault: the whole TCP connection goes away
            // (what clients see when a server or the network dies), not just one h2 stream.
            let kill = CancellationToken::new();
            let kill2 = kill.clone();
            let svc = hyper::service::service_fn(move |req| {
                let open = open.clone();
                let served = handle(shared.clone(), kill2.clone(), req);
                async move {
                    let response = served.await;
                    drop(open);
                    response
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Like kube-apiserver's --http2-max-streams-per-connection (1000): clients put
            // many watches on one connection.
            builder.http2().max_concurrent_streams(1000);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
                _ = kill.cancelled() => {}
            }
        });
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(kv), String::new()),
        })
        .collect()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    json_bytes_response(code, Bytes::from(v.to_string()))
}

/// A JSON body already serialized, with the headers of [`json_response`].
fn json_bytes_response(code: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("audit-id", HeaderValue::from_static("kubesim"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

fn text_response(code: StatusCode, s: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s.to_string())).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An API error as a `Status` response (with `Retry-After` when set).
pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(code, &e.to_status());
    if let Some(s) = e.retry_after_seconds
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// A parsed resource request.
#[derive(Debug, Clone)]
struct Target {
    info: ResourceInfo,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    legacy_watch: bool,
}

impl Target {
    fn key(&self) -> ResourceKey {
        self.info.key()
    }
    fn api_version(&self) -> String {
        self.info.api_version(&self.version)
    }
}

enum Route {
    Resource(Box<Target>),
    NonResource(&'static str),
    Unknown,
}

fn classify(store: &Store, path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => return Route::NonResource("version"),
        [h, ..] if matches!(*h, "healthz" | "readyz" | "livez") => {
            return Route::NonResource("health");
        }
        ["api"] | ["apis"] | ["api", _] | ["apis", _] => return Route::NonResource("discovery"),
        ["apis", _, _] => return Route::NonResource("discovery"),
        ["openapi", ..] => return Route::NonResource("openapi"),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (ns, res, name, sub) = match rest {
        ["namespaces", n, s] if group.is_empty() && matches!(*s, "status" | "finalize") => {
            (None, "namespaces", Some(*n), Some(*s))
        }
        ["namespaces", ns, res, tail @ ..] => {
            (Some(*ns), *res, tail.first().copied(), tail.get(1).copied())
        }
        [res, tail @ ..] => (None, *res, tail.first().copied(), tail.get(1).copied()),
        [] => return Route::Unknown,
    };
    let Some(info) = store.lookup_resource(group, version, res) else {
        return Route::Unknown;
    };
    if ns.is_some() && !info.namespaced {
        return Route::Unknown;
    }
    if rest.len() > 5 {
        return Route::Unknown;
    }
    Route::Resource(Box::new(Target {
        info,
        version: version.to_string(),
        namespace: ns.map(String::from),
        name: name.map(String::from),
        sub: sub.map(String::from),
        legacy_watch,
    }))
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    let watch = t.legacy_watch || matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if t.name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

fn header_str(req: &Request<Incoming>, h: header::HeaderName) -> String {
    req.headers()
        .get(h)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn handle(
    shared: Arc<Shared>,
    kill: CancellationToken,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    if path == "/kubesim" || path.starts_with("/kubesim/") {
        return Ok(crate::admin::handle(&shared, req).await);
    }
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let q = parse_query(&query);
    let ua = header_str(&req, header::USER_AGENT);
    let ct = header_str(&req, header::CONTENT_TYPE);
    let route = classify(&shared.store, &path);
    let mut rec = RequestRecord {
        time: crate::util::now_rfc3339(),
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        verb: String::new(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        user_agent: ua.clone(),
        code: 0,
        content_type: ct.clone(),
        duration_ms: 0.0,
    };
    let public = match &route {
        Route::Resource(t) => {
            rec.verb = verb_of(&method, t, &q).to_string();
            rec.group = t.info.group.clone();
            rec.resource = t.info.plural.clone();
            rec.subresource = t.sub.clone().unwrap_or_default();
            rec.namespace = t.namespace.clone().unwrap_or_default();
            rec.name = t.name.clone().unwrap_or_default();
            false
        }
        Route::NonResource(kind) => {
            rec.verb = kind.to_string();
            matches!(*kind, "version" | "health")
        }
        Route::Unknown => {
            rec.verb = "unknown".into();
            false
        }
    };
    let controls = shared.controls.clone();
    let finish = |mut rec: RequestRecord, code: u16| {
        rec.code = code;
        rec.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        controls.record(rec);
    };
    match shared.controls.unavailable() {
        Some(UnavailableMode::Refuse) => {
            finish(rec, 0);
            // Close the TCP connection before hyper could answer or reset the h2 stream:
            // the connection task drops this future together with the connection.
            kill.cancel();
            std::future::pending::<()>().await;
            return Err(DropConnection);
        }
        Some(UnavailableMode::ServiceUnavailable) => {
            let mut e =
                ApiError::unavailable("the server is currently unable to handle the request");
            e.retry_after_seconds = Some(1);
            finish(rec, 503);
            return Ok(error_response(&e));
        }
        None => {}
    }
    // Authentication: a bearer token the server issued; anonymous only for public info.
    let auth = header_str(&req, header::AUTHORIZATION);
    let authorized = match auth.strip_prefix("Bearer ") {
        Some(tok) => {
            !shared.controls.tokens_rejected()
                && shared
                    .tokens
                    .lock()
                    .map(|t| t.contains(tok.trim()))
                    .unwrap_or(false)
        }
        None => auth.is_empty() && public,
    };
    if !authorized {
        finish(rec, 401);
        return Ok(error_response(&ApiError::unauthorized()));
    }
    let latency = shared.controls.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let delay = shared
        .controls
        .delay_for(&rec.verb, &rec.resource, &rec.namespace);
    if !delay.is_zero() {
        shared.controls.hold(delay).await;
    }
    match shared
        .controls
        .verdict(&rec.verb, &rec.resource, &rec.namespace)
    {
        Verdict::Drop => {
            finish(rec, 0);
            // Close the TCP connection before hyper could answer or reset the h2 stream:
            // the connection task drops this future together with the connection.
            kill.cancel();
            std::future::pending::<()>().await;
            return Err(DropConnection);
        }
        Verdict::Fail(e) => {
            finish(rec, e.code);
            return Ok(error_response(&e));
        }
        Verdict::Pass => {}
    }
    let accept = header_str(&req, header::ACCEPT);
    let resp = match route {
        Route::NonResource(_) => {
            let if_none_match = header_str(&req, header::IF_NONE_MATCH);
            non_resource(&shared, &path, &query, &accept, &if_none_match)
        }
        Route::Unknown => error_response(&not_found_path()),
        Route::Resource(t) => {
            let verb = rec.verb.clone();
            match resource(
                &shared,
                req,
                *t,
                &verb,
                &q,
                &ua,
                &ct,
                &accept,
                &mut rec.name,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
    };
    finish(rec, resp.status().as_u16());
    Ok(resp)
}

fn empty_response(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *r.status_mut() = code;
    r
}

/// A cached OpenAPI document as a real API server serves it: with its ETag (a matching
/// `If-None-Match` gets 304), `immutable` when asked for by its current hash.
fn openapi_response(
    body: &Bytes,
    etag: &str,
    immutable: bool,
    if_none_match: &str,
) -> Response<Body> {
    let quoted = format!("\"{etag}\"");
    let matches = if_none_match
        .split(',')
        .any(|t| t.trim() == quoted || t.trim() == "*");
    let mut r = if matches {
        empty_response(StatusCode::NOT_MODIFIED)
    } else {
        json_bytes_response(StatusCode::OK, body.clone())
    };
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, immutable"
        } else {
            "no-cache, private"
        }),
    );
    if immutable {
        // As kube-apiserver: a year from now.
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * 365))
            .unwrap_or(jiff::Timestamp::MAX)
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        if let Ok(v) = HeaderValue::from_str(&expires) {
            r.headers_mut().insert(header::EXPIRES, v);
        }
    }
    r
}

/// One group-version's OpenAPI v3 document: by its current `?hash=` (immutable), redirected
/// there from another hash (the document changed), or without a hash.
fn openapi_v3_doc(
    docs: &discovery::OpenApiDocs,
    key: &str,
    query: &str,
    if_none_match: &str,
) -> Response<Body> {
    let Some((body, h)) = docs.v3.get(key) else {
        return error_response(&not_found_path());
    };
    let asked = query.split('&').find_map(|kv| kv.strip_prefix("hash="));
    match asked {
        Some(a) if a == h => openapi_response(body, h, true, if_none_match),
        Some(_) => {
            let mut r = empty_response(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{key}?hash={h}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => openapi_response(body, h, false, if_none_match),
    }
}

fn non_resource(
    shared: &Shared,
    path: &str,
    query: &str,
    accept: &str,
    if_none_match: &str,
) -> Response<Body> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = shared.store.registry();
    let aggregated = |v: Value| {
        let mut r = json_response(StatusCode::OK, &v);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
        );
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        r
    };
    match segs.as_slice() {
        ["version"] => json_response(StatusCode::OK, &discovery::version()),
        [h, ..] if matches!(*h, "healthz" | "readyz" | "livez") => {
            text_response(StatusCode::OK, "ok")
        }
        ["api"] if discovery::wants_aggregated(accept) => {
            aggregated(discovery::aggregated(&reg, true))
        }
        ["apis"] if discovery::wants_aggregated(accept) => {
            aggregated(discovery::aggregated(&reg, false))
        }
        ["api"] => json_response(StatusCode::OK, &discovery::api_versions(&shared.address)),
        ["apis"] => json_response(StatusCode::OK, &discovery::api_group_list(&reg)),
        ["apis", g] => match discovery::group(&reg, g) {
            Some(v) => json_response(StatusCode::OK, &v),
            None => error_response(&not_found_path()),
        },
        ["api", v] | ["apis", _, v] => {
            let g = if segs[0] == "api" { "" } else { segs[1] };
            match discovery::resource_list(&reg, g, v) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => error_response(&not_found_path()),
            }
        }
        ["openapi", "v3"] => {
            let docs = shared.openapi_docs(&reg);
            openapi_response(&docs.index.0, &docs.index.1, false, if_none_match)
        }
        ["openapi", "v3", "api", v] => openapi_v3_doc(
            &shared.openapi_docs(&reg),
            &format!("api/{v}"),
            query,
            if_none_match,
        ),
        ["openapi", "v3", "apis", g, v] => openapi_v3_doc(
            &shared.openapi_docs(&reg),
            &format!("apis/{g}/{v}"),
            query,
            if_none_match,
        ),
        ["openapi", "v2"] if accept.contains("protobuf") => {
            // client-go's OpenAPISchema() only parses the gnostic protobuf form: answer with a
            // minimal Document (field 1 `swagger` = "2.0"); client-side validation then
            // leaves every kind to the server.
            let mut r = Response::new(Full::new(Bytes::from_static(b"\x0a\x032.0")).boxed_unsync());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            r
        }
        ["openapi", "v2"] => {
            let docs = shared.openapi_docs(&reg);
            openapi_response(&docs.v2.0, &docs.v2.1, false, if_none_match)
        }
        _ => error_response(&not_found_path()),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(ApiError::too_large(format!(
            "Request entity too large: limit is {MAX_BODY}"
        ))),
    }
}

fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Decodes a request body by content type (JSON, YAML, protobuf).
fn decode_body(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    let mt = media_type(ct);
    if mt == "application/vnd.kubernetes.protobuf" {
        return crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::Error::Unsupported(_) => {
                ApiError::unsupported_media_type(e.to_string())
            }
            other => ApiError::bad_request(other.to_string()),
        });
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    if mt.contains("yaml") {
        let s = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        return serde_saphyr::from_str::<Value>(s)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    let err = serde_json::from_slice::<Value>(body)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    Err(ApiError::bad_request(format!(
        "couldn't get version/kind; json parse error: {err}"
    )))
}

fn manager_name(q: &HashMap<String, String>, ua: &str) -> String {
    q.get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            let product = ua.split('/').next().unwrap_or("").trim();
            if product.is_empty() {
                "unknown".to_string()
            } else {
                product.to_string()
            }
        })
}

/// Records a manager's fields in `metadata.managedFields` (replacing its previous entry).
fn record_manager(
    obj: &mut Value,
    existing: Option<&Value>,
    manager: &str,
    operation: &str,
    api_version: &str,
    fields: Value,
    sub: Option<&str>,
) {
    let mut entries: Vec<Value> = match obj["metadata"].get("managedFields") {
        Some(Value::Array(a)) => a.clone(),
        _ => existing
            .and_then(|e| e["metadata"]["managedFields"].as_array().cloned())
            .unwrap_or_default(),
    };
    entries.retain(|e| {
        !(e["manager"] == manager
            && e["operation"] == operation
            && e["subresource"].as_str() == sub)
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": crate::util::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(s) = sub {
        entry["subresource"] = json!(s);
    }
    entries.push(entry);
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.insert("managedFields".into(), Value::Array(entries));
    }
}

fn prev_apply_set(live: &Value, manager: &str) -> Option<Value> {
    live["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| {
            e["manager"] == manager && e["operation"] == "Apply" && e.get("subresource").is_none()
        })
        .map(|e| e["fieldsV1"].clone())
}

fn dry_run(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dryRun value: {other}; supported values are All"
        ))),
    }
}

fn with_version(mut obj: Value, t: &Target) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(t.api_version()));
        o.insert("kind".into(), json!(t.info.kind));
    }
    obj
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    t: Target,
    verb: &str,
    q: &HashMap<String, String>,
    ua: &str,
    ct: &str,
    accept: &str,
    logged_name: &mut String,
) -> Result<Response<Body>, ApiError> {
    let store = &shared.store;
    let key = t.key();
    if t.sub.as_deref() == Some("scale") && t.info.scale && !t.info.custom {
        return scale(store, req, &t, verb, q, ct).await;
    }
    if let Some(sub) = &t.sub {
        if sub != "status" && !(sub == "finalize" && t.info.plural == "namespaces") {
            return Err(not_found_path());
        }
        if !t.info.status && sub == "status" {
            return Err(not_found_path());
        }
    }
    match verb {
        "get" => {
            let name = t.name.as_deref().unwrap_or("");
            let obj = store
                .get(&key, t.namespace.as_deref(), name)
                .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.plural, name))?;
            if accept.contains("as=Table") && t.sub.is_none() {
                let include = q
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("Metadata");
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                let table = crate::table::render(
                    &key,
                    &t.info.printer_columns,
                    vec![with_version(obj, &t)],
                    meta,
                    include,
                );
                return Ok(json_response(StatusCode::OK, &table));
            }
            if wants_metadata(accept) && t.sub.is_none() {
                return Ok(json_response(
                    StatusCode::OK,
                    &partial_metadata(with_version(obj, &t)),
                ));
            }
            Ok(json_response(StatusCode::OK, &with_version(obj, &t)))
        }
        "list" => list(shared, &t, q, accept),
        "watch" => watch(shared, &t, q, accept),
        "create" => {
            if t.sub.is_some() || t.name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            if t.info.namespaced && t.namespace.is_none() {
                return Err(not_found_path());
            }
            let body = read_body(req).await?;
            let mut obj = decode_body(ct, &body)?;
            prepare_body(&mut obj, &t)?;
            // POST paths carry no name: log the one in the body (or the generateName prefix).
            *logged_name = obj["metadata"]["name"]
                .as_str()
                .or(obj["metadata"]["generateName"].as_str())
                .unwrap_or("")
                .to_string();
            let manager = manager_name(q, ua);
            let fields = patch::field_set(&obj, !t.info.custom);
            record_manager(
                &mut obj,
                None,
                &manager,
                "Update",
                &t.api_version(),
                fields,
                None,
            );
            let out = store.create_opts(
                &key,
                obj,
                WriteOptions {
                    dry_run: dry_run(q)?,
                },
            )?;
            Ok(json_response(StatusCode::CREATED, &with_version(out, &t)))
        }
        "update" => {
            let name = t.name.clone().unwrap_or_default();
            let body = read_body(req).await?;
            let mut obj = decode_body(ct, &body)?;
            prepare_body(&mut obj, &t)?;
            let body_name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if body_name.is_empty() {
                obj["metadata"]["name"] = json!(name);
            } else if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            let opts = WriteOptions {
                dry_run: dry_run(q)?,
            };
            let existing = store.get(&key, t.namespace.as_deref(), &name);
            let manager = manager_name(q, ua);
            let fields = patch::field_set(&obj, !t.info.custom);
            record_manager(
                &mut obj,
                existing.as_ref(),
                &manager,
                "Update",
                &t.api_version(),
                fields,
                t.sub.as_deref(),
            );
            let out = if t.sub.as_deref() == Some("status") {
                store.update_status_opts(&key, obj, opts)?
            } else {
                store.update_opts(&key, obj, opts)?
            };
            Ok(json_response(StatusCode::OK, &with_version(out, &t)))
        }
        "patch" => {
            let body = read_body(req).await?;
            patch_verb(store, &t, q, ua, ct, &body)
        }
        "delete" => {
            let body = read_body(req).await?;
            let opts = delete_options(q, ct, &body)?;
            let name = t.name.clone().unwrap_or_default();
            match store.delete_opts(&key, t.namespace.as_deref(), &name, opts)? {
                Deleted::Pending(obj) => Ok(json_response(StatusCode::OK, &with_version(obj, &t))),
                Deleted::Gone(obj) => {
                    if t.info.custom || t.info.plural == "namespaces" {
                        return Ok(json_response(StatusCode::OK, &with_version(obj, &t)));
                    }
                    let mut details =
                        json!({"name": name, "kind": t.info.plural, "uid": obj["metadata"]["uid"]});
                    if !t.info.group.is_empty() {
                        details["group"] = json!(t.info.group);
                    }
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                    ))
                }
            }
        }
        "deletecollection" => {
            let body = read_body(req).await?;
            let opts = delete_options(q, ct, &body)?;
            let (items, _) = store.list(&key, t.namespace.as_deref());
            let items = filter_items(items, &t, q)?;
            let mut deleted = Vec::new();
            for obj in items {
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                let ns = obj["metadata"]["namespace"].as_str().map(String::from);
                if let Ok(d) = store.delete_opts(&key, ns.as_deref(), &name, opts.clone()) {
                    deleted.push(with_version(d.object().clone(), &t));
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": t.info.list_kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// Checks and completes a request object: namespace from the path, kind/apiVersion.
fn prepare_body(obj: &mut Value, t: &Target) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != t.info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or kind {k} does not match {}",
            obj["apiVersion"].as_str().unwrap_or(""),
            t.api_version(),
            t.info.kind
        )));
    }
    obj["apiVersion"] = json!(t.api_version());
    obj["kind"] = json!(t.info.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if let Some(ns) = &t.namespace {
        match obj["metadata"]["namespace"].as_str() {
            Some(b) if !b.is_empty() && b != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
    }
    check_string_maps(obj, t)
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
        Value::String(_) => "string",
    }
}

/// Labels and annotations must be maps of strings; the real server fails to decode anything
/// else into ObjectMeta (400 BadRequest).
fn check_string_maps(obj: &Value, t: &Target) -> Result<(), ApiError> {
    let metas = [
        (&obj["metadata"], "metadata"),
        (
            &obj["spec"]["template"]["metadata"],
            "spec.template.metadata",
        ),
        (
            &obj["spec"]["jobTemplate"]["metadata"],
            "spec.jobTemplate.metadata",
        ),
        (
            &obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"],
            "spec.jobTemplate.spec.template.metadata",
        ),
    ];
    for (meta, path) in metas {
        for field in ["labels", "annotations"] {
            let v = &meta[field];
            let bad = match v {
                Value::Null => None,
                Value::Object(m) => m.values().find(|x| !x.is_string()).map(json_type_name),
                other => Some(json_type_name(other)),
            };
            if let Some(ty) = bad {
                let go_field = if path == "metadata" {
                    format!("ObjectMeta.metadata.{field}")
                } else {
                    format!("ObjectMeta.{path}.{field}")
                };
                let into = if v.is_object() {
                    "string"
                } else {
                    "map[string]string"
                };
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{v}\" cannot be handled as a {kind}: json: cannot unmarshal {ty} into Go struct field {go_field} of type {into}",
                    kind = t.info.kind,
                    v = t.version,
                )));
            }
        }
    }
    Ok(())
}

fn delete_options(
    q: &HashMap<String, String>,
    ct: &str,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        dry_run: dry_run(q)?,
        ..DeleteOptions::default()
    };
    let body_opts = if body.is_empty() {
        Value::Null
    } else {
        decode_body(ct, body)?
    };
    let policy = body_opts["propagationPolicy"]
        .as_str()
        .map(String::from)
        .or_else(|| q.get("propagationPolicy").cloned());
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        o.propagation = Propagation::parse(&p).ok_or_else(|| {
            ApiError::bad_request(format!("propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""))
        })?;
    } else if body_opts["orphanDependents"].as_bool() == Some(true)
        || q.get("orphanDependents").map(String::as_str) == Some("true")
    {
        o.propagation = Propagation::Orphan;
    }
    if body_opts["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d == "All"))
    {
        o.dry_run = true;
    }
    o.uid = body_opts["preconditions"]["uid"].as_str().map(String::from);
    o.resource_version = body_opts["preconditions"]["resourceVersion"]
        .as_str()
        .map(String::from);
    Ok(o)
}

fn filter_items(
    items: Vec<Value>,
    t: &Target,
    q: &HashMap<String, String>,
) -> Result<Vec<Value>, ApiError> {
    let ls = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fs = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        &t.key(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(items
        .into_iter()
        .filter(|o| ls.matches(o) && fs.matches(o))
        .collect())
}

fn item_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Keeps a paginated list's full result for its continue pages (bounded: 64 snapshots,
/// 10 minutes each).
fn remember_snapshot(shared: &Shared, items: Vec<Value>) -> u64 {
    let Ok(mut m) = shared.snapshots.lock() else {
        return 0;
    };
    let now = Instant::now();
    m.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(600));
    while m.len() >= 64 {
        let Some(oldest) = m.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k) else {
            break;
        };
        m.remove(&oldest);
    }
    let id = m.keys().max().map(|k| k + 1).unwrap_or(1);
    m.insert(id, (now, items));
    id
}

fn list(
    shared: &Shared,
    t: &Target,
    q: &HashMap<String, String>,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let store = &shared.store;
    let (items, rv) = store.list(&t.key(), t.namespace.as_deref());
    let mut items = filter_items(items, t, q)?;
    let mut list_rv = rv;
    let mut snap_id: Option<u64> = None;
    if let Some(c) = q.get("continue").filter(|c| !c.is_empty()) {
        let tok: Value = base64::engine::general_purpose::STANDARD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: illegal base64 data")
            })?;
        let after = tok["start"].as_str().unwrap_or("").to_string();
        list_rv = tok["rv"].as_u64().unwrap_or(rv);
        if list_rv < store.oldest_resource_version() {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        // Continue pages come from the first page's snapshot while it is kept (like the
        // real server reading etcd at the first page's revision); else from the current
        // state in the same stable order.
        if let Some(id) = tok["snap"].as_u64()
            && let Some(snap) = shared
                .snapshots
                .lock()
                .ok()
                .and_then(|m| m.get(&id).map(|(_, v)| v.clone()))
        {
            items = snap;
            snap_id = Some(id);
        }
        items.retain(|o| item_key(o) > after);
    }
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        let id = snap_id.unwrap_or_else(|| remember_snapshot(shared, items.clone()));
        items.truncate(limit);
        let last = items.last().map(item_key).unwrap_or_default();
        let tok = json!({"rv": list_rv, "start": last, "snap": id});
        meta["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(tok.to_string()));
        meta["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = items.into_iter().map(|o| with_version(o, t)).collect();
    if accept.contains("as=Table") {
        let include = q
            .get("includeObject")
            .map(String::as_str)
            .unwrap_or("Metadata");
        return Ok(json_response(
            StatusCode::OK,
            &crate::table::render(&t.key(), &t.info.printer_columns, items, meta, include),
        ));
    }
    if wants_metadata(accept) {
        let items: Vec<Value> = items.into_iter().map(partial_metadata).collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": t.info.list_kind, "apiVersion": t.api_version(), "metadata": meta, "items": items}),
    ))
}

/// The `autoscaling/v1 Scale` view of a Deployment, ReplicaSet or StatefulSet.
fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// GET / PUT / PATCH on the `scale` subresource.
async fn scale(
    store: &Store,
    req: Request<Incoming>,
    t: &Target,
    verb: &str,
    q: &HashMap<String, String>,
    ct: &str,
) -> Result<Response<Body>, ApiError> {
    let key = t.key();
    let name = t.name.clone().unwrap_or_default();
    let live = store
        .get(&key, t.namespace.as_deref(), &name)
        .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.plural, &name))?;
    let current = scale_of(&live);
    let wanted = match verb {
        "get" => return Ok(json_response(StatusCode::OK, &current)),
        "update" => decode_body(ct, &read_body(req).await?)?,
        "patch" => {
            let body = read_body(req).await?;
            let doc: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            match media_type(ct) {
                "application/json-patch+json" => patch::json_patch(&current, &doc)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                "application/merge-patch+json" => patch::merge_patch(&current, &doc),
                "application/strategic-merge-patch+json" => patch::strategic_merge(&current, &doc)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
                other => {
                    return Err(ApiError::unsupported_media_type(format!(
                        "the body of the request was in an unknown format: {other}"
                    )));
                }
            }
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let replicas = wanted["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::invalid(
            "autoscaling",
            "Scale",
            &name,
            vec![ApiError::cause(
                "FieldValueRequired",
                "spec.replicas",
                "Required value",
            )],
        )
    })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &name,
            vec![ApiError::cause(
                "FieldValueInvalid",
                "spec.replicas",
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let mut new = live.clone();
    new["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = wanted["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
    {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    let out = store.update_opts(
        &key,
        new,
        WriteOptions {
            dry_run: dry_run(q)?,
        },
    )?;
    Ok(json_response(StatusCode::OK, &scale_of(&out)))
}

fn patch_verb(
    store: &Store,
    t: &Target,
    q: &HashMap<String, String>,
    ua: &str,
    ct: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let key = t.key();
    let name = t.name.clone().unwrap_or_default();
    let mt = media_type(ct).to_string();
    let opts = WriteOptions {
        dry_run: dry_run(q)?,
    };
    let status_sub = t.sub.as_deref() == Some("status");
    let builtin = !t.info.custom;
    let patch_doc = match mt.as_str() {
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            decode_body("application/yaml", body)?
        }
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        _ => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                if builtin {
                    ", application/strategic-merge-patch+json"
                } else {
                    ""
                }
            )));
        }
    };
    if mt == "application/strategic-merge-patch+json" && !builtin {
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let is_apply = mt.starts_with("application/apply-patch");
    let manager = manager_name(q, ua);
    if is_apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions.meta.k8s.io",
            "",
            vec![ApiError::cause(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )],
        ));
    }
    let pins_rv = patch_doc["metadata"]["resourceVersion"].is_string();
    for _attempt in 0..8 {
        let live = store.get(&key, t.namespace.as_deref(), &name);
        let Some(live) = live else {
            if !is_apply || status_sub {
                return Err(ApiError::not_found(&t.info.group, &t.info.plural, &name));
            }
            // Server-side apply creates the object.
            let mut obj = patch_doc.clone();
            prepare_body(&mut obj, t)?;
            match obj["metadata"]["name"].as_str() {
                Some(n) if !n.is_empty() && n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                _ => obj["metadata"]["name"] = json!(name),
            }
            let fields = patch::field_set(&obj, builtin);
            record_manager(
                &mut obj,
                None,
                &manager,
                "Apply",
                &t.api_version(),
                fields,
                None,
            );
            match store.create_opts(&key, obj, opts) {
                Ok(out) => return Ok(json_response(StatusCode::CREATED, &with_version(out, t))),
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
            }
        };
        let mut new = match mt.as_str() {
            "application/json-patch+json" => {
                patch::json_patch(&live, &patch_doc).map_err(|e| match e {
                    patch::Error::TestFailed(m) => ApiError::new(422, "Invalid", m),
                    patch::Error::Invalid(m) => ApiError::new(422, "Invalid", m),
                })?
            }
            "application/merge-patch+json" => patch::merge_patch(&live, &patch_doc),
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge(&live, &patch_doc)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            _ => {
                let mut applied = patch_doc.clone();
                prepare_body(&mut applied, t)?;
                if let Some(m) = applied["metadata"].as_object_mut() {
                    m.remove("namespace");
                    m.remove("name");
                }
                let prev = prev_apply_set(&live, &manager);
                patch::apply_merge(&live, &applied, prev.as_ref(), builtin)
            }
        };
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the patch produced something that is not an object",
            ));
        }
        check_string_maps(&new, t)?;
        // Identity cannot be patched away.
        new["metadata"]["name"] = json!(name);
        if let Some(ns) = &t.namespace {
            new["metadata"]["namespace"] = json!(ns);
        }
        if !pins_rv {
            new["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        }
        let patched_managed =
            mt == "application/json-patch+json" && body_touches_managed_fields(&patch_doc);
        if !patched_managed {
            let fields = if is_apply {
                let mut a = patch_doc.clone();
                if let Some(m) = a["metadata"].as_object_mut() {
                    m.remove("name");
                    m.remove("namespace");
                }
                patch::field_set(&a, builtin)
            } else {
                patch::field_set(&patch_doc, builtin)
            };
            let op = if is_apply { "Apply" } else { "Update" };
            let sub = if status_sub { Some("status") } else { None };
            if !is_apply || !status_sub {
                record_manager(
                    &mut new,
                    Some(&live),
                    &manager,
                    op,
                    &t.api_version(),
                    fields,
                    sub,
                );
            }
        }
        let res = if status_sub {
            store.update_status_opts(&key, new, opts)
        } else {
            store.update_opts(&key, new, opts)
        };
        match res {
            Ok(out) => return Ok(json_response(StatusCode::OK, &with_version(out, t))),
            Err(e) if e.reason == "Conflict" && !pins_rv => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&t.info.group, &t.info.plural, &name))
}

fn body_touches_managed_fields(ops: &Value) -> bool {
    ops.as_array().is_some_and(|a| {
        a.iter().any(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/metadata/managedFields"))
        })
    })
}

/// Whether the client asked for metadata only (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
/// or `...as=PartialObjectMetadataList...`), as kube-rs' metadata watcher and `kubectl get
/// -o name` do.
fn wants_metadata(accept: &str) -> bool {
    accept.contains("as=PartialObjectMetadata")
}

/// An object as the real server returns it to a metadata-only request.
fn partial_metadata(obj: Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

struct WatchState {
    tx: mpsc::Sender<Bytes>,
    target: Target,
    key: ResourceKey,
    ls: LabelSelector,
    fs: FieldSelector,
    visible: HashSet<String>,
    sent: u64,
    limit: Option<u64>,
    last_rv: u64,
    /// `Some(includeObject)` when the client asked for Tables (`kubectl get -w`).
    table: Option<String>,
    /// Column definitions go only into the first Table event, as on the real server.
    columns_sent: bool,
    /// The client asked for metadata only (`as=PartialObjectMetadata`).
    metadata_only: bool,
}

impl WatchState {
    /// Sends one event line; false when the stream must end.
    async fn send(&mut self, ty: &str, obj: Value) -> bool {
        let obj = match &self.table {
            Some(include) if ty != "BOOKMARK" && ty != "ERROR" => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                let mut t = crate::table::render(
                    &self.key,
                    &self.target.info.printer_columns,
                    vec![obj],
                    meta,
                    include,
                );
                if self.columns_sent {
                    t["columnDefinitions"] = json!([]);
                }
                self.columns_sent = true;
                t
            }
            None if self.metadata_only && ty != "BOOKMARK" && ty != "ERROR" => {
                partial_metadata(obj)
            }
            _ => obj,
        };
        let mut line = json!({"type": ty, "object": obj}).to_string();
        line.push('\n');
        // A client that stops reading fills the buffer; like the real server, close the
        // watch if it stays full (writers are never blocked: the change feed is a broadcast
        // and a lagging receiver ends the watch too).
        match self.tx.try_send(Bytes::from(line)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(line)) => {
                match tokio::time::timeout(WATCH_SEND_BUDGET, self.tx.send(line)).await {
                    Ok(Ok(())) => {}
                    _ => return false,
                }
            }
        }
        if ty != "BOOKMARK" {
            self.sent += 1;
            if self.limit.is_some_and(|l| self.sent >= l) {
                return false;
            }
        }
        true
    }

    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.target.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns.as_str())
        {
            return false;
        }
        if let Some(name) = &self.target.name
            && obj["metadata"]["name"].as_str() != Some(name.as_str())
        {
            return false;
        }
        self.ls.matches(obj) && self.fs.matches(obj)
    }

    async fn process(&mut self, ev: &WatchEvent) -> bool {
        self.last_rv = self.last_rv.max(ev.resource_version);
        if ev.resource != self.key {
            return true;
        }
        let uid = ev.object["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let now = self.matches(&ev.object);
        let was = self.visible.contains(&uid);
        let obj = with_version((*ev.object).clone(), &self.target);
        // Like the real server: an object entering the selector is ADDED, one leaving it is
        // DELETED.
        let ty = match (ev.kind, now, was) {
            (EventKind::Deleted, false, false) => return true,
            (EventKind::Deleted, _, _) => {
                self.visible.remove(&uid);
                "DELETED"
            }
            (EventKind::Added, true, _) => {
                self.visible.insert(uid);
                "ADDED"
            }
            (EventKind::Modified, true, true) => "MODIFIED",
            (EventKind::Modified, true, false) => {
                self.visible.insert(uid);
                "ADDED"
            }
            (_, false, true) => {
                self.visible.remove(&uid);
                "DELETED"
            }
            (_, false, false) => return true,
        };
        self.send(ty, obj).await
    }

    fn bookmark(&self, initial_end: bool) -> Value {
        let mut meta =
            json!({"resourceVersion": self.last_rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.target.info.kind, "apiVersion": self.target.api_version(), "metadata": meta})
    }
}

fn watch(
    shared: &Arc<Shared>,
    t: &Target,
    q: &HashMap<String, String>,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let ls = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fs = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        &t.key(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let send_initial = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    if send_initial && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions.meta.k8s.io",
            "",
            vec![ApiError::cause(
                "FieldValueForbidden",
                "sendInitialEvents",
                "Forbidden: sendInitialEvents is allowed with resourceVersionMatch set to NotOlderThan",
            )],
        ));
    }
    let allow_bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let rv_param = q
        .get("resourceVersion")
        .cloned()
        .filter(|r| !r.is_empty() && r != "0");
    let store = &shared.store;
    let key = t.key();
    let mut initial: Vec<Value> = Vec::new();
    let mut replay: Vec<WatchEvent> = Vec::new();
    let mut expired: Option<ApiError> = None;
    let mut seed_visible: Vec<Value> = Vec::new();
    let (rx, start_rv) = if send_initial || rv_param.is_none() {
        let (items, rv, rx) = store.list_and_subscribe(&key, t.namespace.as_deref());
        initial = items;
        (rx, rv)
    } else {
        let rv: u64 = rv_param.as_deref().unwrap_or("0").parse().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {:?}: must be a number",
                rv_param.as_deref().unwrap_or("")
            ))
        })?;
        match store.watch_from(rv) {
            Ok((events, rx)) => {
                replay = events;
                seed_visible = store.list(&key, t.namespace.as_deref()).0;
                (rx, rv)
            }
            Err(e) => {
                expired = Some(e);
                (store.subscribe(), rv)
            }
        }
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    let mut state = WatchState {
        tx,
        target: t.clone(),
        key,
        ls,
        fs,
        visible: HashSet::new(),
        sent: 0,
        limit: shared.controls.watch_event_limit(),
        last_rv: start_rv,
        table: accept.contains("as=Table").then(|| {
            q.get("includeObject")
                .cloned()
                .unwrap_or_else(|| "Metadata".into())
        }),
        columns_sent: false,
        metadata_only: wants_metadata(accept),
    };
    for o in &seed_visible {
        if state.matches(o)
            && let Some(u) = o["metadata"]["uid"].as_str()
        {
            state.visible.insert(u.to_string());
        }
    }
    let shared2 = shared.clone();
    let bookmark_interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let _guard = shared2.controls.watch_opened();
        let mut cut = shared2.controls.cut_receiver();
        cut.borrow_and_update();
        let mut rx = rx;
        let run = async {
            if let Some(e) = expired {
                state.send("ERROR", e.to_status()).await;
                return;
            }
            for o in initial {
                if state.matches(&o) {
                    if let Some(u) = o["metadata"]["uid"].as_str() {
                        state.visible.insert(u.to_string());
                    }
                    let o = with_version(o, &state.target);
                    if !state.send("ADDED", o).await {
                        return;
                    }
                }
            }
            if send_initial {
                let b = state.bookmark(true);
                if !state.send("BOOKMARK", b).await {
                    return;
                }
            }
            for ev in &replay {
                if !state.process(ev).await {
                    return;
                }
            }
            let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + bookmark_interval,
                bookmark_interval,
            );
            loop {
                tokio::select! {
                    _ = shared2.shutdown.cancelled() => return,
                    _ = cut.changed() => return,
                    _ = state.tx.closed() => return,
                    _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending::<()>().await } } => return,
                    _ = ticker.tick(), if allow_bookmarks => {
                        let b = state.bookmark(false);
                        if !state.send("BOOKMARK", b).await { return; }
                    }
                    r = rx.recv() => match r {
                        Ok(ev) => if !state.process(&ev).await { return; },
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        };
        run.await;
    });
    let mut r = Response::new(BodyExt::boxed_unsync(ChannelBody { rx: body_rx }));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_time_parsing() {
        let q = parse_query("labelSelector=owner%3Dhelm%2Cname%3Dx&watch=1&x");
        assert_eq!(q["labelSelector"], "owner=helm,name=x");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn error_responses_carry_status_and_retry_after() {
        let r = error_response(&ApiError::too_many_requests(3));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = error_response(&ApiError::not_found("", "secrets", "x"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn routes() {
        let s = Store::default();
        let Route::Resource(t) = classify(&s, "/api/v1/namespaces/ns1/secrets/x") else {
            panic!()
        };
        assert_eq!(
            (
                t.info.plural.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref()
            ),
            ("secrets", Some("ns1"), Some("x"))
        );
        let Route::Resource(t) = classify(&s, "/api/v1/namespaces/ns1/status") else {
            panic!()
        };
        assert_eq!(
            (t.info.plural.as_str(), t.name.as_deref(), t.sub.as_deref()),
            ("namespaces", Some("ns1"), Some("status"))
        );
        let Route::Resource(t) = classify(&s, "/api/v1/namespaces/ns1") else {
            panic!()
        };
        assert_eq!(
            (t.info.plural.as_str(), t.name.as_deref()),
            ("namespaces", Some("ns1"))
        );
        let Route::Resource(t) = classify(&s, "/apis/apps/v1/watch/namespaces/a/deployments")
        else {
            panic!()
        };
        assert!(t.legacy_watch);
        let Route::Resource(t) = classify(&s, "/apis/apps/v1/deployments") else {
            panic!()
        };
        assert!(t.namespace.is_none());
        assert!(matches!(
            classify(&s, "/apis/apps/v1/namespaces/a/nothings"),
            Route::Unknown
        ));
        assert!(matches!(
            classify(&s, "/apis/apps/v1"),
            Route::NonResource("discovery")
        ));
        assert!(matches!(
            classify(&s, "/api/v1/namespaces/a/namespaces"),
            Route::Unknown
        ));
    }
}
