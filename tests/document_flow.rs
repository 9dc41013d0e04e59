//! Documents through the whole package path: every kind, in both families
//! (JP-CLINS and the standard HL7 FHIR 記述仕様), goes `renkei document new`
//! → `seal` → `open --render` → `send` → `receive --render` → `document
//! show` against an in-process relay over loopback mutual TLS, and the
//! referral and its reply join one referral thread; the guides' example
//! Bundles (JP-CLINS and eReferral) are accepted from the facility they
//! name and refused from any other; a PDF letter travels with its PDF (and
//! is refused without it); invalid documents are refused at seal time, and
//! — in hand-made packages that bypass sealing — at open time with nothing
//! written and, through `receive`, a rejection receipt that carries the
//! document's reason code.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;
use renkei::client::ops::Session;
use renkei::document::{DocKind, Form, IssueCode, Spec};
use renkei::identity::Kind;
use renkei::package::{self, Limits, OpenError, PackageKind, SealError, SealRequest};
use renkei::profile::Profile;
use renkei::relay::{RelayConfig, RelayState};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_renkei");
/// Bound on one command or network step.
const STEP: Duration = Duration::from_secs(60);
/// The JP-CLINS example Bundle (from another system).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/documents/jp-clins/Bundle-Bundle-CLINS-Referral-Example-01.json"
);
/// The eReferral guide's example Bundle (from another system).
const EREFERRAL_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/documents/ereferral/Bundle-BundleReferralExample01.json"
);
/// A real PDF (the JP-CLINS guide's example PDF), sent as a letter.
const PDF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/documents/jp-clins/clinicalCourseExampleData.pdf"
);
/// The facility codes the examples name (紹介元 港診療所, 紹介先). Their
/// check digits are not valid facility IDs, so no certified facility can
/// carry them; the accepted case puts the demo IDs in their place.
const FIXTURE_FROM: &str = "1319876543";
const FIXTURE_TO: &str = "1311234567";

/// Run the binary with owned arguments.
fn run_owned(args: &[String]) -> Output {
    let mut c = assert_cmd::Command::new(BIN);
    c.args(args);
    c.timeout(STEP).output().expect("run renkei in time")
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = assert_cmd::Command::new(BIN);
    for a in args {
        c.arg(a);
    }
    c.timeout(STEP).output().expect("run renkei in time")
}

macro_rules! renkei {
    ($($a:expr),* $(,)?) => { run(&[$(&$a as &dyn AsRef<std::ffi::OsStr>),*]) };
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

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{}", stdout(o)))
}

/// A region with a clinic, a hospital and a recovery hospital, and a relay
/// serving it on a loopback port from a runtime of its own.
struct Net {
    region: Region,
    clinic: Facility,
    hospital: Facility,
    recovery: Facility,
    url: String,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Net {
    fn start() -> Net {
        let region = Region::new();
        let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
        let hospital = region.facility(HOSPITAL, Kind::Hospital, "東都中央病院");
        let recovery = region.facility(RECOVERY, Kind::RecoveryHospital, "あおば回復期病院");
        let relay_dir = region.path().join("relay");
        let mut relay = Profile::create(
            &relay_dir,
            "relay-1",
            Kind::Relay,
            "中継サーバ",
            &["localhost".into()],
        )
        .expect("relay profile");
        let cert = region.issue(&relay, 730);
        relay
            .install(
                Some(cert.as_bytes()),
                Some(region.ca_pem().as_bytes()),
                Some(region.crl().as_bytes()),
                None,
            )
            .expect("install relay");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let data = region.path().join("relay-data");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let port = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let state = tokio::time::timeout(
                STEP,
                RelayState::open(&relay_dir, &data, None, RelayConfig::default()),
            )
            .await
            .expect("relay opens in time")
            .expect("relay state");
            tokio::spawn(renkei::relay::serve(listener, state, async move {
                let _ = rx.await;
            }));
            port
        });
        let net = Net {
            region,
            clinic,
            hospital,
            recovery,
            url: format!("https://localhost:{port}"),
            rt,
            stop: Some(tx),
        };
        for f in [&net.clinic, &net.hospital, &net.recovery] {
            ok(renkei!(
                "directory",
                "publish",
                "--profile",
                f.profile.path(""),
                "--relay",
                &net.url
            ));
        }
        net
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.region.path().join(rel)
    }

    fn by_id(&self, id: &str) -> &Facility {
        [&self.clinic, &self.hospital, &self.recovery]
            .into_iter()
            .find(|f| f.id.as_str() == id)
            .unwrap_or_else(|| panic!("no facility {id}"))
    }

    /// A facility's certificate as a file (for `seal --to`).
    fn cert_file(&self, f: &Facility) -> PathBuf {
        let p = self.p(&format!("{}.crt", f.id));
        fs::write(&p, &f.cert_pem).unwrap();
        p
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Who writes each kind to whom in the example forms.
fn parties(kind: DocKind) -> (&'static str, &'static str) {
    match kind {
        DocKind::Referral => (CLINIC, HOSPITAL),
        DocKind::Reply | DocKind::ReverseReferral | DocKind::DischargeSummary => (HOSPITAL, CLINIC),
        DocKind::Transfer => (HOSPITAL, RECOVERY),
    }
}

#[test]
fn every_kind_round_trips_through_the_cli_and_renders_on_arrival() {
    round_trip_every_kind("jp-clins");
}

#[test]
fn every_kind_round_trips_in_the_standard_format_and_joins_its_thread() {
    round_trip_every_kind("ereferral");
}

/// Every kind written with `document new --format FORMAT`, sealed, opened,
/// sent, received and shown; the reply answers the referral, and both
/// facilities see them in one referral thread.
fn round_trip_every_kind(format: &str) {
    let net = Net::start();
    let mut referral_package: Option<String> = None;
    let mut referral_thread: Option<String> = None;
    let spec_name = if format == "ereferral" {
        "HL7 FHIR 記述仕様 第1.1版"
    } else {
        "JP-CLINS"
    };
    for kind in DocKind::ALL {
        let k = kind.as_str();
        let (from_id, to_id) = parties(kind);
        let (from, to) = (net.by_id(from_id), net.by_id(to_id));
        let form_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(format!("{k}.toml"));
        let form = Form::from_toml(&fs::read_to_string(&form_path).unwrap()).unwrap();
        let answers = match kind {
            DocKind::Reply => referral_package.clone(),
            _ => None,
        };

        // document new
        let doc = net.p(&format!("{k}.json"));
        let mut args: Vec<String> = vec![
            "document".into(),
            "new".into(),
            k.into(),
            "--form".into(),
            form_path.display().to_string(),
            "-o".into(),
            doc.display().to_string(),
            "--format".into(),
            format.into(),
        ];
        if let Some(a) = &answers {
            args.extend(["--in-reply-to".into(), a.clone()]);
        }
        let o = ok(run_owned(&args));
        assert!(stdout(&o).contains(spec_name), "{}", stdout(&o));

        // its attachments, named as the form lists them
        let att_dir = net.p(&format!("att-{k}"));
        fs::create_dir_all(&att_dir).unwrap();
        let mut common_args: Vec<String> = vec!["--document".into(), doc.display().to_string()];
        common_args.extend(["--kind".into(), k.into()]);
        for (i, a) in form.attachments.iter().enumerate() {
            let f = att_dir.join(&a.file);
            fs::write(&f, format!("%PDF-1.4 {k} attachment {i}\n")).unwrap();
            common_args.extend(["--attach".into(), f.display().to_string()]);
        }
        if let Some(a) = &answers {
            common_args.extend(["--in-reply-to".into(), a.clone()]);
        }

        // seal, then open with the rendering written beside the members
        let sealed = net.p(&format!("{k}.age"));
        let mut args: Vec<String> = vec![
            "seal".into(),
            "--profile".into(),
            from.profile.path("").display().to_string(),
            "--to".into(),
            net.cert_file(to).display().to_string(),
            "-o".into(),
            sealed.display().to_string(),
        ];
        args.extend(common_args.iter().cloned());
        ok(run_owned(&args));
        let opened = net.p(&format!("opened-{k}"));
        let o = ok(renkei!(
            "open",
            "--profile",
            to.profile.path(""),
            &sealed,
            "-o",
            &opened,
            "--render",
            "html"
        ));
        let out = stdout(&o);
        assert!(
            out.contains(&format!(
                "document:    {} ({k}), 患者 {}",
                kind.japanese(),
                form.patient.name
            )),
            "{out}"
        );
        let html = fs::read_to_string(opened.join("document.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{k}");
        assert!(html.contains(&form.patient.name), "{k}");
        assert!(!html.contains("<script"), "{k}");

        // send through the relay, receive with a text rendering
        let mut args: Vec<String> = vec![
            "send".into(),
            "--profile".into(),
            from.profile.path("").display().to_string(),
            "--relay".into(),
            net.url.clone(),
            "--to".into(),
            to_id.into(),
            "--json".into(),
        ];
        args.extend(common_args.iter().cloned());
        let sent = json(&ok(run_owned(&args)));
        let envelope = sent["envelope_id"].as_str().unwrap().to_string();
        let package_id = sent["manifest"]["package_id"].as_str().unwrap().to_string();
        assert_eq!(sent["manifest"]["kind"], k);
        if kind == DocKind::Referral {
            referral_package = Some(package_id.clone());
            referral_thread = sent["manifest"]["thread_id"].as_str().map(str::to_string);
        }
        let received = net.p(&format!("received-{k}"));
        let v = json(&ok(renkei!(
            "receive",
            "--profile",
            to.profile.path(""),
            "--relay",
            &net.url,
            &envelope,
            "-o",
            &received,
            "--render",
            "text",
            "--json"
        )));
        assert_eq!(v[0]["outcome"], "verified", "{v:#}");
        assert_eq!(v[0]["document"]["kind"], k);
        assert_eq!(
            v[0]["document"]["patient"]["name"],
            form.patient.name.as_str()
        );
        assert_eq!(v[0]["document"]["from"]["facility_id"], from_id);
        assert_eq!(
            v[0]["document"]["attachments"].as_array().unwrap().len(),
            form.attachments.len()
        );
        let folder = received.join(&package_id);
        assert_eq!(v[0]["folder"], folder.display().to_string());
        let rendered = fs::read_to_string(folder.join("document.txt")).unwrap();
        for a in &form.attachments {
            assert!(
                folder.join("attachments").join(&a.file).is_file(),
                "{}",
                a.file
            );
        }

        // document show on the received document renders the same text
        let shown = ok(renkei!("document", "show", folder.join("document.json")));
        assert_eq!(stdout(&shown).trim_end(), rendered.trim_end(), "{k}");
        assert!(rendered.contains(&form.patient.name), "{k}");
        assert!(rendered.contains(spec_name), "{k}: {rendered}");
        let print = ok(renkei!(
            "document",
            "show",
            folder.join("document.json"),
            "--format",
            "print"
        ));
        assert!(stdout(&print).contains("令和"), "{k}");
        if let Some(p) = &form.purpose {
            let first = p.lines().find(|l| !l.trim().is_empty()).unwrap().trim();
            assert!(rendered.contains(first), "{k}: {first}");
        }

        // the sender sees the delivery
        let st = json(&ok(renkei!(
            "status",
            "--profile",
            from.profile.path(""),
            "--relay",
            &net.url,
            &envelope,
            "--json"
        )));
        assert_eq!(st[0]["recipients"][0]["state"], "delivered", "{st:#}");
    }

    // The referral and its reply are one thread, for both facilities.
    let thread = referral_thread.expect("the referral's thread");
    for f in [&net.clinic, &net.hospital] {
        let v = json(&ok(renkei!(
            "referrals",
            "show",
            "--profile",
            f.profile.path(""),
            &thread,
            "--json"
        )));
        let kinds: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["referral", "reply"], "{format}: {v:#}");
        assert_eq!(v["steps"][0]["patient_name"], "山田 太郎", "{v:#}");
    }
}

/// The example Bundle with its two facility codes replaced.
fn fixture_between(from: &str, to: &str) -> Vec<u8> {
    fs::read_to_string(FIXTURE)
        .expect("the JP-CLINS example in tests/data/documents")
        .replace(FIXTURE_FROM, from)
        .replace(FIXTURE_TO, to)
        .into_bytes()
}

fn seal_doc(
    from: &Facility,
    to: &Facility,
    kind: PackageKind,
    doc: Vec<u8>,
    attachments: Vec<package::MemberSource<'static>>,
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::new();
    package::seal(
        SealRequest {
            sender_key: &from.key,
            sender_cert: &from.cert,
            sender_copy: false,
            recipients: std::slice::from_ref(&to.cert),
            kind,
            thread_id: None,
            in_reply_to: None,
            document: document(doc),
            attachments,
            limits: Limits::default(),
        },
        &mut out,
    )?;
    Ok(out)
}

fn pair() -> (Region, Facility, Facility, Facility) {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "東都中央病院");
    let recovery = region.facility(RECOVERY, Kind::RecoveryHospital, "あおば回復期病院");
    (region, clinic, hospital, recovery)
}

#[test]
fn the_jp_clins_example_is_accepted_from_its_facility_and_refused_from_another() {
    let (region, clinic, hospital, _) = pair();
    // As it is, it names 港診療所 (1319876543) as 紹介元: no facility of
    // this region may send it.
    let e = seal_doc(
        &clinic,
        &hospital,
        PackageKind::Referral,
        fs::read(FIXTURE).unwrap(),
        vec![],
    )
    .unwrap_err();
    let SealError::Document(issues) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(issues[0].code, IssueCode::WrongSender, "{issues:#?}");
    assert!(e.to_string().contains("紹介元"), "{e}");
    assert!(e.to_string().contains(FIXTURE_FROM), "{e}");

    // From the facility it names, to the one it names: sealed, opened and
    // rendered as it is (an untagged 診療情報提供書).
    let doc = fixture_between(CLINIC, HOSPITAL);
    let bytes = seal_doc(
        &clinic,
        &hospital,
        PackageKind::Referral,
        doc.clone(),
        vec![],
    )
    .unwrap();
    let (opened, attempt) = expect_opened(&hospital, &bytes);
    assert_eq!(opened.summary.patient.name, "牧野 爛漫");
    assert!(!opened.summary.kind_tagged);
    assert_eq!(fs::read(attempt.out.join("document.json")).unwrap(), doc);

    // The same through the CLI, rendered as HTML on arrival.
    let doc_file = region.path().join("fixture.json");
    fs::write(&doc_file, &doc).unwrap();
    let hospital_crt = region.path().join("hospital.crt");
    fs::write(&hospital_crt, &hospital.cert_pem).unwrap();
    let pkg = region.path().join("fixture.age");
    ok(renkei!(
        "seal",
        "--profile",
        clinic.profile.path(""),
        "--to",
        &hospital_crt,
        "--document",
        &doc_file,
        "-o",
        &pkg
    ));
    let out = region.path().join("fixture-opened");
    let o = ok(renkei!(
        "open",
        "--profile",
        hospital.profile.path(""),
        &pkg,
        "-o",
        &out,
        "--render",
        "html"
    ));
    assert!(stdout(&o).contains("患者 牧野 爛漫"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("紹介目的: 腹痛精査お願いします。"),
        "{}",
        stdout(&o)
    );
    let html = fs::read_to_string(out.join("document.html")).unwrap();
    assert!(html.contains("牧野 爛漫") && html.contains("港診療所"));

    // The hospital may not forward it as its own.
    let e = seal_doc(&hospital, &clinic, PackageKind::Referral, doc, vec![]).unwrap_err();
    assert!(
        matches!(&e, SealError::Document(i) if i.iter().any(|i| i.code == IssueCode::WrongSender)),
        "{e:?}"
    );
}

/// A valid referral (clinic → hospital, listing `a.pdf`) as JSON.
fn referral_value() -> Value {
    serde_json::from_slice(&document_for(
        DocKind::Referral,
        CLINIC,
        HOSPITAL,
        &["a.pdf"],
    ))
    .unwrap()
}

fn section_code(s: &Value) -> &str {
    s["code"]["coding"][0]["code"].as_str().unwrap_or("")
}

/// Remove the 紹介目的 (950) section wherever it is.
fn without_950(mut v: Value) -> Value {
    fn strip(sections: &mut Vec<Value>) {
        sections.retain(|s| section_code(s) != "950");
        for s in sections {
            if let Some(sub) = s.get_mut("section").and_then(Value::as_array_mut) {
                strip(sub);
            }
        }
    }
    let comp = &mut v["entry"][0]["resource"];
    assert_eq!(comp["resourceType"], "Composition");
    strip(comp["section"].as_array_mut().unwrap());
    v
}

fn with_dangling_subject(mut v: Value) -> Value {
    v["entry"][0]["resource"]["subject"]["reference"] =
        "urn:uuid:00000000-0000-4000-8000-000000000000".into();
    v
}

/// The invalid documents of issue #5, each with the reason code it must
/// get and the attachments sealed with it.
fn invalid_documents() -> Vec<(&'static str, Vec<u8>, &'static str, bool)> {
    let good = serde_json::to_vec(&referral_value()).unwrap();
    let mut not_utf8 = good.clone();
    let at = not_utf8
        .windows(3)
        .position(|w| w == "山".as_bytes())
        .expect("a kanji");
    not_utf8[at] = 0xff;
    vec![
        (
            "missing 950 紹介目的",
            serde_json::to_vec(&without_950(referral_value())).unwrap(),
            "document-missing-section",
            true,
        ),
        (
            "wrong facility",
            document_for(DocKind::Referral, RECOVERY, HOSPITAL, &["a.pdf"]),
            "document-wrong-sender",
            true,
        ),
        (
            "dangling reference",
            serde_json::to_vec(&with_dangling_subject(referral_value())).unwrap(),
            "document-dangling-reference",
            true,
        ),
        (
            "attachment reference to a missing member",
            good.clone(),
            "document-attachment",
            false,
        ),
        (
            "malformed JSON",
            good[..good.len() / 2].to_vec(),
            "document-not-json",
            true,
        ),
        ("non-UTF-8", not_utf8, "document-not-utf8", true),
    ]
}

fn attachment_a() -> Vec<package::MemberSource<'static>> {
    vec![mem("attachments/a.pdf", "%PDF-1.4 a\n")]
}

#[test]
fn invalid_documents_are_refused_at_seal_with_nothing_written() {
    let (region, clinic, hospital, _) = pair();
    let hospital_crt = region.path().join("hospital.crt");
    fs::write(&hospital_crt, &hospital.cert_pem).unwrap();
    let att = region.path().join("a.pdf");
    fs::write(&att, "%PDF-1.4 a\n").unwrap();
    let clinic_dir = clinic.profile.path("");
    for (what, doc, reason, with_att) in invalid_documents() {
        let atts = if with_att { attachment_a() } else { vec![] };
        let e =
            seal_doc(&clinic, &hospital, PackageKind::Referral, doc.clone(), atts).expect_err(what);
        let SealError::Document(issues) = &e else {
            panic!("{what}: {e:?}")
        };
        assert!(
            issues.iter().any(|i| i.code.as_str() == reason),
            "{what}: no {reason} in {issues:#?}"
        );

        // The CLI: exit 3, every issue on stderr, no output file.
        let doc_file = region.path().join("bad.json");
        fs::write(&doc_file, &doc).unwrap();
        let pkg = region.path().join("bad.age");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"seal",
            &"--profile",
            &clinic_dir,
            &"--to",
            &hospital_crt,
            &"--document",
            &doc_file,
            &"-o",
            &pkg,
        ];
        if with_att {
            args.extend([&"--attach" as &dyn AsRef<std::ffi::OsStr>, &att]);
        }
        let o = fails(run(&args), 3);
        let err = stderr(&o);
        assert!(
            err.contains("the document is not valid for this package; nothing was sealed"),
            "{what}: {err}"
        );
        assert!(err.contains(&issues[0].message), "{what}: {err}");
        assert!(!pkg.exists(), "{what}");
        let left: Vec<_> = fs::read_dir(region.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".renkei"))
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
    }
    // A document of another kind than the package.
    let doc = document_for(DocKind::DischargeSummary, CLINIC, HOSPITAL, &[]);
    let e = seal_doc(&clinic, &hospital, PackageKind::Referral, doc, vec![]).unwrap_err();
    assert!(
        matches!(&e, SealError::Document(i) if i[0].code == IssueCode::WrongKind),
        "{e:?}"
    );
    // A document naming another 紹介先 than the recipients.
    let doc = document_for(DocKind::Referral, CLINIC, RECOVERY, &[]);
    let e = seal_doc(&clinic, &hospital, PackageKind::Referral, doc, vec![]).unwrap_err();
    assert!(
        matches!(&e, SealError::Document(i) if i[0].code == IssueCode::WrongRecipient),
        "{e:?}"
    );
}

/// A hand-made package (bypassing seal's validation) from the clinic to
/// the hospital whose document is `doc`, with or without `a.pdf`.
fn crafted<'a>(
    clinic: &'a Facility,
    hospital: &'a Facility,
    doc: Vec<u8>,
    with_att: bool,
) -> Craft<'a> {
    let mut craft = Craft::new(clinic, &[hospital]);
    craft.entries = vec![RawEntry::file(package::DOCUMENT_PATH, doc)];
    if with_att {
        craft
            .entries
            .push(RawEntry::file("attachments/a.pdf", "%PDF-1.4 a\n"));
    }
    craft
        .entries
        .push(RawEntry::file(package::SENDER_CERT_PATH, clinic.cert.pem()));
    craft
}

#[test]
fn invalid_documents_in_genuine_packages_are_refused_at_open_with_nothing_written() {
    let (_region, clinic, hospital, _) = pair();
    // The crafter itself makes packages that open.
    let good = crafted(
        &clinic,
        &hospital,
        serde_json::to_vec(&referral_value()).unwrap(),
        true,
    );
    expect_opened(&hospital, &good.build());

    for (what, doc, reason, with_att) in invalid_documents() {
        let bytes = crafted(&clinic, &hospital, doc, with_att).build();
        let e = expect_refused(&hospital, &bytes);
        assert!(matches!(e, OpenError::Document(_)), "{what}: {e:?}");
        assert_eq!(e.reason_code(), reason, "{what}: {e}");
        assert!(
            e.to_string()
                .starts_with("the document in the package is not valid"),
            "{what}: {e}"
        );
    }
    // An attachment the document does not list.
    let mut craft = crafted(
        &clinic,
        &hospital,
        serde_json::to_vec(&referral_value()).unwrap(),
        true,
    );
    craft
        .entries
        .insert(2, RawEntry::file("attachments/extra.pdf", "%PDF-1.4 x\n"));
    let e = expect_refused(&hospital, &craft.build());
    assert_eq!(e.reason_code(), "document-attachment", "{e}");
    assert!(e.to_string().contains("attachments/extra.pdf"), "{e}");
}

#[test]
fn receive_refuses_an_invalid_document_with_a_rejection_receipt_carrying_its_reason() {
    let net = Net::start();
    let cases = [
        (
            "missing 950",
            serde_json::to_vec(&without_950(referral_value())).unwrap(),
            "document-missing-section",
        ),
        (
            "wrong facility",
            document_for(DocKind::Referral, RECOVERY, HOSPITAL, &["a.pdf"]),
            "document-wrong-sender",
        ),
    ];
    let session = net
        .rt
        .block_on(async {
            tokio::time::timeout(
                STEP,
                Session::open(&net.clinic.profile.path(""), Some(&net.url)),
            )
            .await
        })
        .expect("in time")
        .expect("session");
    // `send` seals first: an invalid document never leaves the clinic.
    let bad = net.p("bad.json");
    fs::write(&bad, &cases[0].1).unwrap();
    let o = fails(
        renkei!(
            "send",
            "--profile",
            net.clinic.profile.path(""),
            "--relay",
            &net.url,
            "--to",
            HOSPITAL,
            "--document",
            &bad
        ),
        3,
    );
    assert!(
        stderr(&o).contains("section 950 紹介目的 is missing"),
        "{}",
        stderr(&o)
    );
    let outbox: Vec<_> = fs::read_dir(net.clinic.profile.path("outbox"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(outbox.is_empty(), "{outbox:?}");
    let inbox = json(&ok(renkei!(
        "inbox",
        "--profile",
        net.hospital.profile.path(""),
        "--relay",
        &net.url,
        "--json"
    )));
    assert_eq!(inbox.as_array().map(Vec::len), Some(0), "{inbox:#}");

    for (what, doc, reason) in cases {
        let craft = crafted(&net.clinic, &net.hospital, doc, true);
        let m = craft.manifest();
        let bytes = craft.build_with(&m);
        let file = net.p(&format!("{reason}.age"));
        fs::write(&file, &bytes).unwrap();
        let envelope = sha256_hex(&bytes);
        net.rt
            .block_on(async {
                tokio::time::timeout(
                    STEP,
                    session.upload(&file, &m, &envelope, bytes.len() as u64, |_, _| {}),
                )
                .await
            })
            .expect("in time")
            .expect("upload");

        let out = net.p(&format!("received-{reason}"));
        let o = fails(
            renkei!(
                "receive",
                "--profile",
                net.hospital.profile.path(""),
                "--relay",
                &net.url,
                &envelope,
                "-o",
                &out,
                "--render",
                "html"
            ),
            3,
        );
        let err = stderr(&o);
        assert!(
            err.contains("the document in the package is not valid"),
            "{what}: {err}"
        );
        assert!(err.contains("rejection receipt sent"), "{what}: {err}");
        // Nothing of the package was released.
        let released: Vec<_> = fs::read_dir(&out)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(released.is_empty(), "{what}: {released:?}");
        assert!(net
            .hospital
            .profile
            .path("rejected")
            .join(format!("{envelope}.age"))
            .is_file());

        // The sender's status shows the signed rejection and its reason.
        let st = json(&ok(renkei!(
            "status",
            "--profile",
            net.clinic.profile.path(""),
            "--relay",
            &net.url,
            &envelope,
            "--json"
        )));
        assert_eq!(
            st[0]["recipients"][0]["state"], "rejected",
            "{what}: {st:#}"
        );
        assert_eq!(st[0]["recipients"][0]["reason"], reason, "{what}: {st:#}");
    }
    drop(session);
}

#[test]
fn script_in_text_fields_is_rendered_as_text_on_arrival() {
    let (region, clinic, hospital, _) = pair();
    let mut form = example_form(DocKind::Referral);
    form.patient.name = "山田 <script>alert(1)</script>".into();
    form.purpose = Some("精査を<img src=x onerror=alert(1)>お願いします".into());
    form.attachments.clear();
    let doc = renkei::document::build_json(DocKind::Referral, &form, &Default::default())
        .expect("markup is text to the form");
    let bytes = seal_doc(&clinic, &hospital, PackageKind::Referral, doc, vec![]).unwrap();
    let pkg = region.path().join("x.age");
    fs::write(&pkg, &bytes).unwrap();
    let out = region.path().join("x");
    ok(renkei!(
        "open",
        "--profile",
        hospital.profile.path(""),
        &pkg,
        "-o",
        &out,
        "--render",
        "html"
    ));
    let html = fs::read_to_string(out.join("document.html")).unwrap();
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
}

#[test]
fn a_clinical_info_package_carries_any_referral_type_document() {
    let (_region, clinic, hospital, _) = pair();
    let doc = document_for(DocKind::Referral, CLINIC, HOSPITAL, &[]);
    let bytes = seal_doc(&clinic, &hospital, PackageKind::ClinicalInfo, doc, vec![]).unwrap();
    let (opened, _a) = expect_opened(&hospital, &bytes);
    assert_eq!(opened.manifest.kind, PackageKind::ClinicalInfo);
    assert_eq!(opened.summary.kind, DocKind::Referral);
}

/// The eReferral example with its two facility codes replaced.
fn ereferral_between(from: &str, to: &str) -> Vec<u8> {
    fs::read_to_string(EREFERRAL_EXAMPLE)
        .expect("the eReferral example in tests/data/documents")
        .replace(FIXTURE_FROM, from)
        .replace(FIXTURE_TO, to)
        .into_bytes()
}

#[test]
fn the_ereferral_example_is_accepted_from_its_facility_and_refused_from_another() {
    let (region, clinic, hospital, _) = pair();
    // As it is, it names 港診療所 (1319876543) as 紹介元.
    let e = seal_doc(
        &clinic,
        &hospital,
        PackageKind::Referral,
        fs::read(EREFERRAL_EXAMPLE).unwrap(),
        vec![],
    )
    .unwrap_err();
    let SealError::Document(issues) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(issues[0].code, IssueCode::WrongSender, "{issues:#?}");
    assert!(e.to_string().contains(FIXTURE_FROM), "{e}");

    // From the facility it names: sealed, opened and rendered as it is.
    let doc = ereferral_between(CLINIC, HOSPITAL);
    let bytes = seal_doc(
        &clinic,
        &hospital,
        PackageKind::Referral,
        doc.clone(),
        vec![],
    )
    .unwrap();
    let (opened, attempt) = expect_opened(&hospital, &bytes);
    assert_eq!(opened.summary.spec, Spec::EReferral);
    assert_eq!(opened.summary.patient.name, "田中 太郎");
    assert_eq!(fs::read(attempt.out.join("document.json")).unwrap(), doc);

    // The same through the CLI, rendered as HTML on arrival.
    let doc_file = region.path().join("ereferral.json");
    fs::write(&doc_file, &doc).unwrap();
    let v = json(&ok(renkei!("document", "validate", &doc_file, "--json")));
    assert_eq!(v["specification"]["code"], "ereferral");
    let hospital_crt = region.path().join("hospital.crt");
    fs::write(&hospital_crt, &hospital.cert_pem).unwrap();
    let pkg = region.path().join("ereferral.age");
    ok(renkei!(
        "seal",
        "--profile",
        clinic.profile.path(""),
        "--to",
        &hospital_crt,
        "--document",
        &doc_file,
        "-o",
        &pkg
    ));
    let out = region.path().join("ereferral-opened");
    let o = ok(renkei!(
        "open",
        "--profile",
        hospital.profile.path(""),
        &pkg,
        "-o",
        &out,
        "--render",
        "html",
        "--json"
    ));
    let v = json(&o);
    assert_eq!(v["document"]["spec"], "ereferral", "{v:#}");
    let html = fs::read_to_string(out.join("document.html")).unwrap();
    assert!(html.contains("田中 太郎") && html.contains("港診療所"));
    assert!(html.contains("診療情報提供書 HL7 FHIR 記述仕様"));
    let shown = ok(renkei!(
        "document",
        "show",
        out.join("document.json"),
        "--format",
        "print"
    ));
    assert!(stdout(&shown).contains("2020年8月21日（令和2年8月21日）"));

    // The hospital may not forward it as its own.
    let e = seal_doc(&hospital, &clinic, PackageKind::Referral, doc, vec![]).unwrap_err();
    assert!(
        matches!(&e, SealError::Document(i) if i.iter().any(|i| i.code == IssueCode::WrongSender)),
        "{e:?}"
    );
}

/// A letter that is a PDF, in both formats: `document new --letter`, then
/// `send` refuses it without the PDF (exit 3, nothing queued) and carries
/// it with `--attach`; the hospital receives the structured summary and
/// the letter, byte for byte, rendered as a link and printable.
#[test]
fn a_pdf_letter_travels_with_its_pdf_and_not_without() {
    let net = Net::start();
    let dir = net.p("letters");
    fs::create_dir_all(&dir).unwrap();
    let pdf = dir.join("紹介状.pdf");
    fs::copy(PDF, &pdf).unwrap();
    let form = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/letter.toml");
    let outbox = || -> Vec<_> {
        let mut v: Vec<_> = fs::read_dir(net.clinic.profile.path("outbox"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    for format in ["jp-clins", "ereferral"] {
        let doc = dir.join(format!("letter-{format}.json"));
        let o = ok(renkei!(
            "document", "new", "referral", "--form", &form, "--letter", &pdf, "--format", format,
            "-o", &doc
        ));
        assert!(
            stdout(&o).contains("letter: attachments/紹介状.pdf"),
            "{}",
            stdout(&o)
        );

        // without the PDF: refused before anything is sealed or queued
        let queued = outbox();
        let o = fails(
            renkei!(
                "send",
                "--profile",
                net.clinic.profile.path(""),
                "--relay",
                &net.url,
                "--to",
                HOSPITAL,
                "--document",
                &doc
            ),
            3,
        );
        let err = stderr(&o);
        assert!(
            err.contains("the letter attachments/紹介状.pdf")
                && err.contains("attach the PDF (renkei seal --attach 紹介状.pdf)"),
            "{err}"
        );
        assert_eq!(outbox(), queued);

        // with it
        let sent = json(&ok(renkei!(
            "send",
            "--profile",
            net.clinic.profile.path(""),
            "--relay",
            &net.url,
            "--to",
            HOSPITAL,
            "--document",
            &doc,
            "--attach",
            &pdf,
            "--json"
        )));
        let envelope = sent["envelope_id"].as_str().unwrap().to_string();
        let package_id = sent["manifest"]["package_id"].as_str().unwrap().to_string();
        let received = net.p(&format!("received-letter-{format}"));
        let v = json(&ok(renkei!(
            "receive",
            "--profile",
            net.hospital.profile.path(""),
            "--relay",
            &net.url,
            &envelope,
            "-o",
            &received,
            "--render",
            "html",
            "--json"
        )));
        assert_eq!(v[0]["outcome"], "verified", "{v:#}");
        let d = &v[0]["document"];
        assert_eq!(d["letter"]["member"], "attachments/紹介状.pdf", "{d:#}");
        assert_eq!(d["letter"]["content_type"], "application/pdf");
        assert!(
            d["purpose"].as_str().unwrap().contains("労作性狭心症"),
            "{d:#}"
        );
        let folder = received.join(&package_id);
        assert_eq!(
            fs::read(folder.join("attachments/紹介状.pdf")).unwrap(),
            fs::read(PDF).unwrap()
        );
        let html = fs::read_to_string(folder.join("document.html")).unwrap();
        assert!(html.contains("<h2>紹介状（PDF）</h2>"), "{html}");
        assert!(
            html.contains("href=\"attachments/%E7%B4%B9%E4%BB%8B%E7%8A%B6.pdf\""),
            "{html}"
        );
        // shown beside its PDF (checked to be one), and printable
        let shown = ok(renkei!(
            "document",
            "show",
            folder.join("document.json"),
            "--format",
            "print"
        ));
        assert!(
            stdout(&shown).contains("PDF をそのまま印刷してください"),
            "{}",
            stdout(&shown)
        );
    }
}

#[cfg(unix)]
#[test]
fn opened_packages_and_their_renderings_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (_region, clinic, hospital, _) = pair();
    let bytes = seal_doc(
        &clinic,
        &hospital,
        PackageKind::Referral,
        fixture_between(CLINIC, HOSPITAL),
        vec![],
    )
    .unwrap();
    let (_, attempt) = expect_opened(&hospital, &bytes);
    assert_eq!(mode(&attempt.out), 0o700);
    assert_eq!(mode(&attempt.out.join("document.json")), 0o600);
    for format in [
        renkei::document::Format::Html,
        renkei::document::Format::Text,
    ] {
        let rendered = renkei::files::render_opened(&attempt.out, format).unwrap();
        assert_eq!(mode(&rendered), 0o600, "{}", rendered.display());
    }
}
