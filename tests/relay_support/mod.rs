//! Helpers for the relay integration tests (tests/relay.rs): a fresh
//! region per test (CA, relay, facilities, auditor) in a temporary folder,
//! an in-process relay over real loopback mutual TLS, and raw clients for
//! hand-crafted (hostile) requests.
#![allow(dead_code)]

pub mod backend;
pub mod s3;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use renkei::api::SUBMISSION_HEADER;
use renkei::client::http::ReqBody;
use renkei::client::ops::{memory_member, OpError, SendRequest, Session};
use renkei::client::{ClientError, RelayClient};
use renkei::identity::{FacilityId, Kind};
use renkei::package::{self, Limits, PackageKind, SealRequest, Sealed};
use renkei::pki::{CertInfo, TrustStore};
use renkei::profile::Profile;
use renkei::receipt::{self, Purpose, SignedReceipt, Submission};
use renkei::relay::{AppState, RelayConfig, RelayError, RelayState};

pub use backend::{Backend, TestDb};

mod region;
pub use region::{cert_of, Region};

/// Valid facility IDs (10 digits, Luhn check digit).
pub const CLINIC: &str = "1311234569";
pub const HOSPITAL: &str = "1317654323";
pub const RECOVERY: &str = "1315555555";
pub const OTHER: &str = "1312222225";
/// Service IDs.
pub const RELAY_ID: &str = "relay-1";
pub const AUDITOR_ID: &str = "audit-1";

#[path = "../doc_support/mod.rs"]
mod doc_support;
pub use doc_support::*;

/// A valid referral (JP-CLINS document) from the clinic to the hospital,
/// without attachments; other packages use [`document_for`].
pub static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    String::from_utf8(document_for(
        renkei::document::DocKind::Referral,
        CLINIC,
        HOSPITAL,
        &[],
    ))
    .expect("UTF-8")
});

/// Bound on any single network step of a test.
pub const STEP: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Log to the test output when RUST_LOG is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The PKCS#8 DER signing key of a profile.
pub fn key_der_of(profile: &Path) -> Vec<u8> {
    Profile::open(profile)
        .expect("profile")
        .signing_key()
        .expect("key")
        .to_pkcs8_der()
        .to_vec()
}

/// A relay running in this process on a loopback port.
pub struct RunningRelay {
    pub url: String,
    pub port: u16,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), RelayError>>>,
}

impl RunningRelay {
    /// Open the relay's state on `data` (and the database at
    /// `database_url`, or DATA/relay.db) and serve on a fresh port.
    pub async fn start(
        profile: &Path,
        data: &Path,
        database_url: Option<&str>,
        config: RelayConfig,
    ) -> RunningRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = RelayState::open(profile, data, database_url, config)
            .await
            .expect("relay state");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(renkei::relay::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        RunningRelay {
            url: format!("https://localhost:{port}"),
            port,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stop serving (graceful shutdown) and wait for the server to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task)
                .await
                .expect("relay stops in time")
                .expect("relay task")
                .expect("relay serve");
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A region with a running relay, three facilities and an auditor.
pub struct World {
    pub region: Region,
    pub relay_profile: PathBuf,
    pub data: PathBuf,
    pub config: RelayConfig,
    pub clinic: PathBuf,
    pub hospital: PathBuf,
    pub recovery: PathBuf,
    pub auditor: PathBuf,
    pub relay: RunningRelay,
    /// The relay's database (last: dropped after the relay).
    pub db: TestDb,
}

impl World {
    /// Default relay settings.
    pub async fn start(backend: Backend) -> World {
        Self::with_config(backend, RelayConfig::default()).await
    }

    /// Custom relay settings (the sweep interval is kept long so that
    /// tests call the sweep themselves).
    pub async fn with_config(backend: Backend, config: RelayConfig) -> World {
        init_tracing();
        let region = Region::new("テスト地域医療連携ネットワーク CA");
        let relay_profile = region.profile(RELAY_ID, Kind::Relay, "テスト地域 中継サーバ");
        let clinic = region.profile(CLINIC, Kind::Clinic, "さくら内科クリニック");
        let hospital = region.profile(HOSPITAL, Kind::Hospital, "市立中央病院");
        let recovery = region.profile(
            RECOVERY,
            Kind::RecoveryHospital,
            "みなみ回復期リハビリテーション病院",
        );
        let auditor = region.profile(AUDITOR_ID, Kind::Auditor, "地域監査人");
        let data = region.dir().join("relay-data");
        let db = TestDb::new(backend, &data).await;
        let relay = RunningRelay::start(&relay_profile, &data, db.url(), config.clone()).await;
        assert_eq!(
            data.join("relay.db").exists(),
            backend == Backend::Sqlite,
            "the relay runs on {backend:?}"
        );
        World {
            region,
            relay_profile,
            data,
            config,
            clinic,
            hospital,
            recovery,
            auditor,
            relay,
            db,
        }
    }

    /// Stop the relay (its shutdown future resolves, open requests finish),
    /// then open a new relay state on the same profile and data folder and
    /// serve it on a fresh port.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.relay.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.relay.task.take() {
            bounded(task)
                .await
                .expect("relay task")
                .expect("relay serve");
        }
        self.relay = RunningRelay::start(
            &self.relay_profile,
            &self.data,
            self.db.url(),
            self.config.clone(),
        )
        .await;
    }

    /// Open a session for a profile against this world's relay.
    pub async fn session(&self, profile: &Path) -> Session {
        tokio::time::timeout(STEP, Session::open(profile, Some(&self.relay.url)))
            .await
            .expect("session open in time")
            .expect("session open")
    }

    /// A raw client for a profile.
    pub fn client(&self, profile: &Path) -> RelayClient {
        let p = Profile::open(profile).expect("profile");
        RelayClient::new(&p, Some(&self.relay.url)).expect("client")
    }

    /// The relay's blob folder.
    pub fn blobs(&self) -> PathBuf {
        self.data.join("blobs")
    }

    /// Every file stored under DATA/blobs and DATA/tmp.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut v = files_under(&self.data.join("blobs"));
        v.extend(files_under(&self.data.join("tmp")));
        v
    }

    /// The whole receipt log, as the auditor sees it.
    pub async fn log(&self) -> Vec<serde_json::Value> {
        let a = self.client(&self.auditor);
        let (status, _, body) = raw(&a, Method::GET, "/v1/receipts", &[], Vec::new()).await;
        assert_eq!(status, 200, "auditor reads the log: {}", text(&body));
        serde_json::from_slice(&body).expect("log json")
    }

    /// A document file in the world's folder.
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let dir = self.region.dir().join(unique("files"));
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(name);
        fs::write(&p, content).expect("write file");
        p
    }

    /// A fresh, not yet existing output folder.
    pub fn out_dir(&self) -> PathBuf {
        self.region.dir().join(unique("out"))
    }
}

/// Every regular file under `dir` (recursively; empty if absent), but
/// the blob store's identity marker (`store-id`).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        // The blob store's identity marker is not ciphertext.
        if e.file_name() == "store-id" {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A send request.
pub fn request(to: &[&str], document: PathBuf, attachments: Vec<PathBuf>) -> SendRequest {
    SendRequest {
        to: to.iter().map(|t| t.parse().expect("facility id")).collect(),
        document,
        attachments,
        kind: PackageKind::Referral,
        in_reply_to: None,
        thread: None,
    }
}

/// Seal a referral from `sender` (a profile) to `recipients` (verified or
/// deliberately altered certificates) into `out` with the library.
pub fn seal_to_file(sender: &Path, recipients: &[CertInfo], out: &Path) -> Sealed {
    seal_inner(sender, recipients, out, None)
}

/// Like [`seal_to_file`], with one attachment `attachments/scan.dcm`.
pub fn seal_with_attachment(
    sender: &Path,
    recipients: &[CertInfo],
    out: &Path,
    attachment: &[u8],
) -> Sealed {
    seal_inner(sender, recipients, out, Some(attachment.to_vec()))
}

fn seal_inner(
    sender: &Path,
    recipients: &[CertInfo],
    out: &Path,
    attachment: Option<Vec<u8>>,
) -> Sealed {
    let p = Profile::open(sender).expect("profile");
    let key = p.signing_key().expect("key");
    let cert = p.certificate().expect("cert");
    let f = fs::File::create(out).expect("create sealed file");
    let from = cert.facility_id().expect("sender ID").to_string();
    let to = recipients.first().and_then(|c| c.facility_id().ok());
    let to = to.map_or(from.clone(), |t| t.to_string());
    let att: &[&str] = if attachment.is_some() {
        &["scan.dcm"]
    } else {
        &[]
    };
    let doc = document_for(renkei::document::DocKind::Referral, &from, &to, att);
    package::seal(
        SealRequest {
            sender_key: &key,
            sender_cert: &cert,
            sender_copy: true,
            recipients,
            kind: PackageKind::Referral,
            thread_id: None,
            in_reply_to: None,
            document: memory_member(package::DOCUMENT_PATH, "application/fhir+json", doc),
            attachments: attachment
                .map(|a| memory_member("attachments/scan.dcm", "application/dicom", a))
                .into_iter()
                .collect(),
            limits: Limits::default(),
        },
        io::BufWriter::new(f),
    )
    .expect("seal")
}

/// A signed submission receipt as `signer` (a profile) would make it.
pub fn submission(
    signer: &Path,
    envelope_id: &str,
    size: u64,
    sender: &str,
    sender_cert_sha256: &str,
    recipients: &[&str],
) -> SignedReceipt {
    let key = Profile::open(signer)
        .expect("profile")
        .signing_key()
        .expect("key");
    let sub = Submission {
        envelope_id: envelope_id.to_string(),
        size,
        sender: sender.parse().expect("sender id"),
        sender_cert_sha256: sender_cert_sha256.to_string(),
        recipients: recipients
            .iter()
            .map(|r| r.parse::<FacilityId>().expect("recipient id"))
            .collect(),
        submitted_at: receipt::now_rfc3339(),
    };
    SignedReceipt::sign(Purpose::Submission, &sub, &key)
}

/// The Renkei-Submission header value for a signed submission.
pub fn submission_header(s: &SignedReceipt) -> (&'static str, String) {
    (
        SUBMISSION_HEADER,
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(s).expect("json")),
    )
}

/// A body sent without Content-Length (chunked), in `chunk`-byte pieces.
pub fn chunked(bytes: Vec<u8>, chunk: usize) -> ReqBody {
    let pieces: Vec<Result<Frame<Bytes>, io::Error>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    BoxBody::new(StreamBody::new(futures_util::stream::iter(pieces)))
}

/// One request with a byte body; returns status, headers and body, whatever
/// the status.
pub async fn raw(
    client: &RelayClient,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, Bytes) {
    raw_body(
        client,
        method,
        path,
        headers,
        renkei::client::http::full(body),
    )
    .await
}

/// One request with any body; returns status, headers and body.
pub async fn raw_body(
    client: &RelayClient,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: ReqBody,
) -> (u16, hyper::HeaderMap, Bytes) {
    let resp = tokio::time::timeout(STEP, client.send(method, path, headers, body))
        .await
        .expect("request in time")
        .expect("request");
    let status = resp.status.as_u16();
    let headers = resp.headers.clone();
    let body = tokio::time::timeout(STEP, resp.body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, headers, body)
}

/// Body as text (for messages).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The HTTP status of a refusal by the relay, if that is what `e` is.
pub fn refused(e: &OpError) -> Option<u16> {
    match e {
        OpError::Client(ClientError::Refused { status, .. }) => Some(*status),
        _ => None,
    }
}

/// Run a future with the step bound.
pub async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step in time")
}

/// The CRL number of a PEM CRL, checked against `ca_pem`.
pub fn crl_number_of(ca_pem: &str, crl_pem: &[u8]) -> u128 {
    let t = TrustStore::new(ca_pem.as_bytes(), Some(crl_pem)).expect("crl verifies");
    renkei::pki::crl_number(t.crl_der())
}

/// A TLS connection to the relay built by hand: trusting `ca_der`,
/// presenting `client_auth` (certificate DER, PKCS#8 key DER) or no
/// certificate at all. Sends `GET /v1/health` and returns what came back,
/// or the error (handshake, alert, reset) that ended it.
pub async fn raw_tls_health(
    port: u16,
    ca_der: &[u8],
    client_auth: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<String, String> {
    let provider = renkei::pki::tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .expect("client auth cert"),
    };
    let attempt = async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(STEP, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Write `pem` as the directory entry of `facility_id` straight into the
/// relay's database (a relay serving a substituted certificate).
pub async fn substitute_directory_entry(db: &TestDb, facility_id: &str, pem: &str) {
    let mut conn = db.connect().await;
    let info = CertInfo::parse_pem(pem.as_bytes(), "substitute").expect("parse");
    sqlx::query("DELETE FROM directory WHERE facility_id = $1")
        .bind(facility_id)
        .execute(&mut conn)
        .await
        .expect("delete");
    sqlx::query("INSERT INTO directory (facility_id, kind, name, cert_pem, fingerprint, published_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(facility_id)
        .bind(info.kind.as_str())
        .bind(&info.name)
        .bind(pem)
        .bind(&info.fingerprint)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .execute(&mut conn)
        .await
        .expect("insert");
    use sqlx::Connection;
    conn.close().await.expect("close");
}

/// A mutual-TLS connection to the relay built by hand (trusting `ca_der`,
/// presenting `profile`'s certificate), with nothing sent yet.
pub async fn raw_tls_stream(
    port: u16,
    ca_der: &[u8],
    profile: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let provider = renkei::pki::tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(cert_of(profile).der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der_of(profile))),
        )
        .expect("client auth cert");
    let tcp = bounded(tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    bounded(tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp))
        .await
        .expect("handshake")
}

/// Read from `s` until the peer closes (EOF or error), at most `within`;
/// how long that took, or `None` if it stayed open.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Option<Duration> {
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.ok().map(|_| t0.elapsed())
}

/// Decrypt `sealed` with stock age as the reader `reader` (a profile) and
/// encrypt the same plaintext again to `readers`, into `out`: what an
/// insider who can read a package can do with it.
pub fn reencrypt(reader: &Path, sealed: &Path, readers: &[CertInfo], out: &Path) {
    use std::io::{Read, Write};
    let me = Profile::open(reader).unwrap().age_identity().unwrap();
    let d = age::Decryptor::new(fs::File::open(sealed).unwrap()).unwrap();
    let mut r = d
        .decrypt(std::iter::once(me.inner() as &dyn age::Identity))
        .unwrap();
    let mut plain = Vec::new();
    r.read_to_end(&mut plain).unwrap();
    let to: Vec<_> = readers.iter().map(|c| c.recipient().unwrap()).collect();
    let e = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient)).unwrap();
    let mut w = e.wrap_output(fs::File::create(out).unwrap()).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
}
