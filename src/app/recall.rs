//! Redelivered records: a record from below its partition's audited offset already has its
//! outcome. It is not scored again: below the announced offset nothing is done; above it the
//! stored decision is announced again, unchanged. A record without a stored decision (the topic
//! was recreated, or the record was dead-lettered under other rules) is decided afresh.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{error, warn};

use super::decide::BatchContext;
use super::pipeline::Pipeline;
use super::retry::GaveUp;
use super::Abandoned;
use crate::domain::{AuditRow, Decided, InputRecord, Outcome};
use crate::model::LoadedModel;
use crate::sinks::SinkError;

impl Pipeline {
    /// Replaces every `Redelivered` outcome with its stored decision, or decides it afresh.
    pub(super) async fn recall_decisions(
        &self,
        model: &LoadedModel,
        context: &Arc<BatchContext>,
        records: &[InputRecord],
        outcomes: &mut [Outcome],
    ) -> Result<(), Abandoned> {
        let ids: Vec<&str> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Redelivered { application_id, .. } => Some(application_id.as_str()),
                _ => None,
            })
            .collect();
        let lookup = || self.audit.stored_decisions(&ids);
        let on_retry = |error: &SinkError, _| warn!(%error, "reading stored decisions failed; retrying");
        let stored = match self.retry.run(&self.shutdown, lookup, on_retry).await {
            Ok(stored) => stored,
            Err(GaveUp::Shutdown) => return Err(Abandoned),
            Err(GaveUp::Fatal(failure)) => {
                error!(%failure, "stored decisions cannot be read; stopping");
                self.shutdown.cancel();
                return Err(Abandoned);
            }
        };
        let mut undecided = Vec::new();
        for (position, outcome) in outcomes.iter_mut().enumerate() {
            let Outcome::Redelivered { application_id, announced } = outcome else { continue };
            match stored.get(application_id.as_str()) {
                Some(_) if *announced => *outcome = Outcome::Announced,
                Some(row) => *outcome = self.announce_again(row),
                None => undecided.push(position),
            }
        }
        if undecided.is_empty() {
            return Ok(());
        }
        let fresh = Arc::new(BatchContext { claims: HashMap::new(), ..(**context).clone() });
        let again: Vec<InputRecord> = undecided.iter().map(|position| records[*position].clone()).collect();
        let (_, decided, _) = self.score(model, fresh, again).await?;
        for (position, outcome) in undecided.into_iter().zip(decided) {
            outcomes[position] = outcome;
        }
        Ok(())
    }

    /// The stored decision `row`, to announce again.
    pub(super) fn announce_again(&self, row: &AuditRow) -> Outcome {
        Outcome::Stored(Box::new(Decided { row: row.clone() }))
    }
}
