//! HTTP endpoint: `/metrics` (Prometheus text), `/health` (process alive), `/ready`
//! (model loaded, consumer joined, PostgreSQL and schema registry reachable), `/fairness`
//! (fairness and drift windows, metrics with intervals, alert states, as JSON), and the
//! token-protected [`crate::admin`] routes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::metrics::Metrics;
use crate::monitoring::Monitoring;

/// Readiness inputs, set by the stages that own them.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Model verified and scoring threads started.
    pub model_loaded: AtomicBool,
    /// Consumer group joined (a replica with no partitions is still ready).
    pub consumer_joined: AtomicBool,
    /// Last database operation succeeded.
    pub database_ok: AtomicBool,
    /// Last schema registry call succeeded.
    pub schema_registry_ok: AtomicBool,
}

/// Readiness report.
#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub model_loaded: bool,
    pub consumer_joined: bool,
    pub database_ok: bool,
    pub schema_registry_ok: bool,
}

impl Readiness {
    /// Snapshot of every check.
    pub fn report(&self) -> ReadinessReport {
        let model_loaded = self.model_loaded.load(Ordering::Acquire);
        let consumer_joined = self.consumer_joined.load(Ordering::Acquire);
        let database_ok = self.database_ok.load(Ordering::Acquire);
        let schema_registry_ok = self.schema_registry_ok.load(Ordering::Acquire);
        ReadinessReport {
            ready: model_loaded && consumer_joined && database_ok && schema_registry_ok,
            model_loaded,
            consumer_joined,
            database_ok,
            schema_registry_ok,
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Arc<Readiness>,
    monitoring: Arc<Monitoring>,
}

/// The router, separate from binding so tests can drive it directly.
pub fn router(
    metrics: Metrics,
    readiness: Arc<Readiness>,
    monitoring: Arc<Monitoring>,
    admin: Option<Admin>,
) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .route("/fairness", get(fairness_handler))
        .with_state(AppState { metrics, readiness, monitoring });
    match admin {
        Some(admin) => router.merge(admin::routes(admin)),
        None => router,
    }
}

/// Binds `address` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    address: SocketAddr,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    monitoring: Arc<Monitoring>,
    admin: Option<Admin>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = router(metrics, readiness, monitoring, admin);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(%error, "http server failed");
        }
    });
    Ok(bound)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn fairness_handler(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.monitoring.report())
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.readiness.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}
