//! Fault tests on the local three-node Kafka cluster (RF 3, min.insync.replicas 2, unclean
//! election off): what the broker acknowledged survives a leader crash, and the dispatcher
//! parks and dead-letters with a node down. Run one at a time (nextest group `kafka-cluster`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use events::Envelope;
use futures::{stream, StreamExt};
use integration_tests::cluster::Cluster;
use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::header;
use integration_tests::*;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_runtime::topics::{ensure_topics, Replication, TopicSpec};

const RECORDS: usize = 20_000;
/// The leader is killed once this many records were acknowledged.
const KILL_AFTER: usize = RECORDS / 3;
/// Records waiting for their delivery report at once.
const IN_FLIGHT: usize = 200;
/// Production is paced (2,000 records/s) so the crash lands mid-stream, not after it.
const PACE: Duration = Duration::from_micros(500);
/// Long enough to ride out a failover (broker session timeout 6 s, then election).
const PRODUCE_TIMEOUT_MS: u64 = 30_000;
const WAIT: Duration = Duration::from_secs(90);

/// What the producer was told, record by record.
#[derive(Default)]
struct Tally {
    acked: HashSet<String>,
    /// Failed sends by error.
    failed: BTreeMap<String, usize>,
    last_ack: Option<Instant>,
    /// The failover shows as the longest silence between two acknowledgements.
    longest_gap: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_leader_kill() {
    let mut cluster = Cluster::start().await.unwrap();
    let mut settings = cluster.kafka_settings();
    settings.produce_timeout_ms = PRODUCE_TIMEOUT_MS;
    let topic = unique("durable");
    let mut spec = TopicSpec::new(&topic, 1);
    spec.replication = 3;
    spec.min_insync_replicas = Some(2);
    ensure_topics(&settings, &[spec]).await.unwrap();
    cluster.wait_topic(&topic, WAIT).await.unwrap();
    cluster.wait_in_sync(&topic, WAIT).await.unwrap();
    let before = cluster.partitions(&topic).await.unwrap();
    assert_eq!(before[0].replicas.len(), 3, "{before:?}");
    assert_eq!(
        cluster
            .topic_config(&topic, "min.insync.replicas")
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );

    let producer: FutureProducer = settings.producer_config("durability").create().unwrap();
    let acked_so_far = AtomicUsize::new(0);
    let started = tokio::time::Instant::now();
    let produce = stream::iter(0..RECORDS)
        .map(|i| {
            let (producer, topic) = (&producer, &topic);
            async move {
                let due = started + PACE * u32::try_from(i).unwrap();
                tokio::time::sleep_until(due).await;
                let id = format!("rec-{i:05}");
                let record = FutureRecord::to(topic).key(&id).payload(&id);
                let sent = producer.send(record, Duration::from_secs(30)).await;
                (id, sent.map(|_| ()).map_err(|(e, _)| e.to_string()))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .fold(Tally::default(), |mut tally, (id, sent)| {
            match sent {
                Ok(()) => {
                    tally.acked.insert(id);
                    acked_so_far.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    if let Some(last) = tally.last_ack {
                        tally.longest_gap = tally.longest_gap.max(now - last);
                    }
                    tally.last_ack = Some(now);
                }
                Err(e) => *tally.failed.entry(e).or_default() += 1,
            }
            futures::future::ready(tally)
        });
    let crash = async {
        let deadline = Instant::now() + WAIT;
        while acked_so_far.load(Ordering::Relaxed) < KILL_AFTER {
            assert!(
                Instant::now() < deadline,
                "only {} of {KILL_AFTER} records acknowledged before the kill",
                acked_so_far.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let killed = cluster.kill_leader(&topic, 0).await.unwrap();
        // The old leader is dead now: every later acknowledgement comes from its successor.
        (killed, acked_so_far.load(Ordering::Relaxed))
    };
    let (tally, (killed, acked_at_kill)) = tokio::join!(produce, crash);
    let Tally {
        acked,
        failed,
        longest_gap,
        ..
    } = tally;
    let produce_time = started.elapsed();

    let new_leader = cluster
        .wait_new_leader(&topic, 0, killed, WAIT)
        .await
        .unwrap();
    assert_ne!(new_leader, killed, "the leader changed");
    assert!(
        acked.len() - acked_at_kill > RECORDS / 2,
        "most records are acknowledged by the new leader after the kill: {} acked, {acked_at_kill} at the kill",
        acked.len()
    );

    cluster.restart(killed).await.unwrap();
    cluster.wait_in_sync(&topic, WAIT).await.unwrap();
    let read = cluster.read_all(&topic, WAIT).await.unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &read {
        let id = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        *seen.entry(id).or_default() += 1;
    }
    let mut lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    lost.sort();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let unacked_but_written = seen.keys().filter(|id| !acked.contains(*id)).count();
    let failed_total: usize = failed.values().sum();
    println!(
        "leader kill: node {killed} -> {new_leader} after {acked_at_kill} acks; produced {RECORDS} in {produce_time:?} \
         (longest wait between acks {longest_gap:?}): \
         acked {}, failed {failed_total} {failed:?}, read {} ({} distinct), duplicates {duplicates}, \
         written though not acked {unacked_but_written}, lost {}",
        acked.len(),
        read.len(),
        seen.len(),
        lost.len()
    );
    assert_eq!(acked.len() + failed_total, RECORDS, "every send reported");
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(duplicates, 0, "the idempotent producer wrote duplicates");
    cluster.heal().await.unwrap();
}

/// An envelope as the ingress would publish it; returns (event id, bytes).
fn envelope(i: u64) -> (String, Vec<u8>) {
    let env = bind_envelope(i, "cluster-test");
    (env.event_id.clone(), env.to_bytes())
}

fn event_id(m: &OwnedMessage) -> String {
    m.payload()
        .and_then(|p| Envelope::from_bytes(p).ok())
        .map(|e| e.event_id)
        .unwrap_or_default()
}

fn covers(messages: &[OwnedMessage], ids: &HashSet<String>) -> bool {
    let got: HashSet<String> = messages.iter().map(event_id).collect();
    ids.is_subset(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parks_and_dead_letters_with_a_node_down() {
    const EVENTS: u64 = 30;
    let mut cluster = Cluster::start().await.unwrap();
    let mut settings = cluster.kafka_settings();
    let source = unique("cluster-src");
    ensure_topics(&settings, &[TopicSpec::new(&source, 3)])
        .await
        .unwrap();
    cluster.wait_topic(&source, WAIT).await.unwrap();

    let sub = FakeSubscriber::start(Script::AlwaysFail { status: 500 })
        .await
        .unwrap();
    let mut s = http_subscriber("failing", &source, &sub.url("/hook"));
    let mut cfg = dispatcher_config(Vec::new());
    // Every in-process round fails, then each tier once more: the record passes every tier.
    let tiers = cfg.retry.tiers_ms.len();
    let max_attempts = cfg.retry.in_process_attempts * (1 + u32::try_from(tiers).unwrap());
    s.max_attempts = Some(max_attempts);
    // This test follows each record through every tier to the dead-letter topic. An open
    // breaker would hold the records in the first tier without spending attempts while the
    // target fails (engine_breaker tests that), so it is off here.
    s.breaker.enabled = false;
    cfg.subscribers = vec![s];
    cfg.kafka = settings.clone();
    assert_eq!(cfg.derived_topics, Replication::default(), "broker default");
    let retry_topics: Vec<String> = (0..tiers).map(|t| cfg.retry_topic("failing", t)).collect();
    let dlq = cfg.dead_letter_topic("failing");
    let dispatcher = start_dispatcher(cfg).await.unwrap();

    for t in retry_topics.iter().chain([&dlq]) {
        let partitions = cluster.wait_topic(t, WAIT).await.unwrap();
        assert!(
            partitions.iter().all(|p| p.replicas.len() == 3),
            "{t} is not replicated 3 times: {partitions:?}"
        );
        assert_eq!(
            cluster
                .topic_config(t, "min.insync.replicas")
                .await
                .unwrap()
                .as_deref(),
            Some("2"),
            "{t}"
        );
    }

    let victim = cluster.kill_leader(&source, 0).await.unwrap();
    settings.produce_timeout_ms = PRODUCE_TIMEOUT_MS;
    let producer: FutureProducer = settings.producer_config("node-down").create().unwrap();
    let sends = (1..=EVENTS).map(|i| {
        let producer = &producer;
        let source = &source;
        async move {
            let (id, bytes) = envelope(i);
            let key = i.to_string();
            let record = FutureRecord::to(source).key(&key).payload(&bytes);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| id)
                .map_err(|(e, _)| e)
        }
    });
    let ids: HashSet<String> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.expect("produce with one node down"))
        .collect();
    assert_eq!(ids.len(), usize::try_from(EVENTS).unwrap());

    let dead = cluster
        .read_until(&dlq, WAIT, |m| covers(m, &ids))
        .await
        .unwrap();
    let dead_ids: HashSet<String> = dead.iter().map(event_id).collect();
    let missing: Vec<&String> = ids.difference(&dead_ids).collect();
    assert!(
        missing.is_empty(),
        "{} of {EVENTS} not dead-lettered in {dlq} within {WAIT:?}: {missing:?}",
        missing.len()
    );
    let attempts = max_attempts.to_string();
    for m in &dead {
        assert_eq!(header(m, "sy-attempts").as_deref(), Some(attempts.as_str()));
        assert_eq!(header(m, "sy-subscriber").as_deref(), Some("failing"));
        assert_eq!(
            header(m, "sy-last-error").as_deref(),
            Some("http status 500")
        );
    }
    let mut parked_counts = Vec::new();
    for (tier, t) in retry_topics.iter().enumerate() {
        let parked = cluster
            .read_until(t, WAIT, |m| covers(m, &ids))
            .await
            .unwrap();
        assert!(covers(&parked, &ids), "not every event passed {t}");
        let tier = tier.to_string();
        assert!(parked
            .iter()
            .all(|m| header(m, "sy-tier").as_deref() == Some(tier.as_str())));
        parked_counts.push(parked.len());
    }
    let mut tries: HashMap<String, u32> = HashMap::new();
    for r in sub.received() {
        let id = r.json()["event_id"].as_str().unwrap_or_default().to_owned();
        *tries.entry(id).or_default() += 1;
    }
    assert!(
        ids.iter().all(|id| tries.get(id) >= Some(&max_attempts)),
        "each event attempted {max_attempts} times: {tries:?}"
    );
    let brokers = cluster.brokers().await.unwrap();
    assert!(
        !brokers.contains(&victim),
        "node {victim} stayed down throughout: {brokers:?}"
    );
    println!(
        "node {victim} down: {EVENTS} events, dead-lettered {} ({} distinct), parked per tier {parked_counts:?}, \
         subscriber requests {}",
        dead.len(),
        dead_ids.len(),
        sub.received().len()
    );

    dispatcher.stop().await.unwrap();
    cluster.heal().await.unwrap();
}
