//! The HTTP endpoint on a loopback port picked by the OS: `/health`, `/ready` following the
//! readiness flags, `/metrics` in the Prometheus text format, `/fairness` as JSON.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use credit_worker::config::WorkerConfig;
use credit_worker::http::serve;
use credit_worker::model::ModelBundle;
use credit_worker::monitor::Monitoring;
use credit_worker::telemetry::Metrics;
use credit_worker::telemetry::Readiness;
use tokio_util::sync::CancellationToken;

/// `/ready` answers 503 naming the failing checks until every check holds, then 200; the
/// other endpoints answer as documented.
#[tokio::test]
async fn endpoints_answer_and_readiness_follows_the_checks() {
    let config = WorkerConfig::load(&common::repo_root().join("config/default.toml"), &BTreeMap::new()).unwrap();
    let bundle = ModelBundle::load(&common::model_dir()).unwrap();
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    let monitoring = Arc::new(Monitoring::new(&config, &bundle.card, metrics.clone()));
    let shutdown = CancellationToken::new();
    let address =
        serve("127.0.0.1:0".parse().unwrap(), metrics, Arc::clone(&readiness), monitoring, None, shutdown.clone())
            .await
            .unwrap();
    let url = |path: &str| format!("http://{address}{path}");

    let health = reqwest::get(url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = reqwest::get(url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["ready"], false);
    assert_eq!(report["database_ok"], false);

    readiness.model_loaded.store(true, Ordering::Release);
    readiness.consumer_joined.store(true, Ordering::Release);
    readiness.database_ok.store(true, Ordering::Release);
    assert_eq!(reqwest::get(url("/ready")).await.unwrap().status(), 503, "registry still failing");
    readiness.schema_registry_ok.store(true, Ordering::Release);
    assert_eq!(reqwest::get(url("/ready")).await.unwrap().status(), 200);

    let metrics = reqwest::get(url("/metrics")).await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains("credit_worker_build_info{version=\"0.1.0\"} 1"), "{text}");
    let exact = credit_devtools::scrape::Exposition::fetch(&url("/metrics")).await.unwrap();
    assert_eq!(exact.value("credit_worker_build_info", &[("version", "0.1.0")]), Some(1.0), "protobuf exposition");

    let fairness: serde_json::Value = reqwest::get(url("/fairness")).await.unwrap().json().await.unwrap();
    assert_eq!(fairness["fairness"]["window_seconds"], 3600);
    assert_eq!(fairness["model_version"], "credit-v1");
    shutdown.cancel();
}
