//! Delivery over HTTP: one POST per attempt, with the idempotency token and, when a secret is
//! configured, Standard Webhooks signature headers.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use crate::config::HttpTarget;
use crate::render::Rendered;
use crate::sign::SigningKey;

pub const IDEMPOTENCY_HEADER: &str = "x-idempotency-token";

/// What one attempt achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Accepted; `status` is the HTTP status (none for topic targets).
    Delivered { status: Option<u16> },
    Failed {
        error: String,
        retry_after: Option<Duration>,
        /// The HTTP status, when the subscriber answered at all.
        status: Option<u16>,
        /// The start of the subscriber's answer, for the attempt log.
        excerpt: Option<String>,
    },
}

/// Characters of a failed response kept for the attempt log.
const EXCERPT_CHARS: usize = 256;

/// The first `max` characters of `body` as text, on a character boundary.
pub fn excerpt(body: &[u8], max: usize) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(max * 4)]);
    Some(text.chars().take(max).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum HttpTargetError {
    #[error("header {0} is not a valid header name or value")]
    Header(String),
    #[error("building the http client")]
    Client(#[source] reqwest::Error),
}

#[derive(Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    key: Option<SigningKey>,
}

impl HttpSink {
    pub fn new(target: &HttpTarget, concurrency: usize) -> Result<Self, HttpTargetError> {
        let url =
            reqwest::Url::parse(&target.url).map_err(|_| HttpTargetError::Header("url".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &target.headers {
            let name =
                HeaderName::try_from(k.as_str()).map_err(|_| HttpTargetError::Header(k.clone()))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| HttpTargetError::Header(k.clone()))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(target.timeout_ms))
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()
            .map_err(HttpTargetError::Client)?;
        let key = target.secret.as_deref().map(SigningKey::from_secret);
        Ok(Self {
            client,
            url,
            headers,
            key,
        })
    }

    pub async fn attempt(&self, event_id: &str, rendered: &Rendered) -> Attempt {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(IDEMPOTENCY_HEADER, &rendered.idempotency_key);
        if let Some(tp) = &rendered.traceparent {
            req = req.header(switchyard_runtime::trace::HEADER, tp);
        }
        if let Some(key) = &self.key {
            let ts = chrono::Utc::now().timestamp();
            req = req
                .header("webhook-id", event_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", key.sign(event_id, ts, &rendered.body));
        }
        match req.body(rendered.body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => {
                // Drain so the connection goes back to the pool.
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                Attempt::Delivered {
                    status: Some(status),
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let retry_after = match status {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                    _ => None,
                };
                let body = resp.bytes().await.unwrap_or_default();
                Attempt::Failed {
                    error: format!("http status {}", status.as_u16()),
                    retry_after,
                    status: Some(status.as_u16()),
                    excerpt: excerpt(&body, EXCERPT_CHARS),
                }
            }
            Err(e) if e.is_timeout() => Attempt::Failed {
                error: "timeout".into(),
                retry_after: None,
                status: None,
                excerpt: None,
            },
            Err(e) => Attempt::Failed {
                error: format!("request failed: {e}"),
                retry_after: None,
                status: None,
                excerpt: None,
            },
        }
    }
}
