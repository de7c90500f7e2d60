//! The ops listener: `GET /_proxy/ping` and `GET /_proxy/metrics`, nothing else.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::error::ProxyError;
use crate::identity::IdentityExchange;
use crate::metrics::ProxyMetrics;

/// The ops listener: probes and scrapes only. It forwards nothing, so the `Host` allow-list
/// (a guard against DNS rebinding onto the forwarding port) does not apply; Prometheus
/// scrapes by pod address.
pub(crate) async fn serve(
    identities: &[Arc<IdentityExchange>],
    metrics: &ProxyMetrics,
    req: &Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if req.method() != Method::GET {
        return Err(ProxyError::MethodNotAllowed(req.method().clone()));
    }
    // Nothing here reads a body: refuse one rather than leave it on the connection.
    let declared = req.headers().get(CONTENT_LENGTH).map(|v| v.as_bytes());
    if req.headers().contains_key(TRANSFER_ENCODING) || declared.is_some_and(|v| v != b"0") {
        return Err(ProxyError::BodyTooLarge(0));
    }
    match req.uri().path() {
        "/_proxy/ping" => Ok(plain(StatusCode::OK, "text/plain", "pong".into())),
        "/_proxy/metrics" => {
            for identity in identities {
                identity.update_size_metric().await;
            }
            let text = switchyard_runtime::metrics::render(&metrics.registry);
            Ok(plain(
                StatusCode::OK,
                switchyard_runtime::metrics::CONTENT_TYPE,
                text,
            ))
        }
        _ => Err(ProxyError::NotFound),
    }
}

fn plain(status: StatusCode, content_type: &'static str, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
