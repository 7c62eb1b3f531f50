//! The evaluator: snapshots of the monitors → gauges, alert state machine steps, and one
//! `MonitoringAlert` event per state change. No I/O: the caller publishes the events.

use std::collections::HashMap;

use super::alerts::{AlertKey, Observation, Transition};
use super::drift::DriftSnapshot;
use super::fairness::{ComparisonStatus, FairnessSnapshot};
use super::outcomes::OutcomeSnapshot;
use super::stats::Estimate;
use super::Monitoring;
use crate::domain::{AlertKind, AlertState, MonitoringAlert, Severity};

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

impl Monitoring {
    /// Refreshes the gauges, steps every alert, returns the alert events to publish.
    pub fn evaluate(&self, now_millis: i64) -> Vec<MonitoringAlert> {
        let fairness = self.fairness.snapshot();
        let drift = self.drift.snapshot();
        self.export_outcomes(&self.outcomes.snapshot(), &fairness);
        let expected = self.expected();
        self.metrics.expected_default_rate.set(expected.expected_default_rate.unwrap_or(f64::NAN));
        let auc = expected.expected_auc;
        for (label, value) in
            [("point", auc.map(|e| e.value)), ("lower", auc.map(|e| e.lower)), ("upper", auc.map(|e| e.upper))]
        {
            self.metrics.expected_auc.with_label_values(&[label]).set(value.unwrap_or(f64::NAN));
        }
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

    /// Counts an evaluation whose alert events are all published (tests and dashboards wait
    /// on it: gauges and alerts then reflect every decision counted before it started).
    pub fn evaluation_published(&self) {
        self.metrics.monitor_evaluations.inc();
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
        metrics.outcomes_labelled.set(outcomes.labelled as i64);
        let calibration = &outcomes.calibration;
        metrics.calibration_error.set(calibration.expected_calibration_error.unwrap_or(f64::NAN));
        for decile in &calibration.deciles {
            let label = decile.decile.to_string();
            for (kind, rate) in [("expected", decile.expected_default_rate), ("observed", decile.observed_default_rate)]
            {
                metrics.calibration_default_rate.with_label_values(&[&label, kind]).set(rate.unwrap_or(f64::NAN));
            }
        }
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
            model_version: self.model_version(),
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
