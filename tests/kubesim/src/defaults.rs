//! Defaulting as the API server does it on create and update (the subset helm, kubectl and
//! the simulated controllers depend on).

use crate::error::{ApiError, Result};
use crate::registry::ResourceKey;
use crate::store::DefaultCtx;
use base64::Engine;
use serde_json::{Map, Value, json};

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    v[key].as_object_mut().expect("object")
}

fn set_default(m: &mut Map<String, Value>, key: &str, val: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), val);
    }
}

/// Applies the defaults for `res` to `obj`; `old` is the stored object on update.
pub(crate) fn apply(
    res: &ResourceKey,
    obj: &mut Value,
    old: Option<&Value>,
    ctx: &mut DefaultCtx<'_>,
) -> Result<()> {
    match (res.group.as_str(), res.resource.as_str()) {
        ("", "namespaces") => {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let labels = obj_mut(&mut obj["metadata"], "labels");
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            let spec = obj_mut(obj, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            if old.is_none() {
                let status = obj_mut(obj, "status");
                status.insert("phase".into(), json!("Active"));
            } else if let Some(o) = old {
                obj["status"] = o["status"].clone();
            }
        }
        ("", "secrets") => {
            let m = obj.as_object_mut().expect("object");
            set_default(m, "type", json!("Opaque"));
            if let Some(sd) = m.remove("stringData")
                && let Some(sd) = sd.as_object()
            {
                let data = obj_mut(obj, "data");
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("");
                    data.insert(
                        k.clone(),
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
            if let Some(o) = old
                && o["type"] != obj["type"]
            {
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                return Err(ApiError::invalid(
                    "",
                    "Secret",
                    &name,
                    vec![ApiError::cause(
                        "FieldValueInvalid",
                        "type",
                        format!("Invalid value: {}: field is immutable", obj["type"]),
                    )],
                ));
            }
        }
        ("", "services") => default_service(obj, old, ctx)?,
        ("", "pods") => {
            default_pod_spec(obj_mut(obj, "spec"));
            if old.is_none() {
                let st = obj_mut(obj, "status");
                st.insert("phase".into(), json!("Pending"));
                st.insert("qosClass".into(), json!("BestEffort"));
            }
        }
        ("", "persistentvolumeclaims") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "volumeMode", json!("Filesystem"));
            if old.is_none() {
                obj_mut(obj, "status").insert("phase".into(), json!("Pending"));
            }
        }
        ("", "persistentvolumes") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
            if old.is_none() {
                obj_mut(obj, "status").insert("phase".into(), json!("Pending"));
            }
        }
        ("apps", "deployments") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
            if !strategy.is_object() {
                *strategy = json!({});
            }
            let s = strategy.as_object_mut().expect("object");
            set_default(s, "type", json!("RollingUpdate"));
            if s["type"] == "RollingUpdate" {
                let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "maxUnavailable", json!("25%"));
                    set_default(ru, "maxSurge", json!("25%"));
                }
            }
            default_template(spec);
        }
        ("apps", "replicasets") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            default_template(spec);
        }
        ("apps", "statefulsets") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            for t in spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
                    set_default(s, "volumeMode", json!("Filesystem"));
                }
            }
            default_template(spec);
        }
        ("apps", "daemonsets") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_template(spec);
        }
        ("batch", "jobs") => default_job(obj, old, ctx),
        ("batch", "cronjobs") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(jt) = spec
                .get_mut("jobTemplate")
                .and_then(|j| j.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                set_default(jt, "backoffLimit", json!(6));
                set_default(jt, "completionMode", json!("NonIndexed"));
                set_default(jt, "suspend", json!(false));
                default_template(jt);
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => default_crd(obj, old),
        _ => {}
    }
    Ok(())
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        if !t.get("spec").is_some_and(Value::is_object) {
            t.insert("spec".into(), json!({}));
        }
        default_pod_spec(
            t.get_mut("spec")
                .and_then(Value::as_object_mut)
                .expect("spec"),
        );
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for key in ["containers", "initContainers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let image = c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let latest =
                image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':');
            let latest = latest && !image.contains('@');
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(p) = p.as_object_mut() {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

fn default_job(obj: &mut Value, old: Option<&Value>, ctx: &mut DefaultCtx<'_>) {
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = obj_mut(obj, "spec");
    let has_completions = spec.get("completions").is_some_and(|v| !v.is_null());
    let has_parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !has_completions && !has_parallelism {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(o) = old {
        // selector and template labels are immutable: keep what creation generated.
        if let Some(sel) = o["spec"].get("selector") {
            spec.insert("selector".into(), sel.clone());
        }
    } else if spec.get("manualSelector") != Some(&json!(true)) {
        let uid = if uid.is_empty() { ctx.uuid() } else { uid };
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let t = spec.entry("template").or_insert_with(|| json!({}));
        let labels = obj_mut(obj_mut_val(t, "metadata"), "labels");
        labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
        labels.insert("controller-uid".into(), json!(uid));
        labels.insert("job-name".into(), json!(name));
    }
    if let Some(o) = old
        && let Some(tl) = o["spec"]["template"]["metadata"].get("labels")
        && let Some(t) = spec.get_mut("template")
    {
        obj_mut_val(t, "metadata")["labels"] = tl.clone();
    }
    default_template(spec);
}

fn obj_mut_val<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = json!({});
    }
    if !v[key].is_object() {
        v[key] = json!({});
    }
    &mut v[key]
}

fn default_service(obj: &mut Value, old: Option<&Value>, ctx: &mut DefaultCtx<'_>) -> Result<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = obj_mut(obj, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    set_default(spec, "sessionAffinity", json!("None"));
    if ty != "ExternalName" {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    for p in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(p) = p.as_object_mut() else { continue };
        set_default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            set_default(p, "targetPort", port);
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            && p.get("nodePort").is_none_or(Value::is_null)
        {
            let prev = old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                .and_then(|o| o["nodePort"].as_i64());
            let np = prev.unwrap_or_else(|| ctx.allocate_node_port());
            p.insert("nodePort".into(), json!(np));
        }
    }
    // ClusterIP: kept from the stored object on update, allocated on create.
    let old_ip = old.and_then(|o| o["spec"]["clusterIP"].as_str().map(String::from));
    let given = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .map(String::from);
    if ty == "ExternalName" {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    } else {
        let ip = match (given.filter(|s| !s.is_empty()), old_ip) {
            (Some(g), Some(o)) if g != o => {
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![ApiError::cause(
                        "FieldValueInvalid",
                        "spec.clusterIPs[0]",
                        format!("Invalid value: []string{{\"{g}\"}}: may not change once set"),
                    )],
                ));
            }
            (Some(g), Some(_)) => g,
            (None, Some(o)) => o,
            (Some(g), None) => {
                if g != "None" && !ctx.claim_ip(&g) {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        &name,
                        vec![ApiError::cause(
                            "FieldValueInvalid",
                            "spec.clusterIPs",
                            format!(
                                "Invalid value: []string{{\"{g}\"}}: failed to allocate IP {g}: provided IP is already allocated"
                            ),
                        )],
                    ));
                }
                g
            }
            (None, None) => ctx.allocate_ip(),
        };
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.insert("clusterIP".into(), json!(ip));
    }
    if old.is_none() {
        obj_mut(obj, "status").insert("loadBalancer".into(), json!({}));
    }
    Ok(())
}

fn default_crd(obj: &mut Value, old: Option<&Value>) {
    let names = obj["spec"]["names"].clone();
    let stored: Vec<Value> = obj["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    let mut accepted = names.clone();
    if let Some(a) = accepted.as_object_mut() {
        if !a.contains_key("singular") {
            let k = a
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            a.insert("singular".into(), json!(k));
        }
        if !a.contains_key("listKind") {
            let k = a
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            a.insert("listKind".into(), json!(format!("{k}List")));
        }
    }
    let now = crate::util::now_rfc3339();
    let mut stored_versions: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    for s in stored {
        if !stored_versions.contains(&s) {
            stored_versions.push(s);
        }
    }
    let since = old
        .and_then(|o| o["status"]["conditions"].as_array())
        .and_then(|c| c.first())
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(String::from)
        .unwrap_or(now);
    obj["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored_versions,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since},
        ],
    });
    if let Some(spec) = obj["spec"].as_object_mut() {
        set_default(spec, "conversion", json!({"strategy": "None"}));
    }
}
