//! Form → Document Bundle, in JP-CLINS or the standard HL7 FHIR 記述仕様
//! ([`Family`]).
//!
//! The Bundle is `type: document`, the Composition first, every entry
//! addressed by a `urn:uuid:` fullUrl and every reference one of those
//! fullUrls. The two families differ in profiles, identifier systems,
//! category, section code system (and a summary's codes for 現病歴, 既往歴,
//! 家族歴); docs/DOCUMENTS.md describes the shape section by section. A PDF
//! letter ([`super::letter`]) is built here too, in letter mode.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::codes::{self, profile};
use super::form::{split_name, DischargeForm, FacilityForm, Form, FormErrors, LabResult};
use super::read::escape_html;
use super::spec::{Family, Spec};
use super::DocKind;

/// Where resource and identifier UUIDs come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdSource {
    /// Random (version 4) UUIDs.
    #[default]
    Random,
    /// UUIDs derived from a seed, for reproducible output (tests, golden
    /// files). Never use for documents that are sent.
    Seeded(u64),
}

/// Choices that are not part of the form.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The time of writing; now when `None`. Written in JST (+09:00).
    pub now: Option<OffsetDateTime>,
    /// Where UUIDs come from.
    pub ids: IdSource,
    /// The package this document answers; overrides the form's
    /// `in_reply_to`.
    pub in_reply_to: Option<String>,
    /// The specification family to write (JP-CLINS by default).
    pub format: Family,
}

/// Build the Bundle for `kind` from a form. The form is checked first
/// ([`Form::check`]); every problem is returned at once.
pub fn build(kind: DocKind, form: &Form, opts: &BuildOptions) -> Result<Value, FormErrors> {
    let in_reply_to = opts.in_reply_to.as_deref().or(form.in_reply_to.as_deref());
    form.check(kind, in_reply_to)?;
    Ok(build_checked(kind, form, in_reply_to, opts, None))
}

/// The letter of a PDF-letter document: its file name (the package member
/// `attachments/FILE`) and title.
pub(crate) struct LetterPart<'a> {
    pub file: &'a str,
    pub title: &'a str,
}

/// Build from a checked form; in letter mode the sections the letter
/// carries (現病歴, and 傷病名 when the form names none) point at it.
pub(crate) fn build_checked(
    kind: DocKind,
    form: &Form,
    in_reply_to: Option<&str>,
    opts: &BuildOptions,
    letter: Option<LetterPart<'_>>,
) -> Value {
    let now = opts
        .now
        .unwrap_or_else(OffsetDateTime::now_utc)
        .to_offset(jst());
    let mut b = Builder {
        ids: IdGen::new(opts.ids),
        entries: Vec::new(),
        spec: Spec::for_kind(opts.format, kind),
    };
    b.document(kind, form, in_reply_to, now, letter)
}

/// [`build`], serialized as pretty-printed FHIR JSON (`resourceType` first)
/// with a final newline: the bytes of `document.json`.
pub fn build_json(kind: DocKind, form: &Form, opts: &BuildOptions) -> Result<Vec<u8>, FormErrors> {
    Ok(document_bytes(&build(kind, form, opts)?))
}

/// A Bundle as the bytes of `document.json`: pretty-printed FHIR JSON
/// (`resourceType` first) with a final newline.
pub fn document_bytes(v: &Value) -> Vec<u8> {
    let mut s = to_fhir_json(v);
    s.push('\n');
    s.into_bytes()
}

fn jst() -> UtcOffset {
    UtcOffset::from_hms(9, 0, 0).expect("+09:00 is a valid offset")
}

struct IdGen {
    source: IdSource,
    counter: u64,
}

impl IdGen {
    fn new(source: IdSource) -> Self {
        IdGen { source, counter: 0 }
    }

    fn next(&mut self) -> Uuid {
        match self.source {
            IdSource::Random => Uuid::new_v4(),
            IdSource::Seeded(seed) => {
                self.counter += 1;
                let mut input = Vec::with_capacity(32);
                input.extend_from_slice(b"renkei/v1/document-id\n");
                input.extend_from_slice(&seed.to_le_bytes());
                input.extend_from_slice(&self.counter.to_le_bytes());
                let d = ring::digest::digest(&ring::digest::SHA256, &input);
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&d.as_ref()[..16]);
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
    }
}

struct Builder {
    ids: IdGen,
    entries: Vec<Value>,
    spec: Spec,
}

/// What a section of a PDF-letter document says where the letter holds
/// the content.
const SEE_LETTER: &str = "別添の紹介状（PDF）をご参照ください。";

/// A reference to an entry, for section entries.
struct Ref {
    url: String,
    rtype: &'static str,
}

impl Ref {
    fn reference(&self) -> Value {
        json!({ "reference": self.url, "type": self.rtype })
    }
}

impl Builder {
    /// Add a resource as a new entry; returns its reference.
    fn add(&mut self, rtype: &'static str, mut resource: Value) -> Ref {
        let id = self.ids.next();
        let url = format!("urn:uuid:{id}");
        if let Value::Object(m) = &mut resource {
            m.insert("resourceType".into(), Value::String(rtype.into()));
            m.insert("id".into(), Value::String(id.to_string()));
        }
        self.entries
            .push(json!({ "fullUrl": url, "resource": resource }));
        Ref { url, rtype }
    }

    fn document(
        &mut self,
        kind: DocKind,
        form: &Form,
        in_reply_to: Option<&str>,
        now: OffsetDateTime,
        letter: Option<LetterPart<'_>>,
    ) -> Value {
        let spec = self.spec;
        let referral_type = kind.is_referral_type();
        let timestamp = format_instant(now, true);
        let today = format_date(now);
        let issued = form.date.clone().unwrap_or(today);
        // Composition.date: the form's 作成日 at the time of writing.
        let date_time = format!("{issued}{}", &format_instant(now, false)[10..]);
        let year = &issued[..4];
        let sep = spec.identifier_separator();

        // Reserve the Composition's place and ID first: it is entry 0.
        let composition_id = self.ids.next();
        let composition_url = format!("urn:uuid:{composition_id}");
        let bundle_uuid = self.ids.next();

        let patient = self.patient(form, &timestamp);
        let from_doctor = self.practitioner(
            form.from.doctor.as_deref().unwrap_or_default(),
            form.from.doctor_kana.as_deref(),
            &timestamp,
        );
        let from_org = self.organization(&form.from, &timestamp);
        let to = form.to.as_ref().map(|to| {
            let doctor = to
                .doctor
                .as_deref()
                .map(|d| self.practitioner(d, to.doctor_kana.as_deref(), &timestamp));
            (self.organization(to, &timestamp), doctor)
        });

        let (type_code, title) = if referral_type {
            (codes::TYPE_REFERRAL, codes::TITLE_REFERRAL)
        } else {
            (
                codes::TYPE_DISCHARGE_SUMMARY,
                codes::TITLE_DISCHARGE_SUMMARY,
            )
        };
        let mut top = Vec::new();
        let mut structured = Vec::new();
        let mut composition_encounter = None;
        let mut discharge_dx: Vec<Ref> = Vec::new();

        if referral_type {
            top.push(section(
                spec,
                "920",
                facility_text(&form.from),
                vec![&from_org, &from_doctor],
            ));
        }
        if let Some((org, doctor)) = &to {
            let f = form.to.as_ref().expect("to is present");
            let mut entries = vec![org];
            if let Some(d) = doctor {
                entries.push(d);
            }
            top.push(section(spec, "910", facility_text(f), entries));
        }

        if referral_type {
            let purpose = form.purpose.as_deref().unwrap_or_default();
            let class = if kind == DocKind::Transfer {
                ("IMP", "入院")
            } else {
                ("AMB", "外来")
            };
            let enc = self.add(
                "Encounter",
                json!({
                    "meta": { "lastUpdated": timestamp, "profile": [profile::ENCOUNTER] },
                    "status": "planned",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": class.0, "display": class.1
                    },
                    "subject": patient.reference(),
                    "reasonCode": [{ "text": purpose }]
                }),
            );
            structured.push(section(spec, "950", para(purpose), vec![&enc]));

            let mut problems = Vec::new();
            if let Some(cc) = &form.chief_complaint {
                problems.push(self.condition(&patient, cc, Some("problem-list-item"), true, None));
            }
            for d in &form.diagnoses {
                problems.push(self.condition(&patient, d, Some("problem-list-item"), true, None));
            }
            let mut lines: Vec<&str> = form.chief_complaint.iter().map(String::as_str).collect();
            lines.extend(form.diagnoses.iter().map(String::as_str));
            if lines.is_empty() && letter.is_some() {
                structured.push(section(spec, "340", para(SEE_LETTER), vec![]));
            } else {
                structured.push(section(
                    spec,
                    "340",
                    list(&lines),
                    problems.iter().collect(),
                ));
            }
        } else {
            let d = form.discharge.as_ref().expect("checked: discharge present");
            let admission_dx: Vec<Ref> = form
                .diagnoses
                .iter()
                .map(|t| self.condition(&patient, t, Some("encounter-diagnosis"), true, None))
                .collect();
            discharge_dx = d
                .diagnoses
                .iter()
                .map(|t| self.condition(&patient, t, Some("encounter-diagnosis"), true, None))
                .collect();
            let enc = self.admission(
                d,
                &patient,
                &from_org,
                &admission_dx,
                &discharge_dx,
                &timestamp,
            );
            let cc = form.chief_complaint.as_deref().unwrap_or_default();
            let cc_ref = self.condition(&patient, cc, Some("problem-list-item"), true, None);
            structured.push(section(
                spec,
                "322",
                para(&format!("入院日 {}　退院日 {}", d.admitted, d.discharged)),
                vec![&enc],
            ));
            structured.push(section(spec, "312", para(&d.reason), vec![&enc]));
            structured.push(section(spec, "352", para(cc), vec![&cc_ref]));
            let lines: Vec<&str> = form.diagnoses.iter().map(String::as_str).collect();
            structured.push(section(
                spec,
                "342",
                list(&lines),
                admission_dx.iter().collect(),
            ));
            composition_encounter = Some(enc);
        }

        // 現病歴 (in letter mode: the letter)
        match (&form.present_illness, &letter) {
            (Some(illness), _) => {
                let about = form
                    .diagnoses
                    .first()
                    .or(form.chief_complaint.as_ref())
                    .map_or("現病歴", String::as_str);
                let pi = self.condition(&patient, about, None, true, Some(illness));
                structured.push(section(
                    spec,
                    spec.local_code("360"),
                    para(illness),
                    vec![&pi],
                ));
            }
            (None, _) => structured.push(section(
                spec,
                spec.local_code("360"),
                para(SEE_LETTER),
                vec![],
            )),
        }

        // 既往歴
        if !form.past_history.is_empty() {
            let refs: Vec<Ref> = form
                .past_history
                .iter()
                .map(|t| self.condition(&patient, t, None, false, None))
                .collect();
            structured.push(section(
                spec,
                spec.local_code("370"),
                list_of(&form.past_history),
                refs.iter().collect(),
            ));
        }
        // アレルギー
        if !form.allergies.is_empty() {
            let refs: Vec<Ref> = form
                .allergies
                .iter()
                .map(|t| self.allergy(&patient, t))
                .collect();
            structured.push(section(
                spec,
                "510",
                list_of(&form.allergies),
                refs.iter().collect(),
            ));
        }
        // 感染症
        if !form.infections.is_empty() {
            let refs: Vec<Ref> = form
                .infections
                .iter()
                .map(|t| self.observation(&patient, "laboratory", t, None, None))
                .collect();
            structured.push(section(
                spec,
                "520",
                list_of(&form.infections),
                refs.iter().collect(),
            ));
        }
        // 家族歴 (narrative only)
        if let Some(t) = &form.family_history {
            structured.push(section(spec, spec.local_code("550"), para(t), vec![]));
        }
        // 身体所見
        if let Some(t) = &form.physical_findings {
            let (code, title) = if referral_type {
                ("610", "身体所見")
            } else {
                ("612", "入院時身体所見")
            };
            let r = self.observation(
                &patient,
                "exam",
                title,
                Some(json!({ "valueString": t })),
                None,
            );
            structured.push(section(spec, code, para(t), vec![&r]));
        }
        // 処方 / 入院時服薬
        if !form.medications.is_empty() {
            let refs: Vec<Ref> = form
                .medications
                .iter()
                .map(|t| self.medication(&patient, &from_doctor, t, &date_time))
                .collect();
            let code = if referral_type { "430" } else { "432" };
            structured.push(section(
                spec,
                code,
                list_of(&form.medications),
                refs.iter().collect(),
            ));
        }
        // 検査結果
        if !form.lab_results.is_empty() {
            let refs: Vec<Ref> = form
                .lab_results
                .iter()
                .map(|r| self.lab(&patient, r))
                .collect();
            let lines: Vec<String> = form.lab_results.iter().map(lab_line).collect();
            let code = if referral_type { "620" } else { "623" };
            structured.push(section(spec, code, list_of(&lines), refs.iter().collect()));
        }

        if referral_type {
            if let Some(t) = &form.clinical_course {
                structured.push(section(spec, "330", para(t), vec![]));
            }
            if let Some(t) = &form.plan {
                structured.push(section(spec, "420", para(t), vec![]));
            }
        } else {
            let d = form.discharge.as_ref().expect("checked: discharge present");
            let enc = composition_encounter.as_ref().expect("set above");
            let course = self.add(
                "DocumentReference",
                json!({
                    "status": "current",
                    "type": { "coding": [{
                        "system": codes::LOINC_SYSTEM, "code": "11506-3", "display": "Progress note"
                    }] },
                    "subject": patient.reference(),
                    "date": timestamp,
                    "description": "入院中経過",
                    "content": [{ "attachment": {
                        "contentType": "text/plain;charset=utf-8",
                        "data": base64::engine::general_purpose::STANDARD.encode(d.course.as_bytes()),
                        "title": "入院中経過"
                    } }]
                }),
            );
            structured.push(section(spec, "333", para(&d.course), vec![&course]));
            structured.push(section(
                spec,
                "324",
                para(&format!("退院日 {}", d.discharged)),
                vec![enc],
            ));
            // 退院時診断: the Conditions were made with the admission.
            structured.push(section(
                spec,
                "344",
                list_of(&d.diagnoses),
                discharge_dx.iter().collect(),
            ));
            if d.medications.is_empty() {
                let mut s = section(spec, "444", para("退院時処方なし"), vec![]);
                s["emptyReason"] = json!({ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                    "code": "nilknown", "display": "Nil Known"
                }] });
                structured.push(s);
            } else {
                let refs: Vec<Ref> = d
                    .medications
                    .iter()
                    .map(|t| self.medication(&patient, &from_doctor, t, &date_time))
                    .collect();
                structured.push(section(
                    spec,
                    "444",
                    list_of(&d.medications),
                    refs.iter().collect(),
                ));
            }
            structured.push(section(spec, "424", para(&d.plan), vec![]));
        }

        top.push(json!({
            "title": "構造情報",
            "code": section_code(spec, "300"),
            "section": sort_sections(structured),
        }));

        // 添付, and the letter: JP-CLINS carries it in section 230 PDF (a
        // DocumentReference, no narrative); the standard 診療情報提供書 allows
        // only a Binary there, so it goes first in 210 添付情報, typed as
        // the document itself.
        let letter_ref = letter.as_ref().map(|l| {
            self.add(
                "DocumentReference",
                json!({
                    "meta": { "lastUpdated": timestamp, "profile": [profile::DOCUMENT_REFERENCE] },
                    "status": "current",
                    "type": { "coding": [{
                        "system": codes::DOC_TYPE_SYSTEM, "code": type_code, "display": title
                    }] },
                    "subject": patient.reference(),
                    "date": timestamp,
                    "author": [from_doctor.reference(), from_org.reference()],
                    "description": l.title,
                    "content": [{ "attachment": {
                        "contentType": codes::PDF_MEDIA_TYPE,
                        "url": attachment_url(l.file),
                        "title": l.title
                    } }]
                }),
            )
        });
        let mut attachment_refs: Vec<Ref> = form
            .attachments
            .iter()
            .map(|a| {
                self.add(
                    "DocumentReference",
                    json!({
                        "status": "current",
                        "subject": patient.reference(),
                        "date": timestamp,
                        "description": a.title,
                        "content": [{ "attachment": {
                            "contentType": crate::package::media_type_for(&a.file),
                            "url": attachment_url(&a.file),
                            "title": a.title
                        } }]
                    }),
                )
            })
            .collect();
        let mut lines: Vec<String> = form
            .attachments
            .iter()
            .map(|a| format!("{}（{}）", a.title, a.file))
            .collect();
        if let (Some(r), Some(l)) = (letter_ref, &letter) {
            if spec.family() == Family::JpClins {
                top.push(section_without_text(spec, "230", vec![&r]));
            } else {
                attachment_refs.insert(0, r);
                lines.insert(0, format!("{}（{}、PDF）", l.title, l.file));
            }
        }
        if !attachment_refs.is_empty() {
            top.push(section(
                spec,
                "210",
                list_of(&lines),
                attachment_refs.iter().collect(),
            ));
        }
        // 備考・連絡
        if let Some(t) = &form.remarks {
            top.push(section(spec, "220", para(t), vec![]));
        }

        // The Composition.
        let setting = form.setting_for(kind);
        let number = form
            .document_number
            .clone()
            .unwrap_or_else(|| self.ids.next().simple().to_string());
        let mut comp = Map::new();
        comp.insert("resourceType".into(), json!("Composition"));
        comp.insert("id".into(), json!(composition_id.to_string()));
        comp.insert(
            "meta".into(),
            json!({
                "lastUpdated": timestamp,
                "profile": [spec.composition_profile()],
                "tag": [{ "system": codes::KIND_TAG_SYSTEM, "code": kind.as_str(), "display": kind.japanese() }]
            }),
        );
        comp.insert("language".into(), json!("ja"));
        comp.insert(
            "extension".into(),
            json!([{ "url": codes::VERSION_EXTENSION, "valueString": "1" }]),
        );
        comp.insert(
            "identifier".into(),
            json!({
                "system": codes::RESOURCE_IDENTIFIER_SYSTEM,
                "value": format!("{}{sep}{year}{sep}{number}", form.from.facility_id)
            }),
        );
        comp.insert("status".into(), json!("final"));
        comp.insert(
            "type".into(),
            json!({ "coding": [{ "system": codes::DOC_TYPE_SYSTEM, "code": type_code, "display": title }] }),
        );
        // JP-CLINS: 外来文書 / 退院時文書; the standard: the document type again.
        let category = match spec.family() {
            Family::JpClins => {
                json!({ "system": codes::DOC_SUBTYPE_SYSTEM, "code": setting.code(), "display": setting.display() })
            }
            Family::Standard => {
                json!({ "system": codes::DOC_TYPE_SYSTEM, "code": type_code, "display": title })
            }
        };
        comp.insert("category".into(), json!([{ "coding": [category] }]));
        comp.insert(
            "subject".into(),
            json!({ "reference": patient.url, "type": "Patient", "display": form.patient.name }),
        );
        if let Some(enc) = &composition_encounter {
            comp.insert("encounter".into(), enc.reference());
        }
        comp.insert("date".into(), json!(date_time));
        comp.insert(
            "author".into(),
            json!([from_doctor.reference(), from_org.reference()]),
        );
        comp.insert("title".into(), json!(title));
        comp.insert("custodian".into(), from_org.reference());
        if let Some(id) = in_reply_to {
            comp.insert(
                "relatesTo".into(),
                json!([{
                    "code": codes::RELATES_TO_CODE,
                    "targetIdentifier": { "system": codes::URI_SYSTEM, "value": format!("urn:uuid:{}", crate::package::canonical_id(id).unwrap_or_else(|| id.to_ascii_lowercase())) }
                }]),
            );
        }
        let event = if referral_type {
            json!([{ "code": [{ "text": codes::EVENT_REFERRAL }], "period": { "start": issued } }])
        } else {
            let d = form.discharge.as_ref().expect("checked: discharge present");
            json!([{ "period": { "start": d.admitted, "end": d.discharged } }])
        };
        comp.insert("event".into(), event);
        comp.insert("section".into(), Value::Array(top));

        let mut entries =
            vec![json!({ "fullUrl": composition_url, "resource": Value::Object(comp) })];
        entries.append(&mut self.entries);

        json!({
            "resourceType": "Bundle",
            "id": bundle_uuid.to_string(),
            "meta": {
                "lastUpdated": timestamp,
                "profile": [spec.bundle_profile()]
            },
            "language": "ja",
            "identifier": {
                "system": spec.bundle_identifier_system(),
                "value": format!("{}{sep}{year}{sep}{}", form.from.facility_id, bundle_uuid.simple())
            },
            "type": "document",
            "timestamp": timestamp,
            "entry": entries
        })
    }

    fn patient(&mut self, form: &Form, ts: &str) -> Ref {
        let p = &form.patient;
        let mut identifiers = Vec::new();
        if let Some(id) = &p.patient_id {
            identifiers.push(json!({
                "system": format!("{}{}", codes::PATIENT_ID_OID_PREFIX, form.from.facility_id),
                "value": id
            }));
        }
        if let Some(id) = &p.insurance_member_id {
            identifiers.push(json!({ "system": codes::INSURANCE_MEMBER_SYSTEM, "value": id }));
        }
        let mut r = json!({
            "meta": { "lastUpdated": ts, "profile": [profile::PATIENT] },
            "name": names(&p.name, Some(&p.kana), false),
            "gender": p.sex.code(),
            "birthDate": p.birth_date,
        });
        if !identifiers.is_empty() {
            r["identifier"] = Value::Array(identifiers);
        }
        if let Some(phone) = &p.phone {
            r["telecom"] = json!([{ "system": "phone", "value": phone, "use": "home" }]);
        }
        if p.address.is_some() || p.postal_code.is_some() {
            let mut a = Map::new();
            if let Some(t) = &p.address {
                a.insert("text".into(), json!(t));
            }
            if let Some(z) = &p.postal_code {
                a.insert("postalCode".into(), json!(z));
            }
            a.insert("country".into(), json!("JP"));
            r["address"] = json!([Value::Object(a)]);
        }
        self.add("Patient", r)
    }

    fn practitioner(&mut self, name: &str, kana: Option<&str>, ts: &str) -> Ref {
        self.add(
            "Practitioner",
            json!({
                "meta": { "lastUpdated": ts, "profile": [profile::PRACTITIONER] },
                "name": names(name, kana, true),
            }),
        )
    }

    fn organization(&mut self, f: &FacilityForm, ts: &str) -> Ref {
        let id = f.facility_id.as_str();
        let mut ext = vec![
            json!({ "url": codes::PREFECTURE_EXTENSION, "valueCoding": { "system": codes::PREFECTURE_SYSTEM, "code": &id[..2] } }),
            json!({ "url": codes::FEE_SCHEDULE_EXTENSION, "valueCoding": { "system": codes::FEE_SCHEDULE_SYSTEM, "code": &id[2..3] } }),
            json!({ "url": codes::ORGANIZATION_NO_EXTENSION, "valueIdentifier": { "system": codes::MEDICAL_ORGANIZATION_ID_SYSTEM, "value": &id[3..] } }),
        ];
        if let Some(d) = &f.department {
            ext.push(json!({ "url": codes::DEPARTMENT_EXTENSION, "valueCodeableConcept": { "text": d } }));
        }
        let mut r = json!({
            "meta": { "lastUpdated": ts, "profile": [profile::ORGANIZATION] },
            "extension": ext,
            "identifier": [{ "system": codes::MEDICAL_INSTITUTION_SYSTEM, "value": id }],
            "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov" }] }],
            "name": f.name,
        });
        if let Some(phone) = &f.phone {
            r["telecom"] = json!([{ "system": "phone", "value": phone }]);
        }
        if f.address.is_some() || f.postal_code.is_some() {
            let mut a = Map::new();
            if let Some(t) = &f.address {
                a.insert("text".into(), json!(t));
            }
            if let Some(z) = &f.postal_code {
                a.insert("postalCode".into(), json!(z));
            }
            a.insert("country".into(), json!("JP"));
            r["address"] = json!([Value::Object(a)]);
        }
        self.add("Organization", r)
    }

    /// A Condition with its text as `code.text` (and, for 現病歴, the
    /// narrative as a note).
    fn condition(
        &mut self,
        patient: &Ref,
        text: &str,
        category: Option<&str>,
        active: bool,
        note: Option<&str>,
    ) -> Ref {
        let mut r = json!({
            "code": { "text": text },
            "subject": patient.reference(),
        });
        if active {
            r["clinicalStatus"] = json!({ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"
            }] });
        }
        if let Some(c) = category {
            r["category"] = json!([{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": c
            }] }]);
        }
        if let Some(n) = note {
            r["note"] = json!([{ "text": n }]);
        }
        self.add("Condition", r)
    }

    fn allergy(&mut self, patient: &Ref, text: &str) -> Ref {
        self.add(
            "AllergyIntolerance",
            json!({
                "clinicalStatus": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"
                }] },
                "code": { "text": text },
                "patient": patient.reference(),
            }),
        )
    }

    fn observation(
        &mut self,
        patient: &Ref,
        category: &str,
        code_text: &str,
        value: Option<Value>,
        date: Option<&str>,
    ) -> Ref {
        let mut r = json!({
            "status": "final",
            "category": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category
            }] }],
            "code": { "text": code_text },
            "subject": patient.reference(),
        });
        if let Some(Value::Object(v)) = value {
            for (k, x) in v {
                r[k.as_str()] = x;
            }
        }
        if let Some(d) = date {
            r["effectiveDateTime"] = json!(d);
        }
        self.add("Observation", r)
    }

    fn lab(&mut self, patient: &Ref, l: &LabResult) -> Ref {
        let value = match (&l.unit, decimal(&l.value)) {
            (Some(unit), Some(n)) => json!({ "valueQuantity": { "value": n, "unit": unit } }),
            (Some(unit), None) => json!({ "valueString": format!("{} {}", l.value, unit) }),
            (None, _) => json!({ "valueString": l.value }),
        };
        self.observation(
            patient,
            "laboratory",
            &l.item,
            Some(value),
            l.date.as_deref(),
        )
    }

    fn medication(&mut self, patient: &Ref, prescriber: &Ref, text: &str, when: &str) -> Ref {
        self.add(
            "MedicationRequest",
            json!({
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": { "text": text },
                "subject": patient.reference(),
                "authoredOn": when,
                "requester": prescriber.reference(),
            }),
        )
    }

    fn admission(
        &mut self,
        d: &DischargeForm,
        patient: &Ref,
        hospital: &Ref,
        admission_dx: &[Ref],
        discharge_dx: &[Ref],
        ts: &str,
    ) -> Ref {
        let mut diagnosis = Vec::new();
        for (refs, code, display) in [
            (admission_dx, "AD", "Admission diagnosis"),
            (discharge_dx, "DD", "Discharge diagnosis"),
        ] {
            for r in refs {
                diagnosis.push(json!({
                    "condition": r.reference(),
                    "use": { "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/diagnosis-role",
                        "code": code, "display": display
                    }] }
                }));
            }
        }
        self.add(
            "Encounter",
            json!({
                "meta": { "lastUpdated": ts, "profile": [profile::ENCOUNTER] },
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP", "display": "入院"
                },
                "subject": patient.reference(),
                "period": { "start": d.admitted, "end": d.discharged },
                "reasonCode": [{ "text": d.reason }],
                "diagnosis": diagnosis,
                "serviceProvider": hospital.reference(),
            }),
        )
    }
}

/// A section with its fixed title and code, an XHTML narrative and entries.
fn section(spec: Spec, code: &str, div_body: String, entries: Vec<&Ref>) -> Value {
    let def = codes::section(code).expect("renkei writes known section codes");
    let mut s = json!({
        "title": def.title,
        "code": section_code(spec, code),
        "text": {
            "status": "additional",
            "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{div_body}</div>")
        },
    });
    if !entries.is_empty() {
        s["entry"] = Value::Array(entries.into_iter().map(Ref::reference).collect());
    }
    s
}

/// A section without narrative (the JP-CLINS PDF section: `text ..0`).
fn section_without_text(spec: Spec, code: &str, entries: Vec<&Ref>) -> Value {
    let def = codes::section(code).expect("renkei writes known section codes");
    json!({
        "title": def.title,
        "code": section_code(spec, code),
        "entry": entries.into_iter().map(Ref::reference).collect::<Vec<_>>(),
    })
}

fn section_code(spec: Spec, code: &str) -> Value {
    let def = codes::section(code).expect("renkei writes known section codes");
    json!({ "coding": [{ "system": spec.section_system(), "code": code, "display": def.display() }] })
}

/// Order sections as in the section table.
fn sort_sections(mut v: Vec<Value>) -> Vec<Value> {
    let rank = |s: &Value| {
        let code = s["code"]["coding"][0]["code"].as_str().unwrap_or_default();
        codes::SECTIONS
            .iter()
            .position(|d| d.code == code)
            .unwrap_or(usize::MAX)
    };
    v.sort_by_key(rank);
    v
}

/// Escaped text, line breaks as `<br/>`.
fn para(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| escape_html(l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("<br/>")
}

fn list(items: &[&str]) -> String {
    let mut s = String::from("<ul>");
    for i in items {
        s.push_str("<li>");
        s.push_str(&escape_html(i));
        s.push_str("</li>");
    }
    s.push_str("</ul>");
    s
}

fn list_of<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    list(&v)
}

fn facility_text(f: &FacilityForm) -> String {
    let mut parts = vec![f.name.as_str()];
    if let Some(d) = &f.department {
        parts.push(d);
    }
    if let Some(d) = &f.doctor {
        parts.push(d);
    }
    escape_html(&parts.join("　"))
}

fn lab_line(r: &LabResult) -> String {
    let mut s = format!("{}: {}", r.item, r.value);
    if let Some(u) = &r.unit {
        s.push(' ');
        s.push_str(u);
    }
    if let Some(d) = &r.date {
        s.push_str(&format!("（{d}）"));
    }
    s
}

/// A plain decimal ("7.2", "-1", "120") as a JSON number.
fn decimal(s: &str) -> Option<serde_json::Number> {
    let t = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (t.contains('.') && frac.is_empty()) {
        return None;
    }
    if int.len() + frac.len() > 15 {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// 漢字 (IDE) and, when given, カナ (SYL) HumanNames.
fn names(name: &str, kana: Option<&str>, official: bool) -> Value {
    let one = |text: &str, rep: &str| {
        let mut n = json!({
            "extension": [{ "url": codes::NAME_REPRESENTATION_EXTENSION, "valueCode": rep }],
            "text": text,
        });
        if official {
            n["use"] = json!("official");
        }
        match split_name(text) {
            Some((family, given)) => {
                n["family"] = json!(family);
                n["given"] = json!([given]);
            }
            None => n["family"] = json!(text.trim()),
        }
        n
    };
    let mut v = vec![one(name, "IDE")];
    if let Some(k) = kana {
        v.push(one(k, "SYL"));
    }
    Value::Array(v)
}

/// The `Attachment.url` naming a package member: `attachments/NAME`, with
/// the characters a URL may not hold percent-encoded.
pub fn attachment_url(file: &str) -> String {
    let mut s = String::from("attachments/");
    for c in file.chars() {
        match c {
            ' ' | '%' | '#' | '?' | '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    s.push_str(&format!("%{b:02X}"));
                }
            }
            c if c.is_whitespace() || c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    s.push_str(&format!("%{b:02X}"));
                }
            }
            c => s.push(c),
        }
    }
    s
}

fn format_instant(t: OffsetDateTime, millis: bool) -> String {
    let r = if millis {
        t.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
        ))
    } else {
        t.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
        ))
    };
    r.expect("formatting a valid date-time")
}

fn format_date(t: OffsetDateTime) -> String {
    t.format(format_description!("[year]-[month]-[day]"))
        .expect("formatting a valid date")
}

/// Pretty-print a FHIR resource as JSON with `resourceType` first, then
/// `id` and `meta`, then the other properties in order of name.
pub fn to_fhir_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0);
    out
}

fn write_value(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            let rank = |k: &str| match k {
                "resourceType" => 0,
                "id" => 1,
                "meta" => 2,
                _ => 3,
            };
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                push_indent(out, indent + 1);
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push_str(": ");
                write_value(out, &m[k.as_str()], indent + 1);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            push_indent(out, indent);
            out.push('}');
        }
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                push_indent(out, indent + 1);
                write_value(out, x, indent + 1);
                if i + 1 < a.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            push_indent(out, indent);
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn push_indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_plain_numbers_only() {
        assert_eq!(decimal("7.2").unwrap().to_string(), "7.2");
        assert_eq!(decimal("120").unwrap().to_string(), "120");
        assert_eq!(decimal("-3").unwrap().to_string(), "-3");
        for bad in ["", "7.", ".5", "1e3", "陰性", "1,000", "+1", "7.2.1", "--1"] {
            assert!(decimal(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn attachment_urls_encode_what_a_url_cannot_hold() {
        assert_eq!(attachment_url("検査結果.pdf"), "attachments/検査結果.pdf");
        assert_eq!(attachment_url("a b%.png"), "attachments/a%20b%25.png");
        assert_eq!(attachment_url("x\u{3000}y"), "attachments/x%E3%80%80y");
    }

    #[test]
    fn fhir_json_puts_resource_type_first_and_round_trips() {
        let v = json!({ "b": [1, {"z": null, "id": "x", "resourceType": "P"}], "a": {}, "resourceType": "Bundle", "c": [] });
        let s = to_fhir_json(&v);
        assert!(s.starts_with("{\n  \"resourceType\": \"Bundle\""), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    #[test]
    fn seeded_ids_are_reproducible_v4_uuids() {
        let mut a = IdGen::new(IdSource::Seeded(7));
        let mut b = IdGen::new(IdSource::Seeded(7));
        let x = a.next();
        assert_eq!(x, b.next());
        assert_ne!(x, a.next());
        assert_eq!(x.get_version_num(), 4);
    }
}
