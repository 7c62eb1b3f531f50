//! A batch's consumed records in one buffer (pure): each key and value is copied once into the
//! batch's buffer, and the records share it, instead of one allocation per key and per value.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::domain::InputRecord;

/// Builds one batch of [`InputRecord`]s.
pub struct RecordBuffer {
    topic: Arc<str>,
    bytes: Vec<u8>,
    records: Vec<Pending>,
}

struct Pending {
    partition: i32,
    offset: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    consumed_at: DateTime<Utc>,
}

/// Bytes reserved per record before the first grows the buffer (a typical application).
const TYPICAL_RECORD_BYTES: usize = 512;

impl RecordBuffer {
    /// A buffer for about `records` records of `topic`.
    pub fn new(topic: Arc<str>, records: usize) -> Self {
        Self { topic, bytes: Vec::with_capacity(records * TYPICAL_RECORD_BYTES), records: Vec::with_capacity(records) }
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Copies one consumed record in.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        consumed_at: DateTime<Utc>,
    ) {
        let mut copy = |data: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(data);
            start..self.bytes.len()
        };
        let (key, value) = (key.map(&mut copy), value.map(&mut copy));
        self.records.push(Pending { partition, offset, key, value, consumed_at });
    }

    /// The records, in the order pushed, sharing one buffer.
    pub fn finish(self) -> Vec<InputRecord> {
        let bytes = Bytes::from(self.bytes);
        let topic = self.topic;
        self.records
            .into_iter()
            .map(|pending| InputRecord {
                topic: Arc::clone(&topic),
                partition: pending.partition,
                offset: pending.offset,
                key: pending.key.map(|range| bytes.slice(range)),
                value: pending.value.map(|range| bytes.slice(range)),
                consumed_at: pending.consumed_at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each record keeps its own key and value (absent ones stay absent), in order.
    #[test]
    fn records_keep_their_own_bytes() {
        let mut buffer = RecordBuffer::new(Arc::from("in"), 1);
        let at = Utc::now();
        buffer.push(0, 7, Some(b"k1"), Some(b"value one"), at);
        buffer.push(1, 3, None, Some(b""), at);
        buffer.push(0, 8, Some(b"k3"), None, at);
        assert_eq!(buffer.len(), 3);
        let records = buffer.finish();
        let bytes = |part: &Option<Bytes>| part.as_deref().map(<[u8]>::to_vec);
        let seen: Vec<_> = records
            .iter()
            .map(|record| (record.partition, record.offset, bytes(&record.key), bytes(&record.value)))
            .collect();
        let expected = [
            (0, 7, Some(b"k1".to_vec()), Some(b"value one".to_vec())),
            (1, 3, None, Some(Vec::new())),
            (0, 8, Some(b"k3".to_vec()), None),
        ];
        assert_eq!(seen, expected);
        assert_eq!(&*records[2].topic, "in");
    }
}
