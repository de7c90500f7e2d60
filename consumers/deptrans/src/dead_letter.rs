//! Dead letters of the status consumer: a source record deptrans cannot use is copied (key,
//! value, headers) to its source's dead-letter topic with why and where from in `sy-*`
//! headers. The consumer stores the record's offset only after the broker acknowledged the
//! copy, so nothing is lost, and a bad record never holds its partition up for longer than
//! the dead-letter topic is unreachable.

use std::sync::Arc;
use std::time::Duration;

use events::header;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_runtime::KafkaSettings;
use tokio_util::sync::CancellationToken;

use super::metrics::DeptransMetrics;

/// Longest wait between two tries of a dead-letter produce.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// `sy-last-error` is cut to this many characters.
const ERROR_MAX_CHARS: usize = 1_000;

/// A source record refused by its decoder, waiting to be parked.
#[derive(Debug)]
pub struct BadRecord {
    pub msg: OwnedMessage,
    /// `crate::records::reason`.
    pub reason: &'static str,
    /// The decoder's message (names the field).
    pub error: String,
    pub dead_letter_topic: String,
}

impl BadRecord {
    /// The record's headers, then why and where from.
    pub fn headers(&self) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        if let Some(h) = self.msg.headers() {
            for h in h.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let error: String = self.error.chars().take(ERROR_MAX_CHARS).collect();
        let (partition, offset) = (
            self.msg.partition().to_string(),
            self.msg.offset().to_string(),
        );
        for (key, value) in [
            (header::DLQ_REASON, self.reason),
            (header::LAST_ERROR, error.as_str()),
            (header::SOURCE_TOPIC, self.msg.topic()),
            (header::SOURCE_PARTITION, partition.as_str()),
            (header::SOURCE_OFFSET, offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        headers
    }
}

/// The producer of every source's dead letters.
pub struct DeadLetters {
    producer: FutureProducer,
    timeout: Duration,
    backoff_initial: Duration,
    metrics: Arc<DeptransMetrics>,
}

impl DeadLetters {
    /// `backoff_initial` is the first wait after a failed produce; it doubles up to 30 s.
    pub fn new(
        kafka: &KafkaSettings,
        backoff_initial: Duration,
        metrics: Arc<DeptransMetrics>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            producer: kafka.producer_config("deptrans-dead-letters").create()?,
            timeout: kafka.produce_timeout(),
            backoff_initial,
            metrics,
        })
    }

    /// Parks every record, concurrently; true once the broker acknowledged all of them, false
    /// when `stop` came first (their offsets must then not be stored).
    pub async fn park_all(&self, bad: &[BadRecord], stop: &CancellationToken) -> bool {
        futures::future::join_all(bad.iter().map(|b| self.park(b, stop)))
            .await
            .into_iter()
            .all(|acked| acked)
    }

    /// Produces `bad` to its dead-letter topic, retrying with back-off until acknowledged.
    async fn park(&self, bad: &BadRecord, stop: &CancellationToken) -> bool {
        let headers = bad.headers();
        let mut backoff = self.backoff_initial;
        loop {
            let mut record = FutureRecord::to(&bad.dead_letter_topic)
                .headers(headers.clone())
                .payload(bad.msg.payload().unwrap_or_default());
            if let Some(key) = bad.msg.key() {
                record = record.key(key);
            }
            let sent = tokio::select! {
                _ = stop.cancelled() => return false,
                sent = self.producer.send(record, self.timeout) => sent,
            };
            match sent {
                Ok(_) => {
                    tracing::warn!(
                        topic = %bad.msg.topic(), partition = bad.msg.partition(),
                        offset = bad.msg.offset(), reason = bad.reason, error = %bad.error,
                        dead_letter_topic = %bad.dead_letter_topic, "status record dead-lettered"
                    );
                    return true;
                }
                Err((e, _)) => {
                    self.metrics.dead_letter_failures.inc();
                    tracing::warn!(
                        topic = %bad.msg.topic(), partition = bad.msg.partition(),
                        offset = bad.msg.offset(), dead_letter_topic = %bad.dead_letter_topic,
                        error = %e, "dead-letter produce failed, retrying"
                    );
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    #[test]
    fn headers_keep_the_record_s_and_say_why_and_where_from() {
        let original = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        });
        let msg = OwnedMessage::new(
            Some(b"{".to_vec()),
            Some(b"p/d".to_vec()),
            "statuses".into(),
            Timestamp::NotAvailable,
            3,
            42,
            Some(original),
        );
        let bad = BadRecord {
            msg,
            reason: "not_json",
            error: "x".repeat(5_000),
            dead_letter_topic: "statuses.deptrans.dlq".into(),
        };
        let headers = bad.headers();
        let get = |key: &str| {
            headers
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get(header::DLQ_REASON).as_deref(), Some("not_json"));
        assert_eq!(get(header::SOURCE_TOPIC).as_deref(), Some("statuses"));
        assert_eq!(get(header::SOURCE_PARTITION).as_deref(), Some("3"));
        assert_eq!(get(header::SOURCE_OFFSET).as_deref(), Some("42"));
        assert_eq!(get(header::LAST_ERROR).map(|e| e.len()), Some(1_000));
        assert!(get("traceparent").is_some());
    }
}
