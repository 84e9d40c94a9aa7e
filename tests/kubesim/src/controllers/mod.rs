//! Simulated controllers: what kube-controller-manager and the kubelet would do, so that
//! helm's readiness checks (kstatus in helm 4, the legacy checks in helm 3) see objects
//! progress as on a real cluster. No container runs; statuses move on timers.
//!
//! - Deployment -> a ReplicaSet per pod-template revision (`<name>-<hash>`, owner-referenced,
//!   `pod-template-hash` label, `deployment.kubernetes.io/revision`), old ones scaled to zero,
//!   full status with `Available` and `Progressing` conditions.
//! - ReplicaSet -> Pods; StatefulSet -> ordered Pods, PVCs from `volumeClaimTemplates`,
//!   a ControllerRevision; DaemonSet -> one Pod per simulated node; Job -> a Pod per attempt,
//!   then `Complete` or `Failed` (`BackoffLimitExceeded`).
//! - Pods -> `Running` and `Ready` (or `Succeeded`/`Failed` for run-to-completion pods);
//!   PVCs -> `Bound`; LoadBalancer Services -> an ingress IP.
//! - CRDs (Established) and Namespaces (Active/Terminating) are handled by the store.
//!
//! Per-object behaviour comes from annotations on the object, its pod template or its owners
//! (see [`model::ANN_READY_AFTER`], [`model::ANN_NEVER_READY`], [`model::ANN_FAIL`]).
//! Each kind's logic is a pure function (`reconcile`/`desired_status` in its module); this
//! module is the thin driver: it follows the store's change feed, reads children, applies
//! the plan and arms timers for delayed transitions.

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod job;
pub mod model;
pub mod pod;
pub mod replicaset;
pub mod simple;
pub mod statefulset;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::registry::ResourceKey;
use crate::store::{Propagation, Store, WatchEvent};
use model::{Behaviour, controlled_by, generation, name, namespace, uid};

/// Global settings of the simulated controllers.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Pod `Pending` -> `Running` (and `Ready`, unless a `ready-after` annotation says later).
    pub pod_start_delay: Duration,
    /// How long a run-to-completion pod (Job pod, helm test pod) runs.
    pub job_duration: Duration,
    /// PVC `Pending` -> `Bound`.
    pub pvc_bind_delay: Duration,
    /// Number of simulated nodes (`kubesim-node-0` ...): DaemonSets run one pod on each.
    pub nodes: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            pod_start_delay: Duration::from_millis(50),
            job_duration: Duration::from_millis(100),
            pvc_bind_delay: Duration::from_millis(50),
            nodes: 1,
        }
    }
}

impl ControllerConfig {
    /// Names of the simulated nodes.
    pub fn node_names(&self) -> Vec<String> {
        (0..self.nodes.max(1)).map(node_name).collect()
    }
}

fn node_name(i: usize) -> String {
    format!("kubesim-node-{i}")
}

fn host_ip(node: &str) -> String {
    let i: u32 = node
        .strip_prefix("kubesim-node-")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    format!("172.18.{}.{}", (i + 2) / 256, (i + 2) % 256)
}

/// Starts the controllers on the current tokio runtime. They run until `shutdown` is
/// cancelled.
pub fn spawn(store: Store, cfg: ControllerConfig, shutdown: CancellationToken) -> JoinHandle<()> {
    let rx = store.subscribe();
    tokio::spawn(async move {
        let mut driver = Driver::new(store, cfg);
        driver.run(rx, shutdown).await;
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    Pod,
    Pvc,
    Service,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::Pod,
        Kind::Pvc,
        Kind::Service,
    ];

    fn resource(self) -> ResourceKey {
        match self {
            Kind::Deployment => ResourceKey::new("apps", "deployments"),
            Kind::ReplicaSet => ResourceKey::new("apps", "replicasets"),
            Kind::StatefulSet => ResourceKey::new("apps", "statefulsets"),
            Kind::DaemonSet => ResourceKey::new("apps", "daemonsets"),
            Kind::Job => ResourceKey::new("batch", "jobs"),
            Kind::Pod => ResourceKey::new("", "pods"),
            Kind::Pvc => ResourceKey::new("", "persistentvolumeclaims"),
            Kind::Service => ResourceKey::new("", "services"),
        }
    }

    fn of_resource(res: &ResourceKey) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.resource() == *res)
    }

    fn of_kind(kind: &str) -> Option<Kind> {
        Some(match kind {
            "Deployment" => Kind::Deployment,
            "ReplicaSet" => Kind::ReplicaSet,
            "StatefulSet" => Kind::StatefulSet,
            "DaemonSet" => Kind::DaemonSet,
            "Job" => Kind::Job,
            _ => return None,
        })
    }
}

type Key = (Kind, String, String);

struct Driver {
    store: Store,
    cfg: ControllerConfig,
    nodes: Vec<String>,
    queue: VecDeque<Key>,
    queued: HashSet<Key>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// Earliest pending timer per key, so repeated reconciles do not pile up timers.
    scheduled: HashMap<Key, Instant>,
    /// uid -> (generation, when this generation was first seen).
    seen: HashMap<String, (i64, Instant)>,
    warned: HashSet<String>,
}

impl Driver {
    fn new(store: Store, cfg: ControllerConfig) -> Self {
        let nodes = cfg.node_names();
        Driver {
            store,
            cfg,
            nodes,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            timers: BinaryHeap::new(),
            scheduled: HashMap::new(),
            seen: HashMap::new(),
            warned: HashSet::new(),
        }
    }

    async fn run(
        &mut self,
        mut rx: tokio::sync::broadcast::Receiver<WatchEvent>,
        shutdown: CancellationToken,
    ) {
        self.resync();
        loop {
            self.drain_queue();
            let next = self
                .timers
                .peek()
                .map(|Reverse((at, _))| *at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => match ev {
                    Ok(ev) => self.on_event(&ev),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "controllers fell behind the change feed; resyncing");
                        self.resync();
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(next) => {}
            }
            // Take everything else already waiting, so one pass handles a burst.
            loop {
                match rx.try_recv() {
                    Ok(ev) => self.on_event(&ev),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => self.resync(),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            while let Some(Reverse((at, _))) = self.timers.peek() {
                if *at > now {
                    break;
                }
                let Some(Reverse((at, key))) = self.timers.pop() else {
                    break;
                };
                if self.scheduled.get(&key) == Some(&at) {
                    self.scheduled.remove(&key);
                }
                self.enqueue(key);
            }
        }
    }

    fn enqueue(&mut self, key: Key) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    fn later(&mut self, key: Key, after: Duration) {
        // A millisecond of slack so the transition is due when the timer fires.
        let now = Instant::now();
        let at = now + after + Duration::from_millis(1);
        if let Some(t) = self.scheduled.get(&key)
            && *t >= now
            && *t <= at
        {
            return;
        }
        self.scheduled.insert(key.clone(), at);
        self.timers.push(Reverse((at, key)));
    }

    fn resync(&mut self) {
        for kind in Kind::ALL {
            let (objs, _) = self.store.list(&kind.resource(), None);
            for o in objs {
                self.enqueue((kind, namespace(&o).to_owned(), name(&o).to_owned()));
            }
        }
    }

    fn on_event(&mut self, ev: &WatchEvent) {
        let obj = &*ev.object;
        let ns = namespace(obj).to_owned();
        if matches!(ev.kind, crate::store::EventKind::Deleted) {
            self.seen.remove(uid(obj));
        }
        if let Some(kind) = Kind::of_resource(&ev.resource) {
            self.enqueue((kind, ns.clone(), name(obj).to_owned()));
        }
        if ev.resource == Kind::Pod.resource() && !ns.is_empty() {
            // Pods feed the Endpoints of the Services selecting them.
            let (svcs, _) = self.store.list(&Kind::Service.resource(), Some(&ns));
            for svc in svcs {
                let selected = svc
                    .pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .is_some_and(|sel| {
                        !sel.is_empty() && endpoints::selects(sel, obj.pointer("/metadata/labels"))
                    });
                if selected {
                    self.enqueue((Kind::Service, ns.clone(), name(&svc).to_owned()));
                }
            }
        }
        if let Some(owner) = model::controller_ref(obj)
            && let (Some(k), Some(n)) = (
                owner
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(Kind::of_kind),
                owner.get("name").and_then(Value::as_str),
            )
        {
            self.enqueue((k, ns, n.to_owned()));
        }
    }

    fn drain_queue(&mut self) {
        while let Some(key) = self.queue.pop_front() {
            self.queued.remove(&key);
            if let Err(e) = self.reconcile(&key) {
                if e.code == 409 {
                    // Someone else wrote in between: look again shortly.
                    self.later(key, Duration::from_millis(5));
                } else {
                    tracing::debug!(kind = ?key.0, namespace = %key.1, name = %key.2, error = %e,
                        "simulated controller could not apply its change");
                }
            }
        }
    }

    /// How long ago this object (at this generation) was first seen.
    fn age(&mut self, obj: &Value, track_generation: bool) -> Duration {
        let generation_now = if track_generation { generation(obj) } else { 0 };
        let now = Instant::now();
        let entry = self
            .seen
            .entry(uid(obj).to_owned())
            .or_insert((generation_now, now));
        if entry.0 != generation_now {
            *entry = (generation_now, now);
        }
        now - entry.1
    }

    /// The object's behaviour: its own annotations, then its pod template's, then its owners'.
    fn behaviour(&mut self, obj: &Value) -> Behaviour {
        let mut b = Behaviour::default();
        let mut current = Some(obj.clone());
        for _ in 0..4 {
            let Some(o) = current.take() else { break };
            for ptr in [
                "/metadata/annotations",
                "/spec/template/metadata/annotations",
            ] {
                let (found, problems) = Behaviour::from_annotations(o.pointer(ptr));
                for p in problems {
                    let msg = format!("{}/{}: {p}", namespace(&o), name(&o));
                    if self.warned.insert(msg.clone()) {
                        tracing::warn!("{msg}");
                    }
                }
                b = b.or(&found);
            }
            current = model::controller_ref(&o).and_then(|r| {
                let kind = Kind::of_kind(r.get("kind")?.as_str()?)?;
                let n = r.get("name")?.as_str()?;
                self.store
                    .get(&kind.resource(), Some(namespace(&o)), n)
                    .filter(|owner| {
                        uid(owner) == r.get("uid").and_then(Value::as_str).unwrap_or("")
                    })
            });
        }
        b
    }

    fn children(&self, kind: Kind, owner: &Value) -> Vec<Value> {
        let (objs, _) = self.store.list(&kind.resource(), Some(namespace(owner)));
        objs.into_iter()
            .filter(|o| controlled_by(o, owner))
            .collect()
    }

    fn write_status(&self, kind: Kind, obj: &Value, status: Value) -> Result<(), Box<ApiError>> {
        if obj.get("status") == Some(&status) {
            return Ok(());
        }
        self.store
            .update_status(&kind.resource(), model::with_status(obj, status))
            .map(|_| ())
            .map_err(Box::new)
    }

    fn create_all(&self, kind: Kind, objs: Vec<Value>) -> Result<(), Box<ApiError>> {
        for o in objs {
            match self.store.create(&kind.resource(), o) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {} // AlreadyExists: a previous pass made it.
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(())
    }

    fn delete_all(&self, kind: Kind, ns: &str, names: &[String]) -> Result<(), Box<ApiError>> {
        for n in names {
            match self
                .store
                .delete(&kind.resource(), Some(ns), n, Propagation::Background)
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(())
    }

    fn node_for(&self, obj: &Value) -> String {
        // Spread by uid so several replicas land on different simulated nodes.
        let h = model::fnv32a(&Value::String(uid(obj).to_owned())) as usize;
        self.nodes[h % self.nodes.len()].clone()
    }

    fn reconcile(&mut self, key: &Key) -> Result<(), Box<ApiError>> {
        let (kind, ns, n) = key;
        let ns_opt = (!ns.is_empty()).then_some(ns.as_str());
        let Some(obj) = self.store.get(&kind.resource(), ns_opt, n) else {
            if *kind == Kind::Service {
                self.delete_endpoints(ns, n)?;
            }
            return Ok(());
        };
        let now = model::rfc3339(SystemTime::now());
        match kind {
            Kind::Pod => {
                if model::terminating(&obj) {
                    return Ok(());
                }
                let age = self.age(&obj, false);
                let b = self.behaviour(&obj);
                let node = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.nodes[0].clone());
                let placement = pod::Placement {
                    host_ip: host_ip(&node),
                    pod_ip: model::ip_for([10, 244], uid(&obj)),
                };
                let timing = pod::PodTiming {
                    start_delay: self.cfg.pod_start_delay,
                    run_duration: self.cfg.job_duration,
                };
                let (status, again) = pod::desired_status(&obj, age, &b, timing, &placement, &now);
                if let Some(d) = again {
                    self.later(key.clone(), d);
                }
                self.write_status(*kind, &obj, status)
            }
            Kind::ReplicaSet => {
                let pods = self.children(Kind::Pod, &obj);
                let node = self.node_for(&obj);
                let plan = replicaset::reconcile(&obj, &pods, &node, SystemTime::now());
                if let Some(d) = plan.requeue {
                    self.later(key.clone(), d);
                }
                self.create_all(Kind::Pod, plan.create)?;
                self.delete_all(Kind::Pod, ns, &plan.delete)?;
                self.write_status(*kind, &obj, plan.status)
            }
            Kind::Deployment => {
                if model::terminating(&obj) {
                    return Ok(());
                }
                let rses = self.children(Kind::ReplicaSet, &obj);
                let age = self.age(&obj, true);
                let plan = deployment::reconcile(&obj, &rses, age, &now);
                if let Some(d) = plan.requeue {
                    self.later(key.clone(), d);
                }
                self.create_all(Kind::ReplicaSet, plan.create)?;
                for rs in plan.update {
                    self.store.update(&Kind::ReplicaSet.resource(), rs)?;
                }
                let obj = match plan.revision {
                    Some(rev) => self.store.update_with(&kind.resource(), ns_opt, n, |d| {
                        if !d["metadata"]["annotations"].is_object() {
                            d["metadata"]["annotations"] = serde_json::json!({});
                        }
                        d["metadata"]["annotations"][deployment::REVISION] =
                            Value::String(rev.clone());
                    })?,
                    None => obj,
                };
                self.write_status(*kind, &obj, plan.status)
            }
            Kind::StatefulSet => {
                let pods = self.children(Kind::Pod, &obj);
                let (claims, _) = self.store.list(&Kind::Pvc.resource(), ns_opt);
                let claims: Vec<String> = claims.iter().map(|c| name(c).to_owned()).collect();
                let revisions =
                    self.children_of(&ResourceKey::new("apps", "controllerrevisions"), &obj);
                let node = self.node_for(&obj);
                let plan = statefulset::reconcile(
                    &obj,
                    &pods,
                    &claims,
                    &revisions,
                    &node,
                    SystemTime::now(),
                );
                if let Some(d) = plan.requeue {
                    self.later(key.clone(), d);
                }
                if let Some(rev) = plan.revision {
                    match self
                        .store
                        .create(&ResourceKey::new("apps", "controllerrevisions"), rev)
                    {
                        Ok(_) => {}
                        Err(e) if e.code == 409 => {}
                        Err(e) => return Err(Box::new(e)),
                    }
                }
                self.create_all(Kind::Pvc, plan.claims)?;
                self.create_all(Kind::Pod, plan.create)?;
                self.delete_all(Kind::Pod, ns, &plan.delete)?;
                self.write_status(*kind, &obj, plan.status)
            }
            Kind::DaemonSet => {
                let pods = self.children(Kind::Pod, &obj);
                let plan = daemonset::reconcile(&obj, &pods, &self.nodes, SystemTime::now());
                if let Some(d) = plan.requeue {
                    self.later(key.clone(), d);
                }
                self.create_all(Kind::Pod, plan.create)?;
                self.delete_all(Kind::Pod, ns, &plan.delete)?;
                self.write_status(*kind, &obj, plan.status)
            }
            Kind::Job => {
                if job::finished(&obj) {
                    return Ok(());
                }
                let pods = self.children(Kind::Pod, &obj);
                let node = self.node_for(&obj);
                let age = self.age(&obj, false);
                let plan = job::reconcile(&obj, &pods, age, &node, &now);
                if let Some(d) = plan.requeue {
                    self.later(key.clone(), d);
                }
                self.create_all(Kind::Pod, plan.create)?;
                self.delete_all(Kind::Pod, ns, &plan.delete)?;
                self.write_status(*kind, &obj, plan.status)
            }
            Kind::Pvc => {
                if model::terminating(&obj) {
                    return Ok(());
                }
                let age = self.age(&obj, false);
                let b = self.behaviour(&obj);
                let (status, again) = simple::pvc_status(&obj, age, self.cfg.pvc_bind_delay, &b);
                if let Some(d) = again {
                    self.later(key.clone(), d);
                }
                self.write_status(*kind, &obj, status)
            }
            Kind::Service => {
                if let Some(status) = simple::service_status(&obj) {
                    self.write_status(*kind, &obj, status)?;
                }
                if model::terminating(&obj) {
                    return Ok(());
                }
                self.sync_endpoints(&obj)
            }
        }
    }

    fn sync_endpoints(&self, svc: &Value) -> Result<(), Box<ApiError>> {
        let ns = namespace(svc);
        let (pods, _) = self.store.list(&Kind::Pod.resource(), Some(ns));
        let ep_res = ResourceKey::new("", "endpoints");
        let Some(want) = endpoints::endpoints(svc, &pods) else {
            return Ok(());
        };
        match self.store.get(&ep_res, Some(ns), name(svc)) {
            None => {
                self.create_all_in(&ep_res, vec![want])?;
            }
            Some(mut have) => {
                let managed = have
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(endpoints::MANAGED_BY))
                    .is_some();
                if managed && have.get("subsets") != want.get("subsets") {
                    match want.get("subsets") {
                        Some(s) => have["subsets"] = s.clone(),
                        None => {
                            if let Some(m) = have.as_object_mut() {
                                m.remove("subsets");
                            }
                        }
                    }
                    self.store.update(&ep_res, have)?;
                }
            }
        }
        let slice_res = ResourceKey::new("discovery.k8s.io", "endpointslices");
        let Some(want) = endpoints::endpoint_slice(svc, &pods) else {
            return Ok(());
        };
        let (slices, _) = self.store.list(&slice_res, Some(ns));
        let mine = slices.into_iter().find(|s| controlled_by(s, svc));
        match mine {
            None => self.create_all_in(&slice_res, vec![want]),
            Some(mut have) => {
                if have.get("endpoints") != want.get("endpoints")
                    || have.get("ports") != want.get("ports")
                {
                    have["endpoints"] = want["endpoints"].clone();
                    have["ports"] = want["ports"].clone();
                    self.store.update(&slice_res, have)?;
                }
                Ok(())
            }
        }
    }

    fn delete_endpoints(&self, ns: &str, svc: &str) -> Result<(), Box<ApiError>> {
        let ep_res = ResourceKey::new("", "endpoints");
        let managed = self.store.get(&ep_res, Some(ns), svc).is_some_and(|ep| {
            ep.pointer("/metadata/labels")
                .and_then(|l| l.get(endpoints::MANAGED_BY))
                .is_some()
        });
        if managed {
            match self
                .store
                .delete(&ep_res, Some(ns), svc, Propagation::Background)
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(())
    }

    fn create_all_in(&self, res: &ResourceKey, objs: Vec<Value>) -> Result<(), Box<ApiError>> {
        for o in objs {
            match self.store.create(res, o) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(())
    }

    fn children_of(&self, res: &ResourceKey, owner: &Value) -> Vec<Value> {
        let (objs, _) = self.store.list(res, Some(namespace(owner)));
        objs.into_iter()
            .filter(|o| controlled_by(o, owner))
            .collect()
    }
}

#[cfg(test)]
mod tests;
