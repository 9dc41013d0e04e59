//! C2SP tlog-cosignature (<https://c2sp.org/tlog-cosignature>), Ed25519
//! `cosignature/v1`: a witness's timestamped statement that a checkpoint is
//! the largest consistent tree it has seen of that log.
//!
//! A cosignature is a signed-note signature line on the checkpoint:
//!
//! ```text
//! — <witness name> base64(key ID[4] || timestamp[8, big-endian] || Ed25519 signature[64])
//! ```
//!
//! - key ID: `SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]`;
//! - signed message: `"cosignature/v1\n" "time " <timestamp, decimal> "\n"`
//!   then the checkpoint's note text (final newline included, signature
//!   lines excluded);
//! - the timestamp is POSIX seconds, at most `2^63 - 1`.
//!
//! A witness's verifier key is `<name>+<key ID, 8 hex>+base64(0x04 || key)`.
//! [`open`] verifies a checkpoint signed by its log and counts the valid
//! cosignatures of known witnesses against a quorum; everything is pure.

use base64::Engine as _;

use super::checkpoint::{Checkpoint, CheckpointError};
use super::note::{self, key_id, Note, NoteError, Signature, Verifier};
use crate::keys::{verify_ed25519, SigningKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Signature type byte of Ed25519 checkpoint cosignatures (cosignature/v1).
pub const SIG_TYPE_COSIGNATURE_V1: u8 = 0x04;

/// Length of a decoded cosignature after the key ID: timestamp and signature.
pub const COSIGNATURE_LEN: usize = 8 + 64;

/// Largest timestamp allowed (`2^63 - 1`).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Why a cosigned checkpoint, a cosignature or a witness key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The checkpoint itself (its log signature, its body) was refused.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A witness verifier key is malformed.
    #[error("malformed witness key: {0}")]
    BadKey(&'static str),
    /// A signature line by a known witness does not verify (the note is
    /// then malformed, as signed-note says).
    #[error("the cosignature of witness {name}+{key_id:08x} does not verify")]
    InvalidCosignature {
        /// Witness name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// Fewer valid cosignatures of known witnesses than the quorum.
    #[error("the checkpoint has {have} valid witness cosignature(s), {need} required")]
    NoQuorum {
        /// Valid cosignatures by distinct known witnesses.
        have: usize,
        /// The quorum.
        need: usize,
    },
}

impl From<NoteError> for CosignatureError {
    fn from(e: NoteError) -> Self {
        CosignatureError::Checkpoint(CheckpointError::Note(e))
    }
}

/// The message an Ed25519 cosignature/v1 signs: header line, time line,
/// then the checkpoint text.
pub fn message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}")
}

/// A witness's public key (Ed25519, cosignature/v1) under its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WitnessKey {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl WitnessKey {
    /// The key of witness `name`.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, CosignatureError> {
        if !note::is_valid_key_name(name) {
            return Err(CosignatureError::BadKey("invalid witness name"));
        }
        Ok(WitnessKey {
            name: name.to_string(),
            key_id: key_id(name, SIG_TYPE_COSIGNATURE_V1, &public_key),
            public_key,
        })
    }

    /// Parse `<name>+<8 hex>+<base64(0x04 || 32-byte key)>`; the ID must
    /// match the name and key.
    pub fn parse(vkey: &str) -> Result<Self, CosignatureError> {
        if vkey.len() > 1024 {
            return Err(CosignatureError::BadKey("too long"));
        }
        let mut parts = vkey.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(CosignatureError::BadKey("expected <name>+<id>+<key>")),
        };
        if !note::is_valid_key_name(name) {
            return Err(CosignatureError::BadKey("invalid witness name"));
        }
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CosignatureError::BadKey("the key ID must be 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16)
            .map_err(|_| CosignatureError::BadKey("the key ID must be 8 hex digits"))?;
        let key = B64
            .decode(key_b64)
            .map_err(|_| CosignatureError::BadKey("the key is not canonical base64"))?;
        let (&sig_type, public_key) = key
            .split_first()
            .ok_or(CosignatureError::BadKey("empty key"))?;
        if sig_type != SIG_TYPE_COSIGNATURE_V1 {
            return Err(CosignatureError::BadKey(
                "not a cosignature/v1 key (type 0x04)",
            ));
        }
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| CosignatureError::BadKey("an Ed25519 key is 32 bytes"))?;
        if id != key_id(name, sig_type, &public_key) {
            return Err(CosignatureError::BadKey(
                "the key ID does not match the name and key",
            ));
        }
        Ok(WitnessKey {
            name: name.to_string(),
            key_id: id,
            public_key,
        })
    }

    /// The verifier key string (lowercase hex ID).
    pub fn encode(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(SIG_TYPE_COSIGNATURE_V1);
        key.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(key))
    }

    /// The witness name.
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

    /// Whether `sig` is a line of this witness (name and key ID match).
    pub fn matches(&self, sig: &Signature) -> bool {
        sig.name == self.name && sig.key_id == self.key_id
    }

    /// The timestamp of `sig` if it is a valid cosignature of this witness
    /// on `checkpoint_text`.
    pub fn verify(&self, checkpoint_text: &str, sig: &Signature) -> Option<u64> {
        if !self.matches(sig) || sig.signature.len() != COSIGNATURE_LEN {
            return None;
        }
        let ts = u64::from_be_bytes(sig.signature[..8].try_into().expect("8 bytes"));
        if ts > MAX_TIMESTAMP {
            return None;
        }
        let msg = message(checkpoint_text, ts);
        verify_ed25519(&self.public_key, msg.as_bytes(), &sig.signature[8..]).then_some(ts)
    }
}

impl std::fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

impl std::str::FromStr for WitnessKey {
    type Err = CosignatureError;
    fn from_str(s: &str) -> Result<Self, CosignatureError> {
        WitnessKey::parse(s)
    }
}

/// A witness's signing side: its [`SigningKey`] under its name.
pub struct WitnessSigner<'a> {
    key: WitnessKey,
    signing: &'a SigningKey,
}

impl<'a> WitnessSigner<'a> {
    /// The signer of witness `name`.
    pub fn new(name: &str, signing: &'a SigningKey) -> Result<Self, CosignatureError> {
        Ok(WitnessSigner {
            key: WitnessKey::new(name, signing.public_key())?,
            signing,
        })
    }

    /// The matching verifier key.
    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// The cosignature line on `checkpoint_text` at `timestamp`.
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> Signature {
        let sig = self
            .signing
            .sign(message(checkpoint_text, timestamp).as_bytes());
        let mut raw = Vec::with_capacity(COSIGNATURE_LEN);
        raw.extend_from_slice(&timestamp.to_be_bytes());
        raw.extend_from_slice(&sig);
        Signature {
            name: self.key.name.clone(),
            key_id: self.key.key_id,
            signature: raw,
        }
    }
}

/// A checkpoint that verified under its log's key, with the valid
/// cosignatures of known witnesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The checkpoint body.
    pub checkpoint: Checkpoint,
    /// Witnesses whose cosignature verified, with its timestamp (one
    /// entry per witness).
    pub witnesses: Vec<(String, u64)>,
}

/// The valid cosignatures in a parsed note by the given witnesses, one per
/// witness. A line that names a known witness but does not verify is an
/// error (signed-note: such a note is malformed).
pub fn verified_cosignatures(
    note: &Note,
    witnesses: &[WitnessKey],
) -> Result<Vec<(String, u64)>, CosignatureError> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for sig in &note.signatures {
        let Some(w) = witnesses.iter().find(|w| w.matches(sig)) else {
            continue;
        };
        let ts = w
            .verify(&note.text, sig)
            .ok_or_else(|| CosignatureError::InvalidCosignature {
                name: sig.name.clone(),
                key_id: sig.key_id,
            })?;
        if !out.iter().any(|(n, _)| n == &w.name) {
            out.push((w.name.clone(), ts));
        }
    }
    Ok(out)
}

/// Verify a checkpoint of log `origin`: signed by `log` (its own key),
/// and cosigned by at least `quorum` of `witnesses`. Signatures by unknown
/// keys are ignored.
pub fn open(
    signed: &[u8],
    origin: &str,
    log: &Verifier,
    witnesses: &[WitnessKey],
    quorum: usize,
) -> Result<Cosigned, CosignatureError> {
    let (checkpoint, _) = Checkpoint::open(signed, origin, std::slice::from_ref(log))?;
    let note = Note::parse(signed)?;
    let found = verified_cosignatures(&note, witnesses)?;
    if found.len() < quorum {
        return Err(CosignatureError::NoQuorum {
            have: found.len(),
            need: quorum,
        });
    }
    Ok(Cosigned {
        checkpoint,
        witnesses: found,
    })
}

/// Add `lines` (signature lines, e.g. a witness's add-checkpoint answer)
/// to the signed note `signed`: lines already present are not repeated,
/// a line by the same name and key ID as an existing one replaces it.
pub fn add_signatures(signed: &str, lines: &[Signature]) -> Result<String, NoteError> {
    let mut n = Note::parse(signed.as_bytes())?;
    for l in lines {
        n.signatures
            .retain(|s| !(s.name == l.name && s.key_id == l.key_id));
        n.signatures.push(l.clone());
    }
    n.encode()
}

/// Parse a block of signature lines (each `— name base64\n`), such as the
/// body of a witness's 200 answer.
pub fn parse_signature_lines(body: &[u8]) -> Result<Vec<Signature>, NoteError> {
    if body.len() > 16 * 1024 {
        return Err(NoteError::TooLarge {
            len: body.len(),
            max: 16 * 1024,
        });
    }
    // A signature block parses as the signatures of a one-line note.
    let mut note = b"x\n\n".to_vec();
    note.extend_from_slice(body);
    let n = Note::parse(&note)?;
    if n.text != "x\n" {
        return Err(NoteError::NoSignatures);
    }
    Ok(n.signatures)
}

/// The signature lines, encoded (each with its newline).
pub fn encode_signature_lines(lines: &[Signature]) -> String {
    lines.iter().map(Signature::to_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::leaf_hash;
    use crate::log::note::tests::key_from_seed;
    use crate::log::Signer;
    use proptest::prelude::*;

    const ORIGIN: &str = "renkei.example/relay";

    fn signed_checkpoint(size: u64) -> (String, Verifier) {
        let k = key_from_seed(&[1; 32]);
        let s = Signer::ed25519(ORIGIN, &k).unwrap();
        let c = Checkpoint::new(ORIGIN, size, leaf_hash(b"r")).unwrap();
        (c.sign(&[&s]).unwrap(), s.verifier())
    }

    #[test]
    fn key_roundtrip_and_id() {
        let k = key_from_seed(&[9; 32]);
        let w = WitnessSigner::new("witness.example/w1", &k).unwrap();
        let s = w.key().encode();
        assert_eq!(WitnessKey::parse(&s).unwrap(), *w.key());
        // The type byte enters the key ID: a note (0x01) key of the same
        // name and key has another ID.
        let note_v = Verifier::ed25519("witness.example/w1", k.public_key()).unwrap();
        assert_ne!(note_v.key_id(), w.key().key_id());
        // A note key is not a witness key and vice versa.
        assert!(WitnessKey::parse(&note_v.encode()).is_err());
        assert!(Verifier::parse(&s).is_err());
    }

    #[test]
    fn cosign_open_quorum() {
        let (signed, log) = signed_checkpoint(7);
        let keys: Vec<SigningKey> = (0..3).map(|i| key_from_seed(&[20 + i; 32])).collect();
        let signers: Vec<WitnessSigner> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| WitnessSigner::new(&format!("w{i}"), k).unwrap())
            .collect();
        let wkeys: Vec<WitnessKey> = signers.iter().map(|s| s.key().clone()).collect();
        let text = Note::parse(signed.as_bytes()).unwrap().text;
        let lines: Vec<Signature> = signers[..2]
            .iter()
            .map(|s| s.cosign(&text, 1_700_000_000))
            .collect();
        let cosigned = add_signatures(&signed, &lines).unwrap();
        let ok = open(cosigned.as_bytes(), ORIGIN, &log, &wkeys, 2).unwrap();
        assert_eq!(ok.checkpoint.size, 7);
        assert_eq!(ok.witnesses.len(), 2);
        assert_eq!(ok.witnesses[0], ("w0".to_string(), 1_700_000_000));
        assert_eq!(
            open(cosigned.as_bytes(), ORIGIN, &log, &wkeys, 3),
            Err(CosignatureError::NoQuorum { have: 2, need: 3 })
        );
        // Unknown witnesses are ignored, not counted.
        assert_eq!(
            open(cosigned.as_bytes(), ORIGIN, &log, &wkeys[2..], 1),
            Err(CosignatureError::NoQuorum { have: 0, need: 1 })
        );
        // Without the log's signature nothing counts.
        let other = Verifier::ed25519(ORIGIN, [3; 32]).unwrap();
        assert!(matches!(
            open(cosigned.as_bytes(), ORIGIN, &other, &wkeys, 0),
            Err(CosignatureError::Checkpoint(_))
        ));
        // A duplicate line of one witness counts once.
        let twice = format!("{cosigned}{}", lines[0].to_line());
        assert_eq!(
            open(twice.as_bytes(), ORIGIN, &log, &wkeys, 2)
                .unwrap()
                .witnesses
                .len(),
            2
        );
    }

    #[test]
    fn bad_cosignatures_refuse_the_note() {
        let (signed, log) = signed_checkpoint(7);
        let k = key_from_seed(&[30; 32]);
        let w = WitnessSigner::new("w", &k).unwrap();
        let text = Note::parse(signed.as_bytes()).unwrap().text;
        let good = w.cosign(&text, 5);
        // Another timestamp than signed; another text; a truncated one; a
        // timestamp over 2^63-1.
        let mut wrong_ts = good.clone();
        wrong_ts.signature[7] ^= 1;
        let other_text = w.cosign("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 5);
        let mut short = good.clone();
        short.signature.pop();
        let big = w.cosign(&text, MAX_TIMESTAMP + 1);
        for bad in [wrong_ts, other_text, short, big] {
            let note = add_signatures(&signed, &[bad]).unwrap();
            assert!(
                matches!(
                    open(
                        note.as_bytes(),
                        ORIGIN,
                        &log,
                        std::slice::from_ref(w.key()),
                        0
                    ),
                    Err(CosignatureError::InvalidCosignature { .. })
                ),
                "{note}"
            );
        }
        let max = w.cosign(&text, MAX_TIMESTAMP);
        let note = add_signatures(&signed, &[max]).unwrap();
        open(
            note.as_bytes(),
            ORIGIN,
            &log,
            std::slice::from_ref(w.key()),
            1,
        )
        .unwrap();
    }

    #[test]
    fn signature_lines() {
        let k = key_from_seed(&[31; 32]);
        let w = WitnessSigner::new("w", &k).unwrap();
        let l = w.cosign("o\n", 1);
        let body = encode_signature_lines(&[l.clone(), l.clone()]);
        assert_eq!(
            parse_signature_lines(body.as_bytes()).unwrap(),
            vec![l.clone(), l.clone()]
        );
        for bad in [
            String::new(),
            "\n".to_string(),
            body.trim_end().to_string(),
            format!("x\n{body}"),
            format!("{body}\n"),
            format!("\n{body}"),
            body.replace('\u{2014}', "-"),
            format!("{body}\n\n{body}"),
        ] {
            assert!(parse_signature_lines(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vkey_manglings() {
        let k = key_from_seed(&[32; 32]);
        let vkey = WitnessSigner::new("witness.example/w", &k)
            .unwrap()
            .key()
            .encode();
        let b = vkey.as_bytes();
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                if s.to_ascii_lowercase() == vkey {
                    continue;
                }
                assert!(WitnessKey::parse(s).is_err(), "accepted {s:?}");
            }
            if let Ok(s) = std::str::from_utf8(&b[..i]) {
                assert!(WitnessKey::parse(s).is_err(), "accepted {s:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(l) = parse_signature_lines(&bytes) {
                prop_assert_eq!(encode_signature_lines(&l).into_bytes(), bytes.clone());
            }
            if let Ok(s) = std::str::from_utf8(&bytes) {
                if let Ok(k) = WitnessKey::parse(s) {
                    prop_assert_eq!(WitnessKey::parse(&k.encode()).unwrap(), k);
                }
            }
        }
    }
}
