//! Webhook targets can't be pointed inward: URLs are checked when the config loads, and every
//! address a name resolves to is checked at connect time (a name, unlike an address literal,
//! only meets the guard in the dispatcher's resolver).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use integration_tests::kafka::{create_topic, header as record_header, producer, read};
use integration_tests::*;

use crate::engine_support::{envelope, eventually, produce_to};

async fn counting_target() -> (Arc<AtomicU64>, u16) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route(
        "/h",
        post(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hits, port)
}

#[test]
fn bad_target_urls_fail_the_config_naming_the_subscriber() {
    for (url, why) in [
        ("http://user:secret@127.0.0.1:1/h", "userinfo"),
        ("ftp://127.0.0.1/h", "scheme"),
        ("http://169.254.169.254/latest/meta-data", "refused"),
        ("http://[fd00:ec2::254]/", "refused"),
    ] {
        let cfg = dispatcher_config(vec![http_subscriber("inward", "t", url)]);
        let err = cfg.validate().expect_err(url).to_string();
        assert!(
            err.contains("target.url") && err.contains("inward") && err.contains(why),
            "{url}: {err}"
        );
    }
    let mut cfg = dispatcher_config(vec![http_subscriber(
        "opened",
        "t",
        "http://169.254.10.7/h",
    )]);
    cfg.webhooks.allow_networks = vec!["169.254.10.0/24".into()];
    cfg.validate().expect("an allowed network passes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_resolving_to_a_refused_address_is_never_called() {
    let (hits, port) = counting_target().await;
    let topic = unique("engine-guard");
    create_topic(&topic, 1).await.unwrap();
    // `localhost` is a name: it reaches the resolver, which finds only loopback addresses.
    let mut s = http_subscriber("guarded", &topic, &format!("http://localhost:{port}/h"));
    s.max_attempts = Some(1);
    let mut cfg = dispatcher_config(vec![s]);
    cfg.webhooks.public_only = true;
    let dlq = cfg.dead_letter_topic("guarded");
    let dispatcher = start_dispatcher(cfg.clone()).await.unwrap();
    produce_to(&producer().unwrap(), &topic, 0, "k", &envelope(1)).await;
    let dead = read(&dlq, 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(dead.len(), 1, "the refused record was not dead-lettered");
    let error = record_header(&dead[0], events::header::LAST_ERROR).unwrap_or_default();
    assert!(error.contains("refused"), "last error: {error:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused address was called"
    );
    dispatcher.stop().await.unwrap();

    // The allow-list opens loopback again: the next record arrives.
    cfg.webhooks.allow_networks = vec!["127.0.0.0/8".into(), "::1".into()];
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    produce_to(&producer().unwrap(), &topic, 0, "k", &envelope(2)).await;
    let h = hits.clone();
    assert!(
        eventually(Duration::from_secs(60), || {
            let h = h.clone();
            async move { h.load(Ordering::SeqCst) >= 1 }
        })
        .await,
        "an allowed network was not delivered to"
    );
    dispatcher.stop().await.unwrap();
}
