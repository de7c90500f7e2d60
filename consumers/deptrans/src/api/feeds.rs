//! Internal cursor-paged feeds for other services' caches: bound KRT ids and session
//! statuses. Cursor = (updated_at, key), opaque to clients; writers stamp updated_at under an
//! advisory lock, strictly after every committed row, so no row is skipped or repeated. Pages
//! come from PostgreSQL; when it is down (or slower than a second) from the tables' mirrors
//! (`crate::mirror`, a prefix of the same order), with the same cursor.
//!
//! The two feeds share their paging (`page_args`, `page`, `or_mirror`); each keeps its own
//! query and item mapping, which name its table, columns and item type: one generic feed over
//! them would hide those behind a trait and save only the lines that say which is which.

use std::sync::Arc;

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

use super::error::{limit_arg, query_error, ApiError, ErrorBody};
use super::keys::ApiKeys;
use crate::cache::Caches;
use crate::upstream::DriverRef;

/// What the feeds need.
#[derive(Clone)]
pub(crate) struct FeedsState {
    pub pool: Pool,
    pub caches: Arc<Caches>,
    /// The feeds page from here while PostgreSQL is down.
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub keys: ApiKeys,
    /// Largest `limit`.
    pub max_page: i64,
}

/// Paging of a feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Where the previous page ended; absent or empty = from the beginning.
    pub cursor: Option<String>,
    /// Items per page, 1 to `api.max_page` (default 100; `api.max_page` is 1000 unless configured).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// A position in a feed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    pub updated_at: DateTime<Utc>,
    pub key: String,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}|{}",
            self.updated_at.timestamp_micros(),
            self.key
        ))
    }

    pub(crate) fn decode(s: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let (micros, key) = raw.split_once('|')?;
        Some(Self {
            updated_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            key: key.to_owned(),
        })
    }

    fn start() -> Self {
        Self {
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            key: String::new(),
        }
    }
}

/// A bound KRT id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct IdItem {
    pub driver_license_pd_id: String,
    pub deptrans_id: String,
    pub updated_at: DateTime<Utc>,
    /// Drivers with this licence, from the profiles cache.
    pub drivers: Vec<DriverRef>,
}

/// A page of the bound-id feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct IdPage {
    pub items: Vec<IdItem>,
    /// Pass as `cursor` for the next page; unchanged when nothing new.
    pub cursor: String,
}

/// KRT's latest answer for a licence: the state of the work shift.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusItem {
    pub driver_license_pd_id: String,
    pub session_status: String,
    pub status_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub drivers: Vec<DriverRef>,
}

/// A page of the session-status feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusPage {
    pub items: Vec<StatusItem>,
    pub cursor: String,
}

fn page_args(state: &FeedsState, q: &PageQuery) -> Result<(Cursor, i64), ApiError> {
    let cursor = match q.cursor.as_deref() {
        None | Some("") => Cursor::start(),
        Some(c) => Cursor::decode(c)
            .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API issued"))?,
    };
    let limit = limit_arg(q.limit.as_deref(), state.max_page)?;
    Ok((cursor, limit))
}

/// Bound KRT ids in write order, for other services' caches.
#[utoipa::path(
    get,
    path = "/internal/v1/id/updates",
    params(
        ("X-API-Key" = String, Header, description = "Key of an internal client (`[api.clients]`)"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "The ids written after `cursor`", body = IdPage),
        (status = 400, description = "Bad `cursor` or `limit`, named in `field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or unknown API key", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable and nothing mirrored yet; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "internal"
)]
pub(crate) async fn id_updates(
    State(state): State<FeedsState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<IdPage>, ApiError> {
    state.keys.check(&headers)?;
    let Query(q) = q.map_err(query_error)?;
    let (cursor, limit) = page_args(&state, &q)?;
    or_mirror(id_page(&state, &cursor, limit), || {
        id_page_mirrored(&state, &cursor, limit)
    })
    .await
    .map(Json)
}

async fn id_page(state: &FeedsState, cursor: &Cursor, limit: i64) -> Result<IdPage, ApiError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT driver_license_pd_id, deptrans_id, updated_at FROM deptrans.profiles
             WHERE (updated_at, driver_license_pd_id) > ($1, $2)
             ORDER BY updated_at, driver_license_pd_id LIMIT $3",
            &[&cursor.updated_at, &cursor.key, &limit],
        )
        .await?;
    let items = rows.iter().map(|r| {
        let pd: String = r.get(0);
        IdItem {
            drivers: state.caches.profiles.drivers_of(&pd),
            driver_license_pd_id: pd,
            deptrans_id: r.get(1),
            updated_at: r.get(2),
        }
    });
    let (items, cursor) = page(cursor, items);
    Ok(IdPage { items, cursor })
}

fn id_page_mirrored(state: &FeedsState, cursor: &Cursor, limit: i64) -> Option<IdPage> {
    let mirror = &state.mirrors.profiles;
    if !mirror.synced() {
        return None;
    }
    let items = mirror
        .page(&(cursor.updated_at, cursor.key.clone()), limit as usize)
        .into_iter()
        .map(|((at, pd), p)| IdItem {
            drivers: state.caches.profiles.drivers_of(&pd),
            driver_license_pd_id: pd,
            deptrans_id: p.deptrans_id,
            updated_at: at,
        });
    let (items, cursor) = page(cursor, items);
    Some(IdPage { items, cursor })
}

/// KRT's session statuses in write order, for other services' caches.
#[utoipa::path(
    get,
    path = "/internal/v1/status/updates",
    params(
        ("X-API-Key" = String, Header, description = "Key of an internal client (`[api.clients]`)"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "The statuses written after `cursor`", body = StatusPage),
        (status = 400, description = "Bad `cursor` or `limit`, named in `field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or unknown API key", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable and nothing mirrored yet; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "internal"
)]
pub(crate) async fn status_updates(
    State(state): State<FeedsState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<StatusPage>, ApiError> {
    state.keys.check(&headers)?;
    let Query(q) = q.map_err(query_error)?;
    let (cursor, limit) = page_args(&state, &q)?;
    or_mirror(status_page(&state, &cursor, limit), || {
        status_page_mirrored(&state, &cursor, limit)
    })
    .await
    .map(Json)
}

async fn status_page(
    state: &FeedsState,
    cursor: &Cursor,
    limit: i64,
) -> Result<StatusPage, ApiError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT driver_license_pd_id, session_status, status_at, ended_at, updated_at
             FROM deptrans.session_statuses
             WHERE (updated_at, driver_license_pd_id) > ($1, $2)
             ORDER BY updated_at, driver_license_pd_id LIMIT $3",
            &[&cursor.updated_at, &cursor.key, &limit],
        )
        .await?;
    let items = rows.iter().map(|r| {
        let pd: String = r.get(0);
        StatusItem {
            drivers: state.caches.profiles.drivers_of(&pd),
            driver_license_pd_id: pd,
            session_status: r.get(1),
            status_at: r.get(2),
            ended_at: r.get(3),
            updated_at: r.get(4),
        }
    });
    let (items, cursor) = page(cursor, items);
    Ok(StatusPage { items, cursor })
}

fn status_page_mirrored(state: &FeedsState, cursor: &Cursor, limit: i64) -> Option<StatusPage> {
    let mirror = &state.mirrors.sessions;
    if !mirror.synced() {
        return None;
    }
    let items = mirror
        .page(&(cursor.updated_at, cursor.key.clone()), limit as usize)
        .into_iter()
        .map(|((at, pd), s)| StatusItem {
            drivers: state.caches.profiles.drivers_of(&pd),
            driver_license_pd_id: pd,
            session_status: s.session_status,
            status_at: s.status_at,
            ended_at: s.ended_at,
            updated_at: at,
        });
    let (items, cursor) = page(cursor, items);
    Some(StatusPage { items, cursor })
}

/// An item of a feed, ordered by (`updated_at`, licence pd id): its place in the feed.
trait FeedItem {
    fn position(&self) -> Cursor;
}

impl FeedItem for IdItem {
    fn position(&self) -> Cursor {
        Cursor {
            updated_at: self.updated_at,
            key: self.driver_license_pd_id.clone(),
        }
    }
}

impl FeedItem for StatusItem {
    fn position(&self) -> Cursor {
        Cursor {
            updated_at: self.updated_at,
            key: self.driver_license_pd_id.clone(),
        }
    }
}

/// One page of a feed, read from PostgreSQL or from a mirror: its items and the cursor after
/// the last one (`cursor` itself for an empty page, so the client asks again from there).
fn page<I: FeedItem>(cursor: &Cursor, items: impl Iterator<Item = I>) -> (Vec<I>, String) {
    let items: Vec<I> = items.collect();
    let next = items
        .last()
        .map_or_else(|| cursor.clone(), FeedItem::position);
    (items, next.encode())
}

/// How long a read waits for PostgreSQL before the mirror answers instead.
const PG_READ: std::time::Duration = std::time::Duration::from_secs(1);

/// PostgreSQL's answer when it comes within [`PG_READ`]; else (down or slow) the mirror's,
/// when it has one (`crate::mirror`), so the caller is served from memory rather than failed.
pub(crate) async fn or_mirror<T>(
    pg: impl std::future::Future<Output = Result<T, ApiError>>,
    mirrored: impl FnOnce() -> Option<T>,
) -> Result<T, ApiError> {
    let err = match tokio::time::timeout(PG_READ, pg).await {
        Ok(Ok(answer)) => return Ok(answer),
        Ok(Err(e)) => e,
        Err(_) => ApiError::Unavailable("PostgreSQL did not answer in time".into()),
    };
    match mirrored() {
        Some(answer) => {
            tracing::debug!(error = ?err, "PostgreSQL unavailable: answered from the mirror");
            Ok(answer)
        }
        None => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_with_any_key() {
        let c = Cursor {
            updated_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            key: "a|b_c".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("!!"), None);
    }
}
