//! Publishing envelopes: the future resolves only once the broker acknowledged the record
//! (`acks=all`, idempotent producer), or fails within the configured bound.

use std::time::{Duration, Instant};

use events::{Envelope, HEADER_EVENT_TYPE};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use switchyard_runtime::KafkaSettings;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("creating the producer")]
    Create(#[source] rdkafka::error::KafkaError),
    #[error("delivery failed")]
    Delivery(#[source] rdkafka::error::KafkaError),
    #[error("no broker acknowledgement within {0:?}")]
    Timeout(Duration),
}

/// Where ingress sends envelopes.
#[derive(Clone)]
pub enum Publisher {
    /// The real path: a Kafka producer.
    Kafka {
        producer: FutureProducer,
        timeout: Duration,
    },
    /// Benchmark baseline only: validates and answers without any broker.
    Discard,
}

impl Publisher {
    pub fn kafka(settings: &KafkaSettings, role: &str) -> Result<Self, PublishError> {
        let producer = settings
            .producer_config(role)
            .create()
            .map_err(PublishError::Create)?;
        Ok(Self::Kafka {
            producer,
            timeout: settings.produce_timeout(),
        })
    }

    /// Publishes `envelope` to `topic` under `key`, returning after the broker ack.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
    ) -> Result<(), PublishError> {
        let Self::Kafka { producer, timeout } = self else {
            return Ok(());
        };
        let payload = envelope.to_bytes();
        let mut headers = OwnedHeaders::new().insert(Header {
            key: HEADER_EVENT_TYPE,
            value: Some(envelope.event_type.as_str()),
        });
        if let Some(trace) = envelope
            .trace
            .as_ref()
            .filter(|t| !t.traceparent.is_empty())
        {
            headers = headers.insert(Header {
                key: switchyard_runtime::trace::HEADER,
                value: Some(trace.traceparent.as_str()),
            });
            if !trace.tracestate.is_empty() {
                headers = headers.insert(Header {
                    key: switchyard_runtime::trace::STATE_HEADER,
                    value: Some(trace.tracestate.as_str()),
                });
            }
        }
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(&payload)
            .headers(headers);
        let started = Instant::now();
        let send = producer.send(record, Timeout::After(*timeout));
        // message.timeout.ms bounds the delivery; this outer bound also covers a full queue.
        match tokio::time::timeout(*timeout + Duration::from_millis(500), send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(PublishError::Delivery(e)),
            Err(_) => Err(PublishError::Timeout(started.elapsed())),
        }
    }

    /// True when the broker answers a metadata request within `within`.
    pub async fn broker_reachable(&self, within: Duration) -> bool {
        let Self::Kafka { producer, .. } = self else {
            return true;
        };
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(within))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits up to `within` for records still in flight.
    pub fn flush(&self, within: Duration) {
        if let Self::Kafka { producer, .. } = self {
            let _ = producer.flush(Timeout::After(within));
        }
    }
}
