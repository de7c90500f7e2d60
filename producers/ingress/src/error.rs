//! The one mapping from ingress errors to HTTP: 4xx name the field, 5xx stay generic.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Error body of every ingress endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_field`, `body_too_large`, `unavailable`.
    pub code: &'static str,
    /// Human-readable explanation naming the offending field or header.
    pub message: String,
    /// JSON path of the field (or name of the header) at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every schema violation of the body, when it was validated against a JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
}

/// One JSON Schema violation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Violation {
    /// Path of the offending field (`a.b[0]`; `$` for the whole body).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("the body violates its schema")]
    Violations(Vec<Violation>),
    #[error("the broker did not acknowledge the record in time")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
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

    pub fn header(name: &str, message: impl std::fmt::Display) -> Self {
        Self::BadRequest {
            code: "invalid_header",
            message: format!("header {name}: {message}"),
            field: Some(name.to_owned()),
        }
    }
}

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest {
                code,
                field,
                message,
            } => {
                let body = ErrorBody {
                    code,
                    message,
                    field,
                    violations: None,
                };
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
            Self::NotFound { code, message } => {
                let body = ErrorBody {
                    code,
                    message,
                    field: None,
                    violations: None,
                };
                (StatusCode::NOT_FOUND, Json(body)).into_response()
            }
            Self::Violations(violations) => {
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                let body = ErrorBody {
                    code: "schema_violation",
                    message: format!("body violates its schema at: {}", fields.join(", ")),
                    field: violations.first().map(|v| v.field.clone()),
                    violations: Some(violations),
                };
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
            Self::Unavailable => {
                let body = ErrorBody {
                    code: "unavailable",
                    message: "the event was not stored, retry later".into(),
                    field: None,
                    violations: None,
                };
                let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
                resp
            }
            Self::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                let body = ErrorBody {
                    code: "internal",
                    message: "internal error".into(),
                    field: None,
                    violations: None,
                };
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
            }
        }
    }
}
