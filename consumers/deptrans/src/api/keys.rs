//! The API keys of internal clients (`X-API-Key`), checked by every `/internal/` endpoint.
//! A leaf: it imports nothing else from `api` but the error type.

use std::sync::Arc;

use axum::http::HeaderMap;

use super::error::ApiError;

/// Header carrying an internal client's key.
pub(crate) const API_KEY_HEADER: &str = "x-api-key";

/// Keys of the configured internal clients; never printed.
#[derive(Clone)]
pub(crate) struct ApiKeys(Arc<Vec<String>>);

impl ApiKeys {
    pub(crate) fn new(keys: Vec<String>) -> Self {
        Self(Arc::new(keys))
    }

    /// `Ok` when `headers` carry one of the keys.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let key = headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        // Compare every key fully so timing does not reveal a prefix.
        let mut ok = false;
        for k in self.0.iter() {
            ok |= k.len() == key.len()
                && k.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0;
        }
        if ok {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
