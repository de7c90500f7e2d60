//! The deptrans HTTP API: the router and its state. Each endpoint group is a module with its
//! own slice of the state ([`FromRef`]), so no handler module imports this one back.
//!
//! - [`driver_id`]: the driver's KRT id (GET masked, POST checked by KRT).
//! - [`feeds`]: the internal cursor-paged feeds for other services' caches.
//! - [`history`]: one driver's statuses sent and shift states, newest first.
//! - [`rejected`]: statuses refused for good, listed and re-queued.
//! - [`error`]: the one error type and its JSON body; [`keys`]: internal clients' API keys.
//! - [`openapi`]: the OpenAPI document derived from the handlers (`schemas/openapi/deptrans.json`).
//!
//! Plus `/ping` and `/metrics`.

pub(crate) mod driver_id;
pub(crate) mod error;
pub(crate) mod feeds;
pub(crate) mod history;
pub(crate) mod keys;
pub(crate) mod openapi;
pub(crate) mod rejected;

use std::sync::Arc;

use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::DeptransMetrics;
use driver_id::DriverIdState;
use feeds::FeedsState;
use history::HistoryState;
use rejected::RejectedState;

/// Everything the router serves from.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub driver_id: DriverIdState,
    pub feeds: FeedsState,
    pub history: HistoryState,
    pub rejected: RejectedState,
    pub metrics: Arc<DeptransMetrics>,
}

impl FromRef<ApiState> for DriverIdState {
    fn from_ref(s: &ApiState) -> Self {
        s.driver_id.clone()
    }
}

impl FromRef<ApiState> for FeedsState {
    fn from_ref(s: &ApiState) -> Self {
        s.feeds.clone()
    }
}

impl FromRef<ApiState> for HistoryState {
    fn from_ref(s: &ApiState) -> Self {
        s.history.clone()
    }
}

impl FromRef<ApiState> for RejectedState {
    fn from_ref(s: &ApiState) -> Self {
        s.rejected.clone()
    }
}

/// Every deptrans route.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/driver/v1/deptrans-status/v1/id",
            get(driver_id::get_id).post(driver_id::post_id),
        )
        .route("/internal/v1/id/updates", get(feeds::id_updates))
        .route("/internal/v1/status/updates", get(feeds::status_updates))
        .route("/internal/v1/history", get(history::driver))
        .route("/internal/v1/rejected", get(rejected::list))
        .route(
            "/internal/v1/rejected/requeue",
            axum::routing::post(rejected::requeue),
        )
        .route("/ping", get(|| async { "pong" }))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// Counts every request by matched route (`-` when none matched, so unknown paths cannot
/// grow the label set) and status, and observes its duration.
async fn count_request(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("-", MatchedPath::as_str);
    state.metrics.request(
        route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

async fn metrics_text(State(state): State<ApiState>) -> Response {
    let body = switchyard_runtime::metrics::render(&state.metrics.registry);
    (
        [(
            header::CONTENT_TYPE,
            switchyard_runtime::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}
