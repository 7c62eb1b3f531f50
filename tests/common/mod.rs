//! Shared helpers for tests against the local stack (Tansu, PostgreSQL, the registry stand-in).
//! Each test gets its own topics, consumer group and database, so tests run side by side.
#![allow(dead_code)]

mod announcements;
pub mod http_fault;
mod proxy;
pub mod tls_postgres;
mod topics;

#[allow(unused_imports)]
pub use announcements::*;
#[allow(unused_imports)]
pub use proxy::TcpProxy;
#[allow(unused_imports)]
pub use topics::*;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use credit_devtools::scrape::Exposition;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

pub const BOOTSTRAP: &str = "127.0.0.1:19092";
pub const REGISTRY: &str = "http://127.0.0.1:18081";
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn worker_binary() -> &'static str {
    env!("CARGO_BIN_EXE_credit-worker")
}

/// The release build of the worker (`make test` builds it before running the tests).
pub fn release_worker_binary() -> PathBuf {
    let binary = repo_root().join("target/release/credit-worker");
    assert!(
        binary.is_file(),
        "{} is missing: `make test` builds it (cargo build --release --bin credit-worker)",
        binary.display()
    );
    binary
}

/// The development tools' binary (`credit-dev`, built beside the worker).
pub fn dev_binary() -> PathBuf {
    PathBuf::from(worker_binary()).with_file_name("credit-dev")
}

/// Brings the local stack up once per test process (the script is idempotent and locked).
pub fn stack() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/stack.sh"))
            .arg("up")
            .env("CREDIT_WORKER_BIN", worker_binary())
            .env("CREDIT_DEV_BIN", dev_binary())
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

/// Deletes topics, best effort, and waits for the deletion. Tansu keeps topics in memory: a
/// bench's topics left behind (2.3 GiB after six 400k-event runs) slow every run after it.
pub async fn delete_topics(topics: &[&str]) {
    let Ok(admin) =
        ClientConfig::new().set("bootstrap.servers", BOOTSTRAP).create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.delete_topics(topics, &options).await {
        Ok(results) => {
            for (topic, error) in results.into_iter().filter_map(Result::err) {
                eprintln!("deleting topic {topic}: {error}");
            }
        }
        Err(error) => eprintln!("deleting topics {topics:?}: {error}"),
    }
}

/// Creates an empty database and returns its URL.
pub async fn create_database(name: &str) -> String {
    let pool = sqlx::PgPool::connect(POSTGRES_ADMIN_URL).await.expect("postgres reachable");
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&pool).await.expect("create database");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// The local key file `make stack-up` creates (the tests' workers seal with it).
pub fn protected_key_file() -> PathBuf {
    repo_root().join(".stack/protected.key")
}

/// The keys of [`protected_key_file`], to open what the workers sealed.
pub fn protected_keys() -> credit_worker::codec::ProtectedKeys {
    credit_worker::codec::ProtectedKeys::parse(&std::fs::read_to_string(protected_key_file()).unwrap()).unwrap()
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

    /// This deployment's topics.
    fn topics(&self) -> [&str; 5] {
        [&self.input_topic, &self.decisions_topic, &self.dead_letter_topic, &self.alerts_topic, &self.outcomes_topic]
            .map(String::as_str)
    }

    /// Creates this deployment's topics on the broker at `bootstrap`.
    pub async fn create_topics_on(&self, partitions: i32, bootstrap: &str) {
        create_topics_at(bootstrap, &self.topics(), partitions).await;
    }

    /// Deletes this deployment's topics, best effort (see [`delete_topics`]).
    pub async fn delete_topics(&self) {
        delete_topics(&self.topics()).await;
    }

    /// Replay of the whole data set, once, as fast as possible, to this deployment's input topic;
    /// tests override what they need.
    pub fn replay_options(&self, prefix: &str) -> credit_devtools::replay::ReplayOptions {
        credit_devtools::replay::ReplayOptions {
            data: data_path(),
            bootstrap_servers: BOOTSTRAP.into(),
            schema_registry_url: REGISTRY.into(),
            topic: self.input_topic.clone(),
            count: None,
            rate: 0.0,
            id_prefix: prefix.into(),
            malformed: 0,
            protected: credit_devtools::replay::ProtectedMode::AsRecorded,
            inject: Vec::new(),
            seed: 7,
            outcomes_topic: None,
            outcomes_only: false,
            event_time_ms: None,
            linger_ms: 10,
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
            // One worker identity per deployment: a restarted worker is the same group member
            // and transactional producer (it fences its earlier incarnation). Tests running two
            // workers at once give the second its own id.
            ("CREDIT_WORKER__KAFKA__INSTANCE_ID", "worker-1".to_owned()),
            ("CREDIT_WORKER__DATABASE__URL", self.database_url.clone()),
            ("CREDIT_WORKER__DATABASE__PROTECTED_KEY_FILE", protected_key_file().display().to_string()),
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
    /// Starts `credit-worker worker` with the default config plus `extra_env` (an empty value
    /// unsets the variable), logging to a file.
    pub fn start(deployment: &Deployment, extra_env: &[(&str, &str)]) -> Self {
        Self::start_binary(Path::new(worker_binary()), deployment, extra_env)
    }

    /// [`WorkerProcess::start`] with another build of the binary.
    pub fn start_binary(binary: &Path, deployment: &Deployment, extra_env: &[(&str, &str)]) -> Self {
        let http_port = free_port();
        let log_dir = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("{}-{http_port}.log", deployment.group_id));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary);
        command
            .current_dir(repo_root())
            .args(["worker", "--config", "config/default.toml"])
            .envs(deployment.worker_env(http_port))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (key, value) in extra_env {
            match value {
                &"" => command.env_remove(key),
                value => command.env(key, value),
            };
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

    /// The worker's metrics, parsed.
    pub async fn metrics(&self) -> Exposition {
        Exposition::fetch(&self.url("/metrics")).await.expect("the worker's /metrics")
    }

    /// The value of an unlabelled series (or the sum over a labelled family; 0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics().await.sum(name, &[])
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
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

/// Runs `credit-worker audit <args> --database-url <database_url>` from the repository root;
/// returns whether it succeeded and what it printed (stdout, then stderr).
pub fn audit_command(args: &[&str], database_url: &str) -> (bool, String) {
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

/// `audit verify` over the whole database passes: no broken chain, no re-scoring mismatch.
/// Returns its report.
pub fn assert_audit_verifies(database_url: &str) -> String {
    let (passed, report) = audit_command(&["verify", "--models-root", "models"], database_url);
    println!("{report}");
    assert!(passed && report.contains("0 breaks") && report.contains("0 mismatches"), "{report}");
    report
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
