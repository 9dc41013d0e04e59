//! Opening: decrypt, stream members to a staging folder while hashing them,
//! then verify everything before the caller releases the folder.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use super::header::{self, HeaderError};
use super::manifest::Manifest;
use super::payload;
use super::{path, Limits, DOCUMENT_PATH, MANIFEST_PATH, SENDER_CERT_PATH, SIGNATURE_PATH};
use crate::document::{self, Expect, Issue, Summary};
use crate::identity::FacilityId;
use crate::keys::{verify_ed25519, AgeIdentity};
use crate::pki::{CertError, CertInfo, TrustStore};
use crate::writeback::WriteBehind;

/// Why a package was not opened. Every variant but [`OpenError::Io`] means
/// the package failed verification; nothing from it may be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Local I/O failed (disk full, permissions): not a verdict on the package.
    #[error("{0}")]
    Io(io::Error),
    /// The age layer did not decrypt or authenticate: altered, truncated, or
    /// not an age file. One opaque variant for all such failures.
    #[error("the package is damaged or was altered in transit (decryption failed); ask the sender to send it again")]
    Damaged,
    /// The age header is longer than [`header::MAX_HEADER_BYTES`]: refused
    /// before any parsing or decryption (an honest sealer writes a few
    /// hundred bytes per recipient).
    #[error("the package's age header is longer than {} bytes; it was refused unread. It was not made by renkei or age: do not use it, and ask the sender to send it again", header::MAX_HEADER_BYTES)]
    HeaderTooLong,
    /// None of this facility's keys can decrypt it.
    #[error("this package was not encrypted for this facility")]
    NotEncryptedForUs,
    /// Decrypted, but this facility is not among the signed recipients.
    #[error("this package is addressed to {addressed}, not to this facility ({me}); it may have been forwarded. Do not use it; report it to the sender {sender}")]
    NotAddressedToUs {
        /// This facility.
        me: String,
        /// The signed recipients.
        addressed: String,
        /// The sender.
        sender: String,
    },
    /// The age header carries more (or fewer) ways to the file key than the
    /// sender signed for: someone the manifest does not name may be able to
    /// read the package.
    #[error("the package is encrypted for {found} but the sender signed for {signed} (its recipients and its own copy); a reader not named in the manifest may be able to read it. Do not use it; report it to the sender")]
    UnexpectedRecipients {
        /// What the age header holds, in words.
        found: String,
        /// How many readers the manifest accounts for.
        signed: usize,
    },
    /// The inner structure is wrong (unsafe path, wrong entry type, order,
    /// duplicates, limits, missing manifest).
    #[error("the package is malformed: {0}")]
    Malformed(String),
    /// The sender certificate is not acceptable.
    #[error("the sender's certificate is not acceptable: {0}")]
    Sender(CertError),
    /// The manifest signature does not verify.
    #[error(
        "the sender's signature on the manifest does not verify; the package was altered or forged"
    )]
    BadSignature,
    /// A member differs from the manifest.
    #[error("member {path} does not match the signed manifest ({why})")]
    MemberMismatch {
        /// Member path.
        path: String,
        /// Size or hash.
        why: String,
    },
    /// A member listed in the manifest is absent.
    #[error("member {0} is listed in the manifest but missing from the package")]
    MissingMember(String),
    /// A member is present but not in the manifest.
    #[error("member {0} is in the package but not in the signed manifest")]
    ExtraMember(String),
    /// A package with this package ID was already received here (from
    /// another envelope): a replayed or re-sealed copy is refused.
    #[error("package {package_id} was already received here (envelope {first_envelope}); this second copy is refused")]
    Replayed {
        /// The package ID.
        package_id: String,
        /// The envelope it first arrived in.
        first_envelope: String,
    },
    /// The facility that submitted the envelope to the relay is not the
    /// package's signed sender: a recipient re-encrypted a package it
    /// received and passed it off as its own.
    #[error("envelope submitted by {submitted_by} carries a package signed by {signed_by}; a recipient may have re-sent someone else's package. Do not use it")]
    SenderMismatch {
        /// Who submitted the envelope (its signed submission).
        submitted_by: String,
        /// Who signed the manifest.
        signed_by: String,
    },
    /// The package is genuine but its document is not a valid JP-CLINS
    /// document for it (see [`document::validate()`]); never empty.
    #[error("the document in the package is not valid; do not use it, and tell the sender:\n{}", super::seal::list_issues(.0))]
    Document(Vec<Issue>),
}

impl OpenError {
    /// True when the package itself failed verification (as opposed to a
    /// local I/O failure).
    pub fn is_verification_failure(&self) -> bool {
        !matches!(self, OpenError::Io(_))
    }

    /// A short stable reason code (for delivery receipts and JSON output).
    pub fn reason_code(&self) -> &'static str {
        match self {
            OpenError::Io(_) => "local-io",
            OpenError::Damaged | OpenError::HeaderTooLong => "damaged",
            OpenError::NotEncryptedForUs => "not-encrypted-for-recipient",
            OpenError::NotAddressedToUs { .. } => "not-addressed-to-recipient",
            OpenError::UnexpectedRecipients { .. } => "unexpected-recipients",
            OpenError::Malformed(_) => "malformed",
            OpenError::Sender(CertError::Revoked { .. }) => "sender-revoked",
            OpenError::Sender(CertError::Expired { .. }) => "sender-expired",
            OpenError::Sender(CertError::UnknownIssuer(_)) => "sender-unknown-ca",
            OpenError::Sender(CertError::StaleCrl(_)) => "crl-stale",
            OpenError::Sender(_) => "sender-certificate",
            OpenError::BadSignature => "bad-signature",
            OpenError::MemberMismatch { .. } => "member-mismatch",
            OpenError::MissingMember(_) => "missing-member",
            OpenError::ExtraMember(_) => "extra-member",
            OpenError::Replayed { .. } => "replayed-package",
            OpenError::SenderMismatch { .. } => "sender-mismatch",
            OpenError::Document(issues) => issues
                .first()
                .map(|i| i.code.as_str())
                .unwrap_or("document-bundle"),
        }
    }
}

/// A verified package.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The sender's verified certificate.
    pub sender: CertInfo,
    /// What the document says, validated against the manifest.
    pub summary: Summary,
}

impl From<CertError> for OpenError {
    fn from(e: CertError) -> Self {
        OpenError::Sender(e)
    }
}

/// Longest GNU long-name record accepted (a path plus its NUL).
const MAX_LONG_NAME: u64 = path::MAX_PATH_BYTES as u64 + 1;

fn malformed(s: impl Into<String>) -> OpenError {
    OpenError::Malformed(s.into())
}

/// Map an error from reading the decrypted stream: age reports
/// authentication failures as `InvalidData`; tar reports truncation as
/// `UnexpectedEof` or `Other`. All are damage; genuine local write errors
/// are raised elsewhere.
fn stream_err(_e: io::Error) -> OpenError {
    OpenError::Damaged
}

/// Decrypt and verify the package read from `input` for facility `me`,
/// writing members under `staging` (an empty folder the caller owns and
/// deletes on error). `at` is the verification time (now if `None`).
pub fn open_into<R: Read + Send>(
    mut input: R,
    identity: &AgeIdentity,
    trust: &TrustStore,
    me: &FacilityId,
    staging: &Path,
    limits: &Limits,
    at: Option<SystemTime>,
) -> Result<Opened, OpenError> {
    // Released plaintext is clinical data: the folder is private to this
    // user (0700) and every file in it 0600, whatever the umask.
    private_dir(staging)?;
    // Bound the age header before the age crate sees it: at most 64 KiB,
    // read once, up to its MAC line (the age crate's own header reader is
    // quadratic in the header's length).
    let mut head = Vec::with_capacity(8 * 1024);
    input
        .by_ref()
        .take(header::MAX_HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(OpenError::Io)?;
    let parsed = match header::parse(&head) {
        Ok(h) => h,
        Err(HeaderError::TooLong) => return Err(OpenError::HeaderTooLong),
        Err(_) => return Err(OpenError::Damaged),
    };
    let readers = Readers::of(&parsed);
    let file_key = match parsed.unwrap(&head, identity.inner()) {
        Ok(k) => k,
        Err(header::UnwrapError::NoMatchingKey) => return Err(OpenError::NotEncryptedForUs),
        Err(header::UnwrapError::Damaged) => return Err(OpenError::Damaged),
    };
    let mut rest = io::Cursor::new(head);
    rest.set_position(parsed.len as u64);
    std::thread::scope(|s| {
        let stream = payload::Decryptor::new(s, rest.chain(input), file_key);
        let reader = Reader {
            facility: me,
            age_recipient: identity.recipient().to_string(),
        };
        read_package(stream, &readers, &reader, trust, staging, limits, at)
    })
}

/// The rest of [`open_into`], on the decrypted stream: the tar records,
/// then every check on what they held.
fn read_package(
    stream: payload::Decryptor,
    readers: &Readers,
    reader: &Reader,
    trust: &TrustStore,
    staging: &Path,
    limits: &Limits,
    at: Option<SystemTime>,
) -> Result<Opened, OpenError> {
    let (me, mine) = (reader.facility, &reader.age_recipient);
    let mut records = Records::new(stream);
    let mut seen: HashMap<String, (u64, [u8; 32])> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut signature: Option<Vec<u8>> = None;
    let mut cert_pem: Option<Vec<u8>> = None;
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut names: HashSet<String> = HashSet::new();
    let mut long_name: Option<Vec<u8>> = None;
    {
        // GNU long-name records are handled here, bounded, and every other
        // kind of header (PAX, links, devices) is refused.
        while let Some(header) = records.next()? {
            let etype = header.entry_type();
            // Nothing at all may follow the signature: no member, and no
            // record of any other type (GNU long name, PAX, ...).
            if signature.is_some() {
                let name: String = String::from_utf8_lossy(&header.path_bytes())
                    .chars()
                    .take(80)
                    .collect();
                return Err(OpenError::ExtraMember(
                    if etype == tar::EntryType::Regular {
                        name
                    } else {
                        format!("(a tar record of type {etype:?} after the signature: {name:?})")
                    },
                ));
            }
            if etype == tar::EntryType::GNULongName {
                if long_name.is_some() || records.size > MAX_LONG_NAME {
                    return Err(malformed("a member path is too long"));
                }
                let mut b = records.read_data()?;
                while b.last() == Some(&0) {
                    b.pop();
                }
                long_name = Some(b);
                continue;
            }
            count += 1;
            if count > limits.max_members {
                return Err(malformed(format!(
                    "more than {} members",
                    limits.max_members
                )));
            }
            let raw_path = match long_name.take() {
                Some(n) => n,
                None => header.path_bytes().into_owned(),
            };
            let p =
                String::from_utf8(raw_path).map_err(|_| malformed("a member path is not UTF-8"))?;
            let shown: String = p.chars().take(80).collect();
            if etype != tar::EntryType::Regular {
                return Err(malformed(format!(
                    "member {shown:?} is not a regular file (links, devices, folders and extended headers are refused)"
                )));
            }
            path::check(&p)
                .map_err(|why| malformed(format!("unsafe member path {shown:?}: {why}")))?;
            if !names.insert(path::fold(&p)) {
                return Err(malformed(format!(
                    "duplicate member {shown:?} (names are compared ignoring case and Unicode normalization)"
                )));
            }
            let size = records.size;
            match p.as_str() {
                MANIFEST_PATH => {
                    if size > limits.max_manifest_bytes {
                        return Err(malformed(format!(
                            "the manifest is larger than {} bytes",
                            limits.max_manifest_bytes
                        )));
                    }
                    manifest_bytes = Some(records.read_data()?);
                }
                SIGNATURE_PATH => {
                    if manifest_bytes.is_none() {
                        return Err(malformed("the signature comes before the manifest"));
                    }
                    if size != 64 {
                        return Err(OpenError::BadSignature);
                    }
                    signature = Some(records.read_data()?);
                }
                _ => {
                    if manifest_bytes.is_some() {
                        return Err(OpenError::ExtraMember(p));
                    }
                    if size > limits.max_member_bytes {
                        return Err(malformed(format!(
                            "member {shown:?} is larger than {} bytes",
                            limits.max_member_bytes
                        )));
                    }
                    total = total.saturating_add(size);
                    if total > limits.max_total_bytes {
                        return Err(malformed(format!(
                            "members add up to more than {} bytes",
                            limits.max_total_bytes
                        )));
                    }
                    let digest = if p == SENDER_CERT_PATH {
                        if size > limits.max_cert_bytes {
                            return Err(malformed("the sender certificate is too large"));
                        }
                        let b = records.read_data()?;
                        let digest = sha256(&b);
                        cert_pem = Some(b);
                        digest
                    } else {
                        let dest = staging.join(&p);
                        if let Some(parent) = dest.parent() {
                            if !parent.is_dir() {
                                private_dir(parent)?;
                            }
                        }
                        // Written and fsynced by a thread of its own
                        // while this one decrypts and hashes.
                        let mut f =
                            WriteBehind::new(private_file(&dest)?, size).map_err(OpenError::Io)?;
                        let digest = records.write_data(&mut f)?;
                        f.finish().map_err(OpenError::Io)?;
                        digest
                    };
                    seen.insert(p.clone(), (size, digest));
                    order.push(p);
                }
            }
        }
    }
    if long_name.is_some() {
        return Err(malformed("a long-name record names no member"));
    }
    // Drain what follows the tar end: zero padding only, then the age
    // stream's authenticated end (a truncated stream fails here).
    let mut rest = records.stream;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest.read(&mut buf).map_err(stream_err)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(OpenError::ExtraMember(
                "(data after the end of the archive)".into(),
            ));
        }
    }

    let manifest_bytes = manifest_bytes.ok_or_else(|| malformed("no manifest"))?;
    let signature = signature.ok_or_else(|| malformed("no manifest signature"))?;
    let cert_pem = cert_pem.ok_or_else(|| OpenError::MissingMember(SENDER_CERT_PATH.into()))?;
    let manifest =
        Manifest::parse(&manifest_bytes).map_err(|e| malformed(format!("manifest: {e}")))?;

    let cert = CertInfo::parse_pem(&cert_pem, "sender certificate")?;
    // The sender's revocation status must be known: a stale CRL refuses.
    let sender = trust.verify_peer(&cert.der, at)?;
    let sender_id = sender.facility_id()?.clone();
    if manifest.sender.facility_id != sender_id || manifest.sender.cert_sha256 != sender.fingerprint
    {
        return Err(OpenError::BadSignature);
    }
    if !verify_ed25519(
        &sender.signing_key,
        &Manifest::signed_message(&manifest_bytes),
        &signature,
    ) {
        return Err(OpenError::BadSignature);
    }

    // From here the manifest is the sender's genuine statement.
    let mut listed = HashSet::new();
    for m in &manifest.members {
        if !listed.insert(m.path.as_str()) {
            return Err(malformed(format!("the manifest lists {} twice", m.path)));
        }
        let (size, digest) = seen
            .get(&m.path)
            .ok_or_else(|| OpenError::MissingMember(m.path.clone()))?;
        if *size != m.size {
            return Err(OpenError::MemberMismatch {
                path: m.path.clone(),
                why: format!("size {size}, signed {}", m.size),
            });
        }
        if hex::encode(digest) != m.sha256 {
            return Err(OpenError::MemberMismatch {
                path: m.path.clone(),
                why: "SHA-256 differs".into(),
            });
        }
    }
    if let Some(extra) = order.iter().find(|p| !listed.contains(p.as_str())) {
        return Err(OpenError::ExtraMember(extra.clone()));
    }
    if !manifest.members.iter().map(|m| &m.path).eq(order.iter()) {
        return Err(malformed(
            "the members are not in the order the manifest lists them",
        ));
    }
    let doc_size = match seen.get(DOCUMENT_PATH) {
        Some((size, _)) => *size,
        None => return Err(OpenError::MissingMember(DOCUMENT_PATH.into())),
    };
    let addressed = manifest
        .recipients
        .iter()
        .any(|r| &r.facility_id == me && &r.age_recipient == mine);
    let own_copy =
        &sender_id == me && manifest.sender_copy && sender.age_recipient.as_deref() == Some(mine);
    if !addressed && !own_copy {
        return Err(OpenError::NotAddressedToUs {
            me: me.to_string(),
            addressed: manifest
                .recipients
                .iter()
                .map(|r| r.facility_id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            sender: format!("{} ({})", sender.name, sender_id),
        });
    }
    // Hidden readers: the header must hold exactly one X25519 stanza per
    // signed reader (each addressed facility, plus the sender's own copy
    // when it is not itself addressed), nothing else but at most one grease
    // stanza (the age crate writes one).
    let signed = manifest.recipients.len()
        + usize::from(
            manifest.sender_copy
                && !manifest
                    .recipients
                    .iter()
                    .any(|r| r.facility_id == sender_id),
        );
    if readers.x25519 != signed || readers.other > 0 || readers.grease > 1 {
        return Err(OpenError::UnexpectedRecipients {
            found: readers.describe(),
            signed,
        });
    }
    // The document must be a valid JP-CLINS document for this very package
    // (sender, recipients, attachments, kind, in-reply-to).
    let summary = check_document(&staging.join(DOCUMENT_PATH), doc_size, &manifest)?;
    // Keep the signed evidence beside the members.
    for (name, bytes) in [
        (SENDER_CERT_PATH, &cert_pem[..]),
        (MANIFEST_PATH, &manifest_bytes[..]),
        (SIGNATURE_PATH, &signature[..]),
    ] {
        private_file(&staging.join(name))?
            .write_all(bytes)
            .map_err(OpenError::Io)?;
    }
    Ok(Opened {
        manifest,
        sender,
        summary,
    })
}

/// Who reads the package: this facility, and its age recipient.
struct Reader<'a> {
    facility: &'a FacilityId,
    age_recipient: String,
}

/// The stanzas of an age header, by kind.
struct Readers {
    /// X25519 stanzas: one per reader.
    x25519: usize,
    /// age "grease" stanzas (tag ending in `-grease`).
    grease: usize,
    /// Any other stanza (scrypt, ssh, plugins, unknown).
    other: usize,
}

impl Readers {
    fn of(h: &header::Header) -> Readers {
        let mut r = Readers {
            x25519: 0,
            grease: 0,
            other: 0,
        };
        for s in &h.stanzas {
            if s.tag == "X25519" {
                r.x25519 += 1;
            } else if s.tag.ends_with("-grease") {
                r.grease += 1;
            } else {
                r.other += 1;
            }
        }
        r
    }

    fn describe(&self) -> String {
        let mut s = format!("{} X25519 reader(s)", self.x25519);
        if self.other > 0 {
            s.push_str(&format!(" and {} stanza(s) of other kinds", self.other));
        }
        if self.grease > 1 {
            s.push_str(&format!(" and {} grease stanzas", self.grease));
        }
        s
    }
}

/// Validate the staged `document.json` (of verified `size`) against the
/// manifest. At most [`document::MAX_DOCUMENT_BYTES`] + 1 bytes are read:
/// enough for [`document::validate()`] to refuse a larger document.
fn check_document(file: &Path, size: u64, manifest: &Manifest) -> Result<Summary, OpenError> {
    let cap = document::MAX_DOCUMENT_BYTES as u64 + 1;
    let mut bytes = Vec::with_capacity(size.min(cap) as usize);
    fs::File::open(file)
        .and_then(|f| f.take(cap).read_to_end(&mut bytes))
        .map_err(OpenError::Io)?;
    document::validate(&bytes, &Expect::from_manifest(manifest)).map_err(OpenError::Document)
}

/// The tar records of the decrypted stream, in order: ustar headers
/// (checksum verified) and the data after each. Nothing is skipped or
/// resynchronised: a record ends where its header's size says, rounded
/// up to 512 bytes, and the archive at the first all-zero header or at
/// the end of the stream.
struct Records {
    stream: payload::Decryptor,
    /// The size of the current record's data.
    size: u64,
    /// Where the next header starts in the stream.
    next: u64,
}

const BLOCK: u64 = 512;

impl Records {
    fn new(stream: payload::Decryptor) -> Records {
        Records {
            stream,
            size: 0,
            next: 0,
        }
    }

    /// The next record's header (its data follows in the stream), or
    /// `None` at the end of the archive. Data of the record before not
    /// read is skipped. Every error is damage: the stream is
    /// authenticated, so a sender made it so.
    fn next(&mut self) -> Result<Option<tar::Header>, OpenError> {
        let skip = self.next - self.stream.position();
        let skipped =
            io::copy(&mut (&mut self.stream).take(skip), &mut io::sink()).map_err(stream_err)?;
        if skipped != skip {
            return Err(OpenError::Damaged);
        }
        let mut header = tar::Header::new_old();
        let block = header.as_mut_bytes();
        let mut got = 0;
        while got < block.len() {
            match self.stream.read(&mut block[got..]).map_err(stream_err)? {
                0 if got == 0 => return Ok(None),
                0 => return Err(OpenError::Damaged),
                n => got += n,
            }
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let sum = block[..148]
            .iter()
            .chain(&block[156..])
            .fold(8 * u32::from(b' '), |a, &b| a + u32::from(b));
        if header.cksum().map_err(stream_err)? != sum {
            return Err(OpenError::Damaged);
        }
        self.size = header.entry_size().map_err(stream_err)?;
        self.next = self
            .size
            .checked_next_multiple_of(BLOCK)
            .and_then(|n| n.checked_add(self.stream.position()))
            .ok_or(OpenError::Damaged)?;
        Ok(Some(header))
    }

    /// The current record's data, in memory (the caller bounded its size).
    fn read_data(&mut self) -> Result<Vec<u8>, OpenError> {
        let mut b = Vec::with_capacity(self.size as usize);
        (&mut self.stream)
            .take(self.size)
            .read_to_end(&mut b)
            .map_err(stream_err)?;
        if b.len() as u64 != self.size {
            return Err(OpenError::Damaged);
        }
        Ok(b)
    }

    /// Write the current record's data to `w` and hash it, without
    /// copying it on this thread: the pieces of the opened batches go to
    /// the writing thread, which writes their whole blocks straight from
    /// the batch (the batches after this one are laid out for that).
    /// Decryption and truncation failures are damage; write failures are
    /// the writer's.
    fn write_data(&mut self, w: &mut WriteBehind) -> Result<[u8; 32], OpenError> {
        self.stream.align_at(self.stream.position());
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut left = self.size;
        while left > 0 {
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            let piece = self
                .stream
                .piece(max)
                .map_err(stream_err)?
                .ok_or(OpenError::Damaged)?;
            ctx.update(piece.as_ref());
            left -= piece.as_ref().len() as u64;
            w.put(piece).map_err(OpenError::Io)?;
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ctx.finish().as_ref());
        Ok(digest)
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    digest
}

/// Create `dir` (and missing parents) if needed, and make it 0700.
fn private_dir(dir: &Path) -> Result<(), OpenError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        b.mode(0o700);
        b.create(dir).map_err(OpenError::Io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(OpenError::Io)?;
    }
    #[cfg(not(unix))]
    b.create(dir).map_err(OpenError::Io)?;
    Ok(())
}

/// Create a new file, 0600.
fn private_file(path: &Path) -> Result<fs::File, OpenError> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(OpenError::Io)
}
