//! `deptrans.rejected`: statuses KRT refused for good, taken out of the queue so one bad driver
//! costs the others nothing. The sender writes them; the internal API lists and re-queues them.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// Why a row left the queue without being sent; the `reason` column and metric label.
pub mod reason {
    /// KRT answered a 4xx for a request holding only this row (found by bisecting the chunk).
    pub const KRT_REFUSED: &str = "krt_refused";
    /// KRT's bulk answer marked this row `rejected`.
    pub const KRT_REJECTED: &str = "krt_rejected";
    /// KRT answered a request holding only this row with a body that is not the documented one.
    pub const KRT_MALFORMED: &str = "krt_malformed";
    /// personal knows no licence for the driver, past the deferral age.
    pub const NO_LICENCE: &str = "no_licence";
    /// The profiles cache does not know the driver, past the deferral age.
    pub const UNKNOWN_DRIVER: &str = "unknown_driver";

    pub const ALL: [&str; 5] = [
        KRT_REFUSED,
        KRT_REJECTED,
        KRT_MALFORMED,
        NO_LICENCE,
        UNKNOWN_DRIVER,
    ];
}

/// Why one row is refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    /// KRT's HTTP status when the refusal was a whole answer.
    pub krt_status: Option<i32>,
    /// The start of KRT's answer, personal data already redacted.
    pub answer: String,
}

/// One refused row, as written.
pub struct RejectedRow<'a> {
    pub park_id: &'a str,
    pub driver_id: &'a str,
    pub status: &'a str,
    pub status_at: DateTime<Utc>,
    pub traceparent: Option<&'a str>,
    pub refusal: &'a Refusal,
}

/// One statement for the whole batch; a driver keeps its latest refused status.
const INSERT: &str = "
INSERT INTO deptrans.rejected AS r
    (park_id, driver_id, status, status_at, traceparent, reason, krt_status, krt_answer, rejected_at)
SELECT u.*, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
            $7::int4[], $8::text[])
    AS u(park_id, driver_id, status, status_at, traceparent, reason, krt_status, krt_answer)
ON CONFLICT (park_id, driver_id) DO UPDATE
SET status = excluded.status, status_at = excluded.status_at, traceparent = excluded.traceparent,
    reason = excluded.reason, krt_status = excluded.krt_status, krt_answer = excluded.krt_answer,
    rejected_at = excluded.rejected_at
WHERE r.status_at <= excluded.status_at";

/// Writes `rows` inside the sender's transaction.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[RejectedRow<'_>],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let parks: Vec<&str> = rows.iter().map(|r| r.park_id).collect();
    let drivers: Vec<&str> = rows.iter().map(|r| r.driver_id).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
    let reasons: Vec<&str> = rows.iter().map(|r| r.refusal.reason).collect();
    let answers: Vec<&str> = rows.iter().map(|r| r.refusal.answer.as_str()).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.status_at).collect();
    let traces: Vec<Option<&str>> = rows.iter().map(|r| r.traceparent).collect();
    let codes: Vec<Option<i32>> = rows.iter().map(|r| r.refusal.krt_status).collect();
    tx.execute(
        INSERT,
        &[
            &parks, &drivers, &statuses, &times, &traces, &reasons, &codes, &answers,
        ],
    )
    .await
}

/// A row of `deptrans.rejected`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub park_id: String,
    pub driver_id: String,
    pub status: String,
    pub status_at: DateTime<Utc>,
    pub reason: String,
    pub krt_status: Option<i32>,
    pub krt_answer: String,
    pub rejected_at: DateTime<Utc>,
}

/// Up to `limit` rows after `(rejected_at, park_id, driver_id)`, oldest first, optionally of
/// one `reason`.
pub async fn list(
    pool: &Pool,
    after: (DateTime<Utc>, &str, &str),
    reason: Option<&str>,
    limit: i64,
) -> Result<Vec<Rejected>, deadpool_postgres::PoolError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT park_id, driver_id, status, status_at, reason, krt_status, krt_answer, rejected_at
             FROM deptrans.rejected
             WHERE (rejected_at, park_id, driver_id) > ($1, $2, $3)
               AND ($4::text IS NULL OR reason = $4)
             ORDER BY rejected_at, park_id, driver_id LIMIT $5",
            &[&after.0, &after.1, &after.2, &reason, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Rejected {
            park_id: r.get(0),
            driver_id: r.get(1),
            status: r.get(2),
            status_at: r.get(3),
            reason: r.get(4),
            krt_status: r.get(5),
            krt_answer: r.get(6),
            rejected_at: r.get(7),
        })
        .collect())
}

/// Moves the rejected rows of `drivers` back into the queue in one statement (a newer status
/// already queued wins, and the rejected row goes either way); returns the drivers moved.
const REQUEUE: &str = "
WITH moved AS (
    DELETE FROM deptrans.rejected r
    USING unnest($1::text[], $2::text[]) AS k(park_id, driver_id)
    WHERE r.park_id = k.park_id AND r.driver_id = k.driver_id
    RETURNING r.park_id, r.driver_id, r.status, r.status_at, r.traceparent),
queued AS (
    INSERT INTO deptrans.status_queue AS q (park_id, driver_id, status, updated_at, traceparent)
    SELECT park_id, driver_id, status, status_at, traceparent FROM moved
    ON CONFLICT (park_id, driver_id) DO UPDATE
    SET status = excluded.status, updated_at = excluded.updated_at,
        traceparent = excluded.traceparent, claimed_until = NULL
    WHERE q.updated_at < excluded.updated_at)
SELECT park_id, driver_id FROM moved";

/// Re-queues the rejected rows of `drivers` (`(park_id, driver_id)`); returns those found.
pub async fn requeue(
    pool: &Pool,
    drivers: &[(String, String)],
) -> Result<Vec<(String, String)>, deadpool_postgres::PoolError> {
    let parks: Vec<&str> = drivers.iter().map(|d| d.0.as_str()).collect();
    let ids: Vec<&str> = drivers.iter().map(|d| d.1.as_str()).collect();
    let client = pool.get().await?;
    let rows = client.query(REQUEUE, &[&parks, &ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `text` with every non-empty `secret` (licence numbers, KRT ids) replaced by `<redacted>`.
pub fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.is_empty() && out.contains(s) {
            out = out.replace(s, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_secret() {
        assert_eq!(
            redact(
                r#"{"bad":"77AA1","again":"77AA1","id":"0123"}"#,
                ["77AA1", "", "0123"]
            ),
            r#"{"bad":"<redacted>","again":"<redacted>","id":"<redacted>"}"#
        );
    }
}
