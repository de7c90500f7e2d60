//! Operator actions on topics, straight against the brokers: tail a topic decoded to JSON,
//! produce an event from JSON.

use std::time::Duration;

use chrono::Utc;
use events::v1::envelope::Payload;
use events::Envelope;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};
use switchyard_dispatcher::admin::{envelope_json, AdminError};
use switchyard_runtime::KafkaSettings;
use tracing::Instrument;

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
    // A producer span, as at ingress: the event's trace starts here and its consumers continue it.
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
    );
    let trace = switchyard_runtime::trace::headers(&span);
    let mut env = Envelope::new(
        event_type,
        version,
        Utc::now(),
        "switchyard-cli",
        format!("cli:{}", uuid_like()),
        Payload::Json(serde_json::to_vec(&value)?),
    );
    env.trace = trace.as_ref().map(|h| events::v1::TraceContext {
        traceparent: h.traceparent.clone(),
        tracestate: h.tracestate.clone().unwrap_or_default(),
    });
    let producer: FutureProducer = kafka.producer_config("cli").create()?;
    let bytes = env.to_bytes();
    producer
        .send(
            switchyard_runtime::kafka::envelope_record(topic, key, &bytes, &env),
            Duration::from_secs(30),
        )
        .instrument(span)
        .await
        .map_err(|(e, _)| e)?;
    Ok(env.event_id)
}
