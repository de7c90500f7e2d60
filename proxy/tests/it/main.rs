//! The proxy's integration tests: one test binary (one link instead of one per file), a
//! module per concern, sharing the harness in `common`.
// Test servers and clients are plain spawned tasks.
#![allow(clippy::disallowed_methods)]

mod common;

mod access;
mod identity;
mod jwt;
mod limits;
mod listeners;
mod replay;
mod routing;
mod streaming;
