//! Identity exchange: our personal phone id becomes the partner's user id through `personal`
//! (phone number) and the partner's lookup, cached in a bounded LRU cache with a TTL. The phone number
//! lives only on the stack of one lookup: never cached, never logged.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::{self, post_json, LookupError};
use crate::config::{IdentityConfig, InvalidConfig};
use crate::error::ProxyError;
use crate::metrics::{IdentityLabels, LookupLabels, ProxyMetrics};

/// One configured exchange with its own cache.
pub(crate) struct IdentityExchange {
    name: String,
    personal_url: String,
    partner_url: String,
    partner_api_key: Option<(HeaderName, HeaderValue)>,
    pub phone_id_header: HeaderName,
    pub user_id_header: HeaderName,
    timeout: Duration,
    cache: Cache<String, HeaderValue>,
    /// This exchange's series of the hit and miss counters, resolved once.
    hits: Counter,
    misses: Counter,
    metrics: Arc<ProxyMetrics>,
}

#[derive(Serialize)]
struct PersonalRequest<'a> {
    id: &'a str,
}

#[derive(Deserialize)]
struct PersonalResponse {
    value: String,
}

#[derive(Serialize)]
struct PartnerRequest<'a> {
    phone: &'a str,
}

#[derive(Deserialize)]
struct PartnerResponse {
    user_id: String,
}

impl IdentityExchange {
    pub(crate) fn new(
        name: &str,
        cfg: &IdentityConfig,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Self, InvalidConfig> {
        let key = |field: &str| format!("identity.{name}.{field}");
        let header = |field: &str, value: &str| {
            HeaderName::try_from(value).map_err(|e| InvalidConfig::key(key(field), e))
        };
        let partner_api_key = cfg
            .partner_api_key
            .as_ref()
            .map(|k| crate::forward::api_key_header(&key("partner_api_key"), k))
            .transpose()?;
        let cache = lru_cache(
            name,
            cfg.cache_capacity,
            Duration::from_millis(cfg.cache_ttl_ms),
        );
        let labels = IdentityLabels {
            identity: name.to_owned(),
        };
        let hits = metrics.cache_hits.get_or_create(&labels).clone();
        let misses = metrics.cache_misses.get_or_create(&labels).clone();
        Ok(Self {
            hits,
            misses,
            name: name.to_owned(),
            personal_url: cfg.personal_url.clone(),
            partner_url: cfg.partner_url.clone(),
            partner_api_key,
            phone_id_header: header("phone_id_header", &cfg.phone_id_header)?,
            user_id_header: header("user_id_header", &cfg.user_id_header)?,
            timeout: Duration::from_millis(cfg.timeout_ms),
            cache,
            metrics,
        })
    }

    /// The partner user id for `phone_id`, from the cache or from one upstream lookup shared
    /// by every concurrent caller asking for the same id. Failures are not cached. A lookup
    /// still running at the request's `deadline` is dropped (504 `request_timeout`); a caller
    /// waiting for the same id then runs the lookup itself (moka's `try_get_with`).
    pub(crate) async fn partner_user_id(
        &self,
        phone_id: &str,
        deadline: Instant,
    ) -> Result<HeaderValue, ProxyError> {
        if !valid_phone_id(phone_id) {
            return Err(ProxyError::InvalidHeader(self.phone_id_header.to_string()));
        }
        if let Some(hit) = self.cache.get(phone_id).await {
            self.hits.inc();
            return Ok(hit);
        }
        self.misses.inc();
        // Boxed: the lookup's state is most of this future's size, and a hit should not carry
        // (and move) it through every layer of the request.
        Box::pin(tokio::time::timeout_at(
            deadline,
            self.cache
                .try_get_with_by_ref(phone_id, self.lookup(phone_id)),
        ))
        .await
        .map_err(|_| ProxyError::RequestTimeout)?
        .map_err(|e| match &*e {
            LookupError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            } => ProxyError::IdentityNotFound,
            LookupError::Unreachable { .. } | LookupError::Timeout { .. } => {
                ProxyError::IdentityUnavailable(Box::new(ArcError(e)))
            }
            LookupError::Status { status, .. } if status.is_server_error() => {
                ProxyError::IdentityUnavailable(Box::new(ArcError(e)))
            }
            _ => ProxyError::IdentityBadGateway(Box::new(ArcError(e))),
        })
    }

    async fn lookup(&self, phone_id: &str) -> Result<HeaderValue, LookupError> {
        let count = |service| {
            let labels = LookupLabels {
                identity: self.name.clone(),
                service,
            };
            self.metrics.lookups.get_or_create(&labels).inc();
        };
        count("personal");
        let personal: PersonalResponse = post_json(
            &client::local(),
            "personal",
            &self.personal_url,
            None,
            &PersonalRequest { id: phone_id },
            self.timeout,
        )
        .await?;
        count("partner");
        let partner: PartnerResponse = post_json(
            &client::local(),
            "partner lookup",
            &self.partner_url,
            self.partner_api_key.as_ref(),
            &PartnerRequest {
                phone: &personal.value,
            },
            self.timeout,
        )
        .await?;
        drop(personal);
        let user_id = partner.user_id;
        if user_id.is_empty() || user_id.len() > 256 {
            return Err(LookupError::BadBody {
                service: "partner lookup",
            });
        }
        HeaderValue::from_str(&user_id).map_err(|_| LookupError::BadBody {
            service: "partner lookup",
        })
    }

    /// Refreshes the size gauge; called when metrics are scraped.
    pub(crate) async fn update_size_metric(&self) {
        self.cache.run_pending_tasks().await;
        let labels = IdentityLabels {
            identity: self.name.clone(),
        };
        let size = i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX);
        self.metrics.cache_size.get_or_create(&labels).set(size);
    }
}

/// The phone-id cache: at most `capacity` entries, each trusted for `ttl`. Plain LRU, not
/// moka's default TinyLFU: TinyLFU may refuse to admit a new id while the cache is full, so a
/// user whose first ride comes after a burst of others would be looked up on every request;
/// LRU always admits and drops the mapping used least recently.
fn lru_cache(name: &str, capacity: u64, ttl: Duration) -> Cache<String, HeaderValue> {
    Cache::builder()
        .name(name)
        .max_capacity(capacity)
        .eviction_policy(EvictionPolicy::lru())
        .time_to_live(ttl)
        .build()
}

/// Phone ids are opaque ids (hex or uuid-like); anything else is refused before any lookup.
fn valid_phone_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Shares one lookup failure between every coalesced caller.
#[derive(Debug)]
struct ArcError(Arc<LookupError>);

impl std::fmt::Display for ArcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_least_recently_used_mapping_goes_first() {
        let cache = lru_cache("t", 3, Duration::from_secs(600));
        let v = |s: &'static str| HeaderValue::from_static(s);
        for id in ["a", "b", "c"] {
            cache.insert(id.to_owned(), v(id)).await;
        }
        cache.run_pending_tasks().await;
        // `a` is the oldest insert but was just read: `b` is now the least recently used.
        assert_eq!(cache.get("a").await, Some(v("a")));
        cache.run_pending_tasks().await;
        cache.insert("d".to_owned(), v("d")).await;
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 3);
        assert_eq!(cache.get("b").await, None, "b should have been evicted");
        for id in ["a", "c", "d"] {
            assert_eq!(cache.get(id).await, Some(v(id)), "{id} was evicted");
        }
        cache.run_pending_tasks().await;
        // Reads of c, d (and a before them) leave a the least recent now.
        cache.insert("e".to_owned(), v("e")).await;
        cache.run_pending_tasks().await;
        assert_eq!(cache.get("a").await, None, "a should have been evicted");
        assert_eq!(cache.entry_count(), 3);
    }

    #[test]
    fn phone_ids_are_opaque_ids() {
        assert!(valid_phone_id("0123abcdef-_"));
        assert!(!valid_phone_id(""));
        assert!(!valid_phone_id("+79001234567"));
        assert!(!valid_phone_id("a/b"));
        assert!(!valid_phone_id(&"a".repeat(129)));
    }
}
