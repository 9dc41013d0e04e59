//! 作成: the web form of `examples/*.toml`, one per kind (and the short
//! form of a letter that is a PDF). The form becomes a
//! [`crate::document::Form`] (or [`crate::document::LetterForm`]), the
//! library builds the document and validates it against the package it
//! will be sealed in; every problem is shown beside its field before
//! anything is sealed. A confirmation step repeats the addressee and the
//! patient (wrong-send guard); only then is the package sealed and sent
//! with [`crate::client::ops::Session::send_members`], exactly as `renkei
//! send` does.
//!
//! Uploaded attachments and the built document wait in a draft folder
//! (`PROFILE/drafts/ID/`, 0700, emptied when the desk starts) until they are
//! sent or discarded.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use askama::Template;
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form as UrlForm};
use serde::{Deserialize, Serialize};

use super::auth::Authed;
use super::pages::{check_csrf, html, see_other, PageError, PrintPage};
use super::view::{self, Chrome};
use super::{Desk, DeskState};
use crate::client::ops::OpError;
use crate::document::form::{
    AttachmentForm, DischargeForm, FacilityForm, LabResult, PatientForm, Sex,
};
use crate::document::{self, BuildOptions, DocKind, Expect, Form, LetterForm};
use crate::identity::FacilityId;
use crate::package;
use crate::pki::CertInfo;

/// Largest upload of one compose form (attachments included).
pub(crate) const MAX_UPLOAD_BYTES: usize = 2 << 30;
/// Lab result rows on the form.
const LAB_ROWS: usize = 6;

/// The values of the form, as typed (kept to show the form again).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Values {
    pub kind: String,
    pub letter_mode: bool,
    pub reply_to: String,
    pub to_id: String,
    pub to_department: String,
    pub family: String,
    pub given: String,
    pub family_kana: String,
    pub given_kana: String,
    pub birth_date: String,
    pub sex: String,
    pub patient_id: String,
    pub postal_code: String,
    pub address: String,
    pub phone: String,
    pub from_department: String,
    pub doctor_family: String,
    pub doctor_given: String,
    pub doctor_family_kana: String,
    pub doctor_given_kana: String,
    pub from_phone: String,
    pub from_address: String,
    pub purpose: String,
    pub diagnoses: String,
    pub chief_complaint: String,
    pub present_illness: String,
    pub past_history: String,
    pub allergies: String,
    pub infections: String,
    pub family_history: String,
    pub physical_findings: String,
    pub medications: String,
    pub clinical_course: String,
    pub plan: String,
    pub remarks: String,
    pub lab_item: Vec<String>,
    pub lab_value: Vec<String>,
    pub lab_unit: Vec<String>,
    pub lab_date: Vec<String>,
    pub admitted: String,
    pub discharged: String,
    pub admission_reason: String,
    pub course: String,
    pub discharge_diagnoses: String,
    pub discharge_medications: String,
    pub discharge_plan: String,
    pub letter_title: String,
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// "姓 名" from two fields (either may be empty).
fn full_name(family: &str, given: &str) -> String {
    [family.trim(), given.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split "姓 名" back into two fields.
fn split_name(name: &str) -> (String, String) {
    match name.split_once([' ', '\u{3000}']) {
        Some((f, g)) => (f.to_string(), g.trim().to_string()),
        None => (name.to_string(), String::new()),
    }
}

impl Values {
    fn doc_kind(&self) -> Option<DocKind> {
        self.kind.parse().ok()
    }

    fn patient(&self) -> PatientForm {
        PatientForm {
            name: full_name(&self.family, &self.given),
            kana: full_name(&self.family_kana, &self.given_kana),
            birth_date: self.birth_date.trim().to_string(),
            sex: match self.sex.as_str() {
                "male" => Sex::Male,
                "female" => Sex::Female,
                "other" => Sex::Other,
                _ => Sex::Unknown,
            },
            patient_id: opt(&self.patient_id),
            insurance_member_id: None,
            postal_code: opt(&self.postal_code),
            address: opt(&self.address),
            phone: opt(&self.phone),
        }
    }

    fn from(&self, me: &CertInfo) -> Result<FacilityForm, String> {
        Ok(FacilityForm {
            facility_id: me.facility_id().map_err(|e| e.to_string())?.clone(),
            name: me.name.clone(),
            department: opt(&self.from_department),
            doctor: opt(&full_name(&self.doctor_family, &self.doctor_given)),
            doctor_kana: opt(&full_name(
                &self.doctor_family_kana,
                &self.doctor_given_kana,
            )),
            phone: opt(&self.from_phone),
            postal_code: None,
            address: opt(&self.from_address),
        })
    }

    fn to(&self, to: Option<&CertInfo>) -> Option<FacilityForm> {
        let c = to?;
        Some(FacilityForm {
            facility_id: c.facility_id().ok()?.clone(),
            name: c.name.clone(),
            department: opt(&self.to_department),
            doctor: None,
            doctor_kana: None,
            phone: None,
            postal_code: None,
            address: None,
        })
    }

    fn labs(&self) -> Vec<LabResult> {
        (0..self.lab_item.len())
            .filter_map(|i| {
                let item = opt(self.lab_item.get(i)?)?;
                Some(LabResult {
                    item,
                    value: self.lab_value.get(i).cloned().unwrap_or_default(),
                    unit: self.lab_unit.get(i).and_then(|u| opt(u)),
                    date: self.lab_date.get(i).and_then(|d| opt(d)),
                })
            })
            .collect()
    }

    fn form(
        &self,
        kind: DocKind,
        me: &CertInfo,
        to: Option<&CertInfo>,
        attachments: &[String],
    ) -> Result<Form, String> {
        let discharge = (kind == DocKind::DischargeSummary).then(|| DischargeForm {
            admitted: self.admitted.trim().to_string(),
            discharged: self.discharged.trim().to_string(),
            reason: self.admission_reason.trim().to_string(),
            course: self.course.trim().to_string(),
            diagnoses: lines(&self.discharge_diagnoses),
            medications: lines(&self.discharge_medications),
            plan: self.discharge_plan.trim().to_string(),
        });
        Ok(Form {
            document_number: None,
            date: None,
            in_reply_to: opt(&self.reply_to),
            setting: None,
            patient: self.patient(),
            from: self.from(me)?,
            to: if kind == DocKind::DischargeSummary && to.is_none() {
                None
            } else {
                self.to(to)
            },
            purpose: opt(&self.purpose),
            diagnoses: lines(&self.diagnoses),
            chief_complaint: opt(&self.chief_complaint),
            present_illness: opt(&self.present_illness),
            past_history: lines(&self.past_history),
            allergies: lines(&self.allergies),
            infections: if kind == DocKind::DischargeSummary {
                Vec::new()
            } else {
                lines(&self.infections)
            },
            family_history: opt(&self.family_history),
            physical_findings: opt(&self.physical_findings),
            medications: lines(&self.medications),
            lab_results: self.labs(),
            clinical_course: if kind == DocKind::DischargeSummary {
                None
            } else {
                opt(&self.clinical_course)
            },
            plan: if kind == DocKind::DischargeSummary {
                None
            } else {
                opt(&self.plan)
            },
            remarks: opt(&self.remarks),
            attachments: attachments
                .iter()
                .map(|f| AttachmentForm {
                    file: f.clone(),
                    title: f
                        .rsplit_once('.')
                        .map_or(f.as_str(), |(s, _)| s)
                        .to_string(),
                })
                .collect(),
            discharge,
        })
    }

    fn letter_form(
        &self,
        me: &CertInfo,
        to: Option<&CertInfo>,
        others: &[String],
    ) -> Result<LetterForm, String> {
        Ok(LetterForm {
            document_number: None,
            date: None,
            in_reply_to: opt(&self.reply_to),
            setting: None,
            patient: self.patient(),
            from: self.from(me)?,
            to: self.to(to),
            purpose: opt(&self.purpose),
            diagnoses: lines(&self.diagnoses),
            letter_title: opt(&self.letter_title),
            remarks: opt(&self.remarks),
            attachments: others
                .iter()
                .map(|f| AttachmentForm {
                    file: f.clone(),
                    title: f.clone(),
                })
                .collect(),
        })
    }

    /// Fill from a received document this one answers: the patient and the
    /// addressee (the facility that sent it).
    fn prefill_from(&mut self, s: &document::Summary, sender: &str) {
        let (f, g) = split_name(&s.patient.name);
        self.family = f;
        self.given = g;
        if let Some(k) = &s.patient.kana {
            let (f, g) = split_name(k);
            self.family_kana = f;
            self.given_kana = g;
        }
        if let Some(b) = &s.patient.birth_date {
            self.birth_date = b.clone();
        }
        if let Some(sex) = &s.patient.sex {
            self.sex = sex.clone();
        }
        self.to_id = sender.to_string();
        self.diagnoses = s.diagnoses.join("\n");
    }
}

/// Remembered between forms: who writes at this facility.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Defaults {
    from_department: String,
    doctor_family: String,
    doctor_given: String,
    doctor_family_kana: String,
    doctor_given_kana: String,
    from_phone: String,
    from_address: String,
}

fn defaults_path(desk: &Desk) -> PathBuf {
    desk.profile.path("desk-defaults.json")
}

fn load_defaults(desk: &Desk, v: &mut Values) {
    let Ok(b) = fs::read(defaults_path(desk)) else {
        return;
    };
    let Ok(d) = serde_json::from_slice::<Defaults>(&b) else {
        return;
    };
    v.from_department = d.from_department;
    v.doctor_family = d.doctor_family;
    v.doctor_given = d.doctor_given;
    v.doctor_family_kana = d.doctor_family_kana;
    v.doctor_given_kana = d.doctor_given_kana;
    v.from_phone = d.from_phone;
    v.from_address = d.from_address;
}

fn save_defaults(desk: &Desk, v: &Values) {
    let d = Defaults {
        from_department: v.from_department.clone(),
        doctor_family: v.doctor_family.clone(),
        doctor_given: v.doctor_given.clone(),
        doctor_family_kana: v.doctor_family_kana.clone(),
        doctor_given_kana: v.doctor_given_kana.clone(),
        from_phone: v.from_phone.clone(),
        from_address: v.from_address.clone(),
    };
    let _ = crate::pki::ca::write_file_atomic(
        &defaults_path(desk),
        &serde_json::to_vec_pretty(&d).expect("json"),
    );
}

/// A document built and validated, waiting for confirmation.
pub(crate) struct Draft {
    values: Values,
    kind: DocKind,
    to: Vec<FacilityId>,
    to_cert: Option<CertInfo>,
    in_reply_to: Option<String>,
    document: Option<Vec<u8>>,
    /// `attachments/NAME` members: (name, file in the draft folder).
    files: Vec<(String, PathBuf)>,
    dir: PathBuf,
}

/// The drafts of this desk.
pub(crate) struct Drafts {
    root: PathBuf,
    map: Mutex<HashMap<String, Draft>>,
}

impl Drafts {
    /// An empty draft area (what an earlier run left is removed: drafts
    /// live only as long as the desk).
    pub(crate) fn new(p: &crate::profile::Profile) -> std::io::Result<Drafts> {
        let root = p.path("drafts");
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        crate::files::private_dir(&root)?;
        Ok(Drafts {
            root,
            map: Mutex::new(HashMap::new()),
        })
    }

    fn create(&self) -> std::io::Result<(String, PathBuf)> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.root.join(&id);
        crate::files::private_dir(&dir)?;
        Ok((id, dir))
    }

    fn take(&self, id: &str) -> Option<Draft> {
        self.map.lock().expect("lock").remove(id)
    }

    fn put(&self, id: String, d: Draft) {
        self.map.lock().expect("lock").insert(id, d);
    }

    fn discard(&self, id: &str) {
        if let Some(d) = self.take(id) {
            let _ = fs::remove_dir_all(&d.dir);
        }
    }
}

// --- the form ---------------------------------------------------------------

struct Addressee {
    id: String,
    label: String,
    fingerprint: String,
    group: &'static str,
    favourite: bool,
    selected: bool,
}

struct KindChoice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "compose.html")]
struct ComposePage {
    c: Chrome,
    v: Values,
    kinds: Vec<KindChoice>,
    addressees: Vec<Addressee>,
    errors: HashMap<String, Vec<String>>,
    general: Vec<String>,
    draft: String,
    kept_files: Vec<String>,
    is_discharge: bool,
    me_name: String,
    me_id: String,
    birth_wareki: String,
}

impl ComposePage {
    /// The problems of one field (by its form path, e.g. `patient.name`).
    fn errs(&self, key: &str) -> Vec<String> {
        self.errors.get(key).cloned().unwrap_or_default()
    }

    fn lab(&self, which: &str, i: &usize) -> String {
        let list = match which {
            "item" => &self.v.lab_item,
            "value" => &self.v.lab_value,
            "unit" => &self.v.lab_unit,
            _ => &self.v.lab_date,
        };
        list.get(*i).cloned().unwrap_or_default()
    }

    /// Every problem, in the order of the form, with a link to its field.
    fn summary(&self) -> Vec<Problem> {
        SHOWN
            .iter()
            .filter_map(|(key, label, id)| Some((label, id, self.errors.get(*key)?)))
            .flat_map(|(label, id, msgs)| {
                msgs.iter().map(move |m| Problem {
                    href: format!("#{id}"),
                    label,
                    message: m.clone(),
                })
            })
            .collect()
    }

    fn lab_rows(&self) -> Vec<usize> {
        (0..LAB_ROWS.max(self.v.lab_item.len())).collect()
    }
}

/// One problem in the summary at the top of the form.
struct Problem {
    href: String,
    label: &'static str,
    message: String,
}

const KINDS: [(&str, &str); 5] = [
    ("referral", "紹介状（診療情報提供書）"),
    ("reply", "返書"),
    ("reverse-referral", "逆紹介"),
    ("transfer", "転院依頼"),
    ("discharge-summary", "退院時サマリー"),
];

/// The verified addressees this facility may choose from: the directory
/// certificates it verified, checked again now.
async fn addressees(desk: &Desk, selected: &str) -> Vec<Addressee> {
    let trust = match desk.profile.trust() {
        Ok(t) => t,
        Err(_) => return Vec::new(),
    };
    let me = desk.me.id.to_string();
    let mut out = Vec::new();
    for (pem, fav, used) in desk.store().cached_certificates().await.unwrap_or_default() {
        let Ok(c) = CertInfo::parse_pem(pem.as_bytes(), "directory") else {
            continue;
        };
        let Ok(c) = trust.verify(&c.der, None) else {
            continue;
        };
        let id = c.id.to_string();
        if id == me || c.facility_id().is_err() {
            continue;
        }
        out.push(Addressee {
            selected: id == selected,
            label: format!("{}（{}・{}）", c.name, kind_label(c.kind), id),
            fingerprint: c.fingerprint.clone(),
            id,
            favourite: fav,
            group: if fav {
                "お気に入り"
            } else if used.is_some() {
                "最近の宛先"
            } else {
                "その他の施設"
            },
        });
    }
    out
}

fn kind_label(k: crate::identity::Kind) -> &'static str {
    use crate::identity::Kind;
    match k {
        Kind::Clinic => "診療所",
        Kind::Hospital => "病院",
        Kind::RegionalSupportHospital => "地域医療支援病院",
        Kind::Pharmacy => "薬局",
        _ => "施設",
    }
}

async fn page(
    desk: &Desk,
    authed: &Authed,
    v: Values,
    errors: HashMap<String, Vec<String>>,
    general: Vec<String>,
    draft: String,
    kept_files: Vec<String>,
) -> ComposePage {
    let kind = v.doc_kind().unwrap_or(DocKind::Referral);
    ComposePage {
        c: Chrome::new(desk, authed, "/compose", "作成").await,
        kinds: KINDS
            .iter()
            .map(|(value, label)| KindChoice {
                value,
                label,
                selected: *value == kind.as_str(),
            })
            .collect(),
        addressees: addressees(desk, &v.to_id).await,
        is_discharge: kind == DocKind::DischargeSummary,
        me_name: desk.me.name.clone(),
        me_id: desk.me.id.to_string(),
        birth_wareki: if v.birth_date.is_empty() {
            String::new()
        } else {
            view::date(&v.birth_date)
        },
        v,
        errors,
        general,
        draft,
        kept_files,
    }
}

#[derive(Deserialize)]
pub(crate) struct Start {
    kind: Option<String>,
    reply_to: Option<String>,
    letter: Option<String>,
}

/// `GET /compose?kind=&reply_to=&letter=1`: an empty form, or one
/// pre-filled from the package it answers.
pub(crate) async fn form(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Query(q): Query<Start>,
) -> Result<Response, PageError> {
    if desk.is_auditor() {
        return Ok(Redirect::to("/audit").into_response());
    }
    let mut v = Values {
        kind: q
            .kind
            .filter(|k| k.parse::<DocKind>().is_ok())
            .unwrap_or_else(|| "referral".into()),
        letter_mode: q.letter.is_some_and(|l| !l.is_empty()),
        ..Default::default()
    };
    load_defaults(&desk, &mut v);
    if let Some(p) = q.reply_to.filter(|p| uuid::Uuid::parse_str(p).is_ok()) {
        if let Some((summary, sender)) = answered(&desk, &p).await {
            v.prefill_from(&summary, &sender);
        }
        v.reply_to = p;
    }
    html(
        page(
            &desk,
            &authed,
            v,
            HashMap::new(),
            Vec::new(),
            String::new(),
            Vec::new(),
        )
        .await,
    )
}

/// The document of a received package (by package ID) and its sender.
async fn answered(desk: &Desk, package_id: &str) -> Option<(document::Summary, String)> {
    let a = desk
        .store()
        .arrivals()
        .await
        .ok()?
        .into_iter()
        .find(|a| a.row.package_id.as_deref() == Some(package_id))?;
    let bytes = fs::read(Path::new(&a.row.location).join(package::DOCUMENT_PATH)).ok()?;
    let s = document::validate(&bytes, &Expect::default()).ok()?;
    Some((s, a.row.sender))
}

/// Read the multipart form: text fields, attachments and the letter into
/// the draft folder.
async fn read_form(
    mut m: Multipart,
    dir: &Path,
) -> Result<
    (
        Values,
        String,
        String,
        Vec<(String, PathBuf)>,
        Option<(String, PathBuf)>,
    ),
    PageError,
> {
    let mut v = Values::default();
    let (mut csrf, mut draft) = (String::new(), String::new());
    let mut files = Vec::new();
    let mut letter = None;
    let bad = |e: axum::extract::multipart::MultipartError| {
        PageError(
            StatusCode::BAD_REQUEST,
            format!("フォームを読めません: {e}"),
        )
    };
    while let Some(mut field) = m.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "attachments" || name == "letter" {
            let Some(file_name) = field
                .file_name()
                .map(str::to_string)
                .filter(|f| !f.is_empty())
            else {
                continue;
            };
            let file_name = Path::new(&file_name)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if let Err(why) = package::path::check_attachment_name(&file_name) {
                return Err(PageError(
                    StatusCode::BAD_REQUEST,
                    format!("ファイル名「{file_name}」は使えません（{why}）。名前を変えてから選び直してください。"),
                ));
            }
            let dest = dir.join(format!("{}-{}", files.len() + 1, uuid::Uuid::new_v4()));
            let mut f = crate::files::private_file_options()
                .create_new(true)
                .open(&dest)?;
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                f.write_all(&chunk)?;
            }
            f.sync_all()?;
            if name == "letter" {
                letter = Some((file_name, dest));
            } else {
                files.push((file_name, dest));
            }
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        match name.as_str() {
            "csrf" => csrf = text,
            "draft" => draft = text,
            "lab_item" => v.lab_item.push(text),
            "lab_value" => v.lab_value.push(text),
            "lab_unit" => v.lab_unit.push(text),
            "lab_date" => v.lab_date.push(text),
            "letter_mode" => v.letter_mode = text == "1",
            other => {
                let mut j = serde_json::to_value(&v).expect("json");
                if let Some(slot) = j.get_mut(other).filter(|s| s.is_string()) {
                    *slot = serde_json::Value::String(text);
                    v = serde_json::from_value(j).expect("same shape");
                }
            }
        }
    }
    Ok((v, csrf, draft, files, letter))
}

/// `POST /compose`: build and validate; show the problems, or the
/// confirmation.
pub(crate) async fn check(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    multipart: Multipart,
) -> Result<Response, PageError> {
    let (id, dir) = desk.drafts.create()?;
    let read = read_form(multipart, &dir).await;
    let (v, csrf, earlier, mut files, letter) = match read {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    if let Err(e) = check_csrf(&desk, &authed, &csrf) {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    // Attachments chosen on an earlier try of this form stay unless chosen again.
    if let Some(old) = (!earlier.is_empty())
        .then(|| desk.drafts.take(&earlier))
        .flatten()
    {
        for (name, path) in old.files {
            if !files.iter().any(|(n, _)| *n == name) {
                let moved = dir.join(format!("k-{}", uuid::Uuid::new_v4()));
                fs::rename(&path, &moved)?;
                files.push((name, moved));
            }
        }
        let _ = fs::remove_dir_all(&old.dir);
    }
    let mut p = Problems::default();
    let kind = v.doc_kind().unwrap_or(DocKind::Referral);
    // The addressee: a directory certificate this facility verified.
    let to_cert = match v.to_id.trim().parse::<FacilityId>().ok() {
        Some(id) => match desk.store().cached_certificate(id.as_str()).await? {
            Some(pem) => {
                let c = CertInfo::parse_pem(pem.as_bytes(), "directory")?;
                match desk.profile.trust()?.verify_peer(&c.der, None) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        p.add(
                            Some("to.facility_id"),
                            format!("宛先の証明書を確認できません: {e}"),
                        );
                        None
                    }
                }
            }
            None => {
                p.add(
                    Some("to.facility_id"),
                    "宛先を一覧から選んでください".into(),
                );
                None
            }
        },
        None if kind == DocKind::DischargeSummary && v.to_id.trim().is_empty() => None,
        None => {
            p.add(
                Some("to.facility_id"),
                "宛先（紹介先）を選んでください".into(),
            );
            None
        }
    };
    if kind == DocKind::DischargeSummary && to_cert.is_none() && p.is_empty() {
        p.add(
            Some("to.facility_id"),
            "退院時サマリーの送り先を選んでください".into(),
        );
    }
    let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    if v.letter_mode {
        match &letter {
            None => p.add(Some("letter"), "紹介状のPDFを選んでください".into()),
            Some((name, path)) => {
                let head = fs::read(path)?.into_iter().take(8).collect::<Vec<_>>();
                let size = fs::metadata(path)?.len();
                if let Err(e) = document::check_pdf(&head, size) {
                    p.add(Some("letter"), e.to_string());
                }
                if names.contains(name) {
                    p.add(
                        Some("letter"),
                        "同じ名前のファイルが添付にもあります".into(),
                    );
                }
            }
        }
    }
    let mut built = None;
    if p.is_empty() {
        let opts = BuildOptions {
            in_reply_to: opt(&v.reply_to),
            ..Default::default()
        };
        let result = if v.letter_mode {
            let (lname, _) = letter.as_ref().expect("checked above");
            v.letter_form(&desk.me, to_cert.as_ref(), &names)
                .map_err(|e| vec![(None, e)])
                .and_then(|lf| {
                    document::build_letter_json(kind, &lf, lname, &opts).map_err(|e| {
                        e.0.into_iter()
                            .map(|fe| {
                                let m = view::form_error_ja(&fe.field, &fe.message);
                                (Some(fe.field), m)
                            })
                            .collect()
                    })
                })
        } else {
            v.form(kind, &desk.me, to_cert.as_ref(), &names)
                .map_err(|e| vec![(None, e)])
                .and_then(|f| {
                    document::build_json(kind, &f, &opts).map_err(|e| {
                        e.0.into_iter()
                            .map(|fe| {
                                let m = view::form_error_ja(&fe.field, &fe.message);
                                (Some(fe.field), m)
                            })
                            .collect()
                    })
                })
        };
        match result {
            Ok(doc) => built = Some(doc),
            Err(list) => {
                for (k, m) in list {
                    p.add(k.as_deref(), m);
                }
            }
        }
    }
    if let Some((lname, lpath)) = letter {
        names.push(lname.clone());
        files.push((lname, lpath));
    }
    if let Some(doc) = &built {
        let me = desk.me.facility_id()?.clone();
        let expect = Expect {
            sender: Some((&me).into()),
            recipients: to_cert
                .iter()
                .filter_map(|c| c.facility_id().ok())
                .map(Into::into)
                .collect(),
            attachment_members: Some(
                names
                    .iter()
                    .map(|n| format!("{}/{n}", package::ATTACHMENTS_DIR))
                    .collect(),
            ),
            kind: Some(kind),
            in_reply_to: opt(&v.reply_to),
        };
        if let Err(issues) = document::validate(doc, &expect) {
            for i in issues {
                p.add(i.field.as_deref(), view::issue_ja(&i));
            }
        }
    }
    let to: Vec<FacilityId> = to_cert
        .iter()
        .filter_map(|c| c.facility_id().ok().cloned())
        .collect();
    let ok = p.is_empty();
    let draft = Draft {
        kind,
        to,
        to_cert,
        in_reply_to: opt(&v.reply_to),
        document: if ok { built } else { None },
        files,
        dir,
        values: v,
    };
    if ok {
        desk.drafts.put(id.clone(), draft);
        return Ok(Redirect::to(&format!("/compose/{id}")).into_response());
    }
    let kept = draft.files.iter().map(|(n, _)| n.clone()).collect();
    let values = draft.values.clone();
    desk.drafts.put(id.clone(), draft);
    let page = page(&desk, &authed, values, p.errors, p.general, id, kept).await;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, askama_html(page)?).into_response())
}

/// The problems found in a form: by field (as the form names it), and
/// the rest.
#[derive(Default)]
struct Problems {
    errors: HashMap<String, Vec<String>>,
    general: Vec<String>,
}

/// The fields the form shows problems beside: the form's name for the
/// field, its label, and the id of its input.
const SHOWN: [(&str, &str, &str); 34] = [
    ("in_reply_to", "回答する文書", "kind"),
    ("to", "宛先", "to_id"),
    ("to.facility_id", "宛先", "to_id"),
    ("patient.name", "患者氏名", "family"),
    ("patient.kana", "患者氏名（カナ）", "family_kana"),
    ("patient.birth_date", "生年月日", "birth_date"),
    ("patient.patient_id", "患者ID", "patient_id"),
    ("patient.phone", "電話番号", "phone"),
    ("patient.postal_code", "郵便番号", "postal_code"),
    ("from", "紹介元", "from_department"),
    ("from.doctor", "医師名", "doctor_family"),
    ("purpose", "紹介目的", "purpose"),
    ("diagnoses", "傷病名", "diagnoses"),
    ("letter", "紹介状のPDF", "letter"),
    ("chief_complaint", "主訴", "chief_complaint"),
    ("present_illness", "現病歴", "present_illness"),
    ("past_history", "既往歴", "past_history"),
    ("family_history", "家族歴", "family_history"),
    ("allergies", "アレルギー・副作用", "allergies"),
    ("infections", "感染症", "infections"),
    ("physical_findings", "身体所見", "physical_findings"),
    ("medications", "現在の処方", "medications"),
    ("lab_results", "検査結果", "labs"),
    ("clinical_course", "治療経過", "clinical_course"),
    ("plan", "診療方針", "plan"),
    ("remarks", "備考", "remarks"),
    ("discharge", "入院の経過", "admitted"),
    ("discharge.admitted", "入院日", "admitted"),
    ("discharge.discharged", "退院日", "discharged"),
    ("discharge.reason", "入院理由", "admission_reason"),
    ("discharge.course", "入院中の経過", "course"),
    ("discharge.diagnoses", "退院時診断", "discharge_diagnoses"),
    ("discharge.plan", "退院後の方針", "discharge_plan"),
    ("attachments", "添付ファイル", "attachments"),
];

impl Problems {
    /// Record a problem beside its field (`lab_results[2].date` beside the
    /// lab results), or among the general ones when the form has no such
    /// field.
    fn add(&mut self, key: Option<&str>, msg: String) {
        let key = key.map(|k| k.split('[').next().unwrap_or(k));
        match key.filter(|k| SHOWN.iter().any(|(f, _, _)| f == k)) {
            Some(k) => self.errors.entry(k.to_string()).or_default().push(msg),
            None => self.general.push(msg),
        }
    }

    fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.general.is_empty()
    }
}

fn askama_html<T: Template>(t: T) -> Result<axum::response::Html<String>, PageError> {
    Ok(axum::response::Html(t.render()?))
}

// --- confirmation, send, print, discard -----------------------------------------

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    c: Chrome,
    id: String,
    kind: &'static str,
    to_name: String,
    to_id: String,
    to_department: String,
    fingerprint: String,
    patient: String,
    kana: String,
    birth: String,
    sex: &'static str,
    files: Vec<String>,
    document: String,
}

fn sex_ja(s: &str) -> &'static str {
    match s {
        "male" => "男性",
        "female" => "女性",
        "other" => "その他",
        _ => "不明",
    }
}

fn with_draft<T>(desk: &Desk, id: &str, f: impl FnOnce(&Draft) -> T) -> Result<T, PageError> {
    let map = desk.drafts.map.lock().expect("lock");
    let d = map
        .get(id)
        .filter(|d| d.document.is_some())
        .ok_or_else(|| {
            PageError(
                StatusCode::NOT_FOUND,
                "この下書きはもうありません（送信済み、破棄済み、またはデスクを再起動しました）。"
                    .into(),
            )
        })?;
    Ok(f(d))
}

/// `GET /compose/{draft}`: confirm addressee and patient before sending.
pub(crate) async fn confirm(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, PageError> {
    let c = Chrome::new(&desk, &authed, "/compose", "送信前の確認").await;
    let page = with_draft(&desk, &id, |d| {
        let doc = d.document.as_deref().unwrap_or_default();
        let bundle = document::validate::parse(doc).unwrap_or_default();
        let v = &d.values;
        ConfirmPage {
            c,
            id: id.clone(),
            kind: crate::client::threads::kind_label(d.kind.into()),
            to_name: d
                .to_cert
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            to_id: d.to.first().map(|t| t.to_string()).unwrap_or_default(),
            to_department: v.to_department.clone(),
            fingerprint: d
                .to_cert
                .as_ref()
                .map(|c| c.fingerprint.clone())
                .unwrap_or_default(),
            patient: full_name(&v.family, &v.given),
            kana: full_name(&v.family_kana, &v.given_kana),
            birth: view::date(&v.birth_date),
            sex: sex_ja(&v.sex),
            files: d.files.iter().map(|(n, _)| n.clone()).collect(),
            document: document::render::html_fragment(&bundle),
        }
    })?;
    html(page)
}

#[derive(Deserialize)]
pub(crate) struct SendForm {
    #[serde(default)]
    csrf: String,
    confirmed: Option<String>,
}

/// `POST /compose/{draft}/send`: seal, queue and send.
pub(crate) async fn send(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(id): UrlPath<String>,
    UrlForm(f): UrlForm<SendForm>,
) -> Result<Response, PageError> {
    check_csrf(&desk, &authed, &f.csrf)?;
    if f.confirmed.as_deref() != Some("yes") {
        return Err(PageError(
            StatusCode::BAD_REQUEST,
            "宛先と患者を確認したら、確認欄にチェックを入れてから送信してください。".into(),
        ));
    }
    with_draft(&desk, &id, |_| ())?;
    let d = desk.drafts.take(&id).expect("checked above");
    let result = send_draft(&desk, &d).await;
    match result {
        Ok(()) => {
            save_defaults(&desk, &d.values);
            let _ = fs::remove_dir_all(&d.dir);
            Ok(see_other(
                "/sent",
                "送信しました。相手の受領通知が届くと「到達」になります。",
            ))
        }
        Err(OpError::Queued { .. }) => {
            save_defaults(&desk, &d.values);
            let _ = fs::remove_dir_all(&d.dir);
            Ok(see_other(
                "/sent",
                "中継サーバーに接続できないため、暗号化して送信待ちにしました。接続が戻ると自動で送信します。",
            ))
        }
        Err(e) => {
            desk.drafts.put(id, d);
            Err(PageError(
                StatusCode::BAD_GATEWAY,
                format!("送信できませんでした（下書きは残っています）: {e}"),
            ))
        }
    }
}

async fn send_draft(desk: &Desk, d: &Draft) -> Result<(), OpError> {
    let mut attachments = Vec::new();
    for (name, path) in &d.files {
        attachments.push(
            crate::files::member_from_file(
                path,
                format!("{}/{name}", package::ATTACHMENTS_DIR),
                package::media_type_for(name).into(),
            )
            .map_err(|e| OpError::Usage(e.to_string()))?,
        );
    }
    let _one = desk.work.lock().await;
    let s = crate::client::ops::Session::open(&desk.dir, desk.opts.relay.as_deref()).await?;
    s.send_members(
        &d.to,
        d.kind.into(),
        d.in_reply_to.clone(),
        None,
        d.document.clone().unwrap_or_default(),
        attachments,
        |_, _| {},
    )
    .await?;
    Ok(())
}

/// `GET /compose/{draft}/edit`: back to the form with the same values.
pub(crate) async fn edit(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, PageError> {
    let (v, kept) = with_draft(&desk, &id, |d| {
        (
            d.values.clone(),
            d.files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        )
    })?;
    html(page(&desk, &authed, v, HashMap::new(), Vec::new(), id, kept).await)
}

/// `GET /compose/{draft}/print`: print the document before (or instead of)
/// sending it, for a facility not on the network yet.
pub(crate) async fn print(
    State(desk): State<DeskState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, PageError> {
    let body = with_draft(&desk, &id, |d| {
        let bundle = document::validate::parse(d.document.as_deref().unwrap_or_default())
            .unwrap_or_default();
        document::render::print_fragment(&bundle)
    })?;
    html(PrintPage {
        title: "印刷（未送信の文書）".into(),
        back: format!("/compose/{id}"),
        body,
        note: "この文書はまだ送信されていません。".into(),
    })
}

/// `POST /compose/{draft}/discard`.
pub(crate) async fn discard(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(id): UrlPath<String>,
    UrlForm(f): UrlForm<super::pages::CsrfOnly>,
) -> Result<Response, PageError> {
    check_csrf(&desk, &authed, &f.csrf)?;
    desk.drafts.discard(&id);
    Ok(see_other("/compose", "下書きを破棄しました"))
}

// --- the directory ----------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct DirQuery {
    q: Option<String>,
}

/// `GET /directory?q=`: addressees matching a name or ID (JSON, for the
/// search box of the form), from the certificates this facility verified.
pub(crate) async fn directory(
    State(desk): State<DeskState>,
    Query(q): Query<DirQuery>,
) -> Result<Response, PageError> {
    let needle = q.q.unwrap_or_default();
    let list: Vec<serde_json::Value> = addressees(&desk, "")
        .await
        .into_iter()
        .filter(|a| needle.is_empty() || a.label.contains(needle.trim()))
        .map(|a| {
            serde_json::json!({
                "id": a.id, "label": a.label, "fingerprint": a.fingerprint, "group": a.group,
            })
        })
        .collect();
    Ok(axum::Json(list).into_response())
}

/// `POST /directory/{id}/favourite`: mark or unmark a favourite addressee.
pub(crate) async fn favourite(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(id): UrlPath<String>,
    UrlForm(f): UrlForm<FavForm>,
) -> Result<Response, PageError> {
    check_csrf(&desk, &authed, &f.csrf)?;
    let on = f.on.as_deref() == Some("1");
    if !desk.store().set_favourite(&id, on).await? {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            "この施設は一覧にありません。".into(),
        ));
    }
    Ok(see_other(
        "/compose",
        if on {
            "お気に入りに追加しました"
        } else {
            "お気に入りから外しました"
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct FavForm {
    #[serde(default)]
    csrf: String,
    on: Option<String>,
}
