//! The outbox: every envelope this facility seals waits in
//! `PROFILE/outbox/ID.age`, recorded in the local store with its signed
//! manifest and signed submission, until the relay accepts it. When the
//! relay cannot be reached (or answers 5xx / 429) the envelope stays
//! queued; a flush resubmits the same bytes with the same submission, and
//! the relay's idempotent resubmission answers with its stored acceptance,
//! so nothing is delivered twice. Accepted envelopes leave the outbox after
//! the profile's `outbox_retention_days`.

use serde::Serialize;
use sqlx::Row;

use super::store::{LocalStore, LocalStoreError};
use super::threads::ThreadPackage;
use crate::package::Manifest;
use crate::receipt::SignedReceipt;

/// Where an outbox envelope stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxState {
    /// Waiting for the relay (never reached it, or it failed for now).
    Queued,
    /// The relay accepted it (verified acceptance receipt).
    Accepted,
    /// The relay refused it for good (a 4xx answer); see `last_error`.
    Refused,
}

impl OutboxState {
    fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Accepted => "accepted",
            OutboxState::Refused => "refused",
        }
    }

    fn parse(s: &str) -> OutboxState {
        match s {
            "accepted" => OutboxState::Accepted,
            "refused" => OutboxState::Refused,
            _ => OutboxState::Queued,
        }
    }

    /// In Japanese, for the desk.
    pub fn japanese(self) -> &'static str {
        match self {
            OutboxState::Queued => "送信待ち",
            OutboxState::Accepted => "中継サーバー受付済み",
            OutboxState::Refused => "中継サーバーが拒否",
        }
    }
}

/// One envelope in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    /// The envelope ID (SHA-256 of the ciphertext).
    pub envelope_id: String,
    /// The sealed file.
    pub file: String,
    /// The signed manifest.
    pub manifest: Manifest,
    /// The signed submission that is (re)submitted with it.
    #[serde(skip)]
    pub submission: SignedReceipt,
    /// Ciphertext size.
    pub size: u64,
    /// Where it stands.
    pub state: OutboxState,
    /// When it was sealed and queued.
    pub queued_at: String,
    /// Submission attempts so far.
    pub attempts: u32,
    /// When the last attempt was made.
    pub last_attempt_at: Option<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the relay accepted it (verified).
    pub accepted_at: Option<String>,
}

const COLUMNS: &str = "envelope_id, file, manifest, submission, size, state, queued_at, attempts, last_attempt_at, last_error, accepted_at";

impl LocalStore {
    /// Queue a sealed envelope and record it in its thread, in one
    /// transaction.
    pub async fn queue(
        &self,
        e: &OutboxEntry,
        thread: &ThreadPackage,
    ) -> Result<(), LocalStoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(&format!(
            "INSERT INTO outbox ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&e.envelope_id)
        .bind(&e.file)
        .bind(serde_json::to_string(&e.manifest).expect("json"))
        .bind(serde_json::to_string(&e.submission).expect("json"))
        .bind(e.size as i64)
        .bind(e.state.as_str())
        .bind(&e.queued_at)
        .bind(e.attempts as i64)
        .bind(&e.last_attempt_at)
        .bind(&e.last_error)
        .bind(&e.accepted_at)
        .execute(&mut *tx)
        .await?;
        super::threads::insert_thread_package(&mut *tx, thread).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The outbox, oldest first; only `state` if given.
    pub async fn outbox(
        &self,
        state: Option<OutboxState>,
    ) -> Result<Vec<OutboxEntry>, LocalStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE (? IS NULL OR state = ?) ORDER BY queued_at, envelope_id"
        ))
        .bind(state.map(|s| s.as_str()))
        .bind(state.map(|s| s.as_str()))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(OutboxEntry {
                    envelope_id: r.get(0),
                    file: r.get(1),
                    manifest: serde_json::from_str(r.get::<&str, _>(2)).ok()?,
                    submission: SignedReceipt::from_json(r.get::<&str, _>(3).as_bytes()).ok()?,
                    size: r.get::<i64, _>(4) as u64,
                    state: OutboxState::parse(r.get::<&str, _>(5)),
                    queued_at: r.get(6),
                    attempts: r.get::<i64, _>(7) as u32,
                    last_attempt_at: r.get(8),
                    last_error: r.get(9),
                    accepted_at: r.get(10),
                })
            })
            .collect())
    }

    /// Record a submission attempt: accepted (with the verified acceptance
    /// receipt), refused for good, or failed for now (stays queued).
    pub async fn outbox_attempt(
        &self,
        envelope_id: &str,
        state: OutboxState,
        error: Option<&str>,
        acceptance: Option<(&str, &SignedReceipt)>,
    ) -> Result<(), LocalStoreError> {
        sqlx::query(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, last_attempt_at = ?, last_error = ?, \
             accepted_at = COALESCE(?, accepted_at), acceptance = COALESCE(?, acceptance) WHERE envelope_id = ?",
        )
        .bind(state.as_str())
        .bind(crate::receipt::now_rfc3339())
        .bind(error)
        .bind(acceptance.map(|(at, _)| at.to_string()))
        .bind(acceptance.map(|(_, r)| serde_json::to_string(r).expect("json")))
        .bind(envelope_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forget an outbox entry (its file is removed by the caller).
    pub async fn outbox_remove(&self, envelope_id: &str) -> Result<(), LocalStoreError> {
        sqlx::query("DELETE FROM outbox WHERE envelope_id = ?")
            .bind(envelope_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
