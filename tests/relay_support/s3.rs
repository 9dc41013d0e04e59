//! A real S3-protocol server for the object-storage tests: `s3s-fs` (the
//! s3s project's file-backed S3 server, from crates.io) on a loopback
//! port, storing into a temporary folder. Found as `$RENKEI_S3S_FS`, on
//! `PATH`, or in `target/tools/bin`; when it is nowhere, the first test
//! that needs it installs it there with `cargo install` (a few minutes,
//! once). `.ci/run` installs it beforehand (`scripts/install-test-tools`).
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use renkei::relay::object_blobs::{BlobStoreConfig, BlobStoreKind};

/// The version the tests are run against.
pub const S3S_FS_VERSION: &str = "0.14.1";
const ACCESS_KEY: &str = "renkei-test";
const SECRET_KEY: &str = "renkei-test-secret";
/// The bucket the tests use.
pub const BUCKET: &str = "renkei";

static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The `s3s-fs` binary, installed into `target/tools` if it is nowhere.
pub fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("RENKEI_S3S_FS") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("s3s-fs");
            if p.is_file() {
                return p;
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools");
    let bin = root.join("bin/s3s-fs");
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.is_file() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                &format!("s3s-fs@{S3S_FS_VERSION}"),
                "--locked",
                "--features",
                "binary",
                "--root",
            ])
            .arg(&root)
            .status()
            .expect("run cargo install s3s-fs");
        assert!(
            status.success() && bin.is_file(),
            "the object-storage tests need s3s-fs {S3S_FS_VERSION}: `cargo install s3s-fs@{S3S_FS_VERSION} --locked --features binary --root target/tools` failed"
        );
    }
    bin
}

/// One running `s3s-fs` with a bucket.
pub struct S3Server {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it stores objects.
    pub root: PathBuf,
    bin: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl S3Server {
    /// Start a server storing under `root` (created), with the bucket.
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).expect("bucket folder");
        let mut s = S3Server {
            child: None,
            port: free_port(),
            root: root.to_path_buf(),
            bin: s3s_fs(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "s3s-fs did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill it (SIGKILL) and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Relay settings for this server.
    pub fn config(&self) -> BlobStoreConfig {
        BlobStoreConfig {
            kind: BlobStoreKind::S3,
            bucket: BUCKET.into(),
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            region: Some("us-east-1".into()),
            prefix: "relay".into(),
            allow_http: true,
            part_size_mib: 5,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            ..Default::default()
        }
    }

    /// Every stored object's file under the bucket (s3s-fs keeps one file
    /// per object, and uploads in progress elsewhere).
    pub fn objects(&self) -> Vec<PathBuf> {
        super::files_under(&self.root.join(BUCKET))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
