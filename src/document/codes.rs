//! The JP-CLINS vocabulary: code systems, identifier systems, profiles and
//! the section table of the 診療情報提供書 (eReferral) and 退院時サマリー
//! (eDischargeSummary) Compositions (jami-fhir-jp-wg/clinical-core,
//! `input/fsh/profiles/CLINS/`).

/// Section codes (`Composition.section.code.coding.system`).
pub const SECTION_SYSTEM: &str = "http://jpfhir.jp/fhir/clins/CodeSystem/document-section";
/// Document type codes (`Composition.type.coding.system`).
pub const DOC_TYPE_SYSTEM: &str = "http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes";
/// LOINC, which the document type codes are taken from.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// Document sub-type codes (`Composition.category`).
pub const DOC_SUBTYPE_SYSTEM: &str = "http://jpfhir.jp/fhir/Common/CodeSystem/doc-subtypecodes";
/// 診療情報提供書.
pub const TYPE_REFERRAL: &str = "57133-1";
/// 退院時サマリー.
pub const TYPE_DISCHARGE_SUMMARY: &str = "18842-5";
/// Fixed `Composition.title` of a 診療情報提供書.
pub const TITLE_REFERRAL: &str = "診療情報提供書";
/// Fixed `Composition.title` of a 退院時サマリー.
pub const TITLE_DISCHARGE_SUMMARY: &str = "退院時サマリー";
/// Fixed `Composition.event.code.text` of a 診療情報提供書.
pub const EVENT_REFERRAL: &str = "診療情報提供書発行";

/// `Bundle.identifier.system`.
pub const BUNDLE_IDENTIFIER_SYSTEM: &str = "http://jpfhir.jp/fhir/clins/bundle-identifier";
/// `Composition.identifier.system` (and other resource instance identifiers).
pub const RESOURCE_IDENTIFIER_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/IdSystem/resourceInstance-identifier";
/// `Organization.identifier.system` of the 10-digit medical institution code.
pub const MEDICAL_INSTITUTION_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no";
/// The 7-digit 医療機関番号 (extension of JP_Organization).
pub const MEDICAL_ORGANIZATION_ID_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/mhlw/IdSystem/MedicalOrganizationID";
/// Prefix of a facility's patient ID system: `urn:oid:1.2.392.100495.20.3.51.1` +
/// the facility's 10 digits.
pub const PATIENT_ID_OID_PREFIX: &str = "urn:oid:1.2.392.100495.20.3.51.1";
/// 被保険者個人識別子.
pub const INSURANCE_MEMBER_SYSTEM: &str =
    "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID";
/// `Composition.extension` holding the document version.
pub const VERSION_EXTENSION: &str =
    "http://hl7.org/fhir/StructureDefinition/composition-clinicaldocument-versionNumber";
/// `HumanName.extension` telling 漢字 (`IDE`) from カナ (`SYL`).
pub const NAME_REPRESENTATION_EXTENSION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
/// Department of an Organization (JP_eCS_Department).
pub const DEPARTMENT_EXTENSION: &str =
    "http://jpfhir.jp/fhir/eCS/Extension/StructureDefinition/JP_eCS_Department";
/// Prefecture number of an Organization.
pub const PREFECTURE_EXTENSION: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_PrefectureNo";
/// Fee schedule (点数表) of an Organization.
pub const FEE_SCHEDULE_EXTENSION: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationCategory";
/// 7-digit 医療機関番号 of an Organization.
pub const ORGANIZATION_NO_EXTENSION: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationNo";
/// Code system of prefecture numbers.
pub const PREFECTURE_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/PrefectureNo-2digits";
/// Code system of fee schedules.
pub const FEE_SCHEDULE_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/MedicationFeeScoreType";

/// Profiles written into `meta.profile`.
pub mod profile {
    /// JP_Bundle_eReferral.
    pub const BUNDLE_REFERRAL: &str =
        "http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral";
    /// JP_Bundle_eDischargeSummary.
    pub const BUNDLE_DISCHARGE_SUMMARY: &str =
        "http://jpfhir.jp/fhir/eDischargeSummary/StructureDefinition/JP_Bundle_eDischargeSummary";
    /// JP_Composition_eReferral.
    pub const COMPOSITION_REFERRAL: &str =
        "http://jpfhir.jp/fhir/eReferral/StructureDefinition/JP_Composition_eReferral";
    /// JP_Composition_eDischargeSummary.
    pub const COMPOSITION_DISCHARGE_SUMMARY: &str =
        "http://jpfhir.jp/fhir/eDischargeSummary/StructureDefinition/JP_Composition_eDischargeSummary";
    /// JP_Patient_eCS.
    pub const PATIENT: &str = "http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_Patient_eCS";
    /// JP_Practitioner_eCS.
    pub const PRACTITIONER: &str =
        "http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_Practitioner_eCS";
    /// JP_Organization_eCS.
    pub const ORGANIZATION: &str =
        "http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_Organization_eCS";
    /// JP_Encounter_eCS.
    pub const ENCOUNTER: &str = "http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_Encounter_eCS";
}

/// renkei's own tag on `Composition.meta.tag`: which of the
/// [`super::DocKind`]s a 診療情報提供書 is (referral, reply,
/// reverse-referral, transfer) or `discharge-summary`.
pub const KIND_TAG_SYSTEM: &str = "urn:renkei:document-kind";
/// `Composition.relatesTo.code` of a document answering a package.
pub const RELATES_TO_CODE: &str = "appends";
/// `Composition.relatesTo.targetIdentifier.system`: the answered package ID
/// as a `urn:uuid:` URI.
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";

/// Where a section may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Directly under `Composition.section`.
    Top,
    /// Under 300 構造情報.
    Structured,
}

/// Which documents a section belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uses {
    /// 診療情報提供書 only (the `REF` codes).
    Referral,
    /// 退院時サマリー only (the `DIS` codes).
    DischargeSummary,
    /// Both (the `COMMON` codes, and the renkei additions 910/920/220 in a
    /// 退院時サマリー).
    Both,
}

/// One section code of the JP-CLINS code system.
#[derive(Debug, Clone, Copy)]
pub struct SectionDef {
    /// The code (`section.code.coding.code`).
    pub code: &'static str,
    /// The fixed section title (`section.title`); the coding's display is
    /// this title followed by `セクション`.
    pub title: &'static str,
    /// The heading used when rendering.
    pub heading: &'static str,
    /// Where it may appear.
    pub level: Level,
    /// Which documents it belongs to.
    pub uses: Uses,
    /// Resource types its entries may reference.
    pub entry_types: &'static [&'static str],
}

impl SectionDef {
    /// The coding display: `紹介目的セクション`.
    pub fn display(&self) -> String {
        format!("{}セクション", self.title)
    }

    /// "950 紹介目的", as used in messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.code, self.title)
    }

    /// Whether the section belongs in this kind of document.
    pub fn used_in(&self, referral_type: bool) -> bool {
        match self.uses {
            Uses::Both => true,
            Uses::Referral => referral_type,
            Uses::DischargeSummary => !referral_type,
        }
    }
}

const fn def(
    code: &'static str,
    title: &'static str,
    heading: &'static str,
    level: Level,
    uses: Uses,
    entry_types: &'static [&'static str],
) -> SectionDef {
    SectionDef {
        code,
        title,
        heading,
        level,
        uses,
        entry_types,
    }
}

use Level::{Structured, Top};
use Uses::{Both, DischargeSummary as Dis, Referral as Ref};

const DOCREF: &[&str] = &["DocumentReference"];
const CONDITION: &[&str] = &["Condition"];
const ENCOUNTER: &[&str] = &["Encounter"];
const OBSERVATION: &[&str] = &["Observation"];
const PROCEDURE: &[&str] = &["Procedure"];
const MEDICATION: &[&str] = &["MedicationRequest", "MedicationStatement"];
const CAREPLAN: &[&str] = &["CarePlan"];
const STUDY: &[&str] = &["Observation", "ImagingStudy", "DiagnosticReport", "Bundle"];

/// Every section code renkei knows, in the order they are rendered.
pub const SECTIONS: &[SectionDef] = &[
    def(
        "910",
        "紹介先情報",
        "紹介先",
        Top,
        Both,
        &["Organization", "Practitioner"],
    ),
    def(
        "920",
        "紹介元情報",
        "紹介元",
        Top,
        Both,
        &["Organization", "Practitioner"],
    ),
    def("200", "CDA参照", "CDA参照", Top, Both, DOCREF),
    def("300", "構造情報", "構造情報", Top, Both, &[]),
    // 診療情報提供書 (under 300)
    def("950", "紹介目的", "紹介目的", Structured, Ref, ENCOUNTER),
    def(
        "340",
        "傷病名・主訴",
        "傷病名・主訴",
        Structured,
        Ref,
        CONDITION,
    ),
    // 退院時サマリー (under 300)
    def(
        "322",
        "入院時詳細",
        "入院時詳細",
        Structured,
        Dis,
        ENCOUNTER,
    ),
    def("312", "入院理由", "入院理由", Structured, Dis, ENCOUNTER),
    def("352", "主訴", "主訴", Structured, Dis, CONDITION),
    def(
        "342",
        "入院時診断",
        "入院時診断",
        Structured,
        Dis,
        CONDITION,
    ),
    // common
    def("360", "現病歴", "現病歴", Structured, Both, CONDITION),
    def("370", "既往歴", "既往歴", Structured, Both, CONDITION),
    def(
        "510",
        "アレルギー・不耐性反応",
        "アレルギー・不耐性反応",
        Structured,
        Both,
        &["AllergyIntolerance"],
    ),
    def("520", "感染症情報", "感染症", Structured, Ref, OBSERVATION),
    def(
        "550",
        "家族歴",
        "家族歴",
        Structured,
        Both,
        &["FamilyMemberHistory"],
    ),
    def(
        "640",
        "社会歴・生活習慣",
        "社会歴・生活習慣",
        Structured,
        Both,
        OBSERVATION,
    ),
    def(
        "530",
        "予防接種歴",
        "予防接種歴",
        Structured,
        Both,
        &["Immunization"],
    ),
    def("610", "身体所見", "身体所見", Structured, Ref, OBSERVATION),
    def(
        "612",
        "入院時身体所見",
        "入院時身体所見",
        Structured,
        Dis,
        OBSERVATION,
    ),
    def(
        "432",
        "入院時服薬",
        "入院時服薬（処方）",
        Structured,
        Dis,
        MEDICATION,
    ),
    def(
        "430",
        "投薬指示",
        "処方（投薬指示）",
        Structured,
        Ref,
        MEDICATION,
    ),
    def(
        "620",
        "検査結果",
        "検査結果",
        Structured,
        Ref,
        &["Observation", "ImagingStudy", "DiagnosticReport"],
    ),
    def(
        "623",
        "入院中検査結果",
        "検査結果（入院中）",
        Structured,
        Dis,
        STUDY,
    ),
    def("720", "処置", "処置", Structured, Ref, PROCEDURE),
    def("730", "手術", "手術", Structured, Ref, PROCEDURE),
    def("740", "輸血歴", "輸血歴", Structured, Ref, PROCEDURE),
    def(
        "713",
        "入院中治療",
        "入院中治療",
        Structured,
        Dis,
        PROCEDURE,
    ),
    def("330", "臨床経過", "臨床経過", Structured, Ref, DOCREF),
    def("333", "入院中経過", "入院中経過", Structured, Dis, DOCREF),
    def(
        "324",
        "退院時詳細",
        "退院時詳細",
        Structured,
        Dis,
        ENCOUNTER,
    ),
    def(
        "344",
        "退院時診断",
        "退院時診断",
        Structured,
        Dis,
        CONDITION,
    ),
    def(
        "614",
        "退院時身体所見",
        "退院時身体所見",
        Structured,
        Dis,
        OBSERVATION,
    ),
    def(
        "444",
        "退院時投薬指示",
        "退院時投薬（処方）",
        Structured,
        Dis,
        &["MedicationRequest", "MedicationStatement", "Bundle"],
    ),
    def(
        "424",
        "退院時方針指示",
        "退院時方針",
        Structured,
        Dis,
        CAREPLAN,
    ),
    def("420", "診療方針指示", "診療方針", Structured, Ref, CAREPLAN),
    def(
        "810",
        "医療機器",
        "医療機器",
        Structured,
        Both,
        &["DeviceUseStatement", "Device"],
    ),
    def(
        "410",
        "事前指示",
        "事前指示",
        Structured,
        Both,
        &["Consent"],
    ),
    def(
        "830",
        "臨床研究参加",
        "臨床研究参加",
        Structured,
        Both,
        &["ResearchSubject", "ResearchStudy"],
    ),
    def(
        "210",
        "添付情報",
        "添付",
        Top,
        Both,
        &["DocumentReference", "Bundle"],
    ),
    def("230", "PDF", "PDF", Top, Both, DOCREF),
    def("220", "備考・連絡情報", "備考・連絡", Top, Both, DOCREF),
];

/// Sections a 診療情報提供書 must carry (besides 300 構造情報).
pub const REQUIRED_REFERRAL_TOP: &[&str] = &["920", "910"];
/// Sections a 診療情報提供書 must carry under 300 構造情報.
pub const REQUIRED_REFERRAL_STRUCTURED: &[&str] = &["950", "340", "360"];
/// Sections a 退院時サマリー must carry under 300 構造情報.
pub const REQUIRED_DISCHARGE_STRUCTURED: &[&str] = &[
    "322", "342", "352", "312", "360", "333", "324", "344", "444", "424",
];

/// Minimum number of entries of a section (the profile's `entry 1..`).
pub fn min_entries(code: &str, referral_type: bool) -> usize {
    match code {
        "910" | "920" | "210" | "230" | "200" => 1,
        "322" | "324" | "333" | "344" if !referral_type => 1,
        _ => 0,
    }
}

/// Maximum number of entries of a section (the profile's `entry ..n`).
pub fn max_entries(code: &str) -> Option<usize> {
    match code {
        "910" | "920" => Some(3),
        "950" | "312" | "322" | "324" | "220" | "200" => Some(1),
        _ => None,
    }
}

/// Look up a section code.
pub fn section(code: &str) -> Option<&'static SectionDef> {
    SECTIONS.iter().find(|s| s.code == code)
}

/// "950 紹介目的" for a known code, the bare code otherwise.
pub fn label(code: &str) -> String {
    section(code).map_or_else(|| code.to_string(), SectionDef::label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_unique_codes_and_required_codes_are_known() {
        let mut seen = std::collections::HashSet::new();
        for s in SECTIONS {
            assert!(seen.insert(s.code), "duplicate {}", s.code);
            assert_eq!(s.code.len(), 3);
        }
        for c in REQUIRED_REFERRAL_TOP
            .iter()
            .chain(REQUIRED_REFERRAL_STRUCTURED)
        {
            assert!(section(c).unwrap().used_in(true));
        }
        for c in REQUIRED_DISCHARGE_STRUCTURED {
            let s = section(c).unwrap();
            assert!(s.used_in(false));
            assert_eq!(s.level, Level::Structured);
        }
        assert_eq!(label("950"), "950 紹介目的");
        assert_eq!(label("999"), "999");
        assert_eq!(section("920").unwrap().display(), "紹介元情報セクション");
    }
}
