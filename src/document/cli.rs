//! `renkei document new | validate | show`: the thin layer between files
//! and the pure document functions. The binary wires [`DocumentCommand`]
//! under `renkei document` and maps [`DocumentCliError`] to exit statuses
//! ([`DocumentCliError::is_validation_failure`] → 3, else 1).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::letter::{self, LetterError, LetterForm};
use super::render::{html_fragment, print_fragment, print_html};
use super::{
    build_json, render, validate, BuildOptions, DocKind, Expect, FacilityCode, Family, Form,
    FormErrors, Format, Issue, Summary,
};

/// What `renkei document show` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Plain text.
    #[default]
    Text,
    /// A self-contained, printable HTML page.
    Html,
    /// An HTML fragment with class names only, for a page with its own
    /// stylesheet.
    HtmlFragment,
    /// A printable A4 page in the order of 別紙様式11.
    Print,
    /// The 別紙様式11 layout as an HTML fragment with class names only.
    PrintFragment,
}

/// `renkei document ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum DocumentCommand {
    /// Write a document (FHIR Document Bundle) from a filled-in form, in
    /// JP-CLINS or the standard 診療情報提供書 / 退院時サマリー HL7 FHIR
    /// 記述仕様; with --letter, a letter that is a PDF from a short form.
    New {
        /// referral, reply, reverse-referral, transfer or discharge-summary.
        #[arg(value_enum)]
        kind: DocKind,
        /// The filled-in form (TOML); see examples/KIND.toml, or
        /// examples/letter.toml with --letter.
        #[arg(long, value_name = "FILE")]
        form: PathBuf,
        /// Where to write the Bundle (`document.json`); `-` for stdout. An
        /// existing file is not overwritten.
        #[arg(short = 'o', long = "out", value_name = "BUNDLE.json")]
        out: PathBuf,
        /// The package this document answers (overrides the form's
        /// `in_reply_to`).
        #[arg(long, value_name = "PACKAGE_ID")]
        in_reply_to: Option<String>,
        /// The specification to write: jp-clins (電子カルテ情報共有サービス)
        /// or ereferral (the standard HL7 FHIR 記述仕様).
        #[arg(long, value_enum, default_value_t = Family::JpClins)]
        format: Family,
        /// The letter itself, a PDF: the form is then the short form
        /// (patient, from, to, purpose), and the PDF travels as
        /// attachments/NAME — seal or send it with `--attach` this file.
        #[arg(long, value_name = "LETTER.pdf")]
        letter: Option<PathBuf>,
    },
    /// Check a document: FHIR shape, required sections, references, and the
    /// facilities and attachments of its package when given.
    Validate {
        /// The document (`document.json`); `-` for stdin.
        file: PathBuf,
        /// The sending facility: must be the 紹介元 (section 920).
        #[arg(long, value_name = "FACILITY_ID")]
        sender: Option<FacilityCode>,
        /// A recipient facility (repeat for several): the 紹介先 (section 910)
        /// must be one of them.
        #[arg(long = "recipient", value_name = "FACILITY_ID")]
        recipient: Vec<FacilityCode>,
        /// An attachment of the package (repeat; `NAME` or `attachments/NAME`):
        /// the document's attachment references must match them exactly.
        #[arg(long = "attachment", value_name = "NAME")]
        attachment: Vec<String>,
        /// The package has no attachments (the document must reference none).
        #[arg(long, conflicts_with = "attachment")]
        no_attachments: bool,
        /// The kind of the package.
        #[arg(long, value_enum)]
        kind: Option<DocKind>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a document in Japanese: text, HTML, an HTML fragment, or the
    /// 別紙様式11 print layout. Beside an opened package's attachments, its
    /// PDF letter is checked to be a PDF.
    Show {
        /// The document (`document.json`); `-` for stdin.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = View::Text)]
        format: View,
    },
}

/// Why a `renkei document` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DocumentCliError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The output file exists already.
    #[error("{path} already exists; choose another file name or remove it first")]
    Exists {
        /// The file.
        path: String,
    },
    /// The form has problems; nothing was written.
    #[error("the form {path} needs fixing (nothing was written):\n{}", indent_lines(&.errors.to_string()))]
    Form {
        /// The form file.
        path: String,
        /// Every problem.
        errors: FormErrors,
    },
    /// The document is not valid (exit status 3).
    #[error("{path} is not a valid document:\n{}", list_issues(.issues))]
    Invalid {
        /// The document file.
        path: String,
        /// Every problem.
        issues: Vec<Issue>,
    },
    /// The document built from a form did not validate: a bug in renkei.
    #[error("renkei built a document that does not validate; this is a bug, please report it:\n{}", list_issues(.0))]
    SelfCheck(Vec<Issue>),
    /// The letter is not a PDF renkei accepts; nothing was written.
    #[error("{path}: {source}")]
    Letter {
        /// The letter file.
        path: String,
        /// Why.
        source: LetterError,
    },
}

impl DocumentCliError {
    /// Whether the command failed because a document is invalid (exit
    /// status 3, "verification failed").
    pub fn is_validation_failure(&self) -> bool {
        matches!(
            self,
            DocumentCliError::Invalid { .. } | DocumentCliError::Letter { .. }
        )
    }

    /// The validation issues, when [`Self::is_validation_failure`].
    pub fn issues(&self) -> &[Issue] {
        match self {
            DocumentCliError::Invalid { issues, .. } => issues,
            _ => &[],
        }
    }
}

fn indent_lines(s: &str) -> String {
    s.lines()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {}", i.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run a command with the process's stdin and stdout.
pub fn run(cmd: DocumentCommand) -> Result<(), DocumentCliError> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    run_with(cmd, &mut stdin, &mut stdout)
}

/// Run a command reading `-` from `input` and printing to `output`.
pub fn run_with(
    cmd: DocumentCommand,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), DocumentCliError> {
    match cmd {
        DocumentCommand::New {
            kind,
            form,
            out,
            in_reply_to,
            format,
            letter,
        } => new(
            kind,
            &form,
            &out,
            NewOptions {
                in_reply_to,
                format,
                letter,
            },
            output,
        ),
        DocumentCommand::Validate {
            file,
            sender,
            recipient,
            attachment,
            no_attachments,
            kind,
            json,
        } => {
            let attachment_members = if no_attachments {
                Some(Vec::new())
            } else if attachment.is_empty() {
                None
            } else {
                Some(
                    attachment
                        .into_iter()
                        .map(|a| {
                            if a.starts_with("attachments/") {
                                a
                            } else {
                                format!("attachments/{a}")
                            }
                        })
                        .collect(),
                )
            };
            let expect = Expect {
                sender,
                recipients: recipient,
                attachment_members,
                kind,
                in_reply_to: None,
            };
            validate_cmd(&file, &expect, json, input, output)
        }
        DocumentCommand::Show { file, format } => show(&file, format, input, output),
    }
}

fn display(p: &Path) -> String {
    if p.as_os_str() == "-" {
        "the document on stdin".to_string()
    } else {
        p.display().to_string()
    }
}

fn read_input(path: &Path, input: &mut dyn Read) -> Result<Vec<u8>, DocumentCliError> {
    let mut buf = Vec::new();
    let res = if path.as_os_str() == "-" {
        input
            .take(super::MAX_DOCUMENT_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map(|_| ())
    } else {
        fs::File::open(path).and_then(|f| {
            f.take(super::MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .map(|_| ())
        })
    };
    res.map_err(|source| DocumentCliError::Read {
        path: display(path),
        source,
    })?;
    Ok(buf)
}

fn write_err(path: &str) -> impl FnOnce(io::Error) -> DocumentCliError + '_ {
    move |source| DocumentCliError::Write {
        path: path.to_string(),
        source,
    }
}

/// The options of `document new` beside the form and output.
struct NewOptions {
    in_reply_to: Option<String>,
    format: Family,
    letter: Option<PathBuf>,
}

/// Read a letter's size and first bytes and check it is a PDF.
fn check_letter_file(path: &Path) -> Result<(), DocumentCliError> {
    let read_err = |source| DocumentCliError::Read {
        path: display(path),
        source,
    };
    let f = fs::File::open(path).map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    let mut head = Vec::with_capacity(8);
    f.take(8).read_to_end(&mut head).map_err(read_err)?;
    letter::check_pdf(&head, meta.len()).map_err(|source| DocumentCliError::Letter {
        path: display(path),
        source,
    })
}

fn new(
    kind: DocKind,
    form_path: &Path,
    out: &Path,
    o: NewOptions,
    output: &mut dyn Write,
) -> Result<(), DocumentCliError> {
    let bytes = fs::read(form_path).map_err(|source| DocumentCliError::Read {
        path: display(form_path),
        source,
    })?;
    let form_err = |errors| DocumentCliError::Form {
        path: display(form_path),
        errors,
    };
    let opts = BuildOptions {
        in_reply_to: o.in_reply_to,
        format: o.format,
        ..BuildOptions::default()
    };

    // Build, and say what the package around the document must hold.
    let (json, expect, letter_file) = match &o.letter {
        None => {
            let form = Form::from_bytes(&bytes).map_err(form_err)?;
            let json = build_json(kind, &form, &opts).map_err(form_err)?;
            let expect = Expect {
                sender: Some((&form.from.facility_id).into()),
                recipients: form.to.iter().map(|t| (&t.facility_id).into()).collect(),
                attachment_members: Some(
                    form.attachments
                        .iter()
                        .map(|a| format!("attachments/{}", a.file))
                        .collect(),
                ),
                kind: Some(kind),
                in_reply_to: opts.in_reply_to.clone().or(form.in_reply_to.clone()),
            };
            (json, expect, None)
        }
        Some(path) => {
            let form = LetterForm::from_bytes(&bytes).map_err(form_err)?;
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            check_letter_file(path)?;
            let json = letter::build_letter_json(kind, &form, &file, &opts).map_err(form_err)?;
            let expect = Expect {
                sender: Some((&form.from.facility_id).into()),
                recipients: form.to.iter().map(|t| (&t.facility_id).into()).collect(),
                attachment_members: Some(
                    std::iter::once(format!("attachments/{file}"))
                        .chain(
                            form.attachments
                                .iter()
                                .map(|a| format!("attachments/{}", a.file)),
                        )
                        .collect(),
                ),
                kind: Some(kind),
                in_reply_to: opts.in_reply_to.clone().or(form.in_reply_to.clone()),
            };
            (json, expect, Some(file))
        }
    };

    // Self-check: what renkei writes, renkei accepts.
    let summary = validate(&json, &expect).map_err(DocumentCliError::SelfCheck)?;

    if out.as_os_str() == "-" {
        output.write_all(&json).map_err(write_err("stdout"))?;
        return Ok(());
    }
    let name = display(out);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                DocumentCliError::Exists { path: name.clone() }
            } else {
                DocumentCliError::Write {
                    path: name.clone(),
                    source,
                }
            }
        })?;
    f.write_all(&json)
        .and_then(|_| f.sync_all())
        .map_err(write_err(&name))?;
    let mut msg = format!(
        "wrote {name}: {} ({}) for {}, {} → {}\n  spec:   {}\n",
        summary.title,
        kind,
        summary.patient.name,
        summary.from.facility_id,
        summary
            .to
            .as_ref()
            .map_or("-".to_string(), |t| t.facility_id.to_string()),
        summary.spec.name(),
    );
    if let (Some(file), Some(path)) = (&letter_file, &o.letter) {
        msg.push_str(&format!(
            "  letter: attachments/{file}; seal or send the document with --attach {}\n",
            path.display()
        ));
    }
    output
        .write_all(msg.as_bytes())
        .map_err(write_err("stdout"))?;
    Ok(())
}

fn validate_cmd(
    file: &Path,
    expect: &Expect,
    json: bool,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), DocumentCliError> {
    let bytes = read_input(file, input)?;
    let result = validate(&bytes, expect);
    let w = write_err("stdout");
    match result {
        Ok(s) => {
            if json {
                let v = serde_json::json!({
                    "valid": true,
                    "specification": { "code": s.spec, "name": s.spec.name(), "source": s.spec.source() },
                    "summary": s,
                });
                writeln!(
                    output,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
                .map_err(w)?;
            } else {
                let party = |p: &super::Party| {
                    format!(
                        "{} {}",
                        p.facility_id,
                        p.name.as_deref().unwrap_or_default()
                    )
                };
                let mut text = format!(
                    "valid: {} ({}) from {} to {}\n  patient:  {}{}{}\n",
                    s.title,
                    s.kind,
                    party(&s.from),
                    s.to.as_ref().map_or("-".to_string(), party),
                    s.patient.name,
                    s.patient
                        .kana
                        .as_ref()
                        .map_or(String::new(), |k| format!("（{k}）")),
                    s.patient
                        .birth_date
                        .as_ref()
                        .map_or(String::new(), |b| format!(" {b}")),
                );
                text.push_str(&format!(
                    "  spec:     {} [{}; {}]\n",
                    s.spec.name(),
                    s.spec.as_str(),
                    s.spec.source()
                ));
                if let Some(p) = &s.purpose {
                    text.push_str(&format!("  purpose:  {}\n", p.replace('\n', " ")));
                }
                if let Some(l) = &s.letter {
                    text.push_str(&format!(
                        "  letter:   {} {} (PDF)\n",
                        l.member,
                        l.title.as_deref().unwrap_or_default()
                    ));
                }
                if let Some(a) = &s.answers {
                    text.push_str(&format!("  answers:  {a}\n"));
                }
                for a in &s.attachments {
                    text.push_str(&format!(
                        "  attached: {} {}\n",
                        a.member,
                        a.title.as_deref().unwrap_or_default()
                    ));
                }
                for warn in &s.warnings {
                    text.push_str(&format!("  warning:  {warn}\n"));
                }
                output.write_all(text.as_bytes()).map_err(w)?;
            }
            Ok(())
        }
        Err(issues) => {
            if json {
                let v = serde_json::json!({ "valid": false, "issues": issues });
                writeln!(
                    output,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
                .map_err(w)?;
            }
            Err(DocumentCliError::Invalid {
                path: display(file),
                issues,
            })
        }
    }
}

fn show(
    file: &Path,
    view: View,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), DocumentCliError> {
    let bytes = read_input(file, input)?;
    let invalid = |issues| DocumentCliError::Invalid {
        path: display(file),
        issues,
    };
    let value = super::validate::parse(&bytes).map_err(|i| invalid(vec![i]))?;
    let summary = super::validate_value(&value, &Expect::default()).map_err(invalid)?;
    check_letter_beside(file, &summary)?;
    let text = match view {
        View::Text => render(&value, Format::Text),
        View::Html => render(&value, Format::Html),
        View::HtmlFragment => html_fragment(&value),
        View::Print => print_html(&value),
        View::PrintFragment => print_fragment(&value),
    };
    output
        .write_all(text.as_bytes())
        .map_err(write_err("stdout"))
}

/// When the document lies in an opened package's folder, beside its
/// `attachments/`, check that its letter is a PDF before it is shown as
/// one.
fn check_letter_beside(file: &Path, summary: &Summary) -> Result<(), DocumentCliError> {
    let (Some(l), Some(dir)) = (&summary.letter, file.parent()) else {
        return Ok(());
    };
    if file.as_os_str() == "-" {
        return Ok(());
    }
    let path = dir.join(&l.member);
    if path.exists() {
        check_letter_file(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: DocumentCommand,
    }

    #[test]
    fn arguments_parse() {
        let t = T::try_parse_from([
            "t",
            "validate",
            "-",
            "--sender",
            "1319876543",
            "--recipient",
            "1311234567",
            "--recipient",
            "1317654323",
            "--attachment",
            "a.pdf",
            "--json",
        ])
        .unwrap();
        match t.cmd {
            DocumentCommand::Validate {
                sender,
                recipient,
                attachment,
                json,
                ..
            } => {
                assert_eq!(sender.unwrap().as_str(), "1319876543");
                assert_eq!(recipient.len(), 2);
                assert_eq!(attachment, ["a.pdf"]);
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        assert!(T::try_parse_from(["t", "validate", "-", "--sender", "13"]).is_err());
        assert!(T::try_parse_from([
            "t",
            "validate",
            "-",
            "--attachment",
            "a",
            "--no-attachments"
        ])
        .is_err());
        let t = T::try_parse_from([
            "t",
            "new",
            "reverse-referral",
            "--form",
            "f.toml",
            "-o",
            "-",
        ])
        .unwrap();
        assert!(matches!(
            t.cmd,
            DocumentCommand::New {
                kind: DocKind::ReverseReferral,
                ..
            }
        ));
        let t = T::try_parse_from(["t", "show", "x.json", "--format", "html"]).unwrap();
        assert!(matches!(
            t.cmd,
            DocumentCommand::Show {
                format: View::Html,
                ..
            }
        ));
        for (arg, view) in [
            ("print", View::Print),
            ("html-fragment", View::HtmlFragment),
            ("print-fragment", View::PrintFragment),
        ] {
            let t = T::try_parse_from(["t", "show", "x.json", "--format", arg]).unwrap();
            assert!(matches!(t.cmd, DocumentCommand::Show { format, .. } if format == view));
        }
        let t = T::try_parse_from([
            "t",
            "new",
            "referral",
            "--form",
            "f.toml",
            "--format",
            "ereferral",
            "--letter",
            "紹介状.pdf",
            "-o",
            "-",
        ])
        .unwrap();
        assert!(matches!(
            t.cmd,
            DocumentCommand::New {
                format: Family::Standard,
                letter: Some(_),
                ..
            }
        ));
        assert!(T::try_parse_from([
            "t", "new", "referral", "--form", "f", "-o", "-", "--format", "fhir"
        ])
        .is_err());
    }

    #[test]
    fn invalid_input_is_a_validation_failure() {
        let mut input: &[u8] = b"not json";
        let mut out = Vec::new();
        let e = run_with(
            DocumentCommand::Show {
                file: "-".into(),
                format: View::Text,
            },
            &mut input,
            &mut out,
        )
        .unwrap_err();
        assert!(e.is_validation_failure());
        assert!(e.to_string().contains("not well-formed JSON"), "{e}");
        let e = DocumentCliError::Exists { path: "x".into() };
        assert!(!e.is_validation_failure());
        assert!(e.issues().is_empty());
    }
}
