//! Identity exchange against real `personal` and partner lookup servers: hit, miss, TTL
//! expiry, single-flight, lookups down (nothing cached), and no phone number ever forwarded.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use switchyard_proxy::config::ProxyConfig;

use crate::common::*;

const HITS: &str = "switchyard_proxy_identity_cache_hits_total{identity=\"scooter\"}";
const MISSES: &str = "switchyard_proxy_identity_cache_misses_total{identity=\"scooter\"}";
const SIZE: &str = "switchyard_proxy_identity_cache_size{identity=\"scooter\"}";

async fn setup(lookups_addr: SocketAddr, ttl_ms: u64) -> (Backend, Proxy, TestClient) {
    setup_with(lookups_addr, ttl_ms, 1_000, |_| {}).await
}

async fn setup_with_capacity(
    lookups_addr: SocketAddr,
    ttl_ms: u64,
    capacity: u64,
) -> (Backend, Proxy, TestClient) {
    setup_with(lookups_addr, ttl_ms, capacity, |_| {}).await
}

/// A proxy whose `scooter` backend exchanges phone ids at `lookups_addr`; `tweak` changes the
/// rest of its config.
async fn setup_with(
    lookups_addr: SocketAddr,
    ttl_ms: u64,
    capacity: u64,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (Backend, Proxy, TestClient) {
    let (backend, backend_addr) = Backend::start().await;
    let mut cfg = backend_config(backend_addr);
    cfg.identity = Some("scooter".into());
    let mut config = proxy_config(BTreeMap::from([("scooter".to_owned(), cfg)]));
    let mut identity = identity_config(lookups_addr);
    identity.cache_ttl_ms = ttl_ms;
    identity.cache_capacity = capacity;
    config.identity.insert("scooter".into(), identity);
    tweak(&mut config);
    (backend, start_proxy(config).await, client())
}

fn ride(proxy: SocketAddr, phone_id: &str) -> http::Request<axum::body::Body> {
    get(
        proxy,
        "/v1/rides",
        Some("scooter"),
        &[("x-yataxi-phoneid", phone_id)],
    )
}

#[tokio::test]
async fn miss_then_hit_forwards_the_partner_user_id_and_no_personal_data() {
    let (lookups, lookups_addr) = Lookups::start().await;
    let (backend, proxy, c) = setup(lookups_addr, 600_000).await;
    let a = send(&c, ride(proxy.addr, "abc123")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = backend.last().headers;
    assert_eq!(seen["x-partner-user-id"], user_of("abc123").as_str());
    assert!(!seen.contains_key("x-yataxi-phoneid"));
    let phone_digits = phone_of("abc123").trim_start_matches('+').to_owned();
    for (name, value) in &seen {
        let v = value.to_str().unwrap_or_default();
        assert!(!v.contains(&phone_of("abc123")), "{name} carries the phone");
        if name != "x-partner-user-id" {
            assert!(!v.contains(&phone_digits), "{name} carries the phone");
        }
    }
    assert_eq!((lookups.personal(), lookups.partner()), (1, 1));
    assert_eq!(
        lookups.lookup_keys_seen.lock().unwrap().as_slice(),
        [LOOKUP_KEY]
    );

    let a = send(&c, ride(proxy.addr, "abc123")).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        backend.last().headers["x-partner-user-id"],
        user_of("abc123").as_str()
    );
    assert_eq!(
        (lookups.personal(), lookups.partner()),
        (1, 1),
        "second request was not a hit"
    );
    assert_eq!(metric(&c, proxy.ops_addr, HITS).await, 1.0);
    assert_eq!(metric(&c, proxy.ops_addr, MISSES).await, 1.0);
    assert_eq!(metric(&c, proxy.ops_addr, SIZE).await, 1.0);

    // Another id is another miss.
    let a = send(&c, ride(proxy.addr, "other-id-7")).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        backend.last().headers["x-partner-user-id"],
        user_of("other-id-7").as_str()
    );
    assert_eq!(lookups.personal(), 2);
}

#[tokio::test]
async fn expired_entries_are_looked_up_again() {
    let (lookups, lookups_addr) = Lookups::start().await;
    let (_backend, proxy, c) = setup(lookups_addr, 50).await;
    assert_eq!(send(&c, ride(proxy.addr, "ttl1")).await.status, 200);
    assert_eq!(lookups.personal(), 1);
    // Well past the 50 ms TTL: the entry must be gone whatever the scheduling.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(send(&c, ride(proxy.addr, "ttl1")).await.status, 200);
    assert_eq!((lookups.personal(), lookups.partner()), (2, 2));
}

#[tokio::test]
async fn concurrent_misses_for_one_id_make_one_upstream_call() {
    let (lookups, lookups_addr) = Lookups::start_with_gate(0).await;
    let (backend, proxy, c) = setup(lookups_addr, 600_000).await;

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let addr = proxy.addr;
            tokio::spawn(async move { send(&c, ride(addr, "same-id")).await })
        })
        .collect();
    // Every request has missed the cache and is waiting on the one held lookup.
    while metric(&c, proxy.ops_addr, MISSES).await < 20.0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    lookups.gate.add_permits(100);
    for r in requests {
        let a = r.await.unwrap();
        assert_eq!(a.status, 200);
    }
    assert_eq!((lookups.personal(), lookups.partner()), (1, 1));
    assert_eq!(backend.seen().len(), 20);
    assert!(backend
        .seen()
        .iter()
        .all(|s| s.headers["x-partner-user-id"] == user_of("same-id").as_str()));
}

#[tokio::test]
async fn personal_down_is_503_and_nothing_is_cached() {
    let (lookups, lookups_addr) = Lookups::start().await;
    let (backend, proxy, c) = setup(lookups_addr, 600_000).await;
    lookups
        .personal_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let a = send_refused(&c, ride(proxy.addr, "p1"), 503, "identity_unavailable").await;
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(lookups.partner(), 0);
    assert!(backend.seen().is_empty());

    lookups
        .personal_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let a = send(&c, ride(proxy.addr, "p1")).await;
    assert_eq!(a.status, 200);
    assert_eq!(lookups.personal(), 2, "the failure was cached");
    assert_eq!(
        backend.last().headers["x-partner-user-id"],
        user_of("p1").as_str()
    );
}

#[tokio::test]
async fn partner_lookup_down_is_503_and_nothing_is_cached() {
    let (lookups, lookups_addr) = Lookups::start().await;
    let (backend, proxy, c) = setup(lookups_addr, 600_000).await;
    lookups
        .partner_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    send_refused(&c, ride(proxy.addr, "p2"), 503, "identity_unavailable").await;
    lookups
        .partner_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(send(&c, ride(proxy.addr, "p2")).await.status, 200);
    assert_eq!((lookups.personal(), lookups.partner()), (2, 2));
    assert_eq!(backend.seen().len(), 1);
}

/// The request deadline (300 ms) bounds a lookup that hangs, well before the lookup's own
/// 2 s timeout; nothing is cached, and the id is looked up again on the next request.
#[tokio::test]
async fn a_lookup_that_outlives_the_request_deadline_is_504_and_nothing_is_cached() {
    let (lookups, lookups_addr) = Lookups::start_with_gate(0).await;
    let (backend, proxy, c) = setup_with(lookups_addr, 600_000, 1_000, |config| {
        config.request_timeout_ms = 300;
    })
    .await;

    let started = std::time::Instant::now();
    send_refused(&c, ride(proxy.addr, "slow-1"), 504, "request_timeout").await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_500),
        "the lookup's own 2 s timeout ended it, not the request deadline: {:?}",
        started.elapsed()
    );
    assert!(backend.seen().is_empty());

    lookups.gate.add_permits(100);
    assert_eq!(send(&c, ride(proxy.addr, "slow-1")).await.status, 200);
    assert_eq!(
        backend.last().headers["x-partner-user-id"],
        user_of("slow-1").as_str()
    );
    assert_eq!(metric(&c, proxy.ops_addr, MISSES).await, 2.0);
}

#[tokio::test]
async fn unreachable_personal_is_503() {
    let (backend, proxy, c) = setup(closed_addr().await, 600_000).await;
    send_refused(&c, ride(proxy.addr, "p3"), 503, "identity_unavailable").await;
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn missing_malformed_and_unknown_phone_ids() {
    let (lookups, lookups_addr) = Lookups::start().await;
    let (backend, proxy, c) = setup(lookups_addr, 600_000).await;
    let req = get(proxy.addr, "/v1/rides", Some("scooter"), &[]);
    send_refused(&c, req, 400, "missing_header").await;
    send_refused(&c, ride(proxy.addr, "+79001234567"), 400, "invalid_header").await;
    send_refused(&c, ride(proxy.addr, "unknown-1"), 404, "identity_not_found").await;
    assert_eq!(lookups.personal(), 1);
    assert!(backend.seen().is_empty());
}

/// Capacity 2: after a, b, a read again, then c, the least recently used id (b) is the one
/// dropped, so a is still a hit and b costs a new lookup. Scraping the metrics runs the cache's
/// pending maintenance, which makes each eviction happen at a known point.
#[tokio::test]
async fn a_full_cache_drops_the_least_recently_used_id() {
    let (lookups, lookups_addr) = Lookups::start().await;
    let (_backend, proxy, c) = setup_with_capacity(lookups_addr, 600_000, 2).await;
    for id in ["lru-a", "lru-b", "lru-a", "lru-c"] {
        assert_eq!(send(&c, ride(proxy.addr, id)).await.status, 200, "{id}");
        metric(&c, proxy.ops_addr, SIZE).await;
    }
    assert_eq!(lookups.personal(), 3, "a, b and c looked up once each");
    assert_eq!(metric(&c, proxy.ops_addr, SIZE).await, 2.0);
    assert_eq!(send(&c, ride(proxy.addr, "lru-a")).await.status, 200);
    assert_eq!(
        lookups.personal(),
        3,
        "a was evicted though used more recently than b"
    );
    assert_eq!(send(&c, ride(proxy.addr, "lru-b")).await.status, 200);
    assert_eq!(
        lookups.personal(),
        4,
        "b, the least recently used, was kept"
    );
}
