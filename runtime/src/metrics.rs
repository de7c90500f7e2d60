//! Prometheus text exposition shared by every service's `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Content type of the Prometheus text format served on `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}
