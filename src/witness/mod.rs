//! The witness (`renkei witness serve`): C2SP tlog-witness over HTTP.
//!
//! A witness is configured with the logs it witnesses (origin and the log's
//! checkpoint verifier keys, in `DATA/witness.toml` or on the command line)
//! and nothing else is accepted. For each log it remembers the latest
//! checkpoint it cosigned (`DATA/witness.db`, SQLite). `POST
//! /add-checkpoint` checks a new checkpoint against that one — signed by
//! the log, the client's old size equal to the witness's, a consistency
//! proof that verifies — stores it and answers with a cosignature/v1 line;
//! checking and storing happen in one SQLite transaction on the only
//! connection, so two requests can never roll the stored size back.
//! `GET /<hex SHA-256 of origin>/checkpoint` serves the latest cosigned
//! checkpoint (monitoring prefix). `POST /add-key-transition` follows a
//! log's checkpoint key transition (docs/LOG.md §5.5): learnt only when
//! announced under the log's current key in exactly the tree this witness
//! cosigned last; kept in `key_transitions`.
//!
//! The witness key is its own Ed25519 key, `PROFILE/witness.key` (mode
//! 0600, created on first use), never the profile's signing key: a
//! cosigner's key signs cosignatures only. Messages: `crate::log::witness`
//! and `crate::log::cosignature`; exact bytes in docs/LOG.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::keys::SigningKey;
use crate::log::cosignature::{self, WitnessKey, WitnessSigner};
use crate::log::note::{self, Note, NoteError};
use crate::log::witness::{self as msg, AddCheckpoint};
use crate::log::{verify_consistency, Checkpoint, CheckpointError, Hash, Verifier, EMPTY_ROOT};
use crate::profile::Profile;
use crate::receipt::key_transition::{KeyTransition, TransitionProof};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/witness");

/// The witness's settings file in its data folder.
pub const CONFIG_FILE: &str = "witness.toml";
/// The witness's database in its data folder.
pub const DB_FILE: &str = "witness.db";
/// The witness key in the profile folder.
pub const KEY_FILE: &str = "witness.key";

/// Errors opening or running a witness.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// Profile trouble.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// Key trouble.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// Database trouble.
    #[error("witness database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration trouble.
    #[error("witness database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A bad configuration.
    #[error("{0}")]
    Config(String),
    /// Socket trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One witnessed log in `witness.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// The log's origin line.
    pub origin: String,
    /// Its checkpoint verifier keys (C2SP signed-note vkeys).
    pub keys: Vec<String>,
}

/// `DATA/witness.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's name (default `renkei-witness/<profile ID>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The logs witnessed (`[[log]]`).
    #[serde(default, rename = "log")]
    pub logs: Vec<LogSettings>,
}

impl WitnessConfig {
    /// Read `DATA/witness.toml`; absent means empty.
    pub fn load(data: &Path) -> Result<WitnessConfig, WitnessError> {
        let p = data.join(CONFIG_FILE);
        match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t)
                .map_err(|e| WitnessError::Config(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WitnessConfig::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Add a log by its verifier key (origin = key name), as `--log VKEY`.
    pub fn add_vkey(&mut self, vkey: &Verifier) {
        match self.logs.iter_mut().find(|l| l.origin == vkey.name()) {
            Some(l) => l.keys.push(vkey.encode()),
            None => self.logs.push(LogSettings {
                origin: vkey.name().to_string(),
                keys: vec![vkey.encode()],
            }),
        }
    }
}

/// The default witness name of a profile.
pub fn default_name(profile: &Profile) -> String {
    format!("renkei-witness/{}", profile.config.id)
}

/// The witness key of a profile, created (mode 0600) when absent; never
/// overwritten.
pub fn load_or_create_key(profile_dir: &Path) -> Result<SigningKey, WitnessError> {
    let p = profile_dir.join(KEY_FILE);
    if !p.exists() {
        match SigningKey::generate().save(&p) {
            Ok(()) | Err(crate::keys::KeyError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(SigningKey::load(&p)?)
}

/// The verifier key (`name+keyid+base64(0x04 || key)`) of a profile's
/// witness under `name`.
pub fn vkey(profile_dir: &Path, name: &str) -> Result<WitnessKey, WitnessError> {
    let key = load_or_create_key(profile_dir)?;
    WitnessKey::new(name, key.public_key()).map_err(|e| WitnessError::Config(e.to_string()))
}

/// Why an add-checkpoint request was not cosigned; each maps to the
/// status code tlog-witness prescribes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: not a request, not a checkpoint, or an old size over the
    /// checkpoint's.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 404: a log this witness does not witness.
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// 403: no valid signature by the log's key, or an invalid one.
    #[error("the checkpoint is not signed by the log's key")]
    BadSignature,
    /// 409: the old size is not the witness's size (given).
    #[error("the witness's size is {0}")]
    Conflict(u64),
    /// 422: the checkpoint is not consistent with the witness's.
    #[error("inconsistent checkpoint: {0}")]
    Inconsistent(String),
    /// 500: the witness's own trouble.
    #[error("internal error")]
    Internal(String),
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::UnknownLog(_) => StatusCode::NOT_FOUND,
            Refusal::BadSignature => StatusCode::FORBIDDEN,
            Refusal::Conflict(_) => StatusCode::CONFLICT,
            Refusal::Inconsistent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Internal(e.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Conflict(size) => (
                StatusCode::CONFLICT,
                [(header::CONTENT_TYPE, msg::SIZE_CONTENT_TYPE)],
                msg::encode_size_body(size),
            )
                .into_response(),
            Refusal::Internal(why) => {
                tracing::error!(error = %why, "witness internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "internal error\n",
                )
                    .into_response()
            }
            other => (
                other.status(),
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{other}\n"),
            )
                .into_response(),
        }
    }
}

/// A witness: its key, the logs it witnesses, its state.
pub struct Witness {
    signing: SigningKey,
    key: WitnessKey,
    logs: HashMap<String, Vec<Verifier>>,
    /// Per log, the key transitions verified (`key_transitions`), oldest
    /// first.
    learnt: std::sync::RwLock<HashMap<String, Vec<Learnt>>>,
    pool: SqlitePool,
}

/// A checkpoint key a log announced (docs/LOG.md §5.5).
#[derive(Debug, Clone)]
struct Learnt {
    /// The first size the new key signs (index + 1); the last the old does.
    from_size: u64,
    old: Verifier,
    new: Verifier,
}

impl Learnt {
    fn from_row(idx: i64, entry: &str) -> Result<Learnt, String> {
        let t = KeyTransition::parse(entry.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Learnt {
            from_size: idx as u64 + 1,
            old: t.old_key,
            new: t.new_key,
        })
    }
}

impl Witness {
    /// Open the witness of `profile_dir` (key) on `data` (configuration
    /// and database), witnessing the logs of `config`.
    pub async fn open(
        profile_dir: &Path,
        data: &Path,
        config: &WitnessConfig,
    ) -> Result<Witness, WitnessError> {
        let profile = Profile::open(profile_dir)?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| default_name(&profile));
        let signing = load_or_create_key(profile_dir)?;
        let key = WitnessKey::new(&name, signing.public_key())
            .map_err(|e| WitnessError::Config(e.to_string()))?;
        let mut logs: HashMap<String, Vec<Verifier>> = HashMap::new();
        for l in &config.logs {
            if l.keys.is_empty() {
                return Err(WitnessError::Config(format!(
                    "log {:?} has no verifier key",
                    l.origin
                )));
            }
            for k in &l.keys {
                let v = Verifier::parse(k).map_err(|e| {
                    WitnessError::Config(format!("log {:?}: key {k:?}: {e}", l.origin))
                })?;
                logs.entry(l.origin.clone()).or_default().push(v);
            }
        }
        if logs.is_empty() {
            return Err(WitnessError::Config(format!(
                "no log to witness: list them in {} or give --log VKEY",
                data.join(CONFIG_FILE).display()
            )));
        }
        std::fs::create_dir_all(data)?;
        let opts = SqliteConnectOptions::new()
            .filename(data.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        // One connection: every check-and-store runs alone.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let mut learnt: HashMap<String, Vec<Learnt>> = HashMap::new();
        for r in sqlx::query("SELECT origin, idx, entry FROM key_transitions ORDER BY origin, idx")
            .fetch_all(&pool)
            .await?
        {
            let l = Learnt::from_row(r.get(1), &r.get::<String, _>(2))
                .map_err(|e| WitnessError::Config(format!("a kept key transition: {e}")))?;
            learnt.entry(r.get(0)).or_default().push(l);
        }
        Ok(Witness {
            signing,
            key,
            logs,
            learnt: std::sync::RwLock::new(learnt),
            pool,
        })
    }

    /// The keys of `origin` that sign checkpoints of `size` (any size when
    /// `None`): the configured keys until a transition retires them, each
    /// learnt key from its announcement until a later one retires it.
    fn keys_at(&self, origin: &str, size: Option<u64>) -> Vec<Verifier> {
        let learnt = self.learnt.read().expect("lock");
        let learnt = learnt.get(origin).map(Vec::as_slice).unwrap_or(&[]);
        let retired_after = |k: &Verifier| learnt.iter().find(|l| &l.old == k).map(|l| l.from_size);
        let signs = |k: &Verifier, from: u64| match size {
            None => true,
            Some(s) => s >= from && retired_after(k).is_none_or(|last| s <= last),
        };
        let mut out: Vec<Verifier> = self
            .logs
            .get(origin)
            .map(|v| v.iter().filter(|k| signs(k, 0)).cloned().collect())
            .unwrap_or_default();
        out.extend(
            learnt
                .iter()
                .filter(|l| signs(&l.new, l.from_size))
                .map(|l| l.new.clone()),
        );
        out
    }

    /// Learn a key transition of a witnessed log (`POST
    /// /add-key-transition`, docs/LOG.md §5.5): a [`TransitionProof`] whose
    /// entry moves the log from its current key to a new one, announced in
    /// a checkpoint signed by the current key that is exactly the latest
    /// checkpoint this witness cosigned, the entry included in it. From
    /// then on the new key's checkpoints are cosigned, and the old key's
    /// only up to the announcement's size. Learning the same transition
    /// again changes nothing.
    pub async fn add_key_transition(&self, body: &[u8]) -> Result<(), Refusal> {
        let p: TransitionProof =
            serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let t = KeyTransition::parse(p.entry.as_bytes())
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let configured = self
            .logs
            .get(&t.origin)
            .ok_or_else(|| Refusal::UnknownLog(t.origin.clone()))?;
        let size = p
            .log_index
            .checked_add(1)
            .ok_or_else(|| Refusal::Malformed("the index is too large".into()))?;
        let current: Vec<Verifier> = {
            let learnt = self.learnt.read().expect("lock");
            let learnt = learnt.get(&t.origin).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(l) = learnt.iter().find(|l| l.from_size == size) {
                return if l.new == t.new_key && l.old == t.old_key {
                    Ok(())
                } else {
                    Err(Refusal::Inconsistent(
                        "another key transition is at this index".into(),
                    ))
                };
            }
            if learnt
                .iter()
                .any(|l| l.new.public_key() == t.new_key.public_key())
                || configured
                    .iter()
                    .any(|k| k.public_key() == t.new_key.public_key())
            {
                return Err(Refusal::Inconsistent(
                    "the new key was a key of this log before".into(),
                ));
            }
            match learnt.last() {
                Some(l) => vec![l.new.clone()],
                None => configured.clone(),
            }
        };
        if !current.contains(&t.old_key) {
            return Err(Refusal::BadSignature);
        }
        let (cp, _) = Checkpoint::open(
            p.checkpoint.as_bytes(),
            &t.origin,
            std::slice::from_ref(&t.old_key),
        )
        .map_err(|e| match e {
            CheckpointError::Note(_) => Refusal::BadSignature,
            other => Refusal::Malformed(other.to_string()),
        })?;
        if cp.size != size {
            return Err(Refusal::Malformed(format!(
                "the announcement has size {}, not the entry's index + 1 ({size})",
                cp.size
            )));
        }
        crate::log::verify_inclusion(
            p.log_index,
            cp.size,
            &crate::log::leaf_hash(p.entry.as_bytes()),
            &p.inclusion,
            &cp.root,
        )
        .map_err(|e| Refusal::Inconsistent(format!("the entry is not in the announcement: {e}")))?;
        let mut conn = self.pool.acquire().await?;
        sqlx::Executor::execute(&mut *conn, "BEGIN IMMEDIATE").await?;
        let result = async {
            let row = sqlx::query("SELECT size, root FROM logs WHERE origin = ?")
                .bind(&t.origin)
                .fetch_optional(&mut *conn)
                .await?;
            let (have, root): (u64, Vec<u8>) = row
                .map(|r| (r.get::<i64, _>(0) as u64, r.get::<Vec<u8>, _>(1)))
                .unwrap_or((0, EMPTY_ROOT.to_vec()));
            if have != cp.size {
                return Err(Refusal::Conflict(have));
            }
            if root != cp.root {
                return Err(Refusal::Inconsistent(
                    "the announcement is not the tree this witness cosigned at its size".into(),
                ));
            }
            sqlx::query("INSERT INTO key_transitions (origin, idx, entry) VALUES (?, ?, ?)")
                .bind(&t.origin)
                .bind(p.log_index as i64)
                .bind(&p.entry)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = sqlx::Executor::execute(&mut *conn, end).await {
            let _ = conn.detach();
            return Err(e.into());
        }
        result?;
        self.learnt
            .write()
            .expect("lock")
            .entry(t.origin.clone())
            .or_default()
            .push(Learnt {
                from_size: size,
                old: t.old_key,
                new: t.new_key,
            });
        tracing::info!(origin = %t.origin, from_size = size, "learnt a checkpoint key transition");
        Ok(())
    }

    /// The witness's verifier key.
    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// The latest cosigned checkpoint of `origin` and its size.
    pub async fn latest(&self, origin: &str) -> Result<Option<(u64, String)>, WitnessError> {
        let row = sqlx::query("SELECT size, note FROM logs WHERE origin = ?")
            .bind(origin)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1))))
    }

    /// Requests refused with a valid log signature: (origin, status, reason).
    pub async fn refused(&self) -> Result<Vec<(String, u16, String)>, WitnessError> {
        let rows = sqlx::query("SELECT origin, status, reason FROM refused ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    r.get::<i64, _>(1) as u16,
                    r.get::<String, _>(2),
                )
            })
            .collect())
    }

    /// Handle an add-checkpoint request body at time `now` (POSIX
    /// seconds): the cosignature lines to answer with, or the refusal.
    pub async fn add_checkpoint(&self, body: &[u8], now: u64) -> Result<String, Refusal> {
        let req = AddCheckpoint::parse(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let note = Note::parse(req.checkpoint.as_bytes())
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let origin = note.text.split('\n').next().unwrap_or("");
        if !self.logs.contains_key(origin) {
            return Err(Refusal::UnknownLog(origin.to_string()));
        }
        let keys = self.keys_at(origin, None);
        note::open(req.checkpoint.as_bytes(), &keys).map_err(|e| match e {
            NoteError::NoVerifiedSignature
            | NoteError::InvalidSignature { .. }
            | NoteError::AmbiguousKey { .. } => Refusal::BadSignature,
            other => Refusal::Malformed(other.to_string()),
        })?;
        let cp = match Checkpoint::parse(note.text.as_bytes()) {
            Ok(c) => c,
            Err(CheckpointError::Malformed(m)) if m == EMPTY_TREE_ROOT_MESSAGE => {
                return Err(Refusal::Inconsistent(
                    "a checkpoint of size 0 must have the empty tree's root".into(),
                ))
            }
            Err(e) => return Err(Refusal::Malformed(e.to_string())),
        };
        // Signed by a key that signs trees of this size: a retired key
        // signs none past its transition, a new key none before it.
        if keys.len() > 1 {
            note::open(
                req.checkpoint.as_bytes(),
                &self.keys_at(origin, Some(cp.size)),
            )
            .map_err(|_| Refusal::BadSignature)?;
        }
        if req.old_size > cp.size {
            return Err(Refusal::Malformed(format!(
                "old size {} is over the checkpoint's size {}",
                req.old_size, cp.size
            )));
        }
        let mut conn = self.pool.acquire().await?;
        sqlx::Executor::execute(&mut *conn, "BEGIN IMMEDIATE").await?;
        let result = self.check_and_store(&mut conn, &req, &cp, now).await;
        let end = match &result {
            Ok(_) | Err(Refusal::Inconsistent(_)) => "COMMIT",
            Err(_) => "ROLLBACK",
        };
        if let Err(e) = sqlx::Executor::execute(&mut *conn, end).await {
            let _ = conn.detach();
            return Err(e.into());
        }
        result
    }

    async fn check_and_store(
        &self,
        conn: &mut sqlx::SqliteConnection,
        req: &AddCheckpoint,
        cp: &Checkpoint,
        now: u64,
    ) -> Result<String, Refusal> {
        let row = sqlx::query("SELECT size, root FROM logs WHERE origin = ?")
            .bind(&cp.origin)
            .fetch_optional(&mut *conn)
            .await?;
        let (size, root): (u64, Hash) = match row {
            Some(r) => (
                r.get::<i64, _>(0) as u64,
                r.get::<Vec<u8>, _>(1)
                    .try_into()
                    .map_err(|_| Refusal::Internal("stored root is not 32 bytes".into()))?,
            ),
            None => (0, EMPTY_ROOT),
        };
        if req.old_size != size {
            return Err(Refusal::Conflict(size));
        }
        let consistent = if req.old_size == 0 {
            if req.proof.is_empty() {
                Ok(())
            } else {
                Err("a proof from size 0 must be empty".to_string())
            }
        } else {
            verify_consistency(req.old_size, cp.size, &req.proof, &root, &cp.root)
                .map_err(|e| e.to_string())
        };
        if let Err(why) = consistent {
            let why = format!(
                "size {} is not consistent with the cosigned size {}: {why}",
                cp.size, size
            );
            sqlx::query(
                "INSERT INTO refused (origin, at, status, reason, request) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&cp.origin)
            .bind(now as i64)
            .bind(422i64)
            .bind(&why)
            .bind(&req.checkpoint)
            .execute(&mut *conn)
            .await?;
            tracing::warn!(origin = %cp.origin, reason = %why, "refused an inconsistent checkpoint (kept)");
            return Err(Refusal::Inconsistent(why));
        }
        let ts = now.clamp(1, cosignature::MAX_TIMESTAMP);
        let signer = WitnessSigner::new(self.key.name(), &self.signing)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        let text = cp.to_text().map_err(|e| Refusal::Internal(e.to_string()))?;
        let line = signer.cosign(&text, ts);
        let stored = cosignature::add_signatures(&req.checkpoint, std::slice::from_ref(&line))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        sqlx::query(
            "INSERT INTO logs (origin, size, root, note, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, \
             note = excluded.note, updated_at = excluded.updated_at",
        )
        .bind(&cp.origin)
        .bind(cp.size as i64)
        .bind(cp.root.to_vec())
        .bind(&stored)
        .bind(now as i64)
        .execute(&mut *conn)
        .await?;
        Ok(cosignature::encode_signature_lines(&[line]))
    }

    /// The latest cosigned checkpoint of the log whose origin hashes
    /// (SHA-256, lowercase hex) to `origin_hash`.
    pub async fn checkpoint_by_hash(
        &self,
        origin_hash: &str,
    ) -> Result<Option<String>, WitnessError> {
        let Some(origin) = self
            .logs
            .keys()
            .find(|o| crate::pki::sha256_hex(o.as_bytes()) == origin_hash)
        else {
            return Ok(None);
        };
        Ok(self.latest(origin).await?.map(|(_, n)| n))
    }
}

/// The message `Checkpoint::parse` gives for a size-0 checkpoint whose
/// root is not the empty tree's (tlog-witness wants 422 for it).
const EMPTY_TREE_ROOT_MESSAGE: &str = "an empty tree's root must be SHA-256 of nothing";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

/// The witness's HTTP application.
pub fn app(w: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/add-key-transition", post(add_key_transition))
        .route("/{origin_hash}/checkpoint", get(checkpoint))
        .layer(DefaultBodyLimit::max(msg::MAX_REQUEST_BYTES))
        .with_state(w)
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    match w.add_checkpoint(&body, now_secs()).await {
        Ok(lines) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            lines,
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn add_key_transition(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    match w.add_key_transition(&body).await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ok\n",
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn checkpoint(State(w): State<Arc<Witness>>, UrlPath(hash): UrlPath<String>) -> Response {
    match w.checkpoint_by_hash(&hash).await {
        Ok(Some(note)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            note,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no checkpoint of this log\n").into_response(),
        Err(e) => Refusal::Internal(e.to_string()).into_response(),
    }
}

/// Serve over plain HTTP on `listener` until `shutdown` resolves (the
/// protocol needs no transport security: every answer is signed).
pub async fn serve(
    listener: tokio::net::TcpListener,
    w: Arc<Witness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WitnessError> {
    axum::serve(listener, app(w))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Where a witness keeps its state (for messages).
pub fn db_path(data: &Path) -> PathBuf {
    data.join(DB_FILE)
}
