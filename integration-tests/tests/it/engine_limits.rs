//! Rate and in-flight limits per subscriber against the real broker and a real HTTP target: a
//! backlog is delivered no faster than `max_per_second`, a slow target never sees more than
//! `max_in_flight` requests at once however many lanes there are, and two replicas split the
//! limits by the source partitions each owns.

use std::collections::HashSet;
use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Received, Script};
use integration_tests::kafka::{create_topic, producer};
use integration_tests::*;
use switchyard_dispatcher::admin_api::SubscriberView;
use switchyard_dispatcher::config::SubscriberConfig;

use crate::engine_support::{
    all_delivered, delivered_ids, envelope, eventually, metric, produce_to, subscriber_view,
};

const TOKEN: &str = "engine-limits-token-0123456789";

async fn view(base: &str, name: &str) -> Option<SubscriberView> {
    subscriber_view(base, TOKEN, name).await
}

/// Produces `n` records numbered from `first` over 10 keys and every partition of `topic`.
async fn backlog(topic: &str, partitions: i32, first: u64, n: u64) -> HashSet<String> {
    let p = producer().unwrap();
    let mut ids = HashSet::new();
    for i in 0..n {
        let env = envelope(first + i);
        ids.insert(env.event_id.clone());
        let partition = i32::try_from(i).unwrap() % partitions;
        produce_to(&p, topic, partition, &format!("k{}", i % 10), &env).await;
    }
    ids
}

/// Delivers a backlog of `records` numbered from `first` to `target` through a dispatcher
/// (admin token [`TOKEN`]) whose one subscriber `name`, shaped by `limit`, reads a fresh
/// four-partition topic; returns the dispatcher once every record has arrived.
async fn deliver_backlog(
    target: &FakeSubscriber,
    name: &str,
    first: u64,
    records: u64,
    limit: impl FnOnce(&mut SubscriberConfig),
) -> Running {
    let topic = unique(&format!("engine-{name}"));
    create_topic(&topic, 4).await.unwrap();
    let ids = backlog(&topic, 4, first, records).await;
    let mut s = http_subscriber(name, &topic, &target.url("/hook"));
    limit(&mut s);
    let mut cfg = dispatcher_config(vec![s]);
    cfg.admin.token = Some(TOKEN.into());
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    assert!(
        all_delivered(target, &ids, Duration::from_secs(60)).await,
        "delivered {} of {records}",
        delivered_ids(target).len()
    );
    dispatcher
}

/// The most requests that arrived within any one second.
fn busiest_second(received: &[Received]) -> usize {
    let mut at: Vec<_> = received.iter().map(|r| r.at).collect();
    at.sort();
    (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| t.duration_since(at[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_is_delivered_at_max_per_second() {
    const RECORDS: u64 = 100;
    let target = FakeSubscriber::start(Script::Ok).await.unwrap();
    let dispatcher = deliver_backlog(&target, "rate", 9_000_000, RECORDS, |s| {
        s.max_per_second = Some(20.0);
        s.concurrency = 16;
    })
    .await;
    let base = format!("http://{}", dispatcher.addr);
    let metrics_url = dispatcher.url("/metrics");
    let received = target.received();
    let first = received.iter().map(|r| r.at).min().unwrap();
    let last = received.iter().map(|r| r.at).max().unwrap();
    let span = last.duration_since(first);
    // 100 attempts at 20/s: about 5 s (the bucket starts empty, so no burst shows).
    assert!(
        span >= Duration::from_secs(4),
        "{RECORDS} records in {span:?}"
    );
    // 20 a second, plus at most one second of burst (arrivals bunch when connections open).
    let busiest = busiest_second(&received);
    assert!(busiest <= 25 + 20, "{busiest} requests within one second");

    assert_eq!(
        metric(
            &metrics_url,
            "switchyard_dispatch_rate_limit_per_second",
            "rate"
        )
        .await,
        Some(20.0),
        "one replica owns every partition: the whole rate"
    );
    assert!(
        metric(
            &metrics_url,
            "switchyard_dispatch_rate_limited_seconds_total",
            "rate"
        )
        .await
        .is_some_and(|s| s > 1.0),
        "time waiting for the rate was not counted"
    );
    let v = view(&base, "rate").await.unwrap();
    assert_eq!(v.max_per_second, Some(20.0));
    assert_eq!(v.max_in_flight, None);
    dispatcher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_target_never_sees_more_than_max_in_flight() {
    const RECORDS: u64 = 40;
    let target = FakeSubscriber::start(Script::Ok).await.unwrap();
    target.set_delay(Duration::from_millis(200));
    let dispatcher = deliver_backlog(&target, "in-flight", 9_100_000, RECORDS, |s| {
        s.max_in_flight = Some(2);
        s.concurrency = 64;
    })
    .await;
    let base = format!("http://{}", dispatcher.addr);
    let metrics_url = dispatcher.url("/metrics");
    // Ten keys on 64 lanes would send ten at once; the limit lets two through, and uses both.
    assert_eq!(target.peak_concurrency(), 2, "requests at once");
    assert_eq!(
        metric(
            &metrics_url,
            "switchyard_dispatch_max_in_flight",
            "in-flight"
        )
        .await,
        Some(2.0)
    );
    let v = view(&base, "in-flight").await.unwrap();
    assert_eq!(v.max_in_flight, Some(2));
    assert_eq!(v.max_per_second, None);
    assert!(
        eventually(Duration::from_secs(10), || {
            let u = metrics_url.clone();
            async move { metric(&u, "switchyard_dispatch_in_flight", "in-flight").await == Some(0.0) }
        })
        .await,
        "attempts still counted in flight after the backlog"
    );
    dispatcher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_split_the_limits_by_partitions_owned() {
    let topic = unique("engine-share");
    create_topic(&topic, 4).await.unwrap();
    let target = FakeSubscriber::start(Script::Ok).await.unwrap();
    let mut s = http_subscriber("share", &topic, &target.url("/hook"));
    s.max_per_second = Some(20.0);
    s.max_in_flight = Some(3);
    // Same group and topic names on both: two replicas of one dispatcher.
    let cfg = dispatcher_config(vec![s]);
    let one = start_dispatcher(cfg.clone()).await.unwrap();
    let two = start_dispatcher(cfg).await.unwrap();
    let (m1, m2) = (one.url("/metrics"), two.url("/metrics"));

    // Four source partitions, two each (the retry tiers' partitions do not count): half of
    // each limit, the in-flight half rounded up.
    let split = eventually(Duration::from_secs(60), || {
        let (m1, m2) = (m1.clone(), m2.clone());
        async move {
            let rate = "switchyard_dispatch_rate_limit_per_second";
            let in_flight = "switchyard_dispatch_max_in_flight";
            metric(&m1, rate, "share").await == Some(10.0)
                && metric(&m2, rate, "share").await == Some(10.0)
                && metric(&m1, in_flight, "share").await == Some(2.0)
                && metric(&m2, in_flight, "share").await == Some(2.0)
        }
    })
    .await;
    assert!(
        split,
        "limits not split: rate {:?}/{:?}, in flight {:?}/{:?}",
        metric(&m1, "switchyard_dispatch_rate_limit_per_second", "share").await,
        metric(&m2, "switchyard_dispatch_rate_limit_per_second", "share").await,
        metric(&m1, "switchyard_dispatch_max_in_flight", "share").await,
        metric(&m2, "switchyard_dispatch_max_in_flight", "share").await,
    );
    let ids = backlog(&topic, 4, 9_200_000, 40).await;
    let t = target.clone();
    assert!(
        eventually(Duration::from_secs(60), || {
            let (t, ids) = (t.clone(), ids.clone());
            async move { delivered_ids(&t).is_superset(&ids) }
        })
        .await,
        "delivered {} of 40 by two replicas",
        delivered_ids(&target).len()
    );

    // One replica leaves: the other owns every partition and takes the whole limits.
    one.stop().await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || {
            let m2 = m2.clone();
            async move {
                metric(&m2, "switchyard_dispatch_rate_limit_per_second", "share").await
                    == Some(20.0)
                    && metric(&m2, "switchyard_dispatch_max_in_flight", "share").await == Some(3.0)
            }
        })
        .await,
        "the remaining replica did not take the whole limits"
    );
    two.stop().await.unwrap();
}
