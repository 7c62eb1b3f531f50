//! Which offsets a durable batch allows storing. A batch is stored only after every one of its
//! records has a durable outcome, so per partition the next offset to consume is the highest
//! offset in the batch plus one. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::InputRecord;

/// Per (topic, partition) of `records`, the next offset to consume after them, in key order.
pub fn next_offsets<'a>(records: impl IntoIterator<Item = &'a InputRecord>) -> Vec<(Arc<str>, i32, i64)> {
    let mut next: BTreeMap<(Arc<str>, i32), i64> = BTreeMap::new();
    for record in records {
        let entry = next.entry((Arc::clone(&record.topic), record.partition)).or_insert(record.offset + 1);
        *entry = (*entry).max(record.offset + 1);
    }
    next.into_iter().map(|((topic, partition), offset)| (topic, partition, offset)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &Arc<str>, partition: i32, offset: i64) -> InputRecord {
        InputRecord {
            topic: Arc::clone(topic),
            partition,
            offset,
            key: None,
            value: None,
            consumed_at: chrono::Utc::now(),
        }
    }

    /// Highest offset + 1 per partition, whatever the order records arrive in.
    #[test]
    fn highest_offset_plus_one_per_partition() {
        let (t, u): (Arc<str>, Arc<str>) = (Arc::from("t"), Arc::from("u"));
        let records = [record(&t, 0, 5), record(&t, 1, 9), record(&t, 0, 7), record(&t, 0, 6), record(&u, 0, 1)];
        let next: Vec<(String, i32, i64)> = next_offsets(&records)
            .into_iter()
            .map(|(topic, partition, offset)| (topic.to_string(), partition, offset))
            .collect();
        assert_eq!(next, vec![("t".into(), 0, 8), ("t".into(), 1, 10), ("u".into(), 0, 2)]);
        assert!(next_offsets(&[]).is_empty());
    }
}
