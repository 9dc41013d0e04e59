//! The log's checkpoint key transitions (docs/LOG.md §8).
//!
//! - `GET /v1/log/key-transitions`: every key-transition entry of the log,
//!   oldest first, each with its announcement checkpoint (signed by the
//!   key before) and the entry's inclusion proof in it, as a JSON array of
//!   [`TransitionProof`] (anyone: the entries name public keys only).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::receipt::key_transition::TransitionProof;
use crate::relay::error::ApiError;
use crate::relay::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/log/key-transitions", get(key_transitions))
}

async fn key_transitions(
    State(st): State<AppState>,
) -> Result<Json<Vec<TransitionProof>>, ApiError> {
    Ok(Json(st.store.key_transitions().await?))
}
