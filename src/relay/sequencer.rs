//! The sequencer: every write that appends to the transparency log goes
//! through here, and writes that arrive together are appended together
//! (group commit).
//!
//! One task per relay instance takes jobs from a queue — acceptances of
//! uploads whose ciphertext is already durable, delivery receipts,
//! expiries, directory and CRL changes, and the orphan collector's
//! deletions — and runs them in batches: after the first job it takes
//! whatever else is queued, waiting at most `batch_wait_ms` for more, up
//! to `batch_max_jobs` jobs. One batch is one database transaction:
//!
//! 1. `BEGIN` (SQLite: `BEGIN IMMEDIATE`), on PostgreSQL the advisory lock
//!    that makes one sequencer at a time across instances, and the tree
//!    size — one round trip;
//! 2. the tree's border nodes, only when another instance appended since
//!    this one last did;
//! 3. one multi-row statement per table: envelopes (new ones only),
//!    recipients, one statement per outcome, directory or CRL change,
//!    then the log entries, the tree nodes, the receipts, and the one
//!    checkpoint of the batch, signed over the new tree;
//! 4. `COMMIT`.
//!
//! Only after `COMMIT` returns is any job answered: every acceptance the
//! relay hands out was signed inside a transaction that committed, over
//! ciphertext that was durable before the job was queued. Each answer
//! carries the inclusion proof of its leaf against the batch's checkpoint.
//! The log stays one tree whatever the number of instances: the advisory
//! lock orders the batches, and each instance reloads the border when its
//! cached tree is not the committed one.
//!
//! A batch that fails with a database error that is not "unavailable" is
//! retried one job at a time, so that one bad job fails alone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::blobs::{BlobError, BlobStore};
use super::checkpoint::CheckpointSigner;
use super::store::{hash_hex, read_nodes, StoreError};
use crate::keys::SigningKey;
use crate::log::{merkle, CompactTree, Hash, NodeId};
use crate::receipt::{self, Acceptance, Expiry, LogEntry, Purpose, SignedReceipt, Submission};

/// The first query of every batch: the tree size, and the first size the
/// log's current checkpoint key signs (docs/LOG.md §8).
const SIZE_AND_KEY: &str = "SELECT COALESCE(MAX(idx) + 1, 0), \
     (SELECT COALESCE(MAX(idx) + 1, 0) FROM log_key_transitions) FROM log_entries";

/// The PostgreSQL advisory lock that makes one sequencer at a time.
pub const SEQUENCER_LOCK: i64 = 7_046_431_728;

/// How the log is written: who signs, and how batches are bounded.
#[derive(Clone)]
pub struct LogConfig {
    /// The relay's ID (in acceptance and expiry receipts).
    pub relay_id: String,
    /// The key that signs acceptance and expiry receipts.
    pub receipt_key: Arc<SigningKey>,
    /// Signs the checkpoint of each batch.
    pub checkpoints: CheckpointSigner,
    /// The first tree size the checkpoint key signs (0 for the relay
    /// certificate's key, `t + 1` for a key announced at leaf `t`). A batch
    /// refuses to sign when the log has a newer key transition than this.
    pub key_from_size: u64,
    /// Seconds an envelope waits for its recipients; announced in every
    /// acceptance (`expiry_after_secs`).
    pub expiry_after_secs: u64,
    /// Most jobs in one batch.
    pub batch_max_jobs: usize,
    /// How long a batch waits for more jobs after its first.
    pub batch_wait: Duration,
    /// Witnesses asked to cosign each batch's checkpoint after commit.
    pub witnesses: Option<Arc<super::witnesses::Witnesses>>,
}

/// Where a leaf is and how to prove it: its index, the exact entry text,
/// its inclusion proof, and the signed checkpoint of the batch it was
/// appended in.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Leaf index.
    pub log_index: u64,
    /// The exact log entry.
    pub entry: String,
    /// Inclusion proof against `checkpoint`.
    pub inclusion: Vec<Hash>,
    /// The batch's checkpoint (signed note).
    pub checkpoint: String,
}

/// The answer to an acceptance job.
#[derive(Debug)]
pub enum Accepted {
    /// Newly accepted: the signed acceptance and its leaf.
    New {
        /// The relay's acceptance receipt.
        acceptance: SignedReceipt,
        /// The acceptance's leaf (the submission is the leaf before it).
        leaf: Appended,
    },
    /// The envelope was accepted before (by this or an earlier batch).
    Existing,
}

/// A write to sequence.
pub(crate) enum Request {
    Accept {
        submission: SignedReceipt,
        sub: Submission,
    },
    /// A recipient's delivery receipt (state `delivered` or `rejected`).
    Outcome {
        envelope_id: String,
        recipient: String,
        state: &'static str,
        receipt: SignedReceipt,
    },
    /// Expire a recipient that is still pending; the relay signs.
    Expire {
        envelope_id: String,
        recipient: String,
    },
    Directory {
        facility_id: String,
        kind: String,
        name: String,
        pem: String,
        fingerprint: String,
        entry: String,
    },
    Crl {
        number: String,
        pem: String,
        entry: String,
    },
    /// Delete unreferenced ciphertext (the orphan collector).
    Reclaim { ids: Vec<String> },
    /// Announce a new checkpoint key (docs/LOG.md §8): the entry alone in
    /// its batch, so the announcement checkpoint has size index + 1.
    KeyTransition { entry: String, new_key: String },
}

impl Request {
    /// Whether the request runs in a batch of its own.
    fn alone(&self) -> bool {
        matches!(
            self,
            Request::Reclaim { .. } | Request::KeyTransition { .. }
        )
    }
}

/// What a job got.
pub(crate) enum Response {
    Accepted(Accepted),
    /// The leaf appended, or `None` when nothing was appended (an outcome
    /// already recorded, an unchanged certificate, a CRL not newer).
    Appended(Option<Appended>),
    Reclaimed(usize),
}

pub(crate) struct Job {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Response, StoreError>>,
}

/// Counters of one sequencer (for tests and the relay's log).
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Jobs answered from committed batches.
    pub jobs: AtomicU64,
    /// Leaves appended.
    pub leaves: AtomicU64,
    /// SQL statements sent in committed batches (several statements sent
    /// in one round trip count one each).
    pub statements: AtomicU64,
    /// Round trips to the database in committed batches.
    pub round_trips: AtomicU64,
    /// Microseconds from `BEGIN` to the end of `COMMIT` of committed
    /// batches (on PostgreSQL the advisory lock is held for most of it).
    pub busy_us: AtomicU64,
    /// Microseconds of those spent in `COMMIT` (the database's fsync).
    pub commit_us: AtomicU64,
    /// Microseconds committed batches waited for a database connection.
    pub acquire_us: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Batches committed.
    pub batches: u64,
    /// Jobs answered from committed batches.
    pub jobs: u64,
    /// Leaves appended.
    pub leaves: u64,
    /// SQL statements in committed batches.
    pub statements: u64,
    /// Round trips in committed batches.
    pub round_trips: u64,
    /// Microseconds in committed batches, `BEGIN` to `COMMIT`.
    pub busy_us: u64,
    /// Microseconds of those in `COMMIT`.
    pub commit_us: u64,
    /// Microseconds committed batches waited for a connection.
    pub acquire_us: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            leaves: self.leaves.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            busy_us: self.busy_us.load(Ordering::Relaxed),
            commit_us: self.commit_us.load(Ordering::Relaxed),
            acquire_us: self.acquire_us.load(Ordering::Relaxed),
        }
    }
}

/// The sequencer's side: the database, the blob store, the signers, and
/// the cached tree.
pub(crate) struct Sequencer {
    pub pool: AnyPool,
    pub blobs: Arc<dyn BlobStore>,
    pub postgres: bool,
    pub config: LogConfig,
    pub stats: Arc<Stats>,
    tree: Option<CompactTree>,
    /// On SQLite, the connection of the last batch, kept for the next one:
    /// its page cache then still holds the tree's border and the indexes'
    /// upper pages (SQLite drops a connection's cache when another
    /// connection wrote since it last read, and the pool hands its
    /// connections out in turn). A connection that failed is not kept.
    /// On PostgreSQL each batch takes one from the pool (checked before
    /// use: the server may have restarted). In a mutex only so that the
    /// sequencer is `Sync` (a connection is not); reached through
    /// `get_mut`, never locked.
    held: std::sync::Mutex<Option<PoolConnection<Any>>>,
}

/// Start the sequencer task; it ends when every sender is dropped.
pub(crate) fn start(
    pool: AnyPool,
    blobs: Arc<dyn BlobStore>,
    postgres: bool,
    config: LogConfig,
    stats: Arc<Stats>,
) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(4096);
    let seq = Sequencer {
        pool,
        blobs,
        postgres,
        config,
        stats,
        tree: None,
        held: Default::default(),
    };
    tokio::spawn(seq.run(rx));
    tx
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Give back the connection of a failed batch: rolled back, or, when the
/// rollback fails too (a connection in an unknown state), closed instead
/// of returned to the pool.
async fn abandon(mut conn: PoolConnection<Any>) {
    if sqlx::Executor::execute(&mut *conn, "ROLLBACK")
        .await
        .is_err()
    {
        let _ = conn.detach();
    }
}

/// One transaction's statements, counted.
struct Tx {
    conn: PoolConnection<Any>,
    statements: u64,
    round_trips: u64,
}

impl Tx {
    fn count(&mut self, statements: u64) {
        self.statements += statements;
        self.round_trips += 1;
    }
}

/// A leaf to append, and what to record with it.
struct Leaf {
    entry: String,
    /// For receipts: (envelope, signer, receipt).
    receipt: Option<(String, String, SignedReceipt)>,
    /// The job it answers, and whether the job wants its proof.
    job: usize,
    prove: bool,
    /// A directory change (certificate or CRL), listed in `log_directory`.
    directory: bool,
}

impl Sequencer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut held: Option<Job> = None;
        loop {
            let first = match held.take() {
                Some(j) => j,
                None => match rx.recv().await {
                    Some(j) => j,
                    None => break,
                },
            };
            if first.request.alone() {
                self.run_batch(vec![first]).await;
                continue;
            }
            let mut jobs = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.batch_wait;
            while jobs.len() < self.config.batch_max_jobs.max(1) {
                let next = match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if tokio::time::Instant::now() >= deadline {
                            None
                        } else {
                            tokio::time::timeout_at(deadline, rx.recv())
                                .await
                                .ok()
                                .flatten()
                        }
                    }
                };
                match next {
                    Some(j) if j.request.alone() => {
                        held = Some(j);
                        break;
                    }
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
            self.run_batch(jobs).await;
        }
        let s = self.stats.snapshot();
        tracing::info!(
            batches = s.batches,
            jobs = s.jobs,
            leaves = s.leaves,
            statements = s.statements,
            round_trips = s.round_trips,
            "sequencer stopped"
        );
    }

    async fn run_batch(&mut self, jobs: Vec<Job>) {
        let (requests, replies): (Vec<Request>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        match self.batch(&requests).await {
            Ok(responses) => {
                for (reply, r) in replies.into_iter().zip(responses) {
                    let _ = reply.send(r);
                }
            }
            Err(e) if requests.len() > 1 && !e.is_unavailable() => {
                tracing::warn!(error = %e, jobs = requests.len(), "batch failed; retrying its jobs one by one");
                for (request, reply) in requests.into_iter().zip(replies) {
                    let one = [request];
                    let r = match self.batch(&one).await {
                        Ok(mut v) => v.pop().unwrap_or_else(|| {
                            Err(StoreError::Corrupt("a job got no answer".into()))
                        }),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                let unavailable = e.is_unavailable();
                let message = e.to_string();
                tracing::warn!(error = %message, jobs = requests.len(), "batch failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Batch {
                        unavailable,
                        message: message.clone(),
                    }));
                }
            }
        }
    }

    /// Run one batch in one transaction; on error everything is rolled
    /// back and the cached tree dropped.
    async fn batch(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Response, StoreError>>, StoreError> {
        let asked = std::time::Instant::now();
        let held = self.held.get_mut().map(Option::take).unwrap_or(None);
        let conn = match held {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        let t0 = std::time::Instant::now();
        let waited = t0 - asked;
        let mut tx = Tx {
            conn,
            statements: 0,
            round_trips: 0,
        };
        // Uploads' ciphertext is made durable (where its store leaves that
        // to a batch) beside the batch's statements, before it commits.
        let uploads = requests.iter().any(|r| matches!(r, Request::Accept { .. }));
        let blobs = Arc::clone(&self.blobs);
        let sync = async move {
            if uploads {
                blobs.sync().await
            } else {
                Ok(())
            }
        };
        let (result, synced) = tokio::join!(self.batch_in(&mut tx, requests), sync);
        let result = match (result, synced) {
            // Not retried job by job (see `run_batch`): a later `syncfs`
            // would not report this failure again.
            (Ok(_), Err(e)) => Err(StoreError::Batch {
                unavailable: true,
                message: StoreError::Blob(e).to_string(),
            }),
            (r, _) => r,
        };
        match result {
            Ok((answers, tree, leaves, checkpoint)) => {
                let committing = std::time::Instant::now();
                if let Err(e) = sqlx::Executor::execute(&mut *tx.conn, "COMMIT").await {
                    // The transaction may still be open (SQLite keeps it
                    // after a failed COMMIT, for instance a busy or full
                    // disk): it must not go back to the pool holding the
                    // write lock.
                    self.tree = None;
                    abandon(tx.conn).await;
                    return Err(StoreError::Db(e));
                }
                tx.count(1);
                self.tree = tree;
                let s = &self.stats;
                s.batches.fetch_add(1, Ordering::Relaxed);
                s.jobs.fetch_add(requests.len() as u64, Ordering::Relaxed);
                s.leaves.fetch_add(leaves, Ordering::Relaxed);
                s.statements.fetch_add(tx.statements, Ordering::Relaxed);
                s.round_trips.fetch_add(tx.round_trips, Ordering::Relaxed);
                s.busy_us
                    .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                s.commit_us
                    .fetch_add(committing.elapsed().as_micros() as u64, Ordering::Relaxed);
                s.acquire_us
                    .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                tracing::debug!(
                    jobs = requests.len(),
                    leaves,
                    statements = tx.statements,
                    round_trips = tx.round_trips,
                    "batch committed"
                );
                let out = self.finish_proofs(&mut tx, answers).await;
                if !self.postgres && out.is_ok() {
                    if let Ok(held) = self.held.get_mut() {
                        *held = Some(tx.conn);
                    }
                }
                match (checkpoint, &self.config.witnesses) {
                    (Some(note), Some(w)) => Ok(self.witness(w.clone(), note, out?).await),
                    _ => out,
                }
            }
            Err(e) => {
                self.tree = None;
                abandon(tx.conn).await;
                Err(e)
            }
        }
    }

    /// The statements of one batch, up to (not including) `COMMIT`.
    fn batch_in<'a>(&'a mut self, tx: &'a mut Tx, requests: &'a [Request]) -> BatchFuture<'a> {
        Box::pin(async move {
            // 1. Begin, lock, size: one round trip.
            let begin = if self.postgres {
                format!(
                    "BEGIN; DO $$BEGIN PERFORM pg_advisory_xact_lock({SEQUENCER_LOCK}); END$$; {SIZE_AND_KEY}"
                )
            } else {
                format!("BEGIN IMMEDIATE; {SIZE_AND_KEY}")
            };
            let rows = sqlx::Executor::fetch_all(&mut *tx.conn, begin.as_str()).await?;
            tx.count(if self.postgres { 3 } else { 2 });
            let size: i64 = rows
                .last()
                .ok_or_else(|| StoreError::Corrupt("no tree size".into()))?
                .try_get(0)?;
            let size = size as u64;
            // The checkpoint key this instance signs with must still be the
            // log's: after a rotation an instance left on the old key stops
            // appending instead of signing past the announcement.
            let key_from: i64 = rows
                .last()
                .ok_or_else(|| StoreError::Corrupt("no tree size".into()))?
                .try_get(1)?;
            if key_from as u64 != self.config.key_from_size {
                return Err(StoreError::Invalid(format!(
                    "the log's checkpoint key changed at tree size {key_from}; this relay instance \
                     still signs with the key from size {}: restart it with the log's current \
                     checkpoint key (--checkpoint-key)",
                    self.config.key_from_size
                )));
            }
            // 2. The border, when the cache is not the committed tree.
            let mut tree = match &self.tree {
                Some(t) if t.size() == size => t.clone(),
                _ => {
                    let border = read_nodes(&mut tx.conn, merkle::root_plan(size).nodes()).await?;
                    tx.count(1);
                    CompactTree::from_border(size, border)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?
                }
            };
            let old_border: Vec<(NodeId, Hash)> = merkle::root_plan(size)
                .nodes()
                .iter()
                .copied()
                .zip(tree.border().iter().copied())
                .collect();
            let t = now();
            let mut answers: Vec<Result<Pending, StoreError>> = Vec::with_capacity(requests.len());
            let mut leaves: Vec<Leaf> = Vec::new();

            // 3a. Uploads: their ciphertext must still be there (the orphan
            // collector deletes under this same lock), then the new envelopes.
            let mut accepts: Vec<(usize, &SignedReceipt, &Submission)> = Vec::new();
            for (i, r) in requests.iter().enumerate() {
                if let Request::Accept { submission, sub } = r {
                    accepts.push((i, submission, sub));
                }
            }
            let ids: Vec<&str> = accepts
                .iter()
                .map(|(_, _, sub)| sub.envelope_id.as_str())
                .collect();
            let present = self.blobs.exists_each(&ids).await;
            let mut blob_ok: HashMap<usize, Result<(), StoreError>> = HashMap::new();
            for ((i, _, _), p) in accepts.iter().zip(present) {
                blob_ok.insert(
                    *i,
                    match p {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(StoreError::Blob(BlobError::Unavailable(
                            std::io::Error::other(
                                "the ciphertext was removed while it was being accepted",
                            ),
                        ))),
                        Err(e) => Err(StoreError::Blob(e)),
                    },
                );
            }
            let mut seen = HashSet::new();
            let candidates: Vec<&(usize, &SignedReceipt, &Submission)> = accepts
                .iter()
                .filter(|(i, _, sub)| {
                    blob_ok.get(i).is_some_and(|r| r.is_ok())
                        && seen.insert(sub.envelope_id.as_str())
                })
                .collect();
            let mut new_envelopes: HashSet<String> = HashSet::new();
            for chunk in candidates.chunks(500) {
                let mut sql = String::from(
                    "INSERT INTO envelopes (envelope_id, sender, size, accepted_at, expires_at, blob_deleted) VALUES ",
                );
                push_rows(&mut sql, true, chunk.len(), 5, Some("0"));
                sql.push_str(" ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id");
                let mut q = sqlx::query(&sql);
                for (_, _, sub) in chunk {
                    q = q
                        .bind(sub.envelope_id.clone())
                        .bind(sub.sender.as_str().to_string())
                        .bind(sub.size as i64)
                        .bind(t)
                        .bind(t.saturating_add(self.config.expiry_after_secs as i64));
                }
                for row in q.fetch_all(&mut *tx.conn).await? {
                    new_envelopes.insert(row.try_get::<String, _>(0)?);
                }
                tx.count(1);
            }
            let mut recipients: Vec<(&str, &str)> = Vec::new();
            for (_, _, sub) in &candidates {
                if new_envelopes.contains(&sub.envelope_id) {
                    for r in &sub.recipients {
                        recipients.push((sub.envelope_id.as_str(), r.as_str()));
                    }
                }
            }
            // Rows whose results the batch does not read wait in `writes`
            // and go to the database together (see `Writes`).
            let mut writes = Writes::new(self.postgres);
            for chunk in recipients.chunks(1000) {
                let mut sql = String::from(
                    "INSERT INTO envelope_recipients (envelope_id, recipient, state) VALUES ",
                );
                writes.push_rows(&mut sql, chunk.len(), 2, Some("'pending'"));
                let mut values = Vec::with_capacity(chunk.len() * 2);
                for (e, r) in chunk {
                    values.push(Value::Text(e.to_string()));
                    values.push(Value::Text(r.to_string()));
                }
                writes.push(tx, sql, values).await?;
            }

            // 3b. Every job in order: its rows and its leaves. A job whose
            // statement reads its own result sees every earlier row.
            for (i, r) in requests.iter().enumerate() {
                if !matches!(r, Request::Accept { .. }) {
                    writes.send(tx).await?;
                }
                let answer = match r {
                    Request::Accept { submission, sub } => {
                        if let Some(Err(_)) = blob_ok.get(&i) {
                            match blob_ok.remove(&i) {
                                Some(Err(e)) => Err(e),
                                _ => Err(StoreError::Corrupt("blob check".into())),
                            }
                        } else if new_envelopes.remove(&sub.envelope_id) {
                            let sub_idx = tree.size() + leaves.len() as u64;
                            let acceptance = SignedReceipt::sign(
                                Purpose::Acceptance,
                                &Acceptance {
                                    envelope_id: sub.envelope_id.clone(),
                                    submission_sha256: submission.body_sha256(),
                                    relay: self.config.relay_id.clone(),
                                    accepted_at: crate::pki::cert::rfc3339(t),
                                    log_index: sub_idx,
                                    expiry_after_secs: self.config.expiry_after_secs,
                                },
                                &self.config.receipt_key,
                            );
                            leaves.push(receipt_leaf(
                                &sub.envelope_id,
                                sub.sender.as_str(),
                                submission,
                                i,
                                false,
                            ));
                            leaves.push(receipt_leaf(
                                &sub.envelope_id,
                                &self.config.relay_id,
                                &acceptance,
                                i,
                                true,
                            ));
                            Ok(Pending::Accepted(acceptance))
                        } else {
                            Ok(Pending::Existing)
                        }
                    }
                    Request::Outcome {
                        envelope_id,
                        recipient,
                        state,
                        receipt,
                    } => {
                        let row = sqlx::query(
                            "UPDATE envelope_recipients SET state = $1, outcome_at = $2 \
                             WHERE envelope_id = $3 AND recipient = $4 AND state = 'pending' \
                             RETURNING recipient",
                        )
                        .bind(state.to_string())
                        .bind(t)
                        .bind(envelope_id.to_string())
                        .bind(recipient.to_string())
                        .fetch_optional(&mut *tx.conn)
                        .await?;
                        tx.count(1);
                        if row.is_some() {
                            leaves.push(receipt_leaf(envelope_id, recipient, receipt, i, true));
                            Ok(Pending::Leaf)
                        } else {
                            Ok(Pending::Nothing)
                        }
                    }
                    Request::Expire {
                        envelope_id,
                        recipient,
                    } => {
                        let row = sqlx::query(
                            "UPDATE envelope_recipients SET state = 'expired', outcome_at = $1 \
                             WHERE envelope_id = $2 AND recipient = $3 AND state = 'pending' \
                             RETURNING fetched_at",
                        )
                        .bind(t)
                        .bind(envelope_id.to_string())
                        .bind(recipient.to_string())
                        .fetch_optional(&mut *tx.conn)
                        .await?;
                        tx.count(1);
                        match (row, recipient.parse()) {
                            (Some(row), Ok(rid)) => {
                                let fetched: Option<i64> = row.try_get(0)?;
                                let r = SignedReceipt::sign(
                                    Purpose::Expiry,
                                    &Expiry {
                                        envelope_id: envelope_id.clone(),
                                        recipient: rid,
                                        relay: self.config.relay_id.clone(),
                                        expired_at: crate::pki::cert::rfc3339(t),
                                        fetched_at: fetched.map(crate::pki::cert::rfc3339),
                                    },
                                    &self.config.receipt_key,
                                );
                                leaves.push(receipt_leaf(
                                    envelope_id,
                                    &self.config.relay_id,
                                    &r,
                                    i,
                                    true,
                                ));
                                Ok(Pending::Leaf)
                            }
                            (Some(_), Err(_)) => Err(StoreError::Corrupt(format!(
                                "stored recipient {recipient:?} is not a facility ID"
                            ))),
                            (None, _) => Ok(Pending::Nothing),
                        }
                    }
                    Request::Directory {
                        facility_id,
                        kind,
                        name,
                        pem,
                        fingerprint,
                        entry,
                    } => {
                        // Unchanged (same certificate): nothing to log.
                        let row = sqlx::query(
                            "INSERT INTO directory (facility_id, kind, name, cert_pem, fingerprint, published_at) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (facility_id) DO UPDATE SET \
                             kind = excluded.kind, name = excluded.name, cert_pem = excluded.cert_pem, \
                             fingerprint = excluded.fingerprint, published_at = excluded.published_at \
                             WHERE directory.fingerprint <> excluded.fingerprint RETURNING facility_id",
                        )
                        .bind(facility_id.to_string())
                        .bind(kind.to_string())
                        .bind(name.to_string())
                        .bind(pem.to_string())
                        .bind(fingerprint.to_string())
                        .bind(t)
                        .fetch_optional(&mut *tx.conn)
                        .await?;
                        tx.count(1);
                        if row.is_some() {
                            leaves.push(Leaf {
                                entry: entry.clone(),
                                receipt: None,
                                job: i,
                                prove: true,
                                directory: true,
                            });
                            Ok(Pending::Leaf)
                        } else {
                            Ok(Pending::Nothing)
                        }
                    }
                    Request::Crl { number, pem, entry } => {
                        // Only a newer CRL replaces the stored one (numbers are
                        // decimal text without leading zeros).
                        let row = sqlx::query(
                            "INSERT INTO crl (id, crl_number, pem, published_at) VALUES (1, $1, $2, $3) \
                             ON CONFLICT (id) DO UPDATE SET crl_number = excluded.crl_number, \
                             pem = excluded.pem, published_at = excluded.published_at \
                             WHERE length(excluded.crl_number) > length(crl.crl_number) \
                             OR (length(excluded.crl_number) = length(crl.crl_number) \
                             AND excluded.crl_number > crl.crl_number) RETURNING id",
                        )
                        .bind(number.to_string())
                        .bind(pem.to_string())
                        .bind(t)
                        .fetch_optional(&mut *tx.conn)
                        .await?;
                        tx.count(1);
                        if row.is_some() {
                            leaves.push(Leaf {
                                entry: entry.clone(),
                                receipt: None,
                                job: i,
                                prove: true,
                                directory: true,
                            });
                            Ok(Pending::Leaf)
                        } else {
                            Ok(Pending::Nothing)
                        }
                    }
                    Request::KeyTransition { entry, new_key } => {
                        // Alone in its batch: its index is the tree size.
                        sqlx::query(
                            "INSERT INTO log_key_transitions (idx, new_key) VALUES ($1, $2)",
                        )
                        .bind(size as i64)
                        .bind(new_key.to_string())
                        .execute(&mut *tx.conn)
                        .await?;
                        tx.count(1);
                        leaves.push(Leaf {
                            entry: entry.clone(),
                            receipt: None,
                            job: i,
                            prove: true,
                            directory: false,
                        });
                        Ok(Pending::Leaf)
                    }
                    Request::Reclaim { ids } => {
                        let mut deleted = 0;
                        for id in ids {
                            let referenced =
                                sqlx::query("SELECT 1 FROM envelopes WHERE envelope_id = $1")
                                    .bind(id.to_string())
                                    .fetch_optional(&mut *tx.conn)
                                    .await?
                                    .is_some();
                            tx.count(1);
                            if !referenced {
                                self.blobs.delete(id).await?;
                                tracing::info!(envelope = %id, "removed unreferenced ciphertext");
                                deleted += 1;
                            }
                        }
                        Ok(Pending::Reclaimed(deleted))
                    }
                };
                answers.push(answer);
            }

            // 3c. The leaves: entries, nodes, receipts, one checkpoint.
            let start = tree.size();
            let mut nodes: Vec<(NodeId, Hash)> = Vec::new();
            for l in &leaves {
                if l.entry.len() > crate::log::tiles::MAX_ENTRY_BYTES {
                    return Err(StoreError::Invalid("log entry too large".into()));
                }
                nodes.extend(
                    tree.append_entry(l.entry.as_bytes())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
            }
            let mut checkpoint = String::new();
            if !leaves.is_empty() {
                for (k, chunk) in leaves.chunks(500).enumerate() {
                    let mut sql = String::from("INSERT INTO log_entries (idx, entry) VALUES ");
                    writes.push_rows(&mut sql, chunk.len(), 2, None);
                    let mut values = Vec::with_capacity(chunk.len() * 2);
                    for (j, l) in chunk.iter().enumerate() {
                        values.push(Value::Int((start + (k * 500 + j) as u64) as i64));
                        values.push(Value::Text(l.entry.to_string()));
                    }
                    writes.push(tx, sql, values).await?;
                }
                for chunk in nodes.chunks(1000) {
                    let mut sql = String::from("INSERT INTO log_nodes (level, idx, hash) VALUES ");
                    writes.push_rows(&mut sql, chunk.len(), 3, None);
                    let mut values = Vec::with_capacity(chunk.len() * 3);
                    for (id, h) in chunk {
                        values.push(Value::Int(i64::from(id.level)));
                        values.push(Value::Int(id.index as i64));
                        values.push(Value::Text(hash_hex(h)));
                    }
                    writes.push(tx, sql, values).await?;
                }
                let directory: Vec<i64> = leaves
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.directory)
                    .map(|(j, _)| (start + j as u64) as i64)
                    .collect();
                for chunk in directory.chunks(500) {
                    let mut sql = String::from("INSERT INTO log_directory (idx) VALUES ");
                    writes.push_rows(&mut sql, chunk.len(), 1, None);
                    let values = chunk.iter().map(|idx| Value::Int(*idx)).collect();
                    writes.push(tx, sql, values).await?;
                }
                let receipts: Vec<(u64, &(String, String, SignedReceipt))> = leaves
                    .iter()
                    .enumerate()
                    .filter_map(|(j, l)| l.receipt.as_ref().map(|r| (start + j as u64, r)))
                    .collect();
                for chunk in receipts.chunks(500) {
                    let mut sql = String::from(
                        "INSERT INTO receipts (envelope_id, purpose, signer, body, signature, created_at, log_index) VALUES ",
                    );
                    writes.push_rows(&mut sql, chunk.len(), 7, None);
                    let mut values = Vec::with_capacity(chunk.len() * 7);
                    for (idx, (env, signer, r)) in chunk {
                        values.extend([
                            Value::Text(env.to_string()),
                            Value::Text(r.purpose.as_str().to_string()),
                            Value::Text(signer.to_string()),
                            Value::Text(r.body.to_string()),
                            Value::Text(r.signature.to_string()),
                            Value::Int(t),
                            Value::Int(*idx as i64),
                        ]);
                    }
                    writes.push(tx, sql, values).await?;
                }
                checkpoint = self
                    .config
                    .checkpoints
                    .sign(tree.size(), tree.root())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let mut sql = String::from("INSERT INTO log_checkpoints (size, note) VALUES ");
                writes.push_rows(&mut sql, 1, 2, None);
                let values = vec![
                    Value::Int(tree.size() as i64),
                    Value::Text(checkpoint.to_string()),
                ];
                writes.push(tx, sql, values).await?;
            }
            writes.send(tx).await?;

            // The leaves each job answers with, proofs still to fill in.
            let size = tree.size();
            let mut known: HashMap<NodeId, Hash> = old_border.into_iter().collect();
            known.extend(nodes);
            let mut with_leaves: Vec<Result<Pending, StoreError>> = answers;
            for (j, l) in leaves.iter().enumerate() {
                if !l.prove {
                    continue;
                }
                let idx = start + j as u64;
                let slot = &mut with_leaves[l.job];
                if let Ok(p) = slot {
                    let plan = merkle::inclusion_plan(idx, size)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let kind = std::mem::replace(p, Pending::Nothing);
                    *p = Pending::Proved {
                        kind: Box::new(kind),
                        leaf: Appended {
                            log_index: idx,
                            entry: l.entry.clone(),
                            inclusion: Vec::new(),
                            checkpoint: checkpoint.clone(),
                        },
                        plan,
                    };
                }
            }
            // Nodes the proofs need that are neither new nor on the old border
            // are read after commit (outside the lock).
            for p in with_leaves.iter_mut().flatten() {
                if let Pending::Proved { plan, leaf, .. } = p {
                    let hashes: Option<Vec<Hash>> =
                        plan.nodes().iter().map(|n| known.get(n).copied()).collect();
                    if let Some(h) = hashes {
                        leaf.inclusion = plan
                            .assemble(&h)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    }
                }
            }
            let count = leaves.len() as u64;
            let made = (!checkpoint.is_empty()).then_some(checkpoint);
            Ok((with_leaves, Some(tree), count, made))
        })
    }

    /// After commit: have the batch's checkpoint `note` cosigned by the
    /// witnesses, store the cosigned note in its place, and hand it out
    /// in the answers instead of the bare one. Witness trouble only costs
    /// cosignatures, never the batch.
    async fn witness(
        &self,
        w: Arc<super::witnesses::Witnesses>,
        note: String,
        mut out: Vec<Result<Response, StoreError>>,
    ) -> Vec<Result<Response, StoreError>> {
        let Ok(n) = crate::log::note::Note::parse(note.as_bytes()) else {
            return out;
        };
        let Ok(cp) = crate::log::Checkpoint::parse(n.text.as_bytes()) else {
            return out;
        };
        let cosigned = w.cosign(&note, &cp, &self.pool).await;
        if cosigned == note {
            return out;
        }
        if let Err(e) = sqlx::query("UPDATE log_checkpoints SET note = $1 WHERE size = $2")
            .bind(cosigned.clone())
            .bind(cp.size as i64)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, size = cp.size, "cannot store the cosigned checkpoint");
            return out;
        }
        for r in out.iter_mut().flatten() {
            let leaf = match r {
                Response::Accepted(Accepted::New { leaf, .. }) => leaf,
                Response::Appended(Some(leaf)) => leaf,
                _ => continue,
            };
            if leaf.checkpoint == note {
                leaf.checkpoint = cosigned.clone();
            }
        }
        out
    }

    /// Fill in the proofs that needed stored nodes, and turn the pending
    /// answers into responses.
    async fn finish_proofs(
        &self,
        tx: &mut Tx,
        answers: Vec<Result<Pending, StoreError>>,
    ) -> Result<Vec<Result<Response, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            // After COMMIT: a failure here is this job's alone (its write
            // stands; a retry finds it recorded).
            out.push(match a {
                Err(e) => Err(e),
                Ok(p) => self.respond(tx, p).await,
            });
        }
        Ok(out)
    }

    fn respond<'a>(
        &'a self,
        tx: &'a mut Tx,
        p: Pending,
    ) -> futures_util::future::BoxFuture<'a, Result<Response, StoreError>> {
        Box::pin(async move {
            Ok(match p {
                Pending::Existing => Response::Accepted(Accepted::Existing),
                Pending::Nothing => Response::Appended(None),
                Pending::Reclaimed(n) => Response::Reclaimed(n),
                Pending::Accepted(_) | Pending::Leaf => {
                    return Err(StoreError::Corrupt("a leaf without its proof".into()))
                }
                Pending::Proved {
                    kind,
                    mut leaf,
                    plan,
                } => {
                    if leaf.inclusion.len() != plan.output_len() {
                        let hashes = read_nodes(&mut tx.conn, plan.nodes()).await?;
                        leaf.inclusion = plan
                            .assemble(&hashes)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    }
                    match *kind {
                        Pending::Accepted(acceptance) => {
                            Response::Accepted(Accepted::New { acceptance, leaf })
                        }
                        _ => Response::Appended(Some(leaf)),
                    }
                }
            })
        })
    }
}

/// What [`Sequencer::batch_in`] gives: the answers, the new tree, how
/// many leaves were appended, and the batch's signed checkpoint (if any).
type BatchFuture<'a> = futures_util::future::BoxFuture<
    'a,
    Result<
        (
            Vec<Result<Pending, StoreError>>,
            Option<CompactTree>,
            u64,
            Option<String>,
        ),
        StoreError,
    >,
>;

/// A job's answer before its proof is complete.
enum Pending {
    Accepted(SignedReceipt),
    Existing,
    Leaf,
    Nothing,
    Reclaimed(usize),
    Proved {
        kind: Box<Pending>,
        leaf: Appended,
        plan: merkle::HashPlan,
    },
}

fn receipt_leaf(envelope: &str, signer: &str, r: &SignedReceipt, job: usize, prove: bool) -> Leaf {
    let entry = LogEntry::Receipt {
        signer: signer.to_string(),
        receipt: r.clone(),
    }
    .to_text();
    Leaf {
        entry,
        receipt: Some((envelope.to_string(), signer.to_string(), r.clone())),
        job,
        prove,
        directory: false,
    }
}

/// A bound value of a deferred statement.
enum Value {
    Int(i64),
    Text(String),
}

/// Statements of a batch whose results it does not read (inserts of
/// recipients, entries, nodes, receipts, the checkpoint), sent together
/// when the batch next needs the database: on SQLite in one round trip,
/// `?` placeholders bound in order across the statements; on PostgreSQL one
/// statement per round trip, since its extended protocol takes one
/// statement per query. Either way they run in the batch's transaction, in
/// the order they were pushed, before anything that reads.
struct Writes {
    postgres: bool,
    statements: Vec<(String, Vec<Value>)>,
    values: usize,
}

/// At most this many values wait in one SQLite round trip (SQLite's limit
/// on the parameters of one statement is 32,766; each statement here is
/// far below it, and the whole query stays below it too).
const MAX_DEFERRED_VALUES: usize = 30_000;

impl Writes {
    fn new(postgres: bool) -> Writes {
        Writes {
            postgres,
            statements: Vec::new(),
            values: 0,
        }
    }

    /// Placeholders for a statement to push: numbered on PostgreSQL,
    /// `?` on SQLite.
    fn push_rows(&self, sql: &mut String, rows: usize, cols: usize, extra: Option<&str>) {
        push_rows(sql, self.postgres, rows, cols, extra);
    }

    /// Add a statement; on SQLite, send what waits first when the query
    /// would grow past [`MAX_DEFERRED_VALUES`].
    async fn push(
        &mut self,
        tx: &mut Tx,
        sql: String,
        values: Vec<Value>,
    ) -> Result<(), StoreError> {
        if !self.postgres && self.values + values.len() > MAX_DEFERRED_VALUES {
            self.send(tx).await?;
        }
        self.values += values.len();
        self.statements.push((sql, values));
        Ok(())
    }

    /// Run every waiting statement, in order.
    async fn send(&mut self, tx: &mut Tx) -> Result<(), StoreError> {
        let statements = std::mem::take(&mut self.statements);
        self.values = 0;
        if statements.is_empty() {
            return Ok(());
        }
        if self.postgres {
            for (sql, values) in statements {
                bind_all(sqlx::query(&sql), values)
                    .execute(&mut *tx.conn)
                    .await?;
                tx.count(1);
            }
        } else {
            let n = statements.len() as u64;
            let sql = statements
                .iter()
                .map(|(sql, _)| sql.as_str())
                .collect::<Vec<_>>()
                .join(";\n");
            let values = statements.into_iter().flat_map(|(_, v)| v);
            bind_all(sqlx::query(&sql).persistent(false), values)
                .execute(&mut *tx.conn)
                .await?;
            tx.count(n);
        }
        Ok(())
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    values: impl IntoIterator<Item = Value>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for v in values {
        q = match v {
            Value::Int(i) => q.bind(i),
            Value::Text(t) => q.bind(t),
        };
    }
    q
}

/// Append `rows` rows of `cols` placeholders, plus a trailing constant
/// column when `extra` is given: numbered, `($1, $2), ($3, $4)…`, or `?`
/// (SQLite binds those in order across the statements of one query).
fn push_rows(sql: &mut String, numbered: bool, rows: usize, cols: usize, extra: Option<&str>) {
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push_str(&format!("${n}"));
                n += 1;
            } else {
                sql.push('?');
            }
        }
        if let Some(x) = extra {
            sql.push_str(", ");
            sql.push_str(x);
        }
        sql.push(')');
    }
}

/// The entry text of a directory change.
pub(crate) fn certificate_entry(facility_id: &str, pem: &str) -> String {
    LogEntry::Certificate {
        facility_id: facility_id.to_string(),
        certificate: pem.to_string(),
        published_at: receipt::now_rfc3339(),
    }
    .to_text()
}

/// The entry text of a CRL change.
pub(crate) fn crl_entry(number: &str, pem: &str) -> String {
    LogEntry::Crl {
        crl_number: number.to_string(),
        crl: pem.to_string(),
        published_at: receipt::now_rfc3339(),
    }
    .to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (AnyPool, Tx) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let conn = pool.acquire().await.unwrap();
        (
            pool,
            Tx {
                conn,
                statements: 0,
                round_trips: 0,
            },
        )
    }

    async fn rows(tx: &mut Tx) -> Vec<(i64, String)> {
        sqlx::query("SELECT a, b FROM t ORDER BY rowid")
            .fetch_all(&mut *tx.conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    #[tokio::test]
    async fn deferred_inserts_on_sqlite_go_in_one_round_trip_bound_in_order() {
        let (_pool, mut tx) = sqlite().await;
        let mut w = Writes::new(false);
        for k in 0..3i64 {
            let mut sql = String::from("INSERT INTO t (a, b) VALUES ");
            w.push_rows(&mut sql, 2, 2, None);
            let values = (0..2)
                .flat_map(|j| {
                    [
                        Value::Int(k * 2 + j),
                        Value::Text(format!("row {}", k * 2 + j)),
                    ]
                })
                .collect();
            w.push(&mut tx, sql, values).await.unwrap();
        }
        assert!(
            rows(&mut tx).await.is_empty(),
            "nothing is sent before send()"
        );
        w.send(&mut tx).await.unwrap();
        assert_eq!((tx.statements, tx.round_trips), (3, 1));
        let want: Vec<(i64, String)> = (0..6).map(|i| (i, format!("row {i}"))).collect();
        assert_eq!(rows(&mut tx).await, want);
        // Sending again sends nothing.
        w.send(&mut tx).await.unwrap();
        assert_eq!(tx.round_trips, 1);
    }

    #[tokio::test]
    async fn deferred_inserts_past_sqlites_parameter_limit_are_split_in_order() {
        let (_pool, mut tx) = sqlite().await;
        let mut w = Writes::new(false);
        // 20 statements of 1,000 rows of 2 values: 40,000 values, more
        // than one query may carry (MAX_DEFERRED_VALUES).
        let per = 1000;
        for k in 0..20i64 {
            let mut sql = String::from("INSERT INTO t (a, b) VALUES ");
            w.push_rows(&mut sql, per, 2, None);
            let values = (0..per as i64)
                .flat_map(|j| {
                    let i = k * per as i64 + j;
                    [Value::Int(i), Value::Text(i.to_string())]
                })
                .collect();
            w.push(&mut tx, sql, values).await.unwrap();
        }
        w.send(&mut tx).await.unwrap();
        let got = rows(&mut tx).await;
        assert_eq!(got.len(), 20 * per);
        assert!(got
            .iter()
            .enumerate()
            .all(|(n, (a, b))| *a == n as i64 && *b == n.to_string()));
        assert_eq!((tx.statements, tx.round_trips), (20, 2));
    }

    #[tokio::test]
    async fn a_failing_deferred_insert_fails_the_send() {
        let (_pool, mut tx) = sqlite().await;
        let mut w = Writes::new(false);
        let mut sql = String::from("INSERT INTO t (a, b) VALUES ");
        w.push_rows(&mut sql, 1, 2, None);
        w.push(&mut tx, sql, vec![Value::Int(1), Value::Text("x".into())])
            .await
            .unwrap();
        // NOT NULL violated by the second statement.
        w.push(
            &mut tx,
            "INSERT INTO t (a, b) VALUES (?, NULL)".into(),
            vec![Value::Int(2)],
        )
        .await
        .unwrap();
        assert!(w.send(&mut tx).await.is_err());
    }

    /// A sequencer on a relay's own SQLite database (migrated, files on
    /// disk), its blob store beside it.
    async fn sequencer_on_sqlite(dir: &std::path::Path) -> Sequencer {
        let store = crate::relay::store::Store::open(dir, None).await.unwrap();
        let key = Arc::new(SigningKey::generate());
        Sequencer {
            pool: store.pool().clone(),
            blobs: Arc::new(crate::relay::blobs::FsBlobStore::open(&dir.join("blobs")).unwrap()),
            postgres: false,
            config: LogConfig {
                relay_id: "relay-test".into(),
                receipt_key: key.clone(),
                checkpoints: CheckpointSigner::new("relay.test/renkei/relay-test", key),
                key_from_size: 0,
                expiry_after_secs: 3600,
                batch_max_jobs: 8,
                batch_wait: Duration::from_millis(1),
                witnesses: None,
            },
            stats: Default::default(),
            tree: None,
            held: Default::default(),
        }
    }

    fn certificate(id: &str) -> Request {
        Request::Directory {
            facility_id: id.into(),
            kind: "clinic".into(),
            name: "試験診療所".into(),
            pem: format!("PEM {id}"),
            fingerprint: format!("fp-{id}"),
            entry: certificate_entry(id, &format!("PEM {id}")),
        }
    }

    /// Whether the connection kept for the next batch has the temporary
    /// table `mark` (a temporary table lives on its connection alone).
    async fn held_is_marked(seq: &mut Sequencer) -> bool {
        let held = seq
            .held
            .get_mut()
            .unwrap()
            .as_mut()
            .expect("a kept connection");
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM temp.sqlite_master WHERE name = 'mark'")
                .fetch_one(&mut **held)
                .await
                .unwrap();
        n == 1
    }

    /// On SQLite the next batch runs on the connection of the last one
    /// (whose page cache holds the tree's border); a batch that failed
    /// does not keep its connection, and the one after it takes a fresh
    /// one from the pool.
    #[tokio::test]
    async fn sqlite_batches_keep_their_connection_until_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = sequencer_on_sqlite(dir.path()).await;
        assert!(seq.held.get_mut().unwrap().is_none());

        let answers = seq.batch(&[certificate("F0001")]).await.unwrap();
        assert!(matches!(answers[0], Ok(Response::Appended(Some(_)))));
        let held = seq
            .held
            .get_mut()
            .unwrap()
            .as_mut()
            .expect("kept after a batch");
        sqlx::query("CREATE TEMP TABLE mark (x)")
            .execute(&mut **held)
            .await
            .unwrap();
        // Other connections of the pool do not have it.
        let mut other = seq.pool.acquire().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM temp.sqlite_master")
            .fetch_one(&mut *other)
            .await
            .unwrap();
        assert_eq!(n, 0);

        // The next batch runs on the marked connection and keeps it.
        seq.batch(&[certificate("F0002")]).await.unwrap();
        assert!(held_is_marked(&mut seq).await);

        // A batch that cannot take the write lock (another connection
        // holds it; no waiting on this one) fails and drops its connection.
        let held = seq.held.get_mut().unwrap().as_mut().unwrap();
        sqlx::query("PRAGMA busy_timeout=0")
            .execute(&mut **held)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .unwrap();
        assert!(seq.batch(&[certificate("F0003")]).await.is_err());
        assert!(
            seq.held.get_mut().unwrap().is_none(),
            "a failed batch keeps nothing"
        );
        sqlx::query("ROLLBACK").execute(&mut *other).await.unwrap();
        drop(other);

        // The batch after it takes a connection from the pool, succeeds,
        // and keeps that one (not the marked one).
        let answers = seq.batch(&[certificate("F0003")]).await.unwrap();
        assert!(matches!(answers[0], Ok(Response::Appended(Some(_)))));
        assert!(!held_is_marked(&mut seq).await);
        let size: i64 = sqlx::query_scalar("SELECT count(*) FROM log_entries")
            .fetch_one(&seq.pool)
            .await
            .unwrap();
        assert_eq!(size, 3, "the failed batch appended nothing");
    }

    /// An upload of `data` from a clinic to a hospital, its ciphertext
    /// committed to `blobs`.
    async fn upload(blobs: &dyn BlobStore, key: &SigningKey, data: &[u8]) -> Request {
        let id = hex::encode(ring::digest::digest(&ring::digest::SHA256, data));
        let mut staged = blobs.stage(&id, data.len() as u64).await.unwrap();
        staged.write(data).await.unwrap();
        staged.commit(&id).await.unwrap();
        let sub = Submission {
            envelope_id: id,
            size: data.len() as u64,
            sender: "1311234569".parse().unwrap(),
            sender_cert_sha256: "0f".repeat(32),
            recipients: vec!["1317654323".parse().unwrap()],
            submitted_at: receipt::now_rfc3339(),
        };
        let submission = SignedReceipt::sign(Purpose::Submission, &sub, key);
        Request::Accept { submission, sub }
    }

    /// Uploads are accepted only once their ciphertext is durable: with
    /// `sync = "batch"` the store's `syncfs` runs beside each batch that
    /// accepts uploads, and when it fails, nothing of the batch is
    /// appended and every job of it is refused as unavailable. The
    /// failure stays until a restart (a second `syncfs` would not report
    /// the lost writes again); batches without uploads go on.
    #[tokio::test]
    async fn a_failed_blob_sync_refuses_the_whole_batch_and_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = sequencer_on_sqlite(dir.path()).await;
        let store = crate::relay::blobs::FsBlobStore::open_with(
            &dir.path().join("blobs"),
            crate::relay::blobs::BlobSync::Batch,
        )
        .unwrap();
        assert_eq!(store.sync_mode(), crate::relay::blobs::BlobSync::Batch);
        let store = Arc::new(store);
        seq.blobs = store.clone();
        let key = SigningKey::generate();

        // Synced: accepted.
        let first = upload(&*store, &key, b"first ciphertext").await;
        let answers = seq.batch(&[first]).await.unwrap();
        assert!(matches!(
            answers[0],
            Ok(Response::Accepted(Accepted::New { .. }))
        ));
        let log_size = |pool: AnyPool| async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM log_entries")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        assert_eq!(log_size(seq.pool.clone()).await, 2);

        // The file system lost writes: the batch with uploads is refused
        // whole, with a directory change in it.
        store.fail_sync_for_test("Input/output error (os error 5)");
        let mut replies = Vec::new();
        let mut jobs = Vec::new();
        for request in [
            upload(&*store, &key, b"second ciphertext").await,
            certificate("F0001"),
            upload(&*store, &key, b"third ciphertext").await,
        ] {
            let (reply, rx) = oneshot::channel();
            jobs.push(Job { request, reply });
            replies.push(rx);
        }
        seq.run_batch(jobs).await;
        for rx in replies {
            let e = match rx.await.unwrap() {
                Ok(_) => panic!("a job of a batch whose ciphertext is not durable succeeded"),
                Err(e) => e,
            };
            assert!(e.is_unavailable(), "{e}");
            assert!(e.to_string().contains("restart"), "{e}");
        }
        assert_eq!(log_size(seq.pool.clone()).await, 2, "nothing appended");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM envelopes")
            .fetch_one(&seq.pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "no envelope recorded");

        // It stays: the next upload is refused too; a batch without
        // uploads appends.
        let again = upload(&*store, &key, b"fourth ciphertext").await;
        assert!(seq.batch(&[again]).await.is_err());
        let answers = seq.batch(&[certificate("F0002")]).await.unwrap();
        assert!(matches!(answers[0], Ok(Response::Appended(Some(_)))));
        assert_eq!(log_size(seq.pool.clone()).await, 3);
    }

    /// A batch whose COMMIT fails leaves no transaction open: SQLite keeps
    /// the transaction after a failed COMMIT (here a deferred foreign key
    /// that only COMMIT checks), and a connection given back to the pool
    /// in it would hold the write lock and refuse every later BEGIN. The
    /// sequencer rolls it back (or closes it); the next writer takes the
    /// lock at once, and the next batch appends.
    #[tokio::test]
    async fn a_failed_commit_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = sequencer_on_sqlite(dir.path()).await;
        seq.batch(&[certificate("F0001")]).await.unwrap();
        for sql in [
            "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER fail_at_commit AFTER INSERT ON log_entries BEGIN INSERT INTO child VALUES (1); END",
        ] {
            sqlx::query(sql).execute(&seq.pool).await.unwrap();
        }
        let e = seq
            .batch(&[certificate("F0002")])
            .await
            .err()
            .expect("the commit fails");
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        assert!(seq.held.get_mut().unwrap().is_none(), "nothing kept");

        // Every connection of the pool can take the write lock without
        // waiting.
        let mut conns = Vec::new();
        for _ in 0..seq.pool.size() {
            conns.push(seq.pool.acquire().await.unwrap());
        }
        for c in &mut conns {
            sqlx::query("PRAGMA busy_timeout=0")
                .execute(&mut **c)
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut **c)
                .await
                .expect("no connection is left in a transaction or blocked by one");
            sqlx::query("ROLLBACK").execute(&mut **c).await.unwrap();
        }
        drop(conns);

        sqlx::query("DROP TRIGGER fail_at_commit")
            .execute(&seq.pool)
            .await
            .unwrap();
        let answers = seq.batch(&[certificate("F0002")]).await.unwrap();
        assert!(matches!(answers[0], Ok(Response::Appended(Some(_)))));
        let size: i64 = sqlx::query_scalar("SELECT count(*) FROM log_entries")
            .fetch_one(&seq.pool)
            .await
            .unwrap();
        assert_eq!(size, 2, "the failed batch appended nothing");
    }
}
