//! Helpers for the fault tests (tests/faults.rs, tests/pg_restart.rs): a
//! region of certified profiles, a fresh PostgreSQL database per test, the
//! relay as a real child process (`renkei relay serve`) that can be killed,
//! sealed packages, and direct looks at what the relay stored.
#![allow(dead_code)]

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::Method;
use sqlx::{Connection, Row};

use renkei::api::SUBMISSION_HEADER;
use renkei::client::ops::memory_member;
use renkei::client::RelayClient;
use renkei::identity::Kind;
use renkei::package::{self, Limits, PackageKind, SealRequest, Sealed};
use renkei::pki::CertInfo;
use renkei::profile::Profile;
use renkei::receipt::{self, Purpose, SignedReceipt, Submission};

#[path = "../doc_support/mod.rs"]
pub mod doc_support;

/// Valid facility IDs (10 digits, Luhn check digit).
pub const CLINIC: &str = "1311234569";
pub const HOSPITAL: &str = "1317654323";
pub const RELAY_ID: &str = "relay-1";
pub const AUDITOR_ID: &str = "audit-1";

/// Bound on any single network step.
pub const STEP: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Run a future with the step bound.
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in {STEP:?}"))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
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
    out.sort();
    out
}

// --- region and profiles ---

#[path = "../relay_support/region.rs"]
mod region;
#[allow(unused_imports)]
pub use region::cert_of;

/// A CA in a temporary folder, with a relay, a clinic, a hospital and an
/// auditor certified by it.
pub struct Region {
    pub base: region::Region,
    pub relay: PathBuf,
    pub clinic: PathBuf,
    pub hospital: PathBuf,
    pub auditor: PathBuf,
}

impl Region {
    /// A new region.
    pub fn new() -> Region {
        let base = region::Region::new("障害試験 地域医療連携 CA");
        Region {
            relay: base.profile(RELAY_ID, Kind::Relay, "障害試験 中継サーバ"),
            clinic: base.profile(CLINIC, Kind::Clinic, "さくら内科クリニック"),
            hospital: base.profile(HOSPITAL, Kind::Hospital, "市立中央病院"),
            auditor: base.profile(AUDITOR_ID, Kind::Auditor, "地域監査人"),
            base,
        }
    }

    /// The region's folder.
    pub fn dir(&self) -> &Path {
        self.base.dir()
    }

    /// A certified profile with the CA certificate and CRL.
    pub fn profile(&self, id: &str, kind: Kind, name: &str) -> PathBuf {
        self.base.profile(id, kind, name)
    }

    /// A fresh folder under the region.
    pub fn folder(&self, name: &str) -> PathBuf {
        let d = self.dir().join(unique(name));
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

/// A raw client of a profile for `url`.
pub fn client(profile: &Path, url: &str) -> RelayClient {
    let p = Profile::open(profile).expect("profile");
    RelayClient::new(&p, Some(url)).expect("client")
}

/// A sealed package on disk.
pub struct Package {
    pub file: PathBuf,
    pub sealed: Sealed,
    pub id: String,
}

/// Seal a referral (a valid JP-CLINS document) from `sender` to the first
/// of `recipients` with an attachment of `attachment_len` random bytes,
/// into `dir`.
pub fn seal(sender: &Path, recipients: &[CertInfo], dir: &Path, attachment_len: usize) -> Package {
    let p = Profile::open(sender).expect("profile");
    let key = p.signing_key().expect("key");
    let cert = p.certificate().expect("cert");
    let file = dir.join(unique("package"));
    let f = fs::File::create(&file).expect("create sealed file");
    let mut attachment = vec![0u8; attachment_len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut attachment)
        .expect("random");
    let sealed = package::seal(
        SealRequest {
            sender_key: &key,
            sender_cert: &cert,
            sender_copy: true,
            recipients,
            kind: PackageKind::Referral,
            thread_id: None,
            in_reply_to: None,
            document: memory_member(
                package::DOCUMENT_PATH,
                "application/fhir+json",
                doc_support::document_for(
                    renkei::document::DocKind::Referral,
                    cert.id.to_string().as_str(),
                    recipients[0].id.to_string().as_str(),
                    &["scan.dcm"],
                ),
            ),
            attachments: vec![memory_member(
                "attachments/scan.dcm",
                "application/dicom",
                attachment,
            )],
            limits: Limits::default(),
        },
        io::BufWriter::new(f),
    )
    .expect("seal");
    let id = hex::encode(sealed.envelope_id);
    Package { file, sealed, id }
}

/// The Renkei-Submission header for `pkg`, signed by `sender`.
pub fn submission_header(sender: &Path, pkg: &Package) -> (&'static str, String) {
    let p = Profile::open(sender).expect("profile");
    let cert = p.certificate().expect("cert");
    let sub = Submission {
        envelope_id: pkg.id.clone(),
        size: pkg.sealed.ciphertext_size,
        sender: cert.facility_id().expect("facility").clone(),
        sender_cert_sha256: cert.fingerprint.clone(),
        recipients: pkg
            .sealed
            .manifest
            .recipients
            .iter()
            .map(|r| r.facility_id.clone())
            .collect(),
        submitted_at: receipt::now_rfc3339(),
    };
    let signed = SignedReceipt::sign(Purpose::Submission, &sub, &p.signing_key().expect("key"));
    (
        SUBMISSION_HEADER,
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&signed).expect("json")),
    )
}

/// What the relay answered to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Assert a problem-details answer with `status`; returns its detail.
    pub fn problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "problem details expected, got {:?}: {}",
            self.content_type,
            self.text()
        );
        let v: serde_json::Value = serde_json::from_slice(&self.body).expect("problem json");
        assert_eq!(v["status"], status, "{v}");
        v["detail"].as_str().expect("detail").to_string()
    }
}

/// One request; `Err` is a transport failure (connection refused or
/// reset, timeout), `Ok` any answer.
pub async fn request(
    client: &RelayClient,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let attempt = async {
        let resp = client
            .send(method, path, headers, renkei::client::http::full(body))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status.as_u16();
        let content_type = resp
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    };
    tokio::time::timeout(STEP, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {STEP:?}")))
}

/// Upload `pkg` as `sender` with a raw request (so that the status and
/// headers of a refusal can be looked at).
pub async fn upload_raw(
    client: &RelayClient,
    sender: &Path,
    pkg: &Package,
) -> Result<Answer, String> {
    let bytes = fs::read(&pkg.file).expect("read package");
    let headers = [
        submission_header(sender, pkg),
        ("content-length", bytes.len().to_string()),
        ("content-type", "application/octet-stream".to_string()),
    ];
    request(client, Method::POST, "/v1/envelopes", &headers, bytes).await
}

/// Envelope IDs in the inbox of the client's facility.
pub async fn inbox_ids(client: &RelayClient) -> Vec<String> {
    let a = request(client, Method::GET, "/v1/inbox", &[], Vec::new())
        .await
        .expect("inbox answer");
    assert_eq!(a.status, 200, "inbox: {}", a.text());
    let v: Vec<serde_json::Value> = serde_json::from_slice(&a.body).expect("inbox json");
    let mut ids: Vec<String> = v
        .iter()
        .map(|e| e["envelope_id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

// --- PostgreSQL ---

/// The server the tests use: `RENKEI_TEST_POSTGRES` or the local one.
pub fn postgres_base() -> String {
    std::env::var("RENKEI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `base` with another database name.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// A fresh database on the test server, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    /// Create a uniquely named database.
    pub async fn new(tag: &str) -> TestDb {
        let admin = postgres_base();
        let name = format!(
            "renkei_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = bounded("connect to PostgreSQL", sqlx::PgConnection::connect(&admin))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (set RENKEI_TEST_POSTGRES): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        TestDb { name, url, admin }
    }

    /// A connection to the test database.
    pub async fn connect(&self) -> sqlx::PgConnection {
        bounded("connect", sqlx::PgConnection::connect(&self.url))
            .await
            .expect("connect to the test database")
    }

    /// Envelope IDs with a row, sorted.
    pub async fn envelope_ids(&self) -> Vec<String> {
        let mut c = self.connect().await;
        sqlx::query("SELECT envelope_id FROM envelopes ORDER BY envelope_id")
            .fetch_all(&mut c)
            .await
            .expect("envelopes")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// (purpose, log index) of the receipts of one envelope.
    pub async fn receipts_of(&self, id: &str) -> Vec<(String, i64)> {
        let mut c = self.connect().await;
        sqlx::query(
            "SELECT purpose, log_index FROM receipts WHERE envelope_id = $1 ORDER BY log_index",
        )
        .bind(id)
        .fetch_all(&mut c)
        .await
        .expect("receipts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    /// Number of log entries.
    pub async fn log_size(&self) -> i64 {
        let mut c = self.connect().await;
        sqlx::query("SELECT COUNT(*) FROM log_entries")
            .fetch_one(&mut c)
            .await
            .expect("log size")
            .get(0)
    }

    /// Log entries mentioning `text`.
    pub async fn log_mentions(&self, text: &str) -> i64 {
        let mut c = self.connect().await;
        sqlx::query("SELECT COUNT(*) FROM log_entries WHERE entry LIKE $1")
            .bind(format!("%{text}%"))
            .fetch_one(&mut c)
            .await
            .expect("log search")
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: do the work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let work = async {
                    let mut c = sqlx::PgConnection::connect(&admin).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await?;
                    c.close().await
                };
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(20), work).await {
                    eprintln!("could not drop test database {name}: {e}");
                }
            });
        })
        .join();
    }
}

// --- the relay as a child process ---

/// `renkei relay serve` running as a child process on a loopback port.
pub struct RelayProcess {
    child: Child,
    pub port: u16,
    pub url: String,
    pub log: PathBuf,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl RelayProcess {
    /// Start the relay on `data` and `database_url` and wait until it
    /// listens (bounded). Its log goes to `log_dir/relay-N.log`.
    pub fn start(profile: &Path, data: &Path, database_url: &str, log_dir: &Path) -> RelayProcess {
        let port = free_port();
        let log = log_dir.join(unique("relay") + ".log");
        let err = fs::File::create(&log).expect("log file");
        // Hundreds of uploads from two facilities at once: no quotas here;
        // small batches, so that a kill lands between acknowledged ones.
        let config = log_dir.join("relay-no-quotas.toml");
        fs::write(
            &config,
            "quota_uploads_per_day = 0\nquota_bytes_per_day = 0\nquota_concurrent_uploads = 0\n\
             batch_max_jobs = 4\n",
        )
        .expect("relay settings");
        let child = Command::new(env!("CARGO_BIN_EXE_renkei"))
            .args(["relay", "serve", "--config"])
            .arg(&config)
            .arg("--profile")
            .arg(profile)
            .arg("--data")
            .arg(data)
            .arg("--database-url")
            .arg(database_url)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start renkei relay serve");
        let mut r = RelayProcess {
            child,
            port,
            url: format!("https://localhost:{port}"),
            log,
        };
        r.wait_listening();
        r
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "the relay exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the relay did not listen within {STEP:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
