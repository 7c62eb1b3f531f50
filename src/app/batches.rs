//! The batches between the pipeline's stages: how a decided batch is split among the audit
//! lanes (by partition), and how batches queued behind a slow stage join to be finished as one
//! (within one assignment only).

use std::collections::HashMap;

use super::queue::Receiver;
use crate::domain::{AuditRow, BucketCounts, InputRecord, Outcome};
use crate::monitor::Monitoring;

/// A batch decided on a scoring thread, waiting for its sinks.
pub(super) struct DecidedBatch {
    pub(super) records: Vec<InputRecord>,
    pub(super) outcomes: Vec<Outcome>,
    /// The assignment epoch of each partition the batch holds records of.
    pub(super) epochs: HashMap<i32, u64>,
    /// The monitors' counts of every decided row, if made with the scoring.
    pub(super) precounted: Option<Precounted>,
}

/// The audit lane of `partition`: one lane audits all of a partition's batches, in order.
pub(super) fn lane_of(partition: i32, lanes: usize) -> usize {
    partition.rem_euclid(lanes.max(1) as i32) as usize
}

impl DecidedBatch {
    /// The batch as parts by audit lane, each with its records' epochs and, if the batch was
    /// counted, its partitions' counts. A batch of one lane stays whole.
    pub(super) fn into_lanes(self, lanes: usize) -> Vec<(usize, DecidedBatch)> {
        let lane = |record: &InputRecord| lane_of(record.partition, lanes);
        let first = self.records.first().map_or(0, lane);
        if self.records.iter().all(|record| lane(record) == first) {
            return vec![(first, self)];
        }
        let DecidedBatch { records, outcomes, epochs, precounted } = self;
        let mut parts: Vec<Option<DecidedBatch>> = (0..lanes).map(|_| None).collect();
        for (record, outcome) in records.into_iter().zip(outcomes) {
            let part = parts[lane(&record)].get_or_insert_with(|| DecidedBatch {
                records: Vec::new(),
                outcomes: Vec::new(),
                epochs: HashMap::new(),
                precounted: None,
            });
            if let Some(epoch) = epochs.get(&record.partition) {
                part.epochs.insert(record.partition, *epoch);
            }
            part.records.push(record);
            part.outcomes.push(outcome);
        }
        let parts = parts.into_iter().enumerate().filter_map(|(index, part)| Some((index, part?)));
        parts
            .map(|(index, mut part)| {
                part.precounted = precounted.as_ref().map(|counted| Precounted {
                    rows: part.outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Decided(_))).count(),
                    counts: counted.counts.of_partitions(|partition| lane_of(partition, lanes) == index),
                });
                (index, part)
            })
            .collect()
    }
}

/// The monitors' counts of every decided row of a batch, made on the scoring thread: its audit
/// takes them when every one of those rows turns out new, and counts the new rows otherwise.
pub(super) struct Precounted {
    /// How many rows were counted.
    pub(super) rows: usize,
    pub(super) counts: BucketCounts,
}

impl Precounted {
    /// The counts of `fresh`, new rows among the counted ones.
    pub(super) fn of_fresh(
        precounted: Option<&Precounted>,
        fresh: &[&AuditRow],
        monitoring: &Monitoring,
    ) -> BucketCounts {
        match precounted {
            Some(precounted) if precounted.rows == fresh.len() => precounted.counts.clone(),
            _ => monitoring.bucket_counts(fresh),
        }
    }
}

/// A batch whose audit transaction committed, waiting for its announcement.
pub(super) struct AuditedBatch {
    pub(super) records: Vec<InputRecord>,
    /// Outcomes as announced: rows PostgreSQL refused are dead letters, applications decided
    /// before carry their stored decisions.
    pub(super) outcomes: Vec<Outcome>,
    pub(super) epochs: HashMap<i32, u64>,
    /// Positions of the outcomes whose rows are new (the monitors count these, and only these).
    pub(super) new_rows: Vec<usize>,
    /// The monitors' counts of the new rows, as persisted.
    pub(super) counts: BucketCounts,
}

/// A batch that batches queued behind it can join, to be finished as one.
pub(super) trait Merge: Sized {
    /// The assignment epoch of each partition the batch holds records of.
    fn epochs(&self) -> &HashMap<i32, u64>;
    /// How many records it holds (what bounds a queue of batches).
    fn records(&self) -> usize;
    /// Appends `next` (the batch after this one).
    fn absorb(&mut self, next: Self);
}

impl Merge for DecidedBatch {
    fn epochs(&self) -> &HashMap<i32, u64> {
        &self.epochs
    }

    fn records(&self) -> usize {
        self.records.len()
    }

    fn absorb(&mut self, next: DecidedBatch) {
        self.records.extend(next.records);
        self.outcomes.extend(next.outcomes);
        self.epochs.extend(next.epochs);
        self.precounted = match (self.precounted.take(), next.precounted) {
            (Some(mut counted), Some(next)) => {
                counted.rows += next.rows;
                counted.counts.extend(next.counts);
                Some(counted)
            }
            _ => None,
        };
    }
}

impl Merge for AuditedBatch {
    fn epochs(&self) -> &HashMap<i32, u64> {
        &self.epochs
    }

    fn records(&self) -> usize {
        self.records.len()
    }

    fn absorb(&mut self, next: AuditedBatch) {
        let shift = self.outcomes.len();
        self.new_rows.extend(next.new_rows.iter().map(|position| position + shift));
        self.records.extend(next.records);
        self.outcomes.extend(next.outcomes);
        self.epochs.extend(next.epochs);
        self.counts.extend(next.counts);
    }
}

/// Whether `later` may join `earlier`: every partition both hold records of has the same epoch
/// (was not revoked and assigned again between them). Otherwise records decided under the old
/// assignment would pass as the new one's, beside their redelivered copies.
fn same_assignment<T: Merge>(earlier: &T, later: &T) -> bool {
    let earlier = earlier.epochs();
    later.epochs().iter().all(|(partition, epoch)| earlier.get(partition).is_none_or(|own| own == epoch))
}

/// Receives the next batch, joined by every batch queued behind it of the same assignment; one
/// of another is kept in `held` for the next call.
pub(super) async fn next_merged<T: Merge>(queue: &mut Receiver<T>, held: &mut Option<T>) -> Option<T> {
    let mut batch = match held.take() {
        Some(batch) => batch,
        None => queue.recv().await?,
    };
    while let Some(next) = queue.try_recv() {
        if !same_assignment(&batch, &next) {
            *held = Some(next);
            break;
        }
        batch.absorb(next);
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn decided(partition: i32, offsets: std::ops::Range<i64>, epoch: u64) -> DecidedBatch {
        let records: Vec<InputRecord> = offsets
            .map(|offset| InputRecord {
                topic: Arc::from("in"),
                partition,
                offset,
                key: None,
                value: None,
                consumed_at: chrono::Utc::now(),
            })
            .collect();
        let outcomes = records.iter().map(|_| Outcome::Announced).collect();
        DecidedBatch { records, outcomes, epochs: HashMap::from([(partition, epoch)]), precounted: None }
    }

    /// Batches queued behind a slow sink are merged only while every partition they share has
    /// the same epoch: a batch decided before its partition was revoked and assigned again must
    /// not pass as one of the new assignment (its records would be audited and announced again
    /// beside their redelivered copies).
    #[test]
    fn batches_merge_only_within_one_assignment() {
        let mut first = decided(3, 0..2, 5);
        for next in [decided(3, 2..4, 5), decided(4, 0..1, 9)] {
            assert!(same_assignment(&first, &next));
            first.absorb(next);
        }
        assert_eq!(first.records.len(), 5);
        assert_eq!(first.epochs, HashMap::from([(3, 5), (4, 9)]));
        assert!(!same_assignment(&first, &decided(3, 2..6, 6)), "partition 3 changed hands");
    }

    /// Queued batches are taken together up to the first of another assignment, which comes next.
    #[tokio::test]
    async fn a_batch_of_another_assignment_waits_for_the_next_turn() {
        let (sender, mut queue) = super::super::queue::bounded(100);
        for batch in [decided(3, 0..2, 5), decided(4, 0..1, 9), decided(3, 2..6, 6), decided(3, 6..7, 6)] {
            let records = batch.records();
            assert!(sender.send(batch, records).await.is_ok());
        }
        drop(sender);
        let mut held = None;
        let first = next_merged(&mut queue, &mut held).await.unwrap();
        assert_eq!((first.records.len(), first.epochs[&3]), (3, 5));
        let second = next_merged(&mut queue, &mut held).await.unwrap();
        assert_eq!((second.records.len(), second.epochs[&3]), (5, 6));
        assert!(next_merged(&mut queue, &mut held).await.is_none());
    }

    /// Audited batches announced together keep each new row's position and every count.
    #[test]
    fn audited_batches_merge_positions_and_counts() {
        let audited = |partition, offsets, epoch, new_rows, watermark| {
            let DecidedBatch { records, outcomes, epochs, .. } = decided(partition, offsets, epoch);
            let counts = BucketCounts { watermarks: vec![(partition, watermark)], ..BucketCounts::default() };
            AuditedBatch { records, outcomes, epochs, new_rows, counts }
        };
        let mut first = audited(1, 0..3, 2, vec![0, 2], 10);
        first.absorb(audited(2, 0..2, 7, vec![1], 20));
        assert_eq!(first.new_rows, [0, 2, 4]);
        assert_eq!(first.counts.watermarks, [(1, 10), (2, 20)]);
        assert_eq!(first.records.len(), 5);
    }

    /// A batch of partitions in two lanes is split by lane, each part with its own records in
    /// order, its partitions' epochs and its partitions' counts; a batch of one lane stays whole.
    #[test]
    fn a_batch_splits_by_lane_with_its_epochs_and_counts() {
        let mut batch = decided(0, 0..2, 1);
        batch.absorb(decided(1, 0..1, 4));
        batch.absorb(decided(2, 5..6, 7));
        let counts = BucketCounts { watermarks: vec![(0, 10), (1, 11), (2, 12)], ..BucketCounts::default() };
        batch.precounted = Some(Precounted { rows: 0, counts });
        let parts = batch.into_lanes(2);
        assert_eq!(parts.len(), 2);
        let (lane, even) = &parts[0];
        assert_eq!(*lane, 0);
        let offsets: Vec<(i32, i64)> = even.records.iter().map(|record| (record.partition, record.offset)).collect();
        assert_eq!(offsets, [(0, 0), (0, 1), (2, 5)]);
        assert_eq!(even.epochs, HashMap::from([(0, 1), (2, 7)]));
        assert_eq!(
            even.precounted.as_ref().map(|counted| counted.counts.watermarks.clone()),
            Some(vec![(0, 10), (2, 12)])
        );
        let (lane, odd) = &parts[1];
        assert_eq!((*lane, odd.records.len(), odd.epochs.clone()), (1, 1, HashMap::from([(1, 4)])));
        let whole = decided(3, 0..4, 2).into_lanes(2);
        assert_eq!((whole.len(), whole[0].0, whole[0].1.records.len()), (1, 1, 4));
    }
}
