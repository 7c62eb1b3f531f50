//! End-to-end throughput and latency of the worker on the local stack (`make bench`).
//!
//! Per scenario (champion alone; champion with a shadow challenger), against fresh topics and a
//! fresh database:
//! 1. pre-loads `--events` applications into the input topic;
//! 2. starts the release worker from cold and times it until every event is decided, published,
//!    audited (rows committed) and its offset stored: events/s, CPU per decision, peak RSS;
//! 3. offers `--rate` events/s for `--latency-seconds` to the now warm worker and reads the
//!    event → decision latency of each from the audit table (p50/p95/p99);
//! 4. checks every audit row is there and the group's committed offsets cover every event.
//!
//! `prefilled` is `champion` with `--prefill` generated rows already in the audit table, and
//! `recovery` kills the worker during a drain and times kill -9 → its first new audit row.
//! `peer` runs `champion` `--pairs` times, each followed by the Python peer
//! (`../shared/peers/python_peer.py`) on the same broker and database, and reports the ratio of
//! each pair: absolute rates on a shared machine drift, ratios measured in one run do not.
//!
//! Prints a table and writes the figures as JSON to `target/bench/pipeline-<unix time>.json` and
//! `target/bench/pipeline-latest.json`, to compare runs.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/durable.rs"]
mod durable;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/prefill.rs"]
mod prefill;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/recovery.rs"]
mod recovery;
#[path = "support/table.rs"]
mod table;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Deployment, WorkerProcess};
use credit_devtools::scrape::Exposition;
use procfs::{broker_pid, database_cpu_seconds, process_cpu_seconds, process_minor_faults};
use serde::Serialize;

/// Options (after `cargo bench --bench pipeline --`).
#[derive(Debug, Parser)]
struct Options {
    /// Events pre-loaded for the throughput run.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Offered rate of the latency run, events per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Length of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Only the scenarios named (champion, shadow, prefilled, peer, recovery); default all.
    #[arg(long)]
    scenario: Vec<String>,
    /// Audit rows already in the table for the `prefilled` scenario (generated in SQL).
    #[arg(long, default_value_t = 50_000_000)]
    prefill: u64,
    /// Kills of the `recovery` scenario, per session timeout.
    #[arg(long, default_value_t = 5)]
    recovery_kills: usize,
    /// Session timeouts (ms) the `recovery` scenario runs with (Tansu's join time follows it).
    #[arg(long, default_values_t = [6000, 2000])]
    recovery_session_timeout_ms: Vec<u64>,
    /// Another build of the worker to bench (an earlier commit's, to compare); default this one's.
    #[arg(long)]
    worker: Option<std::path::PathBuf>,
    /// `linger.ms` of the producer offering the latency run's events: the upstream system's
    /// wait to share a request, part of every event's latency. Lower is not faster here: at
    /// 1 ms the broker's extra requests took the CPU the worker needed (event -> consumed p99
    /// 60-72 ms against 33-44 ms at 10).
    #[arg(long, default_value_t = 10)]
    latency_linger_ms: u32,
    /// Champion/peer pairs of the `peer` scenario.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    started_at: String,
    git_commit: String,
    /// The worker binary benched.
    worker: String,
    events: usize,
    partitions: i32,
    cores: usize,
    scenarios: Vec<ScenarioReport>,
    /// The peer's runs, each right after the `champion` run it is paired with.
    peer: Vec<peer::PeerRun>,
    recovery: Vec<recovery::RecoveryReport>,
}

#[derive(Debug, Serialize)]
struct ScenarioReport {
    name: String,
    shadow: bool,
    /// Audit rows in the table before the run.
    prefilled_rows: u64,
    preload_events_per_second: f64,
    /// Worker spawn → first audit row committed (model load, group join, first batch).
    cold_start_seconds: f64,
    /// First → last audit row committed.
    drain_seconds: f64,
    /// Events / drain time: the steady-state rate.
    events_per_second: f64,
    /// Events / (spawn → last audit row).
    events_per_second_from_cold: f64,
    /// Worker user+system CPU during the drain, per decision.
    cpu_microseconds_per_decision: f64,
    cpu_seconds_per_1k_decisions: f64,
    /// Worker CPU from spawn to the last row (startup included).
    cpu_seconds_total: f64,
    /// Tansu's CPU during the drain, per event (consumed and published).
    broker_cpu_microseconds_per_event: Option<f64>,
    /// PostgreSQL's CPU (every `postgres` process) during the drain, per audit row.
    database_cpu_microseconds_per_row: f64,
    /// The worker's minor page faults during the drain, per decision.
    minor_faults_per_decision: f64,
    peak_rss_mib: f64,
    latency: LatencyReport,
    /// Mean seconds per batch in each worker stage, over the whole run.
    stage_mean_ms: BTreeMap<String, f64>,
    mean_batch_rows: f64,
    audit_rows: i64,
    committed_offsets: i64,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    offered_rate: f64,
    events: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Event → audit commit (the durable point), from the worker's histogram.
    durable: durable::DurableLatency,
    /// Event → decision audited and announced, from the worker's histogram.
    announced: durable::DurableLatency,
    /// Consumed → audit commit (the worker's own part of `durable`), from its histogram.
    worker: durable::DurableLatency,
    cpu_microseconds_per_decision: f64,
    /// The producer's `linger.ms` offering the events.
    linger_ms: u32,
    /// Mean milliseconds per batch of each stage during the latency run.
    stage_mean_ms: BTreeMap<String, f64>,
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    let wanted = |name: &str| options.scenario.is_empty() || options.scenario.iter().any(|wanted| wanted == name);
    let mut scenarios = vec![("champion", false), ("shadow", true), ("prefilled", false)];
    scenarios.retain(|(name, _)| wanted(name));
    let mut pairs = if wanted("peer") { options.pairs } else { 0 };
    if let (true, Err(missing)) = (pairs > 0, peer::available()) {
        // Asked for by name, the peer must be there; in a run of every scenario it may be absent.
        assert!(options.scenario.is_empty(), "the peer scenario needs the Python peer: {missing}");
        eprintln!("== no peer pairs: {missing}");
        pairs = 0;
    }
    if pairs > 0 {
        // The pairs stand for the champion scenario.
        scenarios.retain(|(name, _)| *name != "champion");
    }
    let started_at = chrono::Utc::now();
    let mut report = Report {
        started_at: started_at.to_rfc3339(),
        git_commit: git_commit(),
        worker: options
            .worker
            .as_ref()
            .map_or_else(|| common::worker_binary().to_owned(), |path| path.display().to_string()),
        events: options.events,
        partitions: options.partitions,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        scenarios: Vec::new(),
        peer: Vec::new(),
        recovery: Vec::new(),
    };
    if pairs > 0 {
        eprintln!("== peer: loading {} events into its topic", options.events);
        peer::load(options.events);
    }
    for pair in 1..=pairs {
        eprintln!("== pair {pair} of {pairs}: champion, {} events, {} partitions", options.events, options.partitions);
        report.scenarios.push(run_scenario(&options, "champion", false).await);
        eprintln!("== pair {pair} of {pairs}: the Python peer, {} events", options.events);
        peer::fresh_output().await;
        let run = peer::run(options.events).await;
        eprintln!(
            "   peer: {:.0} events/s, {:.2} µs CPU per event",
            run.events_per_second, run.cpu_microseconds_per_event
        );
        report.peer.push(run);
    }
    for (name, shadow) in scenarios {
        eprintln!("== scenario {name}: {} events, {} partitions", options.events, options.partitions);
        report.scenarios.push(run_scenario(&options, name, shadow).await);
    }
    if options.scenario.is_empty() || options.scenario.iter().any(|wanted| wanted == "recovery") {
        for &timeout in &options.recovery_session_timeout_ms {
            eprintln!("== scenario recovery: {} kill -9, session timeout {timeout} ms", options.recovery_kills);
            let events = options.events.min(100_000);
            report.recovery.push(recovery::recovery(events, options.partitions, options.recovery_kills, timeout).await);
        }
    }
    table::print(&report);
    let directory = common::repo_root().join("target/bench");
    std::fs::create_dir_all(&directory).expect("creating target/bench");
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    let path = directory.join(format!("pipeline-{}.json", started_at.timestamp()));
    std::fs::write(&path, &json).expect("writing the report");
    std::fs::write(directory.join("pipeline-latest.json"), &json).expect("writing the report");
    println!("written {}", path.display());
}

async fn run_scenario(options: &Options, name: &str, shadow: bool) -> ScenarioReport {
    let deployment = Deployment::create(&format!("bench-{name}"), options.partitions).await;
    let prefix = format!("bench-{name}");
    let mut replay = deployment.replay_options(&prefix);
    replay.count = Some(options.events);
    let preload = credit_devtools::replay::replay(&replay).await.expect("pre-loading the input topic");
    let preload_rate = options.events as f64 / preload.elapsed.as_secs_f64();
    eprintln!("   pre-loaded in {:.1} s ({preload_rate:.0} events/s)", preload.elapsed.as_secs_f64());
    let prefilled_rows = if name == "prefilled" { options.prefill } else { 0 };
    if prefilled_rows > 0 {
        prefill::prefill(&deployment.database_url, prefilled_rows).await;
    }

    // As the image runs it (Dockerfile): no transparent huge pages under the allocator.
    let mut env = vec![("RUST_LOG", "warn"), ("MIMALLOC_ALLOW_THP", "0")];
    let challenger = common::repo_root().join("models/credit-v2").display().to_string();
    if shadow {
        env.push(("CREDIT_WORKER__MODEL__SHADOW_DIRECTORY", challenger.as_str()));
    }
    let broker = broker_pid();
    let spawned = Instant::now();
    let binary = options.worker.clone().unwrap_or_else(|| common::worker_binary().into());
    let worker = WorkerProcess::start_binary(&binary, &deployment, &env);
    let pid = worker.pid();
    let (first, cpu_at_first, broker_at_first) = wait_for_rows(&worker, 1.0, Duration::from_secs(120), broker).await;
    let (database_at_first, faults_at_first) = (database_cpu_seconds(), process_minor_faults(pid));
    let (last, cpu_at_last, broker_at_last) =
        wait_for_rows(&worker, options.events as f64, Duration::from_secs(900), broker).await;
    let faults = (process_minor_faults(pid) - faults_at_first) / options.events as f64;
    let database_cpu = (database_cpu_seconds() - database_at_first) / options.events as f64 * 1e6;
    let drain = (last - first).as_secs_f64().max(1e-3);
    let from_cold = (last - spawned).as_secs_f64();
    let drain_cpu = cpu_at_last - cpu_at_first;
    let broker_cpu = broker_at_first.zip(broker_at_last).map(|(a, b)| (b - a) / (2.0 * options.events as f64) * 1e6);
    eprintln!(
        "   drained {} events in {drain:.2} s ({:.0} events/s), {:.2} µs CPU and {faults:.3} page faults per decision",
        options.events,
        options.events as f64 / drain,
        drain_cpu / options.events as f64 * 1e6
    );

    let latency_events = (options.rate * options.latency_seconds as f64) as usize;
    let mut offered = deployment.replay_options(&format!("{prefix}-lat"));
    offered.count = Some(latency_events);
    offered.rate = options.rate;
    offered.linger_ms = options.latency_linger_ms;
    let stages_before = stage_totals(&worker).await;
    let cpu_before = process_cpu_seconds(pid);
    let before = durable::observed(&worker, options.events as f64).await;
    let (audited_before, announced_before) =
        (durable::Buckets::of(&before, durable::AUDITED), durable::Buckets::of(&before, durable::ANNOUNCED));
    let worker_before = durable::Buckets::of(&before, durable::WORKER);
    let offered_from = chrono::Utc::now() - chrono::Duration::seconds(1);
    credit_devtools::replay::replay(&offered).await.expect("offering the latency load");
    let total = (options.events + latency_events) as f64;
    wait_for_rows(&worker, total, Duration::from_secs(300), None).await;
    let latency_cpu = process_cpu_seconds(pid) - cpu_before;
    let latency_stages = stage_means_since(&stage_totals(&worker).await, &stages_before);
    let after = durable::observed(&worker, total).await;
    let durable = durable::Buckets::of(&after, durable::AUDITED).since(&audited_before).report();
    let announced = durable::Buckets::of(&after, durable::ANNOUNCED).since(&announced_before).report();
    let worker_part = durable::Buckets::of(&after, durable::WORKER).since(&worker_before).report();
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.expect("audit database");
    let (p50, p95, p99, max): (f64, f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) \
         FROM (SELECT extract(epoch FROM processed_at - event_time)::float8 * 1000 AS ms FROM decisions \
               WHERE processed_at >= $2 AND application_id LIKE $1 || '-%') AS latency",
    )
    .bind(&offered.id_prefix)
    .bind(offered_from)
    .fetch_one(&pool)
    .await
    .expect("latency percentiles");
    let (consume_p99, decide_p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM consumed_at - event_time)::float8 * 1000),                 percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - consumed_at)::float8 * 1000)          FROM decisions WHERE processed_at >= $2 AND application_id LIKE $1 || '-%'",
    )
    .bind(&offered.id_prefix)
    .bind(offered_from)
    .fetch_one(&pool)
    .await
    .expect("latency split");
    eprintln!("   latency p99: event -> consumed {consume_p99:.1} ms, consumed -> decided {decide_p99:.1} ms");
    let audit_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM decisions d JOIN source_partitions s USING (source_id) WHERE s.topic = $1",
    )
    .bind(&deployment.input_topic)
    .fetch_one(&pool)
    .await
    .unwrap();
    let peak_rss_mib = worker.peak_rss_mib();
    let stage_mean_ms = stage_means_since(&stage_totals(&worker).await, &BTreeMap::new());
    let mean_batch_rows = worker.metric("credit_worker_audit_batch_rows_sum").await
        / worker.metric("credit_worker_audit_batch_rows_count").await.max(1.0);
    assert!(worker.terminate(Duration::from_secs(30)), "the worker did not stop cleanly");
    let committed: i64 =
        common::committed_offsets(&deployment.group_id, &deployment.input_topic, options.partitions).values().sum();
    pool.close().await;
    drop_database(&deployment.database_url).await;
    deployment.delete_topics().await;
    assert_eq!(audit_rows as f64, total, "every event has its audit row");
    assert_eq!(committed as f64, total, "committed offsets cover every event");

    ScenarioReport {
        name: name.to_owned(),
        shadow,
        prefilled_rows,
        preload_events_per_second: preload_rate,
        cold_start_seconds: (first - spawned).as_secs_f64(),
        drain_seconds: drain,
        events_per_second: options.events as f64 / drain,
        events_per_second_from_cold: options.events as f64 / from_cold,
        cpu_microseconds_per_decision: drain_cpu / options.events as f64 * 1e6,
        cpu_seconds_per_1k_decisions: drain_cpu / options.events as f64 * 1e3,
        cpu_seconds_total: cpu_at_last,
        broker_cpu_microseconds_per_event: broker_cpu,
        database_cpu_microseconds_per_row: database_cpu,
        minor_faults_per_decision: faults,
        peak_rss_mib,
        latency: LatencyReport {
            offered_rate: options.rate,
            events: latency_events,
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            max_ms: max,
            cpu_microseconds_per_decision: latency_cpu / latency_events.max(1) as f64 * 1e6,
            durable,
            announced,
            worker: worker_part,
            linger_ms: options.latency_linger_ms,
            stage_mean_ms: latency_stages,
        },
        stage_mean_ms,
        mean_batch_rows,
        audit_rows,
        committed_offsets: committed,
    }
}

/// Polls the worker's audit counter every 20 ms until it reaches `rows`; returns when, with the
/// worker's (and the broker's) CPU seconds at that moment.
async fn wait_for_rows(
    worker: &WorkerProcess,
    rows: f64,
    timeout: Duration,
    broker: Option<u32>,
) -> (Instant, f64, Option<f64>) {
    let deadline = Instant::now() + timeout;
    let mut previous: Option<(Instant, f64)> = None;
    loop {
        let written = audit_rows_written(worker).await.unwrap_or(0.0);
        let now = Instant::now();
        if written >= rows {
            return (now, process_cpu_seconds(worker.pid()), broker.map(process_cpu_seconds));
        }
        assert!(now < deadline, "{written} of {rows} audit rows after {timeout:?}; log: {:?}", worker.log);
        tokio::time::sleep(next_poll(previous, (now, written), rows)).await;
        previous = Some((now, written));
    }
}

/// How long to wait before asking the worker again: half the time the rest should take at the
/// rate seen since the last poll (20 ms to 1 s). A scrape costs the worker and the bench CPU, so
/// a drain is polled a dozen times rather than every 20 ms, and still timed to about 20 ms.
fn next_poll(previous: Option<(Instant, f64)>, (now, written): (Instant, f64), rows: f64) -> Duration {
    let fastest = Duration::from_millis(20);
    let Some((then, before)) = previous.filter(|(_, before)| written > *before) else { return fastest };
    let rate = (written - before) / now.duration_since(then).as_secs_f64().max(1e-3);
    Duration::from_secs_f64((rows - written) / rate / 2.0).clamp(fastest, Duration::from_secs(1))
}

/// The worker's audit row counter; `None` while its endpoint is not up yet.
async fn audit_rows_written(worker: &WorkerProcess) -> Option<f64> {
    let metrics = Exposition::fetch(&worker.url("/metrics")).await.ok()?;
    metrics.value("credit_worker_audit_rows_written_total", &[])
}

/// Mean milliseconds per batch of each stage, from `credit_worker_stage_seconds`.
/// Seconds spent and batches seen per stage, so far.
async fn stage_totals(worker: &WorkerProcess) -> BTreeMap<String, (f64, f64)> {
    let metrics = worker.metrics().await;
    metrics
        .samples("credit_worker_stage_seconds_sum", &[])
        .filter_map(|sum| {
            let stage = sum.label("stage")?;
            let count = metrics.value("credit_worker_stage_seconds_count", &[("stage", stage)])?;
            Some((stage.to_owned(), (sum.value, count)))
        })
        .collect()
}

/// Mean milliseconds per batch of each stage between two [`stage_totals`].
fn stage_means_since(
    totals: &BTreeMap<String, (f64, f64)>,
    earlier: &BTreeMap<String, (f64, f64)>,
) -> BTreeMap<String, f64> {
    totals
        .iter()
        .map(|(stage, (sum, count))| {
            let (sum_before, count_before) = earlier.get(stage).copied().unwrap_or_default();
            (stage.clone(), (sum - sum_before) / (count - count_before).max(1.0) * 1e3)
        })
        .collect()
}

/// Drops the scenario's database, unless `BENCH_KEEP_DATABASE` is set (to look into it).
async fn drop_database(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else { return };
    if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
        eprintln!("   kept the database {name}");
        return;
    }
    if let Ok(admin) = sqlx::PgPool::connect(common::POSTGRES_ADMIN_URL).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await;
    }
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map_or_else(|| "unknown".into(), |commit| commit.trim().to_owned())
}
