//! The one table from domain errors to gRPC statuses (SPEC §6). Every status
//! carries `google.rpc.ErrorInfo` (domain `mentorship.v1`) and, where they fit,
//! `BadRequest` or `PreconditionFailure` details.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Error;

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "mentorship.v1";

/// Builds a status with an ErrorInfo and any further details.
pub fn status(code: Code, reason: &str, message: impl Into<String>, metadata: HashMap<String, String>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = err.to_string();
        let mut details = ErrorDetails::new();
        let code = match err {
            Error::InvalidArgument(violations) => {
                details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Code::InvalidArgument
            }
            Error::NotFound { kind, id } => {
                let reason = format!("{}_NOT_FOUND", kind.to_uppercase());
                details.set_error_info(
                    reason,
                    ERROR_DOMAIN,
                    HashMap::from([(kind.to_owned() + "_id", id.clone())]),
                );
                details.set_resource_info(kind, id, "", "not found");
                Code::NotFound
            }
            Error::FailedPrecondition {
                reason,
                subject,
                metadata,
                message,
            } => {
                let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                details.set_error_info(reason, ERROR_DOMAIN, metadata);
                details.add_precondition_failure_violation(reason, subject, message);
                Code::FailedPrecondition
            }
            Error::EtagMismatch { kind, current } => {
                details.set_error_info(
                    "ETAG_MISMATCH",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("kind".to_owned(), kind.to_owned()),
                        ("current_etag".to_owned(), current),
                    ]),
                );
                Code::Aborted
            }
            Error::ResourceExhausted { reason, .. } => {
                details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
                Code::ResourceExhausted
            }
            Error::Unauthenticated(_) => {
                details.set_error_info("UNAUTHENTICATED", ERROR_DOMAIN, HashMap::new());
                Code::Unauthenticated
            }
            Error::PermissionDenied(_) => {
                details.set_error_info("PERMISSION_DENIED", ERROR_DOMAIN, HashMap::new());
                Code::PermissionDenied
            }
            Error::Internal(err) => {
                // The full chain goes to the log; the client learns nothing internal.
                tracing::error!(error = ?err, "internal error");
                return status(Code::Internal, "INTERNAL", "internal error", HashMap::new());
            }
        };
        Status::with_error_details(code, message, details)
    }
}
