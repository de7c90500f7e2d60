//! deptrans HTTP API: the driver's KRT id (GET masked, POST checked by KRT), `/ping` and
//! `/metrics`; the internal feeds live in `feeds`. One error type maps everything to HTTP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};

use super::cache::Caches;
use super::db::lock;
use super::krt::{KrtError, TokenStore};
use super::metrics::DeptransMetrics;
use super::upstream::Upstream;

pub const PARK_HEADER: &str = "x-yataxi-park-id";
pub const DRIVER_HEADER: &str = "x-yataxi-driver-profile-id";
pub const API_KEY_HEADER: &str = "x-api-key";
/// Largest accepted body.
pub const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub pool: Pool,
    pub caches: Arc<Caches>,
    pub upstream: Upstream,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<DeptransMetrics>,
    /// API keys of internal clients.
    pub api_keys: Arc<Vec<String>>,
    pub max_page: i64,
}

/// Error body of every deptrans endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("unauthorized")]
    Unauthorized,
    #[error("driver not found")]
    NotFound,
    #[error("deptrans id does not match the driver's licence")]
    Mismatch,
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self::BadRequest {
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    fn header(name: &str, message: &str) -> Self {
        Self::BadRequest {
            code: "invalid_header",
            message: format!("header {name}: {message}"),
            field: Some(name.to_owned()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self {
            Self::BadRequest {
                code,
                field,
                message,
            } => (StatusCode::BAD_REQUEST, code, message, field),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown API key".into(),
                None,
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "driver_not_found",
                "no licence is known for this driver".into(),
                None,
            ),
            Self::Mismatch => (
                StatusCode::CONFLICT,
                "deptrans_id_mismatch",
                "this deptrans id is not issued to the driver's licence".into(),
                None,
            ),
            Self::Unavailable(why) => {
                tracing::warn!(reason = %why, "dependency unavailable");
                let body = ErrorBody {
                    code: "unavailable".into(),
                    message: "temporarily unavailable, retry later".into(),
                    field: None,
                };
                let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return resp;
            }
            Self::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".into(),
                    None,
                )
            }
        };
        (
            status,
            Json(ErrorBody {
                code: code.into(),
                message,
                field,
            }),
        )
            .into_response()
    }
}

/// Every deptrans route.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/driver/v1/deptrans-status/v1/id",
            get(get_id).post(post_id),
        )
        .route("/internal/v1/id/updates", get(super::feeds::id_updates))
        .route(
            "/internal/v1/status/updates",
            get(super::feeds::status_updates),
        )
        .route("/ping", get(|| async { "pong" }))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// Counts every request by matched route (`-` when none matched, so unknown paths cannot
/// grow the label set) and status, and observes its duration.
async fn count_request(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("-", MatchedPath::as_str);
    state.metrics.request(
        route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

async fn metrics_text(State(state): State<ApiState>) -> Response {
    let body = switchyard_runtime::metrics::render(&state.metrics.registry);
    (
        [(
            header::CONTENT_TYPE,
            switchyard_runtime::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
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
fn driver_pd_id(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
    let park = header_value(headers, PARK_HEADER)?;
    let driver = header_value(headers, DRIVER_HEADER)?;
    state
        .caches
        .profiles
        .licence_pd_id(park, driver)
        .ok_or(ApiError::NotFound)
}

/// A KRT id: exactly 10 decimal digits (the format the state services portal issues).
pub fn valid_deptrans_id(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit())
}

/// All but the last four characters hidden.
pub fn mask(id: &str) -> String {
    let n = id.chars().count();
    id.chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct IdStatus {
    pub bound: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deptrans_id_masked: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub updated_at: Option<DateTime<Utc>>,
}

async fn get_id(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<IdStatus>, ApiError> {
    let pd = driver_pd_id(&state, &headers)?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT deptrans_id, updated_at FROM deptrans.profiles WHERE driver_license_pd_id = $1",
            &[&pd],
        )
        .await?;
    Ok(Json(match row {
        Some(r) => IdStatus {
            bound: true,
            deptrans_id_masked: Some(mask(r.get::<_, &str>(0))),
            updated_at: Some(r.get(1)),
        },
        None => IdStatus {
            bound: false,
            deptrans_id_masked: None,
            updated_at: None,
        },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    pub deptrans_id: String,
}

/// Parses `bytes` as `T`, naming the field at fault.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest {
                code: "invalid_json",
                field: None,
                message: "body is not valid JSON".into(),
            };
        }
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        let named = msg.find('`').and_then(|s| {
            msg[s + 1..]
                .find('`')
                .map(|l| msg[s + 1..s + 1 + l].to_owned())
        });
        let field = match named {
            Some(n) if msg.starts_with("missing field") || msg.starts_with("unknown field") => n,
            _ => path,
        };
        if field == "." {
            ApiError::BadRequest {
                code: "invalid_body",
                field: None,
                message: msg,
            }
        } else {
            ApiError::field(field, msg)
        }
    })
}

async fn post_id(
    State(state): State<ApiState>,
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
    tracing::info!(driver_license_pd_id = %pd, "deptrans id bound");
    Ok(Json(IdStatus {
        bound: true,
        deptrans_id_masked: Some(mask(id)),
        updated_at: Some(row.get(0)),
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
