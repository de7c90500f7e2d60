//! Operator actions on topics: replay a subscriber's dead letters, tail a topic decoded to
//! JSON, produce an event from JSON. Used by the `switchyard` CLI.

use std::time::Duration;

use chrono::Utc;
use events::v1::envelope::Payload;
use events::v1::notification_seen::Caller;
use events::Envelope;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use switchyard_runtime::KafkaSettings;

use crate::config::DispatcherConfig;
use crate::retry::{H_ATTEMPTS, H_EVENT_TYPE, H_NOT_BEFORE, H_ORIGIN, H_SUBSCRIBER, H_TIER};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no subscriber named {0} in the dispatcher config")]
    UnknownSubscriber(String),
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid JSON payload")]
    Json(#[from] serde_json::Error),
}

/// Records between the committed position of `group` (or the beginning) and the high
/// watermark at the time of the call, per partition.
fn snapshot(
    kafka: &KafkaSettings,
    topic: &str,
    group: &str,
    from_beginning: bool,
) -> Result<(BaseConsumer, TopicPartitionList, u64), AdminError> {
    let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
    let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut parts = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            parts.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(parts.clone(), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    for e in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))?;
        let start = match e.offset() {
            Offset::Offset(o) if !from_beginning => o.max(low),
            _ => low,
        };
        if high > start {
            total += u64::try_from(high - start).unwrap_or(0);
            assignment.add_partition_offset(topic, e.partition(), Offset::Offset(start))?;
        }
    }
    Ok((consumer, assignment, total))
}

/// Moves a subscriber's dead letters back into its first retry tier with a fresh attempt
/// budget; the dispatcher delivers them from there. Progress is committed under the group
/// `<subscriber group>.dlq-replay`, so a second replay only takes newer dead letters unless
/// `from_beginning`. Returns how many records were replayed.
pub async fn replay_dead_letters(
    cfg: &DispatcherConfig,
    subscriber: &str,
    from_beginning: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, AdminError> {
    let mut cfg = cfg.clone();
    let _ = cfg.expand_integrations();
    if !cfg.subscribers.iter().any(|s| s.name == subscriber) {
        return Err(AdminError::UnknownSubscriber(subscriber.to_owned()));
    }
    let dlq = cfg.dead_letter_topic(subscriber);
    let target = cfg.retry_topic(subscriber, 0);
    let group = format!("{}.dlq-replay", cfg.group_id(subscriber));
    let (consumer, assignment, total) = snapshot(&cfg.kafka, &dlq, &group, from_beginning)?;
    if total == 0 {
        progress(0, 0);
        return Ok(0);
    }
    let ends: Vec<(i32, i64)> = assignment
        .elements()
        .iter()
        .filter_map(|e| {
            let (_, high) = consumer
                .fetch_watermarks(&dlq, e.partition(), Duration::from_secs(10))
                .ok()?;
            Some((e.partition(), high))
        })
        .collect();
    consumer.assign(&assignment)?;
    let producer: FutureProducer = cfg.kafka.producer_config("replay").create()?;
    let now = Utc::now().timestamp_millis().to_string();
    let mut done = 0u64;
    let mut positions = std::collections::HashMap::new();
    while done < total {
        let Some(msg) = consumer.poll(Duration::from_secs(10)) else {
            break;
        };
        let msg = msg?;
        let end = ends
            .iter()
            .find(|(p, _)| *p == msg.partition())
            .map_or(0, |(_, h)| *h);
        if msg.offset() >= end {
            continue;
        }
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: H_SUBSCRIBER,
                value: Some(subscriber),
            })
            .insert(Header {
                key: H_ATTEMPTS,
                value: Some("0"),
            })
            .insert(Header {
                key: H_TIER,
                value: Some("0"),
            })
            .insert(Header {
                key: H_NOT_BEFORE,
                value: Some(now.as_str()),
            });
        if let Some(h) = msg.headers() {
            for h in h
                .iter()
                .filter(|h| h.key == H_EVENT_TYPE || h.key == H_ORIGIN)
            {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&target).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        positions.insert(msg.partition(), msg.offset() + 1);
        done += 1;
        progress(done, total);
    }
    let mut commit = TopicPartitionList::new();
    for (p, o) in positions {
        commit.add_partition_offset(&dlq, p, Offset::Offset(o))?;
    }
    if commit.count() > 0 {
        consumer.commit(&commit, rdkafka::consumer::CommitMode::Sync)?;
    }
    Ok(done)
}

/// An envelope as operators read it.
pub fn envelope_json(env: &Envelope) -> Value {
    let ts = |t: Option<&prost_types::Timestamp>| {
        events::to_datetime(t).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let payload = match &env.payload {
        Some(Payload::AccountLink(l)) => json!({"account_link": {
            "portal_uid": l.portal_uid, "phonish_uid": l.phonish_uid, "event": l.event().short_name()}}),
        Some(Payload::NotificationSeen(s)) => {
            let caller = match &s.caller {
                Some(Caller::Client(c)) => json!({"client": {"user_id": c.user_id, "uid": c.uid,
                    "bound_uids": c.bound_uids, "phone_id": c.phone_id}}),
                Some(Caller::Driver(d)) => json!({"driver": {"park_id": d.park_id,
                    "driver_profile_id": d.driver_profile_id}}),
                _ => json!("anonymous"),
            };
            json!({"notification_seen": {"tag": s.tag, "id": s.id, "caller": caller}})
        }
        Some(Payload::DriverStatus(d)) => json!({"driver_status": {"park_id": d.park_id,
            "driver_profile_id": d.driver_profile_id, "status": d.status().as_str_name(),
            "updated_at": ts(d.updated_at.as_ref())}}),
        Some(Payload::Json(bytes)) => json!({"json": serde_json::from_slice::<Value>(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))}),
        None => Value::Null,
    };
    json!({
        "event_id": env.event_id,
        "event_type": env.event_type,
        "schema_version": env.schema_version,
        "occurred_at": ts(env.occurred_at.as_ref()),
        "produced_at": ts(env.produced_at.as_ref()),
        "producer": env.producer,
        "idempotency_key": env.idempotency_key,
        "traceparent": env.trace.as_ref().map(|t| t.traceparent.clone()),
        "payload": payload,
    })
}

/// One topic record as a JSON line: position, key, headers and the decoded envelope (or the
/// raw value when it is not an envelope).
pub fn record_json<M: Message>(m: &M) -> Value {
    let headers: serde_json::Map<String, Value> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    (h.key.to_owned(), json!(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let value = m.payload().map(|p| match Envelope::from_bytes(p) {
        Ok(env) if !env.event_id.is_empty() => envelope_json(&env),
        _ => json!({"raw": String::from_utf8_lossy(p)}),
    });
    json!({
        "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
        "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": headers, "value": value,
    })
}

/// A consumer reading `topic` from the start (or only new records) without a committed group.
pub fn tail_consumer(
    kafka: &KafkaSettings,
    topic: &str,
    from_beginning: bool,
) -> Result<StreamConsumer, AdminError> {
    let group = format!("switchyard-tail-{}", uuid_like());
    let consumer: StreamConsumer = kafka
        .consumer_config(&group)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_beginning { "earliest" } else { "latest" },
        )
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), Utc::now().timestamp_millis())
}

/// Publishes `json` as a domain event envelope (`Payload::Json`) and waits for the ack.
pub async fn produce_json(
    kafka: &KafkaSettings,
    topic: &str,
    key: &str,
    event_type: &str,
    version: u32,
    json: &str,
) -> Result<String, AdminError> {
    let value: Value = serde_json::from_str(json)?;
    let env = Envelope::new(
        event_type,
        version,
        Utc::now(),
        "switchyard-cli",
        format!("cli:{}", uuid_like()),
        Payload::Json(serde_json::to_vec(&value)?),
    );
    let producer: FutureProducer = kafka.producer_config("cli").create()?;
    let headers = OwnedHeaders::new().insert(Header {
        key: H_EVENT_TYPE,
        value: Some(event_type),
    });
    let bytes = env.to_bytes();
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(&bytes)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(env.event_id)
}
