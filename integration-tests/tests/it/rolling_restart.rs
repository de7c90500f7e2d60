//! Drain on rebalance (issue 14.5): two dispatcher replicas of one subscriber, each restarted
//! in turn (SIGTERM, start again) while records keep arriving, once with each consumer group
//! protocol. A revoked partition's begun records are finished or parked and its position
//! committed before it goes, so the next owner neither loses nor repeats them: every record
//! arrives, and none twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::faults::procs::dispatcher_replicas;
use integration_tests::kafka::{create_topic, produce, producer};
use integration_tests::*;
use switchyard_runtime::kafka::GroupProtocol;

const EVENTS: u64 = 3_000;
/// Production is spread over about this long, so the restarts happen under load.
const PRODUCE_FOR: Duration = Duration::from_secs(15);

struct Outcome {
    distinct: usize,
    duplicates: usize,
    took: Duration,
}

/// One rolling restart with `protocol`; `drain_ms` is the dispatcher's drain window, which
/// also bounds how long a revoked partition's work may take (0: let go at once).
async fn rolling_restart(protocol: GroupProtocol, drain_ms: u64) -> Outcome {
    let topic = unique("rolling");
    create_topic(&topic, 6).await.unwrap();
    let sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    // Each answer takes a while: 2 x 8 lanes deliver 160 a second while 200 arrive, so every
    // lane has work under way when a partition is revoked.
    sub.set_delay(Duration::from_millis(100));
    let mut s = http_subscriber("rolling", &topic, &sub.url("/h"));
    s.concurrency = 8;
    if let switchyard_dispatcher::config::Target::Http(h) = &mut s.target {
        h.timeout_ms = 10_000;
    }
    let mut cfg = dispatcher_config(vec![s]);
    cfg.listen = "127.0.0.1:0".into();
    cfg.kafka.group_protocol = protocol;
    cfg.drain_timeout_ms = drain_ms;
    let mut replicas = dispatcher_replicas(&cfg, "rolling", &["a", "b"]).unwrap();
    let (mut b, mut a) = (replicas.pop().unwrap(), replicas.pop().unwrap());

    let started = Instant::now();
    let started_at = started;
    let load = tokio::spawn(async move {
        let p = producer().unwrap();
        let pause = PRODUCE_FOR / u32::try_from(EVENTS).unwrap();
        let mut ids = HashSet::new();
        for i in 1..=EVENTS {
            let env = bind_envelope(i, "test");
            ids.insert(env.event_id.clone());
            produce(&p, &topic, &(i % 97).to_string(), &env.to_bytes())
                .await
                .unwrap();
            tokio::time::sleep(pause).await;
        }
        ids
    });

    let grace = Duration::from_secs(30);
    assert!(
        sub.wait_delivered(300, Duration::from_secs(60)).await,
        "{protocol:?}: the two replicas delivered too little before the first restart"
    );
    for p in [&mut a, &mut b] {
        let name = p.name.clone();
        assert!(
            sub.delivered().len() < EVENTS as usize,
            "{protocol:?}: the backlog was gone before restarting {name}: not under load"
        );
        tokio::task::block_in_place(|| p.stop(grace));
        p.spawn().unwrap();
        // Long enough for the restarted replica to rejoin and take its share.
        let before = sub.delivered().len();
        assert!(
            sub.wait_delivered(before + 400, Duration::from_secs(60))
                .await,
            "{protocol:?}: deliveries stalled after restarting {name}"
        );
    }
    let ids = load.await.unwrap();
    let distinct = |sub: &FakeSubscriber| -> HashSet<String> {
        sub.delivered()
            .iter()
            .map(|r| r.json()["event_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let all = sub
        .wait_until(Duration::from_secs(120), |_| {
            distinct(&sub).len() >= ids.len()
        })
        .await;
    let took = started.elapsed();
    // Late repeats would come within a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for p in [&mut a, &mut b] {
        tokio::task::block_in_place(|| p.stop(grace));
    }
    let got = distinct(&sub);
    assert!(
        all,
        "{protocol:?}: only {} of {} delivered",
        got.len(),
        ids.len()
    );
    assert_eq!(
        got, ids,
        "{protocol:?}: exactly the produced events, none lost"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in sub.delivered() {
        *seen
            .entry(r.json()["event_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    let mut repeated: Vec<String> = sub
        .delivered()
        .iter()
        .filter(|r| seen[r.json()["event_id"].as_str().unwrap_or_default()] > 1)
        .map(|r| {
            let j = r.json();
            format!(
                "{} uid {} at {} ms",
                j["event_id"].as_str().unwrap_or_default(),
                j["portal_uid"],
                r.at.duration_since(started_at).as_millis()
            )
        })
        .collect();
    repeated.sort();
    println!(
        "peak concurrency at the subscriber: {}",
        sub.peak_concurrency()
    );
    if !repeated.is_empty() {
        println!(
            "{protocol:?}, drain {drain_ms} ms: repeated deliveries (first 10): {:#?}",
            &repeated[..repeated.len().min(10)]
        );
    }
    Outcome {
        distinct: got.len(),
        duplicates,
        took,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_two_replicas_repeats_and_loses_nothing_with_either_protocol() {
    // The baseline of the same run: partitions let go at once, as before the drain.
    let o = rolling_restart(GroupProtocol::Classic, 0).await;
    println!(
        "rolling restart of 2 replicas, group.protocol=Classic, no drain (baseline): {} events delivered, {} duplicates, {} ms",
        o.distinct,
        o.duplicates,
        o.took.as_millis()
    );
    let mut report = Vec::new();
    for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
        let o = rolling_restart(protocol, 10_000).await;
        println!(
            "rolling restart of 2 replicas, group.protocol={protocol:?}, drained: {} events delivered, {} duplicates, {} ms",
            o.distinct,
            o.duplicates,
            o.took.as_millis()
        );
        report.push((protocol, o.duplicates));
    }
    for (protocol, duplicates) in report {
        assert_eq!(
            duplicates, 0,
            "{protocol:?}: a drained revoke hands over without repeats"
        );
    }
}
