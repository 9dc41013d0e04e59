//! Letters that are PDFs: a 紹介状 written in a record system or a word
//! processor, or a scanned handwritten one.
//!
//! The document is still a valid FHIR 診療情報提供書: its required sections
//! come from a short form ([`LetterForm`]: patient, purpose, 紹介元, 紹介先,
//! optionally 傷病名), the sections the letter holds (現病歴, and 傷病名 when
//! the form names none) say so, and the letter itself is referenced from the
//! document as the package member `attachments/FILE`:
//!
//! - JP-CLINS: section 230 PDF, a DocumentReference (`application/pdf`);
//! - the standard 診療情報提供書 HL7 FHIR 記述仕様, whose 230 admits only an
//!   inline Binary: first in section 210 添付情報, a DocumentReference typed
//!   as the document itself (doc-typecodes 57133-1).
//!
//! The PDF is checked with [`check_pdf`] (magic bytes and size) before it
//! is referenced. A discharge summary has too many required structured
//! sections to be a letter; send its PDF as an attachment of a summary
//! instead.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::build::{build_checked, document_bytes, BuildOptions, LetterPart};
use super::form::{
    check_line, check_text, err, AttachmentForm, FacilityForm, Form, FormError, FormErrors,
    PatientForm, Setting,
};
use super::DocKind;

/// Largest letter accepted (bytes).
pub const MAX_LETTER_BYTES: u64 = 20 * 1024 * 1024;
/// What every PDF file starts with.
pub const PDF_MAGIC: &[u8] = b"%PDF-";
/// The title of the letter when the form gives none.
pub const DEFAULT_LETTER_TITLE: &str = "紹介状";

/// Why a file is not accepted as a letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LetterError {
    /// The file is empty.
    #[error("the letter is an empty file; export the letter as PDF again")]
    Empty,
    /// The file is larger than [`MAX_LETTER_BYTES`].
    #[error("the letter is {size} bytes, more than the {max} bytes a letter may have; scan it at a lower resolution or send the rest as attachments")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file does not start with `%PDF-`.
    #[error("the letter is not a PDF (it does not start with %PDF-); save or export it as PDF")]
    NotPdf,
}

/// Check that a letter is a PDF: `head` is the start of the file (at least
/// its first five bytes, or all of it) and `size` its full size.
pub fn check_pdf(head: &[u8], size: u64) -> Result<(), LetterError> {
    if size == 0 {
        return Err(LetterError::Empty);
    }
    if size > MAX_LETTER_BYTES {
        return Err(LetterError::TooLarge {
            size,
            max: MAX_LETTER_BYTES,
        });
    }
    if !head.starts_with(PDF_MAGIC) {
        return Err(LetterError::NotPdf);
    }
    Ok(())
}

/// The short form of a letter that is a PDF: who, to whom, why.
/// Unknown fields are refused, as in [`Form`]; `examples/letter.toml` is a
/// filled-in example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LetterForm {
    /// 文書番号 (up to 32 characters, no `^`); random when absent.
    pub document_number: Option<String>,
    /// 作成日 (YYYY-MM-DD); today (JST) when absent.
    pub date: Option<String>,
    /// The package this letter answers (required for a reply).
    pub in_reply_to: Option<String>,
    /// 外来文書 or 退院時文書 (JP-CLINS `Composition.category`).
    pub setting: Option<Setting>,
    /// 患者.
    pub patient: PatientForm,
    /// 紹介元: the facility writing the letter, and its doctor.
    pub from: FacilityForm,
    /// 紹介先: the facility the letter goes to. Required.
    pub to: Option<FacilityForm>,
    /// 紹介目的. Required.
    pub purpose: Option<String>,
    /// 傷病名 (one per item); optional, the letter holds them otherwise.
    #[serde(default)]
    pub diagnoses: Vec<String>,
    /// 表題 of the letter ("紹介状" when absent).
    pub letter_title: Option<String>,
    /// 備考・連絡.
    pub remarks: Option<String>,
    /// Other files sent with the letter, as `attachments/FILE`.
    #[serde(default)]
    pub attachments: Vec<AttachmentForm>,
}

impl LetterForm {
    /// Parse a short form from UTF-8 TOML (a leading BOM is ignored).
    pub fn from_bytes(bytes: &[u8]) -> Result<LetterForm, FormErrors> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            FormErrors(vec![err(
                "",
                format!(
                    "the form is not UTF-8 (invalid byte at offset {}); save it as UTF-8",
                    e.valid_up_to()
                ),
            )])
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        toml::from_str(text).map_err(|e| {
            FormErrors(vec![err(
                "",
                format!(
                    "the form is not valid TOML for a PDF letter (patient, from, to, purpose): {}",
                    e.to_string().trim_end()
                ),
            )])
        })
    }

    /// The title of the letter.
    pub fn title(&self) -> &str {
        self.letter_title.as_deref().unwrap_or(DEFAULT_LETTER_TITLE)
    }

    /// The full form this short form stands for (the clinical content
    /// left to the letter).
    fn to_form(&self) -> Form {
        Form {
            document_number: self.document_number.clone(),
            date: self.date.clone(),
            in_reply_to: self.in_reply_to.clone(),
            setting: self.setting,
            patient: self.patient.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            purpose: self.purpose.clone(),
            diagnoses: self.diagnoses.clone(),
            chief_complaint: None,
            present_illness: None,
            past_history: Vec::new(),
            allergies: Vec::new(),
            infections: Vec::new(),
            family_history: None,
            physical_findings: None,
            medications: Vec::new(),
            lab_results: Vec::new(),
            clinical_course: None,
            plan: None,
            remarks: self.remarks.clone(),
            attachments: self.attachments.clone(),
            discharge: None,
        }
    }

    /// Check the short form for `kind` with the letter stored as
    /// `attachments/FILE`; every problem at once, each with its field
    /// (`letter` for the file).
    pub fn check(
        &self,
        kind: DocKind,
        in_reply_to: Option<&str>,
        file: &str,
    ) -> Result<(), FormErrors> {
        let mut e: Vec<FormError> = Vec::new();
        if !kind.is_referral_type() {
            e.push(err(
                "",
                "a discharge summary (退院時サマリー) cannot be sent as a PDF letter: write it with the discharge-summary form and attach the PDF as an attachment",
            ));
            return Err(FormErrors(e));
        }
        e.extend(self.to_form().problems(kind, in_reply_to, true));
        if let Err(why) = crate::package::path::check_attachment_name(file) {
            e.push(err(
                "letter",
                format!("the letter's file name {file:?} is {why}; give the file name only"),
            ));
        } else if !file.to_ascii_lowercase().ends_with(".pdf") {
            e.push(err(
                "letter",
                format!("the letter {file:?} must be a PDF file named NAME.pdf"),
            ));
        }
        if self.attachments.iter().any(|a| a.file == file) {
            e.push(err(
                "letter",
                format!("{file:?} is the letter and also listed under attachments; list it once"),
            ));
        }
        if let Some(t) = &self.letter_title {
            check_line(&mut e, "letter_title", t);
        }
        if let Some(t) = &self.remarks {
            check_text(&mut e, "remarks", t);
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(FormErrors(e))
        }
    }
}

/// Build the Bundle of a PDF letter of `kind` whose PDF travels as the
/// package member `attachments/FILE` (`file`); in the family of
/// `opts.format`. The form is checked first ([`LetterForm::check`]); check
/// the PDF itself with [`check_pdf`].
pub fn build_letter(
    kind: DocKind,
    form: &LetterForm,
    file: &str,
    opts: &BuildOptions,
) -> Result<Value, FormErrors> {
    let in_reply_to = opts.in_reply_to.as_deref().or(form.in_reply_to.as_deref());
    form.check(kind, in_reply_to, file)?;
    Ok(build_checked(
        kind,
        &form.to_form(),
        in_reply_to,
        opts,
        Some(LetterPart {
            file,
            title: form.title(),
        }),
    ))
}

/// [`build_letter`] as the bytes of `document.json`.
pub fn build_letter_json(
    kind: DocKind,
    form: &LetterForm,
    file: &str,
    opts: &BuildOptions,
) -> Result<Vec<u8>, FormErrors> {
    Ok(document_bytes(&build_letter(kind, form, file, opts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdfs_are_recognised_by_magic_and_size() {
        assert_eq!(check_pdf(b"%PDF-1.7\n", 9), Ok(()));
        assert_eq!(check_pdf(b"", 0), Err(LetterError::Empty));
        assert_eq!(check_pdf(b"PK\x03\x04", 4), Err(LetterError::NotPdf));
        assert_eq!(check_pdf(b" %PDF-1.7", 9), Err(LetterError::NotPdf));
        assert_eq!(check_pdf(b"%PDF", 4), Err(LetterError::NotPdf));
        assert!(matches!(
            check_pdf(b"%PDF-1.7", MAX_LETTER_BYTES + 1),
            Err(LetterError::TooLarge { .. })
        ));
        assert!(LetterError::NotPdf.to_string().contains("export it as PDF"));
    }

    #[test]
    fn short_forms_are_parsed_strictly() {
        assert!(LetterForm::from_bytes(b"\xff\xfe")
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        let e = LetterForm::from_bytes(b"purpose = \"x\"\npresent_illness = \"y\"").unwrap_err();
        assert!(e.to_string().contains("present_illness"), "{e}");
        assert!(LetterForm::from_bytes(b"[patient]\nname = 1").is_err());
    }
}
