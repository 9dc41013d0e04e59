//! Ciphertext in object storage: a [`BlobStore`] on the `object_store`
//! crate, configured for the S3 API (AWS S3 or any S3-compatible service;
//! the same code reaches GCS and Azure through `object_store`).
//!
//! # Layout
//!
//! `<prefix>/blobs/<envelope ID>` for ciphertext, `<prefix>/store-id` for
//! the store's identity (see [`BlobStore::identity`]).
//!
//! # Atomicity and durability
//!
//! The relay knows an upload's address before it reads the body (the
//! envelope ID the sender signed), so an upload goes straight to its
//! content-addressed key:
//!
//! - up to one part (`part_size_mib`, default 8 MiB) it is buffered and
//!   written with one `PUT` at commit;
//! - larger uploads are a multipart upload, each part sent as soon as it
//!   is full (at most two parts in flight: memory stays at a few parts
//!   whatever the envelope's size).
//!
//! Either way nothing is visible under the key until commit: commit checks
//! that the bytes hash to the envelope ID (else the multipart upload is
//! aborted), then `PUT`s or completes the upload, and returns only once the
//! service acknowledged it — the relay signs the acceptance after that. A
//! second identical upload to the same key rewrites the same bytes. An
//! upload dropped without commit (refused, interrupted, or the service
//! failing mid-way) is aborted; one left by a killed process stays an
//! incomplete multipart upload, invisible, until the bucket's lifecycle
//! rule ("abort incomplete multipart uploads after 1 day") removes it.
//!
//! # Failures
//!
//! Transport errors and server errors are [`BlobError::Unavailable`]
//! (answered 503 with Retry-After); a service that says it is out of space
//! (`507`, "no space", quota) is [`BlobError::Full`] (507).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::blobs::{BlobError, BlobReader, BlobStore, StagedBlob};

/// Where the relay keeps ciphertext (`[blob_store]` in the relay settings).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobStoreConfig {
    /// `fs` (default): files under `DATA/blobs`; `s3`: a bucket through
    /// the S3 API.
    pub kind: BlobStoreKind,
    /// `fs`: when committed ciphertext is made durable: `batch` (default),
    /// one `syncfs` of the blob folder's file system per log batch, before
    /// the batch commits; `upload`, an fsync of each upload's file and
    /// folder (see [`BlobSync`](super::blobs::BlobSync)).
    pub sync: super::blobs::BlobSync,
    /// The bucket (s3).
    pub bucket: String,
    /// The service's URL, e.g. `https://s3.ap-northeast-1.amazonaws.com`
    /// or an S3-compatible service's; unset: AWS for `region`.
    pub endpoint: Option<String>,
    /// The region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// A key prefix inside the bucket (several relays may share a bucket).
    pub prefix: String,
    /// Allow `http://` endpoints (a service on the same host or network
    /// only; never across an untrusted network).
    pub allow_http: bool,
    /// Multipart part size in MiB (at least 5, the S3 minimum).
    pub part_size_mib: u64,
    /// Access key ID; unset: `AWS_ACCESS_KEY_ID` (or the instance's role).
    pub access_key_id: Option<String>,
    /// Secret access key; unset: `AWS_SECRET_ACCESS_KEY`. Prefer the
    /// environment: this file is not a secret store.
    pub secret_access_key: Option<String>,
}

/// Which blob store.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    /// Files under `DATA/blobs` (a shared filesystem with several instances).
    #[default]
    Fs,
    /// An S3 bucket.
    S3,
}

impl Default for BlobStoreConfig {
    fn default() -> Self {
        BlobStoreConfig {
            kind: BlobStoreKind::Fs,
            sync: Default::default(),
            bucket: String::new(),
            endpoint: None,
            region: None,
            prefix: String::new(),
            allow_http: false,
            part_size_mib: 8,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl std::fmt::Debug for BlobStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStoreConfig")
            .field("kind", &self.kind)
            .field("sync", &self.sync)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("part_size_mib", &self.part_size_mib)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(set)"),
            )
            .finish()
    }
}

/// Ciphertext in an object store.
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    part_size: usize,
    describe: String,
}

fn unavailable(e: impl std::error::Error) -> BlobError {
    // The whole chain, for the relay's log (clients see only the kind).
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let lower = text.to_ascii_lowercase();
    let io = std::io::Error::other(text);
    if lower.contains("no space")
        || lower.contains("insufficient storage")
        || lower.contains("quotaexceeded")
        || lower.contains("quota exceeded")
    {
        BlobError::Full(io)
    } else {
        BlobError::Unavailable(io)
    }
}

impl ObjectBlobStore {
    /// An S3 bucket as configured.
    pub fn s3(c: &BlobStoreConfig) -> Result<ObjectBlobStore, BlobError> {
        if c.bucket.is_empty() {
            return Err(BlobError::Unavailable(std::io::Error::other(
                "blob_store.kind = \"s3\" needs blob_store.bucket",
            )));
        }
        // object_store's HTTP client (reqwest) takes rustls's process-wide
        // crypto provider; the relay uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&c.bucket);
        if let Some(e) = &c.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &c.region {
            b = b.with_region(r);
        }
        if let Some(k) = &c.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &c.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let retry = object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        // (allow_http lives in the client options: set it here, or
        // with_client_options would reset it.)
        let client = object_store::ClientOptions::new()
            .with_allow_http(c.allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        let store = b
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(unavailable)?;
        let describe = format!(
            "s3://{}/{} at {}",
            c.bucket,
            c.prefix,
            c.endpoint.as_deref().unwrap_or("AWS")
        );
        Ok(Self::new(
            Arc::new(store),
            &c.prefix,
            c.part_size_mib.max(5) as usize * 1024 * 1024,
            describe,
        ))
    }

    /// Any object store, under `prefix`, with multipart parts of
    /// `part_size` bytes.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        part_size: usize,
        describe: String,
    ) -> ObjectBlobStore {
        ObjectBlobStore {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            part_size,
            describe,
        }
    }

    fn key(&self, rest: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_key(&self, id: &str) -> Result<ObjectPath, BlobError> {
        if !crate::receipt::valid_envelope_id(id) {
            return Err(BlobError::BadAddress(id.to_string()));
        }
        Ok(self.key(&format!("blobs/{id}")))
    }
}

impl BlobStore for ObjectBlobStore {
    fn stage<'a>(
        &'a self,
        id: &'a str,
        _size: u64,
    ) -> BoxFuture<'a, Result<Box<dyn StagedBlob>, BlobError>> {
        Box::pin(async move {
            let key = self.blob_key(id)?;
            Ok(Box::new(ObjectStaged {
                store: self.store.clone(),
                key,
                part_size: self.part_size,
                digest: ring::digest::Context::new(&ring::digest::SHA256),
                len: 0,
                buf: Vec::new(),
                upload: None,
                in_flight: Vec::new(),
                done: false,
            }) as Box<dyn StagedBlob>)
        })
    }

    fn open<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<BlobReader>, BlobError>> {
        Box::pin(async move {
            let key = self.blob_key(id)?;
            match self.store.get(&key).await {
                Ok(r) => {
                    let stream = r.into_stream().map_err(std::io::Error::other);
                    Ok(Some(
                        Box::pin(tokio_util::io::StreamReader::new(stream)) as BlobReader
                    ))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn exists<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BlobError>> {
        Box::pin(async move {
            let key = self.blob_key(id)?;
            match self.store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let key = self.blob_key(id)?;
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn committed_before(&self, age: Duration) -> BoxFuture<'_, Result<Vec<String>, BlobError>> {
        Box::pin(async move {
            let prefix = self.key("blobs");
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut out = Vec::new();
            let mut list = self.store.list(Some(&prefix));
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(unavailable)?;
                let Some(id) = meta.location.filename().map(str::to_string) else {
                    continue;
                };
                let old = now - meta.last_modified.timestamp() >= age.as_secs() as i64;
                if old && crate::receipt::valid_envelope_id(&id) {
                    out.push(id);
                }
            }
            Ok(out)
        })
    }

    fn identity(&self) -> BoxFuture<'_, Result<String, BlobError>> {
        Box::pin(async move {
            let key = self.key("store-id");
            let read = |store: Arc<dyn ObjectStore>, key: ObjectPath| async move {
                match store.get(&key).await {
                    Ok(r) => {
                        let b = r.bytes().await.map_err(unavailable)?;
                        Ok(Some(String::from_utf8_lossy(&b).trim().to_string()))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(unavailable(e)),
                }
            };
            if let Some(id) = read(self.store.clone(), key.clone()).await? {
                return Ok(id);
            }
            let mine = uuid::Uuid::new_v4().to_string();
            let create = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&key, PutPayload::from(mine.clone().into_bytes()), create)
                .await
            {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                // A service without conditional writes: a plain write (two
                // instances starting on a new bucket at the same instant
                // could then disagree; start one first).
                Err(object_store::Error::NotImplemented)
                | Err(object_store::Error::NotSupported { .. }) => {
                    self.store
                        .put(&key, PutPayload::from(mine.into_bytes()))
                        .await
                        .map_err(unavailable)?;
                }
                Err(e) => return Err(unavailable(e)),
            }
            read(self.store.clone(), key).await?.ok_or_else(|| {
                BlobError::Unavailable(std::io::Error::other(
                    "the store's identity vanished after it was written",
                ))
            })
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// An upload in progress to an object store.
struct ObjectStaged {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    part_size: usize,
    digest: ring::digest::Context,
    len: u64,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: Vec<object_store::UploadPart>,
    done: bool,
}

/// Parts sent at once in a multipart upload.
const PARTS_IN_FLIGHT: usize = 2;

impl ObjectStaged {
    /// Send one full part (starting the multipart upload if needed),
    /// keeping at most [`PARTS_IN_FLIGHT`] parts on the wire.
    async fn send_part(&mut self, part: Vec<u8>) -> Result<(), BlobError> {
        if self.upload.is_none() {
            self.upload = Some(
                self.store
                    .put_multipart(&self.key)
                    .await
                    .map_err(unavailable)?,
            );
        }
        let upload = self.upload.as_mut().expect("started above");
        self.in_flight
            .push(upload.put_part(PutPayload::from(Bytes::from(part))));
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            let first = self.in_flight.remove(0);
            first.await.map_err(unavailable)?;
        }
        Ok(())
    }
}

impl StagedBlob for ObjectStaged {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            self.digest.update(chunk);
            self.len += chunk.len() as u64;
            self.buf.extend_from_slice(chunk);
            while self.buf.len() >= self.part_size {
                let rest = self.buf.split_off(self.part_size);
                let part = std::mem::replace(&mut self.buf, rest);
                self.send_part(part).await?;
            }
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn sha256_hex(&mut self) -> BoxFuture<'_, Result<String, BlobError>> {
        Box::pin(async move { Ok(hex::encode(self.digest.clone().finish())) })
    }

    fn commit(mut self: Box<Self>, id: &str) -> BoxFuture<'static, Result<(), BlobError>> {
        let id = id.to_string();
        Box::pin(async move {
            if self.sha256_hex().await? != id || !self.key.as_ref().ends_with(&id) {
                return Err(BlobError::Mismatch(id));
            }
            let last = std::mem::take(&mut self.buf);
            if self.upload.is_none() {
                self.store
                    .put(&self.key, PutPayload::from(Bytes::from(last)))
                    .await
                    .map_err(unavailable)?;
            } else {
                if !last.is_empty() {
                    let upload = self.upload.as_mut().expect("started");
                    self.in_flight
                        .push(upload.put_part(PutPayload::from(Bytes::from(last))));
                }
                for part in std::mem::take(&mut self.in_flight) {
                    part.await.map_err(unavailable)?;
                }
                let upload = self.upload.as_mut().expect("started");
                upload.complete().await.map_err(unavailable)?;
                self.upload = None;
            }
            self.done = true;
            Ok(())
        })
    }
}

impl Drop for ObjectStaged {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abort an unfinished multipart upload (best effort: a lifecycle
        // rule removes what this misses).
        if let (Some(mut upload), Ok(rt)) =
            (self.upload.take(), tokio::runtime::Handle::try_current())
        {
            self.in_flight.clear();
            rt.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::info!(error = %e, "aborting an unfinished multipart upload failed");
                }
            });
        }
    }
}
