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
    /// Print the relay's verifier key (C2SP signed-note format): its certificate's key, or with --checkpoint-key that key under the log's origin.
    Vkey {
        /// The relay's profile folder.
        #[arg(long)]
        profile: PathBuf,
        /// A checkpoint key file (from `relay new-checkpoint-key`).
        #[arg(long = "checkpoint-key")]
        checkpoint_key: Option<PathBuf>,
    },
    /// Make a new checkpoint signing key (Ed25519, PKCS#8 PEM, mode 0600; never overwrites) and print its verifier key.
    NewCheckpointKey {
        /// The relay's profile folder (the key is named by its log's origin).
        #[arg(long)]
        profile: PathBuf,
        /// The key file to create.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Announce a new checkpoint key in the log, signed by the current one (run with every relay instance stopped; then start them with --checkpoint-key NEW).
    RotateCheckpointKey {
        /// The relay's profile folder (kind relay).
        #[arg(long)]
        profile: PathBuf,
        /// The data folder (SQLite database and ciphertext).
        #[arg(long)]
        data: PathBuf,
        /// Settings file, as for `relay serve` (its witnesses cosign the announcement).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Database URL instead of the embedded SQLite (postgres://...).
        #[arg(long = "database-url")]
        database_url: Option<String>,
        /// A witness that cosigns the announcement, VKEY@http://HOST:PORT (repeatable).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// The current checkpoint key file (absent: the certificate's key is the current one).
        #[arg(long = "checkpoint-key")]
        checkpoint_key: Option<PathBuf>,
        /// The new checkpoint key file (`relay new-checkpoint-key`).
        #[arg(long = "new-key")]
        new_key: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
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
        /// The checkpoint signing key file (the log's current checkpoint key); absent: the certificate's key signs checkpoints.
        #[arg(long = "checkpoint-key")]
        checkpoint_key: Option<PathBuf>,
    },
}

/// The settings file, or the defaults.
fn relay_config(config: Option<&std::path::Path>) -> Result<renkei::relay::RelayConfig, Failure> {
    Ok(match config {
        Some(p) => toml::from_str(&String::from_utf8(read(p)?)?)
            .with_context(|| format!("{}", p.display()))?,
        None => renkei::relay::RelayConfig::default(),
    })
}

/// The relay certificate of a relay profile.
fn relay_cert(profile: &std::path::Path) -> Result<renkei::pki::CertInfo, Failure> {
    let p = Profile::open(profile)?;
    let cert = p.certificate()?;
    if cert.kind != Kind::Relay {
        return Err(anyhow!("{} is not a relay profile", profile.display()).into());
    }
    Ok(cert)
}

/// The verifier key of a checkpoint key of the relay's log.
fn checkpoint_vkey(
    cert: &renkei::pki::CertInfo,
    key: &renkei::keys::SigningKey,
) -> Result<String, Failure> {
    let origin = renkei::receipt::bundle::log_origin(cert);
    Ok(renkei::log::Verifier::ed25519(&origin, key.public_key())
        .map_err(|e| anyhow!("{e}"))?
        .encode())
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
        RelayCommand::Vkey {
            profile,
            checkpoint_key,
        } => {
            let cert = relay_cert(&profile)?;
            match checkpoint_key {
                Some(f) => {
                    let key = renkei::keys::SigningKey::load(&f)?;
                    println!("{}", checkpoint_vkey(&cert, &key)?);
                }
                None => {
                    let v = renkei::receipt::bundle::relay_verifier(&cert)?;
                    println!("{}", v.encode());
                }
            }
        }
        RelayCommand::NewCheckpointKey { profile, out } => {
            let cert = relay_cert(&profile)?;
            let key = renkei::keys::SigningKey::generate();
            key.save(&out)?;
            println!("{}", checkpoint_vkey(&cert, &key)?);
        }
        RelayCommand::RotateCheckpointKey {
            profile,
            data,
            config,
            database_url,
            witnesses,
            checkpoint_key,
            new_key,
            json,
        } => {
            let mut config = relay_config(config.as_deref())?;
            config.witnesses.extend(witnesses);
            if checkpoint_key.is_some() {
                config.checkpoint_key = checkpoint_key;
            }
            let new_key = renkei::keys::SigningKey::load(&new_key)?;
            let r = runtime()?.block_on(renkei::relay::rotation::rotate_checkpoint_key(
                &profile,
                &data,
                database_url.as_deref(),
                &config,
                &new_key,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "the log {} announced its new checkpoint key at leaf {} (old key {}, new key {}); start every relay instance with --checkpoint-key of the new key",
                    r.origin, r.log_index, r.old_key, r.new_key
                );
            }
        }
        RelayCommand::Serve {
            profile,
            data,
            listen,
            config,
            database_url,
            witnesses,
            witness_quorum,
            checkpoint_key,
        } => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(io::stderr)
                .try_init();
            let mut config = relay_config(config.as_deref())?;
            config.witnesses.extend(witnesses);
            if checkpoint_key.is_some() {
                config.checkpoint_key = checkpoint_key;
            }
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
