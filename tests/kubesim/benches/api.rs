//! kubesim API benchmark: latency of a GET through kube-rs against a `/version` baseline on the
//! same keep-alive HTTPS connection, the same GET under load (200 open watches + a slow reader of a
//! large list), listing 10,000 ConfigMaps whole and paginated, and watch fan-out to 200 watchers.
//!
//! Run: `cargo bench -p kubesim --bench api`. Figures are printed as a table; ratios compare
//! each measurement with a baseline measured side by side in the same run.

use futures::{AsyncReadExt, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubesim::{Cluster, Config, ResourceKey};
use serde_json::json;
use std::time::{Duration, Instant};

const NS: &str = "bench";
const FANOUT_NS: &str = "fanout";
const OBJECTS: usize = 10_000;
const GETS: usize = 5_000;
const WATCHERS: usize = 200;
const FANOUT_WRITES: usize = 100;
const LIST_ROUNDS: usize = 5;
const PAGE: u32 = 500;

struct Stats {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let total: Duration = v.iter().sum();
    Stats {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        mean: total / v.len() as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

fn row(name: &str, s: &Stats, base: Option<&Stats>) {
    let r = base
        .map(|b| format!("p50 {} mean {}", ratio(s.p50, b.p50), ratio(s.mean, b.mean)))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}   {}",
        name,
        us(s.p50),
        us(s.p90),
        us(s.p99),
        us(s.mean),
        r
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn client(c: &Cluster) -> anyhow::Result<Client> {
    let kc = Kubeconfig::from_yaml(&c.kubeconfig_yaml())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// Interleaved GET ConfigMap / GET /version on one client (one keep-alive connection, since
/// requests are sequential): returns (get, version) samples.
async fn get_vs_version(c: &Client, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    let (mut gets, mut versions) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        let v = c.apiserver_version().await?;
        versions.push(t.elapsed());
        anyhow::ensure!(!v.git_version.is_empty(), "/version has no gitVersion");
        let name = format!("cm-{}", i % OBJECTS);
        let t = Instant::now();
        let cm = api.get(&name).await?;
        gets.push(t.elapsed());
        anyhow::ensure!(
            cm.metadata.name.as_deref() == Some(name.as_str()),
            "wrong object"
        );
    }
    Ok((gets, versions))
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rss_start = peak_rss_kib();
    let cluster = kubesim::start(Config {
        controllers: None,
        ..Config::default()
    })
    .await?;
    let store = cluster.store().clone();
    let ns = ResourceKey::new("", "namespaces");
    let cms = ResourceKey::new("", "configmaps");
    for n in [NS, FANOUT_NS] {
        store.create(
            &ns,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}),
        )?;
    }
    let t = Instant::now();
    for i in 0..OBJECTS {
        store.create(
            &cms,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("cm-{i}"), "namespace": NS,
                                "labels": {"app": "bench", "shard": (i % 10).to_string()}},
                   "data": {"key": "x".repeat(200), "index": i.to_string()}}),
        )?;
    }
    let load = t.elapsed();
    let rss_loaded = peak_rss_kib();

    let c = client(&cluster).await?;
    // Warm up: TLS handshake, connection pool, allocator.
    get_vs_version(&c, 200).await?;

    println!();
    println!("kubesim API benchmark ({OBJECTS} ConfigMaps of ~300 B data each; times in µs)");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}   ratio",
        "measurement", "p50", "p90", "p99", "mean"
    );

    // (1) GET one ConfigMap vs GET /version, interleaved on the same connection.
    let (gets, versions) = get_vs_version(&c, GETS).await?;
    let base_version = stats(versions);
    let base_get = stats(gets);
    row("(1) GET /version (baseline)", &base_version, None);
    row("(1) GET configmap, idle", &base_get, Some(&base_version));

    // (2) Same, with 200 open watches and a slow reader of the whole list.
    let wclient = client(&cluster).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut watchers = Vec::new();
    let rv = store.resource_version().to_string();
    for w in 0..WATCHERS {
        let api: Api<ConfigMap> = Api::namespaced(wclient.clone(), FANOUT_NS);
        let stream = api.watch(&WatchParams::default(), &rv).await?;
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(cm) = ev {
                    let at = Instant::now();
                    let _ = tx.send((w, cm.metadata.name.unwrap_or_default(), at));
                }
            }
        }));
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.controls().open_watches() < WATCHERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = cluster.controls().open_watches();

    let slow_client = client(&cluster).await?;
    let slow_bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sb = slow_bytes.clone();
    let slow = tokio::spawn(async move {
        loop {
            let req = http::Request::get(format!("/api/v1/namespaces/{NS}/configmaps"))
                .body(Vec::new())
                .expect("request");
            let Ok(body) = slow_client.request_stream(req).await else {
                return;
            };
            let mut body = std::pin::pin!(body);
            let mut buf = [0u8; 1024];
            // 1 KiB every 5 ms: ~200 KiB/s, far slower than the server writes.
            loop {
                match body.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        sb.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (gets, versions) = get_vs_version(&c, GETS).await?;
    let load_version = stats(versions);
    let load_get = stats(gets);
    let label = format!("(2) GET /version, {open} watches + slow reader");
    row(&label, &load_version, Some(&base_version));
    let label = format!("(2) GET configmap, {open} watches + slow reader");
    row(&label, &load_get, Some(&base_get));
    slow.abort();
    let slow_read = slow_bytes.load(std::sync::atomic::Ordering::Relaxed);

    // (4) Write fan-out: create -> all watchers saw ADDED.
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), FANOUT_NS);
    let mut fan = Vec::with_capacity(FANOUT_WRITES);
    for i in 0..FANOUT_WRITES {
        let name = format!("fan-{i}");
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))?;
        let t = Instant::now();
        api.create(&Default::default(), &cm).await?;
        let mut seen = 0;
        let mut last = t;
        while seen < WATCHERS {
            let (_, got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("watchers ended"))?;
            anyhow::ensure!(got == name, "watch event out of order: {got} before {name}");
            seen += 1;
            last = last.max(at);
        }
        fan.push(last - t);
    }
    let fan = stats(fan);
    let label = format!("(4) create -> all {WATCHERS} watchers got ADDED");
    row(&label, &fan, Some(&base_get));
    for w in watchers {
        w.abort();
    }

    // (3) List 10,000 ConfigMaps, whole and paginated.
    let lapi: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    let (mut whole, mut paged) = (Vec::new(), Vec::new());
    for _ in 0..LIST_ROUNDS {
        let t = Instant::now();
        let l = lapi.list(&ListParams::default()).await?;
        whole.push(t.elapsed());
        anyhow::ensure!(
            l.items.len() == OBJECTS,
            "whole list has {} items",
            l.items.len()
        );

        let t = Instant::now();
        let mut n = 0;
        let mut lp = ListParams::default().limit(PAGE);
        loop {
            let l = lapi.list(&lp).await?;
            n += l.items.len();
            match l.metadata.continue_.filter(|s| !s.is_empty()) {
                Some(tok) => lp = lp.continue_token(&tok),
                None => break,
            }
        }
        paged.push(t.elapsed());
        anyhow::ensure!(n == OBJECTS, "paginated list has {n} items");
    }
    let whole = stats(whole);
    let paged = stats(paged);
    row("(3) LIST 10k configmaps, whole", &whole, None);
    let label = format!("(3) LIST 10k configmaps, limit={PAGE}");
    row(&label, &paged, Some(&whole));
    let per = |s: &Stats| s.p50 / OBJECTS as u32;
    println!(
        "{:<44} {:>9} {:>9}   vs single GET p50: whole {}, paginated {}",
        "(3) per object (p50 / 10k): whole, paged",
        us(per(&whole)),
        us(per(&paged)),
        ratio(per(&whole), base_get.p50),
        ratio(per(&paged), base_get.p50),
    );

    println!();
    println!(
        "load {OBJECTS} objects into the store: {:.0} ms; slow reader consumed {} KiB during (2)",
        load.as_secs_f64() * 1e3,
        slow_read / 1024
    );
    println!(
        "peak RSS (VmHWM): {} MiB at start, {} MiB after loading {OBJECTS} objects, {} MiB at end",
        rss_start / 1024,
        rss_loaded / 1024,
        peak_rss_kib() / 1024
    );
    cluster.shutdown().await;
    Ok(())
}
