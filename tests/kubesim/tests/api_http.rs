//! kubesim's HTTP surface seen from a raw client: discovery negotiation, OpenAPI, health and
//! version without credentials, dry runs, protobuf bodies, legacy watch paths, error codes,
//! the admin endpoint, and the `kubesim` binary.

use base64::Engine;
use http::Request;
use http_body_util::BodyExt;
use kube::Client;
use kubesim::ResourceKey;
use serde_json::{Value, json};
use std::time::Duration;

mod common;

use common::{api, bounded_test, client_from, no_controllers};

/// Sends a request; returns status, content type and body.
async fn send(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .send(b.body(kube::client::Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, body)
}

fn js(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

bounded_test!(discovery_is_negotiated_by_accept, {
    let (c, client) = api(no_controllers()).await;
    let agg =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (code, ct, body) = send(&client, "GET", "/apis", &[("accept", agg)], vec![]).await;
    assert_eq!(code, 200);
    assert_eq!(
        ct,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let v = js(&body);
    assert_eq!(v["kind"], "APIGroupDiscoveryList");
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "batch")
    );
    let (_, ct, body) = send(&client, "GET", "/api", &[("accept", agg)], vec![]).await;
    assert!(ct.contains("apidiscovery.k8s.io"));
    assert!(
        js(&body)["items"][0]["metadata"].get("name").is_none(),
        "core group has no name"
    );
    let (_, ct, body) = send(
        &client,
        "GET",
        "/apis",
        &[("accept", "application/json")],
        vec![],
    )
    .await;
    assert_eq!(ct, "application/json");
    let v = js(&body);
    assert_eq!(v["kind"], "APIGroupList");
    let auto = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .unwrap();
    assert_eq!(auto["preferredVersion"]["version"], "v2");
    let (code, _, body) = send(&client, "GET", "/apis/apps/v1", &[], vec![]).await;
    assert_eq!(code, 200);
    assert!(
        js(&body)["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/status")
    );
    let (code, _, body) = send(&client, "GET", "/openapi/v3", &[], vec![]).await;
    assert_eq!(code, 200);
    let url = js(&body)["paths"]["apis/batch/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, body) = send(&client, "GET", &url, &[], vec![]).await;
    assert_eq!(code, 200);
    assert!(
        js(&body)["paths"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("/jobs/{name}"))
    );
    // A CRD's group is in aggregated discovery and the OpenAPI index as soon as it exists.
    c.store()
            .create(
                &ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
                json!({"metadata": {"name": "widgets.example.strata.dev"}, "spec": {"group": "example.strata.dev", "scope": "Cluster",
                    "names": {"kind": "Widget", "plural": "widgets"},
                    "versions": [{"name": "v1alpha1", "served": true, "storage": true}]}}),
            )
            .unwrap();
    let (_, _, body) = send(&client, "GET", "/apis", &[("accept", agg)], vec![]).await;
    let v = js(&body);
    let g = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "example.strata.dev")
        .expect("CRD group discovered");
    assert_eq!(g["versions"][0]["resources"][0]["scope"], "Cluster");
    let (_, _, body) = send(&client, "GET", "/openapi/v3", &[], vec![]).await;
    assert!(js(&body)["paths"]["apis/example.strata.dev/v1alpha1"].is_object());
    let (code, ct, body) = send(
        &client,
        "GET",
        "/openapi/v2",
        &[(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )],
        vec![],
    )
    .await;
    assert_eq!(
        (code, ct.as_str(), body.as_slice()),
        (
            200,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            &b"\x0a\x032.0"[..]
        )
    );
    c.shutdown().await;
});

/// Sends a GET; returns status, the response headers and the body.
async fn get_with_headers(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method("GET").uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .send(b.body(kube::client::Body::from(Vec::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status.as_u16(), parts.headers, body)
}

// As kube-apiserver: the OpenAPI documents carry an ETag (a matching If-None-Match gets 304),
// a group-version's document asked for by its current hash is immutable (clients keep it in
// their disk cache), an old hash is redirected to the current one, and a new CRD changes the
// index.
bounded_test!(openapi_documents_are_cached_like_the_real_server, {
    let (c, client) = api(no_controllers()).await;
    let (code, h, body) = get_with_headers(&client, "/openapi/v3", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(h["cache-control"], "no-cache, private");
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let (code, _, body304) =
        get_with_headers(&client, "/openapi/v3", &[("if-none-match", &etag)]).await;
    assert_eq!((code, body304.len()), (304, 0));
    let url = js(&body)["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, h, doc) = get_with_headers(&client, &url, &[]).await;
    assert_eq!(code, 200);
    assert_eq!(h["cache-control"], "public, immutable");
    assert!(h.contains_key("expires"));
    let (code, h, plain) = get_with_headers(&client, "/openapi/v3/apis/apps/v1", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(h["cache-control"], "no-cache, private");
    assert_eq!(plain, doc, "the same document without a hash");
    let (code, h, _) = get_with_headers(
        &client,
        "/openapi/v3/apis/apps/v1?hash=0000000000000000",
        &[],
    )
    .await;
    assert_eq!(code, 301);
    assert_eq!(h["location"], url.as_str());
    c.store()
        .create(
            &ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
            json!({"metadata": {"name": "gadgets.example.strata.dev"}, "spec": {"group": "example.strata.dev", "scope": "Namespaced",
                "names": {"kind": "Gadget", "plural": "gadgets"},
                "versions": [{"name": "v1", "served": true, "storage": true}]}}),
        )
        .unwrap();
    let (code, h, body) =
        get_with_headers(&client, "/openapi/v3", &[("if-none-match", &etag)]).await;
    assert_eq!(code, 200, "a new CRD: the index changed");
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    assert!(js(&body)["paths"]["apis/example.strata.dev/v1"].is_object());
    let (code, _, _) = get_with_headers(&client, &url, &[]).await;
    assert_eq!(code, 200, "apps/v1 unchanged: its hash still holds");
    c.shutdown().await;
});

bounded_test!(public_endpoints_without_credentials_and_401_for_the_rest, {
    let (c, _) = api(no_controllers()).await;
    let ca = base64::engine::general_purpose::STANDARD.encode(c.ca_pem());
    let anon = client_from(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority-data: {ca}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n",
        c.url()
    ))
    .await;
    let (code, _, body) = send(&anon, "GET", "/version", &[], vec![]).await;
    assert_eq!(code, 200);
    assert_eq!(
        js(&body)["gitVersion"].as_str().unwrap().get(..5),
        Some("v1.35")
    );
    for p in ["/healthz", "/readyz", "/livez"] {
        assert_eq!(send(&anon, "GET", p, &[], vec![]).await.0, 200, "{p}");
    }
    let (code, _, body) = send(&anon, "GET", "/api/v1/namespaces", &[], vec![]).await;
    assert_eq!(code, 401);
    assert_eq!(js(&body)["reason"], "Unauthorized");
    c.shutdown().await;
});

bounded_test!(verbs_and_error_codes, {
    let (c, client) = api(no_controllers()).await;
    let j = [("content-type", "application/json")];
    let cm = |name: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"t": "x"}}})).unwrap()
    };
    // dry run: 201 with the defaulted object, nothing stored
    let (code, _, body) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        &j,
        cm("dry"),
    )
    .await;
    assert_eq!(code, 201);
    assert!(js(&body)["metadata"]["uid"].is_string());
    assert!(
        c.store()
            .get(&ResourceKey::new("", "configmaps"), Some("default"), "dry")
            .is_none()
    );
    // generateName
    let body = serde_json::to_vec(&json!({"metadata": {"generateName": "g-"}})).unwrap();
    let (code, _, out) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &j,
        body,
    )
    .await;
    assert_eq!(code, 201);
    assert!(
        js(&out)["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("g-")
    );
    // POST on a named path -> 405, bad names -> 422, unknown resource -> 404
    let (code, _, out) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps/x",
        &j,
        cm("x"),
    )
    .await;
    assert_eq!(
        (code, js(&out)["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, _, out) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &j,
        cm("Not_Valid"),
    )
    .await;
    assert_eq!((code, js(&out)["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(js(&out)["details"]["causes"][0]["field"], "metadata.name");
    let (code, _, _) = send(&client, "GET", "/apis/example.com/v1/widgets", &[], vec![]).await;
    assert_eq!(code, 404);
    // a body over 3 MiB -> 413
    let huge = serde_json::to_vec(
        &json!({"metadata": {"name": "huge"}, "data": {"a": "x".repeat(3 * 1024 * 1024 + 10)}}),
    )
    .unwrap();
    let (code, _, out) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &j,
        huge,
    )
    .await;
    assert_eq!(
        (code, js(&out)["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    // PUT without resourceVersion and without namespace in the body: unconditional
    send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &j,
        cm("u"),
    )
    .await;
    let put = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "data": {"k": "2"}})).unwrap();
    let (code, _, out) = send(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps/u",
        &j,
        put,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(js(&out)["data"]["k"], "2");
    // deletecollection with a label selector (u lost its label with the PUT above)
    send(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &j,
        cm("l"),
    )
    .await;
    let (code, _, out) = send(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps?labelSelector=t%3Dx",
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        js(&out)["items"].as_array().unwrap().len(),
        1,
        "only l carries the label"
    );
    // JSON patch test failure -> 422; strategic merge patch by key on a Deployment
    let patch =
        serde_json::to_vec(&json!([{"op": "test", "path": "/data/k", "value": "nope"}])).unwrap();
    let (code, _, _) = send(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/u",
        &[("content-type", "application/json-patch+json")],
        patch,
    )
    .await;
    assert_eq!(code, 422);
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
    send(
        &client,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        &j,
        serde_json::to_vec(&d).unwrap(),
    )
    .await;
    let smp =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}});
    let (code, _, out) = send(
        &client,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[("content-type", "application/strategic-merge-patch+json")],
        serde_json::to_vec(&smp).unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    let out = js(&out);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][1]["image"],
        "b:2"
    );
    assert_eq!(out["metadata"]["generation"], 2);
    // status subresource: PUT .../status changes status only
    let mut st = out.clone();
    st["spec"]["replicas"] = json!(9);
    st["status"] = json!({"observedGeneration": 2});
    let (code, _, out) = send(
        &client,
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/web/status",
        &j,
        serde_json::to_vec(&st).unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    let out = js(&out);
    assert_eq!(
        (
            out["spec"]["replicas"].clone(),
            out["status"]["observedGeneration"].clone()
        ),
        (json!(1), json!(2))
    );
    c.shutdown().await;
});

// Hand-built protobuf (wire format): what helm sends for its release Secrets.
fn ld(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3 | 2) as u8];
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(payload);
    out
}

bounded_test!(protobuf_secret_and_delete_options, {
    let (c, client) = api(no_controllers()).await;
    let mut meta = ld(1, b"sh.helm.release.v1.r.v1");
    let mut label = ld(1, b"owner");
    label.extend(ld(2, b"helm"));
    meta.extend(ld(11, &label));
    let mut data = ld(1, b"release");
    data.extend(ld(2, b"\x1f\x8b\x08"));
    let mut secret = ld(1, &meta);
    secret.extend(ld(2, &data));
    secret.extend(ld(3, b"helm.sh/release.v1"));
    let mut tm = ld(1, b"v1");
    tm.extend(ld(2, b"Secret"));
    let mut body = b"k8s\0".to_vec();
    body.extend(ld(1, &tm));
    body.extend(ld(2, &secret));
    let pb = [
        ("content-type", "application/vnd.kubernetes.protobuf"),
        (
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        ),
    ];
    let (code, ct, out) = send(
        &client,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &pb,
        body,
    )
    .await;
    assert_eq!((code, ct.as_str()), (201, "application/json"));
    let out = js(&out);
    assert_eq!(out["data"]["release"], "H4sI");
    assert_eq!(out["type"], "helm.sh/release.v1");
    let (_, _, l) = send(
        &client,
        "GET",
        "/api/v1/secrets?labelSelector=owner%3Dhelm",
        &[],
        vec![],
    )
    .await;
    assert_eq!(js(&l)["items"].as_array().unwrap().len(), 1);
    let mut del = ld(4, b"Background");
    del.insert(0, 0);
    del.remove(0);
    let mut tm = ld(1, b"meta.k8s.io/v1");
    tm.extend(ld(2, b"DeleteOptions"));
    let mut body = b"k8s\0".to_vec();
    body.extend(ld(1, &tm));
    body.extend(ld(2, &del));
    let (code, _, out) = send(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/secrets/sh.helm.release.v1.r.v1",
        &pb,
        body,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(js(&out)["status"], "Success");
    // A protobuf Deployment is not decodable by kubesim: 415, not a silent mis-decode.
    let mut tm = ld(1, b"apps/v1");
    tm.extend(ld(2, b"Deployment"));
    let mut body = b"k8s\0".to_vec();
    body.extend(ld(1, &tm));
    let (code, _, _) = send(
        &client,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        &pb,
        body,
    )
    .await;
    assert_eq!(code, 415);
    c.shutdown().await;
});

bounded_test!(legacy_watch_path_and_admin_endpoint, {
    let (c, client) = api(no_controllers()).await;
    let rv = c.store().resource_version();
    c.store()
        .create(
            &ResourceKey::new("", "configmaps"),
            json!({"metadata": {"name": "w", "namespace": "default"}}),
        )
        .unwrap();
    let (code, ct, body) = send(
        &client,
        "GET",
        &format!(
            "/api/v1/watch/namespaces/default/configmaps?resourceVersion={rv}&timeoutSeconds=1"
        ),
        &[],
        vec![],
    )
    .await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (
            lines[0]["type"].as_str(),
            lines[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("w"))
    );
    // kubectl get -w asks for Tables: one row per event, columns only in the first
    c.store()
        .create(
            &ResourceKey::new("", "configmaps"),
            json!({"metadata": {"name": "w2", "namespace": "default"}, "data": {"a": "b"}}),
        )
        .unwrap();
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (_, _, body) = send(
        &client,
        "GET",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        ),
        &[("accept", table)],
        vec![],
    )
    .await;
    let events: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(events[0]["object"]["columnDefinitions"][1]["name"], "Data");
    assert_eq!(events[1]["object"]["columnDefinitions"], json!([]));
    assert_eq!(events[1]["object"]["rows"][0]["cells"][0], "w2");
    assert_eq!(events[1]["object"]["rows"][0]["cells"][1], 1);
    // sendInitialEvents without resourceVersionMatch=NotOlderThan is rejected
    let (code, _, _) = send(
        &client,
        "GET",
        "/api/v1/configmaps?watch=1&sendInitialEvents=true",
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 422);
    // admin endpoint: faults over HTTP, request log
    let spec = json!({"errors": [{"verb": "create", "resource": "configmaps", "code": 429, "retryAfterSeconds": 1, "times": 1}]});
    let (code, _, _) = send(
        &client,
        "POST",
        "/kubesim/faults",
        &[("content-type", "application/json")],
        serde_json::to_vec(&spec).unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    let resp = client
        .send(
            Request::post("/api/v1/namespaces/default/configmaps")
                .header("content-type", "application/json")
                .body(kube::client::Body::from(
                    br#"{"metadata":{"name":"t"}}"#.to_vec(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    // client-go and kube-rs retry a 429 after Retry-After: the create then succeeds
    assert_eq!(resp.status().as_u16(), 201);
    let creates: Vec<u16> = c
        .controls()
        .requests_where(|r| r.verb == "create")
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(creates, vec![429, 201]);
    let (code, _, _) = send(&client, "DELETE", "/kubesim/faults", &[], vec![]).await;
    assert_eq!(code, 200);
    let (_, _, log) = send(&client, "GET", "/kubesim/requests", &[], vec![]).await;
    let log = js(&log);
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verb"] == "watch" && r["resource"] == "configmaps")
    );
    assert!(log["counts"]["byCode"]["429"].as_u64().unwrap() >= 1);
    let (_, _, dump) = send(&client, "GET", "/kubesim/dump", &[], vec![]).await;
    assert!(
        js(&dump)["configmaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["metadata"]["name"] == "w")
    );
    c.shutdown().await;
});

bounded_test!(the_binary_writes_a_kubeconfig_and_stops_on_sigterm, {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let sa = dir.path().join("sa");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kc)
        .arg("--in-cluster-dir")
        .arg(&sa)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut url = String::new();
    while let Some(l) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if l.starts_with("https://") {
            url = l;
            break;
        }
    }
    assert!(url.starts_with("https://127.0.0.1:"));
    assert!(sa.join("token").exists() && sa.join("ca.crt").exists());
    let client = client_from(&std::fs::read_to_string(&kc).unwrap()).await;
    let (code, _, body) = send(
        &client,
        "GET",
        "/api/v1/namespaces/kube-system",
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(js(&body)["status"]["phase"], "Active");
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
});

// A client that goes away mid-request (a killed process) leaves its connection counted until
// the server is done with what it had sent (served or dropped): once `open_connections` is 0,
// the request log and the store are final for that client.
bounded_test!(open_connections_count_until_a_gone_client_is_settled, {
    let c = common::cluster(no_controllers()).await;
    let controls = c.controls();
    assert_eq!(controls.open_connections(), 0);
    controls.add_delay(kubesim::DelayRule {
        verb: Some("create".into()),
        resource: Some("configmaps".into()),
        namespace: Some("default".into()),
        delay_ms: 400,
        times: Some(1),
    });
    let client = common::client(&c).await;
    let sent = tokio::spawn(async move {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}});
        send(
            &client,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &[("content-type", "application/json")],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    });
    while controls.delayed_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client is gone (its task and its connection dropped); the server still holds the
    // request.
    sent.abort();
    let _ = sent.await;
    assert!(controls.open_connections() > 0, "{}", controls.describe());
    while controls.open_connections() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(controls.delayed_in_flight(), 0);
    let settled = |c: &kubesim::Cluster| {
        let creates = c
            .controls()
            .requests_where(|r| r.verb == "create" && r.resource == "configmaps")
            .len();
        let exists = c
            .store()
            .get(&ResourceKey::new("", "configmaps"), Some("default"), "late")
            .is_some();
        (creates, exists)
    };
    let first = settled(&c);
    // Whatever the outcome, it does not change afterwards: nothing of that client is left.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(settled(&c), first);
});
