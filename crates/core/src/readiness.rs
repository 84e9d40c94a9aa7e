//! Readiness of one Kubernetes object, following kstatus (the rules helm 4's watcher uses):
//! see "Readiness, as helm judges it" in the simulated cluster design.
//!
//! - An object being deleted, or whose `status.observedGeneration` differs from
//!   `metadata.generation`, is in progress.
//! - Deployment, StatefulSet, DaemonSet, ReplicaSet: replica counts, rollout conditions.
//! - Pod: Running and Ready, or Succeeded; Failed is failed.
//! - Job: `Complete=True` ready, `Failed=True` failed.
//! - PersistentVolumeClaim: Bound. Service: a LoadBalancer needs an ingress address.
//! - CustomResourceDefinition: `Established=True`. Namespace: Active.
//! - Other kinds: the generic conditions (`Stalled=True` failed, `Reconciling=True` or
//!   `Ready=False` in progress); no status at all means ready.
//!
//! Reasons are for humans: `Deployment cert-manager/webhook: 0/1 replicas available`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The verdict for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Readiness {
    Ready,
    InProgress { reason: String },
    Failed { reason: String },
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    s(v, path).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    s(v, path).and_then(Value::as_str)
}

/// A condition of `status.conditions`: (status, reason, message).
fn condition<'a>(obj: &'a Value, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    s(obj, &["status", "conditions"])?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| {
            (
                c.get("status").and_then(Value::as_str).unwrap_or(""),
                c.get("reason").and_then(Value::as_str).unwrap_or(""),
                c.get("message").and_then(Value::as_str).unwrap_or(""),
            )
        })
}

fn is_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind).is_some_and(|(st, _, _)| st == "True")
}

fn with_detail(base: String, reason: &str, message: &str) -> String {
    match (reason.is_empty(), message.is_empty()) {
        (true, true) => base,
        (false, true) => format!("{base}: {reason}"),
        (true, false) => format!("{base}: {message}"),
        (false, false) => format!("{base}: {reason}: {message}"),
    }
}

/// Assess one object with the profile's custom health checks: an object whose apiVersion and
/// kind has a check is judged by its CEL expressions alone (see [`crate::health::evaluate`]),
/// except that an object being deleted is in progress; every other object by [`assess`].
pub fn assess_with(obj: &Value, checks: &[crate::health::HealthCheck]) -> Readiness {
    if checks.is_empty() {
        return assess(obj);
    }
    match crate::health::evaluate(obj, checks) {
        Some(_) if s(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null()) => {
            assess(obj)
        }
        Some(verdict) => verdict,
        None => assess(obj),
    }
}

/// Assess one object (as JSON from the API server).
pub fn assess(obj: &Value) -> Readiness {
    let kind = text(obj, &["kind"]).unwrap_or("Object");
    let api_version = text(obj, &["apiVersion"]).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let name = text(obj, &["metadata", "name"]).unwrap_or("?");
    let id = match text(obj, &["metadata", "namespace"]) {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    };
    let progress = |what: String| Readiness::InProgress {
        reason: format!("{id}: {what}"),
    };
    let failed = |what: String| Readiness::Failed {
        reason: format!("{id}: {what}"),
    };

    if s(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null()) {
        return progress("being deleted".into());
    }
    if let (Some(generation), Some(observed)) = (
        int(obj, &["metadata", "generation"]),
        int(obj, &["status", "observedGeneration"]),
    ) && generation != observed
    {
        return progress(format!(
            "generation {generation} not observed yet (controller has seen {observed})"
        ));
    }

    let core = group.is_empty();
    let apps = matches!(group, "apps" | "extensions") || api_version.is_empty();
    let status = s(obj, &["status"]);
    match kind {
        "Deployment" if apps => deployment(obj, progress, failed),
        "StatefulSet" if apps => statefulset(obj, progress),
        "DaemonSet" if apps => daemonset(obj, progress),
        "ReplicaSet" if apps => {
            let want = int(obj, &["spec", "replicas"]).unwrap_or(1);
            let ready = int(obj, &["status", "readyReplicas"]).unwrap_or(0);
            let available = int(obj, &["status", "availableReplicas"]).unwrap_or(0);
            if status.is_none() && want > 0 {
                progress("no status yet".into())
            } else if available < want {
                progress(format!("{available}/{want} replicas available"))
            } else if ready < want {
                progress(format!("{ready}/{want} replicas ready"))
            } else {
                Readiness::Ready
            }
        }
        "Pod" if core => pod(obj, progress, failed),
        "Job" if group == "batch" || api_version.is_empty() => {
            if let Some((st, reason, message)) = condition(obj, "Failed")
                && st == "True"
            {
                return failed(with_detail("failed".into(), reason, message));
            }
            if is_true(obj, "Complete") {
                return Readiness::Ready;
            }
            let want = int(obj, &["spec", "completions"]).unwrap_or(1);
            let done = int(obj, &["status", "succeeded"]).unwrap_or(0);
            let active = int(obj, &["status", "active"]).unwrap_or(0);
            progress(format!("{done}/{want} completions, {active} active"))
        }
        "PersistentVolumeClaim" if core => match text(obj, &["status", "phase"]) {
            Some("Bound") => Readiness::Ready,
            Some("Lost") => failed("the bound volume is lost".into()),
            Some(p) => progress(format!("phase {p}, not Bound")),
            None => progress("not Bound yet".into()),
        },
        "Service" if core => {
            let typ = text(obj, &["spec", "type"]).unwrap_or("ClusterIP");
            if typ == "ExternalName" {
                return Readiness::Ready;
            }
            if typ == "LoadBalancer" {
                let has_ingress = s(obj, &["status", "loadBalancer", "ingress"])
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if !has_ingress {
                    return progress("waiting for a load balancer address".into());
                }
            }
            if text(obj, &["spec", "clusterIP"]).is_none_or(str::is_empty) {
                return progress("no cluster IP assigned yet".into());
            }
            Readiness::Ready
        }
        "CustomResourceDefinition" if group == "apiextensions.k8s.io" || api_version.is_empty() => {
            if let Some((st, reason, message)) = condition(obj, "NamesAccepted")
                && st == "False"
            {
                return failed(with_detail("names not accepted".into(), reason, message));
            }
            if is_true(obj, "Established") {
                Readiness::Ready
            } else {
                progress("not Established yet".into())
            }
        }
        "Namespace" if core => match text(obj, &["status", "phase"]) {
            Some("Terminating") => progress("terminating".into()),
            _ => Readiness::Ready,
        },
        _ => generic(obj, progress, failed),
    }
}

fn generic(
    obj: &Value,
    progress: impl Fn(String) -> Readiness,
    failed: impl Fn(String) -> Readiness,
) -> Readiness {
    if let Some((st, reason, message)) = condition(obj, "Stalled")
        && st == "True"
    {
        return failed(with_detail("stalled".into(), reason, message));
    }
    if let Some((st, reason, message)) = condition(obj, "Reconciling")
        && st == "True"
    {
        return progress(with_detail("reconciling".into(), reason, message));
    }
    if let Some((st, reason, message)) = condition(obj, "Ready")
        && st == "False"
    {
        return progress(with_detail("Ready=False".into(), reason, message));
    }
    Readiness::Ready
}

fn deployment(
    obj: &Value,
    progress: impl Fn(String) -> Readiness,
    failed: impl Fn(String) -> Readiness,
) -> Readiness {
    let want = int(obj, &["spec", "replicas"]).unwrap_or(1);
    if let Some((_, reason, message)) = condition(obj, "Progressing")
        && reason == "ProgressDeadlineExceeded"
    {
        return failed(with_detail(
            "progress deadline exceeded".into(),
            "",
            message,
        ));
    }
    let count = |k: &str| int(obj, &["status", k]).unwrap_or(0);
    let (replicas, updated, ready, available) = (
        count("replicas"),
        count("updatedReplicas"),
        count("readyReplicas"),
        count("availableReplicas"),
    );
    if updated < want {
        return progress(format!("{updated}/{want} replicas updated"));
    }
    if replicas > updated {
        return progress(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < want {
        return progress(format!("{available}/{want} replicas available"));
    }
    if ready < want {
        return progress(format!("{ready}/{want} replicas ready"));
    }
    match condition(obj, "Progressing") {
        Some(("True", "NewReplicaSetAvailable", _)) => {}
        _ => {
            return progress(
                "rollout not finished (Progressing is not NewReplicaSetAvailable)".into(),
            );
        }
    }
    if !is_true(obj, "Available") {
        return progress("Available condition is not True".into());
    }
    Readiness::Ready
}

fn statefulset(obj: &Value, progress: impl Fn(String) -> Readiness) -> Readiness {
    let want = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let count = |k: &str| int(obj, &["status", k]).unwrap_or(0);
    let on_delete = text(obj, &["spec", "updateStrategy", "type"]) == Some("OnDelete");
    let ready = count("readyReplicas");
    if ready < want {
        return progress(format!("{ready}/{want} replicas ready"));
    }
    if on_delete {
        return Readiness::Ready;
    }
    let partition = int(
        obj,
        &["spec", "updateStrategy", "rollingUpdate", "partition"],
    )
    .unwrap_or(0);
    let updated = count("updatedReplicas");
    if updated < want - partition {
        return progress(format!("{updated}/{} replicas updated", want - partition));
    }
    if partition == 0 {
        let current = count("currentReplicas");
        if current < want {
            return progress(format!("{current}/{want} replicas at the current revision"));
        }
        let cur = text(obj, &["status", "currentRevision"]);
        let upd = text(obj, &["status", "updateRevision"]);
        if cur != upd {
            return progress(format!(
                "rolling update in progress (revision {} -> {})",
                cur.unwrap_or("?"),
                upd.unwrap_or("?")
            ));
        }
    }
    Readiness::Ready
}

fn daemonset(obj: &Value, progress: impl Fn(String) -> Readiness) -> Readiness {
    let Some(desired) = int(obj, &["status", "desiredNumberScheduled"]) else {
        return progress("no status yet".into());
    };
    let count = |k: &str| int(obj, &["status", k]).unwrap_or(0);
    for (key, label) in [
        ("currentNumberScheduled", "scheduled"),
        ("updatedNumberScheduled", "updated"),
        ("numberAvailable", "available"),
        ("numberReady", "ready"),
    ] {
        let n = count(key);
        if n < desired {
            return progress(format!("{n}/{desired} pods {label}"));
        }
    }
    Readiness::Ready
}

fn pod(
    obj: &Value,
    progress: impl Fn(String) -> Readiness,
    failed: impl Fn(String) -> Readiness,
) -> Readiness {
    let waiting: Vec<String> = s(obj, &["status", "containerStatuses"])
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    let reason = text(c, &["state", "waiting", "reason"])?;
                    let name = text(c, &["name"]).unwrap_or("?");
                    Some(format!("container {name} {reason}"))
                })
                .collect()
        })
        .unwrap_or_default();
    match text(obj, &["status", "phase"]) {
        Some("Succeeded") => Readiness::Ready,
        Some("Failed") => {
            let reason = text(obj, &["status", "reason"]).unwrap_or("");
            let message = text(obj, &["status", "message"]).unwrap_or("");
            failed(with_detail("failed".into(), reason, message))
        }
        Some("Running") if is_true(obj, "Ready") => Readiness::Ready,
        phase => {
            let mut what = format!("{}, not ready", phase.unwrap_or("no phase yet"));
            if !waiting.is_empty() {
                what.push_str(&format!(" ({})", waiting.join(", ")));
            }
            progress(what)
        }
    }
}

#[cfg(test)]
mod tests;
