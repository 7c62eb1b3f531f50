//! A batch's consumed records in a few buffers (pure): each key and value is copied once into the
//! batch's current chunk, and the records share the chunks, instead of one allocation per key
//! and per value. Chunks are small enough for the allocator to reuse as soon as they are freed.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::domain::InputRecord;

/// Bytes per chunk (a larger record gets a chunk of its own).
const CHUNK_BYTES: usize = 64 * 1024;

/// Builds one batch of [`InputRecord`]s.
pub struct RecordBuffer {
    topic: Arc<str>,
    chunks: Vec<Bytes>,
    current: Vec<u8>,
    records: Vec<Pending>,
}

struct Pending {
    partition: i32,
    offset: i64,
    /// The chunk holding the key and value.
    chunk: usize,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    consumed_at: DateTime<Utc>,
}

impl RecordBuffer {
    /// A buffer for about `records` records of `topic`.
    pub fn new(topic: Arc<str>, records: usize) -> Self {
        Self { topic, chunks: Vec::new(), current: Vec::new(), records: Vec::with_capacity(records) }
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
        let size = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        if self.current.len() + size > self.current.capacity() {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(size.max(CHUNK_BYTES)));
            if !full.is_empty() {
                self.chunks.push(Bytes::from(full));
            }
        }
        let current = &mut self.current;
        let mut copy = |data: &[u8]| {
            let start = current.len();
            current.extend_from_slice(data);
            start..current.len()
        };
        let (key, value) = (key.map(&mut copy), value.map(&mut copy));
        let chunk = self.chunks.len();
        self.records.push(Pending { partition, offset, chunk, key, value, consumed_at });
    }

    /// The records, in the order pushed, sharing the chunks.
    pub fn finish(mut self) -> Vec<InputRecord> {
        self.chunks.push(Bytes::from(self.current));
        let (topic, chunks) = (self.topic, self.chunks);
        self.records
            .into_iter()
            .map(|pending| {
                let chunk = &chunks[pending.chunk];
                InputRecord {
                    topic: Arc::clone(&topic),
                    partition: pending.partition,
                    offset: pending.offset,
                    key: pending.key.map(|range| chunk.slice(range)),
                    value: pending.value.map(|range| chunk.slice(range)),
                    consumed_at: pending.consumed_at,
                }
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

    /// Records beyond a chunk, and one larger than a chunk, keep their bytes.
    #[test]
    fn records_span_chunks() {
        let mut buffer = RecordBuffer::new(Arc::from("in"), 4);
        let values: Vec<Vec<u8>> = (0u8..4).map(|index| vec![index; CHUNK_BYTES / 2 + 1]).collect();
        let large = vec![9u8; CHUNK_BYTES * 2];
        for (offset, value) in values.iter().chain([&large]).enumerate() {
            buffer.push(0, offset as i64, Some(b"k"), Some(value), Utc::now());
        }
        let records = buffer.finish();
        for (record, value) in records.iter().zip(values.iter().chain([&large])) {
            assert_eq!(record.value.as_deref(), Some(&value[..]));
            assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        }
    }
}
