//! The form a liaison office (地域連携室) fills in: a small TOML file, or
//! the same fields from any serde format (a web form), that
//! [`super::build()`] turns into a Bundle. `examples/<kind>.toml` shows one
//! filled-in form per kind; docs/DOCUMENTS.md lists every field. The short
//! form of a PDF letter is [`super::LetterForm`].

use std::fmt;

use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::Date;

use super::DocKind;
use crate::identity::FacilityId;

/// Longest free-text field, in characters.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Most items in a list field.
pub const MAX_LIST_ITEMS: usize = 200;
/// Longest document number (the profile allows 32 characters).
pub const MAX_DOCUMENT_NUMBER_CHARS: usize = 32;

/// A filled-in form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Form {
    /// 文書番号: the facility's own number for this document (up to 32
    /// characters, no `^`); a random one when absent.
    pub document_number: Option<String>,
    /// 作成日 (YYYY-MM-DD); today (JST) when absent.
    pub date: Option<String>,
    /// The package this document answers (its package ID, a UUID). Required
    /// for a reply; optional for the other kinds.
    pub in_reply_to: Option<String>,
    /// 外来文書 or 退院時文書 (`Composition.category`); by default
    /// `discharge` for a transfer or discharge summary, `outpatient` else.
    pub setting: Option<Setting>,
    /// 患者.
    pub patient: PatientForm,
    /// 紹介元: the facility writing the document, and its doctor.
    pub from: FacilityForm,
    /// 紹介先: the facility the document goes to. Required except for a
    /// discharge summary.
    pub to: Option<FacilityForm>,
    /// 紹介目的. Required except for a discharge summary.
    pub purpose: Option<String>,
    /// 傷病名 (one per item); for a discharge summary, 入院時診断.
    #[serde(default)]
    pub diagnoses: Vec<String>,
    /// 主訴. Required for a discharge summary.
    pub chief_complaint: Option<String>,
    /// 現病歴. Required.
    pub present_illness: Option<String>,
    /// 既往歴 (one per item).
    #[serde(default)]
    pub past_history: Vec<String>,
    /// アレルギー・不耐性反応 (one per item).
    #[serde(default)]
    pub allergies: Vec<String>,
    /// 感染症情報 (one per item, e.g. "HBs抗原 陰性"). Not in a discharge summary.
    #[serde(default)]
    pub infections: Vec<String>,
    /// 家族歴.
    pub family_history: Option<String>,
    /// 身体所見; for a discharge summary, 入院時身体所見.
    pub physical_findings: Option<String>,
    /// 処方 / 投薬 (one drug and its directions per item); for a discharge
    /// summary, 入院時服薬.
    #[serde(default)]
    pub medications: Vec<String>,
    /// 検査結果; for a discharge summary, 入院中検査結果.
    #[serde(default)]
    pub lab_results: Vec<LabResult>,
    /// 臨床経過. Not in a discharge summary (use `discharge.course`).
    pub clinical_course: Option<String>,
    /// 診療方針. Not in a discharge summary (use `discharge.plan`).
    pub plan: Option<String>,
    /// 備考・連絡.
    pub remarks: Option<String>,
    /// 添付: files sent with the document as `attachments/FILE`.
    #[serde(default)]
    pub attachments: Vec<AttachmentForm>,
    /// The admission a discharge summary covers. Only for a discharge summary.
    pub discharge: Option<DischargeForm>,
}

/// 外来 or 退院時 (`Composition.category`, JP doc-subtypecodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    /// OUTPATIENT 外来文書.
    #[serde(alias = "外来")]
    Outpatient,
    /// DISCHARGE 退院時文書.
    #[serde(alias = "退院時")]
    Discharge,
}

impl Setting {
    /// The doc-subtypecodes code.
    pub fn code(self) -> &'static str {
        match self {
            Setting::Outpatient => "OUTPATIENT",
            Setting::Discharge => "DISCHARGE",
        }
    }

    /// The doc-subtypecodes display.
    pub fn display(self) -> &'static str {
        match self {
            Setting::Outpatient => "外来文書",
            Setting::Discharge => "退院時文書",
        }
    }
}

/// 患者.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientForm {
    /// 氏名, family name first, a space between: "山田 太郎".
    pub name: String,
    /// カナ氏名: "ヤマダ タロウ".
    pub kana: String,
    /// 生年月日 (YYYY-MM-DD).
    pub birth_date: String,
    /// 性別: male / female / other / unknown (or 男 / 女 / その他 / 不明).
    pub sex: Sex,
    /// 患者ID at the writing facility.
    pub patient_id: Option<String>,
    /// 被保険者個人識別子 (保険者番号:記号:番号:枝番).
    pub insurance_member_id: Option<String>,
    /// 郵便番号.
    pub postal_code: Option<String>,
    /// 住所.
    pub address: Option<String>,
    /// 電話番号.
    pub phone: Option<String>,
}

/// 性別 (`Patient.gender`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// 男性.
    #[serde(alias = "男", alias = "男性")]
    Male,
    /// 女性.
    #[serde(alias = "女", alias = "女性")]
    Female,
    /// その他.
    #[serde(alias = "その他")]
    Other,
    /// 不明.
    #[serde(alias = "不明")]
    Unknown,
}

impl Sex {
    /// The FHIR administrative gender code.
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }
}

/// A facility and, optionally, its department and doctor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilityForm {
    /// 医療機関コード (10 digits).
    pub facility_id: FacilityId,
    /// 医療機関名.
    pub name: String,
    /// 診療科.
    pub department: Option<String>,
    /// 医師名, family name first ("佐藤 花子"). Required for `from`.
    pub doctor: Option<String>,
    /// 医師名カナ.
    pub doctor_kana: Option<String>,
    /// 電話番号.
    pub phone: Option<String>,
    /// 郵便番号.
    pub postal_code: Option<String>,
    /// 所在地.
    pub address: Option<String>,
}

/// One lab result (検査結果).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabResult {
    /// 検査項目 ("HbA1c").
    pub item: String,
    /// 結果 ("7.2", "陰性").
    pub value: String,
    /// 単位 ("%").
    pub unit: Option<String>,
    /// 検査日 (YYYY-MM-DD).
    pub date: Option<String>,
}

/// One attachment (添付).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentForm {
    /// File name, as given to `renkei seal --attach` (stored as
    /// `attachments/FILE`).
    pub file: String,
    /// 表題 ("安静時12誘導心電図").
    pub title: String,
}

/// The admission a discharge summary (退院時サマリー) covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DischargeForm {
    /// 入院日 (YYYY-MM-DD).
    pub admitted: String,
    /// 退院日 (YYYY-MM-DD).
    pub discharged: String,
    /// 入院理由.
    pub reason: String,
    /// 入院中経過.
    pub course: String,
    /// 退院時診断 (one per item, at least one).
    pub diagnoses: Vec<String>,
    /// 退院時投薬 (one drug and its directions per item).
    #[serde(default)]
    pub medications: Vec<String>,
    /// 退院時方針.
    pub plan: String,
}

/// One problem with a form: the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormError {
    /// The field, as written in the form ("patient.birth_date"); empty for
    /// the whole form.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FormErrors(pub Vec<FormError>);

impl fmt::Display for FormErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

pub(crate) fn err(field: &str, message: impl Into<String>) -> FormError {
    FormError {
        field: field.to_string(),
        message: message.into(),
    }
}

impl Form {
    /// Parse a form from TOML text. Unknown fields are refused so a typing
    /// error in a field name is not silently ignored.
    pub fn from_toml(text: &str) -> Result<Form, FormErrors> {
        toml::from_str(text).map_err(|e| {
            FormErrors(vec![err(
                "",
                format!(
                    "the form is not valid TOML for a renkei document: {}",
                    e.to_string().trim_end()
                ),
            )])
        })
    }

    /// Parse a form from bytes (UTF-8 TOML).
    pub fn from_bytes(bytes: &[u8]) -> Result<Form, FormErrors> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            FormErrors(vec![err(
                "",
                format!(
                    "the form is not UTF-8 (invalid byte at offset {}); save it as UTF-8",
                    e.valid_up_to()
                ),
            )])
        })?;
        Form::from_toml(text.strip_prefix('\u{feff}').unwrap_or(text))
    }

    /// The category, defaulted by kind.
    pub fn setting_for(&self, kind: DocKind) -> Setting {
        self.setting.unwrap_or(match kind {
            DocKind::Transfer | DocKind::DischargeSummary => Setting::Discharge,
            _ => Setting::Outpatient,
        })
    }

    /// Check the form for `kind`: every required field present, every
    /// date a date, no field that does not belong to the kind. Returns
    /// every problem at once.
    pub fn check(&self, kind: DocKind, in_reply_to: Option<&str>) -> Result<(), FormErrors> {
        let e = self.problems(kind, in_reply_to, false);
        if e.is_empty() {
            Ok(())
        } else {
            Err(FormErrors(e))
        }
    }

    /// Every problem of the form for `kind`; for a PDF letter
    /// (`letter`), 現病歴 and 傷病名 may be left to the letter.
    pub(crate) fn problems(
        &self,
        kind: DocKind,
        in_reply_to: Option<&str>,
        letter: bool,
    ) -> Vec<FormError> {
        let mut e = Vec::new();
        let ds = kind == DocKind::DischargeSummary;

        if let Some(n) = &self.document_number {
            if n.trim().is_empty()
                || n.chars().count() > MAX_DOCUMENT_NUMBER_CHARS
                || n.contains('^')
                || n.chars().any(char::is_control)
            {
                e.push(err(
                    "document_number",
                    "must be 1 to 32 characters without '^' (or leave it out for a random number)",
                ));
            }
        }
        if let Some(d) = &self.date {
            check_date(&mut e, "date", d);
        }
        match in_reply_to.or(self.in_reply_to.as_deref()) {
            Some(id) if uuid::Uuid::try_parse(id).is_err() => e.push(err(
                "in_reply_to",
                format!("{id:?} is not a package ID (a UUID such as 436e6f94-befd-4747-a67f-621e0a45bacb)"),
            )),
            Some(_) => {}
            None if kind == DocKind::Reply => e.push(err(
                "in_reply_to",
                "a reply (返書) answers a package: give the package ID of the referral it answers",
            )),
            None => {}
        }

        // 患者
        let p = &self.patient;
        check_name(&mut e, "patient.name", &p.name);
        check_name(&mut e, "patient.kana", &p.kana);
        check_date(&mut e, "patient.birth_date", &p.birth_date);
        for (f, v) in [
            ("patient.patient_id", &p.patient_id),
            ("patient.insurance_member_id", &p.insurance_member_id),
            ("patient.postal_code", &p.postal_code),
            ("patient.address", &p.address),
            ("patient.phone", &p.phone),
        ] {
            check_opt_text(&mut e, f, v.as_deref(), 500);
        }

        // 紹介元 / 紹介先
        check_facility(&mut e, "from", &self.from);
        match &self.from.doctor {
            Some(_) => {}
            None => e.push(err(
                "from.doctor",
                "name the doctor writing the document (family name first, e.g. \"佐藤 花子\")",
            )),
        }
        match &self.to {
            Some(to) => {
                check_facility(&mut e, "to", to);
                if to.facility_id == self.from.facility_id {
                    e.push(err(
                        "to.facility_id",
                        "is the writing facility itself; give the facility the document goes to",
                    ));
                }
            }
            None if !ds => e.push(err(
                "to",
                "add a [to] table naming the facility the document goes to (facility_id, name, department)",
            )),
            None => {}
        }

        // clinical content
        if ds {
            for (f, present) in [
                ("purpose", self.purpose.is_some()),
                ("infections", !self.infections.is_empty()),
                ("clinical_course", self.clinical_course.is_some()),
                ("plan", self.plan.is_some()),
            ] {
                if present {
                    e.push(err(
                        f,
                        "is not part of a discharge summary (退院時サマリー); use [discharge] reason, course and plan, or remarks",
                    ));
                }
            }
            match &self.chief_complaint {
                Some(t) => check_text(&mut e, "chief_complaint", t),
                None => e.push(err(
                    "chief_complaint",
                    "a discharge summary needs the chief complaint (主訴)",
                )),
            }
            if self.diagnoses.is_empty() {
                e.push(err(
                    "diagnoses",
                    "a discharge summary needs the diagnoses on admission (入院時診断), at least one",
                ));
            }
            match &self.discharge {
                Some(d) => check_discharge(&mut e, d),
                None => e.push(err(
                    "discharge",
                    "add a [discharge] table: admitted, discharged, reason, course, diagnoses, medications, plan",
                )),
            }
        } else {
            match &self.purpose {
                Some(t) => check_text(&mut e, "purpose", t),
                None => e.push(err("purpose", "write the purpose (紹介目的)")),
            }
            if let Some(t) = &self.chief_complaint {
                check_text(&mut e, "chief_complaint", t);
            }
            if self.diagnoses.is_empty() && self.chief_complaint.is_none() && !letter {
                e.push(err(
                    "diagnoses",
                    "give at least one diagnosis (傷病名) or a chief complaint (主訴)",
                ));
            }
            if self.discharge.is_some() {
                e.push(err(
                    "discharge",
                    format!(
                        "[discharge] is only for a discharge summary, not a {}",
                        kind.japanese()
                    ),
                ));
            }
        }
        match &self.present_illness {
            Some(t) => check_text(&mut e, "present_illness", t),
            None if letter => {}
            None => e.push(err("present_illness", "write the present illness (現病歴)")),
        }
        for (f, list) in [
            ("diagnoses", &self.diagnoses),
            ("past_history", &self.past_history),
            ("allergies", &self.allergies),
            ("infections", &self.infections),
            ("medications", &self.medications),
        ] {
            check_list(&mut e, f, list);
        }
        for (f, v) in [
            ("family_history", &self.family_history),
            ("physical_findings", &self.physical_findings),
            ("clinical_course", &self.clinical_course),
            ("plan", &self.plan),
            ("remarks", &self.remarks),
        ] {
            if let Some(t) = v {
                check_text(&mut e, f, t);
            }
        }
        if self.lab_results.len() > MAX_LIST_ITEMS {
            e.push(err(
                "lab_results",
                format!("at most {MAX_LIST_ITEMS} results"),
            ));
        }
        for (i, r) in self.lab_results.iter().enumerate() {
            let f = format!("lab_results[{i}]");
            check_line(&mut e, &format!("{f}.item"), &r.item);
            check_line(&mut e, &format!("{f}.value"), &r.value);
            check_opt_text(&mut e, &format!("{f}.unit"), r.unit.as_deref(), 100);
            if let Some(d) = &r.date {
                check_date(&mut e, &format!("{f}.date"), d);
            }
        }

        // 添付
        if self.attachments.len() > MAX_LIST_ITEMS {
            e.push(err(
                "attachments",
                format!("at most {MAX_LIST_ITEMS} attachments"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, a) in self.attachments.iter().enumerate() {
            let f = format!("attachments[{i}]");
            if let Err(why) = crate::package::path::check_attachment_name(&a.file) {
                e.push(err(
                    &format!("{f}.file"),
                    format!(
                        "{:?} is {why}: give the file name only, as for `renkei seal --attach`",
                        a.file
                    ),
                ));
            } else if !names.insert(a.file.as_str()) {
                e.push(err(
                    &format!("{f}.file"),
                    format!("{:?} is listed twice", a.file),
                ));
            }
            check_line(&mut e, &format!("{f}.title"), &a.title);
        }
        e
    }
}

/// Split "山田 太郎" (ASCII or ideographic space) into family and given
/// names.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let name = name.trim_matches(|c: char| c.is_whitespace());
    let i = name.find(|c: char| c.is_whitespace())?;
    let (family, rest) = name.split_at(i);
    let given = rest.trim_matches(|c: char| c.is_whitespace());
    if family.is_empty() || given.is_empty() {
        None
    } else {
        Some((family, given))
    }
}

/// Parse a YYYY-MM-DD date.
pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, format_description!("[year]-[month]-[day]")).ok()
}

fn check_date(e: &mut Vec<FormError>, field: &str, s: &str) {
    if parse_date(s).is_none() {
        e.push(err(
            field,
            format!("{s:?} is not a date; write it as YYYY-MM-DD (e.g. 1956-04-01)"),
        ));
    }
}

fn check_name(e: &mut Vec<FormError>, field: &str, s: &str) {
    check_line(e, field, s);
    if split_name(s).is_none() {
        e.push(err(
            field,
            format!("{s:?}: write the family name first, a space, then the given name (e.g. \"山田 太郎\")"),
        ));
    }
}

fn check_facility(e: &mut Vec<FormError>, prefix: &str, f: &FacilityForm) {
    check_line(e, &format!("{prefix}.name"), &f.name);
    if let Some(d) = &f.doctor {
        check_name(e, &format!("{prefix}.doctor"), d);
    }
    for (n, v) in [
        ("department", &f.department),
        ("doctor_kana", &f.doctor_kana),
        ("phone", &f.phone),
        ("postal_code", &f.postal_code),
        ("address", &f.address),
    ] {
        check_opt_text(e, &format!("{prefix}.{n}"), v.as_deref(), 500);
    }
}

fn check_discharge(e: &mut Vec<FormError>, d: &DischargeForm) {
    check_date(e, "discharge.admitted", &d.admitted);
    check_date(e, "discharge.discharged", &d.discharged);
    if let (Some(a), Some(b)) = (parse_date(&d.admitted), parse_date(&d.discharged)) {
        if b < a {
            e.push(err(
                "discharge.discharged",
                format!("{} is before the admission on {}", d.discharged, d.admitted),
            ));
        }
    }
    check_text(e, "discharge.reason", &d.reason);
    check_text(e, "discharge.course", &d.course);
    check_text(e, "discharge.plan", &d.plan);
    if d.diagnoses.is_empty() {
        e.push(err(
            "discharge.diagnoses",
            "give at least one diagnosis on discharge (退院時診断)",
        ));
    }
    check_list(e, "discharge.diagnoses", &d.diagnoses);
    check_list(e, "discharge.medications", &d.medications);
}

fn check_list(e: &mut Vec<FormError>, field: &str, list: &[String]) {
    if list.len() > MAX_LIST_ITEMS {
        e.push(err(field, format!("at most {MAX_LIST_ITEMS} items")));
    }
    for (i, s) in list.iter().enumerate() {
        check_line(e, &format!("{field}[{i}]"), s);
    }
}

pub(crate) fn check_text(e: &mut Vec<FormError>, field: &str, s: &str) {
    if s.trim().is_empty() {
        e.push(err(
            field,
            "is empty; write something or leave the field out",
        ));
    } else if s.chars().count() > MAX_TEXT_CHARS {
        e.push(err(
            field,
            format!("is longer than {MAX_TEXT_CHARS} characters; attach a file instead"),
        ));
    } else if s
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        e.push(err(field, "contains control characters"));
    }
}

pub(crate) fn check_line(e: &mut Vec<FormError>, field: &str, s: &str) {
    if s.trim().is_empty() {
        e.push(err(field, "is empty"));
    } else if s.chars().count() > 2000 {
        e.push(err(field, "is longer than 2000 characters"));
    } else if s.chars().any(char::is_control) {
        e.push(err(field, "must be one line without control characters"));
    }
}

fn check_opt_text(e: &mut Vec<FormError>, field: &str, s: Option<&str>, max: usize) {
    if let Some(s) = s {
        if s.trim().is_empty() {
            e.push(err(field, "is empty; leave the field out instead"));
        } else if s.chars().count() > max {
            e.push(err(field, format!("is longer than {max} characters")));
        } else if s.chars().any(char::is_control) {
            e.push(err(field, "must be one line without control characters"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
purpose = "精査依頼"
diagnoses = ["狭心症疑い"]
present_illness = "労作時胸痛"

[patient]
name = "山田 太郎"
kana = "ヤマダ タロウ"
birth_date = "1956-04-01"
sex = "男"

[from]
facility_id = "1311234569"
name = "さくら内科クリニック"
doctor = "佐藤 花子"

[to]
facility_id = "1317654323"
name = "東都中央病院"
department = "循環器内科"
"#;

    #[test]
    fn minimal_referral_form_is_accepted() {
        let f = Form::from_toml(MINIMAL).unwrap();
        assert_eq!(f.patient.sex, Sex::Male);
        f.check(DocKind::Referral, None).unwrap();
        assert_eq!(f.setting_for(DocKind::Referral), Setting::Outpatient);
        assert_eq!(f.setting_for(DocKind::Transfer), Setting::Discharge);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let text = MINIMAL.replace("purpose =", "purpos =");
        let e = Form::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("purpos"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut f = Form::from_toml(MINIMAL).unwrap();
        f.patient.birth_date = "1956/04/01".into();
        f.patient.name = "山田太郎".into();
        f.from.doctor = None;
        f.purpose = None;
        f.attachments.push(AttachmentForm {
            file: "../x.pdf".into(),
            title: "x".into(),
        });
        let errs = f.check(DocKind::Reply, None).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        for want in [
            "in_reply_to",
            "patient.name",
            "patient.birth_date",
            "from.doctor",
            "purpose",
            "attachments[0].file",
        ] {
            assert!(fields.contains(&want), "{want} missing in {fields:?}");
        }
    }

    #[test]
    fn discharge_summary_fields_are_checked() {
        let mut f = Form::from_toml(MINIMAL).unwrap();
        let e = f.check(DocKind::DischargeSummary, None).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"purpose"));
        assert!(fields.contains(&"discharge"));
        assert!(fields.contains(&"chief_complaint"));
        f.purpose = None;
        f.chief_complaint = Some("胸痛".into());
        f.discharge = Some(DischargeForm {
            admitted: "2026-05-10".into(),
            discharged: "2026-05-01".into(),
            reason: "PCI".into(),
            course: "経過良好".into(),
            diagnoses: vec![],
            medications: vec![],
            plan: "外来通院".into(),
        });
        let e = f.check(DocKind::DischargeSummary, None).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["discharge.discharged", "discharge.diagnoses"]);
        let e = Form::from_toml(MINIMAL)
            .unwrap()
            .check(DocKind::Referral, Some("not-a-uuid"))
            .unwrap_err();
        assert_eq!(e.0[0].field, "in_reply_to");
    }

    #[test]
    fn names_split_on_ascii_or_ideographic_space() {
        assert_eq!(split_name("山田 太郎"), Some(("山田", "太郎")));
        assert_eq!(split_name("山田\u{3000}太郎"), Some(("山田", "太郎")));
        assert_eq!(split_name(" ヤマダ  タロウ "), Some(("ヤマダ", "タロウ")));
        assert_eq!(split_name("山田太郎"), None);
        assert_eq!(split_name(""), None);
    }

    #[test]
    fn non_utf8_and_bom() {
        assert!(Form::from_bytes(b"\xff\xfe").is_err());
        let mut with_bom = "\u{feff}".as_bytes().to_vec();
        with_bom.extend_from_slice(MINIMAL.as_bytes());
        Form::from_bytes(&with_bom).unwrap();
    }
}
