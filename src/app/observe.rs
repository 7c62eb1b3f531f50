//! After a batch is durable: its new decisions counted in the metrics and the monitors (each
//! decision once: a stored decision announced again is not counted again), its dead letters by
//! reason. Counters and monitors are updated once per batch from pre-aggregated counts; the
//! monitors take the very counts the batch's audit transaction persisted.

use chrono::{DateTime, Utc};

use super::pipeline::Pipeline;
use crate::domain::{outcome_code, outcome_of, AuditRow, BucketCounts, DecisionOutcome, Outcome};

impl Pipeline {
    /// Event time and consumption → audit commit (the durable point) of the rows just written,
    /// gathered locally and added to the shared histograms once per batch.
    pub(super) fn observe_audited<'a>(&self, rows: impl Iterator<Item = &'a AuditRow>) {
        let now = Utc::now();
        let (event, consumed) =
            (self.metrics.event_to_audit_seconds.local(), self.metrics.consume_to_audit_seconds.local());
        for row in rows {
            event.observe(seconds_between(row.event_time, now));
            consumed.observe(seconds_between(row.consumed_at, now));
        }
    }

    /// Counts the batch's outcomes; `new_rows` are the positions of its new decisions, `counts`
    /// their monitor counts.
    pub(super) fn record_outcomes(&self, outcomes: &[Outcome], new_rows: &[usize], counts: &BucketCounts) {
        let now = Utc::now();
        let mut by_outcome = [0_u64; 3];
        let mut reasons: Vec<(&str, u64)> = Vec::new();
        for position in new_rows {
            let Some(Outcome::Decided(decided)) = outcomes.get(*position) else { continue };
            let row = &decided.row;
            by_outcome[outcome_code(row.outcome) as usize] += 1;
            if row.outcome == DecisionOutcome::Decline && row.reasons.is_empty() {
                self.metrics.declines_without_reasons.inc();
                tracing::error!(
                    partition = row.source_partition,
                    offset = row.source_offset,
                    "decline without an adverse-action reason"
                );
            }
            for entry in row.reasons.iter().filter_map(|reason| row.policy.reason(reason.entry)) {
                match reasons.iter_mut().find(|(code, _)| *code == entry.code) {
                    Some((_, count)) => *count += 1,
                    None => reasons.push((&entry.code, 1)),
                }
            }
            self.metrics.event_to_decision_seconds.observe(seconds_between(row.event_time, now));
            self.metrics.consume_to_decision_seconds.observe(seconds_between(row.consumed_at, now));
        }
        for (code, count) in by_outcome.into_iter().enumerate().filter(|(_, count)| *count > 0) {
            if let Some(outcome) = outcome_of(code as i16) {
                self.metrics.decisions.with_label_values(&[outcome.as_str()]).inc_by(count);
            }
        }
        for (code, count) in reasons {
            self.metrics.adverse_reasons.with_label_values(&[code]).inc_by(count);
        }
        self.monitoring.record_counts(counts);
        for outcome in outcomes {
            match outcome {
                Outcome::DeadLetter(reason) => self.metrics.dead_letters.with_label_values(&[reason.kind]).inc(),
                Outcome::Stored(_) => self.metrics.decisions_announced_again.inc(),
                Outcome::Decided(_) | Outcome::Redelivered { .. } | Outcome::Announced => {}
            }
        }
    }
}

/// Seconds from `earlier` to `now`, never negative (clocks of other hosts may run ahead).
fn seconds_between(earlier: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    ((now - earlier).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0)
}
