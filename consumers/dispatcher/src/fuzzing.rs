//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing`: the
//! retry-header codec, read from any headers a record may carry and written for a park.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::retry::{Parked, RetryState};

/// What the dispatcher reads from a record's headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryView {
    pub event_type: Option<String>,
    pub tag: Option<String>,
    pub attempts: u32,
    pub not_before_ms: Option<i64>,
    pub tier: Option<usize>,
    pub origin: Option<String>,
    pub ordered: bool,
}

impl From<RetryState> for RetryView {
    fn from(s: RetryState) -> Self {
        Self {
            event_type: s.event_type,
            tag: s.tag,
            attempts: s.attempts,
            not_before_ms: s.not_before_ms,
            tier: s.tier,
            origin: s.origin,
            ordered: s.ordered,
        }
    }
}

/// Reads `headers` (in order, duplicates allowed) as a consumed record's.
pub fn read(headers: &[(String, Option<Vec<u8>>)]) -> RetryView {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    RetryState::from_headers(Some(&owned)).into()
}

/// A park's inputs.
#[derive(Debug)]
pub struct Park<'a> {
    pub subscriber: &'a str,
    pub event_type: Option<&'a str>,
    pub attempts: u32,
    pub tier: Option<usize>,
    pub not_before_ms: Option<i64>,
    pub error: &'a str,
    pub origin: &'a str,
    pub ordered: bool,
}

/// Writes the headers of a park and reads them back: what the next tier sees, and the raw
/// last-error header value.
pub fn park_and_read(p: &Park<'_>) -> (RetryView, Option<Vec<u8>>) {
    let headers = Parked {
        subscriber: p.subscriber,
        event_type: p.event_type,
        attempts: p.attempts,
        tier: p.tier,
        not_before_ms: p.not_before_ms,
        error: p.error,
        origin: p.origin,
        ordered: p.ordered,
    }
    .headers();
    let error = headers
        .iter()
        .find(|h| h.key == events::header::LAST_ERROR)
        .and_then(|h| h.value.map(<[u8]>::to_vec));
    (RetryState::from_headers(Some(&headers)).into(), error)
}
