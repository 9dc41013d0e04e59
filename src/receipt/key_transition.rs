//! Checkpoint key transitions: how a log keeps one origin while the key
//! that signs its checkpoints changes (docs/LOG.md §8).
//!
//! The first checkpoint key of a relay's log is its certificate's key (the
//! *root* of the chain, [`crate::receipt::bundle::relay_verifier`]). A new
//! key is announced by a log entry
//!
//! ```text
//! {"type":"key-transition","origin":"<origin>","old_key":"<vkey>","new_key":"<vkey>","announced_at":"<RFC 3339>"}
//! ```
//!
//! appended alone in its batch at leaf index `t` and checkpointed by the
//! *old* key at tree size `t + 1` (the announcement). The old key signs
//! checkpoints of sizes up to `t + 1`, the new one of sizes from `t + 1`
//! on. A verifier learns the new key from a [`TransitionProof`]: the entry,
//! the announcement checkpoint, and the entry's inclusion proof in it —
//! so each key is vouched for by the key before it, back to the
//! certificate. [`LogKeys`] is that chain; it is pure (no I/O).

use serde::{Deserialize, Serialize};

use crate::log::{self, Checkpoint, CheckpointError, Hash, NoteError, Verifier};

/// Largest key-transition entry accepted (two verifier keys and a time
/// are far below it).
pub const MAX_ENTRY_BYTES: usize = 4096;

/// Most transitions a chain (and a receipt bundle) may carry.
pub const MAX_TRANSITIONS: usize = 256;

/// Why a transition or a checkpoint was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyChainError {
    /// The entry is not a canonical key-transition entry.
    #[error("not a key-transition entry: {0}")]
    Malformed(String),
    /// No signature of the checkpoint is by a key of the chain: a key this
    /// verifier has not learnt (fetch the log's transitions) or a forgery.
    #[error(
        "the checkpoint is signed by no checkpoint key of the log {0} that this verifier knows"
    )]
    UnknownKey(String),
    /// Signed only by a key that does not sign checkpoints of that size (a
    /// retired key signing past its announcement, or a new key signing
    /// before it).
    #[error("the checkpoint of size {size} is signed by a checkpoint key that does not sign trees of that size (retired or not yet announced)")]
    OutOfRange {
        /// The checkpoint's size.
        size: u64,
    },
    /// The checkpoint does not verify (bad signature line, malformed body,
    /// another origin).
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(String),
    /// The transition is not vouched for by the chain's current key.
    #[error("the key transition at log index {index} is not vouched for by the log's current key: {why}")]
    Transition {
        /// Leaf index of the transition.
        index: u64,
        /// What failed.
        why: String,
    },
}

/// A parsed and checked key-transition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTransition {
    /// The log's origin (both keys are named by it).
    pub origin: String,
    /// The key that signed checkpoints before.
    pub old_key: Verifier,
    /// The key that signs checkpoints after.
    pub new_key: Verifier,
    /// When the relay's operator announced it (RFC 3339, UTC, whole
    /// seconds).
    pub announced_at: String,
}

/// The entry's JSON, in this exact field order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    origin: String,
    old_key: String,
    new_key: String,
    announced_at: String,
}

/// The entry type of a key transition (the `type` field).
pub const ENTRY_TYPE: &str = "key-transition";

impl KeyTransition {
    /// A transition of `origin` from `old_key` to `new_key` at `at`
    /// (RFC 3339). Both keys must be named `origin` and differ.
    pub fn new(
        origin: &str,
        old_key: Verifier,
        new_key: Verifier,
        at: &str,
    ) -> Result<KeyTransition, KeyChainError> {
        let t = KeyTransition {
            origin: origin.to_string(),
            old_key,
            new_key,
            announced_at: at.to_string(),
        };
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> Result<(), KeyChainError> {
        let bad = |m: &str| Err(KeyChainError::Malformed(m.to_string()));
        if self.origin.is_empty() {
            return bad("the origin is empty");
        }
        if self.old_key.name() != self.origin || self.new_key.name() != self.origin {
            return bad("a key is not named by the log's origin");
        }
        if self.old_key.public_key() == self.new_key.public_key() {
            return bad("the new key is the old key");
        }
        match time::OffsetDateTime::parse(
            &self.announced_at,
            &time::format_description::well_known::Rfc3339,
        ) {
            Ok(t) if t.offset().is_utc() && t.nanosecond() == 0 && t.year() >= 1970 => {}
            _ => return bad("announced_at is not an RFC 3339 UTC time in whole seconds"),
        }
        Ok(())
    }

    /// The exact entry text (docs/LOG.md §8).
    pub fn to_text(&self) -> String {
        serde_json::to_string(&Wire {
            kind: ENTRY_TYPE.into(),
            origin: self.origin.clone(),
            old_key: self.old_key.encode(),
            new_key: self.new_key.encode(),
            announced_at: self.announced_at.clone(),
        })
        .expect("serializable")
    }

    /// Parse an entry from untrusted bytes: only the canonical text (the
    /// one [`KeyTransition::to_text`] writes) is accepted.
    pub fn parse(bytes: &[u8]) -> Result<KeyTransition, KeyChainError> {
        let bad = |m: String| KeyChainError::Malformed(m);
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(bad("too large".into()));
        }
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if w.kind != ENTRY_TYPE {
            return Err(bad(format!("the type is {:?}", w.kind)));
        }
        let key = |s: &str, which: &str| {
            Verifier::parse(s).map_err(|e| bad(format!("{which} is not a verifier key: {e}")))
        };
        let t = KeyTransition {
            old_key: key(&w.old_key, "old_key")?,
            new_key: key(&w.new_key, "new_key")?,
            origin: w.origin,
            announced_at: w.announced_at,
        };
        t.check()?;
        if t.to_text().as_bytes() != bytes {
            return Err(bad("not in the canonical form".into()));
        }
        Ok(t)
    }

    /// Whether an entry is (claims to be) a key transition: its text
    /// starts as every key-transition entry does. The relay finds them by
    /// this prefix; auditors check that every such entry is one the chain
    /// learnt.
    pub fn is_claimed(entry: &[u8]) -> bool {
        entry.starts_with(ENTRY_PREFIX.as_bytes())
    }
}

/// How every key-transition entry starts.
pub const ENTRY_PREFIX: &str = "{\"type\":\"key-transition\",";

/// A key transition with the proof that the key before vouched for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionProof {
    /// Leaf index `t` of the transition entry.
    pub log_index: u64,
    /// The exact entry text.
    pub entry: String,
    /// The announcement: the checkpoint of size `t + 1`, signed by the old
    /// key (and cosigned by the witnesses that cosigned it).
    pub checkpoint: String,
    /// Inclusion proof of the entry in the announcement (base64 hashes).
    #[serde(with = "crate::log::b64::hashes")]
    pub inclusion: Vec<Hash>,
}

/// One key of a chain and the first tree size it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainKey {
    /// The verifier key.
    pub key: Verifier,
    /// The first tree size it signs (0 for the root; `t + 1` for a key
    /// announced at leaf `t`).
    pub from_size: u64,
}

/// The checkpoint keys of one log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKeys {
    keys: Vec<ChainKey>,
}

impl LogKeys {
    /// A chain with only its root key (the relay certificate's key); the
    /// log's origin is the key's name.
    pub fn new(root: Verifier) -> LogKeys {
        LogKeys {
            keys: vec![ChainKey {
                key: root,
                from_size: 0,
            }],
        }
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.keys[0].key.name()
    }

    /// The keys, oldest first.
    pub fn keys(&self) -> &[ChainKey] {
        &self.keys
    }

    /// The key that signs the newest checkpoints.
    pub fn current(&self) -> &ChainKey {
        self.keys.last().expect("a chain has its root")
    }

    /// Add a key learnt before (kept by the caller after
    /// [`LogKeys::learn`] accepted it). Refused unless it follows the
    /// current key: same name, later size, a key not in the chain.
    pub fn push_learnt(&mut self, key: Verifier, from_size: u64) -> Result<(), KeyChainError> {
        if key.name() != self.origin()
            || from_size <= self.current().from_size
            || self
                .keys
                .iter()
                .any(|k| k.key.public_key() == key.public_key())
            || self.keys.len() >= MAX_TRANSITIONS
        {
            return Err(KeyChainError::Transition {
                index: from_size.saturating_sub(1),
                why: "a kept key does not follow the chain".into(),
            });
        }
        self.keys.push(ChainKey { key, from_size });
        Ok(())
    }

    /// The sizes key `i` signs: `[from_i, from_{i+1}]`, the last key
    /// without an end.
    fn signs(&self, i: usize, size: u64) -> bool {
        size >= self.keys[i].from_size
            && self
                .keys
                .get(i + 1)
                .map(|next| size <= next.from_size)
                .unwrap_or(true)
    }

    /// Verify a checkpoint of this log: signed by a key of the chain that
    /// signs trees of its size (a signature line of a chain key that does
    /// not verify refuses the note). Returns the checkpoint and the key
    /// that signed it (for the witnesses' cosignature check).
    pub fn open(&self, note: &[u8]) -> Result<(Checkpoint, &Verifier), KeyChainError> {
        let mut signed = None;
        let mut out_of_range = None;
        for (i, k) in self.keys.iter().enumerate() {
            match Checkpoint::open(note, self.origin(), std::slice::from_ref(&k.key)) {
                Ok((cp, _)) => {
                    if self.signs(i, cp.size) {
                        signed.get_or_insert((cp, &k.key));
                    } else {
                        out_of_range = Some(cp.size);
                    }
                }
                Err(CheckpointError::Note(NoteError::NoVerifiedSignature)) => {}
                Err(e) => return Err(KeyChainError::Checkpoint(e.to_string())),
            }
        }
        match (signed, out_of_range) {
            (Some(s), _) => Ok(s),
            (None, Some(size)) => Err(KeyChainError::OutOfRange { size }),
            (None, None) => Err(KeyChainError::UnknownKey(self.origin().to_string())),
        }
    }

    /// Learn the key a transition announces, if it is vouched for by the
    /// current key: the entry is a transition of this origin from the
    /// current key to a key not in the chain; the announcement checkpoint
    /// is signed by the current key, has size `log_index + 1` (past the
    /// current key's first size) and includes the entry at `log_index`.
    /// A transition already in the chain (same index and key) is accepted
    /// again without change (`Ok(None)`); a new one gives the announcement
    /// checkpoint, which the caller proves consistent with the trees it
    /// accepts.
    pub fn learn(&mut self, p: &TransitionProof) -> Result<Option<Checkpoint>, KeyChainError> {
        let fail = |why: String| KeyChainError::Transition {
            index: p.log_index,
            why,
        };
        let t = KeyTransition::parse(p.entry.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let size = p
            .log_index
            .checked_add(1)
            .ok_or_else(|| fail("the index is too large".into()))?;
        if let Some(k) = self.keys.iter().skip(1).find(|k| k.from_size == size) {
            return if k.key == t.new_key {
                Ok(None)
            } else {
                Err(fail("another key was announced at this index".into()))
            };
        }
        if t.origin != self.origin() {
            return Err(fail(format!("the transition is of the log {}", t.origin)));
        }
        let current = self.current().clone();
        if t.old_key != current.key {
            return Err(fail(
                "its old key is not the current checkpoint key (a transition is missing or forged)"
                    .into(),
            ));
        }
        if self
            .keys
            .iter()
            .any(|k| k.key.public_key() == t.new_key.public_key())
        {
            return Err(fail(
                "its new key was a checkpoint key of this log before".into(),
            ));
        }
        if size <= current.from_size {
            return Err(fail("it is not past the current key's announcement".into()));
        }
        if self.keys.len() >= MAX_TRANSITIONS {
            return Err(fail("too many transitions".into()));
        }
        let (cp, _) = Checkpoint::open(
            p.checkpoint.as_bytes(),
            self.origin(),
            std::slice::from_ref(&current.key),
        )
        .map_err(|e| {
            fail(format!(
                "the announcement does not verify with the old key: {e}"
            ))
        })?;
        if cp.size != size {
            return Err(fail(format!(
                "the announcement has size {}, not {size}",
                cp.size
            )));
        }
        log::verify_inclusion(
            p.log_index,
            cp.size,
            &log::leaf_hash(p.entry.as_bytes()),
            &p.inclusion,
            &cp.root,
        )
        .map_err(|e| fail(format!("the entry is not in the announcement: {e}")))?;
        self.keys.push(ChainKey {
            key: t.new_key,
            from_size: size,
        });
        Ok(Some(cp))
    }

    /// Learn every transition of `proofs` in order (see
    /// [`LogKeys::learn`]); the announcements of the keys learnt.
    pub fn learn_all(
        &mut self,
        proofs: &[TransitionProof],
    ) -> Result<Vec<Checkpoint>, KeyChainError> {
        if proofs.len() > MAX_TRANSITIONS {
            return Err(KeyChainError::Transition {
                index: 0,
                why: "too many transitions".into(),
            });
        }
        let mut out = Vec::new();
        for p in proofs {
            if let Some(cp) = self.learn(p)? {
                out.push(cp);
            }
        }
        Ok(out)
    }
}

/// Fuzz entry point: the key-transition entry parser and the transition
/// proof JSON; an accepted entry re-encodes to itself.
pub fn fuzz(data: &[u8]) {
    if let Ok(t) = KeyTransition::parse(data) {
        assert_eq!(t.to_text().as_bytes(), data, "key transition not canonical");
    }
    if let Ok(p) = serde_json::from_slice::<TransitionProof>(data) {
        let root = Verifier::ed25519("fuzz.example/log", [0x5a; 32]).expect("valid name");
        let mut keys = LogKeys::new(root);
        let _ = keys.learn(&p);
        let _ = keys.open(p.checkpoint.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::log::{MemoryTree, Signer};

    const ORIGIN: &str = "relay.example/renkei/relay-1";
    const AT: &str = "2026-12-01T22:00:00Z";

    fn vk(k: &SigningKey) -> Verifier {
        Verifier::ed25519(ORIGIN, k.public_key()).unwrap()
    }

    /// A log of `entries` and the signed checkpoint of its first `size`.
    fn sign(entries: &[String], size: usize, key: &SigningKey) -> String {
        let t = MemoryTree::from_entries(&entries[..size]);
        let s = Signer::ed25519(ORIGIN, key).unwrap();
        Checkpoint::new(ORIGIN, size as u64, t.root())
            .unwrap()
            .sign(&[&s])
            .unwrap()
    }

    fn proof(entries: &[String], index: usize, key: &SigningKey) -> TransitionProof {
        let t = MemoryTree::from_entries(&entries[..=index]);
        TransitionProof {
            log_index: index as u64,
            entry: entries[index].clone(),
            checkpoint: sign(entries, index + 1, key),
            inclusion: t.inclusion_proof(index as u64, index as u64 + 1).unwrap(),
        }
    }

    #[test]
    fn a_transition_entry_round_trips_and_only_canonical_text_parses() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let t = KeyTransition::new(ORIGIN, vk(&a), vk(&b), AT).unwrap();
        let text = t.to_text();
        assert!(text.starts_with(ENTRY_PREFIX), "{text}");
        assert_eq!(KeyTransition::parse(text.as_bytes()).unwrap(), t);
        assert!(KeyTransition::is_claimed(text.as_bytes()));
        let other = Verifier::ed25519("other.example/log", b.public_key()).unwrap();
        let bad: Vec<String> = vec![
            String::new(),
            "{}".into(),
            text.replace("key-transition", "receipt"),
            text.replace("\"origin\"", "\"origin \""),
            text.replacen(',', ", ", 1),
            format!("{text}\n"),
            text.replace(AT, "2026-12-01T22:00:00.5Z"),
            text.replace(AT, "2026-12-01T23:00:00+01:00"),
            text.replace(AT, "yesterday"),
            text.replace(&vk(&b).encode(), &vk(&a).encode()),
            text.replace(&vk(&b).encode(), &other.encode()),
            text.replace(&vk(&b).encode(), "not a key"),
            text.replace("}", ",\"extra\":1}"),
            text.replace(ORIGIN, ""),
            text.to_uppercase(),
            "x".repeat(MAX_ENTRY_BYTES + 1),
        ];
        for b in &bad {
            assert!(KeyTransition::parse(b.as_bytes()).is_err(), "accepted {b}");
        }
        assert!(KeyTransition::new(ORIGIN, vk(&a), vk(&a), AT).is_err());
        assert!(KeyTransition::new(ORIGIN, vk(&a), other, AT).is_err());
    }

    #[test]
    fn a_chain_learns_a_vouched_key_and_keeps_the_old_one_for_old_sizes() {
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let t1 = KeyTransition::new(ORIGIN, vk(&a), vk(&b), AT).unwrap();
        let mut entries: Vec<String> = (0..5).map(|i| format!("entry {i}")).collect();
        entries.push(t1.to_text()); // index 5: announced at size 6
        entries.extend((6..9).map(|i| format!("entry {i}")));
        let mut keys = LogKeys::new(vk(&a));
        let new = sign(&entries, 9, &b);
        // Unknown before the transition is learnt.
        assert_eq!(
            keys.open(new.as_bytes()).unwrap_err(),
            KeyChainError::UnknownKey(ORIGIN.into())
        );
        let p = proof(&entries, 5, &a);
        let ann = keys.learn(&p).unwrap().expect("a new key");
        assert_eq!(ann.size, 6);
        assert_eq!(keys.learn(&p).unwrap(), None, "known again, no change");
        assert_eq!(keys.current().from_size, 6);
        assert_eq!(keys.open(new.as_bytes()).unwrap().1, &vk(&b));
        // Old checkpoints still verify with the old key, up to the announcement.
        assert_eq!(
            keys.open(sign(&entries, 3, &a).as_bytes()).unwrap().1,
            &vk(&a)
        );
        assert_eq!(
            keys.open(sign(&entries, 6, &a).as_bytes()).unwrap().1,
            &vk(&a)
        );
        assert_eq!(
            keys.open(sign(&entries, 6, &b).as_bytes()).unwrap().1,
            &vk(&b)
        );
        // The retired key past its announcement, the new key before it.
        assert_eq!(
            keys.open(sign(&entries, 7, &a).as_bytes()).unwrap_err(),
            KeyChainError::OutOfRange { size: 7 }
        );
        assert_eq!(
            keys.open(sign(&entries, 5, &b).as_bytes()).unwrap_err(),
            KeyChainError::OutOfRange { size: 5 }
        );
        // A key nobody announced.
        assert_eq!(
            keys.open(sign(&entries, 9, &c).as_bytes()).unwrap_err(),
            KeyChainError::UnknownKey(ORIGIN.into())
        );
        // A kept chain rebuilt from its keys is the same chain.
        let mut again = LogKeys::new(vk(&a));
        again.push_learnt(vk(&b), 6).unwrap();
        assert_eq!(again, keys);
        assert!(again.push_learnt(vk(&c), 6).is_err());
        assert!(again.push_learnt(vk(&a), 8).is_err());
    }

    #[test]
    fn transitions_not_vouched_for_by_the_current_key_are_refused() {
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let good = KeyTransition::new(ORIGIN, vk(&a), vk(&b), AT).unwrap();
        let mut entries: Vec<String> = (0..4).map(|i| format!("entry {i}")).collect();
        entries.push(good.to_text());
        let refused = |p: &TransitionProof| {
            let mut keys = LogKeys::new(vk(&a));
            let r = keys.learn(p);
            assert!(matches!(r, Err(KeyChainError::Transition { .. })), "{r:?}");
            assert_eq!(keys.keys().len(), 1, "nothing learnt");
        };
        // Announced under the new key itself (self-signed), or a third key.
        refused(&proof(&entries, 4, &b));
        refused(&proof(&entries, 4, &c));
        // A checkpoint of another size than index + 1.
        let mut p = proof(&entries, 4, &a);
        entries.push("entry 5".into());
        p.checkpoint = sign(&entries, 6, &a);
        refused(&p);
        // A proof that does not include the entry.
        let mut p = proof(&entries, 4, &a);
        p.inclusion[0][0] ^= 1;
        refused(&p);
        let mut p = proof(&entries, 4, &a);
        p.inclusion.pop();
        refused(&p);
        // An entry whose old key is not the chain's current one.
        let mut e2 = entries.clone();
        e2[4] = KeyTransition::new(ORIGIN, vk(&c), vk(&b), AT)
            .unwrap()
            .to_text();
        refused(&proof(&e2, 4, &a));
        // Another origin's transition.
        let oa = Verifier::ed25519("other.example/log", a.public_key()).unwrap();
        let ob = Verifier::ed25519("other.example/log", b.public_key()).unwrap();
        e2[4] = KeyTransition::new("other.example/log", oa, ob, AT)
            .unwrap()
            .to_text();
        refused(&proof(&e2, 4, &a));
        // Not a transition at all.
        refused(&proof(&entries, 3, &a));
        // Back to a retired key.
        let mut keys = LogKeys::new(vk(&a));
        keys.learn(&proof(&entries, 4, &a)).unwrap();
        let mut e3 = entries.clone();
        e3.push(
            KeyTransition::new(ORIGIN, vk(&b), vk(&a), AT)
                .unwrap()
                .to_text(),
        );
        assert!(keys.learn(&proof(&e3, 6, &b)).is_err());
    }

    #[test]
    fn transition_proofs_refuse_unknown_fields() {
        let j = r#"{"log_index":1,"entry":"x","checkpoint":"y","inclusion":[],"more":1}"#;
        assert!(serde_json::from_str::<TransitionProof>(j).is_err());
        fuzz(j.as_bytes());
        fuzz(b"{\"type\":\"key-transition\",");
    }
}
