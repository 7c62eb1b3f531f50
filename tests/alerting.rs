//! Bias alerts reach a real Alertmanager: Prometheus (Debian's package) scrapes the worker and
//! evaluates the shipped rules, time windows scaled down from hours to seconds; a bias-injected
//! replay raises `CreditWorkerDisparateImpact` in Alertmanager, and unbiased traffic resolves it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::alerting::{listed_alerts, serve_receiver, write_configs, AlertPath};
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
    let labels = [("attribute".to_owned(), "age_band".to_owned()), ("group".to_owned(), "<=25".to_owned())];
    listed_alerts(alertmanager, "CreditWorkerDisparateImpact", &labels).await
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
    let (receiver_port, notifications) = (free_port(), work.path().join("notifications.log"));
    let receiver = tokio::spawn(serve_receiver(([127, 0, 0, 1], receiver_port).into(), notifications.clone()));
    let path = AlertPath {
        worker: &format!("127.0.0.1:{}", worker.http_port),
        alertmanager: &format!("127.0.0.1:{alertmanager_port}"),
        receiver_url: &format!("http://127.0.0.1:{receiver_port}"),
    };
    let monitoring = repo_root().join("monitoring");
    write_configs(&monitoring.join("rules"), &monitoring.join("alertmanager.yml"), work.path(), &path).unwrap();
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
    let paged = || {
        let received = std::fs::read_to_string(&notifications).unwrap_or_default();
        received.lines().any(|line| line.starts_with("/model-risk ") && line.contains("CreditWorkerDisparateImpact"))
    };
    while !paged() {
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
    receiver.abort();
}
