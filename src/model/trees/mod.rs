//! A LightGBM binary model's trees, compiled for the hot path (pure): the probability by walking
//! the trees exactly as LightGBM does (same decisions, same summation order, same sigmoid, so the
//! same bits), and path-dependent TreeSHAP contributions from per-leaf tables.
//!
//! TreeSHAP here: for a leaf whose path tests the distinct features `P` (k of them), with zero
//! fractions `z_j` (the share of training rows following the path at `j`'s splits) and one
//! fractions `o_j` (1 if the row follows the path at all of `j`'s splits, else 0), feature `i`
//! receives `v · (o_i − z_i) · Σ_{S ⊆ O∖i} |S|!(k−|S|−1)!/k! · Π_{j ∈ P∖S∖i} z_j`, where `O` is
//! the set of features with `o_j = 1`. That depends on the row only through the k-bit mask of
//! `o`, so each leaf keeps a table of `2^k × k` values and a row costs one mask and k additions per
//! leaf, instead of LightGBM's O(k²) path extension per leaf. Small trees go further: every
//! pattern of their split decisions gets its leaf value and its summed contributions up front,
//! so a row costs one pattern (all splits evaluated, no branches) and one table row per tree. Values equal LightGBM's
//! `predict_contrib` up to rounding (a different summation order); [`super::scorer::Scorer`]
//! checks both paths against LightGBM when it loads a model and uses them only if they agree.
//! When every split is plain, the patterns of all trees come from per-feature interval tables
//! ([`intervals`]) rather than from each tree's splits, and are read from flat tables ([`flat`]).

mod build;
mod flat;
mod intervals;

use super::ModelError;
use build::tree;
use flat::Flat;
use intervals::{Intervals, Pattern};

/// One leaf's TreeSHAP table.
#[derive(Debug, Clone)]
struct LeafTable {
    /// (node, goes left) for every split on the path from the root.
    path: Vec<(usize, bool)>,
    /// Distinct features on the path; bit `b` of a mask belongs to `features[b]`.
    features: Vec<usize>,
    /// Per path split, which mask bit it decides.
    path_bits: Vec<u8>,
    /// `2^k × k` contributions, mask-major.
    table: Vec<f64>,
}

#[derive(Debug, Clone)]
struct Tree {
    split_feature: Vec<usize>,
    threshold: Vec<f64>,
    decision_type: Vec<u8>,
    left_child: Vec<i32>,
    right_child: Vec<i32>,
    leaf_value: Vec<f64>,
    leaves: Vec<LeafTable>,
    expected_value: f64,
    patterns: Option<PatternTable>,
    /// The splits packed for [`Tree::pattern`].
    splits: Vec<Split>,
}

/// A split as the pattern loop reads it.
#[derive(Debug, Clone, Copy)]
struct Split {
    threshold: f64,
    feature: usize,
    /// Missing type none: NaN reads as 0, no default direction (every split of the usual model).
    plain: bool,
}

/// Per pattern of split decisions (bit n set: the row goes left at node n): the leaf value and
/// the contributions to the tree's distinct features.
#[derive(Debug, Clone)]
struct PatternTable {
    features: Vec<usize>,
    leaf_values: Vec<f64>,
    contributions: Vec<f64>,
}

/// The compiled trees of a binary LightGBM model.
#[derive(Debug, Clone)]
pub struct CompiledTrees {
    trees: Vec<Tree>,
    feature_count: usize,
    sigmoid: f64,
    fast: Option<Fast>,
}

/// The interval path: patterns from the interval tables, values from the flat tables.
#[derive(Debug, Clone)]
struct Fast {
    intervals: Intervals,
    flat: Flat,
}

/// Working memory reused across rows.
#[derive(Debug, Default)]
pub struct Scratch {
    decisions: Vec<bool>,
    patterns: Vec<Pattern>,
    /// The patterns of the rows a batch explains, row-major.
    kept: Vec<Pattern>,
}

const DEFAULT_LEFT_MASK: u8 = 2;
const MISSING_ZERO: u8 = 1;
const MISSING_NAN: u8 = 2;
const ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

impl Tree {
    /// LightGBM's `NumericalDecision`: true when the row goes left at `node`.
    fn goes_left(&self, node: usize, value: f64) -> bool {
        let decision_type = self.decision_type[node];
        let missing_type = (decision_type >> 2) & 3;
        let value = if value.is_nan() && missing_type != MISSING_NAN { 0.0 } else { value };
        let missing = (missing_type == MISSING_ZERO && (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&value))
            || (missing_type == MISSING_NAN && value.is_nan());
        if missing {
            decision_type & DEFAULT_LEFT_MASK != 0
        } else {
            value <= self.threshold[node]
        }
    }

    /// Bit n set when the row goes left at node n.
    fn pattern(&self, row: &[f64]) -> usize {
        let mut pattern = 0;
        for (node, split) in self.splits.iter().enumerate() {
            let value = row[split.feature];
            let left = if split.plain {
                (if value.is_nan() { 0.0 } else { value }) <= split.threshold
            } else {
                self.goes_left(node, value)
            };
            pattern |= usize::from(left) << node;
        }
        pattern
    }

    /// The leaf reached by `pattern`.
    fn leaf_of(&self, pattern: usize) -> usize {
        let mut node = 0usize;
        loop {
            let next = if pattern & (1 << node) != 0 { self.left_child[node] } else { self.right_child[node] };
            if next < 0 {
                return !next as usize;
            }
            node = next as usize;
        }
    }

    fn predict(&self, row: &[f64]) -> f64 {
        if self.left_child.is_empty() {
            return self.leaf_value[0];
        }
        if let Some(patterns) = &self.patterns {
            return patterns.leaf_values[self.pattern(row)];
        }
        let mut node = 0usize;
        loop {
            let next = if self.goes_left(node, row[self.split_feature[node]]) {
                self.left_child[node]
            } else {
                self.right_child[node]
            };
            if next < 0 {
                return self.leaf_value[!next as usize];
            }
            node = next as usize;
        }
    }

    fn add_contributions(&self, row: &[f64], phi: &mut [f64], decisions: &mut Vec<bool>) {
        if let Some(patterns) = &self.patterns {
            let k = patterns.features.len();
            let pattern = self.pattern(row);
            let values = &patterns.contributions[pattern * k..(pattern + 1) * k];
            for (feature, value) in patterns.features.iter().zip(values) {
                phi[*feature] += value;
            }
            return;
        }
        decisions.clear();
        decisions.extend((0..self.split_feature.len()).map(|node| self.goes_left(node, row[self.split_feature[node]])));
        for leaf in &self.leaves {
            let k = leaf.features.len();
            let ones = leaf_mask(leaf, decisions);
            let values = &leaf.table[ones * k..(ones + 1) * k];
            for (feature, value) in leaf.features.iter().zip(values) {
                phi[*feature] += value;
            }
        }
    }
}

impl CompiledTrees {
    /// Parses LightGBM model text. Only numerical splits are supported.
    pub fn parse(model_text: &str) -> Result<Self, ModelError> {
        let objective = model_text.lines().find_map(|line| line.strip_prefix("objective=")).unwrap_or("");
        let sigmoid = match objective.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["binary", parameter] => parameter.strip_prefix("sigmoid:").and_then(|value| value.parse().ok()),
            _ => None,
        }
        .ok_or_else(|| ModelError::UnsupportedObjective(objective.to_owned()))?;
        let feature_count = model_text
            .lines()
            .find_map(|line| line.strip_prefix("max_feature_idx="))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .map(|max| max + 1)
            .ok_or(ModelError::NoTrees)?;
        let mut trees = Vec::new();
        let mut lines = model_text.lines();
        while let Some(line) = lines.next() {
            if !line.starts_with("Tree=") {
                continue;
            }
            let fields: Vec<(&str, &str)> = lines
                .by_ref()
                .take_while(|line| !line.trim().is_empty())
                .filter_map(|line| line.split_once('='))
                .collect();
            let index = trees.len();
            trees.push(
                tree(&fields, feature_count).map_err(|reason| ModelError::UnsupportedTree { tree: index, reason })?,
            );
        }
        if trees.is_empty() {
            return Err(ModelError::NoTrees);
        }
        let fast = Intervals::build(&trees, feature_count)
            .zip(Flat::build(&trees, feature_count))
            .map(|(intervals, flat)| Fast { intervals, flat });
        Ok(Self { trees, feature_count, sigmoid, fast })
    }

    /// The split thresholds of each feature (probe material).
    pub fn thresholds_by_feature(&self) -> Vec<Vec<f64>> {
        let mut thresholds = vec![Vec::new(); self.feature_count];
        for tree in &self.trees {
            for (feature, threshold) in tree.split_feature.iter().zip(&tree.threshold) {
                thresholds[*feature].push(*threshold);
            }
        }
        thresholds
    }

    /// Features per row.
    pub fn feature_count(&self) -> usize {
        self.feature_count
    }

    /// Probability of the positive class for one row (LightGBM's order of operations).
    pub fn probability(&self, row: &[f64], scratch: &mut Scratch) -> f64 {
        let raw = match &self.fast {
            Some(fast) => fast.flat.raw(Self::patterns(fast, row, scratch)),
            None => self.trees.iter().map(|tree| tree.predict(row)).fold(0.0, |raw, value| raw + value),
        };
        self.sigmoid(raw)
    }

    /// TreeSHAP contributions of one row into `out`: one per feature, then the bias (log-odds).
    pub fn contributions(&self, row: &[f64], out: &mut [f64], scratch: &mut Scratch) {
        match &self.fast {
            Some(fast) => fast.flat.contributions(Self::patterns(fast, row, scratch), out),
            None => {
                out.fill(0.0);
                let (phi, bias) = out.split_at_mut(self.feature_count);
                for tree in &self.trees {
                    bias[0] += tree.expected_value;
                    tree.add_contributions(row, phi, &mut scratch.decisions);
                }
            }
        }
    }

    /// The probabilities of row-major `rows` into `probabilities`, the rows `explain` holds for
    /// into `explained`, and their contributions (as [`Self::contributions`]) appended to
    /// `contributions`. Over the interval tables each row's decision patterns are found once for
    /// both, and the contributions are gathered for all those rows at once, tree by tree.
    pub fn explain_rows(
        &self,
        rows: &[f64],
        explain: impl Fn(f64) -> bool,
        scored: (&mut Vec<f64>, &mut Vec<usize>, &mut Vec<f64>),
        scratch: &mut Scratch,
    ) {
        let (probabilities, explained, contributions) = scored;
        let stride = self.feature_count + 1;
        let Some(fast) = &self.fast else {
            for (index, row) in rows.chunks_exact(self.feature_count).enumerate() {
                let probability = self.probability(row, scratch);
                probabilities.push(probability);
                if explain(probability) {
                    explained.push(index);
                    let start = contributions.len();
                    contributions.resize(start + stride, 0.0);
                    self.contributions(row, &mut contributions[start..], scratch);
                }
            }
            return;
        };
        let mut kept = std::mem::take(&mut scratch.kept);
        kept.clear();
        for (index, row) in rows.chunks_exact(self.feature_count).enumerate() {
            let patterns = Self::patterns(fast, row, scratch);
            let probability = self.sigmoid(fast.flat.raw(patterns));
            probabilities.push(probability);
            if explain(probability) {
                explained.push(index);
                kept.extend_from_slice(patterns);
            }
        }
        let start = contributions.len();
        contributions.resize(start + kept.len() / fast.flat.trees().max(1) * stride, 0.0);
        fast.flat.contributions_batch(&kept, &mut contributions[start..], stride);
        scratch.kept = kept;
    }

    fn sigmoid(&self, raw: f64) -> f64 {
        1.0 / (1.0 + (-self.sigmoid * raw).exp())
    }

    fn patterns<'a>(fast: &Fast, row: &[f64], scratch: &'a mut Scratch) -> &'a [Pattern] {
        scratch.patterns.resize(fast.flat.trees(), 0);
        fast.intervals.patterns(row, &mut scratch.patterns);
        &scratch.patterns
    }
}

/// Bit b set when the row follows the leaf's path at every split on the leaf's feature b.
fn leaf_mask(leaf: &LeafTable, decisions: &[bool]) -> usize {
    let mut ones = (1usize << leaf.features.len()) - 1;
    for ((node, left), bit) in leaf.path.iter().zip(&leaf.path_bits) {
        if decisions[*node] != *left {
            ones &= !(1usize << bit);
        }
    }
    ones
}

#[cfg(test)]
mod tests;
