//! kubesim's API as kube-rs sees it: typed and dynamic CRUD, server-side apply, watches
//! (including across server-cut streams and streaming lists), selectors, pagination, GC,
//! namespaces, faults and scale behaviour.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::watcher;
use kubesim::{Config, ResourceKey, UnavailableMode};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

mod common;

use common::{api, bounded_test, client, client_from, cluster, no_controllers};

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn api_err(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

bounded_test!(typed_crud_with_real_status_errors, {
    let (c, client) = api(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({"app": "x"})))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    let (code, reason) = api_err(
        cms.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    cms.create(&PostParams::default(), &cm("b", json!({"app": "y"})))
        .await
        .unwrap();

    let l = cms
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    assert_eq!(
        l.items
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    let l = cms
        .list(&ListParams::default().labels("app in (x,y)"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 2);
    let l = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let (code, _) = api_err(
        cms.list(&ListParams::default().labels("a b c"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);

    // merge patch, then a stale replace -> 409 Conflict
    let p = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k2": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["k2"], "v2");
    let (code, reason) = api_err(
        cms.replace("a", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // delete -> Status, then 404 NotFound
    let d = cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(d.is_right(), "immediate deletion returns a Status");
    let (code, reason) = api_err(cms.get("a").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    // missing namespace
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let e = other
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(s.code, 404);
    assert_eq!(s.message, "namespaces \"nope\" not found");
    c.shutdown().await;
});

bounded_test!(server_side_apply_creates_merges_and_drops_removed_fields, {
    let (c, client) = api(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PatchParams::apply("strata").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
    let o = cms.patch("ssa", &pp, &Patch::Apply(&first)).await.unwrap();
    assert_eq!(o.data.as_ref().unwrap().len(), 2);
    let mf = o.metadata.managed_fields.as_ref().unwrap();
    assert!(
        mf.iter()
            .any(|m| m.manager.as_deref() == Some("strata")
                && m.operation.as_deref() == Some("Apply"))
    );
    // another manager adds a key; strata re-applies without y and b
    cms.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"other": "kept"}})),
    )
    .await
    .unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"a": "1"}}, "data": {"x": "3"}});
    let o = cms.patch("ssa", &pp, &Patch::Apply(&second)).await.unwrap();
    let data = o.data.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("3"));
    assert!(!data.contains_key("y"));
    assert_eq!(data.get("other").map(String::as_str), Some("kept"));
    assert_eq!(o.metadata.labels.unwrap().len(), 1);
    c.shutdown().await;
});

bounded_test!(crds_are_served_immediately_and_dynamic_objects_work, {
    let (c, client) = api(Config::default()).await;
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
            ),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.strata.dev"},
        "spec": {"group": "example.strata.dev", "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}})).unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conds = created.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "example.strata.dev",
            "v1",
            "Gadget",
        ))
        .expect("the CRD's kind is discoverable at once");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let g = json!({"apiVersion": "example.strata.dev/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 1}, "status": {"ignored": true}});
    let o = gadgets
        .patch("g1", &PatchParams::apply("t"), &Patch::Apply(&g))
        .await
        .unwrap();
    assert_eq!(o.metadata.generation, Some(1));
    assert!(o.data.get("status").is_none(), "status is a subresource");
    let o = gadgets
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(o.metadata.generation, Some(2));
    let o = gadgets
        .patch_status(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(o.data["status"]["ready"], true);
    assert_eq!(o.metadata.generation, Some(2));
    // strategic merge patch is not supported for custom resources (415), like the real server
    let (code, _) = api_err(
        gadgets
            .patch(
                "g1",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 3}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 415);
    // deleting the CRD removes its objects and stops serving the kind
    crds.delete("gadgets.example.strata.dev", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _) = api_err(gadgets.get("g1").await.unwrap_err());
    assert_eq!(code, 404);
    assert!(
        c.store()
            .resource_for_kind("example.strata.dev/v1", "Gadget")
            .is_none()
    );
    c.shutdown().await;
});

async fn collect_names(
    rx: &mut (impl futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin),
    want: &[&str],
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.iter().all(|w| seen.contains(*w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rx.next())
            .await
            .expect("watcher delivers in time");
        match ev {
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                seen.insert(o.metadata.name.unwrap());
            }
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    seen
}

bounded_test!(watcher_keeps_working_across_cut_watches, {
    let (c, client) = api(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("w1", json!({})))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    collect_names(&mut stream, &["w1"]).await;
    // the server closes every watch now; the watcher re-watches from its resourceVersion
    c.controls().cut_watches();
    cms.create(&PostParams::default(), &cm("w2", json!({})))
        .await
        .unwrap();
    collect_names(&mut stream, &["w2"]).await;
    // watches opened from now on end after one event
    c.controls().cut_watches_after(Some(1));
    c.controls().cut_watches();
    for n in ["w3", "w4", "w5"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    collect_names(&mut stream, &["w3", "w4", "w5"]).await;
    let watches = c
        .controls()
        .requests_where(|r| r.verb == "watch" && r.resource == "configmaps")
        .len();
    assert!(
        watches >= 3,
        "the watcher re-watched after each cut ({watches} watches)"
    );
    c.shutdown().await;
});

bounded_test!(streaming_list_watch_ends_initial_events_with_a_bookmark, {
    let (c, client) = api(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for n in ["s1", "s2"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut init = BTreeSet::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(watcher::Event::InitApply(o))) => {
                init.insert(o.metadata.name.unwrap());
            }
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(init, BTreeSet::from(["s1".to_string(), "s2".to_string()]));
    let w = c
        .controls()
        .requests_where(|r| r.verb == "watch" && r.query.contains("sendInitialEvents=true"));
    assert!(!w.is_empty());
    c.shutdown().await;
});

bounded_test!(raw_watch_from_an_expired_resource_version_gets_410, {
    let mut cfg = Config::default();
    cfg.store.history_size = 10;
    let (c, client) = api(cfg).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("e{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut s = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(60), s.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    c.shutdown().await;
});

bounded_test!(faults_look_like_a_real_api_server, {
    let (c, client) = api(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctl = c.controls();

    // 429 with Retry-After: kube-rs retries on its own (like client-go) and then sees the
    // real answer (404); the log shows the throttled attempt first.
    ctl.throttle(Some("get"), Some("configmaps"), 1.0, 1, Some(1));
    let (code, _) = api_err(cms.get("missing").await.unwrap_err());
    assert_eq!(code, 404);
    let gets: Vec<u16> = ctl
        .requests_where(|r| r.verb == "get" && r.name == "missing")
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(gets, vec![429, 404]);

    // A 503 window: kube-rs backs off and retries like against a real server, and succeeds
    // once the window ends; the log shows the 503 answers first.
    ctl.unavailable_for(
        Duration::from_millis(300),
        UnavailableMode::ServiceUnavailable,
    );
    cms.list(&ListParams::default()).await.unwrap();
    let lists: Vec<u16> = ctl
        .requests_where(|r| r.verb == "list" && r.resource == "configmaps")
        .iter()
        .map(|r| r.code)
        .collect();
    assert!(
        lists.len() >= 2 && lists[0] == 503 && *lists.last().unwrap() == 200,
        "{lists:?}"
    );

    ctl.add_error(kubesim::ErrorRule {
        verb: Some("create".into()),
        resource: Some("configmaps".into()),
        code: 500,
        times: Some(1),
        ..kubesim::ErrorRule::default()
    });
    let (code, reason) = api_err(
        cms.create(&PostParams::default(), &cm("f", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    cms.create(&PostParams::default(), &cm("f", json!({})))
        .await
        .unwrap();

    ctl.drop_connections(Some("list"), Some("configmaps"), 1.0, Some(1));
    let e = cms.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "a dropped connection is not an API status: {e:?}"
    );

    ctl.set_latency(Duration::from_millis(150), Duration::ZERO);
    let t = Instant::now();
    cms.get("f").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    ctl.set_latency(Duration::ZERO, Duration::ZERO);

    ctl.reject_tokens(true);
    let (code, reason) = api_err(cms.get("f").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    ctl.reject_tokens(false);
    cms.get("f").await.unwrap();

    let counts = ctl.counts();
    assert!(counts.by_code[&429] >= 1 && counts.by_code[&503] >= 1 && counts.by_code[&401] >= 1);
    assert!(counts.by_verb["get"] >= 3);
    ctl.reset_requests();
    assert!(ctl.requests().is_empty());
    c.shutdown().await;
});

bounded_test!(namespace_deletion_terminates_then_removes_contents, {
    let (c, client) = api(Config::default()).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    let d = nss.delete("gone", &DeleteParams::default()).await.unwrap();
    let ns = d
        .left()
        .expect("the namespace is returned while it terminates");
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = cms
        .create(&PostParams::default(), &cm("d", json!({})))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(s.code, 403);
    assert!(
        s.message.contains("because it is being terminated"),
        "{}",
        s.message
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match nss.get("gone").await {
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            _ if Instant::now() > deadline => panic!("namespace never went away"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        c.store()
            .get(&ResourceKey::new("", "configmaps"), Some("gone"), "c")
            .is_none()
    );
    c.shutdown().await;
});

bounded_test!(owner_references_are_garbage_collected, {
    let (c, client) = api(Config::default()).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})).unwrap();
    let d = deploys.create(&PostParams::default(), &d).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut owned = cm("owned", json!({}));
    owned.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "web", "uid": d.metadata.uid.clone().unwrap(), "blockOwnerDeletion": true}))
        .unwrap(),
    ]);
    cms.create(&PostParams::default(), &owned).await.unwrap();
    deploys
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while deploys.get_opt("web").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "owner never went away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cms.get_opt("owned").await.unwrap().is_none(),
        "dependent collected"
    );
    c.shutdown().await;
});

bounded_test!(in_cluster_files_and_issued_tokens_work, {
    let c = cluster(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = c
        .write_in_cluster_env(dir.path().join("sa"), "apps")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&env.namespace_path).unwrap(),
        "apps"
    );
    let token = std::fs::read_to_string(&env.token_path).unwrap();
    assert_ne!(token, c.token());
    let host = env
        .env
        .iter()
        .find(|(k, _)| k == "KUBERNETES_SERVICE_HOST")
        .unwrap()
        .1
        .clone();
    let port = env
        .env
        .iter()
        .find(|(k, _)| k == "KUBERNETES_SERVICE_PORT")
        .unwrap()
        .1
        .clone();
    let ca = std::fs::read_to_string(&env.ca_path).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    tokenFile: {}\n",
        env.ca_path.display(),
        env.token_path.display()
    );
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let client = client_from(&yaml).await;
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "35"));
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    secrets.list(&ListParams::default()).await.unwrap();
    c.shutdown().await;
});

bounded_test!(many_watches_all_receive_an_event, {
    let (c, client) = api(Config::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let cms = cms.clone();
        let rv = rv.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = cms
                .watch(&WatchParams::default().timeout(30), &rv)
                .await
                .unwrap()
                .boxed();
            while let Some(ev) = s.try_next().await.unwrap() {
                if let WatchEvent::Added(o) = ev {
                    return o.metadata.name.unwrap();
                }
            }
            String::new()
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.controls().open_watches() < 200 {
        assert!(
            Instant::now() < deadline,
            "only {} watches open",
            c.controls().open_watches()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cms.create(&PostParams::default(), &cm("broadcast", json!({})))
        .await
        .unwrap();
    for t in tasks {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .unwrap()
                .unwrap(),
            "broadcast"
        );
    }
    c.shutdown().await;
});

bounded_test!(ten_thousand_objects_list_with_pagination, {
    let c = cluster(no_controllers()).await;
    let res = ResourceKey::new("", "configmaps");
    for i in 0..10_000 {
        c.store()
            .create(&res, json!({"metadata": {"name": format!("cm-{i:05}"), "namespace": "default", "labels": {"even": (i % 2 == 0).to_string()}}}))
            .unwrap();
    }
    let client = client(&c).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut names = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().limit(500).labels("even=true");
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let l = cms.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(l.metadata.resource_version.clone());
        assert_eq!(
            Some(l.metadata.resource_version.clone()),
            first_rv,
            "continued pages keep the snapshot's resourceVersion"
        );
        for o in l.items {
            assert!(
                names.insert(o.metadata.name.unwrap()),
                "no duplicates across pages"
            );
        }
        match l.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(names.len(), 5_000);
    assert_eq!(pages, 10);
    c.shutdown().await;
});

bounded_test!(non_string_label_values_are_rejected_like_the_real_server, {
    let (c, client) = api(Config::default()).await;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad", "annotations": {"x": true}}});
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let e = client.request::<serde_json::Value>(req).await.unwrap_err();
    let kube::Error::Api(s) = e else {
        panic!("{e:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("cannot unmarshal bool into Go struct field ObjectMeta.metadata.annotations of type string"), "{}", s.message);
    // the same through server-side apply of a pod template
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": 1}}, "spec": {"containers": []}}}});
    let deploys: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &ApiResource::erase::<Deployment>(&()));
    let e = deploys
        .patch("d", &PatchParams::apply("t"), &Patch::Apply(&d))
        .await
        .unwrap_err();
    let (code, _) = api_err(e);
    assert_eq!(code, 400);
    assert!(
        c.store()
            .get(&ResourceKey::new("", "configmaps"), Some("default"), "bad")
            .is_none()
    );
    c.shutdown().await;
});

bounded_test!(
    a_watcher_that_stops_reading_is_closed_without_blocking_writers,
    {
        let (c, client) = api(Config {
            store: kubesim::StoreConfig {
                history_size: 100,
                ..kubesim::StoreConfig::default()
            },
            ..no_controllers()
        })
        .await;
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        // Opened, never read.
        let stalled = cms.watch(&WatchParams::default(), &rv).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.controls().open_watches() < 1 {
            assert!(Instant::now() < deadline, "watch never opened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let big = "x".repeat(40_000);
        let res = ResourceKey::new("", "configmaps");
        let t = Instant::now();
        for i in 0..1_000 {
            c.store()
            .create(&res, json!({"metadata": {"name": format!("big-{i}"), "namespace": "default"}, "data": {"d": big}}))
            .unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "writers were not blocked by the stalled watcher"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.controls().open_watches() > 0 {
            assert!(
                Instant::now() < deadline,
                "the stalled watch was never closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(stalled);
        c.shutdown().await;
    }
);

bounded_test!(scale_subresource, {
    let (c, client) = api(no_controllers()).await;
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let s = deploys.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(2));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=web"));
    let s = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(4));
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));
    let (code, _) = api_err(
        deploys
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": -1}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    c.shutdown().await;
});

bounded_test!(watches_of_clients_that_went_away_are_dropped, {
    let (c, client) = api(no_controllers()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(
            cms.watch(&WatchParams::default(), "0")
                .await
                .unwrap()
                .boxed(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.controls().open_watches() < 20 {
        assert!(Instant::now() < deadline, "watches never opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(streams);
    // The server notices on its next write (or the connection closing) and frees them.
    let mut i = 0;
    while c.controls().open_watches() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} dead watches still open",
            c.controls().open_watches()
        );
        i += 1;
        c.store()
            .create(
                &ResourceKey::new("", "configmaps"),
                json!({"metadata": {"name": format!("poke-{i}"), "namespace": "default"}}),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
});

bounded_test!(metadata_only_get_list_and_watch, {
    let (_c, client) = api(Config::default()).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s1", "labels": {"owner": "helm", "version": "1"}},
        "data": {"release": "c2VjcmV0"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let meta = secrets.get_metadata("s1").await.unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["version"], "1");
    let list = secrets
        .list_metadata(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    // The data never travels: the raw response has metadata only.
    let raw = client
        .request_text(
            http::Request::get("/api/v1/namespaces/default/secrets")
                .header(
                    "Accept",
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        raw.contains("PartialObjectMetadataList") && !raw.contains("c2VjcmV0"),
        "{raw}"
    );
    let metas: Api<kube::core::PartialObjectMeta<Secret>> =
        Api::namespaced(client.clone(), "default");
    let stream = watcher(metas, watcher::Config::default());
    futures::pin_mut!(stream);
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        if let watcher::Event::InitApply(o) = ev {
            seen.push(o.metadata.name.unwrap_or_default());
        }
        if !seen.is_empty() {
            break;
        }
    }
    assert_eq!(seen, vec!["s1".to_string()]);
});
