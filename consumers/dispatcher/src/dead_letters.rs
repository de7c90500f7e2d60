//! Where a consumer group stands on a topic, read from the broker: the partitions, the group's
//! committed offsets, and from them how many dead letters of a subscriber still wait for a
//! replay. The subscriber registry counts with it; replay plans its ranges with it.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// Bound of every metadata, offset and watermark request here.
pub(crate) const META_TIMEOUT: Duration = Duration::from_secs(10);

/// Dead letters waiting (not replayed yet) in `dlq`, counted from the watermarks and the
/// position of the replay group `consumer` belongs to.
pub(crate) fn waiting(consumer: &BaseConsumer, dlq: &str) -> Result<i64, KafkaError> {
    let parts = partitions(consumer, dlq)?;
    let committed = committed(consumer, dlq, &parts)?;
    let mut waiting = 0;
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(dlq, p, META_TIMEOUT)?;
        let from = committed.get(&p).copied().unwrap_or(low).max(low);
        waiting += (high - from).max(0);
    }
    Ok(waiting)
}

pub(crate) fn partitions<C: Consumer>(consumer: &C, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let meta = consumer.fetch_metadata(Some(topic), META_TIMEOUT)?;
    Ok(meta
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

pub(crate) fn committed<C: Consumer>(
    consumer: &C,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, META_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
