//! `renkei desk`: serve the liaison office's desk for one profile on
//! loopback and open it in the browser.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{runtime, Failure};
use renkei::desk::{DeskOptions, RunningDesk};
use renkei::profile::Profile;

#[derive(Args, Debug)]
pub(crate) struct DeskArgs {
    /// The facility's (or auditor's) profile folder.
    #[arg(long)]
    profile: PathBuf,
    /// Where to listen: 127.0.0.1:PORT or [::1]:PORT (default: the
    /// profile's `[desk] port`, or a free port on 127.0.0.1).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Do not open the browser; only print the URL.
    #[arg(long)]
    no_browser: bool,
    /// Listen on a non-loopback address (the desk holds this facility's
    /// keys and patient data: only behind protection of your own).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Seconds between syncs with the relay (default: the profile's, 30).
    #[arg(long)]
    sync_interval: Option<u64>,
    /// The relay URL (default: the profile's).
    #[arg(long)]
    relay: Option<String>,
}

/// Options for the profile, with the command line's overrides.
fn options(p: &Profile, a: &DeskArgs) -> DeskOptions {
    let mut o = DeskOptions::from_profile(p);
    if let Some(l) = a.listen {
        o.listen = l;
    }
    if let Some(s) = a.sync_interval {
        o.sync_interval = Duration::from_secs(s.max(1));
    }
    o.allow_non_loopback = a.allow_non_loopback;
    o.relay = a.relay.clone();
    o
}

/// Open `url` in the desktop's browser (best effort; the URL is printed
/// anyway).
pub(crate) fn open_browser(url: &str) {
    #[cfg(target_os = "macos")]
    let cmd = ("open", vec![url]);
    #[cfg(target_os = "windows")]
    let cmd = ("cmd", vec!["/C", "start", "", url]);
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let cmd = ("xdg-open", vec![url]);
    let spawned = std::process::Command::new(cmd.0)
        .args(&cmd.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        eprintln!("(could not open a browser; open the URL above yourself)");
    }
}

/// Start a desk that stops on Ctrl-C / SIGTERM.
pub(crate) async fn start(dir: &Path, opts: DeskOptions) -> Result<RunningDesk, Failure> {
    Ok(renkei::desk::start(dir, opts, super::shutdown_signal()).await?)
}

pub(crate) fn desk(a: DeskArgs) -> Result<(), Failure> {
    let p = Profile::open(&a.profile)?;
    let opts = options(&p, &a);
    runtime()?.block_on(async {
        let running = start(&a.profile, opts).await?;
        // The one line with the token: on standard output only.
        println!("{}", running.url);
        eprintln!(
            "renkei desk for {} ({}) — open the URL above; Ctrl-C stops it",
            p.config.name, p.config.id
        );
        if !a.no_browser {
            open_browser(&running.url);
        }
        running.task.await.ok();
        eprintln!("desk stopped");
        Ok(())
    })
}
