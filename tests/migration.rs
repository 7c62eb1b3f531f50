//! Upgrading a database the worker wrote before the lean audit table (migration
//! 20261123000005): the old rows stay, keep verifying, and still decide their applications once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};
use sqlx::Row;

const LEGACY_ROWS: i64 = 40;
const RESENT: usize = 10;
const NEW: usize = 20;

/// Loads `tests/fixtures/legacy_audit.sql` (40 decisions audited by the worker at 69c508c), then
/// lets today's worker migrate it and consume 10 of those applications again plus 20 new ones.
/// Proves: the 10 are not decided again but announced exactly as stored (same decision id,
/// outcome, probability and reasons), the 20 are decided, and `audit verify` passes over the
/// legacy chains and the new ones together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_audit_table_migrates_and_its_applications_stay_decided_once() {
    let deployment = Deployment::create("migration", 2).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let fixture = std::fs::read_to_string(repo_root().join("tests/fixtures/legacy_audit.sql")).unwrap();
    sqlx::raw_sql(&fixture).execute(&pool).await.expect("loading the legacy fixture");
    let legacy: HashMap<String, (String, String, f64)> =
        sqlx::query("SELECT application_id, decision_id::text, decision, probability_of_default FROM decision_audit")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
            .collect();
    assert_eq!(legacy.len() as i64, LEGACY_ROWS);

    replay(&ReplayOptions { count: Some(RESENT), ..deployment.replay_options("legacy") }).await.unwrap();
    replay(&ReplayOptions { count: Some(NEW), ..deployment.replay_options("fresh") }).await.unwrap();
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let rows = wait_for_audit_rows(&pool, LEGACY_ROWS + NEW as i64, Duration::from_secs(60)).await;
    let records = read_topic(&deployment.decisions_topic, RESENT + NEW, Duration::from_secs(60));
    assert!(worker.terminate(Duration::from_secs(30)));

    let (old, new): (i64, i64) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE legacy), count(*) FILTER (WHERE NOT legacy) FROM decision_audit")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (rows, old, new),
        (LEGACY_ROWS + NEW as i64, LEGACY_ROWS, NEW as i64),
        "no legacy application decided again"
    );
    assert_eq!(records.len(), RESENT + NEW, "every record announced once");
    let mut resent = 0;
    for record in &records {
        let decision = decode_decision(record.value.as_deref().unwrap());
        let Some((decision_id, outcome, probability)) = legacy.get(&decision.application_id) else {
            assert!(decision.application_id.starts_with("fresh-"), "{decision:?}");
            continue;
        };
        resent += 1;
        assert_eq!(&decision.decision_id, decision_id, "{decision:?}");
        assert_eq!(&format!("{:?}", decision.decision).to_lowercase(), outcome, "{decision:?}");
        assert_eq!(decision.probability_of_default, *probability, "{decision:?}");
        let reasons: serde_json::Value =
            sqlx::query_scalar("SELECT reasons FROM decision_audit_legacy WHERE application_id = $1")
                .bind(&decision.application_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(serde_json::to_value(&decision.reasons).unwrap(), reasons, "{decision:?}");
    }
    assert_eq!(resent, RESENT);

    let text = assert_audit_verifies(&deployment.database_url);
    assert!(text.contains(&format!("{}", LEGACY_ROWS + NEW as i64)), "verify covers every row: {text}");
}
