//! Sending: seal for the addressees, queue in the outbox, submit to the
//! relay, and verify its acceptance. A relay that cannot be reached leaves
//! the envelope queued ([`OpError::Queued`]); [`Session::flush_outbox`]
//! submits it again, byte for byte, with the same signed submission.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

use super::http::ClientError;
use super::ops::{OpError, Session};
use super::outbox::{OutboxEntry, OutboxState};
use super::store::SentRow;
use super::threads::{Counterpart, DocFields, ThreadPackage};
use crate::api::{LoggedReceipt, SubmitResponse, SUBMISSION_HEADER};
use crate::identity::FacilityId;
use crate::package::{self, Limits, MemberSource, PackageKind};
use crate::pki::CertInfo;
use crate::receipt::{self, Acceptance, Purpose, SignedReceipt, Submission};

/// What `send` needs.
pub struct SendRequest {
    /// Recipients.
    pub to: Vec<FacilityId>,
    /// Document file.
    pub document: PathBuf,
    /// Attachments.
    pub attachments: Vec<PathBuf>,
    /// Kind.
    pub kind: PackageKind,
    /// The package answered.
    pub in_reply_to: Option<String>,
    /// Explicit thread.
    pub thread: Option<String>,
}

/// What was accepted.
#[derive(Debug, Serialize)]
pub struct SendOutcome {
    /// The signed manifest.
    pub manifest: package::Manifest,
    /// The envelope ID.
    pub envelope_id: String,
    /// Ciphertext size.
    pub size: u64,
    /// The relay's verified acceptance.
    pub acceptance: Acceptance,
    /// False when the relay already had it (idempotent resubmission).
    pub created: bool,
}

/// What flushing the outbox did.
#[derive(Debug, Default, Serialize)]
pub struct Flushed {
    /// Envelopes the relay accepted now.
    pub accepted: Vec<String>,
    /// Envelopes still queued, with why.
    pub queued: Vec<(String, String)>,
    /// Envelopes the relay refused for good, with why.
    pub refused: Vec<(String, String)>,
    /// Accepted envelopes removed after their retention.
    pub removed: usize,
}

impl Session {
    /// The verified certificate of an addressee: from the directory, or,
    /// when the relay cannot be reached, the copy this facility verified
    /// before (verified again now against the CA and the current CRL).
    pub async fn addressee(&self, id: &FacilityId) -> Result<CertInfo, OpError> {
        match self.directory_show(id).await {
            Ok(c) => {
                self.store.cache_certificate(&c, true).await?;
                Ok(c)
            }
            Err(OpError::Client(e)) if e.is_transient() => {
                let pem = self
                    .store
                    .cached_certificate(id.as_str())
                    .await?
                    .ok_or(OpError::Client(e))?;
                let c = CertInfo::parse_pem(pem.as_bytes(), "kept directory entry")?;
                Ok(self.trust.verify_peer(&c.der, None)?)
            }
            Err(e) => Err(e),
        }
    }

    /// Seal a package from files for facilities of the directory, queue it
    /// and submit it. [`OpError::Queued`] means it is sealed and waits in
    /// the outbox for the relay.
    pub async fn send(
        &self,
        req: SendRequest,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SendOutcome, OpError> {
        let document = crate::files::read_document(&req.document)
            .map_err(|e| OpError::Usage(e.to_string()))?;
        let attachments = crate::files::attachments_from_files(&req.attachments)
            .map_err(|e| OpError::Usage(e.to_string()))?;
        self.send_members(
            &req.to,
            req.kind,
            req.in_reply_to,
            req.thread,
            document,
            attachments,
            progress,
        )
        .await
    }

    /// [`Session::send`] with the document in memory and the attachments
    /// open (the desk builds the document from its form).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_members(
        &self,
        to: &[FacilityId],
        kind: PackageKind,
        in_reply_to: Option<String>,
        thread: Option<String>,
        document: Vec<u8>,
        attachments: Vec<MemberSource<'static>>,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SendOutcome, OpError> {
        if to.is_empty() {
            return Err(OpError::Usage("give at least one --to FACILITY_ID".into()));
        }
        let mut recipients = Vec::new();
        for id in to {
            recipients.push(self.addressee(id).await?);
        }
        let thread = match (&thread, &in_reply_to) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Some(self.thread_of(p).await?.unwrap_or_else(|| p.clone())),
            _ => None,
        };
        let entry = self
            .seal_into_outbox(recipients, kind, thread, in_reply_to, document, attachments)
            .await?;
        self.submit(&entry, progress).await
    }

    /// Seal into `outbox/ID.age` and record it as queued, with its thread
    /// entry; keep a copy of the document in `sent/PACKAGE_ID/document.json`
    /// (for reading and printing what was sent).
    async fn seal_into_outbox(
        &self,
        recipients: Vec<CertInfo>,
        kind: PackageKind,
        thread: Option<String>,
        in_reply_to: Option<String>,
        document: Vec<u8>,
        attachments: Vec<MemberSource<'static>>,
    ) -> Result<OutboxEntry, OpError> {
        let me = self.profile.certificate()?;
        let key = self.profile.signing_key()?;
        let outbox = self.profile.path("outbox");
        crate::files::private_dir(&outbox)?;
        let tmp = tempfile::Builder::new()
            .prefix(".seal-")
            .tempfile_in(&outbox)?;
        // Sealing reads, hashes and encrypts every byte: off the async
        // workers, so the relay connection and the desk stay responsive.
        let copy = document.clone();
        let document = crate::client::ops::memory_member(
            package::DOCUMENT_PATH,
            crate::files::DOCUMENT_MEDIA_TYPE,
            document,
        );
        let (tmp, sealed, recipients) = tokio::task::spawn_blocking(move || {
            let sealed = package::seal(
                package::SealRequest {
                    sender_key: &key,
                    sender_cert: &me,
                    sender_copy: true,
                    recipients: &recipients,
                    kind,
                    thread_id: thread,
                    in_reply_to,
                    document,
                    attachments,
                    limits: Limits::default(),
                },
                io::BufWriter::new(crate::writeback::Sequential::new(tmp.as_file())),
            )?;
            tmp.as_file().sync_all()?;
            Ok::<_, OpError>((tmp, sealed, recipients))
        })
        .await
        .map_err(|e| OpError::Io(io::Error::other(e.to_string())))??;
        let envelope_id = hex::encode(sealed.envelope_id);
        let file = outbox.join(format!("{envelope_id}.age"));
        tmp.persist(&file).map_err(|e| e.error)?;
        crate::files::keep_sent_document(&self.profile, &sealed.manifest.package_id, &copy)?;
        let submission =
            self.sign_submission(&sealed.manifest, &envelope_id, sealed.ciphertext_size)?;
        let entry = OutboxEntry {
            envelope_id: envelope_id.clone(),
            file: file.display().to_string(),
            manifest: sealed.manifest.clone(),
            submission,
            size: sealed.ciphertext_size,
            state: OutboxState::Queued,
            queued_at: receipt::now_rfc3339(),
            attempts: 0,
            last_attempt_at: None,
            last_error: None,
            accepted_at: None,
        };
        let to = recipients
            .iter()
            .map(|c| Counterpart {
                facility_id: c.id.to_string(),
                name: Some(c.name.clone()),
            })
            .collect();
        let thread = ThreadPackage::sent(
            &sealed.manifest,
            &envelope_id,
            to,
            DocFields::from_summary(&sealed.summary),
        );
        self.store.queue(&entry, &thread).await?;
        Ok(entry)
    }

    fn sign_submission(
        &self,
        manifest: &package::Manifest,
        envelope_id: &str,
        size: u64,
    ) -> Result<SignedReceipt, OpError> {
        let me = self.profile.certificate()?;
        let sub = Submission {
            envelope_id: envelope_id.to_string(),
            size,
            sender: me.facility_id()?.clone(),
            sender_cert_sha256: me.fingerprint.clone(),
            recipients: manifest
                .recipients
                .iter()
                .map(|r| r.facility_id.clone())
                .collect(),
            submitted_at: receipt::now_rfc3339(),
        };
        Ok(SignedReceipt::sign(
            Purpose::Submission,
            &sub,
            &self.profile.signing_key()?,
        ))
    }

    /// Submit an outbox entry and record what happened.
    async fn submit(
        &self,
        e: &OutboxEntry,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SendOutcome, OpError> {
        let result = self
            .submit_file(
                Path::new(&e.file),
                &e.manifest,
                &e.envelope_id,
                e.size,
                &e.submission,
                progress,
            )
            .await;
        match result {
            Ok((out, signed_acceptance)) => {
                self.store
                    .outbox_attempt(
                        &e.envelope_id,
                        OutboxState::Accepted,
                        None,
                        Some((&out.acceptance.accepted_at, &signed_acceptance)),
                    )
                    .await?;
                Ok(out)
            }
            Err(OpError::Client(c)) if c.is_transient() => {
                let why = c.to_string();
                self.store
                    .outbox_attempt(&e.envelope_id, OutboxState::Queued, Some(&why), None)
                    .await?;
                Err(OpError::Queued {
                    envelope: e.envelope_id.clone(),
                    why,
                })
            }
            Err(OpError::Client(c @ ClientError::Refused { .. })) => {
                self.store
                    .outbox_attempt(
                        &e.envelope_id,
                        OutboxState::Refused,
                        Some(&c.to_string()),
                        None,
                    )
                    .await?;
                Err(OpError::Client(c))
            }
            Err(other) => {
                self.store
                    .outbox_attempt(
                        &e.envelope_id,
                        OutboxState::Queued,
                        Some(&other.to_string()),
                        None,
                    )
                    .await?;
                Err(other)
            }
        }
    }

    /// Upload a sealed file outside the outbox with a new signed submission
    /// (tests and tools use it to resubmit).
    pub async fn upload(
        &self,
        file: &Path,
        manifest: &package::Manifest,
        envelope_id: &str,
        size: u64,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SendOutcome, OpError> {
        let signed = self.sign_submission(manifest, envelope_id, size)?;
        Ok(self
            .submit_file(file, manifest, envelope_id, size, &signed, progress)
            .await?
            .0)
    }

    /// Upload with a signed submission; verify the acceptance; record what
    /// was sent.
    async fn submit_file(
        &self,
        file: &Path,
        manifest: &package::Manifest,
        envelope_id: &str,
        size: u64,
        signed: &SignedReceipt,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<(SendOutcome, SignedReceipt), OpError> {
        let header = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(signed).expect("json"));
        let (_, body, relay) = self
            .client
            .upload_file(
                "/v1/envelopes",
                &[(SUBMISSION_HEADER, header)],
                file,
                move |n| progress(n, size),
            )
            .await?;
        let resp: SubmitResponse =
            serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        resp.acceptance.verify(&relay.signing_key).map_err(|_| {
            OpError::Relay("the acceptance receipt is not signed by the relay's key".into())
        })?;
        let acc: Acceptance = resp
            .acceptance
            .parse(Purpose::Acceptance)
            .map_err(|e| OpError::Relay(e.to_string()))?;
        if acc.envelope_id != envelope_id {
            return Err(OpError::Relay(
                "the acceptance receipt names another envelope".into(),
            ));
        }
        if resp.created && acc.submission_sha256 != signed.body_sha256() {
            return Err(OpError::Relay(
                "the acceptance receipt does not refer to this submission".into(),
            ));
        }
        let me = self.profile.facility_id()?;
        self.store
            .add_sent(&SentRow {
                envelope_id: envelope_id.to_string(),
                package_id: manifest.package_id.clone(),
                thread_id: manifest.thread_id.clone(),
                in_reply_to: manifest.in_reply_to.clone(),
                kind: manifest.kind.to_string(),
                recipients: manifest
                    .recipients
                    .iter()
                    .map(|r| r.facility_id.to_string())
                    .collect(),
                size: size as i64,
                created_at: manifest.created.clone(),
            })
            .await?;
        if resp.created {
            let sub_row = LoggedReceipt {
                log_index: acc.log_index,
                signer: me.to_string(),
                receipt: signed.clone(),
            };
            self.store.add_receipt(envelope_id, &sub_row).await?;
        }
        Ok((
            SendOutcome {
                manifest: manifest.clone(),
                envelope_id: envelope_id.to_string(),
                size,
                acceptance: acc,
                created: resp.created,
            },
            resp.acceptance,
        ))
    }

    /// Submit every queued envelope again (same bytes, same signed
    /// submission), and remove accepted ones older than the retention.
    /// Stops submitting at the first envelope the relay cannot take for now
    /// (the rest would fail the same way).
    pub async fn flush_outbox(&self) -> Result<Flushed, OpError> {
        let mut out = Flushed::default();
        let mut unreachable: Option<String> = None;
        for e in self.store.outbox(Some(OutboxState::Queued)).await? {
            if let Some(why) = &unreachable {
                out.queued.push((e.envelope_id.clone(), why.clone()));
                continue;
            }
            match self.submit(&e, |_, _| {}).await {
                Ok(_) => out.accepted.push(e.envelope_id.clone()),
                Err(OpError::Queued { why, .. }) => {
                    unreachable = Some(why.clone());
                    out.queued.push((e.envelope_id.clone(), why));
                }
                Err(other) => out.refused.push((e.envelope_id.clone(), other.to_string())),
            }
        }
        out.removed = self.prune_outbox().await?;
        Ok(out)
    }

    /// Remove accepted envelopes whose retention has passed.
    async fn prune_outbox(&self) -> Result<usize, OpError> {
        let days = self.profile.config.client.outbox_retention_days as i64;
        let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(days);
        let mut n = 0;
        for e in self.store.outbox(Some(OutboxState::Accepted)).await? {
            let accepted = e.accepted_at.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            if accepted.is_some_and(|t| t <= cutoff) {
                match fs::remove_file(&e.file) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err.into()),
                }
                self.store.outbox_remove(&e.envelope_id).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
