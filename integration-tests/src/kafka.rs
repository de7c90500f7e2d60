//! Topic helpers for tests: create topics, produce raw records, read a topic back.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_runtime::topics::{ensure_topics, TopicSpec};

use crate::{kafka_settings, unique};

pub async fn create_topic(name: &str, partitions: i32) -> anyhow::Result<()> {
    ensure_topics(&kafka_settings(), &[TopicSpec::new(name, partitions)]).await?;
    Ok(())
}

pub fn producer() -> anyhow::Result<FutureProducer> {
    Ok(kafka_settings().producer_config("test-producer").create()?)
}

pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    p.send(
        FutureRecord::to(topic).key(key).payload(value),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)?;
    Ok(())
}

/// Reads `topic` from the beginning with a fresh group until `n` records arrived or `within`.
pub async fn read(topic: &str, n: usize, within: Duration) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: StreamConsumer = kafka_settings()
        .consumer_config(&unique("reader"))
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => tracing::warn!(error = %e, "test reader"),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Value of header `key` of a record, as a string.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
