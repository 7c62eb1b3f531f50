//! Reproduction and tamper evidence against the local stack: the worker decides the data set,
//! then `credit-worker audit verify` (the binary) re-scores every row and checks the hash chains;
//! edits and deletions are reported; retention refuses less than 25 months and prunes a chain
//! prefix that still verifies.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use credit_worker::model::{ModelBundle, PROTECTED_ATTRIBUTES};
use credit_worker::replay::replay;

fn audit(args: &[&str], database_url: &str) -> (bool, String) {
    let output = Command::new(worker_binary())
        .current_dir(repo_root())
        .arg("audit")
        .args(args)
        .args(["--database-url", database_url])
        .output()
        .expect("running credit-worker audit");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// 1000 audit rows re-score 100% identically (probability bits, decision, reasons); every
/// decline has reasons and no reason names a protected attribute; an edited probability is
/// reported both as a broken chain and as a re-scoring mismatch, and verification passes again
/// once the value is restored; a pg_dump/pg_restore copy verifies the same; a purge shorter than 25 months is refused; a purge keeps the rest
/// verifiable; a deleted row is reported as missing.
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
    let (passed, report) = audit(&["verify", "--models-root", "models"], url);
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
    let (passed, report) = audit(&["verify", "--models-root", "models"], &restored);
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

    let (target, original): (uuid::Uuid, f64) = sqlx::query_as(
        "SELECT decision_id, probability_of_default FROM decision_audit ORDER BY chain_key, chain_seq OFFSET 100 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let set = |value: f64| {
        sqlx::query("UPDATE decision_audit SET probability_of_default = $1 WHERE decision_id = $2")
            .bind(value)
            .bind(target)
            .execute(&pool)
    };
    set(original + 1e-9).await.unwrap();
    let (passed, report) = audit(&["verify", "--models-root", "models"], url);
    assert!(!passed, "{report}");
    assert!(report.contains(&format!("(decision {target}) was altered after it was written")), "{report}");
    assert!(report.contains(&format!("decision {target}: probability")), "{report}");
    set(original).await.unwrap();
    assert!(audit(&["verify", "--models-root", "models"], url).0, "restored value verifies again");

    let (passed, report) = audit(&["purge", "--retention-months", "24"], url);
    assert!(!passed && report.contains("Regulation B"), "{report}");
    let median: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT processed_at FROM decision_audit ORDER BY processed_at OFFSET 500 LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let as_of = (median + chrono::Months::new(25)).to_rfc3339();
    let (passed, report) = audit(&["purge", "--as-of", &as_of], url);
    assert!(passed, "{report}");
    let kept = count().await;
    println!("{report}kept {kept} rows");
    assert!((1..1000).contains(&kept), "{kept}");
    let (passed, report) = audit(&["verify", "--models-root", "models"], url);
    assert!(passed, "pruned chains still verify: {report}");

    let (key, seq): (String, i64) = sqlx::query_as(
        "SELECT chain_key, chain_seq FROM decision_audit a WHERE EXISTS \
         (SELECT 1 FROM decision_audit b WHERE b.chain_key = a.chain_key AND b.chain_seq > a.chain_seq) \
         ORDER BY chain_key, chain_seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM decision_audit WHERE chain_key = $1 AND chain_seq = $2")
        .bind(&key)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    let (passed, report) = audit(&["verify", "--models-root", "models"], url);
    assert!(!passed, "{report}");
    assert!(report.contains(&format!("{key}: rows {seq}..{seq} are missing")), "{report}");
}
