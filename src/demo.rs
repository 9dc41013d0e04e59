//! `renkei demo`: a whole referral round trip through a real relay (mutual
//! TLS on a free loopback port, a temporary SQLite data folder), with the
//! demo keys in `keys-example/`, printed step by step.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::Failure;
use crate::client::ops::{SendRequest, Session};
use crate::package::PackageKind;
use crate::profile::Profile;
use crate::relay::{RelayConfig, RelayState};

const REFERRAL: &str = include_str!("../examples/demo/referral.json");
const REPLY: &str = include_str!("../examples/demo/reply.json");
const LAB: &str = include_str!("../examples/demo/lab-results.csv");

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
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

/// Run the demo.
pub fn run(keys: &Path) -> Result<(), Failure> {
    let keys = if keys.join("relay").exists() {
        keys.to_path_buf()
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys-example")
    };
    crate::cli::runtime()?.block_on(demo(&keys))
}

async fn demo(keys: &Path) -> Result<(), Failure> {
    println!(
        "renkei demo — a referral round trip through a relay (demo keys from {}; DEMO ONLY, never for real patients)",
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
    let server = tokio::spawn(crate::relay::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let url = format!("https://localhost:{port}");
    println!(
        "    relay {} ({}) listening on {url}",
        state.cert.name, state.id
    );

    let result = round_trip(dir, &url).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result?;
    println!("\ndone: a referral and its reply went end to end encrypted through the relay; both facilities verified everything.");
    Ok(())
}

async fn round_trip(dir: &Path, url: &str) -> Result<(), Failure> {
    let clinic = Session::open(&dir.join("clinic"), Some(url))
        .await
        .map_err(anyhow::Error::from)?;
    let hospital = Session::open(&dir.join("hospital"), Some(url))
        .await
        .map_err(anyhow::Error::from)?;

    step(
        2,
        "Both facilities publish their certificates in the relay's directory.",
    );
    for s in [&clinic, &hospital] {
        let c = s.publish().await.map_err(anyhow::Error::from)?;
        println!("    {} {} ({})", c.kind, c.id, c.name);
    }

    step(3, "The clinic looks the hospital up; its certificate is checked against the region's CA and CRL, not trusted from the relay.");
    let hospital_id = hospital.profile.facility_id()?;
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

    step(4, "The clinic's liaison office sends a referral (診療情報提供書) with a lab-result attachment: signed, encrypted for the hospital only, uploaded.");
    let docs = dir.join("documents");
    fs::create_dir_all(&docs)?;
    fs::write(docs.join("referral.json"), REFERRAL)?;
    fs::write(docs.join("reply.json"), REPLY)?;
    fs::write(docs.join("lab-results.csv"), LAB)?;
    let sent = clinic
        .send(
            SendRequest {
                to: vec![hospital_id.clone()],
                document: docs.join("referral.json"),
                attachments: vec![docs.join("lab-results.csv")],
                kind: PackageKind::Referral,
                in_reply_to: None,
                thread: None,
            },
            |_, _| {},
        )
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    package {} ({} bytes of ciphertext)",
        sent.manifest.package_id, sent.size
    );
    println!(
        "    the relay signed its acceptance at {} (log index {}); the clinic verified that signature",
        sent.acceptance.accepted_at, sent.acceptance.log_index
    );

    step(5, "The hospital checks its inbox, downloads, verifies (sender's certificate, signature, every member, addressed to the hospital) and posts a signed delivery receipt.");
    let inbox = hospital.inbox().await.map_err(anyhow::Error::from)?;
    println!("    {} envelope(s) waiting", inbox.len());
    let got = hospital
        .receive(&sent.envelope_id, &hospital.profile.path("received"))
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    verified {} from {} ({}): {}",
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

    step(6, "The hospital replies (返書) in the same thread.");
    let reply = hospital
        .send(
            SendRequest {
                to: vec![clinic.profile.facility_id()?],
                document: docs.join("reply.json"),
                attachments: vec![],
                kind: PackageKind::Reply,
                in_reply_to: Some(got.manifest.package_id.clone()),
                thread: None,
            },
            |_, _| {},
        )
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    reply {} in thread {}",
        reply.manifest.package_id, reply.manifest.thread_id
    );

    step(7, "The clinic receives and verifies the reply.");
    let r = clinic
        .receive(&reply.envelope_id, &clinic.profile.path("received"))
        .await
        .map_err(anyhow::Error::from)?;
    println!(
        "    verified {} from {} ({}), in reply to {}",
        r.manifest.kind.japanese(),
        r.manifest.sender.facility_id,
        r.sender_name,
        r.manifest.in_reply_to.as_deref().unwrap_or("-")
    );

    step(8, "The clinic checks the status of its referral: each outcome is backed by a receipt whose signature it verified.");
    for st in clinic
        .status(Some(&sent.envelope_id))
        .await
        .map_err(anyhow::Error::from)?
    {
        for rs in &st.recipients {
            println!(
                "    {} → {}: {} at {} (signed by {}, log index {})",
                st.sent.kind,
                rs.recipient,
                rs.state,
                rs.at.as_deref().unwrap_or("-"),
                rs.signed_by.as_deref().unwrap_or("-"),
                rs.log_index.map(|i| i.to_string()).unwrap_or_default()
            );
            if rs.state != "delivered" {
                return Err(anyhow::anyhow!("the referral was not delivered").into());
            }
        }
    }
    Ok(())
}
