//! The envelope decoder every consumer runs on every record: any bytes decode or fail cleanly,
//! and what decodes re-encodes to an envelope that decodes the same.
#![no_main]

use events::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_bytes(data) {
        let again = Envelope::from_bytes(&env.to_bytes()).expect("re-encoded envelope decodes");
        assert_eq!(again, env);
        let _ = env.occurred_at();
    }
});
