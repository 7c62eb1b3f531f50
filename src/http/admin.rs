//! Admin endpoints for the model lifecycle, behind a bearer token (constant-time check):
//! - `GET /admin/model`: active, previous and shadow models, and the shadow comparison;
//! - `POST /admin/model/activate` `{"version": "credit-v2"}`: load, verify, then switch between batches;
//! - `POST /admin/model/rollback`: back to the previous model (kept loaded);
//! - `PUT /admin/model/shadow` `{"version": ...}` / `DELETE /admin/model/shadow`: set or clear the challenger.
//!
//! With no token configured every admin route answers 404: the API is off, not open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::AdminToken;
use crate::model::{ModelError, ModelManager};
use crate::monitor::ShadowComparison;

/// What the admin routes act on.
#[derive(Clone)]
pub struct Admin {
    pub models: Arc<ModelManager>,
    pub shadow: Arc<ShadowComparison>,
    pub token: Option<AdminToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionRequest {
    version: String,
}

/// The admin routes, each behind the token check.
pub fn routes(admin: Admin) -> Router {
    Router::new()
        .route("/admin/model", get(status))
        .route("/admin/model/activate", post(activate))
        .route("/admin/model/rollback", post(rollback))
        .route("/admin/model/shadow", put(set_shadow).delete(clear_shadow))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let Some(token) = &admin.token else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "admin API disabled: no token configured"})))
            .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        _ => {
            tracing::warn!(path = %request.uri().path(), "admin request rejected: missing or wrong bearer token");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "a valid bearer token is required"})),
            )
                .into_response()
        }
    }
}

async fn status(State(admin): State<Admin>) -> Response {
    Json(json!({"models": admin.models.status(), "shadow_comparison": admin.shadow.summary()})).into_response()
}

async fn activate(State(admin): State<Admin>, Json(request): Json<VersionRequest>) -> Response {
    respond(&admin, "activate", admin.models.activate(&request.version).await)
}

async fn rollback(State(admin): State<Admin>) -> Response {
    respond(&admin, "rollback", admin.models.rollback().await)
}

async fn set_shadow(State(admin): State<Admin>, Json(request): Json<VersionRequest>) -> Response {
    respond(&admin, "shadow", admin.models.set_shadow(Some(&request.version)).await)
}

async fn clear_shadow(State(admin): State<Admin>) -> Response {
    respond(&admin, "shadow", admin.models.set_shadow(None).await)
}

fn respond<T: serde::Serialize>(admin: &Admin, action: &str, result: Result<T, ModelError>) -> Response {
    match result {
        Ok(status) => Json(json!({"models": status})).into_response(),
        Err(error) => {
            admin.models.refused(action);
            tracing::warn!(action, %error, "model lifecycle change refused");
            let code = match error {
                ModelError::InvalidVersion(_) => StatusCode::BAD_REQUEST,
                ModelError::NoPrevious => StatusCode::CONFLICT,
                ModelError::Interrupted => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (code, Json(json!({"error": error.to_string()}))).into_response()
        }
    }
}
