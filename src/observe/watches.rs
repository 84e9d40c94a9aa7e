//! Shared watches: one cluster-wide Kubernetes watch per kind covering the objects of every
//! release strata manages (one per kind and namespace for a kind whose cluster-wide list RBAC
//! forbids), with the objects strata cares about kept in memory: those helm manages (the
//! `meta.helm.sh/release-name` annotation helm puts on everything it installs) and those a
//! release tracks, without `managedFields`. So the number of watches (connections) does not
//! grow with the number of release namespaces, and memory grows with managed objects only.
//! Readiness waits, the health gate, live health between revisions and drift read objects from
//! here, not from the API server: once a watch is open the only requests are the ones keeping
//! it open (kube-rs' watcher: one LIST, then a WATCH resumed from the last resourceVersion,
//! re-listed when the server says it is too old).
//!
//! Each release *tracks* the objects of its manifest ([`Watches::track`]); a watch starts the
//! first time one of its objects is tracked and stops when no release tracks an object of it
//! any more. Every change a watch sees bumps one generation counter ([`Watches::subscribe`]),
//! so waiters recompute when something changed instead of polling.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::discovery::Scope;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::watch;

use strata_core::readiness::Readiness;

use super::objects::{ClusterReader, ObjectRef, with_type};

/// What a watch is about: a kind, in a namespace (`None`: watched cluster-wide; a namespaced
/// kind only when RBAC forbids listing it cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
}

/// A release that tracks objects: (namespace, name).
pub type Owner = (String, String);

/// One object as a watch sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The watch has not listed its objects yet (just started, or the kind cannot be watched:
    /// `reason` then says why).
    Unknown { reason: String },
    /// The watch has listed its objects and this one is not among them.
    Absent,
    /// The object as last seen (with `apiVersion` and `kind` set).
    Present(serde_json::Value),
}

/// An object of a release resolved to its watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub object: ObjectRef,
    /// The namespace it lives in (`None`: cluster-scoped, or its kind could not be resolved).
    pub namespace: Option<String>,
    /// Its watch (`None` when the kind is not served: a CRD not installed yet).
    pub stream: Option<StreamKey>,
    /// Why it has no watch.
    pub unresolved: Option<String>,
}

/// Where an object lives: (namespace, name); namespace `None` for cluster-scoped objects.
type ObjectKey = (Option<String>, String);

/// An object kept in memory as compact JSON text: a few times smaller than a
/// `serde_json::Value`, parsed again when looked at.
type Compact = Box<str>;

fn compact(v: &serde_json::Value) -> Compact {
    v.to_string().into_boxed_str()
}

fn expand(c: &Compact) -> serde_json::Value {
    serde_json::from_str(c).unwrap_or(serde_json::Value::Null)
}

struct Stream {
    objects: HashMap<ObjectKey, Compact>,
    synced: bool,
    last_error: Option<String>,
    task: tokio::task::AbortHandle,
}

/// What one release tracks.
struct OwnerEntry {
    objects: Vec<Tracked>,
    /// The manifest object of each tracked object (same order).
    manifest: Vec<Compact>,
    checks: Vec<strata_core::health::HealthCheck>,
    drift: strata_core::drift::DriftPolicy,
}

/// What a release tracks: the objects of its manifest (with the manifest object each),
/// where namespaced objects without a namespace live, its custom health checks and its drift
/// policy.
pub struct TrackSpec<'a> {
    pub objects: Vec<(ObjectRef, serde_json::Value)>,
    pub default_namespace: &'a str,
    pub checks: &'a [strata_core::health::HealthCheck],
    pub drift: &'a strata_core::drift::DriftPolicy,
}

/// One tracked object with its manifest object and what the watches see of it.
pub struct Observed {
    pub tracked: Tracked,
    pub manifest: serde_json::Value,
    pub live: Lookup,
}

impl State {
    /// Make `owner` track `entry` (or nothing), keeping the index of tracked objects per
    /// watch current: the work is that release's objects, not every release's.
    fn set_owner(&mut self, owner: &Owner, entry: Option<OwnerEntry>) {
        if let Some(old) = self.owners.remove(owner) {
            for t in &old.objects {
                let Some(key) = &t.stream else { continue };
                let Some(objects) = self.tracked.get_mut(key) else {
                    continue;
                };
                let object = (t.namespace.clone(), t.object.name.clone());
                if let Some(owners) = objects.get_mut(&object) {
                    owners.retain(|o| o != owner);
                    if owners.is_empty() {
                        objects.remove(&object);
                    }
                }
                if objects.is_empty() {
                    self.tracked.remove(key);
                }
            }
        }
        if let Some(entry) = entry {
            for t in &entry.objects {
                let Some(key) = &t.stream else { continue };
                let owners = self
                    .tracked
                    .entry(key.clone())
                    .or_default()
                    .entry((t.namespace.clone(), t.object.name.clone()))
                    .or_default();
                if !owners.contains(owner) {
                    owners.push(owner.clone());
                }
            }
            self.owners.insert(owner.clone(), entry);
        } else {
            self.changed.stamps.remove(owner);
        }
    }
}

/// Which releases saw a change of what they track: since [`Watches::take_changed`] (for the
/// follower of every release), and when last (for a waiter of one release).
#[derive(Default)]
struct Changed {
    since_taken: std::collections::HashSet<Owner>,
    /// Each release's stamp: the value of `seq` at its last change.
    stamps: HashMap<Owner, u64>,
    seq: u64,
}

impl Changed {
    fn mark(&mut self, owner: &Owner) {
        self.seq += 1;
        self.since_taken.insert(owner.clone());
        self.stamps.insert(owner.clone(), self.seq);
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<StreamKey, Stream>,
    owners: HashMap<Owner, OwnerEntry>,
    /// The objects some release tracks, per watch (kept even without helm's annotation),
    /// with the releases that track each.
    tracked: HashMap<StreamKey, HashMap<ObjectKey, Vec<Owner>>>,
    /// Releases with a tracked object that changed (or a new track).
    changed: Changed,
    /// Namespaced kinds (apiVersion, kind) by whether they are watched cluster-wide (`false`:
    /// RBAC forbids listing them cluster-wide, so per namespace).
    cluster_wide: HashMap<(String, String), bool>,
}

/// The helm release records of every release, from one metadata-only watch of helm's
/// storage Secrets (`owner=helm`, cluster-wide): (namespace, release) -> version -> the
/// record Secret's metadata (its labels say status, and strata's stamp).
#[derive(Default)]
struct Records {
    started: bool,
    synced: bool,
    releases: HashMap<(String, String), std::collections::BTreeMap<u64, kube::api::ObjectMeta>>,
}

impl Records {
    fn key(meta: &kube::api::ObjectMeta) -> Option<((String, String), u64)> {
        let labels = meta.labels.as_ref()?;
        Some((
            (meta.namespace.clone()?, labels.get("name")?.clone()),
            labels.get("version")?.parse().ok()?,
        ))
    }

    fn apply(&mut self, meta: kube::api::ObjectMeta) {
        if let Some((release, version)) = Self::key(&meta) {
            self.releases
                .entry(release)
                .or_default()
                .insert(version, meta);
        }
    }

    fn delete(&mut self, meta: &kube::api::ObjectMeta) {
        if let Some((release, version)) = Self::key(meta)
            && let Some(versions) = self.releases.get_mut(&release)
        {
            versions.remove(&version);
            if versions.is_empty() {
                self.releases.remove(&release);
            }
        }
    }
}

struct Inner {
    client: kube::Client,
    reader: Arc<ClusterReader>,
    state: Mutex<State>,
    records: Mutex<Records>,
    generation: watch::Sender<u64>,
}

/// The shared watch cache. Cheap to clone.
#[derive(Clone)]
pub struct Watches {
    inner: Arc<Inner>,
}

impl Watches {
    pub fn new(client: kube::Client, reader: Arc<ClusterReader>) -> Self {
        let (generation, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                client,
                reader,
                state: Mutex::new(State::default()),
                records: Mutex::new(Records::default()),
                generation,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change notifications: the value goes up whenever a watch saw something (an object
    /// added, changed or deleted, a watch (re)listed or failed).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    fn bump(inner: &Inner) {
        inner.generation.send_modify(|g| *g += 1);
    }

    /// Make `owner` track exactly `objects` (namespaced objects without a namespace are in
    /// `default_namespace`): watches for kinds and namespaces it did not track before start,
    /// watches nobody needs any more stop. Kinds are resolved through discovery (cached); a
    /// kind the cluster does not serve yet is tracked without a watch and resolved again at
    /// the next call.
    pub async fn track(&self, owner: &Owner, spec: TrackSpec<'_>) -> Vec<Tracked> {
        let TrackSpec {
            objects,
            default_namespace,
            checks,
            drift,
        } = spec;
        let (objects, manifest): (Vec<ObjectRef>, Vec<serde_json::Value>) =
            objects.into_iter().unzip();
        let mut tracked = Vec::with_capacity(objects.len());
        for o in &objects {
            match self.inner.reader.resolve(o).await {
                Ok((ar, caps)) => {
                    let namespace = match caps.scope {
                        Scope::Cluster => None,
                        Scope::Namespaced => Some(
                            o.namespace
                                .clone()
                                .unwrap_or_else(|| default_namespace.to_string()),
                        ),
                    };
                    let stream_namespace = match caps.scope {
                        Scope::Cluster => None,
                        Scope::Namespaced if self.cluster_wide(o, &ar).await => None,
                        Scope::Namespaced => namespace.clone(),
                    };
                    tracked.push(Tracked {
                        object: o.clone(),
                        stream: Some(StreamKey {
                            api_version: o.api_version.clone(),
                            kind: o.kind.clone(),
                            namespace: stream_namespace,
                        }),
                        namespace,
                        unresolved: None,
                    });
                }
                Err(e) => tracked.push(Tracked {
                    object: o.clone(),
                    namespace: o.namespace.clone(),
                    stream: None,
                    unresolved: Some(e.to_string()),
                }),
            }
        }
        let keys: BTreeSet<StreamKey> = tracked.iter().filter_map(|t| t.stream.clone()).collect();
        let mut to_start = Vec::new();
        {
            let mut state = self.state();
            for key in keys {
                if !state.streams.contains_key(&key) {
                    to_start.push(key);
                }
            }
            state.set_owner(
                owner,
                Some(OwnerEntry {
                    objects: tracked.clone(),
                    manifest: manifest.iter().map(compact).collect(),
                    checks: checks.to_vec(),
                    drift: drift.clone(),
                }),
            );
            state.changed.mark(owner);
        }
        for key in to_start {
            self.start(key).await;
        }
        self.stop_unused();
        tracked
    }

    /// Whether the namespaced kind of `o` is watched cluster-wide: yes unless listing it
    /// cluster-wide is forbidden (RBAC scoped to namespaces, as deploy/examples/narrow-rbac),
    /// found with one `LIST ?limit=1` per kind, remembered. An API that fails for a moment
    /// gives per-namespace watches this time and is asked again at the next track.
    async fn cluster_wide(&self, o: &ObjectRef, ar: &kube::discovery::ApiResource) -> bool {
        let kind = (o.api_version.clone(), o.kind.clone());
        if let Some(known) = self.state().cluster_wide.get(&kind) {
            return *known;
        }
        let api: Api<DynamicObject> = Api::all_with(self.inner.client.clone(), ar);
        let retry = crate::kube_api::InPlaceRetry::default();
        let one = kube::api::ListParams::default().limit(1);
        let probe = crate::kube_api::retry_unavailable(&retry, || api.list_metadata(&one)).await;
        let mut state = self.state();
        match probe {
            Ok(_) => {
                state.cluster_wide.insert(kind, true);
                true
            }
            Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
                tracing::info!(kind = %o.kind, api_version = %o.api_version, "listing this kind cluster-wide is forbidden; watching it per namespace");
                state.cluster_wide.insert(kind, false);
                false
            }
            Err(e) => {
                tracing::debug!(kind = %o.kind, error = %e, "could not tell whether this kind can be watched cluster-wide; watching it per namespace for now");
                false
            }
        }
    }

    /// Whether an object `owner` tracks has no watch: its kind could not be resolved (not
    /// served yet, or discovery failed for a moment) or its watch could not start. Such an
    /// object changes no watch; [`Watches::track`] again resolves it.
    pub fn unwatched(&self, owner: &Owner) -> bool {
        let state = self.state();
        state.owners.get(owner).is_some_and(|entry| {
            entry.objects.iter().any(|t| match &t.stream {
                None => true,
                Some(key) => !state.streams.contains_key(key),
            })
        })
    }

    /// `owner` tracks nothing any more (its release was removed).
    pub fn untrack(&self, owner: &Owner) {
        self.state().set_owner(owner, None);
        self.stop_unused();
    }

    /// The newest record of a release in helm's storage, as the metadata watch of helm's
    /// storage Secrets sees it: `Some(None)` when it has none, `Some(Some((version,
    /// status)))`, or `None` while the watch has not listed (or cannot: RBAC). The watch starts
    /// at the first call.
    pub fn record_head(&self, namespace: &str, release: &str) -> Option<Option<(u64, String)>> {
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        if !records.started {
            records.started = true;
            drop(records);
            self.start_records();
            return None;
        }
        if !records.synced {
            return None;
        }
        Some(
            records
                .releases
                .get(&(namespace.to_string(), release.to_string()))
                .and_then(|v| v.iter().next_back())
                .map(|(version, meta)| {
                    let status = meta
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("status"))
                        .cloned()
                        .unwrap_or_default();
                    (*version, status)
                }),
        )
    }

    /// The storage Secrets (metadata only) of every release whose newest record carries
    /// every label of `selector` (`k=v,k=v`), for [`crate::executor::releases::managed_from_secrets`];
    /// `None` while the watch has not listed.
    pub fn record_secrets(
        &self,
        selector: &str,
    ) -> Option<Vec<k8s_openapi::api::core::v1::Secret>> {
        let records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        if !records.synced {
            return None;
        }
        let wanted: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        Some(
            records
                .releases
                .values()
                .filter_map(|versions| versions.iter().next_back())
                .filter(|(_, meta)| {
                    meta.labels.as_ref().is_some_and(|l| {
                        wanted
                            .iter()
                            .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                    })
                })
                .map(|(_, meta)| k8s_openapi::api::core::v1::Secret {
                    metadata: meta.clone(),
                    ..Default::default()
                })
                .collect(),
        )
    }

    fn start_records(&self) {
        let inner = Arc::downgrade(&self.inner);
        let api: Api<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>> =
            Api::all(self.inner.client.clone());
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default().labels("owner=helm"))
                .backoff(watch_backoff());
            futures::pin_mut!(stream);
            let mut buffer = Records::default();
            while let Some(event) = stream.next().await {
                let Some(inner) = inner.upgrade() else { return };
                let mut records = inner.records.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(watcher::Event::Init) => buffer = Records::default(),
                    Ok(watcher::Event::InitApply(o)) => buffer.apply(o.metadata),
                    Ok(watcher::Event::InitDone) => {
                        records.releases = std::mem::take(&mut buffer.releases);
                        records.synced = true;
                    }
                    Ok(watcher::Event::Apply(o)) => records.apply(o.metadata),
                    Ok(watcher::Event::Delete(o)) => records.delete(&o.metadata),
                    Err(e) => {
                        tracing::debug!(error = %e, "watch of helm's release records failed; restarting it");
                    }
                }
            }
        });
    }

    /// The client the watches use.
    pub fn client(&self) -> kube::Client {
        self.inner.client.clone()
    }

    /// The releases one of whose tracked objects changed (or whose watch listed again or
    /// failed), and those that tracked anew, since the last call. For a follower of every
    /// release (live health), so a change costs work for the releases it concerns only.
    pub fn take_changed(&self) -> std::collections::HashSet<Owner> {
        std::mem::take(&mut self.state().changed.since_taken)
    }

    /// When something `owner` tracks last changed, as an opaque stamp: a new value means a
    /// change (of a tracked object, or its watch listed again or failed, or a new track).
    pub fn stamp(&self, owner: &Owner) -> u64 {
        self.state().changed.stamps.get(owner).copied().unwrap_or(0)
    }

    /// Wait until something `owner` tracks changed after its stamp was `seen` (at once when
    /// that already happened). Other releases' changes wake this only to look at the stamp:
    /// a release waiting for its objects costs nothing per change of another release's.
    /// `Err` when the watches are gone. Cancel-safe.
    pub async fn changed_for(
        &self,
        changes: &mut watch::Receiver<u64>,
        owner: &Owner,
        seen: u64,
    ) -> Result<(), watch::error::RecvError> {
        loop {
            changes.borrow_and_update();
            if self.stamp(owner) != seen {
                return Ok(());
            }
            changes.changed().await?;
        }
    }

    /// The releases that track objects.
    pub fn owners(&self) -> Vec<Owner> {
        self.state().owners.keys().cloned().collect()
    }

    /// Number of open watches (one per kind and namespace).
    pub fn streams(&self) -> usize {
        self.state().streams.len()
    }

    fn stop_unused(&self) {
        let mut state = self.state();
        let State {
            streams, tracked, ..
        } = &mut *state;
        streams.retain(|key, stream| {
            let keep = tracked.contains_key(key);
            if !keep {
                stream.task.abort();
                tracing::debug!(kind = %key.kind, namespace = ?key.namespace, "watch stopped: no release has objects of it");
            }
            keep
        });
    }

    async fn start(&self, key: StreamKey) {
        let object = ObjectRef {
            api_version: key.api_version.clone(),
            kind: key.kind.clone(),
            name: String::new(),
            namespace: key.namespace.clone(),
        };
        let Ok((ar, _)) = self.inner.reader.resolve(&object).await else {
            return;
        };
        let api: Api<DynamicObject> = match &key.namespace {
            None => Api::all_with(self.inner.client.clone(), &ar),
            Some(ns) => Api::namespaced_with(self.inner.client.clone(), ns, &ar),
        };
        let inner = Arc::downgrade(&self.inner);
        let task_key = key.clone();
        let mut state = self.state();
        if state.streams.contains_key(&key) {
            return;
        }
        let task = tokio::spawn(async move {
            // helm's release records are Secrets too, and big: never sent to a Secret watch.
            let mut config = watcher::Config::default();
            if task_key.kind == "Secret" && task_key.api_version == "v1" {
                config = config.labels("owner!=helm");
            }
            let stream = watcher(api, config).backoff(watch_backoff());
            futures::pin_mut!(stream);
            let mut buffer: HashMap<ObjectKey, Compact> = HashMap::new();
            while let Some(event) = stream.next().await {
                let Some(inner) = inner.upgrade() else { return };
                let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
                let State {
                    streams,
                    tracked,
                    changed,
                    ..
                } = &mut *state;
                let Some(s) = streams.get_mut(&task_key) else {
                    return;
                };
                let tracked = tracked.get(&task_key);
                let mut touched = |key: &ObjectKey| {
                    if let Some(owners) = tracked.and_then(|t| t.get(key)) {
                        for o in owners {
                            changed.mark(o);
                        }
                    }
                };
                let kept = |o: DynamicObject| {
                    let key = (
                        o.metadata.namespace.clone(),
                        o.metadata.name.clone().unwrap_or_default(),
                    );
                    let keep = is_helm_managed(&o.metadata)
                        || tracked.is_some_and(|t| t.contains_key(&key));
                    (key, keep.then(|| stored(o, &task_key)))
                };
                match event {
                    Ok(watcher::Event::Init) => buffer.clear(),
                    Ok(watcher::Event::InitApply(o)) => {
                        if let (key, Some(v)) = kept(o) {
                            buffer.insert(key, v);
                        }
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        s.objects = std::mem::take(&mut buffer);
                        s.objects.shrink_to_fit();
                        s.synced = true;
                        s.last_error = None;
                        for owners in tracked.into_iter().flat_map(HashMap::values) {
                            for o in owners {
                                changed.mark(o);
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(o)) => {
                        let key = match kept(o) {
                            (key, Some(v)) => {
                                s.objects.insert(key.clone(), v);
                                key
                            }
                            (key, None) => {
                                s.objects.remove(&key);
                                key
                            }
                        };
                        touched(&key);
                        s.last_error = None;
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        let key = (o.metadata.namespace, o.metadata.name.unwrap_or_default());
                        s.objects.remove(&key);
                        touched(&key);
                    }
                    Err(e) => {
                        tracing::debug!(kind = %task_key.kind, namespace = ?task_key.namespace, error = %e, "watch failed; restarting it");
                        s.last_error = Some(e.to_string());
                        for owners in tracked.into_iter().flat_map(HashMap::values) {
                            for o in owners {
                                changed.mark(o);
                            }
                        }
                    }
                }
                drop(state);
                Self::bump(&inner);
            }
        });
        tracing::debug!(kind = %key.kind, namespace = ?key.namespace, "watch started");
        state.streams.insert(
            key,
            Stream {
                objects: HashMap::new(),
                synced: false,
                last_error: None,
                task: task.abort_handle(),
            },
        );
    }

    /// The live health of every object `owner` tracks, in manifest order (`None` when it
    /// tracks nothing).
    pub fn assess(&self, owner: &Owner) -> Option<Vec<(Tracked, Readiness)>> {
        let (objects, checks) = {
            let state = self.state();
            let entry = state.owners.get(owner)?;
            (entry.objects.clone(), entry.checks.clone())
        };
        Some(
            objects
                .into_iter()
                .map(|t| {
                    let verdict = verdict(&self.lookup(&t), &t, &checks);
                    (t, verdict)
                })
                .collect(),
        )
    }

    /// Every object `owner` tracks with its manifest object and what the watches see, and
    /// its drift policy (`None` when it tracks nothing).
    pub fn observe(
        &self,
        owner: &Owner,
    ) -> Option<(Vec<Observed>, strata_core::drift::DriftPolicy)> {
        let (objects, manifest, drift) = {
            let state = self.state();
            let entry = state.owners.get(owner)?;
            (
                entry.objects.clone(),
                entry.manifest.clone(),
                entry.drift.clone(),
            )
        };
        Some((
            objects
                .into_iter()
                .zip(manifest)
                .map(|(tracked, manifest)| Observed {
                    live: self.lookup(&tracked),
                    tracked,
                    manifest: expand(&manifest),
                })
                .collect(),
            drift,
        ))
    }

    /// The object as the watches see it.
    pub fn lookup(&self, t: &Tracked) -> Lookup {
        let Some(key) = &t.stream else {
            return Lookup::Unknown {
                reason: t
                    .unresolved
                    .clone()
                    .unwrap_or_else(|| "its kind is not served".into()),
            };
        };
        let state = self.state();
        match state.streams.get(key) {
            None => Lookup::Unknown {
                reason: "not watched".into(),
            },
            Some(s) if !s.synced => Lookup::Unknown {
                reason: match &s.last_error {
                    Some(e) => format!("not observed yet (watch failing: {e})"),
                    None => "not observed yet".into(),
                },
            },
            Some(s) => match s.objects.get(&(t.namespace.clone(), t.object.name.clone())) {
                Some(v) => Lookup::Present(expand(v)),
                None => Lookup::Absent,
            },
        }
    }
}

/// Whether helm installed the object: helm (3.2 and later, and 4) annotates everything it
/// installs with its release's name and namespace.
fn is_helm_managed(meta: &kube::api::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("meta.helm.sh/release-name"))
}

/// An object as the watches keep it: with its type ([`with_type`]), without `managedFields`
/// (nothing reads them, and they are often the larger part of an object).
fn stored(mut o: DynamicObject, key: &StreamKey) -> Compact {
    o.metadata.managed_fields = None;
    serde_json::to_string(&with_type(o, &key.api_version, &key.kind))
        .unwrap_or_default()
        .into_boxed_str()
}

/// The waits before a failed watch is started again: from 200 ms (a moment of unavailable
/// API ends quickly, and readiness waits on these watches) doubling to 30 s (kind to a
/// struggling API server), with jitter; every event resets them. kube's default starts at
/// 800 ms.
pub fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// The readiness of one tracked object from what its watch sees: kstatus rules or the
/// release's custom health check when it exists; a missing object is in progress ("not
/// found"), one not observed yet too.
pub fn verdict(
    lookup: &Lookup,
    t: &Tracked,
    checks: &[strata_core::health::HealthCheck],
) -> Readiness {
    match lookup {
        Lookup::Present(live) => strata_core::readiness::assess_with(live, checks),
        Lookup::Absent => Readiness::InProgress {
            reason: format!("{} {}: {MISSING}", t.object.kind, t.object.name),
        },
        Lookup::Unknown { reason } => Readiness::InProgress {
            reason: format!("{} {}: {reason}", t.object.kind, t.object.name),
        },
    }
}

/// The reason of an object the cluster does not have.
pub const MISSING: &str = "not found";

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for s in state.streams.values() {
            s.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(objects: &[(&str, &str)]) -> OwnerEntry {
        OwnerEntry {
            objects: objects
                .iter()
                .map(|(ns, name)| Tracked {
                    object: ObjectRef {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        name: (*name).into(),
                        namespace: Some((*ns).into()),
                    },
                    namespace: Some((*ns).into()),
                    stream: Some(key()),
                    unresolved: None,
                })
                .collect(),
            manifest: Vec::new(),
            checks: Vec::new(),
            drift: Default::default(),
        }
    }

    fn key() -> StreamKey {
        StreamKey {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: None,
        }
    }

    fn owners_of(state: &State, ns: &str, name: &str) -> Vec<Owner> {
        state
            .tracked
            .get(&key())
            .and_then(|t| t.get(&(Some(ns.into()), name.into())))
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn the_index_follows_each_release_without_rebuilding() {
        let a: Owner = ("ns".into(), "a".into());
        let b: Owner = ("ns".into(), "b".into());
        let mut state = State::default();
        state.set_owner(&a, Some(entry(&[("ns", "shared"), ("ns", "only-a")])));
        state.set_owner(&b, Some(entry(&[("ns", "shared")])));
        assert_eq!(
            owners_of(&state, "ns", "shared"),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(owners_of(&state, "ns", "only-a"), vec![a.clone()]);

        // A new manifest of `a` drops an object: it is no longer tracked.
        state.set_owner(&a, Some(entry(&[("ns", "shared")])));
        assert!(owners_of(&state, "ns", "only-a").is_empty());
        assert_eq!(
            owners_of(&state, "ns", "shared"),
            vec![b.clone(), a.clone()]
        );

        // Tracking the same manifest again does not count the release twice.
        state.set_owner(&a, Some(entry(&[("ns", "shared")])));
        assert_eq!(owners_of(&state, "ns", "shared").len(), 2);

        state.set_owner(&b, None);
        assert_eq!(owners_of(&state, "ns", "shared"), vec![a.clone()]);
        state.set_owner(&a, None);
        // Nobody tracks anything of the watch: it is unused.
        assert!(!state.tracked.contains_key(&key()));
        assert!(state.owners.is_empty());
    }

    #[test]
    fn each_release_has_its_own_change_stamp() {
        let a: Owner = ("ns".into(), "a".into());
        let b: Owner = ("ns".into(), "b".into());
        let mut state = State::default();
        state.set_owner(&a, Some(entry(&[("ns", "x")])));
        state.set_owner(&b, Some(entry(&[("ns", "y")])));
        state.changed.mark(&a);
        let (a1, b0) = (
            state.changed.stamps[&a],
            state.changed.stamps.get(&b).copied(),
        );
        state.changed.mark(&b);
        // b's change leaves a's stamp alone.
        assert_eq!(state.changed.stamps[&a], a1);
        assert_ne!(state.changed.stamps.get(&b).copied(), b0);
        // Tracked anew after being dropped: never the stamp a waiter saw before.
        state.set_owner(&a, None);
        assert!(!state.changed.stamps.contains_key(&a));
        state.set_owner(&a, Some(entry(&[("ns", "x")])));
        state.changed.mark(&a);
        assert!(state.changed.stamps[&a] > a1);
        assert_eq!(
            state.changed.since_taken,
            [a.clone(), b.clone()].into_iter().collect()
        );
    }

    #[test]
    fn only_helm_managed_objects_are_kept_and_without_managed_fields() {
        let mut o = DynamicObject {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some("x".into()),
                namespace: Some("ns".into()),
                managed_fields: Some(vec![Default::default()]),
                ..Default::default()
            },
            data: serde_json::json!({"data": {"k": "v"}}),
        };
        assert!(!is_helm_managed(&o.metadata));
        o.metadata.annotations = Some(
            [("meta.helm.sh/release-name".to_string(), "r".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(is_helm_managed(&o.metadata));
        let v = expand(&stored(o, &key()));
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["data"]["k"], "v");
        assert!(v["metadata"].get("managedFields").is_none());
    }
}
