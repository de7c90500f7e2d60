//! The periodic sender: claims queued statuses (`FOR UPDATE SKIP LOCKED` plus a lease, so
//! instances never send the same row twice), pushes them to KRT with bounded concurrency, and
//! in one transaction records KRT's answers and deletes exactly the row versions it sent.
//! KRT's answers are classified: KRT down keeps rows queued (and the sender backs off); a
//! refused chunk is bisected down to the rows at fault, which move to `deptrans.rejected`, so
//! one bad driver never stalls the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cache::Caches;
use super::config::{KrtMode, SenderConfig};
use super::db::lock;
use super::krt::{excerpt, KrtError, KrtStatus, StatusItem, StatusResult, TokenStore};
use super::metrics::DeptransMetrics;
use super::rejected::{self, reason, redact, Refusal, RejectedRow};
use super::upstream::{Licence, Upstream, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Krt(#[from] KrtError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

const CLAIM: &str = "
UPDATE deptrans.status_queue q
SET claimed_until = now() + $2::float8 * interval '1 millisecond'
FROM (SELECT park_id, driver_id FROM deptrans.status_queue
      WHERE claimed_until IS NULL OR claimed_until < now()
      ORDER BY updated_at LIMIT $1
      FOR UPDATE SKIP LOCKED) c
WHERE q.park_id = c.park_id AND q.driver_id = c.driver_id
RETURNING q.park_id, q.driver_id, q.status, q.updated_at, q.traceparent, q.deferred_since,
          q.attempts";

/// Rows whose version is unchanged are deleted; whatever is left of the batch (updated
/// meanwhile, failed, deferred) gets its claim set to `$5` (NULL = claimable now).
const DELETE_SENT: &str = "
DELETE FROM deptrans.status_queue q
USING unnest($1::text[], $2::text[], $3::timestamptz[]) AS s(park_id, driver_id, updated_at)
WHERE q.park_id = s.park_id AND q.driver_id = s.driver_id AND q.updated_at = s.updated_at";

const RELEASE: &str = "
UPDATE deptrans.status_queue q
SET claimed_until = NULL, deferred_reason = NULL, deferred_since = NULL, attempts = 0
FROM unnest($1::text[], $2::text[]) AS s(park_id, driver_id)
WHERE q.park_id = s.park_id AND q.driver_id = s.driver_id";

/// Deferred rows wait until `until`; `deferred_since` keeps the first deferral.
const DEFER: &str = "
UPDATE deptrans.status_queue q
SET claimed_until = s.until, deferred_reason = s.reason,
    deferred_since = COALESCE(q.deferred_since, now()), attempts = q.attempts + 1
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS s(park_id, driver_id, until, reason)
WHERE q.park_id = s.park_id AND q.driver_id = s.driver_id";

/// `$4` is the status KRT took (NULL for a refused row: the last status KRT has stays).
const MARK_SENT: &str = "
INSERT INTO deptrans.sent_marks AS m (park_id, driver_id, updated_at, status)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
ON CONFLICT (park_id, driver_id) DO UPDATE
SET updated_at = GREATEST(m.updated_at, excluded.updated_at),
    status = CASE WHEN excluded.updated_at >= m.updated_at
                  THEN COALESCE(excluded.status, m.status) ELSE m.status END";

/// Every shift state KRT answered joins the licence's history (a later answer about the same
/// state may add its end).
const SESSION_HISTORY: &str = "
INSERT INTO deptrans.session_history AS h (driver_license_pd_id, session_status, status_at, ended_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
ON CONFLICT (driver_license_pd_id, status_at, session_status) DO UPDATE
SET ended_at = COALESCE(excluded.ended_at, h.ended_at)";

/// Every status KRT took joins the driver's history (`$4` NULL: refused, not history).
const STATUS_HISTORY: &str = "
INSERT INTO deptrans.status_history (park_id, driver_id, status_at, status)
SELECT p, d, t, s FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(p, d, t, s)
WHERE s IS NOT NULL
ON CONFLICT DO NOTHING";

/// Write time strictly after every committed row, under the feed lock: cursor readers
/// never miss a row committed behind their cursor.
const WRITE_SESSIONS: &str = "
WITH ts AS (SELECT GREATEST(clock_timestamp(),
    COALESCE((SELECT max(updated_at) FROM deptrans.session_statuses), '-infinity') + interval '1 microsecond') AS t)
INSERT INTO deptrans.session_statuses AS s (driver_license_pd_id, session_status, status_at, updated_at, ended_at)
SELECT u.pd, u.st, u.at, ts.t, u.ended
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(pd, st, at, ended), ts
ON CONFLICT (driver_license_pd_id) DO UPDATE
SET session_status = excluded.session_status, status_at = excluded.status_at,
    updated_at = excluded.updated_at, ended_at = excluded.ended_at
WHERE s.status_at <= excluded.status_at";

/// The rows of one bulk request (index into the claimed rows, item) and KRT's answer to it.
type ChunkAnswer = (
    Vec<(usize, StatusItem)>,
    Result<Vec<StatusResult>, KrtError>,
);
/// Session status, the status time it answers, and when the shift ends.
type Session = (String, DateTime<Utc>, Option<DateTime<Utc>>);

/// What became of one claimed row.
#[derive(Debug, Clone)]
enum Outcome {
    /// KRT took it.
    Sent(StatusResult),
    /// Refused for good: moves to `deptrans.rejected` and leaves the queue.
    Refused(Refusal),
    /// Cannot be sent yet (`reason::UNKNOWN_DRIVER`, `reason::NO_LICENCE`): retried with
    /// growing delays, refused past `deferred_max_age_ms`.
    Deferred(&'static str),
    /// KRT (or a lookup) is down: the row stays queued and the sender backs off.
    Down,
}

/// Wait before try `attempts + 1` of a deferred row: `initial * 2^attempts`, at most `max`.
pub fn deferral_delay(initial_ms: u64, max_ms: u64, attempts: i32) -> Duration {
    let factor = 1u64 << attempts.clamp(0, 30);
    Duration::from_millis(initial_ms.saturating_mul(factor).min(max_ms))
}

/// A KRT error about what was sent (so bisecting the request finds the rows at fault), as
/// opposed to KRT being down.
fn refuses_content(e: &KrtError) -> bool {
    matches!(e, KrtError::Refused { .. } | KrtError::Malformed(_))
}

#[derive(Debug, Clone)]
struct Claimed {
    park_id: String,
    driver_id: String,
    status: KrtStatus,
    updated_at: DateTime<Utc>,
    traceparent: Option<String>,
    deferred_since: Option<DateTime<Utc>>,
    attempts: i32,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub claimed: usize,
    pub sent: usize,
    /// Rows refused for good, moved to `deptrans.rejected`.
    pub rejected: usize,
    /// Rows that cannot be sent yet (unknown driver, no licence), retried later.
    pub deferred: usize,
    /// Rows left for later because KRT or personal was down.
    pub failed: usize,
}

pub struct Sender {
    pub pool: Pool,
    pub caches: Arc<Caches>,
    pub upstream: Upstream,
    pub tokens: Arc<TokenStore>,
    pub cfg: SenderConfig,
    pub metrics: Arc<DeptransMetrics>,
}

impl Sender {
    /// Runs until `stop`: immediately again while batches come back full, after
    /// `interval_ms` when the queue is drained, with growing back-off while KRT is down.
    pub async fn run(self, stop: CancellationToken) -> Result<(), SendError> {
        let mut backoff = Duration::from_millis(self.cfg.backoff_initial_ms);
        loop {
            let pause = match self.run_once().await {
                Ok(r) if r.failed > 0 => {
                    let p = backoff;
                    backoff = (backoff * 2).min(Duration::from_millis(self.cfg.backoff_max_ms));
                    tracing::warn!(
                        failed = r.failed,
                        backoff_ms = p.as_millis() as u64,
                        "krt down, backing off"
                    );
                    p
                }
                Ok(r) => {
                    backoff = Duration::from_millis(self.cfg.backoff_initial_ms);
                    if r.claimed as i64 >= self.cfg.batch_size {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(self.cfg.interval_ms)
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sender run failed");
                    Duration::from_millis(self.cfg.interval_ms)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One claim-push-commit cycle.
    pub async fn run_once(&self) -> Result<RunReport, SendError> {
        let client = self.pool.get().await?;
        let lease = self.cfg.lease_ms as f64;
        let rows = client.query(CLAIM, &[&self.cfg.batch_size, &lease]).await?;
        drop(client);
        let claimed: Vec<Claimed> = rows
            .iter()
            .filter_map(|r| {
                Some(Claimed {
                    park_id: r.get(0),
                    driver_id: r.get(1),
                    status: KrtStatus::parse(r.get(2))?,
                    updated_at: r.get(3),
                    traceparent: r.get(4),
                    deferred_since: r.get(5),
                    attempts: r.get(6),
                })
            })
            .collect();
        let mut report = RunReport {
            claimed: rows.len(),
            ..RunReport::default()
        };
        if claimed.is_empty() {
            return Ok(report);
        }
        // One trace per non-empty batch, linked to the trace of each status it sends (the
        // ingress request that produced it); the KRT requests are its client spans.
        let span = tracing::info_span!(
            "krt.send",
            otel.name = "send statuses to krt",
            rows = claimed.len(),
            sent = tracing::field::Empty,
            failed = tracing::field::Empty,
        );
        super::consumer::link_traces(&span, claimed.iter().map(|c| c.traceparent.as_deref()));

        // Licence pd ids from the profiles cache; unknown drivers wait for the cache.
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for c in claimed {
            match self.caches.profiles.licence_pd_id(&c.park_id, &c.driver_id) {
                Some(pd) => known.push((c, pd)),
                None => unknown.push(c),
            }
        }

        let results = match self.push(&known).instrument(span.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, rows = known.len(), "push failed, rows stay queued");
                vec![Outcome::Down; known.len()]
            }
        };
        let mut rows: Vec<(Claimed, Option<String>, Outcome)> = known
            .into_iter()
            .zip(results)
            .map(|((c, pd), o)| (c, Some(pd), o))
            .collect();
        rows.extend(
            unknown
                .into_iter()
                .map(|c| (c, None, Outcome::Deferred(reason::UNKNOWN_DRIVER))),
        );
        self.expire_deferred(&mut rows);
        self.commit(&rows, &mut report)
            .instrument(span.clone())
            .await?;
        span.record("sent", report.sent);
        span.record("failed", report.failed);
        self.metrics.sent("sent", report.sent as u64);
        self.metrics.sent("rejected", report.rejected as u64);
        self.metrics.sent("deferred", report.deferred as u64);
        self.metrics.sent("failed", report.failed as u64);
        Ok(report)
    }

    /// Pushes in chunks of `bulk_size`, `concurrency` at a time, and classifies every row:
    /// KRT down (5xx, timeout, connection, 401 after a refresh) leaves the chunk's rows
    /// queued; a refused chunk (4xx, malformed answer) is halved and pushed again until the
    /// refused rows stand alone; a row KRT's answer marks `rejected` is refused by itself.
    async fn push(&self, rows: &[(Claimed, String)]) -> Result<Vec<Outcome>, SendError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let pd_ids: Vec<String> = rows.iter().map(|(_, pd)| pd.clone()).collect();
        let client = self.pool.get().await?;
        let bound: HashMap<String, String> = client
            .query(
                "SELECT driver_license_pd_id, deptrans_id FROM deptrans.profiles WHERE driver_license_pd_id = ANY($1)",
                &[&pd_ids],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        drop(client);
        let mut need: Vec<String> = pd_ids
            .iter()
            .filter(|p| !bound.contains_key(*p))
            .cloned()
            .collect();
        need.sort();
        need.dedup();
        // personal down is transient: rows that need a licence wait like rows for KRT down,
        // never taken for "no licence".
        let (licences, personal_up): (HashMap<String, _>, bool) = match self
            .upstream
            .licences(need)
            .await
        {
            Ok(items) => (items.into_iter().map(|i| (i.id, i.license)).collect(), true),
            Err(e) => {
                tracing::warn!(error = %e, "personal lookup failed, rows without a bound id stay queued");
                (HashMap::new(), false)
            }
        };
        // Personal data KRT may echo in an answer: never stored or logged.
        let secrets: Vec<&str> = licences
            .values()
            .map(Licence::expose)
            .chain(bound.values().map(String::as_str))
            .collect();

        let mut out: Vec<Outcome> = vec![Outcome::Down; rows.len()];
        let mut pending: Vec<Vec<(usize, StatusItem)>> = Vec::new();
        let mut sendable = Vec::new();
        for (i, (c, pd)) in rows.iter().enumerate() {
            let deptrans_id = bound.get(pd).cloned();
            let license = match (&deptrans_id, licences.get(pd)) {
                (Some(_), _) => None,
                (None, Some(l)) => Some(l.clone()),
                (None, None) if personal_up => {
                    out[i] = Outcome::Deferred(reason::NO_LICENCE);
                    continue;
                }
                (None, None) => continue,
            };
            sendable.push((
                i,
                StatusItem {
                    deptrans_id,
                    license,
                    status: c.status,
                    timestamp: c.updated_at,
                },
            ));
        }
        let per_request = match self.tokens.client.mode() {
            KrtMode::Bulk => self.cfg.bulk_size,
            KrtMode::Single => 1,
        };
        pending.extend(sendable.chunks(per_request).map(<[_]>::to_vec));

        while !pending.is_empty() {
            let answers: Vec<ChunkAnswer> = stream::iter(std::mem::take(&mut pending))
                .map(|chunk| async move {
                    let items: Vec<StatusItem> = chunk.iter().map(|(_, it)| it.clone()).collect();
                    let res = match self.tokens.client.mode() {
                        KrtMode::Bulk => {
                            self.tokens
                                .with_token(|t| {
                                    let items = &items;
                                    async move { self.tokens.client.push(&t, items).await }
                                })
                                .await
                        }
                        KrtMode::Single => {
                            let item = &items[0];
                            self.tokens
                                .with_token(|t| async move {
                                    self.tokens.client.push_one(&t, item).await
                                })
                                .await
                                .map(|r| vec![r])
                        }
                    };
                    (chunk, res)
                })
                .buffer_unordered(self.cfg.concurrency)
                .collect()
                .await;
            for (chunk, res) in answers {
                match res {
                    Ok(results) => {
                        for ((i, _), r) in chunk.iter().zip(results) {
                            out[*i] = if r.result == "ok" {
                                Outcome::Sent(r)
                            } else {
                                let answer = serde_json::to_string(&r).unwrap_or_default();
                                Outcome::Refused(Refusal {
                                    reason: reason::KRT_REJECTED,
                                    krt_status: None,
                                    answer: redact(&excerpt(&answer), secrets.iter().copied()),
                                })
                            };
                        }
                    }
                    Err(e) if refuses_content(&e) && chunk.len() > 1 => {
                        self.metrics.krt_bisections.inc();
                        tracing::info!(error = %e, rows = chunk.len(), "krt refused a chunk, halving it");
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        pending.push(a.to_vec());
                        pending.push(b.to_vec());
                    }
                    Err(KrtError::Refused { status, excerpt }) => {
                        out[chunk[0].0] = Outcome::Refused(Refusal {
                            reason: reason::KRT_REFUSED,
                            krt_status: Some(i32::from(status)),
                            answer: redact(&excerpt, secrets.iter().copied()),
                        });
                    }
                    Err(KrtError::Malformed(why)) => {
                        out[chunk[0].0] = Outcome::Refused(Refusal {
                            reason: reason::KRT_MALFORMED,
                            krt_status: None,
                            answer: redact(&excerpt(&why), secrets.iter().copied()),
                        });
                    }
                    Err(e) => {
                        self.metrics.krt_failures.inc();
                        tracing::warn!(error = %e, rows = chunk.len(), "krt push failed, rows stay queued");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deferred rows deferred for longer than `deferred_max_age_ms` are refused with their
    /// reason.
    fn expire_deferred(&self, rows: &mut [(Claimed, Option<String>, Outcome)]) {
        let max_age = chrono::Duration::milliseconds(
            i64::try_from(self.cfg.deferred_max_age_ms).unwrap_or(i64::MAX),
        );
        let now = Utc::now();
        for (c, _, outcome) in rows.iter_mut() {
            if let Outcome::Deferred(why) = *outcome {
                if c.deferred_since.is_some_and(|t| now - t >= max_age) {
                    *outcome = Outcome::Refused(Refusal {
                        reason: why,
                        krt_status: None,
                        answer: String::new(),
                    });
                }
            }
        }
    }

    async fn commit(
        &self,
        rows: &[(Claimed, Option<String>, Outcome)],
        report: &mut RunReport,
    ) -> Result<(), SendError> {
        let (mut del_p, mut del_d, mut del_t) = (Vec::new(), Vec::new(), Vec::new());
        let mut del_s: Vec<Option<&str>> = Vec::new();
        let (mut rel_p, mut rel_d) = (Vec::new(), Vec::new());
        let (mut def_p, mut def_d, mut def_u, mut def_r) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sessions: HashMap<String, Session> = HashMap::new();
        let mut refused = Vec::new();
        let now = Utc::now();
        for (c, pd, res) in rows {
            match res {
                Outcome::Sent(r) => {
                    report.sent += 1;
                    let st = r.session_status.clone().unwrap_or_else(|| "unknown".into());
                    if let Some(pd) = pd {
                        let newer = sessions
                            .get(pd)
                            .is_none_or(|(_, at, _)| *at <= c.updated_at);
                        if newer {
                            sessions.insert(pd.clone(), (st, c.updated_at, r.ended_at));
                        }
                    }
                }
                Outcome::Refused(why) => {
                    report.rejected += 1;
                    self.metrics.rejected(why.reason);
                    tracing::warn!(park_id = %c.park_id, driver_id = %c.driver_id, reason = why.reason, krt_status = why.krt_status, "status refused, moved to deptrans.rejected");
                    refused.push(RejectedRow {
                        park_id: &c.park_id,
                        driver_id: &c.driver_id,
                        status: c.status.as_str(),
                        status_at: c.updated_at,
                        traceparent: c.traceparent.as_deref(),
                        refusal: why,
                    });
                }
                Outcome::Deferred(why) => {
                    report.deferred += 1;
                    let wait = deferral_delay(
                        self.cfg.unknown_driver_delay_ms,
                        self.cfg.deferred_delay_max_ms,
                        c.attempts,
                    );
                    def_p.push(c.park_id.as_str());
                    def_d.push(c.driver_id.as_str());
                    def_u.push(now + chrono::Duration::from_std(wait).unwrap_or_default());
                    def_r.push(*why);
                    continue;
                }
                Outcome::Down => {
                    report.failed += 1;
                    rel_p.push(c.park_id.as_str());
                    rel_d.push(c.driver_id.as_str());
                    continue;
                }
            }
            // Sent or refused: this version leaves the queue (a newer one stays, due now).
            del_s.push(matches!(res, Outcome::Sent(_)).then(|| c.status.as_str()));
            del_p.push(c.park_id.as_str());
            del_d.push(c.driver_id.as_str());
            del_t.push(c.updated_at);
            rel_p.push(c.park_id.as_str());
            rel_d.push(c.driver_id.as_str());
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !sessions.is_empty() {
            let (mut pds, mut sts, mut ats, mut ends) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (pd, (st, at, end)) in sessions {
                pds.push(pd);
                sts.push(st);
                ats.push(at);
                ends.push(end);
            }
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::STATUS_FEED])
                .await?;
            tx.execute(WRITE_SESSIONS, &[&pds, &sts, &ats, &ends])
                .await?;
            tx.execute(SESSION_HISTORY, &[&pds, &sts, &ats, &ends])
                .await?;
        }
        if !del_p.is_empty() {
            tx.execute(DELETE_SENT, &[&del_p, &del_d, &del_t]).await?;
            tx.execute(MARK_SENT, &[&del_p, &del_d, &del_t, &del_s])
                .await?;
            tx.execute(STATUS_HISTORY, &[&del_p, &del_d, &del_t, &del_s])
                .await?;
        }
        rejected::insert(&tx, &refused).await?;
        if !rel_p.is_empty() {
            tx.execute(RELEASE, &[&rel_p, &rel_d]).await?;
        }
        if !def_p.is_empty() {
            tx.execute(DEFER, &[&def_p, &def_d, &def_u, &def_r]).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferral_delays_double_up_to_the_maximum() {
        let d = |attempts| deferral_delay(1_000, 15_000, attempts).as_millis();
        assert_eq!(
            (0..6).map(d).collect::<Vec<_>>(),
            vec![1_000, 2_000, 4_000, 8_000, 15_000, 15_000]
        );
        assert_eq!(d(1_000), 15_000);
        assert_eq!(d(-1), 1_000);
    }
}
