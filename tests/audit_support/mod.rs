//! Helpers for the auditor tests (tests/audit.rs): a fresh region per test
//! (CA, relay, facilities, auditors) in a temporary folder, relays running
//! in this process on loopback ports on SQLite in a data folder or on a
//! fresh PostgreSQL database, and direct edits of the relay's database (a
//! relay rewriting its history). Adapted from tests/relay_support (copied,
//! not shared, so that the two suites evolve independently; the database
//! helper is shared).
#![allow(dead_code)]

#[path = "../relay_support/backend.rs"]
pub mod backend;
#[path = "../relay_support/region.rs"]
mod region;
pub use region::{cert_of, Region};

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use renkei::client::ops::{SendRequest, Session};
use renkei::identity::Kind;
use renkei::package::PackageKind;
use renkei::relay::{AppState, RelayConfig, RelayError, RelayState};
use sqlx::Connection;

pub use backend::{Backend, TestDb};

pub const CLINIC: &str = "1311234569";
pub const HOSPITAL: &str = "1317654323";
pub const RECOVERY: &str = "1315555555";
pub const OTHER: &str = "1312222225";
pub const RELAY_ID: &str = "relay-1";
pub const AUDITOR_ID: &str = "audit-1";

#[path = "../doc_support/mod.rs"]
mod doc_support;
pub use doc_support::*;

/// Bound on any single network step of a test.
pub const STEP: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Run a future with the step bound.
pub async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step in time")
}

/// A relay running in this process on a loopback port.
pub struct RunningRelay {
    pub url: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), RelayError>>>,
}

impl RunningRelay {
    /// Open the relay's state on `data` (and the database at
    /// `database_url`, or DATA/relay.db) and serve on a fresh port.
    pub async fn start(profile: &Path, data: &Path, database_url: Option<&str>) -> RunningRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = RelayState::open(profile, data, database_url, RelayConfig::default())
            .await
            .expect("relay state");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(renkei::relay::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        RunningRelay {
            url: format!("https://localhost:{port}"),
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown; waits for the server to end, then closes the
    /// relay's database connections.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            bounded(task)
                .await
                .expect("relay task")
                .expect("relay serve");
        }
        self.state.store.pool().close().await;
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
    pub clinic: PathBuf,
    pub hospital: PathBuf,
    pub recovery: PathBuf,
    pub auditor: PathBuf,
    pub relay: RunningRelay,
    /// The relay's database (last: dropped after the relay).
    pub db: TestDb,
}

impl World {
    pub async fn start(backend: Backend) -> World {
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
        let relay = RunningRelay::start(&relay_profile, &data, db.url()).await;
        assert_eq!(
            data.join("relay.db").exists(),
            backend == Backend::Sqlite,
            "the relay runs on {backend:?}"
        );
        World {
            region,
            relay_profile,
            data,
            clinic,
            hospital,
            recovery,
            auditor,
            relay,
            db,
        }
    }

    /// A further auditor profile (its own audit.db).
    pub fn new_auditor(&self) -> PathBuf {
        let id = format!("audit-{}", 100 + COUNTER.fetch_add(1, Ordering::Relaxed));
        self.region.profile(&id, Kind::Auditor, "地域監査人")
    }

    pub async fn session(&self, profile: &Path) -> Session {
        session_at(profile, &self.relay.url).await
    }

    /// A document file in the world's folder.
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let dir = self.region.dir().join(unique("files"));
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(name);
        fs::write(&p, content).expect("write file");
        p
    }

    pub fn out_dir(&self) -> PathBuf {
        self.region.dir().join(unique("out"))
    }

    /// `from` sends one referral to `to`; `to` receives it (delivery
    /// receipt). Returns the envelope ID.
    pub async fn round_trip(&self, from: &Session, to: &Session, to_id: &str) -> String {
        let eid = self.send(from, to_id).await;
        bounded(to.receive(&eid, &self.out_dir()))
            .await
            .expect("receive");
        eid
    }

    /// `from` sends one referral to `to_id` (not yet received).
    pub async fn send(&self, from: &Session, to_id: &str) -> String {
        let me = from.profile.facility_id().expect("facility ID");
        let doc = document_for(renkei::document::DocKind::Referral, me.as_str(), to_id, &[]);
        let doc = self.file("referral.json", &doc);
        bounded(from.send(request(&[to_id], doc), |_, _| {}))
            .await
            .expect("send")
            .envelope_id
    }
}

pub async fn session_at(profile: &Path, url: &str) -> Session {
    bounded(Session::open(profile, Some(url)))
        .await
        .expect("session open")
}

pub fn request(to: &[&str], document: PathBuf) -> SendRequest {
    SendRequest {
        to: to.iter().map(|t| t.parse().expect("facility id")).collect(),
        document,
        attachments: Vec::new(),
        kind: PackageKind::Referral,
        in_reply_to: None,
        thread: None,
    }
}

/// Run SQL statements (`$1` placeholders) on a relay database, in one
/// transaction (the relay may be running).
pub async fn relay_sql(db: &TestDb, statements: &[(&str, Vec<SqlArg>)]) {
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.expect("begin");
    for (sql, args) in statements {
        let mut q = sqlx::query(sql);
        for a in args {
            q = match a {
                SqlArg::I(i) => q.bind(*i),
                SqlArg::S(s) => q.bind(s.clone()),
            };
        }
        q.execute(&mut *tx).await.expect("sql");
    }
    tx.commit().await.expect("commit");
    conn.close().await.expect("close");
}

/// A bind argument.
#[derive(Clone, Debug)]
pub enum SqlArg {
    I(i64),
    S(String),
}

/// Every (idx, entry) of a relay database's log.
pub async fn log_entries(db: &TestDb) -> Vec<(u64, String)> {
    use sqlx::Row;
    let mut conn = db.connect().await;
    let rows = sqlx::query("SELECT idx, entry FROM log_entries ORDER BY idx")
        .fetch_all(&mut conn)
        .await
        .expect("select");
    conn.close().await.expect("close");
    rows.iter()
        .map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1)))
        .collect()
}

/// Truncate a relay database's log to `size` entries: entries, the tree
/// nodes covering later leaves, later checkpoints and the receipt rows
/// pointing past the end.
pub async fn truncate_log(db: &TestDb, size: u64) {
    let k = size as i64;
    relay_sql(
        db,
        &[
            ("DELETE FROM log_entries WHERE idx >= $1", vec![SqlArg::I(k)]),
            (
                "DELETE FROM log_nodes WHERE (idx + 1) * (CAST(1 AS BIGINT) << CAST(level AS INTEGER)) > $1",
                vec![SqlArg::I(k)],
            ),
            (
                "DELETE FROM log_checkpoints WHERE size > $1",
                vec![SqlArg::I(k)],
            ),
            (
                "DELETE FROM receipts WHERE log_index >= $1",
                vec![SqlArg::I(k)],
            ),
        ],
    )
    .await;
}

/// Copy a folder recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            match fs::copy(&p, &dest) {
                Ok(_) => {}
                // SQLite removes its -wal/-shm files when the last connection closes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copy {}: {e}", p.display()),
            }
        }
    }
}

/// Run the renkei binary with `args`; returns (exit code, stdout, stderr).
pub async fn cli(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_renkei"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run renkei")
    })
    .await
    .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `renkei audit sync --profile P --relay URL [--full]`.
pub async fn cli_sync(profile: &Path, url: &str, full: bool) -> (i32, String, String) {
    let mut args = vec![
        "audit".to_string(),
        "sync".into(),
        "--profile".into(),
        profile.display().to_string(),
        "--relay".into(),
        url.to_string(),
    ];
    if full {
        args.push("--full".into());
    }
    cli(args).await
}
