//! The relay's HTTP API on the wire (docs/API.md): the request and response
//! bodies and headers that the relay serves and that facilities and
//! auditors read. Neither side owns them; the relay, the client and the
//! auditor all import them from here, and none imports another's modules.

use serde::{Deserialize, Serialize};

pub use crate::receipt::ReceiptBundle;
use crate::receipt::SignedReceipt;

/// The header carrying the base64 of the signed submission (JSON) on
/// `POST /v1/envelopes`.
pub const SUBMISSION_HEADER: &str = "renkei-submission";

/// Most recipients of one envelope.
pub const MAX_RECIPIENTS: usize = 64;

/// One directory entry as served by `GET /v1/directory[/{id}]`. Clients
/// verify the certificate themselves; the other fields are only hints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Facility ID.
    pub facility_id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// The certificate, PEM.
    pub certificate: String,
}

/// The answer to an upload (`POST /v1/envelopes`).
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The relay's signed acceptance.
    pub acceptance: SignedReceipt,
    /// False when the envelope had been accepted before (idempotent resubmission).
    pub created: bool,
    /// The acceptance as a self-contained receipt bundle: its log entry
    /// and inclusion proof against the checkpoint of the batch it was
    /// appended in (or, for a resubmission, the newest checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<ReceiptBundle>,
}

/// What `GET /v1/health` says about the relay and its promises.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `ok` once the database answers.
    pub status: String,
    /// The relay's ID.
    pub relay: String,
    /// Seconds an accepted envelope waits for its recipients before the
    /// relay may sign an expiry receipt (also in every acceptance).
    pub expiry_after_secs: u64,
    /// Seconds after the last outcome before the ciphertext is deleted.
    pub delete_after_secs: u64,
    /// Largest accepted upload, bytes.
    pub max_upload_bytes: u64,
    /// Most envelopes per facility in any 24 hours (0: no limit).
    pub quota_uploads_per_day: u64,
    /// Most ciphertext bytes per facility in any 24 hours (0: no limit).
    pub quota_bytes_per_day: u64,
    /// Most uploads in progress per facility and relay instance (0: no limit).
    pub quota_concurrent_uploads: usize,
    /// The witnesses' cosignatures on the newest checkpoint, when the
    /// relay has witnesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<WitnessHealth>,
}

/// Whether the newest checkpoint has the witness quorum (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessHealth {
    /// Witnesses configured.
    pub configured: usize,
    /// Cosignatures the relay aims at.
    pub quorum: usize,
    /// Tree size of the newest checkpoint (0 when the log is empty).
    pub size: u64,
    /// Valid cosignatures of configured witnesses on it.
    pub cosignatures: usize,
    /// `cosignatures >= quorum`.
    pub quorum_met: bool,
}

/// Receipts of one envelope, each as a self-contained bundle
/// (`GET /v1/envelopes/{id}/receipts`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptsResponse {
    /// The envelope.
    pub envelope: EnvelopeSummary,
    /// Every receipt, in log order, with its inclusion proof.
    pub receipts: Vec<ReceiptBundle>,
    /// The checkpoint the proofs lead to.
    pub checkpoint: String,
    /// The relay's certificate (PEM), to verify relay-signed receipts offline.
    pub relay_certificate: String,
}

/// What the relay knows of an envelope (`GET /v1/inbox`, `GET /v1/sent`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSummary {
    /// SHA-256 of the ciphertext.
    pub envelope_id: String,
    /// Sender.
    pub sender: String,
    /// Size.
    pub size: i64,
    /// Accepted (RFC 3339).
    pub accepted_at: String,
    /// Recipients and their state (pending, delivered, rejected, expired).
    pub recipients: Vec<(String, String)>,
}

/// One receipt with its position in the relay's log (`GET /v1/receipts`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedReceipt {
    /// Position in the relay's receipt log (0-based).
    pub log_index: u64,
    /// Who signed it (facility or relay ID).
    pub signer: String,
    /// The receipt.
    pub receipt: SignedReceipt,
}
