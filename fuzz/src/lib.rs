//! Shared fixtures and helpers for the renkei fuzz targets.
//!
//! The demo region in `keys-example/` is read once per process (a lazy
//! static), from a path relative to this crate's `CARGO_MANIFEST_DIR`.
//! Everything here panics on a broken fixture: that is a setup error, and
//! libFuzzer reports it on the first input.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use renkei::identity::FacilityId;
use renkei::keys::{AgeIdentity, SigningKey};
use renkei::package::{self, Limits, OpenError, Opened};
use renkei::pki::{CertInfo, TrustStore};

/// `keys-example/` of the main crate.
pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys-example")
}

fn read(rel: &str) -> Vec<u8> {
    let p = keys_dir().join(rel);
    fs::read(&p).unwrap_or_else(|e| panic!("fuzz fixture {}: {e}", p.display()))
}

fn read_text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap_or_else(|_| panic!("fuzz fixture {rel}: not UTF-8"))
}

fn demo_key(rel: &str) -> SigningKey {
    SigningKey::from_pkcs8_pem(&read_text(rel), rel).expect("demo signing key")
}

/// One demo profile.
pub struct Profile {
    /// Folder name in `keys-example/`.
    pub name: &'static str,
    /// `cert.pem` as read.
    pub cert_pem: Vec<u8>,
    /// The parsed certificate.
    pub cert: CertInfo,
    /// The Ed25519 signing key.
    pub key: SigningKey,
    /// The age identity.
    pub age: AgeIdentity,
}

/// The demo region.
pub struct Region {
    /// The CA certificate (PEM, from `hospital/ca.pem`).
    pub ca_pem: Vec<u8>,
    /// The CA's CRL (PEM, from `hospital/crl.pem`).
    pub crl_pem: Vec<u8>,
    /// The CA's signing key (`ca/ca.key`), to re-sign fuzzed CRLs.
    pub ca_key: SigningKey,
    /// clinic, hospital, recovery-hospital, relay, auditor.
    pub profiles: Vec<Profile>,
    /// The hospital's trust store (its CA and CRL).
    pub trust: TrustStore,
    /// The hospital's facility ID.
    pub hospital_id: FacilityId,
    /// A fixed verification time inside every demo certificate's validity.
    pub at: SystemTime,
}

impl Region {
    /// A profile by folder name.
    pub fn profile(&self, name: &str) -> &Profile {
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no demo profile {name}"))
    }

    /// The signing key of the demo profile whose public key is `pk`.
    pub fn key_for(&self, pk: &[u8]) -> Option<&SigningKey> {
        self.profiles
            .iter()
            .find(|p| p.cert.signing_key[..] == *pk)
            .map(|p| &p.key)
    }

    /// The signing key of the demo profile whose raw public key occurs in
    /// `bytes` (e.g. inside a fuzzed CertificationRequestInfo), else the
    /// hospital's.
    pub fn key_within(&self, bytes: &[u8]) -> &SigningKey {
        self.profiles
            .iter()
            .find(|p| bytes.windows(32).any(|w| w == p.cert.signing_key))
            .map(|p| &p.key)
            .unwrap_or(&self.profile("hospital").key)
    }
}

/// The demo region, loaded on first use.
pub static REGION: LazyLock<Region> = LazyLock::new(|| {
    let names = [
        "clinic",
        "hospital",
        "recovery-hospital",
        "relay",
        "auditor",
    ];
    let profiles: Vec<Profile> = names
        .iter()
        .map(|&name| {
            let cert_pem = read(&format!("{name}/cert.pem"));
            let cert = CertInfo::parse_pem(&cert_pem, name).expect("demo certificate");
            // Read as text: the demo key files are 0644 in a git checkout,
            // which `SigningKey::load` (rightly) refuses.
            let key = demo_key(&format!("{name}/signing.key"));
            let age = AgeIdentity::from_text(&read_text(&format!("{name}/age.key")), name)
                .expect("demo age key");
            Profile {
                name,
                cert_pem,
                cert,
                key,
                age,
            }
        })
        .collect();
    let ca_pem = read("hospital/ca.pem");
    let crl_pem = read("hospital/crl.pem");
    let ca_key = demo_key("ca/ca.key");
    let trust = TrustStore::new(&ca_pem, Some(&crl_pem)).expect("demo trust store");
    let latest_start = profiles
        .iter()
        .map(|p| p.cert.not_before_unix)
        .max()
        .expect("profiles");
    let at = UNIX_EPOCH + Duration::from_secs(latest_start as u64 + 86_400);
    let hospital_id = profiles
        .iter()
        .find(|p| p.name == "hospital")
        .expect("hospital")
        .cert
        .facility_id()
        .expect("hospital is a facility")
        .clone();
    Region {
        ca_pem,
        crl_pem,
        ca_key,
        profiles,
        trust,
        hospital_id,
        at,
    }
});

/// Where per-input staging folders go: `/dev/shm` when usable (fast, and
/// `open_into` fsyncs every member), else the system temp dir.
static STAGING_BASE: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
});

/// A fresh, empty staging folder, removed when dropped.
pub fn staging() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("renkei-fuzz-")
        .tempdir_in(&*STAGING_BASE)
        .expect("staging folder")
}

/// Open `ciphertext` as the demo hospital into a fresh staging folder, check
/// what `open_into` left there, and remove it.
pub fn open_as_hospital(ciphertext: &[u8]) -> Result<Opened, OpenError> {
    let r = &*REGION;
    let hospital = r.profile("hospital");
    let dir = staging();
    let res = package::open_into(
        ciphertext,
        &hospital.age,
        &r.trust,
        &r.hospital_id,
        dir.path(),
        &Limits::default(),
        Some(r.at),
    );
    check_staging(dir.path(), res.as_ref().ok());
    res
}

/// Invariants of the staging folder after `open_into`, whatever the verdict:
/// only regular files, only at allowed member paths; and after success,
/// every signed member is there with its signed size.
fn check_staging(dir: &Path, opened: Option<&Opened>) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        for e in fs::read_dir(dir).expect("read staging") {
            let e = e.expect("staging entry");
            let ft = e.file_type().expect("file type");
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_str()
                .expect("staging names are UTF-8")
                .to_string();
            assert!(!ft.is_symlink(), "open_into left a symlink at {rel:?}");
            if ft.is_dir() {
                assert_eq!(
                    rel,
                    package::ATTACHMENTS_DIR,
                    "open_into made an unexpected folder"
                );
                walk(root, &e.path(), out);
            } else {
                assert!(ft.is_file(), "open_into left a non-file at {rel:?}");
                assert!(
                    package::path::check(&rel).is_ok(),
                    "open_into wrote outside the allowed layout: {rel:?}"
                );
                out.push((rel, e.metadata().expect("metadata").len()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    if let Some(o) = opened {
        for m in &o.manifest.members {
            assert!(
                files.iter().any(|(p, n)| *p == m.path && *n == m.size),
                "verified member {:?} is not in staging with its signed size",
                m.path
            );
        }
        for p in [
            package::DOCUMENT_PATH,
            package::SENDER_CERT_PATH,
            package::MANIFEST_PATH,
            package::SIGNATURE_PATH,
        ] {
            assert!(
                files.iter().any(|(f, _)| f == p),
                "{p} missing after success"
            );
        }
        assert!(o.sender.kind.is_facility());
    }
}

/// Encrypt `plaintext` to the demo hospital's age recipient.
pub fn encrypt_to_hospital(plaintext: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let recipient = REGION.profile("hospital").age.recipient();
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .expect("one recipient");
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = enc.wrap_output(&mut out).expect("age writer");
    w.write_all(plaintext).expect("encrypt");
    w.finish().expect("finish");
    out
}

/// Decrypt an age file with `id` (seed generation).
pub fn decrypt(ciphertext: &[u8], id: &AgeIdentity) -> Vec<u8> {
    let d = age::Decryptor::new(ciphertext).expect("age header");
    let mut r = d
        .decrypt(std::iter::once(id.inner() as &dyn age::Identity))
        .expect("decrypt");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    out
}

// ---------------------------------------------------------------- DER ----

fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let be = n.to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

/// `SEQUENCE { tbs, AlgorithmIdentifier { id-Ed25519 }, BIT STRING sig }`:
/// the shape of a signed certificate, CSR or CRL, with `tbs` signed by `key`.
pub fn ed25519_signed(tbs: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig = key.sign(tbs);
    let mut body = Vec::with_capacity(tbs.len() + 80);
    body.extend_from_slice(tbs);
    body.extend_from_slice(&[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]);
    body.extend_from_slice(&[0x03, 0x41, 0x00]);
    body.extend_from_slice(&sig);
    let mut out = vec![0x30];
    der_len(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// The first element of a DER SEQUENCE (the to-be-signed part of a signed
/// structure), for seed generation.
pub fn der_first_element(der: &[u8]) -> Option<&[u8]> {
    fn header(b: &[u8]) -> Option<(usize, usize)> {
        // (header length, content length)
        let l0 = *b.get(1)? as usize;
        if l0 < 0x80 {
            Some((2, l0))
        } else {
            let k = l0 & 0x7f;
            let mut n = 0usize;
            for i in 0..k {
                n = (n << 8) | *b.get(2 + i)? as usize;
            }
            Some((2 + k, n))
        }
    }
    let (h, _) = header(der)?;
    let inner = der.get(h..)?;
    let (h2, n2) = header(inner)?;
    inner.get(..h2 + n2)
}

/// Fuzzed bytes for a signed DER structure: inputs starting with 0x00 are
/// a to-be-signed body that is wrapped and signed with `key` (so the fuzzer
/// gets past signature checks); anything else is used as it is.
pub fn maybe_signed<'a>(
    data: &'a [u8],
    key: impl FnOnce(&[u8]) -> &'a SigningKey,
) -> Cow<'a, [u8]> {
    match data.split_first() {
        Some((0, tbs)) => Cow::Owned(ed25519_signed(tbs, key(tbs))),
        _ => Cow::Borrowed(data),
    }
}

// ---------------------------------------------------------------- tar ----

fn parse_octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?.trim();
    u64::from_str_radix(s, 8).ok()
}

fn entry_size(h: &[u8]) -> u64 {
    let f = &h[124..136];
    if f[0] & 0x80 != 0 {
        // GNU base-256.
        f[4..].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
    } else {
        parse_octal(f).unwrap_or(0)
    }
}

/// Make fuzzed tar bytes friendlier to the tar reader, in place: rewrite
/// every header checksum that does not match, and if the archive holds
/// `sender.crt`, `manifest.json` and then a 64-byte `manifest.sig`, replace
/// the signature with a genuine one over the (fuzzed) manifest, made with
/// the demo key matching `sender.crt` (or the clinic's). This lets the
/// fuzzer reach the checks that follow the manifest signature.
pub fn fix_up_tar(buf: &mut [u8]) {
    let mut off = 0usize;
    let mut long_name: Option<Vec<u8>> = None;
    let mut manifest: Option<(usize, usize)> = None;
    let mut sig: Option<usize> = None;
    let mut cert: Option<(usize, usize)> = None;
    while off + 512 <= buf.len() {
        let h = &mut buf[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let sum: u64 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&b| u64::from(b))
            .sum::<u64>()
            + 8 * 32;
        if parse_octal(&h[148..156]) != Some(sum) {
            let s = format!("{sum:06o}\0 ");
            h[148..156].copy_from_slice(&s.as_bytes()[..8]);
        }
        let size = entry_size(h);
        let typ = h[156];
        let name: Vec<u8> = match long_name.take() {
            Some(n) => n,
            None => {
                let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
                h[..end].to_vec()
            }
        };
        let data = off + 512;
        let avail = buf.len().saturating_sub(data) as u64;
        let len = size.min(avail) as usize;
        if typ == b'L' {
            let d = &buf[data..data + len];
            let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
            long_name = Some(d[..end].to_vec());
        } else if name == package::MANIFEST_PATH.as_bytes() {
            manifest = Some((data, len));
        } else if name == package::SENDER_CERT_PATH.as_bytes() {
            cert = Some((data, len));
        } else if name == package::SIGNATURE_PATH.as_bytes() && size == 64 && len == 64 {
            sig = Some(data);
        }
        let padded = size.div_ceil(512).saturating_mul(512);
        match usize::try_from(padded)
            .ok()
            .and_then(|p| data.checked_add(p))
        {
            Some(next) => off = next,
            None => break,
        }
    }
    if let (Some((m, mlen)), Some(s)) = (manifest, sig) {
        let r = &*REGION;
        let key = cert
            .and_then(|(c, clen)| CertInfo::parse_pem(&buf[c..c + clen], "sender").ok())
            .and_then(|info| r.key_for(&info.signing_key))
            .unwrap_or(&r.profile("clinic").key);
        let msg = renkei::package::Manifest::signed_message(&buf[m..m + mlen]);
        let signature = key.sign(&msg);
        buf[s..s + 64].copy_from_slice(&signature);
    }
}
