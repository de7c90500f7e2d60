//! HTTP like a careful client, against real HTTP servers: a redirect is a failed attempt (never
//! followed, so a POST is never turned into a GET that counts as delivered), and a response
//! body is read only up to `[webhooks] max_response_bytes`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use integration_tests::kafka::{create_topic, header as record_header, producer, read};
use integration_tests::*;

use crate::engine_support::{envelope, eventually, metric, produce_to};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_a_failed_attempt_not_a_delivery() {
    let followed = Arc::new(AtomicU64::new(0));
    let f = followed.clone();
    let app = Router::new()
        .route(
            "/h",
            post(|| async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/ok")]) }),
        )
        .route(
            "/ok",
            any(move || {
                let f = f.clone();
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                }
            }),
        );
    let base = serve(app).await;
    let topic = unique("engine-redirect");
    create_topic(&topic, 1).await.unwrap();
    let mut s = http_subscriber("redirected", &topic, &format!("{base}/h"));
    s.max_attempts = Some(1);
    let cfg = dispatcher_config(vec![s]);
    let dlq = cfg.dead_letter_topic("redirected");
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let env = envelope(7);
    produce_to(&producer().unwrap(), &topic, 0, "k", &env).await;

    let dead = read(&dlq, 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(dead.len(), 1, "the redirected record was not dead-lettered");
    let error = record_header(&dead[0], events::header::LAST_ERROR).unwrap_or_default();
    assert!(
        error.contains("301") && error.contains("redirect not followed"),
        "last error names the redirect: {error:?}"
    );
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let metrics_url = dispatcher.url("/metrics");
    assert_eq!(
        metric(
            &metrics_url,
            "switchyard_dispatch_deliveries_total",
            "redirected"
        )
        .await
        .unwrap_or(0.0),
        0.0,
        "a redirect counted as a delivery"
    );
    dispatcher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_response_body_is_read_only_up_to_the_bound() {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = Router::new().route(
        "/h",
        post(move || {
            let counter = counter.clone();
            async move {
                let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                let stream = futures::stream::repeat_with(move || {
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from_stream(stream))
                    .unwrap()
                    .into_response()
            }
        }),
    );
    let base = serve(app).await;
    let topic = unique("engine-bigbody");
    create_topic(&topic, 1).await.unwrap();
    let mut s = http_subscriber("bigbody", &topic, &format!("{base}/h"));
    // A total timeout far beyond the test's wait: only a bounded read can finish in time.
    if let switchyard_dispatcher::config::Target::Http(h) = &mut s.target {
        h.timeout_ms = 120_000;
    }
    let mut cfg = dispatcher_config(vec![s]);
    cfg.webhooks.max_response_bytes = 256 * 1024;
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let p = producer().unwrap();
    for i in 0..3 {
        produce_to(&p, &topic, 0, "same-key", &envelope(100 + i)).await;
    }
    let metrics_url = dispatcher.url("/metrics");
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(
                &metrics_url,
                "switchyard_dispatch_deliveries_total",
                "bigbody",
            )
            .await
            .is_some_and(|v| v >= 3.0)
        })
        .await,
        "three records with endless answers were not delivered well within the 120 s timeout"
    );
    let total = sent.load(Ordering::SeqCst);
    assert!(
        total < 64 * 1024 * 1024,
        "the dispatcher kept reading: {total} bytes sent for 3 responses"
    );
    dispatcher.stop().await.unwrap();
}
