//! Referral threads (`renkei referrals`) across facilities, through an
//! in-process relay over real loopback mutual TLS (SQLite, and PostgreSQL
//! when the server in `RENKEI_TEST_POSTGRES` or 127.0.0.1:5432 answers),
//! with the demo region in `keys-example/` and JP-CLINS documents built from
//! the example forms: clinic → hospital → clinic (reply, reverse
//! referral), and a transfer to the recovery hospital with a discharge
//! summary; the status of each step from every facility's side, the JSON
//! shape, closing, bad thread IDs, and the CLI on a prepared profile.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use renkei::client::ops::{Received, SendOutcome, SendRequest, Session};
use renkei::client::threads::{StatusFilter, StepState, Thread, ThreadError, ThreadStatus};
use renkei::document::form::AttachmentForm;
use renkei::document::{self, BuildOptions, DocKind, Form};
use renkei::relay::{RelayConfig, RelayState};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_renkei");
/// Bound on one network step or command.
const STEP: Duration = Duration::from_secs(60);
const CLINIC: &str = "1311234569";
const HOSPITAL: &str = "1317654323";
const RECOVERY: &str = "1315555555";

/// A region from keys-example with a relay serving on a loopback port.
struct Region {
    dir: tempfile::TempDir,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), renkei::relay::RelayError>>>,
}

impl Region {
    async fn start(database_url: Option<&str>) -> Region {
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example");
        let dir = tempfile::tempdir().expect("tempdir");
        for p in ["relay", "clinic", "hospital", "recovery-hospital"] {
            let to = dir.path().join(p);
            fs::create_dir_all(&to).expect("mkdir");
            for e in fs::read_dir(keys.join(p)).expect("keys-example") {
                let e = e.expect("entry");
                if e.file_type().expect("type").is_file() {
                    let dest = to.join(e.file_name());
                    fs::copy(e.path(), &dest).expect("copy");
                    #[cfg(unix)]
                    if dest.extension().is_some_and(|x| x == "key") {
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600))
                            .expect("chmod");
                    }
                }
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = RelayState::open(
            &dir.path().join("relay"),
            &dir.path().join("relay-data"),
            database_url,
            RelayConfig::default(),
        )
        .await
        .expect("relay state");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(renkei::relay::serve(listener, state, async {
            let _ = rx.await;
        }));
        Region {
            dir,
            url: format!("https://localhost:{port}"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn profile(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn session(&self, name: &str) -> Session {
        let s = bounded(Session::open(&self.profile(name), Some(&self.url)))
            .await
            .expect("session");
        bounded(s.publish()).await.expect("publish");
        s
    }

    /// A document built from an example form, in the region's folder.
    fn document(
        &self,
        kind: DocKind,
        form: &str,
        attachments: &[&str],
        in_reply_to: Option<&str>,
    ) -> PathBuf {
        let mut f = Form::from_toml(form).expect("example form");
        f.attachments = attachments
            .iter()
            .map(|a| AttachmentForm {
                file: a.to_string(),
                title: format!("添付 {a}"),
            })
            .collect();
        let bytes = document::build_json(
            kind,
            &f,
            &BuildOptions {
                in_reply_to: in_reply_to.map(str::to_string),
                ..BuildOptions::default()
            },
        )
        .expect("build");
        let dir = self.dir.path().join("documents");
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(format!("{}-{}.json", kind, uuid::Uuid::new_v4()));
        fs::write(&path, bytes).expect("write document");
        path
    }

    fn attachment(&self, name: &str, content: &[u8]) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join("files")
            .join(uuid::Uuid::new_v4().to_string());
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(name);
        fs::write(&p, content).expect("write");
        p
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            bounded(t).await.expect("relay task").expect("relay serve");
        }
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step in time")
}

async fn send(
    from: &Session,
    to: &str,
    document: PathBuf,
    attachments: Vec<PathBuf>,
    kind: DocKind,
    in_reply_to: Option<&str>,
) -> SendOutcome {
    bounded(from.send(
        SendRequest {
            to: vec![to.parse().expect("facility id")],
            document,
            attachments,
            kind: kind.into(),
            in_reply_to: in_reply_to.map(str::to_string),
            thread: None,
        },
        |_, _| {},
    ))
    .await
    .expect("send")
}

async fn receive(by: &Session, sent: &SendOutcome) -> Received {
    bounded(by.receive(&sent.envelope_id, &by.profile.path("received")))
        .await
        .expect("receive")
}

/// The facility's only thread, after refreshing its receipts from the relay.
async fn view(s: &Session) -> Thread {
    bounded(s.status(None)).await.expect("status");
    let mut list = s.store.threads(None).await.expect("threads");
    assert_eq!(list.len(), 1, "one thread: {list:#?}");
    list.remove(0)
}

fn states(t: &Thread) -> Vec<(String, StepState)> {
    t.steps
        .iter()
        .map(|s| (s.package.kind.to_string(), s.state))
        .collect()
}

fn st(kind: &str, s: StepState) -> (String, StepState) {
    (kind.to_string(), s)
}

const REFERRAL: &str = include_str!("../examples/referral.toml");
const REPLY: &str = include_str!("../examples/reply.toml");
const REVERSE: &str = include_str!("../examples/reverse-referral.toml");
const TRANSFER: &str = include_str!("../examples/transfer.toml");
const DISCHARGE: &str = include_str!("../examples/discharge-summary.toml");

/// clinic → hospital → clinic: referral, reply, reverse referral; both
/// views at every step, then the JSON shape, closing and bad IDs.
async fn referral_thread(database_url: Option<&str>) {
    let region = Region::start(database_url).await;
    let clinic = region.session("clinic").await;
    let hospital = region.session("hospital").await;

    // 紹介: sent, not yet fetched.
    let lab = region.attachment("lab.csv", b"item,value\nHbA1c,7.2\n");
    let referral = send(
        &clinic,
        HOSPITAL,
        region.document(DocKind::Referral, REFERRAL, &["lab.csv"], None),
        vec![lab],
        DocKind::Referral,
        None,
    )
    .await;
    let thread_id = referral.manifest.thread_id.clone();
    assert_eq!(thread_id, referral.manifest.package_id);
    let t = view(&clinic).await;
    assert_eq!(t.thread_id, thread_id);
    assert_eq!(t.status, ThreadStatus::Sent);
    assert_eq!(states(&t), [st("referral", StepState::Sent)]);
    assert_eq!(t.patient.as_deref(), Some("山田 太郎"));
    assert_eq!(t.patient_kana.as_deref(), Some("ヤマダ タロウ"));
    assert!(t.purpose.as_deref().unwrap().contains("労作性狭心症"));
    assert_eq!(t.counterparts[0].facility_id, HOSPITAL);
    assert_eq!(t.counterparts[0].name.as_deref(), Some("東都中央病院"));
    let r = t.steps[0]
        .receipts
        .as_ref()
        .expect("receipts of a sent package");
    assert!(r.accepted_at.is_some() && r.outcomes.is_empty());

    // The hospital receives it: delivered (signed receipt) / received.
    let got = receive(&hospital, &referral).await;
    let t = view(&clinic).await;
    assert_eq!(t.status, ThreadStatus::Delivered);
    assert_eq!(t.path(), "紹介 到達");
    let o = &t.steps[0].receipts.as_ref().unwrap().outcomes[0];
    assert_eq!(
        (o.recipient.as_str(), o.state),
        (HOSPITAL, StepState::Delivered)
    );
    let h = view(&hospital).await;
    assert_eq!(h.thread_id, thread_id);
    assert_eq!(h.status, ThreadStatus::Received);
    assert_eq!(h.counterparts[0].facility_id, CLINIC);
    assert_eq!(h.patient.as_deref(), Some("山田 太郎"));

    // 返書: replied on both sides as soon as it is sent / received.
    let reply = send(
        &hospital,
        CLINIC,
        region.document(DocKind::Reply, REPLY, &[], Some(&got.manifest.package_id)),
        vec![],
        DocKind::Reply,
        Some(&got.manifest.package_id),
    )
    .await;
    assert_eq!(reply.manifest.thread_id, thread_id);
    let h = view(&hospital).await;
    assert_eq!(h.status, ThreadStatus::Replied);
    assert_eq!(
        states(&h),
        [
            st("referral", StepState::Received),
            st("reply", StepState::Sent)
        ]
    );
    assert_eq!(view(&clinic).await.status, ThreadStatus::Delivered);
    receive(&clinic, &reply).await;
    let t = view(&clinic).await;
    assert_eq!(t.status, ThreadStatus::Replied);
    assert_eq!(t.path(), "紹介 到達 → 返書 受領");
    assert_eq!(view(&hospital).await.path(), "紹介 受領 → 返書 到達");

    // 逆紹介.
    let back = send(
        &hospital,
        CLINIC,
        region.document(
            DocKind::ReverseReferral,
            REVERSE,
            &[],
            Some(&got.manifest.package_id),
        ),
        vec![],
        DocKind::ReverseReferral,
        Some(&got.manifest.package_id),
    )
    .await;
    assert_eq!(back.manifest.thread_id, thread_id);
    receive(&clinic, &back).await;
    let t = view(&clinic).await;
    assert_eq!(t.status, ThreadStatus::ReferredBack);
    assert_eq!(t.status_ja, "逆紹介");
    assert_eq!(t.path(), "紹介 到達 → 返書 受領 → 逆紹介 受領");
    let h = view(&hospital).await;
    assert_eq!(h.status, ThreadStatus::ReferredBack);
    assert_eq!(h.path(), "紹介 受領 → 返書 到達 → 逆紹介 到達");

    // JSON shape.
    let v = serde_json::to_value(clinic.store.threads(None).await.unwrap()).unwrap();
    let t0 = &v[0];
    assert_eq!(t0["thread_id"], thread_id.as_str());
    assert_eq!(t0["status"], "referred-back");
    assert_eq!(t0["status_ja"], "逆紹介");
    assert_eq!(t0["open"], true);
    assert_eq!(t0["patient"], "山田 太郎");
    assert_eq!(t0["counterparts"][0]["facility_id"], HOSPITAL);
    assert_eq!(t0["closed"], Value::Null);
    let steps = t0["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["kind"], "referral");
    assert_eq!(steps[0]["kind_ja"], "紹介");
    assert_eq!(steps[0]["direction"], "sent");
    assert_eq!(steps[0]["state"], "delivered");
    assert_eq!(steps[0]["envelope_id"], referral.envelope_id.as_str());
    assert_eq!(steps[0]["receipts"]["outcomes"][0]["state"], "delivered");
    assert_eq!(steps[0]["patient_name"], "山田 太郎");
    assert_eq!(steps[1]["kind"], "reply");
    assert_eq!(steps[1]["direction"], "received");
    assert_eq!(steps[1]["state"], "received");
    assert_eq!(
        steps[1]["in_reply_to"],
        referral.manifest.package_id.as_str()
    );
    assert!(steps[1].get("receipts").is_none());
    assert_eq!(steps[2]["kind"], "reverse-referral");

    // Bad thread IDs: nothing changes.
    assert!(matches!(
        clinic.store.thread("not-a-thread").await,
        Err(ThreadError::BadId(_))
    ));
    let unknown = uuid::Uuid::new_v4().to_string();
    assert!(matches!(
        clinic.store.close_thread(&unknown, CLINIC, None).await,
        Err(ThreadError::Unknown(_))
    ));
    // A package ID of the thread finds it too.
    assert_eq!(
        clinic
            .store
            .thread(&back.manifest.package_id)
            .await
            .unwrap()
            .thread_id,
        thread_id
    );

    // Close on the clinic's side only: local bookkeeping.
    let closed = clinic
        .store
        .close_thread(&thread_id, CLINIC, Some("逆紹介を受領"))
        .await
        .expect("close");
    assert_eq!(closed.status, ThreadStatus::Closed);
    assert_eq!(closed.closed.as_ref().unwrap().closed_by, CLINIC);
    assert!(matches!(
        clinic.store.close_thread(&thread_id, CLINIC, None).await,
        Err(ThreadError::AlreadyClosed { .. })
    ));
    assert!(clinic
        .store
        .threads(Some(StatusFilter::Open))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        clinic
            .store
            .threads(Some(StatusFilter::Closed))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(view(&hospital).await.status, ThreadStatus::ReferredBack);

    drop((clinic, hospital));
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referral_reply_and_reverse_referral_sqlite() {
    bounded(referral_thread(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referral_reply_and_reverse_referral_postgres() {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let server = std::env::var("RENKEI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("renkei_referrals_{}", std::process::id());
    let mut admin = bounded(sqlx::AnyConnection::connect(&server))
        .await
        .expect("PostgreSQL reachable (set RENKEI_TEST_POSTGRES)");
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .expect("drop old");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let (base, _) = server.rsplit_once('/').expect("URL with a database");
    let url = format!("{base}/{name}");
    bounded(referral_thread(Some(&url))).await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop database");
}

/// Referral, then a transfer to the recovery hospital and a discharge
/// summary back to the clinic, all in the referral's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_and_discharge_summary() {
    let region = Region::start(None).await;
    let clinic = region.session("clinic").await;
    let hospital = region.session("hospital").await;
    let recovery = region.session("recovery-hospital").await;

    let referral = send(
        &clinic,
        HOSPITAL,
        region.document(DocKind::Referral, REFERRAL, &[], None),
        vec![],
        DocKind::Referral,
        None,
    )
    .await;
    let got = receive(&hospital, &referral).await;
    let pid = got.manifest.package_id.clone();

    let transfer = send(
        &hospital,
        RECOVERY,
        region.document(DocKind::Transfer, TRANSFER, &[], Some(&pid)),
        vec![],
        DocKind::Transfer,
        Some(&pid),
    )
    .await;
    let h = view(&hospital).await;
    assert_eq!(h.status, ThreadStatus::Transferred);
    assert_eq!(h.path(), "紹介 受領 → 転院依頼 送信");
    receive(&recovery, &transfer).await;
    let r = view(&recovery).await;
    assert_eq!(r.status, ThreadStatus::Transferred);
    assert_eq!(r.thread_id, referral.manifest.thread_id);
    assert_eq!(r.path(), "転院依頼 受領");
    assert_eq!(r.counterparts[0].facility_id, HOSPITAL);

    let summary = send(
        &hospital,
        CLINIC,
        region.document(DocKind::DischargeSummary, DISCHARGE, &[], Some(&pid)),
        vec![],
        DocKind::DischargeSummary,
        Some(&pid),
    )
    .await;
    receive(&clinic, &summary).await;
    let h = view(&hospital).await;
    assert_eq!(h.status, ThreadStatus::DischargeSummary);
    assert_eq!(h.path(), "紹介 受領 → 転院依頼 到達 → 退院時サマリー 到達");
    let ids: Vec<&str> = h
        .counterparts
        .iter()
        .map(|c| c.facility_id.as_str())
        .collect();
    assert_eq!(ids, [CLINIC, RECOVERY]);
    let c = view(&clinic).await;
    assert_eq!(c.status, ThreadStatus::DischargeSummary);
    assert_eq!(c.status_ja, "退院時サマリー");
    assert_eq!(c.path(), "紹介 到達 → 退院時サマリー 受領");

    drop((clinic, hospital, recovery));
    region.stop().await;
}

fn renkei(args: &[&str]) -> Output {
    assert_cmd::Command::new(BIN)
        .args(args)
        .timeout(STEP)
        .output()
        .expect("renkei runs in time")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `renkei referrals` on a clinic profile prepared through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_shows_and_closes() {
    let region = Region::start(None).await;
    let clinic = region.session("clinic").await;
    let hospital = region.session("hospital").await;
    let referral = send(
        &clinic,
        HOSPITAL,
        region.document(DocKind::Referral, REFERRAL, &[], None),
        vec![],
        DocKind::Referral,
        None,
    )
    .await;
    let got = receive(&hospital, &referral).await;
    let reply = send(
        &hospital,
        CLINIC,
        region.document(DocKind::Reply, REPLY, &[], Some(&got.manifest.package_id)),
        vec![],
        DocKind::Reply,
        Some(&got.manifest.package_id),
    )
    .await;
    receive(&clinic, &reply).await;
    drop((clinic, hospital));
    let p = region.profile("clinic");
    let p = p.to_str().unwrap();
    let thread = referral.manifest.thread_id.as_str();

    // Offline list: the delivery receipt is not fetched yet.
    let o = renkei(&["referrals", "--profile", p]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.contains(thread), "{text}");
    assert!(text.contains("返書 / replied"), "{text}");
    assert!(text.contains("紹介 送信 → 返書 受領"), "{text}");
    assert!(text.contains("山田 太郎"), "{text}");
    assert!(text.contains("1317654323 東都中央病院"), "{text}");

    // --sync fetches and verifies the receipts first.
    let o = renkei(&[
        "referrals",
        "--profile",
        p,
        "--sync",
        "--relay",
        &region.url,
        "--json",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json list");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["status"], "replied");
    assert_eq!(v[0]["steps"][0]["state"], "delivered");

    let o = renkei(&["referrals", "show", "--profile", p, thread]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.contains("送信 sent"), "{text}");
    assert!(text.contains("受信 received"), "{text}");
    assert!(text.contains("紹介 referral"), "{text}");
    assert!(text.contains("返書 reply"), "{text}");
    assert!(text.contains("到達 delivered"), "{text}");
    assert!(text.contains("accepted by the relay"), "{text}");

    let o = renkei(&["referrals", "show", "--profile", p, thread, "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json thread");
    assert_eq!(v["thread_id"], thread);
    assert_eq!(v["steps"][1]["kind"], "reply");

    // Bad thread IDs: clear errors, non-zero exit.
    let o = renkei(&["referrals", "show", "--profile", p, "12345"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("is not a thread ID"), "{}", err(&o));
    let unknown = uuid::Uuid::new_v4().to_string();
    let o = renkei(&["referrals", "close", "--profile", p, &unknown]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("no referral thread"), "{}", err(&o));
    let o = renkei(&["referrals"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));

    // Close, then filters.
    let o = renkei(&[
        "referrals",
        "close",
        "--profile",
        p,
        thread,
        "--note",
        "返書受領",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("closed thread"), "{}", out(&o));
    let o = renkei(&["referrals", "close", "--profile", p, thread]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("already closed"), "{}", err(&o));
    let o = renkei(&["referrals", "--profile", p, "--status", "open"]);
    assert!(o.status.success());
    assert!(out(&o).contains("no referral threads"), "{}", out(&o));
    let o = renkei(&["referrals", "--profile", p, "--status", "closed", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json list");
    assert_eq!(v[0]["status"], "closed");
    assert_eq!(v[0]["closed"]["note"], "返書受領");
    assert_eq!(v[0]["closed"]["closed_by"], CLINIC);
    let o = renkei(&["referrals", "show", "--profile", p, thread]);
    assert!(out(&o).contains("終了 closed"), "{}", out(&o));

    region.stop().await;
}
