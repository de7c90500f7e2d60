//! Every metric deptrans exports, named in one place.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub const EVENTS: &str = "switchyard_deptrans_events";
pub const ACTIVE_DRIVERS: &str = "switchyard_deptrans_active_drivers";
pub const CONSUMED: &str = "switchyard_deptrans_consumed";
pub const UPSERT_STATEMENTS: &str = "switchyard_deptrans_upsert_statements";
pub const UPSERT_FAILURES: &str = "switchyard_deptrans_upsert_failures";
pub const CONSUMER_PAUSED: &str = "switchyard_deptrans_consumer_paused";
pub const CONSUMER_REBALANCES: &str = "switchyard_deptrans_consumer_rebalances";
pub const SENT: &str = "switchyard_deptrans_sent";
pub const KRT_FAILURES: &str = "switchyard_deptrans_krt_failures";
pub const TOKEN_REFRESHES: &str = "switchyard_deptrans_token_refreshes";
pub const CACHE_REFRESH_FAILURES: &str = "switchyard_deptrans_cache_refresh_failures";
pub const RETENTION_DELETED: &str = "switchyard_deptrans_retention_deleted";
pub const QUEUE_ROWS: &str = "switchyard_deptrans_queue_rows";
pub const QUEUE_DUE_ROWS: &str = "switchyard_deptrans_queue_due_rows";
pub const QUEUE_DEFERRED_ROWS: &str = "switchyard_deptrans_queue_deferred_rows";
pub const QUEUE_OLDEST_SECONDS: &str = "switchyard_deptrans_queue_oldest_seconds";
pub const CACHE_LOOKUPS: &str = "switchyard_deptrans_cache_lookups";
pub const REQUESTS: &str = "switchyard_deptrans_requests";
pub const REQUEST_DURATION_SECONDS: &str = "switchyard_deptrans_request_duration_seconds";
pub const CONSUMER_LAG: &str = "switchyard_deptrans_consumer_lag";
pub const REJECTED: &str = "switchyard_deptrans_rejected";
pub const KRT_BISECTIONS: &str = "switchyard_deptrans_krt_bisections";
pub const REQUEUED: &str = "switchyard_deptrans_requeued";
pub const REJECTED_ROWS: &str = "switchyard_deptrans_rejected_rows";
pub const BAD_RECORDS: &str = "switchyard_deptrans_bad_records";
pub const DEAD_LETTER_FAILURES: &str = "switchyard_deptrans_dead_letter_failures";

/// `cache` label of the driver-profiles cache (lookups and refresh failures).
pub const CACHE_PROFILES: &str = "driver-profiles";
/// `cache` label of the driver-categories cache.
pub const CACHE_CATEGORIES: &str = "driver-categories";

/// What happened to a consumed event or a sent row.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A driver's state as KRT sees it (`crate::supply`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SupplyLabels {
    /// `bound_open_shift`, `bound_no_shift` or `unbound`.
    pub krt: &'static str,
}

/// Why a row left the queue unsent (`crate::rejected::reason`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A source record that could not be used, by source topic and `crate::records::reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BadRecordLabels {
    pub topic: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLookupLabels {
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// HTTP requests by matched route (`-` when no route matched) and status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

/// A partition of the status topic read by this instance's consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Hit and miss counters of one cache, created once so a lookup only bumps an atomic.
#[derive(Debug, Clone, Default)]
pub struct CacheLookups {
    pub hit: Counter,
    pub miss: Counter,
}

impl CacheLookups {
    /// Counts one lookup; returns `found` so it can wrap an expression.
    pub fn record(&self, found: bool) -> bool {
        if found {
            self.hit.inc();
        } else {
            self.miss.inc();
        }
        found
    }
}

fn request_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct DeptransMetrics {
    pub registry: Registry,
    pub events: Family<OutcomeLabels, Counter>,
    /// Drivers active in the regions and categories lately, by KRT state (supply loss).
    pub active_drivers: Family<SupplyLabels, Gauge>,
    pub consumed: Counter,
    pub upsert_statements: Counter,
    pub upsert_failures: Counter,
    /// 1 while the status consumer's partitions are paused (PostgreSQL unavailable).
    pub consumer_paused: Gauge,
    /// Rebalances the status consumer went through (an expelled member rejoins with one).
    pub consumer_rebalances: Counter,
    pub sent: Family<OutcomeLabels, Counter>,
    pub krt_failures: Counter,
    pub token_refreshes: Counter,
    pub cache_refresh_failures: Family<CacheLabels, Counter>,
    pub retention_deleted: Counter,
    /// Rows in `deptrans.status_queue`, refreshed periodically.
    pub queue_rows: Gauge,
    /// Queued rows the sender tries on every run.
    pub queue_due_rows: Gauge,
    /// Queued rows waiting for their driver to become known or get a licence.
    pub queue_deferred_rows: Gauge,
    /// Age of the oldest due status (its `updated_at`), 0 when none is due.
    pub queue_oldest_seconds: Gauge<f64, AtomicU64>,
    pub cache_lookups: Family<CacheLookupLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: DurationFamily,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Rows moved to `deptrans.rejected`, by reason.
    pub rejected: Family<ReasonLabels, Counter>,
    /// Refused KRT requests halved to find the rows at fault.
    pub krt_bisections: Counter,
    /// Rejected rows put back into the queue through the API.
    pub requeued: Counter,
    /// Rows in `deptrans.rejected`, refreshed with the queue gauges.
    pub rejected_rows: Gauge,
    /// Source records that could not be decoded, by topic and reason; each goes to its
    /// source's dead-letter topic.
    pub bad_records: Family<BadRecordLabels, Counter>,
    /// Dead-letter produces that failed and were retried; while they fail, the partition of
    /// the bad record waits.
    pub dead_letter_failures: Counter,
}

impl DeptransMetrics {
    pub fn supply(&self, krt: &'static str, n: i64) {
        self.active_drivers
            .get_or_create(&SupplyLabels { krt })
            .set(n);
    }

    pub fn event(&self, outcome: &'static str, n: u64) {
        self.events
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    pub fn sent(&self, outcome: &'static str, n: u64) {
        self.sent
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    /// Counts one source record that could not be used.
    pub fn bad_record(&self, topic: &str, reason: &'static str) {
        self.bad_records
            .get_or_create(&BadRecordLabels {
                topic: topic.to_owned(),
                reason,
            })
            .inc();
    }

    /// Creates the bad-record series of `topic` at zero, so rates exist before the first one.
    pub fn bad_record_series(&self, topic: &str, reasons: &[&'static str]) {
        for &reason in reasons {
            self.bad_records
                .get_or_create(&BadRecordLabels {
                    topic: topic.to_owned(),
                    reason,
                })
                .get();
        }
    }

    /// Counts one row moved to `deptrans.rejected`.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The pre-created hit/miss counters of `cache`.
    pub fn cache_lookups(&self, cache: &'static str) -> CacheLookups {
        let get = |result| {
            self.cache_lookups
                .get_or_create(&CacheLookupLabels { cache, result })
                .clone()
        };
        CacheLookups {
            hit: get("hit"),
            miss: get("miss"),
        }
    }

    /// Counts one finished HTTP request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }
}

impl Default for DeptransMetrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            events: Family::default(),
            active_drivers: Family::default(),
            consumed: Counter::default(),
            upsert_statements: Counter::default(),
            upsert_failures: Counter::default(),
            consumer_paused: Gauge::default(),
            consumer_rebalances: Counter::default(),
            sent: Family::default(),
            krt_failures: Counter::default(),
            token_refreshes: Counter::default(),
            cache_refresh_failures: Family::default(),
            retention_deleted: Counter::default(),
            queue_rows: Gauge::default(),
            queue_due_rows: Gauge::default(),
            queue_deferred_rows: Gauge::default(),
            queue_oldest_seconds: Gauge::default(),
            cache_lookups: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            consumer_lag: Family::default(),
            rejected: Family::default(),
            krt_bisections: Counter::default(),
            requeued: Counter::default(),
            rejected_rows: Gauge::default(),
            bad_records: Family::default(),
            dead_letter_failures: Counter::default(),
        };
        for reason in crate::rejected::reason::ALL {
            m.rejected.get_or_create(&ReasonLabels { reason }).get();
        }
        // Both results of both caches exist from the start, so a ratio never divides by a
        // missing series.
        for cache in [CACHE_PROFILES, CACHE_CATEGORIES] {
            m.cache_lookups(cache);
        }
        let mut registry = Registry::default();
        registry.register(
            EVENTS,
            "Status events by outcome (stored, outside_region, ...)",
            m.events.clone(),
        );
        registry.register(
            ACTIVE_DRIVERS,
            "Drivers active in the configured regions and categories within supply.window_minutes, \
             by KRT state: bound_open_shift, bound_no_shift, unbound (supply loss)",
            m.active_drivers.clone(),
        );
        for krt in ["bound_open_shift", "bound_no_shift", "unbound"] {
            m.active_drivers.get_or_create(&SupplyLabels { krt }).set(0);
        }
        registry.register(
            CONSUMED,
            "Records read from the status topic",
            m.consumed.clone(),
        );
        registry.register(
            UPSERT_STATEMENTS,
            "Upsert statements into status_queue",
            m.upsert_statements.clone(),
        );
        registry.register(
            UPSERT_FAILURES,
            "Failed status_queue batch writes",
            m.upsert_failures.clone(),
        );
        registry.register(
            CONSUMER_PAUSED,
            "1 while the status consumer's partitions are paused because PostgreSQL is unavailable",
            m.consumer_paused.clone(),
        );
        registry.register(
            CONSUMER_REBALANCES,
            "Rebalances of the status consumer's group seen by this instance",
            m.consumer_rebalances.clone(),
        );
        registry.register(
            SENT,
            "Queue rows handled by the sender, by outcome",
            m.sent.clone(),
        );
        registry.register(
            KRT_FAILURES,
            "KRT requests that failed (down, 5xx)",
            m.krt_failures.clone(),
        );
        registry.register(
            TOKEN_REFRESHES,
            "KRT tokens obtained by this instance",
            m.token_refreshes.clone(),
        );
        registry.register(
            CACHE_REFRESH_FAILURES,
            "Cache refreshes that failed; stale data is served meanwhile",
            m.cache_refresh_failures.clone(),
        );
        registry.register(
            RETENTION_DELETED,
            "Session rows deleted by retention",
            m.retention_deleted.clone(),
        );
        registry.register(
            QUEUE_ROWS,
            "Rows in deptrans.status_queue (refreshed every few seconds)",
            m.queue_rows.clone(),
        );
        registry.register(
            QUEUE_DUE_ROWS,
            "Rows in deptrans.status_queue the sender tries on every run",
            m.queue_due_rows.clone(),
        );
        registry.register(
            QUEUE_DEFERRED_ROWS,
            "Rows in deptrans.status_queue waiting for an unknown driver or a licence (retried with back-off)",
            m.queue_deferred_rows.clone(),
        );
        registry.register(
            QUEUE_OLDEST_SECONDS,
            "Age of the oldest due status by its updated_at (deferred rows excluded), 0 when none is due",
            m.queue_oldest_seconds.clone(),
        );
        registry.register(
            CACHE_LOOKUPS,
            "In-memory cache lookups on the hot path, by cache and result (hit, miss)",
            m.cache_lookups.clone(),
        );
        registry.register(
            REQUESTS,
            "HTTP requests by matched route (- when none matched) and status",
            m.requests.clone(),
        );
        registry.register(
            REQUEST_DURATION_SECONDS,
            "HTTP request duration by matched route",
            m.request_duration.clone(),
        );
        registry.register(
            CONSUMER_LAG,
            "Records behind the high watermark per partition of the status topic (stored offsets)",
            m.consumer_lag.clone(),
        );
        registry.register(
            REJECTED,
            "Queue rows refused for good and moved to deptrans.rejected, by reason",
            m.rejected.clone(),
        );
        registry.register(
            KRT_BISECTIONS,
            "KRT requests refused (4xx, malformed answer) and halved to find the rows at fault",
            m.krt_bisections.clone(),
        );
        registry.register(
            REQUEUED,
            "Rejected rows put back into the queue through the internal API",
            m.requeued.clone(),
        );
        registry.register(
            REJECTED_ROWS,
            "Rows in deptrans.rejected (refreshed with the queue gauges)",
            m.rejected_rows.clone(),
        );
        registry.register(
            BAD_RECORDS,
            "Source records that could not be decoded, by topic and reason; parked in the source's dead-letter topic",
            m.bad_records.clone(),
        );
        registry.register(
            DEAD_LETTER_FAILURES,
            "Dead-letter produces that failed and were retried with back-off",
            m.dead_letter_failures.clone(),
        );
        Self { registry, ..m }
    }
}
