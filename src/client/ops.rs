//! What a facility does with the relay: publish its certificate, look up
//! others, send, list the inbox, receive, and follow the status of what it
//! sent. Every certificate and receipt from the relay is verified here
//! against the profile's own CA and CRL; the relay is trusted for nothing.

use std::io;
use std::path::Path;

use hyper::Method;

use super::http::{ClientError, RelayClient};
use super::store::{LocalStore, LocalStoreError};
use crate::api::{DirectoryEntry, EnvelopeSummary};
use crate::identity::{FacilityId, Kind};
use crate::package::{self, MemberSource, OpenError};
use crate::pki::{CertError, CertInfo, TrustStore};
use crate::profile::{Profile, ProfileError};

pub use super::receive::{PostedReceipts, Received};
pub use super::send::{Flushed, SendOutcome, SendRequest};
pub use super::status::{RecipientStatus, SentStatus, VerifiedReceipts};

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
    /// A package failed verification: a signed rejection receipt was
    /// recorded (and posted, or to be posted on the next run).
    #[error("envelope {envelope}: {error} (rejection receipt {}; ciphertext kept at {kept})", if *.receipt_confirmed { "sent" } else { "recorded, to be sent on the next run" })]
    Rejected {
        /// Envelope.
        envelope: String,
        /// Why.
        error: Box<OpenError>,
        /// Where the ciphertext was kept.
        kept: String,
        /// Whether the relay confirmed the rejection receipt.
        receipt_confirmed: bool,
    },
    /// The package was sealed and waits in the outbox: the relay could not
    /// take it now. `renkei outbox flush` (or the desk) sends it later.
    #[error("the relay cannot take envelope {envelope} now ({why}); it is sealed and queued in the outbox: run `renkei outbox flush` later")]
    Queued {
        /// Envelope.
        envelope: String,
        /// Why it could not be submitted.
        why: String,
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
    /// Why the relay could not be reached when the session opened (the
    /// session still works offline: the outbox queues what is sent).
    pub offline: Option<String>,
}

fn pem_crl(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()))
}

impl Session {
    /// Open the profile, its store and a client for its relay; fetch the
    /// relay's CRL and install it if it is newer and signed by the CA. A
    /// relay that cannot be reached now does not stop the session: see
    /// [`Session::offline`].
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
            offline: None,
        };
        match s.refresh_crl().await {
            Ok(_) => {}
            Err(OpError::Client(e)) if e.is_transient() => s.offline = Some(e.to_string()),
            Err(e) => return Err(e),
        }
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
        let info = self.trust.verify_peer(&info.der, None).map_err(|err| match err {
            CertError::UnknownIssuer(_) => OpError::Relay(format!(
                "the relay served a certificate for {} that this region's CA did not issue (substituted key); it was not used",
                e.facility_id
            )),
            other => OpError::Cert(other),
        })?;
        if !info.kind.is_facility() {
            return Err(OpError::Relay(format!(
                "the directory entry for {} is the certificate of {} ({}), not of a facility; it was not used",
                e.facility_id, info.id, info.kind
            )));
        }
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

    /// A profile that requires witnesses uses a directory answer only for
    /// a certificate in the relay's witnessed log: one that every auditor
    /// and the facility's own directory monitor can see.
    async fn require_logged(&self, info: CertInfo) -> Result<CertInfo, OpError> {
        let (_, quorum) = self.profile.config.witnesses.parsed()?;
        if quorum == 0 || self.certificate_is_logged(&info.fingerprint).await? {
            return Ok(info);
        }
        Err(OpError::Relay(format!(
            "the relay served a certificate for {} (fingerprint {}) that is not in its witnessed log; it was not used",
            info.id, info.fingerprint
        )))
    }

    /// Look one facility up; its certificate is verified against the CA and
    /// CRL (and, under a witness policy, found in the witnessed log).
    pub async fn directory_show(&self, id: &FacilityId) -> Result<CertInfo, OpError> {
        let (e, _): (DirectoryEntry, _) =
            self.client.get_json(&format!("/v1/directory/{id}")).await?;
        let info = self.verify_entry(&e, Some(id.as_str()))?;
        self.require_logged(info).await
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
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            out.push(match self.verify_entry(e, Some(&e.facility_id)) {
                Ok(info) => self.require_logged(info).await,
                Err(err) => Err(err),
            });
        }
        Ok(out)
    }

    /// The thread of a package this facility sent or received.
    pub(crate) async fn thread_of(&self, package_id: &str) -> Result<Option<String>, OpError> {
        Ok(self
            .store
            .thread_packages()
            .await?
            .into_iter()
            .find(|p| p.package_id == package_id)
            .map(|p| p.thread_id))
    }

    /// Envelopes waiting for this facility.
    pub async fn inbox(&self) -> Result<Vec<EnvelopeSummary>, OpError> {
        Ok(self.client.get_json("/v1/inbox").await?.0)
    }
}

impl Session {
    /// Verify a checkpoint from the relay — its signature, and the
    /// cosignatures of the profile's witness quorum (`[witnesses]`) — and
    /// prove it consistent with the newest one this profile kept; keep it
    /// if newer. A checkpoint without the quorum, and two inconsistent
    /// checkpoints, are kept as evidence and reported as relay
    /// misbehaviour.
    pub async fn check_checkpoint(
        &self,
        note: &str,
        relay: &CertInfo,
    ) -> Result<crate::log::Checkpoint, OpError> {
        let origin = crate::receipt::bundle::log_origin(relay);
        let kept = self.store.latest_checkpoint(&origin).await?;
        let kept_note = kept.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
        // Signed by the log's checkpoint key of its size: the relay
        // certificate's, or one announced by a key transition under the
        // key before (docs/LOG.md §8), learnt here if new.
        let opened = self.open_checkpoint(note, relay, kept_note).await?;
        let cp = opened.checkpoint;
        let vkey = opened.signer;
        // The witnesses this profile requires must have cosigned it: a
        // relay showing this facility a tree no one else sees cannot get
        // their cosignatures.
        let (witnesses, quorum) = self.profile.config.witnesses.parsed()?;
        if quorum > 0 || !witnesses.is_empty() {
            if let Err(e) =
                crate::log::cosignature::open(note.as_bytes(), &origin, &vkey, &witnesses, quorum)
            {
                self.store
                    .add_evidence("checkpoint without the witness quorum", note, kept_note)
                    .await?;
                return Err(OpError::Relay(format!(
                    "the relay's checkpoint of size {} is not accepted: {e} (kept as evidence)",
                    cp.size
                )));
            }
        }
        // Every tree this facility relies on must be a prefix of this one:
        // the kept checkpoint, and the announcement of each key learnt now
        // (so the transition is in the log everyone sees, not in a tree
        // shown to this facility only).
        let mut earlier: Vec<(crate::log::Checkpoint, String)> = Vec::new();
        if let Some((_, old_note)) = &kept {
            let (old, _) = opened
                .keys
                .open(old_note.as_bytes())
                .map_err(|e| OpError::Relay(format!("the kept checkpoint does not verify: {e}")))?;
            earlier.push((old, old_note.clone()));
        }
        earlier.extend(opened.announcements.iter().cloned());
        for (old, old_note) in &earlier {
            let (a, b, an, bn) = if old.size <= cp.size {
                (old, &cp, old_note.as_str(), note)
            } else {
                (&cp, old, note, old_note.as_str())
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
        self.keep_log_keys(&opened.keys).await?;
        self.store.add_checkpoint(&origin, cp.size, note).await?;
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
