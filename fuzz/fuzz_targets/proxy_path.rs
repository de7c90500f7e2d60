//! The proxy's path guard: a path it lets through has no dot segment (also as `..;`), no
//! backslash or control character once decoded, and as many segments decoded as raw (no
//! encoded slash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_proxy::fuzzing::check_path;

fuzz_target!(|raw: &str| {
    if let Ok(decoded) = check_path(raw) {
        assert!(decoded.starts_with('/'));
        assert!(!decoded.contains('\\') && !decoded.chars().any(char::is_control));
        for segment in decoded.split('/') {
            let name = segment.split(';').next().unwrap_or_default();
            assert!(name != "." && name != "..", "{raw:?} -> {decoded:?}");
        }
        assert_eq!(
            raw.split('/').count(),
            decoded.split('/').count(),
            "{raw:?}"
        );
    }
});
