//! Sealing: stream members into a tar, sign the manifest, encrypt with age.

use std::io::{self, Read, Write};

use super::manifest::{Manifest, MemberEntry, RecipientEntry, SenderEntry};
use super::{header, payload};
use super::{
    path, Limits, PackageKind, DOCUMENT_PATH, MANIFEST_PATH, SENDER_CERT_PATH, SIGNATURE_PATH,
};
use crate::document::{self, DocKind, Expect, Issue, Summary};
use crate::keys::SigningKey;
use crate::pki::CertInfo;

/// Why sealing failed. Nothing usable was written when this is returned;
/// the caller discards its output.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading a member or writing the output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A member's name is not allowed.
    #[error("attachment name {0:?} is not allowed ({1})")]
    BadName(String, &'static str),
    /// Two members with one name (compared ignoring case and Unicode normalization).
    #[error("two members are named {0:?} (names are compared ignoring upper and lower case); rename one attachment")]
    Duplicate(String),
    /// A member changed size while it was being read (the bytes read, or
    /// one more than expected when it grew).
    #[error("{0} changed while it was being sealed (expected {1} bytes, read {2}); try again")]
    SizeChanged(String, u64, u64),
    /// Too many or too large members.
    #[error("{0}")]
    TooLarge(String),
    /// A certificate is not a facility certificate.
    #[error(transparent)]
    Cert(#[from] crate::pki::CertError),
    /// age refused the recipients.
    #[error("could not encrypt: {0}")]
    Encrypt(String),
    /// The document is not a valid JP-CLINS document for this package
    /// (see [`document::validate()`]); every problem is listed.
    #[error("the document is not valid for this package; nothing was sealed:\n{}", list_issues(.0))]
    Document(Vec<Issue>),
}

/// One issue per line, indented, for error messages.
pub(crate) fn list_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {}", i.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One member to seal: its path in the package, media type, exact size and
/// a reader for its content.
pub struct MemberSource<'a> {
    /// Path inside the package (`document.json` or `attachments/NAME`).
    pub path: String,
    /// Media type.
    pub media_type: String,
    /// Exact size in bytes.
    pub size: u64,
    /// The content.
    pub reader: Box<dyn Read + Send + 'a>,
}

/// Everything needed to seal one package.
pub struct SealRequest<'a> {
    /// The sender's signing key.
    pub sender_key: &'a SigningKey,
    /// The sender's certificate (must match the key).
    pub sender_cert: &'a CertInfo,
    /// Also encrypt to the sender's own recipient.
    pub sender_copy: bool,
    /// Verified recipient certificates.
    pub recipients: &'a [CertInfo],
    /// Package kind.
    pub kind: PackageKind,
    /// Thread ID; a new thread when `None`.
    pub thread_id: Option<String>,
    /// The package this answers.
    pub in_reply_to: Option<String>,
    /// The clinical document (`document.json`).
    pub document: MemberSource<'a>,
    /// Attachments (`attachments/NAME`).
    pub attachments: Vec<MemberSource<'a>>,
    /// Bounds.
    pub limits: Limits,
}

/// The result of sealing.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The signed manifest.
    pub manifest: Manifest,
    /// SHA-256 of the ciphertext: the envelope ID.
    pub envelope_id: [u8; 32],
    /// Size of the ciphertext.
    pub ciphertext_size: u64,
    /// What the (validated) document says.
    pub summary: Summary,
}

/// Seal a package into `out`.
pub fn seal<W: Write + Send>(mut req: SealRequest<'_>, out: W) -> Result<Sealed, SealError> {
    let sender_id = req.sender_cert.facility_id()?.clone();
    if req.sender_cert.signing_key != req.sender_key.public_key() {
        return Err(SealError::Encrypt(
            "the profile's certificate does not match its signing key; install the certificate issued for this key".into(),
        ));
    }
    // Thread and reply IDs are written in their one canonical form.
    for (what, v) in [
        ("thread", &mut req.thread_id),
        ("in-reply-to", &mut req.in_reply_to),
    ] {
        if let Some(id) = v {
            *id = super::canonical_id(id).ok_or_else(|| {
                SealError::Encrypt(format!("the {what} ID {id:?} is not a package ID (a UUID)"))
            })?;
        }
    }
    if req.document.size > req.limits.max_member_bytes {
        return Err(SealError::TooLarge(format!(
            "the document is larger than {} bytes",
            req.limits.max_member_bytes
        )));
    }
    if req.recipients.is_empty() {
        return Err(SealError::Encrypt("no recipients".into()));
    }
    let mut recipients = Vec::new();
    let mut age_recipients: Vec<age::x25519::Recipient> = Vec::new();
    for c in req.recipients {
        let id = c.facility_id()?.clone();
        if recipients
            .iter()
            .any(|r: &RecipientEntry| r.facility_id == id)
        {
            continue;
        }
        let r = c.recipient()?;
        recipients.push(RecipientEntry {
            facility_id: id,
            age_recipient: r.to_string(),
        });
        age_recipients.push(r);
    }
    if req.sender_copy && !recipients.iter().any(|r| r.facility_id == sender_id) {
        age_recipients.push(req.sender_cert.recipient()?);
    }
    let count = 2 + 1 + 1 + req.attachments.len();
    if count > req.limits.max_members {
        return Err(SealError::TooLarge(format!(
            "{} attachments are more than a package may hold ({})",
            req.attachments.len(),
            req.limits.max_members - 4
        )));
    }
    // Names are compared case-folded: two names that one desk's file
    // system would take for one file are one name.
    let mut names = vec![path::fold(DOCUMENT_PATH), path::fold(SENDER_CERT_PATH)];
    let mut total = req.document.size;
    for a in &req.attachments {
        path::check(&a.path).map_err(|why| SealError::BadName(a.path.clone(), why))?;
        let folded = path::fold(&a.path);
        if names.contains(&folded) {
            return Err(SealError::Duplicate(a.path.clone()));
        }
        names.push(folded);
        if a.size > req.limits.max_member_bytes {
            return Err(SealError::TooLarge(format!(
                "{} is larger than {} bytes",
                a.path, req.limits.max_member_bytes
            )));
        }
        total += a.size;
    }
    if total > req.limits.max_total_bytes {
        return Err(SealError::TooLarge(format!(
            "the package would exceed {} bytes",
            req.limits.max_total_bytes
        )));
    }

    // Validate the document against what the package will say before a
    // byte is written: sender, recipients, attachments, kind, in-reply-to.
    let doc_bytes = read_document(req.document.reader, req.document.size)?;
    let expect = Expect {
        sender: Some((&sender_id).into()),
        recipients: recipients.iter().map(|r| (&r.facility_id).into()).collect(),
        attachment_members: Some(req.attachments.iter().map(|a| a.path.clone()).collect()),
        kind: DocKind::try_from(req.kind).ok(),
        in_reply_to: req.in_reply_to.clone(),
    };
    let summary = document::validate(&doc_bytes, &expect).map_err(SealError::Document)?;
    let doc = MemberSource {
        path: DOCUMENT_PATH.to_string(),
        media_type: req.document.media_type,
        size: doc_bytes.len() as u64,
        reader: Box::new(io::Cursor::new(doc_bytes)),
    };

    let package_id = uuid::Uuid::new_v4().to_string();
    let created = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is valid");
    let mtime = created.unix_timestamp().max(0) as u64;
    // age v1: our own header (the age crate wraps the file key for each
    // recipient) and our own STREAM payload: this thread writes the tar
    // and hashes the members beside the ciphertext, two more seal and write.
    let file_key = header::new_file_key();
    let to: Vec<&dyn age::Recipient> = age_recipients
        .iter()
        .map(|r| r as &dyn age::Recipient)
        .collect();
    let head = header::write(&file_key, &to).map_err(SealError::Encrypt)?;
    // The encryptor hashes everything it writes: the envelope ID.
    let sealed = payload::encrypt(out, &file_key, &head, |stream| {
        write_members(
            stream,
            mtime,
            doc,
            req.attachments,
            req.sender_cert,
            |members| Manifest {
                format: super::FORMAT.into(),
                package_id: package_id.clone(),
                kind: req.kind,
                created: created
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("formattable"),
                sender: SenderEntry {
                    facility_id: sender_id,
                    name: req.sender_cert.name.clone(),
                    cert_sha256: req.sender_cert.fingerprint.clone(),
                },
                recipients,
                sender_copy: req.sender_copy,
                thread_id: req.thread_id.unwrap_or(package_id.clone()),
                in_reply_to: req.in_reply_to,
                members,
            },
            req.sender_key,
        )
    })?;
    drop(file_key);
    let mut out = sealed.out;
    out.flush()?;
    Ok(Sealed {
        manifest: sealed.value,
        envelope_id: sealed.sha256,
        ciphertext_size: sealed.size,
        summary,
    })
}

/// The inner tar stream, written into `stream`: the document, the
/// attachments, the sender's certificate (each hashed as it passes), then
/// the manifest that `manifest` makes from their entries, and its
/// signature.
fn write_members(
    stream: &mut payload::Encryptor,
    mtime: u64,
    doc: MemberSource<'_>,
    attachments: Vec<MemberSource<'_>>,
    sender_cert: &CertInfo,
    manifest: impl FnOnce(Vec<MemberEntry>) -> Manifest,
    sender_key: &SigningKey,
) -> Result<Manifest, SealError> {
    let mut members = Vec::new();
    let mut append = |m: MemberSource<'_>| -> Result<MemberEntry, SealError> {
        stream.write_all(&member_header(&m.path, m.size, mtime)?)?;
        // Straight from the member into the batch, hashed there.
        let mut reader = m.reader;
        let (n, sha256) = stream.write_from(&mut (&mut reader).take(m.size))?;
        if n != m.size {
            return Err(SealError::SizeChanged(m.path, m.size, n));
        }
        // A file that grew while it was read is not sealed cut short.
        if reader.read(&mut [0u8; 1])? != 0 {
            return Err(SealError::SizeChanged(m.path, m.size, m.size + 1));
        }
        stream.write_all(&[0u8; BLOCK][..padding(n)])?;
        Ok(MemberEntry {
            path: m.path,
            media_type: m.media_type,
            size: n,
            sha256: hex::encode(sha256),
        })
    };

    members.push(append(doc)?);
    for a in attachments {
        members.push(append(a)?);
    }
    let cert_pem = sender_cert.pem().into_bytes();
    members.push(append(MemberSource {
        path: SENDER_CERT_PATH.into(),
        media_type: "application/pem-certificate-chain".into(),
        size: cert_pem.len() as u64,
        reader: Box::new(io::Cursor::new(cert_pem)),
    })?);

    let manifest = manifest(members);
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("serializable");
    let sig = sender_key.sign(&Manifest::signed_message(&manifest_bytes));
    for (p, bytes) in [
        (MANIFEST_PATH, &manifest_bytes[..]),
        (SIGNATURE_PATH, &sig[..]),
    ] {
        stream.write_all(&member_header(p, bytes.len() as u64, mtime)?)?;
        stream.write_all(bytes)?;
        stream.write_all(&[0u8; BLOCK][..padding(bytes.len() as u64)])?;
    }
    // The end of the archive: two zero blocks.
    stream.write_all(&[0u8; 2 * BLOCK])?;
    Ok(manifest)
}

/// Bytes of a tar block.
const BLOCK: usize = 512;

/// Zero bytes that complete `n` bytes of member data to whole blocks.
fn padding(n: u64) -> usize {
    (BLOCK - (n % BLOCK as u64) as usize) % BLOCK
}

/// The tar records that introduce a member of `size` bytes named `path`:
/// a GNU header (deterministic: mode 0644, the package's time, no owner),
/// preceded by a GNU long-name record when the path does not fit in it,
/// as the tar crate encodes them.
fn member_header(path: &str, size: u64, mtime: u64) -> io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    // No data: the builder writes the header records only (and no
    // padding); its end-of-archive blocks are not taken.
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut header, path, io::empty())?;
    Ok(std::mem::take(b.get_mut()))
}

/// Read the document (declared `size` bytes) into memory, bounded by
/// [`document::MAX_DOCUMENT_BYTES`]: a larger document is read only far
/// enough for [`document::validate()`] to refuse it.
fn read_document(reader: Box<dyn Read + Send + '_>, size: u64) -> Result<Vec<u8>, SealError> {
    let cap = document::MAX_DOCUMENT_BYTES as u64 + 1;
    let mut b = Vec::with_capacity(size.min(cap) as usize);
    reader.take(cap).read_to_end(&mut b)?;
    let n = b.len() as u64;
    if n != size && n < cap {
        return Err(SealError::SizeChanged(DOCUMENT_PATH.into(), size, n));
    }
    Ok(b)
}
