//! `renkei referrals`: referral threads (紹介の経過).

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::{op_failure, Failure, EXIT_FAILURE, EXIT_USAGE};
use renkei::profile::Profile;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct ReferralsArgs {
    #[command(subcommand)]
    action: Option<ReferralsCommand>,
    #[command(flatten)]
    from: ReferralsFrom,
    /// Only open or only closed threads.
    #[arg(long, value_enum)]
    status: Option<renkei::client::threads::StatusFilter>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ReferralsFrom {
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
pub(crate) enum ReferralsCommand {
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

pub(crate) fn thread_failure(e: renkei::client::threads::ThreadError) -> Failure {
    let code = match e {
        renkei::client::threads::ThreadError::BadId(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    };
    Failure {
        code,
        error: e.into(),
    }
}

/// Open the profile's local store, after a `--sync` with the relay if asked.
pub(crate) async fn referrals_store(
    from: &ReferralsFrom,
) -> Result<renkei::client::store::LocalStore, Failure> {
    let dir = from.profile.clone().ok_or_else(|| Failure {
        code: EXIT_USAGE,
        error: anyhow!("give --profile PROFILE"),
    })?;
    Profile::open(&dir)?;
    if from.sync {
        let s = renkei::client::ops::Session::open(&dir, from.relay.as_deref())
            .await
            .map_err(op_failure)?;
        s.status(None).await.map_err(op_failure)?;
    }
    let store = renkei::client::store::LocalStore::open(&dir)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(store)
}

pub(crate) async fn referrals(a: ReferralsArgs) -> Result<(), Failure> {
    use renkei::client::threads::{format_list, format_timeline};
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
            let store = renkei::client::store::LocalStore::open(&profile)
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
