//! Offline packages: `seal` and `open`.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::{verify_failure, Failure};
use renkei::files;
use renkei::package::{self, Limits, PackageKind};
use renkei::profile::Profile;

#[derive(Args, Debug)]
pub(crate) struct SealArgs {
    /// The sender's profile folder.
    #[arg(long)]
    profile: PathBuf,
    /// A recipient's certificate (repeat for several recipients).
    #[arg(long = "to", required = true)]
    to: Vec<PathBuf>,
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
    /// The referral thread ID (default: a new thread, or, with --in-reply-to, the answered package's ID; `send` looks the real thread up in the local store).
    #[arg(long)]
    thread: Option<String>,
    /// Do not encrypt a copy to the sender's own key.
    #[arg(long = "no-self-copy")]
    no_self_copy: bool,
    /// Output file, or - for standard output.
    #[arg(short = 'o', long = "out")]
    out: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct OpenArgs {
    /// The recipient's profile folder.
    #[arg(long)]
    profile: PathBuf,
    /// The package file, or - for standard input.
    input: String,
    /// The folder to create for the verified members (must not exist).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Also write the document, rendered in Japanese, into the folder
    /// (`document.txt` or `document.html`).
    #[arg(long, value_enum, value_name = "FORMAT")]
    render: Option<renkei::document::Format>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub(crate) fn seal(a: SealArgs) -> Result<(), Failure> {
    let p = Profile::open(&a.profile)?;
    let trust = p.trust()?;
    let me = p.certificate()?;
    let key = p.signing_key()?;
    let recipients = files::load_recipients(&trust, &a.to).map_err(file_failure)?;
    let document = files::document_from_file(&a.document)?;
    let attachments = files::attachments_from_files(&a.attach)?;
    let mut out = Output::create(&a.out)?;
    let sealed = package::seal(
        package::SealRequest {
            sender_key: &key,
            sender_cert: &me,
            sender_copy: !a.no_self_copy,
            recipients: &recipients,
            kind: a.kind,
            thread_id: a.thread.clone().or_else(|| a.in_reply_to.clone()),
            in_reply_to: a.in_reply_to.clone(),
            document,
            attachments,
            limits: Limits::default(),
        },
        io::BufWriter::new(&mut out),
    )
    .map_err(|e| match e {
        package::SealError::Document(_) => verify_failure(e),
        other => Failure::from(other),
    })?;
    out.commit()?;
    let m = &sealed.manifest;
    if a.json {
        let v = serde_json::json!({
            "package_id": m.package_id, "envelope_id": hex::encode(sealed.envelope_id),
            "size": sealed.ciphertext_size, "manifest": m,
        });
        eprintln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "sealed {} {} for {} ({} members, {} bytes)",
            m.kind,
            m.package_id,
            m.recipients
                .iter()
                .map(|r| r.facility_id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            m.members.len(),
            sealed.ciphertext_size
        );
        eprintln!("  envelope ID: {}", hex::encode(sealed.envelope_id));
    }
    Ok(())
}

pub(crate) fn open(a: OpenArgs) -> Result<(), Failure> {
    let p = Profile::open(&a.profile)?;
    let input: Box<dyn Read + Send> = if a.input == "-" {
        Box::new(io::stdin())
    } else {
        let path = Path::new(&a.input);
        Box::new(io::BufReader::new(
            fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        ))
    };
    let opened = files::open_to_dir(&p, input, &a.out).map_err(file_failure)?;
    let rendered = match a.render {
        Some(f) => Some(files::render_opened(&a.out, f)?),
        None => None,
    };
    print_opened(&opened, &a.out, a.json)?;
    if let (Some(r), false) = (&rendered, a.json) {
        println!("  rendered:    {}", r.display());
    }
    Ok(())
}

/// A file operation's failure, with exit status 3 when something failed
/// verification.
pub(crate) fn file_failure(e: files::FileError) -> Failure {
    if e.is_verification_failure() {
        verify_failure(e)
    } else {
        Failure::from(e)
    }
}

/// Where sealed bytes go: a new file written atomically, or stdout.
enum Output {
    File(files::NewFile),
    Stdout(io::Stdout),
}

impl Output {
    /// Open `-` (stdout, refused on a terminal) or a new file.
    fn create(spec: &str) -> anyhow::Result<Output> {
        if spec == "-" {
            if io::stdout().is_terminal() {
                bail!("refusing to write an encrypted package to a terminal; use -o FILE or redirect standard output");
            }
            return Ok(Output::Stdout(io::stdout()));
        }
        Ok(Output::File(files::NewFile::create(Path::new(spec))?))
    }

    /// Make the output permanent.
    fn commit(self) -> anyhow::Result<()> {
        match self {
            Output::File(f) => f.commit()?,
            Output::Stdout(mut s) => s.flush()?,
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Stdout(s) => s.flush(),
        }
    }
}

/// One line about a document: kind, patient, and the first line of the
/// 紹介目的 (shortened).
pub fn summary_line(s: &renkei::document::Summary) -> String {
    let mut line = format!(
        "{} ({}), 患者 {}",
        s.kind.japanese(),
        s.kind,
        s.patient.name
    );
    if let Some(b) = &s.patient.birth_date {
        line.push_str(&format!(" ({b}生)"));
    }
    let purpose = s
        .purpose
        .as_deref()
        .and_then(|p| p.lines().map(str::trim).find(|l| !l.is_empty()));
    if let Some(p) = purpose {
        let short: String = p.chars().take(60).collect();
        let more = if short.len() < p.len() { "…" } else { "" };
        line.push_str(&format!(", 紹介目的: {short}{more}"));
    }
    line
}

/// Print who sent what.
pub fn print_opened(o: &package::Opened, out: &Path, json: bool) -> anyhow::Result<()> {
    let m = &o.manifest;
    if json {
        let v = serde_json::json!({
            "verified": true,
            "package_id": m.package_id,
            "kind": m.kind,
            "created": m.created,
            "sender": {
                "facility_id": m.sender.facility_id, "name": o.sender.name,
                "kind": o.sender.kind, "cert_sha256": o.sender.fingerprint,
            },
            "recipients": m.recipients,
            "thread_id": m.thread_id,
            "in_reply_to": m.in_reply_to,
            "members": m.members,
            "document": o.summary,
            "out_dir": out,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "verified {} ({}) {}",
        m.kind.japanese(),
        m.kind,
        m.package_id
    );
    println!(
        "  from:        {} {} ({})",
        o.sender.kind, m.sender.facility_id, o.sender.name
    );
    println!(
        "  to:          {}",
        m.recipients
            .iter()
            .map(|r| r.facility_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  created:     {}", m.created);
    println!("  thread:      {}", m.thread_id);
    if let Some(r) = &m.in_reply_to {
        println!("  in reply to: {r}");
    }
    println!("  document:    {}", summary_line(&o.summary));
    println!("  members in {}:", out.display());
    for mem in &m.members {
        println!(
            "    {:<40} {:>10} bytes  {}",
            mem.path, mem.size, mem.media_type
        );
    }
    Ok(())
}
