//! Per-feature interval tables: every tree's decision pattern for a row without walking a tree.
//!
//! A feature's distinct split thresholds `t_0 < t_1 < …` cut its values into intervals; a value
//! in interval `i` (the number of thresholds below it) goes left at a split with threshold `t_j`
//! exactly when `j >= i`, the same `value <= threshold` test LightGBM makes. So each (feature,
//! interval) keeps one word per tree with the bits of that tree's nodes a value there sends left,
//! and a row's pattern in every tree is the OR of one row of words per feature: a binary search
//! and a vectorisable OR per feature, the same patterns as [`super::Tree::pattern`], hence the
//! same leaves, bits and contributions. Built only when every split is plain (no missing-value
//! rule) and every tree is tabulated.

use super::Tree;

/// A tree's pattern: bit n set when the row goes left at node n.
pub(super) type Pattern = u16;

#[derive(Debug, Clone)]
pub(super) struct Intervals {
    /// Per feature: its splits' distinct thresholds, ascending.
    thresholds: Vec<Vec<f64>>,
    /// Per feature: its first row in `words`.
    first: Vec<usize>,
    /// One row of `trees` words per (feature, interval).
    words: Vec<Pattern>,
    trees: usize,
}

impl Intervals {
    /// The tables of `trees`, if every split is plain and every tree with splits is tabulated.
    pub(super) fn build(trees: &[Tree], feature_count: usize) -> Option<Self> {
        let fits = |tree: &Tree| {
            tree.splits.is_empty()
                || (tree.patterns.is_some()
                    && tree.splits.len() <= Pattern::BITS as usize
                    && tree.splits.iter().all(|split| split.plain && !split.threshold.is_nan()))
        };
        if !trees.iter().all(fits) {
            return None;
        }
        let mut thresholds = vec![Vec::new(); feature_count];
        for split in trees.iter().flat_map(|tree| &tree.splits) {
            thresholds[split.feature].push(split.threshold);
        }
        for list in &mut thresholds {
            list.sort_by(f64::total_cmp);
            list.dedup();
        }
        let mut first = Vec::with_capacity(feature_count);
        let mut rows = 0;
        for list in &thresholds {
            first.push(rows);
            rows += if list.is_empty() { 0 } else { list.len() + 1 };
        }
        let count = trees.len();
        let mut words = vec![0; rows * count];
        for (index, tree) in trees.iter().enumerate() {
            for (node, split) in tree.splits.iter().enumerate() {
                let list = &thresholds[split.feature];
                let position = list.partition_point(|threshold| *threshold < split.threshold);
                for interval in 0..=position {
                    words[(first[split.feature] + interval) * count + index] |= 1 << node;
                }
            }
        }
        Some(Self { thresholds, first, words, trees: count })
    }

    /// Every tree's pattern for `row`, into `patterns` (one per tree). NaN reads as 0, as in a
    /// plain split.
    pub(super) fn patterns(&self, row: &[f64], patterns: &mut [Pattern]) {
        patterns.fill(0);
        for (feature, list) in self.thresholds.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let value = if row[feature].is_nan() { 0.0 } else { row[feature] };
            let interval = list.partition_point(|threshold| *threshold < value);
            let start = (self.first[feature] + interval) * self.trees;
            for (pattern, word) in patterns.iter_mut().zip(&self.words[start..start + self.trees]) {
                *pattern |= *word;
            }
        }
    }
}
