//! The regional CA: a folder holding the CA key (mode 0600), the CA
//! certificate, and an issuance index from which CRLs are made.
//!
//! ```text
//! CA_DIR/ca.key      Ed25519 PKCS#8 PEM, mode 0600
//! CA_DIR/ca.crt      self-signed CA certificate (PEM)
//! CA_DIR/index.json  every certificate issued, its revocation, the CRL number
//! CA_DIR/issued/     a copy of every certificate issued, by serial
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::request::{self, Request};
use super::CertInfo;
use crate::identity::Kind;
use crate::keys::{KeyError, SigningKey};

/// CA errors.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Key trouble.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The folder is not a CA folder (or already is one, for init).
    #[error("{0}")]
    Folder(String),
    /// The request was refused.
    #[error("request refused: {0}")]
    Request(#[from] request::RequestError),
    /// The ID already belongs to a different key.
    #[error("{id} already holds certificate {serial} (valid until {not_after}) for another key; revoke it first (renkei ca revoke) if the facility really replaced its keys")]
    IdTaken {
        /// The ID.
        id: String,
        /// Existing serial.
        serial: String,
        /// Existing expiry.
        not_after: String,
    },
    /// A certificate not issued by this CA.
    #[error("{0}")]
    Unknown(String),
    /// rcgen failed.
    #[error("could not sign: {0}")]
    Sign(String),
    /// A bad certificate file.
    #[error(transparent)]
    Cert(#[from] super::CertError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Serial, hex.
    pub serial: String,
    /// Holder ID.
    pub id: String,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// SHA-256 of the subject public key info, hex.
    pub key_sha256: String,
    /// Validity end (unix seconds).
    pub not_after: i64,
    /// Revocation time (unix seconds), if revoked.
    pub revoked_at: Option<i64>,
}

/// The issuance index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    /// Issued certificates in order.
    pub issued: Vec<IndexEntry>,
    /// Last CRL number used.
    pub crl_number: u64,
}

/// An open CA folder.
pub struct Ca {
    dir: PathBuf,
    key: SigningKey,
    cert_pem: String,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| CaError::Io {
        path: path.display().to_string(),
        source: e.error,
    })?;
    Ok(())
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    write_atomic(path, bytes)
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("RNG");
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

impl Ca {
    /// Create a CA in a new or empty folder.
    pub fn init(dir: &Path, name: &str, days: u32) -> Result<Ca, CaError> {
        request::check_name(name)?;
        fs::create_dir_all(dir).map_err(io(dir))?;
        if dir.join("ca.key").exists() || dir.join("ca.crt").exists() {
            return Err(CaError::Folder(format!(
                "{} already holds a CA; refusing to overwrite it",
                dir.display()
            )));
        }
        let key = SigningKey::generate();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, "renkei regional CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now() - time::Duration::minutes(5);
        params.not_after = now() + time::Duration::days(i64::from(days));
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .self_signed(&key.to_rcgen())
            .map_err(|e| CaError::Sign(e.to_string()))?;
        key.save(&dir.join("ca.key"))?;
        write_atomic(&dir.join("ca.crt"), cert.pem().as_bytes())?;
        fs::create_dir_all(dir.join("issued")).map_err(io(dir))?;
        write_atomic(
            &dir.join("index.json"),
            serde_json::to_vec_pretty(&Index::default())
                .expect("json")
                .as_slice(),
        )?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            key,
            cert_pem: cert.pem(),
        })
    }

    /// Open an existing CA folder.
    pub fn open(dir: &Path) -> Result<Ca, CaError> {
        if !dir.join("ca.key").exists() {
            return Err(CaError::Folder(format!(
                "{} is not a CA folder (no ca.key); create one with `renkei ca init`",
                dir.display()
            )));
        }
        let key = SigningKey::load(&dir.join("ca.key"))?;
        let p = dir.join("ca.crt");
        let cert_pem = fs::read_to_string(&p).map_err(io(&p))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            key,
            cert_pem,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Read the issuance index.
    pub fn index(&self) -> Result<Index, CaError> {
        let p = self.dir.join("index.json");
        let bytes = fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CaError::Folder(format!("{}: damaged index ({e})", p.display())))
    }

    fn save_index(&self, index: &Index) -> Result<(), CaError> {
        write_atomic(
            &self.dir.join("index.json"),
            serde_json::to_vec_pretty(index).expect("json").as_slice(),
        )
    }

    fn issuer(&self) -> Result<Issuer<'static, rcgen::KeyPair>, CaError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, self.key.to_rcgen())
            .map_err(|e| CaError::Sign(e.to_string()))
    }

    /// Issue a certificate for a parsed, verified request. Returns PEM.
    pub fn issue(&self, req: &Request, days: u32) -> Result<String, CaError> {
        let mut index = self.index()?;
        let key_sha256 = super::sha256_hex(&req.spki_der);
        let id = req.id.to_string();
        let t = now().unix_timestamp();
        if let Some(e) = index.issued.iter().find(|e| {
            e.id == id && e.key_sha256 != key_sha256 && e.revoked_at.is_none() && e.not_after > t
        }) {
            return Err(CaError::IdTaken {
                id,
                serial: e.serial.clone(),
                not_after: super::cert::rfc3339(e.not_after),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.name.as_str());
        dn.push(DnType::OrganizationalUnitName, req.kind.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names.push(SanType::URI(
            req.id
                .uri(req.kind)
                .try_into()
                .map_err(|e| CaError::Sign(format!("{e}")))?,
        ));
        for d in &req.dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|e| CaError::Sign(format!("{e}")))?,
            ));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match req.kind {
            Kind::Relay => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &super::oid_kind(),
                super::der_utf8(req.kind.as_str()),
            ));
        if let Some(r) = &req.age_recipient {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &super::oid_age_recipient(),
                    super::der_utf8(r),
                ));
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = now() - time::Duration::minutes(5);
        params.not_after = now() + time::Duration::days(i64::from(days));
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let spki = SubjectPublicKeyInfo::from_der(&req.spki_der)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let cert = params
            .signed_by(&spki, &self.issuer()?)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let pem = cert.pem();
        let info = CertInfo::parse(cert.der(), "issued certificate")?;
        let issued_dir = self.dir.join("issued");
        fs::create_dir_all(&issued_dir).map_err(io(&issued_dir))?;
        write_atomic(
            &issued_dir.join(format!("{}.crt", info.serial)),
            pem.as_bytes(),
        )?;
        index.issued.push(IndexEntry {
            serial: info.serial.clone(),
            id,
            kind: req.kind,
            name: req.name.clone(),
            key_sha256,
            not_after: info.not_after_unix,
            revoked_at: None,
        });
        self.save_index(&index)?;
        Ok(pem)
    }

    /// Mark a certificate issued by this CA as revoked. Returns the entry.
    /// A certificate signed with this CA's key that `index.json` does not
    /// record (found by `renkei ca reconcile`: a stolen key, a copy of the
    /// folder) is added to the index as revoked, so the next CRL lists it.
    pub fn revoke(&self, cert: &CertInfo) -> Result<IndexEntry, CaError> {
        let mut index = self.index()?;
        if !index.issued.iter().any(|e| e.serial == cert.serial) {
            let trust = super::TrustStore::new(self.cert_pem.as_bytes(), None)?;
            let at = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(cert.not_before_unix.max(0) as u64 + 1);
            trust.verify_as_of(&cert.der, at).map_err(|_| {
                CaError::Unknown(format!(
                    "certificate {} of {} was not issued by this CA",
                    cert.serial, cert.id
                ))
            })?;
            index.issued.push(IndexEntry {
                serial: cert.serial.clone(),
                id: cert.id.to_string(),
                kind: cert.kind,
                name: cert.name.clone(),
                key_sha256: super::sha256_hex(&ed25519_spki(&cert.signing_key)),
                not_after: cert.not_after_unix,
                revoked_at: None,
            });
        }
        let e = index
            .issued
            .iter_mut()
            .find(|e| e.serial == cert.serial)
            .expect("present");
        if e.revoked_at.is_none() {
            e.revoked_at = Some(now().unix_timestamp());
        }
        let out = e.clone();
        self.save_index(&index)?;
        Ok(out)
    }

    /// Make a CRL listing every revoked certificate; valid for `days`.
    pub fn crl(&self, days: u32) -> Result<String, CaError> {
        self.crl_between(
            now() - time::Duration::minutes(5),
            now() + time::Duration::days(i64::from(days.max(1))),
        )
    }

    /// Make a CRL listing every revoked certificate with the given
    /// `thisUpdate` and `nextUpdate` (a CRL already overdue, for tests and
    /// drills of an expired CRL, has `next_update` in the past).
    pub fn crl_between(
        &self,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, CaError> {
        let mut index = self.index()?;
        index.crl_number += 1;
        let revoked_certs = index
            .issued
            .iter()
            .filter_map(|e| {
                let at = e.revoked_at?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(&e.serial).ok()?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(at).ok()?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer()?)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let pem = crl.pem().map_err(|e| CaError::Sign(e.to_string()))?;
        self.save_index(&index)?;
        Ok(pem)
    }
}

/// The DER SubjectPublicKeyInfo of an Ed25519 key (every renkei key is
/// one): a fixed prefix and the 32-byte key (RFC 8410).
fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(key);
    spki
}

/// What a CA folder recorded of its issuance — `index.json` and the copies
/// in `issued/` — read without the CA key (a copy of the folder without
/// `ca.key` will do), to reconcile the relay's log against it
/// (`renkei ca reconcile`).
pub struct Records {
    index: Index,
    issued: PathBuf,
}

impl Records {
    /// Read `DIR/index.json` (and later `DIR/issued/SERIAL.crt`).
    pub fn open(dir: &Path) -> Result<Records, CaError> {
        let p = dir.join("index.json");
        let bytes = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CaError::Folder(format!(
                    "{} is not a CA folder (no index.json)",
                    dir.display()
                ))
            } else {
                io(&p)(e)
            }
        })?;
        let index = serde_json::from_slice(&bytes)
            .map_err(|e| CaError::Folder(format!("{}: damaged index ({e})", p.display())))?;
        Ok(Records {
            index,
            issued: dir.join("issued"),
        })
    }

    /// Whether this CA recorded issuing `cert`: an `index.json` entry with
    /// its serial, ID, kind, key and end of validity, and, when the copy
    /// `issued/SERIAL.crt` is there, that very certificate. Says why not.
    pub fn check(&self, cert: &CertInfo) -> Result<(), String> {
        let Some(e) = self.index.issued.iter().find(|e| e.serial == cert.serial) else {
            return Err(format!(
                "serial {} is not in index.json: this CA has no record of issuing it",
                cert.serial
            ));
        };
        let spki = ed25519_spki(&cert.signing_key);
        let id = cert.id.to_string();
        if e.id != id
            || e.kind != cert.kind
            || e.key_sha256 != super::sha256_hex(&spki)
            || e.not_after != cert.not_after_unix
        {
            return Err(format!(
                "serial {} is in index.json for {} ({}) with other contents than this certificate for {id} ({})",
                cert.serial, e.id, e.kind, cert.kind
            ));
        }
        let copy = self.issued.join(format!("{}.crt", cert.serial));
        if let Ok(pem) = fs::read(&copy) {
            match CertInfo::parse_pem(&pem, &copy.display().to_string()) {
                Ok(c) if c.fingerprint == cert.fingerprint => {}
                _ => {
                    return Err(format!(
                        "serial {} is in index.json, but {} is another certificate",
                        cert.serial,
                        copy.display()
                    ))
                }
            }
        }
        Ok(())
    }
}
