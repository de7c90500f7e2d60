//! Status records as they arrive on a source topic, decoded into the one [`StatusEvent`] the
//! rest of deptrans works with: switchyard's protobuf envelope (`format = "envelope"`), or the
//! plain JSON record another service produces straight to the topic (`format = "json"`,
//! schema `schemas/deptrans/contractor-status.v1.json`). A record that cannot be used is a
//! [`RecordError`]: its [`reason`] labels the metric and the dead letter, its text names the
//! field.

use chrono::{DateTime, Utc};
use events::v1::{envelope::Payload, DriverStatusKind};
use events::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::consumer::StatusEvent;
use super::krt::KrtStatus;

/// How a source topic's records are encoded (`[[sources]] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// switchyard's protobuf `Envelope` carrying a `DriverStatus` (what the ingress produces).
    #[default]
    Envelope,
    /// A plain JSON driver-status record (`contractor-status.v1.json`).
    Json,
}

impl Format {
    /// Every reason a record of this format can be refused with.
    pub fn reasons(self) -> &'static [&'static str] {
        match self {
            Self::Envelope => reason::ENVELOPE,
            Self::Json => reason::JSON,
        }
    }

    /// Decodes one record value (`None`: a record without a value).
    pub fn decode(self, payload: Option<&[u8]>) -> Result<StatusEvent, RecordError> {
        match self {
            Self::Envelope => decode_envelope(payload.unwrap_or_default()),
            Self::Json => decode_json(payload.unwrap_or_default()),
        }
    }
}

/// Why a record was refused: the `reason` label of `switchyard_deptrans_bad_records_total` and
/// the `sy-dlq-reason` header of its dead letter. A small fixed set, never text of the record.
pub mod reason {
    /// Not JSON, or JSON that is not an object.
    pub const NOT_JSON: &str = "not_json";
    /// Not a protobuf envelope.
    pub const NOT_ENVELOPE: &str = "not_envelope";
    /// An envelope carrying something other than a driver status.
    pub const NOT_DRIVER_STATUS: &str = "not_driver_status";
    /// A required field is absent (or null).
    pub const MISSING_FIELD: &str = "missing_field";
    /// A field has the wrong type or an unusable value (empty id, position out of range).
    pub const INVALID_FIELD: &str = "invalid_field";
    /// `status` is not one of online, busy, offline.
    pub const INVALID_STATUS: &str = "invalid_status";
    /// `updated_at` is not an RFC 3339 time (or, in an envelope, out of range).
    pub const INVALID_TIME: &str = "invalid_time";

    /// Reasons of envelope sources.
    pub const ENVELOPE: &[&str] = &[
        NOT_ENVELOPE,
        NOT_DRIVER_STATUS,
        MISSING_FIELD,
        INVALID_FIELD,
        INVALID_STATUS,
        INVALID_TIME,
    ];
    /// Reasons of JSON sources.
    pub const JSON: &[&str] = &[
        NOT_JSON,
        MISSING_FIELD,
        INVALID_FIELD,
        INVALID_STATUS,
        INVALID_TIME,
    ];
}

/// A record deptrans cannot use; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("not a switchyard envelope: {0}")]
    NotEnvelope(String),
    #[error("envelope of type {0:?} is not a driver status")]
    NotDriverStatus(String),
    #[error("{0}: required")]
    Missing(&'static str),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    #[error("status: must be one of online, busy, offline")]
    Status,
    #[error("{0}: must be an RFC 3339 date-time")]
    Time(&'static str),
}

impl RecordError {
    /// The fixed label of this error (see [`reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => reason::NOT_JSON,
            Self::NotEnvelope(_) => reason::NOT_ENVELOPE,
            Self::NotDriverStatus(_) => reason::NOT_DRIVER_STATUS,
            Self::Missing(_) => reason::MISSING_FIELD,
            Self::Invalid { .. } => reason::INVALID_FIELD,
            Self::Status => reason::INVALID_STATUS,
            Self::Time(_) => reason::INVALID_TIME,
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Missing(f) | Self::Invalid { field: f, .. } | Self::Time(f) => Some(f),
            Self::Status => Some("status"),
            _ => None,
        }
    }
}

/// Where the driver was when the status changed (JSON records only, optional).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
}

/// Decodes an envelope record (what the ingress produces).
pub fn decode_envelope(payload: &[u8]) -> Result<StatusEvent, RecordError> {
    let env = Envelope::from_bytes(payload).map_err(|e| RecordError::NotEnvelope(e.to_string()))?;
    let occurred_at = env.occurred_at();
    let traceparent = env.trace.map(|t| t.traceparent).filter(|t| !t.is_empty());
    let Some(Payload::DriverStatus(s)) = env.payload else {
        return Err(RecordError::NotDriverStatus(env.event_type));
    };
    let status = match s.status() {
        DriverStatusKind::Online => KrtStatus::Online,
        DriverStatusKind::Busy => KrtStatus::Busy,
        DriverStatusKind::Offline => KrtStatus::Offline,
        DriverStatusKind::Unspecified => return Err(RecordError::Status),
    };
    for (field, value) in [
        ("park_id", &s.park_id),
        ("driver_profile_id", &s.driver_profile_id),
    ] {
        if value.is_empty() {
            return Err(RecordError::Missing(field));
        }
    }
    let updated_at = match (&s.updated_at, occurred_at) {
        (Some(ts), _) => events::to_datetime(Some(ts)).ok_or(RecordError::Time("updated_at"))?,
        (None, Some(at)) => at,
        (None, None) => return Err(RecordError::Missing("updated_at")),
    };
    Ok(StatusEvent {
        park_id: s.park_id,
        driver_id: s.driver_profile_id,
        status,
        updated_at,
        traceparent,
        position: None,
    })
}

/// Decodes a plain JSON driver-status record. Strict about the fields deptrans reads; other
/// fields are tolerated, because the producing service may add some without telling us.
pub fn decode_json(payload: &[u8]) -> Result<StatusEvent, RecordError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| RecordError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(RecordError::NotJson("the record is not an object".into()));
    };
    let park_id = id(&obj, "park_id")?;
    let driver_id = id(&obj, "driver_profile_id")?;
    let status = match required(&obj, "status")? {
        Value::String(s) => KrtStatus::parse(s).ok_or(RecordError::Status)?,
        _ => return Err(RecordError::Status),
    };
    let updated_at = match required(&obj, "updated_at")? {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| RecordError::Time("updated_at"))?
            .with_timezone(&Utc),
        _ => return Err(RecordError::Time("updated_at")),
    };
    let position = match obj.get("position") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(Position {
            lat: coordinate(p, "position.lat", "lat", LAT)?,
            lon: coordinate(p, "position.lon", "lon", LON)?,
        }),
        Some(_) => {
            return Err(RecordError::Invalid {
                field: "position",
                message: "must be an object {lat, lon}",
            })
        }
    };
    Ok(StatusEvent {
        park_id,
        driver_id,
        status,
        updated_at,
        traceparent: None,
        position,
    })
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a Value, RecordError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(RecordError::Missing(field)),
        Some(v) => Ok(v),
    }
}

fn id(obj: &Map<String, Value>, field: &'static str) -> Result<String, RecordError> {
    match required(obj, field)? {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(RecordError::Invalid {
            field,
            message: "must not be empty",
        }),
        _ => Err(RecordError::Invalid {
            field,
            message: "must be a string",
        }),
    }
}

/// Latitude bound and the message when out of it.
const LAT: (f64, &str) = (90.0, "must be between -90 and 90");
/// Longitude bound and the message when out of it.
const LON: (f64, &str) = (180.0, "must be between -180 and 180");

fn coordinate(
    obj: &Map<String, Value>,
    field: &'static str,
    key: &str,
    (bound, out_of_range): (f64, &'static str),
) -> Result<f64, RecordError> {
    let value = match obj.get(key) {
        None | Some(Value::Null) => return Err(RecordError::Missing(field)),
        Some(v) => v.as_f64().ok_or(RecordError::Invalid {
            field,
            message: "must be a number",
        })?,
    };
    if !(-bound..=bound).contains(&value) {
        return Err(RecordError::Invalid {
            field,
            message: out_of_range,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_err(v: Value) -> RecordError {
        decode_json(v.to_string().as_bytes()).unwrap_err()
    }

    fn good() -> Value {
        json!({
            "park_id": "p1",
            "driver_profile_id": "d1",
            "status": "busy",
            "updated_at": "2026-01-01T10:00:00+03:00",
        })
    }

    #[test]
    fn decodes_a_plain_record_and_tolerates_unknown_fields() {
        let mut v = good();
        v["source_service"] = json!("driver-status-v2");
        v["position"] = json!({"lat": 55.75, "lon": 37.61, "accuracy": 5});
        let e = decode_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            (e.park_id.as_str(), e.driver_id.as_str(), e.status),
            ("p1", "d1", KrtStatus::Busy)
        );
        assert_eq!(e.updated_at.timestamp(), 1_767_250_800);
        assert_eq!(
            e.position,
            Some(Position {
                lat: 55.75,
                lon: 37.61
            })
        );
        let mut v = good();
        v["position"] = Value::Null;
        assert_eq!(
            decode_json(v.to_string().as_bytes()).unwrap().position,
            None
        );
    }

    #[test]
    fn every_refusal_names_the_field_and_a_fixed_reason() {
        let without = |field: &str| {
            let mut v = good();
            v.as_object_mut().unwrap().remove(field);
            v
        };
        let with = |field: &str, value: Value| {
            let mut v = good();
            v[field] = value;
            v
        };
        let cases: Vec<(RecordError, &str, Option<&str>)> = vec![
            (
                decode_json(b"{not json").unwrap_err(),
                reason::NOT_JSON,
                None,
            ),
            (json_err(json!([1, 2])), reason::NOT_JSON, None),
            (
                json_err(without("park_id")),
                reason::MISSING_FIELD,
                Some("park_id"),
            ),
            (
                json_err(with("driver_profile_id", Value::Null)),
                reason::MISSING_FIELD,
                Some("driver_profile_id"),
            ),
            (
                json_err(with("park_id", json!(""))),
                reason::INVALID_FIELD,
                Some("park_id"),
            ),
            (
                json_err(with("driver_profile_id", json!(7))),
                reason::INVALID_FIELD,
                Some("driver_profile_id"),
            ),
            (
                json_err(with("status", json!("asleep"))),
                reason::INVALID_STATUS,
                Some("status"),
            ),
            (
                json_err(with("status", json!("Online"))),
                reason::INVALID_STATUS,
                Some("status"),
            ),
            (
                json_err(without("status")),
                reason::MISSING_FIELD,
                Some("status"),
            ),
            (
                json_err(with("updated_at", json!("yesterday"))),
                reason::INVALID_TIME,
                Some("updated_at"),
            ),
            (
                json_err(with("updated_at", json!(1_767_250_800))),
                reason::INVALID_TIME,
                Some("updated_at"),
            ),
            (
                json_err(with("updated_at", json!("2026-01-01 10:00:00"))),
                reason::INVALID_TIME,
                Some("updated_at"),
            ),
            (
                json_err(without("updated_at")),
                reason::MISSING_FIELD,
                Some("updated_at"),
            ),
            (
                json_err(with("position", json!({"lat": 91.0, "lon": 37.0}))),
                reason::INVALID_FIELD,
                Some("position.lat"),
            ),
            (
                json_err(with("position", json!({"lat": 55.0, "lon": -180.5}))),
                reason::INVALID_FIELD,
                Some("position.lon"),
            ),
            (
                json_err(with("position", json!({"lat": 55.0}))),
                reason::MISSING_FIELD,
                Some("position.lon"),
            ),
            (
                json_err(with("position", json!({"lat": "55", "lon": 37.0}))),
                reason::INVALID_FIELD,
                Some("position.lat"),
            ),
            (
                json_err(with("position", json!([55.0, 37.0]))),
                reason::INVALID_FIELD,
                Some("position"),
            ),
        ];
        for (err, want, field) in cases {
            assert_eq!((err.reason(), err.field()), (want, field), "{err}");
            if let Some(field) = field {
                assert!(err.to_string().starts_with(field), "{err}");
            }
            assert!(reason::JSON.contains(&err.reason()));
        }
    }

    #[test]
    fn envelope_refusals_have_reasons() {
        let err = decode_envelope(b"garbage").unwrap_err();
        assert_eq!(err.reason(), reason::NOT_ENVELOPE);
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let env = Envelope::new(
            events::event_type::MARK_SEEN,
            1,
            at,
            "t",
            "k".into(),
            Payload::DriverStatus(events::v1::DriverStatus {
                park_id: String::new(),
                driver_profile_id: "d".into(),
                status: DriverStatusKind::Online.into(),
                updated_at: None,
            }),
        );
        let err = decode_envelope(&env.to_bytes()).unwrap_err();
        assert_eq!(
            (err.reason(), err.field()),
            (reason::MISSING_FIELD, Some("park_id"))
        );
        assert!(reason::ENVELOPE.contains(&err.reason()));
    }
}
