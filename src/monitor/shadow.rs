//! Champion/challenger comparison. The challenger scores the same feature vectors as the
//! champion; its decisions are never published or audited, only compared: agreement rate, score
//! differences, and per-group approval-rate differences (this replica, since the challenger was set).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::domain::{DecisionOutcome, GroupingConfig, ProtectedAttributes};
use crate::telemetry::Metrics;

/// One event scored by both models.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison<'a> {
    pub protected: &'a ProtectedAttributes,
    pub champion: DecisionOutcome,
    pub champion_probability: f64,
    pub challenger: DecisionOutcome,
    pub challenger_probability: f64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
struct GroupCounts {
    events: u64,
    champion_approved: u64,
    challenger_approved: u64,
}

#[derive(Debug, Default)]
struct State {
    challenger_sha256: String,
    events: u64,
    agreed: u64,
    groups: BTreeMap<(String, String), GroupCounts>,
}

/// Running comparison against the current challenger.
pub struct ShadowComparison {
    grouping: GroupingConfig,
    metrics: Metrics,
    state: Mutex<State>,
}

/// Summary for `/admin/model` and the demo.
#[derive(Debug, Serialize, PartialEq)]
pub struct ShadowSummary {
    pub challenger_sha256: String,
    pub events: u64,
    pub agreement_rate: f64,
    /// (attribute, group) → challenger − champion approval rate.
    pub approval_rate_difference: BTreeMap<String, f64>,
}

impl ShadowComparison {
    /// An empty comparison.
    pub fn new(grouping: GroupingConfig, metrics: Metrics) -> Self {
        Self { grouping, metrics, state: Mutex::new(State::default()) }
    }

    /// Adds a batch's comparisons against `challenger_sha256` (a new challenger starts afresh).
    pub fn record(&self, challenger_sha256: &str, comparisons: &[Comparison<'_>]) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.challenger_sha256 != challenger_sha256 {
            *state = State { challenger_sha256: challenger_sha256.to_owned(), ..State::default() };
            self.metrics.shadow_approval_rate_difference.reset();
        }
        let attributes = self.grouping.attributes();
        for comparison in comparisons {
            let agree = comparison.champion == comparison.challenger;
            state.events += 1;
            state.agreed += u64::from(agree);
            let result = if agree { "agree" } else { "disagree" };
            self.metrics.shadow_comparisons.with_label_values(&[result]).inc();
            let difference = (comparison.challenger_probability - comparison.champion_probability).abs();
            self.metrics.shadow_score_difference.observe(difference);
            let groups = self.grouping.classify(comparison.protected);
            for (attribute, group) in attributes.iter().zip(groups) {
                let counts = state.groups.entry((attribute.clone(), group)).or_default();
                counts.events += 1;
                counts.champion_approved += u64::from(comparison.champion == DecisionOutcome::Approve);
                counts.challenger_approved += u64::from(comparison.challenger == DecisionOutcome::Approve);
            }
        }
        self.metrics.shadow_agreement_ratio.set(state.agreed as f64 / state.events.max(1) as f64);
        for ((attribute, group), counts) in &state.groups {
            self.metrics.shadow_approval_rate_difference.with_label_values(&[attribute, group]).set(difference(counts));
        }
    }

    /// Where the comparison stands.
    pub fn summary(&self) -> ShadowSummary {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ShadowSummary {
            challenger_sha256: state.challenger_sha256.clone(),
            events: state.events,
            agreement_rate: state.agreed as f64 / state.events.max(1) as f64,
            approval_rate_difference: state
                .groups
                .iter()
                .map(|((attribute, group), counts)| (format!("{attribute}={group}"), difference(counts)))
                .collect(),
        }
    }
}

fn difference(counts: &GroupCounts) -> f64 {
    (counts.challenger_approved as f64 - counts.champion_approved as f64) / counts.events.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouping() -> GroupingConfig {
        GroupingConfig {
            age_band_edges: vec![25],
            sex_reference: "male".into(),
            age_band_reference: ">25".into(),
            foreign_worker_reference: "no".into(),
            intersections: Vec::new(),
        }
    }

    /// Agreement and per-group approval-rate differences are counted per event, and a new
    /// challenger starts from zero.
    #[test]
    fn agreement_and_group_differences() {
        let comparison = ShadowComparison::new(grouping(), Metrics::new());
        let young = ProtectedAttributes { age_in_years: Some(22), ..ProtectedAttributes::default() };
        let old = ProtectedAttributes { age_in_years: Some(40), ..ProtectedAttributes::default() };
        let compare = |protected, champion, challenger| Comparison {
            protected,
            champion,
            champion_probability: 0.2,
            challenger,
            challenger_probability: 0.25,
        };
        use DecisionOutcome::*;
        comparison.record(
            "v2",
            &[
                compare(&young, Approve, Review),
                compare(&young, Approve, Approve),
                compare(&old, Decline, Approve),
                compare(&old, Review, Review),
            ],
        );
        let summary = comparison.summary();
        assert_eq!(summary.events, 4);
        assert_eq!(summary.agreement_rate, 0.5);
        assert_eq!(summary.approval_rate_difference["age_band=<=25"], -0.5);
        assert_eq!(summary.approval_rate_difference["age_band=>25"], 0.5);
        comparison.record("v3", &[compare(&young, Approve, Approve)]);
        assert_eq!(comparison.summary().events, 1);
        assert_eq!(comparison.summary().agreement_rate, 1.0);
    }
}
