//! The deptrans API's OpenAPI document, derived from the handlers and their typed bodies, and
//! committed under `schemas/openapi/deptrans.json`.

use utoipa::OpenApi;

use super::{driver_id, error, feeds, history, rejected};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard deptrans",
        description = "The driver's KRT id (masked GET, POST checked by KRT), the internal \
                       cursor-paged feeds of bound ids and KRT session statuses, one driver's \
                       history of statuses sent and shift states, and the statuses KRT refused \
                       for good (listed, re-queued). `/ping` and \
                       `/metrics` are served beside them."
    ),
    paths(
        driver_id::get_id,
        driver_id::post_id,
        feeds::id_updates,
        feeds::status_updates,
        history::driver,
        rejected::list,
        rejected::requeue
    ),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "driver", description = "Called on behalf of a driver (X-YaTaxi headers)"),
        (name = "internal", description = "Other services; `X-API-Key` of an `[api.clients]` entry")
    )
)]
pub(crate) struct DeptransApi;

/// The document as committed in `schemas/openapi/deptrans.json`.
pub(crate) fn document() -> String {
    switchyard_runtime::http::openapi::render(&DeptransApi::openapi())
}

switchyard_runtime::openapi_drift_test!("switchyard-deptrans", "deptrans", document);
