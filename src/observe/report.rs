//! Status for `kubectl`: the ConfigMap `strata-status` (key `status.json`) in the agent's
//! namespace, kept current by server-side apply (field manager `strata`), and core/v1 Events
//! for release transitions (reasons `Installing`, `Ready`, `Failed`) whose involvedObject is
//! that ConfigMap:
//!
//! ```text
//! kubectl -n strata-system get configmap strata-status -o jsonpath='{.data.status\.json}'
//! kubectl -n strata-system get events --field-selector involvedObject.name=strata-status
//! ```
//!
//! Writes are throttled: a phase change (of the agent, a layer or a release) is written at
//! once, or [`PHASE_CHANGE_INTERVAL`] after the last write when that was more recent; other
//! changes (messages, not-ready resources) at most once per `min_interval`. The ConfigMap holds
//! every release, so a write per release transition would make a revision's writes grow with
//! the square of its releases.
//! Failures to write are logged and retried on the next change: reporting never stops the
//! agent.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::observe::status::{ReleasePhase, Status, StatusStore, Transition};

/// The least time between two writes of the status ConfigMap, also for phase changes: the
/// transitions of releases that finish together (a layer's worth) go in one write.
pub const PHASE_CHANGE_INTERVAL: Duration = Duration::from_millis(250);

/// Name of the status ConfigMap.
pub const CONFIGMAP_NAME: &str = "strata-status";
/// Key of the status JSON in the ConfigMap.
pub const STATUS_KEY: &str = "status.json";
/// Key of the time to Ready this agent inherited (`{"namespace/name": ms}`), present only while
/// its status has no layers yet (no revision begun: Git unreachable, a first revision
/// rejected): a restart in that window inherits it again instead of losing it.
pub const READY_MS_KEY: &str = "lastReadyMs.json";
const FIELD_MANAGER: &str = "strata";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "writing ConfigMap {namespace}/{CONFIGMAP_NAME} failed: {message}; check that namespace {namespace} exists and the agent may patch configmaps there"
    )]
    ConfigMap { namespace: String, message: String },
    #[error(
        "creating an Event in {namespace} for release {release} failed: {message}; check that the agent may create events there"
    )]
    Event {
        namespace: String,
        release: String,
        message: String,
    },
    #[error("encoding the status as JSON failed: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes the status ConfigMap and Events.
#[derive(Clone)]
pub struct Reporter {
    client: kube::Client,
    namespace: String,
    status: StatusStore,
    instance: String,
    /// The status JSON last written and the ConfigMap as stored then: an unchanged status is
    /// not written again.
    last: std::sync::Arc<std::sync::Mutex<Option<(String, ConfigMap)>>>,
}

impl Reporter {
    pub fn new(client: kube::Client, namespace: impl Into<String>, status: StatusStore) -> Self {
        let instance = std::env::var("HOSTNAME")
            .or_else(|_| std::env::var("POD_NAME"))
            .unwrap_or_else(|_| "strata".to_string());
        Self {
            client,
            namespace: namespace.into(),
            status,
            instance,
            last: Default::default(),
        }
    }

    /// The `lastReadyMs` of every release in the status the previous writer left in the
    /// ConfigMap (before this agent writes it), by namespace and name. Empty when there is
    /// none; when it cannot be read or parsed that is logged and it is empty too: the schedule
    /// then treats every release as never seen (it only loses its order, nothing else).
    pub async fn inherited_ready_ms(&self) -> BTreeMap<(String, String), u64> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let read = tokio::time::timeout(INHERIT_TIMEOUT, api.get_opt(CONFIGMAP_NAME)).await;
        let data = match read {
            Ok(Ok(Some(cm))) => cm.data,
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::kube_api::error_text(&e), configmap = CONFIGMAP_NAME, "previous status not read; releases start in list order until their time to Ready is seen again");
                None
            }
            Err(_) => {
                tracing::warn!(configmap = CONFIGMAP_NAME, timeout = ?INHERIT_TIMEOUT, "previous status not read in time; releases start in list order until their time to Ready is seen again");
                None
            }
        };
        let Some(data) = data else {
            return BTreeMap::new();
        };
        match ready_ms_of_data(&data) {
            Ok(found) => {
                tracing::debug!(
                    releases = found.len(),
                    "time to Ready read from the previous status"
                );
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, configmap = CONFIGMAP_NAME, "previous status is not strata's status JSON; releases start in list order until their time to Ready is seen again");
                BTreeMap::new()
            }
        }
    }

    /// Apply the current status to the ConfigMap (not again when it is the one last written);
    /// returns the ConfigMap as stored.
    pub async fn write_status(&self) -> Result<ConfigMap> {
        let snapshot = self.status.snapshot();
        let json = serde_json::to_string_pretty(&snapshot)?;
        if let Some((written, cm)) = self.last.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && *written == json
        {
            return Ok(cm.clone());
        }
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIGMAP_NAME,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/name": "strata",
                    "app.kubernetes.io/managed-by": "strata",
                },
            },
            "data": config_map_data(&snapshot, &json),
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&cm);
        let retry = crate::kube_api::InPlaceRetry::default();
        let stored =
            crate::kube_api::retry_kube(&retry, || api.patch(CONFIGMAP_NAME, &params, &patch))
                .await
                .map_err(|e| Error::ConfigMap {
                    namespace: self.namespace.clone(),
                    message: crate::kube_api::error_text(&e),
                })?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((json, stored.clone()));
        Ok(stored)
    }

    /// The status ConfigMap as stored (`cm`), as the object its Events are about.
    fn involved_object(&self, cm: &ConfigMap) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(CONFIGMAP_NAME.into()),
            namespace: Some(self.namespace.clone()),
            uid: cm.metadata.uid.clone(),
            resource_version: cm.metadata.resource_version.clone(),
            field_path: None,
        }
    }

    /// Create an Event for a release transition, about the status ConfigMap (`involved`, from
    /// [`Self::involved_object`]).
    pub async fn write_event(&self, involved: &ObjectReference, t: &Transition) -> Result<()> {
        let explicit = t.reason.map(|r| (r, announced_type(r)));
        let Some((reason, type_)) = explicit.or_else(|| event_reason(t.to)) else {
            return Ok(());
        };
        let message = match &t.message {
            Some(m) if !m.is_empty() => {
                format!("release {}/{}: {}: {}", t.namespace, t.release, reason, m)
            }
            _ => format!("release {}/{}: {}", t.namespace, t.release, reason),
        };
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{CONFIGMAP_NAME}.")),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: involved.clone(),
            reason: Some(reason.into()),
            message: Some(truncate(&message, 1024)),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.into()),
            reporting_component: Some("strata".into()),
            reporting_instance: Some(self.instance.clone()),
            source: Some(EventSource {
                component: Some("strata".into()),
                host: None,
            }),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PostParams::default();
        let retry = crate::kube_api::InPlaceRetry::default();
        crate::kube_api::retry_kube(&retry, || api.create(&params, &event))
            .await
            .map_err(|e| Error::Event {
                namespace: self.namespace.clone(),
                release: format!("{}/{}", t.namespace, t.release),
                message: crate::kube_api::error_text(&e),
            })?;
        Ok(())
    }

    /// Run until `shutdown`: keep the ConfigMap current and emit Events. A last write is made
    /// on shutdown. Every transition from the moment this returns gets its Event.
    pub fn spawn(self, min_interval: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let transitions = self.status.transitions();
        tokio::spawn(async move { self.run(min_interval, transitions, shutdown).await })
    }

    /// The status writer, with the Event writer beside it in its own task: an Event is written
    /// as soon as its transition happens, not held back while the status keeps changing and
    /// its writes wait out the throttle (a layer's Ready Events would otherwise trail the
    /// status by seconds). Events name the ConfigMap, so they wait for its first write.
    async fn run(
        self,
        min_interval: Duration,
        transitions: tokio::sync::broadcast::Receiver<Transition>,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.status.subscribe();
        let (written_tx, written) = tokio::sync::watch::channel(None);
        let events = tokio::spawn(self.clone().write_events(transitions, written));
        let mut last_write: Option<tokio::time::Instant> = None;
        let mut pending = true;
        loop {
            if pending {
                let phase_changed = changes.borrow_and_update().phase_changed;
                let wait = if phase_changed {
                    PHASE_CHANGE_INTERVAL.min(min_interval)
                } else {
                    min_interval
                };
                if let Some(due) = last_write.map(|last| last + wait)
                    && tokio::time::Instant::now() < due
                {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = shutdown.cancelled() => {}
                        _ = changes.changed() => { continue; }
                    }
                }
                self.status.clear_phase_changed();
                match self.write_status().await {
                    Ok(c) => {
                        written_tx.send_replace(Some(self.involved_object(&c)));
                        pending = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "status ConfigMap not written"),
                }
                last_write = Some(tokio::time::Instant::now());
            }
            if shutdown.is_cancelled() {
                break;
            }
            // A write that failed (after its in-place retries) is tried again once the
            // throttle window has passed, not only at the next change: the last status before
            // a quiet period (a revision Ready, `--once` ending) must reach the ConfigMap.
            let again = async {
                match last_write {
                    Some(last) if pending => tokio::time::sleep_until(last + min_interval).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = again => {}
                r = changes.changed() => {
                    if r.is_err() { break; }
                    pending = true;
                }
                _ = shutdown.cancelled() => {
                    pending = true;
                }
            }
        }
        match self.write_status().await {
            Ok(c) => {
                written_tx.send_replace(Some(self.involved_object(&c)));
            }
            Err(e) => tracing::warn!(error = %e, "final status ConfigMap not written"),
        }
        // The Event writer finishes the transitions that happened before this point.
        drop(written_tx);
        let _ = events.await;
    }

    /// Write an Event for every transition, in order, once the ConfigMap they name has been
    /// written (`written`: the ConfigMap as last written); when the status writer ends
    /// (`written` closed), the transitions announced before its last write still get theirs.
    async fn write_events(
        self,
        mut transitions: tokio::sync::broadcast::Receiver<Transition>,
        mut written: tokio::sync::watch::Receiver<Option<ObjectReference>>,
    ) {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        // While the status writer runs: each transition as it comes.
        loop {
            let t = tokio::select! {
                biased;
                t = transitions.recv() => t,
                r = written.changed() => {
                    if r.is_err() {
                        break;
                    }
                    continue;
                }
            };
            match t {
                Ok(t) => {
                    if !self.event_for(&mut written, &t).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "release events skipped: too many at once");
                }
                Err(RecvError::Closed) => return,
            }
        }
        // It has ended: the transitions still queued.
        loop {
            match transitions.try_recv() {
                Ok(t) => {
                    if !self.event_for(&mut written, &t).await {
                        return;
                    }
                }
                Err(TryRecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "release events skipped: too many at once");
                }
                Err(_) => return,
            }
        }
    }

    /// Write the Event of `t` about the ConfigMap as last written, waiting for its first
    /// write; false when the status writer ended without one (no Event can name it).
    async fn event_for(
        &self,
        written: &mut tokio::sync::watch::Receiver<Option<ObjectReference>>,
        t: &Transition,
    ) -> bool {
        let involved = match written.wait_for(Option::is_some).await {
            Ok(involved) => involved.clone(),
            Err(_) => None,
        };
        let Some(involved) = involved else {
            return false;
        };
        if let Err(e) = self.write_event(&involved, t).await {
            tracing::warn!(error = %e, "event not written");
        }
        true
    }
}

/// How long the agent waits to read the previous status when it becomes the writer.
const INHERIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The part of a written status that a later agent reads back.
#[derive(serde::Deserialize)]
struct Written {
    #[serde(default)]
    layers: Vec<WrittenLayer>,
}

#[derive(serde::Deserialize)]
struct WrittenLayer {
    #[serde(default)]
    releases: Vec<WrittenRelease>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WrittenRelease {
    name: String,
    namespace: String,
    last_ready_ms: Option<u64>,
}

/// The status ConfigMap's data for `status` (`json`: its JSON): the status, and while it has
/// no layers, the time to Ready it inherited ([`READY_MS_KEY`]). A function of `json` alone
/// as far as [`Reporter::write_status`]'s skip of an unchanged write goes: whether there are
/// layers shows in `json`, and the inherited times are set before the first write.
fn config_map_data(status: &Status, json: &str) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([(STATUS_KEY.to_string(), json.to_string())]);
    if status.layers.is_empty() && !status.inherited_ready_ms.is_empty() {
        let kept: BTreeMap<String, u64> = status
            .inherited_ready_ms
            .iter()
            .map(|((namespace, name), ms)| (format!("{namespace}/{name}"), *ms))
            .collect();
        if let Ok(kept) = serde_json::to_string(&kept) {
            data.insert(READY_MS_KEY.to_string(), kept);
        }
    }
    data
}

/// `lastReadyMs` by namespace and name from the status ConfigMap's data as
/// [`config_map_data`] makes it (a release in the status JSON wins over a kept one).
fn ready_ms_of_data(
    data: &BTreeMap<String, String>,
) -> Result<BTreeMap<(String, String), u64>, serde_json::Error> {
    let mut found = match data.get(STATUS_KEY) {
        Some(json) => ready_ms_of(json)?,
        None => BTreeMap::new(),
    };
    if let Some(kept) = data.get(READY_MS_KEY) {
        let kept: BTreeMap<String, u64> = serde_json::from_str(kept)?;
        for (key, ms) in kept {
            if let Some((namespace, name)) = key.split_once('/') {
                found
                    .entry((namespace.to_string(), name.to_string()))
                    .or_insert(ms);
            }
        }
    }
    Ok(found)
}

/// `lastReadyMs` by namespace and name, from a status JSON as [`Reporter::write_status`]
/// writes it.
fn ready_ms_of(json: &str) -> Result<BTreeMap<(String, String), u64>, serde_json::Error> {
    let written: Written = serde_json::from_str(json)?;
    Ok(written
        .layers
        .into_iter()
        .flat_map(|l| l.releases)
        .filter_map(|r| r.last_ready_ms.map(|ms| ((r.namespace, r.name), ms)))
        .collect())
}

/// Event type of an announced reason: recoveries and remediations are Warnings (something
/// went wrong before), the rest Normal.
fn announced_type(reason: &str) -> &'static str {
    match reason {
        "Recovered" | "Remediated" | "RecoveryFailed" | "RemediationFailed" | "Stalled"
        | "UninstallFailed" | "Orphaned" | "DriftDetected" => "Warning",
        _ => "Normal",
    }
}

/// Event reason and type for a transition; `None` for transitions without an Event.
fn event_reason(to: ReleasePhase) -> Option<(&'static str, &'static str)> {
    match to {
        ReleasePhase::Installing => Some(("Installing", "Normal")),
        ReleasePhase::Ready => Some(("Ready", "Normal")),
        ReleasePhase::Degraded => Some(("Degraded", "Warning")),
        ReleasePhase::Failed => Some(("Failed", "Warning")),
        _ => None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installing_ready_failed_make_events() {
        assert_eq!(
            event_reason(ReleasePhase::Installing),
            Some(("Installing", "Normal"))
        );
        assert_eq!(event_reason(ReleasePhase::Ready), Some(("Ready", "Normal")));
        assert_eq!(
            event_reason(ReleasePhase::Degraded),
            Some(("Degraded", "Warning"))
        );
        assert_eq!(
            event_reason(ReleasePhase::Failed),
            Some(("Failed", "Warning"))
        );
        assert_eq!(event_reason(ReleasePhase::Waiting), None);
        assert_eq!(event_reason(ReleasePhase::Skipped), None);
    }

    #[test]
    fn recoveries_and_remediations_are_warnings() {
        assert_eq!(announced_type("Recovered"), "Warning");
        assert_eq!(announced_type("Remediated"), "Warning");
        assert_eq!(announced_type("RecoveryFailed"), "Warning");
        assert_eq!(announced_type("Something"), "Normal");
    }

    #[test]
    fn time_to_ready_is_read_back_from_a_written_status() {
        use crate::observe::status::{LayerId, LayerStatus, ReleaseStatus, Status};
        let mut slow = ReleaseStatus::pending("p", "slow", "apps", "c", "1.0.0");
        slow.last_ready_ms = Some(1900);
        let never = ReleaseStatus::pending("p", "new", "apps", "c", "1.0.0");
        let mut other = ReleaseStatus::pending("p", "slow", "other", "c", "1.0.0");
        other.last_ready_ms = Some(250);
        let status = Status {
            layers: vec![
                LayerStatus {
                    layer: LayerId::Number(0),
                    phase: crate::observe::status::LayerPhase::Ready,
                    ready_at: None,
                    releases: vec![slow, never],
                },
                LayerStatus {
                    layer: LayerId::Unlayered,
                    phase: crate::observe::status::LayerPhase::Ready,
                    ready_at: None,
                    releases: vec![other],
                },
            ],
            ..Status::default()
        };
        let json = serde_json::to_string_pretty(&status).unwrap();
        let read = ready_ms_of(&json).unwrap();
        assert_eq!(
            read.into_iter().collect::<Vec<_>>(),
            vec![
                (("apps".to_string(), "slow".to_string()), 1900),
                (("other".to_string(), "slow".to_string()), 250),
            ]
        );
        assert!(ready_ms_of("{}").unwrap().is_empty());
        assert!(ready_ms_of("not json").is_err());
        assert!(ready_ms_of(r#"{"layers":[{"releases":[{"name":1}]}]}"#).is_err());
    }

    #[test]
    fn a_status_without_layers_keeps_the_inherited_time_to_ready() {
        use crate::observe::status::{LayerId, LayerPhase, LayerStatus, ReleaseStatus, Status};
        let mut waiting = Status::default();
        waiting
            .inherited_ready_ms
            .insert(("apps".to_string(), "slow".to_string()), 1900);
        waiting
            .inherited_ready_ms
            .insert(("other".to_string(), "fast".to_string()), 250);
        let json = serde_json::to_string_pretty(&waiting).unwrap();
        let data = config_map_data(&waiting, &json);
        assert_eq!(data[READY_MS_KEY], r#"{"apps/slow":1900,"other/fast":250}"#);
        assert_eq!(
            ready_ms_of_data(&data).unwrap(),
            waiting.inherited_ready_ms,
            "a restart before any revision begins inherits the same times"
        );

        // Once a revision has begun, the status carries the times and the kept key goes.
        let mut slow = ReleaseStatus::pending("p", "slow", "apps", "c", "1.0.0");
        slow.last_ready_ms = Some(1700);
        let mut running = waiting.clone();
        running.layers = vec![LayerStatus {
            layer: LayerId::Number(0),
            phase: LayerPhase::Progressing,
            ready_at: None,
            releases: vec![slow],
        }];
        let json = serde_json::to_string_pretty(&running).unwrap();
        let data = config_map_data(&running, &json);
        assert_eq!(data.keys().collect::<Vec<_>>(), vec![STATUS_KEY]);
        assert_eq!(
            ready_ms_of_data(&data)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![(("apps".to_string(), "slow".to_string()), 1700)]
        );

        // Both keys (never written together, but read in any case): the status wins.
        let mut both = data.clone();
        both.insert(
            READY_MS_KEY.to_string(),
            r#"{"apps/slow":5,"x/y":7}"#.to_string(),
        );
        let read = ready_ms_of_data(&both).unwrap();
        assert_eq!(read[&("apps".to_string(), "slow".to_string())], 1700);
        assert_eq!(read[&("x".to_string(), "y".to_string())], 7);
        both.insert(READY_MS_KEY.to_string(), "[1]".to_string());
        assert!(ready_ms_of_data(&both).is_err());
        assert!(ready_ms_of_data(&BTreeMap::new()).unwrap().is_empty());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é...");
    }
}
