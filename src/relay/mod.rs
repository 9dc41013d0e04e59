//! The relay: an axum service over rustls with mandatory mutual TLS. It
//! stores only ciphertext and signed receipts; every client is identified by
//! its certificate, which must chain to the region's CA and not be revoked.

pub mod blobs;
pub mod error;
pub mod routes;
pub mod store;
pub mod tls;

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
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_upload_bytes: 2 << 30,
            expiry_after_secs: 14 * 24 * 3600,
            delete_after_secs: 7 * 24 * 3600,
            sweep_interval_secs: 60,
            crl_refresh_secs: 10,
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
}

/// The caller of a request, from its verified client certificate.
#[derive(Clone, Debug)]
pub struct Caller(pub CertInfo);

/// Shared state of one relay instance.
pub struct RelayState {
    /// Storage.
    pub store: Store,
    /// The relay's signing key (receipts, later checkpoints).
    pub key: SigningKey,
    /// The relay's certificate.
    pub cert: CertInfo,
    /// The relay's ID.
    pub id: String,
    /// The log's origin line and checkpoint key name.
    pub origin: String,
    /// Settings.
    pub config: RelayConfig,
    /// The CA and current CRL.
    pub trust: RwLock<TrustStore>,
    /// The current TLS configuration (rebuilt when a new CRL arrives).
    pub tls: RwLock<Arc<rustls::ServerConfig>>,
    profile_dir: PathBuf,
}

/// Shared handle.
pub type AppState = Arc<RelayState>;

impl RelayState {
    /// Open the relay's profile and storage.
    pub async fn open(
        profile: &Path,
        data: &Path,
        database_url: Option<&str>,
        config: RelayConfig,
    ) -> Result<AppState, RelayError> {
        let p = Profile::open(profile)?;
        if p.config.kind != crate::identity::Kind::Relay {
            return Err(RelayError::Config(format!(
                "{} is a {} profile, not a relay profile",
                profile.display(),
                p.config.kind
            )));
        }
        let cert = p.certificate()?;
        let key = p.signing_key()?;
        let store = Store::open(data, database_url).await?;
        let mut trust = p.trust()?;
        // A CRL published through the relay replaces the profile's if newer.
        if let Some((_, pem)) = store.crl_get().await? {
            if let Ok(t) = TrustStore::new(trust.ca_der(), Some(pem.as_bytes())) {
                if crl_number(t.crl_der()) >= crl_number(trust.crl_der()) {
                    trust = t;
                }
            }
        }
        let tls = tls::server_config(&p, &trust)?;
        let origin = log_origin(&cert);
        Ok(Arc::new(RelayState {
            store,
            key,
            origin,
            id: cert.id.to_string(),
            cert,
            config,
            trust: RwLock::new(trust),
            tls: RwLock::new(Arc::new(tls)),
            profile_dir: profile.to_path_buf(),
        }))
    }

    /// Install a newer CRL: trust store and TLS client verification.
    pub fn install_crl(&self, trust: TrustStore) -> Result<(), RelayError> {
        let p = Profile::open(&self.profile_dir)?;
        let cfg = tls::server_config(&p, &trust)?;
        *self.tls.write().expect("lock") = Arc::new(cfg);
        *self.trust.write().expect("lock") = trust;
        Ok(())
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

    /// The checkpoint signer.
    pub fn signer(&self) -> store::LogSigner<'_> {
        store::LogSigner {
            origin: &self.origin,
            key: &self.key,
        }
    }

    /// The relay's verifier key in the C2SP signed-note format.
    pub fn vkey(&self) -> String {
        crate::log::Verifier::ed25519(&self.origin, self.key.public_key())
            .map(|v| v.encode())
            .unwrap_or_default()
    }

    /// The current trust store.
    pub fn trust(&self) -> TrustStore {
        self.trust.read().expect("lock").clone()
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
        .fallback(|| async { error::ApiError::not_found("no such endpoint; see docs/API.md") })
        .layer(axum::middleware::map_response(problemize))
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
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RelayError> {
    let router = app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
                tls::spawn_connection(tcp, peer, state.clone(), router.clone(), &graceful);
            }
            _ = &mut shutdown => break,
        }
    }
    sweeper.abort();
    crl_watcher.abort();
    tracing::info!("shutting down: finishing open requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => tracing::warn!("open requests did not finish in 30 s"),
    }
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
