//! The link to the broker cut mid-stream, for longer than a transaction step may take: a TCP
//! proxy in front of a private Tansu that advertises the proxy, so every client goes through it.
//! The transaction in flight at the cut fails, or is left in doubt (its commit requested, its
//! outcome unknown); once the link is back, every application is announced exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, ReplayOptions};

/// How long the link stays down at least: longer than a transaction step's 10 s timeout.
const OUTAGE: Duration = Duration::from_secs(15);

/// 3000 events at 300/s; the link is cut once 600 are audited, and kept down until a failed
/// transaction step was logged and [`OUTAGE`] passed. Afterwards every application has one audit
/// row and one announcement a `read_committed` reader sees, equal to its audit row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_link_cut_mid_transaction_announces_once() {
    const EVENTS: usize = 3000;
    stack();
    let broker_address: &'static str = Box::leak(format!("127.0.0.1:{}", free_port()).into_boxed_str());
    let proxy = TcpProxy::start(broker_address).await;
    let bootstrap = format!("127.0.0.1:{}", proxy.port);
    let mut broker = Command::new(repo_root().join(".tools/bin/tansu"))
        .args(["broker", "--listener-url", &format!("tcp://{broker_address}")])
        .args(["--advertised-listener-url", &format!("tcp://{bootstrap}"), "--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deployment = Deployment::create_on("linkcut", 2, &bootstrap).await;
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    let mut worker = WorkerProcess::start(&deployment, &[("CREDIT_WORKER__KAFKA__BOOTSTRAP_SERVERS", &bootstrap)]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let options = ReplayOptions {
        count: Some(EVENTS),
        rate: 300.0,
        bootstrap_servers: bootstrap.clone(),
        ..deployment.replay_options("linkcut")
    };
    let producer = tokio::spawn(async move { replay(&options).await.expect("replay") });
    wait_for_audit_rows(&pool, 600, Duration::from_secs(60)).await;

    proxy.cut();
    let cut = Instant::now();
    let failed = |log: String| log.contains("a transaction step failed") || log.contains("announcing the batch failed");
    while cut.elapsed() < OUTAGE || !failed(worker.log_text()) {
        assert!(cut.elapsed() < Duration::from_secs(90), "no announcement failed: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    let restored = Instant::now();
    producer.await.unwrap();
    let rows = wait_for_audit_rows(&pool, EVENTS as i64, Duration::from_secs(120)).await;
    assert_eq!(rows, EVENTS as i64, "worker log: {}", worker.log_text());

    let decisions = deployment.decisions_topic.clone();
    let reader_bootstrap = bootstrap.clone();
    let announced = tokio::task::spawn_blocking(move || {
        let first = read_topic_at(&reader_bootstrap, &decisions, EVENTS, Duration::from_secs(120));
        let recovered = restored.elapsed();
        // Then anything more there is (a duplicate would show here).
        (read_topic_at(&reader_bootstrap, &decisions, first.len() + 1, Duration::from_secs(5)), recovered)
    });
    let (announced, recovered) = announced.await.unwrap();
    let audited: HashMap<String, (String, f64)> = sqlx::query_as::<_, (String, String, f64)>(
        "SELECT application_id, decision, probability_of_default FROM decision_audit",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, decision, probability)| (id, (decision, probability)))
    .collect();
    let mut ids = HashSet::new();
    for record in &announced {
        let decision = decode_decision(record.value.as_ref().unwrap());
        let (outcome, probability) = &audited[&decision.application_id];
        assert_eq!(
            (decision.decision.as_str(), decision.probability_of_default.to_bits()),
            (outcome.as_str(), probability.to_bits())
        );
        ids.insert(decision.application_id);
    }
    let log = worker.log_text();
    let steps = ["a transaction step failed; resuming it", "aborting the transaction failed", "will be replaced"];
    let counts: Vec<String> = steps.iter().map(|step| format!("{step:?} ×{}", log.matches(step).count())).collect();
    println!(
        "link cut {:.1} s: {} announcements of {} applications, all announced {:.1} s after the link was back; {}",
        (restored - cut).as_secs_f64(),
        announced.len(),
        ids.len(),
        recovered.as_secs_f64(),
        counts.join(", ")
    );
    assert_eq!(ids.len(), EVENTS, "every application announced; worker log: {}", worker.log_text());
    assert_eq!(announced.len(), EVENTS, "each announced once");
    assert!(worker.terminate(Duration::from_secs(20)));
    let _ = broker.kill();
    let _ = broker.wait();
}
