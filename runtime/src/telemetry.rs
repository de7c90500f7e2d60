//! Logs and traces. Logs: `tracing` with an env filter (`RUST_LOG`), JSON lines when
//! `SWITCHYARD_LOG_FORMAT=json`, and the `log` bridge so librdkafka's messages arrive too.
//! Traces: every `tracing` span at info or above is an OpenTelemetry span. Spans are exported
//! over OTLP/HTTP (protobuf) by a batch processor only when the standard `OTEL_*` variables
//! name an endpoint; by default nothing is exported and nothing touches the network. Span
//! contexts exist either way, so `traceparent` propagation ([`crate::trace`]) never depends on
//! export being on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{global, Key};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Whether finished spans go anywhere (an OTLP exporter was built at [`init_tracing`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. A hot path may skip its spans when they are not and carry the
/// trace on with [`crate::trace::next_hop`] instead: the same W3C headers, for less work.
pub fn spans_exported() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber and tracer provider once; later calls (tests starting
/// several services in one process) are no-ops. `service` names the OpenTelemetry resource
/// (`switchyard-<service>`) unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` does.
pub fn init_tracing(service: &str) {
    let mut export = None;
    let provider = PROVIDER.get_or_init(|| {
        let decision = export_from(|k| std::env::var(k).ok());
        let (provider, decision) = build_provider(service, decision);
        export = Some(decision);
        provider
    });
    let Some(export) = export else { return };
    EXPORTING.store(export == Export::Otlp, Ordering::Relaxed);
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());

    // Log lines stay what they were: spans are for traces, not a prefix on every line.
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"))
            .and(filter_fn(|meta| !meta.is_span()))
    };
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let logs = if json {
        fmt::layer().json().with_filter(filter()).boxed()
    } else {
        fmt::layer().compact().with_filter(filter()).boxed()
    };
    // Spans get their own filter: RUST_LOG=warn must not break trace propagation.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO);
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if installed {
        match export {
            Export::Otlp => {
                tracing::info!(service, "telemetry initialised, exporting spans over otlp")
            }
            Export::Off(why) => {
                tracing::debug!(service, why, "telemetry initialised, span export off")
            }
            Export::Failed(error) => {
                tracing::warn!(service, %error, "span export off: cannot build the otlp exporter")
            }
        }
    }
}

/// Exports every finished span still buffered, blocking until done or timed out. Blocking: in
/// async code call it through `spawn_blocking`.
pub fn flush_tracing() -> OTelSdkResult {
    PROVIDER
        .get()
        .map_or(Ok(()), SdkTracerProvider::force_flush)
}

/// Flushes and stops span export; call once, when the service exits. Blocking, like
/// [`flush_tracing`].
pub fn shutdown_tracing() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "span export did not shut down cleanly");
        }
    }
}

/// What the `OTEL_*` variables ask for.
#[derive(Debug, PartialEq, Eq)]
enum Export {
    Otlp,
    /// No exporter, and why.
    Off(&'static str),
    /// Asked for, but the exporter could not be built.
    Failed(String),
}

/// Reads the standard variables through `var`: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`
/// (`otlp`, the default, or `none`) and the endpoint, without which nothing is exported.
fn export_from(var: impl Fn(&str) -> Option<String>) -> Export {
    let set = |k: &str| {
        var(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Export::Off("OTEL_SDK_DISABLED=true");
    }
    if let Some(exporters) = set("OTEL_TRACES_EXPORTER") {
        let mut names = exporters.split(',').map(str::trim);
        if !names.any(|n| n.eq_ignore_ascii_case("otlp")) {
            return Export::Off("OTEL_TRACES_EXPORTER names no otlp exporter");
        }
    }
    let protocol =
        set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if protocol.is_some_and(|p| p != "http/protobuf") {
        return Export::Failed(
            "only OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf is supported".into(),
        );
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Export::Off("no OTEL_EXPORTER_OTLP_ENDPOINT");
    }
    Export::Otlp
}

/// A provider whose spans always have contexts; with a batch OTLP exporter when `export` says
/// so. The exporter itself reads the endpoint, `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT`;
/// the provider `OTEL_TRACES_SAMPLER(_ARG)`; the batch processor `OTEL_BSP_*`.
fn build_provider(service: &str, export: Export) -> (SdkTracerProvider, Export) {
    let builder = SdkTracerProvider::builder().with_resource(resource(service));
    if export != Export::Otlp {
        return (builder.build(), export);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build();
    match exporter {
        Ok(exporter) => {
            let exporter = Reporting {
                inner: exporter,
                failing: AtomicBool::new(false),
            };
            (builder.with_batch_exporter(exporter).build(), Export::Otlp)
        }
        Err(e) => (builder.build(), Export::Failed(e.to_string())),
    }
}

/// The detected resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named after the
/// service when those leave the name unset.
fn resource(service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(format!("switchyard-{service}"))
            .build()
    }
}

/// Logs when export starts failing and when it recovers (not every failed batch), since the
/// SDK's own diagnostics are compiled out.
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %e, spans, "span export failed; spans are dropped until it recovers");
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("span export recovered");
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(vars: &[(&str, &str)]) -> Export {
        export_from(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named() {
        assert_eq!(decide(&[]), Export::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert_eq!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Export::Off("no OTEL_EXPORTER_OTLP_ENDPOINT")
        );
        assert_eq!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
            Export::Otlp
        );
        assert_eq!(
            decide(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]),
            Export::Otlp
        );
    }

    #[derive(Debug, Default)]
    struct Flaky {
        down: AtomicBool,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.down.load(Ordering::Relaxed) {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "down".into(),
                ))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn export_failures_are_reported_on_change_and_passed_on() {
        let exporter = Reporting {
            inner: Flaky::default(),
            failing: AtomicBool::new(false),
        };
        assert!(exporter.export(Vec::new()).await.is_ok());
        exporter.inner.down.store(true, Ordering::Relaxed);
        assert!(exporter.export(Vec::new()).await.is_err());
        assert!(exporter.failing.load(Ordering::Relaxed));
        exporter.inner.down.store(false, Ordering::Relaxed);
        assert!(exporter.export(Vec::new()).await.is_ok());
        assert!(!exporter.failing.load(Ordering::Relaxed));
    }

    #[test]
    fn standard_switches_turn_export_off() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(matches!(
            decide(&[ep, ("OTEL_SDK_DISABLED", "TRUE")]),
            Export::Off(_)
        ));
        assert_eq!(decide(&[ep, ("OTEL_SDK_DISABLED", "false")]), Export::Otlp);
        assert!(matches!(
            decide(&[ep, ("OTEL_TRACES_EXPORTER", "none")]),
            Export::Off(_)
        ));
        assert!(matches!(
            decide(&[ep, ("OTEL_TRACES_EXPORTER", "zipkin")]),
            Export::Off(_)
        ));
        assert_eq!(
            decide(&[ep, ("OTEL_TRACES_EXPORTER", "console, otlp")]),
            Export::Otlp
        );
        assert_eq!(
            decide(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            Export::Otlp
        );
        assert!(matches!(
            decide(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Export::Failed(_)
        ));
    }
}
