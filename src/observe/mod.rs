//! What the agent shows and records: the status model ([`status`]) behind the HTTP API
//! ([`server`]) and its web page ([`page`]), the metrics ([`metrics`]), the status ConfigMap and Events ([`report`]), logs
//! and traces ([`telemetry`]); the live objects of a release ([`objects`]) and the shared watches ([`watches`]) behind live health ([`live`]); and the status
//! shown in a terminal ([`view`]).
pub mod live;
pub mod metrics;
pub mod objects;
pub mod page;
pub mod report;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod view;
pub mod watches;
