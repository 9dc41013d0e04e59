//! The manifest: what the sender signs.

use serde::{Deserialize, Serialize};

use super::PackageKind;
use crate::identity::FacilityId;

/// The sender as named in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderEntry {
    /// The sender's facility ID.
    pub facility_id: FacilityId,
    /// The sender's name (from its certificate).
    pub name: String,
    /// SHA-256 of the sender's DER certificate, hex.
    pub cert_sha256: String,
}

/// One addressed recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientEntry {
    /// The recipient's facility ID.
    pub facility_id: FacilityId,
    /// The age recipient the package was encrypted to.
    pub age_recipient: String,
}

/// One member of the package (every tar entry except the manifest and its
/// signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// Path inside the package.
    pub path: String,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`super::FORMAT`].
    pub format: String,
    /// Random UUID of this package.
    pub package_id: String,
    /// What the package is.
    pub kind: PackageKind,
    /// When it was sealed (RFC 3339, UTC).
    pub created: String,
    /// Who sealed it.
    pub sender: SenderEntry,
    /// Whom it is addressed to.
    pub recipients: Vec<RecipientEntry>,
    /// Whether the sender also encrypted it to its own age recipient.
    pub sender_copy: bool,
    /// The referral thread (the package ID of the thread's first package).
    pub thread_id: String,
    /// The package this one answers, if any.
    pub in_reply_to: Option<String>,
    /// Every member, in stream order.
    pub members: Vec<MemberEntry>,
}

impl Manifest {
    /// The bytes covered by the signature: the context line, then the exact
    /// manifest bytes.
    pub fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(super::MANIFEST_CONTEXT.len() + manifest_bytes.len());
        m.extend_from_slice(super::MANIFEST_CONTEXT);
        m.extend_from_slice(manifest_bytes);
        m
    }

    /// Parse manifest bytes strictly (unknown fields refused).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.format != super::FORMAT {
            return Err(format!("format {:?} is not {}", m.format, super::FORMAT));
        }
        if !super::is_canonical_id(&m.package_id) || !super::is_canonical_id(&m.thread_id) {
            return Err("package or thread ID is not a lowercase hyphenated UUID".into());
        }
        if let Some(r) = &m.in_reply_to {
            if !super::is_canonical_id(r) {
                return Err("in_reply_to is not a lowercase hyphenated UUID".into());
            }
        }
        if m.recipients.is_empty() {
            return Err("no recipients".into());
        }
        Ok(m)
    }
}
