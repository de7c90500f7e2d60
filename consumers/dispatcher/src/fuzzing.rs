//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing`: the
//! retry-header codec, read from any headers a record may carry and written for a park.

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// A park's inputs: the headers a park writes.
pub use crate::retry::Parked as Park;
/// What the dispatcher reads from a record's headers.
pub use crate::retry::RetryState as RetryView;

/// Reads `headers` (in order, duplicates allowed) as a consumed record's.
pub fn read(headers: &[(String, Option<Vec<u8>>)]) -> RetryView {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    RetryView::from_headers(Some(&owned))
}

/// Writes the headers of a park and reads them back: what the next tier sees, and the raw
/// last-error header value.
pub fn park_and_read(p: &Park<'_>) -> (RetryView, Option<Vec<u8>>) {
    let headers = p.headers();
    let error = headers
        .iter()
        .find(|h| h.key == events::header::LAST_ERROR)
        .and_then(|h| h.value.map(<[u8]>::to_vec));
    (RetryView::from_headers(Some(&headers)), error)
}
