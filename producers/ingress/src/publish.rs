//! Publishing envelopes: the future resolves only once the broker acknowledged the record
//! (`acks=all`, idempotent producer), or fails within the configured bound.

use std::time::{Duration, Instant};

use events::Envelope;
use rdkafka::producer::{FutureProducer, Producer};
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
        let record = switchyard_runtime::kafka::envelope_record(topic, key, &payload, envelope);
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
