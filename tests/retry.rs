//! In-place retries of Kubernetes API calls against kubesim's fault injection: transient
//! answers (503, 429 with Retry-After, dropped connections) are retried within bounds,
//! permanent ones (422) are not, and the request log shows exactly the attempts made.
//! kube-rs's built-in retry of 429/503/504 is switched off here so the log shows ours only.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, PostParams};
use kubesim::{Cluster, Config, ErrorRule};
use strata::kube_api::{InPlaceRetry, classify_kube, retry_kube};
use strata_core::retry::ErrorClass;

async fn cluster() -> Cluster {
    kubesim::start(Config {
        controllers: None,
        ..Config::default()
    })
    .await
    .expect("kubesim starts")
}

/// A client without kube-rs's own retry layer (which repeats 429/503/504 up to 15 times), so
/// every attempt seen in the request log is one of `retry_kube`'s.
async fn client(c: &Cluster) -> Client {
    let mut cfg = testkit::cluster::kube_config(c).await;
    cfg.default_retry = false;
    Client::try_from(cfg).expect("client")
}

fn policy() -> InPlaceRetry {
    InPlaceRetry {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_retries: 3,
        seed: Some(1),
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .unwrap()
}

/// Codes of the logged requests with this verb on configmaps.
fn codes(c: &Cluster, verb: &str) -> Vec<u16> {
    c.controls()
        .requests_where(|r| r.resource == "configmaps" && r.verb == verb)
        .iter()
        .map(|r| r.code)
        .collect()
}

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    for (code, name) in [(503u16, "after-503"), (500, "after-500"), (0, "after-drop")] {
        c.controls().reset_requests();
        c.controls().add_error(ErrorRule {
            verb: Some("create".into()),
            resource: Some("configmaps".into()),
            code,
            times: Some(2),
            ..ErrorRule::default()
        });
        let (pp, obj) = (PostParams::default(), cm(name));
        let made = retry_kube(&policy(), || api.create(&pp, &obj))
            .await
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(made.metadata.name.as_deref(), Some(name));
        assert_eq!(codes(&c, "create"), vec![code, code, 201], "code {code}");
        c.controls().clear_faults();
    }
    c.shutdown().await;
}

#[tokio::test]
async fn retries_are_bounded() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    c.controls().add_error(ErrorRule {
        verb: Some("get".into()),
        resource: Some("configmaps".into()),
        code: 503,
        ..ErrorRule::default()
    });
    let err = retry_kube(&policy(), || api.get("anything"))
        .await
        .expect_err("always failing");
    assert_eq!(classify_kube(&err), ErrorClass::Transient);
    assert_eq!(codes(&c, "get"), vec![503; 4], "first try + 3 retries");
    c.shutdown().await;
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    // An invalid name is a 422 from the server itself, not an injected fault.
    let (pp, obj) = (PostParams::default(), cm("Not_A_Valid_Name"));
    let err = retry_kube(&policy(), || api.create(&pp, &obj))
        .await
        .expect_err("invalid object");
    assert_eq!(classify_kube(&err), ErrorClass::Permanent, "{err}");
    assert_eq!(codes(&c, "create"), vec![422]);
    c.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    c.controls()
        .throttle(Some("create"), Some("configmaps"), 1.0, 1, Some(1));
    let (pp, obj) = (PostParams::default(), cm("throttled"));
    let started = Instant::now();
    retry_kube(&policy(), || api.create(&pp, &obj))
        .await
        .expect("created after the throttle");
    let took = started.elapsed();
    assert_eq!(codes(&c, "create"), vec![429, 201]);
    assert!(
        took >= Duration::from_secs(1),
        "retried after {took:?}, before the server's Retry-After of 1s"
    );
    c.shutdown().await;
}
