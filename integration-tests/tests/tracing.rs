//! OpenTelemetry end to end: the services export spans over OTLP/HTTP to an in-process
//! receiver, and one trace links the caller's `traceparent`, the ingress request, the consumer
//! and the subscriber's request.
//!
//! The OTLP endpoint is read from the environment when tracing is first set up, so this file
//! holds one test (nextest runs it in a process of its own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::create_topic;
use integration_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// One exported span, ids in hex.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
}

/// A real OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Collector {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn trace(&self, trace_id: &str) -> Vec<Got> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut got = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Got {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_id: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes: attributes(&span.attributes),
            });
        }
    }
    collector.spans.lock().unwrap().extend(got);
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, answer)
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exports what is buffered; blocking, so off the runtime that serves the receiver.
async fn flush() {
    tokio::task::spawn_blocking(switchyard_runtime::telemetry::flush_tracing)
        .await
        .unwrap()
        .expect("span export flushed");
}

#[tokio::test]
async fn one_trace_links_ingress_request_consumer_and_subscriber_request() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    // Read once, when the first service sets up tracing.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_SERVICE_NAME", "switchyard-tracing-test");
    std::env::remove_var("OTEL_SDK_DISABLED");
    std::env::remove_var("OTEL_TRACES_EXPORTER");
    std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");

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
    let resp = reqwest::Client::new()
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
