//! Monthly partitions of `decisions`, created before the first row of a month is written (outside
//! the batch's transaction: creating a partition locks the parent table briefly).

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::PgPool;

use crate::sinks::SinkError;

/// Months whose partition is known to exist.
#[derive(Default)]
pub struct MonthlyPartitions {
    known: Mutex<HashSet<(i32, u32)>>,
}

/// The partition of `decisions` holding rows processed in `month` (its first day).
pub fn partition_name(month: NaiveDate) -> String {
    format!("decisions_y{:04}m{:02}", month.year(), month.month())
}

impl MonthlyPartitions {
    /// Creates the partitions for the months of `times` that are not known yet.
    pub async fn ensure(&self, pool: &PgPool, times: impl Iterator<Item = DateTime<Utc>>) -> Result<(), SinkError> {
        let wanted: HashSet<(i32, u32)> = times.map(|time| (time.year(), time.month())).collect();
        let missing: Vec<(i32, u32)> = {
            let known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            wanted.into_iter().filter(|month| !known.contains(month)).collect()
        };
        for (year, month) in missing {
            let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else { continue };
            let Some(next) = first.checked_add_months(Months::new(1)) else { continue };
            let statement = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF decisions FOR VALUES FROM ('{first}') TO ('{next}')",
                partition_name(first)
            );
            if let Err(error) = sqlx::query(&statement).execute(pool).await {
                // Two writers creating the same partition at once: the loser finds it there.
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(partition_name(first))
                    .fetch_one(pool)
                    .await?;
                if !exists {
                    return Err(error.into());
                }
            }
            self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert((year, month));
        }
        Ok(())
    }
}
