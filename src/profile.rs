//! A facility's profile folder: configuration, keys, certificate, the
//! region's CA certificate and CRL.
//!
//! ```text
//! PROFILE/profile.toml   id, kind, name, relay URL, [witnesses] keys and quorum
//! PROFILE/signing.key    Ed25519 PKCS#8 PEM, mode 0600
//! PROFILE/age.key        age X25519 identity, mode 0600
//! PROFILE/request.csr    the certificate request for the CA
//! PROFILE/cert.pem       the certificate the CA issued
//! PROFILE/ca.pem         the region's CA certificate (the only trust anchor)
//! PROFILE/crl.pem        the CA's current CRL
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::{FacilityId, Kind, PrincipalId};
use crate::keys::{AgeIdentity, KeyError, SigningKey};
use crate::pki::{self, CertError, CertInfo, TrustStore};

/// Profile errors.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A certificate problem.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A request problem.
    #[error(transparent)]
    Request(#[from] pki::request::RequestError),
    /// The folder is not (or not yet) a usable profile.
    #[error("{0}")]
    NotReady(String),
    /// A bad configuration file.
    #[error("{path}: {why}")]
    Config {
        /// Path.
        path: String,
        /// Parse error.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
    move |source| ProfileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// profile.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Facility or service ID.
    pub id: String,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// Relay URL (`https://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// How this facility's client talks to the relay (`[client]`).
    #[serde(default, skip_serializing_if = "ClientSettings::is_default")]
    pub client: ClientSettings,
    /// The liaison office's desk (`[desk]`).
    #[serde(default, skip_serializing_if = "DeskSettings::is_default")]
    pub desk: DeskSettings,
    /// Revocation checking (`[revocation]`).
    #[serde(default, skip_serializing_if = "RevocationSettings::is_default")]
    pub revocation: RevocationSettings,
    /// The witnesses whose cosignatures a checkpoint needs (`[witnesses]`).
    #[serde(default, skip_serializing_if = "WitnessPolicy::is_default")]
    pub witnesses: WitnessPolicy,
}

/// The `[revocation]` section of profile.toml; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationSettings {
    /// Days after the CRL's `nextUpdate` during which it is still used
    /// (every command warns); after them, sealing to, opening from and (on
    /// a relay) serving facilities fails until a current CRL is installed.
    pub crl_grace_days: u32,
}

impl Default for RevocationSettings {
    fn default() -> Self {
        RevocationSettings {
            crl_grace_days: pki::DEFAULT_CRL_GRACE_DAYS,
        }
    }
}

impl RevocationSettings {
    fn is_default(&self) -> bool {
        *self == RevocationSettings::default()
    }
}

/// The `[witnesses]` section of profile.toml: the witnesses this facility
/// knows and how many of them must have cosigned a checkpoint before the
/// client accepts it (and anything proved through it). Empty: the relay's
/// signature alone is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessPolicy {
    /// Witness verifier keys (`name+keyid+base64(0x04 || key)`).
    pub keys: Vec<String>,
    /// Valid cosignatures of distinct known witnesses required.
    pub quorum: usize,
}

impl WitnessPolicy {
    fn is_default(&self) -> bool {
        *self == WitnessPolicy::default()
    }

    /// The parsed keys and the quorum; a quorum over the number of keys,
    /// or a malformed key, is a configuration error.
    pub fn parsed(
        &self,
    ) -> Result<(Vec<crate::log::cosignature::WitnessKey>, usize), ProfileError> {
        let bad = |why: String| ProfileError::Config {
            path: "profile.toml [witnesses]".into(),
            why,
        };
        let keys = self
            .keys
            .iter()
            .map(|k| {
                crate::log::cosignature::WitnessKey::parse(k)
                    .map_err(|e| bad(format!("{k:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.quorum > keys.len() {
            return Err(bad(format!(
                "a quorum of {} needs at least as many witness keys (there are {})",
                self.quorum,
                keys.len()
            )));
        }
        Ok((keys, self.quorum))
    }
}

/// The `[desk]` section of profile.toml (`renkei desk`); every field has a
/// default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskSettings {
    /// Loopback port to serve on (a free one when absent).
    pub port: Option<u16>,
    /// Seconds between background syncs with the relay.
    pub sync_interval_secs: u64,
    /// Minutes without use after which the desk locks.
    pub idle_lock_minutes: u64,
    /// Days after which a referral without a reply (返書) is overdue.
    pub overdue_days: u32,
}

impl Default for DeskSettings {
    fn default() -> Self {
        DeskSettings {
            port: None,
            sync_interval_secs: 30,
            idle_lock_minutes: 30,
            overdue_days: 14,
        }
    }
}

impl DeskSettings {
    fn is_default(&self) -> bool {
        *self == DeskSettings::default()
    }
}

/// The `[client]` section of profile.toml; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// Seconds to reach the relay (TCP and TLS) before giving up.
    pub connect_timeout_secs: u64,
    /// Seconds a request, upload or download may make no progress.
    pub stall_timeout_secs: u64,
    /// Days an envelope the relay accepted stays in the outbox.
    pub outbox_retention_days: u64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout_secs: 15,
            stall_timeout_secs: 60,
            outbox_retention_days: 7,
        }
    }
}

impl ClientSettings {
    fn is_default(&self) -> bool {
        *self == ClientSettings::default()
    }
}

/// An opened profile folder.
pub struct Profile {
    /// The folder.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: Config,
}

impl Profile {
    /// File names inside a profile.
    pub const CONFIG: &'static str = "profile.toml";
    /// Signing key file.
    pub const SIGNING_KEY: &'static str = "signing.key";
    /// age identity file.
    pub const AGE_KEY: &'static str = "age.key";
    /// CSR file.
    pub const REQUEST: &'static str = "request.csr";
    /// Certificate file.
    pub const CERT: &'static str = "cert.pem";
    /// CA certificate file.
    pub const CA: &'static str = "ca.pem";
    /// CRL file.
    pub const CRL: &'static str = "crl.pem";

    /// Create a profile: keys, CSR, configuration. Refuses an existing one.
    pub fn create(
        dir: &Path,
        id: &str,
        kind: Kind,
        name: &str,
        dns_names: &[String],
    ) -> Result<Profile, ProfileError> {
        let principal =
            PrincipalId::parse(kind, id).map_err(|e| ProfileError::NotReady(e.to_string()))?;
        pki::request::check_name(name)?;
        for d in dns_names {
            pki::request::check_dns(d)?;
        }
        if kind == Kind::Relay && dns_names.is_empty() {
            return Err(ProfileError::NotReady(
                "a relay needs --dns NAME (the name clients connect to)".into(),
            ));
        }
        if kind != Kind::Relay && !dns_names.is_empty() {
            return Err(ProfileError::NotReady("only a relay takes --dns".into()));
        }
        if dir.join(Self::SIGNING_KEY).exists()
            || dir.join(Self::AGE_KEY).exists()
            || dir.join(Self::CONFIG).exists()
        {
            return Err(ProfileError::NotReady(format!(
                "{} already holds a profile; refusing to overwrite its keys",
                dir.display()
            )));
        }
        // A new folder is made private (0700); an existing one (`--profile .`)
        // keeps its permissions: the key files themselves are 0600.
        if !dir.is_dir() {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut b = fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(dir).map_err(io(dir))?;
        }
        let key = SigningKey::generate();
        let age = AgeIdentity::generate();
        let recipient = kind.is_facility().then(|| age.recipient().to_string());
        let csr = pki::request::build(
            &key,
            &principal,
            kind,
            name,
            recipient.as_deref(),
            dns_names,
        )?;
        key.save(&dir.join(Self::SIGNING_KEY))?;
        age.save(&dir.join(Self::AGE_KEY))?;
        let config = Config {
            id: principal.to_string(),
            kind,
            name: name.to_string(),
            relay: None,
            client: ClientSettings::default(),
            desk: DeskSettings::default(),
            revocation: RevocationSettings::default(),
            witnesses: WitnessPolicy::default(),
        };
        write(&dir.join(Self::REQUEST), csr.as_bytes())?;
        let profile = Profile {
            dir: dir.to_path_buf(),
            config,
        };
        profile.save_config()?;
        Ok(profile)
    }

    /// Open an existing profile.
    pub fn open(dir: &Path) -> Result<Profile, ProfileError> {
        let p = dir.join(Self::CONFIG);
        let text = fs::read_to_string(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ProfileError::NotReady(format!(
                    "{} is not a renkei profile (no {}); create one with `renkei keygen`",
                    dir.display(),
                    Self::CONFIG
                ))
            } else {
                io(&p)(e)
            }
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ProfileError::Config {
            path: p.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(Profile {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Write profile.toml.
    pub fn save_config(&self) -> Result<(), ProfileError> {
        let text = toml::to_string(&self.config).expect("serializable");
        write(&self.dir.join(Self::CONFIG), text.as_bytes())
    }

    /// Path of a file in the profile.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The signing key.
    pub fn signing_key(&self) -> Result<SigningKey, ProfileError> {
        Ok(SigningKey::load(&self.path(Self::SIGNING_KEY))?)
    }

    /// The age identity.
    pub fn age_identity(&self) -> Result<AgeIdentity, ProfileError> {
        Ok(AgeIdentity::load(&self.path(Self::AGE_KEY))?)
    }

    /// The trust store: the CA certificate and the CRL if installed.
    pub fn trust(&self) -> Result<TrustStore, ProfileError> {
        let ca_path = self.path(Self::CA);
        let ca = fs::read(&ca_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ProfileError::NotReady(format!(
                    "{} has no CA certificate; install it with `renkei profile install --profile {} --ca CA.crt`",
                    self.dir.display(),
                    self.dir.display()
                ))
            } else {
                io(&ca_path)(e)
            }
        })?;
        let crl_path = self.path(Self::CRL);
        let crl = match fs::read(&crl_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&crl_path)(e)),
        };
        let refresh = if self.config.kind == Kind::Relay {
            "make a new CRL with `renkei ca crl` and publish it to the relay with `renkei crl publish` (the relay picks it up within seconds)".to_string()
        } else {
            format!(
                "`renkei crl fetch --profile {dir}` (from the relay), or `renkei profile install --profile {dir} --crl FILE` with the CA's current CRL",
                dir = self.dir.display()
            )
        };
        Ok(TrustStore::new(&ca, crl.as_deref())?
            .with_crl_grace_days(self.config.revocation.crl_grace_days)
            .with_crl_source(format!("the CRL in {}", crl_path.display()), refresh))
    }

    /// A warning when the installed CRL is past its `nextUpdate`, for the
    /// front-ends to show (every CLI command prints it on stderr).
    pub fn crl_warning(&self) -> Option<String> {
        self.trust().ok()?.crl_warning(None)
    }

    /// This profile's own certificate, verified against its CA.
    pub fn certificate(&self) -> Result<CertInfo, ProfileError> {
        let p = self.path(Self::CERT);
        let bytes = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ProfileError::NotReady(format!(
                    "{} has no certificate yet; send {} to the CA, then run `renkei profile install --profile {} --cert CERT`",
                    self.dir.display(),
                    self.path(Self::REQUEST).display(),
                    self.dir.display()
                ))
            } else {
                io(&p)(e)
            }
        })?;
        let info = CertInfo::parse_pem(&bytes, &p.display().to_string())?;
        Ok(self.trust()?.verify(&info.der, None)?)
    }

    /// The facility ID (errors for relay/auditor profiles).
    pub fn facility_id(&self) -> Result<FacilityId, ProfileError> {
        self.config
            .id
            .parse()
            .map_err(|e: crate::identity::IdError| ProfileError::NotReady(e.to_string()))
    }

    /// Install certificate, CA certificate, CRL and relay URL. The CA is
    /// installed first; the certificate must chain to it and match this
    /// profile's signing key and age identity.
    pub fn install(
        &mut self,
        cert: Option<&[u8]>,
        ca: Option<&[u8]>,
        crl: Option<&[u8]>,
        relay: Option<&str>,
    ) -> Result<Vec<String>, ProfileError> {
        let mut done = Vec::new();
        let ca_bytes = match ca {
            Some(b) => {
                TrustStore::new(b, None)?;
                b.to_vec()
            }
            None => fs::read(self.path(Self::CA)).map_err(|_| {
                ProfileError::NotReady(
                    "install the region's CA certificate first (--ca CA.crt)".into(),
                )
            })?,
        };
        let crl_bytes = match crl {
            Some(b) => Some(b.to_vec()),
            None => fs::read(self.path(Self::CRL)).ok(),
        };
        let trust = TrustStore::new(&ca_bytes, crl_bytes.as_deref())?;
        if let (Some(new), Ok(old)) = (crl, fs::read(self.path(Self::CRL))) {
            let old = TrustStore::new(&ca_bytes, Some(&old)).ok();
            let old_n = old
                .as_ref()
                .map(|t| crate::pki::crl_number(t.crl_der()))
                .unwrap_or(0);
            let new_n = crate::pki::crl_number(TrustStore::new(&ca_bytes, Some(new))?.crl_der());
            if new_n < old_n {
                return Err(ProfileError::NotReady(format!(
                    "this CRL (number {new_n}) is older than the installed one (number {old_n}); not installed"
                )));
            }
        }
        let mut cert_pem = None;
        if let Some(c) = cert {
            let info = CertInfo::parse_pem(c, "certificate")?;
            let info = trust.verify(&info.der, None)?;
            if info.signing_key != self.signing_key()?.public_key() {
                return Err(ProfileError::NotReady(
                    "this certificate was issued for another signing key, not this profile's"
                        .into(),
                ));
            }
            if info.id.to_string() != self.config.id || info.kind != self.config.kind {
                return Err(ProfileError::NotReady(format!(
                    "this certificate is for {} ({}), not for this profile's {} ({})",
                    info.id, info.kind, self.config.id, self.config.kind
                )));
            }
            if info.kind.is_facility()
                && info.age_recipient.as_deref()
                    != Some(&self.age_identity()?.recipient().to_string())
            {
                return Err(ProfileError::NotReady(
                    "this certificate names another age recipient than this profile's".into(),
                ));
            }
            cert_pem = Some(info.pem());
        }
        if ca.is_some() {
            write(&self.path(Self::CA), &ca_bytes)?;
            done.push(format!("CA certificate ({})", trust.ca_name));
        }
        if let Some(b) = crl {
            write(&self.path(Self::CRL), b)?;
            done.push("CRL".into());
        }
        if let Some(p) = cert_pem {
            write(&self.path(Self::CERT), p.as_bytes())?;
            done.push("certificate".into());
        }
        if let Some(r) = relay {
            if !r.starts_with("https://") {
                return Err(ProfileError::NotReady(format!(
                    "relay URL {r:?} must start with https://"
                )));
            }
            self.config.relay = Some(r.trim_end_matches('/').to_string());
            self.save_config()?;
            done.push(format!("relay {r}"));
        }
        Ok(done)
    }
}

impl Profile {
    /// Add witness keys (already known ones are kept once) and set the
    /// quorum; the result must be a usable policy.
    pub fn install_witnesses(
        &mut self,
        keys: &[String],
        quorum: Option<usize>,
    ) -> Result<Vec<String>, ProfileError> {
        let mut policy = self.config.witnesses.clone();
        let mut done = Vec::new();
        for k in keys {
            let parsed = crate::log::cosignature::WitnessKey::parse(k)
                .map_err(|e| ProfileError::NotReady(format!("--witness {k:?}: {e}")))?;
            let enc = parsed.encode();
            if !policy.keys.contains(&enc) {
                policy.keys.push(enc);
                done.push(format!("witness {}", parsed.name()));
            }
        }
        if let Some(q) = quorum {
            policy.quorum = q;
            done.push(format!("witness quorum {q}"));
        }
        policy
            .parsed()
            .map_err(|e| ProfileError::NotReady(e.to_string()))?;
        self.config.witnesses = policy;
        self.save_config()?;
        Ok(done)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ProfileError> {
    pki::ca::write_file_atomic(path, bytes).map_err(|e| ProfileError::NotReady(e.to_string()))
}
