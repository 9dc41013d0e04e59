//! 統計: per month, the referrals, replies, reverse referrals, transfers
//! and discharge summaries this facility sent and received through renkei,
//! by counterpart facility, with CSV export; and 紹介率 / 逆紹介率 from
//! counts renkei cannot know (初診患者数, referrals by FAX or paper),
//! entered by hand on the page and never stored.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::Authed;
use super::pages::{download, html, PageError};
use super::view::{self, Chrome};
use super::DeskState;
use crate::client::threads::{Direction, ThreadPackage};
use crate::package::PackageKind;

/// The kinds counted, in column order.
const KINDS: [(PackageKind, &str); 5] = [
    (PackageKind::Referral, "紹介"),
    (PackageKind::Reply, "返書"),
    (PackageKind::ReverseReferral, "逆紹介"),
    (PackageKind::Transfer, "転院依頼"),
    (PackageKind::DischargeSummary, "退院時サマリー"),
];

#[derive(Deserialize, Default)]
pub(crate) struct Period {
    /// First month, `YYYY-MM`.
    from: Option<String>,
    /// Last month, `YYYY-MM`.
    to: Option<String>,
    /// 初診患者数 for the period (by hand).
    first_visits: Option<String>,
    /// Referrals received outside renkei (FAX, paper), by hand.
    other_referrals: Option<String>,
    /// Reverse referrals sent outside renkei, by hand.
    other_reverse: Option<String>,
}

fn month_of(rfc3339: &str) -> Option<String> {
    let t = OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    let t = t.to_offset(view::jst());
    Some(format!("{:04}-{:02}", t.year(), u8::from(t.month())))
}

fn valid_month(s: &str) -> bool {
    s.len() == 7
        && s.as_bytes()[4] == b'-'
        && s[..4].parse::<u16>().is_ok()
        && s[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
}

fn number(s: &Option<String>) -> Option<u64> {
    s.as_deref().and_then(|t| t.trim().parse().ok())
}

/// Counts: (month, direction, kind, counterpart) → packages.
type Counts = BTreeMap<(String, &'static str, &'static str, String), u64>;

fn count(packages: &[ThreadPackage], from: &str, to: &str) -> (Counts, BTreeMap<String, String>) {
    let mut counts = Counts::new();
    let mut names = BTreeMap::new();
    for p in packages {
        let Some(month) = month_of(&p.recorded_at) else {
            continue;
        };
        if month.as_str() < from || month.as_str() > to {
            continue;
        }
        let dir = match p.direction {
            Direction::Sent => "送信",
            Direction::Received => "受信",
        };
        for c in &p.counterparts {
            if let Some(n) = &c.name {
                names.insert(c.facility_id.clone(), n.clone());
            }
            *counts
                .entry((month.clone(), dir, p.kind.as_str(), c.facility_id.clone()))
                .or_default() += 1;
        }
    }
    (counts, names)
}

struct MonthRow {
    month: String,
    cells: Vec<u64>,
}

struct CounterpartRow {
    name: String,
    cells: Vec<u64>,
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    c: Chrome,
    from: String,
    to: String,
    headers: Vec<String>,
    months: Vec<MonthRow>,
    counterparts: Vec<CounterpartRow>,
    first_visits: String,
    other_referrals: String,
    other_reverse: String,
    referrals_in: u64,
    reverse_out: u64,
    referral_rate: Option<String>,
    reverse_rate: Option<String>,
    csv_href: String,
}

/// The period asked for, or the last twelve months.
fn period(q: &Period) -> (String, String) {
    let now = OffsetDateTime::now_utc().to_offset(view::jst());
    let to =
        q.to.clone()
            .filter(|m| valid_month(m))
            .unwrap_or_else(|| format!("{:04}-{:02}", now.year(), u8::from(now.month())));
    let from = q
        .from
        .clone()
        .filter(|m| valid_month(m))
        .unwrap_or_else(|| {
            let (y, m) = (now.year(), u8::from(now.month()) as i32);
            let (y, m) = if m == 12 { (y, 1) } else { (y - 1, m + 1) };
            format!("{y:04}-{m:02}")
        });
    (from, to)
}

fn columns() -> Vec<(&'static str, PackageKind, String)> {
    KINDS
        .iter()
        .flat_map(|(k, label)| {
            ["受信", "送信"]
                .into_iter()
                .map(move |d| (d, *k, format!("{label}{d}")))
        })
        .collect()
}

/// `GET /stats`.
pub(crate) async fn page(
    State(desk): State<DeskState>,
    Extension(authed): Extension<Authed>,
    Query(q): Query<Period>,
) -> Result<Response, PageError> {
    let (from, to) = period(&q);
    let packages = desk.store().thread_packages().await?;
    let (counts, names) = count(&packages, &from, &to);
    let cols = columns();
    let mut months: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for ((month, dir, kind, who), n) in &counts {
        let i = cols
            .iter()
            .position(|(d, k, _)| d == dir && k.as_str() == *kind)
            .expect("every counted kind has a column");
        months.entry(month.clone()).or_insert(vec![0; cols.len()])[i] += n;
        per.entry(who.clone()).or_insert(vec![0; cols.len()])[i] += n;
    }
    let col = |d: &str, k: PackageKind| {
        cols.iter()
            .position(|(cd, ck, _)| *cd == d && *ck == k)
            .expect("column")
    };
    let referrals_in: u64 = months
        .values()
        .map(|c| c[col("受信", PackageKind::Referral)])
        .sum();
    let reverse_out: u64 = months
        .values()
        .map(|c| c[col("送信", PackageKind::ReverseReferral)])
        .sum();
    let first = number(&q.first_visits).filter(|n| *n > 0);
    let rate = |n: u64| first.map(|f| format!("{:.1}%", n as f64 * 100.0 / f as f64));
    let referral_rate = rate(referrals_in + number(&q.other_referrals).unwrap_or(0));
    let reverse_rate = rate(reverse_out + number(&q.other_reverse).unwrap_or(0));
    let c = Chrome::new(&desk, &authed, "/stats", "統計").await;
    html(StatsPage {
        c,
        csv_href: format!("/stats.csv?from={from}&to={to}"),
        headers: cols.into_iter().map(|(_, _, h)| h).collect(),
        months: months
            .into_iter()
            .map(|(month, cells)| MonthRow { month, cells })
            .collect(),
        counterparts: per
            .into_iter()
            .map(|(id, cells)| CounterpartRow {
                name: match names.get(&id) {
                    Some(n) => format!("{n}（{id}）"),
                    None => id,
                },
                cells,
            })
            .collect(),
        from,
        to,
        first_visits: q.first_visits.clone().unwrap_or_default(),
        other_referrals: q.other_referrals.clone().unwrap_or_default(),
        other_reverse: q.other_reverse.clone().unwrap_or_default(),
        referrals_in,
        reverse_out,
        referral_rate,
        reverse_rate,
    })
}

/// A CSV field, quoted when needed.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `GET /stats.csv`: month, direction, kind, counterpart, count (UTF-8
/// with a BOM, so spreadsheet programs read the Japanese).
pub(crate) async fn csv(
    State(desk): State<DeskState>,
    Query(q): Query<Period>,
) -> Result<Response, PageError> {
    let (from, to) = period(&q);
    let packages = desk.store().thread_packages().await?;
    let (counts, names) = count(&packages, &from, &to);
    let mut out =
        String::from("\u{feff}month,direction,kind,kind_ja,facility_id,facility_name,count\r\n");
    for ((month, dir, kind, who), n) in counts {
        let label = KINDS
            .iter()
            .find(|(k, _)| k.as_str() == kind)
            .map(|(_, l)| *l)
            .unwrap_or("その他");
        out.push_str(&format!(
            "{month},{},{},{},{},{},{n}\r\n",
            if dir == "送信" { "sent" } else { "received" },
            kind,
            field(label),
            field(&who),
            field(names.get(&who).map(String::as_str).unwrap_or("")),
        ));
    }
    Ok(download(
        &format!("renkei-stats-{from}-{to}.csv"),
        out.into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_counted_in_japan_time() {
        assert_eq!(month_of("2026-11-30T15:30:00Z").as_deref(), Some("2026-12"));
        assert_eq!(month_of("2026-11-30T14:59:00Z").as_deref(), Some("2026-11"));
        assert!(valid_month("2026-12") && !valid_month("2026-13") && !valid_month("2026/12"));
        assert_eq!(field("a,b"), "\"a,b\"");
    }
}
