//! `POST /v1/events/{event_type}.v{version}`: any team's domain events, validated against the
//! JSON Schema registered for that type and version, then published keyed by the key field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use events::v1::envelope::Payload;
use events::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, Violation};
use crate::AppState;

/// Largest accepted body.
pub const MAX_BODY: usize = 256 * 1024;
pub const PRODUCER: &str = "producers/domain-events";
/// Optional request header: the caller's idempotency key (else derived from the body).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `[domain_events]` of the ingress config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainEventsConfig {
    /// The registry (`deploy/events.toml`); absent means no domain event is accepted (404).
    pub registry_file: Option<PathBuf>,
}

/// The registry file: which schema, topic and key field each (type, version) has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Directory of the schema files, relative to the registry file.
    pub schemas_dir: PathBuf,
    /// One entry per (type, version).
    #[serde(default)]
    pub events: Vec<RegistryEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// `<domain>.<name>`, e.g. `tasks.task_assigned`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version, >= 1.
    pub version: u32,
    /// Topic the events are published to.
    pub topic: String,
    /// Top-level payload field whose value is the record key.
    pub key: String,
    /// Top-level payload field (RFC 3339) copied to the envelope's `occurred_at`.
    #[serde(default)]
    pub occurred_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("parsing {0}")]
    Toml(PathBuf, #[source] toml::de::Error),
    #[error("schema {0} is not JSON")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("schema {0} is not a valid JSON Schema: {1}")]
    Schema(PathBuf, String),
    #[error("{0} v{1} is registered twice")]
    Duplicate(String, u32),
}

/// One registered (type, version) with its compiled schema.
pub struct RegisteredEvent {
    pub entry: RegistryEntry,
    pub schema_path: PathBuf,
    pub schema: Value,
    validator: jsonschema::Validator,
}

/// Every registered type and version.
#[derive(Default)]
pub struct Registry {
    types: BTreeMap<String, BTreeMap<u32, Arc<RegisteredEvent>>>,
}

impl Registry {
    /// Reads `file` and compiles every schema it names.
    pub fn load(file: &Path) -> Result<Self, RegistryError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| RegistryError::Read(file.into(), e))?;
        let parsed: RegistryFile =
            toml::from_str(&text).map_err(|e| RegistryError::Toml(file.into(), e))?;
        let dir = file
            .parent()
            .unwrap_or(Path::new("."))
            .join(&parsed.schemas_dir);
        let mut reg = Self::default();
        for entry in parsed.events {
            let path = dir.join(format!("{}.v{}.json", entry.event_type, entry.version));
            let text =
                std::fs::read_to_string(&path).map_err(|e| RegistryError::Read(path.clone(), e))?;
            let schema: Value =
                serde_json::from_str(&text).map_err(|e| RegistryError::Json(path.clone(), e))?;
            let validator = compile(&schema).map_err(|e| RegistryError::Schema(path.clone(), e))?;
            let versions = reg.types.entry(entry.event_type.clone()).or_default();
            if versions.contains_key(&entry.version) {
                return Err(RegistryError::Duplicate(entry.event_type, entry.version));
            }
            let version = entry.version;
            let event = RegisteredEvent {
                entry,
                schema_path: path,
                schema,
                validator,
            };
            versions.insert(version, Arc::new(event));
        }
        Ok(reg)
    }

    /// The versions registered for `event_type`.
    pub fn versions(&self, event_type: &str) -> Option<&BTreeMap<u32, Arc<RegisteredEvent>>> {
        self.types.get(event_type)
    }

    /// The registered `event_type` at `version`; 404 naming what is registered otherwise.
    pub(crate) fn lookup(
        &self,
        event_type: &str,
        version: u32,
    ) -> Result<&Arc<RegisteredEvent>, ApiError> {
        let Some(versions) = self.versions(event_type) else {
            return Err(ApiError::NotFound {
                code: "unknown_event_type",
                message: format!("event type {event_type} is not registered"),
            });
        };
        versions.get(&version).ok_or_else(|| {
            let known: Vec<String> = versions.keys().map(|v| format!("v{v}")).collect();
            ApiError::NotFound {
                code: "unknown_event_version",
                message: format!(
                    "{event_type} has no v{version}; registered: {}",
                    known.join(", ")
                ),
            }
        })
    }

    /// Every registered event, by type then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<RegisteredEvent>> {
        self.types.values().flat_map(BTreeMap::values)
    }
}

/// A 2020-12 validator that also checks `format` (uuid, date-time).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Every violation of `instance`, each at the path of the offending field (`a.b[0]`); a missing
/// required field or an unexpected one is reported at its own path, not its parent's.
pub fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as K;
    let mut out = Vec::new();
    for err in validator.iter_errors(instance) {
        let base = dotted(err.instance_path.as_str());
        match &err.kind {
            K::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                out.push(Violation {
                    field: join(&base, &name),
                    message: "is required".into(),
                });
            }
            K::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    let field = join(&base, name);
                    out.push(Violation {
                        field,
                        message: "is not allowed".into(),
                    });
                }
            }
            _ => {
                let field = if base.is_empty() { "$".into() } else { base };
                out.push(Violation {
                    field,
                    message: err.to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// JSON pointer `/a/0/b` as `a[0].b` (odd keys as `["…"]`, as the JSON body errors write them).
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            switchyard_runtime::http::push_key(&mut out, &seg);
        }
    }
    out
}

fn join(base: &str, name: &str) -> String {
    let mut out = base.to_owned();
    switchyard_runtime::http::push_key(&mut out, name);
    out
}

/// Splits `tasks.task_assigned.v1` into the type and the version; an error names `field`.
pub(crate) fn split_versioned<'a>(path: &'a str, field: &str) -> Result<(&'a str, u32), ApiError> {
    let bad = || {
        ApiError::field(
            field,
            "must be `<domain>.<name>.v<version>`, e.g. `tasks.task_assigned.v1`",
        )
    };
    // What the OpenAPI document says: `^.+\.v[1-9][0-9]{0,8}$`.
    let (name, digits) = path.rsplit_once(".v").ok_or_else(bad)?;
    let plain = (1..=9).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !plain || name.is_empty() {
        return Err(bad());
    }
    let version: u32 = digits.parse().map_err(|_| bad())?;
    Ok((name, version))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishedEvent {
    /// Envelope id of the published event.
    pub event_id: String,
    /// The idempotency key consumers deduplicate on.
    pub idempotency_key: String,
    /// Topic the event went to.
    pub topic: String,
}

/// Builds the envelope of a validated payload and its record key.
fn envelope(
    event: &RegisteredEvent,
    body: &Value,
    idempotency_key: Option<String>,
) -> Result<(String, Envelope), ApiError> {
    let entry = &event.entry;
    let key = match body.get(&entry.key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::field(
                &entry.key,
                "is the key field: must be a string or number",
            ))
        }
    };
    let occurred = match entry.occurred_at.as_deref() {
        Some(field) => match body.get(field).and_then(Value::as_str) {
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| ApiError::field(field, e))?
                .with_timezone(&Utc),
            None => Utc::now(),
        },
        None => Utc::now(),
    };
    // serde_json's map is sorted: the serialized body is canonical, so a retried POST of the
    // same event derives the same key.
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let idempotency_key = idempotency_key.unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(format!("{}.v{}\n", entry.event_type, entry.version).as_bytes());
        h.update(&bytes);
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    });
    let env = Envelope::new(
        &entry.event_type,
        entry.version,
        occurred,
        PRODUCER,
        idempotency_key,
        Payload::Json(bytes),
    );
    Ok((key, env))
}

/// Publish one domain event; 200 only once the broker has the record.
#[utoipa::path(
    post,
    path = "/v1/events/{event_type}",
    params(
        ("event_type" = String, Path, description = "Type and schema version, `<domain>.<name>.v<N>`, e.g. `tasks.task_assigned.v1`", pattern = r"^.+\.v[1-9][0-9]{0,8}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "Key consumers deduplicate on (1-200 visible ASCII); default: a hash of type, version and body", min_length = 1, max_length = 200, pattern = "^[ -~]+$"),
    ),
    request_body(content = Object, description = "The event payload, valid against `schemas/events/<event_type>.json`"),
    responses(
        (status = 200, description = "Stored on the broker", body = PublishedEvent),
        (status = 400, description = "Invalid body: `violations` lists the path of every violation", body = ErrorBody),
        (status = 401, description = "No known credential (`unauthenticated`)", body = ErrorBody),
        (status = 403, description = "The caller may not publish this event type (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Unknown event type (`unknown_event_type`) or version (`unknown_event_version`)", body = ErrorBody),
        (status = 503, description = "Broker did not acknowledge in time; retry after `Retry-After`", body = ErrorBody),
    ),
    tag = "domain-events"
)]
pub async fn handle(
    State(state): State<AppState>,
    UrlPath(event_type): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishedEvent>, ApiError> {
    let bytes = switchyard_runtime::http::json::read_limited(body, MAX_BODY).await?;
    let (event, key, env) = accept(&state.events, &event_type, &headers, &bytes)?;
    state.publish(&event.entry.topic, &key, &env).await?;
    Ok(Json(PublishedEvent {
        event_id: env.event_id,
        idempotency_key: env.idempotency_key,
        topic: event.entry.topic.clone(),
    }))
}

/// The event type from the path, the caller's headers and the body checked against the
/// registry and turned into the registered event, the record key and the envelope (the fuzz
/// target's entry).
pub(crate) fn accept<'r>(
    registry: &'r Registry,
    event_type: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(&'r Arc<RegisteredEvent>, String, Envelope), ApiError> {
    let (name, version) = split_versioned(event_type, "event_type")?;
    let event = registry.lookup(name, version)?;
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        Some(v) => match v.to_str() {
            Ok(s)
                if !s.is_empty()
                    && s.len() <= 200
                    && s.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
            {
                Some(s.to_owned())
            }
            _ => {
                return Err(ApiError::header(
                    IDEMPOTENCY_KEY,
                    "must be 1..=200 visible ASCII",
                ))
            }
        },
        None => None,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        field: None,
        message: format!("body is not valid JSON: {e}"),
    })?;
    let found = violations(&event.validator, &value);
    if !found.is_empty() {
        return Err(ApiError::Violations(found));
    }
    let (key, env) = envelope(event, &value, idempotency_key)?;
    Ok((event, key, env))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry() -> Registry {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/events.toml");
        Registry::load(Path::new(file)).unwrap()
    }

    #[test]
    fn registry_loads_every_shipped_type() {
        let reg = registry();
        let names: Vec<String> = reg
            .iter()
            .map(|e| format!("{}.v{}", e.entry.event_type, e.entry.version))
            .collect();
        assert_eq!(
            names,
            [
                "accounts.account_created.v1",
                "tasks.task_assigned.v1",
                "tasks.task_completed.v1",
                "users.user_activated.v1",
                "users.user_created.v1",
                "users.user_created.v2",
            ]
        );
    }

    #[test]
    fn every_violation_is_reported_at_its_path() {
        let reg = registry();
        let event = &reg.versions("tasks.task_assigned").unwrap()[&1];
        let body = json!({"task_id": "nope", "assigned_at": 5, "extra": true});
        let fields: Vec<String> = violations(&event.validator, &body)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["assigned_at", "extra", "task_id", "user_id"]);
        // Found by the domain_event fuzz target: an unexpected empty key was field "".
        let odd = json!({"task_id": "0190e6a4-0000-7000-8000-000000000001",
            "user_id": "0190e6a4-0000-7000-8000-000000000002",
            "assigned_at": "2026-01-01T10:00:00Z", "": 1});
        let fields: Vec<String> = violations(&event.validator, &odd)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, [r#"[""]"#]);
        let ok = json!({
            "task_id": "0190e6a4-0000-7000-8000-000000000001",
            "user_id": "0190e6a4-0000-7000-8000-000000000002",
            "assigned_at": "2026-01-01T10:00:00Z"
        });
        assert!(violations(&event.validator, &ok).is_empty());
    }

    #[test]
    fn paths_and_versions_parse() {
        assert_eq!(dotted("/a/0/b_c"), "a[0].b_c");
        // Keys that would read ambiguously or as nothing are written in JSON string syntax.
        assert_eq!(dotted("/a/0/b~1c"), r#"a[0]["b/c"]"#);
        assert_eq!(dotted("/a//b"), r#"a[""].b"#);
        assert_eq!(
            split_versioned("tasks.task_assigned.v12", "event_type").unwrap(),
            ("tasks.task_assigned", 12)
        );
        assert!(split_versioned("tasks.task_assigned", "event_type").is_err());
        assert!(split_versioned("tasks.task_assigned.v0", "event_type").is_err());
    }

    #[test]
    fn same_body_derives_the_same_idempotency_key() {
        let reg = registry();
        let event = &reg.versions("users.user_activated").unwrap()[&1];
        let body = json!({"user_id": "0190e6a4-0000-7000-8000-000000000002"});
        let (key, a) = envelope(event, &body, None).unwrap();
        let (_, b) = envelope(event, &body, None).unwrap();
        assert_eq!(key, "0190e6a4-0000-7000-8000-000000000002");
        assert_eq!(a.idempotency_key, b.idempotency_key);
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(a.schema_version, 1);
        assert_eq!(a.event_type, "users.user_activated");
    }
}
