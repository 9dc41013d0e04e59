//! Published vectors for the transparency log formats, kept as data files
//! under `tests/data/`: transparency-dev/merkle (RFC 6962/9162 hashing,
//! inclusion and consistency proofs), golang.org/x/mod/sumdb/note and
//! C2SP signed-note examples, C2SP tlog-checkpoint, tlog-tiles,
//! tlog-witness and tlog-cosignature examples.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use renkei::keys::SigningKey;
use renkei::log::merkle::{
    self, leaf_hash, node_hash_bytes, verify_consistency, verify_inclusion, Hash, HashReader,
    MemoryTree, ProofError, EMPTY_ROOT,
};
use renkei::log::note::{self, Note, NoteError, Signer, Verifier};
use renkei::log::tiles::{self, TileKind, TilePath};
use renkei::log::Checkpoint;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn read_str(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap()
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).unwrap()
}

fn hex32(v: &Value) -> Hash {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hex_list(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hex32).collect()
}

fn sha256(b: &[u8]) -> Hash {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .try_into()
        .unwrap()
}

// ---------------------------------------------------------------------
// Merkle hashing and proofs (transparency-dev/merkle)
// ---------------------------------------------------------------------

#[test]
fn rfc6962_hasher_vectors() {
    let v = json("merkle/hashes.json");
    assert_eq!(EMPTY_ROOT, hex32(&v["empty_root"]["hex"]));
    assert_eq!(leaf_hash(b""), hex32(&v["empty_leaf"]["hex"]));
    let entry = v["leaf"]["entry_ascii"].as_str().unwrap();
    assert_eq!(leaf_hash(entry.as_bytes()), hex32(&v["leaf"]["hex"]));
    let (l, r) = (
        v["node"]["left_ascii"].as_str().unwrap(),
        v["node"]["right_ascii"].as_str().unwrap(),
    );
    assert_eq!(
        node_hash_bytes(l.as_bytes(), r.as_bytes()),
        hex32(&v["node"]["hex"])
    );
    // Second-preimage separation: a node is not the leaf of its children.
    let (h1, h2) = (leaf_hash(b"Hello"), leaf_hash(b"World"));
    assert_ne!(merkle::node_hash(&h1, &h2), leaf_hash(&[h1, h2].concat()));
    assert_ne!(merkle::node_hash(&h1, &h2), merkle::node_hash(&h2, &h1));
}

struct Vectors {
    tree: MemoryTree,
    leaves: Vec<Hash>,
    roots: Vec<Hash>,
    some_hash: Hash,
}

fn vectors() -> (Value, Vectors) {
    let v = json("merkle/tree.json");
    let entries: Vec<Vec<u8>> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect();
    let tree = MemoryTree::from_entries(&entries);
    let leaves = entries.iter().map(|e| leaf_hash(e)).collect();
    let roots = hex_list(&v["roots_hex"]);
    let some_hash = hex32(&v["some_hash_hex"]);
    (
        v,
        Vectors {
            tree,
            leaves,
            roots,
            some_hash,
        },
    )
}

#[test]
fn roots_of_every_prefix() {
    let (_, x) = vectors();
    for (i, root) in x.roots.iter().enumerate() {
        assert_eq!(
            &x.tree.root_at(i as u64 + 1).unwrap(),
            root,
            "size {}",
            i + 1
        );
    }
}

/// The corruptions of transparency-dev's `corruptInclusionProof`; each must
/// be refused. Non-32-byte values ("WrongLeaf", empty garbage) cannot even
/// be expressed with typed hashes, which is itself a refusal; they are
/// replaced by 32-byte values that keep the intent.
fn inclusion_probes(
    index: u64,
    size: u64,
    proof: &[Hash],
    root: Hash,
    leaf: Hash,
    some: Hash,
) -> Vec<(String, u64, u64, Vec<Hash>, Hash, Hash)> {
    let mut p = vec![
        (
            "leafIndex - 1".into(),
            index.wrapping_sub(1),
            size,
            proof.to_vec(),
            root,
            leaf,
        ),
        (
            "leafIndex + 1".into(),
            index + 1,
            size,
            proof.to_vec(),
            root,
            leaf,
        ),
        (
            "leafIndex ^ 2".into(),
            index ^ 2,
            size,
            proof.to_vec(),
            root,
            leaf,
        ),
        (
            "treeSize * 2".into(),
            index,
            size * 2,
            proof.to_vec(),
            root,
            leaf,
        ),
        (
            "treeSize / 2".into(),
            index,
            size / 2,
            proof.to_vec(),
            root,
            leaf,
        ),
        (
            "wrong leaf".into(),
            index,
            size,
            proof.to_vec(),
            root,
            sha256(b"WrongLeaf"),
        ),
        (
            "empty root".into(),
            index,
            size,
            proof.to_vec(),
            EMPTY_ROOT,
            leaf,
        ),
        (
            "random root".into(),
            index,
            size,
            proof.to_vec(),
            some,
            leaf,
        ),
        (
            "trailing garbage".into(),
            index,
            size,
            [proof, &[[0u8; 32]]].concat(),
            root,
            leaf,
        ),
        (
            "trailing root".into(),
            index,
            size,
            [proof, &[root]].concat(),
            root,
            leaf,
        ),
        (
            "preceding garbage".into(),
            index,
            size,
            [&[[0u8; 32]], proof].concat(),
            root,
            leaf,
        ),
        (
            "preceding root".into(),
            index,
            size,
            [&[root], proof].concat(),
            root,
            leaf,
        ),
    ];
    for i in 0..proof.len() {
        let mut w = proof.to_vec();
        w[i][0] ^= 8;
        p.push((
            format!("modified proof[{i}] bit 3"),
            index,
            size,
            w,
            root,
            leaf,
        ));
    }
    if !proof.is_empty() {
        p.push((
            "removed component".into(),
            index,
            size,
            proof[..proof.len() - 1].to_vec(),
            root,
            leaf,
        ));
    }
    if proof.len() > 1 {
        let mut w = vec![proof[0], some];
        w.extend_from_slice(&proof[1..]);
        p.push(("inserted component".into(), index, size, w, root, leaf));
    }
    p
}

#[test]
fn transparency_dev_inclusion_table() {
    let (v, x) = vectors();
    let mut checked = 0;
    for vec in v["inclusion_proofs"]["vectors"].as_array().unwrap() {
        let leaf1 = vec["leaf"].as_u64().unwrap();
        let size = vec["size"].as_u64().unwrap();
        if leaf1 == 0 {
            continue; // {0, 0}: an invalid path, skipped upstream too.
        }
        let index = leaf1 - 1;
        let proof = hex_list(&vec["proof_hex"]);
        let root = x.roots[size as usize - 1];
        let leaf = x.leaves[index as usize];
        // Our prover produces exactly the published proof...
        assert_eq!(x.tree.inclusion_proof(index, size).unwrap(), proof);
        // ... which verifies ...
        assert_eq!(
            merkle::root_from_inclusion_proof(index, size, &leaf, &proof).unwrap(),
            root
        );
        verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
        // ... and no corruption of it does.
        for (desc, i, s, p, r, l) in inclusion_probes(index, size, &proof, root, leaf, x.some_hash)
        {
            assert!(
                verify_inclusion(i, s, &l, &p, &r).is_err(),
                "{index}/{size}: accepted {desc}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 5);

    // TestVerifyInclusion: out-of-range indexes with empty proofs.
    for (index, size) in [(0u64, 0u64), (0, 1), (1, 0), (2, 1)] {
        assert!(verify_inclusion(index, size, &x.some_hash, &[], &EMPTY_ROOT).is_err());
    }
    // TestVerifyInclusionSingleEntry.
    let h = leaf_hash(b"data");
    verify_inclusion(0, 1, &h, &[], &h).unwrap();
    assert!(verify_inclusion(0, 1, &h, &[], &EMPTY_ROOT).is_err());
}

#[allow(clippy::type_complexity)]
fn consistency_probes(
    size1: u64,
    size2: u64,
    root1: Hash,
    root2: Hash,
    proof: &[Hash],
) -> Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> {
    let wrong = sha256(b"WrongRoot");
    let mut p = vec![
        (
            "size1 - 1".into(),
            size1.wrapping_sub(1),
            size2,
            root1,
            root2,
            proof.to_vec(),
        ),
        (
            "size1 + 1".into(),
            size1 + 1,
            size2,
            root1,
            root2,
            proof.to_vec(),
        ),
        (
            "size1 ^ 2".into(),
            size1 ^ 2,
            size2,
            root1,
            root2,
            proof.to_vec(),
        ),
        (
            "size2 * 2".into(),
            size1,
            size2 * 2,
            root1,
            root2,
            proof.to_vec(),
        ),
        (
            "size2 / 2".into(),
            size1,
            size2 / 2,
            root1,
            root2,
            proof.to_vec(),
        ),
        (
            "wrong root1".into(),
            size1,
            size2,
            wrong,
            root2,
            proof.to_vec(),
        ),
        (
            "wrong root2".into(),
            size1,
            size2,
            root1,
            wrong,
            proof.to_vec(),
        ),
        (
            "swapped roots".into(),
            size1,
            size2,
            root2,
            root1,
            proof.to_vec(),
        ),
        ("empty proof".into(), size1, size2, root1, root2, vec![]),
        (
            "trailing garbage".into(),
            size1,
            size2,
            root1,
            root2,
            [proof, &[[0u8; 32]]].concat(),
        ),
        (
            "trailing root1".into(),
            size1,
            size2,
            root1,
            root2,
            [proof, &[root1]].concat(),
        ),
        (
            "trailing root2".into(),
            size1,
            size2,
            root1,
            root2,
            [proof, &[root2]].concat(),
        ),
        (
            "preceding garbage".into(),
            size1,
            size2,
            root1,
            root2,
            [&[[0u8; 32]], proof].concat(),
        ),
        (
            "preceding root1".into(),
            size1,
            size2,
            root1,
            root2,
            [&[root1], proof].concat(),
        ),
        (
            "preceding root2".into(),
            size1,
            size2,
            root1,
            root2,
            [&[root2], proof].concat(),
        ),
        (
            "preceding proof[0]".into(),
            size1,
            size2,
            root1,
            root2,
            [&[proof[0]], proof].concat(),
        ),
        (
            "truncated proof".into(),
            size1,
            size2,
            root1,
            root2,
            proof[..proof.len() - 1].to_vec(),
        ),
    ];
    for i in 0..proof.len() {
        let mut w = proof.to_vec();
        w[i][0] ^= 16;
        p.push((
            format!("modified proof[{i}] bit 4"),
            size1,
            size2,
            root1,
            root2,
            w,
        ));
    }
    p
}

#[test]
fn transparency_dev_consistency_table() {
    let (v, x) = vectors();
    for vec in v["consistency_proofs"].as_array().unwrap() {
        let size1 = vec["size1"].as_u64().unwrap();
        let size2 = vec["size2"].as_u64().unwrap();
        let proof = hex_list(&vec["proof_hex"]);
        let (root1, root2) = (x.roots[size1 as usize - 1], x.roots[size2 as usize - 1]);
        assert_eq!(x.tree.consistency_proof(size1, size2).unwrap(), proof);
        verify_consistency(size1, size2, &proof, &root1, &root2).unwrap();
        if proof.is_empty() {
            continue; // Upstream only corrupts non-trivial proofs.
        }
        for (desc, s1, s2, r1, r2, p) in consistency_probes(size1, size2, root1, root2, &proof) {
            assert!(
                verify_consistency(s1, s2, &p, &r1, &r2).is_err(),
                "{size1}->{size2}: accepted {desc}"
            );
        }
    }

    // TestVerifyConsistency's edge table ("don't care" roots made 32 bytes).
    let (r1, r2) = (sha256(b"don't care 1"), sha256(b"don't care 2"));
    let e = EMPTY_ROOT;
    let cases: [(u64, u64, Hash, Hash, Vec<Hash>, bool); 13] = [
        (0, 0, r1, r2, vec![], true),
        (1, 1, r1, r2, vec![], true),
        (0, 0, r1, r1, vec![], false),
        (0, 1, r1, r2, vec![], false),
        (1, 1, r2, r2, vec![], false),
        (1, 0, r1, r2, vec![], true),
        (2, 1, r1, r2, vec![], true),
        (1, 2, r1, r2, vec![], true),
        (0, 0, e, r2, vec![], true),
        (1, 1, e, r2, vec![], true),
        (0, 0, e, e, vec![e], true),
        (0, 1, e, e, vec![e], true),
        (1, 1, e, e, vec![e], true),
    ];
    for (s1, s2, a, b, p, want_err) in cases {
        assert_eq!(
            verify_consistency(s1, s2, &p, &a, &b).is_err(),
            want_err,
            "{s1}->{s2}"
        );
    }
}

fn b64_hash(v: &Value) -> Option<Hash> {
    B64.decode(v.as_str()?).ok()?.try_into().ok()
}

/// `None` if any element is not 32 bytes (unrepresentable: a refusal).
fn b64_proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(a) => a.iter().map(b64_hash).collect(),
        _ => panic!("bad proof field"),
    }
}

#[test]
fn transparency_dev_testdata_inclusion_files() {
    let v = json("merkle/inclusion.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let want_err = c["wantErr"].as_bool().unwrap();
        let got_err = match (
            b64_hash(&c["leafHash"]),
            b64_hash(&c["root"]),
            b64_proof(&c["proof"]),
        ) {
            (Some(leaf), Some(root), Some(proof)) => verify_inclusion(
                c["leafIdx"].as_u64().unwrap(),
                c["treeSize"].as_u64().unwrap(),
                &leaf,
                &proof,
                &root,
            )
            .is_err(),
            _ => true,
        };
        assert_eq!(got_err, want_err, "{file}");
    }
}

#[test]
fn transparency_dev_testdata_consistency_files() {
    let v = json("merkle/consistency.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let want_err = c["wantErr"].as_bool().unwrap();
        let got_err = match (
            b64_hash(&c["root1"]),
            b64_hash(&c["root2"]),
            b64_proof(&c["proof"]),
        ) {
            (Some(r1), Some(r2), Some(proof)) => verify_consistency(
                c["size1"].as_u64().unwrap(),
                c["size2"].as_u64().unwrap(),
                &proof,
                &r1,
                &r2,
            )
            .is_err(),
            _ => true,
        };
        assert_eq!(got_err, want_err, "{file}");
    }
}

/// A store as the relay keeps one: a map from `(level, index)` to hash,
/// filled only with what `CompactTree::append` reports.
#[derive(Default)]
struct NodeStore(HashMap<(u8, u64), Hash>);

impl HashReader for NodeStore {
    type Error = String;
    fn read(&self, level: u8, index: u64) -> Result<Hash, String> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or_else(|| format!("missing {level}/{index}"))
    }
}

#[test]
fn storage_model_serves_roots_proofs_and_tiles() {
    let n = 1000u64;
    let reference = MemoryTree::from_entries((0..n).map(|i| i.to_le_bytes()));
    let mut store = NodeStore::default();
    let mut state = merkle::CompactTree::new();
    for i in 0..n {
        for (id, h) in state.append_entry(&i.to_le_bytes()).unwrap() {
            assert!(store.0.insert((id.level, id.index), h).is_none(), "rewrite");
        }
        if i % 97 == 0 {
            // "Restart": reload the state from the store.
            state = merkle::CompactTree::load(&store, state.size()).unwrap();
        }
    }
    assert_eq!(state.root(), reference.root());
    assert_eq!(store.0.len() as u64, 2 * n - u64::from(n.count_ones()));
    for size in [1u64, 2, 255, 256, 257, 700, 1000] {
        let root = merkle::tree_root(&store, size).unwrap();
        assert_eq!(root, reference.root_at(size).unwrap());
        for index in [0, size / 3, size - 1] {
            let p = merkle::inclusion_proof(&store, index, size).unwrap();
            verify_inclusion(index, size, &reference.level(0)[index as usize], &p, &root).unwrap();
        }
        let p = merkle::consistency_proof(&store, size / 2, size).unwrap();
        verify_consistency(
            size / 2,
            size,
            &p,
            &reference.root_at(size / 2).unwrap(),
            &root,
        )
        .unwrap();
    }
    // A plan can also be fetched in one batch by async storage.
    let plan = merkle::inclusion_plan(5, 1000).unwrap();
    let fetched: Vec<Hash> = plan
        .nodes()
        .iter()
        .map(|id| store.0[&(id.level, id.index)])
        .collect();
    assert_eq!(
        plan.assemble(&fetched).unwrap(),
        reference.inclusion_proof(5, 1000).unwrap()
    );
    // Tiles: level 0 and level 1 come straight from the store.
    let t = TilePath::at_size(TileKind::Hashes { level: 1 }, 0, n).unwrap();
    assert_eq!(t.width, 3);
    let hashes = store.read_many(&t.node_ids()).unwrap();
    assert_eq!(hashes[2], reference.read(8, 2).unwrap());
    // A proof past the stored size is a storage miss, not a panic.
    assert!(merkle::inclusion_proof(&store, 0, n + 1).is_err());
    assert!(matches!(
        merkle::inclusion_proof(&store, n, n),
        Err(merkle::TreeError::Invalid(
            ProofError::IndexOutOfRange { .. }
        ))
    ));
}

// ---------------------------------------------------------------------
// Signed notes (golang.org/x/mod/sumdb/note, C2SP signed-note)
// ---------------------------------------------------------------------

fn vkey(rel: &str) -> Verifier {
    Verifier::parse(read_str(rel).trim_end()).unwrap()
}

/// The Ed25519 seed inside a Go `PRIVATE+KEY+<name>+<id>+<base64>` key.
fn go_signer_seed(skey: &str) -> (String, u32, [u8; 32]) {
    let rest = skey.strip_prefix("PRIVATE+KEY+").unwrap();
    let mut parts = rest.splitn(3, '+');
    let name = parts.next().unwrap().to_string();
    let id = u32::from_str_radix(parts.next().unwrap(), 16).unwrap();
    let raw = B64.decode(parts.next().unwrap()).unwrap();
    assert_eq!(raw[0], 0x01, "Ed25519");
    (name, id, raw[1..].try_into().unwrap())
}

fn signing_key_from_seed(seed: &[u8; 32]) -> SigningKey {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    SigningKey::from_pkcs8_pem(&pem::encode(&pem::Pem::new("PRIVATE KEY", der)), "seed").unwrap()
}

#[test]
fn peter_neumann_key_and_key_id() {
    let v = vkey("signed-note/peterneumann.vkey");
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.key_id(), 0xc74f20a3);
    assert_eq!(
        note::key_id("PeterNeumann", 0x01, v.public_key()),
        0xc74f20a3
    );
    assert_eq!(
        v.encode(),
        read_str("signed-note/peterneumann.vkey").trim_end()
    );
    let e = vkey("signed-note/enochroot.vkey");
    assert_eq!((e.name(), e.key_id()), ("EnochRoot", 0xaf0cfe78));

    let (name, id, seed) = go_signer_seed(read_str("signed-note/peterneumann.skey").trim_end());
    let key = signing_key_from_seed(&seed);
    let signer = Signer::ed25519(&name, &key).unwrap();
    assert_eq!(signer.key_id(), id);
    assert_eq!(signer.verifier(), v);
}

#[test]
fn signing_reproduces_the_published_note_byte_for_byte() {
    let (name, _, seed) = go_signer_seed(read_str("signed-note/peterneumann.skey").trim_end());
    let key = signing_key_from_seed(&seed);
    let signer = Signer::ed25519(&name, &key).unwrap();
    let text = read_str("signed-note/peterneumann-text.txt");
    let signed = note::sign(&text, &[&signer]).unwrap();
    assert_eq!(signed, read_str("signed-note/peterneumann.txt"));
}

#[test]
fn opening_published_notes() {
    let peter = vkey("signed-note/peterneumann.vkey");
    let enoch = vkey("signed-note/enochroot.vkey");
    let text = read_str("signed-note/peterneumann-text.txt");
    let one = read("signed-note/peterneumann.txt");
    let two = read("signed-note/peterneumann-enochroot.txt");

    let n = note::open(&one, std::slice::from_ref(&peter)).unwrap();
    assert_eq!(n.text, text);
    assert_eq!(n.verified.len(), 1);
    assert_eq!(
        note::open(&one, std::slice::from_ref(&enoch)),
        Err(NoteError::NoVerifiedSignature)
    );

    // One signature verified, one not.
    let n = note::open(&two, std::slice::from_ref(&peter)).unwrap();
    assert_eq!((n.verified.len(), n.unverified.len()), (1, 1));
    assert_eq!(n.verified[0].name, "PeterNeumann");
    assert_eq!(n.unverified[0].name, "EnochRoot");
    assert_eq!(n.unverified[0].key_id, 0xaf0cfe78);
    // Both verified.
    let n = note::open(&two, &[peter.clone(), enoch.clone()]).unwrap();
    assert_eq!((n.verified.len(), n.unverified.len()), (2, 0));
    // Neither known.
    assert_eq!(note::open(&two, &[]), Err(NoteError::NoVerifiedSignature));
    // The same verifier listed twice is not ambiguous.
    note::open(&one, &[peter.clone(), enoch.clone(), peter.clone()]).unwrap();

    // A changed text fails.
    let bad = String::from_utf8(one.clone())
        .unwrap()
        .replacen("cryptography", "cryptographY", 1);
    assert!(matches!(
        note::open(bad.as_bytes(), std::slice::from_ref(&peter)),
        Err(NoteError::InvalidSignature { .. })
    ));

    // Go: "Invalid signature" (four base64 characters inserted).
    let sig_line = &String::from_utf8(one.clone()).unwrap()[text.len() + 1..];
    let mangled = format!("{text}\n{}ABCD{}", &sig_line[..60], &sig_line[60..]);
    assert_eq!(
        note::open(mangled.as_bytes(), std::slice::from_ref(&peter)),
        Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        })
    );

    // Go: "Duplicated verified and unverified signatures".
    let enoch_line = &String::from_utf8(two.clone()).unwrap()[text.len() + 1 + sig_line.len()..];
    let enoch_abcd = format!("{}ABCD{}", &enoch_line[..60], &enoch_line[60..]);
    let dup = format!("{text}\n{sig_line}{sig_line}{enoch_line}{enoch_line}{enoch_abcd}");
    let n = note::open(dup.as_bytes(), std::slice::from_ref(&peter)).unwrap();
    assert_eq!(n.verified.len(), 1);
    assert_eq!(n.unverified.len(), 2);
    assert_eq!(n.unverified[0].key_id, 0xaf0cfe78);
    assert_eq!(n.unverified[1].signature.len(), 64 + 3);
}

#[test]
fn malformed_notes_are_refused() {
    let peter = vkey("signed-note/peterneumann.vkey");
    let v = json("signed-note/malformed.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let mut bytes = hex::decode(c["hex"].as_str().unwrap()).unwrap();
        if let Some(r) = c.get("then_repeat_hex") {
            let line = hex::decode(r.as_str().unwrap()).unwrap();
            for _ in 0..c["times"].as_u64().unwrap() {
                bytes.extend_from_slice(&line);
            }
        }
        let desc = c["desc"].as_str().unwrap();
        assert!(Note::parse(&bytes).is_err(), "parsed: {desc}");
        assert!(
            note::open(&bytes, std::slice::from_ref(&peter)).is_err(),
            "opened: {desc}"
        );
    }
}

#[test]
fn malformed_verifier_keys_are_refused() {
    let v = json("signed-note/bad-vkeys.json");
    for c in v["cases"].as_array().unwrap() {
        assert!(
            Verifier::parse(c["vkey"].as_str().unwrap()).is_err(),
            "{}",
            c["desc"]
        );
    }
    // Go's TestNewVerifier: every proper substring and every single-byte
    // increment of the key is refused.
    let good = read_str("signed-note/peterneumann.vkey");
    let good = good.trim_end();
    let b = good.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(Verifier::parse(s).is_err(), "accepted {s:?}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8(m).unwrap();
        assert!(Verifier::parse(&s).is_err(), "accepted {s:?}");
    }
}

#[test]
fn c2sp_signed_note_example_parses() {
    let bytes = read("signed-note/c2sp-salvatore.txt");
    let n = Note::parse(&bytes).unwrap();
    // The text keeps its inner empty line; the last empty line separates.
    assert_eq!(
        n.text,
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n"
    );
    assert_eq!(n.signatures.len(), 1);
    assert_eq!(n.signatures[0].name, "quasimodo.example/salvatore");
    assert_eq!(n.signatures[0].signature.len(), 64);
    assert_eq!(n.encode().unwrap().as_bytes(), &bytes[..]);
    // Its key is not published: an unknown key never verifies.
    let stranger = Verifier::ed25519("quasimodo.example/salvatore", [9; 32]).unwrap();
    assert_eq!(
        note::open(&bytes, &[stranger]),
        Err(NoteError::NoVerifiedSignature)
    );
}

// ---------------------------------------------------------------------
// Checkpoints (C2SP tlog-checkpoint)
// ---------------------------------------------------------------------

#[test]
fn c2sp_checkpoint_example() {
    let bytes = read("signed-note/c2sp-checkpoint.txt");
    let n = Note::parse(&bytes).unwrap();
    let c = Checkpoint::parse(n.text.as_bytes()).unwrap();
    assert_eq!(c.origin, "example.com/behind-the-sofa");
    assert_eq!(c.size, 20852163);
    assert_eq!(
        B64.encode(c.root),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(c.extensions.is_empty());
    assert_eq!(c.to_text().unwrap(), n.text);
    // The log's key name matches the origin.
    assert_eq!(n.signatures[0].name, c.origin);
    assert_eq!(n.signatures[0].signature.len(), 64);
}

#[test]
fn checkpoint_signed_with_the_published_key() {
    let (_, _, seed) = go_signer_seed(read_str("signed-note/peterneumann.skey").trim_end());
    let key = signing_key_from_seed(&seed);
    let signer = Signer::ed25519("PeterNeumann", &key).unwrap();
    let (_, x) = vectors();
    let c = Checkpoint::new("PeterNeumann", 8, x.roots[7]).unwrap();
    let signed = c.sign(&[&signer]).unwrap();
    let peter = vkey("signed-note/peterneumann.vkey");
    let (back, _) = Checkpoint::open(signed.as_bytes(), "PeterNeumann", &[peter]).unwrap();
    assert_eq!(back, c);
    assert!(signed.starts_with(
        "PeterNeumann\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} PeterNeumann "
    ));
}

// ---------------------------------------------------------------------
// Tiles (C2SP tlog-tiles)
// ---------------------------------------------------------------------

#[test]
fn tlog_tiles_examples() {
    let v = json("tiles/tlog-tiles.json");
    for e in v["index_encodings"].as_array().unwrap() {
        let index = e["index"].as_u64().unwrap();
        let elems = e["elements"].as_str().unwrap();
        assert_eq!(tiles::encode_index(index), elems);
        let p = TilePath::parse(&format!("tile/0/{elems}")).unwrap();
        assert_eq!(p.index, index);
    }
    for e in v["paths"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        let p = TilePath::parse(path).unwrap();
        let kind = match e["kind"].as_str().unwrap() {
            "entries" => TileKind::Entries,
            _ => TileKind::Hashes {
                level: e["level"].as_u64().unwrap() as u8,
            },
        };
        assert_eq!(p.kind, kind, "{path}");
        assert_eq!(p.index, e["index"].as_u64().unwrap(), "{path}");
        assert_eq!(u64::from(p.width), e["width"].as_u64().unwrap(), "{path}");
        assert_eq!(p.path(), path);
    }
    for bad in v["bad_paths"].as_array().unwrap() {
        let bad = bad.as_str().unwrap();
        assert!(TilePath::parse(bad).is_err(), "accepted {bad}");
    }
    for t in v["tree_sizes"].as_array().unwrap() {
        let size = t["size"].as_u64().unwrap();
        for l in t["tiles"].as_array().unwrap() {
            let kind = TileKind::Hashes {
                level: l["level"].as_u64().unwrap() as u8,
            };
            let full = l["full"].as_u64().unwrap();
            let partial = l["partial_width"].as_u64().unwrap();
            for i in 0..full {
                assert_eq!(TilePath::at_size(kind, i, size).unwrap().width, 256);
            }
            match TilePath::at_size(kind, full, size) {
                Some(p) => assert_eq!(u64::from(p.width), partial, "size {size} {kind:?}"),
                None => assert_eq!(partial, 0, "size {size} {kind:?}"),
            }
            assert!(TilePath::at_size(kind, full + 1, size).is_none());
        }
    }
    let b = &v["entry_bundle"];
    let entries: Vec<Vec<u8>> = b["entries_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect();
    let bytes = hex::decode(b["bundle_hex"].as_str().unwrap()).unwrap();
    assert_eq!(tiles::encode_entry_bundle(&entries).unwrap(), bytes);
    assert_eq!(tiles::parse_entry_bundle(&bytes).unwrap(), entries);
}

#[test]
fn auditor_recomputes_a_checkpoint_from_tiles() {
    // The relay's side: a log of 600 entries served as tiles.
    let entries: Vec<Vec<u8>> = (0..600u32)
        .map(|i| format!("receipt {i}").into_bytes())
        .collect();
    let log = MemoryTree::from_entries(&entries);
    let size = log.size();
    let serve = |p: TilePath| -> Vec<u8> {
        assert!(p.is_available(size));
        match p.kind {
            TileKind::Entries => {
                let (a, b) = p.entry_range().unwrap();
                tiles::encode_entry_bundle(&entries[a as usize..b as usize]).unwrap()
            }
            TileKind::Hashes { .. } => {
                tiles::encode_tile(&log.read_many(&p.node_ids()).unwrap()).unwrap()
            }
        }
    };
    // The auditor's side: fetch every bundle the size implies, rebuild.
    let mut mine = MemoryTree::new();
    let mut n = 0;
    while let Some(p) = TilePath::at_size(TileKind::Entries, n, size) {
        let bytes = serve(TilePath::parse(&p.path()).unwrap());
        for e in tiles::parse_entry_bundle_exact(&bytes, p.width).unwrap() {
            mine.push_entry(e);
        }
        n += 1;
    }
    assert_eq!(mine.root(), log.root());
    // And checks the level-1 tile against its own level-8 nodes.
    let p = TilePath::at_size(TileKind::Hashes { level: 1 }, 0, size).unwrap();
    let served = tiles::parse_tile(&serve(p), p.width).unwrap();
    assert_eq!(served, mine.level(8));
}

// C2SP tlog-witness and tlog-cosignature examples (tests/data/c2sp) ------

#[test]
fn c2sp_tlog_proof_example() {
    use renkei::log::proof::TlogProof;

    let text = read("c2sp/tlog-proof-example.txt");
    let p = TlogProof::parse(&text).expect("the spec's proof parses");
    assert_eq!(p.index, 73894);
    assert_eq!(
        p.extra.as_deref().map(|e| &e[..30]),
        Some(&b"age-v1.2.1-darwin-arm64.tar.gz"[..])
    );
    assert_eq!(p.inclusion.len(), 5);
    assert_eq!(
        B64.encode(p.inclusion[4]),
        "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk="
    );
    assert_eq!(p.encode().unwrap().as_bytes(), &text[..]);
    let body = p.checkpoint.split_once("\n\n").unwrap().0.to_string() + "\n";
    let cp = Checkpoint::parse(body.as_bytes()).unwrap();
    assert_eq!(cp.origin, "example.com/fancylog");
    assert_eq!(cp.size, 109482);
    // The spec's example is illustrative: five hashes cannot prove an
    // entry of a tree of 109482 leaves (that takes 16 or 17), and its
    // signatures are elided with "[...]".
    assert!(
        renkei::log::verify_inclusion(p.index, cp.size, &[0; 32], &p.inclusion, &cp.root).is_err()
    );
    assert!(Note::parse(p.checkpoint.as_bytes()).is_err());
    // One changed byte anywhere in the structure is refused or read
    // differently, never silently accepted as the same proof.
    let flipped =
        String::from_utf8(text.clone())
            .unwrap()
            .replacen("index 73894", "index 073894", 1);
    assert!(TlogProof::parse(flipped.as_bytes()).is_err());
}

#[test]
fn c2sp_witness_vectors() {
    use renkei::log::cosignature::{self, COSIGNATURE_LEN};
    use renkei::log::witness::AddCheckpoint;

    // The add-checkpoint request parses and re-encodes byte for byte.
    let body = read("c2sp/tlog-witness-add-checkpoint-request.txt");
    let req = AddCheckpoint::parse(&body).expect("the spec's request parses");
    assert_eq!(req.old_size, 20852014);
    assert_eq!(req.proof.len(), 4);
    assert_eq!(
        B64.encode(req.proof[0]),
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw="
    );
    assert_eq!(req.encode().unwrap().as_bytes(), &body[..]);
    let note = Note::parse(req.checkpoint.as_bytes()).expect("its checkpoint is a note");
    assert_eq!(note.signatures.len(), 2);
    let cp = Checkpoint::parse(note.text.as_bytes()).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);

    // The response: three Ed25519 cosignature lines of two witnesses.
    let resp = read("c2sp/tlog-witness-add-checkpoint-response.txt");
    let lines = cosignature::parse_signature_lines(&resp).expect("the spec's answer parses");
    assert_eq!(
        lines.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        [
            "witness.example/w1",
            "witness.example/w1",
            "witness.example/w2"
        ]
    );
    assert!(lines.iter().all(|l| l.signature.len() == COSIGNATURE_LEN));
    assert_eq!(
        cosignature::encode_signature_lines(&lines).as_bytes(),
        &resp[..]
    );

    // The cosigned checkpoint: the witness line carries key ID 8d66cf3f
    // and timestamp 1679315147, and the signed message is exactly the
    // spec's example.
    let signed = read_str("c2sp/tlog-cosignature-checkpoint.txt");
    let n = Note::parse(signed.as_bytes()).unwrap();
    let w = &n.signatures[1];
    assert_eq!(w.name, "witness.example.com/w1");
    assert_eq!(w.key_id, 0x8d66cf3f);
    assert_eq!(w.signature.len(), COSIGNATURE_LEN);
    let ts = u64::from_be_bytes(w.signature[..8].try_into().unwrap());
    assert_eq!(ts, 1679315147);
    assert_eq!(
        cosignature::message(&n.text, ts),
        read_str("c2sp/tlog-cosignature-message.txt")
    );
    // The type byte 0x04 enters the key ID: another key under the same
    // name has another ID, so its lines are ignored rather than checked.
    let unknown = cosignature::WitnessKey::new("witness.example.com/w1", [0; 32]).unwrap();
    assert_ne!(unknown.key_id(), 0x8d66cf3f);
}
