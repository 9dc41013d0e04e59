//! Receipts and transparency-log entries from the relay or other
//! facilities: `SignedReceipt::from_json` (then signature checks and the
//! body of each purpose), `LogEntry::parse`, and the relay's list of
//! directory leaves (`DirectoryLeaves::parse`, then each leaf's
//! certificate as the directory monitor reads it), with round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::api::DirectoryLeaves;
use renkei::receipt::{Acceptance, Delivery, Expiry, LogEntry, Purpose, SignedReceipt, Submission};
use renkei_fuzz::REGION;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SignedReceipt::from_json(data) {
        let again = serde_json::to_vec(&r).expect("serialize");
        assert_eq!(SignedReceipt::from_json(&again).as_ref(), Ok(&r));
        for p in &REGION.profiles {
            let _ = r.verify(&p.cert.signing_key);
        }
        let _ = r.body_sha256();
        match r.purpose {
            Purpose::Submission => {
                let _ = r.parse::<Submission>(Purpose::Submission);
            }
            Purpose::Acceptance => {
                let _ = r.parse::<Acceptance>(Purpose::Acceptance);
            }
            Purpose::Delivery => {
                let _ = r.parse::<Delivery>(Purpose::Delivery);
            }
            Purpose::Expiry => {
                let _ = r.parse::<Expiry>(Purpose::Expiry);
            }
        }
        if r.purpose != Purpose::Delivery {
            assert!(r.parse::<Delivery>(Purpose::Delivery).is_err());
        }
    }
    if let Ok(page) = DirectoryLeaves::parse(data, 0, 1 << 20) {
        let again = serde_json::to_vec(&page).expect("serialize");
        assert_eq!(
            DirectoryLeaves::parse(&again, 0, 1 << 20).expect("round trip"),
            page
        );
        for l in &page.leaves {
            let _ = l.certificate();
        }
    }
    // The fast path for receipt entries accepts exactly what serde's
    // tagged enum does.
    if data.len() <= renkei::log::tiles::MAX_ENTRY_BYTES {
        let general = serde_json::from_slice::<LogEntry>(data).ok();
        let parsed = LogEntry::parse(data).ok();
        match (&parsed, &general) {
            // A key transition is checked further than serde does.
            (None, Some(LogEntry::KeyTransition { .. })) => {}
            _ => assert_eq!(parsed, general),
        }
    }
    if let Ok(e) = LogEntry::parse(data) {
        let text = e.to_text();
        assert_eq!(LogEntry::parse(text.as_bytes()).as_ref(), Ok(&e));
    }
});
