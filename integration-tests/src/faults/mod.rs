//! The fault suite's harness (issue 15): a load driver calling the public ingress endpoints as
//! real callers do, recording subscribers, seeded faults on the three-node cluster and the
//! service processes, and a checker that counts lost, duplicated and reordered events.
//!
//! # Layout
//!
//! - [`checker`]: the ground-truth log of acknowledged events against what each sink received.
//! - [`driver`]: the load driver (base URLs and an optional bearer token are parameters).
//! - [`subscriber`]: recording HTTP subscribers that can fail, stall, throttle or go down.
//! - [`plan`]: the faults and their seeded schedule.
//! - [`procs`]: service processes started from the workspace's binaries, `kill -9`-able.
//! - [`run`]: one run end to end, used by `tests/it/faults.rs` and the `faults` binary.

pub mod checker;
pub mod driver;
pub mod plan;
pub mod procs;
pub mod run;
pub mod subscriber;
