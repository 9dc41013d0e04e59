//! What the relay's receipts say about an envelope, verified: every
//! receipt bundle checks offline (certificates, signatures, inclusion in a
//! checkpoint consistent with what this facility saw before), each receipt
//! is signed by the party its purpose requires, and the verified bundles
//! are kept in the local store. The status of what this facility sent and
//! the size and sender of what it receives are both read from here, and
//! the per-recipient outcome is derived in one place,
//! [`Receipts::from_bundles`].

use serde::Serialize;

use super::ops::{OpError, Session};
use super::store::SentRow;
use super::threads::{Receipts, StepState};
use crate::api::{EnvelopeSummary, ReceiptBundle, ReceiptsResponse};
use crate::identity::{FacilityId, Kind};
use crate::pki::CertInfo;
use crate::receipt::{self, Acceptance, Delivery, Expiry, Purpose, SignedReceipt, Submission};

/// The verified receipts of one envelope.
#[derive(Debug, Clone)]
pub struct VerifiedReceipts {
    /// What the relay says of the envelope (not signed; for display).
    pub envelope: EnvelopeSummary,
    /// The relay's verified certificate.
    pub relay: CertInfo,
    /// Every receipt, verified, in log order.
    pub bundles: Vec<ReceiptBundle>,
}

/// The sender's signed submission, bound by the relay's acceptance.
#[derive(Debug, Clone)]
pub struct SubmissionFacts {
    /// The submitting facility (signer of the submission).
    pub sender: FacilityId,
    /// The ciphertext size the sender signed.
    pub size: u64,
    /// When the relay accepted it.
    pub accepted_at: String,
}

impl VerifiedReceipts {
    /// The submission and the acceptance that binds it (by the hash of the
    /// submission's body), if both are there.
    pub fn submission(&self) -> Option<SubmissionFacts> {
        let acceptances: Vec<Acceptance> = self
            .bundles
            .iter()
            .filter_map(|b| b.receipt.parse(Purpose::Acceptance).ok())
            .collect();
        self.bundles.iter().find_map(|b| {
            let s: Submission = b.receipt.parse(Purpose::Submission).ok()?;
            let a = acceptances
                .iter()
                .find(|a| a.submission_sha256 == b.receipt.body_sha256())?;
            Some(SubmissionFacts {
                sender: s.sender,
                size: s.size,
                accepted_at: a.accepted_at.clone(),
            })
        })
    }

    /// Whether the relay's log holds exactly this receipt.
    pub fn holds(&self, r: &SignedReceipt) -> bool {
        self.bundles.iter().any(|b| &b.receipt == r)
    }
}

/// Status of one sent package toward one recipient.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientStatus {
    /// The recipient.
    pub recipient: String,
    /// pending, delivered, rejected or expired.
    pub state: String,
    /// Reason code when rejected.
    pub reason: Option<String>,
    /// When the outcome was signed.
    pub at: Option<String>,
    /// Who signed the outcome.
    pub signed_by: Option<String>,
    /// Log index of the outcome receipt.
    pub log_index: Option<u64>,
    /// For an expiry: when the recipient downloaded the ciphertext, as the
    /// relay's signed expiry states (`None`: it never did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
}

/// What the relay's signed expiry of `recipient` says about the download:
/// `Some(Some(t))` downloaded at `t` (no outcome signed), `Some(None)`
/// never downloaded, `None` no expiry of this recipient.
pub fn expiry_fetch(bundles: &[ReceiptBundle], recipient: &str) -> Option<Option<String>> {
    bundles.iter().find_map(|b| {
        let x: Expiry = b.receipt.parse(Purpose::Expiry).ok()?;
        (x.recipient.as_str() == recipient).then_some(x.fetched_at)
    })
}

/// Status of one sent package.
#[derive(Debug, Clone, Serialize)]
pub struct SentStatus {
    /// What was sent.
    pub sent: SentRow,
    /// Relay acceptance time (verified).
    pub accepted_at: Option<String>,
    /// Per recipient.
    pub recipients: Vec<RecipientStatus>,
}

impl Session {
    /// Fetch the receipts of one envelope this facility sent or received,
    /// verify every one, keep them, and return them.
    pub async fn envelope_receipts(&self, envelope_id: &str) -> Result<VerifiedReceipts, OpError> {
        let (resp, _): (ReceiptsResponse, _) = self
            .client
            .get_json(&format!("/v1/envelopes/{envelope_id}/receipts"))
            .await?;
        let relay = CertInfo::parse_pem(resp.relay_certificate.as_bytes(), "relay certificate")?;
        let relay = self.trust.verify(&relay.der, None)?;
        if relay.kind != Kind::Relay {
            return Err(OpError::Relay(
                "the receipts name a relay certificate that is not a relay's".into(),
            ));
        }
        self.check_checkpoint(&resp.checkpoint, &relay).await?;
        let mut submitter: Option<String> = None;
        for b in &resp.receipts {
            let bad = |why: &str| {
                OpError::Relay(format!(
                    "receipt at log index {} for {envelope_id}: {why}",
                    b.log_index
                ))
            };
            let v =
                receipt::bundle::verify(b, &self.trust, None).map_err(|e| bad(&e.to_string()))?;
            if b.checkpoint != resp.checkpoint {
                return Err(bad("its checkpoint differs from the response's"));
            }
            if b.receipt.envelope_id() != envelope_id {
                return Err(bad("names another envelope"));
            }
            let signer_ok = match b.receipt.purpose {
                Purpose::Submission => {
                    let s: Submission = b
                        .receipt
                        .parse(Purpose::Submission)
                        .map_err(|e| bad(&e.to_string()))?;
                    submitter = Some(s.sender.to_string());
                    b.signer == s.sender.as_str() && v.signer.kind.is_facility()
                }
                Purpose::Acceptance => {
                    b.receipt
                        .parse::<Acceptance>(Purpose::Acceptance)
                        .map_err(|e| bad(&e.to_string()))?;
                    b.signer == relay.id.to_string()
                }
                Purpose::Expiry => {
                    b.receipt
                        .parse::<Expiry>(Purpose::Expiry)
                        .map_err(|e| bad(&e.to_string()))?;
                    b.signer == relay.id.to_string()
                }
                Purpose::Delivery => {
                    let d: Delivery = b
                        .receipt
                        .parse(Purpose::Delivery)
                        .map_err(|e| bad(&e.to_string()))?;
                    b.signer == d.recipient.as_str()
                }
            };
            if !signer_ok {
                return Err(bad("signed by the wrong party"));
            }
        }
        // An expiry signed before the time the relay announced when it
        // accepted the envelope contradicts its own promise.
        let accepted: Option<Acceptance> = resp
            .receipts
            .iter()
            .find(|b| b.receipt.purpose == Purpose::Acceptance)
            .and_then(|b| b.receipt.parse(Purpose::Acceptance).ok());
        for b in &resp.receipts {
            if b.receipt.purpose != Purpose::Expiry {
                continue;
            }
            let x: Expiry = b
                .receipt
                .parse(Purpose::Expiry)
                .map_err(|e| OpError::Relay(e.to_string()))?;
            let earliest = accepted.as_ref().and_then(Acceptance::earliest_expiry);
            match (receipt::unix_seconds(&x.expired_at), earliest) {
                (Some(at), Some(earliest)) if at >= earliest => {}
                _ => {
                    return Err(OpError::Relay(format!(
                        "receipt at log index {} for {envelope_id}: an expiry of {} signed at {}, \
                         before the relay's announced retention after its acceptance ran out",
                        b.log_index, x.recipient, x.expired_at
                    )))
                }
            }
        }
        if let Some(s) = &submitter {
            if s != &resp.envelope.sender {
                return Err(OpError::Relay(format!(
                    "the relay names {} as sender of {envelope_id}, its signed submission {s}",
                    resp.envelope.sender
                )));
            }
        }
        for b in &resp.receipts {
            self.store.add_bundle(b).await?;
        }
        Ok(VerifiedReceipts {
            envelope: resp.envelope,
            relay,
            bundles: resp.receipts,
        })
    }

    /// Status of sent packages, each outcome backed by a verified receipt
    /// fetched from the relay now.
    pub async fn status(&self, envelope: Option<&str>) -> Result<Vec<SentStatus>, OpError> {
        let sent = self.store.sent(envelope).await?;
        if let (Some(e), true) = (envelope, sent.is_empty()) {
            return Err(OpError::Usage(format!(
                "{e} is not among the packages this profile sent"
            )));
        }
        let me = self.profile.facility_id()?;
        let mut out = Vec::new();
        for s in sent {
            let verified = self.envelope_receipts(&s.envelope_id).await?;
            match verified.submission() {
                Some(f) if f.sender == me => {}
                _ => {
                    return Err(OpError::Relay(format!(
                        "the relay's receipts for {} lack this facility's submission",
                        s.envelope_id
                    )))
                }
            }
            out.push(sent_status(s, &verified));
        }
        Ok(out)
    }
}

/// The status of a sent package from its verified receipts: the first
/// outcome per recipient, as [`Receipts::from_bundles`] reads it.
fn sent_status(sent: SentRow, v: &VerifiedReceipts) -> SentStatus {
    let r = Receipts::from_bundles(&sent.envelope_id, &v.bundles);
    let name_of = |id: &str| {
        v.bundles
            .iter()
            .filter(|b| b.signer == id)
            .find_map(|b| b.signer_certificate.as_deref())
            .and_then(|pem| CertInfo::parse_pem(pem.as_bytes(), "signer").ok())
            .map(|c| format!("{} ({id})", c.name))
            .unwrap_or_else(|| id.to_string())
    };
    let recipients = sent
        .recipients
        .iter()
        .map(
            |rid| match r.outcomes.iter().find(|o| &o.recipient == rid) {
                Some(o) => RecipientStatus {
                    recipient: rid.clone(),
                    state: match o.state {
                        StepState::Delivered => "delivered",
                        StepState::Rejected => "rejected",
                        StepState::Expired => "expired",
                        _ => "pending",
                    }
                    .into(),
                    reason: o.reason.clone(),
                    at: Some(o.at.clone()),
                    signed_by: Some(if o.state == StepState::Expired {
                        format!("relay {}", v.relay.id)
                    } else {
                        name_of(rid)
                    }),
                    log_index: Some(o.log_index),
                    fetched_at: if o.state == StepState::Expired {
                        expiry_fetch(&v.bundles, rid).flatten()
                    } else {
                        None
                    },
                },
                None => RecipientStatus {
                    recipient: rid.clone(),
                    state: "pending".into(),
                    reason: None,
                    at: None,
                    signed_by: None,
                    log_index: None,
                    fetched_at: None,
                },
            },
        )
        .collect();
    SentStatus {
        sent,
        accepted_at: r.accepted_at,
        recipients,
    }
}
