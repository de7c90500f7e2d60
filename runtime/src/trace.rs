//! W3C trace context (`traceparent`, `tracestate`) at process boundaries: the context of a
//! `tracing` span (an OpenTelemetry span, see [`crate::telemetry`]) written into HTTP headers,
//! Kafka record headers and the envelope, and read back as the parent of the next span. So one
//! trace links the ingress request, the record, the consumer and every outgoing request.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const HEADER: &str = "traceparent";
pub const STATE_HEADER: &str = "tracestate";

/// The W3C headers that make a span the parent of the next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    /// Vendor state carried along unchanged; `None` when there is none.
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// `(name, value)` pairs to set on an outgoing request or record.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((HEADER, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|s| (STATE_HEADER, s)))
    }
}

/// The context of `span` as W3C headers; `None` when the span is disabled or no OpenTelemetry
/// layer is installed (then there is no trace to continue).
pub fn headers(span: &tracing::Span) -> Option<TraceHeaders> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(TraceHeaders {
        traceparent: carrier.traceparent?,
        tracestate: carrier.tracestate.filter(|s| !s.is_empty()),
    })
}

/// The headers of the next hop without a `tracing` span, for hot paths whose spans are not
/// exported (see [`crate::telemetry::spans_exported`]): a valid caller `traceparent` is
/// continued (its trace id and flags, a new span id, `tracestate` carried along); otherwise a
/// new sampled trace starts. What the next hop receives has the shape it would have with a span.
pub fn next_hop(traceparent: Option<&str>, tracestate: Option<&str>) -> TraceHeaders {
    use opentelemetry::trace::TraceFlags;
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    let (trace_id, flags, tracestate) = match traceparent.and_then(parse) {
        Some(caller) => (
            caller.trace_id(),
            caller.trace_flags(),
            tracestate.filter(|s| !s.is_empty()).map(str::to_owned),
        ),
        None => (ids.new_trace_id(), TraceFlags::SAMPLED, None),
    };
    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    push_hex(&mut traceparent, &trace_id.to_bytes());
    traceparent.push('-');
    push_hex(&mut traceparent, &ids.new_span_id().to_bytes());
    traceparent.push('-');
    push_hex(&mut traceparent, &[flags.to_u8()]);
    TraceHeaders {
        traceparent,
        tracestate,
    }
}

/// Lowercase hex of `bytes`, as `traceparent` spells ids (hot path: no formatter).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Makes the remote span named by `traceparent` (and `tracestate`) the parent of `span`, so the
/// span continues that trace. Returns `false`, leaving `span` the root of a new trace, when the
/// value is missing or invalid. Call it before `span` has children or its context was read.
pub fn set_parent(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> bool {
    let Some(traceparent) = traceparent.filter(|t| !t.is_empty()) else {
        return false;
    };
    let carrier = Carrier {
        traceparent: Some(traceparent.to_owned()),
        tracestate: tracestate.map(str::to_owned),
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx);
    true
}

/// Links `span` to the span named by `traceparent`: for a span that handles work from many
/// traces at once (a batch), where no single one is its parent. Returns `false`, adding
/// nothing, when the value is not a valid W3C trace context. Call it before `span` closes.
pub fn add_link(span: &tracing::Span, traceparent: &str) -> bool {
    match parse(traceparent) {
        Some(sc) => {
            span.add_link(sc);
            true
        }
        None => false,
    }
}

/// Parses a `traceparent` value; `None` when it is not a valid W3C trace context.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let carrier = Carrier {
        traceparent: Some(traceparent.to_owned()),
        tracestate: None,
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The two W3C fields; other keys are ignored.
#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            HEADER => self.traceparent = Some(value),
            STATE_HEADER => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            HEADER => self.traceparent.as_deref(),
            STATE_HEADER => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![HEADER, STATE_HEADER]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_next_hop_without_a_span_continues_the_callers_trace_or_starts_one() {
        let hop = next_hop(Some(INCOMING), Some("vendor=1"));
        let sc = parse(&hop.traceparent).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(
            sc.span_id().to_string(),
            "00f067aa0ba902b7",
            "a span id of its own"
        );
        assert!(sc.is_sampled());
        // Spelled as the W3C propagator spells it.
        assert_eq!(
            hop.traceparent,
            format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
        );
        assert_eq!(hop.tracestate.as_deref(), Some("vendor=1"));
        let unsampled = next_hop(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            None,
        );
        assert!(
            !parse(&unsampled.traceparent).unwrap().is_sampled(),
            "flags kept"
        );
        assert!(unsampled.traceparent.ends_with("-00"));
        for junk in [None, Some(""), Some("00-zz-01")] {
            let new = next_hop(junk, Some("vendor=1"));
            let sc = parse(&new.traceparent).expect("a new trace");
            assert_ne!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(sc.is_sampled());
            assert_eq!(new.tracestate, None, "no caller trace: no state to carry");
        }
    }

    fn with_otel<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn a_span_continues_the_incoming_trace_and_names_itself_as_parent() {
        with_otel(|| {
            let span = tracing::info_span!("server");
            assert!(set_parent(&span, Some(INCOMING), Some("k=v")));
            let out = headers(&span).expect("span has a context");
            let sc = parse(&out.traceparent).unwrap();
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_ne!(sc.span_id().to_string(), "00f067aa0ba902b7", "a new span");
            assert!(sc.is_sampled());
            assert_eq!(out.tracestate.as_deref(), Some("k=v"));
            let pairs: Vec<_> = out.pairs().map(|(k, _)| k).collect();
            assert_eq!(pairs, [HEADER, STATE_HEADER]);

            let child = span.in_scope(|| tracing::info_span!("child"));
            let child_tp = headers(&child).unwrap().traceparent;
            assert!(child_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert_ne!(child_tp, out.traceparent);
        });
    }

    #[test]
    fn a_link_names_another_trace_without_joining_it() {
        with_otel(|| {
            let span = tracing::info_span!("batch");
            assert!(add_link(&span, INCOMING));
            assert!(!add_link(&span, "00-garbage"));
            let tp = headers(&span).unwrap().traceparent;
            assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{tp}");
        });
    }

    #[test]
    fn without_a_valid_parent_a_span_starts_a_trace() {
        with_otel(|| {
            let span = tracing::info_span!("server");
            assert!(!set_parent(&span, Some("garbage"), None));
            assert!(!set_parent(&span, None, None));
            let tp = headers(&span).unwrap().traceparent;
            assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
            assert!(parse(&tp).is_some());
        });
    }

    #[test]
    fn parse_rejects_invalid_contexts_and_untraced_spans_have_none() {
        assert!(parse(INCOMING).is_some());
        assert!(parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(parse("garbage").is_none());
        assert_eq!(headers(&tracing::info_span!("no subscriber")), None);
    }
}
