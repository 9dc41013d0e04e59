//! The region's public-key infrastructure: certificate requests, the CA's
//! issuance and revocation, and reading and verifying certificates.
//!
//! rcgen makes certificates, CSRs and CRLs; x509-parser reads them;
//! rustls-webpki validates the path to the region's CA and the CRL.

pub mod ca;
pub mod cert;
pub mod request;

pub use cert::{CertError, CertInfo, CrlFreshness, TrustStore, DEFAULT_CRL_GRACE_DAYS};

/// The renkei object-identifier arc: `2.25.7046431728351929657`, an arc of
/// the ITU-T X.667 UUID branch chosen at random (see docs/FORMAT.md).
pub const OID_ARC: [u64; 2] = [2, 25];
/// The random component of the renkei arc.
pub const OID_ARC_ID: u64 = 7_046_431_728_351_929_657;

/// Every renkei ID URI in a subjectAltName starts with this:
/// `urn:renkei:facility:<code>` for the facility kinds,
/// `urn:renkei:<kind>:<slug>` for the relay and auditors.
pub const ID_URI_PREFIX: &str = "urn:renkei:";

/// Extension holding the facility's age X25519 recipient (UTF8String).
pub fn oid_age_recipient() -> Vec<u64> {
    vec![OID_ARC[0], OID_ARC[1], OID_ARC_ID, 1]
}

/// Extension holding the holder's kind (UTF8String, e.g. `hospital`).
pub fn oid_kind() -> Vec<u64> {
    vec![OID_ARC[0], OID_ARC[1], OID_ARC_ID, 2]
}

/// The dotted form of an OID.
pub fn oid_string(arcs: &[u64]) -> String {
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// DER UTF8String encoding (our extension values are short).
pub(crate) fn der_utf8(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    assert!(b.len() < 128, "extension values are short");
    let mut v = vec![0x0c, b.len() as u8];
    v.extend_from_slice(b);
    v
}

/// Decode a DER UTF8String extension value.
pub(crate) fn parse_der_utf8(v: &[u8]) -> Option<String> {
    use x509_parser::der_parser::der::parse_der_utf8string;
    let (rest, obj) = parse_der_utf8string(v).ok()?;
    if !rest.is_empty() {
        return None;
    }
    obj.as_str().ok().map(str::to_string)
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Read a PEM or DER certificate file's DER bytes.
pub fn read_pem_or_der(bytes: &[u8], tag: &str) -> Option<Vec<u8>> {
    if let Ok(p) = pem::parse(bytes) {
        return (p.tag() == tag).then(|| p.into_contents());
    }
    if bytes.first() == Some(&0x30) {
        return Some(bytes.to_vec());
    }
    None
}

/// The CRL number of a DER CRL (0 when absent).
pub fn crl_number(der: Option<&[u8]>) -> u128 {
    use x509_parser::prelude::FromDer;
    der.and_then(|d| x509_parser::revocation_list::CertificateRevocationList::from_der(d).ok())
        .and_then(|(_, c)| {
            // The whole number (little-endian 64-bit digits), not only its
            // lowest digit; numbers beyond 128 bits saturate.
            c.crl_number().map(|n| {
                let digits = n.to_u64_digits();
                match digits.as_slice() {
                    [] => 0,
                    [lo] => u128::from(*lo),
                    [lo, hi] => (u128::from(*hi) << 64) | u128::from(*lo),
                    _ => u128::MAX,
                }
            })
        })
        .unwrap_or(0)
}

/// The TLS crypto provider used by the relay and every client (ring),
/// with the suites built on SHA-256 first (TLS 1.3: AES-128-GCM, then
/// ChaCha20-Poly1305, then AES-256-GCM with SHA-384). A renkei client thus
/// asks for AES-128-GCM-SHA256, which every TLS 1.3 peer supports; ring
/// hashes SHA-256 with the CPU's SHA instructions and SHA-384 without, and
/// every handshake hashes its transcript and key schedule (in the relay's
/// load bench, SHA-384 in resumed handshakes was 2.4 % of the relay's CPU).
#[cfg(feature = "net")]
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::hash::HashAlgorithm;
    use rustls::SupportedCipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        let hash = match s {
            S::Tls13(c) => c.common.hash_provider.algorithm(),
            S::Tls12(c) => c.common.hash_provider.algorithm(),
        };
        hash != HashAlgorithm::SHA256
    });
    std::sync::Arc::new(provider)
}

#[cfg(all(test, feature = "net"))]
mod tests {
    use rustls::CipherSuite as C;

    #[test]
    fn renkei_asks_for_the_sha256_suites_first_and_keeps_the_others() {
        let provider = super::tls_provider();
        let suites = &provider.cipher_suites;
        let ours: Vec<C> = suites.iter().map(|s| s.suite()).collect();
        let tls13: Vec<C> = suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], C::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            tls13,
            [
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_CHACHA20_POLY1305_SHA256,
                C::TLS13_AES_256_GCM_SHA384
            ]
        );
        let mut all: Vec<C> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut sorted = ours.clone();
        all.sort_by_key(|c| u16::from(*c));
        sorted.sort_by_key(|c| u16::from(*c));
        assert_eq!(sorted, all);
    }
}
