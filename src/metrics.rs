//! Prometheus metrics of the worker, with fixed, low-cardinality labels.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// All metrics, registered in one registry served at `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounter,
    pub decisions: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub event_to_decision_seconds: Histogram,
    pub consume_to_decision_seconds: Histogram,
    pub stage_seconds: HistogramVec,
    pub audit_rows_written: IntCounter,
    pub audit_batch_rows: Histogram,
    pub sink_retries: IntCounterVec,
    pub assigned_partitions: IntGauge,
    pub model_info: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let metrics = Self {
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
            dead_letters: IntCounterVec::new(
                Opts::new("credit_worker_dead_letters_total", "Records sent to the dead-letter topic, by reason."),
                &["reason"],
            )
            .expect("metric"),
            event_to_decision_seconds: Histogram::with_opts(
                HistogramOpts::new("credit_worker_event_to_decision_seconds", "Event time to decision durable.")
                    .buckets(latency_buckets.clone()),
            )
            .expect("metric"),
            consume_to_decision_seconds: Histogram::with_opts(
                HistogramOpts::new("credit_worker_consume_to_decision_seconds", "Consumed to decision durable.")
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
            model_info: IntGaugeVec::new(
                Opts::new("credit_worker_model_info", "The model in use (value 1)."),
                &["version", "sha256"],
            )
            .expect("metric"),
            registry,
        };
        for collector in [
            Box::new(metrics.events_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.decisions.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.event_to_decision_seconds.clone()),
            Box::new(metrics.consume_to_decision_seconds.clone()),
            Box::new(metrics.stage_seconds.clone()),
            Box::new(metrics.audit_rows_written.clone()),
            Box::new(metrics.audit_batch_rows.clone()),
            Box::new(metrics.sink_retries.clone()),
            Box::new(metrics.assigned_partitions.clone()),
            Box::new(metrics.model_info.clone()),
        ] {
            metrics.registry.register(collector).expect("unique metric names");
        }
        metrics
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
