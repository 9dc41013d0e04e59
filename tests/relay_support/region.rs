//! A region for the integration tests: a CA in a temporary folder and
//! certified profiles. Shared by tests/relay_support, tests/audit_support
//! and tests/faults_support (through `#[path]`).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use renkei::identity::Kind;
use renkei::pki::ca::Ca;
use renkei::pki::CertInfo;
use renkei::profile::Profile;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A region: a CA in a temporary folder, and the CRL every profile starts with.
pub struct Region {
    pub tmp: tempfile::TempDir,
    pub ca: Ca,
    /// The first CRL (number 1), installed in every profile made here.
    pub initial_crl: String,
}

impl Region {
    /// A new region whose CA is named `name`.
    pub fn new(name: &str) -> Region {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = Ca::init(&tmp.path().join("ca"), name, 3650).expect("ca init");
        let initial_crl = ca.crl(30).expect("crl");
        Region {
            tmp,
            ca,
            initial_crl,
        }
    }

    /// The region's folder.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> Vec<u8> {
        pem::parse(self.ca_pem()).expect("ca pem").into_contents()
    }

    /// A new CRL (the next number).
    pub fn crl(&self) -> String {
        self.ca.crl(30).expect("crl")
    }

    /// A certified profile with the CA certificate and the initial CRL.
    pub fn profile(&self, id: &str, kind: Kind, name: &str) -> PathBuf {
        let dir = self.dir().join(unique(&format!("profile-{id}")));
        let dns: Vec<String> = if kind == Kind::Relay {
            vec!["localhost".into()]
        } else {
            Vec::new()
        };
        self.certified(dir, id, kind, name, &dns, &self.ca, 730)
    }

    /// Create the profile `dir` with its own keys, have `issuer` certify
    /// it for `days`, and install it with this region's CA certificate and
    /// first CRL.
    #[allow(clippy::too_many_arguments)]
    fn certified(
        &self,
        dir: PathBuf,
        id: &str,
        kind: Kind,
        name: &str,
        dns: &[String],
        issuer: &Ca,
        days: u32,
    ) -> PathBuf {
        let mut p = Profile::create(&dir, id, kind, name, dns).expect("profile create");
        let csr = fs::read(p.path(Profile::REQUEST)).expect("request");
        let req = renkei::pki::request::parse(&csr).expect("request parses");
        let cert = issuer.issue(&req, days).expect("issue");
        p.install(
            Some(cert.as_bytes()),
            Some(self.ca_pem().as_bytes()),
            Some(self.initial_crl.as_bytes()),
            None,
        )
        .expect("install");
        dir
    }

    /// Revoke the certificate of a profile and return the new CRL (PEM).
    pub fn revoke(&self, profile: &Path) -> String {
        let cert = cert_of(profile);
        self.ca.revoke(&cert).expect("revoke");
        self.crl()
    }
}

impl Region {
    /// A copy of the CA folder whose index forgets everything issued: a
    /// stolen CA key used outside the operator's records.
    pub fn stolen_ca(&self) -> PathBuf {
        let to = self.dir().join(unique("ca-stolen"));
        fs::create_dir_all(to.join("issued")).expect("stolen CA folder");
        for f in ["ca.key", "ca.crt"] {
            fs::copy(self.dir().join("ca").join(f), to.join(f)).expect("copy CA file");
        }
        fs::write(to.join("index.json"), r#"{"issued": [], "crl_number": 50}"#).expect("index");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::Permissions::from_mode(0o600);
            fs::set_permissions(to.join("ca.key"), mode).expect("chmod");
        }
        to
    }

    /// An impostor's profile for `id`: its own keys, a certificate from
    /// the CA folder `ca`, this region's CA certificate and first CRL.
    pub fn impostor(&self, ca: &Path, id: &str, kind: Kind, name: &str) -> PathBuf {
        let dir = self.dir().join(unique(&format!("impostor-{id}")));
        self.certified(dir, id, kind, name, &[], &Ca::open(ca).expect("CA"), 365)
    }
}

/// The certificate of a profile (parsed, not verified against anything).
pub fn cert_of(profile: &Path) -> CertInfo {
    let pem = fs::read(profile.join(Profile::CERT)).expect("cert.pem");
    CertInfo::parse_pem(&pem, "test certificate").expect("parse cert")
}
