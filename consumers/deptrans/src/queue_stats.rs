//! Queue gauges: how many statuses wait in `deptrans.status_queue` and how old the oldest
//! is, read with one cheap statement every few seconds and exported as gauges.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::metrics::DeptransMetrics;

/// `updated_at` is the status time the row carries (newer statuses replace it), so the age
/// says how stale the oldest status KRT has not been told is; `min` uses its index. Clamped
/// at 0 for event clocks ahead of the database.
const STATS: &str = "
SELECT count(*),
       COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(updated_at)), 0), 0)::float8
FROM deptrans.status_queue";

const REJECTED: &str = "SELECT count(*) FROM deptrans.rejected";

/// Rows queued and the age in seconds of the oldest (0 when empty).
pub async fn read(pool: &Pool) -> Result<(i64, f64), deadpool_postgres::PoolError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(STATS).await?;
    let row = client.query_one(&stmt, &[]).await?;
    Ok((row.get(0), row.get(1)))
}

/// Rows in `deptrans.rejected`.
pub async fn rejected(pool: &Pool) -> Result<i64, deadpool_postgres::PoolError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(REJECTED).await?;
    Ok(client.query_one(&stmt, &[]).await?.get(0))
}

/// Refreshes the queue gauges every `every` until `stop`; a failed read keeps the last values.
pub async fn run(
    pool: Pool,
    every: Duration,
    metrics: Arc<DeptransMetrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match read(&pool).await {
            Ok((rows, oldest)) => {
                metrics.queue_rows.set(rows);
                metrics.queue_oldest_seconds.set(oldest);
            }
            Err(e) => tracing::warn!(error = %e, "reading queue gauges failed"),
        }
        match rejected(&pool).await {
            Ok(rows) => {
                metrics.rejected_rows.set(rows);
            }
            Err(e) => tracing::warn!(error = %e, "reading rejected rows failed"),
        }
    }
}
