//! The input partitions this replica owns, each with an epoch that changes on every assignment,
//! and, once claimed, the offset below which its records already have their outcome (read from
//! the audit tables). A batch is decided only for partitions claimed, and its results are kept
//! only for partitions still owned in the same epoch: nothing is stored or announced for a
//! partition that was revoked meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

/// One owned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    /// Records below this offset were decided or dead-lettered before: do not score them again.
    pub audited_through: i64,
    /// Records below this offset had their outcome announced: do not announce them again.
    pub announced_through: i64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Claiming { epoch: u64 },
    Claimed(Claim),
}

/// Owned partitions and their claims.
#[derive(Default)]
pub struct Assignment {
    partitions: Mutex<(u64, HashMap<i32, State>)>,
    changed: Notify,
}

impl Assignment {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<i32, State>)> {
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `partitions` were assigned: each gets a new epoch and must be claimed before use.
    pub fn assigned(&self, partitions: &[i32]) -> HashMap<i32, u64> {
        let mut guard = self.lock();
        let (next_epoch, states) = &mut *guard;
        let mut epochs = HashMap::new();
        for partition in partitions {
            *next_epoch += 1;
            states.insert(*partition, State::Claiming { epoch: *next_epoch });
            epochs.insert(*partition, *next_epoch);
        }
        drop(guard);
        self.changed.notify_waiters();
        epochs
    }

    /// `partition`'s claim in `epoch` completed (ignored if the partition moved on since).
    pub fn claimed(&self, partition: i32, epoch: u64, audited_through: i64, announced_through: i64) {
        let mut guard = self.lock();
        if let Some(state) = guard.1.get_mut(&partition) {
            if matches!(state, State::Claiming { epoch: current } if *current == epoch) {
                *state = State::Claimed(Claim { epoch, audited_through, announced_through });
            }
        }
        drop(guard);
        self.changed.notify_waiters();
    }

    /// `partitions` were revoked.
    pub fn revoked(&self, partitions: &[i32]) {
        let mut guard = self.lock();
        for partition in partitions {
            guard.1.remove(partition);
        }
        drop(guard);
        self.changed.notify_waiters();
    }

    /// The claims of `partitions`, waiting while any of them is still being claimed; partitions
    /// not owned are left out (their records belong to another replica now).
    pub async fn claims(&self, partitions: impl IntoIterator<Item = i32> + Clone) -> HashMap<i32, Claim> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let guard = self.lock();
                let states: Vec<(i32, Option<State>)> = partitions
                    .clone()
                    .into_iter()
                    .map(|partition| (partition, guard.1.get(&partition).copied()))
                    .collect();
                if !states.iter().any(|(_, state)| matches!(state, Some(State::Claiming { .. }))) {
                    return states
                        .into_iter()
                        .filter_map(|(partition, state)| match state {
                            Some(State::Claimed(claim)) => Some((partition, claim)),
                            _ => None,
                        })
                        .collect();
                }
            }
            notified.await;
        }
    }

    /// Whether `partition` is still owned in `epoch`.
    pub fn owns(&self, partition: i32, epoch: u64) -> bool {
        matches!(self.lock().1.get(&partition), Some(State::Claimed(claim)) if claim.epoch == epoch)
    }

    /// The partitions of `epochs` still owned in their epoch, under one lock (a batch's
    /// records are then filtered without a lock per record).
    pub fn still_owned(&self, epochs: &HashMap<i32, u64>) -> Vec<i32> {
        let (_, states) = &*self.lock();
        epochs
            .iter()
            .filter(|(partition, epoch)| {
                matches!(states.get(partition), Some(State::Claimed(claim)) if claim.epoch == **epoch)
            })
            .map(|(partition, _)| *partition)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition is usable once claimed, only in its epoch; a revoked one is left out, and a
    /// re-assigned one has a new epoch (so results of the old one are not kept).
    #[tokio::test]
    async fn claims_follow_assignment_epochs() {
        let assignment = Assignment::default();
        let epochs = assignment.assigned(&[0, 1]);
        let waiting = {
            let claims = assignment.claims([0, 1]);
            tokio::pin!(claims);
            assert!(futures::poll!(claims.as_mut()).is_pending(), "0 and 1 are still being claimed");
            assignment.claimed(0, epochs[&0], 10, 4);
            assignment.claimed(1, epochs[&1], 0, 0);
            claims.await
        };
        assert_eq!(waiting[&0], Claim { epoch: epochs[&0], audited_through: 10, announced_through: 4 });
        assert!(assignment.owns(1, epochs[&1]));
        assignment.revoked(&[1]);
        assert!(!assignment.owns(1, epochs[&1]));
        assert_eq!(assignment.claims([0, 1]).await.len(), 1);
        let again = assignment.assigned(&[1]);
        assignment.claimed(1, epochs[&1], 99, 99);
        assert!(!assignment.owns(1, again[&1]), "a claim of the old epoch does not count");
        assignment.claimed(1, again[&1], 5, 5);
        assert!(assignment.owns(1, again[&1]) && !assignment.owns(1, epochs[&1]));
        assert_eq!(assignment.still_owned(&epochs), vec![0], "1 is owned in its new epoch only");
        let mut owned = assignment.still_owned(&HashMap::from([(0, epochs[&0]), (1, again[&1]), (2, 0)]));
        owned.sort_unstable();
        assert_eq!(owned, vec![0, 1], "2 was never assigned");
    }
}
