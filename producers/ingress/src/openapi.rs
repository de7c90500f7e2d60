//! The ingress OpenAPI document, generated from the handlers and committed under `schemas/`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard ingress",
        description = "Publish events to switchyard; 200 means the broker has the record. Every \
                       route needs a caller's credential (`Authorization: Bearer <token>` or \
                       `X-Api-Key`), and each caller may use only its configured routes."
    ),
    paths(
        crate::uid_notify::handle,
        crate::driver_status::handle,
        crate::mark_notify::handle,
        crate::domain_events::handle,
        crate::schemas::list,
        crate::schemas::get_one
    ),
    components(schemas(crate::error::ErrorBody, crate::error::Violation)),
    modifiers(&Credentials),
    security(("bearer" = []), ("api_key" = []))
)]
pub struct IngressApi;

/// The two ways a caller presents its credential.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

/// The document as committed in `schemas/openapi/ingress.json`.
pub fn document() -> String {
    switchyard_runtime::http::openapi::render(&IngressApi::openapi())
}

switchyard_runtime::openapi_drift_test!("switchyard-ingress", "ingress", document);
