//! Every tree's pattern tables laid out flat for the interval path: one array of leaf values and
//! one of contributions, indexed per tree by its pattern, and a small per-tree header (where its
//! values start, its width, its features as bytes). A row then reads one leaf value and one run
//! of contributions per tree with no pointer chasing. The additions happen in the same order as
//! with the per-tree tables, so the bits are the same.

use super::intervals::Pattern;
use super::Tree;

/// Most distinct features a tabulated tree can have (it has at most this many splits).
const MAX_WIDTH: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Header {
    /// First leaf value of the tree in [`Flat::leaf_values`].
    leaf_start: u32,
    /// First contribution of the tree in [`Flat::contributions`].
    start: u32,
    /// Distinct features of the tree (values per pattern).
    width: u8,
    features: [u8; MAX_WIDTH],
}

#[derive(Debug, Clone)]
pub(super) struct Flat {
    headers: Vec<Header>,
    leaf_values: Vec<f64>,
    contributions: Vec<f64>,
    /// The trees' expected values summed in tree order: the bias.
    bias: f64,
}

impl Flat {
    /// The flat tables of `trees`, if every tree with splits is tabulated and every feature index
    /// fits a byte.
    pub(super) fn build(trees: &[Tree], feature_count: usize) -> Option<Self> {
        if feature_count > usize::from(u8::MAX) + 1 {
            return None;
        }
        let (mut headers, mut leaf_values, mut contributions, mut bias) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
        for tree in trees {
            bias += tree.expected_value;
            let mut header = Header {
                leaf_start: u32::try_from(leaf_values.len()).ok()?,
                start: u32::try_from(contributions.len()).ok()?,
                width: 0,
                features: [0; MAX_WIDTH],
            };
            match &tree.patterns {
                Some(table) if table.features.len() <= MAX_WIDTH => {
                    header.width = table.features.len() as u8;
                    for (slot, feature) in header.features.iter_mut().zip(&table.features) {
                        *slot = *feature as u8;
                    }
                    leaf_values.extend_from_slice(&table.leaf_values);
                    contributions.extend_from_slice(&table.contributions);
                }
                None if tree.splits.is_empty() => leaf_values.push(tree.leaf_value[0]),
                _ => return None,
            }
            headers.push(header);
        }
        Some(Self { headers, leaf_values, contributions, bias })
    }

    /// Number of trees (patterns per row).
    pub(super) fn trees(&self) -> usize {
        self.headers.len()
    }

    /// The raw score (log-odds) of a row whose patterns are `patterns`, summed in tree order.
    pub(super) fn raw(&self, patterns: &[Pattern]) -> f64 {
        let mut raw = 0.0;
        for (header, pattern) in self.headers.iter().zip(patterns) {
            raw += self.leaf_values[header.leaf_start as usize + usize::from(*pattern)];
        }
        raw
    }

    /// The contributions of a row whose patterns are `patterns` into `out` (one per feature, then
    /// the bias), which must have `feature_count + 1` values.
    pub(super) fn contributions(&self, patterns: &[Pattern], out: &mut [f64]) {
        self.contributions_batch(patterns, out, out.len());
    }

    /// The contributions of several rows into `out` (`stride` values per row: one per feature,
    /// then the bias), `patterns` holding [`Self::trees`] patterns per row. Tree by tree: each
    /// tree's table is read for every row while it is in cache. Each value is summed from 0.0 in
    /// tree order, as with the per-tree tables, so the bits are the same.
    pub(super) fn contributions_batch(&self, patterns: &[Pattern], out: &mut [f64], stride: usize) {
        let trees = self.headers.len();
        out.fill(0.0);
        for (tree, header) in self.headers.iter().enumerate() {
            let width = usize::from(header.width);
            let features = &header.features[..width];
            let table = &self.contributions[header.start as usize..];
            for (row, sums) in patterns.chunks_exact(trees).zip(out.chunks_exact_mut(stride)) {
                let start = usize::from(row[tree]) * width;
                for (feature, value) in features.iter().zip(&table[start..start + width]) {
                    sums[usize::from(*feature)] += value;
                }
            }
        }
        for sums in out.chunks_exact_mut(stride) {
            sums[stride - 1] = self.bias;
        }
    }
}
