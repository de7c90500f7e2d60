//! Slow clients: a request head or body trickled a byte at a time is cut off at the ingress's
//! deadlines while other callers are served, and a kept-alive connection waits for its next
//! request the idle deadline, not the (shorter) header deadline.

use std::time::{Duration, Instant};

use integration_tests::kafka::create_topic;
use integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_READ_MS: u64 = 1_000;
const REQUEST_MS: u64 = 1_500;
const IDLE_MS: u64 = 4_000;

async fn slow_ingress() -> (Running, String) {
    let topic = unique("slow");
    create_topic(&topic, 1).await.unwrap();
    let mut cfg = ingress_config(&topic);
    cfg.header_read_timeout_ms = HEADER_READ_MS;
    cfg.request_timeout_ms = REQUEST_MS;
    cfg.idle_timeout_ms = IDLE_MS;
    (start_ingress(cfg, None).await.unwrap(), topic)
}

/// Writes `head` then trickles `trickle` a byte every 200 ms while reading; returns what the
/// server sent before it closed the connection (or the trickle ran out) and when it closed.
async fn trickle(addr: std::net::SocketAddr, head: &[u8], trickle: &[u8]) -> (String, Duration) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    wr.write_all(head).await.unwrap();
    let trickle = trickle.to_vec();
    let writer = tokio::spawn(async move {
        for b in trickle {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server held a trickling connection for 30 s"),
        }
    }
    let closed = started.elapsed();
    writer.abort();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// [`trickle`]s to `ingress` while another caller posts; asserts that one is served.
async fn trickle_while_others_are_served(
    ingress: &Running,
    head: &[u8],
    rest: &[u8],
) -> (String, Duration) {
    let slow = trickle(ingress.addr, head, rest);
    let others = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        post_ok(ingress).await
    };
    let (trickled, other) = tokio::join!(slow, others);
    assert_eq!(other, 200, "another caller was served while one trickled");
    trickled
}

async fn post_ok(ingress: &Running) -> u16 {
    ingress_client()
        .post(ingress.url("/v1/uid-notify"))
        .json(&serde_json::json!({"portal_uid": 1, "phonish_uid": 2, "event_type": "bind"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_off_at_the_header_deadline() {
    let (ingress, _topic) = slow_ingress().await;
    let head = b"POST /v1/uid-notify HTTP/1.1\r\nhost: ingress\r\n";
    // 60 header bytes at 5 a second would take 12 s; the deadline is 1 s.
    let rest = b"x-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let (got, closed) = trickle_while_others_are_served(&ingress, head, rest).await;
    assert!(
        closed >= Duration::from_millis(HEADER_READ_MS - 100) && closed < Duration::from_secs(4),
        "connection closed after {closed:?} (header deadline {HEADER_READ_MS} ms)"
    );
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "before closing the server sent: {got:?}"
    );
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_trickled_body_gets_a_408_at_the_request_deadline() {
    let (ingress, _topic) = slow_ingress().await;
    let body = br#"{"portal_uid": 1, "phonish_uid": 2, "event_type": "bind"}"#;
    let head = format!(
        "POST /v1/uid-notify HTTP/1.1\r\nhost: ingress\r\nauthorization: Bearer {TEST_INGRESS_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let (got, closed) = trickle_while_others_are_served(&ingress, head.as_bytes(), body).await;
    assert!(
        got.starts_with("HTTP/1.1 408"),
        "a body trickled past the deadline got: {got:?}"
    );
    assert!(
        got.contains(r#""code":"request_timeout""#),
        "the 408 says why: {got:?}"
    );
    assert!(
        closed >= Duration::from_millis(REQUEST_MS - 100) && closed < Duration::from_secs(5),
        "answered after {closed:?} (request deadline {REQUEST_MS} ms)"
    );
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn an_unauthenticated_body_is_refused_before_it_is_read() {
    let (ingress, _topic) = slow_ingress().await;
    // No credential and a body that never arrives: the 401 comes at once.
    let head =
        "POST /v1/uid-notify HTTP/1.1\r\nhost: ingress\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\nconnection: close\r\n\r\n";
    let (got, closed) = trickle(ingress.addr, head.as_bytes(), b"{}").await;
    assert!(got.starts_with("HTTP/1.1 401"), "got: {got:?}");
    assert!(
        closed < Duration::from_millis(REQUEST_MS),
        "the 401 waited for the body: {closed:?}"
    );
    ingress.stop().await.unwrap();
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from `rd`.
async fn read_response(rd: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("reading the response");
        assert!(n > 0, "the connection closed mid-response after {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_deadline_until_it_is_idle_too_long() {
    let (ingress, _topic) = slow_ingress().await;
    let body = br#"{"portal_uid": 1, "phonish_uid": 2, "event_type": "bind"}"#;
    let request = format!(
        "POST /v1/uid-notify HTTP/1.1\r\nhost: ingress\r\nauthorization: Bearer {TEST_INGRESS_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let stream = TcpStream::connect(ingress.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(request.as_bytes()).await.unwrap();
    let first = read_response(&mut rd).await;
    assert!(first.starts_with("HTTP/1.1 200"), "first: {first:?}");
    // Idle for twice the header deadline: a pooled connection must still be served (hyper's
    // own header timer would have closed it under the client's reuse).
    tokio::time::sleep(Duration::from_millis(2 * HEADER_READ_MS)).await;
    wr.write_all(request.as_bytes()).await.unwrap();
    let second = read_response(&mut rd).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the same connection after {} ms idle: {second:?}",
        2 * HEADER_READ_MS
    );
    // Then idle past the idle deadline: the server closes it.
    let idle_from = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf))
        .await
        .expect("the idle connection was closed within 15 s")
        .unwrap_or(0);
    let idle = idle_from.elapsed();
    assert_eq!(n, 0, "no bytes, just the close");
    assert!(
        idle >= Duration::from_millis(IDLE_MS - 200)
            && idle < Duration::from_millis(IDLE_MS + 2_000),
        "closed after {idle:?} idle (idle deadline {IDLE_MS} ms)"
    );
    ingress.stop().await.unwrap();
}
