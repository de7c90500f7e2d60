//! Delivery over HTTP: one POST per attempt, with the idempotency token and, when a secret is
//! configured, Standard Webhooks signature headers. A careful client: redirects are never
//! followed (a 3xx is a failed attempt: following one would turn the POST into a GET that
//! counts as delivered), response bodies are read up to a bound, `Retry-After` is understood
//! as seconds or an HTTP date, and connect and total times are bounded.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use crate::config::{HttpTarget, WebhookClient};
use crate::render::Rendered;
use crate::sign::SigningKey;
use crate::target_guard::{Guard, GuardedResolver};

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
    /// Every signing key (several while a secret rotates); empty: unsigned.
    keys: Vec<SigningKey>,
    max_response_bytes: usize,
}

impl HttpSink {
    /// A sink with the default `[webhooks]` client settings.
    pub fn new(target: &HttpTarget, concurrency: usize) -> Result<Self, HttpTargetError> {
        Self::with_client(target, concurrency, &WebhookClient::default())
    }

    pub fn with_client(
        target: &HttpTarget,
        concurrency: usize,
        client: &WebhookClient,
    ) -> Result<Self, HttpTargetError> {
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
        let total = Duration::from_millis(target.timeout_ms);
        let max_response_bytes = client.max_response_bytes;
        let client = reqwest::Client::builder()
            .timeout(total)
            .connect_timeout(Duration::from_millis(client.connect_timeout_ms).min(total))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(Arc::new(Guard::new(
                &client.allow_networks,
                client.public_only,
            )))))
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()
            .map_err(HttpTargetError::Client)?;
        let keys = target
            .signing_secrets()
            .map(SigningKey::from_secret)
            .collect();
        Ok(Self {
            client,
            url,
            headers,
            keys,
            max_response_bytes,
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
        if !self.keys.is_empty() {
            let ts = chrono::Utc::now().timestamp();
            req = req
                .header("webhook-id", event_id)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    crate::sign::sign_all(&self.keys, event_id, ts, &rendered.body),
                );
        }
        match req.body(rendered.body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => {
                // Read (bounded) so the connection can go back to the pool; the subscriber has
                // accepted the record whatever happens to the rest of its answer.
                let status = resp.status().as_u16();
                let _ = read_bounded(resp, self.max_response_bytes).await;
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
                        .and_then(|v| parse_retry_after(v, chrono::Utc::now())),
                    _ => None,
                };
                let error = if status.is_redirection() {
                    format!("http status {} (redirect not followed)", status.as_u16())
                } else {
                    format!("http status {}", status.as_u16())
                };
                let body = read_bounded(resp, self.max_response_bytes).await;
                Attempt::Failed {
                    error,
                    retry_after,
                    status: Some(status.as_u16()),
                    excerpt: excerpt(&body, EXCERPT_CHARS),
                }
            }
            Err(e) if e.is_connect() && e.is_timeout() => Attempt::Failed {
                error: "connect timeout".into(),
                retry_after: None,
                status: None,
                excerpt: None,
            },
            Err(e) if e.is_timeout() => Attempt::Failed {
                error: "timeout".into(),
                retry_after: None,
                status: None,
                excerpt: None,
            },
            Err(e) => Attempt::Failed {
                error: format!("request failed: {}", chain(&e)),
                retry_after: None,
                status: None,
                excerpt: None,
            },
        }
    }
}

/// `e` and its causes, `: `-separated (reqwest's own message omits the cause, such as a
/// refused address or a connection reset).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// At most `max` bytes of `resp`'s body; the rest is left unread (the connection is dropped
/// rather than drained). A body that fails half-way yields what arrived.
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    if resp.content_length().is_some_and(|n| n > max as u64) {
        // Known too long: read only the start, for the excerpt.
        tracing::debug!(max, "response body longer than the bound, truncated");
    }
    while body.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 10.2.3: IMF-fixdate, and the
/// obsolete RFC 850 and asctime forms recipients must accept). A date in the past means now.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(value, f).ok())
                .map(|t| t.and_utc())
        })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 28, 0)
            .unwrap()
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_dates() {
        let d = Some(Duration::from_secs(90));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now()), d);
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:30 GMT", now()),
            d
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:29:30 2015", now()), d);
    }

    #[test]
    fn retry_after_in_the_past_is_now_and_junk_is_ignored() {
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }
}
