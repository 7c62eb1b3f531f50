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
/// starts and gets as far as the SASL handshake, which a broker without SASL refuses (so it
/// answers /ready with 503), and none of the three secrets appears in its log, which does show
/// the redacted configuration.
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
    let mut worker = WorkerProcess::start(&deployment, &environment);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.log_text().contains("SASL SCRAM-SHA-512 mechanism handshake failed") {
        assert!(worker.exited().is_none(), "the worker stopped before trying SASL: {}", worker.log_text());
        assert!(Instant::now() < deadline, "no SASL handshake was tried: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = reqwest::get(worker.url("/ready")).await.map(|response| response.status().as_u16());
    let log = worker.log_text();
    drop(worker);
    assert_eq!(ready.ok(), Some(503), "the worker runs, and without Kafka it is not ready");
    assert!(log.contains("configuration loaded") && log.contains("***"), "{log}");
    assert!(log.contains("SCRAM-SHA-512"), "the mechanism is passed through: {log}");
    for secret in ["db-secret-5f2e", "kafka-secret-9c1d", "admin-secret-7b3a"] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
}

/// Protected attributes are sealed at rest: after a replay of the data set with its recorded
/// attributes, no audit row holds sex, age or foreign-worker status in plain (neither in its
/// columns nor anywhere in its text); the sealed values open, with the deployment's keys, to
/// exactly the replayed attributes, and only on their own rows; the hash chains verify without
/// the keys. A worker whose key file is missing does not start, and says which key to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_attributes_are_sealed_at_rest() {
    let deployment = Deployment::create("sealed", 2).await;
    let mut missing = WorkerProcess::start(
        &deployment,
        &[("CREDIT_WORKER__DATABASE__PROTECTED_KEY_FILE", "/nonexistent/protected.key")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while missing.exited().is_none() {
        assert!(Instant::now() < deadline, "started without its key file: {}", missing.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!missing.exited().unwrap().success());
    assert!(missing.log_text().contains("database.protected_key_file"), "{}", missing.log_text());

    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(60)).await;
    let options = credit_devtools::replay::ReplayOptions {
        protected: credit_devtools::replay::ProtectedMode::AsRecorded,
        ..deployment.replay_options("sealed")
    };
    credit_devtools::replay::replay(&options).await.unwrap();
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.unwrap();
    assert_eq!(wait_for_audit_rows(&pool, 1000, Duration::from_secs(60)).await, 1000);
    assert!(worker.terminate(Duration::from_secs(20)));

    let (plain, unsealed, spelled_out): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE sex_status IS NOT NULL OR age_in_years IS NOT NULL OR foreign_worker IS NOT NULL),
                count(*) FILTER (WHERE protected_sealed IS NULL),
                count(*) FILTER (WHERE d::text ~ '(male|female) :')
         FROM decisions d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((plain, unsealed, spelled_out), (0, 0, 0), "rows with protected attributes in plain");
    let (view_plain,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM decision_audit WHERE protected_attributes IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(view_plain, 0);

    let keys = protected_keys();
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT application_id, protected_sealed FROM decisions").fetch_all(&pool).await.unwrap();
    let mut opened: Vec<String> = rows
        .iter()
        .map(|(id, sealed)| {
            let protected = keys.open(id, sealed).unwrap();
            format!(
                "{:?}|{:?}|{:?}",
                protected.personal_status_and_sex, protected.age_in_years, protected.foreign_worker
            )
        })
        .collect();
    let mut replayed: Vec<String> = credit_devtools::dataset::read_german_credit(&data_path())
        .unwrap()
        .into_iter()
        .map(|row| {
            let protected = row.protected_attributes;
            format!(
                "{:?}|{:?}|{:?}",
                protected.personal_status_and_sex, protected.age_in_years, protected.foreign_worker
            )
        })
        .collect();
    opened.sort();
    replayed.sort();
    assert_eq!(opened, replayed, "the sealed values hold exactly the replayed attributes");
    assert!(keys.open(&rows[1].0, &rows[0].1).is_err(), "a sealed value opens on its own row only");
    let other = credit_worker::codec::ProtectedKeys::parse(&credit_worker::codec::ProtectedKeys::generate()).unwrap();
    assert!(other.open(&rows[0].0, &rows[0].1).is_err(), "another key does not open it");

    assert_audit_verifies(&deployment.database_url);
}
