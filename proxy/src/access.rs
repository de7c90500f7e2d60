//! Who may use the internal listener: callers by name, each with one credential (kept only as
//! its sha256 digest) and the backend tags it may forward to.

use std::collections::{BTreeMap, HashMap};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use crate::config::{read_secret, CallerConfig, InvalidConfig};
use crate::error::ProxyError;
use crate::metrics::ProxyMetrics;

/// Header an internal caller may send its key in (instead of `Authorization: Bearer`).
pub static X_PROXY_KEY: HeaderName = HeaderName::from_static("x-proxy-key");

/// One configured caller.
pub(crate) struct Caller {
    /// Config name; the metric label.
    pub(crate) name: String,
    /// The backend tags it may use, each with its `allowed` series of the access counter,
    /// resolved once.
    backends: HashMap<String, Counter>,
}

impl Caller {
    /// The `allowed` counter of `tag` when this caller may use it.
    pub(crate) fn may_use(&self, tag: &str) -> Option<&Counter> {
        self.backends.get(tag)
    }
}

/// Every caller by the digest of its credential. Looking a digest up leaks nothing useful
/// through timing: finding a matching digest needs a sha256 preimage.
pub(crate) struct Callers {
    by_digest: HashMap<[u8; 32], Caller>,
}

impl Callers {
    pub(crate) fn new(
        cfg: &BTreeMap<String, CallerConfig>,
        metrics: &ProxyMetrics,
    ) -> Result<Self, InvalidConfig> {
        let mut by_digest = HashMap::new();
        for (name, c) in cfg {
            let key = format!("callers.{name}");
            let digest = match (&c.token_sha256, &c.token_file) {
                (Some(hex), None) => parse_hex_digest(hex).ok_or_else(|| {
                    InvalidConfig::key(format!("{key}.token_sha256"), "must be 64 hex digits")
                })?,
                (None, Some(file)) => {
                    let token = read_secret(&format!("{key}.token_file"), None, Some(file))?;
                    if token.len() < 16 {
                        return Err(InvalidConfig::key(
                            format!("{key}.token_file"),
                            "token needs at least 16 bytes",
                        ));
                    }
                    digest(&token)
                }
                _ => {
                    return Err(InvalidConfig::key(
                        key,
                        "give exactly one of token_sha256 and token_file",
                    ))
                }
            };
            let caller = Caller {
                name: name.clone(),
                backends: c
                    .backends
                    .iter()
                    .map(|tag| (tag.clone(), metrics.access_counter(name, tag, "allowed")))
                    .collect(),
            };
            if by_digest.insert(digest, caller).is_some() {
                return Err(InvalidConfig::key(
                    key,
                    "shares its credential with another caller",
                ));
            }
        }
        Ok(Self { by_digest })
    }

    /// The caller whose credential `headers` carry (`x-proxy-key`, else `Authorization:
    /// Bearer`), and the header it came in, which must not be forwarded.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(&Caller, HeaderName), ProxyError> {
        let (token, header) = match headers.get(&X_PROXY_KEY) {
            Some(v) => (v.as_bytes(), X_PROXY_KEY.clone()),
            None => {
                let bearer = headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .ok_or(ProxyError::Unauthorized(
                        "credential required: x-proxy-key or authorization: Bearer",
                    ))?;
                (bearer.trim().as_bytes(), AUTHORIZATION)
            }
        };
        self.by_digest
            .get(&digest(token))
            .map(|c| (c, header))
            .ok_or(ProxyError::Unauthorized("unknown credential"))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// `sha256(token)` in lowercase hex, the form `token_sha256` takes.
pub fn sha256_hex(token: &str) -> String {
    digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_round_trip_and_bad_ones_are_refused() {
        let hex = sha256_hex("some-caller-token");
        assert_eq!(parse_hex_digest(&hex), Some(digest(b"some-caller-token")));
        assert_eq!(
            parse_hex_digest(&hex.to_uppercase()),
            Some(digest(b"some-caller-token"))
        );
        assert!(parse_hex_digest(&hex[1..]).is_none());
        assert!(parse_hex_digest(&"zz".repeat(32)).is_none());
    }
}
