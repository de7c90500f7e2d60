//! The one place that builds rdkafka client configs. Nothing else calls `ClientConfig::new`,
//! so every client gets the same identity, timeouts and delivery guarantees.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// How to reach the broker. Only this changes between the local broker and Apache Kafka.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub bootstrap_servers: String,
    /// Prefix of every client id; the role (producer, consumer group) is appended.
    pub client_id: String,
    /// Upper bound for a produce to be acknowledged, after which the caller is told to retry.
    pub produce_timeout_ms: u64,
    /// Extra librdkafka properties (security, tuning) passed through unchanged.
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "switchyard".into(),
            produce_timeout_ms: 5_000,
            extra: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }

    fn base(&self, role: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", "2000");
        cfg
    }

    /// Operator overrides win over every default set here.
    fn with_extra(&self, mut cfg: ClientConfig) -> ClientConfig {
        for (k, v) in &self.extra {
            cfg.set(k, v);
        }
        cfg
    }

    /// A producer whose delivery report means the record is durably on the broker:
    /// `acks=all` and the idempotent producer, bounded by `produce_timeout_ms`.
    pub fn producer_config(&self, role: &str) -> ClientConfig {
        let mut cfg = self.base(role);
        cfg.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", self.produce_timeout_ms.to_string())
            .set(
                "request.timeout.ms",
                self.produce_timeout_ms.min(30_000).to_string(),
            );
        self.with_extra(cfg)
    }

    /// An at-least-once consumer: offsets are stored by the application only after the record
    /// was handled, and the stored offsets are committed in the background.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut cfg = self.base(group_id);
        cfg.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000")
            .set("enable.partition.eof", "false");
        self.with_extra(cfg)
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.with_extra(self.base("admin"))
    }
}

/// `(topic, partition, lag)` of every partition this consumer knows a stored-offset lag for,
/// from librdkafka's statistics; -1 ("unknown": not assigned here, or not fetched yet) is left out.
pub fn stored_lags(
    stats: &rdkafka::statistics::Statistics,
) -> impl Iterator<Item = (&str, i32, i64)> {
    stats.topics.iter().flat_map(|(topic, t)| {
        t.partitions
            .iter()
            .filter(|(&partition, p)| partition >= 0 && p.consumer_lag_stored >= 0)
            .map(move |(&partition, p)| (topic.as_str(), partition, p.consumer_lag_stored))
    })
}
