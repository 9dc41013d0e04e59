//! Self-contained receipt bundles: a receipt, the exact log entry that
//! holds it, its inclusion proof, a signed checkpoint, and the certificates
//! needed to check the signatures. A bundle verifies offline with only the
//! region's CA certificate and the relay's verifier key.

use serde::{Deserialize, Serialize};

use crate::identity::Kind;
use crate::log::note::Note;
use crate::log::{self, Checkpoint, Hash, Verifier};
use crate::pki::{CertInfo, TrustStore};
use crate::receipt::key_transition::{LogKeys, TransitionProof};
use crate::receipt::{LogEntry, Purpose, SignedReceipt};

/// A receipt with everything needed to verify it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBundle {
    /// Leaf index of the receipt's log entry.
    pub log_index: u64,
    /// Who signed the receipt (facility or relay ID).
    pub signer: String,
    /// The receipt.
    pub receipt: SignedReceipt,
    /// The exact log entry text (its leaf hash is what the tree commits to).
    pub entry: String,
    /// Inclusion proof of the entry in the checkpoint's tree (base64 hashes).
    #[serde(with = "crate::log::b64::hashes")]
    pub inclusion: Vec<Hash>,
    /// The relay's signed checkpoint (C2SP signed note).
    pub checkpoint: String,
    /// The relay's certificate (PEM).
    pub relay_certificate: String,
    /// The signer's certificate (PEM), for receipts signed by a facility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_certificate: Option<String>,
    /// The log's checkpoint key transitions up to the checkpoint, oldest
    /// first (docs/LOG.md §8): how the key that signed the checkpoint
    /// descends from the relay certificate's key. Absent while the
    /// certificate's key signs checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_transitions: Vec<TransitionProof>,
}

/// Why a bundle did not verify. The message names the check.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle.
    #[error("not a receipt bundle: {0}")]
    Malformed(String),
    /// A certificate did not verify.
    #[error("certificate: {0}")]
    Cert(#[from] crate::pki::CertError),
    /// The receipt's signature did not verify.
    #[error("the receipt's signature does not verify with {0}'s certificate")]
    Signature(String),
    /// The log entry does not hold this receipt.
    #[error("the log entry at index {0} does not hold this receipt")]
    Entry(u64),
    /// The checkpoint did not verify.
    #[error("the checkpoint does not verify with the relay's key: {0}")]
    Checkpoint(String),
    /// The checkpoint lacks the witness cosignatures a policy requires.
    #[error("the checkpoint is not witnessed as required: {0}")]
    Witnesses(String),
    /// The inclusion proof did not verify.
    #[error(
        "the receipt at log index {index} is not included in the checkpoint of size {size}: {why}"
    )]
    Inclusion {
        /// Leaf index.
        index: u64,
        /// Checkpoint size.
        size: u64,
        /// Reason.
        why: String,
    },
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The checkpoint it is included in.
    pub checkpoint: Checkpoint,
    /// The signer's certificate.
    pub signer: CertInfo,
    /// The relay's certificate.
    pub relay: CertInfo,
}

/// The log origin of a relay: `<first DNS name>/renkei/<relay ID>`.
pub fn log_origin(cert: &CertInfo) -> String {
    format!(
        "{}/renkei/{}",
        cert.dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("relay"),
        cert.id
    )
}

/// The verifier key of a relay certificate (origin as key name).
pub fn relay_verifier(relay: &CertInfo) -> Result<Verifier, BundleError> {
    Verifier::ed25519(&log_origin(relay), relay.signing_key)
        .map_err(|e| BundleError::Checkpoint(e.to_string()))
}

/// Verify a bundle: the relay certificate chains to the CA (kind relay);
/// certificates are checked as of the receipt's signing time;
/// the checkpoint is signed by `vkey` (or, if `None`, by the relay
/// certificate's key under its origin) or by a checkpoint key that the
/// bundle's key transitions lead to from it (docs/LOG.md §8); the signer's certificate chains to
/// the CA and its key signed the receipt; the entry holds the receipt; the
/// entry is included in the checkpoint.
pub fn verify(
    b: &ReceiptBundle,
    trust: &TrustStore,
    vkey: Option<&Verifier>,
) -> Result<Verified, BundleError> {
    // Certificates are checked as of the receipt's time, so a bundle stays
    // evidence after a certificate expires or is revoked later.
    let at = b
        .receipt
        .signed_at()
        .map_err(|e| BundleError::Malformed(e.to_string()))?;
    let relay = CertInfo::parse_pem(b.relay_certificate.as_bytes(), "relay certificate")?;
    let relay = trust.verify_as_of(&relay.der, at)?;
    if relay.kind != Kind::Relay {
        return Err(BundleError::Malformed(
            "the relay certificate is not a relay's".into(),
        ));
    }
    let own = relay_verifier(&relay)?;
    let vkey = vkey.unwrap_or(&own);
    if vkey.public_key() != &relay.signing_key {
        return Err(BundleError::Checkpoint(
            "the verifier key is not the relay certificate's key".into(),
        ));
    }
    let mut chain = LogKeys::new(vkey.clone());
    chain
        .learn_all(&b.key_transitions)
        .map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    let (cp, _) = chain
        .open(b.checkpoint.as_bytes())
        .map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    let signer = match (&b.receipt.purpose, &b.signer_certificate) {
        (Purpose::Acceptance | Purpose::Expiry, _) => relay.clone(),
        (_, Some(pem)) => {
            let c = CertInfo::parse_pem(pem.as_bytes(), "signer certificate")?;
            trust.verify_as_of(&c.der, at)?
        }
        (_, None) => {
            return Err(BundleError::Malformed(
                "the signer's certificate is missing".into(),
            ))
        }
    };
    // An identity is its kind and its ID: only a facility signs
    // submissions and deliveries, only the relay acceptances and expiries.
    let signer_kind_ok = match b.receipt.purpose {
        Purpose::Acceptance | Purpose::Expiry => signer.kind == Kind::Relay,
        Purpose::Submission | Purpose::Delivery => signer.kind.is_facility(),
    };
    if !signer_kind_ok {
        return Err(BundleError::Malformed(format!(
            "a {} receipt signed by {} ({}), which is not a party that signs it",
            b.receipt.purpose.as_str(),
            signer.id,
            signer.kind
        )));
    }
    if signer.id.to_string() != b.signer {
        return Err(BundleError::Malformed(format!(
            "the bundle names {} as signer, the certificate is {}",
            b.signer, signer.id
        )));
    }
    b.receipt
        .verify(&signer.signing_key)
        .map_err(|_| BundleError::Signature(b.signer.clone()))?;
    match LogEntry::parse(b.entry.as_bytes()) {
        Ok(LogEntry::Receipt { signer: s, receipt }) if s == b.signer && receipt == b.receipt => {}
        _ => return Err(BundleError::Entry(b.log_index)),
    }
    let leaf = log::leaf_hash(b.entry.as_bytes());
    log::verify_inclusion(b.log_index, cp.size, &leaf, &b.inclusion, &cp.root).map_err(|e| {
        BundleError::Inclusion {
            index: b.log_index,
            size: cp.size,
            why: e.to_string(),
        }
    })?;
    Ok(Verified {
        checkpoint: cp,
        signer,
        relay,
    })
}

/// The bundle's log evidence as a C2SP tlog-proof (docs/LOG.md §5.6) whose
/// extra data is the exact log entry, so the proof alone shows which
/// receipt the log holds; with the checkpoint's witness cosignatures it is
/// evidence on its own, offline.
pub fn tlog_proof(b: &ReceiptBundle) -> Result<String, BundleError> {
    log::proof::TlogProof {
        extra: Some(b.entry.as_bytes().to_vec()),
        index: b.log_index,
        inclusion: b.inclusion.clone(),
        checkpoint: b.checkpoint.clone(),
    }
    .encode()
    .map_err(|e| BundleError::Malformed(e.to_string()))
}

/// A receipt that a tlog-proof shows in the log.
#[derive(Debug, Clone)]
pub struct ProvenReceipt {
    /// Its leaf index.
    pub log_index: u64,
    /// Who signed it, as the entry says (the proof holds no certificate:
    /// the signature is checked with the JSON bundle).
    pub signer: String,
    /// The receipt.
    pub receipt: SignedReceipt,
    /// The checkpoint it is included in, and the witnesses that cosigned
    /// it.
    pub cosigned: log::cosignature::Cosigned,
}

/// Verify a tlog-proof written by [`tlog_proof`]: the checkpoint is
/// signed by one of `logs` (the relay's verifier keys: its certificate's
/// and the checkpoint keys it rotated to, one origin) and cosigned by at
/// least `quorum` of `witnesses`, and the entry in its extra data, a
/// receipt, is included in that checkpoint's tree. A tlog-proof carries no
/// key transitions: after a rotation, give the key that signed it (the
/// JSON bundle proves how that key descends from the certificate's).
pub fn verify_tlog_proof(
    text: &[u8],
    logs: &[Verifier],
    witnesses: &[log::cosignature::WitnessKey],
    quorum: usize,
) -> Result<ProvenReceipt, BundleError> {
    let p =
        log::proof::TlogProof::parse(text).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let entry = p
        .extra
        .as_deref()
        .ok_or_else(|| BundleError::Malformed("the proof carries no log entry".into()))?;
    let (signer, receipt) = match LogEntry::parse(entry) {
        Ok(LogEntry::Receipt { signer, receipt }) => (signer, receipt),
        _ => return Err(BundleError::Entry(p.index)),
    };
    let signed_by = Note::parse(p.checkpoint.as_bytes())
        .map_err(|e| BundleError::Checkpoint(e.to_string()))?
        .signatures;
    let log = logs
        .iter()
        .find(|v| {
            signed_by
                .iter()
                .any(|s| s.name == v.name() && s.key_id == v.key_id())
        })
        .ok_or_else(|| BundleError::Checkpoint("no given relay verifier key signed it".into()))?;
    let cosigned = p
        .verify(&log::leaf_hash(entry), log.name(), log, witnesses, quorum)
        .map_err(|e| match e {
            log::proof::ProofError::Inclusion { index, size, why } => {
                BundleError::Inclusion { index, size, why }
            }
            log::proof::ProofError::Checkpoint(e) => cosignature_error(e),
            other => BundleError::Malformed(other.to_string()),
        })?;
    Ok(ProvenReceipt {
        log_index: p.index,
        signer,
        receipt,
        cosigned,
    })
}

/// Require `quorum` valid cosignatures of `witnesses` on the bundle's
/// checkpoint, as signed by the key its key transitions lead to from
/// `root` (the relay certificate's verifier key; [`verify`] checks the
/// rest).
pub fn check_witnesses(
    b: &ReceiptBundle,
    root: &Verifier,
    witnesses: &[log::cosignature::WitnessKey],
    quorum: usize,
) -> Result<Vec<(String, u64)>, BundleError> {
    let mut chain = LogKeys::new(root.clone());
    chain
        .learn_all(&b.key_transitions)
        .map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    let (_, key) = chain
        .open(b.checkpoint.as_bytes())
        .map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    log::cosignature::open(b.checkpoint.as_bytes(), root.name(), key, witnesses, quorum)
        .map(|c| c.witnesses)
        .map_err(cosignature_error)
}

fn cosignature_error(e: log::cosignature::CosignatureError) -> BundleError {
    match e {
        e @ log::cosignature::CosignatureError::NoQuorum { .. } => {
            BundleError::Witnesses(e.to_string())
        }
        e => BundleError::Checkpoint(e.to_string()),
    }
}
