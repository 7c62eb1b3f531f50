//! End to end on the local stack: the worker as a separate process, the replayer producing
//! the whole data set plus malformed records, assertions on topics, the audit table and the
//! consumer group's committed offsets.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use credit_devtools::replay::{replay, ReplayOptions, MALFORMED_KINDS};
use credit_worker::domain::LoanDecision;
use credit_worker::model::ModelBundle;
use sqlx::Row;

const PARTITIONS: i32 = 4;

fn replay_options(deployment: &Deployment, prefix: &str, malformed: usize) -> ReplayOptions {
    ReplayOptions { malformed, ..deployment.replay_options(prefix) }
}

/// All 1000 applications are decided exactly once on the topic and in the audit table, each
/// malformed record reaches the dead-letter topic with its reason, offsets are committed, and a
/// restarted worker processes nothing twice. The worker's probabilities equal LightGBM's own
/// batch prediction from the same model file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_data_set_is_decided_once_audited_and_committed() {
    let deployment = Deployment::create("e2e", PARTITIONS).await;
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;

    let malformed = MALFORMED_KINDS.len();
    let report = replay(&replay_options(&deployment, "e2e", malformed)).await.expect("replay");
    assert_eq!(report.valid, 1000);

    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let announced = announcements_match_audit(&pool, &deployment.decisions_topic, 1000).await;
    assert_eq!((announced.committed, announced.uncommitted), (1000, 1000), "announced once: {announced:?}");
    let decisions = read_topic(&deployment.decisions_topic, 1000, Duration::from_secs(120));
    let dead_letters = read_topic(&deployment.dead_letter_topic, malformed, Duration::from_secs(30));
    assert_eq!(decisions.len(), 1000, "decisions on the topic; worker log: {}", worker.log_text());
    assert_eq!(dead_letters.len(), malformed);

    let decided: Vec<LoanDecision> =
        decisions.iter().map(|record| decode_decision(record.value.as_ref().unwrap())).collect();
    let ids: HashSet<&str> = decided.iter().map(|decision| decision.application_id.as_str()).collect();
    let expected_ids: HashSet<String> = (1..=1000).map(|index| format!("e2e-{index:08}")).collect();
    assert_eq!(ids, expected_ids.iter().map(String::as_str).collect());
    for (record, decision) in decisions.iter().zip(&decided) {
        assert_eq!(record.key.as_deref(), Some(decision.application_id.as_str()), "keyed by application id");
    }

    let expected_reasons: HashMap<String, &str> = MALFORMED_KINDS
        .iter()
        .enumerate()
        .map(|(index, (kind, reason))| (format!("e2e-bad-{:05}-{kind}", index + 1), *reason))
        .collect();
    for record in &dead_letters {
        let key = record.key.clone().expect("dead letters keep the original key");
        assert_eq!(
            record.headers.get("dlq.error.kind").map(String::as_str),
            expected_reasons.get(&key).copied(),
            "{key}"
        );
        assert!(!record.headers["dlq.error.message"].is_empty());
        assert_eq!(record.headers["dlq.source.topic"], deployment.input_topic);
    }

    let count = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM decision_audit").fetch_one(&pool).await.unwrap()
    };
    // Not a race: a decision is announced only after its audit row committed.
    assert_eq!(count(pool.clone()).await, 1000);

    // Probabilities equal LightGBM's batch prediction (PredictForMat) on the audited inputs.
    let bundle = ModelBundle::load(&model_dir()).unwrap();
    let names = bundle.feature_names();
    let rows = sqlx::query("SELECT application_id, model_inputs, probability_of_default, model_sha256 FROM decision_audit ORDER BY application_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut matrix = Vec::new();
    for row in &rows {
        let inputs: serde_json::Value = row.get(1);
        matrix.extend(names.iter().map(|name| inputs[name].as_f64().expect("numeric input")));
        assert_eq!(row.get::<String, _>(3), bundle.card.model_sha256);
    }
    let booster = lightgbm3::Booster::from_file(model_dir().join("model.txt").to_str().unwrap()).unwrap();
    let expected = booster.predict_with_params(&matrix, names.len() as i32, true, "num_threads=1").unwrap();
    for (row, expected) in rows.iter().zip(&expected) {
        let audited: f64 = row.get(2);
        assert_eq!(audited.to_bits(), expected.to_bits(), "{}", row.get::<String, _>(0));
    }

    // Offsets: every input record is committed once the worker stops.
    assert!(worker.terminate(Duration::from_secs(30)), "clean exit on SIGTERM");
    // (Expected offsets come from the records themselves: Tansu's ListOffsets answers are not
    // reliable high watermarks.)
    let inputs = read_topic(&deployment.input_topic, 1000 + malformed, Duration::from_secs(30));
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &inputs {
        let end = ends.entry(record.partition).or_default();
        *end = (*end).max(record.offset + 1);
    }
    let committed: BTreeMap<i32, i64> =
        committed_offsets(&deployment.group_id, &deployment.input_topic, PARTITIONS).into_iter().collect();
    assert_eq!(committed, ends);

    // Restart: the group resumes at the committed offsets; nothing is consumed or written again.
    // 20 sentinel applications sent after the restart, on every partition, are the condition
    // waited for: once they are decided, everything before them was passed over.
    let mut restarted = WorkerProcess::start(&deployment, &[]);
    restarted.wait_ready(Duration::from_secs(60)).await;
    let sentinels = ReplayOptions { count: Some(20), ..replay_options(&deployment, "sentinel", 0) };
    replay(&sentinels).await.expect("replay");
    assert_eq!(read_topic(&deployment.decisions_topic, 1020, Duration::from_secs(60)).len(), 1020);
    assert_eq!(wait_for_audit_rows(&pool, 1020, Duration::from_secs(10)).await, 1020);
    assert_eq!(restarted.metric("credit_worker_events_consumed_total").await, 20.0, "only the sentinels");
    assert_eq!(count(pool.clone()).await, 1020);
    assert!(restarted.terminate(Duration::from_secs(30)));
}

/// Re-reading an audited topic with a new consumer group changes nothing: every record is
/// below its partition's announced offset, so nothing is scored, audited, counted or announced
/// again; the audit table, the persisted monitor counts and the decisions topic (read
/// committed) stay as they were, and the new group's offsets cover the topic. The second worker
/// takes 25-record batches, so it commits offsets for many batches that announce nothing (Tansu
/// once committed only the first of those when they went out as offsets-only transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rereading_the_topic_with_a_new_group_changes_nothing() {
    let deployment = Deployment::create("idem", 2).await;
    let options = ReplayOptions { count: Some(200), ..replay_options(&deployment, "idem", 0) };
    replay(&options).await.expect("replay");
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let snapshot = || async {
        let rows: (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT application_id) FROM decision_audit")
            .fetch_one(&pool)
            .await
            .unwrap();
        let counts: Vec<(i32, i16, String, Vec<i64>)> =
            sqlx::query_as("SELECT source_id, attribute, grp, ARRAY[approved, reviewed, declined] FROM monitor_fairness_totals ORDER BY 1, 2, 3")
                .fetch_all(&pool)
                .await
                .unwrap();
        (rows, counts)
    };

    let mut first = WorkerProcess::start(&deployment, &[]);
    first.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(read_topic(&deployment.decisions_topic, 200, Duration::from_secs(60)).len(), 200);
    wait_for_committed(&first, &deployment.group_id, &deployment.input_topic, 200).await;
    assert!(first.terminate(Duration::from_secs(30)));
    let before = snapshot().await;
    assert_eq!(before.0, (200, 200));

    let other_group = Deployment { group_id: unique("idem-second-group"), ..deployment.clone() };
    let mut second = WorkerProcess::start(&other_group, &[("CREDIT_WORKER__PIPELINE__BATCH_MAX_RECORDS", "25")]);
    second.wait_ready(Duration::from_secs(60)).await;
    wait_for_committed(&second, &other_group.group_id, &deployment.input_topic, 200).await;
    assert_eq!(second.metric("credit_worker_events_consumed_total").await, 200.0);
    assert_eq!(second.metric("credit_worker_audit_rows_written_total").await, 0.0);
    assert_eq!(second.metric("credit_worker_decisions_announced_again_total").await, 0.0);
    assert_eq!(snapshot().await, before, "audit rows and monitor counts unchanged");
    let report: serde_json::Value = reqwest::get(second.url("/fairness")).await.unwrap().json().await.unwrap();
    let all_time: u64 = report["fairness"]["all_time"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["decisions"].as_u64().unwrap())
        .sum();
    assert_eq!(all_time, 200, "the new group's monitors hold the 200 decisions once: {report}");
    assert!(second.terminate(Duration::from_secs(30)));
    assert_eq!(
        read_topic(&deployment.decisions_topic, 201, Duration::from_secs(5)).len(),
        200,
        "nothing announced again"
    );
}

/// Waits until `group`'s committed offsets on `topic` add up to `records`; on timeout, fails
/// with the offsets per partition and the end of `worker`'s log.
async fn wait_for_committed(worker: &WorkerProcess, group: &str, topic: &str, records: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed = committed_offsets(group, topic, 2);
        if committed.values().sum::<i64>() >= records {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let log = worker.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            panic!("{group} committed {committed:?}, not {records} records; worker log ends:\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
