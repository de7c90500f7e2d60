//! Ordered mode (`ordering = "key"`): while a record of key K waits in a retry tier, every
//! later record of K for the subscriber is parked behind it, and a parked record is attempted
//! only once every earlier record of its key is done.
//!
//! The records waiting are kept in Postgres (`switchyard_admin.ordered_parked`, one row each,
//! named by where it was first read: source topic, partition, offset). Postgres rather than a
//! compacted topic because two consumers write a key's state: the owner of the source
//! partition adds rows and whoever reads the retry tier (another replica, perhaps) removes
//! them; a row update is atomic and every replica reads the same table at once, with no
//! single writer to elect and no topic to read to its end after every rebalance.
//!
//! The rules, which hold across a crash and a rebalance because each step is repeated safely:
//! - a record is attempted only when no row of its key with an earlier offset exists;
//! - a record's row is written before its parked copy is produced, and removed only after it
//!   was delivered or dead-lettered (a dead letter leaves the order: its key goes on);
//! - a parked copy whose row is gone was delivered already and is dropped.
//!
//! Order is per key within one source partition (where Kafka keeps a key's records); keyless
//! records are not ordered.

use deadpool_postgres::Pool;
use switchyard_runtime::pg::DbError;
use tokio_postgres::types::ToSql;

/// Where a record was first read: its place in its key's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Origin {
    /// Parses the `sy-origin` header (`topic/partition/offset`; topic names have no `/`).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut it = s.rsplitn(3, '/');
        let offset = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let topic = it.next()?;
        (!topic.is_empty()).then(|| Self {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }
}

/// What the table says about one record of an ordered key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// An earlier record of its key is still waiting: it must wait behind it.
    pub behind: bool,
    /// Its own row exists: it was parked and not yet delivered.
    pub own_row: bool,
}

/// The parked records of one ordered subscriber.
pub(crate) struct OrderedKeys {
    pool: Pool,
    subscriber: String,
}

impl OrderedKeys {
    pub(crate) fn new(pool: Pool, subscriber: String) -> Self {
        Self { pool, subscriber }
    }

    /// `$1`..`$5` of every statement: the record's subscriber, origin and key.
    fn params<'a>(&'a self, key: &'a &[u8], at: &'a Origin) -> [&'a (dyn ToSql + Sync); 5] {
        [&self.subscriber, &at.topic, &at.partition, key, &at.offset]
    }

    pub(crate) async fn place(&self, key: &[u8], at: &Origin) -> Result<Place, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT min(origin_offset), coalesce(bool_or(origin_offset = $5), false)
                   FROM switchyard_admin.ordered_parked
                  WHERE subscriber = $1 AND origin_topic = $2 AND origin_partition = $3
                    AND key = $4 AND origin_offset <= $5",
                &self.params(&key, at),
            )
            .await?;
        let first: Option<i64> = row.get(0);
        Ok(Place {
            behind: first.is_some_and(|f| f < at.offset),
            own_row: row.get(1),
        })
    }

    /// Records that `at` waits in a retry tier (before its parked copy is produced).
    pub(crate) async fn hold(&self, key: &[u8], at: &Origin) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO switchyard_admin.ordered_parked
                        (subscriber, origin_topic, origin_partition, key, origin_offset)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &self.params(&key, at),
            )
            .await?;
        Ok(())
    }

    /// `at` is done (delivered or dead-lettered): the next record of its key may go.
    pub(crate) async fn release(&self, key: &[u8], at: &Origin) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM switchyard_admin.ordered_parked
                  WHERE subscriber = $1 AND origin_topic = $2 AND origin_partition = $3
                    AND key = $4 AND origin_offset = $5",
                &self.params(&key, at),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Origin;
    use crate::config::Ordering;

    #[test]
    fn ordering_by_key_needs_the_database_and_says_so() {
        let config = |extra: &str| -> crate::DispatcherConfig {
            toml::from_str(&format!(
                "{extra}[[subscribers]]\nname = \"s\"\ntopics = [\"t\"]\nordering = \"key\"\n\
                 [subscribers.target]\nkind = \"topic\"\ntopic = \"out\"\n"
            ))
            .unwrap()
        };
        let err = config("").validate().unwrap_err().to_string();
        assert!(err.starts_with("subscribers[0].ordering:"), "{err}");
        let ok = config("[attempt_log]\ndatabase_url = \"postgres://h/db\"\n");
        ok.validate().unwrap();
        assert_eq!(ok.subscribers[0].ordering, Ordering::Key);
        let bad: Result<crate::DispatcherConfig, _> = toml::from_str(
            "[[subscribers]]\nname = \"s\"\ntopics = [\"t\"]\nordering = \"fifo\"\n\
             [subscribers.target]\nkind = \"topic\"\ntopic = \"out\"\n",
        );
        assert!(bad.unwrap_err().to_string().contains("ordering"));
    }

    #[test]
    fn origins_parse_from_the_right() {
        assert_eq!(
            Origin::parse("uid.events/3/1200"),
            Some(Origin {
                topic: "uid.events".into(),
                partition: 3,
                offset: 1200
            })
        );
        assert_eq!(Origin::parse("3/1200"), None);
        assert_eq!(Origin::parse("t/x/1"), None);
        assert_eq!(Origin::parse("/1/2"), None);
    }
}
