//! The profile's local store (`PROFILE/store.db`, SQLite): what this
//! facility sent and received, and every receipt it verified.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::api::LoggedReceipt;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/client");

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    /// Database failure.
    #[error("local store: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration failure.
    #[error("local store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A sent package.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentRow {
    /// Envelope ID.
    pub envelope_id: String,
    /// Package ID.
    pub package_id: String,
    /// Thread.
    pub thread_id: String,
    /// Answered package.
    pub in_reply_to: Option<String>,
    /// Kind.
    pub kind: String,
    /// Recipients.
    pub recipients: Vec<String>,
    /// Ciphertext size.
    pub size: i64,
    /// When.
    pub created_at: String,
}

/// A received package (verified or rejected).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceivedRow {
    /// Envelope ID.
    pub envelope_id: String,
    /// Package ID (when verified).
    pub package_id: Option<String>,
    /// Thread (when verified).
    pub thread_id: Option<String>,
    /// Answered package.
    pub in_reply_to: Option<String>,
    /// Kind (when verified).
    pub kind: Option<String>,
    /// Sender (from the relay for rejected packages; from the verified signature otherwise).
    pub sender: String,
    /// Sender name.
    pub sender_name: Option<String>,
    /// verified / rejected.
    pub outcome: String,
    /// Reason code when rejected.
    pub reason: Option<String>,
    /// Folder (verified) or kept ciphertext (rejected).
    pub location: String,
    /// When.
    pub received_at: String,
}

/// The local store.
#[derive(Clone)]
pub struct LocalStore {
    pool: SqlitePool,
}

impl LocalStore {
    /// Open (create, migrate) `PROFILE/store.db`.
    pub async fn open(profile_dir: &Path) -> Result<LocalStore, LocalStoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(profile_dir.join("store.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(LocalStore { pool })
    }

    /// The connection pool, for the other tables of the client (threads).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Record a sent package.
    pub async fn add_sent(&self, r: &SentRow) -> Result<(), LocalStoreError> {
        sqlx::query("INSERT OR IGNORE INTO sent (envelope_id, package_id, thread_id, in_reply_to, kind, recipients, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&r.envelope_id)
            .bind(&r.package_id)
            .bind(&r.thread_id)
            .bind(&r.in_reply_to)
            .bind(&r.kind)
            .bind(r.recipients.join(","))
            .bind(r.size)
            .bind(&r.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sent packages, oldest first; one if `envelope` is given.
    pub async fn sent(&self, envelope: Option<&str>) -> Result<Vec<SentRow>, LocalStoreError> {
        let rows = sqlx::query("SELECT envelope_id, package_id, thread_id, in_reply_to, kind, recipients, size, created_at FROM sent WHERE (? IS NULL OR envelope_id = ?) ORDER BY created_at, envelope_id")
            .bind(envelope)
            .bind(envelope)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| SentRow {
                envelope_id: r.get(0),
                package_id: r.get(1),
                thread_id: r.get(2),
                in_reply_to: r.get(3),
                kind: r.get(4),
                recipients: r
                    .get::<String, _>(5)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                size: r.get(6),
                created_at: r.get(7),
            })
            .collect())
    }

    /// Record a received package.
    pub async fn add_received(&self, r: &ReceivedRow) -> Result<(), LocalStoreError> {
        sqlx::query("INSERT OR REPLACE INTO received (envelope_id, package_id, thread_id, in_reply_to, kind, sender, sender_name, outcome, reason, location, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&r.envelope_id)
            .bind(&r.package_id)
            .bind(&r.thread_id)
            .bind(&r.in_reply_to)
            .bind(&r.kind)
            .bind(&r.sender)
            .bind(&r.sender_name)
            .bind(&r.outcome)
            .bind(&r.reason)
            .bind(&r.location)
            .bind(&r.received_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Received packages, oldest first.
    pub async fn received(&self) -> Result<Vec<ReceivedRow>, LocalStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECEIVED_COLUMNS} FROM received ORDER BY received_at, envelope_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(received_row).collect())
    }

    /// The first verified arrival of an envelope, or of a package (by its
    /// signed package ID), if any.
    pub async fn verified_arrival(
        &self,
        envelope_id: Option<&str>,
        package_id: Option<&str>,
    ) -> Result<Option<ReceivedRow>, LocalStoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECEIVED_COLUMNS} FROM received WHERE outcome = 'verified' \
             AND (envelope_id = ? OR package_id = ?) ORDER BY received_at LIMIT 1"
        ))
        .bind(envelope_id)
        .bind(package_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(received_row))
    }

    /// Keep a verified receipt bundle.
    pub async fn add_bundle(
        &self,
        b: &crate::receipt::ReceiptBundle,
    ) -> Result<(), LocalStoreError> {
        let env = b.receipt.envelope_id();
        sqlx::query(
            "INSERT OR REPLACE INTO bundles (envelope_id, log_index, bundle) VALUES (?, ?, ?)",
        )
        .bind(env)
        .bind(b.log_index as i64)
        .bind(serde_json::to_string(b).expect("json"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Bundles of one envelope.
    pub async fn bundles(
        &self,
        envelope_id: &str,
    ) -> Result<Vec<crate::receipt::ReceiptBundle>, LocalStoreError> {
        let rows =
            sqlx::query("SELECT bundle FROM bundles WHERE envelope_id = ? ORDER BY log_index")
                .bind(envelope_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.get::<String, _>(0)).ok())
            .collect())
    }

    /// The newest checkpoint kept for `origin` (size, signed note).
    pub async fn latest_checkpoint(
        &self,
        origin: &str,
    ) -> Result<Option<(u64, String)>, LocalStoreError> {
        let row = sqlx::query(
            "SELECT size, note FROM checkpoints WHERE origin = ? ORDER BY size DESC LIMIT 1",
        )
        .bind(origin)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get(1))))
    }

    /// Keep a verified checkpoint.
    pub async fn add_checkpoint(
        &self,
        origin: &str,
        size: u64,
        note: &str,
    ) -> Result<(), LocalStoreError> {
        sqlx::query("INSERT OR IGNORE INTO checkpoints (origin, size, note) VALUES (?, ?, ?)")
            .bind(origin)
            .bind(size as i64)
            .bind(note)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keep two checkpoints that prove the relay misbehaved.
    pub async fn add_evidence(&self, what: &str, a: &str, b: &str) -> Result<(), LocalStoreError> {
        sqlx::query(
            "INSERT INTO evidence (found_at, what, checkpoint_a, checkpoint_b) VALUES (?, ?, ?, ?)",
        )
        .bind(crate::receipt::now_rfc3339())
        .bind(what)
        .bind(a)
        .bind(b)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Recorded evidence: (found_at, what, checkpoint_a, checkpoint_b).
    pub async fn evidence(&self) -> Result<Vec<(String, String, String, String)>, LocalStoreError> {
        let rows = sqlx::query(
            "SELECT found_at, what, checkpoint_a, checkpoint_b FROM evidence ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Keep a verified receipt.
    pub async fn add_receipt(
        &self,
        envelope_id: &str,
        r: &LoggedReceipt,
    ) -> Result<(), LocalStoreError> {
        sqlx::query("INSERT OR IGNORE INTO receipts (envelope_id, log_index, purpose, signer, body, signature) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(envelope_id)
            .bind(r.log_index as i64)
            .bind(r.receipt.purpose.as_str())
            .bind(&r.signer)
            .bind(&r.receipt.body)
            .bind(&r.receipt.signature)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

const RECEIVED_COLUMNS: &str = "envelope_id, package_id, thread_id, in_reply_to, kind, sender, sender_name, outcome, reason, location, received_at";

fn received_row(r: &sqlx::sqlite::SqliteRow) -> ReceivedRow {
    ReceivedRow {
        envelope_id: r.get(0),
        package_id: r.get(1),
        thread_id: r.get(2),
        in_reply_to: r.get(3),
        kind: r.get(4),
        sender: r.get(5),
        sender_name: r.get(6),
        outcome: r.get(7),
        reason: r.get(8),
        location: r.get(9),
        received_at: r.get(10),
    }
}
