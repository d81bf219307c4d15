//! What each mutating RPC asks, parsed once at the edge (`grpc`) into values
//! that are valid by construction. The use cases take these and never see
//! raw input; nothing downstream validates a field again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{availability::Window, config::SessionConfig, session::Command};

/// UpsertMentee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenteeInput {
    pub id: Uuid,
    pub display_name: String,
}

/// Most skill areas a mentor may list.
pub(crate) const MAX_SKILL_AREAS: usize = 50;

/// UpsertMentor: the whole profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentorInput {
    pub id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    pub skill_areas: Vec<String>,
    /// None: the configured default applies.
    pub max_concurrent_sessions: Option<i32>,
    pub accepting_sessions: bool,
    /// A valid IANA name.
    pub timezone: String,
    /// Non-overlapping windows.
    pub availability: Vec<Window>,
}

/// UpsertListing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingInput {
    pub id: Uuid,
    pub mentor_id: Option<Uuid>,
    pub title: String,
    pub skill_area: String,
}

/// CreateBooking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBooking {
    pub listing_id: Uuid,
    /// None: the calling mentee itself.
    pub mentee_id: Option<Uuid>,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub notes: String,
}

/// RescheduleBooking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reschedule {
    pub booking_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub reason: String,
}

/// UpdateSessionNotes: the fields named by the mask.
#[derive(Debug, Clone, PartialEq)]
pub struct NotesUpdate {
    pub session_id: Uuid,
    pub notes: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub etag: Option<String>,
}

/// DeclineBooking and CancelBooking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseBooking {
    pub booking_id: Uuid,
    pub reason: String,
}

/// CreateSession.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub mentee_id: Uuid,
    pub listing_id: Uuid,
    /// The preferred mentor; else the listing's.
    pub mentor_id: Option<Uuid>,
    pub template_id: Option<String>,
    /// Overrides of the template: values and the mask naming them.
    pub overrides: Option<(SessionConfig, Vec<String>)>,
}

/// One command of the state machine on one session: StartSession,
/// PauseSession, ResumeSession, CompleteSession, FailSession, CancelSession
/// and the system's timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub session_id: Uuid,
    pub command: Command,
    /// When set, must equal the session's current etag.
    pub etag: Option<String>,
    /// The event's reason (and the cancel reason of a cancellation).
    pub reason: String,
    /// CompleteSession's report, as stored.
    pub report: Option<serde_json::Value>,
    /// FailSession's error, as stored.
    pub failure: Option<serde_json::Value>,
}

impl Transition {
    /// A command with nothing but its target.
    pub fn new(session_id: Uuid, command: Command) -> Self {
        Transition {
            session_id,
            command,
            etag: None,
            reason: String::new(),
            report: None,
            failure: None,
        }
    }
}

/// AdvanceStage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageChange {
    pub session_id: Uuid,
    /// A label: `[a-z0-9_.-]{1,64}`.
    pub stage: String,
    pub etag: Option<String>,
}

/// RecordCheckIn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIn {
    pub session_id: Uuid,
    /// At most [`CheckIn::MAX_NOTE`] characters; may be empty.
    pub note: String,
    pub blocker: bool,
    pub etag: Option<String>,
}

impl CheckIn {
    pub const MAX_NOTE: usize = 4000;
}

/// UpdateSessionConfig: the fields named by `paths`, taken from `patch`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigUpdate {
    pub session_id: Uuid,
    pub patch: SessionConfig,
    pub paths: Vec<String>,
    pub etag: Option<String>,
}

/// ReassignMentor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub session_id: Uuid,
    pub mentor_id: Uuid,
    pub reason: String,
    pub etag: Option<String>,
}
