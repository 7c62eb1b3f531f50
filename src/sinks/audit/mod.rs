//! Audit rows to PostgreSQL. One transaction per batch holds everything the batch changes: the
//! new rows (COPY BINARY into the month's partition of `decisions`), their claim on their
//! applications (`decided_applications`: an application is decided once), each source
//! partition's chain head and audited-through offset, and the monitors' counts of the new
//! decisions. Applications already decided come back as their stored decisions, to be announced
//! again unchanged. Also: the delayed outcomes (`outcomes`), stored rows read back (`stored`),
//! policies (`policies`), the binary COPY format (`copy`) and the statement closing a batch's
//! transaction: claims, the monitors' counts and the source heads in one round trip (`close`).

mod close;
mod copy;
mod outcomes;
mod partitions;
mod policies;
mod stored;
mod write;

pub use policies::Policies;
pub use stored::{read_decision, DECISION_COLUMNS};
pub use write::{BatchWrite, Progress};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::SinkError;
use crate::codec::ProtectedKeys;

/// The audit tables behind a connection pool.
#[derive(Clone)]
pub struct AuditStore {
    pool: PgPool,
    policies: Arc<Policies>,
    partitions: Arc<partitions::MonthlyPartitions>,
    /// Seal protected attributes for storage and open them (`None` in tools that only read
    /// what needs no key: chains verify over the sealed bytes).
    keys: Option<Arc<ProtectedKeys>>,
}

impl AuditStore {
    /// A lazily connecting pool: the worker starts (and reports not-ready) while the database is
    /// down. Once opened (see [`AuditStore::warm_up`]), `kept` connections stay open while idle.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        kept: u32,
        keys: Arc<ProtectedKeys>,
    ) -> Result<Self, SinkError> {
        let options = PgConnectOptions::from_str(url).map_err(SinkError::Url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(kept.min(max_connections))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Self { pool, policies: Arc::default(), partitions: Arc::default(), keys: Some(keys) })
    }

    /// Opens `connections` connections at once, before the first batch: connecting costs tens of
    /// milliseconds of CPU (TLS set-up reads the CA bundle), which the first batches would wait for.
    pub async fn warm_up(&self, connections: u32) -> Result<(), SinkError> {
        let opened = futures::future::try_join_all((0..connections).map(|_| self.pool.acquire())).await?;
        drop(opened);
        Ok(())
    }

    /// A store on an existing pool (tools), without the protected attributes' keys.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool, policies: Arc::default(), partitions: Arc::default(), keys: None }
    }

    /// The keys of the protected attributes.
    pub fn keys(&self) -> Result<&ProtectedKeys, SinkError> {
        self.keys.as_deref().ok_or(SinkError::NoProtectedKeys)
    }

    /// Applies the bundled migrations (`migrations/`).
    pub async fn migrate(&self) -> Result<(), SinkError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The decision policies known to this store.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The keys, to seal rows before they reach the store (`None` in tools).
    pub fn shared_keys(&self) -> Option<Arc<ProtectedKeys>> {
        self.keys.clone()
    }

    /// The pool, for queries outside the hot path.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Each of `partitions`' (audited-through, announced-through) offsets on `topic` (0 for a
    /// partition never seen): its records below the first have their outcome already, and below
    /// the second their outcome was announced.
    pub async fn progress(&self, topic: &str, partitions: &[i32]) -> Result<Vec<(i32, i64, i64)>, SinkError> {
        let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
            "SELECT p, coalesce(s.audited_through, 0), coalesce(s.announced_through, 0) FROM unnest($2::int[]) AS p \
             LEFT JOIN source_partitions s ON s.topic = $1 AND s.partition = p ORDER BY p",
        )
        .bind(topic)
        .bind(partitions)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Records that `announced` (per (topic, partition), the next offset) were announced (for
    /// the last batch before shutdown; otherwise this rides with the next batch's transaction).
    pub async fn mark_announced(&self, announced: &[(Arc<str>, i32, i64)]) -> Result<(), SinkError> {
        let topics: Vec<&str> = announced.iter().map(|(topic, _, _)| &**topic).collect();
        let partitions: Vec<i32> = announced.iter().map(|(_, partition, _)| *partition).collect();
        let offsets: Vec<i64> = announced.iter().map(|(_, _, offset)| *offset).collect();
        sqlx::query(
            "UPDATE source_partitions AS s SET announced_through = GREATEST(s.announced_through, v.o) \
             FROM unnest($1::text[], $2::int[], $3::int8[]) AS v(t, p, o) WHERE s.topic = v.t AND s.partition = v.p",
        )
        .bind(&topics)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored decisions of `application_ids` that are decided, by application id.
    pub async fn stored_decisions(
        &self,
        application_ids: &[&str],
    ) -> Result<std::collections::HashMap<bytestring::ByteString, crate::domain::AuditRow>, SinkError> {
        let mut connection = self.pool.acquire().await?;
        stored::stored_decisions(&mut connection, &self.policies, application_ids).await
    }
}
