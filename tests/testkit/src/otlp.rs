//! An OTLP/HTTP trace receiver on 127.0.0.1:0 (`POST /v1/traces`, protobuf) for the tests
//! that check what strata exports: it keeps the raw bodies and decodes the spans.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::http::{HttpServer, response};

/// The receiver; stopped on drop.
pub struct Receiver {
    server: HttpServer,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = bodies.clone();
        let server = HttpServer::start(Arc::new(move |req: crate::http::Request| {
            let sink = sink.clone();
            Box::pin(async move {
                if req.method != http::Method::POST || req.uri.path() != "/v1/traces" {
                    return response(404, "");
                }
                let valid = ExportTraceServiceRequest::decode(req.body.clone()).is_ok();
                sink.lock().expect("lock").push(req.body.to_vec());
                response(if valid { 200 } else { 400 }, "")
            })
        }))
        .await?;
        Ok(Self { server, bodies })
    }

    /// The base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The raw export bodies received so far.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().expect("lock").clone()
    }

    /// Every span received so far, decoded.
    pub fn spans(&self) -> Vec<Span> {
        self.bodies()
            .iter()
            .filter_map(|b| ExportTraceServiceRequest::decode(b.as_slice()).ok())
            .flat_map(|r| r.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    /// The raw bodies as text (strings are stored verbatim in protobuf).
    pub fn text(&self) -> String {
        self.bodies()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
