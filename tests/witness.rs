//! Witnesses (C2SP tlog-witness, issue #14): the real witness server over
//! loopback HTTP with its SQLite state, the real relay asking it to cosign
//! each checkpoint, and facilities that require a quorum of cosignatures.
//!
//! The relay tests run on both backends (`NAME::sqlite`, `NAME::postgres`,
//! see tests/relay_support).

#[macro_use]
mod both_backends;
mod relay_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use hyper::Method;
use relay_support::*;
use renkei::client::ops::{OpError, Session};
use renkei::document::DocKind;
use renkei::identity::Kind;
use renkei::log::cosignature::{self, WitnessKey};
use renkei::log::note::Note;
use renkei::log::witness::{parse_size_body, AddCheckpoint, SIZE_CONTENT_TYPE};
use renkei::log::{Checkpoint, ConsistencyProof, MemoryTree, Signer, Verifier};
use renkei::profile::Profile;
use renkei::receipt::bundle;
use renkei::relay::RelayConfig;
use renkei::witness::{LogSettings, Witness, WitnessConfig};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A witness serving on a loopback port.
struct RunningWitness {
    url: String,
    witness: Arc<Witness>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), renkei::witness::WitnessError>>,
}

impl RunningWitness {
    /// The witness of profile `profile` (its witness.key), with its state
    /// in `data`, witnessing the log of `log`.
    async fn start(profile: &Path, data: &Path, name: &str, log: &Verifier) -> RunningWitness {
        let cfg = WitnessConfig {
            name: Some(name.to_string()),
            logs: vec![LogSettings {
                origin: log.name().to_string(),
                keys: vec![log.encode()],
            }],
        };
        let witness = Arc::new(Witness::open(profile, data, &cfg).await.expect("witness"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(renkei::witness::serve(
            listener,
            witness.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        RunningWitness {
            url: format!("http://127.0.0.1:{port}"),
            witness,
            stop: Some(tx),
            task,
        }
    }

    fn key(&self) -> &WitnessKey {
        self.witness.key()
    }

    /// `VKEY@URL`, as `relay serve --witness` takes it.
    fn endpoint(&self) -> String {
        format!("{}@{}", self.key(), self.url)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        bounded(self.task).await.unwrap().unwrap();
    }
}

/// A witness operator's profile folder (an auditor's keys; the witness
/// makes its own witness.key there).
fn witness_profile(root: &Path, id: &str) -> PathBuf {
    let dir = root.join(format!("witness-profile-{id}"));
    Profile::create(&dir, id, Kind::Auditor, "隣接地域 監視人", &[]).expect("profile");
    dir
}

/// POST a body to a witness: status, content type, body.
async fn post(url: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    use http_body_util::BodyExt;
    let authority = url.strip_prefix("http://").unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/add-checkpoint")
        .header(hyper::header::HOST, authority)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = bounded(s.send_request(req)).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, body)
}

fn add(old: u64, proof: Vec<[u8; 32]>, checkpoint: &str) -> Vec<u8> {
    AddCheckpoint {
        old_size: old,
        proof,
        checkpoint: checkpoint.to_string(),
    }
    .encode()
    .unwrap()
    .into_bytes()
}

/// A log of test entries signed with a key of its own.
struct TestLog {
    tree: MemoryTree,
    key: renkei::keys::SigningKey,
    origin: String,
}

impl TestLog {
    fn new(origin: &str) -> TestLog {
        TestLog {
            tree: MemoryTree::new(),
            key: renkei::keys::SigningKey::generate(),
            origin: origin.to_string(),
        }
    }
    fn vkey(&self) -> Verifier {
        Signer::ed25519(&self.origin, &self.key).unwrap().verifier()
    }
    fn grow(&mut self, n: usize, tag: &str) {
        for i in 0..n {
            self.tree.push_entry(format!("{tag}-{i}").as_bytes());
        }
    }
    fn checkpoint(&self) -> String {
        let s = Signer::ed25519(&self.origin, &self.key).unwrap();
        Checkpoint::new(&self.origin, self.tree.size(), self.tree.root())
            .unwrap()
            .sign(&[&s])
            .unwrap()
    }
    fn proof(&self, from: u64) -> Vec<[u8; 32]> {
        self.tree.consistency_proof(from, self.tree.size()).unwrap()
    }
}

// 1 ---------------------------------------------------------------------

/// Every status code of tlog-witness from the real server, its state kept
/// across a restart, and check-and-store atomic under concurrent requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_answers_every_case_of_the_protocol() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let profile = witness_profile(tmp.path(), "audit-w1");
    let data = tmp.path().join("w1-data");
    let mut log = TestLog::new("test.example/log");
    let w = RunningWitness::start(&profile, &data, "test.example/w1", &log.vkey()).await;
    // The witness key file is private and separate from the signing key.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(profile.join(renkei::witness::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        renkei::witness::vkey(&profile, "test.example/w1").unwrap(),
        *w.key()
    );
    assert_ne!(
        *w.key().public_key(),
        Profile::open(&profile)
            .unwrap()
            .signing_key()
            .unwrap()
            .public_key()
    );

    // First checkpoint: old 0, no proof.
    log.grow(5, "a");
    let cp5 = log.checkpoint();
    let (st, ct, body) = post(&w.url, add(0, vec![], &cp5)).await;
    assert_eq!(st, 200, "{}", text(&body));
    assert!(ct.starts_with("text/plain"));
    let lines = cosignature::parse_signature_lines(&body).unwrap();
    assert_eq!(lines.len(), 1);
    let text5 = Note::parse(cp5.as_bytes()).unwrap().text;
    let ts = w
        .key()
        .verify(&text5, &lines[0])
        .expect("a valid cosignature");
    assert!(ts > 0);
    let cosigned = cosignature::add_signatures(&cp5, &lines).unwrap();
    cosignature::open(
        cosigned.as_bytes(),
        &log.origin,
        &log.vkey(),
        &[w.key().clone()],
        1,
    )
    .expect("quorum of one");

    // 409 with the witness's size as text/x.tlog.size.
    log.grow(3, "b");
    let cp8 = log.checkpoint();
    let (st, ct, body) = post(&w.url, add(0, vec![], &cp8)).await;
    assert_eq!(st, 409);
    assert_eq!(ct, SIZE_CONTENT_TYPE);
    assert_eq!(parse_size_body(&body), Ok(5));
    let (st, _, body) = post(&w.url, add(4, log.proof(4), &cp8)).await;
    assert_eq!((st, parse_size_body(&body)), (409, Ok(5)));

    // 422: a proof that does not verify, and a proof from 0.
    let mut bad = log.proof(5);
    bad[0][0] ^= 1;
    assert_eq!(post(&w.url, add(5, bad, &cp8)).await.0, 422);
    assert_eq!(post(&w.url, add(5, vec![], &cp8)).await.0, 422);
    // 400: old size over the checkpoint's; garbage; not a checkpoint.
    assert_eq!(post(&w.url, add(9, vec![], &cp8)).await.0, 400);
    assert_eq!(post(&w.url, b"old 5\n".to_vec()).await.0, 400);
    assert_eq!(post(&w.url, b"hello".to_vec()).await.0, 400);
    assert_eq!(post(&w.url, add(5, vec![], "not a note\n")).await.0, 400);
    // 422: a size-0 checkpoint whose root is not the empty tree's.
    let s = Signer::ed25519(&log.origin, &log.key).unwrap();
    let zero = renkei::log::note::sign(
        &format!("{}\n0\n{}\n", log.origin, B64.encode([1u8; 32])),
        &[&s],
    )
    .unwrap();
    assert_eq!(post(&w.url, add(0, vec![], &zero)).await.0, 422);
    // 404: another log, even validly signed by its own key.
    let mut other = TestLog::new("other.example/log");
    other.grow(1, "o");
    assert_eq!(
        post(&w.url, add(0, vec![], &other.checkpoint())).await.0,
        404
    );
    // 403: this log's origin signed by another key; a bad log signature.
    let forger = TestLog {
        tree: log.tree.clone(),
        key: renkei::keys::SigningKey::generate(),
        origin: log.origin.clone(),
    };
    assert_eq!(
        post(&w.url, add(5, log.proof(5), &forger.checkpoint()))
            .await
            .0,
        403
    );
    let tampered = cp8.replacen(&B64.encode(log.tree.root()), &B64.encode([9u8; 32]), 1);
    assert_eq!(post(&w.url, add(5, log.proof(5), &tampered)).await.0, 403);

    // The good proof is cosigned; the same size again with the same root
    // too, with another root 422.
    let (st, _, body) = post(&w.url, add(5, log.proof(5), &cp8)).await;
    assert_eq!(st, 200, "{}", text(&body));
    assert_eq!(post(&w.url, add(8, vec![], &cp8)).await.0, 200);
    let mut fork = TestLog {
        tree: MemoryTree::new(),
        key: clone_key(&log.key),
        origin: log.origin.clone(),
    };
    fork.grow(8, "fork");
    assert_eq!(
        post(&w.url, add(8, vec![], &fork.checkpoint())).await.0,
        422
    );
    let refused = w.witness.refused().await.unwrap();
    assert!(refused
        .iter()
        .all(|(o, s, _)| o == &log.origin && *s == 422));
    assert!(refused.len() >= 3, "{refused:?}");

    // Concurrent requests from the same old size: exactly one wins.
    log.grow(4, "c");
    let cp12 = log.checkpoint();
    let mut other_log = log.tree.clone();
    other_log.push_entry(b"d");
    let cp13 = TestLog {
        tree: other_log.clone(),
        key: clone_key(&log.key),
        origin: log.origin.clone(),
    };
    let p12 = log.proof(8);
    let p13 = other_log.consistency_proof(8, 13).unwrap();
    let cp13s = cp13.checkpoint();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, body) = if i % 2 == 0 {
            (w.url.clone(), add(8, p12.clone(), &cp12))
        } else {
            (w.url.clone(), add(8, p13.clone(), &cp13s))
        };
        tasks.push(tokio::spawn(async move { post(&url, body).await.0 }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 409), "{codes:?}");
    let (size, note) = w.witness.latest(&log.origin).await.unwrap().unwrap();
    assert!(size == 12 || size == 13);
    // The stored checkpoint carries the witness's own cosignature.
    cosignature::open(
        note.as_bytes(),
        &log.origin,
        &log.vkey(),
        &[w.key().clone()],
        1,
    )
    .unwrap();

    // State survives a restart.
    w.stop().await;
    let w = RunningWitness::start(&profile, &data, "test.example/w1", &log.vkey()).await;
    let (st, _, body) = post(&w.url, add(0, vec![], &cp12)).await;
    assert_eq!((st, parse_size_body(&body)), (409, Ok(size)));
    w.stop().await;
}

fn clone_key(k: &renkei::keys::SigningKey) -> renkei::keys::SigningKey {
    renkei::keys::SigningKey::from_pkcs8_pem(&k.to_pkcs8_pem(), "test").unwrap()
}

// 2 ---------------------------------------------------------------------

/// Three witnesses and a relay that asks them; facilities requiring 2.
struct Witnessed {
    w: World,
    witnesses: Vec<RunningWitness>,
    /// Profiles of the witnesses (their witness.key), by index.
    profiles: Vec<PathBuf>,
}

async fn witnessed_world(backend: Backend, quorum: usize) -> Witnessed {
    let mut w = World::start(backend).await;
    let relay_vkey = renkei::receipt::bundle::relay_verifier(&cert_of(&w.relay_profile)).unwrap();
    let mut witnesses = Vec::new();
    let mut profiles = Vec::new();
    for i in 0..3 {
        let p = witness_profile(w.region.dir(), &format!("audit-w{i}"));
        let data = w.region.dir().join(format!("witness-{i}"));
        witnesses.push(
            RunningWitness::start(&p, &data, &format!("witness.example/w{i}"), &relay_vkey).await,
        );
        profiles.push(p);
    }
    w.config.witnesses = witnesses.iter().map(|x| x.endpoint()).collect();
    w.config.witness_quorum = quorum;
    w.restart().await;
    let keys: Vec<String> = witnesses.iter().map(|x| x.key().encode()).collect();
    for p in [&w.clinic, &w.hospital, &w.recovery] {
        Profile::open(p)
            .unwrap()
            .install_witnesses(&keys, Some(quorum))
            .unwrap();
    }
    Witnessed {
        w,
        witnesses,
        profiles,
    }
}

/// A profile that requires witnesses uses a directory answer only for a
/// certificate in the witnessed log: a relay (with a CA that issued a
/// second certificate for the hospital's ID) serving a certificate it never
/// logged gets nothing sent to it.
async fn a_directory_answer_outside_the_witnessed_log_is_not_used(backend: Backend) {
    let Witnessed {
        w,
        witnesses: _running,
        ..
    } = witnessed_world(backend, 2).await;
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    bounded(clinic.publish()).await.unwrap();
    bounded(hospital.publish()).await.unwrap();
    let id: renkei::identity::FacilityId = HOSPITAL.parse().unwrap();
    let genuine = bounded(clinic.directory_show(&id)).await.unwrap();
    assert_eq!(genuine.fingerprint, cert_of(&w.hospital).fingerprint);
    send(&w, &clinic, CLINIC, HOSPITAL).await;

    // A certificate for the hospital's ID, valid under the region's CA,
    // served from the relay's directory table but never logged.
    let impostor = w.region.impostor(
        &w.region.stolen_ca(),
        HOSPITAL,
        Kind::Hospital,
        "市立中央病院",
    );
    let pem = std::fs::read_to_string(impostor.join(Profile::CERT)).unwrap();
    substitute_directory_entry(&w.db, HOSPITAL, &pem).await;
    let e = bounded(clinic.directory_show(&id)).await.unwrap_err();
    assert!(
        matches!(&e, OpError::Relay(m) if m.contains("not in its witnessed log")),
        "{e:?}"
    );
    let found = bounded(clinic.directory_search(None, None)).await.unwrap();
    assert!(
        found
            .iter()
            .any(|r| matches!(r, Err(OpError::Relay(m)) if m.contains("not in its witnessed log"))),
        "{found:?}"
    );
    let doc = document_for(DocKind::Referral, CLINIC, HOSPITAL, &[]);
    let doc = w.file("referral-2.json", &doc);
    let sent = bounded(clinic.send(request(&[HOSPITAL], doc, vec![]), |_, _| {})).await;
    assert!(sent.is_err(), "sent to a certificate outside the log");
    assert_eq!(
        bounded(hospital.inbox()).await.unwrap().len(),
        1,
        "only the first referral"
    );
}

async fn health(w: &World) -> renkei::api::Health {
    let (st, _, body) = raw(&w.client(&w.clinic), Method::GET, "/v1/health", &[], vec![]).await;
    assert_eq!(st, 200);
    serde_json::from_slice(&body).unwrap()
}

async fn served_checkpoint(w: &World, url: &str) -> String {
    let p = Profile::open(&w.clinic).unwrap();
    let c = renkei::client::RelayClient::new(&p, Some(url)).unwrap();
    let (st, _, body) = raw(&c, Method::GET, "/v1/log/checkpoint", &[], vec![]).await;
    assert_eq!(st, 200, "{}", text(&body));
    text(&body)
}

/// Send a referral from `from` to `to` on the relay at `url`.
async fn send(w: &World, s: &Session, from: &str, to: &str) -> String {
    let doc = document_for(DocKind::Referral, from, to, &[]);
    let doc = w.file("referral.json", &doc);
    let sent = bounded(s.send(request(&[to], doc, vec![]), |_, _| {}))
        .await
        .unwrap();
    sent.envelope_id
}

async fn relay_checkpoints_are_cosigned_and_facilities_require_the_quorum(backend: Backend) {
    let Witnessed {
        mut w,
        witnesses,
        profiles: _,
    } = witnessed_world(backend, 2).await;
    let relay_vkey = renkei::receipt::bundle::relay_verifier(&cert_of(&w.relay_profile)).unwrap();
    let keys: Vec<WitnessKey> = witnesses.iter().map(|x| x.key().clone()).collect();

    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    bounded(clinic.publish()).await.unwrap();
    bounded(hospital.publish()).await.unwrap();
    let env = send(&w, &clinic, CLINIC, HOSPITAL).await;
    let out = w.out_dir();
    bounded(hospital.receive(&env, &out)).await.unwrap();
    let st = bounded(clinic.status(Some(&env))).await.unwrap();
    assert_eq!(st[0].recipients[0].state, "delivered");

    // The served checkpoint carries the three cosignatures; health agrees.
    let note = served_checkpoint(&w, &w.relay.url).await;
    let c = cosignature::open(note.as_bytes(), relay_vkey.name(), &relay_vkey, &keys, 3).unwrap();
    let h = health(&w).await.witnesses.expect("witness health");
    assert_eq!(
        (h.configured, h.quorum, h.size, h.cosignatures, h.quorum_met),
        (3, 2, c.checkpoint.size, 3, true)
    );
    for x in &witnesses {
        let (size, _) = x.witness.latest(relay_vkey.name()).await.unwrap().unwrap();
        assert_eq!(size, c.checkpoint.size);
    }
    // The receipt bundles hand out the cosigned checkpoint, and each is
    // evidence on its own as a C2SP tlog-proof.
    let verified = bounded(clinic.envelope_receipts(&env)).await.unwrap();
    for b in &verified.bundles {
        cosignature::open(
            b.checkpoint.as_bytes(),
            relay_vkey.name(),
            &relay_vkey,
            &keys,
            2,
        )
        .unwrap();
        let w = bundle::check_witnesses(b, &relay_vkey, &keys, 3).unwrap();
        assert_eq!(w.len(), 3);
        let proof = bundle::tlog_proof(b).unwrap();
        assert!(proof.starts_with("c2sp.org/tlog-proof@v1\nextra "));
        let p = bundle::verify_tlog_proof(
            proof.as_bytes(),
            std::slice::from_ref(&relay_vkey),
            &keys,
            3,
        )
        .unwrap();
        assert_eq!((p.log_index, &p.receipt), (b.log_index, &b.receipt));
        assert_eq!(p.cosigned.witnesses.len(), 3);
        // Fewer known witnesses than the quorum: refused.
        let e = bundle::verify_tlog_proof(
            proof.as_bytes(),
            std::slice::from_ref(&relay_vkey),
            &keys[..1],
            2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not witnessed as required"), "{e}");
    }
    // The same offline, from the files `status --export` writes.
    let export = w.out_dir();
    let run = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_renkei"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(vec![
        "status".into(),
        "--profile".into(),
        w.clinic.display().to_string(),
        "--relay".into(),
        w.relay.url.clone(),
        "--export".into(),
        export.display().to_string(),
        env.clone(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let proofs: Vec<_> = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tlog-proof"))
        .collect();
    assert!(proofs.len() >= 3, "{proofs:?}");
    let stranger = WitnessKey::new("witness.example/stranger", [9; 32]).unwrap();
    let verify = |file: &Path, quorum: usize| {
        let mut a = vec![
            "audit".to_string(),
            "verify-receipt".into(),
            file.display().to_string(),
            "--relay-vkey".into(),
            relay_vkey.encode(),
            "--witness-quorum".into(),
            quorum.to_string(),
        ];
        for k in keys[..2].iter().chain([&stranger]) {
            a.extend(["--witness".into(), k.encode()]);
        }
        run(a)
    };
    for f in &proofs {
        let o = verify(f, 2);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.starts_with("OK: the log holds the "), "{out}");
        assert!(out.contains("cosigned by "), "{out}");
        // The stranger never cosigned: two cannot make a quorum of three.
        let o = verify(f, 3);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let tampered = export.join("tampered.tlog-proof");
    let text = std::fs::read_to_string(&proofs[0]).unwrap();
    let index = text.lines().nth(2).unwrap().to_string();
    assert!(index.starts_with("index "), "{text}");
    let n: u64 = index["index ".len()..].parse().unwrap();
    std::fs::write(
        &tampered,
        text.replacen(&index, &format!("index {}", n + 1), 1),
    )
    .unwrap();
    assert_eq!(verify(&tampered, 2).status.code(), Some(3));

    // A restarted relay forgot the witnesses' sizes: it resyncs on 409
    // (old 0, then the proof from their size), and a witness that is down
    // or that never answers costs only its cosignature.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dead_key = WitnessKey::new("witness.example/silent", [7; 32]).unwrap();
    w.config
        .witnesses
        .push(format!("{dead_key}@http://127.0.0.1:{silent_port}"));
    w.config.witness_timeout_ms = 1500;
    w.restart().await;
    let clinic = w.session(&w.clinic).await;
    let env2 = send(&w, &clinic, CLINIC, HOSPITAL).await;
    bounded(clinic.status(Some(&env2))).await.unwrap();
    let h = health(&w).await.witnesses.unwrap();
    assert_eq!((h.configured, h.cosignatures, h.quorum_met), (4, 3, true));
    for x in &witnesses {
        assert_eq!(
            x.witness
                .latest(relay_vkey.name())
                .await
                .unwrap()
                .unwrap()
                .0,
            h.size
        );
    }
    drop(silent);

    // With two witnesses stopped the quorum is not met: health says so and
    // facilities refuse the new checkpoint (kept as evidence).
    let mut witnesses = witnesses;
    let w2 = witnesses.pop().unwrap();
    let w1 = witnesses.pop().unwrap();
    w2.stop().await;
    w1.stop().await;
    let env3 = send(&w, &clinic, CLINIC, HOSPITAL).await;
    let h = health(&w).await.witnesses.unwrap();
    assert_eq!((h.cosignatures, h.quorum_met), (1, false));
    let err = bounded(clinic.status(Some(&env3))).await.unwrap_err();
    assert!(
        matches!(&err, OpError::Relay(m) if m.contains("witness cosignature")),
        "{err}"
    );
    assert!(err.is_verification_failure());
    let ev = clinic.store.evidence().await.unwrap();
    assert_eq!(
        ev.last().unwrap().1,
        "checkpoint without the witness quorum"
    );
}

// 3 ---------------------------------------------------------------------

/// The relay shows one facility a tree of its own (a second log under the
/// same key and origin, on a database of its own): the honest witnesses
/// refuse it (409, 422), one colluding witness (same key, a state that
/// never saw the real log) cosigns it, and with a quorum of 2 of 3 the
/// facility refuses it and keeps the evidence.
async fn a_forked_view_is_refused_by_witnesses_and_facilities(backend: Backend) {
    let Witnessed {
        w,
        witnesses,
        profiles,
    } = witnessed_world(backend, 2).await;
    let relay_vkey = renkei::receipt::bundle::relay_verifier(&cert_of(&w.relay_profile)).unwrap();
    let keys: Vec<WitnessKey> = witnesses.iter().map(|x| x.key().clone()).collect();

    // The real log: a few entries, cosigned by all three.
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    bounded(clinic.publish()).await.unwrap();
    bounded(hospital.publish()).await.unwrap();
    let env = send(&w, &clinic, CLINIC, HOSPITAL).await;
    bounded(hospital.receive(&env, &w.out_dir())).await.unwrap();
    let real = served_checkpoint(&w, &w.relay.url).await;
    let real = cosignature::open(real.as_bytes(), relay_vkey.name(), &relay_vkey, &keys, 3)
        .unwrap()
        .checkpoint;

    // The colluding witness: witness 2's key, a state of its own.
    let colluder = RunningWitness::start(
        &profiles[2],
        &w.region.dir().join("colluder-data"),
        "witness.example/w2",
        &relay_vkey,
    )
    .await;
    assert_eq!(colluder.key(), witnesses[2].key());

    // The fork: the same relay profile (key, origin) on another database.
    let fork_data = w.region.dir().join("fork-data");
    let fork_db = TestDb::new(backend, &fork_data).await;
    let fork_config = RelayConfig {
        witnesses: vec![
            witnesses[0].endpoint(),
            witnesses[1].endpoint(),
            colluder.endpoint(),
        ],
        witness_quorum: 2,
        ..w.config.clone()
    };
    let fork = RunningRelay::start(&w.relay_profile, &fork_data, fork_db.url(), fork_config).await;
    // The recovery hospital only ever talks to the fork. Its operator has
    // not required witnesses yet (quorum 0: known witnesses' lines are
    // checked, none is needed), so it sends through the fork and grows it
    // (a facility that requires them refuses the fork at its first
    // directory lookup: tested in
    // a_directory_answer_outside_the_witnessed_log_is_not_used).
    let set_quorum = |q: usize| {
        Profile::open(&w.recovery)
            .unwrap()
            .install_witnesses(&[], Some(q))
            .unwrap();
    };
    set_quorum(0);
    let recovery = bounded(Session::open(&w.recovery, Some(&fork.url)))
        .await
        .unwrap();
    let hospital_f = bounded(Session::open(&w.hospital, Some(&fork.url)))
        .await
        .unwrap();
    bounded(recovery.publish()).await.unwrap();
    bounded(hospital_f.publish()).await.unwrap();
    let mut envs = Vec::new();
    while served_size(&w, &fork.url).await <= real.size {
        envs.push(send(&w, &recovery, RECOVERY, HOSPITAL).await);
    }
    let forked = served_checkpoint(&w, &fork.url).await;
    let fc = Checkpoint::open(
        forked.as_bytes(),
        relay_vkey.name(),
        std::slice::from_ref(&relay_vkey),
    )
    .unwrap()
    .0;
    assert!(fc.size > real.size);
    // Only the colluder cosigned the fork.
    let fork_cosigs =
        cosignature::verified_cosignatures(&Note::parse(forked.as_bytes()).unwrap(), &keys)
            .unwrap();
    assert_eq!(
        fork_cosigs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["witness.example/w2"]
    );

    // The honest witnesses refuse the forked view: 409 from its own idea
    // of their size, 422 with the fork's "consistency proof" from theirs.
    let bare = {
        let mut n = Note::parse(forked.as_bytes()).unwrap();
        n.signatures.truncate(1);
        n.encode().unwrap()
    };
    let proof: ConsistencyProof = {
        let c =
            renkei::client::RelayClient::new(&Profile::open(&w.clinic).unwrap(), Some(&fork.url))
                .unwrap();
        let (st, _, body) = raw(
            &c,
            Method::GET,
            &format!(
                "/v1/log/proof/consistency?from={}&to={}",
                real.size, fc.size
            ),
            &[],
            vec![],
        )
        .await;
        assert_eq!(st, 200);
        serde_json::from_slice(&body).unwrap()
    };
    for x in &witnesses[..2] {
        let (st, _, body) = post(&x.url, add(0, vec![], &bare)).await;
        assert_eq!((st, parse_size_body(&body)), (409, Ok(real.size)));
        let (st, _, _) = post(&x.url, add(real.size, proof.hashes.clone(), &bare)).await;
        assert_eq!(st, 422);
        assert!(x
            .witness
            .refused()
            .await
            .unwrap()
            .iter()
            .any(|(o, s, _)| o == relay_vkey.name() && *s == 422));
        // Their state is still the real log's.
        assert_eq!(
            x.witness
                .latest(relay_vkey.name())
                .await
                .unwrap()
                .unwrap()
                .0,
            real.size
        );
    }

    // The facility on the fork, now requiring two witnesses, refuses it:
    // one cosignature, two required.
    set_quorum(2);
    let recovery = bounded(Session::open(&w.recovery, Some(&fork.url)))
        .await
        .unwrap();
    let err = bounded(recovery.status(Some(&envs[0]))).await.unwrap_err();
    assert!(
        matches!(&err, OpError::Relay(m) if m.contains("1 valid witness cosignature(s), 2 required")),
        "{err}"
    );
    let ev = recovery.store.evidence().await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1, "checkpoint without the witness quorum");
    assert_eq!(ev[0].2, forked_latest(&w, &fork.url).await);
    // So does a facility that saw the real log.
    let err = bounded(hospital_f.receive(&envs[0], &w.out_dir()))
        .await
        .unwrap_err();
    assert!(matches!(&err, OpError::Relay(_)), "{err}");
    // With a quorum of 1 the colluder alone would have been enough: the
    // quorum is what protects.
    cosignature::open(forked.as_bytes(), relay_vkey.name(), &relay_vkey, &keys, 1).unwrap();

    // The real relay is unaffected.
    bounded(clinic.status(Some(&env))).await.unwrap();
    fork.stop().await;
    drop(fork_db);
    colluder.stop().await;
}

async fn served_size(w: &World, url: &str) -> u64 {
    let note = served_checkpoint(w, url).await;
    let n = Note::parse(note.as_bytes()).unwrap();
    Checkpoint::parse(n.text.as_bytes()).unwrap().size
}

async fn forked_latest(w: &World, url: &str) -> String {
    served_checkpoint(w, url).await
}

// 4 ---------------------------------------------------------------------

/// The relay rotates its checkpoint key (docs/LOG.md §8): the witnesses
/// cosign the announcement under the old key, learn the transition (one
/// that missed the announcement is shown it first), cosign the new key's
/// checkpoints, and the facilities' quorum holds; a retired key's
/// checkpoint past the announcement, a key nobody announced, and a
/// transition not vouched for by the current key are refused.
async fn a_rotated_checkpoint_key_is_cosigned_and_the_quorum_holds(backend: Backend) {
    let Witnessed {
        mut w,
        witnesses,
        profiles: _,
    } = witnessed_world(backend, 2).await;
    let root = renkei::receipt::bundle::relay_verifier(&cert_of(&w.relay_profile)).unwrap();
    let keys: Vec<WitnessKey> = witnesses.iter().map(|x| x.key().clone()).collect();
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    bounded(clinic.publish()).await.unwrap();
    bounded(hospital.publish()).await.unwrap();
    let env1 = send(&w, &clinic, CLINIC, HOSPITAL).await;
    bounded(hospital.receive(&env1, &w.out_dir()))
        .await
        .unwrap();
    bounded(clinic.status(Some(&env1))).await.unwrap();

    // The rotation, with only two of the three witnesses configured: the
    // announcement gets their cosignatures under the old key.
    let key_file = w.region.dir().join("checkpoint-b.key");
    let new_key = renkei::keys::SigningKey::generate();
    new_key.save(&key_file).unwrap();
    let new_vkey = Verifier::ed25519(root.name(), new_key.public_key()).unwrap();
    let mut two = w.config.clone();
    two.witnesses.truncate(2);
    let r = bounded(renkei::relay::rotation::rotate_checkpoint_key(
        &w.relay_profile,
        &w.data,
        w.db.url(),
        &two,
        &new_key,
    ))
    .await
    .unwrap();
    let ann = cosignature::open(r.announcement.as_bytes(), root.name(), &root, &keys, 2)
        .expect("the announcement is cosigned under the old key");
    assert_eq!(ann.checkpoint.size, r.log_index + 1);

    // Restarted with the new key: every witness cosigns its checkpoints
    // (the third after being shown the announcement and the transition).
    w.config.checkpoint_key = Some(key_file);
    w.restart().await;
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    let env2 = send(&w, &clinic, CLINIC, HOSPITAL).await;
    bounded(hospital.receive(&env2, &w.out_dir()))
        .await
        .unwrap();
    let st = bounded(clinic.status(None)).await.unwrap();
    assert!(st.iter().all(|s| s.recipients[0].state == "delivered"));
    assert!(clinic.store.evidence().await.unwrap().is_empty());
    let note = served_checkpoint(&w, &w.relay.url).await;
    let c = cosignature::open(note.as_bytes(), root.name(), &new_vkey, &keys, 3)
        .expect("all three witnesses cosign the new key's checkpoint");
    assert!(c.checkpoint.size > ann.checkpoint.size);
    let h = health(&w).await.witnesses.unwrap();
    assert_eq!((h.cosignatures, h.quorum_met), (3, true));
    for x in &witnesses {
        assert_eq!(
            x.witness.latest(root.name()).await.unwrap().unwrap().0,
            c.checkpoint.size
        );
    }

    // The retired key past its announcement, and a key never announced:
    // refused (403) by a witness that follows the log.
    let old_key = Profile::open(&w.relay_profile)
        .unwrap()
        .signing_key()
        .unwrap();
    let rogue = renkei::keys::SigningKey::generate();
    let x = &witnesses[0];
    for k in [&old_key, &rogue] {
        let forged = Checkpoint::new(root.name(), c.checkpoint.size, c.checkpoint.root)
            .unwrap()
            .sign(&[&Signer::ed25519(root.name(), k).unwrap()])
            .unwrap();
        let (st, _, body) = post(&x.url, add(c.checkpoint.size, vec![], &forged)).await;
        assert_eq!(st, 403, "{}", text(&body));
    }
    // A transition announced under the new key itself (not vouched for by
    // the current key), and the real one again (no change).
    let proofs: Vec<renkei::receipt::key_transition::TransitionProof> =
        w.relay.state.store.key_transitions().await.unwrap();
    assert_eq!(proofs.len(), 1);
    x.witness
        .add_key_transition(&serde_json::to_vec(&proofs[0]).unwrap())
        .await
        .expect("the same transition again");
    let third = renkei::keys::SigningKey::generate();
    let t = renkei::receipt::key_transition::KeyTransition::new(
        root.name(),
        Verifier::ed25519(root.name(), rogue.public_key()).unwrap(),
        Verifier::ed25519(root.name(), third.public_key()).unwrap(),
        "2026-12-01T22:00:00Z",
    )
    .unwrap();
    let tree = MemoryTree::from_entries([t.to_text()]);
    let self_signed = renkei::receipt::key_transition::TransitionProof {
        log_index: 0,
        entry: t.to_text(),
        checkpoint: Checkpoint::new(root.name(), 1, tree.root())
            .unwrap()
            .sign(&[&Signer::ed25519(root.name(), &rogue).unwrap()])
            .unwrap(),
        inclusion: vec![],
    };
    let e = x
        .witness
        .add_key_transition(&serde_json::to_vec(&self_signed).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.status().as_u16(), 403, "{e}");
    let e = x.witness.add_key_transition(b"{}").await.unwrap_err();
    assert_eq!(e.status().as_u16(), 400, "{e}");
}

on_both_backends!(
    relay_checkpoints_are_cosigned_and_facilities_require_the_quorum,
    a_directory_answer_outside_the_witnessed_log_is_not_used,
    a_forked_view_is_refused_by_witnesses_and_facilities,
    a_rotated_checkpoint_key_is_cosigned_and_the_quorum_holds,
);
