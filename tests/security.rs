//! Security settings reach librdkafka unchanged, and secrets never reach the logs.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// TLS settings pass through to librdkafka: with `security.protocol=SSL` and a CA file that
/// does not exist, librdkafka itself refuses the configuration, naming the property.
#[test]
fn tls_properties_reach_librdkafka() {
    stack();
    let output = Command::new(worker_binary())
        .current_dir(repo_root())
        .args(["worker", "--config", "config/default.toml"])
        .env("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SECURITY.PROTOCOL", "SSL")
        .env("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SSL.CA.LOCATION", "/nonexistent/ca.pem")
        .env("CREDIT_WORKER__HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(log.contains("ssl.ca.location"), "{log}");
}

/// With SASL/SCRAM credentials, a database password and an admin token configured, the worker
/// starts, fails the SASL handshake against a broker without SASL (so it is never ready), and
/// none of the three secrets appears in its log, which does show the redacted configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let deployment = Deployment::create("secrets", 1).await;
    let database_url = deployment.database_url.replace("postgres@", "postgres:db-secret-5f2e@");
    let environment = [
        ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SECURITY.PROTOCOL", "SASL_PLAINTEXT"),
        ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SASL.MECHANISM", "SCRAM-SHA-512"),
        ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SASL.USERNAME", "credit-worker"),
        ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SASL.PASSWORD", "kafka-secret-9c1d"),
        ("CREDIT_WORKER__DATABASE__URL", database_url.as_str()),
        ("CREDIT_WORKER_ADMIN_TOKEN", "admin-secret-7b3a-0123456789"),
    ];
    let worker = WorkerProcess::start(&deployment, &environment);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut ready = false;
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(worker.url("/ready")).await {
            ready |= response.status().is_success();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = worker.log_text();
    drop(worker);
    assert!(!ready, "a SASL client cannot join a broker without SASL");
    assert!(log.contains("configuration loaded") && log.contains("***"), "{log}");
    assert!(log.contains("SCRAM-SHA-512"), "the mechanism is passed through: {log}");
    for secret in ["db-secret-5f2e", "kafka-secret-9c1d", "admin-secret-7b3a"] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
}
