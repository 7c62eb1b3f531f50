//! Alert state machines (pure): a metric must breach its threshold for a sustained period to
//! fire, and must be clear for the same period to resolve; between the breach and clear
//! conditions (hysteresis band) the state holds. Exactly one event per state change.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::{AlertKind, AlertState};

/// Identity of one alert: kind, metric and subject (`attribute/group` or feature name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub metric: &'static str,
    pub subject: String,
}

/// One evaluation of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub key: AlertKey,
    /// The alert condition holds (e.g. the interval lies wholly below the threshold).
    pub breached: bool,
    /// The metric is back on the good side (e.g. the point estimate is at or above the threshold).
    pub cleared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    Normal,
    Pending { since_millis: i64 },
    Firing { since_millis: i64 },
    Clearing { since_millis: i64, fired_millis: i64 },
}

/// A state change to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub key: AlertKey,
    pub state: AlertState,
    /// When the condition started (firing) or cleared (resolved).
    pub since_millis: i64,
}

/// All alert state machines of one replica.
#[derive(Debug)]
pub struct AlertTracker {
    sustain_millis: i64,
    phases: BTreeMap<AlertKey, Phase>,
}

/// A summary of one alert's state, for `/fairness`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertStatus {
    #[serde(flatten)]
    pub key: AlertKey,
    pub firing: bool,
    pub state: String,
}

impl AlertTracker {
    /// Conditions must hold for `sustain_millis` before a state change.
    pub fn new(sustain_millis: i64) -> Self {
        Self { sustain_millis: sustain_millis.max(0), phases: BTreeMap::new() }
    }

    /// Advances `observation`'s state machine to `now_millis`; returns a transition if any.
    pub fn step(&mut self, observation: &Observation, now_millis: i64) -> Option<Transition> {
        let phase = self.phases.entry(observation.key.clone()).or_insert(Phase::Normal);
        let sustained = |since: i64| now_millis - since >= self.sustain_millis;
        let (next, change) = match *phase {
            Phase::Normal if observation.breached => {
                if sustained(now_millis) {
                    (Phase::Firing { since_millis: now_millis }, Some((AlertState::Firing, now_millis)))
                } else {
                    (Phase::Pending { since_millis: now_millis }, None)
                }
            }
            Phase::Normal => (Phase::Normal, None),
            Phase::Pending { since_millis } if observation.breached => {
                if sustained(since_millis) {
                    (Phase::Firing { since_millis }, Some((AlertState::Firing, since_millis)))
                } else {
                    (Phase::Pending { since_millis }, None)
                }
            }
            Phase::Pending { .. } => (Phase::Normal, None),
            Phase::Firing { since_millis } if observation.cleared => {
                if sustained(now_millis) {
                    (Phase::Normal, Some((AlertState::Resolved, now_millis)))
                } else {
                    (Phase::Clearing { since_millis: now_millis, fired_millis: since_millis }, None)
                }
            }
            Phase::Firing { since_millis } => (Phase::Firing { since_millis }, None),
            Phase::Clearing { since_millis, fired_millis } if observation.cleared => {
                if sustained(since_millis) {
                    (Phase::Normal, Some((AlertState::Resolved, since_millis)))
                } else {
                    (Phase::Clearing { since_millis, fired_millis }, None)
                }
            }
            Phase::Clearing { fired_millis, .. } => (Phase::Firing { since_millis: fired_millis }, None),
        };
        *phase = next;
        change.map(|(state, since_millis)| Transition { key: observation.key.clone(), state, since_millis })
    }

    /// Every tracked alert and whether it is firing (firing or clearing).
    pub fn statuses(&self) -> Vec<AlertStatus> {
        self.phases
            .iter()
            .map(|(key, phase)| AlertStatus {
                key: key.clone(),
                firing: matches!(phase, Phase::Firing { .. } | Phase::Clearing { .. }),
                state: match phase {
                    Phase::Normal => "normal",
                    Phase::Pending { .. } => "pending",
                    Phase::Firing { .. } => "firing",
                    Phase::Clearing { .. } => "clearing",
                }
                .to_owned(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(breached: bool, cleared: bool) -> Observation {
        Observation {
            key: AlertKey { kind: AlertKind::Fairness, metric: "disparate_impact", subject: "sex/female".into() },
            breached,
            cleared,
        }
    }

    /// Fires only after a sustained breach, holds in the hysteresis band, resolves only after a
    /// sustained clear, one transition each; a brief breach or clear changes nothing.
    #[test]
    fn sustained_hysteresis_one_event_per_change() {
        let mut tracker = AlertTracker::new(10);
        let steps = [
            (0, observe(true, false), None),
            (5, observe(false, false), None),
            (6, observe(true, false), None),
            (15, observe(true, false), None),
            (16, observe(true, false), Some((AlertState::Firing, 6))),
            (17, observe(true, false), None),
            (20, observe(false, false), None),
            (21, observe(false, true), None),
            (25, observe(false, false), None),
            (26, observe(false, true), None),
            (35, observe(false, true), None),
            (36, observe(false, true), Some((AlertState::Resolved, 26))),
            (40, observe(false, true), None),
        ];
        for (now, observation, expected) in steps {
            let transition = tracker.step(&observation, now).map(|t| (t.state, t.since_millis));
            assert_eq!(transition, expected, "at {now}");
        }
        assert!(!tracker.statuses()[0].firing);
    }

    /// With no sustain period, a breach fires at once and a clear resolves at once.
    #[test]
    fn zero_sustain_is_immediate() {
        let mut tracker = AlertTracker::new(0);
        assert_eq!(tracker.step(&observe(true, false), 1).unwrap().state, AlertState::Firing);
        assert!(tracker.statuses()[0].firing);
        assert_eq!(tracker.step(&observe(false, true), 2).unwrap().state, AlertState::Resolved);
    }
}
