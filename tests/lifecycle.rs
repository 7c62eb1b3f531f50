//! Model lifecycle against the local stack: hot swap and rollback under load through the
//! token-protected admin API, refusal of bad requests and changed models, and a shadow
//! challenger that is compared but never acted on.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};
use credit_worker::ops::verify::{load_models, rescore, verify_chains, RescoreRange, VerifyReport};
use serde_json::{json, Value};
use sqlx::Row;

const TOKEN: &str = "test-admin-token-0123456789";

/// A models root holding copies of credit-v1, credit-v2 and `broken` (credit-v2 with an edited
/// model file, so its hash no longer matches its card).
fn models_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (source, target) in [("credit-v1", "credit-v1"), ("credit-v2", "credit-v2"), ("credit-v2", "broken")] {
        let directory = root.path().join(target);
        std::fs::create_dir(&directory).unwrap();
        for file in std::fs::read_dir(repo_root().join("models").join(source)).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, directory.join(file.file_name().unwrap())).unwrap();
        }
    }
    let model = root.path().join("broken/model.txt");
    let text = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, text.replacen("leaf_value=", "leaf_value=1", 1)).unwrap();
    root
}

fn worker_env(root: &Path) -> Vec<(String, String)> {
    vec![
        ("CREDIT_WORKER_ADMIN_TOKEN".into(), TOKEN.into()),
        ("CREDIT_WORKER__MODEL__MODELS_ROOT".into(), root.display().to_string()),
        ("CREDIT_WORKER__MODEL__DIRECTORY".into(), root.join("credit-v1").display().to_string()),
    ]
}

async fn admin(
    worker: &WorkerProcess,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, worker.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_for_rows(database_url: &str, expected: i64, timeout: Duration) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    wait_for_audit_rows(&pool, expected, timeout).await;
    pool
}

/// Under a steady replay of 4000 events, activating credit-v2 and rolling back to credit-v1
/// through the admin API loses nothing (one audit row per application), every row re-scores
/// bit-identically with the model it records (none was scored by a half-loaded model), each
/// partition switches model at most twice (v1 → v2 → v1, between batches), and the chains
/// verify. Requests without the token, with a wrong one, for a path-like version or for a
/// model whose hash does not match are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_and_rollback_under_load_lose_nothing() {
    let deployment = Deployment::create("swap", 4).await;
    let root = models_root();
    let env = worker_env(root.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;

    use reqwest::Method;
    assert_eq!(admin(&worker, Method::GET, "/admin/model", None, None).await.0, 401);
    assert_eq!(admin(&worker, Method::GET, "/admin/model", Some("wrong-token-0123456789"), None).await.0, 401);
    let (status, body) = admin(&worker, Method::GET, "/admin/model", Some(TOKEN), None).await;
    assert_eq!((status, body["models"]["active"]["version"].as_str()), (200, Some("credit-v1")));
    let traversal = json!({"version": "../credit-v1"});
    assert_eq!(admin(&worker, Method::POST, "/admin/model/activate", Some(TOKEN), Some(traversal)).await.0, 400);
    let (status, body) =
        admin(&worker, Method::POST, "/admin/model/activate", Some(TOKEN), Some(json!({"version": "broken"}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("sha256"), "{body}");
    assert_eq!(admin(&worker, Method::POST, "/admin/model/rollback", Some(TOKEN), None).await.0, 409);

    let options = ReplayOptions { count: Some(4000), rate: 800.0, ..deployment.replay_options("swap") };
    let producer = tokio::spawn(async move { replay(&options).await.expect("replay") });
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let before_swap = wait_for_audit_rows(&pool, 500, Duration::from_secs(60)).await;
    assert!(before_swap >= 500, "credit-v1 decided {before_swap} rows; log: {}", worker.log_text());
    let (status, body) =
        admin(&worker, Method::POST, "/admin/model/activate", Some(TOKEN), Some(json!({"version": "credit-v2"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["models"]["active"]["version"], "credit-v2");
    assert_eq!(body["models"]["previous"]["version"], "credit-v1");
    let after_swap = audit_rows(&pool).await + 500;
    assert!(wait_for_audit_rows(&pool, after_swap, Duration::from_secs(60)).await >= after_swap);
    let (status, body) = admin(&worker, Method::POST, "/admin/model/rollback", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["models"]["active"]["version"], "credit-v1");
    producer.await.unwrap();
    wait_for_audit_rows(&pool, 4000, Duration::from_secs(120)).await;
    let per_application: Vec<(String, i64)> =
        sqlx::query_as("SELECT application_id, count(*) FROM decision_audit GROUP BY application_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_application.len(), 4000, "every application audited; log: {}", worker.log_text());
    assert!(per_application.iter().all(|(_, rows)| *rows == 1), "exactly one row per application");

    let rows = sqlx::query(
        "SELECT source_partition, source_offset, model_version FROM decision_audit ORDER BY source_partition, source_offset",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    let mut switches: HashMap<i32, (String, usize)> = HashMap::new();
    for row in &rows {
        let (partition, version): (i32, String) = (row.get(0), row.get(2));
        *by_model.entry(version.clone()).or_default() += 1;
        let entry = switches.entry(partition).or_insert((version.clone(), 0));
        if entry.0 != version {
            *entry = (version, entry.1 + 1);
        }
    }
    println!("rows by model: {by_model:?}; switches per partition: {switches:?}");
    assert!(
        by_model.get("credit-v1").is_some_and(|rows| *rows > 0)
            && by_model.get("credit-v2").is_some_and(|rows| *rows > 0)
    );
    assert!(switches.values().all(|(_, count)| *count <= 2), "{switches:?}");

    let (models, refused) = load_models(root.path()).unwrap();
    assert_eq!(refused.len(), 1, "only `broken` is refused: {refused:?}");
    let mut report = VerifyReport::default();
    verify_chains(&pool, &mut report).await.unwrap();
    rescore(&pool, &models, &RescoreRange::default(), &mut report).await.unwrap();
    println!(
        "verify: {} rows re-scored, {} identical, chains {:?}",
        report.rows_rescored, report.rows_identical, report.chain_failures
    );
    assert_eq!((report.rows_rescored, report.rows_identical), (4000, 4000), "{:?}", report.mismatches);
    assert!(report.passed(), "{report:?}");

    assert_eq!(
        worker.metrics().await.sum("credit_worker_model_changes_total", &[("action", "activate"), ("result", "ok")]),
        1.0
    );
    assert_eq!(
        worker.metrics().await.sum("credit_worker_model_changes_total", &[("action", "rollback"), ("result", "ok")]),
        1.0
    );
    assert_eq!(worker.metric("credit_worker_declines_without_reasons_total").await, 0.0);
    assert!(worker.terminate(Duration::from_secs(20)));
}

/// With credit-v2 as shadow, every decision is still credit-v1's (topic and audit), while the
/// comparison counts every decided event and reports agreement and per-group differences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_challenger_is_compared_but_never_acted_on() {
    let deployment = Deployment::create("shadow", 4).await;
    let root = models_root();
    let mut env = worker_env(root.path());
    env.push(("CREDIT_WORKER__MODEL__SHADOW_DIRECTORY".into(), root.path().join("credit-v2").display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;
    replay(&deployment.replay_options("shadow")).await.expect("replay");

    let pool = wait_for_rows(&deployment.database_url, 1000, Duration::from_secs(120)).await;
    let versions: Vec<(String, i64)> =
        sqlx::query_as("SELECT model_version, count(*) FROM decision_audit GROUP BY model_version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![("credit-v1".to_owned(), 1000)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker.metric("credit_worker_shadow_comparisons_total").await < 1000.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(worker.metric("credit_worker_shadow_comparisons_total").await, 1000.0);
    let (status, body) = admin(&worker, reqwest::Method::GET, "/admin/model", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let comparison = &body["shadow_comparison"];
    println!("shadow comparison: {comparison}");
    assert_eq!(comparison["events"], 1000);
    let agreement = comparison["agreement_rate"].as_f64().unwrap();
    assert!(agreement > 0.5 && agreement <= 1.0, "{agreement}");
    assert!(comparison["approval_rate_difference"]["age_band=<=25"].is_number(), "{comparison}");
    assert_eq!(body["models"]["shadow"]["version"], "credit-v2");
    let (status, body) = admin(&worker, reqwest::Method::DELETE, "/admin/model/shadow", Some(TOKEN), None).await;
    assert_eq!((status, &body["models"]["shadow"]), (200, &Value::Null));
    assert!(worker.terminate(Duration::from_secs(20)));
}

/// The drift window's score series count and the reported model version, from `/fairness`.
async fn reported(worker: &WorkerProcess) -> (u64, String) {
    let body: Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
    let score = body["drift"]["series"].as_array().and_then(|series| series.last()).cloned().unwrap_or_default();
    (score["window_count"].as_u64().unwrap_or(0), body["model_version"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `/fairness` reports `expected` (bounded), returning what it reported last.
async fn wait_reported(worker: &WorkerProcess, expected: (u64, &str)) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = reported(worker).await;
        if (now.0, now.1.as_str()) == expected || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Monitoring follows a hot swap: 300 decisions by credit-v1, then credit-v2 is activated and
/// decides 200. `/fairness` then reports credit-v2 with a drift window of its 200 decisions only
/// (compared with its own training histograms), the persisted drift counts are split 300 / 200
/// by model, and after a restart (credit-v1 active again, by configuration) the rebuilt window
/// holds credit-v1's 300.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_follows_the_active_model() {
    let deployment = Deployment::create("swapmonitor", 2).await;
    let root = models_root();
    let env = worker_env(root.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    replay(&ReplayOptions { count: Some(300), ..deployment.replay_options("v1") }).await.expect("replay");
    assert_eq!(wait_for_audit_rows(&pool, 300, Duration::from_secs(60)).await, 300);
    assert_eq!(wait_reported(&worker, (300, "credit-v1")).await, (300, "credit-v1".to_owned()));

    let body = json!({"version": "credit-v2"});
    let (status, body) = admin(&worker, reqwest::Method::POST, "/admin/model/activate", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200, "{body}");
    replay(&ReplayOptions { count: Some(200), ..deployment.replay_options("v2") }).await.expect("replay");
    assert_eq!(wait_for_audit_rows(&pool, 500, Duration::from_secs(60)).await, 500);
    let after_swap = wait_reported(&worker, (200, "credit-v2")).await;
    assert_eq!(after_swap, (200, "credit-v2".to_owned()), "the monitors kept the startup model's window");

    let persisted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.model_version, (SELECT sum(c) FROM monitor_drift m, unnest(m.counts) AS c \
                                  WHERE m.model_sha256 = p.model_sha256 AND m.series = (SELECT max(series) FROM monitor_drift))::int8 \
         FROM (SELECT DISTINCT model_version, model_sha256 FROM decision_policies) p ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(persisted, vec![("credit-v1".to_owned(), 300), ("credit-v2".to_owned(), 200)]);

    assert!(worker.terminate(Duration::from_secs(20)));
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(wait_reported(&worker, (300, "credit-v1")).await, (300, "credit-v1".to_owned()), "rebuilt window");
    assert!(worker.terminate(Duration::from_secs(20)));
}
