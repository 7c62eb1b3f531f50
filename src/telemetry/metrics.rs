//! Prometheus metrics of the worker, with fixed, low-cardinality labels.

use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// All metrics, registered in one registry served at `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every series name this worker can export (histograms with their suffixes).
    exported: Vec<String>,
    pub events_consumed: IntCounter,
    pub decisions: IntCounterVec,
    pub decisions_announced_again: IntCounter,
    pub dead_letters: IntCounterVec,
    pub event_to_decision_seconds: Histogram,
    pub event_to_audit_seconds: Histogram,
    pub consume_to_audit_seconds: Histogram,
    pub consume_to_decision_seconds: Histogram,
    pub stage_seconds: HistogramVec,
    pub audit_rows_written: IntCounter,
    pub audit_batch_rows: Histogram,
    pub sink_retries: IntCounterVec,
    pub assigned_partitions: IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub errors: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub model_info: IntGaugeVec,
    pub fairness_decisions: IntCounterVec,
    pub fairness_window_decisions: IntGaugeVec,
    pub fairness_approval_rate: GaugeVec,
    pub fairness_disparate_impact: GaugeVec,
    pub fairness_parity_difference: GaugeVec,
    pub drift_psi: GaugeVec,
    pub drift_window_events: IntGauge,
    pub alert_firing: IntGaugeVec,
    pub alert_events: IntCounterVec,
    pub monitor_evaluations: IntCounter,
    pub outcomes: IntCounterVec,
    pub equal_opportunity_difference: GaugeVec,
    pub model_auc: GaugeVec,
    pub label_coverage: prometheus::Gauge,
    pub outcomes_labelled: IntGauge,
    pub calibration_error: prometheus::Gauge,
    pub calibration_default_rate: GaugeVec,
    pub expected_auc: GaugeVec,
    pub expected_default_rate: prometheus::Gauge,
    pub declines_without_reasons: IntCounter,
    pub adverse_reasons: IntCounterVec,
    pub model_changes: IntCounterVec,
    pub shadow_model_info: IntGaugeVec,
    pub shadow_comparisons: IntCounterVec,
    pub shadow_score_difference: Histogram,
    pub shadow_agreement_ratio: prometheus::Gauge,
    pub shadow_approval_rate_difference: GaugeVec,
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("metric")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        // Fine around the 25 ms latency goal, so that a quantile read from the buckets is close.
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0, 30.0,
        ];
        let mut metrics = Self {
            events_consumed: IntCounter::new(
                "credit_worker_events_consumed_total",
                "Records consumed from the input topic.",
            )
            .expect("metric"),
            decisions: IntCounterVec::new(
                Opts::new("credit_worker_decisions_total", "Decisions made, by outcome."),
                &["outcome"],
            )
            .expect("metric"),
            decisions_announced_again: IntCounter::new(
                "credit_worker_decisions_announced_again_total",
                "Stored decisions announced again (a redelivered or resent application; not decided again).",
            )
            .expect("metric"),
            dead_letters: IntCounterVec::new(
                Opts::new("credit_worker_dead_letters_total", "Records sent to the dead-letter topic, by reason."),
                &["reason"],
            )
            .expect("metric"),
            event_to_decision_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "credit_worker_event_to_decision_seconds",
                    "Event time to decision audited and announced.",
                )
                .buckets(latency_buckets.clone()),
            )
            .expect("metric"),
            event_to_audit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "credit_worker_event_to_audit_seconds",
                    "Event time to the decision's audit commit (the durable point).",
                )
                .buckets(latency_buckets.clone()),
            )
            .expect("metric"),
            consume_to_audit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "credit_worker_consume_to_audit_seconds",
                    "Consumed to the decision's audit commit: the worker's own part of the durable latency.",
                )
                .buckets(latency_buckets.clone()),
            )
            .expect("metric"),
            consume_to_decision_seconds: Histogram::with_opts(
                HistogramOpts::new("credit_worker_consume_to_decision_seconds", "Consumed to decision audited and announced.")
                    .buckets(latency_buckets.clone()),
            )
            .expect("metric"),
            stage_seconds: HistogramVec::new(
                HistogramOpts::new("credit_worker_stage_seconds", "Time per batch in each stage.")
                    .buckets(latency_buckets),
                &["stage"],
            )
            .expect("metric"),
            audit_rows_written: IntCounter::new(
                "credit_worker_audit_rows_written_total",
                "Audit rows inserted (replays that hit an existing row are not counted).",
            )
            .expect("metric"),
            audit_batch_rows: Histogram::with_opts(
                HistogramOpts::new("credit_worker_audit_batch_rows", "Rows per audit transaction.")
                    .buckets(exponential_buckets(1.0, 2.0, 14).expect("valid buckets")),
            )
            .expect("metric"),
            sink_retries: IntCounterVec::new(
                Opts::new("credit_worker_sink_retries_total", "Batch retries after a sink failure, by sink."),
                &["sink"],
            )
            .expect("metric"),
            assigned_partitions: IntGauge::new(
                "credit_worker_assigned_partitions",
                "Input partitions assigned to this replica.",
            )
            .expect("metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new("credit_worker_consumer_lag", "Records behind the partition's high watermark (librdkafka statistics)."),
                &["partition"],
            )
            .expect("metric"),
            errors: IntCounterVec::new(
                Opts::new("credit_worker_errors_total", "Errors by kind (each retried or counted, never dropped silently)."),
                &["kind"],
            )
            .expect("metric"),
            build_info: IntGaugeVec::new(
                Opts::new("credit_worker_build_info", "Build of the worker (value 1)."),
                &["version"],
            )
            .expect("metric"),
            model_info: IntGaugeVec::new(
                Opts::new("credit_worker_model_info", "The model in use (value 1)."),
                &["version", "sha256"],
            )
            .expect("metric"),
            fairness_decisions: IntCounterVec::new(
                Opts::new(
                    "credit_worker_fairness_decisions_total",
                    "Decisions by protected attribute, group and outcome (sum across replicas for fleet-wide rates).",
                ),
                &["attribute", "group", "outcome"],
            )
            .expect("metric"),
            fairness_window_decisions: IntGaugeVec::new(
                Opts::new("credit_worker_fairness_window_decisions", "Decisions per group in this replica's window."),
                &["attribute", "group"],
            )
            .expect("metric"),
            fairness_approval_rate: gauge_vec(
                "credit_worker_fairness_approval_rate",
                "Approval rate per group in this replica's window (NaN: no data).",
                &["attribute", "group", "estimate"],
            ),
            fairness_disparate_impact: gauge_vec(
                "credit_worker_fairness_disparate_impact_ratio",
                "Group approval rate / reference group's, this replica's window, with 95% bounds (NaN: insufficient data).",
                &["attribute", "group", "estimate"],
            ),
            fairness_parity_difference: gauge_vec(
                "credit_worker_fairness_parity_difference",
                "Group approval rate - reference group's, this replica's window, with 95% bounds (NaN: insufficient data).",
                &["attribute", "group", "estimate"],
            ),
            drift_psi: gauge_vec(
                "credit_worker_drift_psi",
                "Population stability index against the training histogram, this replica's window (NaN: too few events).",
                &["feature"],
            ),
            drift_window_events: IntGauge::new("credit_worker_drift_window_events", "Scored events in this replica's drift window.")
                .expect("metric"),
            alert_firing: IntGaugeVec::new(
                Opts::new("credit_worker_alert_firing", "1 while a fairness or drift alert is firing on this replica."),
                &["kind", "metric", "subject"],
            )
            .expect("metric"),
            alert_events: IntCounterVec::new(
                Opts::new("credit_worker_alert_events_total", "Alert events published, by kind and state."),
                &["kind", "state"],
            )
            .expect("metric"),
            monitor_evaluations: IntCounter::new(
                "credit_worker_monitor_evaluations_total",
                "Evaluations of the monitors (gauges refreshed, alerts stepped) completed on this replica.",
            )
            .expect("metric"),
            outcomes: IntCounterVec::new(
                Opts::new("credit_worker_outcomes_total", "Outcome events by result (matched, unmatched, unopenable, invalid)."),
                &["result"],
            )
            .expect("metric"),
            equal_opportunity_difference: gauge_vec(
                "credit_worker_fairness_equal_opportunity_difference",
                "Approval rate among good payers, group - reference group, outcome window, with 95% bounds.",
                &["attribute", "group", "estimate"],
            ),
            model_auc: gauge_vec(
                "credit_worker_model_auc",
                "Rolling ROC AUC of the score on matched outcomes (attribute=all for everyone).",
                &["attribute", "group"],
            ),
            label_coverage: prometheus::Gauge::new(
                "credit_worker_outcomes_label_coverage",
                "Matched outcomes in the outcome window / decisions in the fairness window (label maturity).",
            )
            .expect("metric"),
            outcomes_labelled: IntGauge::new(
                "credit_worker_outcomes_labelled",
                "Labelled decisions (matched outcomes) in the outcome window: the evidence behind AUC and calibration.",
            )
            .expect("metric"),
            calibration_error: prometheus::Gauge::new(
                "credit_worker_calibration_error",
                "Expected calibration error over score deciles on matured labels: sum of |observed - expected default rate| weighted by labels.",
            )
            .expect("metric"),
            calibration_default_rate: gauge_vec(
                "credit_worker_calibration_default_rate",
                "Default rate per score decile on matured labels: expected (mean predicted) and observed.",
                &["decile", "kind"],
            ),
            expected_auc: gauge_vec(
                "credit_worker_expected_auc",
                "Label-free AUC estimate from the window's calibrated scores (before labels mature), with the 95% interval labels would realise.",
                &["estimate"],
            ),
            expected_default_rate: prometheus::Gauge::new(
                "credit_worker_expected_default_rate",
                "Label-free default-rate estimate: mean probability of default of the window's decisions.",
            )
            .expect("metric"),
            declines_without_reasons: IntCounter::new(
                "credit_worker_declines_without_reasons_total",
                "Declines published without an adverse-action reason (must stay 0: Regulation B).",
            )
            .expect("metric"),
            adverse_reasons: IntCounterVec::new(
                Opts::new("credit_worker_adverse_reasons_total", "Adverse-action reasons given, by catalogue code."),
                &["code"],
            )
            .expect("metric"),
            model_changes: IntCounterVec::new(
                Opts::new("credit_worker_model_changes_total", "Model lifecycle changes by action and result."),
                &["action", "result"],
            )
            .expect("metric"),
            shadow_model_info: IntGaugeVec::new(
                Opts::new("credit_worker_shadow_model_info", "The challenger scored in shadow (value 1)."),
                &["version", "sha256"],
            )
            .expect("metric"),
            shadow_comparisons: IntCounterVec::new(
                Opts::new(
                    "credit_worker_shadow_comparisons_total",
                    "Events scored by both models, by whether their decisions agree.",
                ),
                &["result"],
            )
            .expect("metric"),
            shadow_score_difference: Histogram::with_opts(
                HistogramOpts::new(
                    "credit_worker_shadow_score_difference",
                    "|challenger - champion| probability of default per event.",
                )
                .buckets(exponential_buckets(0.001, 2.0, 10).expect("valid buckets")),
            )
            .expect("metric"),
            shadow_agreement_ratio: prometheus::Gauge::new(
                "credit_worker_shadow_agreement_ratio",
                "Share of events where the challenger's decision equals the champion's, since the challenger was set.",
            )
            .expect("metric"),
            shadow_approval_rate_difference: gauge_vec(
                "credit_worker_shadow_approval_rate_difference",
                "Challenger approval rate - champion approval rate per group, since the challenger was set.",
                &["attribute", "group"],
            ),
            registry,
            exported: Vec::new(),
        };
        for collector in [
            Box::new(metrics.events_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.decisions.clone()),
            Box::new(metrics.decisions_announced_again.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.event_to_decision_seconds.clone()),
            Box::new(metrics.event_to_audit_seconds.clone()),
            Box::new(metrics.consume_to_audit_seconds.clone()),
            Box::new(metrics.consume_to_decision_seconds.clone()),
            Box::new(metrics.stage_seconds.clone()),
            Box::new(metrics.audit_rows_written.clone()),
            Box::new(metrics.audit_batch_rows.clone()),
            Box::new(metrics.sink_retries.clone()),
            Box::new(metrics.assigned_partitions.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.errors.clone()),
            Box::new(metrics.build_info.clone()),
            Box::new(metrics.model_info.clone()),
            Box::new(metrics.fairness_decisions.clone()),
            Box::new(metrics.fairness_window_decisions.clone()),
            Box::new(metrics.fairness_approval_rate.clone()),
            Box::new(metrics.fairness_disparate_impact.clone()),
            Box::new(metrics.fairness_parity_difference.clone()),
            Box::new(metrics.drift_psi.clone()),
            Box::new(metrics.drift_window_events.clone()),
            Box::new(metrics.alert_firing.clone()),
            Box::new(metrics.alert_events.clone()),
            Box::new(metrics.monitor_evaluations.clone()),
            Box::new(metrics.outcomes.clone()),
            Box::new(metrics.equal_opportunity_difference.clone()),
            Box::new(metrics.model_auc.clone()),
            Box::new(metrics.label_coverage.clone()),
            Box::new(metrics.outcomes_labelled.clone()),
            Box::new(metrics.calibration_error.clone()),
            Box::new(metrics.calibration_default_rate.clone()),
            Box::new(metrics.expected_auc.clone()),
            Box::new(metrics.expected_default_rate.clone()),
            Box::new(metrics.declines_without_reasons.clone()),
            Box::new(metrics.adverse_reasons.clone()),
            Box::new(metrics.model_changes.clone()),
            Box::new(metrics.shadow_model_info.clone()),
            Box::new(metrics.shadow_comparisons.clone()),
            Box::new(metrics.shadow_score_difference.clone()),
            Box::new(metrics.shadow_agreement_ratio.clone()),
            Box::new(metrics.shadow_approval_rate_difference.clone()),
        ] {
            for family in collector.collect() {
                let name = family.name().to_owned();
                if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
                    metrics.exported.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")));
                } else {
                    metrics.exported.push(name);
                }
            }
            metrics.registry.register(collector).expect("unique metric names");
        }
        metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics
    }

    /// Every series name the worker exports, for checking dashboards and rules against.
    pub fn exported_series_names(&self) -> &[String] {
        &self.exported
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }

    /// Protobuf exposition (length-delimited `MetricFamily` messages) of every metric.
    pub fn render_protobuf(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        let _ = prometheus::Encoder::encode(&prometheus::ProtobufEncoder::new(), &self.registry.gather(), &mut buffer);
        buffer
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
