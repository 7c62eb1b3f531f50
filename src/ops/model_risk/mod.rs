//! `credit-worker report`: the model-risk report of a period, for a bank's model-risk and
//! compliance team. It reads the monitors' persisted counts, the audit table, the matured labels
//! and the alerts topic, and writes `report.json` and a self-contained `report.html` (inline
//! SVG, no script, no external asset) showing the same figures.
//!
//! Layout: `gather` reads (I/O), `alerts` reads the alerts topic, `figures` computes (pure),
//! `html` and `svg` render (pure).

mod alerts;
mod figures;
mod gather;
mod html;
mod svg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::codec::{ProtectedKeys, SealError};
use crate::config::KafkaConfig;
use crate::domain::GroupingConfig;
use crate::error::{Retriable, Retry};
use crate::model::{ModelBundle, ModelCard};
pub use figures::{ModelRiskReport, Period};
pub use html::render;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("opening a protected value: {0}")]
    Sealed(#[from] SealError),
    #[error("reading the alerts topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the alerts topic `{0}` does not exist")]
    NoAlertsTopic(String),
    #[error("the alert schema: {0}")]
    Alert(String),
    #[error("encoding report.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyPeriod { from: DateTime<Utc>, to: DateTime<Utc> },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Retriable for ReportError {
    /// The database or the broker may come back; a key that does not open a row, a bad period or
    /// an unwritable directory stay so.
    fn retry(&self) -> Retry {
        match self {
            Self::Database(_) | Self::Kafka(_) => Retry::Unavailable,
            _ => Retry::Never,
        }
    }
}

/// What the report is computed with: the worker's own grouping, thresholds and keys.
pub struct ReportSettings<'a> {
    pub grouping: GroupingConfig,
    pub min_group_size: u64,
    pub bucket_seconds: i64,
    pub disparate_impact_threshold: f64,
    pub drift_min_count: u64,
    pub psi_threshold: f64,
    /// How far event time may trail or lead processing time (the worker dead-letters the rest).
    pub max_event_time_past_seconds: i64,
    pub max_event_time_future_seconds: i64,
    pub keys: &'a ProtectedKeys,
    /// Model cards by sha256, for drift against their training histograms.
    pub cards: HashMap<String, ModelCard>,
    /// Where alert events are read from; `None` leaves them out.
    pub kafka: Option<&'a KafkaConfig>,
}

/// The cards of the models under `models_root` that load (the others are named in the result).
pub fn model_cards(models_root: &Path) -> std::io::Result<(HashMap<String, ModelCard>, Vec<String>)> {
    let mut cards = HashMap::new();
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(models_root)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        match ModelBundle::load(&path) {
            Ok(bundle) => {
                cards.insert(bundle.card.model_sha256.clone(), bundle.card);
            }
            Err(error) => refused.push(format!("{}: {error}", path.display())),
        }
    }
    Ok((cards, refused))
}

/// The report of event-time period `[from, to)`, widened to whole monitor buckets.
pub async fn build(
    pool: &PgPool,
    settings: &ReportSettings<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<ModelRiskReport, ReportError> {
    if from >= to {
        return Err(ReportError::EmptyPeriod { from, to });
    }
    let bucket_ms = settings.bucket_seconds.max(1) * 1000;
    let from_ms = from.timestamp_millis().div_euclid(bucket_ms) * bucket_ms;
    let to_ms = (to.timestamp_millis() + bucket_ms - 1).div_euclid(bucket_ms) * bucket_ms;
    let bounds = gather::Bounds {
        from_ms,
        to_ms,
        processed_from: figures::millis_to_time(from_ms - settings.max_event_time_future_seconds * 1000),
        processed_to: figures::millis_to_time(to_ms + settings.max_event_time_past_seconds * 1000),
    };
    let step_ms = figures::step_millis(to_ms - from_ms, bucket_ms);
    let buckets = gather::fairness_buckets(pool, &bounds, settings).await?;
    let (fairness, fairness_over_time) =
        figures::fairness(&settings.grouping, settings.min_group_size, &buckets, from_ms, step_ms);
    let decisions = figures::decision_totals(&buckets);
    let outcomes = gather::outcomes(pool, &bounds, settings, decisions.total).await?;
    let alerts = match settings.kafka {
        Some(kafka) => {
            let kafka = kafka.clone();
            tokio::task::spawn_blocking(move || alerts::emitted(&kafka, from_ms, to_ms, Duration::from_secs(2)))
                .await
                .map_err(|error| ReportError::Alert(error.to_string()))??
        }
        None => Vec::new(),
    };
    Ok(ModelRiskReport {
        generated_at: Utc::now(),
        period: Period { from: figures::millis_to_time(from_ms), to: figures::millis_to_time(to_ms) },
        bucket_seconds: bucket_ms / 1000,
        step_seconds: step_ms / 1000,
        min_group_size: settings.min_group_size,
        disparate_impact_threshold: settings.disparate_impact_threshold,
        psi_threshold: settings.psi_threshold,
        models: gather::models(pool, &bounds).await?,
        drift: gather::drift(pool, &bounds, &settings.cards, settings).await?,
        reasons: gather::reasons(pool, &bounds, settings).await?,
        decisions,
        fairness,
        fairness_over_time,
        outcomes,
        alerts,
    })
}

/// Writes `report.json` and `report.html` into `directory` (created if missing); returns the
/// HTML file's path.
pub fn write(report: &ModelRiskReport, directory: &Path) -> Result<PathBuf, ReportError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| ReportError::Write { path, source }
    };
    std::fs::create_dir_all(directory).map_err(failed(directory))?;
    let json_path = directory.join("report.json");
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(&json_path, json).map_err(failed(&json_path))?;
    let html_path = directory.join("report.html");
    std::fs::write(&html_path, render(report)).map_err(failed(&html_path))?;
    Ok(html_path)
}
