//! Pods: no containers run, but the status moves as the kubelet would report it.
//!
//! Timeline, measured from when the controller first sees the pod:
//! - before `start_delay`: `Pending`, scheduled, containers `ContainerCreating`;
//! - long-running pods (`restartPolicy: Always`, the default): `Running` at `start_delay`,
//!   `Ready` at `max(start_delay, ready-after)`; `never-ready` pods stay unready; `fail` pods
//!   crash-loop (`CrashLoopBackOff`, never ready);
//! - run-to-completion pods (`restartPolicy: Never`/`OnFailure`, e.g. Job pods and helm test
//!   pods): `Running` at `start_delay`, then `Succeeded` (or `Failed` with `fail`) at
//!   `max(start_delay, ready-after or run_duration)`; `never-ready` ones run forever.

use std::time::Duration;

use serde_json::{Value, json};

use super::model::{Behaviour, conditions};

/// Delays the pod simulation uses.
#[derive(Debug, Clone, Copy)]
pub struct PodTiming {
    /// Pending -> Running.
    pub start_delay: Duration,
    /// How long a run-to-completion pod runs when no `ready-after` is given.
    pub run_duration: Duration,
}

/// Where the pod "runs".
#[derive(Debug, Clone)]
pub struct Placement {
    pub host_ip: String,
    pub pod_ip: String,
}

/// What the pod's status should be now, and when to look again (None: nothing more will
/// change on its own).
pub fn desired_status(
    pod: &Value,
    age: Duration,
    behaviour: &Behaviour,
    timing: PodTiming,
    placement: &Placement,
    now: &str,
) -> (Value, Option<Duration>) {
    let old = pod.get("status");
    let keep = |ptr: &str| -> Value {
        old.and_then(|s| s.pointer(ptr))
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| json!(now))
    };
    let restart = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let run_to_completion = restart != "Always";
    let containers = names(pod, "/spec/containers");
    let init_containers = names(pod, "/spec/initContainers");
    let old_cond = old.and_then(|s| s.get("conditions"));

    if age < timing.start_delay {
        let waiting: Vec<Value> = containers
            .iter()
            .map(|(n, image)| {
                json!({"name": n, "image": image, "imageID": "", "ready": false,
                    "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ContainerCreating"}}})
            })
            .collect();
        let status = json!({
            "phase": "Pending",
            "qosClass": "BestEffort",
            "hostIP": placement.host_ip,
            "hostIPs": [{"ip": placement.host_ip}],
            "startTime": keep("/startTime"),
            "conditions": conditions(old_cond, &[
                ("PodReadyToStartContainers", "False", "", ""),
                ("Initialized", if init_containers.is_empty() { "True" } else { "False" }, "", ""),
                ("Ready", "False", "ContainersNotReady", &not_ready_msg(&containers)),
                ("ContainersReady", "False", "ContainersNotReady", &not_ready_msg(&containers)),
                ("PodScheduled", "True", "", ""),
            ], now, false),
            "containerStatuses": waiting,
        });
        return (status, Some(timing.start_delay - age));
    }

    let started_at = keep("/startTime");
    let init_statuses: Vec<Value> = init_containers
        .iter()
        .map(|(n, image)| {
            json!({"name": n, "image": image, "imageID": image_id(image), "ready": true,
                "restartCount": 0, "started": false,
                "containerID": container_id(pod, n),
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": started_at, "finishedAt": started_at}}})
        })
        .collect();

    // Run-to-completion pods.
    if run_to_completion {
        let finish_at = timing
            .start_delay
            .max(behaviour.ready_after.unwrap_or(timing.run_duration));
        if behaviour.never_ready || age < finish_at {
            let statuses = running(pod, &containers, false, &started_at);
            let status = base(
                "Running",
                placement,
                &started_at,
                conditions(
                    old_cond,
                    &[
                        ("PodReadyToStartContainers", "True", "", ""),
                        ("Initialized", "True", "", ""),
                        ("Ready", "True", "", ""),
                        ("ContainersReady", "True", "", ""),
                        ("PodScheduled", "True", "", ""),
                    ],
                    now,
                    false,
                ),
                statuses,
                init_statuses,
            );
            let again = (!behaviour.never_ready).then(|| finish_at - age);
            return (status, again);
        }
        let (phase, code, reason) = if behaviour.fail {
            ("Failed", 1, "Error")
        } else {
            ("Succeeded", 0, "Completed")
        };
        let finished_at = keep("/containerStatuses/0/state/terminated/finishedAt");
        let statuses: Vec<Value> = containers
            .iter()
            .map(|(n, image)| {
                json!({"name": n, "image": image, "imageID": image_id(image), "ready": false,
                    "restartCount": 0, "started": false, "containerID": container_id(pod, n),
                    "state": {"terminated": {"exitCode": code, "reason": reason,
                        "startedAt": started_at, "finishedAt": finished_at}}})
            })
            .collect();
        let status = base(
            phase,
            placement,
            &started_at,
            conditions(
                old_cond,
                &[
                    ("PodReadyToStartContainers", "False", "", ""),
                    ("Initialized", "True", "", ""),
                    ("Ready", "False", "PodCompleted", ""),
                    ("ContainersReady", "False", "PodCompleted", ""),
                    ("PodScheduled", "True", "", ""),
                ],
                now,
                false,
            ),
            statuses,
            init_statuses,
        );
        return (status, None);
    }

    // Long-running pods.
    if behaviour.fail {
        let statuses: Vec<Value> = containers
            .iter()
            .map(|(n, image)| {
                json!({"name": n, "image": image, "imageID": image_id(image), "ready": false,
                    "restartCount": 1, "started": false, "containerID": container_id(pod, n),
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "startedAt": started_at, "finishedAt": started_at}},
                    "state": {"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off 10s restarting failed container={n} pod={}",
                            super::model::name(pod))}}})
            })
            .collect();
        let msg = not_ready_msg(&containers);
        let status = base(
            "Running",
            placement,
            &started_at,
            conditions(
                old_cond,
                &[
                    ("PodReadyToStartContainers", "True", "", ""),
                    ("Initialized", "True", "", ""),
                    ("Ready", "False", "ContainersNotReady", &msg),
                    ("ContainersReady", "False", "ContainersNotReady", &msg),
                    ("PodScheduled", "True", "", ""),
                ],
                now,
                false,
            ),
            statuses,
            init_statuses,
        );
        return (status, None);
    }
    let ready_at = timing
        .start_delay
        .max(behaviour.ready_after.unwrap_or(Duration::ZERO));
    let ready = !behaviour.never_ready && age >= ready_at;
    let statuses = running(pod, &containers, ready, &started_at);
    let msg = not_ready_msg(&containers);
    let (st, reason, message) = if ready {
        ("True", "", "")
    } else {
        ("False", "ContainersNotReady", msg.as_str())
    };
    let status = base(
        "Running",
        placement,
        &started_at,
        conditions(
            old_cond,
            &[
                ("PodReadyToStartContainers", "True", "", ""),
                ("Initialized", "True", "", ""),
                ("Ready", st, reason, message),
                ("ContainersReady", st, reason, message),
                ("PodScheduled", "True", "", ""),
            ],
            now,
            false,
        ),
        statuses,
        init_statuses,
    );
    let again = (!ready && !behaviour.never_ready).then(|| ready_at - age);
    (status, again)
}

/// Whether a pod counts as ready (condition Ready=True).
pub fn is_ready(pod: &Value) -> bool {
    super::model::condition_status(pod, "Ready") == Some("True")
}

/// Whether a ready pod counts as available given `min_ready` (`minReadySeconds`): `Ok(())`
/// when available now, `Err(Some(wait))` when it will be after `wait`, `Err(None)` when it is
/// not ready at all.
pub fn available(
    pod: &Value,
    min_ready: Duration,
    now: std::time::SystemTime,
) -> Result<(), Option<Duration>> {
    if !is_ready(pod) {
        return Err(None);
    }
    if min_ready.is_zero() {
        return Ok(());
    }
    let since = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(super::model::parse_rfc3339);
    match since.and_then(|t| now.duration_since(t).ok()) {
        Some(ready_for) if ready_for >= min_ready => Ok(()),
        Some(ready_for) => Err(Some(min_ready - ready_for)),
        // Ready in the future (clock skew) or unparsable: wait the full period.
        None => Err(Some(min_ready)),
    }
}

/// Counts available pods among `pods` and how long until the next one becomes available.
pub fn count_available<'a>(
    pods: impl IntoIterator<Item = &'a Value>,
    min_ready_seconds: i64,
    now: std::time::SystemTime,
) -> (i64, Option<Duration>) {
    let min_ready = Duration::from_secs(min_ready_seconds.max(0) as u64);
    let mut count = 0;
    let mut next: Option<Duration> = None;
    for p in pods {
        match available(p, min_ready, now) {
            Ok(()) => count += 1,
            Err(Some(wait)) => next = Some(next.map_or(wait, |n| n.min(wait))),
            Err(None) => {}
        }
    }
    (count, next)
}

/// The pod's phase.
pub fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

fn base(
    phase: &str,
    placement: &Placement,
    started_at: &Value,
    conditions: Value,
    statuses: Vec<Value>,
    init_statuses: Vec<Value>,
) -> Value {
    let mut s = json!({
        "phase": phase,
        "qosClass": "BestEffort",
        "hostIP": placement.host_ip,
        "hostIPs": [{"ip": placement.host_ip}],
        "podIP": placement.pod_ip,
        "podIPs": [{"ip": placement.pod_ip}],
        "startTime": started_at,
        "conditions": conditions,
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        s["initContainerStatuses"] = Value::Array(init_statuses);
    }
    s
}

fn running(pod: &Value, containers: &[(String, String)], ready: bool, since: &Value) -> Vec<Value> {
    containers
        .iter()
        .map(|(n, image)| {
            json!({"name": n, "image": image, "imageID": image_id(image), "ready": ready,
                "restartCount": 0, "started": true, "containerID": container_id(pod, n),
                "state": {"running": {"startedAt": since}}})
        })
        .collect()
}

fn names(pod: &Value, ptr: &str) -> Vec<(String, String)> {
    pod.pointer(ptr)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        c.get("image")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn not_ready_msg(containers: &[(String, String)]) -> String {
    let names: Vec<&str> = containers.iter().map(|(n, _)| n.as_str()).collect();
    format!("containers with unready status: [{}]", names.join(" "))
}

fn image_id(image: &str) -> String {
    format!(
        "{image}@sha256:{:064x}",
        super::model::fnv32a(&Value::String(image.to_owned()))
    )
}

fn container_id(pod: &Value, container: &str) -> String {
    let h = super::model::fnv32a(&json!([super::model::uid(pod), container]));
    format!("containerd://{h:064x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: PodTiming = PodTiming {
        start_delay: Duration::from_millis(50),
        run_duration: Duration::from_millis(100),
    };

    fn place() -> Placement {
        Placement {
            host_ip: "172.18.0.2".into(),
            pod_ip: "10.244.0.7".into(),
        }
    }

    fn pod(restart: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        if let Some(r) = restart {
            p["spec"]["restartPolicy"] = json!(r);
        }
        p
    }

    fn cond(status: &Value, ty: &str) -> String {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == ty)
            .map(|c| c["status"].as_str().unwrap().to_owned())
            .unwrap()
    }

    #[test]
    fn pod_is_pending_then_running_and_ready() {
        let b = Behaviour::default();
        let (s, again) = desired_status(&pod(None), Duration::ZERO, &b, T, &place(), "now");
        assert_eq!(s["phase"], "Pending");
        assert_eq!(again, Some(Duration::from_millis(50)));
        let (s, again) = desired_status(
            &pod(None),
            Duration::from_millis(60),
            &b,
            T,
            &place(),
            "now",
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(s["podIP"], "10.244.0.7");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(again, None);
    }

    #[test]
    fn ready_after_delays_readiness() {
        let b = Behaviour {
            ready_after: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let (s, again) = desired_status(&pod(None), Duration::from_secs(1), &b, T, &place(), "n");
        assert_eq!(s["phase"], "Running");
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(again, Some(Duration::from_secs(1)));
        let (s, _) = desired_status(&pod(None), Duration::from_secs(2), &b, T, &place(), "n");
        assert_eq!(cond(&s, "Ready"), "True");
    }

    #[test]
    fn failing_pod_crash_loops_and_never_ready_pod_stays_unready() {
        let fail = Behaviour {
            fail: true,
            ..Default::default()
        };
        let (s, again) =
            desired_status(&pod(None), Duration::from_secs(9), &fail, T, &place(), "n");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(again, None);
        let never = Behaviour {
            never_ready: true,
            ..Default::default()
        };
        let (s, again) = desired_status(
            &pod(None),
            Duration::from_secs(99),
            &never,
            T,
            &place(),
            "n",
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(again, None);
    }

    #[test]
    fn run_to_completion_pods_succeed_or_fail() {
        let b = Behaviour::default();
        let p = pod(Some("Never"));
        let (s, again) = desired_status(&p, Duration::from_millis(60), &b, T, &place(), "n");
        assert_eq!(s["phase"], "Running");
        assert_eq!(again, Some(Duration::from_millis(40)));
        let (s, again) = desired_status(&p, Duration::from_millis(100), &b, T, &place(), "n");
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(again, None);
        let fail = Behaviour {
            fail: true,
            ..Default::default()
        };
        let (s, _) = desired_status(&p, Duration::from_millis(100), &fail, T, &place(), "n");
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Error"
        );
    }

    #[test]
    fn repeated_reconcile_is_stable() {
        let b = Behaviour::default();
        let p = pod(None);
        let (s1, _) = desired_status(&p, Duration::from_secs(1), &b, T, &place(), "t1");
        let mut p2 = p.clone();
        p2["status"] = s1.clone();
        let (s2, _) = desired_status(&p2, Duration::from_secs(2), &b, T, &place(), "t2");
        assert_eq!(s1, s2, "a second reconcile must not change the status");
    }
}
