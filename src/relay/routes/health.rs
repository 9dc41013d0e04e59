//! `GET /v1/health`: the relay and its database answer, and whether the
//! newest checkpoint has the witness quorum.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::relay::error::ApiError;
use crate::relay::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/health", get(health))
}

async fn health(State(st): State<AppState>) -> Result<Json<crate::api::Health>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(st.store.pool())
        .await
        .map_err(|e| ApiError::from(crate::relay::store::StoreError::Db(e)))?;
    let c = &st.config;
    let witnesses = match &st.witnesses {
        None => None,
        Some(w) => {
            let latest = st.store.latest_checkpoint().await?;
            let (size, cosignatures) = latest
                .map(|(size, note)| (size, w.count(&note)))
                .unwrap_or((0, 0));
            Some(crate::api::WitnessHealth {
                configured: w.endpoints().len(),
                quorum: w.quorum(),
                size,
                cosignatures,
                quorum_met: cosignatures >= w.quorum(),
            })
        }
    };
    Ok(Json(crate::api::Health {
        status: "ok".into(),
        relay: st.id.clone(),
        expiry_after_secs: c.expiry_after_secs,
        delete_after_secs: c.delete_after_secs,
        max_upload_bytes: c.max_upload_bytes,
        quota_uploads_per_day: c.quota_uploads_per_day,
        quota_bytes_per_day: c.quota_bytes_per_day,
        quota_concurrent_uploads: c.quota_concurrent_uploads,
        witnesses,
    }))
}
