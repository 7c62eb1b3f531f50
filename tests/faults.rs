//! Faults injected into real components, on loopback, bounded in time: the worker killed with
//! SIGKILL mid-stream, PostgreSQL cut off mid-replay (through a TCP proxy, so other tests
//! sharing the server are not disturbed), the schema registry down at start and mid-run, and
//! the broker restarted (a private Tansu instance). Each proves nothing is lost or doubled.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};
use rand::{Rng, SeedableRng};

/// `(applications, rows)`: distinct audited applications and audit rows.
async fn audit_counts(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(DISTINCT application_id), count(*) FROM decision_audit").fetch_one(pool).await.unwrap()
}

fn committed_sum(deployment: &Deployment, partitions: i32) -> i64 {
    committed_offsets(&deployment.group_id, &deployment.input_topic, partitions).values().sum()
}

/// 20 000 events replayed at 400/s (50 s: longer than three kills with their ~11 s group
/// recoveries, so every kill lands mid-stream) while the worker is killed with SIGKILL three times
/// at seeded random moments and restarted each time: every application ends with exactly one
/// audit row and its decision on the topic, every announcement equal to the audited decision
/// (repeated only in whole transactions left open by a kill, which Tansu does not abort); the hash chains verify; and
/// no log line holds an application id or a protected attribute value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_doubles_nothing() {
    const EVENTS: usize = 20_000;
    let deployment = Deployment::create("chaos", 4).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let options = ReplayOptions { count: Some(EVENTS), rate: 400.0, ..deployment.replay_options("chaos") };
    let producer = tokio::spawn(async move { replay(&options).await.expect("replay") });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261123);
    let (mut logs, mut kills, mut peak_rss) = (Vec::new(), Vec::new(), 0.0f64);
    for _ in 0..3 {
        let mut worker = WorkerProcess::start(&deployment, &[]);
        worker.wait_ready(Duration::from_secs(60)).await;
        let before = audit_rows(&pool).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while audit_rows(&pool).await == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        peak_rss = peak_rss.max(worker.peak_rss_mib());
        logs.push(worker.log.clone());
        worker.kill_9();
        kills.push(audit_rows(&pool).await);
    }
    producer.await.unwrap();
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let rows = wait_for_audit_rows(&pool, EVENTS as i64, Duration::from_secs(180)).await;
    peak_rss = peak_rss.max(worker.peak_rss_mib());
    let (applications, rows_total) = audit_counts(&pool).await;
    println!("audit rows at each kill: {kills:?}; final {rows}; peak RSS {peak_rss:.1} MiB");
    assert!(kills.iter().all(|rows| (1..EVENTS as i64).contains(rows)), "kills landed mid-stream: {kills:?}");
    assert_eq!((applications, rows_total), (EVENTS as i64, EVENTS as i64), "one audit row per application");

    // Apache Kafka aborts a killed worker's open transaction when its successor starts with the
    // same transactional id, and read_committed readers never see it. Tansu (memory storage)
    // neither aborts it nor filters aborted records: that transaction's announcements stay
    // visible next to their re-announcement. So only whole transactions, at most one per kill,
    // may be announced again, each copy identical; without them nothing is announced twice.
    let announced = announcements_match_audit(&pool, &deployment.decisions_topic, EVENTS).await;
    let (whole, partial) = announced.repeated_transactions();
    println!(
        "decisions on the topic: {announced_count} ({} announced twice, in {} transactions left open) for {EVENTS} \
         applications",
        announced.duplicates(),
        whole.len(),
        announced_count = announced.committed
    );
    assert!(partial.is_empty(), "announced again outside a whole transaction: {partial:?}");
    assert!(whole.len() <= kills.len(), "{whole:?}");
    assert_eq!(announced.duplicates_without(&whole), 0);
    logs.push(worker.log.clone());
    assert!(worker.terminate(Duration::from_secs(20)));

    assert_audit_verifies(&deployment.database_url);

    let personal_status: HashSet<String> = credit_devtools::dataset::read_german_credit(&data_path())
        .unwrap()
        .into_iter()
        .filter_map(|row| row.protected_attributes.personal_status_and_sex.map(String::from))
        .collect();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("chaos-0"), "an application id in {}", log.display());
        for value in &personal_status {
            assert!(!text.contains(value.as_str()), "protected value {value:?} in {}", log.display());
        }
    }
}

/// A fresh deployment and a ready worker that reaches PostgreSQL only through a cuttable proxy;
/// the pool connects directly, for the test's own checks.
async fn worker_behind_database_proxy(name: &str) -> (Deployment, sqlx::PgPool, TcpProxy, WorkerProcess) {
    let deployment = Deployment::create(name, 4).await;
    let direct = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let proxied_url = deployment.database_url.replace(":5432/", &format!(":{}/", proxy.port));
    let mut worker = WorkerProcess::start(&deployment, &[("CREDIT_WORKER__DATABASE__URL", &proxied_url)]);
    worker.wait_ready(Duration::from_secs(60)).await;
    (deployment, direct, proxy, worker)
}

/// PostgreSQL cut off for 15 s in the middle of a 3 000-event replay: the worker reports
/// not-ready, retries with backoff, never commits an offset past what is audited, keeps its
/// memory bounded, and drains the backlog once the database is back, with one row per application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_waited_out_without_loss() {
    const EVENTS: usize = 3_000;
    let (deployment, direct, proxy, worker) = worker_behind_database_proxy("pgdown").await;
    let options = ReplayOptions { count: Some(EVENTS), rate: 300.0, ..deployment.replay_options("pgdown") };
    let producer = tokio::spawn(async move { replay(&options).await.expect("replay") });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(offsets_never_pass_the_audit(deployment.clone(), direct.clone(), stop.clone()));
    wait_for_audit_rows(&direct, 300, Duration::from_secs(30)).await;

    proxy.cut();
    let outage = Instant::now();
    let mut saw_not_ready = false;
    while outage.elapsed() < Duration::from_secs(15) {
        let ready = reqwest::get(worker.url("/ready")).await.map(|r| r.status().as_u16()).unwrap_or(0);
        saw_not_ready |= ready == 503;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows_during = audit_rows(&direct).await;
    let retries = worker.metrics().await.sum("credit_worker_sink_retries_total", &[("sink", "postgres")]);
    proxy.restore();
    producer.await.unwrap();
    let rows = wait_for_audit_rows(&direct, EVENTS as i64, Duration::from_secs(120)).await;
    let (applications, total) = audit_counts(&direct).await;
    let peak = worker.peak_rss_mib();
    println!(
        "outage 15 s: rows at end of outage {rows_during}, postgres retries {retries}, \
         final rows {rows}, peak RSS {peak:.1} MiB"
    );
    assert!(saw_not_ready, "/ready must report the database outage");
    assert!(retries >= 2.0, "the audit write was retried: {retries}");
    assert_eq!((applications, total), (EVENTS as i64, EVENTS as i64));
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed_sum(&deployment, 4) < EVENTS as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(committed_sum(&deployment, 4), EVENTS as i64, "every offset committed after the outage");
    stop.store(true, std::sync::atomic::Ordering::Release);
    let checks = sampler.await.unwrap();
    println!("committed offsets checked against the audit table {checks} times, before, during and after the outage");
    assert!(checks >= 10, "{checks}");
    assert!(worker.terminate(Duration::from_secs(20)));
}

/// Until `stop`, checks that the group's committed offsets never pass the audit table (the
/// committed sum is read first: rows only grow, so a commit ahead of its rows shows); returns
/// the number of checks.
async fn offsets_never_pass_the_audit(
    deployment: Deployment,
    pool: sqlx::PgPool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u32 {
    let mut checks = 0;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let committed = {
            let deployment = deployment.clone();
            tokio::task::spawn_blocking(move || committed_sum(&deployment, 4)).await.unwrap()
        };
        let audited = audit_rows(&pool).await;
        assert!(committed <= audited, "offset committed past the audit table: {committed} > {audited}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checks
}

/// A 60 000-event backlog arrives while PostgreSQL is cut off (a stopped sink): the worker
/// holds a bounded queue of batches (`pipeline.batches_in_flight`) and a capped prefetch, so its memory stays bounded; once the database is
/// back it drains the backlog, one audit row per application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_behind_a_stopped_sink_keeps_memory_bounded() {
    const EVENTS: usize = 60_000;
    let (deployment, direct, proxy, worker) = worker_behind_database_proxy("backlog").await;
    let idle = worker.peak_rss_mib();
    proxy.cut();
    replay(&ReplayOptions { count: Some(EVENTS), ..deployment.replay_options("backlog") }).await.expect("replay");
    // The worker holds all it will hold once it stops consuming: its count unchanged for 2 s.
    let (deadline, mut consumed, mut since) = (Instant::now() + Duration::from_secs(60), -1.0, Instant::now());
    loop {
        let now = worker.metric("credit_worker_events_consumed_total").await;
        if now != consumed {
            (consumed, since) = (now, Instant::now());
        } else if consumed > 0.0 && since.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert!(Instant::now() < deadline, "still consuming with the sink stopped: {consumed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(consumed < EVENTS as f64, "the whole backlog was taken in with the sink stopped: {consumed}");
    let stalled = worker.peak_rss_mib();
    let rows_stalled = audit_rows(&direct).await;
    proxy.restore();
    let drain = Instant::now();
    assert_eq!(wait_for_audit_rows(&direct, EVENTS as i64, Duration::from_secs(240)).await, EVENTS as i64);
    let drained_in = drain.elapsed().as_secs_f64();
    let peak = worker.peak_rss_mib();
    println!(
        "backlog {EVENTS}: peak RSS idle {idle:.1} MiB, with the sink stopped {stalled:.1} MiB, overall {peak:.1} MiB; \
         rows while stopped {rows_stalled}; drained in {drained_in:.1} s"
    );
    assert_eq!(rows_stalled, 0, "nothing is audited while the database is cut off");
    assert_eq!(audit_counts(&direct).await, (EVENTS as i64, EVENTS as i64));
    assert!(peak < 256.0, "memory bounded: peak RSS {peak:.1} MiB");
    assert!(worker.terminate(Duration::from_secs(20)));
}

fn start_registry(port: u16, state: &std::path::Path) -> Child {
    Command::new(dev_binary())
        .args(["registry-standin", "--listen", &format!("127.0.0.1:{port}"), "--state-file"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A private schema registry: down when the worker starts (not ready, then ready once it comes
/// up), and down again mid-run: records with a cached schema id keep being decided; nothing is
/// dead-lettered for the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_at_start_and_mid_run() {
    let deployment = Deployment::create("srdown", 2).await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(&deployment, &[("CREDIT_WORKER__SCHEMA_REGISTRY__URL", &registry_url)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.log_text().contains("registering a schema failed; retrying") {
        assert!(Instant::now() < deadline, "the worker never tried the registry: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = reqwest::get(worker.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without the registry");
    let mut registry = start_registry(port, &state.path().join("registry.json"));
    worker.wait_ready(Duration::from_secs(60)).await;

    let options = ReplayOptions {
        count: Some(500),
        schema_registry_url: registry_url.clone(),
        ..deployment.replay_options("srdown")
    };
    replay(&options).await.expect("replay");
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    assert_eq!(wait_for_audit_rows(&pool, 500, Duration::from_secs(60)).await, 500);

    let _ = registry.kill();
    let _ = registry.wait();
    // The replayer registers its schema, so it talks to a second stand-in sharing the state
    // (same schema id) on another port, while the worker's registry stays down.
    let replay_port = free_port();
    let mut replay_registry = start_registry(replay_port, &state.path().join("registry.json"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{replay_port}/subjects")).await.is_err() {
        assert!(Instant::now() < deadline, "the second stand-in did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = ReplayOptions {
        count: Some(1000),
        schema_registry_url: format!("http://127.0.0.1:{replay_port}"),
        ..deployment.replay_options("srdown2")
    };
    replay(&producer).await.expect("replay while the worker's registry is down");
    let _ = replay_registry.kill();
    let _ = replay_registry.wait();
    let rows = wait_for_audit_rows(&pool, 1500, Duration::from_secs(60)).await;
    println!("decided with the registry down (cached schema): {}", rows - 500);
    assert_eq!(rows, 1500);
    assert_eq!(worker.metric("credit_worker_dead_letters_total").await, 0.0);
    assert!(worker.terminate(Duration::from_secs(20)));
}

/// A private Tansu broker (memory storage) restarted under a running worker: the worker
/// reconnects, rejoins its group and decides what is produced after the restart. (Memory
/// storage loses the topics on restart, so they are created again, and their offsets restart
/// at 0: while the broker is down, the test resets the input topic's progress as the README
/// says to for a re-created topic; else records at the old offsets count as decided.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_reconnects() {
    stack();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let start_broker = || {
        Command::new(repo_root().join(".tools/bin/tansu"))
            .args(["broker", "--listener-url", &format!("tcp://{bootstrap}"), "--advertised-listener-url"])
            .arg(format!("tcp://{bootstrap}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut broker = start_broker();
    let deployment = Deployment::create_on("restart", 2, &bootstrap).await;
    let environment = [("CREDIT_WORKER__KAFKA__BOOTSTRAP_SERVERS", bootstrap.as_str())];
    let mut worker = WorkerProcess::start(&deployment, &environment);
    worker.wait_ready(Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let options = ReplayOptions {
        count: Some(200),
        bootstrap_servers: bootstrap.clone(),
        ..deployment.replay_options("restart")
    };
    replay(&options).await.expect("replay");
    assert_eq!(wait_for_audit_rows(&pool, 200, Duration::from_secs(60)).await, 200);
    // Killed once the first 200 are announced too (a kill mid-transaction is tests/broker_link.rs).
    let (reader, decisions) = (bootstrap.clone(), deployment.decisions_topic.clone());
    let announced =
        tokio::task::spawn_blocking(move || read_topic_at(&reader, &decisions, 200, Duration::from_secs(60)).len());
    assert_eq!(announced.await.unwrap(), 200);

    let _ = broker.kill();
    let _ = broker.wait();
    sqlx::query("UPDATE source_partitions SET audited_through = 0, announced_through = 0 WHERE topic = $1")
        .bind(&deployment.input_topic)
        .execute(&pool)
        .await
        .unwrap();
    // The fault itself: the broker stays down this long (not a wait for a condition).
    const BROKER_DOWN: Duration = Duration::from_secs(3);
    tokio::time::sleep(BROKER_DOWN).await;
    broker = start_broker();
    deployment.create_topics_on(2, &bootstrap).await;
    let options = ReplayOptions { id_prefix: "restart2".into(), ..options };
    replay(&options).await.expect("replay after the restart");
    let rows = wait_for_audit_rows(&pool, 400, Duration::from_secs(120)).await;
    println!("decided after the broker restart: {}", rows - 200);
    assert_eq!(rows, 400, "worker log: {}", worker.log_text());
    let by_prefix: HashMap<bool, i64> = sqlx::query_as::<_, (bool, i64)>(
        "SELECT application_id LIKE 'restart2-%', count(*) FROM decision_audit GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(by_prefix.get(&true), Some(&200));
    let log = worker.log_text();
    // A transaction step in flight holds the stop for up to 3 × 10 s (README, Guarantees).
    assert!(worker.terminate(Duration::from_secs(45)), "the worker did not stop in 45 s: {log}");
    let _ = broker.kill();
}
