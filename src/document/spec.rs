//! Which specification a document follows, and what each one allows.
//!
//! renkei exchanges two families of FHIR document:
//!
//! - **JP-CLINS** — the profiles of the 電子カルテ情報共有サービス
//!   (jami-fhir-jp-wg/clinical-core, `input/fsh/profiles/CLINS/`): Bundle
//!   profiles under `http://jpfhir.jp/fhir/clins/`, sections coded in
//!   [`codes::SECTION_SYSTEM`];
//! - **the standard HL7 FHIR 記述仕様** (厚生労働省標準規格, JAMI): the
//!   診療情報提供書 HL7 FHIR 記述仕様 (jami-fhir-jp-wg/eReferral) and the
//!   退院時サマリー HL7 FHIR 記述仕様 (jami-fhir-jp-wg/eDischargeSummary),
//!   with Bundle profiles and section code systems of their own.
//!
//! Both carry a 診療情報提供書 (LOINC 57133-1) or a 退院時サマリー
//! (18842-5), so a document follows one of four [`Spec`]s. [`detect`] tells
//! which from the Bundle profile, else from the sections' code system; the
//! section rules (which codes, where, how many entries of which resource
//! types, which are required) are [`Spec`] methods that follow each
//! profile's slicing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codes::{self, profile};
use super::read::{arr, str_at};
use super::DocKind;

/// The format `renkei document new --format` writes: a family of
/// specifications (the document type then picks the [`Spec`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum Family {
    /// JP-CLINS (電子カルテ情報共有サービス).
    #[default]
    #[serde(rename = "jp-clins")]
    #[value(name = "jp-clins")]
    JpClins,
    /// The standard 診療情報提供書 / 退院時サマリー HL7 FHIR 記述仕様
    /// (JAMI eReferral and eDischargeSummary).
    #[serde(rename = "ereferral")]
    #[value(name = "ereferral")]
    Standard,
}

impl Family {
    /// `jp-clins` or `ereferral`, as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::JpClins => "jp-clins",
            Family::Standard => "ereferral",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Family, String> {
        match s {
            "jp-clins" => Ok(Family::JpClins),
            "ereferral" => Ok(Family::Standard),
            other => Err(format!(
                "unknown document format {other:?}; use jp-clins or ereferral"
            )),
        }
    }
}

/// The specification a document follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Spec {
    /// JP-CLINS 診療情報提供書 (JP_Bundle_eReferral of clinical-core).
    #[serde(rename = "jp-clins-referral")]
    JpClinsReferral,
    /// JP-CLINS 退院時サマリー (JP_Bundle_eDischargeSummary of clinical-core).
    #[serde(rename = "jp-clins-discharge-summary")]
    JpClinsDischargeSummary,
    /// 診療情報提供書 HL7 FHIR 記述仕様 (JAMI eReferral).
    #[serde(rename = "ereferral")]
    EReferral,
    /// 退院時サマリー HL7 FHIR 記述仕様 (JAMI eDischargeSummary).
    #[serde(rename = "edischarge-summary")]
    EDischargeSummary,
}

/// Codes of a 診療情報提供書 (JP-CLINS `COMMON` and `REF`; the code system of
/// the standard eReferral has the same codes).
const REFERRAL_CODES: &[&str] = &[
    "910", "920", "200", "300", "950", "340", "360", "370", "510", "520", "550", "640", "530",
    "610", "430", "620", "720", "730", "740", "330", "420", "810", "410", "830", "210", "230",
    "220",
];
/// Codes of a JP-CLINS 退院時サマリー: `COMMON` and `DIS`, the codes the
/// summary profile's slices use (362, 372, 552, 642), and renkei's
/// 910 / 920 / 220 (the section slicing is open).
const CLINS_DISCHARGE_CODES: &[&str] = &[
    "910", "920", "200", "300", "322", "312", "352", "342", "360", "362", "370", "372", "510",
    "550", "552", "640", "642", "530", "612", "432", "623", "713", "333", "324", "344", "614",
    "444", "424", "810", "410", "830", "210", "230", "220",
];
/// Codes of the standard 退院時サマリー: its code system holds the summary
/// codes and the 診療情報提供書 codes ("診療情報用を含む"), and the section
/// slicing is open.
const STD_DISCHARGE_CODES: &[&str] = &[
    "910", "920", "200", "300", "322", "312", "352", "342", "360", "362", "370", "372", "510",
    "550", "552", "640", "642", "530", "612", "432", "623", "713", "333", "324", "344", "614",
    "444", "424", "810", "410", "830", "210", "230", "220", "950", "340", "520", "610", "430",
    "620", "720", "730", "740", "330", "420",
];

/// Required sections of a 診療情報提供書 at the top level and under 300.
const REFERRAL_TOP: &[&[&str]] = &[&["920"], &["910"], &["300"]];
const REFERRAL_STRUCTURED: &[&[&str]] = &[&["950"], &["340"], &["360"]];
/// Required sections of a 退院時サマリー (each slice `1..1` of the profiles;
/// JP-CLINS names 現病歴 360 in its code system and 362 in its profile).
const DISCHARGE_TOP: &[&[&str]] = &[&["300"]];
const CLINS_DISCHARGE_STRUCTURED: &[&[&str]] = &[
    &["322"],
    &["342"],
    &["352"],
    &["312"],
    &["360", "362"],
    &["333"],
    &["324"],
    &["344"],
    &["444"],
    &["424"],
];
const STD_DISCHARGE_STRUCTURED: &[&[&str]] = &[
    &["322"],
    &["342"],
    &["352"],
    &["312"],
    &["362"],
    &["333"],
    &["324"],
    &["344"],
    &["444"],
    &["424"],
];

impl Spec {
    /// All four, in a stable order.
    pub const ALL: [Spec; 4] = [
        Spec::JpClinsReferral,
        Spec::JpClinsDischargeSummary,
        Spec::EReferral,
        Spec::EDischargeSummary,
    ];

    /// The specification of a family for a 診療情報提供書 (`referral_type`)
    /// or a 退院時サマリー.
    pub fn new(family: Family, referral_type: bool) -> Spec {
        match (family, referral_type) {
            (Family::JpClins, true) => Spec::JpClinsReferral,
            (Family::JpClins, false) => Spec::JpClinsDischargeSummary,
            (Family::Standard, true) => Spec::EReferral,
            (Family::Standard, false) => Spec::EDischargeSummary,
        }
    }

    /// The specification a document of `kind` follows in `family`.
    pub fn for_kind(family: Family, kind: DocKind) -> Spec {
        Spec::new(family, kind.is_referral_type())
    }

    /// Its family.
    pub fn family(self) -> Family {
        match self {
            Spec::JpClinsReferral | Spec::JpClinsDischargeSummary => Family::JpClins,
            Spec::EReferral | Spec::EDischargeSummary => Family::Standard,
        }
    }

    /// Whether it describes a 診療情報提供書 (57133-1) rather than a
    /// 退院時サマリー (18842-5).
    pub fn is_referral_type(self) -> bool {
        matches!(self, Spec::JpClinsReferral | Spec::EReferral)
    }

    /// A stable name: `jp-clins-referral`, `jp-clins-discharge-summary`,
    /// `ereferral`, `edischarge-summary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Spec::JpClinsReferral => "jp-clins-referral",
            Spec::JpClinsDischargeSummary => "jp-clins-discharge-summary",
            Spec::EReferral => "ereferral",
            Spec::EDischargeSummary => "edischarge-summary",
        }
    }

    /// Its Japanese name, as `document validate` and `document show` print
    /// it.
    pub fn name(self) -> &'static str {
        match self {
            Spec::JpClinsReferral => "JP-CLINS 診療情報提供書（電子カルテ情報共有サービス）",
            Spec::JpClinsDischargeSummary => {
                "JP-CLINS 退院時サマリー（電子カルテ情報共有サービス）"
            }
            Spec::EReferral => "診療情報提供書 HL7 FHIR 記述仕様 第1.1版（厚生労働省標準規格）",
            Spec::EDischargeSummary => {
                "退院時サマリー HL7 FHIR 記述仕様 第1.1版（厚生労働省標準規格）"
            }
        }
    }

    /// The implementation guide and version renkei follows.
    pub fn source(self) -> &'static str {
        match self {
            Spec::JpClinsReferral | Spec::JpClinsDischargeSummary => {
                "JP-CLINS 1.5 (jami-fhir-jp-wg/clinical-core)"
            }
            Spec::EReferral => "eReferral 1.1.6 (jami-fhir-jp-wg/eReferral)",
            Spec::EDischargeSummary => {
                "eDischargeSummary 1.1.6 (jami-fhir-jp-wg/eDischargeSummary)"
            }
        }
    }

    /// The code system of its section codes.
    pub fn section_system(self) -> &'static str {
        match self {
            Spec::JpClinsReferral | Spec::JpClinsDischargeSummary => codes::SECTION_SYSTEM,
            Spec::EReferral => codes::EREFERRAL_SECTION_SYSTEM,
            Spec::EDischargeSummary => codes::EDISCHARGE_SECTION_SYSTEM,
        }
    }

    /// Its Bundle profile (`Bundle.meta.profile`).
    pub fn bundle_profile(self) -> &'static str {
        match self {
            Spec::JpClinsReferral => profile::BUNDLE_REFERRAL,
            Spec::JpClinsDischargeSummary => profile::BUNDLE_DISCHARGE_SUMMARY,
            Spec::EReferral => profile::STD_BUNDLE_REFERRAL,
            Spec::EDischargeSummary => profile::STD_BUNDLE_DISCHARGE_SUMMARY,
        }
    }

    /// Its Composition profile (the same URL in both families).
    pub fn composition_profile(self) -> &'static str {
        if self.is_referral_type() {
            profile::COMPOSITION_REFERRAL
        } else {
            profile::COMPOSITION_DISCHARGE_SUMMARY
        }
    }

    /// `Bundle.identifier.system`.
    pub fn bundle_identifier_system(self) -> &'static str {
        match self.family() {
            Family::JpClins => codes::BUNDLE_IDENTIFIER_SYSTEM,
            Family::Standard => codes::DOCUMENT_INSTANCE_IDENTIFIER_SYSTEM,
        }
    }

    /// The separator of the parts of a document number
    /// (`1311234569^2026^0142` in JP-CLINS, `1311234569-2026-0142` in the
    /// standard).
    pub fn identifier_separator(self) -> char {
        match self.family() {
            Family::JpClins => '^',
            Family::Standard => '-',
        }
    }

    /// Whether it allows section `code` at all (at its level, see
    /// [`codes::SectionDef::level`]).
    pub fn allows(self, code: &str) -> bool {
        match self {
            Spec::JpClinsReferral | Spec::EReferral => REFERRAL_CODES.contains(&code),
            Spec::JpClinsDischargeSummary => CLINS_DISCHARGE_CODES.contains(&code),
            Spec::EDischargeSummary => STD_DISCHARGE_CODES.contains(&code),
        }
    }

    /// The code this specification uses for what renkei writes as `code`:
    /// the standard 退院時サマリー codes 現病歴, 既往歴, 家族歴 and 社会歴 as
    /// 362, 372, 552 and 642.
    pub fn local_code(self, code: &'static str) -> &'static str {
        match (self, code) {
            (Spec::EDischargeSummary, "360") => "362",
            (Spec::EDischargeSummary, "370") => "372",
            (Spec::EDischargeSummary, "550") => "552",
            (Spec::EDischargeSummary, "640") => "642",
            _ => code,
        }
    }

    /// Resource types the entries of section `code` may reference.
    pub fn entry_types(self, code: &str) -> &'static [&'static str] {
        match (self.family(), code) {
            (Family::Standard, "210") => &["DocumentReference", "Binary", "Bundle"],
            (Family::Standard, "220") => &["DocumentReference", "Binary"],
            (Family::JpClins, "230") => &["DocumentReference"],
            (Family::Standard, "230") if self == Spec::EReferral => &["Binary"],
            (Family::Standard, "230") => &["DocumentReference", "Binary"],
            _ => codes::section(code).map_or(&[], |d| d.entry_types),
        }
    }

    /// Least number of entries of section `code` (the profile's `entry 1..`).
    pub fn min_entries(self, code: &str) -> usize {
        match code {
            "910" | "920" | "210" | "230" | "200" => 1,
            "322" | "324" | "333" | "344" if !self.is_referral_type() => 1,
            _ => 0,
        }
    }

    /// Most entries of section `code` (the profile's `entry ..n`).
    pub fn max_entries(self, code: &str) -> Option<usize> {
        match code {
            "910" | "920" => Some(3),
            "950" | "312" | "322" | "324" | "220" | "200" => Some(1),
            _ => None,
        }
    }

    /// Whether section `code` may appear more than once (the `0..*`
    /// slices: 210, 220, 230).
    pub fn repeatable(self, code: &str) -> bool {
        matches!(code, "210" | "220" | "230")
    }

    /// Whether section `code` must not carry a narrative (`text ..0`: the
    /// JP-CLINS PDF section).
    pub fn forbids_text(self, code: &str) -> bool {
        self.family() == Family::JpClins && code == "230"
    }

    /// Required top-level sections; each item lists the codes that satisfy
    /// it, the preferred first.
    pub fn required_top(self) -> &'static [&'static [&'static str]] {
        if self.is_referral_type() {
            REFERRAL_TOP
        } else {
            DISCHARGE_TOP
        }
    }

    /// Required sections under 300 構造情報 (as [`Spec::required_top`]).
    pub fn required_structured(self) -> &'static [&'static [&'static str]] {
        match self {
            Spec::JpClinsReferral | Spec::EReferral => REFERRAL_STRUCTURED,
            Spec::JpClinsDischargeSummary => CLINS_DISCHARGE_STRUCTURED,
            Spec::EDischargeSummary => STD_DISCHARGE_STRUCTURED,
        }
    }

    /// The specification a Bundle profile URL names (a `|version` suffix is
    /// ignored).
    pub fn from_bundle_profile(url: &str) -> Option<Spec> {
        let url = url.split('|').next().unwrap_or(url);
        Spec::ALL.into_iter().find(|s| s.bundle_profile() == url)
    }

    /// The family a section code system belongs to.
    pub fn family_of_section_system(system: &str) -> Option<Family> {
        match system {
            codes::SECTION_SYSTEM => Some(Family::JpClins),
            codes::EREFERRAL_SECTION_SYSTEM | codes::EDISCHARGE_SECTION_SYSTEM => {
                Some(Family::Standard)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a document's specification was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The specification the document is read and checked against.
    pub spec: Spec,
    /// The specification its Bundle profile names, if it names one.
    pub by_profile: Option<Spec>,
    /// The family of the code system of its first coded section, if any.
    pub by_sections: Option<Family>,
}

/// The document type of a Composition: `Some(true)` for a 診療情報提供書,
/// `Some(false)` for a 退院時サマリー, `None` for anything else.
pub fn composition_type(comp: &Value) -> Option<bool> {
    comp.get("type")
        .map(|t| arr(t, "coding"))
        .unwrap_or_default()
        .iter()
        .find_map(|c| match str_at(c, "code") {
            Some(codes::TYPE_REFERRAL) => Some(true),
            Some(codes::TYPE_DISCHARGE_SUMMARY) => Some(false),
            _ => None,
        })
}

/// Recognise the specification of a Bundle whose first entry is the
/// Composition `comp`: the family from the Bundle profile, else from the
/// code system of the first section coded in a known one, else JP-CLINS;
/// the document type from `Composition.type` (a 診療情報提供書 when it is
/// neither).
pub fn detect(bundle: &Value, comp: &Value) -> Detected {
    let by_profile = bundle
        .get("meta")
        .map(|m| arr(m, "profile"))
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .find_map(Spec::from_bundle_profile);
    let by_sections = first_section_family(comp, 0);
    let referral_type = composition_type(comp)
        .or(by_profile.map(Spec::is_referral_type))
        .unwrap_or(true);
    let family = by_profile
        .map(Spec::family)
        .or(by_sections)
        .unwrap_or_default();
    Detected {
        spec: Spec::new(family, referral_type),
        by_profile,
        by_sections,
    }
}

fn first_section_family(v: &Value, depth: usize) -> Option<Family> {
    if depth > 8 {
        return None;
    }
    arr(v, "section").iter().find_map(|s| {
        s.get("code")
            .map(|c| arr(c, "coding"))
            .unwrap_or_default()
            .iter()
            .filter_map(|c| str_at(c, "system"))
            .find_map(Spec::family_of_section_system)
            .or_else(|| first_section_family(s, depth + 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_families_round_trip() {
        for s in Spec::ALL {
            assert_eq!(Spec::new(s.family(), s.is_referral_type()), s);
            assert_eq!(Spec::from_bundle_profile(s.bundle_profile()), Some(s));
            assert_eq!(
                Spec::from_bundle_profile(&format!("{}|1", s.bundle_profile())),
                Some(s)
            );
            assert_eq!(
                Spec::family_of_section_system(s.section_system()),
                Some(s.family())
            );
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, json!(s.as_str()));
        }
        assert_eq!("ereferral".parse::<Family>().unwrap(), Family::Standard);
        assert_eq!("jp-clins".parse::<Family>().unwrap(), Family::JpClins);
        assert!("fhir".parse::<Family>().is_err());
        assert_eq!(Family::Standard.to_string(), "ereferral");
    }

    #[test]
    fn every_required_code_is_allowed_and_known() {
        for s in Spec::ALL {
            for alternatives in s.required_top().iter().chain(s.required_structured()) {
                for c in *alternatives {
                    assert!(s.allows(c), "{s:?} {c}");
                    let level = codes::section(c).unwrap().level;
                    assert_eq!(
                        level == codes::Level::Top,
                        s.required_top().contains(alternatives),
                        "{s:?} {c}"
                    );
                }
            }
            for c in ["360", "370", "550", "640"] {
                assert!(s.allows(s.local_code(c)), "{s:?} {c}");
            }
        }
        assert_eq!(Spec::EDischargeSummary.local_code("360"), "362");
        assert_eq!(Spec::JpClinsDischargeSummary.local_code("360"), "360");
        assert!(!Spec::JpClinsReferral.allows("322"));
        assert!(!Spec::JpClinsDischargeSummary.allows("950"));
        assert!(Spec::EDischargeSummary.allows("950"));
        assert_eq!(Spec::EReferral.entry_types("230"), ["Binary"]);
        assert_eq!(
            Spec::JpClinsReferral.entry_types("230"),
            ["DocumentReference"]
        );
    }

    #[test]
    fn detection_prefers_the_profile_then_the_section_system() {
        let comp = |system: &str, code: &str| {
            json!({ "type": { "coding": [{ "code": code }] },
                    "section": [{ "section": [{ "code": { "coding": [{ "system": system, "code": "950" }] } }] }] })
        };
        let b = json!({ "meta": { "profile": [profile::STD_BUNDLE_REFERRAL] } });
        let c = comp(codes::SECTION_SYSTEM, "57133-1");
        let d = detect(&b, &c);
        assert_eq!(d.spec, Spec::EReferral);
        assert_eq!(d.by_sections, Some(Family::JpClins));
        let d = detect(
            &json!({}),
            &comp(codes::EDISCHARGE_SECTION_SYSTEM, "18842-5"),
        );
        assert_eq!(d.spec, Spec::EDischargeSummary);
        assert_eq!(d.by_profile, None);
        let d = detect(&json!({}), &json!({}));
        assert_eq!(d.spec, Spec::JpClinsReferral);
    }
}
