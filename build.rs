// Re-embed the SQL migrations (sqlx::migrate!) whenever they change, and
// tell the tests which outside tools this machine lacks, so that a test
// that cannot run here is reported as ignored, with the reason, and never
// passes silently:
//
//   renkei_no_tmpfs         `mount -t tmpfs` does not work (not root, no
//                           CAP_SYS_ADMIN): the disk-full fault test
//   renkei_no_pg_restart    neither `pg_ctlcluster` nor RENKEI_TEST_PG_STOP
//                           and RENKEI_TEST_PG_START: the PostgreSQL restart test
//   renkei_no_chromium      no `chromedriver` on PATH or no /usr/bin/chromium:
//                           the desk's browser tests
//
// The probes rerun when PATH or those variables change; after installing
// a tool by other means, `touch build.rs`. scripts/test installs the tools
// before it builds.
use std::path::Path;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=build.rs");
    for v in ["PATH", "RENKEI_TEST_PG_STOP", "RENKEI_TEST_PG_START"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    for flag in [
        "renkei_no_tmpfs",
        "renkei_no_pg_restart",
        "renkei_no_chromium",
    ] {
        println!("cargo::rustc-check-cfg=cfg({flag})");
    }
    if !tmpfs_mounts() {
        println!("cargo:rustc-cfg=renkei_no_tmpfs");
    }
    let pg_env = std::env::var_os("RENKEI_TEST_PG_STOP").is_some()
        && std::env::var_os("RENKEI_TEST_PG_START").is_some();
    if !pg_env && !on_path("pg_ctlcluster") {
        println!("cargo:rustc-cfg=renkei_no_pg_restart");
    }
    if !on_path("chromedriver") || !Path::new("/usr/bin/chromium").exists() {
        println!("cargo:rustc-cfg=renkei_no_chromium");
    }
}

/// Whether `name` is an executable file in a folder of PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(name);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(&p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            }
            #[cfg(not(unix))]
            p.is_file()
        })
    })
}

/// Mount a small tmpfs in OUT_DIR and unmount it: whether the fault test
/// that fills a tmpfs can run here.
fn tmpfs_mounts() -> bool {
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    let dir = Path::new(&out).join("tmpfs-probe");
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mounted = quiet(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&dir),
    );
    if mounted && !quiet(Command::new("umount").arg(&dir)) {
        let _ = quiet(Command::new("umount").arg("-l").arg(&dir));
    }
    mounted
}
