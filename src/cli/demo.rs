//! `renkei demo`: a whole referral thread through a real relay (mutual
//! TLS on a free loopback port, a temporary SQLite data folder), with the
//! demo keys in `keys-example/`, printed step by step.
//!
//! The clinic writes a JP-CLINS referral from the example form
//! (`examples/referral.toml`), the hospital receives and reads it, replies
//! (`examples/reply.toml`) and later refers the patient back
//! (`examples/reverse-referral.toml`); the demo ends with both liaison
//! offices' view of the thread (`renkei referrals`). Any failed step ends
//! the demo with a non-zero exit status.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

use clap::Args;

use crate::cli::Failure;
use renkei::client::ops::{Received, SendOutcome, SendRequest, Session};
use renkei::client::threads::{format_list, format_timeline, Thread, ThreadStatus};
use renkei::document::form::AttachmentForm;
use renkei::document::{self, BuildOptions, DocKind, Form};
use renkei::identity::FacilityId;
use renkei::profile::Profile;
use renkei::relay::{RelayConfig, RelayState};

const REFERRAL_FORM: &str = include_str!("../../examples/referral.toml");
const REPLY_FORM: &str = include_str!("../../examples/reply.toml");
const REVERSE_FORM: &str = include_str!("../../examples/reverse-referral.toml");
const LAB: &[u8] = include_bytes!("../../examples/demo/lab-2026-05-08.csv");
const CT_REPORT: &[u8] = include_bytes!("../../examples/demo/ct-report.txt");

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// Print `text` indented by four spaces.
fn indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// Copy a profile folder into the scratch area (key files mode 0600).
fn copy_profile(from: &Path, to: &Path) -> anyhow::Result<Profile> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let dest = to.join(entry.file_name());
            fs::copy(entry.path(), &dest)?;
            #[cfg(unix)]
            if dest.extension().is_some_and(|e| e == "key") {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(Profile::open(to)?)
}

/// `renkei demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// The demo keys folder.
    #[arg(long, default_value = "keys-example")]
    pub(crate) keys: PathBuf,
    /// After the walk-through, keep the relay running and open the
    /// clinic's and the hospital's desks in the browser (two ports; the
    /// URLs are printed), until Ctrl-C.
    #[arg(long)]
    pub(crate) desk: bool,
    /// With --desk: print the URLs but do not open a browser.
    #[arg(long, requires = "desk")]
    pub(crate) no_browser: bool,
}

/// Run the demo.
pub fn run(a: &DemoArgs) -> Result<(), Failure> {
    let keys = if a.keys.join("relay").exists() {
        a.keys.clone()
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys-example")
    };
    crate::cli::runtime()?.block_on(demo(&keys, a.desk.then_some(!a.no_browser)))
}

/// The demo; with `desk` (`Some(open_browser)`), the desks afterwards.
async fn demo(keys: &Path, desk: Option<bool>) -> Result<(), Failure> {
    println!(
        "renkei demo — a referral thread through a relay (demo keys from {}; DEMO ONLY, synthetic patient, never for real patients)",
        keys.display()
    );
    let scratch = tempfile::Builder::new().prefix("renkei-demo-").tempdir()?;
    let dir = scratch.path();
    for p in ["relay", "clinic", "hospital"] {
        copy_profile(&keys.join(p), &dir.join(p))?;
    }

    step(1, "The regional relay starts: mutual TLS on a free loopback port, an empty SQLite data folder.");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let state = RelayState::open(
        &dir.join("relay"),
        &dir.join("relay-data"),
        None,
        RelayConfig::default(),
    )
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(renkei::relay::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let url = format!("https://localhost:{port}");
    println!(
        "    relay {} ({}) listening on {url}",
        state.cert.name, state.id
    );

    let mut result = thread(dir, &url).await;
    if let (Ok(()), Some(open)) = (&result, desk) {
        result = desks(dir, &url, open).await;
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    result?;
    if desk.is_some() {
        println!(
            "\ndesks stopped; the demo region in {} is removed",
            dir.display()
        );
        return Ok(());
    }
    println!("\ndone: a referral written from a form, its reply and the reverse referral went end to end encrypted through the relay; both facilities verified every package and receipt and follow the same thread.");
    Ok(())
}

/// The clinic's and the hospital's desks on two loopback ports, with
/// what the walk-through exchanged, until Ctrl-C.
async fn desks(dir: &Path, relay: &str, open: bool) -> Result<(), Failure> {
    let mut running = Vec::new();
    for (who, label) in [
        ("clinic", "さくら内科クリニック (clinic)"),
        ("hospital", "東都中央病院 (hospital)"),
    ] {
        let p = dir.join(who);
        let mut opts = renkei::desk::DeskOptions::from_profile(&Profile::open(&p)?);
        opts.relay = Some(relay.to_string());
        opts.sync_interval = std::time::Duration::from_secs(10);
        let d = super::desk::start(&p, opts).await?;
        running.push((label, d));
    }
    println!("\n[desk] The liaison offices' desks are running (DEMO ONLY keys). Open each URL in a browser; Ctrl-C stops everything:");
    for (label, d) in &running {
        println!("    {label}: {}", d.url);
    }
    if open {
        for (_, d) in &running {
            super::desk::open_browser(&d.url);
        }
    }
    for (_, d) in running {
        let _ = d.task.await;
    }
    Ok(())
}

/// Build a document from an example form, with the given attachments and
/// the package it answers, into `dir/name`.
fn write_document(
    dir: &Path,
    name: &str,
    kind: DocKind,
    form_text: &str,
    attachments: Vec<AttachmentForm>,
    in_reply_to: Option<String>,
) -> anyhow::Result<PathBuf> {
    let mut form =
        Form::from_toml(form_text).map_err(|e| anyhow!("the example {kind} form: {e}"))?;
    form.attachments = attachments;
    let bytes = document::build_json(
        kind,
        &form,
        &BuildOptions {
            in_reply_to,
            ..BuildOptions::default()
        },
    )
    .map_err(|e| anyhow!("the example {kind} form: {e}"))?;
    let path = dir.join(name);
    fs::write(&path, bytes)?;
    Ok(path)
}

async fn send(
    from: &Session,
    to: &FacilityId,
    document: PathBuf,
    attachments: Vec<PathBuf>,
    kind: DocKind,
    in_reply_to: Option<String>,
) -> Result<SendOutcome, Failure> {
    let out = from
        .send(
            SendRequest {
                to: vec![to.clone()],
                document,
                attachments,
                kind: kind.into(),
                in_reply_to,
                thread: None,
            },
            |_, _| {},
        )
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    {} {} in thread {}: {} bytes of ciphertext, accepted by the relay at {} (log index {}; signature verified)",
        kind.japanese(),
        out.manifest.package_id,
        out.manifest.thread_id,
        out.size,
        out.acceptance.accepted_at,
        out.acceptance.log_index
    );
    Ok(out)
}

async fn receive(by: &Session, sent: &SendOutcome) -> Result<Received, Failure> {
    let waiting = by.inbox().await.map_err(anyhow::Error::from)?;
    if !waiting.iter().any(|e| e.envelope_id == sent.envelope_id) {
        return Err(anyhow!("envelope {} is not in the inbox", sent.envelope_id).into());
    }
    let got = by
        .receive(&sent.envelope_id, &by.profile.path("received"))
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    verified {} from {} ({}): {}; signed delivery receipt posted",
        got.manifest.kind.japanese(),
        got.manifest.sender.facility_id,
        got.sender_name,
        got.manifest
            .members
            .iter()
            .map(|m| m.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(got)
}

/// Check that every package `s` sent was delivered, each outcome backed by
/// a verified receipt (kept for the thread view).
async fn check_delivered(who: &str, s: &Session) -> Result<(), Failure> {
    for st in s.status(None).await.map_err(anyhow::Error::from)? {
        for rs in &st.recipients {
            println!(
                "    {who}: {} → {}: {} at {} (signed by {}, log index {})",
                st.sent.kind,
                rs.recipient,
                rs.state,
                rs.at.as_deref().unwrap_or("-"),
                rs.signed_by.as_deref().unwrap_or("-"),
                rs.log_index.map(|i| i.to_string()).unwrap_or_default()
            );
            if rs.state != "delivered" {
                return Err(anyhow!(
                    "the {} {} was not delivered to {}",
                    st.sent.kind,
                    st.sent.package_id,
                    rs.recipient
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Print a facility's view of the thread and check it.
async fn show_view(
    who: &str,
    s: &Session,
    thread_id: &str,
    want_path: &str,
) -> Result<Thread, Failure> {
    let list = s.store.threads(None).await.map_err(anyhow::Error::from)?;
    println!("\n    ── {who}: renkei referrals");
    indented(&format_list(&list));
    let t = s
        .store
        .thread(thread_id)
        .await
        .map_err(anyhow::Error::from)?;
    println!("\n    ── {who}: renkei referrals show {thread_id}");
    indented(&format_timeline(&t));
    if list.len() != 1 || t.status != ThreadStatus::ReferredBack || t.path() != want_path {
        return Err(anyhow!(
            "{who}'s view of the thread is {} / {:?}, expected referred back / {want_path:?}",
            t.status,
            t.path()
        )
        .into());
    }
    Ok(t)
}

async fn thread(dir: &Path, url: &str) -> Result<(), Failure> {
    let clinic = Session::open(&dir.join("clinic"), Some(url))
        .await
        .map_err(anyhow::Error::from)?;
    let hospital = Session::open(&dir.join("hospital"), Some(url))
        .await
        .map_err(anyhow::Error::from)?;
    let clinic_id = clinic.profile.facility_id()?;
    let hospital_id = hospital.profile.facility_id()?;

    step(
        2,
        "Both facilities publish their certificates in the relay's directory.",
    );
    for s in [&clinic, &hospital] {
        let c = s.publish().await.map_err(anyhow::Error::from)?;
        println!("    {} {} ({})", c.kind, c.id, c.name);
    }

    step(3, "The clinic looks the hospital up; its certificate is checked against the region's CA and CRL, not trusted from the relay.");
    let h = clinic
        .directory_show(&hospital_id)
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    {} {} — age recipient {}",
        h.id,
        h.name,
        h.age_recipient.as_deref().unwrap_or("-")
    );

    step(4, "The clinic's liaison office writes the referral (診療情報提供書, JP-CLINS) from the form examples/referral.toml, with the lab results as an attachment, and sends it: signed, encrypted for the hospital only, uploaded.");
    let docs = dir.join("documents");
    fs::create_dir_all(&docs)?;
    let lab = docs.join("lab-2026-05-08.csv");
    fs::write(&lab, LAB)?;
    let ct = docs.join("ct-report.txt");
    fs::write(&ct, CT_REPORT)?;
    let referral_doc = write_document(
        &docs,
        "referral.json",
        DocKind::Referral,
        REFERRAL_FORM,
        vec![AttachmentForm {
            file: "lab-2026-05-08.csv".into(),
            title: "血液検査結果（2026-05-08）".into(),
        }],
        None,
    )?;
    let referral = send(
        &clinic,
        &hospital_id,
        referral_doc,
        vec![lab],
        DocKind::Referral,
        None,
    )
    .await?;
    let thread_id = referral.manifest.thread_id.clone();

    step(5, "The hospital downloads and verifies it (sender's certificate, signature, every member, the document against the package) and reads the referral.");
    let got = receive(&hospital, &referral).await?;
    let bundle: serde_json::Value =
        serde_json::from_slice(&fs::read(got.folder.join(renkei::package::DOCUMENT_PATH))?)?;
    let text = document::render(&bundle, document::Format::Text);
    // The title, then the blocks a liaison office reads first.
    let wanted = ["【患者】", "【紹介目的】", "【傷病名・主訴】", "【添付】"];
    println!("    │ {}", text.lines().next().unwrap_or_default());
    for block in text.split("\n\n") {
        if wanted.iter().any(|w| block.starts_with(w)) {
            for line in block.lines() {
                println!("    │ {line}");
            }
        }
    }
    println!("    │ … (renkei document show prints it all)");

    step(6, "The hospital replies (返書, from examples/reply.toml) in the same thread, with the CT report attached.");
    let reply_doc = write_document(
        &docs,
        "reply.json",
        DocKind::Reply,
        REPLY_FORM,
        vec![AttachmentForm {
            file: "ct-report.txt".into(),
            title: "冠動脈CT読影レポート".into(),
        }],
        Some(got.manifest.package_id.clone()),
    )?;
    let reply = send(
        &hospital,
        &clinic_id,
        reply_doc,
        vec![ct],
        DocKind::Reply,
        Some(got.manifest.package_id.clone()),
    )
    .await?;

    step(7, "The clinic receives and verifies the reply.");
    receive(&clinic, &reply).await?;

    step(8, "After treatment the hospital refers the patient back (逆紹介, from examples/reverse-referral.toml).");
    let back_doc = write_document(
        &docs,
        "reverse-referral.json",
        DocKind::ReverseReferral,
        REVERSE_FORM,
        vec![],
        Some(got.manifest.package_id.clone()),
    )?;
    let back = send(
        &hospital,
        &clinic_id,
        back_doc,
        vec![],
        DocKind::ReverseReferral,
        Some(got.manifest.package_id.clone()),
    )
    .await?;

    step(9, "The clinic receives and verifies the reverse referral.");
    receive(&clinic, &back).await?;

    step(10, "Both facilities check the status of what they sent: each outcome is backed by a receipt whose signature and log inclusion they verified.");
    check_delivered("clinic", &clinic).await?;
    check_delivered("hospital", &hospital).await?;

    step(11, "Both liaison offices follow the thread (renkei referrals): the same packages, each from its own side.");
    show_view(
        "clinic さくら内科クリニック",
        &clinic,
        &thread_id,
        "紹介 到達 → 返書 受領 → 逆紹介 受領",
    )
    .await?;
    show_view(
        "hospital 東都中央病院",
        &hospital,
        &thread_id,
        "紹介 受領 → 返書 到達 → 逆紹介 到達",
    )
    .await?;
    println!("\n    (a liaison office closes a finished thread with `renkei referrals close --profile P {thread_id}`)");
    Ok(())
}
