//! `audit verify`: proves the audit table is intact and every decision reproducible.
//! - Chains: every row's hash is recomputed and linked to its predecessor, from the retention
//!   anchor to the chain head, so an edited, deleted or inserted row is reported.
//! - Re-scoring: for a range of rows, the stored model inputs are scored again with the recorded
//!   model (found by its sha256 under the models root) by LightGBM itself, independently of the
//!   worker's compiled trees: the probability (bit for bit), the decision under the recorded
//!   cutoffs and the reason codes must be identical, the reasons' contributions equal within
//!   [`CONTRIBUTION_TOLERANCE`] (TreeSHAP summed in another order differs only in rounding).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::chain::{row_hash, Link, GENESIS};
use super::{read_row, AuditError, AUDIT_COLUMNS};
use crate::decision::Cutoffs;
use crate::events::DecisionOutcome;
use crate::model::scorer::{Scorer, CONTRIBUTION_TOLERANCE};
use crate::model::{ModelBundle, MODEL_CARD_FILE};
use crate::process::AuditRow;

/// Which rows to re-score.
#[derive(Debug, Clone, Default)]
pub struct RescoreRange {
    /// Rows processed at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Rows processed before this.
    pub until: Option<DateTime<Utc>>,
    /// Rows whose application id starts with this.
    pub application_id_prefix: Option<String>,
    /// At most this many rows (oldest first).
    pub limit: Option<i64>,
}

/// What `audit verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub chains_checked: usize,
    pub chain_rows_checked: u64,
    /// Rows with no chain (written before chaining existed).
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

/// Checks every chain.
pub async fn verify_chains(pool: &PgPool, report: &mut VerifyReport) -> Result<(), AuditError> {
    report.unchained_rows =
        sqlx::query_scalar("SELECT count(*) FROM decision_audit WHERE chain_key IS NULL").fetch_one(pool).await?;
    let heads = sqlx::query(
        "SELECT chain_key, last_seq, last_hash, pruned_through_seq, pruned_through_hash FROM audit_chain_heads \
         ORDER BY chain_key",
    )
    .fetch_all(pool)
    .await?;
    let query = format!(
        "SELECT {AUDIT_COLUMNS}, chain_seq, prev_hash, row_hash FROM decision_audit WHERE chain_key = $1 \
         AND chain_seq > $2 ORDER BY chain_seq"
    );
    for head in heads {
        let key: String = head.get(0);
        let (last_seq, last_hash): (i64, Vec<u8>) = (head.get(1), head.get(2));
        let pruned_seq: i64 = head.get(3);
        let mut previous = hash_of(head.get::<Option<Vec<u8>>, _>(4).as_deref().unwrap_or(&GENESIS));
        let mut expected_seq = pruned_seq + 1;
        let mut rows = sqlx::query(&query).bind(&key).bind(pruned_seq).fetch(pool);
        let mut failures = 0;
        while let Some(stored) = rows.try_next().await? {
            let row = read_row(&stored)?;
            let seq: i64 = stored.get(19);
            let prev_hash = hash_of(&stored.get::<Vec<u8>, _>(20));
            let stored_hash = hash_of(&stored.get::<Vec<u8>, _>(21));
            report.chain_rows_checked += 1;
            if seq != expected_seq {
                failures += 1;
                report.chain_failures.push(format!("{key}: rows {expected_seq}..{} are missing", seq - 1));
            }
            if prev_hash != previous {
                failures += 1;
                report.chain_failures.push(format!("{key}: row {seq} does not link to its predecessor"));
            }
            let link = Link { chain_key: key.clone(), seq, prev_hash };
            if row_hash(&row, &link) != stored_hash {
                failures += 1;
                report
                    .chain_failures
                    .push(format!("{key}: row {seq} (decision {}) was altered after it was written", row.decision_id));
            }
            previous = stored_hash;
            expected_seq = seq + 1;
        }
        if expected_seq - 1 != last_seq || (last_seq > pruned_seq && previous[..] != last_hash[..]) {
            failures += 1;
            report
                .chain_failures
                .push(format!("{key}: ends at row {} but its head is row {last_seq}", expected_seq - 1));
        }
        report.chains_checked += 1;
        if failures > 0 {
            tracing::warn!(chain = %key, failures, "audit chain check failed");
        }
    }
    Ok(())
}

fn hash_of(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().unwrap_or([0xff; 32])
}

/// Verified models by sha256, each with a scorer.
pub type Models = HashMap<String, (ModelBundle, Scorer)>;

/// The models under `models_root` that load and verify, and why the others were refused (a row
/// made by a refused model then shows as a mismatch).
pub fn load_models(models_root: &Path) -> std::io::Result<(Models, Vec<String>)> {
    let (mut models, mut refused) = (HashMap::new(), Vec::new());
    let mut directories: Vec<_> =
        std::fs::read_dir(models_root)?.filter_map(|entry| Some(entry.ok()?.path())).collect();
    directories.sort();
    for directory in directories {
        if !directory.join(MODEL_CARD_FILE).is_file() {
            continue;
        }
        match ModelBundle::load(&directory).and_then(|bundle| Ok((Scorer::new(&bundle.model_text)?, bundle))) {
            Ok((scorer, bundle)) => {
                models.insert(bundle.card.model_sha256.clone(), (bundle, scorer));
            }
            Err(error) => refused.push(format!("{}: {error}", directory.display())),
        }
    }
    Ok((models, refused))
}

/// Re-scores the rows in `range` and compares them with what was recorded.
pub async fn rescore(
    pool: &PgPool,
    models: &Models,
    range: &RescoreRange,
    report: &mut VerifyReport,
) -> Result<(), AuditError> {
    let query = format!(
        "SELECT {AUDIT_COLUMNS} FROM decision_audit WHERE ($1::timestamptz IS NULL OR processed_at >= $1) \
         AND ($2::timestamptz IS NULL OR processed_at < $2) AND ($3::text IS NULL OR starts_with(application_id, $3)) \
         ORDER BY processed_at, decision_id LIMIT $4"
    );
    let mut rows = sqlx::query(&query)
        .bind(range.since)
        .bind(range.until)
        .bind(&range.application_id_prefix)
        .bind(range.limit.unwrap_or(i64::MAX))
        .fetch(pool);
    while let Some(stored) = rows.try_next().await? {
        let row = read_row(&stored)?;
        report.rows_rescored += 1;
        match reproduce(models, &row) {
            Ok(()) => report.rows_identical += 1,
            Err(difference) => report.mismatches.push(format!("decision {}: {difference}", row.decision_id)),
        }
        *report.models.entry(row.model_version.clone()).or_default() += 1;
    }
    Ok(())
}

/// Re-scores one row; `Err` says what differs.
pub fn reproduce(models: &Models, row: &AuditRow) -> Result<(), String> {
    let (bundle, scorer) = models
        .get(&row.model_sha256)
        .ok_or_else(|| format!("model {} is not under the models root", row.model_sha256))?;
    let inputs = row.model_inputs.as_object().ok_or("model_inputs is not an object")?;
    let vector = bundle
        .card
        .features
        .iter()
        .map(|spec| {
            inputs.get(&spec.name).and_then(|value| value.as_f64()).ok_or(format!("input {} missing", spec.name))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    if inputs.len() != vector.len() {
        return Err(format!("{} stored inputs for {} model features", inputs.len(), vector.len()));
    }
    let probability = scorer.reference_score_row(&vector).map_err(|error| error.to_string())?;
    if probability.to_bits() != row.probability_of_default.to_bits() {
        return Err(format!("probability {probability} re-scored, {} recorded", row.probability_of_default));
    }
    let cutoffs = Cutoffs { approve_below: row.approve_below, decline_at_or_above: row.decline_at_or_above };
    let decision = cutoffs.decide(probability);
    if decision.as_str() != row.decision {
        return Err(format!("decision {} re-derived, {} recorded", decision.as_str(), row.decision));
    }
    if row.reason_catalogue_version != bundle.catalogue.version {
        return Err(format!(
            "reason catalogue {} recorded, the model directory has {}",
            row.reason_catalogue_version, bundle.catalogue.version
        ));
    }
    let reasons = if decision == DecisionOutcome::Approve {
        Vec::new()
    } else {
        let contributions = scorer.reference_contributions(&vector).map_err(|error| error.to_string())?;
        bundle.catalogue.reasons(&bundle.card.features, &vector, &contributions, &bundle.card.feature_medians)
    };
    let same = reasons.len() == row.reasons.len()
        && reasons.iter().zip(&row.reasons).all(|(a, b)| {
            a.code == b.code
                && a.feature == b.feature
                && a.text == b.text
                && (a.contribution - b.contribution).abs() <= CONTRIBUTION_TOLERANCE
        });
    if !same {
        let codes = |reasons: &[crate::reasons::AdverseReason]| {
            reasons.iter().map(|reason| reason.code.clone()).collect::<Vec<_>>().join(",")
        };
        return Err(format!("reasons [{}] re-derived, [{}] recorded", codes(&reasons), codes(&row.reasons)));
    }
    Ok(())
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
