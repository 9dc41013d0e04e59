//! Dates as Japanese letters write them: 西暦 with 和暦 beside it,
//! `2026年12月1日（令和8年12月1日）`, and ages (満年齢) for 別紙様式11.
//!
//! Eras begin on the day the proclamation took effect (明治 1868-10-23,
//! 大正 1912-07-30, 昭和 1926-12-25, 平成 1989-01-08, 令和 2019-05-01); the
//! first year of an era is 元年. Days before 明治 are written in 西暦 only.

use time::{Date, Month};

use super::form::parse_date;

/// The eras, newest first: name and first day.
const ERAS: [(&str, i32, Month, u8); 5] = [
    ("令和", 2019, Month::May, 1),
    ("平成", 1989, Month::January, 8),
    ("昭和", 1926, Month::December, 25),
    ("大正", 1912, Month::July, 30),
    ("明治", 1868, Month::October, 23),
];

/// The era and year of era of a day (`("令和", 8)` for 2026-12-01), or
/// `None` before 明治.
pub fn era(d: Date) -> Option<(&'static str, i32)> {
    ERAS.iter().find_map(|&(name, y, m, day)| {
        let start = Date::from_calendar_date(y, m, day).expect("era start is a valid date");
        (d >= start).then(|| (name, d.year() - y + 1))
    })
}

/// `令和8年12月1日`, `令和元年5月1日`; `None` before 明治.
pub fn wareki(d: Date) -> Option<String> {
    let (name, year) = era(d)?;
    let year = if year == 1 {
        "元".to_string()
    } else {
        year.to_string()
    };
    Some(format!(
        "{name}{year}年{}月{}日",
        u8::from(d.month()),
        d.day()
    ))
}

/// `2026年12月1日（令和8年12月1日）`; 西暦 only before 明治.
pub fn japanese(d: Date) -> String {
    let seireki = format!("{}年{}月{}日", d.year(), u8::from(d.month()), d.day());
    match wareki(d) {
        Some(w) => format!("{seireki}（{w}）"),
        None => seireki,
    }
}

/// A FHIR date or dateTime (`2026-12-01`, `2026-12-01T10:00:00+09:00`,
/// `2026-12`, `2026`) written the Japanese way: a full date as
/// [`japanese`], a month or year in 西暦 (`2026年12月`; which era a partial
/// date falls in can be ambiguous). `None` when it is not a date.
pub fn japanese_date(s: &str) -> Option<String> {
    let date = s.split('T').next().unwrap_or(s);
    if let Some(d) = parse_date(date) {
        return Some(japanese(d));
    }
    let mut parts = date.split('-');
    let year = parts.next().filter(|y| y.len() == 4)?.parse::<u16>().ok()?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(format!("{year}年")),
        (Some(m), None) if m.len() == 2 => {
            let m = m.parse::<u8>().ok().filter(|m| (1..=12).contains(m))?;
            Some(format!("{year}年{m}月"))
        }
        _ => None,
    }
}

/// 満年齢 on `on` of someone born on `birth` (the birthday counts from the
/// day itself); `None` when `on` is before `birth`.
pub fn age(birth: Date, on: Date) -> Option<u32> {
    if on < birth {
        return None;
    }
    let mut years = on.year() - birth.year();
    if (u8::from(on.month()), on.day()) < (u8::from(birth.month()), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn dates_carry_their_era() {
        assert_eq!(
            japanese(date!(2026 - 12 - 01)),
            "2026年12月1日（令和8年12月1日）"
        );
        assert_eq!(
            japanese(date!(2019 - 05 - 01)),
            "2019年5月1日（令和元年5月1日）"
        );
        assert_eq!(
            japanese(date!(2019 - 04 - 30)),
            "2019年4月30日（平成31年4月30日）"
        );
        assert_eq!(
            japanese(date!(1989 - 01 - 07)),
            "1989年1月7日（昭和64年1月7日）"
        );
        assert_eq!(
            japanese(date!(1989 - 01 - 08)),
            "1989年1月8日（平成元年1月8日）"
        );
        assert_eq!(
            japanese(date!(1926 - 12 - 25)),
            "1926年12月25日（昭和元年12月25日）"
        );
        assert_eq!(
            japanese(date!(1926 - 12 - 24)),
            "1926年12月24日（大正15年12月24日）"
        );
        assert_eq!(
            japanese(date!(1912 - 07 - 29)),
            "1912年7月29日（明治45年7月29日）"
        );
        assert_eq!(
            japanese(date!(1930 - 06 - 28)),
            "1930年6月28日（昭和5年6月28日）"
        );
        assert_eq!(japanese(date!(1868 - 10 - 22)), "1868年10月22日");
    }

    #[test]
    fn fhir_dates_and_date_times() {
        assert_eq!(
            japanese_date("2026-05-12T10:00:00+09:00").as_deref(),
            Some("2026年5月12日（令和8年5月12日）")
        );
        assert_eq!(japanese_date("2026-05").as_deref(), Some("2026年5月"));
        assert_eq!(japanese_date("2026").as_deref(), Some("2026年"));
        for bad in ["", "2026-13", "2026-02-30", "昭和5年", "26-01-01", "2026-1"] {
            assert_eq!(japanese_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn ages_count_from_the_birthday() {
        assert_eq!(age(date!(1954 - 03 - 18), date!(2026 - 03 - 17)), Some(71));
        assert_eq!(age(date!(1954 - 03 - 18), date!(2026 - 03 - 18)), Some(72));
        assert_eq!(age(date!(2000 - 02 - 29), date!(2001 - 02 - 28)), Some(0));
        assert_eq!(age(date!(2026 - 01 - 01), date!(2025 - 12 - 31)), None);
    }
}
