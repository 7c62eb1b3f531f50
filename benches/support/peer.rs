//! The Python peer (`../shared/peers/python_peer.py`, run with `.tools/peer/bin/python`): a
//! batched consumer doing a simpler version of the worker's job, on the same broker and database.
//! It is loaded once, then run in turn with the worker so that their ratio is measured in one run.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::common;
use crate::procfs::{broker_pid, database_cpu_seconds, process_cpu_seconds};

/// One run of the peer, measured as the worker's drain is: first audit row → last.
#[derive(Debug, Serialize)]
pub struct PeerRun {
    /// The peer's own figure: events / (first batch received → last batch committed).
    pub events_per_second: f64,
    /// The peer's CPU from its first audit row to its exit, per event.
    pub cpu_microseconds_per_event: f64,
    /// Tansu's CPU over the same span, per event (consumed and published).
    pub broker_cpu_microseconds_per_event: Option<f64>,
    /// PostgreSQL's CPU over the same span, per audit row.
    pub database_cpu_microseconds_per_row: f64,
}

fn script() -> PathBuf {
    common::repo_root().join("../shared/peers/python_peer.py")
}

fn python() -> PathBuf {
    common::repo_root().join(".tools/peer/bin/python")
}

fn port() -> &'static str {
    common::BOOTSTRAP.rsplit_once(':').map_or("19092", |(_, port)| port)
}

/// Whether the peer can run here (its script beside the repository, its venv from the bootstrap).
pub fn available() -> Result<(), String> {
    if !script().is_file() {
        return Err(format!("{} is missing", script().display()));
    }
    if !python().is_file() {
        return Err(format!("{} is missing: run scripts/bootstrap.sh", python().display()));
    }
    Ok(())
}

/// Trains the peer's model and pre-loads `events` applications into its topic.
pub fn load(events: usize) {
    let status = Command::new(python())
        .arg(script())
        .args(["load", &events.to_string(), port()])
        .stdout(Stdio::null())
        .status()
        .expect("starting the peer's load");
    assert!(status.success(), "the peer's load failed: {status}");
}

/// Empties the peer's output topic (its script produces a decision per event there): otherwise
/// each run's decisions stay in Tansu's memory and every later pair is slower than the first.
pub async fn fresh_output() {
    common::delete_topics(&[OUTPUT_TOPIC]).await;
    common::create_topics(&[OUTPUT_TOPIC], 4).await;
}

/// The topic the peer's script produces its decisions to.
const OUTPUT_TOPIC: &str = "peer-decisions";

/// Runs the peer over `events` applications with a new group.
pub async fn run(events: usize) -> PeerRun {
    let mut child = Command::new(python())
        .arg(script())
        .args(["run", &events.to_string(), port()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the peer");
    let pid = child.id();
    let broker = broker_pid();
    let pool = sqlx::PgPool::connect(common::POSTGRES_ADMIN_URL).await.expect("the peer's database");
    let deadline = Instant::now() + Duration::from_secs(600);
    // The peer re-creates its table at start: the first row in it marks its first committed batch.
    let mut cpu_at_first = None;
    while cpu_at_first.is_none() {
        assert!(Instant::now() < deadline, "the peer wrote no audit row in time");
        let any: Result<bool, _> =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM peer_audit)").fetch_one(&pool).await;
        if any.unwrap_or(false) {
            cpu_at_first = Some((process_cpu_seconds(pid), broker.map(process_cpu_seconds), database_cpu_seconds()));
        } else if child.try_wait().expect("waiting for the peer").is_some() {
            panic!("the peer exited before writing a row");
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (cpu_first, broker_first, database_first) = cpu_at_first.unwrap_or_default();
    let mut cpu_last = (cpu_first, broker_first, database_first);
    while child.try_wait().expect("waiting for the peer").is_none() {
        assert!(Instant::now() < deadline, "the peer did not finish in time");
        cpu_last = (process_cpu_seconds(pid), broker.map(process_cpu_seconds), database_cpu_seconds());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
    // The peer's backend has exited with it: its CPU is now with the postmaster's reaped children.
    cpu_last.2 = database_cpu_seconds();
    let output = child.wait_with_output().expect("the peer's output");
    let text = String::from_utf8_lossy(&output.stdout);
    let events_per_second = text
        .split_whitespace()
        .rev()
        .skip_while(|word| *word != "events/s")
        .nth(1)
        .and_then(|rate| rate.parse().ok())
        .unwrap_or_else(|| panic!("the peer printed no rate: {text}"));
    let per_event = |seconds: f64| seconds / events as f64 * 1e6;
    PeerRun {
        events_per_second,
        cpu_microseconds_per_event: per_event(cpu_last.0 - cpu_first),
        broker_cpu_microseconds_per_event: broker_first.zip(cpu_last.1).map(|(a, b)| per_event(b - a) / 2.0),
        database_cpu_microseconds_per_row: per_event(cpu_last.2 - database_first),
    }
}
