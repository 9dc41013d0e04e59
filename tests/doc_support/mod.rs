//! Valid JP-CLINS documents for the package and relay tests: the example
//! form `examples/KIND.toml` with the facility IDs, attachments and
//! in-reply-to replaced, built with `renkei::document::build_json`.
//!
//! Sealing and opening validate the document against the package (sender,
//! recipients, attachment members, kind, in-reply-to), so every test
//! package carries a document made for it.
#![allow(dead_code)]

use renkei::document::form::AttachmentForm;
use renkei::document::{build_json, BuildOptions, DocKind, Form};
use renkei::package::{PackageKind, ATTACHMENTS_DIR};

/// The example form of a kind, as shipped in `examples/`.
pub fn example_form(kind: DocKind) -> Form {
    let path = format!("{}/examples/{kind}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Form::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A valid document of `kind` written by facility `from` to facility `to`,
/// referencing exactly the attachment members `attachments` (`NAME` or
/// `attachments/NAME`). A reply keeps the example's in-reply-to; the other
/// kinds answer nothing.
pub fn document_for(kind: DocKind, from: &str, to: &str, attachments: &[&str]) -> Vec<u8> {
    document_answering(kind, from, to, attachments, None)
}

/// [`document_for`] answering package `in_reply_to` (when given).
pub fn document_answering(
    kind: DocKind,
    from: &str,
    to: &str,
    attachments: &[&str],
    in_reply_to: Option<&str>,
) -> Vec<u8> {
    let mut form = example_form(kind);
    form.from.facility_id = from.parse().expect("sender facility ID");
    let mut dest = form.to.take().unwrap_or_else(|| form.from.clone());
    dest.facility_id = to.parse().expect("recipient facility ID");
    form.to = Some(dest);
    form.attachments = attachments
        .iter()
        .map(|a| {
            let file = a
                .strip_prefix(ATTACHMENTS_DIR)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(a);
            AttachmentForm {
                file: file.to_string(),
                title: format!("添付 {file}"),
            }
        })
        .collect();
    if kind != DocKind::Reply {
        form.in_reply_to = None;
    }
    let opts = BuildOptions {
        in_reply_to: in_reply_to.map(str::to_string),
        ..BuildOptions::default()
    };
    build_json(kind, &form, &opts).unwrap_or_else(|e| panic!("{kind} document: {e}"))
}

/// The document kind of a package kind (`clinical-info` carries a
/// referral-type document).
pub fn doc_kind(kind: PackageKind) -> DocKind {
    DocKind::try_from(kind).unwrap_or(DocKind::Referral)
}
