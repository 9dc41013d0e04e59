//! Regenerates the committed seed corpus in `fuzz/seeds/<target>/` from the
//! demo region in `keys-example/`:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Sealed packages contain random UUIDs and age keys, so every run writes
//! different (equally good) bytes; only rerun it when the formats change.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use renkei::package::{self, Limits, MemberSource, OpenError, PackageKind};
use renkei::pki::{ca::Ca, CertInfo};
use renkei_fuzz::{decrypt, der_first_element, keys_dir, Profile, REGION};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

fn target_dir(target: &str) -> PathBuf {
    let d = seeds_dir().join(target);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("seed folder");
    d
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn prefixed(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(bytes);
    v
}

fn pem_der(pem_bytes: &[u8]) -> Vec<u8> {
    pem::parse(pem_bytes).expect("PEM").into_contents()
}

const DOCUMENT: &str = r#"{
  "resourceType": "Composition",
  "status": "final",
  "type": {"text": "診療情報提供書"},
  "subject": {"display": "患者 太郎 (1960-04-01, 男)"},
  "title": "紹介状",
  "section": [
    {"title": "紹介目的", "text": "精査加療のお願い"},
    {"title": "傷病名", "text": "2型糖尿病、高血圧症"},
    {"title": "現在の処方", "text": "メトホルミン 500mg 2錠 分2"}
  ]
}
"#;

fn mem(path: &str, media: &str, bytes: Vec<u8>) -> MemberSource<'static> {
    MemberSource {
        path: path.into(),
        media_type: media.into(),
        size: bytes.len() as u64,
        reader: Box::new(io::Cursor::new(bytes)),
    }
}

fn seal(
    from: &Profile,
    to: &Profile,
    sender_copy: bool,
    kind: PackageKind,
    reply_to: Option<&package::Manifest>,
    attachments: Vec<MemberSource<'static>>,
) -> (Vec<u8>, package::Manifest) {
    let r = &*REGION;
    let sender_cert = r.trust.verify(&from.cert.der, Some(r.at)).expect("sender");
    let recipient = r.trust.verify(&to.cert.der, Some(r.at)).expect("recipient");
    let mut out = Vec::new();
    let sealed = package::seal(
        package::SealRequest {
            sender_key: &from.key,
            sender_cert: &sender_cert,
            sender_copy,
            recipients: &[recipient],
            kind,
            thread_id: reply_to.map(|m| m.thread_id.clone()),
            in_reply_to: reply_to.map(|m| m.package_id.clone()),
            document: mem(
                package::DOCUMENT_PATH,
                "application/fhir+json",
                DOCUMENT.as_bytes().to_vec(),
            ),
            attachments,
            limits: Limits::default(),
        },
        &mut out,
    )
    .expect("seal");
    (out, sealed.manifest)
}

/// The data of `name` in a tar stream.
fn tar_member(tar_bytes: &[u8], name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.path_bytes().as_ref() == name.as_bytes() {
            let mut v = Vec::new();
            e.read_to_end(&mut v).expect("read");
            return v;
        }
    }
    panic!("no {name} in the package");
}

fn main() {
    let r = &*REGION;
    let clinic = r.profile("clinic");
    let hospital = r.profile("hospital");
    let recovery = r.profile("recovery-hospital");

    // facility_id
    let d = target_dir("facility_id");
    for (name, s) in [
        ("clinic", "1311234569"),
        ("hospital", "1317654323"),
        ("recovery", "1315555555"),
        ("hokkaido", "0110113719"),
        ("bad-check-digit", "0110113718"),
        ("bad-prefecture", "4810113719"),
        ("bad-table", "0120113719"),
        ("short", "123"),
        ("letters", "01101137a9"),
        ("fullwidth", "４８１０１１３７１９"),
        ("service", "relay-1"),
        ("empty", ""),
    ] {
        put(&d, name, s.as_bytes());
    }

    // member_path
    let d = target_dir("member_path");
    for (i, s) in [
        "document.json",
        "sender.crt",
        "manifest.json",
        "manifest.sig",
        "attachments/検査結果.pdf",
        "attachments/a b.png",
        "attachments/../../etc/passwd",
        "attachments/.hidden",
        "attachments//x",
        "/etc/passwd",
        "attachments\\x",
        "attachments/a\u{7}",
    ]
    .iter()
    .enumerate()
    {
        put(&d, &format!("path-{i:02}"), s.as_bytes());
    }

    // certificate
    let d = target_dir("certificate");
    for p in &r.profiles {
        put(&d, &format!("{}.pem", p.name), &p.cert_pem);
    }
    put(&d, "hospital.der", &hospital.cert.der);
    put(&d, "relay.der", &r.profile("relay").cert.der);
    put(&d, "ca.pem", &r.ca_pem);

    // request
    let d = target_dir("request");
    for p in &r.profiles {
        let csr = fs::read(keys_dir().join(p.name).join("request.csr")).expect("csr");
        let der = pem_der(&csr);
        let cri = der_first_element(&der).expect("CRI");
        put(&d, &format!("{}.csr", p.name), &csr);
        put(&d, &format!("{}.cri-signed", p.name), &prefixed(cri));
        if p.name == "hospital" {
            put(&d, "hospital.der", &der);
        }
    }

    // crl_truststore
    let d = target_dir("crl_truststore");
    let crl_der = pem_der(&r.crl_pem);
    // Re-signing a genuine TBS gives back the genuine CRL (Ed25519 is deterministic).
    assert_eq!(
        renkei_fuzz::ed25519_signed(der_first_element(&crl_der).expect("TBS"), &r.ca_key),
        crl_der
    );
    put(&d, "crl.pem", &r.crl_pem);
    put(&d, "crl.der", &crl_der);
    put(
        &d,
        "crl.tbs-signed",
        &prefixed(der_first_element(&crl_der).expect("TBS")),
    );
    {
        // A CRL revoking the clinic, from a scratch copy of the demo CA.
        let tmp = tempfile::tempdir().expect("tmp");
        let ca_dir = tmp.path().join("ca");
        fs::create_dir_all(ca_dir.join("issued")).expect("mkdir");
        for f in ["ca.crt", "ca.key", "index.json"] {
            fs::copy(keys_dir().join("ca").join(f), ca_dir.join(f)).expect("copy CA");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(ca_dir.join("ca.key"), fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        let ca = Ca::open(&ca_dir).expect("open CA");
        let info = CertInfo::parse(&clinic.cert.der, "clinic").expect("clinic");
        ca.revoke(&info).expect("revoke");
        let pem = ca.crl(36500).expect("crl");
        let der = pem_der(pem.as_bytes());
        put(&d, "crl-revoked.pem", pem.as_bytes());
        put(
            &d,
            "crl-revoked.tbs-signed",
            &prefixed(der_first_element(&der).expect("TBS")),
        );
    }

    // Packages.
    let lab = fs::read(keys_dir().join("../examples/demo/lab-results.csv")).expect("lab csv");
    let (referral, referral_manifest) = seal(
        clinic,
        hospital,
        true,
        PackageKind::Referral,
        None,
        vec![mem(
            "attachments/検査結果.csv",
            "text/csv; charset=utf-8",
            lab,
        )],
    );
    let (reply, reply_manifest) = seal(
        hospital,
        clinic,
        true,
        PackageKind::Reply,
        Some(&referral_manifest),
        vec![],
    );
    let (elsewhere, _) = seal(clinic, recovery, false, PackageKind::Transfer, None, vec![]);
    // The fixtures must behave as the targets expect.
    renkei_fuzz::open_as_hospital(&referral).expect("the hospital opens the referral");
    renkei_fuzz::open_as_hospital(&reply).expect("the hospital opens its own copy");
    assert!(matches!(
        renkei_fuzz::open_as_hospital(&elsewhere),
        Err(OpenError::NotEncryptedForUs)
    ));

    let d = target_dir("package_open");
    put(&d, "referral.age", &referral);
    put(&d, "reply-own-copy.age", &reply);
    put(&d, "not-for-us.age", &elsewhere);

    let referral_tar = decrypt(&referral, &hospital.age);
    let reply_tar = decrypt(&reply, &hospital.age);
    let elsewhere_tar = decrypt(&elsewhere, &recovery.age);
    assert!(matches!(
        renkei_fuzz::open_as_hospital(&renkei_fuzz::encrypt_to_hospital(&elsewhere_tar)),
        Err(OpenError::NotAddressedToUs { .. })
    ));
    // The fix-up of the package_inner target leaves a genuine package as it is.
    for t in [&referral_tar, &reply_tar, &elsewhere_tar] {
        let mut fixed = t.clone();
        renkei_fuzz::fix_up_tar(&mut fixed);
        assert!(fixed == *t, "fix_up_tar changed a genuine package");
    }
    let d = target_dir("package_inner");
    for (name, t) in [
        ("referral", &referral_tar),
        ("reply-own-copy", &reply_tar),
        ("not-addressed", &elsewhere_tar),
    ] {
        put(&d, &format!("{name}.tar"), t);
        put(&d, &format!("{name}.tar-fixup"), &prefixed(t));
    }

    let d = target_dir("manifest");
    put(
        &d,
        "referral.json",
        &tar_member(&referral_tar, package::MANIFEST_PATH),
    );
    put(
        &d,
        "reply.json",
        &tar_member(&reply_tar, package::MANIFEST_PATH),
    );
    assert_eq!(
        package::Manifest::parse(&tar_member(&reply_tar, package::MANIFEST_PATH))
            .expect("manifest"),
        reply_manifest
    );

    println!("seeds written to {}", seeds_dir().display());
}
