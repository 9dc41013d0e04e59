//! `package::Manifest::parse` on arbitrary bytes (the inner manifest of a
//! package, parsed before its signature is checked).
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei::package::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    assert_eq!(m.format, renkei::package::FORMAT);
    assert!(!m.recipients.is_empty());
    // Package, thread and reply IDs only in their one canonical form.
    for id in [
        Some(&m.package_id),
        Some(&m.thread_id),
        m.in_reply_to.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(
            renkei::package::canonical_id(id).as_deref(),
            Some(id.as_str())
        );
    }
    // What the CLI prints and what sealing writes must round-trip.
    let bytes = serde_json::to_vec_pretty(&m).expect("serialize");
    let again = Manifest::parse(&bytes).expect("a parsed manifest re-parses");
    assert_eq!(again, m);
    let _ = Manifest::signed_message(data);
});
