//! `package::header::check_prefix` and `package::header::parse` on
//! arbitrary bytes (the first bytes of an envelope, as the opener and the
//! relay see them): they must never panic, look at no more than
//! `MAX_HEADER_BYTES`, and agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::package::header::{self, HeaderError, MAX_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let checked = header::check_prefix(data);
    // Only the first MAX_HEADER_BYTES count.
    let cut = &data[..data.len().min(MAX_HEADER_BYTES)];
    match (checked, header::check_prefix(cut)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(HeaderError::TooLong), Err(_)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("{a:?} vs {b:?}"),
    }
    match header::parse(data) {
        Ok(h) => {
            let len = checked.expect("parse implies check");
            assert_eq!(h.len, len);
            assert!(len <= MAX_HEADER_BYTES);
            assert!(h.mac_input_len + 45 == len);
            assert_eq!(&data[h.mac_input_len - 3..h.mac_input_len], b"---");
        }
        Err(e) => {
            if let Err(c) = checked {
                assert_eq!(e, c);
            }
        }
    }
});
