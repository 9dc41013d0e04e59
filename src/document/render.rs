//! Rendering a document for the liaison office, in Japanese:
//!
//! - [`render()`] with [`Format::Text`]: plain text;
//! - [`render()`] with [`Format::Html`]: a printable HTML page that is
//!   self-contained (its own inline CSS, no scripts, no external assets, a
//!   Content-Security-Policy that forbids loading anything);
//! - [`html_fragment`]: the same content as an HTML fragment for a
//!   front-end (the desk) that brings its own stylesheet: class names only,
//!   no `style` attribute, no `<style>` or script;
//! - [`print_html`] and [`print_fragment`]: the letter laid out in the
//!   order of 別紙様式11 (紹介先, date, 紹介元 and 医師, patient, 傷病名,
//!   紹介目的, 既往歴及び家族歴, 症状経過及び検査結果, 治療経過, 現在の処方,
//!   備考) with dates in 西暦 and 和暦, for printing on A4.
//!
//! Every rendering says which specification the document follows, shows a
//! PDF letter and the attachments as links to their package members
//! (`attachments/NAME`, relative to the opened package's folder), reads the
//! Bundle generically (documents written by other systems render too),
//! never fails and never trusts the input: every value is escaped, the
//! narrative XHTML of a section is reduced to text and never copied, and
//! control and bidirectional-override characters are replaced.

use serde_json::Value;

use super::codes;
pub use super::read::escape_html;
use super::read::{self, arr, str_at, Index, Section};
use super::spec::{self, Spec};
use super::{wareki, DocKind};
use crate::package::ATTACHMENTS_DIR;

/// Output format of [`render()`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain text (UTF-8).
    #[default]
    Text,
    /// A self-contained, printable HTML page.
    Html,
}

/// Sections shown even when absent (as 記載なし), in the order of a
/// 診療情報提供書.
const ALWAYS_REFERRAL: &[&str] = &["950", "340", "360", "370", "510", "430", "620", "220"];
/// Sections shown even when absent in a 退院時サマリー (JP-CLINS codes;
/// the standard's 362 and 372 stand for 360 and 370).
const ALWAYS_DISCHARGE: &[&str] = &[
    "312", "342", "352", "360", "370", "510", "333", "344", "444", "424", "623", "220",
];

/// Codes that mean the same section (JP-CLINS and the standard summary).
fn same_section(a: &str, b: &str) -> bool {
    fn canon(c: &str) -> &str {
        match c {
            "362" => "360",
            "372" => "370",
            "552" => "550",
            "642" => "640",
            other => other,
        }
    }
    canon(a) == canon(b)
}

/// Render a document in Japanese.
pub fn render(bundle: &Value, format: Format) -> String {
    let doc = model(bundle);
    match format {
        Format::Text => text(&doc),
        Format::Html => html(&doc),
    }
}

/// The document as an HTML fragment (one `<article class="rk-document">`)
/// for a page that brings its own stylesheet: every value escaped, class
/// names only (`rk-…`), no `style` attribute, no `<style>`, no script.
pub fn html_fragment(bundle: &Value) -> String {
    fragment(&model(bundle))
}

/// The letter in the order of 別紙様式11, as a self-contained printable A4
/// page (its own inline CSS, as [`Format::Html`]).
pub fn print_html(bundle: &Value) -> String {
    let p = print_model(bundle);
    let mut out = page_head(&p.title, PRINT_CSS);
    out.push_str(&print_body(&p));
    out.push_str("</body>\n</html>\n");
    out
}

/// The letter in the order of 別紙様式11 as an HTML fragment (one
/// `<article class="rk-print">`, class names only, as [`html_fragment`]),
/// for a front-end that prints with its own stylesheet.
pub fn print_fragment(bundle: &Value) -> String {
    print_body(&print_model(bundle))
}

/// A link to a package member, or a file named only.
#[derive(Debug, Clone)]
struct Link {
    /// What to show.
    text: String,
    /// The document's own URL (`attachments/…` as written).
    url: String,
    /// A safe href: set only for a valid package member, percent-encoded.
    href: Option<String>,
}

/// One block of the rendered document.
struct Block {
    heading: String,
    /// `rk-…` class naming what the block is.
    class: String,
    /// Label/value pairs (facilities, patient, document data).
    fields: Vec<(String, String)>,
    /// Items (entries), each possibly several lines.
    items: Vec<String>,
    /// Files (the letter, attachments).
    links: Vec<Link>,
    /// Narrative, when there are no entries.
    narrative: Option<String>,
}

impl Block {
    fn new(heading: impl Into<String>, class: impl Into<String>) -> Block {
        Block {
            heading: heading.into(),
            class: class.into(),
            fields: Vec::new(),
            items: Vec::new(),
            links: Vec::new(),
            narrative: None,
        }
    }

    fn field(&mut self, label: &str, value: Option<String>) {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            self.fields.push((label.to_string(), v));
        }
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty()
            && self.items.is_empty()
            && self.links.is_empty()
            && self.narrative.is_none()
    }

    /// Items, links and narrative as lines of text.
    fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.items.clone();
        out.extend(self.links.iter().map(link_text));
        out.extend(self.narrative.iter().cloned());
        out
    }
}

struct Doc {
    title: String,
    referral_type: bool,
    header: Block,
    blocks: Vec<Block>,
}

/// Control and bidirectional-override characters are replaced so a
/// document cannot rewrite the terminal or disguise text.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n' && c != '\t') || bidi {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

fn sex(code: &str) -> String {
    match code {
        "male" => "男性".into(),
        "female" => "女性".into(),
        "other" => "その他".into(),
        "unknown" => "不明".into(),
        other => other.into(),
    }
}

fn date_part(s: &str) -> String {
    s.split('T').next().unwrap_or(s).to_string()
}

/// A FHIR date in 西暦 with 和暦 beside it; as written when it is not one.
fn jdate(s: &str) -> String {
    wareki::japanese_date(s).unwrap_or_else(|| date_part(s))
}

/// A safe href for an `attachments/…` URL of the document: only when it
/// decodes to a valid package member; every byte but unreserved ASCII
/// percent-encoded.
fn member_href(url: &str) -> Option<String> {
    let rest = url.strip_prefix(ATTACHMENTS_DIR)?.strip_prefix('/')?;
    let name = read::percent_decode(rest)?;
    crate::package::path::check(&format!("{ATTACHMENTS_DIR}/{name}")).ok()?;
    let mut href = format!("{ATTACHMENTS_DIR}/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            href.push(b as char);
        } else {
            href.push_str(&format!("%{b:02X}"));
        }
    }
    Some(href)
}

fn link_text(l: &Link) -> String {
    if l.text.is_empty() {
        format!("<{}>", l.url)
    } else {
        format!("{} <{}>", l.text, l.url)
    }
}

/// The links of a DocumentReference's attachments that name package
/// members.
fn member_links(docref: &Value) -> Vec<Link> {
    let desc = str_at(docref, "description");
    read::attachment_urls(docref)
        .into_iter()
        .filter(|(url, _, _)| url.starts_with(&format!("{ATTACHMENTS_DIR}/")))
        .map(|(url, title, _)| Link {
            text: title.or(desc).unwrap_or_default().to_string(),
            url: url.to_string(),
            href: member_href(url),
        })
        .collect()
}

/// The letter of a document (a PDF of section 230, or of section 210 typed
/// as the document itself), as a link.
fn letter_link(comp: &Value, secs: &[Section<'_>], ix: &Index<'_>) -> Option<Link> {
    let type_code = comp
        .get("type")
        .map(|t| arr(t, "coding"))
        .unwrap_or_default()
        .iter()
        .find_map(|c| str_at(c, "code"))
        .unwrap_or_default();
    secs.iter()
        .filter(|s| matches!(s.code, Some("230" | "210")))
        .flat_map(|s| {
            s.entries()
                .iter()
                .filter_map(|e| ix.resolve_ref(e))
                .filter(move |r| {
                    s.code == Some("230")
                        || arr(r.get("type").unwrap_or(&Value::Null), "coding")
                            .iter()
                            .any(|c| {
                                str_at(c, "system") == Some(codes::DOC_TYPE_SYSTEM)
                                    && str_at(c, "code") == Some(type_code)
                            })
                })
        })
        .filter(|r| str_at(r, "resourceType") == Some("DocumentReference"))
        .flat_map(|r| {
            read::attachment_urls(r)
                .into_iter()
                .filter(|(_, _, t)| t.is_some_and(super::validate::is_pdf_media_type))
                .filter_map(|(url, title, _)| {
                    let href = member_href(url)?;
                    Some(Link {
                        text: title
                            .or(str_at(r, "description"))
                            .unwrap_or("紹介状")
                            .to_string(),
                        url: url.to_string(),
                        href: Some(href),
                    })
                })
        })
        .next()
}

/// The Composition of a Bundle, or `null`.
fn composition<'a>(ix: &Index<'a>) -> Option<&'a Value> {
    ix.entries
        .first()
        .map(|(_, r)| *r)
        .filter(|r| str_at(r, "resourceType") == Some("Composition"))
}

fn kind_of(comp: &Value) -> Option<DocKind> {
    comp.get("meta")
        .map(|m| arr(m, "tag"))
        .unwrap_or_default()
        .iter()
        .filter(|t| str_at(t, "system") == Some(codes::KIND_TAG_SYSTEM))
        .find_map(|t| str_at(t, "code").and_then(DocKind::from_tag))
}

fn title_of(comp: &Value, referral_type: bool) -> String {
    let base = str_at(comp, "title")
        .map(str::to_string)
        .unwrap_or_else(|| {
            if referral_type {
                codes::TITLE_REFERRAL.into()
            } else {
                codes::TITLE_DISCHARGE_SUMMARY.into()
            }
        });
    match kind_of(comp) {
        Some(k @ (DocKind::Reply | DocKind::ReverseReferral | DocKind::Transfer)) => {
            format!("{base}（{}）", k.japanese())
        }
        _ => base,
    }
}

/// The Organization and Practitioner of section 910 or 920 (for 920 of a
/// summary without one, the custodian and the authoring Practitioner).
fn party<'a>(
    code: &str,
    comp: &'a Value,
    secs: &[Section<'a>],
    ix: &Index<'a>,
) -> (Option<&'a Value>, Option<&'a Value>, Option<String>) {
    let mut org = None;
    let mut doctor = None;
    let mut narrative = None;
    if let Some(s) = secs.iter().find(|s| s.code == Some(code)) {
        for e in s.entries() {
            match ix.resolve_ref(e) {
                Some(r) if str_at(r, "resourceType") == Some("Organization") => org = Some(r),
                Some(r) if str_at(r, "resourceType") == Some("Practitioner") => doctor = Some(r),
                _ => {}
            }
        }
        if org.is_none() {
            narrative = s.text();
        }
    } else if code == "920" {
        org = comp.get("custodian").and_then(|c| ix.resolve_ref(c));
        doctor = arr(comp, "author")
            .iter()
            .filter_map(|a| ix.resolve_ref(a))
            .find(|r| str_at(r, "resourceType") == Some("Practitioner"));
    }
    (org, doctor, narrative)
}

fn address(o: &Value) -> Option<String> {
    arr(o, "address").first().and_then(|a| {
        let text = str_at(a, "text")?;
        Some(match str_at(a, "postalCode") {
            Some(z) => format!("〒{z} {text}"),
            None => text.to_string(),
        })
    })
}

fn phone(o: &Value) -> Option<String> {
    arr(o, "telecom")
        .iter()
        .find(|t| str_at(t, "system") == Some("phone"))
        .and_then(|t| str_at(t, "value"))
        .map(str::to_string)
}

fn doctor_name(d: &Value) -> Option<String> {
    let (name, kana) = read::person_names(d);
    name.map(|n| match kana {
        Some(k) => format!("{n}（{k}）"),
        None => n,
    })
}

fn model(b: &Value) -> Doc {
    let ix = Index::new(b);
    let empty = Value::Null;
    let comp = composition(&ix).unwrap_or(&empty);
    let spec = spec::detect(b, comp).spec;
    let referral_type = spec.is_referral_type();
    let title = title_of(comp, referral_type);

    // header
    let mut header = Block::new("文書情報", "rk-meta");
    header.field("作成日", str_at(comp, "date").map(jdate));
    header.field(
        "文書番号",
        comp.get("identifier")
            .and_then(|i| str_at(i, "value"))
            .map(str::to_string),
    );
    header.field(
        "文書区分",
        arr(comp, "category").first().and_then(read::concept_text),
    );
    header.field("仕様", Some(spec.name().to_string()));
    if !referral_type {
        if let Some(p) = arr(comp, "event").first().and_then(|e| e.get("period")) {
            header.field("入院日", str_at(p, "start").map(jdate));
            header.field("退院日", str_at(p, "end").map(jdate));
        }
    }
    let answers: Vec<String> = arr(comp, "relatesTo")
        .iter()
        .filter_map(|r| r.get("targetIdentifier"))
        .filter_map(|t| str_at(t, "value"))
        .map(|v| v.trim_start_matches("urn:uuid:").to_string())
        .collect();
    if !answers.is_empty() {
        header.field("返信対象パッケージ", Some(answers.join(", ")));
    }

    let secs = read::sections(comp);
    let mut blocks = Vec::new();

    // the letter itself, first
    let letter = letter_link(comp, &secs, &ix);
    if let Some(l) = &letter {
        let mut blk = Block::new("紹介状（PDF）", "rk-letter");
        blk.narrative = Some("この文書の本文は PDF です（印刷はこの PDF をそのまま）。".into());
        blk.links.push(l.clone());
        blocks.push(blk);
    }

    // 紹介先 / 紹介元
    for (code, heading, class) in [("910", "紹介先", "rk-to"), ("920", "紹介元", "rk-from")] {
        let mut blk = Block::new(heading, class);
        let (org, doctor, narrative) = party(code, comp, &secs, &ix);
        blk.narrative = narrative;
        if let Some(o) = org {
            blk.field("医療機関", str_at(o, "name").map(str::to_string));
            blk.field("医療機関コード", read::facility_code(o).map(str::to_string));
            blk.field("診療科", read::department(o));
        }
        if let Some(d) = doctor {
            blk.field("医師", doctor_name(d));
        }
        if let Some(o) = org {
            blk.field("所在地", address(o));
            blk.field("電話", phone(o));
        }
        if blk.is_empty() && code == "910" && !referral_type {
            continue;
        }
        if blk.is_empty() {
            blk.narrative = Some("記載なし".into());
        }
        blocks.push(blk);
    }

    // 患者
    let mut pb = Block::new("患者", "rk-patient");
    if let Some(p) = comp.get("subject").and_then(|s| ix.resolve_ref(s)) {
        let (name, kana) = read::person_names(p);
        pb.field("氏名", name);
        pb.field("フリガナ", kana);
        pb.field("生年月日", str_at(p, "birthDate").map(jdate));
        pb.field("性別", str_at(p, "gender").map(sex));
        let ids: Vec<String> = arr(p, "identifier")
            .iter()
            .filter(|i| {
                str_at(i, "system").is_some_and(|s| s.starts_with(codes::PATIENT_ID_OID_PREFIX))
            })
            .filter_map(|i| str_at(i, "value"))
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            pb.field("患者ID", Some(ids.join(", ")));
        }
    }
    if pb.is_empty() {
        pb.narrative = Some("記載なし".into());
    }
    blocks.push(pb);

    // clinical sections, in table order (a letter holds what it holds: no
    // 記載なし for what the short form did not ask)
    let always = match (&letter, referral_type) {
        (Some(_), _) => &[][..],
        (None, true) => ALWAYS_REFERRAL,
        (None, false) => ALWAYS_DISCHARGE,
    };
    for def in codes::SECTIONS {
        if matches!(def.code, "910" | "920" | "300") {
            continue;
        }
        let present: Vec<&Section<'_>> = secs.iter().filter(|s| s.code == Some(def.code)).collect();
        let wanted = always.contains(&always_code(spec, def.code))
            && !secs.iter().any(|s| {
                s.code
                    .is_some_and(|c| c != def.code && same_section(c, def.code))
            });
        if present.is_empty() && !wanted {
            continue;
        }
        let mut blk = Block::new(def.heading, format!("rk-section rk-section-{}", def.code));
        for s in &present {
            fill(&mut blk, s, &ix);
        }
        // the letter was shown first
        if let Some(l) = &letter {
            let before = blk.links.len();
            blk.links.retain(|x| x.url != l.url);
            if blk.is_empty() && before > 0 {
                continue;
            }
        }
        if blk.is_empty() {
            blk.narrative = Some("記載なし".into());
        }
        blocks.push(blk);
    }
    // sections renkei does not know (other systems' extensions)
    for s in &secs {
        if s.code.and_then(codes::section).is_some() {
            continue;
        }
        let mut blk = Block::new(
            s.title.map_or_else(|| s.label(), str::to_string),
            "rk-section rk-section-other",
        );
        fill(&mut blk, s, &ix);
        if !blk.is_empty() {
            blocks.push(blk);
        }
    }

    Doc {
        title,
        referral_type,
        header,
        blocks,
    }
}

/// The code of the always-shown lists a section code stands for in `spec`
/// (a standard summary shows 362 and 372 where the lists name 360 and 370).
fn always_code(spec: Spec, code: &'static str) -> &'static str {
    match (spec, code) {
        (Spec::EDischargeSummary, "362") => "360",
        (Spec::EDischargeSummary, "372") => "370",
        (Spec::EDischargeSummary, "360" | "370") => "",
        _ => code,
    }
}

fn fill(blk: &mut Block, s: &Section<'_>, ix: &Index<'_>) {
    let resolved: Vec<Option<&Value>> = s.entries().iter().map(|e| ix.resolve_ref(e)).collect();
    // A section that only points at an Encounter (紹介目的, 入院時詳細, 入院理由,
    // 退院時詳細) says more in its narrative than the Encounter does.
    let encounters_only = !resolved.is_empty()
        && resolved
            .iter()
            .all(|r| r.is_some_and(|r| str_at(r, "resourceType") == Some("Encounter")));
    let prefix = s.title.map(|t| format!("{t}: "));
    let mut items = Vec::new();
    if !(encounters_only && s.text().is_some()) {
        for (e, r) in s.entries().iter().zip(&resolved) {
            // Files of the package become links; inline text stays text.
            if let Some(r) = r.filter(|r| {
                str_at(r, "resourceType") == Some("DocumentReference")
                    && read::inline_texts(r).is_empty()
            }) {
                let links = member_links(r);
                if !links.is_empty() {
                    blk.links.extend(links);
                    continue;
                }
            }
            let d = r
                .map(read::describe)
                .or_else(|| str_at(e, "display").map(str::to_string));
            if let Some(d) = d {
                let d = match &prefix {
                    Some(p) => d.strip_prefix(p.as_str()).map_or(d.clone(), str::to_string),
                    None => d,
                };
                if !d.trim().is_empty() {
                    items.push(d);
                }
            }
        }
    }
    if items.is_empty() && blk.links.is_empty() {
        if let Some(t) = s.text() {
            blk.narrative = Some(match blk.narrative.take() {
                Some(prev) => format!("{prev}\n{t}"),
                None => t,
            });
        } else if s.value.get("emptyReason").is_some() {
            let why = s
                .value
                .get("emptyReason")
                .and_then(|r| {
                    arr(r, "coding")
                        .iter()
                        .find_map(|c| str_at(c, "code"))
                        .map(|c| match c {
                            "nilknown" => "特記事項なし".to_string(),
                            "notasked" => "未聴取".to_string(),
                            "unavailable" => "情報なし（取得できず）".to_string(),
                            other => other.to_string(),
                        })
                        .or_else(|| read::concept_text(r))
                })
                .unwrap_or_else(|| "記載なし".into());
            blk.narrative = Some(why);
        }
    } else {
        blk.items.extend(items);
    }
}

fn text(d: &Doc) -> String {
    let mut out = String::new();
    let title = clean(&d.title);
    out.push_str(&title);
    out.push('\n');
    out.push_str(&"=".repeat(title.chars().count() * 2));
    out.push('\n');
    for (k, v) in &d.header.fields {
        out.push_str(&format!("{k}: {}\n", clean(v)));
    }
    for b in &d.blocks {
        out.push('\n');
        out.push_str(&format!("【{}】\n", clean(&b.heading)));
        for (k, v) in &b.fields {
            out.push_str(&format!("  {k}: {}\n", indent(&clean(v), 4)));
        }
        let mut entries: Vec<String> = b.items.clone();
        entries.extend(b.links.iter().map(link_text));
        if let [only] = entries.as_slice() {
            for line in clean(only).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        } else {
            for item in &entries {
                out.push_str(&format!("  ・{}\n", indent(&clean(item), 4)));
            }
        }
        if let Some(n) = &b.narrative {
            for line in clean(n).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out
}

fn indent(s: &str, n: usize) -> String {
    s.lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{}", " ".repeat(n)))
}

fn e(s: &str) -> String {
    escape_html(&clean(s))
}

const CSS: &str = "\
@page{size:A4;margin:16mm}\
*{box-sizing:border-box}\
body{font-family:\"Hiragino Mincho ProN\",\"Yu Mincho\",\"Noto Serif CJK JP\",serif;color:#000;background:#fff;max-width:48em;margin:2em auto;padding:0 1em;line-height:1.7;font-size:11pt}\
h1{text-align:center;font-size:18pt;letter-spacing:.4em;border-bottom:3px double #000;padding-bottom:.2em;margin:0 0 .6em}\
h2{font-size:12pt;margin:0 0 .3em;padding:.1em .4em;background:#eee;border-left:4px solid #333}\
section{margin:0 0 1em;break-inside:avoid;page-break-inside:avoid}\
dl{display:grid;grid-template-columns:9em 1fr;margin:0;gap:.1em .8em}\
dt{font-weight:bold}\
dd{margin:0;white-space:pre-wrap}\
ul{margin:0;padding-left:1.4em}\
li{white-space:pre-wrap}\
p{margin:0;white-space:pre-wrap}\
a{color:#00e}\
.rk-meta{font-size:10pt;margin-bottom:1em}\
.rk-letter{border:2px solid #333;padding:.4em .6em}\
.rk-parties{display:grid;grid-template-columns:1fr 1fr;gap:0 1.5em}\
footer{margin-top:2em;font-size:8pt;color:#555;border-top:1px solid #999}\
@media print{body{margin:0;max-width:none;padding:0}h2{background:none}footer{color:#000}}";

const PRINT_CSS: &str = "\
@page{size:A4;margin:18mm 16mm}\
*{box-sizing:border-box}\
body{font-family:\"Hiragino Mincho ProN\",\"Yu Mincho\",\"Noto Serif CJK JP\",serif;color:#000;background:#fff;max-width:48em;margin:2em auto;padding:0 1em;line-height:1.6;font-size:10.5pt}\
h1{text-align:center;font-size:17pt;letter-spacing:.5em;margin:0 0 .8em}\
.rk-print-date{text-align:right;margin:0 0 .8em}\
.rk-print-to{margin:0 0 .8em}\
.rk-print-to .rk-print-org{font-size:12pt}\
.rk-print-from{margin:0 0 1em 50%}\
dl{display:grid;grid-template-columns:8em 1fr;margin:0;gap:0 .6em}\
dt{font-weight:normal}\
dd{margin:0;white-space:pre-wrap}\
p{margin:0;white-space:pre-wrap}\
ul{margin:0;padding-left:1.2em}\
li{white-space:pre-wrap}\
.rk-print-patient{border:1px solid #000;padding:.3em .5em;margin:0 0 .6em}\
.rk-print-field{border:1px solid #000;border-top:none;padding:.3em .5em;break-inside:avoid;page-break-inside:avoid}\
.rk-print-patient+.rk-print-field,.rk-print-letter+.rk-print-field{border-top:1px solid #000}\
.rk-print-field h2{font-size:10.5pt;font-weight:bold;margin:0 0 .2em;padding:0;background:none;border:none}\
.rk-print-letter{border:2px solid #000;padding:.4em .6em;margin:0 0 .6em}\
.rk-print-spec{font-size:8pt;margin-top:1.5em;color:#333}\
@media print{body{margin:0;max-width:none;padding:0}a{color:#000}}";

fn page_head(title: &str, css: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"ja\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!("<title>{}</title>\n", e(title)));
    out.push_str(&format!("<style>{css}</style>\n</head>\n<body>\n"));
    out
}

fn html(d: &Doc) -> String {
    let mut out = page_head(&d.title, CSS);
    out.push_str(&fragment(d));
    out.push_str("<footer>renkei (連携) — FHIR 文書の表示</footer>\n</body>\n</html>\n");
    out
}

fn doc_class(referral_type: bool) -> &'static str {
    if referral_type {
        "rk-referral"
    } else {
        "rk-discharge-summary"
    }
}

fn fragment(d: &Doc) -> String {
    let mut out = format!(
        "<article class=\"rk-document {}\" lang=\"ja\">\n<h1>{}</h1>\n",
        doc_class(d.referral_type),
        e(&d.title)
    );
    if !d.header.fields.is_empty() {
        out.push_str("<section class=\"rk-meta\"><dl>\n");
        for (k, v) in &d.header.fields {
            out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", e(k), e(v)));
        }
        out.push_str("</dl></section>\n");
    }
    let mut i = 0;
    while let Some(b) = d.blocks.get(i).filter(|b| b.class == "rk-letter") {
        block_html(&mut out, b);
        i += 1;
    }
    // 紹介先 and 紹介元 side by side.
    let parties = d.blocks[i..]
        .iter()
        .take_while(|b| b.class == "rk-to" || b.class == "rk-from")
        .count();
    if parties > 0 {
        out.push_str("<div class=\"rk-parties\">\n");
        for b in &d.blocks[i..i + parties] {
            block_html(&mut out, b);
        }
        out.push_str("</div>\n");
        i += parties;
    }
    for b in &d.blocks[i..] {
        block_html(&mut out, b);
    }
    out.push_str("</article>\n");
    out
}

fn link_html(out: &mut String, l: &Link) {
    let text = if l.text.is_empty() { &l.url } else { &l.text };
    match &l.href {
        Some(href) => out.push_str(&format!(
            "<a class=\"rk-file\" href=\"{}\">{}</a>",
            escape_html(href),
            e(text)
        )),
        None => out.push_str(&format!("<span class=\"rk-file\">{}</span>", e(text))),
    }
}

fn block_html(out: &mut String, b: &Block) {
    out.push_str(&format!(
        "<section class=\"{}\">\n<h2>{}</h2>\n",
        escape_html(&b.class),
        e(&b.heading)
    ));
    if !b.fields.is_empty() {
        out.push_str("<dl>\n");
        for (k, v) in &b.fields {
            out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", e(k), e(v)));
        }
        out.push_str("</dl>\n");
    }
    if let [only] = b.items.as_slice() {
        out.push_str(&format!("<p>{}</p>\n", e(only)));
    } else if !b.items.is_empty() {
        out.push_str("<ul>\n");
        for item in &b.items {
            out.push_str(&format!("<li>{}</li>\n", e(item)));
        }
        out.push_str("</ul>\n");
    }
    if !b.links.is_empty() {
        out.push_str("<ul class=\"rk-files\">\n");
        for l in &b.links {
            out.push_str("<li>");
            link_html(out, l);
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }
    if let Some(n) = &b.narrative {
        out.push_str(&format!("<p>{}</p>\n", e(n)));
    }
    out.push_str("</section>\n");
}

// ------------------------------------------------------------------ 別紙様式11

/// One labelled field of the printed letter.
struct PrintField {
    heading: String,
    class: &'static str,
    lines: Vec<String>,
}

struct PrintDoc {
    title: String,
    referral_type: bool,
    spec: Spec,
    date: Option<String>,
    to: Vec<(String, String)>,
    from: Vec<(String, String)>,
    patient: Vec<(String, String)>,
    letter: Option<Link>,
    fields: Vec<PrintField>,
}

fn print_model(b: &Value) -> PrintDoc {
    let ix = Index::new(b);
    let empty = Value::Null;
    let comp = composition(&ix).unwrap_or(&empty);
    let spec = spec::detect(b, comp).spec;
    let referral_type = spec.is_referral_type();
    let secs = read::sections(comp);
    let doc_date = str_at(comp, "date");

    // 紹介先医療機関等名, 担当医 … 殿
    let mut to = Vec::new();
    let (org, doctor, narrative) = party("910", comp, &secs, &ix);
    if let Some(o) = org {
        to.push((
            "紹介先医療機関".to_string(),
            str_at(o, "name").unwrap_or_default().to_string(),
        ));
        let dept = read::department(o).unwrap_or_default();
        let doc = doctor.and_then(|d| read::person_names(d).0);
        let line = match doc {
            Some(n) => format!("{dept}　{n} 先生 御侍史").trim().to_string(),
            None => format!("{dept}　担当医 殿").trim().to_string(),
        };
        to.push(("担当医".to_string(), line));
    } else if let Some(n) = narrative {
        to.push(("紹介先".to_string(), n));
    }

    // 紹介元医療機関の所在地及び名称, 電話番号, 医師氏名
    let mut from = Vec::new();
    let (org, doctor, _) = party("920", comp, &secs, &ix);
    if let Some(o) = org {
        let mut name = str_at(o, "name").unwrap_or_default().to_string();
        if let Some(d) = read::department(o) {
            name = format!("{name}　{d}");
        }
        if let Some(a) = address(o) {
            from.push(("所在地".to_string(), a));
        }
        from.push(("名称".to_string(), name));
        if let Some(p) = phone(o) {
            from.push(("電話番号".to_string(), p));
        }
    }
    if let Some(n) = doctor.and_then(|d| read::person_names(d).0) {
        from.push(("医師氏名".to_string(), n));
    }

    // 患者
    let mut patient = Vec::new();
    if let Some(p) = comp.get("subject").and_then(|s| ix.resolve_ref(s)) {
        let (name, kana) = read::person_names(p);
        if let Some(n) = name {
            patient.push(("患者氏名".to_string(), n));
        }
        if let Some(k) = kana {
            patient.push(("フリガナ".to_string(), k));
        }
        if let Some(g) = str_at(p, "gender") {
            patient.push(("性別".to_string(), sex(g)));
        }
        if let Some(bd) = str_at(p, "birthDate") {
            let on = doc_date.and_then(|d| super::form::parse_date(&date_part(d)));
            let age = super::form::parse_date(bd)
                .zip(on)
                .and_then(|(b, o)| wareki::age(b, o));
            let mut s = jdate(bd);
            if let Some(a) = age {
                s.push_str(&format!("（{a}歳）"));
            }
            patient.push(("生年月日".to_string(), s));
        }
        if let Some(a) = address(p) {
            patient.push(("住所".to_string(), a));
        }
        if let Some(t) = phone(p) {
            patient.push(("電話番号".to_string(), t));
        }
    }

    let lines_of = |codes: &[&str], label: bool| -> Vec<String> {
        let mut out = Vec::new();
        for code in codes {
            for s in secs.iter().filter(|s| s.code == Some(*code)) {
                let mut blk = Block::new("", "");
                fill(&mut blk, s, &ix);
                let lines = blk.lines();
                if lines.is_empty() {
                    continue;
                }
                if label {
                    let heading = codes::section(code).map_or(*code, |d| d.heading);
                    out.push(format!("【{heading}】"));
                }
                out.extend(lines);
            }
        }
        out
    };
    let field = |heading: &str, class: &'static str, lines: Vec<String>| PrintField {
        heading: heading.to_string(),
        class,
        lines,
    };
    let mut fields = Vec::new();
    if referral_type {
        fields.push(field(
            "傷病名",
            "rk-print-diagnoses",
            lines_of(&["340"], false),
        ));
        fields.push(field(
            "紹介目的",
            "rk-print-purpose",
            lines_of(&["950"], false),
        ));
        fields.push(field(
            "既往歴及び家族歴",
            "rk-print-history",
            lines_of(&["370", "550", "510", "520", "640", "530"], true),
        ));
        fields.push(field(
            "症状経過及び検査結果",
            "rk-print-course",
            lines_of(&["360", "610", "620"], true),
        ));
        fields.push(field(
            "治療経過",
            "rk-print-treatment",
            lines_of(&["330", "720", "730", "740"], true),
        ));
        fields.push(field(
            "現在の処方",
            "rk-print-medication",
            lines_of(&["430"], false),
        ));
        fields.push(field(
            "備考",
            "rk-print-remarks",
            lines_of(&["420", "810", "410", "830", "220", "210"], true),
        ));
    } else {
        let mut dx = lines_of(&["344"], false);
        let admitted = lines_of(&["342"], false);
        if !admitted.is_empty() {
            dx.push(format!("（入院時診断）{}", admitted.join("、")));
        }
        fields.push(field("傷病名", "rk-print-diagnoses", dx));
        let mut period = Vec::new();
        if let Some(p) = arr(comp, "event").first().and_then(|e| e.get("period")) {
            let j = |k: &str| str_at(p, k).map(jdate);
            if let (Some(a), Some(b)) = (j("start"), j("end")) {
                period.push(format!("{a} 〜 {b}"));
            }
        }
        fields.push(field("入院期間", "rk-print-admission", period));
        fields.push(field(
            "入院理由",
            "rk-print-purpose",
            lines_of(&["312", "352"], true),
        ));
        fields.push(field(
            "既往歴及び家族歴",
            "rk-print-history",
            lines_of(
                &["370", "372", "550", "552", "510", "640", "642", "530"],
                true,
            ),
        ));
        fields.push(field(
            "症状経過及び検査結果",
            "rk-print-course",
            lines_of(&["360", "362", "612", "623", "614"], true),
        ));
        fields.push(field(
            "治療経過",
            "rk-print-treatment",
            lines_of(&["333", "713"], true),
        ));
        fields.push(field(
            "現在の処方（退院時処方）",
            "rk-print-medication",
            lines_of(&["444"], false),
        ));
        fields.push(field(
            "備考",
            "rk-print-remarks",
            lines_of(&["424", "810", "410", "830", "220", "210"], true),
        ));
    }

    PrintDoc {
        title: title_of(comp, referral_type),
        referral_type,
        spec,
        date: doc_date.map(jdate),
        to,
        from,
        patient,
        letter: letter_link(comp, &secs, &ix),
        fields,
    }
}

fn dl(out: &mut String, pairs: &[(String, String)]) {
    out.push_str("<dl>\n");
    for (k, v) in pairs {
        out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", e(k), e(v)));
    }
    out.push_str("</dl>\n");
}

fn print_body(p: &PrintDoc) -> String {
    let mut out = format!(
        "<article class=\"rk-print {}\" lang=\"ja\">\n<h1>{}</h1>\n",
        doc_class(p.referral_type),
        e(&p.title)
    );
    out.push_str("<section class=\"rk-print-to\">\n");
    if let Some((_, org)) = p.to.first() {
        out.push_str(&format!("<p class=\"rk-print-org\">{}</p>\n", e(org)));
    }
    for (_, v) in p.to.iter().skip(1) {
        out.push_str(&format!("<p>{}</p>\n", e(v)));
    }
    out.push_str("</section>\n");
    if let Some(d) = &p.date {
        out.push_str(&format!("<p class=\"rk-print-date\">{}</p>\n", e(d)));
    }
    out.push_str("<section class=\"rk-print-from\">\n");
    dl(&mut out, &p.from);
    out.push_str("</section>\n<section class=\"rk-print-patient\">\n");
    dl(&mut out, &p.patient);
    out.push_str("</section>\n");
    if let Some(l) = &p.letter {
        out.push_str("<section class=\"rk-print-letter\">\n<h2>紹介状（PDF）</h2>\n<p>本文は添付の PDF です。PDF をそのまま印刷してください：");
        link_html(&mut out, l);
        out.push_str("</p>\n</section>\n");
    }
    for f in &p.fields {
        out.push_str(&format!(
            "<section class=\"rk-print-field {}\">\n<h2>{}</h2>\n",
            f.class,
            e(&f.heading)
        ));
        if f.lines.is_empty() {
            out.push_str("<p>記載なし</p>\n");
        } else {
            for l in &f.lines {
                out.push_str(&format!("<p>{}</p>\n", e(l)));
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str(&format!(
        "<p class=\"rk-print-spec\">{}</p>\n</article>\n",
        e(p.spec.name())
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anything_renders_without_panicking() {
        for v in [
            json!(null),
            json!([]),
            json!({ "entry": 3 }),
            json!({ "entry": [{ "resource": { "resourceType": "Composition", "section": [{ "section": [{}] }] } }] }),
        ] {
            assert!(render(&v, Format::Text).contains("【患者】"));
            assert!(render(&v, Format::Html).contains("<h2>患者</h2>"));
            assert!(html_fragment(&v).starts_with("<article class=\"rk-document"));
            assert!(print_html(&v).contains("<h2>傷病名</h2>"));
            assert!(print_fragment(&v).contains("rk-print-remarks"));
        }
    }

    #[test]
    fn controls_and_bidi_overrides_are_neutralised() {
        assert_eq!(
            clean("a\u{1b}[2Jb\u{202e}c\nd\te"),
            "a\u{fffd}[2Jb\u{fffd}c\nd\te"
        );
    }

    #[test]
    fn only_package_members_become_links() {
        assert_eq!(
            member_href("attachments/紹介状 1.pdf").as_deref(),
            Some("attachments/%E7%B4%B9%E4%BB%8B%E7%8A%B6%201.pdf")
        );
        assert_eq!(
            member_href("attachments/a%20b.pdf").as_deref(),
            Some("attachments/a%20b.pdf")
        );
        for bad in [
            "javascript:alert(1)",
            "attachments/../x.pdf",
            "attachments/%2e%2e%2fx",
            "file:///etc/passwd",
            "attachments/",
            "attachments/a\"b.pdf",
            "https://evil.example/x.pdf",
        ] {
            let h = member_href(bad);
            assert!(
                h.as_deref()
                    .is_none_or(|h| h.starts_with("attachments/") && !h.contains('"')),
                "{bad}: {h:?}"
            );
        }
        assert_eq!(member_href("attachments/../x.pdf"), None);
        assert_eq!(member_href("javascript:alert(1)"), None);
    }
}
