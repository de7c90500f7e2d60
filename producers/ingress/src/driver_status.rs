//! `POST /v1/driver-status`: upstream systems report a driver going online, busy or offline;
//! published to `contractor-statuses-events` keyed by the driver, for deptrans.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, FixedOffset, Utc};
use events::v1::{envelope::Payload, DriverStatus, DriverStatusKind};
use events::{event_type, Envelope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Largest accepted body.
pub(crate) const MAX_BODY: usize = 64 * 1024;
pub(crate) const PRODUCER: &str = "producers/driver-status";

/// `[driver_status]` section of the ingress config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriverStatusConfig {
    /// Topic the driver status events go to.
    pub topic: String,
}

impl Default for DriverStatusConfig {
    fn default() -> Self {
        Self {
            topic: "contractor-statuses-events".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DriverStatusValue {
    Online,
    Busy,
    Offline,
}

/// A driver's status change.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriverStatusRequest {
    /// Park (taxi company) id: 1-64 of `[A-Za-z0-9_-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub park_id: String,
    /// Driver profile id within the park: 1-64 of `[A-Za-z0-9_-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub driver_profile_id: String,
    pub status: DriverStatusValue,
    /// When the status changed (RFC 3339); the newer status wins downstream.
    #[schema(value_type = switchyard_runtime::http::json::Rfc3339)]
    pub updated_at: DateTime<FixedOffset>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DriverStatusResponse {
    /// Id of the published event.
    pub event_id: String,
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl DriverStatusRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if !valid_id(&self.park_id) {
            return Err(ApiError::field(
                "park_id",
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if !valid_id(&self.driver_profile_id) {
            return Err(ApiError::field(
                "driver_profile_id",
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        Ok(())
    }

    fn into_envelope(self) -> (String, Envelope) {
        let status = match self.status {
            DriverStatusValue::Online => DriverStatusKind::Online,
            DriverStatusValue::Busy => DriverStatusKind::Busy,
            DriverStatusValue::Offline => DriverStatusKind::Offline,
        };
        let at = self.updated_at.with_timezone(&Utc);
        // All events of one driver land in one partition and stay in order.
        let key = format!("{}/{}", self.park_id, self.driver_profile_id);
        let idempotency = format!("{key}/{}/{}", at.timestamp_micros(), status.as_str_name());
        let payload = DriverStatus {
            park_id: self.park_id,
            driver_profile_id: self.driver_profile_id,
            status: status.into(),
            updated_at: Some(events::timestamp(at)),
        };
        let env = Envelope::new(
            event_type::DRIVER_STATUS,
            1,
            at,
            PRODUCER,
            idempotency,
            Payload::DriverStatus(payload),
        );
        (key, env)
    }
}

/// The body checked and turned into its record key and envelope (the fuzz target's entry).
pub(crate) fn accept(bytes: &[u8]) -> Result<(String, Envelope), ApiError> {
    let req: DriverStatusRequest = switchyard_runtime::http::json::parse(bytes)?;
    req.validate()?;
    Ok(req.into_envelope())
}

/// Publish a driver status change; 200 only once the broker has the record.
#[utoipa::path(
    post,
    path = "/v1/driver-status",
    request_body = DriverStatusRequest,
    responses(
        (status = 200, description = "Stored on the broker", body = DriverStatusResponse),
        (status = 400, description = "Invalid body; the message names the field", body = ErrorBody),
        (status = 401, description = "No known credential (`unauthenticated`)", body = ErrorBody),
        (status = 403, description = "The caller may not use this route (`forbidden`)", body = ErrorBody),
        (status = 503, description = "Broker did not acknowledge in time; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "driver-status"
)]
pub(crate) async fn handle(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<DriverStatusResponse>, ApiError> {
    let bytes = switchyard_runtime::http::json::read_limited(body, MAX_BODY).await?;
    let (key, envelope) = accept(&bytes)?;
    state
        .publish(&state.config.driver_status.topic, &key, &envelope)
        .await?;
    Ok(Json(DriverStatusResponse {
        event_id: envelope.event_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(park: &str) -> DriverStatusRequest {
        switchyard_runtime::http::json::parse(
            format!(r#"{{"park_id":"{park}","driver_profile_id":"d1","status":"busy","updated_at":"2026-01-01T10:00:00+03:00"}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn envelope_is_keyed_by_driver() {
        let (key, env) = req("p1").into_envelope();
        assert_eq!(key, "p1/d1");
        let Some(Payload::DriverStatus(s)) = env.payload else {
            panic!("payload")
        };
        assert_eq!(s.status(), DriverStatusKind::Busy);
        assert_eq!(s.updated_at.unwrap().seconds, 1_767_250_800);
    }

    #[test]
    fn bad_ids_and_statuses_name_the_field() {
        let field = |e: ApiError| match e {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(req("p/1").validate().unwrap_err()).as_deref(),
            Some("park_id")
        );
        // What a body that does not parse as a request names.
        let unparsed = |body: &[u8]| {
            field(
                switchyard_runtime::http::json::parse::<DriverStatusRequest>(body)
                    .unwrap_err()
                    .into(),
            )
        };
        let bad = br#"{"park_id":"p","driver_profile_id":"d","status":"asleep","updated_at":"2026-01-01T10:00:00Z"}"#;
        assert_eq!(unparsed(bad).as_deref(), Some("status"));
        let bad = br#"{"park_id":"p","driver_profile_id":"d","status":"busy"}"#;
        assert_eq!(unparsed(bad).as_deref(), Some("updated_at"));
    }
}
