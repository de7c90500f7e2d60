//! Logging setup: `tracing` with an env filter (`RUST_LOG`), JSON lines when
//! `SWITCHYARD_LOG_FORMAT=json`, and the `log` bridge so librdkafka's messages arrive too.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls (tests starting several services) are no-ops.
pub fn init_tracing(service: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let result = if json {
        fmt().with_env_filter(filter).json().try_init()
    } else {
        fmt().with_env_filter(filter).compact().try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
