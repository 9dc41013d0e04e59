//! Store-and-forward and durable receive (issue #11, items 5, 6 and 17),
//! with the relay as a real process (`renkei relay serve`) on a real
//! PostgreSQL database, on loopback mutual TLS:
//!
//! - the relay is killed (SIGKILL) while a clinic sends: every envelope is
//!   either accepted or queued in the outbox; after a restart, one flush
//!   sends the rest, and the hospital receives every document exactly once;
//! - `renkei send` with no relay exits 4 and queues; `renkei outbox` lists
//!   it; `renkei outbox flush` sends it once the relay is back;
//! - the network drops just as the hospital posts its delivery receipt: the
//!   package is released and recorded with its signed receipt, the thread
//!   shows it, it is not opened twice, and the next run posts the receipt;
//! - a relay that serves more bytes than the sender signed, or stalls, gets
//!   nothing written.
//!
//! PostgreSQL: `RENKEI_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test makes its own
//! database.

mod faults_support;

use std::collections::BTreeSet;

use futures_util::StreamExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faults_support::*;
use renkei::client::ops::{memory_member, OpError, Session};
use renkei::client::outbox::OutboxState;
use renkei::document::DocKind;
use renkei::identity::FacilityId;
use renkei::package::PackageKind;

async fn session(profile: &Path, url: &str) -> Session {
    bounded("session open", Session::open(profile, Some(url)))
        .await
        .expect("session opens")
}

async fn publish(region: &Region, url: &str) {
    for p in [&region.clinic, &region.hospital] {
        bounded("publish", session(p, url).await.publish())
            .await
            .expect("publish");
    }
}

fn fid(s: &str) -> FacilityId {
    s.parse().expect("facility ID")
}

/// Send one referral with an attachment of `len` bytes from the clinic to
/// the hospital, through the outbox.
async fn send_referral(s: &Session, len: usize) -> Result<String, OpError> {
    let doc = doc_support::document_for(DocKind::Referral, CLINIC, HOSPITAL, &["scan.dcm"]);
    let out = s
        .send_members(
            &[fid(HOSPITAL)],
            PackageKind::Referral,
            None,
            None,
            doc,
            vec![memory_member(
                "attachments/scan.dcm",
                "application/dicom",
                vec![7u8; len],
            )],
            |_, _| {},
        )
        .await?;
    Ok(out.manifest.package_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_sent_while_the_relay_dies_arrive_exactly_once_after_a_flush() {
    const SENDS: usize = 24;
    let region = Region::new();
    let db = TestDb::new("outbox").await;
    let data = region.dir().join("relay-data");
    let logs = region.folder("logs");
    let mut relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    publish(&region, &relay.url).await;

    // The clinic sends 24 referrals, a few at a time; the relay is killed
    // once the first acceptances are in, while others are being uploaded.
    let clinic = Arc::new(session(&region.clinic, &relay.url).await);
    let accepted = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..SENDS {
        let (clinic, accepted) = (clinic.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            // Stagger the starts so some finish before the kill.
            tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
            let r = send_referral(&clinic, (256 * 1024) << (i % 4)).await;
            if r.is_ok() {
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            r
        }));
    }
    bounded("first acceptances", async {
        while accepted.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    relay.kill9();
    let mut queued = 0;
    for t in tasks {
        match bounded("send", t).await.expect("task") {
            Ok(_) => {}
            Err(OpError::Queued { .. }) => queued += 1,
            Err(other) => panic!("a send failed other than by queueing: {other}"),
        }
    }
    assert!(queued > 0, "the kill left some envelopes queued");
    let store = &clinic.store;
    let outbox = store.outbox(None).await.expect("outbox");
    assert_eq!(
        outbox.len(),
        SENDS,
        "every sealed envelope is in the outbox"
    );
    assert_eq!(
        outbox
            .iter()
            .filter(|e| e.state == OutboxState::Queued)
            .count(),
        queued
    );
    // What was sealed is in the clinic's threads already.
    let threads = store.threads(None).await.expect("threads");
    assert_eq!(threads.len(), SENDS);

    // The relay comes back (same database and folder, another port); one
    // flush sends everything queued.
    let relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    let clinic = session(&region.clinic, &relay.url).await;
    let flushed = bounded("flush", clinic.flush_outbox())
        .await
        .expect("flush");
    assert!(flushed.queued.is_empty(), "{:?}", flushed.queued);
    assert!(flushed.refused.is_empty(), "{:?}", flushed.refused);
    assert_eq!(flushed.accepted.len(), queued);
    assert!(clinic
        .store
        .outbox(Some(OutboxState::Queued))
        .await
        .unwrap()
        .is_empty());
    // A second flush has nothing to do.
    let again = bounded("flush", clinic.flush_outbox()).await.unwrap();
    assert!(again.accepted.is_empty() && again.queued.is_empty());

    // The hospital receives each document exactly once.
    let hospital = session(&region.hospital, &relay.url).await;
    let out = region.folder("received");
    let got = bounded("receive all", hospital.receive_all(&out))
        .await
        .expect("receive all");
    let mut packages = BTreeSet::new();
    for (env, r) in &got {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{env}: {e}"));
        assert!(r.receipt_confirmed);
        assert!(packages.insert(r.manifest.package_id.clone()), "twice");
    }
    let sent: BTreeSet<String> = clinic
        .store
        .outbox(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.manifest.package_id)
        .collect();
    assert_eq!(packages, sent, "every document arrived, each once");
    assert!(bounded("inbox", hospital.inbox()).await.unwrap().is_empty());
    assert!(bounded("receive all", hospital.receive_all(&out))
        .await
        .unwrap()
        .is_empty());
    // And the clinic sees every one delivered.
    let st = bounded("status", clinic.status(None))
        .await
        .expect("status");
    assert_eq!(st.len(), SENDS);
    assert!(st.iter().all(|s| s.recipients[0].state == "delivered"));
}

fn renkei() -> Command {
    Command::new(env!("CARGO_BIN_EXE_renkei"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renkei_send_without_a_relay_queues_with_exit_4_and_outbox_flush_sends_it() {
    let region = Region::new();
    let db = TestDb::new("outbox_cli").await;
    let data = region.dir().join("relay-data");
    let logs = region.folder("logs");
    let relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    publish(&region, &relay.url).await;
    // The clinic has looked the hospital up before (kept, verified).
    let s = session(&region.clinic, &relay.url).await;
    bounded("addressee", s.addressee(&fid(HOSPITAL)))
        .await
        .expect("directory");
    drop(s);
    let url = relay.url.clone();
    drop(relay); // killed: nothing listens on its port any more

    let doc = region.dir().join("referral.json");
    std::fs::write(
        &doc,
        doc_support::document_for(DocKind::Referral, CLINIC, HOSPITAL, &[]),
    )
    .unwrap();
    let o = renkei()
        .args(["send", "--profile"])
        .arg(&region.clinic)
        .args(["--relay", &url, "--to", HOSPITAL, "--document"])
        .arg(&doc)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("queued in the outbox"), "{err}");
    assert!(err.contains("working offline"), "{err}");

    let o = renkei()
        .args(["outbox", "--profile"])
        .arg(&region.clinic)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success());
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "queued");
    let envelope = list[0]["envelope_id"].as_str().unwrap().to_string();

    // Flushing while the relay is still down: still queued, exit 4.
    let o = renkei()
        .args(["outbox", "flush", "--profile"])
        .arg(&region.clinic)
        .args(["--relay", &url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));

    let relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    let o = renkei()
        .args(["outbox", "flush", "--profile"])
        .arg(&region.clinic)
        .args(["--relay", &relay.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains(&format!("accepted  {envelope}")), "{text}");
    let hospital = session(&region.hospital, &relay.url).await;
    let inbox = bounded("inbox", hospital.inbox()).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].envelope_id, envelope);
}

/// A TCP forwarder in front of the relay that lets `budget` more
/// connections through and then closes new ones at once (the network going
/// down); a negative budget lets everything through.
struct Gate {
    port: u16,
    budget: Arc<AtomicI64>,
}

impl Gate {
    async fn start(to: u16) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = Arc::new(AtomicI64::new(-1));
        let b = budget.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let left = b.load(Ordering::SeqCst);
                if left == 0 {
                    drop(inbound);
                    continue;
                }
                if left > 0 {
                    b.fetch_sub(1, Ordering::SeqCst);
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Gate { port, budget }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn allow(&self, n: i64) {
        self.budget.store(n, Ordering::SeqCst);
    }
}

/// A relay process on its own database (`name`), both facilities
/// published, and one referral sent from the clinic to the hospital.
async fn one_referral_sent(name: &str) -> (Region, TestDb, RelayProcess, Session, String) {
    let region = Region::new();
    let db = TestDb::new(name).await;
    let data = region.dir().join("relay-data");
    let logs = region.folder("logs");
    let relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    publish(&region, &relay.url).await;
    let clinic = session(&region.clinic, &relay.url).await;
    let package_id = bounded("send", send_referral(&clinic, 4096))
        .await
        .expect("send");
    (region, db, relay, clinic, package_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_receipt_that_cannot_be_posted_is_kept_and_posted_on_the_next_run() {
    let (region, _db, relay, clinic, package_id) = one_referral_sent("durable").await;
    let envelope = clinic.store.outbox(None).await.unwrap()[0]
        .envelope_id
        .clone();

    let gate = Gate::start(relay.port).await;
    let hospital = session(&region.hospital, &gate.url()).await;
    // Keep the current checkpoint, so that receiving needs exactly two
    // connections (the envelope's receipts, the download) before posting.
    bounded("receipts", hospital.envelope_receipts(&envelope))
        .await
        .expect("receipts");
    gate.allow(2);
    let out = region.folder("received");
    let r = bounded("receive", hospital.receive(&envelope, &out))
        .await
        .expect("the package is received although the receipt cannot be posted");
    assert!(!r.receipt_confirmed);
    assert_eq!(r.manifest.package_id, package_id);
    assert!(r.folder.join("document.json").is_file());
    assert!(!out.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".renkei-open-")));

    // Recorded, with the signed receipt still to post; the thread has it.
    let a = hospital.store.arrival(&envelope).await.unwrap().unwrap();
    assert_eq!(a.row.outcome, "verified");
    assert!(a.receipt_confirmed_at.is_none());
    assert!(a.receipt_error.is_some());
    let threads = hospital.store.threads(None).await.unwrap();
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].steps[0].package.package_id, package_id);
    // The relay still lists it as pending; it is not opened a second time.
    gate.allow(-1);
    assert_eq!(bounded("inbox", hospital.inbox()).await.unwrap().len(), 1);
    let again = bounded("receive", hospital.receive(&envelope, &out)).await;
    assert!(
        matches!(&again, Err(OpError::Usage(m)) if m.contains("already received")),
        "{:?}",
        again.err()
    );

    // The next run posts it; the relay and the clinic see it delivered.
    let got = bounded("receive all", hospital.receive_all(&out))
        .await
        .expect("receive all");
    assert!(got.is_empty(), "nothing new to open");
    let a = hospital.store.arrival(&envelope).await.unwrap().unwrap();
    assert!(a.receipt_confirmed_at.is_some());
    assert!(bounded("inbox", hospital.inbox()).await.unwrap().is_empty());
    let st = bounded("status", clinic.status(None)).await.unwrap();
    assert_eq!(st[0].recipients[0].state, "delivered");
    // Posting again changes nothing.
    let p = bounded("post", hospital.post_pending_receipts())
        .await
        .unwrap();
    assert!(p.confirmed.is_empty() && p.pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_interrupted_by_a_crash_is_finished_beside_a_folder_that_took_its_name() {
    let (region, _db, relay, _clinic, package_id) = one_referral_sent("release").await;
    let hospital = session(&region.hospital, &relay.url).await;
    let out = region.folder("received");
    let got = bounded("receive all", hospital.receive_all(&out))
        .await
        .expect("receive all");
    let (envelope, r) = &got[0];
    let dest = r.as_ref().expect("received").folder.clone();
    assert_eq!(dest, out.join(&package_id));

    // The state a crash between recording the arrival and the final rename
    // leaves: the verified package still in its staging folder, the record
    // pointing at both. Meanwhile someone made a folder of that name.
    let staging = out.join(".renkei-open-crashed");
    std::fs::rename(&dest, &staging).unwrap();
    let store = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        region.hospital.join("store.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE received SET staging = ? WHERE envelope_id = ?")
        .bind(staging.display().to_string())
        .bind(envelope)
        .execute(&store)
        .await
        .unwrap();
    store.close().await;
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("memo.txt"), "someone else's").unwrap();

    // The next run releases it beside that folder, records where, and
    // leaves no staging folder behind; the other folder is untouched.
    assert_eq!(hospital.recover_arrivals().await.unwrap(), 1);
    let beside = out.join(format!("{package_id}-2"));
    assert!(beside.join("document.json").is_file());
    assert!(beside.join("attachments/scan.dcm").is_file());
    assert!(!staging.exists(), "the staging folder is left behind");
    assert_eq!(
        std::fs::read_to_string(dest.join("memo.txt")).unwrap(),
        "someone else's"
    );
    let a = hospital.store.arrival(envelope).await.unwrap().unwrap();
    assert_eq!(a.row.location, beside.display().to_string());
    // Finished once: nothing left to recover.
    assert_eq!(hospital.recover_arrivals().await.unwrap(), 0);
}

/// How the lying front end treats downloads.
#[derive(Clone, Copy)]
enum Lie {
    /// One byte more than the relay holds.
    MoreBytes,
    /// The first kilobyte, then nothing.
    Stall,
}

/// A TLS front end with the relay's own certificate and key (a relay gone
/// bad) that passes requests to the real relay as the hospital, and lies
/// about downloads. Returns its URL.
async fn lying_relay(region: &Region, relay_url: &str, lie: Lie) -> String {
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::{Bytes, Frame};
    use renkei::profile::Profile;

    let p = Profile::open(&region.relay).unwrap();
    let cert = rustls::pki_types::CertificateDer::from(p.certificate().unwrap().der.clone());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
        p.signing_key().unwrap().to_pkcs8_der().to_vec().into(),
    );
    let cfg = rustls::ServerConfig::builder_with_provider(renkei::pki::tls_provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = Arc::new(client(&region.hospital, relay_url));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let upstream = upstream.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes().to_vec();
                            let headers: Vec<(&str, String)> = parts
                                .headers
                                .iter()
                                .filter(|(k, _)| k.as_str() != "host")
                                .filter_map(|(k, v)| {
                                    Some((k.as_str(), v.to_str().ok()?.to_string()))
                                })
                                .collect();
                            let path = parts.uri.path().to_string();
                            let (status, bytes) = match upstream
                                .send(
                                    parts.method.clone(),
                                    &path,
                                    &headers,
                                    renkei::client::http::full(body),
                                )
                                .await
                            {
                                Ok(r) => {
                                    let status = r.status;
                                    (status, r.body.collect().await?.to_bytes())
                                }
                                Err(e) => {
                                    (hyper::StatusCode::BAD_GATEWAY, Bytes::from(e.to_string()))
                                }
                            };
                            let is_download = parts.method == hyper::Method::GET
                                && path.starts_with("/v1/envelopes/")
                                && !path.ends_with("/receipts");
                            type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;
                            let body: Body = if !is_download {
                                Full::new(bytes).map_err(|n| match n {}).boxed()
                            } else {
                                match lie {
                                    Lie::MoreBytes => {
                                        let mut v = bytes.to_vec();
                                        v.push(b'x');
                                        Full::new(Bytes::from(v)).map_err(|n| match n {}).boxed()
                                    }
                                    Lie::Stall => {
                                        let head = bytes.slice(..1024.min(bytes.len()));
                                        let frames = futures_util::stream::once(async move {
                                            Ok::<_, hyper::Error>(Frame::data(head))
                                        })
                                        .chain(futures_util::stream::pending());
                                        BodyExt::boxed(StreamBody::new(frames))
                                    }
                                }
                            };
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(body)
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://localhost:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_sends_more_than_signed_or_stalls_gets_nothing_written() {
    let region = Region::new();
    let db = TestDb::new("lying").await;
    let data = region.dir().join("relay-data");
    let logs = region.folder("logs");
    let relay = RelayProcess::start(&region.relay, &data, &db.url, &logs);
    publish(&region, &relay.url).await;
    let clinic = session(&region.clinic, &relay.url).await;
    bounded("send", send_referral(&clinic, 64 * 1024))
        .await
        .expect("send");
    let envelope = clinic.store.outbox(None).await.unwrap()[0]
        .envelope_id
        .clone();
    // The hospital gives up on a relay that makes no progress for 2 s.
    let toml = region.hospital.join("profile.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[client]\nstall_timeout_secs = 2\n");
    std::fs::write(&toml, text).unwrap();

    let out = region.folder("received");
    let incoming = region.hospital.join("incoming");
    for (lie, want) in [
        (Lie::MoreBytes, "more than the"),
        (Lie::Stall, "made no progress for 2 s"),
    ] {
        let url = lying_relay(&region, &relay.url, lie).await;
        let hospital = session(&region.hospital, &url).await;
        let err = bounded("receive", hospital.receive(&envelope, &out))
            .await
            .expect_err("a lying relay's bytes are not used");
        assert!(err.to_string().contains(want), "{err}");
        assert!(hospital.store.arrival(&envelope).await.unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing released"
        );
        let left: Vec<_> = std::fs::read_dir(&incoming)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "no partial download is kept: {left:?}");
    }
    // The honest relay delivers it.
    let hospital = session(&region.hospital, &relay.url).await;
    let got = bounded("receive", hospital.receive(&envelope, &out))
        .await
        .expect("receive");
    assert!(got.receipt_confirmed);
}
