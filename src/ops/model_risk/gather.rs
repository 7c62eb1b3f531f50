//! Reading one period from PostgreSQL: the monitors' persisted counts (fairness, drift), the
//! decisions (models, reason codes by group) and the matured labels joined to them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, FromRow, PgPool, Row};

use super::figures::{self, FairnessBucket, ModelDrift, ModelUsage, OutcomeFigures, ReasonTally};
use super::{ReportError, ReportSettings};
use crate::codec::StoredProtected;
use crate::model::ModelCard;
use crate::monitor::{LabelledDecision, OutcomeMonitor};

/// The period's bounds in event time, and the processing-time range its decisions can be in.
pub(super) struct Bounds {
    pub from_ms: i64,
    pub to_ms: i64,
    pub processed_from: DateTime<Utc>,
    pub processed_to: DateTime<Utc>,
}

/// The decisions of the period: its processing-time range (partition pruning), its event times.
const IN_PERIOD: &str = "d.processed_at >= $1 AND d.processed_at < $2 AND d.event_time >= $3 AND d.event_time < $4";

impl Bounds {
    /// The values of [`IN_PERIOD`]'s `$1`–`$4`.
    fn arguments(&self) -> Result<PgArguments, ReportError> {
        let mut arguments = PgArguments::default();
        let (from, to) = (figures::millis_to_time(self.from_ms), figures::millis_to_time(self.to_ms));
        for value in [self.processed_from, self.processed_to, from, to] {
            arguments.add(value).map_err(sqlx::Error::Encode)?;
        }
        Ok(arguments)
    }
}

/// Fairness counts of the buckets in `[from_ms, to_ms)`, summed over source partitions.
/// Attributes no longer monitored (an intersection taken out of the configuration) are left out.
pub(super) async fn fairness_buckets(
    pool: &PgPool,
    bounds: &Bounds,
    settings: &ReportSettings<'_>,
) -> Result<Vec<FairnessBucket>, ReportError> {
    let rows: Vec<(i64, i16, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT bucket_ms, attribute, grp, sum(approved)::bigint, sum(reviewed)::bigint, sum(declined)::bigint \
         FROM monitor_fairness WHERE bucket_ms >= $1 AND bucket_ms < $2 \
         GROUP BY bucket_ms, attribute, grp ORDER BY bucket_ms, attribute, grp",
    )
    .bind(bounds.from_ms)
    .bind(bounds.to_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(bucket_ms, attribute, group, approved, reviewed, declined)| {
            Some(FairnessBucket {
                bucket_ms,
                attribute: settings.grouping.position(attribute)?,
                group,
                counts: [approved, reviewed, declined].map(|count| count.max(0) as u64),
            })
        })
        .collect())
}

/// PSI per model that decided in the period and whose card is in `cards`.
pub(super) async fn drift(
    pool: &PgPool,
    bounds: &Bounds,
    cards: &HashMap<String, ModelCard>,
    settings: &ReportSettings<'_>,
) -> Result<Vec<ModelDrift>, ReportError> {
    let rows: Vec<(String, i16, Vec<i64>)> = sqlx::query_as(
        "SELECT model_sha256, series, counts FROM monitor_drift \
         WHERE bucket_ms >= $1 AND bucket_ms < $2 AND model_sha256 <> ''",
    )
    .bind(bounds.from_ms)
    .bind(bounds.to_ms)
    .fetch_all(pool)
    .await?;
    let mut per_model: BTreeMap<String, BTreeMap<usize, Vec<u64>>> = BTreeMap::new();
    for (model, series, counts) in rows {
        let bins = per_model.entry(model).or_default().entry(series as usize).or_insert_with(|| vec![0; counts.len()]);
        if bins.len() < counts.len() {
            bins.resize(counts.len(), 0);
        }
        for (bin, count) in bins.iter_mut().zip(counts) {
            *bin += count.max(0) as u64;
        }
    }
    Ok(per_model
        .iter()
        .filter_map(|(model, counts)| {
            let card = cards.get(model)?;
            Some(figures::drift(card, counts, settings.drift_min_count, settings.psi_threshold))
        })
        .collect())
}

/// The model versions that decided in the period.
pub(super) async fn models(pool: &PgPool, bounds: &Bounds) -> Result<Vec<ModelUsage>, ReportError> {
    type Usage = (String, String, i64, DateTime<Utc>, DateTime<Utc>);
    let sql = format!(
        "SELECT p.model_version, p.model_sha256, count(*), min(d.event_time), max(d.event_time) \
         FROM decisions d JOIN decision_policies p ON p.policy_id = d.policy_id \
         WHERE {IN_PERIOD} GROUP BY 1, 2 ORDER BY 4"
    );
    let rows: Vec<Usage> = sqlx::query_as_with(&sql, bounds.arguments()?).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(version, sha256, decisions, first_event, last_event)| ModelUsage {
            version,
            sha256,
            decisions: decisions.max(0) as u64,
            first_event,
            last_event,
        })
        .collect())
}

/// Reason codes per group, each decision's protected attributes opened with the keys.
pub(super) async fn reasons(
    pool: &PgPool,
    bounds: &Bounds,
    settings: &ReportSettings<'_>,
) -> Result<Vec<figures::GroupReasons>, ReportError> {
    let policies: HashMap<i16, Vec<String>> =
        sqlx::query_as::<_, (i16, Vec<String>)>("SELECT policy_id, reason_codes FROM decision_policies")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let sql = format!(
        "SELECT d.policy_id, d.reasons, d.application_id, d.sex_status, d.age_in_years, d.foreign_worker, \
                d.protected_sealed \
         FROM decisions d WHERE {IN_PERIOD}"
    );
    let mut rows = sqlx::query_with(&sql, bounds.arguments()?).fetch(pool);
    let mut tally = ReasonTally::default();
    while let Some(row) = rows.try_next().await? {
        let policy: i16 = row.get(0);
        let entries: Vec<i16> = row.get(1);
        let (_, protected) = StoredProtected::from_row(&row)?.open(settings.keys)?;
        let catalogue = policies.get(&policy);
        let codes: Vec<&str> = entries
            .iter()
            .filter_map(|entry| catalogue?.get(usize::try_from(*entry).ok()?.checked_sub(1)?).map(String::as_str))
            .collect();
        tally.add(&settings.grouping.classify(&protected), &codes);
    }
    Ok(tally.finish(&settings.grouping.attributes()))
}

/// Equal opportunity and AUC over the period's decisions that have an observed outcome.
pub(super) async fn outcomes(
    pool: &PgPool,
    bounds: &Bounds,
    settings: &ReportSettings<'_>,
    decisions: u64,
) -> Result<OutcomeFigures, ReportError> {
    let span = (bounds.to_ms - bounds.from_ms).max(1);
    let monitor = OutcomeMonitor::new(settings.grouping.clone(), settings.min_group_size, span, 1);
    let sql = format!(
        "SELECT o.defaulted, d.outcome = 0, d.probability_of_default, d.application_id, d.sex_status, \
                d.age_in_years, d.foreign_worker, d.protected_sealed \
         FROM decisions d \
         JOIN decided_applications a ON a.source_id = d.source_id AND a.chain_seq = d.chain_seq \
         JOIN loan_outcomes o ON application_key(o.application_id) = a.application_key \
         WHERE {IN_PERIOD}"
    );
    let mut rows = sqlx::query_with(&sql, bounds.arguments()?).fetch(pool);
    let (mut labelled, mut defaults) = (0_u64, 0_u64);
    while let Some(row) = rows.try_next().await? {
        let (_, protected) = StoredProtected::from_row(&row)?.open(settings.keys)?;
        let defaulted: bool = row.get(0);
        defaults += u64::from(defaulted);
        monitor.record(&LabelledDecision {
            partition: 0,
            observed_millis: bounds.from_ms,
            defaulted,
            approved: row.get(1),
            probability_of_default: row.get(2),
            protected,
        });
        labelled += 1;
    }
    let mut figures = monitor.snapshot();
    figures.window_seconds = span / 1000;
    Ok(OutcomeFigures {
        labelled,
        label_coverage: labelled as f64 / decisions.max(1) as f64,
        default_rate: (labelled > 0).then(|| defaults as f64 / labelled as f64),
        figures,
    })
}
