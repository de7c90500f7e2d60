//! Shared checks of the ingress targets: a refusal is a 4xx that names what is wrong; an
//! accepted body becomes a keyed envelope that survives the wire.

use events::Envelope;
use switchyard_ingress::fuzzing::Accepted;

pub fn check(outcome: Accepted) {
    match outcome {
        Ok((key, env)) => {
            assert!(!key.is_empty(), "empty record key");
            assert!(!env.event_type.is_empty());
            assert!(!env.idempotency_key.is_empty());
            let back = Envelope::from_bytes(&env.to_bytes()).expect("envelope decodes");
            assert_eq!(back, env);
        }
        Err(refused) => {
            assert!(
                (400..500).contains(&refused.status),
                "status {} for {refused:?}",
                refused.status
            );
            assert!(!refused.message.is_empty());
            assert!(refused.fields.iter().all(|f| !f.is_empty()), "{refused:?}");
        }
    }
}

/// `name: value` lines up to an empty line, then the body. Lines that are not a valid header
/// are skipped (hyper would have refused them before the handler).
#[allow(dead_code)]
pub fn split_headers(data: &[u8]) -> (http::HeaderMap, &[u8]) {
    let mut headers = http::HeaderMap::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    (headers, rest)
}
