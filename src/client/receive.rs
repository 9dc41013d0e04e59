//! Receiving: download an envelope within the size its sender signed,
//! verify and open it, then record the outcome durably before telling the
//! relay.
//!
//! The order is what makes every outcome stick exactly once:
//!
//! 1. the envelope's own receipts tell who submitted it and how large it is
//!    (the sender's signed submission, bound by the relay's acceptance);
//! 2. the download is bounded by that size and by the stall timeout, and
//!    must hash to the envelope ID; otherwise nothing is kept;
//! 3. the package is opened into a staging folder and verified; the
//!    facility that submitted the envelope must be the manifest's signer;
//! 4. the outcome, the signed delivery receipt (verified or rejected), the
//!    staging folder and the thread entry are recorded in one transaction;
//! 5. the staging folder is renamed into place and the record says so;
//! 6. only then is the receipt posted; if that fails it stays recorded and
//!    is posted again by [`Session::post_pending_receipts`] on the next run
//!    until the relay confirms it.
//!
//! A crash anywhere leaves either nothing (before 4: the envelope is simply
//! received again) or a record that [`Session::recover_arrivals`] completes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hyper::Method;
use serde::Serialize;

use super::http::{ClientError, RelayClient};
use super::ops::{OpError, Session};
use super::store::ReceivedRow;
use super::threads::{DocFields, ThreadPackage};
use crate::identity::FacilityId;
use crate::package::{self, Limits, OpenError};
use crate::pki::CertError;
use crate::receipt::{self, Delivery, Outcome, Purpose, SignedReceipt};

/// What happened to one received envelope.
#[derive(Debug, Serialize)]
pub struct Received {
    /// Envelope.
    pub envelope_id: String,
    /// The verified manifest.
    pub manifest: package::Manifest,
    /// The sender's name.
    pub sender_name: String,
    /// The folder with the verified members.
    pub folder: PathBuf,
    /// What the (validated) document says.
    pub summary: crate::document::Summary,
    /// Whether the relay has confirmed the delivery receipt; if not, it is
    /// recorded and will be posted on the next run.
    pub receipt_confirmed: bool,
}

/// What the sender signed about an envelope, as the relay's acceptance
/// binds it.
struct Submitted {
    sender: FacilityId,
    size: u64,
}

/// What posting pending receipts achieved.
#[derive(Debug, Default, Serialize)]
pub struct PostedReceipts {
    /// Envelopes whose receipt the relay confirmed now.
    pub confirmed: Vec<String>,
    /// Envelopes whose receipt could not be posted yet, with why.
    pub pending: Vec<(String, String)>,
}

impl Session {
    /// Download, verify and release one envelope into `out_dir/PACKAGE_ID`,
    /// record the outcome with its signed delivery receipt, then post the
    /// receipt (see the module documentation for the order).
    pub async fn receive(&self, envelope_id: &str, out_dir: &Path) -> Result<Received, OpError> {
        if !receipt::valid_envelope_id(envelope_id) {
            return Err(OpError::Usage(format!(
                "{envelope_id:?} is not an envelope ID (64 hex digits)"
            )));
        }
        if let Some(a) = self.store.arrival(envelope_id).await? {
            return Err(OpError::Usage(format!(
                "envelope {envelope_id} was already received ({}) into {}",
                a.row.outcome, a.row.location
            )));
        }
        let submitted = self.submitted(envelope_id).await?;
        let part = self.download(envelope_id, submitted.size).await?;
        let identity = self.profile.age_identity()?;
        let me = self.profile.facility_id()?;
        fs::create_dir_all(out_dir)?;
        let staging = tempfile::Builder::new()
            .prefix(".renkei-open-")
            .tempdir_in(out_dir)?;
        let result = package::open_into(
            io::BufReader::new(fs::File::open(&part)?),
            &identity,
            &self.trust,
            &me,
            staging.path(),
            &Limits::default(),
            None,
        );
        let result = match result {
            Ok(opened) => self.check_arrival(opened, &submitted).await?,
            Err(e) => Err(e),
        };
        match result {
            Ok(opened) => {
                let dest = out_dir.join(&opened.manifest.package_id);
                if dest.exists() {
                    return Err(OpError::Usage(format!(
                        "{} already exists; move it away and receive again",
                        dest.display()
                    )));
                }
                let m = &opened.manifest;
                let doc = DocFields::from_summary(&opened.summary);
                let row = ReceivedRow {
                    envelope_id: envelope_id.to_string(),
                    package_id: Some(m.package_id.clone()),
                    thread_id: Some(m.thread_id.clone()),
                    in_reply_to: m.in_reply_to.clone(),
                    kind: Some(m.kind.to_string()),
                    sender: m.sender.facility_id.to_string(),
                    sender_name: Some(opened.sender.name.clone()),
                    outcome: "verified".into(),
                    reason: None,
                    location: dest.display().to_string(),
                    received_at: receipt::now_rfc3339(),
                };
                let signed = self.sign_delivery(envelope_id, Outcome::Verified, None)?;
                let thread =
                    ThreadPackage::received(m, envelope_id, &opened.sender.name, doc.clone());
                let staging = staging.keep();
                self.store
                    .record_arrival(&row, &signed, Some(&staging), Some(&doc), Some(&thread))
                    .await?;
                release(&staging, &dest)?;
                self.store.released(envelope_id).await?;
                let _ = fs::remove_file(&part);
                let receipt_confirmed = self.post_receipt(envelope_id, &signed).await?;
                Ok(Received {
                    envelope_id: envelope_id.to_string(),
                    manifest: opened.manifest,
                    sender_name: opened.sender.name,
                    folder: dest,
                    summary: opened.summary,
                    receipt_confirmed,
                })
            }
            Err(OpenError::Io(e)) => {
                let _ = fs::remove_file(&part);
                Err(OpError::Io(e))
            }
            // A stale CRL here is this facility's own condition, not the
            // package's fault: no rejection receipt, receive it again once
            // the CRL is current.
            Err(OpenError::Sender(e @ CertError::StaleCrl(_))) => {
                let _ = fs::remove_file(&part);
                Err(OpError::Cert(e))
            }
            Err(error) => {
                drop(staging);
                let rejected = self.profile.path("rejected");
                crate::files::private_dir(&rejected)?;
                let kept = rejected.join(format!("{envelope_id}.age"));
                fs::rename(&part, &kept)?;
                let reason = error.reason_code().to_string();
                let row = ReceivedRow {
                    envelope_id: envelope_id.to_string(),
                    package_id: None,
                    thread_id: None,
                    in_reply_to: None,
                    kind: None,
                    sender: submitted.sender.to_string(),
                    sender_name: None,
                    outcome: "rejected".into(),
                    reason: Some(reason.clone()),
                    location: kept.display().to_string(),
                    received_at: receipt::now_rfc3339(),
                };
                let signed = self.sign_delivery(envelope_id, Outcome::Rejected, Some(reason))?;
                self.store
                    .record_arrival(&row, &signed, None, None, None)
                    .await?;
                let receipt_confirmed = self.post_receipt(envelope_id, &signed).await?;
                Err(OpError::Rejected {
                    envelope: envelope_id.to_string(),
                    error: Box::new(error),
                    kept: kept.display().to_string(),
                    receipt_confirmed,
                })
            }
        }
    }

    /// The checks that need more than the package itself: the facility that
    /// submitted the envelope must be the one that signed the manifest
    /// (otherwise a co-recipient could re-encrypt a package it received and
    /// pass it off as its own, to get the genuine envelope refused as a
    /// replay), and a package ID already received here is a replay.
    async fn check_arrival(
        &self,
        opened: package::Opened,
        submitted: &Submitted,
    ) -> Result<Result<package::Opened, OpenError>, OpError> {
        if opened.manifest.sender.facility_id != submitted.sender {
            return Ok(Err(OpenError::SenderMismatch {
                submitted_by: submitted.sender.to_string(),
                signed_by: opened.manifest.sender.facility_id.to_string(),
            }));
        }
        if let Some(r) = self
            .store
            .verified_arrival(None, Some(&opened.manifest.package_id))
            .await?
        {
            return Ok(Err(OpenError::Replayed {
                package_id: opened.manifest.package_id.clone(),
                first_envelope: r.envelope_id,
            }));
        }
        Ok(Ok(opened))
    }

    /// Who submitted the envelope and its size, from the sender's signed
    /// submission and the relay's acceptance that binds it (both verified,
    /// with their inclusion in a checkpoint consistent with what this
    /// facility saw).
    async fn submitted(&self, envelope_id: &str) -> Result<Submitted, OpError> {
        let verified = self.envelope_receipts(envelope_id).await?;
        let facts = verified.submission().ok_or_else(|| {
            OpError::Relay(format!(
                "the relay holds envelope {envelope_id} without its sender's submission bound by an acceptance"
            ))
        })?;
        Ok(Submitted {
            sender: facts.sender.clone(),
            size: facts.size,
        })
    }

    /// Download the ciphertext to `incoming/ID.part`: at most `size` bytes
    /// (what the sender signed), each frame within the stall timeout, and
    /// hashing to the envelope ID. On any failure the partial file is gone.
    async fn download(&self, envelope_id: &str, size: u64) -> Result<PathBuf, OpError> {
        use tokio::io::AsyncWriteExt;
        let incoming = self.profile.path("incoming");
        crate::files::private_dir(&incoming)?;
        let part = incoming.join(format!("{envelope_id}.part"));
        let mut resp = self
            .client
            .send(
                Method::GET,
                &format!("/v1/envelopes/{envelope_id}"),
                &[],
                super::http::empty(),
            )
            .await?;
        if !resp.status.is_success() {
            RelayClient::read(resp, 1 << 20).await?;
            unreachable!("read fails on error status");
        }
        let result: Result<(), OpError> = async {
            let mut f = private_file(&part).await?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut n: u64 = 0;
            while let Some(frame) = resp.next_frame().await? {
                if let Some(d) = frame.data_ref() {
                    n += d.len() as u64;
                    if n > size {
                        return Err(OpError::Relay(format!(
                            "the relay sent more than the {size} bytes the sender signed for envelope {envelope_id}; nothing was kept"
                        )));
                    }
                    ctx.update(d);
                    f.write_all(d).await?;
                }
            }
            f.sync_all().await?;
            if n != size || hex::encode(ctx.finish()) != envelope_id {
                return Err(OpError::Relay(format!(
                    "the relay served {n} bytes for envelope {envelope_id} that do not hash to its ID (the sender signed {size} bytes); nothing was kept, try again later"
                )));
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(part),
            Err(e) => {
                let _ = fs::remove_file(&part);
                Err(e)
            }
        }
    }

    fn sign_delivery(
        &self,
        envelope_id: &str,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Result<SignedReceipt, OpError> {
        let d = Delivery {
            envelope_id: envelope_id.to_string(),
            recipient: self.profile.facility_id()?,
            outcome,
            reason,
            delivered_at: receipt::now_rfc3339(),
        };
        Ok(SignedReceipt::sign(
            Purpose::Delivery,
            &d,
            &self.profile.signing_key()?,
        ))
    }

    /// Post a recorded delivery receipt. True when the relay confirmed it
    /// (now, or earlier when an answer was lost: the relay then holds this
    /// very receipt); false when it could not be posted now and stays
    /// pending. A relay that recorded a different outcome is reported.
    async fn post_receipt(&self, envelope_id: &str, r: &SignedReceipt) -> Result<bool, OpError> {
        let posted = self
            .client
            .call(
                Method::POST,
                &format!("/v1/envelopes/{envelope_id}/receipts"),
                &[("content-type", "application/json".into())],
                serde_json::to_vec(r).expect("json"),
            )
            .await;
        let error = match posted {
            Ok(_) => None,
            Err(ClientError::Refused { status: 409, .. }) => {
                // Already recorded: confirmed if it is this very receipt.
                let verified = self.envelope_receipts(envelope_id).await?;
                if verified.holds(r) {
                    None
                } else {
                    let why = format!(
                        "the relay recorded another outcome for envelope {envelope_id} than this facility's receipt"
                    );
                    self.store.receipt_posted(envelope_id, Some(&why)).await?;
                    return Err(OpError::Relay(why));
                }
            }
            Err(e) if e.is_transient() => Some(e.to_string()),
            Err(e) => {
                self.store
                    .receipt_posted(envelope_id, Some(&e.to_string()))
                    .await?;
                return Err(e.into());
            }
        };
        self.store
            .receipt_posted(envelope_id, error.as_deref())
            .await?;
        Ok(error.is_none())
    }

    /// Post every recorded delivery receipt the relay has not confirmed.
    pub async fn post_pending_receipts(&self) -> Result<PostedReceipts, OpError> {
        let mut out = PostedReceipts::default();
        for (envelope_id, r) in self.store.unconfirmed_receipts().await? {
            match self.post_receipt(&envelope_id, &r).await {
                Ok(true) => out.confirmed.push(envelope_id),
                Ok(false) => {
                    let why = self
                        .store
                        .arrival(&envelope_id)
                        .await?
                        .and_then(|a| a.receipt_error)
                        .unwrap_or_default();
                    out.pending.push((envelope_id, why));
                }
                Err(e) => out.pending.push((envelope_id, e.to_string())),
            }
        }
        Ok(out)
    }

    /// Finish releases a crash interrupted: a recorded arrival whose
    /// staging folder still exists is renamed into place (beside it, when
    /// its folder name was taken meanwhile: see
    /// [`relocate`](super::store::LocalStore::relocate)).
    pub async fn recover_arrivals(&self) -> Result<usize, OpError> {
        let mut n = 0;
        for (envelope_id, staging, dest) in self.store.unreleased().await? {
            let (staging, mut dest) = (PathBuf::from(staging), PathBuf::from(dest));
            if staging.is_dir() {
                // Something else took the package's folder name meanwhile:
                // the verified package goes beside it (`<package>-2`, ...),
                // recorded there before the rename, rather than staying in
                // a hidden staging folder no one looks at.
                if dest.exists() {
                    dest = free_name(&dest)?;
                    self.store
                        .relocate(&envelope_id, &dest.display().to_string())
                        .await?;
                }
                release(&staging, &dest)?;
                n += 1;
            }
            self.store.released(&envelope_id).await?;
        }
        Ok(n)
    }

    /// Receive everything waiting: first finish what an earlier run left
    /// (interrupted releases, receipts not yet confirmed), then each
    /// envelope of the inbox. One envelope failing never stops the others.
    pub async fn receive_all(
        &self,
        out_dir: &Path,
    ) -> Result<Vec<(String, Result<Received, OpError>)>, OpError> {
        self.recover_arrivals().await?;
        self.post_pending_receipts().await?;
        let mut out = Vec::new();
        for e in self.inbox().await? {
            if self.store.arrival(&e.envelope_id).await?.is_some() {
                continue;
            }
            let r = self.receive(&e.envelope_id, out_dir).await;
            out.push((e.envelope_id, r));
        }
        Ok(out)
    }
}

/// The first of `<dest>-2`, `<dest>-3`, ... that does not exist.
fn free_name(dest: &Path) -> Result<PathBuf, OpError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (2..1000)
        .map(|i| dest.with_file_name(format!("{name}-{i}")))
        .find(|p| !p.exists())
        .ok_or_else(|| {
            OpError::Usage(format!(
                "{} and 998 numbered folders beside it exist; move them away and receive again",
                dest.display()
            ))
        })
}

/// Rename the verified staging folder into place.
fn release(staging: &Path, dest: &Path) -> Result<(), OpError> {
    fs::rename(staging, dest).map_err(|e| {
        OpError::Io(io::Error::new(
            e.kind(),
            format!(
                "cannot move the verified package to {}: {e} (it is recorded; the next receive finishes it)",
                dest.display()
            ),
        ))
    })
}

/// Create (or truncate) a file private to this user (0600).
async fn private_file(path: &Path) -> io::Result<tokio::fs::File> {
    let mut o = tokio::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path).await
}
