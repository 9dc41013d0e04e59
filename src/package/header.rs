//! The age v1 header of a package, bounded and read before any decryption.
//!
//! An age header is a version line, recipient stanzas and a `---` MAC line
//! (<https://age-encryption.org/v1>, C2SP age.md). Nothing in the format
//! bounds its length, and the age crate re-parses the header from the start
//! every time it needs more bytes, which is quadratic in the header's size.
//! renkei headers hold one short stanza per recipient (at most a few
//! hundred, about 120 bytes each) plus one grease stanza, so
//! [`check_prefix`] refuses any header without its MAC line within the
//! first [`MAX_HEADER_BYTES`], in one linear scan; the opener and the relay
//! both call it before anything else looks at the bytes.
//!
//! [`parse`] then reads the bounded header into stanzas with the age-core
//! stanza parser (linear), so that the opener can count them.

use age::secrecy::ExposeSecret as _;
use age_core::format::{read, FileKey, Stanza};
use ring::{hkdf, hmac};

/// Longest age header accepted, MAC line included: 64 KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The age v1 version line.
pub const INTRO: &[u8] = b"age-encryption.org/v1\n";

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes do not start with the age v1 version line (armored age,
    /// another version, or not age at all).
    #[error("not an age v1 file (binary, not armored)")]
    NotAge,
    /// No `---` MAC line within the first [`MAX_HEADER_BYTES`].
    #[error("the age header is longer than {MAX_HEADER_BYTES} bytes (no MAC line within the bound); refused unread")]
    TooLong,
    /// The bytes end before the MAC line.
    #[error("the age header is truncated (it ends before its MAC line)")]
    Truncated,
    /// The header's structure is wrong (a stanza or the MAC line does not
    /// parse).
    #[error("the age header is malformed")]
    Malformed,
}

/// Check that `bytes`, the start of an age file, hold a whole age v1
/// header within [`MAX_HEADER_BYTES`]; return the header's length (up to
/// and including the newline that ends the `---` MAC line). At most
/// [`MAX_HEADER_BYTES`] bytes are looked at, once each.
///
/// [`HeaderError::Truncated`] means the bytes given end before the MAC line
/// although fewer than [`MAX_HEADER_BYTES`] were given: a caller reading a
/// stream may give more bytes and ask again.
pub fn check_prefix(bytes: &[u8]) -> Result<usize, HeaderError> {
    let window = &bytes[..bytes.len().min(MAX_HEADER_BYTES)];
    let n = window.len().min(INTRO.len());
    if window[..n] != INTRO[..n] {
        return Err(HeaderError::NotAge);
    }
    // Stanza lines start with "-> " and body lines are base64, so the
    // first line starting with "---" is the MAC line. The version line ends
    // with '\n', so searching from its last byte finds a MAC line right
    // after it too.
    let from = INTRO.len() - 1;
    if window.len() > from {
        let rest = &window[from..];
        if let Some(i) = rest.windows(4).position(|w| w == b"\n---") {
            let line = from + i + 1;
            if let Some(j) = window[line..].iter().position(|&b| b == b'\n') {
                return Ok(line + j + 1);
            }
        }
    }
    if bytes.len() >= MAX_HEADER_BYTES {
        Err(HeaderError::TooLong)
    } else {
        Err(HeaderError::Truncated)
    }
}

/// A parsed age v1 header.
pub struct Header {
    /// The recipient stanzas, in order.
    pub stanzas: Vec<Stanza>,
    /// The header MAC (HMAC-SHA-256, decoded).
    pub mac: [u8; 32],
    /// Bytes covered by the MAC: everything up to and including `---`.
    pub mac_input_len: usize,
    /// Length of the whole header.
    pub len: usize,
}

impl Header {
    /// The stanzas that can carry a file key to a reader: every stanza but
    /// age's random "grease" stanzas (tag ending in `-grease`, which no
    /// identity accepts).
    pub fn key_stanzas(&self) -> impl Iterator<Item = &Stanza> {
        self.stanzas.iter().filter(|s| !s.tag.ends_with("-grease"))
    }
}

/// Parse the header at the start of `bytes` (bounded by [`check_prefix`]).
/// Stanza bodies must be canonical (the last line short, as C2SP age.md
/// requires); the MAC line is `--- ` and 43 characters of unpadded base64.
pub fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
    use base64::Engine as _;
    let len = check_prefix(bytes)?;
    let header = &bytes[..len];
    let mut rest = &header[INTRO.len()..];
    let mut stanzas = Vec::new();
    while !rest.starts_with(b"---") {
        match read::age_stanza(rest) {
            Ok((r, s)) => {
                stanzas.push(Stanza::from(s));
                rest = r;
            }
            Err(_) => return Err(HeaderError::Malformed),
        }
    }
    let mac_input_len = len - rest.len() + 3;
    let line = &rest[..rest.len() - 1];
    let encoded = line
        .strip_prefix(b"--- ")
        .filter(|e| e.len() == 43)
        .ok_or(HeaderError::Malformed)?;
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .map_err(|_| HeaderError::Malformed)?;
    let mac: [u8; 32] = raw.try_into().map_err(|_| HeaderError::Malformed)?;
    Ok(Header {
        stanzas,
        mac,
        mac_input_len,
        len,
    })
}

/// Why a file key could not be had from a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapError {
    /// No stanza opens with the identity.
    NoMatchingKey,
    /// A stanza for the identity is malformed, or the header MAC does not
    /// verify (the header was altered).
    Damaged,
}

/// The HMAC-SHA-256 key of the header MAC:
/// HKDF-SHA-256(ikm = file key, salt = empty, info = "header").
fn mac_key(file_key: &FileKey) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(file_key.expose_secret());
    let okm = prk
        .expand(&[b"header"], hmac::HMAC_SHA256)
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    hmac::Key::from(okm)
}

impl Header {
    /// Find the file key: the first stanza `identity` opens, then the
    /// header MAC over the header's exact bytes (`bytes` is the file's
    /// start, as given to [`parse`]), in constant time.
    pub fn unwrap(
        &self,
        bytes: &[u8],
        identity: &dyn age::Identity,
    ) -> Result<FileKey, UnwrapError> {
        let file_key = match identity.unwrap_stanzas(&self.stanzas) {
            None => return Err(UnwrapError::NoMatchingKey),
            Some(Err(_)) => return Err(UnwrapError::Damaged),
            Some(Ok(k)) => k,
        };
        hmac::verify(&mac_key(&file_key), &bytes[..self.mac_input_len], &self.mac)
            .map_err(|_| UnwrapError::Damaged)?;
        Ok(file_key)
    }
}

/// A fresh random file key (16 bytes from the system's CSPRNG).
pub fn new_file_key() -> FileKey {
    use ring::rand::SecureRandom as _;
    FileKey::init_with_mut(|k| {
        ring::rand::SystemRandom::new()
            .fill(k)
            .expect("the system random generator works")
    })
}

/// Write an age v1 header wrapping `file_key` to every recipient, in
/// order: the version line, one canonical stanza per wrapped key (body in
/// unpadded base64 wrapped at 64 columns, the last line short), and the
/// MAC line (C2SP age.md). No grease stanza is added.
pub fn write(file_key: &FileKey, recipients: &[&dyn age::Recipient]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut out = INTRO.to_vec();
    for r in recipients {
        let (stanzas, _labels) = r.wrap_file_key(file_key).map_err(|e| e.to_string())?;
        for s in stanzas {
            out.extend_from_slice(b"-> ");
            out.extend_from_slice(s.tag.as_bytes());
            for a in &s.args {
                out.push(b' ');
                out.extend_from_slice(a.as_bytes());
            }
            out.push(b'\n');
            let body = b64.encode(&s.body);
            let mut rest = body.as_bytes();
            loop {
                let n = rest.len().min(64);
                out.extend_from_slice(&rest[..n]);
                out.push(b'\n');
                rest = &rest[n..];
                if n < 64 {
                    break;
                }
            }
        }
    }
    out.extend_from_slice(b"---");
    let mac = hmac::sign(&mac_key(file_key), &out);
    out.push(b' ');
    out.extend_from_slice(b64.encode(mac.as_ref()).as_bytes());
    out.push(b'\n');
    if out.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "too many recipients: the age header would exceed {MAX_HEADER_BYTES} bytes"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: &str = "--- 6A7Lfa4tnvK2ZsM1sNKN1QXl0g+rbjw0aH1Uhg2ujsQ\n";

    fn stanza(i: usize) -> String {
        format!("-> X25519 {}\nAAAA\n", "A".repeat(40 + i % 3))
    }

    #[test]
    fn a_small_header_is_found_and_parsed() {
        let h = format!("age-encryption.org/v1\n{}{}{MAC}", stanza(0), stanza(1));
        let mut file = h.clone().into_bytes();
        file.extend_from_slice(b"payload\n---more");
        assert_eq!(check_prefix(&file), Ok(h.len()));
        let p = parse(&file).unwrap();
        assert_eq!(p.stanzas.len(), 2);
        assert_eq!(p.len, h.len());
        assert_eq!(&file[p.mac_input_len - 3..p.mac_input_len], b"---");
        // No stanza at all still has a MAC line.
        let h = format!("age-encryption.org/v1\n{MAC}");
        assert_eq!(check_prefix(h.as_bytes()), Ok(h.len()));
        assert!(parse(h.as_bytes()).unwrap().stanzas.is_empty());
    }

    #[test]
    fn a_megabyte_of_junk_stanzas_is_too_long() {
        let mut h = b"age-encryption.org/v1\n".to_vec();
        while h.len() < 1 << 20 {
            h.extend_from_slice(stanza(h.len()).as_bytes());
        }
        h.extend_from_slice(MAC.as_bytes());
        assert_eq!(check_prefix(&h), Err(HeaderError::TooLong));
        assert_eq!(parse(&h).err(), Some(HeaderError::TooLong));
        // Just inside the bound is fine; one byte over is not.
        let mut h = b"age-encryption.org/v1\n".to_vec();
        h.extend_from_slice(b"-> x ");
        let fill = MAX_HEADER_BYTES - h.len() - 1 - 5 - MAC.len();
        h.extend(std::iter::repeat_n(b'a', fill));
        h.extend_from_slice(b"\nAAAA\n");
        h.extend_from_slice(MAC.as_bytes());
        assert_eq!(h.len(), MAX_HEADER_BYTES);
        assert_eq!(check_prefix(&h), Ok(MAX_HEADER_BYTES));
        let mut over = h[..h.len() - MAC.len()].to_vec();
        over.insert(30, b'a');
        over.extend_from_slice(MAC.as_bytes());
        assert_eq!(check_prefix(&over), Err(HeaderError::TooLong));
    }

    #[test]
    fn truncated_and_foreign_prefixes_are_refused() {
        assert_eq!(check_prefix(b""), Err(HeaderError::Truncated));
        assert_eq!(check_prefix(b"age-enc"), Err(HeaderError::Truncated));
        assert_eq!(
            check_prefix(b"age-encryption.org/v1\n-> X25519 abc\n---"),
            Err(HeaderError::Truncated)
        );
        for bad in [
            &b"-----BEGIN AGE ENCRYPTED FILE-----\n"[..],
            b"age-encryption.org/v2\n--- x\n",
            b"hello",
            &[0u8; 100][..],
        ] {
            assert_eq!(check_prefix(bad), Err(HeaderError::NotAge), "{bad:?}");
        }
    }

    #[test]
    fn malformed_stanzas_and_mac_lines_are_refused() {
        for bad in [
            format!("age-encryption.org/v1\n-> X25519\nA\n{MAC}"),
            format!("age-encryption.org/v1\n->X25519 a\nAAAA\n{MAC}"),
            format!(
                "age-encryption.org/v1\n-> X25519 a\n{}\n{MAC}",
                "A".repeat(64)
            ),
            "age-encryption.org/v1\n--- short\n".to_string(),
            "age-encryption.org/v1\n---\n".to_string(),
            format!("age-encryption.org/v1\n{}", MAC.replace(' ', "  ")),
            "age-encryption.org/v1\njunk\n--- 6A7Lfa4tnvK2ZsM1sNKN1QXl0g+rbjw0aH1Uhg2ujsQ\n"
                .to_string(),
        ] {
            assert_eq!(
                parse(bad.as_bytes()).err(),
                Some(HeaderError::Malformed),
                "{bad:?}"
            );
        }
    }
}
