//! Which offset is safe to commit when records of one partition finish out of order:
//! the lowest offset still in flight, or one past the highest seen when none is.

use std::collections::{BTreeSet, HashMap};

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
}
