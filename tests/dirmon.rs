//! Directory self-monitoring against a real relay (in process, loopback
//! mutual TLS, on SQLite and on PostgreSQL: every test runs as
//! `NAME::sqlite` and `NAME::postgres`): a certificate for a facility's ID
//! that it did not publish (issued with a copy of the CA folder, the
//! "compromised CA" case) is reported to the facility (`renkei directory
//! monitor`, exit 3) while a renewal is not; the auditor's report names the
//! ID that got a new key; `renkei ca reconcile` finds the certificate the
//! CA never recorded (exit 3) and is quiet when the log and index.json
//! agree; a relay that alters a directory leaf is caught; the directory
//! table of the relay is filled for a database from before it existed.

#[macro_use]
mod both_backends;
mod relay_support;

use std::fs;
use std::path::Path;

use relay_support::*;
use renkei::audit::sync::Auditor;
use renkei::client::ops::OpError;
use renkei::identity::Kind;
use renkei::pki::CertInfo;
use renkei::profile::Profile;
use sqlx::Connection;

const EXIT_VERIFY: i32 = 3;

/// Run the renkei binary; (exit status, stdout, stderr).
async fn cli(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_renkei"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run renkei")
    })
    .await
    .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn args(v: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    v.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

async fn monitor_cli(w: &World, profile: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut a = args(&[
        &"directory",
        &"monitor",
        &"--profile",
        &profile,
        &"--relay",
        &w.relay.url,
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    cli(a).await
}

async fn reconcile_cli(w: &World, ca: &Path) -> (i32, String, String) {
    cli(args(&[
        &"ca",
        &"reconcile",
        &"--ca",
        &ca,
        &"--profile",
        &w.auditor,
        &"--relay",
        &w.relay.url,
    ]))
    .await
}

/// Issue the profile's request again with the region's CA and install it
/// (a renewal: same keys, new certificate).
fn renew(w: &World, profile: &Path) -> CertInfo {
    let mut p = Profile::open(profile).unwrap();
    let csr = fs::read(p.path(Profile::REQUEST)).unwrap();
    let req = renkei::pki::request::parse(&csr).unwrap();
    let cert = w.region.ca.issue(&req, 800).unwrap();
    p.install(Some(cert.as_bytes()), None, None, None).unwrap();
    CertInfo::parse_pem(cert.as_bytes(), "renewed").unwrap()
}

async fn a_certificate_the_facility_never_published_is_reported(backend: Backend) {
    let w = World::start(backend).await;
    let ca_dir = w.region.dir().join("ca");
    let clinic = w.session(&w.clinic).await;
    let hospital = w.session(&w.hospital).await;
    for s in [&clinic, &hospital] {
        bounded(s.publish()).await.expect("publish");
    }
    // Clean: the clinic's own certificate is no alert; log and records agree.
    let r = bounded(clinic.monitor_directory()).await.expect("monitor");
    assert!(r.alerts.is_empty(), "{r:?}");
    assert_eq!(r.leaves_read, 2);
    let (code, out, err) = monitor_cli(&w, &w.clinic, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no certificate for 1311234569"), "{out}");
    let (code, out, err) = reconcile_cli(&w, &ca_dir).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 certificates"), "{out}");

    // A renewal through the normal path (same keys) raises nothing.
    let renewed = renew(&w, &w.clinic);
    let clinic = w.session(&w.clinic).await;
    bounded(clinic.publish()).await.expect("publish renewal");
    let r = bounded(clinic.monitor_directory()).await.expect("monitor");
    assert_eq!(r.leaves_read, 1, "only the renewal is new: {r:?}");
    assert!(r.alerts.is_empty(), "a renewal is no alert: {r:?}");

    // Someone with the CA key issues a certificate in the clinic's name
    // for their own keys and publishes it.
    let stolen = w.region.stolen_ca();
    let imp = w
        .region
        .impostor(&stolen, CLINIC, Kind::Clinic, "さくら内科クリニック");
    let imp_cert = CertInfo::parse_pem(&fs::read(imp.join("cert.pem")).unwrap(), "x").unwrap();
    let imp_session = w.session(&imp).await;
    bounded(imp_session.publish())
        .await
        .expect("the relay logs it");
    let size = w.relay.state.store.log_size().await.unwrap();

    let r = bounded(clinic.monitor_directory()).await.expect("monitor");
    assert_eq!(r.new_alerts, 1, "{r:?}");
    assert_eq!(r.alerts.len(), 1);
    let a = &r.alerts[0];
    assert!(a.active && r.has_active_alert());
    assert_eq!(a.serial, imp_cert.serial);
    assert_eq!(a.fingerprint, imp_cert.fingerprint);
    assert_eq!(a.facility_id, CLINIC);
    assert_eq!(a.log_index, size - 1);
    assert_ne!(a.fingerprint, renewed.fingerprint);
    // Kept as evidence with its proof and checkpoint.
    let (ev,): (String,) =
        sqlx::query_as("SELECT checkpoint FROM directory_alerts WHERE log_index = ?")
            .bind(a.log_index as i64)
            .fetch_one(
                &mut sqlx::SqliteConnection::connect(&format!(
                    "sqlite://{}",
                    w.clinic.join("store.db").display()
                ))
                .await
                .unwrap(),
            )
            .await
            .unwrap();
    assert!(ev.contains(&format!("\n{size}\n")), "{ev}");
    // Not the hospital's business.
    let r = bounded(hospital.monitor_directory())
        .await
        .expect("monitor");
    assert!(r.alerts.is_empty(), "{r:?}");

    // The CLI says so on every run until it is dealt with: exit 3.
    for _ in 0..2 {
        let (code, out, err) = monitor_cli(&w, &w.clinic, &[]).await;
        assert_eq!(code, EXIT_VERIFY, "{out}{err}");
        assert!(out.contains("ALERT: still valid"), "{out}");
        assert!(out.contains(&imp_cert.serial), "{out}");
        assert!(out.contains(&imp_cert.fingerprint), "{out}");
        assert!(
            out.contains(&format!("log index:    {}", size - 1)),
            "{out}"
        );
        assert!(err.contains("tell the CA"), "{err}");
    }
    let (code, out, _) = monitor_cli(&w, &w.clinic, &["--json"]).await;
    assert_eq!(code, EXIT_VERIFY);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["alerts"][0]["serial"], imp_cert.serial.as_str());
    assert_eq!(v["alerts"][0]["active"], true);

    // The auditor names the ID that got a new key (not the renewal).
    let auditor = bounded(Auditor::open(&w.auditor, Some(&w.relay.url)))
        .await
        .unwrap();
    bounded(auditor.sync(false)).await.expect("audit sync");
    let report = renkei::audit::report::build(&auditor, None).await.unwrap();
    assert_eq!(report.key_changes.len(), 1, "{:?}", report.key_changes);
    assert_eq!(report.key_changes[0].facility_id, CLINIC);
    assert_eq!(report.key_changes[0].serial, imp_cert.serial);
    assert_eq!(
        report.key_changes[0].previous_fingerprint,
        renewed.fingerprint
    );
    let (code, out, err) = cli(args(&[
        &"audit",
        &"report",
        &"--profile",
        &w.auditor,
        &"--relay",
        &w.relay.url,
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("IDs that got a new key (check each with the facility): 1")
            && out.contains(&format!("  {CLINIC} leaf {}", size - 1)),
        "{out}"
    );

    // The operator's records do not know it: reconcile exits 3 naming it.
    let (code, out, err) = reconcile_cli(&w, &ca_dir).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    assert!(
        out.contains(&imp_cert.serial) && out.contains("not in index.json"),
        "{out}"
    );
    assert!(!out.contains(&renewed.serial), "{out}");
    // An edited index.json (an entry with another key) is found too.
    let copy = w.region.dir().join("ca-edited");
    fs::create_dir_all(&copy).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(ca_dir.join("index.json")).unwrap()).unwrap();
    let entries = index["issued"].as_array_mut().unwrap();
    let mut forged = entries[0].clone();
    forged["serial"] = imp_cert.serial.clone().into();
    forged["id"] = CLINIC.into();
    entries.push(forged);
    fs::write(copy.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let (code, out, err) = reconcile_cli(&w, &copy).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    assert!(out.contains("with other contents"), "{out}");

    // The operator revokes it (ca revoke records it) and publishes a CRL:
    // the alert is no longer active (exit 0, still listed) ...
    let imp_pem = imp.join("cert.pem");
    let (code, out, err) = cli(args(&[
        &"ca", &"revoke", &"--ca", &ca_dir, &"--cert", &imp_pem,
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let crl = w.region.crl();
    bounded(clinic.publish_crl(crl.as_bytes()))
        .await
        .expect("crl");
    let (code, out, err) = monitor_cli(&w, &w.clinic, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("no longer valid") && out.contains("revoked"),
        "{out}"
    );
    // ... and the reconciliation agrees with the log again.
    let (code, out, err) = reconcile_cli(&w, &ca_dir).await;
    assert_eq!(code, 0, "{out}{err}");
    // Acknowledged, it is not listed any more; acknowledging it twice fails.
    let idx = (size - 1).to_string();
    let (code, out, err) = monitor_cli(&w, &w.clinic, &["--acknowledge", &idx]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no certificate for"), "{out}");
    let (code, _, err) = monitor_cli(&w, &w.clinic, &["--acknowledge", &idx]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no alert at log index"), "{err}");
}

async fn an_altered_directory_leaf_is_caught(backend: Backend) {
    let w = World::start(backend).await;
    let clinic = w.session(&w.clinic).await;
    bounded(clinic.publish()).await.expect("publish");
    let hospital = w.session(&w.hospital).await;
    bounded(hospital.publish()).await.expect("publish");
    // The relay rewrites the clinic's leaf (another published_at).
    let mut conn = w.db.connect().await;
    let (entry,): (String,) = sqlx::query_as("SELECT entry FROM log_entries WHERE idx = 0")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let altered = entry.replace("\"published_at\":\"2", "\"published_at\":\"1");
    assert_ne!(altered, entry);
    sqlx::query("UPDATE log_entries SET entry = $1 WHERE idx = 0")
        .bind(&altered)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = bounded(hospital.monitor_directory())
        .await
        .expect_err("an altered leaf does not prove");
    assert!(
        matches!(&err, OpError::Relay(m) if m.contains("directory leaf 0")),
        "{err:?}"
    );
    let (code, out, err) = monitor_cli(&w, &w.hospital, &[]).await;
    assert_eq!(code, EXIT_VERIFY, "{out}{err}");
    assert!(err.contains("relay misbehaviour"), "{err}");
}

async fn directory_leaves_of_an_older_database_are_found(backend: Backend) {
    let mut w = World::start(backend).await;
    let clinic = w.session(&w.clinic).await;
    bounded(clinic.publish()).await.expect("publish");
    let hospital = w.session(&w.hospital).await;
    bounded(hospital.publish()).await.expect("publish");
    let doc = w.file("referral.json", DOCUMENT.as_bytes());
    bounded(clinic.send(request(&[HOSPITAL], doc, Vec::new()), |_, _| {}))
        .await
        .expect("send");
    // Back to the schema before the directory table, then restart: the
    // migration finds the certificate leaf among the entries.
    let mut conn = w.db.connect().await;
    sqlx::query("DROP TABLE log_directory")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 4")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    w.restart().await;
    let recovery = w.session(&w.recovery).await;
    bounded(recovery.publish()).await.expect("publish");
    let hospital = w.session(&w.hospital).await;
    let (cp, _) = bounded(hospital.verified_checkpoint())
        .await
        .unwrap()
        .expect("a checkpoint");
    let leaves = bounded(hospital.directory_leaves(0, &cp)).await.unwrap();
    let idx: Vec<u64> = leaves.iter().map(|l| l.index).collect();
    assert_eq!(
        idx,
        vec![0, 1, cp.size - 1],
        "two old certificate leaves and the new one, no receipts"
    );
    assert!(leaves[2].entry.contains(RECOVERY));
    // From an index, below a size: only those.
    let later = bounded(hospital.directory_leaves(1, &cp)).await.unwrap();
    assert_eq!(later.len(), 2);
    assert!(cp.size > 3, "receipts were logged between");
}

on_both_backends!(
    a_certificate_the_facility_never_published_is_reported,
    an_altered_directory_leaf_is_caught,
    directory_leaves_of_an_older_database_are_found,
);
