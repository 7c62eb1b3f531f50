//! Reproduction and tamper evidence against the local stack: the worker decides the data set,
//! then `credit-worker audit verify` (the binary) re-scores every row and checks the hash chains;
//! edits and deletions are reported; retention refuses less than 25 months and drops monthly
//! partitions, leaving chains that still verify.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use credit_devtools::replay::replay;
use credit_worker::domain::PROTECTED_ATTRIBUTES;
use credit_worker::model::ModelBundle;

/// 1000 audit rows re-score 100% identically (probability bits, decision, reasons); every
/// decline has reasons and no reason names a protected attribute; an edited probability is
/// reported both as a broken chain and as a re-scoring mismatch, and verification passes again
/// once the value is restored; a pg_dump/pg_restore copy verifies the same; a purge shorter than
/// 25 months is refused; dropping a month keeps the chains verifiable, also with rows written
/// after it; a deleted row is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_reproduce_and_tampering_is_detected() {
    let deployment = Deployment::create("verify", 4).await;
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    replay(&deployment.replay_options("verify")).await.expect("replay");
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let count = || audit_rows(&pool);
    wait_for_audit_rows(&pool, 1000, Duration::from_secs(120)).await;
    assert_eq!(count().await, 1000, "worker log: {}", worker.log_text());
    assert_eq!(worker.metric("credit_worker_declines_without_reasons_total").await, 0.0);
    assert!(worker.terminate(Duration::from_secs(20)));

    let url = deployment.database_url.as_str();
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], url);
    println!("{report}");
    assert!(passed, "{report}");
    assert!(report.contains("1000 rows (credit-v1 1000): 1000 identical (100.00%), 0 mismatches"), "{report}");
    assert!(report.contains("1000 rows linked, 0 breaks, 0 unchained rows"), "{report}");

    // The runbook's backup and restore: pg_dump (custom format), pg_restore into an empty
    // database, and the restored table verifies and re-scores the same.
    let dump = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("pg_dump").args(["-Fc", "-f", dump.path().to_str().unwrap(), url]).status().unwrap();
    assert!(status.success(), "pg_dump");
    let restored = create_database(&unique("restored").replace('-', "_")).await;
    let status = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "-d", &restored, dump.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "pg_restore");
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], &restored);
    assert!(passed && report.contains("1000 identical (100.00%)"), "restored copy: {report}");

    let declines_without: i64 =
        sqlx::query_scalar("SELECT count(*) FROM decision_audit WHERE decision = 'decline' AND reasons = '[]'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(declines_without, 0);
    let features: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT r->>'feature' FROM decision_audit, jsonb_array_elements(reasons) AS r ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let card = ModelBundle::load(&model_dir()).unwrap().feature_names();
    assert!(!features.is_empty());
    assert!(features.iter().all(|feature| card.contains(feature) && !PROTECTED_ATTRIBUTES.contains(&feature.as_str())));
    let samples: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT application_id, reasons FROM decision_audit WHERE decision = 'decline' ORDER BY application_id LIMIT 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (application, reasons) in &samples {
        println!("decline {application}: {reasons}");
    }

    // Tampering: a probability edited by 1e-9 breaks its row's hash and no longer re-scores.
    let (source, seq, offset, original): (i32, i64, i64, f64) = sqlx::query_as(
        "SELECT source_id, chain_seq, source_offset, probability_of_default FROM decisions ORDER BY source_id, chain_seq \
         OFFSET 100 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (topic, partition): (String, i32) =
        sqlx::query_as("SELECT topic, partition FROM source_partitions WHERE source_id = $1")
            .bind(source)
            .fetch_one(&pool)
            .await
            .unwrap();
    let set = |value: f64| {
        sqlx::query("UPDATE decisions SET probability_of_default = $1 WHERE source_id = $2 AND chain_seq = $3")
            .bind(value)
            .bind(source)
            .bind(seq)
            .execute(&pool)
    };
    set(original + 1e-9).await.unwrap();
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], url);
    assert!(!passed, "{report}");
    let chain = format!("{topic}/{partition}");
    let altered = format!("{chain}: row {seq} (offset {offset}) does not match its hash: altered after it was written");
    assert!(report.contains(&altered), "{report}");
    assert!(report.contains(&format!("{chain}@{offset}: probability")), "{report}");
    set(original).await.unwrap();
    assert!(audit_command(&["verify", "--models-root", "models"], url).0, "restored value verifies again");

    // Retention: less than 25 months is refused; a cutoff inside this month's partition keeps
    // it; a cutoff past it drops the partition, anchors every chain at its last row, and a
    // worker started afterwards chains its new rows from the anchors: all verifies.
    let (passed, report) = audit_command(&["purge", "--retention-months", "24"], url);
    assert!(!passed && report.contains("Regulation B"), "{report}");
    let latest: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(processed_at) FROM decisions").fetch_one(&pool).await.unwrap();
    let as_of = (latest + chrono::Months::new(25)).to_rfc3339();
    let (passed, report) = audit_command(&["purge", "--as-of", &as_of], url);
    assert!(passed, "{report}");
    assert_eq!(count().await, 1000, "the month is not over: {report}");
    let as_of = (latest + chrono::Months::new(27)).to_rfc3339();
    let (passed, report) = audit_command(&["purge", "--as-of", &as_of], url);
    println!("{report}");
    assert!(passed && report.contains("1 partitions dropped"), "{report}");
    assert_eq!(count().await, 0);
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM decided_applications WHERE source_id IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claims, 0, "the dropped partition's claims are deleted with it");
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], url);
    assert!(passed, "anchored chains verify: {report}");
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    replay(&deployment.replay_options("after-purge")).await.expect("replay");
    wait_for_audit_rows(&pool, 1000, Duration::from_secs(120)).await;
    assert!(worker.terminate(Duration::from_secs(20)));
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], url);
    assert!(
        passed && report.contains("1000 rows linked, 0 breaks"),
        "rows after the purge chain from the anchors: {report}"
    );

    // A deleted row is reported missing.
    let seq: i64 = sqlx::query_scalar("SELECT min(chain_seq) + 10 FROM decisions WHERE source_id = $1")
        .bind(source)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM decisions WHERE source_id = $1 AND chain_seq = $2")
        .bind(source)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], url);
    assert!(!passed, "{report}");
    assert!(report.contains(&format!("{chain}: rows {seq}..{seq} are missing")), "{report}");
}
