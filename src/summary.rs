//! The end-of-run report printed by `make demo`: decisions and approval rates per protected
//! group and latency from the audit table, dead letters by reason from the worker's metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use sqlx::{PgPool, Row};

/// Figures for one run (audit rows whose application id starts with a prefix).
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub events_replayed: Option<u64>,
    pub events_consumed: u64,
    pub decisions: BTreeMap<String, i64>,
    pub dead_letters: BTreeMap<String, u64>,
    /// (attribute, group) → (decisions, approvals).
    pub groups: BTreeMap<(String, String), (i64, i64)>,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub audit_rows: i64,
}

const GROUPS_SQL: &str = "
WITH run AS (SELECT decision, protected_attributes AS p FROM decision_audit WHERE application_id LIKE $1 || '%')
SELECT 'sex' AS attribute,
       CASE WHEN p->>'personal_status_and_sex' LIKE 'female%' THEN 'female'
            WHEN p->>'personal_status_and_sex' LIKE 'male%' THEN 'male' ELSE 'unknown' END AS grp,
       count(*) AS decisions, count(*) FILTER (WHERE decision = 'approve') AS approvals
FROM run GROUP BY 1, 2
UNION ALL
SELECT 'age_band', CASE WHEN (p->>'age_in_years')::int <= 25 THEN '<=25'
                        WHEN (p->>'age_in_years')::int > 25 THEN '>25' ELSE 'unknown' END,
       count(*), count(*) FILTER (WHERE decision = 'approve')
FROM run GROUP BY 1, 2
UNION ALL
SELECT 'foreign_worker', coalesce(p->>'foreign_worker', 'unknown'), count(*), count(*) FILTER (WHERE decision = 'approve')
FROM run GROUP BY 1, 2";

/// Reads the audit figures for application ids starting with `prefix`.
pub async fn from_audit(pool: &PgPool, prefix: &str) -> Result<RunSummary> {
    let mut summary = RunSummary::default();
    for row in
        sqlx::query("SELECT decision, count(*) FROM decision_audit WHERE application_id LIKE $1 || '%' GROUP BY 1")
            .bind(prefix)
            .fetch_all(pool)
            .await
            .context("counting decisions")?
    {
        summary.decisions.insert(row.get(0), row.get(1));
    }
    summary.audit_rows = summary.decisions.values().sum();
    for row in sqlx::query(GROUPS_SQL).bind(prefix).fetch_all(pool).await.context("approval rates by group")? {
        summary.groups.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
    }
    let latency = sqlx::query(
        "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0), coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)
         FROM (SELECT extract(epoch FROM processed_at - event_time) * 1000 AS ms FROM decision_audit WHERE application_id LIKE $1 || '%') t",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .context("latency percentiles")?;
    summary.latency_p50_ms = latency.get(0);
    summary.latency_p99_ms = latency.get(1);
    Ok(summary)
}

/// Adds consumed and dead-letter counts parsed from a Prometheus text exposition.
pub fn add_metrics(summary: &mut RunSummary, exposition: &str) {
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("credit_worker_dead_letters_total{reason=\"") {
            if let Some((reason, value)) = rest.split_once("\"} ") {
                summary.dead_letters.insert(reason.to_owned(), value.trim().parse().unwrap_or(0));
            }
        } else if let Some(value) = line.strip_prefix("credit_worker_events_consumed_total ") {
            summary.events_consumed = value.trim().parse().unwrap_or(0);
        }
    }
}

/// The report as printed.
pub fn render(summary: &RunSummary) -> String {
    let mut out = String::new();
    let decided: i64 = summary.decisions.values().sum();
    let dead: u64 = summary.dead_letters.values().sum();
    let _ = writeln!(out, "== credit-worker run summary ==");
    if let Some(replayed) = summary.events_replayed {
        let _ = writeln!(out, "events replayed          {replayed}");
    }
    let _ = writeln!(out, "events consumed          {}", summary.events_consumed);
    let _ = writeln!(out, "decisions                {decided}");
    for (outcome, count) in &summary.decisions {
        let _ = writeln!(out, "  {outcome:<22} {count} ({:.1}%)", percent(*count, decided));
    }
    let _ = writeln!(out, "dead letters             {dead}");
    for (reason, count) in &summary.dead_letters {
        let _ = writeln!(out, "  {reason:<22} {count}");
    }
    let _ = writeln!(out, "approval rate by protected group (monitoring only, not model inputs):");
    for ((attribute, group), (decisions, approvals)) in &summary.groups {
        let _ = writeln!(
            out,
            "  {attribute:<15} {group:<8} {:>5.1}%  ({approvals}/{decisions})",
            percent(*approvals, *decisions)
        );
    }
    let _ = writeln!(
        out,
        "event -> decision latency p50 {:.1} ms, p99 {:.1} ms",
        summary.latency_p50_ms, summary.latency_p99_ms
    );
    let _ = writeln!(out, "audit rows written       {}", summary.audit_rows);
    out
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dead-letter and consumed counters are read from the exposition format; other lines are ignored.
    #[test]
    fn parses_metrics_exposition() {
        let text = "# HELP x\ncredit_worker_events_consumed_total 1011\ncredit_worker_dead_letters_total{reason=\"bad_framing\"} 2\ncredit_worker_dead_letters_total{reason=\"out_of_range\"} 3\ncredit_worker_decisions_total{outcome=\"approve\"} 5\n";
        let mut summary = RunSummary::default();
        add_metrics(&mut summary, text);
        assert_eq!(summary.events_consumed, 1011);
        assert_eq!(summary.dead_letters.get("bad_framing"), Some(&2));
        assert_eq!(summary.dead_letters.get("out_of_range"), Some(&3));
        assert_eq!(summary.dead_letters.len(), 2);
    }
}
