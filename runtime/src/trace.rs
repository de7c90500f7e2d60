//! W3C trace context (`traceparent`) carried from the ingress request, through the Kafka record,
//! to every outgoing delivery, so one trace id links all hops.

use std::fmt;

/// A parsed `traceparent`: version 00, trace id, parent (span) id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

pub const HEADER: &str = "traceparent";

impl TraceParent {
    /// A new trace, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// The next hop of the same trace: same trace id, a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else (or all-zero ids) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if v != "00" || t.len() != 32 || p.len() != 16 || f.len() != 2 || parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(t, 16).ok().filter(|x| *x != 0)?;
        let span_id = u64::from_str_radix(p, 16).ok().filter(|x| *x != 0)?;
        let flags = u8::from_str_radix(f, 16).ok()?;
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let x = rand_u64();
        if x != 0 {
            return x;
        }
    }
}

fn nonzero_u128() -> u128 {
    (u128::from(nonzero_u64()) << 64) | u128::from(rand_u64())
}

fn rand_u64() -> u64 {
    // UUIDv4 bytes come from the OS-seeded thread RNG; avoid another RNG dependency here.
    let b = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[9], b[10]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_and_derives_children() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.to_string(), s);
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceParent::parse("garbage").is_none());
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }
}
