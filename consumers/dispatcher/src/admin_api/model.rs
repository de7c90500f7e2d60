//! The admin API's bodies, typed: the handlers return them, the OpenAPI document is derived
//! from them, and the `switchyard` CLI (and any Rust client) parses answers into them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use switchyard_runtime::http::ErrorBody;

/// A replay running in the background, as `GET /admin/api/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub subscriber: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub done: u64,
    pub total: u64,
    pub error: Option<String>,
}

/// `GET /admin/api/subscribers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubscriberList {
    pub subscribers: Vec<SubscriberView>,
}

/// One subscriber: what it reads, where it delivers, its state and counters since start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubscriberView {
    pub name: String,
    pub topics: Vec<String>,
    /// `http://...` or `topic:<name>`.
    pub target: String,
    /// `running` or `paused`.
    #[schema(example = "running")]
    pub state: String,
    /// Why it is paused: `paused by an operator`, or the target's `410 Gone` (resume clears
    /// it); null while running.
    pub paused_reason: Option<String>,
    /// The circuit breaker: `closed` (delivering), `open` (records park without an attempt)
    /// or `half_open` (one probe tests the target).
    #[schema(example = "closed")]
    pub breaker: String,
    /// Breaker transitions since start-up.
    pub breaker_transitions: u64,
    /// Records whose park in a retry or dead-letter topic is failing and being retried now
    /// (their partitions wait; nothing is committed past them).
    pub parking_failed: i64,
    /// Records behind the high watermark over its partitions (stored offsets).
    pub lag: i64,
    pub delivered: u64,
    pub failed_attempts: u64,
    /// Records parked in its retry tiers.
    pub parked: u64,
    pub dead_lettered: u64,
    pub delivered_per_sec: f64,
    pub failed_per_sec: f64,
    /// Dead letters not replayed yet; null until first counted.
    pub dead_letters: Option<i64>,
    /// Attempts per second this replica may start: its share of `max_per_second` (its source
    /// partitions over all of them; 0 while it owns none); null: no rate limit.
    pub max_per_second: Option<f64>,
    /// Attempts this replica may have in flight: its share of `max_in_flight`; null: no limit.
    pub max_in_flight: Option<u32>,
}

/// The state after `pause` or `resume`, kept in PostgreSQL for every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PauseState {
    pub name: String,
    /// `running` or `paused`.
    #[schema(example = "paused")]
    pub state: String,
}

/// `GET /admin/api/subscribers/{name}/dead-letters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    /// Newest first.
    pub records: Vec<DeadLetter>,
}

/// One record of the subscriber's dead-letter topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// Delivery attempts before it was dead-lettered.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The topic the record was first read from.
    pub origin: Option<String>,
    /// RFC 3339, milliseconds.
    pub dead_lettered_at: Option<String>,
    /// A replay of every dead letter already took it.
    pub replayed: bool,
    /// The decoded envelope (`event_id`, `event_type`, `schema_version`, `occurred_at`,
    /// `produced_at`, `producer`, `idempotency_key`, `traceparent`, `payload`); null when the
    /// record is not an envelope.
    pub payload: Option<Value>,
}

/// `202` of `POST /admin/api/subscribers/{name}/replay`: poll `GET /admin/api/jobs/{job_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayAccepted {
    pub job_id: String,
}

/// `GET /admin/api/attempts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    /// Newest first.
    pub attempts: Vec<AttemptView>,
}

/// One delivery attempt from the attempt log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub subscriber: String,
    /// RFC 3339, milliseconds.
    pub at: String,
    pub event_id: String,
    /// 1-based attempt number across tiers.
    pub attempt: i32,
    /// HTTP status of the subscriber's answer, when there was one.
    pub status: Option<i16>,
    /// `delivered` or `failed`.
    #[schema(example = "delivered")]
    pub outcome: String,
    pub latency_ms: i32,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}
