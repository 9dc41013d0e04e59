//! `package::path::check` on arbitrary UTF-8: whatever it accepts must be a
//! relative path of plain components that stays inside the staging folder.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use renkei::package::path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if path::check(s).is_err() {
        return;
    }
    assert!(!s.is_empty() && s.len() <= path::MAX_PATH_BYTES);
    assert!(!s.contains('\\') && !s.contains('\0'));
    let comps: Vec<Component<'_>> = Path::new(s).components().collect();
    assert!(
        comps.iter().all(|c| matches!(c, Component::Normal(_))),
        "accepted a path with a non-plain component: {s:?}"
    );
    assert!(comps.len() == 1 || comps.len() == 2, "{s:?}");
    if comps.len() == 2 {
        assert_eq!(comps[0].as_os_str(), renkei::package::ATTACHMENTS_DIR);
        let name = comps[1].as_os_str().to_str().expect("utf-8");
        assert!(path::check_attachment_name(name).is_ok());
        assert!(!name.starts_with('.') && !name.chars().any(char::is_control));
    } else {
        assert!([
            renkei::package::DOCUMENT_PATH,
            renkei::package::SENDER_CERT_PATH,
            renkei::package::MANIFEST_PATH,
            renkei::package::SIGNATURE_PATH,
        ]
        .contains(&s));
    }
    let base = Path::new("/staging");
    assert!(base.join(s).starts_with(base));
});
