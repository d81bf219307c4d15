//! The one error type of the service's use cases. `grpc::status` maps each
//! variant to a gRPC status with `google.rpc` details, in one table.

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

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or missing input; nothing was changed.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// The named resource does not exist (or the caller may not know it does).
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// The request is well-formed but the system's state does not allow it.
    #[error("{message}")]
    FailedPrecondition {
        /// UPPER_SNAKE_CASE reason, e.g. `INVALID_TRANSITION`.
        reason: &'static str,
        message: String,
        /// What the precondition is about, e.g. `sessions/<id>`.
        subject: String,
        /// Extra machine-readable context for `ErrorInfo.metadata`.
        metadata: Vec<(&'static str, String)>,
    },

    /// The caller's etag is stale.
    #[error("etag mismatch: the {kind} changed since it was read (current etag {current})")]
    EtagMismatch { kind: &'static str, current: String },

    /// A limit is reached (queue full, rate limit).
    #[error("{message}")]
    ResourceExhausted { reason: &'static str, message: String },

    /// No valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// Valid credentials, but they do not allow this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

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

    pub fn not_found(kind: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub fn precondition(reason: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
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
        Error::PermissionDenied(message.into())
    }
}

/// Shorthand for use-case results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects field violations so a request reports all of its problems at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Keeps the value of `Ok`, records the violation of `Err`.
    pub fn check<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::InvalidArgument(mut violations)) => {
                self.0.append(&mut violations);
                None
            }
            Err(other) => {
                self.0.push(FieldViolation::new("request", other.to_string()));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else `InvalidArgument` with every violation.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}
