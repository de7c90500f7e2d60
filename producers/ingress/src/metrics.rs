//! Every metric the ingress exports, named in one place.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use switchyard_runtime::http::RequestMetrics;

pub(crate) const REQUESTS: &str = "switchyard_ingress_requests";
pub(crate) const REQUEST_SECONDS: &str = "switchyard_ingress_request_seconds";
pub(crate) const PUBLISH_SECONDS: &str = "switchyard_ingress_publish_seconds";
pub(crate) const PUBLISH_FAILURES: &str = "switchyard_ingress_publish_failures";
pub(crate) const DISABLED: &str = "switchyard_ingress_disabled_requests";
pub(crate) const AUTH: &str = "switchyard_ingress_auth";
pub(crate) const UID_NOTIFY_MODE: &str = "switchyard_ingress_uid_notify_mode";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

/// Bounded: `caller` is a configured name or `unknown`, `route` a route template, `outcome`
/// one of `allowed`, `open`, `unauthenticated`, `forbidden`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub caller: String,
    pub route: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    pub flow: String,
}

pub struct IngressMetrics {
    pub registry: Registry,
    /// Requests by route and status (the layer shared by every service).
    pub requests: RequestMetrics,
    pub publish_seconds: Family<TopicLabels, Histogram>,
    pub publish_failures: Family<TopicLabels, Counter>,
    pub disabled: Family<FlowLabels, Counter>,
    /// Authentication outcomes by caller, route and outcome.
    pub auth: Family<AuthLabels, Counter>,
    /// 1 for the current `uid_notify.mode`, 0 for the others.
    pub uid_notify_mode: Family<ModeLabels, Gauge>,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let publish_seconds = Family::<TopicLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let publish_failures = Family::<TopicLabels, Counter>::default();
        let disabled = Family::<FlowLabels, Counter>::default();
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            AUTH,
            "Requests by caller, route and authentication outcome",
            auth.clone(),
        );
        let uid_notify_mode = Family::<ModeLabels, Gauge>::default();
        registry.register(
            UID_NOTIFY_MODE,
            "1 for the current uid_notify.mode (on, hold, off)",
            uid_notify_mode.clone(),
        );
        let requests = RequestMetrics::register(&mut registry, REQUESTS, REQUEST_SECONDS);
        registry.register(
            PUBLISH_SECONDS,
            "Time from send to broker acknowledgement",
            publish_seconds.clone(),
        );
        registry.register(
            PUBLISH_FAILURES,
            "Records the broker did not acknowledge in time",
            publish_failures.clone(),
        );
        registry.register(
            DISABLED,
            "Requests refused (503) because the flow is switched off",
            disabled.clone(),
        );
        Self {
            registry,
            requests,
            publish_seconds,
            publish_failures,
            disabled,
            auth,
            uid_notify_mode,
        }
    }
}

impl AsRef<Registry> for IngressMetrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}
