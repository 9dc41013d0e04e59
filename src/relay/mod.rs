//! The relay: an axum service over rustls with mandatory mutual TLS. It
//! stores only ciphertext and signed receipts; every client is identified by
//! its certificate, which must chain to the region's CA and not be revoked.

pub mod blobs;
pub mod checkpoint;
pub mod error;
pub mod object_blobs;
pub mod rotation;
pub mod routes;
pub mod sequencer;
pub mod store;
pub mod tls;
pub mod witnesses;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use serde::{Deserialize, Serialize};

use crate::keys::SigningKey;
use crate::pki::{crl_number, CertInfo, TrustStore};
use crate::profile::Profile;
use crate::receipt::bundle::log_origin;
use crate::receipt::key_transition::LogKeys;
use store::Store;

/// Relay settings (`--config FILE`, TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Largest accepted upload in bytes (larger gets 413, nothing stored).
    pub max_upload_bytes: u64,
    /// Seconds an envelope waits for a recipient before an expiry receipt.
    pub expiry_after_secs: u64,
    /// Seconds after the last outcome before the ciphertext is deleted.
    pub delete_after_secs: u64,
    /// Seconds between expiry/retention sweeps.
    pub sweep_interval_secs: u64,
    /// Seconds between checks for a newer CRL published through another
    /// relay instance on the same database.
    pub crl_refresh_secs: u64,
    /// Seconds a client has to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers, once it started.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay without any traffic before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds after which a connection is closed once its current request
    /// is answered (clients reconnect; bounds how long one connection lives).
    pub max_connection_age_secs: u64,
    /// Seconds an upload may stall (no body bytes) before it is abandoned.
    pub body_read_timeout_secs: u64,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
    /// Most connections still in the TLS handshake (not yet
    /// authenticated); more are closed at once.
    pub max_handshakes: usize,
    /// Most writes (acceptances, receipts, directory changes) appended to
    /// the log in one batch: one transaction and one checkpoint.
    pub batch_max_jobs: usize,
    /// Milliseconds a batch waits for more writes after its first.
    pub batch_wait_ms: u64,
    /// Most envelopes one facility may have accepted in any 24 hours
    /// (0: no limit); more get 429 with Retry-After.
    pub quota_uploads_per_day: u64,
    /// Most ciphertext bytes one facility may have accepted in any 24
    /// hours (0: no limit).
    pub quota_bytes_per_day: u64,
    /// Most uploads one facility may have in progress at once on one
    /// relay instance (0: no limit).
    pub quota_concurrent_uploads: usize,
    /// Witnesses asked to cosign every checkpoint, each `VKEY@URL`
    /// (`--witness`; see [`witnesses`]).
    pub witnesses: Vec<String>,
    /// Cosignatures the relay aims at per checkpoint (health reports
    /// whether the newest checkpoint has them); 0: as many as answer.
    pub witness_quorum: usize,
    /// Milliseconds one witness may take to cosign (one exchange).
    pub witness_timeout_ms: u64,
    /// Where ciphertext is kept (`[blob_store]`; default: `DATA/blobs`).
    pub blob_store: object_blobs::BlobStoreConfig,
    /// The checkpoint signing key (Ed25519, PKCS#8 PEM, mode 0600;
    /// `--checkpoint-key`). Absent: the relay certificate's key signs
    /// checkpoints. It must be the log's current checkpoint key (the
    /// certificate's, or the last one announced by a key transition,
    /// docs/LOG.md §8), else the relay refuses to start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_upload_bytes: 2 << 30,
            expiry_after_secs: 14 * 24 * 3600,
            delete_after_secs: 7 * 24 * 3600,
            sweep_interval_secs: 60,
            crl_refresh_secs: 10,
            handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connection_age_secs: 3600,
            body_read_timeout_secs: 60,
            max_connections: 1024,
            max_handshakes: 256,
            batch_max_jobs: 256,
            batch_wait_ms: 2,
            quota_uploads_per_day: 5_000,
            quota_bytes_per_day: 50 << 30,
            quota_concurrent_uploads: 8,
            witnesses: Vec::new(),
            witness_quorum: 0,
            witness_timeout_ms: 3000,
            blob_store: Default::default(),
            checkpoint_key: None,
        }
    }
}

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Profile trouble.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// Storage trouble.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// TLS configuration trouble.
    #[error("TLS: {0}")]
    Tls(String),
    /// Socket trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a relay profile.
    #[error("{0}")]
    Config(String),
    /// The configured checkpoint key is not the log's current one, or the
    /// log's key transitions do not verify.
    #[error("{0}")]
    CheckpointKey(String),
}

/// The caller of a request, from its verified client certificate (shared
/// by every request on the connection, and by the connections that
/// present the same certificate: see [`RelayState::caller`]).
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<CertInfo>);

/// How many parsed client certificates a relay instance keeps
/// ([`RelayState::caller`]); when full it starts again from none.
const CALLERS_KEPT: usize = 4096;

/// Shared state of one relay instance.
pub struct RelayState {
    /// Storage.
    pub store: Store,
    /// The relay's signing key (acceptance and expiry receipts; also
    /// checkpoints when no checkpoint key is configured).
    pub key: Arc<SigningKey>,
    /// The key that signs checkpoints (the log's current checkpoint key).
    pub checkpoint_key: Arc<SigningKey>,
    /// The relay's certificate.
    pub cert: CertInfo,
    /// The relay's ID.
    pub id: String,
    /// The log's origin line and checkpoint key name.
    pub origin: String,
    /// Settings.
    pub config: RelayConfig,
    /// The witnesses that cosign checkpoints, if any.
    pub witnesses: Option<Arc<witnesses::Witnesses>>,
    /// The CA and current CRL.
    pub trust: RwLock<TrustStore>,
    /// The current TLS configuration (rebuilt when a new CRL arrives).
    pub tls: RwLock<Arc<rustls::ServerConfig>>,
    /// Serial numbers (hex) revoked by the current CRL, with the date of
    /// revocation: every request's caller is checked against it, so a
    /// connection opened before a revocation loses access with it.
    revoked: RwLock<std::collections::HashMap<String, String>>,
    /// Uploads in progress per facility (this instance).
    uploads: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Client certificates parsed before, by their DER bytes.
    callers: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Arc<CertInfo>>>,
    profile_dir: PathBuf,
    /// The profile's `[revocation] crl_grace_days`.
    crl_grace_days: u32,
    /// The log's key transitions when this instance started. Its sequencer
    /// appends only while the log has no newer one (every batch checks), so
    /// this is the whole list for every leaf it appends.
    transitions: Vec<crate::receipt::key_transition::TransitionProof>,
}

/// Shared handle.
pub type AppState = Arc<RelayState>;

/// A trust store with the relay's grace period and, for messages, where a
/// current CRL comes from.
fn relay_trust(trust: TrustStore, grace_days: u32) -> TrustStore {
    trust.with_crl_grace_days(grace_days).with_crl_source(
        "the relay's CRL".into(),
        "the network operator publishes a current CRL (`renkei ca crl`, then `renkei crl publish`)"
            .into(),
    )
}

impl RelayState {
    /// Open the relay's profile and storage.
    pub async fn open(
        profile: &Path,
        data: &Path,
        database_url: Option<&str>,
        config: RelayConfig,
    ) -> Result<AppState, RelayError> {
        let p = relay_profile(profile)?;
        let cert = p.certificate()?;
        let key = Arc::new(p.signing_key()?);
        let checkpoint_key = checkpoint_key_of(&config, &key)?;
        let origin = log_origin(&cert);
        let witnesses = witnesses_of(&config)?;
        let blobs = blob_store_of(&config, data)?;
        let store = Store::open_with(data, database_url, blobs).await?;
        let transitions = store.key_transitions().await?;
        let chain = chain_of(&cert, &transitions)?;
        let from_size = signs_from(&chain, &checkpoint_key)?;
        let store = store.start_log(store_log_config(
            &cert,
            &origin,
            (&key, &checkpoint_key, from_size),
            &config,
            witnesses.clone(),
        ));
        let crl_grace_days = p.config.revocation.crl_grace_days;
        let mut trust = relay_trust(p.trust()?, crl_grace_days);
        // A CRL published through the relay replaces the profile's if newer.
        if let Some((_, pem)) = store.crl_get().await? {
            if let Ok(t) = TrustStore::new(trust.ca_der(), Some(pem.as_bytes())) {
                if crl_number(t.crl_der()) >= crl_number(trust.crl_der()) {
                    trust = relay_trust(t, crl_grace_days);
                }
            }
        }
        let tls = tls::server_config(&p, &trust)?;
        let revoked = revoked_serials(&trust);
        Ok(Arc::new(RelayState {
            store,
            key,
            checkpoint_key,
            origin,
            id: cert.id.to_string(),
            cert,
            config,
            witnesses,
            trust: RwLock::new(trust),
            tls: RwLock::new(Arc::new(tls)),
            revoked: RwLock::new(revoked),
            uploads: Default::default(),
            callers: Default::default(),
            profile_dir: profile.to_path_buf(),
            crl_grace_days,
            transitions,
        }))
    }

    /// The caller presenting the (verified) client certificate `der`.
    /// Clients open a connection per request or two and resume their TLS
    /// sessions, so the same few certificates come again and again: each
    /// is parsed once, then shared. Parsing depends on the bytes alone;
    /// revocation is checked on every request ([`RelayState::revoked_on`]).
    pub fn caller(&self, der: &[u8]) -> Result<Caller, crate::pki::CertError> {
        if let Some(c) = self.callers.lock().expect("lock").get(der) {
            return Ok(Caller(Arc::clone(c)));
        }
        let parsed = Arc::new(CertInfo::parse(der, "client certificate")?);
        let mut kept = self.callers.lock().expect("lock");
        if kept.len() >= CALLERS_KEPT {
            kept.clear();
        }
        kept.insert(der.to_vec(), Arc::clone(&parsed));
        Ok(Caller(parsed))
    }

    /// Install a newer CRL: trust store and TLS client verification.
    pub fn install_crl(&self, trust: TrustStore) -> Result<(), RelayError> {
        let trust = relay_trust(trust, self.crl_grace_days);
        let p = Profile::open(&self.profile_dir)?;
        let cfg = tls::server_config(&p, &trust)?;
        *self.tls.write().expect("lock") = Arc::new(cfg);
        *self.revoked.write().expect("lock") = revoked_serials(&trust);
        *self.trust.write().expect("lock") = trust;
        Ok(())
    }

    /// When the certificate with `serial` (hex) was revoked by the current
    /// CRL (`YYYY-MM-DD`), if it was.
    pub fn revoked_on(&self, serial: &str) -> Option<String> {
        self.revoked.read().expect("lock").get(serial).cloned()
    }

    /// Install the CRL stored in the database if it is newer than the one
    /// in use: with several instances on one database, a CRL published
    /// through one instance reaches the others this way. Returns whether a
    /// newer CRL was installed.
    pub async fn refresh_crl(&self) -> Result<bool, RelayError> {
        let Some((_, pem)) = self.store.crl_get().await? else {
            return Ok(false);
        };
        let current = self.trust();
        let stored = TrustStore::new(current.ca_der(), Some(pem.as_bytes()))
            .map_err(|e| RelayError::Config(format!("the stored CRL is not usable: {e}")))?;
        if crl_number(stored.crl_der()) <= crl_number(current.crl_der()) {
            return Ok(false);
        }
        self.install_crl(stored)?;
        Ok(true)
    }

    /// Count an upload by `facility` as in progress until the guard is
    /// dropped, or `None` when the facility has `limit` in progress already
    /// (`limit` 0: no limit).
    pub fn upload_slot(self: &Arc<Self>, facility: &str, limit: usize) -> Option<UploadSlot> {
        let mut m = self.uploads.lock().expect("lock");
        let n = m.entry(facility.to_string()).or_insert(0);
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(UploadSlot {
            state: self.clone(),
            facility: facility.to_string(),
        })
    }

    /// The relay's verifier key in the C2SP signed-note format: its
    /// certificate's key, the root of the log's checkpoint keys.
    pub fn vkey(&self) -> String {
        crate::log::Verifier::ed25519(&self.origin, self.key.public_key())
            .map(|v| v.encode())
            .unwrap_or_default()
    }

    /// The verifier key of the current checkpoint key.
    pub fn checkpoint_vkey(&self) -> String {
        crate::log::Verifier::ed25519(&self.origin, self.checkpoint_key.public_key())
            .map(|v| v.encode())
            .unwrap_or_default()
    }

    /// The current trust store.
    pub fn trust(&self) -> TrustStore {
        self.trust.read().expect("lock").clone()
    }
}

/// An upload in progress ([`RelayState::upload_slot`]).
pub struct UploadSlot {
    state: AppState,
    facility: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut m = self.state.uploads.lock().expect("lock");
        if let Some(n) = m.get_mut(&self.facility) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.facility);
            }
        }
    }
}

/// The witnesses of the configuration (`None` when there are none).
fn witnesses_of(config: &RelayConfig) -> Result<Option<Arc<witnesses::Witnesses>>, RelayError> {
    if config.witnesses.is_empty() {
        if config.witness_quorum > 0 {
            return Err(RelayError::Config(format!(
                "a witness quorum of {} needs witnesses (--witness VKEY@URL)",
                config.witness_quorum
            )));
        }
        return Ok(None);
    }
    let endpoints = config
        .witnesses
        .iter()
        .map(|w| witnesses::WitnessEndpoint::parse(w).map_err(RelayError::Config))
        .collect::<Result<Vec<_>, _>>()?;
    if config.witness_quorum > endpoints.len() {
        return Err(RelayError::Config(format!(
            "a witness quorum of {} is more than the {} witnesses configured",
            config.witness_quorum,
            endpoints.len()
        )));
    }
    Ok(Some(Arc::new(witnesses::Witnesses::new(
        endpoints,
        config.witness_quorum,
        Duration::from_millis(config.witness_timeout_ms.max(1)),
    ))))
}

/// The blob store of the configuration (`[blob_store]`, default
/// `DATA/blobs`).
fn blob_store_of(
    config: &RelayConfig,
    data: &Path,
) -> Result<Arc<dyn blobs::BlobStore>, RelayError> {
    let b: Arc<dyn blobs::BlobStore> = match config.blob_store.kind {
        object_blobs::BlobStoreKind::Fs => Arc::new(
            blobs::FsBlobStore::open_with(&data.join("blobs"), config.blob_store.sync)
                .map_err(store::StoreError::from)?,
        ),
        object_blobs::BlobStoreKind::S3 => Arc::new(
            object_blobs::ObjectBlobStore::s3(&config.blob_store)
                .map_err(store::StoreError::from)?,
        ),
    };
    Ok(b)
}

/// The checkpoint key of the configuration (`checkpoint_key`), or the
/// certificate's key `cert_key` when none is set.
fn checkpoint_key_of(
    config: &RelayConfig,
    cert_key: &Arc<SigningKey>,
) -> Result<Arc<SigningKey>, RelayError> {
    match &config.checkpoint_key {
        None => Ok(cert_key.clone()),
        Some(f) => SigningKey::load(f).map(Arc::new).map_err(|e| {
            RelayError::CheckpointKey(format!("the checkpoint key {}: {e}", f.display()))
        }),
    }
}

/// The log's checkpoint keys: the relay certificate's key, then each key
/// announced by a key transition in the log, each checked against the key
/// before it (docs/LOG.md §8).
pub async fn log_keys(store: &Store, cert: &CertInfo) -> Result<LogKeys, RelayError> {
    chain_of(cert, &store.key_transitions().await?)
}

/// The checkpoint key chain from the relay certificate's key through
/// `transitions`, each checked against the key before it.
fn chain_of(
    cert: &CertInfo,
    transitions: &[crate::receipt::key_transition::TransitionProof],
) -> Result<LogKeys, RelayError> {
    let root = crate::receipt::bundle::relay_verifier(cert)
        .map_err(|e| RelayError::CheckpointKey(e.to_string()))?;
    let mut chain = LogKeys::new(root);
    chain.learn_all(transitions).map_err(|e| {
        RelayError::CheckpointKey(format!(
            "the log's checkpoint key transitions do not verify: {e}"
        ))
    })?;
    Ok(chain)
}

/// The first tree size `key` signs: it must be the chain's current key.
fn signs_from(chain: &LogKeys, key: &SigningKey) -> Result<u64, RelayError> {
    let current = chain.current();
    if current.key.public_key() == &key.public_key() {
        return Ok(current.from_size);
    }
    let configured = crate::log::Verifier::ed25519(chain.origin(), key.public_key())
        .map(|v| v.encode())
        .unwrap_or_default();
    let retired = chain
        .keys()
        .iter()
        .any(|k| k.key.public_key() == &key.public_key());
    Err(RelayError::CheckpointKey(format!(
        "the log's current checkpoint key is {} (from tree size {}), but this relay is configured with {configured}{}",
        current.key.encode(),
        current.from_size,
        if retired {
            ", a key it retired: give the current key file with --checkpoint-key (or checkpoint_key in the config file)"
        } else if current.from_size == 0 {
            ", which the log never announced: run `renkei relay rotate-checkpoint-key` first, or start without --checkpoint-key"
        } else {
            ", which the log never announced: give the current key file with --checkpoint-key"
        }
    )))
}

/// How the relay's store writes its log: `keys` are the receipt key, the
/// checkpoint key and the first tree size the checkpoint key signs.
fn store_log_config(
    cert: &CertInfo,
    origin: &str,
    keys: (&Arc<SigningKey>, &Arc<SigningKey>, u64),
    config: &RelayConfig,
    witnesses: Option<Arc<witnesses::Witnesses>>,
) -> sequencer::LogConfig {
    let (key, checkpoint_key, key_from_size) = keys;
    sequencer::LogConfig {
        relay_id: cert.id.to_string(),
        receipt_key: key.clone(),
        checkpoints: checkpoint::CheckpointSigner::new(origin, checkpoint_key.clone()),
        key_from_size,
        expiry_after_secs: config.expiry_after_secs,
        batch_max_jobs: config.batch_max_jobs.max(1),
        batch_wait: Duration::from_millis(config.batch_wait_ms),
        witnesses,
    }
}

/// Open a profile that must be a relay's.
pub(crate) fn relay_profile(profile: &Path) -> Result<Profile, RelayError> {
    let p = Profile::open(profile)?;
    if p.config.kind != crate::identity::Kind::Relay {
        return Err(RelayError::Config(format!(
            "{} is a {} profile, not a relay profile",
            profile.display(),
            p.config.kind
        )));
    }
    Ok(p)
}

/// The serial numbers (hex, as in [`CertInfo::serial`]) revoked by the
/// trust store's CRL, with their revocation dates.
fn revoked_serials(trust: &TrustStore) -> std::collections::HashMap<String, String> {
    use x509_parser::prelude::FromDer;
    let Some(der) = trust.crl_der() else {
        return Default::default();
    };
    let Ok((_, crl)) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
    else {
        return Default::default();
    };
    crl.iter_revoked_certificates()
        .map(|r| {
            let date = crate::pki::cert::rfc3339(r.revocation_date.timestamp());
            (hex::encode(r.raw_serial()), date[..10].to_string())
        })
        .collect()
}

/// Refuse a request whose caller's certificate the current CRL revokes,
/// and close its connection: the TLS handshake checked the CRL of its
/// time, this checks the CRL of now.
async fn check_revocation(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let caller = req.extensions().get::<Caller>();
    let revoked = caller.and_then(|c| st.revoked_on(&c.0.serial).map(|d| (c.0.id.to_string(), d)));
    // A facility whose revocation status cannot be confirmed (the relay's
    // CRL is stale beyond its grace period) is not served, except to fetch
    // or publish a CRL, which is how the staleness ends.
    let crl_route = req.uri().path() == "/v1/crl";
    let stale = match caller {
        Some(c) if revoked.is_none() && !crl_route && c.0.kind.is_facility() => st
            .trust
            .read()
            .expect("lock")
            .require_fresh_crl(&c.0.id.to_string(), None)
            .err(),
        _ => None,
    };
    if let Some(e) = stale {
        tracing::warn!(error = %e, "request refused: stale CRL");
        return error::ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .into_response();
    }
    match revoked {
        None => next.run(req).await,
        Some((id, date)) => {
            let mut resp = error::ApiError::forbidden(format!(
                "the certificate of {id} was revoked by the region's CA on {date}; \
                 this connection is closed. Ask the CA for a new certificate"
            ))
            .into_response();
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            resp
        }
    }
}

/// The relay's HTTP application (mutual TLS happens around it in [`serve`];
/// every request carries a [`Caller`] extension).
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::directory::router())
        .merge(routes::envelopes::router())
        .merge(routes::log::router())
        .merge(routes::log_keys::router())
        .fallback(|| async { error::ApiError::not_found("no such endpoint; see docs/API.md") })
        .layer(axum::middleware::map_response(problemize))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_revocation,
        ))
        .with_state(state)
}

/// Turn errors produced by axum itself (bad query strings, body limits,
/// wrong methods) into problem details like every other error.
async fn problemize(resp: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
    let detail = match status.as_u16() {
        400 => "the request is malformed (query string or body); see docs/API.md",
        405 => "this method is not allowed here; see docs/API.md",
        413 => "the request body is too large",
        415 => "unsupported content type",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let mut out = error::ApiError::new(status, detail).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(axum::http::header::ALLOW, a);
    }
    out
}

/// Pick up CRLs published through other instances.
async fn crl_loop(st: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(st.config.crl_refresh_secs.max(1)));
    loop {
        tick.tick().await;
        match st.refresh_crl().await {
            Ok(true) => tracing::info!(
                crl_number = %crl_number(st.trust().crl_der()),
                "newer CRL from the database installed"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "CRL refresh failed"),
        }
    }
}

/// Serve on `listener` until `shutdown` resolves, then finish open
/// requests (graceful shutdown, bounded to 30 s).
///
/// Connections beyond `max_connections`, or beyond `max_handshakes` still
/// in the TLS handshake, are closed as soon as they are accepted; each
/// connection is bounded by the handshake, header-read, idle and age
/// limits of [`RelayConfig`] (see [`tls::spawn_connection`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RelayError> {
    let router = app(state.clone());
    let limits = tls::Limits::new(&state.config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(routes::envelopes::sweep_loop(state.clone()));
    let crl_watcher = tokio::spawn(crl_loop(state.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(permits) = limits.admit(&peer) else {
                    drop(tcp);
                    continue;
                };
                tls::spawn_connection(tcp, peer, state.clone(), router.clone(), permits, stop_rx.clone());
            }
            _ = &mut shutdown => break,
        }
    }
    sweeper.abort();
    crl_watcher.abort();
    tracing::info!("shutting down: finishing open requests");
    let _ = stop_tx.send(true);
    if !limits.drained(Duration::from_secs(30)).await {
        tracing::warn!("open requests did not finish in 30 s");
    }
    let s = state.store.log_stats();
    tracing::info!(
        target: "renkei::relay::stats",
        batches = s.batches,
        jobs = s.jobs,
        leaves = s.leaves,
        statements = s.statements,
        round_trips = s.round_trips,
        busy_us = s.busy_us,
        commit_us = s.commit_us,
        acquire_us = s.acquire_us,
        "log sequencer totals"
    );
    Ok(())
}

/// Bind `addr` and serve until Ctrl-C / SIGTERM.
pub async fn run(addr: SocketAddr, state: AppState) -> Result<(), RelayError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, relay = %state.id, "relay listening (mutual TLS)");
    serve(listener, state, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[blob_store] sync` in the relay settings: `batch` unless told,
    /// `upload` when asked, anything else refused.
    #[test]
    fn blob_sync_setting_defaults_to_batch_and_refuses_unknown_values() {
        let parse = |text: &str| toml::from_str::<RelayConfig>(text);
        let default = parse("").unwrap();
        assert_eq!(default.blob_store.sync, blobs::BlobSync::Batch);
        let upload = parse("[blob_store]\nsync = \"upload\"\n").unwrap();
        assert_eq!(upload.blob_store.sync, blobs::BlobSync::Upload);
        let e = parse("[blob_store]\nsync = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}
