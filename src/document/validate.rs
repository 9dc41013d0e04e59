//! Validation of a document before it is sealed and after it is opened:
//! FHIR R4 JSON well-formedness, the Document Bundle shape, the
//! specification it follows ([`Spec`]: JP-CLINS, or the standard
//! 診療情報提供書 / 退院時サマリー HL7 FHIR 記述仕様) and the sections that
//! specification requires, every reference resolvable inside the Bundle,
//! the PDF letter when the document carries one, and — when the package is
//! known — the 紹介元 / 紹介先 Organizations and the attachments matched
//! against the package.
//!
//! The checker runs in stages ([`Checker::run`]): Bundle, Composition and
//! its type, specification, kind and link, references, Patient, sections,
//! parties, attachments. A Bundle written by another system that follows
//! its guide (such as the guides' own examples) passes as it is; renkei's
//! own additions (the kind tag, `relatesTo`) are optional.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::codes::{self, Level};
use super::read::{self, arr, concept_text, str_at, Index, Section};
use super::spec::{self, Spec};
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
    /// The Bundle profile, the section code systems and the document type
    /// name different specifications.
    Specification,
    /// A required section is missing.
    MissingSection,
    /// A section appears more often than allowed.
    DuplicateSection,
    /// A section code that is not of the document's specification, or not
    /// of this kind of document.
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
    /// The PDF section or the letter is not a PDF (media type, file name).
    Letter,
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
            IssueCode::Specification => "document-specification",
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
            IssueCode::Letter => "document-letter",
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
    /// The field of the renkei form that writes what is wrong
    /// (`purpose`, `to.facility_id`, `letter`, ...; see
    /// [`codes::form_field`]), when it can be known: a front-end shows the
    /// message beside that field.
    pub field: Option<String>,
    /// What is wrong, naming the section by code and Japanese title.
    pub message: String,
}

impl Issue {
    fn new(code: IssueCode, message: impl Into<String>) -> Issue {
        Issue {
            code,
            section: None,
            field: None,
            message: message.into(),
        }
    }

    fn with_field(mut self, field: &str) -> Issue {
        self.field = Some(field.to_string());
        self
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
    /// The specification the document follows (and was checked against).
    pub spec: Spec,
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
    /// Attachments referenced as package members (the letter included).
    pub attachments: Vec<AttachmentRef>,
    /// The letter itself as a PDF package member, when the document
    /// carries one: a PDF of section 230 PDF, or in section 210 添付情報
    /// a PDF whose DocumentReference is typed as this document
    /// (docs/DOCUMENTS.md, "PDF letters").
    pub letter: Option<AttachmentRef>,
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

/// The checker: issues and warnings found so far, and the specification
/// the document is read against once it is known.
struct Checker {
    issues: Vec<Issue>,
    warnings: Vec<String>,
    spec: Spec,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            issues: Vec::new(),
            warnings: Vec::new(),
            spec: Spec::JpClinsReferral,
        }
    }
}

fn doc_name(referral_type: bool) -> &'static str {
    if referral_type {
        "診療情報提供書"
    } else {
        "退院時サマリー"
    }
}

fn quoted_or_missing(v: Option<&str>) -> String {
    v.map_or("missing".to_string(), |t| format!("{t:?}"))
}

/// What the Bundle stage found.
struct BundleHead<'a> {
    entries: &'a [Value],
    identifier_system: Option<&'a str>,
    identifier: String,
}

/// What the Composition stage found.
struct CompositionHead {
    title: String,
    date: Option<String>,
    identifier: Option<String>,
}

impl Checker {
    fn issue(&mut self, code: IssueCode, message: impl Into<String>) {
        self.issues.push(Issue::new(code, message));
    }

    /// An issue about section `section`, pointing at the form field that
    /// writes it.
    fn section_issue(&mut self, code: IssueCode, section: &str, message: impl Into<String>) {
        let field = codes::form_field(section, self.spec.is_referral_type()).map(str::to_string);
        self.issues.push(Issue {
            code,
            section: Some(section.to_string()),
            field,
            message: message.into(),
        });
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// The stages, in order; `None` when the document is too broken to go
    /// on (the issues say why).
    fn run(&mut self, b: &Value, expect: &Expect) -> Option<Summary> {
        let head = self.bundle(b)?;
        let ix = Index::new(b);
        let comp = self.first_composition(head.entries)?;
        let (type_code, referral_type) = self.document_type(comp)?;
        self.specification(b, comp, referral_type, head.identifier_system);
        let c = self.composition(comp, referral_type);
        let (kind, kind_tagged) = self.kind(comp, &type_code, referral_type, expect);
        let answers = self.answers(comp, expect);
        for (i, e) in head.entries.iter().enumerate() {
            if let Some(r) = e.get("resource").filter(|r| r.is_object()) {
                let rtype = str_at(r, "resourceType").unwrap_or("resource");
                let mut path = rtype.to_string();
                self.walk_refs(r, r, &ix, &mut path, None, i);
            }
        }
        let patient = self.patient(comp, &ix);
        let secs = read::sections(comp);
        let section_of = self.sections(&secs, &ix);
        let (from, to) = self.parties(comp, &secs, &ix, expect);
        let (attachments, letter) = self.attachments(&ix, &section_of, expect, &type_code);

        let find_section = |code: &str| secs.iter().find(|s| s.code == Some(code));
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

        Some(Summary {
            kind,
            kind_tagged,
            spec: self.spec,
            title: c.title,
            type_code,
            bundle_identifier: head.identifier,
            composition_identifier: c.identifier,
            date: c.date,
            patient,
            purpose,
            diagnoses,
            from: from?,
            to,
            answers,
            admission,
            attachments,
            letter,
            warnings: Vec::new(),
        })
    }

    /// A Bundle of type document, with an identifier, a timestamp and
    /// entries that each have a resource and a unique fullUrl.
    fn bundle<'a>(&mut self, b: &'a Value) -> Option<BundleHead<'a>> {
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
                        quoted_or_missing(other)
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
                        quoted_or_missing(other)
                    ),
                );
                return None;
            }
        }
        let (identifier_system, identifier) = match b.get("identifier") {
            Some(id)
                if str_at(id, "system").is_some_and(|s| !s.is_empty())
                    && str_at(id, "value").is_some_and(|s| !s.is_empty()) =>
            {
                (
                    str_at(id, "system"),
                    str_at(id, "value").unwrap_or_default().to_string(),
                )
            }
            _ => {
                self.issue(
                    IssueCode::Bundle,
                    "Bundle.identifier needs a system and a value (FHIR bdl-9)",
                );
                (None, String::new())
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
        Some(BundleHead {
            entries,
            identifier_system,
            identifier,
        })
    }

    fn first_composition<'a>(&mut self, entries: &'a [Value]) -> Option<&'a Value> {
        match entries[0].get("resource") {
            Some(r) if str_at(r, "resourceType") == Some("Composition") => Some(r),
            _ => {
                self.issue(
                    IssueCode::Bundle,
                    "the first entry of a document Bundle must be its Composition (FHIR bdl-11)",
                );
                None
            }
        }
    }

    /// Composition.type: 57133-1 or 18842-5.
    fn document_type(&mut self, comp: &Value) -> Option<(String, bool)> {
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
        if !matches!(
            str_at(type_coding, "system"),
            Some(codes::DOC_TYPE_SYSTEM | codes::LOINC_SYSTEM)
        ) {
            self.warn(format!(
                "Composition.type {type_code} is not coded in {}",
                codes::DOC_TYPE_SYSTEM
            ));
        }
        let referral_type = type_code == codes::TYPE_REFERRAL;
        Some((type_code, referral_type))
    }

    /// Which specification the document follows ([`spec::detect`]), and
    /// whether its Bundle profile and document type agree.
    fn specification(
        &mut self,
        b: &Value,
        comp: &Value,
        referral_type: bool,
        identifier_system: Option<&str>,
    ) {
        let d = spec::detect(b, comp);
        self.spec = Spec::new(d.spec.family(), referral_type);
        match d.by_profile {
            Some(p) if p.is_referral_type() != referral_type => self.issue(
                IssueCode::Specification,
                format!(
                    "Bundle.meta.profile is {} ({}), but Composition.type says the document is a {}; use the profile of a {} ({})",
                    p.bundle_profile(),
                    p.name(),
                    doc_name(referral_type),
                    doc_name(referral_type),
                    self.spec.bundle_profile()
                ),
            ),
            Some(_) => {}
            None => {
                if b.get("meta").is_some_and(|m| !arr(m, "profile").is_empty()) {
                    self.warn(format!(
                        "Bundle.meta.profile names no profile renkei knows; the document was read as {} from its section codes",
                        self.spec.name()
                    ));
                } else {
                    self.warn(format!(
                        "Bundle.meta.profile is missing; the document was read as {} ({})",
                        self.spec.name(),
                        self.spec.bundle_profile()
                    ));
                }
            }
        }
        if let Some(system) = identifier_system {
            if system != self.spec.bundle_identifier_system() {
                self.warn(format!(
                    "Bundle.identifier.system is {system}, {} fixes {}",
                    self.spec.name(),
                    self.spec.bundle_identifier_system()
                ));
            }
        }
    }

    /// status, title, date, identifier, author, category.
    fn composition(&mut self, comp: &Value, referral_type: bool) -> CompositionHead {
        match str_at(comp, "status") {
            Some("final") => {}
            other => self.issue(
                IssueCode::Composition,
                format!(
                    "Composition.status is {}; only a final document may be exchanged",
                    quoted_or_missing(other)
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
        let identifier = comp
            .get("identifier")
            .and_then(|i| str_at(i, "value"))
            .map(str::to_string);
        if identifier.is_none() {
            self.issues.push(
                Issue::new(
                    IssueCode::Composition,
                    "Composition.identifier (文書番号) is missing",
                )
                .with_field("document_number"),
            );
        }
        if arr(comp, "author").is_empty() {
            self.issue(IssueCode::Composition, "Composition.author is missing");
        }
        if arr(comp, "category").is_empty() {
            self.warn("Composition.category (文書区分) is missing");
        }
        CompositionHead {
            title,
            date,
            identifier,
        }
    }

    /// renkei's kind tag, matched against the type and the package kind.
    fn kind(
        &mut self,
        comp: &Value,
        type_code: &str,
        referral_type: bool,
        expect: &Expect,
    ) -> (DocKind, bool) {
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
        (kind, kind_tagged)
    }

    /// The package the document answers (Composition.relatesTo).
    fn answers(&mut self, comp: &Value, expect: &Expect) -> Option<String> {
        let answers = arr(comp, "relatesTo")
            .iter()
            .filter_map(|r| r.get("targetIdentifier"))
            .filter(|t| str_at(t, "system") == Some(codes::URI_SYSTEM))
            .filter_map(|t| str_at(t, "value"))
            .find_map(|v| v.strip_prefix("urn:uuid:"))
            .map(str::to_string);
        // Only the canonical form (lowercase, hyphenated): one package never
        // goes by two IDs.
        if let Some(a) = answers
            .as_deref()
            .filter(|a| !crate::package::is_canonical_id(a))
        {
            self.issues.push(
                Issue::new(
                    IssueCode::WrongInReplyTo,
                    format!(
                        "the document answers {:?}, which is not a package ID (a lowercase UUID such as 436e6f94-befd-4747-a67f-621e0a45bacb)",
                        a.chars().take(80).collect::<String>()
                    ),
                )
                .with_field("in_reply_to"),
            );
            return None;
        }
        if let (Some(a), Some(want)) = (&answers, &expect.in_reply_to) {
            // `want` may be typed by a user: compare canonical forms.
            if Some(a) != crate::package::canonical_id(want).as_ref() {
                self.issues.push(
                    Issue::new(
                        IssueCode::WrongInReplyTo,
                        format!("the document answers package {a} but the package answers {want}"),
                    )
                    .with_field("in_reply_to"),
                );
            }
        }
        answers
    }

    fn patient(&mut self, comp: &Value, ix: &Index<'_>) -> PatientSummary {
        let patient = comp
            .get("subject")
            .and_then(|s| ix.resolve_ref(s))
            .filter(|p| str_at(p, "resourceType") == Some("Patient"));
        match patient {
            Some(p) => {
                let (name, kana) = read::person_names(p);
                if name.is_none() {
                    self.issues.push(
                        Issue::new(IssueCode::Patient, "the Patient (患者) has no name")
                            .with_field("patient.name"),
                    );
                }
                PatientSummary {
                    name: name.unwrap_or_default(),
                    kana,
                    birth_date: str_at(p, "birthDate").map(str::to_string),
                    sex: str_at(p, "gender").map(str::to_string),
                }
            }
            None => {
                self.issues.push(
                    Issue::new(
                        IssueCode::Patient,
                        "Composition.subject must reference the Patient (患者) in the Bundle",
                    )
                    .with_field("patient"),
                );
                PatientSummary {
                    name: String::new(),
                    kana: None,
                    birth_date: None,
                    sex: None,
                }
            }
        }
    }

    /// Every section against the specification's rules; returns the
    /// section each entry reference belongs to.
    fn sections<'a>(&mut self, secs: &[Section<'a>], ix: &Index<'_>) -> HashMap<&'a str, &'a str> {
        let spec = self.spec;
        let referral_type = spec.is_referral_type();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut section_of: HashMap<&str, &str> = HashMap::new();

        // Sections coded in another specification's code system.
        let coded: Vec<&Section<'_>> = secs.iter().filter(|s| s.code.is_some()).collect();
        let foreign: Vec<&Section<'_>> = coded
            .iter()
            .copied()
            .filter(|s| s.system != Some(spec.section_system()))
            .collect();
        if !foreign.is_empty() && foreign.len() == coded.len() {
            let system = foreign[0].system.unwrap_or_default();
            self.issue(
                IssueCode::Specification,
                format!(
                    "the document follows {} (Bundle.meta.profile), but its sections are coded in {system}; code them in {} or declare the profile of the specification they follow",
                    spec.name(),
                    spec.section_system()
                ),
            );
        } else {
            for s in &foreign {
                let code = s.code.unwrap_or_default();
                self.section_issue(
                    IssueCode::UnknownSection,
                    code,
                    format!(
                        "section {} is coded in {}, not in the section code system of {} ({})",
                        codes::label(code),
                        s.system.unwrap_or_default(),
                        spec.name(),
                        spec.section_system()
                    ),
                );
            }
        }

        for s in secs {
            let Some(code) = s.code else {
                match s.other_code {
                    Some((system, code)) => self.issue(
                        IssueCode::UnknownSection,
                        format!(
                            "section {} is coded {system}#{code}, not with a section code of {} ({})",
                            s.title.unwrap_or("without title"),
                            spec.name(),
                            spec.section_system()
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
            if !spec.allows(code) {
                let other = Spec::new(spec.family(), !referral_type);
                let message = if other.allows(code) {
                    format!(
                        "section {label} belongs to a {}, not a {}",
                        doc_name(!referral_type),
                        doc_name(referral_type)
                    )
                } else {
                    format!("section {label} is not a section of {}", spec.name())
                };
                self.section_issue(IssueCode::UnknownSection, code, message);
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
            self.section_content(spec, s, code, &label, ix, &mut section_of);
        }
        for (code, n) in &counts {
            if *n > 1 && !spec.repeatable(code) && codes::section(code).is_some() {
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
        let mut required: Vec<&[&str]> = spec.required_top().to_vec();
        if present("300") {
            required.extend(spec.required_structured());
        }
        for alternatives in required {
            if !alternatives.iter().any(|c| present(c)) {
                let code = alternatives[0];
                self.section_issue(
                    IssueCode::MissingSection,
                    code,
                    format!("section {} is missing", codes::label(code)),
                );
            }
        }
        section_of
    }

    /// One section's narrative and entries: cmp-1, cmp-2, entry counts and
    /// types, the PDF section's media types.
    fn section_content<'a>(
        &mut self,
        spec: Spec,
        s: &Section<'a>,
        code: &'a str,
        label: &str,
        ix: &Index<'_>,
        section_of: &mut HashMap<&'a str, &'a str>,
    ) {
        let entries: &'a [Value] = s.entries();
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
        if spec.forbids_text(code) && s.value.get("text").is_some() {
            self.section_issue(
                IssueCode::SectionEntry,
                code,
                format!(
                    "section {label} may not carry a narrative (text) in {}; the PDF is the content",
                    spec.name()
                ),
            );
        }
        let min = spec.min_entries(code);
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
        if let Some(max) = spec.max_entries(code) {
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
        let allowed = spec.entry_types(code);
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
            if !allowed.is_empty() && !allowed.contains(&rtype) {
                self.section_issue(
                    IssueCode::SectionEntry,
                    code,
                    format!(
                        "section {label}: entry {} is a {rtype}, expected {}",
                        n + 1,
                        allowed.join(" or ")
                    ),
                );
            }
            if code == "230" {
                self.pdf_entry(label, n, r);
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

    /// An entry of section 230 PDF is a PDF: a Binary of that media type,
    /// or a DocumentReference whose attachments are.
    fn pdf_entry(&mut self, label: &str, n: usize, r: &Value) {
        let types: Vec<Option<&str>> = match str_at(r, "resourceType") {
            Some("Binary") => vec![str_at(r, "contentType")],
            Some("DocumentReference") => arr(r, "content")
                .iter()
                .filter_map(|c| c.get("attachment"))
                .map(|a| str_at(a, "contentType"))
                .collect(),
            _ => return,
        };
        for t in types {
            if !t.is_some_and(is_pdf_media_type) {
                self.section_issue(
                    IssueCode::Letter,
                    "230",
                    format!(
                        "section {label}: entry {} is {}, not a PDF ({})",
                        n + 1,
                        t.map_or("of no media type".to_string(), |t| format!(
                            "of media type {t:?}"
                        )),
                        codes::PDF_MEDIA_TYPE
                    ),
                );
            }
        }
    }

    /// 紹介元 and 紹介先, matched against the package's sender and
    /// recipients.
    fn parties(
        &mut self,
        comp: &Value,
        secs: &[Section<'_>],
        ix: &Index<'_>,
        expect: &Expect,
    ) -> (Option<Party>, Option<Party>) {
        let referral_type = self.spec.is_referral_type();
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
            (section_org("920"), "紹介元 (section 920 紹介元情報)")
        } else {
            (custodian, "the writing facility (Composition.custodian)")
        };
        let mut from = None;
        if let Some(org) = from_org {
            match read::facility_code(org).and_then(|c| c.parse::<FacilityCode>().ok()) {
                Some(id) => {
                    if let Some(sender) = &expect.sender {
                        if &id != sender {
                            let message = format!(
                                "{from_where} is {id} {}, which is not the sending facility {sender}; a facility may only send documents it wrote",
                                str_at(org, "name").unwrap_or_default()
                            );
                            self.issues.push(Issue {
                                code: IssueCode::WrongSender,
                                section: Some(
                                    if referral_type { "920" } else { "custodian" }.to_string(),
                                ),
                                field: Some("from.facility_id".to_string()),
                                message,
                            });
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
                None => self.issues.push(
                    Issue::new(
                        IssueCode::MissingFacilityCode,
                        format!(
                            "{from_where} has no 10-digit medical institution code (Organization.identifier with system {})",
                            codes::MEDICAL_INSTITUTION_SYSTEM
                        ),
                    )
                    .with_field("from.facility_id"),
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
                        self.issues.push(Issue {
                            code: IssueCode::WrongRecipient,
                            section: Some("910".to_string()),
                            field: Some("to.facility_id".to_string()),
                            message: format!(
                                "紹介先 (section 910 紹介先情報) is {id} {}, which is not a recipient of the package ({list})",
                                str_at(org, "name").unwrap_or_default()
                            ),
                        });
                    }
                    to = Some(Party {
                        facility_id: id,
                        name: str_at(org, "name").map(str::to_string),
                        department: read::department(org),
                        doctor: section_doctor("910"),
                    });
                }
                None => self.issues.push(Issue {
                    code: IssueCode::MissingFacilityCode,
                    section: Some("910".to_string()),
                    field: Some("to.facility_id".to_string()),
                    message: format!(
                        "紹介先 (section 910 紹介先情報) has no 10-digit medical institution code (Organization.identifier with system {})",
                        codes::MEDICAL_INSTITUTION_SYSTEM
                    ),
                }),
            },
            None if !referral_type && !expect.recipients.is_empty() => self.warn(
                "the discharge summary names no 紹介先 (section 910); its recipients were not checked",
            ),
            None => {}
        }
        (from, to)
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
                                let code = read::section_code(s).map(|(_, c)| c);
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

    /// The attachment references against the package members, and the
    /// letter: a PDF of section 230, or a PDF of section 210 whose
    /// DocumentReference is typed as the document itself (`type_code`).
    fn attachments(
        &mut self,
        ix: &Index<'_>,
        section_of: &HashMap<&str, &str>,
        expect: &Expect,
        type_code: &str,
    ) -> (Vec<AttachmentRef>, Option<AttachmentRef>) {
        let members: Option<HashSet<&str>> = expect.attachment_members.as_ref().map(|ms| {
            ms.iter()
                .map(String::as_str)
                .filter(|m| m.starts_with(&format!("{ATTACHMENTS_DIR}/")))
                .collect()
        });
        let mut refs = Vec::new();
        let mut letter = None;
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
            let is_letter = match code {
                Some("230") => true,
                Some("210") => is_typed_as(r, type_code),
                _ => false,
            };
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
                    let name = &member[ATTACHMENTS_DIR.len() + 1..];
                    let this_is_letter = is_letter && ctype.is_some_and(is_pdf_media_type);
                    if this_is_letter && !name.to_ascii_lowercase().ends_with(".pdf") {
                        self.issues.push(Issue {
                            code: IssueCode::Letter,
                            section: Some(code.unwrap_or("230").to_string()),
                            field: Some("letter".to_string()),
                            message: format!(
                                "{where_}: the letter {member} is a PDF but its file name does not end in .pdf; name the file NAME.pdf"
                            ),
                        });
                    }
                    if let Some(ms) = &members {
                        if !ms.contains(member.as_str()) {
                            let message = if this_is_letter {
                                format!("the letter {member} ({where_}) is not in the package; attach the PDF (renkei seal --attach {name})")
                            } else {
                                format!("{where_}: attachment {member} is referenced but the package has no such member; attach the file (renkei seal --attach {name})")
                            };
                            self.issues.push(Issue {
                                code: IssueCode::Attachment,
                                section: Some(code.unwrap_or("210").to_string()),
                                field: Some(
                                    if this_is_letter {
                                        "letter"
                                    } else {
                                        "attachments"
                                    }
                                    .to_string(),
                                ),
                                message,
                            });
                        }
                    }
                    referenced.insert(member.clone());
                    let a = AttachmentRef {
                        member,
                        title: title
                            .map(str::to_string)
                            .or_else(|| str_at(r, "description").map(str::to_string)),
                        content_type: ctype.map(str::to_string),
                    };
                    if this_is_letter && letter.is_none() {
                        letter = Some(a.clone());
                    }
                    refs.push(a);
                } else if matches!(code, Some("210" | "230")) && members.is_some() {
                    let c = code.unwrap_or("210");
                    self.section_issue(
                        IssueCode::Attachment,
                        c,
                        format!("section {}: attachment {aurl:?} is not a package member (attachments/NAME)", codes::label(c)),
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
                    format!("package member {m} is not listed in section 210 添付情報 (nor as the letter)"),
                );
            }
        }
        (refs, letter)
    }
}

/// Whether a media type is PDF (`application/pdf`, parameters ignored).
pub fn is_pdf_media_type(t: &str) -> bool {
    t.split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(codes::PDF_MEDIA_TYPE))
}

/// Whether a DocumentReference is typed as a document of `type_code`
/// (`DocumentReference.type` coded in the document type codes): the letter
/// itself rather than an attachment to it.
fn is_typed_as(docref: &Value, type_code: &str) -> bool {
    docref
        .get("type")
        .map(|t| arr(t, "coding"))
        .unwrap_or_default()
        .iter()
        .any(|c| {
            str_at(c, "system") == Some(codes::DOC_TYPE_SYSTEM)
                && str_at(c, "code") == Some(type_code)
        })
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
    fn pdf_media_types() {
        assert!(is_pdf_media_type("application/pdf"));
        assert!(is_pdf_media_type("Application/PDF; name=x"));
        assert!(!is_pdf_media_type("application/pdfx"));
        assert!(!is_pdf_media_type("text/plain"));
    }

    #[test]
    fn issue_codes_have_stable_names() {
        assert_eq!(IssueCode::Letter.as_str(), "document-letter");
        assert_eq!(
            serde_json::to_value(IssueCode::Specification).unwrap(),
            json!("specification")
        );
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
