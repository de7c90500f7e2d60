//! OpenTelemetry end to end: the services export spans over OTLP/HTTP to an in-process
//! receiver, and one trace links the caller's `traceparent`, the ingress request, the consumer
//! and the subscriber's request.
//!
//! The OTLP endpoint is read from the environment when tracing is first set up, so this file
//! holds one test (nextest runs it in a process of its own); deptrans's trace, which crosses
//! its PostgreSQL queue by span links, is in tracing_deptrans.rs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::create_topic;
use integration_tests::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use crate::support::otlp_common;
use otlp_common::{flush, Collector, Got};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn one_trace_links_ingress_request_consumer_and_subscriber_request() {
    let collector = Collector::default();
    collector.install().await;

    let topic = unique("traced");
    create_topic(&topic, 3).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let dispatcher = start_dispatcher(dispatcher_config(vec![http_subscriber(
        "traced",
        &topic,
        &sub.url("/hook"),
    )]))
    .await
    .unwrap();

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let resp = ingress_client()
        .post(ingress.url("/v1/uid-notify"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"portal_uid": 21, "phonish_uid": 22, "event_type": "bind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    assert!(sub.wait_delivered(1, WAIT).await, "not delivered");
    let webhook_tp = sub.delivered()[0]
        .header("traceparent")
        .expect("webhook carries traceparent")
        .to_owned();
    let webhook = switchyard_runtime::trace::parse(&webhook_tp).expect("valid traceparent");
    assert_eq!(webhook.trace_id().to_string(), trace_id, "{webhook_tp}");
    let webhook_parent = webhook.span_id().to_string();

    // The consumer span ends once the delivery is settled, just after the webhook answered.
    let deadline = Instant::now() + WAIT;
    let spans = loop {
        flush().await;
        let spans = collector.trace(&trace_id);
        if spans.iter().any(|s| s.span_id == webhook_parent) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "no exported span is the webhook's parent {webhook_parent}: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_id: HashMap<&str, &Got> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();

    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("an ingress server span");
    assert_eq!(server.name, "POST /v1/uid-notify");
    assert_eq!(server.parent_id, caller_span, "continues the caller's span");
    assert_eq!(server.attributes["http.response.status_code"], "200");

    let consumer = by_id[webhook_parent.as_str()];
    assert_eq!(consumer.kind, SpanKind::Consumer as i32, "{consumer:?}");
    assert_eq!(consumer.name, "deliver traced");
    assert_eq!(consumer.attributes["messaging.destination.name"], topic);

    // consumer -> publish (producer) -> ingress request, all exported, all of this trace.
    let mut chain = vec![consumer];
    while let Some(parent) = by_id.get(chain.last().unwrap().parent_id.as_str()) {
        chain.push(parent);
    }
    let kinds: Vec<i32> = chain.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SpanKind::Consumer as i32,
            SpanKind::Producer as i32,
            SpanKind::Server as i32
        ],
        "{chain:#?}"
    );
    assert_eq!(chain[1].name, format!("publish {topic}"));
    assert_eq!(chain[2].span_id, server.span_id);
    for span in &spans {
        assert_eq!(span.service, "switchyard-tracing-test", "OTEL_SERVICE_NAME");
    }

    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}
