//! Partner JWTs: short-lived tokens the proxy signs for a backend (HS256 or ES256, `kid` in
//! the header) and the checks on tokens the partner sends back with callbacks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use moka::future::Cache;
use serde::{Deserialize, Serialize};

use crate::config::{read_secret, CallbackConfig, InvalidConfig, JwtAlg, JwtSignConfig};
use crate::error::ProxyError;

impl From<JwtAlg> for Algorithm {
    fn from(alg: JwtAlg) -> Self {
        match alg {
            JwtAlg::HS256 => Algorithm::HS256,
            JwtAlg::ES256 => Algorithm::ES256,
        }
    }
}

/// Claims of the tokens the proxy signs.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignedClaims {
    pub iss: String,
    pub aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Signs the tokens sent to a backend. A token is reused for the same `sub` during the first
/// half of its life, so it always has at least half its TTL left when it reaches the partner
/// and the hot path does not sign per request.
pub struct Signer {
    header: Header,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl: Duration,
    reuse: Cache<String, HeaderValue>,
}

impl Signer {
    pub fn new(key_path: &str, cfg: &JwtSignConfig) -> Result<Self, InvalidConfig> {
        let key = match cfg.alg {
            JwtAlg::HS256 => {
                let secret =
                    read_secret(key_path, cfg.secret.as_ref(), cfg.secret_file.as_deref())?;
                if secret.len() < 32 {
                    return Err(InvalidConfig::key(
                        key_path,
                        "HS256 secret needs at least 32 bytes",
                    ));
                }
                EncodingKey::from_secret(&secret)
            }
            JwtAlg::ES256 => {
                let file = cfg
                    .private_key_file
                    .as_deref()
                    .ok_or_else(|| InvalidConfig::key(key_path, "ES256 needs private_key_file"))?;
                let pem = std::fs::read(file).map_err(|e| {
                    InvalidConfig::key(key_path, format!("reading {}: {e}", file.display()))
                })?;
                EncodingKey::from_ec_pem(&pem)
                    .map_err(|e| InvalidConfig::key(key_path, format!("ES256 key: {e}")))?
            }
        };
        let mut header = Header::new(cfg.alg.into());
        header.kid = Some(cfg.kid.clone());
        Ok(Self {
            header,
            key,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl: Duration::from_secs(cfg.ttl_secs.max(1)),
            reuse: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_millis(cfg.ttl_secs.max(1) * 500))
                .build(),
        })
    }

    /// `Bearer <token>` for `sub`, freshly signed or reused (see the type's docs).
    pub async fn bearer(&self, sub: Option<&str>) -> Result<HeaderValue, ProxyError> {
        let key = sub.unwrap_or_default();
        if let Some(value) = self.reuse.get(key).await {
            return Ok(value);
        }
        let value = HeaderValue::try_from(format!("Bearer {}", self.sign(sub)?))
            .map_err(|e| ProxyError::Internal(e.into()))?;
        let mut stored = value.clone();
        stored.set_sensitive(true);
        self.reuse.insert(key.to_owned(), stored).await;
        Ok(value)
    }

    /// A token for `sub` (the partner user id) valid from now for the configured ttl.
    pub fn sign(&self, sub: Option<&str>) -> Result<String, ProxyError> {
        let now = unix_now();
        let claims = SignedClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.map(str::to_owned),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| ProxyError::Internal(Box::new(e)))
    }
}

/// Claims the proxy reads from a partner's callback token.
#[derive(Debug, Deserialize)]
pub struct CallbackClaims {
    #[serde(default)]
    pub sub: Option<String>,
}

struct VerifyKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks partner tokens: known `kid`, that key's algorithm only, signature, `exp`, `nbf`,
/// `iss` and `aud`.
pub struct Verifier {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl Verifier {
    pub fn new(key_path: &str, cfg: &CallbackConfig) -> Result<Self, InvalidConfig> {
        let mut keys = Vec::with_capacity(cfg.keys.len());
        for (i, k) in cfg.keys.iter().enumerate() {
            let path = format!("{key_path}.keys[{i}]");
            let key = match k.alg {
                JwtAlg::HS256 => {
                    let secret = read_secret(&path, k.secret.as_ref(), k.secret_file.as_deref())?;
                    DecodingKey::from_secret(&secret)
                }
                JwtAlg::ES256 => {
                    let file = k
                        .public_key_file
                        .as_deref()
                        .ok_or_else(|| InvalidConfig::key(&path, "ES256 needs public_key_file"))?;
                    let pem = std::fs::read(file).map_err(|e| {
                        InvalidConfig::key(&path, format!("reading {}: {e}", file.display()))
                    })?;
                    DecodingKey::from_ec_pem(&pem)
                        .map_err(|e| InvalidConfig::key(&path, format!("ES256 key: {e}")))?
                }
            };
            keys.push(VerifyKey {
                kid: k.kid.clone(),
                alg: k.alg.into(),
                key,
            });
        }
        Ok(Self {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
        })
    }

    /// Validates `Authorization: Bearer <token>`; every failure is a 401.
    pub fn verify(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<CallbackClaims, ProxyError> {
        let token = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ProxyError::Unauthorized("bearer token required"))?
            .trim();
        // `alg: none` and unknown algorithms fail right here: jsonwebtoken has no such variant.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ProxyError::Unauthorized("malformed token or unsupported alg"))?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| &k.kid == kid),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(ProxyError::Unauthorized("unknown key id"))?;
        if header.alg != key.alg {
            return Err(ProxyError::Unauthorized(
                "algorithm not allowed for this key",
            ));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        jsonwebtoken::decode::<CallbackClaims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                ProxyError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not yet valid",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "missing claim",
                    _ => "invalid token",
                })
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, VerifyKeyConfig};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn sign_cfg() -> JwtSignConfig {
        JwtSignConfig {
            alg: JwtAlg::HS256,
            kid: "k1".into(),
            secret: Some(Secret::new(SECRET)),
            secret_file: None,
            private_key_file: None,
            issuer: "talaria".into(),
            audience: "partner".into(),
            ttl_secs: 60,
            header: "authorization".into(),
        }
    }

    #[test]
    fn signed_tokens_verify_with_the_same_settings() {
        let signer = Signer::new("jwt", &sign_cfg()).unwrap();
        let token = signer.sign(Some("user-1")).unwrap();
        let verifier = Verifier::new(
            "cb",
            &CallbackConfig {
                upstream: "http://x".into(),
                allowed_prefixes: vec!["/".into()],
                issuer: "talaria".into(),
                audience: "partner".into(),
                leeway_secs: 0,
                timeout_ms: 1000,
                keys: vec![VerifyKeyConfig {
                    kid: "k1".into(),
                    alg: JwtAlg::HS256,
                    secret: Some(Secret::new(SECRET)),
                    secret_file: None,
                    public_key_file: None,
                }],
            },
        )
        .unwrap();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let claims = verifier.verify(Some(&value)).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("user-1"));
        assert!(verifier.verify(None).is_err());
    }

    #[test]
    fn short_hs256_secrets_are_refused() {
        let mut cfg = sign_cfg();
        cfg.secret = Some(Secret::new("short"));
        assert!(Signer::new("jwt", &cfg).is_err());
    }
}
