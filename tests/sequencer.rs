//! Several relay instances on one PostgreSQL database (issue #6): any
//! instance accepts submissions and serves any inbox, and the transparency
//! log stays one tree — one sequencer at a time (the PostgreSQL advisory
//! lock), no duplicate or missing index, and every checkpoint, whichever
//! instance signed or serves it, consistent with every other.
//!
//! Two relays run in this process, each with its own port and its own
//! store (pool, cached append state), on one fresh PostgreSQL database and
//! one shared data folder (tests/relay_support/backend.rs).

mod relay_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use relay_support::*;
use renkei::api::SubmitResponse;
use renkei::client::RelayClient;
use renkei::identity::{FacilityId, Kind};
use renkei::log::merkle::{self, ConsistencyProof, MemoryTree};
use renkei::log::{Checkpoint, Hash};
use renkei::profile::Profile;
use renkei::receipt::bundle::relay_verifier;
use renkei::receipt::{Acceptance, LogEntry, Purpose, SignedReceipt, Submission};
use renkei::relay::checkpoint::CheckpointSigner;
use renkei::relay::sequencer::{Accepted, LogConfig};
use renkei::relay::store::Store;
use renkei::relay::RelayConfig;
use sqlx::Row;

/// Bound on a whole concurrent burst.
const BURST: Duration = Duration::from_secs(180);

/// Two relay instances on one PostgreSQL database and one data folder.
struct Pair {
    region: Region,
    relay_profile: PathBuf,
    data: PathBuf,
    clinic: PathBuf,
    hospital: PathBuf,
    recovery: PathBuf,
    a: RunningRelay,
    b: RunningRelay,
    /// Last: dropped after both relays.
    db: TestDb,
}

impl Pair {
    async fn start() -> Pair {
        init_tracing();
        let region = Region::new("テスト地域医療連携ネットワーク CA");
        let relay_profile = region.profile(RELAY_ID, Kind::Relay, "テスト地域 中継サーバ");
        let clinic = region.profile(CLINIC, Kind::Clinic, "さくら内科クリニック");
        let hospital = region.profile(HOSPITAL, Kind::Hospital, "市立中央病院");
        let recovery = region.profile(
            RECOVERY,
            Kind::RecoveryHospital,
            "みなみ回復期リハビリテーション病院",
        );
        let data = region.dir().join("relay-data");
        let db = TestDb::new(Backend::Postgres, &data).await;
        // Both start at once on the fresh database (migrations race too).
        // CRLs published through one instance reach the other within 1 s.
        // (No per-facility quotas: the bursts below send 120 at once.)
        let config = RelayConfig {
            crl_refresh_secs: 1,
            quota_concurrent_uploads: 0,
            quota_uploads_per_day: 0,
            ..RelayConfig::default()
        };
        let (a, b) = tokio::join!(
            RunningRelay::start(&relay_profile, &data, db.url(), config.clone()),
            RunningRelay::start(&relay_profile, &data, db.url(), config.clone()),
        );
        assert!(!data.join("relay.db").exists(), "both relays on PostgreSQL");
        Pair {
            region,
            relay_profile,
            data,
            clinic,
            hospital,
            recovery,
            a,
            b,
            db,
        }
    }

    fn client(&self, profile: &Path, relay: &RunningRelay) -> RelayClient {
        let p = Profile::open(profile).expect("profile");
        RelayClient::new(&p, Some(&relay.url)).expect("client")
    }

    async fn session(&self, profile: &Path, relay: &RunningRelay) -> renkei::client::ops::Session {
        bounded(renkei::client::ops::Session::open(
            profile,
            Some(&relay.url),
        ))
        .await
        .expect("session open")
    }

    /// The relay's checkpoint verifier.
    fn verifier(&self) -> renkei::log::Verifier {
        relay_verifier(&cert_of(&self.relay_profile)).expect("verifier")
    }

    /// The relay's log signer, for driving a store directly.
    fn signing_key(&self) -> renkei::keys::SigningKey {
        Profile::open(&self.relay_profile)
            .expect("profile")
            .signing_key()
            .expect("key")
    }
}

/// The newest checkpoint an instance serves, verified: (size, root).
async fn checkpoint_of(client: &RelayClient, verifier: &renkei::log::Verifier) -> (u64, Hash) {
    let (status, _, body) = raw(client, Method::GET, "/v1/log/checkpoint", &[], Vec::new()).await;
    assert_eq!(status, 200, "checkpoint: {}", text(&body));
    let (c, _) = Checkpoint::open(&body, verifier.name(), std::slice::from_ref(verifier))
        .expect("checkpoint verifies");
    (c.size, c.root)
}

/// A consistency proof served by an instance.
async fn consistency_from(client: &RelayClient, from: u64, to: u64) -> Vec<Hash> {
    let path = format!("/v1/log/proof/consistency?from={from}&to={to}");
    let (status, _, body) = raw(client, Method::GET, &path, &[], Vec::new()).await;
    assert_eq!(status, 200, "consistency {from}..{to}: {}", text(&body));
    let p: ConsistencyProof = serde_json::from_slice(&body).expect("proof json");
    assert_eq!((p.size1, p.size2), (from, to));
    p.hashes
}

/// Check, straight from the shared database, that the log is one tree:
/// indices 0..n each exactly once, every stored node and every stored
/// checkpoint (one per batch, whichever instance signed it, the last one
/// of the whole tree) agreeing with the tree recomputed from the entries.
/// Returns the entries.
async fn assert_one_tree(db: &TestDb, verifier: &renkei::log::Verifier) -> Vec<String> {
    let mut conn = db.connect().await;
    let rows = sqlx::query("SELECT idx, entry FROM log_entries ORDER BY idx")
        .fetch_all(&mut conn)
        .await
        .expect("entries");
    let n = rows.len() as u64;
    let indices: Vec<u64> = rows.iter().map(|r| r.get::<i64, _>(0) as u64).collect();
    assert_eq!(indices, (0..n).collect::<Vec<_>>(), "no gap, no duplicate");
    let entries: Vec<String> = rows.iter().map(|r| r.get::<String, _>(1)).collect();
    for (i, e) in entries.iter().enumerate() {
        LogEntry::parse(e.as_bytes()).unwrap_or_else(|err| panic!("entry {i}: {err}"));
    }
    let tree = MemoryTree::from_entries(&entries);

    let nodes = sqlx::query("SELECT level, idx, hash FROM log_nodes")
        .fetch_all(&mut conn)
        .await
        .expect("nodes");
    let mut per_level: BTreeMap<u8, usize> = BTreeMap::new();
    for r in &nodes {
        let (level, idx, hash) = (
            r.get::<i64, _>(0) as u8,
            r.get::<i64, _>(1) as usize,
            r.get::<String, _>(2),
        );
        let want = tree.level(level).get(idx).map(hex::encode);
        assert_eq!(
            want.as_deref(),
            Some(hash.as_str()),
            "stored node ({level}, {idx}) is not the recomputed one"
        );
        *per_level.entry(level).or_default() += 1;
    }
    for (level, count) in per_level {
        assert_eq!(count, tree.level(level).len(), "nodes at level {level}");
    }

    let checkpoints = sqlx::query("SELECT size, note FROM log_checkpoints ORDER BY size")
        .fetch_all(&mut conn)
        .await
        .expect("checkpoints");
    let sizes: Vec<u64> = checkpoints
        .iter()
        .map(|r| r.get::<i64, _>(0) as u64)
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] < w[1]) && sizes.last() == Some(&n),
        "one checkpoint per batch, growing, the last of the whole tree: {sizes:?}"
    );
    for r in &checkpoints {
        let note: String = r.get(1);
        let (c, _) = Checkpoint::open(
            note.as_bytes(),
            verifier.name(),
            std::slice::from_ref(verifier),
        )
        .expect("stored checkpoint verifies");
        assert_eq!(
            c.root,
            tree.root_at(c.size).expect("root"),
            "checkpoint at {}",
            c.size
        );
    }
    use sqlx::Connection;
    conn.close().await.expect("close");
    entries
}

/// (envelope ID, purpose) → log index of every receipt in the log, each
/// pair exactly once.
fn receipts_in(entries: &[String]) -> HashMap<(String, Purpose), (u64, SignedReceipt)> {
    let mut out = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Ok(LogEntry::Receipt { receipt, .. }) = LogEntry::parse(e.as_bytes()) {
            let key = (receipt.envelope_id(), receipt.purpose);
            let old = out.insert(key.clone(), (i as u64, receipt));
            assert!(old.is_none(), "{key:?} logged twice");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_serve_one_region_and_one_log() {
    let p = Pair::start().await;
    let verifier = p.verifier();
    let relay_key = cert_of(&p.relay_profile).signing_key;

    // Publishing through either instance: one directory.
    let clinic_a = p.session(&p.clinic, &p.a).await;
    let recovery_b = p.session(&p.recovery, &p.b).await;
    let hospital_b = p.session(&p.hospital, &p.b).await;
    let (r1, r2, r3) = tokio::join!(
        bounded(clinic_a.publish()),
        bounded(recovery_b.publish()),
        bounded(hospital_b.publish())
    );
    r1.expect("clinic publishes on A");
    r2.expect("recovery publishes on B");
    r3.expect("hospital publishes on B");
    let hospital_cert = bounded(clinic_a.directory_show(&HOSPITAL.parse::<FacilityId>().unwrap()))
        .await
        .expect("A serves what B published");

    // Seal the packages first (CPU), half from the clinic, half from the
    // recovery hospital, all to the hospital.
    const N: usize = 120;
    let dir = p.region.dir().join("sealed");
    fs::create_dir_all(&dir).unwrap();
    let mut jobs = Vec::new();
    for i in 0..N {
        let sender = if i % 2 == 0 {
            p.clinic.clone()
        } else {
            p.recovery.clone()
        };
        let cert = hospital_cert.clone();
        let file = dir.join(format!("{i}.age"));
        jobs.push(tokio::task::spawn_blocking(move || {
            let sealed = seal_to_file(&sender, &[cert], &file);
            (
                sender,
                file,
                hex::encode(sealed.envelope_id),
                sealed.ciphertext_size,
            )
        }));
    }
    let mut packages = Vec::new();
    for j in jobs {
        packages.push(j.await.expect("seal"));
    }
    let first = checkpoint_of(&p.client(&p.clinic, &p.b), &verifier).await;

    // Submit them all at once, spread over both instances; meanwhile watch
    // the checkpoints both instances serve.
    let clients: Vec<(RelayClient, RelayClient)> = [&p.clinic, &p.recovery]
        .iter()
        .map(|s| (p.client(s, &p.a), p.client(s, &p.b)))
        .collect();
    let fingerprints = [
        cert_of(&p.clinic).fingerprint,
        cert_of(&p.recovery).fingerprint,
    ];
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (ca, cb) = (p.client(&p.hospital, &p.a), p.client(&p.hospital, &p.b));
        let verifier = verifier.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(("A", checkpoint_of(&ca, &verifier).await));
                seen.push(("B", checkpoint_of(&cb, &verifier).await));
            }
            seen
        })
    };
    let submits = packages
        .iter()
        .enumerate()
        .map(|(i, (sender, file, eid, size))| {
            let who = i % 2;
            let (sender_id, fp) = (if who == 0 { CLINIC } else { RECOVERY }, &fingerprints[who]);
            let on_b = (i / 2) % 2 == 1;
            let client = if on_b {
                &clients[who].1
            } else {
                &clients[who].0
            };
            async move {
                let s = submission(sender, eid, *size, sender_id, fp, &[HOSPITAL]);
                let (status, _, body) = raw(
                    client,
                    Method::POST,
                    "/v1/envelopes",
                    &[submission_header(&s)],
                    fs::read(file).expect("sealed file"),
                )
                .await;
                assert_eq!(status, 201, "submission {i}: {}", text(&body));
                let r: SubmitResponse = serde_json::from_slice(&body).expect("submit json");
                (i, on_b, r.acceptance)
            }
        });
    let accepted = tokio::time::timeout(BURST, futures_util::future::join_all(submits))
        .await
        .expect("the burst ends in time");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = bounded(watch).await.expect("watcher");
    assert!(accepted.iter().any(|(_, on_b, _)| *on_b));
    assert!(accepted.iter().any(|(_, on_b, _)| !*on_b));

    // One log: 3 certificates, then a submission and an acceptance each.
    let n = 3 + 2 * N as u64;
    assert_eq!(p.a.state.store.log_size().await.unwrap(), n);
    assert_eq!(p.b.state.store.log_size().await.unwrap(), n);
    let entries = assert_one_tree(&p.db, &verifier).await;
    let tree = MemoryTree::from_entries(&entries);
    let logged = receipts_in(&entries);
    let mut indices = HashSet::new();
    for (i, _, acceptance) in &accepted {
        acceptance
            .verify(&relay_key)
            .expect("acceptance signed by the relay");
        let acc: Acceptance = acceptance.parse(Purpose::Acceptance).expect("acceptance");
        let eid = &packages[*i].2;
        assert_eq!(&acc.envelope_id, eid);
        let (sub_idx, sub) = &logged[&(eid.clone(), Purpose::Submission)];
        assert_eq!(
            *sub_idx, acc.log_index,
            "acceptance names its submission's leaf"
        );
        assert_eq!(sub.body_sha256(), acc.submission_sha256);
        let (acc_idx, logged_acc) = &logged[&(eid.clone(), Purpose::Acceptance)];
        assert_eq!(
            logged_acc, acceptance,
            "the acceptance sent is the one logged"
        );
        assert!(indices.insert(*sub_idx) && indices.insert(*acc_idx));
    }
    assert_eq!(indices.len(), 2 * N);

    // Checkpoints from both instances: the same at the end, and every one
    // seen during the burst consistent with it (proof from the other one).
    let (ca, cb) = (p.client(&p.clinic, &p.a), p.client(&p.clinic, &p.b));
    let end_a = checkpoint_of(&ca, &verifier).await;
    let end_b = checkpoint_of(&cb, &verifier).await;
    assert_eq!(end_a, end_b);
    assert_eq!(end_a, (n, tree.root()));
    assert!(seen.len() >= 2, "checkpoints were watched");
    let mut by_size: HashMap<u64, Hash> = HashMap::new();
    for (from, (size, root)) in std::iter::once(("B", first)).chain(seen) {
        if let Some(other) = by_size.insert(size, root) {
            assert_eq!(other, root, "two roots at size {size}");
        }
        assert_eq!(root, tree.root_at(size).unwrap(), "{from} at {size}");
        let other = if from == "A" { &cb } else { &ca };
        let proof = consistency_from(other, size, n).await;
        merkle::verify_consistency(size, n, &proof, &root, &end_a.1)
            .unwrap_or_else(|e| panic!("{from}'s checkpoint at {size} is not consistent: {e}"));
    }

    // The hospital's inbox on B lists everything, whichever instance took
    // it; ciphertext accepted by A downloads intact from B and vice versa.
    let inbox = bounded(hospital_b.inbox()).await.expect("inbox on B");
    let listed: HashSet<&str> = inbox.iter().map(|e| e.envelope_id.as_str()).collect();
    for (_, _, eid, _) in &packages {
        assert!(listed.contains(eid.as_str()), "{eid} in the inbox on B");
    }
    let (ha, hb) = (p.client(&p.hospital, &p.a), p.client(&p.hospital, &p.b));
    for (i, on_b, _) in accepted.iter().take(8) {
        let (_, file, eid, _) = &packages[*i];
        let (status, _, body) = raw(
            if *on_b { &ha } else { &hb },
            Method::GET,
            &format!("/v1/envelopes/{eid}"),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(status, 200, "download {eid}: {}", text(&body));
        assert_eq!(&body[..], &fs::read(file).unwrap()[..], "{eid} intact");
    }
    // A full receive on B of a package A accepted: decrypted, verified,
    // and its delivery receipt logged on the same tree (seen through A).
    let (i, _, _) = accepted.iter().find(|(_, on_b, _)| !*on_b).unwrap();
    let eid = &packages[*i].2;
    let got = bounded(hospital_b.receive(eid, &p.region.dir().join("out")))
        .await
        .expect("receive on B what A accepted");
    for m in &got.manifest.members {
        let b = fs::read(got.folder.join(&m.path)).unwrap();
        assert_eq!(renkei::pki::sha256_hex(&b), m.sha256, "{}", m.path);
    }
    let entries = assert_one_tree(&p.db, &verifier).await;
    assert_eq!(entries.len() as u64, n + 1);
    assert!(receipts_in(&entries).contains_key(&(eid.clone(), Purpose::Delivery)));
    let after = checkpoint_of(&ca, &verifier).await;
    assert_eq!(after.0, n + 1);
    let proof = consistency_from(&ca, n, n + 1).await;
    merkle::verify_consistency(n, n + 1, &proof, &end_b.1, &after.1).expect("consistent");

    // The same package uploaded to both instances at once: accepted once
    // (201 from one, the same acceptance with 200 from the other), logged
    // once.
    let fp = &fingerprints[0];
    for k in 0..4 {
        let file = dir.join(format!("twice-{k}.age"));
        let sealed = seal_to_file(&p.clinic, std::slice::from_ref(&hospital_cert), &file);
        let (eid, size) = (hex::encode(sealed.envelope_id), sealed.ciphertext_size);
        let bytes = fs::read(&file).unwrap();
        let s = submission(&p.clinic, &eid, size, CLINIC, fp, &[HOSPITAL]);
        let header = [submission_header(&s)];
        let ((s1, _, b1), (s2, _, b2)) = tokio::join!(
            raw(
                &clients[0].0,
                Method::POST,
                "/v1/envelopes",
                &header,
                bytes.clone()
            ),
            raw(&clients[0].1, Method::POST, "/v1/envelopes", &header, bytes),
        );
        let mut statuses = [s1, s2];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "{}{}", text(&b1), text(&b2));
        let r1: SubmitResponse = serde_json::from_slice(&b1).unwrap();
        let r2: SubmitResponse = serde_json::from_slice(&b2).unwrap();
        assert_eq!(r1.acceptance, r2.acceptance);
    }
    let entries = assert_one_tree(&p.db, &verifier).await;
    assert_eq!(entries.len() as u64, n + 1 + 2 * 4);
    receipts_in(&entries);

    let Pair { a, b, .. } = p;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_racing_to_sequence_keep_one_tree() {
    let p = Pair::start().await;
    let verifier = p.verifier();
    // Two more stores on the same database, driven directly, besides the
    // two running relays: four sequencers, each with its own cache.
    let key = Arc::new(p.signing_key());
    let origin = renkei::receipt::bundle::log_origin(&cert_of(&p.relay_profile));
    let log = LogConfig {
        relay_id: RELAY_ID.into(),
        receipt_key: key.clone(),
        checkpoints: CheckpointSigner::new(origin, key.clone()),
        key_from_size: 0,
        expiry_after_secs: 3600,
        batch_max_jobs: 8,
        batch_wait: Duration::from_millis(1),
        witnesses: None,
    };
    let stores = [
        p.a.state.store.clone(),
        p.b.state.store.clone(),
        Store::open(&p.data, p.db.url())
            .await
            .expect("store 3")
            .start_log(log.clone()),
        Store::open(&p.data, p.db.url())
            .await
            .expect("store 4")
            .start_log(log.clone()),
    ];
    let clinic_key = Arc::new(
        Profile::open(&p.clinic)
            .unwrap()
            .signing_key()
            .expect("clinic key"),
    );
    let clinic_fp = cert_of(&p.clinic).fingerprint;

    // Each store in turn: certificates (one leaf per transaction) and
    // acceptances (two leaves per transaction), all at once.
    const PER_STORE: usize = 30;
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for k in 0..PER_STORE {
            let (store, clinic_key, fp) = (store.clone(), clinic_key.clone(), clinic_fp.clone());
            tasks.push(tokio::spawn(async move {
                if k % 2 == 0 {
                    let id = format!("race-{s}-{k}");
                    let leaf = store
                        .directory_put(&id, "clinic", "競合", "PEM", "fp")
                        .await
                        .expect("directory put")
                        .expect("a new certificate is logged");
                    vec![leaf.log_index]
                } else {
                    // The ciphertext is stored first, as the upload route does.
                    let content = format!("race-{s}-{k}");
                    let eid = renkei::pki::sha256_hex(content.as_bytes());
                    let mut staged = store
                        .blobs()
                        .stage(&eid, content.len() as u64)
                        .await
                        .expect("stage");
                    staged.write(content.as_bytes()).await.expect("write");
                    staged.commit(&eid).await.expect("commit blob");
                    let sub = Submission {
                        envelope_id: eid,
                        size: content.len() as u64,
                        sender: CLINIC.parse().unwrap(),
                        sender_cert_sha256: fp,
                        recipients: vec![HOSPITAL.parse().unwrap()],
                        submitted_at: renkei::receipt::now_rfc3339(),
                    };
                    let signed = SignedReceipt::sign(Purpose::Submission, &sub, &clinic_key);
                    let Accepted::New { acceptance, leaf } =
                        store.accept(&signed, &sub).await.expect("accept")
                    else {
                        panic!("a new envelope was not accepted as new");
                    };
                    let acc: Acceptance = acceptance.parse(Purpose::Acceptance).unwrap();
                    assert_eq!(leaf.log_index, acc.log_index + 1);
                    vec![acc.log_index, acc.log_index + 1]
                }
            }));
        }
    }
    let mut indices = Vec::new();
    let all = tokio::time::timeout(BURST, futures_util::future::join_all(tasks))
        .await
        .expect("the race ends in time");
    for t in all {
        indices.extend(t.expect("task"));
    }
    let n = (stores.len() * PER_STORE / 2 * 3) as u64;
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..n).collect::<Vec<_>>(),
        "each index handed out once"
    );
    for s in &stores {
        assert_eq!(s.log_size().await.unwrap(), n);
        let (size, _) = s.latest_checkpoint().await.unwrap().unwrap();
        assert_eq!(size, n);
    }
    let entries = assert_one_tree(&p.db, &verifier).await;
    assert_eq!(entries.len() as u64, n);

    // Every store's proofs (from its own, possibly stale, cache) agree.
    let tree = MemoryTree::from_entries(&entries);
    for (s, store) in stores.iter().enumerate() {
        for size in [1, n / 3, n / 2, n - 1] {
            let proof = store.consistency_proof(size, n).await.unwrap();
            merkle::verify_consistency(size, n, &proof, &tree.root_at(size).unwrap(), &tree.root())
                .unwrap_or_else(|e| panic!("store {s}, {size}..{n}: {e}"));
        }
    }
    // And a store that raced keeps appending on the same tree.
    let idx = stores[2]
        .directory_put("race-last", "clinic", "最後", "PEM2", "fp2")
        .await
        .unwrap()
        .expect("logged")
        .log_index;
    assert_eq!(idx, n);
    assert_one_tree(&p.db, &verifier).await;
    for s in &stores[2..] {
        s.pool().close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crl_published_through_one_instance_reaches_the_other() {
    let p = Pair::start().await;
    let ca = p.region.ca_der();
    let creds = |profile: &Path| Some((cert_of(profile).der, key_der_of(profile)));
    // Both instances let the recovery hospital in.
    for relay in [&p.a, &p.b] {
        raw_tls_health(relay.port, &ca, creds(&p.recovery))
            .await
            .expect("served before revocation");
    }
    // The CA revokes it; the clinic publishes the CRL through A only.
    let older = p.region.crl();
    let newer = p.region.revoke(&p.recovery);
    let clinic_a = p.session(&p.clinic, &p.a).await;
    assert!(
        bounded(clinic_a.publish_crl(newer.as_bytes()))
            .await
            .unwrap()
            >= 3
    );
    // A refuses the revoked certificate at once, B within a few seconds.
    let r = raw_tls_health(p.a.port, &ca, creds(&p.recovery)).await;
    assert!(
        matches!(&r, Err(e) if e.contains("CertificateRevoked")),
        "A: {r:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = raw_tls_health(p.b.port, &ca, creds(&p.recovery)).await;
        match r {
            Err(e) if e.contains("CertificateRevoked") => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "B still serves the revoked certificate: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // B serves the newer CRL, and refuses to go back to an older one.
    let (status, _, body) = raw(
        &p.client(&p.hospital, &p.b),
        Method::GET,
        "/v1/crl",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        crl_number_of(p.region.ca_pem(), &body),
        crl_number_of(p.region.ca_pem(), newer.as_bytes())
    );
    let clinic_b = p.session(&p.clinic, &p.b).await;
    let err = bounded(clinic_b.publish_crl(older.as_bytes()))
        .await
        .expect_err("an older CRL is refused");
    assert!(err.to_string().contains("409"), "{err}");
    // The revoked facility's own client says why it is refused.
    let revoked = p.client(&p.recovery, &p.b);
    let err = bounded(revoked.send(
        Method::GET,
        "/v1/health",
        &[],
        renkei::client::http::empty(),
    ))
    .await
    .map(|r| r.status)
    .expect_err("refused");
    assert!(err.to_string().contains("revoked"), "{err}");
}
