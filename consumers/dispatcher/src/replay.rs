//! Replays to one subscriber and the dead-letter browser: records are copied, with a fresh
//! attempt budget, into the subscriber's first retry tier, from which its own consumer group
//! delivers them. Sources: its dead letters (all not yet replayed, or one), or any topic by
//! offset or time range.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_runtime::http::{json, BadRequest};
use switchyard_runtime::KafkaSettings;

use crate::admin::{envelope_json, AdminError};
use crate::admin_api::model::DeadLetter;
use crate::plan::Plan;
use crate::retry::{
    RetryState, H_ATTEMPTS, H_ERROR, H_NOT_BEFORE, H_ORDERED, H_ORIGIN, H_SUBSCRIBER, H_TIER,
};

use crate::dead_letters::{committed, partitions, META_TIMEOUT};

/// What to replay; `{"source": "dead-letters" | "topic", ...the selection's fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum ReplaySource {
    DeadLetters(DeadLetterSelection),
    Topic(TopicSelection),
}

/// One object per source with `source` among its properties and nothing else allowed, as the
/// parser takes it. (utoipa's own schema of a tagged enum is `allOf` the selection and the tag,
/// where `additionalProperties: false` cannot be said, so it documented extra fields the parser
/// refuses.)
impl utoipa::PartialSchema for ReplaySource {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type,
        };
        use utoipa::openapi::RefOr;
        fn variant(tag: &str, selection: RefOr<Schema>) -> RefOr<Schema> {
            let RefOr::T(Schema::Object(mut object)) = selection else {
                return selection;
            };
            let tag_schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([tag]))
                .build();
            object.properties.insert("source".into(), tag_schema.into());
            object.required.insert(0, "source".into());
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            RefOr::T(Schema::Object(object))
        }
        OneOfBuilder::new()
            .item(variant("dead-letters", <DeadLetterSelection as utoipa::PartialSchema>::schema()))
            .item(variant("topic", <TopicSelection as utoipa::PartialSchema>::schema()))
            .description(Some(
                "What to replay; `{\"source\": \"dead-letters\" | \"topic\", ...the selection's fields}`.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ReplaySource {}

/// Dead letters: every one not replayed before (`from_beginning`: all of them), or the single
/// record at `partition`/`offset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSelection {
    #[serde(default)]
    pub from_beginning: bool,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub partition: Option<i32>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub offset: Option<i64>,
}

/// A topic's records between two offsets (both inclusive) or two times (from inclusive, to
/// exclusive), on every partition or one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicSelection {
    #[schema(min_length = 1, max_length = 249, pattern = "^[A-Za-z0-9._-]+$")]
    pub topic: String,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub partition: Option<i32>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub from_offset: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub to_offset: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Option<switchyard_runtime::http::json::Rfc3339>)]
    pub from_time: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(value_type = Option<switchyard_runtime::http::json::Rfc3339>)]
    pub to_time: Option<DateTime<Utc>>,
}

impl ReplaySource {
    /// Parses a request body, naming the offending field (`source`, `topic`, `from_offset`...)
    /// in the error.
    pub fn from_json(body: &[u8]) -> Result<Self, BadRequest> {
        let mut v: Value = json::parse(body)?;
        let Some(obj) = v.as_object_mut() else {
            return Err(BadRequest {
                code: "invalid_body",
                field: None,
                message: "body: must be a JSON object".into(),
            });
        };
        let source = obj.remove("source");
        let parsed = match source.as_ref().and_then(Value::as_str) {
            Some("dead-letters") => json::from_value(v).map(Self::DeadLetters)?,
            Some("topic") => json::from_value(v).map(Self::Topic)?,
            _ => {
                return Err(BadRequest::field(
                    "source",
                    r#"required, "dead-letters" or "topic""#,
                ))
            }
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// What the OpenAPI document says of each field beyond its type.
    fn validate(&self) -> Result<(), BadRequest> {
        let (partition, offsets) = match self {
            Self::DeadLetters(d) => (d.partition, [("offset", d.offset), ("offset", None)]),
            Self::Topic(t) => {
                let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
                if !(1..=249).contains(&t.topic.len()) || !t.topic.bytes().all(plain) {
                    return Err(BadRequest::field(
                        "topic",
                        "must be 1-249 characters of [A-Za-z0-9._-]",
                    ));
                }
                (
                    t.partition,
                    [("from_offset", t.from_offset), ("to_offset", t.to_offset)],
                )
            }
        };
        if partition.is_some_and(|p| p < 0) {
            return Err(BadRequest::field("partition", "must not be negative"));
        }
        for (field, offset) in offsets {
            if offset.is_some_and(|o| o < 0) {
                return Err(BadRequest::field(field, "must not be negative"));
            }
        }
        Ok(())
    }
}

/// `[start, end)` of one partition.
type Range = (i32, i64, i64);

/// Copies the records `source` names into `subscriber`'s first retry tier and returns how
/// many; `progress(done, total)` follows along. Dead-letter replays of everything commit
/// their position, so the next one only takes newer dead letters.
pub async fn replay(
    plan: &Plan,
    subscriber: &str,
    source: &ReplaySource,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, AdminError> {
    let Some(sub) = plan.subscriber(subscriber) else {
        return Err(AdminError::UnknownSubscriber(subscriber.to_owned()));
    };
    let target = sub.retry_topics[0].clone();
    let (topic, group, commit) = match source {
        ReplaySource::DeadLetters(DeadLetterSelection {
            partition: None, ..
        }) => (
            sub.dead_letter_topic.clone(),
            sub.dead_letter_replay_group.clone(),
            true,
        ),
        ReplaySource::DeadLetters(_) => (
            sub.dead_letter_topic.clone(),
            sub.dead_letter_replay_group.clone(),
            false,
        ),
        ReplaySource::Topic(TopicSelection { topic, .. }) => {
            (topic.clone(), sub.topic_replay_group.clone(), false)
        }
    };
    let (kafka, src, t) = (plan.config.kafka.clone(), source.clone(), topic.clone());
    let (consumer, ranges) =
        tokio::task::spawn_blocking(move || replay_ranges(&kafka, &t, &group, &src))
            .await
            .map_err(|e| AdminError::Invalid(format!("planning the replay: {e}")))??;
    let total: u64 = ranges
        .iter()
        .map(|(_, s, e)| u64::try_from(e - s).unwrap_or(0))
        .sum();
    progress(0, total);
    if total == 0 {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    for (p, start, _) in &ranges {
        assignment.add_partition_offset(&topic, *p, Offset::Offset(*start))?;
    }
    consumer.assign(&assignment)?;
    let ends: HashMap<i32, i64> = ranges.iter().map(|(p, _, e)| (*p, *e)).collect();
    let producer: FutureProducer = plan.config.kafka.producer_config("replay").create()?;
    let now = Utc::now().timestamp_millis().to_string();
    let mut done = 0u64;
    let mut positions: HashMap<i32, i64> = HashMap::new();
    let mut finished: Vec<i32> = Vec::new();
    while done < total {
        let msg = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => break, // records vanished (retention) meanwhile: report what was done
        };
        let end = ends.get(&msg.partition()).copied().unwrap_or(0);
        if msg.offset() >= end {
            if !finished.contains(&msg.partition()) {
                finished.push(msg.partition());
                let _ = consumer.pause(&single(&topic, msg.partition()));
            }
            continue;
        }
        let origin = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        let headers = fresh_headers(msg.headers(), subscriber, &now, &origin);
        let mut record = FutureRecord::<[u8], [u8]>::to(&target).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        positions.insert(msg.partition(), msg.offset() + 1);
        done += 1;
        progress(done, total);
    }
    if commit && !positions.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in positions {
            tpl.add_partition_offset(&topic, p, Offset::Offset(o))?;
        }
        consumer.commit(&tpl, CommitMode::Sync)?;
    }
    tracing::info!(subscriber, topic, replayed = done, "replay finished");
    Ok(done)
}

/// A record's headers for its replay: everything it carried (event type, trace context) but
/// the retry bookkeeping, which starts over.
fn fresh_headers<H: Headers>(
    old: Option<&H>,
    subscriber: &str,
    now_ms: &str,
    origin_if_new: &str,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    let mut origin = None;
    if let Some(old) = old {
        for h in old.iter() {
            match h.key {
                H_ORIGIN => origin = h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                // A replay is delivered as it comes, outside any key's order.
                H_SUBSCRIBER | H_ATTEMPTS | H_TIER | H_NOT_BEFORE | H_ERROR | H_ORDERED => {}
                key => {
                    headers = headers.insert(Header {
                        key,
                        value: h.value,
                    });
                }
            }
        }
    }
    let origin = origin.unwrap_or_else(|| origin_if_new.to_owned());
    for (key, value) in [
        (H_SUBSCRIBER, subscriber),
        (H_ATTEMPTS, "0"),
        (H_TIER, "0"),
        (H_NOT_BEFORE, now_ms),
        (H_ORIGIN, origin.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

/// The consumer (no subscription) and the offset ranges `source` covers on `topic`.
fn replay_ranges(
    kafka: &KafkaSettings,
    topic: &str,
    group: &str,
    source: &ReplaySource,
) -> Result<(StreamConsumer, Vec<Range>), AdminError> {
    let consumer: StreamConsumer = kafka.consumer_config(group).create()?;
    let partitions = partitions(&consumer, topic)?;
    if partitions.is_empty() {
        return Err(AdminError::Invalid(format!("topic {topic} does not exist")));
    }
    let mut ranges = Vec::new();
    match source {
        ReplaySource::DeadLetters(DeadLetterSelection {
            from_beginning,
            partition,
            offset,
        }) => match (partition, offset) {
            (Some(p), Some(o)) => {
                let (low, high) = consumer.fetch_watermarks(topic, *p, META_TIMEOUT)?;
                if *o < low || *o >= high {
                    return Err(AdminError::Invalid(format!(
                        "no dead letter at partition {p} offset {o}"
                    )));
                }
                ranges.push((*p, *o, *o + 1));
            }
            (None, None) => {
                let committed = committed(&consumer, topic, &partitions)?;
                for p in &partitions {
                    let (low, high) = consumer.fetch_watermarks(topic, *p, META_TIMEOUT)?;
                    let start = match committed.get(p) {
                        Some(o) if !from_beginning => (*o).max(low),
                        _ => low,
                    };
                    ranges.push((*p, start, high));
                }
            }
            _ => {
                return Err(AdminError::Invalid(
                    "partition and offset go together".into(),
                ))
            }
        },
        ReplaySource::Topic(TopicSelection {
            partition,
            from_offset,
            to_offset,
            from_time,
            to_time,
            ..
        }) => {
            if (from_offset.is_some() || to_offset.is_some())
                && (from_time.is_some() || to_time.is_some())
            {
                return Err(AdminError::Invalid(
                    "give an offset range or a time range, not both".into(),
                ));
            }
            let chosen: Vec<i32> = match partition {
                Some(p) if partitions.contains(p) => vec![*p],
                Some(p) => {
                    return Err(AdminError::Invalid(format!(
                        "partition {p} does not exist in {topic}"
                    )))
                }
                None => partitions,
            };
            let from_t = times(&consumer, topic, &chosen, *from_time)?;
            let to_t = times(&consumer, topic, &chosen, *to_time)?;
            for p in chosen {
                let (low, high) = consumer.fetch_watermarks(topic, p, META_TIMEOUT)?;
                let start = from_offset
                    .or_else(|| from_t.get(&p).copied())
                    .unwrap_or(low)
                    .max(low);
                let end = to_offset
                    .map(|o| o + 1)
                    .or_else(|| to_t.get(&p).copied())
                    .unwrap_or(high)
                    .min(high);
                if end > start {
                    ranges.push((p, start, end));
                }
            }
        }
    }
    ranges.retain(|(_, s, e)| e > s);
    Ok((consumer, ranges))
}

/// The first offset at or after `at` per partition (the high watermark when none is).
fn times<C: Consumer>(
    consumer: &C,
    topic: &str,
    partitions: &[i32],
    at: Option<DateTime<Utc>>,
) -> Result<HashMap<i32, i64>, AdminError> {
    let Some(at) = at else {
        return Ok(HashMap::new());
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(at.timestamp_millis()))?;
    }
    let found = consumer.offsets_for_times(tpl, META_TIMEOUT)?;
    let mut out = HashMap::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            _ => {
                consumer
                    .fetch_watermarks(topic, e.partition(), META_TIMEOUT)?
                    .1
            }
        };
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

fn single(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// The newest `limit` dead letters of `dlq`, newest first, each with its last error, attempts,
/// origin, decoded envelope and whether a replay of everything already took it.
pub async fn browse_dead_letters(
    kafka: &KafkaSettings,
    dlq: &str,
    group: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, AdminError> {
    let (k, t, g) = (kafka.clone(), dlq.to_owned(), group.to_owned());
    let planned = tokio::task::spawn_blocking(move || {
        let consumer: StreamConsumer = k.consumer_config(&g).create()?;
        let parts = partitions(&consumer, &t)?;
        let committed = committed(&consumer, &t, &parts)?;
        let mut ranges = Vec::new();
        for p in parts {
            let (low, high) = consumer.fetch_watermarks(&t, p, META_TIMEOUT)?;
            let start = (high - i64::try_from(limit).unwrap_or(i64::MAX)).max(low);
            if high > start {
                ranges.push((p, start, high));
            }
        }
        Ok::<_, AdminError>((consumer, ranges, committed))
    })
    .await
    .map_err(|e| AdminError::Invalid(format!("reading dead letters: {e}")))??;
    let (consumer, ranges, committed) = planned;
    let mut tpl = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    for (p, start, end) in &ranges {
        tpl.add_partition_offset(dlq, *p, Offset::Offset(*start))?;
        left.insert(*p, end - start);
    }
    if left.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let ends: HashMap<i32, i64> = ranges.iter().map(|(p, _, e)| (*p, *e)).collect();
    let mut out: Vec<(i64, DeadLetter)> = Vec::new();
    while left.values().any(|n| *n > 0) {
        let m = match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => break,
        };
        if m.offset() >= ends.get(&m.partition()).copied().unwrap_or(0) {
            continue;
        }
        if let Some(n) = left.get_mut(&m.partition()) {
            *n -= 1;
        }
        let state = RetryState::from_headers(m.headers());
        let error = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == H_ERROR)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let ts = m.timestamp().to_millis();
        let env = m
            .payload()
            .and_then(|p| events::Envelope::from_bytes(p).ok());
        let replayed = committed
            .get(&m.partition())
            .is_some_and(|c| m.offset() < *c);
        out.push((
            ts.unwrap_or(0),
            DeadLetter {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                event_id: env.as_ref().map(|e| e.event_id.clone()),
                event_type: state
                    .event_type
                    .or_else(|| env.as_ref().map(|e| e.event_type.clone())),
                attempts: state.attempts,
                last_error: error,
                origin: state.origin,
                dead_lettered_at: ts
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                replayed,
                payload: env.as_ref().map(envelope_json),
            },
        ));
    }
    out.sort_by_key(|(ts, _)| std::cmp::Reverse(*ts));
    Ok(out.into_iter().take(limit).map(|(_, v)| v).collect())
}
