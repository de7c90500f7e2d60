//! A subscriber whose target is a topic: each delivery is a record on it, keyed like the
//! source record, with the source envelope's standard headers.

use std::time::Duration;

use events::Envelope;
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::http_target::Attempt;
use crate::render::Rendered;

/// Delivery as a record on another topic, keyed like the source record.
#[derive(Clone)]
pub(crate) struct TopicSink {
    pub producer: FutureProducer,
    pub topic: String,
}

impl TopicSink {
    /// The record carries the source envelope's standard headers (`sy-event-type`, `sy-tag`, the
    /// delivery's hop of the trace with the envelope's `tracestate`), so a consumer of the sink
    /// topic filters and traces it like any envelope record, plus the delivery's own: event id,
    /// idempotency key and, for a mark, the caller kind.
    pub(crate) async fn attempt(
        &self,
        key: Option<&[u8]>,
        env: &Envelope,
        r: &Rendered,
    ) -> Attempt {
        let hop = r.traceparent.as_ref().map(|tp| events::v1::TraceContext {
            traceparent: tp.clone(),
            tracestate: env
                .trace
                .as_ref()
                .map(|t| t.tracestate.clone())
                .unwrap_or_default(),
        });
        let mut headers = switchyard_runtime::kafka::envelope_headers_of(env, hop.as_ref())
            .insert(Header {
                key: events::header::EVENT_ID,
                value: Some(env.event_id.as_str()),
            })
            .insert(Header {
                key: events::header::IDEMPOTENCY_KEY,
                value: Some(r.idempotency_key.as_str()),
            });
        if let Some(kind) = r.caller_kind {
            headers = headers.insert(Header {
                key: events::header::CALLER_KIND,
                value: Some(kind),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&r.body[..])
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        match self
            .producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
        {
            Ok(_) => Attempt::Delivered { status: None },
            Err((e, _)) => Attempt::Failed {
                error: format!("produce failed: {e}"),
                retry_after: None,
                status: None,
                excerpt: None,
            },
        }
    }
}
