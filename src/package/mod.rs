//! Sealed packages: sign, then encrypt, then (at submission) sign the
//! ciphertext. See docs/FORMAT.md for the byte layout.
//!
//! The inner plaintext is a tar stream: the document, attachments, the
//! sender's certificate, then `manifest.json` and its detached Ed25519
//! signature `manifest.sig`. The outer layer is a standard age v1 file.

pub mod header;
pub mod manifest;
pub mod open;
pub mod path;
pub mod payload;
pub mod seal;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use manifest::{Manifest, MemberEntry, RecipientEntry, SenderEntry};
pub use open::{open_into, OpenError, Opened};
pub use seal::{seal, MemberSource, SealError, SealRequest, Sealed};

/// The canonical form of a package, thread or reply ID given by a user:
/// any form the `uuid` crate reads (upper case, braces, `urn:uuid:`, no
/// hyphens) parsed and written back lowercase and hyphenated. `None` when
/// `s` is not a UUID.
pub fn canonical_id(s: &str) -> Option<String> {
    uuid::Uuid::try_parse(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Whether `s` is a package ID in its canonical form (lowercase,
/// hyphenated UUID): the only form manifests and documents may carry, so
/// that one package or thread never goes by two names.
pub fn is_canonical_id(s: &str) -> bool {
    canonical_id(s).as_deref() == Some(s)
}

/// The format identifier written into every manifest.
pub const FORMAT: &str = "renkei-package/1";
/// Path of the clinical document inside a package.
pub const DOCUMENT_PATH: &str = "document.json";
/// Path of the sender's certificate.
pub const SENDER_CERT_PATH: &str = "sender.crt";
/// Path of the manifest (second to last entry).
pub const MANIFEST_PATH: &str = "manifest.json";
/// Path of the manifest's signature (last entry).
pub const SIGNATURE_PATH: &str = "manifest.sig";
/// Folder of attachments.
pub const ATTACHMENTS_DIR: &str = "attachments";
/// Domain separation for the manifest signature.
pub const MANIFEST_CONTEXT: &[u8] = b"renkei/v1/manifest\n";

/// Bounds enforced when opening (and, for counts and sizes, when sealing).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries in the tar stream, manifest and signature included.
    pub max_members: usize,
    /// Largest manifest.
    pub max_manifest_bytes: u64,
    /// Largest sender certificate.
    pub max_cert_bytes: u64,
    /// Largest single member.
    pub max_member_bytes: u64,
    /// Largest sum of member sizes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 256,
            max_manifest_bytes: 256 * 1024,
            max_cert_bytes: 16 * 1024,
            max_member_bytes: 8 << 30,
            max_total_bytes: 16 << 30,
        }
    }
}

/// What a package is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PackageKind {
    /// 紹介状 / 診療情報提供書.
    Referral,
    /// 返書: the answer to a referral.
    Reply,
    /// 逆紹介: referring the patient back.
    ReverseReferral,
    /// 転院依頼: transfer to another hospital.
    Transfer,
    /// 退院時サマリー.
    DischargeSummary,
    /// Other clinical information.
    ClinicalInfo,
}

impl PackageKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Referral => "referral",
            PackageKind::Reply => "reply",
            PackageKind::ReverseReferral => "reverse-referral",
            PackageKind::Transfer => "transfer",
            PackageKind::DischargeSummary => "discharge-summary",
            PackageKind::ClinicalInfo => "clinical-info",
        }
    }

    /// The Japanese name.
    pub fn japanese(self) -> &'static str {
        match self {
            PackageKind::Referral => "診療情報提供書（紹介状）",
            PackageKind::Reply => "返書",
            PackageKind::ReverseReferral => "逆紹介",
            PackageKind::Transfer => "転院依頼",
            PackageKind::DischargeSummary => "退院時サマリー",
            PackageKind::ClinicalInfo => "診療情報",
        }
    }
}

impl fmt::Display for PackageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PackageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, false)
            .map_err(|_| format!("unknown package kind {s:?}"))
    }
}

/// The media type for an attachment, from its file name.
pub fn media_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "dcm" => "application/dicom",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    }
}
