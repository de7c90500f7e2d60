//! Retention: deletes session states, their history, the status history and sent marks
//! older than the configured days, in small batches so no statement holds many locks.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::metrics::DeptransMetrics;

const SESSIONS: &str = "
DELETE FROM deptrans.session_statuses WHERE driver_license_pd_id IN (
    SELECT driver_license_pd_id FROM deptrans.session_statuses
    WHERE ended_at < now() - $1::float8 * interval '1 day'
       OR (ended_at IS NULL AND updated_at < now() - $1::float8 * interval '1 day')
    LIMIT $2)";

const MARKS: &str = "
DELETE FROM deptrans.sent_marks WHERE (park_id, driver_id) IN (
    SELECT park_id, driver_id FROM deptrans.sent_marks
    WHERE updated_at < now() - $1::float8 * interval '1 day' LIMIT $2)";

const SESSION_HISTORY: &str = "
DELETE FROM deptrans.session_history WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM deptrans.session_history
    WHERE recorded_at < now() - $1::float8 * interval '1 day' LIMIT $2))";

const STATUS_HISTORY: &str = "
DELETE FROM deptrans.status_history WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM deptrans.status_history
    WHERE recorded_at < now() - $1::float8 * interval '1 day' LIMIT $2))";

/// One full pass; returns rows deleted.
pub async fn purge(pool: &Pool, days: u32, batch: i64) -> Result<u64, tokio_postgres::Error> {
    let days = f64::from(days);
    let mut total = 0;
    for sql in [SESSIONS, MARKS, SESSION_HISTORY, STATUS_HISTORY] {
        loop {
            // A pool error here is a connection problem: surface it as a postgres error path.
            let Ok(client) = pool.get().await else {
                return Ok(total);
            };
            let n = client.execute(sql, &[&days, &batch]).await?;
            total += n;
            if n < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
    }
    Ok(total)
}

pub async fn run(
    pool: Pool,
    days: u32,
    batch: i64,
    every: Duration,
    metrics: Arc<DeptransMetrics>,
    stop: CancellationToken,
) {
    switchyard_runtime::shutdown::every(every, &stop, || async {
        match purge(&pool, days, batch).await {
            Ok(n) => {
                metrics.retention_deleted.inc_by(n);
                if n > 0 {
                    tracing::info!(deleted = n, "retention pass");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    })
    .await;
}
