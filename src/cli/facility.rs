//! A facility's work through the relay: `directory`, `send`, `outbox`,
//! `inbox`, `receive` and `status`.

use std::fs;
use std::io::{self, IsTerminal};
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::{op_failure, session, verify_failure, Conn, Failure, EXIT_QUEUED, EXIT_USAGE};
use renkei::identity::Kind;
use renkei::package::PackageKind;
use renkei::pki::CertInfo;

use super::package::summary_line;
use super::pki::print_cert;

#[derive(Subcommand, Debug)]
pub(crate) enum DirectoryCommand {
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
    /// Scan the log for certificates for this facility's ID that it did
    /// not publish (exit 3 while one is still valid).
    Monitor {
        #[command(flatten)]
        conn: Conn,
        /// Mark the alert of this log index as dealt with (the CA was told
        /// and revoked the certificate) and stop reporting it.
        #[arg(long, value_name = "LOG_INDEX")]
        acknowledge: Option<u64>,
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

#[derive(Args, Debug)]
pub(crate) struct SendArgs {
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
pub(crate) struct InboxArgs {
    #[command(flatten)]
    conn: Conn,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ReceiveArgs {
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
    render: Option<renkei::document::Format>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
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

pub(crate) fn print_entry(c: &CertInfo) {
    println!("{:<12} {:<28} {}", c.id, c.kind.as_str(), c.name);
}

pub(crate) async fn directory(c: DirectoryCommand) -> Result<(), Failure> {
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
        DirectoryCommand::Monitor {
            conn,
            acknowledge,
            json,
        } => {
            let s = session(&conn).await?;
            if let Some(idx) = acknowledge {
                if !s
                    .acknowledge_directory_alert(idx)
                    .await
                    .map_err(op_failure)?
                {
                    return Err(anyhow!(
                        "no alert at log index {idx} to acknowledge; `renkei directory monitor --profile {}` lists them",
                        conn.profile.display()
                    )
                    .into());
                }
                eprintln!("acknowledged the alert of log index {idx}");
            }
            let r = s.monitor_directory().await.map_err(op_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_monitor(&r, &conn.profile);
            }
            if r.has_active_alert() {
                return Err(verify_failure(anyhow!(
                    "a certificate for {} that this profile did not publish is in the relay's log and still valid; \
                     tell the CA (the network operator) now and have it revoked (`renkei ca revoke`, then a new CRL), \
                     then run `renkei directory monitor --profile {} --acknowledge LOG_INDEX`",
                    r.id,
                    conn.profile.display()
                )));
            }
        }
        DirectoryCommand::Show { conn, id, json } => {
            let s = session(&conn).await?;
            let id: renkei::identity::FacilityId = id.parse()?;
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

fn print_monitor(r: &renkei::client::monitor::MonitorReport, profile: &std::path::Path) {
    println!(
        "scanned the directory leaves of {} up to tree size {} ({} new leaves from index {})",
        if r.origin.is_empty() {
            "the relay's log"
        } else {
            &r.origin
        },
        r.tree_size,
        r.leaves_read,
        r.scanned_from
    );
    if r.alerts.is_empty() {
        println!("no certificate for {} other than this profile's own", r.id);
        return;
    }
    for a in &r.alerts {
        let state = match (&a.active, &a.inactive_because) {
            (true, _) => "ALERT: still valid".to_string(),
            (false, Some(why)) => format!("no longer valid: {why}"),
            (false, None) => "no longer valid".to_string(),
        };
        println!(
            "{state}: a certificate for {} that this profile did not publish\n  \
             log index:    {}\n  published at: {}\n  serial:       {}\n  fingerprint:  {}\n  \
             issuer:       {}\n  name, kind:   {} ({})\n  valid:        {} – {}\n  \
             signing key:  {}\n  found at:     {}",
            a.facility_id,
            a.log_index,
            a.published_at,
            a.serial,
            a.fingerprint,
            a.issuer,
            a.name,
            a.kind,
            a.not_before,
            a.not_after,
            a.signing_key,
            a.found_at
        );
    }
    println!(
        "what to do: call the network operator (the CA) with the serial above; if it did not issue this \
         certificate at your request, have it revoked (`renkei ca revoke` and a new CRL published). \
         Then `renkei directory monitor --profile {} --acknowledge LOG_INDEX`.",
        profile.display()
    );
}

pub(crate) fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
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

pub(crate) async fn send(a: SendArgs) -> Result<(), Failure> {
    let s = session(&a.conn).await?;
    let to =
        a.to.iter()
            .map(|t| t.parse::<renkei::identity::FacilityId>())
            .collect::<Result<Vec<_>, _>>()?;
    let bar: std::sync::Arc<std::sync::Mutex<Option<indicatif::ProgressBar>>> = Default::default();
    let bar2 = bar.clone();
    let out = s
        .send(
            renkei::client::ops::SendRequest {
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
        .await;
    if let Some(pb) = bar.lock().expect("lock").take() {
        pb.finish_and_clear();
    }
    let out = match out {
        Err(e @ renkei::client::ops::OpError::Queued { .. }) => {
            return Err(Failure {
                code: EXIT_QUEUED,
                error: e.into(),
            })
        }
        other => other.map_err(op_failure)?,
    };
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

pub(crate) async fn inbox(a: InboxArgs) -> Result<(), Failure> {
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

pub(crate) async fn receive(a: ReceiveArgs) -> Result<(), Failure> {
    let s = session(&a.conn).await?;
    let out_dir = a.out.clone().unwrap_or_else(|| s.profile.path("received"));
    let results = match (&a.envelope, a.all) {
        (Some(e), _) => {
            s.recover_arrivals().await.map_err(op_failure)?;
            s.post_pending_receipts().await.map_err(op_failure)?;
            vec![(e.clone(), s.receive(e, &out_dir).await)]
        }
        (None, true) => s.receive_all(&out_dir).await.map_err(op_failure)?,
        (None, false) => {
            return Err(Failure {
                code: EXIT_USAGE,
                error: anyhow!("give an ENVELOPE or --all"),
            });
        }
    };
    let mut failures = Vec::new();
    let mut json = Vec::new();
    let none = results.is_empty();
    for (id, result) in results {
        match result {
            Ok(r) => {
                let rendered = match a.render {
                    Some(f) => match renkei::files::render_opened(&r.folder, f) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            eprintln!("warning: {e}");
                            None
                        }
                    },
                    None => None,
                };
                if !a.json {
                    println!(
                        "received {} {} from {} ({}) into {}; {}",
                        r.manifest.kind,
                        r.manifest.package_id,
                        r.manifest.sender.facility_id,
                        r.sender_name,
                        r.folder.display(),
                        if r.receipt_confirmed {
                            "delivery receipt sent"
                        } else {
                            "delivery receipt recorded, to be sent on the next run"
                        }
                    );
                    println!("  document: {}", summary_line(&r.summary));
                    if let Some(p) = &rendered {
                        println!("  rendered: {}", p.display());
                    }
                }
                json.push(serde_json::json!({"envelope_id": r.envelope_id, "outcome": "verified", "manifest": r.manifest, "folder": r.folder, "document": r.summary, "rendered": rendered, "receipt_confirmed": r.receipt_confirmed}));
            }
            Err(e) => {
                eprintln!("error: {e}");
                json.push(serde_json::json!({"envelope_id": id, "outcome": "failed", "error": e.to_string()}));
                failures.push(e);
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if none {
        println!("nothing waiting");
    }
    match failures.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(op_failure(e)),
    }
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct OutboxArgs {
    #[command(subcommand)]
    action: Option<OutboxCommand>,
    /// The facility's profile folder.
    #[arg(long, required = true)]
    profile: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OutboxCommand {
    /// Submit every queued envelope again (same envelope, same signed
    /// submission: nothing is delivered twice), and remove accepted ones
    /// older than the retention.
    Flush {
        #[command(flatten)]
        conn: Conn,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn outbox(a: OutboxArgs) -> Result<(), Failure> {
    match a.action {
        None => {
            let dir = a.profile.expect("required by clap");
            renkei::profile::Profile::open(&dir)?;
            let store = renkei::client::store::LocalStore::open(&dir)
                .await
                .map_err(anyhow::Error::from)?;
            let list = store.outbox(None).await.map_err(anyhow::Error::from)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("the outbox is empty");
            } else {
                for e in &list {
                    println!(
                        "{:<9} {} {} to {}  sealed {}{}",
                        serde_json::to_value(e.state)?.as_str().unwrap_or(""),
                        &e.envelope_id[..16],
                        e.manifest.kind,
                        e.manifest
                            .recipients
                            .iter()
                            .map(|r| r.facility_id.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.queued_at,
                        match (&e.accepted_at, &e.last_error) {
                            (Some(at), _) => format!(", accepted {at}"),
                            (None, Some(err)) =>
                                format!(", {} attempt(s), last: {err}", e.attempts),
                            (None, None) => String::new(),
                        }
                    );
                }
            }
        }
        Some(OutboxCommand::Flush { conn, json }) => {
            let s = session(&conn).await?;
            let f = s.flush_outbox().await.map_err(op_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                for e in &f.accepted {
                    println!("accepted  {e}");
                }
                for (e, why) in &f.queued {
                    println!("queued    {e}  ({why})");
                }
                for (e, why) in &f.refused {
                    println!("refused   {e}  ({why})");
                }
                if f.removed > 0 {
                    println!(
                        "removed {} accepted envelope(s) past their retention",
                        f.removed
                    );
                }
            }
            if !f.queued.is_empty() {
                return Err(Failure {
                    code: EXIT_QUEUED,
                    error: anyhow!(
                        "{} envelope(s) still queued: the relay cannot take them now",
                        f.queued.len()
                    ),
                });
            }
            if !f.refused.is_empty() {
                return Err(anyhow!("{} envelope(s) refused by the relay", f.refused.len()).into());
            }
        }
    }
    Ok(())
}

pub(crate) async fn status(a: StatusArgs) -> Result<(), Failure> {
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
                fs::write(dir.join(&name), serde_json::to_vec_pretty(&b)?)?;
                // The same log evidence as a C2SP tlog-proof.
                let proof = renkei::receipt::bundle::tlog_proof(&b).map_err(anyhow::Error::from)?;
                fs::write(dir.join(name.replace(".json", ".tlog-proof")), proof)?;
                n += 1;
            }
        }
        eprintln!(
            "wrote {n} receipt bundles (.json, and each as .tlog-proof) to {}",
            dir.display()
        );
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
            if r.state == "expired" {
                match &r.fetched_at {
                    Some(f) => {
                        line.push_str(&format!("; downloaded at {f} but no outcome was signed"))
                    }
                    None => line.push_str("; never downloaded"),
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}
