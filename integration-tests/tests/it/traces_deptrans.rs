//! deptrans's trace: a driver status crosses the PostgreSQL queue, where many statuses are
//! batched, so the consumer's and the KRT sender's batch spans are linked to the trace of each
//! status (the OpenTelemetry convention for batches) instead of continuing one of them. This
//! test follows one status from the caller's `traceparent` through ingress, the consumer's
//! batch and the sender's batch to the KRT request, all exported to an in-process OTLP receiver.
//!
//! The OTLP endpoint is read once per process, so this file holds one test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use crate::support::deptrans_common;
use crate::support::otlp_common;
use deptrans_common::*;
use otlp_common::{flush, Collector, Got};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_trace_is_linked_from_the_queue_batches_to_the_krt_request() {
    let collector = Collector::default();
    collector.install().await;

    let env = env(1).await;
    let f = &env.fakes.state;
    f.add_driver("p1", "d1", "L-d1", &["econom"], MOSCOW.0, MOSCOW.1);
    let mut icfg = integration_tests::ingress_config(&integration_tests::unique("unused"));
    icfg.driver_status.topic = env.topic.clone();
    let ingress = integration_tests::start_ingress(icfg, None)
        .await
        .expect("ingress");
    let svc = start(env.config()).await;

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let resp = integration_tests::ingress_client()
        .post(ingress.url("/v1/driver-status"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"park_id": "p1", "driver_profile_id": "d1", "status": "online", "updated_at": at(1)}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);

    eventually("status pushed to KRT", || async { !f.pushed().is_empty() }).await;
    let push_tp = f
        .push_traceparents()
        .into_iter()
        .flatten()
        .last()
        .expect("the KRT push carries a traceparent");
    let push = switchyard_runtime::trace::parse(&push_tp).expect("valid traceparent");
    let push_span = push.span_id().to_string();
    let send_trace = push.trace_id().to_string();
    assert_ne!(
        send_trace, trace_id,
        "the sender's batch is a trace of its own"
    );

    // The sender's batch span ends after KRT answered and the answer was committed.
    let deadline = Instant::now() + WAIT;
    let (status_trace, send_spans) = loop {
        flush().await;
        let status_trace = collector.trace(&trace_id);
        let send_spans = collector.trace(&send_trace);
        let pushed = send_spans.iter().find(|s| s.span_id == push_span);
        let batch_done =
            pushed.is_some_and(|p| send_spans.iter().any(|s| s.span_id == p.parent_id));
        let stored = collector.all().iter().any(|s| {
            s.links.iter().any(|l| l.0 == trace_id) && s.kind == SpanKind::Consumer as i32
        });
        if batch_done && stored {
            break (status_trace, send_spans);
        }
        assert!(
            Instant::now() < deadline,
            "spans missing; status trace {status_trace:#?} send trace {send_spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The status's own trace: caller -> ingress request -> publish.
    let server = status_trace
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("an ingress server span");
    assert_eq!(server.name, "POST /v1/driver-status");
    assert_eq!(server.parent_id, caller_span);
    let publish = status_trace
        .iter()
        .find(|s| s.kind == SpanKind::Producer as i32)
        .expect("a publish span");
    assert_eq!(publish.name, format!("publish {}", env.topic));
    assert_eq!(publish.parent_id, server.span_id);
    let origin = (trace_id.clone(), publish.span_id.clone());

    // The consumer's batch span links to the record's publish span.
    let all = collector.all();
    let store = all
        .iter()
        .find(|s| s.kind == SpanKind::Consumer as i32 && s.links.contains(&origin))
        .unwrap_or_else(|| panic!("no consumer span links to {origin:?}"));
    assert_eq!(store.name, format!("store statuses {}", env.topic));
    assert_eq!(store.attributes["messaging.destination.name"], env.topic);

    // KRT request (client) -> sender batch span, which links to the same publish span.
    let by_id: HashMap<&str, &Got> = send_spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let krt = by_id[push_span.as_str()];
    assert_eq!(krt.kind, SpanKind::Client as i32, "{krt:?}");
    assert_eq!(krt.attributes["http.response.status_code"], "200");
    let batch = by_id[krt.parent_id.as_str()];
    assert_eq!(batch.name, "send statuses to krt");
    assert!(
        batch.links.contains(&origin),
        "sender batch links {:?}, want {origin:?}",
        batch.links
    );
    assert_eq!(batch.attributes["sent"], "1");

    svc.stop().await;
    ingress.stop().await.expect("ingress stop");
}
