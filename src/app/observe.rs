//! After a batch is durable: its new decisions counted in the metrics and the monitors (each
//! decision once: a stored decision announced again is not counted again), its dead letters by
//! reason.

use chrono::Utc;

use super::pipeline::Pipeline;
use crate::domain::{DecisionOutcome, Outcome};

impl Pipeline {
    /// Counts the batch's outcomes; `new_rows` are the positions of its new decisions.
    pub(super) fn record_outcomes(&self, outcomes: &[Outcome], new_rows: &[usize]) {
        let now = Utc::now();
        for position in new_rows {
            let Some(Outcome::Decided(decided)) = outcomes.get(*position) else { continue };
            let row = &decided.row;
            self.metrics.decisions.with_label_values(&[row.outcome.as_str()]).inc();
            if row.outcome == DecisionOutcome::Decline && row.reasons.is_empty() {
                self.metrics.declines_without_reasons.inc();
                tracing::error!(
                    partition = row.source_partition,
                    offset = row.source_offset,
                    "decline without an adverse-action reason"
                );
            }
            for reason in &row.reasons {
                if let Some(entry) = row.policy.reason(reason.entry) {
                    self.metrics.adverse_reasons.with_label_values(&[&entry.code]).inc();
                }
            }
            self.monitoring.record_row(row);
            let since_event = (now - row.event_time).num_microseconds().unwrap_or(0) as f64 / 1e6;
            let since_consume = (now - row.consumed_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.event_to_decision_seconds.observe(since_event.max(0.0));
            self.metrics.consume_to_decision_seconds.observe(since_consume.max(0.0));
        }
        for outcome in outcomes {
            match outcome {
                Outcome::DeadLetter(reason) => self.metrics.dead_letters.with_label_values(&[reason.kind]).inc(),
                Outcome::Stored(_) => self.metrics.decisions_announced_again.inc(),
                Outcome::Decided(_) | Outcome::Redelivered { .. } | Outcome::Announced => {}
            }
        }
    }
}
