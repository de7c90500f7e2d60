//! One driver's history, newest first: the statuses KRT took and the shift states KRT
//! answered for the driver's licence, kept `retention_days`, beside the latest shift state
//! (the row the status feed serves). Internal clients only (`X-API-Key`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{driver_ref, limit_arg, query_error, ApiError, ErrorBody};
use super::keys::ApiKeys;
use crate::cache::Caches;

/// What the history endpoint needs.
#[derive(Clone)]
pub(crate) struct HistoryState {
    pub pool: Pool,
    pub caches: Arc<Caches>,
    pub keys: ApiKeys,
    /// Largest `limit`.
    pub max_page: i64,
}

/// Which driver, and how much of their history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// The driver's park.
    #[param(required = true, min_length = 1, max_length = 64, pattern = "^[ -~]+$")]
    pub park_id: Option<String>,
    /// The driver's profile.
    #[param(required = true, min_length = 1, max_length = 64, pattern = "^[ -~]+$")]
    pub driver_id: Option<String>,
    /// Entries of each list at most, 1 to `api.max_page` (default 100; `api.max_page` is 1000 unless configured), newest first.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// A status KRT took for the driver.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusEntry {
    /// `online`, `busy` or `offline`.
    pub status: String,
    /// When the driver's status changed.
    pub status_at: DateTime<Utc>,
    /// When KRT took it.
    pub recorded_at: DateTime<Utc>,
}

/// A shift state KRT answered for the driver's licence.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SessionEntry {
    pub session_status: String,
    pub status_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
}

/// One driver's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DriverHistory {
    pub park_id: String,
    pub driver_id: String,
    /// From the profiles cache; absent when the driver has no known licence (then no shift
    /// states either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_license_pd_id: Option<String>,
    /// The latest shift state, as the status feed serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionEntry>,
    /// Newest first.
    pub sessions: Vec<SessionEntry>,
    /// Newest first.
    pub statuses: Vec<StatusEntry>,
}

fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::field(field, "is required"))?;
    driver_ref(field, &value)?;
    Ok(value)
}

/// A driver's statuses sent to KRT and their licence's shift states, newest first.
#[utoipa::path(
    get,
    path = "/internal/v1/history",
    params(
        ("X-API-Key" = String, Header, description = "Key of an internal client (`[api.clients]`)"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The driver's history within `retention_days`", body = DriverHistory),
        (status = 400, description = "Missing `park_id` or `driver_id`, or a bad `limit`, named in `field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or unknown API key", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "internal"
)]
pub(crate) async fn driver(
    State(state): State<HistoryState>,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<DriverHistory>, ApiError> {
    state.keys.check(&headers)?;
    let Query(q) = q.map_err(query_error)?;
    let park_id = required(q.park_id, "park_id")?;
    let driver_id = required(q.driver_id, "driver_id")?;
    let limit = limit_arg(q.limit.as_deref(), state.max_page)?;
    let client = state.pool.get().await?;
    let statuses = client
        .query(
            "SELECT status, status_at, recorded_at FROM deptrans.status_history
             WHERE park_id = $1 AND driver_id = $2
             ORDER BY status_at DESC LIMIT $3",
            &[&park_id, &driver_id, &limit],
        )
        .await?
        .iter()
        .map(|r| StatusEntry {
            status: r.get(0),
            status_at: r.get(1),
            recorded_at: r.get(2),
        })
        .collect();
    let pd = state.caches.profiles.licence_pd_id(&park_id, &driver_id);
    let (session, sessions) = match &pd {
        None => (None, Vec::new()),
        Some(pd) => {
            let latest = client
                .query_opt(
                    "SELECT session_status, status_at, ended_at, updated_at
                     FROM deptrans.session_statuses WHERE driver_license_pd_id = $1",
                    &[pd],
                )
                .await?
                .map(|r| SessionEntry {
                    session_status: r.get(0),
                    status_at: r.get(1),
                    ended_at: r.get(2),
                    recorded_at: r.get(3),
                });
            let history = client
                .query(
                    "SELECT session_status, status_at, ended_at, recorded_at
                     FROM deptrans.session_history WHERE driver_license_pd_id = $1
                     ORDER BY status_at DESC, recorded_at DESC LIMIT $2",
                    &[pd, &limit],
                )
                .await?
                .iter()
                .map(|r| SessionEntry {
                    session_status: r.get(0),
                    status_at: r.get(1),
                    ended_at: r.get(2),
                    recorded_at: r.get(3),
                })
                .collect();
            (latest, history)
        }
    };
    Ok(Json(DriverHistory {
        park_id,
        driver_id,
        driver_license_pd_id: pd,
        session,
        sessions,
        statuses,
    }))
}
