//! A received `document.json`: `document::validate` (against nothing, and
//! against the demo referral's manifest) and every rendering: text, the
//! HTML page, the HTML fragment, and the 別紙様式11 print page and fragment.
//! The HTML must only hold the renderer's own markup: every tag is one the
//! template uses, no event-handler attributes, no `javascript:`, links only
//! to `attachments/`; the fragments hold no `style` attribute and no
//! `<style>`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use renkei::document::{self, render, validate::Expect, Format};
use renkei::package::Manifest;

static EXPECT: LazyLock<Expect> = LazyLock::new(|| {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/manifest/referral.json");
    let m = Manifest::parse(&std::fs::read(p).expect("seed manifest")).expect("manifest");
    Expect::from_manifest(&m)
});

/// Tags the HTML template writes.
const TAGS: &[&str] = &[
    "html", "head", "meta", "title", "style", "body", "div", "h1", "h2", "h3", "section", "dl",
    "dt", "dd", "p", "ul", "ol", "li", "footer", "header", "table", "thead", "tbody", "tr", "th",
    "td", "span", "small", "strong", "em", "br", "hr", "article", "a",
];

/// A fragment: the template's markup, and no styles at all.
fn check_fragment(html: &str) {
    check_html(html);
    assert!(!html.contains("<style"), "<style> in a fragment");
    assert!(
        !html.contains(" style=\""),
        "a style attribute in a fragment"
    );
}

fn check_html(html: &str) {
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let end = after.find('>').expect("an unclosed '<' in rendered HTML");
        let tag = &after[..end];
        rest = &after[end + 1..];
        if tag.len() >= 8 && tag[..8].eq_ignore_ascii_case("!doctype") {
            continue;
        }
        let body = tag.strip_prefix('/').unwrap_or(tag);
        let name_end = body
            .find(|c: char| c.is_ascii_whitespace() || c == '/')
            .unwrap_or(body.len());
        let name = body[..name_end].to_ascii_lowercase();
        assert!(
            TAGS.contains(&name.as_str()),
            "rendered HTML holds a tag the template does not write: <{tag}>"
        );
        // Attributes: name[="value"], values double-quoted.
        let mut a = body[name_end..].trim_start_matches('/');
        loop {
            a = a.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
            if a.is_empty() {
                break;
            }
            let n_end = a
                .find(|c: char| c.is_ascii_whitespace() || c == '=')
                .unwrap_or(a.len());
            let attr = a[..n_end].to_ascii_lowercase();
            assert!(
                !attr.starts_with("on") && !attr.is_empty(),
                "rendered HTML holds attribute {attr:?} in <{tag}>"
            );
            let is_href = attr == "href";
            a = &a[n_end..];
            if let Some(v) = a.strip_prefix('=') {
                let v = v
                    .strip_prefix('"')
                    .expect("attribute values are double-quoted");
                let v_end = v.find('"').expect("closed attribute value");
                assert!(
                    !v[..v_end]
                        .trim()
                        .to_ascii_lowercase()
                        .starts_with("javascript:"),
                    "javascript: URL in <{tag}>"
                );
                assert!(
                    !is_href || v[..v_end].starts_with("attachments/"),
                    "a link outside the package in <{tag}>"
                );
                a = &v[v_end + 1..];
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = document::validate::parse(data) else {
        return;
    };
    let _ = document::validate_value(&v, &Expect::default());
    let _ = document::validate_value(&v, &EXPECT);
    let _ = document::render(&v, Format::Text);
    check_html(&document::render(&v, Format::Html));
    check_html(&render::print_html(&v));
    check_fragment(&render::html_fragment(&v));
    check_fragment(&render::print_fragment(&v));
});
