//! How the proxy connects out: the one connector (TLS through rustls with the Mozilla roots,
//! no proxy env vars honoured) that backends (`crate::pool`) and identity lookups share, and
//! the pooled client of the lookups.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_runtime::trace;

use crate::body::{full, BoxError, ProxyBody};

/// The pooled client identity lookups go through (backends use `crate::pool`).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Largest lookup answer read; lookups are tiny JSON documents.
const LOOKUP_BODY_LIMIT: usize = 64 * 1024;

thread_local! {
    static LOCAL: HttpClient = build();
}

/// This thread's lookup client. The proxy serves each connection on one worker thread
/// (`crate::workers`), and every worker keeps its own pools, so a request, its backend
/// connection and the lookups it makes stay on one thread: no cross-thread wakeups.
pub(crate) fn local() -> HttpClient {
    LOCAL.with(Clone::clone)
}

/// How every outgoing connection is made: TCP without Nagle, a 5 s connect timeout, TLS
/// through rustls with the Mozilla roots for `https`.
pub(crate) fn connector() -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

pub(crate) fn build() -> HttpClient {
    let https = connector();
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(https)
}

/// Why a JSON lookup failed; decides between 503 (down), 404 (not found) and 502.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("{service} unreachable")]
    Unreachable {
        service: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{service} timed out")]
    Timeout { service: &'static str },
    #[error("{service} answered {status}")]
    Status {
        service: &'static str,
        status: StatusCode,
    },
    #[error("{service} answered with an unexpected body")]
    BadBody { service: &'static str },
}

/// POSTs `body` as JSON to `url` and parses the 2xx answer, all within `timeout`.
pub(crate) async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
    client: &HttpClient,
    service: &'static str,
    url: &str,
    header: Option<&(HeaderName, HeaderValue)>,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, LookupError> {
    let payload = serde_json::to_vec(body).map_err(|_| LookupError::BadBody { service })?;
    let uri: http::Uri =
        url.parse()
            .map_err(|e: http::uri::InvalidUri| LookupError::Unreachable {
                service,
                source: e.into(),
            })?;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json");
    if let Some(authority) = uri.authority() {
        req = req.header(HOST, authority.as_str());
    }
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    if let Some(headers) = req.headers_mut() {
        set_trace_headers(headers, &tracing::Span::current());
    }
    let req = req
        .body(full(payload))
        .map_err(|e| LookupError::Unreachable {
            service,
            source: e.into(),
        })?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| LookupError::Unreachable {
                service,
                source: e.into(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(LookupError::Status { service, status });
        }
        let bytes: Bytes = Limited::new(resp.into_body(), LOOKUP_BODY_LIMIT)
            .collect()
            .await
            .map_err(|_| LookupError::BadBody { service })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|_| LookupError::BadBody { service })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LookupError::Timeout { service })?
}

/// Replaces the caller's `traceparent`/`tracestate` with the context of `span` (which continues
/// the caller's trace), so the backend's spans are children of ours. Without a span context
/// (tracing not set up) the caller's headers pass through untouched.
pub(crate) fn set_trace_headers(headers: &mut HeaderMap, span: &tracing::Span) {
    if let Some(ours) = trace::headers(span) {
        set_hop_headers(headers, ours);
    }
}

static TRACEPARENT: HeaderName = HeaderName::from_static(trace::HEADER);
static TRACESTATE: HeaderName = HeaderName::from_static(trace::STATE_HEADER);

/// Replaces the caller's `traceparent`/`tracestate` with `ours` (whose strings become the
/// header values without a copy).
pub(crate) fn set_hop_headers(headers: &mut HeaderMap, ours: trace::TraceHeaders) {
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
    if let Ok(value) = HeaderValue::try_from(ours.traceparent) {
        headers.insert(TRACEPARENT.clone(), value);
    }
    if let Some(Ok(value)) = ours.tracestate.map(HeaderValue::try_from) {
        headers.insert(TRACESTATE.clone(), value);
    }
}
