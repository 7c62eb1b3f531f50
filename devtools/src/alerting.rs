//! The alert path on loopback, for the demo and the alerting test: the shipped Prometheus rules
//! with their windows scaled from minutes and hours to seconds, the configuration files that
//! point a local Prometheus and Alertmanager at one worker, a webhook receiver that records each
//! notification, and readers for Alertmanager's alerts and the worker's alerts topic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use credit_worker::domain::{MonitoringAlert, MONITORING_ALERT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// The receiver URL the shipped Alertmanager configuration names (a placeholder for a real
/// incident tool).
pub const SHIPPED_RECEIVER: &str = "http://alert-receiver:5001";

/// `rules` (a shipped rules file) with every range and `for:` scaled down to seconds.
pub fn scaled_rules(rules: &str) -> String {
    let mut scaled = rules.to_owned();
    for (from, to) in [("[1h]", "[15s]"), ("[10m]", "[15s]"), ("[5m]", "[15s]")] {
        scaled = scaled.replace(from, to);
    }
    for minutes in ["30m", "15m", "10m", "5m", "2m"] {
        scaled = scaled.replace(&format!("for: {minutes}"), "for: 2s");
    }
    scaled
}

/// Loopback addresses of one local alert path.
pub struct AlertPath<'a> {
    /// The worker's HTTP address (`/metrics`), as `host:port`.
    pub worker: &'a str,
    /// Alertmanager's listen address, as `host:port`.
    pub alertmanager: &'a str,
    /// Where the webhook receiver listens, as `http://host:port`.
    pub receiver_url: &'a str,
}

/// Writes into `out` the scaled `recording.yml` and `alerts.yml` from `rules_dir`, a
/// `prometheus.yml` that scrapes the worker every second, and the shipped
/// `alertmanager.yml` with its receivers pointed at the local one.
pub fn write_configs(rules_dir: &Path, shipped_alertmanager: &Path, out: &Path, path: &AlertPath<'_>) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for name in ["recording.yml", "alerts.yml"] {
        let source = rules_dir.join(name);
        let text = std::fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
        std::fs::write(out.join(name), scaled_rules(&text))?;
    }
    let prometheus = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [recording.yml, alerts.yml]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\n\
         scrape_configs:\n  - job_name: credit-worker\n    static_configs:\n      - targets: ['{}']\n",
        path.alertmanager, path.worker
    );
    std::fs::write(out.join("prometheus.yml"), prometheus)?;
    let shipped = std::fs::read_to_string(shipped_alertmanager)
        .with_context(|| format!("reading {}", shipped_alertmanager.display()))?;
    if !shipped.contains(SHIPPED_RECEIVER) {
        bail!("{} no longer names {SHIPPED_RECEIVER}", shipped_alertmanager.display());
    }
    std::fs::write(out.join("alertmanager.yml"), shipped.replace(SHIPPED_RECEIVER, path.receiver_url))?;
    Ok(())
}

/// Serves a webhook receiver on `listen` until the process ends: every notification's body is
/// appended to `log` as one line, prefixed by the path it was sent to (the receiver's route).
pub async fn serve_receiver(listen: SocketAddr, log: PathBuf) -> Result<()> {
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&log).await;
    let file = file.with_context(|| format!("opening {}", log.display()))?;
    let file = std::sync::Arc::new(tokio::sync::Mutex::new(file));
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let file = std::sync::Arc::clone(&file);
        async move {
            let line = format!("{} {}\n", uri.path(), body.replace('\n', " "));
            let _ = file.lock().await.write_all(line.as_bytes()).await;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The alerts Alertmanager lists (`/api/v2/alerts`) named `alertname` with every label of
/// `labels`; empty when Alertmanager does not answer.
pub async fn listed_alerts(alertmanager: &str, alertname: &str, labels: &[(String, String)]) -> Vec<Value> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build();
    let Ok(client) = client else { return Vec::new() };
    let Ok(response) = client.get(format!("{alertmanager}/api/v2/alerts")).send().await else { return Vec::new() };
    let alerts: Vec<Value> = response.json().await.unwrap_or_default();
    alerts
        .into_iter()
        .filter(|alert| {
            let have = &alert["labels"];
            have["alertname"] == alertname && labels.iter().all(|(key, value)| have[key] == value.as_str())
        })
        .collect()
}

/// Waits (up to `timeout`) until Alertmanager lists an active alert `alertname` with `labels`.
pub async fn wait_for_alert(
    alertmanager: &str,
    alertname: &str,
    labels: &[(String, String)],
    timeout: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let listed = listed_alerts(alertmanager, alertname, labels).await;
        if let Some(alert) = listed.into_iter().find(|alert| alert["status"]["state"] == "active") {
            return Ok(alert);
        }
        if Instant::now() >= deadline {
            bail!("Alertmanager at {alertmanager} listed no active {alertname} {labels:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The worker's alert events on `topic` emitted at or after `since_ms`, read committed until at
/// least `at_least` were read and the topic has been quiet for `quiet`, or `timeout` passed.
pub fn alert_events(
    bootstrap_servers: &str,
    topic: &str,
    since_ms: i64,
    at_least: usize,
    quiet: Duration,
    timeout: Duration,
) -> Result<Vec<MonitoringAlert>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", format!("credit-dev-alerts-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the alerts consumer")?;
    // Assigned, not subscribed: no group join to wait for (Tansu takes seconds to form a group).
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading {topic}'s metadata"))?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|found| found.partitions()) {
        partitions.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    if partitions.count() == 0 {
        bail!("topic {topic} has no partitions");
    }
    consumer.assign(&partitions).with_context(|| format!("assigning {topic}"))?;
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&MONITORING_ALERT)
        .build()
        .context("the alert schema")?;
    let (started, mut last_seen, mut alerts) = (Instant::now(), Instant::now(), Vec::new());
    while started.elapsed() < timeout && (alerts.len() < at_least || last_seen.elapsed() < quiet) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.with_context(|| format!("reading {topic}"))?;
        last_seen = Instant::now();
        let Some(payload) = message.payload().filter(|payload| payload.len() > 5) else { continue };
        let alert: MonitoringAlert = reader
            .read_deser(&mut &payload[5..])
            .with_context(|| format!("decoding {topic}/{} offset {}", message.partition(), message.offset()))?;
        if alert.emitted_at >= since_ms {
            alerts.push(alert);
        }
    }
    alerts.sort_by_key(|alert| alert.emitted_at);
    Ok(alerts)
}

/// An alert as Alertmanager lists it: name, labels, since when, and its summary.
pub fn render_listed(alert: &Value) -> String {
    let labels = alert["labels"].as_object().map(|labels| {
        labels.iter().map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default())).collect::<Vec<_>>()
    });
    let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
    format!(
        "  {} {} since {}\n    labels   {}\n    summary  {}\n",
        text(&alert["labels"]["alertname"]),
        text(&alert["status"]["state"]),
        text(&alert["startsAt"]),
        labels.unwrap_or_default().join(", "),
        text(&alert["annotations"]["summary"]),
    )
}

/// The worker's alert events, one line each.
pub fn render_events(events: &[MonitoringAlert]) -> String {
    if events.is_empty() {
        return "  none\n".to_owned();
    }
    let mut out = String::new();
    for event in events {
        let subject = match (&event.attribute, &event.group, &event.feature) {
            (Some(attribute), Some(group), _) => format!("{attribute}={group}"),
            (_, _, Some(feature)) => format!("feature {feature}"),
            _ => String::new(),
        };
        let interval = match (event.interval_lower, event.interval_upper) {
            (Some(lower), Some(upper)) => format!(" [{lower:.3}, {upper:.3}]"),
            _ => String::new(),
        };
        let emitted = chrono::DateTime::from_timestamp_millis(event.emitted_at).map(|at| at.to_rfc3339());
        out.push_str(&format!(
            "  {:?} {:?} {} {subject}: {:.3}{interval} (threshold {}, n={}, model {}) at {}\n",
            event.state,
            event.severity,
            event.metric,
            event.value,
            event.threshold,
            event.sample_size,
            event.model_version,
            emitted.unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges and `for:` durations become seconds; the rest of the rules is unchanged.
    #[test]
    fn rules_are_scaled_to_seconds() {
        let rules = "expr: rate(x[1h]) < 0.8 and increase(y[10m]) > 0\nfor: 10m\nlabels: {}\n";
        assert_eq!(scaled_rules(rules), "expr: rate(x[15s]) < 0.8 and increase(y[15s]) > 0\nfor: 2s\nlabels: {}\n");
    }
}
