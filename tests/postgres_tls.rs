//! TLS to PostgreSQL, for real: against a server that accepts TLS connections only, the worker
//! audits over `sslmode=verify-full` with the test's CA, and refuses, with an error naming the
//! setting, a server its CA did not sign or whose certificate does not name the host it dialled.

mod common;

use std::time::{Duration, Instant};

use common::tls_postgres::TlsPostgres;
use common::*;
use credit_devtools::replay::{replay, ReplayOptions};

/// The worker decides 50 applications with its audit database behind verify-full TLS: 50 rows,
/// every client connection the server sees is encrypted, a plain-text connection is refused
/// (so the worker cannot have used one), and `audit verify` passes over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_audits_over_verified_tls() {
    let server = TlsPostgres::start();
    let mut deployment = Deployment::create("pgtls", 1).await;
    deployment.database_url = server.url("localhost", &server.ca);
    let mut worker = WorkerProcess::start(&deployment, &[]);
    worker.wait_ready(Duration::from_secs(90)).await;
    replay(&ReplayOptions { count: Some(50), ..deployment.replay_options("tls") }).await.expect("replay");
    let pool = sqlx::PgPool::connect(&deployment.database_url).await.expect("the test connects over verify-full");
    let rows = wait_for_audit_rows(&pool, 50, Duration::from_secs(60)).await;
    assert_eq!(rows, 50, "log: {}", worker.log_text());
    let (plain, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.backend_type = 'client backend'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, 0, "a client connected without TLS");
    assert!(encrypted >= 2, "the worker's pool and the test's connection: {encrypted}");
    let plain_url = format!("postgres://postgres@localhost:{}/postgres?sslmode=disable", server.port);
    let refused = sqlx::PgPool::connect(&plain_url).await.err().map(|error| error.to_string());
    assert!(refused.as_deref().is_some_and(|error| error.contains("no pg_hba.conf entry")), "{refused:?}");
    assert_audit_verifies(&deployment.database_url);
    assert!(worker.terminate(Duration::from_secs(30)));
}

/// Waits for the worker to exit; returns its log.
async fn exit_log(mut worker: WorkerProcess, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = worker.exited() {
            assert!(!status.success(), "exited cleanly: {}", worker.log_text());
            return worker.log_text();
        }
        assert!(Instant::now() < deadline, "still running after {timeout:?}: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CA that did not sign the server's certificate, and a host name the certificate does not
/// hold (127.0.0.1, where it names only localhost): each time the worker stops with an error
/// that names `database.url` and says the certificate failed verification; it never retries a
/// verification failure forever while reporting itself merely "not ready".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_ca_did_not_sign_or_a_wrong_host_is_refused() {
    let server = TlsPostgres::start();
    let mut deployment = Deployment::create("pgtlswrong", 1).await;
    for (host, ca) in [("localhost", &server.wrong_ca), ("127.0.0.1", &server.ca)] {
        deployment.database_url = server.url(host, ca);
        let worker = WorkerProcess::start(&deployment, &[]);
        let log = exit_log(worker, Duration::from_secs(60)).await;
        assert!(log.contains("database.url"), "{host}: the error names the setting: {log}");
        assert!(log.contains("certificate verify failed"), "{host}: {log}");
    }
    assert!(server.log().contains("SSL"), "the server saw the TLS handshakes fail: {}", server.log());
}
