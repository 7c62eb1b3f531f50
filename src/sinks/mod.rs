//! Where durable results go: decisions and dead letters to Kafka in transactions (`kafka`), alert
//! events to Kafka (`publisher`), audit rows and outcomes to PostgreSQL (`audit`).

mod audit;
mod kafka;
mod publisher;

use crate::error::{Retriable, Retry};

pub use audit::{read_decision, AuditStore, BatchWrite, Progress, DECISION_COLUMNS};
pub use kafka::{DecisionProducer, Publication};
pub use publisher::Publisher;

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid database URL: {0}")]
    Url(sqlx::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("another writer added rows to chain {0} concurrently; the batch is retried")]
    ConcurrentWriter(String),
    #[error("stored audit row {decision_id} is unreadable: {reason}")]
    Unreadable { decision_id: String, reason: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the consumer has not joined its group yet: no group metadata for the transaction")]
    NoGroupMetadata,
    #[error("a blocking Kafka call was interrupted")]
    Interrupted,
    /// A commit that failed without saying it was not applied: the group's committed offsets tell.
    #[error("the outcome of a Kafka transaction's commit is unknown: {0}")]
    InDoubt(String),
    #[error("this store holds no keys for the protected attributes")]
    NoProtectedKeys,
    #[error("{0}")]
    Sealed(#[from] crate::codec::SealError),
    #[error("the transactional producer was fenced: another instance with this transactional id took over ({0})")]
    Fenced(String),
    /// PostgreSQL refused one row of the batch (a value out of range, a constraint): the others
    /// are written without it, and its record is dead-lettered.
    #[error("PostgreSQL refused audit row {position} of the batch: {message} (SQLSTATE {code})")]
    RowRejected { position: usize, code: String, message: String },
}

impl SinkError {
    /// The SQLSTATE of a database error.
    pub fn sqlstate(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Self::Database(sqlx::Error::Database(error)) => error.code(),
            _ => None,
        }
    }
}

impl Retriable for SinkError {
    /// An unreachable database or broker is waited out (and reported not ready); a lost race
    /// with another writer is retried with the database still counted healthy.
    fn retry(&self) -> Retry {
        match self {
            Self::Database(_) if matches!(self.sqlstate().as_deref(), Some("23505" | "40001" | "40P01")) => {
                Retry::Conflict
            }
            // A certificate that fails verification (or TLS that cannot be set up) is a
            // configuration error: retrying would hide it behind "not ready".
            Self::Database(sqlx::Error::Tls(_))
            | Self::Migrate(sqlx::migrate::MigrateError::Execute(sqlx::Error::Tls(_))) => Retry::Never,
            Self::Database(_) | Self::Kafka(_) | Self::NoGroupMetadata | Self::Interrupted | Self::InDoubt(_) => {
                Retry::Unavailable
            }
            Self::Migrate(sqlx::migrate::MigrateError::Execute(_)) => Retry::Unavailable,
            Self::ConcurrentWriter(_) => Retry::Conflict,
            Self::Url(_)
            | Self::Migrate(_)
            | Self::Unreadable { .. }
            | Self::Fenced(_)
            | Self::RowRejected { .. }
            | Self::NoProtectedKeys
            | Self::Sealed(_) => Retry::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain-head conflict is retried without marking the database down; a lost connection
    /// marks it down; a bad URL or a certificate that fails verification is never retried.
    #[test]
    fn errors_say_whether_and_how_to_retry() {
        assert_eq!(SinkError::ConcurrentWriter("t/0".into()).retry(), Retry::Conflict);
        assert_eq!(SinkError::Database(sqlx::Error::PoolTimedOut).retry(), Retry::Unavailable);
        assert_eq!(SinkError::Url(sqlx::Error::PoolClosed).retry(), Retry::Never);
        let tls = || sqlx::Error::Tls("certificate verify failed".into());
        assert_eq!(SinkError::Database(tls()).retry(), Retry::Never);
        assert_eq!(SinkError::Migrate(sqlx::migrate::MigrateError::Execute(tls())).retry(), Retry::Never);
    }
}
