//! Feeds the fairness and drift monitors from decided batches, rebuilds them from the audit
//! table when partitions are assigned, evaluates the alert rules on a timer, exports the
//! gauges and publishes one `MonitoringAlert` event per alert state change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::writer::datum::GenericDatumWriter;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use schema_registry_converter::schema_registry_common::get_payload;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alerts::{AlertKey, AlertKind, AlertState, AlertTracker, Observation, Severity, Transition};
use crate::config::WorkerConfig;
use crate::drift::{DriftMonitor, DriftSnapshot};
use crate::events::{DecisionOutcome, MonitoringAlert, ProtectedAttributes, MONITORING_ALERT};
use crate::fairness::groups::ATTRIBUTES;
use crate::fairness::stats::Estimate;
use crate::fairness::{ComparisonStatus, FairnessMonitor, FairnessSnapshot};
use crate::metrics::Metrics;
use crate::model::card::ModelCard;
use crate::outcomes::{OutcomeMonitor, OutcomeSnapshot};
use crate::publish::Publisher;

/// Thresholds used by the alert rules.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    disparate_impact: f64,
    parity_difference: f64,
    psi: f64,
}

/// Details of one metric at evaluation time, for the alert event.
#[derive(Debug, Clone)]
struct Detail {
    attribute: Option<String>,
    group: Option<String>,
    feature: Option<String>,
    severity: Severity,
    value: f64,
    interval: Option<Estimate>,
    threshold: f64,
    window_seconds: i64,
    sample_size: u64,
    reference_sample_size: Option<u64>,
}

/// The monitors of one replica and their alert state.
pub struct Monitoring {
    pub fairness: FairnessMonitor,
    pub drift: DriftMonitor,
    pub outcomes: OutcomeMonitor,
    tracker: Mutex<AlertTracker>,
    thresholds: Thresholds,
    feature_names: Vec<String>,
    model_version: String,
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
            feature_names: card.features.iter().map(|feature| feature.name.clone()).collect(),
            model_version: card.version.clone(),
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
        features: &[f64],
        probability_of_default: f64,
    ) {
        let groups = self.fairness.record(partition, event_millis, protected, outcome == DecisionOutcome::Approve);
        for (attribute, group) in ATTRIBUTES.iter().zip(&groups) {
            self.metrics.fairness_decisions.with_label_values(&[attribute, group.as_str(), outcome.as_str()]).inc();
        }
        self.drift.record(partition, event_millis, features, probability_of_default);
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

    /// Re-reads the window's audit rows of `partitions` (written before `before`, i.e. not by
    /// this assignment) into the windows; returns the rows read.
    pub async fn rebuild(
        &self,
        pool: &PgPool,
        topic: &str,
        partitions: &[i32],
        before: DateTime<Utc>,
        window_seconds: i64,
    ) -> Result<u64> {
        let mut rows = sqlx::query(
            "SELECT source_partition, event_time, decision, probability_of_default, model_inputs, protected_attributes
             FROM decision_audit
             WHERE source_topic = $1 AND source_partition = ANY($2) AND processed_at < $3
               AND event_time >= (SELECT max(event_time) FROM decision_audit
                                  WHERE source_topic = $1 AND source_partition = ANY($2) AND processed_at < $3)
                                 - make_interval(secs => $4)",
        )
        .bind(topic)
        .bind(partitions)
        .bind(before)
        .bind(window_seconds as f64)
        .fetch(pool);
        let mut count = 0;
        let mut features = Vec::with_capacity(self.feature_names.len());
        while let Some(row) = rows.try_next().await.context("reading audit rows")? {
            let event_time: DateTime<Utc> = row.get(1);
            let outcome = match row.get::<String, _>(2).as_str() {
                "approve" => DecisionOutcome::Approve,
                "decline" => DecisionOutcome::Decline,
                _ => DecisionOutcome::Review,
            };
            let inputs: Value = row.get(4);
            let protected: ProtectedAttributes = serde_json::from_value(row.get(5)).unwrap_or_default();
            features.clear();
            features.extend(self.feature_names.iter().map(|name| inputs[name].as_f64().unwrap_or(f64::NAN)));
            self.fairness.record(
                row.get(0),
                event_time.timestamp_millis(),
                &protected,
                outcome == DecisionOutcome::Approve,
            );
            self.drift.record(row.get(0), event_time.timestamp_millis(), &features, row.get(3));
            count += 1;
        }
        Ok(count)
    }

    /// Refreshes the gauges, steps every alert, returns the alert events to publish.
    pub fn evaluate(&self, now_millis: i64) -> Vec<MonitoringAlert> {
        let fairness = self.fairness.snapshot();
        let drift = self.drift.snapshot();
        self.export_outcomes(&self.outcomes.snapshot(), &fairness);
        let mut observations = Vec::new();
        let mut details = HashMap::new();
        self.fairness_observations(&fairness, &mut observations, &mut details);
        self.drift_observations(&drift, &mut observations, &mut details);
        let transitions: Vec<Transition> = {
            let mut tracker = self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let transitions =
                observations.iter().filter_map(|observation| tracker.step(observation, now_millis)).collect();
            for status in tracker.statuses() {
                let kind = kind_label(status.key.kind);
                self.metrics
                    .alert_firing
                    .with_label_values(&[kind, status.key.metric, &status.key.subject])
                    .set(i64::from(status.firing));
            }
            transitions
        };
        transitions
            .into_iter()
            .filter_map(|transition| {
                let detail = details.get(&transition.key)?;
                self.metrics
                    .alert_events
                    .with_label_values(&[kind_label(transition.key.kind), state_label(transition.state)])
                    .inc();
                Some(self.alert_event(&transition, detail, now_millis))
            })
            .collect()
    }

    /// JSON for `/fairness`: windows, metrics, intervals and alert states.
    pub fn report(&self) -> Value {
        let statuses = self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).statuses();
        json!({
            "model_version": self.model_version,
            "fairness": self.fairness.snapshot(),
            "drift": self.drift.snapshot(),
            "outcomes": self.outcomes.snapshot(),
            "alerts": statuses,
        })
    }

    fn fairness_observations(
        &self,
        snapshot: &FairnessSnapshot,
        observations: &mut Vec<Observation>,
        details: &mut HashMap<AlertKey, Detail>,
    ) {
        let metrics = &self.metrics;
        for attribute in &snapshot.window {
            let reference_size =
                attribute.groups.iter().find(|g| g.group == attribute.reference_group).map(|g| g.decisions);
            for group in &attribute.groups {
                let labels = [attribute.attribute.as_str(), group.group.as_str()];
                metrics.fairness_window_decisions.with_label_values(&labels).set(group.decisions as i64);
                set_estimate(&metrics.fairness_approval_rate, &labels, group.approval_rate);
                set_estimate(&metrics.fairness_disparate_impact, &labels, group.disparate_impact);
                set_estimate(&metrics.fairness_parity_difference, &labels, group.parity_difference);
                if group.status == ComparisonStatus::Reference {
                    continue;
                }
                let subject = format!("{}/{}", attribute.attribute, group.group);
                let rules = [
                    ("disparate_impact", group.disparate_impact, Severity::Critical, self.thresholds.disparate_impact),
                    (
                        "parity_difference",
                        group.parity_difference,
                        Severity::Warning,
                        self.thresholds.parity_difference,
                    ),
                ];
                for (metric, estimate, severity, threshold) in rules {
                    let key = AlertKey { kind: AlertKind::Fairness, metric, subject: subject.clone() };
                    let (breached, cleared) = match (metric, estimate) {
                        ("disparate_impact", Some(e)) => (e.upper < threshold, e.value >= threshold),
                        (_, Some(e)) => (e.upper < -threshold || e.lower > threshold, e.value.abs() <= threshold),
                        (_, None) => (false, false),
                    };
                    observations.push(Observation { key: key.clone(), breached, cleared });
                    if let Some(estimate) = estimate {
                        details.insert(
                            key,
                            Detail {
                                attribute: Some(attribute.attribute.clone()),
                                group: Some(group.group.clone()),
                                feature: None,
                                severity,
                                value: estimate.value,
                                interval: Some(estimate),
                                threshold,
                                window_seconds: snapshot.window_seconds,
                                sample_size: group.decisions,
                                reference_sample_size: reference_size,
                            },
                        );
                    }
                }
            }
        }
    }

    fn export_outcomes(&self, outcomes: &OutcomeSnapshot, fairness: &FairnessSnapshot) {
        let metrics = &self.metrics;
        metrics.model_auc.with_label_values(&["all", "all"]).set(outcomes.auc.unwrap_or(f64::NAN));
        for attribute in &outcomes.attributes {
            for group in &attribute.groups {
                let labels = [attribute.attribute.as_str(), group.group.as_str()];
                metrics.model_auc.with_label_values(&labels).set(group.auc.unwrap_or(f64::NAN));
                set_estimate(&metrics.equal_opportunity_difference, &labels, group.equal_opportunity_difference);
            }
        }
        let decided: u64 =
            fairness.window.first().map_or(0, |attribute| attribute.groups.iter().map(|g| g.decisions).sum());
        let coverage = if decided == 0 { f64::NAN } else { outcomes.labelled as f64 / decided as f64 };
        metrics.label_coverage.set(coverage);
    }

    fn drift_observations(
        &self,
        snapshot: &DriftSnapshot,
        observations: &mut Vec<Observation>,
        details: &mut HashMap<AlertKey, Detail>,
    ) {
        if let Some(first) = snapshot.series.first() {
            self.metrics.drift_window_events.set(first.window_count as i64);
        }
        for series in &snapshot.series {
            self.metrics.drift_psi.with_label_values(&[&series.name]).set(series.psi.unwrap_or(f64::NAN));
            let key = AlertKey { kind: AlertKind::Drift, metric: "psi", subject: series.name.clone() };
            let cleared = series.psi.is_some_and(|psi| psi <= self.thresholds.psi);
            observations.push(Observation { key: key.clone(), breached: series.drifted, cleared });
            if let Some(psi) = series.psi {
                details.insert(
                    key,
                    Detail {
                        attribute: None,
                        group: None,
                        feature: Some(series.name.clone()),
                        severity: Severity::Warning,
                        value: psi,
                        interval: None,
                        threshold: self.thresholds.psi.max(series.critical_psi),
                        window_seconds: snapshot.window_seconds,
                        sample_size: series.window_count,
                        reference_sample_size: None,
                    },
                );
            }
        }
    }

    fn alert_event(&self, transition: &Transition, detail: &Detail, now_millis: i64) -> MonitoringAlert {
        let key = &transition.key;
        MonitoringAlert {
            alert_key: format!("{}/{}/{}", kind_label(key.kind), key.metric, key.subject),
            kind: key.kind,
            metric: key.metric.to_owned(),
            attribute: detail.attribute.clone(),
            group: detail.group.clone(),
            feature: detail.feature.clone(),
            state: transition.state,
            severity: detail.severity,
            value: detail.value,
            interval_lower: detail.interval.map(|e| e.lower),
            interval_upper: detail.interval.map(|e| e.upper),
            threshold: detail.threshold,
            window_seconds: detail.window_seconds,
            sample_size: detail.sample_size as i64,
            reference_sample_size: detail.reference_sample_size.map(|size| size as i64),
            model_version: self.model_version.clone(),
            state_since: transition.since_millis,
            emitted_at: now_millis,
        }
    }
}

fn set_estimate(gauge: &prometheus::GaugeVec, labels: &[&str; 2], estimate: Option<Estimate>) {
    let (value, lower, upper) = estimate.map_or((f64::NAN, f64::NAN, f64::NAN), |e| (e.value, e.lower, e.upper));
    gauge.with_label_values(&[labels[0], labels[1], "point"]).set(value);
    gauge.with_label_values(&[labels[0], labels[1], "lower"]).set(lower);
    gauge.with_label_values(&[labels[0], labels[1], "upper"]).set(upper);
}

fn kind_label(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Fairness => "fairness",
        AlertKind::Drift => "drift",
    }
}

fn state_label(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

/// Evaluates every `interval` until `shutdown`, publishing alert events (retried until acknowledged).
pub async fn run_evaluator(
    monitoring: std::sync::Arc<Monitoring>,
    publisher: std::sync::Arc<Publisher>,
    alerts_topic: String,
    alert_schema_id: u32,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let writer = GenericDatumWriter::builder(&MONITORING_ALERT).build().expect("bundled alert schema");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for alert in monitoring.evaluate(Utc::now().timestamp_millis()) {
            let payload = match writer.write_ser_to_vec(&alert) {
                Ok(body) => get_payload(alert_schema_id, body),
                Err(error) => {
                    warn!(%error, "cannot encode an alert event");
                    continue;
                }
            };
            info!(alert = %alert.alert_key, state = ?alert.state, value = alert.value, "alert state change");
            let mut attempt = 0u32;
            while let Err(error) = publisher.send(&alerts_topic, &alert.alert_key, &payload).await {
                warn!(%error, attempt, "publishing an alert failed; retrying");
                attempt += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25)))) => {}
                }
            }
        }
    }
}
