//! Certificate signing requests: a facility asks the CA to certify its
//! signing key and age recipient. The CSR's self-signature proves possession
//! of the signing key and covers everything asked for.

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, SanType};
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::*;

use crate::identity::{Kind, PrincipalId};
use crate::keys::SigningKey;

/// Largest request file accepted.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not a PEM/DER CSR, or too large.
    #[error("the request is not a readable certificate signing request")]
    Malformed,
    /// The CSR signature does not verify with its own key.
    #[error("the request's signature does not verify: it was not made with the key it names")]
    BadSignature,
    /// A required field is missing or malformed.
    #[error("the request is incomplete or malformed: {0}")]
    Content(String),
    /// rcgen failed to build the CSR.
    #[error("could not build the request: {0}")]
    Build(String),
}

/// What a facility asks the CA to certify.
#[derive(Debug, Clone)]
pub struct Request {
    /// Facility or service ID.
    pub id: PrincipalId,
    /// Kind.
    pub kind: Kind,
    /// Name (CN).
    pub name: String,
    /// age recipient (required for facilities).
    pub age_recipient: Option<String>,
    /// DNS names (relay).
    pub dns_names: Vec<String>,
    /// The requested subject public key info, DER.
    pub spki_der: Vec<u8>,
    /// The raw Ed25519 public key.
    pub public_key: [u8; 32],
}

/// Check a holder's name: printable, not empty, bounded.
pub fn check_name(name: &str) -> Result<(), RequestError> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(RequestError::Content(
            "the name must be 1 to 64 printable characters".into(),
        ));
    }
    Ok(())
}

/// Check a DNS name: lowercase labels of letters, digits and '-'.
pub fn check_dns(d: &str) -> Result<(), RequestError> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(RequestError::Content(format!(
            "{d:?} is not a valid DNS name"
        )))
    }
}

/// Build a PEM CSR for `key`.
pub fn build(
    key: &SigningKey,
    id: &PrincipalId,
    kind: Kind,
    name: &str,
    age_recipient: Option<&str>,
    dns_names: &[String],
) -> Result<String, RequestError> {
    check_name(name)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, kind.as_str());
    params.distinguished_name = dn;
    let uri = id.uri(kind);
    params.subject_alt_names.push(SanType::URI(
        uri.try_into()
            .map_err(|e| RequestError::Build(format!("{e}")))?,
    ));
    for d in dns_names {
        check_dns(d)?;
        params.subject_alt_names.push(SanType::DnsName(
            d.clone()
                .try_into()
                .map_err(|e| RequestError::Build(format!("{e}")))?,
        ));
    }
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &super::oid_kind(),
            super::der_utf8(kind.as_str()),
        ));
    if let Some(r) = age_recipient {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &super::oid_age_recipient(),
                super::der_utf8(r),
            ));
    }
    let csr = params
        .serialize_request(&key.to_rcgen())
        .map_err(|e| RequestError::Build(e.to_string()))?;
    csr.pem().map_err(|e| RequestError::Build(e.to_string()))
}

/// Parse and verify a CSR (PEM or DER).
pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::Malformed);
    }
    let der =
        super::read_pem_or_der(bytes, "CERTIFICATE REQUEST").ok_or(RequestError::Malformed)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|_| RequestError::Malformed)?;
    if !rest.is_empty() {
        return Err(RequestError::Malformed);
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519
        || spki.subject_public_key.data.len() != 32
    {
        return Err(RequestError::Content("the key is not Ed25519".into()));
    }
    csr.verify_signature()
        .map_err(|_| RequestError::BadSignature)?;
    let content = |s: &str| RequestError::Content(s.to_string());
    let name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| content("no common name"))?
        .to_string();
    check_name(&name)?;
    let kind_oid = Oid::from(&super::oid_kind()[..]).expect("valid oid");
    let age_oid = Oid::from(&super::oid_age_recipient()[..]).expect("valid oid");
    let mut kind = None;
    let mut age_recipient = None;
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    for attr in info.iter_attributes() {
        if let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() {
            for ext in &req.extensions {
                if ext.oid == kind_oid {
                    let s = super::parse_der_utf8(ext.value).ok_or_else(|| content("bad kind"))?;
                    kind = Some(s.parse::<Kind>().map_err(RequestError::Content)?);
                } else if ext.oid == age_oid {
                    let s = super::parse_der_utf8(ext.value)
                        .ok_or_else(|| content("bad age recipient"))?;
                    s.parse::<age::x25519::Recipient>().map_err(|_| {
                        content("the age recipient is not an age1 X25519 recipient")
                    })?;
                    age_recipient = Some(s);
                } else if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension()
                {
                    for gn in &san.general_names {
                        match gn {
                            GeneralName::URI(u) => uris.push(u.to_string()),
                            GeneralName::DNSName(d) => {
                                check_dns(d)?;
                                dns_names.push(d.to_string())
                            }
                            _ => return Err(content("unsupported subjectAltName entry")),
                        }
                    }
                } else {
                    return Err(content("unsupported extension in request"));
                }
            }
        }
    }
    let kind = kind.ok_or_else(|| content("no kind"))?;
    let prefix = if kind.is_facility() {
        "urn:renkei:facility:".to_string()
    } else {
        format!("urn:renkei:{}:", kind.as_str())
    };
    if uris.len() != 1 {
        return Err(content("exactly one renkei ID URI is required"));
    }
    let id_str = uris[0]
        .strip_prefix(&prefix)
        .ok_or_else(|| content("the ID URI does not match the kind"))?;
    let id = PrincipalId::parse(kind, id_str).map_err(|e| RequestError::Content(e.to_string()))?;
    if kind.is_facility() && age_recipient.is_none() {
        return Err(content("a facility request must carry its age recipient"));
    }
    if kind != Kind::Relay && !dns_names.is_empty() {
        return Err(content("only a relay may ask for DNS names"));
    }
    if kind == Kind::Relay && dns_names.is_empty() {
        return Err(content("a relay request must name its DNS name"));
    }
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(&spki.subject_public_key.data);
    Ok(Request {
        id,
        kind,
        name,
        age_recipient,
        dns_names,
        spki_der: spki.raw.to_vec(),
        public_key,
    })
}
