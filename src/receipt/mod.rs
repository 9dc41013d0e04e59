//! Signed receipts: small JSON documents with a detached Ed25519 signature
//! over domain-separated bytes (`renkei/v1/<purpose>\n` + exact body bytes).
//! Receipts never contain plaintext: only envelope IDs (SHA-256 of the
//! ciphertext), facility IDs, sizes, times and outcomes.

pub mod bundle;
pub mod key_transition;

pub use bundle::{ReceiptBundle, Verified};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::identity::FacilityId;
use crate::keys::{verify_ed25519, SigningKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Largest receipt body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What every receipt's signed message starts with, before its purpose.
pub const CONTEXT_PREFIX: &str = "renkei/v1/";

/// What a receipt attests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// The sender submitted this ciphertext to these recipients.
    Submission,
    /// The relay stored the ciphertext durably.
    Acceptance,
    /// A recipient opened and verified (or rejected) the package.
    Delivery,
    /// The relay gave up waiting for a recipient.
    Expiry,
}

impl Purpose {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Submission => "submission",
            Purpose::Acceptance => "acceptance",
            Purpose::Delivery => "delivery",
            Purpose::Expiry => "expiry",
        }
    }

    /// The domain-separation prefix: [`CONTEXT_PREFIX`], the purpose, a
    /// newline.
    pub fn context(self) -> String {
        format!("{CONTEXT_PREFIX}{}\n", self.as_str())
    }
}

/// Why a receipt was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// Not parsable, wrong purpose, or too large.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// The signature does not verify with the named signer's key.
    #[error("the receipt's signature does not verify")]
    BadSignature,
}

/// A receipt as stored and exchanged: the exact body text and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// What it attests.
    pub purpose: Purpose,
    /// The exact signed JSON body.
    pub body: String,
    /// Base64 Ed25519 signature over `context || body`.
    pub signature: String,
}

impl SignedReceipt {
    /// Sign a body.
    pub fn sign<T: Serialize>(purpose: Purpose, body: &T, key: &SigningKey) -> SignedReceipt {
        let body = serde_json::to_string(body).expect("serializable");
        let sig = key.sign(&Self::message(purpose, &body));
        SignedReceipt {
            purpose,
            body,
            signature: B64.encode(sig),
        }
    }

    fn message(purpose: Purpose, body: &str) -> Vec<u8> {
        let mut m = Vec::new();
        Self::message_into(purpose, body, &mut m);
        m
    }

    /// Append what is signed: the context, then the body.
    fn message_into(purpose: Purpose, body: &str, m: &mut Vec<u8>) {
        m.extend_from_slice(CONTEXT_PREFIX.as_bytes());
        m.extend_from_slice(purpose.as_str().as_bytes());
        m.push(b'\n');
        m.extend_from_slice(body.as_bytes());
    }

    /// Verify with the signer's Ed25519 key.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<(), ReceiptError> {
        let ok = self.signature_bytes().is_some_and(|sig| {
            verify_ed25519(public_key, &Self::message(self.purpose, &self.body), &sig)
        });
        if ok {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature)
        }
    }

    /// Append what the signature covers (the context, then the body) to
    /// `m`: a checker of many receipts keeps them all in one buffer.
    pub fn signed_message_into(&self, m: &mut Vec<u8>) {
        Self::message_into(self.purpose, &self.body, m);
    }

    /// The signature, decoded; `None` if it is not base64 of 64 bytes
    /// (such a receipt does not verify).
    pub fn signature_bytes(&self) -> Option<[u8; 64]> {
        // Room for more than a signature: anything longer than 64 bytes
        // decodes, or fails, as too long.
        let mut buf = [0u8; 72];
        match B64.decode_slice(&self.signature, &mut buf) {
            Ok(64) => {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(&buf[..64]);
                Some(sig)
            }
            _ => None,
        }
    }

    /// Parse the body as `T`, checking the purpose.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self, want: Purpose) -> Result<T, ReceiptError> {
        if self.purpose != want {
            return Err(ReceiptError::Malformed(format!(
                "a {} receipt, not {}",
                self.purpose.as_str(),
                want.as_str()
            )));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(ReceiptError::Malformed("too large".into()));
        }
        serde_json::from_str(&self.body).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// The envelope this receipt is about (every body has `envelope_id`);
    /// empty when the body does not say.
    pub fn envelope_id(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("envelope_id")
                    .and_then(|e| e.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    /// When the signer says it signed: the body's `submitted_at`,
    /// `accepted_at`, `delivered_at` or `expired_at`. Certificates are
    /// checked as of this time (the receipt's log inclusion anchors it: the
    /// relay logs only what an unrevoked caller sent).
    pub fn signed_at(&self) -> Result<std::time::SystemTime, ReceiptError> {
        let field = match self.purpose {
            Purpose::Submission => "submitted_at",
            Purpose::Acceptance => "accepted_at",
            Purpose::Delivery => "delivered_at",
            Purpose::Expiry => "expired_at",
        };
        let v: serde_json::Value =
            serde_json::from_str(&self.body).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        let t = v
            .get(field)
            .and_then(|t| t.as_str())
            .ok_or_else(|| ReceiptError::Malformed(format!("no {field}")))?;
        let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ReceiptError::Malformed(format!("{field} is not an RFC 3339 time")))?;
        let secs = u64::try_from(t.unix_timestamp())
            .map_err(|_| ReceiptError::Malformed(format!("{field} is before 1970")))?;
        Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    /// SHA-256 of the body bytes, hex (how acceptance refers to submission).
    pub fn body_sha256(&self) -> String {
        crate::pki::sha256_hex(self.body.as_bytes())
    }

    /// Parse a JSON-encoded signed receipt from untrusted bytes.
    pub fn from_json(bytes: &[u8]) -> Result<SignedReceipt, ReceiptError> {
        if bytes.len() > 2 * MAX_BODY_BYTES {
            return Err(ReceiptError::Malformed("too large".into()));
        }
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }
}

/// By the sender: this ciphertext, to these recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// SHA-256 of the ciphertext, hex.
    pub envelope_id: String,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// The sender.
    pub sender: FacilityId,
    /// SHA-256 of the sender's certificate, hex.
    pub sender_cert_sha256: String,
    /// The addressed facilities.
    pub recipients: Vec<FacilityId>,
    /// When (RFC 3339).
    pub submitted_at: String,
}

/// By the relay: stored durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    /// The envelope.
    pub envelope_id: String,
    /// SHA-256 of the submission receipt's body, hex.
    pub submission_sha256: String,
    /// The relay's ID.
    pub relay: String,
    /// When (RFC 3339).
    pub accepted_at: String,
    /// Index of the submission in the relay's receipt log.
    pub log_index: u64,
    /// Seconds the relay keeps the envelope for its recipients: no expiry
    /// receipt for it may be signed before `accepted_at` plus this.
    pub expiry_after_secs: u64,
}

/// Outcome of opening a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Opened and verified.
    Verified,
    /// Refused; see the reason code.
    Rejected,
}

/// By a recipient: opened and verified, or rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The envelope.
    pub envelope_id: String,
    /// The recipient.
    pub recipient: FacilityId,
    /// What happened.
    pub outcome: Outcome,
    /// Reason code when rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub delivered_at: String,
}

/// By the relay: not fetched in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expiry {
    /// The envelope.
    pub envelope_id: String,
    /// The recipient that gave no outcome in time.
    pub recipient: FacilityId,
    /// The relay's ID.
    pub relay: String,
    /// When (RFC 3339).
    pub expired_at: String,
    /// When that recipient first downloaded the ciphertext (RFC 3339), or
    /// `null` when it never did: an expiry says whether the recipient
    /// fetched, it does not claim "not fetched" for one that did.
    pub fetched_at: Option<String>,
}

/// An RFC 3339 time as Unix seconds (`None` if it is not one).
pub fn unix_seconds(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl Acceptance {
    /// The earliest time (Unix seconds) an expiry of this envelope may be
    /// signed: `accepted_at` plus the announced `expiry_after_secs`.
    pub fn earliest_expiry(&self) -> Option<i64> {
        unix_seconds(&self.accepted_at)?.checked_add(i64::try_from(self.expiry_after_secs).ok()?)
    }
}

/// Now, RFC 3339 UTC, whole seconds.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formattable")
}

/// Check an envelope ID: 64 lowercase hex digits.
pub fn valid_envelope_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_entry_parses_the_same_on_the_fast_path_and_the_general_one() {
        let key = SigningKey::generate();
        let r = SignedReceipt::sign(Purpose::Submission, &sub(), &key);
        let text = LogEntry::Receipt {
            signer: "1311234569".into(),
            receipt: r.clone(),
        }
        .to_text();
        assert!(text.starts_with(r#"{"type":"receipt","#), "{text}");
        let receipt = serde_json::to_string(&r).unwrap();
        let unknown = text.replacen(r#""signer""#, r#""note":[1,{"a":2}],"signer""#, 1);
        let tag_last = format!(r#"{{"signer":"1311234569","receipt":{receipt},"type":"receipt"}}"#);
        for accepted in [&text, &unknown, &tag_last] {
            let general: LogEntry = serde_json::from_str(accepted).unwrap();
            assert_eq!(
                LogEntry::parse(accepted.as_bytes()),
                Ok(general),
                "{accepted}"
            );
        }
        // Odd entries (a repeated member or tag, another tag, members
        // missing, trailing bytes, an unknown member of the receipt): both
        // ways give the same answer, and a repeated member is refused.
        let odd = [
            text.replacen(r#""signer""#, r#""signer":"1311234569","signer""#, 1),
            text.replacen(r#""signer""#, r#""type":"receipt","signer""#, 1),
            text.replacen(r#""type":"receipt""#, r#""type":"crl""#, 1),
            r#"{"type":"receipt","signer":"1311234569"}"#.to_string(),
            format!(r#"{{"type":"receipt","receipt":{receipt}}}"#),
            format!("{text} "),
            format!("{text}x"),
            text.replacen(
                r#""purpose":"submission""#,
                r#""purpose":"submission","extra":1"#,
                1,
            ),
        ];
        for bad in &odd {
            let general = serde_json::from_str::<LogEntry>(bad);
            let parsed = LogEntry::parse(bad.as_bytes());
            assert_eq!(parsed.is_ok(), general.is_ok(), "{bad}");
            if let Ok(g) = general {
                assert_eq!(parsed, Ok(g), "{bad}");
            }
        }
        assert!(LogEntry::parse(odd[0].as_bytes()).is_err());
        assert!(LogEntry::parse(odd[1].as_bytes()).is_err());

        // Bytes that are not UTF-8 in a member both ways ignore (found by
        // the `receipt` fuzz target): refused both ways.
        let tag = r#"{"type":"receipt","#;
        let mut not_utf8 = format!(r#"{tag}"note":"ab"#).into_bytes();
        not_utf8.extend_from_slice(&[0x8d, 0xce, 0xcc, 0xce]);
        not_utf8.extend_from_slice(br#"","#);
        not_utf8.extend_from_slice(&text.as_bytes()[tag.len()..]);
        assert!(serde_json::from_slice::<LogEntry>(&not_utf8).is_err());
        assert!(LogEntry::parse(&not_utf8).is_err());
    }

    fn sub() -> Submission {
        Submission {
            envelope_id: "ab".repeat(32),
            size: 10,
            sender: "1311234569".parse().unwrap(),
            sender_cert_sha256: "cd".repeat(32),
            recipients: vec!["1317654323".parse().unwrap()],
            submitted_at: now_rfc3339(),
        }
    }

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = SigningKey::generate();
        let r = SignedReceipt::sign(Purpose::Submission, &sub(), &k);
        r.verify(&k.public_key()).unwrap();
        assert_eq!(
            r.parse::<Submission>(Purpose::Submission).unwrap(),
            sub_with(&r)
        );
        // The same bytes under another purpose do not verify.
        let mut other = r.clone();
        other.purpose = Purpose::Delivery;
        assert_eq!(
            other.verify(&k.public_key()),
            Err(ReceiptError::BadSignature)
        );
        let mut edited = r.clone();
        edited.body = edited.body.replace("\"size\":10", "\"size\":11");
        assert_eq!(
            edited.verify(&k.public_key()),
            Err(ReceiptError::BadSignature)
        );
        assert!(r.verify(&SigningKey::generate().public_key()).is_err());
        assert!(r.parse::<Acceptance>(Purpose::Acceptance).is_err());
    }

    #[test]
    fn only_base64_of_64_bytes_is_a_signature() {
        let k = SigningKey::generate();
        let r = SignedReceipt::sign(Purpose::Submission, &sub(), &k);
        let sig = r.signature_bytes().unwrap();
        assert_eq!(B64.encode(sig), r.signature);
        // What the signature covers is the context, then the body.
        let mut m = Vec::new();
        r.signed_message_into(&mut m);
        assert_eq!(
            m,
            [Purpose::Submission.context().as_bytes(), r.body.as_bytes()].concat()
        );
        for bad in [
            String::new(),
            "not base64!".to_string(),
            B64.encode([7u8; 63]),
            B64.encode([7u8; 65]),
            B64.encode([7u8; 72]),
            B64.encode([7u8; 200]),
            format!("{} ", r.signature),
        ] {
            let mut x = r.clone();
            x.signature = bad.clone();
            assert_eq!(x.signature_bytes(), None, "{bad:?}");
            assert_eq!(x.verify(&k.public_key()), Err(ReceiptError::BadSignature));
        }
    }

    fn sub_with(r: &SignedReceipt) -> Submission {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn malformed_receipts_are_refused() {
        for bad in [
            &b""[..],
            b"{}",
            b"[]",
            b"{\"purpose\":\"x\",\"body\":\"\",\"signature\":\"\"}",
        ] {
            assert!(SignedReceipt::from_json(bad).is_err());
        }
        let huge = vec![b' '; 64 * 1024];
        assert!(SignedReceipt::from_json(&huge).is_err());
        let r = SignedReceipt {
            purpose: Purpose::Submission,
            body: "{\"envelope_id\":1}".into(),
            signature: String::new(),
        };
        assert!(r.parse::<Submission>(Purpose::Submission).is_err());
    }

    proptest::proptest! {
        #[test]
        fn receipt_json_round_trip(size in 0u64..u64::MAX, reason in proptest::option::of("[a-z-]{1,20}")) {
            let k = SigningKey::generate();
            let d = Delivery { envelope_id: "0f".repeat(32), recipient: "1317654323".parse().unwrap(), outcome: if reason.is_some() { Outcome::Rejected } else { Outcome::Verified }, reason, delivered_at: now_rfc3339() };
            let r = SignedReceipt::sign(Purpose::Delivery, &d, &k);
            let back = SignedReceipt::from_json(&serde_json::to_vec(&r).unwrap()).unwrap();
            proptest::prop_assert_eq!(&back, &r);
            proptest::prop_assert_eq!(back.parse::<Delivery>(Purpose::Delivery).unwrap(), d);
            let mut s = sub(); s.size = size;
            let r = SignedReceipt::sign(Purpose::Submission, &s, &k);
            proptest::prop_assert_eq!(r.parse::<Submission>(Purpose::Submission).unwrap(), s);
        }
    }
}

/// One leaf of the relay's transparency log: a receipt, or a change of the
/// directory (a certificate or a CRL published). The leaf hash covers the
/// exact JSON text of the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LogEntry {
    /// A signed receipt and who signed it (facility or relay ID).
    Receipt {
        /// The signer's ID.
        signer: String,
        /// The receipt.
        receipt: SignedReceipt,
    },
    /// A facility published its certificate.
    Certificate {
        /// The facility.
        facility_id: String,
        /// The certificate, PEM.
        certificate: String,
        /// When (RFC 3339).
        published_at: String,
    },
    /// A CRL was published.
    Crl {
        /// Its CRL number.
        crl_number: String,
        /// The CRL, PEM.
        crl: String,
        /// When (RFC 3339).
        published_at: String,
    },
    /// The log's checkpoint key changes (docs/LOG.md §8; checked by
    /// [`key_transition::KeyTransition::parse`]).
    KeyTransition {
        /// The log's origin.
        origin: String,
        /// The verifier key that signed checkpoints before.
        old_key: String,
        /// The verifier key that signs checkpoints after.
        new_key: String,
        /// When (RFC 3339).
        announced_at: String,
    },
}

impl LogEntry {
    /// The exact entry text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }

    /// Parse an entry from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<LogEntry, ReceiptError> {
        if bytes.len() > crate::log::tiles::MAX_ENTRY_BYTES {
            return Err(ReceiptError::Malformed("log entry too large".into()));
        }
        // Nearly every entry is a receipt written by the relay, with its
        // tag first: read it straight into its fields. serde's tagged enum
        // (below) first copies every entry into a generic tree to find the
        // tag, which cost an auditor more than parsing itself. The struct
        // accepts exactly what the enum's variant does (unknown members
        // ignored, a repeated member refused); anything it refuses goes
        // the general way, which then gives the error. The enum's tree
        // holds every string, so it refuses bytes that are not UTF-8 even
        // in a member it then ignores; the struct skips such a member
        // unread, hence the check first.
        if bytes.starts_with(br#"{"type":"receipt","#) {
            let text = std::str::from_utf8(bytes).ok();
            if let Some(Ok(e)) = text.map(serde_json::from_str::<ReceiptEntry>) {
                return Ok(LogEntry::Receipt {
                    signer: e.signer,
                    receipt: e.receipt,
                });
            }
        }
        let e: LogEntry =
            serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        if matches!(e, LogEntry::KeyTransition { .. }) {
            key_transition::KeyTransition::parse(bytes)
                .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        }
        Ok(e)
    }
}

/// [`LogEntry::Receipt`] with its tag as a member, for
/// [`LogEntry::parse`].
#[derive(Deserialize)]
struct ReceiptEntry {
    /// "receipt" (checked by the caller: the entry starts with it).
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    signer: String,
    receipt: SignedReceipt,
}
