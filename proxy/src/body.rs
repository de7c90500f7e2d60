//! The one body type requests and responses travel in: streamed bodies are boxed, never buffered.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Boxed error of any body the proxy passes along.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of every request the proxy sends and every response it returns.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body held in memory (errors, lookups, admin endpoints).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body from hyper, passed through frame by frame.
pub fn stream(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}
