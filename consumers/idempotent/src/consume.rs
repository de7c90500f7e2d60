//! The at-least-once consume loop: one worker per assigned partition (partitions progress
//! concurrently, each in order), dead letters for records that can never be applied, and the
//! pruning of old `processed_events` rows.
//!
//! The dispatch loop never waits on a worker: it keeps polling (so the group never expels the
//! consumer) and pauses a partition whose worker has fallen `PAUSE_AT` records behind,
//! resuming it once the worker has caught up. librdkafka refetches a resumed partition from
//! the last record handed to the application, so pausing loses nothing.
//!
//! What becomes of a record (offsets are stored only after one of these):
//! - applied, or found a duplicate;
//! - dead-lettered at once when it is not an envelope or the handler refuses it for good
//!   ([`EventsError::Handler`], [`EventsError::Json`]);
//! - dead-lettered after `max_attempts` when the handler's statement keeps failing
//!   (a Postgres error the server reported: constraint, bad data, ...).
//!
//! A lost Postgres connection is no fault of the record: the worker reconnects and retries
//! with backoff for as long as it takes, without counting attempts (its partition pauses).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::header;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use switchyard_runtime::KafkaSettings;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::{apply, connect, prune, Event, EventsError, Handler, IdempotentConsumer, Outcome};

/// A worker this many records behind gets its partition paused ...
const PAUSE_AT: usize = 500;
/// ... until it is this close again.
const RESUME_AT: usize = 50;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The service's database: workers open their own connections (search_path = `schema`).
#[derive(Debug, Clone)]
pub struct Db {
    pub url: String,
    pub schema: String,
}

impl Db {
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: schema.into(),
        }
    }
}

/// What a failed attempt says about the record.
enum Failure {
    /// The record can never be applied: dead-letter it now.
    Permanent,
    /// The statement failed; counts towards `max_attempts`.
    Attempt,
    /// The connection or broker failed, not the record: retry without counting.
    Infrastructure,
}

fn classify(e: &EventsError) -> Failure {
    match e {
        EventsError::Handler(_) | EventsError::Json(..) | EventsError::Decode { .. } => {
            Failure::Permanent
        }
        EventsError::Postgres(pg) if pg.code().is_some() => Failure::Attempt,
        EventsError::Postgres(_) | EventsError::Kafka(_) => Failure::Infrastructure,
    }
}

/// Everything the workers of one `run` share.
struct Shared {
    name: String,
    max_attempts: u32,
    consumer: StreamConsumer,
    producer: FutureProducer,
    produce_timeout: Duration,
    dead_letter_topic: String,
    db: Db,
    handler: Handler,
    stop: CancellationToken,
}

struct Lane {
    tx: mpsc::UnboundedSender<OwnedMessage>,
    depth: Arc<AtomicUsize>,
    paused: bool,
}

impl IdempotentConsumer {
    /// The dead-letter topic of consumer group `group`: `dead_letter_topic`, else
    /// `<group>.dead-letters`.
    pub fn dead_letter_topic_of(&self, group: &str) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{group}.dead-letters"))
    }

    /// Consumes `topics` with consumer group `group` until `stop`: each partition has its own
    /// worker and Postgres connection and handles its records in order, storing each offset
    /// once the record is applied (or a duplicate) or dead-lettered. Meanwhile
    /// `processed_events` rows older than `retention` are pruned every `prune_every`.
    pub async fn run(
        &self,
        kafka: &KafkaSettings,
        group: &str,
        topics: &[&str],
        db: &Db,
        handler: Handler,
        stop: CancellationToken,
    ) -> Result<(), EventsError> {
        // A child: a failing worker stops this consumer's workers, not the caller's others.
        let stop = stop.child_token();
        let consumer: StreamConsumer = kafka.consumer_config(group).create()?;
        consumer.subscribe(topics)?;
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            max_attempts: self.max_attempts.max(1),
            consumer,
            producer: kafka
                .producer_config(&format!("{group}-dead-letters"))
                .create()?,
            produce_timeout: kafka.produce_timeout(),
            dead_letter_topic: self.dead_letter_topic_of(group),
            db: db.clone(),
            handler,
            stop: stop.clone(),
        });
        let mut workers: JoinSet<Result<(), EventsError>> = JoinSet::new();
        workers.spawn(prune_loop(shared.clone(), self.retention, self.prune_every));
        let mut lanes: HashMap<(String, i32), Lane> = HashMap::new();
        let mut check = tokio::time::interval(Duration::from_millis(100));
        let result = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                Some(joined) = workers.join_next() => match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(EventsError::Handler(format!("worker panicked: {e}"))),
                },
                _ = check.tick() => resume_caught_up(&shared, &mut lanes),
                m = shared.consumer.recv() => {
                    let msg = match m {
                        Ok(m) => m.detach(),
                        Err(e) => {
                            tracing::warn!(consumer = %self.name, error = %e, "kafka consumer error");
                            continue;
                        }
                    };
                    let key = (msg.topic().to_owned(), msg.partition());
                    let lane = lanes.entry(key.clone()).or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let depth = Arc::new(AtomicUsize::new(0));
                        workers.spawn(worker(shared.clone(), rx, depth.clone()));
                        Lane { tx, depth, paused: false }
                    });
                    let depth = lane.depth.fetch_add(1, Ordering::SeqCst) + 1;
                    if lane.tx.send(msg).is_err() {
                        break Err(EventsError::Handler("partition worker gone".into()));
                    }
                    if depth >= PAUSE_AT && !lane.paused {
                        lane.paused = set_paused(&shared.consumer, &key, true);
                    }
                }
            }
        };
        // Workers finish the record in hand (a retry wait ends at `stop`), then stop.
        stop.cancel();
        drop(lanes);
        while let Some(joined) = workers.join_next().await {
            if let Ok(Err(e)) = joined {
                tracing::warn!(consumer = %self.name, error = %e, "worker failed while stopping");
            }
        }
        // Hand the stored offsets to the broker before the consumer goes.
        if let Err(e) = shared
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(consumer = %self.name, error = %e, "final commit");
        }
        result
    }
}

fn resume_caught_up(shared: &Shared, lanes: &mut HashMap<(String, i32), Lane>) {
    for (key, lane) in lanes.iter_mut() {
        if lane.paused && lane.depth.load(Ordering::SeqCst) <= RESUME_AT {
            set_paused(&shared.consumer, key, false);
            lane.paused = false;
        }
    }
}

/// Pauses or resumes one partition; returns whether it is paused now. A partition revoked in
/// the meantime cannot be paused or resumed; a new assignment starts unpaused anyway.
fn set_paused(consumer: &StreamConsumer, (topic, partition): &(String, i32), pause: bool) -> bool {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *partition);
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => {
            tracing::debug!(topic, partition, pause, "partition flow control");
            pause
        }
        Err(e) => {
            tracing::warn!(topic, partition, pause, error = %e, "cannot pause or resume partition");
            false
        }
    }
}

/// One partition's records, in order.
async fn worker(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<OwnedMessage>,
    depth: Arc<AtomicUsize>,
) -> Result<(), EventsError> {
    let mut client: Option<Client> = None;
    loop {
        let msg = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            m = rx.recv() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        let done = process(&shared, &mut client, &msg).await;
        depth.fetch_sub(1, Ordering::SeqCst);
        if !done {
            return Ok(()); // stopped before the record was handled: it is not stored
        }
        // rust-rdkafka `examples/at_least_once.rs`: the offset is stored only now.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            msg.topic(),
            msg.partition(),
            Offset::Offset(msg.offset() + 1),
        )?;
        if let Err(e) = shared.consumer.store_offsets(&tpl) {
            // Revoked meanwhile: the new owner gets the record again and finds it processed.
            tracing::debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "offset not stored");
        }
    }
}

/// Handles one record until it is applied, a duplicate, or dead-lettered (true), or `stop`
/// (false).
async fn process(shared: &Shared, client: &mut Option<Client>, msg: &OwnedMessage) -> bool {
    let event = match Event::decode(msg.payload().unwrap_or_default()) {
        Ok(e) => e,
        Err(e) => return dead_letter(shared, msg, &format!("not an envelope: {e}"), 0).await,
    };
    let mut attempts = 0u32;
    let mut backoff = BACKOFF_START;
    loop {
        let result = match connection(shared, client).await {
            Ok(c) => apply(&shared.name, c, &event, |tx, ev| (shared.handler)(tx, ev)).await,
            Err(e) => Err(e),
        };
        let e = match result {
            Ok(outcome) => {
                tracing::debug!(
                    consumer = %shared.name,
                    event_id = %event.envelope.event_id,
                    duplicate = outcome == Outcome::Duplicate,
                    "event handled"
                );
                return true;
            }
            Err(e) => e,
        };
        match classify(&e) {
            Failure::Permanent => {
                return dead_letter(shared, msg, &e.to_string(), attempts + 1).await;
            }
            Failure::Attempt => {
                attempts += 1;
                if attempts >= shared.max_attempts {
                    let reason = format!("{e}: {}", error_chain(&e));
                    return dead_letter(shared, msg, &reason, attempts).await;
                }
            }
            Failure::Infrastructure => {
                if client.as_ref().is_some_and(Client::is_closed) {
                    *client = None;
                }
            }
        }
        tracing::warn!(
            consumer = %shared.name, event_id = %event.envelope.event_id, attempts,
            error = %e, detail = %error_chain(&e), "handler failed, retrying"
        );
        tokio::select! {
            _ = shared.stop.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The worker's connection, (re)opened when missing.
async fn connection<'c>(
    shared: &Shared,
    client: &'c mut Option<Client>,
) -> Result<&'c mut Client, EventsError> {
    if client.is_none() {
        *client = Some(connect(&shared.db.url, &shared.db.schema).await?);
    }
    Ok(client.as_mut().expect("just connected"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// Copies `msg` (key, payload, headers) to the dead-letter topic with why, where from and
/// after how many attempts; retries the produce until it is acknowledged (true) or `stop`.
async fn dead_letter(shared: &Shared, msg: &OwnedMessage, reason: &str, attempts: u32) -> bool {
    let origin = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for h in h.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let reason: String = reason.chars().take(1000).collect();
    let attempts = attempts.to_string();
    for (key, value) in [
        (header::ORIGIN, origin.as_str()),
        (header::LAST_ERROR, reason.as_str()),
        (header::ATTEMPTS, attempts.as_str()),
        (header::SUBSCRIBER, shared.name.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut backoff = BACKOFF_START;
    loop {
        let mut record = FutureRecord::to(&shared.dead_letter_topic)
            .headers(headers.clone())
            .payload(msg.payload().unwrap_or_default());
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        match shared.producer.send(record, shared.produce_timeout).await {
            Ok(_) => {
                tracing::warn!(
                    consumer = %shared.name, origin = %origin, topic = %shared.dead_letter_topic,
                    reason = %reason, "record dead-lettered"
                );
                return true;
            }
            Err((e, _)) => {
                tracing::warn!(consumer = %shared.name, origin = %origin, error = %e, "dead-letter produce failed, retrying");
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Prunes this consumer's `processed_events` every `every`; errors are logged and retried at
/// the next round.
async fn prune_loop(
    shared: Arc<Shared>,
    retention: Duration,
    every: Duration,
) -> Result<(), EventsError> {
    let client = Arc::new(tokio::sync::Mutex::new(None::<Client>));
    let stop = shared.stop.clone();
    switchyard_runtime::shutdown::every(every, &stop, || {
        let (shared, client) = (shared.clone(), client.clone());
        async move {
            let mut client = client.lock().await;
            let result = match connection(&shared, &mut client).await {
                Ok(c) => prune(c, &shared.name, retention).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(0) => {}
                Ok(n) => tracing::debug!(consumer = %shared.name, rows = n, "processed_events pruned"),
                Err(e) => {
                    tracing::warn!(consumer = %shared.name, error = %e, "processed_events prune failed");
                    *client = None;
                }
            }
        }
    })
    .await;
    Ok(())
}
