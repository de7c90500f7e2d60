//! Ordered mode (issue 14.4): 20k records over 1k keys to a target that fails 20% of attempts
//! at random, through two dispatcher replicas, one killed (`kill -9`) and the other restarted
//! (SIGTERM) in the middle. With `ordering = "key"` the target sees each key's records for the
//! first time in production order (0 inversions) and every record at least once. The same
//! load with `ordering = "none"` in the same run is the baseline: it shows the inversions this
//! test counts are real.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::faults::procs::dispatcher_replicas;
use integration_tests::kafka::{create_topic, produce, producer};
use integration_tests::*;
use switchyard_dispatcher::config::{Ordering, RetryPolicy};

const RECORDS: u64 = 20_000;
const KEYS: u64 = 1_000;

struct Outcome {
    inversions: usize,
    duplicates: usize,
    failed_attempts: usize,
    took: Duration,
}

/// The production sequence number of a delivered request (`portal_uid`, 1..=RECORDS).
fn seq(r: &integration_tests::fake_http::Received) -> u64 {
    r.json()["portal_uid"].as_u64().unwrap_or(0)
}

async fn deliver(ordering: Ordering, restarts: bool) -> Outcome {
    let topic = unique("ordered");
    create_topic(&topic, 6).await.unwrap();
    let sub = FakeSubscriber::start(Script::FailRandomly {
        percent: 20,
        status: 503,
    })
    .await
    .unwrap();
    let mut s = http_subscriber("ordered", &topic, &sub.url("/h"));
    s.concurrency = 16;
    s.ordering = ordering;
    // 20% failures at random are the load here, not a dead target.
    s.breaker.enabled = false;
    // Two quick attempts, then short tiers: about 4% of records park, and their keys' later
    // records wait behind them.
    s.retry = Some(RetryPolicy {
        in_process_attempts: 2,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        tiers_ms: vec![300, 600],
        max_in_process_retry_after_ms: 1_000,
    });
    let mut cfg = dispatcher_config(vec![s]);
    cfg.listen = "127.0.0.1:0".into();
    cfg.drain_timeout_ms = 5_000;
    cfg.attempt_log = Some(attempt_log_config().await.unwrap());
    let mut replicas = dispatcher_replicas(&cfg, "ordered", &["a", "b"]).unwrap();
    let (mut b, mut a) = (replicas.pop().unwrap(), replicas.pop().unwrap());

    let started = Instant::now();
    let load = tokio::spawn(async move {
        let p = producer().unwrap();
        // One record per key at a time, so a key's records are produced (and acknowledged)
        // in sequence order; the keys of one round go out together.
        for round in 0..RECORDS / KEYS {
            let sends = (1..=KEYS).map(|k| {
                let i = round * KEYS + k;
                let (p, topic) = (&p, &topic);
                async move {
                    let env = bind_envelope(i, "ordered");
                    produce(p, topic, &(i % KEYS).to_string(), &env.to_bytes()).await
                }
            });
            for r in futures::future::join_all(sends).await {
                r.unwrap();
            }
        }
    });

    let distinct = |sub: &FakeSubscriber| -> usize {
        sub.delivered()
            .iter()
            .map(seq)
            .collect::<HashSet<_>>()
            .len()
    };
    let grace = Duration::from_secs(30);
    if restarts {
        assert!(
            sub.wait_until(Duration::from_secs(120), |_| distinct(&sub)
                >= (RECORDS / 3) as usize)
                .await,
            "{ordering:?}: a third was not delivered in time"
        );
        tokio::task::block_in_place(|| a.kill9()).unwrap();
        a.spawn().unwrap();
        assert!(
            sub.wait_until(Duration::from_secs(120), |_| distinct(&sub)
                >= (2 * RECORDS / 3) as usize)
                .await,
            "{ordering:?}: two thirds were not delivered in time after the crash"
        );
        tokio::task::block_in_place(|| b.stop(grace));
        b.spawn().unwrap();
    }
    load.await.unwrap();
    let all = sub
        .wait_until(Duration::from_secs(240), |_| {
            distinct(&sub) >= RECORDS as usize
        })
        .await;
    let took = started.elapsed();
    for p in [&mut a, &mut b] {
        tokio::task::block_in_place(|| p.stop(grace));
    }
    let delivered = sub.delivered();
    assert!(
        all,
        "{ordering:?}: only {} of {RECORDS} records delivered",
        distinct(&sub)
    );
    let got: HashSet<u64> = delivered.iter().map(seq).collect();
    assert_eq!(
        got,
        (1..=RECORDS).collect::<HashSet<u64>>(),
        "{ordering:?}: every record at least once, and only those produced"
    );

    // A record delivered for the first time after a later record of its key was: an inversion.
    let mut latest: HashMap<u64, u64> = HashMap::new();
    let mut first_seen = HashSet::new();
    let mut inversions = Vec::new();
    for r in &delivered {
        let n = seq(r);
        if !first_seen.insert(n) {
            continue;
        }
        let key = n % KEYS;
        let last = latest.entry(key).or_default();
        if n < *last {
            inversions.push(format!("key {key}: {n} after {last}"));
        } else {
            *last = n;
        }
    }
    if !inversions.is_empty() {
        println!(
            "{ordering:?}: inversions (first 10 of {}): {:#?}",
            inversions.len(),
            &inversions[..inversions.len().min(10)]
        );
    }
    Outcome {
        inversions: inversions.len(),
        duplicates: delivered.len() - got.len(),
        failed_attempts: sub.received().len() - delivered.len(),
        took,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_subscribers_deliver_each_keys_records_in_production_order_across_crashes() {
    let base = deliver(Ordering::None, false).await;
    println!(
        "ordering = none (baseline), {RECORDS} records over {KEYS} keys, 20% failures: {} inversions, {} duplicates, {} failed attempts, {} ms",
        base.inversions,
        base.duplicates,
        base.failed_attempts,
        base.took.as_millis()
    );
    let o = deliver(Ordering::Key, true).await;
    println!(
        "ordering = key, {RECORDS} records over {KEYS} keys, 20% failures, kill -9 of one replica and SIGTERM of the other: {} inversions, {} duplicates, {} failed attempts, {} ms",
        o.inversions,
        o.duplicates,
        o.failed_attempts,
        o.took.as_millis()
    );
    assert!(
        base.inversions > 0,
        "the baseline without ordering shows inversions, or this test could not see them"
    );
    assert!(
        o.failed_attempts > (RECORDS / 10) as usize,
        "the target failed often enough to park records ({} failed attempts)",
        o.failed_attempts
    );
    assert_eq!(
        o.inversions, 0,
        "ordering = key: each key's records first delivered in production order"
    );
}
