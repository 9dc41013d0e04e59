//! `CertInfo::parse` and `CertInfo::parse_pem` on arbitrary bytes (a
//! recipient's or sender's certificate), then path validation against the
//! demo region's trust store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::pki::CertInfo;
use renkei_fuzz::REGION;

fn check(info: &CertInfo) {
    assert_eq!(info.kind.is_facility(), info.facility_id().is_ok());
    if info.kind.is_facility() {
        assert!(
            info.recipient().is_ok(),
            "facility certificate without a usable recipient"
        );
    }
    // What we print about it must not panic.
    let _ = format!(
        "{info:?} {} {} {}",
        info.name, info.not_before, info.not_after
    );
    // PEM round trip.
    let again = CertInfo::parse_pem(info.pem().as_bytes(), "again").expect("re-parse own PEM");
    assert_eq!(again.fingerprint, info.fingerprint);
    assert_eq!(again.id, info.id);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = CertInfo::parse(data, "fuzz") {
        assert_eq!(info.der, data);
        check(&info);
    }
    if let Ok(info) = CertInfo::parse_pem(data, "fuzz") {
        check(&info);
    }
    let r = &*REGION;
    if let Ok(info) = r.trust.verify(data, Some(r.at)) {
        // Only the CA can sign, so this should be one of the demo certificates.
        assert!(
            r.profiles.iter().any(|p| p.cert.der == info.der),
            "an unknown certificate verified"
        );
    }
});
