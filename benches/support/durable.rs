//! Event → durable decision latency, from the worker's histograms: `credit_worker_event_to_audit_seconds`
//! (observed at the audit commit, the durable point) and `credit_worker_event_to_decision_seconds`
//! (once the batch is announced too): the difference of two scrapes, read as Prometheus'
//! `histogram_quantile` reads it (linear within a bucket).

use std::time::{Duration, Instant};

use credit_devtools::scrape::Exposition;
use serde::Serialize;

use crate::common::WorkerProcess;

/// Event → audit commit.
pub const AUDITED: &str = "credit_worker_event_to_audit_seconds";
/// Event → audited and announced.
pub const ANNOUNCED: &str = "credit_worker_event_to_decision_seconds";
/// Consumed → audit commit: the worker's own part of [`AUDITED`].
pub const WORKER: &str = "credit_worker_consume_to_audit_seconds";

/// A scrape once both histograms hold `events` observations (a batch is observed after it is
/// announced, a little after its audit rows are counted); panics, with the worker's log, if
/// that takes over 60 s (a latency read from a partial histogram would be wrong).
pub async fn observed(worker: &WorkerProcess, events: f64) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = worker.metrics().await;
        let count = metrics.value(&format!("{ANNOUNCED}_count"), &[]).unwrap_or(0.0);
        if count >= events {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {events} events reached a durable decision in 60 s; log: {}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cumulative bucket counts by upper bound, in seconds.
pub struct Buckets(Vec<(f64, f64)>);

impl Buckets {
    /// The buckets of `histogram` in a scrape.
    pub fn of(metrics: &Exposition, histogram: &str) -> Self {
        let mut buckets: Vec<(f64, f64)> = metrics
            .samples(&format!("{histogram}_bucket"), &[])
            .filter_map(|sample| Some((sample.label("le")?.parse::<f64>().ok()?, sample.value)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self(buckets)
    }

    /// What was observed between `earlier` and this scrape.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let before = |bound: f64| earlier.0.iter().find(|(le, _)| *le == bound).map_or(0.0, |(_, count)| *count);
        Buckets(self.0.iter().map(|(le, count)| (*le, count - before(*le))).collect())
    }

    fn total(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, count)| *count)
    }

    /// The `q` quantile in milliseconds (NaN without observations).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let rank = q * self.total();
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.0 {
            if count >= rank && count > 0.0 {
                if le.is_infinite() {
                    return lower.0 * 1e3;
                }
                let share = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 1.0 };
                return (lower.0 + (le - lower.0) * share) * 1e3;
            }
            lower = (le, count);
        }
        f64::NAN
    }

    /// The share of observations at or below `bound_seconds` (a bucket bound).
    pub fn share_within(&self, bound_seconds: f64) -> f64 {
        let within = self.0.iter().find(|(le, _)| (*le - bound_seconds).abs() < 1e-12).map_or(f64::NAN, |(_, c)| *c);
        within / self.total()
    }

    /// The figures the bench reports.
    pub fn report(&self) -> DurableLatency {
        DurableLatency {
            events: self.total(),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            share_within_25_ms: self.share_within(0.025),
        }
    }
}

/// Event time → a durable point.
#[derive(Debug, Serialize)]
pub struct DurableLatency {
    pub events: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Exact (25 ms is a bucket bound).
    pub share_within_25_ms: f64,
}
