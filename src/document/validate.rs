//! Validation of a document before it is sealed and after it is opened:
//! FHIR R4 JSON well-formedness, the Document Bundle shape, the JP-CLINS
//! sections each kind requires, every reference resolvable inside the
//! Bundle, and — when the package is known — the 紹介元 / 紹介先
//! Organizations and the attachments matched against the package.
//!
//! A Bundle written by another system that follows the guide (such as the
//! JP-CLINS example) passes as it is; renkei's own additions (the kind tag,
//! `relatesTo`) are optional.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::codes::{self, Level};
use super::read::{self, arr, concept_text, str_at, Index};
use super::{DocKind, FacilityCode, MAX_DOCUMENT_BYTES};
use crate::package::{Manifest, ATTACHMENTS_DIR};

/// What the package around the document says, to be matched against the
/// document. Every field is optional: [`Expect::default()`] checks the
/// document alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// The sending facility: must be the 紹介元 (section 920), or for a
    /// discharge summary the custodian Organization.
    pub sender: Option<FacilityCode>,
    /// The recipients: the 紹介先 (section 910) must be one of them (when
    /// not empty).
    pub recipients: Vec<FacilityCode>,
    /// The package's member paths (`attachments/NAME`; other paths such as
    /// `document.json` are ignored). When given, every attachment the
    /// document references must be a member and every attachment member
    /// must be referenced.
    pub attachment_members: Option<Vec<String>>,
    /// The package kind: a tagged document must carry the same kind, an
    /// untagged one the same document type.
    pub kind: Option<DocKind>,
    /// The package ID the package answers: a document that names the
    /// package it answers (`Composition.relatesTo`) must name this one.
    pub in_reply_to: Option<String>,
}

impl Expect {
    /// Everything a package manifest says about its document: sender,
    /// recipients, members, kind (none for `clinical-info`) and
    /// in-reply-to.
    pub fn from_manifest(m: &Manifest) -> Expect {
        Expect {
            sender: Some((&m.sender.facility_id).into()),
            recipients: m
                .recipients
                .iter()
                .map(|r| (&r.facility_id).into())
                .collect(),
            attachment_members: Some(m.members.iter().map(|x| x.path.clone()).collect()),
            kind: DocKind::try_from(m.kind).ok(),
            in_reply_to: m.in_reply_to.clone(),
        }
    }
}

/// What kind of problem an [`Issue`] is; stable names usable as reason
/// codes (`document-missing-section`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    TooLarge,
    /// Not UTF-8.
    NotUtf8,
    /// Not JSON.
    NotJson,
    /// JSON, but not a FHIR Bundle.
    NotBundle,
    /// A Bundle, but not of type `document`.
    NotDocument,
    /// The Bundle's shape (entries, fullUrls, identifier, timestamp).
    Bundle,
    /// The Composition (status, type, title, date, identifier, author, ...).
    Composition,
    /// A required section is missing.
    MissingSection,
    /// A section appears more often than allowed.
    DuplicateSection,
    /// A section code that is not JP-CLINS, or not of this kind of document.
    UnknownSection,
    /// A section at the wrong level.
    MisplacedSection,
    /// A section without text or entries, or with an empty reason and entries.
    EmptySection,
    /// A section entry of the wrong resource type or count.
    SectionEntry,
    /// A reference that does not resolve inside the Bundle.
    DanglingReference,
    /// The Patient.
    Patient,
    /// An Organization without a medical institution code.
    MissingFacilityCode,
    /// The 紹介元 is not the sending facility.
    WrongSender,
    /// The 紹介先 is not a recipient.
    WrongRecipient,
    /// The document kind does not match the package.
    WrongKind,
    /// The document answers another package than the package does.
    WrongInReplyTo,
    /// An attachment reference and the package members disagree.
    Attachment,
}

impl IssueCode {
    /// A stable reason code, `document-` + the kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::TooLarge => "document-too-large",
            IssueCode::NotUtf8 => "document-not-utf8",
            IssueCode::NotJson => "document-not-json",
            IssueCode::NotBundle => "document-not-bundle",
            IssueCode::NotDocument => "document-not-document",
            IssueCode::Bundle => "document-bundle",
            IssueCode::Composition => "document-composition",
            IssueCode::MissingSection => "document-missing-section",
            IssueCode::DuplicateSection => "document-duplicate-section",
            IssueCode::UnknownSection => "document-unknown-section",
            IssueCode::MisplacedSection => "document-misplaced-section",
            IssueCode::EmptySection => "document-empty-section",
            IssueCode::SectionEntry => "document-section-entry",
            IssueCode::DanglingReference => "document-dangling-reference",
            IssueCode::Patient => "document-patient",
            IssueCode::MissingFacilityCode => "document-missing-facility-code",
            IssueCode::WrongSender => "document-wrong-sender",
            IssueCode::WrongRecipient => "document-wrong-recipient",
            IssueCode::WrongKind => "document-wrong-kind",
            IssueCode::WrongInReplyTo => "document-wrong-in-reply-to",
            IssueCode::Attachment => "document-attachment",
        }
    }
}

impl fmt::Display for IssueCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// What kind of problem.
    pub code: IssueCode,
    /// The section concerned, by code ("950"), if any.
    pub section: Option<String>,
    /// What is wrong, naming the section by code and Japanese title.
    pub message: String,
}

impl Issue {
    fn new(code: IssueCode, message: impl Into<String>) -> Issue {
        Issue {
            code,
            section: None,
            message: message.into(),
        }
    }

    fn in_section(code: IssueCode, section: &str, message: impl Into<String>) -> Issue {
        Issue {
            code,
            section: Some(section.to_string()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The patient, as the document names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientSummary {
    /// 氏名.
    pub name: String,
    /// カナ.
    pub kana: Option<String>,
    /// 生年月日.
    pub birth_date: Option<String>,
    /// Patient.gender.
    pub sex: Option<String>,
}

/// A facility named by the document (紹介元 or 紹介先).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Party {
    /// 医療機関コード.
    pub facility_id: FacilityCode,
    /// 医療機関名.
    pub name: Option<String>,
    /// 診療科.
    pub department: Option<String>,
    /// 医師.
    pub doctor: Option<String>,
}

/// An attachment the document references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachmentRef {
    /// The package member (`attachments/NAME`).
    pub member: String,
    /// Its title.
    pub title: Option<String>,
    /// Its media type.
    pub content_type: Option<String>,
}

/// What a valid document says, for the store, the referral threads and the
/// CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The kind (from renkei's tag; else referral for 57133-1 and
    /// discharge-summary for 18842-5).
    pub kind: DocKind,
    /// Whether the kind was tagged by the writer (renkei) rather than
    /// inferred from the document type.
    pub kind_tagged: bool,
    /// Composition.title.
    pub title: String,
    /// Composition.type code (57133-1 or 18842-5).
    pub type_code: String,
    /// Bundle.identifier.value.
    pub bundle_identifier: String,
    /// Composition.identifier.value (文書番号).
    pub composition_identifier: Option<String>,
    /// Composition.date.
    pub date: Option<String>,
    /// 患者.
    pub patient: PatientSummary,
    /// 紹介目的 (section 950); `None` for a discharge summary.
    pub purpose: Option<String>,
    /// 傷病名 (section 340), or 退院時診断 (344) for a discharge summary.
    pub diagnoses: Vec<String>,
    /// 紹介元 (section 920), or the custodian of a discharge summary.
    pub from: Party,
    /// 紹介先 (section 910), if named.
    pub to: Option<Party>,
    /// The package this document answers (Composition.relatesTo), if any.
    pub answers: Option<String>,
    /// 入院日 and 退院日 of a discharge summary.
    pub admission: Option<(Option<String>, Option<String>)>,
    /// Attachments referenced as package members.
    pub attachments: Vec<AttachmentRef>,
    /// Things worth knowing that do not make the document invalid.
    pub warnings: Vec<String>,
}

impl Summary {
    /// The facility on the other side, seen from `me`: the 紹介先 when
    /// `me` wrote the document, else the 紹介元.
    pub fn counterpart(&self, me: &FacilityCode) -> Option<&FacilityCode> {
        if &self.from.facility_id == me {
            self.to.as_ref().map(|p| &p.facility_id)
        } else {
            Some(&self.from.facility_id)
        }
    }
}

/// Most issues reported for one document.
const MAX_ISSUES: usize = 100;

/// Parse `document.json`: size, UTF-8 (a leading BOM is ignored) and JSON.
pub fn parse(bytes: &[u8]) -> Result<Value, Issue> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Issue::new(
            IssueCode::TooLarge,
            format!(
                "the document is {} bytes, more than the {} a document may have; send large content as attachments",
                bytes.len(),
                MAX_DOCUMENT_BYTES
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Issue::new(
            IssueCode::NotUtf8,
            format!(
                "the document is not UTF-8 text (invalid byte at offset {}); FHIR JSON must be UTF-8",
                e.valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(text).map_err(|e| {
        Issue::new(
            IssueCode::NotJson,
            format!("the document is not well-formed JSON: {e}"),
        )
    })
}

/// Validate `document.json` against `expect`.
pub fn validate(bytes: &[u8], expect: &Expect) -> Result<Summary, Vec<Issue>> {
    let v = parse(bytes).map_err(|i| vec![i])?;
    validate_value(&v, expect)
}

/// Validate a parsed document against `expect`.
pub fn validate_value(bundle: &Value, expect: &Expect) -> Result<Summary, Vec<Issue>> {
    let mut c = Checker::default();
    let summary = c.run(bundle, expect);
    if c.issues.is_empty() {
        if let Some(mut s) = summary {
            s.warnings = c.warnings;
            return Ok(s);
        }
    }
    let mut issues = c.issues;
    if issues.is_empty() {
        issues.push(Issue::new(IssueCode::Bundle, "the document is not valid"));
    }
    if issues.len() > MAX_ISSUES {
        let more = issues.len() - MAX_ISSUES;
        issues.truncate(MAX_ISSUES);
        issues.push(Issue::new(
            IssueCode::Bundle,
            format!("... and {more} more problems"),
        ));
    }
    Err(issues)
}

#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
    warnings: Vec<String>,
}

fn doc_name(referral_type: bool) -> &'static str {
    if referral_type {
        "診療情報提供書"
    } else {
        "退院時サマリー"
    }
}

impl Checker {
    fn issue(&mut self, code: IssueCode, message: impl Into<String>) {
        self.issues.push(Issue::new(code, message));
    }

    fn section_issue(&mut self, code: IssueCode, section: &str, message: impl Into<String>) {
        self.issues.push(Issue::in_section(code, section, message));
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    fn run(&mut self, b: &Value, expect: &Expect) -> Option<Summary> {
        // Bundle
        match (b.is_object(), str_at(b, "resourceType")) {
            (false, _) => {
                self.issue(
                    IssueCode::NotBundle,
                    "the document is JSON but not a FHIR resource (expected an object with resourceType \"Bundle\")",
                );
                return None;
            }
            (true, Some("Bundle")) => {}
            (true, other) => {
                self.issue(
                    IssueCode::NotBundle,
                    format!(
                        "the document is not a FHIR Bundle (resourceType is {}); send a Document Bundle",
                        other.map_or("missing".to_string(), |t| format!("{t:?}"))
                    ),
                );
                return None;
            }
        }
        match str_at(b, "type") {
            Some("document") => {}
            other => {
                self.issue(
                    IssueCode::NotDocument,
                    format!(
                        "Bundle.type is {}; a clinical document is a Bundle of type \"document\"",
                        other.map_or("missing".to_string(), |t| format!("{t:?}"))
                    ),
                );
                return None;
            }
        }
        let bundle_identifier = match b.get("identifier") {
            Some(id)
                if str_at(id, "system").is_some_and(|s| !s.is_empty())
                    && str_at(id, "value").is_some_and(|s| !s.is_empty()) =>
            {
                if str_at(id, "system") != Some(codes::BUNDLE_IDENTIFIER_SYSTEM) {
                    self.warn(format!(
                        "Bundle.identifier.system is not {}",
                        codes::BUNDLE_IDENTIFIER_SYSTEM
                    ));
                }
                str_at(id, "value").unwrap_or_default().to_string()
            }
            _ => {
                self.issue(
                    IssueCode::Bundle,
                    "Bundle.identifier needs a system and a value (FHIR bdl-9)",
                );
                String::new()
            }
        };
        if str_at(b, "timestamp").is_none() {
            self.issue(
                IssueCode::Bundle,
                "Bundle.timestamp is missing (FHIR bdl-10)",
            );
        }
        let Some(entries) = b
            .get("entry")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        else {
            self.issue(IssueCode::Bundle, "the Bundle has no entries");
            return None;
        };
        let mut urls = HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let Some(r) = e.get("resource").filter(|r| r.is_object()) else {
                self.issue(
                    IssueCode::Bundle,
                    format!("Bundle.entry[{i}] has no resource"),
                );
                continue;
            };
            let rtype = str_at(r, "resourceType");
            if rtype.is_none() {
                self.issue(
                    IssueCode::Bundle,
                    format!("Bundle.entry[{i}].resource has no resourceType"),
                );
            }
            match str_at(e, "fullUrl") {
                Some(u) if !u.is_empty() => {
                    if !urls.insert(u) {
                        self.issue(
                            IssueCode::Bundle,
                            format!("Bundle.entry[{i}].fullUrl {u:?} is used by another entry too (FHIR bdl-7)"),
                        );
                    }
                }
                _ => self.issue(
                    IssueCode::Bundle,
                    format!(
                        "Bundle.entry[{i}] ({}) has no fullUrl",
                        rtype.unwrap_or("resource")
                    ),
                ),
            }
        }
        let ix = Index::new(b);
        let comp = match entries[0].get("resource") {
            Some(r) if str_at(r, "resourceType") == Some("Composition") => r,
            _ => {
                self.issue(
                    IssueCode::Bundle,
                    "the first entry of a document Bundle must be its Composition (FHIR bdl-11)",
                );
                return None;
            }
        };

        // Composition
        let type_codings = comp.get("type").map_or(&[][..], |t| arr(t, "coding"));
        let type_coding = type_codings.iter().find(|c| {
            matches!(
                str_at(c, "code"),
                Some(codes::TYPE_REFERRAL | codes::TYPE_DISCHARGE_SUMMARY)
            )
        });
        let Some(type_coding) = type_coding else {
            let found = type_codings
                .iter()
                .filter_map(|c| str_at(c, "code"))
                .collect::<Vec<_>>()
                .join(", ");
            self.issue(
                IssueCode::Composition,
                format!(
                    "Composition.type is {}; renkei exchanges 診療情報提供書 (57133-1) and 退院時サマリー (18842-5)",
                    if found.is_empty() { "missing".to_string() } else { found }
                ),
            );
            return None;
        };
        let type_code = str_at(type_coding, "code").unwrap_or_default().to_string();
        let referral_type = type_code == codes::TYPE_REFERRAL;
        if !matches!(
            str_at(type_coding, "system"),
            Some(codes::DOC_TYPE_SYSTEM | codes::LOINC_SYSTEM)
        ) {
            self.warn(format!(
                "Composition.type {type_code} is not coded in {}",
                codes::DOC_TYPE_SYSTEM
            ));
        }
        match str_at(comp, "status") {
            Some("final") => {}
            other => self.issue(
                IssueCode::Composition,
                format!(
                    "Composition.status is {}; only a final document may be exchanged",
                    other.map_or("missing".to_string(), |s| format!("{s:?}"))
                ),
            ),
        }
        let title = match str_at(comp, "title") {
            Some(t) => {
                if t != doc_name(referral_type) {
                    self.warn(format!(
                        "Composition.title is {t:?}, the guide fixes {:?}",
                        doc_name(referral_type)
                    ));
                }
                t.to_string()
            }
            None => {
                self.issue(IssueCode::Composition, "Composition.title is missing");
                String::new()
            }
        };
        let date = str_at(comp, "date").map(str::to_string);
        if date.is_none() {
            self.issue(IssueCode::Composition, "Composition.date is missing");
        }
        let composition_identifier = comp
            .get("identifier")
            .and_then(|i| str_at(i, "value"))
            .map(str::to_string);
        if composition_identifier.is_none() {
            self.issue(
                IssueCode::Composition,
                "Composition.identifier (文書番号) is missing",
            );
        }
        if arr(comp, "author").is_empty() {
            self.issue(IssueCode::Composition, "Composition.author is missing");
        }
        if arr(comp, "category").is_empty() {
            self.warn("Composition.category (外来文書 / 退院時文書) is missing");
        }

        // kind
        let tag = comp
            .get("meta")
            .map(|m| arr(m, "tag"))
            .unwrap_or_default()
            .iter()
            .find(|t| str_at(t, "system") == Some(codes::KIND_TAG_SYSTEM));
        let (kind, kind_tagged) = match tag.map(|t| str_at(t, "code").and_then(DocKind::from_tag)) {
            Some(Some(k)) => {
                if k.is_referral_type() != referral_type {
                    self.issue(
                        IssueCode::WrongKind,
                        format!(
                            "the document is tagged as a {} ({k}) but its type is {type_code} {}",
                            k.japanese(),
                            doc_name(referral_type)
                        ),
                    );
                }
                (k, true)
            }
            Some(None) => {
                self.issue(
                    IssueCode::WrongKind,
                    format!(
                        "Composition.meta.tag ({}) names no known kind; use referral, reply, reverse-referral, transfer or discharge-summary",
                        codes::KIND_TAG_SYSTEM
                    ),
                );
                (DocKind::Referral, true)
            }
            None if referral_type => (DocKind::Referral, false),
            None => (DocKind::DischargeSummary, false),
        };
        if let Some(want) = expect.kind {
            let ok = if kind_tagged {
                want == kind
            } else {
                want.is_referral_type() == referral_type
            };
            if !ok {
                self.issue(
                    IssueCode::WrongKind,
                    format!(
                        "the package is a {} ({want}) but the document is a {} ({kind})",
                        want.japanese(),
                        kind.japanese()
                    ),
                );
            }
        }
        let answers = arr(comp, "relatesTo")
            .iter()
            .filter_map(|r| r.get("targetIdentifier"))
            .filter(|t| str_at(t, "system") == Some(codes::URI_SYSTEM))
            .filter_map(|t| str_at(t, "value"))
            .find_map(|v| v.strip_prefix("urn:uuid:"))
            .map(str::to_ascii_lowercase);
        if let (Some(a), Some(want)) = (&answers, &expect.in_reply_to) {
            if !a.eq_ignore_ascii_case(want) {
                self.issue(
                    IssueCode::WrongInReplyTo,
                    format!("the document answers package {a} but the package answers {want}"),
                );
            }
        }

        // references everywhere
        for (i, e) in entries.iter().enumerate() {
            if let Some(r) = e.get("resource").filter(|r| r.is_object()) {
                let rtype = str_at(r, "resourceType").unwrap_or("resource");
                let mut path = rtype.to_string();
                self.walk_refs(r, r, &ix, &mut path, None, i);
            }
        }

        // Patient
        let patient = comp
            .get("subject")
            .and_then(|s| ix.resolve_ref(s))
            .filter(|p| str_at(p, "resourceType") == Some("Patient"));
        let patient_summary = match patient {
            Some(p) => {
                let (name, kana) = read::person_names(p);
                if name.is_none() {
                    self.issue(IssueCode::Patient, "the Patient (患者) has no name");
                }
                PatientSummary {
                    name: name.unwrap_or_default(),
                    kana,
                    birth_date: str_at(p, "birthDate").map(str::to_string),
                    sex: str_at(p, "gender").map(str::to_string),
                }
            }
            None => {
                self.issue(
                    IssueCode::Patient,
                    "Composition.subject must reference the Patient (患者) in the Bundle",
                );
                PatientSummary {
                    name: String::new(),
                    kana: None,
                    birth_date: None,
                    sex: None,
                }
            }
        };

        // sections
        let secs = read::sections(comp);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut section_of: HashMap<&str, &str> = HashMap::new();
        for s in &secs {
            let Some(code) = s.code else {
                match s.other_code {
                    Some((system, code)) => self.issue(
                        IssueCode::UnknownSection,
                        format!(
                            "section {} is coded {system}#{code}, not with a JP-CLINS section code ({})",
                            s.title.unwrap_or("without title"),
                            codes::SECTION_SYSTEM
                        ),
                    ),
                    None => self.issue(
                        IssueCode::UnknownSection,
                        format!("a section {} has no section code", s.label()),
                    ),
                }
                continue;
            };
            *counts.entry(code).or_default() += 1;
            let Some(def) = codes::section(code) else {
                self.section_issue(
                    IssueCode::UnknownSection,
                    code,
                    format!(
                        "section code {code} ({}) is not a section of a {}",
                        s.title.unwrap_or("without title"),
                        doc_name(referral_type)
                    ),
                );
                continue;
            };
            let label = def.label();
            if !def.used_in(referral_type) {
                self.section_issue(
                    IssueCode::UnknownSection,
                    code,
                    format!(
                        "section {label} belongs to a {}, not a {}",
                        doc_name(!referral_type),
                        doc_name(referral_type)
                    ),
                );
            }
            match def.level {
                Level::Top if s.depth != 0 => self.section_issue(
                    IssueCode::MisplacedSection,
                    code,
                    format!("section {label} must be at the top level, not inside another section"),
                ),
                Level::Structured if !(s.depth == 1 && s.parent == Some("300")) => self
                    .section_issue(
                        IssueCode::MisplacedSection,
                        code,
                        format!("section {label} must be inside 300 構造情報"),
                    ),
                _ => {}
            }
            let entries = s.entries();
            let has_text = s.text().is_some();
            let has_sub = !arr(s.value, "section").is_empty();
            if entries.is_empty() && !has_text && !has_sub {
                self.section_issue(
                    IssueCode::EmptySection,
                    code,
                    format!("section {label} has neither text nor entries (FHIR cmp-1)"),
                );
            }
            if !entries.is_empty() && s.value.get("emptyReason").is_some() {
                self.section_issue(
                    IssueCode::EmptySection,
                    code,
                    format!("section {label} has entries and an emptyReason (FHIR cmp-2)"),
                );
            }
            let min = codes::min_entries(code, referral_type);
            if entries.len() < min {
                self.section_issue(
                    IssueCode::SectionEntry,
                    code,
                    format!(
                        "section {label} needs at least {min} {}",
                        if min == 1 { "entry" } else { "entries" }
                    ),
                );
            }
            if let Some(max) = codes::max_entries(code) {
                if entries.len() > max {
                    self.section_issue(
                        IssueCode::SectionEntry,
                        code,
                        format!(
                            "section {label} may have at most {max} entries, it has {}",
                            entries.len()
                        ),
                    );
                }
            }
            let mut orgs = 0;
            for (n, e) in entries.iter().enumerate() {
                let Some(reference) = str_at(e, "reference") else {
                    self.section_issue(
                        IssueCode::SectionEntry,
                        code,
                        format!("section {label}: entry {} has no reference", n + 1),
                    );
                    continue;
                };
                // Unresolvable references were reported by walk_refs.
                let Some(r) = ix.resolve(reference) else {
                    continue;
                };
                section_of.entry(reference).or_insert(code);
                let rtype = str_at(r, "resourceType").unwrap_or_default();
                if rtype == "Organization" {
                    orgs += 1;
                }
                if !def.entry_types.is_empty() && !def.entry_types.contains(&rtype) {
                    self.section_issue(
                        IssueCode::SectionEntry,
                        code,
                        format!(
                            "section {label}: entry {} is a {rtype}, expected {}",
                            n + 1,
                            def.entry_types.join(" or ")
                        ),
                    );
                }
            }
            if matches!(code, "910" | "920") && orgs != 1 {
                self.section_issue(
                    IssueCode::SectionEntry,
                    code,
                    format!("section {label} must reference exactly one Organization (医療機関), it references {orgs}"),
                );
            }
        }
        for (code, n) in &counts {
            if *n > 1 && !matches!(*code, "210" | "220" | "230") && codes::section(code).is_some() {
                self.section_issue(
                    IssueCode::DuplicateSection,
                    code,
                    format!("section {} appears {n} times", codes::label(code)),
                );
            }
        }
        let present = |c: &str| counts.contains_key(c);
        if present("200") && present("300") {
            self.section_issue(
                IssueCode::UnknownSection,
                "200",
                "sections 200 CDA参照 and 300 構造情報 may not both be present",
            );
        } else if present("200") {
            self.section_issue(
                IssueCode::UnknownSection,
                "200",
                "section 200 CDA参照 is not supported; renkei needs the structured section 300 構造情報",
            );
        }
        let mut required: Vec<&str> = vec!["300"];
        if referral_type {
            required.extend(codes::REQUIRED_REFERRAL_TOP);
        }
        if present("300") {
            required.extend(if referral_type {
                codes::REQUIRED_REFERRAL_STRUCTURED
            } else {
                codes::REQUIRED_DISCHARGE_STRUCTURED
            });
        }
        for code in required {
            if !present(code) {
                self.section_issue(
                    IssueCode::MissingSection,
                    code,
                    format!("section {} is missing", codes::label(code)),
                );
            }
        }

        // 紹介元 / 紹介先
        let find_section = |code: &str| secs.iter().find(|s| s.code == Some(code));
        let section_org = |code: &str| {
            find_section(code).and_then(|s| {
                s.entries()
                    .iter()
                    .filter_map(|e| ix.resolve_ref(e))
                    .find(|r| str_at(r, "resourceType") == Some("Organization"))
            })
        };
        let section_doctor = |code: &str| {
            find_section(code).and_then(|s| {
                s.entries()
                    .iter()
                    .filter_map(|e| ix.resolve_ref(e))
                    .find(|r| str_at(r, "resourceType") == Some("Practitioner"))
                    .and_then(|p| read::person_names(p).0)
            })
        };
        let custodian = comp
            .get("custodian")
            .and_then(|c| ix.resolve_ref(c))
            .filter(|r| str_at(r, "resourceType") == Some("Organization"));
        if custodian.is_none() {
            self.issue(
                IssueCode::Composition,
                "Composition.custodian must reference the Organization responsible for the document",
            );
        }
        let (from_org, from_where) = if referral_type {
            (
                section_org("920"),
                "紹介元 (section 920 紹介元情報)".to_string(),
            )
        } else {
            (
                custodian,
                "the writing facility (Composition.custodian)".to_string(),
            )
        };
        let mut from = None;
        if let Some(org) = from_org {
            match read::facility_code(org).and_then(|c| c.parse::<FacilityCode>().ok()) {
                Some(id) => {
                    if let Some(sender) = &expect.sender {
                        if &id != sender {
                            self.section_issue(
                                IssueCode::WrongSender,
                                if referral_type { "920" } else { "custodian" },
                                format!(
                                    "{from_where} is {id} {}, which is not the sending facility {sender}; a facility may only send documents it wrote",
                                    str_at(org, "name").unwrap_or_default()
                                ),
                            );
                        }
                    }
                    if referral_type {
                        if let Some(cid) = custodian.and_then(read::facility_code) {
                            if cid != id.as_str() {
                                self.warn(format!(
                                    "Composition.custodian ({cid}) is not the 紹介元 ({id})"
                                ));
                            }
                        }
                    }
                    from = Some(Party {
                        facility_id: id,
                        name: str_at(org, "name").map(str::to_string),
                        department: read::department(org),
                        doctor: if referral_type {
                            section_doctor("920")
                        } else {
                            arr(comp, "author")
                                .iter()
                                .filter_map(|a| ix.resolve_ref(a))
                                .find(|r| str_at(r, "resourceType") == Some("Practitioner"))
                                .and_then(|p| read::person_names(p).0)
                        },
                    });
                }
                None => self.issue(
                    IssueCode::MissingFacilityCode,
                    format!(
                        "{from_where} has no 10-digit medical institution code (Organization.identifier with system {})",
                        codes::MEDICAL_INSTITUTION_SYSTEM
                    ),
                ),
            }
        }
        let mut to = None;
        match section_org("910") {
            Some(org) => match read::facility_code(org).and_then(|c| c.parse::<FacilityCode>().ok()) {
                Some(id) => {
                    if !expect.recipients.is_empty() && !expect.recipients.contains(&id) {
                        let list = expect
                            .recipients
                            .iter()
                            .map(FacilityCode::as_str)
                            .collect::<Vec<_>>()
                            .join(", ");
                        self.section_issue(
                            IssueCode::WrongRecipient,
                            "910",
                            format!(
                                "紹介先 (section 910 紹介先情報) is {id} {}, which is not a recipient of the package ({list})",
                                str_at(org, "name").unwrap_or_default()
                            ),
                        );
                    }
                    to = Some(Party {
                        facility_id: id,
                        name: str_at(org, "name").map(str::to_string),
                        department: read::department(org),
                        doctor: section_doctor("910"),
                    });
                }
                None => self.section_issue(
                    IssueCode::MissingFacilityCode,
                    "910",
                    format!(
                        "紹介先 (section 910 紹介先情報) has no 10-digit medical institution code (Organization.identifier with system {})",
                        codes::MEDICAL_INSTITUTION_SYSTEM
                    ),
                ),
            },
            None if !referral_type && !expect.recipients.is_empty() => self.warn(
                "the discharge summary names no 紹介先 (section 910); its recipients were not checked",
            ),
            None => {}
        }

        // attachments
        let attachments = self.attachments(&ix, &section_of, expect);

        // purpose, diagnoses, admission
        let purpose = if referral_type {
            find_section("950").and_then(|s| {
                let reasons: Vec<String> = s
                    .entries()
                    .iter()
                    .filter_map(|e| ix.resolve_ref(e))
                    .flat_map(|enc| arr(enc, "reasonCode").iter().filter_map(concept_text))
                    .collect();
                if reasons.is_empty() {
                    s.text()
                } else {
                    Some(reasons.join("\n"))
                }
            })
        } else {
            None
        };
        let dx_code = if referral_type { "340" } else { "344" };
        let diagnoses = find_section(dx_code)
            .map(|s| {
                s.entries()
                    .iter()
                    .filter_map(|e| ix.resolve_ref(e))
                    .filter_map(|c| c.get("code").and_then(concept_text))
                    .collect()
            })
            .unwrap_or_default();
        let admission = (!referral_type).then(|| {
            let period = arr(comp, "event").first().and_then(|e| e.get("period"));
            (
                period.and_then(|p| str_at(p, "start")).map(str::to_string),
                period.and_then(|p| str_at(p, "end")).map(str::to_string),
            )
        });

        let from = from?;
        Some(Summary {
            kind,
            kind_tagged,
            title,
            type_code,
            bundle_identifier,
            composition_identifier,
            date,
            patient: patient_summary,
            purpose,
            diagnoses,
            from,
            to,
            answers,
            admission,
            attachments,
            warnings: Vec::new(),
        })
    }

    /// Check every Reference under `v` (inside resource `top`, entry
    /// `entry`) resolves: `#id` to a contained resource, anything else to
    /// an entry of the Bundle.
    fn walk_refs(
        &mut self,
        v: &Value,
        top: &Value,
        ix: &Index<'_>,
        path: &mut String,
        section: Option<&str>,
        entry: usize,
    ) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("reference") {
                    match r.as_str() {
                        None => {
                            self.ref_issue(section, format!("{path}.reference is not a string"))
                        }
                        Some(s) => self.check_ref(s, m.get("type"), top, ix, path, section, entry),
                    }
                }
                for (k, x) in m {
                    if k == "reference" {
                        continue;
                    }
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    if k == "section" && str_at(top, "resourceType") == Some("Composition") {
                        if let Value::Array(a) = x {
                            for (i, s) in a.iter().enumerate() {
                                let l2 = path.len();
                                path.push_str(&format!("[{i}]"));
                                let code = s
                                    .get("code")
                                    .map(|c| arr(c, "coding"))
                                    .unwrap_or_default()
                                    .iter()
                                    .find(|c| str_at(c, "system") == Some(codes::SECTION_SYSTEM))
                                    .and_then(|c| str_at(c, "code"));
                                self.walk_refs(s, top, ix, path, code.or(section), entry);
                                path.truncate(l2);
                            }
                            path.truncate(len);
                            continue;
                        }
                    }
                    self.walk_refs(x, top, ix, path, section, entry);
                    path.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.walk_refs(x, top, ix, path, section, entry);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn ref_issue(&mut self, section: Option<&str>, message: String) {
        match section {
            Some(code) => self.section_issue(
                IssueCode::DanglingReference,
                code,
                format!("section {}: {message}", codes::label(code)),
            ),
            None => self.issue(IssueCode::DanglingReference, message),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_ref(
        &mut self,
        reference: &str,
        declared: Option<&Value>,
        top: &Value,
        ix: &Index<'_>,
        path: &str,
        section: Option<&str>,
        entry: usize,
    ) {
        let resolved = if let Some(id) = reference.strip_prefix('#') {
            if id.is_empty() {
                Some(top)
            } else {
                arr(top, "contained")
                    .iter()
                    .find(|c| str_at(c, "id") == Some(id))
            }
        } else {
            ix.resolve(reference)
        };
        let Some(r) = resolved else {
            self.ref_issue(
                section,
                format!(
                    "reference {reference:?} at {path} (Bundle.entry[{entry}]) does not resolve inside the Bundle"
                ),
            );
            return;
        };
        if let Some(t) = declared.and_then(Value::as_str) {
            let actual = str_at(r, "resourceType").unwrap_or_default();
            if t != actual {
                self.ref_issue(
                    section,
                    format!(
                        "reference {reference:?} at {path} is declared as a {t} but is a {actual}"
                    ),
                );
            }
        }
    }

    fn attachments(
        &mut self,
        ix: &Index<'_>,
        section_of: &HashMap<&str, &str>,
        expect: &Expect,
    ) -> Vec<AttachmentRef> {
        let members: Option<HashSet<&str>> = expect.attachment_members.as_ref().map(|ms| {
            ms.iter()
                .map(String::as_str)
                .filter(|m| m.starts_with(&format!("{ATTACHMENTS_DIR}/")))
                .collect()
        });
        let mut refs = Vec::new();
        let mut referenced = HashSet::new();
        for (url, r) in &ix.entries {
            if str_at(r, "resourceType") != Some("DocumentReference") {
                continue;
            }
            let code = url.and_then(|u| section_of.get(u).copied());
            let where_ = code.map_or_else(
                || "a DocumentReference".to_string(),
                |c| format!("section {}", codes::label(c)),
            );
            for (aurl, title, ctype) in read::attachment_urls(r) {
                if let Some(rest) = aurl.strip_prefix(&format!("{ATTACHMENTS_DIR}/")) {
                    let member =
                        read::percent_decode(rest).map(|n| format!("{ATTACHMENTS_DIR}/{n}"));
                    let Some(member) = member.filter(|m| crate::package::path::check(m).is_ok())
                    else {
                        self.section_issue(
                            IssueCode::Attachment,
                            code.unwrap_or("210"),
                            format!("{where_}: attachment URL {aurl:?} is not a valid package member name"),
                        );
                        continue;
                    };
                    if let Some(ms) = &members {
                        if !ms.contains(member.as_str()) {
                            self.section_issue(
                                IssueCode::Attachment,
                                code.unwrap_or("210"),
                                format!("{where_}: attachment {member} is referenced but the package has no such member"),
                            );
                        }
                    }
                    referenced.insert(member.clone());
                    refs.push(AttachmentRef {
                        member,
                        title: title.map(str::to_string),
                        content_type: ctype.map(str::to_string),
                    });
                } else if code == Some("210") && members.is_some() {
                    self.section_issue(
                        IssueCode::Attachment,
                        "210",
                        format!("section 210 添付情報: attachment {aurl:?} is not a package member (attachments/NAME)"),
                    );
                } else if !aurl.starts_with("data:") {
                    self.warn(format!(
                        "{where_} points at {aurl}, which is outside the package"
                    ));
                }
            }
        }
        if let Some(ms) = &members {
            let mut unreferenced: Vec<&&str> =
                ms.iter().filter(|m| !referenced.contains(**m)).collect();
            unreferenced.sort();
            for m in unreferenced {
                self.section_issue(
                    IssueCode::Attachment,
                    "210",
                    format!("package member {m} is not listed in section 210 添付情報"),
                );
            }
        }
        refs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes_of(r: Result<Summary, Vec<Issue>>) -> Vec<IssueCode> {
        r.unwrap_err().into_iter().map(|i| i.code).collect()
    }

    #[test]
    fn non_documents_are_refused_early() {
        let e = Expect::default();
        assert_eq!(codes_of(validate(b"\xff\xfe", &e)), [IssueCode::NotUtf8]);
        assert_eq!(codes_of(validate(b"{", &e)), [IssueCode::NotJson]);
        assert_eq!(codes_of(validate(b"[]", &e)), [IssueCode::NotBundle]);
        assert_eq!(
            codes_of(validate(br#"{"resourceType":"Patient"}"#, &e)),
            [IssueCode::NotBundle]
        );
        assert_eq!(
            codes_of(validate(
                br#"{"resourceType":"Bundle","type":"collection"}"#,
                &e
            )),
            [IssueCode::NotDocument]
        );
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(codes_of(validate(&big, &e)), [IssueCode::TooLarge]);
    }

    #[test]
    fn a_bundle_without_composition_first_is_refused() {
        let b = json!({
            "resourceType": "Bundle", "type": "document", "timestamp": "2026-01-01T00:00:00+09:00",
            "identifier": { "system": codes::BUNDLE_IDENTIFIER_SYSTEM, "value": "x" },
            "entry": [{ "fullUrl": "urn:uuid:1", "resource": { "resourceType": "Patient" } }]
        });
        let issues = validate_value(&b, &Expect::default()).unwrap_err();
        assert!(issues[0].message.contains("bdl-11"), "{issues:?}");
    }

    #[test]
    fn issue_codes_have_stable_names() {
        assert_eq!(
            IssueCode::MissingSection.as_str(),
            "document-missing-section"
        );
        assert_eq!(
            serde_json::to_value(IssueCode::WrongSender).unwrap(),
            json!("wrong-sender")
        );
    }
}
