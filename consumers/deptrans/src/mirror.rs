//! In-memory mirrors of the two feed tables, `profiles` (bound KRT ids) and `session_statuses`,
//! so that the feeds and the driver's id GET keep answering while PostgreSQL is down or slow
//! ("we can live on caches for a while"): they ask PostgreSQL first and the mirror when it
//! has not answered within a second (`api::feeds::or_mirror`).
//!
//! A follower reads each table through the same cursor the feeds serve, `(updated_at, key)`,
//! every `interval`: writers stamp `updated_at` strictly after every committed row, so the
//! mirror is always a prefix of the feed, and a row that moves (rewritten) leaves its old place.
//! The feeds serve only up to the follower's position (never a row ahead of one not yet seen).
//! A bind also writes its row into the mirror at once, so the driver's GET sees it; the
//! follower meets the same row later and changes nothing. Retention is applied to the session
//! mirror with the table's rule. Until its first full read a mirror answers nothing.
//!
//! Memory: one entry per row, about 200 bytes with both indexes; 1M bound ids ~ 200 MB.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

/// A row's place in its feed.
pub type Position = (DateTime<Utc>, String);

/// A bound KRT id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub deptrans_id: String,
}

/// KRT's latest answer for a licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub session_status: String,
    pub status_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

struct Inner<T> {
    ordered: BTreeMap<Position, T>,
    at: HashMap<String, DateTime<Utc>>,
    /// Where the follower is: every row up to here has been read.
    followed: Position,
    synced: bool,
}

/// One table's mirror.
pub struct Mirror<T> {
    inner: RwLock<Inner<T>>,
}

impl<T: Clone> Default for Mirror<T> {
    fn default() -> Self {
        Self {
            inner: RwLock::new(Inner {
                ordered: BTreeMap::new(),
                at: HashMap::new(),
                followed: (DateTime::<Utc>::UNIX_EPOCH, String::new()),
                synced: false,
            }),
        }
    }
}

impl<T: Clone> Mirror<T> {
    /// Whether the follower has read the whole table once.
    pub fn synced(&self) -> bool {
        self.read().synced
    }

    pub fn len(&self) -> usize {
        self.read().at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row of `key`, if any.
    pub fn get(&self, key: &str) -> Option<(DateTime<Utc>, T)> {
        let inner = self.read();
        let at = *inner.at.get(key)?;
        let row = inner.ordered.get(&(at, key.to_owned()))?.clone();
        Some((at, row))
    }

    /// Up to `limit` rows after `after`, in feed order, none past the follower's position.
    pub fn page(&self, after: &Position, limit: usize) -> Vec<(Position, T)> {
        let inner = self.read();
        inner
            .ordered
            .range((
                Bound::Excluded(after.clone()),
                Bound::Included(inner.followed.clone()),
            ))
            .take(limit)
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect()
    }

    /// Puts `row` at `position`, leaving the key's previous place.
    pub fn put(&self, position: Position, row: T) {
        let mut inner = self.write();
        put(&mut inner, position, row);
    }

    /// Rows the follower read, in feed order; `complete` when it reached the end.
    fn follow(&self, rows: Vec<(Position, T)>, complete: bool) {
        let mut inner = self.write();
        for (position, row) in rows {
            if position > inner.followed {
                inner.followed = position.clone();
            }
            put(&mut inner, position, row);
        }
        if complete {
            inner.synced = true;
        }
    }

    fn followed(&self) -> Position {
        self.read().followed.clone()
    }

    /// Drops the rows `keep` refuses.
    fn retain(&self, keep: impl Fn(&Position, &T) -> bool) {
        let mut inner = self.write();
        let gone: Vec<Position> = inner
            .ordered
            .iter()
            .filter(|(p, t)| !keep(p, t))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            inner.ordered.remove(&p);
            if inner.at.get(&p.1) == Some(&p.0) {
                inner.at.remove(&p.1);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<T>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn put<T>(inner: &mut Inner<T>, position: Position, row: T) {
    let (at, key) = &position;
    if let Some(old) = inner.at.insert(key.clone(), *at) {
        if old != *at {
            inner.ordered.remove(&(old, key.clone()));
        }
    }
    inner.ordered.insert(position, row);
}

/// Both mirrors.
#[derive(Default)]
pub struct Mirrors {
    pub profiles: Mirror<Profile>,
    pub sessions: Mirror<Session>,
}

/// Rows read per query while following.
const FOLLOW_PAGE: i64 = 5_000;

impl Mirrors {
    /// Follows both tables every `every` until `stop`; drops sessions past `retention_days`
    /// once a minute. A failed read (PostgreSQL down) is retried at the next tick; the mirrors
    /// keep serving meanwhile.
    pub async fn follow(
        self: Arc<Self>,
        pool: Pool,
        every: Duration,
        retention_days: u32,
        stop: CancellationToken,
    ) {
        let mut ticks: u64 = 0;
        let prune_every = (60_000 / every.as_millis().max(1)) as u64;
        switchyard_runtime::shutdown::every(every, &stop, || {
            ticks += 1;
            let prune = ticks.is_multiple_of(prune_every.max(1));
            let (me, pool) = (self.clone(), pool.clone());
            async move {
                if let Err(e) = me.follow_once(&pool).await {
                    tracing::debug!(error = %e, "mirror follow failed; serving what is mirrored");
                }
                if prune {
                    me.prune_sessions(retention_days);
                }
            }
        })
        .await;
    }

    /// Reads every row written since the last read, for both tables.
    pub async fn follow_once(&self, pool: &Pool) -> Result<(), crate::db::DbError> {
        let client = pool.get().await?;
        loop {
            let (at, key) = self.profiles.followed();
            let rows = client
                .query(
                    "SELECT updated_at, driver_license_pd_id, deptrans_id FROM deptrans.profiles
                     WHERE (updated_at, driver_license_pd_id) > ($1, $2)
                     ORDER BY updated_at, driver_license_pd_id LIMIT $3",
                    &[&at, &key, &FOLLOW_PAGE],
                )
                .await?;
            let complete = (rows.len() as i64) < FOLLOW_PAGE;
            self.profiles.follow(
                rows.iter()
                    .map(|r| {
                        (
                            (r.get(0), r.get(1)),
                            Profile {
                                deptrans_id: r.get(2),
                            },
                        )
                    })
                    .collect(),
                complete,
            );
            if complete {
                break;
            }
        }
        loop {
            let (at, key) = self.sessions.followed();
            let rows = client
                .query(
                    "SELECT updated_at, driver_license_pd_id, session_status, status_at, ended_at
                     FROM deptrans.session_statuses
                     WHERE (updated_at, driver_license_pd_id) > ($1, $2)
                     ORDER BY updated_at, driver_license_pd_id LIMIT $3",
                    &[&at, &key, &FOLLOW_PAGE],
                )
                .await?;
            let complete = (rows.len() as i64) < FOLLOW_PAGE;
            self.sessions.follow(
                rows.iter()
                    .map(|r| {
                        (
                            (r.get(0), r.get(1)),
                            Session {
                                session_status: r.get(2),
                                status_at: r.get(3),
                                ended_at: r.get(4),
                            },
                        )
                    })
                    .collect(),
                complete,
            );
            if complete {
                break;
            }
        }
        Ok(())
    }

    /// The retention rule of `session_statuses` (`retention::purge`), in memory.
    fn prune_sessions(&self, days: u32) {
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        self.sessions.retain(|(updated_at, _), s| match s.ended_at {
            Some(ended) => ended >= cutoff,
            None => *updated_at >= cutoff,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn p(s: i64, k: &str) -> Position {
        (t(s), k.to_owned())
    }

    #[test]
    fn a_rewritten_row_moves_and_pages_stop_at_the_followed_position() {
        let m: Mirror<u32> = Mirror::default();
        m.follow(vec![(p(1, "a"), 1), (p(2, "b"), 2), (p(3, "a"), 3)], true);
        assert!(m.synced());
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), Some((t(3), 3)));
        let all: Vec<u32> = m.page(&p(0, ""), 10).into_iter().map(|x| x.1).collect();
        assert_eq!(all, [2, 3], "a left its old place");
        // A bind put in ahead of the follower: readable by key, not served by the feed yet.
        m.put(p(9, "c"), 9);
        assert_eq!(m.get("c"), Some((t(9), 9)));
        assert_eq!(m.page(&p(3, "a"), 10), vec![]);
        m.follow(vec![(p(9, "c"), 9)], true);
        assert_eq!(m.page(&p(3, "a"), 10), vec![(p(9, "c"), 9)]);
        assert_eq!(m.page(&p(0, ""), 1).len(), 1, "limit");
    }

    #[test]
    fn retain_drops_rows_and_their_keys() {
        let m: Mirror<u32> = Mirror::default();
        m.follow(vec![(p(1, "a"), 1), (p(2, "b"), 2)], true);
        m.retain(|(at, _), _| *at >= t(2));
        assert_eq!(m.get("a"), None);
        assert_eq!(m.len(), 1);
    }
}
