//! Turns an envelope into what a subscriber receives: a JSON body and its idempotency token.
//! One fixed, documented format per event type (see `schemas/webhooks/`).

use bytes::Bytes;
use events::v1::envelope::Payload;
use events::Envelope;
use serde::Serialize;

/// A delivery, ready to send and identical on every attempt.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    pub idempotency_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("envelope has no payload")]
    NoPayload,
    #[error("payload {0} has no webhook format yet")]
    Unsupported(&'static str),
    #[error("encoding json")]
    Json(#[from] serde_json::Error),
}

/// Body of a uid-notify webhook (`schemas/webhooks/uid-notify.v1.json`).
#[derive(Debug, Serialize)]
pub struct AccountLinkWebhook<'a> {
    pub event_id: &'a str,
    pub event_type: &'static str,
    pub portal_uid: u64,
    pub phonish_uid: u64,
    pub occurred_at: String,
}

pub fn render_http(env: &Envelope) -> Result<Rendered, RenderError> {
    let occurred_at = env
        .occurred_at()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let body = match env.payload.as_ref().ok_or(RenderError::NoPayload)? {
        Payload::AccountLink(link) => serde_json::to_vec(&AccountLinkWebhook {
            event_id: &env.event_id,
            event_type: link.event().short_name(),
            portal_uid: link.portal_uid,
            phonish_uid: link.phonish_uid,
            occurred_at,
        })?,
        Payload::NotificationSeen(_) => return Err(RenderError::Unsupported("notification_seen")),
        Payload::DriverStatus(_) => return Err(RenderError::Unsupported("driver_status")),
        Payload::Json(_) => return Err(RenderError::Unsupported("json")),
    };
    Ok(Rendered {
        body: Bytes::from(body),
        idempotency_key: env.idempotency_key.clone(),
    })
}
