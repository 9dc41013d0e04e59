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
use crate::pki::{tls_provider as provider, CertInfo, TrustStore};
use crate::profile::Profile;

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
        let conn = builder.serve_connection(TokioIo::new(Lingering::new(tls)), svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// How long, and for how many bytes, a closed connection keeps reading what
/// the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 256 << 20;

/// A connection that closes the way a client still sending can live with.
///
/// The relay answers some uploads before reading their body (413 from the
/// signed size, 409, the stored acceptance of a resubmission). If the
/// socket were simply closed with the client's unread bytes in it, the
/// kernel would reset the connection and the client could lose the answer
/// it has not read yet. So when hyper is done with the connection, it is
/// shut down for writing (TLS close_notify, then FIN) and whatever the
/// client still sends is read and discarded for a bounded time and amount
/// (a "lingering close") before the socket is dropped.
struct Lingering<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> {
    inner: Option<S>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Lingering<S> {
    fn new(inner: S) -> Self {
        Lingering { inner: Some(inner) }
    }

    fn get(&mut self) -> std::io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> tokio::io::AsyncRead
    for Lingering<S>
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get() {
            Ok(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> tokio::io::AsyncWrite
    for Lingering<S>
{
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get() {
            Ok(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get() {
            Ok(s) => std::pin::Pin::new(s).poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get() {
            Ok(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Drop
    for Lingering<S>
{
    fn drop(&mut self) {
        let Some(mut s) = self.inner.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout(LINGER_TIME, async move {
                let _ = s.shutdown().await;
                let mut buf = vec![0u8; 16 * 1024];
                let mut read = 0usize;
                while read < LINGER_BYTES {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            })
            .await;
        });
    }
}
