//! The profile's local store (`PROFILE/store.db`, SQLite): what this
//! facility sent and received, and every receipt it verified.
//!
//! The file and its journal are private to this user (0600): they hold
//! patient names and referral purposes.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::threads::{DocFields, ThreadPackage};
use crate::api::LoggedReceipt;
use crate::receipt::SignedReceipt;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/client");

/// Hold while connecting to and migrating a local SQLite store: one such
/// opening at a time in this process. The desk opens the same store from
/// its background sync and a page at once; on a new file two openings
/// would race (switching to WAL answers "database is locked", and sqlx
/// takes no lock for SQLite migrations: "table already exists").
pub(crate) async fn one_open_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE_AT_A_TIME.lock().await
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    /// Database failure.
    #[error("local store: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration failure.
    #[error("local store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store file could not be created or made private.
    #[error("local store {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
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
        // The store holds patient names and document summaries: create it
        // 0600 before SQLite does (SQLite gives its WAL and shared-memory
        // files the database file's mode), and tighten an older one.
        let path = profile_dir.join("store.db");
        let private = |e: std::io::Error| LocalStoreError::Io {
            path: path.display().to_string(),
            source: e,
        };
        crate::files::private_file_options()
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(private)?;
        for p in [
            path.clone(),
            profile_dir.join("store.db-wal"),
            profile_dir.join("store.db-shm"),
        ] {
            crate::files::make_private(&p).map_err(private)?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let _one = one_open_at_a_time().await;
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

    /// Record a received package's outcome, its signed delivery receipt
    /// (not yet confirmed by the relay) and, for a verified package, its
    /// thread entry, all in one transaction. `staging` is the folder being
    /// renamed to `row.location`, kept until [`LocalStore::released`].
    pub async fn record_arrival(
        &self,
        row: &ReceivedRow,
        receipt: &SignedReceipt,
        staging: Option<&Path>,
        doc: Option<&DocFields>,
        thread: Option<&ThreadPackage>,
    ) -> Result<(), LocalStoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO received (envelope_id, package_id, thread_id, in_reply_to, kind, sender, sender_name, outcome, reason, location, received_at, receipt, staging, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&row.envelope_id)
            .bind(&row.package_id)
            .bind(&row.thread_id)
            .bind(&row.in_reply_to)
            .bind(&row.kind)
            .bind(&row.sender)
            .bind(&row.sender_name)
            .bind(&row.outcome)
            .bind(&row.reason)
            .bind(&row.location)
            .bind(&row.received_at)
            .bind(serde_json::to_string(receipt).expect("json"))
            .bind(staging.map(|p| p.display().to_string()))
            .bind(doc.map(|d| serde_json::to_string(d).expect("json")))
            .execute(&mut *tx)
            .await?;
        if let Some(t) = thread {
            super::threads::insert_thread_package(&mut *tx, t).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The final rename of a received package is done.
    pub async fn released(&self, envelope_id: &str) -> Result<(), LocalStoreError> {
        sqlx::query("UPDATE received SET staging = NULL WHERE envelope_id = ?")
            .bind(envelope_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Point an unreleased arrival at another destination (its own was
    /// taken meanwhile), before the staging folder is renamed there.
    pub async fn relocate(&self, envelope_id: &str, location: &str) -> Result<(), LocalStoreError> {
        sqlx::query(
            "UPDATE received SET location = ? WHERE envelope_id = ? AND staging IS NOT NULL",
        )
        .bind(location)
        .bind(envelope_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Arrivals whose final rename may not have happened: (envelope,
    /// staging folder, destination).
    pub async fn unreleased(&self) -> Result<Vec<(String, String, String)>, LocalStoreError> {
        let rows = sqlx::query(
            "SELECT envelope_id, staging, location FROM received WHERE staging IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Delivery receipts the relay has not confirmed yet: (envelope, receipt).
    pub async fn unconfirmed_receipts(
        &self,
    ) -> Result<Vec<(String, SignedReceipt)>, LocalStoreError> {
        let rows = sqlx::query(
            "SELECT envelope_id, receipt FROM received WHERE receipt IS NOT NULL AND receipt_confirmed_at IS NULL ORDER BY received_at, envelope_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let json: String = r.get(1);
                Some((r.get(0), SignedReceipt::from_json(json.as_bytes()).ok()?))
            })
            .collect())
    }

    /// The relay confirmed the delivery receipt of `envelope_id`
    /// (`error` None), or posting it failed and will be tried again.
    pub async fn receipt_posted(
        &self,
        envelope_id: &str,
        error: Option<&str>,
    ) -> Result<(), LocalStoreError> {
        let q = match error {
            None => "UPDATE received SET receipt_confirmed_at = ?, receipt_error = NULL WHERE envelope_id = ?",
            Some(_) => "UPDATE received SET receipt_error = ? WHERE envelope_id = ?",
        };
        sqlx::query(q)
            .bind(
                error
                    .map(str::to_string)
                    .unwrap_or_else(crate::receipt::now_rfc3339),
            )
            .bind(envelope_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The recorded arrival of one envelope (verified or rejected).
    pub async fn arrival(&self, envelope_id: &str) -> Result<Option<Arrival>, LocalStoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECEIVED_COLUMNS}, receipt_confirmed_at, receipt_error, summary, read_at FROM received WHERE envelope_id = ?"
        ))
        .bind(envelope_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(arrival))
    }

    /// Every recorded arrival, newest first.
    pub async fn arrivals(&self) -> Result<Vec<Arrival>, LocalStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECEIVED_COLUMNS}, receipt_confirmed_at, receipt_error, summary, read_at FROM received ORDER BY received_at DESC, envelope_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(arrival).collect())
    }

    /// Arrivals nobody at this facility has opened yet.
    pub async fn unread_count(&self) -> Result<u64, LocalStoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM received WHERE read_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Someone at this facility has opened the package (the desk's unread count).
    pub async fn mark_read(&self, envelope_id: &str) -> Result<(), LocalStoreError> {
        sqlx::query("UPDATE received SET read_at = ? WHERE envelope_id = ? AND read_at IS NULL")
            .bind(crate::receipt::now_rfc3339())
            .bind(envelope_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keep a directory certificate this facility verified (for sealing
    /// while the relay is unreachable, and the desk's recent addressees).
    pub async fn cache_certificate(
        &self,
        c: &crate::pki::CertInfo,
        used: bool,
    ) -> Result<(), LocalStoreError> {
        let now = crate::receipt::now_rfc3339();
        sqlx::query(
            "INSERT INTO directory (facility_id, name, kind, certificate, fetched_at, used_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (facility_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
             certificate = excluded.certificate, fetched_at = excluded.fetched_at, \
             used_at = COALESCE(excluded.used_at, directory.used_at)",
        )
        .bind(c.id.to_string())
        .bind(&c.name)
        .bind(c.kind.to_string())
        .bind(c.pem())
        .bind(&now)
        .bind(used.then_some(&now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A kept directory certificate (PEM), unverified: verify before use.
    pub async fn cached_certificate(
        &self,
        facility_id: &str,
    ) -> Result<Option<String>, LocalStoreError> {
        let row = sqlx::query("SELECT certificate FROM directory WHERE facility_id = ?")
            .bind(facility_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Kept directory certificates (PEM, unverified: verify before use)
    /// with whether each is a favourite and when it was last used;
    /// favourites first, then the most recently used.
    pub async fn cached_certificates(
        &self,
    ) -> Result<Vec<(String, bool, Option<String>)>, LocalStoreError> {
        let rows = sqlx::query(
            "SELECT certificate, favourite, used_at FROM directory \
             ORDER BY favourite DESC, used_at IS NULL, used_at DESC, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1) != 0, r.get(2)))
            .collect())
    }

    /// Mark or unmark a kept directory entry as a favourite addressee.
    pub async fn set_favourite(
        &self,
        facility_id: &str,
        favourite: bool,
    ) -> Result<bool, LocalStoreError> {
        let r = sqlx::query("UPDATE directory SET favourite = ? WHERE facility_id = ?")
            .bind(i64::from(favourite))
            .bind(facility_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Record a received package (without a receipt to post).
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

    /// The checkpoint keys learnt for the log `origin` (first tree size
    /// signed, verifier key), oldest first.
    pub async fn checkpoint_keys(
        &self,
        origin: &str,
    ) -> Result<Vec<(u64, String)>, LocalStoreError> {
        let rows = sqlx::query(
            "SELECT from_size, vkey FROM checkpoint_keys WHERE origin = ? ORDER BY from_size",
        )
        .bind(origin)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0) as u64, r.get(1)))
            .collect())
    }

    /// Keep a checkpoint key learnt from a verified key transition.
    pub async fn add_checkpoint_key(
        &self,
        origin: &str,
        from_size: u64,
        vkey: &str,
    ) -> Result<(), LocalStoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO checkpoint_keys (origin, from_size, vkey) VALUES (?, ?, ?)",
        )
        .bind(origin)
        .bind(from_size as i64)
        .bind(vkey)
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

/// A recorded arrival with where its delivery receipt stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Arrival {
    /// The recorded row.
    #[serde(flatten)]
    pub row: ReceivedRow,
    /// When the relay confirmed the delivery receipt (None: still to post).
    pub receipt_confirmed_at: Option<String>,
    /// Why the last attempt to post it failed.
    pub receipt_error: Option<String>,
    /// What the verified document says (patient, title, purpose).
    pub doc: Option<DocFields>,
    /// When someone at this facility opened it (the desk).
    pub read_at: Option<String>,
}

fn arrival(r: &sqlx::sqlite::SqliteRow) -> Arrival {
    let n = RECEIVED_COLUMNS.split(',').count();
    Arrival {
        row: received_row(r),
        receipt_confirmed_at: r.get(n),
        receipt_error: r.get(n + 1),
        doc: r
            .get::<Option<String>, _>(n + 2)
            .and_then(|s| serde_json::from_str(&s).ok()),
        read_at: r.get(n + 3),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The desk opens one store from its sync and its pages at once; the
    /// first migration must happen once, not race.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_store_opened_many_times_at_once_is_migrated_once() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let opens = (0..8).map(|_| LocalStore::open(dir.path()));
            for r in futures_util::future::join_all(opens).await {
                r.expect("opens");
            }
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_store_is_created_private_and_an_old_one_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        store.pool().close().await;
        assert_eq!(mode(&dir.path().join("store.db")), 0o600);
        for f in ["store.db", "store.db-wal", "store.db-shm"] {
            let p = dir.path().join(f);
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let store = LocalStore::open(dir.path()).await.unwrap();
        for f in ["store.db", "store.db-wal", "store.db-shm"] {
            let p = dir.path().join(f);
            if p.exists() {
                assert_eq!(mode(&p), 0o600, "{f}");
            }
        }
        store.pool().close().await;
    }
}
