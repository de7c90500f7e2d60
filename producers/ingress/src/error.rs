//! The one mapping from ingress errors to HTTP: 4xx name the field, 5xx stay generic.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub(crate) use switchyard_runtime::http::{BadRequest, ErrorBody, Violation};

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
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotModified { etag: String, message: String },
    #[error("the body violates its schema")]
    Violations(Vec<Violation>),
    #[error("the broker did not acknowledge the record in time")]
    Unavailable,
    #[error("the flow is switched off")]
    SwitchedOff { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        BadRequest::field(field, message).into()
    }

    pub fn header(name: &str, message: impl std::fmt::Display) -> Self {
        BadRequest::header(name, message).into()
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        Self::BadRequest {
            code: e.code,
            field: e.field,
            message: e.message,
        }
    }
}

/// Seconds a client should wait before retrying after a 503.
pub(crate) const RETRY_AFTER_SECS: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest {
                code,
                field,
                message,
            } => ErrorBody::new(code, message)
                .with_field(field)
                .into_response_with(StatusCode::BAD_REQUEST),
            Self::Unauthenticated(message) => {
                let mut resp = ErrorBody::new("unauthenticated", message)
                    .into_response_with(StatusCode::UNAUTHORIZED);
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                resp
            }
            Self::Forbidden(message) => {
                ErrorBody::new("forbidden", message).into_response_with(StatusCode::FORBIDDEN)
            }
            Self::NotModified { etag, .. } => {
                let mut resp = StatusCode::NOT_MODIFIED.into_response();
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    resp.headers_mut().insert(header::ETAG, v);
                }
                resp
            }
            Self::NotFound { code, message } => {
                ErrorBody::new(code, message).into_response_with(StatusCode::NOT_FOUND)
            }
            Self::Violations(violations) => {
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                let body = ErrorBody {
                    code: "schema_violation".into(),
                    message: format!("body violates its schema at: {}", fields.join(", ")),
                    field: violations.first().map(|v| v.field.clone()),
                    violations: Some(violations),
                };
                body.into_response_with(StatusCode::BAD_REQUEST)
            }
            Self::Unavailable => {
                let mut resp =
                    ErrorBody::new("unavailable", "the event was not stored, retry later")
                        .into_response_with(StatusCode::SERVICE_UNAVAILABLE);
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
                resp
            }
            Self::SwitchedOff { retry_after_secs } => {
                let mut resp = ErrorBody::new(
                    "switched_off",
                    "this flow is switched off for now; the event was not stored, retry later",
                )
                .into_response_with(StatusCode::SERVICE_UNAVAILABLE);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                resp
            }
            Self::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ErrorBody::new("internal", "internal error")
                    .into_response_with(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}
