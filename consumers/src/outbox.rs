//! Transactional outbox: a service writes its state change and the event announcing it in one
//! transaction; the relay publishes unsent rows to Kafka in id order and marks them sent.

use std::time::Duration;

use chrono::Utc;
use events::v1::envelope::Payload;
use events::{Envelope, HEADER_EVENT_TYPE};
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use switchyard_runtime::KafkaSettings;
use tokio_postgres::{Client, GenericClient};
use tokio_util::sync::CancellationToken;

use crate::idempotent::EventsError;

/// Advisory lock held while relaying one batch: one relay per schema at a time, so rows of one
/// key never race each other to the broker.
const RELAY_LOCK: i64 = 0x7377_6576_0002;

/// A domain event envelope (`Payload::Json`) as services and the ingress build it.
pub fn envelope(
    event_type: &str,
    version: u32,
    producer: &str,
    idempotency_key: String,
    payload: &serde_json::Value,
) -> Envelope {
    let bytes = serde_json::to_vec(payload).unwrap_or_default();
    Envelope::new(
        event_type,
        version,
        Utc::now(),
        producer,
        idempotency_key,
        Payload::Json(bytes),
    )
}

/// Writes `envelope` into the outbox; call it inside the transaction of the state change.
pub async fn enqueue<C: GenericClient>(
    tx: &C,
    topic: &str,
    key: &str,
    envelope: &Envelope,
) -> Result<(), EventsError> {
    tx.execute(
        "INSERT INTO outbox (topic, record_key, event_type, envelope) VALUES ($1, $2, $3, $4)",
        &[&topic, &key, &envelope.event_type, &envelope.to_bytes()],
    )
    .await?;
    Ok(())
}

/// Publishes outbox rows of one schema (the client's search_path).
pub struct Relay {
    producer: FutureProducer,
    timeout: Duration,
    /// Rows per batch.
    pub batch: i64,
    /// Pause when the outbox is empty.
    pub idle: Duration,
}

impl Relay {
    pub fn new(kafka: &KafkaSettings, role: &str) -> Result<Self, EventsError> {
        Ok(Self {
            producer: kafka.producer_config(role).create()?,
            timeout: kafka.produce_timeout(),
            batch: 500,
            idle: Duration::from_millis(50),
        })
    }

    /// Publishes one batch of unsent rows and marks them sent; returns how many.
    ///
    /// Rows are sent in id order by one idempotent producer, so per key (per partition) the
    /// broker keeps that order. They are marked only once every record of the batch was
    /// acknowledged: a crash or failure before the commit leaves them unsent, and the next
    /// run publishes them again (at-least-once; consumers deduplicate).
    pub async fn relay_once(&self, client: &mut Client) -> Result<usize, EventsError> {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RELAY_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let rows = tx
            .query(
                "SELECT id, topic, record_key, event_type, envelope FROM outbox \
                 WHERE sent_at IS NULL ORDER BY id LIMIT $1",
                &[&self.batch],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut sends = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.get::<_, i64>(0));
            let topic: &str = row.get(1);
            let key: &str = row.get(2);
            let event_type: &str = row.get(3);
            let payload: &[u8] = row.get(4);
            let headers = OwnedHeaders::new().insert(Header {
                key: HEADER_EVENT_TYPE,
                value: Some(event_type),
            });
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers);
            sends.push(self.producer.send(record, Timeout::After(self.timeout)));
        }
        for result in join_all(sends).await {
            if let Err((e, _)) = result {
                return Err(EventsError::Kafka(e));
            }
        }
        tx.execute(
            "UPDATE outbox SET sent_at = now() WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
        tx.commit().await?;
        tracing::debug!(rows = ids.len(), "outbox rows relayed");
        Ok(ids.len())
    }

    /// Relays until `stop`; errors are logged and retried after a pause.
    pub async fn run(&self, client: &mut Client, stop: CancellationToken) {
        loop {
            let pause = match self.relay_once(client).await {
                Ok(0) => self.idle,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed, retrying");
                    Duration::from_millis(500)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
