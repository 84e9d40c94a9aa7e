//! The admin endpoint under `/kubesim/...` on the API server (no authentication, no faults,
//! not in the request log):
//! - `GET /kubesim/requests` -> `{"items": [RequestRecord...], "counts": Counts}`;
//!   `DELETE /kubesim/requests` resets the log.
//! - `GET /kubesim/dump` -> every object, grouped by resource.
//! - `GET /kubesim/faults` -> current faults; `POST /kubesim/faults` with a `FaultSpec` JSON
//!   body adds faults; `DELETE /kubesim/faults` clears them all.
//! - `POST /kubesim/watches/cut` closes every open watch.

use crate::controls::FaultSpec;
use crate::error::ApiError;
use crate::server::{Body, Shared, error_response};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

fn ok(v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *r.status_mut() = StatusCode::OK;
    r
}

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let c = &shared.controls;
    match (method, path.as_str()) {
        (Method::GET, "/kubesim/requests") => {
            ok(&json!({"items": c.requests(), "counts": c.counts()}))
        }
        (Method::DELETE, "/kubesim/requests") => {
            c.reset_requests();
            ok(&json!({"reset": true}))
        }
        (Method::GET, "/kubesim/dump") => ok(&c.dump()),
        (Method::GET, "/kubesim/faults") => ok(&c.describe()),
        (Method::DELETE, "/kubesim/faults") => {
            c.clear_faults();
            ok(&c.describe())
        }
        (Method::POST, "/kubesim/faults") => {
            let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error_response(&ApiError::bad_request(
                        "could not read the fault specification",
                    ));
                }
            };
            match serde_json::from_slice::<FaultSpec>(&body) {
                Ok(spec) => {
                    c.apply_spec(&spec);
                    ok(&c.describe())
                }
                Err(e) => error_response(&ApiError::bad_request(format!(
                    "invalid fault specification: {e}"
                ))),
            }
        }
        (Method::POST, "/kubesim/watches/cut") => {
            c.cut_watches();
            ok(&json!({"cut": true}))
        }
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            format!("no kubesim admin endpoint {path}"),
        )),
    }
}
