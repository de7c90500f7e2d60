//! The attempt log: every delivery attempt of every subscriber (time, status, latency, response
//! excerpt, error) written to PostgreSQL in batches by a background task, off the delivery
//! path, and trimmed to the last N per subscriber and a maximum age.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

use crate::config::AttemptLogConfig;
use switchyard_runtime::pg::{lock, DbError, Migration};

/// Migrations of schema `switchyard_admin` (attempt log, pauses, ordered mode's parked records).
pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        "attempts_pauses",
        include_str!("../migrations/0001_attempts_pauses.sql"),
    ),
    (
        2,
        "ordered_parked",
        include_str!("../migrations/0002_ordered_parked.sql"),
    ),
];

/// One delivery attempt as operators read it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub subscriber: Arc<str>,
    pub at: DateTime<Utc>,
    pub event_id: String,
    /// 1-based attempt number across tiers.
    pub attempt: i32,
    pub status: Option<i16>,
    /// `delivered` or `failed`.
    pub outcome: &'static str,
    pub latency_ms: i32,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// The sending side, cloned into every subscriber's deliverer. Recording never waits: a full
/// buffer drops the row and counts it in `switchyard_dispatch_attempt_log_dropped_total`.
#[derive(Clone)]
pub struct AttemptLog {
    tx: mpsc::Sender<AttemptRow>,
    dropped: Counter,
}

impl AttemptLog {
    pub fn record(&self, row: AttemptRow) {
        if self.tx.try_send(row).is_err() {
            self.dropped.inc();
        }
    }
}

/// Connects, migrates and returns the log handle plus the writer and retention tasks' future,
/// which runs until `stop` and then writes what is buffered.
pub async fn start(
    cfg: &AttemptLogConfig,
    pool: Pool,
    dropped: Counter,
    written: Counter,
    stop: CancellationToken,
) -> Result<(AttemptLog, impl std::future::Future<Output = ()>), DbError> {
    switchyard_runtime::pg::migrate(&pool, "switchyard_admin", lock::ADMIN_MIGRATE, MIGRATIONS)
        .await?;
    let (tx, rx) = mpsc::channel(cfg.buffer);
    let log = AttemptLog { tx, dropped };
    let cfg = cfg.clone();
    let task = async move {
        let retention = retain(&pool, &cfg, stop.clone());
        let writer = write_batches(&pool, &cfg, rx, written, stop);
        tokio::join!(writer, retention);
    };
    Ok((log, task))
}

async fn write_batches(
    pool: &Pool,
    cfg: &AttemptLogConfig,
    mut rx: mpsc::Receiver<AttemptRow>,
    written: Counter,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(cfg.batch_size);
    let linger = Duration::from_millis(cfg.flush_interval_ms);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, cfg.batch_size) => n,
            _ = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, cfg.batch_size).await > 0 {
                    flush(pool, &mut batch, &written).await;
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        // Let a small batch fill up for a moment: fewer, larger INSERTs.
        if batch.len() < cfg.batch_size {
            let deadline = tokio::time::sleep(linger);
            tokio::pin!(deadline);
            while batch.len() < cfg.batch_size {
                let room = cfg.batch_size - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    _ = &mut deadline => break,
                    _ = stop.cancelled() => break,
                }
            }
        }
        flush(pool, &mut batch, &written).await;
    }
}

/// Writes `batch` in one COPY; on failure the rows are dropped with a warning (the log is
/// best-effort; deliveries never wait for it).
async fn flush(pool: &Pool, batch: &mut Vec<AttemptRow>, written: &Counter) {
    if batch.is_empty() {
        return;
    }
    match insert(pool, batch).await {
        Ok(()) => {
            written.inc_by(batch.len() as u64);
        }
        Err(e) => tracing::warn!(error = %e, rows = batch.len(), "attempt log write failed"),
    }
    batch.clear();
}

/// One binary COPY per batch: the cheapest way into PostgreSQL for many rows.
async fn insert(pool: &Pool, rows: &[AttemptRow]) -> Result<(), DbError> {
    let client = pool.get().await?;
    let sink = client
        .copy_in(
            "COPY switchyard_admin.attempts
                 (subscriber, at, event_id, attempt, status, outcome, latency_ms, response_excerpt, error)
             FROM STDIN BINARY",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::INT4,
            Type::INT2,
            Type::TEXT,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
        ],
    );
    let mut writer = std::pin::pin!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &&*r.subscriber,
                &r.at,
                &r.event_id,
                &r.attempt,
                &r.status,
                &r.outcome,
                &r.latency_ms,
                &r.response_excerpt,
                &r.error,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Every minute: delete attempts past the retention age and beyond the newest
/// `keep_per_subscriber` of each subscriber.
async fn retain(pool: &Pool, cfg: &AttemptLogConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match trim(pool, cfg.keep_per_subscriber, cfg.retention_hours).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "attempt log trimmed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "attempt log retention failed"),
        }
    }
}

/// Deletes attempts older than `hours` or beyond the newest `keep` per subscriber; returns
/// how many rows went.
pub async fn trim(pool: &Pool, keep: i64, hours: i64) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let old = client
        .execute(
            "DELETE FROM switchyard_admin.attempts WHERE at < now() - make_interval(hours => $1::int)",
            &[&i32::try_from(hours).unwrap_or(i32::MAX)],
        )
        .await?;
    let surplus = client
        .execute(
            "DELETE FROM switchyard_admin.attempts a USING (
                 SELECT id FROM (
                     SELECT id, row_number() OVER (PARTITION BY subscriber ORDER BY id DESC) AS rn
                     FROM switchyard_admin.attempts) ranked
                 WHERE rn > $1) d
             WHERE a.id = d.id",
            &[&keep],
        )
        .await?;
    Ok(old + surplus)
}

/// The newest `limit` attempts, of one subscriber or of all.
pub async fn recent(
    pool: &Pool,
    subscriber: Option<&str>,
    limit: i64,
) -> Result<Vec<crate::admin_api::model::AttemptView>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT subscriber, at, event_id, attempt, status, outcome, latency_ms,
                    response_excerpt, error
             FROM switchyard_admin.attempts
             WHERE $1::text IS NULL OR subscriber = $1
             ORDER BY id DESC LIMIT $2",
            &[&subscriber, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let at: DateTime<Utc> = r.get(1);
            crate::admin_api::model::AttemptView {
                subscriber: r.get(0),
                at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                event_id: r.get(2),
                attempt: r.get(3),
                status: r.get(4),
                outcome: r.get(5),
                latency_ms: r.get(6),
                response_excerpt: r.get(7),
                error: r.get(8),
            }
        })
        .collect())
}
