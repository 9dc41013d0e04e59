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

/// Most leaves in one answer of `GET /v1/log/directory`.
pub const MAX_DIRECTORY_LEAVES: usize = 256;

/// Largest answer of `GET /v1/log/directory` a client reads (bytes): a
/// full page of the largest entries with their proofs.
pub const MAX_DIRECTORY_BODY: usize =
    MAX_DIRECTORY_LEAVES * (2 * crate::log::tiles::MAX_ENTRY_BYTES + 8 * 1024);

/// The directory leaves of the log (certificates and CRLs published) from
/// a leaf index on, each with its inclusion proof at `tree_size`
/// (`GET /v1/log/directory?from=N&size=S`). Any authenticated caller may
/// read them: receipt leaves are not in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryLeaves {
    /// The tree size every proof leads to (the `size` asked for).
    pub tree_size: u64,
    /// The leaves with index in `[from, tree_size)`, in log order, at most
    /// [`MAX_DIRECTORY_LEAVES`].
    pub leaves: Vec<DirectoryLeaf>,
    /// Where the next page starts (`from`), when this page is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// One directory leaf of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryLeaf {
    /// Leaf index.
    pub index: u64,
    /// The exact entry text (a `certificate` or `crl` log entry).
    pub entry: String,
    /// Inclusion proof of the leaf at the answer's `tree_size`.
    #[serde(with = "crate::log::b64::hashes")]
    pub inclusion: Vec<crate::log::Hash>,
}

impl DirectoryLeaf {
    /// What the leaf publishes: for a certificate, the ID the entry names,
    /// the certificate (parsed, not verified) and when it was published;
    /// `None` for a CRL. Any other entry (a receipt), or a certificate
    /// that cannot be read, is refused.
    pub fn certificate(
        &self,
    ) -> Result<Option<(String, crate::pki::CertInfo, String)>, DirectoryLeavesError> {
        use crate::receipt::LogEntry;
        match LogEntry::parse(self.entry.as_bytes()) {
            Ok(LogEntry::Certificate {
                facility_id,
                certificate,
                published_at,
            }) => {
                let c =
                    crate::pki::CertInfo::parse_pem(certificate.as_bytes(), "logged certificate")
                        .map_err(|e| {
                        DirectoryLeavesError(format!(
                            "leaf {} holds no readable certificate: {e}",
                            self.index
                        ))
                    })?;
                Ok(Some((facility_id, c, published_at)))
            }
            Ok(LogEntry::Crl { .. }) => Ok(None),
            _ => Err(DirectoryLeavesError(format!(
                "leaf {} is not a certificate or CRL entry",
                self.index
            ))),
        }
    }
}

/// Why an answer of `GET /v1/log/directory` was refused.
#[derive(Debug, thiserror::Error)]
#[error("the relay's list of directory leaves is malformed: {0}")]
pub struct DirectoryLeavesError(String);

impl DirectoryLeaves {
    /// Parse an answer from untrusted bytes: the asked-for `from` and
    /// `size`, at most [`MAX_DIRECTORY_LEAVES`] leaves, strictly
    /// increasing indices in `[from, size)`, entries of at most 64 KiB, a
    /// `next` only after a full page and past the last leaf. Inclusion
    /// proofs are checked by the caller against its checkpoint.
    pub fn parse(bytes: &[u8], from: u64, size: u64) -> Result<Self, DirectoryLeavesError> {
        let bad = |s: String| DirectoryLeavesError(s);
        if bytes.len() > MAX_DIRECTORY_BODY {
            return Err(bad("too large".into()));
        }
        let v: DirectoryLeaves = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if v.tree_size != size {
            return Err(bad(format!(
                "it answers for tree size {}, not the {size} asked for",
                v.tree_size
            )));
        }
        if v.leaves.len() > MAX_DIRECTORY_LEAVES {
            return Err(bad(format!("{} leaves in one page", v.leaves.len())));
        }
        let mut low = from;
        for l in &v.leaves {
            if l.index < low || l.index >= size {
                return Err(bad(format!(
                    "leaf index {} is out of order or outside [{from}, {size})",
                    l.index
                )));
            }
            if l.entry.len() > crate::log::tiles::MAX_ENTRY_BYTES {
                return Err(bad(format!("leaf {} is over 64 KiB", l.index)));
            }
            low = l.index + 1;
        }
        match v.next {
            None => {}
            Some(n) if v.leaves.len() == MAX_DIRECTORY_LEAVES && n == low && n < size => {}
            Some(n) => return Err(bad(format!("next page at {n} does not follow this one"))),
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(indices: &[u64], size: u64, next: Option<u64>) -> Vec<u8> {
        serde_json::to_vec(&DirectoryLeaves {
            tree_size: size,
            leaves: indices
                .iter()
                .map(|&index| DirectoryLeaf {
                    index,
                    entry: "{}".into(),
                    inclusion: vec![[7; 32]],
                })
                .collect(),
            next,
        })
        .unwrap()
    }

    #[test]
    fn directory_leaves_parse_and_round_trip() {
        let b = page(&[2, 5, 9], 10, None);
        let p = DirectoryLeaves::parse(&b, 2, 10).unwrap();
        assert_eq!(p.leaves.len(), 3);
        assert_eq!(serde_json::to_vec(&p).unwrap(), b);
        let full: Vec<u64> = (0..MAX_DIRECTORY_LEAVES as u64).collect();
        let n = MAX_DIRECTORY_LEAVES as u64;
        DirectoryLeaves::parse(&page(&full, n + 5, Some(n)), 0, n + 5).unwrap();
        DirectoryLeaves::parse(&page(&[], 0, None), 0, 0).unwrap();
    }

    #[test]
    fn directory_leaves_refuse_what_was_not_asked_for() {
        let refused = |b: &[u8], from: u64, size: u64| {
            DirectoryLeaves::parse(b, from, size)
                .expect_err("refused")
                .to_string()
        };
        // Another tree size, a leaf before `from`, at or past the size,
        // out of order or repeated.
        assert!(refused(&page(&[2], 10, None), 0, 11).contains("tree size 10"));
        assert!(refused(&page(&[1], 10, None), 2, 10).contains("leaf index 1"));
        assert!(refused(&page(&[10], 10, None), 0, 10).contains("leaf index 10"));
        assert!(refused(&page(&[5, 3], 10, None), 0, 10).contains("leaf index 3"));
        assert!(refused(&page(&[5, 5], 10, None), 0, 10).contains("leaf index 5"));
        // `next` only after a full page, right after its last leaf.
        assert!(refused(&page(&[5], 10, Some(6)), 0, 10).contains("next page"));
        let full: Vec<u64> = (0..MAX_DIRECTORY_LEAVES as u64).collect();
        let n = MAX_DIRECTORY_LEAVES as u64;
        assert!(refused(&page(&full, n + 5, Some(n + 1)), 0, n + 5).contains("next page"));
        assert!(refused(&page(&full, n, Some(n)), 0, n).contains("next page"));
        let over: Vec<u64> = (0..=MAX_DIRECTORY_LEAVES as u64).collect();
        assert!(refused(&page(&over, n + 5, None), 0, n + 5).contains("leaves in one page"));
        // Unknown fields, bad hashes, no JSON, too large.
        assert!(!refused(br#"{"tree_size":1,"leaves":[],"extra":1}"#, 0, 1).is_empty());
        assert!(!refused(
            br#"{"tree_size":1,"leaves":[{"index":0,"entry":"{}","inclusion":["AAAA"]}]}"#,
            0,
            1
        )
        .is_empty());
        assert!(!refused(b"", 0, 1).is_empty());
        assert!(!refused(b"\xff", 0, 1).is_empty());
        let big = vec![b' '; MAX_DIRECTORY_BODY + 1];
        assert!(refused(&big, 0, 1).contains("too large"));
        let long = serde_json::to_vec(&DirectoryLeaves {
            tree_size: 1,
            leaves: vec![DirectoryLeaf {
                index: 0,
                entry: "x".repeat(crate::log::tiles::MAX_ENTRY_BYTES + 1),
                inclusion: vec![],
            }],
            next: None,
        })
        .unwrap();
        assert!(refused(&long, 0, 1).contains("over 64 KiB"));
    }
}
