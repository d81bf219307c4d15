//! Booking rules (SPEC §3): `DRAFT → ACCEPTED | DECLINED | CANCELLED`.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use super::Reason;
use super::{Error, Result, Violations};

/// Status of a booking; every status but DRAFT is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    Draft,
    Accepted,
    Declined,
    Cancelled,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Draft => "DRAFT",
            BookingStatus::Accepted => "ACCEPTED",
            BookingStatus::Declined => "DECLINED",
            BookingStatus::Cancelled => "CANCELLED",
        }
    }
}

impl FromStr for BookingStatus {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "DRAFT" => BookingStatus::Draft,
            "ACCEPTED" => BookingStatus::Accepted,
            "DECLINED" => BookingStatus::Declined,
            "CANCELLED" => BookingStatus::Cancelled,
            other => anyhow::bail!("unknown booking status {other:?}"),
        })
    }
}

/// What a booking event records: a status change (the creation too), a
/// reschedule, or a DRAFT's new times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingEventKind {
    StatusChanged,
    Rescheduled,
    TimeChanged,
}

impl BookingEventKind {
    pub const ALL: [BookingEventKind; 3] = [
        BookingEventKind::StatusChanged,
        BookingEventKind::Rescheduled,
        BookingEventKind::TimeChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BookingEventKind::StatusChanged => "STATUS_CHANGED",
            BookingEventKind::Rescheduled => "RESCHEDULED",
            BookingEventKind::TimeChanged => "TIME_CHANGED",
        }
    }
}

impl FromStr for BookingEventKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BookingEventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown booking event kind {s:?}"))
    }
}

/// How a booking came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingOrigin {
    Requested,
    OnDemand,
}

impl BookingOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingOrigin::Requested => "REQUESTED",
            BookingOrigin::OnDemand => "ON_DEMAND",
        }
    }
}

impl FromStr for BookingOrigin {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "REQUESTED" => BookingOrigin::Requested,
            "ON_DEMAND" => BookingOrigin::OnDemand,
            other => anyhow::bail!("unknown booking origin {other:?}"),
        })
    }
}

/// The configured bounds on a booking's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationBounds {
    pub min: Duration,
    pub max: Duration,
}

/// The rules a requested time must meet whatever the calendar says.
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    pub bounds: DurationBounds,
    /// How long before its start a booking must be made.
    pub min_notice: chrono::Duration,
}

/// Checks a requested time: start before end, length within bounds, start
/// in the future and at least the minimum notice away.
pub fn check_slot(start: DateTime<Utc>, end: DateTime<Utc>, rules: TimeRules, now: DateTime<Utc>) -> Result<()> {
    let bounds = rules.bounds;
    let mut v = Violations::new();
    if start <= now {
        v.add("start_time", "must be in the future");
    } else if start < now + rules.min_notice {
        v.add(
            "start_time",
            format!(
                "must be at least {} minutes from now (the minimum notice)",
                rules.min_notice.num_minutes()
            ),
        );
    }
    if end <= start {
        v.add("end_time", "must be after start_time");
    } else {
        let length = end - start;
        if length < bounds.min || length > bounds.max {
            v.add(
                "end_time",
                format!(
                    "booking length must be between {} and {} minutes, got {} minutes",
                    bounds.min.num_minutes(),
                    bounds.max.num_minutes(),
                    length.num_minutes()
                ),
            );
        }
    }
    v.finish()
}

/// The one move a booking can make: out of DRAFT. Anything else is refused
/// with `BOOKING_NOT_DRAFT`, naming the current status.
pub fn decide(booking_id: uuid::Uuid, current: BookingStatus, to: BookingStatus) -> Result<()> {
    if current == BookingStatus::Draft && to != BookingStatus::Draft {
        return Ok(());
    }
    Err(Error::precondition(
        Reason::BookingNotDraft,
        format!("bookings/{booking_id}"),
        format!(
            "booking is {}; only a DRAFT booking can become {}",
            current.as_str(),
            to.as_str()
        ),
    )
    .with_metadata("current_status", current.as_str())
    .with_metadata("requested_status", to.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn slot_rules() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let b = TimeRules {
            bounds: DurationBounds {
                min: Duration::minutes(15),
                max: Duration::hours(8),
            },
            min_notice: Duration::minutes(60),
        };
        let h = |n| now + Duration::hours(n);
        // The minimum notice: an hour from now is the earliest start.
        assert!(check_slot(h(1) - Duration::seconds(1), h(2), b, now).is_err());
        assert!(check_slot(h(1), h(2), b, now).is_ok());
        assert!(check_slot(h(-1), h(1), b, now).is_err());
        assert!(check_slot(h(2), h(1), b, now).is_err());
        assert!(check_slot(h(1), h(1) + Duration::minutes(14), b, now).is_err());
        assert!(check_slot(h(1), h(1) + Duration::minutes(15), b, now).is_ok());
        assert!(check_slot(h(1), h(9), b, now).is_ok());
        assert!(check_slot(h(1), h(9) + Duration::seconds(1), b, now).is_err());
    }

    #[test]
    fn only_drafts_move() {
        let id = uuid::Uuid::nil();
        assert!(decide(id, BookingStatus::Draft, BookingStatus::Accepted).is_ok());
        for s in [
            BookingStatus::Accepted,
            BookingStatus::Declined,
            BookingStatus::Cancelled,
        ] {
            assert!(decide(id, s, BookingStatus::Cancelled).is_err());
        }
    }
}
