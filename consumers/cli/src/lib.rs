//! The `switchyard` operator CLI as a library, so the tests drive what the binary runs.
//!
//! # Layout
//!
//! - [`client`]: a typed client of a dispatcher's admin API (subscribers, pauses, dead
//!   letters, replays, attempts), over the dispatcher's own request and job types.
//! - [`records`]: actions straight against the brokers: tail a topic decoded to JSON, produce
//!   an event from JSON.
//! - `main.rs`: the `switchyard` binary: flags, subcommands, tables and progress bars.

pub mod client;
pub mod records;
