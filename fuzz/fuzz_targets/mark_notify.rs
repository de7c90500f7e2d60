//! mark-notify's body and caller headers (client, driver or anonymous identity): a 4xx naming
//! the field or header, or a record. Input: header lines, an empty line, the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let (headers, body) = common::split_headers(data);
    common::check(switchyard_ingress::fuzzing::mark_notify(&headers, body));
});
