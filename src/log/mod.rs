//! The receipt transparency log, as pure formats and algorithms (no
//! network, no database, no files): see `docs/LOG.md`.
//!
//! * [`merkle`]: RFC 9162 hashing, the append state ([`merkle::CompactTree`]),
//!   roots and proofs from stored node hashes, proof verification.
//! * [`note`]: C2SP signed notes with Ed25519 and verifier keys.
//! * [`checkpoint`]: the C2SP tlog-checkpoint body.
//! * [`tiles`]: C2SP tlog-tiles paths, hash tiles and entry bundles.
//! * [`cosignature`]: C2SP tlog-cosignature (Ed25519 cosignature/v1),
//!   witness keys, quorum verification.
//! * [`witness`]: C2SP tlog-witness messages (add-checkpoint, size body).
//! * [`proof`]: C2SP tlog-proof, offline proofs of inclusion with a
//!   cosigned checkpoint.
//! * [`fuzzing`]: panic-free entry points over every parser, for fuzzers.
//!
//! The relay stores, for every append, the nodes [`merkle::CompactTree::append`]
//! returns, keyed by `(level, index)`; everything it serves (roots,
//! proofs, tiles) is read back from those nodes.

pub mod checkpoint;
pub mod cosignature;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod tiles;
pub mod witness;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use merkle::{
    leaf_hash, node_hash, verify_consistency, verify_inclusion, CompactTree, ConsistencyProof,
    Hash, HashReader, InclusionProof, MemoryTree, NodeId, ProofError, EMPTY_ROOT,
};
pub use note::{NoteError, Signer, Verifier};
pub use tiles::{TileError, TileKind, TilePath};

/// Serde helpers: hashes as standard base64 strings.
pub(crate) mod b64 {
    use base64::Engine as _;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn decode(s: &str) -> Option<super::Hash> {
        B64.decode(s).ok()?.try_into().ok()
    }

    /// `Vec<Hash>` as an array of base64 strings.
    pub mod hashes {
        use super::*;
        use serde::{de, Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &[super::super::Hash], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|h| B64.encode(h)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<super::super::Hash>, D::Error> {
            let v: Vec<String> = Vec::deserialize(d)?;
            if v.len() > crate::log::merkle::MAX_PROOF_HASHES {
                return Err(de::Error::custom("too many hashes"));
            }
            v.iter()
                .map(|s| decode(s).ok_or_else(|| de::Error::custom("not base64 of 32 bytes")))
                .collect()
        }
    }
}

/// Fuzz entry points: each parses untrusted bytes with one parser and,
/// when parsing succeeds, checks that encoding the result gives the input
/// back (every accepted form is canonical). They panic only if that
/// invariant breaks — which is the bug a fuzzer is looking for.
pub mod fuzzing {
    use super::*;

    /// A signed note ([`note::Note::parse`]), plus [`note::open`] against a
    /// fixed key (exercises the verification path).
    pub fn note(data: &[u8]) {
        if let Ok(n) = note::Note::parse(data) {
            let again = n.encode().expect("a parsed note re-encodes");
            assert_eq!(again.as_bytes(), data, "note encoding is not canonical");
        }
        let v = Verifier::ed25519("fuzz.example/log", [0x5a; 32]).expect("valid name");
        let _ = note::open(data, &[v]);
    }

    /// A verifier key string.
    pub fn verifier_key(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(v) = Verifier::parse(s) {
                assert_eq!(
                    Verifier::parse(&v.encode()).expect("re-parses"),
                    v,
                    "vkey roundtrip"
                );
            }
        }
    }

    /// A checkpoint body.
    pub fn checkpoint(data: &[u8]) {
        if let Ok(c) = Checkpoint::parse(data) {
            let again = c.to_text().expect("a parsed checkpoint re-encodes");
            assert_eq!(
                again.as_bytes(),
                data,
                "checkpoint encoding is not canonical"
            );
        }
    }

    /// A tile path.
    pub fn tile_path(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(p) = TilePath::parse(s) {
                assert_eq!(p.path(), s, "tile path is not canonical");
                let _ = p.node_range();
                let _ = p.entry_range();
                let _ = p.is_available(u64::MAX);
            }
        }
    }

    /// An entry bundle, and the same bytes as a hash tile.
    pub fn entry_bundle(data: &[u8]) {
        if let Ok(entries) = tiles::parse_entry_bundle(data) {
            let again = tiles::encode_entry_bundle(&entries).expect("re-encodes");
            assert_eq!(again, data, "bundle encoding is not canonical");
        }
        let width = (data.len() / merkle::HASH_LEN).clamp(1, 256) as u16;
        if let Ok(h) = tiles::parse_tile(data, width) {
            assert_eq!(tiles::encode_tile(&h).expect("re-encodes"), data);
        }
    }

    /// A proof: raw concatenated hashes and the two JSON forms; a parsed
    /// raw proof is also run through both verifiers with sizes taken from
    /// the input.
    pub fn proof(data: &[u8]) {
        if let Ok(p) = merkle::parse_proof(data) {
            assert_eq!(merkle::encode_proof(&p), data);
            let seed = data.first().copied().unwrap_or(0) as u64;
            let size = seed * 37 + 1;
            let leaf = p.first().copied().unwrap_or(EMPTY_ROOT);
            let _ = verify_inclusion(seed % size, size, &leaf, &p, &EMPTY_ROOT);
            let _ = verify_consistency(seed, size, &p, &leaf, &EMPTY_ROOT);
        }
        if let Ok(p) = InclusionProof::from_json(data) {
            let _ = p.verify(&EMPTY_ROOT, &EMPTY_ROOT);
        }
        if let Ok(p) = ConsistencyProof::from_json(data) {
            let _ = p.verify(&EMPTY_ROOT, &EMPTY_ROOT);
        }
    }

    /// The witness protocol: an add-checkpoint request (and the
    /// checkpoint inside it through [`cosignature::open`]), a 409 size
    /// body, a block of cosignature lines, a witness verifier key.
    pub fn witness(data: &[u8]) {
        if let Ok(r) = witness::AddCheckpoint::parse(data) {
            assert_eq!(
                r.encode().expect("re-encodes").as_bytes(),
                data,
                "add-checkpoint encoding is not canonical"
            );
            let log = Verifier::ed25519("fuzz.example/log", [0x5a; 32]).expect("valid name");
            let w = cosignature::WitnessKey::new("fuzz.example/w", [0x5b; 32]).expect("valid");
            let _ = cosignature::open(r.checkpoint.as_bytes(), "fuzz.example/log", &log, &[w], 1);
        }
        if let Ok(n) = witness::parse_size_body(data) {
            assert_eq!(witness::encode_size_body(n).as_bytes(), data);
        }
        if let Ok(lines) = cosignature::parse_signature_lines(data) {
            assert_eq!(cosignature::encode_signature_lines(&lines).as_bytes(), data);
        }
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(k) = cosignature::WitnessKey::parse(s) {
                assert_eq!(
                    cosignature::WitnessKey::parse(&k.encode()).expect("re-parses"),
                    k
                );
            }
        }
    }

    /// A tlog-proof ([`proof::TlogProof::parse`]), then its verification
    /// against a fixed log key and witness.
    pub fn tlog_proof(data: &[u8]) {
        if let Ok(p) = proof::TlogProof::parse(data) {
            assert_eq!(
                p.encode().expect("re-encodes").as_bytes(),
                data,
                "tlog-proof encoding is not canonical"
            );
            let log = Verifier::ed25519("fuzz.example/log", [0x5a; 32]).expect("valid name");
            let w = cosignature::WitnessKey::new("fuzz.example/w", [0x5b; 32]).expect("valid");
            let _ = p.verify(&EMPTY_ROOT, "fuzz.example/log", &log, &[w], 1);
        }
    }

    /// Every parser above on the same input.
    pub fn all(data: &[u8]) {
        witness(data);
        tlog_proof(data);
        note(data);
        verifier_key(data);
        checkpoint(data);
        tile_path(data);
        entry_bundle(data);
        proof(data);
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                super::all(&data);
            }
        }

        #[test]
        fn accepts_valid_inputs() {
            super::all(b"tile/0/x001/x234/067");
            super::all(b"o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
            super::all(&[0, 1, b'a']);
            super::all(&[7u8; 64]);
        }
    }
}
