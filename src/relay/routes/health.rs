//! `GET /v1/health`: the relay and its database answer.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::relay::error::ApiError;
use crate::relay::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/health", get(health))
}

async fn health(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(st.store.pool())
        .await
        .map_err(|e| ApiError::from(crate::relay::store::StoreError::Db(e)))?;
    Ok(Json(serde_json::json!({ "status": "ok", "relay": st.id })))
}
