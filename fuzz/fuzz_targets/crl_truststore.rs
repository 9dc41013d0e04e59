//! `TrustStore::new` with the demo CA and a fuzzed CRL, then certificate
//! validation with the resulting store (webpki's CRL reading).
//!
//! Inputs starting with 0x00 are a fuzzed TBSCertList signed here with the
//! demo CA key, so the fuzzer gets past the CRL signature check.
//!
//! Oracle: a CRL that `TrustStore::new` accepts must be usable, i.e.
//! `verify` never answers `BadCrl` for it (the relay and clients install
//! whatever `new` accepts, and webpki/rustls read it again later).
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::pki::{CertError, TrustStore};
use renkei_fuzz::REGION;

fuzz_target!(|data: &[u8]| {
    let r = &*REGION;
    let crl = renkei_fuzz::maybe_signed(data, |_| &r.ca_key);
    let Ok(store) = TrustStore::new(&r.ca_pem, Some(&crl)) else {
        return;
    };
    assert!(store.crl_der().is_some());
    for p in &r.profiles {
        match store.verify(&p.cert.der, Some(r.at)) {
            Ok(info) => assert_eq!(info.fingerprint, p.cert.fingerprint),
            Err(CertError::Revoked { date, .. }) => {
                let _ = date;
            }
            Err(CertError::BadCrl(why)) => {
                panic!("TrustStore::new accepted a CRL that verify cannot use: {why}")
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
