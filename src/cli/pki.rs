//! The regional PKI and profiles: `ca`, `keygen`, `profile`, `cert`.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};

use super::{read, verify_failure, write_new, Failure, EXIT_USAGE};
use renkei::identity::Kind;
use renkei::pki::{self, ca::Ca, CertInfo, TrustStore};
use renkei::profile::Profile;

#[derive(Subcommand, Debug)]
pub(crate) enum CaCommand {
    /// Create a CA: an Ed25519 key (mode 0600) and a self-signed certificate.
    Init {
        /// The CA folder (created; must not hold a CA yet).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name, e.g. "○○地域医療連携ネットワーク CA".
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate from a facility's request.
    Issue {
        /// The CA folder.
        #[arg(long)]
        ca: PathBuf,
        /// The request file (request.csr from `renkei keygen`).
        #[arg(long)]
        request: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
    },
    /// Revoke a certificate this CA issued (then publish a new CRL).
    Revoke {
        /// The CA folder.
        #[arg(long)]
        ca: PathBuf,
        /// The certificate to revoke.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Write the current CRL.
    Crl {
        /// The CA folder.
        #[arg(long)]
        ca: PathBuf,
        /// Where to write the CRL (PEM).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Days until the next update.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Compare every certificate published in the relay's log with this
    /// CA's records (index.json, issued/); exit 3 if the log holds one the
    /// CA never issued.
    Reconcile {
        /// The CA folder (index.json and issued/ are read; ca.key is not needed).
        #[arg(long)]
        ca: PathBuf,
        // --profile: a profile that can reach the relay (the operator's,
        // an auditor's); --relay: default the profile's.
        #[command(flatten)]
        conn: super::Conn,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct KeygenArgs {
    /// The profile folder to create.
    #[arg(long)]
    profile: PathBuf,
    /// The 10-digit medical institution code (for a relay or auditor: a short ID such as relay-1).
    #[arg(long = "facility-id", alias = "id")]
    facility_id: String,
    /// The facility's name as it should appear to others.
    #[arg(long)]
    name: String,
    /// What the facility is.
    #[arg(long, value_enum)]
    kind: Kind,
    /// DNS name clients connect to (relay only; may repeat).
    #[arg(long)]
    dns: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ProfileCommand {
    /// Install the issued certificate, the CA certificate, the CRL, the relay address.
    Install {
        /// The profile folder.
        #[arg(long)]
        profile: PathBuf,
        /// The certificate the CA issued for this profile.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The region's CA certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The CA's current CRL.
        #[arg(long)]
        crl: Option<PathBuf>,
        /// The relay URL (https://HOST:PORT).
        #[arg(long)]
        relay: Option<String>,
        /// A witness's verifier key (name+keyid+base64(0x04||key)) whose cosignatures count; repeatable.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Valid cosignatures of known witnesses a checkpoint needs before this profile accepts it.
        #[arg(long = "witness-quorum")]
        witness_quorum: Option<usize>,
    },
    /// Show the profile.
    Show {
        /// The profile folder.
        #[arg(long)]
        profile: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CertCommand {
    /// Show what a certificate binds.
    Show {
        /// The certificate (PEM or DER).
        cert: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Verify a certificate against a CA certificate (and CRL).
    Verify {
        /// The certificate.
        cert: PathBuf,
        /// The region's CA certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The CA's CRL.
        #[arg(long)]
        crl: Option<PathBuf>,
    },
}

pub(crate) fn ca(c: CaCommand) -> Result<(), Failure> {
    match c {
        CaCommand::Init { dir, name, days } => {
            let ca = Ca::init(&dir, &name, days)?;
            let info = x509_fingerprint(ca.cert_pem());
            println!("created CA {name:?} in {}", dir.display());
            println!("  certificate: {}", dir.join("ca.crt").display());
            println!(
                "  key:         {} (mode 0600; keep it offline)",
                dir.join("ca.key").display()
            );
            println!("  fingerprint: {info}");
        }
        CaCommand::Issue {
            ca,
            request,
            out,
            days,
        } => {
            let ca = Ca::open(&ca)?;
            if out.exists() {
                return Err(anyhow!(
                    "{} already exists; choose another name or move it away (nothing was issued)",
                    out.display()
                )
                .into());
            }
            let bytes = read(&request)?;
            let req =
                pki::request::parse(&bytes).with_context(|| format!("{}", request.display()))?;
            let pem = ca.issue(&req, days)?;
            write_new(&out, pem.as_bytes())?;
            let info = CertInfo::parse_pem(pem.as_bytes(), "issued")?;
            println!(
                "issued certificate {} for {} {} ({}), valid until {}",
                info.serial, info.kind, info.id, info.name, info.not_after
            );
            println!("  written to {}", out.display());
        }
        CaCommand::Revoke { ca, cert } => {
            let ca = Ca::open(&ca)?;
            let info = CertInfo::parse_pem(&read(&cert)?, &cert.display().to_string())?;
            let e = ca.revoke(&info)?;
            println!(
                "revoked certificate {} of {} ({}) at {}; publish a new CRL with `renkei ca crl`",
                e.serial,
                e.id,
                e.name,
                pki::cert::rfc3339(e.revoked_at.unwrap_or_default())
            );
        }
        CaCommand::Reconcile { ca, conn, json } => {
            let records = pki::ca::Records::open(&ca)?;
            return super::net(|| async move {
                let s = super::session(&conn).await?;
                let r = s.reconcile_ca(&records).await.map_err(super::op_failure)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!(
                        "{} certificates in the relay's log up to tree size {}; {} not in the records of {}",
                        r.certificates,
                        r.tree_size,
                        r.unrecorded.len(),
                        ca.display()
                    );
                    for u in &r.unrecorded {
                        println!(
                            "NOT ISSUED BY THIS CA (by its records): log index {}, {} {} ({}), published {}\n  \
                             serial {}, fingerprint {}, issuer {}\n  {}",
                            u.log_index, u.kind, u.facility_id, u.name, u.published_at,
                            u.serial, u.fingerprint, u.issuer, u.why
                        );
                    }
                }
                if !r.unrecorded.is_empty() {
                    return Err(verify_failure(anyhow!(
                        "{} certificates in the relay's log are not in this CA's records: the CA key may be \
                         compromised or the records damaged; revoke them (`renkei ca revoke --cert FILE` \
                         with the PEM from --json, then a new CRL) and tell the facilities named",
                        r.unrecorded.len()
                    )));
                }
                Ok(())
            });
        }
        CaCommand::Crl { ca, out, days } => {
            let ca = Ca::open(&ca)?;
            let pem = ca.crl(days)?;
            pki::ca::write_file_atomic(&out, pem.as_bytes())?;
            let revoked = ca
                .index()?
                .issued
                .iter()
                .filter(|e| e.revoked_at.is_some())
                .count();
            println!(
                "wrote CRL to {} ({revoked} revoked certificates)",
                out.display()
            );
        }
    }
    Ok(())
}

pub(crate) fn x509_fingerprint(pem_text: &str) -> String {
    pki::read_pem_or_der(pem_text.as_bytes(), "CERTIFICATE")
        .map(|d| pki::sha256_hex(&d))
        .unwrap_or_default()
}

pub(crate) fn keygen(a: KeygenArgs) -> Result<(), Failure> {
    let p = Profile::create(&a.profile, &a.facility_id, a.kind, &a.name, &a.dns)?;
    println!(
        "created profile {} for {} {} ({})",
        a.profile.display(),
        a.kind,
        p.config.id,
        a.name
    );
    println!(
        "  signing key:  {} (mode 0600)",
        p.path(Profile::SIGNING_KEY).display()
    );
    println!(
        "  age identity: {} (mode 0600)",
        p.path(Profile::AGE_KEY).display()
    );
    println!("  request:      {}", p.path(Profile::REQUEST).display());
    println!("next: send the request to the region's CA, then run `renkei profile install --profile {} --cert CERT --ca CA.crt`", a.profile.display());
    Ok(())
}

pub(crate) fn profile(c: ProfileCommand) -> Result<(), Failure> {
    match c {
        ProfileCommand::Install {
            profile,
            cert,
            ca,
            crl,
            relay,
            witnesses,
            witness_quorum,
        } => {
            let mut p = Profile::open(&profile)?;
            let cert = cert.map(|c| read(&c)).transpose()?;
            let ca = ca.map(|c| read(&c)).transpose()?;
            let crl = crl.map(|c| read(&c)).transpose()?;
            let pki_items = cert.is_some() || ca.is_some() || crl.is_some() || relay.is_some();
            if !pki_items && witnesses.is_empty() && witness_quorum.is_none() {
                return Err(Failure {
                    code: EXIT_USAGE,
                    error: anyhow!(
                        "nothing to install: give --cert, --ca, --crl, --relay, --witness or --witness-quorum"
                    ),
                });
            }
            let mut done = Vec::new();
            if pki_items {
                done = p.install(
                    cert.as_deref(),
                    ca.as_deref(),
                    crl.as_deref(),
                    relay.as_deref(),
                )?;
            }
            if !witnesses.is_empty() || witness_quorum.is_some() {
                done.extend(p.install_witnesses(&witnesses, witness_quorum)?);
            }
            println!("installed into {}: {}", profile.display(), done.join(", "));
        }
        ProfileCommand::Show { profile, json } => {
            let p = Profile::open(&profile)?;
            let cert = p.certificate().ok();
            if json {
                let v = serde_json::json!({
                    "id": p.config.id, "kind": p.config.kind, "name": p.config.name,
                    "relay": p.config.relay, "certificate": cert,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} {} ({})", p.config.kind, p.config.id, p.config.name);
                if let Some(r) = &p.config.relay {
                    println!("relay: {r}");
                }
                match cert {
                    Some(c) => println!(
                        "certificate: valid until {}, fingerprint {}",
                        c.not_after, c.fingerprint
                    ),
                    None => println!("certificate: not installed or not valid"),
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn print_cert(info: &CertInfo) {
    println!("ID:            {}", info.id);
    println!("name:          {}", info.name);
    println!("kind:          {}", info.kind);
    println!("issuer:        {}", info.issuer);
    println!("valid:         {} to {}", info.not_before, info.not_after);
    if let Some(r) = &info.age_recipient {
        println!("age recipient: {r}");
    }
    for d in &info.dns_names {
        println!("DNS name:      {d}");
    }
    println!("signing key:   {}", hex::encode(info.signing_key));
    println!("serial:        {}", info.serial);
    println!("fingerprint:   SHA-256 {}", info.fingerprint);
}

pub(crate) fn cert(c: CertCommand) -> Result<(), Failure> {
    match c {
        CertCommand::Show { cert, json } => {
            let info = CertInfo::parse_pem(&read(&cert)?, &cert.display().to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_cert(&info);
            }
        }
        CertCommand::Verify { cert, ca, crl } => {
            let trust =
                TrustStore::new(&read(&ca)?, crl.map(|c| read(&c)).transpose()?.as_deref())?;
            let info = CertInfo::parse_pem(&read(&cert)?, &cert.display().to_string())?;
            let info = trust.verify(&info.der, None).map_err(verify_failure)?;
            println!(
                "OK: {} {} ({}) is certified by {}, valid until {}{}",
                info.kind,
                info.id,
                info.name,
                trust.ca_name,
                info.not_after,
                if trust.crl_der().is_some() {
                    ", not revoked"
                } else {
                    " (no CRL checked)"
                }
            );
        }
    }
    Ok(())
}
