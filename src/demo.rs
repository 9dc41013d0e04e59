//! `renkei demo`: a whole referral round trip with the demo keys in
//! `keys-example/`, printed step by step.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::{self, Failure};
use crate::package::{self, Limits, MemberSource, PackageKind};
use crate::profile::Profile;

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

fn mem(path: &str, media: &str, text: &'static str) -> MemberSource<'static> {
    MemberSource {
        path: path.into(),
        media_type: media.into(),
        size: text.len() as u64,
        reader: Box::new(text.as_bytes()),
    }
}

fn seal_file(
    from: &Profile,
    to: &Profile,
    kind: PackageKind,
    document: &'static str,
    attachments: Vec<MemberSource<'static>>,
    in_reply_to: Option<(&str, &str)>,
    out: &Path,
) -> anyhow::Result<package::Sealed> {
    let trust = from.trust()?;
    let recipient = trust.verify(&to.certificate()?.der, None)?;
    let file = fs::File::create(out)?;
    let sealed = package::seal(
        package::SealRequest {
            sender_key: &from.signing_key()?,
            sender_cert: &from.certificate()?,
            sender_copy: true,
            recipients: &[recipient],
            kind,
            thread_id: in_reply_to.map(|(_, t)| t.to_string()),
            in_reply_to: in_reply_to.map(|(p, _)| p.to_string()),
            document: mem(package::DOCUMENT_PATH, "application/fhir+json", document),
            attachments,
            limits: Limits::default(),
        },
        io::BufWriter::new(file),
    )?;
    Ok(sealed)
}

/// Run the demo.
pub fn run(keys: &Path) -> Result<(), Failure> {
    let keys = if keys.exists() {
        keys.to_path_buf()
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys-example")
    };
    println!(
        "renkei demo — a referral round trip between two facilities (demo keys from {}; DEMO ONLY)",
        keys.display()
    );
    let scratch = tempfile::Builder::new().prefix("renkei-demo-").tempdir()?;
    let clinic = copy_profile(&keys.join("clinic"), &scratch.path().join("clinic"))?;
    let hospital = copy_profile(&keys.join("hospital"), &scratch.path().join("hospital"))?;
    let c = clinic.certificate()?;
    let h = hospital.certificate()?;

    step(
        1,
        "The region's CA certified both facilities; each checks the other's certificate.",
    );
    println!(
        "    clinic:   {} {} ({}), age recipient {}",
        c.kind,
        c.id,
        c.name,
        c.age_recipient.as_deref().unwrap_or("-")
    );
    println!(
        "    hospital: {} {} ({}), age recipient {}",
        h.kind,
        h.id,
        h.name,
        h.age_recipient.as_deref().unwrap_or("-")
    );

    step(2, "The clinic's liaison office seals a referral (診療情報提供書) with a lab-result attachment for the hospital only.");
    let referral_file = scratch.path().join("referral.age");
    let sealed = seal_file(
        &clinic,
        &hospital,
        PackageKind::Referral,
        REFERRAL,
        vec![mem(
            "attachments/lab-results.csv",
            package::media_type_for("x.csv"),
            LAB,
        )],
        None,
        &referral_file,
    )?;
    println!(
        "    package {} — {} bytes of ciphertext, envelope ID {}",
        sealed.manifest.package_id,
        sealed.ciphertext_size,
        &hex::encode(sealed.envelope_id)[..16]
    );
    println!("    signed by the clinic, then encrypted with age to the hospital (and to the clinic's own key for its sent box)");

    step(3, "The hospital opens it: decrypts, checks the clinic's certificate against the CA and CRL, the signature, every member, and that it is addressed to the hospital.");
    let inbox = scratch
        .path()
        .join("hospital-inbox")
        .join(&sealed.manifest.package_id);
    let opened = cli::open_to_dir(
        &hospital,
        referral_file.to_str().unwrap_or_default(),
        &inbox,
    )?;
    cli::print_opened(&opened, &inbox, false)?;

    step(
        4,
        "A package altered in transit is refused and nothing is released.",
    );
    let mut bytes = fs::read(&referral_file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let tampered = scratch.path().join("tampered.age");
    fs::write(&tampered, &bytes)?;
    let out = scratch.path().join("tampered-out");
    match cli::open_to_dir(&hospital, tampered.to_str().unwrap_or_default(), &out) {
        Ok(_) => return Err(anyhow::anyhow!("a tampered package was accepted").into()),
        Err(f) => println!(
            "    refused (exit code {}): {:#}; {} was not created",
            f.code,
            f.error,
            out.display()
        ),
    }

    step(5, "The hospital replies (返書) in the same thread.");
    let reply_file = scratch.path().join("reply.age");
    let reply = seal_file(
        &hospital,
        &clinic,
        PackageKind::Reply,
        REPLY,
        vec![],
        Some((&opened.manifest.package_id, &opened.manifest.thread_id)),
        &reply_file,
    )?;
    println!(
        "    reply {} in reply to {}",
        reply.manifest.package_id, opened.manifest.package_id
    );

    step(6, "The clinic opens and verifies the reply.");
    let clinic_inbox = scratch
        .path()
        .join("clinic-inbox")
        .join(&reply.manifest.package_id);
    let opened_reply = cli::open_to_dir(
        &clinic,
        reply_file.to_str().unwrap_or_default(),
        &clinic_inbox,
    )?;
    cli::print_opened(&opened_reply, &clinic_inbox, false)?;

    println!(
        "\ndone: the referral and its reply were exchanged end to end encrypted and verified."
    );
    io::stdout().flush()?;
    Ok(())
}
