//! The one integration-test binary: every area of the suite is a module here, so the suite
//! links once (rdkafka, PostgreSQL, axum and every service crate) instead of once per file.
//! Shared set-up lives in the harness library (`integration-tests/src/`) and in [`support`].
//!
//! Run one area with a filter on the module path, for example
//! `cargo nextest run --release -p integration-tests -E 'test(/^deptrans::/)'`.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

mod support;

mod admin_api;
mod admin_page;
mod attempt_log;
mod crate_edges;
mod deptrans;
mod deptrans_api;
mod deptrans_faults;
mod deptrans_json;
mod deptrans_pg_down;
mod deptrans_poison;
mod deptrans_shifts;
mod dispatcher_restart;
mod domain_events;
mod engine_breaker;
mod engine_guard;
mod engine_http;
mod engine_limits;
mod engine_parking;
mod engine_support;
mod faults;
mod hot_reload;
mod idempotent;
mod ingress;
mod ingress_auth;
mod ingress_mtls;
mod kafka_cluster;
mod kafka_tools;
mod mark_notify;
mod operations;
mod ops_assets;
mod ordered;
mod rolling_restart;
mod schema_evolution;
mod schemathesis;
mod slow_clients;
mod traces;
mod traces_deptrans;
mod uid_notify;
