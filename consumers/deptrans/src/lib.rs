//! deptrans: driver statuses to Moscow's regulator system KRT, the driver's KRT id API and
//! the internal cache feeds. `run` wires the consumer, the sender, the caches, retention and
//! the HTTP API together under one supervisor.
//!
//! # Layout
//!
//! - [`config`]: `DeptransConfig` (regions, categories, KRT, upstreams, sender, API keys);
//!   `geo`: region polygons.
//! - [`consumer`]: the source topics into the send queue (filter by region and category; an
//!   offline status that closes an open shift passes wherever the driver is);
//!   [`records`]: the source formats (protobuf envelope, plain JSON) decoded strictly;
//!   [`dead_letter`]: records that cannot be used, parked in their source's dead-letter topic.
//! - [`sender`]: the queue to KRT in batches, KRT's answers classified, deferred rows retried;
//!   [`krt`]: the KRT client (bulk or per-driver) and its token store; [`rejected`]: rows
//!   refused for good, out of the queue.
//! - [`upstream`]: driver profiles, categories, personal data and trackstory;
//!   [`cache`]: their in-memory caches, refreshed in the background.
//! - [`mirror`]: in-memory mirrors of `profiles` and `session_statuses`, followed by cursor,
//!   which the feeds and the id GET answer from (also while PostgreSQL is down).
//! - `api`: the HTTP API, a folder: `mod` (router and state), `driver_id` (the driver's KRT
//!   id), `feeds` (internal cache feeds), `history` (a driver's statuses and shift states),
//!   `rejected` (refused statuses, listed and re-queued),
//!   `error`, `keys` (internal API keys) and `openapi` (the document derived from the
//!   handlers, see [`openapi_document`]).
//! - [`retention`]: trims old session history and sent marks; `queue_stats`: queue gauges
//!   (due, deferred, rejected).
//! - [`db`]: the pool, the migrations in `migrations/` (schema `deptrans`), advisory locks.
//! - [`metrics`]: every metric deptrans exports.

mod api;
pub mod cache;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dead_letter;
mod geo;
pub mod krt;
pub mod metrics;
pub mod mirror;
mod queue_stats;
pub mod records;
pub mod rejected;
pub mod retention;
pub mod sender;
pub mod supply;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

/// How often the mirrors read what was written to their tables.
const MIRROR_INTERVAL: Duration = Duration::from_millis(500);

use switchyard_runtime::http::RequestDeadline;
use switchyard_runtime::shutdown::{supervise, Tasks};
use switchyard_runtime::topics::TopicSpec;
use switchyard_runtime::Shutdown;
use tokio::net::TcpListener;

pub use config::DeptransConfig;

#[derive(Debug, thiserror::Error)]
pub enum DeptransError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Krt(#[from] krt::KrtError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error(
        "refusing to start: the {cache} cache could not be filled within {timeout_ms} ms ({reason}); \
         check that {cache} answers and that upstream.* URLs are right"
    )]
    CacheStartup {
        cache: &'static str,
        timeout_ms: u64,
        reason: String,
    },
    #[error("kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating the dead-letter topics")]
    Topics(#[from] switchyard_runtime::topics::TopicError),
    #[error(transparent)]
    Consume(#[from] consumer::ConsumeError),
    #[error(transparent)]
    Send(#[from] sender::SendError),
    #[error("serving http")]
    Io(#[from] std::io::Error),
    #[error("task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// The OpenAPI document of deptrans's HTTP API, as committed in `schemas/openapi/deptrans.json`.
pub fn openapi_document() -> String {
    api::openapi::document()
}

/// Runs deptrans until `shutdown`; `listener` serves the HTTP API.
pub async fn run(
    cfg: DeptransConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), DeptransError> {
    let metrics = Arc::new(metrics::DeptransMetrics::default());
    let pool = db::pool(&cfg.postgres.url, cfg.postgres.pool_size)?;
    let applied = db::migrate(&pool).await?;
    tracing::info!(applied, "deptrans schema ready");

    let upstream = upstream::Upstream::new(&cfg.upstream)?;
    let caches = Arc::new(cache::Caches::new(&metrics));
    let timeout_ms = cfg.upstream.cache_startup_timeout_ms;
    match tokio::time::timeout(Duration::from_millis(timeout_ms), caches.fill(&upstream)).await {
        Ok(Ok(())) => {}
        Ok(Err((cache, e))) => {
            return Err(DeptransError::CacheStartup {
                cache,
                timeout_ms,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(DeptransError::CacheStartup {
                cache: "driver-profiles/driver-categories",
                timeout_ms,
                reason: "timed out".into(),
            });
        }
    }
    tracing::info!(profiles = caches.profiles.len(), "deptrans caches filled");

    let krt_client = krt::KrtClient::new(&cfg.krt)?;
    let tokens = Arc::new(krt::TokenStore::new(
        pool.clone(),
        krt_client,
        &cfg.krt,
        metrics.clone(),
    ));
    let mut tasks: Tasks<DeptransError> = Tasks::new();

    {
        let (caches, upstream, metrics, stop) = (
            caches.clone(),
            upstream.clone(),
            metrics.clone(),
            shutdown.token(),
        );
        let every = Duration::from_millis(cfg.upstream.cache_refresh_ms);
        tasks.spawn("cache-refresh", async move {
            caches.refresh_loop(upstream, every, metrics, stop).await;
            Ok(())
        });
    }

    // Drivers active lately, marked by the consumer, counted by the supply gauges.
    let active = Arc::new(supply::ActiveDrivers::default());
    if cfg.consumer.enabled {
        let sources = cfg.sources();
        // A dead-letter topic that is missing would hold its source's partitions up.
        let dead_letter_topics: Vec<TopicSpec> = sources
            .iter()
            .map(|s| TopicSpec::new(s.dead_letter_topic(), 1))
            .collect();
        switchyard_runtime::topics::ensure_topics(&cfg.kafka, &dead_letter_topics).await?;
        let retry_backoff = Duration::from_millis(cfg.consumer.retry_backoff_ms);
        let dead_letters =
            dead_letter::DeadLetters::new(&cfg.kafka, retry_backoff, metrics.clone())?;
        let consumer = cfg
            .kafka
            .consumer_config(&cfg.group_id)
            .set("statistics.interval.ms", "5000")
            .create_with_context(consumer::LagContext::new(consumer::LagObserver {
                metrics: metrics.clone(),
            }))?;
        let filter = consumer::Filter {
            regions: cfg.regions.iter().map(config::Region::polygon).collect(),
            categories: cfg.categories.clone(),
            caches: caches.clone(),
            upstream: upstream.clone(),
            metrics: metrics.clone(),
            pool: pool.clone(),
        };
        let worker = consumer::StatusConsumer {
            consumer,
            sources,
            dead_letters,
            pool: pool.clone(),
            filter,
            batch_max: cfg.consumer.batch_max,
            linger: Duration::from_millis(cfg.consumer.batch_linger_ms),
            retry_backoff,
            metrics: metrics.clone(),
            active: active.clone(),
        };
        let stop = shutdown.token();
        tasks.spawn(
            "status-consumer",
            async move { Ok(worker.run(stop).await?) },
        );
    }

    if cfg.sender.enabled {
        let sender = sender::Sender {
            pool: pool.clone(),
            caches: caches.clone(),
            upstream: upstream.clone(),
            tokens: tokens.clone(),
            cfg: cfg.sender.clone(),
            metrics: metrics.clone(),
        };
        let stop = shutdown.token();
        tasks.spawn("krt-sender", async move { Ok(sender.run(stop).await?) });
    }

    {
        let (pool, metrics, stop) = (pool.clone(), metrics.clone(), shutdown.token());
        let every = Duration::from_millis(cfg.retention_interval_ms);
        let (days, batch) = (cfg.retention_days, cfg.retention_batch);
        tasks.spawn("retention", async move {
            retention::run(pool, days, batch, every, metrics, stop).await;
            Ok(())
        });
    }

    {
        let (pool, metrics, stop) = (pool.clone(), metrics.clone(), shutdown.token());
        let every = Duration::from_millis(cfg.queue_metrics_interval_ms);
        tasks.spawn("queue-stats", async move {
            queue_stats::run(pool, every, metrics, stop).await;
            Ok(())
        });
    }

    // The feeds and the id GET answer from the mirrors (read once now, then followed), so they
    // keep answering while PostgreSQL is down.
    let mirrors = Arc::new(mirror::Mirrors::default());
    if let Err(e) = mirrors.follow_once(&pool).await {
        tracing::warn!(error = %e, "first mirror read failed; the API reads PostgreSQL until one succeeds");
    }
    {
        let (mirrors, pool, stop) = (mirrors.clone(), pool.clone(), shutdown.token());
        let days = cfg.retention_days;
        tasks.spawn("mirror", async move {
            mirrors.follow(pool, MIRROR_INTERVAL, days, stop).await;
            Ok(())
        });
    }
    {
        let (active, caches, mirrors, metrics, stop) = (
            active.clone(),
            caches.clone(),
            mirrors.clone(),
            metrics.clone(),
            shutdown.token(),
        );
        let window = Duration::from_secs(u64::from(cfg.supply.window_minutes) * 60);
        let every = Duration::from_millis(cfg.supply.interval_ms);
        tasks.spawn("supply", async move {
            supply::run(active, caches, mirrors, metrics, window, every, stop).await;
            Ok(())
        });
    }

    let keys = api::keys::ApiKeys::new(cfg.api.clients.values().cloned().collect());
    let state = api::ApiState {
        driver_id: api::driver_id::DriverIdState {
            pool: pool.clone(),
            caches: caches.clone(),
            mirrors: mirrors.clone(),
            upstream,
            tokens,
        },
        feeds: api::feeds::FeedsState {
            pool: pool.clone(),
            caches: caches.clone(),
            mirrors,
            keys: keys.clone(),
            max_page: cfg.api.max_page,
        },
        history: api::history::HistoryState {
            pool: pool.clone(),
            caches,
            keys: keys.clone(),
            max_page: cfg.api.max_page,
        },
        rejected: api::rejected::RejectedState {
            pool,
            keys,
            max_page: cfg.api.max_page,
            metrics: metrics.clone(),
        },
        metrics,
    };
    let app = RequestDeadline::INTERNAL.layer(api::router(state));
    tracing::info!(addr = ?listener.local_addr().ok(), "deptrans listening");
    switchyard_runtime::http::serve_task(&mut tasks, listener, app, &shutdown);

    supervise(tasks, &shutdown, cfg.drain()).await
}
