//! 100 MB through the proxy in each direction with flat memory: the peak RSS of this test
//! process (client, proxy and backend all live here) grows far less than the body.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use crate::common::*;
use axum::body::Body;
use http_body_util::BodyExt;

const SIZE: u64 = 100 * 1024 * 1024;
/// Growth of peak RSS allowed while 100 MB pass; buffering would need at least 100 MB.
const MAX_GROWTH_KB: u64 = 40 * 1024;

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

async fn setup() -> (Backend, Proxy, TestClient) {
    let (backend, addr) = Backend::start().await;
    let mut big = backend_config(addr);
    // Above the default body limit: this backend takes uploads of this size.
    big.max_body_bytes = Some(2 * SIZE);
    let proxy = start_proxy(proxy_config(BTreeMap::from([("big".to_owned(), big)]))).await;
    (backend, proxy, client())
}

#[tokio::test]
async fn a_100mb_upload_streams_with_flat_memory() {
    let (backend, proxy, c) = setup().await;
    let before = peak_rss_kb();
    let req = http::Request::post(format!("http://{}/v1/upload", proxy.addr))
        .header("x-api-tag", "big")
        .header("x-proxy-key", CALLER_TOKEN)
        .body(Body::from_stream(pattern_stream(SIZE)))
        .unwrap();
    let a = send(&c, req).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["body_len"], SIZE);
    assert_eq!(backend.last().body_len, SIZE);
    let growth = peak_rss_kb().saturating_sub(before);
    assert!(growth < MAX_GROWTH_KB, "peak RSS grew by {growth} kB");
}

#[tokio::test]
async fn a_100mb_download_streams_with_flat_memory() {
    let (_backend, proxy, c) = setup().await;
    let before = peak_rss_kb();
    let req = get(
        proxy.addr,
        &format!("/v1/download?bytes={SIZE}"),
        Some("big"),
        &[],
    );
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut received, mut expected_byte) = (0u64, 0u32);
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            for b in data.iter() {
                assert_eq!(
                    u32::from(*b),
                    expected_byte % 251,
                    "corrupted at {received}"
                );
                expected_byte = (expected_byte + 1) % 65_536;
                received += 1;
            }
        }
    }
    assert_eq!(received, SIZE);
    let growth = peak_rss_kb().saturating_sub(before);
    assert!(growth < MAX_GROWTH_KB, "peak RSS grew by {growth} kB");
}
