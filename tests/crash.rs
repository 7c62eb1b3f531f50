//! The crash test of the "decided once" promise, at full speed with the release worker: 200 000
//! applications on 4 partitions, produced in chunks that keep the topic a little ahead of the next
//! kill (so the stream outlasts the last kill, whichever replica drains it); the worker is killed
//! with SIGKILL 10 times, at seeded random points spread over the run, and restarted each time
//! (same instance: static membership, same transactional id);
//! a second replica joins after the 4th restart and leaves (SIGTERM) after the 7th; credit-v2 is
//! activated after the 2nd restart (later restarts come back with credit-v1 from the config).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};
use rand::{Rng, SeedableRng};

const EVENTS: usize = 200_000;
const KILLS: usize = 10;
const TOKEN: &str = "crash-test-admin-token-0123456789";

async fn activate(worker: &WorkerProcess, version: &str) {
    let response = reqwest::Client::new()
        .post(worker.url("/admin/model/activate"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "version": version }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
}

const JSON_LOGS: (&str, &str) = ("CREDIT_WORKER__LOGGING__FORMAT", "json");

/// The producer run a worker logged ("transactional producer ready").
fn producer_run(worker: &WorkerProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = worker.log_text().lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(line["fields"]["run"].as_str()?.to_owned())
        });
        if let Some(run) = run {
            return run;
        }
        assert!(Instant::now() < deadline, "no producer run logged: {}", worker.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a `read_committed` reader sees, on Tansu and as Apache Kafka would show it:
/// - the only announcements repeated are whole transactions, each the last one of a killed
///   producer run (the transaction it left open: Apache Kafka aborts it when the restarted
///   instance initialises the same transactional id; Tansu neither aborts nor hides it);
/// - without those, 0 duplicates;
/// - no run that started after a kill announced a record below the offsets the group had
///   committed at the kill: a committed transaction's records are never announced again.
fn check_transactions(announced: &Announcements, killed_runs: &[(String, HashMap<i32, i64>)], later: &[Vec<String>]) {
    let (whole, partial) = announced.repeated_transactions();
    let last: HashMap<&str, u64> = announced.records.iter().fold(HashMap::new(), |mut last, record| {
        let (run, number) = record.run_and_number();
        let entry = last.entry(run).or_insert(0);
        *entry = (*entry).max(number);
        last
    });
    println!(
        "decisions on the topic: {} for {} applications ({} announced twice: Tansu shows the transactions killed \
         workers left open); {} such transactions {whole:?}; without them, {} duplicates",
        announced.committed,
        announced.applications,
        announced.duplicates(),
        whole.len(),
        announced.duplicates_without(&whole)
    );
    assert!(partial.is_empty(), "announced again outside a whole transaction: {partial:?}");
    for transaction in &whole {
        let (run, number) = transaction.split_once(':').unwrap();
        let number: u64 = number.parse().unwrap();
        assert!(killed_runs.iter().any(|(killed, _)| killed == run), "{transaction}: its producer was not killed");
        assert_eq!(number, last[run], "{transaction} is not the last transaction of its run");
    }
    assert_eq!(announced.duplicates_without(&whole), 0);
    for ((killed, committed), runs) in killed_runs.iter().zip(later) {
        for record in announced.records.iter().filter(|record| runs.iter().any(|run| run == record.run_and_number().0))
        {
            let floor = committed.get(&record.source_partition).copied().unwrap_or(0);
            assert!(
                record.source_offset >= floor,
                "{record:?} announced again after {killed} was killed with offset {floor} committed"
            );
        }
    }
}

/// Decisions audited so far (the chains' lengths: cheaper than counting rows).
async fn decided(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(chain_last_seq), 0)::int8 FROM source_partitions")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// "median (min - max) s, n runs" of `values`.
fn spread(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "median {:.2} s (min {:.2}, max {:.2}; {} restarts: {values:.2?})",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        values.len()
    )
}

/// A started worker's log, in seconds: from its first line to "subscribed", and from there to
/// its first partitions claimed.
fn startup(worker: &WorkerProcess) -> (f64, f64) {
    let at = |message: &str| {
        worker.log_text().lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            let matches = line["fields"]["message"].as_str()?.starts_with(message);
            let at = chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str()?).ok()?;
            matches.then_some(at)
        })
    };
    let (first, subscribed, claimed) = (at("configuration loaded"), at("subscribed"), at("partitions claimed"));
    type At = Option<chrono::DateTime<chrono::FixedOffset>>;
    let seconds = |from: At, to: At| match (from, to) {
        (Some(from), Some(to)) => (to - from).num_milliseconds() as f64 / 1e3,
        _ => f64::NAN,
    };
    (seconds(first, subscribed), seconds(subscribed, claimed))
}

/// Events held back from the topic beyond the next kill's target.
const STREAM_LEAD: usize = EVENTS / 40;

/// The input stream, produced in chunks (each with its own application id prefix) as the test
/// goes, so it outlasts the last kill whichever replica drains it.
struct Stream<'a> {
    deployment: &'a Deployment,
    produced: usize,
    chunks: usize,
}

impl Stream<'_> {
    /// Produces events until the topic holds `level` of them.
    async fn top_up(&mut self, level: usize) {
        if level <= self.produced {
            return;
        }
        self.chunks += 1;
        let prefix = format!("crash-{}", self.chunks);
        let chunk = ReplayOptions { count: Some(level - self.produced), ..self.deployment.replay_options(&prefix) };
        replay(&chunk).await.expect("producing applications");
        self.produced = level;
    }
}

/// Seconds from `killed_at` until the restarted worker has claimed the partitions the group gave it.
async fn partitions_claimed(worker: &WorkerProcess, killed_at: Instant) -> f64 {
    let deadline = killed_at + Duration::from_secs(60);
    while startup(worker).1.is_nan() {
        assert!(Instant::now() < deadline, "no partitions claimed after the restart: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed_at.elapsed().as_secs_f64()
}

/// Seconds from `killed_at` until the restarted worker has made a decision of its own.
async fn first_decision(worker: &WorkerProcess, killed_at: Instant) -> f64 {
    let deadline = killed_at + Duration::from_secs(60);
    loop {
        let decided = match credit_devtools::scrape::Exposition::fetch(&worker.url("/metrics")).await {
            Ok(metrics) => metrics.sum("credit_worker_decisions_total", &[]),
            Err(_) => 0.0,
        };
        if decided > 0.0 {
            return killed_at.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "no decision after the restart: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts, after the storm: 0 applications lost, 0 duplicate audit rows, every application's
/// decision announced and every announcement (first or again) equal to its audit row, duplicates
/// only from killed transactions (Tansu does not abort them; Apache Kafka would show none), the
/// chains verify and re-score, and the fairness counts the monitors hold equal the audit table.
/// Prints the recovery time of every restart (kill to the restarted worker's first decision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_a_second_replica_and_a_model_swap_decide_every_application_once() {
    let binary = release_worker_binary();
    let deployment = Deployment::create("crash", 4).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let mut stream = Stream { deployment: &deployment, produced: 0, chunks: 0 };
    let primary = [("CREDIT_WORKER_ADMIN_TOKEN", TOKEN), ("CREDIT_WORKER__KAFKA__INSTANCE_ID", "primary"), JSON_LOGS];
    // The second replica is a dynamic member: it leaves for good. (Tansu stalls a group's
    // rebalance while a static member is away; Apache Kafka expires it after the session timeout.)
    let secondary = [("CREDIT_WORKER__KAFKA__INSTANCE_ID", ""), JSON_LOGS];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261123);
    // Kill k once about k/(KILLS + 2) of the applications are decided (± 2%), then 0-100 ms later.
    let spacing = EVENTS as i64 / (KILLS as i64 + 2);
    let targets: Vec<i64> = (1..=KILLS as i64)
        .map(|kill| kill * spacing + rng.gen_range(-(EVENTS as i64) / 50..EVENTS as i64 / 50))
        .collect();
    // The topic is kept STREAM_LEAD events ahead of the next kill's target: after a kill the
    // second replica can drain only that much before the restarted worker has its partitions.
    let level = |kill: usize| targets.get(kill).map_or(EVENTS, |target| *target as usize + STREAM_LEAD);
    stream.top_up(level(0)).await;
    let (mut second, mut recoveries, mut startups, mut kills) = (None, Vec::new(), Vec::new(), Vec::new());
    let mut claims = Vec::new();
    // (producer run, offsets the group had committed once it was killed) of each killed process,
    // and the runs that started after it.
    let mut killed_runs: Vec<(String, HashMap<i32, i64>)> = Vec::new();
    let mut later_runs: Vec<Vec<String>> = Vec::new();
    let mut worker = WorkerProcess::start_binary(&binary, &deployment, &primary);
    worker.wait_ready(Duration::from_secs(60)).await;
    for (kill, target) in (1..=KILLS).zip(targets.clone()) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while decided(&pool).await < target {
            assert!(Instant::now() < deadline, "no progress before kill {kill}: {}", worker.log_text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
        let run = producer_run(&worker);
        worker.kill_9();
        let killed_at = Instant::now();
        let rows = decided(&pool).await;
        killed_runs.push((run, committed_offsets(&deployment.group_id, &deployment.input_topic, 4)));
        later_runs.push(Vec::new());
        kills.push(rows);
        assert!(rows < EVENTS as i64, "kill {kill} came after the end ({rows} rows)");
        worker = WorkerProcess::start_binary(&binary, &deployment, &primary);
        claims.push(partitions_claimed(&worker, killed_at).await);
        if kill == 2 {
            // Before the topic grows: the events added next can only be decided by credit-v2.
            // (Activated after the top-up, a fast worker had decided them all with credit-v1.)
            worker.wait_ready(Duration::from_secs(30)).await;
            activate(&worker, "credit-v2").await;
        }
        stream.top_up(level(kill)).await;
        recoveries.push(first_decision(&worker, killed_at).await);
        startups.push(startup(&worker));
        let run = producer_run(&worker);
        later_runs.iter_mut().for_each(|runs| runs.push(run.clone()));
        if kill == 4 {
            let mut joining = WorkerProcess::start_binary(&binary, &deployment, &secondary);
            joining.wait_ready(Duration::from_secs(60)).await;
            let run = producer_run(&joining);
            later_runs.iter_mut().skip(3).for_each(|runs| runs.push(run.clone()));
            second = Some(joining);
        }
        if kill == 7 {
            assert!(second.take().unwrap().terminate(Duration::from_secs(30)), "the second replica leaves cleanly");
        }
    }
    worker.wait_ready(Duration::from_secs(60)).await;
    let rows = wait_for_audit_rows(&pool, EVENTS as i64, Duration::from_secs(180)).await;
    let (applications, total): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT application_id), count(*) FROM decision_audit")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (own, join): (Vec<f64>, Vec<f64>) = startups.into_iter().unzip();
    println!("audit rows at each kill: {kills:?}; final {rows}");
    println!("recovery, kill -> partitions claimed by the restarted worker: {}", spread(&claims));
    println!("recovery, kill -> first decision of the restarted worker: {}", spread(&recoveries));
    println!("  of which process start -> subscribed: {}", spread(&own));
    println!("  of which subscribed -> partitions assigned and claimed (the group join): {}", spread(&join));
    assert_eq!((applications, total), (EVENTS as i64, EVENTS as i64), "0 lost, 0 duplicate audit rows");
    let models: Vec<(String, i64)> =
        sqlx::query_as("SELECT model_version, count(*) FROM decision_audit GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    println!("decisions per model: {models:?}");
    assert_eq!(models.len(), 2, "credit-v2 decided the records after its activation: {models:?}");

    let announced = announcements_match_audit(&pool, &deployment.decisions_topic, EVENTS).await;
    check_transactions(&announced, &killed_runs, &later_runs);

    let report: serde_json::Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
    let sex = &report["fairness"]["all_time"][0];
    assert_eq!(sex["attribute"], "sex");
    // Per sex, from the audit table: (decided, approved), the sealed attributes opened.
    let keys = protected_keys();
    let mut by_sex: HashMap<String, (i64, i64)> = HashMap::new();
    let rows: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT application_id, decision, protected_sealed FROM decision_audit")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (application_id, decision, sealed) in rows {
        let protected = keys.open(&application_id, &sealed).unwrap();
        let status = protected.personal_status_and_sex.unwrap();
        let entry = by_sex.entry(status.split(' ').next().unwrap().to_owned()).or_default();
        *entry = (entry.0 + 1, entry.1 + i64::from(decision == "approve"));
    }
    for group in sex["groups"].as_array().unwrap() {
        let name = group["group"].as_str().unwrap();
        let (decided, approved) = by_sex.get(name).copied().unwrap_or_default();
        println!(
            "fairness all-time sex={name}: monitors {} / {}, audit table {decided} / {approved}",
            group["decisions"], group["approvals"]
        );
        assert_eq!(
            (group["decisions"].as_i64(), group["approvals"].as_i64()),
            (Some(decided), Some(approved)),
            "{name}"
        );
    }
    assert!(worker.terminate(Duration::from_secs(30)));

    assert_audit_verifies(&deployment.database_url);
}
