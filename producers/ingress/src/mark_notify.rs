//! `POST /4.0/mark-notify/v1/seen`: an app reports that a notification was shown. The caller
//! (client, driver or anonymous) comes from the API gateway's headers, trusted only from a caller
//! with `trusted_identity_headers`. Every well-formed mark is published, whatever its tag:
//! routing by tag is the dispatcher's, so an integration added later can be fed by a replay.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use chrono::Utc;
use events::v1::notification_seen::Caller;
use events::v1::{
    envelope::Payload, AnonymousCaller, ClientCaller, DriverCaller, NotificationSeen,
};
use events::{event_type, Envelope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Largest accepted body.
pub(crate) const MAX_BODY: usize = 16 * 1024;
pub(crate) const PRODUCER: &str = "producers/mark-notify";

pub(crate) const H_USER_ID: &str = "x-yataxi-userid";
pub(crate) const H_UID: &str = "x-yandex-uid";
pub(crate) const H_BOUND_UIDS: &str = "x-yataxi-bound-uids";
pub(crate) const H_PHONE_ID: &str = "x-yataxi-phoneid";
pub(crate) const H_PARK_ID: &str = "x-yataxi-park-id";
pub(crate) const H_DRIVER_ID: &str = "x-yataxi-driver-profile-id";
/// Every identity header; only a caller with `trusted_identity_headers` may send them.
pub(crate) const IDENTITY_HEADERS: [&str; 6] = [
    H_USER_ID,
    H_UID,
    H_BOUND_UIDS,
    H_PHONE_ID,
    H_PARK_ID,
    H_DRIVER_ID,
];
/// Optional: identifies one anonymous view across the app's retries of the same request.
pub(crate) const H_IDEMPOTENCY_TOKEN: &str = "x-idempotency-token";

/// `[mark_notify]` section of the ingress config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkNotifyConfig {
    /// Topic every mark goes to; the dispatcher routes them by tag to the integrations.
    pub topic: String,
}

impl Default for MarkNotifyConfig {
    fn default() -> Self {
        Self {
            topic: "mark-notify".into(),
        }
    }
}

/// A notification shown to the caller.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeenRequest {
    /// Notification kind, routes to integrations: 1-64 of `[a-z0-9_-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")]
    pub tag: String,
    /// The notification's id within its tag: 1-256 printable characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SeenResponse {
    /// Id of the published event.
    pub event_id: String,
    /// The key consumers deduplicate on: the same for a retry of the same view.
    pub idempotency_key: String,
}

impl SeenRequest {
    fn validate(&self) -> Result<(), ApiError> {
        let tag_ok = (1..=64).contains(&self.tag.len())
            && self
                .tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !tag_ok {
            return Err(ApiError::field(
                "tag",
                "must be 1-64 characters of [a-z0-9_-]",
            ));
        }
        let n = self.id.chars().count();
        if !(1..=256).contains(&n) || self.id.chars().any(char::is_control) {
            return Err(ApiError::field("id", "must be 1-256 printable characters"));
        }
        Ok(())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| ApiError::header(name, "is not valid text")),
    }
}

fn uid(name: &str, value: &str) -> Result<u64, ApiError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ApiError::header(
            name,
            format!("{value:?} is not a positive numeric uid"),
        )),
    }
}

/// Who is calling, from the gateway's headers; contradictions are a 400 naming the header.
pub(crate) fn caller(headers: &HeaderMap) -> Result<Caller, ApiError> {
    let user_id = header(headers, H_USER_ID)?;
    let yandex_uid = header(headers, H_UID)?;
    let bound = header(headers, H_BOUND_UIDS)?;
    let phone_id = header(headers, H_PHONE_ID)?;
    let park_id = header(headers, H_PARK_ID)?;
    let driver_id = header(headers, H_DRIVER_ID)?;
    let client = user_id.is_some() || yandex_uid.is_some() || bound.is_some() || phone_id.is_some();
    let driver = park_id.is_some() || driver_id.is_some();
    if client && driver {
        let name = if park_id.is_some() {
            H_PARK_ID
        } else {
            H_DRIVER_ID
        };
        return Err(ApiError::header(
            name,
            "driver headers cannot be combined with client headers",
        ));
    }
    if driver {
        let park = park_id.ok_or_else(|| {
            ApiError::header(H_PARK_ID, "is required with X-YaTaxi-Driver-Profile-Id")
        })?;
        let profile = driver_id
            .ok_or_else(|| ApiError::header(H_DRIVER_ID, "is required with X-YaTaxi-Park-Id"))?;
        for (name, v) in [(H_PARK_ID, park), (H_DRIVER_ID, profile)] {
            if v.len() > 128
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ApiError::header(
                    name,
                    "must be 1-128 characters of [A-Za-z0-9_-]",
                ));
            }
        }
        return Ok(Caller::Driver(DriverCaller {
            db_id: park.into(),
            uuid: profile.into(),
        }));
    }
    if client {
        let user_id = user_id
            .ok_or_else(|| ApiError::header(H_USER_ID, "is required for a client caller"))?;
        if user_id.len() > 128 {
            return Err(ApiError::header(H_USER_ID, "is longer than 128 characters"));
        }
        let uid = yandex_uid
            .map(|v| self::uid(H_UID, v))
            .transpose()?
            .unwrap_or(0);
        let bound_uids = bound
            .map(|b| {
                b.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| self::uid(H_BOUND_UIDS, s))
                    .collect()
            })
            .transpose()?
            .unwrap_or_default();
        return Ok(Caller::Client(ClientCaller {
            user_id: user_id.into(),
            uid,
            bound_uids,
            phone_id: phone_id.unwrap_or_default().into(),
        }));
    }
    Ok(Caller::Anonymous(AnonymousCaller {}))
}

/// The anonymous view a request is: the client's `X-Idempotency-Token` when sent (so a retry
/// of the same request is the same view), else a fresh id (every request is its own view).
pub(crate) fn view_id(headers: &HeaderMap) -> Result<String, ApiError> {
    match header(headers, H_IDEMPOTENCY_TOKEN)? {
        Some(t) if t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t.to_owned()),
        Some(_) => Err(ApiError::header(
            H_IDEMPOTENCY_TOKEN,
            "must be 1-128 visible ASCII characters",
        )),
        None => Ok(uuid::Uuid::now_v7().to_string()),
    }
}

/// The record key: the person, so one person's marks stay in order; an anonymous mark has no
/// person, so it is keyed by its view and views spread over the partitions.
pub(crate) fn record_key(caller: &Caller, view: &str) -> String {
    match caller {
        Caller::Client(c) => format!("client:{}", c.user_id),
        Caller::Driver(d) => format!("driver:{}:{}", d.db_id, d.uuid),
        Caller::Anonymous(_) => format!("anonymous:{view}"),
    }
}

/// The body and the caller's headers checked and turned into the record key and envelope
/// (the fuzz target's entry).
pub(crate) fn accept(headers: &HeaderMap, bytes: &[u8]) -> Result<(String, Envelope), ApiError> {
    let req: SeenRequest = switchyard_runtime::http::json::parse(bytes)?;
    req.validate()?;
    let caller = caller(headers)?;
    let view = match caller {
        Caller::Anonymous(_) => view_id(headers)?,
        _ => String::new(),
    };
    let key = record_key(&caller, &view);
    let seen = NotificationSeen {
        tag: req.tag,
        id: req.id,
        caller: Some(caller),
    };
    let idempotency = format!("{}:{}:{key}", seen.tag, seen.id);
    let env = Envelope::new(
        event_type::MARK_SEEN,
        1,
        Utc::now(),
        PRODUCER,
        idempotency,
        Payload::NotificationSeen(seen),
    );
    Ok((key, env))
}

/// Remember that a notification was shown; 200 only once the broker has the fact.
#[utoipa::path(
    post,
    path = "/4.0/mark-notify/v1/seen",
    request_body = SeenRequest,
    params(
        ("X-YaTaxi-UserId" = Option<String>, Header, description = "Client: user id (required for a client)"),
        ("X-Yandex-UID" = Option<u64>, Header, description = "Client: account uid", minimum = 1),
        ("X-YaTaxi-Bound-Uids" = Option<String>, Header, description = "Client: comma-separated bound uids, may be empty"),
        ("X-YaTaxi-PhoneId" = Option<String>, Header, description = "Client: personal phone id"),
        ("X-YaTaxi-Park-Id" = Option<String>, Header, description = "Driver: park id (with the profile id)"),
        ("X-YaTaxi-Driver-Profile-Id" = Option<String>, Header, description = "Driver: profile id (with the park id)"),
        ("X-Idempotency-Token" = Option<String>, Header, description = "Anonymous: identifies the view across retries of the same request (1-128 visible ASCII); without it every request is a new view"),
    ),
    responses(
        (status = 200, description = "Stored on the broker, whatever the tag", body = SeenResponse),
        (status = 400, description = "Invalid body or headers; the message names the field or header", body = ErrorBody),
        (status = 401, description = "No known credential (`unauthenticated`)", body = ErrorBody),
        (status = 403, description = "The caller may not use this route, or sent identity headers without being the gateway (`forbidden`)", body = ErrorBody),
        (status = 503, description = "Broker did not acknowledge in time; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "mark-notify"
)]
pub(crate) async fn handle(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SeenResponse>, ApiError> {
    if !principal.trusted_identity_headers {
        if let Some(name) = IDENTITY_HEADERS.iter().find(|h| headers.contains_key(**h)) {
            state.count_forbidden(&principal, "/4.0/mark-notify/v1/seen");
            return Err(ApiError::Forbidden(format!(
                "caller {} may not send identity header {name}: only the API gateway's \
                 credential is trusted with them",
                principal.name
            )));
        }
    }
    let bytes = switchyard_runtime::http::json::read_limited(body, MAX_BODY).await?;
    let (key, env) = accept(&headers, &bytes)?;
    state
        .publish(&state.config.mark_notify.topic, &key, &env)
        .await?;
    Ok(Json(SeenResponse {
        event_id: env.event_id,
        idempotency_key: env.idempotency_key,
    }))
}
