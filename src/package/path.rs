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

/// Check an attachment's file name: a plain name that means the same on
/// every desk's file system and shows what it is. Refused:
///
/// - empty, longer than 243 bytes, or starting with `.`;
/// - characters Windows forbids in names (`< > : " / \ | ? *`);
/// - control, format, separator, private-use and unassigned code points
///   (Unicode general categories Cc, Cf, Zl, Zp, Co, Cn): bidi overrides
///   and isolates, zero-width spaces and joiners, BOM, soft hyphen, tags;
/// - other invisible characters: variation selectors, the combining
///   grapheme joiner, Mongolian free variation selectors, Hangul fillers,
///   the braille blank;
/// - a trailing dot or white space (Windows strips them);
/// - Windows device names (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`,
///   `LPT0`–`LPT9`, with superscript ¹²³ too, `CONIN$`, `CONOUT$`), in any
///   case and with any extension.
pub fn check_attachment_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty()
        || name.len() > MAX_PATH_BYTES - ATTACHMENTS_DIR.len() - 1
        || name.starts_with('.')
    {
        return Err("not a plain file name: empty, too long or starting with '.'");
    }
    if name.contains(['<', '>', ':', '"', '/', '\\', '|', '?', '*']) {
        return Err(r#"a character Windows does not allow in file names (< > : " / \ | ? *)"#);
    }
    if name.chars().any(invisible) {
        return Err("an invisible, control or formatting character (such as a bidi override or a zero-width space)");
    }
    if name.ends_with(|c: char| c == '.' || c.is_whitespace()) {
        return Err("a trailing dot or space");
    }
    if windows_device(name) {
        return Err("a Windows device name (CON, PRN, AUX, NUL, COM1, LPT1, ...)");
    }
    Ok(())
}

/// Whether `c` is invisible or controls the text around it.
fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory as _};
    matches!(
        c.general_category(),
        G::Control
            | G::Format
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::PrivateUse
            | G::Unassigned
            | G::Surrogate
    ) || matches!(
        c,
        '\u{034F}' // combining grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}' // Mongolian free variation selectors
            | '\u{2800}' // braille pattern blank
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// Whether `name` is a Windows device name, whatever its case and
/// extension (Windows ignores both, and spaces before the extension).
fn windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    let upper = stem.to_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            let tail = upper
                .strip_prefix("COM")
                .or_else(|| upper.strip_prefix("LPT"));
            matches!(tail, Some(t) if t.chars().count() == 1
                && t.chars().all(|d| d.is_ascii_digit() || matches!(d, '¹' | '²' | '³')))
        }
    }
}

/// The key under which two member paths are "the same name": Unicode
/// canonical caseless matching (The Unicode Standard §3.13, D145:
/// `NFD(casefold(NFD(X)))`, full case folding C + F), so that
/// `attachments/A.pdf` and `attachments/a.PDF`, `attachments/ß.txt` and
/// `attachments/SS.txt`, and one name spelled in NFC and in NFD (`デ` as
/// U+30C7 or as U+30C6 U+3099, the form macOS writes) collide as they would
/// on a case- and normalization-insensitive file system.
pub fn fold(path: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let nfd: String = path.nfd().collect();
    unicase::UniCase::new(nfd.as_str())
        .to_folded_case()
        .nfd()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{check, check_attachment_name, fold};

    #[test]
    fn allowed_and_refused() {
        for ok in [
            "document.json",
            "sender.crt",
            "attachments/検査結果.pdf",
            "attachments/a b.png",
            "attachments/紹介状（補足）.txt",
            "attachments/画像　1.png",
            "attachments/がぎぐ.pdf",
            "attachments/Maße.txt",
            "attachments/console.txt",
            "attachments/COM10.txt",
            "attachments/nul-report.pdf",
            "attachments/a検査.pdf",
            "attachments/é検.pdf",
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

    fn refused(names: &[&str], why: &str) {
        for n in names {
            let e = check_attachment_name(n).expect_err(n);
            assert!(e.contains(why), "{n:?}: {e}");
            assert!(check(&format!("attachments/{n}")).is_err(), "{n:?}");
        }
    }

    #[test]
    fn bidi_zero_width_and_other_invisible_characters_are_refused() {
        refused(
            &[
                "invoice\u{202E}fdp.exe", // right-to-left override
                "a\u{2066}b\u{2069}.pdf", // isolates
                "a\u{200E}.pdf",          // left-to-right mark
                "a\u{200B}.pdf",          // zero-width space
                "a\u{200C}b.pdf",         // zero-width non-joiner
                "a\u{200D}b.pdf",         // zero-width joiner
                "a\u{2060}b.pdf",         // word joiner
                "\u{FEFF}a.pdf",          // BOM
                "a\u{00AD}b.pdf",         // soft hyphen
                "a\u{E0041}.pdf",         // tag character
                "a\u{061C}.pdf",          // Arabic letter mark
                "a\u{2028}b.pdf",         // line separator
                "a\u{E000}b.pdf",         // private use
                "a\u{0085}b.pdf",         // C1 control (NEL)
                "a\tb.pdf",
                "a\u{FE0F}.pdf",   // variation selector
                "葛\u{E0100}.pdf", // ideographic variation selector
                "a\u{034F}b.pdf",  // combining grapheme joiner
                "a\u{3164}b.pdf",  // Hangul filler
                "a\u{2800}b.pdf",  // braille blank
            ],
            "invisible",
        );
    }

    #[test]
    fn windows_forbidden_characters_are_refused() {
        refused(
            &[
                "C:x.pdf", "a:b", "a\\b.pdf", "a<b", "a>b", "a|b", "a?b", "a*b", "a\"b",
            ],
            "Windows does not allow",
        );
    }

    #[test]
    fn windows_device_names_are_refused() {
        refused(
            &[
                "CON",
                "con",
                "Con.txt",
                "PRN.pdf",
                "aux.tar.gz",
                "NUL",
                "nul .txt",
                "COM1",
                "com9.log",
                "LPT1.txt",
                "lpt5",
                "COM¹.txt",
                "CONIN$",
                "conout$.x",
            ],
            "device name",
        );
    }

    #[test]
    fn trailing_dots_and_spaces_are_refused() {
        refused(
            &["a.pdf.", "a.pdf ", "a ", "a.pdf\u{3000}", "a..", "a. ."],
            "trailing",
        );
    }

    #[test]
    fn folding_makes_case_variants_equal() {
        for (a, b) in [
            ("attachments/A.pdf", "attachments/a.PDF"),
            ("attachments/Maße.txt", "attachments/MASSE.TXT"),
            ("attachments/ΣΊΣΥΦΟΣ.txt", "attachments/σίσυφος.txt"),
            ("attachments/Ǆ.txt", "attachments/ǆ.txt"),
            ("attachments/ＡＢＣ.txt", "attachments/ａｂｃ.txt"),
        ] {
            assert_eq!(fold(a), fold(b), "{a} {b}");
        }
        assert_eq!(
            fold("attachments/データ.csv"),
            fold("attachments/テ\u{3099}ータ.csv")
        );
        assert_eq!(fold("Å.txt"), fold("A\u{30a}.TXT"));
        assert_eq!(
            fold("Å.txt"),
            fold("\u{212b}.txt"),
            "ANGSTROM SIGN is canonically Å"
        );
        assert_ne!(fold("attachments/a.pdf"), fold("attachments/b.pdf"));
        assert_ne!(fold("attachments/が.pdf"), fold("attachments/か.pdf"));
    }
}
