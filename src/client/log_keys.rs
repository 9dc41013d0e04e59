//! The relay log's checkpoint keys as a facility knows them (docs/LOG.md
//! §8): the relay certificate's key, then each key learnt from a key
//! transition that the key before vouched for, kept in the local store's
//! `checkpoint_keys` so that checkpoints and receipts signed by any of
//! them keep verifying.

use super::ops::{OpError, Session};
use crate::client::http::ClientError;
use crate::log::{Checkpoint, Verifier};
use crate::pki::CertInfo;
use crate::receipt::key_transition::{KeyChainError, LogKeys, TransitionProof};

/// A checkpoint opened with the log's keys.
pub(crate) struct Opened {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The key that signed it.
    pub signer: Verifier,
    /// The chain, with any keys learnt for it.
    pub keys: LogKeys,
    /// The announcements of the keys learnt for it (not kept yet), with
    /// their signed notes.
    pub announcements: Vec<(Checkpoint, String)>,
}

impl Session {
    /// The checkpoint keys this profile trusts for the log of `relay`.
    pub async fn log_keys(&self, relay: &CertInfo) -> Result<LogKeys, OpError> {
        let root = crate::receipt::bundle::relay_verifier(relay)
            .map_err(|e| OpError::Relay(e.to_string()))?;
        let mut keys = LogKeys::new(root);
        for (from, vkey) in self.store.checkpoint_keys(keys.origin()).await? {
            let v = Verifier::parse(&vkey).map_err(|e| {
                OpError::Relay(format!("a kept checkpoint key is not a verifier key: {e}"))
            })?;
            keys.push_learnt(v, from)
                .map_err(|e| OpError::Relay(e.to_string()))?;
        }
        Ok(keys)
    }

    /// Open the checkpoint `note` of the log of `relay` with the keys this
    /// profile trusts; when a key it does not know signed it, learn the
    /// log's key transitions from the relay first. A checkpoint still
    /// signed by no key of the chain (or by a key outside its sizes), and
    /// transitions that do not verify, are kept as evidence beside
    /// `kept` (the newest checkpoint kept) and refused.
    pub(crate) async fn open_checkpoint(
        &self,
        note: &str,
        relay: &CertInfo,
        kept: &str,
    ) -> Result<Opened, OpError> {
        let mut keys = self.log_keys(relay).await?;
        let mut announcements = Vec::new();
        let first = keys.open(note.as_bytes()).map(|(c, v)| (c, v.clone()));
        let opened = match first {
            Err(KeyChainError::UnknownKey(_)) => {
                let proofs: Vec<TransitionProof> =
                    match self.client.get_json("/v1/log/key-transitions").await {
                        Ok((p, _)) => p,
                        // A relay from before key transitions has none.
                        Err(ClientError::Refused { status: 404, .. }) => Vec::new(),
                        Err(e) => return Err(e.into()),
                    };
                match keys.learn_all(&proofs) {
                    Ok(a) => {
                        announcements = a
                            .into_iter()
                            .filter_map(|c| {
                                let p = proofs.iter().find(|p| p.log_index + 1 == c.size)?;
                                Some((c, p.checkpoint.clone()))
                            })
                            .collect()
                    }
                    Err(e) => {
                        self.store
                            .add_evidence("key transition that does not verify", note, kept)
                            .await?;
                        return Err(OpError::Relay(format!(
                            "the relay's checkpoint is signed by a new key, and {e} (kept as evidence)"
                        )));
                    }
                }
                keys.open(note.as_bytes()).map(|(c, v)| (c, v.clone()))
            }
            other => other,
        };
        match opened {
            Ok((checkpoint, signer)) => Ok(Opened {
                checkpoint,
                signer,
                keys,
                announcements,
            }),
            Err(e @ (KeyChainError::UnknownKey(_) | KeyChainError::OutOfRange { .. })) => {
                self.store
                    .add_evidence("checkpoint signed by an unknown key", note, kept)
                    .await?;
                Err(OpError::Relay(format!(
                    "the relay's checkpoint is not accepted: {e}; the log announces no transition to its key (kept as evidence)"
                )))
            }
            Err(e) => Err(OpError::Relay(format!(
                "the relay's checkpoint does not verify: {e}"
            ))),
        }
    }

    /// Keep the keys learnt for an accepted checkpoint.
    pub(crate) async fn keep_log_keys(&self, keys: &LogKeys) -> Result<(), OpError> {
        for k in keys.keys().iter().skip(1) {
            self.store
                .add_checkpoint_key(keys.origin(), k.from_size, &k.key.encode())
                .await?;
        }
        Ok(())
    }
}
