//! Where records come from: a Kafka consumer of one topic (`kafka`) that hands out batches,
//! stores offsets only when told, and reports partition assignment; and which offsets a
//! durable batch allows storing (`offsets`, pure); a batch's records share one buffer (`buffer`,
//! pure).

mod assignment;
mod buffer;
mod kafka;
mod offsets;

use rdkafka::error::KafkaError;

use crate::error::{Retriable, Retry};

pub use assignment::{Assignment, Claim};
pub use buffer::RecordBuffer;
pub use kafka::{partition_list, PartitionEvent, Source, SourceOptions};
pub use offsets::next_offsets;

/// Why the consumer could not be created or commit.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
}

impl Retriable for SourceError {
    /// A configuration librdkafka refuses stays refused; anything else is the broker's to fix.
    fn retry(&self) -> Retry {
        match self {
            Self::Kafka(KafkaError::ClientCreation(_)) | Self::Kafka(KafkaError::ClientConfig(..)) => Retry::Never,
            Self::Kafka(_) => Retry::Unavailable,
        }
    }
}
