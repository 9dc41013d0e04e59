//! The transparency log, served as C2SP tlog-tiles plus two convenience
//! proofs (docs/LOG.md).
//!
//! - `GET /v1/log/checkpoint`: the newest signed checkpoint (anyone).
//! - `GET /v1/log/tile/<L>/<N>[.p/<W>]`: hash tiles (anyone: hashes only).
//! - `GET /v1/log/tile/entries/<N>[.p/<W>]`: entry bundles (auditors only).
//! - `GET /v1/log/proof/inclusion?index=I&size=S` (anyone).
//! - `GET /v1/log/proof/consistency?from=A&to=B` (anyone).
//! - `GET /v1/log/directory?from=N&size=S`: the directory leaves
//!   (certificates and CRLs published) from index N, with their inclusion
//!   proofs at size S (anyone: receipt leaves are not in it).

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::api::{DirectoryLeaf, DirectoryLeaves, MAX_DIRECTORY_LEAVES};
use crate::identity::Kind;
use crate::log::tiles::{self, TileKind, TilePath};
use crate::log::{ConsistencyProof, InclusionProof};
use crate::relay::error::ApiError;
use crate::relay::store::StoreError;
use crate::relay::{AppState, Caller};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/log/checkpoint", get(checkpoint))
        .route("/v1/log/tile/{*path}", get(tile))
        .route("/v1/log/proof/inclusion", get(inclusion))
        .route("/v1/log/proof/consistency", get(consistency))
        .route("/v1/log/directory", get(directory))
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(d) => ApiError::bad_request(d),
        other => other.into(),
    }
}

async fn checkpoint(State(st): State<AppState>) -> Result<Response, ApiError> {
    let (_, note) = st
        .store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::not_found("the log is empty"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        note,
    )
        .into_response())
}

async fn tile(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let tp = TilePath::parse(&format!("tile/{path}"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let size = st.store.log_size().await?;
    if !tp.is_available(size) {
        return Err(ApiError::not_found("no such tile at the current tree size"));
    }
    let body = match tp.kind {
        TileKind::Hashes { .. } => {
            let hashes = st.store.nodes(&tp.node_ids()).await.map_err(store_err)?;
            tiles::encode_tile(&hashes).map_err(ApiError::internal)?
        }
        TileKind::Entries => {
            if caller.0.kind != Kind::Auditor {
                return Err(ApiError::forbidden("only auditors read log entries"));
            }
            let (start, end) = tp
                .entry_range()
                .ok_or_else(|| ApiError::bad_request("tile out of range"))?;
            let entries = st.store.entries(start, end).await.map_err(store_err)?;
            tiles::encode_entry_bundle(&entries).map_err(ApiError::internal)?
        }
    };
    let cache = if tp.is_partial() {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    size: u64,
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// Check a requested tree size against the log.
async fn check_size(st: &AppState, size: u64) -> Result<(), ApiError> {
    if size > st.store.log_size().await? {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the tree size is larger than the log",
        ));
    }
    Ok(())
}

async fn inclusion(
    State(st): State<AppState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    check_size(&st, q.size).await?;
    let proof = st
        .store
        .inclusion_proof(q.index, q.size)
        .await
        .map_err(store_err)?;
    Ok(Json(InclusionProof {
        leaf_index: q.index,
        tree_size: q.size,
        hashes: proof,
    }))
}

async fn consistency(
    State(st): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    check_size(&st, q.to).await?;
    let proof = st
        .store
        .consistency_proof(q.from, q.to)
        .await
        .map_err(store_err)?;
    Ok(Json(ConsistencyProof {
        size1: q.from,
        size2: q.to,
        hashes: proof,
    }))
}

#[derive(Deserialize)]
struct DirectoryQuery {
    from: u64,
    size: u64,
}

/// Directory leaves from `from` below `size`, each with its inclusion
/// proof at `size` (the size of the checkpoint the caller verified), at
/// most [`MAX_DIRECTORY_LEAVES`]; `next` says where a full page continues.
async fn directory(
    State(st): State<AppState>,
    Query(q): Query<DirectoryQuery>,
) -> Result<Json<DirectoryLeaves>, ApiError> {
    check_size(&st, q.size).await?;
    let rows = st
        .store
        .directory_leaves(q.from, q.size, MAX_DIRECTORY_LEAVES)
        .await
        .map_err(store_err)?;
    let mut leaves = Vec::with_capacity(rows.len());
    for (index, entry) in rows {
        let inclusion = st
            .store
            .inclusion_proof(index, q.size)
            .await
            .map_err(store_err)?;
        leaves.push(DirectoryLeaf {
            index,
            entry,
            inclusion,
        });
    }
    let next = match leaves.last() {
        Some(l) if leaves.len() == MAX_DIRECTORY_LEAVES && l.index + 1 < q.size => {
            Some(l.index + 1)
        }
        _ => None,
    };
    Ok(Json(DirectoryLeaves {
        tree_size: q.size,
        leaves,
        next,
    }))
}
