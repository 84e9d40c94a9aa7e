//! strata-core: strata's pure logic. No I/O: inputs are strings and already-fetched data,
//! outputs are values and lists of [`Problem`]s.
//!
//! - [`profiles::parse`]: the profile list (YAML in Git) -> [`profiles::ProfileList`].
//! - [`compose::compose`]: a profile list that includes others (a shared base) and
//!   overrides, adds or disables their profiles, merged and validated as one.
//! - [`allocation::parse`]: the allocation file of the `allocated` layering model.
//! - [`chart::parse_chart_yaml`]: `Chart.yaml` -> [`chart::ChartMeta`] with its profile
//!   annotations (strata's and Weave GitOps' keys).
//! - [`version`]: helm's version constraints (`~1.2`, `^1.2`, `1.2.x`, `>=1.2 <2`, `||`).
//! - [`types`]: DNS-1123 names, Go durations, layer numbers, repository paths.
//! - [`values::merge`] / [`values::canonical_digest`]: helm-style values merging and a
//!   key-order-independent digest.
//! - [`plan::plan`]: profile list + Chart.yaml of each profile (+ allocation) ->
//!   [`plan::Plan`] (ordered layers, each release's layer source; `Display` and `Serialize`).
//! - [`depends::check`] / [`depends::order`]: a profile's `dependsOn` inside its layer
//!   (unknown, self, higher-layer references and cycles are problems) and the order it gives.
//! - [`schedule::next_actions`]: which releases may start now, which wait or are skipped.
//! - [`repoindex::parse`] / [`repoindex::resolve_version`]: a Helm repository `index.yaml`
//!   and helm's choice of version.
//! - [`readiness::assess`]: kstatus-style readiness of one Kubernetes object (JSON);
//!   [`readiness::assess_with`] adds the profile's custom CEL health checks ([`health`]).
//! - [`drift::compare`]: the fields a manifest object sets that the live object no longer has
//!   (kstatus-style normalisation), and the profile list's drift policy.
//! - [`reconcile::decide`]: Install / Upgrade / NoOp / Blocked for one release from helm's
//!   storage; [`reconcile::decide_with`] adds recovery of pending releases (Lease-gated),
//!   remediation per profile (retry / rollback / uninstall) and Stalled after `retries`.
//!
//! - [`capacity::fit`]: the default `--concurrency` from the pod's memory limit and CPUs.
//! - [`cycle::next_cycle`] / [`cycle::once_step`]: when the agent's next cycle starts (a
//!   release's backoff may come before the next poll) and when `strata run --once` stops.
//! - [`hooks::chart_may_have_post_hooks`]: whether a chart's templates (subcharts and helpers
//!   included) may have post-install/post-upgrade hooks, so helm must keep waiting itself.
//! - [`limits`]: early, clear failures for values and releases too large for the cluster.
//! - [`input::decode`]: bytes read from Git -> text (UTF-8 only, BOM removed), with a problem
//!   naming the file otherwise.
//!
//! Every parser reports all problems at once as [`Problems`]; each [`Problem`] names the file
//! and the field (`profiles[cert-manager].version`) and displays as `file: field: message`.
pub mod allocation;
pub mod capacity;
pub mod chart;
pub mod chartlock;
pub mod compose;
pub mod cycle;
pub mod depends;
pub mod digest;
pub mod drift;
pub mod health;
pub mod hooks;
pub mod input;
pub mod limits;
pub mod mirrors;
pub mod plan;
pub mod problem;
pub mod profiles;
pub mod prune;
pub mod readiness;
pub mod reconcile;
pub mod repoindex;
pub mod retry;
pub mod schedule;
pub mod types;
pub mod values;
pub mod version;
pub mod yaml;

pub use problem::{Problem, Problems};
pub use types::{GoDuration, LayerNumber};
