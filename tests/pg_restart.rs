//! PostgreSQL restarted under load (issue #6): while PostgreSQL is down the
//! relay answers 503 with problem details (not 500, not a hang), it
//! recovers by itself once PostgreSQL is back, and no acceptance it gave
//! is lost.
//!
//! This stops the PostgreSQL server every other test uses, so it is alone
//! in its own test binary (test binaries run one after another). It runs
//! `pg_ctlcluster --skip-systemctl-redirect VERSION main stop|start`
//! (VERSION from /etc/postgresql), or the shell commands in
//! `RENKEI_TEST_PG_STOP` and `RENKEI_TEST_PG_START` when set; PostgreSQL is
//! started again even when the test fails.

mod faults_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults_support::*;
use hyper::Method;
use renkei::api::SubmitResponse;
use renkei::audit::sync::Auditor;

/// Longer than the relay's pool acquire timeout (10 s), so that requests
/// that wait for a connection give up while PostgreSQL is still down.
/// Each worker waits 20 ms between requests.
const OUTAGE: Duration = Duration::from_secs(12);
/// Upload workers.
const WORKERS: usize = 8;

/// The stop and start commands, or why there are none.
fn pg_commands() -> Result<(String, String), String> {
    if let (Ok(stop), Ok(start)) = (
        std::env::var("RENKEI_TEST_PG_STOP"),
        std::env::var("RENKEI_TEST_PG_START"),
    ) {
        return Ok((stop, start));
    }
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map_err(|e| {
            format!(
                "cannot restart PostgreSQL: /etc/postgresql: {e}; set RENKEI_TEST_PG_STOP and \
                 RENKEI_TEST_PG_START to shell commands that stop and start the server of \
                 RENKEI_TEST_POSTGRES"
            )
        })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let [version] = versions.as_slice() else {
        return Err(format!(
            "cannot tell which PostgreSQL cluster to restart (/etc/postgresql has {versions:?}); \
             set RENKEI_TEST_PG_STOP and RENKEI_TEST_PG_START"
        ));
    };
    let ctl = |what: &str| format!("pg_ctlcluster --skip-systemctl-redirect {version} main {what}");
    Ok((ctl("stop"), ctl("start")))
}

fn sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Wait until PostgreSQL accepts connections again.
fn wait_postgres(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    while Instant::now() < deadline {
        let ok = rt.block_on(async {
            use sqlx::Connection;
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(2),
                    sqlx::PgConnection::connect(&postgres_base())
                )
                .await,
                Ok(Ok(_))
            )
        });
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Run blocking work off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Starts PostgreSQL when dropped (also when the test panics).
struct RestartGuard {
    start: String,
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let start = self.start.clone();
        // Drop may run inside the runtime: block on a thread of its own.
        let _ = std::thread::spawn(move || {
            if wait_postgres(Duration::from_secs(1)) {
                return;
            }
            if let Err(e) = sh(&start) {
                eprintln!("starting PostgreSQL: {e}");
            }
            if !wait_postgres(Duration::from_secs(60)) {
                eprintln!("PostgreSQL did not come back within 60 s: run `{start}`");
            }
        })
        .join();
    }
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Acceptances, by envelope (the relay's answer, when obtained).
    accepted: BTreeMap<String, SubmitResponse>,
    /// Answers 503 with problem details (uploads and health checks).
    unavailable: usize,
    /// Packages refused with 503, to retry.
    to_retry: Vec<usize>,
    /// Anything else: other statuses, transport failures, slow answers.
    bad: Vec<String>,
    /// Acceptances obtained after PostgreSQL was started again.
    after_restart: usize,
    /// Slowest answer.
    slowest: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    renkei_no_pg_restart,
    ignore = "needs `pg_ctlcluster` on PATH, or RENKEI_TEST_PG_STOP and RENKEI_TEST_PG_START, to stop and start PostgreSQL (build.rs found neither)"
)]
async fn postgres_restart_under_load_fails_cleanly_and_recovers() {
    let (stop, start) = pg_commands().unwrap_or_else(|why| panic!("{why}"));
    let region = Region::new();
    let db = TestDb::new("pgrestart").await;
    let data = region.dir().join("relay-data");
    let logs = region.folder("logs");
    let mut relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    for p in [&region.clinic, &region.hospital] {
        let s = bounded(
            "session",
            renkei::client::ops::Session::open(p, Some(&relay.url)),
        )
        .await
        .expect("session");
        bounded("publish", s.publish()).await.expect("publish");
    }
    let dir = region.folder("packages");
    let (clinic_profile, to) = (region.clinic.clone(), cert_of(&region.hospital));
    let pkgs: Arc<Vec<Package>> = Arc::new(
        tokio::task::spawn_blocking(move || {
            (0..300)
                .map(|_| seal(&clinic_profile, std::slice::from_ref(&to), &dir, 2 * 1024))
                .collect()
        })
        .await
        .expect("seal"),
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..=WORKERS {
        let (seen, done, restarted, next, pkgs) = (
            seen.clone(),
            done.clone(),
            restarted.clone(),
            next.clone(),
            pkgs.clone(),
        );
        let (clinic, profile) = (client(&region.clinic, &relay.url), region.clinic.clone());
        workers.spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                let was_restarted = restarted.load(Ordering::SeqCst);
                // Worker 0 checks health; the others upload.
                let (i, answer) = if w == 0 {
                    let a = request(&clinic, Method::GET, "/v1/health", &[], Vec::new()).await;
                    (None, a)
                } else {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= pkgs.len() {
                        break;
                    }
                    (Some(i), upload_raw(&clinic, &profile, &pkgs[i]).await)
                };
                let took = t0.elapsed();
                {
                    let mut s = seen.lock().expect("lock");
                    s.slowest = s.slowest.max(took);
                    match answer {
                        Ok(a) if a.status == 201 && i.is_some() => {
                            let r: SubmitResponse =
                                serde_json::from_slice(&a.body).expect("answer");
                            let id = pkgs[i.expect("upload")].id.clone();
                            s.accepted.insert(id, r);
                            if was_restarted {
                                s.after_restart += 1;
                            }
                        }
                        Ok(a) if a.status == 200 && i.is_none() => {}
                        Ok(a) if a.status == 503 => {
                            if !a.content_type.starts_with("application/problem+json") {
                                s.bad
                                    .push(format!("503 without problem details: {}", a.text()));
                            }
                            s.unavailable += 1;
                            if let Some(i) = i {
                                s.to_retry.push(i);
                            }
                        }
                        Ok(a) => s.bad.push(format!("{}: {}", a.status, a.text())),
                        Err(e) => s.bad.push(format!("no answer: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    // Load before, during and after the outage.
    let deadline = Instant::now() + STEP;
    while seen.lock().expect("lock").accepted.len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = seen.lock().expect("lock").accepted.len();
    assert!(
        before > 0,
        "no upload went through before the outage:\n{}",
        relay.log_text()
    );
    let guard = RestartGuard {
        start: start.clone(),
    };
    blocking(move || sh(&stop))
        .await
        .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e}"));
    let stopped_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let during = {
        let s = seen.lock().expect("lock");
        (s.accepted.len(), s.unavailable)
    };
    // From here on, an acceptance shows recovery: requests started now
    // reach a database that is only starting (the relay recovers within
    // a second or two, so waiting for PostgreSQL first could let the
    // workers use up every package before the flag is set).
    restarted.store(true, Ordering::SeqCst);
    let s = start.clone();
    blocking(move || sh(&s))
        .await
        .unwrap_or_else(|e| panic!("starting PostgreSQL: {e}"));
    assert!(
        blocking(|| wait_postgres(Duration::from_secs(30))).await,
        "PostgreSQL is back"
    );
    let outage = stopped_at.elapsed();
    drop(guard);
    // Recovery: uploads go through again on the same relay process.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().expect("lock").after_restart < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::SeqCst);
    bounded("load ends", async {
        while workers.join_next().await.is_some() {}
    })
    .await;

    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("workers ended")
        .into_inner()
        .expect("lock");
    eprintln!(
        "outage {outage:?}: {before} accepted before, {} while stopping, {} after restart; \
         {} answers 503 (problem details), slowest answer {:?}",
        during.0 - before,
        seen.after_restart,
        seen.unavailable,
        seen.slowest
    );
    let mut causes: Vec<String> = relay
        .log_text()
        .lines()
        .filter_map(|l| l.find("status=").map(|i| l[i..].to_string()))
        .collect();
    causes.sort();
    causes.dedup();
    eprintln!(
        "what the relay logged for failed requests:\n  {}",
        causes.join("\n  ")
    );
    assert!(relay.running(), "the relay process kept running");
    assert!(
        seen.bad.is_empty(),
        "only 2xx and 503 problem details are expected: {:?}\n{}",
        seen.bad,
        relay.log_text()
    );
    assert!(during.1 > 0, "the outage was seen as 503 answers");
    assert!(
        seen.after_restart >= 5,
        "the relay recovered without a restart:\n{}",
        relay.log_text()
    );
    // The relay waits for a database connection for at most its pool's
    // acquire timeout (10 s), then answers 503; a connection attempt already
    // under way when PostgreSQL stops can add the restart's own duration on
    // a loaded machine. A hang is a request that never ends.
    assert!(
        seen.slowest < Duration::from_secs(30),
        "no request hangs ({:?})",
        seen.slowest
    );

    // Every acceptance given is still there, intact; what was refused with
    // 503 goes through on retry (or was committed just as the connection
    // broke, and the retry returns its acceptance).
    let hospital = client(&region.hospital, &relay.url);
    let clinic = client(&region.clinic, &relay.url);
    let mut stored = db.envelope_ids().await;
    stored.sort();
    for (id, r) in &seen.accepted {
        assert!(stored.binary_search(id).is_ok(), "acceptance of {id} lost");
        let receipts = db.receipts_of(id).await;
        assert!(
            receipts.iter().any(|(p, _)| p == "acceptance"),
            "{id}: {receipts:?}"
        );
        assert!(r.created);
        let a = request(
            &hospital,
            Method::GET,
            &format!("/v1/envelopes/{id}"),
            &[],
            Vec::new(),
        )
        .await
        .expect("download");
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(sha256_hex(&a.body), *id);
    }
    let mut late = 0;
    for &i in &seen.to_retry {
        let a = upload_raw(&clinic, &region.clinic, &pkgs[i])
            .await
            .expect("retry answer");
        assert!(a.status == 201 || a.status == 200, "retry: {}", a.text());
        if a.status == 200 {
            late += 1;
        }
    }
    eprintln!(
        "{} refused uploads retried, {late} of them had been committed",
        seen.to_retry.len()
    );
    let inbox = inbox_ids(&hospital).await;
    for id in seen.accepted.keys() {
        assert!(inbox.contains(id), "{id} is in the inbox");
    }
    assert_eq!(inbox.len(), db.envelope_ids().await.len());
    let a = bounded("auditor", Auditor::open(&region.auditor, Some(&relay.url)))
        .await
        .expect("auditor");
    bounded("audit sync", a.sync(false))
        .await
        .expect("the auditor finds the log consistent");
    assert!(a.problems().await.expect("problems").is_empty());
}
