//! Set-up shared by several areas of the suite: the deptrans harness (a fresh database, topic
//! and fakes per test), calls to the ingress, the OpenAPI check and an in-process OTLP
//! receiver.

pub(crate) mod deptrans_common;
pub(crate) mod ingress_calls;
pub(crate) mod openapi;
pub(crate) mod otlp_common;
