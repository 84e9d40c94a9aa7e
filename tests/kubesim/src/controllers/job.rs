//! Jobs: a pod per attempt (up to `parallelism` at once) until `completions` pods succeeded
//! (conditions SuccessCriteriaMet + Complete) or more than `backoffLimit` failed (conditions
//! FailureTarget + Failed, reason BackoffLimitExceeded).

use serde_json::{Map, Value, json};

use super::model::{condition_status, conditions, int_at, name, terminating, uid};
use super::{pod, replicaset};

/// What the Job controller wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create.
    pub create: Vec<Value>,
    /// Names of pods to delete (active pods of a failed Job).
    pub delete: Vec<String>,
    /// The Job's status.
    pub status: Value,
    /// Look again after this long (`activeDeadlineSeconds`).
    pub requeue: Option<std::time::Duration>,
}

/// Whether the Job reached a terminal condition.
pub fn finished(job: &Value) -> bool {
    condition_status(job, "Complete") == Some("True")
        || condition_status(job, "Failed") == Some("True")
}

/// Reconciles a Job given its pods; `age` is how long the Job has been running (for
/// `activeDeadlineSeconds`).
pub fn reconcile(
    job: &Value,
    pods: &[Value],
    age: std::time::Duration,
    node: &str,
    now: &str,
) -> Plan {
    let mut plan = Plan::default();
    let old = job.get("status").cloned().unwrap_or(json!({}));
    // Without `completions` the Job is a work queue: `parallelism` pods, done once one
    // succeeded and the others finished.
    let work_queue = job.pointer("/spec/completions").is_none_or(Value::is_null);
    let completions = int_at(job, "/spec/completions", 1).max(0);
    let parallelism = int_at(job, "/spec/parallelism", 1).max(0);
    let backoff_limit = int_at(job, "/spec/backoffLimit", 6).max(0);
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let succeeded = pods.iter().filter(|p| pod::phase(p) == "Succeeded").count() as i64;
    let failed = pods.iter().filter(|p| pod::phase(p) == "Failed").count() as i64;
    let active: Vec<&Value> = pods
        .iter()
        .filter(|p| !terminating(p) && !matches!(pod::phase(p), "Succeeded" | "Failed"))
        .collect();
    let ready = active.iter().filter(|p| pod::is_ready(p)).count() as i64;

    let mut status = Map::new();
    let start = old
        .get("startTime")
        .filter(|v| !v.is_null())
        .cloned()
        .unwrap_or_else(|| json!(now));

    let (cond, complete, failed_now) = if finished(job) {
        // Terminal: keep what was reported.
        plan.status = old;
        return plan;
    } else if job
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_u64)
        .map(std::time::Duration::from_secs)
        .is_some_and(|d| age >= d && succeeded < completions)
    {
        let msg = "Job was active longer than specified deadline";
        plan.delete = active.iter().map(|p| name(p).to_owned()).collect();
        (
            conditions(
                None,
                &[
                    ("FailureTarget", "True", "DeadlineExceeded", msg),
                    ("Failed", "True", "DeadlineExceeded", msg),
                ],
                now,
                false,
            ),
            false,
            true,
        )
    } else if failed > backoff_limit {
        let msg = "Job has reached the specified backoff limit";
        plan.delete = active.iter().map(|p| name(p).to_owned()).collect();
        (
            conditions(
                None,
                &[
                    ("FailureTarget", "True", "BackoffLimitExceeded", msg),
                    ("Failed", "True", "BackoffLimitExceeded", msg),
                ],
                now,
                false,
            ),
            false,
            true,
        )
    } else if (work_queue && succeeded >= 1 && active.is_empty())
        || (!work_queue && succeeded >= completions)
    {
        let msg = "Reached expected number of succeeded pods";
        (
            conditions(
                None,
                &[
                    ("SuccessCriteriaMet", "True", "CompletionsReached", msg),
                    ("Complete", "True", "CompletionsReached", msg),
                ],
                now,
                false,
            ),
            true,
            false,
        )
    } else if suspended {
        // Suspended: no pods run; the ones running are removed.
        plan.delete = active.iter().map(|p| name(p).to_owned()).collect();
        (
            conditions(
                old.get("conditions"),
                &[("Suspended", "True", "JobSuspended", "Job suspended")],
                now,
                false,
            ),
            false,
            false,
        )
    } else {
        if !terminating(job) {
            let want_active = if work_queue {
                if succeeded == 0 { parallelism } else { 0 }
            } else {
                parallelism.min(completions - succeeded)
            };
            for _ in (active.len() as i64)..want_active {
                let mut p = replicaset::pod_from_template(job, node);
                let labels = &mut p["metadata"]["labels"];
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid(job)),
                    ("batch.kubernetes.io/job-name", name(job)),
                    ("controller-uid", uid(job)),
                    ("job-name", name(job)),
                ] {
                    labels[k] = json!(v);
                }
                plan.create.push(p);
            }
        }
        if let Some(d) = job
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_u64)
            .map(std::time::Duration::from_secs)
        {
            plan.requeue = Some(d.saturating_sub(age));
        }
        (Value::Null, false, false)
    };

    // A Job that was suspended once keeps a Suspended=False condition after it resumes.
    let was_suspended = old
        .get("conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("type").and_then(Value::as_str) == Some("Suspended"))
        });
    let mut cond = cond;
    if !suspended && was_suspended {
        let resumed = conditions(
            old.get("conditions"),
            &[("Suspended", "False", "JobResumed", "Job resumed")],
            now,
            false,
        );
        let mut all = resumed.as_array().cloned().unwrap_or_default();
        all.extend(cond.as_array().cloned().unwrap_or_default());
        cond = Value::Array(all);
    }
    if !suspended
        && (old.get("startTime").is_some_and(|v| !v.is_null())
            || !active.is_empty()
            || !plan.create.is_empty()
            || complete
            || failed_now)
    {
        status.insert("startTime".into(), start);
    }
    if !cond.is_null() {
        status.insert("conditions".into(), cond);
    }
    if complete {
        status.insert("completionTime".into(), json!(now));
    }
    let shown_active = if complete || failed_now || suspended {
        0
    } else {
        active.len() as i64 + plan.create.len() as i64
    };
    if shown_active > 0 {
        status.insert("active".into(), json!(shown_active));
    }
    status.insert(
        "ready".into(),
        json!(if complete || failed_now { 0 } else { ready }),
    );
    if succeeded > 0 {
        status.insert("succeeded".into(), json!(succeeded));
    }
    if failed > 0 {
        status.insert("failed".into(), json!(failed));
    }
    status.insert("terminating".into(), json!(0));
    status.insert("uncountedTerminatedPods".into(), json!({}));
    plan.status = Value::Object(status);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(completions: i64, parallelism: i64, backoff: i64) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "ns", "uid": "j-uid", "generation": 1},
            "spec": {"completions": completions, "parallelism": parallelism,
                "backoffLimit": backoff,
                "template": {"metadata": {"labels": {"app": "m"}},
                    "spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    fn finished_pod(mut p: Value, i: usize, phase: &str) -> Value {
        p["metadata"]["name"] = json!(format!("migrate-{i}"));
        p["status"] = json!({"phase": phase});
        p
    }

    #[test]
    fn runs_a_pod_then_completes() {
        let j = job(1, 1, 6);
        let plan = reconcile(&j, &[], Duration::ZERO, "n", "t0");
        assert_eq!(plan.create.len(), 1);
        let p = &plan.create[0];
        assert_eq!(p["metadata"]["labels"]["job-name"], "migrate");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            "j-uid"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(plan.status["startTime"], "t0");
        assert_eq!(plan.status["active"], 1);
        assert!(plan.status.get("conditions").is_none());

        let mut j2 = j.clone();
        j2["status"] = plan.status.clone();
        let done = finished_pod(plan.create[0].clone(), 0, "Succeeded");
        let plan = reconcile(&j2, &[done], Duration::ZERO, "n", "t1");
        assert!(plan.create.is_empty());
        assert_eq!(plan.status["succeeded"], 1);
        assert_eq!(plan.status["startTime"], "t0");
        assert_eq!(plan.status["completionTime"], "t1");
        let c = plan.status["conditions"].as_array().unwrap();
        assert_eq!(c[0]["type"], "SuccessCriteriaMet");
        assert_eq!(c[1]["type"], "Complete");
        assert_eq!(c[1]["status"], "True");
        // Terminal jobs do not change any more.
        let mut j3 = j2.clone();
        j3["status"] = plan.status.clone();
        assert_eq!(
            reconcile(&j3, &[], Duration::ZERO, "n", "t2").status,
            plan.status
        );
    }

    #[test]
    fn fails_after_backoff_limit_plus_one_failed_pods() {
        let j = job(1, 1, 2);
        let template = reconcile(&j, &[], Duration::ZERO, "n", "t")
            .create
            .remove(0);
        let pods: Vec<Value> = (0..2)
            .map(|i| finished_pod(template.clone(), i, "Failed"))
            .collect();
        let plan = reconcile(&j, &pods, Duration::ZERO, "n", "t");
        assert_eq!(plan.create.len(), 1, "retries while failed <= backoffLimit");
        assert_eq!(plan.status["failed"], 2);
        let pods: Vec<Value> = (0..3)
            .map(|i| finished_pod(template.clone(), i, "Failed"))
            .collect();
        let plan = reconcile(&j, &pods, Duration::ZERO, "n", "t");
        assert!(plan.create.is_empty());
        assert_eq!(plan.status["failed"], 3);
        let c = plan.status["conditions"].as_array().unwrap();
        assert_eq!(c[0]["type"], "FailureTarget");
        assert_eq!(c[1]["type"], "Failed");
        assert_eq!(c[1]["reason"], "BackoffLimitExceeded");
        assert!(plan.status.get("completionTime").is_none());
    }

    #[test]
    fn parallelism_bounds_active_pods() {
        let j = job(5, 2, 6);
        let plan = reconcile(&j, &[], Duration::ZERO, "n", "t");
        assert_eq!(plan.create.len(), 2);
        let template = plan.create[0].clone();
        let pods: Vec<Value> = (0..4)
            .map(|i| finished_pod(template.clone(), i, "Succeeded"))
            .collect();
        let plan = reconcile(&j, &pods, Duration::ZERO, "n", "t");
        assert_eq!(plan.create.len(), 1, "only one completion left");
    }

    #[test]
    fn active_deadline_fails_a_running_job() {
        let mut j = job(1, 1, 6);
        j["spec"]["activeDeadlineSeconds"] = json!(5);
        let plan = reconcile(&j, &[], Duration::from_secs(2), "n", "t");
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.requeue, Some(Duration::from_secs(3)));
        let running = finished_pod(plan.create[0].clone(), 0, "Running");
        let plan = reconcile(&j, &[running], Duration::from_secs(5), "n", "t");
        assert_eq!(plan.delete, vec!["migrate-0".to_owned()]);
        let c = plan.status["conditions"].as_array().unwrap();
        assert_eq!(c[1]["type"], "Failed");
        assert_eq!(c[1]["reason"], "DeadlineExceeded");
    }

    #[test]
    fn suspended_jobs_run_nothing_and_resume_later() {
        let mut j = job(1, 1, 6);
        j["spec"]["suspend"] = json!(true);
        let running = finished_pod(
            reconcile(&job(1, 1, 6), &[], Duration::ZERO, "n", "t")
                .create
                .remove(0),
            0,
            "Running",
        );
        let plan = reconcile(&j, &[running], Duration::ZERO, "n", "t");
        assert!(plan.create.is_empty());
        assert_eq!(plan.delete, vec!["migrate-0".to_owned()]);
        assert_eq!(plan.status["conditions"][0]["type"], "Suspended");
        assert_eq!(plan.status["conditions"][0]["status"], "True");
        assert!(plan.status.get("startTime").is_none());
        assert!(plan.status.get("active").is_none());
        // Resumed: pods run again and the condition records the resume.
        let mut resumed = job(1, 1, 6);
        resumed["status"] = plan.status.clone();
        let plan = reconcile(&resumed, &[], Duration::ZERO, "n", "t2");
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.status["conditions"][0]["status"], "False");
        assert_eq!(plan.status["conditions"][0]["reason"], "JobResumed");
        assert_eq!(plan.status["startTime"], "t2");
    }

    #[test]
    fn work_queue_jobs_run_parallelism_pods_until_one_succeeded_and_all_ended() {
        let mut j = job(1, 3, 6);
        j["spec"].as_object_mut().unwrap().remove("completions");
        let plan = reconcile(&j, &[], Duration::ZERO, "n", "t");
        assert_eq!(plan.create.len(), 3);
        let t = plan.create[0].clone();
        let pods = [
            finished_pod(t.clone(), 0, "Succeeded"),
            finished_pod(t.clone(), 1, "Running"),
        ];
        let plan = reconcile(&j, &pods, Duration::ZERO, "n", "t");
        assert!(plan.create.is_empty(), "no new pods once one succeeded");
        assert!(plan.status.get("conditions").is_none());
        let pods = [
            finished_pod(t.clone(), 0, "Succeeded"),
            finished_pod(t, 1, "Succeeded"),
        ];
        let plan = reconcile(&j, &pods, Duration::ZERO, "n", "t");
        assert_eq!(plan.status["conditions"][1]["type"], "Complete");
    }
}
