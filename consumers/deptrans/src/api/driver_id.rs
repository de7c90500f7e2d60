//! The driver's KRT id: `GET` shows it masked, `POST` binds one after KRT confirmed it belongs
//! to the driver's licence. The driver is named by the X-YaTaxi headers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{parse_json, ApiError, ErrorBody};
use crate::cache::Caches;
use crate::db::lock;
use crate::krt::{KrtError, TokenStore};
use crate::upstream::Upstream;

pub(crate) const PARK_HEADER: &str = "x-yataxi-park-id";
pub(crate) const DRIVER_HEADER: &str = "x-yataxi-driver-profile-id";
/// Largest accepted body.
pub(crate) const MAX_BODY: usize = 16 * 1024;

/// What the driver id endpoints need.
#[derive(Clone)]
pub(crate) struct DriverIdState {
    pub pool: Pool,
    pub caches: Arc<Caches>,
    /// The GET answers from here while PostgreSQL is down.
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub upstream: Upstream,
    pub tokens: Arc<TokenStore>,
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let v = headers
        .get(name)
        .ok_or_else(|| ApiError::header(name, "is required"))?;
    let v = v
        .to_str()
        .map_err(|_| ApiError::header(name, "must be ASCII"))?;
    if v.is_empty() || v.len() > 64 {
        return Err(ApiError::header(name, "must be 1-64 characters"));
    }
    Ok(v)
}

/// The driver's licence pd id, from the X-YaTaxi headers and the profiles cache.
fn driver_pd_id(state: &DriverIdState, headers: &HeaderMap) -> Result<String, ApiError> {
    let park = header_value(headers, PARK_HEADER)?;
    let driver = header_value(headers, DRIVER_HEADER)?;
    state
        .caches
        .profiles
        .licence_pd_id(park, driver)
        .ok_or(ApiError::NotFound)
}

/// A KRT id: exactly 10 decimal digits (the format the state services portal issues).
pub(crate) fn valid_deptrans_id(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit())
}

/// All but the last four characters hidden.
pub(crate) fn mask(id: &str) -> String {
    let n = id.chars().count();
    id.chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

/// Whether the driver has a KRT id bound, shown masked.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct IdStatus {
    pub bound: bool,
    /// All but the last four digits hidden, e.g. `******6789`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deptrans_id_masked: Option<String>,
    /// When the id was bound.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The driver's KRT id, masked, or `{"bound": false}`.
#[utoipa::path(
    get,
    path = "/driver/v1/deptrans-status/v1/id",
    params(
        ("X-YaTaxi-Park-Id" = String, Header, description = "The driver's park", min_length = 1, max_length = 64, pattern = "^[ -~]+$"),
        ("X-YaTaxi-Driver-Profile-Id" = String, Header, description = "The driver's profile", min_length = 1, max_length = 64, pattern = "^[ -~]+$"),
    ),
    responses(
        (status = 200, description = "Whether an id is bound (masked)", body = IdStatus),
        (status = 400, description = "Missing or bad header, named in `field`", body = ErrorBody),
        (status = 404, description = "`driver_not_found`: no licence known for this driver", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable and nothing mirrored yet; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "driver"
)]
pub(crate) async fn get_id(
    State(state): State<DriverIdState>,
    headers: HeaderMap,
) -> Result<Json<IdStatus>, ApiError> {
    let pd = driver_pd_id(&state, &headers)?;
    let from_pg = async {
        let client = state.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT deptrans_id, updated_at FROM deptrans.profiles WHERE driver_license_pd_id = $1",
                &[&pd],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    };
    let mirrored = || {
        let profiles = &state.mirrors.profiles;
        profiles
            .synced()
            .then(|| profiles.get(&pd).map(|(at, p)| (p.deptrans_id, at)))
    };
    let row: Option<(String, DateTime<Utc>)> = super::feeds::or_mirror(from_pg, mirrored).await?;
    Ok(Json(match row {
        Some((id, at)) => IdStatus {
            bound: true,
            deptrans_id_masked: Some(mask(&id)),
            updated_at: Some(at),
        },
        None => IdStatus {
            bound: false,
            deptrans_id_masked: None,
            updated_at: None,
        },
    }))
}

/// `POST` body: the KRT id the driver got from the state services portal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BindRequest {
    /// Exactly 10 digits.
    #[schema(pattern = "^[0-9]{10}$")]
    pub deptrans_id: String,
}

/// Binds a KRT id to the driver's licence once KRT confirms it is theirs.
#[utoipa::path(
    post,
    path = "/driver/v1/deptrans-status/v1/id",
    params(
        ("X-YaTaxi-Park-Id" = String, Header, description = "The driver's park", min_length = 1, max_length = 64, pattern = "^[ -~]+$"),
        ("X-YaTaxi-Driver-Profile-Id" = String, Header, description = "The driver's profile", min_length = 1, max_length = 64, pattern = "^[ -~]+$"),
    ),
    request_body = BindRequest,
    responses(
        (status = 200, description = "Checked by KRT and stored", body = IdStatus),
        (status = 400, description = "Bad body or header, named in `field`", body = ErrorBody),
        (status = 404, description = "`driver_not_found`: no licence known", body = ErrorBody),
        (status = 409, description = "`deptrans_id_mismatch`: KRT says the id is not the driver's", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "KRT, personal or PostgreSQL unavailable; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "driver"
)]
pub(crate) async fn post_id(
    State(state): State<DriverIdState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IdStatus>, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::BadRequest {
            code: "body_too_large",
            field: None,
            message: format!("body exceeds {MAX_BODY} bytes"),
        });
    }
    let req: BindRequest = parse_json(&body)?;
    if !valid_deptrans_id(&req.deptrans_id) {
        return Err(ApiError::field("deptrans_id", "must be exactly 10 digits"));
    }
    let pd = driver_pd_id(&state, &headers)?;
    let licence = state
        .upstream
        .licences(vec![pd.clone()])
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .into_iter()
        .find(|i| i.id == pd)
        .ok_or(ApiError::NotFound)?
        .license;
    let id = req.deptrans_id.as_str();
    let matches = state
        .tokens
        .with_token(|t| {
            let licence = &licence;
            let client = &state.tokens.client;
            async move { client.check(&t, id, licence).await }
        })
        .await
        .map_err(|e| match e {
            KrtError::Store(e) => ApiError::Internal(e.to_string()),
            KrtError::Pool(e) => ApiError::Internal(e.to_string()),
            other => ApiError::Unavailable(other.to_string()),
        })?;
    if !matches {
        return Err(ApiError::Mismatch);
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::PROFILES_FEED])
        .await?;
    let row = tx
        .query_one(
            "INSERT INTO deptrans.profiles (driver_license_pd_id, deptrans_id, updated_at)
             VALUES ($1, $2, GREATEST(clock_timestamp(),
                 COALESCE((SELECT max(updated_at) FROM deptrans.profiles), '-infinity') + interval '1 microsecond'))
             ON CONFLICT (driver_license_pd_id) DO UPDATE
             SET deptrans_id = excluded.deptrans_id, updated_at = excluded.updated_at
             RETURNING updated_at",
            &[&pd, &req.deptrans_id],
        )
        .await?;
    tx.commit().await?;
    let updated_at = row.get(0);
    // The driver's next GET sees it now; the follower meets the same row later.
    state.mirrors.profiles.put(
        (updated_at, pd.clone()),
        crate::mirror::Profile {
            deptrans_id: req.deptrans_id.clone(),
        },
    );
    tracing::info!(driver_license_pd_id = %pd, "deptrans id bound");
    Ok(Json(IdStatus {
        bound: true,
        deptrans_id_masked: Some(mask(id)),
        updated_at: Some(updated_at),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_and_masked() {
        assert!(valid_deptrans_id("0123456789"));
        assert!(!valid_deptrans_id("012345678"));
        assert!(!valid_deptrans_id("01234567a9"));
        assert_eq!(mask("0123456789"), "******6789");
        assert_eq!(mask("12"), "12");
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let f = |b: &str| match parse_json::<BindRequest>(b.as_bytes()).unwrap_err() {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(f("{}").as_deref(), Some("deptrans_id"));
        assert_eq!(f(r#"{"deptrans_id":1}"#).as_deref(), Some("deptrans_id"));
        assert_eq!(f(r#"{"deptrans_id":"1","x":1}"#).as_deref(), Some("x"));
        assert_eq!(f("{"), None);
    }
}
