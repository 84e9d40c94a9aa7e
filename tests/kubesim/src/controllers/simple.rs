//! Controllers without children: PersistentVolumeClaims get Bound, LoadBalancer Services get
//! an ingress address.

use std::time::Duration;

use serde_json::{Value, json};

use super::model::{Behaviour, ip_for, uid};

/// The status a PVC should have `age` after it was first seen, and when to look again.
pub fn pvc_status(
    pvc: &Value,
    age: Duration,
    delay: Duration,
    b: &Behaviour,
) -> (Value, Option<Duration>) {
    let bound = pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    let bind_at = delay.max(b.ready_after.unwrap_or(Duration::ZERO));
    if !bound && (b.never_ready || b.fail || age < bind_at) {
        let status = json!({"phase": "Pending"});
        let again = (!(b.never_ready || b.fail)).then(|| bind_at - age);
        return (status, again);
    }
    let mut status = json!({"phase": "Bound"});
    if let Some(modes) = pvc.pointer("/spec/accessModes") {
        status["accessModes"] = modes.clone();
    }
    if let Some(size) = pvc.pointer("/spec/resources/requests/storage") {
        status["capacity"] = json!({"storage": size});
    }
    (status, None)
}

/// The status a Service should have (only LoadBalancers get one), or None to leave it alone.
pub fn service_status(svc: &Value) -> Option<Value> {
    if svc.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
        return None;
    }
    let ip = ip_for([172, 18], uid(svc));
    let ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    json!({"port": p.get("port").cloned().unwrap_or(Value::Null),
                        "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ingress = json!({"ip": ip, "ipMode": "VIP"});
    if !ports.is_empty() {
        ingress["ports"] = Value::Array(ports);
    }
    Some(json!({"loadBalancer": {"ingress": [ingress]}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc() -> Value {
        json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}})
    }

    #[test]
    fn pvc_binds_after_the_delay_with_capacity() {
        let d = Duration::from_millis(50);
        let b = Behaviour::default();
        let (s, again) = pvc_status(&pvc(), Duration::ZERO, d, &b);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(again, Some(d));
        let (s, again) = pvc_status(&pvc(), d, d, &b);
        assert_eq!(s["phase"], "Bound");
        assert_eq!(s["capacity"]["storage"], "1Gi");
        assert_eq!(s["accessModes"][0], "ReadWriteOnce");
        assert_eq!(again, None);
        let never = Behaviour {
            never_ready: true,
            ..Default::default()
        };
        let (s, again) = pvc_status(&pvc(), Duration::from_secs(60), d, &never);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(again, None);
    }

    #[test]
    fn only_load_balancers_get_an_ingress() {
        let lb = json!({"metadata": {"uid": "u"}, "spec": {"type": "LoadBalancer",
            "ports": [{"port": 80}]}});
        let s = service_status(&lb).unwrap();
        let ip = s["loadBalancer"]["ingress"][0]["ip"].as_str().unwrap();
        assert!(ip.starts_with("172.18."), "{ip}");
        assert_eq!(s["loadBalancer"]["ingress"][0]["ports"][0]["port"], 80);
        let cip = json!({"metadata": {"uid": "u"}, "spec": {"type": "ClusterIP"}});
        assert!(service_status(&cip).is_none());
    }
}
