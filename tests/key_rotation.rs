//! Checkpoint key rotation in place (issue #14 item 6, docs/LOG.md §8):
//! the real relay (in process, loopback mutual TLS, SQLite and
//! PostgreSQL: `NAME::sqlite`, `NAME::postgres`) rotated with the real
//! `renkei relay rotate-checkpoint-key` binary; facilities, receipt
//! bundles offline and the auditor across two rotations; a checkpoint
//! signed by a key no transition announces refused with evidence kept.

#[macro_use]
mod both_backends;
mod relay_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relay_support::*;
use renkei::audit::sync::{verify_receipt_file, AuditError, Auditor};
use renkei::client::ops::{OpError, Session};
use renkei::keys::SigningKey;
use renkei::log::{Checkpoint, Signer, Verifier};
use renkei::receipt::bundle::relay_verifier;
use renkei::relay::{RelayError, RelayState};

const BIN: &str = env!("CARGO_BIN_EXE_renkei");

fn renkei(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(BIN);
    for a in args {
        c.arg(a);
    }
    c.output().expect("run renkei")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `relay new-checkpoint-key`: the key file (mode 0600) and its vkey.
fn new_checkpoint_key(w: &World, name: &str) -> (PathBuf, String) {
    let f = w.region.dir().join(name);
    let vkey = ok(&renkei(&[
        &"relay",
        &"new-checkpoint-key",
        &"--profile",
        &w.relay_profile,
        &"-o",
        &f,
    ]))
    .trim()
    .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Never overwritten.
    let again = renkei(&[
        &"relay",
        &"new-checkpoint-key",
        &"--profile",
        &w.relay_profile,
        &"-o",
        &f,
    ]);
    assert!(!again.status.success());
    (f, vkey)
}

/// `relay rotate-checkpoint-key` against the world's database.
fn rotate(w: &World, current: Option<&Path>, new: &Path) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        "relay".into(),
        "rotate-checkpoint-key".into(),
        "--profile".into(),
        w.relay_profile.clone().into(),
        "--data".into(),
        w.data.clone().into(),
        "--new-key".into(),
        new.into(),
        "--json".into(),
    ];
    if let Some(u) = w.db.url() {
        args.extend(["--database-url".into(), u.into()]);
    }
    if let Some(c) = current {
        args.extend(["--checkpoint-key".into(), c.into()]);
    }
    Command::new(BIN).args(&args).output().expect("run renkei")
}

async fn auditor(w: &World) -> Auditor {
    bounded(Auditor::open(&w.auditor, Some(&w.relay.url)))
        .await
        .expect("auditor opens")
}

/// Send a referral from the clinic to the hospital, have it received, and
/// return its envelope ID.
async fn referral(w: &World, clinic: &Session, hospital: &Session, n: usize) -> String {
    let doc = w.file(&format!("referral-{n}.json"), DOCUMENT.as_bytes());
    let sent = bounded(clinic.send(request(&[HOSPITAL], doc, Vec::new()), |_, _| {}))
        .await
        .unwrap();
    bounded(hospital.receive(&sent.envelope_id, &w.region.dir().join(format!("in-{n}"))))
        .await
        .unwrap();
    sent.envelope_id
}

async fn the_relay_rotates_its_checkpoint_key_without_a_new_log(backend: Backend) {
    let mut w = World::start(backend).await;
    let ca = w.region.ca_pem().as_bytes().to_vec();
    let root = relay_verifier(&cert_of(&w.relay_profile)).unwrap();
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    bounded(clinic.publish()).await.unwrap();
    bounded(hospital.publish()).await.unwrap();
    let env1 = referral(&w, &clinic, &hospital, 1).await;
    let st = bounded(clinic.status(Some(&env1))).await.unwrap();
    assert_eq!(st[0].recipients[0].state, "delivered");
    let old_bundles = clinic.store.bundles(&env1).await.unwrap();
    assert!(old_bundles.iter().all(|b| b.key_transitions.is_empty()));
    let a = auditor(&w).await;
    bounded(a.sync(false))
        .await
        .expect("sync before the rotation");
    drop(a);

    // 1. A new key, announced in the log under the old one (the
    //    certificate's key).
    let (key_b, vkey_b) = new_checkpoint_key(&w, "checkpoint-b.key");
    let vb = Verifier::parse(&vkey_b).unwrap();
    assert_eq!(vb.name(), root.name(), "the origin stays");
    let size_before = w.relay.state.store.log_size().await.unwrap();
    let out = ok(&rotate(&w, None, &key_b));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["log_index"], size_before);
    assert_eq!(r["old_key"], root.encode());
    assert_eq!(r["new_key"], vkey_b);
    let (ann, _) = Checkpoint::open(
        r["announcement"].as_str().unwrap().as_bytes(),
        root.name(),
        std::slice::from_ref(&root),
    )
    .expect("the announcement is signed by the old key");
    assert_eq!(ann.size, size_before + 1);
    // Run again with the old key: refused, the log's key is the new one.
    let again = rotate(&w, None, &key_b);
    assert!(!again.status.success());
    let msg = String::from_utf8_lossy(&again.stderr);
    assert!(msg.contains("current checkpoint key is"), "{msg}");

    // 2. The instance still running on the old key appends nothing more:
    //    no checkpoint past the announcement is signed by the old key.
    let stale = bounded(w.relay.state.store.crl_put("999", "not appended")).await;
    let e = stale.expect_err("the stale instance must not sign");
    assert!(
        e.to_string()
            .contains("checkpoint key changed at tree size"),
        "{e}"
    );
    assert_eq!(
        w.relay.state.store.log_size().await.unwrap(),
        size_before + 1
    );
    // A relay started with the retired key is refused with the way out.
    let e = RelayState::open(&w.relay_profile, &w.data, w.db.url(), w.config.clone())
        .await
        .err()
        .expect("the old key is refused");
    assert!(
        matches!(&e, RelayError::CheckpointKey(m) if m.contains(&vkey_b) && m.contains("--checkpoint-key")),
        "{e}"
    );

    // 3. Restarted with the new key: one log, one origin.
    w.config.checkpoint_key = Some(key_b.clone());
    w.restart().await;
    assert_eq!(w.relay.state.checkpoint_vkey(), vkey_b);
    assert_eq!(w.relay.state.vkey(), root.encode());
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    // The facility that kept checkpoints by the old key learns the new one
    // through the transition and goes on.
    let env2 = referral(&w, &clinic, &hospital, 2).await;
    let all = bounded(clinic.status(None)).await.unwrap();
    for id in [&env1, &env2] {
        let s = all.iter().find(|s| &s.sent.envelope_id == id).unwrap();
        assert_eq!(s.recipients[0].state, "delivered", "{id}");
    }
    let kept = clinic.store.checkpoint_keys(root.name()).await.unwrap();
    assert_eq!(kept, vec![(size_before + 1, vkey_b.clone())]);
    assert!(clinic.store.evidence().await.unwrap().is_empty());
    // Old receipts still verify through the relay, and offline: the
    // bundles exported before the rotation and those of now.
    bounded(clinic.envelope_receipts(&env1)).await.unwrap();
    for b in &old_bundles {
        verify_receipt_file(&serde_json::to_vec(b).unwrap(), &ca, &root.encode()).unwrap();
    }
    let new_bundles = clinic.store.bundles(&env2).await.unwrap();
    assert!(!new_bundles.is_empty());
    for b in &new_bundles {
        assert_eq!(b.key_transitions.len(), 1);
        verify_receipt_file(&serde_json::to_vec(b).unwrap(), &ca, &root.encode()).unwrap();
        // Without the transition the checkpoint's key is unknown.
        let mut bare = b.clone();
        bare.key_transitions.clear();
        let e = verify_receipt_file(&serde_json::to_vec(&bare).unwrap(), &ca, &root.encode())
            .unwrap_err();
        assert!(e.contains("no checkpoint key"), "{e}");
    }
    // The auditor follows across the rotation, and so does a full resync.
    let a = auditor(&w).await;
    let rep = bounded(a.sync(false))
        .await
        .expect("sync across the rotation");
    assert!(rep.to_size > size_before + 1);
    bounded(a.sync(true)).await.expect("full sync");
    drop(a);
    // A new auditor (nothing kept) learns the chain from the start.
    let fresh = w
        .region
        .profile("audit-2", renkei::identity::Kind::Auditor, "新監査人");
    let a2 = bounded(Auditor::open(&fresh, Some(&w.relay.url)))
        .await
        .unwrap();
    bounded(a2.sync(false)).await.expect("a new auditor syncs");
    drop(a2);

    // 4. A second rotation, vouched for by the second key.
    let (key_c, vkey_c) = new_checkpoint_key(&w, "checkpoint-c.key");
    let size_b = w.relay.state.store.log_size().await.unwrap();
    ok(&rotate(&w, Some(&key_b), &key_c));
    w.config.checkpoint_key = Some(key_c.clone());
    w.restart().await;
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    let env3 = referral(&w, &clinic, &hospital, 3).await;
    let all = bounded(clinic.status(None)).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|s| s.recipients[0].state == "delivered"));
    let kept = clinic.store.checkpoint_keys(root.name()).await.unwrap();
    assert_eq!(
        kept,
        vec![
            (size_before + 1, vkey_b.clone()),
            (size_b + 1, vkey_c.clone())
        ]
    );
    for b in clinic.store.bundles(&env3).await.unwrap() {
        assert_eq!(b.key_transitions.len(), 2);
        verify_receipt_file(&serde_json::to_vec(&b).unwrap(), &ca, &root.encode()).unwrap();
    }
    for b in &new_bundles {
        verify_receipt_file(&serde_json::to_vec(b).unwrap(), &ca, &root.encode()).unwrap();
    }
    let a = auditor(&w).await;
    bounded(a.sync(false))
        .await
        .expect("sync across the second rotation");
    drop(a);

    // 5. A checkpoint signed by a key no transition announces (the relay's
    //    database handed a checkpoint of a key of its own): the facility
    //    and the auditor refuse it and keep it.
    let size = w.relay.state.store.log_size().await.unwrap();
    let (_, served) = w
        .relay
        .state
        .store
        .latest_checkpoint()
        .await
        .unwrap()
        .unwrap();
    let (cp, _) = Checkpoint::open(
        served.as_bytes(),
        root.name(),
        &[Verifier::parse(&vkey_c).unwrap()],
    )
    .unwrap();
    assert_eq!(cp.size, size);
    let rogue = SigningKey::generate();
    let forged = Checkpoint::new(root.name(), cp.size, cp.root)
        .unwrap()
        .sign(&[&Signer::ed25519(root.name(), &rogue).unwrap()])
        .unwrap();
    let relay_cert = cert_of(&w.relay_profile);
    let e = bounded(clinic.check_checkpoint(&forged, &relay_cert))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OpError::Relay(m) if m.contains("no transition")),
        "{e}"
    );
    assert!(e.is_verification_failure());
    let ev = clinic.store.evidence().await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1, "checkpoint signed by an unknown key");
    assert_eq!(ev[0].2, forged);
    // The same through the relay: the stored checkpoint replaced.
    let mut conn = w.db.connect().await;
    sqlx::query("UPDATE log_checkpoints SET note = $1 WHERE size = $2")
        .bind(&forged)
        .bind(size as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    let a = auditor(&w).await;
    match bounded(a.sync(false)).await {
        Err(AuditError::Misbehaviour(m)) => {
            assert!(m.contains("checkpoint keys") && m.contains(&forged), "{m}")
        }
        other => panic!("expected misbehaviour, got {other:?}"),
    }
    let e = bounded(clinic.status(Some(&env3))).await.unwrap_err();
    assert!(e.is_verification_failure(), "{e}");
}

on_both_backends!(the_relay_rotates_its_checkpoint_key_without_a_new_log);
