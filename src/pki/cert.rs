//! Reading a renkei certificate and validating it against the region's CA
//! and CRL.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::*;

use crate::identity::{Kind, PrincipalId};

/// Why a certificate was not accepted. The message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Not a parsable X.509 certificate.
    #[error("{0}: not a readable X.509 certificate")]
    Malformed(String),
    /// Parsable, but not a renkei certificate (missing ID, kind, or key).
    #[error("{what}: not a renkei certificate ({why})")]
    NotRenkei {
        /// Which certificate.
        what: String,
        /// What is missing.
        why: String,
    },
    /// Does not chain to this region's CA.
    #[error("the certificate of {0} was not issued by this region's CA; it cannot be trusted")]
    UnknownIssuer(String),
    /// Outside its validity period.
    #[error("the certificate of {id} is not valid now (valid {not_before} to {not_after}); ask {id} to renew it with the CA")]
    Expired {
        /// Holder.
        id: String,
        /// Start.
        not_before: String,
        /// End.
        not_after: String,
    },
    /// On the CRL.
    #[error("the certificate of {id} was revoked on {date}; do not exchange documents with this key, and ask {id} for its new certificate")]
    Revoked {
        /// Holder.
        id: String,
        /// When.
        date: String,
    },
    /// The CRL is unusable (bad signature, another CA, unreadable).
    #[error("the CRL is not usable: {0}; fetch the current CRL from the network operator")]
    BadCrl(String),
    /// Any other path-validation failure.
    #[error("the certificate of {id} failed validation ({why})")]
    Invalid {
        /// Holder.
        id: String,
        /// webpki's reason.
        why: String,
    },
    /// The CRL is past its `nextUpdate` by more than the grace period, so
    /// whether a certificate is revoked cannot be confirmed.
    #[error(transparent)]
    StaleCrl(Box<StaleCrl>),
    /// A certificate of the wrong kind for the purpose.
    #[error("{id} is a {kind}, not a {want}")]
    WrongKind {
        /// Holder.
        id: String,
        /// Its kind.
        kind: Kind,
        /// What was expected.
        want: String,
    },
}

/// Why the revocation status of a certificate cannot be confirmed: the
/// CRL is stale ([`CertError::StaleCrl`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot confirm that the certificate of {id} is not revoked: {crl} was due to be replaced on {next_update} and is more than {grace_days} days overdue; refresh it: {refresh}")]
pub struct StaleCrl {
    /// Holder of the certificate being checked.
    pub id: String,
    /// Which CRL (its file and number).
    pub crl: String,
    /// The CRL's `nextUpdate`.
    pub next_update: String,
    /// The grace period in days.
    pub grace_days: u32,
    /// How to get a current CRL.
    pub refresh: String,
}

/// What a renkei certificate says.
#[derive(Clone, Serialize)]
pub struct CertInfo {
    /// Facility or service ID.
    pub id: PrincipalId,
    /// Holder's name (subject CN).
    pub name: String,
    /// Holder's kind.
    pub kind: Kind,
    /// The age recipient (facilities only).
    pub age_recipient: Option<String>,
    /// DNS names (relay).
    pub dns_names: Vec<String>,
    /// Ed25519 signing key, hex.
    #[serde(serialize_with = "ser_hex")]
    pub signing_key: [u8; 32],
    /// Issuer CN.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    #[serde(skip)]
    /// Start of validity, seconds since the epoch.
    pub not_before_unix: i64,
    #[serde(skip)]
    /// End of validity, seconds since the epoch.
    pub not_after_unix: i64,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// The DER certificate.
    #[serde(skip)]
    pub der: Vec<u8>,
}

fn ser_hex<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

impl fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertInfo({} {} {})",
            self.id, self.kind, self.fingerprint
        )
    }
}

/// A unix time as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

impl CertInfo {
    /// Parse a DER certificate; `what` names it in errors.
    pub fn parse(der: &[u8], what: &str) -> Result<Self, CertError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|_| CertError::Malformed(what.into()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed(what.into()));
        }
        let not_renkei = |why: &str| CertError::NotRenkei {
            what: what.into(),
            why: why.into(),
        };
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| not_renkei("no subject common name"))?
            .to_string();
        let issuer = cert
            .issuer()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        let mut kind = None;
        let mut age_recipient = None;
        let kind_oid = Oid::from(&super::oid_kind()[..]).expect("valid oid");
        let age_oid = Oid::from(&super::oid_age_recipient()[..]).expect("valid oid");
        for ext in cert.extensions() {
            if ext.oid == kind_oid {
                let s = super::parse_der_utf8(ext.value)
                    .ok_or_else(|| not_renkei("bad kind extension"))?;
                kind = Some(s.parse::<Kind>().map_err(|e| not_renkei(&e))?);
            } else if ext.oid == age_oid {
                let s = super::parse_der_utf8(ext.value)
                    .ok_or_else(|| not_renkei("bad age recipient extension"))?;
                s.parse::<age::x25519::Recipient>().map_err(|_| {
                    not_renkei("the age recipient extension is not an age1 recipient")
                })?;
                age_recipient = Some(s);
            }
        }
        let kind = kind.ok_or_else(|| not_renkei("no kind extension"))?;
        let mut id = None;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for gn in &san.value.general_names {
                match gn {
                    GeneralName::URI(u) => {
                        let prefix = if kind.is_facility() {
                            "urn:renkei:facility:".to_string()
                        } else {
                            format!("urn:renkei:{}:", kind.as_str())
                        };
                        if let Some(rest) = u.strip_prefix(&prefix) {
                            if id.is_some() {
                                return Err(not_renkei("more than one renkei ID"));
                            }
                            id = Some(
                                PrincipalId::parse(kind, rest)
                                    .map_err(|e| not_renkei(&e.to_string()))?,
                            );
                        } else if u.starts_with(super::ID_URI_PREFIX) {
                            // A renkei ID of another kind (a facility URI
                            // in a relay certificate, say): kind and ID
                            // must agree.
                            return Err(not_renkei(
                                "a renkei ID URI that does not agree with the kind",
                            ));
                        }
                    }
                    GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                    _ => {}
                }
            }
        }
        let id = id.ok_or_else(|| not_renkei("no renkei ID in subjectAltName"))?;
        if kind.is_facility() && age_recipient.is_none() {
            return Err(not_renkei(
                "a facility certificate without an age recipient",
            ));
        }
        let spki = cert.public_key();
        if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519
            || spki.subject_public_key.data.len() != 32
        {
            return Err(not_renkei("the subject key is not Ed25519"));
        }
        let mut signing_key = [0u8; 32];
        signing_key.copy_from_slice(&spki.subject_public_key.data);
        let v = cert.validity();
        Ok(CertInfo {
            id,
            name,
            kind,
            age_recipient,
            dns_names,
            signing_key,
            issuer,
            serial: hex::encode(cert.raw_serial()),
            not_before: rfc3339(v.not_before.timestamp()),
            not_after: rfc3339(v.not_after.timestamp()),
            not_before_unix: v.not_before.timestamp(),
            not_after_unix: v.not_after.timestamp(),
            fingerprint: super::sha256_hex(der),
            der: der.to_vec(),
        })
    }

    /// Parse a PEM (or DER) certificate file's bytes.
    pub fn parse_pem(bytes: &[u8], what: &str) -> Result<Self, CertError> {
        let der = super::read_pem_or_der(bytes, "CERTIFICATE")
            .ok_or_else(|| CertError::Malformed(what.into()))?;
        Self::parse(&der, what)
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        ::pem::encode(&::pem::Pem::new("CERTIFICATE", self.der.clone()))
    }

    /// The facility ID, or an error for a relay/auditor certificate.
    pub fn facility_id(&self) -> Result<&crate::identity::FacilityId, CertError> {
        self.id.facility().ok_or_else(|| CertError::WrongKind {
            id: self.id.to_string(),
            kind: self.kind,
            want: "medical facility".into(),
        })
    }

    /// The age recipient as a typed value.
    pub fn recipient(&self) -> Result<age::x25519::Recipient, CertError> {
        self.age_recipient
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CertError::WrongKind {
                id: self.id.to_string(),
                kind: self.kind,
                want: "facility with an age recipient".into(),
            })
    }
}

/// Days past a CRL's `nextUpdate` during which it is still used (with a
/// warning) before the revocation status it gives counts as unknown.
pub const DEFAULT_CRL_GRACE_DAYS: u32 = 7;

/// How current the trust store's CRL is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlFreshness {
    /// No CRL is installed (no revocation checking at all).
    Missing,
    /// Before its `nextUpdate` (or it has none).
    Current,
    /// Past its `nextUpdate`, within the grace period: used, with a warning.
    Overdue {
        /// The CRL's `nextUpdate` (RFC 3339).
        next_update: String,
    },
    /// Past its `nextUpdate` by more than the grace period: revocation
    /// status cannot be confirmed.
    Stale {
        /// The CRL's `nextUpdate` (RFC 3339).
        next_update: String,
    },
}

/// The trust anchor (region CA) and, if known, the current CRL.
#[derive(Clone)]
pub struct TrustStore {
    ca_der: Vec<u8>,
    crl_der: Option<Vec<u8>>,
    crl_next_update: Option<i64>,
    crl_grace_days: u32,
    crl_source: Option<String>,
    crl_refresh: Option<String>,
    /// The CA's name.
    pub ca_name: String,
}

impl TrustStore {
    /// Build from a CA certificate and an optional CRL (PEM or DER).
    pub fn new(ca: &[u8], crl: Option<&[u8]>) -> Result<Self, CertError> {
        let ca_der = super::read_pem_or_der(ca, "CERTIFICATE")
            .ok_or_else(|| CertError::Malformed("CA certificate".into()))?;
        let (_, c) = X509Certificate::from_der(&ca_der)
            .map_err(|_| CertError::Malformed("CA certificate".into()))?;
        let ca_name = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        webpki::anchor_from_trusted_cert(&CertificateDer::from(ca_der.as_slice()))
            .map_err(|_| CertError::Malformed("CA certificate".into()))?;
        let mut crl_next_update = None;
        let crl_der = match crl {
            None => None,
            Some(b) => {
                let der = super::read_pem_or_der(b, "X509 CRL")
                    .ok_or_else(|| CertError::BadCrl("not a PEM or DER CRL".into()))?;
                let (rest, parsed) = CertificateRevocationList::from_der(&der)
                    .map_err(|_| CertError::BadCrl("unreadable".into()))?;
                if !rest.is_empty() {
                    return Err(CertError::BadCrl("extra bytes after the CRL".into()));
                }
                // Accept exactly what verification (webpki, rustls) will read.
                webpki::BorrowedCertRevocationList::from_der(&der)
                    .map_err(|e| CertError::BadCrl(format!("{e:?}")))?;
                parsed
                    .verify_signature(c.public_key())
                    .map_err(|_| CertError::BadCrl("not signed by this region's CA".into()))?;
                crl_next_update = parsed.next_update().map(|t| t.timestamp());
                Some(der)
            }
        };
        Ok(TrustStore {
            ca_der,
            crl_der,
            crl_next_update,
            crl_grace_days: DEFAULT_CRL_GRACE_DAYS,
            crl_source: None,
            crl_refresh: None,
            ca_name,
        })
    }

    /// Set the grace period after the CRL's `nextUpdate` (days).
    pub fn with_crl_grace_days(mut self, days: u32) -> Self {
        self.crl_grace_days = days;
        self
    }

    /// Name the CRL (e.g. `the CRL in PROFILE/crl.pem`) and say how to refresh it, for
    /// the messages of [`CertError::StaleCrl`] and [`Self::crl_warning`].
    pub fn with_crl_source(mut self, source: String, refresh: String) -> Self {
        self.crl_source = Some(source);
        self.crl_refresh = Some(refresh);
        self
    }

    /// The grace period after the CRL's `nextUpdate` (days).
    pub fn crl_grace_days(&self) -> u32 {
        self.crl_grace_days
    }

    /// The CRL's `nextUpdate` (Unix seconds), if it has a CRL with one.
    pub fn crl_next_update(&self) -> Option<i64> {
        self.crl_next_update
    }

    /// How current the CRL is at `at` (now if `None`).
    pub fn crl_freshness(&self, at: Option<SystemTime>) -> CrlFreshness {
        if self.crl_der.is_none() {
            return CrlFreshness::Missing;
        }
        let Some(next) = self.crl_next_update else {
            return CrlFreshness::Current;
        };
        let now = at
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let next_update = rfc3339(next);
        if now <= next {
            CrlFreshness::Current
        } else if now - next <= i64::from(self.crl_grace_days) * 86_400 {
            CrlFreshness::Overdue { next_update }
        } else {
            CrlFreshness::Stale { next_update }
        }
    }

    fn crl_label(&self) -> String {
        let n = super::crl_number(self.crl_der());
        match &self.crl_source {
            Some(s) => format!("{s} (number {n})"),
            None => format!("the region's CRL (number {n})"),
        }
    }

    fn crl_refresh_hint(&self) -> String {
        self.crl_refresh.clone().unwrap_or_else(|| {
            "fetch the current CRL from the relay (`renkei crl fetch --profile PROFILE`) or install the CA's (`renkei profile install --profile PROFILE --crl FILE`)".into()
        })
    }

    /// A warning for the user when the CRL is past its `nextUpdate` (within
    /// the grace period or beyond); `None` when it is current or missing.
    pub fn crl_warning(&self, at: Option<SystemTime>) -> Option<String> {
        match self.crl_freshness(at) {
            CrlFreshness::Missing | CrlFreshness::Current => None,
            CrlFreshness::Overdue { next_update } => Some(format!(
                "{} was due to be replaced on {next_update}; after {} days past that date, documents to and from facilities can no longer be checked against it. Refresh it: {}",
                self.crl_label(),
                self.crl_grace_days,
                self.crl_refresh_hint()
            )),
            CrlFreshness::Stale { next_update } => Some(format!(
                "{} was due to be replaced on {next_update} and is more than {} days overdue: sealing to and opening from facilities fails until it is refreshed: {}",
                self.crl_label(),
                self.crl_grace_days,
                self.crl_refresh_hint()
            )),
        }
    }

    /// Fail with [`CertError::StaleCrl`] when the CRL is stale at `at`:
    /// the revocation status of `id` cannot be confirmed.
    pub fn require_fresh_crl(&self, id: &str, at: Option<SystemTime>) -> Result<(), CertError> {
        match self.crl_freshness(at) {
            CrlFreshness::Stale { next_update } => Err(CertError::StaleCrl(Box::new(StaleCrl {
                id: id.to_string(),
                crl: self.crl_label(),
                next_update,
                grace_days: self.crl_grace_days,
                refresh: self.crl_refresh_hint(),
            }))),
            _ => Ok(()),
        }
    }

    /// [`Self::verify`] a peer facility's certificate (an addressee, a
    /// sender), and require that its revocation status can be confirmed:
    /// the CRL must not be stale ([`Self::require_fresh_crl`]).
    pub fn verify_peer(&self, der: &[u8], at: Option<SystemTime>) -> Result<CertInfo, CertError> {
        let info = self.verify(der, at)?;
        self.require_fresh_crl(&info.id.to_string(), at)?;
        Ok(info)
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The CRL, DER, if any.
    pub fn crl_der(&self) -> Option<&[u8]> {
        self.crl_der.as_deref()
    }

    /// Validate `der` at time `at` (now if `None`): chain to the CA, validity,
    /// CRL, and the extended key usage of its kind; then parse it.
    pub fn verify(&self, der: &[u8], at: Option<SystemTime>) -> Result<CertInfo, CertError> {
        let info = CertInfo::parse(der, "certificate")?;
        let id = info.id.to_string();
        let now = at.unwrap_or_else(SystemTime::now);
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let anchor_der = CertificateDer::from(self.ca_der.as_slice());
        let anchors = [webpki::anchor_from_trusted_cert(&anchor_der)
            .map_err(|_| CertError::Malformed("CA certificate".into()))?];
        let cert_der = CertificateDer::from(der);
        let ee = webpki::EndEntityCert::try_from(&cert_der)
            .map_err(|_| CertError::Malformed(id.clone()))?;
        let crl = match &self.crl_der {
            Some(d) => Some(
                webpki::BorrowedCertRevocationList::from_der(d)
                    .map_err(|e| CertError::BadCrl(format!("{e:?}")))?
                    .into(),
            ),
            None => None,
        };
        let crls: Vec<&webpki::CertRevocationList<'_>> = crl.iter().collect();
        let revocation = if crls.is_empty() {
            None
        } else {
            Some(
                webpki::RevocationOptionsBuilder::new(&crls)
                    .expect("non-empty")
                    .with_depth(webpki::RevocationCheckDepth::EndEntity)
                    .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                    .build(),
            )
        };
        let usage = if info.kind == Kind::Relay {
            webpki::KeyUsage::server_auth()
        } else {
            webpki::KeyUsage::client_auth()
        };
        let r = ee.verify_for_usage(
            &[webpki::ring::ED25519],
            &anchors,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(secs)),
            usage,
            revocation,
            None,
        );
        match r {
            Ok(_) => Ok(info),
            Err(webpki::Error::UnknownIssuer)
            | Err(webpki::Error::InvalidSignatureForPublicKey) => Err(CertError::UnknownIssuer(id)),
            Err(webpki::Error::CertExpired { .. }) | Err(webpki::Error::CertNotValidYet { .. }) => {
                Err(CertError::Expired {
                    id,
                    not_before: info.not_before,
                    not_after: info.not_after,
                })
            }
            Err(webpki::Error::CertRevoked) => Err(CertError::Revoked {
                date: self
                    .revocation_date(&info)
                    .unwrap_or_else(|| "an unknown date".into()),
                id,
            }),
            Err(e) => Err(CertError::Invalid {
                id,
                why: format!("{e:?}"),
            }),
        }
    }

    /// Validate `der` as it stood at `at`, the time a signed statement was
    /// made: the chain and the validity window are checked at `at`, and a
    /// revocation counts only if the CRL dates it at or before `at`. Old
    /// evidence (a receipt kept in the log) so stays verifiable after the
    /// certificate expires or is revoked later.
    pub fn verify_as_of(&self, der: &[u8], at: SystemTime) -> Result<CertInfo, CertError> {
        match self.verify(der, Some(at)) {
            Err(CertError::Revoked { id, date }) => {
                let info = CertInfo::parse(der, "certificate")?;
                let at_secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
                match self.revocation_time(&info) {
                    Some(revoked) if revoked > at_secs => TrustStore {
                        crl_der: None,
                        crl_next_update: None,
                        ..self.clone()
                    }
                    .verify(der, Some(at)),
                    _ => Err(CertError::Revoked { id, date }),
                }
            }
            other => other,
        }
    }

    fn revocation_time(&self, info: &CertInfo) -> Option<i64> {
        let (_, crl) = CertificateRevocationList::from_der(self.crl_der.as_ref()?).ok()?;
        let found = crl
            .iter_revoked_certificates()
            .find(|r| hex::encode(r.raw_serial()) == info.serial)
            .map(|r| r.revocation_date.timestamp());
        found
    }

    fn revocation_date(&self, info: &CertInfo) -> Option<String> {
        let (_, crl) = CertificateRevocationList::from_der(self.crl_der.as_ref()?).ok()?;
        let found = crl
            .iter_revoked_certificates()
            .find(|r| hex::encode(r.raw_serial()) == info.serial)
            .map(|r| rfc3339(r.revocation_date.timestamp())[..10].to_string());
        found
    }
}
