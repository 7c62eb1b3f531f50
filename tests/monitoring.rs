//! Fairness and drift monitoring on the local stack, the worker as a separate process with a
//! short window: an unbiased replay raises no alert; injected bias and drift raise the alerts
//! on the alerts topic and in the Prometheus gauges; removing them resolves the alerts. And a
//! restarted worker rebuilds its windows from the audit table.

mod common;

use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, Injection, ProtectedMode, ReplayOptions};
use credit_worker::domain::{MonitoringAlert, MONITORING_ALERT};

const WINDOW_SECONDS: u64 = 20;

fn options(deployment: &Deployment, prefix: &str, inject: Vec<Injection>) -> ReplayOptions {
    ReplayOptions { protected: ProtectedMode::Independent, inject, ..deployment.replay_options(prefix) }
}

fn short_windows() -> Vec<(&'static str, String)> {
    vec![
        ("CREDIT_WORKER__FAIRNESS__WINDOW_SECONDS", WINDOW_SECONDS.to_string()),
        ("CREDIT_WORKER__FAIRNESS__BUCKET_SECONDS", "1".into()),
        ("CREDIT_WORKER__ALERTS__SUSTAIN_SECONDS", "1".into()),
        ("CREDIT_WORKER__ALERTS__EVALUATION_INTERVAL_MS", "200".into()),
    ]
}

fn alerts(deployment: &Deployment, expected: usize, timeout: Duration) -> Vec<MonitoringAlert> {
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&MONITORING_ALERT).build().unwrap();
    read_topic(&deployment.alerts_topic, expected, timeout)
        .into_iter()
        .map(|record| reader.read_deser::<MonitoringAlert>(&mut &record.value.unwrap()[5..]).unwrap())
        .collect()
}

/// Reads the alerts topic until `done` holds (or 30 s).
fn alerts_until(deployment: &Deployment, done: impl Fn(&[MonitoringAlert]) -> bool) -> Vec<MonitoringAlert> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = alerts(deployment, usize::MAX, Duration::from_secs(1));
        if done(&read) || Instant::now() > deadline {
            return read;
        }
    }
}

/// Waits until the evaluator has completed two evaluations from now: the second started after
/// this call, so the gauges and alert events reflect every decision counted before it.
async fn wait_evaluated(worker: &WorkerProcess) {
    let target = worker.metric("credit_worker_monitor_evaluations_total").await + 2.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.metric("credit_worker_monitor_evaluations_total").await < target {
        assert!(Instant::now() < deadline, "the evaluator stopped; log: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_decided(worker: &WorkerProcess, total: f64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while worker.metric("credit_worker_decisions_total").await < total {
        assert!(Instant::now() < deadline, "not decided in time; log: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gauge(worker: &WorkerProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    worker.metrics().await.value(name, labels).unwrap_or_else(|| panic!("no series {name} {labels:?}"))
}

const DI: &str = "credit_worker_fairness_disparate_impact_ratio";
const YOUNG_DI_POINT: [(&str, &str); 3] = [("attribute", "age_band"), ("group", "<=25"), ("estimate", "point")];
const CREDIT_AMOUNT: [(&str, &str); 1] = [("feature", "credit_amount")];

/// Unbiased replay: no alert. Injected bias and drift: the disparate-impact alert for the
/// young fires (event on the alerts topic, gauge at 1) and credit_amount's PSI alert fires.
/// Unbiased traffic after the window has passed: both resolve, one event per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bias_and_drift_alerts_fire_and_resolve() {
    let deployment = Deployment::create("alerts", 2).await;
    let settings = short_windows();
    let env: Vec<(&str, &str)> = settings.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;

    replay(&options(&deployment, "fair", vec![])).await.unwrap();
    wait_decided(&worker, 1000.0).await;
    wait_evaluated(&worker).await;
    assert!(alerts(&deployment, 1, Duration::from_secs(2)).is_empty(), "no alert on an unbiased replay");
    let fair_di = gauge(&worker, DI, &YOUNG_DI_POINT).await;
    let fair_psi = gauge(&worker, "credit_worker_drift_psi", &CREDIT_AMOUNT).await;
    assert!(fair_di > 0.8, "DI on the unbiased replay: {fair_di}");
    assert!(fair_psi < 0.1, "PSI on the unbiased replay: {fair_psi}");

    replay(&options(&deployment, "biased", vec![Injection::Bias, Injection::Drift])).await.unwrap();
    wait_decided(&worker, 2000.0).await;
    let fired = alerts_until(&deployment, |alerts| {
        ["fairness/disparate_impact/age_band/<=25", "drift/psi/credit_amount"]
            .iter()
            .all(|key| alerts.iter().any(|alert| alert.alert_key == *key))
    });
    let di_alert = fired.iter().find(|alert| alert.alert_key == "fairness/disparate_impact/age_band/<=25");
    let di_alert = di_alert.unwrap_or_else(|| panic!("DI alert expected, got {fired:?}"));
    assert_eq!(di_alert.state, credit_worker::domain::AlertState::Firing);
    assert!(di_alert.interval_upper.unwrap() < 0.8 && di_alert.value < 0.8);
    assert!(fired.iter().any(|alert| alert.alert_key == "drift/psi/credit_amount"), "{fired:?}");
    let firing = [("kind", "fairness"), ("metric", "disparate_impact"), ("subject", "age_band/<=25")];
    assert_eq!(gauge(&worker, "credit_worker_alert_firing", &firing).await, 1.0);
    let biased_di = gauge(&worker, DI, &YOUNG_DI_POINT).await;
    let biased_psi = gauge(&worker, "credit_worker_drift_psi", &CREDIT_AMOUNT).await;

    // Unbiased traffic one window later in event time: the biased buckets leave the window.
    let later = chrono::Utc::now().timestamp_millis() + (WINDOW_SECONDS as i64 + 1) * 1000;
    let after = ReplayOptions { event_time_ms: Some(later), ..options(&deployment, "after", vec![]) };
    replay(&after).await.unwrap();
    wait_decided(&worker, 3000.0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&worker, "credit_worker_alert_firing", &firing).await != 0.0 {
        assert!(Instant::now() < deadline, "DI alert did not resolve");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resolved = |alerts: &[MonitoringAlert], key: &str| {
        alerts.iter().any(|alert| alert.alert_key == key && alert.state == credit_worker::domain::AlertState::Resolved)
    };
    let all = alerts_until(&deployment, |alerts| {
        resolved(alerts, "fairness/disparate_impact/age_band/<=25") && resolved(alerts, "drift/psi/credit_amount")
    });
    let states =
        |key: &str| all.iter().filter(|alert| alert.alert_key == key).map(|alert| alert.state).collect::<Vec<_>>();
    use credit_worker::domain::AlertState::{Firing, Resolved};
    assert_eq!(states("fairness/disparate_impact/age_band/<=25"), vec![Firing, Resolved]);
    assert_eq!(states("drift/psi/credit_amount"), vec![Firing, Resolved]);
    println!("DI(age<=25): unbiased {fair_di:.3}, biased {biased_di:.3}; PSI(credit_amount): unbiased {fair_psi:.4}, drifted {biased_psi:.3}");
    for alert in &all {
        println!(
            "alert {} {:?} value {:.3} [{:?}, {:?}] n={}",
            alert.alert_key, alert.state, alert.value, alert.interval_lower, alert.interval_upper, alert.sample_size
        );
    }
    assert!(worker.terminate(Duration::from_secs(30)));
}

/// A restarted worker (same group, nothing left to consume) rebuilds its fairness windows
/// from the audit table instead of starting empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_windows_from_the_audit_table() {
    let deployment = Deployment::create("rebuild", 2).await;
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    replay(&ReplayOptions { count: Some(300), ..options(&deployment, "rebuild", vec![]) }).await.unwrap();
    wait_decided(&worker, 300.0).await;
    let before = fairness_window_total(&worker).await;
    assert_eq!(before, 300);
    assert!(worker.terminate(Duration::from_secs(30)));

    let mut restarted = WorkerProcess::start(&deployment, &[]);
    restarted.wait_ready(Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fairness_window_total(&restarted).await != 300 {
        assert!(Instant::now() < deadline, "windows not rebuilt; log: {}", restarted.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(restarted.metric("credit_worker_events_consumed_total").await, 0.0);
    assert!(restarted.terminate(Duration::from_secs(30)));
}

/// Decisions in the window over the `sex` groups, from `/fairness`.
async fn fairness_window_total(worker: &WorkerProcess) -> u64 {
    let report: serde_json::Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
    let sex =
        report["fairness"]["window"].as_array().unwrap().iter().find(|a| a["attribute"] == "sex").unwrap().clone();
    sex["groups"].as_array().unwrap().iter().map(|group| group["decisions"].as_u64().unwrap()).sum()
}

/// Outcomes published after the decisions are joined to them: every outcome matched, a rolling
/// AUC equal (to binning precision) to the exact AUC of the audited scores against the labels,
/// and an equal-opportunity difference per group with its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_give_equal_opportunity_and_rolling_auc() {
    let deployment = Deployment::create("outcomes", 2).await;
    let mut worker = WorkerProcess::start(&deployment, &[("CREDIT_WORKER__ALERTS__EVALUATION_INTERVAL_MS", "200")]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let base = ReplayOptions { protected: ProtectedMode::AsRecorded, ..options(&deployment, "out", vec![]) };
    replay(&base).await.unwrap();
    wait_decided(&worker, 1000.0).await;
    let outcomes =
        ReplayOptions { outcomes_topic: Some(deployment.outcomes_topic.clone()), outcomes_only: true, ..base };
    replay(&outcomes).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.metric("credit_worker_outcomes_total").await < 1000.0 {
        assert!(Instant::now() < deadline, "outcomes not consumed; log: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = worker.metrics().await;
    let counts: Vec<(Option<&str>, f64)> = metrics
        .samples("credit_worker_outcomes_total", &[])
        .map(|sample| (sample.label("result"), sample.value))
        .collect();
    assert_eq!(counts, vec![(Some("matched"), 1000.0)]);

    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let rows: Vec<(f64, bool)> = sqlx::query_as(
        "SELECT a.probability_of_default, o.defaulted FROM decision_audit a JOIN loan_outcomes o USING (application_id)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1000);
    let scores: Vec<f64> = rows.iter().map(|row| row.0).collect();
    let labels: Vec<f32> = rows.iter().map(|row| if row.1 { 1.0 } else { 0.0 }).collect();
    let exact = credit_worker::monitor::roc_auc(&scores, &labels);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report: serde_json::Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
        if report["outcomes"]["labelled"] == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "outcomes not joined: {}", report["outcomes"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_evaluated(&worker).await;
    let report: serde_json::Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
    let outcomes = &report["outcomes"];
    assert_eq!(outcomes["labelled"], 1000);
    let rolling = outcomes["auc"].as_f64().unwrap();
    assert!((rolling - exact).abs() < 0.005, "rolling AUC {rolling} vs exact {exact}");
    assert_eq!(gauge(&worker, "credit_worker_model_auc", &[("attribute", "all"), ("group", "all")]).await, rolling);
    let age = outcomes["attributes"].as_array().unwrap().iter().find(|a| a["attribute"] == "age_band").unwrap();
    let young = age["groups"].as_array().unwrap().iter().find(|g| g["group"] == "<=25").unwrap();
    let difference = &young["equal_opportunity_difference"];
    assert!(difference["lower"].as_f64().unwrap() <= difference["value"].as_f64().unwrap());
    println!(
        "rolling AUC {rolling:.4} (exact {exact:.4}); equal opportunity difference age<=25 {:.3} [{:.3}, {:.3}]",
        difference["value"].as_f64().unwrap(),
        difference["lower"].as_f64().unwrap(),
        difference["upper"].as_f64().unwrap()
    );
    assert!(worker.terminate(Duration::from_secs(30)));
}

/// Before any label: the worker's label-free estimate (expected AUC with its 95% interval,
/// expected default rate) over the window's 1000 decisions. Labels then drawn from the model's
/// own audited probabilities (seeded) realise an AUC inside that interval and a default rate
/// within three standard errors of the expected one; and the gauges carry the estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_free_estimate_brackets_the_realised_auc() {
    use rand::{Rng, SeedableRng};
    let deployment = Deployment::create("estimate", 2).await;
    let mut worker = WorkerProcess::start(&deployment, &[("CREDIT_WORKER__ALERTS__EVALUATION_INTERVAL_MS", "200")]);
    worker.wait_ready(Duration::from_secs(60)).await;
    replay(&options(&deployment, "estimate", vec![])).await.unwrap();
    wait_decided(&worker, 1000.0).await;
    wait_evaluated(&worker).await;
    let report: serde_json::Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
    let expected = &report["expected"];
    assert_eq!(expected["decisions"], 1000, "{expected}");
    let (lower, upper) =
        (expected["expected_auc"]["lower"].as_f64().unwrap(), expected["expected_auc"]["upper"].as_f64().unwrap());
    let expected_rate = expected["expected_default_rate"].as_f64().unwrap();
    assert_eq!(gauge(&worker, "credit_worker_expected_auc", &[("estimate", "lower")]).await, lower);

    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let scores: Vec<f64> =
        sqlx::query_scalar("SELECT probability_of_default FROM decision_audit ORDER BY application_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(scores.len(), 1000);
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let labels: Vec<f32> = scores.iter().map(|p| if random.gen::<f64>() < *p { 1.0 } else { 0.0 }).collect();
    let realised = credit_worker::monitor::roc_auc(&scores, &labels);
    let realised_rate = labels.iter().map(|label| f64::from(*label)).sum::<f64>() / 1000.0;
    let rate_error = (expected_rate * (1.0 - expected_rate) / 1000.0).sqrt();
    println!(
        "expected AUC {:.4} [{lower:.4}, {upper:.4}], realised {realised:.4}; expected default rate {expected_rate:.4}, realised {realised_rate:.4}",
        expected["expected_auc"]["value"].as_f64().unwrap()
    );
    assert!(lower <= realised && realised <= upper, "realised AUC {realised} outside [{lower}, {upper}]");
    assert!(
        (realised_rate - expected_rate).abs() < 3.0 * rate_error,
        "default rate {realised_rate} vs {expected_rate}"
    );
    assert!(worker.terminate(Duration::from_secs(30)));
}

/// The outcome counts of `worker`, by result label.
async fn outcome_counts(worker: &WorkerProcess) -> Vec<(String, f64)> {
    let metrics = worker.metrics().await;
    let samples = metrics.samples("credit_worker_outcomes_total", &[]);
    samples.map(|sample| (sample.label("result").unwrap_or_default().to_owned(), sample.value)).collect()
}

/// An audit row whose sealed protected attributes no longer open (sealed under a key id the key
/// file does not hold, as after a retired key) costs that one outcome, counted `unopenable`:
/// the others are still joined, the outcomes consumer keeps going, and a restarted worker
/// rebuilds its outcome window from every other row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_row_costs_only_its_own_outcome() {
    let deployment = Deployment::create("unopenable", 2).await;
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let base = ReplayOptions {
        protected: ProtectedMode::AsRecorded,
        count: Some(200),
        ..options(&deployment, "unopenable", vec![])
    };
    replay(&base).await.unwrap();
    wait_decided(&worker, 200.0).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let altered = sqlx::query(
        "UPDATE decisions SET protected_sealed = set_byte(protected_sealed, 0, 99)
         WHERE application_id = (SELECT min(application_id) FROM decisions)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(altered.rows_affected(), 1);

    let outcomes =
        ReplayOptions { outcomes_topic: Some(deployment.outcomes_topic.clone()), outcomes_only: true, ..base };
    replay(&outcomes).await.unwrap();
    let expected = vec![("matched".to_owned(), 199.0), ("unopenable".to_owned(), 1.0)];
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcome_counts(&worker).await != expected {
        let counts = outcome_counts(&worker).await;
        assert!(Instant::now() < deadline, "outcomes {counts:?}; log: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worker.terminate(Duration::from_secs(30)));

    let mut restarted = WorkerProcess::start(&deployment, &[]);
    restarted.wait_ready(Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report: serde_json::Value = reqwest::get(restarted.url("/fairness")).await.unwrap().json().await.unwrap();
        if report["outcomes"]["labelled"] == 199 {
            break;
        }
        let labelled = &report["outcomes"]["labelled"];
        assert!(Instant::now() < deadline, "labelled {labelled}; log: {}", restarted.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(restarted.log_text().contains("unopenable"), "log: {}", restarted.log_text());
    assert!(restarted.terminate(Duration::from_secs(30)));
}
