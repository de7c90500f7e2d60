//! The circuit breaker against the real broker and a real HTTP target: a dead target opens it
//! and the backlog parks in the first retry tier without in-process attempts; once the target
//! is back, a probe closes it and everything is delivered. A `410 Gone` pauses the subscriber,
//! says why in the admin API and metrics, and a resume delivers again.

use std::collections::HashSet;
use std::time::Duration;

use events::Envelope;
use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, producer, read};
use integration_tests::*;
use rdkafka::Message;
use switchyard_dispatcher::admin_api::SubscriberView;
use switchyard_dispatcher::config::BreakerConfig;

use crate::engine_support::{
    all_delivered, delivered_ids, envelope, eventually, metric, produce_to, subscriber_view,
};

const TOKEN: &str = "engine-breaker-token-0123456789";
const RECORDS: u64 = 300;

async fn view(base: &str, name: &str) -> Option<SubscriberView> {
    subscriber_view(base, TOKEN, name).await
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_target_opens_the_breaker_and_a_probe_closes_it() {
    let topic = unique("engine-breaker");
    create_topic(&topic, 2).await.unwrap();
    let target = FakeSubscriber::start(Script::AlwaysFail { status: 503 })
        .await
        .unwrap();
    let mut s = http_subscriber("breaker", &topic, &target.url("/hook"));
    s.concurrency = 8;
    s.breaker = BreakerConfig {
        consecutive_failures: 5,
        open_ms: 3_000,
        ..Default::default()
    };
    let mut cfg = dispatcher_config(vec![s]);
    cfg.retry.in_process_attempts = 3;
    // Long enough that no parked record comes back before the whole backlog is parked once.
    cfg.retry.tiers_ms = vec![5_000];
    cfg.admin.token = Some(TOKEN.into());
    let retry0 = cfg.retry_topic("breaker", 0);
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let base = format!("http://{}", dispatcher.addr);
    let metrics_url = dispatcher.url("/metrics");
    let p = producer().unwrap();

    let mut ids = HashSet::new();
    for i in 0..RECORDS {
        let env = envelope(7_000_000 + i);
        ids.insert(env.event_id.clone());
        produce_to(
            &p,
            &topic,
            i32::try_from(i % 2).unwrap(),
            &format!("k{i}"),
            &env,
        )
        .await;
    }

    // Every record parks in the first tier while the target has seen only a handful of
    // attempts: without the breaker it would see 3 per record.
    let parked: HashSet<String> = read(&retry0, RECORDS as usize, Duration::from_secs(60))
        .await
        .unwrap()
        .iter()
        .filter_map(|m| Envelope::from_bytes(m.payload()?).ok())
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        parked, ids,
        "the backlog did not park in the first retry tier"
    );
    let attempts = target.received().len();
    assert!(
        attempts < 60,
        "{attempts} attempts reached the dead target for {RECORDS} records"
    );
    assert!(
        metric(
            &metrics_url,
            "switchyard_dispatch_short_circuited_total",
            "breaker"
        )
        .await
        .is_some_and(|n| n >= (RECORDS - 60) as f64),
        "records were not parked without attempts"
    );
    // Open, or half-open while a probe fails.
    assert!(
        metric(&metrics_url, "switchyard_dispatch_breaker_state", "breaker")
            .await
            .is_some_and(|s| s >= 1.0),
        "breaker state gauge is not open"
    );
    let v = view(&base, "breaker").await.unwrap();
    assert_ne!(v.breaker, "closed");
    assert!(v.breaker_transitions >= 1);
    assert!(v.parked >= RECORDS - 30, "parked {}", v.parked);
    assert_eq!(v.delivered, 0);

    // The target recovers: a probe closes the breaker and the backlog (now in the retry tier)
    // is delivered, every record.
    target.set_script(Script::Ok);
    assert!(
        all_delivered(&target, &ids, Duration::from_secs(90)).await,
        "delivered {} of {RECORDS} after recovery",
        delivered_ids(&target).len()
    );
    let v = view(&base, "breaker").await.unwrap();
    assert_eq!(v.breaker, "closed");
    // closed -> open -> half-open -> closed at least
    assert!(v.breaker_transitions >= 3, "{v:?}");
    assert_eq!(
        metric(&metrics_url, "switchyard_dispatch_breaker_state", "breaker").await,
        Some(0.0)
    );
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for to in ["open", "half_open", "closed"] {
        let line = format!(
            "switchyard_dispatch_breaker_transitions_total{{subscriber=\"breaker\",to=\"{to}\"}} "
        );
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 1.0, "no transition to {to}:\n{text}");
    }
    dispatcher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_target_pauses_the_subscriber_until_resumed() {
    let topic = unique("engine-gone");
    create_topic(&topic, 1).await.unwrap();
    let target = FakeSubscriber::start(Script::AlwaysFail { status: 410 })
        .await
        .unwrap();
    let s = http_subscriber("gone", &topic, &target.url("/hook"));
    let mut cfg = dispatcher_config(vec![s]);
    cfg.admin.token = Some(TOKEN.into());
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let base = format!("http://{}", dispatcher.addr);
    let metrics_url = dispatcher.url("/metrics");
    let p = producer().unwrap();

    let mut ids = HashSet::new();
    for i in 0..20 {
        let env = envelope(8_000_000 + i);
        ids.insert(env.event_id.clone());
        produce_to(&p, &topic, 0, &format!("k{i}"), &env).await;
    }
    let b = base.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            let b = b.clone();
            async move {
                view(&b, "gone").await.is_some_and(|v| {
                    v.state == "paused"
                        && v.paused_reason
                            .as_deref()
                            .is_some_and(|r| r.contains("410"))
                })
            }
        })
        .await,
        "a 410 did not pause the subscriber with a reason"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&metrics_url, "switchyard_dispatch_subscriber_gone", "gone").await == Some(1.0)
                && metric(
                    &metrics_url,
                    "switchyard_dispatch_subscriber_paused",
                    "gone",
                )
                .await
                    == Some(1.0)
        })
        .await,
        "gone/paused gauges not raised"
    );
    // Paused: the target hears nothing more (at most the records already in flight).
    let heard = target.received().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        target.received().len() <= heard + 8,
        "still delivering while paused by 410: {} then {}",
        heard,
        target.received().len()
    );
    assert!(target.delivered().is_empty());

    target.set_script(Script::Ok);
    let resumed = reqwest::Client::new()
        .post(format!("{base}/admin/api/subscribers/gone/resume"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resumed.status().is_success());
    assert!(
        all_delivered(&target, &ids, Duration::from_secs(60)).await,
        "delivered {} of 20 after resume",
        delivered_ids(&target).len()
    );
    let v = view(&base, "gone").await.unwrap();
    assert_eq!(v.state, "running");
    assert_eq!(v.paused_reason, None);
    dispatcher.stop().await.unwrap();
}
