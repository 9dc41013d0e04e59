//! Mutual TLS for the relay: the server certificate from the relay profile,
//! client certificates verified against the region's CA and CRL, and the
//! caller's identity taken from its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use tower::ServiceExt;

use super::{AppState, Caller, RelayError};
use crate::pki::{CertInfo, TrustStore};
use crate::profile::Profile;

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The relay's server configuration.
pub fn server_config(p: &Profile, trust: &TrustStore) -> Result<rustls::ServerConfig, RelayError> {
    let cert = p.certificate()?;
    let key = p.signing_key()?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(trust.ca_der().to_vec()))
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    let mut builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if let Some(crl) = trust.crl_der() {
        builder = builder
            .with_crls([CertificateRevocationListDer::from(crl.to_vec())])
            .only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().to_vec()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert.der.clone())], key_der)
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Handshake, identify the caller, and serve HTTP on one connection.
pub fn spawn_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: AppState,
    router: Router,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.read().expect("lock").clone());
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        let tls = match tokio::time::timeout(Duration::from_secs(15), acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let Some(der) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
        else {
            return;
        };
        let caller = match CertInfo::parse(&der, "client certificate") {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(%peer, error = %e, "client certificate is not a renkei certificate");
                return;
            }
        };
        tracing::debug!(%peer, caller = %caller.id, kind = %caller.kind, "connection");
        let caller = Caller(caller);
        let svc = router.map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(caller.clone());
                req.map(axum::body::Body::new)
            },
        );
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(tls), svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}
