//! The relay's storage: a SQL database (SQLite by default, PostgreSQL for
//! several instances) through sqlx's `Any` driver, and content-addressed
//! ciphertext in a [`BlobStore`] (see [`super::blobs`]), made durable
//! before anything refers to it.

use std::path::Path;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::blobs::{BlobError, BlobStore, FsBlobStore};
use super::sequencer::{self, Accepted, Appended, Job, LogConfig, Request, Response, Stats};

use crate::api::LoggedReceipt;
use crate::log::{merkle, Hash, NodeId};
use crate::receipt::key_transition::TransitionProof;
use crate::receipt::{Purpose, SignedReceipt, Submission};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration failure.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// File failure.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// Ciphertext storage failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Stored data that does not make sense (a missing node, a bad hash).
    #[error("storage is inconsistent: {0}")]
    Corrupt(String),
    /// A request for a proof or tile that cannot exist.
    #[error("{0}")]
    Invalid(String),
    /// The batch this write was in failed (the cause is in the relay's log).
    #[error("log batch failed: {message}")]
    Batch {
        /// Whether the database was out of reach (retry) or not.
        unavailable: bool,
        /// The cause.
        message: String,
    },
    /// Writes need the sequencer, which this store has not started.
    #[error("this store was opened without a log sequencer")]
    NoSequencer,
    /// The ciphertext store is not the one this database's ciphertext is in.
    #[error("{0}")]
    WrongBlobStore(String),
}

impl StoreError {
    /// Whether the failure is the database or the ciphertext storage
    /// being out of reach for a while, so that the request may be retried
    /// as is (answered 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => db_unavailable(e),
            StoreError::Blob(BlobError::Unavailable(_)) => true,
            StoreError::Batch { unavailable, .. } => *unavailable,
            _ => false,
        }
    }
}

/// Whether a database error is the database being out of reach for a
/// while (restart, fail-over, connection loss, contention) rather than a
/// bug: the request may be retried as is.
pub fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // PostgreSQL: connection exceptions (08), shutdown and start-up
            // (57P01-57P03), too many connections (53300), serialization
            // failure and deadlock (40001, 40P01); SQLite: busy, locked.
            c.starts_with("08")
                || matches!(
                    c.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "5" | "6" | "517"
                )
        }),
        // A connection that broke in the middle of a message.
        sqlx::Error::Protocol(m) => m.contains("unexpected end") || m.contains("connection"),
        _ => false,
    }
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The daily quota check, on every upload: answered from the index
/// `envelopes_sender_size` alone (migration 0006).
const SENDER_USAGE: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT), MIN(accepted_at) FROM envelopes WHERE sender = $1 AND accepted_at >= $2";

/// One stored envelope.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnvelopeRow {
    /// SHA-256 of the ciphertext.
    pub envelope_id: String,
    /// Sender facility ID.
    pub sender: String,
    /// Ciphertext size.
    pub size: i64,
    /// Acceptance time (unix seconds).
    pub accepted_at: i64,
    /// Whether the ciphertext was deleted after retention.
    pub blob_deleted: bool,
}

/// The database and the blob store, and the queue of the log's sequencer
/// (every write that appends to the log goes through it; see
/// [`super::sequencer`]).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    blobs: std::sync::Arc<dyn BlobStore>,
    postgres: bool,
    log: Option<tokio::sync::mpsc::Sender<Job>>,
    stats: std::sync::Arc<Stats>,
}

pub(crate) fn hash_hex(h: &Hash) -> String {
    hex::encode(h)
}

fn hash_from_hex(s: &str) -> Result<Hash, StoreError> {
    let v =
        hex::decode(s).map_err(|_| StoreError::Corrupt(format!("stored hash {s:?} is not hex")))?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Store {
    /// Open (and migrate) the database at `url`, or `DATA/relay.db` when
    /// `url` is `None`; ciphertext lives under `DATA/blobs`.
    pub async fn open(data: &Path, url: Option<&str>) -> Result<Store, StoreError> {
        let blobs = FsBlobStore::open(&data.join("blobs"))?;
        Self::open_with(data, url, std::sync::Arc::new(blobs)).await
    }

    /// Open (and migrate) the database at `url` (or `DATA/relay.db`), with
    /// ciphertext in `blobs`. Refuses a blob store that is not the one the
    /// database's ciphertext is in ([`StoreError::WrongBlobStore`]).
    pub async fn open_with(
        data: &Path,
        url: Option<&str>,
        blobs: std::sync::Arc<dyn BlobStore>,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        std::fs::create_dir_all(data)?;
        let (url, sqlite) = match url {
            Some(u) => (u.to_string(), u.starts_with("sqlite:")),
            None => (
                format!("sqlite://{}?mode=rwc", data.join("relay.db").display()),
                true,
            ),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            // A PostgreSQL connection can die with its server, and is
            // checked before each use; an SQLite connection is a file
            // opened in this process, and the check would only cost the
            // sequencer a trip to the connection's thread per batch.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                        // Sorts and temporary b-trees in memory: on disk,
                        // SQLite would create (and at once delete) a file
                        // in /var/tmp for them, about once per batch.
                        conn.execute("PRAGMA temp_store=MEMORY").await?;
                        // 8 MiB of pages per connection (SQLite's default
                        // is 2 MiB), for the log's tree as it grows; in the
                        // load bench the reads per upload did not change
                        // measurably (about 12 `pread`s either way).
                        conn.execute("PRAGMA cache_size=-8192").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if sqlite {
            SQLITE.run(&pool).await?;
        } else {
            POSTGRES.run(&pool).await?;
        }
        check_blob_store(&pool, &*blobs).await?;
        Ok(Store {
            pool,
            blobs,
            postgres: !sqlite,
            log: None,
            stats: Default::default(),
        })
    }

    /// Start the log's sequencer (writes need it), with the blob store in
    /// use now. The sequencer stops when the last clone of this store is
    /// dropped.
    pub fn start_log(mut self, config: LogConfig) -> Store {
        self.log = Some(sequencer::start(
            self.pool.clone(),
            self.blobs.clone(),
            self.postgres,
            config,
            self.stats.clone(),
        ));
        self
    }

    /// The sequencer's counters (batches, jobs, leaves, statements).
    pub fn log_stats(&self) -> sequencer::StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Queue a write and wait for its batch to commit.
    async fn sequence(&self, request: Request) -> Result<Response, StoreError> {
        let log = self.log.as_ref().ok_or(StoreError::NoSequencer)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        log.send(Job { request, reply })
            .await
            .map_err(|_| StoreError::Corrupt("the log sequencer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the log sequencer stopped".into()))?
    }

    /// The database pool (for health checks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The ciphertext store.
    pub fn blobs(&self) -> &dyn BlobStore {
        &*self.blobs
    }

    /// Keep ciphertext in `blobs` instead of the folder under `DATA`
    /// (before [`Store::start_log`]).
    pub fn with_blobs(mut self, blobs: std::sync::Arc<dyn BlobStore>) -> Store {
        self.blobs = blobs;
        self
    }

    // --- the transparency log ---

    /// Delete committed ciphertext that no envelope refers to and that was
    /// last written more than `min_age` ago: the left-overs of uploads whose
    /// process died between storing the blob and accepting it. Each
    /// candidate is checked and deleted under the sequencer lock (the
    /// in-process append lock, and on PostgreSQL the advisory lock), which
    /// `accept` also holds when it checks that its blob is still there; so
    /// a retry that rewrites the same blob either commits its envelope
    /// first (the blob is kept) or finds it gone and fails cleanly.
    /// Returns how many blobs were deleted.
    pub async fn reclaim_orphans(&self, min_age: std::time::Duration) -> Result<usize, StoreError> {
        let candidates = self.blobs.committed_before(min_age).await?;
        let mut deleted = 0;
        for chunk in candidates.chunks(256) {
            if let Response::Reclaimed(n) = self
                .sequence(Request::Reclaim {
                    ids: chunk.to_vec(),
                })
                .await?
            {
                deleted += n;
            }
        }
        Ok(deleted)
    }

    /// The current log size.
    pub async fn log_size(&self) -> Result<u64, StoreError> {
        let size: i64 = sqlx::query("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(size as u64)
    }

    /// The newest signed checkpoint (size and note), if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row = sqlx::query("SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1))))
    }

    /// Stored node hashes, in the order asked.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        read_nodes(&mut conn, ids).await
    }

    /// Log entries `[start, end)` (exact text).
    ///
    /// A whole tile in one row: the entries joined by newlines, which the
    /// relay's compact JSON never holds (streaming 256 rows one by one
    /// through the driver cost more than the rest of serving the tile).
    /// Should an entry hold one after all, the joined text splits into more
    /// pieces than there are rows, and the rows are read one by one.
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<String>, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), string_agg(entry, '\n' ORDER BY idx) FROM log_entries WHERE idx >= $1 AND idx < $2",
        )
        .bind(start as i64)
        .bind(end as i64)
        .fetch_one(&self.pool)
        .await?;
        let count = row.get::<i64, _>(0) as usize;
        let Some(joined) = row.get::<Option<String>, _>(1) else {
            return Ok(Vec::new());
        };
        if joined.split('\n').count() == count {
            return Ok(joined.split('\n').map(str::to_string).collect());
        }
        let rows = sqlx::query(
            "SELECT idx, entry FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .bind(start as i64)
        .bind(end as i64)
        .fetch_all(&self.pool)
        .await?;
        // Served as stored: a missing or altered entry is for auditors to catch.
        Ok(rows.iter().map(|r| r.get::<String, _>(1)).collect())
    }

    /// The directory leaves (certificates and CRLs published) with index
    /// in `[from, size)`, at most `limit`, in log order: (index, exact
    /// entry text).
    pub async fn directory_leaves(
        &self,
        from: u64,
        size: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.idx, e.entry FROM log_directory d JOIN log_entries e ON e.idx = d.idx \
             WHERE d.idx >= $1 AND d.idx < $2 ORDER BY d.idx LIMIT $3",
        )
        .bind(from.min(i64::MAX as u64) as i64)
        .bind(size.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1)))
            .collect())
    }

    /// Inclusion proof of `index` in the tree of `size`.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        let plan =
            merkle::inclusion_plan(index, size).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let hashes = self.nodes(plan.nodes()).await?;
        plan.assemble(&hashes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Consistency proof from `size1` to `size2`.
    pub async fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, StoreError> {
        let plan = merkle::consistency_plan(size1, size2)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let hashes = self.nodes(plan.nodes()).await?;
        plan.assemble(&hashes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    // --- directory ---

    /// Publish (insert or replace) a facility's certificate, and log it.
    /// Publishing the certificate already published changes nothing and
    /// logs nothing (`None`).
    pub async fn directory_put(
        &self,
        id: &str,
        kind: &str,
        name: &str,
        pem: &str,
        fingerprint: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let entry = sequencer::certificate_entry(id, pem);
        if entry.len() > crate::log::tiles::MAX_ENTRY_BYTES {
            return Err(StoreError::Invalid("log entry too large".into()));
        }
        appended(
            self.sequence(Request::Directory {
                facility_id: id.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
                pem: pem.to_string(),
                fingerprint: fingerprint.to_string(),
                entry,
            })
            .await?,
        )
    }

    /// One facility's certificate (PEM).
    pub async fn directory_get(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT cert_pem FROM directory WHERE facility_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Every published certificate (PEM), by ID.
    pub async fn directory_all(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT cert_pem FROM directory ORDER BY facility_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    // --- CRL ---

    /// The current CRL (number as decimal text, PEM).
    pub async fn crl_get(&self) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT crl_number, pem FROM crl WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))))
    }

    /// Replace the current CRL, and log it, if `number` is newer than the
    /// stored one (else `None`, nothing changed).
    pub async fn crl_put(&self, number: &str, pem: &str) -> Result<Option<Appended>, StoreError> {
        let entry = sequencer::crl_entry(number, pem);
        if entry.len() > crate::log::tiles::MAX_ENTRY_BYTES {
            return Err(StoreError::Invalid(
                "this CRL is too large to be logged (at most 64 KiB)".into(),
            ));
        }
        appended(
            self.sequence(Request::Crl {
                number: number.to_string(),
                pem: pem.to_string(),
                entry,
            })
            .await?,
        )
    }

    // --- checkpoint keys (docs/LOG.md §8) ---

    /// Append the key-transition `entry` announcing `new_key` (a verifier
    /// key) alone in its batch, checkpointed by the sequencer's key (the
    /// old one): the announcement. The store's sequencer must sign with
    /// the log's current key ([`sequencer::LogConfig::key_from_size`]).
    pub async fn key_transition(&self, entry: &str, new_key: &str) -> Result<Appended, StoreError> {
        appended(
            self.sequence(Request::KeyTransition {
                entry: entry.to_string(),
                new_key: new_key.to_string(),
            })
            .await?,
        )?
        .ok_or_else(|| StoreError::Corrupt("the key transition was not appended".into()))
    }

    /// Every key transition of the log, oldest first, each with its
    /// announcement checkpoint (as stored: cosigned when witnesses
    /// cosigned it) and the entry's inclusion proof in it.
    pub async fn key_transitions(&self) -> Result<Vec<TransitionProof>, StoreError> {
        key_transitions(&self.pool).await
    }

    // --- envelopes ---

    fn envelope_from(r: &AnyRow) -> EnvelopeRow {
        EnvelopeRow {
            envelope_id: r.get(0),
            sender: r.get(1),
            size: r.get(2),
            accepted_at: r.get(3),
            blob_deleted: r.get::<i64, _>(4) != 0,
        }
    }

    /// An envelope by ID.
    pub async fn envelope(&self, envelope_id: &str) -> Result<Option<EnvelopeRow>, StoreError> {
        let row = sqlx::query("SELECT envelope_id, sender, size, accepted_at, blob_deleted FROM envelopes WHERE envelope_id = $1")
            .bind(envelope_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Self::envelope_from))
    }

    /// Recipients of an envelope and their state.
    pub async fn recipients(&self, envelope_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT recipient, state FROM envelope_recipients WHERE envelope_id = $1 ORDER BY recipient")
            .bind(envelope_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Record a verified submission and sign the acceptance: the envelope,
    /// its recipients, the submission and the acceptance (two leaves) are
    /// appended in the next batch. The ciphertext must already be durable
    /// in the blob store. Returns once the batch has committed.
    pub async fn accept(
        &self,
        submission: &SignedReceipt,
        sub: &Submission,
    ) -> Result<Accepted, StoreError> {
        match self
            .sequence(Request::Accept {
                submission: submission.clone(),
                sub: sub.clone(),
            })
            .await?
        {
            Response::Accepted(a) => Ok(a),
            _ => Err(StoreError::Corrupt(
                "unexpected answer to an acceptance".into(),
            )),
        }
    }

    /// Envelopes waiting for `recipient`.
    pub async fn inbox(&self, recipient: &str) -> Result<Vec<EnvelopeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.envelope_id, e.sender, e.size, e.accepted_at, e.blob_deleted FROM envelopes e \
             JOIN envelope_recipients r ON r.envelope_id = e.envelope_id \
             WHERE r.recipient = $1 AND r.state = 'pending' AND e.blob_deleted = 0 ORDER BY e.accepted_at, e.envelope_id",
        )
        .bind(recipient)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Self::envelope_from).collect())
    }

    /// Envelopes sent by `sender`.
    pub async fn sent(&self, sender: &str) -> Result<Vec<EnvelopeRow>, StoreError> {
        let rows = sqlx::query("SELECT envelope_id, sender, size, accepted_at, blob_deleted FROM envelopes WHERE sender = $1 ORDER BY accepted_at, envelope_id")
            .bind(sender)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Self::envelope_from).collect())
    }

    /// Note that `recipient` downloads the envelope (the first time is
    /// kept). False when the recipient is not pending any more (an outcome
    /// is recorded: the ciphertext is no longer served to it) or is not a
    /// recipient at all.
    pub async fn mark_fetched(
        &self,
        envelope_id: &str,
        recipient: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE envelope_recipients SET fetched_at = COALESCE(fetched_at, $1) WHERE envelope_id = $2 AND recipient = $3 AND state = 'pending'")
            .bind(now())
            .bind(envelope_id)
            .bind(recipient)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Record a recipient's verified delivery receipt (`state` delivered or
    /// rejected) and log it; `None` if an outcome was already recorded for
    /// this recipient (the first outcome stands).
    pub async fn add_outcome(
        &self,
        envelope_id: &str,
        recipient: &str,
        state: &'static str,
        r: &SignedReceipt,
    ) -> Result<Option<Appended>, StoreError> {
        appended(
            self.sequence(Request::Outcome {
                envelope_id: envelope_id.to_string(),
                recipient: recipient.to_string(),
                state,
                receipt: r.clone(),
            })
            .await?,
        )
    }

    /// Expire a recipient that is still pending: the relay signs an expiry
    /// receipt (saying whether and when that recipient downloaded the
    /// ciphertext) and logs it; `None` if an outcome was recorded first.
    pub async fn expire(
        &self,
        envelope_id: &str,
        recipient: &str,
    ) -> Result<Option<Appended>, StoreError> {
        appended(
            self.sequence(Request::Expire {
                envelope_id: envelope_id.to_string(),
                recipient: recipient.to_string(),
            })
            .await?,
        )
    }

    /// How many envelopes `sender` had accepted since `since` (unix
    /// seconds), their total size, and the oldest acceptance among them.
    pub async fn sender_usage(
        &self,
        sender: &str,
        since: i64,
    ) -> Result<(u64, u64, Option<i64>), StoreError> {
        let row = sqlx::query(SENDER_USAGE)
            .bind(sender)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        let count: i64 = row.try_get(0)?;
        let bytes: i64 = row.try_get(1)?;
        let oldest: Option<i64> = row.try_get(2)?;
        Ok((count as u64, bytes as u64, oldest))
    }

    /// All receipts of an envelope, in log order.
    pub async fn receipts(&self, envelope_id: &str) -> Result<Vec<LoggedReceipt>, StoreError> {
        let rows = sqlx::query("SELECT log_index, signer, purpose, body, signature FROM receipts WHERE envelope_id = $1 ORDER BY log_index")
            .bind(envelope_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::receipt_from).collect()
    }

    /// Receipts from log index `from` on, at most `limit`.
    pub async fn receipts_since(
        &self,
        from: u64,
        limit: i64,
    ) -> Result<Vec<LoggedReceipt>, StoreError> {
        let rows = sqlx::query("SELECT log_index, signer, purpose, body, signature FROM receipts WHERE log_index >= $1 ORDER BY log_index LIMIT $2")
            .bind(from as i64)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::receipt_from).collect()
    }

    fn receipt_from(r: &AnyRow) -> Result<LoggedReceipt, StoreError> {
        let purpose: String = r.get(2);
        let purpose = match purpose.as_str() {
            "submission" => Purpose::Submission,
            "acceptance" => Purpose::Acceptance,
            "delivery" => Purpose::Delivery,
            "expiry" => Purpose::Expiry,
            other => {
                return Err(StoreError::Db(sqlx::Error::Protocol(format!(
                    "unknown receipt purpose {other}"
                ))))
            }
        };
        Ok(LoggedReceipt {
            log_index: r.get::<i64, _>(0) as u64,
            signer: r.get(1),
            receipt: SignedReceipt {
                purpose,
                body: r.get(3),
                signature: r.get(4),
            },
        })
    }

    /// Pending (envelope, recipient) pairs whose envelope may expire at
    /// `now`: its `expires_at` (the acceptance time plus the expiry
    /// announced in the acceptance) is past; envelopes accepted before
    /// that column existed use `accepted_at + default_after`.
    pub async fn overdue(
        &self,
        now: i64,
        default_after: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.envelope_id, r.recipient FROM envelope_recipients r JOIN envelopes e ON e.envelope_id = r.envelope_id \
             WHERE r.state = 'pending' AND COALESCE(e.expires_at, e.accepted_at + $2) < $1 ORDER BY e.accepted_at",
        )
        .bind(now)
        .bind(default_after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Envelopes whose every recipient has an outcome older than `cutoff`
    /// and whose ciphertext is still stored.
    pub async fn finished_before(&self, cutoff: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.envelope_id FROM envelopes e WHERE e.blob_deleted = 0 AND NOT EXISTS \
             (SELECT 1 FROM envelope_recipients r WHERE r.envelope_id = e.envelope_id AND (r.state = 'pending' OR r.outcome_at >= $1))",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Delete a finished envelope's ciphertext (receipts stay).
    pub async fn delete_blob(&self, envelope_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE envelopes SET blob_deleted = 1 WHERE envelope_id = $1")
            .bind(envelope_id)
            .execute(&self.pool)
            .await?;
        Ok(self.blobs.delete(envelope_id).await?)
    }
}

/// Check that `blobs` is the store this database's ciphertext is in: the
/// database records the identity of the first blob store it was used
/// with, and every later start compares. (A database from before this
/// record adopts the store it starts with, unless that store lacks the
/// newest envelope's ciphertext.)
async fn check_blob_store(pool: &AnyPool, blobs: &dyn BlobStore) -> Result<(), StoreError> {
    let marker = blobs.identity().await?;
    let recorded = |pool: &AnyPool| {
        let pool = pool.clone();
        async move {
            Ok::<_, StoreError>(
                sqlx::query("SELECT value FROM relay_meta WHERE key = 'blob_store_id'")
                    .fetch_optional(&pool)
                    .await?
                    .map(|r| r.get::<String, _>(0)),
            )
        }
    };
    if recorded(pool).await?.is_none() {
        let newest = sqlx::query(
            "SELECT envelope_id FROM envelopes WHERE blob_deleted = 0 ORDER BY accepted_at DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?
        .map(|r| r.get::<String, _>(0));
        if let Some(id) = newest {
            if !blobs.exists(&id).await? {
                return Err(StoreError::WrongBlobStore(format!(
                    "the ciphertext store {} does not hold the ciphertext of this database's \
                     newest envelope {id}: every relay instance on one database must use the \
                     store that holds its ciphertext (see docs/DEPLOY.md)",
                    blobs.describe()
                )));
            }
        }
        sqlx::query(
            "INSERT INTO relay_meta (key, value) VALUES ('blob_store_id', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(marker.clone())
        .execute(pool)
        .await?;
    }
    let db = recorded(pool).await?.unwrap_or_default();
    if db != marker {
        return Err(StoreError::WrongBlobStore(format!(
            "the ciphertext store {} (identity {marker}) is not the one this database's \
             envelopes are stored in (identity {db}): every relay instance on one database \
             must use the same ciphertext store — the same shared folder for --data, or the \
             same bucket. Point this instance at it (docs/DEPLOY.md); nothing was changed",
            blobs.describe()
        )));
    }
    Ok(())
}

/// The leaf of a write that appends at most one.
fn appended(r: Response) -> Result<Option<Appended>, StoreError> {
    match r {
        Response::Appended(a) => Ok(a),
        _ => Err(StoreError::Corrupt(
            "unexpected answer to a log write".into(),
        )),
    }
}

/// Every key transition of the log in `pool`, oldest first (see
/// [`Store::key_transitions`]).
pub(crate) async fn key_transitions(pool: &AnyPool) -> Result<Vec<TransitionProof>, StoreError> {
    let rows = sqlx::query(
        "SELECT t.idx, e.entry, c.note FROM log_key_transitions t \
         JOIN log_entries e ON e.idx = t.idx \
         JOIN log_checkpoints c ON c.size = t.idx + 1 ORDER BY t.idx",
    )
    .fetch_all(pool)
    .await?;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM log_key_transitions")
        .fetch_one(pool)
        .await?
        .get(0);
    if n as usize != rows.len() {
        return Err(StoreError::Corrupt(
            "a key transition lacks its entry or its announcement checkpoint".into(),
        ));
    }
    let mut conn = pool.acquire().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let idx = r.get::<i64, _>(0) as u64;
        let plan =
            merkle::inclusion_plan(idx, idx + 1).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let hashes = read_nodes(&mut conn, plan.nodes()).await?;
        out.push(TransitionProof {
            log_index: idx,
            entry: r.get(1),
            checkpoint: r.get(2),
            inclusion: plan
                .assemble(&hashes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        });
    }
    Ok(out)
}

/// Read stored node hashes inside a connection or transaction, in order.
pub(crate) async fn read_nodes(
    conn: &mut sqlx::AnyConnection,
    ids: &[NodeId],
) -> Result<Vec<Hash>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = std::collections::HashMap::new();
    for chunk in ids.chunks(64) {
        let mut sql = String::from("SELECT level, idx, hash FROM log_nodes WHERE ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push_str(&format!(
                "(level = ${} AND idx = ${})",
                2 * i + 1,
                2 * i + 2
            ));
        }
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(i64::from(id.level)).bind(id.index as i64);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let level: i64 = row.get(0);
            let idx: i64 = row.get(1);
            let hash: String = row.get(2);
            found.insert((level as u8, idx as u64), hash_from_hex(&hash)?);
        }
    }
    ids.iter()
        .map(|id| {
            found.get(&(id.level, id.index)).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("tree node ({}, {}) is missing", id.level, id.index))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection of the relay's SQLite pool keeps temporary
    /// b-trees in memory (no file in /var/tmp per batch) and the larger
    /// page cache.
    #[tokio::test]
    async fn sqlite_connections_keep_temporary_btrees_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut conn = store.pool().acquire().await.unwrap();
            let temp: i64 = sqlx::query_scalar("PRAGMA temp_store")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!((temp, cache), (2, -8192), "temp_store=MEMORY is 2");
            held.push(conn);
        }
    }

    /// The quota check reads the sender index alone, not a table row per
    /// envelope of the day.
    #[tokio::test]
    async fn the_quota_check_reads_only_the_sender_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {SENDER_USAGE}"))
            .bind("F0001")
            .bind(0i64)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>(3).unwrap())
            .collect();
        assert_eq!(
            plan,
            ["SEARCH envelopes USING COVERING INDEX envelopes_sender_size (sender=? AND accepted_at>?)"]
        );
    }
}
