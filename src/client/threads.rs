//! Referral threads (紹介の経過): every package this facility sent or
//! received, grouped into threads (referral → reply → reverse referral or
//! transfer → discharge summary) by the signed thread and in-reply-to IDs
//! of their manifests, with a status per step derived from the packages and
//! the verified receipt bundles kept in the local store.
//!
//! Closing a thread is local bookkeeping of this facility's liaison office
//! (地域連携室): it is recorded in this profile's store only, is not signed,
//! and is not sent to anyone.
//!
//! The grouping and the status are pure functions ([`group`],
//! [`Thread::derive`]); the rest reads and writes `PROFILE/store.db`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::store::{LocalStore, LocalStoreError};
use crate::document::{self, Expect, Summary};
use crate::package::{Manifest, PackageKind};
use crate::receipt::ReceiptBundle;
use crate::receipt::{Acceptance, Delivery, Expiry, Outcome, Purpose};

/// Errors of thread operations.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] LocalStoreError),
    /// The thread ID is not a thread ID at all.
    #[error("{0:?} is not a thread ID (a UUID such as 3f2c8a4e-0b1d-4c55-9a7e-2d6f1b0c9e41); `renkei referrals --profile P` lists the threads")]
    BadId(String),
    /// No package of this profile belongs to the thread.
    #[error(
        "no referral thread {0} in this profile; `renkei referrals --profile P` lists the threads"
    )]
    Unknown(String),
    /// The thread was closed already.
    #[error("thread {thread} was already closed on {at} by {by}")]
    AlreadyClosed {
        /// The thread.
        thread: String,
        /// When it was closed.
        at: String,
        /// Who closed it.
        by: String,
    },
}

impl From<sqlx::Error> for ThreadError {
    fn from(e: sqlx::Error) -> Self {
        ThreadError::Store(LocalStoreError::Db(e))
    }
}

/// Whether this facility sent or received a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Sent by this facility.
    Sent,
    /// Received (and verified) by this facility.
    Received,
}

impl Direction {
    /// `sent` or `received`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }

    /// 送信 or 受信.
    pub fn japanese(self) -> &'static str {
        match self {
            Direction::Sent => "送信",
            Direction::Received => "受信",
        }
    }

    fn parse(s: &str) -> Direction {
        if s == "sent" {
            Direction::Sent
        } else {
            Direction::Received
        }
    }
}

/// The facility on the other side of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counterpart {
    /// Its facility ID.
    pub facility_id: String,
    /// Its name, from its verified certificate.
    pub name: Option<String>,
}

impl fmt::Display for Counterpart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{} {}", self.facility_id, n),
            None => f.write_str(&self.facility_id),
        }
    }
}

/// What the list of threads shows from a package's document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocFields {
    /// 患者氏名.
    pub patient_name: Option<String>,
    /// 患者氏名（カナ）.
    pub patient_kana: Option<String>,
    /// Composition.title.
    pub title: Option<String>,
    /// 紹介目的 (section 950).
    pub purpose: Option<String>,
}

impl DocFields {
    /// The fields of a validated document.
    pub fn from_summary(s: &Summary) -> DocFields {
        DocFields {
            patient_name: Some(s.patient.name.clone()).filter(|n| !n.is_empty()),
            patient_kana: s.patient.kana.clone(),
            title: Some(s.title.clone()).filter(|t| !t.is_empty()),
            purpose: s.purpose.clone(),
        }
    }

    /// The fields of `document.json` bytes; empty when the document is not
    /// a valid JP-CLINS Bundle (a `clinical-info` package may carry
    /// anything).
    pub fn from_document(bytes: &[u8]) -> DocFields {
        document::validate(bytes, &Expect::default())
            .map(|s| DocFields::from_summary(&s))
            .unwrap_or_default()
    }
}

/// One package of a thread, as recorded when it was sent or received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPackage {
    /// The package ID.
    pub package_id: String,
    /// Sent or received.
    pub direction: Direction,
    /// The thread the signed manifest names.
    pub thread_id: String,
    /// The package this one answers.
    pub in_reply_to: Option<String>,
    /// What the package is.
    pub kind: PackageKind,
    /// The recipients (sent) or the sender (received).
    pub counterparts: Vec<Counterpart>,
    /// The envelope ID (SHA-256 of the ciphertext).
    pub envelope_id: String,
    /// When the package was sealed (the signed manifest's time).
    pub created_at: String,
    /// When this facility sent or received it.
    pub recorded_at: String,
    /// Fields of its document.
    #[serde(flatten)]
    pub doc: DocFields,
}

impl ThreadPackage {
    /// A package this facility sent.
    pub fn sent(
        m: &Manifest,
        envelope_id: &str,
        recipients: Vec<Counterpart>,
        doc: DocFields,
    ) -> ThreadPackage {
        ThreadPackage {
            package_id: m.package_id.clone(),
            direction: Direction::Sent,
            thread_id: m.thread_id.clone(),
            in_reply_to: m.in_reply_to.clone(),
            kind: m.kind,
            counterparts: recipients,
            envelope_id: envelope_id.to_string(),
            created_at: m.created.clone(),
            recorded_at: crate::receipt::now_rfc3339(),
            doc,
        }
    }

    /// A package this facility received and verified.
    pub fn received(
        m: &Manifest,
        envelope_id: &str,
        sender_name: &str,
        doc: DocFields,
    ) -> ThreadPackage {
        ThreadPackage {
            package_id: m.package_id.clone(),
            direction: Direction::Received,
            thread_id: m.thread_id.clone(),
            in_reply_to: m.in_reply_to.clone(),
            kind: m.kind,
            counterparts: vec![Counterpart {
                facility_id: m.sender.facility_id.to_string(),
                name: Some(sender_name.to_string()),
            }],
            envelope_id: envelope_id.to_string(),
            created_at: m.created.clone(),
            recorded_at: crate::receipt::now_rfc3339(),
            doc,
        }
    }
}

/// A thread closed by this facility (local bookkeeping only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// Who closed it (the given name, or this facility's ID).
    pub closed_by: String,
    /// When.
    pub closed_at: String,
    /// Why, if noted.
    pub note: Option<String>,
}

/// The short Japanese name of a package kind, for the liaison office.
pub fn kind_label(k: PackageKind) -> &'static str {
    match k {
        PackageKind::Referral => "紹介",
        PackageKind::Reply => "返書",
        PackageKind::ReverseReferral => "逆紹介",
        PackageKind::Transfer => "転院依頼",
        PackageKind::DischargeSummary => "退院時サマリー",
        PackageKind::ClinicalInfo => "診療情報",
    }
}

/// Where one package stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Sent and accepted by the relay; no outcome yet.
    Sent,
    /// Every recipient's signed delivery receipt says it verified the package.
    Delivered,
    /// A recipient rejected it (signed rejection receipt).
    Rejected,
    /// The relay expired it for a recipient (signed expiry receipt).
    Expired,
    /// This facility received and verified it (and posted its delivery receipt).
    Received,
}

impl StepState {
    /// English name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Sent => "sent",
            StepState::Delivered => "delivered",
            StepState::Rejected => "rejected",
            StepState::Expired => "expired",
            StepState::Received => "received",
        }
    }

    /// Japanese name.
    pub fn japanese(self) -> &'static str {
        match self {
            StepState::Sent => "送信済み",
            StepState::Delivered => "到達",
            StepState::Rejected => "受取拒否",
            StepState::Expired => "期限切れ",
            StepState::Received => "受領",
        }
    }
}

/// Where a thread stands, from its most advanced package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadStatus {
    /// The referral was sent; no outcome yet.
    Sent,
    /// The referral reached its recipient (signed delivery receipt).
    Delivered,
    /// A package this facility sent was rejected by its recipient.
    Rejected,
    /// A package this facility sent expired unread at the relay.
    Expired,
    /// This facility received the referral.
    Received,
    /// A reply (返書) was sent or received.
    Replied,
    /// The patient was referred back (逆紹介).
    ReferredBack,
    /// A transfer (転院依頼) was sent or received.
    Transferred,
    /// A discharge summary (退院時サマリー) was sent or received.
    DischargeSummary,
    /// This facility closed the thread.
    Closed,
}

impl ThreadStatus {
    /// English name (as in `--json`, with spaces).
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Sent => "sent",
            ThreadStatus::Delivered => "delivered",
            ThreadStatus::Rejected => "rejected",
            ThreadStatus::Expired => "expired",
            ThreadStatus::Received => "received",
            ThreadStatus::Replied => "replied",
            ThreadStatus::ReferredBack => "referred back",
            ThreadStatus::Transferred => "transferred",
            ThreadStatus::DischargeSummary => "discharge summary",
            ThreadStatus::Closed => "closed",
        }
    }

    /// Japanese name.
    pub fn japanese(self) -> &'static str {
        match self {
            ThreadStatus::Sent => "紹介 送信済み",
            ThreadStatus::Delivered => "紹介 到達",
            ThreadStatus::Rejected => "受取拒否",
            ThreadStatus::Expired => "期限切れ",
            ThreadStatus::Received => "紹介 受領",
            ThreadStatus::Replied => "返書",
            ThreadStatus::ReferredBack => "逆紹介",
            ThreadStatus::Transferred => "転院",
            ThreadStatus::DischargeSummary => "退院時サマリー",
            ThreadStatus::Closed => "終了",
        }
    }
}

impl fmt::Display for ThreadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one recipient of a sent package, from a verified
/// delivery or expiry receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    /// The recipient.
    pub recipient: String,
    /// delivered, rejected or expired.
    pub state: StepState,
    /// Reason code when rejected.
    pub reason: Option<String>,
    /// When the outcome was signed.
    pub at: String,
    /// Log index of the receipt.
    pub log_index: u64,
}

/// What the verified receipt bundles of one envelope say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipts {
    /// When the relay accepted it (acceptance receipt).
    pub accepted_at: Option<String>,
    /// Log index of the acceptance.
    pub accepted_log_index: Option<u64>,
    /// The first outcome per recipient, in log order.
    pub outcomes: Vec<RecipientOutcome>,
}

impl Receipts {
    /// Read the bundles of one envelope. The store keeps only bundles that
    /// `status` verified (signatures, certificates, inclusion in a
    /// consistent checkpoint); bundles of other envelopes are ignored.
    pub fn from_bundles(envelope_id: &str, bundles: &[ReceiptBundle]) -> Receipts {
        let mut r = Receipts::default();
        let mut sorted: Vec<&ReceiptBundle> = bundles.iter().collect();
        sorted.sort_by_key(|b| b.log_index);
        for b in sorted {
            let outcome = match b.receipt.purpose {
                Purpose::Acceptance => {
                    if let Ok(a) = b.receipt.parse::<Acceptance>(Purpose::Acceptance) {
                        if a.envelope_id == envelope_id && r.accepted_at.is_none() {
                            r.accepted_at = Some(a.accepted_at);
                            r.accepted_log_index = Some(b.log_index);
                        }
                    }
                    None
                }
                Purpose::Delivery => b
                    .receipt
                    .parse::<Delivery>(Purpose::Delivery)
                    .ok()
                    .filter(|d| d.envelope_id == envelope_id)
                    .map(|d| RecipientOutcome {
                        recipient: d.recipient.to_string(),
                        state: if d.outcome == Outcome::Verified {
                            StepState::Delivered
                        } else {
                            StepState::Rejected
                        },
                        reason: d.reason,
                        at: d.delivered_at,
                        log_index: b.log_index,
                    }),
                Purpose::Expiry => b
                    .receipt
                    .parse::<Expiry>(Purpose::Expiry)
                    .ok()
                    .filter(|x| x.envelope_id == envelope_id)
                    .map(|x| RecipientOutcome {
                        recipient: x.recipient.to_string(),
                        state: StepState::Expired,
                        reason: None,
                        at: x.expired_at,
                        log_index: b.log_index,
                    }),
                Purpose::Submission => None,
            };
            if let Some(o) = outcome {
                if !r.outcomes.iter().any(|x| x.recipient == o.recipient) {
                    r.outcomes.push(o);
                }
            }
        }
        r
    }
}

/// One package in a thread's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The package.
    #[serde(flatten)]
    pub package: ThreadPackage,
    /// The kind in Japanese.
    pub kind_ja: &'static str,
    /// Where it stands.
    pub state: StepState,
    /// The state in Japanese.
    pub state_ja: &'static str,
    /// Receipts (for packages this facility sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Receipts>,
}

impl Step {
    /// `紹介 到達`, `返書 受領`: the kind and where it stands, in Japanese.
    pub fn label(&self) -> String {
        let state = match self.state {
            StepState::Sent => "送信",
            StepState::Delivered => "到達",
            StepState::Rejected => "拒否",
            StepState::Expired => "期限切れ",
            StepState::Received => "受領",
        };
        format!("{} {}", self.kind_ja, state)
    }
}

/// A referral thread as this facility sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// The thread ID (the package ID of its first package).
    pub thread_id: String,
    /// Where it stands.
    pub status: ThreadStatus,
    /// The status in Japanese.
    pub status_ja: &'static str,
    /// Whether it is still open (not closed by this facility).
    pub open: bool,
    /// 患者氏名, from the first document that names one.
    pub patient: Option<String>,
    /// 患者氏名（カナ）.
    pub patient_kana: Option<String>,
    /// 紹介目的 of the first document that states one.
    pub purpose: Option<String>,
    /// The title of the first document.
    pub title: Option<String>,
    /// Every facility on the other side, in order of appearance.
    pub counterparts: Vec<Counterpart>,
    /// When its first package was sealed.
    pub started_at: String,
    /// When its last package was sealed.
    pub updated_at: String,
    /// The closing, if this facility closed it.
    pub closed: Option<Closure>,
    /// Every package, oldest first.
    pub steps: Vec<Step>,
}

/// How far a kind takes a thread (clinical information takes it nowhere).
fn rank(k: PackageKind) -> u8 {
    match k {
        PackageKind::ClinicalInfo => 0,
        PackageKind::Referral => 1,
        PackageKind::Reply => 2,
        PackageKind::ReverseReferral | PackageKind::Transfer => 3,
        PackageKind::DischargeSummary => 4,
    }
}

fn step_state(p: &ThreadPackage, receipts: Option<&Receipts>) -> StepState {
    if p.direction == Direction::Received {
        return StepState::Received;
    }
    let outcomes = receipts.map(|r| r.outcomes.as_slice()).unwrap_or_default();
    let of = |s: StepState| outcomes.iter().any(|o| o.state == s);
    if of(StepState::Rejected) {
        StepState::Rejected
    } else if of(StepState::Expired) {
        StepState::Expired
    } else if !p.counterparts.is_empty()
        && p.counterparts.iter().all(|c| {
            outcomes
                .iter()
                .any(|o| o.recipient == c.facility_id && o.state == StepState::Delivered)
        })
    {
        StepState::Delivered
    } else {
        StepState::Sent
    }
}

impl Thread {
    /// Derive a thread from its packages in the order this facility sent
    /// or received them (manifest times come from several clocks and have
    /// second precision, so they do not order a fast exchange), the
    /// receipts of the packages this facility sent (by envelope ID) and its
    /// closing. Returns `None` for no packages.
    pub fn derive(
        thread_id: &str,
        packages: Vec<ThreadPackage>,
        receipts: &HashMap<String, Receipts>,
        closed: Option<Closure>,
    ) -> Option<Thread> {
        let steps: Vec<Step> = packages
            .into_iter()
            .map(|p| {
                let r = (p.direction == Direction::Sent)
                    .then(|| receipts.get(&p.envelope_id).cloned().unwrap_or_default());
                let state = step_state(&p, r.as_ref());
                Step {
                    kind_ja: kind_label(p.kind),
                    state,
                    state_ja: state.japanese(),
                    receipts: r,
                    package: p,
                }
            })
            .collect();
        let first = steps.first()?;
        let last = steps.last()?;
        // The most advanced package; the latest among equals.
        let top = steps
            .iter()
            .max_by_key(|s| rank(s.package.kind))
            .unwrap_or(last);
        let status = if closed.is_some() {
            ThreadStatus::Closed
        } else {
            match (top.state, top.package.kind) {
                (StepState::Rejected, _) => ThreadStatus::Rejected,
                (StepState::Expired, _) => ThreadStatus::Expired,
                (_, PackageKind::Reply) => ThreadStatus::Replied,
                (_, PackageKind::ReverseReferral) => ThreadStatus::ReferredBack,
                (_, PackageKind::Transfer) => ThreadStatus::Transferred,
                (_, PackageKind::DischargeSummary) => ThreadStatus::DischargeSummary,
                (StepState::Received, _) => ThreadStatus::Received,
                (StepState::Delivered, _) => ThreadStatus::Delivered,
                _ => ThreadStatus::Sent,
            }
        };
        let mut counterparts: Vec<Counterpart> = Vec::new();
        for c in steps.iter().flat_map(|s| &s.package.counterparts) {
            match counterparts
                .iter_mut()
                .find(|x| x.facility_id == c.facility_id)
            {
                Some(x) if x.name.is_none() => x.name = c.name.clone(),
                Some(_) => {}
                None => counterparts.push(c.clone()),
            }
        }
        let find = |f: fn(&DocFields) -> &Option<String>| {
            steps.iter().find_map(|s| f(&s.package.doc).clone())
        };
        Some(Thread {
            thread_id: thread_id.to_string(),
            status,
            status_ja: status.japanese(),
            open: closed.is_none(),
            patient: find(|d| &d.patient_name),
            patient_kana: find(|d| &d.patient_kana),
            purpose: find(|d| &d.purpose),
            title: find(|d| &d.title),
            counterparts,
            started_at: first.package.created_at.clone(),
            updated_at: steps
                .iter()
                .map(|s| &s.package.created_at)
                .max()
                .unwrap_or(&last.package.created_at)
                .clone(),
            closed,
            steps,
        })
    }

    /// The steps in Japanese: `紹介 到達 → 返書 受領 → 逆紹介 受領`.
    pub fn path(&self) -> String {
        let mut s = self
            .steps
            .iter()
            .map(Step::label)
            .collect::<Vec<_>>()
            .join(" → ");
        if self.closed.is_some() {
            s.push_str(" → 終了");
        }
        s
    }
}

/// Group packages (in the order recorded) into threads: by the manifest's
/// thread ID, except that a package answering a known package joins that
/// package's thread (so a reply sealed with a fresh thread ID still lands
/// in its referral's thread). Keys are thread IDs; each thread keeps the
/// order recorded.
///
/// Only the thread's participants move it: a package this facility sent
/// joins the thread it names, but a received package joins an existing
/// thread only if its sender is already a counterpart there (a recipient
/// of this facility's packages in the thread, or the sender of one it
/// received). A package from any other facility that names the thread
/// (by thread ID or in-reply-to) cannot change its state: it stands as a
/// thread of its own, keyed by its envelope ID (64 hex digits, which no
/// thread or package ID can equal).
pub fn group(packages: Vec<ThreadPackage>) -> BTreeMap<String, Vec<ThreadPackage>> {
    let mut thread_of: HashMap<String, String> = HashMap::new();
    let mut participants: HashMap<String, Vec<String>> = HashMap::new();
    let mut out: BTreeMap<String, Vec<ThreadPackage>> = BTreeMap::new();
    for p in packages {
        let named = p
            .in_reply_to
            .as_ref()
            .and_then(|r| thread_of.get(r))
            .or_else(|| thread_of.get(&p.thread_id))
            .cloned();
        let key = match named {
            None => p.thread_id.clone(),
            Some(k)
                if p.direction == Direction::Sent
                    || p.counterparts.iter().any(|c| {
                        participants
                            .get(&k)
                            .is_some_and(|ps| ps.contains(&c.facility_id))
                    }) =>
            {
                k
            }
            Some(_) => p.envelope_id.clone(),
        };
        // First come, first kept: a later package cannot re-point an ID.
        thread_of.entry(p.package_id.clone()).or_insert(key.clone());
        thread_of.entry(p.thread_id.clone()).or_insert(key.clone());
        let ps = participants.entry(key.clone()).or_default();
        for c in &p.counterparts {
            if !ps.contains(&c.facility_id) {
                ps.push(c.facility_id.clone());
            }
        }
        out.entry(key).or_default().push(p);
    }
    out
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else if s.trim().lines().nth(1).is_some() {
        format!("{line}…")
    } else {
        line.to_string()
    }
}

fn patient_line(t: &Thread) -> String {
    match (&t.patient, &t.patient_kana) {
        (Some(n), Some(k)) => format!("{n}（{k}）"),
        (Some(n), None) => n.clone(),
        _ => "-".into(),
    }
}

fn open_label(t: &Thread) -> &'static str {
    if t.open {
        "open 継続中"
    } else {
        "closed 終了"
    }
}

/// The list of threads as text for the liaison office (Japanese labels
/// with English beside them).
pub fn format_list(threads: &[Thread]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if threads.is_empty() {
        out.push_str("紹介の経過はありません (no referral threads)\n");
        return out;
    }
    for t in threads {
        let _ = writeln!(
            out,
            "{}  {} / {}  [{}]",
            t.thread_id,
            t.status_ja,
            t.status,
            open_label(t)
        );
        let _ = writeln!(out, "    患者 patient   {}", patient_line(t));
        let _ = writeln!(
            out,
            "    相手 with      {}",
            t.counterparts
                .iter()
                .map(Counterpart::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(p) = t.purpose.as_deref().or(t.title.as_deref()) {
            let _ = writeln!(out, "    目的 purpose   {}", first_line(p, 40));
        }
        let _ = writeln!(out, "    経過 steps     {}", t.path());
        let _ = writeln!(
            out,
            "    更新 updated   {} (started {})",
            t.updated_at, t.started_at
        );
    }
    out
}

/// One thread's timeline as text: every package with its time, direction,
/// kind, counterpart and receipts.
pub fn format_timeline(t: &Thread) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "紹介の経過 thread {} — {} / {} [{}]",
        t.thread_id,
        t.status_ja,
        t.status,
        open_label(t)
    );
    let _ = writeln!(out, "患者 patient: {}", patient_line(t));
    if let Some(p) = &t.purpose {
        let _ = writeln!(out, "目的 purpose: {}", first_line(p, 60));
    }
    for (i, s) in t.steps.iter().enumerate() {
        let p = &s.package;
        let arrow = match p.direction {
            Direction::Sent => "→",
            Direction::Received => "←",
        };
        let _ = writeln!(
            out,
            "{:>2}. {}  {} {:<8}  {} {}  {} {}",
            i + 1,
            p.created_at,
            p.direction.japanese(),
            p.direction.as_str(),
            s.kind_ja,
            p.kind,
            arrow,
            p.counterparts
                .iter()
                .map(Counterpart::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut ids = format!(
            "      package {}, envelope {}",
            p.package_id,
            p.envelope_id.get(..16).unwrap_or(&p.envelope_id)
        );
        if let Some(r) = &p.in_reply_to {
            ids.push_str(&format!(", in reply to {r}"));
        }
        let _ = writeln!(out, "{ids}");
        match (&s.receipts, p.direction) {
            (_, Direction::Received) => {
                let _ = writeln!(
                    out,
                    "      {} received: verified here at {}; delivery receipt posted",
                    s.state_ja, p.recorded_at
                );
            }
            (Some(r), Direction::Sent) => {
                match (&r.accepted_at, r.accepted_log_index) {
                    (Some(at), Some(i)) => {
                        let _ = writeln!(
                            out,
                            "      中継 accepted by the relay at {at} (log index {i})"
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "      中継 accepted by the relay (receipt not fetched yet)"
                        );
                    }
                }
                for c in &p.counterparts {
                    match r.outcomes.iter().find(|o| o.recipient == c.facility_id) {
                        Some(o) => {
                            let reason = o
                                .reason
                                .as_ref()
                                .map(|x| format!(" ({x})"))
                                .unwrap_or_default();
                            let _ = writeln!(
                                out,
                                "      {} {} {}{reason} at {} (signed receipt, log index {})",
                                c.facility_id,
                                o.state.japanese(),
                                o.state.as_str(),
                                o.at,
                                o.log_index
                            );
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                "      {} no outcome yet (refresh with `renkei referrals --sync`)",
                                c.facility_id
                            );
                        }
                    }
                }
            }
            (None, Direction::Sent) => {}
        }
    }
    if let Some(c) = &t.closed {
        let note = c
            .note
            .as_ref()
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "終了 closed at {} by {}{note} (this facility's own bookkeeping)",
            c.closed_at, c.closed_by
        );
    }
    out
}

/// Which threads to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Threads not closed by this facility.
    Open,
    /// Threads this facility closed.
    Closed,
}

fn check_id(thread: &str) -> Result<String, ThreadError> {
    uuid::Uuid::try_parse(thread)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ThreadError::BadId(thread.chars().take(80).collect()))
}

const COLUMNS: &str = "package_id, direction, thread_id, in_reply_to, kind, counterparts, envelope_id, created_at, recorded_at, patient_name, patient_kana, title, purpose";

/// Copy packages recorded in `sent` / `received` but not yet in the
/// threads (a resubmission, or an interruption between the two writes).
const BACKFILL: &str = r#"
INSERT OR IGNORE INTO thread_packages (package_id, direction, thread_id, in_reply_to, kind, counterparts, envelope_id, created_at, recorded_at)
    SELECT * FROM (
        SELECT package_id, 'sent', thread_id, in_reply_to, kind,
               (SELECT json_group_array(json_object('facility_id', value, 'name', NULL))
                  FROM json_each('["' || replace(recipients, ',', '","') || '"]')),
               envelope_id, created_at, created_at AS at
        FROM sent
        UNION ALL
        SELECT package_id, 'received', thread_id, in_reply_to, kind,
               json_array(json_object('facility_id', sender, 'name', sender_name)),
               envelope_id, received_at, received_at AS at
        FROM received
        WHERE outcome = 'verified' AND package_id IS NOT NULL AND thread_id IS NOT NULL AND kind IS NOT NULL
    ) ORDER BY at;
"#;

/// Insert a thread package with any executor (the pool, or a transaction
/// that records the package's arrival at the same time).
pub(crate) async fn insert_thread_package<'e, E: sqlx::SqliteExecutor<'e>>(
    e: E,
    p: &ThreadPackage,
) -> Result<(), LocalStoreError> {
    sqlx::query(&format!(
        "INSERT OR IGNORE INTO thread_packages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&p.package_id)
    .bind(p.direction.as_str())
    .bind(&p.thread_id)
    .bind(&p.in_reply_to)
    .bind(p.kind.as_str())
    .bind(serde_json::to_string(&p.counterparts).expect("json"))
    .bind(&p.envelope_id)
    .bind(&p.created_at)
    .bind(&p.recorded_at)
    .bind(&p.doc.patient_name)
    .bind(&p.doc.patient_kana)
    .bind(&p.doc.title)
    .bind(&p.doc.purpose)
    .execute(e)
    .await?;
    Ok(())
}

impl LocalStore {
    /// Record a package sent or received in its thread (once: recording it
    /// again changes nothing).
    pub async fn add_thread_package(&self, p: &ThreadPackage) -> Result<(), LocalStoreError> {
        insert_thread_package(self.pool(), p).await
    }

    /// Every package recorded in a thread, in the order recorded (after
    /// copying over any sent or received package not recorded yet).
    pub async fn thread_packages(&self) -> Result<Vec<ThreadPackage>, LocalStoreError> {
        sqlx::raw_sql(BACKFILL).execute(self.pool()).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM thread_packages ORDER BY rowid"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(ThreadPackage {
                    package_id: r.get(0),
                    direction: Direction::parse(r.get::<&str, _>(1)),
                    thread_id: r.get(2),
                    in_reply_to: r.get(3),
                    // A kind this version does not know is skipped, not guessed.
                    kind: r.get::<&str, _>(4).parse().ok()?,
                    counterparts: serde_json::from_str(r.get::<&str, _>(5)).unwrap_or_default(),
                    envelope_id: r.get(6),
                    created_at: r.get(7),
                    recorded_at: r.get(8),
                    doc: DocFields {
                        patient_name: r.get(9),
                        patient_kana: r.get(10),
                        title: r.get(11),
                        purpose: r.get(12),
                    },
                })
            })
            .collect())
    }

    /// The threads this facility closed.
    pub async fn thread_closures(&self) -> Result<HashMap<String, Closure>, LocalStoreError> {
        let rows = sqlx::query("SELECT thread_id, closed_by, closed_at, note FROM thread_closures")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Closure {
                        closed_by: r.get(1),
                        closed_at: r.get(2),
                        note: r.get(3),
                    },
                )
            })
            .collect())
    }

    async fn receipts_of(
        &self,
        packages: &[ThreadPackage],
    ) -> Result<HashMap<String, Receipts>, LocalStoreError> {
        let mut out = HashMap::new();
        for p in packages.iter().filter(|p| p.direction == Direction::Sent) {
            let bundles = self.bundles(&p.envelope_id).await?;
            out.insert(
                p.envelope_id.clone(),
                Receipts::from_bundles(&p.envelope_id, &bundles),
            );
        }
        Ok(out)
    }

    /// Every thread, most recently updated first; only open or only
    /// closed ones with a filter.
    pub async fn threads(&self, filter: Option<StatusFilter>) -> Result<Vec<Thread>, ThreadError> {
        let packages = self.thread_packages().await?;
        let receipts = self.receipts_of(&packages).await?;
        let mut closures = self.thread_closures().await?;
        let mut out: Vec<Thread> = group(packages)
            .into_iter()
            .filter_map(|(id, ps)| {
                let closed = closures.remove(&id);
                Thread::derive(&id, ps, &receipts, closed)
            })
            .filter(|t| match filter {
                None => true,
                Some(StatusFilter::Open) => t.open,
                Some(StatusFilter::Closed) => !t.open,
            })
            .collect();
        out.sort_by(|a, b| (&b.updated_at, &b.thread_id).cmp(&(&a.updated_at, &a.thread_id)));
        Ok(out)
    }

    /// One thread, by its ID (or the ID of any package in it).
    pub async fn thread(&self, thread: &str) -> Result<Thread, ThreadError> {
        let id = check_id(thread)?;
        self.threads(None)
            .await?
            .into_iter()
            .find(|t| t.thread_id == id || t.steps.iter().any(|s| s.package.package_id == id))
            .ok_or(ThreadError::Unknown(id))
    }

    /// Close a thread (local bookkeeping of this facility: nothing is sent).
    pub async fn close_thread(
        &self,
        thread: &str,
        by: &str,
        note: Option<&str>,
    ) -> Result<Thread, ThreadError> {
        let t = self.thread(thread).await?;
        if let Some(c) = &t.closed {
            return Err(ThreadError::AlreadyClosed {
                thread: t.thread_id,
                at: c.closed_at.clone(),
                by: c.closed_by.clone(),
            });
        }
        sqlx::query(
            "INSERT INTO thread_closures (thread_id, closed_by, closed_at, note) VALUES (?, ?, ?, ?)",
        )
        .bind(&t.thread_id)
        .bind(by)
        .bind(crate::receipt::now_rfc3339())
        .bind(note)
        .execute(self.pool())
        .await?;
        self.thread(&t.thread_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "11111111-1111-4111-8111-111111111111";
    const REF: &str = T;
    const REPLY: &str = "22222222-2222-4222-8222-222222222222";
    const BACK: &str = "33333333-3333-4333-8333-333333333333";
    const CLINIC: &str = "1311234569";
    const HOSPITAL: &str = "1317654323";

    fn pkg(
        id: &str,
        dir: Direction,
        kind: PackageKind,
        reply_to: Option<&str>,
        at: &str,
        other: &str,
    ) -> ThreadPackage {
        ThreadPackage {
            package_id: id.into(),
            direction: dir,
            thread_id: T.into(),
            in_reply_to: reply_to.map(str::to_string),
            kind,
            counterparts: vec![Counterpart {
                facility_id: other.into(),
                name: None,
            }],
            envelope_id: format!("env-{id}"),
            created_at: at.into(),
            recorded_at: at.into(),
            doc: DocFields {
                patient_name: Some("山田 太郎".into()),
                patient_kana: None,
                title: Some("診療情報提供書".into()),
                purpose: (kind == PackageKind::Referral).then(|| "精査のお願い".into()),
            },
        }
    }

    fn delivered(env: &str, to: &str, idx: u64) -> (String, Receipts) {
        (
            env.into(),
            Receipts {
                accepted_at: Some("2026-05-12T01:00:00Z".into()),
                accepted_log_index: Some(idx - 1),
                outcomes: vec![RecipientOutcome {
                    recipient: to.into(),
                    state: StepState::Delivered,
                    reason: None,
                    at: "2026-05-12T02:00:00Z".into(),
                    log_index: idx,
                }],
            },
        )
    }

    #[test]
    fn clinic_view_follows_referral_reply_and_reverse_referral() {
        let referral = pkg(
            REF,
            Direction::Sent,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            HOSPITAL,
        );
        let mut receipts = HashMap::new();
        let t = Thread::derive(T, vec![referral.clone()], &receipts, None).unwrap();
        assert_eq!(t.status, ThreadStatus::Sent);
        assert_eq!(t.steps[0].state, StepState::Sent);
        receipts.extend([delivered(&format!("env-{REF}"), HOSPITAL, 2)]);
        let t = Thread::derive(T, vec![referral.clone()], &receipts, None).unwrap();
        assert_eq!(t.status, ThreadStatus::Delivered);
        assert_eq!(t.path(), "紹介 到達");
        let reply = pkg(
            REPLY,
            Direction::Received,
            PackageKind::Reply,
            Some(REF),
            "2026-05-26T01:00:00Z",
            HOSPITAL,
        );
        let back = pkg(
            BACK,
            Direction::Received,
            PackageKind::ReverseReferral,
            Some(REF),
            "2026-06-30T01:00:00Z",
            HOSPITAL,
        );
        let t = Thread::derive(
            T,
            vec![referral.clone(), reply.clone(), back.clone()],
            &receipts,
            None,
        )
        .unwrap();
        assert_eq!(t.status, ThreadStatus::ReferredBack);
        assert_eq!(t.status_ja, "逆紹介");
        assert!(t.open);
        assert_eq!(t.path(), "紹介 到達 → 返書 受領 → 逆紹介 受領");
        assert_eq!(t.patient.as_deref(), Some("山田 太郎"));
        assert_eq!(t.purpose.as_deref(), Some("精査のお願い"));
        assert_eq!(t.counterparts.len(), 1);
        assert_eq!(t.started_at, "2026-05-12T01:00:00Z");
        assert_eq!(t.updated_at, "2026-06-30T01:00:00Z");
        let closed = Closure {
            closed_by: CLINIC.into(),
            closed_at: "2026-07-01T00:00:00Z".into(),
            note: Some("逆紹介受領".into()),
        };
        let t = Thread::derive(T, vec![referral, reply, back], &receipts, Some(closed)).unwrap();
        assert_eq!(t.status, ThreadStatus::Closed);
        assert!(!t.open);
        assert!(t.path().ends_with("→ 終了"));
    }

    #[test]
    fn hospital_view_and_rejections() {
        let referral = pkg(
            REF,
            Direction::Received,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            CLINIC,
        );
        let reply = pkg(
            REPLY,
            Direction::Sent,
            PackageKind::Reply,
            Some(REF),
            "2026-05-26T01:00:00Z",
            CLINIC,
        );
        let t = Thread::derive(T, vec![referral.clone()], &HashMap::new(), None).unwrap();
        assert_eq!(t.status, ThreadStatus::Received);
        let t = Thread::derive(
            T,
            vec![referral.clone(), reply.clone()],
            &HashMap::new(),
            None,
        )
        .unwrap();
        assert_eq!(t.status, ThreadStatus::Replied);
        assert_eq!(t.path(), "紹介 受領 → 返書 送信");
        // The reply was rejected by the clinic: the thread says so.
        let mut r = HashMap::from([delivered(&format!("env-{REPLY}"), CLINIC, 5)]);
        r.get_mut(&format!("env-{REPLY}")).unwrap().outcomes[0].state = StepState::Rejected;
        let t = Thread::derive(T, vec![referral, reply], &r, None).unwrap();
        assert_eq!(t.status, ThreadStatus::Rejected);
        assert_eq!(t.steps[1].state_ja, "受取拒否");
        assert!(Thread::derive(T, vec![], &r, None).is_none());
    }

    #[test]
    fn a_delivery_to_one_of_two_recipients_is_not_delivered() {
        let mut p = pkg(
            REF,
            Direction::Sent,
            PackageKind::Transfer,
            None,
            "2026-05-12T01:00:00Z",
            HOSPITAL,
        );
        p.counterparts.push(Counterpart {
            facility_id: "1315555555".into(),
            name: None,
        });
        let r = HashMap::from([delivered(&format!("env-{REF}"), HOSPITAL, 3)]);
        let t = Thread::derive(T, vec![p], &r, None).unwrap();
        assert_eq!(t.steps[0].state, StepState::Sent);
        assert_eq!(t.status, ThreadStatus::Transferred);
    }

    #[test]
    fn grouping_follows_in_reply_to_across_thread_ids() {
        let a = pkg(
            REF,
            Direction::Sent,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            HOSPITAL,
        );
        let mut b = pkg(
            REPLY,
            Direction::Received,
            PackageKind::Reply,
            Some(REF),
            "2026-05-13T01:00:00Z",
            HOSPITAL,
        );
        b.thread_id = REPLY.into();
        let mut c = pkg(
            BACK,
            Direction::Sent,
            PackageKind::Referral,
            None,
            "2026-05-14T01:00:00Z",
            HOSPITAL,
        );
        c.thread_id = BACK.into();
        let g = group(vec![a, b, c]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[T].len(), 2);
        assert_eq!(g[BACK].len(), 1);
    }

    #[test]
    fn only_participants_change_a_thread() {
        const OTHER: &str = "1312222225";
        const STRANGER: &str = "44444444-4444-4444-8444-444444444444";
        let referral = pkg(
            REF,
            Direction::Sent,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            HOSPITAL,
        );
        // A facility that is not part of the thread answers the referral
        // with a discharge summary naming the thread.
        let stranger = pkg(
            STRANGER,
            Direction::Received,
            PackageKind::DischargeSummary,
            Some(REF),
            "2026-05-13T01:00:00Z",
            OTHER,
        );
        // The hospital, a participant, replies.
        let reply = pkg(
            REPLY,
            Direction::Received,
            PackageKind::Reply,
            Some(REF),
            "2026-05-14T01:00:00Z",
            HOSPITAL,
        );
        let g = group(vec![referral, stranger.clone(), reply]);
        assert_eq!(g.len(), 2, "{:?}", g.keys().collect::<Vec<_>>());
        let ids: Vec<&str> = g[T].iter().map(|p| p.package_id.as_str()).collect();
        assert_eq!(ids, vec![REF, REPLY]);
        assert_eq!(g[&stranger.envelope_id].len(), 1);
        let t = Thread::derive(T, g[T].clone(), &HashMap::new(), None).unwrap();
        assert_eq!(t.status, ThreadStatus::Replied);
        assert!(t.counterparts.iter().all(|c| c.facility_id == HOSPITAL));

        // A stranger whose package ID is the referral's cannot re-point
        // the replies that follow.
        let referral = pkg(
            REF,
            Direction::Sent,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            HOSPITAL,
        );
        let mut squatter = pkg(
            REF,
            Direction::Received,
            PackageKind::Transfer,
            None,
            "2026-05-13T01:00:00Z",
            OTHER,
        );
        squatter.envelope_id = "ab".repeat(32);
        let reply = pkg(
            REPLY,
            Direction::Received,
            PackageKind::Reply,
            Some(REF),
            "2026-05-14T01:00:00Z",
            HOSPITAL,
        );
        let g = group(vec![referral, squatter, reply]);
        let ids: Vec<&str> = g[T].iter().map(|p| p.package_id.as_str()).collect();
        assert_eq!(ids, vec![REF, REPLY]);
        assert_eq!(g[&"ab".repeat(32)][0].kind, PackageKind::Transfer);

        // This facility's own packages join the thread they name, and a
        // new addressee becomes a participant (a transfer, then its
        // discharge summary).
        let referral = pkg(
            REF,
            Direction::Received,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            CLINIC,
        );
        let transfer = pkg(
            BACK,
            Direction::Sent,
            PackageKind::Transfer,
            Some(REF),
            "2026-05-13T01:00:00Z",
            OTHER,
        );
        let summary = pkg(
            STRANGER,
            Direction::Received,
            PackageKind::DischargeSummary,
            Some(BACK),
            "2026-05-20T01:00:00Z",
            OTHER,
        );
        let g = group(vec![referral, transfer, summary]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[T].len(), 3);
    }

    #[test]
    fn thread_ids_are_uuids() {
        assert!(matches!(check_id("nope"), Err(ThreadError::BadId(_))));
        assert!(matches!(check_id(""), Err(ThreadError::BadId(_))));
        assert_eq!(check_id(&T.to_uppercase()).unwrap(), T);
        let e = check_id("1234").unwrap_err().to_string();
        assert!(e.contains("is not a thread ID"), "{e}");
    }

    #[test]
    fn doc_fields_of_an_invalid_document_are_empty() {
        assert_eq!(DocFields::from_document(b"{}"), DocFields::default());
        assert_eq!(DocFields::from_document(b"\xff"), DocFields::default());
    }

    #[tokio::test]
    async fn store_records_closes_and_rejects_unknown_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        let p = pkg(
            REF,
            Direction::Sent,
            PackageKind::Referral,
            None,
            "2026-05-12T01:00:00Z",
            HOSPITAL,
        );
        store.add_thread_package(&p).await.unwrap();
        store.add_thread_package(&p).await.unwrap();
        let list = store.threads(None).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].steps[0].package, p);
        assert_eq!(list[0].status, ThreadStatus::Sent);
        assert!(matches!(
            store.thread("33333333-3333-4333-8333-333333333333").await,
            Err(ThreadError::Unknown(_))
        ));
        assert!(matches!(
            store.thread("x").await,
            Err(ThreadError::BadId(_))
        ));
        let t = store
            .close_thread(T, CLINIC, Some("返書受領"))
            .await
            .unwrap();
        assert_eq!(t.status, ThreadStatus::Closed);
        assert_eq!(t.closed.as_ref().unwrap().note.as_deref(), Some("返書受領"));
        assert!(matches!(
            store.close_thread(T, CLINIC, None).await,
            Err(ThreadError::AlreadyClosed { .. })
        ));
        assert!(store
            .threads(Some(StatusFilter::Open))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .threads(Some(StatusFilter::Closed))
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
