//! Clinical documents: FHIR R4 Document Bundles, the payload
//! (`document.json`) of every package, following JP-CLINS or the standard
//! 診療情報提供書 / 退院時サマリー HL7 FHIR 記述仕様 ([`spec`]).
//!
//! - [`form`]: the form a liaison office (地域連携室) fills in (TOML, or
//!   any serde format a front-end fills);
//! - [`build()`]: form → Bundle (診療情報提供書 57133-1 or 退院時サマリー
//!   18842-5) in either family;
//! - [`letter`]: a letter that is a PDF: the short form, the PDF check and
//!   [`build_letter()`];
//! - [`validate()`]: bytes → [`Summary`] or a list of [`Issue`]s, checking the
//!   Bundle shape, the specification's required sections, every reference,
//!   and that the 紹介元 / 紹介先 facilities and attachments match the package;
//! - [`render()`]: a Bundle → Japanese plain text or self-contained HTML, and
//!   [`render::html_fragment`], [`render::print_html`] and
//!   [`render::print_fragment`] for a front-end and for printing in the
//!   order of 別紙様式11;
//! - [`wareki`]: dates in 西暦 with 和暦 beside them;
//! - [`cli`]: the `renkei document` subcommands.
//!
//! Everything here is a pure function over bytes and `serde_json::Value`s:
//! no network, no files (except in [`cli`]). docs/DOCUMENTS.md describes
//! the FHIR shape of each kind.

pub mod build;
pub mod cli;
pub mod codes;
pub mod form;
pub mod letter;
mod read;
pub mod render;
pub mod spec;
pub mod validate;
pub mod wareki;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identity::FacilityId;
use crate::package::PackageKind;

pub use build::{build, build_json, BuildOptions, IdSource};
pub use form::{Form, FormError, FormErrors};
pub use letter::{build_letter, build_letter_json, check_pdf, LetterError, LetterForm};
pub use render::{render, Format};
pub use spec::{Family, Spec};
pub use validate::{
    validate, validate_value, AttachmentRef, Expect, Issue, IssueCode, Party, PatientSummary,
    Summary,
};
pub use wareki::japanese_date;

/// Largest `document.json` accepted by [`validate()`] (attachments travel
/// as their own package members, so a document is small).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// What a document is. Every kind but the discharge summary is a
/// 診療情報提供書 (Composition type LOINC 57133-1); the kind is carried in
/// `Composition.meta.tag` (system [`codes::KIND_TAG_SYSTEM`]) and replies,
/// reverse referrals and transfers name the package they answer in
/// `Composition.relatesTo` (see docs/DOCUMENTS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DocKind {
    /// 紹介状 / 診療情報提供書: referring a patient.
    Referral,
    /// 返書: the answer to a referral.
    Reply,
    /// 逆紹介: referring the patient back to the family doctor.
    ReverseReferral,
    /// 転院依頼: asking another hospital to take over the patient.
    Transfer,
    /// 退院時サマリー (Composition type LOINC 18842-5).
    DischargeSummary,
}

impl DocKind {
    /// All kinds, in a stable order.
    pub const ALL: [DocKind; 5] = [
        DocKind::Referral,
        DocKind::Reply,
        DocKind::ReverseReferral,
        DocKind::Transfer,
        DocKind::DischargeSummary,
    ];

    /// The kebab-case name used in files, tags and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Referral => "referral",
            DocKind::Reply => "reply",
            DocKind::ReverseReferral => "reverse-referral",
            DocKind::Transfer => "transfer",
            DocKind::DischargeSummary => "discharge-summary",
        }
    }

    /// The Japanese name of the kind.
    pub fn japanese(self) -> &'static str {
        match self {
            DocKind::Referral => "紹介",
            DocKind::Reply => "返書",
            DocKind::ReverseReferral => "逆紹介",
            DocKind::Transfer => "転院依頼",
            DocKind::DischargeSummary => "退院時サマリー",
        }
    }

    /// Whether the document is a 診療情報提供書 (57133-1) rather than a
    /// 退院時サマリー.
    pub fn is_referral_type(self) -> bool {
        self != DocKind::DischargeSummary
    }

    /// Parse the tag code written into `Composition.meta.tag`.
    pub fn from_tag(code: &str) -> Option<DocKind> {
        DocKind::ALL.into_iter().find(|k| k.as_str() == code)
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DocKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DocKind::from_tag(s).ok_or_else(|| {
            format!(
                "unknown document kind {s:?}; use one of referral, reply, reverse-referral, transfer, discharge-summary"
            )
        })
    }
}

impl From<DocKind> for PackageKind {
    fn from(k: DocKind) -> PackageKind {
        match k {
            DocKind::Referral => PackageKind::Referral,
            DocKind::Reply => PackageKind::Reply,
            DocKind::ReverseReferral => PackageKind::ReverseReferral,
            DocKind::Transfer => PackageKind::Transfer,
            DocKind::DischargeSummary => PackageKind::DischargeSummary,
        }
    }
}

impl TryFrom<PackageKind> for DocKind {
    type Error = PackageKind;
    /// The document kind of a package kind; `clinical-info` has none.
    fn try_from(k: PackageKind) -> Result<DocKind, PackageKind> {
        match k {
            PackageKind::Referral => Ok(DocKind::Referral),
            PackageKind::Reply => Ok(DocKind::Reply),
            PackageKind::ReverseReferral => Ok(DocKind::ReverseReferral),
            PackageKind::Transfer => Ok(DocKind::Transfer),
            PackageKind::DischargeSummary => Ok(DocKind::DischargeSummary),
            other => Err(other),
        }
    }
}

/// A medical institution code as written in a document
/// (`Organization.identifier` with system
/// [`codes::MEDICAL_INSTITUTION_SYSTEM`]): ten ASCII digits.
///
/// Unlike [`FacilityId`] the check digit is not verified, because documents
/// produced by other systems (such as the JP-CLINS examples) carry codes this
/// crate's check would refuse; a code is compared with the package's
/// facility IDs digit for digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FacilityCode(String);

impl FacilityCode {
    /// The ten digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FacilityCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(FacilityCode(s.to_string()))
        } else {
            Err(format!(
                "{:?} is not a medical institution code (10 digits)",
                s.chars().take(40).collect::<String>()
            ))
        }
    }
}

impl TryFrom<String> for FacilityCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<FacilityCode> for String {
    fn from(c: FacilityCode) -> String {
        c.0
    }
}

impl From<FacilityId> for FacilityCode {
    fn from(f: FacilityId) -> FacilityCode {
        FacilityCode(f.as_str().to_string())
    }
}

impl From<&FacilityId> for FacilityCode {
    fn from(f: &FacilityId) -> FacilityCode {
        FacilityCode(f.as_str().to_string())
    }
}

impl PartialEq<FacilityId> for FacilityCode {
    fn eq(&self, other: &FacilityId) -> bool {
        self.0 == other.as_str()
    }
}

impl fmt::Display for FacilityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FacilityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FacilityCode({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_names_and_package_kinds() {
        for k in DocKind::ALL {
            assert_eq!(k.as_str().parse::<DocKind>().unwrap(), k);
            assert_eq!(DocKind::try_from(PackageKind::from(k)).unwrap(), k);
            assert_eq!(k.to_string(), k.as_str());
        }
        assert!(DocKind::try_from(PackageKind::ClinicalInfo).is_err());
        assert!("letter".parse::<DocKind>().is_err());
        assert!(!DocKind::DischargeSummary.is_referral_type());
        assert!(DocKind::Transfer.is_referral_type());
    }

    #[test]
    fn facility_codes_take_ten_digits_without_check_digit() {
        let c: FacilityCode = "1319876543".parse().unwrap();
        assert_eq!(c.as_str(), "1319876543");
        assert!("131987654".parse::<FacilityCode>().is_err());
        assert!("13198765431".parse::<FacilityCode>().is_err());
        assert!("13198a6543".parse::<FacilityCode>().is_err());
        let f: FacilityId = "1311234569".parse().unwrap();
        let c = FacilityCode::from(&f);
        assert_eq!(c, f);
        assert_eq!(format!("{c:?}"), "FacilityCode(1311234569)");
    }
}
