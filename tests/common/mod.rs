//! Shared helpers for the integration tests: a fresh region (CA, facility
//! profiles) per test in a temporary folder, sealing and opening helpers,
//! and a crafter for hand-made (hostile) packages.
//!
//! Every integration test file includes this module; not every file uses
//! every helper.
#![allow(dead_code)]

#[path = "../doc_support/mod.rs"]
mod doc_support;
pub use doc_support::*;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use renkei::document::DocKind;
use renkei::files::{self, FileError};
use renkei::identity::{FacilityId, Kind};
use renkei::keys::{AgeIdentity, SigningKey};
use renkei::package::{
    self, Limits, Manifest, MemberEntry, MemberSource, OpenError, Opened, PackageKind,
    RecipientEntry, SealRequest, Sealed, SenderEntry,
};
use renkei::pki::ca::Ca;
use renkei::pki::{CertInfo, TrustStore};
use renkei::profile::Profile;

/// Valid facility IDs (10 digits, Luhn check digit).
pub const CLINIC: &str = "1311234569";
pub const HOSPITAL: &str = "1317654323";
pub const RECOVERY: &str = "1315555555";
pub const OTHER: &str = "1312222225";

/// The default CA name of a test region.
pub const CA_NAME: &str = "テスト地域医療連携ネットワーク CA";

/// A valid facility ID from nine digits (appends the check digit).
pub fn facility_id(nine: &str) -> String {
    let digits: Vec<u8> = nine.bytes().map(|b| b - b'0').collect();
    assert_eq!(digits.len(), 9);
    format!("{nine}{}", FacilityId::check_digit(&digits))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A region: a CA folder in a temporary directory.
pub struct Region {
    pub tmp: tempfile::TempDir,
    pub ca_dir: PathBuf,
    pub ca: Ca,
}

impl Default for Region {
    fn default() -> Self {
        Self::new()
    }
}

impl Region {
    /// A new region with the default CA name.
    pub fn new() -> Region {
        Region::named(CA_NAME)
    }

    /// A new region whose CA has `name`.
    pub fn named(name: &str) -> Region {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca_dir = tmp.path().join("ca");
        let ca = Ca::init(&ca_dir, name, 3650).expect("ca init");
        Region { tmp, ca_dir, ca }
    }

    /// The region's folder.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A fresh CRL (PEM).
    pub fn crl(&self) -> String {
        self.ca.crl(30).expect("crl")
    }

    /// The region's trust store with its current CRL.
    pub fn trust(&self) -> TrustStore {
        TrustStore::new(self.ca_pem().as_bytes(), Some(self.crl().as_bytes())).expect("trust")
    }

    /// A new, uncertified profile folder (keys and request only).
    pub fn keygen(&self, id: &str, kind: Kind, name: &str) -> Profile {
        let dir = self.path().join(unique(&format!("profile-{id}")));
        Profile::create(&dir, id, kind, name, &[]).expect("profile create")
    }

    /// Issue a certificate for a profile's request.
    pub fn issue(&self, profile: &Profile, days: u32) -> String {
        let csr = fs::read(profile.path(Profile::REQUEST)).expect("request");
        let req = renkei::pki::request::parse(&csr).expect("request parses");
        self.ca.issue(&req, days).expect("issue")
    }

    /// A certified facility with a certificate valid for two years.
    pub fn facility(&self, id: &str, kind: Kind, name: &str) -> Facility {
        self.facility_days(id, kind, name, 730)
    }

    /// A certified facility whose certificate is valid for `days` (0: it
    /// expires at once).
    pub fn facility_days(&self, id: &str, kind: Kind, name: &str, days: u32) -> Facility {
        let mut profile = self.keygen(id, kind, name);
        let cert_pem = self.issue(&profile, days);
        let crl = self.crl();
        if days == 0 {
            // Profile::install would (rightly) refuse an expired certificate.
            profile
                .install(
                    None,
                    Some(self.ca_pem().as_bytes()),
                    Some(crl.as_bytes()),
                    None,
                )
                .expect("install CA");
            fs::write(profile.path(Profile::CERT), &cert_pem).expect("write cert");
        } else {
            profile
                .install(
                    Some(cert_pem.as_bytes()),
                    Some(self.ca_pem().as_bytes()),
                    Some(crl.as_bytes()),
                    None,
                )
                .expect("install");
        }
        Facility::load(profile, cert_pem)
    }

    /// Revoke a facility's certificate and return the new CRL.
    pub fn revoke(&self, f: &Facility) -> String {
        self.ca.revoke(&f.cert).expect("revoke");
        self.crl()
    }
}

/// A certified facility: its profile and loaded keys.
pub struct Facility {
    pub id: FacilityId,
    pub profile: Profile,
    pub cert: CertInfo,
    pub cert_pem: String,
    pub key: SigningKey,
    pub age: AgeIdentity,
}

impl Facility {
    fn load(profile: Profile, cert_pem: String) -> Facility {
        let cert = CertInfo::parse_pem(cert_pem.as_bytes(), "test cert").expect("cert");
        Facility {
            id: profile.facility_id().expect("facility id"),
            key: profile.signing_key().expect("signing key"),
            age: profile.age_identity().expect("age identity"),
            profile,
            cert,
            cert_pem,
        }
    }

    /// The profile's trust store.
    pub fn trust(&self) -> TrustStore {
        self.profile.trust().expect("trust")
    }

    /// The age recipient.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.age.recipient()
    }

    /// Install a CRL into the profile.
    pub fn install_crl(&mut self, crl: &str) {
        self.profile
            .install(None, None, Some(crl.as_bytes()), None)
            .expect("install CRL");
    }
}

/// A member source over bytes in memory.
pub fn mem(path: &str, data: impl Into<Vec<u8>>) -> MemberSource<'static> {
    let data = data.into();
    MemberSource {
        path: path.to_string(),
        media_type: package::media_type_for(path).to_string(),
        size: data.len() as u64,
        reader: Box::new(io::Cursor::new(data)),
    }
}

/// The document member with the given bytes (see [`document_for`]).
pub fn document(bytes: Vec<u8>) -> MemberSource<'static> {
    MemberSource {
        path: package::DOCUMENT_PATH.into(),
        media_type: "application/fhir+json".into(),
        size: bytes.len() as u64,
        reader: Box::new(io::Cursor::new(bytes)),
    }
}

/// Seal a referral with the library, its document written by `from` to
/// the first of `to` and listing the attachments; returns the ciphertext.
pub fn seal_with(
    from: &Facility,
    to: &[&Facility],
    attachments: Vec<MemberSource<'static>>,
    sender_copy: bool,
) -> (Vec<u8>, Sealed) {
    let recipients: Vec<CertInfo> = to.iter().map(|f| f.cert.clone()).collect();
    let names: Vec<String> = attachments.iter().map(|a| a.path.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let dest = to.first().map_or(&from.id, |f| &f.id);
    let doc = document_for(DocKind::Referral, from.id.as_str(), dest.as_str(), &names);
    let mut out = Vec::new();
    let sealed = package::seal(
        SealRequest {
            sender_key: &from.key,
            sender_cert: &from.cert,
            sender_copy,
            recipients: &recipients,
            kind: PackageKind::Referral,
            thread_id: None,
            in_reply_to: None,
            document: document(doc),
            attachments,
            limits: Limits::default(),
        },
        &mut out,
    )
    .expect("seal");
    (out, sealed)
}

/// Seal a simple referral with one attachment, with a sender copy.
pub fn seal_simple(from: &Facility, to: &[&Facility]) -> Vec<u8> {
    seal_with(
        from,
        to,
        vec![mem("attachments/検査結果.csv", "項目,値\nHbA1c,7.2\n")],
        true,
    )
    .0
}

/// An open attempt through `files::open_to_dir` (what `renkei open` calls).
pub struct Attempt {
    pub work: tempfile::TempDir,
    pub out: PathBuf,
    pub result: Result<Opened, FileError>,
}

/// Write `bytes` to a file and open it with `fac`'s profile into a new
/// folder, as `renkei open` does.
pub fn open_file(fac: &Facility, bytes: &[u8]) -> Attempt {
    let work = tempfile::tempdir().expect("tempdir");
    let pkg = work.path().join("package.age");
    fs::write(&pkg, bytes).expect("write package");
    let out = work.path().join("inbox").join("opened");
    let input = fs::File::open(&pkg).expect("package file");
    let result = files::open_to_dir(&fac.profile, input, &out);
    Attempt { work, out, result }
}

/// Open and expect success; returns the manifest and the output folder.
pub fn expect_opened(fac: &Facility, bytes: &[u8]) -> (Opened, Attempt) {
    let mut a = open_file(fac, bytes);
    let r = std::mem::replace(&mut a.result, Err(FileError::NotAFile(PathBuf::new())));
    match r {
        Ok(o) => {
            assert!(a.out.is_dir(), "the output folder exists");
            (o, a)
        }
        Err(e) => panic!("{} could not open the package: {e}", fac.id),
    }
}

/// Open and expect refusal as a verification failure (exit 3) with no
/// output folder and no staging leftovers; returns the library error.
pub fn expect_refused(fac: &Facility, bytes: &[u8]) -> OpenError {
    let a = open_file(fac, bytes);
    let f = match a.result {
        Ok(o) => panic!(
            "{} accepted a package it must refuse: {:?}",
            fac.id, o.manifest
        ),
        Err(f) => f,
    };
    assert!(
        f.is_verification_failure(),
        "a refused package is a verification failure: {f}"
    );
    assert!(!a.out.exists(), "no output folder may be left behind ({f})");
    let parent = a.out.parent().expect("parent");
    let left: Vec<_> = fs::read_dir(parent)
        .expect("parent exists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "staging leftovers: {left:?}");
    let FileError::Open(e) = f else {
        panic!("the failure is an OpenError: {f}")
    };
    assert!(e.is_verification_failure(), "{e}");
    e
}

/// Open with the library directly (custom limits or time) into a fresh
/// staging folder.
pub fn open_lib(
    fac: &Facility,
    bytes: &[u8],
    limits: &Limits,
    at: Option<std::time::SystemTime>,
) -> Result<Opened, OpenError> {
    open_lib_with(fac, &fac.trust(), bytes, limits, at)
}

/// [`open_lib`] with a given trust store.
pub fn open_lib_with(
    fac: &Facility,
    trust: &TrustStore,
    bytes: &[u8],
    limits: &Limits,
    at: Option<std::time::SystemTime>,
) -> Result<Opened, OpenError> {
    let staging = tempfile::tempdir().expect("tempdir");
    package::open_into(bytes, &fac.age, trust, &fac.id, staging.path(), limits, at)
}

/// Decrypt a package with a facility's age identity (the age crate, as a
/// recipient would).
pub fn decrypt(bytes: &[u8], fac: &Facility) -> Vec<u8> {
    let d = age::Decryptor::new(bytes).expect("age header");
    let mut r = d
        .decrypt(std::iter::once(fac.age.inner() as &dyn age::Identity))
        .expect("decrypt");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read plaintext");
    out
}

/// Encrypt bytes with age to the given recipients.
pub fn encrypt(plain: &[u8], to: &[age::x25519::Recipient]) -> Vec<u8> {
    let enc = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .expect("recipients");
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).expect("wrap");
    w.write_all(plain).expect("write");
    w.finish().expect("finish");
    out
}

/// One tar entry, with raw name bytes (so hostile names can be written).
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: impl Into<Vec<u8>>) -> RawEntry {
        RawEntry::raw(name.as_bytes(), data)
    }

    /// A regular file with raw name bytes.
    pub fn raw(name: &[u8], data: impl Into<Vec<u8>>) -> RawEntry {
        RawEntry {
            name: name.to_vec(),
            kind: tar::EntryType::Regular,
            data: data.into(),
            link: Vec::new(),
        }
    }

    /// An entry of another type (link, device, folder), without data.
    pub fn special(name: &str, kind: tar::EntryType, link: &str) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: link.as_bytes().to_vec(),
        }
    }

    /// The path as a string (lossy).
    pub fn path(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A tar stream of the entries, ended by the two zero blocks.
pub fn tar_bytes(entries: &[RawEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        append_raw(&mut b, e);
    }
    b.into_inner().expect("tar")
}

fn append_raw(b: &mut tar::Builder<Vec<u8>>, e: &RawEntry) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        assert!(e.name.len() < old.name.len(), "short names only");
        old.name[..e.name.len()].copy_from_slice(&e.name);
        assert!(e.link.len() < old.linkname.len(), "short link names only");
        old.linkname[..e.link.len()].copy_from_slice(&e.link);
    }
    h.set_entry_type(e.kind);
    h.set_size(e.data.len() as u64);
    h.set_mode(if e.kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(1).expect("major");
        h.set_device_minor(3).expect("minor");
    }
    h.set_cksum();
    b.append(&h, e.data.as_slice()).expect("append");
}

/// Read every entry of a (trusted, test-made) tar stream.
pub fn read_tar(plain: &[u8]) -> Vec<RawEntry> {
    let mut a = tar::Archive::new(plain);
    let mut out = Vec::new();
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path_bytes().into_owned();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        out.push(RawEntry {
            name,
            kind,
            data,
            link: Vec::new(),
        });
    }
    out
}

/// SHA-256, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Manifest entries describing `entries` exactly (whatever their type).
pub fn member_entries(entries: &[RawEntry]) -> Vec<MemberEntry> {
    entries
        .iter()
        .map(|e| MemberEntry {
            path: e.path(),
            media_type: package::media_type_for(&e.path()).into(),
            size: e.data.len() as u64,
            sha256: sha256_hex(&e.data),
        })
        .collect()
}

/// The members a genuine package holds before its manifest: the document
/// (a referral from `sender` to `to`), one attachment, the sender's
/// certificate.
pub fn standard_entries(sender: &Facility, to: &Facility) -> Vec<RawEntry> {
    let attachment = "attachments/検査結果.csv";
    let doc = document_for(
        DocKind::Referral,
        sender.id.as_str(),
        to.id.as_str(),
        &[attachment],
    );
    vec![
        RawEntry::file(package::DOCUMENT_PATH, doc),
        RawEntry::file("attachments/検査結果.csv", "項目,値\nHbA1c,7.2\n"),
        RawEntry::file(package::SENDER_CERT_PATH, sender.cert.pem()),
    ]
}

/// A hand-made package: entries, a manifest signed by `signer` (the
/// sender's key unless replaced), then optional entries after the
/// signature and raw bytes after the tar end; encrypted to `encrypt_to`
/// (the manifest's recipients unless replaced).
pub struct Craft<'a> {
    pub sender: &'a Facility,
    pub recipients: Vec<&'a Facility>,
    pub signer: &'a SigningKey,
    pub entries: Vec<RawEntry>,
    pub members: Option<Vec<MemberEntry>>,
    pub after: Vec<RawEntry>,
    pub trailing: Vec<u8>,
    pub encrypt_to: Option<Vec<age::x25519::Recipient>>,
}

impl<'a> Craft<'a> {
    /// A genuine-looking package from `sender` to `recipients`.
    pub fn new(sender: &'a Facility, recipients: &[&'a Facility]) -> Craft<'a> {
        Craft {
            sender,
            recipients: recipients.to_vec(),
            signer: &sender.key,
            entries: standard_entries(sender, recipients.first().copied().unwrap_or(sender)),
            members: None,
            after: Vec::new(),
            trailing: Vec::new(),
            encrypt_to: None,
        }
    }

    /// The manifest: members as given or describing the entries exactly.
    pub fn manifest(&self) -> Manifest {
        let id = uuid::Uuid::new_v4().to_string();
        Manifest {
            format: package::FORMAT.into(),
            package_id: id.clone(),
            kind: PackageKind::Referral,
            created: time::OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .expect("0 ns")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("rfc3339"),
            sender: SenderEntry {
                facility_id: self.sender.id.clone(),
                name: self.sender.cert.name.clone(),
                cert_sha256: self.sender.cert.fingerprint.clone(),
            },
            recipients: self
                .recipients
                .iter()
                .map(|r| RecipientEntry {
                    facility_id: r.id.clone(),
                    age_recipient: r.recipient().to_string(),
                })
                .collect(),
            sender_copy: false,
            thread_id: id,
            in_reply_to: None,
            members: self
                .members
                .clone()
                .unwrap_or_else(|| member_entries(&self.entries)),
        }
    }

    /// The manifest's bytes and the signer's signature over them.
    pub fn sign(&self, m: &Manifest) -> (Vec<u8>, Vec<u8>) {
        let bytes = serde_json::to_vec_pretty(m).expect("json");
        let sig = self.signer.sign(&Manifest::signed_message(&bytes));
        (bytes, sig.to_vec())
    }

    /// The tar plaintext with the given manifest bytes and signature.
    pub fn plaintext_raw(&self, manifest: &[u8], sig: &[u8]) -> Vec<u8> {
        let mut all = self.entries.clone();
        all.push(RawEntry::file(package::MANIFEST_PATH, manifest));
        all.push(RawEntry::file(package::SIGNATURE_PATH, sig));
        all.extend(self.after.iter().cloned());
        let mut t = tar_bytes(&all);
        t.extend_from_slice(&self.trailing);
        t
    }

    /// The tar plaintext with `m` signed.
    pub fn plaintext_with(&self, m: &Manifest) -> Vec<u8> {
        let (bytes, sig) = self.sign(m);
        self.plaintext_raw(&bytes, &sig)
    }

    /// Encrypt a plaintext to the package's age recipients.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let to = self
            .encrypt_to
            .clone()
            .unwrap_or_else(|| self.recipients.iter().map(|r| r.recipient()).collect());
        encrypt(plain, &to)
    }

    /// The whole package.
    pub fn build(&self) -> Vec<u8> {
        self.encrypt(&self.plaintext_with(&self.manifest()))
    }

    /// The whole package with a given manifest.
    pub fn build_with(&self, m: &Manifest) -> Vec<u8> {
        self.encrypt(&self.plaintext_with(m))
    }
}

/// The names of the files directly in `dir` and in `dir/attachments`,
/// sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().expect("type").is_dir() {
            for f in fs::read_dir(e.path()).expect("subdir") {
                out.push(format!(
                    "{name}/{}",
                    f.expect("entry").file_name().to_string_lossy()
                ));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}
