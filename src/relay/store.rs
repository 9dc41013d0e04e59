//! The relay's storage: a SQL database (SQLite by default, PostgreSQL for
//! several instances) through sqlx's `Any` driver, and content-addressed
//! ciphertext in a [`BlobStore`] (see [`super::blobs`]), made durable
//! before anything refers to it.

use std::path::Path;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::blobs::{BlobError, BlobStore, FsBlobStore};

use crate::api::LoggedReceipt;
use crate::keys::SigningKey;
use crate::log::{merkle, Checkpoint, CompactTree, Hash, NodeId, Signer};
use crate::receipt::{self, Acceptance, LogEntry, Purpose, SignedReceipt, Submission};

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
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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

/// The database and the blob store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    blobs: std::sync::Arc<dyn BlobStore>,
    postgres: bool,
    /// Serializes appends in this process and caches the append state.
    log: std::sync::Arc<tokio::sync::Mutex<Option<CompactTree>>>,
}

/// Who signs checkpoints, and the log's origin line (also the key name).
pub struct LogSigner<'a> {
    /// The checkpoint origin, e.g. `localhost/renkei/relay-1`.
    pub origin: &'a str,
    /// The relay's key.
    pub key: &'a SigningKey,
}

/// The PostgreSQL advisory lock that makes one sequencer at a time.
const SEQUENCER_LOCK: i64 = 7_046_431_728;

fn hash_hex(h: &Hash) -> String {
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
        sqlx::any::install_default_drivers();
        let blobs = FsBlobStore::open(&data.join("blobs"))?;
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
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
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
        Ok(Store {
            pool,
            blobs: std::sync::Arc::new(blobs),
            postgres: !sqlite,
            log: Default::default(),
        })
    }

    /// The database pool (for health checks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The ciphertext store.
    pub fn blobs(&self) -> &dyn BlobStore {
        &*self.blobs
    }

    /// Keep ciphertext in `blobs` instead of the folder under `DATA`.
    pub fn with_blobs(mut self, blobs: std::sync::Arc<dyn BlobStore>) -> Store {
        self.blobs = blobs;
        self
    }

    // --- the transparency log ---

    /// Append one entry inside `tx`, under the sequencer lock: store the
    /// entry, the nodes it completes, and a signed checkpoint. Returns the
    /// leaf index and the new append state (cache it only after commit).
    async fn append(
        &self,
        tx: &mut sqlx::AnyConnection,
        cached: &Option<CompactTree>,
        entry: &LogEntry,
        signer: &LogSigner<'_>,
    ) -> Result<(u64, CompactTree), StoreError> {
        if self.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SEQUENCER_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let size: i64 = sqlx::query("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let size = size as u64;
        let mut tree = match cached {
            Some(t) if t.size() == size => t.clone(),
            _ => {
                let border = read_nodes(&mut *tx, merkle::root_plan(size).nodes()).await?;
                CompactTree::from_border(size, border)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
        };
        let text = entry.to_text();
        if text.len() > crate::log::tiles::MAX_ENTRY_BYTES {
            return Err(StoreError::Invalid("log entry too large".into()));
        }
        let nodes = tree
            .append_entry(text.as_bytes())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO log_entries (idx, entry) VALUES ($1, $2)")
            .bind(size as i64)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
        for (id, hash) in nodes {
            sqlx::query("INSERT INTO log_nodes (level, idx, hash) VALUES ($1, $2, $3)")
                .bind(i64::from(id.level))
                .bind(id.index as i64)
                .bind(hash_hex(&hash))
                .execute(&mut *tx)
                .await?;
        }
        let signer_note = Signer::ed25519(signer.origin, signer.key)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let note = Checkpoint::new(signer.origin, tree.size(), tree.root())
            .and_then(|c| c.sign(&[&signer_note]))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO log_checkpoints (size, note) VALUES ($1, $2)")
            .bind(tree.size() as i64)
            .bind(&note)
            .execute(&mut *tx)
            .await?;
        Ok((size, tree))
    }

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
            let mut txn = self.pool.begin().await?;
            let _guard = self.log.lock().await;
            if self.postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SEQUENCER_LOCK)
                    .execute(&mut *txn)
                    .await?;
            }
            for id in chunk {
                let referenced = sqlx::query("SELECT 1 FROM envelopes WHERE envelope_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *txn)
                    .await?
                    .is_some();
                if !referenced {
                    self.blobs.delete(id).await?;
                    tracing::info!(envelope = %id, "removed unreferenced ciphertext");
                    deleted += 1;
                }
            }
            txn.commit().await?;
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
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<String>, StoreError> {
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
    #[allow(clippy::too_many_arguments)]
    pub async fn directory_put(
        &self,
        id: &str,
        kind: &str,
        name: &str,
        pem: &str,
        fingerprint: &str,
        signer: &LogSigner<'_>,
    ) -> Result<u64, StoreError> {
        let (id, kind, name, pem, fingerprint) = (
            id.to_string(),
            kind.to_string(),
            name.to_string(),
            pem.to_string(),
            fingerprint.to_string(),
        );
        // Connection first, then the append lock (as in `accept`).
        let mut txn = self.pool.begin().await?;
        let mut guard = self.log.lock().await;
        let mut tree_state = guard.clone();
        let result = async {
            let (st, tx, tree) = (self, &mut *txn, &mut tree_state);
                sqlx::query("DELETE FROM directory WHERE facility_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO directory (facility_id, kind, name, cert_pem, fingerprint, published_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&id)
                    .bind(&kind)
                    .bind(&name)
                    .bind(&pem)
                    .bind(&fingerprint)
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
                let entry = LogEntry::Certificate { facility_id: id, certificate: pem, published_at: receipt::now_rfc3339() };
                let (idx, t) = st.append(tx, tree, &entry, signer).await?;
                *tree = Some(t);
                Ok(idx)
        }
        .await;
        finish(txn, &mut guard, tree_state, result).await
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

    /// Replace the current CRL, and log it.
    pub async fn crl_put(
        &self,
        number: &str,
        pem: &str,
        signer: &LogSigner<'_>,
    ) -> Result<u64, StoreError> {
        let (number, pem) = (number.to_string(), pem.to_string());
        // Connection first, then the append lock (as in `accept`).
        let mut txn = self.pool.begin().await?;
        let mut guard = self.log.lock().await;
        let mut tree_state = guard.clone();
        let result = async {
            let (st, tx, tree) = (self, &mut *txn, &mut tree_state);
            sqlx::query("DELETE FROM crl WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO crl (id, crl_number, pem, published_at) VALUES (1, $1, $2, $3)",
            )
            .bind(&number)
            .bind(&pem)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            let entry = LogEntry::Crl {
                crl_number: number,
                crl: pem,
                published_at: receipt::now_rfc3339(),
            };
            let (idx, t) = st.append(tx, tree, &entry, signer).await?;
            *tree = Some(t);
            Ok(idx)
        }
        .await;
        finish(txn, &mut guard, tree_state, result).await
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

    /// Store a verified submission and sign the acceptance, in one
    /// transaction that also appends both receipts to the log. The
    /// ciphertext must already be durable. Returns the acceptance receipt.
    pub async fn accept(
        &self,
        submission: &SignedReceipt,
        sub: &Submission,
        relay_id: &str,
        signer: &LogSigner<'_>,
    ) -> Result<SignedReceipt, StoreError> {
        let (submission, sub, relay_id) = (submission.clone(), sub.clone(), relay_id.to_string());
        // Connection first, then the append lock: while the database is
        // out of reach each upload gives up after its own acquire timeout
        // instead of queueing behind the others' timeouts.
        let mut txn = self.pool.begin().await?;
        let mut guard = self.log.lock().await;
        let mut tree_state = guard.clone();
        let result = async {
            let (st, tx, tree) = (self, &mut *txn, &mut tree_state);
                let t = now();
                sqlx::query("INSERT INTO envelopes (envelope_id, sender, size, accepted_at, blob_deleted) VALUES ($1, $2, $3, $4, 0)")
                    .bind(&sub.envelope_id)
                    .bind(sub.sender.as_str())
                    .bind(sub.size as i64)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
                for r in &sub.recipients {
                    sqlx::query("INSERT INTO envelope_recipients (envelope_id, recipient, state) VALUES ($1, $2, 'pending')")
                        .bind(&sub.envelope_id)
                        .bind(r.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                let sub_idx = st.append_receipt(tx, tree, &sub.envelope_id, sub.sender.as_str(), &submission, signer).await?;
                let acceptance = SignedReceipt::sign(
                    Purpose::Acceptance,
                    &Acceptance {
                        envelope_id: sub.envelope_id.clone(),
                        submission_sha256: submission.body_sha256(),
                        relay: relay_id.clone(),
                        accepted_at: receipt::now_rfc3339(),
                        log_index: sub_idx,
                    },
                    signer.key,
                );
                st.append_receipt(tx, tree, &sub.envelope_id, &relay_id, &acceptance, signer).await?;
                // Under the sequencer lock, which the orphan collector also
                // takes: the ciphertext must still be there (a collector may
                // have removed the unreferenced blob of an earlier, crashed
                // attempt just before this retry rewrote it). If not, nothing
                // is accepted and the client retries.
                if !st.blobs.exists(&sub.envelope_id).await? {
                    return Err(StoreError::Blob(BlobError::Unavailable(
                        std::io::Error::other("the ciphertext was removed while it was being accepted"),
                    )));
                }
                Ok(acceptance)
        }
        .await;
        finish(txn, &mut guard, tree_state, result).await
    }

    async fn append_receipt(
        &self,
        tx: &mut sqlx::AnyConnection,
        tree: &mut Option<CompactTree>,
        envelope_id: &str,
        signer_id: &str,
        r: &SignedReceipt,
        signer: &LogSigner<'_>,
    ) -> Result<u64, StoreError> {
        let entry = LogEntry::Receipt {
            signer: signer_id.to_string(),
            receipt: r.clone(),
        };
        let (idx, t) = self.append(tx, tree, &entry, signer).await?;
        *tree = Some(t);
        sqlx::query("INSERT INTO receipts (envelope_id, purpose, signer, body, signature, created_at, log_index) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(envelope_id)
            .bind(r.purpose.as_str())
            .bind(signer_id)
            .bind(&r.body)
            .bind(&r.signature)
            .bind(now())
            .bind(idx as i64)
            .execute(&mut *tx)
            .await?;
        Ok(idx)
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

    /// Note that `recipient` downloaded the envelope.
    pub async fn mark_fetched(&self, envelope_id: &str, recipient: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE envelope_recipients SET fetched_at = $1 WHERE envelope_id = $2 AND recipient = $3 AND fetched_at IS NULL")
            .bind(now())
            .bind(envelope_id)
            .bind(recipient)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record a verified delivery (or expiry) receipt and log it; false if
    /// an outcome was already recorded for this recipient (the first
    /// outcome stands).
    pub async fn add_outcome(
        &self,
        envelope_id: &str,
        recipient: &str,
        state: &str,
        signer_id: &str,
        r: &SignedReceipt,
        signer: &LogSigner<'_>,
    ) -> Result<bool, StoreError> {
        let (envelope_id, recipient, state, signer_id, r) = (
            envelope_id.to_string(),
            recipient.to_string(),
            state.to_string(),
            signer_id.to_string(),
            r.clone(),
        );
        // Connection first, then the append lock (as in `accept`).
        let mut txn = self.pool.begin().await?;
        let mut guard = self.log.lock().await;
        let mut tree_state = guard.clone();
        let result = async {
            let (st, tx, tree) = (self, &mut *txn, &mut tree_state);
                let updated = sqlx::query("UPDATE envelope_recipients SET state = $1, outcome_at = $2 WHERE envelope_id = $3 AND recipient = $4 AND state = 'pending'")
                    .bind(&state)
                    .bind(now())
                    .bind(&envelope_id)
                    .bind(&recipient)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if updated == 0 {
                    return Ok(false);
                }
                st.append_receipt(tx, tree, &envelope_id, &signer_id, &r, signer).await?;
                Ok(true)
        }
        .await;
        finish(txn, &mut guard, tree_state, result).await
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

    /// Pending (envelope, recipient) pairs accepted before `cutoff`.
    pub async fn overdue(&self, cutoff: i64) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.envelope_id, r.recipient FROM envelope_recipients r JOIN envelopes e ON e.envelope_id = r.envelope_id \
             WHERE r.state = 'pending' AND e.accepted_at < $1 ORDER BY e.accepted_at",
        )
        .bind(cutoff)
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

/// Read stored node hashes inside a connection or transaction, in order.
async fn read_nodes(
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

/// Commit (and cache the append state) or roll back (and drop the cache).
async fn finish<T>(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    guard: &mut Option<CompactTree>,
    tree: Option<CompactTree>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(v) => match tx.commit().await {
            Ok(()) => {
                *guard = tree;
                Ok(v)
            }
            Err(e) => {
                *guard = None;
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = tx.rollback().await;
            *guard = None;
            Err(e)
        }
    }
}
