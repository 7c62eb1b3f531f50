//! The resend rule: an application id that arrives again at a new offset is not decided again.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};

/// 200 applications are decided; then the same 200 ids arrive again at new offsets, mixed in
/// the same batches with 100 new ids. Proves: the 100 new ones are audited and counted, the
/// 200 resends get their stored decision announced again byte for byte, and nothing is audited
/// or counted twice (the claim is taken optimistically, and a batch holding a resend falls back
/// to looking its applications up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_application_gets_its_stored_decision() {
    let deployment = Deployment::create("resend", 2).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    replay(&ReplayOptions { count: Some(200), ..deployment.replay_options("resend") }).await.expect("replay");
    assert_eq!(wait_for_audit_rows(&pool, 200, Duration::from_secs(60)).await, 200);
    assert_eq!(read_topic(&deployment.decisions_topic, 200, Duration::from_secs(60)).len(), 200);

    replay(&ReplayOptions { count: Some(300), ..deployment.replay_options("resend") }).await.expect("replay");
    let announced = read_topic(&deployment.decisions_topic, 500, Duration::from_secs(60));
    assert_eq!(announced.len(), 500, "200 first, 200 again, 100 new");
    assert_eq!(wait_for_audit_rows(&pool, 300, Duration::from_secs(10)).await, 300);
    let mut by_id: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for record in announced {
        by_id.entry(record.key.expect("keyed")).or_default().push(record.value.expect("value"));
    }
    assert_eq!(by_id.len(), 300);
    for (id, values) in &by_id {
        let index: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let expected = if index <= 200 { 2 } else { 1 };
        assert_eq!(values.len(), expected, "{id} announced {} times", values.len());
        assert!(values.iter().all(|value| value == &values[0]), "{id} announced again differently");
    }
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT application_id) FROM decision_audit").fetch_one(&pool).await.unwrap();
    assert_eq!(distinct, 300);
    let counted: i64 = sqlx::query_scalar(
        "SELECT sum(approved + reviewed + declined)::int8 FROM monitor_fairness_totals WHERE attribute = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counted, 300, "the monitors count each application once");
    assert_eq!(worker.metric("credit_worker_decisions_announced_again_total").await, 200.0);
    assert_eq!(worker.metric("credit_worker_audit_rows_written_total").await, 300.0);
    assert!(worker.terminate(Duration::from_secs(30)));
    assert_audit_verifies(&deployment.database_url);
}
