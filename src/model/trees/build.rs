//! Parsing LightGBM's text trees and building their TreeSHAP tables (per leaf, per decision pattern).

use super::{leaf_mask, LeafTable, PatternTable, Split, Tree};

/// Longest distinct-feature path a leaf table is built for (tables grow as 2^k).
const MAX_PATH_FEATURES: usize = 12;
/// Most splits in a tree whose decision patterns are tabulated (tables grow as 2^splits).
const MAX_PATTERN_SPLITS: usize = 10;

fn field<'a>(fields: &[(&str, &'a str)], name: &str) -> Result<&'a str, String> {
    fields.iter().find(|(key, _)| *key == name).map(|(_, value)| *value).ok_or_else(|| format!("no `{name}`"))
}

fn numbers<T: std::str::FromStr>(fields: &[(&str, &str)], name: &str) -> Result<Vec<T>, String> {
    field(fields, name)?
        .split_whitespace()
        .map(|value| value.parse().map_err(|_| format!("`{name}` has a bad value `{value}`")))
        .collect()
}

pub(super) fn tree(fields: &[(&str, &str)], feature_count: usize) -> Result<Tree, String> {
    let num_leaves: usize = field(fields, "num_leaves")?.trim().parse().map_err(|_| "bad num_leaves")?;
    let leaf_value: Vec<f64> = numbers(fields, "leaf_value")?;
    if leaf_value.len() != num_leaves {
        return Err("leaf_value does not have num_leaves values".into());
    }
    if field(fields, "is_linear").is_ok_and(|value| value.trim() != "0") {
        return Err("linear trees are not supported".into());
    }
    if num_leaves == 1 {
        let value = leaf_value[0];
        let (split_feature, threshold, decision_type, left_child, right_child) = Default::default();
        return Ok(Tree {
            split_feature,
            threshold,
            decision_type,
            left_child,
            right_child,
            leaf_value,
            leaves: Vec::new(),
            expected_value: value,
            patterns: None,
            splits: Vec::new(),
        });
    }
    let mut tree = Tree {
        split_feature: numbers(fields, "split_feature")?,
        threshold: numbers(fields, "threshold")?,
        decision_type: numbers(fields, "decision_type")?,
        left_child: numbers(fields, "left_child")?,
        right_child: numbers(fields, "right_child")?,
        leaf_value,
        leaves: Vec::new(),
        expected_value: 0.0,
        patterns: None,
        splits: Vec::new(),
    };
    let internal_count: Vec<f64> = numbers(fields, "internal_count")?;
    let leaf_count: Vec<f64> = numbers(fields, "leaf_count")?;
    let internal = num_leaves - 1;
    let lengths = [
        tree.split_feature.len(),
        tree.threshold.len(),
        tree.decision_type.len(),
        tree.left_child.len(),
        tree.right_child.len(),
        internal_count.len(),
    ];
    if lengths.iter().any(|length| *length != internal) || leaf_count.len() != num_leaves {
        return Err("node arrays do not match num_leaves".into());
    }
    if tree.decision_type.iter().any(|decision_type| decision_type & 1 != 0) {
        return Err("categorical splits are not supported".into());
    }
    if tree.split_feature.iter().any(|feature| *feature >= feature_count) {
        return Err("split on a feature past max_feature_idx".into());
    }
    let children = tree.left_child.iter().chain(&tree.right_child);
    if children.clone().any(|child| *child >= internal as i32 || *child < -(num_leaves as i32)) {
        return Err("child index out of range".into());
    }
    let count = |child: i32| if child < 0 { leaf_count[!child as usize] } else { internal_count[child as usize] };
    let total = internal_count[0];
    tree.expected_value = (0..num_leaves).map(|leaf| leaf_count[leaf] / total * tree.leaf_value[leaf]).sum();
    let mut stack = vec![(0usize, Vec::<(usize, bool)>::new())];
    while let Some((node, path)) = stack.pop() {
        if path.len() > internal {
            return Err("the tree has a cycle".into());
        }
        for (child, left) in [(tree.left_child[node], true), (tree.right_child[node], false)] {
            let mut path = path.clone();
            path.push((node, left));
            if child >= 0 {
                stack.push((child as usize, path));
                continue;
            }
            let leaf = !child as usize;
            let mut features: Vec<usize> = Vec::new();
            let mut zero_fractions: Vec<f64> = Vec::new();
            let mut path_bits = Vec::with_capacity(path.len());
            for (step, (parent, went_left)) in path.iter().enumerate() {
                let next = path.get(step + 1).map_or(child, |(next, _)| *next as i32);
                debug_assert_eq!(next, if *went_left { tree.left_child[*parent] } else { tree.right_child[*parent] });
                let fraction = count(next) / internal_count[*parent];
                let feature = tree.split_feature[*parent];
                let bit = match features.iter().position(|known| *known == feature) {
                    Some(bit) => {
                        zero_fractions[bit] *= fraction;
                        bit
                    }
                    None => {
                        features.push(feature);
                        zero_fractions.push(fraction);
                        features.len() - 1
                    }
                };
                path_bits.push(bit as u8);
            }
            if features.len() > MAX_PATH_FEATURES {
                return Err(format!("a path tests {} distinct features", features.len()));
            }
            let table = leaf_table(tree.leaf_value[leaf], &zero_fractions);
            tree.leaves.push(LeafTable { path, features, path_bits, table });
        }
    }
    tree.splits = (0..internal)
        .map(|node| Split {
            threshold: tree.threshold[node],
            feature: tree.split_feature[node],
            plain: (tree.decision_type[node] >> 2) & 3 == 0,
        })
        .collect();
    if internal <= MAX_PATTERN_SPLITS {
        tree.patterns = Some(pattern_table(&tree));
    }
    Ok(tree)
}

/// Tabulates every decision pattern of a small tree from its leaf tables.
fn pattern_table(tree: &Tree) -> PatternTable {
    let mut features: Vec<usize> = tree.split_feature.clone();
    features.sort_unstable();
    features.dedup();
    let k = features.len();
    let count = 1usize << tree.split_feature.len();
    let mut leaf_values = Vec::with_capacity(count);
    let mut contributions = vec![0.0; count * k];
    let mut decisions = Vec::new();
    for pattern in 0..count {
        leaf_values.push(tree.leaf_value[tree.leaf_of(pattern)]);
        decisions.clear();
        decisions.extend((0..tree.split_feature.len()).map(|node| pattern & (1 << node) != 0));
        let row = &mut contributions[pattern * k..(pattern + 1) * k];
        for leaf in &tree.leaves {
            let width = leaf.features.len();
            let ones = leaf_mask(leaf, &decisions);
            for (feature, value) in leaf.features.iter().zip(&leaf.table[ones * width..(ones + 1) * width]) {
                let slot = features.binary_search(feature).expect("leaf features are tree features");
                row[slot] += value;
            }
        }
    }
    PatternTable { features, leaf_values, contributions }
}

/// `2^k × k` contributions of a leaf with value `value` and zero fractions `zero_fractions`.
fn leaf_table(value: f64, zero_fractions: &[f64]) -> Vec<f64> {
    let k = zero_fractions.len();
    let factorial = |n: usize| (1..=n).map(|i| i as f64).product::<f64>();
    let weights: Vec<f64> = (0..k).map(|size| factorial(size) * factorial(k - size - 1) / factorial(k)).collect();
    let mut table = vec![0.0; (1 << k) * k];
    for mask in 0..1usize << k {
        for i in 0..k {
            let one = f64::from(u8::from(mask & (1 << i) != 0));
            // Elementary symmetric polynomials of the zero fractions of the other features that
            // the row follows (those may be in S), times the product over the ones it does not.
            let mut elementary = vec![0.0; k];
            elementary[0] = 1.0;
            let mut followed = 0;
            let mut not_followed = 1.0;
            for j in (0..k).filter(|j| *j != i) {
                if mask & (1 << j) != 0 {
                    followed += 1;
                    for degree in (1..=followed).rev() {
                        elementary[degree] += elementary[degree - 1] * zero_fractions[j];
                    }
                } else {
                    not_followed *= zero_fractions[j];
                }
            }
            // |S| = size, S ⊆ followed features: the rest of them contribute e_{followed − size}.
            let sum: f64 = (0..=followed).map(|size| weights[size] * elementary[followed - size]).sum();
            table[mask * k + i] = value * (one - zero_fractions[i]) * not_followed * sum;
        }
    }
    table
}
