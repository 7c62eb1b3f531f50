//! `audit verify`: proves the audit tables intact and every decision reproducible.
//! - Chains: every row's hash is recomputed and linked to its predecessor, from the retention
//!   anchor to the chain head of its source partition, so an edited, deleted or inserted row is
//!   reported. Rows written before the lean table are checked as they were written (`legacy`).
//! - Re-scoring: for a range of rows, the stored model inputs are scored again with the recorded
//!   model (found by its sha256 under the models root) by LightGBM itself, independently of the
//!   worker's compiled trees: the probability (bit for bit), the decision under the recorded
//!   cutoffs and the reason codes must be identical, the reasons' contributions equal within
//!   [`CONTRIBUTION_TOLERANCE`] (TreeSHAP summed in another order differs only in rounding).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::{PgPool, Row};

use super::legacy::{read_legacy_row, verify_legacy_chains, AUDIT_COLUMNS};
pub use super::report::{render, Recorded, VerifyReport};
use super::OpsError;
use crate::domain::{AdverseReason, DecisionOutcome, ProtectedAttributes, GENESIS};
use crate::model::{ModelBundle, Scorer, CONTRIBUTION_TOLERANCE, MODEL_CARD_FILE};
use crate::sinks::{read_decision, AuditStore, DECISION_COLUMNS};

/// Which rows to re-score.
#[derive(Debug, Clone, Default)]
pub struct RescoreRange {
    /// Rows processed at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Rows processed before this.
    pub until: Option<DateTime<Utc>>,
    /// Rows whose application id starts with this.
    pub application_id_prefix: Option<String>,
    /// At most this many rows of each table (oldest first).
    pub limit: Option<i64>,
}

/// A source partition's chain: id, topic, partition, head position and hash, anchor position and hash.
type ChainHead = (i32, String, i32, i64, Vec<u8>, i64, Option<Vec<u8>>);

/// Checks every chain of the lean table, then the legacy chains.
pub async fn verify_chains(pool: &PgPool, report: &mut VerifyReport) -> Result<(), OpsError> {
    let audit = AuditStore::from_pool(pool.clone());
    let sources: Vec<ChainHead> = sqlx::query_as(
        "SELECT source_id, topic, partition, chain_last_seq, chain_last_hash, anchor_seq, anchor_hash \
         FROM source_partitions ORDER BY topic, partition",
    )
    .fetch_all(pool)
    .await?;
    let query = format!(
        "SELECT {DECISION_COLUMNS}, d.row_hash, d.chain_seq FROM decisions d \
         JOIN source_partitions s ON s.source_id = d.source_id \
         WHERE d.source_id = $1 AND d.chain_seq > $2 ORDER BY d.chain_seq"
    );
    let mut connection = pool.acquire().await?;
    for (source_id, topic, partition, last_seq, last_hash, anchor_seq, anchor_hash) in sources {
        let chain = format!("{topic}/{partition}");
        let mut previous = hash_of(anchor_hash.as_deref().unwrap_or(&GENESIS));
        let mut expected = anchor_seq + 1;
        let mut stored = sqlx::query(&query).bind(source_id).bind(anchor_seq).fetch(pool);
        let mut failures = 0;
        while let Some(row) = stored.try_next().await? {
            let decision = read_decision(&row, audit.policies(), &mut connection).await?;
            let stored_hash = hash_of(&row.try_get::<Vec<u8>, _>(18)?);
            let seq: i64 = row.try_get(19)?;
            report.chain_rows_checked += 1;
            if seq != expected {
                failures += 1;
                report.chain_failures.push(format!("{chain}: rows {expected}..{} are missing", seq - 1));
            }
            if decision.sealed.is_some() && decision.protected != ProtectedAttributes::default() {
                failures += 1;
                report.chain_failures.push(format!(
                    "{chain}: row {seq} (offset {}) holds protected attributes in plain beside the sealed ones",
                    decision.source_offset
                ));
            }
            if decision.hash(seq, &previous, decision.sealed.as_deref()) != stored_hash {
                failures += 1;
                report.chain_failures.push(format!(
                    "{chain}: row {seq} (offset {}) does not match its hash: altered after it was written",
                    decision.source_offset
                ));
            }
            (previous, expected) = (stored_hash, seq + 1);
        }
        if expected - 1 != last_seq || (last_seq > anchor_seq && previous[..] != last_hash[..]) {
            failures += 1;
            report.chain_failures.push(format!("{chain}: ends at row {} but its head is row {last_seq}", expected - 1));
        }
        report.chains_checked += 1;
        if failures > 0 {
            tracing::warn!(chain = %chain, failures, "audit chain check failed");
        }
    }
    drop(connection);
    verify_legacy_chains(pool, report).await
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

/// Re-scores the rows in `range`, of the lean table and of the legacy one, and compares them
/// with what was recorded.
pub async fn rescore(
    pool: &PgPool,
    models: &Models,
    range: &RescoreRange,
    report: &mut VerifyReport,
) -> Result<(), OpsError> {
    let audit = AuditStore::from_pool(pool.clone());
    let filter = "($1::timestamptz IS NULL OR processed_at >= $1) AND ($2::timestamptz IS NULL OR processed_at < $2) \
                  AND ($3::text IS NULL OR starts_with(application_id, $3))";
    let query = format!(
        "SELECT {DECISION_COLUMNS} FROM decisions d JOIN source_partitions s ON s.source_id = d.source_id \
         WHERE {} ORDER BY d.processed_at, d.source_id, d.chain_seq LIMIT $4",
        filter.replace("processed_at", "d.processed_at").replace("application_id", "d.application_id")
    );
    let mut connection = pool.acquire().await?;
    let mut rows = bind_range(sqlx::query(&query), range).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let decision = read_decision(&row, audit.policies(), &mut connection).await?;
        check(models, &Recorded::of_row(&decision), report);
    }
    let query = format!(
        "SELECT {AUDIT_COLUMNS} FROM decision_audit_legacy WHERE {filter} ORDER BY processed_at, decision_id LIMIT $4"
    );
    let mut legacy = bind_range(sqlx::query(&query), range).fetch(pool);
    while let Some(row) = legacy.try_next().await? {
        let row = read_legacy_row(&row)?;
        check(models, &row.recorded(), report);
    }
    Ok(())
}

fn bind_range<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    range: &'q RescoreRange,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query.bind(range.since).bind(range.until).bind(&range.application_id_prefix).bind(range.limit.unwrap_or(i64::MAX))
}

fn check(models: &Models, recorded: &Recorded, report: &mut VerifyReport) {
    report.rows_rescored += 1;
    match reproduce(models, recorded) {
        Ok(()) => report.rows_identical += 1,
        Err(difference) => report.mismatches.push(format!("{}: {difference}", recorded.label)),
    }
    *report.models.entry(recorded.model_version.clone()).or_default() += 1;
}

/// Re-scores one recorded decision; `Err` says what differs.
pub fn reproduce(models: &Models, row: &Recorded) -> Result<(), String> {
    let (bundle, scorer) = models
        .get(&row.model_sha256)
        .ok_or_else(|| format!("model {} is not under the models root", row.model_sha256))?;
    let vector = bundle
        .card
        .features
        .iter()
        .map(|spec| row.inputs.get(&spec.name).copied().ok_or(format!("input {} missing", spec.name)))
        .collect::<Result<Vec<f64>, String>>()?;
    if row.inputs.len() != vector.len() {
        return Err(format!("{} stored inputs for {} model features", row.inputs.len(), vector.len()));
    }
    let probability = scorer.reference_score_row(&vector).map_err(|error| error.to_string())?;
    if probability.to_bits() != row.probability_of_default.to_bits() {
        return Err(format!("probability {probability} re-scored, {} recorded", row.probability_of_default));
    }
    let decision = row.cutoffs.decide(probability);
    if decision != row.outcome {
        return Err(format!("decision {} re-derived, {} recorded", decision.as_str(), row.outcome.as_str()));
    }
    if row.catalogue_version != bundle.catalogue.version {
        return Err(format!(
            "reason catalogue {} recorded, the model directory has {}",
            row.catalogue_version, bundle.catalogue.version
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
        let codes =
            |reasons: &[AdverseReason]| reasons.iter().map(|reason| reason.code.clone()).collect::<Vec<_>>().join(",");
        return Err(format!("reasons [{}] re-derived, [{}] recorded", codes(&reasons), codes(&row.reasons)));
    }
    Ok(())
}
