//! Turns an envelope into what a subscriber receives: one fixed, documented format per event
//! type and caller kind (`schemas/webhooks/`, `proto/switchyard/v1/seen.proto`).

use bytes::Bytes;
use events::v1::envelope::Payload;
use events::v1::notification_seen::Caller;
use events::v1::{AnonymousSeenRecord, ClientSeenRecord, DriverSeenRecord, NotificationSeen};
use events::Envelope;
use prost::Message;
use serde::Serialize;
use switchyard_runtime::trace;

/// A delivery, ready to send and identical on every attempt.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    pub idempotency_key: String,
    /// `client`, `driver` or `anonymous` for marks; `sy-caller-kind` header on topic records.
    pub caller_kind: Option<&'static str>,
    /// The delivery's hop of the trace (`traceparent`): the context of the delivery span it is
    /// rendered in, so the subscriber's request is that span's child.
    pub traceparent: Option<String>,
}

/// Makes the record's trace (the `traceparent` the ingress stored in the envelope and the record
/// headers) the parent of the current span, the delivery span. The envelope is read rather than
/// the headers since it survives parking in retry tiers and dead-letter replays unchanged.
pub fn continue_trace(env: &Envelope) {
    if let Some(tc) = &env.trace {
        let state = Some(tc.tracestate.as_str()).filter(|s| !s.is_empty());
        trace::set_parent(&tracing::Span::current(), Some(&tc.traceparent), state);
    }
}

/// The current (delivery) span's `traceparent`.
fn next_hop() -> Option<String> {
    trace::headers(&tracing::Span::current()).map(|h| h.traceparent)
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("envelope has no payload")]
    NoPayload,
    #[error("mark has no caller")]
    NoCaller,
    #[error("payload {0} has no webhook format")]
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

/// Body of a mark-notify webhook (`schemas/webhooks/mark-notify.{kind}.v1.json`).
#[derive(Debug, Serialize)]
pub struct SeenWebhook<'a> {
    pub event_id: &'a str,
    pub caller: &'static str,
    pub tag: &'a str,
    pub id: &'a str,
    pub seen_at: String,
    #[serde(flatten)]
    pub who: SeenWho<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SeenWho<'a> {
    Client {
        user_id: &'a str,
        yandex_uid: Option<u64>,
        bound_uids: &'a [u64],
        phone_id: Option<&'a str>,
    },
    /// The design's driver template: `db_id` (park), `uuid` (driver profile).
    Driver {
        db_id: &'a str,
        uuid: &'a str,
    },
    Anonymous {},
}

fn rfc3339(env: &Envelope) -> String {
    env.occurred_at()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn kind(caller: &Caller) -> &'static str {
    match caller {
        Caller::Client(_) => "client",
        Caller::Driver(_) => "driver",
        Caller::Anonymous(_) => "anonymous",
    }
}

/// The JSON body POSTed to an HTTP target.
pub fn render_http(env: &Envelope) -> Result<Rendered, RenderError> {
    let mut caller_kind = None;
    let body = match env.payload.as_ref().ok_or(RenderError::NoPayload)? {
        Payload::AccountLink(link) => serde_json::to_vec(&AccountLinkWebhook {
            event_id: &env.event_id,
            event_type: link.event().short_name(),
            portal_uid: link.portal_uid,
            phonish_uid: link.phonish_uid,
            occurred_at: rfc3339(env),
        })?,
        Payload::NotificationSeen(seen) => {
            let caller = seen.caller.as_ref().ok_or(RenderError::NoCaller)?;
            caller_kind = Some(kind(caller));
            let who = match caller {
                Caller::Client(c) => SeenWho::Client {
                    user_id: &c.user_id,
                    yandex_uid: (c.uid != 0).then_some(c.uid),
                    bound_uids: &c.bound_uids,
                    phone_id: Some(c.phone_id.as_str()).filter(|p| !p.is_empty()),
                },
                Caller::Driver(d) => SeenWho::Driver {
                    db_id: &d.db_id,
                    uuid: &d.uuid,
                },
                Caller::Anonymous(_) => SeenWho::Anonymous {},
            };
            serde_json::to_vec(&SeenWebhook {
                event_id: &env.event_id,
                caller: kind(caller),
                tag: &seen.tag,
                id: &seen.id,
                seen_at: rfc3339(env),
                who,
            })?
        }
        Payload::DriverStatus(_) => return Err(RenderError::Unsupported("driver_status")),
        Payload::Json(json) => json.clone(),
    };
    Ok(Rendered {
        body: Bytes::from(body),
        idempotency_key: env.idempotency_key.clone(),
        caller_kind,
        traceparent: next_hop(),
    })
}

/// The record value written to a topic target: marks in their per-caller-kind protobuf
/// message, every other event forwarded as its envelope.
pub fn render_topic(env: &Envelope, raw: &[u8]) -> Result<Rendered, RenderError> {
    let (body, caller_kind) = match env.payload.as_ref().ok_or(RenderError::NoPayload)? {
        Payload::NotificationSeen(seen) => seen_record(env, seen)?,
        _ => (raw.to_vec(), None),
    };
    Ok(Rendered {
        body: Bytes::from(body),
        idempotency_key: env.idempotency_key.clone(),
        caller_kind,
        traceparent: next_hop(),
    })
}

fn seen_record(
    env: &Envelope,
    seen: &NotificationSeen,
) -> Result<(Vec<u8>, Option<&'static str>), RenderError> {
    let caller = seen.caller.as_ref().ok_or(RenderError::NoCaller)?;
    let (event_id, tag, id, seen_at) = (
        env.event_id.clone(),
        seen.tag.clone(),
        seen.id.clone(),
        env.occurred_at,
    );
    let bytes = match caller {
        Caller::Client(c) => ClientSeenRecord {
            event_id,
            tag,
            id,
            seen_at,
            user_id: c.user_id.clone(),
            uid: c.uid,
            bound_uids: c.bound_uids.clone(),
            phone_id: c.phone_id.clone(),
        }
        .encode_to_vec(),
        Caller::Driver(d) => DriverSeenRecord {
            event_id,
            tag,
            id,
            seen_at,
            db_id: d.db_id.clone(),
            uuid: d.uuid.clone(),
        }
        .encode_to_vec(),
        Caller::Anonymous(_) => AnonymousSeenRecord {
            event_id,
            tag,
            id,
            seen_at,
        }
        .encode_to_vec(),
    };
    Ok((bytes, Some(kind(caller))))
}
