//! `package::open_into` on fuzzed ciphertext, as the demo hospital (fixed
//! identity and trust store, loaded once), into a fresh staging folder per
//! input that is checked and removed afterwards.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match renkei_fuzz::open_as_hospital(data) {
        Ok(o) => {
            let _ = format!("{:?}", o.manifest);
        }
        Err(e) => {
            let _ = (e.to_string(), e.reason_code(), e.is_verification_failure());
        }
    }
});
