//! Partner JWTs: short-lived tokens the proxy signs for a backend (HS256 or ES256, `kid` in
//! the header), one per request with a fresh `jti`, and the checks on tokens the partner
//! sends back with callbacks, which may each be used once.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{read_secret, CallbackConfig, InvalidConfig, JwtAlg, JwtSignConfig};
use crate::error::ProxyError;
use crate::replay::{unix_now, Seen};

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
pub(crate) struct SignedClaims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<&'a str>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: &'a str,
}

/// How tokens are signed. HS256 keeps its HMAC key ready (jsonwebtoken derives it again on
/// every call: the two key-pad hashes were a third of a signature's cost); ES256 goes through
/// jsonwebtoken.
enum SignKey {
    Hs256(ring::hmac::Key),
    Other(EncodingKey),
}

/// Signs the tokens sent to a backend: a new token with a new `jti` for every request, as the
/// partner contract says, so the partner can refuse a replayed token.
pub(crate) struct Signer {
    header: Header,
    /// `base64url(header JSON)`, the same for every token.
    header_b64: String,
    key: SignKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl Signer {
    pub(crate) fn new(key_path: &str, cfg: &JwtSignConfig) -> Result<Self, InvalidConfig> {
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
                SignKey::Hs256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
            }
            JwtAlg::ES256 => {
                let file = cfg
                    .private_key_file
                    .as_deref()
                    .ok_or_else(|| InvalidConfig::key(key_path, "ES256 needs private_key_file"))?;
                let pem = std::fs::read(file).map_err(|e| {
                    InvalidConfig::key(key_path, format!("reading {}: {e}", file.display()))
                })?;
                SignKey::Other(
                    EncodingKey::from_ec_pem(&pem)
                        .map_err(|e| InvalidConfig::key(key_path, format!("ES256 key: {e}")))?,
                )
            }
        };
        let mut header = Header::new(cfg.alg.into());
        header.kid = Some(cfg.kid.clone());
        let header_json =
            serde_json::to_vec(&header).map_err(|e| InvalidConfig::key(key_path, e))?;
        Ok(Self {
            header_b64: URL_SAFE_NO_PAD.encode(header_json),
            header,
            key,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl: Duration::from_secs(cfg.ttl_secs.max(1)),
        })
    }

    /// `Bearer <token>` for `sub`, freshly signed (see the type's docs).
    pub(crate) fn bearer(&self, sub: Option<&str>) -> Result<HeaderValue, ProxyError> {
        let mut token = String::with_capacity(320);
        token.push_str("Bearer ");
        self.sign_into(sub, &mut token)?;
        let mut value = HeaderValue::try_from(token).map_err(|e| ProxyError::Internal(e.into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// A token for `sub` (the partner user id) valid from now for the configured ttl.
    #[cfg(test)]
    pub(crate) fn sign(&self, sub: Option<&str>) -> Result<String, ProxyError> {
        let mut token = String::with_capacity(320);
        self.sign_into(sub, &mut token)?;
        Ok(token)
    }

    /// Appends a fresh token for `sub` to `out`.
    fn sign_into(&self, sub: Option<&str>, out: &mut String) -> Result<(), ProxyError> {
        let now = unix_now();
        let mut jti = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let claims = SignedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::now_v7().hyphenated().encode_lower(&mut jti),
        };
        let internal = |e: jsonwebtoken::errors::Error| ProxyError::Internal(Box::new(e));
        match &self.key {
            SignKey::Hs256(key) => {
                let payload = serde_json::to_vec(&claims).map_err(|e| internal(e.into()))?;
                let start = out.len();
                out.push_str(&self.header_b64);
                out.push('.');
                URL_SAFE_NO_PAD.encode_string(payload, out);
                let signature = ring::hmac::sign(key, &out.as_bytes()[start..]);
                out.push('.');
                URL_SAFE_NO_PAD.encode_string(signature.as_ref(), out);
            }
            SignKey::Other(key) => {
                out.push_str(&jsonwebtoken::encode(&self.header, &claims, key).map_err(internal)?);
            }
        }
        Ok(())
    }
}

/// Claims the proxy reads from a partner's callback token.
#[derive(Debug, Deserialize)]
pub(crate) struct CallbackClaims {
    #[serde(default)]
    pub sub: Option<String>,
    /// Required: the key the token is remembered by until it expires.
    #[serde(default)]
    pub jti: Option<String>,
    pub exp: u64,
}

/// Longest a callback token may still be valid for when it arrives; it bounds how long a `jti`
/// is remembered.
pub(crate) const MAX_CALLBACK_TOKEN_LIFETIME: Duration = Duration::from_secs(3_600);
/// Longest `jti` accepted (bounds what the replay memory holds per token).
const MAX_JTI_LEN: usize = 128;

struct VerifyKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks partner tokens: known `kid`, that key's algorithm only, signature, `exp`, `nbf`,
/// `iss`, `aud`, and a `jti` not seen before while the token is still valid.
pub(crate) struct Verifier {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    leeway: u64,
    /// The `jti`s already used, in this process or shared by every replica.
    seen: Seen,
}

impl Verifier {
    /// A verifier of `cfg`'s keys that remembers used tokens in `seen`.
    pub(crate) fn new(
        key_path: &str,
        cfg: &CallbackConfig,
        seen: Seen,
    ) -> Result<Self, InvalidConfig> {
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
            seen,
        })
    }

    /// Validates `Authorization: Bearer <token>`; every failure is a 401. The caller then
    /// [`use_up`](Self::use_up)s the token once the request is known to be routable, so a
    /// refused path does not burn the partner's token.
    pub(crate) fn verify(
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
        let claims = jsonwebtoken::decode::<CallbackClaims>(token, &key.key, &validation)
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
            })?;
        Ok(claims)
    }

    /// Remembers the token's `jti` until it expires; a second use is a 401 (a full local
    /// replay memory or an unreachable shared store a 503). Only called on tokens
    /// [`verify`](Self::verify) passed, so nobody without the partner's key can fill it.
    pub(crate) async fn use_up(&self, claims: &CallbackClaims) -> Result<(), ProxyError> {
        let jti = claims
            .jti
            .as_deref()
            .filter(|j| !j.is_empty())
            .ok_or(ProxyError::Unauthorized("missing claim jti"))?;
        if jti.len() > MAX_JTI_LEN {
            return Err(ProxyError::Unauthorized("jti too long"));
        }
        let until = claims.exp.saturating_add(self.leeway);
        if until > unix_now() + MAX_CALLBACK_TOKEN_LIFETIME.as_secs() {
            return Err(ProxyError::Unauthorized("token lives too long"));
        }
        if self.seen.first_use(jti, until).await? {
            Ok(())
        } else {
            Err(ProxyError::Unauthorized("token already used"))
        }
    }
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

    /// Callbacks from issuer `talaria` to audience `partner`, checked with `keys`.
    fn callback_cfg(keys: Vec<VerifyKeyConfig>) -> CallbackConfig {
        CallbackConfig {
            upstream: "http://x".into(),
            allowed_prefixes: vec!["/".into()],
            issuer: "talaria".into(),
            audience: "partner".into(),
            leeway_secs: 0,
            timeout_ms: 1000,
            keys,
        }
    }

    #[tokio::test]
    async fn signed_tokens_verify_with_the_same_settings() {
        let signer = Signer::new("jwt", &sign_cfg()).unwrap();
        let token = signer.sign(Some("user-1")).unwrap();
        let verifier = Verifier::new(
            "cb",
            &callback_cfg(vec![VerifyKeyConfig {
                kid: "k1".into(),
                alg: JwtAlg::HS256,
                secret: Some(Secret::new(SECRET)),
                secret_file: None,
                public_key_file: None,
            }]),
            Seen::local(),
        )
        .unwrap();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let claims = verifier.verify(Some(&value)).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("user-1"));
        assert!(verifier.verify(None).is_err());
        verifier.use_up(&claims).await.unwrap();
        // The same token a second time is a replay.
        let claims = verifier.verify(Some(&value)).unwrap();
        let replay = verifier.use_up(&claims).await.unwrap_err();
        assert_eq!(replay.to_string(), "token already used");
        // A new token for the same user carries a new jti and passes.
        let again = signer.sign(Some("user-1")).unwrap();
        assert_ne!(again, token);
        let value = HeaderValue::from_str(&format!("Bearer {again}")).unwrap();
        let claims = verifier.verify(Some(&value)).unwrap();
        assert!(verifier.use_up(&claims).await.is_ok());
    }

    /// Threads racing one token: exactly one of them uses it up, every time.
    #[test]
    fn concurrent_uses_of_one_token_let_exactly_one_through() {
        let verifier =
            std::sync::Arc::new(Verifier::new("cb", &callback_cfg(vec![]), Seen::local()).unwrap());
        let exp = unix_now() + 60;
        for round in 0..200 {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let passed: usize = (0..4)
                .map(|_| {
                    let (verifier, barrier) = (verifier.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let claims = CallbackClaims {
                            sub: None,
                            exp,
                            jti: Some(format!("jti-{round}")),
                        };
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .unwrap();
                        barrier.wait();
                        rt.block_on(verifier.use_up(&claims)).is_ok()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum();
            assert_eq!(passed, 1, "round {round}");
        }
    }

    #[test]
    fn every_signed_token_has_its_own_jti() {
        let signer = Signer::new("jwt", &sign_cfg()).unwrap();
        let jti = |t: String| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_audience(&["partner"]);
            jsonwebtoken::decode::<serde_json::Value>(
                &t,
                &DecodingKey::from_secret(SECRET.as_bytes()),
                &v,
            )
            .unwrap()
            .claims["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let a = jti(signer.sign(Some("u")).unwrap());
        let b = jti(signer.sign(Some("u")).unwrap());
        assert_ne!(a, b);
    }

    /// The HS256 path signs exactly what jsonwebtoken would: same header, claims, signature.
    #[test]
    fn hs256_tokens_are_what_jsonwebtoken_signs() {
        let signer = Signer::new("jwt", &sign_cfg()).unwrap();
        let token = signer.sign(Some("user-7")).unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["partner"]);
        v.set_issuer(&["talaria"]);
        let key = DecodingKey::from_secret(SECRET.as_bytes());
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        let claims = &data.claims;
        let field = |k: &str| claims[k].as_str().unwrap();
        let second = |k: &str| claims[k].as_u64().unwrap();
        let same = SignedClaims {
            iss: field("iss"),
            aud: field("aud"),
            sub: Some(field("sub")),
            iat: second("iat"),
            nbf: second("nbf"),
            exp: second("exp"),
            jti: field("jti"),
        };
        let expected = jsonwebtoken::encode(
            &signer.header,
            &same,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(token, expected);
        assert_eq!(claims["sub"], "user-7");
        assert_eq!(
            claims["exp"].as_u64(),
            Some(claims["iat"].as_u64().unwrap() + 60)
        );
        assert_eq!(claims["jti"].as_str().map(str::len), Some(36));
        let bearer = signer.bearer(None).unwrap();
        let bearer = bearer.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(bearer, &key, &v).unwrap();
        assert!(data.claims.get("sub").is_none());
    }

    #[test]
    fn short_hs256_secrets_are_refused() {
        let mut cfg = sign_cfg();
        cfg.secret = Some(Secret::new("short"));
        assert!(Signer::new("jwt", &cfg).is_err());
    }
}
