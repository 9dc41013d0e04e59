//! What a facility does with the relay: publish its certificate, look up
//! others, send, list the inbox, receive, and follow the status of what it
//! sent. Every certificate and receipt from the relay is verified here
//! against the profile's own CA and CRL; the relay is trusted for nothing.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hyper::Method;
use serde::Serialize;

use super::http::{ClientError, RelayClient};
use super::store::{LocalStore, LocalStoreError, ReceivedRow, SentRow};
use super::threads::{Counterpart, DocFields, ThreadPackage};
use crate::api::{
    DirectoryEntry, EnvelopeSummary, LoggedReceipt, ReceiptsResponse, SubmitResponse,
    SUBMISSION_HEADER,
};
use crate::identity::{FacilityId, Kind};
use crate::package::{self, Limits, MemberSource, OpenError, PackageKind};
use crate::pki::{CertError, CertInfo, TrustStore};
use crate::profile::{Profile, ProfileError};
use crate::receipt::{
    self, Acceptance, Delivery, Expiry, Outcome, Purpose, SignedReceipt, Submission,
};

/// Errors of client operations.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Talking to the relay failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The profile is not usable.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] LocalStoreError),
    /// A certificate from the relay did not verify.
    #[error("{0}")]
    Cert(#[from] CertError),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] package::SealError),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The relay lied or misbehaved (a receipt or certificate it served does not verify).
    #[error("relay misbehaviour: {0}")]
    Relay(String),
    /// A package failed verification (a rejection receipt was posted).
    #[error("envelope {envelope}: {error} (rejection receipt sent; ciphertext kept at {kept})")]
    Rejected {
        /// Envelope.
        envelope: String,
        /// Why.
        error: Box<OpenError>,
        /// Where the ciphertext was kept.
        kept: String,
    },
    /// Bad input from the user.
    #[error("{0}")]
    Usage(String),
}

impl OpError {
    /// True when a package, certificate or receipt failed verification.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            OpError::Rejected { .. }
                | OpError::Relay(_)
                | OpError::Cert(_)
                | OpError::Seal(package::SealError::Document(_))
        )
    }
}

/// A profile connected to its relay, with its local store.
pub struct Session {
    /// The profile.
    pub profile: Profile,
    /// The relay client.
    pub client: RelayClient,
    /// The profile's trust store (refreshed with the relay's CRL).
    pub trust: TrustStore,
    /// The local store.
    pub store: LocalStore,
}

/// What `send` produced.
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

fn pem_crl(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()))
}

impl Session {
    /// Open the profile, its store and a client for its relay; fetch the
    /// relay's CRL and install it if it is newer and signed by the CA.
    pub async fn open(profile_dir: &Path, relay: Option<&str>) -> Result<Session, OpError> {
        let profile = Profile::open(profile_dir)?;
        let client = RelayClient::new(&profile, relay)?;
        let trust = profile.trust()?;
        let store = LocalStore::open(profile_dir).await?;
        let mut s = Session {
            profile,
            client,
            trust,
            store,
        };
        s.refresh_crl().await?;
        Ok(s)
    }

    /// Fetch the relay's CRL; install it if newer. Returns true if installed.
    pub async fn refresh_crl(&mut self) -> Result<bool, OpError> {
        let resp = self
            .client
            .send(Method::GET, "/v1/crl", &[], super::http::empty())
            .await?;
        if resp.status == hyper::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let (_, body, _) = RelayClient::read(resp, 4 << 20).await?;
        let new = TrustStore::new(self.trust.ca_der(), Some(&body)).map_err(|e| {
            OpError::Relay(format!("the relay serves a CRL that does not verify: {e}"))
        })?;
        let (old_n, new_n) = (
            crate::pki::crl_number(self.trust.crl_der()),
            crate::pki::crl_number(new.crl_der()),
        );
        if new_n > old_n {
            self.profile.install(
                None,
                None,
                Some(pem_crl(new.crl_der().expect("has CRL")).as_bytes()),
                None,
            )?;
            self.trust = self.profile.trust()?;
            self.client = RelayClient::new(&self.profile, Some(self.client.url()))?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Publish a CRL (PEM) through the relay.
    pub async fn publish_crl(&self, crl_pem: &[u8]) -> Result<u128, OpError> {
        TrustStore::new(self.trust.ca_der(), Some(crl_pem))?;
        let (_, body, _) = self
            .client
            .call(Method::PUT, "/v1/crl", &[], crl_pem.to_vec())
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(v.get("crl_number").and_then(|n| n.as_u64()).unwrap_or(0) as u128)
    }

    /// Publish this facility's certificate.
    pub async fn publish(&self) -> Result<CertInfo, OpError> {
        let me = self.profile.certificate()?;
        self.client
            .call(Method::POST, "/v1/directory", &[], me.pem().into_bytes())
            .await?;
        Ok(me)
    }

    fn verify_entry(&self, e: &DirectoryEntry, want: Option<&str>) -> Result<CertInfo, OpError> {
        let info =
            CertInfo::parse_pem(e.certificate.as_bytes(), "directory entry").map_err(|err| {
                OpError::Relay(format!(
                    "the directory entry for {} is not a certificate: {err}",
                    e.facility_id
                ))
            })?;
        let info = self.trust.verify(&info.der, None).map_err(|err| match err {
            CertError::UnknownIssuer(_) => OpError::Relay(format!(
                "the relay served a certificate for {} that this region's CA did not issue (substituted key); it was not used",
                e.facility_id
            )),
            other => OpError::Cert(other),
        })?;
        if let Some(w) = want {
            if info.id.to_string() != w {
                return Err(OpError::Relay(format!(
                    "asked the directory for {w}, got a certificate for {}",
                    info.id
                )));
            }
        }
        Ok(info)
    }

    /// Look one facility up; its certificate is verified against the CA and CRL.
    pub async fn directory_show(&self, id: &FacilityId) -> Result<CertInfo, OpError> {
        let (e, _): (DirectoryEntry, _) =
            self.client.get_json(&format!("/v1/directory/{id}")).await?;
        self.verify_entry(&e, Some(id.as_str()))
    }

    /// Search the directory; entries that do not verify are returned as errors.
    pub async fn directory_search(
        &self,
        name: Option<&str>,
        kind: Option<Kind>,
    ) -> Result<Vec<Result<CertInfo, OpError>>, OpError> {
        let mut q = Vec::new();
        if let Some(n) = name {
            q.push(format!("name={}", urlencode(n)));
        }
        if let Some(k) = kind {
            q.push(format!("kind={k}"));
        }
        let path = if q.is_empty() {
            "/v1/directory".to_string()
        } else {
            format!("/v1/directory?{}", q.join("&"))
        };
        let (entries, _): (Vec<DirectoryEntry>, _) = self.client.get_json(&path).await?;
        Ok(entries
            .iter()
            .map(|e| self.verify_entry(e, Some(&e.facility_id)))
            .collect())
    }

    async fn thread_of(&self, package_id: &str) -> Result<Option<String>, OpError> {
        for r in self.store.received().await? {
            if r.package_id.as_deref() == Some(package_id) {
                return Ok(r.thread_id);
            }
        }
        for s in self.store.sent(None).await? {
            if s.package_id == package_id {
                return Ok(Some(s.thread_id));
            }
        }
        Ok(None)
    }

    /// Seal and upload a package; verify and record the acceptance.
    pub async fn send(
        &self,
        req: SendRequest,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SendOutcome, OpError> {
        if req.to.is_empty() {
            return Err(OpError::Usage("give at least one --to FACILITY_ID".into()));
        }
        let me = self.profile.certificate()?;
        let key = self.profile.signing_key()?;
        let mut recipients = Vec::new();
        for id in &req.to {
            recipients.push(self.directory_show(id).await?);
        }
        let thread = match (&req.thread, &req.in_reply_to) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Some(self.thread_of(p).await?.unwrap_or_else(|| p.clone())),
            _ => None,
        };
        let document = crate::files::document_from_file(&req.document)
            .map_err(|e| OpError::Usage(e.to_string()))?;
        let attachments = crate::files::attachments_from_files(&req.attachments)
            .map_err(|e| OpError::Usage(e.to_string()))?;
        let outbox = self.profile.path("outbox");
        fs::create_dir_all(&outbox)?;
        let tmp = tempfile::Builder::new()
            .prefix(".seal-")
            .tempfile_in(&outbox)?;
        let sealed = package::seal(
            package::SealRequest {
                sender_key: &key,
                sender_cert: &me,
                sender_copy: true,
                recipients: &recipients,
                kind: req.kind,
                thread_id: thread,
                in_reply_to: req.in_reply_to.clone(),
                document,
                attachments,
                limits: Limits::default(),
            },
            io::BufWriter::new(tmp.as_file()),
        )?;
        tmp.as_file().sync_all()?;
        let envelope_id = hex::encode(sealed.envelope_id);
        let file = outbox.join(format!("{envelope_id}.age"));
        tmp.persist(&file).map_err(|e| e.error)?;
        let out = self
            .upload(
                &file,
                &sealed.manifest,
                &envelope_id,
                sealed.ciphertext_size,
                progress,
            )
            .await?;
        let to = recipients
            .iter()
            .map(|c| Counterpart {
                facility_id: c.id.to_string(),
                name: Some(c.name.clone()),
            })
            .collect();
        self.store
            .add_thread_package(&ThreadPackage::sent(
                &sealed.manifest,
                &envelope_id,
                to,
                DocFields::from_summary(&sealed.summary),
            ))
            .await?;
        Ok(out)
    }

    /// Upload a sealed file (also used to resubmit).
    pub async fn upload(
        &self,
        file: &Path,
        manifest: &package::Manifest,
        envelope_id: &str,
        size: u64,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<SendOutcome, OpError> {
        let me = self.profile.certificate()?;
        let key = self.profile.signing_key()?;
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
        let signed = SignedReceipt::sign(Purpose::Submission, &sub, &key);
        let header = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&signed).expect("json"));
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
                signer: me.id.to_string(),
                receipt: signed,
            };
            self.store.add_receipt(envelope_id, &sub_row).await?;
        }
        Ok(SendOutcome {
            manifest: manifest.clone(),
            envelope_id: envelope_id.to_string(),
            size,
            acceptance: acc,
            created: resp.created,
        })
    }

    /// Envelopes waiting for this facility.
    pub async fn inbox(&self) -> Result<Vec<EnvelopeSummary>, OpError> {
        Ok(self.client.get_json("/v1/inbox").await?.0)
    }

    async fn post_delivery(
        &self,
        envelope_id: &str,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Result<(), OpError> {
        let d = Delivery {
            envelope_id: envelope_id.to_string(),
            recipient: self.profile.facility_id()?,
            outcome,
            reason,
            delivered_at: receipt::now_rfc3339(),
        };
        let r = SignedReceipt::sign(Purpose::Delivery, &d, &self.profile.signing_key()?);
        self.client
            .call(
                Method::POST,
                &format!("/v1/envelopes/{envelope_id}/receipts"),
                &[("content-type", "application/json".into())],
                serde_json::to_vec(&r).expect("json"),
            )
            .await?;
        Ok(())
    }

    /// Download, verify and release one envelope into `out_dir/PACKAGE_ID`,
    /// then post the signed delivery receipt (verified or rejected).
    pub async fn receive(&self, envelope_id: &str, out_dir: &Path) -> Result<Received, OpError> {
        if !receipt::valid_envelope_id(envelope_id) {
            return Err(OpError::Usage(format!(
                "{envelope_id:?} is not an envelope ID (64 hex digits)"
            )));
        }
        if let Some(r) = self.store.verified_arrival(Some(envelope_id), None).await? {
            return Err(OpError::Usage(format!(
                "envelope {envelope_id} was already received into {}",
                r.location
            )));
        }
        let incoming = self.profile.path("incoming");
        fs::create_dir_all(&incoming)?;
        let part = incoming.join(format!("{envelope_id}.part"));
        let resp = self
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
        // Stream to disk, hashing.
        {
            use http_body_util::BodyExt;
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::File::create(&part).await?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut body = resp.body;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
                if let Some(d) = frame.data_ref() {
                    ctx.update(d);
                    f.write_all(d).await?;
                }
            }
            f.sync_all().await?;
            if hex::encode(ctx.finish()) != envelope_id {
                let _ = fs::remove_file(&part);
                return Err(OpError::Relay(format!("the relay served bytes for {envelope_id} whose SHA-256 differs; try again later")));
            }
        }
        let me = self.profile.facility_id()?;
        let identity = self.profile.age_identity()?;
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
        // The same package (same signed package ID) arriving again in
        // another envelope is a replay or a re-sealed copy: refused.
        let result = match result {
            Ok(opened) => match self
                .store
                .verified_arrival(None, Some(&opened.manifest.package_id))
                .await?
            {
                Some(r) => Err(OpenError::Replayed {
                    package_id: opened.manifest.package_id.clone(),
                    first_envelope: r.envelope_id,
                }),
                None => Ok(opened),
            },
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
                fs::rename(staging.keep(), &dest)?;
                let _ = fs::remove_file(&part);
                self.post_delivery(envelope_id, Outcome::Verified, None)
                    .await?;
                let m = &opened.manifest;
                self.store
                    .add_received(&ReceivedRow {
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
                    })
                    .await?;
                self.store
                    .add_thread_package(&ThreadPackage::received(
                        m,
                        envelope_id,
                        &opened.sender.name,
                        DocFields::from_summary(&opened.summary),
                    ))
                    .await?;
                Ok(Received {
                    envelope_id: envelope_id.to_string(),
                    manifest: opened.manifest,
                    sender_name: opened.sender.name,
                    folder: dest,
                    summary: opened.summary,
                })
            }
            Err(OpenError::Io(e)) => Err(OpError::Io(e)),
            Err(error) => {
                drop(staging);
                let rejected = self.profile.path("rejected");
                fs::create_dir_all(&rejected)?;
                let kept = rejected.join(format!("{envelope_id}.age"));
                fs::rename(&part, &kept)?;
                let reason = error.reason_code().to_string();
                self.post_delivery(envelope_id, Outcome::Rejected, Some(reason.clone()))
                    .await?;
                self.store
                    .add_received(&ReceivedRow {
                        envelope_id: envelope_id.to_string(),
                        package_id: None,
                        thread_id: None,
                        in_reply_to: None,
                        kind: None,
                        sender: String::new(),
                        sender_name: None,
                        outcome: "rejected".into(),
                        reason: Some(reason),
                        location: kept.display().to_string(),
                        received_at: receipt::now_rfc3339(),
                    })
                    .await?;
                Err(OpError::Rejected {
                    envelope: envelope_id.to_string(),
                    error: Box::new(error),
                    kept: kept.display().to_string(),
                })
            }
        }
    }

    /// Status of sent packages, each outcome backed by a verified receipt.
    pub async fn status(&self, envelope: Option<&str>) -> Result<Vec<SentStatus>, OpError> {
        let sent = self.store.sent(envelope).await?;
        if let (Some(e), true) = (envelope, sent.is_empty()) {
            return Err(OpError::Usage(format!(
                "{e} is not among the packages this profile sent"
            )));
        }
        let me = self.profile.certificate()?;
        let mut certs: HashMap<String, CertInfo> = HashMap::new();
        let mut out = Vec::new();
        for s in sent {
            let (resp, _): (ReceiptsResponse, _) = self
                .client
                .get_json(&format!("/v1/envelopes/{}/receipts", s.envelope_id))
                .await?;
            let relay =
                CertInfo::parse_pem(resp.relay_certificate.as_bytes(), "relay certificate")?;
            let relay = self.trust.verify(&relay.der, None)?;
            if relay.kind != Kind::Relay {
                return Err(OpError::Relay(
                    "the receipts name a relay certificate that is not a relay's".into(),
                ));
            }
            let mut accepted_at = None;
            let mut per: HashMap<String, RecipientStatus> = s
                .recipients
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        RecipientStatus {
                            recipient: r.clone(),
                            state: "pending".into(),
                            reason: None,
                            at: None,
                            signed_by: None,
                            log_index: None,
                        },
                    )
                })
                .collect();
            self.check_checkpoint(&resp.checkpoint, &relay).await?;
            for row in &resp.receipts {
                let bad = |why: &str| {
                    OpError::Relay(format!(
                        "receipt at log index {} for {}: {why}",
                        row.log_index, s.envelope_id
                    ))
                };
                crate::receipt::bundle::verify(row, &self.trust, None)
                    .map_err(|e| bad(&e.to_string()))?;
                if row.checkpoint != resp.checkpoint {
                    return Err(bad("its checkpoint differs from the response's"));
                }
                let expected_signer = match row.receipt.purpose {
                    Purpose::Submission => me.id.to_string(),
                    Purpose::Acceptance | Purpose::Expiry => relay.id.to_string(),
                    Purpose::Delivery => row.signer.clone(),
                };
                if row.signer != expected_signer {
                    return Err(bad("signed by the wrong party"));
                }
                match row.receipt.purpose {
                    Purpose::Submission => {
                        let sub: Submission = row
                            .receipt
                            .parse(Purpose::Submission)
                            .map_err(|e| bad(&e.to_string()))?;
                        row.receipt
                            .verify(&me.signing_key)
                            .map_err(|_| bad("the submission is not signed by this facility"))?;
                        if sub.envelope_id != s.envelope_id {
                            return Err(bad("names another envelope"));
                        }
                    }
                    Purpose::Acceptance => {
                        let a: Acceptance = row
                            .receipt
                            .parse(Purpose::Acceptance)
                            .map_err(|e| bad(&e.to_string()))?;
                        row.receipt
                            .verify(&relay.signing_key)
                            .map_err(|_| bad("the acceptance is not signed by the relay"))?;
                        if a.envelope_id != s.envelope_id {
                            return Err(bad("names another envelope"));
                        }
                        accepted_at = Some(a.accepted_at);
                    }
                    Purpose::Delivery => {
                        let d: Delivery = row
                            .receipt
                            .parse(Purpose::Delivery)
                            .map_err(|e| bad(&e.to_string()))?;
                        let rid = d.recipient.to_string();
                        if row.signer != rid {
                            return Err(bad("the delivery receipt is not signed by its recipient"));
                        }
                        if !certs.contains_key(&rid) {
                            let c = self.directory_show(&d.recipient).await?;
                            certs.insert(rid.clone(), c);
                        }
                        row.receipt.verify(&certs[&rid].signing_key).map_err(|_| {
                            bad("the delivery receipt is not signed by the recipient")
                        })?;
                        if d.envelope_id != s.envelope_id {
                            return Err(bad("names another envelope"));
                        }
                        if let Some(st) = per.get_mut(&rid).filter(|st| st.state == "pending") {
                            st.state = if d.outcome == Outcome::Verified {
                                "delivered".into()
                            } else {
                                "rejected".into()
                            };
                            st.reason = d.reason;
                            st.at = Some(d.delivered_at);
                            st.signed_by = Some(format!("{} ({})", certs[&rid].name, rid));
                            st.log_index = Some(row.log_index);
                        }
                    }
                    Purpose::Expiry => {
                        let x: Expiry = row
                            .receipt
                            .parse(Purpose::Expiry)
                            .map_err(|e| bad(&e.to_string()))?;
                        row.receipt
                            .verify(&relay.signing_key)
                            .map_err(|_| bad("the expiry is not signed by the relay"))?;
                        if x.envelope_id != s.envelope_id {
                            return Err(bad("names another envelope"));
                        }
                        if let Some(st) = per
                            .get_mut(x.recipient.as_str())
                            .filter(|st| st.state == "pending")
                        {
                            st.state = "expired".into();
                            st.at = Some(x.expired_at);
                            st.signed_by = Some(format!("relay {}", relay.id));
                            st.log_index = Some(row.log_index);
                        }
                    }
                }
                self.store.add_bundle(row).await?;
            }
            let recipients = s.recipients.iter().filter_map(|r| per.remove(r)).collect();
            out.push(SentStatus {
                sent: s,
                accepted_at,
                recipients,
            });
        }
        Ok(out)
    }
}

impl Session {
    /// Verify a checkpoint from the relay and prove it consistent with the
    /// newest one this profile kept; keep it if newer. Two inconsistent
    /// checkpoints are kept as evidence and reported as relay misbehaviour.
    pub async fn check_checkpoint(
        &self,
        note: &str,
        relay: &CertInfo,
    ) -> Result<crate::log::Checkpoint, OpError> {
        let vkey = crate::receipt::bundle::relay_verifier(relay)
            .map_err(|e| OpError::Relay(e.to_string()))?;
        let (cp, _) =
            crate::log::Checkpoint::open(note.as_bytes(), vkey.name(), std::slice::from_ref(&vkey))
                .map_err(|e| {
                    OpError::Relay(format!("the relay's checkpoint does not verify: {e}"))
                })?;
        if let Some((old_size, old_note)) = self.store.latest_checkpoint(vkey.name()).await? {
            let (old, _) = crate::log::Checkpoint::open(
                old_note.as_bytes(),
                vkey.name(),
                std::slice::from_ref(&vkey),
            )
            .map_err(|e| OpError::Relay(format!("the kept checkpoint does not verify: {e}")))?;
            let (a, b, an, bn) = if old_size <= cp.size {
                (&old, &cp, old_note.as_str(), note)
            } else {
                (&cp, &old, note, old_note.as_str())
            };
            let ok = if a.size == b.size {
                a.root == b.root
            } else if a.size == 0 {
                true
            } else {
                let path = format!("/v1/log/proof/consistency?from={}&to={}", a.size, b.size);
                // A relay that cannot prove a size it signed before has
                // truncated or rewritten its log: that is misbehaviour too.
                match self
                    .client
                    .get_json::<crate::log::ConsistencyProof>(&path)
                    .await
                {
                    Ok((proof, _)) => {
                        proof.size1 == a.size
                            && proof.size2 == b.size
                            && proof.verify(&a.root, &b.root).is_ok()
                    }
                    Err(ClientError::Refused { .. }) => false,
                    Err(e) => return Err(e.into()),
                }
            };
            if !ok {
                self.store
                    .add_evidence("inconsistent checkpoints", an, bn)
                    .await?;
                return Err(OpError::Relay(format!(
                    "the relay's log of size {} is not consistent with the one of size {} this facility saw before (both kept as evidence)",
                    b.size, a.size
                )));
            }
        }
        self.store
            .add_checkpoint(vkey.name(), cp.size, note)
            .await?;
        Ok(cp)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A member source for a document held in memory (used by the demo).
pub fn memory_member(path: &str, media_type: &str, bytes: Vec<u8>) -> MemberSource<'static> {
    MemberSource {
        path: path.into(),
        media_type: media_type.into(),
        size: bytes.len() as u64,
        reader: Box::new(io::Cursor::new(bytes)),
    }
}
