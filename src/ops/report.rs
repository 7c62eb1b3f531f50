//! What `audit verify` found, and a recorded decision as re-scoring compares it (new and legacy
//! rows alike).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::domain::{AdverseReason, AuditRow, Cutoffs, DecisionOutcome};

/// What `audit verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub chains_checked: usize,
    pub chain_rows_checked: u64,
    /// Legacy rows with no chain (written before chaining existed).
    pub unchained_rows: i64,
    pub chain_failures: Vec<String>,
    pub rows_rescored: u64,
    pub rows_identical: u64,
    /// Re-scored rows per model version.
    pub models: BTreeMap<String, u64>,
    pub mismatches: Vec<String>,
}

impl VerifyReport {
    /// No chain failure and no mismatch.
    pub fn passed(&self) -> bool {
        self.chain_failures.is_empty() && self.mismatches.is_empty() && self.unchained_rows == 0
    }
}

/// A recorded decision, as re-scoring compares it.
pub struct Recorded {
    /// How the report names the row.
    pub label: String,
    pub model_version: String,
    pub model_sha256: String,
    /// Inputs by feature name.
    pub inputs: HashMap<String, f64>,
    pub probability_of_default: f64,
    pub outcome: DecisionOutcome,
    pub cutoffs: Cutoffs,
    pub catalogue_version: String,
    pub reasons: Vec<AdverseReason>,
}

impl Recorded {
    pub(super) fn of_row(row: &AuditRow) -> Self {
        let policy = &row.policy;
        Self {
            label: format!("{}/{}@{}", row.source_topic, row.source_partition, row.source_offset),
            model_version: policy.model_version.clone(),
            model_sha256: policy.model_sha256.clone(),
            inputs: policy.feature_names.iter().cloned().zip(row.inputs.iter().copied()).collect(),
            probability_of_default: row.probability_of_default,
            outcome: row.outcome,
            cutoffs: policy.cutoffs,
            catalogue_version: policy.catalogue_version.clone(),
            reasons: row.decision_event().reasons,
        }
    }
}

/// The report as text.
pub fn render(report: &VerifyReport, chains_checked: bool) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(text, "audit verify");
    if chains_checked {
        let _ = writeln!(
            text,
            "  hash chains     {} chains, {} rows linked, {} breaks, {} unchained rows",
            report.chains_checked,
            report.chain_rows_checked,
            report.chain_failures.len(),
            report.unchained_rows
        );
    }
    let share = 100.0 * report.rows_identical as f64 / report.rows_rescored.max(1) as f64;
    let models: Vec<String> = report.models.iter().map(|(version, rows)| format!("{version} {rows}")).collect();
    let _ = writeln!(
        text,
        "  re-scored       {} rows ({}): {} identical ({share:.2}%), {} mismatches",
        report.rows_rescored,
        models.join(", "),
        report.rows_identical,
        report.mismatches.len()
    );
    for failure in report.chain_failures.iter().chain(&report.mismatches).take(20) {
        let _ = writeln!(text, "  ! {failure}");
    }
    let _ = writeln!(text, "  result          {}", if report.passed() { "PASSED" } else { "FAILED" });
    text
}
