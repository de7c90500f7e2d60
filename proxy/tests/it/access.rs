//! Internal callers (issue 16 item 2): a credential per caller, stored as its sha256 or read
//! from a secret file; missing or unknown 401, a backend the caller may not use 403, both JSON
//! and counted by caller and backend; the credential never reaches a backend.

// Test plumbing starts servers and clients directly; the clippy.toml bans guard service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use crate::common::*;
use axum::body::Body;
use switchyard_proxy::config::CallerConfig;

const BIKES_TOKEN: &str = "bikes-only-caller-token-42";

/// Backends `scooter` and `bikes`; the harness caller may use both, `bikes-app` only bikes.
async fn setup() -> (Backend, Backend, Proxy, TestClient, tempdir::Dir) {
    let (scooter, scooter_addr) = Backend::start().await;
    let (bikes, bikes_addr) = Backend::start().await;
    let mut bikes_cfg = backend_config(bikes_addr);
    bikes_cfg.allowed_prefixes = vec!["/bikes".into()];
    let mut config = proxy_config(BTreeMap::from([
        ("scooter".to_owned(), backend_config(scooter_addr)),
        ("bikes".to_owned(), bikes_cfg),
    ]));
    let dir = tempdir::Dir::new();
    let file = dir.write("bikes-token", &format!("{BIKES_TOKEN}\n"));
    config.callers.insert(
        "bikes-app".into(),
        CallerConfig {
            token_sha256: None,
            token_file: Some(file),
            backends: vec!["bikes".into()],
        },
    );
    let proxy = start_proxy(config).await;
    (scooter, bikes, proxy, client(), dir)
}

/// A request to the internal listener with exactly the headers given (no harness key).
fn bare(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> http::Request<Body> {
    let mut b = http::Request::get(format!("http://{}{path}", proxy.addr));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

/// A request to backend `tag` as `bikes-app`, with the token from its secret file as a bearer
/// token.
fn as_bikes_app(proxy: &Proxy, tag: &str, path: &str) -> http::Request<Body> {
    let auth = format!("Bearer {BIKES_TOKEN}");
    bare(proxy, path, &[("x-api-tag", tag), ("authorization", &auth)])
}

#[tokio::test]
async fn missing_and_unknown_credentials_are_401() {
    let (scooter, _bikes, proxy, c, _dir) = setup().await;
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("none", vec![("x-api-tag", "scooter")]),
        (
            "unknown key",
            vec![("x-api-tag", "scooter"), ("x-proxy-key", "guessed")],
        ),
        (
            "unknown bearer",
            vec![
                ("x-api-tag", "scooter"),
                ("authorization", "Bearer guessed"),
            ],
        ),
        (
            "the digest instead of the token",
            vec![("x-api-tag", "scooter"), ("x-proxy-key", "")],
        ),
        (
            "basic auth",
            vec![
                ("x-api-tag", "scooter"),
                ("authorization", "Basic dGVzdA=="),
            ],
        ),
    ];
    let digest = switchyard_proxy::sha256_hex(CALLER_TOKEN);
    for (case, mut headers) in cases {
        if case.starts_with("the digest") {
            headers[1].1 = &digest;
        }
        let a = send(&c, bare(&proxy, "/v1/rides", &headers)).await;
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (401, "unauthorized"),
            "{case}"
        );
    }
    assert!(scooter.seen().is_empty());
    let unauthenticated = metric(
        &c,
        proxy.ops_addr,
        "switchyard_proxy_caller_requests_total{caller=\"-\",backend=\"-\",outcome=\"unauthenticated\"}",
    )
    .await;
    assert_eq!(unauthenticated, 5.0);
}

#[tokio::test]
async fn a_caller_reaches_only_its_backends() {
    let (scooter, bikes, proxy, c, _dir) = setup().await;
    let a = send(&c, as_bikes_app(&proxy, "bikes", "/bikes/1")).await;
    assert_eq!(a.status, 200);
    assert_eq!(bikes.seen().len(), 1);
    let req = as_bikes_app(&proxy, "scooter", "/v1/rides");
    send_refused(&c, req, 403, "forbidden").await;
    // Same as an API key.
    send_refused(
        &c,
        bare(
            &proxy,
            "/v1/rides",
            &[("x-api-tag", "scooter"), ("x-proxy-key", BIKES_TOKEN)],
        ),
        403,
        "forbidden",
    )
    .await;
    assert!(scooter.seen().is_empty());
    // The harness caller may use scooter.
    let a = send(&c, get(proxy.addr, "/v1/rides", Some("scooter"), &[])).await;
    assert_eq!(a.status, 200);

    let count = |caller: &str, backend: &str, outcome: &str| {
        format!("switchyard_proxy_caller_requests_total{{caller=\"{caller}\",backend=\"{backend}\",outcome=\"{outcome}\"}}")
    };
    let m = |line: String| {
        let c = c.clone();
        let ops = proxy.ops_addr;
        async move { metric(&c, ops, &line).await }
    };
    assert_eq!(m(count("bikes-app", "bikes", "allowed")).await, 1.0);
    assert_eq!(m(count("bikes-app", "scooter", "forbidden")).await, 2.0);
    assert_eq!(m(count("test", "scooter", "allowed")).await, 1.0);
}

#[tokio::test]
async fn the_callers_credential_never_reaches_a_backend() {
    let (scooter, bikes, proxy, c, _dir) = setup().await;
    let a = send(&c, get(proxy.addr, "/v1/reflect", Some("scooter"), &[])).await;
    assert_eq!(a.status, 200);
    let seen = scooter.last().headers;
    assert!(!seen.contains_key("x-proxy-key"));
    assert!(seen.values().all(|v| !v
        .as_bytes()
        .windows(CALLER_TOKEN.len())
        .any(|w| w == CALLER_TOKEN.as_bytes())));
    let a = send(&c, as_bikes_app(&proxy, "bikes", "/bikes/1")).await;
    assert_eq!(a.status, 200);
    assert!(!bikes.last().headers.contains_key("authorization"));
}

#[test]
fn caller_config_errors_name_the_key() {
    let mut config = proxy_config(BTreeMap::new());
    config
        .callers
        .insert("rides".into(), caller("t", &["nope"]));
    let err = switchyard_proxy::ProxyState::new(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("callers.rides.backends"), "{err}");
    let mut config = proxy_config(BTreeMap::new());
    let mut bad = caller("t", &[]);
    bad.token_sha256 = Some("abc".into());
    config.callers.insert("rides".into(), bad);
    let err = switchyard_proxy::ProxyState::new(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("callers.rides.token_sha256"), "{err}");
}

/// A directory removed when dropped, for secret files.
mod tempdir {
    use std::path::PathBuf;

    pub(crate) struct Dir(PathBuf);

    impl Dir {
        pub(crate) fn new() -> Self {
            let path = std::env::temp_dir().join(format!("proxy-access-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
