//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing`. Each runs
//! exactly what its flow's handler runs between reading the body and publishing, and says what
//! the caller would get: the record, or the refusal's status and the field it names.

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use events::Envelope;

use crate::domain_events::Registry;
use crate::error::ApiError;

/// What a refused request answers.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    /// The field or header named (`None` when the body as a whole is at fault).
    pub fields: Vec<String>,
    pub message: String,
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        let fields = match &e {
            ApiError::BadRequest { field, .. } => field.iter().cloned().collect(),
            ApiError::Violations(v) => v.iter().map(|v| v.field.clone()).collect(),
            _ => Vec::new(),
        };
        let status = e.into_response().status().as_u16();
        Self {
            status,
            fields,
            message,
        }
    }
}

pub type Accepted = Result<(String, Envelope), Refused>;

pub fn uid_notify(body: &[u8]) -> Accepted {
    crate::uid_notify::accept(body).map_err(Refused::from)
}

pub fn driver_status(body: &[u8]) -> Accepted {
    crate::driver_status::accept(body).map_err(Refused::from)
}

pub fn mark_notify(headers: &HeaderMap, body: &[u8]) -> Accepted {
    crate::mark_notify::accept(headers, body).map_err(Refused::from)
}

/// `event_type` as in the path (`user.created.v1`); the topic is left out.
pub fn domain_event(
    registry: &Registry,
    event_type: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Accepted {
    crate::domain_events::accept(registry, event_type, headers, body)
        .map(|(_, key, env)| (key, env))
        .map_err(Refused::from)
}
