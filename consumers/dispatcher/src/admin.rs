//! What operator actions share: their error, and an envelope as operators read it (JSON), used
//! by dead-letter listings and replays here and by the `switchyard` CLI's `tail`.

use events::v1::envelope::Payload;
use events::v1::notification_seen::Caller;
use events::Envelope;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no subscriber named {0} in the dispatcher config")]
    UnknownSubscriber(String),
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid JSON payload")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

/// An envelope as operators read it.
pub fn envelope_json(env: &Envelope) -> Value {
    let ts = |t: Option<&prost_types::Timestamp>| {
        events::to_datetime(t).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let payload = match &env.payload {
        Some(Payload::AccountLink(l)) => json!({"account_link": {
            "portal_uid": l.portal_uid, "phonish_uid": l.phonish_uid, "event": l.event().short_name()}}),
        Some(Payload::NotificationSeen(s)) => {
            let caller = match &s.caller {
                Some(Caller::Client(c)) => json!({"client": {"user_id": c.user_id, "uid": c.uid,
                    "bound_uids": c.bound_uids, "phone_id": c.phone_id}}),
                Some(Caller::Driver(d)) => json!({"driver": {"db_id": d.db_id,
                    "uuid": d.uuid}}),
                _ => json!("anonymous"),
            };
            json!({"notification_seen": {"tag": s.tag, "id": s.id, "caller": caller}})
        }
        Some(Payload::DriverStatus(d)) => json!({"driver_status": {"park_id": d.park_id,
            "driver_profile_id": d.driver_profile_id, "status": d.status().as_str_name(),
            "updated_at": ts(d.updated_at.as_ref())}}),
        Some(Payload::Json(bytes)) => json!({"json": serde_json::from_slice::<Value>(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))}),
        None => Value::Null,
    };
    json!({
        "event_id": env.event_id,
        "event_type": env.event_type,
        "schema_version": env.schema_version,
        "occurred_at": ts(env.occurred_at.as_ref()),
        "produced_at": ts(env.produced_at.as_ref()),
        "producer": env.producer,
        "idempotency_key": env.idempotency_key,
        "traceparent": env.trace.as_ref().map(|t| t.traceparent.clone()),
        "payload": payload,
    })
}
