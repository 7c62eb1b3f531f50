//! One batch's audit transaction.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytestring::ByteString;
use sqlx::postgres::PgDatabaseError;
use sqlx::{PgConnection, Row};

use super::close::{self, Head, NewClaims};
use super::copy::{CopyBuffer, CopyStream};
use super::{stored, AuditStore};
use crate::domain::{application_key, outcome_code, AuditRow, BucketCounts, DecisionPolicy, GENESIS};
use crate::sinks::SinkError;

/// What a batch's audit transaction did.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// Positions (in the rows given) of the rows inserted now: new decisions.
    pub inserted: Vec<usize>,
    /// The stored decision of every application asked about or found already decided (by an
    /// earlier batch, another replica, or an earlier row of this batch), by application id.
    pub stored: HashMap<ByteString, AuditRow>,
    /// The monitors' counts of the inserted rows, as persisted.
    pub counts: BucketCounts,
}

/// How far a batch takes its source partitions: (topic, partition, next offset) lists.
#[derive(Debug, Default)]
pub struct Progress<'a> {
    /// The batch's partitions: every record below the offset has its outcome.
    pub audited: &'a [(Arc<str>, i32, i64)],
    /// Partitions whose outcomes below the offset were announced since the last write.
    pub announced: &'a [(Arc<str>, i32, i64)],
}

impl AuditStore {
    /// Writes a batch in one transaction. `rows` are new decisions in consumption order;
    /// `progress.audited` gives, per (topic, partition) the batch covers, the next offset to
    /// consume (every record below it then has its outcome), and `progress.announced` the same
    /// for the batches whose announcement committed since the last write; `count` gives the
    /// monitors' counts of the rows that turn out new.
    pub async fn write_batch(
        &self,
        rows: &[&AuditRow],
        progress: &Progress<'_>,
        count: &(dyn Fn(&[&AuditRow]) -> BucketCounts + Sync),
    ) -> Result<BatchWrite, SinkError> {
        self.partitions.ensure(&self.pool, rows.iter().map(|row| row.processed_at)).await?;
        match self.write_transaction(rows, progress, count, Claims::Optimistic).await {
            Err(error) if lost_claim(&error) => self.write_transaction(rows, progress, count, Claims::LookedUp).await,
            result => result,
        }
    }

    async fn write_transaction(
        &self,
        rows: &[&AuditRow],
        progress: &Progress<'_>,
        count: &(dyn Fn(&[&AuditRow]) -> BucketCounts + Sync),
        claims: Claims,
    ) -> Result<BatchWrite, SinkError> {
        let sealer = self.keys()?;
        let mut transaction = self.pool.begin().await?;
        let connection: &mut PgConnection = &mut transaction;
        let mut sources = lock_sources(connection, progress, rows).await?;
        let keys: Vec<[u8; 16]> = rows.iter().map(|row| application_key(&row.application_id)).collect();
        let found: HashSet<Vec<u8>> = match claims {
            Claims::Optimistic => HashSet::new(),
            Claims::LookedUp => {
                let key_bytes: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
                sqlx::query_scalar("SELECT application_key FROM decided_applications WHERE application_key = ANY($1)")
                    .bind(&key_bytes)
                    .fetch_all(&mut *connection)
                    .await?
                    .into_iter()
                    .collect()
            }
        };
        let mut write = BatchWrite::default();
        let mut fresh_keys: HashMap<[u8; 16], usize> = HashMap::new();
        let mut already: Vec<&str> = Vec::new();
        for (position, (row, key)) in rows.iter().zip(&keys).enumerate() {
            if found.contains(&key[..]) {
                already.push(&row.application_id);
            } else if let Some(first) = fresh_keys.get(key) {
                write.stored.insert(row.application_id.clone(), rows[*first].clone());
            } else {
                fresh_keys.insert(*key, position);
                write.inserted.push(position);
            }
        }
        let fresh: Vec<&AuditRow> = write.inserted.iter().map(|position| rows[*position]).collect();
        // Known before the COPY holds the connection.
        let mut policy_ids: Vec<(i16, Arc<DecisionPolicy>)> = Vec::new();
        let mut row_policies: Vec<i16> = Vec::with_capacity(fresh.len());
        for row in &fresh {
            let id = match policy_ids.iter().find(|(_, policy)| Arc::ptr_eq(policy, &row.policy)) {
                Some((id, _)) => *id,
                None => {
                    let id = self.policies.id_of(connection, &row.policy).await?;
                    policy_ids.push((id, Arc::clone(&row.policy)));
                    id
                }
            };
            row_policies.push(id);
        }
        let mut claimed = NewClaims::default();
        if !fresh.is_empty() {
            let rejected = |error| row_rejection(error, &write.inserted);
            let mut decisions = CopyStream::start(connection, DECISIONS_COPY).await?;
            let fresh_keys = write.inserted.iter().map(|position| &keys[*position]);
            for ((row, key), policy_id) in fresh.iter().zip(fresh_keys).zip(row_policies) {
                let source =
                    sources.get_mut(&(Arc::clone(&row.source_topic), row.source_partition)).ok_or_else(|| {
                        SinkError::ConcurrentWriter(format!("{}/{}", row.source_topic, row.source_partition))
                    })?;
                let seq = source.last_seq + 1;
                let sealed = match &row.sealed {
                    Some(sealed) => Cow::Borrowed(sealed.as_slice()),
                    None => Cow::Owned(sealer.seal(&row.application_id, &row.protected).into_vec()),
                };
                let hash = row.hash(seq, &source.last_hash, Some(&sealed));
                (source.last_seq, source.last_hash) = (seq, hash);
                encode_decision(decisions.rows(), row, source.id, seq, policy_id, &hash, &sealed);
                decisions.send_full().await.map_err(rejected)?;
                claimed.keys.push(*key);
                claimed.sources.push(source.id);
                claimed.seqs.push(seq);
                claimed.processed_at.push(row.processed_at);
            }
            decisions.finish().await.map_err(rejected)?;
        }
        let counts = count(&fresh);
        let by_partition: HashMap<i32, i32> =
            sources.iter().map(|((_, partition), source)| (*partition, source.id)).collect();
        let heads: Vec<&Head> = sources.values().collect();
        close::close(connection, &claimed, &counts, &heads, &by_partition).await?;
        write.stored.extend(stored::stored_decisions(connection, &self.policies, &already).await?);
        transaction.commit().await?;
        for (id, policy) in &policy_ids {
            self.policies.remember(*id, policy);
        }
        write.counts = counts;
        Ok(write)
    }
}

/// How a batch's transaction finds the applications decided before it.
#[derive(Clone, Copy)]
enum Claims {
    /// It assumes none were, and claims every application: a claim that exists already fails
    /// the transaction on the primary key (a resend, or a concurrent writer), and the batch is
    /// written again `LookedUp`. Saves a lookup per row in the common case.
    Optimistic,
    /// It looks every application up first.
    LookedUp,
}

/// A claim that exists already (SQLSTATE 23505 on `decided_applications`' primary key).
fn lost_claim(error: &SinkError) -> bool {
    error.sqlstate().as_deref() == Some("23505")
}

const DECISIONS_COPY: &str =
    "COPY decisions (source_id, chain_seq, source_offset, application_id, policy_id, outcome, \
     probability_of_default, inputs, reasons, contributions, protected_sealed, schema_id, \
     event_time, consumed_at, processed_at, row_hash) FROM STDIN (FORMAT binary)";

/// One row of [`DECISIONS_COPY`]: the protected attributes only `sealed`.
fn encode_decision(
    buffer: &mut CopyBuffer,
    row: &AuditRow,
    source_id: i32,
    seq: i64,
    policy_id: i16,
    hash: &[u8; 32],
    sealed: &[u8],
) {
    let entries: Vec<i16> = row.reasons.iter().map(|reason| reason.entry).collect();
    let contributions: Vec<f64> = row.reasons.iter().map(|reason| reason.contribution).collect();
    buffer
        .row(16)
        .int4(source_id)
        .int8(seq)
        .int8(row.source_offset)
        .text(&row.application_id)
        .int2(policy_id)
        .int2(outcome_code(row.outcome))
        .float8(row.probability_of_default)
        .float8_array(&row.inputs)
        .int2_array(&entries)
        .float8_array(&contributions)
        .bytea(sealed)
        .int4(row.schema_id)
        .timestamptz(row.event_time)
        .timestamptz(row.consumed_at)
        .timestamptz(row.processed_at)
        .bytea(hash);
}

/// A COPY error PostgreSQL puts on one row (a data exception, class 22, or an integrity violation
/// other than a lost race on a unique key, class 23) becomes [`SinkError::RowRejected`] with that
/// row's position in the batch's rows; any other error stays as it is.
fn row_rejection(error: SinkError, inserted: &[usize]) -> SinkError {
    let SinkError::Database(sqlx::Error::Database(database)) = &error else { return error };
    let code = database.code().map(|code| code.into_owned()).unwrap_or_default();
    let row_level = code.starts_with("22") || (code.starts_with("23") && code != "23505");
    let line = database.try_downcast_ref::<PgDatabaseError>().and_then(|pg| pg.r#where()).and_then(copy_line);
    match line.and_then(|line| inserted.get(line.checked_sub(1)?)) {
        Some(&position) if row_level => {
            SinkError::RowRejected { position, code, message: database.message().to_owned() }
        }
        _ => error,
    }
}

/// The line number in a COPY error's context (`COPY decisions, line 3, column application_id`).
fn copy_line(context: &str) -> Option<usize> {
    let (_, rest) = context.split_once(", line ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Creates (when new) and locks the rows of every source partition the batch touches, in key
/// order (one lock order for every writer), and reads their chain heads.
async fn lock_sources(
    connection: &mut PgConnection,
    progress: &Progress<'_>,
    rows: &[&AuditRow],
) -> Result<BTreeMap<(Arc<str>, i32), Head>, SinkError> {
    let mut through: BTreeMap<(Arc<str>, i32), (i64, i64)> = BTreeMap::new();
    for (topic, partition, next) in progress.audited {
        let entry = through.entry((Arc::clone(topic), *partition)).or_default();
        entry.0 = entry.0.max(*next);
    }
    for (topic, partition, next) in progress.announced {
        let entry = through.entry((Arc::clone(topic), *partition)).or_default();
        entry.1 = entry.1.max(*next);
    }
    for row in rows {
        through.entry((Arc::clone(&row.source_topic), row.source_partition)).or_default();
    }
    if through.is_empty() {
        return Ok(BTreeMap::new());
    }
    let topics: Vec<&str> = through.keys().map(|(topic, _)| &**topic).collect();
    let partitions: Vec<i32> = through.keys().map(|(_, partition)| *partition).collect();
    let locked = sqlx::query(
        "INSERT INTO source_partitions (topic, partition, chain_last_hash) \
         SELECT t, p, $3 FROM unnest($1::text[], $2::int[]) AS v(t, p) ORDER BY t, p \
         ON CONFLICT (topic, partition) DO UPDATE SET topic = EXCLUDED.topic \
         RETURNING topic, partition, source_id, chain_last_seq, chain_last_hash",
    )
    .bind(&topics)
    .bind(&partitions)
    .bind(&GENESIS[..])
    .fetch_all(&mut *connection)
    .await?;
    let mut sources = BTreeMap::new();
    for row in locked {
        let key = (Arc::<str>::from(row.try_get::<String, _>(0)?), row.try_get::<i32, _>(1)?);
        let hash: Vec<u8> = row.try_get(4)?;
        let source = Head {
            id: row.try_get(2)?,
            last_seq: row.try_get(3)?,
            last_hash: hash.try_into().unwrap_or(GENESIS),
            through: through.get(&key).map_or(0, |through| through.0),
            announced: through.get(&key).map_or(0, |through| through.1),
        };
        sources.insert(key, source);
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row number is read from PostgreSQL's COPY context, with or without a column.
    #[test]
    fn copy_context_gives_the_line() {
        assert_eq!(copy_line("COPY decisions, line 3, column application_id"), Some(3));
        assert_eq!(copy_line("COPY decided_applications, line 12"), Some(12));
        assert_eq!(copy_line("SQL statement \"SELECT 1\""), None);
    }
}
