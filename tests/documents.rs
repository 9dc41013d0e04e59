//! Clinical documents: every example form builds a Bundle that validates,
//! in JP-CLINS and in the standard HL7 FHIR 記述仕様; the guides' own
//! example Bundles (vendored in tests/data/documents/) are accepted and
//! rendered; PDF letters build valid documents; invalid documents are
//! refused with the section (and the form field) named; HTML is escaped,
//! the fragments carry no styles; the print layout follows 別紙様式11; and
//! the renderings match golden files.
//!
//! Golden files live in tests/golden/documents/; regenerate them with
//! `RENKEI_UPDATE_GOLDEN=1 cargo test --test documents`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use renkei::document::cli::{run_with, DocumentCliError, DocumentCommand, View};
use renkei::document::codes;
use renkei::document::form::{AttachmentForm, LabResult};
use renkei::document::letter::{LetterError, MAX_LETTER_BYTES};
use renkei::document::render::{html_fragment, print_fragment, print_html};
use renkei::document::{
    build, build_json, build_letter, check_pdf, japanese_date, render, validate, validate_value,
    BuildOptions, DocKind, Expect, FacilityCode, Family, Form, Format, IdSource, Issue, IssueCode,
    LetterForm, Spec, Summary,
};
use serde_json::{json, Value};
use time::macros::datetime;

/// The JP-CLINS example 診療情報提供書 (jami-fhir-jp-wg/clinical-core).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/documents/jp-clins/Bundle-Bundle-CLINS-Referral-Example-01.json"
);
/// The example of the 診療情報提供書 HL7 FHIR 記述仕様 (jami-fhir-jp-wg/eReferral).
const EREFERRAL_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/documents/ereferral/Bundle-BundleReferralExample01.json"
);
/// A real PDF (the JP-CLINS guide's clinicalCourseExampleData.pdf).
const PDF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/documents/jp-clins/clinicalCourseExampleData.pdf"
);

const CLINIC: &str = "1311234569";
const HOSPITAL: &str = "1317654323";
const RECOVERY: &str = "1315555555";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn code(s: &str) -> FacilityCode {
    s.parse().unwrap()
}

fn example(kind: DocKind) -> Form {
    let path = manifest_dir().join("examples").join(format!("{kind}.toml"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Form::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixed() -> BuildOptions {
    BuildOptions {
        now: Some(datetime!(2026-05-12 01:00:00 UTC)),
        ids: IdSource::Seeded(1),
        in_reply_to: None,
        format: Family::JpClins,
    }
}

fn fixed_in(format: Family) -> BuildOptions {
    BuildOptions { format, ..fixed() }
}

/// What a package carrying this form's document would say.
fn expect_for(kind: DocKind, form: &Form) -> Expect {
    Expect {
        sender: Some((&form.from.facility_id).into()),
        recipients: form.to.iter().map(|t| (&t.facility_id).into()).collect(),
        attachment_members: Some(
            form.attachments
                .iter()
                .map(|a| format!("attachments/{}", a.file))
                .chain(["document.json".to_string(), "sender.crt".to_string()])
                .collect(),
        ),
        kind: Some(kind),
        in_reply_to: form.in_reply_to.clone(),
    }
}

fn built(kind: DocKind) -> (Form, Value) {
    let form = example(kind);
    let v = build(kind, &form, &fixed()).unwrap();
    (form, v)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(FIXTURE).expect("the JP-CLINS example in tests/data/documents")
}

fn ereferral_bytes() -> Vec<u8> {
    std::fs::read(EREFERRAL_EXAMPLE).expect("the eReferral example in tests/data/documents")
}

/// The short form of a PDF letter (examples/letter.toml).
fn letter_form() -> LetterForm {
    let path = manifest_dir().join("examples/letter.toml");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    LetterForm::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a package carrying a letter (and the form's attachments) says.
fn expect_letter(kind: DocKind, form: &LetterForm, file: &str) -> Expect {
    Expect {
        sender: Some((&form.from.facility_id).into()),
        recipients: form.to.iter().map(|t| (&t.facility_id).into()).collect(),
        attachment_members: Some(
            std::iter::once(format!("attachments/{file}"))
                .chain(
                    form.attachments
                        .iter()
                        .map(|a| format!("attachments/{}", a.file)),
                )
                .chain(["document.json".to_string()])
                .collect(),
        ),
        kind: Some(kind),
        in_reply_to: None,
    }
}

fn issues(r: Result<Summary, Vec<Issue>>) -> Vec<Issue> {
    match r {
        Ok(s) => panic!("expected the document to be refused, it passed: {s:?}"),
        Err(i) => i,
    }
}

fn has(issues: &[Issue], code: IssueCode, text: &str) -> bool {
    issues
        .iter()
        .any(|i| i.code == code && i.message.contains(text))
}

fn assert_has(issues: &[Issue], code: IssueCode, text: &str) {
    assert!(
        has(issues, code, text),
        "no {code:?} issue containing {text:?} in {issues:#?}"
    );
}

/// The top-level section with this code.
fn top_mut<'a>(v: &'a mut Value, code: &str) -> &'a mut Value {
    v["entry"][0]["resource"]["section"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["code"]["coding"][0]["code"] == code)
        .unwrap_or_else(|| panic!("no section {code}"))
}

/// The codes of the top-level sections and of those under 300, with their
/// code systems.
fn section_codes(v: &Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let comp = &v["entry"][0]["resource"];
    let code = |s: &Value| s["code"]["coding"][0]["code"].as_str().unwrap().to_string();
    let system = |s: &Value| {
        s["code"]["coding"][0]["system"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let top: Vec<&Value> = comp["section"].as_array().unwrap().iter().collect();
    let inner: Vec<&Value> = top
        .iter()
        .filter(|s| s["code"]["coding"][0]["code"] == "300")
        .flat_map(|s| s["section"].as_array().unwrap())
        .collect();
    let mut systems: Vec<String> = top.iter().chain(&inner).map(|s| system(s)).collect();
    systems.sort();
    systems.dedup();
    (
        top.iter().map(|s| code(s)).collect(),
        inner.iter().map(|s| code(s)).collect(),
        systems,
    )
}

/// The structured section (under 300) with this code.
fn structured_mut<'a>(v: &'a mut Value, code: &str) -> &'a mut Value {
    let top = v["entry"][0]["resource"]["section"].as_array_mut().unwrap();
    let s300 = top
        .iter_mut()
        .find(|s| s["code"]["coding"][0]["code"] == "300")
        .unwrap();
    s300["section"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["code"]["coding"][0]["code"] == code)
        .unwrap_or_else(|| panic!("no section {code}"))
}

fn remove_structured(v: &mut Value, code: &str) {
    let top = v["entry"][0]["resource"]["section"].as_array_mut().unwrap();
    let s300 = top
        .iter_mut()
        .find(|s| s["code"]["coding"][0]["code"] == "300")
        .unwrap();
    s300["section"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["code"]["coding"][0]["code"] != code);
}

/// Everything under one module so `cargo test document` selects it.
mod documents {
    use super::*;

    // ---------------------------------------------------------------- round trips

    #[test]
    fn every_example_form_builds_a_bundle_that_validates() {
        for kind in DocKind::ALL {
            let form = example(kind);
            let json = build_json(kind, &form, &BuildOptions::default())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            let s = validate(&json, &expect_for(kind, &form))
                .unwrap_or_else(|e| panic!("{kind}: {e:#?}"));
            assert_eq!(s.kind, kind);
            assert!(s.kind_tagged);
            assert!(s.warnings.is_empty(), "{kind}: {:?}", s.warnings);
            assert_eq!(s.patient.name, form.patient.name);
            assert_eq!(s.patient.kana.as_deref(), Some(form.patient.kana.as_str()));
            assert_eq!(s.from.facility_id, form.from.facility_id);
            assert_eq!(
                s.to.as_ref().map(|t| t.facility_id.clone()),
                form.to.as_ref().map(|t| (&t.facility_id).into())
            );
            assert_eq!(s.answers, form.in_reply_to);
            assert_eq!(s.attachments.len(), form.attachments.len());
            if kind.is_referral_type() {
                assert_eq!(s.type_code, "57133-1");
                assert_eq!(s.title, "診療情報提供書");
                assert_eq!(
                    s.purpose.as_deref(),
                    form.purpose.as_deref().map(str::trim_start)
                );
                assert!(!s.diagnoses.is_empty());
            } else {
                assert_eq!(s.type_code, "18842-5");
                assert_eq!(s.title, "退院時サマリー");
                let d = form.discharge.as_ref().unwrap();
                assert_eq!(s.diagnoses, d.diagnoses);
                assert_eq!(
                    s.admission,
                    Some((Some(d.admitted.clone()), Some(d.discharged.clone())))
                );
            }
            // and it renders with the patient and every standard heading
            let text = render(&serde_json::from_slice(&json).unwrap(), Format::Text);
            assert!(text.contains(&form.patient.name), "{text}");
            for h in [
                "【紹介元】",
                "【患者】",
                "【現病歴】",
                "【既往歴】",
                "【アレルギー",
                "【備考",
            ] {
                assert!(text.contains(h), "{kind}: {h} missing in\n{text}");
            }
        }
    }

    #[test]
    fn the_demo_region_facilities_appear_in_the_examples() {
        let r = example(DocKind::Referral);
        assert_eq!(r.from.facility_id.as_str(), CLINIC);
        assert_eq!(r.to.as_ref().unwrap().facility_id.as_str(), HOSPITAL);
        let t = example(DocKind::Transfer);
        assert_eq!(t.to.as_ref().unwrap().facility_id.as_str(), RECOVERY);
        assert_eq!(t.to.as_ref().unwrap().name, "みどりリハビリテーション病院");
    }

    #[test]
    fn the_bundle_has_the_jp_clins_shape() {
        let (form, v) = built(DocKind::Referral);
        assert_eq!(v["resourceType"], "Bundle");
        assert_eq!(v["type"], "document");
        assert_eq!(
            v["identifier"]["system"],
            "http://jpfhir.jp/fhir/clins/bundle-identifier"
        );
        assert!(v["identifier"]["value"]
            .as_str()
            .unwrap()
            .starts_with("1311234569^2026^"));
        let comp = &v["entry"][0]["resource"];
        assert_eq!(comp["resourceType"], "Composition");
        assert_eq!(comp["status"], "final");
        assert_eq!(comp["title"], "診療情報提供書");
        assert_eq!(comp["type"]["coding"][0]["code"], "57133-1");
        assert_eq!(
            comp["type"]["coding"][0]["system"],
            "http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes"
        );
        assert_eq!(comp["category"][0]["coding"][0]["code"], "OUTPATIENT");
        assert_eq!(
            comp["identifier"]["system"],
            "http://jpfhir.jp/fhir/core/IdSystem/resourceInstance-identifier"
        );
        assert_eq!(comp["identifier"]["value"], "1311234569^2026^2026-0142");
        assert_eq!(comp["event"][0]["code"][0]["text"], "診療情報提供書発行");
        assert_eq!(comp["event"][0]["period"]["start"], "2026-05-12");
        assert_eq!(comp["date"], "2026-05-12T10:00:00+09:00");
        assert_eq!(v["timestamp"], "2026-05-12T10:00:00.000+09:00");
        assert_eq!(comp["author"].as_array().unwrap().len(), 2);
        let top: Vec<&str> = comp["section"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["code"]["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(top, ["920", "910", "300", "210", "220"]);
        for s in comp["section"].as_array().unwrap() {
            assert_eq!(
                s["code"]["coding"][0]["system"],
                "http://jpfhir.jp/fhir/clins/CodeSystem/document-section"
            );
        }
        let s920 = &comp["section"][0];
        assert_eq!(s920["title"], "紹介元情報");
        assert_eq!(s920["code"]["coding"][0]["display"], "紹介元情報セクション");
        let inner: Vec<&str> = comp["section"][2]["section"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["code"]["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            inner,
            ["950", "340", "360", "370", "510", "520", "550", "610", "430", "620", "330", "420"]
        );
        // every fullUrl a urn:uuid, every reference one of them
        let urls: Vec<&str> = v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .collect();
        assert!(urls
            .iter()
            .all(|u| u.starts_with("urn:uuid:") && u.len() == 45));
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("reference") {
                        out.push(r);
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&v, &mut all);
        assert!(all.len() > 20);
        assert!(all.iter().all(|r| urls.contains(r)), "{all:?}");
        // organizations carry the medical institution codes
        let org_codes: Vec<&str> = v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Organization")
            .map(|e| {
                let id = &e["resource"]["identifier"][0];
                assert_eq!(
                    id["system"],
                    "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no"
                );
                id["value"].as_str().unwrap()
            })
            .collect();
        assert_eq!(org_codes, [CLINIC, HOSPITAL]);
        // the attachments name the package members
        let att: Vec<&str> = v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "DocumentReference")
            .map(|e| {
                e["resource"]["content"][0]["attachment"]["url"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(att, ["attachments/心電図.pdf", "attachments/検査結果.pdf"]);
        assert_eq!(form.attachments.len(), 2);
    }

    #[test]
    fn replies_and_other_answers_link_to_the_package_they_answer() {
        let id = "0b7f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f";
        for kind in [
            DocKind::Reply,
            DocKind::ReverseReferral,
            DocKind::Transfer,
            DocKind::DischargeSummary,
        ] {
            let form = example(kind);
            let opts = BuildOptions {
                in_reply_to: Some(id.to_string()),
                ..fixed()
            };
            let v = build(kind, &form, &opts).unwrap();
            let comp = &v["entry"][0]["resource"];
            assert_eq!(comp["relatesTo"][0]["code"], "appends");
            assert_eq!(
                comp["relatesTo"][0]["targetIdentifier"]["system"],
                "urn:ietf:rfc:3986"
            );
            assert_eq!(
                comp["relatesTo"][0]["targetIdentifier"]["value"],
                format!("urn:uuid:{id}")
            );
            assert_eq!(comp["meta"]["tag"][0]["system"], "urn:renkei:document-kind");
            assert_eq!(comp["meta"]["tag"][0]["code"], kind.as_str());
            let mut e = expect_for(kind, &form);
            e.in_reply_to = Some(id.to_uppercase());
            let s = validate_value(&v, &e).unwrap();
            assert_eq!(s.answers.as_deref(), Some(id));
            // the package must answer the same package as the document
            e.in_reply_to = Some("11111111-2222-4333-8444-555555555555".into());
            assert_has(
                &issues(validate_value(&v, &e)),
                IssueCode::WrongInReplyTo,
                id,
            );
        }
        // only the canonical form (lowercase, hyphenated) at the document
        // boundary: an upper-case, braced or unhyphenated ID is refused
        let form = example(DocKind::Reply);
        let v = build(
            DocKind::Reply,
            &form,
            &BuildOptions {
                in_reply_to: Some(id.to_uppercase()),
                ..fixed()
            },
        )
        .unwrap();
        let comp = &v["entry"][0]["resource"];
        assert_eq!(
            comp["relatesTo"][0]["targetIdentifier"]["value"],
            format!("urn:uuid:{id}"),
            "built from a user's upper-case ID, written canonical"
        );
        for other in [
            id.to_uppercase(),
            format!("{{{id}}}"),
            id.replace('-', ""),
            "not-a-uuid".to_string(),
        ] {
            let mut v = v.clone();
            v["entry"][0]["resource"]["relatesTo"][0]["targetIdentifier"]["value"] =
                json!(format!("urn:uuid:{other}"));
            let mut e = expect_for(DocKind::Reply, &form);
            e.in_reply_to = None;
            assert_has(
                &issues(validate_value(&v, &e)),
                IssueCode::WrongInReplyTo,
                "not a package ID",
            );
        }
        // a reply without the package it answers is refused at build time
        let mut form = example(DocKind::Reply);
        form.in_reply_to = None;
        let e = build(DocKind::Reply, &form, &fixed()).unwrap_err();
        assert_eq!(e.0[0].field, "in_reply_to");
    }

    #[test]
    fn seeded_builds_are_reproducible() {
        let form = example(DocKind::Referral);
        let a = build_json(DocKind::Referral, &form, &fixed()).unwrap();
        let b = build_json(DocKind::Referral, &form, &fixed()).unwrap();
        assert_eq!(a, b);
        let c = build_json(
            DocKind::Referral,
            &form,
            &BuildOptions {
                ids: IdSource::Seeded(2),
                ..fixed()
            },
        )
        .unwrap();
        assert_ne!(a, c);
        assert!(a.starts_with(b"{\n  \"resourceType\": \"Bundle\",\n  \"id\": "));
    }

    // ---------------------------------------------------------------- the fixture

    #[test]
    fn the_jp_clins_example_is_accepted_as_it_is() {
        let b = fixture_bytes();
        let s = validate(&b, &Expect::default()).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(s.kind, DocKind::Referral);
        assert!(!s.kind_tagged);
        assert_eq!(s.patient.name, "牧野 爛漫");
        assert_eq!(s.patient.kana.as_deref(), Some("マキノ ランマン"));
        assert_eq!(s.purpose.as_deref(), Some("腹痛精査お願いします。"));
        assert_eq!(s.from.facility_id.as_str(), "1319876543");
        assert_eq!(s.from.name.as_deref(), Some("港診療所"));
        assert_eq!(s.from.doctor.as_deref(), Some("大河内 勘三郎"));
        assert_eq!(s.to.as_ref().unwrap().facility_id.as_str(), "1311234567");
        assert_eq!(
            s.to.as_ref().unwrap().department.as_deref(),
            Some("循環器内科")
        );
        assert_eq!(s.diagnoses, ["上腹部痛", "腰痛"]);
        assert_eq!(s.answers, None);
        // its DocumentReference points at a file outside the package: a warning only
        assert!(s
            .warnings
            .iter()
            .any(|w| w.contains("file:///clinicalCourseExampleData.pdf")));

        // with its own facility IDs, as a package from 港診療所 to 東京第一テスト病院
        let own = Expect {
            sender: Some(code("1319876543")),
            recipients: vec![code("1311234567")],
            attachment_members: Some(vec!["document.json".into()]),
            kind: Some(DocKind::Referral),
            in_reply_to: None,
        };
        validate(&b, &own).unwrap_or_else(|e| panic!("{e:#?}"));
        // an untagged 診療情報提供書 may travel as any referral-type kind
        validate(
            &b,
            &Expect {
                kind: Some(DocKind::Reply),
                ..own.clone()
            },
        )
        .unwrap();
        assert_has(
            &issues(validate(
                &b,
                &Expect {
                    kind: Some(DocKind::DischargeSummary),
                    ..own.clone()
                },
            )),
            IssueCode::WrongKind,
            "退院時サマリー",
        );
    }

    #[test]
    fn the_jp_clins_example_is_refused_from_another_sender() {
        let b = fixture_bytes();
        let e = Expect {
            sender: Some(code(CLINIC)),
            ..Expect::default()
        };
        let i = issues(validate(&b, &e));
        assert_eq!(i.len(), 1, "{i:#?}");
        assert_eq!(i[0].code, IssueCode::WrongSender);
        assert_eq!(i[0].section.as_deref(), Some("920"));
        assert!(i[0].message.contains("紹介元"), "{}", i[0]);
        assert!(i[0].message.contains("1319876543"), "{}", i[0]);
        assert!(
            i[0].message
                .contains("is not the sending facility 1311234569"),
            "{}",
            i[0]
        );

        let e = Expect {
            recipients: vec![code(HOSPITAL), code(RECOVERY)],
            ..Expect::default()
        };
        let i = issues(validate(&b, &e));
        assert_has(
            &i,
            IssueCode::WrongRecipient,
            "紹介先 (section 910 紹介先情報) is 1311234567",
        );
    }

    #[test]
    fn the_jp_clins_example_renders_in_japanese() {
        let v: Value = serde_json::from_slice(&fixture_bytes()).unwrap();
        let text = render(&v, Format::Text);
        for want in [
            "診療情報提供書",
            "【紹介先】",
            "東京第一テスト病院",
            "【紹介元】",
            "港診療所",
            "【患者】",
            "牧野 爛漫",
            "生年月日: 1930年6月28日（昭和5年6月28日）",
            "作成日: 2020年8月21日（令和2年8月21日）",
            "女性",
            "【紹介目的】",
            "腹痛精査お願いします。",
            "【傷病名・主訴】",
            "上腹部痛",
            "【現病歴】",
            "【既往歴】",
            "狭心症",
            "【アレルギー・不耐性反応】",
            "さば",
            "【処方（投薬指示）】",
            "【検査結果】",
            "【備考・連絡】",
            "【家族歴】",
            "母　胃がん",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        let html = render(&v, Format::Html);
        assert!(html.starts_with("<!DOCTYPE html>"));
        for want in [
            "<h2>紹介先</h2>",
            "<h2>紹介元</h2>",
            "<h2>患者</h2>",
            "<h2>紹介目的</h2>",
            "牧野 爛漫",
        ] {
            assert!(html.contains(want), "{want:?} missing");
        }
        assert_self_contained(&html);
    }

    // ---------------------------------------------------------------- refusals

    #[test]
    fn a_missing_referral_purpose_is_named() {
        let (form, mut v) = built(DocKind::Referral);
        remove_structured(&mut v, "950");
        let i = issues(validate_value(&v, &expect_for(DocKind::Referral, &form)));
        assert_has(
            &i,
            IssueCode::MissingSection,
            "section 950 紹介目的 is missing",
        );
        let missing = i
            .iter()
            .find(|x| x.code == IssueCode::MissingSection)
            .unwrap();
        assert_eq!(missing.section.as_deref(), Some("950"));
    }

    #[test]
    fn missing_discharge_summary_sections_are_named() {
        let (form, mut v) = built(DocKind::DischargeSummary);
        remove_structured(&mut v, "333");
        remove_structured(&mut v, "424");
        let i = issues(validate_value(
            &v,
            &expect_for(DocKind::DischargeSummary, &form),
        ));
        assert_has(
            &i,
            IssueCode::MissingSection,
            "section 333 入院中経過 is missing",
        );
        assert_has(
            &i,
            IssueCode::MissingSection,
            "section 424 退院時方針指示 is missing",
        );
    }

    #[test]
    fn a_dangling_reference_is_refused() {
        let (form, mut v) = built(DocKind::Referral);
        structured_mut(&mut v, "340")["entry"][0]["reference"] =
            json!("urn:uuid:00000000-0000-4000-8000-000000000000");
        let i = issues(validate_value(&v, &expect_for(DocKind::Referral, &form)));
        assert_has(
            &i,
            IssueCode::DanglingReference,
            "section 340 傷病名・主訴: reference \"urn:uuid:00000000-0000-4000-8000-000000000000\"",
        );
        // also outside sections, and for contained references
        let (_, mut v) = built(DocKind::Referral);
        v["entry"][1]["resource"]["managingOrganization"] =
            json!({ "reference": "Organization/nowhere" });
        v["entry"][2]["resource"]["qualification"] =
            json!([{ "code": { "text": "x" }, "issuer": { "reference": "#missing" } }]);
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::DanglingReference,
            "\"Organization/nowhere\" at Patient.managingOrganization",
        );
        assert_has(&i, IssueCode::DanglingReference, "\"#missing\"");
    }

    #[test]
    fn a_reference_to_the_wrong_type_is_refused() {
        let (_, mut v) = built(DocKind::Referral);
        let patient = v["entry"][1]["fullUrl"].clone();
        structured_mut(&mut v, "510")["entry"][0]["reference"] = patient;
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::DanglingReference,
            "declared as a AllergyIntolerance but is a Patient",
        );
        assert_has(
            &i,
            IssueCode::SectionEntry,
            "section 510 アレルギー・不耐性反応: entry 1 is a Patient, expected AllergyIntolerance",
        );
    }

    #[test]
    fn the_wrong_sender_or_recipient_is_refused() {
        let (form, v) = built(DocKind::Referral);
        let mut e = expect_for(DocKind::Referral, &form);
        e.sender = Some(code(RECOVERY));
        assert_has(
            &issues(validate_value(&v, &e)),
            IssueCode::WrongSender,
            "紹介元 (section 920 紹介元情報) is 1311234569 さくら内科クリニック, which is not the sending facility 1315555555",
        );
        let mut e = expect_for(DocKind::Referral, &form);
        e.recipients = vec![code(RECOVERY)];
        assert_has(
            &issues(validate_value(&v, &e)),
            IssueCode::WrongRecipient,
            "which is not a recipient of the package (1315555555)",
        );
        // a discharge summary's sender is its custodian
        let (form, v) = built(DocKind::DischargeSummary);
        let mut e = expect_for(DocKind::DischargeSummary, &form);
        e.sender = Some(code(CLINIC));
        assert_has(
            &issues(validate_value(&v, &e)),
            IssueCode::WrongSender,
            "the writing facility (Composition.custodian) is 1317654323",
        );
    }

    #[test]
    fn an_organization_without_a_facility_code_is_refused() {
        let (_, mut v) = built(DocKind::Referral);
        for e in v["entry"].as_array_mut().unwrap() {
            if e["resource"]["resourceType"] == "Organization" {
                e["resource"]["identifier"] = json!([{ "system": "urn:example", "value": "x" }]);
            }
        }
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::MissingFacilityCode,
            "紹介元 (section 920 紹介元情報) has no 10-digit medical institution code",
        );
        assert_has(
            &i,
            IssueCode::MissingFacilityCode,
            "紹介先 (section 910 紹介先情報) has no 10-digit",
        );
    }

    #[test]
    fn attachments_must_match_the_package_members() {
        let (form, v) = built(DocKind::Referral);
        let mut e = expect_for(DocKind::Referral, &form);
        e.attachment_members = Some(vec![
            "document.json".into(),
            "attachments/心電図.pdf".into(),
        ]);
        assert_has(
            &issues(validate_value(&v, &e)),
            IssueCode::Attachment,
            "section 210 添付情報: attachment attachments/検査結果.pdf is referenced but the package has no such member",
        );
        let mut e = expect_for(DocKind::Referral, &form);
        e.attachment_members
            .as_mut()
            .unwrap()
            .push("attachments/extra.png".into());
        assert_has(
            &issues(validate_value(&v, &e)),
            IssueCode::Attachment,
            "package member attachments/extra.png is not listed in section 210 添付情報",
        );
        // a package-member URL that is not a valid member name
        let (_, mut v) = built(DocKind::Referral);
        for ent in v["entry"].as_array_mut().unwrap() {
            if ent["resource"]["resourceType"] == "DocumentReference" {
                ent["resource"]["content"][0]["attachment"]["url"] =
                    json!("attachments/../manifest.json");
            }
        }
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::Attachment,
            "is not a valid package member name",
        );
        // names with spaces travel percent-encoded
        let mut form = example(DocKind::Referral);
        form.attachments = vec![AttachmentForm {
            file: "胸部 X線.png".into(),
            title: "胸部X線".into(),
        }];
        let v = build(DocKind::Referral, &form, &fixed()).unwrap();
        let s = validate_value(&v, &expect_for(DocKind::Referral, &form)).unwrap();
        assert_eq!(s.attachments[0].member, "attachments/胸部 X線.png");
        assert_eq!(s.attachments[0].content_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn unknown_and_misplaced_section_codes_are_refused() {
        let (_, mut v) = built(DocKind::Referral);
        structured_mut(&mut v, "370")["code"]["coding"][0]["code"] = json!("999");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::UnknownSection,
            "section code 999 (既往歴) is not a section of a 診療情報提供書",
        );
        let (_, mut v) = built(DocKind::Referral);
        structured_mut(&mut v, "370")["code"]["coding"][0]["code"] = json!("333");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::UnknownSection,
            "section 333 入院中経過 belongs to a 退院時サマリー, not a 診療情報提供書",
        );
        let (_, mut v) = built(DocKind::Referral);
        structured_mut(&mut v, "370")["code"]["coding"][0]["system"] = json!("http://loinc.org");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::UnknownSection,
            "not with a section code of JP-CLINS 診療情報提供書",
        );
        // 950 moved to the top level
        let (_, mut v) = built(DocKind::Referral);
        let s950 = structured_mut(&mut v, "950").clone();
        remove_structured(&mut v, "950");
        v["entry"][0]["resource"]["section"]
            .as_array_mut()
            .unwrap()
            .push(s950);
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::MisplacedSection,
            "section 950 紹介目的 must be inside 300 構造情報",
        );
        // a section twice
        let (_, mut v) = built(DocKind::Referral);
        let s360 = structured_mut(&mut v, "360").clone();
        v["entry"][0]["resource"]["section"][2]["section"]
            .as_array_mut()
            .unwrap()
            .push(s360);
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::DuplicateSection,
            "section 360 現病歴 appears 2 times",
        );
        // an empty section
        let (_, mut v) = built(DocKind::Referral);
        let s = structured_mut(&mut v, "550");
        s.as_object_mut().unwrap().remove("text");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::EmptySection,
            "section 550 家族歴 has neither text nor entries",
        );
    }

    #[test]
    fn malformed_input_is_refused_with_a_clear_error() {
        let e = Expect::default();
        let i = issues(validate(b"{\"resourceType\": \"Bundle\",", &e));
        assert_eq!(i[0].code, IssueCode::NotJson);
        assert!(i[0].message.contains("not well-formed JSON"), "{}", i[0]);
        let mut bad_utf8 = fixture_bytes();
        bad_utf8.insert(100, 0xff);
        let i = issues(validate(&bad_utf8, &e));
        assert_eq!(i[0].code, IssueCode::NotUtf8);
        assert!(i[0].message.contains("offset 100"), "{}", i[0]);
        let i = issues(validate(br#"{"resourceType":"Composition"}"#, &e));
        assert_eq!(i[0].code, IssueCode::NotBundle);
        assert!(i[0].message.contains("\"Composition\""));
        let mut v: Value = serde_json::from_slice(&fixture_bytes()).unwrap();
        v["type"] = json!("collection");
        let i = issues(validate(&bytes(&v), &e));
        assert_eq!(i[0].code, IssueCode::NotDocument);
        assert!(i[0].message.contains("\"collection\""));
        // a UTF-8 byte order mark is tolerated
        let mut bom = "\u{feff}".as_bytes().to_vec();
        bom.extend(fixture_bytes());
        validate(&bom, &e).unwrap();
    }

    #[test]
    fn bundle_and_composition_shape_problems_are_named() {
        let (_, mut v) = built(DocKind::Referral);
        v.as_object_mut().unwrap().remove("identifier");
        v.as_object_mut().unwrap().remove("timestamp");
        let url = v["entry"][1]["fullUrl"].clone();
        v["entry"][2]["fullUrl"] = url;
        v["entry"][0]["resource"]["status"] = json!("preliminary");
        v["entry"][0]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("identifier");
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::Bundle,
            "Bundle.identifier needs a system and a value",
        );
        assert_has(&i, IssueCode::Bundle, "Bundle.timestamp is missing");
        assert_has(&i, IssueCode::Bundle, "is used by another entry too");
        assert_has(
            &i,
            IssueCode::Composition,
            "Composition.status is \"preliminary\"",
        );
        assert_has(
            &i,
            IssueCode::Composition,
            "Composition.identifier (文書番号) is missing",
        );

        let (_, mut v) = built(DocKind::Referral);
        v["entry"].as_array_mut().unwrap().swap(0, 1);
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::Bundle,
            "must be its Composition",
        );

        let (_, mut v) = built(DocKind::Referral);
        v["entry"][0]["resource"]["type"]["coding"][0]["code"] = json!("11488-4");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::Composition,
            "Composition.type is 11488-4",
        );

        let (_, mut v) = built(DocKind::Referral);
        v["entry"][0]["resource"]["meta"]["tag"][0]["code"] = json!("discharge-summary");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::WrongKind,
            "tagged as a 退院時サマリー",
        );
    }

    #[test]
    fn the_package_kind_must_match_a_tagged_document() {
        let (form, v) = built(DocKind::Reply);
        let mut e = expect_for(DocKind::Reply, &form);
        e.kind = Some(DocKind::ReverseReferral);
        assert_has(
            &issues(validate_value(&v, &e)),
            IssueCode::WrongKind,
            "the package is a 逆紹介 (reverse-referral) but the document is a 返書 (reply)",
        );
    }

    // ---------------------------------------------------------------- escaping

    /// Nothing is loaded from anywhere; links only point at the package's
    /// own attachments.
    fn assert_no_external(html: &str) {
        let lower = html.to_lowercase();
        for bad in [
            "<script",
            "<link",
            "<img",
            "<iframe",
            "<object",
            "src=\"",
            "url(",
            "@import",
            "http://",
            "https://",
            "javascript:",
        ] {
            assert!(!lower.contains(bad), "{bad:?} in HTML");
        }
        for (i, _) in lower.match_indices("href=\"") {
            assert!(
                lower[i + 6..].starts_with("attachments/"),
                "a link outside the package: {}",
                &html[i..(i + 60).min(html.len())]
            );
        }
    }

    fn assert_self_contained(html: &str) {
        assert_no_external(html);
        assert!(html.to_lowercase().contains("content-security-policy"));
    }

    /// A fragment for a page with a strict CSP: no inline style of any
    /// kind, no script, no head; its elements carry only `class` (an `rk-`
    /// class), `href` (to an attachment) and `lang` attributes.
    fn assert_fragment(html: &str) {
        assert_no_external(html);
        let lower = html.to_lowercase();
        for bad in ["<style", "<script", "<!doctype", "<html", "<head", "<meta"] {
            assert!(!lower.contains(bad), "{bad:?} in fragment");
        }
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            let end = rest[i..].find('>').expect("a closed tag") + i;
            let tag = &rest[i + 1..end];
            rest = &rest[end + 1..];
            let mut parts = tag.trim_start_matches('/').splitn(2, ' ');
            let _name = parts.next().unwrap();
            let mut attrs = parts.next().unwrap_or_default();
            while let Some(eq) = attrs.find("=\"") {
                let name = attrs[..eq].trim();
                let value_end = attrs[eq + 2..].find('"').expect("closed value") + eq + 2;
                let value = &attrs[eq + 2..value_end];
                match name {
                    "class" => assert!(value.starts_with("rk-"), "<{tag}>"),
                    "href" => assert!(value.starts_with("attachments/"), "<{tag}>"),
                    "lang" => assert_eq!(value, "ja"),
                    other => panic!("attribute {other:?} in <{tag}>"),
                }
                attrs = &attrs[value_end + 1..];
            }
            assert!(attrs.trim().is_empty(), "<{tag}>");
        }
        assert!(html.starts_with("<article class=\"rk-"), "{html}");
        assert!(html.trim_end().ends_with("</article>"));
    }

    #[test]
    fn markup_in_form_fields_is_escaped_in_html() {
        let evil = "<script>alert('x')</script>";
        let mut form = example(DocKind::Referral);
        form.patient.name = format!("山田 {evil}");
        form.purpose = Some(format!("精査 {evil} & \"quote\""));
        form.from.name = "<img src=x onerror=alert(1)>クリニック".to_string();
        form.diagnoses.push(evil.into());
        form.attachments[0].title = evil.into();
        form.lab_results.push(LabResult {
            item: "<b>x</b>".into(),
            value: "</li><script>".into(),
            unit: None,
            date: None,
        });
        let v = build(DocKind::Referral, &form, &fixed()).unwrap();
        // the narrative stays well-formed: the markup is text inside it
        let s950 = structured_mut(&mut v.clone(), "950")["text"]["div"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(s950.contains("&lt;script&gt;alert("), "{s950}");
        let s = validate_value(&v, &expect_for(DocKind::Referral, &form)).unwrap();
        assert_eq!(s.patient.name, form.patient.name);
        let html = render(&v, Format::Html);
        assert_self_contained(&html);
        assert!(html.contains("山田 &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;クリニック"));
        assert!(html.contains("&amp; &quot;quote&quot;"));
        assert!(html.contains("&lt;/li&gt;&lt;script&gt;"));
        // the text rendering keeps the characters as they are
        assert!(render(&v, Format::Text).contains(evil));
    }

    #[test]
    fn markup_in_a_third_party_narrative_is_rendered_as_text() {
        let mut v: Value = serde_json::from_slice(&fixture_bytes()).unwrap();
        let comp = &mut v["entry"][0]["resource"];
        comp["section"][2]["section"][5]["text"]["div"] = json!(
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">母 <script>alert(1)</script><img src=\"http://evil.example/x.png\"/> &lt;b&gt;胃がん</div>"
        );
        comp["title"] = json!("診療情報提供書<style>body{display:none}</style>");
        // the patient name carries a terminal escape and a bidi override
        v["entry"][1]["resource"]["name"][0]["text"] = json!("牧野\u{1b}[2J \u{202e}爛漫");
        validate(&bytes(&v), &Expect::default()).unwrap();
        let html = render(&v, Format::Html);
        assert_self_contained(&html);
        assert!(html.contains("母 alert(1) &lt;b&gt;胃がん"), "{html}");
        assert!(html.contains("診療情報提供書&lt;style&gt;"));
        assert!(!html.contains('\u{1b}') && !html.contains('\u{202e}'));
        let text = render(&v, Format::Text);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'));
        assert!(text.contains("牧野\u{fffd}[2J \u{fffd}爛漫"));
    }

    // ---------------------------------------------------------------- golden files

    fn golden(name: &str, actual: &str) {
        let path = manifest_dir().join("tests/golden/documents").join(name);
        if std::env::var_os("RENKEI_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with RENKEI_UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        if want != actual {
            let line = want
                .lines()
                .zip(actual.lines())
                .position(|(a, b)| a != b)
                .map_or(want.lines().count().min(actual.lines().count()), |i| i);
            panic!(
                "{} differs from the rendering at line {}:\n  want: {:?}\n  got:  {:?}\n(RENKEI_UPDATE_GOLDEN=1 regenerates it)",
                path.display(),
                line + 1,
                want.lines().nth(line),
                actual.lines().nth(line)
            );
        }
    }

    #[test]
    fn renderings_match_the_golden_files() {
        for kind in DocKind::ALL {
            let (_, v) = built(kind);
            golden(&format!("{kind}.txt"), &render(&v, Format::Text));
        }
        let (_, v) = built(DocKind::Referral);
        golden("referral.html", &render(&v, Format::Html));
        let fixture: Value = serde_json::from_slice(&fixture_bytes()).unwrap();
        golden(
            "jp-clins-referral-example-01.txt",
            &render(&fixture, Format::Text),
        );
        golden(
            "jp-clins-referral-example-01.html",
            &render(&fixture, Format::Html),
        );
        let ereferral: Value = serde_json::from_slice(&ereferral_bytes()).unwrap();
        golden(
            "ereferral-example-01.txt",
            &render(&ereferral, Format::Text),
        );
        golden("ereferral-example-01.print.html", &print_html(&ereferral));
        golden("referral.print.html", &print_html(&v));
        golden("referral.fragment.html", &html_fragment(&v));
        let (_, s) = built(DocKind::DischargeSummary);
        golden("discharge-summary.print.html", &print_html(&s));
        let standard = build(
            DocKind::DischargeSummary,
            &example(DocKind::DischargeSummary),
            &fixed_in(Family::Standard),
        )
        .unwrap();
        golden(
            "discharge-summary.ereferral.txt",
            &render(&standard, Format::Text),
        );
        let letter =
            build_letter(DocKind::Referral, &letter_form(), "紹介状.pdf", &fixed()).unwrap();
        golden("letter.txt", &render(&letter, Format::Text));
        golden("letter.html", &render(&letter, Format::Html));
    }

    // ---------------------------------------------------------------- the CLI layer

    fn run(cmd: DocumentCommand, stdin: &[u8]) -> (Result<(), DocumentCliError>, String) {
        let mut input = stdin;
        let mut out = Vec::new();
        let r = run_with(cmd, &mut input, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn cli_new_validate_show() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("紹介状.json");
        let form = manifest_dir().join("examples/referral.toml");
        let new = DocumentCommand::New {
            kind: DocKind::Referral,
            form: form.clone(),
            out: out.clone(),
            in_reply_to: None,
            format: Family::JpClins,
            letter: None,
        };
        let (r, msg) = run(new.clone(), b"");
        r.unwrap();
        assert!(
            msg.contains("診療情報提供書 (referral) for 山田 太郎, 1311234569 → 1317654323"),
            "{msg}"
        );
        // an existing file is not overwritten
        let (r, _) = run(new, b"");
        let e = r.unwrap_err();
        assert!(matches!(e, DocumentCliError::Exists { .. }), "{e}");
        assert!(!e.is_validation_failure());

        let validate_cmd = |sender: &str, json: bool| DocumentCommand::Validate {
            file: out.clone(),
            sender: Some(code(sender)),
            recipient: vec![code(HOSPITAL)],
            attachment: vec!["心電図.pdf".into(), "attachments/検査結果.pdf".into()],
            no_attachments: false,
            kind: Some(DocKind::Referral),
            json,
        };
        let (r, text) = run(validate_cmd(CLINIC, false), b"");
        r.unwrap();
        assert!(text.starts_with("valid: 診療情報提供書 (referral) from 1311234569 さくら内科クリニック to 1317654323 東都中央病院"), "{text}");
        assert!(text.contains("attached: attachments/心電図.pdf"));
        assert!(
            text.contains("spec:     JP-CLINS 診療情報提供書（電子カルテ情報共有サービス） [jp-clins-referral;"),
            "{text}"
        );
        let (r, text) = run(validate_cmd(RECOVERY, true), b"");
        let e = r.unwrap_err();
        assert!(e.is_validation_failure());
        assert_eq!(e.issues()[0].code, IssueCode::WrongSender);
        assert!(
            e.to_string()
                .contains("is not the sending facility 1315555555"),
            "{e}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["valid"], false);
        assert_eq!(v["issues"][0]["code"], "wrong-sender");
        assert_eq!(v["issues"][0]["section"], "920");
        assert_eq!(v["issues"][0]["field"], "from.facility_id");

        // --no-attachments: the document's attachments are not package members
        let (r, _) = run(
            DocumentCommand::Validate {
                file: out.clone(),
                sender: None,
                recipient: vec![],
                attachment: vec![],
                no_attachments: true,
                kind: None,
                json: false,
            },
            b"",
        );
        assert!(r
            .unwrap_err()
            .issues()
            .iter()
            .all(|i| i.code == IssueCode::Attachment));

        let (r, html) = run(
            DocumentCommand::Show {
                file: out.clone(),
                format: View::Html,
            },
            b"",
        );
        r.unwrap();
        assert!(html.contains("<h2>紹介目的</h2>"));
        assert_self_contained(&html);

        // stdin, and a form with problems
        let (r, text) = run(
            DocumentCommand::Show {
                file: "-".into(),
                format: View::Text,
            },
            &fixture_bytes(),
        );
        r.unwrap();
        assert!(text.contains("牧野 爛漫"));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[patient]\nname = \"x\"\n").unwrap();
        let (r, _) = run(
            DocumentCommand::New {
                kind: DocKind::Referral,
                form: bad,
                out: dir.path().join("x.json"),
                in_reply_to: None,
                format: Family::JpClins,
                letter: None,
            },
            b"",
        );
        let e = r.unwrap_err();
        assert!(matches!(e, DocumentCliError::Form { .. }), "{e}");
        assert!(e.to_string().contains("nothing was written"));
        assert!(!dir.path().join("x.json").exists());
    }

    #[test]
    fn cli_writes_either_format_and_pdf_letters() {
        let dir = tempfile::tempdir().unwrap();
        let form = manifest_dir().join("examples/referral.toml");
        let out = dir.path().join("ereferral.json");
        let (r, msg) = run(
            DocumentCommand::New {
                kind: DocKind::Referral,
                form,
                out: out.clone(),
                in_reply_to: None,
                format: Family::Standard,
                letter: None,
            },
            b"",
        );
        r.unwrap();
        assert!(
            msg.contains("spec:   診療情報提供書 HL7 FHIR 記述仕様 第1.1版"),
            "{msg}"
        );
        let (r, text) = run(
            DocumentCommand::Validate {
                file: out.clone(),
                sender: None,
                recipient: vec![],
                attachment: vec![],
                no_attachments: false,
                kind: None,
                json: true,
            },
            b"",
        );
        r.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["specification"]["code"], "ereferral");
        assert_eq!(v["summary"]["spec"], "ereferral");

        // a PDF letter from the short form
        let pdf = dir.path().join("紹介状.pdf");
        std::fs::copy(PDF, &pdf).unwrap();
        let letter_out = dir.path().join("letter.json");
        let new_letter = |letter: PathBuf, out: PathBuf| DocumentCommand::New {
            kind: DocKind::Referral,
            form: manifest_dir().join("examples/letter.toml"),
            out,
            in_reply_to: None,
            format: Family::JpClins,
            letter: Some(letter),
        };
        let (r, msg) = run(new_letter(pdf.clone(), letter_out.clone()), b"");
        r.unwrap();
        assert!(
            msg.contains("letter: attachments/紹介状.pdf; seal or send the document with --attach"),
            "{msg}"
        );
        let (r, text) = run(
            DocumentCommand::Validate {
                file: letter_out.clone(),
                sender: Some(code(CLINIC)),
                recipient: vec![code(HOSPITAL)],
                attachment: vec!["紹介状.pdf".into()],
                no_attachments: false,
                kind: Some(DocKind::Referral),
                json: false,
            },
            b"",
        );
        r.unwrap();
        assert!(
            text.contains("letter:   attachments/紹介状.pdf 紹介状（2026年5月12日付） (PDF)"),
            "{text}"
        );
        // shown beside its attachments, the letter is checked to be a PDF
        std::fs::create_dir(dir.path().join("attachments")).unwrap();
        std::fs::copy(PDF, dir.path().join("attachments/紹介状.pdf")).unwrap();
        let show = |format| DocumentCommand::Show {
            file: letter_out.clone(),
            format,
        };
        let (r, print) = run(show(View::Print), b"");
        r.unwrap();
        assert!(print.contains("<h2>紹介状（PDF）</h2>"), "{print}");
        std::fs::write(dir.path().join("attachments/紹介状.pdf"), "<html>not a pdf").unwrap();
        let (r, out) = run(show(View::Text), b"");
        let e = r.unwrap_err();
        assert!(e.is_validation_failure());
        assert!(e.to_string().contains("the letter is not a PDF"), "{e}");
        assert!(out.is_empty());

        // a file that is not a PDF is refused before anything is written
        let not_pdf = dir.path().join("letter.pdf");
        std::fs::write(&not_pdf, "PK\x03\x04 a word document").unwrap();
        let refused = dir.path().join("refused.json");
        let (r, _) = run(new_letter(not_pdf, refused.clone()), b"");
        let e = r.unwrap_err();
        assert!(matches!(e, DocumentCliError::Letter { .. }), "{e}");
        assert!(e.to_string().contains("not a PDF"), "{e}");
        assert!(!refused.exists());
        let (r, _) = run(
            new_letter(dir.path().join("missing.pdf"), refused.clone()),
            b"",
        );
        assert!(matches!(r.unwrap_err(), DocumentCliError::Read { .. }));
        assert!(!refused.exists());
    }

    #[test]
    fn cli_show_refuses_invalid_documents() {
        let (r, out) = run(
            DocumentCommand::Show {
                file: "-".into(),
                format: View::Html,
            },
            br#"{"resourceType":"Bundle","type":"document"}"#,
        );
        let e = r.unwrap_err();
        assert!(e.is_validation_failure());
        assert!(out.is_empty());
        assert!(e.to_string().contains("Bundle.identifier"), "{e}");
    }

    // ---------------------------------------------------------------- properties

    fn text_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ]{1,20}",
            "[ぁ-んァ-ヶ一-龠０-９、。]{1,20}",
            Just("<script>alert('x')</script>".to_string()),
            Just("& < > \" ' ]]> <!-- -->".to_string()),
            "[\\PC]{1,30}",
        ]
        .prop_filter("non-blank", |s| !s.trim().is_empty())
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        (text_strategy(), text_strategy()).prop_map(|(a, b)| {
            format!(
                "{} {}",
                a.split_whitespace().collect::<String>(),
                b.split_whitespace().collect::<String>()
            )
        })
    }

    fn kind_strategy() -> impl Strategy<Value = DocKind> {
        prop::sample::select(DocKind::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// form → bundle → validate: whatever the liaison office writes,
        /// renkei's own documents validate against their package, carry the
        /// values written, and render as escaped HTML.
        #[test]
        fn forms_build_documents_that_validate(
            kind in kind_strategy(),
            name in name_strategy(),
            purpose in text_strategy(),
            illness in text_strategy(),
            diagnoses in prop::collection::vec(text_strategy(), 1..4),
            allergies in prop::collection::vec(text_strategy(), 0..3),
            remarks in prop::option::of(text_strategy()),
            files in prop::collection::btree_set("[a-z0-9]{1,8}\\.(pdf|png|txt)", 0..3),
            seed in any::<u64>(),
            standard in any::<bool>(),
        ) {
            let mut form = example(kind);
            form.patient.name = name.clone();
            if kind.is_referral_type() {
                form.purpose = Some(purpose.clone());
            }
            form.present_illness = Some(illness);
            form.diagnoses = diagnoses.clone();
            form.allergies = allergies;
            form.remarks = remarks;
            form.attachments = files
                .iter()
                .map(|f| AttachmentForm { file: f.clone(), title: format!("添付 {f}") })
                .collect();
            let format = if standard { Family::Standard } else { Family::JpClins };
            let opts = BuildOptions { ids: IdSource::Seeded(seed), format, ..fixed() };
            let json = build_json(kind, &form, &opts).unwrap();
            let s = validate(&json, &expect_for(kind, &form)).unwrap();
            prop_assert_eq!(s.kind, kind);
            prop_assert_eq!(s.spec, Spec::for_kind(format, kind));
            prop_assert_eq!(&s.patient.name, &name);
            if kind.is_referral_type() {
                prop_assert_eq!(s.purpose.as_deref(), Some(purpose.as_str()));
                let mut dx: Vec<String> = form.chief_complaint.iter().cloned().collect();
                dx.extend(diagnoses);
                prop_assert_eq!(&s.diagnoses, &dx);
            }
            prop_assert_eq!(s.attachments.len(), files.len());
            let v: Value = serde_json::from_slice(&json).unwrap();
            let html = render(&v, Format::Html);
            prop_assert!(!html.to_lowercase().contains("<script"));
            prop_assert!(html.contains(&renkei::document::render::escape_html(&name)));
        }

        /// Removing any entry but the Composition from a valid document breaks a
        /// reference, and the validator says so without panicking.
        #[test]
        fn removing_an_entry_leaves_a_dangling_reference(kind in kind_strategy(), pick in any::<prop::sample::Index>()) {
            let (form, mut v) = built(kind);
            let entries = v["entry"].as_array_mut().unwrap();
            let i = 1 + pick.index(entries.len() - 1);
            entries.remove(i);
            let issues = validate_value(&v, &expect_for(kind, &form)).unwrap_err();
            prop_assert!(issues.iter().any(|x| x.code == IssueCode::DanglingReference), "{:?}", issues);
        }

        /// Arbitrary bytes and arbitrary JSON never make the validator or the
        /// renderer panic.
        #[test]
        fn arbitrary_input_is_handled(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate(&data, &Expect::default());
            if let Ok(v) = serde_json::from_slice::<Value>(&data) {
                let _ = render(&v, Format::Html);
            }
        }

        #[test]
        fn arbitrary_mutations_of_a_valid_document_are_handled(
            kind in kind_strategy(),
            path_picks in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
            replacement in prop_oneof![Just(json!(null)), Just(json!("x")), Just(json!(1)), Just(json!([])), Just(json!({}))],
        ) {
            let (_, mut v) = built(kind);
            replace_at(&mut v, &path_picks, replacement);
            let _ = validate_value(&v, &Expect::default());
            let _ = render(&v, Format::Text);
            let _ = render(&v, Format::Html);
        }
    }

    /// Walk down a random path and replace what is there.
    fn replace_at(v: &mut Value, picks: &[prop::sample::Index], new: Value) {
        match (picks.split_first(), v) {
            (Some((p, rest)), Value::Object(m)) if !m.is_empty() => {
                let k = m.keys().nth(p.index(m.len())).unwrap().clone();
                replace_at(m.get_mut(&k).unwrap(), rest, new);
            }
            (Some((p, rest)), Value::Array(a)) if !a.is_empty() => {
                let n = a.len();
                replace_at(&mut a[p.index(n)], rest, new);
            }
            (_, v) => *v = new,
        }
    }

    // ---------------------------------------------------------------- the standard family

    #[test]
    fn the_ereferral_example_is_accepted_as_it_is() {
        let b = ereferral_bytes();
        let s = validate(&b, &Expect::default()).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(s.spec, Spec::EReferral);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.kind, DocKind::Referral);
        assert!(!s.kind_tagged);
        assert_eq!(s.patient.name, "田中 太郎");
        assert_eq!(s.patient.kana.as_deref(), Some("タナカ タロウ"));
        assert_eq!(s.purpose.as_deref(), Some("腹痛精査お願いします。"));
        assert_eq!(s.from.facility_id.as_str(), "1319876543");
        assert_eq!(s.from.name.as_deref(), Some("港診療所"));
        assert_eq!(s.from.doctor.as_deref(), Some("大河内 勘三郎"));
        let to = s.to.as_ref().unwrap();
        assert_eq!(to.facility_id.as_str(), "1311234567");
        assert_eq!(to.department.as_deref(), Some("循環器内科"));
        assert_eq!(to.doctor.as_deref(), Some("野口 英世丸"));
        assert!(!s.diagnoses.is_empty());
        assert_eq!(s.letter, None);

        // from the facilities it names, and from no other
        let own = Expect {
            sender: Some(code("1319876543")),
            recipients: vec![code("1311234567")],
            attachment_members: Some(vec!["document.json".into()]),
            kind: Some(DocKind::Referral),
            in_reply_to: None,
        };
        validate(&b, &own).unwrap_or_else(|e| panic!("{e:#?}"));
        let i = issues(validate(
            &b,
            &Expect {
                sender: Some(code(CLINIC)),
                ..own.clone()
            },
        ));
        assert_eq!(i.len(), 1, "{i:#?}");
        assert_eq!(i[0].code, IssueCode::WrongSender);
        assert_eq!(i[0].field.as_deref(), Some("from.facility_id"));
    }

    #[test]
    fn the_ereferral_example_renders_and_says_its_specification() {
        let v: Value = serde_json::from_slice(&ereferral_bytes()).unwrap();
        let text = render(&v, Format::Text);
        for want in [
            "仕様: 診療情報提供書 HL7 FHIR 記述仕様 第1.1版（厚生労働省標準規格）",
            "【紹介先】",
            "東京第一テスト病院",
            "【紹介元】",
            "港診療所",
            "田中 太郎",
            "【紹介目的】",
            "腹痛精査お願いします。",
            "【傷病名・主訴】",
            "【現病歴】",
            "【既往歴】",
            "【アレルギー・不耐性反応】",
            "【感染症】",
            "【身体所見】",
            "【臨床経過】",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        assert_self_contained(&render(&v, Format::Html));
        assert_fragment(&html_fragment(&v));
        let print = print_html(&v);
        assert_self_contained(&print);
        assert!(print.contains("2020年8月21日（令和2年8月21日）"), "{print}");
        assert!(
            print.contains("1955年5月4日（昭和30年5月4日）（65歳）"),
            "{print}"
        );
        assert_fragment(&print_fragment(&v));
        // the JP-CLINS example says its own
        let v: Value = serde_json::from_slice(&fixture_bytes()).unwrap();
        assert!(render(&v, Format::Text)
            .contains("仕様: JP-CLINS 診療情報提供書（電子カルテ情報共有サービス）"));
    }

    #[test]
    fn the_standard_pdf_section_takes_an_embedded_binary_pdf() {
        let mut v: Value = serde_json::from_slice(&ereferral_bytes()).unwrap();
        let url = "urn:uuid:0b7f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f";
        v["entry"].as_array_mut().unwrap().push(json!({
            "fullUrl": url,
            "resource": { "resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0xLjcK" }
        }));
        v["entry"][0]["resource"]["section"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "title": "PDF",
                "code": { "coding": [{ "system": codes::EREFERRAL_SECTION_SYSTEM, "code": "230", "display": "PDFセクション" }] },
                "entry": [{ "reference": url }]
            }));
        let s = validate_value(&v, &Expect::default()).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(s.letter, None);
        let text = render(&v, Format::Text);
        assert!(text.contains("【PDF】\n  PDF（文書内に埋め込み"), "{text}");
        let n = v["entry"].as_array().unwrap().len();
        v["entry"][n - 1]["resource"]["contentType"] = json!("text/html");
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::Letter,
            "section 230 PDF: entry 1 is of media type \"text/html\", not a PDF",
        );
    }

    #[test]
    fn every_example_form_builds_in_both_families() {
        for format in [Family::JpClins, Family::Standard] {
            for kind in DocKind::ALL {
                let form = example(kind);
                let v = build(kind, &form, &fixed_in(format)).unwrap();
                let spec = Spec::for_kind(format, kind);
                let s = validate_value(&v, &expect_for(kind, &form))
                    .unwrap_or_else(|e| panic!("{kind} {format}: {e:#?}"));
                assert_eq!(s.spec, spec, "{kind} {format}");
                assert_eq!(s.kind, kind);
                assert!(s.warnings.is_empty(), "{kind} {format}: {:?}", s.warnings);
                assert_eq!(v["meta"]["profile"][0], spec.bundle_profile());
                assert_eq!(v["identifier"]["system"], spec.bundle_identifier_system());
                let comp = &v["entry"][0]["resource"];
                assert_eq!(comp["meta"]["profile"][0], spec.composition_profile());
                let (_, _, systems) = section_codes(&v);
                assert_eq!(systems, [spec.section_system()], "{kind} {format}");
                let text = render(&v, Format::Text);
                assert!(text.contains(spec.name()), "{kind} {format}");
                assert!(text.contains(&form.patient.name));
            }
        }
    }

    #[test]
    fn the_standard_bundles_have_their_own_shape() {
        let (form, _) = built(DocKind::Referral);
        let v = build(DocKind::Referral, &form, &fixed_in(Family::Standard)).unwrap();
        assert_eq!(
            v["meta"]["profile"][0],
            "http://jpfhir.jp/fhir/eReferral/StructureDefinition/JP_Bundle_eReferral"
        );
        assert_eq!(
            v["identifier"]["system"],
            "http://jpfhir.jp/fhir/core/IdSystem/documentInstance-identifier"
        );
        assert!(v["identifier"]["value"]
            .as_str()
            .unwrap()
            .starts_with("1311234569-2026-"));
        let comp = &v["entry"][0]["resource"];
        assert_eq!(comp["identifier"]["value"], "1311234569-2026-2026-0142");
        // category: the document type again (the JP-CLINS sub-type codes are JP-CLINS's)
        assert_eq!(
            comp["category"][0]["coding"][0]["system"],
            "http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes"
        );
        assert_eq!(comp["category"][0]["coding"][0]["code"], "57133-1");
        let (top, inner, systems) = section_codes(&v);
        assert_eq!(top, ["920", "910", "300", "210", "220"]);
        assert_eq!(
            inner,
            ["950", "340", "360", "370", "510", "520", "550", "610", "430", "620", "330", "420"]
        );
        assert_eq!(
            systems,
            ["http://jpfhir.jp/fhir/eReferral/CodeSystem/document-section"]
        );

        // the standard 退院時サマリー codes 現病歴, 既往歴, 家族歴 as 362, 372, 552
        let form = example(DocKind::DischargeSummary);
        let v = build(
            DocKind::DischargeSummary,
            &form,
            &fixed_in(Family::Standard),
        )
        .unwrap();
        assert_eq!(
            v["meta"]["profile"][0],
            "http://jpfhir.jp/fhir/eDischargeSummary/StructureDefinition/JP_Bundle_eDischargeSummary"
        );
        let (_, inner, systems) = section_codes(&v);
        assert_eq!(
            systems,
            ["http://jpfhir.jp/fhir/eDischargeSummary/CodeSystem/document-section"]
        );
        for c in ["362", "372", "552"] {
            assert!(inner.iter().any(|x| x == c), "{c} in {inner:?}");
        }
        for c in ["360", "370", "550"] {
            assert!(!inner.iter().any(|x| x == c), "{c} in {inner:?}");
        }
        assert_eq!(
            v["entry"][0]["resource"]["category"][0]["coding"][0]["code"],
            "18842-5"
        );
        let text = render(&v, Format::Text);
        assert!(text.contains("【現病歴】"), "{text}");
        assert!(!text.contains("【現病歴】\n  記載なし"), "{text}");
        // and the JP-CLINS summary's Bundle profile is JP-CLINS's own
        let v = build(DocKind::DischargeSummary, &form, &fixed()).unwrap();
        assert_eq!(
            v["meta"]["profile"][0],
            "http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eDischargeSummary"
        );
    }

    #[test]
    fn each_specification_is_checked_against_its_own_rules() {
        // a standard summary needs 362 現病歴; its 360 does not stand in
        let form = example(DocKind::DischargeSummary);
        let mut v = build(
            DocKind::DischargeSummary,
            &form,
            &fixed_in(Family::Standard),
        )
        .unwrap();
        structured_mut(&mut v, "362")["code"]["coding"][0]["code"] = json!("360");
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::MissingSection,
            "section 362 現病歴 is missing",
        );
        let missing = i
            .iter()
            .find(|x| x.code == IssueCode::MissingSection)
            .unwrap();
        assert_eq!(missing.field.as_deref(), Some("present_illness"));
        // a JP-CLINS summary takes either
        let mut v = build(DocKind::DischargeSummary, &form, &fixed()).unwrap();
        structured_mut(&mut v, "360")["code"]["coding"][0]["code"] = json!("362");
        validate_value(&v, &expect_for(DocKind::DischargeSummary, &form)).unwrap();

        // the standard 230 PDF holds only a Binary
        let lf = letter_form();
        let v = build_letter(DocKind::Referral, &lf, "紹介状.pdf", &fixed()).unwrap();
        let mut w = v.clone();
        w["meta"]["profile"] = json!([codes::profile::STD_BUNDLE_REFERRAL]);
        fn recode(v: &mut Value, system: &str) {
            if let Some(a) = v.get_mut("section").and_then(Value::as_array_mut) {
                for s in a {
                    s["code"]["coding"][0]["system"] = json!(system);
                    recode(s, system);
                }
            }
        }
        recode(
            &mut w["entry"][0]["resource"],
            codes::EREFERRAL_SECTION_SYSTEM,
        );
        w["identifier"]["system"] = json!(codes::DOCUMENT_INSTANCE_IDENTIFIER_SYSTEM);
        assert_has(
            &issues(validate_value(&w, &Expect::default())),
            IssueCode::SectionEntry,
            "section 230 PDF: entry 1 is a DocumentReference, expected Binary",
        );
        // JP-CLINS: no narrative in 230
        let mut w = v.clone();
        top_mut(&mut w, "230")["text"] = json!({ "status": "additional", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">PDF</div>" });
        assert_has(
            &issues(validate_value(&w, &Expect::default())),
            IssueCode::SectionEntry,
            "section 230 PDF may not carry a narrative",
        );
    }

    #[test]
    fn a_profile_and_section_codes_of_different_families_are_refused() {
        // JP-CLINS sections under the standard's Bundle profile: one issue
        let (_, mut v) = built(DocKind::Referral);
        v["meta"]["profile"] = json!([codes::profile::STD_BUNDLE_REFERRAL]);
        let i = issues(validate_value(&v, &Expect::default()));
        assert_eq!(i.len(), 1, "{i:#?}");
        assert_eq!(i[0].code, IssueCode::Specification);
        assert!(
            i[0].message.contains(
                "its sections are coded in http://jpfhir.jp/fhir/clins/CodeSystem/document-section"
            ),
            "{}",
            i[0]
        );
        // one section coded in the other family's system: named by code and title
        let (_, mut v) = built(DocKind::Referral);
        structured_mut(&mut v, "950")["code"]["coding"][0]["system"] =
            json!(codes::EREFERRAL_SECTION_SYSTEM);
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::UnknownSection,
            "section 950 紹介目的 is coded in http://jpfhir.jp/fhir/eReferral/CodeSystem/document-section",
        );
        assert_eq!(i[0].section.as_deref(), Some("950"));
        assert_eq!(i[0].field.as_deref(), Some("purpose"));
        // a 診療情報提供書 profile on a 退院時サマリー
        let form = example(DocKind::DischargeSummary);
        let mut v = build(DocKind::DischargeSummary, &form, &fixed()).unwrap();
        v["meta"]["profile"] = json!([codes::profile::BUNDLE_REFERRAL]);
        assert_has(
            &issues(validate_value(&v, &Expect::default())),
            IssueCode::Specification,
            "Composition.type says the document is a 退院時サマリー",
        );
        // no profile: read from the section codes, with a warning
        let mut v: Value = serde_json::from_slice(&ereferral_bytes()).unwrap();
        v.as_object_mut().unwrap().remove("meta");
        let s = validate_value(&v, &Expect::default()).unwrap();
        assert_eq!(s.spec, Spec::EReferral);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("Bundle.meta.profile is missing")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn issues_name_the_form_field_they_concern() {
        let (form, mut v) = built(DocKind::Referral);
        remove_structured(&mut v, "950");
        let i = issues(validate_value(&v, &expect_for(DocKind::Referral, &form)));
        let m = i
            .iter()
            .find(|x| x.code == IssueCode::MissingSection)
            .unwrap();
        assert_eq!(m.field.as_deref(), Some("purpose"));
        let (form, v) = built(DocKind::Referral);
        let mut e = expect_for(DocKind::Referral, &form);
        e.recipients = vec![code(RECOVERY)];
        e.attachment_members = Some(vec![]);
        let i = issues(validate_value(&v, &e));
        let r = i
            .iter()
            .find(|x| x.code == IssueCode::WrongRecipient)
            .unwrap();
        assert_eq!(r.field.as_deref(), Some("to.facility_id"));
        let a = i.iter().find(|x| x.code == IssueCode::Attachment).unwrap();
        assert_eq!(a.field.as_deref(), Some("attachments"));
        assert!(a.message.contains("renkei seal --attach"), "{}", a.message);
        let json = serde_json::to_value(&i[0]).unwrap();
        assert!(json.get("field").is_some(), "{json}");
        // discharge summary sections point at the [discharge] table
        let (form, mut v) = built(DocKind::DischargeSummary);
        remove_structured(&mut v, "333");
        let i = issues(validate_value(
            &v,
            &expect_for(DocKind::DischargeSummary, &form),
        ));
        assert_eq!(i[0].field.as_deref(), Some("discharge.course"), "{i:#?}");
    }

    #[test]
    fn forms_are_filled_from_json_as_a_web_form_would() {
        // the whole form round-trips through JSON
        let form = example(DocKind::Referral);
        let back: Form = serde_json::from_value(serde_json::to_value(&form).unwrap()).unwrap();
        assert_eq!(back, form);
        // a web form sends the fields it has; the same checks apply
        let party =
            json!({ "facility_id": CLINIC, "name": "さくら内科クリニック", "doctor": "佐藤 花子" });
        let to = json!({ "facility_id": HOSPITAL, "name": "東都中央病院" });
        let patient = json!({ "name": "山田 太郎", "kana": "ヤマダ タロウ", "birth_date": "1954-03-18", "sex": "男" });
        let f: Form = serde_json::from_value(json!({
            "purpose": "精査依頼", "diagnoses": ["胸痛"], "present_illness": "労作時胸痛",
            "patient": patient, "from": party, "to": to,
        }))
        .unwrap();
        let v = build(DocKind::Referral, &f, &fixed_in(Family::Standard)).unwrap();
        assert_eq!(
            validate_value(&v, &Expect::default()).unwrap().spec,
            Spec::EReferral
        );
        let mut g = f.clone();
        g.present_illness = None;
        let e = build(DocKind::Referral, &g, &fixed()).unwrap_err();
        assert_eq!(e.0[0].field, "present_illness");
        assert!(serde_json::from_value::<Form>(json!({ "purpos": "x" })).is_err());
        // the short form too
        let lf: LetterForm = serde_json::from_value(json!({
            "purpose": "精査依頼", "patient": patient, "from": party, "to": to,
        }))
        .unwrap();
        let v = build_letter(DocKind::Referral, &lf, "letter.pdf", &fixed()).unwrap();
        let s = validate_value(&v, &Expect::default()).unwrap();
        assert_eq!(s.letter.unwrap().title.as_deref(), Some("紹介状"));
    }

    // ---------------------------------------------------------------- PDF letters

    #[test]
    fn the_vendored_pdf_and_other_files_are_told_apart() {
        let pdf = std::fs::read(PDF).unwrap();
        check_pdf(&pdf, pdf.len() as u64).unwrap();
        check_pdf(&pdf[..5], pdf.len() as u64).unwrap();
        let form_bytes = std::fs::read(manifest_dir().join("examples/letter.toml")).unwrap();
        assert_eq!(
            check_pdf(&form_bytes, form_bytes.len() as u64),
            Err(LetterError::NotPdf)
        );
        assert_eq!(check_pdf(b"", 0), Err(LetterError::Empty));
        assert!(matches!(
            check_pdf(&pdf, MAX_LETTER_BYTES + 1),
            Err(LetterError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_pdf_letter_is_a_valid_document_in_both_families() {
        let form = letter_form();
        for format in [Family::JpClins, Family::Standard] {
            let v = build_letter(DocKind::Referral, &form, "紹介状.pdf", &fixed_in(format))
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            let s = validate_value(&v, &expect_letter(DocKind::Referral, &form, "紹介状.pdf"))
                .unwrap_or_else(|e| panic!("{format}: {e:#?}"));
            assert_eq!(s.spec, Spec::for_kind(format, DocKind::Referral));
            assert!(s.warnings.is_empty(), "{format}: {:?}", s.warnings);
            let letter = s.letter.as_ref().expect("the letter");
            assert_eq!(letter.member, "attachments/紹介状.pdf");
            assert_eq!(letter.content_type.as_deref(), Some("application/pdf"));
            assert_eq!(letter.title.as_deref(), Some("紹介状（2026年5月12日付）"));
            assert_eq!(s.purpose, form.purpose);
            assert_eq!(s.patient.name, form.patient.name);
            assert_eq!(s.diagnoses, form.diagnoses);
            let (top, inner, _) = section_codes(&v);
            assert_eq!(inner, ["950", "340", "360"], "{format}");
            match format {
                Family::JpClins => {
                    assert_eq!(top, ["920", "910", "300", "230", "220"]);
                    assert!(top_mut(&mut v.clone(), "230").get("text").is_none());
                }
                Family::Standard => {
                    assert_eq!(top, ["920", "910", "300", "210", "220"]);
                    let mut w = v.clone();
                    let first = top_mut(&mut w, "210")["entry"][0]["reference"].clone();
                    let docref = v["entry"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["fullUrl"] == first)
                        .unwrap();
                    assert_eq!(docref["resource"]["type"]["coding"][0]["code"], "57133-1");
                }
            }
            // 現病歴 points at the letter
            let mut w = v.clone();
            assert!(structured_mut(&mut w, "360")["text"]["div"]
                .as_str()
                .unwrap()
                .contains("紹介状（PDF）"));

            // the letter must travel with the document
            let mut e = expect_letter(DocKind::Referral, &form, "紹介状.pdf");
            e.attachment_members = Some(vec!["document.json".into()]);
            let i = issues(validate_value(&v, &e));
            assert_eq!(i.len(), 1, "{i:#?}");
            assert_eq!(i[0].code, IssueCode::Attachment);
            assert_eq!(i[0].field.as_deref(), Some("letter"));
            assert!(
                i[0].message.contains("the letter attachments/紹介状.pdf")
                    && i[0].message.contains("renkei seal --attach 紹介状.pdf"),
                "{}",
                i[0]
            );

            // it renders as a link to the member, first
            let text = render(&v, Format::Text);
            assert!(text.contains("【紹介状（PDF）】"), "{text}");
            assert!(text.contains("<attachments/紹介状.pdf>"), "{text}");
            let html = render(&v, Format::Html);
            assert_self_contained(&html);
            let link = "href=\"attachments/%E7%B4%B9%E4%BB%8B%E7%8A%B6.pdf\"";
            assert!(html.contains(link), "{html}");
            let fragment = html_fragment(&v);
            assert_fragment(&fragment);
            assert!(fragment.contains(link));
            let print = print_html(&v);
            assert_self_contained(&print);
            assert!(print.contains("PDF をそのまま印刷してください"), "{print}");
            assert!(print.contains(link));
        }
    }

    #[test]
    fn letters_that_are_not_pdfs_or_not_letters_are_refused() {
        let form = letter_form();
        // a discharge summary is not a letter
        let e = build_letter(DocKind::DischargeSummary, &form, "x.pdf", &fixed()).unwrap_err();
        assert!(
            e.to_string().contains("cannot be sent as a PDF letter"),
            "{e}"
        );
        // the file name and the short form are checked, every problem at once
        let mut bad = form.clone();
        bad.purpose = None;
        bad.to = None;
        let e = build_letter(DocKind::Referral, &bad, "letter.docx", &fixed()).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["to", "purpose", "letter"], "{e}");
        let e = build_letter(DocKind::Referral, &form, "../x.pdf", &fixed()).unwrap_err();
        assert_eq!(e.0[0].field, "letter");
        let mut twice = form.clone();
        twice.attachments.push(AttachmentForm {
            file: "紹介状.pdf".into(),
            title: "x".into(),
        });
        assert!(
            build_letter(DocKind::Referral, &twice, "紹介状.pdf", &fixed())
                .unwrap_err()
                .to_string()
                .contains("list it once")
        );
        // a reply letter names the package it answers
        let e = build_letter(DocKind::Reply, &form, "x.pdf", &fixed()).unwrap_err();
        assert_eq!(e.0[0].field, "in_reply_to");
        // unknown fields of the short form are refused
        assert!(LetterForm::from_bytes(b"purpos = \"x\"").is_err());

        // section 230 holds PDFs only
        let mut v = build_letter(DocKind::Referral, &form, "紹介状.pdf", &fixed()).unwrap();
        for e in v["entry"].as_array_mut().unwrap() {
            if e["resource"]["resourceType"] == "DocumentReference" {
                e["resource"]["content"][0]["attachment"]["contentType"] = json!("text/html");
            }
        }
        let i = issues(validate_value(&v, &Expect::default()));
        assert_has(
            &i,
            IssueCode::Letter,
            "section 230 PDF: entry 1 is of media type \"text/html\", not a PDF",
        );
        assert_eq!(IssueCode::Letter.as_str(), "document-letter");
    }

    // ---------------------------------------------------------------- print and fragments

    #[test]
    fn print_follows_the_order_of_form_11_with_japanese_dates() {
        let (_, v) = built(DocKind::Referral);
        let print = print_html(&v);
        assert_self_contained(&print);
        let order = [
            "東都中央病院",
            "循環器内科",
            "2026年5月12日（令和8年5月12日）",
            "さくら内科クリニック",
            "佐藤 花子",
            "山田 太郎",
            "1954年3月18日（昭和29年3月18日）（72歳）",
            "<h2>傷病名</h2>",
            "<h2>紹介目的</h2>",
            "<h2>既往歴及び家族歴</h2>",
            "<h2>症状経過及び検査結果</h2>",
            "<h2>治療経過</h2>",
            "<h2>現在の処方</h2>",
            "<h2>備考</h2>",
        ];
        let mut at = 0;
        for want in order {
            let i = print[at..]
                .find(want)
                .unwrap_or_else(|| panic!("{want:?} missing after byte {at} in\n{print}"));
            at += i + want.len();
        }
        for want in [
            "労作性狭心症の疑い",
            "アムロジピン",
            "HbA1c",
            "父：心筋梗塞",
            "セフェム系",
        ] {
            assert!(print.contains(want), "{want}");
        }
        let fragment = print_fragment(&v);
        assert_fragment(&fragment);
        assert!(fragment.contains("rk-print-diagnoses"));
        // a discharge summary prints its period and its discharge prescription
        let (_, v) = built(DocKind::DischargeSummary);
        let print = print_html(&v);
        for want in [
            "<h2>入院期間</h2>",
            "<h2>現在の処方（退院時処方）</h2>",
            "令和8年",
        ] {
            assert!(print.contains(want), "{want}");
        }
        assert_eq!(
            japanese_date("2026-12-01").as_deref(),
            Some("2026年12月1日（令和8年12月1日）")
        );
    }

    #[test]
    fn fragments_escape_everything_and_carry_no_styles() {
        let evil = "<style>body{display:none}</style><script>alert(1)</script>\" style=\"x";
        let mut form = example(DocKind::Referral);
        form.patient.name = format!("山田 {evil}");
        form.purpose = Some(evil.into());
        form.attachments[0].title = evil.into();
        let v = build(DocKind::Referral, &form, &fixed()).unwrap();
        for html in [html_fragment(&v), print_fragment(&v)] {
            assert_fragment(&html);
            assert!(html.contains("&lt;script&gt;"));
        }
    }

    #[test]
    fn counterparts_for_threads() {
        let (_, v) = built(DocKind::Referral);
        let s = validate_value(&v, &Expect::default()).unwrap();
        assert_eq!(s.counterpart(&code(CLINIC)).unwrap().as_str(), HOSPITAL);
        assert_eq!(s.counterpart(&code(HOSPITAL)).unwrap().as_str(), CLINIC);
        let _ = Path::new(FIXTURE);
        let _ = Path::new(PDF);
    }
}
