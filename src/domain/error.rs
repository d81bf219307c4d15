//! The one error type of the service's use cases, and the closed set of
//! failure reasons. `grpc::status` maps each variant to a gRPC status with
//! `google.rpc` details, in one table.

use std::fmt;

/// One invalid field of a request (a `google.rpc.BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why a call failed: the closed set of `google.rpc.ErrorInfo.reason` values.
/// The proto enum `mentorship.v1.ErrorReason` lists the same names with the
/// `ERROR_REASON_` prefix, so clients can switch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    SessionNotFound,
    BookingNotFound,
    ListingNotFound,
    MentorNotFound,
    MenteeNotFound,
    InvalidTransition,
    SessionTerminal,
    StageNotAllowed,
    MaxDurationBelowActiveTime,
    NoEligibleMentor,
    BookingNotDraft,
    BookingExpired,
    BookingOverlap,
    OutsideAvailability,
    ListingHasNoMentor,
    SessionExists,
    MentorUserTaken,
    EtagMismatch,
    QueueFull,
    MentorNotAccepting,
    MentorFull,
    TooManyExports,
    Unavailable,
    LockTimeout,
    TooManyStreams,
    DeadlineExceeded,
    Overloaded,
    WebhookNotFound,
    DeliveryNotFound,
    RateLimited,
    MetadataTooLarge,
    RequestTooLarge,
    RouteNotFound,
    MentorIdentityMismatch,
    ReschedulePending,
    CommitOutcomeUnknown,
    Internal,
}

impl Reason {
    /// Every reason, in the order of the proto enum.
    pub const ALL: [Reason; 40] = [
        Reason::InvalidArgument,
        Reason::Unauthenticated,
        Reason::PermissionDenied,
        Reason::SessionNotFound,
        Reason::BookingNotFound,
        Reason::ListingNotFound,
        Reason::MentorNotFound,
        Reason::MenteeNotFound,
        Reason::InvalidTransition,
        Reason::SessionTerminal,
        Reason::StageNotAllowed,
        Reason::MaxDurationBelowActiveTime,
        Reason::NoEligibleMentor,
        Reason::BookingNotDraft,
        Reason::BookingExpired,
        Reason::BookingOverlap,
        Reason::OutsideAvailability,
        Reason::ListingHasNoMentor,
        Reason::SessionExists,
        Reason::MentorUserTaken,
        Reason::EtagMismatch,
        Reason::QueueFull,
        Reason::MentorNotAccepting,
        Reason::MentorFull,
        Reason::TooManyExports,
        Reason::Unavailable,
        Reason::LockTimeout,
        Reason::TooManyStreams,
        Reason::DeadlineExceeded,
        Reason::Overloaded,
        Reason::WebhookNotFound,
        Reason::DeliveryNotFound,
        Reason::RateLimited,
        Reason::MetadataTooLarge,
        Reason::RequestTooLarge,
        Reason::RouteNotFound,
        Reason::MentorIdentityMismatch,
        Reason::ReschedulePending,
        Reason::CommitOutcomeUnknown,
        Reason::Internal,
    ];

    /// The `ErrorInfo.reason` string (UPPER_SNAKE_CASE).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::SessionNotFound => "SESSION_NOT_FOUND",
            Reason::BookingNotFound => "BOOKING_NOT_FOUND",
            Reason::ListingNotFound => "LISTING_NOT_FOUND",
            Reason::MentorNotFound => "MENTOR_NOT_FOUND",
            Reason::MenteeNotFound => "MENTEE_NOT_FOUND",
            Reason::InvalidTransition => "INVALID_TRANSITION",
            Reason::SessionTerminal => "SESSION_TERMINAL",
            Reason::StageNotAllowed => "STAGE_NOT_ALLOWED",
            Reason::MaxDurationBelowActiveTime => "MAX_DURATION_BELOW_ACTIVE_TIME",
            Reason::NoEligibleMentor => "NO_ELIGIBLE_MENTOR",
            Reason::BookingNotDraft => "BOOKING_NOT_DRAFT",
            Reason::BookingExpired => "BOOKING_EXPIRED",
            Reason::BookingOverlap => "BOOKING_OVERLAP",
            Reason::OutsideAvailability => "OUTSIDE_AVAILABILITY",
            Reason::ListingHasNoMentor => "LISTING_HAS_NO_MENTOR",
            Reason::SessionExists => "SESSION_EXISTS",
            Reason::MentorUserTaken => "MENTOR_USER_TAKEN",
            Reason::EtagMismatch => "ETAG_MISMATCH",
            Reason::QueueFull => "QUEUE_FULL",
            Reason::MentorNotAccepting => "MENTOR_NOT_ACCEPTING",
            Reason::MentorFull => "MENTOR_FULL",
            Reason::TooManyExports => "TOO_MANY_EXPORTS",
            Reason::Unavailable => "UNAVAILABLE",
            Reason::LockTimeout => "LOCK_TIMEOUT",
            Reason::TooManyStreams => "TOO_MANY_STREAMS",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::Overloaded => "OVERLOADED",
            Reason::WebhookNotFound => "WEBHOOK_NOT_FOUND",
            Reason::DeliveryNotFound => "DELIVERY_NOT_FOUND",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::MetadataTooLarge => "METADATA_TOO_LARGE",
            Reason::RequestTooLarge => "REQUEST_TOO_LARGE",
            Reason::RouteNotFound => "ROUTE_NOT_FOUND",
            Reason::MentorIdentityMismatch => "MENTOR_IDENTITY_MISMATCH",
            Reason::ReschedulePending => "RESCHEDULE_PENDING",
            Reason::CommitOutcomeUnknown => "COMMIT_OUTCOME_UNKNOWN",
            Reason::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of resource a NOT_FOUND can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Session,
    Booking,
    Listing,
    Mentor,
    Mentee,
    Webhook,
    Delivery,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Session => "session",
            Resource::Booking => "booking",
            Resource::Listing => "listing",
            Resource::Mentor => "mentor",
            Resource::Mentee => "mentee",
            Resource::Webhook => "webhook",
            Resource::Delivery => "delivery",
        }
    }

    pub fn not_found_reason(self) -> Reason {
        match self {
            Resource::Session => Reason::SessionNotFound,
            Resource::Booking => Reason::BookingNotFound,
            Resource::Listing => Reason::ListingNotFound,
            Resource::Mentor => Reason::MentorNotFound,
            Resource::Mentee => Reason::MenteeNotFound,
            Resource::Webhook => Reason::WebhookNotFound,
            Resource::Delivery => Reason::DeliveryNotFound,
        }
    }
}

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or missing input; nothing was changed.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// The named resource does not exist (or the caller may not know it does).
    #[error("{} {id} not found", .resource.as_str())]
    NotFound { resource: Resource, id: String },

    /// The request is well-formed but the system's state does not allow it.
    #[error("{message}")]
    FailedPrecondition {
        reason: Reason,
        message: String,
        /// What the precondition is about, e.g. `sessions/<id>`.
        subject: String,
        /// Extra machine-readable context for `ErrorInfo.metadata`.
        metadata: Vec<(&'static str, String)>,
    },

    /// The caller's etag is stale.
    #[error("etag mismatch: the {kind} changed since it was read (current etag {current})")]
    EtagMismatch { kind: &'static str, current: String },

    /// A limit is reached (the queue is full).
    #[error("{message}")]
    ResourceExhausted {
        reason: Reason,
        message: String,
        /// The limit, its current value and its maximum, for `ErrorInfo.metadata`.
        metadata: Vec<(&'static str, String)>,
    },

    /// No valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// Valid credentials, but they do not allow this.
    #[error("permission denied: {message}")]
    PermissionDenied { reason: Reason, message: String },

    /// The server cannot finish this now (it is shutting down, or its
    /// database is unreachable); retrying is safe.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The connection failed while the change was being committed: it may
    /// or may not have been made. A retry with the same `request_id` answers
    /// which (the first response, or the change made now, once).
    #[error(
        "the database connection failed while committing: the change may or may not have been made; \
         retry with the same request_id (over HTTP, the same Idempotency-Key) to learn which \
         (without one, the outcome cannot be known)"
    )]
    CommitOutcomeUnknown,

    /// The call's deadline passed before its answer was ready.
    #[error("{0}")]
    DeadlineExceeded(String),

    /// The caller has used its budget of one kind of call on this replica;
    /// it may call again after `retry_after`.
    #[error("rate limited: this caller has used its budget of {budget} on this replica ({per_second} a second, bursts of {burst}); retry after {} ms", .retry_after.as_millis())]
    RateLimited {
        budget: &'static str,
        per_second: u32,
        burst: u32,
        retry_after: std::time::Duration,
    },

    /// The replica takes no more calls now: retrying later is safe.
    #[error("{message}")]
    Overloaded {
        message: String,
        metadata: Vec<(&'static str, String)>,
    },

    /// A concurrency conflict other than a stale etag (a row stayed locked
    /// past the lock timeout); nothing changed, retrying is safe.
    #[error("{message}")]
    Aborted { reason: Reason, message: String },

    /// No route of the HTTP API matches the request's method and path.
    #[error("no route matches {0}")]
    NoRoute(String),

    /// Anything unexpected; logged in full, reported without details.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(resource: Resource, id: impl fmt::Display) -> Self {
        Error::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    pub fn precondition(reason: Reason, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Error::FailedPrecondition {
            reason,
            message: message.into(),
            subject: subject.into(),
            metadata: Vec::new(),
        }
    }

    /// Adds `ErrorInfo` metadata to a `FailedPrecondition`; other variants are returned unchanged.
    pub fn with_metadata(mut self, key: &'static str, value: impl Into<String>) -> Self {
        if let Error::FailedPrecondition { metadata, .. } = &mut self {
            metadata.push((key, value.into()));
        }
        self
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Error::PermissionDenied {
            reason: Reason::PermissionDenied,
            message: message.into(),
        }
    }
}

/// Shorthand for use-case results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most field violations one error reports; the rest are counted, not listed,
/// so a huge bad request cannot make a huge error.
pub(crate) const MAX_VIOLATIONS: usize = 20;

/// Collects field violations so a request reports all of its problems at once
/// (up to [`MAX_VIOLATIONS`]).
#[derive(Debug, Default)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    dropped: usize,
}

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.push(FieldViolation::new(field, description));
    }

    fn push(&mut self, violation: FieldViolation) {
        if self.listed.len() < MAX_VIOLATIONS {
            self.listed.push(violation);
        } else {
            self.dropped += 1;
        }
    }

    /// Keeps the value of `Ok`, records the violation of `Err`.
    pub fn check<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::InvalidArgument(violations)) => {
                for v in violations {
                    self.push(v);
                }
                None
            }
            Err(other) => {
                self.add("request", other.to_string());
                None
            }
        }
    }

    /// `Ok(())` when nothing was recorded, else `InvalidArgument` with every violation.
    pub fn finish(mut self) -> Result<()> {
        if self.listed.is_empty() {
            return Ok(());
        }
        if self.dropped > 0 {
            self.listed.push(FieldViolation::new(
                "request",
                format!("{} more violations not listed", self.dropped),
            ));
        }
        Err(Error::InvalidArgument(self.listed))
    }

    /// [`Violations::finish`], then the value that parsing produced: a
    /// parser that saw no violation must have produced one.
    pub fn into_result<T>(self, value: Option<T>) -> Result<T> {
        self.finish()?;
        value.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "a request parsed without violations left a value unset"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_capped_and_the_rest_counted() {
        let mut v = Violations::new();
        for i in 0..500_000 {
            v.add(format!("items[{i}]"), "is bad");
        }
        let Err(Error::InvalidArgument(listed)) = v.finish() else {
            panic!("expected violations");
        };
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert_eq!(listed[MAX_VIOLATIONS].description, "499980 more violations not listed");
    }

    #[test]
    fn reasons_are_upper_snake_case_and_distinct() {
        let names: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for name in names {
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{name}");
        }
    }
}
