//! Three listeners, three rule sets (issue 16 item 2): internal forwarding, partner callbacks
//! and ops each answer only their own routes, and every attempt to use one listener's route on
//! another is refused without reaching a backend or upstream.

// Test plumbing starts servers and clients directly; the clippy.toml bans guard service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::common::*;
use crate::jwt::{callback_backend, good_claims, token, PARTNER_HS_SECRET};
use axum::body::Body;
use jsonwebtoken::{Algorithm, EncodingKey};
use switchyard_proxy::config::ProxyConfig;

/// The partner backend, the internal callback upstream, and a proxy with one backend that
/// also takes callbacks.
async fn setup() -> (Backend, Backend, Proxy, TestClient) {
    let (partner, partner_addr) = Backend::start().await;
    let (internal, internal_addr) = Backend::start().await;
    let cfg = callback_backend(partner_addr, internal_addr);
    let config = proxy_config(BTreeMap::from([("scooter".to_owned(), cfg)]));
    (partner, internal, start_proxy(config).await, client())
}

/// A valid, fresh partner token.
fn partner_token() -> String {
    let key = EncodingKey::from_secret(PARTNER_HS_SECRET.as_bytes());
    token(Algorithm::HS256, "partner-hs", &key, good_claims())
}

fn callback(addr: SocketAddr, path: &str) -> http::Request<Body> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {}", partner_token()))
        .body(Body::from("{}"))
        .unwrap()
}

#[tokio::test]
async fn each_listener_serves_its_own_routes() {
    let (partner, internal, proxy, c) = setup().await;
    let a = send(&c, get(proxy.addr, "/v1/rides", Some("scooter"), &[])).await;
    assert_eq!(a.status, 200);
    assert_eq!(partner.seen().len(), 1);
    let a = send(
        &c,
        callback(proxy.partner_addr, "/callbacks/scooter/rides/1"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(internal.last().path_and_query, "/internal/rides/1");
    let a = send(&c, get(proxy.ops_addr, "/_proxy/ping", None, &[])).await;
    assert_eq!((a.status, a.body.as_ref()), (200, b"pong".as_ref()));
    let a = send(&c, get(proxy.ops_addr, "/_proxy/metrics", None, &[])).await;
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.body).contains("switchyard_proxy_requests_total"));
}

#[tokio::test]
async fn every_cross_listener_attempt_is_refused() {
    let (partner, internal, proxy, c) = setup().await;
    // Every one of these is a 404 on that port with and without a tag (`get` sends the harness
    // caller's key).
    let not_found = [
        // Internal port: no ops endpoints.
        (proxy.addr, "/_proxy/metrics"),
        (proxy.addr, "/_proxy/ping"),
        // Partner port: no forwarding by tag, no ops endpoints, even with the internal
        // credential.
        (proxy.partner_addr, "/v1/rides"),
        (proxy.partner_addr, "/_proxy/metrics"),
        (proxy.partner_addr, "/_proxy/ping"),
        (proxy.partner_addr, "/"),
        // Ops port: no forwarding, and a callback path is not one of its routes.
        (proxy.ops_addr, "/v1/rides"),
        (proxy.ops_addr, "/callbacks/scooter/rides/1"),
    ];
    for (addr, path) in not_found {
        for tag in [None, Some("scooter")] {
            send_refused(&c, get(addr, path, tag, &[]), 404, "not_found").await;
        }
    }
    // Internal port: no callbacks (a callback without a tag names no backend; with the tag it
    // is a path the backend does not allow). A valid partner JWT is not an internal credential
    // (these requests carry no harness key).
    let req = callback(proxy.addr, "/callbacks/scooter/rides/1");
    send_refused(&c, req, 401, "unauthorized").await;
    let mut forward = callback(proxy.addr, "/v1/rides");
    forward
        .headers_mut()
        .insert("x-api-tag", http::HeaderValue::from_static("scooter"));
    send_refused(&c, forward, 401, "unauthorized").await;
    // With the internal credential a callback path still names no backend.
    let mut authed = callback(proxy.addr, "/callbacks/scooter/rides/1");
    authed
        .headers_mut()
        .insert("x-proxy-key", http::HeaderValue::from_static(CALLER_TOKEN));
    send_refused(&c, authed, 400, "missing_tag").await;

    // Partner port: a callback without a valid partner token is refused.
    let no_token = http::Request::post(format!(
        "http://{}/callbacks/scooter/rides/1",
        proxy.partner_addr
    ))
    .body(Body::from("{}"))
    .unwrap();
    send_refused(&c, no_token, 401, "unauthorized").await;

    // Ops port: GET only.
    let req = callback(proxy.ops_addr, "/callbacks/scooter/rides/1");
    send_refused(&c, req, 405, "method_not_allowed").await;

    assert!(partner.seen().is_empty(), "{:?}", partner.seen());
    assert!(internal.seen().is_empty(), "{:?}", internal.seen());
}

#[test]
fn listeners_must_be_distinct_and_forwarded_for_is_not_trusted_by_default() {
    let config = ProxyConfig::default();
    assert!(!config.trust_forwarded_for);
    let mut same = ProxyConfig::default();
    same.partner_listen = same.listen.clone();
    let err = same.validate().unwrap_err().to_string();
    assert!(err.contains("partner_listen"), "{err}");
    let mut same = ProxyConfig::default();
    same.ops_listen = same.partner_listen.clone();
    let err = same.validate().unwrap_err().to_string();
    assert!(err.contains("ops_listen"), "{err}");
}
