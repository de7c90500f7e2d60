//! Which offset is safe to commit when records of one partition finish out of order:
//! the lowest offset still in flight, or one past the highest seen when none is
//! ([`OffsetTracker`]); and the [`Ledger`] that shares it between the consumer loop, the lanes
//! and the rebalance callback, so a revoked partition is drained before it is let go.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Partition {
    in_flight: BTreeSet<i64>,
    next: i64,
    committed: i64,
}

/// Tracks in-flight offsets per (topic, partition).
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    parts: HashMap<(String, i32), Partition>,
}

impl OffsetTracker {
    pub(crate) fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        // The first record seen marks where this consumer started: nothing before it is ours.
        let p = self
            .parts
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Partition {
                in_flight: BTreeSet::new(),
                next: offset,
                committed: offset,
            });
        p.in_flight.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// Marks `offset` done; returns the new commit position (next offset to read) when it moved.
    pub(crate) fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.parts.get_mut(&(topic.to_owned(), partition))?;
        if !p.in_flight.remove(&offset) {
            return None;
        }
        let position = p.in_flight.first().copied().unwrap_or(p.next);
        (position > p.committed).then(|| {
            p.committed = position;
            position
        })
    }

    /// Forgets partitions this consumer no longer owns.
    pub(crate) fn forget(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(topic.to_owned(), partition));
    }

    /// The commit position of one partition, when it is tracked.
    pub(crate) fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts
            .get(&(topic.to_owned(), partition))
            .map(|p| p.committed)
    }

    /// Commit positions of every tracked partition.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (&str, i32, i64)> + '_ {
        self.parts
            .iter()
            .map(|((t, part), p)| (t.as_str(), *part, p.committed))
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.in_flight.len()).sum()
    }
}

/// What a record taken off the consumer carries to its lane: which ownership of its partition
/// it belongs to, and two tokens of that ownership's end. `hurry` is cancelled when the
/// partition is revoked (or shutdown's drain window passed): a record waiting to retry is
/// parked at once instead. `abandon` is cancelled when the drain bound passed: a record not
/// started yet is left to the next owner.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    epoch: u64,
    pub hurry: CancellationToken,
    pub abandon: CancellationToken,
}

/// The settlement of one subscriber's partitions: the loop begins records, the lanes settle
/// or abandon them (storing the offset under the lock, so stores never go backwards), and the
/// rebalance callback waits for a revoked partition's begun records before committing where it
/// stands and letting it go.
#[derive(Default)]
pub(crate) struct Ledger {
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    tracker: OffsetTracker,
    owned: HashMap<(String, i32), Owned>,
    epochs: u64,
}

struct Owned {
    epoch: u64,
    hurry: CancellationToken,
    abandon: CancellationToken,
    /// Begun records not yet settled or abandoned.
    outstanding: usize,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin(&self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let mut inner = self.lock();
        inner.epochs += 1;
        let epoch = inner.epochs;
        let owned = inner
            .owned
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Owned {
                epoch,
                hurry: CancellationToken::new(),
                abandon: CancellationToken::new(),
                outstanding: 0,
            });
        owned.outstanding += 1;
        let ticket = Ticket {
            epoch: owned.epoch,
            hurry: owned.hurry.clone(),
            abandon: owned.abandon.clone(),
        };
        inner.tracker.begin(topic, partition, offset);
        ticket
    }

    /// `offset` is handled (delivered, skipped or parked): `store` gets the new commit
    /// position when it moved. A record of an ownership that ended is ignored: its partition
    /// was committed and let go without it, and the next owner handles it again.
    pub(crate) fn settle(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        ticket: &Ticket,
        store: impl FnOnce(i64),
    ) {
        let mut inner = self.lock();
        if !inner.release(topic, partition, ticket) {
            return;
        }
        if let Some(next) = inner.tracker.finish(topic, partition, offset) {
            store(next);
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// `offset` will not be handled here (its partition was revoked before it started, or
    /// shutdown interrupted it): nothing is committed past it.
    pub(crate) fn abandon(&self, topic: &str, partition: i32, ticket: &Ticket) {
        if self.lock().release(topic, partition, ticket) {
            self.changed.notify_all();
        }
    }

    /// Ends this consumer's ownership of `partitions`: their records waiting to retry are
    /// parked at once, the rest (queued in lanes included) get up to `bound` to be handled;
    /// then records not started are abandoned to the next owner. Returns where each partition
    /// now stands (the offset to commit) and forgets it. Records begun are finished rather
    /// than abandoned because lanes finish out of order: the commit position stops at the
    /// first unfinished record, and every record after it that another lane already delivered
    /// would be delivered again by the next owner.
    pub(crate) fn revoke(
        &self,
        partitions: &[(String, i32)],
        bound: Duration,
    ) -> Vec<(String, i32, i64)> {
        let mut inner = self.lock();
        for p in partitions {
            if let Some(o) = inner.owned.get(p) {
                o.hurry.cancel();
            }
        }
        let deadline = Instant::now() + bound;
        let busy = |inner: &Inner| {
            partitions
                .iter()
                .any(|p| inner.owned.get(p).is_some_and(|o| o.outstanding > 0))
        };
        while busy(&inner) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    ?bound,
                    "revoked partitions still busy after the bound: records not started are left to the next owner"
                );
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut positions = Vec::new();
        for (topic, partition) in partitions {
            if let Some(o) = inner.owned.remove(&(topic.clone(), *partition)) {
                o.hurry.cancel();
                o.abandon.cancel();
            }
            if let Some(at) = inner.tracker.position(topic, *partition) {
                positions.push((topic.clone(), *partition, at));
            }
            inner.tracker.forget(topic, *partition);
        }
        positions
    }

    /// Shutdown's drain window passed: records waiting to retry are parked now, and records
    /// not started are left for the next run.
    pub(crate) fn end_all(&self) {
        for o in self.lock().owned.values() {
            o.hurry.cancel();
            o.abandon.cancel();
        }
    }

    pub(crate) fn positions(&self) -> Vec<(String, i32, i64)> {
        self.lock()
            .tracker
            .positions()
            .map(|(t, p, at)| (t.to_owned(), p, at))
            .collect()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.lock().tracker.in_flight()
    }
}

impl Inner {
    /// One begun record of `ticket`'s ownership is done with; false when that ownership ended.
    fn release(&mut self, topic: &str, partition: i32, ticket: &Ticket) -> bool {
        match self.owned.get_mut(&(topic.to_owned(), partition)) {
            Some(o) if o.epoch == ticket.epoch => {
                o.outstanding = o.outstanding.saturating_sub(1);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_below_the_lowest_in_flight_offset() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.begin("a", 0, o);
        }
        assert_eq!(t.finish("a", 0, 12), None, "10 and 11 still in flight");
        assert_eq!(t.finish("a", 0, 10), Some(11));
        assert_eq!(t.finish("a", 0, 11), Some(13));
        assert_eq!(t.finish("a", 0, 14), None);
        assert_eq!(t.finish("a", 0, 13), Some(15));
        assert_eq!(
            t.finish("a", 0, 13),
            None,
            "finishing twice changes nothing"
        );
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.positions().collect::<Vec<_>>(), vec![("a", 0, 15)]);
    }

    #[test]
    fn a_revoke_waits_for_begun_records_and_commits_past_them() {
        let ledger = std::sync::Arc::new(Ledger::default());
        let tickets: Vec<Ticket> = (0..3).map(|o| ledger.begin("t", 0, o)).collect();
        let other = ledger.begin("t", 1, 7);
        let lane = {
            let (ledger, tickets) = (ledger.clone(), tickets.clone());
            std::thread::spawn(move || {
                assert!(tickets[0].hurry.is_cancelled() || !tickets[0].abandon.is_cancelled());
                for (o, t) in tickets.iter().enumerate() {
                    std::thread::sleep(Duration::from_millis(20));
                    ledger.settle("t", 0, o as i64, t, |_| {});
                }
            })
        };
        let positions = ledger.revoke(&[("t".into(), 0)], Duration::from_secs(5));
        lane.join().unwrap();
        assert_eq!(
            positions,
            vec![("t".to_owned(), 0, 3)],
            "all three finished"
        );
        assert!(tickets[0].hurry.is_cancelled() && tickets[0].abandon.is_cancelled());
        assert!(!other.hurry.is_cancelled(), "partition 1 is still ours");
        // A late settle of the ended ownership changes nothing, even once the partition is back.
        let again = ledger.begin("t", 0, 3);
        let mut stored = None;
        ledger.settle("t", 0, 2, &tickets[2], |n| stored = Some(n));
        assert_eq!(stored, None);
        ledger.settle("t", 0, 3, &again, |n| stored = Some(n));
        assert_eq!(stored, Some(4));
    }

    #[test]
    fn past_the_bound_a_revoke_abandons_what_did_not_start_and_commits_before_it() {
        let ledger = Ledger::default();
        let done = ledger.begin("t", 0, 10);
        let _stuck = ledger.begin("t", 0, 11);
        let _queued = ledger.begin("t", 0, 12);
        let mut stored = None;
        ledger.settle("t", 0, 10, &done, |n| stored = Some(n));
        assert_eq!(stored, Some(11));
        let positions = ledger.revoke(&[("t".into(), 0)], Duration::from_millis(50));
        assert_eq!(
            positions,
            vec![("t".to_owned(), 0, 11)],
            "11 and 12 go to the next owner"
        );
        assert!(_queued.abandon.is_cancelled());
        assert_eq!(ledger.in_flight(), 0, "the partition is forgotten");
    }
}
