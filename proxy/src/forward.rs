//! Forwarding one request: header hygiene in both directions (hop-by-hop, our personal
//! headers, spoofable proxy headers, the API key), then a streamed exchange with a deadline
//! on the response head.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri, Version};
use hyper::body::Incoming;
use prometheus_client::metrics::histogram::Histogram;
use switchyard_runtime::trace;
use tracing::Instrument;

use crate::body::{Bounded, Deadline, ProxyBody, Tripped};
use crate::client::{set_hop_headers, set_trace_headers};
use crate::config::{read_secret, ApiKeyConfig, InvalidConfig};
use crate::error::ProxyError;
use crate::metrics::{BackendLabels, ProxyMetrics};
use crate::pool::{self, Origin};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the ones a
/// client could use to make a backend believe another proxy vouched for something.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

static PROXY_SET: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    header::FORWARDED,
    HeaderName::from_static("x-request-id"),
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers).iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The headers the `Connection` header names (usually none, and then no allocation).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Request headers that never leave for a backend.
pub(crate) struct StripRules {
    pub names: Vec<HeaderName>,
    pub prefixes: Vec<String>,
}

impl StripRules {
    fn drops(&self, name: &HeaderName) -> bool {
        self.names.contains(name)
            || self
                .prefixes
                .iter()
                .any(|p| name.as_str().starts_with(p.as_str()))
    }
}

/// Removes, in one pass over the request's own headers, everything that must not reach a
/// backend: hop-by-hop headers (with those `Connection` names), `Host`, the headers the proxy
/// sets, the strip lists, and any client copy of the headers the proxy adds (`extra`). A
/// request carries a handful of headers, so checking each against the lists costs less than
/// a map lookup for every listed name.
fn remove_inbound(
    headers: &mut HeaderMap,
    strip: &StripRules,
    extra: &[(HeaderName, HeaderValue)],
) {
    let listed = connection_listed(headers);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            *name == header::HOST
                || HOP_BY_HOP.contains(name)
                || PROXY_SET.contains(name)
                || strip.drops(name)
                || extra.iter().any(|(added, _)| added == *name)
                || listed.contains(name)
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Loads an API key into a header that is marked sensitive (hyper never logs it).
pub(crate) fn api_key_header(
    key: &str,
    cfg: &ApiKeyConfig,
) -> Result<(HeaderName, HeaderValue), InvalidConfig> {
    let name = HeaderName::try_from(cfg.header.as_str())
        .map_err(|e| InvalidConfig::key(format!("{key}.header"), e))?;
    let secret = read_secret(key, cfg.value.as_ref(), cfg.file.as_deref())?;
    let mut value = HeaderValue::from_bytes(&secret)
        .map_err(|_| InvalidConfig::key(key, "not a valid header value"))?;
    if value.is_empty() {
        return Err(InvalidConfig::key(key, "empty API key"));
    }
    value.set_sensitive(true);
    Ok((name, value))
}

/// Where a request goes: a backend or a callback upstream.
pub(crate) struct Target {
    /// Config name, used as the metric label.
    pub tag: String,
    /// The backend's scheme and authority: where the worker's pool dials.
    origin: Origin,
    /// The `Host` header every request to this target carries.
    host: HeaderValue,
    /// Path prefix of the base URL, empty or starting with `/`.
    path: String,
    pub timeout: Duration,
    /// Secret header added to requests and scrubbed from responses.
    pub api_key: Option<(HeaderName, HeaderValue)>,
    /// Largest request body forwarded; then 413.
    pub max_body: u64,
    /// Time to the backend's response head, this target's series.
    upstream_seconds: Histogram,
}

impl Target {
    /// A target at `base_url` (`http(s)://authority[/base-path]`), taken apart once so that a
    /// request's URI and `Host` are not parsed again each time.
    pub(crate) fn new(
        tag: &str,
        base_url: &str,
        timeout_ms: u64,
        metrics: &ProxyMetrics,
    ) -> Result<Self, String> {
        let uri: Uri = base_url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("not a URL: {e}"))?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err("needs a scheme and a host".into());
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let path = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let labels = BackendLabels {
            backend: tag.to_owned(),
        };
        Ok(Self {
            tag: tag.to_owned(),
            origin: Origin::new(scheme, authority).map_err(|e| e.to_string())?,
            host,
            path,
            timeout: Duration::from_millis(timeout_ms),
            api_key: None,
            max_body: u64::MAX,
            upstream_seconds: metrics.upstream_seconds.get_or_create(&labels).clone(),
        })
    }

    pub(crate) fn max_body(self, max_body: u64) -> Self {
        Self { max_body, ..self }
    }

    /// The origin-form request target for `path_and_query` (which starts with `/` or `?`):
    /// the base path, then the request's own path and query.
    fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, ProxyError> {
        let invalid = |e: http::Error| ProxyError::Internal(e.into());
        let path_and_query = if self.path.is_empty() {
            if path_and_query.as_str().starts_with('/') {
                path_and_query
            } else {
                PathAndQuery::try_from(format!("/{}", path_and_query.as_str()))
                    .map_err(|e| invalid(e.into()))?
            }
        } else {
            PathAndQuery::try_from(format!("{}{}", self.path, path_and_query.as_str()))
                .map_err(|e| invalid(e.into()))?
        };
        Ok(Uri::from(path_and_query))
    }
}

/// Per-request facts the forwarded headers are built from.
pub(crate) struct Forwarding<'a> {
    /// The peer's address, as `X-Forwarded-For` names it.
    pub peer: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    pub trust_forwarded_for: bool,
    pub strip: &'a StripRules,
    /// Headers the proxy sets (user id, JWT); any client copy is dropped first.
    pub extra: Vec<(HeaderName, HeaderValue)>,
}

/// Sends `req` to `target` at `path_and_query` and streams the answer back.
pub(crate) async fn send(
    target: &Target,
    path_and_query: PathAndQuery,
    req: Request<Incoming>,
    fwd: Forwarding<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > target.max_body) {
        return Err(ProxyError::BodyTooLarge(target.max_body));
    }
    let started = tokio::time::Instant::now();
    // The answer's head must come by the backend's own limit and by the request's deadline:
    // one timer for whichever is first.
    let head_by = started + target.timeout;
    let deadline = parts.extensions.get::<Deadline>().map_or(head_by, |d| d.0);
    let tripped = Tripped::default();
    let uri = target.uri(path_and_query)?;
    let headers = &mut parts.headers;
    let prior_xff = if fwd.trust_forwarded_for {
        let joined: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!joined.is_empty()).then(|| joined.join(", "))
    } else {
        None
    };
    remove_inbound(headers, fwd.strip, &fwd.extra);
    let xff = match prior_xff {
        Some(prior) => HeaderValue::try_from(format!(
            "{prior}, {}",
            fwd.peer.to_str().unwrap_or_default()
        ))
        .ok(),
        None => Some(fwd.peer.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    headers.insert(X_REQUEST_ID.clone(), fwd.request_id.clone());
    headers.insert(header::HOST, target.host.clone());
    if let Some((name, value)) = &target.api_key {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in fwd.extra {
        headers.append(name, value);
    }
    let span = match parts.extensions.remove::<trace::TraceHeaders>() {
        // Spans are not exported: the hop computed for this request stands in for ours.
        Some(hop) => {
            set_hop_headers(headers, hop);
            tracing::Span::none()
        }
        None => {
            let span = tracing::info_span!(
                "forward",
                otel.name = %format_args!("{} {}", parts.method, target.tag),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = %parts.method,
                backend = %target.tag,
                http.response.status_code = tracing::field::Empty,
            );
            set_trace_headers(headers, &span);
            span
        }
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let bounded = Bounded::new(body, target.max_body, deadline, tripped.clone());
    let upstream = Request::from_parts(parts, http_body_util::BodyExt::boxed(bounded));

    let exchange =
        tokio::time::timeout_at(head_by.min(deadline), pool::send(&target.origin, upstream));
    // Without a span the exchange is not wrapped: every wrapper moves the future once more.
    let result = if span.is_none() {
        exchange.await
    } else {
        exchange.instrument(span.clone()).await
    };
    match &result {
        Ok(Ok(resp)) => {
            span.record("http.response.status_code", resp.status().as_u16());
            if resp.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        _ => {
            span.record("otel.status_code", "ERROR");
        }
    }
    target
        .upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    let resp = match result {
        Err(_) if deadline <= head_by => return Err(ProxyError::RequestTimeout),
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(_)) if tripped.too_large() => return Err(ProxyError::BodyTooLarge(target.max_body)),
        Ok(Err(_)) if tripped.deadline() => return Err(ProxyError::RequestTimeout),
        Ok(Err(e)) => return Err(ProxyError::UpstreamUnavailable(e)),
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some((name, value)) = &target.api_key {
        scrub_secret(&mut parts.headers, name, value);
    }
    // The response body is cut at the same deadline: a backend stalling mid-body ends there.
    let bounded = Bounded::new(body, u64::MAX, deadline, Tripped::default());
    Ok(Response::from_parts(
        parts,
        http_body_util::BodyExt::boxed(bounded),
    ))
}

/// Drops the API key header and any header whose value carries the key, so a backend that
/// reflects request headers cannot leak it to our caller.
fn scrub_secret(headers: &mut HeaderMap, name: &HeaderName, secret: &HeaderValue) {
    headers.remove(name);
    let needle = secret.as_bytes();
    let leaking: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| v.as_bytes().windows(needle.len()).any(|w| w == needle))
        .map(|(k, _)| k.clone())
        .collect();
    for name in leaking {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_listed_headers_go_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn inbound_headers_are_dropped_in_one_pass() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("host", "client.example"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-host", "evil.example"),
            ("x-request-id", "client-id"),
            ("cookie", "session=1"),
            ("x-yataxi-user-id", "spoofed"),
            ("x-partner-user-id", "spoofed"),
            ("x-end-to-end", "kept"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        h.append("x-end-to-end", HeaderValue::from_static("kept too"));
        let strip = StripRules {
            names: vec![header::COOKIE],
            prefixes: vec!["x-yataxi-".into()],
        };
        let extra = [(
            HeaderName::from_static("x-partner-user-id"),
            HeaderValue::from_static("ours"),
        )];
        remove_inbound(&mut h, &strip, &extra);
        assert_eq!(h.keys_len(), 1, "{h:?}");
        assert_eq!(h.get_all("x-end-to-end").iter().count(), 2);
    }

    #[test]
    fn target_uris_keep_the_base_path_and_the_query() {
        let metrics = ProxyMetrics::default();
        let uri = |base: &str, pq: &'static str| {
            let target = Target::new("t", base, 1000, &metrics).unwrap();
            let uri = target.uri(PathAndQuery::from_static(pq)).unwrap();
            (uri.to_string(), target.host.to_str().unwrap().to_owned())
        };
        let host = "b.example:8080".to_owned();
        assert_eq!(
            uri("http://b.example:8080", "/v1/x?y=1"),
            ("/v1/x?y=1".to_owned(), host.clone())
        );
        assert_eq!(
            uri("http://b.example:8080/api/", "/v1/x?y=1"),
            ("/api/v1/x?y=1".to_owned(), host.clone())
        );
        assert_eq!(
            uri("http://b.example:8080/api", "?y=1"),
            ("/api?y=1".to_owned(), host.clone())
        );
        assert_eq!(
            uri("http://b.example:8080", "?y=1"),
            ("/?y=1".to_owned(), host.clone())
        );
        assert_eq!(uri("https://b.example:8080", "/"), ("/".to_owned(), host));
        assert!(Target::new("t", "/relative", 1000, &metrics).is_err());
    }

    #[test]
    fn reflected_keys_are_scrubbed() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("sekret-key"));
        h.insert("x-echo", HeaderValue::from_static("got sekret-key here"));
        h.insert("x-fine", HeaderValue::from_static("ok"));
        scrub_secret(
            &mut h,
            &HeaderName::from_static("x-api-key"),
            &HeaderValue::from_static("sekret-key"),
        );
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-fine"));
    }
}
