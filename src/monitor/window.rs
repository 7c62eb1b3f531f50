//! Event-time rolling windows: counts per key in fixed-width buckets, summed over the last
//! `bucket_count` buckets before the watermark (the latest event time seen). Concurrent
//! (sharded map, no global lock); pure apart from that.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

/// Two counters per key and bucket: a total and the part of it that was a "hit"
/// (decisions and approvals; observations and nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub hits: u64,
}

impl Counts {
    /// One observation, a hit or not.
    pub fn one(hit: bool) -> Self {
        Self { total: 1, hits: u64::from(hit) }
    }

    fn add(&mut self, other: Counts) {
        self.total += other.total;
        self.hits += other.hits;
    }
}

/// Bucketed counts with a sliding event-time window and all-time totals.
pub struct RollingWindow<K: Eq + Hash> {
    bucket_millis: i64,
    bucket_count: i64,
    buckets: DashMap<(K, i64), Counts>,
    totals: DashMap<K, Counts>,
    watermark_millis: AtomicI64,
}

impl<K: Eq + Hash + Clone> RollingWindow<K> {
    /// A window of `bucket_count` buckets of `bucket_millis` each.
    pub fn new(bucket_millis: i64, bucket_count: i64) -> Self {
        Self {
            bucket_millis: bucket_millis.max(1),
            bucket_count: bucket_count.max(1),
            buckets: DashMap::new(),
            totals: DashMap::new(),
            watermark_millis: AtomicI64::new(i64::MIN),
        }
    }

    /// Adds `counts` for `key` at `event_millis`; advances the watermark. Events older than the
    /// window (relative to the watermark) still count in the all-time totals only.
    pub fn add(&self, key: K, event_millis: i64, counts: Counts) {
        self.watermark_millis.fetch_max(event_millis, Ordering::AcqRel);
        self.totals.entry(key.clone()).or_default().add(counts);
        let bucket = event_millis.div_euclid(self.bucket_millis);
        if bucket >= self.first_bucket() {
            self.buckets.entry((key, bucket)).or_default().add(counts);
        }
    }

    /// Adds `counts` for `key` to the bucket of `event_millis` only (restoring persisted buckets;
    /// the all-time totals are restored with [`RollingWindow::add_total`]).
    pub fn add_bucket(&self, key: K, event_millis: i64, counts: Counts) {
        self.watermark_millis.fetch_max(event_millis, Ordering::AcqRel);
        let bucket = event_millis.div_euclid(self.bucket_millis);
        if bucket >= self.first_bucket() {
            self.buckets.entry((key, bucket)).or_default().add(counts);
        }
    }

    /// Adds `counts` to `key`'s all-time totals only.
    pub fn add_total(&self, key: K, counts: Counts) {
        self.totals.entry(key).or_default().add(counts);
    }

    /// Moves the watermark forward to `event_millis` (a persisted watermark).
    pub fn advance_watermark(&self, event_millis: i64) {
        self.watermark_millis.fetch_max(event_millis, Ordering::AcqRel);
    }

    /// Bucket width in milliseconds.
    pub fn bucket_millis(&self) -> i64 {
        self.bucket_millis
    }

    /// Latest event time seen, if any.
    pub fn watermark_millis(&self) -> Option<i64> {
        Some(self.watermark_millis.load(Ordering::Acquire)).filter(|millis| *millis != i64::MIN)
    }

    fn first_bucket(&self) -> i64 {
        match self.watermark_millis() {
            Some(watermark) => watermark.div_euclid(self.bucket_millis) - self.bucket_count + 1,
            None => i64::MIN,
        }
    }

    /// Sums per key over the current window; drops buckets that have left it.
    pub fn window(&self) -> HashMap<K, Counts> {
        let first = self.first_bucket();
        self.buckets.retain(|(_, bucket), _| *bucket >= first);
        let mut sums: HashMap<K, Counts> = HashMap::new();
        for entry in self.buckets.iter() {
            sums.entry(entry.key().0.clone()).or_default().add(*entry.value());
        }
        sums
    }

    /// All-time sums per key.
    pub fn totals(&self) -> HashMap<K, Counts> {
        self.totals.iter().map(|entry| (entry.key().clone(), *entry.value())).collect()
    }

    /// Forgets every key matching `forget` (for example a revoked partition's).
    pub fn forget(&self, forget: impl Fn(&K) -> bool) {
        self.buckets.retain(|(key, _), _| !forget(key));
        self.totals.retain(|key, _| !forget(key));
    }

    /// Window length in milliseconds.
    pub fn span_millis(&self) -> i64 {
        self.bucket_millis * self.bucket_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets leave the window as the watermark advances; totals keep everything.
    #[test]
    fn window_expiry_follows_the_watermark() {
        let window = RollingWindow::new(1000, 3);
        assert!(window.window().is_empty());
        assert_eq!(window.watermark_millis(), None);
        window.add("a", 500, Counts::one(true));
        window.add("a", 1500, Counts::one(false));
        window.add("b", 2500, Counts::one(true));
        assert_eq!(window.window()["a"], Counts { total: 2, hits: 1 });
        window.add("b", 3200, Counts::one(true));
        let sums = window.window();
        assert_eq!(sums["a"], Counts { total: 1, hits: 0 }, "bucket 0 expired");
        assert_eq!(sums["b"], Counts { total: 2, hits: 2 });
        window.add("a", 100, Counts::one(true));
        assert_eq!(window.window()["a"], Counts { total: 1, hits: 0 }, "late event outside the window");
        assert_eq!(window.totals()["a"], Counts { total: 3, hits: 2 });
        window.add("b", 9000, Counts::one(false));
        let sums = window.window();
        assert!(!sums.contains_key("a"));
        assert_eq!(sums["b"], Counts { total: 1, hits: 0 });
        assert_eq!(window.span_millis(), 3000);
    }

    /// Forgetting removes a key's window and totals, leaving others.
    #[test]
    fn forget_removes_matching_keys() {
        let window = RollingWindow::new(1000, 10);
        window.add((0, "g"), 0, Counts::one(true));
        window.add((1, "g"), 0, Counts::one(true));
        window.forget(|(partition, _)| *partition == 0);
        assert_eq!(window.window().len(), 1);
        assert_eq!(window.totals().len(), 1);
    }
}
