//! Every metric the proxy exports, named in one place. Labels are config names (tags,
//! identity names), never anything a client chose.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub(crate) const REQUESTS: &str = "switchyard_proxy_requests";
pub(crate) const SERVER_ERRORS: &str = "switchyard_proxy_server_errors";
pub(crate) const UPSTREAM_SECONDS: &str = "switchyard_proxy_upstream_seconds";
pub(crate) const CACHE_HITS: &str = "switchyard_proxy_identity_cache_hits";
pub(crate) const CACHE_MISSES: &str = "switchyard_proxy_identity_cache_misses";
pub(crate) const CACHE_SIZE: &str = "switchyard_proxy_identity_cache_size";
pub(crate) const LOOKUP_CALLS: &str = "switchyard_proxy_identity_lookups";
pub(crate) const CALLER_REQUESTS: &str = "switchyard_proxy_caller_requests";

/// Label for requests that matched no backend.
pub(crate) const NO_BACKEND: &str = "-";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub backend: String,
    pub status: u16,
}

/// Internal-listener access decisions. `caller` and `backend` are config names or `-`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    pub caller: String,
    pub backend: String,
    /// `allowed`, `unauthenticated` or `forbidden`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub identity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub identity: String,
    /// `personal` or `partner`.
    pub service: &'static str,
}

pub struct ProxyMetrics {
    pub registry: Registry,
    pub requests: Family<StatusLabels, Counter>,
    pub server_errors: Family<StatusLabels, Counter>,
    pub upstream_seconds: Family<BackendLabels, Histogram>,
    pub cache_hits: Family<IdentityLabels, Counter>,
    pub cache_misses: Family<IdentityLabels, Counter>,
    pub cache_size: Family<IdentityLabels, Gauge>,
    pub lookups: Family<LookupLabels, Counter>,
    pub caller_requests: Family<AccessLabels, Counter>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabels, Counter>::default();
        let server_errors = Family::<StatusLabels, Counter>::default();
        let upstream_seconds = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let cache_hits = Family::<IdentityLabels, Counter>::default();
        let cache_misses = Family::<IdentityLabels, Counter>::default();
        let cache_size = Family::<IdentityLabels, Gauge>::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let caller_requests = Family::<AccessLabels, Counter>::default();
        registry.register(
            CALLER_REQUESTS,
            "Internal-listener requests by caller, backend and access outcome",
            caller_requests.clone(),
        );
        registry.register(
            REQUESTS,
            "Requests by backend tag and status",
            requests.clone(),
        );
        registry.register(
            SERVER_ERRORS,
            "5xx responses by backend and status",
            server_errors.clone(),
        );
        registry.register(
            UPSTREAM_SECONDS,
            "Time from forwarding a request to the backend's response head",
            upstream_seconds.clone(),
        );
        registry.register(
            CACHE_HITS,
            "Phone ids found in the identity cache",
            cache_hits.clone(),
        );
        registry.register(
            CACHE_MISSES,
            "Phone ids not in the identity cache",
            cache_misses.clone(),
        );
        registry.register(
            CACHE_SIZE,
            "Entries in the identity cache",
            cache_size.clone(),
        );
        registry.register(
            LOOKUP_CALLS,
            "Calls made to personal and the partner to resolve a phone id",
            lookups.clone(),
        );
        Self {
            registry,
            requests,
            server_errors,
            upstream_seconds,
            cache_hits,
            cache_misses,
            cache_size,
            lookups,
            caller_requests,
        }
    }
}

impl ProxyMetrics {
    pub fn record_access(&self, caller: &str, backend: &str, outcome: &'static str) {
        self.access_counter(caller, backend, outcome).inc();
    }

    /// One series of the access counter, for callers that resolve it once.
    pub(crate) fn access_counter(
        &self,
        caller: &str,
        backend: &str,
        outcome: &'static str,
    ) -> Counter {
        let labels = AccessLabels {
            caller: caller.to_owned(),
            backend: backend.to_owned(),
            outcome,
        };
        self.caller_requests.get_or_create(&labels).clone()
    }

    pub fn record_response(&self, backend: &str, status: u16) {
        let labels = StatusLabels {
            backend: backend.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        if status >= 500 {
            self.server_errors.get_or_create(&labels).inc();
        }
    }
}
