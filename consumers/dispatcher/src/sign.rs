//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing key; `whsec_<base64>` secrets are decoded, anything else is used as raw bytes.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub fn from_secret(secret: &str) -> Self {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .unwrap_or_else(|| secret.as_bytes().to_vec());
        Self(key)
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    /// True when any `v1,` signature in `header` matches (constant-time compare).
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .any(|sig| {
                let Ok(raw) = STANDARD.decode(sig) else {
                    return false;
                };
                let mut mac = self.hmac();
                feed(&mut mac, id, timestamp, body);
                mac.verify_slice(&raw).is_ok()
            })
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac accepts any key length")
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = self.hmac();
        feed(&mut mac, id, timestamp, body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// The `webhook-signature` header value signed with every key, space-separated (the
/// specification's form for a secret being rotated).
pub fn sign_all(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

fn feed(mac: &mut Hmac<Sha256>, id: &str, timestamp: i64, body: &[u8]) {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test suite.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body, &sig));
        assert!(!key.verify("msg_other", 1_614_265_330, body, &sig));
    }

    #[test]
    fn a_rotating_secret_signs_with_each_key_and_either_verifies() {
        let old = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let new = SigningKey::from_secret("whsec_bmV3LXNlY3JldC1mb3Itcm90YXRpb24=");
        let body = br#"{"test": 1}"#;
        let header = sign_all(&[old.clone(), new.clone()], "msg_1", 1_700_000_000, body);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[0], old.sign("msg_1", 1_700_000_000, body));
        assert_eq!(parts[1], new.sign("msg_1", 1_700_000_000, body));
        assert!(old.verify("msg_1", 1_700_000_000, body, &header));
        assert!(new.verify("msg_1", 1_700_000_000, body, &header));
        let stranger = SigningKey::from_secret("whsec_c3RyYW5nZXI=");
        assert!(!stranger.verify("msg_1", 1_700_000_000, body, &header));
    }
}
