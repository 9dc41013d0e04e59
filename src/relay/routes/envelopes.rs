//! Envelopes and their receipts.
//!
//! - `POST /v1/envelopes`: upload ciphertext with a signed submission
//!   (header `Renkei-Submission`); answered with the acceptance receipt.
//! - `GET /v1/inbox`: envelopes waiting for the caller.
//! - `GET /v1/sent`: envelopes the caller sent.
//! - `GET /v1/envelopes/{id}`: download (recipients only).
//! - `POST /v1/envelopes/{id}/receipts`: a recipient's delivery receipt.
//! - `GET /v1/envelopes/{id}/receipts`: receipts (sender, recipients, auditors).
//! - `GET /v1/receipts?after=N&limit=M`: the receipt log (auditors).

use std::collections::HashSet;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;

use super::facility;
use crate::api::{
    EnvelopeSummary, LoggedReceipt, ReceiptBundle, ReceiptsResponse, SubmitResponse,
    MAX_RECIPIENTS, SUBMISSION_HEADER,
};
use crate::identity::Kind;
use crate::package::header::{check_prefix, HeaderError, MAX_HEADER_BYTES};
use crate::receipt::{self, Delivery, Outcome, Purpose, SignedReceipt, Submission};
use crate::relay::blobs::BlobError;
use crate::relay::error::ApiError;
use crate::relay::sequencer::Accepted;
use crate::relay::store::EnvelopeRow;
use crate::relay::{AppState, Caller};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/envelopes",
            post(submit).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/inbox", get(inbox))
        .route("/v1/sent", get(sent))
        .route("/v1/envelopes/{id}", get(download))
        .route(
            "/v1/envelopes/{id}/receipts",
            get(receipts)
                .post(post_receipt)
                .layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
        )
        .route("/v1/receipts", get(log))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if receipt::valid_envelope_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "an envelope ID is 64 lowercase hex digits (SHA-256 of the ciphertext)",
        ))
    }
}

async fn submit(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut body = Some(body.into_data_stream());
    let result = submit_inner(&st, &caller, &headers, &mut body).await;
    if let Some(rest) = body.take() {
        drain(rest, st.config.max_upload_bytes);
    }
    result
}

/// Whether `head`, the first bytes of an upload, hold a whole age header
/// within [`MAX_HEADER_BYTES`]: `Ok(false)` while more bytes may still
/// complete it (unless `at_end`), 400 when it cannot.
fn check_envelope_head(head: &[u8], at_end: bool) -> Result<bool, ApiError> {
    match check_prefix(head) {
        Ok(_) => Ok(true),
        Err(HeaderError::Truncated) if !at_end => Ok(false),
        Err(e) => Err(ApiError::bad_request(format!(
            "the envelope is not a renkei package: {e}; nothing was stored"
        ))),
    }
}

/// Read and discard the rest of a refused upload in the background (bounded
/// in bytes and time), so that the client receives the answer instead of a
/// connection reset.
fn drain(mut stream: axum::body::BodyDataStream, max: u64) {
    tokio::spawn(async move {
        let mut n = 0u64;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(Ok(c)) = stream.next().await {
                n += c.len() as u64;
                if n > max {
                    break;
                }
            }
        })
        .await;
    });
}

async fn submit_inner(
    st: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &mut Option<axum::body::BodyDataStream>,
) -> Result<Response, ApiError> {
    let st = st.clone();
    let caller = caller.clone();
    let me = facility(&caller)?;
    let raw = headers.get(SUBMISSION_HEADER).ok_or_else(|| {
        ApiError::bad_request("missing Renkei-Submission header (the signed submission receipt)")
    })?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .map_err(|_| ApiError::bad_request("Renkei-Submission is not base64"))?;
    let signed =
        SignedReceipt::from_json(&json).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let sub: Submission = signed
        .parse(Purpose::Submission)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    signed.verify(&caller.0.signing_key).map_err(|_| {
        ApiError::forbidden("the submission is not signed by the connecting facility's key")
    })?;
    if sub.sender != me || sub.sender_cert_sha256 != caller.0.fingerprint {
        return Err(ApiError::forbidden(
            "the submission names another sender than the connecting facility",
        ));
    }
    check_id(&sub.envelope_id)?;
    let unique: HashSet<_> = sub.recipients.iter().collect();
    if sub.recipients.is_empty()
        || sub.recipients.len() > MAX_RECIPIENTS
        || unique.len() != sub.recipients.len()
    {
        return Err(ApiError::bad_request(format!(
            "1 to {MAX_RECIPIENTS} distinct recipients are required"
        )));
    }
    if sub.size > st.config.max_upload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "this relay accepts packages up to {} bytes; this one is {}",
                st.config.max_upload_bytes, sub.size
            ),
        ));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len != sub.size {
            return Err(ApiError::bad_request(
                "Content-Length differs from the signed size",
            ));
        }
    }
    if let Some(env) = st.store.envelope(&sub.envelope_id).await? {
        if env.sender != me.as_str() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "this envelope was submitted by another facility",
            ));
        }
        if let Some(resp) = stored_acceptance(&st, &sub.envelope_id).await? {
            return Ok(resp);
        }
    }
    // Quotas: uploads in progress on this instance, then what the facility
    // had accepted in the last 24 hours (all instances).
    let _slot = st
        .upload_slot(me.as_str(), st.config.quota_concurrent_uploads)
        .ok_or_else(|| {
            ApiError::too_many(
                format!(
                    "{me} already has {} uploads in progress; wait for one to finish",
                    st.config.quota_concurrent_uploads
                ),
                5,
            )
        })?;
    check_daily_quota(&st, &me, sub.size).await?;

    // Stream into a staged blob, hashing; nothing is visible until
    // committed, and a staged blob dropped on any error below is removed.
    let mut staged = st
        .store
        .blobs()
        .stage(&sub.envelope_id, sub.size)
        .await
        .map_err(blob_error)?;
    // The first bytes must hold a bounded age header (see
    // package::header): a ciphertext that no renkei opener would read is
    // refused before it is stored.
    let mut head: Vec<u8> = Vec::new();
    let mut head_ok = false;
    {
        let stream = body
            .as_mut()
            .ok_or_else(|| ApiError::internal("the body was read twice"))?;
        let stall = std::time::Duration::from_secs(st.config.body_read_timeout_secs.max(1));
        while let Some(chunk) = tokio::time::timeout(stall, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the upload stalled (no data for a while); nothing was stored. Send it again",
                )
            })?
        {
            let chunk = chunk.map_err(|_| ApiError::bad_request("the upload was interrupted"))?;
            let n = staged.len() + chunk.len() as u64;
            if n > sub.size {
                return Err(if n > st.config.max_upload_bytes {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the upload exceeds the relay's size limit",
                    )
                } else {
                    ApiError::bad_request("the upload is longer than the signed size")
                });
            }
            if !head_ok {
                let want = MAX_HEADER_BYTES - head.len().min(MAX_HEADER_BYTES);
                head.extend_from_slice(&chunk[..chunk.len().min(want)]);
                head_ok = check_envelope_head(&head, false)?;
            }
            staged.write(&chunk).await.map_err(blob_error)?;
        }
    }
    *body = None;
    if !head_ok {
        check_envelope_head(&head, true)?;
    }
    if staged.len() != sub.size || staged.sha256_hex().await.map_err(blob_error)? != sub.envelope_id
    {
        return Err(ApiError::bad_request(
            "the uploaded bytes do not match the signed submission (size or SHA-256)",
        ));
    }
    staged.commit(&sub.envelope_id).await.map_err(blob_error)?;
    match st.store.accept(&signed, &sub).await {
        Ok(Accepted::New { acceptance, leaf }) => {
            tracing::info!(envelope = %sub.envelope_id, sender = %me, size = sub.size, "accepted");
            let bundle = ReceiptBundle {
                log_index: leaf.log_index,
                signer: st.id.clone(),
                receipt: acceptance.clone(),
                entry: leaf.entry,
                inclusion: leaf.inclusion,
                // The batch that appended the leaf checked that the log's
                // key transitions are still those this instance started with.
                key_transitions: st
                    .transitions
                    .iter()
                    .filter(|t| t.log_index <= leaf.log_index)
                    .cloned()
                    .collect(),
                checkpoint: leaf.checkpoint,
                relay_certificate: st.cert.pem(),
                signer_certificate: None,
            };
            Ok((
                StatusCode::CREATED,
                Json(SubmitResponse {
                    acceptance,
                    created: true,
                    bundle: Some(bundle),
                }),
            )
                .into_response())
        }
        // A concurrent identical upload was accepted first.
        Ok(Accepted::Existing) => stored_acceptance(&st, &sub.envelope_id)
            .await?
            .ok_or_else(|| ApiError::internal("an accepted envelope has no acceptance")),
        Err(e) => Err(e.into()),
    }
}

/// The answer to a resubmission of an accepted envelope: its stored
/// acceptance (200), with its bundle against the newest checkpoint.
async fn stored_acceptance(st: &AppState, id: &str) -> Result<Option<Response>, ApiError> {
    let Some(row) = st
        .store
        .receipts(id)
        .await?
        .into_iter()
        .find(|r| r.receipt.purpose == Purpose::Acceptance)
    else {
        return Ok(None);
    };
    let (size, checkpoint) = st
        .store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::internal("receipts exist but no checkpoint"))?;
    let acceptance = row.receipt.clone();
    let transitions = key_transitions_to(st, size).await?;
    let b = bundle(st, row, size, &checkpoint, &transitions).await?;
    Ok(Some(
        (
            StatusCode::OK,
            Json(SubmitResponse {
                acceptance,
                created: false,
                bundle: Some(b),
            }),
        )
            .into_response(),
    ))
}

/// Refuse (429, or 413 when it can never fit) an upload of `size` bytes
/// that would take `me` over its daily quotas.
async fn check_daily_quota(
    st: &AppState,
    me: &crate::identity::FacilityId,
    size: u64,
) -> Result<(), ApiError> {
    let (max_n, max_bytes) = (
        st.config.quota_uploads_per_day,
        st.config.quota_bytes_per_day,
    );
    if max_n == 0 && max_bytes == 0 {
        return Ok(());
    }
    if max_bytes > 0 && size > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("this package ({size} bytes) is larger than {me}'s daily quota of {max_bytes} bytes"),
        ));
    }
    const DAY: i64 = 24 * 3600;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (n, bytes, oldest) = st.store.sender_usage(me.as_str(), now - DAY).await?;
    let over_n = max_n > 0 && n >= max_n;
    let over_bytes = max_bytes > 0 && bytes.saturating_add(size) > max_bytes;
    if over_n || over_bytes {
        let retry = oldest.map_or(60, |t| (t + DAY - now).max(1)) as u64;
        let what = if over_n {
            format!("{n} uploads (the quota is {max_n} per 24 hours)")
        } else {
            format!("{bytes} bytes (the quota is {max_bytes} per 24 hours)")
        };
        return Err(ApiError::too_many(
            format!("{me} has sent {what}; nothing was stored. Retry after {retry} s"),
            retry,
        ));
    }
    Ok(())
}

/// A blob store failure as a problem: 507 when storage is full, 503 when
/// it is unusable, with nothing of the upload kept.
fn blob_error(e: BlobError) -> ApiError {
    ApiError::from(crate::relay::store::StoreError::Blob(e))
}

async fn summary(st: &AppState, env: &EnvelopeRow) -> Result<EnvelopeSummary, ApiError> {
    Ok(EnvelopeSummary {
        envelope_id: env.envelope_id.clone(),
        sender: env.sender.clone(),
        size: env.size,
        accepted_at: crate::pki::cert::rfc3339(env.accepted_at),
        recipients: st.store.recipients(&env.envelope_id).await?,
    })
}

async fn inbox(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<EnvelopeSummary>>, ApiError> {
    let me = facility(&caller)?;
    let mut out = Vec::new();
    for e in st.store.inbox(me.as_str()).await? {
        out.push(summary(&st, &e).await?);
    }
    Ok(Json(out))
}

async fn sent(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<EnvelopeSummary>>, ApiError> {
    let me = facility(&caller)?;
    let mut out = Vec::new();
    for e in st.store.sent(me.as_str()).await? {
        out.push(summary(&st, &e).await?);
    }
    Ok(Json(out))
}

async fn download(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let me = facility(&caller)?;
    let not_yours = || ApiError::not_found("no such envelope in this facility's inbox");
    let env = st.store.envelope(&id).await?.ok_or_else(not_yours)?;
    if !st
        .store
        .recipients(&id)
        .await?
        .iter()
        .any(|(r, _)| r == me.as_str())
    {
        return Err(not_yours());
    }
    if env.blob_deleted {
        return Err(ApiError::new(
            StatusCode::GONE,
            "the ciphertext was deleted after its retention period",
        ));
    }
    // Only while this recipient's outcome is pending (checked and noted
    // in one statement, so an expiry cannot slip in between).
    if !st.store.mark_fetched(&id, me.as_str()).await? {
        return Err(ApiError::new(
            StatusCode::GONE,
            "an outcome (delivery, rejection or expiry) is already recorded for this facility; \
             the relay no longer serves it this ciphertext",
        ));
    }
    let file = st
        .store
        .blobs()
        .open(&id)
        .await
        .map_err(blob_error)?
        .ok_or_else(|| {
            ApiError::internal(format!(
                "the ciphertext of accepted envelope {id} is missing"
            ))
        })?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, env.size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn post_receipt(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    check_id(&id)?;
    let me = facility(&caller)?;
    let signed =
        SignedReceipt::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let d: Delivery = signed
        .parse(Purpose::Delivery)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if d.envelope_id != id || d.recipient != me {
        return Err(ApiError::forbidden("a delivery receipt must be for this envelope and signed by the recipient that connects"));
    }
    if !st
        .store
        .recipients(&id)
        .await?
        .iter()
        .any(|(r, _)| r == me.as_str())
    {
        return Err(ApiError::forbidden(
            "this envelope is not addressed to the connecting facility",
        ));
    }
    signed.verify(&caller.0.signing_key).map_err(|_| {
        ApiError::forbidden("the delivery receipt is not signed by the connecting facility's key")
    })?;
    if d.outcome == Outcome::Rejected && d.reason.is_none() {
        return Err(ApiError::bad_request("a rejection needs a reason code"));
    }
    let state = if d.outcome == Outcome::Verified {
        "delivered"
    } else {
        "rejected"
    };
    if st
        .store
        .add_outcome(&id, me.as_str(), state, &signed)
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "an outcome is already recorded for this recipient",
        ));
    }
    tracing::info!(envelope = %id, recipient = %me, outcome = state, "delivery receipt");
    Ok(StatusCode::CREATED)
}

async fn receipts(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ReceiptsResponse>, ApiError> {
    check_id(&id)?;
    let env = st
        .store
        .envelope(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such envelope"))?;
    let recipients = st.store.recipients(&id).await?;
    let me = caller.0.id.to_string();
    let allowed = caller.0.kind == Kind::Auditor
        || env.sender == me
        || recipients.iter().any(|(r, _)| *r == me);
    if !allowed {
        return Err(ApiError::not_found("no such envelope"));
    }
    let rows = st.store.receipts(&id).await?;
    let (size, checkpoint) = st
        .store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::internal("receipts exist but no checkpoint"))?;
    let transitions = key_transitions_to(&st, size).await?;
    let mut bundles = Vec::new();
    for row in rows {
        bundles.push(bundle(&st, row, size, &checkpoint, &transitions).await?);
    }
    Ok(Json(ReceiptsResponse {
        envelope: summary(&st, &env).await?,
        receipts: bundles,
        checkpoint,
        relay_certificate: st.cert.pem(),
    }))
}

/// Build the bundle of one stored receipt at checkpoint `size`, with the
/// log's key transitions up to it (`key_transitions_to`).
pub async fn bundle(
    st: &AppState,
    row: LoggedReceipt,
    size: u64,
    checkpoint: &str,
    transitions: &[crate::receipt::key_transition::TransitionProof],
) -> Result<ReceiptBundle, ApiError> {
    let entry = st
        .store
        .entries(row.log_index, row.log_index + 1)
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("missing log entry"))?;
    let inclusion = st.store.inclusion_proof(row.log_index, size).await?;
    let signer_certificate = if row.signer == st.id {
        None
    } else {
        st.store.directory_get(&row.signer).await?
    };
    Ok(ReceiptBundle {
        log_index: row.log_index,
        signer: row.signer,
        receipt: row.receipt,
        entry,
        inclusion,
        checkpoint: checkpoint.to_string(),
        relay_certificate: st.cert.pem(),
        signer_certificate,
        key_transitions: transitions.to_vec(),
    })
}

/// The log's key transitions announced in trees of at most `size` leaves
/// (what a bundle with a checkpoint of that size carries).
async fn key_transitions_to(
    st: &AppState,
    size: u64,
) -> Result<Vec<crate::receipt::key_transition::TransitionProof>, ApiError> {
    let mut all = st.store.key_transitions().await?;
    all.retain(|t| t.log_index < size);
    Ok(all)
}

#[derive(Deserialize)]
struct LogQuery {
    after: Option<u64>,
    limit: Option<i64>,
}

async fn log(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<LoggedReceipt>>, ApiError> {
    if caller.0.kind != Kind::Auditor {
        return Err(ApiError::forbidden(
            "only auditors read the whole receipt log",
        ));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(
        st.store.receipts_since(q.after.unwrap_or(0), limit).await?,
    ))
}

/// One sweep: expiry receipts for overdue recipients, deletion of finished
/// ciphertext past retention.
pub async fn sweep(st: &AppState) -> Result<(usize, usize), ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut expired = 0;
    for (env, recipient) in st
        .store
        .overdue(now, st.config.expiry_after_secs as i64)
        .await?
    {
        if st.store.expire(&env, &recipient).await?.is_some() {
            tracing::info!(envelope = %env, %recipient, "expired");
            expired += 1;
        }
    }
    let mut deleted = 0;
    for env in st
        .store
        .finished_before(now - st.config.delete_after_secs as i64)
        .await?
    {
        st.store.delete_blob(&env).await?;
        deleted += 1;
    }
    Ok((expired, deleted))
}

/// How old unreferenced ciphertext must be before it is removed.
const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How often the orphan collector runs.
const ORPHAN_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Sweep forever at the configured interval (and collect unreferenced
/// ciphertext and stale staged uploads once an hour).
pub async fn sweep_loop(st: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(
        st.config.sweep_interval_secs.max(1),
    ));
    let mut last_reclaim: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&st).await {
            tracing::warn!(detail = %e.detail, "sweep failed");
        }
        // Unreferenced ciphertext (a process killed between storing a blob
        // and accepting it) and staged uploads left by a killed process,
        // older than a day, at most once an hour.
        if last_reclaim.is_none_or(|t| t.elapsed() >= ORPHAN_SWEEP_EVERY) {
            last_reclaim = Some(std::time::Instant::now());
            match st.store.reclaim_orphans(ORPHAN_MIN_AGE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(blobs = n, "unreferenced ciphertext removed"),
                Err(e) => tracing::warn!(error = %e, "orphan collection failed"),
            }
            // Uploads a killed process was staging (the blob store's own
            // files; nothing refers to them).
            match st
                .store
                .blobs()
                .remove_stale_staged(crate::relay::blobs::STALE_STAGED)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "stale staged uploads removed"),
                Err(e) => tracing::warn!(error = %e, "removing stale staged uploads failed"),
            }
        }
    }
}
