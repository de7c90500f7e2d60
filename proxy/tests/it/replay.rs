//! The shared replay store (`[replay_store]`, issue 16.3): replicas that share one PostgreSQL
//! database refuse a callback token any of them already let through, and while the database
//! cannot answer, callbacks get 503 rather than pass unchecked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use switchyard_proxy::config::{ProxyConfig, ReplayStoreConfig, Secret};

use crate::common::*;
use crate::jwt::{callback, callback_backend, good_claims, token, with, PARTNER_HS_SECRET};

const PATH: &str = "/callbacks/scooter/rides/1";

/// A new, empty database on the test PostgreSQL (`SWITCHYARD_TEST_PG`, as the workspace's other
/// tests); its URL.
async fn fresh_database() -> String {
    let base = std::env::var("SWITCHYARD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into());
    let name = format!("proxy_replay_{}", uuid::Uuid::now_v7().simple());
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("the test PostgreSQL is up (deploy/local/up.sh)");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    format!("{base}/{name}")
}

fn store(url: &str) -> ReplayStoreConfig {
    ReplayStoreConfig {
        database_url: Some(Secret::new(url)),
        database_url_file: None,
        pool_size: 2,
        timeout_ms: 1_000,
    }
}

fn replica_config(internal: SocketAddr, partner: SocketAddr, url: &str) -> ProxyConfig {
    ProxyConfig {
        replay_store: Some(store(url)),
        ..proxy_config(BTreeMap::from([(
            "scooter".to_owned(),
            callback_backend(partner, internal),
        )]))
    }
}

fn hs_token(claims: serde_json::Value) -> String {
    let key = EncodingKey::from_secret(PARTNER_HS_SECRET.as_bytes());
    token(Algorithm::HS256, "partner-hs", &key, claims)
}

/// Sends fresh tokens to `proxy` until one passes: the store has migrated. Returns how many
/// reached the upstream (one).
async fn wait_ready(c: &TestClient, proxy: SocketAddr) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = send(c, callback(proxy, PATH, Some(&hs_token(good_claims())))).await;
        if a.status == 200 {
            return 1;
        }
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (503, "replay_store_unavailable"),
            "before the store is ready"
        );
        assert!(
            Instant::now() < deadline,
            "the replay store never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_replay(a: &Answer) {
    assert_eq!((a.status, a.error_code().as_str()), (401, "unauthorized"));
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{:?}",
        a.json()
    );
}

#[tokio::test]
async fn a_token_used_at_one_replica_is_refused_at_every_other() {
    let url = fresh_database().await;
    let (internal, internal_addr) = Backend::start().await;
    let (_partner, partner_addr) = Backend::start().await;
    let a = start_proxy(replica_config(internal_addr, partner_addr, &url)).await;
    let b = start_proxy(replica_config(internal_addr, partner_addr, &url)).await;
    let c = client();
    let mut passed = wait_ready(&c, a.partner_addr).await;
    passed += wait_ready(&c, b.partner_addr).await;

    let used = hs_token(good_claims());
    let first = send(&c, callback(a.partner_addr, PATH, Some(&used))).await;
    assert_eq!(first.status, 200);
    passed += 1;
    assert_replay(&send(&c, callback(b.partner_addr, PATH, Some(&used))).await);
    assert_replay(&send(&c, callback(a.partner_addr, PATH, Some(&used))).await);
    // A replica started later (or one restarted, its memory gone) refuses it as well.
    let late = start_proxy(replica_config(internal_addr, partner_addr, &url)).await;
    passed += wait_ready(&c, late.partner_addr).await;
    assert_replay(&send(&c, callback(late.partner_addr, PATH, Some(&used))).await);

    // One fresh token sent to both replicas at once: exactly one request gets through.
    let fresh = hs_token(good_claims());
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let addr = [a.partner_addr, b.partner_addr][i % 2];
            let (c, t) = (c.clone(), fresh.clone());
            tokio::spawn(async move { send(&c, callback(addr, PATH, Some(&t))).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);
    passed += 1;

    // A row left by an expired token with the same jti (not purged yet) does not block a new
    // token that reuses the id.
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.execute(
        "INSERT INTO switchyard_proxy.seen_jti (scope, jti, until_unix) VALUES ('scooter', 'reused-id', 1)",
        &[],
    )
    .await
    .unwrap();
    let reused = hs_token(with(good_claims(), "jti", json!("reused-id")));
    assert_eq!(
        send(&c, callback(b.partner_addr, PATH, Some(&reused)))
            .await
            .status,
        200
    );
    passed += 1;
    assert_replay(&send(&c, callback(a.partner_addr, PATH, Some(&reused))).await);

    assert_eq!(
        internal.seen().len(),
        passed,
        "a replay reached the upstream"
    );
    for p in [a, b, late] {
        p.shutdown.trigger();
    }
}

#[tokio::test]
async fn callbacks_get_503_while_the_store_cannot_answer() {
    let (internal, internal_addr) = Backend::start().await;
    let (_partner, partner_addr) = Backend::start().await;
    let closed = closed_addr().await;
    let url = format!("postgres://postgres:postgres@{closed}/nowhere");
    let proxy = start_proxy(replica_config(internal_addr, partner_addr, &url)).await;
    let c = client();
    for _ in 0..3 {
        let req = callback(proxy.partner_addr, PATH, Some(&hs_token(good_claims())));
        send_refused(&c, req, 503, "replay_store_unavailable").await;
    }
    assert!(
        internal.seen().is_empty(),
        "an unchecked token reached the upstream"
    );
    // Internal forwarding does not need the store.
    let (backend, backend_addr) = Backend::start().await;
    let mut cfg = replica_config(internal_addr, partner_addr, &url);
    cfg.backends
        .insert("trains".into(), backend_config(backend_addr));
    cfg.callers = BTreeMap::from([("test".to_owned(), caller(CALLER_TOKEN, &["trains"]))]);
    let forwarding = start_proxy(cfg).await;
    let a = send(&c, get(forwarding.addr, "/v1/ping", Some("trains"), &[])).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(backend.seen().len(), 1);
    proxy.shutdown.trigger();
    forwarding.shutdown.trigger();
}
