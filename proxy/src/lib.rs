//! talaria-proxy: the single entry point to external partner APIs. Routes by `x-api-tag`,
//! exchanges our phone id for the partner's user id, adds the partner's API key and a signed
//! JWT, checks the partner's callback tokens, and refuses anything that could make it talk
//! to a host that is not a configured backend.
//!
//! # Layout
//!
//! - [`config`]: `ProxyConfig` (backends, identity, API keys, secrets); `state`: the
//!   [`ProxyState`] built from it once (key material loaded at start, not per request).
//! - `access`: internal callers, their credentials and the backends each may use.
//! - `guard`: what a request must satisfy before routing; `framing`: request-smuggling
//!   detection below hyper.
//! - `identity`: our phone id to the partner's user id; `jwt`: partner tokens, signed and
//!   checked; `replay`: the used callback tokens, remembered in this process or in the
//!   PostgreSQL store every replica shares (migrations in `migrations/`).
//! - `forward`: header hygiene and the forwarding of one request; `pool`: each worker's
//!   keep-alive connections to backends; `client`: how connections are made, and the HTTP
//!   client of identity lookups (with the trace headers every outgoing request carries);
//!   `body`: the one streamed body type and the size/deadline bound every body passes.
//! - `error`: the one mapping from errors to HTTP; `metrics`: every metric the proxy exports;
//!   `ops`: the ops listener's two endpoints.
//! - [`run`] / [`serve`]: three listeners under one graceful shutdown, each with its own
//!   routes ([`Listener`]): internal forwarding by `x-api-tag`, partner callbacks, and the
//!   ops endpoints (`/_proxy/ping`, `/_proxy/metrics`). `workers`: thread-per-core serving;
//!   every accepted connection lives on one worker thread with its own backend pool.
//!
//! Imports point one way, from the request path down to the leaves: this file -> `state`,
//! `access`, `guard`, `identity`, `jwt`, `forward`, `ops`; `state` -> `access`, `identity`,
//! `jwt`, `replay`, `forward`; `jwt` -> `replay`; `identity` -> `forward` (API-key headers), `client`; `ops` -> `identity`,
//! `metrics`; `forward` -> `pool` -> `client` -> `body`; the others -> `error`, `config`, `metrics`. No
//! module imports back from a module that imports it.
//!
//! No Kafka here: the proxy takes `switchyard-runtime` without its `kafka` feature.

mod access;
mod body;
mod client;
pub mod config;
mod error;
mod forward;
mod framing;
#[cfg(fuzzing)]
pub mod fuzzing;
mod guard;
mod identity;
mod jwt;
mod metrics;
mod ops;
mod pool;
mod replay;
mod state;
mod workers;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::uri::PathAndQuery;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use switchyard_runtime::conn::{ConnDeadlines, ConnState, DeadlineIo, Held, InFlight};
use switchyard_runtime::{telemetry, trace, Shutdown};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::workers::Workers;

pub use crate::access::{sha256_hex, X_PROXY_KEY};
use crate::body::ProxyBody;
use crate::config::InvalidConfig;
pub use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::framing::{FramingFlag, SniffedIo};
use crate::metrics::NO_BACKEND;
pub use crate::state::ProxyState;

/// Header every client request names its backend in.
pub static X_API_TAG: HeaderName = HeaderName::from_static("x-api-tag");
/// Header carrying the `sub` of a checked partner callback token to the internal upstream.
pub static X_PARTNER_SUBJECT: HeaderName = HeaderName::from_static("x-partner-subject");
/// Header naming the backend tag a callback came for.
pub static X_PARTNER_TAG: HeaderName = HeaderName::from_static("x-partner-tag");

/// Which port a request came in on; each serves its own routes and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Our services: requests forwarded to a backend by `x-api-tag`.
    Internal,
    /// The partner: `/callbacks/<tag>/...` with a valid partner JWT, nothing else.
    Partner,
    /// Probes and scrapes: `GET /_proxy/ping` and `GET /_proxy/metrics`, nothing else.
    Ops,
}

/// The three bound sockets the proxy serves on.
pub struct Listeners {
    pub internal: TcpListener,
    pub partner: TcpListener,
    pub ops: TcpListener,
}

impl Listeners {
    /// Binds `listen`, `partner_listen` and `ops_listen` from the config.
    pub async fn bind(config: &ProxyConfig) -> std::io::Result<Self> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))
        };
        Ok(Self {
            internal: bind(config.listen.clone()).await?,
            partner: bind(config.partner_listen.clone()).await?,
            ops: bind(config.ops_listen.clone()).await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration")]
    Config(#[from] InvalidConfig),
}

/// Serves the proxy on `listeners` until `shutdown`, then lets in-flight requests finish for
/// `drain_timeout_ms`.
pub async fn run(
    config: ProxyConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let state = ProxyState::new(&config)?;
    serve(state, &config, listeners, shutdown).await;
    Ok(())
}

/// Serves every listener until `shutdown`, then drains all their connections together.
pub async fn serve(
    state: Arc<ProxyState>,
    config: &ProxyConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
    let deadlines = ConnDeadlines {
        header_read: Duration::from_millis(config.header_read_timeout_ms),
        idle: Duration::from_millis(config.idle_timeout_ms),
    };
    let count = match config.workers {
        0 => Workers::default_count(),
        n => n,
    };
    let workers = match Workers::start(count) {
        Ok(workers) => workers,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the worker threads");
            return;
        }
    };
    let serving = Serving {
        state: &state,
        graceful: &graceful,
        workers: &workers,
        deadlines,
    };
    if let Some(store) = &state.replay_store {
        switchyard_runtime::shutdown::spawn_detached(
            "replay-store",
            store.clone().maintain(shutdown.clone()),
        );
    }
    tracing::info!(
        backends = state.backends.len(),
        workers = count,
        "proxy starting"
    );
    tokio::join!(
        accept(Listener::Internal, listeners.internal, &serving, &shutdown),
        accept(Listener::Partner, listeners.partner, &serving, &shutdown),
        accept(Listener::Ops, listeners.ops, &serving, &shutdown),
    );
    let drain = Duration::from_millis(config.drain_timeout_ms);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with requests in flight");
    }
}

/// What every accept loop hands its connections to.
struct Serving<'a> {
    state: &'a Arc<ProxyState>,
    graceful: &'a GracefulShutdown,
    workers: &'a Workers,
    deadlines: ConnDeadlines,
}

/// Spawns a worker's job on the worker's own runtime.
fn spawn_job(job: workers::Job) {
    switchyard_runtime::shutdown::spawn_detached("connection", job());
}

/// One accept loop: HTTP/1.1 only, so the request target is always what the client sent.
/// The socket moves to a worker thread, which serves the connection to its end.
async fn accept(role: Listener, listener: TcpListener, serving: &Serving<'_>, shutdown: &Shutdown) {
    tracing::info!(addr = ?listener.local_addr().ok(), listener = ?role, "proxy listening");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.triggered() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                continue;
            }
        };
        // The peer as `X-Forwarded-For` names it, made once per connection.
        let peer = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let state = serving.state.clone();
        let watcher = serving.graceful.watcher();
        let deadlines = serving.deadlines;
        let handed = serving.workers.submit(Box::new(move || {
            Box::pin(async move {
                // Registers the socket with this worker's runtime.
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "worker cannot take a connection");
                        return;
                    }
                };
                let flag = FramingFlag::default();
                // The header-read and idle deadlines are DeadlineIo's, not hyper's one timer,
                // which also runs while a kept-alive connection waits and so closes it under a
                // client reusing it (runtime::http::conn).
                let conn_state = ConnState::new(deadlines);
                let io = TokioIo::new(DeadlineIo::new(
                    SniffedIo::new(stream, flag.clone()),
                    conn_state.clone(),
                ));
                let service = service_fn(move |req| {
                    let in_flight = conn_state.begin();
                    // Boxed once here: hyper would otherwise move the whole request future
                    // (a few KB) through the closure, this block and its own slot.
                    let handled =
                        Box::pin(handle(state.clone(), role, peer.clone(), flag.clone(), req));
                    async move { Ok::<_, Infallible>(held_until_sent(handled.await, in_flight)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(None)
                    .serve_connection(io, service);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            })
        }));
        if !handed {
            tracing::error!("every worker thread has stopped; not accepting");
            break;
        }
    }
}

/// The response with the request counted in flight on its connection until its body is done,
/// so neither connection deadline runs while an answer streams.
fn held_until_sent(resp: Response<ProxyBody>, in_flight: InFlight) -> Response<Held<ProxyBody>> {
    resp.map(|body| in_flight.hold(body))
}

async fn handle(
    state: Arc<ProxyState>,
    role: Listener,
    peer: HeaderValue,
    framing: FramingFlag,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let request_id = request_id(req.headers());
    let mut req = req;
    let span = match role {
        Listener::Ops => tracing::Span::none(),
        // Spans that go nowhere cost a tenth of the proxy's CPU (bench-results/proxy.md): the
        // backend gets the same W3C headers from `next_hop` without them.
        Listener::Internal | Listener::Partner if !telemetry::spans_exported() => {
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            let hop = trace::next_hop(header(trace::HEADER), header(trace::STATE_HEADER));
            req.extensions_mut().insert(hop);
            tracing::Span::none()
        }
        Listener::Internal | Listener::Partner => request_span(&req, &request_id),
    };
    let mut label = NO_BACKEND;
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    req.extensions_mut().insert(body::Deadline(deadline));
    let result = if framing.is_ambiguous() {
        Err(ProxyError::AmbiguousFraming(
            "both content-length and transfer-encoding",
        ))
    } else {
        // The forwarding route has no timer of its own: its one wait that can last (the
        // backend's answer) runs under `forward::send`'s single timer, which is also this
        // deadline, and an identity lookup is bounded by it too. A second timer per request
        // cost a wheel entry, its removal and a clock read (bench-results/proxy.md).
        let timed_out = || Err(ProxyError::RequestTimeout);
        match role {
            // Without a span the future is not wrapped: every wrapper moves it once more.
            Listener::Internal if span.is_none() => {
                dispatch(&state, &peer, req, &request_id, deadline, &mut label).await
            }
            Listener::Internal => {
                dispatch(&state, &peer, req, &request_id, deadline, &mut label)
                    .instrument(span.clone())
                    .await
            }
            // The other two routes are boxed so that the forwarding route's future, which
            // every internal request moves through hyper, is no bigger than it needs.
            Listener::Partner => tokio::time::timeout_at(
                deadline,
                Box::pin(partner(&state, &peer, req, &request_id, &mut label))
                    .instrument(span.clone()),
            )
            .await
            .unwrap_or_else(|_| timed_out()),
            Listener::Ops => tokio::time::timeout_at(
                deadline,
                Box::pin(ops::serve(&state.identities, &state.metrics, &req)),
            )
            .await
            .unwrap_or_else(|_| timed_out()),
        }
    };
    let mut resp = result.unwrap_or_else(ProxyError::into_response);
    resp.headers_mut()
        .insert(forward::X_REQUEST_ID.clone(), request_id);
    let status = resp.status().as_u16();
    span.record("backend", label);
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    state.metrics.record_response(label, status);
    resp
}

/// The server span of a proxied request, continuing the caller's trace when it sent a
/// `traceparent`. The proxy's own endpoints get none. Paths are not recorded: they can name
/// people.
fn request_span(req: &Request<Incoming>, request_id: &HeaderValue) -> tracing::Span {
    if req.uri().path().starts_with("/_proxy/") {
        return tracing::Span::none();
    }
    let method = req.method();
    let span = tracing::info_span!(
        "proxy",
        otel.name = %format_args!("{method} proxy"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.response.status_code = tracing::field::Empty,
        backend = tracing::field::Empty,
        request_id = request_id.to_str().unwrap_or("-"),
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    trace::set_parent(&span, header(trace::HEADER), header(trace::STATE_HEADER));
    span
}

/// Keeps a sane caller-supplied request id, otherwise makes one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    headers
        .get(&forward::X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
            let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        })
}

/// The partner-facing listener: `/callbacks/<tag>/...` and nothing else; `x-api-tag` means
/// nothing here.
async fn partner<'s>(
    state: &'s ProxyState,
    peer: &HeaderValue,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    label: &mut &'s str,
) -> Result<Response<ProxyBody>, ProxyError> {
    guard::check_request(&req, &state.allowed_hosts)?;
    let decoded = guard::check_path(req.uri().path())?;
    match decoded.strip_prefix("/callbacks/") {
        Some(rest) => callback(state, peer, req, rest, request_id, label).await,
        None => Err(ProxyError::NotFound),
    }
}

/// The internal listener: forwarding by `x-api-tag` only; no ops endpoints, no callbacks.
async fn dispatch<'s>(
    state: &'s ProxyState,
    peer: &HeaderValue,
    mut req: Request<Incoming>,
    request_id: &HeaderValue,
    deadline: tokio::time::Instant,
    label: &mut &'s str,
) -> Result<Response<ProxyBody>, ProxyError> {
    guard::check_request(&req, &state.allowed_hosts)?;
    let decoded = guard::check_path(req.uri().path())?;
    let (caller, credential) = match state.callers.authenticate(req.headers()) {
        Ok(found) => found,
        Err(e) => {
            state
                .metrics
                .record_access(NO_BACKEND, NO_BACKEND, "unauthenticated");
            return Err(e);
        }
    };
    // The caller's credential never leaves for a backend, whatever the strip lists say.
    req.headers_mut().remove(credential);
    if decoded.starts_with("/_proxy/") {
        return Err(ProxyError::NotFound);
    }
    let tag = req.headers().get(&X_API_TAG);
    let tag = tag.ok_or(ProxyError::MissingTag)?;
    let backend = tag
        .to_str()
        .ok()
        .and_then(|t| state.backends.get_key_value(t))
        .ok_or(ProxyError::UnknownTag);
    let (tag, backend) = backend?;
    *label = tag;
    let Some(allowed) = caller.may_use(tag) else {
        state.metrics.record_access(&caller.name, tag, "forbidden");
        return Err(ProxyError::Forbidden);
    };
    allowed.inc();
    if !guard::prefix_allowed(&decoded, &backend.prefixes) {
        return Err(ProxyError::PathNotAllowed);
    }
    let mut extra = Vec::with_capacity(2);
    let mut user_id = None;
    if let Some(identity) = &backend.identity {
        let name = &identity.phone_id_header;
        let phone_id = req
            .headers()
            .get(name)
            .ok_or_else(|| ProxyError::MissingHeader(name.to_string()))?
            .to_str()
            .map_err(|_| ProxyError::InvalidHeader(name.to_string()))?;
        user_id = Some((
            &identity.user_id_header,
            identity.partner_user_id(phone_id, deadline).await?,
        ));
    }
    if let Some((header, signer)) = &backend.signer {
        let sub = user_id.as_ref().and_then(|(_, id)| id.to_str().ok());
        extra.push((header.clone(), signer.bearer(sub)?));
    }
    if let Some((header, id)) = user_id {
        extra.push((header.clone(), id));
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let fwd = state.forwarding(peer, request_id, extra);
    forward::send(&backend.target, path_and_query, req, fwd).await
}

/// `/callbacks/<tag>/<path>`: a partner calling us. The token is checked before anything is
/// forwarded to the internal upstream, which sees `<path>` only.
async fn callback<'s>(
    state: &'s ProxyState,
    peer: &HeaderValue,
    req: Request<Incoming>,
    rest: &str,
    request_id: &HeaderValue,
    label: &mut &'s str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (tag, _) = rest.split_once('/').unwrap_or((rest, ""));
    let (tag, backend) = state
        .backends
        .get_key_value(tag)
        .ok_or(ProxyError::UnknownTag)?;
    let cb = backend.callback.as_ref().ok_or(ProxyError::UnknownTag)?;
    *label = tag;
    let claims = cb.verifier.verify(req.headers().get(AUTHORIZATION))?;
    // Tags are [a-z0-9_-]: a percent-encoded tag in the raw path is not ours.
    let raw = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let forwarded = raw
        .strip_prefix("/callbacks/")
        .and_then(|r| r.strip_prefix(tag.as_str()))
        .ok_or(ProxyError::UnknownTag)?;
    let inner_path = forwarded.split('?').next().unwrap_or_default();
    if !guard::prefix_allowed(&guard::check_path(inner_path)?, &cb.prefixes) {
        return Err(ProxyError::PathNotAllowed);
    }
    let forwarded =
        PathAndQuery::try_from(forwarded).map_err(|e| ProxyError::Internal(e.into()))?;
    cb.verifier.use_up(&claims).await?;
    let mut extra = vec![(
        X_PARTNER_TAG.clone(),
        HeaderValue::from_str(tag).map_err(|e| ProxyError::Internal(e.into()))?,
    )];
    if let Some(sub) = claims.sub.and_then(|s| HeaderValue::from_str(&s).ok()) {
        extra.push((X_PARTNER_SUBJECT.clone(), sub));
    }
    let fwd = state.forwarding(peer, request_id, extra);
    forward::send(&cb.target, forwarded, req, fwd).await
}
