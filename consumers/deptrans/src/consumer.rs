//! Consumer group `deptrans-status`: reads every source topic, decodes each record by its
//! source's format (`crate::records`), parks the records it cannot use in the source's
//! dead-letter topic, keeps drivers inside the regions who work a wanted category (and any
//! offline status that closes a shift KRT may hold open, wherever the driver is), upserts the
//! newest status per driver into `deptrans.status_queue` in one statement per batch, and
//! stores offsets only after that commit and the dead letters' acknowledgements.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use switchyard_runtime::kafka::{ConsumerObserver, StatsContext};
use switchyard_runtime::trace;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cache::Caches;
use super::config::SourceConfig;
use super::dead_letter::{BadRecord, DeadLetters};
use super::geo::Polygon;
use super::krt::KrtStatus;
use super::metrics::{DeptransMetrics, PartitionLabels};
use super::records::{self, Format, Position};
use super::upstream::{DriverRef, Upstream, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("subscribing to {0}")]
    Subscribe(String, #[source] rdkafka::error::KafkaError),
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// One decoded status event.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEvent {
    pub park_id: String,
    pub driver_id: String,
    pub status: KrtStatus,
    pub updated_at: DateTime<Utc>,
    /// The `traceparent` the ingress stored in the envelope; kept with the queued row so the
    /// sender's span links back to the trace that produced it. A JSON record's comes from its
    /// `traceparent` header, when it has one.
    pub traceparent: Option<String>,
    /// Where the driver was at the change, when the record says (JSON records may); the region
    /// filter then uses it instead of asking trackstory.
    pub position: Option<Position>,
}

/// Decodes an envelope record value; `None` for anything that is not a usable driver status
/// (`crate::records` says why).
pub fn decode(payload: &[u8]) -> Option<StatusEvent> {
    records::decode_envelope(payload).ok()
}

/// Keeps the newest event per driver (the later one on a tie).
pub fn newest_per_driver(events: Vec<StatusEvent>) -> Vec<StatusEvent> {
    let mut by: HashMap<(String, String), StatusEvent> = HashMap::with_capacity(events.len());
    for e in events {
        let key = (e.park_id.clone(), e.driver_id.clone());
        match by.get(&key) {
            Some(old) if old.updated_at > e.updated_at => {}
            _ => {
                by.insert(key, e);
            }
        }
    }
    by.into_values().collect()
}

/// One statement: newer wins, and nothing older than what was already sent is queued again.
pub const UPSERT: &str = "
INSERT INTO deptrans.status_queue AS q (park_id, driver_id, status, updated_at, traceparent)
SELECT u.park_id, u.driver_id, u.status, u.updated_at, u.traceparent
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
    AS u(park_id, driver_id, status, updated_at, traceparent)
WHERE NOT EXISTS (
    SELECT 1 FROM deptrans.sent_marks m
    WHERE m.park_id = u.park_id AND m.driver_id = u.driver_id AND m.updated_at >= u.updated_at)
ON CONFLICT (park_id, driver_id) DO UPDATE
SET status = excluded.status, updated_at = excluded.updated_at, traceparent = excluded.traceparent
WHERE q.updated_at < excluded.updated_at";

/// Upserts `events` (already one per driver) in one statement; returns rows written.
pub async fn upsert(pool: &Pool, events: &[StatusEvent]) -> Result<u64, ConsumeError> {
    if events.is_empty() {
        return Ok(0);
    }
    let parks: Vec<&str> = events.iter().map(|e| e.park_id.as_str()).collect();
    let drivers: Vec<&str> = events.iter().map(|e| e.driver_id.as_str()).collect();
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.updated_at).collect();
    let traces: Vec<Option<&str>> = events.iter().map(|e| e.traceparent.as_deref()).collect();
    let client = pool.get().await?;
    let stmt = client.prepare_cached(UPSERT).await?;
    Ok(client
        .execute(&stmt, &[&parks, &drivers, &statuses, &times, &traces])
        .await?)
}

/// Links `span` to each valid `traceparent` (a batch span has many origins, so links, not a
/// parent: the OpenTelemetry convention for batch processing).
pub fn link_traces<'a>(span: &tracing::Span, traceparents: impl Iterator<Item = Option<&'a str>>) {
    for traceparent in traceparents.flatten() {
        trace::add_link(span, traceparent);
    }
}

/// Drivers among `$1`/`$2` whose shift KRT may hold open: the last status KRT took, or the
/// status still queued for it, is online or busy.
const OPEN_SHIFTS: &str = "
SELECT u.park_id, u.driver_id FROM unnest($1::text[], $2::text[]) AS u(park_id, driver_id)
WHERE EXISTS (SELECT 1 FROM deptrans.sent_marks m
              WHERE m.park_id = u.park_id AND m.driver_id = u.driver_id
                AND m.status IN ('online', 'busy'))
   OR EXISTS (SELECT 1 FROM deptrans.status_queue q
              WHERE q.park_id = u.park_id AND q.driver_id = u.driver_id
                AND q.status IN ('online', 'busy'))";

/// Decides which drivers deptrans reports.
pub struct Filter {
    pub regions: Vec<Polygon>,
    pub categories: Vec<String>,
    pub caches: Arc<Caches>,
    pub upstream: Upstream,
    pub metrics: Arc<DeptransMetrics>,
    /// Where the last status sent per driver is kept (`deptrans.sent_marks`).
    pub pool: Pool,
}

impl Filter {
    /// Keeps drivers with a wanted category and a last position inside a region, and every
    /// offline status of a driver whose shift KRT may hold open, wherever the driver is: the
    /// filter decides where shifts open, never whether one closes.
    pub async fn apply(&self, events: Vec<StatusEvent>) -> Result<Vec<StatusEvent>, ConsumeError> {
        let total = events.len();
        // Offline statuses the filter drops: they may still close a shift.
        let mut dropped_offline = Vec::new();
        let mut wanted = Vec::with_capacity(total);
        for e in events {
            if self
                .caches
                .categories
                .works_any(&e.park_id, &e.driver_id, &self.categories)
            {
                wanted.push(e);
            } else if e.status == KrtStatus::Offline {
                dropped_offline.push(e);
            }
        }
        self.metrics
            .event("wrong_category", (total - wanted.len()) as u64);
        // Only drivers whose record carried no position are looked up.
        let refs: std::collections::BTreeSet<DriverRef> = wanted
            .iter()
            .filter(|e| e.position.is_none())
            .map(|e| DriverRef {
                park_id: e.park_id.clone(),
                driver_profile_id: e.driver_id.clone(),
            })
            .collect();
        let refs = refs.into_iter().collect();
        let positions: HashMap<(String, String), (f64, f64)> = self
            .upstream
            .positions(refs)
            .await?
            .into_iter()
            .map(|p| ((p.park_id, p.driver_profile_id), (p.lon, p.lat)))
            .collect();
        let (mut no_position, mut outside) = (0, 0);
        let mut kept = Vec::with_capacity(wanted.len());
        for e in wanted {
            let position = match e.position {
                Some(p) => Some((p.lon, p.lat)),
                None => positions
                    .get(&(e.park_id.clone(), e.driver_id.clone()))
                    .copied(),
            };
            let inside = match position {
                None => {
                    no_position += 1;
                    false
                }
                Some((lon, lat)) => {
                    let inside = self.regions.iter().any(|r| r.contains(lon, lat));
                    outside += u64::from(!inside);
                    inside
                }
            };
            if inside {
                kept.push(e);
            } else if e.status == KrtStatus::Offline {
                dropped_offline.push(e);
            }
        }
        self.metrics.event("no_position", no_position);
        self.metrics.event("outside_region", outside);
        if !dropped_offline.is_empty() {
            let open = self.open_shifts(&dropped_offline).await?;
            let before = kept.len();
            kept.extend(
                dropped_offline
                    .into_iter()
                    .filter(|e| open.contains(&(e.park_id.clone(), e.driver_id.clone()))),
            );
            self.metrics
                .event("offline_closes_shift", (kept.len() - before) as u64);
        }
        Ok(kept)
    }

    /// Which of `events`' drivers KRT may have an open shift for.
    async fn open_shifts(
        &self,
        events: &[StatusEvent],
    ) -> Result<std::collections::HashSet<(String, String)>, ConsumeError> {
        let parks: Vec<&str> = events.iter().map(|e| e.park_id.as_str()).collect();
        let drivers: Vec<&str> = events.iter().map(|e| e.driver_id.as_str()).collect();
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(OPEN_SHIFTS).await?;
        Ok(client
            .query(&stmt, &[&parks, &drivers])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

/// Turns librdkafka's statistics into the consumer lag gauge of the `deptrans-status` group
/// (through the runtime's [`StatsContext`]).
pub struct LagObserver {
    pub metrics: Arc<DeptransMetrics>,
}

impl ConsumerObserver for LagObserver {
    fn lag(&self, topic: &str, partition: i32, lag: i64) {
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        self.metrics.consumer_lag.get_or_create(&labels).set(lag);
    }

    /// A partition taken away is another instance's to report.
    fn revoked(&self, topic: &str, partition: i32) {
        self.metrics.consumer_lag.remove(&PartitionLabels {
            topic: topic.to_owned(),
            partition,
        });
    }

    fn assigned(&self, _owned: &[(String, i32)], _partition_count: &dyn Fn(&str) -> Option<usize>) {
        self.metrics.consumer_rebalances.inc();
    }
}

pub type LagContext = StatsContext<LagObserver>;

/// The `traceparent` header of a record, if any.
fn traceparent_header(msg: &impl Message) -> Option<String> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == "traceparent")
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Records read for one store: the statuses, the bad records, the last offset per partition.
#[derive(Default)]
struct Batch {
    events: Vec<StatusEvent>,
    last: HashMap<(String, i32), i64>,
    bad: Vec<BadRecord>,
}

impl Batch {
    fn len(&self) -> usize {
        self.events.len() + self.bad.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes `msg` into the batch (a bad record is counted and kept for its dead letter).
    fn add(
        &mut self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        sources: &HashMap<&str, (Format, String)>,
        metrics: &DeptransMetrics,
    ) {
        self.last
            .insert((msg.topic().to_owned(), msg.partition()), msg.offset());
        let Some((format, dead_letter_topic)) = sources.get(msg.topic()) else {
            return; // not subscribed: cannot happen
        };
        match format.decode(msg.payload()) {
            Ok(mut e) => {
                if e.traceparent.is_none() {
                    e.traceparent = traceparent_header(msg);
                }
                self.events.push(e);
            }
            Err(e) => {
                metrics.bad_record(msg.topic(), e.reason());
                self.bad.push(BadRecord {
                    msg: msg.detach(),
                    reason: e.reason(),
                    error: e.to_string(),
                    dead_letter_topic: dead_letter_topic.clone(),
                });
            }
        }
    }
}

pub struct StatusConsumer {
    pub consumer: StreamConsumer<LagContext>,
    /// Every topic read, with its format and dead-letter topic (`DeptransConfig::sources`).
    pub sources: Vec<SourceConfig>,
    pub dead_letters: DeadLetters,
    pub pool: Pool,
    pub filter: Filter,
    pub batch_max: usize,
    pub linger: Duration,
    pub retry_backoff: Duration,
    pub metrics: Arc<DeptransMetrics>,
    /// Drivers whose online or busy status passed the filter (supply gauges).
    pub active: Arc<super::supply::ActiveDrivers>,
}

impl StatusConsumer {
    pub async fn run(self, stop: CancellationToken) -> Result<(), ConsumeError> {
        let topics: Vec<&str> = self.sources.iter().map(|s| s.topic.as_str()).collect();
        let all_topics = topics.join(",");
        self.consumer
            .subscribe(&topics)
            .map_err(|e| ConsumeError::Subscribe(all_topics.clone(), e))?;
        // topic -> (format, dead-letter topic)
        let sources: HashMap<&str, (Format, String)> = self
            .sources
            .iter()
            .map(|s| (s.topic.as_str(), (s.format, s.dead_letter_topic())))
            .collect();
        for s in &self.sources {
            self.metrics.bad_record_series(&s.topic, s.format.reasons());
        }
        tracing::info!(topics = %all_topics, "deptrans status consumer started");
        // Records read while a batch waited for PostgreSQL: the start of the next batch.
        let mut next = Batch::default();
        loop {
            let mut batch = std::mem::take(&mut next);
            let deadline = tokio::time::sleep(Duration::from_secs(3600));
            tokio::pin!(deadline);
            let mut started = !batch.is_empty();
            if started {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.linger);
            }
            while batch.len() < self.batch_max {
                let msg = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    _ = &mut deadline, if started => break,
                    msg = self.consumer.recv() => msg,
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(topics = %all_topics, error = %e, "consumer error");
                        continue;
                    }
                };
                if !started {
                    started = true;
                    deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.linger);
                }
                batch.add(&msg, &sources, &self.metrics);
            }
            let Batch { events, last, bad } = batch;
            self.metrics.event("invalid", bad.len() as u64);
            let read = (events.len() + bad.len()) as u64;
            // Park the records that cannot be used first; their offsets wait for the acks.
            if !bad.is_empty() && !self.dead_letters.park_all(&bad, &stop).await {
                return Ok(());
            }
            // One consumer span per batch, linked to the trace of every status it keeps.
            let span = tracing::info_span!(
                "deptrans.store",
                otel.name = %format_args!("store statuses {all_topics}"),
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.destination.name = %all_topics,
                messaging.batch.message_count = read,
            );
            link_traces(
                &span,
                newest_per_driver(events.clone())
                    .iter()
                    .map(|e| e.traceparent.as_deref()),
            );
            // Retry the batch until it is committed; its offsets are not stored before that.
            // Meanwhile the partitions are paused and the loop keeps polling, so an outage
            // longer than max.poll.interval.ms does not get this member expelled from its
            // group; a record that was already on its way is kept for the next batch.
            let mut paused = None;
            loop {
                match self.store(events.clone()).instrument(span.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.metrics.upsert_failures.inc();
                        tracing::warn!(error = %e, "status batch not stored, retrying");
                        if paused.is_none() {
                            paused = self.pause_all();
                        }
                        let retry = tokio::time::sleep(self.retry_backoff);
                        tokio::pin!(retry);
                        loop {
                            tokio::select! {
                                biased;
                                _ = stop.cancelled() => return Ok(()),
                                _ = &mut retry => break,
                                msg = self.consumer.recv() => {
                                    if let Ok(msg) = msg {
                                        next.add(&msg, &sources, &self.metrics);
                                        // A partition assigned during the outage is not paused
                                        // yet: pause what is owned now, so `next` stays bounded.
                                        if next.len() >= self.batch_max {
                                            if let Some(now) = self.pause_all() {
                                                paused = Some(now);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if let Some(assignment) = paused {
                self.metrics.consumer_paused.set(0);
                if let Err(e) = self.consumer.resume(&assignment) {
                    tracing::warn!(error = %e, "resuming the partitions failed");
                }
                tracing::info!("status batch stored; partitions resumed");
            }
            self.metrics.consumed.inc_by(read);
            for ((topic, partition), offset) in last {
                if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
                    tracing::debug!(%topic, partition, offset, error = %e, "offset not stored (partition revoked?)");
                }
            }
        }
    }

    /// Pauses every assigned partition; returns what was paused.
    fn pause_all(&self) -> Option<rdkafka::TopicPartitionList> {
        let assignment = self.consumer.assignment().ok()?;
        match self.consumer.pause(&assignment) {
            Ok(()) => {
                self.metrics.consumer_paused.set(1);
                tracing::warn!(
                    partitions = assignment.count(),
                    "PostgreSQL unavailable: partitions paused, polling on"
                );
                Some(assignment)
            }
            Err(e) => {
                tracing::warn!(error = %e, "pausing the partitions failed");
                None
            }
        }
    }

    async fn store(&self, events: Vec<StatusEvent>) -> Result<(), ConsumeError> {
        // Filter before keeping the newest per driver: an offline that closes a shift must not
        // be hidden by a newer status the filter drops (online again outside the region).
        let kept = newest_per_driver(self.filter.apply(events).await?);
        if kept.is_empty() {
            return Ok(());
        }
        for e in &kept {
            self.active.saw(&e.park_id, &e.driver_id, e.status);
        }
        upsert(&self.pool, &kept).await?;
        self.metrics.upsert_statements.inc();
        self.metrics.event("stored", kept.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::v1::{envelope::Payload, DriverStatus, DriverStatusKind};
    use events::Envelope;

    fn ev(driver: &str, secs: i64, status: KrtStatus) -> StatusEvent {
        StatusEvent {
            park_id: "p".into(),
            driver_id: driver.into(),
            status,
            updated_at: DateTime::from_timestamp(secs, 0).unwrap(),
            traceparent: None,
            position: None,
        }
    }

    #[test]
    fn newest_event_per_driver_wins_within_a_batch() {
        let out = newest_per_driver(vec![
            ev("a", 10, KrtStatus::Online),
            ev("a", 5, KrtStatus::Offline),
            ev("b", 1, KrtStatus::Busy),
            ev("a", 10, KrtStatus::Busy),
        ]);
        let mut out: Vec<_> = out.into_iter().map(|e| (e.driver_id, e.status)).collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            out,
            vec![("a".into(), KrtStatus::Busy), ("b".into(), KrtStatus::Busy)]
        );
    }

    #[test]
    fn decodes_driver_status_and_rejects_others() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = DriverStatus {
            park_id: "p1".into(),
            driver_profile_id: "d1".into(),
            status: DriverStatusKind::Busy.into(),
            updated_at: Some(events::timestamp(at)),
        };
        let env = Envelope::new(
            events::event_type::DRIVER_STATUS,
            1,
            at,
            "t",
            "k".into(),
            Payload::DriverStatus(s),
        );
        assert_eq!(
            decode(&env.to_bytes()),
            Some(ev("d1", 1_700_000_000, KrtStatus::Busy)).map(|mut e| {
                e.park_id = "p1".into();
                e
            })
        );
        assert_eq!(decode(b"garbage"), None);
    }
}
