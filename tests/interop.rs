//! Stock tools agree with renkei: OpenSSL verifies and reads the
//! certificates and keys, Debian's Go `age` decrypts a sealed package and
//! GNU tar lists it. These tools are required: CI installs them; a machine
//! without them fails here with the command to install them.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use renkei::identity::Kind;

const BIN: &str = env!("CARGO_BIN_EXE_renkei");

/// Run a stock tool; fail with installation advice if it is missing.
fn tool(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(name);
    for a in args {
        c.arg(a);
    }
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{name}` is not on PATH; the interoperability tests need it. \
             Install it first: `apt-get update && apt-get install -y age openssl tar` \
             (CI's .ci/run does this)"
        ),
        Err(e) => panic!("cannot run {name}: {e}"),
    };
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

macro_rules! tool {
    ($name:expr; $($a:expr),* $(,)?) => {
        tool($name, &[$(&$a as &dyn AsRef<std::ffi::OsStr>),*], None)
    };
}

#[track_caller]
fn ok(name: &str, o: Output) -> String {
    assert!(
        o.status.success(),
        "{name} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A region with the CA certificate and a facility certificate in files.
fn region_files() -> (Region, Facility, std::path::PathBuf, std::path::PathBuf) {
    let region = Region::new();
    let f = region.facility(HOSPITAL, Kind::RegionalSupportHospital, "みなと総合病院");
    let ca = region.path().join("ca.crt");
    let crt = region.path().join("facility.crt");
    fs::write(&ca, region.ca_pem()).unwrap();
    fs::write(&crt, &f.cert_pem).unwrap();
    (region, f, ca, crt)
}

#[test]
fn openssl_verify_accepts_a_facility_certificate() {
    let (region, _f, ca, crt) = region_files();
    let out = ok(
        "openssl verify",
        tool!("openssl"; "verify", "-CAfile", ca, crt),
    );
    assert!(out.trim_end().ends_with(": OK"), "{out}");

    // With the CRL, too.
    let crl = region.path().join("crl.pem");
    fs::write(&crl, region.crl()).unwrap();
    ok(
        "openssl verify -crl_check",
        tool!("openssl"; "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, crt),
    );

    // A certificate of another CA is refused by openssl as well.
    let other = Region::named(CA_NAME);
    let g = other.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let foreign = region.path().join("foreign.crt");
    fs::write(&foreign, &g.cert_pem).unwrap();
    let o = tool!("openssl"; "verify", "-CAfile", ca, foreign);
    assert!(
        !o.status.success(),
        "openssl accepted a foreign certificate"
    );
}

#[test]
fn openssl_verify_sees_a_revocation() {
    let (region, f, ca, crt) = region_files();
    let crl = region.path().join("crl.pem");
    fs::write(&crl, region.revoke(&f)).unwrap();
    let o = tool!("openssl"; "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, crt);
    assert!(
        !o.status.success(),
        "openssl accepted a revoked certificate"
    );
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("certificate revoked"), "{text}");
}

#[test]
fn openssl_x509_shows_the_facility_id_and_age_recipient() {
    let (_region, f, ca, crt) = region_files();
    let text = ok(
        "openssl x509",
        tool!("openssl"; "x509", "-in", crt, "-noout", "-text"),
    );
    assert!(
        text.contains(&format!("URI:urn:renkei:facility:{HOSPITAL}")),
        "{text}"
    );
    assert!(text.contains("2.25.7046431728351929657.1"), "{text}");
    assert!(text.contains("2.25.7046431728351929657.2"), "{text}");
    let recipient = f.recipient().to_string();
    assert!(text.contains(&recipient), "{text}");
    assert!(text.contains("regional-support-hospital"), "{text}");
    assert!(text.contains("ED25519"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");

    let ca_text = ok(
        "openssl x509 (CA)",
        tool!("openssl"; "x509", "-in", ca, "-noout", "-text"),
    );
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
}

#[test]
fn openssl_pkey_reads_the_signing_key() {
    let (_region, f, _ca, crt) = region_files();
    let key = f.profile.path(renkei::profile::Profile::SIGNING_KEY);
    let pubkey = ok(
        "openssl pkey",
        tool!("openssl"; "pkey", "-in", key, "-pubout"),
    );
    assert!(pubkey.contains("BEGIN PUBLIC KEY"), "{pubkey}");
    // It is the key the certificate certifies.
    let cert_pub = ok(
        "openssl x509 -pubkey",
        tool!("openssl"; "x509", "-in", crt, "-noout", "-pubkey"),
    );
    assert_eq!(pubkey.trim(), cert_pub.trim());
    let text = ok(
        "openssl pkey -text",
        tool!("openssl"; "pkey", "-in", key, "-noout", "-text"),
    );
    assert!(text.contains("ED25519 Private-Key"), "{text}");
}

fn age_decrypt(identity: &Path, pkg: &Path) -> Vec<u8> {
    let o = tool!("age"; "-d", "-i", identity, pkg);
    assert!(
        o.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn age_decrypts_and_tar_lists_in_order() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let (bytes, sealed) = seal_with(
        &clinic,
        &[&hospital],
        vec![
            mem("attachments/lab-results.csv", "item,value\nHbA1c,7.2\n"),
            mem("attachments/検査結果.pdf", b"%PDF-1.4 test".to_vec()),
        ],
        true,
    );
    let pkg = region.path().join("referral.age");
    fs::write(&pkg, &bytes).unwrap();

    for f in [&hospital, &clinic] {
        let plain = age_decrypt(&f.profile.path(renkei::profile::Profile::AGE_KEY), &pkg);
        let o = tool("tar", &[&"-t", &"--quoting-style=literal"], Some(&plain));
        let listing = ok("tar -t", o);
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            vec![
                "document.json",
                "attachments/lab-results.csv",
                "attachments/検査結果.pdf",
                "sender.crt",
                "manifest.json",
                "manifest.sig",
            ]
        );
        // GNU tar extracts it, and the manifest it finds is the signed one.
        let x = region.path().join(format!("x-{}", f.id));
        fs::create_dir(&x).unwrap();
        let o = tool("tar", &[&"-x", &"-C", &x], Some(&plain));
        ok("tar -x", o);
        let m: renkei::package::Manifest =
            serde_json::from_slice(&fs::read(x.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m, sealed.manifest);
        assert_eq!(
            sha256_hex(&fs::read(x.join("document.json")).unwrap()),
            m.members[0].sha256
        );
        assert_eq!(
            sha256_hex(&fs::read(x.join("attachments/検査結果.pdf")).unwrap()),
            m.members[2].sha256
        );
    }

    // A facility the package was not encrypted to cannot decrypt it.
    let other = region.facility(OTHER, Kind::Clinic, "かもめ診療所");
    let o = tool!("age"; "-d", "-i", other.profile.path(renkei::profile::Profile::AGE_KEY), pkg);
    assert!(!o.status.success());
}

#[test]
fn a_package_encrypted_by_stock_age_is_verified_by_renkei() {
    // The reverse direction: the signed inner tar encrypted by Go age to
    // the recipient's age1 key opens with renkei.
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let craft = Craft::new(&clinic, &[&hospital]);
    let plain = craft.plaintext_with(&craft.manifest());
    let recipient = hospital.recipient().to_string();
    let o = tool("age", &[&"-r", &recipient], Some(&plain));
    assert!(
        o.status.success(),
        "age -r failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (opened, _attempt) = expect_opened(&hospital, &o.stdout);
    assert_eq!(opened.sender.id.to_string(), CLINIC);
}

#[test]
fn stock_age_with_a_hidden_extra_recipient_is_refused() {
    // The signed inner tar encrypted by Go age to the hospital and to a
    // facility the manifest does not name: every signature verifies, the
    // extra stanza is refused.
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let hidden = region.facility(OTHER, Kind::Clinic, "かもめ診療所");
    let craft = Craft::new(&clinic, &[&hospital]);
    let plain = craft.plaintext_with(&craft.manifest());
    let (a, b) = (
        hospital.recipient().to_string(),
        hidden.recipient().to_string(),
    );
    let o = tool("age", &[&"-r", &a, &"-r", &b], Some(&plain));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = expect_refused(&hospital, &o.stdout);
    assert!(
        matches!(
            e,
            renkei::package::OpenError::UnexpectedRecipients { signed: 1, .. }
        ),
        "{e:?}"
    );
}

#[test]
fn renkei_demo_runs() {
    let o = Command::new(BIN)
        .arg("demo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "renkei demo failed ({:?}):\n{out}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("\ndone: "), "{out}");
}

#[test]
fn the_demo_keys_agree_with_openssl() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example");
    for who in ["clinic", "hospital"] {
        let out = ok(
            "openssl verify (demo keys)",
            tool!("openssl"; "verify", "-CAfile", keys.join(who).join("ca.pem"), keys.join(who).join("cert.pem")),
        );
        assert!(out.trim_end().ends_with(": OK"), "{out}");
    }
}
