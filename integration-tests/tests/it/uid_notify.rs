//! uid-notify end to end: ingress -> real broker -> dispatcher -> subscribers played by real
//! HTTP servers.

use std::collections::HashSet;
use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, header, read};
use integration_tests::*;
use serde_json::{json, Value};
use switchyard_dispatcher::sign::SigningKey;

const WAIT: Duration = Duration::from_secs(30);

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = ingress_client().post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn setup_topic() -> String {
    let topic = unique("uid");
    create_topic(&topic, 3).await.unwrap();
    topic
}

/// The uid-notify path of one test: a fresh topic, an ingress publishing to it and a
/// dispatcher with the subscribers `subscribers` makes for it.
struct Flow {
    topic: String,
    ingress: Running,
    dispatcher: Running,
    /// The dispatcher's config (its topic names carry a prefix of their own).
    config: switchyard_dispatcher::DispatcherConfig,
}

impl Flow {
    async fn start(
        subscribers: impl FnOnce(&str) -> Vec<switchyard_dispatcher::config::SubscriberConfig>,
    ) -> Self {
        let topic = setup_topic().await;
        let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
        let config = dispatcher_config(subscribers(&topic));
        let dispatcher = start_dispatcher(config.clone()).await.unwrap();
        Self {
            topic,
            ingress,
            dispatcher,
            config,
        }
    }

    /// One HTTP subscriber `name`, played by a fake answering with `script`.
    async fn one(
        name: &str,
        script: Script,
        tweak: impl FnOnce(&mut switchyard_dispatcher::config::SubscriberConfig),
    ) -> (Self, FakeSubscriber) {
        let sub = FakeSubscriber::start(script).await.unwrap();
        let flow = Self::start(|topic| {
            let mut s = http_subscriber(name, topic, &sub.url("/hook"));
            tweak(&mut s);
            vec![s]
        })
        .await;
        (flow, sub)
    }

    /// `POST /v1/uid-notify` with `body`: status and JSON answer.
    async fn notify(&self, body: &Value) -> (u16, Value) {
        post(&self.ingress.url("/v1/uid-notify"), body).await
    }

    async fn stop(self) {
        self.dispatcher.stop().await.unwrap();
        self.ingress.stop().await.unwrap();
    }
}

fn http_target(
    s: &mut switchyard_dispatcher::config::SubscriberConfig,
) -> &mut switchyard_dispatcher::config::HttpTarget {
    match &mut s.target {
        switchyard_dispatcher::config::Target::Http(h) => h,
        switchyard_dispatcher::config::Target::Topic(_) => unreachable!("an HTTP subscriber"),
    }
}

#[tokio::test]
async fn bind_is_delivered_with_body_token_and_valid_signature() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (flow, sub) = Flow::one("signed", Script::Ok, |s| {
        let h = http_target(s);
        h.secret = Some(secret.into());
        h.headers.insert("x-team".into(), "ids".into());
    })
    .await;

    let (status, resp) = flow
        .notify(&json!({"portal_uid": 42, "phonish_uid": 7, "event_type": "bind", "event_timestamp": "2026-11-23T10:00:00+03:00"}))
        .await;
    assert_eq!(status, 200, "{resp}");
    let event_id = resp["event_id"].as_str().unwrap().to_owned();

    assert!(sub.wait_delivered(1, WAIT).await, "not delivered");
    let got = &sub.delivered()[0];
    assert_eq!(got.header("x-idempotency-token"), Some("42-7-bind"));
    assert_eq!(got.header("x-team"), Some("ids"));
    assert_eq!(
        got.json(),
        json!({"event_id": event_id, "event_type": "bind", "portal_uid": 42, "phonish_uid": 7,
               "occurred_at": "2026-11-23T07:00:00.000Z"})
    );
    // Verify as a subscriber would.
    assert_eq!(got.header("webhook-id"), Some(event_id.as_str()));
    let ts: i64 = got.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 300);
    let key = SigningKey::from_secret(secret);
    assert!(key.verify(
        &event_id,
        ts,
        &got.body,
        got.header("webhook-signature").unwrap()
    ));
    assert!(!key.verify(
        &event_id,
        ts,
        b"tampered",
        got.header("webhook-signature").unwrap()
    ));

    // The body matches the published JSON Schema.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("schemas/webhooks/uid-notify.v1.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(jsonschema::is_valid(&schema, &got.json()));

    // 200 meant the record was on the broker: read it back, keyed by the phonish account.
    let records = read(&flow.topic, 1, WAIT).await.unwrap();
    assert_eq!(records.len(), 1);
    let env =
        events::Envelope::from_bytes(rdkafka::Message::payload(&records[0]).unwrap()).unwrap();
    assert_eq!(env.event_id, event_id);
    assert_eq!(rdkafka::Message::key(&records[0]), Some(&b"7"[..]));
    assert_eq!(
        header(&records[0], "sy-event-type").as_deref(),
        Some("uid.bind")
    );

    flow.stop().await;
}

#[tokio::test]
async fn unbind_goes_only_to_unbind_subscribers() {
    let binds = FakeSubscriber::start(Script::Ok).await.unwrap();
    let both = FakeSubscriber::start(Script::Ok).await.unwrap();
    let flow = Flow::start(|topic| {
        let mut only_bind = http_subscriber("only-bind", topic, &binds.url("/b"));
        only_bind.event_types = vec!["uid.bind".into()];
        let mut all = http_subscriber("both", topic, &both.url("/a"));
        all.event_types = vec!["uid.bind".into(), "uid.unbind".into()];
        vec![only_bind, all]
    })
    .await;

    for (p, et) in [(1, "bind"), (1, "unbind"), (2, "unbind")] {
        let (status, _) = flow
            .notify(&json!({"portal_uid": 100, "phonish_uid": p, "event_type": et}))
            .await;
        assert_eq!(status, 200);
    }
    assert!(both.wait_delivered(3, WAIT).await);
    assert!(binds.wait_delivered(1, WAIT).await);
    // The unbinds were skipped for the bind-only subscriber, not merely late: `both` already
    // has all three, and both subscribers read the same partitions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tokens: Vec<String> = binds
        .delivered()
        .iter()
        .map(|r| r.header("x-idempotency-token").unwrap().to_owned())
        .collect();
    assert_eq!(tokens, vec!["100-1-bind"]);
    let mut all_tokens: Vec<String> = both
        .delivered()
        .iter()
        .map(|r| r.header("x-idempotency-token").unwrap().to_owned())
        .collect();
    all_tokens.sort();
    assert_eq!(
        all_tokens,
        vec!["100-1-bind", "100-1-unbind", "100-2-unbind"]
    );
    flow.stop().await;
}

#[tokio::test]
async fn failing_subscriber_receives_the_event_after_recovery_with_the_same_token() {
    // 2 in-process attempts per pass: 5 failures span the main topic and two retry tiers.
    let script = Script::FailFirst {
        n: 5,
        status: 500,
        retry_after: None,
    };
    let (flow, sub) = Flow::one("flaky", script, |_| {}).await;
    let (status, _) = flow
        .notify(&json!({"portal_uid": 5, "phonish_uid": 6, "event_type": "unbind"}))
        .await;
    assert_eq!(status, 200);
    assert!(
        sub.wait_delivered(1, WAIT).await,
        "never delivered: {:?}",
        sub.received().len()
    );
    let all = sub.received();
    assert!(
        all.len() >= 6,
        "5 failures then a success, got {}",
        all.len()
    );
    assert!(all
        .iter()
        .all(|r| r.header("x-idempotency-token") == Some("5-6-unbind")));
    let ids: HashSet<_> = all.iter().map(|r| r.json()["event_id"].clone()).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same event");
    flow.stop().await;
}

#[tokio::test]
async fn retry_after_on_503_is_honoured() {
    let script = Script::FailFirst {
        n: 1,
        status: 503,
        retry_after: Some(1),
    };
    let (flow, sub) = Flow::one("ra", script, |_| {}).await;
    let (status, _) = flow
        .notify(&json!({"portal_uid": 8, "phonish_uid": 9, "event_type": "bind"}))
        .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    assert!(sub.wait_delivered(1, WAIT).await);
    // The configured backoff is 20-100 ms; only Retry-After explains a wait of >= 1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sub.received().len(), 2);
    flow.stop().await;
}

/// Standard Webhooks rotation: with an old and a new secret, each delivery carries both
/// signatures, so a subscriber holding either one accepts it.
#[tokio::test]
async fn a_rotating_secret_signs_every_delivery_with_each_key() {
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_bmV3LXNlY3JldC1mb3Itcm90YXRpb24=";
    let (flow, sub) = Flow::one("rotating", Script::Ok, |s| {
        let h = http_target(s);
        h.secret = Some(old.into());
        h.secrets = vec![new.into()];
    })
    .await;
    let (status, resp) = flow
        .notify(&json!({"portal_uid": 43, "phonish_uid": 8, "event_type": "unbind"}))
        .await;
    assert_eq!(status, 200, "{resp}");
    let event_id = resp["event_id"].as_str().unwrap().to_owned();
    assert!(sub.wait_delivered(1, WAIT).await, "not delivered");
    let got = &sub.delivered()[0];
    let ts: i64 = got.header("webhook-timestamp").unwrap().parse().unwrap();
    let header = got.header("webhook-signature").unwrap();
    assert_eq!(header.split(' ').count(), 2, "{header}");
    for secret in [old, new] {
        let key = SigningKey::from_secret(secret);
        assert!(key.verify(&event_id, ts, &got.body, header), "{secret}");
    }
    let stranger = SigningKey::from_secret("whsec_c3RyYW5nZXI=");
    assert!(!stranger.verify(&event_id, ts, &got.body, header));
    flow.stop().await;
}

#[tokio::test]
async fn dead_subscriber_does_not_delay_a_healthy_one() {
    let dead = FakeSubscriber::start(Script::AlwaysFail { status: 500 })
        .await
        .unwrap();
    let healthy = FakeSubscriber::start(Script::Ok).await.unwrap();
    let flow = Flow::start(|topic| {
        vec![
            http_subscriber("dead", topic, &dead.url("/d")),
            http_subscriber("healthy", topic, &healthy.url("/h")),
        ]
    })
    .await;
    // Each subscriber is its own consumer group and joins on its own schedule: first see the
    // dead one failing, then show the healthy one drains everything while it keeps failing.
    let post_one = |i: u64| {
        let flow = &flow;
        async move {
            let (status, _) = flow
                .notify(&json!({"portal_uid": 1000 + i, "phonish_uid": i, "event_type": "bind"}))
                .await;
            assert_eq!(status, 200);
        }
    };
    post_one(1).await;
    assert!(
        dead.wait_until(WAIT, |r| !r.is_empty()).await,
        "the dead subscriber was never tried"
    );
    let tried_before = dead.received().len();
    for i in 2..=30u64 {
        post_one(i).await;
    }
    assert!(
        healthy.wait_delivered(30, WAIT).await,
        "healthy got {}",
        healthy.delivered().len()
    );
    assert!(dead.delivered().is_empty());
    assert!(
        dead.wait_until(WAIT, |r| r.len() > tried_before).await,
        "the dead one kept being retried meanwhile"
    );
    flow.stop().await;
}

#[tokio::test]
async fn max_attempts_moves_the_record_to_the_dead_letter_topic() {
    let (flow, sub) = Flow::one("doomed", Script::AlwaysFail { status: 502 }, |s| {
        s.max_attempts = Some(3);
    })
    .await;
    let dlq = flow.config.dead_letter_topic("doomed");
    let (status, resp) = flow
        .notify(&json!({"portal_uid": 3, "phonish_uid": 4, "event_type": "bind"}))
        .await;
    assert_eq!(status, 200);
    let dead = read(&dlq, 1, WAIT).await.unwrap();
    assert_eq!(dead.len(), 1, "nothing in {dlq}");
    let env = events::Envelope::from_bytes(rdkafka::Message::payload(&dead[0]).unwrap()).unwrap();
    assert_eq!(env.event_id, resp["event_id"].as_str().unwrap());
    assert_eq!(header(&dead[0], "sy-attempts").as_deref(), Some("3"));
    assert_eq!(
        header(&dead[0], "sy-last-error").as_deref(),
        Some("http status 502")
    );
    assert_eq!(header(&dead[0], "sy-subscriber").as_deref(), Some("doomed"));
    assert_eq!(sub.received().len(), 3, "exactly max_attempts attempts");
    flow.stop().await;
}

/// One trace id links the ingress request, the Kafka record and the subscriber's request; each
/// hop gets its own span id.
#[tokio::test]
async fn traceparent_travels_from_ingress_request_to_the_webhook() {
    let (flow, sub) = Flow::one("traced", Script::Ok, |_| {}).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = ingress_client()
        .post(flow.ingress.url("/v1/uid-notify"))
        .header("traceparent", incoming)
        .json(&json!({"portal_uid": 11, "phonish_uid": 12, "event_type": "bind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Without an incoming traceparent the ingress starts a trace of its own.
    let (status, _) = flow
        .notify(&json!({"portal_uid": 13, "phonish_uid": 14, "event_type": "bind"}))
        .await;
    assert_eq!(status, 200);

    let records = read(&flow.topic, 2, WAIT).await.unwrap();
    let record_tp = records
        .iter()
        .find(|r| rdkafka::Message::key(*r) == Some(&b"12"[..]))
        .and_then(|r| header(r, "traceparent"))
        .expect("record carries traceparent");
    assert!(
        record_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{record_tp}"
    );
    assert_ne!(record_tp, incoming, "the record is a new span");

    assert!(sub.wait_delivered(2, WAIT).await);
    for got in sub.delivered() {
        let tp = got
            .header("traceparent")
            .expect("webhook carries traceparent")
            .to_owned();
        let parsed = switchyard_runtime::trace::parse(&tp).expect("valid traceparent");
        let trace_id = parsed.trace_id().to_string();
        if got.json()["phonish_uid"] == 12 {
            assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(tp, record_tp, "the delivery is a new span");
        } else {
            assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }
    flow.stop().await;
}

/// The dispatcher exports per-subscriber delivery counters and consumer lag per partition.
#[tokio::test]
async fn dispatcher_metrics_show_deliveries_and_consumer_lag() {
    let (flow, sub) = Flow::one("metered", Script::Ok, |_| {}).await;
    let topic = &flow.topic;
    for i in 1..=5u64 {
        let (status, _) = flow
            .notify(&json!({"portal_uid": 70 + i, "phonish_uid": i, "event_type": "bind"}))
            .await;
        assert_eq!(status, 200);
    }
    assert!(sub.wait_delivered(5, WAIT).await);
    let url = flow.dispatcher.url("/metrics");
    let mut text = String::new();
    let lag_line =
        format!(r#"switchyard_dispatch_consumer_lag{{subscriber="metered",topic="{topic}""#);
    for _ in 0..40 {
        text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if text.contains(&lag_line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        text.contains(r#"switchyard_dispatch_deliveries_total{subscriber="metered"} 5"#),
        "{text}"
    );
    assert!(text.contains(&lag_line), "no lag gauge: {text}");
    flow.stop().await;
}
