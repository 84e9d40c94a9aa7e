//! Every fault kubesim's controls inject is seen by real helm as a real API server would
//! present it: retried where client-go retries, reported with the server's message otherwise.

mod common;

use std::time::Duration;

use common::{Helm, Out, Sim, chart};
use kubesim::{ErrorRule, UnavailableMode};

async fn install(sim: &Sim, v: Helm, name: &str, wait: bool) -> Out {
    let chart = chart("hooks");
    let mut args = vec![
        "install",
        name,
        chart.as_str(),
        "-n",
        "app",
        "--create-namespace",
        "--timeout",
        "60s",
    ];
    if wait {
        args.extend(v.wait_flags());
    }
    sim.helm(v, &args).await
}

fn codes_for(sim: &Sim, verb: &str, resource: &str) -> Vec<u16> {
    sim.cluster
        .controls()
        .requests_where(|r| r.verb == verb && r.resource == resource)
        .iter()
        .map(|r| r.code)
        .collect()
}

/// 429 with Retry-After: client-go waits and retries; the install succeeds.
async fn throttling_is_retried(v: Helm) {
    let sim = Sim::start().await;
    sim.cluster
        .controls()
        .throttle(Some("create"), Some("secrets"), 1.0, 1, Some(2));
    let out = install(&sim, v, "rel", false).await.ok();
    let codes = codes_for(&sim, "create", "secrets");
    assert_eq!(
        &codes[..3],
        &[429, 429, 201],
        "release Secret creates: {codes:?}"
    );
    assert!(
        out.took >= Duration::from_secs(2),
        "Retry-After: 1 was not honoured: took {:?}",
        out.took
    );
    assert!(sim.get("", "configmaps", "app", "rel-main").is_some());
}

/// An API unavailable (503 + Retry-After) for a short window: helm rides it out.
async fn short_unavailability_is_ridden_out(v: Helm) {
    let sim = Sim::start().await;
    sim.cluster.controls().unavailable_for(
        Duration::from_millis(1500),
        UnavailableMode::ServiceUnavailable,
    );
    install(&sim, v, "rel", false).await.ok();
    let c = sim.cluster.controls().counts();
    assert!(
        c.by_code.get(&503).copied().unwrap_or(0) >= 1,
        "no request saw the 503 window: {c:?}"
    );
}

/// An injected 500 on the write of a release object fails helm with the server's message.
async fn internal_error_fails_the_install(v: Helm) {
    let sim = Sim::start().await;
    // helm 4 writes with server-side apply (PATCH), helm 3 creates (POST).
    let verb = match v {
        Helm::V4 => "patch",
        Helm::V3 => "create",
    };
    sim.cluster.controls().add_error(ErrorRule {
        verb: Some(verb.into()),
        resource: Some("configmaps".into()),
        namespace: None,
        rate: 1.0,
        code: 500,
        retry_after_seconds: None,
        times: None,
    });
    let out = install(&sim, v, "rel", false).await.failed();
    assert!(
        out.stderr
            .contains("Internal error occurred: injected by kubesim"),
        "{out}"
    );
    let st = sim
        .helm(v, &["status", "rel", "-n", "app", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(st["info"]["status"], "failed");
}

/// Rejected tokens: helm reports the 401 as missing credentials.
async fn rejected_token_is_unauthorized(v: Helm) {
    let sim = Sim::start().await;
    sim.cluster.controls().reject_tokens(true);
    let out = install(&sim, v, "rel", false).await.failed();
    assert!(
        out.stderr
            .contains("the server has asked for the client to provide credentials"),
        "{out}"
    );
    sim.cluster.controls().reject_tokens(false);
    install(&sim, v, "rel", false).await.ok();
}

/// The connection dropped while helm writes its release record: helm reports the broken
/// connection (`unexpected EOF`, or an HTTP/2 stream error) naming the request, as it would
/// if the API server died mid-request; POSTs are not retried.
async fn dropped_write_fails_with_a_connection_error(v: Helm) {
    let sim = Sim::start().await;
    sim.cluster
        .controls()
        .drop_connections(Some("create"), Some("secrets"), 1.0, Some(1));
    let out = install(&sim, v, "rel", false).await.failed();
    let transport = [
        "EOF",
        "connection reset",
        "connection lost",
        "INTERNAL_ERROR",
    ];
    assert!(
        transport.iter().any(|t| out.stderr.contains(t)),
        "helm does not report a transport failure: {out}"
    );
    let codes = codes_for(&sim, "create", "secrets");
    assert_eq!(codes, [0], "the release write was dropped and not retried");
    assert!(
        out.stderr
            .contains("failed to create: Post \"https://127.0.0.1:")
            && out.stderr.contains("/api/v1/namespaces/app/secrets\""),
        "{out}"
    );
    // The fault fired once; the next attempt goes through.
    install(&sim, v, "rel", false).await.ok();
}

/// Every open watch cut while helm waits: helm re-watches and still sees readiness.
async fn cut_watches_are_rewatched(v: Helm) {
    let sim = Sim::start().await;
    let chart = chart("platform");
    let mut args = vec![
        "install",
        "rel",
        chart.as_str(),
        "-n",
        "app",
        "--create-namespace",
        "--timeout",
        "60s",
        "--set",
        r"podAnnotations.kubesim\.strata\.dev/ready-after=2s",
    ];
    args.extend(v.wait_flags());
    let controls = sim.cluster.controls().clone();
    let cutter = tokio::spawn(async move {
        // Wait until helm is waiting (watches open), then cut them all.
        for _ in 0..200 {
            if controls.open_watches() > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                controls.cut_watches();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    });
    let watches_before = |sim: &Sim| {
        sim.cluster
            .controls()
            .requests_where(|r| r.verb == "watch")
            .len()
    };
    sim.helm(v, &args).await.ok();
    let cut = cutter.await.expect("cutter task");
    let d = sim.get("apps", "deployments", "app", "rel-web").unwrap();
    assert!(common::condition(&d, "Available").is_some_and(|c| c["status"] == "True"));
    if v == Helm::V4 {
        assert!(cut, "helm 4 never opened a watch");
        let watches = watches_before(&sim);
        assert!(
            watches > 8,
            "helm 4 re-watches after the cut; saw {watches} watch requests"
        );
    }
}

/// A whole API that refuses connections: helm cannot reach the cluster.
async fn refused_connections_are_unreachable(v: Helm) {
    let sim = Sim::start().await;
    sim.cluster
        .controls()
        .unavailable_for(Duration::from_secs(300), UnavailableMode::Refuse);
    let out = sim.helm(v, &["list", "-A", "-o", "json"]).await.failed();
    assert!(
        out.stderr.contains("EOF") || out.stderr.contains("connection reset"),
        "{out}"
    );
    sim.cluster.controls().available();
    sim.helm(v, &["list", "-A", "-o", "json"]).await.ok();
}

/// Latency on every request slows helm down but changes nothing else.
async fn latency_slows_but_succeeds(v: Helm) {
    let sim = Sim::start().await;
    sim.cluster
        .controls()
        .set_latency(Duration::from_millis(100), Duration::ZERO);
    let out = install(&sim, v, "rel", false).await.ok();
    assert!(
        out.took >= Duration::from_millis(500),
        "took {:?}",
        out.took
    );
    let slow = sim
        .cluster
        .controls()
        .requests_where(|r| r.verb == "create" && r.resource == "secrets");
    assert!(slow.iter().all(|r| r.duration_ms >= 100.0), "{slow:?}");
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn helm4() {
                $name(Helm::V4).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn helm3() {
                $name(Helm::V3).await;
            }
        }
    };
}

both!(throttling_is_retried);
both!(short_unavailability_is_ridden_out);
both!(internal_error_fails_the_install);
both!(rejected_token_is_unauthorized);
both!(dropped_write_fails_with_a_connection_error);
both!(cut_watches_are_rewatched);
both!(refused_connections_are_unreachable);
both!(latency_slows_but_succeeds);
