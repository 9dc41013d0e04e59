//! Private keys: the Ed25519 signing key and the age X25519 identity of a
//! profile. Both zeroize on drop, have no `Debug`, and are written to files
//! with mode 0600 that are never overwritten.

use std::fs;
use std::io::Write;
use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use zeroize::{Zeroize, Zeroizing};

/// DER prefix of a PKCS#8 v1 `PrivateKeyInfo` holding an Ed25519 seed
/// (RFC 8410 §7): SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
/// OCTET STRING { OCTET STRING (32 bytes) } }.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Errors reading or writing key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists and would be overwritten.
    #[error("{0} already exists; refusing to overwrite a key (move it away first if you really mean to replace it)")]
    Exists(String),
    /// The file does not hold a key of the expected form.
    #[error("{0} does not hold an Ed25519 private key in PKCS#8 PEM form")]
    NotEd25519(String),
    /// The file does not hold an age identity.
    #[error("{0} does not hold an age identity (AGE-SECRET-KEY-1...)")]
    NotAge(String),
    /// The key file can be read by other users (as ssh, renkei refuses it).
    #[error("{path} is readable by other users (mode {mode:04o}); a private key must be readable only by its owner: run `chmod 600 {path}`")]
    NotPrivate {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Read a private key file, refusing one that its group or others may
/// read or write (any of the bits 0o077), as ssh does. The bytes are
/// zeroized when dropped.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(io_err(path))?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::NotPrivate {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &f, &mut text).map_err(io_err(path))?;
    Ok(text)
}

/// Write `bytes` to a new file with mode 0600; fail if it exists.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.display().to_string())
        } else {
            io_err(path)(e)
        }
    })?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// An Ed25519 signing key (the 32-byte seed).
pub struct SigningKey {
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Generate a fresh key from the operating system's RNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), seed.as_mut())
            .expect("the operating system RNG failed");
        Self::from_seed(seed)
    }

    fn from_seed(seed: Zeroizing<[u8; 32]>) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .expect("any 32 bytes are an Ed25519 seed");
        SigningKey { seed, pair }
    }

    /// PKCS#8 v1 DER (RFC 8410), readable by OpenSSL, curl and rustls.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(48));
        v.extend_from_slice(&PKCS8_V1_PREFIX);
        v.extend_from_slice(self.seed.as_ref());
        v
    }

    /// PKCS#8 PEM ("PRIVATE KEY").
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let der = self.to_pkcs8_der();
        Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec())))
    }

    /// Read a PKCS#8 PEM Ed25519 key (v1 or v2).
    pub fn from_pkcs8_pem(text: &str, what: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::NotEd25519(what.to_string());
        let p = pem::parse(text).map_err(|_| bad())?;
        if p.tag() != "PRIVATE KEY" {
            return Err(bad());
        }
        let der = Zeroizing::new(p.into_contents());
        // Check with ring (accepts v1 and v2), then keep only the seed.
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| bad())?;
        if der.len() < 48 || der[5..16] != PKCS8_V1_PREFIX[5..16] {
            return Err(bad());
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&der[16..48]);
        Ok(Self::from_seed(seed))
    }

    /// Load from a file, which only its owner may read ([`read_secret_file`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_secret_file(path)?;
        Self::from_pkcs8_pem(&text, &path.display().to_string())
    }

    /// Save to a new file with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        write_secret_file(path, self.to_pkcs8_pem().as_bytes())
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Sign `msg` (callers add their own domain separation).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }

    /// An rcgen key pair for making CSRs and certificates.
    pub fn to_rcgen(&self) -> rcgen::KeyPair {
        let der = self.to_pkcs8_der();
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
            .expect("a valid Ed25519 PKCS#8 key")
    }
}

/// Verify an Ed25519 signature made with [`SigningKey::sign`].
pub fn verify_ed25519(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// The age X25519 identity of a profile.
pub struct AgeIdentity(age::x25519::Identity);

impl AgeIdentity {
    /// Generate a fresh identity.
    pub fn generate() -> Self {
        AgeIdentity(age::x25519::Identity::generate())
    }

    /// The public recipient (`age1...`).
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.0.to_public()
    }

    /// The identity, for decryption.
    pub fn inner(&self) -> &age::x25519::Identity {
        &self.0
    }

    /// Save in the standard age identity file format, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use age::secrecy::ExposeSecret;
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let secret = self.0.to_string();
        let mut text = Zeroizing::new(format!(
            "# created: {created}\n# public key: {}\n{}\n",
            self.recipient(),
            secret.expose_secret()
        ));
        let r = write_secret_file(path, text.as_bytes());
        text.zeroize();
        r
    }

    /// Load an age identity file (the first `AGE-SECRET-KEY-1` line), which
    /// only its owner may read ([`read_secret_file`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_secret_file(path)?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// Read the text of an age identity file (the first `AGE-SECRET-KEY-1`
    /// line); `what` names it in errors.
    pub fn from_text(text: &str, what: &str) -> Result<Self, KeyError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .ok_or_else(|| KeyError::NotAge(what.to_string()))?;
        line.parse::<age::x25519::Identity>()
            .map(AgeIdentity)
            .map_err(|_| KeyError::NotAge(what.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_round_trip_and_sign() {
        let k = SigningKey::generate();
        let pem = k.to_pkcs8_pem();
        let k2 = SigningKey::from_pkcs8_pem(&pem, "test").unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let sig = k2.sign(b"hello");
        assert!(verify_ed25519(&k.public_key(), b"hello", &sig));
        assert!(!verify_ed25519(&k.public_key(), b"hellp", &sig));
    }

    #[test]
    fn ring_v2_documents_are_read() {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        let k = SigningKey::from_pkcs8_pem(&pem, "v2").unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        assert_eq!(&k.public_key()[..], pair.public_key().as_ref());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(SigningKey::from_pkcs8_pem("not a key", "x").is_err());
        let rsaish = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
        ));
        assert!(SigningKey::from_pkcs8_pem(&rsaish, "x").is_err());
    }

    #[test]
    fn secret_files_are_0600_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        SigningKey::generate().save(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(matches!(
            SigningKey::generate().save(&p),
            Err(KeyError::Exists(_))
        ));
        let a = dir.path().join("age.txt");
        let id = AgeIdentity::generate();
        id.save(&a).unwrap();
        assert_eq!(
            AgeIdentity::load(&a).unwrap().recipient().to_string(),
            id.recipient().to_string()
        );
    }

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("signing.key");
        let a = dir.path().join("age.key");
        SigningKey::generate().save(&k).unwrap();
        AgeIdentity::generate().save(&a).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            for p in [&k, &a] {
                fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
                let e = if p == &k {
                    SigningKey::load(p).err()
                } else {
                    AgeIdentity::load(p).err()
                };
                let e = e.unwrap_or_else(|| panic!("mode {mode:o} accepted"));
                assert!(matches!(e, KeyError::NotPrivate { .. }), "{e}");
                let msg = e.to_string();
                assert!(msg.contains(&p.display().to_string()), "{msg}");
                assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
            }
        }
        for mode in [0o600, 0o400] {
            fs::set_permissions(&k, fs::Permissions::from_mode(mode)).unwrap();
            fs::set_permissions(&a, fs::Permissions::from_mode(mode)).unwrap();
            SigningKey::load(&k).unwrap();
            AgeIdentity::load(&a).unwrap();
        }
    }
}
