//! Shared helpers for tests against the local stack (Tansu, PostgreSQL, the registry stand-in).
//! Each test gets its own topics, consumer group and database, so tests run side by side.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub const BOOTSTRAP: &str = "127.0.0.1:19092";
pub const REGISTRY: &str = "http://127.0.0.1:18081";
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn worker_binary() -> &'static str {
    env!("CARGO_BIN_EXE_credit-worker")
}

/// Brings the local stack up once per test process (the script is idempotent and locked).
pub fn stack() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/stack.sh"))
            .arg("up")
            .env("CREDIT_WORKER_BIN", worker_binary())
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/stack.sh");
        assert!(status.success(), "scripts/stack.sh up failed");
    });
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Creates topics with `partitions` partitions through the admin API.
pub async fn create_topics(topics: &[&str], partitions: i32) {
    create_topics_at(BOOTSTRAP, topics, partitions).await
}

/// Creates topics on the broker at `bootstrap`, retrying while it is still starting.
pub async fn create_topics_at(bootstrap: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let new_topics: Vec<NewTopic<'_>> =
        topics.iter().map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for attempt in 0..10 {
        match admin.create_topics(&new_topics, &options).await {
            Ok(results) => {
                for result in results {
                    result.expect("topic created");
                }
                return;
            }
            Err(error) if attempt < 9 => {
                eprintln!("create topics on {bootstrap}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("create topics on {bootstrap}: {error}"),
        }
    }
}

/// Creates an empty database and returns its URL.
pub async fn create_database(name: &str) -> String {
    let pool = sqlx::PgPool::connect(POSTGRES_ADMIN_URL).await.expect("postgres reachable");
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&pool).await.expect("create database");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Topics, group and database of one worker deployment under test.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub input_topic: String,
    pub decisions_topic: String,
    pub dead_letter_topic: String,
    pub alerts_topic: String,
    pub outcomes_topic: String,
    pub group_id: String,
    pub database_url: String,
}

impl Deployment {
    /// Creates fresh topics (`partitions` each) and a fresh database.
    pub async fn create(name: &str, partitions: i32) -> Self {
        Self::create_on(name, partitions, BOOTSTRAP).await
    }

    /// [`Deployment::create`] on the broker at `bootstrap`.
    pub async fn create_on(name: &str, partitions: i32, bootstrap: &str) -> Self {
        stack();
        let base = unique(name);
        let deployment = Self {
            input_topic: format!("{base}-applications"),
            decisions_topic: format!("{base}-decisions"),
            dead_letter_topic: format!("{base}-dlq"),
            alerts_topic: format!("{base}-alerts"),
            outcomes_topic: format!("{base}-outcomes"),
            group_id: format!("{base}-group"),
            database_url: create_database(&base.replace('-', "_")).await,
        };
        deployment.create_topics_on(partitions, bootstrap).await;
        deployment
    }

    /// Creates this deployment's topics on the broker at `bootstrap`.
    pub async fn create_topics_on(&self, partitions: i32, bootstrap: &str) {
        let topics = [
            &self.input_topic,
            &self.decisions_topic,
            &self.dead_letter_topic,
            &self.alerts_topic,
            &self.outcomes_topic,
        ];
        create_topics_at(bootstrap, &topics.map(String::as_str), partitions).await;
    }

    /// Replay of the whole data set, once, as fast as possible, to this deployment's input topic;
    /// tests override what they need.
    pub fn replay_options(&self, prefix: &str) -> credit_worker::replay::ReplayOptions {
        credit_worker::replay::ReplayOptions {
            data: data_path(),
            bootstrap_servers: BOOTSTRAP.into(),
            schema_registry_url: REGISTRY.into(),
            topic: self.input_topic.clone(),
            count: None,
            rate: 0.0,
            id_prefix: prefix.into(),
            malformed: 0,
            protected: credit_worker::replay::ProtectedMode::AsRecorded,
            inject: Vec::new(),
            seed: 7,
            outcomes_topic: None,
            outcomes_only: false,
        }
    }

    /// Environment overrides pointing a worker at this deployment.
    pub fn worker_env(&self, http_port: u16) -> HashMap<String, String> {
        [
            ("CREDIT_WORKER__KAFKA__INPUT_TOPIC", self.input_topic.clone()),
            ("CREDIT_WORKER__KAFKA__DECISIONS_TOPIC", self.decisions_topic.clone()),
            ("CREDIT_WORKER__KAFKA__DEAD_LETTER_TOPIC", self.dead_letter_topic.clone()),
            ("CREDIT_WORKER__KAFKA__ALERTS_TOPIC", self.alerts_topic.clone()),
            ("CREDIT_WORKER__KAFKA__OUTCOMES_TOPIC", self.outcomes_topic.clone()),
            ("CREDIT_WORKER__KAFKA__GROUP_ID", self.group_id.clone()),
            ("CREDIT_WORKER__DATABASE__URL", self.database_url.clone()),
            ("CREDIT_WORKER__HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
            ("CREDIT_WORKER__MODEL__DIRECTORY", repo_root().join("models/credit-v1").display().to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

/// A worker running as a separate process; killed on drop.
pub struct WorkerProcess {
    child: Child,
    pub http_port: u16,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `credit-worker worker` with the default config plus `env`, logging to a file.
    pub fn start(deployment: &Deployment, extra_env: &[(&str, &str)]) -> Self {
        let http_port = free_port();
        let log_dir = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("{}-{http_port}.log", deployment.group_id));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(worker_binary());
        command
            .current_dir(repo_root())
            .args(["worker", "--config", "config/default.toml"])
            .envs(deployment.worker_env(http_port))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting the worker");
        Self { child, http_port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("worker exited with {status}; log: {}", self.log_text());
            }
            if let Ok(response) = reqwest::get(self.url("/ready")).await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("worker not ready after {timeout:?}; log: {}", self.log_text());
    }

    /// The value of an unlabelled counter (or the sum over a labelled family).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter(|line| line[name.len()..].starts_with([' ', '{']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no commit, no flush.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Peak resident set size so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// SIGTERM, then waits for the exit; returns whether it exited cleanly.
    pub fn terminate(mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// Reads `topic` from the beginning (no group) until `expected` records arrived or `timeout`.
pub fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_topic_until(topic, timeout, |records| records.len() >= expected)
}

/// Reads `topic` from the beginning until `expected` distinct keys arrived (duplicates allowed).
pub fn read_topic_keys(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    let mut keys = std::collections::HashSet::new();
    let mut seen = 0;
    read_topic_until(topic, timeout, move |records| {
        for record in &records[seen..] {
            keys.insert(record.key.clone());
        }
        seen = records.len();
        keys.len() >= expected
    })
}

fn read_topic_until(topic: &str, timeout: Duration, mut done: impl FnMut(&[ReadRecord]) -> bool) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(ReadRecord {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    records
}

/// Offsets committed by `group` for `topic` (partition → offset; absent = none committed).
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", BOOTSTRAP).set("group.id", group).create().unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some((element.partition(), offset)),
            _ => None,
        })
        .collect()
}

/// The path of the committed model directory.
pub fn model_dir() -> PathBuf {
    repo_root().join("models/credit-v1")
}

/// The data set path.
pub fn data_path() -> PathBuf {
    repo_root().join("data/german_credit.csv")
}

/// Rows in `decision_audit` of `database_url`.
pub async fn audit_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM decision_audit").fetch_one(pool).await.unwrap_or(-1)
}

/// Waits until `decision_audit` holds `expected` rows (or `timeout`); returns the count.
pub async fn wait_for_audit_rows(pool: &sqlx::PgPool, expected: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = audit_rows(pool).await;
        if rows >= expected || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A loopback TCP proxy whose link can be cut: while down, open connections are closed and new
/// ones are accepted and dropped at once (as a failed or firewalled server looks to a client).
pub struct TcpProxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Notify>,
}

impl TcpProxy {
    /// Forwards a free loopback port to `target`.
    pub async fn start(target: &'static str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = std::sync::Arc::new(tokio::sync::Notify::new());
        let (accept_down, accept_cut) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if accept_down.load(Ordering::Acquire) {
                    continue;
                }
                let cut = accept_cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Self { port, down, cut }
    }

    /// Cuts every connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::Release);
        self.cut.notify_waiters();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::Release);
    }
}
