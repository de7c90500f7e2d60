//! The admin API's OpenAPI document, generated from the handlers and committed under
//! `schemas/openapi/admin.json`; the structs below describe the JSON the handlers build.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard dispatcher admin API",
        description = "Subscribers with state, lag and dead letters; pause and resume; the \
                       dead-letter browser; replays as jobs; the attempt log. Served on the \
                       dispatcher's `listen` address when `[admin] token` is set (404 \
                       `admin_disabled` otherwise)."
    ),
    paths(
        super::subscribers,
        super::pause,
        super::resume,
        super::dead_letters,
        super::start_replay,
        super::job,
        super::attempts
    ),
    components(schemas(
        super::ErrorBody,
        super::JobStatus,
        crate::replay::ReplaySource,
        crate::replay::DeadLetterSelection,
        crate::replay::TopicSelection
    )),
    modifiers(&BearerAuth, &TaggedSelections),
    security(("bearer" = [])),
    tags((name = "admin", description = "Operate the dispatcher's subscribers"))
)]
pub struct AdminApi;

/// Adds the `bearer` scheme: `Authorization: Bearer <[admin] token>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The replay body is `{"source": ..., ...selection}`: the `allOf` of a selection and its tag
/// must not say `additionalProperties: false` on the selection, or `source` itself would be
/// refused. Unknown fields are still refused by the handler (400 naming the field).
struct TaggedSelections;

impl Modify for TaggedSelections {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["DeadLetterSelection", "TopicSelection"] {
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(name) {
                o.additional_properties = None;
            }
        }
    }
}

/// The document as committed in `schemas/openapi/admin.json`.
pub fn document() -> String {
    let mut json = AdminApi::openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// `GET /admin/api/subscribers`.
#[derive(Serialize, ToSchema)]
pub struct SubscriberList {
    pub subscribers: Vec<SubscriberView>,
}

/// One subscriber: what it reads, where it delivers, its state and counters since start-up.
#[derive(Serialize, ToSchema)]
pub struct SubscriberView {
    pub name: String,
    pub topics: Vec<String>,
    /// `http://...` or `topic:<name>`.
    pub target: String,
    /// `running` or `paused`.
    #[schema(example = "running")]
    pub state: String,
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
}

/// The state after `pause` or `resume`, kept in PostgreSQL for every replica.
#[derive(Serialize, ToSchema)]
pub struct PauseState {
    pub name: String,
    /// `running` or `paused`.
    #[schema(example = "paused")]
    pub state: String,
}

/// `GET /admin/api/subscribers/{name}/dead-letters`.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Newest first.
    pub records: Vec<DeadLetter>,
}

/// One record of the subscriber's dead-letter topic.
#[derive(Serialize, ToSchema)]
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
#[derive(Serialize, ToSchema)]
pub struct ReplayAccepted {
    pub job_id: String,
}

/// `GET /admin/api/attempts`.
#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    /// Newest first.
    pub attempts: Vec<AttemptView>,
}

/// One delivery attempt from the attempt log.
#[derive(Serialize, ToSchema)]
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

#[cfg(test)]
mod tests {
    /// Fails when the committed document drifts from the code; regenerate with
    /// `cargo run -p switchyard-dispatcher -- --print-openapi > schemas/openapi/admin.json`.
    #[test]
    fn committed_openapi_matches_code() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/openapi/admin.json"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::document(),
            "schemas/openapi/admin.json is stale: run \
             `cargo run -p switchyard-dispatcher -- --print-openapi > schemas/openapi/admin.json`"
        );
    }
}
