//! `report.html` (pure): one self-contained page, no script and no external asset. Every figure
//! taken from `report.json` carries its JSON pointer in `data-json`, so a test can check the
//! page against the file.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::figures::ModelRiskReport;
use super::svg::{self, escape, Line, Rule};
use crate::monitor::{AttributeReport, Estimate};

const STYLE: &str = "body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}h3{font-size:15px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.below{background:#fde2e0}.muted{color:#777}";

/// The page of `report`.
pub fn render(report: &ModelRiskReport) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Model-risk report {} – {}</title>\
         <style>{STYLE}</style></head><body><h1>Model-risk report: fairness, drift and performance</h1>\
         <p>Event-time period <b>{}</b> to <b>{}</b> (buckets of {} s, points of {} s). Generated {}. Groups below \
         {} decisions are not compared. Protected attributes are used for monitoring only, never as model inputs.</p>",
        day(report.period.from),
        day(report.period.to),
        time(report.period.from),
        time(report.period.to),
        report.bucket_seconds,
        report.step_seconds,
        time(report.generated_at),
        report.min_group_size,
    );
    summary(&mut page, report);
    fairness(&mut page, report);
    drift(&mut page, report);
    reasons(&mut page, report);
    outcomes(&mut page, report);
    alerts(&mut page, report);
    page.push_str("</body></html>\n");
    page
}

fn summary(page: &mut String, report: &ModelRiskReport) {
    let totals = &report.decisions;
    page.push_str("<h2>Decisions and models</h2><table><tr><th>decisions</th><th>approve</th><th>review</th><th>decline</th></tr><tr>");
    for (key, value) in
        [("total", totals.total), ("approve", totals.approve), ("review", totals.review), ("decline", totals.decline)]
    {
        page.push_str(&count(&format!("/decisions/{key}"), value));
    }
    page.push_str("</tr></table><table><tr><th>model version</th><th>sha256</th><th>decisions</th><th>first event</th><th>last event</th></tr>");
    for (index, model) in report.models.iter().enumerate() {
        let _ = write!(
            page,
            "<tr><td>{}</td><td><code>{}</code></td>{}<td>{}</td><td>{}</td></tr>",
            escape(&model.version),
            escape(&model.sha256),
            count(&format!("/models/{index}/decisions"), model.decisions),
            time(model.first_event),
            time(model.last_event)
        );
    }
    page.push_str("</table>");
}

fn fairness(page: &mut String, report: &ModelRiskReport) {
    page.push_str("<h2>Fairness over the period</h2><p>Approval rate per group with its 95% interval (Wilson); disparate impact (group rate / reference rate, Katz interval) against the four-fifths line; statistical parity difference (Newcombe interval).</p>");
    for (index, attribute) in report.fairness.iter().enumerate() {
        attribute_table(page, &format!("/fairness/{index}"), attribute, report.disparate_impact_threshold);
        over_time(page, report, index, attribute);
    }
}

fn attribute_table(page: &mut String, pointer: &str, attribute: &AttributeReport, threshold: f64) {
    let _ = write!(
        page,
        "<h3>{} (reference: {})</h3><table><tr><th>group</th><th>decisions</th><th>approvals</th><th>approval rate</th>\
         <th>95% interval</th><th>disparate impact</th><th>95% interval</th><th>parity difference</th><th>95% interval</th><th>status</th></tr>",
        escape(&attribute.attribute),
        escape(&attribute.reference_group)
    );
    for (index, group) in attribute.groups.iter().enumerate() {
        let at = format!("{pointer}/groups/{index}");
        let below = group.disparate_impact.is_some_and(|ratio| ratio.upper < threshold);
        let _ = write!(
            page,
            "<tr{}><td>{}</td>{}{}{}{}{}<td>{:?}</td></tr>",
            if below { " class=\"below\"" } else { "" },
            escape(&group.group),
            count(&format!("{at}/decisions"), group.decisions),
            count(&format!("{at}/approvals"), group.approvals),
            estimate(&format!("{at}/approval_rate"), group.approval_rate),
            estimate(&format!("{at}/disparate_impact"), group.disparate_impact),
            estimate(&format!("{at}/parity_difference"), group.parity_difference),
            group.status
        );
    }
    page.push_str("</table>");
}

fn over_time(page: &mut String, report: &ModelRiskReport, index: usize, attribute: &AttributeReport) {
    let steps = &report.fairness_over_time;
    if steps.len() < 2 {
        return;
    }
    let x_range = (ms(steps[0].start), ms(steps[steps.len() - 1].start));
    let line = |group: &str, pick: &dyn Fn(&crate::monitor::GroupReport) -> Option<Estimate>| Line {
        name: group.to_owned(),
        points: steps
            .iter()
            .filter_map(|step| {
                let found = step.attributes.get(index)?.groups.iter().find(|candidate| candidate.group == group)?;
                pick(found).map(|value| (ms(step.start), value.value, value.lower, value.upper))
            })
            .collect(),
    };
    let label = |x: f64| super::figures::millis_to_time(x as i64).format("%m-%d %H:%M").to_string();
    let rates: Vec<Line> = attribute.groups.iter().map(|group| line(&group.group, &|g| g.approval_rate)).collect();
    page.push_str(&svg::lines(
        &format!("Approval rate by {} over time", attribute.attribute),
        &rates,
        x_range,
        (0.0, 1.0),
        None,
        label,
    ));
    let ratios: Vec<Line> = attribute
        .groups
        .iter()
        .filter(|group| group.group != attribute.reference_group)
        .map(|group| line(&group.group, &|g| g.disparate_impact))
        .filter(|line| !line.points.is_empty())
        .collect();
    let top = ratios.iter().flat_map(|line| line.points.iter().map(|point| point.3)).fold(1.25, f64::max).min(3.0);
    let rule =
        Rule { value: report.disparate_impact_threshold, label: format!("{} line", report.disparate_impact_threshold) };
    page.push_str(&svg::lines(
        &format!("Disparate impact by {} over time", attribute.attribute),
        &ratios,
        x_range,
        (0.0, top),
        Some(&rule),
        label,
    ));
}

fn drift(page: &mut String, report: &ModelRiskReport) {
    page.push_str("<h2>Drift (PSI against the training histograms)</h2>");
    for (model_index, model) in report.drift.iter().enumerate() {
        let _ = write!(
            page,
            "<h3>{} <code>{}</code></h3><table><tr><th>series</th><th>events</th><th>PSI</th><th>critical PSI (α 0.001)</th><th>drifted</th></tr>",
            escape(&model.version),
            escape(&model.sha256[..model.sha256.len().min(12)])
        );
        for (index, series) in model.series.iter().enumerate() {
            let at = format!("/drift/{model_index}/series/{index}");
            let psi = optional(&format!("{at}/psi"), series.psi);
            let _ = write!(
                page,
                "<tr{}><td>{}</td>{}{psi}<td>{:.4}</td><td>{}</td></tr>",
                if series.drifted { " class=\"below\"" } else { "" },
                escape(&series.name),
                count(&format!("{at}/window_count"), series.window_count),
                series.critical_psi,
                if series.drifted { "yes" } else { "no" }
            );
        }
        page.push_str("</table>");
        let bars: Vec<(String, f64)> =
            model.series.iter().filter_map(|series| Some((series.name.clone(), series.psi?))).collect();
        let rule = Rule { value: report.psi_threshold, label: format!("PSI {}", report.psi_threshold) };
        page.push_str(&svg::bars(&format!("PSI per series, {}", model.version), &bars, &rule));
    }
}

fn reasons(page: &mut String, report: &ModelRiskReport) {
    page.push_str("<h2>Adverse-action reason codes by group</h2><p>Share of the group's declined and referred applications given each code (any of its up to four reasons).</p><table><tr><th>attribute</th><th>group</th><th>decisions</th><th>with reasons</th><th>codes (share)</th></tr>");
    for (index, group) in report.reasons.iter().enumerate() {
        let at = format!("/reasons/{index}");
        let codes: Vec<String> = group
            .codes
            .iter()
            .enumerate()
            .map(|(code_index, code)| {
                format!(
                    "{} <span data-json=\"{at}/codes/{code_index}/share\">{:.4}</span>",
                    escape(&code.code),
                    code.share
                )
            })
            .collect();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td>{}{}<td style=\"text-align:left\">{}</td></tr>",
            escape(&group.attribute),
            escape(&group.group),
            count(&format!("{at}/decisions"), group.decisions),
            count(&format!("{at}/with_reasons"), group.with_reasons),
            codes.join(", ")
        );
    }
    page.push_str("</table>");
}

fn outcomes(page: &mut String, report: &ModelRiskReport) {
    let outcomes = &report.outcomes;
    let auc = optional("/outcomes/figures/auc", outcomes.figures.auc);
    let _ = write!(
        page,
        "<h2>Performance where labels have matured</h2><table><tr><th>labelled decisions</th><th>label coverage</th><th>AUC</th></tr>\
         <tr>{}{}{auc}</tr></table>",
        count("/outcomes/labelled", outcomes.labelled),
        number("/outcomes/label_coverage", outcomes.label_coverage),
    );
    let rate = optional("/outcomes/default_rate", outcomes.default_rate);
    let _ = write!(
        page,
        "<h3>Label-free estimate against the realised figures</h3><p>Expected from the calibrated scores of \
         every decision of the period (before labels), realised on the labelled ones (observed default \
         rate: {rate_text}).</p><table><tr><th>model</th><th>decisions</th><th>expected default rate</th>\
         <th>expected AUC</th><th>95% interval</th><th>realised AUC</th></tr>",
        rate_text = outcomes.default_rate.map_or_else(|| "none yet".to_owned(), |rate| format!("{rate:.4}")),
    );
    let realised = outcomes.figures.auc.map_or_else(|| "—".to_owned(), |auc| format!("{auc:.4}"));
    for (index, model) in report.drift.iter().enumerate() {
        let at = format!("/drift/{index}/expected");
        let expected_rate = optional(&format!("{at}/expected_default_rate"), model.expected.expected_default_rate);
        let _ = write!(
            page,
            "<tr><td>{}</td>{}{expected_rate}{}<td>{realised}</td></tr>",
            escape(&model.version),
            count(&format!("{at}/decisions"), model.expected.decisions),
            estimate(&format!("{at}/expected_auc"), model.expected.expected_auc),
        );
    }
    let _ = write!(page, "</table><table><tr><th>observed default rate</th></tr><tr>{rate}</tr></table>");
    for (index, attribute) in outcomes.figures.attributes.iter().enumerate() {
        let _ = write!(
            page,
            "<h3>Equal opportunity by {} (reference: {})</h3><table><tr><th>group</th><th>labelled</th><th>good payers</th>\
             <th>approved good payers</th><th>true-positive rate</th><th>95% interval</th><th>difference</th><th>95% interval</th><th>AUC</th></tr>",
            escape(&attribute.attribute),
            escape(&attribute.reference_group)
        );
        for (group_index, group) in attribute.groups.iter().enumerate() {
            let at = format!("/outcomes/figures/attributes/{index}/groups/{group_index}");
            let auc = optional(&format!("{at}/auc"), group.auc);
            let _ = write!(
                page,
                "<tr><td>{}</td>{}{}{}{}{}{auc}</tr>",
                escape(&group.group),
                count(&format!("{at}/labelled"), group.labelled),
                count(&format!("{at}/good_payers"), group.good_payers),
                count(&format!("{at}/approved_good_payers"), group.approved_good_payers),
                estimate(&format!("{at}/true_positive_rate"), group.true_positive_rate),
                estimate(&format!("{at}/equal_opportunity_difference"), group.equal_opportunity_difference),
            );
        }
        page.push_str("</table>");
    }
}

fn alerts(page: &mut String, report: &ModelRiskReport) {
    page.push_str("<h2>Alerts emitted in the period</h2>");
    if report.alerts.is_empty() {
        page.push_str("<p>None.</p>");
        return;
    }
    page.push_str(
        "<table><tr><th>alert</th><th>state</th><th>value</th><th>threshold</th><th>since</th><th>emitted</th></tr>",
    );
    for (index, alert) in report.alerts.iter().enumerate() {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{:?}</td>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&alert.alert_key),
            alert.state,
            number(&format!("/alerts/{index}/value"), alert.value),
            alert.threshold,
            time(super::figures::millis_to_time(alert.state_since)),
            time(super::figures::millis_to_time(alert.emitted_at))
        );
    }
    page.push_str("</table>");
}

/// A count cell.
fn count(pointer: &str, value: u64) -> String {
    format!("<td data-json=\"{}\">{value}</td>", escape(pointer))
}

/// A figure cell (4 decimals).
fn number(pointer: &str, value: f64) -> String {
    format!("<td data-json=\"{}\">{value:.4}</td>", escape(pointer))
}

/// A figure cell, or a dash without a figure.
fn optional(pointer: &str, value: Option<f64>) -> String {
    value.map_or_else(|| "<td class=\"muted\">—</td>".to_owned(), |value| number(pointer, value))
}

/// Two cells: the estimate and its interval, or dashes.
fn estimate(pointer: &str, value: Option<Estimate>) -> String {
    match value {
        Some(value) => format!(
            "{}<td>[<span data-json=\"{p}/lower\">{:.4}</span>, <span data-json=\"{p}/upper\">{:.4}</span>]</td>",
            number(&format!("{pointer}/value"), value.value),
            value.lower,
            value.upper,
            p = escape(pointer)
        ),
        None => "<td class=\"muted\">—</td><td class=\"muted\">—</td>".to_owned(),
    }
}

fn ms(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}
