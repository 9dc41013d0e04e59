//! The auditor: follows the relay's log through its tiles, verifies every
//! entry (receipt signatures against the signers' certificates, which the
//! log itself publishes), recomputes the tree, checks each new checkpoint
//! against it and proves it consistent with the last one accepted. Its
//! state lives in `PROFILE/audit.db`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt as _;
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Transaction};

use crate::client::http::{empty, ClientError, Connection, RelayClient};
use crate::identity::Kind;
use crate::log::tiles::{self, TileKind, TilePath};
use crate::log::{self, Checkpoint, CompactTree, ConsistencyProof, Hash, Verifier};
use crate::pki::{CertInfo, TrustStore};
use crate::profile::Profile;
use crate::receipt::key_transition::{KeyChainError, LogKeys, TransitionProof};
use crate::receipt::{Acceptance, Delivery, Expiry, LogEntry, Purpose, SignedReceipt, Submission};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/audit");

/// Auditor errors. [`AuditError::Misbehaviour`] means the relay was caught.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The relay's log is not what it claims; the leaf index is named.
    #[error("relay misbehaviour: {0}")]
    Misbehaviour(String),
    /// Talking to the relay failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Local store trouble.
    #[error("audit store: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration trouble.
    #[error("audit store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Profile trouble.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// Bad input.
    #[error("{0}")]
    Usage(String),
}

/// What one sync did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    /// Tree size before.
    pub from_size: u64,
    /// Tree size after.
    pub to_size: u64,
    /// Entries verified in this run.
    pub entries_verified: u64,
    /// Of which receipts (signatures checked).
    pub receipts_verified: u64,
    /// Seconds the busiest signature-checking thread spent checking
    /// (signatures are checked while the next tiles are fetched).
    pub verify_seconds: f64,
    /// The accepted checkpoint.
    pub checkpoint: String,
}

/// An auditor profile with its state.
pub struct Auditor {
    /// The profile.
    pub profile: Profile,
    /// The relay client.
    pub client: RelayClient,
    /// Trust store.
    pub trust: TrustStore,
    pool: SqlitePool,
}

impl Auditor {
    /// Open an auditor profile (kind auditor) and its state.
    pub async fn open(dir: &Path, relay: Option<&str>) -> Result<Auditor, AuditError> {
        let profile = Profile::open(dir)?;
        if profile.config.kind != Kind::Auditor {
            return Err(AuditError::Usage(format!(
                "{} is a {} profile, not an auditor profile",
                dir.display(),
                profile.config.kind
            )));
        }
        let client = RelayClient::new(&profile, relay)?;
        let trust = profile.trust()?;
        let pool = open_db(&dir.join("audit.db")).await?;
        Ok(Auditor {
            profile,
            client,
            trust,
            pool,
        })
    }

    async fn problem(&self, idx: Option<u64>, what: &str) -> Result<(), AuditError> {
        sqlx::query("INSERT INTO problems (found_at, leaf_index, what) VALUES (?, ?, ?)")
            .bind(crate::receipt::now_rfc3339())
            .bind(idx.map(|i| i as i64))
            .bind(what)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn caught(&self, idx: Option<u64>, what: String) -> AuditError {
        let _ = self.problem(idx, &what).await;
        AuditError::Misbehaviour(what)
    }

    /// The newest accepted checkpoint (size, note).
    pub async fn last_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError> {
        let row = sqlx::query("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get(1))))
    }

    async fn stored_leaves(&self) -> Result<Vec<Hash>, AuditError> {
        stored_leaves(&self.pool).await
    }

    async fn fetch(&self, path: &str) -> Result<Vec<u8>, AuditError> {
        let resp = self
            .client
            .send(hyper::Method::GET, path, &[], crate::client::http::empty())
            .await?;
        let (_, body, _) = RelayClient::read(resp, 32 << 20).await?;
        Ok(body.to_vec())
    }

    /// The relay's level-0 hashes for leaves `[start, end)` (from hash tiles).
    async fn relay_leaf_hashes(
        &self,
        start: u64,
        end: u64,
        size: u64,
    ) -> Result<Vec<Hash>, AuditError> {
        let mut out = Vec::new();
        let mut n = start / 256;
        while n * 256 < end {
            let tp = TilePath::at_size(TileKind::Hashes { level: 0 }, n, size)
                .ok_or_else(|| AuditError::Usage("tile".into()))?;
            let bytes = self.fetch(&format!("/v1/log/{}", tp.path())).await?;
            let hashes = tiles::parse_tile(&bytes, tp.width)
                .map_err(|e| AuditError::Misbehaviour(format!("hash tile {}: {e}", tp.path())))?;
            for (i, h) in hashes.into_iter().enumerate() {
                let idx = n * 256 + i as u64;
                if idx >= start && idx < end {
                    out.push(h);
                }
            }
            n += 1;
        }
        Ok(out)
    }

    /// Sync: fetch, verify and accept the relay's newest checkpoint.
    /// `full` re-downloads and re-verifies the whole log, comparing it with
    /// what this auditor stored before.
    pub async fn sync(&self, full: bool) -> Result<SyncReport, AuditError> {
        let relay_cert = self.relay_cert().await?;
        let note = String::from_utf8(self.fetch("/v1/log/checkpoint").await?)
            .map_err(|_| AuditError::Misbehaviour("the checkpoint is not text".into()))?;
        let (keys, cp, announcements) = self.open_checkpoint(&relay_cert, &note).await?;
        let stored = self.stored_leaves().await?;
        let last = self.last_checkpoint().await?;
        let from_size = stored.len() as u64;
        if let Some((old_size, old_note)) = &last {
            if cp.size < *old_size {
                return Err(self
                    .caught(Some(cp.size), format!("the log shrank from {old_size} to {} entries: leaves from index {} on were dropped (truncation)", cp.size, cp.size))
                    .await);
            }
            let (old, _) = keys
                .open(old_note.as_bytes())
                .map_err(|e| AuditError::Usage(format!("kept checkpoint: {e}")))?;
            if old.size > 0 && old.size < cp.size {
                let proof: ConsistencyProof = serde_json::from_slice(
                    &self
                        .fetch(&format!(
                            "/v1/log/proof/consistency?from={}&to={}",
                            old.size, cp.size
                        ))
                        .await?,
                )
                .map_err(|e| {
                    AuditError::Misbehaviour(format!("consistency proof unreadable: {e}"))
                })?;
                if proof.verify(&old.root, &cp.root).is_err() {
                    let idx = self
                        .first_divergence(&stored, old.size.min(cp.size), cp.size)
                        .await?;
                    return Err(self
                        .caught(idx, format!("checkpoint of size {} is not consistent with the accepted one of size {}{}", cp.size, old.size, at(idx)))
                        .await);
                }
            } else if old.size == cp.size && old.root != cp.root {
                let idx = self.first_divergence(&stored, 0, cp.size).await?;
                return Err(self
                    .caught(
                        idx,
                        format!("two different trees of size {}{}", cp.size, at(idx)),
                    )
                    .await);
            }
        }
        // The new entries (or every entry when `full`), checked as their
        // tiles arrive: each entry is parsed once and its log-order checks
        // run here, its signature is checked on every core while the next
        // tiles are fetched, and its rows are written in one transaction,
        // committed only when the tree, the checkpoint and every entry
        // passed (rolled back otherwise).
        let start = if full { 0 } else { from_size };
        let mut walk = Walk::new(&self.trust, &relay_cert, &keys);
        if !full {
            self.resume(&mut walk, start).await?;
        }
        let mut intake = Intake {
            walk,
            leaves: if full { Vec::new() } else { stored.clone() },
            partial: if start % 256 == 0 {
                Vec::new()
            } else {
                stored_tile(&self.pool, start / 256).await?
            },
            walked: 0,
            verifiers: Verifiers::start(cores()),
            store: StoreWriter::begin(&self.pool).await?,
        };
        let checked: Result<(), Stop> = async {
            self.take_entries(&cp, start, &mut intake).await?;
            self.check_tree(full, &stored, &intake.leaves, &cp, &announcements)
                .await?;
            match intake.walk.problem.take() {
                Some((idx, why)) => Err(Stop::Caught(Some(idx), format!("log entry {idx}: {why}"))),
                None => Ok(()),
            }
        }
        .await;
        let Intake {
            walk,
            leaves,
            partial,
            walked,
            verifiers,
            store,
        } = intake;
        // Freed now, while the last signatures are checked, not after the
        // commit (a hundred thousand envelopes take a while to free).
        drop((walk, leaves, partial));
        if let Err(stop) = checked {
            verifiers.abandon();
            store.abandon().await;
            return Err(match stop {
                Stop::Caught(idx, what) => self.caught(idx, what).await,
                Stop::Failed(e) => e,
            });
        }
        let verified = verifiers.finish().await;
        if let Some(idx) = verified.first_bad {
            store.abandon().await;
            return Err(self
                .caught(
                    Some(idx),
                    format!("log entry {idx}: the receipt's signature does not verify with its signer's certificate"),
                )
                .await);
        }
        // Accept.
        let mut tx = store.finish().await?;
        for k in keys.keys().iter().skip(1) {
            sqlx::query("INSERT OR IGNORE INTO checkpoint_keys (from_size, vkey) VALUES (?, ?)")
                .bind(k.from_size as i64)
                .bind(k.key.encode())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT OR IGNORE INTO checkpoints (size, note, verified_at) VALUES (?, ?, ?)")
            .bind(cp.size as i64)
            .bind(&note)
            .bind(crate::receipt::now_rfc3339())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(SyncReport {
            from_size,
            to_size: cp.size,
            entries_verified: walked,
            receipts_verified: verified.receipts,
            verify_seconds: verified.busy_seconds,
            checkpoint: note,
        })
    }

    /// Fetch the entry tiles from leaf `start` to the checkpoint's size (a
    /// few at a time, on kept-alive connections, in log order) and hand
    /// each tile's entries to `intake`.
    async fn take_entries(
        &self,
        cp: &Checkpoint,
        start: u64,
        intake: &mut Intake<'_>,
    ) -> Result<(), Stop> {
        let mut tiles_wanted = Vec::new();
        let mut n = start / 256;
        while n * 256 < cp.size {
            let tp = TilePath::at_size(TileKind::Entries, n, cp.size)
                .ok_or_else(|| AuditError::Usage("tile".into()))?;
            tiles_wanted.push((n, tp));
            n += 1;
        }
        let conns = std::sync::Mutex::new(Vec::new());
        let conns = &conns;
        let mut fetched =
            futures_util::stream::iter(tiles_wanted.into_iter().map(|(n, tp)| async move {
                let bytes = self
                    .fetch_kept(conns, &format!("/v1/log/{}", tp.path()))
                    .await;
                (n, tp, bytes)
            }))
            .buffered(4);
        while let Some((n, tp, bytes)) = fetched.next().await {
            let bytes = bytes?;
            let bundle = tiles::parse_entry_bundle(&bytes).map_err(|e| {
                AuditError::Misbehaviour(format!("entry bundle {}: {e}", tp.path()))
            })?;
            intake.take(n * 256, &bundle, start).await?;
            if (bundle.len() as u64) < u64::from(tp.width) {
                // Fewer entries than the checkpoint implies: find which.
                let have: Vec<Hash> = bundle.iter().map(|e| log::leaf_hash(e)).collect();
                let relay = self
                    .relay_leaf_hashes(n * 256, n * 256 + u64::from(tp.width), cp.size)
                    .await?;
                let missing = relay
                    .iter()
                    .zip(have.iter().chain(std::iter::repeat(&[0u8; 32])))
                    .position(|(a, b)| a != b)
                    .unwrap_or(have.len());
                let idx = n * 256 + missing as u64;
                return Err(Stop::Caught(
                    Some(idx),
                    format!("log entry {idx} is missing (deleted)"),
                ));
            }
        }
        Ok(())
    }

    /// Recompute the tree from the stored leaves plus the fetched ones and
    /// check it against the checkpoint, and each key learnt now against
    /// the tree its announcement names.
    async fn check_tree(
        &self,
        full: bool,
        stored: &[Hash],
        leaves: &[Hash],
        cp: &Checkpoint,
        announcements: &[Checkpoint],
    ) -> Result<(), Stop> {
        if full {
            if let Some(i) = stored.iter().zip(leaves.iter()).position(|(a, b)| a != b) {
                return Err(Stop::Caught(
                    Some(i as u64),
                    format!("log entry {i} differs from the copy this auditor verified before (rewritten)"),
                ));
            }
        }
        let mut tree = CompactTree::new();
        for h in leaves.iter().take(cp.size as usize) {
            tree.append(*h)
                .map_err(|e| AuditError::Usage(e.to_string()))?;
        }
        if leaves.len() as u64 != cp.size || tree.root() != cp.root {
            let idx = self.first_divergence(leaves, 0, cp.size).await?;
            return Err(Stop::Caught(
                idx,
                format!("the entries do not hash to the checkpoint's root{} (edited, swapped or replaced)", at(idx)),
            ));
        }
        // Each key learnt now was announced in this very tree: the root of
        // its first `size` leaves is the announcement's.
        for a in announcements {
            let mut t = CompactTree::new();
            for h in leaves.iter().take(a.size as usize) {
                t.append(*h).map_err(|e| AuditError::Usage(e.to_string()))?;
            }
            if t.size() != a.size || t.root() != a.root {
                return Err(Stop::Caught(
                    Some(a.size - 1),
                    format!("the key transition announced at size {} is not in the log the checkpoint of size {} commits to", a.size, cp.size),
                ));
            }
        }
        Ok(())
    }

    /// The first leaf index in `[from, size)` where `ours` differs from the
    /// relay's level-0 hash tiles (or `None` if they agree).
    async fn first_divergence(
        &self,
        ours: &[Hash],
        from: u64,
        size: u64,
    ) -> Result<Option<u64>, AuditError> {
        let end = size.min(ours.len() as u64);
        if from >= end {
            return Ok(None);
        }
        let relay = self.relay_leaf_hashes(from, end, size).await?;
        Ok(relay
            .iter()
            .zip(&ours[from as usize..end as usize])
            .position(|(a, b)| a != b)
            .map(|p| from + p as u64))
    }

    /// The checkpoint keys this auditor trusts for the log of `relay`:
    /// the certificate's key and the keys it learnt before.
    pub async fn log_keys(&self, relay: &CertInfo) -> Result<LogKeys, AuditError> {
        let root = crate::receipt::bundle::relay_verifier(relay)
            .map_err(|e| AuditError::Misbehaviour(e.to_string()))?;
        let mut keys = LogKeys::new(root);
        for r in sqlx::query("SELECT from_size, vkey FROM checkpoint_keys ORDER BY from_size")
            .fetch_all(&self.pool)
            .await?
        {
            let v = Verifier::parse(&r.get::<String, _>(1))
                .map_err(|e| AuditError::Usage(format!("a kept checkpoint key: {e}")))?;
            keys.push_learnt(v, r.get::<i64, _>(0) as u64)
                .map_err(|e| AuditError::Usage(format!("a kept checkpoint key: {e}")))?;
        }
        Ok(keys)
    }

    /// Open the relay's checkpoint `note` with the log's keys, learning
    /// the relay's key transitions when an unknown key signed it. Returns
    /// the keys (with those learnt, not kept yet), the checkpoint and the
    /// announcements of the keys learnt.
    async fn open_checkpoint(
        &self,
        relay: &CertInfo,
        note: &str,
    ) -> Result<(LogKeys, Checkpoint, Vec<Checkpoint>), AuditError> {
        let mut keys = self.log_keys(relay).await?;
        let mut announcements = Vec::new();
        let mut opened = keys.open(note.as_bytes()).map(|(c, _)| c);
        if let Err(KeyChainError::UnknownKey(_)) = opened {
            let proofs: Vec<TransitionProof> = serde_json::from_slice(
                &self.fetch("/v1/log/key-transitions").await?,
            )
            .map_err(|e| {
                AuditError::Misbehaviour(format!("the key transitions are unreadable: {e}"))
            })?;
            match keys.learn_all(&proofs) {
                Ok(a) => announcements = a,
                Err(e) => {
                    return Err(self
                        .caught(
                            None,
                            format!("the relay's key transitions do not verify: {e}"),
                        )
                        .await)
                }
            }
            opened = keys.open(note.as_bytes()).map(|(c, _)| c);
        }
        match opened {
            Ok(cp) => Ok((keys, cp, announcements)),
            Err(e) => Err(self
                .caught(
                    None,
                    format!("the checkpoint does not verify with the log's checkpoint keys: {e}; the checkpoint (kept here):\n{note}"),
                )
                .await),
        }
    }

    async fn relay_cert(&self) -> Result<CertInfo, AuditError> {
        let resp = self
            .client
            .send(
                hyper::Method::GET,
                "/v1/health",
                &[],
                crate::client::http::empty(),
            )
            .await?;
        let relay = resp.relay.clone();
        RelayClient::read(resp, 1 << 16).await?;
        Ok(relay)
    }

    /// What the entries before `start` taught: the certificates they
    /// published and each envelope's receipts so far.
    async fn resume(&self, walk: &mut Walk<'_>, start: u64) -> Result<(), AuditError> {
        for (_, entry) in certificate_entries(&self.pool, start).await? {
            if let Ok(LogEntry::Certificate {
                facility_id,
                certificate,
                ..
            }) = LogEntry::parse(entry.as_bytes())
            {
                if let Ok(c) = CertInfo::parse_pem(certificate.as_bytes(), "certificate") {
                    walk.certs.entry(facility_id).or_default().push(c);
                }
            }
        }
        for (idx, envelope_id, purpose, _, body) in all_receipts(&self.pool).await? {
            walk.envelopes
                .entry(envelope_id)
                .or_default()
                .note(idx, &purpose, &body);
        }
        Ok(())
    }

    /// GET `path` on one of the kept-alive connections in `conns` (a new
    /// one when none is free) and keep the connection for the next tile:
    /// one TLS handshake per connection, not one per tile.
    async fn fetch_kept(
        &self,
        conns: &std::sync::Mutex<Vec<Connection>>,
        path: &str,
    ) -> Result<Bytes, AuditError> {
        let kept = conns.lock().ok().and_then(|mut c| c.pop());
        let (conn, resp) = match kept {
            Some(mut conn) if !conn.is_closed() => {
                match conn.send(hyper::Method::GET, path, &[], empty()).await {
                    Ok(resp) => (conn, resp),
                    // The relay closed it meanwhile: once more on a new one.
                    Err(_) => {
                        let mut conn = self.client.connect().await?;
                        let resp = conn.send(hyper::Method::GET, path, &[], empty()).await?;
                        (conn, resp)
                    }
                }
            }
            _ => {
                let mut conn = self.client.connect().await?;
                let resp = conn.send(hyper::Method::GET, path, &[], empty()).await?;
                (conn, resp)
            }
        };
        let (_, body, _) = RelayClient::read(resp, 32 << 20).await?;
        if !conn.is_closed() {
            if let Ok(mut c) = conns.lock() {
                c.push(conn);
            }
        }
        Ok(body)
    }

    /// Every receipt of one envelope this auditor verified, in log order.
    pub async fn envelope(
        &self,
        envelope_id: &str,
    ) -> Result<Vec<(u64, String, String, String)>, AuditError> {
        envelope_receipts(&self.pool, envelope_id).await
    }

    /// All verified receipts (idx, envelope, purpose, signer, body).
    pub async fn all_receipts(
        &self,
    ) -> Result<Vec<(u64, String, String, String, String)>, AuditError> {
        all_receipts(&self.pool).await
    }

    /// The verified directory leaves that publish a certificate, in log
    /// order: (leaf index, exact entry text).
    pub async fn certificate_entries(&self) -> Result<Vec<(u64, String)>, AuditError> {
        certificate_entries(&self.pool, u64::MAX).await
    }

    /// Problems found so far (found_at, leaf index, what).
    pub async fn problems(&self) -> Result<Vec<(String, Option<i64>, String)>, AuditError> {
        let rows = sqlx::query("SELECT found_at, leaf_index, what FROM problems ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Compare this auditor's verified log with another auditor's store
    /// (e.g. a colleague's audit.db): a fork shows as two different leaves
    /// at one index, or two different roots at one size.
    pub async fn compare(&self, other_db: &Path) -> Result<Option<u64>, AuditError> {
        compare_with(&self.pool, other_db).await
    }
}

/// [`Auditor::compare`] without a relay connection: this auditor's
/// `audit.db` against another's.
pub async fn compare_dbs(ours: &Path, other_db: &Path) -> Result<Option<u64>, AuditError> {
    if !ours.exists() {
        return Err(AuditError::Usage(format!(
            "{} does not exist; run `renkei audit sync` first",
            ours.display()
        )));
    }
    let pool = open_db(ours).await?;
    compare_with(&pool, other_db).await
}

async fn compare_with(pool: &SqlitePool, other_db: &Path) -> Result<Option<u64>, AuditError> {
    {
        if !other_db.exists() {
            return Err(AuditError::Usage(format!(
                "{} does not exist",
                other_db.display()
            )));
        }
        let other = open_db(other_db).await?;
        let ours = stored_leaves(pool).await?;
        let theirs = stored_leaves(&other).await?;
        let idx = ours
            .iter()
            .zip(theirs.iter())
            .position(|(a, b)| a != b)
            .map(|i| i as u64);
        if let Some(i) = idx {
            let what = format!("fork: the relay showed another auditor a different log entry {i} (the two trees diverge at leaf {i})");
            sqlx::query("INSERT INTO problems (found_at, leaf_index, what) VALUES (?, ?, ?)")
                .bind(crate::receipt::now_rfc3339())
                .bind(i as i64)
                .bind(&what)
                .execute(pool)
                .await?;
            return Err(AuditError::Misbehaviour(what));
        }
        Ok(None)
    }
}

/// Every receipt of one envelope in the store, in log order: (idx,
/// purpose, signer, body).
async fn envelope_receipts(
    pool: &SqlitePool,
    envelope_id: &str,
) -> Result<Vec<(u64, String, String, String)>, AuditError> {
    let rows =
        sqlx::query("SELECT idx, purpose, signer FROM receipts WHERE envelope_id = ? ORDER BY idx")
            .bind(envelope_id)
            .fetch_all(pool)
            .await?;
    let idxs: Vec<u64> = rows.iter().map(|r| r.get::<i64, _>(0) as u64).collect();
    let bodies = receipt_bodies(pool, &idxs).await?;
    Ok(rows
        .iter()
        .zip(bodies)
        .map(|(r, body)| (r.get::<i64, _>(0) as u64, r.get(1), r.get(2), body))
        .collect())
}

/// Every receipt in the store, in log order: (idx, envelope, purpose,
/// signer, body).
async fn all_receipts(
    pool: &SqlitePool,
) -> Result<Vec<(u64, String, String, String, String)>, AuditError> {
    let rows = sqlx::query("SELECT idx, envelope_id, purpose, signer FROM receipts ORDER BY idx")
        .fetch_all(pool)
        .await?;
    let idxs: Vec<u64> = rows.iter().map(|r| r.get::<i64, _>(0) as u64).collect();
    let bodies = receipt_bodies(pool, &idxs).await?;
    Ok(rows
        .iter()
        .zip(bodies)
        .map(|(r, body)| {
            (
                r.get::<i64, _>(0) as u64,
                r.get(1),
                r.get(2),
                r.get(3),
                body,
            )
        })
        .collect())
}

/// The leaf hash of every stored entry, in log order.
async fn stored_leaves(pool: &SqlitePool) -> Result<Vec<Hash>, AuditError> {
    let rows = sqlx::query("SELECT n, leaf_hashes FROM tiles ORDER BY n")
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len() * 256);
    for (i, r) in rows.iter().enumerate() {
        let hashes: &[u8] = r.get(1);
        let full = hashes.len() == 256 * 32;
        // Only the last tile may be partial, and none is empty.
        if r.get::<i64, _>(0) as usize != i || (!full && i + 1 != rows.len()) {
            return Err(AuditError::Usage(
                "the audit store has a gap; start a new audit.db".into(),
            ));
        }
        if hashes.is_empty() || !hashes.len().is_multiple_of(32) {
            return Err(AuditError::Usage("the audit store is damaged".into()));
        }
        out.extend(hashes.chunks_exact(32).map(|h| {
            let mut leaf = [0u8; 32];
            leaf.copy_from_slice(h);
            leaf
        }));
    }
    Ok(out)
}

/// The stored entries of tile `n`, in log order (none if it is not stored).
async fn stored_tile(pool: &SqlitePool, n: u64) -> Result<Vec<Vec<u8>>, AuditError> {
    let row = sqlx::query("SELECT bundle FROM tiles WHERE n = ?")
        .bind(n as i64)
        .fetch_optional(pool)
        .await?;
    match row {
        None => Ok(Vec::new()),
        Some(r) => Ok(tiles::parse_entry_bundle(r.get::<&[u8], _>(0))
            .map_err(|_| AuditError::Usage("the audit store is damaged".into()))?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()),
    }
}

/// The body of each receipt at `idxs` (ascending leaf indexes), read from
/// its entry in the stored tiles (empty if the entry holds no receipt).
async fn receipt_bodies(pool: &SqlitePool, idxs: &[u64]) -> Result<Vec<String>, AuditError> {
    let mut out = Vec::with_capacity(idxs.len());
    let mut tile: Option<(u64, Vec<Vec<u8>>)> = None;
    for &idx in idxs {
        let n = idx / 256;
        if tile.as_ref().map(|(m, _)| *m) != Some(n) {
            tile = Some((n, stored_tile(pool, n).await?));
        }
        let entry = tile
            .as_ref()
            .and_then(|(_, entries)| entries.get((idx % 256) as usize));
        out.push(match entry.map(|e| LogEntry::parse(e)) {
            Some(Ok(LogEntry::Receipt { receipt, .. })) => receipt.body,
            _ => String::new(),
        });
    }
    Ok(out)
}

/// The stored directory leaves below `end` that publish a certificate, in
/// log order: (leaf index, exact entry text).
async fn certificate_entries(
    pool: &SqlitePool,
    end: u64,
) -> Result<Vec<(u64, String)>, AuditError> {
    let mut out = Vec::new();
    let mut rows = sqlx::query("SELECT n, bundle FROM tiles WHERE n <= ? ORDER BY n")
        .bind((end / 256).min(i64::MAX as u64) as i64)
        .fetch(pool);
    while let Some(r) = rows.next().await {
        let r = r?;
        let first = r.get::<i64, _>(0) as u64 * 256;
        let entries = tiles::parse_entry_bundle(r.get::<&[u8], _>(1))
            .map_err(|_| AuditError::Usage("the audit store is damaged".into()))?;
        for (i, e) in entries.into_iter().enumerate() {
            let idx = first + i as u64;
            if idx < end && e.starts_with(br#"{"type":"certificate""#) {
                out.push((idx, String::from_utf8_lossy(e).into_owned()));
            }
        }
    }
    Ok(out)
}

/// Move the rows of the `entries` table an auditor before migration 0004
/// kept (one per entry, leaf hashes in hex) into `tiles`, and drop it: one
/// transaction, so an interrupted move is done again at the next open.
async fn entries_into_tiles(pool: &SqlitePool) -> Result<(), AuditError> {
    let old = sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'")
        .fetch_optional(pool)
        .await?;
    if old.is_none() {
        return Ok(());
    }
    let damaged = || AuditError::Usage("the audit store is damaged".into());
    let mut tx = pool.begin().await?;
    for n in 0.. {
        let rows = sqlx::query(
            "SELECT idx, entry, leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
        )
        .bind(n * 256)
        .bind((n + 1) * 256)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut entries = Vec::with_capacity(rows.len());
        let mut hashes = Vec::with_capacity(rows.len() * 32);
        for (i, r) in rows.iter().enumerate() {
            if r.get::<i64, _>(0) != n * 256 + i as i64 {
                return Err(AuditError::Usage(
                    "the audit store has a gap; start a new audit.db".into(),
                ));
            }
            entries.push(r.get::<String, _>(1));
            let h = hex::decode(r.get::<String, _>(2)).map_err(|_| damaged())?;
            if h.len() != 32 {
                return Err(damaged());
            }
            hashes.extend_from_slice(&h);
        }
        let bundle = tiles::encode_entry_bundle(&entries).map_err(|_| damaged())?;
        sqlx::query("INSERT OR REPLACE INTO tiles (n, bundle, leaf_hashes) VALUES (?, ?, ?)")
            .bind(n)
            .bind(bundle)
            .bind(hashes)
            .execute(&mut *tx)
            .await?;
        if rows.len() < 256 {
            break;
        }
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries")
        .fetch_one(&mut *tx)
        .await?;
    let moved: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(length(leaf_hashes)), 0) / 32 FROM tiles")
            .fetch_one(&mut *tx)
            .await?;
    if left != moved {
        return Err(AuditError::Usage(
            "the audit store has a gap; start a new audit.db".into(),
        ));
    }
    sqlx::query("DROP TABLE entries").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

fn at(idx: Option<u64>) -> String {
    idx.map(|i| format!(", first differing leaf index {i}"))
        .unwrap_or_default()
}

async fn open_db(path: &Path) -> Result<SqlitePool, AuditError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        // A new audit.db gets 64 KiB pages (the tiles are large blobs):
        // sixteen times fewer pages to write to the WAL and copy back at
        // the checkpoint after the commit. An existing file keeps its own.
        .page_size(65536)
        .busy_timeout(std::time::Duration::from_secs(10))
        // A sync writes every new entry in one transaction: with the
        // default 2 MiB page cache the receipts' envelope index (random
        // keys) spilled and was read back page by page, and each
        // statement's journal went to a temporary file. Not much more:
        // the pages still dirty at the commit are written after the last
        // signature is checked.
        .pragma("cache_size", "-16384")
        .pragma("temp_store", "memory");
    let _one = crate::client::store::one_open_at_a_time().await;
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    entries_into_tiles(&pool).await?;
    Ok(pool)
}

/// Why a sync stopped before accepting the checkpoint: the relay was
/// caught (recorded as a problem once the store's transaction is rolled
/// back), or something else failed.
enum Stop {
    Caught(Option<u64>, String),
    Failed(AuditError),
}

impl From<AuditError> for Stop {
    fn from(e: AuditError) -> Stop {
        Stop::Failed(e)
    }
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Stop {
        Stop::Failed(e.into())
    }
}

/// The cores the signatures are checked on.
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1)
}

/// Where fetched entries go: the log-order checks, the recomputed leaves,
/// the signature checks and the store.
struct Intake<'a> {
    walk: Walk<'a>,
    /// Every leaf hash of the tree so far (stored ones first).
    leaves: Vec<Hash>,
    /// The stored entries of the tile this sync starts in, when an earlier
    /// sync stored only part of it.
    partial: Vec<Vec<u8>>,
    /// Entries taken in this sync.
    walked: u64,
    verifiers: Verifiers,
    store: StoreWriter,
}

impl Intake<'_> {
    /// One entry bundle whose first entry is leaf `first`; entries before
    /// `start` were verified in an earlier sync and only fill the tile.
    async fn take(&mut self, first: u64, bundle: &[&[u8]], start: u64) -> Result<(), AuditError> {
        let mut jobs = Jobs::default();
        let mut receipts = Vec::new();
        let mut kept: Vec<&[u8]> = Vec::with_capacity(bundle.len());
        for (i, &e) in bundle.iter().enumerate() {
            let idx = first + i as u64;
            if idx < start {
                // The tile is stored again whole, with what this auditor
                // verified before, not what the relay serves now.
                kept.push(self.partial.get(i).map_or(e, Vec::as_slice));
                continue;
            }
            kept.push(e);
            self.leaves.push(log::leaf_hash(e));
            self.walked += 1;
            if let Some((job, receipt)) = self.walk.entry(idx, e) {
                jobs.push(job);
                receipts.push(receipt);
            }
        }
        self.verifiers.submit(jobs).await;
        let leaves = self
            .leaves
            .get(first as usize..first as usize + kept.len())
            .unwrap_or_default();
        let tile = Tile {
            n: first / 256,
            bundle: tiles::encode_entry_bundle(&kept).map_err(|e| {
                AuditError::Misbehaviour(format!("entry bundle of leaf {first}: {e}"))
            })?,
            leaf_hashes: leaves.concat(),
        };
        self.store.write(Rows { tile, receipts }).await
    }
}

/// The checks that follow the log's order, one entry at a time with no
/// I/O: directory entries against the CA, which key signs each receipt
/// (the relay's, or the newest certificate its signer published before
/// it), key transitions against the keys the relay announced, and each
/// envelope's story. Stops at the first problem.
struct Walk<'a> {
    trust: &'a TrustStore,
    relay: &'a CertInfo,
    relay_id: String,
    keys: &'a LogKeys,
    /// Certificates published so far, per facility, in log order.
    certs: HashMap<String, Vec<CertInfo>>,
    envelopes: HashMap<String, EnvelopeState>,
    /// The first entry that failed, and why.
    problem: Option<(u64, String)>,
}

/// One receipt signature to check.
struct Job {
    idx: u64,
    key: [u8; 32],
    receipt: SignedReceipt,
}

/// The signatures of one tile, as the checkers take them: what each
/// receipt signed, end to end in one buffer, so that a tile costs the
/// checking threads no allocation and leaves them nothing to free per
/// receipt (the receipts themselves are dropped where they were parsed).
#[derive(Default)]
struct Jobs {
    messages: Vec<u8>,
    checks: Vec<Check>,
}

/// One signature of [`Jobs`]: its message is `messages[start..end]`.
struct Check {
    idx: u64,
    key: [u8; 32],
    start: usize,
    end: usize,
    /// `None`: not base64 of 64 bytes (it does not verify).
    signature: Option<[u8; 64]>,
}

impl Jobs {
    fn push(&mut self, job: Job) {
        let start = self.messages.len();
        job.receipt.signed_message_into(&mut self.messages);
        self.checks.push(Check {
            idx: job.idx,
            key: job.key,
            start,
            end: self.messages.len(),
            signature: job.receipt.signature_bytes(),
        });
    }

    fn len(&self) -> usize {
        self.checks.len()
    }

    fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Whether the signature of `check` verifies.
    fn verifies(&self, check: &Check) -> bool {
        check.signature.is_some_and(|sig| {
            crate::keys::verify_ed25519(&check.key, &self.messages[check.start..check.end], &sig)
        })
    }
}

impl<'a> Walk<'a> {
    fn new(trust: &'a TrustStore, relay: &'a CertInfo, keys: &'a LogKeys) -> Walk<'a> {
        Walk {
            trust,
            relay,
            relay_id: relay.id.to_string(),
            keys,
            certs: HashMap::new(),
            envelopes: HashMap::new(),
            problem: None,
        }
    }

    /// Check entry `idx`; a receipt gives its signature to check and its
    /// row. Nothing after the first problem is checked.
    fn entry(&mut self, idx: u64, bytes: &[u8]) -> Option<(Job, ReceiptRow)> {
        if self.problem.is_some() {
            return None;
        }
        match self.check(idx, bytes) {
            Ok(receipt) => receipt,
            Err(why) => {
                self.problem = Some((idx, why));
                None
            }
        }
    }

    fn check(&mut self, idx: u64, bytes: &[u8]) -> Result<Option<(Job, ReceiptRow)>, String> {
        let entry = LogEntry::parse(bytes).map_err(|e| format!("not a log entry ({e})"))?;
        match entry {
            LogEntry::Certificate {
                facility_id,
                certificate,
                ..
            } => {
                let c = CertInfo::parse_pem(certificate.as_bytes(), "certificate")
                    .and_then(|c| {
                        self.trust.verify(&c.der, None).or_else(|e| match e {
                            crate::pki::CertError::Revoked { .. }
                            | crate::pki::CertError::Expired { .. } => {
                                CertInfo::parse(&c.der, "certificate")
                            }
                            other => Err(other),
                        })
                    })
                    .map_err(|e| format!("published certificate does not verify: {e}"))?;
                if !c.kind.is_facility() || c.id.to_string() != facility_id {
                    return Err("published certificate names another facility".into());
                }
                self.certs.entry(facility_id).or_default().push(c);
                Ok(None)
            }
            LogEntry::KeyTransition { new_key, .. } => {
                // Every key transition in the log is one the relay
                // announces (and this auditor learnt).
                let known = self
                    .keys
                    .keys()
                    .iter()
                    .any(|k| k.from_size == idx + 1 && k.key.encode() == new_key);
                if !known {
                    return Err("a key transition the relay does not announce (or that does not follow the log's keys)".into());
                }
                Ok(None)
            }
            LogEntry::Crl { crl, .. } => {
                if TrustStore::new(self.trust.ca_der(), Some(crl.as_bytes())).is_err() {
                    return Err("published CRL is not signed by the region's CA".into());
                }
                Ok(None)
            }
            LogEntry::Receipt { signer, receipt } => {
                let by_relay = matches!(receipt.purpose, Purpose::Acceptance | Purpose::Expiry);
                let key = if signer == self.relay_id {
                    if !by_relay {
                        return Err("the relay signed a receipt only a facility may sign".into());
                    }
                    self.relay.signing_key
                } else {
                    if by_relay {
                        return Err(format!("{signer} signed a receipt only the relay may sign"));
                    }
                    // The newest certificate of the signer published before this entry.
                    match self.certs.get(&signer).and_then(|v| v.last()) {
                        Some(c) => c.signing_key,
                        None => {
                            return Err(format!(
                                "{signer} signed a receipt but never published a certificate"
                            ))
                        }
                    }
                };
                let body = Body::parse(&receipt).map_err(|e| e.to_string())?;
                let envelope_id = body.envelope_id().to_string();
                let env = self.envelopes.entry(envelope_id.clone()).or_default();
                if let Some(why) = env.check_body(idx, &signer, &receipt, body) {
                    return Err(why);
                }
                let row = ReceiptRow {
                    idx,
                    envelope_id,
                    purpose: receipt.purpose,
                    signer,
                };
                Ok(Some((Job { idx, key, receipt }, row)))
            }
        }
    }
}

/// What the signature checks found.
struct Verified {
    /// Receipts handed to the checkers.
    receipts: u64,
    /// The first (lowest) leaf whose signature does not verify.
    first_bad: Option<u64>,
    /// Seconds the busiest checker spent verifying.
    busy_seconds: f64,
}

/// Ed25519 checks (ring, one signature at a time) on every core, fed tile
/// by tile while the next tiles are still being fetched.
struct Verifiers {
    queue: tokio::sync::mpsc::Sender<Jobs>,
    threads: Vec<std::thread::JoinHandle<std::time::Duration>>,
    first_bad: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    receipts: u64,
}

impl Verifiers {
    fn start(threads: usize) -> Verifiers {
        // A few tiles queued per core: enough to keep every core busy,
        // few enough that fetching waits for verifying, not memory.
        let (queue, jobs) = tokio::sync::mpsc::channel::<Jobs>(2 * threads);
        let jobs = Arc::new(Mutex::new(jobs));
        let first_bad = Arc::new(AtomicU64::new(u64::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (jobs, first_bad, stop) = (jobs.clone(), first_bad.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut busy = std::time::Duration::ZERO;
                    loop {
                        let batch = match jobs.lock() {
                            Ok(mut jobs) => jobs.blocking_recv(),
                            Err(_) => None,
                        };
                        let Some(batch) = batch else { break };
                        if stop.load(Ordering::Relaxed) {
                            continue;
                        }
                        let t0 = std::time::Instant::now();
                        for check in &batch.checks {
                            // After a bad signature only an earlier one matters.
                            if check.idx < first_bad.load(Ordering::Relaxed)
                                && !batch.verifies(check)
                            {
                                first_bad.fetch_min(check.idx, Ordering::Relaxed);
                            }
                        }
                        busy += t0.elapsed();
                    }
                    busy
                })
            })
            .collect();
        Verifiers {
            queue,
            threads,
            first_bad,
            stop,
            receipts: 0,
        }
    }

    /// Queue signatures (waits while the checkers are a few tiles behind).
    async fn submit(&mut self, jobs: Jobs) {
        if jobs.is_empty() {
            return;
        }
        self.receipts += jobs.len() as u64;
        // The checkers only stop when the queue is dropped.
        let _ = self.queue.send(jobs).await;
    }

    /// Wait for every queued signature to be checked.
    async fn finish(self) -> Verified {
        let Verifiers {
            queue,
            threads,
            first_bad,
            receipts,
            ..
        } = self;
        drop(queue);
        let busy = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .filter_map(|t| t.join().ok())
                .max()
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let bad = first_bad.load(Ordering::Relaxed);
        Verified {
            receipts,
            first_bad: (bad != u64::MAX).then_some(bad),
            busy_seconds: busy.as_secs_f64(),
        }
    }

    /// Stop checking: the sync failed for another reason.
    fn abandon(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The rows of one tile's entries.
struct Rows {
    tile: Tile,
    receipts: Vec<ReceiptRow>,
}

/// A row of the `tiles` table.
struct Tile {
    n: u64,
    /// The tile's entries (entry-bundle format).
    bundle: Vec<u8>,
    /// Their leaf hashes, 32 bytes each.
    leaf_hashes: Vec<u8>,
}

/// A receipt as the `receipts` table keeps it (its body is in its entry).
struct ReceiptRow {
    idx: u64,
    envelope_id: String,
    purpose: Purpose,
    signer: String,
}

impl Rows {
    /// Many receipts per statement: one statement per row made storing
    /// cost more than verifying. The rows' strings are moved into the
    /// statements, not copied. `OR IGNORE`, not `OR REPLACE`: a statement
    /// that may stop halfway (as `REPLACE` does on a NULL) makes SQLite
    /// copy every index page it touches to a statement journal first, and
    /// a receipt already stored (a `--full` sync) came from the same entry.
    async fn insert(self, tx: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
        const ROWS: usize = 500;
        sqlx::query("INSERT OR REPLACE INTO tiles (n, bundle, leaf_hashes) VALUES (?, ?, ?)")
            .bind(self.tile.n as i64)
            .bind(self.tile.bundle)
            .bind(self.tile.leaf_hashes)
            .execute(&mut *tx)
            .await?;
        let mut receipts = self.receipts.into_iter().peekable();
        while receipts.peek().is_some() {
            let chunk: Vec<_> = receipts.by_ref().take(ROWS).collect();
            let mut sql = String::from(
                "INSERT OR IGNORE INTO receipts (idx, envelope_id, purpose, signer) VALUES ",
            );
            sql.push_str(&vec!["(?, ?, ?, ?)"; chunk.len()].join(", "));
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.idx as i64)
                    .bind(r.envelope_id)
                    .bind(r.purpose.as_str())
                    .bind(r.signer);
            }
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// Writes rows while the log is still being checked, in one transaction
/// that [`Auditor::sync`] commits only when everything passed.
struct StoreWriter {
    rows: Option<tokio::sync::mpsc::Sender<Rows>>,
    task: Option<tokio::task::JoinHandle<Result<Transaction<'static, Sqlite>, sqlx::Error>>>,
}

impl StoreWriter {
    async fn begin(pool: &SqlitePool) -> Result<StoreWriter, AuditError> {
        let mut tx = pool.begin().await?;
        let (rows, mut queue) = tokio::sync::mpsc::channel::<Rows>(8);
        let task = tokio::spawn(async move {
            while let Some(rows) = queue.recv().await {
                rows.insert(&mut tx).await?;
            }
            Ok(tx)
        });
        Ok(StoreWriter {
            rows: Some(rows),
            task: Some(task),
        })
    }

    /// Queue rows (waits while the writer is a few tiles behind).
    async fn write(&mut self, rows: Rows) -> Result<(), AuditError> {
        let sent = match &self.rows {
            Some(queue) => queue.send(rows).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: say why.
        self.rows = None;
        self.wait().await.map(drop)
    }

    async fn wait(&mut self) -> Result<Transaction<'static, Sqlite>, AuditError> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(tx) => Ok(tx?),
                Err(e) => Err(AuditError::Usage(format!(
                    "the audit store's writer stopped: {e}"
                ))),
            },
            None => Err(AuditError::Usage("the audit store's writer stopped".into())),
        }
    }

    /// Every row written: the transaction, to be committed.
    async fn finish(mut self) -> Result<Transaction<'static, Sqlite>, AuditError> {
        self.rows = None;
        self.wait().await
    }

    /// Nothing of this sync is kept.
    async fn abandon(mut self) {
        self.rows = None;
        if let Ok(tx) = self.wait().await {
            let _ = tx.rollback().await;
        }
    }
}

/// A receipt's body, parsed once for its purpose.
enum Body {
    Submission(Submission),
    Acceptance(Acceptance),
    Delivery(Delivery),
    Expiry(Expiry),
}

impl Body {
    fn parse(r: &SignedReceipt) -> Result<Body, crate::receipt::ReceiptError> {
        Ok(match r.purpose {
            Purpose::Submission => Body::Submission(r.parse(Purpose::Submission)?),
            Purpose::Acceptance => Body::Acceptance(r.parse(Purpose::Acceptance)?),
            Purpose::Delivery => Body::Delivery(r.parse(Purpose::Delivery)?),
            Purpose::Expiry => Body::Expiry(r.parse(Purpose::Expiry)?),
        })
    }

    fn envelope_id(&self) -> &str {
        match self {
            Body::Submission(s) => &s.envelope_id,
            Body::Acceptance(a) => &a.envelope_id,
            Body::Delivery(d) => &d.envelope_id,
            Body::Expiry(x) => &x.envelope_id,
        }
    }
}

/// What the auditor knows of one envelope while walking the log.
#[derive(Default)]
struct EnvelopeState {
    submission: Option<(u64, String, Vec<String>)>,
    /// SHA-256 of the submission's signed body (what the acceptance names).
    submission_sha256: Option<String>,
    accepted: bool,
    /// The earliest time (unix seconds) an expiry may be signed: the
    /// acceptance time plus the expiry the relay announced in it.
    expires_at: Option<i64>,
    outcomes: Vec<String>,
}

use crate::receipt::unix_seconds as unix;

impl EnvelopeState {
    fn note(&mut self, idx: u64, purpose: &str, body: &str) {
        match purpose {
            "submission" => {
                if let Ok(s) = serde_json::from_str::<Submission>(body) {
                    self.submission_sha256 = Some(crate::pki::sha256_hex(body.as_bytes()));
                    self.submission = Some((
                        idx,
                        s.sender.to_string(),
                        s.recipients.iter().map(|r| r.to_string()).collect(),
                    ));
                }
            }
            "acceptance" => {
                self.accepted = true;
                self.expires_at = serde_json::from_str::<Acceptance>(body)
                    .ok()
                    .and_then(|a| a.earliest_expiry());
            }
            "delivery" => {
                if let Ok(d) = serde_json::from_str::<Delivery>(body) {
                    self.outcomes.push(d.recipient.to_string());
                }
            }
            "expiry" => {
                if let Ok(x) = serde_json::from_str::<Expiry>(body) {
                    self.outcomes.push(x.recipient.to_string());
                }
            }
            _ => {}
        }
    }

    /// Check a new receipt against the envelope's story so far.
    #[cfg(test)]
    fn check(&mut self, idx: u64, signer: &str, r: &SignedReceipt) -> Option<String> {
        match Body::parse(r) {
            Ok(body) => self.check_body(idx, signer, r, body),
            Err(e) => Some(e.to_string()),
        }
    }

    /// [`EnvelopeState::check`] with the body parsed.
    fn check_body(
        &mut self,
        idx: u64,
        signer: &str,
        r: &SignedReceipt,
        body: Body,
    ) -> Option<String> {
        match body {
            Body::Submission(s) => {
                if self.submission.is_some() {
                    return Some("a second submission of one envelope".into());
                }
                if s.sender.as_str() != signer {
                    return Some("the submission names another sender than its signer".into());
                }
                self.submission_sha256 = Some(r.body_sha256());
                self.submission = Some((
                    idx,
                    signer.to_string(),
                    s.recipients.iter().map(|x| x.to_string()).collect(),
                ));
            }
            Body::Acceptance(a) => {
                match &self.submission {
                    Some((sidx, _, _)) if *sidx == a.log_index => {}
                    _ => return Some("an acceptance without the submission it names".into()),
                }
                if self.submission_sha256.as_deref() != Some(a.submission_sha256.as_str()) {
                    return Some(
                        "an acceptance naming another submission body than the one logged".into(),
                    );
                }
                if self.accepted {
                    return Some("a second acceptance of one envelope".into());
                }
                self.accepted = true;
                self.expires_at = match a.earliest_expiry() {
                    Some(t) => Some(t),
                    None => {
                        return Some(
                            "the acceptance's time or announced expiry is unreadable".into(),
                        )
                    }
                };
            }
            Body::Delivery(d) => {
                if d.recipient.as_str() != signer {
                    return Some(
                        "a delivery receipt signed by someone else than its recipient".into(),
                    );
                }
                return self.outcome(d.recipient.to_string());
            }
            Body::Expiry(x) => {
                // No expiry before the time the acceptance announced.
                match (unix(&x.expired_at), self.expires_at) {
                    (Some(at), Some(earliest)) if at < earliest => {
                        return Some(format!(
                            "an expiry of {} signed at {}, before the {} the relay announced when it accepted the envelope",
                            x.recipient,
                            x.expired_at,
                            crate::pki::cert::rfc3339(earliest)
                        ))
                    }
                    (None, _) => return Some("the expiry's time is unreadable".into()),
                    _ => {}
                }
                if let Some(f) = &x.fetched_at {
                    if unix(f).is_none_or(|f| Some(f) > unix(&x.expired_at)) {
                        return Some(
                            "the expiry's fetch time is unreadable or after the expiry".into(),
                        );
                    }
                }
                return self.outcome(x.recipient.to_string());
            }
        }
        None
    }

    /// A delivery's or an expiry's outcome for `recipient`.
    fn outcome(&mut self, recipient: String) -> Option<String> {
        match &self.submission {
            Some((_, _, recipients)) if recipients.contains(&recipient) => {}
            _ => {
                return Some(format!(
                    "an outcome for {recipient}, who is not a recipient of a submitted envelope"
                ))
            }
        }
        if !self.accepted {
            return Some("an outcome before the relay's acceptance".into());
        }
        if self.outcomes.contains(&recipient) {
            return Some(format!("a second outcome for {recipient}"));
        }
        self.outcomes.push(recipient);
        None
    }
}

/// Check a receipt bundle with nothing but the CA certificate and the
/// relay's verifier key.
pub fn verify_receipt_file(
    bundle: &[u8],
    ca: &[u8],
    vkey: &str,
) -> Result<crate::receipt::Verified, String> {
    let b: crate::receipt::ReceiptBundle =
        serde_json::from_slice(bundle).map_err(|e| format!("not a receipt bundle: {e}"))?;
    let trust = TrustStore::new(ca, None).map_err(|e| e.to_string())?;
    let v = Verifier::parse(vkey.trim()).map_err(|e| format!("bad verifier key: {e}"))?;
    crate::receipt::bundle::verify(&b, &trust, Some(&v)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::receipt::now_rfc3339;

    fn submission(key: &SigningKey) -> SignedReceipt {
        let s = Submission {
            envelope_id: "ab".repeat(32),
            size: 10,
            sender: "1311234569".parse().unwrap(),
            sender_cert_sha256: "cd".repeat(32),
            recipients: vec!["1317654323".parse().unwrap()],
            submitted_at: now_rfc3339(),
        };
        SignedReceipt::sign(Purpose::Submission, &s, key)
    }

    fn acceptance(key: &SigningKey, submission_sha256: String) -> SignedReceipt {
        let a = Acceptance {
            envelope_id: "ab".repeat(32),
            submission_sha256,
            relay: "relay-01".into(),
            accepted_at: now_rfc3339(),
            log_index: 7,
            expiry_after_secs: 3600,
        };
        SignedReceipt::sign(Purpose::Acceptance, &a, key)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkers_report_the_lowest_bad_signature_whatever_the_order() {
        // Three tiles checked on three threads; bad signatures at leaves
        // 700 and 205 (a receipt checked against another facility's key),
        // the later tile submitted first: the lowest is reported, and every
        // receipt was handed over.
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let tile = |first: u64, bad: &[u64]| -> Jobs {
            let mut jobs = Jobs::default();
            for idx in first..first + 256 {
                jobs.push(Job {
                    idx,
                    key: if bad.contains(&idx) {
                        other.public_key()
                    } else {
                        key.public_key()
                    },
                    receipt: submission(&key),
                });
            }
            jobs
        };
        let mut v = Verifiers::start(3);
        v.submit(tile(512, &[700])).await;
        v.submit(tile(0, &[])).await;
        v.submit(tile(256, &[])).await;
        v.submit(tile(200, &[205])).await;
        let found = v.finish().await;
        assert_eq!(found.first_bad, Some(205));
        assert_eq!(found.receipts, 4 * 256);

        let mut v = Verifiers::start(2);
        v.submit(tile(0, &[])).await;
        let found = v.finish().await;
        assert_eq!(found.first_bad, None);
        assert_eq!(found.receipts, 256);

        // A signature that is not base64 of 64 bytes is a bad one too.
        let mut v = Verifiers::start(2);
        let mut jobs = tile(0, &[]);
        let mut garbled = submission(&key);
        garbled.signature = "bm90IGEgc2lnbmF0dXJl".into();
        jobs.push(Job {
            idx: 256,
            key: key.public_key(),
            receipt: garbled,
        });
        v.submit(jobs).await;
        let found = v.finish().await;
        assert_eq!(found.first_bad, Some(256));
        assert_eq!(found.receipts, 257);
    }

    #[test]
    fn an_acceptance_must_name_the_logged_submission_body() {
        let key = SigningKey::generate();
        let sub = submission(&key);

        let mut st = EnvelopeState::default();
        assert_eq!(st.check(7, "1311234569", &sub), None);
        let why = st
            .check(8, "relay-01", &acceptance(&key, "00".repeat(32)))
            .expect("an acceptance of another submission body passes");
        assert!(why.contains("another submission body"), "{why}");

        let mut st = EnvelopeState::default();
        assert_eq!(st.check(7, "1311234569", &sub), None);
        assert_eq!(
            st.check(8, "relay-01", &acceptance(&key, sub.body_sha256())),
            None
        );

        // The same when the submission was verified in an earlier sync.
        let mut st = EnvelopeState::default();
        st.note(7, "submission", &sub.body);
        assert!(st
            .check(8, "relay-01", &acceptance(&key, "00".repeat(32)))
            .is_some());
    }

    #[tokio::test]
    async fn an_audit_db_from_before_0003_keeps_its_receipts() {
        // An audit.db written when the receipts table repeated each body
        // (migrations 0001 and 0002 only, as the previous release left it).
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut receipt = submission(&key);
        // A body the entry's JSON has to escape every way it can.
        receipt.body = "{\"note\":\"\\\"quoted\\\" \\\\ / \u{e9} 日本\\n\\u00e9\"}".into();
        let entry = serde_json::to_string(&LogEntry::Receipt {
            signer: "1311234569".into(),
            receipt: receipt.clone(),
        })
        .unwrap();
        let (db, pool) = migrated_until(dir.path(), 2).await;
        {
            sqlx::query("INSERT INTO entries (idx, entry, leaf_hash) VALUES (0, ?, ?)")
                .bind(&entry)
                .bind(hex::encode(log::leaf_hash(entry.as_bytes())))
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO receipts (idx, envelope_id, purpose, signer, body) VALUES (0, ?, 'submission', '1311234569', ?)")
                .bind("ab".repeat(32))
                .bind(&receipt.body)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }

        let pool = open_db(&db).await.unwrap();
        let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('receipts')")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(columns, ["idx", "envelope_id", "purpose", "signer"]);
        let want = (
            0,
            "submission".to_string(),
            "1311234569".to_string(),
            receipt.body.clone(),
        );
        assert_eq!(
            envelope_receipts(&pool, &"ab".repeat(32)).await.unwrap(),
            std::slice::from_ref(&want)
        );
        assert_eq!(
            all_receipts(&pool).await.unwrap(),
            [(want.0, "ab".repeat(32), want.1, want.2, want.3)]
        );
        assert!(envelope_receipts(&pool, &"cd".repeat(32))
            .await
            .unwrap()
            .is_empty());
        // Its entry moved into the tiles (0004), the old table is gone.
        assert_eq!(
            stored_leaves(&pool).await.unwrap(),
            [log::leaf_hash(entry.as_bytes())]
        );
        assert_eq!(stored_tile(&pool, 0).await.unwrap(), [entry.into_bytes()]);
        assert!(
            sqlx::query("SELECT 1 FROM sqlite_master WHERE name = 'entries'")
                .fetch_optional(&pool)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// An audit.db made by the first `n` audit migrations only, as an
    /// earlier release left it, and a connection to it.
    async fn migrated_until(dir: &Path, n: usize) -> (std::path::PathBuf, SqlitePool) {
        let old = dir.join("migrations");
        std::fs::create_dir(&old).unwrap();
        for m in MIGRATOR.iter().take(n) {
            let name = format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_"));
            std::fs::write(old.join(name), m.sql.as_ref()).unwrap();
        }
        let db = dir.join("audit.db");
        let opts = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(opts).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        assert_eq!(migrator.iter().count(), n);
        migrator.run(&pool).await.unwrap();
        (db, pool)
    }

    /// An audit.db as migrations 0001–0003 left it, with `entries` rows
    /// at these leaf indexes (each entry's text is "entry i").
    async fn old_store(dir: &Path, idxs: impl Iterator<Item = i64>) -> std::path::PathBuf {
        let (db, pool) = migrated_until(dir, 3).await;
        for i in idxs {
            let entry = format!("entry {i}");
            sqlx::query("INSERT INTO entries (idx, entry, leaf_hash) VALUES (?, ?, ?)")
                .bind(i)
                .bind(&entry)
                .bind(hex::encode(log::leaf_hash(entry.as_bytes())))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        db
    }

    #[tokio::test]
    async fn the_entries_of_an_older_audit_db_move_into_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let db = old_store(dir.path(), 0..600).await;
        let pool = open_db(&db).await.unwrap();
        let want: Vec<Hash> = (0..600)
            .map(|i| log::leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        assert_eq!(stored_leaves(&pool).await.unwrap(), want);
        let widths: Vec<(i64, i64)> =
            sqlx::query_as("SELECT n, length(leaf_hashes) / 32 FROM tiles ORDER BY n")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(widths, [(0, 256), (1, 256), (2, 88)]);
        let tile = stored_tile(&pool, 1).await.unwrap();
        assert_eq!(tile.len(), 256);
        assert_eq!(tile[0], b"entry 256");
        assert_eq!(tile[255], b"entry 511");
        pool.close().await;
        // Opening it again changes nothing.
        let pool = open_db(&db).await.unwrap();
        assert_eq!(stored_leaves(&pool).await.unwrap(), want);
    }

    #[tokio::test]
    async fn an_older_audit_db_with_a_gap_is_refused_and_left_as_it_was() {
        for idxs in [vec![0, 1, 3], vec![0, 1, 2, 300]] {
            let dir = tempfile::tempdir().unwrap();
            let db = old_store(dir.path(), idxs.clone().into_iter()).await;
            let e = open_db(&db).await.expect_err("a gap");
            assert!(e.to_string().contains("gap"), "{e}");
            let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&db))
                .await
                .unwrap();
            let left: Vec<i64> = sqlx::query_scalar("SELECT idx FROM entries ORDER BY idx")
                .fetch_all(&pool)
                .await
                .unwrap();
            assert_eq!(left, idxs);
            let tiles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tiles")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(tiles, 0);
        }
    }
}
