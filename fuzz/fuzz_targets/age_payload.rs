//! `package::payload::Decryptor` on arbitrary bytes under a fixed file
//! key: it must never panic, and a stream it accepts must round-trip
//! through `package::payload::Encryptor`'s format (same length rule).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use renkei::package::payload::{self, CHUNK, NONCE, TAG};

fuzz_target!(|data: &[u8]| {
    let key = age_core::format::FileKey::new(Box::new([42u8; 16]));
    let mut out = Vec::new();
    let opened = std::thread::scope(|s| payload::Decryptor::new(s, data, key).read_to_end(&mut out));
    if opened.is_ok() {
        // Only a stream with a correct tag on every chunk gets here: its
        // length follows from the plaintext's.
        let chunks = out.len().div_ceil(CHUNK).max(1);
        assert_eq!(data.len(), NONCE + out.len() + chunks * TAG);
    }
});
