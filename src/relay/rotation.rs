//! Rotating the log's checkpoint key in place (`renkei relay
//! rotate-checkpoint-key`, docs/DEPLOY.md and docs/LOG.md §8).
//!
//! Run while every relay instance on the database is stopped: it opens the
//! relay's store with the log's *current* checkpoint key, appends the
//! key-transition entry alone in one batch — one transaction holds the
//! entry, its tree nodes, the `log_key_transitions` row and the
//! announcement checkpoint signed by the current key — and has the
//! announcement cosigned by the configured witnesses after commit. Then
//! the relay is started with the new key (`--checkpoint-key`).
//!
//! Crash safety: before `COMMIT` nothing changed and the command can be run
//! again; after it the log's key is the new one, the relay refuses to start
//! with the old key (and says which key the log wants), and running the
//! command again with the old key is refused the same way. An instance left
//! running on the old key refuses to append (its sequencer checks the
//! log's latest transition in every batch) until restarted with the new
//! key: no checkpoint past the announcement is ever signed by the old key.

use std::path::Path;
use std::sync::Arc;

use super::store::Store;
use super::{
    blob_store_of, checkpoint_key_of, log_keys, signs_from, store_log_config, witnesses_of,
    RelayConfig, RelayError,
};
use crate::keys::SigningKey;
use crate::log::Verifier;
use crate::receipt::bundle::log_origin;
use crate::receipt::key_transition::KeyTransition;

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    /// The log's origin (unchanged).
    pub origin: String,
    /// The retired checkpoint verifier key.
    pub old_key: String,
    /// The new checkpoint verifier key.
    pub new_key: String,
    /// Leaf index `t` of the key-transition entry.
    pub log_index: u64,
    /// The announcement: the checkpoint of size `t + 1` signed by the old
    /// key, with the witnesses' cosignatures it got.
    pub announcement: String,
}

/// Announce `new_key` as the checkpoint key of the relay's log: the
/// relay's profile, data folder, database and settings as `relay serve`
/// takes them, with `config.checkpoint_key` naming the *current* key file
/// (absent: the certificate's key is the current key).
pub async fn rotate_checkpoint_key(
    profile: &Path,
    data: &Path,
    database_url: Option<&str>,
    config: &RelayConfig,
    new_key: &SigningKey,
) -> Result<Rotation, RelayError> {
    let p = super::relay_profile(profile)?;
    let cert = p.certificate()?;
    let key = Arc::new(p.signing_key()?);
    let current = checkpoint_key_of(config, &key)?;
    let origin = log_origin(&cert);
    let witnesses = witnesses_of(config)?;
    let store = Store::open_with(data, database_url, blob_store_of(config, data)?).await?;
    let chain = log_keys(&store, &cert).await?;
    let from_size = signs_from(&chain, &current)?;
    let vkey = |k: &SigningKey| {
        Verifier::ed25519(&origin, k.public_key()).map_err(|e| RelayError::Config(e.to_string()))
    };
    let (old, new) = (vkey(&current)?, vkey(new_key)?);
    if chain
        .keys()
        .iter()
        .any(|k| k.key.public_key() == new.public_key())
    {
        return Err(RelayError::CheckpointKey(format!(
            "{} is a checkpoint key this log has had before; make a new one (`renkei relay new-checkpoint-key`)",
            new.encode()
        )));
    }
    let transition = KeyTransition::new(&origin, old, new, &crate::receipt::now_rfc3339())
        .map_err(|e| RelayError::CheckpointKey(e.to_string()))?;
    let store = store.start_log(store_log_config(
        &cert,
        &origin,
        (&key, &current, from_size),
        config,
        witnesses,
    ));
    let leaf = store
        .key_transition(&transition.to_text(), &transition.new_key.encode())
        .await?;
    Ok(Rotation {
        origin,
        old_key: transition.old_key.encode(),
        new_key: transition.new_key.encode(),
        log_index: leaf.log_index,
        announcement: leaf.checkpoint,
    })
}
