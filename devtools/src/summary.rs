//! The end-of-run report printed by `make demo`: decisions and latency from the audit table,
//! dead letters by reason from the worker's metrics, the fairness table and alert states from
//! the worker's `/fairness`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use sqlx::{PgPool, Row};

use crate::scrape::Exposition;

/// Figures for one run (audit rows whose application id starts with a prefix).
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub events_replayed: Option<u64>,
    pub events_consumed: u64,
    pub decisions: BTreeMap<String, i64>,
    pub dead_letters: BTreeMap<String, u64>,
    /// The worker's `/fairness` report.
    pub fairness: Option<serde_json::Value>,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub audit_rows: i64,
    /// Declines and reviews without a reason (must be 0 for declines).
    pub declines_without_reasons: i64,
    /// Most frequent reason codes: (code, text, count).
    pub top_reasons: Vec<(String, String, i64)>,
    /// A few declines with their reasons.
    pub sample_declines: Vec<SampleDecline>,
    /// Shadow comparison from the metrics: events compared, agreement ratio, per-group differences.
    pub shadow: Option<ShadowFigures>,
}

/// A decline and its reasons, as the applicant's notice would list them.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleDecline {
    pub application_id: String,
    pub probability_of_default: f64,
    /// (code, text), principal reason first.
    pub reasons: Vec<(String, String)>,
}

/// Champion/challenger figures parsed from the worker's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowFigures {
    pub challenger: String,
    pub compared: u64,
    pub agreement_ratio: f64,
    /// `attribute=group` → challenger − champion approval rate.
    pub approval_rate_difference: BTreeMap<String, f64>,
}

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
    summary.declines_without_reasons = sqlx::query_scalar(
        "SELECT count(*) FROM decision_audit WHERE application_id LIKE $1 || '%' AND decision = 'decline' AND reasons = '[]'",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .context("counting declines without reasons")?;
    summary.top_reasons = sqlx::query_as(
        "SELECT r->>'code', r->>'text', count(*) FROM decision_audit, jsonb_array_elements(reasons) AS r
         WHERE application_id LIKE $1 || '%' GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 5",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await
    .context("counting reason codes")?;
    for row in sqlx::query(
        "SELECT application_id, probability_of_default, reasons FROM decision_audit
         WHERE application_id LIKE $1 || '%' AND decision = 'decline' ORDER BY application_id LIMIT 3",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await
    .context("sampling declines")?
    {
        let reasons: Vec<credit_worker::domain::AdverseReason> = serde_json::from_value(row.get(2)).unwrap_or_default();
        let reasons = reasons.into_iter().map(|reason| (reason.code, reason.text)).collect();
        summary.sample_declines.push(SampleDecline {
            application_id: row.get(0),
            probability_of_default: row.get(1),
            reasons,
        });
    }
    Ok(summary)
}

/// Adds the consumed, dead-letter and shadow figures from the worker's metrics.
pub fn add_metrics(summary: &mut RunSummary, metrics: &Exposition) {
    summary.events_consumed = metrics.sum("credit_worker_events_consumed_total", &[]) as u64;
    for sample in metrics.samples("credit_worker_dead_letters_total", &[]) {
        if let Some(reason) = sample.label("reason") {
            summary.dead_letters.insert(reason.to_owned(), sample.value as u64);
        }
    }
    let Some(challenger) = metrics
        .samples("credit_worker_shadow_model_info", &[])
        .find_map(|sample| sample.label("version").map(str::to_owned))
    else {
        return;
    };
    let mut shadow = ShadowFigures {
        challenger,
        compared: metrics.sum("credit_worker_shadow_comparisons_total", &[]) as u64,
        agreement_ratio: metrics.value("credit_worker_shadow_agreement_ratio", &[]).unwrap_or(0.0),
        ..ShadowFigures::default()
    };
    for sample in metrics.samples("credit_worker_shadow_approval_rate_difference", &[]) {
        if let (Some(attribute), Some(group)) = (sample.label("attribute"), sample.label("group")) {
            shadow.approval_rate_difference.insert(format!("{attribute}={group}"), sample.value);
        }
    }
    summary.shadow = Some(shadow);
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
    render_reasons(&mut out, summary);
    if let Some(shadow) = &summary.shadow {
        render_shadow(&mut out, shadow);
    }
    if let Some(report) = &summary.fairness {
        render_fairness(&mut out, report);
    }
    let _ = writeln!(
        out,
        "event -> decision latency p50 {:.1} ms, p99 {:.1} ms",
        summary.latency_p50_ms, summary.latency_p99_ms
    );
    let _ = writeln!(out, "audit rows written       {}", summary.audit_rows);
    out
}

fn render_reasons(out: &mut String, summary: &RunSummary) {
    let _ = writeln!(
        out,
        "adverse-action reasons (TreeSHAP, catalogue in the model directory); declines without reasons: {}",
        summary.declines_without_reasons
    );
    for (code, text, count) in &summary.top_reasons {
        let _ = writeln!(out, "  {code:<5} {text:<58} {count}");
    }
    for sample in &summary.sample_declines {
        let reasons: Vec<String> = sample.reasons.iter().map(|(code, text)| format!("{code} {text}")).collect();
        let _ = writeln!(
            out,
            "  decline {} (PD {:.3}): {}",
            sample.application_id,
            sample.probability_of_default,
            reasons.join("; ")
        );
    }
}

fn render_shadow(out: &mut String, shadow: &ShadowFigures) {
    let _ = writeln!(
        out,
        "shadow challenger {} (never acted on): {} events compared, decisions agree {:.1}%",
        shadow.challenger,
        shadow.compared,
        100.0 * shadow.agreement_ratio
    );
    let differences: Vec<String> = shadow
        .approval_rate_difference
        .iter()
        .filter(|(group, _)| !group.ends_with("=unknown"))
        .map(|(group, difference)| format!("{group} {:+.1} pp", 100.0 * difference))
        .collect();
    let _ = writeln!(out, "  approval rate, challenger - champion: {}", differences.join(", "));
}

fn render_fairness(out: &mut String, report: &serde_json::Value) {
    let fairness = &report["fairness"];
    let _ = writeln!(
        out,
        "fairness, window of {} s (protected attributes are monitoring only, never model inputs; 95% intervals):",
        fairness["window_seconds"]
    );
    let _ = writeln!(
        out,
        "  {:<15} {:<12} {:>9} {:>15} {:>26} {:>28}",
        "attribute", "group", "decisions", "approval rate", "disparate impact", "parity difference"
    );
    let interval =
        |value: &serde_json::Value| match (value["value"].as_f64(), value["lower"].as_f64(), value["upper"].as_f64()) {
            (Some(v), Some(l), Some(u)) => format!("{v:.3} [{l:.3}, {u:.3}]"),
            _ => String::new(),
        };
    for attribute in fairness["window"].as_array().into_iter().flatten() {
        for group in attribute["groups"].as_array().into_iter().flatten() {
            let rate = group["approval_rate"]["value"]
                .as_f64()
                .map(|rate| format!("{:.1}%", 100.0 * rate))
                .unwrap_or_default();
            let (impact, parity) = match group["status"].as_str() {
                Some("ok") => (interval(&group["disparate_impact"]), interval(&group["parity_difference"])),
                Some("reference") => ("(reference)".to_owned(), String::new()),
                _ => ("insufficient data".to_owned(), String::new()),
            };
            let _ = writeln!(
                out,
                "  {:<15} {:<12} {:>9} {rate:>15} {impact:>26} {parity:>28}",
                attribute["attribute"].as_str().unwrap_or_default(),
                group["group"].as_str().unwrap_or_default(),
                group["decisions"].as_u64().unwrap_or(0),
            );
        }
    }
    let alerts: Vec<String> = report["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| alert["state"].as_str() != Some("normal"))
        .map(|alert| {
            let field = |name: &str| alert[name].as_str().unwrap_or_default().to_owned();
            format!("{}/{}/{} ({})", field("kind").to_lowercase(), field("metric"), field("subject"), field("state"))
        })
        .collect();
    let mut drift: Vec<(f64, &str)> = report["drift"]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| Some((series["psi"].as_f64()?, series["name"].as_str()?)))
        .collect();
    drift.sort_by(|a, b| b.0.total_cmp(&a.0));
    let drift_line = match drift.first() {
        Some((psi, name)) => format!("{} series, highest PSI {psi:.3} ({name})", drift.len()),
        None => "too few events for PSI".to_owned(),
    };
    let _ = writeln!(out, "drift vs training histograms: {drift_line}");
    render_outcomes(out, &report["outcomes"]);
    let _ = writeln!(out, "alerts: {}", if alerts.is_empty() { "none".to_owned() } else { alerts.join(", ") });
}

fn render_outcomes(out: &mut String, outcomes: &serde_json::Value) {
    let labelled = outcomes["labelled"].as_u64().unwrap_or(0);
    if labelled == 0 {
        let _ = writeln!(out, "outcomes (delayed labels): none observed yet");
        return;
    }
    let auc = outcomes["auc"].as_f64().map_or("n/a".to_owned(), |auc| format!("{auc:.3}"));
    let _ = writeln!(out, "outcomes (delayed labels): {labelled} matched to decisions, rolling AUC {auc}");
    let _ = writeln!(out, "  equal opportunity (approval rate among good payers, difference to the reference group):");
    for attribute in outcomes["attributes"].as_array().into_iter().flatten() {
        for group in attribute["groups"].as_array().into_iter().flatten() {
            let rate = group["true_positive_rate"]["value"]
                .as_f64()
                .map(|rate| format!("{:.1}%", 100.0 * rate))
                .unwrap_or_default();
            let difference = &group["equal_opportunity_difference"];
            let difference =
                match (difference["value"].as_f64(), difference["lower"].as_f64(), difference["upper"].as_f64()) {
                    (Some(v), Some(l), Some(u)) => format!("{v:+.3} [{l:+.3}, {u:+.3}]"),
                    _ if attribute["reference_group"] == group["group"] => "(reference)".to_owned(),
                    _ => "insufficient data".to_owned(),
                };
            let _ = writeln!(
                out,
                "  {:<15} {:<12} {rate:>7} {difference:>28}",
                attribute["attribute"].as_str().unwrap_or_default(),
                group["group"].as_str().unwrap_or_default()
            );
        }
    }
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

    /// Dead-letter and consumed counters are read from the worker's metrics; without a
    /// challenger there are no shadow figures.
    #[test]
    fn reads_the_worker_metrics() {
        let metrics = credit_worker::telemetry::Metrics::new();
        metrics.events_consumed.inc_by(1011);
        metrics.dead_letters.with_label_values(&["bad_framing"]).inc_by(2);
        metrics.dead_letters.with_label_values(&["out_of_range"]).inc_by(3);
        metrics.decisions.with_label_values(&["approve"]).inc_by(5);
        let mut summary = RunSummary::default();
        add_metrics(&mut summary, &Exposition::of_registry(&metrics.registry).unwrap());
        assert_eq!(summary.events_consumed, 1011);
        assert_eq!(summary.dead_letters.get("bad_framing"), Some(&2));
        assert_eq!(summary.dead_letters.get("out_of_range"), Some(&3));
        assert_eq!(summary.dead_letters.len(), 2);
        assert!(summary.shadow.is_none());
    }
}
