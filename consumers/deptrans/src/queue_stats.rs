//! Queue gauges: how many statuses wait in `deptrans.status_queue` (due / deferred) and how
//! old the oldest due one is, read with one cheap statement every few seconds and exported as gauges.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::metrics::DeptransMetrics;

/// `updated_at` is the status time the row carries (newer statuses replace it), so the age
/// says how stale the oldest status KRT has not been told is. Only due rows count for the age
/// (and the stale alert): deferred rows (unknown driver, no licence) wait by design and leave
/// for `deptrans.rejected` past their maximum age. Clamped at 0 for event clocks ahead of the
/// database.
const STATS: &str = "
SELECT count(*) FILTER (WHERE deferred_reason IS NULL),
       count(*) FILTER (WHERE deferred_reason IS NOT NULL),
       COALESCE(GREATEST(EXTRACT(EPOCH FROM
           now() - min(updated_at) FILTER (WHERE deferred_reason IS NULL)), 0), 0)::float8
FROM deptrans.status_queue";

/// The queue gauges at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QueueStats {
    pub due: i64,
    pub deferred: i64,
    /// Age in seconds of the oldest due row (0 when none).
    pub oldest_due_seconds: f64,
}

const REJECTED: &str = "SELECT count(*) FROM deptrans.rejected";

/// Rows due and deferred, and the age of the oldest due row.
pub(crate) async fn read(pool: &Pool) -> Result<QueueStats, deadpool_postgres::PoolError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(STATS).await?;
    let row = client.query_one(&stmt, &[]).await?;
    Ok(QueueStats {
        due: row.get(0),
        deferred: row.get(1),
        oldest_due_seconds: row.get(2),
    })
}

/// Rows in `deptrans.rejected`.
pub(crate) async fn rejected(pool: &Pool) -> Result<i64, deadpool_postgres::PoolError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(REJECTED).await?;
    Ok(client.query_one(&stmt, &[]).await?.get(0))
}

/// Refreshes the queue gauges every `every` until `stop`; a failed read keeps the last values.
pub(crate) async fn run(
    pool: Pool,
    every: Duration,
    metrics: Arc<DeptransMetrics>,
    stop: CancellationToken,
) {
    switchyard_runtime::shutdown::every(every, &stop, || async {
        match read(&pool).await {
            Ok(q) => {
                metrics.queue_rows.set(q.due + q.deferred);
                metrics.queue_due_rows.set(q.due);
                metrics.queue_deferred_rows.set(q.deferred);
                metrics.queue_oldest_seconds.set(q.oldest_due_seconds);
            }
            Err(e) => tracing::warn!(error = %e, "reading queue gauges failed"),
        }
        match rejected(&pool).await {
            Ok(rows) => {
                metrics.rejected_rows.set(rows);
            }
            Err(e) => tracing::warn!(error = %e, "reading rejected rows failed"),
        }
    })
    .await;
}
