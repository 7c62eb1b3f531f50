//! HTTP endpoint: `/metrics` (Prometheus text), `/health` (process alive), `/ready`
//! (model loaded, consumer joined, PostgreSQL and schema registry reachable), `/fairness`
//! (fairness and drift windows, metrics with intervals, alert states, as JSON), and the
//! token-protected `admin` routes.

mod admin;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{Retriable, Retry};
use crate::monitor::Monitoring;
use crate::telemetry::{Metrics, Readiness};
pub(crate) use admin::Admin;

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

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address is taken or not ours: retrying the same address will not help.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
}

impl Retriable for HttpError {
    /// A listen address that failed stays failed.
    fn retry(&self) -> Retry {
        Retry::Never
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
) -> Result<SocketAddr, HttpError> {
    let bind = |source| HttpError::Bind { address, source };
    let listener = TcpListener::bind(address).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let app = router(metrics, readiness, monitoring, admin);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(%error, "http server failed");
        }
    });
    Ok(bound)
}

/// Text exposition by default; the protobuf exposition when the scraper asks for it (Prometheus
/// with native histograms, and the development tools, which read values exactly from it).
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or_default();
    if accept.contains("application/vnd.google.protobuf") {
        ([(header::CONTENT_TYPE, prometheus::PROTOBUF_FORMAT)], state.metrics.render_protobuf()).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
    }
}

async fn fairness_handler(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.monitoring.report())
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.readiness.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}
