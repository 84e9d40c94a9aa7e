//! Endpoints and EndpointSlices for Services with a selector: the pods they select, ready ones
//! as addresses, the rest as not-ready addresses.

use serde_json::{Map, Value, json};

use super::model::{name, namespace, owner_ref, terminating, uid};
use super::pod;

/// Label the real endpoints controller puts on the Endpoints it manages.
pub const MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// Label naming an EndpointSlice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Whether `labels` satisfy a Service's equality selector.
pub fn selects(selector: &Map<String, Value>, labels: Option<&Value>) -> bool {
    let labels = labels.and_then(Value::as_object);
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

struct Target<'a> {
    pod: &'a Value,
    ip: &'a str,
    ready: bool,
}

fn targets<'a>(svc: &Value, pods: &'a [Value]) -> Option<Vec<Target<'a>>> {
    let selector = svc.pointer("/spec/selector").and_then(Value::as_object)?;
    if selector.is_empty() {
        return None;
    }
    Some(
        pods.iter()
            .filter(|p| !terminating(p) && selects(selector, p.pointer("/metadata/labels")))
            .filter_map(|p| {
                let ip = p.pointer("/status/podIP").and_then(Value::as_str)?;
                Some(Target {
                    pod: p,
                    ip,
                    ready: pod::is_ready(p),
                })
            })
            .collect(),
    )
}

/// The port a Service port reaches on one pod (a named targetPort looked up in the pod).
fn target_port(port: &Value, pod: Option<&Value>) -> Value {
    match port.get("targetPort") {
        Some(Value::Number(n)) => Value::Number(n.clone()),
        Some(Value::String(named)) => pod
            .and_then(|p| p.pointer("/spec/containers"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .find(|cp| cp.get("name").and_then(Value::as_str) == Some(named.as_str()))
            .and_then(|cp| cp.get("containerPort").cloned())
            .unwrap_or_else(|| port.get("port").cloned().unwrap_or(Value::Null)),
        _ => port.get("port").cloned().unwrap_or(Value::Null),
    }
}

fn ports(svc: &Value, sample: Option<&Value>) -> Vec<Value> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let mut out = json!({
                        "port": target_port(p, sample),
                        "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP")),
                    });
                    if let Some(n) = p.get("name").filter(|n| n.as_str() != Some("")) {
                        out["name"] = n.clone();
                    }
                    out
                })
                .collect()
        })
        .unwrap_or_default()
}

fn target_ref(p: &Value) -> Value {
    json!({"kind": "Pod", "name": name(p), "namespace": namespace(p), "uid": uid(p)})
}

/// The Endpoints object for a Service with a selector (None for selector-less Services).
pub fn endpoints(svc: &Value, pods: &[Value]) -> Option<Value> {
    let targets = targets(svc, pods)?;
    let mut subsets = Vec::new();
    if !targets.is_empty() {
        let addr = |t: &Target| {
            json!({"ip": t.ip, "nodeName": t.pod.pointer("/spec/nodeName").cloned()
                .unwrap_or(Value::Null), "targetRef": target_ref(t.pod)})
        };
        let ready: Vec<Value> = targets.iter().filter(|t| t.ready).map(addr).collect();
        let not_ready: Vec<Value> = targets.iter().filter(|t| !t.ready).map(addr).collect();
        let mut subset = json!({"ports": ports(svc, targets.first().map(|t| t.pod))});
        if !ready.is_empty() {
            subset["addresses"] = Value::Array(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = Value::Array(not_ready);
        }
        subsets.push(subset);
    }
    let mut ep = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name(svc), "namespace": namespace(svc),
            "labels": {MANAGED_BY: "endpoint-controller"}},
    });
    if !subsets.is_empty() {
        ep["subsets"] = Value::Array(subsets);
    }
    Some(ep)
}

/// The EndpointSlice content (`endpoints` and `ports`) for a Service with a selector, as a
/// whole object to create (with `generateName`); callers updating an existing slice copy
/// `endpoints` and `ports` from it.
pub fn endpoint_slice(svc: &Value, pods: &[Value]) -> Option<Value> {
    let targets = targets(svc, pods)?;
    let endpoints: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "addresses": [t.ip],
                "conditions": {"ready": t.ready, "serving": t.ready, "terminating": false},
                "nodeName": t.pod.pointer("/spec/nodeName").cloned().unwrap_or(Value::Null),
                "targetRef": target_ref(t.pod),
            })
        })
        .collect();
    Some(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"generateName": format!("{}-", name(svc)), "namespace": namespace(svc),
            "labels": {SERVICE_NAME: name(svc),
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [owner_ref(svc)]},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports(svc, targets.first().map(|t| t.pod)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns", "uid": "s"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    }

    fn pod(name: &str, app: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": name, "labels": {"app": app}},
            "spec": {"nodeName": "n0", "containers": [{"name": "c",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": format!("10.0.0.{}", name.len()), "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_pods_of_the_selector() {
        let pods = [
            pod("a", "web", true),
            pod("bb", "web", false),
            pod("c", "db", true),
        ];
        let ep = endpoints(&svc(), &pods).unwrap();
        let s = &ep["subsets"][0];
        assert_eq!(s["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(s["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(s["notReadyAddresses"][0]["targetRef"]["name"], "bb");
        assert_eq!(s["ports"][0]["port"], 8080, "named targetPort resolved");
        assert_eq!(s["ports"][0]["name"], "http");
        let slice = endpoint_slice(&svc(), &pods).unwrap();
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME], "web");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "s");
    }

    #[test]
    fn services_without_selector_get_nothing() {
        let mut s = svc();
        s["spec"].as_object_mut().unwrap().remove("selector");
        assert!(endpoints(&s, &[]).is_none());
        assert!(endpoint_slice(&s, &[]).is_none());
    }
}
