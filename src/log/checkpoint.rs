//! C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>): the note
//! text of a signed tree head.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal, no leading zeros>\n
//! <root hash, standard base64 of 32 bytes>\n
//! [<extension line>\n]...
//! ```
//!
//! signed as a C2SP signed note ([`super::note`]) by the log's key, whose
//! name is the origin.

use base64::Engine as _;

use super::merkle::{Hash, EMPTY_ROOT};
use super::note::{self, NoteError, Signer, VerifiedNote, Verifier};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Most extension lines accepted.
pub const MAX_EXTENSIONS: usize = 64;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note around it was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The body does not have the checkpoint form.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The origin is not the one expected.
    #[error("checkpoint of log {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// The origin wanted.
        expected: String,
        /// The origin found.
        found: String,
    },
}

/// A checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (by convention, its key name).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// The RFC 9162 root hash at that size.
    pub root: Hash,
    /// Opaque extension lines (without newlines); not recommended.
    pub extensions: Vec<String>,
}

fn check_line(line: &str, what: &'static str) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(CheckpointError::Malformed(what));
    }
    if line.bytes().any(|b| b < 0x20) {
        return Err(CheckpointError::Malformed("control character"));
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint without extensions.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        let c = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: Vec::new(),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), CheckpointError> {
        check_line(&self.origin, "empty origin")?;
        if self.extensions.len() > MAX_EXTENSIONS {
            return Err(CheckpointError::Malformed("too many extension lines"));
        }
        for e in &self.extensions {
            check_line(e, "empty extension line")?;
        }
        if self.size == 0 && self.root != EMPTY_ROOT {
            return Err(CheckpointError::Malformed(
                "an empty tree's root must be SHA-256 of nothing",
            ));
        }
        Ok(())
    }

    /// The note text (every line ends in a newline).
    pub fn to_text(&self) -> Result<String, CheckpointError> {
        self.validate()?;
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        Ok(s)
    }

    /// Parse an untrusted note text.
    pub fn parse(text: &[u8]) -> Result<Self, CheckpointError> {
        if text.len() > note::MAX_NOTE_BYTES {
            return Err(CheckpointError::Malformed("too large"));
        }
        let s = std::str::from_utf8(text).map_err(|_| CheckpointError::Malformed("not UTF-8"))?;
        let body = s
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or("");
        check_line(origin, "empty origin")?;
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("no tree size line"))?;
        let size = parse_decimal(size)?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "the root hash is not base64 of 32 bytes",
            ))?;
        let mut extensions = Vec::new();
        for e in lines {
            check_line(e, "empty extension line")?;
            if extensions.len() == MAX_EXTENSIONS {
                return Err(CheckpointError::Malformed("too many extension lines"));
            }
            extensions.push(e.to_string());
        }
        let c = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        };
        c.validate()?;
        Ok(c)
    }

    /// The signed checkpoint, by one or more signers (the log's own key
    /// first; its name should equal the origin).
    pub fn sign(&self, signers: &[&Signer<'_>]) -> Result<String, CheckpointError> {
        Ok(note::sign(&self.to_text()?, signers)?)
    }

    /// Verify a signed checkpoint of the log `origin` against its trusted
    /// keys and parse it.
    pub fn open(
        signed: &[u8],
        origin: &str,
        verifiers: &[Verifier],
    ) -> Result<(Checkpoint, VerifiedNote), CheckpointError> {
        let n = note::open(signed, verifiers)?;
        let c = Checkpoint::parse(n.text.as_bytes())?;
        if c.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_string(),
                found: c.origin,
            });
        }
        Ok((c, n))
    }
}

/// ASCII decimal `u64` with no sign and no leading zero (except "0").
fn parse_decimal(s: &str) -> Result<u64, CheckpointError> {
    let bad = CheckpointError::Malformed("the tree size is not a canonical decimal number");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::leaf_hash;
    use crate::log::note::tests::key_from_seed;
    use proptest::prelude::*;

    #[test]
    fn encode_parse() {
        let c = Checkpoint::new("renkei.example/relay", 5, leaf_hash(b"x")).unwrap();
        let t = c.to_text().unwrap();
        assert_eq!(Checkpoint::parse(t.as_bytes()).unwrap(), c);
        assert_eq!(t.lines().count(), 3);
    }

    #[test]
    fn strictness() {
        let root = B64.encode(leaf_hash(b"x"));
        let ok = format!("o\n10\n{root}\n");
        Checkpoint::parse(ok.as_bytes()).unwrap();
        let ext = format!("o\n10\n{root}\next one\n");
        assert_eq!(
            Checkpoint::parse(ext.as_bytes()).unwrap().extensions,
            ["ext one"]
        );
        for bad in [
            format!("o\n10\n{root}"),
            format!("\n10\n{root}\n"),
            format!("o\n010\n{root}\n"),
            format!("o\n+10\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n 10\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n10\n{}\n", &root[..40]),
            format!("o\n10\n{root}\n\n"),
            format!("o\n10\n{root}\nx\n\ny\n"),
            format!("o\r\n10\n{root}\n"),
            "o\n10\n".to_string(),
            format!("o\n0\n{root}\n"),
            format!("o\n10\nAAAA{root}\n"),
        ] {
            assert!(Checkpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let empty = format!("o\n0\n{}\n", B64.encode(EMPTY_ROOT));
        assert_eq!(Checkpoint::parse(empty.as_bytes()).unwrap().size, 0);
        let max = format!("o\n18446744073709551615\n{root}\n");
        assert_eq!(Checkpoint::parse(max.as_bytes()).unwrap().size, u64::MAX);
        assert!(Checkpoint::new("", 1, EMPTY_ROOT).is_err());
        assert!(Checkpoint::new("a\nb", 1, EMPTY_ROOT).is_err());
    }

    #[test]
    fn sign_and_open() {
        let k = key_from_seed(&[42; 32]);
        let s = Signer::ed25519("renkei.example/relay", &k).unwrap();
        let c = Checkpoint::new("renkei.example/relay", 3, leaf_hash(b"r")).unwrap();
        let signed = c.sign(&[&s]).unwrap();
        let (back, n) =
            Checkpoint::open(signed.as_bytes(), "renkei.example/relay", &[s.verifier()]).unwrap();
        assert_eq!(back, c);
        assert_eq!(n.verified[0].name, "renkei.example/relay");
        assert!(matches!(
            Checkpoint::open(signed.as_bytes(), "other", &[s.verifier()]),
            Err(CheckpointError::WrongOrigin { .. })
        ));
    }

    proptest! {
        #[test]
        fn roundtrips(
            origin in "[^\\x00-\\x1f]{1,40}",
            size in 1u64..,
            root: [u8; 32],
            ext in proptest::collection::vec("[^\\x00-\\x1f]{1,20}", 0..4),
        ) {
            let c = Checkpoint { origin, size, root, extensions: ext };
            let t = c.to_text().unwrap();
            prop_assert_eq!(Checkpoint::parse(t.as_bytes()).unwrap(), c);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(c) = Checkpoint::parse(&bytes) {
                prop_assert_eq!(c.to_text().unwrap().into_bytes(), bytes);
            }
        }
    }
}
