//! Weekly availability windows in a mentor's own time zone (SPEC §3).
//!
//! A booking fits when it lies wholly inside one window on the local calendar
//! day it starts. Instants are converted with the IANA rules of the mentor's
//! zone, so a window of 09:00-17:00 means local wall-clock time on every day,
//! whatever the UTC offset is that day (DST changes included).

use chrono::{DateTime, Datelike, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Error, Result};

/// Minutes in a day; a window may end at 24:00.
pub(crate) const DAY_MINUTES: u16 = 24 * 60;

/// One weekly window, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// ISO weekday, 1 = Monday … 7 = Sunday.
    pub day_of_week: u8,
    /// Minutes after local midnight, 0..1440.
    pub start_minute: u16,
    /// Minutes after local midnight, start_minute+1..=1440.
    pub end_minute: u16,
}

impl Window {
    /// Builds a window from a day and two "HH:MM" strings; `field` prefixes violations.
    pub fn parse(field: &str, day_of_week: i32, start: &str, end: &str) -> Result<Window> {
        if !(1..=7).contains(&day_of_week) {
            return Err(Error::invalid(
                format!("{field}.day_of_week"),
                "must be a day of the week (MONDAY to SUNDAY)",
            ));
        }
        let start_minute = parse_hhmm(&format!("{field}.start_local_time"), start, false)?;
        let end_minute = parse_hhmm(&format!("{field}.end_local_time"), end, true)?;
        if start_minute >= end_minute {
            return Err(Error::invalid(
                format!("{field}.end_local_time"),
                "must be after start_local_time",
            ));
        }
        Ok(Window {
            day_of_week: day_of_week as u8,
            start_minute,
            end_minute,
        })
    }

    /// "HH:MM" form of a minute of the day.
    pub fn format_minute(minute: u16) -> String {
        format!("{:02}:{:02}", minute / 60, minute % 60)
    }
}

fn parse_hhmm(field: &str, raw: &str, allow_24: bool) -> Result<u16> {
    let bad = || Error::invalid(field, format!("must be HH:MM, got {:?}", super::input::truncate(raw)));
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    let minute = h * 60 + m;
    if m >= 60 || minute > DAY_MINUTES || (minute == DAY_MINUTES && !allow_24) {
        return Err(bad());
    }
    Ok(minute)
}

/// Most weekly windows a mentor may have.
pub(crate) const MAX_WINDOWS: usize = 100;

/// Checks that no two windows of the same day overlap; `field` names the
/// list (e.g. "mentor.availability") in violations.
pub(crate) fn check_no_overlap(field: &str, windows: &[Window]) -> Result<()> {
    let mut v = super::Violations::new();
    for (i, a) in windows.iter().enumerate() {
        let overlaps = windows[..i]
            .iter()
            .any(|b| a.day_of_week == b.day_of_week && a.start_minute < b.end_minute && b.start_minute < a.end_minute);
        if overlaps {
            v.add(format!("{field}[{i}]"), "overlaps another window of the same day");
        }
    }
    v.finish()
}

/// Parses an IANA time zone name.
pub(crate) fn parse_timezone(field: &str, raw: &str) -> Result<Tz> {
    raw.parse::<Tz>().map_err(|_| {
        Error::invalid(
            field,
            format!("must be an IANA time zone name, got {:?}", super::input::truncate(raw)),
        )
    })
}

/// Whether `[start, end)` lies inside one of `windows` in zone `tz`, in
/// wall-clock time: every instant of the booking reads, on the mentor's
/// clock, a time inside one window of the local day it starts. Across a DST
/// change the booking is checked on each side of it, so an hour that the
/// clocks repeat (autumn) is not squeezed into a shorter window, and the
/// local end always follows the local start. With no windows the mentor is
/// always available.
pub(crate) fn fits(windows: &[Window], tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    if windows.is_empty() {
        return true;
    }
    if end <= start {
        return false;
    }
    let day = start.with_timezone(&tz).date_naive();
    let weekday = day.weekday().number_from_monday() as u8;
    let Some(midnight) = day.and_hms_opt(0, 0, 0) else {
        return false;
    };
    // Wall-clock seconds after the start day's local midnight, each piece
    // read with the one UTC offset it has throughout.
    let mut walls = Vec::with_capacity(2);
    for (from, to, offset) in pieces(tz, start, end) {
        let wall = |at: DateTime<Utc>| (at.naive_utc() + offset - midnight).num_seconds();
        walls.push((wall(from), wall(to)));
    }
    // The local end follows the local start, on the clock: an hour the
    // clocks repeat never lets a booking end "before" it began.
    let (Some(&(first, _)), Some(&(_, last))) = (walls.first(), walls.last()) else {
        return false;
    };
    if last <= first {
        return false;
    }
    windows.iter().any(|w| {
        let (open, close) = (i64::from(w.start_minute) * 60, i64::from(w.end_minute) * 60);
        w.day_of_week == weekday && walls.iter().all(|&(a, b)| open <= a && a < b && b <= close)
    })
}

/// Whether a mentor with these windows is available at the instant `at`:
/// its own clock then reads a time inside one of its windows (DST-correct,
/// as [`fits`] is). No windows: always.
pub(crate) fn open_at(windows: &[Window], tz: Tz, at: DateTime<Utc>) -> bool {
    fits(windows, tz, at, at + chrono::Duration::seconds(1))
}

/// `[start, end)` cut at each change of `tz`'s UTC offset, with the offset
/// of each piece.
fn pieces(tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>, chrono::Duration)> {
    let offset = |at: DateTime<Utc>| {
        chrono::Duration::seconds(i64::from(
            tz.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc(),
        ))
    };
    let mut out = Vec::with_capacity(2);
    let mut from = start;
    // Offsets change at most a few times a year; a booking is hours long.
    while from < end && out.len() < 8 {
        let here = offset(from);
        if offset(end) == here && offset(end - chrono::Duration::seconds(1)) == here {
            out.push((from, end, here));
            break;
        }
        // The first second with another offset, by bisection: offsets are
        // constant between changes, which fall on whole seconds.
        let (mut lo, mut hi) = (from, end);
        while hi - lo > chrono::Duration::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if offset(mid) == here { lo = mid } else { hi = mid }
        }
        let change = if offset(lo) == here { hi } else { lo };
        out.push((from, change, here));
        from = change;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn nine_to_five(day: u8) -> Window {
        Window {
            day_of_week: day,
            start_minute: 9 * 60,
            end_minute: 17 * 60,
        }
    }

    /// Found by the fuzz test: an error quoting a 6,000-character zone
    /// overflowed the response's headers, and the client saw INTERNAL.
    #[test]
    fn errors_quote_only_the_start_of_raw_input() {
        let long = "x".repeat(6000);
        let zone = parse_timezone("tz", &long).unwrap_err().to_string();
        let time = Window::parse("w", 1, &long, "10:00").unwrap_err().to_string();
        assert!(zone.len() < 200 && time.len() < 200, "{zone} / {time}");
    }

    #[test]
    fn parses_windows() {
        let w = Window::parse("w", 1, "09:00", "24:00").unwrap();
        assert_eq!((w.start_minute, w.end_minute), (540, 1440));
        assert!(Window::parse("w", 1, "24:00", "24:00").is_err());
        assert!(Window::parse("w", 1, "10:00", "09:00").is_err());
        assert!(Window::parse("w", 0, "09:00", "10:00").is_err());
        assert!(Window::parse("w", 1, "9:00", "10:00").is_err());
        assert!(Window::parse("w", 1, "09:60", "10:00").is_err());
    }

    #[test]
    fn windows_of_one_day_must_not_overlap() {
        let at = |day, start, end| Window {
            day_of_week: day,
            start_minute: start,
            end_minute: end,
        };
        assert!(check_no_overlap("w", &[at(1, 540, 720), at(1, 720, 1020), at(2, 600, 700)]).is_ok());
        let err = check_no_overlap("w", &[at(1, 540, 720), at(2, 540, 720), at(1, 700, 800)]).unwrap_err();
        assert!(err.to_string().contains("w[2]"), "{err}");
    }

    #[test]
    fn local_time_follows_dst_in_berlin() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Sunday 2026-03-29 clocks go forward; Monday 2026-03-30 is CEST (UTC+2).
        let monday = [nine_to_five(1)];
        // 09:00-10:00 CEST = 07:00-08:00 UTC: inside.
        assert!(fits(&monday, tz, utc(2026, 3, 30, 7, 0), utc(2026, 3, 30, 8, 0)));
        // 08:00 UTC is 10:00 CEST but a week earlier (CET) 08:00 UTC was 09:00 local.
        assert!(fits(&monday, tz, utc(2026, 3, 23, 8, 0), utc(2026, 3, 23, 9, 0)));
        // 07:00 UTC on the CET Monday is 08:00 local: outside.
        assert!(!fits(&monday, tz, utc(2026, 3, 23, 7, 0), utc(2026, 3, 23, 8, 0)));
    }

    fn sunday(start: &str, end: &str) -> [Window; 1] {
        [Window::parse("w", 7, start, end).unwrap()]
    }

    #[test]
    fn autumn_repeats_an_hour_that_no_booking_may_squeeze_into_a_shorter_window() {
        // Berlin, Sunday 2027-10-31: at 01:00 UTC 03:00 CEST becomes 02:00 CET.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let half_hour = sunday("02:00", "02:30");
        // 60 minutes from 02:00 CEST to 02:00 CET: the reported bug.
        assert!(!fits(
            &half_hour,
            berlin,
            utc(2027, 10, 31, 0, 0),
            utc(2027, 10, 31, 1, 0)
        ));
        // 02:00 CEST to 02:30 CET (90 minutes) reads inside at both ends only.
        assert!(!fits(
            &half_hour,
            berlin,
            utc(2027, 10, 31, 0, 0),
            utc(2027, 10, 31, 1, 30)
        ));
        // Each 02:00-02:30 fits: the first (CEST) and the repeated one (CET).
        assert!(fits(
            &half_hour,
            berlin,
            utc(2027, 10, 31, 0, 0),
            utc(2027, 10, 31, 0, 30)
        ));
        assert!(fits(
            &half_hour,
            berlin,
            utc(2027, 10, 31, 1, 0),
            utc(2027, 10, 31, 1, 30)
        ));
        // Across the change inside a wide window: 02:30 CEST to 02:45 CET
        // fits; 02:30 CEST to 02:30 CET, or to 02:15 CET, ends on the clock
        // no later than it began, and does not.
        let wide = sunday("02:00", "03:00");
        assert!(fits(&wide, berlin, utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1, 45)));
        assert!(!fits(&wide, berlin, utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1, 30)));
        assert!(!fits(&wide, berlin, utc(2027, 10, 31, 0, 45), utc(2027, 10, 31, 1, 15)));

        // New York, Sunday 2027-11-07: at 06:00 UTC 02:00 EDT becomes 01:00 EST.
        let new_york: Tz = "America/New_York".parse().unwrap();
        let half_hour = sunday("01:00", "01:30");
        assert!(!fits(
            &half_hour,
            new_york,
            utc(2027, 11, 7, 5, 0),
            utc(2027, 11, 7, 6, 0)
        ));
        assert!(fits(
            &half_hour,
            new_york,
            utc(2027, 11, 7, 5, 0),
            utc(2027, 11, 7, 5, 30)
        ));
        assert!(fits(
            &half_hour,
            new_york,
            utc(2027, 11, 7, 6, 0),
            utc(2027, 11, 7, 6, 30)
        ));
    }

    #[test]
    fn a_mentor_is_open_at_an_instant_by_its_own_clock_across_dst() {
        // New York, Sunday 2027-03-14: at 07:00 UTC 02:00 EST becomes 03:00 EDT.
        let new_york: Tz = "America/New_York".parse().unwrap();
        let windows = sunday("01:00", "03:30");
        assert!(open_at(&windows, new_york, utc(2027, 3, 14, 6, 30)), "01:30 EST");
        assert!(open_at(&windows, new_york, utc(2027, 3, 14, 7, 15)), "03:15 EDT");
        // 07:45 UTC is 03:45 EDT: closed, though a fixed EST offset reads 02:45.
        assert!(!open_at(&windows, new_york, utc(2027, 3, 14, 7, 45)));
        // The Sunday before, 07:45 UTC is 02:45 EST: open.
        assert!(open_at(&windows, new_york, utc(2027, 3, 7, 7, 45)));
        assert!(!open_at(&windows, new_york, utc(2027, 3, 15, 6, 30)), "Monday");
        assert!(open_at(&[], new_york, utc(2027, 3, 15, 6, 30)), "no windows: always");
    }

    #[test]
    fn spring_skips_an_hour_and_the_booking_must_fit_on_both_sides() {
        // Berlin, Sunday 2027-03-28: at 01:00 UTC 02:00 CET becomes 03:00 CEST.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 01:30 CET to 03:30 CEST is one real hour.
        let (from, to) = (utc(2027, 3, 28, 0, 30), utc(2027, 3, 28, 1, 30));
        assert!(fits(&sunday("01:00", "03:30"), berlin, from, to));
        assert!(!fits(&sunday("01:00", "03:00"), berlin, from, to));
        assert!(!fits(&sunday("02:30", "04:00"), berlin, from, to));

        // New York, Sunday 2027-03-14: at 07:00 UTC 02:00 EST becomes 03:00 EDT.
        let new_york: Tz = "America/New_York".parse().unwrap();
        let (from, to) = (utc(2027, 3, 14, 6, 30), utc(2027, 3, 14, 7, 15));
        assert!(fits(&sunday("01:00", "03:15"), new_york, from, to));
        assert!(!fits(&sunday("01:00", "03:00"), new_york, from, to));
        // After the change the usual mapping holds: 09:00-10:00 EDT.
        assert!(fits(
            &sunday("09:00", "10:00"),
            new_york,
            utc(2027, 3, 14, 13, 0),
            utc(2027, 3, 14, 14, 0)
        ));
    }

    #[test]
    fn booking_must_not_spill_over_the_window_or_the_day() {
        let tz: Tz = "UTC".parse().unwrap();
        let monday = [nine_to_five(1)];
        // 2026-11-23 is a Monday.
        assert!(fits(&monday, tz, utc(2026, 11, 23, 16, 0), utc(2026, 11, 23, 17, 0)));
        assert!(!fits(&monday, tz, utc(2026, 11, 23, 16, 30), utc(2026, 11, 23, 17, 30)));
        assert!(!fits(&monday, tz, utc(2026, 11, 24, 9, 0), utc(2026, 11, 24, 10, 0)));
        let late = [Window {
            day_of_week: 1,
            start_minute: 23 * 60,
            end_minute: DAY_MINUTES,
        }];
        assert!(fits(&late, tz, utc(2026, 11, 23, 23, 0), utc(2026, 11, 24, 0, 0)));
        assert!(!fits(&late, tz, utc(2026, 11, 23, 23, 0), utc(2026, 11, 24, 0, 30)));
    }

    #[test]
    fn no_windows_means_always_available() {
        let tz: Tz = "UTC".parse().unwrap();
        assert!(fits(&[], tz, utc(2026, 1, 1, 3, 0), utc(2026, 1, 1, 4, 0)));
    }
}
