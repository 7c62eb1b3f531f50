//! Hostile event times: an application stamped far in the future, at i64::MAX ms, or before
//! PostgreSQL's timestamp range is dead-lettered as `event_time_out_of_range`; it neither
//! stalls the stream nor empties the fairness window, before or after a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};

/// Year 2100, i64::MAX ms, and about 7500 BC (chrono reads it; PostgreSQL cannot store it).
const HOSTILE: [(&str, i64); 3] =
    [("evt2100", 4_102_444_800_000), ("evtmax", i64::MAX), ("evtbc", -298_800_000_000_000)];

/// Decisions over the `sex` groups in the window and all-time, from `/fairness`.
async fn fairness_totals(worker: &WorkerProcess) -> (u64, u64) {
    let Ok(response) = reqwest::get(worker.url("/fairness")).await else { return (0, 0) };
    let report: serde_json::Value = response.json().await.unwrap_or_default();
    let total = |view: &str| -> u64 {
        report["fairness"][view]
            .as_array()
            .and_then(|attributes| attributes.iter().find(|a| a["attribute"] == "sex"))
            .and_then(|sex| sex["groups"].as_array())
            .map_or(0, |groups| groups.iter().filter_map(|group| group["decisions"].as_u64()).sum())
    };
    (total("window"), total("all_time"))
}

/// Waits (bounded) until `/fairness` shows `expected` decisions in the window and all-time.
async fn wait_for_totals(worker: &WorkerProcess, expected: u64, what: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let totals = fairness_totals(worker).await;
        if totals == (expected, expected) || Instant::now() > deadline {
            println!("{what}: window and all-time totals {totals:?}");
            return totals;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 500 normal applications, one hostile, 100 normal; then a restart. Returns what was seen.
async fn hostile_event_time(name: &str, event_time_ms: i64) -> Vec<String> {
    let deployment = Deployment::create(name, 2).await;
    let env = [("CREDIT_WORKER__FAIRNESS__WINDOW_SECONDS", "600"), ("CREDIT_WORKER__FAIRNESS__BUCKET_SECONDS", "10")];
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let mut problems = Vec::new();
    for (prefix, count, time) in [("a", 500, None), ("h", 1, Some(event_time_ms)), ("b", 100, None)] {
        let options = ReplayOptions {
            count: Some(count),
            event_time_ms: time,
            ..deployment.replay_options(&format!("{name}{prefix}"))
        };
        replay(&options).await.expect("replay");
    }
    let rows = wait_for_audit_rows(&pool, 600, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = [("reason", "event_time_out_of_range")];
    while worker.metrics().await.sum("credit_worker_dead_letters_total", &reason) < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = worker.metrics().await.sum("credit_worker_dead_letters_total", &reason);
    if (rows, dead) != (600, 1.0) {
        problems.push(format!("{rows} audit rows and {dead} event_time_out_of_range dead letters, not 600 and 1"));
    }
    let hostile: i64 = sqlx::query_scalar("SELECT count(*) FROM decision_audit WHERE application_id LIKE $1")
        .bind(format!("{name}h-%"))
        .fetch_one(&pool)
        .await
        .unwrap();
    if hostile != 0 {
        problems.push(format!("the hostile application has {hostile} audit rows"));
    }
    if wait_for_totals(&worker, 600, name).await != (600, 600) {
        problems.push(format!("before the restart /fairness shows {:?}", fairness_totals(&worker).await));
    }
    assert!(worker.terminate(Duration::from_secs(30)));
    let mut restarted = WorkerProcess::start(&deployment, &env);
    restarted.wait_ready(Duration::from_secs(60)).await;
    if wait_for_totals(&restarted, 600, name).await != (600, 600) {
        problems.push(format!("after the restart /fairness shows {:?}", fairness_totals(&restarted).await));
    }
    assert!(restarted.terminate(Duration::from_secs(30)));
    problems.into_iter().map(|problem| format!("{name}: {problem}")).collect()
}

/// Each hostile time in its own deployment, side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_times_are_dead_lettered_and_change_no_window() {
    let runs = HOSTILE.map(|(name, time)| hostile_event_time(name, time));
    let problems: Vec<String> = futures::future::join_all(runs).await.into_iter().flatten().collect();
    assert!(problems.is_empty(), "{problems:#?}");
}
