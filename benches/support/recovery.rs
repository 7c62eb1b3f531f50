//! The `recovery` scenario: kill -9 during a drain, restart at once, and time kill → the first
//! audit row the restarted worker commits. Static membership (`kafka.instance_id`), so the group
//! hands the partitions straight back; once per session timeout given, since Tansu's join time
//! follows it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::common::{self, Deployment, WorkerProcess};

/// One session timeout's kills.
#[derive(Debug, Serialize)]
pub struct RecoveryReport {
    pub session_timeout_ms: u64,
    pub kills: usize,
    /// Kill → first new audit row committed, per kill, in seconds.
    pub seconds: Vec<f64>,
    pub median_seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
}

/// Pre-loads `events`, then kills the worker `kills` times, evenly spread over the drain.
pub async fn recovery(events: usize, partitions: i32, kills: usize, session_timeout_ms: u64) -> RecoveryReport {
    let deployment = Deployment::create(&format!("bench-recovery-{session_timeout_ms}"), partitions).await;
    let mut replay = deployment.replay_options("bench-recovery");
    replay.count = Some(events);
    credit_devtools::replay::replay(&replay).await.expect("pre-loading the input topic");
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.expect("audit database");
    let timeout = session_timeout_ms.to_string();
    let env = [
        ("RUST_LOG", "warn"),
        ("CREDIT_WORKER__KAFKA__INSTANCE_ID", "bench"),
        ("CREDIT_WORKER__KAFKA__SESSION_TIMEOUT_MS", timeout.as_str()),
    ];
    let mut worker = WorkerProcess::start(&deployment, &env);
    let mut seconds = Vec::new();
    for kill in 1..=kills {
        let target = (events * kill / (kills + 1)) as i64;
        wait_until(&pool, |rows| rows >= target, &worker).await;
        worker.kill_9();
        let killed_at = Instant::now();
        let at_kill = common::audit_rows(&pool).await;
        worker = WorkerProcess::start(&deployment, &env);
        wait_until(&pool, |rows| rows > at_kill, &worker).await;
        seconds.push(killed_at.elapsed().as_secs_f64());
        eprintln!("   kill {kill}: first new audit row after {:.2} s", seconds[kill - 1]);
    }
    wait_until(&pool, |rows| rows >= events as i64, &worker).await;
    assert!(worker.terminate(Duration::from_secs(30)), "the worker did not stop cleanly");
    let (applications, rows): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT application_id), count(*) FROM decision_audit")
            .fetch_one(&pool)
            .await
            .expect("counting the audit rows");
    assert_eq!((applications, rows), (events as i64, events as i64), "one audit row per application");
    pool.close().await;
    deployment.delete_topics().await;
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    RecoveryReport {
        session_timeout_ms,
        kills,
        median_seconds: sorted[sorted.len() / 2],
        min_seconds: sorted[0],
        max_seconds: sorted[sorted.len() - 1],
        seconds,
    }
}

/// Polls the audit table every 10 ms until `done(rows)`; fails after 120 s with the worker's log.
async fn wait_until(pool: &sqlx::PgPool, done: impl Fn(i64) -> bool, worker: &WorkerProcess) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = common::audit_rows(pool).await;
        if done(rows) {
            return;
        }
        assert!(Instant::now() < deadline, "stuck at {rows} audit rows: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
