//! `POST /v1/events/{type}` against the shipped registry and JSON Schemas. Input: the path's
//! event type on the first line, header lines, an empty line, the body.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use switchyard_ingress::domain_events::Registry;

mod common;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/events.toml");
    Registry::load(Path::new(file)).expect("the shipped registry loads")
});

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let Ok(event_type) = std::str::from_utf8(first) else {
        return;
    };
    let (headers, body) = common::split_headers(rest);
    common::check(switchyard_ingress::fuzzing::domain_event(
        &REGISTRY, event_type, &headers, body,
    ));
});
