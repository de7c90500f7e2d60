//! `switchyard-dispatcher`: parses flags and config, then hands over to `switchyard_dispatcher::run`.

use switchyard_dispatcher::DispatcherConfig;
use switchyard_runtime::Shutdown;

switchyard_runtime::service_main! {
    service: "dispatcher",
    about: "switchyard dispatcher: delivers events to subscribers",
    env: "DISPATCHER",
    openapi: "the admin API's OpenAPI document" => switchyard_dispatcher::admin_api::openapi::document,
    load: DispatcherConfig::load,
    run: |config, config_file, listener| {
        switchyard_dispatcher::run(config, config_file, listener, Shutdown::on_signals()).await
    },
}
