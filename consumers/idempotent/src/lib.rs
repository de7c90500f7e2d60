//! Idempotent consumers of switchyard topics: a handler's own writes and the
//! `processed_events` row keyed by (consumer, idempotency key) commit in one Postgres
//! transaction, so a redelivered event has no second effect.
//!
//! # Layout
//!
//! Here: [`connect`] and [`migrate`] (the `processed_events` table of `migrations/`, in the
//! service's own schema), [`Event`] (a decoded envelope), [`IdempotentConsumer`] (apply once),
//! [`Handler`] and [`prune`]. `consume` (private): [`IdempotentConsumer::run`], the
//! at-least-once loop with a worker per partition, dead letters and pruning, and [`Db`].
//! A service that also publishes uses `switchyard-outbox` beside it.

mod consume;

use std::time::Duration;

use events::v1::envelope::Payload;
use events::Envelope;
use futures::future::BoxFuture;
use switchyard_runtime::pg::lock;
use tokio_postgres::{Client, NoTls, Transaction};

pub use consume::Db;

/// The idempotent consumer's table; see `migrations/`.
pub const MIGRATION: &str = include_str!("../migrations/0001_processed_events.sql");
/// The index pruning uses.
pub const MIGRATION_AGE_INDEX: &str = include_str!("../migrations/0002_processed_events_age.sql");

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
    /// The handler refuses the event for good (a missing or malformed field): the consume
    /// loop dead-letters it at once instead of retrying.
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
    for sql in [MIGRATION, MIGRATION_AGE_INDEX] {
        switchyard_runtime::pg::apply_in_schema(client, schema, lock::EVENTS_MIGRATE, sql).await?;
    }
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
    /// Where [`run`](Self::run) parks records it cannot apply; `None`: `<group>.dead-letters`.
    pub dead_letter_topic: Option<String>,
    /// Attempts at a record whose handler statement keeps failing before it is dead-lettered.
    pub max_attempts: u32,
    /// How long `processed_events` rows are kept: longer than any redelivery can come late
    /// (a replay from further back than this applies its events again).
    pub retention: Duration,
    /// How often [`run`](Self::run) prunes rows older than `retention`.
    pub prune_every: Duration,
}

impl IdempotentConsumer {
    /// Defaults: 5 attempts, rows kept 7 days, pruned every 10 minutes.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            dead_letter_topic: None,
            max_attempts: 5,
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_every: Duration::from_secs(600),
        }
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
        apply(&self.name, client, event, handler).await
    }
}

/// [`IdempotentConsumer::handle`] for consumer `name`.
pub(crate) async fn apply<T, F>(
    name: &str,
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
                &name,
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

/// Deletes `consumer`'s `processed_events` rows older than `older_than`, in batches so no
/// statement holds many locks; returns how many went.
pub async fn prune(
    client: &Client,
    consumer: &str,
    older_than: Duration,
) -> Result<u64, EventsError> {
    const BATCH: i64 = 5_000;
    let secs = older_than.as_secs_f64();
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM processed_events WHERE (consumer, idempotency_key) IN ( \
                   SELECT consumer, idempotency_key FROM processed_events \
                   WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2) \
                   LIMIT $3)",
                &[&consumer, &secs, &BATCH],
            )
            .await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}
