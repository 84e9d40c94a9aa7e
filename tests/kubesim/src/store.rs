//! The object store: every object as `serde_json::Value`, keyed by resource (group + plural),
//! namespace and name, with the API server's write rules.
//!
//! Public API (what simulated controllers and the HTTP layer call):
//! - [`Store`] (cheap `Clone`), [`Store::new`] / `Store::default()`.
//! - Reads: [`Store::get`], [`Store::list`] (objects + current resourceVersion),
//!   [`Store::dump`], [`Store::resource_version`].
//! - Writes (full API semantics, watch events, resourceVersion bumps):
//!   [`Store::create`], [`Store::update`] (409 on stale `metadata.resourceVersion` when given,
//!   unconditional without), [`Store::update_status`] (only `.status` changes),
//!   [`Store::update_with`] / [`Store::update_status_with`] (read-modify-write with retries),
//!   [`Store::delete`] with a [`Propagation`]. The `*_opts` variants take [`WriteOptions`]
//!   (dry run) and [`DeleteOptions`] (preconditions, dry run).
//! - Change feed: [`Store::subscribe`] gives a `broadcast::Receiver<WatchEvent>` of every
//!   ADDED / MODIFIED / DELETED. A receiver that falls behind gets `RecvError::Lagged`.
//! - Kinds: [`Store::resource_for_kind`] (`"apps/v1"`, `"Deployment"`) -> [`ResourceKey`],
//!   [`Store::resource_info`], [`Store::registry`].
//!
//! Rules implemented here: defaults (see `defaults.rs`), uid/creationTimestamp/generation/
//! resourceVersion, generateName, namespace existence and termination, finalizers and
//! deletionTimestamp, ownerReference garbage collection (Background/Foreground/Orphan),
//! status subresource separation, immutable Secrets/ConfigMaps, size limits, CRDs served as
//! soon as they are created (Established/NamesAccepted already True) and their objects removed
//! when the CRD goes.

use crate::error::{ApiError, Result};
use crate::registry::{Registry, ResourceInfo, ResourceKey};
use crate::util::{Rng, now_rfc3339};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Largest serialized object accepted (etcd's request limit as the API server sees it).
pub const MAX_OBJECT_BYTES: usize = 1_572_864;
/// Largest total `data` of a Secret or ConfigMap.
pub const MAX_DATA_BYTES: usize = 1_048_576;

/// Kind of change in the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventKind {
    /// `ADDED` / `MODIFIED` / `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// ADDED / MODIFIED / DELETED.
    pub kind: EventKind,
    /// Which resource.
    pub resource: ResourceKey,
    /// The object after the change (for DELETED: the last state, with the deletion's
    /// resourceVersion).
    pub object: Arc<Value>,
    /// The global resourceVersion of this change.
    pub resource_version: u64,
}

impl WatchEvent {
    /// `metadata.namespace` of the object, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }

    /// `metadata.name` of the object.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }
}

/// Deletion propagation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Owner removed at once, dependents deleted after it.
    #[default]
    Background,
    /// Owner kept (deletionTimestamp + `foregroundDeletion` finalizer) until blocking
    /// dependents are gone.
    Foreground,
    /// Dependents keep living; their ownerReferences to the owner are removed.
    Orphan,
}

impl Propagation {
    /// Parses `Background` / `Foreground` / `Orphan`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

/// Options for create and update.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and default, do not persist.
    pub dry_run: bool,
}

/// Options for delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Propagation policy.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Outcome of a delete.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Value),
    /// The object still exists (finalizers, foreground deletion, namespace termination):
    /// it now carries a deletionTimestamp.
    Pending(Value),
}

impl Deleted {
    /// The object in either case.
    pub fn object(&self) -> &Value {
        match self {
            Deleted::Gone(v) | Deleted::Pending(v) => v,
        }
    }
}

/// Store tuning.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Events kept for watches that resume from a resourceVersion.
    pub history_size: usize,
    /// Buffer of the change feed per subscriber before it lags.
    pub feed_capacity: usize,
    /// Delay before a Terminating namespace's contents are deleted.
    pub namespace_cleanup_delay: Duration,
    /// Seed for names, uids and IPs (None: from the clock).
    pub seed: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_size: 10_000,
            feed_capacity: 16_384,
            namespace_cleanup_delay: Duration::from_millis(50),
            seed: None,
        }
    }
}

type ObjKey = (String, String);

struct State {
    registry: Registry,
    objects: HashMap<ResourceKey, BTreeMap<ObjKey, Value>>,
    uids: HashMap<String, (ResourceKey, ObjKey)>,
    rv: u64,
    history: VecDeque<WatchEvent>,
    compacted_rv: u64,
    cluster_ips: HashSet<String>,
    next_ip: u32,
    node_ports: HashSet<i64>,
    ns_cleaned: HashSet<String>,
    rng: Rng,
}

struct Inner {
    state: Mutex<State>,
    tx: broadcast::Sender<WatchEvent>,
    cfg: StoreConfig,
}

/// The in-memory object store (cheap to clone; all clones share state).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(StoreConfig::default())
    }
}

fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str().filter(|s| !s.is_empty())
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let o = obj.as_object_mut().expect("object");
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("metadata object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is_deleting(obj: &Value) -> bool {
    meta(obj)["deletionTimestamp"].is_string()
}

fn owner_uids(obj: &Value) -> Vec<(String, bool)> {
    meta(obj)["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    r["uid"].as_str().map(|u| {
                        (
                            u.to_string(),
                            r["blockOwnerDeletion"].as_bool() == Some(true),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The part of an object that `metadata.generation` follows (all but metadata and status).
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn name_problem(res: &ResourceKey, name: &str) -> Option<String> {
    let label_only =
        res.group.is_empty() && matches!(res.resource.as_str(), "namespaces" | "services");
    let is_service = res.group.is_empty() && res.resource == "services";
    if is_service && !(is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())) {
        return Some(format!(
            "Invalid value: \"{name}\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ));
    }
    let ok = if label_only {
        is_dns_label(name)
    } else if res.group == "rbac.authorization.k8s.io" {
        !name.is_empty()
            && !name.contains('/')
            && !name.contains('%')
            && name != "."
            && name != ".."
    } else if res.group.is_empty() && matches!(res.resource.as_str(), "events") {
        !name.is_empty() && !name.contains('/')
    } else {
        // Custom resources and most kinds: DNS subdomain (uppercase is rejected).
        is_dns_subdomain(name)
    };
    if ok {
        return None;
    }
    Some(if label_only {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    } else {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    })
}

impl State {
    fn info(&self, res: &ResourceKey) -> Result<ResourceInfo> {
        self.registry.get(res).cloned().ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
    }

    fn obj_key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> ObjKey {
        let ns = if info.namespaced {
            ns.unwrap_or("")
        } else {
            ""
        };
        (ns.to_string(), name.to_string())
    }

    fn get(&self, res: &ResourceKey, key: &ObjKey) -> Option<&Value> {
        self.objects.get(res).and_then(|m| m.get(key))
    }

    fn by_uid(&self, uid: &str) -> Option<(ResourceKey, ObjKey)> {
        self.uids.get(uid).cloned()
    }

    /// Records a change: bumps the resourceVersion, stores or removes the object, appends to
    /// history and publishes it.
    fn commit(
        &mut self,
        inner_tx: &broadcast::Sender<WatchEvent>,
        history: usize,
        res: &ResourceKey,
        kind: EventKind,
        mut obj: Value,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let key: ObjKey = (
            meta_str(&obj, "namespace").unwrap_or("").to_string(),
            meta_str(&obj, "name").unwrap_or("").to_string(),
        );
        let uid = meta_str(&obj, "uid").map(String::from);
        match kind {
            EventKind::Deleted => {
                if let Some(m) = self.objects.get_mut(res) {
                    m.remove(&key);
                }
                if let Some(u) = &uid {
                    self.uids.remove(u);
                }
                if res.group.is_empty() && res.resource == "services" {
                    for ip in obj["spec"]["clusterIPs"].as_array().into_iter().flatten() {
                        if let Some(ip) = ip.as_str() {
                            self.cluster_ips.remove(ip);
                        }
                    }
                    for p in obj["spec"]["ports"].as_array().into_iter().flatten() {
                        if let Some(n) = p["nodePort"].as_i64() {
                            self.node_ports.remove(&n);
                        }
                    }
                }
            }
            _ => {
                self.objects
                    .entry(res.clone())
                    .or_default()
                    .insert(key.clone(), obj.clone());
                if let Some(u) = uid {
                    self.uids.insert(u, (res.clone(), key));
                }
            }
        }
        let ev = WatchEvent {
            kind,
            resource: res.clone(),
            object: Arc::new(obj.clone()),
            resource_version: rv,
        };
        self.history.push_back(ev.clone());
        while self.history.len() > history {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.resource_version;
            }
        }
        let _ = inner_tx.send(ev);
        obj
    }

    fn allocate_ip(&mut self) -> String {
        loop {
            self.next_ip += 1;
            if self.next_ip >= 65_000 {
                self.next_ip = 2;
            }
            let ip = format!("10.96.{}.{}", self.next_ip / 254, self.next_ip % 254 + 1);
            if self.cluster_ips.insert(ip.clone()) {
                return ip;
            }
        }
    }

    fn allocate_node_port(&mut self) -> i64 {
        loop {
            let p = 30_000 + self.rng.below(2_768) as i64;
            if self.node_ports.insert(p) {
                return p;
            }
        }
    }
}

impl Store {
    /// A store holding the default namespaces (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) and the `default/kubernetes` Service.
    pub fn new(cfg: StoreConfig) -> Self {
        let (tx, _) = broadcast::channel(cfg.feed_capacity.max(16));
        let rng = cfg.seed.map(Rng::seeded).unwrap_or_else(Rng::from_entropy);
        let state = State {
            registry: Registry::builtin(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            compacted_rv: 0,
            cluster_ips: HashSet::new(),
            next_ip: 10,
            node_ports: HashSet::new(),
            ns_cleaned: HashSet::new(),
            rng,
        };
        let store = Store {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                tx,
                cfg,
            }),
        };
        let ns = ResourceKey::new("", "namespaces");
        for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(
                    &ns,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}),
                )
                .expect("default namespace");
        }
        store
            .create(
                &ResourceKey::new("", "services"),
                json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
            )
            .expect("kubernetes service");
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the registry of served resources.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// The resource for `apiVersion` + `kind`, e.g. (`"apps/v1"`, `"Deployment"`).
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Option<ResourceKey> {
        self.lock()
            .registry
            .for_kind(api_version, kind)
            .map(|r| r.key())
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup_resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<ResourceInfo> {
        self.lock().registry.lookup(group, version, plural).cloned()
    }

    /// What the server knows about a resource.
    pub fn resource_info(&self, res: &ResourceKey) -> Option<ResourceInfo> {
        self.lock().registry.get(res).cloned()
    }

    /// The current (latest) global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object (namespace ignored for cluster-scoped resources).
    pub fn get(&self, res: &ResourceKey, ns: Option<&str>, name: &str) -> Option<Value> {
        let st = self.lock();
        let info = st.registry.get(res)?;
        let key = State::obj_key(info, ns, name);
        st.get(res, &key).cloned()
    }

    /// All objects of a resource (in one namespace, or all when `ns` is None), sorted by
    /// namespace and name, and the resourceVersion of this snapshot.
    pub fn list(&self, res: &ResourceKey, ns: Option<&str>) -> (Vec<Value>, u64) {
        let st = self.lock();
        let items = match st.objects.get(res) {
            None => Vec::new(),
            Some(m) => match ns {
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
                None => m.values().cloned().collect(),
            },
        };
        (items, st.rv)
    }

    /// Every stored object, grouped by resource (`"deployments.apps"` -> objects).
    pub fn dump(&self) -> Value {
        let st = self.lock();
        let mut out = Map::new();
        let mut keys: Vec<&ResourceKey> = st.objects.keys().collect();
        keys.sort();
        for k in keys {
            let items: Vec<Value> = st.objects[k].values().cloned().collect();
            if !items.is_empty() {
                out.insert(k.to_string(), Value::Array(items));
            }
        }
        Value::Object(out)
    }

    /// A receiver of every future change.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.inner.tx.subscribe()
    }

    /// The retained events after `rv` plus a receiver for later ones, atomically (no gap, no
    /// duplicate). `410 Expired` if `rv` is older than the retained history.
    pub fn watch_from(
        &self,
        rv: u64,
    ) -> Result<(Vec<WatchEvent>, broadcast::Receiver<WatchEvent>)> {
        let st = self.lock();
        if rv < st.compacted_rv {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                st.compacted_rv + 1
            )));
        }
        let events = st
            .history
            .iter()
            .filter(|e| e.resource_version > rv)
            .cloned()
            .collect();
        Ok((events, self.inner.tx.subscribe()))
    }

    /// The objects of a resource (as [`Store::list`]) and a receiver of every later change,
    /// atomically (no change is missed or seen twice).
    pub fn list_and_subscribe(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
    ) -> (Vec<Value>, u64, broadcast::Receiver<WatchEvent>) {
        let st = self.lock();
        let rx = self.inner.tx.subscribe();
        let items = match st.objects.get(res) {
            None => Vec::new(),
            Some(m) => match ns {
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
                None => m.values().cloned().collect(),
            },
        };
        (items, st.rv, rx)
    }

    /// The oldest resourceVersion a watch can still resume from.
    pub fn oldest_resource_version(&self) -> u64 {
        self.lock().compacted_rv
    }

    /// Creates an object (POST semantics).
    pub fn create(&self, res: &ResourceKey, obj: Value) -> Result<Value> {
        self.create_opts(res, obj, WriteOptions::default())
    }

    /// Creates an object with options.
    pub fn create_opts(&self, res: &ResourceKey, obj: Value, opts: WriteOptions) -> Result<Value> {
        let mut st = self.lock();
        let out = self.create_locked(&mut st, res, obj, opts)?;
        Ok(out)
    }

    fn create_locked(
        &self,
        st: &mut State,
        res: &ResourceKey,
        mut obj: Value,
        opts: WriteOptions,
    ) -> Result<Value> {
        let info = st.info(res)?;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        {
            let o = obj.as_object_mut().expect("object");
            if o.get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                o.insert("kind".into(), json!(info.kind));
            }
            if o.get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                o.insert(
                    "apiVersion".into(),
                    json!(info.api_version(info.preferred_version())),
                );
            }
        }
        let ns = if info.namespaced {
            let ns = meta_str(&obj, "namespace")
                .map(String::from)
                .ok_or_else(|| {
                    ApiError::bad_request("an empty namespace may not be set during creation")
                })?;
            Some(ns)
        } else {
            meta_mut(&mut obj).remove("namespace");
            None
        };
        // Name / generateName.
        let mut name = meta_str(&obj, "name").map(String::from);
        if name.is_none()
            && let Some(prefix) = meta_str(&obj, "generateName").map(String::from)
        {
            loop {
                let candidate = format!("{prefix}{}", st.rng.name_suffix(5));
                let key = State::obj_key(&info, ns.as_deref(), &candidate);
                if st.get(res, &key).is_none() {
                    name = Some(candidate);
                    break;
                }
            }
        }
        let Some(name) = name else {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                "",
                vec![ApiError::cause(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        };
        if let Some(p) = name_problem(res, &name) {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                vec![ApiError::cause("FieldValueInvalid", "metadata.name", p)],
            ));
        }
        meta_mut(&mut obj).insert("name".into(), json!(name));
        if let Some(ns) = &ns {
            let nsres = ResourceKey::new("", "namespaces");
            match st.get(&nsres, &(String::new(), ns.clone())) {
                None => return Err(ApiError::not_found("", "namespaces", ns)),
                Some(n) if is_deleting(n) => {
                    let mut e = ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        crate::error::qualified(&info.group, &info.plural)
                    ));
                    e.name = Some(name.clone());
                    e.kind = Some(info.plural.clone());
                    e.group = Some(info.group.clone()).filter(|g| !g.is_empty());
                    e.causes = vec![ApiError::cause(
                        "NamespaceTerminating",
                        "metadata.namespace",
                        format!("namespace {ns} is being terminated"),
                    )];
                    return Err(e);
                }
                Some(_) => {}
            }
        }
        let key = State::obj_key(&info, ns.as_deref(), &name);
        if st.get(res, &key).is_some() {
            return Err(ApiError::already_exists(&info.group, &info.plural, &name));
        }
        {
            let uid = st.rng.uuid();
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
            m.remove("selfLink");
            if info.generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if info.status
            && !(res.group.is_empty() && res.resource == "namespaces")
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        crate::defaults::apply(res, &mut obj, None, &mut DefaultCtx { st })?;
        check_size(&info, &name, &obj)?;
        if opts.dry_run {
            return Ok(obj);
        }
        let is_crd =
            res.group == "apiextensions.k8s.io" && res.resource == "customresourcedefinitions";
        if is_crd {
            st.registry.register_crd(&obj).map_err(|why| {
                ApiError::invalid(
                    &info.group,
                    &info.kind,
                    &name,
                    vec![ApiError::cause("FieldValueInvalid", "spec", why)],
                )
            })?;
        }
        let history = self.inner.cfg.history_size;
        Ok(st.commit(&self.inner.tx, history, res, EventKind::Added, obj))
    }

    /// Replaces an object (PUT semantics). For resources with a status subresource the status
    /// is kept from the stored object.
    pub fn update(&self, res: &ResourceKey, obj: Value) -> Result<Value> {
        self.update_opts(res, obj, WriteOptions::default())
    }

    /// Replaces an object with options.
    pub fn update_opts(&self, res: &ResourceKey, obj: Value, opts: WriteOptions) -> Result<Value> {
        let mut st = self.lock();
        self.update_locked(&mut st, res, obj, opts, false)
    }

    /// Replaces only `.status` of an object (PUT `.../status`); `generation` is untouched.
    pub fn update_status(&self, res: &ResourceKey, obj: Value) -> Result<Value> {
        self.update_status_opts(res, obj, WriteOptions::default())
    }

    /// Replaces only `.status`, with options.
    pub fn update_status_opts(
        &self,
        res: &ResourceKey,
        obj: Value,
        opts: WriteOptions,
    ) -> Result<Value> {
        let mut st = self.lock();
        self.update_locked(&mut st, res, obj, opts, true)
    }

    /// Read-modify-write of a whole object: `f` gets the current object and changes it; the
    /// write is an update conditioned on the resourceVersion read, retried on conflict.
    pub fn update_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        f: impl FnMut(&mut Value),
    ) -> Result<Value> {
        self.modify(res, ns, name, f, false)
    }

    /// Read-modify-write of `.status` (like [`Store::update_with`] on the status subresource).
    pub fn update_status_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        f: impl FnMut(&mut Value),
    ) -> Result<Value> {
        self.modify(res, ns, name, f, true)
    }

    fn modify(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        mut f: impl FnMut(&mut Value),
        status: bool,
    ) -> Result<Value> {
        let mut st = self.lock();
        let info = st.info(res)?;
        let key = State::obj_key(&info, ns, name);
        let mut obj = st
            .get(res, &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        f(&mut obj);
        self.update_locked(&mut st, res, obj, WriteOptions::default(), status)
    }

    fn update_locked(
        &self,
        st: &mut State,
        res: &ResourceKey,
        mut obj: Value,
        opts: WriteOptions,
        status_only: bool,
    ) -> Result<Value> {
        let info = st.info(res)?;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let name = meta_str(&obj, "name")
            .map(String::from)
            .ok_or_else(|| ApiError::bad_request("name is required for an update"))?;
        let ns = if info.namespaced {
            meta_str(&obj, "namespace").map(String::from)
        } else {
            None
        };
        let key = State::obj_key(&info, ns.as_deref(), &name);
        let old = st
            .get(res, &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &name))?;
        if let Some(rv) = meta_str(&obj, "resourceVersion")
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(&info.group, &info.plural, &name));
        }
        if let (Some(u), Some(ou)) = (meta_str(&obj, "uid"), meta_str(&old, "uid"))
            && u != ou
        {
            return Err(ApiError::conflict_msg(
                &info.group,
                &info.plural,
                &name,
                &format!("Precondition failed: UID in precondition: {u}, UID in object meta: {ou}"),
            ));
        }
        let mut new = if status_only {
            let mut n = old.clone();
            match obj.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            n
        } else {
            {
                let o = obj.as_object_mut().expect("object");
                if o.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    o.insert("kind".into(), old["kind"].clone());
                }
                if o.get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    o.insert("apiVersion".into(), old["apiVersion"].clone());
                }
            }
            let m = meta_mut(&mut obj);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old["metadata"].get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            if let Some(ns) = &ns {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            if info.status {
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        obj.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            check_immutable(&info, &name, &old, &obj)?;
            crate::defaults::apply(res, &mut obj, Some(&old), &mut DefaultCtx { st })?;
            if info.generation && spec_part(&obj) != spec_part(&old) {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta_mut(&mut obj).insert("generation".into(), json!(g));
            }
            // Finalizers cannot be added to an object that is being deleted.
            if is_deleting(&old) {
                let old_f = finalizers(&old);
                let new_f = finalizers(&obj);
                if new_f.iter().any(|f| !old_f.contains(f)) {
                    return Err(ApiError::invalid(
                        &info.group,
                        &info.kind,
                        &name,
                        vec![ApiError::cause(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being deleted",
                        )],
                    ));
                }
            }
            obj
        };
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        check_size(&info, &name, &new)?;
        if new == old {
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(new);
        }
        let history = self.inner.cfg.history_size;
        if is_deleting(&new) && finalizers(&new).is_empty() {
            let gone = self.remove_locked(st, res, new);
            return Ok(gone);
        }
        let is_crd =
            res.group == "apiextensions.k8s.io" && res.resource == "customresourcedefinitions";
        if is_crd && !status_only {
            let _ = st.registry.register_crd(&new);
        }
        let out = st.commit(&self.inner.tx, history, res, EventKind::Modified, new);
        if finalizers(&old).iter().any(|f| f == "foregroundDeletion") {
            self.try_finish_foreground(st, res, &key);
        }
        Ok(out)
    }

    /// Deletes an object (Background propagation unless told otherwise).
    pub fn delete(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        propagation: Propagation,
    ) -> Result<Deleted> {
        self.delete_opts(
            res,
            ns,
            name,
            DeleteOptions {
                propagation,
                ..DeleteOptions::default()
            },
        )
    }

    /// Deletes an object with options.
    pub fn delete_opts(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        opts: DeleteOptions,
    ) -> Result<Deleted> {
        let (out, cleanup) = {
            let mut st = self.lock();
            self.delete_locked(&mut st, res, ns, name, &opts)?
        };
        if let Some(nsname) = cleanup {
            self.schedule_namespace_cleanup(nsname);
        }
        Ok(out)
    }

    fn delete_locked(
        &self,
        st: &mut State,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Deleted, Option<String>)> {
        let info = st.info(res)?;
        let key = State::obj_key(&info, ns, name);
        let obj = st
            .get(res, &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        if let Some(uid) = &opts.uid
            && meta_str(&obj, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict_msg(
                &info.group,
                &info.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && meta_str(&obj, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict_msg(
                &info.group,
                &info.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion").unwrap_or("")
                ),
            ));
        }
        if opts.dry_run {
            return Ok((Deleted::Gone(obj), None));
        }
        let history = self.inner.cfg.history_size;
        let is_ns = res.group.is_empty() && res.resource == "namespaces";
        if is_ns {
            if matches!(name, "default" | "kube-system" | "kube-public") {
                return Err(ApiError::forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            if is_deleting(&obj) {
                return Ok((Deleted::Pending(obj), None));
            }
            let mut n = obj;
            let m = meta_mut(&mut n);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            n["status"]["phase"] = json!("Terminating");
            let out = st.commit(&self.inner.tx, history, res, EventKind::Modified, n);
            return Ok((Deleted::Pending(out), Some(name.to_string())));
        }
        let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
        if opts.propagation == Propagation::Orphan {
            self.orphan_dependents(st, &uid);
        }
        let fins = finalizers(&obj);
        let foreground = opts.propagation == Propagation::Foreground;
        if is_deleting(&obj) {
            // Already being deleted: a foreground request adds the finalizer.
            if foreground && !fins.iter().any(|f| f == "foregroundDeletion") {
                let mut n = obj;
                let mut f = fins;
                f.push("foregroundDeletion".into());
                meta_mut(&mut n).insert("finalizers".into(), json!(f));
                let out = st.commit(&self.inner.tx, history, res, EventKind::Modified, n);
                self.delete_dependents(st, &uid, Propagation::Foreground);
                self.try_finish_foreground(st, res, &key);
                let cur = st.get(res, &key).cloned();
                return Ok((
                    cur.map(Deleted::Pending).unwrap_or(Deleted::Gone(out)),
                    None,
                ));
            }
            return Ok((Deleted::Pending(obj), None));
        }
        if fins.is_empty() && !foreground {
            let gone = self.remove_locked(st, res, obj);
            return Ok((Deleted::Gone(gone), None));
        }
        let mut n = obj;
        let mut f = fins;
        if foreground {
            f.push("foregroundDeletion".into());
        }
        {
            let m = meta_mut(&mut n);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("finalizers".into(), json!(f));
        }
        if info.generation {
            let g = n["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut n).insert("generation".into(), json!(g));
        }
        let marked = st.commit(&self.inner.tx, history, res, EventKind::Modified, n);
        if foreground {
            self.delete_dependents(st, &uid, Propagation::Foreground);
            self.try_finish_foreground(st, res, &key);
        }
        match st.get(res, &key) {
            Some(cur) => Ok((Deleted::Pending(cur.clone()), None)),
            None => Ok((Deleted::Gone(marked), None)),
        }
    }

    /// Removes an object for good, then collects garbage it leaves behind.
    fn remove_locked(&self, st: &mut State, res: &ResourceKey, obj: Value) -> Value {
        let history = self.inner.cfg.history_size;
        let is_crd =
            res.group == "apiextensions.k8s.io" && res.resource == "customresourcedefinitions";
        if is_crd && let Ok(info) = crate::registry::crd_resource(&obj) {
            let key = info.key();
            let objs: Vec<Value> = st
                .objects
                .get(&key)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            for o in objs {
                st.commit(&self.inner.tx, history, &key, EventKind::Deleted, o);
            }
            st.objects.remove(&key);
            st.registry.unregister(&key);
        }
        let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
        let owners: Vec<String> = owner_uids(&obj).into_iter().map(|(u, _)| u).collect();
        let ns = meta_str(&obj, "namespace").map(String::from);
        let gone = st.commit(&self.inner.tx, history, res, EventKind::Deleted, obj);
        // Dependents whose owners are all gone.
        self.delete_dependents(st, &uid, Propagation::Background);
        // Owners waiting in foreground deletion.
        for o in owners {
            if let Some((ores, okey)) = st.by_uid(&o) {
                self.try_finish_foreground(st, &ores, &okey);
            }
        }
        // A terminating namespace that is now empty goes away.
        if let Some(ns) = ns {
            self.try_finish_namespace(st, &ns);
        }
        gone
    }

    fn dependents(st: &State, uid: &str) -> Vec<(ResourceKey, ObjKey, bool)> {
        let mut out = Vec::new();
        if uid.is_empty() {
            return out;
        }
        for (res, m) in &st.objects {
            for (k, v) in m {
                for (u, block) in owner_uids(v) {
                    if u == uid {
                        out.push((res.clone(), k.clone(), block));
                    }
                }
            }
        }
        out
    }

    fn delete_dependents(&self, st: &mut State, uid: &str, propagation: Propagation) {
        for (res, key, _) in Self::dependents(st, uid) {
            let Some(obj) = st.get(&res, &key).cloned() else {
                continue;
            };
            let other_owner_alive = owner_uids(&obj)
                .iter()
                .any(|(u, _)| u != uid && st.uids.contains_key(u));
            if other_owner_alive {
                continue;
            }
            if is_deleting(&obj) && propagation != Propagation::Foreground {
                continue;
            }
            let ns = if key.0.is_empty() {
                None
            } else {
                Some(key.0.clone())
            };
            let _ = self.delete_locked(
                st,
                &res,
                ns.as_deref(),
                &key.1,
                &DeleteOptions {
                    propagation,
                    ..DeleteOptions::default()
                },
            );
        }
    }

    fn orphan_dependents(&self, st: &mut State, uid: &str) {
        let history = self.inner.cfg.history_size;
        for (res, key, _) in Self::dependents(st, uid) {
            let Some(mut obj) = st.get(&res, &key).cloned() else {
                continue;
            };
            let refs: Vec<Value> = obj["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r["uid"].as_str() != Some(uid))
                .collect();
            let m = meta_mut(&mut obj);
            if refs.is_empty() {
                m.remove("ownerReferences");
            } else {
                m.insert("ownerReferences".into(), Value::Array(refs));
            }
            st.commit(&self.inner.tx, history, &res, EventKind::Modified, obj);
        }
    }

    fn try_finish_foreground(&self, st: &mut State, res: &ResourceKey, key: &ObjKey) {
        let Some(obj) = st.get(res, key).cloned() else {
            return;
        };
        let fins = finalizers(&obj);
        if !fins.iter().any(|f| f == "foregroundDeletion") || !is_deleting(&obj) {
            return;
        }
        let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
        let blocked = Self::dependents(st, &uid)
            .iter()
            .any(|(_, _, block)| *block);
        if blocked {
            return;
        }
        let rest: Vec<String> = fins
            .into_iter()
            .filter(|f| f != "foregroundDeletion")
            .collect();
        let mut n = obj;
        if rest.is_empty() {
            meta_mut(&mut n).remove("finalizers");
            self.remove_locked(st, res, n);
        } else {
            meta_mut(&mut n).insert("finalizers".into(), json!(rest));
            let history = self.inner.cfg.history_size;
            st.commit(&self.inner.tx, history, res, EventKind::Modified, n);
        }
    }

    fn namespace_is_empty(st: &State, ns: &str) -> bool {
        !st.objects.iter().any(|(res, m)| {
            !(res.group.is_empty() && res.resource == "namespaces")
                && m.range((ns.to_string(), String::new())..)
                    .next()
                    .is_some_and(|((n, _), _)| n == ns)
        })
    }

    fn try_finish_namespace(&self, st: &mut State, ns: &str) {
        let nsres = ResourceKey::new("", "namespaces");
        let key = (String::new(), ns.to_string());
        let Some(n) = st.get(&nsres, &key).cloned() else {
            return;
        };
        if !is_deleting(&n) || !finalizers(&n).is_empty() || !st.ns_cleaned.contains(ns) {
            return;
        }
        if Self::namespace_is_empty(st, ns) {
            st.ns_cleaned.remove(ns);
            let history = self.inner.cfg.history_size;
            st.commit(&self.inner.tx, history, &nsres, EventKind::Deleted, n);
        }
    }

    fn schedule_namespace_cleanup(&self, ns: String) {
        let store = self.clone();
        let delay = self.inner.cfg.namespace_cleanup_delay;
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    tokio::time::sleep(delay).await;
                    store.cleanup_namespace(&ns);
                });
            }
            Err(_) => store.cleanup_namespace(&ns),
        }
    }

    /// Deletes everything in a Terminating namespace; the namespace goes once it is empty
    /// (at once, or when the last object held by finalizers is removed).
    fn cleanup_namespace(&self, ns: &str) {
        let mut st = self.lock();
        let nsres = ResourceKey::new("", "namespaces");
        let key = (String::new(), ns.to_string());
        if st.get(&nsres, &key).is_none() {
            return;
        }
        let mut targets = Vec::new();
        for (res, m) in &st.objects {
            if res.group.is_empty() && res.resource == "namespaces" {
                continue;
            }
            for (k, _) in m.range((ns.to_string(), String::new())..) {
                if k.0 != ns {
                    break;
                }
                targets.push((res.clone(), k.1.clone()));
            }
        }
        for (res, name) in targets {
            let _ = self.delete_locked(&mut st, &res, Some(ns), &name, &DeleteOptions::default());
        }
        st.ns_cleaned.insert(ns.to_string());
        self.try_finish_namespace(&mut st, ns);
    }
}

/// Access to allocation state for defaulting.
pub(crate) struct DefaultCtx<'a> {
    st: &'a mut State,
}

impl DefaultCtx<'_> {
    /// A fresh unique ClusterIP from 10.96.0.0/16.
    pub(crate) fn allocate_ip(&mut self) -> String {
        self.st.allocate_ip()
    }

    /// Marks an explicitly requested ClusterIP as used (false if already taken).
    pub(crate) fn claim_ip(&mut self, ip: &str) -> bool {
        self.st.cluster_ips.insert(ip.to_string())
    }

    /// A fresh NodePort in 30000-32767.
    pub(crate) fn allocate_node_port(&mut self) -> i64 {
        self.st.allocate_node_port()
    }

    /// A random uid.
    pub(crate) fn uuid(&mut self) -> String {
        self.st.rng.uuid()
    }
}

fn check_size(info: &ResourceInfo, name: &str, obj: &Value) -> Result<()> {
    let is_cm = info.group.is_empty() && info.plural == "configmaps";
    let is_secret = info.group.is_empty() && info.plural == "secrets";
    if is_cm || is_secret {
        let mut total = 0usize;
        for field in ["data", "binaryData"] {
            if let Some(m) = obj[field].as_object() {
                for (k, v) in m {
                    total += k.len();
                    let s = v.as_str().unwrap_or("");
                    total += if is_secret || field == "binaryData" {
                        s.len() * 3 / 4
                    } else {
                        s.len()
                    };
                }
            }
        }
        if total > MAX_DATA_BYTES {
            let field = if is_secret { "data" } else { "[]" };
            return Err(ApiError::invalid(
                "",
                &info.kind,
                name,
                vec![ApiError::cause(
                    "FieldValueTooLong",
                    field,
                    format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
                )],
            ));
        }
    }
    let size = serde_json::to_vec(obj).map(|v| v.len()).unwrap_or(0);
    if size > MAX_OBJECT_BYTES {
        return Err(ApiError::too_large("etcdserver: request is too large"));
    }
    Ok(())
}

fn check_immutable(info: &ResourceInfo, name: &str, old: &Value, new: &Value) -> Result<()> {
    if !(info.group.is_empty() && matches!(info.plural.as_str(), "secrets" | "configmaps")) {
        return Ok(());
    }
    if old["immutable"].as_bool() != Some(true) {
        return Ok(());
    }
    let mut causes = Vec::new();
    if new["immutable"].as_bool() != Some(true) {
        causes.push(ApiError::cause(
            "FieldValueForbidden",
            "immutable",
            "Forbidden: field is immutable when `immutable` is set",
        ));
    }
    let fields: &[&str] = if info.plural == "secrets" {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    for f in fields {
        let mut nv = new[*f].clone();
        if info.plural == "secrets" && *f == "data" {
            // stringData is folded into data by defaulting; compare what would be stored.
            if let Some(sd) = new["stringData"].as_object() {
                use base64::Engine;
                for (k, v) in sd {
                    nv[k.as_str()] = json!(
                        base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""))
                    );
                }
            }
        }
        if nv != old[*f] {
            causes.push(ApiError::cause(
                "FieldValueForbidden",
                f,
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("", &info.kind, name, causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"a": "1"}})
    }

    fn deploy(name: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    }

    fn owned(name: &str, owner: &Value, block: bool) -> Value {
        let mut c = cm(name);
        c["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true,
            "blockOwnerDeletion": block}]);
        c
    }

    fn cms() -> ResourceKey {
        ResourceKey::new("", "configmaps")
    }
    fn deps() -> ResourceKey {
        ResourceKey::new("apps", "deployments")
    }

    #[test]
    fn create_sets_metadata_and_defaults() {
        let s = Store::default();
        let d = s.create(&deps(), deploy("web")).unwrap();
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["metadata"]["labels"]["app"], "web");
        assert!(d["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(
            d["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        let rv: u64 = d["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rv, s.resource_version());
        let err = s.create(&deps(), deploy("web")).unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
        let c = s.create(&cms(), cm("x")).unwrap();
        assert!(c["metadata"].get("generation").is_none());
    }

    #[test]
    fn generate_name_and_missing_namespace() {
        let s = Store::default();
        let mut o = cm("");
        o["metadata"] = json!({"generateName": "gen-", "namespace": "default"});
        let c = s.create(&cms(), o).unwrap();
        let n = c["metadata"]["name"].as_str().unwrap();
        assert!(n.starts_with("gen-") && n.len() == 9);
        let mut o = cm("y");
        o["metadata"]["namespace"] = json!("nope");
        let e = s.create(&cms(), o).unwrap_err();
        assert_eq!(e.code, 404);
        assert_eq!(e.message, "namespaces \"nope\" not found");
        let e = s.create(&cms(), cm("Bad_Name")).unwrap_err();
        assert_eq!(e.code, 422);
        let e = s
            .create(
                &ResourceKey::new("", "services"),
                json!({"metadata": {"name": "1svc", "namespace": "default"}}),
            )
            .unwrap_err();
        assert!(e.message.contains("DNS-1035"), "{}", e.message);
    }

    #[test]
    fn generation_moves_on_spec_changes_only() {
        let s = Store::default();
        let d = s.create(&deps(), deploy("web")).unwrap();
        let mut d2 = d.clone();
        d2["metadata"]["labels"]["extra"] = json!("x");
        let d2 = s.update(&deps(), d2).unwrap();
        assert_eq!(d2["metadata"]["generation"], 1);
        let mut d3 = d2.clone();
        d3["spec"]["replicas"] = json!(3);
        let d3 = s.update(&deps(), d3).unwrap();
        assert_eq!(d3["metadata"]["generation"], 2);
        let mut st = d3.clone();
        st["status"] = json!({"observedGeneration": 2});
        let st = s.update_status(&deps(), st).unwrap();
        assert_eq!(st["metadata"]["generation"], 2);
        assert_eq!(st["status"]["observedGeneration"], 2);
        // main-resource writes ignore status
        let mut d4 = st.clone();
        d4["status"] = json!({"observedGeneration": 99});
        let d4 = s.update(&deps(), d4).unwrap();
        assert_eq!(d4["status"]["observedGeneration"], 2);
        // stale resourceVersion -> 409, none -> unconditional
        let e = s.update(&deps(), d.clone()).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        let mut u = d.clone();
        u["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        u["spec"]["replicas"] = json!(5);
        assert_eq!(s.update(&deps(), u).unwrap()["spec"]["replicas"], 5);
    }

    #[test]
    fn unchanged_update_is_a_no_op() {
        let s = Store::default();
        let c = s.create(&cms(), cm("a")).unwrap();
        let rv = s.resource_version();
        let again = s.update(&cms(), c.clone()).unwrap();
        assert_eq!(again, c);
        assert_eq!(rv, s.resource_version());
    }

    #[test]
    fn finalizers_hold_deletion() {
        let s = Store::default();
        let mut o = cm("f");
        o["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.create(&cms(), o).unwrap();
        let d = s
            .delete(&cms(), Some("default"), "f", Propagation::Background)
            .unwrap();
        let Deleted::Pending(p) = d else {
            panic!("expected pending")
        };
        assert!(p["metadata"]["deletionTimestamp"].is_string());
        let mut p2 = p.clone();
        p2["metadata"]["finalizers"] = json!([]);
        s.update(&cms(), p2).unwrap();
        assert!(s.get(&cms(), Some("default"), "f").is_none());
    }

    #[test]
    fn background_gc_deletes_dependents() {
        let s = Store::default();
        let d = s.create(&deps(), deploy("web")).unwrap();
        s.create(&cms(), owned("dep1", &d, true)).unwrap();
        s.create(&cms(), cm("free")).unwrap();
        let r = s
            .delete(&deps(), Some("default"), "web", Propagation::Background)
            .unwrap();
        assert!(matches!(r, Deleted::Gone(_)));
        assert!(s.get(&cms(), Some("default"), "dep1").is_none());
        assert!(s.get(&cms(), Some("default"), "free").is_some());
    }

    #[test]
    fn foreground_waits_for_blocking_dependents() {
        let s = Store::default();
        let d = s.create(&deps(), deploy("web")).unwrap();
        let mut dep = owned("dep1", &d, true);
        dep["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.create(&cms(), dep).unwrap();
        let r = s
            .delete(&deps(), Some("default"), "web", Propagation::Foreground)
            .unwrap();
        let Deleted::Pending(p) = r else {
            panic!("owner should wait")
        };
        assert!(
            p["metadata"]["finalizers"]
                .as_array()
                .unwrap()
                .contains(&json!("foregroundDeletion"))
        );
        // dependent is being deleted but held by its finalizer
        let held = s.get(&cms(), Some("default"), "dep1").unwrap();
        assert!(held["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&deps(), Some("default"), "web").is_some());
        s.update_with(&cms(), Some("default"), "dep1", |o| {
            o["metadata"]["finalizers"] = json!([]);
        })
        .unwrap();
        assert!(s.get(&cms(), Some("default"), "dep1").is_none());
        assert!(s.get(&deps(), Some("default"), "web").is_none());
    }

    #[test]
    fn orphan_removes_owner_references() {
        let s = Store::default();
        let d = s.create(&deps(), deploy("web")).unwrap();
        s.create(&cms(), owned("dep1", &d, true)).unwrap();
        s.delete(&deps(), Some("default"), "web", Propagation::Orphan)
            .unwrap();
        let c = s.get(&cms(), Some("default"), "dep1").unwrap();
        assert!(c["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn immutable_configmap_rejects_data_changes() {
        let s = Store::default();
        let mut o = cm("imm");
        o["immutable"] = json!(true);
        let c = s.create(&cms(), o).unwrap();
        let mut c2 = c.clone();
        c2["data"]["a"] = json!("2");
        let e = s.update(&cms(), c2).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("field is immutable when `immutable` is set"),
            "{}",
            e.message
        );
        let mut c3 = c.clone();
        c3["metadata"]["labels"] = json!({"x": "y"});
        s.update(&cms(), c3).unwrap();
    }

    #[test]
    fn oversized_objects_are_rejected() {
        let s = Store::default();
        let mut o = cm("big");
        o["data"]["a"] = json!("x".repeat(1_100_000));
        assert_eq!(s.create(&cms(), o).unwrap_err().code, 422);
        let mut d = deploy("big");
        d["metadata"]["annotations"] = json!({"a": "x".repeat(1_600_000)});
        let e = s.create(&deps(), d).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (413, "etcdserver: request is too large")
        );
    }

    #[test]
    fn secrets_fold_string_data_and_services_get_cluster_ips() {
        let s = Store::default();
        let sec = s
            .create(&ResourceKey::new("", "secrets"), json!({"metadata": {"name": "s", "namespace": "default"}, "stringData": {"k": "v"}}))
            .unwrap();
        assert_eq!(sec["data"]["k"], "dg==");
        assert_eq!(sec["type"], "Opaque");
        assert!(sec.get("stringData").is_none());
        let svc = ResourceKey::new("", "services");
        let a = s.create(&svc, json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})).unwrap();
        let b = s.create(&svc, json!({"metadata": {"name": "b", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})).unwrap();
        assert_ne!(a["spec"]["clusterIP"], b["spec"]["clusterIP"]);
        assert!(
            a["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.96.")
        );
        assert_eq!(a["spec"]["type"], "ClusterIP");
        assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);
        // an update without clusterIP keeps it
        let mut a2 = a.clone();
        a2["spec"].as_object_mut().unwrap().remove("clusterIP");
        a2["spec"].as_object_mut().unwrap().remove("clusterIPs");
        a2["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert_eq!(
            s.update(&svc, a2).unwrap()["spec"]["clusterIP"],
            a["spec"]["clusterIP"]
        );
    }

    #[test]
    fn job_defaults() {
        let s = Store::default();
        let j = s
            .create(&ResourceKey::new("batch", "jobs"), json!({"metadata": {"name": "j", "namespace": "default"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}))
            .unwrap();
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        let uid = j["metadata"]["uid"].clone();
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid
        );
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j");
    }

    #[tokio::test]
    async fn namespace_termination() {
        let s = Store::default();
        let ns = ResourceKey::new("", "namespaces");
        let n = s.create(&ns, json!({"metadata": {"name": "t"}})).unwrap();
        assert_eq!(n["status"]["phase"], "Active");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/metadata.name"], "t");
        let mut o = cm("a");
        o["metadata"]["namespace"] = json!("t");
        s.create(&cms(), o.clone()).unwrap();
        let d = s.delete(&ns, None, "t", Propagation::Background).unwrap();
        assert_eq!(d.object()["status"]["phase"], "Terminating");
        let mut o2 = o.clone();
        o2["metadata"]["name"] = json!("b");
        let e = s.create(&cms(), o2).unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("because it is being terminated"),
            "{}",
            e.message
        );
        let mut rx = s.subscribe();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if ev.kind == EventKind::Deleted && ev.resource == ns {
                break;
            }
        }
        assert!(s.get(&ns, None, "t").is_none());
        assert!(s.get(&cms(), Some("t"), "a").is_none());
    }

    #[test]
    fn crd_is_served_at_once_and_takes_its_objects_along() {
        let s = Store::default();
        let crds = ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions");
        let crd = s
            .create(&crds, json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]}}))
            .unwrap();
        let conds = crd["status"]["conditions"].as_array().unwrap();
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        );
        let w = s.resource_for_kind("example.com/v1", "Widget").unwrap();
        s.create(&w, json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "default"}})).unwrap();
        assert_eq!(s.list(&w, None).0.len(), 1);
        s.delete(&crds, None, "widgets.example.com", Propagation::Background)
            .unwrap();
        assert!(s.resource_for_kind("example.com/v1", "Widget").is_none());
        assert!(s.list(&w, None).0.is_empty());
    }

    #[test]
    fn watch_history_replays_and_expires() {
        let s = Store::new(StoreConfig {
            history_size: 5,
            ..StoreConfig::default()
        });
        let rv0 = s.resource_version();
        for i in 0..3 {
            s.create(&cms(), cm(&format!("c{i}"))).unwrap();
        }
        let (evs, _rx) = s.watch_from(rv0).unwrap();
        assert_eq!(evs.len(), 3);
        assert!(evs.iter().all(|e| e.kind == EventKind::Added));
        for i in 3..10 {
            s.create(&cms(), cm(&format!("c{i}"))).unwrap();
        }
        let e = s.watch_from(rv0).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    }
}
