//! `/ping`, `/metrics` and the request-metrics layer, the same in every service.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `route` label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Labels of every request metric: the matched route (never the raw path) and the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

/// Requests by route and status, and their durations; registered under the service's names.
#[derive(Clone)]
pub struct RequestMetrics {
    pub requests: Family<RouteLabels, Counter>,
    pub seconds: Family<RouteLabels, Histogram>,
}

impl RequestMetrics {
    /// Registers `{requests}` (counter) and `{seconds}` (histogram) in `registry`.
    pub fn register(registry: &mut Registry, requests: &str, seconds: &str) -> Self {
        let m = Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        };
        registry.register(
            requests,
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            seconds,
            "HTTP request durations by route and status",
            m.seconds.clone(),
        );
        m
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, status: u16, secs: f64) {
        let labels = RouteLabels {
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.seconds.get_or_create(&labels).observe(secs);
    }

    /// The middleware: `router.layer(axum::middleware::from_fn_with_state(m, RequestMetrics::layer))`.
    pub async fn layer(State(m): State<Self>, req: Request, next: Next) -> Response {
        let started = Instant::now();
        let route = matched_route(&req);
        let resp = next.run(req).await;
        m.observe(
            &route,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        resp
    }
}

/// The matched route of `req`, or [`UNMATCHED_ROUTE`].
pub fn matched_route(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned())
}

/// `/ping` (liveness: `pong`) and `/metrics` (the Prometheus text of the service's registry).
pub fn ops_routes<S, M>(metrics: Arc<M>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    M: AsRef<Registry> + Send + Sync + 'static,
{
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics_text((*metrics).as_ref()) }
            }),
        )
}

fn metrics_text(registry: &Registry) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(registry),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn ops_routes_answer_and_requests_are_counted_by_matched_route() {
        let mut registry = Registry::default();
        let m = RequestMetrics::register(&mut registry, "t_requests", "t_request_seconds");
        struct Metrics(Registry);
        impl AsRef<Registry> for Metrics {
            fn as_ref(&self) -> &Registry {
                &self.0
            }
        }
        let app: Router = ops_routes(Arc::new(Metrics(registry)))
            .route("/items/{id}", get(|| async { "item" }))
            .layer(axum::middleware::from_fn_with_state(
                m.clone(),
                RequestMetrics::layer,
            ));
        for uri in ["/ping", "/items/1", "/items/2", "/nope"] {
            let resp = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let _ = resp;
        }
        let count = |route: &str, status: u16| {
            m.requests
                .get(&RouteLabels {
                    route: route.into(),
                    status,
                })
                .map_or(0, |c| c.get())
        };
        assert_eq!(count("/ping", 200), 1);
        assert_eq!(count("/items/{id}", 200), 2);
        assert_eq!(count(UNMATCHED_ROUTE, 404), 1);

        let resp = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("t_requests_total{route=\"/items/{id}\",status=\"200\"} 2"),
            "{text}"
        );
    }
}
