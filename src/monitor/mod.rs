//! Monitors of one replica: rolling event-time `window`s of counts feeding `fairness`
//! (approval rates, disparate impact, parity, with intervals), `drift` (PSI) and `outcomes`
//! (equal opportunity and AUC on delayed labels); hysteretic `alerts`; the champion/challenger
//! `shadow` comparison. All of that is pure. Kept apart: the `evaluator`, which turns
//! snapshots into gauges and alert events, and the `rebuild`, which reads the audit table.

mod alerts;
mod counts;
mod drift;
mod evaluator;
mod fairness;
mod outcomes;
mod rebuild;
mod shadow;
mod stats;
mod window;

use std::sync::Mutex;

use serde_json::{json, Value};

use crate::config::WorkerConfig;
use crate::domain::{DecisionOutcome, ProtectedAttributes, ATTRIBUTES};
use crate::error::{Retriable, Retry};
use crate::model::ModelCard;
use crate::telemetry::Metrics;
use alerts::AlertTracker;
use drift::DriftMonitor;
use fairness::FairnessMonitor;

pub(crate) use outcomes::{LabelledDecision, OutcomeMonitor};
pub use rebuild::AuditReader;
pub(crate) use shadow::{Comparison, ShadowComparison};
pub use stats::roc_auc;

/// Why the monitors could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("reading the audit table: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Sealed(#[from] crate::codec::SealError),
}

impl Retriable for MonitorError {
    /// The audit table is read again once the database answers; a sealed value that does not
    /// open (a key missing from the key file, an altered row) stays so.
    fn retry(&self) -> Retry {
        match self {
            Self::Database(_) => Retry::Unavailable,
            Self::Sealed(_) => Retry::Never,
        }
    }
}

/// Thresholds used by the alert rules.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    disparate_impact: f64,
    parity_difference: f64,
    psi: f64,
}

/// The monitors of one replica and their alert state.
pub struct Monitoring {
    fairness: FairnessMonitor,
    drift: DriftMonitor,
    /// Delayed-label windows, fed by the outcomes consumer.
    pub outcomes: OutcomeMonitor,
    tracker: Mutex<AlertTracker>,
    thresholds: Thresholds,
    /// Buckets in the fairness and drift windows.
    window_buckets: i64,
    metrics: Metrics,
}

impl Monitoring {
    /// Monitors configured from `config`, drift against `card`'s training histograms.
    pub fn new(config: &WorkerConfig, card: &ModelCard, metrics: Metrics) -> Self {
        let bucket_millis = config.fairness.bucket_seconds as i64 * 1000;
        let bucket_count = (config.fairness.window_seconds / config.fairness.bucket_seconds) as i64;
        Self {
            fairness: FairnessMonitor::new(
                config.grouping.clone(),
                config.fairness.min_group_size,
                bucket_millis,
                bucket_count,
            ),
            outcomes: OutcomeMonitor::new(
                config.grouping.clone(),
                config.fairness.min_group_size,
                bucket_millis,
                bucket_count,
            ),
            drift: DriftMonitor::new(
                card,
                config.drift.min_count,
                config.drift.psi_threshold,
                bucket_millis,
                bucket_count,
            ),
            tracker: Mutex::new(AlertTracker::new(config.alerts.sustain_seconds as i64 * 1000)),
            thresholds: Thresholds {
                disparate_impact: config.fairness.disparate_impact_threshold,
                parity_difference: config.fairness.parity_difference_threshold,
                psi: config.drift.psi_threshold,
            },
            window_buckets: bucket_count,
            metrics,
        }
    }

    /// Counts one durable decision in the windows and the fleet-wide counters.
    pub fn record(
        &self,
        partition: i32,
        event_millis: i64,
        protected: &ProtectedAttributes,
        outcome: DecisionOutcome,
        model_sha256: &str,
        features: &[f64],
        probability_of_default: f64,
    ) {
        let groups = self.fairness.record(partition, event_millis, protected, outcome == DecisionOutcome::Approve);
        for (attribute, group) in ATTRIBUTES.iter().zip(&groups) {
            self.metrics.fairness_decisions.with_label_values(&[attribute, group.as_str(), outcome.as_str()]).inc();
        }
        self.drift.record(partition, event_millis, model_sha256, features, probability_of_default);
    }

    /// Reports `card`'s model from now on: its version, drift against its training histograms
    /// over the window of its own decisions, and outcomes joined to its decisions only. Called
    /// with the model of every batch; on a change the earlier model's drift gauges are cleared.
    pub fn follow_model(&self, card: &ModelCard) {
        if self.drift.follow(card) {
            self.metrics.drift_psi.reset();
            self.outcomes.forget_all();
            tracing::info!(version = %card.version, "monitors follow the active model");
        }
    }

    /// The version of the model reported.
    pub fn model_version(&self) -> String {
        self.drift.model_version()
    }

    /// Counts an outcome event by result (`matched`, `unmatched`, `invalid`).
    pub fn count_outcome(&self, result: &str) {
        self.metrics.outcomes.with_label_values(&[result]).inc();
    }

    /// Forgets revoked partitions.
    pub fn forget_partitions(&self, partitions: &[i32]) {
        self.fairness.forget_partitions(partitions);
        self.drift.forget_partitions(partitions);
    }

    /// JSON for `/fairness`: windows, metrics, intervals and alert states.
    pub fn report(&self) -> Value {
        let statuses = self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).statuses();
        json!({
            "model_version": self.model_version(),
            "fairness": self.fairness.snapshot(),
            "drift": self.drift.snapshot(),
            "outcomes": self.outcomes.snapshot(),
            "alerts": statuses,
        })
    }
}
