//! What each reading RPC asks, parsed once at the edge: filters, orders and
//! pages. The store turns these into SQL; nothing here is raw input.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::access::Visibility;
use super::model::{FeedEvent, FeedPosition};

/// Most values a repeated filter field (statuses) may carry; repeats count once.
pub(crate) const MAX_FILTER_VALUES: usize = 100;

/// One page of a list: its size (1..=100) and the opaque token of the
/// previous page ("" for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: i64,
    pub token: String,
}

/// The participant, listing and status filters shared by ListBookings,
/// ListSessions and WatchSessions. Who may see which rows is added by the
/// use case (`access::Visibility`), never taken from the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParticipantFilter {
    pub mentor_id: Option<Uuid>,
    pub mentee_id: Option<Uuid>,
    pub listing_id: Option<Uuid>,
    /// Status names of the table being filtered; empty means any.
    pub statuses: Vec<&'static str>,
}

/// Sort key of ListSessions and ListBookings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortField {
    CreatedAt,
    StartTime,
}

impl SortField {
    /// The sort value of a row with these times.
    pub fn of<T>(self, created_at: T, start_time: T) -> T {
        match self {
            SortField::CreatedAt => created_at,
            SortField::StartTime => start_time,
        }
    }
}

/// Filter and order of ListSessions and ListBookings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListFilter {
    pub participants: ParticipantFilter,
    pub start_from: Option<DateTime<Utc>>,
    pub start_to: Option<DateTime<Utc>>,
    pub sort: SortField,
    pub descending: bool,
}

/// ListMentors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentorQuery {
    pub skill_area: Option<String>,
    pub accepting_only: bool,
    pub page: Page,
}

/// ListListings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingQuery {
    pub mentor_id: Option<Uuid>,
    pub skill_area: Option<String>,
    pub page: Page,
}

/// ListBookings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingQuery {
    pub filter: ListFilter,
    pub page: Page,
}

/// Whose calendar ListAvailableSlots reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CalendarOf {
    Mentor(Uuid),
    Listing(Uuid),
}

/// ListAvailableSlots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotQuery {
    pub of: CalendarOf,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub length: chrono::Duration,
    /// None: the length.
    pub step: Option<chrono::Duration>,
    /// None: the mentor's zone.
    pub time_zone: Option<String>,
    #[serde(skip)]
    pub page: Page,
}

/// ListSessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionQuery {
    pub filter: ListFilter,
    pub page: Page,
    pub with_total: bool,
}

/// A page of one resource's log: a session's events or mentor assignments,
/// a booking's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// The session or booking whose log is read.
    pub of: Uuid,
    pub page: Page,
}

/// WatchSession: the session, and where to resume (after this seq) if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWatch {
    pub session_id: Uuid,
    pub after_seq: Option<i64>,
}

impl ParticipantFilter {
    /// Whether a WatchSessions feed with this filter, opened by a caller who
    /// sees `visibility`, delivers `e`. Participants and listing are the
    /// session's; the status is the one the event left the session in, so a
    /// resumed feed selects exactly what a live one did.
    pub fn admits(&self, visibility: Visibility, e: &FeedEvent) -> bool {
        let visible = match visibility {
            Visibility::All => true,
            Visibility::Own { mentee_id, mentor_id } => {
                mentee_id == Some(e.mentee_id) || mentor_id == Some(e.mentor_id)
            }
        };
        visible
            && self.mentor_id.is_none_or(|id| id == e.mentor_id)
            && self.mentee_id.is_none_or(|id| id == e.mentee_id)
            && self.listing_id.is_none_or(|id| id == e.listing_id)
            && (self.statuses.is_empty() || e.event.to_status.is_some_and(|s| self.statuses.contains(&s.as_str())))
    }
}

/// WatchSessions: what to follow, from where (exclusive) or from now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedWatch {
    pub filter: ParticipantFilter,
    pub cursor: Option<FeedPosition>,
    /// Whether the stream first says where it starts from.
    pub send_start_position: bool,
}

/// Output of ExportSessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180, a header row, the columns of `app::export::CSV_COLUMNS`.
    Csv,
    /// One JSON object per session, with its events.
    JsonLines,
}

/// ExportSessions: the ListSessions filter, always oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportQuery {
    pub filter: ListFilter,
    /// None: the configured format (`audit.export_format`).
    pub format: Option<ExportFormat>,
}
