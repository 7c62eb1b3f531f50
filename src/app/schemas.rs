//! Writer schemas for a batch: each schema id is looked up once (cached for the process); an id
//! the registry does not know (404, 40403) fails its records; any other registry failure is
//! waited out, with `/ready` down meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::warn;

use super::decide::{BatchContext, WriterSchema};
use super::pipeline::Pipeline;
use super::retry::GaveUp;
use super::Abandoned;
use crate::codec::{split_frame, CodecError};
use crate::domain::InputRecord;
use crate::model::LoadedModel;
use crate::sources::Claim;

impl Pipeline {
    /// The context a batch is decided in: its model, cutoffs and writer schemas.
    pub(super) async fn batch_context(
        &self,
        model: &LoadedModel,
        records: &[InputRecord],
        claims: HashMap<i32, Claim>,
    ) -> Result<BatchContext, Abandoned> {
        let mut writer_schemas = HashMap::new();
        let mut unknown: HashMap<u32, CodecError> = HashMap::new();
        let ids: HashSet<u32> =
            records.iter().filter_map(|r| split_frame(r.value.as_deref()).ok().map(|(id, _)| id)).collect();
        for id in ids {
            let lookup = self
                .retry
                .run(
                    &self.shutdown,
                    || self.schemas.writer_schema(id),
                    |error, _| {
                        self.readiness.schema_lookup_failing.store(true, Ordering::Release);
                        self.readiness.schema_registry_ok.store(false, Ordering::Release);
                        self.metrics.sink_retries.with_label_values(&["schema_registry"]).inc();
                        self.metrics.errors.with_label_values(&["schema_registry"]).inc();
                        warn!(schema_id = id, %error, "schema registry unavailable; waiting");
                    },
                )
                .await;
            match lookup {
                Ok(schema) => {
                    writer_schemas.insert(id, WriterSchema::Registry(schema));
                }
                Err(GaveUp::Fatal(error)) => {
                    unknown.insert(id, error);
                }
                Err(GaveUp::Shutdown) => return Err(Abandoned),
            }
        }
        self.readiness.schema_lookup_failing.store(false, Ordering::Release);
        self.readiness.schema_registry_ok.store(true, Ordering::Release);
        let early_failures = records
            .iter()
            .filter_map(|record| {
                let (id, _) = split_frame(record.value.as_deref()).ok()?;
                unknown.get(&id).map(|error| ((record.partition, record.offset), error.clone()))
            })
            .collect();
        Ok(BatchContext {
            model: Arc::clone(&model.bundle),
            policy: Arc::clone(&model.policy),
            claims,
            writer_schemas,
            early_failures,
            event_times: self.config.event_times(),
            sealer: self.audit.shared_keys(),
        })
    }
}
