//! The event-time policy: an application's event time must lie within a skew of the time it is
//! processed, so that one hostile timestamp cannot move the fairness windows, the audit table
//! or the published decision. Beyond it the record is dead-lettered (`event_time_out_of_range`).

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::DomainError;

/// How far an event time may lie ahead of or behind the processing time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventTimePolicy {
    /// Latest accepted event time, after the processing time (clock skew between systems).
    pub max_future: Duration,
    /// Earliest accepted event time, before the processing time (late or replayed data).
    pub max_past: Duration,
}

impl Default for EventTimePolicy {
    /// Five minutes ahead, seven days behind.
    fn default() -> Self {
        Self { max_future: Duration::minutes(5), max_past: Duration::days(7) }
    }
}

impl EventTimePolicy {
    /// The event time `event_time_ms` (ms since the epoch) as a timestamp, if it lies within
    /// the skew of `processed_at`.
    pub fn check(&self, event_time_ms: i64, processed_at: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
        let refused = || DomainError::EventTimeOutOfRange {
            max_future_seconds: self.max_future.num_seconds(),
            max_past_seconds: self.max_past.num_seconds(),
        };
        let event_time = Utc.timestamp_millis_opt(event_time_ms).single().ok_or_else(refused)?;
        if event_time > processed_at + self.max_future || event_time < processed_at - self.max_past {
            return Err(refused());
        }
        Ok(event_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds are inclusive; year 2100, i64::MAX, i64::MIN and 7500 BC are refused.
    #[test]
    fn accepts_the_skew_and_refuses_beyond() {
        let policy = EventTimePolicy::default();
        let now = Utc.timestamp_millis_opt(1_800_000_000_000).unwrap();
        let ms = now.timestamp_millis();
        for accepted in [ms, ms + 300_000, ms - 7 * 86_400_000] {
            assert_eq!(policy.check(accepted, now).map(|t| t.timestamp_millis()), Ok(accepted));
        }
        for refused in
            [ms + 300_001, ms - 7 * 86_400_000 - 1, 4_102_444_800_000, i64::MAX, i64::MIN, -298_800_000_000_000]
        {
            let error = policy.check(refused, now).unwrap_err();
            assert_eq!(error.kind(), "event_time_out_of_range", "{refused}");
        }
    }
}
