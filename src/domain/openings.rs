//! Openings: the times a mentor can still be booked (SPEC §3,
//! ListAvailableSlots; the API calls them "available slots").
//!
//! An opening is a start/end pair that CreateBooking would accept now and
//! AcceptBooking would then accept: it lies inside one of the mentor's
//! weekly windows (checked with [`availability::fits`], the very test
//! CreateBooking applies, so the two cannot disagree across DST changes),
//! overlaps no ACCEPTED booking, and starts no earlier than the minimum
//! notice. Candidates start at each window's local opening time and follow
//! every `step` of real time; a mentor without windows is treated, for the
//! candidates only, as open from local midnight to midnight every day.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::availability::{self, DAY_MINUTES, Window};

/// The longest range one call may ask about.
pub(crate) const MAX_RANGE_DAYS: i64 = 31;

/// The shortest and longest step between two candidate starts.
pub(crate) const MIN_STEP_MINUTES: i64 = 1;
pub(crate) const MAX_STEP_MINUTES: i64 = 24 * 60;

/// Everything the openings of one mentor over one range depend on.
pub(crate) struct Calendar<'a> {
    /// The mentor's weekly windows (none: always available).
    pub windows: &'a [Window],
    /// The mentor's zone, in which the windows are read.
    pub tz: Tz,
    /// Times already taken (ACCEPTED bookings), in any order.
    pub taken: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// What is asked: openings of `length` whose start lies in `[from, to)`,
/// starting at or after `earliest` (now plus the minimum notice) and after
/// `after` (the last one of the previous page), at most `limit` of them.
pub(crate) struct Ask {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub length: Duration,
    pub step: Duration,
    pub earliest: DateTime<Utc>,
    pub after: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// The openings, in start order, at most `ask.limit` of them.
pub(crate) fn openings(calendar: &Calendar<'_>, ask: &Ask) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut busy = calendar.taken.clone();
    busy.sort();
    let lower = [
        Some(ask.from),
        Some(ask.earliest),
        ask.after.map(|a| a + Duration::microseconds(1)),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(ask.from);
    if lower >= ask.to || ask.step <= Duration::zero() || ask.length <= Duration::zero() {
        return Vec::new();
    }
    let always = all_week();
    let windows = if calendar.windows.is_empty() {
        &always[..]
    } else {
        calendar.windows
    };
    let mut found = Vec::new();
    // Local days that may hold a candidate in range: a day before and after,
    // for zones far from UTC.
    let first = ask.from.with_timezone(&calendar.tz).date_naive() - Duration::days(1);
    let last = ask.to.with_timezone(&calendar.tz).date_naive() + Duration::days(1);
    for day in first.iter_days().take_while(|d| *d <= last) {
        let weekday = day.weekday().number_from_monday() as u8;
        for w in windows.iter().filter(|w| w.day_of_week == weekday) {
            let (Some(open), Some(close)) = (
                instant(calendar.tz, day, w.start_minute),
                instant(calendar.tz, day, w.end_minute),
            ) else {
                continue;
            };
            let mut start = open;
            while start + ask.length <= close && start < ask.to {
                let end = start + ask.length;
                if start >= lower
                    && availability::fits(calendar.windows, calendar.tz, start, end)
                    && !overlaps(&busy, start, end)
                {
                    found.push((start, end));
                }
                start += ask.step;
            }
        }
    }
    found.sort();
    found.dedup();
    found.truncate(ask.limit);
    found
}

/// Whether `[start, end)` overlaps any of the sorted `busy` intervals.
fn overlaps(busy: &[(DateTime<Utc>, DateTime<Utc>)], start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    // The first interval that ends after `start`, among those that start before `end`.
    let before_end = busy.partition_point(|(s, _)| *s < end);
    busy[..before_end].iter().any(|(_, e)| *e > start)
}

/// The first instant at which the clock in `tz` reads `minute` on `day`
/// (24:00 is the next day's midnight). A time the clocks skip (spring)
/// resolves to the first minute after it that exists; a time they repeat
/// (autumn) to its first occurrence.
fn instant(tz: Tz, day: NaiveDate, minute: u16) -> Option<DateTime<Utc>> {
    let midnight: NaiveDateTime = day.and_hms_opt(0, 0, 0)?;
    let wall = midnight + Duration::minutes(i64::from(minute));
    // Offsets jump by at most a few hours.
    (0..=180).find_map(|skip| {
        tz.from_local_datetime(&(wall + Duration::minutes(skip)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// Midnight to midnight on every day: the candidates of a mentor without windows.
fn all_week() -> Vec<Window> {
    (1..=7)
        .map(|day_of_week| Window {
            day_of_week,
            start_minute: 0,
            end_minute: DAY_MINUTES,
        })
        .collect()
}

/// `t` on the clock of `tz`, RFC 3339 with that zone's offset then.
pub(crate) fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn ask(from: DateTime<Utc>, to: DateTime<Utc>, minutes: i64) -> Ask {
        Ask {
            from,
            to,
            length: Duration::minutes(minutes),
            step: Duration::minutes(minutes),
            earliest: from,
            after: None,
            limit: 1000,
        }
    }

    #[test]
    fn openings_fill_the_windows_on_the_local_clock_across_dst() {
        // New York, Sunday 01:00-04:00; clocks go forward on 2027-03-14 at 02:00.
        let tz: Tz = "America/New_York".parse().unwrap();
        let windows = [Window::parse("w", 7, "01:00", "04:00").unwrap()];
        let calendar = Calendar {
            windows: &windows,
            tz,
            taken: vec![],
        };
        // The Sunday before: three hours of EST (06:00Z-09:00Z), six half hours.
        let before = openings(&calendar, &ask(utc(2027, 3, 7, 0, 0), utc(2027, 3, 8, 0, 0), 30));
        assert_eq!(before.len(), 6);
        assert_eq!(before[0].0, utc(2027, 3, 7, 6, 0));
        // The change day: 01:00 EST is 06:00Z, 04:00 EDT is 08:00Z; two real hours.
        let change = openings(&calendar, &ask(utc(2027, 3, 14, 0, 0), utc(2027, 3, 15, 0, 0), 30));
        assert_eq!(change.first().unwrap().0, utc(2027, 3, 14, 6, 0));
        assert_eq!(change.last().unwrap().1, utc(2027, 3, 14, 8, 0));
        assert_eq!(change.len(), 4);
        for (s, e) in change {
            assert!(availability::fits(&windows, tz, s, e));
        }
    }

    #[test]
    fn busy_times_notice_and_paging_remove_candidates() {
        let tz: Tz = "UTC".parse().unwrap();
        let windows = [Window::parse("w", 1, "09:00", "12:00").unwrap()];
        // Monday 2027-03-15.
        let busy = vec![(utc(2027, 3, 15, 10, 0), utc(2027, 3, 15, 10, 30))];
        let calendar = Calendar {
            windows: &windows,
            tz,
            taken: busy,
        };
        let mut q = ask(utc(2027, 3, 15, 0, 0), utc(2027, 3, 16, 0, 0), 60);
        q.step = Duration::minutes(30);
        let starts: Vec<_> = openings(&calendar, &q).into_iter().map(|(s, _)| s).collect();
        // 09:00-10:00 ends as the taken time begins; 09:30 and 10:00 overlap it.
        assert_eq!(
            starts,
            vec![
                utc(2027, 3, 15, 9, 0),
                utc(2027, 3, 15, 10, 30),
                utc(2027, 3, 15, 11, 0)
            ]
        );
        q.earliest = utc(2027, 3, 15, 10, 45);
        assert_eq!(
            openings(&calendar, &q),
            vec![(utc(2027, 3, 15, 11, 0), utc(2027, 3, 15, 12, 0))]
        );
        q.earliest = q.from;
        q.after = Some(utc(2027, 3, 15, 10, 30));
        assert_eq!(openings(&calendar, &q).len(), 1);
        q.after = None;
        q.limit = 1;
        assert_eq!(openings(&calendar, &q).len(), 1);
    }

    #[test]
    fn a_mentor_without_windows_is_open_all_day_in_steps_from_local_midnight() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap(); // UTC+05:30
        let calendar = Calendar {
            windows: &[],
            tz,
            taken: vec![],
        };
        let found = openings(&calendar, &ask(utc(2027, 3, 15, 0, 0), utc(2027, 3, 15, 6, 0), 60));
        // Local midnights fall on :30 UTC.
        assert_eq!(found.first().unwrap().0, utc(2027, 3, 15, 0, 30));
        assert_eq!(found.len(), 6);
        assert_eq!(local(found[0].0, tz), "2027-03-15T06:00:00+05:30");
    }
}
