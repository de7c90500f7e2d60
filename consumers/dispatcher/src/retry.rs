//! Retry bookkeeping carried in record headers of parked records, and the backoff schedule.

use std::time::Duration;

use rand::Rng;
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::config::RetryPolicy;

pub(crate) const H_EVENT_TYPE: &str = events::HEADER_EVENT_TYPE;
pub(crate) const H_TAG: &str = events::header::TAG;
pub(crate) const H_ATTEMPTS: &str = events::header::ATTEMPTS;
pub(crate) const H_NOT_BEFORE: &str = events::header::NOT_BEFORE_MS;
pub(crate) const H_TIER: &str = events::header::TIER;
pub(crate) const H_ERROR: &str = events::header::LAST_ERROR;
pub(crate) const H_ORIGIN: &str = events::header::ORIGIN;
pub(crate) const H_SUBSCRIBER: &str = events::header::SUBSCRIBER;
pub(crate) const H_ORDERED: &str = events::header::ORDERED;

/// What a record's headers say about its earlier delivery attempts. `pub` for the fuzz
/// targets only (`fuzzing::RetryView`); the module stays private.
#[cfg_attr(not(fuzzing), allow(unreachable_pub))]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryState {
    pub event_type: Option<String>,
    /// A mark's tag (`sy-tag`), for filtering without decoding; not retry bookkeeping.
    pub tag: Option<String>,
    pub attempts: u32,
    pub not_before_ms: Option<i64>,
    pub tier: Option<usize>,
    pub origin: Option<String>,
    /// Parked by an ordered subscriber: attempted only after the earlier records of its key.
    pub ordered: bool,
}

impl RetryState {
    pub(crate) fn from_headers<H: Headers>(headers: Option<&H>) -> Self {
        let mut state = Self::default();
        let Some(headers) = headers else { return state };
        for h in headers.iter() {
            let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            match h.key {
                H_EVENT_TYPE => state.event_type = Some(v.to_owned()),
                H_TAG => state.tag = Some(v.to_owned()),
                H_ATTEMPTS => state.attempts = v.parse().unwrap_or(0),
                H_NOT_BEFORE => state.not_before_ms = v.parse().ok(),
                H_TIER => state.tier = v.parse().ok(),
                H_ORIGIN => state.origin = Some(v.to_owned()),
                H_ORDERED => state.ordered = v == "key",
                _ => {}
            }
        }
        state
    }
}

/// Headers of a record parked in a retry tier or the dead-letter topic. `pub` for the fuzz
/// targets only (`fuzzing::Park`); the module stays private.
#[cfg_attr(not(fuzzing), allow(unreachable_pub))]
#[derive(Debug)]
pub struct Parked<'a> {
    pub subscriber: &'a str,
    pub event_type: Option<&'a str>,
    pub attempts: u32,
    pub tier: Option<usize>,
    pub not_before_ms: Option<i64>,
    pub error: &'a str,
    pub origin: &'a str,
    /// Parked in ordered mode (`sy-ordered: key`).
    pub ordered: bool,
}

impl Parked<'_> {
    pub(crate) fn headers(&self) -> OwnedHeaders {
        let attempts = self.attempts.to_string();
        let tier = self.tier.map(|t| t.to_string());
        let not_before = self.not_before_ms.map(|t| t.to_string());
        let mut h = OwnedHeaders::new()
            .insert(Header {
                key: H_SUBSCRIBER,
                value: Some(self.subscriber),
            })
            .insert(Header {
                key: H_ATTEMPTS,
                value: Some(&attempts),
            })
            .insert(Header {
                key: H_ERROR,
                value: Some(truncate(self.error, 512)),
            })
            .insert(Header {
                key: H_ORIGIN,
                value: Some(self.origin),
            });
        if let Some(et) = self.event_type {
            h = h.insert(Header {
                key: H_EVENT_TYPE,
                value: Some(et),
            });
        }
        if let Some(t) = &tier {
            h = h.insert(Header {
                key: H_TIER,
                value: Some(t),
            });
        }
        if let Some(nb) = &not_before {
            h = h.insert(Header {
                key: H_NOT_BEFORE,
                value: Some(nb),
            });
        }
        if self.ordered {
            h = h.insert(Header {
                key: H_ORDERED,
                value: Some("key"),
            });
        }
        h
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Exponential backoff with full jitter for in-process attempt `n` (0-based).
pub(crate) fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let cap = policy.max_backoff_ms.max(1);
    let exp = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << n.min(20))
        .min(cap);
    Duration::from_millis(rand::thread_rng().gen_range(exp / 2..=exp.max(1)))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedHeaders;

    use super::*;

    #[test]
    fn parked_headers_round_trip() {
        let parked = Parked {
            subscriber: "s",
            event_type: Some("uid.bind"),
            attempts: 4,
            tier: Some(1),
            not_before_ms: Some(1234),
            error: "http status 500",
            origin: "t/0/5",
            ordered: true,
        };
        let state = RetryState::from_headers::<OwnedHeaders>(Some(&parked.headers()));
        assert_eq!(
            state,
            RetryState {
                event_type: Some("uid.bind".into()),
                tag: None,
                attempts: 4,
                not_before_ms: Some(1234),
                tier: Some(1),
                origin: Some("t/0/5".into()),
                ordered: true,
            }
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..Default::default()
        };
        for _ in 0..100 {
            let b0 = backoff(&p, 0).as_millis();
            assert!((50..=100).contains(&b0), "{b0}");
            let b9 = backoff(&p, 9).as_millis();
            assert!((500..=1000).contains(&b9), "{b9}");
        }
    }
}
