//! switchyard dispatcher: one consumer group per subscriber delivers events to webhooks,
//! with quick in-process retries, delayed retry topics and a dead-letter topic.
//!
//! # Layout
//!
//! - [`config`]: `DispatcherConfig` as written: subscribers, retry policies, name prefixes.
//! - [`plan`]: the config resolved once at start (integrations expanded, validated, every
//!   topic and group name computed); everything below reads the plan.
//! - `integrations`: the mark-notify integrations file, turned into subscribers by the plan.
//! - `worker`: the consumer loop of one subscriber; `offsets`: which offset may be stored.
//! - `delivery`: the deliverer (filter, render, send, park or dead-letter) and its sinks;
//!   `topic_sink`: delivery as a record on a topic; `filter`: skipping by record headers;
//!   [`http_target`]: the HTTP sink; [`target_guard`]: where webhooks may go; [`sign`]: webhook signatures; [`render`]: request
//!   bodies per format, and the trace a delivery continues; `retry`: retry-tier headers and
//!   backoff.
//! - `ordered`: ordered mode (`ordering = "key"`), its parked records kept in Postgres.
//! - `breaker`: the circuit breaker of each subscriber; `limits`: its rate and in-flight
//!   limits, shared out between replicas by partitions owned.
//! - `control`: the subscriber registry (pause switches, lag, dead letters waiting);
//!   `dead_letters`: where a group stands on a topic (dead letters waiting, committed offsets).
//! - [`attempt_log`]: delivery attempts written to Postgres (schema `switchyard_admin`,
//!   `migrations/`).
//! - [`admin_api`]: the admin API and its OpenAPI document; `admin_page`: the operator page;
//!   [`replay`]: replays and dead-letter listings; [`admin`]: their error and the JSON view of
//!   an envelope.
//! - `metrics`: every metric the dispatcher exports; `sink`: the built-in dev echo sink.
//! - [`run`]: wires it all up and serves `/ping`, `/metrics`, the admin API and page.

pub mod admin;
pub mod admin_api;
mod admin_page;
pub mod attempt_log;
mod breaker;
pub mod config;
mod control;
mod dead_letters;
mod delivery;
mod filter;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod http_target;
mod integrations;
mod limits;
mod metrics;
mod offsets;
mod ordered;
pub mod plan;
pub mod render;
pub mod replay;
mod retry;
pub mod sign;
mod sink;
mod subscribers;
pub mod target_guard;
mod topic_sink;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::producer::FutureProducer;
use switchyard_runtime::http::RequestDeadline;
use switchyard_runtime::shutdown::{supervise, Tasks};
use switchyard_runtime::topics::{ensure_topics, TopicError};
use switchyard_runtime::Shutdown;
use tokio::net::TcpListener;

pub use config::DispatcherConfig;
use metrics::DispatchMetrics;
pub use plan::Plan;
/// Which delivery lane a record takes; tests use it to place keys on distinct lanes.
pub use worker::lane_of;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] config::ConfigCheckError),
    #[error("creating retry topics")]
    Topics(#[from] TopicError),
    #[error("subscriber {0}")]
    Target(String, #[source] http_target::HttpTargetError),
    #[error(transparent)]
    Worker(#[from] worker::WorkerError),
    #[error("serving http")]
    Io(#[from] std::io::Error),
    #[error("task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("attempt log database")]
    Db(#[from] switchyard_runtime::pg::DbError),
}

/// Runs every subscriber until `shutdown`; `listener` serves `/ping`, `/metrics` and the admin
/// API and page. With `config_file`, the file (and the mark-notify integrations file it names)
/// is watched and subscriber changes are applied without a restart (`subscribers`).
pub async fn run(
    cfg: DispatcherConfig,
    config_file: Option<PathBuf>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), DispatchError> {
    let plan = Arc::new(Plan::resolve(cfg)?);
    let cfg = &plan.config;
    ensure_topics(&cfg.kafka, &plan.derived_topics()).await?;
    let metrics = Arc::new(DispatchMetrics::default());
    let producer: FutureProducer = cfg.kafka.producer_config("dispatcher-parking").create()?;
    let mut tasks: Tasks<DispatchError> = Tasks::new();

    let (pool, attempt_log) = match &cfg.attempt_log {
        Some(log_cfg) => {
            let pool = switchyard_runtime::pg::pool(&log_cfg.database_url, 4)?;
            let (log, writer) = attempt_log::start(
                log_cfg,
                pool.clone(),
                metrics.attempt_log_dropped.clone(),
                metrics.attempt_log_written.clone(),
                shutdown.token(),
            )
            .await?;
            tasks.spawn("attempt-log-writer", async move {
                writer.await;
                Ok(())
            });
            (Some(pool), Some(log))
        }
        None => (None, None),
    };
    let control = Arc::new(control::Control::new(plan.clone(), pool, metrics.clone()));
    let mut subscribers = subscribers::Subscribers::new(
        subscribers::Shared {
            producer,
            metrics: metrics.clone(),
            attempt_log,
            control: control.clone(),
        },
        shutdown.token(),
    );
    subscribers.start(&plan).await?;
    let watch = config_file.map(|config_file| subscribers::Watch {
        config_file,
        interval: Duration::from_millis(cfg.reload_interval_ms.max(100)),
    });
    tasks.spawn("subscribers", subscribers.run(watch));

    if let Some(addr) = &cfg.builtin_sink_listen {
        let sink_listener = TcpListener::bind(addr).await?;
        let stop = shutdown.token();
        tasks.spawn("builtin-sink", async move {
            Ok(sink::serve(sink_listener, stop).await?)
        });
    }

    let stop = shutdown.token();
    tasks.spawn("registry", control.clone().maintain(stop).map(Ok));
    let counter = control
        .clone()
        .count_dead_letters(cfg.kafka.clone(), shutdown.token());
    let stop = shutdown.token();
    tasks.spawn("dead-letter-counter", async move {
        stop.cancelled().await;
        let _ = tokio::task::spawn_blocking(move || counter.join()).await;
        Ok(())
    });
    let admin = cfg
        .admin
        .token
        .clone()
        .map(|token| Arc::new(admin_api::AdminState::new(control.clone(), token)));

    let app = switchyard_runtime::http::ops_routes(metrics.clone())
        .merge(admin_api::routes(admin))
        .merge(admin_page::routes());
    let app = RequestDeadline::INTERNAL
        .layer(app)
        .layer(axum::middleware::from_fn_with_state(
            metrics.http_requests.clone(),
            switchyard_runtime::http::RequestMetrics::layer,
        ));
    switchyard_runtime::http::serve_task(&mut tasks, listener, app, &shutdown);

    let drain = Duration::from_millis(cfg.drain_timeout_ms + 2_000);
    supervise(tasks, &shutdown, drain).await
}
