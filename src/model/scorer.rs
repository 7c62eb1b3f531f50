//! One scoring thread's model: a LightGBM booster (not `Send`) prepared for the single-row fast
//! path with OpenMP off, and the compiled trees.
//!
//! Each scorer also compiles the model's trees ([`super::trees`]) and, when loading, checks the
//! compiled paths against LightGBM on probe rows built around every split threshold: identical
//! probabilities (bit for bit) and contributions within 1e-9. Only then does it score and explain
//! with them; otherwise it keeps LightGBM's own paths and says why.

use lightgbm3::Booster;
use rand::{Rng, SeedableRng};
use tracing::warn;

use super::trees::{CompiledTrees, Scratch};
use super::ModelError;

/// Probe rows compared bit for bit on probabilities.
const PROBE_ROWS: usize = 2000;
/// Of those, rows whose contributions are compared.
const PROBE_CONTRIBUTION_ROWS: usize = 200;
/// Largest accepted difference between compiled and LightGBM contributions (log-odds).
pub const CONTRIBUTION_TOLERANCE: f64 = 1e-9;

/// A LightGBM booster ready for single-row predictions, with the compiled trees when they agree.
pub struct Scorer {
    booster: Booster,
    feature_count: usize,
    compiled: Option<CompiledTrees>,
    /// The compiled trees' working memory (a scorer stays on its scoring thread).
    scratch: std::cell::RefCell<Scratch>,
}

impl Scorer {
    /// Builds a scorer from LightGBM model text.
    pub fn new(model_text: &str) -> Result<Self, ModelError> {
        let mut booster = Booster::from_string(model_text)?;
        booster.single_row_fast_init::<f64>(Some(&serde_json::json!({ "num_threads": 1 })))?;
        let feature_count = booster.num_features() as usize;
        let mut scorer = Self { booster, feature_count, compiled: None, scratch: Default::default() };
        match CompiledTrees::parse(model_text) {
            Ok(compiled) => match scorer.disagreement(&compiled)? {
                None => scorer.compiled = Some(compiled),
                Some(reason) => warn!(%reason, "compiled trees disagree with LightGBM; scoring with LightGBM"),
            },
            Err(error) => warn!(%error, "model cannot be compiled; scoring with LightGBM"),
        }
        Ok(scorer)
    }

    /// `compiled` or `lightgbm`: which implementation scores and explains.
    pub fn implementation(&self) -> &'static str {
        if self.compiled.is_some() {
            "compiled"
        } else {
            "lightgbm"
        }
    }

    /// Number of features per row.
    pub fn feature_count(&self) -> usize {
        self.feature_count
    }

    /// Probability of default for one row.
    pub fn score_row(&self, row: &[f64]) -> Result<f64, ModelError> {
        debug_assert_eq!(row.len(), self.feature_count);
        match &self.compiled {
            Some(compiled) => Ok(compiled.probability(row, &mut self.scratch.borrow_mut())),
            None => self.reference_score_row(row),
        }
    }

    /// Probability of default for one row from LightGBM itself.
    pub fn reference_score_row(&self, row: &[f64]) -> Result<f64, ModelError> {
        Ok(self.booster.predict_single_row_fast(row)?[0])
    }

    /// TreeSHAP contributions for row-major `rows`: per row, one value per feature then the bias,
    /// in log-odds; each row's values sum to its raw score.
    pub fn contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let Some(compiled) = &self.compiled else { return self.reference_contributions(rows) };
        let stride = self.feature_count + 1;
        let mut out = vec![0.0; rows.len() / self.feature_count * stride];
        let scratch = &mut self.scratch.borrow_mut();
        for (row, values) in rows.chunks_exact(self.feature_count).zip(out.chunks_exact_mut(stride)) {
            compiled.contributions(row, values, scratch);
        }
        Ok(out)
    }

    /// Probabilities of row-major `rows`, and the TreeSHAP contributions of the rows `explain`
    /// picks by probability. The compiled trees find each row's decision patterns once for both.
    pub fn score_and_explain(&self, rows: &[f64], explain: impl Fn(f64) -> bool) -> ScoredRows {
        let count = rows.len() / self.feature_count;
        let mut scored = ScoredRows {
            probabilities: Vec::with_capacity(count),
            explained: Vec::new(),
            contributions: Ok(Vec::new()),
        };
        let Some(compiled) = &self.compiled else {
            scored.probabilities.extend(rows.chunks_exact(self.feature_count).map(|row| self.score_row(row)));
            scored.explained = (0..count)
                .filter(|index| scored.probabilities[*index].as_ref().is_ok_and(|probability| explain(*probability)))
                .collect();
            let picked: Vec<f64> = (scored.explained.iter())
                .flat_map(|index| &rows[index * self.feature_count..(index + 1) * self.feature_count])
                .copied()
                .collect();
            scored.contributions = self.reference_contributions(&picked);
            return scored;
        };
        let (mut probabilities, mut contributions) = (Vec::with_capacity(count), Vec::new());
        let scored_rows = (&mut probabilities, &mut scored.explained, &mut contributions);
        compiled.explain_rows(rows, explain, scored_rows, &mut self.scratch.borrow_mut());
        scored.probabilities = probabilities.into_iter().map(Ok).collect();
        scored.contributions = Ok(contributions);
        scored
    }

    /// LightGBM's own TreeSHAP contributions (the reference the compiled ones are checked against).
    pub fn reference_contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.booster.predict_contrib(rows, self.feature_count as i32, true)?)
    }

    /// Probabilities of default for row-major `rows` in one LightGBM batch call (one thread).
    pub fn score_batch(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.booster.predict_with_params(rows, self.feature_count as i32, true, "num_threads=1")?)
    }

    /// Why `compiled` cannot stand in for LightGBM, if it cannot.
    fn disagreement(&self, compiled: &CompiledTrees) -> Result<Option<String>, ModelError> {
        if compiled.feature_count() != self.feature_count {
            return Ok(Some(format!("{} features, LightGBM has {}", compiled.feature_count(), self.feature_count)));
        }
        let rows = probe_rows(compiled, self.feature_count);
        let scratch = &mut Scratch::default();
        for (index, row) in rows.chunks_exact(self.feature_count).enumerate() {
            let (ours, theirs) = (compiled.probability(row, scratch), self.reference_score_row(row)?);
            if ours.to_bits() != theirs.to_bits() {
                return Ok(Some(format!("probe row {index}: probability {ours} vs {theirs}")));
            }
        }
        let explained = &rows[..PROBE_CONTRIBUTION_ROWS * self.feature_count];
        let reference = self.reference_contributions(explained)?;
        let stride = self.feature_count + 1;
        let mut ours = vec![0.0; stride];
        for (index, (row, theirs)) in
            explained.chunks_exact(self.feature_count).zip(reference.chunks_exact(stride)).enumerate()
        {
            compiled.contributions(row, &mut ours, scratch);
            if let Some((a, b)) = ours.iter().zip(theirs).find(|(a, b)| (*a - *b).abs() > CONTRIBUTION_TOLERANCE) {
                return Ok(Some(format!("probe row {index}: contribution {a} vs {b}")));
            }
        }
        Ok(None)
    }

    /// Probabilities of default for row-major `rows`, appended to `out`.
    pub fn score_rows(&self, rows: &[f64], out: &mut Vec<f64>) -> Result<(), ModelError> {
        for row in rows.chunks_exact(self.feature_count) {
            out.push(self.score_row(row)?);
        }
        Ok(())
    }
}

/// A batch scored by [`Scorer::score_and_explain`].
#[derive(Debug)]
pub struct ScoredRows {
    /// Per row: its probability of default, or why it has none.
    pub probabilities: Vec<Result<f64, ModelError>>,
    /// The rows explained, ascending.
    pub explained: Vec<usize>,
    /// Their contributions, `feature_count + 1` per explained row in that order, or why there are none.
    pub contributions: Result<Vec<f64>, ModelError>,
}

/// Seeded probe rows: each value a split threshold of its feature, the next float either side, a
/// whole step either side, zero or NaN, so every decision boundary and missing-value rule is met.
fn probe_rows(compiled: &CompiledTrees, feature_count: usize) -> Vec<f64> {
    let thresholds = compiled.thresholds_by_feature();
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(20261123);
    let mut rows = Vec::with_capacity(PROBE_ROWS * feature_count);
    for _ in 0..PROBE_ROWS {
        for candidates in thresholds.iter().take(feature_count) {
            let base = if candidates.is_empty() { 0.0 } else { candidates[random.gen_range(0..candidates.len())] };
            let value = match random.gen_range(0..7) {
                0 => base,
                1 => f64::from_bits(base.to_bits().wrapping_add(1)),
                2 => f64::from_bits(base.to_bits().wrapping_sub(1)),
                3 => base - 1.0,
                4 => base + 1.0,
                5 => 0.0,
                _ => f64::NAN,
            };
            rows.push(value);
        }
    }
    rows
}
