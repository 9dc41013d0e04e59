//! What every page shows around its content, and the words and dates a
//! liaison office reads: 西暦 with 和暦 beside it, Japan time, kinds and
//! rejection reasons in plain Japanese.

use time::{OffsetDateTime, UtcOffset};

use super::auth::Authed;
use super::Desk;
use crate::document::wareki;
use crate::package::PackageKind;

/// Japan Standard Time.
pub(crate) fn jst() -> UtcOffset {
    UtcOffset::from_hms(9, 0, 0).expect("valid offset")
}

/// An RFC 3339 time as `2026年12月1日（令和8年12月1日） 15:10` (JST);
/// the input itself if it is not a time.
pub(crate) fn when(rfc3339: &str) -> String {
    match OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(jst());
            format!(
                "{} {:02}:{:02}",
                wareki::japanese(t.date()),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// A date (`YYYY-MM-DD` or a FHIR date/dateTime) in 西暦 with 和暦.
pub(crate) fn date(s: &str) -> String {
    wareki::japanese_date(s).unwrap_or_else(|| s.to_string())
}

/// Days since an RFC 3339 time (0 if unreadable or in the future).
pub(crate) fn days_since(rfc3339: &str) -> i64 {
    OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| (OffsetDateTime::now_utc() - t).whole_days().max(0))
        .unwrap_or(0)
}

/// The kind of a package, short, for lists (紹介, 返書, ...).
pub(crate) fn kind_ja(kind: &str) -> &'static str {
    match kind.parse::<PackageKind>() {
        Ok(k) => crate::client::threads::kind_label(k),
        Err(_) => "その他",
    }
}

/// A rejection reason code in plain words.
pub(crate) fn reason_ja(code: &str) -> String {
    let text = match code {
        "damaged" => "途中で壊れたか改ざんされたため、開けませんでした。送信元に再送を依頼してください。",
        "not-encrypted-for-recipient" => "この施設あてに暗号化されていませんでした。",
        "not-addressed-to-recipient" => "署名された宛先にこの施設が含まれていません（転送された可能性があります）。使用せず、送信元に連絡してください。",
        "unexpected-recipients" => "署名された宛先以外にも読める人がいるように暗号化されていました。使用せず、送信元に連絡してください。",
        "malformed" => "パッケージの形式が正しくありません。",
        "sender-revoked" => "送信元の証明書が失効しています。",
        "sender-expired" => "送信元の証明書の有効期限が切れています。",
        "sender-unknown-ca" => "この地域の認証局が発行していない証明書で署名されています。",
        "sender-certificate" => "送信元の証明書を確認できませんでした。",
        "bad-signature" => "送信元の署名を確認できませんでした（改ざんまたは偽造の疑い）。",
        "member-mismatch" => "添付ファイルが署名された内容と一致しません。",
        "missing-member" => "署名された添付ファイルが欠けています。",
        "extra-member" => "署名されていないファイルが含まれていました。",
        "replayed-package" => "同じ文書をすでに受信しています（再送・複製の疑い）。",
        "sender-mismatch" => "中継サーバーに送った施設と、文書に署名した施設が異なります。第三者による再送の疑いがあるため使用しません。",
        c if c.starts_with("document-") => "文書（診療情報提供書など）の内容が規格に合っていません。送信元に確認してください。",
        _ => "確認できなかったため、受け取りを拒否しました。",
    };
    format!("{text}（理由コード: {code}）")
}

/// A problem the document library found in a form (written for the CLI,
/// in English), in Japanese for the desk. The form's own name for the
/// field decides the wording where the message is about a missing field.
pub(crate) fn form_error_ja(field: &str, message: &str) -> String {
    let m = message;
    let text = if m.contains("is not a date") {
        "日付は西暦で入力してください（例: 1956-04-01）"
    } else if m.contains("write the family name first") {
        "姓と名の両方を入力してください"
    } else if m.starts_with("write the purpose") {
        "紹介目的を入力してください"
    } else if m.starts_with("write the present illness") {
        "現病歴を入力してください"
    } else if m.starts_with("give at least one diagnosis (傷病名)") {
        "傷病名か主訴を入力してください（傷病名は1行に1つ）"
    } else if m.starts_with("name the doctor") {
        "医師名（姓・名）を入力してください"
    } else if m.contains("is the writing facility itself") {
        "宛先に自施設は選べません"
    } else if m.starts_with("add a [to] table") {
        "宛先を選んでください"
    } else if m.starts_with("a reply (返書) answers a package") {
        "返書は、受信箱で紹介状を開いて「返書を作成」から作成してください"
    } else if m.contains("needs the chief complaint") {
        "退院時サマリーには主訴が必要です"
    } else if m.contains("needs the diagnoses on admission") {
        "入院時診断を1つ以上入力してください"
    } else if m.starts_with("add a [discharge] table") {
        "入院日・退院日・入院理由・入院中の経過・退院時診断・退院後の方針を入力してください"
    } else if m.contains("is before the admission") {
        "退院日が入院日より前になっています"
    } else if m.contains("diagnosis on discharge") {
        "退院時診断を1つ以上入力してください"
    } else if m.contains("is not part of a discharge summary") {
        "この欄は退院時サマリーでは使いません。空欄にしてください"
    } else if m.contains("is listed twice") {
        "同じファイルが2回選ばれています"
    } else if m.contains("control characters") || m.contains("must be one line") {
        "改行や使えない文字が含まれています"
    } else if m.contains("is longer than") {
        "長すぎます。長い内容は添付ファイルにしてください"
    } else if m.starts_with("is empty") {
        "空欄です。入力するか、欄ごと空けてください"
    } else if m.contains("is not a package ID") {
        "回答する文書の指定が正しくありません。受信箱から作り直してください"
    } else if m.contains("characters without '^'") {
        "文書番号は32文字以内（^ は使えません）です"
    } else {
        return format!("{m}（{field}）");
    };
    text.to_string()
}

/// A problem document validation found (sections, facilities,
/// attachments), in Japanese, with its reason code.
pub(crate) fn issue_ja(i: &crate::document::Issue) -> String {
    use crate::document::IssueCode as C;
    let section = i
        .section
        .as_deref()
        .map(crate::document::codes::label)
        .unwrap_or_default();
    let text = match i.code {
        C::MissingSection => format!("「{section}」が必要です"),
        C::EmptySection => format!("「{section}」が空です"),
        C::WrongSender => "紹介元がこの施設になっていません".into(),
        C::WrongRecipient => "紹介先が選んだ宛先と一致しません".into(),
        C::WrongKind => "文書の種類が一致しません".into(),
        C::WrongInReplyTo => "回答する文書が一致しません".into(),
        C::Attachment => "添付ファイルと文書の記載が一致しません".into(),
        C::Letter => {
            "紹介状のPDFを確認してください（PDFファイルで、名前が .pdf で終わること）".into()
        }
        C::Patient => "患者の情報を確認してください".into(),
        _ => "文書の形式に問題があります".into(),
    };
    format!("{text}（{}）", i.code.as_str())
}

/// One tab of the navigation.
pub(crate) struct Tab {
    pub href: &'static str,
    pub label: &'static str,
    pub active: bool,
    pub badge: u64,
}

/// Everything around a page's content.
pub(crate) struct Chrome {
    /// The page's own title (without the badge).
    pub title: String,
    /// The facility's name.
    pub facility: String,
    /// Its ID and kind, for the header.
    pub facility_id: String,
    /// Unread arrivals (the tab title's badge).
    pub unread: u64,
    /// The navigation.
    pub tabs: Vec<Tab>,
    /// The session's CSRF token for the page's forms.
    pub csrf: String,
    /// One line on the last sync with the relay.
    pub sync_line: String,
    /// Whether the last sync failed (the line is shown as a warning).
    pub sync_problem: bool,
    /// A message carried over from the last action (`?m=`).
    pub flash: Option<String>,
    /// Still-valid certificates for this facility's ID that it did not
    /// publish (the red banner on every page).
    pub directory_alerts: Vec<AlertLine>,
}

/// One certificate of the red banner, as the page shows it (the
/// publication time in 西暦 with 和暦 beside it, Japan time).
pub(crate) struct AlertLine {
    pub serial: String,
    pub fingerprint: String,
    pub name: String,
    pub issuer: String,
    pub published: String,
    pub log_index: u64,
}

impl AlertLine {
    fn of(a: &crate::client::monitor::DirectoryAlert) -> AlertLine {
        AlertLine {
            serial: a.serial.clone(),
            fingerprint: a.fingerprint.clone(),
            name: a.name.clone(),
            issuer: a.issuer.clone(),
            published: when(&a.published_at),
            log_index: a.log_index,
        }
    }
}

impl Chrome {
    /// The chrome of a page whose tab is `active`.
    pub(crate) async fn new(desk: &Desk, authed: &Authed, active: &str, title: &str) -> Chrome {
        let unread = match &desk.store {
            Some(s) => s.unread_count().await.unwrap_or(0),
            None => 0,
        };
        let all: &[(&str, &str)] = if desk.is_auditor() {
            &[("/audit", "監査"), ("/settings", "設定")]
        } else {
            &[
                ("/", "受信箱"),
                ("/threads", "紹介の経過"),
                ("/compose", "作成"),
                ("/sent", "送信状況"),
                ("/stats", "統計"),
                ("/settings", "設定"),
            ]
        };
        let tabs = all
            .iter()
            .map(|(href, label)| Tab {
                href,
                label,
                active: *href == active,
                badge: if *href == "/" { unread } else { 0 },
            })
            .collect();
        let (sync_line, sync_problem, directory_alerts) = {
            let s = desk.sync.read().expect("lock");
            let (line, problem) = s.line();
            let alerts = s.directory_alerts.iter().map(AlertLine::of).collect();
            (line, problem, alerts)
        };
        Chrome {
            title: title.to_string(),
            facility: desk.me.name.clone(),
            facility_id: desk.me.id.to_string(),
            unread,
            tabs,
            csrf: authed.csrf.clone(),
            sync_line,
            sync_problem,
            flash: None,
            directory_alerts,
        }
    }

    /// With a message from the last action.
    pub(crate) fn flash(mut self, m: Option<String>) -> Chrome {
        self.flash = m.filter(|m| !m.is_empty());
        self
    }

    /// The document title: `(3) 受信箱 | さくら内科クリニック`.
    pub(crate) fn head_title(&self) -> String {
        if self.unread > 0 {
            format!("({}) {} | {}", self.unread, self.title, self.facility)
        } else {
            format!("{} | {}", self.title, self.facility)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_japan_time_with_the_era() {
        assert_eq!(
            when("2026-11-30T15:10:00Z"),
            "2026年12月1日（令和8年12月1日） 00:10"
        );
        assert_eq!(date("1954-03-18"), "1954年3月18日（昭和29年3月18日）");
        assert_eq!(when("not a time"), "not a time");
    }

    #[test]
    fn what_a_blank_form_lacks_is_said_in_japanese() {
        use crate::document::{DocKind, Form};
        let blank: Form = serde_json::from_value(serde_json::json!({
            "patient": {"name": "山田", "kana": "", "birth_date": "1954/3/18", "sex": "unknown"},
            "from": {"facility_id": "1311234569", "name": "さくら内科クリニック"},
            "to": {"facility_id": "1311234569", "name": "さくら内科クリニック"},
            "purpose": " ",
        }))
        .unwrap();
        for kind in DocKind::ALL {
            let errors = blank.check(kind, None).unwrap_err().0;
            assert!(!errors.is_empty());
            for e in errors {
                let ja = form_error_ja(&e.field, &e.message);
                assert!(
                    !ja.chars().any(|c| c.is_ascii_alphabetic()),
                    "{kind}: {} — {} → {ja}",
                    e.field,
                    e.message
                );
            }
        }
    }

    #[test]
    fn every_reason_is_explained_with_its_code() {
        assert!(reason_ja("sender-mismatch").contains("第三者"));
        assert!(reason_ja("document-missing-section")
            .ends_with("（理由コード: document-missing-section）"));
        assert!(reason_ja("something-new").contains("something-new"));
    }
}
