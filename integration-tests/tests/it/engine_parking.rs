//! Never wedge: a retry topic that refuses records stalls only the records that need it. The
//! consumer keeps polling (other partitions keep flowing, even past `max.poll.interval.ms`),
//! the `parking_failed` gauge rises, nothing is committed past the stuck record, and once the
//! topic takes records again everything is delivered, none lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use integration_tests::kafka::{create_topic, producer};
use integration_tests::*;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::engine_support::{envelope, eventually, metric, produce_to};

const LANES: usize = 4;
const BAD: u64 = 150; // more than a lane's buffer (64) plus the record in flight

/// A subscriber that fails the event ids in `failing` with 500 and records what it accepted.
#[derive(Clone, Default)]
struct Target {
    failing: Arc<Mutex<HashSet<String>>>,
    accepted: Arc<Mutex<HashSet<String>>>,
}

async fn answer(State(t): State<Target>, body: axum::body::Bytes) -> StatusCode {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = v["event_id"].as_str().unwrap_or_default().to_owned();
    if t.failing.lock().unwrap().contains(&id) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    t.accepted.lock().unwrap().insert(id);
    StatusCode::OK
}

async fn start_target() -> (Target, String) {
    let t = Target::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/h", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/h", post(answer))
        .with_state(t.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (t, url)
}

async fn set_max_message_bytes(topic: &str, bytes: &str) {
    let admin: AdminClient<DefaultClientContext> =
        kafka_settings().admin_config().create().unwrap();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", bytes);
    let res = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    for r in res {
        r.unwrap_or_else(|e| panic!("altering {topic}: {e:?}"));
    }
}

fn committed(group: &str, topic: &str, partition: i32) -> Offset {
    let c: BaseConsumer = kafka_settings().consumer_config(group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.find_partition(topic, partition).unwrap().offset()
}

#[tokio::test(flavor = "multi_thread")]
async fn unparkable_records_pause_their_partition_not_the_consumer() {
    let topic = unique("engine-park");
    create_topic(&topic, 2).await.unwrap();
    let (target, url) = start_target().await;
    let mut s = http_subscriber("parker", &topic, &url);
    s.concurrency = LANES;
    let mut cfg = dispatcher_config(vec![s]);
    // Expelled after 10 s without a poll: the outage below lasts longer than that.
    cfg.kafka
        .extra
        .insert("max.poll.interval.ms".into(), "10000".into());
    let retry0 = cfg.retry_topic("parker", 0);
    let group = cfg.group_id("parker");
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let metrics_url = dispatcher.url("/metrics");
    let p = producer().unwrap();

    // Keys of partition 1 that never share a lane with the failing key of partition 0.
    let bad_lane = switchyard_dispatcher::lane_of(Some(b"bad"), 0, LANES);
    let good_keys: Vec<String> = (0..)
        .map(|i| format!("good-{i}"))
        .filter(|k| switchyard_dispatcher::lane_of(Some(k.as_bytes()), 1, LANES) != bad_lane)
        .take(8)
        .collect();
    let mut n = 0u64;
    let mut good = |p: &rdkafka::producer::FutureProducer, ids: &mut HashSet<String>| {
        n += 1;
        let env = envelope(1_000 + n);
        ids.insert(env.event_id.clone());
        let key = good_keys[usize::try_from(n).unwrap() % good_keys.len()].clone();
        let p = p.clone();
        let topic = topic.clone();
        async move { produce_to(&p, &topic, 1, &key, &env).await }
    };

    let mut good_ids = HashSet::new();
    good(&p, &mut good_ids).await;
    let t = target.clone();
    assert!(
        eventually(Duration::from_secs(60), || {
            let t = t.clone();
            async move { !t.accepted.lock().unwrap().is_empty() }
        })
        .await,
        "the warm-up record was not delivered"
    );

    // The retry topic refuses every record from now on.
    set_max_message_bytes(&retry0, "1").await;
    let mut bad_ids = HashSet::new();
    for i in 0..BAD {
        let env = envelope(1_000_000 + i);
        bad_ids.insert(env.event_id.clone());
        target.failing.lock().unwrap().insert(env.event_id.clone());
        produce_to(&p, &topic, 0, "bad", &env).await;
    }
    for _ in 0..20 {
        good(&p, &mut good_ids).await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&metrics_url, "switchyard_dispatch_parking_failed", "parker")
                .await
                .is_some_and(|v| v >= 1.0)
        })
        .await,
        "parking_failed gauge never rose"
    );

    // Longer than max.poll.interval.ms: a wedged loop would have been expelled by now.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let mut late_ids = HashSet::new();
    for _ in 0..20 {
        good(&p, &mut late_ids).await;
    }
    good_ids.extend(late_ids.iter().cloned());
    let t = target.clone();
    let want = good_ids.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            let (t, want) = (t.clone(), want.clone());
            async move { want.is_subset(&t.accepted.lock().unwrap()) }
        })
        .await,
        "partition 1 stalled behind partition 0's unparkable records"
    );
    assert_eq!(
        metric(&metrics_url, "switchyard_dispatch_parking_failed", "parker").await,
        Some(1.0),
        "still failing, one record held in its lane"
    );
    assert!(
        target.accepted.lock().unwrap().is_disjoint(&bad_ids),
        "a failing record counted as delivered"
    );
    // Nothing of partition 0 is committed past the stuck record (its first, offset 0).
    let c0 = committed(&group, &topic, 0);
    assert!(
        !matches!(c0, Offset::Offset(o) if o > 0),
        "committed past the unparked record: {c0:?}"
    );

    // The topic takes records again and the subscriber recovers: all delivered, none lost.
    set_max_message_bytes(&retry0, "1048588").await;
    target.failing.lock().unwrap().clear();
    let t = target.clone();
    let all: HashSet<String> = bad_ids.union(&good_ids).cloned().collect();
    let want = all.clone();
    let recovered = eventually(Duration::from_secs(90), || {
        let (t, want) = (t.clone(), want.clone());
        async move { want.is_subset(&t.accepted.lock().unwrap()) }
    })
    .await;
    let missing = all.difference(&target.accepted.lock().unwrap()).count();
    assert!(
        recovered,
        "{missing} of {} records never delivered",
        all.len()
    );
    assert_eq!(
        metric(&metrics_url, "switchyard_dispatch_parking_failed", "parker").await,
        Some(0.0)
    );
    dispatcher.stop().await.unwrap();
}
