//! Regenerates the committed seed corpus in `fuzz/seeds/<target>/` from the
//! demo region in `keys-example/`:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Sealed packages contain random UUIDs and age keys, so every run writes
//! different (equally good) bytes; only rerun it when the formats change.
//! With `-- --check` it only runs its self-checks of the fuzz fixtures
//! (seal, open, fix-up, re-signing) and writes nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use renkei::package::{self, Limits, MemberSource, OpenError, PackageKind};
use renkei::pki::{ca::Ca, CertInfo};
use renkei_fuzz::{decrypt, der_first_element, keys_dir, Profile, REGION};

fn check_only() -> bool {
    std::env::args().any(|a| a == "--check")
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// The seed folder of `target`, emptied except for `regression-*` files
/// (inputs that once crashed the target, kept by hand).
fn target_dir(target: &str) -> PathBuf {
    let d = seeds_dir().join(target);
    if check_only() {
        return d;
    }
    fs::create_dir_all(&d).expect("seed folder");
    for e in fs::read_dir(&d).expect("seed folder") {
        let p = e.expect("entry").path();
        let keep = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("regression-"));
        if !keep {
            fs::remove_file(&p).expect("remove old seed");
        }
    }
    d
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    if check_only() {
        return;
    }
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

/// A valid JP-CLINS document for a package from `from` to `to`: the example
/// form of the kind with the facilities, attachments and in-reply-to
/// replaced (sealing validates the document against the package).
fn document(
    from: &CertInfo,
    to: &CertInfo,
    kind: PackageKind,
    attachments: &[MemberSource<'static>],
    reply_to: Option<&package::Manifest>,
) -> Vec<u8> {
    use renkei::document::{build_json, form::AttachmentForm, BuildOptions, DocKind, Form};
    let kind = DocKind::try_from(kind).unwrap_or(DocKind::Referral);
    let path = keys_dir().join(format!("../examples/{kind}.toml"));
    let text = fs::read_to_string(&path).expect("example form");
    let mut form = Form::from_toml(&text).expect("example form parses");
    form.from.facility_id = from
        .facility_id()
        .expect("sender")
        .to_string()
        .parse()
        .expect("ID");
    let mut dest = form.to.take().unwrap_or_else(|| form.from.clone());
    dest.facility_id = to
        .facility_id()
        .expect("recipient")
        .to_string()
        .parse()
        .expect("ID");
    form.to = Some(dest);
    form.attachments = attachments
        .iter()
        .map(|a| {
            let file = a.path.trim_start_matches("attachments/").to_string();
            AttachmentForm {
                title: format!("添付 {file}"),
                file,
            }
        })
        .collect();
    form.in_reply_to = None;
    let opts = BuildOptions {
        in_reply_to: reply_to.map(|m| m.package_id.clone()),
        ..BuildOptions::default()
    };
    build_json(kind, &form, &opts).expect("example document builds")
}

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
    let doc = document(&sender_cert, &recipient, kind, &attachments, reply_to);
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
            document: mem(package::DOCUMENT_PATH, "application/fhir+json", doc),
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
    // ... and after a same-length edit of the manifest, the re-signature
    // gets opening past the signature check to the member checks.
    {
        let sha = &referral_manifest.members[0].sha256;
        let pos = referral_tar
            .windows(sha.len())
            .position(|w| w == sha.as_bytes())
            .expect("document hash in the manifest");
        let mut edited = referral_tar.clone();
        edited[pos] = if edited[pos] == b'0' { b'1' } else { b'0' };
        let enc = |t: &[u8]| renkei_fuzz::encrypt_to_hospital(t);
        assert!(matches!(
            renkei_fuzz::open_as_hospital(&enc(&edited)),
            Err(OpenError::BadSignature)
        ));
        renkei_fuzz::fix_up_tar(&mut edited);
        let r = renkei_fuzz::open_as_hospital(&enc(&edited));
        assert!(matches!(r, Err(OpenError::MemberMismatch { .. })), "{r:?}");
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

    // document: the demo documents, the sealed one, and one per example form.
    let d = target_dir("document");
    for f in ["referral.json", "reply.json"] {
        let b = fs::read(keys_dir().join("../examples/demo").join(f)).expect("demo document");
        put(&d, &format!("demo-{f}"), &b);
    }
    let region = &*REGION;
    let small = document(
        &region
            .trust
            .verify(&clinic.cert.der, Some(region.at))
            .expect("clinic"),
        &region
            .trust
            .verify(&hospital.cert.der, Some(region.at))
            .expect("hospital"),
        PackageKind::Referral,
        &[],
        None,
    );
    put(&d, "small.json", &small);
    for e in fs::read_dir(keys_dir().join("../examples")).expect("examples") {
        let path = e.expect("entry").path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let Ok(kind) = stem.parse::<renkei::document::DocKind>() else {
            continue;
        };
        let form = renkei::document::Form::from_bytes(&fs::read(&path).expect("form"));
        for (format, suffix) in [
            (renkei::document::Family::JpClins, ""),
            (renkei::document::Family::Standard, ".ereferral"),
        ] {
            let opts = renkei::document::BuildOptions {
                format,
                ..renkei::document::BuildOptions::default()
            };
            match form
                .clone()
                .and_then(|f| renkei::document::build_json(kind, &f, &opts))
            {
                Ok(json) => put(&d, &format!("{stem}{suffix}.json"), &json),
                Err(e) => eprintln!("warning: {}: {e:?}", path.display()),
            }
        }
    }
    // PDF letters in both families, and the guides' own examples.
    let letter = renkei::document::LetterForm::from_bytes(
        &fs::read(keys_dir().join("../examples/letter.toml")).expect("letter form"),
    )
    .expect("letter form");
    for (format, suffix) in [
        (renkei::document::Family::JpClins, ""),
        (renkei::document::Family::Standard, ".ereferral"),
    ] {
        let opts = renkei::document::BuildOptions {
            format,
            ..renkei::document::BuildOptions::default()
        };
        let json = renkei::document::build_letter_json(
            renkei::document::DocKind::Referral,
            &letter,
            "紹介状.pdf",
            &opts,
        )
        .expect("letter builds");
        put(&d, &format!("letter{suffix}.json"), &json);
    }
    for (name, file) in [
        (
            "guide-jp-clins-referral-example-01.json",
            "jp-clins/Bundle-Bundle-CLINS-Referral-Example-01.json",
        ),
        (
            "guide-ereferral-example-01.json",
            "ereferral/Bundle-BundleReferralExample01.json",
        ),
    ] {
        let b =
            fs::read(keys_dir().join("../tests/data/documents").join(file)).expect("guide example");
        put(&d, name, &b);
    }

    // receipt
    let d = target_dir("receipt");
    {
        use renkei::receipt::*;
        let relay = r.profile("relay");
        let envelope_id = "0f".repeat(32);
        let sub = Submission {
            envelope_id: envelope_id.clone(),
            size: referral.len() as u64,
            sender: clinic.cert.facility_id().expect("facility").clone(),
            sender_cert_sha256: clinic.cert.fingerprint.clone(),
            recipients: vec![r.hospital_id.clone()],
            submitted_at: "2026-11-27T09:00:00Z".into(),
        };
        let sub_r = SignedReceipt::sign(Purpose::Submission, &sub, &clinic.key);
        let acc = Acceptance {
            envelope_id: envelope_id.clone(),
            submission_sha256: sub_r.body_sha256(),
            relay: "relay-1".into(),
            accepted_at: "2026-11-27T09:00:01Z".into(),
            log_index: 7,
        };
        let acc_r = SignedReceipt::sign(Purpose::Acceptance, &acc, &relay.key);
        let del = Delivery {
            envelope_id: envelope_id.clone(),
            recipient: r.hospital_id.clone(),
            outcome: Outcome::Rejected,
            reason: Some("bad-signature".into()),
            delivered_at: "2026-11-27T09:05:00Z".into(),
        };
        let del_r = SignedReceipt::sign(Purpose::Delivery, &del, &hospital.key);
        let exp = Expiry {
            envelope_id,
            recipient: r.hospital_id.clone(),
            relay: "relay-1".into(),
            expired_at: "2026-12-27T09:00:00Z".into(),
        };
        let exp_r = SignedReceipt::sign(Purpose::Expiry, &exp, &relay.key);
        for (name, rc) in [
            ("submission", &sub_r),
            ("acceptance", &acc_r),
            ("delivery", &del_r),
            ("expiry", &exp_r),
        ] {
            put(
                &d,
                &format!("{name}.json"),
                &serde_json::to_vec(rc).expect("json"),
            );
        }
        let entries = [
            LogEntry::Receipt {
                signer: clinic.cert.id.to_string(),
                receipt: sub_r.clone(),
            },
            LogEntry::Certificate {
                facility_id: r.hospital_id.to_string(),
                certificate: String::from_utf8(hospital.cert_pem.clone()).expect("PEM"),
                published_at: "2026-11-27T08:00:00Z".into(),
            },
            LogEntry::Crl {
                crl_number: "1".into(),
                crl: String::from_utf8(r.crl_pem.clone()).expect("PEM"),
                published_at: "2026-11-27T08:00:00Z".into(),
            },
        ];
        for (i, e) in entries.iter().enumerate() {
            put(&d, &format!("log-entry-{i}.json"), e.to_text().as_bytes());
        }

        // log
        use renkei::log::{merkle, tiles, Checkpoint, Signer, TilePath};
        let d = target_dir("log");
        let texts: Vec<String> = entries.iter().map(LogEntry::to_text).collect();
        let leaves: Vec<merkle::Hash> = texts
            .iter()
            .map(|t| merkle::leaf_hash(t.as_bytes()))
            .collect();
        let root = merkle::node_hash(&merkle::node_hash(&leaves[0], &leaves[1]), &leaves[2]);
        let origin = "relay.demo.invalid/log";
        let signer = Signer::ed25519(origin, &relay.key).expect("signer");
        let cp = Checkpoint::new(origin, 3, root).expect("checkpoint");
        put(&d, "checkpoint.txt", cp.to_text().expect("text").as_bytes());
        put(
            &d,
            "checkpoint-signed.txt",
            cp.sign(&[&signer]).expect("sign").as_bytes(),
        );
        put(&d, "vkey.txt", signer.verifier().encode().as_bytes());
        put(
            &d,
            "tile-path.txt",
            TilePath::hashes(1, 1234, 256)
                .expect("tile")
                .path()
                .as_bytes(),
        );
        put(
            &d,
            "entries-path.txt",
            TilePath::entries(5, 17).expect("tile").path().as_bytes(),
        );
        put(
            &d,
            "entry-bundle.bin",
            &tiles::encode_entry_bundle(&texts).expect("bundle"),
        );
        put(&d, "tile.bin", &tiles::encode_tile(&leaves).expect("tile"));
        put(&d, "proof.bin", &merkle::encode_proof(&leaves[..2]));
        let next = renkei::keys::SigningKey::generate();
        let transition = renkei::receipt::key_transition::KeyTransition::new(
            origin,
            signer.verifier(),
            Signer::ed25519(origin, &next).expect("signer").verifier(),
            "2026-12-01T22:00:00Z",
        )
        .expect("transition");
        put(&d, "key-transition.json", transition.to_text().as_bytes());
    }

    if check_only() {
        println!("fixture self-checks passed; nothing written");
    } else {
        println!("seeds written to {}", seeds_dir().display());
    }
}
