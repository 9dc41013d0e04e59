//! Benchmark helper (bench/audit-sync.sh): create a region (CA, relay,
//! two facilities, an auditor) under OUT and fill the relay's SQLite log
//! with N real receipts, straight through the relay's store (the same
//! `accept` / `add_outcome` calls the HTTP handlers make, each appending to
//! the Merkle log and signing a checkpoint): for every envelope a
//! submission signed by the clinic, the relay's acceptance, and a delivery
//! receipt signed by the hospital. No ciphertext is stored: the log only
//! commits to receipts.
//!
//!   cargo run --release --example fill_log -- OUT [N]     (N default 100000)
//!
//! Leaves OUT/{ca,relay,clinic,hospital,auditor,data}.

use std::path::Path;

use renkei::identity::Kind;
use renkei::pki::ca::Ca;
use renkei::profile::Profile;
use renkei::receipt::{self, Delivery, Outcome, Purpose, SignedReceipt, Submission};
use renkei::relay::checkpoint::CheckpointSigner;
use renkei::relay::sequencer::LogConfig;
use renkei::relay::store::Store;

const CLINIC: &str = "1311234569";
const HOSPITAL: &str = "1317654323";

fn profile(ca: &Ca, crl: &str, dir: &Path, id: &str, kind: Kind, name: &str) -> Profile {
    let dns: Vec<String> = if kind == Kind::Relay {
        vec!["localhost".into()]
    } else {
        Vec::new()
    };
    let mut p = Profile::create(dir, id, kind, name, &dns).expect("profile");
    let csr = std::fs::read(p.path(Profile::REQUEST)).expect("request");
    let req = renkei::pki::request::parse(&csr).expect("request parses");
    let cert = ca.issue(&req, 730).expect("issue");
    p.install(
        Some(cert.as_bytes()),
        Some(ca.cert_pem().as_bytes()),
        Some(crl.as_bytes()),
        None,
    )
    .expect("install");
    Profile::open(dir).expect("reopen")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().expect("usage: fill_log OUT [N]"));
    let n: u64 = args
        .next()
        .map(|s| s.parse().expect("N"))
        .unwrap_or(100_000);
    std::fs::create_dir_all(&out).expect("mkdir");
    let ca = Ca::init(&out.join("ca"), "ベンチ地域医療連携ネットワーク CA", 3650).expect("ca");
    let crl = ca.crl(30).expect("crl");
    let relay = profile(
        &ca,
        &crl,
        &out.join("relay"),
        "relay-1",
        Kind::Relay,
        "ベンチ中継",
    );
    let clinic = profile(
        &ca,
        &crl,
        &out.join("clinic"),
        CLINIC,
        Kind::Clinic,
        "ベンチ内科",
    );
    let hospital = profile(
        &ca,
        &crl,
        &out.join("hospital"),
        HOSPITAL,
        Kind::Hospital,
        "ベンチ病院",
    );
    profile(
        &ca,
        &crl,
        &out.join("auditor"),
        "audit-1",
        Kind::Auditor,
        "ベンチ監査人",
    );

    let relay_cert = relay.certificate().expect("relay cert");
    let relay_key = std::sync::Arc::new(relay.signing_key().expect("relay key"));
    let origin = renkei::receipt::bundle::log_origin(&relay_cert);
    let store = Store::open(&out.join("data"), None)
        .await
        .expect("store")
        .start_log(LogConfig {
            relay_id: relay_cert.id.to_string(),
            receipt_key: relay_key.clone(),
            checkpoints: CheckpointSigner::new(origin, relay_key),
            key_from_size: 0,
            expiry_after_secs: 14 * 24 * 3600,
            batch_max_jobs: 256,
            batch_wait: std::time::Duration::ZERO,
            witnesses: None,
        });

    let clinic_cert = clinic.certificate().expect("cert");
    let clinic_key = clinic.signing_key().expect("key");
    let hospital_cert = hospital.certificate().expect("cert");
    let hospital_key = hospital.signing_key().expect("key");
    for c in [&clinic_cert, &hospital_cert] {
        store
            .directory_put(
                &c.id.to_string(),
                c.kind.as_str(),
                &c.name,
                &c.pem(),
                &c.fingerprint,
            )
            .await
            .expect("directory");
    }

    let t0 = std::time::Instant::now();
    let envelopes = n.div_ceil(3);
    let mut receipts = 0u64;
    for i in 0..envelopes {
        // A tiny stand-in ciphertext, stored first as the upload route does
        // (accept checks that the blob is there).
        let content = format!("bench envelope {i}");
        let envelope_id = renkei::pki::sha256_hex(content.as_bytes());
        let mut staged = store
            .blobs()
            .stage(&envelope_id, content.len() as u64)
            .await
            .expect("stage");
        staged.write(content.as_bytes()).await.expect("write");
        staged.commit(&envelope_id).await.expect("commit blob");
        let sub = Submission {
            envelope_id: envelope_id.clone(),
            size: content.len() as u64,
            sender: CLINIC.parse().expect("id"),
            sender_cert_sha256: clinic_cert.fingerprint.clone(),
            recipients: vec![HOSPITAL.parse().expect("id")],
            submitted_at: receipt::now_rfc3339(),
        };
        let signed = SignedReceipt::sign(Purpose::Submission, &sub, &clinic_key);
        store.accept(&signed, &sub).await.expect("accept");
        let d = Delivery {
            envelope_id: envelope_id.clone(),
            recipient: HOSPITAL.parse().expect("id"),
            outcome: Outcome::Verified,
            reason: None,
            delivered_at: receipt::now_rfc3339(),
        };
        let signed = SignedReceipt::sign(Purpose::Delivery, &d, &hospital_key);
        let added = store
            .add_outcome(&envelope_id, HOSPITAL, "delivered", &signed)
            .await
            .expect("outcome");
        assert!(added.is_some());
        receipts += 3;
        if (i + 1) % 10_000 == 0 {
            eprintln!(
                "  {} receipts ({:.0}/s)",
                receipts,
                receipts as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    let size = store.log_size().await.expect("size");
    println!(
        "filled: {receipts} receipts, log size {size}, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
