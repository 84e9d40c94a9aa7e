//! kubesim: a simulated Kubernetes API server (in-memory store + HTTP/TLS API) with simulated
//! controllers, for testing strata against real helm, kubectl and kube-rs.
//!
//! # Public API summary
//!
//! ## Store (`kubesim::store`, for controllers and tests)
//! - [`store::Store`]: cheap `Clone` (an `Arc` inside). Objects are `serde_json::Value`, keyed
//!   by [`ResourceKey`] (group + plural; all versions of a group share storage), namespace, name.
//! - `store.get(&res, Some("ns"), "name") -> Option<Value>`
//! - `store.list(&res, Some("ns") | None) -> (Vec<Value>, u64 /* resourceVersion */)`
//! - `store.create(&res, obj) -> Result<Value, ApiError>`: defaults, uid, creationTimestamp,
//!   generation (kinds that track it), resourceVersion, generateName, namespace must exist and
//!   not be Terminating.
//! - `store.update(&res, obj) -> Result<Value, ApiError>`: PUT; 409 Conflict when
//!   `metadata.resourceVersion` is given and stale; unconditional without it. Status is kept
//!   for kinds with a status subresource; generation bumps on spec changes only. Writing an
//!   object that is unchanged is a no-op (no event, same resourceVersion).
//! - `store.update_status(&res, obj)`: only `.status` changes; generation untouched.
//! - `store.update_with(&res, ns, name, |obj| ...)` / `store.update_status_with(...)`:
//!   read-modify-write under the store lock (never conflicts).
//! - `store.delete(&res, ns, name, Propagation::Background) -> Result<Deleted, ApiError>`;
//!   `Deleted::Gone(obj)` or `Deleted::Pending(obj)` (finalizers / foreground / namespace).
//! - `store.subscribe() -> tokio::sync::broadcast::Receiver<WatchEvent>`: every change;
//!   `WatchEvent { kind: EventKind::{Added, Modified, Deleted}, resource: ResourceKey,
//!   object: Arc<Value>, resource_version: u64 }`.
//! - `store.resource_for_kind("apps/v1", "Deployment") -> Option<ResourceKey>`,
//!   `store.resource_info(&res) -> Option<ResourceInfo>`, `ResourceKey::new("apps", "deployments")`.
//! - Writes from Rust go through the same rules and watch events as HTTP writes, but not
//!   through the request log or fault injection.
//!
//! - Also: `store.list_and_subscribe(&res, ns)` (atomic snapshot + feed), `store.watch_from(rv)`
//!   (replay from the bounded history, 410 Expired when too old), `store.dump()`,
//!   `store.resource_version()`, and `*_opts` variants with `WriteOptions { dry_run }` /
//!   `DeleteOptions { propagation, uid, resource_version, dry_run }`.
//!
//! ## Server
//! - [`start`]`(Config::default()).await -> Result<Cluster, cluster::Error>`; `Config` has
//!   `listen` (127.0.0.1:0), `controllers: Option<ControllerConfig>`, `store: StoreConfig`,
//!   `bookmark_interval`, `fault_seed`, `token`.
//! - [`Cluster`]: `url()`, `addr()`, `ca_pem()`, `token()`, `issue_token()`,
//!   `kubeconfig_yaml()`, `write_kubeconfig(path)`,
//!   `write_in_cluster_env(dir, namespace) -> InClusterEnv` (files `token`, `ca.crt`,
//!   `namespace` + env `KUBERNETES_SERVICE_HOST/PORT`), `store()`, `controls()`,
//!   `shutdown().await` (dropping the cluster also stops it).
//! - [`Controls`]: request log (`requests`, `requests_where`, `counts`, `reset_requests`) and
//!   faults (`set_latency`, `add_error(ErrorRule)`, `throttle`, `drop_connections`,
//!   `unavailable_for`, `available`, `reject_tokens`, `cut_watches`, `cut_watches_after`,
//!   `clear_faults`, `open_watches`, `open_connections`, `dump`).
//! - Admin endpoint under `/kubesim/...` on the same server (see README.md).

// ApiError mirrors a full Status (with causes); errors are rare, so it is not boxed.
#![allow(clippy::result_large_err)]

pub(crate) mod admin;
pub mod cluster;
pub mod controllers;
pub mod controls;
pub(crate) mod defaults;
pub mod discovery;
pub mod error;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub(crate) mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod util;

pub use cluster::{Cluster, Config, InClusterEnv, start};
pub use controls::{Controls, DelayRule, ErrorRule, FaultSpec, RequestRecord, UnavailableMode};
pub use error::ApiError;
pub use registry::{ResourceInfo, ResourceKey};
pub use store::{Deleted, EventKind, Propagation, Store, StoreConfig, WatchEvent};
