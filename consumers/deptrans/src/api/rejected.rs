//! Statuses refused for good (`deptrans.rejected`): listed, and put back into the queue once
//! the cause is fixed. Internal clients only (`X-API-Key`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{driver_ref, limit_arg, parse_json, query_error, ApiError, ErrorBody};
use super::keys::ApiKeys;
use crate::metrics::DeptransMetrics;
use crate::rejected::{self, reason, Rejected};

/// Most drivers re-queued by one request.
pub(crate) const MAX_REQUEUE: usize = 1_000;

/// What the rejected-rows endpoints need.
#[derive(Clone)]
pub(crate) struct RejectedState {
    pub pool: Pool,
    pub keys: ApiKeys,
    pub max_page: i64,
    pub metrics: Arc<DeptransMetrics>,
}

/// Paging and filter of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RejectedQuery {
    /// Where the previous page ended; absent or empty = from the oldest.
    pub cursor: Option<String>,
    /// Items per page, 1 to `api.max_page` (default 100; `api.max_page` is 1000 unless configured).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Only rows refused for this reason: `krt_refused`, `krt_rejected`, `krt_malformed`,
    /// `no_licence`, `unknown_driver`; absent or empty: every reason.
    #[param(pattern = "^(|krt_refused|krt_rejected|krt_malformed|no_licence|unknown_driver)$")]
    pub reason: Option<String>,
}

/// A status that left the queue without being sent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RejectedItem {
    pub park_id: String,
    pub driver_id: String,
    /// `online`, `busy` or `offline`.
    pub status: String,
    /// When the driver's status changed.
    pub status_at: DateTime<Utc>,
    /// `krt_refused` (a 4xx for this row alone), `krt_rejected` (KRT's answer marked the row),
    /// `krt_malformed`, `no_licence`, `unknown_driver`.
    pub reason: String,
    /// KRT's HTTP status when it refused the request.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub krt_status: Option<i32>,
    /// The start of KRT's answer, personal data redacted.
    pub krt_answer: String,
    pub rejected_at: DateTime<Utc>,
}

impl From<Rejected> for RejectedItem {
    fn from(r: Rejected) -> Self {
        Self {
            park_id: r.park_id,
            driver_id: r.driver_id,
            status: r.status,
            status_at: r.status_at,
            reason: r.reason,
            krt_status: r.krt_status,
            krt_answer: r.krt_answer,
            rejected_at: r.rejected_at,
        }
    }
}

/// A page of rejected rows, oldest rejection first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RejectedPage {
    pub items: Vec<RejectedItem>,
    /// Pass as `cursor` for the next page; unchanged when nothing new.
    pub cursor: String,
}

/// A driver as the platform names it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriverKey {
    #[schema(min_length = 1, max_length = 64, pattern = "^[ -~]+$")]
    pub park_id: String,
    #[schema(min_length = 1, max_length = 64, pattern = "^[ -~]+$")]
    pub driver_id: String,
}

/// `POST` body: the drivers whose rejected status goes back into the queue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequeueRequest {
    /// 1 to 1000 drivers.
    #[schema(min_items = 1, max_items = 1000)]
    pub drivers: Vec<DriverKey>,
}

/// What a re-queue did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RequeueResult {
    /// Drivers whose rejected status is queued again (unless a newer one already was).
    pub requeued: Vec<DriverKey>,
    /// Drivers asked for that had no rejected row.
    pub not_found: Vec<DriverKey>,
}

type Position = (DateTime<Utc>, String, String);

fn encode(p: &Position) -> String {
    let raw = serde_json::json!([p.0.timestamp_micros(), p.1, p.2]).to_string();
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode(s: &str) -> Option<Position> {
    let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
    let (micros, park, driver): (i64, String, String) = serde_json::from_slice(&raw).ok()?;
    Some((DateTime::from_timestamp_micros(micros)?, park, driver))
}

/// Rows refused for good, oldest first.
#[utoipa::path(
    get,
    path = "/internal/v1/rejected",
    params(
        ("X-API-Key" = String, Header, description = "Key of an internal client (`[api.clients]`)"),
        RejectedQuery,
    ),
    responses(
        (status = 200, description = "Rejected rows after `cursor`", body = RejectedPage),
        (status = 400, description = "Bad `cursor`, `limit` or `reason`, named in `field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or unknown API key", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "internal"
)]
pub(crate) async fn list(
    State(state): State<RejectedState>,
    headers: HeaderMap,
    q: Result<Query<RejectedQuery>, QueryRejection>,
) -> Result<Json<RejectedPage>, ApiError> {
    state.keys.check(&headers)?;
    let Query(q) = q.map_err(query_error)?;
    let after = match q.cursor.as_deref() {
        None | Some("") => (DateTime::<Utc>::UNIX_EPOCH, String::new(), String::new()),
        Some(c) => {
            decode(c).ok_or_else(|| ApiError::field("cursor", "is not a cursor this API issued"))?
        }
    };
    let limit = limit_arg(q.limit.as_deref(), state.max_page)?;
    let wanted = match q.reason.as_deref() {
        None | Some("") => None,
        Some(r) => Some(
            *reason::ALL
                .iter()
                .find(|known| **known == r)
                .ok_or_else(|| {
                    ApiError::field(
                        "reason",
                        format!("must be one of {}", reason::ALL.join(", ")),
                    )
                })?,
        ),
    };
    let rows = rejected::list(&state.pool, (after.0, &after.1, &after.2), wanted, limit).await?;
    let next = rows
        .last()
        .map(|r| (r.rejected_at, r.park_id.clone(), r.driver_id.clone()))
        .unwrap_or(after);
    Ok(Json(RejectedPage {
        items: rows.into_iter().map(RejectedItem::from).collect(),
        cursor: encode(&next),
    }))
}

/// Puts the rejected statuses of `drivers` back into the queue (a newer queued status wins);
/// the sender tries them again on its next run.
#[utoipa::path(
    post,
    path = "/internal/v1/rejected/requeue",
    params(
        ("X-API-Key" = String, Header, description = "Key of an internal client (`[api.clients]`)"),
    ),
    request_body = RequeueRequest,
    responses(
        (status = 200, description = "Re-queued", body = RequeueResult),
        (status = 400, description = "Bad body, the field named in `field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or unknown API key", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "internal"
)]
pub(crate) async fn requeue(
    State(state): State<RejectedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RequeueResult>, ApiError> {
    state.keys.check(&headers)?;
    let req: RequeueRequest = parse_json(&body)?;
    if req.drivers.is_empty() || req.drivers.len() > MAX_REQUEUE {
        return Err(ApiError::field(
            "drivers",
            format!("must hold 1 to {MAX_REQUEUE} drivers"),
        ));
    }
    for (i, d) in req.drivers.iter().enumerate() {
        driver_ref(&format!("drivers[{i}].park_id"), &d.park_id)?;
        driver_ref(&format!("drivers[{i}].driver_id"), &d.driver_id)?;
    }
    let keys: Vec<(String, String)> = req
        .drivers
        .iter()
        .map(|d| (d.park_id.clone(), d.driver_id.clone()))
        .collect();
    let moved = rejected::requeue(&state.pool, &keys).await?;
    state.metrics.requeued.inc_by(moved.len() as u64);
    tracing::info!(
        requeued = moved.len(),
        asked = keys.len(),
        "rejected statuses re-queued"
    );
    let (requeued, not_found) = req
        .drivers
        .into_iter()
        .partition(|d| moved.iter().any(|m| m.0 == d.park_id && m.1 == d.driver_id));
    Ok(Json(RequeueResult {
        requeued,
        not_found,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_bad_bodies_name_the_field() {
        let p = (
            DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            "p|1".to_owned(),
            "d\"2".to_owned(),
        );
        assert_eq!(decode(&encode(&p)), Some(p));
        assert_eq!(decode("!!"), None);
        let f = |b: &str| match parse_json::<RequeueRequest>(b.as_bytes()).unwrap_err() {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(f("{}").as_deref(), Some("drivers"));
        assert_eq!(
            f(r#"{"drivers":[{"park_id":"p"}]}"#).as_deref(),
            Some("driver_id")
        );
        assert_eq!(
            f(r#"{"drivers":[{"park_id":"p","driver_id":1}]}"#).as_deref(),
            Some("drivers[0].driver_id")
        );
    }
}
