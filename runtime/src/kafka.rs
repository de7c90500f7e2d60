//! The one place that builds rdkafka client configs. Nothing else calls `ClientConfig::new`,
//! so every client gets the same identity, timeouts and delivery guarantees.

use std::collections::BTreeMap;
use std::time::Duration;

use events::{header, Envelope};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
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
    /// The consumer group protocol: `classic` (join/sync rounds, every member gives up every
    /// partition on a rebalance) or `consumer` (KIP-848: the broker assigns, only moved
    /// partitions are revoked; Kafka 4 brokers). Session and heartbeat timing are the
    /// broker's under `consumer` (`group.consumer.*`).
    pub group_protocol: GroupProtocol,
    /// Extra librdkafka properties (security, tuning) passed through unchanged.
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "switchyard".into(),
            produce_timeout_ms: 5_000,
            group_protocol: GroupProtocol::default(),
            extra: BTreeMap::new(),
        }
    }
}

/// See [`KafkaSettings::group_protocol`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    #[default]
    Classic,
    Consumer,
}

impl KafkaSettings {
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }

    fn base(&self, role: &str) -> ClientConfig {
        #[allow(clippy::disallowed_methods)] // the one factory of client configs
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
            .set("max.poll.interval.ms", "300000")
            .set("enable.partition.eof", "false");
        match self.group_protocol {
            GroupProtocol::Classic => {
                cfg.set("group.protocol", "classic")
                    .set("session.timeout.ms", "10000")
                    .set("heartbeat.interval.ms", "1000");
            }
            // librdkafka refuses the session and heartbeat settings under KIP-848.
            GroupProtocol::Consumer => {
                cfg.set("group.protocol", "consumer");
            }
        }
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

/// What a consumer's statistics and rebalances tell the service that owns it: implemented by
/// each service (a lag gauge, the subscriber registry), called by [`StatsContext`].
pub trait ConsumerObserver: Send + Sync + 'static {
    /// The stored-offset lag of a partition this consumer owns, every statistics interval.
    fn lag(&self, topic: &str, partition: i32, lag: i64);
    /// `partition` of `topic` was taken away by a rebalance (its lag is another owner's now).
    fn revoked(&self, topic: &str, partition: i32);
    /// Before `partitions` are taken away: finish or hand off their work, and return the
    /// offsets to commit for them (`(topic, partition, next offset)`), which the context
    /// commits synchronously before letting them go. It may block when `may_block` (the
    /// callback runs in `block_in_place` on a multi-thread tokio runtime, so other tasks go on)
    /// for as long as the group's rebalance timeout allows (`max.poll.interval.ms`).
    fn revoking(&self, partitions: &[(String, i32)], may_block: bool) -> Vec<(String, i32, i64)> {
        let _ = (partitions, may_block);
        Vec::new()
    }
    /// After every rebalance (assign or revoke): `owned` is every partition this consumer owns
    /// now; `partition_count` asks the broker how many partitions a topic has (a metadata
    /// round trip from the rebalance callback: ask only what you need; `None` when the broker
    /// cannot say). Does nothing unless implemented.
    fn assigned(&self, owned: &[(String, i32)], partition_count: &dyn Fn(&str) -> Option<usize>) {
        let _ = (owned, partition_count);
    }
}

/// How long a rebalance callback waits for a topic's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// The one consumer context of the workspace: turns librdkafka's statistics into
/// [`ConsumerObserver::lag`] calls and remembers partitions revoked by a rebalance, so the
/// consumer loop can drop their bookkeeping ([`StatsContext::take_revoked`]).
pub struct StatsContext<O> {
    observer: O,
    revoked: std::sync::Mutex<Vec<(String, i32)>>,
}

impl<O: ConsumerObserver> StatsContext<O> {
    pub fn new(observer: O) -> Self {
        Self {
            observer,
            revoked: std::sync::Mutex::default(),
        }
    }

    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *revoked)
    }
}

impl<O: ConsumerObserver> rdkafka::ClientContext for StatsContext<O> {
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
        for (topic, partition, lag) in stored_lags(&stats) {
            self.observer.lag(topic, partition, lag);
        }
    }
}

impl<O: ConsumerObserver> rdkafka::consumer::ConsumerContext for StatsContext<O> {
    /// A revoke asks the observer to drain the partitions ([`ConsumerObserver::revoking`]) and
    /// commits the positions it returns, so the next owner starts where this one stopped.
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            use rdkafka::consumer::{CommitMode, Consumer};
            let partitions: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let positions = if multi_thread {
                tokio::task::block_in_place(|| self.observer.revoking(&partitions, true))
            } else {
                self.observer.revoking(&partitions, false)
            };
            let mut commit = rdkafka::TopicPartitionList::new();
            for (topic, partition, next) in &positions {
                let _ =
                    commit.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*next));
            }
            if commit.count() > 0 {
                if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                    tracing::warn!(error = %e, "cannot commit revoked partitions' positions");
                }
            }
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            for e in tpl.elements() {
                self.observer.revoked(e.topic(), e.partition());
                revoked.push((e.topic().to_owned(), e.partition()));
            }
        }
    }

    /// A partition assigned to this consumer starts unpaused. librdkafka keeps a partition's
    /// pause across a revoke that hands it back to the same member, while the consumer loop
    /// forgot why it paused it ([`StatsContext::take_revoked`]): nothing would ever resume it,
    /// and its records would wait for good (found by the fault suite: a retry tier paused on
    /// a full lane during a rebalance stayed paused). The loop pauses it again if it must.
    /// Then the observer hears the whole assignment ([`ConsumerObserver::assigned`]).
    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::{Consumer, Rebalance};
        if let Rebalance::Assign(tpl) = rebalance {
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(error = %e, "cannot resume newly assigned partitions");
            }
        }
        if matches!(rebalance, Rebalance::Assign(_) | Rebalance::Revoke(_)) {
            let owned: Vec<(String, i32)> = match consumer.assignment() {
                Ok(tpl) => tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the assignment after a rebalance");
                    return;
                }
            };
            let partition_count = |topic: &str| {
                let metadata = consumer
                    .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                    .ok()?;
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len())
                    .filter(|&n| n > 0)
            };
            self.observer.assigned(&owned, &partition_count);
        }
    }
}

/// The standard headers of an envelope record: `sy-event-type` always, `sy-tag` for a mark,
/// and the W3C trace context when there is one. Every producer of envelopes (ingress, outbox
/// relay, CLI) uses this, so consumers can filter and link traces without decoding the body.
pub fn envelope_headers(
    event_type: &str,
    tag: Option<&str>,
    trace: Option<&events::v1::TraceContext>,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(4).insert(Header {
        key: header::EVENT_TYPE,
        value: Some(event_type),
    });
    if let Some(tag) = tag {
        headers = headers.insert(Header {
            key: header::TAG,
            value: Some(tag),
        });
    }
    if let Some(trace) = trace.filter(|t| !t.traceparent.is_empty()) {
        headers = headers.insert(Header {
            key: crate::trace::HEADER,
            value: Some(trace.traceparent.as_str()),
        });
        if !trace.tracestate.is_empty() {
            headers = headers.insert(Header {
                key: crate::trace::STATE_HEADER,
                value: Some(trace.tracestate.as_str()),
            });
        }
    }
    headers
}

/// The standard headers of `envelope` (see [`envelope_headers`]), with `trace` as the trace
/// context: the envelope's own for a record that carries it on, the delivery's hop for a
/// dispatcher topic sink that forwards it.
pub fn envelope_headers_of(
    envelope: &Envelope,
    trace: Option<&events::v1::TraceContext>,
) -> OwnedHeaders {
    envelope_headers(
        &envelope.event_type,
        match &envelope.payload {
            Some(events::v1::envelope::Payload::NotificationSeen(seen)) => Some(seen.tag.as_str()),
            _ => None,
        },
        trace,
    )
}

/// The one way to build an envelope record: `payload` is `envelope` encoded (the caller owns
/// the bytes, the record borrows them), `key` the entity whose order matters.
pub fn envelope_record<'a>(
    topic: &'a str,
    key: &'a str,
    payload: &'a [u8],
    envelope: &Envelope,
) -> FutureRecord<'a, str, [u8]> {
    FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(envelope_headers_of(envelope, envelope.trace.as_ref()))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn envelope_records_carry_the_event_type_and_the_trace_context() {
        let mut env = Envelope {
            event_type: "uid.bind".into(),
            ..Envelope::default()
        };
        let payload = env.to_bytes();
        let record = envelope_record("t", "k", &payload, &env);
        let headers = record.headers.expect("headers");
        assert_eq!(headers.count(), 1);
        assert_eq!(headers.get(0).key, header::EVENT_TYPE);
        assert_eq!(headers.get(0).value, Some(&b"uid.bind"[..]));

        let mut mark = Envelope {
            event_type: "mark.seen".into(),
            ..Envelope::default()
        };
        mark.payload = Some(events::v1::envelope::Payload::NotificationSeen(
            events::v1::NotificationSeen {
                tag: "promo".into(),
                ..Default::default()
            },
        ));
        let payload = mark.to_bytes();
        let record = envelope_record("t", "k", &payload, &mark);
        let headers = record.headers.expect("headers");
        assert_eq!(headers.count(), 2, "a mark carries its tag");
        assert_eq!(headers.get(1).key, header::TAG);
        assert_eq!(headers.get(1).value, Some(&b"promo"[..]));

        env.trace = Some(events::v1::TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "vendor=1".into(),
        });
        let headers = envelope_headers(&env.event_type, None, env.trace.as_ref());
        let keys: Vec<&str> = headers.iter().map(|h| h.key).collect();
        assert_eq!(
            keys,
            [
                header::EVENT_TYPE,
                crate::trace::HEADER,
                crate::trace::STATE_HEADER
            ]
        );
    }
}
