//! `switchyard-ingress`: parses flags and config, then hands over to `switchyard_ingress::run`.

use switchyard_ingress::{AppState, IngressConfig, Publisher};
use switchyard_runtime::Shutdown;

switchyard_runtime::service_main! {
    service: "ingress",
    about: "switchyard HTTP ingress",
    env: "INGRESS",
    openapi: "the OpenAPI document" => switchyard_ingress::openapi::document,
    load: IngressConfig::load,
    run: |config, config_file, listener| {
        let publisher = Publisher::kafka(&config.kafka, "ingress")?;
        let state = AppState::new(config, publisher)?;
        switchyard_ingress::run(state, config_file, listener, Shutdown::on_signals()).await;
        anyhow::Ok(())
    },
}
