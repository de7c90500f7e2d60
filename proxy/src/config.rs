//! Proxy configuration: the server section, one `[backends.<tag>]` per partner API and one
//! `[identity.<name>]` per identity exchange; validated once at start.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_runtime::{load_config, ConfigError};

/// Env var prefix: `SWITCHYARD_PROXY_LISTEN=...`, `SWITCHYARD_PROXY_BACKENDS__SCOOTER__TIMEOUT_MS=...`.
pub const ENV_PREFIX: &str = "SWITCHYARD_PROXY";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address internal callers send requests to be forwarded by `x-api-tag`.
    pub listen: String,
    /// Address the partner's callbacks (`/callbacks/<tag>/...`) arrive at; serves nothing else.
    pub partner_listen: String,
    /// Address of `/_proxy/ping` and `/_proxy/metrics`; never expose it to the partner.
    pub ops_listen: String,
    /// Host names (port ignored) clients may put in `Host`; anything else is refused with 421.
    pub allowed_hosts: Vec<String>,
    /// Replace (false) or append to (true) an incoming `X-Forwarded-For`; only trust it when
    /// the proxy sits behind our own balancer.
    pub trust_forwarded_for: bool,
    /// Request headers never forwarded to a backend (our internal identity and auth).
    pub strip_headers: Vec<String>,
    /// Request header name prefixes never forwarded to a backend (e.g. `x-yataxi-`).
    pub strip_header_prefixes: Vec<String>,
    /// Time a client gets to send the request head before the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A kept-alive connection with no request in flight and no byte of the next one is
    /// closed after this; longer than the clients' pool timeouts (Go's, reqwest's 90 s) so the
    /// client lets a connection go before the proxy does.
    pub idle_timeout_ms: u64,
    /// Upper bound on a whole request, head to last response byte, on every listener;
    /// then 504 `request_timeout` or, once the response has started, a cut connection.
    pub request_timeout_ms: u64,
    /// Largest request body on any route unless a backend sets its own; then 413.
    pub max_body_bytes: u64,
    /// How long in-flight requests may finish after shutdown was requested.
    pub drain_timeout_ms: u64,
    /// Worker threads serving connections (thread-per-core); 0 = one per available core.
    pub workers: usize,
    /// Internal callers by name: who may use the internal listener, and for which backends.
    /// None configured means every internal request is refused.
    pub callers: BTreeMap<String, CallerConfig>,
    /// Partner APIs by the tag clients put in `x-api-tag`.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Identity exchanges by name; a backend refers to one by its `identity` key.
    pub identity: BTreeMap<String, IdentityConfig>,
    /// Used callback-token `jti`s kept in PostgreSQL, shared by every replica, so a token
    /// replayed to another replica is refused too. Unset: each process remembers its own.
    pub replay_store: Option<ReplayStoreConfig>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8090".into(),
            partner_listen: "127.0.0.1:8091".into(),
            ops_listen: "127.0.0.1:9090".into(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into()],
            trust_forwarded_for: false,
            strip_headers: ["authorization", "cookie", "x-api-tag", "x-real-ip"]
                .map(String::from)
                .to_vec(),
            strip_header_prefixes: ["x-yataxi-", "x-yandex-", "x-remote-"]
                .map(String::from)
                .to_vec(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            request_timeout_ms: 60_000,
            max_body_bytes: 10 * 1024 * 1024,
            drain_timeout_ms: 10_000,
            workers: 0,
            callers: BTreeMap::new(),
            backends: BTreeMap::new(),
            identity: BTreeMap::new(),
            replay_store: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStoreConfig {
    /// `postgres://user:password@host:port/db`; prefer `database_url_file` outside development.
    #[serde(default)]
    pub database_url: Option<Secret>,
    /// File holding the URL (a mounted secret).
    #[serde(default)]
    pub database_url_file: Option<PathBuf>,
    /// Connections per proxy process.
    #[serde(default = "default_replay_pool")]
    pub pool_size: usize,
    /// Longest a replay check may take; then the callback gets 503 `replay_store_unavailable`.
    #[serde(default = "default_replay_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_replay_pool() -> usize {
    4
}

fn default_replay_timeout_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// sha256 of the caller's token, 64 hex digits (`printf %s TOKEN | sha256sum`); the token
    /// itself is never stored. Or use `token_file`.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// File holding the caller's token (a mounted secret), hashed at start.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Backend tags this caller may send in `x-api-tag`; any other is a 403.
    pub backends: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Base URL every forwarded path is appended to (`https://partner.example/api`).
    pub base_url: String,
    /// Upper bound from sending the request to receiving the response head; then 504.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Path prefixes (segment-wise) that may be forwarded; everything else is a 404.
    pub allowed_prefixes: Vec<String>,
    /// Largest request body forwarded to this backend (default: the global `max_body_bytes`).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Name of the `[identity.<name>]` exchange to apply; none means no phone id is needed.
    #[serde(default)]
    pub identity: Option<String>,
    /// Partner API key added to every forwarded request.
    #[serde(default)]
    pub api_key: Option<ApiKeyConfig>,
    /// Short-lived JWT signed for the backend, carrying the partner user id as `sub`.
    #[serde(default)]
    pub jwt: Option<JwtSignConfig>,
    /// Callbacks the partner sends to `/callbacks/<tag>/...`, checked and forwarded inside.
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
}

fn default_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Request header carrying the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// The key itself; prefer `file` outside development.
    #[serde(default)]
    pub value: Option<Secret>,
    /// File holding the key (surrounding whitespace trimmed), e.g. a mounted secret.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// Signature algorithms the proxy signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlg {
    HS256,
    ES256,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSignConfig {
    /// `HS256` (shared secret) or `ES256` (P-256 private key).
    pub alg: JwtAlg,
    /// Key id put in the JWT header so the partner can rotate keys.
    pub kid: String,
    /// HS256 shared secret; or use `secret_file`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// File holding the HS256 secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// ES256 private key, PKCS#8 PEM.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Lifetime of each token; keep it short, one is signed per request.
    #[serde(default = "default_jwt_ttl_secs")]
    pub ttl_secs: u64,
    /// Header carrying `Bearer <token>`.
    #[serde(default = "default_jwt_header")]
    pub header: String,
}

fn default_jwt_ttl_secs() -> u64 {
    60
}

fn default_jwt_header() -> String {
    "authorization".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// Internal base URL the checked callback is forwarded to (path after `/callbacks/<tag>`).
    pub upstream: String,
    /// Path prefixes (after `/callbacks/<tag>`) the partner may call.
    pub allowed_prefixes: Vec<String>,
    /// Required `iss` of the partner's tokens.
    pub issuer: String,
    /// Required `aud` of the partner's tokens.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Upper bound for the internal upstream's response head; then 504.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Keys the partner signs with, selected by the token's `kid`.
    pub keys: Vec<VerifyKeyConfig>,
}

fn default_leeway_secs() -> u64 {
    5
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyConfig {
    /// Key id the partner puts in the token header.
    pub kid: String,
    /// The only algorithm accepted for this key.
    pub alg: JwtAlg,
    /// HS256 shared secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// File holding the HS256 secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// ES256 public key, SPKI PEM.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `personal` endpoint answering `{"id"}` with `{"value": <phone>}`.
    pub personal_url: String,
    /// Partner endpoint answering `{"phone"}` with `{"user_id"}`.
    pub partner_url: String,
    /// API key sent to the partner lookup.
    #[serde(default)]
    pub partner_api_key: Option<ApiKeyConfig>,
    /// Caller header with our personal phone id.
    #[serde(default = "default_phone_id_header")]
    pub phone_id_header: String,
    /// Header that carries the partner user id to the backend.
    #[serde(default = "default_user_id_header")]
    pub user_id_header: String,
    /// Most phone-id mappings kept; least recently used go first.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
    /// How long a mapping is trusted before it is looked up again.
    #[serde(default = "default_cache_ttl_ms")]
    pub cache_ttl_ms: u64,
    /// Upper bound for each of the two lookups.
    #[serde(default = "default_lookup_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_phone_id_header() -> String {
    "x-yataxi-phoneid".into()
}

fn default_user_id_header() -> String {
    "x-partner-user-id".into()
}

fn default_cache_capacity() -> u64 {
    100_000
}

fn default_cache_ttl_ms() -> u64 {
    600_000
}

fn default_lookup_timeout_ms() -> u64 {
    2_000
}

/// A secret string that never shows up in `Debug` output or serialized config.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A config that loaded but makes no sense; names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    #[error(transparent)]
    Load(#[from] ConfigError),
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

impl InvalidConfig {
    pub fn key(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Key {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

impl ProxyConfig {
    /// Defaults, then `file`, then `SWITCHYARD_PROXY_*` env vars.
    pub fn load(file: Option<&Path>) -> Result<Self, InvalidConfig> {
        Ok(load_config(file, ENV_PREFIX)?)
    }

    /// Checks what serde cannot: URLs, tags, references between sections. Key material is
    /// checked when the state is built (`ProxyState::new`).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.partner_listen == self.listen {
            return Err(InvalidConfig::key(
                "partner_listen",
                "must differ from listen: partner callbacks get a port of their own",
            ));
        }
        if self.ops_listen == self.listen || self.ops_listen == self.partner_listen {
            return Err(InvalidConfig::key(
                "ops_listen",
                "must differ from listen and partner_listen",
            ));
        }
        for (key, ms) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if ms == 0 {
                return Err(InvalidConfig::key(key, "must be > 0"));
            }
        }
        if self.allowed_hosts.is_empty() {
            return Err(InvalidConfig::key(
                "allowed_hosts",
                "must name at least one host",
            ));
        }
        for (tag, b) in &self.backends {
            let key = |field: &str| format!("backends.{tag}.{field}");
            if !valid_tag(tag) {
                return Err(InvalidConfig::key(
                    format!("backends.{tag}"),
                    "tag must be [a-z0-9_-]",
                ));
            }
            check_base_url(&b.base_url).map_err(|m| InvalidConfig::key(key("base_url"), m))?;
            check_prefixes(&b.allowed_prefixes)
                .map_err(|m| InvalidConfig::key(key("allowed_prefixes"), m))?;
            if let Some(name) = &b.identity {
                if !self.identity.contains_key(name) {
                    return Err(InvalidConfig::key(
                        key("identity"),
                        format!("no [identity.{name}]"),
                    ));
                }
            }
            if b.timeout_ms == 0 {
                return Err(InvalidConfig::key(key("timeout_ms"), "must be > 0"));
            }
            if let Some(cb) = &b.callback {
                check_base_url(&cb.upstream)
                    .map_err(|m| InvalidConfig::key(key("callback.upstream"), m))?;
                check_prefixes(&cb.allowed_prefixes)
                    .map_err(|m| InvalidConfig::key(key("callback.allowed_prefixes"), m))?;
                if cb.keys.is_empty() {
                    return Err(InvalidConfig::key(
                        key("callback.keys"),
                        "needs at least one key",
                    ));
                }
            }
        }
        for (name, caller) in &self.callers {
            for tag in &caller.backends {
                if !self.backends.contains_key(tag) {
                    return Err(InvalidConfig::key(
                        format!("callers.{name}.backends"),
                        format!("no [backends.{tag}]"),
                    ));
                }
            }
        }
        for (name, id) in &self.identity {
            let key = |field: &str| format!("identity.{name}.{field}");
            check_base_url(&id.personal_url)
                .map_err(|m| InvalidConfig::key(key("personal_url"), m))?;
            check_base_url(&id.partner_url)
                .map_err(|m| InvalidConfig::key(key("partner_url"), m))?;
            if id.cache_capacity == 0 || id.cache_ttl_ms == 0 {
                return Err(InvalidConfig::key(
                    key("cache_capacity"),
                    "capacity and ttl must be > 0",
                ));
            }
        }
        Ok(())
    }
}

/// Tags are matched exactly; keeping them to a small alphabet keeps them safe as metric labels.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_base_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("scheme must be http or https".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("needs a host".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query".into());
    }
    Ok(())
}

fn check_prefixes(prefixes: &[String]) -> Result<(), String> {
    if prefixes.is_empty() {
        return Err("needs at least one prefix (use \"/\" to allow every path)".into());
    }
    for p in prefixes {
        if !p.starts_with('/') || p.contains("..") || p.contains('%') {
            return Err(format!("{p:?} must start with '/' and hold no '..' or '%'"));
        }
    }
    Ok(())
}

/// Reads a secret from its inline value or its file; exactly one must be given.
pub fn read_secret(
    key: &str,
    value: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Vec<u8>, InvalidConfig> {
    match (value, file) {
        (Some(v), None) => Ok(v.expose().as_bytes().to_vec()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|s| s.trim().as_bytes().to_vec())
            .map_err(|e| InvalidConfig::key(key, format!("reading {}: {e}", f.display()))),
        _ => Err(InvalidConfig::key(
            key,
            "give exactly one of the value and the file",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: &str) -> BackendConfig {
        BackendConfig {
            base_url: url.into(),
            timeout_ms: 1000,
            allowed_prefixes: vec!["/v1".into()],
            max_body_bytes: None,
            identity: None,
            api_key: None,
            jwt: None,
            callback: None,
        }
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut cfg = ProxyConfig::default();
        cfg.backends.insert("scooter".into(), backend("ftp://x"));
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("backends.scooter.base_url"), "{err}");

        cfg.backends
            .insert("scooter".into(), backend("http://partner.test"));
        cfg.backends.get_mut("scooter").unwrap().identity = Some("nope".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("backends.scooter.identity"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
    }
}
