//! What every switchyard HTTP server shares (feature `http`): the ops routes (`/ping`,
//! `/metrics`), the request-metrics layer with the same labels everywhere, the error body
//! `{code, message, field}` and strict JSON parsing that names the field at fault.
//!
//! - [`ops`]: [`ops_routes`] and [`RequestMetrics`] (`route` = the matched route or
//!   `unmatched`, so unknown paths cannot grow the label set; `status` = the answer's code).
//! - [`error`]: [`ErrorBody`], the one JSON error body, and [`Violation`].
//! - [`serve`]: [`serve::serve`], `axum::serve` with the connection deadlines of [`conn`]
//!   (header read from a request's first byte; idle keep-alive), and the request deadline
//!   layer, so a slow client cannot hold a connection past them.
//! - [`json`]: [`json::read_limited`] and [`json::parse`], whose [`BadRequest`] each service
//!   turns into its own error type.
//! - [`query`]: page limits and `Query` rejections as the same 400 naming the parameter.
//! - [`openapi`]: the drift check of a service's committed OpenAPI document.

pub mod error;
pub mod json;
pub mod openapi;
pub mod ops;
pub mod query;
pub mod serve;
#[cfg(feature = "tls")]
pub mod tls;

pub use crate::conn::ConnDeadlines;
pub use error::{BadRequest, ErrorBody, Violation};
pub use json::push_key;
pub use ops::{ops_routes, RequestMetrics, RouteLabels, UNMATCHED_ROUTE};
pub use serve::{serve, serve_task, serve_with, RequestDeadline, Tls};
