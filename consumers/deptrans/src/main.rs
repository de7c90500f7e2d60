//! `switchyard-deptrans`: parses flags and config, then hands over to `switchyard_deptrans::run`.

use switchyard_deptrans::DeptransConfig;
use switchyard_runtime::Shutdown;

switchyard_runtime::service_main! {
    service: "deptrans",
    about: "switchyard deptrans: driver statuses to KRT, driver KRT ids, cache feeds",
    env: "DEPTRANS",
    openapi: "the HTTP API's OpenAPI document" => switchyard_deptrans::openapi_document,
    load: DeptransConfig::load,
    run: |config, _config_file, listener| {
        switchyard_deptrans::run(config, listener, Shutdown::on_signals()).await
    },
}
