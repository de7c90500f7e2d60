//! The one error type of the deptrans API, its JSON body and strict body parsing that names
//! the field at fault. A leaf: it imports nothing else from `api`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Error body of every deptrans endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_field`, `unauthorized`, `driver_not_found`.
    pub code: String,
    /// Human-readable explanation naming the offending field or header.
    pub message: String,
    /// The field, header or query parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
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
    pub(crate) fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self::BadRequest {
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    pub(crate) fn header(name: &str, message: &str) -> Self {
        Self::BadRequest {
            code: "invalid_header",
            message: format!("header {name}: {message}"),
            field: Some(name.to_owned()),
        }
    }
}

/// A statement PostgreSQL refused is a 500; a connection that failed or closed is PostgreSQL
/// being away: 503, retry.
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            Self::Internal(e.to_string())
        } else {
            Self::Unavailable(format!("PostgreSQL unavailable: {e}"))
        }
    }
}

/// No connection could be had: PostgreSQL is away (503, retry).
impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(format!("PostgreSQL unavailable: {e}"))
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

/// Parses `bytes` as `T`, naming the field at fault.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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

/// A park or driver id in a query or body: 1-64 visible ASCII characters, as the X-YaTaxi
/// headers carry them (PostgreSQL refuses a NUL in text, so it must never reach a statement).
pub(crate) fn driver_ref(field: &str, value: &str) -> Result<(), ApiError> {
    if (1..=64).contains(&value.len()) && value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1-64 visible ASCII characters",
        ))
    }
}

/// A page's `limit`: absent is 100; else an integer in `1..=max_page`, or a 400 naming it.
pub(crate) fn limit_arg(raw: Option<&str>, max_page: i64) -> Result<i64, ApiError> {
    Ok(switchyard_runtime::http::query::page_limit(
        "limit", raw, 100, max_page,
    )?)
}

/// A query string the extractor could not parse, as a 400 naming the parameter.
pub(crate) fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    switchyard_runtime::http::query::rejection(rejection).into()
}

impl From<switchyard_runtime::http::BadRequest> for ApiError {
    fn from(e: switchyard_runtime::http::BadRequest) -> Self {
        Self::BadRequest {
            code: e.code,
            field: e.field,
            message: e.message,
        }
    }
}
