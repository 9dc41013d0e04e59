//! Ciphertext storage behind one trait, [`BlobStore`], and its filesystem
//! implementation, [`FsBlobStore`].
//!
//! # The choice
//!
//! Ciphertext (up to `max_upload_bytes`, 2 GiB by default) is kept out of
//! the database: the database holds only envelope rows, receipts and the
//! log, and refers to ciphertext by its content address, the SHA-256 that is
//! also the envelope ID. Large values in PostgreSQL (`bytea` is limited to
//! 1 GiB, large objects need their own lifecycle) would make every backup,
//! replica and vacuum carry the ciphertext; a blob store keeps the database
//! small and lets ciphertext live on cheaper storage.
//!
//! Every relay instance must reach every blob: with several instances behind
//! a load balancer, the [`FsBlobStore`] folder (`DATA/blobs`) is a shared
//! POSIX filesystem (NFS v4, CephFS, a cloud file share) mounted at the same
//! place on every instance; with PostgreSQL nothing else lives under
//! `DATA`, so the instances may share the whole data folder. The filesystem
//! must give an atomic `rename` within one folder tree and honour `fsync`
//! (NFS v4 with `sync`/`hard` mounts does; do not use `async` or `soft`).
//!
//! # The protocol
//!
//! 1. [`BlobStore::stage`] opens a staged object; the upload is streamed
//!    into it ([`StagedBlob::write`]) while it hashes the bytes. Nothing
//!    staged is ever served.
//! 2. [`StagedBlob::commit`] checks that the bytes hash to the envelope ID
//!    and publishes them under that address, atomically, and durably: at
//!    once (`sync = "upload"`: the file, then its folder, fsync'd), or
//!    (`sync = "batch"`, the default on Linux) by the one `syncfs` that
//!    the sequencer has the store run ([`BlobStore::sync`]) beside each
//!    batch that accepts uploads, before that batch commits. Writing the
//!    same address twice is harmless: the content is the same (and a file
//!    already there is only ever replaced by a durable one).
//! 3. Only then does the relay insert the envelope row and sign the
//!    acceptance (one database transaction). A crash between 2 and 3
//!    leaves an unreferenced blob, which is never served (downloads go
//!    through the envelope row) and is rewritten identically if the sender
//!    retries. The relay's sweep removes such blobs once they are a day
//!    old (`Store::reclaim_orphans`, at most hourly): it checks each
//!    candidate against the envelope rows and deletes it under the
//!    sequencer lock, and `accept` checks, under the same lock, that its
//!    blob is still there before committing, so a retry racing the
//!    collector either keeps its blob or fails cleanly (503) and is retried.
//!
//! A staged object that is dropped without commit (refused or interrupted
//! upload, failed write) is removed; one left behind by a killed process is
//! removed once it is a day old by the relay's hourly sweep
//! ([`BlobStore::remove_stale_staged`]).
//!
//! On disk: `blobs/<first two hex digits>/<envelope ID>.upload-<uuid>`
//! while uploading, then `blobs/<first two hex digits>/<envelope ID>`: the
//! upload is staged in the folder of the address its sender signed, so
//! that commit is a `rename` within one folder (one folder changed per
//! upload, no lock shared by every upload in flight, and only that folder
//! to fsync). A staged name is never an address, so neither downloads nor
//! the orphan collector ever take it for a blob.
//!
//! # Limits
//!
//! - One blob is at most `max_upload_bytes` (relay setting, default
//!   2 GiB); the relay refuses larger submissions before storing anything.
//! - The filesystem needs room for the committed blobs plus the uploads in
//!   flight (each staged at its full size). A full disk or exhausted quota
//!   fails the upload with `507 Insufficient Storage`, any other storage
//!   failure (permissions, a missing mount, I/O errors) with
//!   `503 Service Unavailable`; in both cases the staged bytes are removed
//!   and nothing refers to them.
//! - Ciphertext of finished envelopes is deleted after the retention period
//!   (`delete_after_secs`); receipts and the log stay.
//!
//! # Moving to object storage
//!
//! An S3-style implementation of [`BlobStore`] needs no change elsewhere:
//!
//! - `stage` starts a multipart upload to a temporary key
//!   (`staging/<uuid>`), `write` buffers and sends parts (5 MiB minimum
//!   except the last) while hashing;
//! - `commit` completes the upload, then either copies the temporary key to
//!   `blobs/<envelope ID>` and deletes the temporary key, or, simpler, puts
//!   the object straight at its content-addressed key (an object written
//!   once and never changed; a second identical write is harmless) with
//!   the SHA-256 as checksum (`x-amz-checksum-sha256`) so the service
//!   verifies it too; commit returns only once the service has acknowledged
//!   the object (read-after-write consistent on current S3, GCS, Azure);
//! - dropping a staged object aborts the multipart upload; a lifecycle rule
//!   on the `staging/` prefix ("abort incomplete multipart uploads after 1
//!   day") removes what a crashed instance left;
//! - `open` is a streaming GET, `exists` a HEAD, `delete` a DELETE;
//! - map "no space"/quota answers to [`BlobError::Full`] and transport or
//!   5xx failures to [`BlobError::Unavailable`].

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::writeback::{AlignedBuf, Direct};

/// Blob storage errors. The I/O details are for the relay's log; clients
/// are told only which kind of failure it was.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No space left (disk full, quota exhausted): nothing was stored.
    #[error("ciphertext storage is full: {0}")]
    Full(#[source] std::io::Error),
    /// The storage cannot be used (permission denied, missing mount, I/O
    /// error): nothing was stored.
    #[error("ciphertext storage is unavailable: {0}")]
    Unavailable(#[source] std::io::Error),
    /// The staged bytes do not hash to the address they were committed
    /// under (nothing was published).
    #[error("the staged bytes do not hash to {0}")]
    Mismatch(String),
    /// Not a content address (64 lowercase hex digits).
    #[error("{0:?} is not a content address")]
    BadAddress(String),
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        // ENOSPC, EDQUOT, EFBIG.
        let full = matches!(
            e.kind(),
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge
        ) || matches!(e.raw_os_error(), Some(28 | 122 | 27));
        if full {
            BlobError::Full(e)
        } else {
            BlobError::Unavailable(e)
        }
    }
}

/// A blob opened for reading.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Content-addressed ciphertext storage shared by every relay instance.
/// Addresses are envelope IDs: the lowercase hex SHA-256 of the bytes.
pub trait BlobStore: Send + Sync {
    /// Start a staged object for an upload in progress that is expected
    /// to be the `size` bytes with address `id` (what the sender signed);
    /// [`StagedBlob::commit`] checks it.
    fn stage<'a>(
        &'a self,
        id: &'a str,
        size: u64,
    ) -> BoxFuture<'a, Result<Box<dyn StagedBlob>, BlobError>>;

    /// Open the blob stored at `id`, or `None` when there is none.
    fn open<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<BlobReader>, BlobError>>;

    /// Whether a blob is stored at `id`.
    fn exists<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BlobError>>;

    /// Whether a blob is stored at each of `ids`, in order (the sequencer
    /// asks for a whole batch at once; a store answers them together where
    /// that is cheaper than one by one).
    fn exists_each<'a>(
        &'a self,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, Vec<Result<bool, BlobError>>> {
        Box::pin(futures_util::future::join_all(
            ids.iter().map(|id| self.exists(id)),
        ))
    }

    /// Delete the blob at `id` (no error when there is none).
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BlobError>>;

    /// The addresses of committed blobs last written more than `age` ago
    /// (candidates for the orphan collector, which checks each against the
    /// database under the sequencer lock).
    fn committed_before(&self, age: Duration) -> BoxFuture<'_, Result<Vec<String>, BlobError>>;

    /// Remove the staged objects of uploads that a killed process left
    /// behind, not written for `age`; returns how many. Object stores
    /// leave this to the bucket's lifecycle rule (see the module
    /// documentation) and remove nothing here.
    fn remove_stale_staged(&self, _age: Duration) -> BoxFuture<'_, Result<usize, BlobError>> {
        Box::pin(async { Ok(0) })
    }

    /// Make durable the blobs whose commit left that to this call: every
    /// one committed before it (the file system store with `sync =
    /// "batch"`: one `syncfs` for all of them). The sequencer calls it for
    /// every batch that accepts uploads, beside the batch's statements, and
    /// commits the batch only once it returned `Ok`. Stores whose commit
    /// is durable by itself (the default) have nothing to do.
    fn sync(&self) -> BoxFuture<'_, Result<(), BlobError>> {
        Box::pin(async { Ok(()) })
    }

    /// This store's identity: a random ID written into the store (create
    /// only, so concurrent first starts agree) the first time it is asked
    /// for, and read back after that. The database records the identity of
    /// the store its ciphertext is in, and a relay refuses to start on
    /// another store (`Store::open_with`).
    fn identity(&self) -> BoxFuture<'_, Result<String, BlobError>>;

    /// Where the store is, for messages (a folder, a bucket).
    fn describe(&self) -> String;
}

/// An upload in progress. Dropping it without [`StagedBlob::commit`]
/// discards the bytes.
pub trait StagedBlob: Send {
    /// Append bytes.
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>>;

    /// Bytes written so far.
    fn len(&self) -> u64;

    /// Whether nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lowercase hex SHA-256 of the bytes written so far (once every one
    /// of them is hashed).
    fn sha256_hex(&mut self) -> BoxFuture<'_, Result<String, BlobError>>;

    /// Publish the bytes at `id`, which must be their SHA-256, durably:
    /// at once, or once [`BlobStore::sync`] has returned `Ok` after this
    /// (a store that defers it, see [`BlobSync`]). Once this returns `Ok`,
    /// [`BlobStore::open`] on any instance finds them.
    fn commit(self: Box<Self>, id: &str) -> BoxFuture<'static, Result<(), BlobError>>;
}

/// Staged objects older than this are left-overs of a killed process.
pub const STALE_STAGED: Duration = Duration::from_secs(24 * 3600);

/// Where earlier versions staged uploads (`blobs/staging/upload-<uuid>`);
/// only swept now.
const LEGACY_STAGING: &str = "staging";

/// What a staged file's name holds after its address.
const STAGED_MARK: &str = ".upload-";

/// The file holding the store's identity ([`BlobStore::identity`]).
const IDENTITY: &str = "store-id";

/// When the file system store makes committed ciphertext durable
/// (`[blob_store] sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobSync {
    /// Once per log batch: the commit of an upload writes and names its
    /// file, and one `syncfs` of the blob folder's file system
    /// ([`BlobStore::sync`]) makes every file of the batch durable before
    /// the batch commits. Linux 5.8 or later (earlier kernels do not
    /// report write errors to `syncfs`); elsewhere the store uses `upload`.
    #[default]
    Batch,
    /// At each upload's commit: its file, then its folder, are fsync'd.
    Upload,
}

/// Blobs as files in a folder that every instance mounts (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    /// With [`BlobSync::Batch`]: what [`BlobStore::sync`] works with.
    batch: Option<Arc<BatchSync>>,
}

/// The blob folder, open for `syncfs`, and the first failure of one.
#[derive(Debug)]
struct BatchSync {
    /// Opened with the store: `syncfs` reports on it every write error of
    /// the file system since then (once).
    dir: std::fs::File,
    /// Set by a failed `syncfs` and kept: the file system lost writes that
    /// some committed file may hold, so no later batch may take its
    /// `syncfs` for a promise (the error is reported once). Uploads are
    /// refused (503) until the relay is restarted, after the disk is seen
    /// to; an upload retried then is stored again (see
    /// [`StagedBlob::commit`]).
    failed: std::sync::OnceLock<String>,
}

/// Whether `syncfs` reports write errors here (Linux 5.8 and later).
fn syncfs_reports_errors() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

impl FsBlobStore {
    /// Use (and create if needed) the blob folder `root`. (Staged files
    /// left by a killed process go in the relay's sweep, which runs at
    /// start and then hourly: [`BlobStore::remove_stale_staged`].)
    /// Every commit is made durable by itself ([`BlobSync::Upload`]).
    pub fn open(root: &Path) -> Result<FsBlobStore, BlobError> {
        Self::open_with(root, BlobSync::Upload)
    }

    /// Use the blob folder `root`, making commits durable as `sync` says
    /// ([`BlobSync::Batch`] falls back to `Upload` where `syncfs` would
    /// not report write errors).
    pub fn open_with(root: &Path, sync: BlobSync) -> Result<FsBlobStore, BlobError> {
        std::fs::create_dir_all(root)?;
        let batch = if sync == BlobSync::Batch && syncfs_reports_errors() {
            Some(Arc::new(BatchSync {
                dir: std::fs::File::open(root)?,
                failed: std::sync::OnceLock::new(),
            }))
        } else {
            None
        };
        Ok(FsBlobStore {
            root: root.to_path_buf(),
            batch,
        })
    }

    /// Make [`BlobStore::sync`] fail from now on, as after a failed
    /// `syncfs` (tests).
    #[cfg(test)]
    pub(crate) fn fail_sync_for_test(&self, why: &str) {
        if let Some(b) = &self.batch {
            let _ = b.failed.set(why.to_string());
        }
    }

    /// How this store makes commits durable.
    pub fn sync_mode(&self) -> BlobSync {
        if self.batch.is_some() {
            BlobSync::Batch
        } else {
            BlobSync::Upload
        }
    }

    /// The blob folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `id` is (or would be) stored.
    pub fn path(&self, id: &str) -> Result<PathBuf, BlobError> {
        address_in(&self.root, id)
    }

    /// Whether `name` (a file name in a fan-out folder) is a staged upload.
    pub fn is_staged(name: &str) -> bool {
        name.split_once(STAGED_MARK)
            .is_some_and(|(id, _)| crate::receipt::valid_envelope_id(id))
    }

    /// The fan-out folders (`blobs/<2 hex digits>`).
    fn fan_out_folders(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for dir in std::fs::read_dir(&self.root)?.flatten() {
            let Some(prefix) = dir.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let hex = prefix.len() == 2
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if hex && dir.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((prefix, dir.path()));
            }
        }
        Ok(out)
    }
}

/// Where the blob `id` is (or would be) stored under `root`.
fn address_in(root: &Path, id: &str) -> Result<PathBuf, BlobError> {
    if !crate::receipt::valid_envelope_id(id) {
        return Err(BlobError::BadAddress(id.to_string()));
    }
    Ok(root.join(&id[..2]).join(id))
}

/// How long since the file `e` was last written (none when unknown).
fn unchanged_for(e: &std::fs::DirEntry) -> Option<Duration> {
    e.metadata().ok()?.modified().ok()?.elapsed().ok()
}

/// Remove the files in `dir` whose name passes `pick` and that were not
/// modified for `age` (best effort); returns how many went.
fn remove_old_files(dir: &Path, age: Duration, pick: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        if !e.file_name().to_str().is_some_and(&pick) {
            continue;
        }
        if unchanged_for(&e).is_some_and(|a| a > age) && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(file = %e.path().display(), "removed a stale staged upload");
            removed += 1;
        }
    }
    removed
}

impl BlobStore for FsBlobStore {
    fn stage<'a>(
        &'a self,
        id: &'a str,
        size: u64,
    ) -> BoxFuture<'a, Result<Box<dyn StagedBlob>, BlobError>> {
        Box::pin(async move {
            let dest = self.path(id)?;
            let path = dest.with_file_name(format!("{id}{STAGED_MARK}{}", uuid::Uuid::new_v4()));
            let abandoned = Arc::new(AtomicBool::new(false));
            Ok(Box::new(FsStaged {
                sink: Some(Sink {
                    path: path.clone(),
                    root: self.root.clone(),
                    file: None,
                    abandoned: Arc::clone(&abandoned),
                    digest: ring::digest::Context::new(&ring::digest::SHA256),
                    out: Direct::eager(),
                }),
                abandoned,
                hashed: false,
                in_flight: None,
                batch: crate::writeback::buffer_for(size, BATCH),
                buf: None,
                spare: None,
                path,
                root: self.root.clone(),
                deferred: self.batch.is_some(),
                len: 0,
                committed: false,
            }) as Box<dyn StagedBlob>)
        })
    }

    fn open<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<BlobReader>, BlobError>> {
        Box::pin(async move {
            match tokio::fs::File::open(self.path(id)?).await {
                Ok(f) => Ok(Some(Box::pin(f) as BlobReader)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn exists<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BlobError>> {
        Box::pin(async move { Ok(tokio::fs::try_exists(self.path(id)?).await?) })
    }

    /// One trip to the blocking pool for the whole list.
    fn exists_each<'a>(
        &'a self,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, Vec<Result<bool, BlobError>>> {
        let paths: Vec<Result<PathBuf, BlobError>> = ids.iter().map(|id| self.path(id)).collect();
        Box::pin(async move {
            let n = paths.len();
            tokio::task::spawn_blocking(move || {
                paths
                    .into_iter()
                    .map(|p| Ok(std::fs::exists(p?)?))
                    .collect()
            })
            .await
            .unwrap_or_else(|e| {
                (0..n)
                    .map(|_| Err(BlobError::Unavailable(std::io::Error::other(e.to_string()))))
                    .collect()
            })
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(id)?).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// One `syncfs` of the blob folder's file system (with
    /// [`BlobSync::Batch`]); a failure is kept (see [`BatchSync`]).
    fn sync(&self) -> BoxFuture<'_, Result<(), BlobError>> {
        let batch = self.batch.clone();
        Box::pin(async move {
            let Some(batch) = batch else {
                return Ok(());
            };
            let failed = |m: &str| {
                BlobError::Unavailable(std::io::Error::other(format!(
                    "writing ciphertext to disk failed ({m}); uploads are refused until the relay is restarted (check the disk first)"
                )))
            };
            if let Some(m) = batch.failed.get() {
                return Err(failed(m));
            }
            let b = Arc::clone(&batch);
            match blocking(move || syncfs(&b.dir)).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let m = batch.failed.get_or_init(|| e.to_string());
                    tracing::error!(error = %m, "syncfs of the blob store failed");
                    Err(failed(m))
                }
            }
        })
    }

    fn identity(&self) -> BoxFuture<'_, Result<String, BlobError>> {
        let path = self.root.join(IDENTITY);
        let root = self.root.clone();
        Box::pin(async move {
            for _ in 0..50 {
                match tokio::fs::read_to_string(&path).await {
                    Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
                    // Being written by a concurrent first start: wait.
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let id = uuid::Uuid::new_v4().to_string();
                        match tokio::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&path)
                            .await
                        {
                            Ok(mut f) => {
                                f.write_all(id.as_bytes()).await?;
                                f.sync_all().await?;
                                sync_dir(&root).await?;
                                return Ok(id);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(BlobError::Unavailable(std::io::Error::other(format!(
                "{} stays empty",
                path.display()
            ))))
        })
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn committed_before(&self, age: Duration) -> BoxFuture<'_, Result<Vec<String>, BlobError>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                for (prefix, dir) in store.fan_out_folders()? {
                    for f in std::fs::read_dir(dir)?.flatten() {
                        let Some(id) = f.file_name().to_str().map(str::to_string) else {
                            continue;
                        };
                        // Staged uploads are not addresses: never listed.
                        if !crate::receipt::valid_envelope_id(&id) || !id.starts_with(&prefix) {
                            continue;
                        }
                        if unchanged_for(&f).is_some_and(|a| a >= age) {
                            out.push(id);
                        }
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| BlobError::Unavailable(std::io::Error::other(e.to_string())))?
        })
    }

    /// Staged files in every fan-out folder, and in the staging folder of
    /// earlier versions.
    fn remove_stale_staged(&self, age: Duration) -> BoxFuture<'_, Result<usize, BlobError>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut removed = remove_old_files(&store.root.join(LEGACY_STAGING), age, |_| true);
                for (_, dir) in store.fan_out_folders()? {
                    removed += remove_old_files(&dir, age, FsBlobStore::is_staged);
                }
                Ok(removed)
            })
            .await
            .map_err(|e| BlobError::Unavailable(std::io::Error::other(e.to_string())))?
        })
    }
}

/// Bytes gathered from the upload before they are handed to the blocking
/// pool to be hashed and written: one hop per MiB (a 64 KiB upload makes
/// one), while the next MiB arrives.
const BATCH: usize = 1 << 20;

/// A staged file in its address's fan-out folder. The upload's chunks are gathered
/// into aligned [`BATCH`]-byte buffers; each full buffer is hashed and
/// written on the blocking pool while the next one fills, straight to the
/// disk ([`Direct`]: no copy into the page cache), so that the fsync at
/// [`StagedBlob::commit`] waits only for the last, partial batch. The file
/// is created by the first batch written; an upload that fits in one batch
/// is hashed where it arrives and created, written, made durable and
/// named in one hop to the blocking pool, at the commit.
struct FsStaged {
    /// The file and the hash of what reached it, unless a batch is in
    /// flight.
    sink: Option<Sink>,
    /// Set when dropped uncommitted (see [`Sink::create`]).
    abandoned: Arc<AtomicBool>,
    /// The bytes in `buf` are hashed already (not yet written).
    hashed: bool,
    /// The batch being hashed and written; it gives the sink back.
    in_flight: Option<tokio::task::JoinHandle<(Sink, AlignedBuf, std::io::Result<()>)>>,
    /// Bytes per batch: [`BATCH`], or less for a smaller upload.
    batch: usize,
    /// The batch being filled (none before the first byte).
    buf: Option<AlignedBuf>,
    /// The previous batch's buffer, for the next one.
    spare: Option<AlignedBuf>,
    path: PathBuf,
    root: PathBuf,
    /// Durability left to [`BlobStore::sync`] ([`BlobSync::Batch`]).
    deferred: bool,
    len: u64,
    committed: bool,
}

/// What the blocking pool works on, one batch at a time.
struct Sink {
    path: PathBuf,
    /// The blob folder (fsynced when a fan-out folder is made in it).
    root: PathBuf,
    /// Created by the first batch written.
    file: Option<std::fs::File>,
    abandoned: Arc<AtomicBool>,
    digest: ring::digest::Context,
    out: Direct,
}

impl Sink {
    /// The staged file, created when first needed.
    fn create(&mut self) -> std::io::Result<&std::fs::File> {
        if self.file.is_none() {
            let create = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&self.path)
            };
            let file = match create() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // The address's fan-out folder, made (and its name made
                    // durable) by the first upload that needs it.
                    let dir = self.path.parent().unwrap_or(&self.root);
                    std::fs::create_dir_all(dir)?;
                    std::fs::File::open(&self.root)?.sync_all()?;
                    create()?
                }
                r => r?,
            };
            // Dropped meanwhile: its Drop may have looked for the file
            // before it existed (it sets the flag first, then removes).
            if self.abandoned.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&self.path);
                return Err(std::io::Error::other("the upload was abandoned"));
            }
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("created above"))
    }

    /// Hash (unless `hashed`) and write a batch.
    fn put(&mut self, batch: &AlignedBuf, hashed: bool) -> std::io::Result<()> {
        if !hashed {
            self.digest.update(batch.data());
        }
        self.create()?;
        let file = self.file.as_ref().expect("created above");
        self.out.write_all(file, batch.data())
    }
}

impl FsStaged {
    /// Wait for the batch in flight and take the sink back.
    async fn settle(&mut self) -> Result<&mut Sink, BlobError> {
        if let Some(job) = self.in_flight.take() {
            let (sink, mut buf, written) = job
                .await
                .map_err(|e| BlobError::Unavailable(std::io::Error::other(e.to_string())))?;
            self.sink = Some(sink);
            buf.clear();
            self.spare = Some(buf);
            written?;
        }
        self.sink.as_mut().ok_or_else(closed)
    }

    /// Hand the gathered bytes to the blocking pool (after the previous
    /// batch is written).
    async fn hand_off(&mut self) -> Result<(), BlobError> {
        self.settle().await?;
        let mut sink = self.sink.take().ok_or_else(closed)?;
        let Some(batch) = self.buf.take() else {
            self.sink = Some(sink);
            return Ok(());
        };
        self.buf = self.spare.take();
        let hashed = std::mem::take(&mut self.hashed);
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let written = sink.put(&batch, hashed);
            (sink, batch, written)
        }));
        Ok(())
    }

    /// Every byte written so far hashed: here when nothing was written to
    /// the file yet (the bytes are then written at the commit), by
    /// writing the gathered bytes otherwise.
    async fn hash_all(&mut self) -> Result<&mut Sink, BlobError> {
        let pending = self.buf.as_ref().is_some_and(|b| !b.is_empty()) && !self.hashed;
        let first =
            self.in_flight.is_none() && self.sink.as_ref().is_some_and(|s| s.file.is_none());
        if pending && first {
            let (sink, buf) = (self.sink.as_mut(), self.buf.as_ref());
            if let (Some(sink), Some(buf)) = (sink, buf) {
                sink.digest.update(buf.data());
                self.hashed = true;
            }
        } else if pending {
            self.hand_off().await?;
        }
        self.settle().await
    }
}

fn closed() -> BlobError {
    BlobError::Unavailable(std::io::Error::other("staged file closed"))
}

impl StagedBlob for FsStaged {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let mut rest = chunk;
            if self.hashed {
                // Hashed by a look at the digest: written as it is.
                self.hand_off().await?;
            }
            while !rest.is_empty() {
                let size = self.batch;
                let buf = self.buf.get_or_insert_with(|| AlignedBuf::new(size));
                let n = buf.fill(rest);
                let full = buf.room() == 0;
                rest = &rest[n..];
                self.len += n as u64;
                if full {
                    self.hand_off().await?;
                }
            }
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn sha256_hex(&mut self) -> BoxFuture<'_, Result<String, BlobError>> {
        Box::pin(async move { Ok(hex::encode(self.hash_all().await?.digest.clone().finish())) })
    }

    fn commit(mut self: Box<Self>, id: &str) -> BoxFuture<'static, Result<(), BlobError>> {
        let id = id.to_string();
        Box::pin(async move {
            if self.sha256_hex().await? != id {
                return Err(BlobError::Mismatch(id));
            }
            let dest = address_in(&self.root, &id)?;
            // Hashed, and written unless they are in the last batch.
            self.settle().await?;
            let mut sink = self.sink.take().ok_or_else(closed)?;
            let last = self.buf.take().filter(|b| !b.is_empty());
            let (root, from) = (self.root.clone(), self.path.clone());
            let deferred = self.deferred;
            // One hop to the blocking pool: write the last batch, then
            // name the bytes, durably (or, deferred, for `sync` to make
            // durable).
            blocking(move || {
                sink.create()?;
                let file = sink.file.as_ref().expect("created above");
                if let Some(last) = last {
                    sink.out.write_all(file, last.data())?;
                }
                let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
                // Staged under another address than it is committed to:
                // its folder may not exist yet.
                if from.parent() != Some(dir.as_path()) && !dir.try_exists()? {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::File::open(&root)?.sync_all()?;
                }
                if deferred {
                    // Named only where no file is: a blob already at the
                    // address (accepted, or left by a crash before it was
                    // made durable) is replaced below, by a durable file
                    // in one durable step, never by bytes not yet on disk.
                    match rename_new(&from, &dest) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        // A file system without the flag (ENOTSUP/EINVAL).
                        Err(e) if matches!(e.raw_os_error(), Some(22 | 95)) => {}
                        Err(e) => return Err(e),
                    }
                }
                file.sync_all()?;
                drop(sink);
                std::fs::rename(&from, &dest)?;
                std::fs::File::open(&dir)?.sync_all()
            })
            .await?;
            self.committed = true;
            Ok(())
        })
    }
}

/// Rename `from` to `to` unless `to` exists (`AlreadyExists` then).
#[cfg(target_os = "linux")]
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn rename_new(_from: &Path, _to: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(22))
}

/// Flush the file system that holds `dir` (Linux).
#[cfg(target_os = "linux")]
fn syncfs(dir: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::syncfs(dir).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_dir: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::other("syncfs is Linux only"))
}

/// Run file system calls on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

impl Drop for FsStaged {
    fn drop(&mut self) {
        if !self.committed {
            // A batch in flight may create the file after this: it looks
            // at the flag once it has (Sink::file).
            self.abandoned.store(true, Ordering::SeqCst);
            // Best effort: a left-over is removed by the stale sweep.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// fsync a folder so that the entries made in it are durable.
async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    tokio::fs::File::open(dir).await?.sync_all().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn sha(b: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
    }

    /// Store `data` at its address; returns the address.
    async fn put(store: &FsBlobStore, data: &[u8]) -> String {
        let id = sha(data);
        let mut s = store.stage(&id, data.len() as u64).await.unwrap();
        s.write(data).await.unwrap();
        s.commit(&id).await.unwrap();
        id
    }

    #[tokio::test]
    async fn stage_commit_open_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data = b"ciphertext bytes".repeat(1000);
        let id = sha(&data);
        let mut s = store.stage(&"0".repeat(64), 0).await.unwrap();
        for c in data.chunks(777) {
            s.write(c).await.unwrap();
        }
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(s.sha256_hex().await.unwrap(), id);
        assert!(!store.exists(&id).await.unwrap());
        s.commit(&id).await.unwrap();
        assert!(store.exists(&id).await.unwrap());
        let mut back = Vec::new();
        store
            .open(&id)
            .await
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, data);
        assert!(staged(&store).is_empty());
        store.delete(&id).await.unwrap();
        store.delete(&id).await.unwrap();
        assert!(store.open(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn exists_each_answers_every_id_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let id = put(&store, b"stored").await;
        let absent = sha(b"never stored");
        let ids = [
            absent.as_str(),
            id.as_str(),
            "../not-an-address",
            id.as_str(),
        ];
        let got = store.exists_each(&ids).await;
        assert_eq!(got.len(), 4);
        assert!(matches!(got[0], Ok(false)));
        assert!(matches!(got[1], Ok(true)));
        assert!(matches!(got[2], Err(BlobError::BadAddress(_))));
        assert!(matches!(got[3], Ok(true)));
        assert!(store.exists_each(&[]).await.is_empty());
    }

    #[tokio::test]
    async fn large_uploads_are_hashed_and_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        // 20 MiB and some: many batches and several writeback windows, in
        // chunks that align with neither.
        let data: Vec<u8> = (0..(20 << 20) + 12_345u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let id = sha(&data);
        let mut s = store.stage(&id, data.len() as u64).await.unwrap();
        for c in data.chunks(100_003) {
            s.write(c).await.unwrap();
        }
        assert_eq!(s.sha256_hex().await.unwrap(), id);
        // Asking twice changes nothing.
        assert_eq!(s.sha256_hex().await.unwrap(), id);
        s.commit(&id).await.unwrap();
        assert_eq!(std::fs::read(store.path(&id).unwrap()).unwrap(), data);
        assert!(staged(&store).is_empty());

        // Dropped with a batch in flight: nothing stays.
        let mut s = store.stage(&id, data.len() as u64).await.unwrap();
        for c in data[..3 << 20].chunks(65_536) {
            s.write(c).await.unwrap();
        }
        drop(s);
        assert!(staged(&store).is_empty());
    }

    #[tokio::test]
    async fn asking_for_the_hash_midway_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 77u32).map(|i| (i % 253) as u8).collect();
        let id = sha(&data);
        // Small, then past one batch, then the rest, asking each time.
        let mut s = store.stage(&id, data.len() as u64).await.unwrap();
        let mut at = 0;
        for cut in [100, 200, (1 << 20) + 5, data.len()] {
            s.write(&data[at..cut]).await.unwrap();
            at = cut;
            assert_eq!(s.sha256_hex().await.unwrap(), sha(&data[..cut]));
        }
        s.commit(&id).await.unwrap();
        assert!(std::fs::read(store.path(&id).unwrap()).unwrap() == data);
        assert!(staged(&store).is_empty());
    }

    #[tokio::test]
    async fn wrong_address_and_drop_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let mut s = store.stage(&"0".repeat(64), 0).await.unwrap();
        s.write(b"abc").await.unwrap();
        let other = sha(b"abd");
        assert!(matches!(
            s.commit(&other).await,
            Err(BlobError::Mismatch(_))
        ));
        let mut s = store.stage(&"0".repeat(64), 0).await.unwrap();
        s.write(b"abc").await.unwrap();
        drop(s);
        assert!(staged(&store).is_empty());
        assert!(!store.exists(&other).await.unwrap());
        assert!(matches!(
            store.exists("../etc/passwd").await,
            Err(BlobError::BadAddress(_))
        ));
    }

    #[test]
    fn disk_full_is_told_apart() {
        let full = std::io::Error::from_raw_os_error(28);
        assert!(matches!(BlobError::from(full), BlobError::Full(_)));
        let denied = std::io::Error::from_raw_os_error(13);
        assert!(matches!(BlobError::from(denied), BlobError::Unavailable(_)));
    }

    #[tokio::test]
    async fn stale_staged_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let id = put(&store, b"kept").await;
        // A killed process's upload in the address's folder, one in the
        // staging folder of earlier versions, and a file that is neither.
        let left = store
            .path(&id)
            .unwrap()
            .with_file_name(format!("{id}.upload-x"));
        std::fs::write(&left, b"x").unwrap();
        std::fs::create_dir(dir.path().join("staging")).unwrap();
        std::fs::write(dir.path().join("staging/upload-y"), b"y").unwrap();
        let other = store.path(&id).unwrap().with_file_name("notes.txt");
        std::fs::write(&other, b"z").unwrap();
        assert_eq!(staged(&store).len(), 2);
        // Never taken for a blob.
        assert_eq!(
            store.committed_before(Duration::ZERO).await.unwrap(),
            std::slice::from_ref(&id)
        );
        assert_eq!(
            store
                .remove_stale_staged(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert_eq!(staged(&store).len(), 2);
        assert_eq!(store.remove_stale_staged(Duration::ZERO).await.unwrap(), 2);
        assert!(staged(&store).is_empty());
        assert!(other.exists(), "only staged uploads are removed");
        assert!(store.exists(&id).await.unwrap());
    }

    #[tokio::test]
    async fn uploads_are_staged_beside_their_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 5u32).map(|i| (i % 251) as u8).collect();
        let id = sha(&data);
        let mut s = store.stage(&id, data.len() as u64).await.unwrap();
        s.write(&data).await.unwrap();
        // Past the first batch: the staged file exists, in the folder of
        // the address it was staged for, under a name that is not one.
        assert_eq!(s.sha256_hex().await.unwrap(), id);
        let files = staged(&store);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].parent(), store.path(&id).unwrap().parent());
        assert!(!store.exists(&id).await.unwrap());
        s.commit(&id).await.unwrap();
        assert!(staged(&store).is_empty());
        assert_eq!(std::fs::read(store.path(&id).unwrap()).unwrap(), data);
        assert!(
            !dir.path().join("staging").exists(),
            "no shared staging folder"
        );
    }

    /// With `sync = "batch"`, a commit names the file and leaves making
    /// it durable to the batch's `sync`; a file already at the address
    /// (accepted, or bytes a crash left before they were made durable) is
    /// replaced by the new upload's bytes in one durable step, never kept
    /// in their stead.
    #[tokio::test]
    async fn batch_sync_commits_name_the_file_and_replace_what_is_at_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open_with(dir.path(), BlobSync::Batch).unwrap();
        let want = if syncfs_reports_errors() {
            BlobSync::Batch
        } else {
            BlobSync::Upload
        };
        assert_eq!(store.sync_mode(), want);
        assert_eq!(
            FsBlobStore::open(dir.path()).unwrap().sync_mode(),
            BlobSync::Upload
        );
        let small = b"a small envelope".to_vec();
        let large: Vec<u8> = (0..(2 << 20) + 7u32).map(|i| (i % 241) as u8).collect();
        for data in [&small, &large] {
            let id = put(&store, data).await;
            store.sync().await.unwrap();
            assert_eq!(&std::fs::read(store.path(&id).unwrap()).unwrap(), data);
        }
        assert!(staged(&store).is_empty());

        // Bytes left at an address by a crash: the retried upload's win.
        let data = b"the genuine ciphertext".to_vec();
        let id = sha(&data);
        let at = store.path(&id).unwrap();
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, b"\0\0\0\0").unwrap();
        assert_eq!(put(&store, &data).await, id);
        store.sync().await.unwrap();
        assert_eq!(std::fs::read(&at).unwrap(), data);
        // The same bytes again over an accepted blob: a new file, whole.
        use std::os::unix::fs::MetadataExt as _;
        let before = std::fs::metadata(&at).unwrap().ino();
        put(&store, &data).await;
        assert_ne!(std::fs::metadata(&at).unwrap().ino(), before);
        assert_eq!(std::fs::read(&at).unwrap(), data);
        assert!(staged(&store).is_empty());
    }

    /// A failed `syncfs` is kept: the lost writes are reported once, so
    /// every later sync fails too, until the relay restarts.
    #[tokio::test]
    async fn a_failed_batch_sync_stays_failed() {
        if !syncfs_reports_errors() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open_with(dir.path(), BlobSync::Batch).unwrap();
        store.sync().await.unwrap();
        store.fail_sync_for_test("Input/output error (os error 5)");
        for _ in 0..2 {
            let e = store.sync().await.unwrap_err();
            assert!(matches!(e, BlobError::Unavailable(_)), "{e}");
            assert!(e.to_string().contains("os error 5"), "{e}");
        }
        // A store opened anew (the relay restarted) syncs again.
        FsBlobStore::open_with(dir.path(), BlobSync::Batch)
            .unwrap()
            .sync()
            .await
            .unwrap();
    }

    /// The staged files under the blob folder (fan-out folders and the
    /// staging folder of earlier versions).
    fn staged(store: &FsBlobStore) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(store.root()).unwrap().flatten() {
            if !d.file_type().unwrap().is_dir() {
                continue;
            }
            let legacy = d.file_name() == LEGACY_STAGING;
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if legacy || FsBlobStore::is_staged(&name) {
                    out.push(f.path());
                }
            }
        }
        out
    }
}
