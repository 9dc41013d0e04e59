//! The vocabulary of the documents renkei exchanges: code systems,
//! identifier systems, profiles and the section codes of the 診療情報提供書
//! and 退院時サマリー Compositions, in both families —
//! JP-CLINS (jami-fhir-jp-wg/clinical-core, `input/fsh/profiles/CLINS/`) and
//! the standard 診療情報提供書 / 退院時サマリー HL7 FHIR 記述仕様
//! (jami-fhir-jp-wg/eReferral, jami-fhir-jp-wg/eDischargeSummary). Which
//! codes each specification allows, requires and how often is in
//! [`super::spec`].

/// JP-CLINS section codes (`Composition.section.code.coding.system`).
pub const SECTION_SYSTEM: &str = "http://jpfhir.jp/fhir/clins/CodeSystem/document-section";
/// Section codes of the 診療情報提供書 HL7 FHIR 記述仕様 (eReferral).
pub const EREFERRAL_SECTION_SYSTEM: &str =
    "http://jpfhir.jp/fhir/eReferral/CodeSystem/document-section";
/// Section codes of the 退院時サマリー HL7 FHIR 記述仕様 (eDischargeSummary).
pub const EDISCHARGE_SECTION_SYSTEM: &str =
    "http://jpfhir.jp/fhir/eDischargeSummary/CodeSystem/document-section";
/// Every section code system renkei reads.
pub const SECTION_SYSTEMS: [&str; 3] = [
    SECTION_SYSTEM,
    EREFERRAL_SECTION_SYSTEM,
    EDISCHARGE_SECTION_SYSTEM,
];
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

/// `Bundle.identifier.system` of a JP-CLINS document.
pub const BUNDLE_IDENTIFIER_SYSTEM: &str = "http://jpfhir.jp/fhir/clins/bundle-identifier";
/// `Bundle.identifier.system` of a document of the standard HL7 FHIR
/// 記述仕様 (eReferral, eDischargeSummary).
pub const DOCUMENT_INSTANCE_IDENTIFIER_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/IdSystem/documentInstance-identifier";
/// The media type of a PDF letter.
pub const PDF_MEDIA_TYPE: &str = "application/pdf";
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
    /// JP_Bundle_eReferral of JP-CLINS.
    pub const BUNDLE_REFERRAL: &str =
        "http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral";
    /// JP_Bundle_eDischargeSummary of JP-CLINS.
    pub const BUNDLE_DISCHARGE_SUMMARY: &str =
        "http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eDischargeSummary";
    /// JP_Bundle_eReferral of the 診療情報提供書 HL7 FHIR 記述仕様.
    pub const STD_BUNDLE_REFERRAL: &str =
        "http://jpfhir.jp/fhir/eReferral/StructureDefinition/JP_Bundle_eReferral";
    /// JP_Bundle_eDischargeSummary of the 退院時サマリー HL7 FHIR 記述仕様.
    pub const STD_BUNDLE_DISCHARGE_SUMMARY: &str =
        "http://jpfhir.jp/fhir/eDischargeSummary/StructureDefinition/JP_Bundle_eDischargeSummary";
    /// JP_Composition_eReferral (the same URL in JP-CLINS and the
    /// standard).
    pub const COMPOSITION_REFERRAL: &str =
        "http://jpfhir.jp/fhir/eReferral/StructureDefinition/JP_Composition_eReferral";
    /// JP_Composition_eDischargeSummary (the same URL in JP-CLINS and the
    /// standard).
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
    /// JP_DocumentReference_eCS.
    pub const DOCUMENT_REFERENCE: &str =
        "http://jpfhir.jp/fhir/eCS/StructureDefinition/JP_DocumentReference_eCS";
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
    /// Resource types its entries may reference (what the profiles allow;
    /// [`super::Spec::entry_types`] adjusts 210, 220 and 230 per
    /// specification).
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
}

const fn def(
    code: &'static str,
    title: &'static str,
    heading: &'static str,
    level: Level,
    entry_types: &'static [&'static str],
) -> SectionDef {
    SectionDef {
        code,
        title,
        heading,
        level,
        entry_types,
    }
}

use Level::{Structured, Top};

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
        &["Organization", "Practitioner"],
    ),
    def(
        "920",
        "紹介元情報",
        "紹介元",
        Top,
        &["Organization", "Practitioner"],
    ),
    def("200", "CDA参照", "CDA参照", Top, DOCREF),
    def("300", "構造情報", "構造情報", Top, &[]),
    // 診療情報提供書 (under 300)
    def("950", "紹介目的", "紹介目的", Structured, ENCOUNTER),
    def("340", "傷病名・主訴", "傷病名・主訴", Structured, CONDITION),
    // 退院時サマリー (under 300)
    def("322", "入院時詳細", "入院時詳細", Structured, ENCOUNTER),
    def("312", "入院理由", "入院理由", Structured, ENCOUNTER),
    def("352", "主訴", "主訴", Structured, CONDITION),
    def("342", "入院時診断", "入院時診断", Structured, CONDITION),
    // common
    def("360", "現病歴", "現病歴", Structured, CONDITION),
    // 362, 372, 552, 642: the 退院時サマリー codes of the standard (and of the
    // JP-CLINS summary profile's slices) for 現病歴, 既往歴, 家族歴, 社会歴.
    def("362", "現病歴", "現病歴", Structured, CONDITION),
    def("370", "既往歴", "既往歴", Structured, CONDITION),
    def("372", "既往歴", "既往歴", Structured, CONDITION),
    def(
        "510",
        "アレルギー・不耐性反応",
        "アレルギー・不耐性反応",
        Structured,
        &["AllergyIntolerance"],
    ),
    def("520", "感染症情報", "感染症", Structured, OBSERVATION),
    def(
        "550",
        "家族歴",
        "家族歴",
        Structured,
        &["FamilyMemberHistory"],
    ),
    def(
        "552",
        "家族歴",
        "家族歴",
        Structured,
        &["FamilyMemberHistory"],
    ),
    def(
        "640",
        "社会歴・生活習慣",
        "社会歴・生活習慣",
        Structured,
        OBSERVATION,
    ),
    def(
        "642",
        "社会歴・生活習慣",
        "社会歴・生活習慣",
        Structured,
        OBSERVATION,
    ),
    def(
        "530",
        "予防接種歴",
        "予防接種歴",
        Structured,
        &["Immunization"],
    ),
    def("610", "身体所見", "身体所見", Structured, OBSERVATION),
    def(
        "612",
        "入院時身体所見",
        "入院時身体所見",
        Structured,
        OBSERVATION,
    ),
    def(
        "432",
        "入院時服薬",
        "入院時服薬（処方）",
        Structured,
        MEDICATION,
    ),
    def(
        "430",
        "投薬指示",
        "処方（投薬指示）",
        Structured,
        MEDICATION,
    ),
    def(
        "620",
        "検査結果",
        "検査結果",
        Structured,
        &["Observation", "ImagingStudy", "DiagnosticReport"],
    ),
    def(
        "623",
        "入院中検査結果",
        "検査結果（入院中）",
        Structured,
        STUDY,
    ),
    def("720", "処置", "処置", Structured, PROCEDURE),
    def("730", "手術", "手術", Structured, PROCEDURE),
    def("740", "輸血歴", "輸血歴", Structured, PROCEDURE),
    def("713", "入院中治療", "入院中治療", Structured, PROCEDURE),
    def("330", "臨床経過", "臨床経過", Structured, DOCREF),
    def("333", "入院中経過", "入院中経過", Structured, DOCREF),
    def("324", "退院時詳細", "退院時詳細", Structured, ENCOUNTER),
    def("344", "退院時診断", "退院時診断", Structured, CONDITION),
    def(
        "614",
        "退院時身体所見",
        "退院時身体所見",
        Structured,
        OBSERVATION,
    ),
    def(
        "444",
        "退院時投薬指示",
        "退院時投薬（処方）",
        Structured,
        &["MedicationRequest", "MedicationStatement", "Bundle"],
    ),
    def("424", "退院時方針指示", "退院時方針", Structured, CAREPLAN),
    def("420", "診療方針指示", "診療方針", Structured, CAREPLAN),
    def(
        "810",
        "医療機器",
        "医療機器",
        Structured,
        &["DeviceUseStatement", "Device"],
    ),
    def("410", "事前指示", "事前指示", Structured, &["Consent"]),
    def(
        "830",
        "臨床研究参加",
        "臨床研究参加",
        Structured,
        &["ResearchSubject", "ResearchStudy"],
    ),
    def(
        "210",
        "添付情報",
        "添付",
        Top,
        &["DocumentReference", "Bundle"],
    ),
    def("230", "PDF", "PDF", Top, DOCREF),
    def("220", "備考・連絡情報", "備考・連絡", Top, DOCREF),
];

/// The field of the renkei form ([`super::Form`], or for a PDF letter
/// [`super::LetterForm`]) that writes a section, for pointing at it when the
/// section has a problem: "950" → `purpose`.
pub fn form_field(code: &str, referral_type: bool) -> Option<&'static str> {
    Some(match code {
        "920" => "from",
        "910" => "to",
        "950" => "purpose",
        "340" | "342" => "diagnoses",
        "352" => "chief_complaint",
        "360" | "362" => "present_illness",
        "370" | "372" => "past_history",
        "510" => "allergies",
        "520" => "infections",
        "550" | "552" => "family_history",
        "610" | "612" => "physical_findings",
        "430" | "432" => "medications",
        "620" | "623" => "lab_results",
        "330" => "clinical_course",
        "420" => "plan",
        "220" => "remarks",
        "210" => "attachments",
        "230" => "letter",
        "322" => "discharge.admitted",
        "324" => "discharge.discharged",
        "312" => "discharge.reason",
        "333" => "discharge.course",
        "344" => "discharge.diagnoses",
        "444" => "discharge.medications",
        "424" => "discharge.plan",
        _ => return None,
    })
    .filter(|f| {
        referral_type || !matches!(*f, "purpose" | "infections" | "clinical_course" | "plan")
    })
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
    fn table_has_unique_codes() {
        let mut seen = std::collections::HashSet::new();
        for s in SECTIONS {
            assert!(seen.insert(s.code), "duplicate {}", s.code);
            assert_eq!(s.code.len(), 3);
        }
        assert_eq!(label("950"), "950 紹介目的");
        assert_eq!(label("362"), "362 現病歴");
        assert_eq!(label("999"), "999");
        assert_eq!(section("920").unwrap().display(), "紹介元情報セクション");
    }

    #[test]
    fn sections_point_at_their_form_fields() {
        assert_eq!(form_field("950", true), Some("purpose"));
        assert_eq!(form_field("362", false), Some("present_illness"));
        assert_eq!(form_field("344", false), Some("discharge.diagnoses"));
        assert_eq!(form_field("230", true), Some("letter"));
        assert_eq!(form_field("300", true), None);
        assert_eq!(form_field("420", false), None);
    }
}
