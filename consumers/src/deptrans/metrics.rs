//! Every metric deptrans exports, named in one place.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub const EVENTS: &str = "switchyard_deptrans_events";
pub const CONSUMED: &str = "switchyard_deptrans_consumed";
pub const UPSERT_STATEMENTS: &str = "switchyard_deptrans_upsert_statements";
pub const UPSERT_FAILURES: &str = "switchyard_deptrans_upsert_failures";
pub const SENT: &str = "switchyard_deptrans_sent";
pub const KRT_FAILURES: &str = "switchyard_deptrans_krt_failures";
pub const TOKEN_REFRESHES: &str = "switchyard_deptrans_token_refreshes";
pub const CACHE_REFRESH_FAILURES: &str = "switchyard_deptrans_cache_refresh_failures";
pub const RETENTION_DELETED: &str = "switchyard_deptrans_retention_deleted";

/// What happened to a consumed event or a sent row.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

pub struct DeptransMetrics {
    pub registry: Registry,
    pub events: Family<OutcomeLabels, Counter>,
    pub consumed: Counter,
    pub upsert_statements: Counter,
    pub upsert_failures: Counter,
    pub sent: Family<OutcomeLabels, Counter>,
    pub krt_failures: Counter,
    pub token_refreshes: Counter,
    pub cache_refresh_failures: Family<CacheLabels, Counter>,
    pub retention_deleted: Counter,
}

impl DeptransMetrics {
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
}

impl Default for DeptransMetrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            events: Family::default(),
            consumed: Counter::default(),
            upsert_statements: Counter::default(),
            upsert_failures: Counter::default(),
            sent: Family::default(),
            krt_failures: Counter::default(),
            token_refreshes: Counter::default(),
            cache_refresh_failures: Family::default(),
            retention_deleted: Counter::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            EVENTS,
            "Status events by outcome (stored, outside_region, ...)",
            m.events.clone(),
        );
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
        Self { registry, ..m }
    }
}
