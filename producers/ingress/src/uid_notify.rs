//! `POST /v1/uid-notify`: the identity provider reports a phone-only account bound to or
//! unbound from a full account.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, FixedOffset, Utc};
use events::v1::{envelope::Payload, AccountLink, LinkEvent};
use events::{event_type, Envelope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::UidNotifyMode;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::FlowLabels;
use crate::AppState;

/// Largest accepted body.
pub(crate) const MAX_BODY: usize = 64 * 1024;
pub(crate) const PRODUCER: &str = "producers/uid-notify";

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LinkEventType {
    Bind,
    Unbind,
}

/// A bind or unbind of a phone-only account.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UidNotifyRequest {
    /// The full ("portal") account: 1 to 2^63-1.
    #[serde(deserialize_with = "uid")]
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    pub portal_uid: u64,
    /// The phone-only ("phonish") account: 1 to 2^63-1.
    #[serde(deserialize_with = "uid")]
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    pub phonish_uid: u64,
    pub event_type: LinkEventType,
    /// When the identity provider saw the change (RFC 3339); defaults to the time received.
    #[serde(default)]
    #[schema(value_type = Option<switchyard_runtime::http::json::Rfc3339>)]
    pub event_timestamp: Option<DateTime<FixedOffset>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct UidNotifyResponse {
    /// Id of the published event.
    pub event_id: String,
}

/// A uid as the document says: a JSON integer from 1 to 2^63-1 (what a signed 64-bit consumer
/// holds). JSON Schema counts `5781.0` as an integer, so a number with a zero fraction is taken
/// too, but only below 2^53, where a float holds every integer exactly.
fn uid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Uid;
    impl serde::de::Visitor<'_> for Uid {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer from 1 to 9223372036854775807")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            if (1..=i64::MAX as u64).contains(&v) {
                Ok(v)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            if v.fract() == 0.0 && (1.0..EXACT).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Uid)
}

impl UidNotifyRequest {
    fn into_envelope(self) -> (String, Envelope) {
        let (event, name) = match self.event_type {
            LinkEventType::Bind => (LinkEvent::Bind, event_type::UID_BIND),
            LinkEventType::Unbind => (LinkEvent::Unbind, event_type::UID_UNBIND),
        };
        let link = AccountLink {
            portal_uid: self.portal_uid,
            phonish_uid: self.phonish_uid,
            event: event.into(),
        };
        let occurred = self
            .event_timestamp
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        // The phone-only account is the one whose binding changes: its events stay in order.
        let key = self.phonish_uid.to_string();
        let env = Envelope::new(
            name,
            1,
            occurred,
            PRODUCER,
            link.idempotency_key(),
            Payload::AccountLink(link),
        );
        (key, env)
    }
}

/// The body checked and turned into its record key and envelope (the fuzz target's entry).
pub(crate) fn accept(bytes: &[u8]) -> Result<(String, Envelope), ApiError> {
    // The uid range is the deserializer's (`uid`): parsed means valid.
    let req: UidNotifyRequest = switchyard_runtime::http::json::parse(bytes)?;
    Ok(req.into_envelope())
}

/// Publish a bind/unbind; 200 only once the broker has the record.
#[utoipa::path(
    post,
    path = "/v1/uid-notify",
    request_body = UidNotifyRequest,
    responses(
        (status = 200, description = "Stored on the broker (also while `mode = \"hold\"`)", body = UidNotifyResponse),
        (status = 400, description = "Invalid body; the message names the field", body = ErrorBody),
        (status = 401, description = "No known credential (`unauthenticated`)", body = ErrorBody),
        (status = 403, description = "The caller may not use this route (`forbidden`)", body = ErrorBody),
        (status = 503, description = "Switched off (`switched_off`) or the broker did not acknowledge in time; nothing stored, retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "uid-notify"
)]
pub(crate) async fn handle(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<UidNotifyResponse>, ApiError> {
    let bytes = switchyard_runtime::http::json::read_limited(body, MAX_BODY).await?;
    let (key, envelope) = accept(&bytes)?;
    let switches = state.switches.load();
    if switches.uid_notify_mode == UidNotifyMode::Off {
        state
            .metrics
            .disabled
            .get_or_create(&FlowLabels {
                flow: "uid-notify".into(),
            })
            .inc();
        return Err(ApiError::SwitchedOff {
            retry_after_secs: switches.uid_notify_retry_after_secs,
        });
    }
    // `on` and `hold` both publish: holding is the dispatcher's (its subscribers are paused).
    state
        .publish(&state.config.uid_notify.topic, &key, &envelope)
        .await?;
    Ok(Json(UidNotifyResponse {
        event_id: envelope.event_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(portal: &str) -> Vec<u8> {
        format!(r#"{{"portal_uid":{portal},"phonish_uid":7,"event_type":"bind"}}"#).into_bytes()
    }

    #[test]
    fn uids_are_one_to_2_63_minus_1_and_a_bad_one_is_named() {
        for ok in ["1", "9223372036854775807", "5781.0"] {
            let (key, env) = accept(&body(ok)).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
            assert_eq!(key, "7");
            assert_eq!(
                env.idempotency_key,
                format!("{}-7-bind", ok.trim_end_matches(".0"))
            );
        }
        for bad in [
            "0",
            "-1",
            "9223372036854775808",
            "1.5",
            "9007199254740992.0",
            "\"5\"",
        ] {
            match accept(&body(bad)) {
                Err(ApiError::BadRequest { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("portal_uid"), "{bad}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
