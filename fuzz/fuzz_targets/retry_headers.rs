//! The retry-header codec: any headers a record carries are read without a panic, and what a
//! park writes reads back as written (the last error cut at a character boundary, <= 512 bytes).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_dispatcher::fuzzing::{park_and_read, read, Park};

#[derive(Debug, Arbitrary)]
struct Input {
    headers: Vec<(String, Option<Vec<u8>>)>,
    subscriber: String,
    event_type: Option<String>,
    attempts: u32,
    tier: Option<usize>,
    not_before_ms: Option<i64>,
    error: String,
    origin: String,
    ordered: bool,
}

fuzz_target!(|input: Input| {
    let _ = read(&input.headers);
    let park = Park {
        subscriber: &input.subscriber,
        event_type: input.event_type.as_deref(),
        attempts: input.attempts,
        tier: input.tier,
        not_before_ms: input.not_before_ms,
        error: &input.error,
        origin: &input.origin,
        ordered: input.ordered,
    };
    let (view, error) = park_and_read(&park);
    assert_eq!(view.attempts, input.attempts);
    assert_eq!(view.tier, input.tier);
    assert_eq!(view.not_before_ms, input.not_before_ms);
    assert_eq!(view.event_type, input.event_type);
    assert_eq!(view.origin.as_deref(), Some(input.origin.as_str()));
    assert_eq!(view.ordered, input.ordered);
    let error = String::from_utf8(error.expect("a park names its error")).expect("UTF-8 error");
    assert!(error.len() <= 512 && input.error.starts_with(&error));
    assert!(error.len() == input.error.len() || input.error.len() > 512);
});
