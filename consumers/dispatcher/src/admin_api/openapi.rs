//! The admin API's OpenAPI document, derived from the handlers and the typed bodies of
//! [`super::model`], and committed under `schemas/openapi/admin.json`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard dispatcher admin API",
        description = "Subscribers with state, lag and dead letters; pause and resume; the \
                       dead-letter browser; replays as jobs; the attempt log. Served on the \
                       dispatcher's `listen` address when `[admin] token` is set (404 \
                       `admin_disabled` otherwise)."
    ),
    paths(
        super::subscribers,
        super::pause,
        super::resume,
        super::dead_letters,
        super::start_replay,
        super::job,
        super::attempts
    ),
    components(schemas(
        super::model::ErrorBody,
        super::model::JobStatus,
        crate::replay::ReplaySource,
        crate::replay::DeadLetterSelection,
        crate::replay::TopicSelection
    )),
    modifiers(&BearerAuth, &TaggedSelections),
    security(("bearer" = [])),
    tags((name = "admin", description = "Operate the dispatcher's subscribers"))
)]
pub struct AdminApi;

/// Adds the `bearer` scheme: `Authorization: Bearer <[admin] token>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The replay body is `{"source": ..., ...selection}`: the `allOf` of a selection and its tag
/// must not say `additionalProperties: false` on the selection, or `source` itself would be
/// refused. Unknown fields are still refused by the handler (400 naming the field).
struct TaggedSelections;

impl Modify for TaggedSelections {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["DeadLetterSelection", "TopicSelection"] {
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(name) {
                o.additional_properties = None;
            }
        }
    }
}

/// The document as committed in `schemas/openapi/admin.json`.
pub fn document() -> String {
    switchyard_runtime::http::openapi::render(&AdminApi::openapi())
}

switchyard_runtime::openapi_drift_test!("switchyard-dispatcher", "admin", document);
