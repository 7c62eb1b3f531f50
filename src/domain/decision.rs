//! Decision policy: probability of default and cutoffs → approve / review / decline. Pure.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::DecisionOutcome;
use super::DomainError;

/// Namespace for deterministic decision ids (UUIDv5).
const DECISION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5d1f_0c3e_8a2b_4c47_9e61_2f0b_7a3c_d4e5);

/// Probability-of-default cutoffs: approve below `approve_below`, decline at or above
/// `decline_at_or_above`, review in between.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cutoffs {
    /// Approve when the probability of default is below this.
    pub approve_below: f64,
    /// Decline when the probability of default is at or above this.
    pub decline_at_or_above: f64,
}

impl Cutoffs {
    /// Checks `0 <= approve_below <= decline_at_or_above <= 1`.
    pub fn validate(self) -> Result<Self, DomainError> {
        let ordered = 0.0 <= self.approve_below
            && self.approve_below <= self.decline_at_or_above
            && self.decline_at_or_above <= 1.0;
        if ordered {
            Ok(self)
        } else {
            Err(DomainError::Cutoffs {
                approve_below: self.approve_below,
                decline_at_or_above: self.decline_at_or_above,
            })
        }
    }

    /// The outcome for a probability of default.
    pub fn decide(self, probability_of_default: f64) -> DecisionOutcome {
        if probability_of_default < self.approve_below {
            DecisionOutcome::Approve
        } else if probability_of_default >= self.decline_at_or_above {
            DecisionOutcome::Decline
        } else {
            DecisionOutcome::Review
        }
    }
}

/// Deterministic decision id: the same application scored by the same model always gets the same id.
/// A UUIDv5 of `application_id`, U+001F and `model_sha256`, hashed in place with the `sha1` crate
/// (which uses the CPU's SHA instructions where it has them) rather than `Uuid::new_v5`.
pub fn decision_id(application_id: &str, model_sha256: &str) -> Uuid {
    use sha1::{Digest, Sha1};
    let digest = Sha1::new()
        .chain_update(DECISION_ID_NAMESPACE.as_bytes())
        .chain_update(application_id.as_bytes())
        .chain_update([0x1f])
        .chain_update(model_sha256.as_bytes())
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boundaries: exactly at `approve_below` is review, exactly at `decline_at_or_above` is decline.
    #[test]
    fn cutoff_boundaries() {
        let cutoffs = Cutoffs { approve_below: 0.3, decline_at_or_above: 0.55 }.validate().unwrap();
        let cases = [
            (0.0, DecisionOutcome::Approve),
            (0.2999, DecisionOutcome::Approve),
            (0.3, DecisionOutcome::Review),
            (0.5499, DecisionOutcome::Review),
            (0.55, DecisionOutcome::Decline),
            (1.0, DecisionOutcome::Decline),
        ];
        for (probability, outcome) in cases {
            assert_eq!(cutoffs.decide(probability), outcome, "{probability}");
        }
    }

    /// Equal cutoffs leave no review band; reversed or out-of-range cutoffs are rejected.
    #[test]
    fn validation() {
        assert!(Cutoffs { approve_below: 0.4, decline_at_or_above: 0.4 }.validate().is_ok());
        assert!(Cutoffs { approve_below: 0.6, decline_at_or_above: 0.4 }.validate().is_err());
        assert!(Cutoffs { approve_below: -0.1, decline_at_or_above: 0.4 }.validate().is_err());
        assert!(Cutoffs { approve_below: 0.1, decline_at_or_above: 1.5 }.validate().is_err());
        assert!(Cutoffs { approve_below: f64::NAN, decline_at_or_above: 0.5 }.validate().is_err());
    }

    /// Ids depend on both the application and the model, and on nothing else.
    #[test]
    fn decision_ids_are_deterministic() {
        assert_eq!(decision_id("a", "m"), decision_id("a", "m"));
        assert_ne!(decision_id("a", "m"), decision_id("a", "n"));
        assert_ne!(decision_id("a", "m"), decision_id("b", "m"));
    }

    /// The ids are the UUIDv5 of `application_id`, U+001F and the model hash, as `Uuid::new_v5`
    /// makes them (ids published before are unchanged), for empty, multi-byte and long names.
    #[test]
    fn decision_ids_are_uuid_v5() {
        let (long, hex) = ("x".repeat(300), "f".repeat(64));
        for (application, model) in [("", ""), ("a", "m"), ("app-ü-1", "35bf70c4"), (long.as_str(), hex.as_str())] {
            let name = format!("{application}\u{1f}{model}");
            assert_eq!(decision_id(application, model), Uuid::new_v5(&DECISION_ID_NAMESPACE, name.as_bytes()));
        }
    }
}
