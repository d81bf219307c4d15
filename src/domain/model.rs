//! The resources of SPEC §2 as plain data, as the store loads them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::access::{Actor, Participants};
use super::availability::Window;
use super::booking::{BookingOrigin, BookingStatus};
use super::config::SessionConfig;
use super::session::SessionStatus;

/// The etag clients send back for a resource (a session, a booking, a
/// webhook): its version.
pub(crate) fn etag(version: i64) -> String {
    version.to_string()
}

/// A position in the feed of all events: (transaction id, event id).
pub(crate) type FeedPosition = (i64, i64);

#[derive(Debug, Clone, PartialEq)]
pub struct Mentee {
    pub id: Uuid,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mentor {
    pub id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    pub skill_areas: Vec<String>,
    /// Effective limit: the profile's own, else the configured default.
    pub max_concurrent_sessions: i32,
    pub accepting_sessions: bool,
    pub timezone: String,
    pub availability: Vec<Window>,
    pub active_session_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub id: Uuid,
    pub mentor_id: Option<Uuid>,
    pub title: String,
    pub skill_area: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub id: Uuid,
    pub listing_id: Uuid,
    pub mentor_id: Uuid,
    pub mentee_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: BookingStatus,
    pub origin: BookingOrigin,
    pub notes: String,
    pub reason: String,
    pub session_id: Option<Uuid>,
    /// For a DRAFT: the ACCEPTED booking it asks to move; otherwise the
    /// booking this one replaced.
    pub rescheduled_from: Option<Uuid>,
    /// The booking that replaced this one.
    pub rescheduled_to: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Read with the row; never stored on it.
    pub names: Names,
}

/// What a front end shows beside the ids of a booking or session: read
/// with the row (one statement, joined), never stored on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub mentee: String,
    pub mentor: String,
    pub listing_title: String,
}

impl Booking {
    pub fn participants(&self) -> Participants {
        Participants {
            mentee_id: self.mentee_id,
            mentor_id: self.mentor_id,
        }
    }
}

/// One entry of a booking's audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingEvent {
    pub booking_id: Uuid,
    /// 1, 2, 3 … in the order the changes were made.
    pub seq: i64,
    pub from_status: Option<BookingStatus>,
    pub to_status: BookingStatus,
    pub actor: Actor,
    pub reason: String,
    pub occurred_at: DateTime<Utc>,
    pub kind: super::booking::BookingEventKind,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub listing_id: Uuid,
    pub mentor_id: Uuid,
    pub mentee_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: SessionStatus,
    pub stage: Option<String>,
    pub config: SessionConfig,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// ACTIVE time banked before the current ACTIVE stretch, in microseconds.
    pub active_banked_us: i64,
    /// Start of the current ACTIVE stretch.
    pub active_since: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub report: Option<serde_json::Value>,
    pub failure: Option<serde_json::Value>,
    pub cancel_reason: String,
    pub last_seq: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Check-ins while ACTIVE (SPEC §4.6).
    pub check_ins: CheckIns,
    /// Where a QUEUED session stands, computed on read; never stored.
    pub queue: Option<super::capacity::QueueInfo>,
    /// Free text (at most 10,000 characters) and a caller's object.
    pub notes: String,
    pub metadata: serde_json::Value,
    /// The session a reschedule replaced with this one, and the one that
    /// replaced this one.
    pub rescheduled_from: Option<Uuid>,
    pub rescheduled_to: Option<Uuid>,
    /// Read with the row; never stored on it.
    pub names: Names,
}

/// Where a session stands with its check-ins: the next one is due at
/// `anchor_us + check_in_interval × (missed + 1)` of active time
/// (`clocks::check_in_due`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckIns {
    /// Active time (µs) at the last check-in, or 0.
    pub anchor_us: i64,
    /// Check-ins missed in a row since.
    pub missed: i32,
    /// The escalation level those misses reached (0 to 3).
    pub level: i32,
}

impl Session {
    pub fn participants(&self) -> Participants {
        Participants {
            mentee_id: self.mentee_id,
            mentor_id: self.mentor_id,
        }
    }

    /// ACTIVE time used as of `now` (paused time is not counted).
    pub fn active_duration(&self, now: DateTime<Utc>) -> chrono::Duration {
        let banked = chrono::Duration::microseconds(self.active_banked_us);
        match self.active_since {
            Some(since) if now > since => banked.checked_add(&(now - since)).unwrap_or(banked),
            _ => banked,
        }
    }
}

/// The kind of a session event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Created,
    StatusChanged,
    StageChanged,
    ConfigUpdated,
    MentorAssigned,
    CheckedIn,
    BlockerReported,
    CheckInMissed,
    Escalated,
    NotesUpdated,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "CREATED",
            EventType::StatusChanged => "STATUS_CHANGED",
            EventType::StageChanged => "STAGE_CHANGED",
            EventType::ConfigUpdated => "CONFIG_UPDATED",
            EventType::MentorAssigned => "MENTOR_ASSIGNED",
            EventType::CheckedIn => "CHECKED_IN",
            EventType::BlockerReported => "BLOCKER_REPORTED",
            EventType::CheckInMissed => "CHECK_IN_MISSED",
            EventType::Escalated => "ESCALATED",
            EventType::NotesUpdated => "NOTES_UPDATED",
        }
    }

    pub fn parse(raw: &str) -> Option<EventType> {
        Some(match raw {
            "CREATED" => EventType::Created,
            "STATUS_CHANGED" => EventType::StatusChanged,
            "STAGE_CHANGED" => EventType::StageChanged,
            "CONFIG_UPDATED" => EventType::ConfigUpdated,
            "MENTOR_ASSIGNED" => EventType::MentorAssigned,
            "CHECKED_IN" => EventType::CheckedIn,
            "BLOCKER_REPORTED" => EventType::BlockerReported,
            "CHECK_IN_MISSED" => EventType::CheckInMissed,
            "ESCALATED" => EventType::Escalated,
            "NOTES_UPDATED" => EventType::NotesUpdated,
            _ => return None,
        })
    }
}

/// One entry of a session's audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub session_id: Uuid,
    pub seq: i64,
    pub event_type: EventType,
    pub from_status: Option<SessionStatus>,
    pub to_status: Option<SessionStatus>,
    pub from_stage: Option<String>,
    pub to_stage: Option<String>,
    pub actor: Actor,
    pub reason: String,
    pub details: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// A committed event as the watch feed carries it: its place in the feed of
/// all events, and whose session it is (what the feed's filters look at).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub event: SessionEvent,
    pub position: FeedPosition,
    pub mentor_id: Uuid,
    pub mentee_id: Uuid,
    pub listing_id: Uuid,
}

/// A committed booking event as the booking feed carries it (webhooks
/// read it): its place in that feed, its row id, and whose booking it is.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingFeedEvent {
    pub event: BookingEvent,
    pub id: i64,
    pub position: FeedPosition,
    pub mentor_id: Uuid,
    pub mentee_id: Uuid,
    pub listing_id: Uuid,
}

impl FeedEvent {
    /// `event` of `session`, at `position`.
    pub fn of(session: &Session, event: SessionEvent, position: FeedPosition) -> FeedEvent {
        FeedEvent {
            event,
            position,
            mentor_id: session.mentor_id,
            mentee_id: session.mentee_id,
            listing_id: session.listing_id,
        }
    }
}

/// One assignment of a mentor to a session (SPEC §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentorAssignment {
    pub id: i64,
    pub session_id: Uuid,
    pub mentor_id: Uuid,
    pub previous_mentor_id: Option<Uuid>,
    /// booking, request, listing, workload_balanced, skill_matched, round_robin or reassigned.
    pub strategy: String,
    pub reason: String,
    pub actor: Actor,
    pub assigned_at: DateTime<Utc>,
}
