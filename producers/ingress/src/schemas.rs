//! `GET /v1/schemas` and `GET /v1/schemas/{type}.v{N}`: the domain event registry, read-only,
//! for producers that write straight to Kafka. Every answer has a strong `ETag` (a hash of the
//! body); `If-None-Match` with it answers 304.

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::domain_events::split_versioned;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// One registered event type and version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SchemaEntry {
    /// `<type>.v<version>`, the id of `GET /v1/schemas/{schema}` and `POST /v1/events/{event_type}`.
    pub id: String,
    /// `<domain>.<name>`: the envelope's `event_type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The envelope's `schema_version`.
    pub version: u32,
    /// Topic the events of this type are published to.
    pub topic: String,
    /// Top-level payload field whose value is the record key.
    pub key: String,
}

/// Every registered event type and version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SchemaList {
    pub schemas: Vec<SchemaEntry>,
}

/// `"<first 16 bytes of sha256 in hex>"`.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names `tag` (or is `*`).
fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

fn answer(headers: &HeaderMap, body: Vec<u8>, content_type: &'static str) -> Response {
    let tag = etag(&body);
    if not_modified(headers, &tag) {
        return ApiError::NotModified {
            etag: tag,
            message: String::new(),
        }
        .into_response();
    }
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The registry: every event type and version the ingress accepts.
#[utoipa::path(
    get,
    path = "/v1/schemas",
    params(("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer")),
    responses(
        (status = 200, description = "Every registered type and version", body = SchemaList),
        (status = 304, description = "Unchanged since the `ETag` sent in `If-None-Match`"),
        (status = 401, description = "No known credential (`unauthenticated`)", body = ErrorBody),
        (status = 403, description = "The caller may not use this route (`forbidden`)", body = ErrorBody),
    ),
    tag = "schemas"
)]
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let schemas = state
        .events
        .iter()
        .map(|e| SchemaEntry {
            id: format!("{}.v{}", e.entry.event_type, e.entry.version),
            event_type: e.entry.event_type.clone(),
            version: e.entry.version,
            topic: e.entry.topic.clone(),
            key: e.entry.key.clone(),
        })
        .collect();
    match serde_json::to_vec_pretty(&SchemaList { schemas }) {
        Ok(body) => answer(&headers, body, "application/json"),
        Err(e) => ApiError::Internal(Box::new(e)).into_response(),
    }
}

/// One JSON Schema (draft 2020-12) of an event type's payload.
#[utoipa::path(
    get,
    path = "/v1/schemas/{schema}",
    params(
        ("schema" = String, Path, description = "`<domain>.<name>.v<N>`, e.g. `tasks.task_assigned.v1`", pattern = r"^.+\.v[1-9][0-9]{0,8}$"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The JSON Schema", content_type = "application/schema+json", body = Object),
        (status = 304, description = "Unchanged since the `ETag` sent in `If-None-Match`"),
        (status = 400, description = "Not `<type>.v<N>`", body = ErrorBody),
        (status = 401, description = "No known credential (`unauthenticated`)", body = ErrorBody),
        (status = 403, description = "The caller may not use this route (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Unknown type (`unknown_event_type`) or version (`unknown_event_version`)", body = ErrorBody),
    ),
    tag = "schemas"
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    UrlPath(schema): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (name, version) = split_versioned(&schema, "schema")?;
    let event = state.events.lookup(name, version)?;
    let body =
        serde_json::to_vec_pretty(&event.schema).map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(answer(&headers, body, "application/schema+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_matches_listed_and_weak_tags() {
        let tag = etag(b"{}");
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(not_modified(&h, &tag));
        assert_ne!(etag(b"{}"), etag(b"[]"));
    }
}
