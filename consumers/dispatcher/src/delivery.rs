//! One record's journey for one subscriber: render, attempt with quick in-process retries,
//! then park in the next retry tier or dead-letter it. Returns only when the record's offset
//! may be stored, or `None` when shutdown interrupted it (the record will be redelivered).

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::v1::envelope::Payload;
use events::Envelope;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::attempt_log::{AttemptLog, AttemptRow};
use crate::breaker::{counts_against_target, Admit};
use crate::config::RetryPolicy;
use crate::control::{Outcome, SubscriberHandle, SubscriberStats};
use crate::filter::refused_by_headers;
use crate::http_target::{Attempt, HttpSink};
use crate::metrics::{DispatchMetrics, SubscriberLabels, TierLabels};
use crate::offsets::Ticket;
use crate::ordered::{OrderedKeys, Origin, Place};
use crate::render::{render_http, render_topic};
use crate::retry::{backoff, Parked, RetryState};
use crate::topic_sink::TopicSink;

/// A record taken off the consumer, owned so it can cross tasks.
#[derive(Debug)]
pub(crate) struct Job {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub state: RetryState,
    /// Its partition's ownership: when that ends, a retry wait is cut short and the record
    /// parked (see [`crate::offsets::Ticket`]).
    pub ticket: Ticket,
}

/// Where deliveries go.
#[derive(Clone)]
pub(crate) enum Sink {
    Http(HttpSink),
    Topic(TopicSink),
}

/// Everything a delivery lane needs, shared by all lanes of one subscriber.
pub(crate) struct Deliverer {
    pub subscriber: String,
    /// The same name, shared by the attempt log's rows.
    pub subscriber_name: Arc<str>,
    pub source_topics: Vec<String>,
    pub event_types: Vec<String>,
    pub tags: Vec<String>,
    pub sink: Sink,
    pub policy: RetryPolicy,
    pub max_attempts: Option<u32>,
    pub retry_topics: Vec<String>,
    pub dead_letter_topic: String,
    pub producer: FutureProducer,
    pub metrics: Arc<DispatchMetrics>,
    pub labels: SubscriberLabels,
    /// Where every attempt is recorded, when the attempt log is on.
    pub attempt_log: Option<AttemptLog>,
    /// The registry's statistics of this subscriber (see [`Deliverer::count`]).
    pub stats: Arc<SubscriberStats>,
    /// Its registry entry: the circuit breaker, and the pause a 410 Gone sets.
    pub handle: Arc<SubscriberHandle>,
    /// Ordered mode's parked records (`ordering = "key"`), or `None`.
    pub ordered: Option<OrderedKeys>,
}

enum Verdict {
    Delivered,
    Park {
        error: String,
        attempts: u32,
        retry_after: Option<Duration>,
        /// Parked without an attempt (breaker open, or the target is gone): it stays in its
        /// tier (a source record goes to the first) rather than moving to a longer delay.
        short_circuit: bool,
    },
    DeadLetter {
        error: String,
        attempts: u32,
    },
}

impl Deliverer {
    /// Handles `job` to the end; `None` means interrupted by shutdown before it was settled.
    pub(crate) async fn handle(&self, job: &Job, stop: &CancellationToken) -> Option<()> {
        // The consumer span of this delivery; its parent is set from the envelope's trace.
        let span = tracing::info_span!(
            "deliver",
            otel.name = %format_args!("deliver {}", self.subscriber),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = %job.topic,
            messaging.destination.partition.id = job.partition,
            messaging.kafka.offset = job.offset,
            subscriber = %self.subscriber,
            skipped = tracing::field::Empty,
        );
        tracing::Instrument::instrument(self.settle(job, stop), span).await
    }

    async fn settle(&self, job: &Job, stop: &CancellationToken) -> Option<()> {
        let order = self.order_of(job);
        let place = match &order {
            Some((keys, key, at)) => Some(self.db(stop, || keys.place(key, at)).await?),
            None => None,
        };
        let own_row = place.is_some_and(|p| p.own_row);
        let verdict = match place {
            Some(Place { own_row: false, .. }) if job.state.tier.is_some() => {
                // Its row is gone: this parked copy was delivered (or dead-lettered) already.
                tracing::debug!(subscriber = %self.subscriber, origin = ?job.state.origin, "ordered copy already done, dropped");
                return Some(());
            }
            Some(Place { behind: true, .. }) => {
                self.metrics
                    .ordered_waiting
                    .get_or_create(&self.labels)
                    .inc();
                Verdict::Park {
                    error: "waiting behind an earlier record of its key".into(),
                    attempts: job.state.attempts,
                    retry_after: None,
                    short_circuit: true,
                }
            }
            _ => self.try_deliver(job, stop).await?,
        };
        let order_ref = &order;
        let release = |stop| async move {
            match order_ref {
                Some((keys, key, at)) if own_row => self.db(stop, || keys.release(key, at)).await,
                _ => Some(()),
            }
        };
        let verdict = match verdict {
            Verdict::Delivered => return release(stop).await,
            v => v,
        };
        let origin = job
            .state
            .origin
            .clone()
            .unwrap_or_else(|| format!("{}/{}/{}", job.topic, job.partition, job.offset));
        let (topic, parked, tier) = match &verdict {
            Verdict::Park {
                error,
                attempts,
                retry_after,
                short_circuit,
            } => {
                let last = self.retry_topics.len() - 1;
                let tier = match job.state.tier {
                    Some(t) if *short_circuit => t.min(last),
                    Some(t) => (t + 1).min(last),
                    None => 0,
                };
                let delay = self
                    .policy
                    .tier_delay(tier)
                    .max(retry_after.unwrap_or_default());
                let not_before = chrono::Utc::now().timestamp_millis()
                    + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                let parked = Parked {
                    subscriber: &self.subscriber,
                    event_type: job.state.event_type.as_deref(),
                    attempts: *attempts,
                    tier: Some(tier),
                    not_before_ms: Some(not_before),
                    error,
                    origin: &origin,
                    ordered: order.is_some(),
                };
                (&self.retry_topics[tier], parked, Some(tier))
            }
            Verdict::DeadLetter { error, attempts } => {
                let parked = Parked {
                    subscriber: &self.subscriber,
                    event_type: job.state.event_type.as_deref(),
                    attempts: *attempts,
                    tier: None,
                    not_before_ms: None,
                    error,
                    origin: &origin,
                    ordered: false,
                };
                (&self.dead_letter_topic, parked, None)
            }
            Verdict::Delivered => unreachable!("returned above"),
        };
        if let (Some((keys, key, at)), Some(_)) = (&order, tier) {
            if !own_row {
                // Written before the copy exists, so no later record of the key overtakes it.
                self.db(stop, || keys.hold(key, at)).await?;
            }
        }
        self.produce(topic, job, parked, stop).await?;
        if tier.is_none() {
            // A dead letter leaves its key's order: the next record of the key may go.
            release(stop).await?;
        }
        match tier {
            Some(tier) => {
                let labels = TierLabels {
                    subscriber: self.subscriber.clone(),
                    tier: u32::try_from(tier).unwrap_or(u32::MAX),
                };
                self.metrics.parked.get_or_create(&labels).inc();
                self.stats.count(Outcome::Parked);
                tracing::info!(subscriber = %self.subscriber, topic, tier, "record parked for retry");
            }
            None => {
                self.metrics.dead_lettered.get_or_create(&self.labels).inc();
                self.stats.count(Outcome::DeadLettered);
                tracing::warn!(subscriber = %self.subscriber, topic, "record dead-lettered");
            }
        }
        Some(())
    }

    /// The record's key and place in its key's order, when this subscriber keeps one: a source
    /// record with a key, or a copy parked in ordered mode.
    fn order_of<'a>(&'a self, job: &'a Job) -> Option<(&'a OrderedKeys, &'a [u8], Origin)> {
        let keys = self.ordered.as_ref()?;
        let key = job.key.as_deref()?;
        let at = if self.retry_topics.contains(&job.topic) {
            if !job.state.ordered {
                return None; // parked before ordered mode was on, or a replay
            }
            Origin::parse(job.state.origin.as_deref()?)?
        } else {
            Origin {
                topic: job.topic.clone(),
                partition: job.partition,
                offset: job.offset,
            }
        };
        Some((keys, key, at))
    }

    /// Runs an ordered-mode database call until it succeeds (the lane holds the record
    /// meanwhile, as it does for a park the broker refuses), or `None` at shutdown.
    async fn db<T, F, Fut>(&self, stop: &CancellationToken, call: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, switchyard_runtime::pg::DbError>>,
    {
        let mut n = 0;
        loop {
            match call().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::warn!(subscriber = %self.subscriber, attempt = n + 1, error = %e, "ordered-mode database call failed, retrying");
                }
            }
            n += 1;
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff(&self.policy, n.min(10))) => {}
            }
        }
    }

    /// Whether a source record's headers prove this subscriber's filters refuse it (see
    /// [`refused_by_headers`]).
    pub(crate) fn skips_by_headers(&self, event_type: Option<&str>, tag: Option<&str>) -> bool {
        refused_by_headers(&self.event_types, &self.tags, event_type, tag)
    }

    /// Event type and (for marks) tag filters of this subscriber.
    fn wants(&self, env: &Envelope) -> bool {
        if !self.event_types.is_empty()
            && !self
                .event_types
                .iter()
                .any(|f| crate::config::type_matches(f, env))
        {
            return false;
        }
        if self.tags.is_empty() {
            return true;
        }
        match &env.payload {
            Some(Payload::NotificationSeen(seen)) => self.tags.contains(&seen.tag),
            _ => false,
        }
    }

    async fn try_deliver(&self, job: &Job, stop: &CancellationToken) -> Option<Verdict> {
        let dead = |error: String| {
            Some(Verdict::DeadLetter {
                error,
                attempts: job.state.attempts,
            })
        };
        let Some(payload) = job.payload.as_deref() else {
            return dead("record has no value".into());
        };
        let env = match Envelope::from_bytes(payload) {
            Ok(env) => env,
            Err(e) => return dead(format!("undecodable envelope: {e}")),
        };
        crate::render::continue_trace(&env);
        if !self.wants(&env) {
            tracing::Span::current().record("skipped", true);
            self.metrics.skipped.get_or_create(&self.labels).inc();
            return Some(Verdict::Delivered);
        }
        let rendered = match &self.sink {
            Sink::Http(_) => render_http(&env),
            Sink::Topic(_) => render_topic(&env, payload),
        };
        let rendered = match rendered {
            Ok(r) => r,
            Err(e) => return dead(format!("cannot render: {e}")),
        };
        let mut attempts = job.state.attempts;
        let short_circuit = |error: String| {
            Some(Verdict::Park {
                error,
                attempts: job.state.attempts,
                retry_after: None,
                short_circuit: true,
            })
        };
        if let Some(reason) = self.handle.gone_reason() {
            return short_circuit(reason);
        }
        let breaker = &self.handle.breaker;
        let probe = match breaker.admit() {
            Admit::Attempts => false,
            Admit::Probe => true,
            Admit::Park => return short_circuit("circuit breaker open: not attempted".into()),
        };
        let budget = match self.max_attempts {
            Some(max) => self
                .policy
                .in_process_attempts
                .min(max.saturating_sub(attempts)),
            None => self.policy.in_process_attempts,
        };
        // A probe is one attempt.
        let budget = if probe { 1 } else { budget.max(1) };
        let mut last_error = String::from("no attempt made");
        let mut retry_after = None;
        for n in 0..budget {
            if n > 0 {
                if breaker.is_open() {
                    break; // other records opened it meanwhile: park without more attempts
                }
                let cap = Duration::from_millis(self.policy.max_in_process_retry_after_ms);
                let wait = match retry_after {
                    Some(ra) if ra > cap => break,
                    Some(ra) => ra,
                    None => backoff(&self.policy, n - 1),
                };
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    // The partition is going to another owner: park now rather than wait.
                    _ = job.ticket.hurry.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            // The subscriber's rate and in-flight limits, held for the attempt.
            let slot = tokio::select! {
                slot = self.handle.limits.acquire(stop) => slot,
                _ = job.ticket.abandon.cancelled() => None,
            };
            let Some(slot) = slot else {
                if probe {
                    breaker.abandon_probe();
                }
                if n > 0 && !stop.is_cancelled() {
                    break; // let go while waiting for a slot after an attempt: park
                }
                return None; // not attempted here: the next owner (or run) handles it
            };
            let started = Instant::now();
            let outcome = match &self.sink {
                Sink::Http(http) => http.attempt(&env.event_id, &rendered).await,
                Sink::Topic(t) => t.attempt(job.key.as_deref(), &env, &rendered).await,
            };
            drop(slot);
            attempts += 1;
            if let Some(log) = &self.attempt_log {
                log.record(self.attempt_row(&env.event_id, attempts, started, &outcome));
            }
            breaker.record(
                probe,
                match &outcome {
                    Attempt::Delivered { .. } => Some(false),
                    Attempt::Failed { status, .. } => {
                        counts_against_target(*status).then_some(true)
                    }
                },
            );
            match outcome {
                Attempt::Delivered { .. } => {
                    self.metrics.deliveries.get_or_create(&self.labels).inc();
                    self.stats.count(Outcome::Delivered);
                    let since = env
                        .produced_at
                        .as_ref()
                        .and_then(|t| events::to_datetime(Some(t)))
                        .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
                        .unwrap_or_else(|| started.elapsed());
                    self.metrics
                        .latency
                        .get_or_create(&self.labels)
                        .observe(since.as_secs_f64());
                    return Some(Verdict::Delivered);
                }
                Attempt::Failed {
                    error,
                    retry_after: ra,
                    status,
                    ..
                } => {
                    self.metrics
                        .failed_attempts
                        .get_or_create(&self.labels)
                        .inc();
                    self.stats.count(Outcome::FailedAttempt);
                    tracing::debug!(subscriber = %self.subscriber, event_id = %env.event_id, attempts, %error, "delivery attempt failed");
                    last_error = error;
                    retry_after = ra;
                    if status == Some(410) {
                        // The target says this endpoint is gone for good: stop delivering to
                        // it until an operator resumes; this record waits in a retry tier.
                        self.handle.pause_gone(format!(
                            "target answered 410 Gone at {}",
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ));
                        break;
                    }
                }
            }
        }
        if self.max_attempts.is_some_and(|max| attempts >= max) {
            return Some(Verdict::DeadLetter {
                error: last_error,
                attempts,
            });
        }
        Some(Verdict::Park {
            error: last_error,
            attempts,
            retry_after,
            short_circuit: false,
        })
    }

    fn attempt_row(
        &self,
        event_id: &str,
        attempt: u32,
        started: Instant,
        outcome: &Attempt,
    ) -> AttemptRow {
        let (status, outcome, excerpt, error) = match outcome {
            Attempt::Delivered { status } => (*status, "delivered", None, None),
            Attempt::Failed {
                error,
                status,
                excerpt,
                ..
            } => (*status, "failed", excerpt.clone(), Some(error.clone())),
        };
        AttemptRow {
            subscriber: self.subscriber_name.clone(),
            at: chrono::Utc::now(),
            event_id: event_id.to_owned(),
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            status: status.and_then(|s| i16::try_from(s).ok()),
            outcome,
            latency_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
            response_excerpt: excerpt,
            error,
        }
    }

    /// Produces the parked copy, retrying until the broker acknowledges it or shutdown.
    async fn produce(
        &self,
        topic: &str,
        job: &Job,
        parked: Parked<'_>,
        stop: &CancellationToken,
    ) -> Option<()> {
        let headers = parked.headers();
        let mut n = 0;
        // Raised while this record's park is failing; the lane holds the record (its offset is
        // not stored), the worker pauses partitions that need this lane, and this loop keeps
        // trying until the topic takes it again.
        let mut failing: Option<ParkingFailed> = None;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers.clone());
            if let Some(k) = job.key.as_deref() {
                record = record.key(k);
            }
            if let Some(p) = job.payload.as_deref() {
                record = record.payload(p);
            }
            match self
                .producer
                .send(record, Timeout::After(Duration::from_secs(10)))
                .await
            {
                Ok(_) => return Some(()),
                Err((e, _)) => {
                    if failing.is_none() {
                        failing = Some(ParkingFailed::raise(
                            self.metrics
                                .parking_failed
                                .get_or_create(&self.labels)
                                .clone(),
                            self.stats.clone(),
                        ));
                    }
                    tracing::warn!(subscriber = %self.subscriber, topic, attempt = n + 1, error = %e, "parking failed, retrying");
                }
            }
            n += 1;
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff(&self.policy, n)) => {}
            }
        }
    }
}

/// One record whose park is failing, counted in the `parking_failed` gauge and the registry
/// (the admin API's view) until dropped (parked at last, or shutdown).
struct ParkingFailed(
    prometheus_client::metrics::gauge::Gauge,
    Arc<SubscriberStats>,
);

impl ParkingFailed {
    fn raise(gauge: prometheus_client::metrics::gauge::Gauge, stats: Arc<SubscriberStats>) -> Self {
        gauge.inc();
        stats.parking_failed_by(1);
        Self(gauge, stats)
    }
}

impl Drop for ParkingFailed {
    fn drop(&mut self) {
        self.0.dec();
        self.1.parking_failed_by(-1);
    }
}
