//! Which offsets may be stored once a batch is durable. A batch is stored only after every one
//! of its records has a durable outcome, so per partition the next offset to consume is
//! the highest offset in the batch plus one. Pure.

use std::collections::BTreeMap;

/// Next offset to consume per (topic, partition), for records given as (topic, partition, offset).
pub fn next_offsets<'a>(records: impl IntoIterator<Item = (&'a str, i32, i64)>) -> BTreeMap<(String, i32), i64> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, partition, offset) in records {
        let entry = next.entry((topic.to_owned(), partition)).or_insert(offset + 1);
        *entry = (*entry).max(offset + 1);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Highest offset + 1 per partition, whatever the order records arrive in.
    #[test]
    fn highest_offset_plus_one_per_partition() {
        let next = next_offsets([("t", 0, 5), ("t", 1, 9), ("t", 0, 7), ("t", 0, 6), ("u", 0, 1)]);
        let expected: BTreeMap<(String, i32), i64> =
            [(("t".into(), 0), 8), (("t".into(), 1), 10), (("u".into(), 0), 2)].into_iter().collect();
        assert_eq!(next, expected);
        assert!(next_offsets([]).is_empty());
    }
}
