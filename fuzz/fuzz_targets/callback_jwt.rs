//! The partner-callback token check. Any `Authorization` value is a pass or a 401 reason,
//! never a panic; and claims signed with the right key (the fuzzer writes the claims) pass
//! only when issuer, audience and expiry hold.
#![no_main]

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_proxy::fuzzing::Callbacks;

const SECRET: &str = "fuzzing-secret-0123456789abcdef0123";
static VERIFIER: LazyLock<Callbacks> =
    LazyLock::new(|| Callbacks::hs256(SECRET, "partner", "talaria"));

fuzz_target!(|data: &[u8]| {
    let Some((mode, data)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(value) = http::HeaderValue::from_bytes(data) {
            let _ = VERIFIER.verify(&value);
        }
        return;
    }
    let Ok(claims) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let Ok(token) = encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    ) else {
        return;
    };
    let value = http::HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is ASCII");
    if let Ok(sub) = VERIFIER.verify(&value) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(claims["iss"], "partner", "{claims}");
        let aud_ok = claims["aud"] == "talaria"
            || claims["aud"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "talaria"));
        assert!(aud_ok, "{claims}");
        assert!(claims["exp"].as_u64().is_some_and(|e| e > now), "{claims}");
        assert_eq!(sub.as_deref(), claims["sub"].as_str(), "{claims}");
    }
});
