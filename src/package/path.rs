//! Member paths: the only names a package may hold.

use super::{ATTACHMENTS_DIR, DOCUMENT_PATH, MANIFEST_PATH, SENDER_CERT_PATH, SIGNATURE_PATH};

/// Longest member path, in bytes.
pub const MAX_PATH_BYTES: usize = 255;

/// Check a member path: `document.json`, `sender.crt`, `manifest.json`,
/// `manifest.sig`, or `attachments/NAME` where NAME is a plain file name
/// (no separators, no leading dot, no control characters). Returns a reason
/// when refused.
pub fn check(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err("empty or too long");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err("absolute or with forbidden characters");
    }
    if path
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err("with '..', '.' or empty components");
    }
    if [
        DOCUMENT_PATH,
        SENDER_CERT_PATH,
        MANIFEST_PATH,
        SIGNATURE_PATH,
    ]
    .contains(&path)
    {
        return Ok(());
    }
    match path.split_once('/') {
        Some((dir, name)) if dir == ATTACHMENTS_DIR => check_attachment_name(name),
        _ => Err("outside the allowed layout"),
    }
}

/// Check an attachment's file name.
pub fn check_attachment_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty()
        || name.len() > MAX_PATH_BYTES - ATTACHMENTS_DIR.len() - 1
        || name.starts_with('.')
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(char::is_control)
    {
        return Err("not a plain file name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn allowed_and_refused() {
        for ok in [
            "document.json",
            "sender.crt",
            "attachments/検査結果.pdf",
            "attachments/a b.png",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "attachments/../../x",
            "attachments/./x",
            "attachments//x",
            "attachments/.hidden",
            "attachments/a/b",
            "other.txt",
            "attachments\\x",
            "attachments/a\u{7}",
            "document.json/",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check(&format!("attachments/{}", "a".repeat(300))).is_err());
    }
}
