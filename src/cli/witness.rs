//! `renkei witness serve` and `renkei witness vkey`: a C2SP tlog-witness
//! (see `renkei::witness`).

use std::io;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use renkei::log::Verifier;
use renkei::profile::Profile;
use renkei::witness::{self, Witness, WitnessConfig};

use super::{runtime, shutdown_signal, Failure};

#[derive(Subcommand, Debug)]
pub(crate) enum WitnessCommand {
    /// Print the witness's verifier key (name+keyid+base64(0x04||key)); creates the witness key on first use.
    Vkey {
        /// The witness operator's profile folder (holds witness.key).
        #[arg(long)]
        profile: PathBuf,
        /// The data folder (its witness.toml may set the name).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The witness name (default: witness.toml's, else renkei-witness/<profile ID>).
        #[arg(long)]
        name: Option<String>,
    },
    /// Serve POST /add-checkpoint (C2SP tlog-witness) over HTTP.
    Serve {
        /// The witness operator's profile folder (holds witness.key).
        #[arg(long)]
        profile: PathBuf,
        /// The data folder: witness.toml (the logs witnessed) and witness.db (state).
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: std::net::SocketAddr,
        /// A log to witness, by its checkpoint verifier key (origin = key name); repeatable, added to witness.toml's.
        #[arg(long = "log")]
        logs: Vec<String>,
        /// The witness name (default: witness.toml's, else renkei-witness/<profile ID>).
        #[arg(long)]
        name: Option<String>,
    },
}

fn config(
    data: Option<&std::path::Path>,
    name: Option<String>,
    logs: &[String],
) -> anyhow::Result<WitnessConfig> {
    let mut c = match data {
        Some(d) => WitnessConfig::load(d)?,
        None => WitnessConfig::default(),
    };
    if name.is_some() {
        c.name = name;
    }
    for l in logs {
        let v = Verifier::parse(l).with_context(|| format!("--log {l:?}"))?;
        c.add_vkey(&v);
    }
    Ok(c)
}

pub(crate) fn witness(c: WitnessCommand) -> Result<(), Failure> {
    match c {
        WitnessCommand::Vkey {
            profile,
            data,
            name,
        } => {
            let c = config(data.as_deref(), name, &[])?;
            let p = Profile::open(&profile)?;
            let name = c.name.unwrap_or_else(|| witness::default_name(&p));
            println!("{}", witness::vkey(&profile, &name)?);
        }
        WitnessCommand::Serve {
            profile,
            data,
            listen,
            logs,
            name,
        } => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(io::stderr)
                .try_init();
            let c = config(Some(&data), name, &logs)?;
            runtime()?.block_on(async move {
                let w = std::sync::Arc::new(Witness::open(&profile, &data, &c).await?);
                let listener = tokio::net::TcpListener::bind(listen).await?;
                tracing::info!(%listen, witness = %w.key(), "witness listening (HTTP)");
                witness::serve(listener, w, shutdown_signal()).await?;
                Ok::<(), anyhow::Error>(())
            })?;
        }
    }
    Ok(())
}
