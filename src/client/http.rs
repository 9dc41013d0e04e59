//! A small HTTP/1.1 client over rustls with the profile's certificate as
//! client certificate, trusting only the region's CA. One connection per
//! request keeps it simple and lets every response name the relay
//! certificate it came over.

use std::path::Path;
use std::sync::Arc;

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
    /// Local trouble.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Request bodies.
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// A connection-per-request client for one relay.
pub struct RelayClient {
    url: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    trust: TrustStore,
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
        self.connect()
            .await?
            .send(method, path, headers, body)
            .await
    }

    /// Open one mutual-TLS connection to the relay, for one request
    /// ([`RelayClient::send`]) or several in a row (keep-alive).
    pub async fn connect(&self) -> Result<Connection, ClientError> {
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
                    connect(format!(
                        "the relay's certificate has been revoked by the region's CA; \
                         use the relay the network operator announced ({why})"
                    ))
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
        })
    }

    /// Read a whole (small) body, failing with the problem detail on error.
    pub async fn read(
        resp: Response,
        limit: usize,
    ) -> Result<(StatusCode, Bytes, CertInfo), ClientError> {
        let status = resp.status;
        let relay = resp.relay;
        let body = http_body_util::Limited::new(resp.body, limit)
            .collect()
            .await
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
        let stream =
            tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map_ok(move |chunk| {
                sent += chunk.len() as u64;
                progress(sent);
                Frame::data(chunk)
            });
        let body = BoxBody::new(StreamBody::new(stream));
        let mut h: Vec<(&str, String)> = headers.to_vec();
        h.push(("content-length", len.to_string()));
        h.push(("content-type", "application/octet-stream".into()));
        let resp = self.send(Method::POST, path_in_api, &h, body).await?;
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
        let url = self.url.clone();
        let connect = |why: String| ClientError::Connect { url, why };
        if let Err(e) = self.sender.ready().await {
            return Err(connect(self.cause(&e).await));
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
        let resp = match self.sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Err(connect(self.cause(&e).await)),
        };
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            relay: self.relay.clone(),
        })
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
        explain_alert(why)
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

/// Add what a TLS alert from the relay means for this facility.
fn explain_alert(why: String) -> String {
    let hint = if why.contains("CertificateRevoked") {
        "this facility's certificate has been revoked by the region's CA"
    } else if why.contains("CertificateExpired") {
        "this facility's certificate has expired; ask the region's CA for a new one"
    } else if why.contains("UnknownCA") || why.contains("BadCertificate") {
        "the relay does not accept this facility's certificate (issued by another CA?)"
    } else {
        return why;
    };
    format!("{hint} ({why})")
}
