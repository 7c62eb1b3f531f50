//! Monitors of one replica: rolling event-time `window`s of counts feeding `fairness`
//! (approval rates, disparate impact, parity, with intervals), `drift` (PSI) and `outcomes`
//! (equal opportunity and AUC on delayed labels); hysteretic `alerts`; the champion/challenger
//! `shadow` comparison. All of that is pure. Kept apart: the `evaluator`, which turns
//! snapshots into gauges and alert events, and the `rebuild`, which reads the audit table.

mod alerts;
mod calibration;
mod counts;
mod drift;
mod estimate;
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
use crate::error::{Retriable, Retry};
use crate::model::ModelCard;
use crate::telemetry::Metrics;
use alerts::AlertTracker;
use drift::DriftMonitor;
use fairness::FairnessMonitor;

pub use drift::{critical_psi, psi, SeriesDrift, SCORE_SERIES};
pub use estimate::{expected_performance, ExpectedPerformance};
pub use fairness::{attribute_reports, AttributeReport, ComparisonStatus, GroupReport};
pub use outcomes::OutcomeSnapshot;
pub(crate) use outcomes::{LabelledDecision, OutcomeMonitor};
pub use rebuild::{AuditReader, OutcomeRebuild};
pub(crate) use shadow::{Comparison, ShadowComparison};
pub use stats::{roc_auc, Estimate};
pub use window::Counts;

/// Why the monitors could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("reading the audit table: {0}")]
    Database(#[from] sqlx::Error),
}

impl Retriable for MonitorError {
    /// The audit table is read again once the database answers (a sealed value that does not
    /// open is left out of the rebuild, not an error).
    fn retry(&self) -> Retry {
        match self {
            Self::Database(_) => Retry::Unavailable,
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

    /// The label-free estimate over the reported model's decisions in the window.
    pub fn expected(&self) -> ExpectedPerformance {
        expected_performance(&self.drift.score_histogram())
    }

    /// JSON for `/fairness`: windows, metrics, intervals and alert states.
    pub fn report(&self) -> Value {
        let statuses = self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).statuses();
        json!({
            "model_version": self.model_version(),
            "fairness": self.fairness.snapshot(),
            "drift": self.drift.snapshot(),
            "outcomes": self.outcomes.snapshot(),
            "expected": self.expected(),
            "alerts": statuses,
        })
    }
}
