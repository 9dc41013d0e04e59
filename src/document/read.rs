//! Reading a Bundle: the lookups [`super::validate()`] and
//! [`super::render()`] share. Nothing here trusts the input: every accessor
//! returns `None` for a missing or mistyped element.

use std::collections::HashMap;

use serde_json::Value;

use super::codes;

/// Escape text for HTML and XHTML (element content and quoted attributes).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The text of an XHTML narrative (`text.div`): tags dropped, block ends
/// and `<br>` as line breaks, character references decoded, blank lines
/// removed. The result is plain text, to be escaped again for HTML.
pub fn xhtml_to_text(div: &str) -> String {
    let mut out = String::new();
    let mut rest = div;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            let (inner, end) = match rest.find('>') {
                Some(p) => (&rest[1..p], p + 1),
                None => (&rest[1..], rest.len()),
            };
            let tag = inner
                .trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if matches!(
                tag.as_str(),
                "br" | "p"
                    | "div"
                    | "li"
                    | "tr"
                    | "h1"
                    | "h2"
                    | "h3"
                    | "h4"
                    | "h5"
                    | "h6"
                    | "table"
            ) {
                out.push('\n');
            } else if matches!(tag.as_str(), "td" | "th") {
                out.push(' ');
            }
            rest = &rest[end..];
        } else {
            let end = rest.bytes().take(12).position(|b| b == b';');
            match end.and_then(|e| decode_entity(&rest[1..e]).map(|c| (e, c))) {
                Some((e, c)) => {
                    out.push(c);
                    rest = &rest[e + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let n = if let Some(h) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(h, 16).ok()?
            } else {
                name.strip_prefix('#')?.parse().ok()?
            };
            char::from_u32(n).filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        }
    }
}

/// A string element.
pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// An array element (empty when absent or not an array).
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The words of a CodeableConcept: its text, else the display or code of
/// its first coding.
pub fn concept_text(cc: &Value) -> Option<String> {
    if let Some(t) = str_at(cc, "text").filter(|t| !t.trim().is_empty()) {
        return Some(t.to_string());
    }
    arr(cc, "coding").iter().find_map(|c| {
        str_at(c, "display")
            .or_else(|| str_at(c, "code"))
            .map(str::to_string)
    })
}

/// The entries of a Bundle, indexed for reference resolution.
pub struct Index<'a> {
    /// (fullUrl, resource) in Bundle order.
    pub entries: Vec<(Option<&'a str>, &'a Value)>,
    by_url: HashMap<&'a str, usize>,
    by_type_id: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> Index<'a> {
    /// Index a Bundle's entries (those with a resource object).
    pub fn new(bundle: &'a Value) -> Index<'a> {
        let mut entries = Vec::new();
        let mut by_url = HashMap::new();
        let mut by_type_id = HashMap::new();
        for e in arr(bundle, "entry") {
            let Some(r) = e.get("resource").filter(|r| r.is_object()) else {
                continue;
            };
            let url = str_at(e, "fullUrl");
            let i = entries.len();
            if let Some(u) = url {
                by_url.entry(u).or_insert(i);
            }
            if let (Some(t), Some(id)) = (str_at(r, "resourceType"), str_at(r, "id")) {
                by_type_id.entry((t, id)).or_insert(i);
            }
            entries.push((url, r));
        }
        Index {
            entries,
            by_url,
            by_type_id,
        }
    }

    /// Resolve a reference made from inside the Bundle: a fullUrl
    /// (`urn:uuid:...` or absolute), or a relative `Type/id` (matched on
    /// the resource's type and id, or on a fullUrl ending in `/Type/id`).
    pub fn resolve(&self, reference: &str) -> Option<&'a Value> {
        if let Some(&i) = self.by_url.get(reference) {
            return Some(self.entries[i].1);
        }
        let mut parts = reference.split('/');
        let (Some(t), Some(id), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        if t.is_empty() || id.is_empty() || reference.contains(':') {
            return None;
        }
        if let Some(&i) = self.by_type_id.get(&(t, id)) {
            return Some(self.entries[i].1);
        }
        let suffix = format!("/{t}/{id}");
        self.entries
            .iter()
            .find(|(u, _)| u.is_some_and(|u| u.ends_with(&suffix)))
            .map(|(_, r)| *r)
    }

    /// Resolve a Reference object (`{"reference": ...}`).
    pub fn resolve_ref(&self, reference: &Value) -> Option<&'a Value> {
        self.resolve(str_at(reference, "reference")?)
    }
}

/// A section found in a Composition.
pub struct Section<'a> {
    /// The section code, when the section has a coding in one of the
    /// section code systems renkei knows ([`codes::SECTION_SYSTEMS`]).
    pub code: Option<&'a str>,
    /// That coding's system.
    pub system: Option<&'a str>,
    /// The system and code of the first coding otherwise.
    pub other_code: Option<(&'a str, &'a str)>,
    /// The section's title.
    pub title: Option<&'a str>,
    /// The code of the enclosing section (`None` at top level).
    pub parent: Option<&'a str>,
    /// Depth: 0 at top level.
    pub depth: usize,
    /// The section itself.
    pub value: &'a Value,
}

impl<'a> Section<'a> {
    /// "950 紹介目的", or the title or position for an uncoded section.
    pub fn label(&self) -> String {
        match (self.code, self.title) {
            (Some(c), _) => codes::label(c),
            (None, Some(t)) => format!("titled {t:?}"),
            (None, None) => "without code or title".to_string(),
        }
    }

    /// The section narrative as plain text.
    pub fn text(&self) -> Option<String> {
        let div = self.value.get("text").and_then(|t| str_at(t, "div"))?;
        let t = xhtml_to_text(div);
        (!t.is_empty()).then_some(t)
    }

    /// The section's entry references.
    pub fn entries(&self) -> &'a [Value] {
        arr(self.value, "entry")
    }
}

/// Every section of a Composition, depth first, in document order.
pub fn sections(composition: &Value) -> Vec<Section<'_>> {
    let mut out = Vec::new();
    walk_sections(composition, None, 0, &mut out);
    out
}

fn walk_sections<'a>(
    v: &'a Value,
    parent: Option<&'a str>,
    depth: usize,
    out: &mut Vec<Section<'a>>,
) {
    if depth > 8 {
        return;
    }
    for s in arr(v, "section") {
        let codings = s.get("code").map_or(&[][..], |c| arr(c, "coding"));
        let (system, code) = section_code(s).unzip();
        let other_code = codings
            .first()
            .and_then(|c| Some((str_at(c, "system").unwrap_or_default(), str_at(c, "code")?)));
        out.push(Section {
            code,
            system,
            other_code,
            title: str_at(s, "title"),
            parent,
            depth,
            value: s,
        });
        walk_sections(s, code, depth + 1, out);
    }
}

/// The (system, code) of a section's first coding in a section code system
/// renkei knows.
pub fn section_code(section: &Value) -> Option<(&str, &str)> {
    section
        .get("code")
        .map_or(&[][..], |c| arr(c, "coding"))
        .iter()
        .filter_map(|c| Some((str_at(c, "system")?, str_at(c, "code")?)))
        .find(|(system, _)| codes::SECTION_SYSTEMS.contains(system))
}

/// The 10-digit medical institution code of an Organization.
pub fn facility_code(org: &Value) -> Option<&str> {
    arr(org, "identifier")
        .iter()
        .find(|i| {
            str_at(i, "system").is_some_and(|s| {
                s == codes::MEDICAL_INSTITUTION_SYSTEM
                    || s.ends_with("/insurance-medical-institution-no")
            })
        })
        .and_then(|i| str_at(i, "value"))
}

/// The department (診療科) of an Organization.
pub fn department(org: &Value) -> Option<String> {
    arr(org, "extension")
        .iter()
        .find(|e| str_at(e, "url") == Some(codes::DEPARTMENT_EXTENSION))
        .and_then(|e| e.get("valueCodeableConcept"))
        .and_then(concept_text)
}

/// The text of a HumanName: `text`, else family and given names.
pub fn name_text(n: &Value) -> Option<String> {
    if let Some(t) = str_at(n, "text").filter(|t| !t.trim().is_empty()) {
        return Some(t.to_string());
    }
    let family = str_at(n, "family").unwrap_or_default();
    let given: Vec<&str> = arr(n, "given").iter().filter_map(Value::as_str).collect();
    let s = [family, &given.join(" ")]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    (!s.is_empty()).then_some(s)
}

/// The 漢字 and カナ names of a Patient or Practitioner.
pub fn person_names(p: &Value) -> (Option<String>, Option<String>) {
    let rep = |n: &Value| {
        arr(n, "extension")
            .iter()
            .find(|e| str_at(e, "url") == Some(codes::NAME_REPRESENTATION_EXTENSION))
            .and_then(|e| str_at(e, "valueCode"))
            .map(str::to_string)
    };
    let names = arr(p, "name");
    let kanji = names
        .iter()
        .find(|n| rep(n).as_deref() == Some("IDE"))
        .or_else(|| names.iter().find(|n| rep(n).is_none()))
        .or_else(|| names.first())
        .and_then(name_text);
    let kana = names
        .iter()
        .find(|n| rep(n).as_deref() == Some("SYL"))
        .and_then(name_text);
    (kanji, kana)
}

/// The attachment URLs of a DocumentReference.
pub fn attachment_urls(docref: &Value) -> Vec<(&str, Option<&str>, Option<&str>)> {
    arr(docref, "content")
        .iter()
        .filter_map(|c| c.get("attachment"))
        .filter_map(|a| {
            Some((
                str_at(a, "url")?,
                str_at(a, "title"),
                str_at(a, "contentType"),
            ))
        })
        .collect()
}

/// Largest inline text attachment shown when rendering.
const MAX_INLINE_TEXT: usize = 256 * 1024;

/// The inline (`data`) plain-text attachments of a DocumentReference,
/// decoded; binary or oversized data is skipped.
pub fn inline_texts(docref: &Value) -> Vec<String> {
    use base64::Engine as _;
    arr(docref, "content")
        .iter()
        .filter_map(|c| c.get("attachment"))
        .filter(|a| str_at(a, "contentType").is_some_and(|t| t.starts_with("text/plain")))
        .filter_map(|a| str_at(a, "data"))
        .filter(|d| d.len() <= MAX_INLINE_TEXT * 4 / 3 + 4)
        .filter_map(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .filter_map(|b| String::from_utf8(b).ok())
        .filter(|t| !t.trim().is_empty())
        .collect()
}

/// Decode `%XX` escapes of a relative URL path; `None` when malformed or
/// not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One line describing an entry, for rendering.
pub fn describe(r: &Value) -> String {
    let t = str_at(r, "resourceType").unwrap_or_default();
    let code = r.get("code").and_then(concept_text);
    let notes: Vec<&str> = arr(r, "note")
        .iter()
        .filter_map(|n| str_at(n, "text"))
        .collect();
    let with_notes = |head: Option<String>| {
        let mut parts: Vec<String> = head.into_iter().collect();
        parts.extend(notes.iter().map(|n| n.to_string()));
        parts.join("：")
    };
    match t {
        "Condition" => {
            let mut s = with_notes(code);
            if let Some(d) = str_at(r, "onsetDateTime") {
                s.push_str(&format!("（発症 {d}）"));
            }
            s
        }
        "AllergyIntolerance" => with_notes(code),
        "Observation" => {
            let value = str_at(r, "valueString")
                .map(str::to_string)
                .or_else(|| {
                    let q = r.get("valueQuantity")?;
                    let v = q.get("value")?.to_string();
                    let unit = str_at(q, "unit").or_else(|| str_at(q, "code"));
                    Some(match unit {
                        Some(u) => format!("{v} {u}"),
                        None => v,
                    })
                })
                .or_else(|| r.get("valueCodeableConcept").and_then(concept_text));
            let mut s = match (code, value) {
                (Some(c), Some(v)) => format!("{c}: {v}"),
                (Some(c), None) => c,
                (None, Some(v)) => v,
                (None, None) => String::new(),
            };
            if let Some(d) = str_at(r, "effectiveDateTime") {
                s.push_str(&format!("（{d}）"));
            }
            with_notes(Some(s).filter(|s| !s.is_empty()))
        }
        "MedicationRequest" | "MedicationStatement" => {
            let med = r
                .get("medicationCodeableConcept")
                .and_then(concept_text)
                .or_else(|| {
                    r.get("medicationReference")
                        .and_then(|m| str_at(m, "display"))
                        .map(str::to_string)
                });
            let dosage: Vec<&str> = arr(r, "dosageInstruction")
                .iter()
                .chain(arr(r, "dosage"))
                .filter_map(|d| str_at(d, "text"))
                .collect();
            let mut parts: Vec<String> = med.into_iter().collect();
            parts.extend(dosage.iter().map(|d| d.to_string()));
            parts.join("　")
        }
        "Encounter" => {
            let reasons: Vec<String> = arr(r, "reasonCode")
                .iter()
                .filter_map(concept_text)
                .collect();
            let mut s = reasons.join("、");
            if let Some(p) = r.get("period") {
                let start = str_at(p, "start").unwrap_or_default();
                let end = str_at(p, "end").unwrap_or_default();
                if !start.is_empty() || !end.is_empty() {
                    if !s.is_empty() {
                        s.push('　');
                    }
                    s.push_str(&format!("期間 {start}〜{end}"));
                }
            }
            s
        }
        "DocumentReference" => {
            let desc = str_at(r, "description").map(str::to_string);
            let files: Vec<String> = attachment_urls(r)
                .into_iter()
                .map(|(url, title, _)| match title {
                    Some(t) if Some(t) != desc.as_deref() => format!("{t} <{url}>"),
                    _ => format!("<{url}>"),
                })
                .collect();
            let inline = inline_texts(r);
            let mut parts: Vec<String> = desc.into_iter().collect();
            if !inline.is_empty() {
                // The text itself (入院中経過, 臨床経過) rather than its title.
                return inline.join("\n");
            }
            parts.extend(files);
            if parts.is_empty() {
                "文書".to_string()
            } else {
                parts.join(" ")
            }
        }
        "CarePlan" => str_at(r, "description")
            .or_else(|| str_at(r, "title"))
            .map(str::to_string)
            .unwrap_or_default(),
        "FamilyMemberHistory" => {
            let rel = r.get("relationship").and_then(concept_text);
            let conds: Vec<String> = arr(r, "condition")
                .iter()
                .filter_map(|c| c.get("code").and_then(concept_text))
                .collect();
            let mut parts: Vec<String> = rel.into_iter().collect();
            parts.extend(conds);
            with_notes(Some(parts.join(" ")).filter(|s| !s.is_empty()))
        }
        "Binary" => {
            let kind = match str_at(r, "contentType") {
                Some(t) if super::validate::is_pdf_media_type(t) => "PDF".to_string(),
                Some(t) => t.to_string(),
                None => "ファイル".to_string(),
            };
            let size = str_at(r, "data").map_or(0, |d| d.len() / 4 * 3);
            format!(
                "{kind}（文書内に埋め込み、約{} KB; renkei は表示しません）",
                size.div_ceil(1024)
            )
        }
        "Organization" => str_at(r, "name").unwrap_or_default().to_string(),
        "Practitioner" | "Patient" => person_names(r).0.unwrap_or_default(),
        _ => with_notes(code.or_else(|| {
            str_at(r, "description")
                .or_else(|| str_at(r, "title"))
                .map(str::to_string)
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape_html("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn narrative_to_text() {
        let div = "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>アレルギー: さば</p>発症:2020 &amp; &lt;b&gt; &#x3042;&#12354; &bogus; a&b<br/>次<ul><li>一</li><li>二</li></ul></div>";
        assert_eq!(
            xhtml_to_text(div),
            "アレルギー: さば\n発症:2020 & <b> ああ &bogus; a&b\n次\n一\n二"
        );
        assert_eq!(xhtml_to_text("<div>unterminated <b"), "unterminated");
        assert_eq!(xhtml_to_text("&#0;&#x110000;"), "&#0;&#x110000;");
        assert_eq!(xhtml_to_text("a<あ"), "a");
        assert_eq!(xhtml_to_text("&ああああああ;"), "&ああああああ;");
    }

    #[test]
    fn references_resolve_by_full_url_or_type_and_id() {
        let b = json!({ "entry": [
            { "fullUrl": "urn:uuid:1", "resource": { "resourceType": "Patient", "id": "p" } },
            { "fullUrl": "http://x.example/fhir/Organization/o", "resource": { "resourceType": "Organization" } },
            { "fullUrl": "urn:uuid:3" },
        ]});
        let ix = Index::new(&b);
        assert_eq!(ix.entries.len(), 2);
        assert!(ix.resolve("urn:uuid:1").is_some());
        assert!(ix.resolve("Patient/p").is_some());
        assert!(ix.resolve("Organization/o").is_some());
        assert!(ix.resolve("http://x.example/fhir/Organization/o").is_some());
        assert!(ix.resolve("urn:uuid:3").is_none());
        assert!(ix.resolve("Patient/q").is_none());
        assert!(ix.resolve("Patient").is_none());
        assert!(ix.resolve("a/b/c").is_none());
    }

    #[test]
    fn embedded_binaries_are_named_not_shown() {
        let b = json!({ "resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0xLjcK" });
        assert_eq!(
            describe(&b),
            "PDF（文書内に埋め込み、約1 KB; renkei は表示しません）"
        );
        assert_eq!(
            describe(&json!({ "resourceType": "Binary" })),
            "ファイル（文書内に埋め込み、約0 KB; renkei は表示しません）"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%E3%80%80").unwrap(), "a b\u{3000}");
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%e3").is_none());
        assert!(percent_decode("%2").is_none());
    }

    #[test]
    fn names_prefer_kanji_and_kana_representations() {
        let p = json!({ "name": [
            { "extension": [{ "url": codes::NAME_REPRESENTATION_EXTENSION, "valueCode": "SYL" }], "family": "ヤマダ", "given": ["タロウ"] },
            { "extension": [{ "url": codes::NAME_REPRESENTATION_EXTENSION, "valueCode": "IDE" }], "text": "山田 太郎" },
        ]});
        assert_eq!(
            person_names(&p),
            (Some("山田 太郎".into()), Some("ヤマダ タロウ".into()))
        );
        assert_eq!(person_names(&json!({})), (None, None));
    }
}
