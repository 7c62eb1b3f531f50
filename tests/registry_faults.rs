//! The schema registry failing in the ways a real one does, through an HTTP proxy in front of the
//! stand-in: only 404 with error code 40403 means an unknown schema; every other failure is
//! waited out (readiness down meanwhile) and never cached.

mod common;

use std::time::{Duration, Instant};

use common::http_fault::{Fault, HttpFaultProxy};
use common::*;
use credit_devtools::replay::{replay, ReplayOptions};

const GOOD: usize = 200;

/// One worker whose registry answers `fault` to every schema-by-id lookup until at least three
/// lookups were faulted (so the worker asked again: nothing was cached), then heals. Returns
/// (audit rows, dead letters by reason).
async fn lookups_failing_with(fault: Fault, name: &str) -> (i64, Vec<(String, f64)>) {
    let deployment = Deployment::create(name, 2).await;
    let proxy = HttpFaultProxy::start("127.0.0.1:18081", "/schemas/ids/", fault).await;
    let registry = format!("http://127.0.0.1:{}", proxy.port);
    let env = [
        ("CREDIT_WORKER__SCHEMA_REGISTRY__URL", registry.as_str()),
        ("CREDIT_WORKER__SCHEMA_REGISTRY__TIMEOUT_MS", "1000"),
        ("CREDIT_WORKER__PIPELINE__RETRY_MAX_BACKOFF_MS", "500"),
    ];
    let mut worker = WorkerProcess::start(&deployment, &env);
    worker.wait_ready(Duration::from_secs(60)).await;
    // Three malformed records come last: bad magic, a short header and an unknown schema id.
    let options = ReplayOptions { count: Some(GOOD), malformed: 3, ..deployment.replay_options(name) };
    replay(&options).await.expect("replay");
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.faulted() < 3 {
        assert!(Instant::now() < deadline, "{fault:?}: the worker stopped asking the registry: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = reqwest::get(worker.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503, "{fault:?}: not ready while the registry fails");
    proxy.heal();
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let rows = wait_for_audit_rows(&pool, GOOD as i64, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.metric("credit_worker_dead_letters_total").await < 3.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = worker.metrics().await;
    let mut dead: Vec<(String, f64)> = metrics
        .samples("credit_worker_dead_letters_total", &[])
        .filter(|sample| sample.value > 0.0)
        .map(|sample| (sample.label("reason").unwrap_or("").to_owned(), sample.value))
        .collect();
    dead.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(worker.terminate(Duration::from_secs(20)));
    (rows, dead)
}

/// 500, 401, 429 and a registry slower than the worker's timeout: every good record is decided
/// once the registry heals, and only the malformed records are dead-lettered, the unknown id
/// (a real 404 / 40403) as `unknown_schema`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_failures_dead_letter_no_good_record() {
    let faults = [
        (Fault::Status(500), "sr500"),
        (Fault::Status(401), "sr401"),
        (Fault::Status(429), "sr429"),
        (Fault::Slow(Duration::from_millis(1500)), "srslow"),
    ];
    let runs = faults.map(|(fault, name)| async move { (fault, lookups_failing_with(fault, name).await) });
    let expected = vec![("bad_framing".to_owned(), 2.0), ("unknown_schema".to_owned(), 1.0)];
    for (fault, (rows, dead)) in futures::future::join_all(runs).await {
        println!("{fault:?}: {rows} audit rows, dead letters {dead:?}");
        assert_eq!((rows, &dead), (GOOD as i64, &expected), "{fault:?}");
    }
}
