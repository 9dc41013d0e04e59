//! Mutual TLS for the relay: the server certificate from the relay profile,
//! client certificates verified against the region's CA and CRL, and the
//! caller's identity taken from its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use tower::ServiceExt;

use super::{AppState, RelayError};
use crate::pki::{tls_provider as provider, TrustStore};
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

/// The connection limits of one relay instance: open connections, and
/// connections still in the TLS handshake (not yet authenticated).
pub struct Limits {
    connections: Arc<tokio::sync::Semaphore>,
    handshakes: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
}

/// What an admitted connection holds until it ends (the handshake permit
/// only until its handshake is done).
pub struct Permits {
    _connection: tokio::sync::OwnedSemaphorePermit,
    handshake: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Limits {
    /// The limits of `config`.
    pub fn new(config: &super::RelayConfig) -> Limits {
        let max_connections = config.max_connections.max(1);
        Limits {
            connections: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            handshakes: Arc::new(tokio::sync::Semaphore::new(config.max_handshakes.max(1))),
            max_connections,
        }
    }

    /// Admit a new connection, or `None` when a limit is reached (the
    /// caller closes it at once).
    pub fn admit(&self, peer: &SocketAddr) -> Option<Permits> {
        let Ok(connection) = self.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many open connections: closed");
            return None;
        };
        let Ok(handshake) = self.handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections in the TLS handshake: closed");
            return None;
        };
        Some(Permits {
            _connection: connection,
            handshake: Some(handshake),
        })
    }

    /// Wait until every connection has ended, at most `within`; whether
    /// they all did.
    pub async fn drained(&self, within: Duration) -> bool {
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(within, self.connections.acquire_many(all))
            .await
            .is_ok()
    }
}

/// How long a connection told to close (age, idle, shutdown) may take to
/// finish its current request before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(60);

/// Handshake, identify the caller, and serve HTTP on one connection.
///
/// Limits (from [`super::RelayConfig`]): the handshake must finish within
/// `handshake_timeout_secs`; request headers within
/// `header_read_timeout_secs` (hyper's timer); a connection without any
/// traffic for `idle_timeout_secs`, or older than
/// `max_connection_age_secs`, or open when the relay shuts down, is closed
/// once its current request is answered (and dropped if that takes more
/// than a minute longer).
pub fn spawn_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: AppState,
    router: Router,
    mut permits: Permits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.read().expect("lock").clone());
    let cfg = state.config.clone();
    tokio::spawn(async move {
        let handshake = Duration::from_secs(cfg.handshake_timeout_secs.max(1));
        let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
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
        permits.handshake = None;
        let Some(der) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return;
        };
        let caller = match state.caller(der) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(%peer, error = %e, "client certificate is not a renkei certificate");
                return;
            }
        };
        tracing::debug!(%peer, caller = %caller.0.id, kind = %caller.0.kind, "connection");
        let svc = router.map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(caller.clone());
                req.map(axum::body::Body::new)
            },
        );
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let io = Lingering::new(tls);
        let activity = io.activity.clone();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(cfg.header_read_timeout_secs.max(1)))
            .keep_alive(true);
        let conn = http.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let idle = Duration::from_secs(cfg.idle_timeout_secs.max(1));
        let age = tokio::time::sleep(Duration::from_secs(cfg.max_connection_age_secs.max(1)));
        tokio::pin!(age);
        let mut tick = tokio::time::interval(
            (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let grace = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(grace);
        let mut closing: Option<&'static str> = None;
        let mut told = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = &mut age, if closing.is_none() => closing = Some("maximum connection age"),
                _ = tick.tick(), if closing.is_none() => {
                    if activity.idle_for() >= idle {
                        closing = Some("idle");
                    }
                }
                r = stop.changed(), if closing.is_none() => {
                    if r.is_err() || *stop.borrow() {
                        closing = Some("relay shutting down");
                    }
                }
                _ = &mut grace, if closing.is_some() => {
                    tracing::info!(%peer, "connection did not finish its request after being told to close: dropped");
                    break;
                }
            }
            if let (Some(why), false) = (closing, told) {
                told = true;
                {
                    tracing::debug!(%peer, reason = why, "closing connection");
                    conn.as_mut().graceful_shutdown();
                    grace
                        .as_mut()
                        .reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
        }
        drop(permits);
    });
}

/// When a connection last moved bytes (either way).
struct Activity {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
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
    /// Last traffic, for the idle limit.
    activity: Arc<Activity>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Lingering<S> {
    fn new(inner: S) -> Self {
        Lingering {
            inner: Some(inner),
            activity: Arc::new(Activity::new()),
        }
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
        let before = buf.filled().len();
        let r = match self.get() {
            Ok(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Err(e) => return std::task::Poll::Ready(Err(e)),
        };
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
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
        let r = match self.get() {
            Ok(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Err(e) => return std::task::Poll::Ready(Err(e)),
        };
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
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
