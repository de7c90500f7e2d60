//! The rate and concurrency limits of one subscriber (`max_per_second`, `max_in_flight`).
//! Every delivery attempt (in-process retries, breaker probes, topic targets alike) first
//! takes an in-flight permit, then a token of the rate, and holds the permit until the attempt
//! ends ([`Limits::acquire`]). Both limits are for the whole subscriber: each replica applies
//! its share, the partitions of the subscriber's source topics it owns over all of them
//! (retry tiers do not count), recomputed on every rebalance ([`Limits::rebalanced`]). A
//! replica that owns nothing delivers nothing; one that owns a share always gets at least one
//! permit and a small rate.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DispatchMetrics, SubscriberLabels};

/// The lowest rate (attempts per second) of a replica that owns a share, unless the whole
/// subscriber is set lower: a tiny share still delivers now and then.
const MIN_RATE: f64 = 0.1;

/// The limits of one subscriber on this replica, shared by its deliverer (which waits on them),
/// its consumer's rebalances (which rescale them) and the admin API (which shows them).
pub struct Limits {
    subscriber: String,
    /// Source topics: their partitions make the share.
    sources: Vec<String>,
    /// The whole subscriber's limits, as configured.
    max_per_second: Option<f64>,
    max_in_flight: Option<u32>,
    bucket: Mutex<Bucket>,
    /// Woken on every rescale, so attempts waiting for a token wait at the new rate.
    rescaled: Notify,
    /// Present with `max_in_flight`; resized on rebalance.
    permits: Option<Semaphore>,
    sizing: Mutex<Sizing>,
    /// Last known partition count of each source topic, should the broker not answer.
    partitions: Mutex<HashMap<String, usize>>,
    in_flight: Gauge,
    rate_gauge: Gauge<f64, AtomicU64>,
    max_in_flight_gauge: Gauge,
    waited: Counter<f64, AtomicU64>,
}

/// A token bucket whose tokens may go below zero: an attempt takes its token at once and
/// sleeps until the bucket has refilled it, so waiters are served in order and wake once.
struct Bucket {
    /// Tokens per second on this replica; 0 while it owns no partition.
    rate: f64,
    /// Most tokens kept: one second of the rate, at least 1.
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
        self.last = now;
    }
}

struct Sizing {
    /// Permits this replica may hand out.
    size: usize,
    /// Permits to forget as they come back: a shrink found them in use.
    debt: usize,
}

/// One attempt's place: held for the attempt's duration.
pub struct Slot<'a> {
    limits: &'a Limits,
    permit: Option<SemaphorePermit<'a>>,
    /// Counted in the in-flight gauge (the attempt started).
    counted: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.limits.in_flight.dec();
        }
        if let Some(permit) = self.permit.take() {
            let mut s = lock(&self.limits.sizing);
            if s.debt > 0 {
                s.debt -= 1;
                permit.forget();
            }
        }
    }
}

impl Limits {
    /// Limits of subscriber `subscriber` reading `sources`; until the first assignment this
    /// replica owns nothing, so a limited subscriber delivers nothing yet.
    pub fn new(
        subscriber: &str,
        sources: &[String],
        max_per_second: Option<f64>,
        max_in_flight: Option<u32>,
        metrics: &DispatchMetrics,
    ) -> Self {
        let labels = SubscriberLabels {
            subscriber: subscriber.to_owned(),
        };
        let in_flight = metrics.in_flight.get_or_create(&labels).clone();
        let waited = metrics.rate_limited_seconds.get_or_create(&labels).clone();
        // Only limited subscribers export their limit.
        let rate_gauge = match max_per_second {
            Some(_) => metrics.rate_limit.get_or_create(&labels).clone(),
            None => Gauge::default(),
        };
        let max_in_flight_gauge = match max_in_flight {
            Some(_) => metrics.max_in_flight.get_or_create(&labels).clone(),
            None => Gauge::default(),
        };
        Self {
            subscriber: subscriber.to_owned(),
            sources: sources.to_vec(),
            max_per_second,
            max_in_flight,
            bucket: Mutex::new(Bucket {
                rate: 0.0,
                burst: 1.0,
                tokens: 0.0,
                last: Instant::now(),
            }),
            rescaled: Notify::new(),
            permits: max_in_flight.map(|_| Semaphore::new(0)),
            sizing: Mutex::new(Sizing { size: 0, debt: 0 }),
            partitions: Mutex::default(),
            in_flight,
            rate_gauge,
            max_in_flight_gauge,
            waited,
        }
    }

    /// Whether either limit is set (else rebalances need not compute a share).
    pub fn is_limited(&self) -> bool {
        self.max_per_second.is_some() || self.max_in_flight.is_some()
    }

    /// This replica's limits now: (attempts per second, attempts in flight); `None`: unlimited.
    pub fn effective(&self) -> (Option<f64>, Option<u32>) {
        let rate = self.max_per_second.map(|_| lock(&self.bucket).rate);
        let in_flight = self
            .max_in_flight
            .map(|_| u32::try_from(lock(&self.sizing).size).unwrap_or(u32::MAX));
        (rate, in_flight)
    }

    /// Waits for room for one attempt: an in-flight permit, then a token. `None` when `stop`
    /// fires first (shutdown); the attempt must not be made.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Slot<'_>> {
        let permit = match &self.permits {
            Some(sem) => tokio::select! {
                _ = stop.cancelled() => return None,
                // The semaphore is never closed.
                p = sem.acquire() => Some(p.ok()?),
            },
            None => None,
        };
        let mut slot = Slot {
            limits: self,
            permit,
            counted: false,
        };
        if self.max_per_second.is_some() {
            self.token(stop).await?;
        }
        slot.counted = true;
        self.in_flight.inc();
        Some(slot)
    }

    /// Takes one token, sleeping until the bucket has it; counts the time waited.
    async fn token(&self, stop: &CancellationToken) -> Option<()> {
        let began = Instant::now();
        let result = loop {
            // Created before the bucket is read, so a rescale in between is not missed.
            let rescaled = self.rescaled.notified();
            let wait = {
                let mut b = lock(&self.bucket);
                if b.rate <= 0.0 {
                    None // owns nothing: wait for a rebalance
                } else {
                    b.refill(Instant::now());
                    b.tokens -= 1.0;
                    if b.tokens >= 0.0 {
                        break Some(());
                    }
                    Some(Duration::from_secs_f64(-b.tokens / b.rate))
                }
            };
            let sleep = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    self.refund(wait.is_some());
                    break None;
                }
                () = sleep => break Some(()),
                () = rescaled => {
                    // Taken at the old rate: give it back and take one at the new rate.
                    self.refund(wait.is_some());
                }
            }
        };
        let waited = began.elapsed().as_secs_f64();
        if waited > 0.0 {
            self.waited.inc_by(waited);
        }
        result
    }

    fn refund(&self, took: bool) {
        if took {
            let mut b = lock(&self.bucket);
            b.tokens = (b.tokens + 1.0).min(b.burst);
        }
    }

    /// After a rebalance: `owned` is every partition this replica's consumer owns now (retry
    /// tiers included; only source topics count), `partition_count` asks the broker how many
    /// partitions a topic has (`None` when it cannot say: the last known count is used).
    pub fn rebalanced(
        &self,
        owned: &[(String, i32)],
        partition_count: &dyn Fn(&str) -> Option<usize>,
    ) {
        if !self.is_limited() {
            return;
        }
        let mine: Vec<usize> = self
            .sources
            .iter()
            .map(|topic| owned.iter().filter(|(t, _)| t == topic).count())
            .collect();
        let owned_sum: usize = mine.iter().sum();
        let mut known = lock(&self.partitions);
        let mut all = 0;
        for (topic, here) in self.sources.iter().zip(&mine) {
            // Nothing owned: no need to ask the broker.
            let count = if owned_sum == 0 {
                None
            } else {
                partition_count(topic)
            };
            if let Some(n) = count {
                known.insert(topic.clone(), n);
            }
            let n = known.get(topic).copied().unwrap_or_else(|| {
                if owned_sum > 0 {
                    tracing::warn!(subscriber = %self.subscriber, %topic, "partition count unknown: share taken as owned partitions");
                }
                *here
            });
            all += n.max(*here);
        }
        drop(known);
        self.set_share(owned_sum, all);
        let (rate, in_flight) = self.effective();
        tracing::info!(
            subscriber = %self.subscriber,
            owned = owned_sum,
            partitions = all,
            max_per_second = ?rate,
            max_in_flight = ?in_flight,
            "delivery limits rescaled"
        );
    }

    /// This replica owns `owned` of the `total` source partitions: rescales both limits.
    pub fn set_share(&self, owned: usize, total: usize) {
        let owns = owned > 0 && total > 0;
        let (owned, total) = (owned.min(total) as f64, total as f64);
        if let Some(limit) = self.max_per_second {
            let rate = if owns {
                (limit * owned / total).max(limit.min(MIN_RATE))
            } else {
                0.0
            };
            {
                let mut b = lock(&self.bucket);
                b.refill(Instant::now());
                b.rate = rate;
                b.burst = rate.max(1.0);
                b.tokens = b.tokens.min(b.burst);
            }
            self.rate_gauge.set(rate);
            self.rescaled.notify_waiters();
        }
        if let (Some(limit), Some(sem)) = (self.max_in_flight, &self.permits) {
            let size = if owns {
                ((f64::from(limit) * owned / total).ceil() as usize).clamp(1, limit as usize)
            } else {
                0
            };
            let mut s = lock(&self.sizing);
            if size > s.size {
                let grow = size - s.size;
                let repaid = grow.min(s.debt);
                s.debt -= repaid;
                sem.add_permits(grow - repaid);
            } else {
                let shrink = s.size - size;
                let forgotten = sem.forget_permits(shrink);
                s.debt += shrink - forgotten;
            }
            s.size = size;
            drop(s);
            self.max_in_flight_gauge
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn limits(rate: Option<f64>, in_flight: Option<u32>) -> Arc<Limits> {
        Arc::new(Limits::new(
            "t",
            &["src".to_owned()],
            rate,
            in_flight,
            &DispatchMetrics::default(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_from_an_empty_bucket() {
        let l = limits(Some(20.0), None);
        l.set_share(1, 1);
        let stop = CancellationToken::new();
        let began = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (l, stop) = (l.clone(), stop.clone());
            tasks.spawn(async move {
                let _slot = l.acquire(&stop).await.expect("not stopped");
                Instant::now()
            });
        }
        let mut at: Vec<Duration> = Vec::new();
        while let Some(t) = tasks.join_next().await {
            at.push(t.unwrap() - began);
        }
        at.sort();
        // 100 tokens at 20/s from an empty bucket: the last one after 5 s.
        let last = at.last().unwrap().as_secs_f64();
        assert!((4.9..=5.1).contains(&last), "100 attempts took {last} s");
        for w in 0..5 {
            let n = at
                .iter()
                .filter(|d| (w as f64..w as f64 + 1.0).contains(&d.as_secs_f64()))
                .count();
            assert!(n <= 21, "{n} attempts in second {w}");
        }
        assert!(l.waited.get() > 0.0, "waiting was not counted");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_allows_one_second_of_burst() {
        let l = limits(Some(10.0), None);
        l.set_share(1, 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let stop = CancellationToken::new();
        let began = Instant::now();
        for _ in 0..10 {
            drop(l.acquire(&stop).await.unwrap());
        }
        assert_eq!(began.elapsed(), Duration::ZERO, "the burst is 10 tokens");
        drop(l.acquire(&stop).await.unwrap());
        assert!(began.elapsed() >= Duration::from_millis(99));
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_in_flight_at_once() {
        let l = limits(None, Some(3));
        l.set_share(2, 2);
        let stop = CancellationToken::new();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (l, stop, now, peak) = (l.clone(), stop.clone(), now.clone(), peak.clone());
            tasks.spawn(async move {
                let _slot = l.acquire(&stop).await.unwrap();
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let began = Instant::now();
        while tasks.join_next().await.is_some() {}
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        // 20 attempts of 100 ms, 3 at a time: 7 rounds.
        let took = began.elapsed();
        assert!(
            (Duration::from_millis(700)..Duration::from_millis(720)).contains(&took),
            "{took:?}"
        );
        assert_eq!(l.in_flight.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_rescales_both_limits() {
        let l = limits(Some(30.0), Some(10));
        assert_eq!(l.effective(), (Some(0.0), Some(0)), "owns nothing yet");
        l.set_share(1, 3);
        assert_eq!(l.effective(), (Some(10.0), Some(4)));
        l.set_share(1, 100);
        // 0.3/s, and at least one attempt in flight.
        assert_eq!(l.effective(), (Some(0.3), Some(1)));
        l.set_share(0, 100);
        assert_eq!(l.effective(), (Some(0.0), Some(0)));
        let tiny = limits(Some(1.0), None);
        tiny.set_share(1, 1_000);
        assert_eq!(tiny.effective(), (Some(MIN_RATE), None));
        assert!(!limits(None, None).is_limited());
    }

    #[tokio::test(start_paused = true)]
    async fn only_source_partitions_make_the_share() {
        let l = Limits::new(
            "t",
            &["a".to_owned(), "b".to_owned()],
            Some(40.0),
            Some(8),
            &DispatchMetrics::default(),
        );
        let counts = |t: &str| match t {
            "a" => Some(6),
            "b" => Some(2),
            _ => None,
        };
        let owned: Vec<(String, i32)> = [("a", 0), ("a", 1), ("b", 0), ("t.retry.0", 0)]
            .into_iter()
            .map(|(t, p)| (t.to_owned(), p))
            .collect();
        l.rebalanced(&owned, &counts);
        // 3 of 8 source partitions; the retry tier's partition does not count.
        assert_eq!(l.effective(), (Some(15.0), Some(3)));
        // The broker does not answer: the last known counts hold.
        l.rebalanced(&owned[..1], &|_| None);
        assert_eq!(l.effective(), (Some(5.0), Some(1)));
        l.rebalanced(&owned[3..], &counts);
        assert_eq!(l.effective(), (Some(0.0), Some(0)), "only a retry tier");
    }

    #[tokio::test(start_paused = true)]
    #[allow(clippy::disallowed_methods)] // the test's own waiters, joined below
    async fn owning_nothing_delivers_nothing_until_a_share_comes() {
        let l = limits(Some(5.0), Some(2));
        let stop = CancellationToken::new();
        let waiter = {
            let (l, stop) = (l.clone(), stop.clone());
            tokio::spawn(async move { l.acquire(&stop).await.is_some() })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiter.is_finished(), "delivered while owning nothing");
        l.set_share(1, 1);
        assert!(waiter.await.unwrap());

        // A share that drops to nothing stops waiting attempts too.
        let l = limits(Some(1.0), None);
        l.set_share(1, 1);
        let waiter = {
            let (l, stop) = (l.clone(), stop.clone());
            tokio::spawn(async move { l.acquire(&stop).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        l.set_share(0, 1);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !waiter.is_finished(),
            "a token taken at the old rate was used"
        );
        stop.cancel();
        assert!(!waiter.await.unwrap(), "stop ends the wait");
    }

    #[test]
    fn limits_are_validated_naming_the_key() {
        let config = |line: &str| -> crate::DispatcherConfig {
            toml::from_str(&format!(
                "[[subscribers]]\nname = \"s\"\ntopics = [\"t\"]\n{line}\n\
                 [subscribers.target]\nkind = \"topic\"\ntopic = \"out\"\n"
            ))
            .unwrap()
        };
        for (line, key) in [
            ("max_per_second = 0", "max_per_second"),
            ("max_per_second = -1.5", "max_per_second"),
            ("max_per_second = nan", "max_per_second"),
            ("max_in_flight = 0", "max_in_flight"),
        ] {
            let err = config(line).validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("subscribers[0].{key}:")), "{err}");
        }
        let ok = config("max_per_second = 20\nmax_in_flight = 4");
        ok.validate().unwrap();
        assert_eq!(ok.subscribers[0].max_per_second, Some(20.0));
        assert_eq!(ok.subscribers[0].max_in_flight, Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shrink_takes_back_permits_as_they_return() {
        let l = limits(None, Some(4));
        l.set_share(1, 1);
        let stop = CancellationToken::new();
        let held: Vec<Slot<'_>> = futures::future::join_all((0..4).map(|_| l.acquire(&stop)))
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(l.in_flight.get(), 4);
        l.set_share(1, 4); // 1 permit now, 4 in use
        drop(held);
        let first = l.acquire(&stop).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), l.acquire(&stop)).await;
        assert!(second.is_err(), "a second attempt got in after the shrink");
        drop(first);
        l.set_share(1, 1); // back to 4
        let again: Vec<_> = futures::future::join_all((0..4).map(|_| l.acquire(&stop))).await;
        assert!(again.iter().all(Option::is_some));
    }
}
