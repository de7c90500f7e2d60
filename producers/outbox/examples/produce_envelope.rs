//! Producing a domain event straight to its topic, without the ingress: build the envelope,
//! key the record by the registry's key field, set the `sy-event-type` header, wait for the ack.
//!
//! ```text
//! cargo run --release -p switchyard-outbox --example produce_envelope -- \
//!     127.0.0.1:9092 tasks tasks.task_assigned 1 \
//!     '{"task_id":"0190e6a4-0000-7000-8000-000000000001","user_id":"0190e6a4-0000-7000-8000-000000000002","assigned_at":"2026-01-01T10:00:00Z"}'
//! ```
//!
//! Unlike the ingress, this path does not validate the payload: validate it against
//! `schemas/events/<type>.v<version>.json` before producing.

use events::HEADER_EVENT_TYPE;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_runtime::KafkaSettings;

/// Publishes `payload` as `event_type` v`version` to `topic`, keyed by `key_field`'s value;
/// returns the envelope's event id once the broker acknowledged the record.
pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    event_type: &str,
    version: u32,
    key_field: &str,
    payload: &serde_json::Value,
) -> anyhow::Result<String> {
    let key = payload
        .get(key_field)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("payload has no string {key_field}"))?;
    // A key that is stable across retries of the same event lets consumers deduplicate.
    let idempotency_key = format!("{event_type}.v{version}:{key}:{payload}");
    let env = switchyard_outbox::envelope(
        event_type,
        version,
        "examples/produce_envelope",
        idempotency_key,
        payload,
    );
    let bytes = env.to_bytes();
    let headers = OwnedHeaders::new().insert(Header {
        key: HEADER_EVENT_TYPE,
        value: Some(event_type),
    });
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(&bytes)
        .headers(headers);
    producer
        .send(record, std::time::Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(env.event_id)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, topic, event_type, version, payload] = args.as_slice() else {
        anyhow::bail!("usage: produce_envelope <bootstrap> <topic> <event_type> <version> <json>");
    };
    let settings = KafkaSettings {
        bootstrap_servers: bootstrap.clone(),
        ..Default::default()
    };
    let producer: FutureProducer = settings
        .producer_config("produce-envelope-example")
        .create()?;
    let payload: serde_json::Value = serde_json::from_str(payload)?;
    // The key field is the registry's `key` (deploy/events.toml); every shipped type uses user_id.
    let event_id = produce(
        &producer,
        topic,
        event_type,
        version.parse()?,
        "user_id",
        &payload,
    )
    .await?;
    println!("{event_id}");
    Ok(())
}
