//! The `events` crate: switchyard's protobuf envelope, payloads and the helpers to build them.

#[allow(clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchyard.v1.rs"));
}

pub use v1::Envelope;

use chrono::{DateTime, Utc};
use prost::Message;

/// Envelope event types; subscriber filters name these.
pub mod event_type {
    pub const UID_BIND: &str = "uid.bind";
    pub const UID_UNBIND: &str = "uid.unbind";
    pub const MARK_SEEN: &str = "mark.seen";
    pub const DRIVER_STATUS: &str = "driver.status";
}

/// Every `sy-*` Kafka record header switchyard writes or reads, in one place. The W3C trace
/// context travels as `traceparent`/`tracestate` (see `switchyard_runtime::trace`).
pub mod header {
    /// Mirrors `Envelope.event_type`, so filters skip records without decoding them.
    pub const EVENT_TYPE: &str = "sy-event-type";
    /// Mirrors a mark's `tag` (`mark.seen` records only), so tag filters skip records without
    /// decoding them.
    pub const TAG: &str = "sy-tag";
    /// The delivered event's id, on records a topic subscriber writes.
    pub const EVENT_ID: &str = "sy-event-id";
    /// The token a subscriber deduplicates on, on records a topic subscriber writes.
    pub const IDEMPOTENCY_KEY: &str = "sy-idempotency-key";
    /// mark-notify's caller kind (client, driver, anonymous), on topic-target records.
    pub const CALLER_KIND: &str = "sy-caller-kind";
    /// Retry bookkeeping of a parked record: attempts made so far.
    pub const ATTEMPTS: &str = "sy-attempts";
    /// Retry bookkeeping: not to be attempted before this Unix time in milliseconds.
    pub const NOT_BEFORE_MS: &str = "sy-not-before-ms";
    /// Retry bookkeeping: the retry tier the record is parked in.
    pub const TIER: &str = "sy-tier";
    /// Retry bookkeeping: why the last attempt failed.
    pub const LAST_ERROR: &str = "sy-last-error";
    /// Retry bookkeeping: `topic/partition/offset` the record was first read from.
    pub const ORIGIN: &str = "sy-origin";
    /// Retry bookkeeping: the subscriber a parked record belongs to.
    pub const SUBSCRIBER: &str = "sy-subscriber";
    /// Retry bookkeeping: parked by a subscriber in ordered mode (`ordering = "key"`), so it is
    /// attempted only when every earlier record of its key is done.
    pub const ORDERED: &str = "sy-ordered";
    /// Dead letters of a consumer that could not read a record: why, as a small fixed set
    /// (`not_json`, `missing_field`, ...), for filtering; `sy-last-error` carries the detail.
    pub const DLQ_REASON: &str = "sy-dlq-reason";
    /// Dead letters: the topic the record was read from.
    pub const SOURCE_TOPIC: &str = "sy-source-topic";
    /// Dead letters: the partition the record was read from.
    pub const SOURCE_PARTITION: &str = "sy-source-partition";
    /// Dead letters: the offset the record was read at.
    pub const SOURCE_OFFSET: &str = "sy-source-offset";
}

/// Record header that mirrors `Envelope.event_type`, so filters skip decoding.
pub const HEADER_EVENT_TYPE: &str = header::EVENT_TYPE;

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn to_datetime(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7 id and `produced_at = now`.
    pub fn new(
        event_type: &str,
        schema_version: u32,
        occurred_at: DateTime<Utc>,
        producer: &str,
        idempotency_key: String,
        payload: v1::envelope::Payload,
    ) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.to_owned(),
            schema_version,
            occurred_at: Some(timestamp(occurred_at)),
            produced_at: Some(timestamp(Utc::now())),
            producer: producer.to_owned(),
            idempotency_key,
            trace: None,
            payload: Some(payload),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }

    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        to_datetime(self.occurred_at.as_ref())
    }
}

impl v1::AccountLink {
    /// `{portal_uid}-{phonish_uid}-{bind|unbind}`: the token subscribers deduplicate on.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}-{}-{}",
            self.portal_uid,
            self.phonish_uid,
            self.event().short_name()
        )
    }
}

impl v1::LinkEvent {
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Unbind => "unbind",
            Self::Unspecified => "unspecified",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{envelope::Payload, AccountLink, LinkEvent};

    #[test]
    fn envelope_round_trips_and_keys_are_stable() {
        let link = AccountLink {
            portal_uid: 7,
            phonish_uid: 9,
            event: LinkEvent::Bind.into(),
        };
        assert_eq!(link.idempotency_key(), "7-9-bind");
        let env = Envelope::new(
            event_type::UID_BIND,
            1,
            Utc::now(),
            "test",
            link.idempotency_key(),
            Payload::AccountLink(link),
        );
        let back = Envelope::from_bytes(&env.to_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(
            uuid::Uuid::parse_str(&back.event_id)
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(back.payload, Some(Payload::AccountLink(link)));
    }
}
