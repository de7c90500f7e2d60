//! switchyard ingress: HTTP endpoints that validate events, wrap them in the envelope and
//! answer only after the broker acknowledged them.
//!
//! # Layout
//!
//! - [`config`]: `IngressConfig` and the switches reloaded from its file while running.
//! - [`auth`]: callers, their hashed credentials and routes; the middleware in front of every
//!   flow (401/403), and who may send mark-notify's identity headers.
//! - One module per flow: `uid_notify`, `mark_notify`, `driver_status`, and
//!   [`domain_events`] (the generic `POST /v1/events/{type}` over the registry in
//!   `deploy/events.toml` and the JSON Schemas in `schemas/events/`).
//! - [`publish`]: the `Publisher` (Kafka with `acks=all`, or discard for benchmarks).
//! - `error`: the flows' errors mapped to the shared body (`switchyard_runtime::http`, which
//!   also parses JSON strictly and serves `/ping` + `/metrics`).
//! - `schemas`: `GET /v1/schemas[/{type}.v{N}]`, the registry read-only with an `ETag`.
//! - `metrics`: every metric the ingress exports; [`openapi`]: the generated document.
//! - [`run`]: the router (`/ping`, `/metrics`, the flows) served until shutdown, within the
//!   config's header-read and request deadlines.

pub mod auth;
pub mod config;
pub mod domain_events;
mod driver_status;
mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
mod mark_notify;
mod metrics;
pub mod openapi;
pub mod publish;
mod schemas;
mod uid_notify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use events::Envelope;
use switchyard_runtime::{trace, Shutdown};
use tokio::net::TcpListener;
use tracing::Instrument;

pub use config::IngressConfig;
use config::{LiveSwitches, Switches};
use error::ApiError;
use metrics::{AuthLabels, IngressMetrics, ModeLabels, TopicLabels};
pub use publish::Publisher;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<IngressConfig>,
    pub switches: LiveSwitches,
    pub publisher: Publisher,
    pub metrics: Arc<IngressMetrics>,
    /// Callers and their routes.
    pub auth: Arc<auth::Auth>,
    /// Registered domain event types and versions with their compiled schemas.
    pub events: Arc<domain_events::Registry>,
    /// `[tls]`: the acceptor, when the ingress serves TLS.
    pub tls: Option<switchyard_runtime::http::Tls>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Registry(#[from] domain_events::RegistryError),
    #[error(transparent)]
    Tls(#[from] switchyard_runtime::http::tls::TlsError),
}

impl AppState {
    /// Builds the state: resolves `[auth]` (reading token files) and loads the domain event
    /// registry named in `config`.
    pub fn new(config: IngressConfig, publisher: Publisher) -> Result<Self, StateError> {
        let auth = auth::Auth::from_config(&config.auth)?;
        let tls = match &config.tls {
            Some(tls) => Some(switchyard_runtime::http::tls::acceptor(tls)?),
            None => None,
        };
        if auth.uses_client_certs()
            && config
                .tls
                .as_ref()
                .is_none_or(|t| t.client_ca_file.is_none())
        {
            return Err(auth::AuthError::Invalid {
                key: "auth.callers".into(),
                message:
                    "a caller has client_cn, but no tls.client_ca_file asks for client certificates"
                        .into(),
            }
            .into());
        }
        let events = match &config.domain_events.registry_file {
            Some(file) => domain_events::Registry::load(file)?,
            None => domain_events::Registry::default(),
        };
        let switches = Arc::new(ArcSwap::from_pointee(Switches::from(&config)));
        let state = Self {
            config: Arc::new(config),
            switches,
            publisher,
            metrics: Arc::default(),
            auth: Arc::new(auth),
            events: Arc::new(events),
            tls,
        };
        state.show_switches(&state.switches.load());
        Ok(state)
    }

    /// Sets the mode gauge to the switches in force.
    fn show_switches(&self, switches: &Switches) {
        for mode in config::UidNotifyMode::ALL {
            let on = i64::from(mode == switches.uid_notify_mode);
            self.metrics
                .uid_notify_mode
                .get_or_create(&ModeLabels {
                    mode: mode.as_str().into(),
                })
                .set(on);
        }
    }

    /// Counts a request refused inside a handler (identity headers from an untrusted caller).
    pub(crate) fn count_forbidden(&self, principal: &auth::Principal, route: &str) {
        self.metrics
            .auth
            .get_or_create(&AuthLabels {
                caller: principal.name.to_string(),
                route: route.to_owned(),
                outcome: "identity_headers_refused".into(),
            })
            .inc();
    }

    /// Publishes and records latency; any failure becomes a 503 for the caller. The publish is a
    /// producer span of the request's trace, and its context goes into the envelope (and so the
    /// record headers): the consumer's span is its child.
    pub async fn publish(&self, topic: &str, key: &str, env: &Envelope) -> Result<(), ApiError> {
        let span = tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {topic}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = topic,
            event_id = %env.event_id,
        );
        let mut env = env.clone();
        env.trace = trace::headers(&span).map(|h| events::v1::TraceContext {
            traceparent: h.traceparent,
            tracestate: h.tracestate.unwrap_or_default(),
        });
        let env = &env;
        let started = Instant::now();
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        match self
            .publisher
            .publish(topic, key, env)
            .instrument(span.clone())
            .await
        {
            Ok(()) => {
                let secs = started.elapsed().as_secs_f64();
                self.metrics
                    .publish_seconds
                    .get_or_create(&labels)
                    .observe(secs);
                Ok(())
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                tracing::warn!(parent: &span, error = %e, topic, event_id = %env.event_id, "publish failed");
                self.metrics.publish_failures.get_or_create(&labels).inc();
                Err(ApiError::Unavailable)
            }
        }
    }
}

/// Every ingress route: the flows behind [`auth::require`], the probes and `/metrics` open.
pub fn router(state: AppState) -> Router {
    let flows = Router::new()
        .route("/v1/uid-notify", post(uid_notify::handle))
        .route("/v1/driver-status", post(driver_status::handle))
        .route("/4.0/mark-notify/v1/seen", post(mark_notify::handle))
        .route("/v1/events/{event_type}", post(domain_events::handle))
        .route("/v1/schemas", get(schemas::list))
        .route("/v1/schemas/{schema}", get(schemas::get_one))
        // Inside auth: a refused caller's body is never read.
        .route_layer(axum::middleware::from_fn_with_state(
            state.config.request_deadline(),
            switchyard_runtime::http::serve::deadline,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .merge(flows)
        .route("/ready", get(ready))
        .merge(switchyard_runtime::http::ops_routes(state.metrics.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> StatusCode {
    if state
        .publisher
        .broker_reachable(Duration::from_secs(2))
        .await
    {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = switchyard_runtime::http::ops::matched_route(&req);
    let span = request_span(&req, &route);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    state
        .metrics
        .requests
        .observe(&route, status, started.elapsed().as_secs_f64());
    resp
}

/// The server span of a request, continuing the caller's trace when it sent a `traceparent`
/// (otherwise the root of a new trace). Probes and scrapes get none.
fn request_span(req: &Request, route: &str) -> tracing::Span {
    if matches!(route, "/ping" | "/ready" | "/metrics") {
        return tracing::Span::none();
    }
    let method = req.method();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    trace::set_parent(&span, header(trace::HEADER), header(trace::STATE_HEADER));
    span
}

/// Serves the ingress on `listener` until `shutdown`, then flushes the producer.
/// When `config_file` is given it is watched and its kill switches applied without restart.
pub async fn run(
    state: AppState,
    config_file: Option<PathBuf>,
    listener: TcpListener,
    shutdown: Shutdown,
) {
    for route in &state.auth.open_names {
        tracing::warn!(%route, "auth.allow_unauthenticated: route served without a credential");
    }
    if let Some(file) = config_file {
        let every = Duration::from_millis(state.config.reload_interval_ms);
        let watcher = state.clone();
        switchyard_runtime::shutdown::spawn_detached(
            "config-watch",
            config::watch(
                file,
                state.switches.clone(),
                every,
                shutdown.clone(),
                move |s| watcher.show_switches(s),
            ),
        );
    }
    let publisher = state.publisher.clone();
    let conn = state.config.conn_deadlines();
    let tls = state.tls.clone();
    let app = router(state);
    tracing::info!(addr = ?listener.local_addr().ok(), tls = tls.is_some(), "ingress listening");
    switchyard_runtime::http::serve_with(listener, app, conn, tls, shutdown.triggered()).await;
    publisher.flush(Duration::from_secs(5));
}
