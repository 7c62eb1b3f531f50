//! Shadow scoring: the challenger scores the batch's decided feature vectors on its own scoring
//! threads and the comparison is recorded. Shadow results are never published or audited; a
//! failure only costs the comparison.

use std::time::Instant;

use tracing::warn;

use super::pipeline::Pipeline;
use crate::domain::Outcome;
use crate::model::LoadedModel;
use crate::monitor::Comparison;

impl Pipeline {
    /// Scores the batch's decisions with `challenger` and records the comparison.
    pub(super) async fn compare_with(&self, challenger: &LoadedModel, outcomes: Vec<Outcome>) {
        let started = Instant::now();
        let decided: Vec<_> = outcomes
            .into_iter()
            .filter_map(|outcome| match outcome {
                Outcome::Decided(decided) => Some(decided),
                _ => None,
            })
            .collect();
        let cutoffs = challenger.cutoffs;
        let scored = challenger
            .pool
            .run(move |scorer| {
                let probabilities: Result<Vec<f64>, _> =
                    decided.iter().map(|decided| scorer.score_row(&decided.row.inputs)).collect();
                (decided, probabilities)
            })
            .await;
        let (decided, probabilities) = match scored {
            Ok((decided, Ok(probabilities))) => (decided, probabilities),
            Ok((_, Err(error))) => return warn!(%error, "shadow scoring failed"),
            Err(error) => return warn!(%error, "shadow scoring pool failed"),
        };
        let comparisons: Vec<Comparison<'_>> = decided
            .iter()
            .zip(&probabilities)
            .map(|(decided, probability)| Comparison {
                protected: &decided.row.protected,
                champion: decided.row.outcome,
                champion_probability: decided.row.probability_of_default,
                challenger: cutoffs.decide(*probability),
                challenger_probability: *probability,
            })
            .collect();
        self.shadow.record(&challenger.bundle.card.model_sha256, &comparisons);
        self.observe_stage("shadow", started);
    }
}
