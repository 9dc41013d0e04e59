//! The region's PKI: keys, profiles, requests, issuance, revocation, and
//! certificate verification, through the library API.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::*;
use renkei::identity::{IdError, Kind};
use renkei::keys::{KeyError, SigningKey};
use renkei::pki::ca::{Ca, CaError};
use renkei::pki::request::{self, RequestError};
use renkei::pki::{CertError, CertInfo, TrustStore};
use renkei::profile::{Profile, ProfileError};

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

fn csr_der(profile: &Profile) -> Vec<u8> {
    der_of(&fs::read_to_string(profile.path(Profile::REQUEST)).unwrap())
}

fn csr_pem(der: Vec<u8>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

#[test]
fn the_listed_facility_ids_are_valid() {
    for id in [CLINIC, HOSPITAL, RECOVERY, OTHER] {
        id.parse::<renkei::identity::FacilityId>()
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    assert_eq!(facility_id("131123456"), CLINIC);
}

#[test]
fn keygen_refuses_to_overwrite_a_profile() {
    let region = Region::new();
    let p = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let key_before = fs::read(p.path(Profile::SIGNING_KEY)).unwrap();
    let age_before = fs::read(p.path(Profile::AGE_KEY)).unwrap();
    let csr_before = fs::read(p.path(Profile::REQUEST)).unwrap();
    let err = Profile::create(&p.dir, CLINIC, Kind::Clinic, "さくら内科クリニック", &[])
        .err()
        .expect("a second keygen into the same folder is refused");
    assert!(matches!(err, ProfileError::NotReady(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("already holds a profile"), "{msg}");
    assert!(msg.contains("refusing to overwrite"), "{msg}");
    assert_eq!(fs::read(p.path(Profile::SIGNING_KEY)).unwrap(), key_before);
    assert_eq!(fs::read(p.path(Profile::AGE_KEY)).unwrap(), age_before);
    assert_eq!(fs::read(p.path(Profile::REQUEST)).unwrap(), csr_before);

    // Even when only one key file is present.
    let lone = region.path().join("lone");
    fs::create_dir(&lone).unwrap();
    fs::write(lone.join(Profile::AGE_KEY), "AGE-SECRET-KEY-1...").unwrap();
    assert!(Profile::create(&lone, CLINIC, Kind::Clinic, "x", &[]).is_err());
    assert!(!lone.join(Profile::SIGNING_KEY).exists());

    // The key writer itself never overwrites.
    let e = SigningKey::generate()
        .save(&p.path(Profile::SIGNING_KEY))
        .unwrap_err();
    assert!(matches!(e, KeyError::Exists(_)), "{e:?}");
    assert!(e.to_string().contains("refusing to overwrite a key"));
}

#[test]
fn ca_init_refuses_to_overwrite_a_ca() {
    let region = Region::new();
    let key_before = fs::read(region.ca_dir.join("ca.key")).unwrap();
    let err = Ca::init(&region.ca_dir, "another", 10)
        .err()
        .expect("refused");
    assert!(matches!(err, CaError::Folder(_)), "{err:?}");
    assert!(err.to_string().contains("already holds a CA"), "{err}");
    assert_eq!(fs::read(region.ca_dir.join("ca.key")).unwrap(), key_before);
}

#[cfg(unix)]
#[test]
fn an_existing_folder_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shared");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let p = Profile::create(&dir, CLINIC, Kind::Clinic, "さくら内科クリニック", &[]).unwrap();
    assert_eq!(mode(&dir), 0o755, "an existing folder is not chmodded");
    assert_eq!(mode(&p.path(Profile::SIGNING_KEY)), 0o600);
    assert_eq!(mode(&p.path(Profile::AGE_KEY)), 0o600);
}

#[cfg(unix)]
#[test]
fn key_files_are_mode_0600() {
    let region = Region::new();
    let p = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    assert_eq!(mode(&p.path(Profile::SIGNING_KEY)), 0o600);
    assert_eq!(mode(&p.path(Profile::AGE_KEY)), 0o600);
    assert_eq!(mode(&p.dir), 0o700);
    assert_eq!(mode(&region.ca_dir.join("ca.key")), 0o600);
    // The keys are what they claim to be.
    let pem_text = fs::read_to_string(p.path(Profile::SIGNING_KEY)).unwrap();
    assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    let age_text = fs::read_to_string(p.path(Profile::AGE_KEY)).unwrap();
    assert!(age_text.contains("AGE-SECRET-KEY-1"));
    assert!(age_text.contains("# public key: age1"));
}

#[test]
fn malformed_facility_ids_are_refused_with_clear_messages() {
    let region = Region::new();
    let cases: [(&str, &str); 8] = [
        ("123", "must be exactly 10 digits"),
        ("13112345690", "must be exactly 10 digits"),
        ("131123456a", "must be exactly 10 digits"),
        ("１３１１２３４５６９", "must be exactly 10 digits"),
        (
            "4811234569",
            "prefecture number 48 is not between 01 and 47",
        ),
        (
            "0011234569",
            "prefecture number 00 is not between 01 and 47",
        ),
        (
            "1321234569",
            "点数表番号 2 is not 1 (医科), 3 (歯科), 4 (調剤) or 6 (訪問看護)",
        ),
        ("1311234568", "check digit is 8, expected 9"),
    ];
    for (i, (id, needle)) in cases.iter().enumerate() {
        let dir = region.path().join(format!("bad-{i}"));
        let err = Profile::create(&dir, id, Kind::Clinic, "さくら内科クリニック", &[])
            .err()
            .unwrap_or_else(|| panic!("{id} accepted"));
        let msg = err.to_string();
        assert!(msg.contains(needle), "{id}: {msg}");
        assert!(!dir.exists(), "{id}: nothing is created for a bad ID");
    }
    assert!(matches!(
        "1311234568".parse::<renkei::identity::FacilityId>(),
        Err(IdError::CheckDigit(_, 8, 9))
    ));
    // A service ID is not a facility ID.
    let err = Profile::create(
        &region.path().join("svc"),
        "relay-1",
        Kind::Hospital,
        "x",
        &[],
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("must be exactly 10 digits"),
        "{err}"
    );
}

#[test]
fn issue_and_verify_a_facility_certificate() {
    let region = Region::new();
    let f = region.facility(HOSPITAL, Kind::RegionalSupportHospital, "みなと総合病院");
    let info = region.trust().verify(&f.cert.der, None).unwrap();
    assert_eq!(info.id.to_string(), HOSPITAL);
    assert_eq!(info.kind, Kind::RegionalSupportHospital);
    assert_eq!(info.name, "みなと総合病院");
    assert_eq!(info.issuer, CA_NAME);
    assert_eq!(info.signing_key, f.key.public_key());
    assert_eq!(
        info.age_recipient.as_deref(),
        Some(f.recipient().to_string().as_str())
    );
    assert_eq!(info.fingerprint, sha256_hex(&info.der));
    // The profile sees its own certificate as valid.
    assert_eq!(
        f.profile.certificate().unwrap().fingerprint,
        info.fingerprint
    );
    // The CA's index recorded it.
    let index = region.ca.index().unwrap();
    assert_eq!(index.issued.len(), 1);
    assert_eq!(index.issued[0].serial, info.serial);
    assert!(region
        .ca_dir
        .join("issued")
        .join(format!("{}.crt", info.serial))
        .is_file());
}

#[test]
fn a_request_with_a_bad_signature_is_refused() {
    let region = Region::new();
    let p = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let good = csr_der(&p);
    assert!(request::parse(&good).is_ok());
    // The Ed25519 signature is the last 64 bytes of the DER.
    for back in [1usize, 20, 64] {
        let mut der = good.clone();
        let i = der.len() - back;
        der[i] ^= 0x01;
        let err = request::parse(csr_pem(der).as_bytes()).unwrap_err();
        assert!(matches!(err, RequestError::BadSignature), "{back}: {err:?}");
        assert!(err.to_string().contains("signature does not verify"));
    }
    // Content changed under the signature (the age recipient's last
    // character): also a bad signature.
    let recipient = p.age_identity().unwrap().recipient().to_string();
    let pos = good
        .windows(recipient.len())
        .position(|w| w == recipient.as_bytes())
        .expect("recipient in CSR");
    let mut der = good.clone();
    let last = pos + recipient.len() - 1;
    der[last] = if der[last] == b'q' { b'p' } else { b'q' };
    let err = request::parse(&der).unwrap_err();
    assert!(matches!(err, RequestError::BadSignature), "{err:?}");
    // And the CA command path reports it as a refused request; nothing is
    // issued.
    let mut der = good.clone();
    let n = der.len();
    der[n - 1] ^= 0x80;
    let parsed = request::parse(&der);
    let err: CaError = parsed.unwrap_err().into();
    assert!(err.to_string().starts_with("request refused:"), "{}", err);
    assert!(region.ca.index().unwrap().issued.is_empty());
}

#[test]
fn a_malformed_request_is_refused() {
    let region = Region::new();
    let p = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let good = csr_der(&p);
    let not_a_csr = pem::encode(&pem::Pem::new("CERTIFICATE", good.clone()));
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("text", b"please issue me a certificate".to_vec()),
        ("truncated DER", good[..good.len() / 2].to_vec()),
        ("trailing data", [good.clone(), vec![0]].concat()),
        ("wrong PEM tag", not_a_csr.into_bytes()),
        ("huge", vec![b'A'; request::MAX_REQUEST_BYTES + 1]),
    ] {
        let err = request::parse(&bytes).unwrap_err();
        assert!(matches!(err, RequestError::Malformed), "{what}: {err:?}");
        assert_eq!(
            err.to_string(),
            "the request is not a readable certificate signing request"
        );
    }
    // A well-formed, correctly signed CSR that is not a renkei request.
    let key = SigningKey::generate();
    let mut params = rcgen::CertificateParams::new(vec!["example.org".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "example");
    let foreign = params.serialize_request(&key.to_rcgen()).unwrap();
    let err = request::parse(foreign.pem().unwrap().as_bytes()).unwrap_err();
    assert!(matches!(err, RequestError::Content(_)), "{err:?}");
}

#[test]
fn a_request_without_an_age_recipient_is_refused() {
    let key = SigningKey::generate();
    let id = renkei::identity::PrincipalId::parse(Kind::Clinic, CLINIC).unwrap();
    let csr = request::build(&key, &id, Kind::Clinic, "さくら内科クリニック", None, &[]).unwrap();
    let err = request::parse(csr.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("must carry its age recipient"),
        "{err}"
    );
}

#[test]
fn an_id_already_issued_to_another_key_is_refused_until_revoked() {
    let region = Region::new();
    let first = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    // The same facility renews with the same key: allowed.
    let renewed = region.issue(&first.profile, 730);
    assert_eq!(
        CertInfo::parse_pem(renewed.as_bytes(), "renewed")
            .unwrap()
            .signing_key,
        first.key.public_key()
    );
    // Someone else asks for the same ID with another key: refused.
    let imposter = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let csr = fs::read(imposter.path(Profile::REQUEST)).unwrap();
    let req = request::parse(&csr).unwrap();
    let err = region.ca.issue(&req, 730).unwrap_err();
    match &err {
        CaError::IdTaken { id, serial, .. } => {
            assert_eq!(id, CLINIC);
            assert_eq!(serial, &first.cert.serial);
        }
        other => panic!("expected IdTaken, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("already holds certificate"), "{msg}");
    assert!(msg.contains("renkei ca revoke"), "{msg}");
    // After revoking every certificate of the old key, the new key may have
    // the ID.
    region.ca.revoke(&first.cert).unwrap();
    let err = region.ca.issue(&req, 730).unwrap_err();
    assert!(
        matches!(err, CaError::IdTaken { .. }),
        "the renewed certificate still holds the ID: {err:?}"
    );
    region
        .ca
        .revoke(&CertInfo::parse_pem(renewed.as_bytes(), "renewed").unwrap())
        .unwrap();
    let pem_text = region.ca.issue(&req, 730).expect("issued after revocation");
    let info = CertInfo::parse_pem(pem_text.as_bytes(), "new").unwrap();
    assert_eq!(info.id.to_string(), CLINIC);
    assert_eq!(
        info.signing_key,
        imposter.signing_key().unwrap().public_key()
    );
}

#[test]
fn a_revoked_certificate_fails_verification_naming_the_date() {
    let region = Region::new();
    let f = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let entry = region.ca.revoke(&f.cert).unwrap();
    let revoked_at = entry.revoked_at.expect("revocation time");
    // Before the new CRL is known, the old trust store still accepts it.
    let old = TrustStore::new(
        region.ca_pem().as_bytes(),
        Some(fs::read(f.profile.path(Profile::CRL)).unwrap().as_slice()),
    )
    .unwrap();
    assert!(old.verify(&f.cert.der, None).is_ok());
    let crl = region.crl();
    let trust = TrustStore::new(region.ca_pem().as_bytes(), Some(crl.as_bytes())).unwrap();
    let err = trust.verify(&f.cert.der, None).unwrap_err();
    let date = time::OffsetDateTime::from_unix_timestamp(revoked_at)
        .unwrap()
        .date()
        .to_string();
    match &err {
        CertError::Revoked { id, date: d } => {
            assert_eq!(id, HOSPITAL);
            assert_eq!(d, &date);
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("was revoked on {date}")), "{msg}");
    assert!(msg.contains(HOSPITAL), "{msg}");
    // Revoking again keeps the first date.
    let again = region.ca.revoke(&f.cert).unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at));
}

#[test]
fn a_certificate_is_checked_as_of_the_time_a_statement_was_signed() {
    let region = Region::new();
    let f = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let entry = region.ca.revoke(&f.cert).unwrap();
    let revoked_at = entry.revoked_at.expect("revocation time");
    let crl = region.crl();
    let trust = TrustStore::new(region.ca_pem().as_bytes(), Some(crl.as_bytes())).unwrap();
    let at = |secs: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    // Signed before the revocation: still evidence.
    assert!(trust.verify_as_of(&f.cert.der, at(revoked_at - 60)).is_ok());
    // Signed at or after it: refused, naming the revocation.
    for t in [revoked_at, revoked_at + 60] {
        match trust.verify_as_of(&f.cert.der, at(t)) {
            Err(CertError::Revoked { id, .. }) => assert_eq!(id, HOSPITAL),
            other => panic!("expected Revoked, got {other:?}"),
        }
    }
    // Outside the validity window: refused whatever the CRL says.
    assert!(matches!(
        trust.verify_as_of(&f.cert.der, at(f.cert.not_after_unix + 60)),
        Err(CertError::Expired { .. })
    ));
}

#[test]
fn an_expired_certificate_fails_verification() {
    let region = Region::new();
    let f = region.facility_days(CLINIC, Kind::Clinic, "さくら内科クリニック", 10);
    let trust = region.trust();
    let later = SystemTime::now() + Duration::from_secs(11 * 86_400);
    let err = trust.verify(&f.cert.der, Some(later)).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("is not valid now"), "{err}");
    assert!(trust.verify(&f.cert.der, None).is_ok());
}

#[test]
fn a_certificate_from_another_ca_is_an_unknown_issuer() {
    let region = Region::new();
    let trust = region.trust();
    for other_name in [CA_NAME, "よその地域 CA"] {
        let other = Region::named(other_name);
        let f = other.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
        let err = trust.verify(&f.cert.der, None).unwrap_err();
        assert!(
            matches!(&err, CertError::UnknownIssuer(id) if id == CLINIC),
            "{other_name}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("was not issued by this region's CA"),
            "{err}"
        );
    }
}

#[test]
fn a_crl_from_another_ca_is_refused() {
    let region = Region::new();
    let other = Region::named(CA_NAME);
    let foreign_crl = other.crl();
    let err = TrustStore::new(region.ca_pem().as_bytes(), Some(foreign_crl.as_bytes()))
        .err()
        .expect("a CRL of another CA is refused");
    assert!(matches!(err, CertError::BadCrl(_)), "{err:?}");
    assert!(
        err.to_string().contains("not signed by this region's CA"),
        "{err}"
    );
    // Garbage is refused too.
    let err = TrustStore::new(region.ca_pem().as_bytes(), Some(b"not a CRL"))
        .err()
        .unwrap();
    assert!(matches!(err, CertError::BadCrl(_)), "{err:?}");
    // And the profile does not install it (the old CRL stays).
    let mut f = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let before = fs::read(f.profile.path(Profile::CRL)).unwrap();
    let err = f
        .profile
        .install(None, None, Some(foreign_crl.as_bytes()), None)
        .unwrap_err();
    assert!(
        matches!(err, ProfileError::Cert(CertError::BadCrl(_))),
        "{err:?}"
    );
    assert_eq!(fs::read(f.profile.path(Profile::CRL)).unwrap(), before);
}

#[test]
fn profile_install_refuses_a_certificate_for_another_key() {
    let region = Region::new();
    let mut mine = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let other = region.keygen(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let other_cert = region.issue(&other, 730);
    let err = mine
        .install(
            Some(other_cert.as_bytes()),
            Some(region.ca_pem().as_bytes()),
            None,
            None,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("issued for another signing key, not this profile's"),
        "{err}"
    );
    assert!(!mine.path(Profile::CERT).exists());
    assert!(
        !mine.path(Profile::CA).exists(),
        "nothing is installed when the certificate is refused"
    );
}

#[test]
fn profile_install_refuses_a_certificate_from_another_ca() {
    let region = Region::new();
    let other = Region::named(CA_NAME);
    let mut p = other.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    // Issued by the other CA, installed with this region's CA.
    let cert = other.issue(&p, 730);
    let err = p
        .install(
            Some(cert.as_bytes()),
            Some(region.ca_pem().as_bytes()),
            None,
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, ProfileError::Cert(CertError::UnknownIssuer(_))),
        "{err:?}"
    );
}

#[test]
fn profile_install_refuses_a_revoked_certificate() {
    let region = Region::new();
    let mut p = region.keygen(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let cert = region.issue(&p, 730);
    region
        .ca
        .revoke(&CertInfo::parse_pem(cert.as_bytes(), "c").unwrap())
        .unwrap();
    let crl = region.crl();
    let err = p
        .install(
            Some(cert.as_bytes()),
            Some(region.ca_pem().as_bytes()),
            Some(crl.as_bytes()),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, ProfileError::Cert(CertError::Revoked { .. })),
        "{err:?}"
    );
}

#[test]
fn revoke_refuses_a_certificate_of_another_ca() {
    let region = Region::new();
    let other = Region::new();
    let f = other.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let err = region.ca.revoke(&f.cert).unwrap_err();
    assert!(matches!(err, CaError::Unknown(_)), "{err:?}");
    assert!(
        err.to_string().contains("was not issued by this CA"),
        "{err}"
    );
}

#[test]
fn the_certificate_binds_both_keys_and_the_id() {
    let region = Region::new();
    let f = region.facility(RECOVERY, Kind::RecoveryHospital, "あおば回復期病院");
    let (_, cert) = x509_parser::parse_x509_certificate(&f.cert.der).unwrap();
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![format!("urn:renkei:facility:{RECOVERY}")]);
    let age_oid = renkei::pki::oid_string(&renkei::pki::oid_age_recipient());
    assert_eq!(age_oid, "2.25.7046431728351929657.1");
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == age_oid)
        .expect("age recipient extension");
    assert!(!ext.critical);
    let recipient = f.recipient().to_string();
    assert!(ext
        .value
        .windows(recipient.len())
        .any(|w| w == recipient.as_bytes()));
    assert!(!cert.is_ca());
}

#[test]
fn profile_install_refuses_an_older_crl() {
    // Re-installing a stale CRL would silently un-revoke certificates.
    let region = Region::new();
    let mut f = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let other = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let stale = region.crl();
    let fresh = region.revoke(&other);
    f.install_crl(&fresh);
    let err = f
        .profile
        .install(None, None, Some(stale.as_bytes()), None)
        .unwrap_err();
    assert!(
        err.to_string().contains("is older than the installed one"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(f.profile.path(Profile::CRL)).unwrap(),
        fresh
    );
    let err = f.trust().verify(&other.cert.der, None).unwrap_err();
    assert!(matches!(err, CertError::Revoked { .. }), "{err:?}");
}

/// A certificate signed by the region's CA key directly (bypassing
/// `Ca::issue`'s checks): kind `kind`, subjectAltName URIs `uris`.
fn hand_issued(region: &Region, kind: &str, uris: &[&str], dns: &[&str]) -> Vec<u8> {
    use rcgen::{CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, SanType};
    let ca_key = SigningKey::load(&region.ca_dir.join("ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(region.ca_pem(), ca_key.to_rcgen()).unwrap();
    let subject = SigningKey::generate();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "hand-made");
    for u in uris {
        params
            .subject_alt_names
            .push(SanType::URI(u.to_string().try_into().unwrap()));
    }
    for d in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(d.to_string().try_into().unwrap()));
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut der_kind = vec![0x0c, kind.len() as u8];
    der_kind.extend_from_slice(kind.as_bytes());
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &renkei::pki::oid_kind(),
            der_kind,
        ));
    let age = renkei::keys::AgeIdentity::generate()
        .recipient()
        .to_string();
    let mut der_age = vec![0x0c, age.len() as u8];
    der_age.extend_from_slice(age.as_bytes());
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &renkei::pki::oid_age_recipient(),
            der_age,
        ));
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    params
        .signed_by(&subject.to_rcgen(), &issuer)
        .unwrap()
        .der()
        .to_vec()
}

#[test]
fn a_certificate_whose_id_disagrees_with_its_kind_is_refused() {
    let region = Region::new();
    // The hand-made path itself works: a well-formed relay certificate.
    let good = hand_issued(
        &region,
        "relay",
        &["urn:renkei:relay:relay-9"],
        &["localhost"],
    );
    let info = CertInfo::parse(&good, "good").unwrap();
    assert_eq!(
        (info.kind, info.id.to_string()),
        (Kind::Relay, "relay-9".into())
    );
    let cases: [(&str, &[&str]); 5] = [
        // A relay certificate that also names a facility.
        (
            "relay",
            &["urn:renkei:relay:relay-9", "urn:renkei:facility:1311234569"],
        ),
        // A facility URI under an auditor kind.
        ("auditor", &["urn:renkei:facility:1311234569"]),
        // A clinic named with a relay URI.
        ("clinic", &["urn:renkei:relay:relay-9"]),
        // A relay that looks like a facility code.
        ("relay", &["urn:renkei:relay:1311234569"]),
        // A clinic code without its check digit.
        ("clinic", &["urn:renkei:facility:1311234568"]),
    ];
    for (kind, uris) in cases {
        let der = hand_issued(&region, kind, uris, &["localhost"]);
        let e = CertInfo::parse(&der, "hand-made").unwrap_err();
        assert!(
            matches!(e, CertError::NotRenkei { .. }),
            "{kind} {uris:?}: {e:?}"
        );
        assert!(
            region.trust().verify(&der, None).is_err(),
            "{kind} {uris:?}"
        );
    }
}

#[test]
fn relay_and_auditor_ids_never_look_like_facility_codes() {
    let region = Region::new();
    for (kind, dns) in [
        (Kind::Relay, vec!["localhost".to_string()]),
        (Kind::Auditor, vec![]),
    ] {
        for id in [CLINIC, "1234", "0"] {
            let dir = region.path().join(format!("svc-{kind}-{id}"));
            let e = Profile::create(&dir, id, kind, "service", &dns)
                .err()
                .unwrap_or_else(|| panic!("{kind} {id} accepted"));
            assert!(e.to_string().contains("at least one letter"), "{e}");
        }
    }
}

#[test]
fn a_receipt_bundle_signed_by_a_non_facility_is_refused() {
    use renkei::log::{self, Checkpoint, Signer};
    use renkei::receipt::bundle::{self, ReceiptBundle};
    use renkei::receipt::{Delivery, LogEntry, Outcome, Purpose, SignedReceipt};
    let region = Region::new();
    let relay = Profile::create(
        &region.path().join("relay"),
        "relay-1",
        Kind::Relay,
        "relay",
        &["localhost".into()],
    )
    .unwrap();
    let relay_pem = region.issue(&relay, 30);
    let relay_cert = CertInfo::parse_pem(relay_pem.as_bytes(), "relay").unwrap();
    let relay_key = relay.signing_key().unwrap();
    let auditor = region.keygen("audit-1", Kind::Auditor, "監査");
    let auditor_pem = region.issue(&auditor, 30);
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "東都中央病院");

    // A delivery receipt, logged and checkpointed by the relay.
    let make = |signer: &str, key: &SigningKey, cert_pem: &str| {
        let receipt = SignedReceipt::sign(
            Purpose::Delivery,
            &Delivery {
                envelope_id: "ab".repeat(32),
                recipient: HOSPITAL.parse().unwrap(),
                outcome: Outcome::Verified,
                reason: None,
                delivered_at: renkei::receipt::now_rfc3339(),
            },
            key,
        );
        let entry = LogEntry::Receipt {
            signer: signer.to_string(),
            receipt: receipt.clone(),
        }
        .to_text();
        let origin = bundle::log_origin(&relay_cert);
        let cp = Checkpoint::new(&origin, 1, log::leaf_hash(entry.as_bytes()))
            .unwrap()
            .sign(&[&Signer::ed25519(&origin, &relay_key).unwrap()])
            .unwrap();
        ReceiptBundle {
            log_index: 0,
            signer: signer.to_string(),
            receipt,
            entry,
            inclusion: vec![],
            checkpoint: cp,
            relay_certificate: relay_pem.clone(),
            signer_certificate: Some(cert_pem.to_string()),
            key_transitions: Vec::new(),
        }
    };
    let trust = region.trust();
    // Signed by the recipient facility: verifies.
    let genuine = make(HOSPITAL, &hospital.key, &hospital.cert_pem);
    bundle::verify(&genuine, &trust, None).unwrap();
    // Signed by the auditor under its own ID: refused for its kind.
    let forged = make("audit-1", &auditor.signing_key().unwrap(), &auditor_pem);
    let e = bundle::verify(&forged, &trust, None).unwrap_err();
    assert!(e.to_string().contains("not a party that signs it"), "{e}");
}

#[test]
fn crl_freshness_follows_next_update_and_the_grace_period() {
    use renkei::pki::CrlFreshness;
    let region = Region::new();
    let f = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    // region.crl() is valid for 30 days.
    let trust = region.trust();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    assert_eq!(trust.crl_freshness(Some(now)), CrlFreshness::Current);
    assert!(trust.crl_warning(Some(now)).is_none());
    trust
        .verify_peer(&f.cert.der, Some(now + 29 * day))
        .unwrap();
    let at = now + 33 * day;
    assert!(matches!(
        trust.crl_freshness(Some(at)),
        CrlFreshness::Overdue { .. }
    ));
    assert!(trust.crl_warning(Some(at)).is_some());
    trust.verify_peer(&f.cert.der, Some(at)).unwrap();
    let at = now + 38 * day;
    assert!(matches!(
        trust.crl_freshness(Some(at)),
        CrlFreshness::Stale { .. }
    ));
    // verify alone still passes (the relay's own certificate, one's own);
    // a peer's status cannot be confirmed.
    trust.verify(&f.cert.der, Some(at)).unwrap();
    let e = trust.verify_peer(&f.cert.der, Some(at)).unwrap_err();
    assert!(matches!(e, CertError::StaleCrl(_)), "{e:?}");
    assert!(e.to_string().contains(CLINIC), "{e}");
    // A longer grace period accepts it.
    let trust = trust.with_crl_grace_days(30);
    trust.verify_peer(&f.cert.der, Some(at)).unwrap();
    // Without a CRL there is nothing to be stale (and no revocation check).
    let bare = TrustStore::new(region.ca_pem().as_bytes(), None).unwrap();
    assert_eq!(bare.crl_freshness(Some(at)), CrlFreshness::Missing);
}

#[test]
fn a_stale_crl_refuses_opening_with_a_local_reason_code() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let mut hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let bytes = seal_simple(&clinic, &[&hospital]);
    let now = time::OffsetDateTime::now_utc();
    let stale = region
        .ca
        .crl_between(
            now - time::Duration::days(40),
            now - time::Duration::days(10),
        )
        .unwrap();
    hospital.install_crl(&stale);
    let e = expect_refused(&hospital, &bytes);
    assert_eq!(e.reason_code(), "crl-stale", "{e}");
}

#[test]
fn crl_numbers_beyond_64_bits_compare_whole() {
    // Only the lowest 64-bit digit used to be read: 2^64 + 1 read as 1,
    // so an older CRL (number 5) looked newer.
    let region = Region::new();
    let ca_key = SigningKey::load(&region.ca_dir.join("ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(region.ca_pem(), ca_key.to_rcgen()).unwrap();
    let crl = |n: &[u8]| {
        let now = time::OffsetDateTime::now_utc();
        rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from_slice(n),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap()
        .der()
        .to_vec()
    };
    let big = crl(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    let small = crl(&[0x05]);
    assert_eq!(renkei::pki::crl_number(Some(&big)), (1u128 << 64) + 1);
    assert_eq!(renkei::pki::crl_number(Some(&small)), 5);
    // A profile holding the big one refuses the small one.
    let mut f = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let pem_of = |der: &[u8]| pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()));
    f.install_crl(&pem_of(&big));
    let e = f
        .profile
        .install(None, None, Some(pem_of(&small).as_bytes()), None)
        .unwrap_err();
    assert!(
        e.to_string().contains("is older than the installed one"),
        "{e}"
    );
}
