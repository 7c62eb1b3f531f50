//! The compiled trees against hand-checked values and against each other's paths.

use super::*;

/// A hand-checked stump: one split on feature 0 at 1.5, 60 rows left (value −1), 40 right (+1).
/// Expected value 0.6·(−1) + 0.4·1 = −0.2; a row going left gets −1 − (−0.2) = −0.8 on feature 0.
#[test]
fn stump_contributions_and_probability() {
    let text = "objective=binary sigmoid:1\nmax_feature_idx=1\n\nTree=0\nnum_leaves=2\nsplit_feature=0\n\
                threshold=1.5\ndecision_type=2\nleft_child=-1\nright_child=-2\nleaf_value=-1 1\n\
                leaf_count=60 40\ninternal_count=100\nis_linear=0\n\nend of trees\n";
    let trees = CompiledTrees::parse(text).unwrap();
    let mut out = vec![0.0; 3];
    let scratch = &mut Scratch::default();
    trees.contributions(&[1.0, 9.0], &mut out, scratch);
    assert!((out[0] + 0.8).abs() < 1e-12 && out[1] == 0.0 && (out[2] + 0.2).abs() < 1e-12, "{out:?}");
    assert_eq!(trees.probability(&[1.0, 9.0], scratch), 1.0 / (1.0 + 1f64.exp()));
    assert_eq!(trees.probability(&[f64::NAN, 0.0], scratch), trees.probability(&[0.0, 0.0], scratch));
}

/// Categorical splits and non-binary objectives are refused, not mis-scored.
#[test]
fn refuses_what_it_cannot_reproduce() {
    let text = "objective=binary sigmoid:1\nmax_feature_idx=0\n\nTree=0\nnum_leaves=2\nsplit_feature=0\n\
                threshold=1\ndecision_type=1\nleft_child=-1\nright_child=-2\nleaf_value=-1 1\n\
                leaf_count=60 40\ninternal_count=100\n\n";
    assert!(matches!(CompiledTrees::parse(text), Err(ModelError::UnsupportedTree { .. })));
    let regression = text.replace("binary sigmoid:1", "regression");
    assert!(matches!(CompiledTrees::parse(&regression), Err(ModelError::UnsupportedObjective(_))));
}

/// On the committed model, the per-leaf path (used for trees too large to tabulate), the
/// per-pattern path and the interval tables give the same probabilities, bit for bit, and the
/// same contributions, also when both come from one call for a whole batch (`explain_rows`).
#[test]
fn pattern_tables_agree_with_leaf_tables() {
    let intervals = CompiledTrees::parse(include_str!("../../../models/credit-v1/model.txt")).unwrap();
    assert!(intervals.fast.is_some());
    let mut tabulated = intervals.clone();
    tabulated.fast = None;
    let mut per_leaf = tabulated.clone();
    per_leaf.trees.iter_mut().for_each(|tree| tree.patterns = None);
    assert!(tabulated.trees.iter().all(|tree| tree.patterns.is_some()));
    let scratch = &mut Scratch::default();
    let mut c = vec![0.0; intervals.feature_count() + 1];
    let thresholds = tabulated.thresholds_by_feature();
    let width = tabulated.feature_count();
    let (mut a, mut b) = (vec![0.0; width + 1], vec![0.0; width + 1]);
    let mut all_rows = Vec::new();
    for index in 0..500 {
        let row: Vec<f64> = (0..width)
            .map(|feature| {
                let candidates = &thresholds[feature];
                let base = candidates.get((index * 7 + feature) % candidates.len().max(1)).copied().unwrap_or(0.0);
                base + [0.0, 0.5, -0.5, f64::NAN][(index + feature) % 4]
            })
            .collect();
        let probability = tabulated.probability(&row, scratch).to_bits();
        assert_eq!(probability, per_leaf.probability(&row, scratch).to_bits(), "row {index}");
        assert_eq!(probability, intervals.probability(&row, scratch).to_bits(), "row {index}");
        tabulated.contributions(&row, &mut a, scratch);
        per_leaf.contributions(&row, &mut b, scratch);
        intervals.contributions(&row, &mut c, scratch);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12), "row {index}: {a:?} vs {b:?}");
        assert_eq!(a, c, "row {index}: the interval tables find the same patterns");
        for trees in [&intervals, &per_leaf] {
            let (mut probabilities, mut explained, mut contributions) = (Vec::new(), Vec::new(), Vec::new());
            let scored = (&mut probabilities, &mut explained, &mut contributions);
            trees.explain_rows(&row, |p| p.to_bits() == probability, scored, scratch);
            assert!(probabilities[0].to_bits() == probability && explained == [0], "row {index}: explained");
            assert!(
                contributions.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-12),
                "row {index}: the same contributions"
            );
            assert_eq!(contributions.len(), a.len(), "row {index}");
            let (mut probabilities, mut explained, mut contributions) = (Vec::new(), Vec::new(), Vec::new());
            trees.explain_rows(&row, |_| false, (&mut probabilities, &mut explained, &mut contributions), scratch);
            assert!(explained.is_empty() && contributions.is_empty(), "row {index}: not explained when not asked");
        }
        all_rows.extend_from_slice(&row);
    }
    let adverse = |probability: f64| probability > 0.3;
    for trees in [&intervals, &tabulated] {
        let (mut probabilities, mut explained, mut contributions) = (Vec::new(), Vec::new(), Vec::new());
        trees.explain_rows(&all_rows, adverse, (&mut probabilities, &mut explained, &mut contributions), scratch);
        let mut slots = contributions.chunks_exact(width + 1);
        assert!(!explained.is_empty() && explained.len() < 500, "some rows explained, not all");
        for (index, row) in all_rows.chunks_exact(width).enumerate() {
            let probability = trees.probability(row, scratch);
            assert_eq!(probabilities[index].to_bits(), probability.to_bits(), "row {index}");
            assert_eq!(explained.contains(&index), adverse(probability), "row {index}");
            if adverse(probability) {
                trees.contributions(row, &mut b, scratch);
                assert_eq!(slots.next().unwrap(), &b[..], "row {index}: the batch gathers the same bits");
            }
        }
    }
}
