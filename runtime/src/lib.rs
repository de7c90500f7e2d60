//! The small runtime several switchyard services share. It holds only what more than one
//! service needs, and never depends on a service.
//!
//! # Layout
//!
//! - [`config`]: layered config loading (compiled-in defaults, TOML file, env vars).
//! - [`conn`]: a server connection's header-read and idle deadlines (every HTTP server,
//!   the proxy included).
//! - [`http`] (feature `http`): the ops routes (`/ping`, `/metrics`), the request-metrics
//!   layer, the error body `{code, message, field}` and strict JSON parsing.
//! - [`kafka`] (feature `kafka`): the one rdkafka client-config factory and the reading of
//!   librdkafka statistics (stored-offset lag).
//! - [`topics`] (feature `kafka`): topic definitions and their creation.
//! - [`pg`] (feature `pg`): the Postgres pool, migrations under an advisory lock, and every
//!   advisory-lock id of the workspace in one table.
//! - [`metrics`]: the Prometheus text exposition of `/metrics`.
//! - [`service`]: a service binary's start-up: its flags, `--print-openapi`, tracing, config
//!   and listening socket ([`service_main!`]).
//! - [`shutdown`]: signals, the cancellation token and the supervisor of a service's tasks.
//! - [`telemetry`]: logs and OTLP traces.
//! - [`trace`]: W3C trace context in and out of records and requests.

pub mod config;
pub mod conn;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
#[cfg(feature = "pg")]
pub mod pg;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "kafka")]
pub mod topics;
pub mod trace;

pub use config::{load_config, ConfigError};
#[cfg(feature = "kafka")]
pub use kafka::KafkaSettings;
pub use shutdown::Shutdown;
