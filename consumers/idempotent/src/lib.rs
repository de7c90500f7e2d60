//! Idempotent consumers of switchyard topics: a handler's own writes and the
//! `processed_events` row keyed by (consumer, idempotency key) commit in one Postgres
//! transaction, so a redelivered event has no second effect.
//!
//! # Layout
//!
//! One module: [`connect`] and [`migrate`] (the `processed_events` table of
//! `migrations/`, in the service's own schema), [`Event`] (a decoded envelope),
//! [`IdempotentConsumer`] (apply once; consume a topic at-least-once) and [`Handler`].
//! A service that also publishes uses `switchyard-outbox` beside it.

use std::time::Duration;

use events::v1::envelope::Payload;
use events::Envelope;
use futures::future::BoxFuture;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use switchyard_runtime::pg::lock;
use switchyard_runtime::KafkaSettings;
use tokio_postgres::{Client, NoTls, Transaction};
use tokio_util::sync::CancellationToken;

/// The idempotent consumer's table; see `migrations/`.
pub const MIGRATION: &str = include_str!("../migrations/0001_processed_events.sql");

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("record at {topic}/{partition}/{offset} is not an envelope")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("payload of {0} is not JSON")]
    Json(String, #[source] serde_json::Error),
    #[error("{0}")]
    Handler(String),
}

/// A connection whose `search_path` is `schema`, the service's own schema.
pub async fn connect(url: &str, schema: &str) -> Result<Client, EventsError> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.options(format!("-c search_path={schema}"));
    let (client, conn) = cfg.connect(NoTls).await?;
    switchyard_runtime::shutdown::spawn_detached("postgres-connection", async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates `schema` and the `processed_events` table in it (idempotent). The outbox table is
/// `switchyard_outbox::migrate`'s.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<(), EventsError> {
    switchyard_runtime::pg::apply_in_schema(client, schema, lock::EVENTS_MIGRATE, MIGRATION)
        .await?;
    Ok(())
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// First delivery: the handler ran and its writes are committed.
    Applied(T),
    /// Already processed by this consumer: nothing ran.
    Duplicate,
}

/// A decoded event as handlers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub envelope: Envelope,
    /// The JSON payload of a domain event (`Value::Null` for other payloads).
    pub payload: serde_json::Value,
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let envelope = Envelope::from_bytes(bytes)?;
        let payload = match &envelope.payload {
            Some(Payload::Json(b)) => serde_json::from_slice(b).unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        };
        Ok(Self { envelope, payload })
    }

    /// The dedup key: the envelope's idempotency key, else its event id.
    pub fn dedup_key(&self) -> &str {
        if self.envelope.idempotency_key.is_empty() {
            &self.envelope.event_id
        } else {
            &self.envelope.idempotency_key
        }
    }

    /// A string field of the JSON payload.
    pub fn str(&self, field: &str) -> Result<&str, EventsError> {
        self.payload
            .get(field)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                EventsError::Handler(format!(
                    "{}: payload has no string {field}",
                    self.envelope.event_type
                ))
            })
    }
}

/// The handler of one consumer: runs inside the transaction that records the event.
pub type Handler = Box<
    dyn for<'t> Fn(&'t Transaction<'t>, &'t Event) -> BoxFuture<'t, Result<(), EventsError>>
        + Send
        + Sync,
>;

/// Applies events at most once per (consumer, idempotency key).
pub struct IdempotentConsumer {
    /// Names this consumer in `processed_events`; two consumers of one event both apply it.
    pub name: String,
}

impl IdempotentConsumer {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Runs `handler` in a transaction with the dedup row, or nothing if the row exists. A
    /// concurrent duplicate waits on the row's lock and then sees it, so it too is skipped.
    pub async fn handle<T, F>(
        &self,
        client: &mut Client,
        event: &Event,
        handler: F,
    ) -> Result<Outcome<T>, EventsError>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>, &'t Event) -> BoxFuture<'t, Result<T, EventsError>>,
    {
        let tx = client.transaction().await?;
        let fresh = tx
            .execute(
                "INSERT INTO processed_events (consumer, idempotency_key, event_id, event_type) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    &self.name,
                    &event.dedup_key(),
                    &event.envelope.event_id,
                    &event.envelope.event_type,
                ],
            )
            .await?;
        if fresh == 0 {
            tx.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let out = handler(&tx, event).await?;
        tx.commit().await?;
        Ok(Outcome::Applied(out))
    }

    /// Consumes `topics` with consumer group `group` until `stop`: each record is handled in
    /// order per partition, then its offset stored (at-least-once). A failing handler is
    /// retried with backoff; it holds its partition, never skips the record.
    pub async fn run(
        &self,
        kafka: &KafkaSettings,
        group: &str,
        topics: &[&str],
        client: &mut Client,
        handler: &Handler,
        stop: CancellationToken,
    ) -> Result<(), EventsError> {
        let consumer: StreamConsumer = kafka.consumer_config(group).create()?;
        consumer.subscribe(topics)?;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = consumer.recv() => m?,
            };
            let event = Event::decode(msg.payload().unwrap_or_default()).map_err(|source| {
                EventsError::Decode {
                    topic: msg.topic().to_owned(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    source,
                }
            })?;
            let mut backoff = Duration::from_millis(50);
            loop {
                match self.handle(client, &event, |tx, ev| handler(tx, ev)).await {
                    Ok(outcome) => {
                        tracing::debug!(
                            consumer = %self.name,
                            event_id = %event.envelope.event_id,
                            duplicate = outcome == Outcome::Duplicate,
                            "event handled"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %self.name, error = %e, event_id = %event.envelope.event_id, "handler failed, retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            consumer.store_offset_from_message(&msg)?;
        }
    }
}
