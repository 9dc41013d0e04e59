//! The auditor against a real relay (in process, loopback mutual TLS, on
//! SQLite and on PostgreSQL: every test runs as `NAME::sqlite` and
//! `NAME::postgres`): clean syncs, offline receipt bundles, and a relay that rewrites
//! its history — an edited, deleted or swapped entry, a truncated log, a
//! fork — caught with the leaf index named (library and CLI, exit code 3),
//! and facilities keeping evidence of an inconsistent relay.

#[macro_use]
mod both_backends;
mod audit_support;

use std::path::Path;

use audit_support::*;
use renkei::audit::sync::{verify_receipt_file, AuditError, Auditor};
use renkei::client::ops::{OpError, Session};
use renkei::client::RelayClient;
use renkei::log::tiles::{self, TileKind, TilePath};
use renkei::log::{Checkpoint, Signer};
use renkei::profile::Profile;
use renkei::receipt::bundle::relay_verifier;
use renkei::receipt::ReceiptBundle;

const EXIT_VERIFY: i32 = 3;

async fn auditor(profile: &Path, url: &str) -> Auditor {
    bounded(Auditor::open(profile, Some(url)))
        .await
        .expect("auditor opens")
}

/// Expect relay misbehaviour whose message names leaf `idx`.
fn expect_caught<T: std::fmt::Debug>(r: Result<T, AuditError>, idx: u64, what: &str) -> String {
    match r {
        Err(AuditError::Misbehaviour(m)) => {
            let named = m
                .split(|c: char| !c.is_ascii_digit())
                .any(|w| w == idx.to_string());
            assert!(named, "{what}: the message should name leaf {idx}: {m}");
            m
        }
        other => panic!("{what}: expected misbehaviour naming leaf {idx}, got {other:?}"),
    }
}

/// Publish the three facilities, then `n` round trips clinic → hospital.
/// Returns the sessions and envelope IDs.
async fn activity(w: &World, n: usize) -> (Session, Session, Vec<String>) {
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    let recovery = w.session(&w.recovery).await;
    for s in [&clinic, &hospital, &recovery] {
        bounded(s.publish()).await.expect("publish");
    }
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(w.round_trip(&clinic, &hospital, HOSPITAL).await);
    }
    (clinic, hospital, ids)
}

/// Leaf index of the receipt of `purpose` for `envelope` in the relay's log.
async fn leaf_of(w: &World, envelope: &str, purpose: &str) -> u64 {
    log_entries(&w.db)
        .await
        .into_iter()
        .find(|(_, e)| e.contains(envelope) && e.contains(&format!("\"purpose\":\"{purpose}\"")))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {purpose} receipt of {envelope} in the log"))
}

async fn clean_log_syncs_incrementally_and_reports(backend: Backend) {
    let w = World::start(backend).await;
    let (clinic, hospital, ids) = activity(&w, 2).await;
    let a = auditor(&w.auditor, &w.relay.url).await;
    let size = w.relay.state.store.log_size().await.unwrap();
    let r1 = bounded(a.sync(false)).await.expect("first sync");
    assert_eq!(r1.from_size, 0);
    assert_eq!(r1.to_size, size);
    assert_eq!(r1.entries_verified, size);
    assert_eq!(
        r1.receipts_verified, 6,
        "2 × (submission, acceptance, delivery)"
    );
    assert!(r1.checkpoint.contains(&format!("\n{size}\n")));

    // More activity: the second sync only fetches the new entries.
    let third = w.round_trip(&clinic, &hospital, HOSPITAL).await;
    let pending = w.send(&hospital, CLINIC).await;
    let size2 = w.relay.state.store.log_size().await.unwrap();
    let r2 = bounded(a.sync(false)).await.expect("second sync");
    assert_eq!(r2.from_size, size);
    assert_eq!(r2.to_size, size2);
    assert_eq!(r2.entries_verified, size2 - size);
    assert_eq!(r2.receipts_verified, 5, "3 + submission and acceptance");
    // Nothing new: a third sync verifies nothing and still succeeds; a full
    // one re-verifies everything.
    let r3 = bounded(a.sync(false)).await.expect("idle sync");
    assert_eq!(
        (r3.from_size, r3.to_size, r3.entries_verified),
        (size2, size2, 0)
    );
    let r4 = bounded(a.sync(true)).await.expect("full sync");
    assert_eq!(r4.receipts_verified, 11);

    for eid in ids.iter().chain([&third]) {
        let chain = a.envelope(eid).await.unwrap();
        let purposes: Vec<&str> = chain.iter().map(|(_, p, _, _)| p.as_str()).collect();
        assert_eq!(purposes, ["submission", "acceptance", "delivery"], "{eid}");
        assert_eq!(chain[0].2, CLINIC);
        assert_eq!(chain[1].2, RELAY_ID);
        assert_eq!(chain[2].2, HOSPITAL);
        assert!(chain[0].0 < chain[1].0 && chain[1].0 < chain[2].0);
    }
    let chain = a.envelope(&pending).await.unwrap();
    assert_eq!(chain.len(), 2);

    let report = renkei::audit::report::build(&a, None).await.unwrap();
    let c = &report.facilities[CLINIC];
    let h = &report.facilities[HOSPITAL];
    assert_eq!((c.sent, c.received, c.delivered), (3, 1, 0));
    assert_eq!((h.sent, h.received, h.delivered, h.rejected), (1, 3, 3, 0));
    assert!(report.problems.is_empty());
    assert!(report.overdue.is_empty(), "nothing is 14 days old");

    // The CLI agrees (exit 0) on a fresh auditor.
    let b = w.new_auditor();
    let (code, out, err) = cli_sync(&b, &w.relay.url, false).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("receipts/s"), "{out}");
}

fn write_bundle(dir: &Path, name: &str, b: &ReceiptBundle) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(b).unwrap()).unwrap();
    p
}

async fn receipt_bundles_verify_offline_and_tampering_fails(backend: Backend) {
    let w = World::start(backend).await;
    let (clinic, _hospital, ids) = activity(&w, 2).await;
    bounded(clinic.status(None)).await.expect("status");
    let bundles = clinic.store.bundles(&ids[0]).await.unwrap();
    assert_eq!(bundles.len(), 3, "submission, acceptance, delivery");
    let ca = w.region.ca_pem().as_bytes().to_vec();
    let vkey = relay_verifier(&cert_of(&w.relay_profile)).unwrap().encode();
    for b in &bundles {
        let text = serde_json::to_vec(b).unwrap();
        let v = verify_receipt_file(&text, &ca, &vkey).expect("bundle verifies offline");
        assert_eq!(v.relay.id.to_string(), RELAY_ID);
    }
    let delivery = bundles
        .iter()
        .find(|b| b.signer == HOSPITAL)
        .expect("delivery bundle")
        .clone();
    assert!(!delivery.inclusion.is_empty());
    let check =
        |b: &ReceiptBundle| verify_receipt_file(&serde_json::to_vec(b).unwrap(), &ca, &vkey);

    // An edited receipt body (the signature no longer matches).
    let mut edited = delivery.clone();
    edited.receipt.body = edited.receipt.body.replacen("verified", "rejected", 1);
    assert_ne!(edited.receipt.body, delivery.receipt.body);
    let e = check(&edited).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    // An edited log entry (no longer the leaf the tree commits to).
    let mut entry = delivery.clone();
    entry.entry = entry.entry.replacen("{", "{ ", 1);
    assert!(check(&entry).is_err());
    let mut entry2 = delivery.clone();
    entry2.entry.push(' ');
    let e = check(&entry2).unwrap_err();
    assert!(
        e.contains("not included") || e.contains("does not hold"),
        "{e}"
    );
    // A wrong inclusion hash.
    let mut proof = delivery.clone();
    proof.inclusion[0][0] ^= 1;
    let e = check(&proof).unwrap_err();
    assert!(e.contains("not included"), "{e}");
    // A checkpoint for the same tree signed by another key under the same name.
    let relay_cert = cert_of(&w.relay_profile);
    let rv = relay_verifier(&relay_cert).unwrap();
    let (cp, _) = Checkpoint::open(
        delivery.checkpoint.as_bytes(),
        rv.name(),
        std::slice::from_ref(&rv),
    )
    .unwrap();
    let other_key = Profile::open(&w.recovery).unwrap().signing_key().unwrap();
    let forger = Signer::ed25519(rv.name(), &other_key).unwrap();
    let mut forged = delivery.clone();
    forged.checkpoint = Checkpoint::new(rv.name(), cp.size, cp.root)
        .unwrap()
        .sign(&[&forger])
        .unwrap();
    let e = check(&forged).unwrap_err();
    assert!(e.contains("checkpoint"), "{e}");
    // The wrong verifier key for an honest bundle.
    let wrong_vkey = forger.verifier().encode();
    assert!(
        verify_receipt_file(&serde_json::to_vec(&delivery).unwrap(), &ca, &wrong_vkey).is_err()
    );

    // The CLI: exit 0 for the honest bundle, 3 for a tampered one.
    let dir = w.region.dir();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let vkey_file = dir.join("relay.vkey");
    std::fs::write(&vkey_file, format!("{vkey}\n")).unwrap();
    let run = |file: std::path::PathBuf, vk: String| {
        cli(vec![
            "audit".into(),
            "verify-receipt".into(),
            file.display().to_string(),
            "--ca".into(),
            ca_file.display().to_string(),
            "--relay-vkey".into(),
            vk,
        ])
    };
    let good = write_bundle(dir, "delivery.json", &delivery);
    let (code, out, err) = run(good.clone(), vkey.clone()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK"), "{out}");
    let (code, out, err) = run(good, vkey_file.display().to_string()).await;
    assert_eq!(code, 0, "vkey from a file: {out}{err}");
    for (name, b) in [
        ("body.json", &edited),
        ("entry.json", &entry2),
        ("proof.json", &proof),
        ("forged.json", &forged),
    ] {
        let (code, out, err) = run(write_bundle(dir, name, b), vkey.clone()).await;
        assert_eq!(code, EXIT_VERIFY, "{name}: {out}{err}");
    }
}

async fn edited_receipt_in_database_is_caught(backend: Backend) {
    let w = World::start(backend).await;
    let (_c, _h, ids) = activity(&w, 3).await;
    let before = auditor(&w.new_auditor(), &w.relay.url).await;
    bounded(before.sync(false)).await.expect("clean sync");

    let k = leaf_of(&w, &ids[1], "submission").await;
    let (_, text) = log_entries(&w.db).await.remove(k as usize);
    let forged = text.replacen(HOSPITAL, RECOVERY, 1);
    assert_ne!(forged, text);
    relay_sql(
        &w.db,
        &[(
            "UPDATE log_entries SET entry = $1 WHERE idx = $2",
            vec![SqlArg::S(forged), SqlArg::I(k as i64)],
        )],
    )
    .await;

    // A fresh auditor: the entries do not hash to the signed root.
    let fresh = auditor(&w.new_auditor(), &w.relay.url).await;
    let m = expect_caught(bounded(fresh.sync(false)).await, k, "fresh auditor");
    assert!(m.contains("root"), "{m}");
    assert_eq!(fresh.problems().await.unwrap()[0].1, Some(k as i64));
    // The auditor that verified the log before, re-verifying it all.
    let m = expect_caught(bounded(before.sync(true)).await, k, "full re-sync");
    assert!(m.contains("rewritten") || m.contains("root"), "{m}");
    // The CLI, on another fresh auditor: exit 3.
    let (code, out, err) = cli_sync(&w.new_auditor(), &w.relay.url, false).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    assert!(err.contains(&k.to_string()), "{err}");
}

async fn deleted_entry_is_caught(backend: Backend) {
    let w = World::start(backend).await;
    let (_c, _h, ids) = activity(&w, 3).await;
    let k = leaf_of(&w, &ids[1], "acceptance").await;
    relay_sql(
        &w.db,
        &[(
            "DELETE FROM log_entries WHERE idx = $1",
            vec![SqlArg::I(k as i64)],
        )],
    )
    .await;
    let fresh = auditor(&w.new_auditor(), &w.relay.url).await;
    let m = expect_caught(bounded(fresh.sync(false)).await, k, "deleted entry");
    assert!(
        m.contains("missing") || m.contains("deleted") || m.contains("root"),
        "{m}"
    );
    let (code, out, err) = cli_sync(&w.new_auditor(), &w.relay.url, false).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
}

async fn swapped_entries_are_caught(backend: Backend) {
    let w = World::start(backend).await;
    let (_c, _h, ids) = activity(&w, 3).await;
    let i = leaf_of(&w, &ids[0], "delivery").await;
    let j = leaf_of(&w, &ids[2], "delivery").await;
    assert!(i < j);
    let entries = log_entries(&w.db).await;
    relay_sql(
        &w.db,
        &[
            (
                "UPDATE log_entries SET entry = $1 WHERE idx = $2",
                vec![
                    SqlArg::S(entries[j as usize].1.clone()),
                    SqlArg::I(i as i64),
                ],
            ),
            (
                "UPDATE log_entries SET entry = $1 WHERE idx = $2",
                vec![
                    SqlArg::S(entries[i as usize].1.clone()),
                    SqlArg::I(j as i64),
                ],
            ),
        ],
    )
    .await;
    let fresh = auditor(&w.new_auditor(), &w.relay.url).await;
    expect_caught(bounded(fresh.sync(false)).await, i, "swapped entries");
    let (code, out, err) = cli_sync(&w.new_auditor(), &w.relay.url, false).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
}

async fn truncated_log_is_caught(backend: Backend) {
    let w = World::start(backend).await;
    let (_c, _h, ids) = activity(&w, 3).await;
    let a_dir = w.new_auditor();
    let a = auditor(&a_dir, &w.relay.url).await;
    let full = bounded(a.sync(false)).await.expect("clean sync");
    let k = leaf_of(&w, &ids[1], "submission").await;
    assert!(k < full.to_size);
    truncate_log(&w.db, k).await;
    assert_eq!(w.relay.state.store.log_size().await.unwrap(), k);

    let m = expect_caught(bounded(a.sync(false)).await, k, "truncation");
    assert!(m.contains("truncation") || m.contains("shrank"), "{m}");
    // A fresh auditor sees a smaller, self-consistent log: nothing to catch
    // without memory of the longer one.
    let fresh = auditor(&w.new_auditor(), &w.relay.url).await;
    assert_eq!(bounded(fresh.sync(false)).await.expect("fresh").to_size, k);
    // The CLI on the auditor that saw the longer log: exit 3.
    drop(a);
    let (code, out, err) = cli_sync(&a_dir, &w.relay.url, false).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    assert!(err.contains(&k.to_string()), "{err}");
}

async fn fork_between_two_auditors_is_caught(backend: Backend) {
    let mut w = World::start(backend).await;
    let (_c, _h, _ids) = activity(&w, 2).await;
    let a_dir = w.new_auditor();
    let b_dir = w.new_auditor();
    bounded(auditor(&a_dir, &w.relay.url).await.sync(false))
        .await
        .expect("A before the fork");
    let fork_at = w.relay.state.store.log_size().await.unwrap();

    // Stop the relay, copy its data folder and database, run both.
    let scratch = w.region.dir().join("scratch");
    let scratch_db = TestDb::new(backend, &scratch).await;
    let old = std::mem::replace(
        &mut w.relay,
        RunningRelay::start(&w.relay_profile, &scratch, scratch_db.url()).await,
    );
    old.stop().await;
    let data2 = w.region.dir().join("relay-data-2");
    copy_dir(&w.data, &data2);
    let db2 = w.db.copy(&data2).await;
    let relay1 = RunningRelay::start(&w.relay_profile, &w.data, w.db.url()).await;
    let relay2 = RunningRelay::start(&w.relay_profile, &data2, db2.url()).await;

    // Different activity on each.
    let clinic1 = session_at(&w.clinic, &relay1.url).await;
    let hospital1 = session_at(&w.hospital, &relay1.url).await;
    let eid = w.send(&clinic1, HOSPITAL).await;
    bounded(hospital1.receive(&eid, &w.out_dir()))
        .await
        .unwrap();
    let recovery2 = session_at(&w.recovery, &relay2.url).await;
    let other = w
        .region
        .profile(OTHER, renkei::identity::Kind::Clinic, "ひがし診療所");
    let other2 = session_at(&other, &relay2.url).await;
    bounded(other2.publish()).await.unwrap();
    let _ = w.send(&recovery2, OTHER).await;

    let a = auditor(&a_dir, &relay1.url).await;
    let b = auditor(&b_dir, &relay2.url).await;
    bounded(a.sync(false)).await.expect("A syncs relay 1");
    bounded(b.sync(false)).await.expect("B syncs relay 2");
    // Comparing stores names the first diverging leaf.
    let m = expect_caught(a.compare(&b_dir.join("audit.db")).await, fork_at, "compare");
    assert!(m.contains("fork"), "{m}");
    // A shown relay 2's tree: not consistent with what it accepted.
    let a2 = auditor(&a_dir, &relay2.url).await;
    let m = expect_caught(bounded(a2.sync(false)).await, fork_at, "A against relay 2");
    assert!(m.contains("consistent") || m.contains("different"), "{m}");
    // The CLI: compare and sync both exit 3.
    let (code, out, err) = cli(vec![
        "audit".into(),
        "compare".into(),
        "--profile".into(),
        a_dir.display().to_string(),
        b_dir.join("audit.db").display().to_string(),
    ])
    .await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    let (code, out, err) = cli_sync(&b_dir, &relay1.url, false).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    relay1.stop().await;
    relay2.stop().await;
}

async fn facility_keeps_evidence_of_a_truncated_log(backend: Backend) {
    let w = World::start(backend).await;
    let (clinic, hospital, _ids) = activity(&w, 1).await;
    bounded(clinic.status(None)).await.expect("status");
    let origin = relay_verifier(&cert_of(&w.relay_profile))
        .unwrap()
        .name()
        .to_string();
    let size1 = w.relay.state.store.log_size().await.unwrap();
    let (kept, _) = clinic
        .store
        .latest_checkpoint(&origin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, size1);

    // Later activity not involving the clinic's envelope; the clinic sees
    // the grown log through check_checkpoint.
    let later = w.send(&hospital, RECOVERY).await;
    let k = leaf_of(&w, &later, "submission").await;
    let (_, note) = w
        .relay
        .state
        .store
        .latest_checkpoint()
        .await
        .unwrap()
        .unwrap();
    let relay_cert = cert_of(&w.relay_profile);
    let cp = bounded(clinic.check_checkpoint(&note, &relay_cert))
        .await
        .expect("consistent");
    assert!(cp.size > size1);
    let (kept, _) = clinic
        .store
        .latest_checkpoint(&origin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, cp.size);
    assert!(clinic.store.evidence().await.unwrap().is_empty());

    // The relay drops the later entries.
    truncate_log(&w.db, k).await;
    let err = bounded(clinic.status(None))
        .await
        .expect_err("truncation noticed");
    assert!(matches!(err, OpError::Relay(_)), "{err:?}");
    let ev = clinic.store.evidence().await.unwrap();
    assert!(!ev.is_empty());
    assert!(ev[0].2.contains(&format!("\n{k}\n")) || ev[0].3.contains(&format!("\n{k}\n")));
}

async fn entry_tiles_serve_entries_exactly_as_stored(backend: Backend) {
    // The relay reads a tile's entries joined by newlines; an entry that
    // holds one (the relay never writes one) must still come out whole.
    let w = World::start(backend).await;
    let (_c, _h, ids) = activity(&w, 2).await;
    let k = leaf_of(&w, &ids[1], "submission").await;
    let (_, text) = log_entries(&w.db).await.remove(k as usize);
    let edited = text.replacen(",", ",\n", 2);
    assert_eq!(edited.matches('\n').count(), 2);
    relay_sql(
        &w.db,
        &[(
            "UPDATE log_entries SET entry = $1 WHERE idx = $2",
            vec![SqlArg::S(edited), SqlArg::I(k as i64)],
        )],
    )
    .await;
    let stored: Vec<String> = log_entries(&w.db).await.into_iter().map(|e| e.1).collect();
    let a = auditor(&w.new_auditor(), &w.relay.url).await;
    let size = stored.len() as u64;
    let tile = TilePath::at_size(TileKind::Entries, 0, size).expect("tile");
    let resp = bounded(a.client.send(
        hyper::Method::GET,
        &format!("/v1/log/{}", tile.path()),
        &[],
        renkei::client::http::empty(),
    ))
    .await
    .expect("tile request");
    let (status, body, _) = RelayClient::read(resp, 1 << 20).await.expect("tile");
    assert_eq!(status, 200);
    let served = tiles::parse_entry_bundle(&body).expect("bundle");
    assert_eq!(served.len(), stored.len());
    for (i, (got, want)) in served.iter().zip(&stored).enumerate() {
        assert_eq!(*got, want.as_bytes(), "entry {i}");
    }
    // And a tile without such an entry, after the edited one is put back.
    relay_sql(
        &w.db,
        &[(
            "UPDATE log_entries SET entry = $1 WHERE idx = $2",
            vec![SqlArg::S(text), SqlArg::I(k as i64)],
        )],
    )
    .await;
    bounded(a.sync(false))
        .await
        .expect("the log as written syncs");
}

on_both_backends!(
    entry_tiles_serve_entries_exactly_as_stored,
    clean_log_syncs_incrementally_and_reports,
    receipt_bundles_verify_offline_and_tampering_fails,
    edited_receipt_in_database_is_caught,
    deleted_entry_is_caught,
    swapped_entries_are_caught,
    truncated_log_is_caught,
    fork_between_two_auditors_is_caught,
    facility_keeps_evidence_of_a_truncated_log,
);
