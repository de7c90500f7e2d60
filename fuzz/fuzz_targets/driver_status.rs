//! The `driver_status` body check the ingress runs before publishing: a 4xx naming the field or a
//! record, never a panic or a 5xx.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check(switchyard_ingress::fuzzing::driver_status(data));
});
