//! The one JSON error body of every switchyard HTTP API.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Error body of every switchyard endpoint: 4xx name the field, 5xx stay generic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_field`, `body_too_large`, `unauthorized`.
    pub code: Cow<'static, str>,
    /// Human-readable explanation naming the offending field or header.
    pub message: String,
    /// JSON path of the field (or name of the header) at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every schema violation of the body, when it was validated against a JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
}

/// One JSON Schema violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    /// Path of the offending field (`a.b[0]`; `$` for the whole body).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            field: None,
            violations: None,
        }
    }

    #[must_use]
    pub fn with_field(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// The body as a response with `status`.
    pub fn into_response_with(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

/// A request that is wrong in a way the caller can fix: a 400 naming the field at fault.
/// Returned by the shared parsers; each service turns it into its own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl BadRequest {
    /// `field` is wrong: `invalid_field`, the message starts with the field's path.
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    /// Header `name` is missing or wrong: `invalid_header`.
    pub fn header(name: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: "invalid_header",
            message: format!("header {name}: {message}"),
            field: Some(name.to_owned()),
        }
    }
}

impl From<BadRequest> for ErrorBody {
    fn from(e: BadRequest) -> Self {
        ErrorBody::new(e.code, e.message).with_field(e.field)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        ErrorBody::from(self).into_response_with(StatusCode::BAD_REQUEST)
    }
}
