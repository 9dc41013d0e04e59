//! The `renkei` command line: argument parsing and the thin glue between
//! the terminal and the library, one module per command group. Exit
//! status: 0 ok, 1 failure, 2 usage, 3 verification failed, 4 queued in
//! the outbox.

mod audit;
mod demo;
mod desk;
mod facility;
mod package;
mod pki;
mod referrals;
mod relay;
mod witness;

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use self::audit::AuditCommand;
use self::facility::{DirectoryCommand, InboxArgs, OutboxArgs, ReceiveArgs, SendArgs, StatusArgs};
use self::package::{OpenArgs, SealArgs};
use self::pki::{CaCommand, CertCommand, KeygenArgs, ProfileCommand};
use self::referrals::ReferralsArgs;
use self::relay::{CrlCommand, RelayCommand};

/// Exit status for success.
pub const EXIT_OK: u8 = 0;
/// Exit status for a failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when verification of a package or certificate failed.
pub const EXIT_VERIFY: u8 = 3;
/// Exit status when a package was sealed but waits in the outbox (the relay
/// could not take it now).
pub const EXIT_QUEUED: u8 = 4;

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

pub(crate) fn verify_failure(e: impl Into<anyhow::Error>) -> Failure {
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
    /// Envelopes waiting for the relay: list them, or flush (submit again).
    Outbox(OutboxArgs),
    /// Download, verify and store envelopes; post signed delivery receipts.
    Receive(ReceiveArgs),
    /// Show the delivery status of sent packages, each backed by a verified receipt.
    Status(StatusArgs),
    /// Audit the relay's transparency log (auditor profile).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write, check and read JP-CLINS clinical documents (FHIR Document Bundles).
    #[command(subcommand)]
    Document(renkei::document::cli::DocumentCommand),
    /// Walk through a whole referral round trip with the demo keys.
    Demo(demo::DemoArgs),
    /// Referral threads (紹介の経過): list them, show one's timeline, close one.
    Referrals(ReferralsArgs),
    /// The liaison office's desk: a web app in the browser, served on loopback.
    Desk(desk::DeskArgs),
    /// Run a transparency-log witness (C2SP tlog-witness) or print its key.
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Conn {
    /// The facility's profile folder.
    #[arg(long)]
    pub(crate) profile: PathBuf,
    /// The relay URL (default: the profile's).
    #[arg(long)]
    pub(crate) relay: Option<String>,
}

/// Every command run with a `--profile` whose CRL is past its `nextUpdate`
/// warns on stderr (within the grace period it still works; beyond it,
/// sealing to and opening from facilities fails).
pub fn warn_stale_crl(matches: &clap::ArgMatches) {
    let mut m = matches;
    let mut profile = None;
    loop {
        if let Ok(Some(p)) = m.try_get_one::<PathBuf>("profile") {
            profile = Some(p.clone());
        }
        match m.subcommand() {
            Some((_, sub)) => m = sub,
            None => break,
        }
    }
    let warning = profile
        .and_then(|dir| renkei::profile::Profile::open(&dir).ok())
        .and_then(|p| p.crl_warning());
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
}

/// Run the CLI; returns the exit status.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Ca(c) => pki::ca(c),
        Command::Keygen(a) => pki::keygen(a),
        Command::Profile(c) => pki::profile(c),
        Command::Cert(c) => pki::cert(c),
        Command::Seal(a) => package::seal(a),
        Command::Open(a) => package::open(a),
        Command::Relay(c) => relay::relay(c),
        Command::Directory(c) => net(|| facility::directory(c)),
        Command::Crl(c) => net(|| relay::crl(c)),
        Command::Send(a) => net(|| facility::send(a)),
        Command::Inbox(a) => net(|| facility::inbox(a)),
        Command::Receive(a) => net(|| facility::receive(a)),
        Command::Outbox(a) => net(|| facility::outbox(a)),
        Command::Status(a) => net(|| facility::status(a)),
        Command::Audit(c) => net(|| audit::audit(c)),
        Command::Document(c) => renkei::document::cli::run(c).map_err(|e| {
            if e.is_validation_failure() {
                verify_failure(e)
            } else {
                Failure::from(e)
            }
        }),
        Command::Demo(a) => demo::run(&a),
        Command::Referrals(a) => net(|| referrals::referrals(a)),
        Command::Desk(a) => desk::desk(a),
        Command::Witness(c) => witness::witness(c),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// A tokio runtime for the network commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn net<F, Fut>(f: F) -> Result<(), Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    runtime()?.block_on(f())
}

pub(crate) fn op_failure(e: renkei::client::ops::OpError) -> Failure {
    if e.is_verification_failure() {
        verify_failure(e)
    } else {
        Failure::from(e)
    }
}

pub(crate) async fn session(c: &Conn) -> Result<renkei::client::ops::Session, Failure> {
    let s = renkei::client::ops::Session::open(&c.profile, c.relay.as_deref())
        .await
        .map_err(op_failure)?;
    if let Some(why) = &s.offline {
        eprintln!("warning: working offline: {why}");
    }
    Ok(s)
}

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(renkei::files::read(path)?)
}

/// Write a new file atomically; refuse to replace an existing one.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.exists() {
        bail!(
            "{} already exists; choose another name or move it away",
            path.display()
        );
    }
    renkei::pki::ca::write_file_atomic(path, bytes)?;
    Ok(())
}
