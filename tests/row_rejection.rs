//! A record PostgreSQL refuses never stalls the stream: an application id holding a NUL byte
//! (valid Avro, but PostgreSQL text cannot store it) is dead-lettered with the database's reason,
//! the rest of its batch is audited and announced, and no decision goes out without its row.

mod common;

use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};

/// 100 applications, one whose id holds a NUL byte, 100 more (each replay lands in the batches
/// around it): 200 audit rows, every decision announced equals its row, one dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_dead_lettered_and_the_rest_written() {
    let deployment = Deployment::create("rowreject", 2).await;
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    for (prefix, count) in [("before", 100), ("nul\0byte", 1), ("after", 100)] {
        replay(&ReplayOptions { count: Some(count), ..deployment.replay_options(prefix) }).await.expect("replay");
    }
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let rows = wait_for_audit_rows(&pool, 200, Duration::from_secs(60)).await;
    assert_eq!(rows, 200, "the refused row stalls its partition; log: {}", worker.log_text());
    let reason = [("reason", "rejected_by_database")];
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.metrics().await.sum("credit_worker_dead_letters_total", &reason) < 1.0 {
        assert!(Instant::now() < deadline, "no rejected_by_database dead letter: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let announcements = announcements_match_audit(&pool, &deployment.decisions_topic, 200).await;
    assert_eq!(announcements.committed, 200, "one announcement per audited application, none for the refused one");
    let dead = read_topic(&deployment.dead_letter_topic, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers.get("dlq.error.kind").map(String::as_str), Some("rejected_by_database"));
    assert!(!worker.log_text().contains("nul\0byte"), "the log holds no application id");
    assert!(worker.terminate(Duration::from_secs(30)));
}
