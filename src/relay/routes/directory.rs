//! The facility directory and the CRL.
//!
//! - `POST /v1/directory` (PEM body): a facility publishes its own certificate.
//! - `GET /v1/directory?name=&kind=`: search.
//! - `GET /v1/directory/{id}`: one certificate.
//! - `PUT /v1/crl` (PEM body): anyone authenticated may publish a CRL signed by the CA, if newer.
//! - `GET /v1/crl`: the current CRL.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::facility;
use crate::api::DirectoryEntry;
use crate::pki::crl_number;
use crate::pki::{CertInfo, TrustStore};
use crate::relay::error::ApiError;
use crate::relay::{AppState, Caller};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/directory", post(publish).get(search))
        .route("/v1/directory/{id}", get(show))
        .route(
            "/v1/crl",
            get(get_crl)
                .put(put_crl)
                .layer(axum::extract::DefaultBodyLimit::max(4 << 20)),
        )
}

fn entry(pem: &str) -> Option<DirectoryEntry> {
    let info = CertInfo::parse_pem(pem.as_bytes(), "directory").ok()?;
    Some(DirectoryEntry {
        facility_id: info.id.to_string(),
        name: info.name,
        kind: info.kind.to_string(),
        certificate: pem.to_string(),
    })
}

async fn publish(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let me = facility(&caller)?;
    if body.len() > 16 * 1024 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a certificate is at most 16 KiB",
        ));
    }
    let info = CertInfo::parse_pem(&body, "published certificate")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let info = st
        .trust()
        .verify(&info.der, None)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if info.id.facility() != Some(&me) || info.fingerprint != caller.0.fingerprint {
        return Err(ApiError::forbidden(
            "a facility may publish only its own certificate, the one it connects with",
        ));
    }
    let logged = st
        .store
        .directory_put(
            me.as_str(),
            info.kind.as_str(),
            &info.name,
            &info.pem(),
            &info.fingerprint,
        )
        .await?;
    // Publishing the certificate already published is not a change: 200,
    // and nothing is logged.
    let status = if logged.is_some() {
        tracing::info!(facility = %me, "certificate published");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry(&info.pem()))))
}

#[derive(Deserialize)]
struct SearchQuery {
    name: Option<String>,
    kind: Option<String>,
}

async fn search(
    State(st): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<DirectoryEntry>>, ApiError> {
    let all = st.store.directory_all().await?;
    let out = all
        .iter()
        .filter_map(|p| entry(p))
        .filter(|e| q.name.as_deref().is_none_or(|n| e.name.contains(n)))
        .filter(|e| q.kind.as_deref().is_none_or(|k| e.kind == k))
        .collect();
    Ok(Json(out))
}

async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DirectoryEntry>, ApiError> {
    let pem = st
        .store
        .directory_get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{id} has not published a certificate")))?;
    entry(&pem)
        .map(Json)
        .ok_or_else(|| ApiError::internal("stored certificate unreadable"))
}

async fn get_crl(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // The newest CRL: one published through the relay, or the relay profile's.
    let pem = match st.trust().crl_der() {
        Some(der) => pem::encode(&pem::Pem::new("X509 CRL", der.to_vec())),
        None => {
            st.store
                .crl_get()
                .await?
                .ok_or_else(|| ApiError::not_found("no CRL has been published yet"))?
                .1
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], pem))
}

async fn put_crl(State(st): State<AppState>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    if body.len() > 4 << 20 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a CRL is at most 4 MiB",
        ));
    }
    // Another instance on the same database may have installed a newer CRL.
    if let Err(e) = st.refresh_crl().await {
        tracing::warn!(error = %e, "CRL refresh failed");
    }
    let current = st.trust();
    let new = TrustStore::new(current.ca_der(), Some(&body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (old_n, new_n) = (crl_number(current.crl_der()), crl_number(new.crl_der()));
    if new_n <= old_n {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("CRL number {new_n} is not newer than the current {old_n}"),
        ));
    }
    let pem = pem::encode(&pem::Pem::new(
        "X509 CRL",
        new.crl_der().expect("has CRL").to_vec(),
    ));
    let logged = st
        .store
        .crl_put(&new_n.to_string(), &pem)
        .await
        .map_err(|e| match e {
            crate::relay::store::StoreError::Invalid(d) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, d)
            }
            other => other.into(),
        })?;
    if logged.is_none() {
        // Another instance stored a newer (or the same) CRL meanwhile.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("CRL number {new_n} is not newer than the relay's current CRL"),
        ));
    }
    st.install_crl(new).map_err(ApiError::internal)?;
    tracing::info!(crl_number = %new_n, "CRL published");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "crl_number": new_n })),
    ))
}
