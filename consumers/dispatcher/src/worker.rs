//! The consumer loop of one subscriber: one consumer group reading the source topics and the
//! subscriber's retry tiers, fanning records out to lanes (one key always maps to one lane, so
//! per-key order holds) and storing an offset only when everything before it is settled.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchyard_runtime::kafka::{ConsumerObserver, StatsContext};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::SubscriberHandle;
use crate::delivery::{Deliverer, Job};
use crate::metrics::{DispatchMetrics, LagLabels};
use crate::offsets::Ledger;
use crate::retry::RetryState;

/// What this subscriber's consumer reports: stored-offset lags go to the lag gauge and the
/// registry; a revoked partition's lag is forgotten there; every rebalance rescales the
/// subscriber's limits to this replica's share of its source partitions. The runtime's
/// [`StatsContext`] calls it and remembers revoked partitions for [`Worker`] to drop their
/// bookkeeping.
pub(crate) struct GroupObserver {
    subscriber: String,
    lag: Family<LagLabels, Gauge>,
    handle: Arc<SubscriberHandle>,
    ledger: Arc<Ledger>,
    /// How long a revoked partition's begun records get to finish or park.
    revoke_drain: Duration,
}

impl GroupObserver {
    pub(crate) fn new(
        handle: Arc<SubscriberHandle>,
        metrics: &DispatchMetrics,
        ledger: Arc<Ledger>,
        revoke_drain: Duration,
    ) -> Self {
        Self {
            subscriber: handle.name.clone(),
            lag: metrics.consumer_lag.clone(),
            handle,
            ledger,
            revoke_drain,
        }
    }
}

impl ConsumerObserver for GroupObserver {
    fn lag(&self, topic: &str, partition: i32, lag: i64) {
        let labels = LagLabels {
            subscriber: self.subscriber.clone(),
            topic: topic.to_owned(),
            partition,
        };
        self.lag.get_or_create(&labels).set(lag);
        self.handle.set_lag(topic, partition, lag);
    }

    fn revoked(&self, topic: &str, partition: i32) {
        self.handle.forget_lag(topic, partition);
    }

    /// Drain on revoke: these partitions' records waiting to retry are parked, the others
    /// (queued ones included) are handled within the drain window, after which records not
    /// started are left to the next owner ([`Ledger::revoke`]); the commit position of each is
    /// returned for the runtime to commit before the partition goes. The lanes run on other
    /// threads while this one waits (see [`StatsContext`]).
    fn revoking(&self, partitions: &[(String, i32)], may_block: bool) -> Vec<(String, i32, i64)> {
        let bound = if may_block {
            self.revoke_drain
        } else {
            Duration::ZERO
        };
        let started = std::time::Instant::now();
        let positions = self.ledger.revoke(partitions, bound);
        tracing::info!(subscriber = %self.subscriber, partitions = partitions.len(), waited_ms = started.elapsed().as_millis() as u64, "revoked partitions drained");
        positions
    }

    fn assigned(&self, owned: &[(String, i32)], partition_count: &dyn Fn(&str) -> Option<usize>) {
        self.handle.limits.rebalanced(owned, partition_count);
    }
}

pub(crate) type GroupContext = StatsContext<GroupObserver>;

pub(crate) type GroupConsumer = StreamConsumer<GroupContext>;

/// How long parks started when shutdown's drain window passed get to be acknowledged.
const PARK_GRACE: Duration = Duration::from_secs(3);

/// Stores the commit position `next` (rd_kafka_offset_store commits `offset + 1`).
fn store(consumer: &GroupConsumer, topic: &str, partition: i32, next: i64) {
    if let Err(e) = consumer.store_offset(topic, partition, next - 1) {
        tracing::debug!(%topic, partition, error = %e, "offset not stored (partition revoked?)");
    }
}

/// A partition paused because the lane its next record maps to stayed full for [`LANE_WAIT`]
/// (for example a lane retrying a park the broker refuses): read again from `offset` once the
/// lane has room. The loop never waits on a lane longer, so it keeps polling and stays in the
/// group.
#[derive(Debug, Clone, Copy)]
struct Blocked {
    offset: i64,
    lane: usize,
}

/// Records queued in one lane at most.
const LANE_DEPTH: usize = 64;

/// How often blocked partitions check whether their lane has room again.
const UNBLOCK_CHECK: Duration = Duration::from_millis(50);

/// A retry-tier partition paused until its head record is due.
struct Resume {
    topic: String,
    partition: i32,
    offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("subscribing to {0:?}")]
    Subscribe(Vec<String>, #[source] rdkafka::error::KafkaError),
}

pub(crate) struct Worker {
    pub consumer: Arc<GroupConsumer>,
    /// Shared with the lanes and with the rebalance callback ([`GroupObserver`]).
    pub ledger: Arc<Ledger>,
    pub deliverer: Arc<Deliverer>,
    pub lanes: usize,
    pub drain: Duration,
    /// The admin API's pause switch of this subscriber.
    pub handle: Arc<SubscriberHandle>,
}

impl Worker {
    pub(crate) async fn run(self, stop: CancellationToken) -> Result<(), WorkerError> {
        let d = &self.deliverer;
        let retry_topics: HashSet<&str> = d.retry_topics.iter().map(String::as_str).collect();
        let mut topics: Vec<String> = d.source_topics.clone();
        topics.extend(d.retry_topics.iter().cloned());
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&refs)
            .map_err(|e| WorkerError::Subscribe(topics.clone(), e))?;

        // Lanes stop on `lane_stop` only after the loop has stopped reading and the drain window
        // (and the parks it ends with) passed: not a child of `stop`, which would cut retries
        // waiting in the lanes short at once.
        let lane_stop = CancellationToken::new();
        let ledger = self.ledger.clone();
        let mut lane_txs = Vec::with_capacity(self.lanes);
        let mut lane_tasks = tokio::task::JoinSet::new();
        for _ in 0..self.lanes {
            let (tx, mut rx) = mpsc::channel::<Job>(LANE_DEPTH);
            lane_txs.push(tx);
            let (deliverer, lane_stop) = (d.clone(), lane_stop.clone());
            let (consumer, ledger) = (self.consumer.clone(), ledger.clone());
            lane_tasks.spawn(async move {
                while let Some(job) = rx.recv().await {
                    if job.ticket.abandon.is_cancelled() {
                        // Its partition went to another owner before it started.
                        ledger.abandon(&job.topic, job.partition, &job.ticket);
                        continue;
                    }
                    match deliverer.handle(&job, &lane_stop).await {
                        Some(()) => ledger.settle(
                            &job.topic,
                            job.partition,
                            job.offset,
                            &job.ticket,
                            |next| {
                                store(&consumer, &job.topic, job.partition, next);
                            },
                        ),
                        // Shutdown, or revoked before its first attempt: handled again later.
                        None => ledger.abandon(&job.topic, job.partition, &job.ticket),
                    }
                    if lane_stop.is_cancelled() {
                        return;
                    }
                }
            });
        }

        let (resume_tx, mut resume_rx) = mpsc::unbounded_channel::<Resume>();
        let mut paused: HashSet<(String, i32)> = HashSet::new();
        let mut switch = self.handle.paused_rx();
        let mut hold = Hold::default();
        let mut blocked: HashMap<(String, i32), Blocked> = HashMap::new();
        let mut unblock = tokio::time::interval(UNBLOCK_CHECK);
        unblock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if *switch.borrow_and_update() {
            hold.pause(&self.consumer);
        }
        // Exported from the start (0), so the alert on it sees a series for every subscriber.
        let _ = d.metrics.parking_failed.get_or_create(&d.labels);
        tracing::info!(subscriber = %d.subscriber, ?topics, "subscriber started");

        loop {
            self.forget_revoked(&mut paused, &mut hold, &mut blocked);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Ok(()) = switch.changed() => {
                    if *switch.borrow_and_update() {
                        hold.pause(&self.consumer);
                    } else {
                        hold.resume(&self.consumer, |k| paused.contains(k) || blocked.contains_key(k));
                    }
                }
                _ = unblock.tick(), if !blocked.is_empty() => {
                    self.unblock(&mut blocked, &lane_txs, &mut hold);
                }
                Some(r) = resume_rx.recv() => {
                    let tpl = single(&r.topic, r.partition, Some(r.offset));
                    if let Err(e) = self.consumer.seek_partitions(tpl.clone(), Duration::from_secs(5)) {
                        tracing::warn!(error = %e, topic = %r.topic, "seek failed");
                    }
                    let _ = self.consumer.resume(&tpl);
                    paused.remove(&(r.topic, r.partition));
                }
                msg = self.consumer.recv() => {
                    // A rebalance runs inside `recv`: what it revoked must be forgotten before
                    // this record (perhaps of a partition assigned again) is looked at.
                    self.forget_revoked(&mut paused, &mut hold, &mut blocked);
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(subscriber = %d.subscriber, error = %e, "consumer error");
                            continue;
                        }
                    };
                    let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
                    if paused.contains(&(topic.clone(), partition))
                        || blocked.contains_key(&(topic.clone(), partition))
                    {
                        continue; // re-read after the pause
                    }
                    if hold.active {
                        // Fetched before the pause took hold: read again after resume.
                        hold.hold(&self.consumer, topic, partition, offset);
                        continue;
                    }
                    let state = RetryState::from_headers(msg.headers());
                    if retry_topics.contains(topic.as_str()) {
                        let now = chrono::Utc::now().timestamp_millis();
                        if let Some(wait) = state.not_before_ms.filter(|nb| *nb > now).map(|nb| nb - now) {
                            let _ = self.consumer.pause(&single(&topic, partition, None));
                            paused.insert((topic.clone(), partition));
                            let tx = resume_tx.clone();
                            let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
                            let stop = stop.clone();
                            switchyard_runtime::shutdown::spawn_detached("retry-tier-wake", async move {
                                tokio::select! {
                                    _ = stop.cancelled() => {}
                                    _ = tokio::time::sleep(wait) => { let _ = tx.send(Resume { topic, partition, offset }); }
                                }
                            });
                            continue;
                        }
                    }
                    if !retry_topics.contains(topic.as_str())
                        && d.skips_by_headers(state.event_type.as_deref(), state.tag.as_deref())
                    {
                        // Not this subscriber's: done at once, in offset order with the rest.
                        d.metrics.skipped.get_or_create(&d.labels).inc();
                        let ticket = ledger.begin(&topic, partition, offset);
                        ledger.settle(&topic, partition, offset, &ticket, |next| store(&self.consumer, &topic, partition, next));
                        continue;
                    }
                    let key = msg.key().map(<[u8]>::to_vec);
                    let lane = lane_of(key.as_deref(), partition, self.lanes);
                    let payload = msg.payload().map(<[u8]>::to_vec);
                    drop(msg);
                    let reserved = match lane_txs[lane].try_reserve() {
                        Ok(permit) => Ok(permit),
                        Err(mpsc::error::TrySendError::Full(())) => {
                            // Under a backlog a lane is full now and then and has room again
                            // within milliseconds: waiting a moment is the cheap back-pressure.
                            // Pausing the partition at once (then seeking back and resuming)
                            // cost 40% of the throughput in the dispatch bench: about 90 pauses
                            // per 200k records, each partition idle until its next fetch. A lane
                            // still full after LANE_WAIT is stuck (a slow key, a failing park):
                            // then its partition pauses and the loop goes on polling.
                            match tokio::time::timeout(LANE_WAIT, lane_txs[lane].reserve()).await {
                                Ok(Ok(permit)) => Ok(permit),
                                Ok(Err(_)) => Err(mpsc::error::TrySendError::Closed(())),
                                Err(_) => Err(mpsc::error::TrySendError::Full(())),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    match reserved {
                        Ok(permit) => {
                            let ticket = ledger.begin(&topic, partition, offset);
                            permit.send(Job { topic, partition, offset, key, payload, state, ticket });
                        }
                        Err(mpsc::error::TrySendError::Full(())) => {
                            // Pause this partition, not the loop: other partitions keep flowing
                            // and the consumer keeps polling. Nothing past `offset` is begun, so
                            // nothing is committed past it.
                            let _ = self.consumer.pause(&single(&topic, partition, None));
                            tracing::debug!(subscriber = %d.subscriber, %topic, partition, offset, lane, "lane full, partition paused");
                            blocked.insert((topic, partition), Blocked { offset, lane });
                        }
                        Err(mpsc::error::TrySendError::Closed(())) => break,
                    }
                }
            }
        }

        // Drain: queued and in-flight deliveries (waiting retries included) get the drain
        // window; then records waiting to retry are parked and records not started are left
        // for the next run, with a short grace for those parks to be acknowledged.
        drop(lane_txs);
        let drained = async { while lane_tasks.join_next().await.is_some() {} };
        tokio::pin!(drained);
        if tokio::time::timeout(self.drain, &mut drained)
            .await
            .is_err()
        {
            tracing::warn!(subscriber = %d.subscriber, left = ledger.in_flight(), "drain window passed: parking what waits to retry");
            ledger.end_all();
            if tokio::time::timeout(PARK_GRACE, &mut drained)
                .await
                .is_err()
            {
                lane_stop.cancel();
                drained.await;
            }
        }
        lane_stop.cancel();
        self.commit_final();
        tracing::info!(subscriber = %d.subscriber, "subscriber stopped");
        Ok(())
    }

    /// The loop's own bookkeeping of revoked partitions (the ledger forgot them in the
    /// rebalance callback).
    fn forget_revoked(
        &self,
        paused: &mut HashSet<(String, i32)>,
        hold: &mut Hold,
        blocked: &mut HashMap<(String, i32), Blocked>,
    ) {
        for (t, p) in self.consumer.context().take_revoked() {
            hold.held.remove(&(t.clone(), p));
            blocked.remove(&(t.clone(), p));
            paused.remove(&(t, p));
        }
    }

    /// Reads blocked partitions again, from their first unread record, once their lane has
    /// room. During an operator's pause they join the hold instead, which seeks on resume.
    fn unblock(
        &self,
        blocked: &mut HashMap<(String, i32), Blocked>,
        lanes: &[mpsc::Sender<Job>],
        hold: &mut Hold,
    ) {
        let ready: Vec<(String, i32)> = blocked
            .iter()
            .filter(|(_, b)| lanes[b.lane].capacity() > 0)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ready {
            let Some(b) = blocked.remove(&key) else {
                continue;
            };
            let (topic, partition) = key;
            if hold.active {
                hold.held.entry((topic, partition)).or_insert(b.offset);
                continue;
            }
            let tpl = single(&topic, partition, Some(b.offset));
            if let Err(e) = self
                .consumer
                .seek_partitions(tpl.clone(), Duration::from_secs(5))
            {
                tracing::warn!(error = %e, %topic, partition, "seek after lane wait failed");
            }
            let _ = self.consumer.resume(&tpl);
        }
    }

    fn commit_final(&self) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in self.ledger.positions() {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(subscriber = %self.deliverer.subscriber, error = %e, "final commit failed");
            }
        }
    }
}

/// An operator's pause: every assigned partition stops fetching; a record that arrives anyway
/// (fetched before the pause, or from a partition assigned since) pauses its partition and is
/// read again, from its offset, on resume. In-flight deliveries finish either way.
#[derive(Default)]
struct Hold {
    active: bool,
    held: HashMap<(String, i32), i64>,
}

impl Hold {
    fn pause(&mut self, consumer: &GroupConsumer) {
        self.active = true;
        if let Ok(assigned) = consumer.assignment() {
            let _ = consumer.pause(&assigned);
        }
        tracing::info!("subscriber paused");
    }

    fn hold(&mut self, consumer: &GroupConsumer, topic: String, partition: i32, offset: i64) {
        let _ = consumer.pause(&single(&topic, partition, None));
        self.held.entry((topic, partition)).or_insert(offset);
    }

    /// Resumes every assigned partition except those still waiting (for a retry tier's due
    /// time, or for room in a lane).
    fn resume(&mut self, consumer: &GroupConsumer, waiting: impl Fn(&(String, i32)) -> bool) {
        self.active = false;
        for ((topic, partition), offset) in self.held.drain() {
            let tpl = single(&topic, partition, Some(offset));
            if let Err(e) = consumer.seek_partitions(tpl, Duration::from_secs(5)) {
                tracing::warn!(error = %e, topic = %topic, "seek after pause failed");
            }
        }
        if let Ok(assigned) = consumer.assignment() {
            let mut tpl = TopicPartitionList::new();
            for e in assigned.elements() {
                if !waiting(&(e.topic().to_owned(), e.partition())) {
                    tpl.add_partition(e.topic(), e.partition());
                }
            }
            let _ = consumer.resume(&tpl);
        }
        tracing::info!("subscriber resumed");
    }
}

/// How long the loop waits for room in a full lane before pausing the record's partition.
const LANE_WAIT: Duration = Duration::from_millis(100);

fn single(topic: &str, partition: i32, offset: Option<i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    match offset {
        Some(o) => {
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(o));
        }
        None => {
            tpl.add_partition(topic, partition);
        }
    }
    tpl
}

/// Same key, same lane: per-key order. Keyless records spread by partition.
pub fn lane_of(key: Option<&[u8]>, partition: i32, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    match key {
        Some(k) => k.hash(&mut h),
        None => partition.hash(&mut h),
    }
    usize::try_from(h.finish() % lanes as u64).unwrap_or(0)
}
