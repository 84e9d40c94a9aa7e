//! What the agent shows and records: the status model ([`status`]) behind the HTTP API
//! ([`server`]), the metrics ([`metrics`]), the status ConfigMap and Events ([`report`]), logs
//! and traces ([`telemetry`]); and the live objects of a release ([`objects`]).
pub mod metrics;
pub mod objects;
pub mod report;
pub mod server;
pub mod status;
pub mod telemetry;
