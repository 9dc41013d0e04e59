//! The `renkei` command line: argument parsing and the thin glue between
//! files and the library. Exit status: 0 ok, 1 failure, 2 usage, 3
//! verification failed.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::identity::Kind;
use crate::package::{self, Limits, MemberSource, PackageKind};
use crate::pki::{self, ca::Ca, CertInfo, TrustStore};
use crate::profile::Profile;

/// Exit status for success.
pub const EXIT_OK: u8 = 0;
/// Exit status for a failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when verification of a package or certificate failed.
pub const EXIT_VERIFY: u8 = 3;

/// A failure with its exit status.
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: EXIT_FAILURE,
            error: e.into(),
        }
    }
}

fn verify_failure(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_VERIFY,
        error: e.into(),
    }
}

/// renkei (連携): end-to-end encrypted referral letters between the medical
/// facilities of a region.
#[derive(Parser, Debug)]
#[command(name = "renkei", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The regional CA: create it, issue and revoke certificates, make CRLs.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Create a profile folder: signing key, age identity and a request for the CA.
    Keygen(KeygenArgs),
    /// Manage a profile folder.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Show or verify certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Seal a package: sign it and encrypt it for its recipients.
    Seal(SealArgs),
    /// Open a package: decrypt, verify everything, then release its members.
    Open(OpenArgs),
    /// Run the relay server.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// The facility directory on the relay.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Publish or fetch the CA's CRL through the relay.
    #[command(subcommand)]
    Crl(CrlCommand),
    /// Seal a package for facilities found in the directory and upload it to the relay.
    Send(SendArgs),
    /// List envelopes waiting for this facility.
    Inbox(InboxArgs),
    /// Download, verify and store envelopes; post signed delivery receipts.
    Receive(ReceiveArgs),
    /// Show the delivery status of sent packages, each backed by a verified receipt.
    Status(StatusArgs),
    /// Audit the relay's transparency log (auditor profile).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write, check and read JP-CLINS clinical documents (FHIR Document Bundles).
    #[command(subcommand)]
    Document(crate::document::cli::DocumentCommand),
    /// Walk through a whole referral round trip with the demo keys.
    Demo(DemoArgs),
    /// Referral threads (紹介の経過): list them, show one's timeline, close one.
    Referrals(ReferralsArgs),
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ReferralsArgs {
    #[command(subcommand)]
    action: Option<ReferralsCommand>,
    #[command(flatten)]
    from: ReferralsFrom,
    /// Only open or only closed threads.
    #[arg(long, value_enum)]
    status: Option<crate::client::threads::StatusFilter>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReferralsFrom {
    /// The facility's profile folder.
    #[arg(long, required = true)]
    profile: Option<PathBuf>,
    /// First fetch and verify the receipts of every sent package from the relay (as `renkei status` does).
    #[arg(long)]
    sync: bool,
    /// The relay URL for --sync (default: the profile's).
    #[arg(long, requires = "sync")]
    relay: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ReferralsCommand {
    /// Show one thread's timeline: every package with its time, direction, kind, counterpart and receipts.
    Show {
        #[command(flatten)]
        from: ReferralsFrom,
        /// The thread ID (or the ID of any package in it).
        thread: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Close a thread: local bookkeeping of this facility's liaison office; nothing is sent.
    Close {
        /// The facility's profile folder.
        #[arg(long)]
        profile: PathBuf,
        /// The thread ID (or the ID of any package in it).
        thread: String,
        /// Why it is closed.
        #[arg(long)]
        note: Option<String>,
        /// Who closes it (default: this facility's ID).
        #[arg(long)]
        by: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Fetch new log entries, verify every receipt and the new checkpoint's consistency with the last one.
    Sync {
        #[command(flatten)]
        conn: Conn,
        /// Re-download and re-verify the whole log, comparing it with what was verified before.
        #[arg(long)]
        full: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The chain of custody of one envelope.
    Envelope {
        #[command(flatten)]
        conn: Conn,
        /// The envelope ID.
        envelope: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Counts per facility, overdue envelopes, rejections, problems found.
    Report {
        #[command(flatten)]
        conn: Conn,
        /// Only receipts signed on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Compare this auditor's verified log with another auditor's audit.db (fork detection).
    Compare {
        #[command(flatten)]
        conn: Conn,
        /// The other auditor's audit.db.
        other: PathBuf,
    },
    /// Check a receipt bundle offline with the CA certificate and the relay's verifier key.
    VerifyReceipt {
        /// The bundle (from `renkei status --export DIR`).
        file: PathBuf,
        /// The region's CA certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The relay's verifier key (from `renkei relay vkey`), or a file holding it.
        #[arg(long = "relay-vkey")]
        relay_vkey: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ReportFormat {
    Text,
    Json,
    Csv,
}

#[derive(Args, Debug, Clone)]
struct Conn {
    /// The facility's profile folder.
    #[arg(long)]
    profile: PathBuf,
    /// The relay URL (default: the profile's).
    #[arg(long)]
    relay: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// Print the relay's checkpoint verifier key (C2SP signed-note format).
    Vkey {
        /// The relay's profile folder.
        #[arg(long)]
        profile: PathBuf,
    },
    /// Serve the relay API over mutual TLS.
    Serve {
        /// The relay's profile folder (kind relay).
        #[arg(long)]
        profile: PathBuf,
        /// The data folder (SQLite database and ciphertext).
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Settings file (TOML: max_upload_bytes, expiry_after_secs, delete_after_secs, sweep_interval_secs).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Database URL instead of the embedded SQLite (postgres://...).
        #[arg(long = "database-url")]
        database_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DirectoryCommand {
    /// Publish this facility's certificate.
    Publish {
        #[command(flatten)]
        conn: Conn,
    },
    /// Search the directory (every certificate is verified against the CA and CRL).
    Search {
        #[command(flatten)]
        conn: Conn,
        /// Part of the name.
        #[arg(long)]
        name: Option<String>,
        /// Kind.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one facility.
    Show {
        #[command(flatten)]
        conn: Conn,
        /// Facility ID.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CrlCommand {
    /// Publish a CRL made by `renkei ca crl` (anyone may; the relay checks the CA's signature and that it is newer).
    Publish {
        #[command(flatten)]
        conn: Conn,
        /// The CRL file.
        #[arg(long)]
        crl: PathBuf,
    },
    /// Fetch the relay's CRL into the profile if it is newer.
    Fetch {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args, Debug)]
struct SendArgs {
    #[command(flatten)]
    conn: Conn,
    /// Recipient facility ID (repeat for several).
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// The clinical document (FHIR JSON).
    #[arg(long)]
    document: PathBuf,
    /// An attachment (repeat for several).
    #[arg(long = "attach")]
    attach: Vec<PathBuf>,
    /// What the package is.
    #[arg(long, value_enum, default_value_t = PackageKind::Referral)]
    kind: PackageKind,
    /// The package this one answers.
    #[arg(long = "in-reply-to")]
    in_reply_to: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InboxArgs {
    #[command(flatten)]
    conn: Conn,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReceiveArgs {
    #[command(flatten)]
    conn: Conn,
    /// The envelope to receive.
    envelope: Option<String>,
    /// Receive everything waiting.
    #[arg(long, conflicts_with = "envelope")]
    all: bool,
    /// Where verified packages go (default PROFILE/received).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// Also write the document, rendered in Japanese, into each package's
    /// folder (`document.txt` or `document.html`).
    #[arg(long, value_enum, value_name = "FORMAT")]
    render: Option<crate::document::Format>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    conn: Conn,
    /// One envelope (default: all sent).
    envelope: Option<String>,
    /// All sent packages.
    #[arg(long, conflicts_with = "envelope")]
    all: bool,
    /// Write every verified receipt bundle into this folder (for offline verification).
    #[arg(long)]
    export: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum CaCommand {
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
}

#[derive(Args, Debug)]
struct KeygenArgs {
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
enum ProfileCommand {
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
enum CertCommand {
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

#[derive(Args, Debug)]
struct SealArgs {
    /// The sender's profile folder.
    #[arg(long)]
    profile: PathBuf,
    /// A recipient's certificate (repeat for several recipients).
    #[arg(long = "to", required = true)]
    to: Vec<PathBuf>,
    /// The clinical document (FHIR JSON).
    #[arg(long)]
    document: PathBuf,
    /// An attachment (repeat for several).
    #[arg(long = "attach")]
    attach: Vec<PathBuf>,
    /// What the package is.
    #[arg(long, value_enum, default_value_t = PackageKind::Referral)]
    kind: PackageKind,
    /// The package this one answers.
    #[arg(long = "in-reply-to")]
    in_reply_to: Option<String>,
    /// The referral thread ID (default: a new thread, or, with --in-reply-to, the answered package's ID; `send` looks the real thread up in the local store).
    #[arg(long)]
    thread: Option<String>,
    /// Do not encrypt a copy to the sender's own key.
    #[arg(long = "no-self-copy")]
    no_self_copy: bool,
    /// Output file, or - for standard output.
    #[arg(short = 'o', long = "out")]
    out: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct OpenArgs {
    /// The recipient's profile folder.
    #[arg(long)]
    profile: PathBuf,
    /// The package file, or - for standard input.
    input: String,
    /// The folder to create for the verified members (must not exist).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Also write the document, rendered in Japanese, into the folder
    /// (`document.txt` or `document.html`).
    #[arg(long, value_enum, value_name = "FORMAT")]
    render: Option<crate::document::Format>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// The demo keys folder.
    #[arg(long, default_value = "keys-example")]
    keys: PathBuf,
}

/// Run the CLI; returns the exit status.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Ca(c) => ca(c),
        Command::Keygen(a) => keygen(a),
        Command::Profile(c) => profile(c),
        Command::Cert(c) => cert(c),
        Command::Seal(a) => seal(a),
        Command::Open(a) => open(a),
        Command::Relay(c) => relay(c),
        Command::Directory(c) => net(|| directory(c)),
        Command::Crl(c) => net(|| crl(c)),
        Command::Send(a) => net(|| send(a)),
        Command::Inbox(a) => net(|| inbox(a)),
        Command::Receive(a) => net(|| receive(a)),
        Command::Status(a) => net(|| status(a)),
        Command::Audit(c) => net(|| audit(c)),
        Command::Document(c) => crate::document::cli::run(c).map_err(|e| {
            if e.is_validation_failure() {
                verify_failure(e)
            } else {
                Failure::from(e)
            }
        }),
        Command::Demo(a) => crate::demo::run(&a.keys),
        Command::Referrals(a) => net(|| referrals(a)),
    }
}

fn thread_failure(e: crate::client::threads::ThreadError) -> Failure {
    let code = match e {
        crate::client::threads::ThreadError::BadId(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    };
    Failure {
        code,
        error: e.into(),
    }
}

/// Open the profile's local store, after a `--sync` with the relay if asked.
async fn referrals_store(
    from: &ReferralsFrom,
) -> Result<crate::client::store::LocalStore, Failure> {
    let dir = from.profile.clone().ok_or_else(|| Failure {
        code: EXIT_USAGE,
        error: anyhow!("give --profile PROFILE"),
    })?;
    Profile::open(&dir)?;
    if from.sync {
        let s = crate::client::ops::Session::open(&dir, from.relay.as_deref())
            .await
            .map_err(op_failure)?;
        s.status(None).await.map_err(op_failure)?;
    }
    let store = crate::client::store::LocalStore::open(&dir)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(store)
}

async fn referrals(a: ReferralsArgs) -> Result<(), Failure> {
    use crate::client::threads::{format_list, format_timeline};
    match a.action {
        None => {
            let store = referrals_store(&a.from).await?;
            let list = store.threads(a.status).await.map_err(thread_failure)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", format_list(&list));
            }
        }
        Some(ReferralsCommand::Show { from, thread, json }) => {
            let store = referrals_store(&from).await?;
            let t = store.thread(&thread).await.map_err(thread_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print!("{}", format_timeline(&t));
            }
        }
        Some(ReferralsCommand::Close {
            profile,
            thread,
            note,
            by,
            json,
        }) => {
            let p = Profile::open(&profile)?;
            let by = match by {
                Some(b) => b,
                None => p.facility_id()?.to_string(),
            };
            let store = crate::client::store::LocalStore::open(&profile)
                .await
                .map_err(anyhow::Error::from)?;
            let t = store
                .close_thread(&thread, &by, note.as_deref())
                .await
                .map_err(thread_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "closed thread {} (終了; recorded in this profile only, nothing was sent)",
                    t.thread_id
                );
            }
        }
    }
    Ok(())
}

/// A tokio runtime for the network commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn net<F, Fut>(f: F) -> Result<(), Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    runtime()?.block_on(f())
}

fn op_failure(e: crate::client::ops::OpError) -> Failure {
    if e.is_verification_failure() {
        verify_failure(e)
    } else {
        Failure::from(e)
    }
}

async fn session(c: &Conn) -> Result<crate::client::ops::Session, Failure> {
    crate::client::ops::Session::open(&c.profile, c.relay.as_deref())
        .await
        .map_err(op_failure)
}

fn relay(c: RelayCommand) -> Result<(), Failure> {
    match c {
        RelayCommand::Vkey { profile } => {
            let p = Profile::open(&profile)?;
            let cert = p.certificate()?;
            if cert.kind != Kind::Relay {
                return Err(anyhow!("{} is not a relay profile", profile.display()).into());
            }
            let v = crate::audit::bundle::relay_verifier(&cert)?;
            println!("{}", v.encode());
        }
        RelayCommand::Serve {
            profile,
            data,
            listen,
            config,
            database_url,
        } => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(io::stderr)
                .try_init();
            let config = match config {
                Some(p) => toml::from_str(&String::from_utf8(read(&p)?)?)
                    .with_context(|| format!("{}", p.display()))?,
                None => crate::relay::RelayConfig::default(),
            };
            runtime()?.block_on(async move {
                let state = crate::relay::RelayState::open(
                    &profile,
                    &data,
                    database_url.as_deref(),
                    config,
                )
                .await?;
                crate::relay::run(listen, state).await?;
                Ok::<(), anyhow::Error>(())
            })?;
        }
    }
    Ok(())
}

fn print_entry(c: &CertInfo) {
    println!("{:<12} {:<28} {}", c.id, c.kind.as_str(), c.name);
}

async fn directory(c: DirectoryCommand) -> Result<(), Failure> {
    match c {
        DirectoryCommand::Publish { conn } => {
            let s = session(&conn).await?;
            let me = s.publish().await.map_err(op_failure)?;
            println!(
                "published the certificate of {} {} ({}) on {}",
                me.kind,
                me.id,
                me.name,
                s.client.url()
            );
        }
        DirectoryCommand::Search {
            conn,
            name,
            kind,
            json,
        } => {
            let s = session(&conn).await?;
            let results = s
                .directory_search(name.as_deref(), kind)
                .await
                .map_err(op_failure)?;
            let mut bad = Vec::new();
            let mut good = Vec::new();
            for r in results {
                match r {
                    Ok(c) => good.push(c),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"facilities": good, "refused": bad})
                    )?
                );
            } else {
                for c in &good {
                    print_entry(c);
                }
                if good.is_empty() {
                    println!("no facility found");
                }
            }
            for b in &bad {
                eprintln!("warning: {b}");
            }
            if !bad.is_empty() {
                return Err(verify_failure(anyhow!(
                    "{} directory entries did not verify",
                    bad.len()
                )));
            }
        }
        DirectoryCommand::Show { conn, id, json } => {
            let s = session(&conn).await?;
            let id: crate::identity::FacilityId = id.parse()?;
            let c = s.directory_show(&id).await.map_err(op_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print_cert(&c);
                println!("verified:      chain to {} and CRL", s.trust.ca_name);
            }
        }
    }
    Ok(())
}

async fn crl(c: CrlCommand) -> Result<(), Failure> {
    match c {
        CrlCommand::Publish { conn, crl } => {
            let s = session(&conn).await?;
            let n = s.publish_crl(&read(&crl)?).await.map_err(op_failure)?;
            println!("published CRL number {n} on {}", s.client.url());
        }
        CrlCommand::Fetch { conn } => {
            // Session::open already fetched and installed a newer CRL.
            let s = session(&conn).await?;
            println!(
                "CRL number {} installed in {}",
                crate::relay::crl_number(s.trust.crl_der()),
                conn.profile.display()
            );
        }
    }
    Ok(())
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() || total < 4 << 20 {
        return None;
    }
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        pb.set_style(style);
    }
    pb.set_message("uploading");
    Some(pb)
}

async fn send(a: SendArgs) -> Result<(), Failure> {
    let s = session(&a.conn).await?;
    let to =
        a.to.iter()
            .map(|t| t.parse::<crate::identity::FacilityId>())
            .collect::<Result<Vec<_>, _>>()?;
    let bar: std::sync::Arc<std::sync::Mutex<Option<indicatif::ProgressBar>>> = Default::default();
    let bar2 = bar.clone();
    let out = s
        .send(
            crate::client::ops::SendRequest {
                to,
                document: a.document,
                attachments: a.attach,
                kind: a.kind,
                in_reply_to: a.in_reply_to,
                thread: None,
            },
            move |n, total| {
                let mut b = bar2.lock().expect("lock");
                if b.is_none() {
                    *b = progress_bar(total);
                }
                if let Some(pb) = b.as_ref() {
                    pb.set_position(n);
                }
            },
        )
        .await
        .map_err(op_failure)?;
    if let Some(pb) = bar.lock().expect("lock").take() {
        pb.finish_and_clear();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "sent {} {} to {} — accepted by relay {} at {} (log index {}){}",
            out.manifest.kind,
            out.manifest.package_id,
            out.manifest
                .recipients
                .iter()
                .map(|r| r.facility_id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            out.acceptance.relay,
            out.acceptance.accepted_at,
            out.acceptance.log_index,
            if out.created {
                ""
            } else {
                " (already accepted before)"
            }
        );
        println!("  envelope ID: {}", out.envelope_id);
        println!("  thread:      {}", out.manifest.thread_id);
    }
    Ok(())
}

async fn inbox(a: InboxArgs) -> Result<(), Failure> {
    let s = session(&a.conn).await?;
    let items = s.inbox().await.map_err(op_failure)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else if items.is_empty() {
        println!("nothing waiting");
    } else {
        for e in &items {
            println!(
                "{}  from {}  {} bytes  accepted {}",
                e.envelope_id, e.sender, e.size, e.accepted_at
            );
        }
    }
    Ok(())
}

async fn receive(a: ReceiveArgs) -> Result<(), Failure> {
    let s = session(&a.conn).await?;
    let out_dir = a.out.clone().unwrap_or_else(|| s.profile.path("received"));
    let ids: Vec<String> = match (&a.envelope, a.all) {
        (Some(e), _) => vec![e.clone()],
        (None, true) => s
            .inbox()
            .await
            .map_err(op_failure)?
            .into_iter()
            .map(|e| e.envelope_id)
            .collect(),
        (None, false) => {
            return Err(Failure {
                code: EXIT_USAGE,
                error: anyhow!("give an ENVELOPE or --all"),
            });
        }
    };
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for id in &ids {
        match s.receive(id, &out_dir).await {
            Ok(r) => {
                let rendered = match a.render {
                    Some(f) => Some(render_opened(&r.folder, f)?),
                    None => None,
                };
                if !a.json {
                    println!(
                        "received {} {} from {} ({}) into {}; delivery receipt sent",
                        r.manifest.kind,
                        r.manifest.package_id,
                        r.manifest.sender.facility_id,
                        r.sender_name,
                        r.folder.display()
                    );
                    println!("  document: {}", summary_line(&r.summary));
                    if let Some(p) = &rendered {
                        println!("  rendered: {}", p.display());
                    }
                }
                results.push(serde_json::json!({"envelope_id": r.envelope_id, "outcome": "verified", "manifest": r.manifest, "folder": r.folder, "document": r.summary, "rendered": rendered}));
            }
            Err(e) => {
                eprintln!("error: {e}");
                results.push(serde_json::json!({"envelope_id": id, "outcome": "failed", "error": e.to_string()}));
                failures.push(e);
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else if ids.is_empty() {
        println!("nothing waiting");
    }
    match failures.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(op_failure(e)),
    }
}

async fn status(a: StatusArgs) -> Result<(), Failure> {
    let s = session(&a.conn).await?;
    let _ = a.all;
    let list = s.status(a.envelope.as_deref()).await.map_err(op_failure)?;
    if let Some(dir) = &a.export {
        fs::create_dir_all(dir)?;
        let mut n = 0;
        for st in &list {
            for b in s
                .store
                .bundles(&st.sent.envelope_id)
                .await
                .map_err(anyhow::Error::from)?
            {
                let name = format!(
                    "{}-{}-{}.json",
                    &st.sent.envelope_id[..16],
                    b.log_index,
                    b.receipt.purpose.as_str()
                );
                fs::write(dir.join(name), serde_json::to_vec_pretty(&b)?)?;
                n += 1;
            }
        }
        eprintln!("wrote {n} receipt bundles to {}", dir.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("nothing sent yet");
    }
    for st in &list {
        println!(
            "{} {} ({}) accepted {}",
            st.sent.kind,
            st.sent.package_id,
            &st.sent.envelope_id[..16],
            st.accepted_at.as_deref().unwrap_or("-")
        );
        for r in &st.recipients {
            let mut line = format!("  {:<12} {}", r.recipient, r.state);
            if let Some(reason) = &r.reason {
                line.push_str(&format!(" ({reason})"));
            }
            if let (Some(at), Some(by)) = (&r.at, &r.signed_by) {
                line.push_str(&format!(" at {at}, signed by {by}"));
            }
            if let Some(i) = r.log_index {
                line.push_str(&format!(", log index {i}"));
            }
            println!("{line}");
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Write a new file atomically; refuse to replace an existing one.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.exists() {
        bail!(
            "{} already exists; choose another name or move it away",
            path.display()
        );
    }
    pki::ca::write_file_atomic(path, bytes)?;
    Ok(())
}

fn ca(c: CaCommand) -> Result<(), Failure> {
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

fn x509_fingerprint(pem_text: &str) -> String {
    pki::read_pem_or_der(pem_text.as_bytes(), "CERTIFICATE")
        .map(|d| pki::sha256_hex(&d))
        .unwrap_or_default()
}

fn keygen(a: KeygenArgs) -> Result<(), Failure> {
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

fn profile(c: ProfileCommand) -> Result<(), Failure> {
    match c {
        ProfileCommand::Install {
            profile,
            cert,
            ca,
            crl,
            relay,
        } => {
            let mut p = Profile::open(&profile)?;
            let cert = cert.map(|c| read(&c)).transpose()?;
            let ca = ca.map(|c| read(&c)).transpose()?;
            let crl = crl.map(|c| read(&c)).transpose()?;
            if cert.is_none() && ca.is_none() && crl.is_none() && relay.is_none() {
                return Err(Failure {
                    code: EXIT_USAGE,
                    error: anyhow!("nothing to install: give --cert, --ca, --crl or --relay"),
                });
            }
            let done = p.install(
                cert.as_deref(),
                ca.as_deref(),
                crl.as_deref(),
                relay.as_deref(),
            )?;
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

fn print_cert(info: &CertInfo) {
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

fn cert(c: CertCommand) -> Result<(), Failure> {
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

/// Verify each recipient certificate file against the profile's trust store.
pub fn load_recipients(trust: &TrustStore, files: &[PathBuf]) -> anyhow::Result<Vec<CertInfo>> {
    let mut out = Vec::new();
    for f in files {
        let info = CertInfo::parse_pem(&read(f)?, &f.display().to_string())?;
        let info = trust
            .verify(&info.der, None)
            .with_context(|| format!("recipient certificate {}", f.display()))?;
        info.facility_id()?;
        out.push(info);
    }
    Ok(out)
}

/// Open a file as a member source.
pub fn member_from_file(
    path: &Path,
    in_package: String,
    media_type: String,
) -> anyhow::Result<MemberSource<'static>> {
    let f = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(MemberSource {
        path: in_package,
        media_type,
        size: meta.len(),
        reader: Box::new(io::BufReader::new(f)),
    })
}

/// Build the attachment member sources.
pub fn attachments(files: &[PathBuf]) -> anyhow::Result<Vec<MemberSource<'static>>> {
    files
        .iter()
        .map(|f| {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{} has no usable file name", f.display()))?;
            package::path::check_attachment_name(name)
                .map_err(|why| anyhow!("attachment name {name:?} is not allowed ({why})"))?;
            member_from_file(
                f,
                format!("{}/{name}", package::ATTACHMENTS_DIR),
                package::media_type_for(name).into(),
            )
        })
        .collect()
}

/// Where sealed bytes go: a new file written atomically, or stdout.
pub enum Output {
    /// A temporary file persisted on success.
    File(tempfile::NamedTempFile, PathBuf),
    /// Standard output.
    Stdout(io::Stdout),
}

impl Output {
    /// Open `-` (stdout, refused on a terminal) or a new file.
    pub fn create(spec: &str) -> anyhow::Result<Output> {
        if spec == "-" {
            if io::stdout().is_terminal() {
                bail!("refusing to write an encrypted package to a terminal; use -o FILE or redirect standard output");
            }
            return Ok(Output::Stdout(io::stdout()));
        }
        let path = PathBuf::from(spec);
        if path.exists() {
            bail!(
                "{} already exists; choose another name or move it away",
                path.display()
            );
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".renkei-seal-")
            .tempfile_in(&dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        Ok(Output::File(tmp, path))
    }

    /// Make the output permanent.
    pub fn commit(self) -> anyhow::Result<()> {
        match self {
            Output::File(tmp, path) => {
                tmp.as_file().sync_all()?;
                tmp.persist_noclobber(&path)
                    .map_err(|e| anyhow!("cannot create {}: {}", path.display(), e.error))?;
            }
            Output::Stdout(mut s) => s.flush()?,
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f, _) => f.write(buf),
            Output::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f, _) => f.flush(),
            Output::Stdout(s) => s.flush(),
        }
    }
}

fn seal(a: SealArgs) -> Result<(), Failure> {
    let p = Profile::open(&a.profile)?;
    let trust = p.trust()?;
    let me = p.certificate()?;
    let key = p.signing_key()?;
    let recipients = load_recipients(&trust, &a.to)?;
    let document = member_from_file(
        &a.document,
        package::DOCUMENT_PATH.into(),
        "application/fhir+json".into(),
    )?;
    let attachments = attachments(&a.attach)?;
    let mut out = Output::create(&a.out)?;
    let sealed = package::seal(
        package::SealRequest {
            sender_key: &key,
            sender_cert: &me,
            sender_copy: !a.no_self_copy,
            recipients: &recipients,
            kind: a.kind,
            thread_id: a.thread.clone().or_else(|| a.in_reply_to.clone()),
            in_reply_to: a.in_reply_to.clone(),
            document,
            attachments,
            limits: Limits::default(),
        },
        io::BufWriter::new(&mut out),
    )
    .map_err(|e| match e {
        package::SealError::Document(_) => verify_failure(e),
        other => Failure::from(other),
    })?;
    out.commit()?;
    let m = &sealed.manifest;
    if a.json {
        let v = serde_json::json!({
            "package_id": m.package_id, "envelope_id": hex::encode(sealed.envelope_id),
            "size": sealed.ciphertext_size, "manifest": m,
        });
        eprintln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "sealed {} {} for {} ({} members, {} bytes)",
            m.kind,
            m.package_id,
            m.recipients
                .iter()
                .map(|r| r.facility_id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            m.members.len(),
            sealed.ciphertext_size
        );
        eprintln!("  envelope ID: {}", hex::encode(sealed.envelope_id));
    }
    Ok(())
}

/// Open a package file (or stdin) into a new folder: stage, verify, rename.
pub fn open_to_dir(p: &Profile, input: &str, out: &Path) -> Result<package::Opened, Failure> {
    let trust = p.trust()?;
    let me = p.facility_id()?;
    let identity = p.age_identity()?;
    if out.exists() {
        return Err(anyhow!(
            "{} already exists; give a new folder name for the opened package",
            out.display()
        )
        .into());
    }
    let parent = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".renkei-open-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(io::BufReader::new(
            fs::File::open(input).with_context(|| format!("cannot read {input}"))?,
        ))
    };
    let opened = package::open_into(
        reader,
        &identity,
        &trust,
        &me,
        staging.path(),
        &Limits::default(),
        None,
    )
    .map_err(|e| {
        if e.is_verification_failure() {
            verify_failure(e)
        } else {
            Failure::from(e)
        }
    })?;
    let kept = staging.keep();
    fs::rename(&kept, out).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        anyhow!("cannot create {}: {e}", out.display())
    })?;
    Ok(opened)
}

fn open(a: OpenArgs) -> Result<(), Failure> {
    let p = Profile::open(&a.profile)?;
    let opened = open_to_dir(&p, &a.input, &a.out)?;
    let rendered = match a.render {
        Some(f) => Some(render_opened(&a.out, f)?),
        None => None,
    };
    print_opened(&opened, &a.out, a.json)?;
    if let (Some(r), false) = (&rendered, a.json) {
        println!("  rendered:    {}", r.display());
    }
    Ok(())
}

/// Write the Japanese rendering of an opened package's (validated)
/// document into its folder as `document.txt` or `document.html`;
/// returns the file written. An existing file is not overwritten.
pub fn render_opened(folder: &Path, format: crate::document::Format) -> anyhow::Result<PathBuf> {
    let src = folder.join(package::DOCUMENT_PATH);
    let mut bytes = Vec::new();
    fs::File::open(&src)
        .and_then(|f| {
            f.take(crate::document::MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("cannot read {}", src.display()))?;
    let bundle = crate::document::validate::parse(&bytes)
        .map_err(|i| anyhow!("cannot render {}: {}", src.display(), i.message))?;
    let name = match format {
        crate::document::Format::Text => "document.txt",
        crate::document::Format::Html => "document.html",
    };
    let dest = folder.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    f.write_all(crate::document::render(&bundle, format).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(dest)
}

/// One line about a document: kind, patient, and the first line of the
/// 紹介目的 (shortened).
pub fn summary_line(s: &crate::document::Summary) -> String {
    let mut line = format!(
        "{} ({}), 患者 {}",
        s.kind.japanese(),
        s.kind,
        s.patient.name
    );
    if let Some(b) = &s.patient.birth_date {
        line.push_str(&format!(" ({b}生)"));
    }
    let purpose = s
        .purpose
        .as_deref()
        .and_then(|p| p.lines().map(str::trim).find(|l| !l.is_empty()));
    if let Some(p) = purpose {
        let short: String = p.chars().take(60).collect();
        let more = if short.len() < p.len() { "…" } else { "" };
        line.push_str(&format!(", 紹介目的: {short}{more}"));
    }
    line
}

/// Print who sent what.
pub fn print_opened(o: &package::Opened, out: &Path, json: bool) -> anyhow::Result<()> {
    let m = &o.manifest;
    if json {
        let v = serde_json::json!({
            "verified": true,
            "package_id": m.package_id,
            "kind": m.kind,
            "created": m.created,
            "sender": {
                "facility_id": m.sender.facility_id, "name": o.sender.name,
                "kind": o.sender.kind, "cert_sha256": o.sender.fingerprint,
            },
            "recipients": m.recipients,
            "thread_id": m.thread_id,
            "in_reply_to": m.in_reply_to,
            "members": m.members,
            "document": o.summary,
            "out_dir": out,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "verified {} ({}) {}",
        m.kind.japanese(),
        m.kind,
        m.package_id
    );
    println!(
        "  from:        {} {} ({})",
        o.sender.kind, m.sender.facility_id, o.sender.name
    );
    println!(
        "  to:          {}",
        m.recipients
            .iter()
            .map(|r| r.facility_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  created:     {}", m.created);
    println!("  thread:      {}", m.thread_id);
    if let Some(r) = &m.in_reply_to {
        println!("  in reply to: {r}");
    }
    println!("  document:    {}", summary_line(&o.summary));
    println!("  members in {}:", out.display());
    for mem in &m.members {
        println!(
            "    {:<40} {:>10} bytes  {}",
            mem.path, mem.size, mem.media_type
        );
    }
    Ok(())
}

fn audit_failure(e: crate::audit::sync::AuditError) -> Failure {
    match e {
        crate::audit::sync::AuditError::Misbehaviour(_) => verify_failure(e),
        other => Failure::from(other),
    }
}

async fn audit(c: AuditCommand) -> Result<(), Failure> {
    use crate::audit::sync::Auditor;
    match c {
        AuditCommand::Sync { conn, full, json } => {
            let a = Auditor::open(&conn.profile, conn.relay.as_deref())
                .await
                .map_err(audit_failure)?;
            let r = a.sync(full).await.map_err(audit_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "log verified: size {} → {}, {} entries checked ({} receipt signatures in {:.3} s{}), checkpoint consistent with the last accepted one",
                    r.from_size,
                    r.to_size,
                    r.entries_verified,
                    r.receipts_verified,
                    r.verify_seconds,
                    if r.verify_seconds > 0.0 { format!(", {:.0} receipts/s", r.receipts_verified as f64 / r.verify_seconds) } else { String::new() }
                );
            }
        }
        AuditCommand::Envelope {
            conn,
            envelope,
            json,
        } => {
            let a = Auditor::open(&conn.profile, conn.relay.as_deref())
                .await
                .map_err(audit_failure)?;
            let rows = a.envelope(&envelope).await.map_err(audit_failure)?;
            if rows.is_empty() {
                return Err(anyhow!(
                    "no verified receipt for {envelope}; run `renkei audit sync` first"
                )
                .into());
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(i, p, s, b)| serde_json::json!({"log_index": i, "purpose": p, "signer": s, "body": serde_json::from_str::<serde_json::Value>(b).unwrap_or_default(), "signature": "verified", "inclusion": "verified against the accepted checkpoint"}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("chain of custody of {envelope} (every signature verified, every entry in the verified tree):");
                for (i, p, s, b) in &rows {
                    let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
                    let when = ["submitted_at", "accepted_at", "delivered_at", "expired_at"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                        .unwrap_or("-");
                    let extra = match p.as_str() {
                        "submission" => format!(
                            "by {s} to {}",
                            v.get("recipients")
                                .map(|r| r.to_string())
                                .unwrap_or_default()
                        ),
                        "acceptance" => format!("stored by relay {s}"),
                        "delivery" => format!(
                            "by {s}: {}{}",
                            v.get("outcome").and_then(|x| x.as_str()).unwrap_or("?"),
                            v.get("reason")
                                .and_then(|x| x.as_str())
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ),
                        "expiry" => format!(
                            "relay {s} gave up waiting for {}",
                            v.get("recipient").and_then(|x| x.as_str()).unwrap_or("?")
                        ),
                        _ => String::new(),
                    };
                    println!("  [{i:>6}] {p:<10} {when}  {extra}");
                }
            }
        }
        AuditCommand::Report {
            conn,
            since,
            format,
        } => {
            let a = Auditor::open(&conn.profile, conn.relay.as_deref())
                .await
                .map_err(audit_failure)?;
            let report = crate::audit::report::build(&a, since.as_deref())
                .await
                .map_err(audit_failure)?;
            match format {
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ReportFormat::Csv => print!("{}", report.to_csv()),
                ReportFormat::Text => print!("{}", report.to_text()),
            }
            if !report.problems.is_empty() {
                return Err(verify_failure(anyhow!(
                    "{} problems found in the relay's log",
                    report.problems.len()
                )));
            }
        }
        AuditCommand::Compare { conn, other } => {
            crate::audit::sync::compare_dbs(&conn.profile.join("audit.db"), &other)
                .await
                .map_err(audit_failure)?;
            println!("the two auditors saw the same log (no fork)");
        }
        AuditCommand::VerifyReceipt {
            file,
            ca,
            relay_vkey,
        } => {
            let vkey = if Path::new(&relay_vkey).is_file() {
                String::from_utf8(read(Path::new(&relay_vkey))?)?
            } else {
                relay_vkey
            };
            let v = crate::audit::sync::verify_receipt_file(&read(&file)?, &read(&ca)?, &vkey)
                .map_err(|e| verify_failure(anyhow!(e)))?;
            println!(
                "OK: receipt signed by {} ({}), included in the relay's checkpoint of size {} signed by {}",
                v.signer.id, v.signer.name, v.checkpoint.size, v.relay.id
            );
        }
    }
    Ok(())
}
