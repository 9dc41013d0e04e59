//! Rendering a document for the liaison office: Japanese plain text, or a
//! printable HTML page that is self-contained (inline CSS, no scripts, no
//! external assets, a Content-Security-Policy that forbids loading
//! anything) with every value escaped.
//!
//! Rendering reads the Bundle generically, so documents written by other
//! systems render too; it never fails and never trusts the input (the
//! narrative XHTML of a section is reduced to text, never copied).

use serde_json::Value;

use super::codes;
pub use super::read::escape_html;
use super::read::{self, arr, str_at, Index, Section};
use super::DocKind;

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
/// Sections shown even when absent in a 退院時サマリー.
const ALWAYS_DISCHARGE: &[&str] = &[
    "312", "342", "352", "360", "370", "510", "333", "344", "444", "424", "623", "220",
];

/// Render a document in Japanese.
pub fn render(bundle: &Value, format: Format) -> String {
    let doc = model(bundle);
    match format {
        Format::Text => text(&doc),
        Format::Html => html(&doc),
    }
}

/// One block of the rendered document.
struct Block {
    heading: String,
    /// Label/value pairs (facilities, patient, document data).
    fields: Vec<(String, String)>,
    /// Items (entries), each possibly several lines.
    items: Vec<String>,
    /// Narrative, when there are no entries.
    narrative: Option<String>,
}

impl Block {
    fn new(heading: impl Into<String>) -> Block {
        Block {
            heading: heading.into(),
            fields: Vec::new(),
            items: Vec::new(),
            narrative: None,
        }
    }

    fn field(&mut self, label: &str, value: Option<String>) {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            self.fields.push((label.to_string(), v));
        }
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.items.is_empty() && self.narrative.is_none()
    }
}

struct Doc {
    title: String,
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

fn model(b: &Value) -> Doc {
    let ix = Index::new(b);
    let comp = ix
        .entries
        .first()
        .map(|(_, r)| *r)
        .filter(|r| str_at(r, "resourceType") == Some("Composition"));
    let empty = Value::Null;
    let comp = comp.unwrap_or(&empty);
    let type_code = comp
        .get("type")
        .map(|t| arr(t, "coding"))
        .unwrap_or_default()
        .iter()
        .find_map(|c| str_at(c, "code"));
    let referral_type = type_code != Some(codes::TYPE_DISCHARGE_SUMMARY);
    let kind = comp
        .get("meta")
        .map(|m| arr(m, "tag"))
        .unwrap_or_default()
        .iter()
        .filter(|t| str_at(t, "system") == Some(codes::KIND_TAG_SYSTEM))
        .find_map(|t| str_at(t, "code").and_then(DocKind::from_tag));

    let base = str_at(comp, "title")
        .map(str::to_string)
        .unwrap_or_else(|| {
            if referral_type {
                codes::TITLE_REFERRAL.into()
            } else {
                codes::TITLE_DISCHARGE_SUMMARY.into()
            }
        });
    let title = match kind {
        Some(k @ (DocKind::Reply | DocKind::ReverseReferral | DocKind::Transfer)) => {
            format!("{base}（{}）", k.japanese())
        }
        _ => base,
    };

    // header
    let mut header = Block::new("文書情報");
    header.field("作成日", str_at(comp, "date").map(date_part));
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
    if !referral_type {
        if let Some(p) = arr(comp, "event").first().and_then(|e| e.get("period")) {
            header.field("入院日", str_at(p, "start").map(str::to_string));
            header.field("退院日", str_at(p, "end").map(str::to_string));
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
    let find = |code: &str| secs.iter().find(|s| s.code == Some(code));
    let mut blocks = Vec::new();

    // 紹介先 / 紹介元
    let custodian = comp.get("custodian").and_then(|c| ix.resolve_ref(c));
    for (code, heading) in [("910", "紹介先"), ("920", "紹介元")] {
        let mut blk = Block::new(heading);
        let mut org = None;
        let mut doctor = None;
        if let Some(s) = find(code) {
            for e in s.entries() {
                match ix.resolve_ref(e) {
                    Some(r) if str_at(r, "resourceType") == Some("Organization") => org = Some(r),
                    Some(r) if str_at(r, "resourceType") == Some("Practitioner") => {
                        doctor = Some(r)
                    }
                    _ => {}
                }
            }
            if org.is_none() {
                blk.narrative = s.text();
            }
        } else if code == "920" {
            org = custodian;
            doctor = arr(comp, "author")
                .iter()
                .filter_map(|a| ix.resolve_ref(a))
                .find(|r| str_at(r, "resourceType") == Some("Practitioner"));
        }
        if let Some(o) = org {
            blk.field("医療機関", str_at(o, "name").map(str::to_string));
            blk.field("医療機関コード", read::facility_code(o).map(str::to_string));
            blk.field("診療科", read::department(o));
        }
        if let Some(d) = doctor {
            let (name, kana) = read::person_names(d);
            blk.field(
                "医師",
                name.map(|n| match kana {
                    Some(k) => format!("{n}（{k}）"),
                    None => n,
                }),
            );
        }
        if let Some(o) = org {
            blk.field(
                "所在地",
                arr(o, "address").first().and_then(|a| {
                    let text = str_at(a, "text")?;
                    Some(match str_at(a, "postalCode") {
                        Some(z) => format!("〒{z} {text}"),
                        None => text.to_string(),
                    })
                }),
            );
            blk.field(
                "電話",
                arr(o, "telecom")
                    .iter()
                    .find(|t| str_at(t, "system") == Some("phone"))
                    .and_then(|t| str_at(t, "value"))
                    .map(str::to_string),
            );
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
    let mut pb = Block::new("患者");
    if let Some(p) = comp.get("subject").and_then(|s| ix.resolve_ref(s)) {
        let (name, kana) = read::person_names(p);
        pb.field("氏名", name);
        pb.field("フリガナ", kana);
        pb.field("生年月日", str_at(p, "birthDate").map(str::to_string));
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

    // clinical sections, in table order
    let always = if referral_type {
        ALWAYS_REFERRAL
    } else {
        ALWAYS_DISCHARGE
    };
    for def in codes::SECTIONS {
        if matches!(def.code, "910" | "920" | "300") {
            continue;
        }
        let present: Vec<&Section<'_>> = secs.iter().filter(|s| s.code == Some(def.code)).collect();
        if present.is_empty() && !always.contains(&def.code) {
            continue;
        }
        let mut blk = Block::new(def.heading);
        for s in &present {
            fill(&mut blk, s, &ix);
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
        let mut blk = Block::new(s.title.map_or_else(|| s.label(), str::to_string));
        fill(&mut blk, s, &ix);
        if !blk.is_empty() {
            blocks.push(blk);
        }
    }

    Doc {
        title,
        header,
        blocks,
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
    let items: Vec<String> = if encounters_only && s.text().is_some() {
        Vec::new()
    } else {
        s.entries()
            .iter()
            .zip(&resolved)
            .filter_map(|(e, r)| {
                r.map(read::describe)
                    .or_else(|| str_at(e, "display").map(str::to_string))
            })
            .map(|d| match &prefix {
                Some(p) => d.strip_prefix(p.as_str()).map_or(d.clone(), str::to_string),
                None => d,
            })
            .filter(|d| !d.trim().is_empty())
            .collect()
    };
    if items.is_empty() {
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
        if let [only] = b.items.as_slice() {
            for line in clean(only).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        } else {
            for item in &b.items {
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
.meta{font-size:10pt;margin-bottom:1em}\
.parties{display:grid;grid-template-columns:1fr 1fr;gap:0 1.5em}\
footer{margin-top:2em;font-size:8pt;color:#555;border-top:1px solid #999}\
@media print{body{margin:0;max-width:none;padding:0}h2{background:none}footer{color:#000}}";

fn html(d: &Doc) -> String {
    let e = |s: &str| escape_html(&clean(s));
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"ja\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!("<title>{}</title>\n", e(&d.title)));
    out.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n"));
    out.push_str(&format!("<h1>{}</h1>\n", e(&d.title)));
    if !d.header.fields.is_empty() {
        out.push_str("<section class=\"meta\"><dl>\n");
        for (k, v) in &d.header.fields {
            out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", e(k), e(v)));
        }
        out.push_str("</dl></section>\n");
    }
    let mut i = 0;
    // 紹介先 and 紹介元 side by side.
    let parties = d
        .blocks
        .iter()
        .take_while(|b| b.heading == "紹介先" || b.heading == "紹介元")
        .count();
    if parties > 0 {
        out.push_str("<div class=\"parties\">\n");
        for b in &d.blocks[..parties] {
            block_html(&mut out, b);
        }
        out.push_str("</div>\n");
        i = parties;
    }
    for b in &d.blocks[i..] {
        block_html(&mut out, b);
    }
    out.push_str("<footer>renkei (連携) — JP-CLINS FHIR 文書の表示</footer>\n</body>\n</html>\n");
    out
}

fn block_html(out: &mut String, b: &Block) {
    let e = |s: &str| escape_html(&clean(s));
    out.push_str(&format!("<section>\n<h2>{}</h2>\n", e(&b.heading)));
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
    if let Some(n) = &b.narrative {
        out.push_str(&format!("<p>{}</p>\n", e(n)));
    }
    out.push_str("</section>\n");
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
        }
    }

    #[test]
    fn controls_and_bidi_overrides_are_neutralised() {
        assert_eq!(
            clean("a\u{1b}[2Jb\u{202e}c\nd\te"),
            "a\u{fffd}[2Jb\u{fffd}c\nd\te"
        );
    }
}
