//! The `renkei` binary end to end: CA, keygen, issue, install, certificates,
//! seal and open, with exit codes and the key lines of its messages.

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{document_for, CLINIC, HOSPITAL, RECOVERY};
use renkei::document::DocKind;

const BIN: &str = env!("CARGO_BIN_EXE_renkei");

fn renkei(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(BIN);
    for a in args {
        c.arg(a);
    }
    c.stdin(Stdio::null());
    c.output().expect("run renkei")
}

macro_rules! renkei {
    ($($a:expr),* $(,)?) => { renkei(&[$(&$a as &dyn AsRef<std::ffi::OsStr>),*]) };
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

#[track_caller]
fn fails(o: Output, code: i32) -> Output {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// A region made with the binary: a CA, a clinic and a hospital, each
/// certified and installed.
struct CliRegion {
    tmp: tempfile::TempDir,
}

impl CliRegion {
    fn new() -> CliRegion {
        let r = CliRegion {
            tmp: tempfile::tempdir().unwrap(),
        };
        ok(renkei!(
            "ca",
            "init",
            "--dir",
            r.p("ca"),
            "--name",
            "みなと地域医療連携ネットワーク CA"
        ));
        r.facility("clinic", CLINIC, "clinic", "さくら内科クリニック");
        r.facility("hospital", HOSPITAL, "hospital", "みなと総合病院");
        ok(renkei!(
            "ca",
            "crl",
            "--ca",
            r.p("ca"),
            "-o",
            r.p("crl.pem")
        ));
        for name in ["clinic", "hospital"] {
            ok(renkei!(
                "profile",
                "install",
                "--profile",
                r.p(name),
                "--cert",
                r.p(&format!("{name}.crt")),
                "--ca",
                r.p("ca/ca.crt"),
                "--crl",
                r.p("crl.pem")
            ));
        }
        let doc = |att: &[&str]| document_for(DocKind::Referral, CLINIC, HOSPITAL, att);
        fs::write(r.p("referral.json"), doc(&[])).unwrap();
        fs::write(r.p("referral-lab.json"), doc(&["検査結果.csv"])).unwrap();
        r
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn facility(&self, name: &str, id: &str, kind: &str, display: &str) {
        ok(renkei!(
            "keygen",
            "--profile",
            self.p(name),
            "--facility-id",
            id,
            "--name",
            display,
            "--kind",
            kind
        ));
        ok(renkei!(
            "ca",
            "issue",
            "--ca",
            self.p("ca"),
            "--request",
            self.p(&format!("{name}/request.csr")),
            "-o",
            self.p(&format!("{name}.crt"))
        ));
    }

    /// Seal the referral from the clinic to the hospital into `out`
    /// (`referral-lab.json`, listing 検査結果.csv, with `--attach`).
    fn seal(&self, out: &str, extra: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.arg("seal")
            .arg("--profile")
            .arg(self.p("clinic"))
            .arg("--to")
            .arg(self.p("hospital.crt"))
            .arg("--document")
            .arg(self.p(if extra.contains(&"--attach") {
                "referral-lab.json"
            } else {
                "referral.json"
            }))
            .arg("-o")
            .arg(if out == "-" {
                PathBuf::from("-")
            } else {
                self.p(out)
            })
            .args(extra)
            .stdin(Stdio::null());
        c.output().unwrap()
    }
}

#[test]
fn the_whole_flow_and_its_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |rel: &str| tmp.path().join(rel);

    let o = ok(renkei!(
        "ca",
        "init",
        "--dir",
        p("ca"),
        "--name",
        "みなと地域医療連携ネットワーク CA"
    ));
    let out = stdout(&o);
    assert!(
        out.contains("created CA \"みなと地域医療連携ネットワーク CA\" in"),
        "{out}"
    );
    assert!(out.contains("(mode 0600; keep it offline)"), "{out}");
    assert!(out.contains("fingerprint: "), "{out}");
    assert!(p("ca/ca.crt").is_file() && p("ca/ca.key").is_file());

    let o = ok(renkei!(
        "keygen",
        "--profile",
        p("clinic"),
        "--facility-id",
        CLINIC,
        "--name",
        "さくら内科クリニック",
        "--kind",
        "clinic"
    ));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "created profile {} for clinic {CLINIC} (さくら内科クリニック)",
            p("clinic").display()
        )),
        "{out}"
    );
    assert!(out.contains("signing key:  "), "{out}");
    assert!(out.contains("(mode 0600)"), "{out}");
    assert!(
        out.contains("next: send the request to the region's CA"),
        "{out}"
    );

    let o = ok(renkei!(
        "ca",
        "issue",
        "--ca",
        p("ca"),
        "--request",
        p("clinic/request.csr"),
        "-o",
        p("clinic.crt")
    ));
    let out = stdout(&o);
    assert!(out.starts_with("issued certificate "), "{out}");
    assert!(
        out.contains(&format!(
            "for clinic {CLINIC} (さくら内科クリニック), valid until "
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("written to {}", p("clinic.crt").display())),
        "{out}"
    );

    let o = ok(renkei!("ca", "crl", "--ca", p("ca"), "-o", p("crl.pem")));
    assert!(
        stdout(&o).contains("(0 revoked certificates)"),
        "{}",
        stdout(&o)
    );

    let o = ok(renkei!(
        "profile",
        "install",
        "--profile",
        p("clinic"),
        "--cert",
        p("clinic.crt"),
        "--ca",
        p("ca/ca.crt"),
        "--crl",
        p("crl.pem")
    ));
    let out = stdout(&o);
    assert!(
        out.contains("CA certificate (みなと地域医療連携ネットワーク CA), CRL, certificate"),
        "{out}"
    );
    for f in ["cert.pem", "ca.pem", "crl.pem"] {
        assert!(p("clinic").join(f).is_file(), "{f}");
    }

    let o = ok(renkei!(
        "profile",
        "show",
        "--profile",
        p("clinic"),
        "--json"
    ));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["id"], CLINIC);
    assert_eq!(v["kind"], "clinic");
    assert_eq!(v["certificate"]["id"], CLINIC);
}

#[test]
fn cert_show_json_and_text() {
    let r = CliRegion::new();
    let o = ok(renkei!("cert", "show", r.p("clinic.crt"), "--json"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["id"], CLINIC);
    assert_eq!(v["name"], "さくら内科クリニック");
    assert_eq!(v["kind"], "clinic");
    assert_eq!(v["issuer"], "みなと地域医療連携ネットワーク CA");
    let age_key = fs::read_to_string(r.p("clinic/age.key")).unwrap();
    let recipient = v["age_recipient"].as_str().unwrap();
    assert!(recipient.starts_with("age1"));
    assert!(age_key.contains(&format!("# public key: {recipient}")));
    assert_eq!(v["signing_key"].as_str().unwrap().len(), 64);
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);
    assert!(v["not_after"].as_str().unwrap().ends_with('Z'));

    let o = ok(renkei!("cert", "show", r.p("hospital.crt")));
    let out = stdout(&o);
    assert!(out.contains(&format!("ID:            {HOSPITAL}")), "{out}");
    assert!(out.contains("kind:          hospital"), "{out}");
    assert!(out.contains("age recipient: age1"), "{out}");
    assert!(out.contains("fingerprint:   SHA-256 "), "{out}");

    let bad = r.p("not-a-cert.pem");
    fs::write(&bad, "hello").unwrap();
    let o = fails(renkei!("cert", "show", &bad), 1);
    assert!(
        stderr(&o).contains("not a readable X.509 certificate"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cert_verify_ok_and_revoked() {
    let r = CliRegion::new();
    let o = ok(renkei!(
        "cert",
        "verify",
        r.p("clinic.crt"),
        "--ca",
        r.p("ca/ca.crt"),
        "--crl",
        r.p("crl.pem")
    ));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "OK: clinic {CLINIC} (さくら内科クリニック) is certified by みなと地域医療連携ネットワーク CA, valid until "
        )),
        "{out}"
    );
    assert!(out.trim_end().ends_with(", not revoked"), "{out}");
    let o = ok(renkei!(
        "cert",
        "verify",
        r.p("clinic.crt"),
        "--ca",
        r.p("ca/ca.crt")
    ));
    assert!(stdout(&o).contains("(no CRL checked)"), "{}", stdout(&o));

    let o = ok(renkei!(
        "ca",
        "revoke",
        "--ca",
        r.p("ca"),
        "--cert",
        r.p("clinic.crt")
    ));
    let out = stdout(&o);
    assert!(out.starts_with("revoked certificate "), "{out}");
    assert!(
        out.contains(&format!("of {CLINIC} (さくら内科クリニック) at ")),
        "{out}"
    );
    assert!(
        out.contains("publish a new CRL with `renkei ca crl`"),
        "{out}"
    );
    let o = ok(renkei!(
        "ca",
        "crl",
        "--ca",
        r.p("ca"),
        "-o",
        r.p("crl2.pem")
    ));
    assert!(stdout(&o).contains("(1 revoked certificates)"));

    let o = fails(
        renkei!(
            "cert",
            "verify",
            r.p("clinic.crt"),
            "--ca",
            r.p("ca/ca.crt"),
            "--crl",
            r.p("crl2.pem")
        ),
        3,
    );
    let err = stderr(&o);
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        err.contains(&format!(
            "error: the certificate of {CLINIC} was revoked on {today}"
        )),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
    // The hospital's certificate is still fine under the new CRL.
    ok(renkei!(
        "cert",
        "verify",
        r.p("hospital.crt"),
        "--ca",
        r.p("ca/ca.crt"),
        "--crl",
        r.p("crl2.pem")
    ));
}

#[test]
fn cert_verify_refuses_another_ca() {
    let r = CliRegion::new();
    let other = CliRegion::new();
    let o = fails(
        renkei!(
            "cert",
            "verify",
            other.p("clinic.crt"),
            "--ca",
            r.p("ca/ca.crt")
        ),
        3,
    );
    assert!(
        stderr(&o).contains("was not issued by this region's CA"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn seal_to_a_file_and_open_with_json() {
    let r = CliRegion::new();
    fs::write(r.p("検査結果.csv"), "項目,値\nHbA1c,7.2\n").unwrap();
    let o = ok(r.seal(
        "referral.age",
        &["--attach", r.p("検査結果.csv").to_str().unwrap()],
    ));
    let err = stderr(&o);
    assert!(
        err.starts_with("sealed referral "),
        "seal reports on stderr: {err}"
    );
    assert!(
        err.contains(&format!("for {HOSPITAL} (3 members, ")),
        "{err}"
    );
    assert!(err.contains("envelope ID: "), "{err}");
    assert!(stdout(&o).is_empty());
    let pkg = fs::read(r.p("referral.age")).unwrap();
    assert!(pkg.starts_with(b"age-encryption.org/v1\n"));
    let envelope = common::sha256_hex(&pkg);
    assert!(err.contains(&envelope), "the envelope ID is the SHA-256");
    // No temporary files are left beside the output.
    let leftovers: Vec<_> = fs::read_dir(r.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".renkei"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let o = ok(renkei!(
        "open",
        "--profile",
        r.p("hospital"),
        r.p("referral.age"),
        "-o",
        r.p("received"),
        "--json"
    ));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["verified"], true);
    assert_eq!(v["kind"], "referral");
    assert_eq!(v["sender"]["facility_id"], CLINIC);
    assert_eq!(v["sender"]["name"], "さくら内科クリニック");
    assert_eq!(v["sender"]["kind"], "clinic");
    assert_eq!(v["recipients"][0]["facility_id"], HOSPITAL);
    assert_eq!(v["thread_id"], v["package_id"]);
    let members: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        vec!["document.json", "attachments/検査結果.csv", "sender.crt"]
    );
    assert_eq!(
        fs::read(r.p("received/document.json")).unwrap(),
        fs::read(r.p("referral-lab.json")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(r.p("received/attachments/検査結果.csv")).unwrap(),
        "項目,値\nHbA1c,7.2\n"
    );

    // The sender reopens its own copy, in text form.
    let o = ok(renkei!(
        "open",
        "--profile",
        r.p("clinic"),
        r.p("referral.age"),
        "-o",
        r.p("sent")
    ));
    let out = stdout(&o);
    assert!(
        out.starts_with("verified 診療情報提供書（紹介状） (referral) "),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "from:        clinic {CLINIC} (さくら内科クリニック)"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("to:          {HOSPITAL}")), "{out}");
    assert!(out.contains("attachments/検査結果.csv"), "{out}");
}

#[test]
fn seal_to_standard_output_through_a_pipe() {
    let r = CliRegion::new();
    let o = ok(r.seal("-", &["--json"]));
    assert!(o.stdout.starts_with(b"age-encryption.org/v1\n"));
    let v: serde_json::Value = serde_json::from_slice(&o.stderr).expect("JSON on stderr");
    assert_eq!(v["size"].as_u64().unwrap(), o.stdout.len() as u64);
    assert_eq!(
        v["envelope_id"].as_str().unwrap(),
        common::sha256_hex(&o.stdout)
    );
    assert_eq!(v["manifest"]["sender"]["facility_id"], CLINIC);

    // Open it from standard input.
    let mut child = Command::new(BIN)
        .args(["open", "--profile"])
        .arg(r.p("hospital"))
        .arg("-")
        .arg("-o")
        .arg(r.p("from-stdin"))
        .arg("--json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    let out = ok(child.wait_with_output().unwrap());
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w["package_id"], v["package_id"]);
    assert!(r.p("from-stdin/document.json").is_file());
}

#[test]
fn open_refuses_a_tampered_package_with_exit_3_and_no_outdir() {
    let r = CliRegion::new();
    ok(r.seal("referral.age", &[]));
    let mut bytes = fs::read(r.p("referral.age")).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x01;
    fs::write(r.p("tampered.age"), &bytes).unwrap();
    let o = fails(
        renkei!(
            "open",
            "--profile",
            r.p("hospital"),
            r.p("tampered.age"),
            "-o",
            r.p("inbox/tampered"),
            "--json"
        ),
        3,
    );
    let err = stderr(&o);
    assert!(
        err.contains("the package is damaged or was altered in transit"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "nothing is reported as verified");
    assert!(!r.p("inbox/tampered").exists());
    let left: Vec<_> = fs::read_dir(r.p("inbox")).unwrap().collect();
    assert!(left.is_empty(), "no staging folder is left behind");

    // Truncated: also 3.
    fs::write(r.p("short.age"), &bytes[..n / 2]).unwrap();
    fails(
        renkei!(
            "open",
            "--profile",
            r.p("hospital"),
            r.p("short.age"),
            "-o",
            r.p("inbox/short")
        ),
        3,
    );
    assert!(!r.p("inbox/short").exists());
}

#[test]
fn open_refuses_a_package_for_someone_else_with_exit_3() {
    let r = CliRegion::new();
    r.facility(
        "recovery",
        RECOVERY,
        "recovery-hospital",
        "あおば回復期病院",
    );
    ok(renkei!(
        "profile",
        "install",
        "--profile",
        r.p("recovery"),
        "--cert",
        r.p("recovery.crt"),
        "--ca",
        r.p("ca/ca.crt")
    ));
    ok(r.seal("referral.age", &[]));
    let o = fails(
        renkei!(
            "open",
            "--profile",
            r.p("recovery"),
            r.p("referral.age"),
            "-o",
            r.p("out")
        ),
        3,
    );
    assert!(
        stderr(&o).contains("this package was not encrypted for this facility"),
        "{}",
        stderr(&o)
    );
    assert!(!r.p("out").exists());
}

#[test]
fn usage_errors_exit_2() {
    let r = CliRegion::new();
    // Missing -o.
    let o = fails(
        renkei!("open", "--profile", r.p("hospital"), r.p("referral.age")),
        2,
    );
    assert!(stderr(&o).contains("--out"), "{}", stderr(&o));
    // Unknown flag, unknown kind, unknown command.
    fails(renkei!("open", "--bogus"), 2);
    fails(
        renkei!(
            "keygen",
            "--profile",
            r.p("x"),
            "--facility-id",
            CLINIC,
            "--name",
            "x",
            "--kind",
            "spaceship"
        ),
        2,
    );
    fails(renkei!("frobnicate"), 2);
    // Nothing to install.
    let o = fails(renkei!("profile", "install", "--profile", r.p("clinic")), 2);
    assert!(stderr(&o).contains("nothing to install"), "{}", stderr(&o));
    // Seal without a recipient.
    fails(
        renkei!(
            "seal",
            "--profile",
            r.p("clinic"),
            "--document",
            r.p("referral.json"),
            "-o",
            r.p("x.age")
        ),
        2,
    );
    assert!(!r.p("x.age").exists());
}

#[test]
fn seal_refuses_to_overwrite_an_existing_output() {
    let r = CliRegion::new();
    fs::write(r.p("referral.age"), "precious").unwrap();
    let o = fails(r.seal("referral.age", &[]), 1);
    assert!(
        stderr(&o).contains("already exists; choose another name or move it away"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_to_string(r.p("referral.age")).unwrap(), "precious");
}

#[test]
fn open_refuses_an_existing_outdir() {
    let r = CliRegion::new();
    ok(r.seal("referral.age", &[]));
    fs::create_dir(r.p("received")).unwrap();
    fs::write(r.p("received/mine.txt"), "keep").unwrap();
    let o = fails(
        renkei!(
            "open",
            "--profile",
            r.p("hospital"),
            r.p("referral.age"),
            "-o",
            r.p("received")
        ),
        1,
    );
    assert!(
        stderr(&o).contains("already exists; give a new folder name"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        common::listing(&r.p("received")),
        vec!["mine.txt".to_string()]
    );
}

#[test]
fn keygen_refuses_an_existing_profile_and_bad_ids() {
    let r = CliRegion::new();
    let before = fs::read(r.p("clinic/signing.key")).unwrap();
    let o = fails(
        renkei!(
            "keygen",
            "--profile",
            r.p("clinic"),
            "--facility-id",
            CLINIC,
            "--name",
            "さくら内科クリニック",
            "--kind",
            "clinic"
        ),
        1,
    );
    assert!(
        stderr(&o).contains("already holds a profile; refusing to overwrite its keys"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(r.p("clinic/signing.key")).unwrap(), before);

    let o = fails(
        renkei!(
            "keygen",
            "--profile",
            r.p("typo"),
            "--facility-id",
            "1311234568",
            "--name",
            "x",
            "--kind",
            "clinic"
        ),
        1,
    );
    assert!(
        stderr(&o).contains("check digit is 8, expected 9; check the code for a typing error"),
        "{}",
        stderr(&o)
    );
    assert!(!r.p("typo").exists());
    let o = fails(
        renkei!(
            "keygen",
            "--profile",
            r.p("short"),
            "--facility-id",
            "13112",
            "--name",
            "x",
            "--kind",
            "clinic"
        ),
        1,
    );
    assert!(
        stderr(&o).contains("must be exactly 10 digits"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ca_issue_refuses_a_taken_id_and_a_bad_request() {
    let r = CliRegion::new();
    // A second clinic profile with the same ID and a new key.
    ok(renkei!(
        "keygen",
        "--profile",
        r.p("imposter"),
        "--facility-id",
        CLINIC,
        "--name",
        "さくら内科クリニック",
        "--kind",
        "clinic"
    ));
    let o = fails(
        renkei!(
            "ca",
            "issue",
            "--ca",
            r.p("ca"),
            "--request",
            r.p("imposter/request.csr"),
            "-o",
            r.p("imposter.crt")
        ),
        1,
    );
    assert!(
        stderr(&o).contains(&format!("{CLINIC} already holds certificate")),
        "{}",
        stderr(&o)
    );
    assert!(!r.p("imposter.crt").exists());

    // A request whose signature was altered.
    let text = fs::read_to_string(r.p("imposter/request.csr")).unwrap();
    let mut der = pem::parse(&text).unwrap().into_contents();
    let n = der.len();
    der[n - 1] ^= 0x01;
    fs::write(
        r.p("bad.csr"),
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)),
    )
    .unwrap();
    let o = fails(
        renkei!(
            "ca",
            "issue",
            "--ca",
            r.p("ca"),
            "--request",
            r.p("bad.csr"),
            "-o",
            r.p("bad.crt")
        ),
        1,
    );
    assert!(
        stderr(&o).contains("the request's signature does not verify"),
        "{}",
        stderr(&o)
    );
    assert!(!r.p("bad.crt").exists());

    // ca issue does not overwrite an existing certificate file.
    let o = fails(
        renkei!(
            "ca",
            "issue",
            "--ca",
            r.p("ca"),
            "--request",
            r.p("clinic/request.csr"),
            "-o",
            r.p("hospital.crt")
        ),
        1,
    );
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

#[test]
fn profile_install_refuses_a_certificate_for_another_key() {
    let r = CliRegion::new();
    let before = fs::read(r.p("clinic/cert.pem")).unwrap();
    let o = fails(
        renkei!(
            "profile",
            "install",
            "--profile",
            r.p("clinic"),
            "--cert",
            r.p("hospital.crt")
        ),
        1,
    );
    assert!(
        stderr(&o).contains("issued for another signing key"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(r.p("clinic/cert.pem")).unwrap(), before);
}

/// A CRL of the region's CA whose `nextUpdate` was `days_ago` days ago.
fn overdue_crl(r: &CliRegion, days_ago: i64) -> String {
    let ca = renkei::pki::ca::Ca::open(&r.p("ca")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    ca.crl_between(
        now - time::Duration::days(days_ago + 30),
        now - time::Duration::days(days_ago),
    )
    .unwrap()
}

fn install_crl(r: &CliRegion, name: &str, crl: &str) {
    fs::write(r.p("new-crl.pem"), crl).unwrap();
    ok(renkei!(
        "profile",
        "install",
        "--profile",
        r.p(name),
        "--crl",
        r.p("new-crl.pem")
    ));
}

#[test]
fn an_overdue_crl_warns_and_a_stale_one_refuses_sealing_and_opening() {
    let r = CliRegion::new();
    ok(r.seal("first.age", &[]));

    // Two days past nextUpdate: every command with the profile warns, and
    // still works (the grace period is 7 days by default).
    for name in ["clinic", "hospital"] {
        install_crl(&r, name, &overdue_crl(&r, 2));
    }
    let o = ok(renkei!("profile", "show", "--profile", r.p("hospital")));
    let err = stderr(&o);
    assert!(err.starts_with("warning: the CRL in "), "{err}");
    assert!(err.contains("crl.pem (number "), "{err}");
    assert!(err.contains("was due to be replaced on "), "{err}");
    assert!(err.contains("renkei crl fetch --profile "), "{err}");
    let o = ok(renkei!(
        "open",
        "--profile",
        r.p("hospital"),
        r.p("first.age"),
        "-o",
        r.p("opened-1")
    ));
    assert!(
        stderr(&o).contains("warning: the CRL in "),
        "{}",
        stderr(&o)
    );
    ok(r.seal("second.age", &[]));

    // Ten days past: the revocation status of a facility cannot be
    // confirmed, so sealing to and opening from one fails, saying which
    // CRL and how to refresh it.
    for name in ["clinic", "hospital"] {
        install_crl(&r, name, &overdue_crl(&r, 10));
    }
    let o = fails(r.seal("third.age", &[]), 3);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot confirm that the certificate of {HOSPITAL} is not revoked"
        )),
        "{err}"
    );
    assert!(err.contains("more than 7 days overdue"), "{err}");
    assert!(err.contains("renkei crl fetch --profile "), "{err}");
    assert!(!r.p("third.age").exists());
    let o = fails(
        renkei!(
            "open",
            "--profile",
            r.p("hospital"),
            r.p("second.age"),
            "-o",
            r.p("opened-2")
        ),
        3,
    );
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot confirm that the certificate of {CLINIC} is not revoked"
        )),
        "{err}"
    );
    assert!(
        err.contains(&r.p("hospital/crl.pem").display().to_string()),
        "{err}"
    );
    assert!(!r.p("opened-2").exists());

    // A longer grace period in profile.toml accepts it again (with the
    // warning).
    let toml = r.p("hospital/profile.toml");
    let mut text = fs::read_to_string(&toml).unwrap();
    text.push_str("\n[revocation]\ncrl_grace_days = 30\n");
    fs::write(&toml, text).unwrap();
    let o = ok(renkei!(
        "open",
        "--profile",
        r.p("hospital"),
        r.p("second.age"),
        "-o",
        r.p("opened-2")
    ));
    assert!(
        stderr(&o).contains("warning: the CRL in "),
        "{}",
        stderr(&o)
    );
}

/// A tmpfs of `size` mounted over `dir`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf, size: &str) -> SmallDisk {
        fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs over {}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[cfg_attr(
    renkei_no_tmpfs,
    ignore = "needs `mount -t tmpfs` (root with CAP_SYS_ADMIN), which build.rs found not to work here"
)]
fn sealing_and_opening_onto_a_full_disk_fail_and_leave_nothing() {
    // A 3 MiB attachment; a 1 MiB disk. The bytes go through the writing
    // threads (the sealed file's, an opened member's): their error must
    // reach the user, and no half-written file or folder may stay.
    let r = CliRegion::new();
    let csv: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(r.p("検査結果.csv"), &csv).unwrap();
    ok(r.seal(
        "referral.age",
        &["--attach", r.p("検査結果.csv").to_str().unwrap()],
    ));
    let disk = SmallDisk::mount(r.p("small"), "1m");

    let o = r.seal(
        "small/referral.age",
        &["--attach", r.p("検査結果.csv").to_str().unwrap()],
    );
    assert!(!o.status.success(), "sealing onto a full disk succeeded");
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    let left: Vec<_> = fs::read_dir(&disk.0).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    let o = renkei!(
        "open",
        "--profile",
        r.p("hospital"),
        r.p("referral.age"),
        "-o",
        r.p("small/inbox")
    );
    assert!(!o.status.success(), "opening onto a full disk succeeded");
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    let left: Vec<_> = fs::read_dir(&disk.0).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // With room, the same package opens.
    drop(disk);
    ok(renkei!(
        "open",
        "--profile",
        r.p("hospital"),
        r.p("referral.age"),
        "-o",
        r.p("inbox")
    ));
    assert_eq!(
        fs::read(r.p("inbox/attachments/検査結果.csv")).unwrap(),
        csv
    );
}
