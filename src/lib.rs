//! strata: layered Helm profiles from Git.
//!
//! The binary (`src/main.rs`) parses [`config::Cli`], compiles the configuration
//! ([`config::AgentConfig`]), starts [`observe::telemetry`], and calls [`agent::run`] or
//! [`plan_cmd::run`], [`diff_cmd::run`] or [`status_cmd::run`]. The folders follow one release's path through the agent:
//!
//! - [`source`]: where a revision comes from: the Git repository ([`source::git`]), chart
//!   repositories ([`source::charts`]) and the loader that turns one commit into a checked
//!   revision ([`source::revision`]); planning and deciding are pure and live in `strata-core`;
//! - [`reconcile`]: the glue around core's decisions: layers one after the other
//!   ([`reconcile::layers`]), one release's attempt loop ([`reconcile::release`]) and the
//!   per-release retry book ([`reconcile::retry`]);
//! - [`executor`]: the one door to helm ([`executor::HelmDriver`]): the helm process
//!   ([`executor::helm`], [`executor::process`]) and helm's release storage
//!   ([`executor::releases`]);
//! - [`observe`]: what the agent shows: the status model ([`observe::status`]), the HTTP API
//!   ([`observe::server`]), metrics, the status ConfigMap and Events ([`observe::report`]),
//!   logs and traces ([`observe::telemetry`]), and the live objects of a release
//!   ([`observe::objects`]);
//! - [`agent`]: the composition of the parts above for `strata run`, with leader election
//!   ([`agent::leader`]) and the retry annotation ([`agent::annotation`]);
//! - [`kube_api`]: the Kubernetes client and its error text, used by every part.
pub mod agent;
pub mod bundle_cmd;
pub mod config;
pub mod diff_cmd;
pub mod executor;
pub mod kube_api;
pub mod manifest_diff;
pub mod observe;
pub mod plan_cmd;
pub mod reconcile;
pub mod source;
pub mod status_cmd;
