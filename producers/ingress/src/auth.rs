//! Who may call the ingress: every flow route requires a caller's credential (a bearer token or
//! API key, kept only as its SHA-256), and each caller may use only its configured routes.
//! `/ping`, `/ready` and `/metrics` stay open. A route is served without a credential only when
//! `auth.allow_unauthenticated` names it (and the service warns about it at start).
//!
//! Route names (in `routes` and `allow_unauthenticated`): `uid-notify`, `mark-notify`,
//! `driver-status`, `schemas` (the read-only registry), `events:<type>` for one domain event
//! type (`events:tasks.task_assigned`, every version), `events:<domain>.*` for a domain,
//! `events:*` for every domain event, and `*` for every route.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_runtime::http::tls::ClientCert;

use crate::error::ApiError;
use crate::metrics::AuthLabels;
use crate::AppState;

/// Header carrying an API key (the alternative to `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";
/// The `caller` label of a request without a known credential.
pub const UNKNOWN_CALLER: &str = "unknown";

/// `[auth]` of the ingress config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Routes served without a credential (route names as in `callers.routes`). Explicit per
    /// route, and logged as a WARN at start: meant for local development only.
    pub allow_unauthenticated: Vec<String>,
    /// Every caller, its credential and the routes it may use.
    pub callers: Vec<CallerConfig>,
}

/// `[[auth.callers]]`: one caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Names the caller in logs and metrics: 1-64 of `[a-z0-9_-]`.
    pub name: String,
    /// SHA-256 (64 hex digits) of the caller's token: `printf %s "$TOKEN" | sha256sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// A file holding the token itself (a mounted secret); read once at start, hashed in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// mTLS: the caller is whoever presents a client certificate, verified against
    /// `tls.client_ca_file`, whose subject's common name is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cn: Option<String>,
    /// Route names this caller may use (see the module doc).
    pub routes: Vec<String>,
    /// mark-notify: the caller is the API gateway, whose `X-YaTaxi-*`/`X-Yandex-UID` identity
    /// headers are trusted. Any other caller sending them is refused (403).
    #[serde(default)]
    pub trusted_identity_headers: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{key}: reading {path}")]
    TokenFile {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> AuthError {
    AuthError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A route a request is for, as permissions name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    UidNotify,
    MarkNotify,
    DriverStatus,
    Schemas,
    /// A domain event, by type without version.
    Event(String),
}

/// One entry of `routes` / `allow_unauthenticated`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Permission {
    All,
    Route(Route),
    AllEvents,
    /// `events:<domain>.*`: the prefix including the dot.
    EventDomain(String),
}

impl Permission {
    fn parse(s: &str) -> Option<Self> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
                })
        };
        Some(match s {
            "*" => Self::All,
            "uid-notify" => Self::Route(Route::UidNotify),
            "mark-notify" => Self::Route(Route::MarkNotify),
            "driver-status" => Self::Route(Route::DriverStatus),
            "schemas" => Self::Route(Route::Schemas),
            "events:*" => Self::AllEvents,
            _ => {
                let ty = s.strip_prefix("events:")?;
                match ty.strip_suffix(".*") {
                    Some(domain) if name_ok(domain) => Self::EventDomain(format!("{domain}.")),
                    Some(_) => return None,
                    None if name_ok(ty) => Self::Route(Route::Event(ty.to_owned())),
                    None => return None,
                }
            }
        })
    }

    fn allows(&self, route: &Route) -> bool {
        match (self, route) {
            (Self::All, _) => true,
            (Self::AllEvents, Route::Event(_)) => true,
            (Self::EventDomain(prefix), Route::Event(t)) => t.starts_with(prefix.as_str()),
            (Self::Route(r), route) => r == route,
            _ => false,
        }
    }
}

fn parse_permissions(key: &str, names: &[String]) -> Result<Vec<Permission>, AuthError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Permission::parse(n).ok_or_else(|| {
                invalid(
                    format!("{key}[{i}]"),
                    format!(
                        "unknown route {n:?}: use uid-notify, mark-notify, driver-status, \
                         schemas, events:<type>, events:<domain>.*, events:* or *"
                    ),
                )
            })
        })
        .collect()
}

/// A caller with its hashed credential, ready to check requests against.
struct Caller {
    principal: Principal,
    credential: Credential,
    routes: Vec<Permission>,
}

/// How a caller proves who it is.
#[derive(PartialEq)]
enum Credential {
    /// SHA-256 of its bearer token or API key.
    Token([u8; 32]),
    /// Its client certificate's common name.
    ClientCn(String),
}

/// Who made a request, put in the request's extensions for the handlers.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The configured name, or [`UNKNOWN_CALLER`] on a route open without a credential.
    pub name: Arc<str>,
    /// Whether mark-notify takes the identity headers from this caller.
    pub trusted_identity_headers: bool,
}

/// The resolved `[auth]` section.
pub struct Auth {
    callers: Vec<Caller>,
    open: Vec<Permission>,
    /// `allow_unauthenticated` as configured, for the start-up warning.
    pub open_names: Vec<String>,
}

pub fn sha256(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// Validates `[auth]` (naming the bad key) and reads every token file.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, AuthError> {
        let mut callers: Vec<Caller> = Vec::new();
        for (i, c) in cfg.callers.iter().enumerate() {
            let key = format!("auth.callers[{i}]");
            let name_ok = (1..=64).contains(&c.name.len())
                && c.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok || c.name == UNKNOWN_CALLER {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} must be 1-64 of [a-z0-9_-] and not `unknown`", c.name),
                ));
            }
            if callers.iter().any(|o| *o.principal.name == *c.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is configured twice", c.name),
                ));
            }
            let credential = match (&c.token_sha256, &c.token_file, &c.client_cn) {
                (Some(hex), None, None) => {
                    Credential::Token(parse_hex32(&hex.to_ascii_lowercase()).ok_or_else(|| {
                        invalid(format!("{key}.token_sha256"), "must be 64 hex digits")
                    })?)
                }
                (None, None, Some(cn)) => {
                    if cn.trim().is_empty() || cn.trim() != cn {
                        return Err(invalid(
                            format!("{key}.client_cn"),
                            "must be a certificate common name, without surrounding spaces",
                        ));
                    }
                    Credential::ClientCn(cn.clone())
                }
                (None, Some(path), None) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| AuthError::TokenFile {
                            key: format!("{key}.token_file"),
                            path: path.clone(),
                            source,
                        })?;
                    let token = text.trim();
                    if token.len() < 16 {
                        return Err(invalid(
                            format!("{key}.token_file"),
                            "the token must be at least 16 characters",
                        ));
                    }
                    Credential::Token(sha256(token.as_bytes()))
                }
                _ => {
                    return Err(invalid(
                        key,
                        "set exactly one of token_sha256, token_file and client_cn",
                    ))
                }
            };
            if callers.iter().any(|o| o.credential == credential) {
                return Err(invalid(
                    key,
                    "uses the same credential as another caller: every caller needs its own",
                ));
            }
            callers.push(Caller {
                principal: Principal {
                    name: Arc::from(c.name.as_str()),
                    trusted_identity_headers: c.trusted_identity_headers,
                },
                credential,
                routes: parse_permissions(&format!("{key}.routes"), &c.routes)?,
            });
        }
        let open = parse_permissions("auth.allow_unauthenticated", &cfg.allow_unauthenticated)?;
        Ok(Self {
            callers,
            open,
            open_names: cfg.allow_unauthenticated.clone(),
        })
    }

    /// The caller whose token hashes to the presented one. Every configured hash is compared in
    /// constant time, so the answer's timing says nothing about which (or how much) matched.
    fn identify(&self, token: &str) -> Option<&Caller> {
        let presented = sha256(token.as_bytes());
        let mut found = None;
        for c in &self.callers {
            let Credential::Token(hash) = &c.credential else {
                continue;
            };
            let eq: bool = hash.ct_eq(&presented).into();
            if eq && found.is_none() {
                found = Some(c);
            }
        }
        found
    }

    /// The caller named by a verified client certificate's common name.
    fn identify_cert(&self, common_name: &str) -> Option<&Caller> {
        self.callers
            .iter()
            .find(|c| matches!(&c.credential, Credential::ClientCn(cn) if cn == common_name))
    }

    /// Whether a caller authenticates by client certificate.
    pub fn uses_client_certs(&self) -> bool {
        self.callers
            .iter()
            .any(|c| matches!(c.credential, Credential::ClientCn(_)))
    }

    fn open(&self, route: &Route) -> bool {
        self.open.iter().any(|p| p.allows(route))
    }
}

/// The credential of a request: `Authorization: Bearer <token>` or `X-Api-Key: <token>`.
/// `Err` when one is present but unreadable.
fn credential(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let s = v.to_str().map_err(|_| ())?;
        let (scheme, token) = s.split_once(' ').ok_or(())?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(());
        }
        return Ok(Some(token.trim()));
    }
    match headers.get(API_KEY_HEADER) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim())),
            _ => Err(()),
        },
    }
}

/// The route a request is for, from its matched route template (and, for domain events, the
/// type in its path, version stripped).
pub fn route_of(template: &str, path: &str) -> Option<Route> {
    Some(match template {
        "/v1/uid-notify" => Route::UidNotify,
        "/4.0/mark-notify/v1/seen" => Route::MarkNotify,
        "/v1/driver-status" => Route::DriverStatus,
        "/v1/schemas" | "/v1/schemas/{schema}" => Route::Schemas,
        "/v1/events/{event_type}" => {
            let seg = path.rsplit('/').next().unwrap_or_default();
            let ty = match seg.rsplit_once(".v") {
                Some((ty, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => ty,
                _ => seg,
            };
            Route::Event(ty.to_owned())
        }
        _ => return None,
    })
}

/// The middleware in front of every flow route: 401 without a known credential, 403 for a
/// known caller outside its routes; counted by caller, route template and outcome.
pub async fn require(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| switchyard_runtime::http::UNMATCHED_ROUTE.to_owned());
    let Some(route) = route_of(&template, req.uri().path()) else {
        // A route this module does not know is a programming error: refuse rather than open.
        tracing::error!(route = %template, "route has no access rule");
        return ApiError::Forbidden("no access rule for this route".into()).into_response();
    };
    let auth = &state.auth;
    let count = |caller: &str, outcome: &'static str| {
        state
            .metrics
            .auth
            .get_or_create(&AuthLabels {
                caller: caller.to_owned(),
                route: template.clone(),
                outcome: outcome.into(),
            })
            .inc();
    };
    // A known caller on a route: allowed, or 403 outside its routes.
    let decide = |c: &Caller| -> Result<Principal, ApiError> {
        if !c.routes.iter().any(|p| p.allows(&route)) {
            count(&c.principal.name, "forbidden");
            tracing::info!(caller = %c.principal.name, route = %template, "caller refused on route");
            return Err(ApiError::Forbidden(format!(
                "caller {} may not use {template}",
                c.principal.name
            )));
        }
        count(&c.principal.name, "allowed");
        Ok(c.principal.clone())
    };
    let cert = req.extensions().get::<ClientCert>().cloned();
    let cert_caller = cert
        .as_ref()
        .and_then(|c| c.common_name.as_deref())
        .and_then(|cn| auth.identify_cert(cn));
    // A bearer token or API key, when sent, decides; a client certificate otherwise.
    let principal = match (credential(req.headers()), cert_caller) {
        (Err(()), _) => {
            count(UNKNOWN_CALLER, "unauthenticated");
            return ApiError::Unauthenticated(
                "malformed credential: send `Authorization: Bearer <token>` or `X-Api-Key`".into(),
            )
            .into_response();
        }
        (Ok(None), Some(c)) => match decide(c) {
            Ok(p) => p,
            Err(refused) => return refused.into_response(),
        },
        (Ok(None), None) if auth.open(&route) => {
            count(UNKNOWN_CALLER, "open");
            Principal {
                name: Arc::from(UNKNOWN_CALLER),
                trusted_identity_headers: false,
            }
        }
        (Ok(None), None) => {
            count(UNKNOWN_CALLER, "unauthenticated");
            let message = match &cert {
                Some(c) => format!("client certificate {} names no caller", c.subject),
                None => "a credential is required: send `Authorization: Bearer <token>`".into(),
            };
            return ApiError::Unauthenticated(message).into_response();
        }
        (Ok(Some(token)), _) => match auth.identify(token) {
            None => {
                count(UNKNOWN_CALLER, "unauthenticated");
                return ApiError::Unauthenticated("unknown credential".into()).into_response();
            }
            Some(c) => match decide(c) {
                Ok(p) => p,
                Err(refused) => return refused.into_response(),
            },
        },
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: [u8; 32]) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn caller(name: &str, token: &str, routes: &[&str]) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            token_sha256: Some(hex(sha256(token.as_bytes()))),
            token_file: None,
            client_cn: None,
            routes: routes.iter().map(|s| (*s).to_owned()).collect(),
            trusted_identity_headers: false,
        }
    }

    #[test]
    fn permissions_match_routes() {
        let ev = |t: &str| Route::Event(t.into());
        let p = |s: &str| Permission::parse(s).unwrap();
        assert!(p("*").allows(&Route::UidNotify));
        assert!(p("events:*").allows(&ev("tasks.task_assigned")));
        assert!(!p("events:*").allows(&Route::MarkNotify));
        assert!(p("events:tasks.*").allows(&ev("tasks.task_assigned")));
        assert!(!p("events:tasks.*").allows(&ev("tasksx.a")));
        assert!(p("events:tasks.task_assigned").allows(&ev("tasks.task_assigned")));
        assert!(!p("events:tasks.task_assigned").allows(&ev("tasks.task_completed")));
        assert!(p("uid-notify").allows(&Route::UidNotify));
        assert!(!p("uid-notify").allows(&Route::MarkNotify));
        for bad in ["uid_notify", "events:", "events:Tasks.*", "events:.*", ""] {
            assert!(Permission::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            route_of(
                "/v1/events/{event_type}",
                "/v1/events/tasks.task_assigned.v2"
            ),
            Some(ev("tasks.task_assigned"))
        );
    }

    #[test]
    fn tokens_identify_their_caller_only() {
        let cfg = AuthConfig {
            allow_unauthenticated: vec![],
            callers: vec![
                caller("idp", "idp-token-0123456789", &["uid-notify"]),
                caller("gw", "gw-token-0123456789", &["mark-notify"]),
            ],
        };
        let auth = Auth::from_config(&cfg).unwrap();
        assert_eq!(
            &*auth.identify("gw-token-0123456789").unwrap().principal.name,
            "gw"
        );
        assert!(auth.identify("gw-token-012345678").is_none());
        assert!(auth.identify("").is_none());
    }

    #[test]
    fn bad_config_names_the_key() {
        let mut c = caller("idp", "t", &["uid-notify"]);
        c.token_sha256 = Some("abc".into());
        let err = Auth::from_config(&AuthConfig {
            allow_unauthenticated: vec![],
            callers: vec![c],
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with("auth.callers[0].token_sha256"),
            "{err}"
        );
        let err = Auth::from_config(&AuthConfig {
            allow_unauthenticated: vec!["mark_notify".into()],
            callers: vec![],
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with("auth.allow_unauthenticated[0]"),
            "{err}"
        );
        let same = Auth::from_config(&AuthConfig {
            allow_unauthenticated: vec![],
            callers: vec![caller("a", "tok", &["*"]), caller("b", "tok", &["*"])],
        });
        assert!(same.is_err());
    }
}
