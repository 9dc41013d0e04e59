//! Where the relay signs the checkpoints of its log: one place, used once
//! per appended batch by the sequencer (`super::sequencer`), which stores
//! the signed note in `log_checkpoints` in the same transaction as the
//! leaves it commits to. `GET /v1/log/checkpoint` serves the newest stored
//! note as is.
//!
//! A checkpoint is a C2SP tlog-checkpoint body (origin, tree size, root
//! hash) signed as a C2SP signed note with Ed25519 under the key name
//! `origin` (docs/LOG.md). Hooks that add to each checkpoint (cosignatures
//! from witnesses, say) belong beside [`CheckpointSigner::sign`].

use std::sync::Arc;

use crate::keys::SigningKey;
use crate::log::{Checkpoint, Hash, Signer};

/// Signs checkpoints of one log.
#[derive(Clone)]
pub struct CheckpointSigner {
    origin: String,
    key: Arc<SigningKey>,
}

/// A checkpoint that could not be signed (an origin that is not a valid
/// key name, say): a configuration error, never a client's fault.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a checkpoint: {0}")]
pub struct CheckpointError(String);

impl CheckpointSigner {
    /// A signer for the log `origin` (also the key name) with `key`.
    pub fn new(origin: impl Into<String>, key: Arc<SigningKey>) -> CheckpointSigner {
        CheckpointSigner {
            origin: origin.into(),
            key,
        }
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed note of the tree of `size` leaves with root `root`.
    pub fn sign(&self, size: u64, root: Hash) -> Result<String, CheckpointError> {
        let signer =
            Signer::ed25519(&self.origin, &self.key).map_err(|e| CheckpointError(e.to_string()))?;
        Checkpoint::new(&self.origin, size, root)
            .and_then(|c| c.sign(&[&signer]))
            .map_err(|e| CheckpointError(e.to_string()))
    }
}
