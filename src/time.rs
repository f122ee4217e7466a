//! ISO 8601 timestamps: rendered as JavaScript's `Date.prototype.toJSON`,
//! and read back from a date (`YYYY-MM-DD`, midnight UTC) or that same form.

use crate::model::TimestampMs;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds.
pub fn iso8601(ms: TimestampMs) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Reads `YYYY-MM-DD` (midnight UTC, as GitLab's `expires_at`) or
/// `YYYY-MM-DDTHH:MM:SS[.mmm]Z`; `None` for anything else, a date that does
/// not exist, or one before 1970.
pub fn parse_iso8601(s: &str) -> Option<TimestampMs> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(r)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let day_ms = days_from_civil(y as i64, m as u32, d as u32) as u64 * 86_400_000;
    let time_ms = match &b[10..] {
        [] => 0,
        [b'T', rest @ ..] => {
            let (hms, millis) = match rest {
                [.., b'Z'] if rest.len() == 9 => (&rest[..8], 0),
                [.., b'Z'] if rest.len() == 13 && rest[8] == b'.' => (&rest[..8], num(20..23)?),
                _ => return None,
            };
            if hms[2] != b':' || hms[5] != b':' {
                return None;
            }
            let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
            if h > 23 || mi > 59 || sec > 59 {
                return None;
            }
            ((h * 60 + mi) * 60 + sec) * 1000 + millis
        }
        _ => return None,
    };
    Some(day_ms + time_ms)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_javascript() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_234_567_890_123), "2009-02-13T23:31:30.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(20_000_000_000_000), "2603-10-11T11:33:20.000Z");
    }

    #[test]
    fn parses_what_it_renders_and_plain_dates() {
        for ms in [0, 1_234_567_890_123, 951_782_400_000, 20_000_000_000_000] {
            assert_eq!(parse_iso8601(&iso8601(ms)), Some(ms));
        }
        assert_eq!(
            parse_iso8601("2009-02-13T23:31:30Z"),
            Some(1_234_567_890_000)
        );
        assert_eq!(parse_iso8601("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "",
            "2000-02-30",
            "1900-02-29",
            "2001-02-29",
            "1969-12-31",
            "2000-13-01",
            "2000-00-10",
            "2000-1-01",
            "2000-01-01T",
            "2000-01-01T24:00:00Z",
            "2000-01-01T10:00:00",
            "2000-01-01T10:00:00+01:00",
            "2000-01-01T10:00:00.5Z",
            "2000-01-01 10:00:00Z",
            "+2000-01-01",
            "２000-01-01",
            "2000-01-01T10:60:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
