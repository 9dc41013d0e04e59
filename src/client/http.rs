//! A small HTTP/1.1 client over rustls with the profile's certificate as
//! client certificate, trusting only the region's CA. One connection per
//! request keeps it simple and lets every response name the relay
//! certificate it came over.
//!
//! Nothing waits forever: connecting (TCP and TLS) is bounded by the
//! profile's `connect_timeout_secs`, and a request, an upload or a download
//! that makes no progress for `stall_timeout_secs` is abandoned with
//! [`ClientError::Stalled`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use serde::de::DeserializeOwned;

use crate::identity::Kind;
use crate::pki::{CertInfo, TrustStore};
use crate::profile::Profile;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No relay address.
    #[error("no relay address: give --relay https://HOST:PORT or run `renkei profile install --profile DIR --relay URL`")]
    NoRelay,
    /// A malformed relay URL.
    #[error("relay URL {0:?} is not of the form https://HOST:PORT")]
    BadUrl(String),
    /// Connection or TLS failure.
    #[error("cannot reach the relay at {url}: {why}")]
    Connect {
        /// The relay.
        url: String,
        /// Cause.
        why: String,
    },
    /// The TLS handshake was refused over a certificate (this facility's
    /// was revoked or expired, or the relay's was revoked): trying again
    /// will not help.
    #[error("cannot use the relay at {url}: {why}")]
    CertificateRefused {
        /// The relay.
        url: String,
        /// Cause.
        why: String,
    },
    /// The relay's certificate is not a relay certificate of this region.
    #[error("the server at {0} is not this region's relay: {1}")]
    NotRelay(String, String),
    /// The relay answered with an error.
    #[error("the relay refused ({status}): {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem detail.
        detail: String,
    },
    /// A response we could not read.
    #[error("unreadable answer from the relay: {0}")]
    Protocol(String),
    /// The relay stopped answering (no progress within the stall timeout).
    #[error("the relay at {url} made no progress for {secs} s; try again later")]
    Stalled {
        /// The relay.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// Local trouble.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// True when the relay could not be reached or could not serve the
    /// request for now (network down, timeouts, 5xx, 429): trying again
    /// later may succeed. False for refusals that will not change (4xx) and
    /// for local trouble.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Stalled { .. } => true,
            ClientError::Refused { status, .. } => *status >= 500 || *status == 429,
            ClientError::Protocol(_) => true,
            _ => false,
        }
    }
}

/// Request bodies.
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// When something last moved on a request (an upload's bytes, a
/// download's frames): the stall timeout counts from here.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Something moved.
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let idle = self.start.elapsed().saturating_sub(last);
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// A connection-per-request client for one relay.
pub struct RelayClient {
    url: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    trust: TrustStore,
    connect_timeout: Duration,
    stall_timeout: Duration,
}

/// A response with the verified relay certificate it arrived over.
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: hyper::body::Incoming,
    /// The relay's certificate, verified against the CA (kind relay).
    pub relay: CertInfo,
    /// How long reading may make no progress.
    pub stall_timeout: Duration,
    url: String,
}

impl Response {
    /// The next frame of the body, or [`ClientError::Stalled`] if none
    /// arrives within the stall timeout.
    pub async fn next_frame(&mut self) -> Result<Option<Frame<Bytes>>, ClientError> {
        match tokio::time::timeout(self.stall_timeout, self.body.frame()).await {
            Err(_) => Err(ClientError::Stalled {
                url: self.url.clone(),
                secs: self.stall_timeout.as_secs(),
            }),
            Ok(None) => Ok(None),
            Ok(Some(Ok(f))) => Ok(Some(f)),
            Ok(Some(Err(e))) => Err(ClientError::Protocol(e.to_string())),
        }
    }
}

impl RelayClient {
    /// A client for `url` (or the profile's configured relay).
    pub fn new(profile: &Profile, url: Option<&str>) -> Result<RelayClient, ClientError> {
        let url = url
            .map(str::to_string)
            .or_else(|| profile.config.relay.clone())
            .ok_or(ClientError::NoRelay)?;
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::BadUrl(url.clone()))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ClientError::BadUrl(url.clone()))?;
        let port: u16 = port.parse().map_err(|_| ClientError::BadUrl(url.clone()))?;
        if host.is_empty() || host.contains('/') {
            return Err(ClientError::BadUrl(url.clone()));
        }
        let trust = profile.trust()?;
        let cert = profile.certificate()?;
        let key = profile.signing_key()?;
        let provider = crate::pki::tls_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(trust.ca_der().to_vec()))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut vb = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        );
        if let Some(crl) = trust.crl_der() {
            vb = vb
                .with_crls([CertificateRevocationListDer::from(crl.to_vec())])
                .only_check_end_entity_revocation();
        }
        let verifier = vb
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().to_vec()));
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(vec![CertificateDer::from(cert.der.clone())], key_der)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(RelayClient {
            url: url.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
            tls: Arc::new(cfg),
            trust,
            connect_timeout: Duration::from_secs(profile.config.client.connect_timeout_secs.max(1)),
            stall_timeout: Duration::from_secs(profile.config.client.stall_timeout_secs.max(1)),
        })
    }

    /// The relay URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send one request on a fresh connection.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: ReqBody,
    ) -> Result<Response, ClientError> {
        self.send_with(method, path, headers, body, Activity::new())
            .await
    }

    /// Send one request on a fresh connection; `activity` is touched by the
    /// caller's body stream (uploads), so a long upload that keeps moving
    /// is not cut off.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: ReqBody,
        activity: Activity,
    ) -> Result<Response, ClientError> {
        self.connect()
            .await?
            .send_with(method, path, headers, body, activity)
            .await
    }

    /// Open one mutual-TLS connection to the relay (bounded by the connect
    /// timeout), for one request ([`RelayClient::send`]) or several in a
    /// row (keep-alive).
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        tokio::time::timeout(self.connect_timeout, self.handshake())
            .await
            .map_err(|_| ClientError::Connect {
                url: self.url.clone(),
                why: format!("no connection within {} s", self.connect_timeout.as_secs()),
            })?
    }

    /// TCP, TLS and HTTP/1.1 handshakes; the server must be this region's
    /// relay.
    async fn handshake(&self) -> Result<Connection, ClientError> {
        let connect = |why: String| ClientError::Connect {
            url: self.url.clone(),
            why,
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| connect(e.to_string()))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| connect(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let why = format!("TLS: {e}");
                if why.contains("invalid peer certificate: Revoked") {
                    ClientError::CertificateRefused {
                        url: self.url.clone(),
                        why: format!(
                            "the relay's certificate has been revoked by the region's CA; \
                             use the relay the network operator announced ({why})"
                        ),
                    }
                } else if why.contains("invalid peer certificate") {
                    ClientError::CertificateRefused {
                        url: self.url.clone(),
                        why,
                    }
                } else {
                    connect(why)
                }
            })?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| connect("no server certificate".into()))?;
        let relay = self
            .trust
            .verify(&der, None)
            .map_err(|e| ClientError::NotRelay(self.url.clone(), e.to_string()))?;
        if relay.kind != Kind::Relay {
            return Err(ClientError::NotRelay(
                self.url.clone(),
                format!("its certificate is a {} certificate", relay.kind),
            ));
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect(e.to_string()))?;
        Ok(Connection {
            sender,
            conn: Some(tokio::spawn(conn)),
            relay,
            host: self.host.clone(),
            url: self.url.clone(),
            stall_timeout: self.stall_timeout,
        })
    }

    /// Read a whole (small) body, failing with the problem detail on error.
    pub async fn read(
        resp: Response,
        limit: usize,
    ) -> Result<(StatusCode, Bytes, CertInfo), ClientError> {
        let status = resp.status;
        let relay = resp.relay;
        let collect = http_body_util::Limited::new(resp.body, limit).collect();
        let body = tokio::time::timeout(resp.stall_timeout, collect)
            .await
            .map_err(|_| ClientError::Stalled {
                url: resp.url.clone(),
                secs: resp.stall_timeout.as_secs(),
            })?
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(ClientError::Refused {
                status: status.as_u16(),
                detail,
            });
        }
        Ok((status, body, relay))
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, CertInfo), ClientError> {
        let resp = self.send(Method::GET, path, &[], empty()).await?;
        let (_, body, relay) = Self::read(resp, 64 << 20).await?;
        let v = serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((v, relay))
    }

    /// Send bytes, read a small answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes, CertInfo), ClientError> {
        let resp = self.send(method, path, headers, full(body)).await?;
        Self::read(resp, 16 << 20).await
    }

    /// Upload a file as the body (streamed), calling `progress` with bytes sent.
    pub async fn upload_file(
        &self,
        path_in_api: &str,
        headers: &[(&str, String)],
        file: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(StatusCode, Bytes, CertInfo), ClientError> {
        let f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        let mut sent = 0u64;
        let activity = Activity::new();
        let moved = activity.clone();
        let stream =
            tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map_ok(move |chunk| {
                sent += chunk.len() as u64;
                moved.touch();
                progress(sent);
                Frame::data(chunk)
            });
        let body = BoxBody::new(StreamBody::new(stream));
        let mut h: Vec<(&str, String)> = headers.to_vec();
        h.push(("content-length", len.to_string()));
        h.push(("content-type", "application/octet-stream".into()));
        let resp = self
            .send_with(Method::POST, path_in_api, &h, body, activity)
            .await?;
        Self::read(resp, 1 << 20).await
    }
}

/// One open connection to the relay ([`RelayClient::connect`]).
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
    conn: Option<tokio::task::JoinHandle<Result<(), hyper::Error>>>,
    relay: CertInfo,
    host: String,
    url: String,
    stall_timeout: Duration,
}

impl Connection {
    /// The relay's certificate, verified against the CA (kind relay).
    pub fn relay(&self) -> &CertInfo {
        &self.relay
    }

    /// Whether the relay closed the connection (or it broke).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Send one request on this connection (wait for the previous answer's
    /// body to be read first).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: ReqBody,
    ) -> Result<Response, ClientError> {
        self.send_with(method, path, headers, body, Activity::new())
            .await
    }

    /// Send one request; give up when `activity` stalls for the stall
    /// timeout.
    async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: ReqBody,
        activity: Activity,
    ) -> Result<Response, ClientError> {
        if let Err(e) = self.sender.ready().await {
            let why = self.cause(&e).await;
            return Err(self.refused(why));
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        activity.touch();
        let sent = tokio::select! {
            r = self.sender.send_request(req) => r,
            () = activity.stalled(self.stall_timeout) => {
                return Err(ClientError::Stalled {
                    url: self.url.clone(),
                    secs: self.stall_timeout.as_secs(),
                })
            }
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let why = self.cause(&e).await;
                return Err(self.refused(why));
            }
        };
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            relay: self.relay.clone(),
            stall_timeout: self.stall_timeout,
            url: self.url.clone(),
        })
    }

    /// The error for a failed request: refused over a certificate (will
    /// not change), or a connection failure (may pass).
    fn refused(&self, why: String) -> ClientError {
        match explain_alert(&why) {
            Some(hint) => ClientError::CertificateRefused {
                url: self.url.clone(),
                why: format!("{hint} ({why})"),
            },
            None => ClientError::Connect {
                url: self.url.clone(),
                why,
            },
        }
    }
}

impl Connection {
    /// Why a request failed. With TLS 1.3 the relay checks the client
    /// certificate after the client's handshake has finished, so a refusal
    /// (a revoked certificate, say) arrives as an alert on the connection,
    /// which hyper reports only as a closed channel or canceled request;
    /// the connection task holds the real cause.
    async fn cause(&mut self, e: &hyper::Error) -> String {
        let mut why = error_chain(e);
        if let Some(conn) = self.conn.take() {
            if let Ok(Ok(Err(ce))) =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn).await
            {
                why = error_chain(&ce);
            }
        }
        why
    }
}

/// An empty body.
pub fn empty() -> ReqBody {
    full(Vec::new())
}

/// A body from bytes.
pub fn full(b: Vec<u8>) -> ReqBody {
    Full::new(Bytes::from(b))
        .map_err(|never| match never {})
        .boxed()
}

/// An error and its causes, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// What a TLS alert from the relay means for this facility, if it is
/// about certificates.
fn explain_alert(why: &str) -> Option<&'static str> {
    if why.contains("CertificateRevoked") {
        Some("this facility's certificate has been revoked by the region's CA")
    } else if why.contains("CertificateExpired") {
        Some("this facility's certificate has expired; ask the region's CA for a new one")
    } else if why.contains("UnknownCA") || why.contains("BadCertificate") {
        Some("the relay does not accept this facility's certificate (issued by another CA?)")
    } else {
        None
    }
}
