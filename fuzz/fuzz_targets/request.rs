//! `pki::request::parse` on arbitrary bytes (a CSR sent to the CA).
//!
//! Inputs starting with 0x00 are a fuzzed CertificationRequestInfo that is
//! signed here with the demo key whose public key it contains, so the
//! fuzzer gets past the self-signature check to the content checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::identity::{Kind, PrincipalId};
use renkei::pki::request;
use renkei_fuzz::REGION;

fuzz_target!(|data: &[u8]| {
    let r = &*REGION;
    let input = renkei_fuzz::maybe_signed(data, |tbs| r.key_within(tbs));
    match request::parse(&input) {
        Ok(req) => {
            assert!(input.len() <= request::MAX_REQUEST_BYTES);
            assert_eq!(req.id.facility().is_some(), req.kind.is_facility());
            assert_eq!(
                PrincipalId::parse(req.kind, &req.id.to_string()).as_ref(),
                Ok(&req.id)
            );
            if req.kind.is_facility() {
                let rcp = req.age_recipient.as_deref().expect("facility recipient");
                assert!(rcp.parse::<age::x25519::Recipient>().is_ok());
            }
            assert_eq!(req.kind == Kind::Relay, !req.dns_names.is_empty());
            for d in &req.dns_names {
                assert!(request::check_dns(d).is_ok());
            }
            assert!(request::check_name(&req.name).is_ok());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
