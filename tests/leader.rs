//! Leader election on a real (simulated) API server: kubesim over HTTPS, kube-rs clients, one
//! client per elector as separate pods would have. Short timings: lease 2 s, renew deadline
//! 1 s, retry period 200 ms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use kubesim::{Cluster, Config, ErrorRule, UnavailableMode};
use strata::agent::leader::{Attempt, LeaderElector, Leadership, LeaseSnapshot, Timings};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

fn timings() -> Timings {
    Timings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
    }
}

async fn cluster() -> Cluster {
    kubesim::start(Config {
        controllers: None,
        ..Config::default()
    })
    .await
    .expect("kubesim starts")
}

async fn client(c: &Cluster) -> Client {
    testkit::cluster::kube_client(c).await
}

async fn elector(c: &Cluster, lease: &str, id: &str) -> LeaderElector {
    LeaderElector::new(client(c).await, NS, lease, id, timings()).expect("elector")
}

async fn lease_record(c: &Cluster, name: &str) -> LeaseSnapshot {
    let api: Api<Lease> = Api::namespaced(client(c).await, NS);
    LeaseSnapshot::from_lease(&api.get(name).await.expect("lease exists"))
}

/// Spawns `acquire`; the handle yields the leadership and the time it was won.
fn spawn_acquire(
    e: &LeaderElector,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<(Leadership, Instant)> {
    let (e, shutdown) = (e.clone(), shutdown.clone());
    tokio::spawn(async move {
        let l = e.acquire(&shutdown).await.expect("acquire");
        (l, Instant::now())
    })
}

#[tokio::test]
async fn two_electors_exactly_one_leader() {
    let c = cluster().await;
    let a = elector(&c, "strata-leader", "pod-a").await;
    let b = elector(&c, "strata-leader", "pod-b").await;
    let shutdown = CancellationToken::new();
    let mut ha = spawn_acquire(&a, &shutdown);
    let mut hb = spawn_acquire(&b, &shutdown);

    let (winner, mut loser_handle, loser) = tokio::select! {
        r = &mut ha => (r.unwrap().0, hb, b.clone()),
        r = &mut hb => (r.unwrap().0, ha, a.clone()),
        _ = sleep(Duration::from_secs(3)) => panic!("nobody became leader within 3s"),
    };
    let me = winner.elector().identity().to_string();
    // The leader keeps renewing: the other one stays waiting well past the lease duration.
    assert!(
        timeout(Duration::from_secs(3), &mut loser_handle)
            .await
            .is_err(),
        "{} became leader while {me} held the lease",
        loser.identity()
    );
    assert!(!winner.is_lost());
    assert_eq!(
        lease_record(&c, "strata-leader").await.holder.as_deref(),
        Some(me.as_str())
    );
    assert_eq!(loser.current_holder().as_deref(), Some(me.as_str()));
    assert_eq!(
        loser.other_holder_alive().await.unwrap().as_deref(),
        Some(me.as_str())
    );
    assert_eq!(winner.elector().other_holder_alive().await.unwrap(), None);

    shutdown.cancel();
    assert!(loser_handle.await.is_err(), "cancelled acquire fails");
    drop(winner);
    c.shutdown().await;
}

#[tokio::test]
async fn released_lease_is_taken_over_promptly() {
    let c = cluster().await;
    let a = elector(&c, "strata-leader", "pod-a").await;
    let b = elector(&c, "strata-leader", "pod-b").await;
    let shutdown = CancellationToken::new();
    let la = a.acquire(&shutdown).await.unwrap();
    let hb = spawn_acquire(&b, &shutdown);
    sleep(Duration::from_millis(500)).await;
    assert!(!hb.is_finished());
    let lost = la.lost();

    let watcher = elector(&c, "strata-leader", "pod-watcher").await;
    assert_eq!(
        watcher.other_holder_alive().await.unwrap().as_deref(),
        Some("pod-a")
    );
    let released_at = Instant::now();
    la.release().await.expect("release");
    assert!(lost.is_cancelled(), "release fires lost()");
    if !hb.is_finished() {
        // Between the release and b's next attempt nobody holds the lease.
        let free = watcher.other_holder_alive().await.unwrap();
        assert!(
            free.is_none() || free.as_deref() == Some("pod-b"),
            "{free:?}"
        );
    }
    let (lb, won_at) = timeout(Duration::from_secs(2), hb)
        .await
        .expect("b takes over")
        .unwrap();
    let took = won_at - released_at;
    assert!(
        took < Duration::from_millis(1500),
        "takeover after release took {took:?}, expected about one retry period (200ms), well under the lease duration (2s)"
    );
    let rec = lease_record(&c, "strata-leader").await;
    assert_eq!(rec.holder.as_deref(), Some("pod-b"));
    assert_eq!(rec.transitions, 1, "a -> (released) -> b is one transition");
    assert_eq!(rec.lease_duration, Some(Duration::from_secs(2)));
    assert!(!lb.is_lost());
    lb.release().await.unwrap();
    assert_eq!(lease_record(&c, "strata-leader").await.holder, None);
    c.shutdown().await;
}

#[tokio::test]
async fn dropped_leader_is_replaced_after_the_lease_duration() {
    let c = cluster().await;
    let a = elector(&c, "strata-leader", "pod-a").await;
    let b = elector(&c, "strata-leader", "pod-b").await;
    let shutdown = CancellationToken::new();
    let la = a.acquire(&shutdown).await.unwrap();
    let hb = spawn_acquire(&b, &shutdown);
    sleep(Duration::from_millis(800)).await;
    let lost = la.lost();

    let dropped_at = Instant::now();
    drop(la); // as if the process died: no release
    assert!(lost.is_cancelled());
    let (_lb, won_at) = timeout(Duration::from_secs(5), hb)
        .await
        .expect("b takes over")
        .unwrap();
    let took = won_at - dropped_at;
    // a's last renewal was at most one retry period before the drop; b waits until it has
    // seen that record unchanged for the lease duration (2 s).
    assert!(
        took >= Duration::from_millis(1700) && took <= Duration::from_millis(4000),
        "takeover after a crash took {took:?}, expected about the lease duration (2s)"
    );
    let rec = lease_record(&c, "strata-leader").await;
    assert_eq!(rec.holder.as_deref(), Some("pod-b"));
    assert_eq!(rec.transitions, 1);
    c.shutdown().await;
}

#[tokio::test]
async fn api_outage_fires_lost_and_nobody_acts_until_it_holds_the_lease() {
    for mode in [UnavailableMode::ServiceUnavailable, UnavailableMode::Refuse] {
        let c = cluster().await;
        let a = elector(&c, "strata-leader", "pod-a").await;
        let b = elector(&c, "strata-leader", "pod-b").await;
        let shutdown = CancellationToken::new();
        let la = a.acquire(&shutdown).await.unwrap();
        let hb = spawn_acquire(&b, &shutdown);
        sleep(Duration::from_millis(600)).await;

        let outage = Duration::from_secs(3);
        let began = Instant::now();
        c.controls().unavailable_for(outage, mode);
        let lost = la.lost();
        timeout(Duration::from_secs(2), lost.cancelled())
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: lost() did not fire within 2s of the outage"));
        let lost_after = began.elapsed();
        assert!(
            lost_after >= Duration::from_millis(700) && lost_after <= Duration::from_millis(1800),
            "{mode:?}: lost() fired {lost_after:?} into the outage, expected at the renew deadline (1s after the last renewal), before anyone could take over (2s)"
        );
        assert!(!hb.is_finished(), "{mode:?}: b acted during the outage");

        let (lb, won_at) = timeout(Duration::from_secs(6), hb)
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: b never took over after the outage"))
            .unwrap();
        assert!(
            won_at - began >= outage,
            "{mode:?}: b became leader {:?} into a {outage:?} outage",
            won_at - began
        );
        assert_eq!(
            lease_record(&c, "strata-leader").await.holder.as_deref(),
            Some("pod-b")
        );
        // The old leader stays stopped: a lost Leadership never renews again.
        sleep(Duration::from_millis(600)).await;
        assert_eq!(
            lease_record(&c, "strata-leader").await.holder.as_deref(),
            Some("pod-b")
        );
        assert!(!lb.is_lost());
        drop(la);
        drop(lb);
        c.shutdown().await;
    }
}

#[tokio::test]
async fn racing_candidates_never_both_win() {
    let c = cluster().await;
    // Latency makes every candidate read before any writes: all writes race on one version.
    c.controls()
        .set_latency(Duration::from_millis(60), Duration::from_millis(20));
    const N: usize = 4;

    // 1. Racing to create a new Lease.
    let mut electors = Vec::new();
    for i in 0..N {
        electors.push(elector(&c, "race-create", &format!("pod-{i}")).await);
    }
    c.controls().reset_requests();
    let results =
        futures::future::join_all(electors.iter().map(|e| e.try_acquire_or_renew())).await;
    let results: Vec<Attempt> = results.into_iter().map(|r| r.unwrap()).collect();
    let winners: Vec<usize> = (0..N).filter(|i| results[*i] == Attempt::Leader).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let writes = c
        .controls()
        .requests_where(|r| r.resource == "leases" && (r.verb == "create" || r.verb == "update"));
    assert_eq!(
        writes
            .iter()
            .filter(|r| r.code == 201 || r.code == 200)
            .count(),
        1,
        "{writes:?}"
    );
    assert_eq!(
        writes.iter().filter(|r| r.code == 409).count(),
        N - 1,
        "every loser got a 409: {writes:?}"
    );
    assert_eq!(
        lease_record(&c, "race-create").await.holder,
        Some(format!("pod-{}", winners[0]))
    );

    // 2. Racing to take over an expired Lease (its holder died).
    let api: Api<Lease> = Api::namespaced(client(&c).await, NS);
    let ghost: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "race-takeover"},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2,
                 "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 5}
    }))
    .unwrap();
    api.create(&PostParams::default(), &ghost).await.unwrap();
    let mut electors = Vec::new();
    for i in 0..N {
        electors.push(elector(&c, "race-takeover", &format!("pod-{i}")).await);
    }
    // Each candidate first sees the record and waits a whole lease duration, even though its
    // renewTime is long past (clocks are not trusted).
    for e in &electors {
        assert!(matches!(
            e.try_acquire_or_renew().await.unwrap(),
            Attempt::Follower { ref holder, .. } if holder == "ghost"
        ));
    }
    sleep(Duration::from_millis(2100)).await;
    c.controls().reset_requests();
    let results: Vec<Attempt> =
        futures::future::join_all(electors.iter().map(|e| e.try_acquire_or_renew()))
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
    let winners: Vec<usize> = (0..N).filter(|i| results[*i] == Attempt::Leader).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let updates = c
        .controls()
        .requests_where(|r| r.resource == "leases" && r.verb == "update");
    assert_eq!(updates.iter().filter(|r| r.code == 200).count(), 1);
    assert_eq!(updates.iter().filter(|r| r.code == 409).count(), N - 1);
    let rec = lease_record(&c, "race-takeover").await;
    assert_eq!(rec.holder, Some(format!("pod-{}", winners[0])));
    assert_eq!(rec.transitions, 6);
    // The losers now see the winner, with a fresh expiry clock.
    for (i, e) in electors.iter().enumerate() {
        if i != winners[0] {
            assert!(matches!(
                e.try_acquire_or_renew().await.unwrap(),
                Attempt::Follower { ref holder, .. } if *holder == format!("pod-{}", winners[0])
            ));
        }
    }
    c.shutdown().await;
}

/// Three candidates take turns for several seconds under injected errors and latency,
/// leaders releasing or crashing at random: leadership intervals never overlap.
#[tokio::test]
async fn leadership_intervals_never_overlap_under_faults() {
    let c = cluster().await;
    c.controls()
        .set_latency(Duration::from_millis(5), Duration::from_millis(40));
    c.controls().add_error(ErrorRule {
        resource: Some("leases".into()),
        rate: 0.1,
        code: 500,
        ..ErrorRule::default()
    });
    let intervals: Arc<Mutex<Vec<(Instant, Instant, String)>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let e = elector(&c, "churn", &format!("pod-{i}")).await;
        let (intervals, stop) = (intervals.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.is_cancelled() {
                let Ok(l) = e.acquire(&stop).await else { break };
                let start = Instant::now();
                round += 1;
                let hold = Duration::from_millis(100 + (i * 137 + round * 71) % 500);
                let lost = l.lost();
                tokio::select! {
                    _ = lost.cancelled() => {}
                    _ = sleep(hold) => {}
                }
                let end = Instant::now();
                intervals
                    .lock()
                    .unwrap()
                    .push((start, end, e.identity().to_string()));
                if (i + round).is_multiple_of(3) {
                    drop(l); // crash
                } else {
                    let _ = l.release().await;
                }
            }
        }));
    }
    sleep(Duration::from_secs(8)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let mut iv = intervals.lock().unwrap().clone();
    iv.sort_by_key(|(s, _, _)| *s);
    assert!(iv.len() >= 3, "too few leadership terms: {}", iv.len());
    for w in iv.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "{} led from {:?} while {} still led until {:?}",
            w[1].2,
            w[1].0,
            w[0].2,
            w[0].1
        );
    }
    c.shutdown().await;
}
