//! The one mapping from proxy errors to HTTP: every error is a JSON `{code, message}`; 5xx
//! details are logged here and never sent to the client.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{full, BoxError, ProxyBody};

/// Error body of every response the proxy itself produces.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    /// Machine-readable code, e.g. `missing_tag`, `upstream_timeout`.
    pub code: &'a str,
    /// Human-readable explanation naming the header or path at fault.
    pub message: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no such route on this listener")]
    NotFound,
    #[error("header x-api-tag is required")]
    MissingTag,
    #[error("no backend for this x-api-tag")]
    UnknownTag,
    #[error("path is not allowed for this backend")]
    PathNotAllowed,
    #[error("path refused: {0}")]
    BadPath(&'static str),
    #[error("request target must be origin-form (a path), not an absolute URI")]
    AbsoluteForm,
    #[error("header host does not name this proxy")]
    ForeignHost,
    #[error("method {0} is not allowed")]
    MethodNotAllowed(http::Method),
    #[error("request framing refused: {0}")]
    AmbiguousFraming(&'static str),
    #[error("header {0} is required")]
    MissingHeader(String),
    #[error("header {0} is malformed")]
    InvalidHeader(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this caller may not use this x-api-tag")]
    Forbidden,
    #[error("too many callback tokens in flight; retry with a new token")]
    ReplayCacheFull,
    #[error("cannot check the token for a replay now; retry")]
    ReplayStoreUnavailable(#[source] BoxError),
    #[error("no partner user for this phone id")]
    IdentityNotFound,
    #[error("identity lookup unavailable")]
    IdentityUnavailable(#[source] BoxError),
    #[error("identity lookup answered badly")]
    IdentityBadGateway(#[source] BoxError),
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    #[error("request did not complete within the proxy's request timeout")]
    RequestTimeout,
    #[error("backend did not answer in time")]
    UpstreamTimeout,
    #[error("backend unreachable")]
    UpstreamUnavailable(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MissingTag
            | Self::BadPath(_)
            | Self::AbsoluteForm
            | Self::AmbiguousFraming(_)
            | Self::MissingHeader(_)
            | Self::InvalidHeader(_) => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::UnknownTag | Self::PathNotAllowed | Self::IdentityNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::IdentityUnavailable(_)
            | Self::ReplayCacheFull
            | Self::ReplayStoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::IdentityBadGateway(_) | Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout | Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MissingTag => "missing_tag",
            Self::UnknownTag => "unknown_tag",
            Self::PathNotAllowed => "path_not_allowed",
            Self::BadPath(_) => "bad_path",
            Self::AbsoluteForm => "absolute_form_refused",
            Self::ForeignHost => "foreign_host",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::AmbiguousFraming(_) => "ambiguous_framing",
            Self::MissingHeader(_) => "missing_header",
            Self::InvalidHeader(_) => "invalid_header",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::ReplayStoreUnavailable(_) => "replay_store_unavailable",
            Self::IdentityNotFound => "identity_not_found",
            Self::IdentityUnavailable(_) => "identity_unavailable",
            Self::IdentityBadGateway(_) => "identity_bad_gateway",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::UpstreamUnavailable(_) => "upstream_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The response for this error. Framing errors close the connection so nothing the
    /// client sent after the refused request is ever read as a new request.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        if status.is_server_error() {
            let source = std::error::Error::source(&self).map(ToString::to_string);
            tracing::warn!(code = self.code(), error = %self, source = source.as_deref(), "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        let mut resp = json_error(status, self.code(), &self.to_string());
        match self {
            Self::AmbiguousFraming(_) | Self::AbsoluteForm | Self::MethodNotAllowed(_) => {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Self::IdentityUnavailable(_) => {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// A JSON `{code, message}` response.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&ErrorBody { code, message }).unwrap_or_default();
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn five_hundreds_stay_generic() {
        let err = ProxyError::UpstreamUnavailable("connect to 10.0.0.1:443 refused".into());
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "upstream_unavailable");
        assert!(!v["message"].as_str().unwrap().contains("10.0.0.1"));
    }
}
