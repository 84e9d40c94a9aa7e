//! strata: layered Helm profiles from Git.
//!
//! The binary (`src/main.rs`) parses [`config::Cli`], starts [`telemetry`], and calls
//! [`agent::run`] or [`plan_cmd::run`]. Modules:
//! - [`status`]: the status model shared by the API, the ConfigMap and the metrics;
//! - [`server`]: the HTTP API (`/status`, `/healthz`, `/readyz`, `/metrics`);
//! - [`metrics`]: Prometheus metrics; [`telemetry`]: logs and OTLP traces;
//! - [`report`]: the `strata-status` ConfigMap and Kubernetes Events.
pub mod agent;
pub mod charts;
pub mod config;
pub mod git;
pub mod helm;
pub mod leader;
pub mod metrics;
pub mod plan_cmd;
pub mod process;
pub mod releases;
pub mod report;
pub mod retry;
pub mod server;
pub mod status;
pub mod telemetry;
