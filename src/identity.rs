//! Who is who in a region: facility IDs (Japanese medical institution codes),
//! service IDs for the relay and auditors, and the kinds of principal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a facility or service ID was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Not exactly ten ASCII digits.
    #[error("facility ID {0:?} must be exactly 10 digits (都道府県番号 2 + 点数表番号 1 + 医療機関コード 7)")]
    Shape(String),
    /// The prefecture number is not 01..=47.
    #[error("facility ID {0}: prefecture number {1:02} is not between 01 and 47")]
    Prefecture(String, u8),
    /// The fee-schedule digit is not one issued to medical institutions.
    #[error("facility ID {0}: 点数表番号 {1} is not 1 (医科), 3 (歯科), 4 (調剤) or 6 (訪問看護)")]
    Table(String, u8),
    /// The last digit is not the check digit of the other nine.
    #[error(
        "facility ID {0}: check digit is {1}, expected {2}; check the code for a typing error"
    )]
    CheckDigit(String, u8, u8),
    /// A service ID that is not a short lowercase slug with a letter.
    #[error("service ID {0:?} must be 1 to 32 characters of a-z, 0-9 and '-', with at least one letter (so that it never looks like a facility code)")]
    Service(String),
}

/// A 10-digit Japanese medical institution code (医療機関コード with its
/// prefecture and fee-schedule digits), validated in form and check digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FacilityId(String);

impl FacilityId {
    /// The ten digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The check digit for the first nine digits: weights 2 and 1 from the
    /// rightmost digit, two-digit products summed digit by digit, then
    /// `(10 - sum mod 10) mod 10` (the Luhn scheme used by 医療機関コード).
    pub fn check_digit(nine: &[u8]) -> u8 {
        let mut sum = 0u32;
        for (i, d) in nine.iter().rev().enumerate() {
            let w = if i % 2 == 0 { 2 } else { 1 };
            let p = u32::from(*d) * w;
            sum += p / 10 + p % 10;
        }
        ((10 - sum % 10) % 10) as u8
    }
}

impl FromStr for FacilityId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Shape(s.chars().take(40).collect()));
        }
        let d: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
        let pref = d[0] * 10 + d[1];
        if !(1..=47).contains(&pref) {
            return Err(IdError::Prefecture(s.to_string(), pref));
        }
        if ![1, 3, 4, 6].contains(&d[2]) {
            return Err(IdError::Table(s.to_string(), d[2]));
        }
        let want = Self::check_digit(&d[..9]);
        if d[9] != want {
            return Err(IdError::CheckDigit(s.to_string(), d[9], want));
        }
        Ok(FacilityId(s.to_string()))
    }
}

impl TryFrom<String> for FacilityId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<FacilityId> for String {
    fn from(f: FacilityId) -> String {
        f.0
    }
}

impl fmt::Display for FacilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FacilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FacilityId({})", self.0)
    }
}

/// What a certificate holder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A clinic (診療所, かかりつけ医).
    Clinic,
    /// A hospital.
    Hospital,
    /// A regional medical care support hospital (地域医療支援病院), the core hospital of a region.
    RegionalSupportHospital,
    /// A recovery-phase rehabilitation hospital (回復期病院).
    RecoveryHospital,
    /// A pharmacy (薬局).
    Pharmacy,
    /// A home-visit nursing station (訪問看護ステーション).
    VisitingNursing,
    /// The relay server of the region.
    Relay,
    /// An auditor of the region's log.
    Auditor,
}

impl Kind {
    /// All kinds, in a stable order.
    pub const ALL: [Kind; 8] = [
        Kind::Clinic,
        Kind::Hospital,
        Kind::RegionalSupportHospital,
        Kind::RecoveryHospital,
        Kind::Pharmacy,
        Kind::VisitingNursing,
        Kind::Relay,
        Kind::Auditor,
    ];

    /// The kebab-case name used in certificates, files and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Clinic => "clinic",
            Kind::Hospital => "hospital",
            Kind::RegionalSupportHospital => "regional-support-hospital",
            Kind::RecoveryHospital => "recovery-hospital",
            Kind::Pharmacy => "pharmacy",
            Kind::VisitingNursing => "visiting-nursing",
            Kind::Relay => "relay",
            Kind::Auditor => "auditor",
        }
    }

    /// True for medical facilities (which exchange packages), false for the
    /// relay and auditors.
    pub fn is_facility(self) -> bool {
        !matches!(self, Kind::Relay | Kind::Auditor)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

/// The identity a certificate binds: a facility by its code, or a service
/// (relay, auditor) by a short operator-assigned slug.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PrincipalId {
    /// A medical facility.
    Facility(FacilityId),
    /// A relay or auditor.
    Service(String),
}

impl PrincipalId {
    /// Parse an ID for a holder of `kind`: a facility kind takes a valid
    /// 10-digit code (check digit included); the relay and auditors take
    /// a slug with at least one letter, so that no service ID can ever be
    /// mistaken for a facility code where IDs travel as strings (receipt
    /// signers, log entries).
    pub fn parse(kind: Kind, s: &str) -> Result<Self, IdError> {
        if kind.is_facility() {
            Ok(PrincipalId::Facility(s.parse()?))
        } else if !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().any(|b| b.is_ascii_lowercase())
        {
            Ok(PrincipalId::Service(s.to_string()))
        } else {
            Err(IdError::Service(s.chars().take(40).collect()))
        }
    }

    /// The URI placed in the certificate's subjectAltName.
    pub fn uri(&self, kind: Kind) -> String {
        match self {
            PrincipalId::Facility(f) => format!("urn:renkei:facility:{f}"),
            PrincipalId::Service(s) => format!("urn:renkei:{}:{s}", kind.as_str()),
        }
    }

    /// The facility ID, if this is a facility.
    pub fn facility(&self) -> Option<&FacilityId> {
        match self {
            PrincipalId::Facility(f) => Some(f),
            PrincipalId::Service(_) => None,
        }
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalId::Facility(id) => id.fmt(f),
            PrincipalId::Service(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_checks() {
        // A published example of a 10-digit code (Hokkaido, 医科).
        assert!("0110113719".parse::<FacilityId>().is_ok());
        assert_eq!(
            "0110113718".parse::<FacilityId>(),
            Err(IdError::CheckDigit("0110113718".into(), 8, 9))
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        for bad in [
            "",
            "123",
            "01101137190",
            "01101137a9",
            "４８１０１１３７１９",
        ] {
            assert!(
                matches!(bad.parse::<FacilityId>(), Err(IdError::Shape(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "4810113719".parse::<FacilityId>(),
            Err(IdError::Prefecture(_, 48))
        ));
        assert!(matches!(
            "0010113719".parse::<FacilityId>(),
            Err(IdError::Prefecture(_, 0))
        ));
        assert!(matches!(
            "0120113719".parse::<FacilityId>(),
            Err(IdError::Table(_, 2))
        ));
    }

    #[test]
    fn service_ids() {
        assert!(PrincipalId::parse(Kind::Relay, "relay-1").is_ok());
        assert!(PrincipalId::parse(Kind::Relay, "Relay 1").is_err());
        assert!(PrincipalId::parse(Kind::Hospital, "relay-1").is_err());
    }

    #[test]
    fn service_ids_never_look_like_facility_codes() {
        for kind in [Kind::Relay, Kind::Auditor] {
            for id in ["1311234569", "0110113719", "1234", "0", "13-11", "-"] {
                assert_eq!(
                    PrincipalId::parse(kind, id),
                    Err(IdError::Service(id.into())),
                    "{kind} {id}"
                );
            }
            assert!(PrincipalId::parse(kind, "a1311234569").is_ok());
        }
        // And a facility kind takes only a code with its check digit.
        for kind in Kind::ALL.into_iter().filter(|k| k.is_facility()) {
            assert!(PrincipalId::parse(kind, "1311234569").is_ok());
            assert!(matches!(
                PrincipalId::parse(kind, "1311234568"),
                Err(IdError::CheckDigit(..))
            ));
            assert!(PrincipalId::parse(kind, "audit-1").is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn every_nine_digits_have_one_valid_check_digit(pref in 1u8..=47, table in proptest::sample::select(vec![1u8, 3, 4, 6]), rest in 0u32..1_000_000) {
            let nine = format!("{pref:02}{table}{rest:06}");
            let digits: Vec<u8> = nine.bytes().map(|b| b - b'0').collect();
            let valid: Vec<u8> = (0..10).filter(|c| format!("{nine}{c}").parse::<FacilityId>().is_ok()).collect();
            proptest::prop_assert_eq!(valid, vec![FacilityId::check_digit(&digits)]);
        }
    }
}
