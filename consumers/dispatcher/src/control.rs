//! The subscriber registry: what each running subscriber is and has done. Its pause switch,
//! its consumer lag per partition, its delivery statistics ([`SubscriberStats`], owned here and
//! counted by its deliverer) and the rates derived from them. One `SubscriberHandle` per
//! subscriber, shared by its worker, its consumer context, the metrics loop and the admin API,
//! which only read it (and flip the pause switch). The registry never calls admin code.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::BaseConsumer;
use switchyard_runtime::KafkaSettings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::config::Target;
use crate::limits::Limits;
use crate::metrics::{DispatchMetrics, SubscriberLabels};
use crate::plan::{Plan, SubscriberPlan};
use switchyard_runtime::pg::DbError;

/// One subscriber as the admin API sees it.
pub struct SubscriberHandle {
    pub name: String,
    pub topics: Vec<String>,
    /// `http://...` or `topic:<name>`.
    pub target: String,
    pub dead_letter_topic: String,
    pub replay_group: String,
    /// Retry tiers of its policy.
    pub tiers: usize,
    /// Whether deliveries are held: an operator's pause or a target that answered 410 Gone.
    paused: watch::Sender<bool>,
    /// The operator's switch (admin API, stored in PostgreSQL for every replica).
    operator_paused: AtomicBool,
    /// Why the target itself paused the subscriber (a 410 Gone); cleared by a resume.
    gone: Mutex<Option<String>>,
    /// Dead letters not replayed yet; -1 until first counted.
    dead_letters: AtomicI64,
    lag: Mutex<HashMap<(String, i32), i64>>,
    rates: Mutex<Rates>,
    /// Counted by the subscriber's deliverer; read by the rates loop and the admin API.
    pub stats: Arc<SubscriberStats>,
    /// Its circuit breaker, consulted by its deliverer, read by the admin API.
    pub breaker: Arc<Breaker>,
    /// Its rate and in-flight limits: waited on by its deliverer, rescaled by its consumer's
    /// rebalances, read by the admin API.
    pub limits: Arc<Limits>,
}

/// What one subscriber has done since this process started. The deliverer counts here and in
/// the Prometheus families together (`Deliverer::count`); application state is read from here,
/// never back from the exported counters.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    parked: AtomicU64,
    dead_lettered: AtomicU64,
    /// Records whose park is failing right now (the `parking_failed` gauge's value).
    parking_failed: AtomicI64,
}

/// One outcome the deliverer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    FailedAttempt,
    Parked,
    DeadLettered,
}

/// A copy of [`SubscriberStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub parked: u64,
    pub dead_lettered: u64,
}

impl SubscriberStats {
    pub fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::FailedAttempt => &self.failed_attempts,
            Outcome::Parked => &self.parked,
            Outcome::DeadLettered => &self.dead_lettered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A record's park started (+1) or stopped (-1) failing.
    pub fn parking_failed_by(&self, delta: i64) {
        self.parking_failed.fetch_add(delta, Ordering::Relaxed);
    }

    /// Records whose park is failing and being retried right now.
    pub fn parking_failed(&self) -> i64 {
        self.parking_failed.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// Counter samples from which per-second rates are derived.
#[derive(Default)]
struct Rates {
    last: Option<(Instant, u64, u64)>,
    delivered_per_sec: f64,
    failed_per_sec: f64,
}

impl SubscriberHandle {
    pub fn new(plan: &SubscriberPlan, metrics: &DispatchMetrics) -> Self {
        let s = &plan.config;
        let target = match &s.target {
            Target::Http(h) => h.url.clone(),
            Target::Topic(t) => format!("topic:{}", t.topic),
        };
        Self {
            name: s.name.clone(),
            topics: s.topics.clone(),
            target,
            dead_letter_topic: plan.dead_letter_topic.clone(),
            replay_group: plan.dead_letter_replay_group.clone(),
            tiers: plan.retry_topics.len(),
            paused: watch::Sender::new(s.paused),
            operator_paused: AtomicBool::new(s.paused),
            gone: Mutex::default(),
            dead_letters: AtomicI64::new(-1),
            lag: Mutex::default(),
            rates: Mutex::default(),
            stats: Arc::default(),
            breaker: Arc::new(Breaker::new(s.breaker.clone(), &s.name, metrics)),
            limits: Arc::new(Limits::new(
                &s.name,
                &s.topics,
                s.max_per_second,
                s.max_in_flight,
                metrics,
            )),
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// The operator's switch; a resume also clears a 410 pause.
    pub fn set_paused(&self, paused: bool) {
        if !paused {
            *self.gone.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.set_operator_paused(paused);
    }

    /// The operator's switch as stored (read from PostgreSQL): leaves a 410 pause alone.
    fn set_operator_paused(&self, paused: bool) {
        self.operator_paused.store(paused, Ordering::Relaxed);
        self.update_paused();
    }

    /// The target answered 410 Gone: hold deliveries until an operator resumes.
    pub fn pause_gone(&self, reason: String) {
        let mut g = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            tracing::warn!(subscriber = %self.name, %reason, "subscriber paused by its target");
            *g = Some(reason);
        }
        drop(g);
        self.update_paused();
    }

    /// Why the subscriber is paused: the target's 410, or `paused by an operator`.
    pub fn paused_reason(&self) -> Option<String> {
        let gone = self.gone_reason();
        if gone.is_some() {
            return gone;
        }
        self.operator_paused
            .load(Ordering::Relaxed)
            .then(|| "paused by an operator".to_owned())
    }

    /// Set while a 410 Gone holds the subscriber.
    pub fn gone_reason(&self) -> Option<String> {
        self.gone.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update_paused(&self) {
        let paused = self.operator_paused.load(Ordering::Relaxed) || self.gone_reason().is_some();
        self.paused
            .send_if_modified(|p| std::mem::replace(p, paused) != paused);
    }

    /// The worker's view of the switch.
    pub fn paused_rx(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        let mut l = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        l.insert((topic.to_owned(), partition), lag);
    }

    /// Forgets partitions this instance no longer owns.
    pub fn forget_lag(&self, topic: &str, partition: i32) {
        let mut l = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        l.remove(&(topic.to_owned(), partition));
    }

    /// Records behind the high watermark over the partitions this instance owns.
    pub fn lag(&self) -> i64 {
        let l = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        l.values().sum()
    }

    /// Dead letters waiting for a replay (-1: not counted yet).
    pub fn dead_letters(&self) -> i64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// (delivered/s, failed attempts/s) over the last sampling interval.
    pub fn rates(&self) -> (f64, f64) {
        let r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        (r.delivered_per_sec, r.failed_per_sec)
    }

    fn sample(&self) {
        let StatsSnapshot {
            delivered,
            failed_attempts: failed,
            ..
        } = self.stats.snapshot();
        let now = Instant::now();
        let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, d, f)) = r.last {
            let secs = now.duration_since(t).as_secs_f64().max(1e-3);
            r.delivered_per_sec = delivered.saturating_sub(d) as f64 / secs;
            r.failed_per_sec = failed.saturating_sub(f) as f64 / secs;
        }
        r.last = Some((now, delivered, failed));
    }
}

/// Every subscriber of this dispatcher, by name, the plan in force, and where pauses are
/// kept. A config reload replaces handles and the plan (`subscribers::Subscribers`); readers
/// take a snapshot and never hold the locks across an await.
pub struct Control {
    subscribers: RwLock<BTreeMap<String, Arc<SubscriberHandle>>>,
    plan: RwLock<Arc<Plan>>,
    pub pool: Option<Pool>,
    pub metrics: Arc<DispatchMetrics>,
}

impl Control {
    pub fn new(plan: Arc<Plan>, pool: Option<Pool>, metrics: Arc<DispatchMetrics>) -> Self {
        Self {
            subscribers: RwLock::default(),
            plan: RwLock::new(plan),
            pool,
            metrics,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<SubscriberHandle>> {
        read(&self.subscribers).get(name).cloned()
    }

    /// Every subscriber now, by name.
    pub fn handles(&self) -> Vec<Arc<SubscriberHandle>> {
        read(&self.subscribers).values().cloned().collect()
    }

    /// The plan in force (the last config that loaded).
    pub fn plan(&self) -> Arc<Plan> {
        read(&self.plan).clone()
    }

    pub(crate) fn set_plan(&self, plan: Arc<Plan>) {
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = plan;
    }

    pub(crate) fn insert(&self, handle: Arc<SubscriberHandle>) {
        let mut map = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(handle.name.clone(), handle);
    }

    pub(crate) fn remove(&self, name: &str) {
        let mut map = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(name);
    }

    /// Pauses or resumes `name` here and, with a database, for every replica.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool, DbError> {
        let Some(handle) = self.get(name) else {
            return Ok(false);
        };
        if let Some(pool) = &self.pool {
            let client = pool.get().await?;
            if paused {
                client
                    .execute(
                        "INSERT INTO switchyard_admin.paused_subscribers (subscriber) VALUES ($1)
                         ON CONFLICT (subscriber) DO NOTHING",
                        &[&name],
                    )
                    .await?;
            } else {
                client
                    .execute(
                        "DELETE FROM switchyard_admin.paused_subscribers WHERE subscriber = $1",
                        &[&name],
                    )
                    .await?;
            }
        }
        handle.set_paused(paused);
        tracing::info!(subscriber = name, paused, "subscriber pause switched");
        Ok(true)
    }

    /// Reads the stored pauses once (at start-up and on every poll).
    pub async fn load_pauses(&self) -> Result<(), DbError> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT subscriber FROM switchyard_admin.paused_subscribers",
                &[],
            )
            .await?;
        let paused: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for h in self.handles() {
            h.set_operator_paused(paused.contains(&h.name));
        }
        Ok(())
    }

    /// Until `stop`: samples delivery rates every 2 s and follows pauses set by other replicas.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        switchyard_runtime::shutdown::every(Duration::from_secs(2), &stop, || async {
            for h in self.handles() {
                let labels = SubscriberLabels {
                    subscriber: h.name.clone(),
                };
                h.sample();
                self.metrics
                    .paused
                    .get_or_create(&labels)
                    .set(i64::from(h.is_paused()));
                self.metrics
                    .gone
                    .get_or_create(&labels)
                    .set(i64::from(h.gone_reason().is_some()));
            }
            if let Err(e) = self.load_pauses().await {
                tracing::warn!(error = %e, "reading stored pauses failed");
            }
        })
        .await;
    }

    /// Counts every subscriber's waiting dead letters every 5 s on a thread of its own (the
    /// broker calls block), with one consumer of the replay group per subscriber, created once.
    pub fn count_dead_letters(
        self: Arc<Self>,
        kafka: KafkaSettings,
        stop: CancellationToken,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut consumers: HashMap<String, BaseConsumer> = HashMap::new();
            while !stop.is_cancelled() {
                let handles = self.handles();
                // A subscriber removed by a reload lets go of its counting consumer.
                consumers.retain(|name, _| handles.iter().any(|h| &h.name == name));
                for h in handles {
                    let name = &h.name;
                    if !consumers.contains_key(name) {
                        match kafka.consumer_config(&h.replay_group).create() {
                            Ok(c) => {
                                consumers.insert(name.clone(), c);
                            }
                            Err(e) => {
                                tracing::warn!(subscriber = %name, error = %e, "dead-letter counter");
                                continue;
                            }
                        }
                    }
                    let Some(c) = consumers.get(name) else {
                        continue;
                    };
                    match crate::dead_letters::waiting(c, &h.dead_letter_topic) {
                        Ok(n) => {
                            h.dead_letters.store(n, Ordering::Relaxed);
                            let labels = SubscriberLabels {
                                subscriber: name.clone(),
                            };
                            self.metrics
                                .dead_letters_waiting
                                .get_or_create(&labels)
                                .set(n);
                        }
                        Err(e) => {
                            tracing::debug!(subscriber = %name, error = %e, "counting dead letters")
                        }
                    }
                }
                for _ in 0..50 {
                    if stop.is_cancelled() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_each_outcome_apart() {
        let stats = SubscriberStats::default();
        stats.count(Outcome::Delivered);
        stats.count(Outcome::Delivered);
        stats.count(Outcome::FailedAttempt);
        stats.count(Outcome::Parked);
        stats.count(Outcome::DeadLettered);
        stats.count(Outcome::DeadLettered);
        stats.count(Outcome::DeadLettered);
        assert_eq!(
            stats.snapshot(),
            StatsSnapshot {
                delivered: 2,
                failed_attempts: 1,
                parked: 1,
                dead_lettered: 3,
            }
        );
    }
}
