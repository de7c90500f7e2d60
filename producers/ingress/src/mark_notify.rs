//! `POST /4.0/mark-notify/v1/seen`: an app reports that a notification was shown. The caller
//! (client, driver or anonymous) comes from the API gateway's headers; the fact is published
//! for the integrations configured for its `tag`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::Utc;
use events::v1::notification_seen::Caller;
use events::v1::{
    envelope::Payload, AnonymousCaller, ClientCaller, DriverCaller, NotificationSeen,
};
use events::{event_type, Envelope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::metrics::TagLabels;
use crate::AppState;

/// Largest accepted body.
pub const MAX_BODY: usize = 16 * 1024;
pub const PRODUCER: &str = "producers/mark-notify";

pub const H_USER_ID: &str = "x-yataxi-userid";
pub const H_UID: &str = "x-yandex-uid";
pub const H_BOUND_UIDS: &str = "x-yataxi-bound-uids";
pub const H_PHONE_ID: &str = "x-yataxi-phoneid";
pub const H_PARK_ID: &str = "x-yataxi-park-id";
pub const H_DRIVER_ID: &str = "x-yataxi-driver-profile-id";

/// `[mark_notify]` section of the ingress config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkNotifyConfig {
    /// Topic the marks go to; the dispatcher fans them out per integration.
    pub topic: String,
    /// The integrations file shared with the dispatcher; only its tags are read here.
    pub integrations_file: Option<PathBuf>,
}

impl Default for MarkNotifyConfig {
    fn default() -> Self {
        Self {
            topic: "mark-notify".into(),
            integrations_file: None,
        }
    }
}

/// The ingress's view of the integrations file: which tags are routed anywhere.
#[derive(Debug, Deserialize)]
struct IntegrationsView {
    #[serde(default)]
    integrations: Vec<TagView>,
}

#[derive(Debug, Deserialize)]
struct TagView {
    tag: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot load integrations file {path}: {message}")]
pub struct IntegrationsError {
    path: String,
    message: String,
}

/// Tags that have at least one integration.
pub fn routed_tags(file: Option<&Path>) -> Result<HashSet<String>, IntegrationsError> {
    let Some(file) = file else {
        return Ok(HashSet::new());
    };
    let err = |message: String| IntegrationsError {
        path: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let view: IntegrationsView = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(view.integrations.into_iter().map(|i| i.tag).collect())
}

/// A notification shown to the caller.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeenRequest {
    /// Notification kind, routes to integrations: 1-64 of `[a-z0-9_-]`.
    pub tag: String,
    /// The notification's id within its tag: 1-256 printable characters.
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeenResponse {
    /// Id of the published event; absent when no integration wants the tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// False when no integration is configured for the tag (the mark is accepted, not stored).
    pub routed: bool,
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
pub fn caller(headers: &HeaderMap) -> Result<Caller, ApiError> {
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
            park_id: park.into(),
            driver_profile_id: profile.into(),
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

/// The record key: the person, so one person's marks stay in order.
pub fn person_key(caller: &Caller, seen: &SeenRequest) -> String {
    match caller {
        Caller::Client(c) => format!("client:{}", c.user_id),
        Caller::Driver(d) => format!("driver:{}:{}", d.park_id, d.driver_profile_id),
        Caller::Anonymous(_) => format!("anonymous:{}:{}", seen.tag, seen.id),
    }
}

/// Remember that a notification was shown; 200 only once the broker has the fact.
#[utoipa::path(
    post,
    path = "/4.0/mark-notify/v1/seen",
    request_body = SeenRequest,
    params(
        ("X-YaTaxi-UserId" = Option<String>, Header, description = "Client: user id (required for a client)"),
        ("X-Yandex-UID" = Option<u64>, Header, description = "Client: account uid"),
        ("X-YaTaxi-Bound-Uids" = Option<String>, Header, description = "Client: comma-separated bound uids, may be empty"),
        ("X-YaTaxi-PhoneId" = Option<String>, Header, description = "Client: personal phone id"),
        ("X-YaTaxi-Park-Id" = Option<String>, Header, description = "Driver: park id (with the profile id)"),
        ("X-YaTaxi-Driver-Profile-Id" = Option<String>, Header, description = "Driver: profile id (with the park id)"),
    ),
    responses(
        (status = 200, description = "Stored on the broker, or accepted for a tag without integrations", body = SeenResponse),
        (status = 400, description = "Invalid body or headers; the message names the field or header", body = ErrorBody),
        (status = 503, description = "Broker did not acknowledge in time; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "mark-notify"
)]
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SeenResponse>, ApiError> {
    let bytes = switchyard_runtime::http::json::read_limited(body, MAX_BODY).await?;
    let req: SeenRequest = switchyard_runtime::http::json::parse(&bytes)?;
    req.validate()?;
    let caller = caller(&headers)?;
    if !state.routed_tags.contains(&req.tag) {
        state
            .metrics
            .unrouted
            .get_or_create(&TagLabels { tag: req.tag })
            .inc();
        return Ok(Json(SeenResponse {
            event_id: None,
            routed: false,
        }));
    }
    let key = person_key(&caller, &req);
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
    state
        .publish(&state.config.mark_notify.topic, &key, &env)
        .await?;
    Ok(Json(SeenResponse {
        event_id: Some(env.event_id),
        routed: true,
    }))
}
