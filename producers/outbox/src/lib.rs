//! Transactional outbox: a service writes its state change and the event announcing it in one
//! transaction; the relay publishes unsent rows to Kafka in id order and marks them sent, and
//! deletes sent rows once they are older than its `keep_sent` window.
//!
//! # Layout
//!
//! One module: [`migrate`] (the `outbox` table of `migrations/`, in the service's own
//! schema), [`envelope`] (a domain event envelope), [`enqueue`] (inside the state change's
//! transaction) and [`Relay`] (unsent rows to the broker). `examples/produce_envelope.rs`
//! produces an envelope straight to a topic, without outbox or ingress.

use std::time::Duration;

use chrono::Utc;
use events::v1::envelope::Payload;
use events::Envelope;
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use switchyard_runtime::kafka::envelope_headers;
use switchyard_runtime::pg::lock;
use switchyard_runtime::KafkaSettings;
use tokio_postgres::{Client, GenericClient};
use tokio_util::sync::CancellationToken;

/// The outbox table; see `migrations/`.
pub const MIGRATION: &str = include_str!("../migrations/0001_outbox.sql");
/// The index pruning uses.
pub const MIGRATION_SENT_INDEX: &str = include_str!("../migrations/0002_outbox_sent.sql");

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Creates `schema` and the `outbox` table in it (idempotent), under the same advisory lock
/// as the idempotent consumer's migration of that schema.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<(), OutboxError> {
    for sql in [MIGRATION, MIGRATION_SENT_INDEX] {
        switchyard_runtime::pg::apply_in_schema(client, schema, lock::EVENTS_MIGRATE, sql).await?;
    }
    Ok(())
}

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
) -> Result<(), tokio_postgres::Error> {
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
    /// How long sent rows stay (to see what went out, and when); older ones are deleted.
    pub keep_sent: Duration,
    /// How often [`run`](Self::run) deletes sent rows older than `keep_sent`.
    pub prune_every: Duration,
}

impl Relay {
    pub fn new(kafka: &KafkaSettings, role: &str) -> Result<Self, OutboxError> {
        Ok(Self {
            producer: kafka.producer_config(role).create()?,
            timeout: kafka.produce_timeout(),
            batch: 500,
            idle: Duration::from_millis(50),
            keep_sent: Duration::from_secs(3600),
            prune_every: Duration::from_secs(60),
        })
    }

    /// Publishes one batch of unsent rows and marks them sent; returns how many.
    ///
    /// Rows are sent in id order by one idempotent producer, so per key (per partition) the
    /// broker keeps that order. They are marked only once every record of the batch was
    /// acknowledged: a crash or failure before the commit leaves them unsent, and the next
    /// run publishes them again (at-least-once; consumers deduplicate).
    pub async fn relay_once(&self, client: &mut Client) -> Result<usize, OutboxError> {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&lock::OUTBOX_RELAY],
            )
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
            // The row keeps the event type beside the encoded envelope, so the relay adds the
            // standard headers without decoding it.
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(envelope_headers(event_type, None, None));
            sends.push(self.producer.send(record, Timeout::After(self.timeout)));
        }
        for result in join_all(sends).await {
            if let Err((e, _)) = result {
                return Err(OutboxError::Kafka(e));
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

    /// Deletes sent rows older than `keep_sent`, in batches; returns how many went. Unsent
    /// rows are never touched.
    pub async fn prune_sent(&self, client: &Client) -> Result<u64, OutboxError> {
        const BATCH: i64 = 5_000;
        let secs = self.keep_sent.as_secs_f64();
        let mut total = 0;
        loop {
            let n = client
                .execute(
                    "DELETE FROM outbox WHERE id IN ( \
                       SELECT id FROM outbox \
                       WHERE sent_at < now() - make_interval(secs => $1) LIMIT $2)",
                    &[&secs, &BATCH],
                )
                .await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Relays until `stop`, pruning sent rows every `prune_every`; errors are logged and
    /// retried after a pause.
    pub async fn run(&self, client: &mut Client, stop: CancellationToken) {
        let mut next_prune = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_prune {
                next_prune = tokio::time::Instant::now() + self.prune_every;
                match self.prune_sent(client).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "sent outbox rows pruned"),
                    Err(e) => tracing::warn!(error = %e, "outbox prune failed"),
                }
            }
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
