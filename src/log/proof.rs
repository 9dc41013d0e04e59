//! C2SP tlog-proof (<https://c2sp.org/tlog-proof>): an offline-verifiable
//! proof that an entry is in the log, as one text:
//!
//! ```text
//! c2sp.org/tlog-proof@v1\n
//! extra <base64>\n             optional, opaque, NOT authenticated
//! index <N>\n                  decimal, no leading zero (0 is "0")
//! <base64 hash>\n ...          0 to 63 inclusion proof hashes, leaf side first
//! \n
//! <signed checkpoint>          verbatim, with its witness cosignatures
//! ```
//!
//! [`TlogProof::verify`] checks the checkpoint's log signature, the
//! witness quorum of a policy, and the entry's inclusion; nothing else is
//! needed, so a receipt bundle that carries one is evidence on its own.

use base64::Engine as _;

use super::checkpoint::Checkpoint;
use super::cosignature::{self, CosignatureError, WitnessKey};
use super::merkle::{verify_inclusion, Hash};
use super::note::{Verifier, MAX_NOTE_BYTES};
use super::witness::parse_decimal;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The first line.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Most inclusion proof hashes (a tree of 2^63 leaves needs 63).
pub const MAX_PROOF_HASHES: usize = 63;

/// Most bytes of extra data (a whole log entry fits).
pub const MAX_EXTRA_BYTES: usize = 64 * 1024;

/// Largest proof text accepted.
pub const MAX_PROOF_BYTES: usize =
    MAX_NOTE_BYTES + MAX_EXTRA_BYTES * 4 / 3 + 64 + MAX_PROOF_HASHES * 45 + 64;

/// Why a proof was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// Not a tlog-proof text.
    #[error("malformed tlog-proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint did not verify (log key, witness quorum).
    #[error("the proof's checkpoint does not verify: {0}")]
    Checkpoint(#[from] CosignatureError),
    /// The entry is not included in the checkpoint's tree.
    #[error("the entry at index {index} is not included in the checkpoint of size {size}: {why}")]
    Inclusion {
        /// Leaf index.
        index: u64,
        /// Checkpoint size.
        size: u64,
        /// Reason.
        why: String,
    },
}

/// A parsed (not yet verified) tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque extra data (unauthenticated).
    pub extra: Option<Vec<u8>>,
    /// The entry's leaf index.
    pub index: u64,
    /// Inclusion proof, leaf's sibling first (RFC 6962 §2.1.1).
    pub inclusion: Vec<Hash>,
    /// The signed checkpoint, verbatim (with cosignature lines).
    pub checkpoint: String,
}

impl TlogProof {
    /// Parse an untrusted proof text (syntax only; see [`Self::verify`]).
    /// Only the canonical encoding is accepted, so [`Self::encode`] gives
    /// the input back.
    pub fn parse(bytes: &[u8]) -> Result<TlogProof, ProofError> {
        let bad = ProofError::Malformed;
        if bytes.len() > MAX_PROOF_BYTES {
            return Err(bad("too large"));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let (head, checkpoint) = s
            .split_once("\n\n")
            .ok_or(bad("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(HEADER) {
            return Err(bad("the first line is not c2sp.org/tlog-proof@v1"));
        }
        let extra = match lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            Some(b64) => {
                let v = B64
                    .decode(b64)
                    .map_err(|_| bad("the extra data is not canonical base64"))?;
                if v.len() > MAX_EXTRA_BYTES {
                    return Err(bad("the extra data is too large"));
                }
                lines.next();
                Some(v)
            }
            None => None,
        };
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or(bad("no \"index <N>\" line"))?;
        let index = parse_decimal(index).ok_or(bad("the index is not a canonical decimal"))?;
        let mut inclusion = Vec::new();
        for l in lines {
            if inclusion.len() == MAX_PROOF_HASHES {
                return Err(bad("more than 63 inclusion proof hashes"));
            }
            let h: Hash = B64
                .decode(l)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or(bad("a proof line is not base64 of 32 bytes"))?;
            inclusion.push(h);
        }
        // One empty line only: a second one would start the checkpoint
        // (and could not be encoded back).
        if checkpoint.is_empty() || checkpoint.starts_with('\n') {
            return Err(bad("no checkpoint"));
        }
        Ok(TlogProof {
            extra,
            index,
            inclusion,
            checkpoint: checkpoint.to_string(),
        })
    }

    /// The proof text.
    pub fn encode(&self) -> Result<String, ProofError> {
        let bad = ProofError::Malformed;
        if self.inclusion.len() > MAX_PROOF_HASHES {
            return Err(bad("more than 63 inclusion proof hashes"));
        }
        if self
            .extra
            .as_ref()
            .is_some_and(|e| e.len() > MAX_EXTRA_BYTES)
        {
            return Err(bad("the extra data is too large"));
        }
        if self.checkpoint.is_empty() || self.checkpoint.starts_with('\n') {
            return Err(bad("no checkpoint"));
        }
        let mut s = format!("{HEADER}\n");
        if let Some(e) = &self.extra {
            s.push_str("extra ");
            s.push_str(&B64.encode(e));
            s.push('\n');
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.inclusion {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        Ok(s)
    }

    /// Verify that the entry whose leaf hash is `leaf` is in the log
    /// `origin`: the checkpoint is signed by `log` and cosigned by at least
    /// `quorum` of `witnesses` (others' signatures are ignored), and the
    /// inclusion proof leads from `leaf` at [`Self::index`] to its root.
    /// Returns the verified checkpoint and the witnesses that cosigned it.
    pub fn verify(
        &self,
        leaf: &Hash,
        origin: &str,
        log: &Verifier,
        witnesses: &[WitnessKey],
        quorum: usize,
    ) -> Result<cosignature::Cosigned, ProofError> {
        let cosigned =
            cosignature::open(self.checkpoint.as_bytes(), origin, log, witnesses, quorum)?;
        let cp: &Checkpoint = &cosigned.checkpoint;
        verify_inclusion(self.index, cp.size, leaf, &self.inclusion, &cp.root).map_err(|e| {
            ProofError::Inclusion {
                index: self.index,
                size: cp.size,
                why: e.to_string(),
            }
        })?;
        Ok(cosigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::cosignature::WitnessSigner;
    use crate::log::merkle::{leaf_hash, MemoryTree};
    use crate::log::note::tests::key_from_seed;
    use crate::log::note::Signer;
    use proptest::prelude::*;

    const ORIGIN: &str = "relay.example/renkei/relay-01";

    /// A log of `n` entries, a proof for entry `index` at size `n`,
    /// signed by the log and cosigned by the witnesses of seeds `wit`.
    fn proof_for(n: u64, index: u64, wit: &[u8]) -> (TlogProof, Verifier, Vec<WitnessKey>) {
        let tree = MemoryTree::from_entries((0..n).map(|i| format!("entry {i}")));
        let root = tree.root();
        let key = key_from_seed(&[1; 32]);
        let signer = Signer::ed25519(ORIGIN, &key).unwrap();
        let mut note = Checkpoint::new(ORIGIN, n, root)
            .unwrap()
            .sign(&[&signer])
            .unwrap();
        let mut keys = Vec::new();
        for (i, seed) in wit.iter().enumerate() {
            let k = key_from_seed(&[*seed; 32]);
            let w = WitnessSigner::new(&format!("witness{i}.example"), &k).unwrap();
            let text = note.split_once("\n\n").unwrap().0.to_string() + "\n";
            let line = w.cosign(&text, 1_760_000_000 + i as u64);
            note = cosignature::add_signatures(&note, &[line]).unwrap();
            keys.push(w.key().clone());
        }
        let proof = TlogProof {
            extra: None,
            index,
            inclusion: tree.inclusion_proof(index, n).unwrap(),
            checkpoint: note,
        };
        (proof, signer.verifier(), keys)
    }

    #[test]
    fn a_proof_verifies_with_the_quorum_and_not_without() {
        let (p, log, wit) = proof_for(13, 6, &[7, 8, 9]);
        let text = p.encode().unwrap();
        let back = TlogProof::parse(text.as_bytes()).unwrap();
        assert_eq!(back, p);
        let leaf = leaf_hash(b"entry 6");
        let ok = back.verify(&leaf, ORIGIN, &log, &wit, 3).unwrap();
        assert_eq!(ok.checkpoint.size, 13);
        assert_eq!(ok.witnesses.len(), 3);
        // Unknown witnesses do not count.
        let e = back.verify(&leaf, ORIGIN, &log, &wit[..1], 2).unwrap_err();
        assert!(
            matches!(
                e,
                ProofError::Checkpoint(CosignatureError::NoQuorum { have: 1, need: 2 })
            ),
            "{e}"
        );
        // Another entry, another index, another origin, another log key.
        assert!(matches!(
            back.verify(&leaf_hash(b"entry 5"), ORIGIN, &log, &wit, 0),
            Err(ProofError::Inclusion {
                index: 6,
                size: 13,
                ..
            })
        ));
        let mut moved = back.clone();
        moved.index = 5;
        assert!(moved.verify(&leaf, ORIGIN, &log, &wit, 0).is_err());
        assert!(back
            .verify(&leaf, "other.example/log", &log, &wit, 0)
            .is_err());
        let other = Signer::ed25519(ORIGIN, &key_from_seed(&[2; 32]))
            .unwrap()
            .verifier();
        assert!(back.verify(&leaf, ORIGIN, &other, &wit, 0).is_err());
    }

    #[test]
    fn extra_data_round_trips_and_is_not_needed_to_verify() {
        let (mut p, log, wit) = proof_for(1, 0, &[]);
        assert!(p.inclusion.is_empty());
        p.extra = Some(b"envelope 0123".to_vec());
        let text = p.encode().unwrap();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra ZW52ZWxvcGUgMDEyMw==\nindex 0\n\n"));
        let back = TlogProof::parse(text.as_bytes()).unwrap();
        assert_eq!(back, p);
        back.verify(&leaf_hash(b"entry 0"), ORIGIN, &log, &wit, 0)
            .unwrap();
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let (p, ..) = proof_for(5, 2, &[]);
        let good = p.encode().unwrap();
        let cases: Vec<(String, &str)> = vec![
            (good.replace(HEADER, "c2sp.org/tlog-proof@v2"), "first line"),
            (good.replacen("index 2", "index 02", 1), "canonical decimal"),
            (good.replacen("index 2", "index -2", 1), "canonical decimal"),
            (
                good.replacen("index 2", "index 18446744073709551616", 1),
                "canonical decimal",
            ),
            (good.replacen("index 2\n", "", 1), "index"),
            (
                good.replacen("index 2\n", "index 2\nextra AA==\n", 1),
                "not base64",
            ),
            (good.replacen("\n\n", "\n", 1), "base64 of 32 bytes"),
            ("c2sp.org/tlog-proof@v1\nindex 0\n".into(), "empty line"),
            (
                good.split_once("\n\n").unwrap().0.to_string() + "\n\n",
                "no checkpoint",
            ),
            (good.replacen("\n\n", "\n\n\n", 1), "no checkpoint"),
            (good.replacen("index 2\n", "index 2\nAAAA\n", 1), "32 bytes"),
            (
                good.replacen(HEADER, &format!("{HEADER}\nextra ZZ=="), 1),
                "canonical base64",
            ),
        ];
        for (text, why) in cases {
            let e = TlogProof::parse(text.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(why), "{text:?}: {e}");
        }
        let many = format!(
            "{HEADER}\nindex 0\n{}\n{}",
            format!("{}\n", B64.encode([0u8; 32])).repeat(64),
            p.checkpoint
        );
        assert!(TlogProof::parse(many.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("more than 63"));
        assert!(TlogProof::parse(&vec![b'a'; MAX_PROOF_BYTES + 1]).is_err());
        assert!(TlogProof::parse(b"\xff\n\n").is_err());
    }

    proptest! {
        #[test]
        fn every_accepted_text_re_encodes_to_itself(s in "(c2sp.org/tlog-proof@v1\n)?(extra [A-Za-z0-9+/=]{0,8}\n)?(index [0-9]{1,3}\n)?([A-Za-z0-9+/=]{44}\n){0,2}\n?[a-z.\n]{0,12}") {
            if let Ok(p) = TlogProof::parse(s.as_bytes()) {
                prop_assert_eq!(p.encode().unwrap(), s);
            }
        }
    }
}
