//! Every metric the dispatcher exports, named in one place.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use switchyard_runtime::http::RequestMetrics;

pub(crate) const DELIVERIES: &str = "switchyard_dispatch_deliveries";
pub(crate) const ATTEMPT_FAILURES: &str = "switchyard_dispatch_failed_attempts";
pub(crate) const PARKED: &str = "switchyard_dispatch_parked";
pub(crate) const DEAD_LETTERED: &str = "switchyard_dispatch_dead_lettered";
pub(crate) const SKIPPED: &str = "switchyard_dispatch_skipped";
pub(crate) const ORDERED_WAITING: &str = "switchyard_dispatch_ordered_waiting";
pub(crate) const LATENCY: &str = "switchyard_dispatch_delivery_seconds";
pub(crate) const IN_FLIGHT: &str = "switchyard_dispatch_in_flight";
pub(crate) const CONSUMER_LAG: &str = "switchyard_dispatch_consumer_lag";
pub(crate) const HTTP_REQUESTS: &str = "switchyard_dispatch_http_requests";
pub(crate) const HTTP_REQUEST_SECONDS: &str = "switchyard_dispatch_http_request_seconds";
pub(crate) const DEAD_LETTERS_WAITING: &str = "switchyard_dispatch_dead_letters_waiting";
pub(crate) const PARKING_FAILED: &str = "switchyard_dispatch_parking_failed";
pub(crate) const PAUSED: &str = "switchyard_dispatch_subscriber_paused";
pub(crate) const BREAKER_STATE: &str = "switchyard_dispatch_breaker_state";
pub(crate) const BREAKER_TRANSITIONS: &str = "switchyard_dispatch_breaker_transitions";
pub(crate) const SHORT_CIRCUITED: &str = "switchyard_dispatch_short_circuited";
pub(crate) const GONE: &str = "switchyard_dispatch_subscriber_gone";
pub(crate) const ATTEMPT_LOG_WRITTEN: &str = "switchyard_dispatch_attempt_log_written";
pub(crate) const ATTEMPT_LOG_DROPPED: &str = "switchyard_dispatch_attempt_log_dropped";
pub(crate) const RATE_LIMIT: &str = "switchyard_dispatch_rate_limit_per_second";
pub(crate) const MAX_IN_FLIGHT: &str = "switchyard_dispatch_max_in_flight";
pub(crate) const CONFIG_RELOADS: &str = "switchyard_dispatch_config_reloads";
pub(crate) const SUBSCRIBER_STARTS: &str = "switchyard_dispatch_subscriber_starts";
/// A counter: exported as `switchyard_dispatch_rate_limited_seconds_total`.
pub(crate) const RATE_LIMITED: &str = "switchyard_dispatch_rate_limited_seconds";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberLabels {
    pub subscriber: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied`, `unchanged` (the files changed, the plan did not) or `rejected`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub subscriber: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub subscriber: String,
    pub tier: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub subscriber: String,
    /// The state entered: `open`, `half_open` or `closed`.
    pub to: String,
}

pub struct DispatchMetrics {
    pub registry: Registry,
    pub deliveries: Family<SubscriberLabels, Counter>,
    pub failed_attempts: Family<SubscriberLabels, Counter>,
    pub parked: Family<TierLabels, Counter>,
    pub dead_lettered: Family<SubscriberLabels, Counter>,
    pub skipped: Family<SubscriberLabels, Counter>,
    pub ordered_waiting: Family<SubscriberLabels, Counter>,
    pub latency: Family<SubscriberLabels, Histogram>,
    /// Delivery attempts in flight (each holds one of this replica's `max_in_flight`).
    pub in_flight: Family<SubscriberLabels, Gauge>,
    /// This replica's share of `max_per_second` (limited subscribers only).
    pub rate_limit: Family<SubscriberLabels, Gauge<f64, AtomicU64>>,
    /// This replica's share of `max_in_flight` (limited subscribers only).
    pub max_in_flight: Family<SubscriberLabels, Gauge>,
    /// Seconds attempts spent waiting for a token of the rate.
    pub rate_limited_seconds: Family<SubscriberLabels, Counter<f64, AtomicU64>>,
    pub consumer_lag: Family<LagLabels, Gauge>,
    /// Requests to the dispatcher's own HTTP endpoints (admin API, page, metrics).
    pub http_requests: RequestMetrics,
    pub dead_letters_waiting: Family<SubscriberLabels, Gauge>,
    pub paused: Family<SubscriberLabels, Gauge>,
    pub parking_failed: Family<SubscriberLabels, Gauge>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<SubscriberLabels, Gauge>,
    pub breaker_transitions: Family<BreakerLabels, Counter>,
    pub short_circuited: Family<SubscriberLabels, Counter>,
    pub gone: Family<SubscriberLabels, Gauge>,
    pub attempt_log_written: Counter,
    pub attempt_log_dropped: Counter,
    /// Config file changes seen, by what came of them.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// Workers started per subscriber: 1 unless a reload changed (restarted) it.
    pub subscriber_starts: Family<SubscriberLabels, Counter>,
}

impl Default for DispatchMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            deliveries: Family::default(),
            failed_attempts: Family::default(),
            parked: Family::default(),
            dead_lettered: Family::default(),
            skipped: Family::default(),
            ordered_waiting: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 20))
            }),
            in_flight: Family::default(),
            rate_limit: Family::default(),
            max_in_flight: Family::default(),
            rate_limited_seconds: Family::default(),
            consumer_lag: Family::default(),
            http_requests: RequestMetrics::register(
                &mut registry,
                HTTP_REQUESTS,
                HTTP_REQUEST_SECONDS,
            ),
            dead_letters_waiting: Family::default(),
            paused: Family::default(),
            parking_failed: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            short_circuited: Family::default(),
            gone: Family::default(),
            attempt_log_written: Counter::default(),
            attempt_log_dropped: Counter::default(),
            config_reloads: Family::default(),
            subscriber_starts: Family::default(),
            registry: Registry::default(),
        };
        registry.register(DELIVERIES, "Records delivered (2xx)", m.deliveries.clone());
        registry.register(
            ATTEMPT_FAILURES,
            "Failed delivery attempts",
            m.failed_attempts.clone(),
        );
        registry.register(PARKED, "Records parked in a retry tier", m.parked.clone());
        registry.register(
            DEAD_LETTERED,
            "Records sent to the dead-letter topic",
            m.dead_lettered.clone(),
        );
        registry.register(
            SKIPPED,
            "Records not for this subscriber",
            m.skipped.clone(),
        );
        registry.register(
            ORDERED_WAITING,
            "Records parked behind an earlier record of their key (ordering = \"key\")",
            m.ordered_waiting.clone(),
        );
        registry.register(
            LATENCY,
            "Time from the event's production to its delivery",
            m.latency.clone(),
        );
        registry.register(
            IN_FLIGHT,
            "Delivery attempts in flight",
            m.in_flight.clone(),
        );
        registry.register(
            RATE_LIMIT,
            "Attempts per second this replica may start: its share of the subscriber's max_per_second",
            m.rate_limit.clone(),
        );
        registry.register(
            MAX_IN_FLIGHT,
            "Attempts this replica may have in flight: its share of the subscriber's max_in_flight",
            m.max_in_flight.clone(),
        );
        registry.register(
            RATE_LIMITED,
            "Time attempts spent waiting for the subscriber's rate limit",
            m.rate_limited_seconds.clone(),
        );
        registry.register(
            CONSUMER_LAG,
            "Records behind the high watermark per subscriber and partition (stored offsets)",
            m.consumer_lag.clone(),
        );
        registry.register(
            DEAD_LETTERS_WAITING,
            "Dead letters not replayed yet per subscriber",
            m.dead_letters_waiting.clone(),
        );
        registry.register(
            PAUSED,
            "1 while an operator has paused the subscriber",
            m.paused.clone(),
        );
        registry.register(
            PARKING_FAILED,
            "Records whose park in a retry or dead-letter topic is failing and being retried",
            m.parking_failed.clone(),
        );
        registry.register(
            BREAKER_STATE,
            "Circuit breaker of the subscriber: 0 closed, 1 half-open (one probe), 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            BREAKER_TRANSITIONS,
            "Circuit breaker transitions by the state entered",
            m.breaker_transitions.clone(),
        );
        registry.register(
            SHORT_CIRCUITED,
            "Records parked without an attempt because the breaker was open",
            m.short_circuited.clone(),
        );
        registry.register(
            GONE,
            "1 while the subscriber is paused because its target answered 410 Gone",
            m.gone.clone(),
        );
        registry.register(
            ATTEMPT_LOG_WRITTEN,
            "Delivery attempts written to the attempt log",
            m.attempt_log_written.clone(),
        );
        registry.register(
            ATTEMPT_LOG_DROPPED,
            "Delivery attempts not logged because the log's buffer was full",
            m.attempt_log_dropped.clone(),
        );
        registry.register(
            CONFIG_RELOADS,
            "Changes of the config or integrations file: applied, unchanged or rejected (the \
             running config stays; the log names the key)",
            m.config_reloads.clone(),
        );
        registry.register(
            SUBSCRIBER_STARTS,
            "Subscriber workers started (at start, and when a reload adds or changes one)",
            m.subscriber_starts.clone(),
        );
        Self { registry, ..m }
    }
}

impl AsRef<Registry> for DispatchMetrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}
