//! The proxy's request-smuggling sniffer reads a connection's bytes as they arrive: however the
//! stream is cut into reads, it flags the same connections (a split must never hide a request
//! carrying both Content-Length and Transfer-Encoding).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_proxy::fuzzing::framing_flagged;

#[derive(Debug, Arbitrary)]
struct Input {
    stream: Vec<u8>,
    cuts: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let whole = framing_flagged([input.stream.as_slice()]);
    let mut chunks = Vec::new();
    let mut rest = input.stream.as_slice();
    for cut in input.cuts {
        if rest.is_empty() {
            break;
        }
        let at = usize::from(cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    assert_eq!(
        framing_flagged(chunks),
        whole,
        "a split changed the verdict"
    );
    assert_eq!(
        framing_flagged(input.stream.chunks(1)),
        whole,
        "byte-at-a-time reads changed the verdict"
    );
});
