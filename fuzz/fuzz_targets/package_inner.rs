//! `package::open_into` with fuzzed *plaintext*: the input is the tar
//! stream inside a package, encrypted here to the demo hospital's age
//! recipient, so the tar, manifest and member checks are reached.
//!
//! Inputs starting with 0x00 are a tar that is first fixed up (header
//! checksums repaired, `manifest.sig` replaced by a genuine signature over
//! the fuzzed `manifest.json` with the demo sender's key), so the fuzzer
//! also reaches the checks after the signature. Anything else is used as is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plaintext = match data.split_first() {
        Some((0, tar)) => {
            let mut t = tar.to_vec();
            renkei_fuzz::fix_up_tar(&mut t);
            std::borrow::Cow::Owned(t)
        }
        _ => std::borrow::Cow::Borrowed(data),
    };
    let ciphertext = renkei_fuzz::encrypt_to_hospital(&plaintext);
    match renkei_fuzz::open_as_hospital(&ciphertext) {
        Ok(o) => {
            let _ = format!("{:?}", o.manifest);
        }
        Err(e) => {
            assert!(
                !matches!(e, renkei::package::OpenError::NotEncryptedForUs),
                "encrypted to the hospital, yet not for us"
            );
            let _ = (e.to_string(), e.reason_code(), e.is_verification_failure());
        }
    }
});
