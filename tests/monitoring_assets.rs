//! The shipped monitoring assets are valid for the real tools (promtool, amtool from Debian's
//! prometheus packages), the alert rules behave as their unit tests say, and every query in the
//! dashboards and rules parses and names only series the worker exports or the rules record.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use credit_worker::telemetry::Metrics;

fn run(program: &str, args: &[&str], directory: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(directory)
        .output()
        .unwrap_or_else(|error| panic!("{program} not runnable ({error}); scripts/bootstrap.sh installs it"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

fn monitoring() -> std::path::PathBuf {
    common::repo_root().join("monitoring")
}

/// `promtool check config` (with its rule files), `promtool test rules`, `amtool check-config`.
#[test]
fn prometheus_and_alertmanager_configs_pass_their_tools() {
    let dir = monitoring();
    assert!(run("promtool", &["check", "config", "prometheus.yml"], &dir).contains("SUCCESS"));
    assert!(run("promtool", &["test", "rules", "tests/alerts_test.yml"], &dir).contains("SUCCESS"));
    assert!(run("amtool", &["check-config", "alertmanager.yml"], &dir).contains("SUCCESS"));
}

/// Every shipped alert is routed by its labels as the runbook says: model-risk critical alerts
/// (disparate impact, equal opportunity, declines without reasons) page the model-risk team,
/// model-risk warnings (AUC, calibration, parity, drift) go to its review queue, the rest to ops.
#[test]
fn every_alert_reaches_its_receiver() {
    let dir = monitoring();
    let text = std::fs::read_to_string(dir.join("rules/alerts.yml")).unwrap();
    let mut routed = 0;
    for rule in text.split("- alert: ").skip(1) {
        let name = rule.lines().next().unwrap().trim();
        let label = |key: &str| {
            let line = rule.lines().find(|line| line.trim_start().starts_with(&format!("{key}: ")));
            line.unwrap_or_else(|| panic!("{name} has no {key} label")).split_once(": ").unwrap().1.trim().to_owned()
        };
        let (team, severity) = (label("team"), label("severity"));
        let (team, severity) = (team.as_str(), severity.as_str());
        let expected = match (team, severity) {
            ("model-risk", "critical") => "model-risk-pager",
            ("model-risk", _) => "model-risk-review",
            (_, "critical") => "ops-pager",
            _ => "ops-webhook",
        };
        let labels = [format!("alertname={name}"), format!("team={team}"), format!("severity={severity}")];
        let mut args = vec!["config", "routes", "test", "--config.file=alertmanager.yml"];
        args.extend(labels.iter().map(String::as_str));
        let answer = run("amtool", &args, &dir);
        let receiver = answer.lines().find(|line| !line.starts_with("Warning:")).unwrap_or_default();
        assert_eq!(receiver.trim(), expected, "{name}");
        routed += 1;
    }
    assert!(routed >= 13, "{routed} alerts");
}

/// Every dashboard query parses (checked by promtool as recording rules) and every
/// `credit_worker` series a dashboard or rule names is exported by the worker or recorded by
/// the rules.
#[test]
fn dashboard_and_rule_queries_parse_and_name_real_series() {
    let dir = monitoring();
    let mut expressions = Vec::new();
    for entry in std::fs::read_dir(dir.join("grafana/dashboards")).unwrap() {
        let dashboard: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                expressions.push(target["expr"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(expressions.len() >= 15, "dashboards have {} queries", expressions.len());
    let rules_file = tempfile::NamedTempFile::new().unwrap();
    let rules: Vec<serde_json::Value> = expressions
        .iter()
        .enumerate()
        .map(|(index, expr)| serde_json::json!({ "record": format!("dashboard_query_{index}"), "expr": expr }))
        .collect();
    let document = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    std::fs::write(rules_file.path(), document.to_string()).unwrap();
    run("promtool", &["check", "rules", rules_file.path().to_str().unwrap()], &dir);

    let mut known: BTreeSet<String> = Metrics::new().exported_series_names().iter().cloned().collect();
    known.insert("up".into());
    let recording = std::fs::read_to_string(dir.join("rules/recording.yml")).unwrap();
    known.extend(recording.lines().filter_map(|line| line.trim().strip_prefix("- record: ")).map(str::to_owned));
    let alerts = std::fs::read_to_string(dir.join("rules/alerts.yml")).unwrap();
    let sources = expressions.iter().map(String::as_str).chain([recording.as_str(), alerts.as_str()]);
    let mut unknown = BTreeSet::new();
    for text in sources {
        for name in series_names(text) {
            if !known.contains(&name) {
                unknown.insert(name);
            }
        }
    }
    assert!(unknown.is_empty(), "queries name series the worker does not export: {unknown:?}");
}

/// Identifiers starting with `credit_worker` (metric names and recording-rule names).
fn series_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(found) = text[index..].find("credit_worker") {
        let start = index + found;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
            end += 1;
        }
        if !preceded && text[start..end].len() > "credit_worker".len() {
            names.push(text[start..end].to_owned());
        }
        index = end;
    }
    names
}
