//! The relay's database in tests: SQLite in the data folder (the default,
//! no URL), or a fresh PostgreSQL database per test, created on the server
//! named by `RENKEI_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and dropped when the test
//! ends. An unreachable PostgreSQL fails the test: CI has one.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Executor, Row};

/// Environment variable naming the PostgreSQL server for the tests.
pub const POSTGRES_ENV: &str = "RENKEI_TEST_POSTGRES";
/// The server used when the variable is not set.
pub const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Prefix of every database the tests create (`renkei_test_PID_N`).
const PREFIX: &str = "renkei_test_";

static DATABASES: AtomicUsize = AtomicUsize::new(0);
static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Which database the relay runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite at DATA/relay.db (no `--database-url`).
    Sqlite,
    /// A PostgreSQL database of its own.
    Postgres,
}

/// One test's relay database; a PostgreSQL one is dropped on drop.
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    /// The relay's data folder (SQLite lives there).
    data: PathBuf,
    /// The PostgreSQL database name and URL.
    postgres: Option<(String, String)>,
}

/// The PostgreSQL server URL for the tests.
pub fn postgres_server() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| POSTGRES_DEFAULT.to_string())
}

/// `server` with its database (path) replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (head, query) = match server.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (server, None),
    };
    let authority = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[authority..].find('/') {
        Some(i) => &head[..authority + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A connection to the test server's maintenance database, or a failure
/// that says what to do.
async fn admin() -> AnyConnection {
    sqlx::any::install_default_drivers();
    let server = postgres_server();
    let attempt = tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(&server));
    match attempt.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "PostgreSQL at {server} is unreachable ({e}): the relay's PostgreSQL tests need it \
             (start it with `pg_ctlcluster --skip-systemctl-redirect VERSION main start`, \
             or point {POSTGRES_ENV} at another server)"
        ),
        Err(_) => panic!("PostgreSQL at {server} did not answer within 10 s ({POSTGRES_ENV})"),
    }
}

/// Drop test databases left by runs that were killed: their process is
/// gone, and nothing is connected (a database still in use, say by a run
/// in another PID namespace, is left alone: no `FORCE`).
async fn sweep_stale(conn: &mut AnyConnection) {
    let rows = sqlx::query("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{PREFIX}%"))
        .fetch_all(&mut *conn)
        .await
        .expect("list test databases");
    for row in rows {
        let name: String = row.get(0);
        let pid = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\"").as_str())
                .await;
        }
    }
}

/// Create a new, empty database (from `template` when given); returns its
/// name and URL.
async fn create_database(template: Option<&str>) -> (String, String) {
    let mut conn = admin().await;
    SWEPT.get_or_init(|| sweep_stale(&mut conn)).await;
    let name = format!(
        "{PREFIX}{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let sql = match template {
        Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    // A template must have no other sessions; a closed pool may take a
    // moment to let go of its connections.
    let mut tries = 0;
    loop {
        match conn.execute(sql.as_str()).await {
            Ok(_) => break,
            Err(_) if tries < 50 && template.is_some() => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create test database {name}: {e}"),
        }
    }
    let _ = conn.close().await;
    let url = with_database(&postgres_server(), &name);
    (name, url)
}

impl TestDb {
    /// The database of a relay whose data folder is `data`: nothing to do
    /// for SQLite (the relay creates DATA/relay.db), a new database for
    /// PostgreSQL.
    pub async fn new(backend: Backend, data: &Path) -> TestDb {
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(create_database(None).await),
        };
        TestDb {
            backend,
            data: data.to_path_buf(),
            postgres,
        }
    }

    /// The `--database-url` to give the relay (`None` for SQLite: the
    /// default DATA/relay.db).
    pub fn url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(_, u)| u.as_str())
    }

    /// A URL any sqlx `Any` connection can open.
    pub fn any_url(&self) -> String {
        match &self.postgres {
            Some((_, u)) => u.clone(),
            None => format!("sqlite://{}", self.data.join("relay.db").display()),
        }
    }

    /// A direct connection to the relay's database (the relay may be
    /// running). SQL uses `$1`-style placeholders on both backends.
    pub async fn connect(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.any_url())
            .await
            .expect("connect to the relay database");
        if self.backend == Backend::Sqlite {
            conn.execute("PRAGMA busy_timeout=10000")
                .await
                .expect("busy timeout");
        }
        conn
    }

    /// A copy of this database for a relay whose data folder is `data2`
    /// (the data folder itself is copied by the caller). The relay using
    /// this database must be stopped and its pool closed.
    pub async fn copy(&self, data2: &Path) -> TestDb {
        let postgres = match &self.postgres {
            None => None,
            Some((name, _)) => Some(create_database(Some(name)).await),
        };
        TestDb {
            backend: self.backend,
            data: data2.to_path_buf(),
            postgres,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((name, _)) = self.postgres.take() else {
            return;
        };
        // Best effort, on a thread of its own: this may run inside the
        // test's runtime, or while a failed test unwinds.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                sqlx::any::install_default_drivers();
                let connect = AnyConnection::connect(&postgres_server());
                if let Ok(Ok(mut conn)) =
                    tokio::time::timeout(Duration::from_secs(10), connect).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), conn.execute(sql.as_str()))
                            .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
