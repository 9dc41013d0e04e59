//! The relay server (`relay serve`, `relay vkey`) and CRL publishing (`crl`).

use std::io::{self};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Subcommand;

use super::{op_failure, read, session, Conn, Failure};
use renkei::identity::Kind;
use renkei::profile::Profile;

use super::runtime;

#[derive(Subcommand, Debug)]
pub(crate) enum RelayCommand {
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
        /// A witness that cosigns every checkpoint, VKEY@http://HOST:PORT (repeatable; added to the config file's `witnesses`).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Cosignatures to aim at per checkpoint (health reports whether the newest has them).
        #[arg(long = "witness-quorum")]
        witness_quorum: Option<usize>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CrlCommand {
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

pub(crate) fn relay(c: RelayCommand) -> Result<(), Failure> {
    match c {
        RelayCommand::Vkey { profile } => {
            let p = Profile::open(&profile)?;
            let cert = p.certificate()?;
            if cert.kind != Kind::Relay {
                return Err(anyhow!("{} is not a relay profile", profile.display()).into());
            }
            let v = renkei::receipt::bundle::relay_verifier(&cert)?;
            println!("{}", v.encode());
        }
        RelayCommand::Serve {
            profile,
            data,
            listen,
            config,
            database_url,
            witnesses,
            witness_quorum,
        } => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(io::stderr)
                .try_init();
            let mut config: renkei::relay::RelayConfig = match config {
                Some(p) => toml::from_str(&String::from_utf8(read(&p)?)?)
                    .with_context(|| format!("{}", p.display()))?,
                None => renkei::relay::RelayConfig::default(),
            };
            config.witnesses.extend(witnesses);
            if let Some(k) = witness_quorum {
                config.witness_quorum = k;
            }
            runtime()?.block_on(async move {
                let state = renkei::relay::RelayState::open(
                    &profile,
                    &data,
                    database_url.as_deref(),
                    config,
                )
                .await?;
                renkei::relay::run(listen, state).await?;
                Ok::<(), anyhow::Error>(())
            })?;
        }
    }
    Ok(())
}

pub(crate) async fn crl(c: CrlCommand) -> Result<(), Failure> {
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
                renkei::pki::crl_number(s.trust.crl_der()),
                conn.profile.display()
            );
        }
    }
    Ok(())
}
