//! Bias alerts reach a real Alertmanager: Prometheus (Debian's package) scrapes the worker and
//! evaluates the shipped rules, time windows scaled down from hours to seconds; a bias-injected
//! replay raises `CreditWorkerDisparateImpact` in Alertmanager, and unbiased traffic resolves it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, Injection, ProtectedMode, ReplayOptions};

/// A child process killed on drop.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(program: &str, args: &[String], log: &Path) -> Service {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("{program}: {error} (scripts/bootstrap.sh installs it)"));
    Service(child)
}

/// The shipped rules with their windows scaled from minutes/hours to seconds.
fn scaled_rules(name: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("monitoring/rules").join(name)).unwrap();
    let mut scaled = text;
    for (from, to) in [("[1h]", "[15s]"), ("[10m]", "[15s]"), ("[5m]", "[15s]")] {
        scaled = scaled.replace(from, to);
    }
    for minutes in ["15m", "10m", "5m", "2m"] {
        scaled = scaled.replace(&format!("for: {minutes}"), "for: 2s");
    }
    scaled
}

fn options(deployment: &Deployment, prefix: &str, count: usize, inject: Vec<Injection>) -> ReplayOptions {
    ReplayOptions {
        count: Some(count),
        rate: 250.0,
        protected: ProtectedMode::Independent,
        inject,
        ..deployment.replay_options(prefix)
    }
}

async fn disparate_impact_alerts(alertmanager: &str) -> Vec<serde_json::Value> {
    let url = format!("{alertmanager}/api/v2/alerts");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let response = client.get(&url).send().await;
    let Ok(response) = response else { return Vec::new() };
    let alerts: Vec<serde_json::Value> = response.json().await.unwrap_or_default();
    alerts
        .into_iter()
        .filter(|alert| {
            let labels = &alert["labels"];
            labels["alertname"] == "CreditWorkerDisparateImpact"
                && labels["attribute"] == "age_band"
                && labels["group"] == "<=25"
        })
        .collect()
}

/// A webhook receiver on loopback recording every notification body.
async fn webhook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = std::sync::Arc::clone(&received);
    let app = axum::Router::new().fallback(move |body: String| {
        let store = std::sync::Arc::clone(&store);
        async move {
            store.lock().unwrap().push(body);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

/// Injected bias makes the disparate-impact alert arrive at Alertmanager (its API lists it with
/// the shipped labels, and the shipped route delivers it to the model-risk webhook receiver),
/// and it resolves after the bias stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disparate_impact_alert_reaches_alertmanager_and_resolves() {
    let deployment = Deployment::create("alerting", 2).await;
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;

    let work = tempfile::tempdir().unwrap();
    let logs = repo_root().join("target/test-logs");
    let (prometheus_port, alertmanager_port) = (free_port(), free_port());
    let alertmanager = format!("http://127.0.0.1:{alertmanager_port}");
    let (receiver_port, notifications) = webhook_receiver().await;
    let shipped = std::fs::read_to_string(repo_root().join("monitoring/alertmanager.yml")).unwrap();
    assert!(shipped.contains("http://alert-receiver:5001"));
    let config = shipped.replace("http://alert-receiver:5001", &format!("http://127.0.0.1:{receiver_port}"));
    std::fs::write(work.path().join("alertmanager.yml"), config).unwrap();
    let _alertmanager = start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", work.path().join("alertmanager.yml").display()),
            format!("--storage.path={}", work.path().join("alertmanager").display()),
            format!("--web.listen-address=127.0.0.1:{alertmanager_port}"),
            "--cluster.listen-address=".to_owned(),
        ],
        &logs.join(format!("alertmanager-{alertmanager_port}.log")),
    );
    for name in ["recording.yml", "alerts.yml"] {
        std::fs::write(work.path().join(name), scaled_rules(name)).unwrap();
    }
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [recording.yml, alerts.yml]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{alertmanager_port}']\n\
         scrape_configs:\n  - job_name: credit-worker\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        worker.http_port
    );
    std::fs::write(work.path().join("prometheus.yml"), config).unwrap();
    let _prometheus = start(
        "prometheus",
        &[
            format!("--config.file={}", work.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", work.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
        &logs.join(format!("prometheus-{prometheus_port}.log")),
    );

    let started = Instant::now();
    let biased = tokio::spawn({
        let options = options(&deployment, "biased", 15_000, vec![Injection::Bias]);
        async move { replay(&options).await.map(|_| ()) }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let fired = loop {
        let alerts = disparate_impact_alerts(&alertmanager).await;
        if let Some(alert) = alerts.into_iter().next() {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "no DisparateImpact alert at Alertmanager; worker log: {}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let fired_after = started.elapsed();
    assert_eq!(fired["labels"]["severity"], "critical");
    assert_eq!(fired["labels"]["team"], "model-risk");
    assert_eq!(fired["status"]["state"], "active");
    let deadline = Instant::now() + Duration::from_secs(40);
    while !notifications.lock().unwrap().iter().any(|body| body.contains("CreditWorkerDisparateImpact")) {
        assert!(Instant::now() < deadline, "the model-risk receiver got no notification");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let notified_after = started.elapsed();
    biased.abort();

    let unbiased = tokio::spawn({
        let options = options(&deployment, "unbiased", 10_000, vec![]);
        async move { replay(&options).await.map(|_| ()) }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let resolved_after = loop {
        let active =
            disparate_impact_alerts(&alertmanager).await.into_iter().any(|alert| alert["status"]["state"] == "active");
        if !active {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "DisparateImpact alert did not resolve");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    unbiased.abort();
    println!(
        "Alertmanager: {} {} (startsAt {}) listed {:.1} s after the biased replay began, webhook notified at {:.1} s, resolved at {:.1} s",
        fired["labels"]["alertname"],
        fired["labels"],
        fired["startsAt"],
        fired_after.as_secs_f64(),
        notified_after.as_secs_f64(),
        resolved_after.as_secs_f64()
    );
    assert!(worker.terminate(Duration::from_secs(30)));
}
