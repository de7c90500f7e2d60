//! Routing by `x-api-tag`, every refusal of issue item 1, header hygiene, the API key, and
//! the timeout / connection-error answers, against real HTTP servers.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use crate::common::*;
use axum::body::Body;
use axum::http::HeaderMap;

/// Writes `request` raw to the proxy, asserts the answer's status starts with `status` (`"400"`,
/// or `"4"` for any client error) and, when given, that it names the error `code`; returns the
/// answer for further checks.
async fn refused_raw(proxy: &Proxy, request: &[u8], status: &str, code: Option<&str>) -> String {
    let answer = raw(proxy.addr, request).await;
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    if let Some(code) = code {
        assert!(answer.contains(&format!("\"{code}\"")), "{answer}");
    }
    answer
}

/// Sends `/v1/reflect` to `scooter` with `headers`; returns the answer (every header the backend
/// got, reflected) and the headers the backend saw.
async fn reflect(
    c: &TestClient,
    proxy: &Proxy,
    scooter: &Backend,
    headers: &[(&str, &str)],
) -> (Answer, HeaderMap) {
    let a = send(c, get(proxy.addr, "/v1/reflect", Some("scooter"), headers)).await;
    assert_eq!(a.status, 200);
    (a, scooter.last().headers)
}

async fn setup() -> (Backend, Backend, Proxy, TestClient) {
    let (scooter, scooter_addr) = Backend::start().await;
    let (bikes, bikes_addr) = Backend::start().await;
    let mut backends = BTreeMap::new();
    backends.insert("scooter".to_owned(), backend_config(scooter_addr));
    let mut bike_cfg = backend_config(bikes_addr);
    bike_cfg.api_key = None;
    bike_cfg.allowed_prefixes = vec!["/bikes".into()];
    backends.insert("bikes".to_owned(), bike_cfg);
    let proxy = start_proxy(proxy_config(backends)).await;
    (scooter, bikes, proxy, client())
}

#[tokio::test]
async fn routes_by_tag_to_the_configured_backend() {
    let (scooter, bikes, proxy, c) = setup().await;
    let a = send(&c, get(proxy.addr, "/v1/rides?x=1", Some("scooter"), &[])).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["path"], "/v1/rides?x=1");
    let b = send(&c, get(proxy.addr, "/bikes/7", Some("bikes"), &[])).await;
    assert_eq!(b.status, 200);
    assert_eq!(scooter.seen().len(), 1);
    assert_eq!(bikes.seen().len(), 1);
    assert_eq!(bikes.last().path_and_query, "/bikes/7");
    // The backend sees its own authority as Host, never the proxy's.
    let host = scooter.last().headers["host"].to_str().unwrap().to_owned();
    assert_ne!(host, proxy.addr.to_string());
}

#[tokio::test]
async fn missing_unknown_tag_and_foreign_prefix_are_json_errors() {
    let (scooter, _bikes, proxy, c) = setup().await;
    for (tag, path, status, code) in [
        (None, "/v1/rides", 400, "missing_tag"),
        (Some("trains"), "/v1/rides", 404, "unknown_tag"),
        (Some("scooter"), "/admin", 404, "path_not_allowed"),
        // Segment-wise: `/v1x` is not under `/v1`.
        (Some("scooter"), "/v1x/rides", 404, "path_not_allowed"),
    ] {
        send_refused(&c, get(proxy.addr, path, tag, &[]), status, code).await;
    }
    // A tag is a config key, not a place the client may point at a prefix of another backend.
    let a = send(&c, get(proxy.addr, "/bikes/1", Some("scooter"), &[])).await;
    assert_eq!(a.status, 404);
    assert!(scooter.seen().is_empty());
}

#[tokio::test]
async fn traversal_in_every_spelling_is_refused() {
    let (scooter, _bikes, proxy, c) = setup().await;
    for path in [
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/admin",
        "/v1/.%2e/admin",
        "/v1/..%2fadmin",
        "/v1/%2fadmin",
        "/v1/..%5cadmin",
        "/v1/%252e%252e/admin",
        "/v1/..;/admin",
        "/v1/%00",
    ] {
        let req = get(proxy.addr, path, Some("scooter"), &[]);
        send_refused(&c, req, 400, "bad_path").await;
    }
    // Literal dot segments never survive a client library, so send them raw.
    let request = b"GET /v1/../admin HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\nConnection: close\r\n\r\n";
    refused_raw(&proxy, request, "400", Some("bad_path")).await;
    assert!(scooter.seen().is_empty());
}

#[tokio::test]
async fn absolute_form_targets_are_refused() {
    let (scooter, _bikes, proxy, _c) = setup().await;
    let request = b"GET http://169.254.169.254/v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\n\r\n";
    refused_raw(&proxy, request, "400", Some("absolute_form_refused")).await;
    // Even with an allowed Host and a matching authority.
    let matching = format!(
        "GET http://{}/v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\n\r\n",
        proxy.addr
    )
    .into_bytes();
    refused_raw(&proxy, &matching, "400", Some("absolute_form_refused")).await;
    assert!(scooter.seen().is_empty());
}

#[tokio::test]
async fn connect_is_refused() {
    let (scooter, _bikes, proxy, _c) = setup().await;
    let request =
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nx-api-tag: scooter\r\n\r\n";
    let answer = refused_raw(&proxy, request, "405", Some("method_not_allowed")).await;
    assert!(!answer.contains("200"), "{answer}");
    assert!(scooter.seen().is_empty());
}

#[tokio::test]
async fn foreign_host_is_refused() {
    let (scooter, _bikes, proxy, c) = setup().await;
    let req = http::Request::get(format!("http://{}/v1/rides", proxy.addr))
        .header("host", "partner.example.com")
        .header("x-api-tag", "scooter")
        .body(Body::empty())
        .unwrap();
    send_refused(&c, req, 421, "foreign_host").await;
    let request = b"GET /v1/rides HTTP/1.1\r\nHost: 127.0.0.1@evil.example\r\nx-api-tag: scooter\r\nConnection: close\r\n\r\n";
    refused_raw(&proxy, request, "4", None).await;
    assert!(scooter.seen().is_empty());
}

#[tokio::test]
async fn smuggling_with_both_lengths_is_refused_and_the_connection_closed() {
    let (scooter, _bikes, proxy, _c) = setup().await;
    // CL.TE: a front end reading Content-Length would see one request, a back end reading
    // the chunks a second one (`GET /v1/admin`).
    let smuggle = b"POST /v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\n\
Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/admin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let answer = refused_raw(&proxy, smuggle, "400", Some("ambiguous_framing")).await;
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "a second request was served: {answer}"
    );
    // TE.CL ordering and an obfuscated Transfer-Encoding.
    let smuggle = b"POST /v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\n\
Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /v1/admin HTTP/1.1\r\n\r\n0\r\n\r\n";
    let answer = refused_raw(&proxy, smuggle, "400", None).await;
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    let smuggle = b"POST /v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\n\
Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n";
    refused_raw(&proxy, smuggle, "400", None).await;
    // Two different lengths.
    let smuggle = b"POST /v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-tag: scooter\r\n\
Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    refused_raw(&proxy, smuggle, "400", None).await;
    assert!(scooter.seen().is_empty(), "{:?}", scooter.seen());
}

#[tokio::test]
async fn a_trusted_forwarded_for_chain_gets_the_peer_appended() {
    let (scooter, scooter_addr) = Backend::start().await;
    let mut backends = BTreeMap::new();
    backends.insert("scooter".to_owned(), backend_config(scooter_addr));
    let mut config = proxy_config(backends);
    config.trust_forwarded_for = true;
    let proxy = start_proxy(config).await;
    let c = client();
    let sent = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
    ];
    let (_, seen) = reflect(&c, &proxy, &scooter, &sent).await;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 127.0.0.1");
    // Without a chain the peer stands alone, on every request of the connection.
    for _ in 0..2 {
        let (_, seen) = reflect(&c, &proxy, &scooter, &[]).await;
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    }
}

#[tokio::test]
async fn hop_by_hop_personal_and_spoofed_headers_are_dropped() {
    let (scooter, _bikes, proxy, c) = setup().await;
    let sent = [
        ("connection", "x-hop-req"),
        ("x-hop-req", "1"),
        ("proxy-authorization", "Basic abc"),
        ("x-yataxi-user-id", "internal"),
        ("authorization", "Bearer our-internal-token"),
        ("cookie", "session=1"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-request-id", "req-123"),
        ("x-partner-custom", "kept"),
    ];
    let (a, seen) = reflect(&c, &proxy, &scooter, &sent).await;
    for gone in [
        "x-hop-req",
        "proxy-authorization",
        "x-yataxi-user-id",
        "authorization",
        "cookie",
        "x-api-tag",
        "connection",
    ] {
        assert!(!seen.contains_key(gone), "{gone} reached the backend");
    }
    assert_eq!(seen["x-partner-custom"], "kept");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-request-id"], "req-123");
    // Response side: hop-by-hop from the backend never reaches the client.
    assert!(!a.headers.contains_key("x-hop-resp"));
    assert!(!a.headers.contains_key("keep-alive"));
    assert_eq!(a.headers["x-request-id"], "req-123");
    // A request without an id gets one, the same on both sides.
    let a = send(&c, get(proxy.addr, "/v1/rides", Some("scooter"), &[])).await;
    let id = a.headers["x-request-id"].clone();
    assert!(!id.is_empty());
    assert_eq!(scooter.last().headers["x-request-id"], id);
}

#[tokio::test]
async fn api_key_is_injected_and_never_leaked() {
    let (scooter, bikes, proxy, c) = setup().await;
    // A client cannot choose the key; the backend reflects every header it got.
    let (a, seen) = reflect(&c, &proxy, &scooter, &[("x-api-key", "client-chosen")]).await;
    assert_eq!(
        seen.get_all("x-api-key").iter().collect::<Vec<_>>(),
        vec![API_KEY]
    );
    let leaked = a.headers.iter().any(|(_, v)| {
        v.as_bytes()
            .windows(API_KEY.len())
            .any(|w| w == API_KEY.as_bytes())
    });
    assert!(!leaked, "{:?}", a.headers);
    assert!(!String::from_utf8_lossy(&a.body).contains(API_KEY));
    // A backend without a configured key is not ours to guard: the client's header passes.
    let _ = send(
        &c,
        get(
            proxy.addr,
            "/bikes/1",
            Some("bikes"),
            &[("x-api-key", "client-chosen")],
        ),
    )
    .await;
    assert_eq!(
        bikes
            .last()
            .headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap()),
        Some("client-chosen")
    );
}

#[tokio::test]
async fn slow_backend_is_a_504_and_dead_backend_a_502() {
    let (_scooter, scooter_addr) = Backend::start().await;
    let mut backends = BTreeMap::new();
    let mut slow = backend_config(scooter_addr);
    slow.timeout_ms = 200;
    backends.insert("slow".to_owned(), slow);
    backends.insert("dead".to_owned(), backend_config(closed_addr().await));
    let proxy = start_proxy(proxy_config(backends)).await;
    let c = client();
    let req = get(proxy.addr, "/v1/slow", Some("slow"), &[]);
    send_refused(&c, req, 504, "upstream_timeout").await;
    let a = send_refused(
        &c,
        get(proxy.addr, "/v1/rides", Some("dead"), &[]),
        502,
        "upstream_unavailable",
    )
    .await;
    assert!(!String::from_utf8_lossy(&a.body).contains("127.0.0.1"));
    let errors = metric(
        &c,
        proxy.ops_addr,
        "switchyard_proxy_server_errors_total{backend=\"dead\",status=\"502\"}",
    )
    .await;
    assert_eq!(errors, 1.0);
    let timeouts = metric(
        &c,
        proxy.ops_addr,
        "switchyard_proxy_requests_total{backend=\"slow\",status=\"504\"}",
    )
    .await;
    assert_eq!(timeouts, 1.0);
}

/// The backend's request continues the caller's trace, with the proxy's own span as its parent;
/// without a `traceparent` the proxy starts a trace of its own.
#[tokio::test]
async fn the_backend_request_continues_the_callers_trace() {
    let (scooter, _bikes, proxy, c) = setup().await;
    let caller = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=1"),
    ];
    let a = send(&c, get(proxy.addr, "/v1/rides", Some("scooter"), &caller)).await;
    assert_eq!(a.status, 200);
    let seen = scooter.last();
    let tp = seen.headers["traceparent"].to_str().unwrap();
    let sc = switchyard_runtime::trace::parse(tp).expect("valid traceparent");
    assert_eq!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_ne!(sc.span_id().to_string(), "00f067aa0ba902b7", "a proxy span");
    assert!(sc.is_sampled());
    assert_eq!(seen.headers["tracestate"], "vendor=1");

    let a = send(&c, get(proxy.addr, "/v1/rides", Some("scooter"), &[])).await;
    assert_eq!(a.status, 200);
    let tp = scooter.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let sc = switchyard_runtime::trace::parse(&tp).expect("a new trace");
    assert_ne!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}
