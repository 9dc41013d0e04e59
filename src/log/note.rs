//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519.
//!
//! A signed note is the note text (UTF-8, ending in a newline), one empty
//! line, then one or more signature lines
//! `"— " key-name " " base64(key-ID[4] || signature) "\n"` (the em dash is
//! U+2014). The key ID of an Ed25519 key is the first four bytes of
//! `SHA-256(key-name || 0x0A || 0x01 || public-key)`, big-endian. A
//! verifier key is written `<name>+<key ID, 8 hex>+<base64(0x01 || public-key)>`.
//!
//! Parsing is strict and bounded: at most [`MAX_NOTE_BYTES`] bytes and
//! [`MAX_SIGNATURES`] signature lines, valid UTF-8, no control character
//! but `\n`, canonical base64. [`Note::parse`] checks syntax only;
//! [`open`] also verifies: every signature by a known key (name and key ID
//! both match) must verify, signatures by unknown keys are kept aside, and
//! at least one known signature is required.

use base64::Engine as _;
use ring::digest;

use crate::keys::{verify_ed25519, SigningKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Largest signed note accepted (text and signatures).
pub const MAX_NOTE_BYTES: usize = 128 * 1024;

/// Most signature lines accepted in one note (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Signature type byte of Ed25519 note signatures.
pub const SIG_TYPE_ED25519: u8 = 0x01;

/// The em dash and space that start every signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note, a signature or a verifier key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Over [`MAX_NOTE_BYTES`].
    #[error("the note is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid UTF-8.
    #[error("the note is not valid UTF-8")]
    NotUtf8,
    /// A control character other than newline at this byte offset.
    #[error("control character at byte {0}")]
    ControlCharacter(usize),
    /// No empty line before a final block of signature lines.
    #[error("no signature block (an empty line followed by signature lines ending in a newline)")]
    NoSignatures,
    /// The note text is empty or does not end in a newline.
    #[error("the note text must end with a newline")]
    TextNotTerminated,
    /// A signature line does not have the required form.
    #[error("signature line {line}: {reason}")]
    BadSignatureLine {
        /// 1-based line number within the signature block.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Over [`MAX_SIGNATURES`].
    #[error("more than {0} signatures")]
    TooManySignatures(usize),
    /// A key name is empty or holds a space or `+`.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    InvalidKeyName(String),
    /// A verifier key string is malformed.
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(&'static str),
    /// A verifier key's ID does not match its name and key.
    #[error("the verifier key's ID does not match its name and public key")]
    KeyIdMismatch,
    /// A verifier key of a signature type other than Ed25519.
    #[error("unsupported signature type 0x{0:02x} (only Ed25519, 0x01)")]
    UnsupportedType(u8),
    /// Two different configured keys share this name and key ID.
    #[error("ambiguous key {name}+{key_id:08x}: two configured keys match")]
    AmbiguousKey {
        /// The name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// A signature by a known key does not verify.
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature {
        /// The name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// No signature by a known key.
    #[error("the note has no signature by a known key")]
    NoVerifiedSignature,
}

/// Whether `name` is a valid key name: non-empty, no Unicode white space,
/// no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    // Control characters (including DEL and C1) are refused too, so that
    // what parses always re-encodes.
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    // Control characters are not white space in every case (e.g. U+0000);
    // a note may not contain them anywhere.
    if is_valid_key_name(name) && !name.chars().any(|c| c.is_control()) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName(name.to_string()))
    }
}

/// `SHA-256(name || 0x0A || sig_type || public_key)[:4]` as a big-endian
/// `u32`: the key ID recommended by the signed-note spec.
pub fn key_id(name: &str, sig_type: u8, public_key: &[u8]) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[sig_type]);
    ctx.update(public_key);
    let d = ctx.finish();
    u32::from_be_bytes(d.as_ref()[..4].try_into().expect("4 bytes"))
}

/// A trusted Ed25519 note key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Verifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl Verifier {
    /// The verifier for `public_key` under `name`.
    pub fn ed25519(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Verifier {
            name: name.to_string(),
            key_id: key_id(name, SIG_TYPE_ED25519, &public_key),
            public_key,
        })
    }

    /// Parse a verifier key `<name>+<8 hex digits>+<base64(0x01 || key)>`.
    /// The ID must match the name and key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        if vkey.len() > 1024 {
            return Err(NoteError::BadVerifierKey("too long"));
        }
        let mut parts = vkey.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(NoteError::BadVerifierKey("expected <name>+<id>+<key>")),
        };
        check_key_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::BadVerifierKey("the key ID must be 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16)
            .map_err(|_| NoteError::BadVerifierKey("the key ID must be 8 hex digits"))?;
        let key = B64
            .decode(key_b64)
            .map_err(|_| NoteError::BadVerifierKey("the key is not canonical base64"))?;
        let (&sig_type, public_key) = key
            .split_first()
            .ok_or(NoteError::BadVerifierKey("empty key"))?;
        if id != key_id(name, sig_type, public_key) {
            return Err(NoteError::KeyIdMismatch);
        }
        if sig_type != SIG_TYPE_ED25519 {
            return Err(NoteError::UnsupportedType(sig_type));
        }
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| NoteError::BadVerifierKey("an Ed25519 key is 32 bytes"))?;
        Ok(Verifier {
            name: name.to_string(),
            key_id: id,
            public_key,
        })
    }

    /// The verifier key string (lowercase hex ID).
    pub fn encode(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(SIG_TYPE_ED25519);
        key.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(key))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Whether `signature` (without the key ID) signs `text`.
    pub fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        signature.len() == 64 && verify_ed25519(&self.public_key, text, signature)
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

impl std::str::FromStr for Verifier {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, NoteError> {
        Verifier::parse(s)
    }
}

/// An Ed25519 note signer: a [`SigningKey`] under a key name.
pub struct Signer<'a> {
    name: String,
    key_id: u32,
    key: &'a SigningKey,
}

impl<'a> Signer<'a> {
    /// Sign as `name` with `key`.
    pub fn ed25519(name: &str, key: &'a SigningKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Signer {
            name: name.to_string(),
            key_id: key_id(name, SIG_TYPE_ED25519, &key.public_key()),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier (whose [`Verifier::encode`] is the string to
    /// publish).
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self.key.public_key(),
        }
    }

    /// The signature line for `text`.
    pub fn sign(&self, text: &str) -> Signature {
        Signature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_vec(),
        }
    }
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The key name.
    pub name: String,
    /// The key ID (first four bytes of the decoded signature).
    pub key_id: u32,
    /// The signature proper (the decoded bytes after the key ID).
    pub signature: Vec<u8>,
}

impl Signature {
    /// The line, with its trailing newline.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }
}

/// A parsed, not yet verified, signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The text, including its final newline.
    pub text: String,
    /// The signature lines in order.
    pub signatures: Vec<Signature>,
}

/// Check the whole-note rules: size, UTF-8, no control character but `\n`.
fn check_note_bytes(bytes: &[u8]) -> Result<&str, NoteError> {
    if bytes.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge {
            len: bytes.len(),
            max: MAX_NOTE_BYTES,
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
    check_no_controls(s)?;
    Ok(s)
}

/// No ASCII control character (below U+0020) other than newline. DEL and
/// C1 controls are allowed, as in the spec.
pub(crate) fn check_no_controls(s: &str) -> Result<(), NoteError> {
    match s.bytes().position(|b| b < 0x20 && b != b'\n') {
        Some(i) => Err(NoteError::ControlCharacter(i)),
        None => Ok(()),
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::TextNotTerminated);
    }
    check_no_controls(text)
}

impl Note {
    /// Parse untrusted bytes (syntax only; see [`open`] to verify).
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        let s = check_note_bytes(bytes)?;
        // The text ends at the last empty line.
        let split = s.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::NoSignatures);
        }
        let mut signatures = Vec::new();
        for (n, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
            let line_no = n + 1;
            let bad = |reason| NoteError::BadSignatureLine {
                line: line_no,
                reason,
            };
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures(MAX_SIGNATURES));
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("does not start with an em dash and a space"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("no space between key name and signature"))?;
            if !is_valid_key_name(name) {
                return Err(bad("invalid key name"));
            }
            let raw = B64
                .decode(b64)
                .map_err(|_| bad("signature is not canonical base64"))?;
            if raw.len() < 5 {
                return Err(bad("signature too short"));
            }
            let key_id = u32::from_be_bytes(raw[..4].try_into().expect("4 bytes"));
            signatures.push(Signature {
                name: name.to_string(),
                key_id,
                signature: raw[4..].to_vec(),
            });
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The signed note: text, empty line, signature lines.
    pub fn encode(&self) -> Result<String, NoteError> {
        check_text(&self.text)?;
        if self.signatures.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures(MAX_SIGNATURES));
        }
        let mut out = String::with_capacity(self.text.len() + 128 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            check_key_name(&s.name)?;
            if s.signature.is_empty() {
                return Err(NoteError::BadSignatureLine {
                    line: 0,
                    reason: "empty signature",
                });
            }
            out.push_str(&s.to_line());
        }
        if out.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len: out.len(),
                max: MAX_NOTE_BYTES,
            });
        }
        Ok(out)
    }
}

/// Sign `text` (which must end in a newline) with each signer, in order.
pub fn sign(text: &str, signers: &[&Signer<'_>]) -> Result<String, NoteError> {
    check_text(text)?;
    Note {
        text: text.to_string(),
        signatures: signers.iter().map(|s| s.sign(text)).collect(),
    }
    .encode()
}

/// Add signatures to an already signed note (e.g. a witness cosigning):
/// signatures by the same name and key ID as a new signer are replaced.
pub fn cosign(note: &Note, signers: &[&Signer<'_>]) -> Result<String, NoteError> {
    let mut signatures: Vec<Signature> = note
        .signatures
        .iter()
        .filter(|s| {
            !signers
                .iter()
                .any(|k| k.name() == s.name && k.key_id() == s.key_id)
        })
        .cloned()
        .collect();
    signatures.extend(signers.iter().map(|s| s.sign(&note.text)));
    Note {
        text: note.text.clone(),
        signatures,
    }
    .encode()
}

/// A note whose signatures were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The text, including its final newline.
    pub text: String,
    /// Signatures by known keys, all verified, one per key.
    pub verified: Vec<Signature>,
    /// Signatures by unknown keys (not verified), duplicates dropped.
    pub unverified: Vec<Signature>,
}

/// Parse and verify a signed note against trusted keys.
///
/// A signature whose name and key ID both match a configured key must
/// verify, or the whole note is rejected (even if another signature
/// verifies). Signatures by unknown keys are returned unverified. At least
/// one signature by a known key is required. Two *different* configured
/// keys with the same name and ID make any note they would verify
/// ambiguous (an error); the same key configured twice is harmless.
pub fn open(bytes: &[u8], verifiers: &[Verifier]) -> Result<VerifiedNote, NoteError> {
    let note = Note::parse(bytes)?;
    let mut verified: Vec<Signature> = Vec::new();
    let mut unverified: Vec<Signature> = Vec::new();
    for sig in note.signatures {
        let mut matching = verifiers
            .iter()
            .filter(|v| v.name == sig.name && v.key_id == sig.key_id);
        let Some(v) = matching.next() else {
            if !unverified.contains(&sig) {
                unverified.push(sig);
            }
            continue;
        };
        if matching.any(|other| other.public_key != v.public_key) {
            return Err(NoteError::AmbiguousKey {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        if !v.verify(note.text.as_bytes(), &sig.signature) {
            return Err(NoteError::InvalidSignature {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        if !verified
            .iter()
            .any(|s| s.name == sig.name && s.key_id == sig.key_id)
        {
            verified.push(sig);
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoVerifiedSignature);
    }
    Ok(VerifiedNote {
        text: note.text,
        verified,
        unverified,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A signing key from a raw 32-byte Ed25519 seed (test helper: the
    /// keys module only loads PKCS#8).
    pub(crate) fn key_from_seed(seed: &[u8; 32]) -> SigningKey {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        SigningKey::from_pkcs8_pem(&pem, "test seed").unwrap()
    }

    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";

    #[test]
    fn key_names() {
        assert!(is_valid_key_name("example.com/log"));
        assert!(is_valid_key_name("ré"));
        for bad in ["", "a b", "a+b", "a\tb", "a\u{00a0}b", "a\u{3000}b", "a\nb"] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
        }
        assert!(check_key_name("a\u{0}b").is_err());
    }

    #[test]
    fn sign_and_open() {
        let k = key_from_seed(&[7; 32]);
        let s = Signer::ed25519("renkei.example/relay", &k).unwrap();
        let signed = sign(TEXT, &[&s]).unwrap();
        assert!(signed.starts_with(TEXT));
        let v = s.verifier();
        let opened = open(signed.as_bytes(), std::slice::from_ref(&v)).unwrap();
        assert_eq!(opened.text, TEXT);
        assert_eq!(opened.verified.len(), 1);
        // Tampered text.
        let bad = signed.replacen("cryptography", "cryptographY", 1);
        assert!(matches!(
            open(bad.as_bytes(), std::slice::from_ref(&v)),
            Err(NoteError::InvalidSignature { .. })
        ));
        // Unknown key only.
        let other = Verifier::ed25519("someone.else", [1; 32]).unwrap();
        assert_eq!(
            open(signed.as_bytes(), &[other]),
            Err(NoteError::NoVerifiedSignature)
        );
        assert_eq!(
            Verifier::parse(&v.encode()).unwrap(),
            v,
            "vkey roundtrip {}",
            v.encode()
        );
    }

    #[test]
    fn a_bad_known_signature_rejects_even_with_a_good_one() {
        let k = key_from_seed(&[9; 32]);
        let s = Signer::ed25519("log", &k).unwrap();
        let good = s.sign(TEXT);
        let mut bad = good.clone();
        bad.signature[0] ^= 1;
        let note = Note {
            text: TEXT.into(),
            signatures: vec![good.clone(), bad],
        }
        .encode()
        .unwrap();
        assert!(matches!(
            open(note.as_bytes(), &[s.verifier()]),
            Err(NoteError::InvalidSignature { .. })
        ));
        // Exact duplicates are fine and reported once.
        let note = Note {
            text: TEXT.into(),
            signatures: vec![good.clone(), good],
        }
        .encode()
        .unwrap();
        assert_eq!(
            open(note.as_bytes(), &[s.verifier()])
                .unwrap()
                .verified
                .len(),
            1
        );
    }

    #[test]
    fn ambiguous_keys() {
        let k = key_from_seed(&[3; 32]);
        let s = Signer::ed25519("log", &k).unwrap();
        let note = sign(TEXT, &[&s]).unwrap();
        let v = s.verifier();
        // The same key twice is fine.
        open(note.as_bytes(), &[v.clone(), v.clone()]).unwrap();
        // A different key claiming the same name and ID is ambiguous.
        let mut evil = v.clone();
        evil.public_key = [4; 32];
        assert!(matches!(
            open(note.as_bytes(), &[v, evil]),
            Err(NoteError::AmbiguousKey { .. })
        ));
    }

    #[test]
    fn cosigning_replaces_own_signature() {
        let a = key_from_seed(&[1; 32]);
        let b = key_from_seed(&[2; 32]);
        let sa = Signer::ed25519("a", &a).unwrap();
        let sb = Signer::ed25519("b", &b).unwrap();
        let one = sign(TEXT, &[&sa]).unwrap();
        let two = cosign(&Note::parse(one.as_bytes()).unwrap(), &[&sb, &sa]).unwrap();
        let n = Note::parse(two.as_bytes()).unwrap();
        assert_eq!(n.signatures.len(), 2);
        let o = open(two.as_bytes(), &[sa.verifier(), sb.verifier()]).unwrap();
        assert_eq!(o.verified.len(), 2);
    }

    #[test]
    fn limits() {
        let k = key_from_seed(&[5; 32]);
        let s = Signer::ed25519("log", &k).unwrap();
        let line = s.sign(TEXT).to_line();
        let many = format!("{TEXT}\n{}", line.repeat(MAX_SIGNATURES));
        assert_eq!(
            Note::parse(many.as_bytes()).unwrap().signatures.len(),
            MAX_SIGNATURES
        );
        let too_many = format!("{TEXT}\n{}", line.repeat(MAX_SIGNATURES + 1));
        assert_eq!(
            Note::parse(too_many.as_bytes()),
            Err(NoteError::TooManySignatures(MAX_SIGNATURES))
        );
        let big = format!("{}\n\n{line}", "a".repeat(MAX_NOTE_BYTES));
        assert!(matches!(
            Note::parse(big.as_bytes()),
            Err(NoteError::TooLarge { .. })
        ));
        assert_eq!(sign("no newline", &[&s]), Err(NoteError::TextNotTerminated));
        assert_eq!(
            sign("tab\there\n", &[&s]),
            Err(NoteError::ControlCharacter(3))
        );
        assert_eq!(sign(TEXT, &[]), Err(NoteError::NoSignatures));
    }

    #[test]
    fn vkey_rejects_manglings() {
        let k = key_from_seed(&[11; 32]);
        let vkey = Signer::ed25519("example.com/log", &k)
            .unwrap()
            .verifier()
            .encode();
        Verifier::parse(&vkey).unwrap();
        let b = vkey.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i == 0 && j == b.len() {
                    continue;
                }
                if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                    assert!(Verifier::parse(s).is_err(), "accepted {s:?}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                // Upper-casing a hex digit keeps the same ID.
                if s.to_ascii_lowercase() == vkey {
                    continue;
                }
                assert!(Verifier::parse(s).is_err(), "accepted {s:?}");
            }
        }
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9./_\\-é日本]{1,40}"
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec("[^\\x00-\\x1f]{0,30}", 1..6).prop_map(|lines| {
            let mut t = lines.join("\n");
            t.push('\n');
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn vkey_roundtrips(name in name_strategy(), key: [u8; 32]) {
            let v = Verifier::ed25519(&name, key).unwrap();
            let s = v.encode();
            prop_assert_eq!(Verifier::parse(&s).unwrap(), v);
        }

        #[test]
        fn notes_roundtrip_and_verify(text in text_strategy(), name in name_strategy(), seed: [u8; 32]) {
            let k = key_from_seed(&seed);
            let s = Signer::ed25519(&name, &k).unwrap();
            let signed = sign(&text, &[&s]).unwrap();
            let parsed = Note::parse(signed.as_bytes()).unwrap();
            prop_assert_eq!(&parsed.text, &text);
            prop_assert_eq!(parsed.encode().unwrap(), signed.clone());
            let opened = open(signed.as_bytes(), &[s.verifier()]).unwrap();
            prop_assert_eq!(opened.text, text);
        }

        #[test]
        fn tampered_notes_fail(text in text_strategy(), seed: [u8; 32], pos: usize, bit in 0u8..8) {
            let k = key_from_seed(&seed);
            let s = Signer::ed25519("log", &k).unwrap();
            let signed = sign(&text, &[&s]).unwrap();
            let mut bytes = signed.into_bytes();
            let i = pos % bytes.len();
            bytes[i] ^= 1 << bit;
            // Either unparsable, or the signature no longer verifies.
            prop_assert!(open(&bytes, &[s.verifier()]).is_err());
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(n) = Note::parse(&bytes) {
                prop_assert_eq!(n.encode().unwrap().into_bytes(), bytes.clone());
            }
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = Verifier::parse(s);
            }
        }
    }
}
