//! `FacilityId::from_str` (and `PrincipalId::parse`) on arbitrary UTF-8,
//! checked against an independent reading of the 医療機関コード rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::identity::{FacilityId, Kind, PrincipalId};

/// Reference: 10 ASCII digits, prefecture 01..=47, table 1/3/4/6, Luhn.
fn reference(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let d: Vec<u32> = b.iter().map(|c| u32::from(c - b'0')).collect();
    let pref = d[0] * 10 + d[1];
    if !(1..=47).contains(&pref) || ![1, 3, 4, 6].contains(&d[2]) {
        return false;
    }
    // Luhn over all ten digits: the check digit makes the total ≡ 0 mod 10.
    let total: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let p = x * 2;
                p / 10 + p % 10
            } else {
                x
            }
        })
        .sum();
    total.is_multiple_of(10)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = s.parse::<FacilityId>();
    assert_eq!(
        parsed.is_ok(),
        reference(s),
        "FacilityId disagrees on {s:?}"
    );
    if let Ok(id) = &parsed {
        assert_eq!(id.as_str(), s);
        assert_eq!(id.to_string(), s);
        let via_serde: FacilityId =
            serde_json::from_value(serde_json::Value::String(s.to_string())).expect("serde");
        assert_eq!(&via_serde, id);
    } else {
        // The error message must be printable without panicking.
        let _ = parsed.unwrap_err().to_string();
    }
    for kind in Kind::ALL {
        match PrincipalId::parse(kind, s) {
            Ok(p) => {
                assert_eq!(p.to_string(), s);
                assert_eq!(p.facility().is_some(), kind.is_facility());
                if !kind.is_facility() {
                    // A service ID never looks like a facility code.
                    assert!(s.bytes().any(|b| b.is_ascii_lowercase()), "{kind} {s:?}");
                    assert!(!reference(s), "{kind} {s:?}");
                }
                let _ = p.uri(kind);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
