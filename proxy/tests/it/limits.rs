//! Bounded everything (issue 16 item 5): header-read and whole-request timeouts, body limits on
//! every route, and metric labels that never take a client-supplied value.

// Test plumbing starts servers and clients directly; the clippy.toml bans guard service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: u64 = 1024;

async fn setup(request_timeout_ms: u64) -> (Backend, Proxy, TestClient) {
    let (backend, addr) = Backend::start().await;
    let mut cfg = backend_config(addr);
    cfg.max_body_bytes = Some(LIMIT);
    cfg.timeout_ms = 10_000;
    let mut config = proxy_config(BTreeMap::from([("scooter".to_owned(), cfg)]));
    config.request_timeout_ms = request_timeout_ms;
    config.header_read_timeout_ms = 300;
    (backend, start_proxy(config).await, client())
}

fn post(proxy: &Proxy, body: Body) -> http::Request<Body> {
    http::Request::post(format!("http://{}/v1/upload", proxy.addr))
        .header("x-api-tag", "scooter")
        .header("x-proxy-key", CALLER_TOKEN)
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let (backend, proxy, c) = setup(10_000).await;
    let a = send(&c, post(&proxy, Body::from(vec![b'x'; LIMIT as usize]))).await;
    assert_eq!(a.status, 200);
    assert_eq!(backend.last().body_len, LIMIT);
    // Declared too long: refused before anything is forwarded.
    let a = send(&c, post(&proxy, Body::from(vec![b'x'; LIMIT as usize + 1]))).await;
    assert_eq!((a.status, a.error_code().as_str()), (413, "body_too_large"));
    assert!(a.json()["message"].as_str().unwrap().contains("1024"));
    // Chunked, no length: cut off once it passes the limit.
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 512]))),
    );
    let req = post(&proxy, Body::from_stream(chunks));
    send_refused(&c, req, 413, "body_too_large").await;
    assert_eq!(backend.seen().len(), 1, "an oversized body was delivered");
    // The ops listener takes no body at all.
    let req = http::Request::get(format!("http://{}/_proxy/ping", proxy.ops_addr))
        .body(Body::from("x"))
        .unwrap();
    send_refused(&c, req, 413, "body_too_large").await;
}

#[tokio::test]
async fn a_request_that_outlives_the_request_timeout_is_504() {
    let (_backend, proxy, c) = setup(300).await;
    // The backend never answers; its own timeout (10 s) is far off.
    let req = get(proxy.addr, "/v1/slow", Some("scooter"), &[]);
    send_refused(&c, req, 504, "request_timeout").await;
    // An upload that stalls after its first chunk.
    let stalled = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("abc")) })
        .chain(futures::stream::pending());
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        send(&c, post(&proxy, Body::from_stream(stalled))),
    )
    .await
    .expect("the proxy gave up on the stalled upload");
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (504, "request_timeout")
    );
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let (backend, proxy, _c) = setup(10_000).await;
    for addr in [proxy.addr, proxy.partner_addr, proxy.ops_addr] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /v1/rides HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        assert!(closed.is_ok(), "{addr}: connection still open after 5 s");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("200 OK"), "{addr}: {text}");
    }
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn metric_labels_never_take_client_values() {
    let (_backend, proxy, c) = setup(10_000).await;
    for i in 0..50 {
        let junk = format!("junk-{i}");
        let _ = send(&c, get(proxy.addr, "/v1/rides", Some(&junk), &[])).await;
        let _ = send(
            &c,
            get(proxy.addr, &format!("/v1/{junk}"), Some("scooter"), &[]),
        )
        .await;
        let req = http::Request::get(format!("http://{}/v1/rides", proxy.addr))
            .header("x-api-tag", junk.as_str())
            .header("x-proxy-key", junk.as_str())
            .body(Body::empty())
            .unwrap();
        let _ = send(&c, req).await;
        let cb = http::Request::post(format!(
            "http://{}/callbacks/{junk}/rides/1",
            proxy.partner_addr
        ))
        .body(Body::empty())
        .unwrap();
        let _ = send(&c, cb).await;
    }
    let text = send(&c, get(proxy.ops_addr, "/_proxy/metrics", None, &[])).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    let mut series = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split('}').next().unwrap();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap();
            let value = value.trim_matches('"');
            let ok = match key {
                "backend" => ["scooter", "-"].contains(&value),
                "caller" => ["test", "-"].contains(&value),
                "outcome" => ["allowed", "unauthenticated", "forbidden"].contains(&value),
                "status" => value.parse::<u16>().is_ok(),
                "le" => true,
                other => panic!("unexpected label {other} in {line}"),
            };
            assert!(ok, "client-chosen label value in {line}");
        }
        series += 1;
    }
    assert!(!text.contains("junk"), "{text}");
    assert!(series < 60, "{series} series after 200 junk requests");
}

/// One HTTP/1.1 connection to the proxy that the test drives by hand.
async fn keep_alive_conn(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Body>,
    tokio::task::JoinHandle<()>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    let driven = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driven)
}

/// A GET in origin form, as a client writes it on its own connection.
fn origin_get(path: &str) -> http::Request<Body> {
    http::Request::get(path)
        .header("host", "127.0.0.1")
        .header("x-api-tag", "scooter")
        .header("x-proxy-key", CALLER_TOKEN)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_kept_alive_connection_waits_past_the_header_deadline_and_closes_when_idle() {
    // hyper's header_read_timeout also ran while a kept-alive connection waited, so the proxy
    // closed a pooled connection after 300 ms here, racing the client's reuse of it.
    let (_backend, addr) = Backend::start().await;
    let mut config = proxy_config(BTreeMap::from([(
        "scooter".to_owned(),
        backend_config(addr),
    )]));
    config.header_read_timeout_ms = 300;
    config.idle_timeout_ms = 1_500;
    let proxy = start_proxy(config).await;
    let (mut send, driven) = keep_alive_conn(proxy.addr).await;
    for round in 0..2 {
        let resp = send.send_request(origin_get("/v1/rides")).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        // Idle for three header deadlines: the connection stays.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!send.is_closed(), "closed while idle {round}");
    }
    // Past the idle deadline the proxy closes it.
    tokio::time::timeout(Duration::from_secs(5), driven)
        .await
        .expect("connection still open 5 s after the idle deadline")
        .unwrap();
}

/// A proxy with a 500 ms idle deadline and one connection to it.
async fn short_idle_proxy() -> (
    Backend,
    Proxy,
    hyper::client::conn::http1::SendRequest<Body>,
) {
    let (backend, addr) = Backend::start().await;
    let mut config = proxy_config(BTreeMap::from([(
        "scooter".to_owned(),
        backend_config(addr),
    )]));
    config.header_read_timeout_ms = 300;
    config.idle_timeout_ms = 500;
    let proxy = start_proxy(config).await;
    let (send, _driven) = keep_alive_conn(proxy.addr).await;
    (backend, proxy, send)
}

#[tokio::test]
async fn a_streaming_answer_is_not_cut_while_its_client_pauses() {
    let (_backend, _proxy, mut send) = short_idle_proxy().await;
    // More than the sockets' buffers hold: the backend is still sending during the pause.
    let bytes = 64 * 1024 * 1024;
    let resp = send
        .send_request(origin_get(&format!("/v1/download?bytes={bytes}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The answer is in flight: neither deadline runs while its client does not read.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("the answer was cut")
        .to_bytes();
    assert_eq!(body.len(), bytes);
}
