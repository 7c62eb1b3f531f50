//! Monitor counts of a batch's new decisions, persisted in the batch's audit transaction so the
//! monitors can be rebuilt from them: fairness counts per source partition, event-time bucket,
//! attribute and group; drift histograms per source partition, bucket and series.

/// Decisions of one group in one bucket: `[approve, review, decline]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairnessCount {
    pub partition: i32,
    pub bucket_ms: i64,
    pub attribute: i16,
    pub group: String,
    pub counts: [i64; 3],
}

/// One series' histogram in one bucket (series `i` < features is feature `i`, then the score).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftCount {
    pub partition: i32,
    pub bucket_ms: i64,
    pub series: i16,
    /// The model whose histogram the bins are of.
    pub model_sha256: String,
    pub counts: Vec<i64>,
}

/// Everything a batch adds to the monitors, and each partition's latest event time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCounts {
    pub fairness: Vec<FairnessCount>,
    pub drift: Vec<DriftCount>,
    /// (partition, latest event time in ms) of the batch's decisions.
    pub watermarks: Vec<(i32, i64)>,
}

impl BucketCounts {
    /// Adds `other`'s counts (entries for the same bucket add up where they are recorded).
    pub fn extend(&mut self, other: BucketCounts) {
        self.fairness.extend(other.fairness);
        self.drift.extend(other.drift);
        self.watermarks.extend(other.watermarks);
    }

    /// The counts of the partitions `keep` accepts.
    pub fn of_partitions(&self, keep: impl Fn(i32) -> bool) -> BucketCounts {
        BucketCounts {
            fairness: self.fairness.iter().filter(|count| keep(count.partition)).cloned().collect(),
            drift: self.drift.iter().filter(|count| keep(count.partition)).cloned().collect(),
            watermarks: self.watermarks.iter().filter(|(partition, _)| keep(*partition)).copied().collect(),
        }
    }
}
