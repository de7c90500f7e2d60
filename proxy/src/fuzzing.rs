//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing`: the
//! request-framing sniffer, the path guard and the callback-token verifier, each exactly as a
//! request meets them.

use http::HeaderValue;

use crate::config::{CallbackConfig, JwtAlg, Secret, VerifyKeyConfig};
use crate::framing::{FramingFlag, Sniffer};
use crate::jwt::Verifier;

/// Feeds `chunks` to a connection's sniffer in order; whether it flagged ambiguous framing.
pub fn framing_flagged<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let flag = FramingFlag::default();
    let mut sniffer = Sniffer::new(flag.clone());
    for chunk in chunks {
        sniffer.feed(chunk);
    }
    flag.is_ambiguous()
}

/// The decoded path the proxy would forward, or why it refuses `raw`.
pub fn check_path(raw: &str) -> Result<String, String> {
    crate::guard::check_path(raw).map_err(|e| e.to_string())
}

/// A callback verifier with one HS256 key (`kid` "k1").
pub struct Callbacks(Verifier);

impl Callbacks {
    pub fn hs256(secret: &str, issuer: &str, audience: &str) -> Self {
        let cfg = CallbackConfig {
            upstream: "http://127.0.0.1:1".into(),
            allowed_prefixes: vec!["/".into()],
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: 0,
            timeout_ms: 1000,
            keys: vec![VerifyKeyConfig {
                kid: "k1".into(),
                alg: JwtAlg::HS256,
                secret: Some(Secret::new(secret)),
                secret_file: None,
                public_key_file: None,
            }],
        };
        Self(
            Verifier::new("fuzz", &cfg, crate::replay::Seen::local()).expect("a valid fuzzing key"),
        )
    }

    /// The token's subject if `authorization` passes every check, else the 401's reason.
    pub fn verify(&self, authorization: &HeaderValue) -> Result<Option<String>, String> {
        self.0
            .verify(Some(authorization))
            .map(|claims| claims.sub)
            .map_err(|e| e.to_string())
    }
}
