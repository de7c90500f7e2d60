//! Partner JWTs: tokens the proxy signs (HS256, ES256) checked as the partner would, and
//! every rejection of the partner's callback tokens.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;
use axum::body::Body;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use switchyard_proxy::config::{
    BackendConfig, CallbackConfig, IdentityConfig, JwtAlg, JwtSignConfig, Secret, VerifyKeyConfig,
};

const HS_SECRET: &str = "hs256-shared-secret-for-tests-0123456789";
pub(crate) const PARTNER_HS_SECRET: &str = "partner-callback-secret-0123456789abcd";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign_config(alg: JwtAlg) -> JwtSignConfig {
    JwtSignConfig {
        alg,
        kid: format!("proxy-{alg:?}"),
        secret: (alg == JwtAlg::HS256).then(|| Secret::new(HS_SECRET)),
        secret_file: None,
        private_key_file: (alg == JwtAlg::ES256).then(|| fixture("proxy_es256_private.pem")),
        issuer: "talaria-proxy".into(),
        audience: "scooter-partner".into(),
        ttl_secs: 30,
        header: "authorization".into(),
    }
}

async fn signing_setup(alg: JwtAlg) -> (Backend, Proxy, TestClient) {
    let (_lookups, lookups_addr) = Lookups::start().await;
    let (backend, backend_addr) = Backend::start().await;
    let mut cfg = backend_config(backend_addr);
    cfg.identity = Some("scooter".into());
    cfg.jwt = Some(sign_config(alg));
    let mut config = proxy_config(BTreeMap::from([("scooter".to_owned(), cfg)]));
    let identity: IdentityConfig = identity_config(lookups_addr);
    config.identity.insert("scooter".into(), identity);
    (backend, start_proxy(config).await, client())
}

/// What the partner does with our token: pick the key by `kid`, check alg, claims, signature.
fn partner_verifies(authorization: &str, alg: Algorithm, key: &DecodingKey) -> serde_json::Value {
    let token = authorization.strip_prefix("Bearer ").expect("bearer");
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, alg);
    assert_eq!(
        header.kid.as_deref(),
        Some(format!("proxy-{alg:?}").as_str())
    );
    let mut v = Validation::new(alg);
    v.set_issuer(&["talaria-proxy"]);
    v.set_audience(&["scooter-partner"]);
    v.validate_nbf = true;
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &v)
        .unwrap()
        .claims;
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 30, "short-lived");
    claims
}

/// Sends a ride for `phone_id` through the proxy and returns the `authorization` the backend got.
async fn signed_for(c: &TestClient, proxy: &Proxy, backend: &Backend, phone_id: &str) -> String {
    let a = send(
        c,
        get(
            proxy.addr,
            "/v1/rides",
            Some("scooter"),
            &[("x-yataxi-phoneid", phone_id)],
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    backend.last().headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn hs256_token_carries_the_partner_user_id() {
    let (backend, proxy, c) = signing_setup(JwtAlg::HS256).await;
    let key = DecodingKey::from_secret(HS_SECRET.as_bytes());
    let auth = signed_for(&c, &proxy, &backend, "j1").await;
    let claims = partner_verifies(&auth, Algorithm::HS256, &key);
    assert_eq!(claims["sub"], user_of("j1"));
    // Signed with another secret, the partner would refuse it.
    let token = auth.strip_prefix("Bearer ").unwrap();
    let wrong = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(b"some-other-secret-some-other-secret"),
        &Validation::new(Algorithm::HS256),
    );
    assert!(wrong.is_err());
    // Every request gets a freshly signed token with its own jti, also for the same user
    // (issue 16 item 3; this assertion used to require the token to be reused).
    let again = signed_for(&c, &proxy, &backend, "j1").await;
    assert_ne!(again, auth);
    let again_claims = partner_verifies(&again, Algorithm::HS256, &key);
    assert_eq!(again_claims["sub"], user_of("j1"));
    assert_ne!(again_claims["jti"], claims["jti"]);
    let other = signed_for(&c, &proxy, &backend, "j1-other").await;
    assert_ne!(other, auth);
    assert_eq!(
        partner_verifies(&other, Algorithm::HS256, &key)["sub"],
        user_of("j1-other")
    );
}

#[tokio::test]
async fn es256_token_verifies_with_the_public_key_and_replaces_client_authorization() {
    let (backend, proxy, c) = signing_setup(JwtAlg::ES256).await;
    let a = send(
        &c,
        get(
            proxy.addr,
            "/v1/rides",
            Some("scooter"),
            &[
                ("x-yataxi-phoneid", "j2"),
                ("authorization", "Bearer client-token"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = backend.last().headers;
    assert_eq!(seen.get_all("authorization").iter().count(), 1);
    let auth = seen["authorization"].to_str().unwrap().to_owned();
    let public = std::fs::read(fixture("proxy_es256_public.pem")).unwrap();
    let claims = partner_verifies(
        &auth,
        Algorithm::ES256,
        &DecodingKey::from_ec_pem(&public).unwrap(),
    );
    assert_eq!(claims["sub"], user_of("j2"));
}

async fn callback_setup() -> (Backend, Proxy, TestClient) {
    let (internal, internal_addr) = Backend::start().await;
    let (_partner, partner_addr) = Backend::start().await;
    let config = proxy_config(BTreeMap::from([(
        "scooter".to_owned(),
        callback_backend(partner_addr, internal_addr),
    )]));
    (internal, start_proxy(config).await, client())
}

/// Backend `partner` whose partner calls back (ES256 key `partner-es`, HS256 key
/// `partner-hs`) to `internal` under `/rides`.
pub(crate) fn callback_backend(
    partner: std::net::SocketAddr,
    internal: std::net::SocketAddr,
) -> BackendConfig {
    let (partner_addr, internal_addr) = (partner, internal);
    let mut cfg = backend_config(partner_addr);
    cfg.callback = Some(CallbackConfig {
        upstream: format!("http://{internal_addr}/internal"),
        allowed_prefixes: vec!["/rides".into()],
        issuer: "scooter-partner".into(),
        audience: "talaria".into(),
        leeway_secs: 0,
        timeout_ms: 2_000,
        keys: vec![
            VerifyKeyConfig {
                kid: "partner-es".into(),
                alg: JwtAlg::ES256,
                secret: None,
                secret_file: None,
                public_key_file: Some(fixture("partner_es256_public.pem")),
            },
            VerifyKeyConfig {
                kid: "partner-hs".into(),
                alg: JwtAlg::HS256,
                secret: Some(Secret::new(PARTNER_HS_SECRET)),
                secret_file: None,
                public_key_file: None,
            },
        ],
    });
    cfg
}

fn es_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

pub(crate) fn token(
    alg: Algorithm,
    kid: &str,
    key: &EncodingKey,
    claims: serde_json::Value,
) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// Valid claims with a `jti` of their own (a token is single-use).
pub(crate) fn good_claims() -> serde_json::Value {
    let now = now();
    let jti = uuid::Uuid::new_v4().to_string();
    json!({"iss": "scooter-partner", "aud": "talaria", "sub": "ride-42", "iat": now, "nbf": now - 1, "exp": now + 60, "jti": jti})
}

pub(crate) fn with(
    mut claims: serde_json::Value,
    key: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    claims[key] = value;
    claims
}

pub(crate) fn callback(
    proxy: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> http::Request<Body> {
    let mut b = http::Request::post(format!("http://{proxy}{path}"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from("{\"state\":\"finished\"}")).unwrap()
}

#[tokio::test]
async fn valid_callbacks_reach_the_internal_upstream() {
    let (internal, proxy, c) = callback_setup().await;
    let es = token(
        Algorithm::ES256,
        "partner-es",
        &es_key("partner_es256_private.pem"),
        good_claims(),
    );
    let a = send(
        &c,
        callback(
            proxy.partner_addr,
            "/callbacks/scooter/rides/42?x=1",
            Some(&es),
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let seen = internal.last();
    assert_eq!(seen.path_and_query, "/internal/rides/42?x=1");
    assert_eq!(seen.headers["x-partner-subject"], "ride-42");
    assert_eq!(seen.headers["x-partner-tag"], "scooter");
    assert!(
        !seen.headers.contains_key("authorization"),
        "partner token forwarded inside"
    );
    assert_eq!(seen.body_len, 20);

    let hs = token(
        Algorithm::HS256,
        "partner-hs",
        &EncodingKey::from_secret(PARTNER_HS_SECRET.as_bytes()),
        good_claims(),
    );
    let a = send(
        &c,
        callback(proxy.partner_addr, "/callbacks/scooter/rides/43", Some(&hs)),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(internal.seen().len(), 2);
    // A valid token does not widen the allowed paths.
    let req = callback(proxy.partner_addr, "/callbacks/scooter/admin", Some(&hs));
    send_refused(&c, req, 404, "path_not_allowed").await;
    assert_eq!(internal.seen().len(), 2);
}

#[tokio::test]
async fn every_bad_callback_token_is_a_401() {
    let (internal, proxy, c) = callback_setup().await;
    let es = es_key("partner_es256_private.pem");
    let hs = EncodingKey::from_secret(PARTNER_HS_SECRET.as_bytes());
    let now = now();
    // alg none: header {"alg":"none","kid":"partner-hs"}, valid claims, empty signature.
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "partner-hs", "typ": "JWT"})),
        b64(&good_claims())
    );
    // HS256 signed with the ES256 public key as secret, claiming the ES key id (alg confusion).
    let public_pem = std::fs::read(fixture("partner_es256_public.pem")).unwrap();
    let confused = token(
        Algorithm::HS256,
        "partner-es",
        &EncodingKey::from_secret(&public_pem),
        good_claims(),
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("not.a.jwt".into())),
        ("alg none", Some(none)),
        ("alg confusion", Some(confused)),
        (
            "expired",
            Some(token(
                Algorithm::HS256,
                "partner-hs",
                &hs,
                with(good_claims(), "exp", json!(now - 120)),
            )),
        ),
        (
            "not yet valid",
            Some(token(
                Algorithm::HS256,
                "partner-hs",
                &hs,
                with(good_claims(), "nbf", json!(now + 600)),
            )),
        ),
        (
            "wrong issuer",
            Some(token(
                Algorithm::ES256,
                "partner-es",
                &es,
                with(good_claims(), "iss", json!("someone-else")),
            )),
        ),
        (
            "wrong audience",
            Some(token(
                Algorithm::ES256,
                "partner-es",
                &es,
                with(good_claims(), "aud", json!("other-service")),
            )),
        ),
        (
            "wrong ES key",
            Some(token(
                Algorithm::ES256,
                "partner-es",
                &es_key("other_es256_private.pem"),
                good_claims(),
            )),
        ),
        (
            "wrong HS secret",
            Some(token(
                Algorithm::HS256,
                "partner-hs",
                &EncodingKey::from_secret(b"guessed-secret-guessed-secret-000"),
                good_claims(),
            )),
        ),
        (
            "unknown kid",
            Some(token(Algorithm::HS256, "partner-xx", &hs, good_claims())),
        ),
        (
            "no jti",
            Some(token(
                Algorithm::HS256,
                "partner-hs",
                &hs,
                json!({"iss": "scooter-partner", "aud": "talaria", "exp": now + 60}),
            )),
        ),
        (
            "lives longer than an hour",
            Some(token(
                Algorithm::HS256,
                "partner-hs",
                &hs,
                with(good_claims(), "exp", json!(now + 7_200)),
            )),
        ),
        (
            "no exp",
            Some(token(
                Algorithm::HS256,
                "partner-hs",
                &hs,
                json!({"iss": "scooter-partner", "aud": "talaria"}),
            )),
        ),
    ];
    for (case, token) in cases {
        let a = send(
            &c,
            callback(
                proxy.partner_addr,
                "/callbacks/scooter/rides/1",
                token.as_deref(),
            ),
        )
        .await;
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (401, "unauthorized"),
            "{case}"
        );
    }
    assert!(
        internal.seen().is_empty(),
        "a bad token reached the upstream"
    );
}

#[tokio::test]
async fn callbacks_for_backends_without_callbacks_are_404() {
    let (internal, proxy, c) = callback_setup().await;
    let req = callback(proxy.partner_addr, "/callbacks/trains/rides/1", None);
    send_refused(&c, req, 404, "unknown_tag").await;
    assert!(internal.seen().is_empty());
}

/// A callback token is single-use: the same token again is refused until it expires, while a
/// new token (new `jti`) with the same claims passes.
#[tokio::test]
async fn a_replayed_callback_token_is_refused() {
    let (internal, proxy, c) = callback_setup().await;
    let hs = EncodingKey::from_secret(PARTNER_HS_SECRET.as_bytes());
    let first = token(Algorithm::HS256, "partner-hs", &hs, good_claims());
    let a = send(
        &c,
        callback(
            proxy.partner_addr,
            "/callbacks/scooter/rides/1",
            Some(&first),
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    for path in ["/callbacks/scooter/rides/1", "/callbacks/scooter/rides/2"] {
        let a = send_refused(
            &c,
            callback(proxy.partner_addr, path, Some(&first)),
            401,
            "unauthorized",
        )
        .await;
        assert!(a.json()["message"]
            .as_str()
            .unwrap()
            .contains("already used"));
    }
    assert_eq!(internal.seen().len(), 1, "a replay reached the upstream");
    // Concurrent replays of one fresh token: exactly one gets through.
    let fresh = token(Algorithm::HS256, "partner-hs", &hs, good_claims());
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let (c, t, addr) = (c.clone(), fresh.clone(), proxy.partner_addr);
            tokio::spawn(async move {
                send(&c, callback(addr, "/callbacks/scooter/rides/3", Some(&t)))
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(internal.seen().len(), 2);
}
