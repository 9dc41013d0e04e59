//! The desk's screens but composing and statistics: 受信箱 (inbox and one
//! package), 紹介の経過 (threads), 送信状況 (sent and the outbox), 印刷,
//! 監査 (auditor), 設定, and the pages for errors and locked sessions.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use askama::Template;
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

use super::auth::Authed;
use super::view::{self, Chrome};
use super::{Desk, DeskState};
use crate::client::outbox::OutboxState;
use crate::client::status::expiry_fetch;
use crate::client::store::Arrival;
use crate::client::threads::{Receipts, StepState, Thread, ThreadStatus};
use crate::package::{self, Manifest, PackageKind};
use crate::pki::CertInfo;

/// A page that could not be shown: its status and a message for the
/// person at the desk (never key material).
pub(crate) struct PageError(pub StatusCode, pub String);

impl<E: std::fmt::Display> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
    hint: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.0 {
            StatusCode::NOT_FOUND => "見つかりません",
            StatusCode::FORBIDDEN => "この操作はできません",
            StatusCode::BAD_REQUEST => "入力を確認してください",
            _ => "エラーが発生しました",
        };
        let page = MessagePage {
            title,
            text: &self.1,
            hint: "上部のメニューか、ブラウザの「戻る」で前の画面に戻れます。",
        };
        (self.0, Html(page.render().unwrap_or_default())).into_response()
    }
}

type PageResult = Result<Response, PageError>;

fn missing(what: &str) -> PageError {
    PageError(StatusCode::NOT_FOUND, what.to_string())
}

/// Render a template to a response.
pub(crate) fn html<T: Template>(t: T) -> PageResult {
    Ok(Html(t.render()?).into_response())
}

/// The answer to a request without a live session.
pub(crate) fn unauthorized(locked: bool) -> Response {
    let page = if locked {
        MessagePage {
            title: "デスクはロックされています",
            text: "しばらく操作がなかったため、患者情報を守るためにロックしました。",
            hint: "renkei desk を起動したときに表示されたURL（?token=… 付き）をもう一度開いてください。",
        }
    } else {
        MessagePage {
            title: "デスクを開くには起動時のURLが必要です",
            text: "このページはログインしていないブラウザからは表示できません。",
            hint: "renkei desk を起動したときに表示されたURL（?token=… 付き）を開いてください。",
        }
    };
    (
        StatusCode::UNAUTHORIZED,
        Html(page.render().unwrap_or_default()),
    )
        .into_response()
}

/// `GET` of anything else.
pub(crate) async fn not_found_page() -> Response {
    missing("このページはありません。").into_response()
}

/// A message to show on the next page (`?m=`).
#[derive(Deserialize, Default)]
pub(crate) struct Flash {
    m: Option<String>,
}

/// The `csrf` field every form carries.
#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

/// Refuse a form without this session's CSRF token.
pub(crate) fn check_csrf(desk: &Desk, authed: &Authed, token: &str) -> Result<(), PageError> {
    if desk.auth.csrf_ok(authed, token) {
        Ok(())
    } else {
        Err(PageError(
            StatusCode::FORBIDDEN,
            "このフォームは古いか、デスクの外から送られました。ページを開き直してからもう一度操作してください。".into(),
        ))
    }
}

/// Redirect with a message (303, so the browser GETs the next page).
pub(crate) fn see_other(path: &str, message: &str) -> Response {
    let q = if message.is_empty() {
        String::new()
    } else {
        format!("?m={}", urlencode(message))
    };
    Redirect::to(&format!("{path}{q}")).into_response()
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// --- 受信箱 ---------------------------------------------------------------

/// The inbox filters: a package kind, or everything else.
const FILTERS: [(&str, &str); 6] = [
    ("referral", "紹介"),
    ("reply", "返書"),
    ("reverse-referral", "逆紹介"),
    ("transfer", "転院依頼"),
    ("discharge-summary", "退院時サマリー"),
    ("other", "その他"),
];

fn filter_of(a: &Arrival) -> &'static str {
    let k = a.row.kind.as_deref().unwrap_or("");
    FILTERS
        .iter()
        .find(|(f, _)| *f == k)
        .map(|(f, _)| *f)
        .unwrap_or("other")
}

struct Filter {
    href: String,
    label: &'static str,
    unread: usize,
    total: usize,
    active: bool,
}

struct InboxRow {
    href: String,
    envelope: String,
    when: String,
    kind: &'static str,
    sender: String,
    patient: String,
    kana: String,
    title: String,
    unread: bool,
    reason: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    c: Chrome,
    filters: Vec<Filter>,
    rows: Vec<InboxRow>,
    unread: usize,
}

#[derive(Deserialize)]
pub(crate) struct InboxQuery {
    kind: Option<String>,
    m: Option<String>,
}

/// `GET /`: every received package, newest first, by kind.
pub(crate) async fn inbox(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Query(q): Query<InboxQuery>,
) -> PageResult {
    if desk.is_auditor() {
        return Ok(Redirect::to("/audit").into_response());
    }
    let arrivals = desk.store().arrivals().await?;
    let want = q.kind.as_deref().filter(|k| !k.is_empty());
    let mut filters = vec![Filter {
        href: "/".into(),
        label: "すべて",
        unread: arrivals.iter().filter(|a| a.read_at.is_none()).count(),
        total: arrivals.len(),
        active: want.is_none(),
    }];
    for (f, label) in FILTERS {
        let of: Vec<_> = arrivals.iter().filter(|a| filter_of(a) == f).collect();
        filters.push(Filter {
            href: format!("/?kind={f}"),
            label,
            unread: of.iter().filter(|a| a.read_at.is_none()).count(),
            total: of.len(),
            active: want == Some(f),
        });
    }
    let unread = filters[0].unread;
    let rows = arrivals
        .iter()
        .filter(|a| want.is_none_or(|w| filter_of(a) == w))
        .map(|a| {
            let doc = a.doc.clone().unwrap_or_default();
            InboxRow {
                href: format!("/r/{}/", a.row.envelope_id),
                envelope: a.row.envelope_id.clone(),
                when: view::when(&a.row.received_at),
                kind: match &a.row.kind {
                    Some(k) => view::kind_ja(k),
                    None => "受取拒否",
                },
                sender: match &a.row.sender_name {
                    Some(n) => format!("{n}（{}）", a.row.sender),
                    None => a.row.sender.clone(),
                },
                patient: doc.patient_name.unwrap_or_default(),
                kana: doc.patient_kana.unwrap_or_default(),
                title: doc.title.unwrap_or_default(),
                unread: a.read_at.is_none(),
                reason: a.row.reason.as_deref().map(view::reason_ja),
            }
        })
        .collect();
    let c = Chrome::new(&desk, &authed, "/", "受信箱").await.flash(q.m);
    html(InboxPage {
        c,
        filters,
        rows,
        unread,
    })
}

/// `POST /r/{envelope}/open`: mark as read, then show it.
pub(crate) async fn open_package(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(envelope): UrlPath<String>,
    Form(f): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&desk, &authed, &f.csrf)?;
    arrival(&desk, &envelope).await?;
    desk.store().mark_read(&envelope).await?;
    Ok(Redirect::to(&format!("/r/{envelope}/")).into_response())
}

async fn arrival(desk: &Desk, envelope: &str) -> Result<Arrival, PageError> {
    if !crate::receipt::valid_envelope_id(envelope) {
        return Err(missing("この受信はありません。"));
    }
    desk.store()
        .arrival(envelope)
        .await?
        .ok_or_else(|| missing("この受信はありません。"))
}

/// A verified package's folder: its manifest and its sender's certificate
/// (both checked when it was opened).
struct Opened {
    folder: PathBuf,
    manifest: Manifest,
    sender: Option<CertInfo>,
}

fn opened(a: &Arrival) -> Result<Opened, PageError> {
    let folder = PathBuf::from(&a.row.location);
    let manifest = fs::read(folder.join(package::MANIFEST_PATH))
        .map_err(|e| {
            PageError(
                StatusCode::NOT_FOUND,
                format!("受信したフォルダ {} を読めません: {e}", folder.display()),
            )
        })
        .and_then(|b| Manifest::parse(&b).map_err(PageError::from))?;
    let sender = fs::read(folder.join(package::SENDER_CERT_PATH))
        .ok()
        .and_then(|b| CertInfo::parse_pem(&b, "sender").ok());
    Ok(Opened {
        folder,
        manifest,
        sender,
    })
}

/// Read a document.json (bounded) as JSON.
fn read_document(file: &Path) -> Result<serde_json::Value, PageError> {
    let mut b = Vec::new();
    fs::File::open(file)
        .and_then(|f| {
            f.take(crate::document::MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut b)
        })
        .map_err(|e| PageError(StatusCode::NOT_FOUND, format!("文書を読めません: {e}")))?;
    crate::document::validate::parse(&b).map_err(|i| PageError::from(i.message))
}

struct FileRow {
    name: String,
    href: String,
    size: String,
    media_type: String,
}

struct Action {
    href: String,
    label: &'static str,
}

#[derive(Template)]
#[template(path = "package.html")]
struct PackagePage {
    c: Chrome,
    envelope: String,
    kind: &'static str,
    received: String,
    receipt: String,
    rejected: Option<String>,
    sender_name: String,
    sender_id: String,
    fingerprint: String,
    created: String,
    package_id: String,
    thread_href: String,
    document: String,
    files: Vec<FileRow>,
    actions: Vec<Action>,
}

fn size_text(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.0} KB", n as f64 / 1024.0)
    } else {
        format!("{n} バイト")
    }
}

/// What can be written in answer to a package of `kind`.
fn answers(kind: PackageKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        PackageKind::Referral => &[
            ("reply", "返書を作成"),
            ("reverse-referral", "逆紹介を作成"),
            ("transfer", "転院依頼を作成"),
        ],
        PackageKind::Transfer => &[
            ("reply", "返書を作成"),
            ("discharge-summary", "退院時サマリーを作成"),
        ],
        PackageKind::Reply | PackageKind::ReverseReferral | PackageKind::DischargeSummary => {
            &[("referral", "再度紹介する")]
        }
        PackageKind::ClinicalInfo => &[],
    }
}

/// `GET /r/{envelope}/`: one received package, verified when it arrived.
pub(crate) async fn package(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(envelope): UrlPath<String>,
) -> PageResult {
    let a = arrival(&desk, &envelope).await?;
    let receipt = match (&a.receipt_confirmed_at, &a.receipt_error) {
        (Some(at), _) => format!("受領通知（署名付き）送信済み {}", view::when(at)),
        (None, Some(e)) => format!("受領通知は記録済み、次回の同期で送信します（{e}）"),
        (None, None) => "受領通知は記録済み、次回の同期で送信します".into(),
    };
    let mut page = PackagePage {
        c: Chrome::new(&desk, &authed, "/", "受信した文書").await,
        envelope: envelope.clone(),
        kind: "受取拒否",
        received: view::when(&a.row.received_at),
        receipt,
        rejected: a.row.reason.as_deref().map(view::reason_ja),
        sender_name: a.row.sender_name.clone().unwrap_or_default(),
        sender_id: a.row.sender.clone(),
        fingerprint: String::new(),
        created: String::new(),
        package_id: String::new(),
        thread_href: String::new(),
        document: String::new(),
        files: Vec::new(),
        actions: Vec::new(),
    };
    if a.row.outcome == "verified" {
        let o = opened(&a)?;
        let m = &o.manifest;
        page.kind = crate::client::threads::kind_label(m.kind);
        page.c.title = format!("{} — {}", page.kind, page.sender_name);
        page.fingerprint = o
            .sender
            .as_ref()
            .map(|c| c.fingerprint.clone())
            .unwrap_or_else(|| m.sender.cert_sha256.clone());
        page.created = view::when(&m.created);
        page.package_id = m.package_id.clone();
        page.thread_href = format!("/threads/{}", m.thread_id);
        let bundle = read_document(&o.folder.join(package::DOCUMENT_PATH))?;
        page.document = crate::document::render::html_fragment(&bundle);
        page.files = m
            .members
            .iter()
            .filter_map(|mem| {
                let name = mem
                    .path
                    .strip_prefix(package::ATTACHMENTS_DIR)?
                    .strip_prefix('/')?;
                Some(FileRow {
                    name: name.to_string(),
                    href: format!("attachments/{}", urlencode(name)),
                    size: size_text(mem.size),
                    media_type: mem.media_type.clone(),
                })
            })
            .collect();
        page.actions = answers(m.kind)
            .iter()
            .map(|(k, label)| Action {
                href: format!("/compose?kind={k}&reply_to={}", m.package_id),
                label,
            })
            .collect();
        page.actions.push(Action {
            href: format!("/r/{envelope}/print"),
            label: "印刷",
        });
    }
    html(page)
}

/// `GET /r/{envelope}/attachments/{name}`: an attachment, as a download
/// (never shown inline), only if the signed manifest lists it.
pub(crate) async fn attachment(
    State(desk): State<DeskState>,
    UrlPath((envelope, name)): UrlPath<(String, String)>,
) -> PageResult {
    let a = arrival(&desk, &envelope).await?;
    if a.row.outcome != "verified" {
        return Err(missing("この受信には添付ファイルがありません。"));
    }
    let o = opened(&a)?;
    let member = format!("{}/{name}", package::ATTACHMENTS_DIR);
    let listed = o.manifest.members.iter().find(|m| m.path == member);
    let Some(listed) = listed else {
        return Err(missing("この添付ファイルはありません。"));
    };
    let bytes = fs::read(o.folder.join(&listed.path))?;
    Ok(download(&name, bytes))
}

/// A file as a download: `Content-Disposition: attachment`, an opaque type.
pub(crate) fn download(name: &str, bytes: Vec<u8>) -> Response {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        urlencode(name)
    );
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "print.html")]
pub(crate) struct PrintPage {
    pub title: String,
    pub back: String,
    pub body: String,
    pub note: String,
}

/// `GET /r/{envelope}/print`: the document in the order of 別紙様式11, on A4.
pub(crate) async fn print_received(
    State(desk): State<DeskState>,
    UrlPath(envelope): UrlPath<String>,
) -> PageResult {
    let a = arrival(&desk, &envelope).await?;
    if a.row.outcome != "verified" {
        return Err(missing("受取を拒否した文書は印刷できません。"));
    }
    let o = opened(&a)?;
    let bundle = read_document(&o.folder.join(package::DOCUMENT_PATH))?;
    html(PrintPage {
        title: "印刷".into(),
        back: format!("/r/{envelope}/"),
        body: crate::document::render::print_fragment(&bundle),
        note: String::new(),
    })
}

// --- 紹介の経過 -------------------------------------------------------------

struct Card {
    href: String,
    patient: String,
    kana: String,
    counterpart: String,
    purpose: String,
    status: &'static str,
    updated: String,
    overdue: Option<i64>,
}

struct Column {
    title: &'static str,
    hint: &'static str,
    cards: Vec<Card>,
}

#[derive(Template)]
#[template(path = "threads.html")]
struct ThreadsPage {
    c: Chrome,
    columns: Vec<Column>,
    overdue_days: u32,
    overdue: usize,
}

/// The board column of a thread: 紹介 → 返書待ち → 返書受領 → 逆紹介/転院 → 終了.
fn column(t: &Thread) -> usize {
    match t.status {
        ThreadStatus::Sent | ThreadStatus::Rejected | ThreadStatus::Expired => 0,
        ThreadStatus::Delivered | ThreadStatus::Received => 1,
        ThreadStatus::Replied => 2,
        ThreadStatus::ReferredBack | ThreadStatus::Transferred | ThreadStatus::DischargeSummary => {
            3
        }
        ThreadStatus::Closed => 4,
    }
}

/// Days a referral has waited for its reply, when it is past the limit.
fn overdue(t: &Thread, days: u32) -> Option<i64> {
    if column(t) > 1 {
        return None;
    }
    let waited = view::days_since(&t.started_at);
    (waited >= i64::from(days)).then_some(waited)
}

fn first_line(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let short: String = line.chars().take(max).collect();
    if short.chars().count() < line.chars().count() {
        format!("{short}…")
    } else {
        short
    }
}

/// `GET /threads`: the referral threads as a board.
pub(crate) async fn threads(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Query(f): Query<Flash>,
) -> PageResult {
    let list = desk
        .store()
        .threads(None)
        .await
        .map_err(|e| PageError::from(e.to_string()))?;
    let mut columns = vec![
        Column {
            title: "紹介",
            hint: "送信済み・到達待ち、拒否・期限切れ",
            cards: Vec::new(),
        },
        Column {
            title: "返書待ち",
            hint: "紹介が届き、返書がまだのもの",
            cards: Vec::new(),
        },
        Column {
            title: "返書受領",
            hint: "返書を送受信したもの",
            cards: Vec::new(),
        },
        Column {
            title: "逆紹介・転院",
            hint: "逆紹介・転院依頼・退院時サマリー",
            cards: Vec::new(),
        },
        Column {
            title: "終了",
            hint: "この施設で終了にしたもの",
            cards: Vec::new(),
        },
    ];
    let days = desk.opts.overdue_days;
    let mut late = 0;
    for t in &list {
        let od = overdue(t, days);
        late += usize::from(od.is_some());
        columns[column(t)].cards.push(Card {
            href: format!("/threads/{}", t.thread_id),
            patient: t.patient.clone().unwrap_or_else(|| "（患者名なし）".into()),
            kana: t.patient_kana.clone().unwrap_or_default(),
            counterpart: t
                .counterparts
                .iter()
                .map(|c| c.name.clone().unwrap_or_else(|| c.facility_id.clone()))
                .collect::<Vec<_>>()
                .join("、"),
            purpose: t
                .purpose
                .as_deref()
                .map(|p| first_line(p, 40))
                .unwrap_or_default(),
            status: t.status.japanese(),
            updated: view::when(&t.updated_at),
            overdue: od,
        });
    }
    let c = Chrome::new(&desk, &authed, "/threads", "紹介の経過")
        .await
        .flash(f.m);
    html(ThreadsPage {
        c,
        columns,
        overdue_days: days,
        overdue: late,
    })
}

struct StepRow {
    when: String,
    direction: &'static str,
    kind: &'static str,
    state: &'static str,
    state_class: &'static str,
    counterpart: String,
    href: Option<String>,
    receipts: Vec<String>,
}

#[derive(Template)]
#[template(path = "thread.html")]
struct ThreadPage {
    c: Chrome,
    thread_id: String,
    patient: String,
    kana: String,
    status: &'static str,
    purpose: String,
    steps: Vec<StepRow>,
    closed: Option<String>,
    actions: Vec<Action>,
    overdue: Option<i64>,
}

fn state_class(s: StepState) -> &'static str {
    match s {
        StepState::Rejected | StepState::Expired => "bad",
        StepState::Delivered | StepState::Received => "good",
        StepState::Sent => "wait",
    }
}

/// `GET /threads/{thread}`: one thread's timeline.
pub(crate) async fn thread(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(thread): UrlPath<String>,
    Query(f): Query<Flash>,
) -> PageResult {
    let t = desk
        .store()
        .thread(&thread)
        .await
        .map_err(|e| PageError(StatusCode::NOT_FOUND, e.to_string()))?;
    let mut steps = Vec::new();
    for s in &t.steps {
        let p = &s.package;
        let sent = p.direction == crate::client::threads::Direction::Sent;
        let receipts = s.receipts.as_ref().map(receipt_lines).unwrap_or_default();
        steps.push(StepRow {
            when: view::when(&p.recorded_at),
            direction: if sent { "送信" } else { "受信" },
            kind: s.kind_ja,
            state: s.state_ja,
            state_class: state_class(s.state),
            counterpart: p
                .counterparts
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("、"),
            href: if sent {
                Some(format!("/sent/{}/print", p.package_id))
            } else {
                Some(format!("/r/{}/", p.envelope_id))
            },
            receipts,
        });
    }
    // Answer the last package received in the thread.
    let last_received = t
        .steps
        .iter()
        .rev()
        .find(|s| s.package.direction == crate::client::threads::Direction::Received);
    let mut actions = Vec::new();
    if let Some(s) = last_received {
        for (k, label) in answers(s.package.kind) {
            actions.push(Action {
                href: format!("/compose?kind={k}&reply_to={}", s.package.package_id),
                label,
            });
        }
    }
    let c = Chrome::new(&desk, &authed, "/threads", "紹介の経過")
        .await
        .flash(f.m);
    html(ThreadPage {
        c,
        thread_id: t.thread_id.clone(),
        patient: t.patient.clone().unwrap_or_default(),
        kana: t.patient_kana.clone().unwrap_or_default(),
        status: t.status.japanese(),
        purpose: t.purpose.clone().unwrap_or_default(),
        steps,
        closed: t.closed.as_ref().map(|c| {
            format!(
                "{} に {} が終了にしました{}",
                view::when(&c.closed_at),
                c.closed_by,
                c.note
                    .as_deref()
                    .map(|n| format!("（メモ: {n}）"))
                    .unwrap_or_default()
            )
        }),
        actions,
        overdue: overdue(&t, desk.opts.overdue_days),
    })
}

/// The receipts of a sent package, one line each.
pub(crate) fn receipt_lines(r: &Receipts) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(at), Some(i)) = (&r.accepted_at, r.accepted_log_index) {
        out.push(format!(
            "中継サーバー受付 {}（ログ番号 {i}）",
            view::when(at)
        ));
    }
    for o in &r.outcomes {
        let what = match o.state {
            StepState::Delivered => "到達（受信施設の署名付き受領通知）".to_string(),
            StepState::Rejected => format!(
                "受取拒否: {}",
                view::reason_ja(o.reason.as_deref().unwrap_or(""))
            ),
            StepState::Expired => "期限切れ（未受信のまま保管期限を過ぎました）".to_string(),
            _ => o.state.japanese().to_string(),
        };
        out.push(format!(
            "{} {what} {}（ログ番号 {}）",
            o.recipient,
            view::when(&o.at),
            o.log_index
        ));
    }
    out
}

#[derive(Deserialize)]
pub(crate) struct CloseForm {
    #[serde(default)]
    csrf: String,
    note: Option<String>,
}

/// `POST /threads/{thread}/close`: close a thread (this facility only).
pub(crate) async fn close_thread(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    UrlPath(thread): UrlPath<String>,
    Form(f): Form<CloseForm>,
) -> PageResult {
    check_csrf(&desk, &authed, &f.csrf)?;
    let note = f.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
    desk.store()
        .close_thread(&thread, &desk.me.id.to_string(), note)
        .await
        .map_err(|e| PageError(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(see_other(
        &format!("/threads/{thread}"),
        "終了にしました（この施設の記録のみ。相手には送信されません）",
    ))
}

// --- 送信状況 ---------------------------------------------------------------

struct RecipientRow {
    recipient: String,
    state: &'static str,
    state_class: &'static str,
    detail: String,
}

struct SentRowView {
    when: String,
    kind: &'static str,
    patient: String,
    envelope: String,
    print_href: String,
    recipients: Vec<RecipientRow>,
}

struct OutboxRow {
    when: String,
    kind: &'static str,
    to: String,
    envelope: String,
    state: &'static str,
    detail: String,
}

#[derive(Template)]
#[template(path = "sent.html")]
struct SentPage {
    c: Chrome,
    outbox: Vec<OutboxRow>,
    rows: Vec<SentRowView>,
}

/// `GET /sent`: each sent package and recipient with its verified state,
/// and the outbox.
pub(crate) async fn sent(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Query(f): Query<Flash>,
) -> PageResult {
    let store = desk.store();
    let names: HashMap<String, String> = store
        .thread_packages()
        .await?
        .into_iter()
        .flat_map(|p| p.counterparts)
        .filter_map(|c| Some((c.facility_id.clone(), c.name?)))
        .collect();
    let patients: HashMap<String, String> = store
        .thread_packages()
        .await?
        .into_iter()
        .filter_map(|p| Some((p.package_id, p.doc.patient_name?)))
        .collect();
    let name = |id: &str| match names.get(id) {
        Some(n) => format!("{n}（{id}）"),
        None => id.to_string(),
    };
    let outbox = store
        .outbox(None)
        .await?
        .into_iter()
        .filter(|e| e.state != OutboxState::Accepted)
        .map(|e| OutboxRow {
            when: view::when(&e.queued_at),
            kind: crate::client::threads::kind_label(e.manifest.kind),
            to: e
                .manifest
                .recipients
                .iter()
                .map(|r| name(r.facility_id.as_str()))
                .collect::<Vec<_>>()
                .join("、"),
            envelope: e.envelope_id.clone(),
            state: e.state.japanese(),
            detail: match &e.last_error {
                Some(err) => format!("{} 回試行、最後のエラー: {err}", e.attempts),
                None => "まだ送信を試みていません".into(),
            },
        })
        .collect();
    let mut rows = Vec::new();
    for s in store.sent(None).await?.into_iter().rev() {
        let bundles = store.bundles(&s.envelope_id).await?;
        let r = Receipts::from_bundles(&s.envelope_id, &bundles);
        let recipients = s
            .recipients
            .iter()
            .map(
                |rid| match r.outcomes.iter().find(|o| &o.recipient == rid) {
                    Some(o) => RecipientRow {
                        recipient: name(rid),
                        state: o.state.japanese(),
                        state_class: state_class(o.state),
                        detail: match o.state {
                            StepState::Rejected => format!(
                                "{} {}（ログ番号 {}）",
                                view::when(&o.at),
                                view::reason_ja(o.reason.as_deref().unwrap_or("")),
                                o.log_index
                            ),
                            StepState::Expired => format!(
                                "{} 保管期限切れ。{}（署名付き記録、ログ番号 {}）",
                                view::when(&o.at),
                                match expiry_fetch(&bundles, rid).flatten() {
                                    Some(f) => format!(
                                        "相手は {} に受け取りましたが、受領通知はありません",
                                        view::when(&f)
                                    ),
                                    None => "相手は受け取っていません".into(),
                                },
                                o.log_index
                            ),
                            _ => format!(
                                "{}（署名付き受領通知、ログ番号 {}）",
                                view::when(&o.at),
                                o.log_index
                            ),
                        },
                    },
                    None => RecipientRow {
                        recipient: name(rid),
                        state: "中継サーバー受付済み・未受信",
                        state_class: "wait",
                        detail: match (&r.accepted_at, r.accepted_log_index) {
                            (Some(at), Some(i)) => {
                                format!("受付 {}（ログ番号 {i}）", view::when(at))
                            }
                            _ => "受付の署名付き記録を同期中".into(),
                        },
                    },
                },
            )
            .collect();
        rows.push(SentRowView {
            when: view::when(&s.created_at),
            kind: view::kind_ja(&s.kind),
            patient: patients.get(&s.package_id).cloned().unwrap_or_default(),
            envelope: s.envelope_id.clone(),
            print_href: format!("/sent/{}/print", s.package_id),
            recipients,
        });
    }
    let c = Chrome::new(&desk, &authed, "/sent", "送信状況")
        .await
        .flash(f.m);
    html(SentPage { c, outbox, rows })
}

/// `GET /sent/{package}/print`: a document this facility sent.
pub(crate) async fn print_sent(
    State(desk): State<DeskState>,
    UrlPath(package): UrlPath<String>,
) -> PageResult {
    if uuid::Uuid::parse_str(&package).is_err() {
        return Err(missing("この文書はありません。"));
    }
    let file = crate::files::sent_folder(&desk.profile, &package).join(package::DOCUMENT_PATH);
    let bundle = read_document(&file)?;
    html(PrintPage {
        title: "印刷（送信した文書）".into(),
        back: "/sent".into(),
        body: crate::document::render::print_fragment(&bundle),
        note: String::new(),
    })
}

/// `POST /outbox/flush`: send what waits in the outbox now.
pub(crate) async fn flush(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Form(f): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&desk, &authed, &f.csrf)?;
    let _one = desk.work.lock().await;
    let s = crate::client::ops::Session::open(&desk.dir, desk.opts.relay.as_deref()).await?;
    let out = s.flush_outbox().await?;
    let msg = if out.queued.is_empty() && out.refused.is_empty() {
        format!("送信待ちの {} 件を送信しました", out.accepted.len())
    } else {
        format!(
            "{} 件を送信、{} 件は中継サーバーに届かず送信待ちのまま、{} 件は拒否されました",
            out.accepted.len(),
            out.queued.len(),
            out.refused.len()
        )
    };
    Ok(see_other("/sent", &msg))
}

/// `POST /sync`: sync with the relay now.
pub(crate) async fn sync_now(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Form(f): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&desk, &authed, &f.csrf)?;
    super::sync::sync_once(&desk).await;
    let s = desk.sync.read().expect("lock").clone();
    let msg = match &s.error {
        Some(e) => format!("同期できませんでした: {e}"),
        None => format!("同期しました（受信 {} 件、送信 {} 件）", s.received, s.sent),
    };
    Ok(see_other(
        if desk.is_auditor() { "/audit" } else { "/" },
        &msg,
    ))
}

/// `GET /api/badge`: the unread count for the tab title (no patient data).
pub(crate) async fn badge(State(desk): State<DeskState>) -> PageResult {
    let unread = match &desk.store {
        Some(s) => s.unread_count().await?,
        None => 0,
    };
    Ok(axum::Json(serde_json::json!({ "unread": unread })).into_response())
}

// --- 監査 ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    checkpoint: String,
    facilities: Vec<(String, String)>,
    overdue: Vec<String>,
    rejections: Vec<String>,
    key_changes: Vec<String>,
    problems: Vec<String>,
}

/// `GET /audit`: the auditor's view (sync, checkpoint, outcomes, problems).
pub(crate) async fn audit(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Query(f): Query<Flash>,
) -> PageResult {
    if !desk.is_auditor() {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            "監査画面は監査人のプロファイルでのみ使えます。".into(),
        ));
    }
    let a = crate::audit::sync::Auditor::open(&desk.dir, desk.opts.relay.as_deref()).await?;
    let checkpoint = match a.last_checkpoint().await? {
        Some((size, _)) => {
            format!("検証済みのログ: {size} 件（チェックポイントの署名と一貫性を確認済み）")
        }
        None => "まだ同期していません".into(),
    };
    let r = crate::audit::report::build(&a, None).await?;
    let facilities = r
        .facilities
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                format!(
                    "送信 {} ・ 宛先 {} ・ 到達 {} ・ 拒否 {} ・ 期限切れ {}",
                    c.sent, c.received, c.delivered, c.rejected, c.expired
                ),
            )
        })
        .collect();
    let overdue = r
        .overdue
        .iter()
        .map(|(e, rcp, at)| format!("{} → {rcp}（受付 {}）", &e[..16], view::when(at)))
        .collect();
    let rejections = r
        .rejections
        .iter()
        .map(|(e, rcp, why)| format!("{} → {rcp}: {}", &e[..16], view::reason_ja(why)))
        .collect();
    let problems = r
        .problems
        .iter()
        .map(|(at, leaf, what)| {
            format!(
                "{} {}{what}",
                view::when(at),
                leaf.map(|l| format!("ログ番号 {l}: ")).unwrap_or_default()
            )
        })
        .collect();
    let key_changes = r
        .key_changes
        .iter()
        .map(|k| {
            format!(
                "{}: ログ番号 {}（公開 {}）で別の鍵の証明書（シリアル番号 {}）。それまでの証明書はログ番号 {}",
                k.facility_id,
                k.log_index,
                view::when(&k.published_at),
                k.serial,
                k.previous_log_index
            )
        })
        .collect();
    let c = Chrome::new(&desk, &authed, "/audit", "監査")
        .await
        .flash(f.m);
    html(AuditPage {
        c,
        checkpoint,
        facilities,
        overdue,
        rejections,
        key_changes,
        problems,
    })
}

/// `GET /audit/report.csv`: the audit report.
pub(crate) async fn audit_csv(State(desk): State<DeskState>) -> PageResult {
    if !desk.is_auditor() {
        return Err(missing("監査人のプロファイルではありません。"));
    }
    let a = crate::audit::sync::Auditor::open(&desk.dir, desk.opts.relay.as_deref()).await?;
    let r = crate::audit::report::build(&a, None).await?;
    Ok(download("audit-report.csv", r.to_csv().into_bytes()))
}

// --- 設定 ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    c: Chrome,
    rows: Vec<(&'static str, String)>,
    warnings: Vec<String>,
}

/// `GET /settings`: the profile, its certificate, the CRL and the relay.
pub(crate) async fn settings(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
) -> PageResult {
    let me = &desk.me;
    let mut warnings = Vec::new();
    let left = (me.not_after_unix - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    if left < 30 {
        warnings.push(format!(
            "証明書の有効期限まであと {left} 日です。地域の認証局（ネットワーク運営者）に更新を依頼してください。"
        ));
    }
    let trust = desk.profile.trust()?;
    let crl = match crl_dates(trust.crl_der()) {
        Some((number, this, next)) => {
            let age = view::days_since(&this);
            if next.as_deref().is_some_and(|n| view::days_since(n) > 0) {
                warnings.push("失効リスト（CRL）の次回更新予定日を過ぎています。中継サーバーと同期して最新の失効リストを取得してください。".into());
            }
            format!(
                "番号 {number}、発行 {}（{age} 日前）、次回更新予定 {}",
                view::when(&this),
                next.as_deref()
                    .map(view::when)
                    .unwrap_or_else(|| "-".into())
            )
        }
        None => "未取得（中継サーバーとの同期で取得します）".into(),
    };
    let s = desk.sync.read().expect("lock").clone();
    let rows = vec![
        ("施設名", me.name.clone()),
        ("医療機関コード・ID", me.id.to_string()),
        ("種別", me.kind.to_string()),
        ("プロファイル", desk.dir.display().to_string()),
        (
            "証明書の有効期間",
            format!(
                "{} 〜 {}",
                view::when(&me.not_before),
                view::when(&me.not_after)
            ),
        ),
        (
            "証明書のフィンガープリント（SHA-256）",
            me.fingerprint.clone(),
        ),
        ("認証局", trust.ca_name.clone()),
        ("失効リスト（CRL）", crl),
        (
            "中継サーバー",
            desk.opts
                .relay
                .clone()
                .or_else(|| desk.profile.config.relay.clone())
                .unwrap_or_else(|| "未設定".into()),
        ),
        (
            "同期の間隔",
            format!("{} 秒", desk.opts.sync_interval.as_secs()),
        ),
        (
            "最終同期",
            s.last_success
                .as_deref()
                .map(view::when)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "自動ロック",
            format!("操作がないまま {} 分", desk.opts.idle_lock.as_secs() / 60),
        ),
        (
            "返書の期限",
            format!("紹介から {} 日", desk.opts.overdue_days),
        ),
    ];
    let c = Chrome::new(&desk, &authed, "/settings", "設定").await;
    html(SettingsPage { c, rows, warnings })
}

/// CRL number, thisUpdate and nextUpdate (RFC 3339).
fn crl_dates(der: Option<&[u8]>) -> Option<(u128, String, Option<String>)> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der?).ok()?;
    let this = crate::pki::cert::rfc3339(crl.last_update().timestamp());
    let next = crl
        .next_update()
        .map(|t| crate::pki::cert::rfc3339(t.timestamp()));
    Some((crate::pki::crl_number(der), this, next))
}
